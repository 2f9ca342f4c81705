"""Rung-quality checks: which rungs of a finished ladder not to trust, and why.

A scaling law is only as good as its rungs (Porian et al. 2024 traced most of the Kaplan-Chinchilla
gap to untuned learning rates and schedules). Three checks, each a stated rule:

1. **off the trend**: the rung's final loss against the Chinchilla law L = E + A/N^alpha + B/D^beta
   fitted to every rung with the Huber loss of Hoffmann et al. (nearly L1 in ln loss, so one bad rung
   barely moves it; variable projection: ~0.1 s), as the residual of ln loss. Its scale is the seed
   noise when the ladder repeats rungs (`ladder plan --seeds k`: the pooled standard deviation of
   ln loss among replicas), else the residuals' own robust scale (1.4826 x their median absolute
   value), never below ``FLOOR`` (0.5%). Flagged beyond ``Z_MAX`` = 3.5 scales: Iglewicz and Hoaglin's
   cut-off for the modified z-score. (A leave-one-out variant was tried first: each fit then keeps
   the bad rung for the others, whose inflated residuals hid it; docs/LOG.md 2026-11-30.)
2. **the curve**: a training-loss spike (a logged train loss above ``SPIKE`` = 1.25x its running minimum
   after the first 10% of steps), a late divergence (final validation loss above its minimum over the
   run by more than 2%), or a non-finite loss.
3. **the learning rate**: a rung trained at an lr more than 3x away from the rule its ladder was planned
   with (`ladder/heuristics.py`): a hand-edited or mistuned rung.

`fit --exclude-flagged` drops flagged rungs (and says which); a rung is never dropped silently.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from scalelab.laws.fitting import fit_approach3
from scalelab.laws.table import load_table

Z_MAX = 3.5
FLOOR = 0.005
SPIKE = 1.25
LR_RATIO = 3.0
MIN_RUNGS = 7  # the law has 5 parameters: fewer rungs leave no residual to judge by


def trend_residuals(N, D, loss) -> np.ndarray:
    """Residuals of ln loss under a robust Chinchilla fit of all the points (see the module docstring)."""
    n, d, y = (np.asarray(v, float) for v in (N, D, loss))
    with warnings.catch_warnings():  # an exponent at its bound is a fact about the ladder, not an error here
        warnings.simplefilter("ignore")
        law = fit_approach3(load_table(pd.DataFrame({"N": n, "D": d, "loss": y})), optimizer="varpro")
    return np.log(y) - np.log(np.asarray(law.predict(n, d), float))


def seed_noise(finals: pd.DataFrame) -> float | None:
    """Pooled standard deviation of ln loss among replicas (rows sharing ``replica_of``), or None."""
    if "replica_of" not in finals or not finals["replica_of"].astype(bool).any():
        return None
    key = finals["replica_of"].where(finals["replica_of"].astype(bool), finals["run"])
    groups = [np.log(g["loss"].to_numpy()) for _, g in finals.groupby(key) if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof) if dof else None


def curve_flags(curve: list[tuple[int, float, float | None]], total_steps: int) -> list[str]:
    """(step, train loss, val loss or None) records of one run -> its curve's flags."""
    flags, best = [], math.inf
    for step, train, _ in curve:
        if not math.isfinite(train):
            return ["non-finite loss"]
        if step > 0.1 * total_steps and train > SPIKE * best:
            flags.append(f"loss spike at step {step} ({train:.3f} vs {best:.3f} before)")
            break
        best = min(best, train)
    vals = [v for _, _, v in curve if v is not None]
    if vals and vals[-1] > 1.02 * min(vals):
        flags.append(f"late divergence (final val {vals[-1]:.4f} vs {min(vals):.4f} earlier)")
    return flags


def check_rungs(finals: pd.DataFrame, curves: dict | None = None, rule_lr: dict | None = None) -> pd.DataFrame:
    """``finals``: one row per finished rung (run, N, D, loss, lr; optional replica_of, steps). ->
    the same rows with residual, noise, z and ``quality`` (the reasons, '; '-joined; '' = none)."""
    df = finals.reset_index(drop=True).copy()
    base = ~df.get("replica_of", pd.Series([""] * len(df))).astype(bool)
    resid = np.full(len(df), np.nan)
    if base.sum() >= MIN_RUNGS:
        resid[base.to_numpy()] = trend_residuals(df.loc[base, "N"], df.loc[base, "D"], df.loc[base, "loss"])
    noise = seed_noise(df)
    source = "seed replicas"
    if noise is None:
        noise, source = 1.4826 * float(np.nanmedian(np.abs(resid))) if base.sum() >= MIN_RUNGS else math.nan, \
            "robust"
    noise = max(noise, FLOOR) if math.isfinite(noise) else noise
    df["residual"], df["noise"], df["noise_source"] = resid, noise, source
    df["z"] = resid / noise
    reasons = []
    for _, r in df.iterrows():
        why = []
        if math.isfinite(r["z"]) and abs(r["z"]) > Z_MAX:
            why.append(f"off the trend: loss {math.exp(r['residual']) - 1:+.1%} vs the other rungs ({r['z']:+.1f} x "
                       f"the {source} noise)")
        if curves and r["run"] in curves:
            why += curve_flags(curves[r["run"]], int(r.get("steps", 0) or max(s for s, _, _ in curves[r["run"]])))
        want = (rule_lr or {}).get(r["run"])
        if want and not (1 / LR_RATIO <= r["lr"] / want <= LR_RATIO):
            why.append(f"lr {r['lr']:.3g} is {r['lr'] / want:.3g}x the ladder's rule ({want:.3g})")
        reasons.append("; ".join(why))
    df["quality"] = reasons
    return df
