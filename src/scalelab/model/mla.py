"""Multi-head latent attention (DeepSeek-V2, DeepSeek-AI 2024, Sec. 2.1), whose point is a small KV cache.

Per token, one down-projection makes a latent c (kv_lora_rank wide, RMS-normalised) and a RoPE key
k_r (rope_head_dim wide, shared by all heads); the cache keeps only those two. Per head, keys are
[W_uk c ; k_r] and values W_uv c. Queries are [q_nope ; RoPE(q_r)], optionally through a low-rank
bottleneck (q_lora_rank). Shapes: B batch, T new tokens, S context, H heads, n nope/value head dim
(= head_dim), r rope_head_dim, C kv_lora_rank.

Two computations of the same function:

* training and prefill (no cache): expand c into per-head K and V and call SDPA;
* decoding (with `LatentCache`): never expand the cache; absorb W_uk into the query and W_uv into the
  output (eq. 9-11 of the paper), so attention runs over the C-wide latent: the cache is read once per
  token, C + r numbers per position instead of 2 H n.

Tested against each other and against transformers' DeepseekV2 attention (logits parity).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalelab.model.layers import RMSNorm, apply_rope

LATENT_NORM_EPS = 1e-6  # DeepSeek's q_a_layernorm and kv_a_layernorm (their default, not rms_norm_eps)


class LatentCache:
    """Per layer, the latent (L, B, S_max, C) and the shared RoPE key (L, B, S_max, r)."""

    def __init__(self, n_layers: int, batch: int, max_len: int, kv_lora_rank: int, rope_head_dim: int,
                 device=None, dtype=torch.float32):
        self.c = torch.zeros(n_layers, batch, max_len, kv_lora_rank, device=device, dtype=dtype)
        self.k_rope = torch.zeros(n_layers, batch, max_len, rope_head_dim, device=device, dtype=dtype)
        self.pos = 0
        self.max_len = max_len

    def update(self, layer: int, c: torch.Tensor, k_rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = c.shape[1]
        self.c[layer, :, self.pos:self.pos + t] = c
        self.k_rope[layer, :, self.pos:self.pos + t] = k_rope
        return self.c[layer, :, :self.pos + t], self.k_rope[layer, :, :self.pos + t]


class MLA(nn.Module):
    def __init__(self, d_model: int, n_heads: int, head_dim: int, kv_lora_rank: int, rope_head_dim: int,
                 q_lora_rank: int, layer_idx: int):
        super().__init__()
        self.H, self.n, self.r, self.C = n_heads, head_dim, rope_head_dim, kv_lora_rank
        self.layer_idx = layer_idx
        qk = n_heads * (head_dim + rope_head_dim)
        if q_lora_rank:
            self.wq_a = nn.Linear(d_model, q_lora_rank, bias=False)
            self.q_norm = RMSNorm(q_lora_rank, LATENT_NORM_EPS)
            self.wq_b = nn.Linear(q_lora_rank, qk, bias=False)
        else:
            self.wq = nn.Linear(d_model, qk, bias=False)
        self.wkv_a = nn.Linear(d_model, kv_lora_rank + rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(kv_lora_rank, LATENT_NORM_EPS)
        self.wkv_b = nn.Linear(kv_lora_rank, n_heads * 2 * head_dim, bias=False)  # W_uk and W_uv, per head
        self.wo = nn.Linear(n_heads * head_dim, d_model, bias=False)

    def _queries(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))) if hasattr(self, "wq_a") else self.wq(x)
        q = q.view(B, T, self.H, self.n + self.r).transpose(1, 2)  # (B, H, T, n + r)
        q_nope, q_rope = q.split([self.n, self.r], dim=-1)
        return q_nope, apply_rope(q_rope, cos, sin)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LatentCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q_nope, q_rope = self._queries(x, cos, sin)  # (B, H, T, n), (B, H, T, r)
        c, k_rope = self.wkv_a(x).split([self.C, self.r], dim=-1)
        c = self.kv_norm(c)  # (B, T, C)
        k_rope = apply_rope(k_rope[:, None], cos, sin)[:, 0]  # (B, T, r)
        if cache is None:
            return self._expanded(q_nope, q_rope, c, k_rope)
        start = cache.pos
        c, k_rope = cache.update(self.layer_idx, c, k_rope)  # (B, S, C), (B, S, r)
        return self._absorbed(q_nope, q_rope, c, k_rope, start)

    def _expanded(self, q_nope, q_rope, c, k_rope) -> torch.Tensor:
        B, H, T, _ = q_nope.shape
        kv = self.wkv_b(c).view(B, T, H, 2 * self.n).transpose(1, 2)  # (B, H, T, 2n)
        k_nope, v = kv.split([self.n, self.n], dim=-1)
        k = torch.cat([k_nope, k_rope[:, None].expand(B, H, T, self.r)], dim=-1)  # (B, H, T, n + r)
        q = torch.cat([q_nope, q_rope], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, n)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * self.n))

    def _absorbed(self, q_nope, q_rope, c, k_rope, start: int) -> torch.Tensor:
        B, H, T, _ = q_nope.shape
        S = c.shape[1]
        w = self.wkv_b.weight.view(H, 2 * self.n, self.C)
        w_uk, w_uv = w[:, :self.n], w[:, self.n:]  # (H, n, C) each
        q_lat = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk).reshape(B, H * T, self.C)  # queries in latent space
        # heads folded into the rows: one (H*T, C) x (C, S) product per sequence, the cache read once
        scores = q_lat @ c.transpose(1, 2) + q_rope.reshape(B, H * T, self.r) @ k_rope.transpose(1, 2)  # (B, H*T, S)
        scores = scores.view(B, H, T, S) * (self.n + self.r) ** -0.5
        if T > 1 or start == 0:
            causal = torch.arange(S, device=c.device)[None, :] <= start + torch.arange(T, device=c.device)[:, None]
            scores = scores.masked_fill(~causal, float("-inf"))
        probs = scores.softmax(-1, dtype=torch.float32).type_as(c).view(B, H * T, S)
        o_lat = (probs @ c).view(B, H, T, self.C)  # (B, H, T, C)
        y = torch.einsum("bhtc,hnc->bhtn", o_lat, w_uv)  # (B, H, T, n)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * self.n))
