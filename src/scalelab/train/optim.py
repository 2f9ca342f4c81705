"""AdamW with weight decay on matrices only (embeddings and linear/expert weights), never on norm
gains (Loshchilov & Hutter 2019; the GPT-2 / nanoGPT convention)."""

from __future__ import annotations

import torch

from scalelab.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device_type: str = "cpu") -> torch.optim.AdamW:
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # foreach on CPU (one multi-tensor kernel per op), fused where CUDA supports it.
    kw = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kw)
