"""Quantization lab: post-training weight quantization vs validation loss, across model sizes.

Round-to-nearest (RTN), symmetric, per output channel or per group of ``group_size`` input weights:

    scale = max|w| / ((q_max - q_min) / 2),   q = clamp(round(w * (1 / scale)), q_min, q_max),   w' = q * scale

with q_min = -2^(b-1), q_max = 2^(b-1) - 1: the scheme of torchao's ``IntxWeightOnlyConfig`` with
symmetric mapping, down to multiplying by the reciprocal of the scale (dividing instead moves the
largest weight of a group across a rounding tie); the lab runs torchao on one model as a cross-check.
16 bits means bfloat16. Losses are per-window means over a fixed validation set, so two widths are
compared pairwise: "monotone" means no width beats the next wider one by more than z standard errors
of the paired difference (z for 5%, Bonferroni-corrected over the comparisons: 3.2 for 36).
Quantized: every linear layer of the blocks (attention, MLP, experts); the embedding (tied to the
output head) only with ``embeddings=True``. Bytes of weights count the codes at b bits, one bf16 scale
per channel or group, and every unquantized parameter at bf16; next to them, the bytes the economics
module predicts (`scalelab.economics.memory.weights_bytes`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from scalelab.economics.memory import weights_bytes
from scalelab.errors import UserError
from scalelab.labs.common import begin, pyplot, savefig, write_report, write_summary
from scalelab.labs.moe import MoESpec
from scalelab.labs.moe import run as moe_run
from scalelab.report.page import table_html
from scalelab.train.data import load_dataset
from scalelab.train.runner import load_run

BITS = (16, 8, 6, 5, 4, 3, 2)


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int = 0) -> torch.Tensor:
    """Fake-quantize a (out, in) weight: RTN symmetric, per output channel (group_size 0) or per group."""
    if bits >= 16:
        return w.to(torch.bfloat16).to(w.dtype)
    out_f, in_f = w.shape
    g = in_f if group_size <= 0 else group_size
    if in_f % g:
        raise UserError(f"group_size={group_size} does not divide the input width {in_f}; pick a divisor")
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    wg = w.reshape(out_f, in_f // g, g)
    scale = (wg.abs().amax(-1, keepdim=True) / ((qmax - qmin) / 2)).clamp_min(torch.finfo(w.dtype).eps)
    q = torch.clamp(torch.round(wg * (1.0 / scale)), qmin, qmax)  # multiply by the reciprocal, as torchao does
    return (q * scale).reshape(out_f, in_f)


def quantizable(model, embeddings: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every matrix the lab quantizes; expert weights are (E, out, in) stacks."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        if "tok_emb" in name or "lm_head" in name:
            if embeddings:
                out.append((name, p))
            continue
        out.append((name, p))
    return out


@torch.no_grad()
def quantize_model(model, bits: int, group_size: int = 0, embeddings: bool = False) -> dict:
    """Quantize ``model`` in place; -> bytes of weights as stored at ``bits``."""
    q_params, codes_bits, scales = 0, 0, 0
    for _, p in quantizable(model, embeddings):
        mats = p.data.reshape(-1, p.shape[-1])  # experts (E, out, in) -> (E*out, in): per-channel per expert
        mats.copy_(quantize_tensor(mats, bits, group_size))
        q_params += p.numel()
        codes_bits += p.numel() * bits
        scales += mats.shape[0] * (mats.shape[1] // (group_size or mats.shape[1]))
    total = sum(p.numel() for p in model.parameters())
    if bits >= 16:
        stored = total * 2
    else:
        stored = codes_bits / 8 + scales * 2 + (total - q_params) * 2
    return {"bits": bits, "quantized_params": q_params, "scales": scales, "total_params": total, "weight_bytes": stored,
            "bits_per_param": stored * 8 / total}


@dataclass(frozen=True)
class QuantizeSpec:
    runs: tuple[str, ...] = ()  # run directories; empty = train the default dense size ladder first
    bits: tuple[int, ...] = BITS
    group_size: int = 16  # every width in the default ladders is a multiple of 16
    embeddings: bool = False
    eval_tokens: int = 32_768
    torchao_check: bool = True
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2")  # the default ladder (the MoE lab's dense models)
    tokens: int = 2_000_000

    def validate(self) -> QuantizeSpec:
        bad = [b for b in self.bits if not 2 <= b <= 16 or 8 < b < 16]
        if bad:
            raise UserError(f"bits must be 16 or in 2..8, got {bad[0]}")
        if self.group_size < 0:
            raise UserError("group_size must be >= 0 (0 = per channel)", arg="group_size")
        return self


QUICK = dict(sizes=("32x1", "48x1"), tokens=100_000, eval_tokens=8192, bits=(16, 8, 4, 2))


def _default_runs(spec: QuantizeSpec, out: Path, log) -> list[Path]:
    moe_dir = out / "ladder"
    moe_run(MoESpec(sizes=spec.sizes, variants=("dense",), tokens=spec.tokens, ablation=False), moe_dir, log)
    return sorted((moe_dir / "runs").glob("*-dense"))


def run(spec: QuantizeSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    run_dirs = [Path(r) for r in spec.runs] or _default_runs(spec, out, log)
    results = []
    for rd in run_dirs:
        model, cfg, _ = load_run(rd)
        ds = load_dataset(cfg, log=log)
        windows = ds.eval_windows(cfg.train.seq_len, spec.eval_tokens)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        base_w = window_losses(model, windows)
        base = float(base_w.mean())
        rows, per_window = [], {}
        for gran, g in (("channel", 0), ("group", spec.group_size)):
            for bits in spec.bits:
                model.load_state_dict(state)
                info = quantize_model(model, bits, g, spec.embeddings)
                lw = window_losses(model, windows)
                per_window[(gran, bits)] = lw
                loss = float(lw.mean())
                rows.append({"granularity": gran, **info, "val_loss": loss, "rel_increase": loss / base - 1,
                             "predicted_weight_bytes": _predicted_bytes(info, bits, g)})
        for gran in ("channel", "group"):  # paired comparison with the next wider format
            widths = sorted(spec.bits, reverse=True)
            for wide, narrow in zip(widths, widths[1:]):
                d = per_window[(gran, narrow)] - per_window[(gran, wide)]
                row = next(r for r in rows if r["granularity"] == gran and r["bits"] == narrow)
                row.update(delta_vs_wider=float(d.mean()), delta_se=float(d.std() / len(d) ** 0.5))
        model.load_state_dict(state)
        res = {"run_dir": str(rd), "num_params": cfg.model.num_params_total, "base_loss": base, "rows": rows}
        if spec.torchao_check and rd == run_dirs[0]:
            res["torchao"] = torchao_check(model, state, windows, spec.group_size, spec.embeddings, rows)
        results.append(res)
        r8 = next((r for r in rows if r["bits"] == 8 and r["granularity"] == "group"), None)
        log(f"  {rd.name}: {cfg.model.num_params_total:,} params, bf16 loss {base:.4f}" +
            (f", 8-bit {r8['val_loss']:.4f} ({r8['rel_increase']:+.3%})" if r8 else ""))
    summary = {"spec": asdict(spec), "models": results, "checks": checks(results), "seconds": time.perf_counter() - t0}
    figs = plot(results, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def _predicted_bytes(info: dict, bits: int, group_size: int) -> float:
    """The economics module's prediction: quantized matrices at ``bits`` plus one 16-bit scale per group
    (per channel: a group is a row), everything else at bf16."""
    if bits >= 16:
        return weights_bytes(info["total_params"], "bf16")
    q = info["quantized_params"]
    g = group_size or q / info["scales"]
    return weights_bytes(q, f"int{bits}", group_size=g) + weights_bytes(info["total_params"] - q, "bf16")


def torchao_check(model, state, windows, group_size, embeddings, rows) -> dict:
    """The same RTN quantization through torchao's IntxWeightOnlyConfig; losses side by side at 8 and 4 bits."""
    try:
        from torchao.quantization import IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerGroup
    except ImportError:
        return {"ok": False, "reason": "torchao is not installed (pip install 'scalelab[labs]')"}
    out = {"ok": True, "group_size": group_size, "rows": []}
    model.load_state_dict(state)
    for bits in (8, 4):
        q = copy.deepcopy(model)  # a fresh copy per width: torchao swaps the weights for its own tensors
        quantize_(q, IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group_size)),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and (embeddings or "lm_head" not in fqn))
        loss = float(window_losses(q, windows).mean())
        row = next(r for r in rows if r["bits"] == bits and r["granularity"] == "group")
        out["rows"].append({"bits": bits, "torchao_loss": loss, "scalelab_loss": row["val_loss"],
                            "abs_diff": abs(loss - row["val_loss"]), "torchao_bytes_in_memory": _storage_bytes(q),
                            "predicted_bytes": row["predicted_weight_bytes"]})
    out["max_abs_diff"] = max(r["abs_diff"] for r in out["rows"])
    return out


