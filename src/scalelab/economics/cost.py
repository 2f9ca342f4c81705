"""Time, money and serving throughput."""

from __future__ import annotations

import numpy as np

from scalelab.economics.hardware import Hardware
from scalelab.economics.memory import kv_cache_bytes, weights_bytes
from scalelab.errors import UserError
from scalelab.model.arch import Arch, as_arch
from scalelab.model.config import ModelConfig


def training_cost(flops: float, hw: Hardware, n_gpus: int = 1, mfu: float = 0.4, price: float | None = None) -> dict:
    if not 0 < mfu <= 1:
        raise UserError(f"mfu must be in (0, 1], got {mfu}", arg="mfu")
    if n_gpus < 1:
        raise UserError(f"gpus must be >= 1, got {n_gpus}", arg="gpus")
    gpu_seconds = flops / (hw.peak_bf16_flops * mfu)
    gpu_hours = gpu_seconds / 3600.0
    p = hw.price_per_hour if price is None else price
    return {"flops": flops, "gpu": hw.name, "gpus": n_gpus, "mfu": mfu, "price_per_gpu_hour": p,
            "gpu_hours": gpu_hours, "days": gpu_hours / n_gpus / 24.0, "cost_usd": gpu_hours * p}


def decode_throughput(cfg: ModelConfig | Arch, hw: Hardware, batch: int, context: int, dtype: str = "bf16",
                      price: float | None = None) -> dict:
    """Upper bound on decode tokens/s on one device: each step reads the weights (for MoE, the
    experts the batch touches) and every sequence's KV cache, and does 2 N_active FLOPs per token
    plus attention over the context. The step takes max(memory time, compute time)."""
    a = as_arch(cfg)
    moe_layers = sum(layer.moe for layer in a.layers)
    attn_flops = sum(a.attention.score_flops(layer.context(context, causal=False)) for layer in a.layers)
    kv = kv_cache_bytes(a, context)

    def step(b):
        params_read = a.num_params_total
        if moe_layers:  # expected distinct experts touched per layer by b tokens choosing top_k of E
            e = a.experts
            touched = e.num_experts * (1 - (1 - e.top_k / e.num_experts) ** b)
            params_read -= moe_layers * (e.num_experts - touched) * 3 * a.d_model * e.d_expert
        mem = weights_bytes(params_read, dtype) + b * kv
        flops = b * (2 * a.num_params_active + attn_flops)
        return mem / hw.bandwidth_bytes_per_s, flops / hw.peak_bf16_flops

    t_mem, t_comp = step(batch)
    tps = batch / max(t_mem, t_comp)
    b_star = next((b for b in np.unique(np.geomspace(1, 65536, 400).astype(int)) if step(b)[1] >= step(b)[0]), None)
    p = hw.price_per_hour if price is None else price
    return {"batch": batch, "context": context, "tokens_per_s": tps, "bound": "compute" if t_comp > t_mem else "memory",
            "compute_bound_batch": int(b_star) if b_star is not None else None,
            "usd_per_million_tokens": p / (tps * 3600.0) * 1e6}
