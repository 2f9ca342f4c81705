"""Memory footprint of one model for training and serving: what `scalelab count --memory` prints.

Apart from memory.py (the accounting) because it also asks cost.py for decode throughput, and
cost.py needs memory.py: this module sits above both, so neither imports the other back.
"""

from __future__ import annotations

import math

from scalelab.economics.cost import decode_throughput
from scalelab.economics.hardware import get_hardware
from scalelab.economics.memory import (
    activation_bytes,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    train_state_bytes,
    weights_bytes,
)
from scalelab.model.arch import Arch
from scalelab.model.config import ModelConfig


def memory_report(cfg: ModelConfig | Arch, seq_len: int, batch: int = 1, dtype: str = "bf16", zero: int = 0,
                  dp: int = 1, gpu: str | None = None, regime: str = "mixed", recompute: str = "none") -> dict:
    """What `scalelab count --batch/--gpu/--dtype/--zero` adds to the counts."""
    state = train_state_bytes(cfg.num_params_total, regime, zero, dp)
    act = activation_bytes(cfg, seq_len, batch, recompute)
    out = {
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(cfg),
        "kv_cache_bytes": kv_cache_bytes(cfg, seq_len, batch),
        "weights_bytes": {d: weights_bytes(cfg.num_params_total, d) for d in ("fp32", "bf16", "int8", "int4")},
        "serve_memory_bytes": weights_bytes(cfg.num_params_total, dtype) + kv_cache_bytes(cfg, seq_len, batch),
        "train_state_bytes": state,
        "activation_bytes": act,
        "train_memory_bytes": state["total"] + act["total"],
        "memory_settings": {"seq_len": seq_len, "batch": batch, "serve_dtype": dtype, "regime": regime,
                            "zero": zero, "dp": dp, "recompute": recompute,
                            "note": "MoE: all experts resident for serving; weights = total parameters"},
    }
    if gpu:
        hw = get_hardware(gpu)
        out["gpu"] = hw.name
        out["fits_training"] = out["train_memory_bytes"] <= hw.memory_bytes
        out["fits_serving"] = out["serve_memory_bytes"] <= hw.memory_bytes
        out["min_gpus_serving"] = math.ceil(out["serve_memory_bytes"] / hw.memory_bytes)
        out["decode"] = decode_throughput(cfg, hw, batch, seq_len, dtype if dtype in ("bf16", "fp16", "int8", "int4")
                                          else "bf16")
    return out
