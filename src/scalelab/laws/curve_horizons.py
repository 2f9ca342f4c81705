"""Curve laws against longer horizons: the (Mis)Fitting open_lm cosine runs (#37, item 3).

Li, Kudugunta and Zettlemoyer (2025, arXiv 2502.18969) trained each of 11 sizes (12M-1B) at 1-4 peak learning
rates for several step counts, every run a cosine schedule of its own length, and released the C4 loss at every
128th step (the public dataset ``misfitting-curves``). For each size and peak rate with at least two shorter
horizons, a curve law is fitted on every checkpoint of the shorter runs and scored on the longest run (1.3-4x
more steps), which it never saw: the question a practitioner asks of a short pilot before a long run.

The per-step rates are rebuilt from the authors' sweep configuration (hadasah/scaling_laws,
open_lm/constants/slurm_constants.py and open_lm/ds/scripts/train.sh: 50 warmup steps, cosine to 0.1 of the
peak, 512 x 2,048 tokens per step) and open_lm's scheduler (warmup peak (s + 1) / 50, then
min + (peak - min)(1 + cos(pi (s - 50) / (T - 50))) / 2). The released files carry neither, so this is the
configuration the repository ships, not a logged one; the tokens per step it implies (1,048,576) match every row.
"""

from __future__ import annotations

import numpy as np

from scalelab import datasets
from scalelab.laws.curves import CALIBRATION, Curve, fit_curves, score_curve, warmup_end
from scalelab.laws.intervals import z_of

OPEN_LM_WARMUP, OPEN_LM_END_RATIO = 50, 0.1
OPEN_LM_ROW = "open_lm, longest"  # the back-test's row name for these runs
MIN_HORIZON_RATIO = 1.25  # the scored run is at least this many times longer than the longest fitted one


def open_lm_cosine(peak_lr: float, total_steps: int, warmup: int = OPEN_LM_WARMUP,
                   end_ratio: float = OPEN_LM_END_RATIO) -> np.ndarray:
    """open_lm's `cosine_lr` for steps 0..total_steps: linear warmup peak (s + 1) / warmup, then cosine from the
    peak to ``end_ratio`` of it at ``total_steps``."""
    s = np.arange(total_steps + 1, dtype=float)
    low = end_ratio * peak_lr
    cos = low + 0.5 * (1 + np.cos(np.pi * np.clip((s - warmup) / (total_steps - warmup), 0, 1))) * (peak_lr - low)
    return np.where(s < warmup, peak_lr * (s + 1) / warmup, cos)


def misfitting_groups() -> dict[tuple[str, float], list[Curve]]:
    """(size, peak rate) -> its runs as `Curve`s (one per horizon and sweep), shortest first."""
    d = datasets.load("misfitting-curves")
    out: dict[tuple[str, float], list[Curve]] = {}
    for (model, lr, steps, sweep), g in d.groupby(["model", "peak_lr", "total_steps", "sweep"]):
        g = g.sort_values("step")
        sched = open_lm_cosine(float(lr), int(steps))
        keep = (g["step"] >= warmup_end(sched)) & (g["step"] <= steps)
        if keep.sum() == 0:
            continue
        c = Curve(f"{int(steps)} steps ({sweep})", sched, g["step"][keep].to_numpy(), g["loss"][keep].to_numpy(),
                  warmup_end(sched))
        out.setdefault((model.removeprefix("misfitting_"), float(lr)), []).append(c)
    return {k: sorted(v, key=lambda c: len(c.lr)) for k, v in out.items()}


def horizon_split(curves: list[Curve]) -> tuple[list[Curve], list[Curve]] | None:
    """(fitted, scored): the longest horizon's runs scored, the rest fitted; None unless the fitted runs have
    two horizons or more and the scored one is at least `MIN_HORIZON_RATIO` times longer."""
    longest = max(len(c.lr) for c in curves)
    scored = [c for c in curves if len(c.lr) == longest]
    fitted = [c for c in curves if len(c.lr) < longest]
    if len({len(c.lr) for c in fitted}) < 2 or longest - 1 < MIN_HORIZON_RATIO * (max(len(c.lr) for c in fitted) - 1):
        return None
    return fitted, scored


def score_horizons(task) -> list[dict]:
    """(form, (size, peak rate), its curves, level): fit the shorter horizons, score every run with the
    calibrated interval (sigma from the Multi-Power Law curves, so this data checks it); a task of
    `laws.backtest.map_tasks`."""
    form, (size, lr), curves, level = task
    split = horizon_split(curves)
    if split is None:
        return []
    fitted, scored = split
    law = fit_curves(fitted, form)
    sigma = float(np.hypot(law.info["rmse_relative"], CALIBRATION[form]["sigma_schedule"]))
    ratio = (len(scored[0].lr) - 1) / (max(len(c.lr) for c in fitted) - 1)
    rows = []
    for split_name, group in (("fitted", fitted), ("unseen", scored)):
        for c in group:
            r = score_curve(form, OPEN_LM_ROW, f"{size} lr {lr:g}: {c.name}", law, c, split_name,
                       sigma, z_of(level))
            rows.append({**r, "horizon_ratio": ratio, "size": size, "peak_lr": lr})
    return rows
