"""Forecast intervals that cover what they claim.

A bootstrap over runs measures how much the fitted parameters move when the *fitted* runs are
resampled. It does not see the larger error of extrapolating a form beyond its data: on the
back-test suite (laws/backtest.py) the 90% bootstrap intervals covered only 37-58% of held-out
losses at 4x-100x extrapolation. So the interval is widened in log space by an extrapolation term
that grows with the distance, in decades of compute, past the largest fitted run:

    ln(hi / pred) = sqrt( b_hi^2 + (z * sigma_dec * log10(1 + r))^2 ),   r = C / C_max_fitted      (1)

with b_hi = ln(hi_boot / pred) the bootstrap half-width (likewise below), z the normal quantile of
the level, and sigma_dec the log-error per decade of extrapolation. sigma_dec is one number learned
on the back-test's tuned-on datasets (`fit_sigma`, so that 90% intervals cover 90% of their held-out
points, each dataset weighted equally) and checked on the untouched ones; log10(1 + r) keeps the term
small inside the fitted range (r << 1) and ~log10 r far beyond it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from scalelab.errors import UserError


def z_of(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise UserError(f"level must be in (0, 1), got {level}", arg="level")
    return float(norm.ppf(0.5 + level / 2))


def widen(pred, lo, hi, ratio, sigma_dec: float, level: float = 0.9):
    """Eq. (1): the bootstrap interval [lo, hi] around ``pred`` widened for extrapolation ratio ``ratio``."""
    pred, ratio = np.asarray(pred, float), np.asarray(ratio, float)
    lo = pred if lo is None else np.minimum(np.asarray(lo, float), pred)
    hi = pred if hi is None else np.maximum(np.asarray(hi, float), pred)
    t = z_of(level) * sigma_dec * np.log10(1.0 + ratio)
    b_lo, b_hi = np.log(pred / lo), np.log(hi / pred)
    return pred * np.exp(-np.sqrt(b_lo**2 + t**2)), pred * np.exp(np.sqrt(b_hi**2 + t**2))


def inside(sigma_dec: float, pts: dict, level: float = 0.9) -> np.ndarray:
    """Whether each held-out point lies in eq. (1)'s interval. ``pts`` holds arrays pred, lo, hi (bootstrap),
    ratio, actual, and optionally sd: the truth's own standard error in log space, added in quadrature (a
    truth that is itself measured, such as an IsoFLOP curve's fitted optimum)."""
    lo, hi = widen(pts["pred"], pts["lo"], pts["hi"], pts["ratio"], sigma_dec, level)
    if "sd" in pts:
        pred, t = np.asarray(pts["pred"], float), z_of(level) * np.asarray(pts["sd"], float)
        lo, hi = pred * np.exp(-np.sqrt(np.log(pred / lo) ** 2 + t**2)), pred * np.exp(np.sqrt(np.log(hi / pred) ** 2
                                                                                                 + t**2))
    return (lo <= pts["actual"]) & (pts["actual"] <= hi)


def coverage(sigma_dec: float, pts: dict, level: float = 0.9) -> float:
    """Weighted fraction of held-out points inside eq. (1)'s interval (`inside`); ``pts`` adds a weight."""
    return float((pts["weight"] * inside(sigma_dec, pts, level)).sum() / pts["weight"].sum())


def fit_sigma(pts: dict, level: float = 0.9, hi: float = 1.0) -> float:
    """The smallest sigma_dec whose eq. (1) intervals cover ``level`` of the (weighted) points;
    0 if the bootstrap alone already covers it."""
    if coverage(0.0, pts, level) >= level:
        return 0.0
    if coverage(hi, pts, level) < level:
        raise UserError(f"no sigma_dec <= {hi} reaches {level:.0%} coverage on these points")
    return float(brentq(lambda s: coverage(s, pts, level) - level, 0.0, hi, xtol=1e-6))


def points_from_rows(rows: list[dict]) -> dict:
    """Back-test rows (laws/backtest.py `score`) -> the arrays `coverage` takes. Each dataset weighs 1
    in total, however many runs it holds out: each public ladder stands for one user's ladder, and the
    Chinchilla points (123 of 232) must not outvote the rest."""
    ds = np.array([r["dataset"] for r in rows])
    names, counts = np.unique(ds, return_counts=True)
    per = dict(zip(names, counts))
    get = lambda k: np.array([r[k] for r in rows], float)  # noqa: E731
    return {"pred": get("predicted"), "lo": get("boot_lo"), "hi": get("boot_hi"), "ratio": get("ratio"),
            "actual": get("actual"), "weight": np.array([1.0 / per[d] for d in ds])}


def calibrate(rows: list[dict], level: float = 0.9) -> dict:
    """Learn sigma_dec on the tuned-on rows of one method's back-test; report its coverage there,
    leave-one-dataset-out (sigma learned without the dataset it is checked on), and on the untouched rows."""
    tuned = [r for r in rows if not r["untouched"]]
    untouched = [r for r in rows if r["untouched"]]
    sigma = fit_sigma(points_from_rows(tuned), level)
    out = {"level": level, "sigma_per_decade": sigma,
           "coverage_tuned": coverage(sigma, points_from_rows(tuned), level),
           "coverage_all_points": coverage(sigma, dict(points_from_rows(rows), weight=np.ones(len(rows))), level),
           "leave_one_dataset_out": {},
           "coverage_untouched": coverage(sigma, points_from_rows(untouched), level) if untouched else None,
           "coverage_untouched_bootstrap_only": coverage(0.0, points_from_rows(untouched), level) if untouched
           else None}
    for ds in sorted({r["dataset"] for r in tuned}):
        rest = [r for r in tuned if r["dataset"] != ds]
        held = [r for r in tuned if r["dataset"] == ds]
        s = fit_sigma(points_from_rows(rest), level)
        out["leave_one_dataset_out"][ds] = {"sigma_per_decade": s, "coverage": coverage(s, points_from_rows(held),
                                                                                         level)}
    return out
