"""Learning-rate schedules as pure functions of the step (so resume needs no scheduler state).

* cosine: linear warmup, then cosine decay to min_lr_ratio * peak (Loshchilov & Hutter 2016).
* wsd: warmup, a long constant stage, then a linear cooldown over the last decay_frac of the run
  to min_lr_ratio * peak (warmup-stable-decay; Hu et al. 2024, Hägele et al. 2024).
* constant: warmup then flat.
"""

from __future__ import annotations

import math

from scalelab.config import ScheduleConfig


def warmup_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    if cfg.warmup_steps >= 0:
        return min(cfg.warmup_steps, total_steps)
    return int(round(cfg.warmup_frac * total_steps))


def lr_at(step: int, total_steps: int, peak_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for ``step`` (0-based) of a ``total_steps`` run.

    wsd: the cooldown starts at ``cfg.decay_start_step`` when set (>= 0), else at
    (1 - decay_frac) * total_steps; WSD branches set it to cool down from a shared stable stage.
    """
    w = warmup_steps(cfg, total_steps)
    if step < w:
        return peak_lr * (step + 1) / w
    floor = peak_lr * cfg.min_lr_ratio
    if cfg.kind == "constant":
        return peak_lr
    if cfg.kind == "cosine":
        frac = (step - w) / max(1, total_steps - w - 1)
        return floor + (peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    # wsd
    start = cfg.decay_start_step if cfg.decay_start_step >= 0 else \
        total_steps - int(round(cfg.decay_frac * total_steps))
    start = max(start, w)
    if step < start:
        return peak_lr
    frac = (step - start + 1) / max(1, total_steps - start)
    return peak_lr + (floor - peak_lr) * min(1.0, frac)
