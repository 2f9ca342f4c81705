"""Training throughput: scalelab's step vs `transformers` Llama / Mixtral with the same shapes.

For each config both implementations run a full training step (forward, backward, AdamW) on the
same batch size and sequence length, alternating in the same process over several repetitions;
we report medians, the speed-up, and MFU against a matmul peak measured here on the same device.
Where the lead comes from, per config: each side's step is timed again without its output projection and
loss (a headless step: embedding, blocks, final norm, a trivial loss, backward, optimizer). "body" is
`transformers`' headless step time over scalelab's (the blocks call the same attention and GEMM kernels);
"head" is the same ratio for the output projection + loss (full step minus headless step).

    python bench/throughput.py                    # the default configs
    python bench/throughput.py --quick            # three sizes, fewer repetitions
    python bench/throughput.py --json out.json    # rows: config, d_model, moe, tokens_per_s, ...
    python bench/throughput.py --dtype bf16       # both sides under bf16 autocast (a CPU with avx512_bf16/AMX)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from scalelab.config import OptimConfig
from scalelab.model import ModelConfig, MoEConfig
from scalelab.model.hf import config_to_hf
from scalelab.model.transformer import Transformer
from scalelab.train.metrics import PEAK_SHAPES, cpu_info, cpu_theoretical_peak, matmul_peak_flops
from scalelab.train.optim import build_optimizer

CONFIGS = [  # name, d_model, n_layers, n_heads, vocab, seq, batch, moe
    ("d64-v4k", 64, 2, 4, 4096, 256, 16, False),
    ("d128-v4k", 128, 4, 4, 4096, 256, 16, False),
    ("d256-v4k", 256, 6, 4, 4096, 256, 16, False),
    ("d512-v4k", 512, 8, 8, 4096, 256, 16, False),
    ("d128-v32k", 128, 4, 4, 32000, 256, 16, False),
    ("d256-v4k-s512", 256, 6, 4, 4096, 512, 8, False),
    ("moe-d256-e8k2", 256, 4, 4, 4096, 256, 16, True),
    ("moe-d768-e8k2-s1024", 768, 12, 12, 32000, 1024, 8, True),  # GPU only: 8 experts of the 125M's d_ff
]
QUICK = ["d64-v4k", "d128-v4k", "d256-v4k"]
GPU_ONLY = {"moe-d768-e8k2-s1024"}  # on a CPU: over 20 minutes and 17 GB before it was stopped (#36)


def default_configs(device: str, quick: bool) -> list[str]:
    """The configs meant for ``device``: the GPU-sized ones only on a GPU."""
    if quick:
        return QUICK
    return [c[0] for c in CONFIGS if device == "cuda" or c[0] not in GPU_ONLY]


def model_config(d, L, H, V, T, moe) -> ModelConfig:
    return ModelConfig(d_model=d, n_layers=L, n_heads=H, vocab_size=V, max_seq_len=T, tie_embeddings=False,
                       moe=MoEConfig(num_experts=8, top_k=2, lb_coef=0.0, z_coef=0.0) if moe else None)


def hf_model(cfg: ModelConfig):
    import transformers

    d = config_to_hf(cfg)
    cls = transformers.MixtralConfig if cfg.moe else transformers.LlamaConfig
    hc = cls(**{k: v for k, v in d.items() if k not in ("architectures", "model_type", "torch_dtype")})
    model_cls = transformers.MixtralForCausalLM if cfg.moe else transformers.LlamaForCausalLM
    m = model_cls(hc)
    m.config.use_cache = False
    return m


def make_optimizer(model, kind: str, device):
    # scalelab: its training optimizer (fused AdamW, decay on matrices). HF: the fastest stock
    # AdamW a plain loop could pick (foreach on CPU, where the default is the per-tensor loop).
    return build_optimizer(model, OptimConfig(lr=1e-4)) if kind == "scalelab" else \
        torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1,
                          **({"foreach": True} if device == "cpu" else {"fused": True}))


def make_step(model, kind: str, x, y, device):
    opt = make_optimizer(model, kind, device)

    def step():
        if kind == "scalelab":
            out = model(x, targets=y, return_logits=False)
            loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
        else:
            loss = model(input_ids=x, labels=x).loss  # HF shifts labels internally
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def timed(step, n, device) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def headless_step(model, kind: str, x, device, compiled: bool):
    """A training step without the output projection and loss: embedding, blocks and final norm, a trivial
    loss ((h * g).sum() for a fixed random g, so the gradient is dense as a real one), backward, optimizer.
    Timed like the full step, its difference from it is the head's cost inside a real step."""
    opt = make_optimizer(model, kind, device)
    g = None

    def body(idx):
        if kind != "scalelab":
            return model.model(input_ids=idx).last_hidden_state  # (B, T, D), after the final norm
        cos, sin = model.rope_cos[:idx.shape[1]], model.rope_sin[:idx.shape[1]]
        h = model.tok_emb(idx)  # (B, T, D)
        for block in model.layers:
            h, _ = block(h, cos, sin)
        return model.norm(h)

    fn = torch.compile(body) if compiled else body

    def step():
        nonlocal g
        h = fn(x)
        g = torch.randn_like(h) if g is None else g
        (h * g).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def split_step(run, reps: int, steps: int, ours_kind: str) -> dict:
    """Both steps split, inside real steps, into the body (embedding, blocks, final norm, optimizer) and the
    head (output projection + loss: the full step minus the headless one). The four steps are timed
    alternating, rep by rep, since this host's speed drifts by 10-20% over minutes (a split from headless
    steps timed after the full ones gave negative heads). "body" and "head" are `transformers`' time over
    scalelab's for each; `speedup_from_head` is the speed-up scalelab would have if its body were only as
    fast as `transformers`'."""
    t = {ours_kind: [], "hf": [], "ours_body": [], "hf_body": []}
    for _ in range(reps):
        for kind in t:
            t[kind].append(1e3 * run(kind, steps) / steps)
    ours_ms, hf_ms, ours_body, hf_body = (statistics.median(v) for v in t.values())
    ours_head, hf_head = ours_ms - ours_body, hf_ms - hf_body
    return {"split_step_ms": ours_ms, "split_hf_step_ms": hf_ms, "body_ms": ours_body, "hf_body_ms": hf_body,
            "head_ms": ours_head, "hf_head_ms": hf_head, "body_speedup": hf_body / ours_body,
            "head_speedup": hf_head / ours_head if ours_head > 0 and hf_head > 0 else None,
            "speedup_from_head": hf_ms / (hf_body + ours_head)}


