"""AdamW with weight decay on matrices only (embeddings and linear/expert weights), never on norm
gains (Loshchilov & Hutter 2019; the GPT-2 / nanoGPT convention)."""

from __future__ import annotations

import torch

from scalelab.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (one pass over each parameter) on CUDA and CPU: on this 2-core CPU it steps
    # 6.9M parameters in 4 ms against 23 ms for foreach (docs/LOG.md).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)