@torch.no_grad()
def window_losses(model, windows: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Mean next-token loss of each validation window (n,)."""
    import torch.nn.functional as F

    model.eval()
    out = []
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size]
        logits = model(w[:, :-1]).logits.float()  # (B, T, V)
        out.append(F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").mean(1))
    return torch.cat(out)


def _storage_bytes(model) -> int:
    """Bytes the model's parameters occupy in memory, looking inside torchao's tensor subclasses
    (codes, scales, zero points), each storage counted once (tied weights)."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        names, _ = t.__tensor_flatten__() if hasattr(t, "__tensor_flatten__") else ([], None)
        if names:
            for n in names:
                add(getattr(t, n))
            return
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()

    for p in model.parameters():
        add(p.data if not hasattr(p, "__tensor_flatten__") else p)
    return total


def checks(results: list[dict]) -> dict:
    worst8 = max((r["rel_increase"] for m in results for r in m["rows"] if r["bits"] == 8), default=float("nan"))
    # monotone: no width beats the next wider one by more than z standard errors of the paired difference,
    # z two-sided at 5% with a Bonferroni correction over all the comparisons made
    from scipy.stats import norm

    pairs = [r for m in results for r in m["rows"] if "delta_vs_wider" in r]
    z = float(norm.ppf(1 - 0.05 / (2 * max(1, len(pairs)))))
    mono = all(r["delta_vs_wider"] >= -z * r["delta_se"] for r in pairs)
    return {"worst_8bit_rel_increase": worst8, "monotone_in_bits": mono, "monotone_z": z,
            "largest_reversal_in_se": min((r["delta_vs_wider"] / max(r["delta_se"], 1e-12) for r in pairs),
                                          default=0.0)}


def plot(results: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for i, m in enumerate(results):
        for gran, ls in (("group", "-"), ("channel", "--")):
            rs = sorted([r for r in m["rows"] if r["granularity"] == gran], key=lambda r: r["bits"])
            label = f"{m['num_params']:,} params, per {gran}"
            axes[0].plot([r["bits_per_param"] for r in rs], [r["val_loss"] for r in rs], ls, marker="o", color=f"C{i}",
                         label=label)
            axes[1].plot([r["weight_bytes"] for r in rs], [r["val_loss"] for r in rs], ls, marker="o", color=f"C{i}")
    axes[0].set(xlabel="bits per parameter (codes + scales)", ylabel="validation loss", xscale="log",
                xticks=[2, 3, 4, 6, 8, 16],
                xticklabels=["2", "3", "4", "6", "8", "16"])
    axes[1].set(xlabel="bytes of weights", xscale="log", title="bigger models at fewer bits vs smaller at more")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return [savefig(fig, out, "quantization")]


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    rows = [{"model": Path(m["run_dir"]).name, "granularity": r["granularity"], "bits": r["bits"],
             "bits/param": r["bits_per_param"], "weight bytes": r["weight_bytes"],
             "predicted bytes": r["predicted_weight_bytes"], "val loss": r["val_loss"],
             "vs bf16 model": f"{r['rel_increase']:+.3%}"} for m in s["models"] for r in m["rows"]]
    ao = next((m["torchao"] for m in s["models"] if "torchao" in m), None)
    c = s["checks"]
    text = (f"Worst 8-bit loss increase over all models: {c['worst_8bit_rel_increase']:+.3%}; loss monotone in bits: "
            f"{c['monotone_in_bits']}.")
    sections = [("Validation loss against bits and bytes", text, figs, table_html(rows))]
    if ao:
        ao_text = ao.get("reason", f"max |loss difference| {ao.get('max_abs_diff', 0):.2e}")
        sections.append(("Cross-check against torchao", ao_text,
                         [], table_html(ao.get("rows", []))))
    write_report(out, "Quantization vs loss", sections)


def headline(s: dict) -> str:
    c = s["checks"]
    ao = next((m["torchao"] for m in s["models"] if "torchao" in m), {})
    return (f"worst 8-bit loss increase {c['worst_8bit_rel_increase']:+.3%}, monotone in bits: {c['monotone_in_bits']}"
            + (f", torchao max |Δloss| {ao['max_abs_diff']:.2e}" if ao.get("ok") else ""))
