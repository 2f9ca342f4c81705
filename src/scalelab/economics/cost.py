"""Time, money and serving throughput."""

from __future__ import annotations

import numpy as np

from scalelab.economics.hardware import Hardware
from scalelab.economics.memory import kv_cache_bytes_per_token, weights_bytes
from scalelab.errors import UserError
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


def decode_throughput(cfg: ModelConfig, hw: Hardware, batch: int, context: int, dtype: str = "bf16",
                      price: float | None = None) -> dict:
    """Upper bound on decode tokens/s on one device: each step reads the weights (for MoE, the
    experts the batch touches) and every sequence's KV cache, and does 2 N_active FLOPs per token
    plus attention over the context. The step takes max(memory time, compute time)."""
    def step(b):
        if cfg.moe is None:
            params_read = cfg.num_params_total
        else:  # expected distinct experts touched per layer by b tokens choosing top_k of E
            m = cfg.moe
            touched = m.num_experts * (1 - (1 - m.top_k / m.num_experts) ** b)
            per_expert = 3 * cfg.d_model * m.d_expert
            params_read = cfg.num_params_total - cfg.n_layers * (m.num_experts - touched) * per_expert
        mem = weights_bytes(params_read, dtype) + b * kv_cache_bytes_per_token(cfg) * context
        flops = b * (2 * cfg.num_params_active + 4 * cfg.n_layers * cfg.q_dim * context)
        return mem / hw.bandwidth_bytes_per_s, flops / hw.peak_bf16_flops

    t_mem, t_comp = step(batch)
    tps = batch / max(t_mem, t_comp)
    b_star = next((b for b in np.unique(np.geomspace(1, 65536, 400).astype(int)) if step(b)[1] >= step(b)[0]), None)
    p = hw.price_per_hour if price is None else price
    return {"batch": batch, "context": context, "tokens_per_s": tps, "bound": "compute" if t_comp > t_mem else "memory",
            "compute_bound_batch": int(b_star) if b_star is not None else None,
            "usd_per_million_tokens": p / (tps * 3600.0) * 1e6}
