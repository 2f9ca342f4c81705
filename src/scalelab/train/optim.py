"""AdamW with weight decay on matrices only (embeddings and linear/expert weights), never on norm
gains (Loshchilov & Hutter 2019; the GPT-2 / nanoGPT convention)."""

from __future__ import annotations

import torch

from scalelab.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """Each group carries an ``lr_mult`` that the loop multiplies the schedule's lr by: 1, except muP's
    hidden matrices, 1/m (MuAdamW; AdamW's decoupled decay then shrinks with them, as there)."""
    m = getattr(getattr(model, "cfg", None), "width_mult", 1.0)
    hidden = {id(p) for p in model.hidden_matrices()} if m != 1.0 else set()
    decay, decay_hidden, no_decay = [], [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if p.requires_grad:
            (no_decay if p.dim() < 2 else decay_hidden if id(p) in hidden else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    if decay_hidden:
        groups.append({"params": decay_hidden, "weight_decay": cfg.weight_decay, "lr_mult": 1.0 / m})
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    # The fused kernel (one pass over each parameter) on CUDA and CPU: on this 2-core CPU it steps
    # 6.9M parameters in 4 ms against 23 ms for foreach (docs/LOG.md).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)
