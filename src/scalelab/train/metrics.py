"""The measured matmul peak used for MFU, and bits per byte. (Records: records.py.)"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import torch

# the shapes the peak is measured on (m, k, n): squares, and the tall-skinny products of a model's layers
# (tokens x d_model times d_model x 4 d_model, and back); the best of them is the device's dense matmul peak
PEAK_SHAPES = ((512, 512, 512), (1024, 1024, 1024), (4096, 256, 1024), (4096, 1024, 256), (2048, 512, 2048))


def _rate(device: str, dt, m: int, k: int, n: int, seconds: float, trials: int = 3) -> float:
    """FLOP/s of repeated (m, k) @ (k, n) products: the best of ``trials`` trials of ``seconds`` each."""
    a = torch.randn(m, k, device=device, dtype=dt)
    b = torch.randn(k, n, device=device, dtype=dt)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            if reps % 4 == 0:
                sync()
                if time.perf_counter() - t0 > seconds:
                    break
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


@lru_cache(maxsize=8)
def matmul_peak_flops(device: str = "cpu", dtype: str = "fp32", n: int = 1024, floor: bool = True) -> float:
    """Measured dense matmul throughput (FLOP/s) of this device: the denominator of our MFU.

    On a GPU: a square n x n matmul (large n approaches the datasheet). On a CPU: the best over
    `PEAK_SHAPES` (one 1024 x 1024 product alone under-measured this 2-core CPU's peak by enough that a
    model's own matmuls beat it: MFU read 87-110%), and at least the theoretical peak where the CPU's
    vector width and clock can be read (`cpu_theoretical_peak`; ``floor=False``: the measurement alone)."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    if not device.startswith("cpu"):
        return _rate(device, dt, n, n, n, 0.1)
    return max(max(_rate(device, dt, *shape, 0.05, trials=2) for shape in PEAK_SHAPES),  # ~0.6 s in all
               cpu_theoretical_peak(dtype=dtype).get("flops_per_s", 0.0) if floor else 0.0)


def cpu_info() -> dict:
    """The CPU's model name, the vector flags that set its peak, its logical cores and its clock (MHz) as
    /proc/cpuinfo (Linux) reports them; what cannot be read is left out."""
    import os
    import platform

    out = {"model": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
           "logical_cpus": os.cpu_count(), "aten_capability": torch.backends.cpu.get_cpu_capability(),
           "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""),
           "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            out["model"] = value
        elif key == "vendor_id" and "vendor" not in out:
            out["vendor"] = value
        elif key == "cpu family" and "family" not in out:
            out["family"] = int(value) if value.isdigit() else value
        elif key == "cpu MHz" and "mhz" not in out:
            out["mhz"] = float(value)
        elif key == "flags" and "flags" not in out:
            out["flags"] = sorted(f for f in value.split() if f.startswith(("avx", "fma", "amx")))
    return out


def vector_bits(info: dict) -> int:
    """The width of the FMA datapath (bits): 512 where AVX-512 runs at full width (Intel, and AMD from Zen 5,
    family 26), 256 elsewhere, AMD's Zen 4 included (family 25: AVX-512 split over 256-bit units: 200 GFLOP/s
    measured against 166 at 256 bits and 332 at 512 on 2 cores, docs/LOG.md 2026-12-06). MKL_ENABLE_INSTRUCTIONS
    =AVX2 or ONEDNN_MAX_CPU_ISA=AVX2 (with ATEN_CPU_CAPABILITY=avx2, how an AVX2 machine is emulated on an
    AVX-512 one) caps it at 256."""
    flags = set(info.get("flags", ()))
    caps = [info.get(k, "").upper() for k in ("mkl_instructions", "onednn_max_isa")]
    capped = any(v == "AVX" or v.startswith(("AVX2", "SSE")) for v in caps)  # AVX512* and AVX10_*_512 are not caps
    amd_split = info.get("vendor") == "AuthenticAMD" and isinstance(info.get("family"), int) and info["family"] < 26
    return 512 if "avx512f" in flags and not capped and not amd_split else 256


def native_bf16(info: dict) -> bool | None:
    """Whether the CPU multiplies bf16 in hardware (AVX512_BF16's dot products or AMX tiles); elsewhere a
    bf16 matmul converts to fp32 and runs no faster than fp32 does. ONEDNN_MAX_CPU_ISA below the bf16
    ISAs (``onednn_max_isa`` in `cpu_info`: how a CPU without them is emulated) turns it off, as it does oneDNN's
    bf16 kernels. None where no x86 flags can be read (another architecture: not known either way)."""
    if "flags" not in info:
        return None
    capped = info.get("onednn_max_isa", "").upper() in ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2",
                                                          "AVX512_CORE", "AVX512_CORE_VNNI")
    return not capped and bool(set(info["flags"]) & {"avx512_bf16", "amx_bf16"})


def cpu_theoretical_peak(info: dict | None = None, dtype: str = "fp32") -> dict:
    """FLOP/s from the FMA datapath's width (`vector_bits`), two FMA units per core (x86 server cores
    since Haswell), the cores torch uses and the reported clock: cores x lanes x 2 (an FMA is two FLOPs) x 2
    units x Hz. The reported clock is the base one, not the boost, so this is meant as a floor for the peak,
    not a ceiling; it says which assumptions it made. bf16: twice the fp32 figure where the CPU has bf16 dot
    products (`native_bf16`: each fp32 lane's VDPBF16PS multiplies two pairs; AMX's tiles do more, left out
    so the figure stays a floor); nothing where it has none (a bf16 matmul there is slower than fp32)."""
    info = info or cpu_info()
    flags = set(info.get("flags", ()))
    if "mhz" not in info or not flags & {"avx512f", "avx2", "fma", "avx"}:
        return {}
    if dtype == "bf16" and not native_bf16(info):  # None (unknown) too: no floor
        return {}
    lanes = vector_bits(info) // 32
    per_lane = 2 if dtype == "bf16" else 1
    flops = info["cores"] * lanes * per_lane * 2 * 2 * info["mhz"] * 1e6
    return {"flops_per_s": flops, "dtype": dtype, "lanes_fp32": lanes, "products_per_lane": per_lane,
            "fma_units": 2, "cores": info["cores"], "mhz": info["mhz"],
            "assumes": "two FMA units per core at the reported (base) clock"}


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Tokenizer-independent loss: nats/token -> bits/byte (loss / ln 2 / bytes per token)."""
    return loss_nats / math.log(2) / bytes_per_token
