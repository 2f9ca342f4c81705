"""What the attention choice buys: MHA, GQA, MQA and MLA at equal parameters.

At each size (d_model x layers, head_dim 16) the lab trains four models on the same tokens of the
offline corpus: multi-head attention (n_kv_heads = n_heads), grouped-query attention (n_heads / 4 KV
heads, at least 2), multi-query attention (one KV head) and multi-head latent attention (a latent of
2 x head_dim and a RoPE key of head_dim / 2). Each variant's MLP width is adjusted so that every
model holds the MHA model's parameters (within 3 x d_model per layer): loss differences are the
attention's, not the budget's.

Measured per model: validation loss; the KV cache per token, read off the cache tensors the model
allocates for decoding (next to `economics`' analytic figure); decode speed with the cache (greedy,
batch B, after a prompt of P tokens), next to what a memory-bound model predicts: the bytes one
decoding step reads (weights + every sequence's cache), relative to MHA. The seeds' claim under test:
"GQA achieves near-MHA quality with near-MQA speed" (Ainslie et al. 2023).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from scalelab.config import DataConfig
from scalelab.economics.memory import kv_cache_bytes_per_token
from scalelab.errors import UserError
from scalelab.labs.common import (
    Shape,
    begin,
    pyplot,
    run_config,
    savefig,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.model.config import ModelConfig, swiglu_hidden
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir

VARIANTS = ("mha", "gqa", "mqa", "mla")


@dataclass(frozen=True)
class AttentionSpec:
    sizes: tuple[str, ...] = ("64x2", "96x2", "128x2")
    variants: tuple[str, ...] = VARIANTS
    tokens: int = 1_500_000
    vocab_size: int = 512
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    eval_tokens: int = 32_768
    decode_batch: int = 16
    decode_prompt: int = 1024
    decode_tokens: int = 32
    data: DataConfig = field(default_factory=lambda: DataConfig(tokenizer_train_bytes=4_000_000))

    def validate(self) -> AttentionSpec:
        for s in self.sizes:
            if Shape.parse(s).d_model < 32:
                raise UserError(f"size {s}: d_model >= 32 (at least two heads of 16)", arg="sizes")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or "mha" not in self.variants:
            raise UserError(f"variants: choose from {', '.join(VARIANTS)}, mha included (the baseline)",
                            arg="variants")
        if min(self.decode_batch, self.decode_prompt, self.decode_tokens) < 1:
            raise UserError("decode_batch, decode_prompt and decode_tokens must be >= 1")
        return self


QUICK = dict(sizes=("32x1", "64x1"), tokens=60_000, eval_tokens=8192, decode_batch=4, decode_prompt=256,
             decode_tokens=8)


def attention_keys(variant: str, n_heads: int, head_dim: int = 16) -> dict:
    """The model keys that make ``variant`` at ``n_heads`` heads."""
    if variant == "mha":
        return {"n_kv_heads": n_heads}
    if variant == "gqa":
        return {"n_kv_heads": max(2, n_heads // 4) if n_heads >= 4 else n_heads}
    if variant == "mqa":
        return {"n_kv_heads": 1}
    return {"mla": {"kv_lora_rank": 2 * head_dim, "rope_head_dim": head_dim // 2}}


def model_for(spec: AttentionSpec, shape: Shape, variant: str) -> dict:
    """The variant at this shape, its MLP widened so that its parameters equal the MHA model's."""
    h = shape.d_model // 16
    base = {"vocab_size": spec.vocab_size, "d_model": shape.d_model, "n_layers": shape.n_layers, "n_heads": h,
            "head_dim": 16, "max_seq_len": spec.decode_prompt + spec.decode_tokens}
    mha = ModelConfig.from_dict(base)
    this = ModelConfig.from_dict({**base, **attention_keys(variant, h)})
    gap = mha.num_params_total - this.num_params_total  # attention parameters saved
    return {**base, **attention_keys(variant, h), "d_ff": swiglu_hidden(shape.d_model) + round(gap / shape.n_layers
                                                                                               / (3 * shape.d_model))}


def _config(spec: AttentionSpec, shape: Shape, variant: str):
    return run_config(model_for(spec, shape, variant), spec.tokens, spec.lr, spec.batch_size, spec.seq_len,
                      spec.seed, data=asdict(spec.data), eval_tokens=spec.eval_tokens)


@torch.no_grad()
def decode_speed(model, batch: int, prompt: int, new_tokens: int, seed: int = 0) -> dict:
    """Greedy decoding with the KV cache after a ``prompt``-token prefill: tokens/s of the decode steps
    alone (best of 3), and the cache's bytes per token read off its tensors."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.cfg.vocab_size, (batch, prompt), generator=g)
    best = math.inf
    for _ in range(3):
        cache = model.new_cache(batch, prompt + new_tokens)
        nxt = model(x, cache=cache).logits[:, -1:].argmax(-1)  # prefill
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            nxt = model(nxt, cache=cache).logits[:, -1:].argmax(-1)
        best = min(best, time.perf_counter() - t0)
    tensors = [t for t in vars(cache).values() if isinstance(t, torch.Tensor)]
    per_token = sum(t.numel() * t.element_size() for t in tensors) // (batch * cache.max_len)
    return {"tokens_per_s": batch * new_tokens / best, "kv_bytes_per_token_measured": int(per_token)}


def predicted_step_bytes(cfg, batch: int, context: int, bytes_per: int = 4) -> float:
    """Bytes one decoding step reads if it is memory-bound: the weights once, every sequence's cache."""
    return cfg.num_params_total * bytes_per + batch * context * kv_cache_bytes_per_token(cfg, bytes_per)


