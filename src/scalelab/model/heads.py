"""Attention heads, read the way Olsson et al. 2022 ("In-context Learning and Induction Heads") read them.

- `attention_patterns`: every head's attention weights (B, H, T, T), recomputed from the same
  projections the model's forward uses (SDPA never materialises them).
- `repeated_tokens`: random token sequences repeated once, [r_1..r_n, r_1..r_n], on which an
  induction head at position n + j (token r_j) attends to position j + 1 (the token that followed
  r_j last time) and predicts it.
- `prefix_matching_scores`: each head's mean attention from the second half to those positions.
- `copying_scores`: Olsson et al.'s OV-circuit test: the eigenvalues of W_U W_O^h W_V^h W_E (V x V);
  a head that copies the token it attends to raises that token's logit, so its eigenvalues are mostly
  positive: score = sum(Re lambda) / sum(|lambda|), in [-1, 1].
- `in_context_scores`: loss late in the context minus loss early (their "ICL score"): negative when
  later tokens are predicted better because of the context.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scalelab.model.layers import Attention, apply_rope


@torch.no_grad()
def attention_patterns(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, (B, H, T, T) attention weights on ``idx`` (B, T) (standard attention layers only)."""
    B, T = idx.shape
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = model.tok_emb(idx)  # (B, T, D)
    out = []
    for block in model.layers:
        attn = block.attn
        if not isinstance(attn, Attention):
            raise ValueError("attention patterns are read from standard (MHA/GQA/MQA) layers, not MLA")
        q, k = attn._qk(block.attn_norm(x))  # (B, H, T, hd), (B, K, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)  # (B, H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        if attn.window:
            mask &= ~torch.ones(T, T, dtype=torch.bool).tril(-attn.window)
        out.append(scores.masked_fill(~mask, float("-inf")).softmax(-1))
        x, _ = block(x, cos, sin)
    return out


def repeated_tokens(batch: int, n: int, vocab_size: int, seed: int = 0, low: int = 0) -> torch.Tensor:
    """(batch, 2n): random tokens in [low, vocab_size) repeated once."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, vocab_size, (batch, n), generator=g)
    return torch.cat([r, r], dim=1)


def prefix_matching_scores(patterns: list[torch.Tensor], n: int) -> torch.Tensor:
    """(layers, heads): mean attention from position n + j to position j + 1, j = 0..n-2, on sequences
    from `repeated_tokens` (the first occurrence's successor)."""
    j = torch.arange(n - 1)
    return torch.stack([p[:, :, n + j, j + 1].mean(dim=(0, 2)) for p in patterns])


@torch.no_grad()
def copying_scores(model) -> torch.Tensor:
    """(layers, heads): sum(Re lambda) / sum(|lambda|) of W_U W_O^h W_V^h W_E, in [-1, 1]."""
    W_E, W_U = model.tok_emb.weight, model.lm_head.weight  # (V, D) each
    out = []
    for block in model.layers:
        a = block.attn
        hd, group = a.head_dim, a.n_heads // a.n_kv_heads
        row = []
        for h in range(a.n_heads):
            W_V = a.wv.weight[(h // group) * hd:(h // group + 1) * hd]  # (hd, D)
            W_O = a.wo.weight[:, h * hd:(h + 1) * hd]  # (D, hd)
            # the V x V circuit's nonzero eigenvalues are those of the small (hd x hd) product (cyclic)
            lam = torch.linalg.eigvals(((W_V @ W_E.T) @ (W_U @ W_O)).double())
            row.append(float(lam.real.sum() / lam.abs().sum().clamp_min(1e-12)))
        out.append(torch.tensor(row))
    return torch.stack(out)


@torch.no_grad()
def position_losses(model, windows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """(T,) mean next-token loss at each position of ``windows`` (n, T + 1)."""
    total = torch.zeros(windows.shape[1] - 1)
    for b in range(0, len(windows), batch):
        w = windows[b:b + batch]
        logits = model(w[:, :-1]).logits  # (B, T, V)
        total += F.cross_entropy(logits.float().transpose(1, 2), w[:, 1:], reduction="none").sum(0)
    return total / len(windows)


def in_context_score(losses: torch.Tensor, early: tuple[int, int], late: tuple[int, int]) -> float:
    """Mean loss over the ``late`` positions minus over the ``early`` ones (Olsson et al.: token 500 vs 50)."""
    return float(losses[late[0]:late[1]].mean() - losses[early[0]:early[1]].mean())
