"""The measured matmul peak used for MFU, and bits per byte. (Records: records.py.)"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def matmul_peak_flops(device: str = "cpu", dtype: str = "fp32", n: int = 1024) -> float:
    """Measured dense matmul throughput (FLOP/s) of this device: the denominator of our MFU.

    A square n x n matmul repeated until ~0.3 s; the best of three trials. On a 2-core CPU this is
    about 1.3e11 fp32 FLOP/s; on GPUs it approaches the datasheet peak for large n."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            if reps % 4 == 0:
                sync()
                if time.perf_counter() - t0 > 0.1:
                    break
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Tokenizer-independent loss: nats/token -> bits/byte (loss / ln 2 / bytes per token)."""
    return loss_nats / math.log(2) / bytes_per_token
