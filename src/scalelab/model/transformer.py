"""The decoder-only transformer, read top to bottom (after nanoGPT).

    tokens -> embedding -> [RMSNorm -> GQA attention (RoPE) -> + residual
                            RMSNorm -> SwiGLU or MoE      -> + residual] x n_layers
           -> RMSNorm -> output projection (tied to the embedding or not) -> logits
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalelab.model.config import ModelConfig
from scalelab.model.layers import Attention, KVCache, RMSNorm, SwiGLU, rope_tables
from scalelab.model.loss import linear_cross_entropy
from scalelab.model.mla import MLA, LatentCache
from scalelab.model.moe import MoE, MoEAux


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # (B, T, V); None when only the loss was asked for
    loss: torch.Tensor | None = None  # mean next-token cross-entropy, nats (the LM loss alone)
    aux_loss: torch.Tensor | None = None  # lb_coef * lb + z_coef * z, averaged over MoE layers
    moe: dict = field(default_factory=dict)  # lb_loss, z_loss, load (E,), dropped_frac


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, moe_dispatch: str = "auto"):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if cfg.mla is not None:
            a = cfg.mla
            self.attn = MLA(cfg.d_model, cfg.n_heads, cfg.head_dim, a.kv_lora_rank, a.rope_head_dim, a.q_lora_rank,
                            layer_idx)
        else:
            self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, layer_idx,
                                  qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, sliding_window=cfg.sliding_window,
                                  eps=cfg.norm_eps, scale=cfg.attn_scale)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        moe = cfg.is_moe_layer(layer_idx)
        self.mlp = MoE(cfg.d_model, cfg.moe, moe_dispatch) if moe else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, cos, sin, cache=None) -> tuple[torch.Tensor, MoEAux | None]:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)  # (B, T, D)
        h = self.mlp(self.mlp_norm(x))
        if isinstance(h, tuple):  # MoE returns (output, router statistics)
            h, aux = h
            return x + h, aux
        return x + h, None


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, moe_dispatch: str = "auto"):
        super().__init__()
        self.cfg = cfg.validate()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i, moe_dispatch) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        rope_dim = cfg.mla.rope_head_dim if cfg.mla is not None else cfg.head_dim
        cos, sin = rope_tables(rope_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 / OLMo style init: N(0, std) everywhere, residual-branch outputs (wo, w2) scaled by
        1/sqrt(2 n_layers) so the residual stream's variance does not grow with depth. Small logits
        at init make the step-0 loss close to ln(vocab). muP: the hidden matrices' std / sqrt(m)."""
        std = self.cfg.init_std
        hidden = {id(p) for p in self.hidden_matrices()}
        for name, p in self.named_parameters():
            s = std / math.sqrt(self.cfg.width_mult) if id(p) in hidden else std
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight", ".w2")):
                nn.init.normal_(p, 0.0, s / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, 0.0, s)

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The weights whose fan-in and fan-out both grow with width (muP's "hidden" weights: every
        matrix but the embedding and the output projection)."""
        edge = {id(self.tok_emb.weight), id(self.lm_head.weight)}
        return [p for p in self.parameters() if p.dim() >= 2 and id(p) not in edge]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared (tied) tensors are counted once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, return_logits: bool = True) -> ModelOutput:
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        cos = self.rope_cos[start:start + T]  # (T, hd)
        sin = self.rope_sin[start:start + T]
        x = self.tok_emb(idx)  # (B, T, D)
        auxes = []
        for block in self.layers:
            x, aux = block(x, cos, sin, cache)
            if aux is not None:
                auxes.append(aux)
        if cache is not None:
            cache.pos += T
        x = self.norm(x)
        if self.cfg.width_mult != 1.0:  # muP's output multiplier 1/m (MuReadout), on x: the same logits
            x = x / self.cfg.width_mult
        if targets is not None and not return_logits:
            # training / evaluation: never materialise the (B*T, V) logits (see model/loss.py)
            out = ModelOutput(logits=None)
            out.loss = linear_cross_entropy(x.reshape(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1))
        else:
            logits = self.lm_head(x)  # (B, T, V)
            out = ModelOutput(logits=logits)
            if targets is not None:
                out.loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        if auxes:
            m = self.cfg.moe
            lb = torch.stack([a.lb_loss for a in auxes]).mean()
            z = torch.stack([a.z_loss for a in auxes]).mean()
            out.aux_loss = m.lb_coef * lb + m.z_coef * z
            out.moe = {
                "lb_loss": lb,
                "z_loss": z,
                "load": torch.stack([a.load for a in auxes]).mean(0),
                "dropped_frac": torch.stack([a.dropped_frac for a in auxes]).mean(),
            }
        return out

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache | LatentCache:
        p, c = next(self.parameters()), self.cfg
        if c.mla is not None:  # the latent and the RoPE key only (model/mla.py)
            return LatentCache(c.n_layers, batch, max_len or c.max_seq_len, c.mla.kv_lora_rank, c.mla.rope_head_dim,
                               device=p.device, dtype=p.dtype)
        return KVCache(c.n_layers, batch, c.n_kv_heads, max_len or c.max_seq_len, c.head_dim, device=p.device,
                       dtype=p.dtype)


@torch.no_grad()
def generate(model: Transformer, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, stop_token: int | None = None,
             cache=None) -> torch.Tensor:
    """Autoregressive sampling. temperature=0 is greedy. idx (B, T0) -> (B, T0 + new). ``cache``: an
    empty cache to decode with (default a new `KVCache`; e.g. model/kvquant.py's int8 one)."""
    model.eval()
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - idx.shape[1])
    cache = (cache if cache is not None else model.new_cache(idx.shape[0])) if use_cache else None
    out = idx
    step_input = idx
    for _ in range(max_new_tokens):
        logits = model(step_input if use_cache else out, cache=cache).logits[:, -1, :].float()  # (B, V)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        out = torch.cat([out, nxt], dim=1)
        step_input = nxt
        if stop_token is not None and bool((nxt == stop_token).all()):
            break
    return out


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass >= top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)
