"""`make gpu-check`: scalelab's CUDA path verified on a real GPU in a few minutes, prepared here.

Without a CUDA GPU it prints one line saying so and exits 0. With one (budget ~8 minutes), in order
of value, each stage timed and kept even if a later one fails:

    1. env          GPU, driver, torch, CUDA, compute capability, memory
    2. tests        the GPU-marked tests (tests/test_gpu.py): bf16/fp32 parity with the CPU, fused
                    loss = F.cross_entropy, compile, device=auto, resume
    3. throughput   a ~125M Llama-shaped model at seq 1024 in bf16, scalelab vs `transformers` in the
                    same process (bench/throughput.py), MFU against the measured matmul peak and the
                    datasheet peak (goal >= 45%)
    4. loss_chunks  the fused loss's time at several chunk sizes (the CUDA chunk budget is a guess
                    until this runs)
    5. moe          one MoE layer's time per dispatch (sorted, dense reference, torch's grouped_mm)
    6. demo         `scalelab demo --gpu`: its ladder, fit, forecast of the held-out run, the run, wall time
                    (stopped at the budget's end; on a CPU its toy-scale twin)

and writes every figure into one JSON (--json). It runs against the machine's own PyTorch: on a
machine with no package registry, put the project's src/ on PYTHONPATH and carry missing packages as
wheels (`make gpu-wheels`: plotly, the one dependency the GPU image lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H200_BF16_PEAK = 989e12  # dense bf16, NVIDIA H100/H200 SXM datasheet: for a GPU not in economics/hardware.py


def environment(device: str) -> dict:
    import torch

    if device != "cuda":
        return {"gpu": None, "device": device, "torch": torch.__version__, "python": platform.python_version()}
    p = torch.cuda.get_device_properties(0)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": p.total_memory,
            "nvidia_smi": smi.stdout.strip() or smi.stderr.strip()[:200], "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "bf16_supported": torch.cuda.is_bf16_supported()}


def run_tests(device: str, timeout_s: float) -> dict:
    """The GPU-marked tests, in a subprocess (pytest's own summary line is kept)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider", "-rfEs"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    lines = r.stdout.strip().splitlines()
    return {"returncode": r.returncode, "summary": lines[-1] if lines else "",
            "failed": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))], "output": r.stdout[-30000:]}


MODEL_125M = ("d768-L12-s1024", 768, 12, 12, 32000, 1024, 16, False)  # name, d, L, H, V, T, B, moe
TOY = ("toy-d64", 64, 2, 4, 512, 64, 4, False)


def datasheet_peak(device: str) -> float:
    """The dense bf16 peak of this GPU from the hardware table (the H200's for an unknown one or a CPU)."""
    import torch

    from scalelab.economics.hardware import hardware_for_device

    hw = hardware_for_device(torch.cuda.get_device_name()) if device == "cuda" else None
    return hw.peak_bf16_flops if hw else H200_BF16_PEAK


def throughput(device: str, steps: int, reps: int) -> dict:
    """~125M parameters (d768, 12 layers, vocab 32000, seq 1024, batch 16) in bf16 vs HF Llama."""
    sys.path.insert(0, str(ROOT / "bench"))
    from scalelab.train.metrics import matmul_peak_flops
    from throughput import bench_config

    cuda = device == "cuda"
    peak = matmul_peak_flops(device, "bf16" if cuda else "fp32", n=8192 if cuda else 512)
    row = bench_config(MODEL_125M if cuda else TOY, reps, steps, device, cuda, peak, compile_=cuda)
    sheet = datasheet_peak(device)
    row.update(device=device, measured_peak_flops=peak, datasheet_peak_flops=sheet,
               mfu_datasheet=row["tokens_per_s"] * row["flops_per_token"] / sheet,
               hf_mfu_datasheet=row["hf_tokens_per_s"] * row["flops_per_token"] / sheet)
    return row


def loss_chunks(device: str) -> dict:
    """Forward + backward time of the fused loss per chunk size (median of 10 after 2 warm-ups),
    at vocab 32000, d_model 768, 16k tokens in bf16 (the 125M model's batch), and the standard path's
    (logits materialised, F.cross_entropy) as the peer."""
    import torch
    import torch.nn.functional as F

    from scalelab.model.loss import default_chunk, linear_cross_entropy

    cuda = device == "cuda"
    vocab, d_model, tokens = (32000, 768, 16384) if cuda else (512, 64, 512)
    dtype = torch.bfloat16 if cuda else torch.float32
    h = torch.randn(tokens, d_model, device=device, dtype=dtype, requires_grad=True)
    w = (torch.randn(vocab, d_model, device=device) * 0.02).to(dtype).requires_grad_()
    t = torch.randint(0, vocab, (tokens,), device=device)
    out = {"vocab": vocab, "d_model": d_model, "tokens": tokens, "default_chunk": default_chunk(vocab, device),
           "ms": {}}
    def timed(loss_fn) -> float:
        def step():
            loss_fn().backward()
            h.grad = w.grad = None
        return _median_ms(step, device)

    out["standard_ms"] = timed(lambda: F.cross_entropy((h @ w.t()).float(), t))
    for chunk in sorted({256, 512, 1024, 2048, 4096, 8192, tokens}):
        out["ms"][str(chunk)] = timed(lambda c=chunk: linear_cross_entropy(h, w, t, chunk=c))
    out["best_chunk"] = int(min(out["ms"], key=out["ms"].get))
    return out


