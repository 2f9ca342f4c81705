"""An 8-bit KV cache: keys and values stored as int8, one absmax scale per cached vector
(per layer, sequence, KV head and position), dequantized when attention reads them (the per-token
scheme of KIVI's value cache and of vLLM's fp8/int8 KV caches, in plain PyTorch).

Memory per cached element: 1 byte plus 4 / head_dim bytes of scale (fp32), against 2 (bf16) or 4 (fp32).
`cached_loss` measures what it costs: the next-token loss computed through a cache, chunk by chunk,
so that every attention read goes through the cache's stored (quantized) keys and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalelab.model.layers import KVCache


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 over the last dimension -> (codes int8, scales (..., 1))."""
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127.0
    return torch.round(x / scale).clamp(-127, 127).to(torch.int8), scale


class Int8KVCache(KVCache):
    """`KVCache` with int8 storage: (L, B, K, S_max, hd) codes and (L, B, K, S_max, 1) scales."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=torch.int8)
        self.v = torch.zeros(shape, device=device, dtype=torch.int8)
        self.k_scale = torch.zeros(shape[:-1] + (1,), device=device, dtype=torch.float32)
        self.v_scale = torch.zeros_like(self.k_scale)
        self.out_dtype, self.pos, self.max_len = dtype, 0, max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.shape[2]
        for codes, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            codes[layer, :, :, self.pos:end], scales[layer, :, :, self.pos:end] = quantize_int8(x.float())
        return tuple((c[layer, :, :, :end].float() * s[layer, :, :, :end]).to(self.out_dtype)
                     for c, s in ((self.k, self.k_scale), (self.v, self.v_scale)))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.k_scale, self.v_scale))


def new_int8_cache(model, batch: int) -> Int8KVCache:
    c = model.cfg
    if c.mla is not None:
        raise ValueError("the int8 cache is for K/V caches (MHA, GQA, MQA), not MLA's latent")
    return Int8KVCache(c.n_layers, batch, c.n_kv_heads, c.max_seq_len, c.head_dim)


@torch.no_grad()
def cached_loss(model, windows: torch.Tensor, new_cache, chunk: int = 16, batch: int = 32) -> float:
    """Mean next-token loss over ``windows`` (n, T + 1), fed ``chunk`` tokens at a time through a fresh
    ``new_cache(model, batch)`` per batch of windows."""
    total, count = 0.0, 0
    for b in range(0, len(windows), batch):
        w = windows[b:b + batch]
        x, y = w[:, :-1], w[:, 1:]  # (B, T) each
        cache = new_cache(model, len(w))
        for s in range(0, x.shape[1], chunk):
            logits = model(x[:, s:s + chunk], cache=cache).logits  # (B, chunk, V)
            total += F.cross_entropy(logits.float().transpose(1, 2), y[:, s:s + chunk], reduction="sum").item()
            count += y[:, s:s + chunk].numel()
    return total / count