def bench_config(spec, reps, steps, device, amp, peak, compile_=True) -> dict:
    name, d, L, H, V, T, B, moe = spec
    cfg = model_config(d, L, H, V, T, moe)
    torch.manual_seed(0)
    x = torch.randint(0, V, (B, T), device=device)
    y = torch.roll(x, -1, dims=1)
    ours = Transformer(cfg).to(device).train()
    theirs = hf_model(cfg).to(device).train()
    ctx = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if amp else None
    steps_fn = {"scalelab": make_step(ours, "scalelab", x, y, device), "hf": make_step(theirs, "hf", x, y, device)}

    def run(kind, n):
        if ctx:
            with ctx():
                return timed(steps_fn[kind], n, device)
        return timed(steps_fn[kind], n, device)

    for kind in steps_fn:  # warm-up
        run(kind, 2)
    times = {"scalelab": [], "hf": []}
    mem = {}
    for _ in range(reps):
        for kind in ("scalelab", "hf"):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times[kind].append(run(kind, steps) / steps)
            if device == "cuda":
                mem[kind] = torch.cuda.max_memory_allocated()
    tok = B * T
    fpt = cfg.flops_per_token_exact(T)
    eager_tps = tok / statistics.median(times["scalelab"])
    hf_tps = tok / statistics.median(times["hf"])
    compiled_tps, compile_s = None, None
    if compile_:
        # torch.compile the same model; the first step pays the compilation, reported apart
        compiled = torch.compile(ours)
        steps_fn["compiled"] = make_step(compiled, "scalelab", x, y, device)
        t0 = time.perf_counter()
        run("compiled", 1)
        compile_s = time.perf_counter() - t0
        run("compiled", 1)
        ct = []
        for _ in range(reps):  # alternate with HF again so both see the same machine state
            ct.append(run("compiled", steps) / steps)
            times["hf"].append(run("hf", steps) / steps)
        compiled_tps = tok / statistics.median(ct)
        hf_tps = tok / statistics.median(times["hf"])
    ours_tps = max(eager_tps, compiled_tps or 0.0)
    # the split is of the compiled step when compiling is on (it is the faster one in most rows)
    steps_fn["ours_body"] = headless_step(ours, "scalelab", x, device, compile_)
    steps_fn["hf_body"] = headless_step(theirs, "hf", x, device, False)
    for kind in ("ours_body", "hf_body"):  # warm-up (and the compile)
        run(kind, 2)
    split = split_step(run, reps, steps, "compiled" if compile_ else "scalelab")
    return {"config": name, "d_model": d, "n_layers": L, "vocab_size": V, "seq_len": T, "batch": B, "moe": moe,
            "num_params_total": cfg.num_params_total, "flops_per_token": fpt,
            "tokens_per_s": ours_tps, "hf_tokens_per_s": hf_tps, "speedup_vs_hf": ours_tps / hf_tps,
            "eager_tokens_per_s": eager_tps, "eager_speedup_vs_hf": eager_tps / hf_tps,
            "compiled_tokens_per_s": compiled_tps, "compile_seconds": compile_s,
            "mfu": ours_tps * fpt / peak, "hf_mfu": hf_tps * fpt / peak,
            "peak_memory_bytes": mem.get("scalelab", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
            "hf_peak_memory_bytes": mem.get("hf"),
            **split,
            "memory_note": "CUDA max allocated" if mem else "process max RSS so far (CPU; monotone)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", default=None, help="comma-separated names")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                    help="both sides' precision: bf16 autocast or fp32; auto = bf16 on CUDA, fp32 on CPU")
    a = ap.parse_args(argv)
    names = a.configs.split(",") if a.configs else default_configs(a.device, a.quick)
    unknown = set(names) - {c[0] for c in CONFIGS}
    if unknown or (a.device != "cuda" and GPU_ONLY & set(names)):
        what = f"unknown config(s) {sorted(unknown)}" if unknown else f"{sorted(GPU_ONLY & set(names))} is for a GPU"
        print(f"throughput: error: --configs: {what}; choose from {[c[0] for c in CONFIGS]}", file=sys.stderr)
        return 2
    specs = [c for c in CONFIGS if c[0] in names]
    amp = a.dtype == "bf16" or (a.dtype == "auto" and a.device == "cuda")
    peak = matmul_peak_flops(a.device, "bf16" if amp else "fp32", n=2048 if a.device == "cuda" else 1024)
    cpu = cpu_info() if a.device == "cpu" else {}
    theory = cpu_theoretical_peak(cpu, "bf16" if amp else "fp32") if a.device == "cpu" else {}
    print(f"device {a.device} ({cpu.get('model') or platform.processor() or platform.machine()}), "
          f"{'bf16 autocast' if amp else 'fp32'} on both sides, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}, matmul peak {peak / 1e9:.1f} GFLOP/s (best of "
          f"{len(PEAK_SHAPES)} shapes" + (f"; theoretical at the base clock {theory['flops_per_s'] / 1e9:.1f}"
                                           if theory else "") + ")"
          + (f"; vector flags {' '.join(cpu.get('flags', []))}" if cpu else ""))
    rows = []
    print(f"{'config':<16}{'params':>10}{'eager':>9}{'compiled':>10}{'compile s':>10}{'HF':>9}"
          f"{'speedup':>9}{'(eager)':>9}{'MFU':>7}{'HF MFU':>8}{'body':>7}{'head':>7}")
    for spec in specs:
        r = bench_config(spec, 3 if a.quick else a.reps, a.steps, a.device, amp, peak, not a.no_compile)
        rows.append(r)
        comp = f"{r['compiled_tokens_per_s']:>10,.0f}{r['compile_seconds']:>10.1f}" if r["compiled_tokens_per_s"] \
            else f"{'-':>10}{'-':>10}"
        print(f"{r['config']:<16}{r['num_params_total'] / 1e6:>9.2f}M{r['eager_tokens_per_s']:>9,.0f}{comp}"
              f"{r['hf_tokens_per_s']:>9,.0f}{r['speedup_vs_hf']:>8.2f}x{r['eager_speedup_vs_hf']:>8.2f}x"
              f"{r['mfu']:>7.1%}{r['hf_mfu']:>8.1%}{r['body_speedup']:>6.2f}x"
              + (f"{r['head_speedup']:>6.2f}x" if r["head_speedup"] else f"{'-':>7}"))
        sys.stdout.flush()
    fastest = max(max(r["tokens_per_s"], r["hf_tokens_per_s"]) * r["flops_per_token"] for r in rows)
    source = f"measured matmul peak (best of {len(PEAK_SHAPES)} shapes{', or the theoretical floor' if theory else ''})"
    if fastest > peak:  # a model beat every peak estimate: the peak is at least what it reached
        print(f"note: a config ran at {fastest / 1e9:.1f} GFLOP/s, above the {peak / 1e9:.1f} measured; MFU is "
              f"against that instead (so it cannot exceed 100%)")
        peak, source = fastest, "the fastest training step observed (above every matmul measured)"
        for r in rows:
            r["mfu"], r["hf_mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak, \
                r["hf_tokens_per_s"] * r["flops_per_token"] / peak
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"device": a.device, "dtype": "bf16" if amp else "fp32",
                                            "peak_flops": peak, "peak_source": source,
                                            "cpu": cpu, "theoretical_peak": theory, "torch": torch.__version__,
                                            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