def moe_dispatch(device: str) -> dict:
    """Forward + backward time of one MoE layer (8 experts, top-2, d 768, d_expert 2048, 16k tokens,
    bf16 on CUDA) per dispatch: sorted, reference (dense), grouped (torch's grouped_mm: what auto
    picks on CUDA); and the grouped output's largest difference from the sorted one."""
    import torch

    from scalelab.model.config import MoEConfig
    from scalelab.model.moe import MoE

    cuda = device == "cuda"
    d, f, n = (768, 2048, 16384) if cuda else (64, 128, 512)
    torch.manual_seed(0)
    moe = MoE(d, MoEConfig(num_experts=8, top_k=2, d_expert=f))
    for p in (moe.w1, moe.w3, moe.w2):
        torch.nn.init.normal_(p, std=0.02)
    moe = moe.to(device, torch.bfloat16 if cuda else torch.float32)
    x = torch.randn(n, d, device=device, dtype=moe.w1.dtype, requires_grad=True)
    fns = {name: (lambda d=name: _set(moe, d)(x[None])[0][0]) for name in ("sorted", "reference", "grouped")}
    out = {"tokens": n, "d_model": d, "d_expert": f, "experts": 8, "top_k": 2, "ms": {}, "errors": {}}
    for name, fn in fns.items():
        try:
            out["ms"][name] = _median_ms(lambda fn=fn: fn().float().square().mean().backward(), device)
        except Exception as e:  # a GPU or torch without grouped_mm says so
            out["errors"][name] = f"{type(e).__name__}: {e}"[:300]
    with torch.no_grad():
        try:
            out["grouped_max_abs_diff"] = (fns["grouped"]() - fns["sorted"]()).abs().max().item()
        except Exception as e:
            out["errors"]["grouped_forward"] = f"{type(e).__name__}: {e}"[:300]
    return out


def _set(moe, dispatch: str):
    moe.dispatch = dispatch
    return moe


def _median_ms(step, device: str, n: int = 12, warmup: int = 2) -> float:
    import torch

    times = []
    for i in range(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def demo(device: str, timeout_s: float, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "scalelab.cli", "demo", "--gpu", "--out", str(out_dir)]  # the CPU: its toy twin
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"completed": False, "stopped_after_s": time.perf_counter() - t0, "output_tail": out[-1500:]}
    res = {"completed": r.returncode == 0, "returncode": r.returncode, "wall_seconds": time.perf_counter() - t0,
           "output_tail": (r.stdout + r.stderr)[-3000:]}
    summary = out_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        res["holdout"] = {k: s["holdout"][k] for k in ("N", "D", "C", "predicted_loss", "predicted_interval",
                                                      "actual_loss", "relative_error")}
        res["ladder"] = {"runs": s["ladder_runs"], "budgets": s["budgets"], "fit": s["fit"]["selection"]["law"]}
        res["summary_json"] = s
    return res


def stage(results: dict, name: str, fn, *args) -> None:
    """Run one stage, keep its result or its error, and its time; print one line."""
    t0 = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as e:  # a broken stage must not lose the others' figures
        results[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    results[name]["stage_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"gpu-check: {name} done in {results[name]['stage_seconds']} s" +
          (f" (error: {results[name]['error'][:200]})" if "error" in results[name] else ""), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (the demo gets the rest)")
    ap.add_argument("--skip", default="", help="comma-separated stages to skip: tests,throughput,loss_chunks,moe,demo")
    ap.add_argument("--dry-run", action="store_true",
                    help="run every stage on the CPU at toy sizes: checks the script itself (figures meaningless)")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu-check: no torch in this Python; nothing to check (exit 0)")
        return 0
    if not torch.cuda.is_available() and not a.dry_run:
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}, cuda available: False); nothing to check. "
              "Run `make gpu-check` on a machine with an NVIDIA GPU.")
        return 0
    device = "cuda" if torch.cuda.is_available() and not a.dry_run else "cpu"
    t0, skip = time.perf_counter(), set(filter(None, a.skip.split(",")))
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": a.dry_run, "env": environment(device)}
    print(f"gpu-check: {results['env']['gpu'] or 'CPU dry run'}, torch {results['env']['torch']}", flush=True)
    if "tests" not in skip:
        stage(results, "tests", run_tests, device, 240.0)
    if "throughput" not in skip:
        stage(results, "throughput", throughput, device, 5, 3)
    if "loss_chunks" not in skip:
        stage(results, "loss_chunks", loss_chunks, device)
    if "moe" not in skip:
        stage(results, "moe_dispatch", moe_dispatch, device)
    left = a.budget - (time.perf_counter() - t0)
    if "demo" not in skip and left > 10:
        stage(results, "demo", demo, device, left, Path(os.environ.get("TMPDIR", "/tmp")) / "scalelab-gpu-demo")
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=2, default=str))
    print(summary_line(results))
    print(f"gpu-check: wrote {a.json}")
    return 0


def summary_line(r: dict) -> str:
    parts = [f"tests: {r.get('tests', {}).get('summary', 'not run')}"]
    t = r.get("throughput", {})
    if "tokens_per_s" in t:
        parts.append(f"{t['config']} ({t['num_params_total'] / 1e6:.0f}M): {t['tokens_per_s']:,.0f} tok/s, "
                     f"{t['speedup_vs_hf']:.2f}x transformers, MFU {t['mfu_datasheet']:.1%} of datasheet "
                     f"({t['mfu']:.1%} of measured peak)")
    c = r.get("loss_chunks", {})
    if "best_chunk" in c:
        parts.append(f"loss chunk: best {c['best_chunk']} (default {c['default_chunk']}; "
                     f"{c['ms'][str(c['best_chunk'])]:.1f} ms vs standard {c['standard_ms']:.1f} ms)")
    m = r.get("moe_dispatch", {}).get("ms", {})
    if m:
        parts.append("MoE ms " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()))
    d = r.get("demo", {})
    if d:
        parts.append("demo: " + (f"{d['wall_seconds']:.0f} s" if d.get("completed") else "not completed"))
    return "gpu-check: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