def _row(spec, size, variant, cfg, run_dir, ds, log) -> dict:
    model, summary = train_or_load(cfg, run_dir, ds, log)
    speed = decode_speed(model, spec.decode_batch, spec.decode_prompt, spec.decode_tokens, spec.seed)
    m = cfg.model
    row = {"size": size, "variant": variant, "num_params": m.num_params_total, "n_kv_heads": m.n_kv_heads,
           "d_ff": m.d_ff, "val_loss": summary["final"]["val_loss"], **speed,
           "flops_per_token": summary["flops_per_token_exact"], "kv_bytes_per_token": kv_cache_bytes_per_token(m, 4),
           "predicted_step_bytes": predicted_step_bytes(m, spec.decode_batch, spec.decode_prompt + spec.decode_tokens)}
    log(f"  {Shape.parse(size).name} {variant:4s} params {row['num_params']:>9,} val {row['val_loss']:.4f}  KV "
        f"{row['kv_bytes_per_token_measured']:>6,} B/token  decode {row['tokens_per_s']:,.0f} tok/s")
    return row


def run(spec: AttentionSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    cfgs = {f"{Shape.parse(s).name}-{v}": (s, v, _config(spec, Shape.parse(s), v)) for s in spec.sizes
            for v in spec.variants}
    ds, rows = None, []
    with LabProgress(out, {name: c[-1] for name, c in cfgs.items()}, "attention lab"):
        for name, (size, variant, cfg) in cfgs.items():
            ds = ds or load_dataset(cfg, log=log)
            rows.append(_row(spec, size, variant, cfg, RunDir.under(out, name), ds, log))
    summary = {"spec": asdict(spec), "runs": rows, "comparison": compare(rows), "seconds": time.perf_counter() - t0}
    figs = plot(rows, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def compare(rows: list[dict]) -> list[dict]:
    """Per size and variant, against MHA at that size: loss gap, KV cache ratio, measured and predicted
    decode speed ratios."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        by = {r["variant"]: r for r in rows if r["size"] == size}
        base = by["mha"]
        for v, r in by.items():
            out.append({"size": size, "variant": v, "loss_minus_mha": r["val_loss"] - base["val_loss"],
                        "kv_cache_vs_mha": r["kv_bytes_per_token_measured"] / base["kv_bytes_per_token_measured"],
                        "decode_speed_vs_mha": r["tokens_per_s"] / base["tokens_per_s"],
                        "predicted_speed_vs_mha": base["predicted_step_bytes"] / r["predicted_step_bytes"]})
    return out


def plot(rows: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    marks = dict(zip(VARIANTS, "osD^"))
    for v in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == v]
        axes[0].scatter([r["kv_bytes_per_token_measured"] for r in rs], [r["val_loss"] for r in rs],
                        marker=marks[v], label=v)
        axes[1].scatter([r["predicted_step_bytes"] / 1e6 for r in rs], [r["tokens_per_s"] for r in rs],
                        marker=marks[v], label=v)
    for r in rows:
        axes[0].annotate(Shape.parse(r["size"]).name, (r["kv_bytes_per_token_measured"], r["val_loss"]), fontsize=7)
    axes[0].set(xscale="log", xlabel="KV cache per token (bytes, fp32, measured)", ylabel="validation loss",
                title="quality against cache size")
    axes[1].set(xscale="log", yscale="log", xlabel="bytes one decode step reads (MB, predicted)",
                ylabel="decode tokens/s (measured)", title="decode speed against bytes read")
    for ax in axes:
        ax.legend()
    return [savefig(fig, out, "attention")]


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    text = ("Each size's four models hold the same parameters (the MLP absorbs what the attention saves) and "
            "train on the same tokens. KV bytes are read off the cache tensors the model allocates; decode "
            f"speed is greedy with the cache, batch {s['spec']['decode_batch']}, after a "
            f"{s['spec']['decode_prompt']}-token prompt. 'predicted' is a memory-bound model: the ratio of "
            "bytes one step reads (weights + caches).")
    write_report(out, "Attention lab: MHA, GQA, MQA, MLA", [
        ("Quality, cache and speed", text, figs, table_html(s["comparison"])),
        ("Runs", "", [], table_html(s["runs"]))])


def headline(s: dict) -> str:
    size = s["runs"][-1]["size"]
    parts = [f"{c['variant']}: loss {c['loss_minus_mha']:+.3f}, cache {c['kv_cache_vs_mha']:.2f}x, decode "
             f"{c['decode_speed_vs_mha']:.2f}x (predicted {c['predicted_speed_vs_mha']:.2f}x)"
             for c in s["comparison"] if c["size"] == size and c["variant"] != "mha"]
    return f"largest size {size}, against MHA: " + "; ".join(parts)
