"""Accelerators: dense (no sparsity) peak throughput, memory and bandwidth from the vendors' datasheets,
and an indicative on-demand price per device-hour (2025 public cloud list prices, rounded; pass your
own with --price)."""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.errors import UserError


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_bf16_flops: float  # dense bf16/fp16 tensor-core peak, FLOP/s
    memory_bytes: float
    bandwidth_bytes_per_s: float
    price_per_hour: float  # indicative USD per device-hour
    source: str


_G = 1e9
HARDWARE = {h.name: h for h in [
    Hardware("v100", 125e12, 32 * _G, 900 * _G, 0.6, "NVIDIA V100 SXM2 datasheet (fp16 tensor)"),
    Hardware("a100-40gb", 312e12, 40 * _G, 1555 * _G, 1.3, "NVIDIA A100 datasheet (bf16 dense)"),
    Hardware("a100-80gb", 312e12, 80 * _G, 2039 * _G, 1.8, "NVIDIA A100 80GB SXM datasheet"),
    Hardware("h100-pcie", 756e12, 80 * _G, 2000 * _G, 2.2, "NVIDIA H100 PCIe datasheet (bf16 dense)"),
    Hardware("h100-sxm", 989e12, 80 * _G, 3350 * _G, 2.5, "NVIDIA H100 SXM datasheet (bf16 dense)"),
    Hardware("h200", 989e12, 141 * _G, 4800 * _G, 3.5, "NVIDIA H200 SXM datasheet"),
    Hardware("b200", 2250e12, 180 * _G, 8000 * _G, 5.0, "NVIDIA HGX B200 datasheet (bf16 dense)"),
    Hardware("l40s", 362e12, 48 * _G, 864 * _G, 1.0, "NVIDIA L40S datasheet (bf16 dense)"),
    Hardware("rtx-4090", 165e12, 24 * _G, 1008 * _G, 0.5, "NVIDIA Ada whitepaper (bf16, fp32 accumulate)"),
    Hardware("mi300x", 1307e12, 192 * _G, 5300 * _G, 2.5, "AMD Instinct MI300X datasheet (bf16 dense)"),
    Hardware("tpu-v4", 275e12, 32 * _G, 1200 * _G, 3.2, "Google Cloud TPU v4 documentation"),
    Hardware("tpu-v5e", 197e12, 16 * _G, 819 * _G, 1.2, "Google Cloud TPU v5e documentation"),
    Hardware("tpu-v5p", 459e12, 95 * _G, 2765 * _G, 4.2, "Google Cloud TPU v5p documentation"),
]}


def get_hardware(name: str) -> Hardware:
    key = name.lower()
    if key not in HARDWARE:
        raise UserError(f"gpu {name!r} is unknown; choose from {', '.join(HARDWARE)}", arg="gpu")
    return HARDWARE[key]


# `torch.cuda.get_device_name()` -> our table's entry, by substrings (first match wins; the more
# specific name first: "H100 PCIe" before "H100", "A100 ... 40GB" before "A100")
DEVICE_NAMES = (("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("h200", "h200"), ("b200", "b200"),
                ("a100-sxm4-40gb", "a100-40gb"), ("a100-pcie-40gb", "a100-40gb"), ("a100", "a100-80gb"),
                ("v100", "v100"), ("l40s", "l40s"), ("rtx 4090", "rtx-4090"), ("mi300x", "mi300x"))


def hardware_for_device(device_name: str) -> Hardware | None:
    """The datasheet entry of a device as torch names it (e.g. 'NVIDIA H200', 'NVIDIA A100-SXM4-40GB'),
    or None when it is not in the table (MFU then falls back to the measured matmul peak)."""
    low = device_name.lower()
    return next((HARDWARE[key] for sub, key in DEVICE_NAMES if sub in low), None)
