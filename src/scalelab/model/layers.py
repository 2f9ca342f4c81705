"""Transformer building blocks: RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU.

Shapes in comments: B batch, T new tokens, S total context (cache + new), D d_model, H query heads,
K key/value heads, hd head_dim, F feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019): x / rms(x) * g, no mean, no bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (as Llama does) so bf16 activations do not lose the variance.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (max_seq_len, head_dim), for RoPE (Su et al. 2021).

    Uses the "rotate half" layout of GPT-NeoX / Hugging Face Llama, so weights move to and from
    `transformers` without permuting Q and K.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    pos = torch.arange(max_seq_len, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)  # (S, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (S, hd)
    return emb.cos().float(), emb.sin().float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, hd); cos/sin (T, hd) for the positions of those T tokens."""
    return (x * cos + _rotate_half(x) * sin).type_as(x)


class KVCache:
    """Pre-allocated key/value cache for incremental decoding: (L, B, K, S_max, hd) per tensor."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # number of positions already written
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        self.k[layer, :, :, self.pos:self.pos + t] = k
        self.v[layer, :, :, self.pos:self.pos + t] = v
        return self.k[layer, :, :, :self.pos + t], self.v[layer, :, :, :self.pos + t]


class Attention(nn.Module):
    """Causal grouped-query attention (Ainslie et al. 2023) through scaled_dot_product_attention, with
    optional q/k/v biases (Qwen2), q/k RMSNorm (Qwen3 per head, OLMo-2 over all heads) and a sliding
    window (Mistral)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int, layer_idx: int,
                 qkv_bias: bool = False, qk_norm: str = "", sliding_window: int = 0, eps: float = 1e-5,
                 scale: float | None = None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.scale = n_heads, n_kv_heads, head_dim, scale
        self.layer_idx, self.window, self.qk_norm = layer_idx, sliding_window, qk_norm
        self.wq = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.wk = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.wv = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.wo = nn.Linear(n_heads * head_dim, d_model, bias=False)
        if qk_norm:
            full = qk_norm == "full"
            self.q_norm = RMSNorm(n_heads * head_dim if full else head_dim, eps)
            self.k_norm = RMSNorm(n_kv_heads * head_dim if full else head_dim, eps)

    def _qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k = self.wq(x), self.wk(x)  # (B, T, H*hd), (B, T, K*hd)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, hd), (B, K, T, hd)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k = self._qk(x)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(self.layer_idx, k, v)  # (B, K, S, hd), S = start + T
        gqa = self.n_kv_heads != self.n_heads
        mask = attention_mask(start, T, k.shape[2], self.window, x.device)
        if mask is None and start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, scale=self.scale)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*hd)
        return self.wo(y)


def attention_mask(start: int, T: int, S: int, window: int, device) -> torch.Tensor | None:
    """(T, S) boolean mask of the keys each of T new queries (positions start..start+T-1) may attend
    among S cached + new keys: causal, and within the last ``window`` positions when window > 0.
    None where no key needs masking beyond SDPA's own causal mode (from position 0) or at all (one new
    token over a cache shorter than the window)."""
    if not window or window >= S:
        if start == 0 or T == 1:
            return None
    qpos = start + torch.arange(T, device=device)[:, None]  # (T, 1)
    kpos = torch.arange(S, device=device)[None, :]  # (1, S)
    mask = kpos <= qpos
    if window:
        mask &= qpos - kpos < window
    return mask


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): W2 (silu(W1 x) * W3 x). Names follow Llama: w1 gate, w3 up."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
