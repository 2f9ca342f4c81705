"""The coordinate check of muP (Yang et al. 2022, "Tensor Programs V", section 5 and Figure 5;
microsoft/mup's `coord_check`): train the same model family at several widths for a few Adam steps
and record the typical size of each activation's coordinates, mean |x|. Under a parametrization
that is stable in width (muP) the curves are flat across widths; under the standard one the logits
and the attention / MLP outputs grow with width once training moves the weights (Adam's update of a
d x d matrix changes its output by O(d) per coordinate, unless the lr is scaled by 1/d).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from scalelab.config import OptimConfig
from scalelab.model.config import ModelConfig
from scalelab.model.transformer import Transformer
from scalelab.train.optim import build_optimizer


def coord_check(base: ModelConfig, widths: list[int], parametrization: str, lr: float, steps: int = 4,
                batch: int = 8, seq_len: int = 32, seed: int = 0) -> dict:
    """-> {"widths": [...], "steps": [...], "act": {name: (len(steps), len(widths)) mean |x|}}.

    Each width is ``base`` with d_model = width and n_heads = width / head_dim (head_dim fixed), muP's
    base width ``base.d_model``. Every width trains on the same random token batch (one batch, over
    and over, as microsoft/mup's check does) with AdamW (no decay) at ``lr``; activations are read at
    steps 1..``steps`` from forward hooks before each update."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, base.vocab_size, (batch, seq_len + 1), generator=gen)
    acts = {}
    for j, width in enumerate(widths):
        cfg = replace(base, d_model=width, n_heads=width // base.head_dim, n_kv_heads=0, d_ff=0,
                      parametrization=parametrization, mup_base_width=base.d_model,
                      mup_base_head_dim=base.head_dim).validate()
        for name, per_step in _train_and_read(cfg, x, lr, steps, seed).items():
            acts.setdefault(name, np.zeros((steps, len(widths))))[:, j] = per_step
    return {"widths": list(widths), "steps": list(range(1, steps + 1)), "act": acts}


def _train_and_read(cfg: ModelConfig, x: torch.Tensor, lr: float, steps: int, seed: int) -> dict[str, list]:
    torch.manual_seed(seed)
    model = Transformer(cfg)
    opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.0))
    seen: dict[str, list] = {}

    def hook(name):
        def fn(_module, _inp, out):
            out = out[0] if isinstance(out, tuple) else out
            seen.setdefault(name, []).append(out.detach().abs().mean().item())
        return fn

    handles = [model.tok_emb.register_forward_hook(hook("embedding"))]
    last = model.layers[-1]
    handles += [last.attn.register_forward_hook(hook("attn_out")), last.mlp.register_forward_hook(hook("mlp_out")),
                last.register_forward_hook(hook("block_out")), model.lm_head.register_forward_hook(hook("logits"))]
    for _ in range(steps):
        out = model(x[:, :-1], targets=x[:, 1:])  # (B, T, V) logits through lm_head, so its hook sees them
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for h in handles:
        h.remove()
    return seen  # muP's 1/m multiplies lm_head's input: its hook sees the model's logits


def width_slope(widths: list[int], values: np.ndarray) -> float:
    """The least-squares slope of log(values) against log(widths): ~0 flat, ~1 growing like width."""
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])
