"""Rung-quality checks: which rungs of a finished ladder not to trust, and why.

A scaling law is only as good as its rungs (Porian et al. 2024 traced most of the Kaplan-Chinchilla
gap to untuned learning rates and schedules). Three checks, each a stated rule:

1. **off the trend**: the rung's final loss against a smooth trend of the other rungs. The trend is a
   quadratic surface in (ln N, ln D) fitted to ln loss by least squares (6 coefficients: local and
   fast, where the Chinchilla form would take seconds per fit); each rung's leave-one-out residual
   e_i / (1 - h_ii) comes from the hat matrix in one solve. Its noise scale is the seed noise when
   the ladder repeats rungs (`ladder plan --seeds k`: the pooled standard deviation of ln loss among
   replicas), else a robust one (1.4826 x the median absolute leave-one-out residual), never below
   ``FLOOR`` (0.5% of the loss). Flagged beyond ``Z_MAX`` = 3.5 scales.
2. **the curve**: a training-loss spike (a logged train loss above ``SPIKE`` = 1.25x its running minimum
   after the first 10% of steps), a late divergence (final validation loss above its minimum over the
   run by more than 2%), or a non-finite loss.
3. **the learning rate**: a rung trained at an lr more than 3x away from the rule its ladder was planned
   with (`ladder/heuristics.py`): a hand-edited or mistuned rung.

`fit --exclude-flagged` drops flagged rungs (and says which); a rung is never dropped silently.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

Z_MAX = 3.5
FLOOR = 0.005
SPIKE = 1.25
LR_RATIO = 3.0


def trend_residuals(N, D, loss) -> tuple[np.ndarray, np.ndarray]:
    """-> (leave-one-out residuals of ln loss, their leverage h_ii) under the quadratic trend surface;
    fewer than 8 rungs: a plane in (ln N, ln D) (3 coefficients)."""
    n, d, y = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(loss, float))
    cols = [np.ones_like(n), n, d] + ([n * n, d * d, n * d] if len(y) >= 8 else [])
    X = np.column_stack(cols)
    H = X @ np.linalg.pinv(X)  # (R, R) hat matrix
    h = np.clip(np.diag(H), 0.0, 1.0 - 1e-9)
    return (y - H @ y) / (1.0 - h), h


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
    if base.sum() >= 5:
        resid[base.to_numpy()] = trend_residuals(df.loc[base, "N"], df.loc[base, "D"], df.loc[base, "loss"])[0]
    noise = seed_noise(df)
    source = "seed replicas"
    if noise is None:
        noise, source = 1.4826 * float(np.nanmedian(np.abs(resid))) if base.sum() >= 5 else math.nan, "robust"
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
