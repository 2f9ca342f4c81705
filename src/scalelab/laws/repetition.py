"""Fitting how fast repeated data loses value (Muennighoff et al. 2023, Sec. 3.1), on runs of one's own.

Muennighoff et al. model D tokens drawn from U unique ones as effective data
    D' = U + U R*_D (1 - exp(-R_D / R*_D)),   R_D = D / U - 1 (the repetitions),
so that a repeated token's value decays by 1/e every R*_D repetitions (they fit 15.4 on C4).

Measured here without assuming the shape of the loss curve: at each model size, the fresh runs (all
tokens unique) give loss against D; a repeated run's effective data D' is the fresh-data amount that
reaches its loss (inverse interpolation in log D along the fresh curve). R*_D is then a one-parameter
least-squares fit of log(D'/U) against the formula, over every repeated run of every size, with a
bootstrap interval (repeated runs resampled). A repeated token is worth less than half a fresh one
after 1 + R*_D ln 2 epochs (dD'/dD = exp(-R_D / R*_D)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from scalelab.errors import UserError
from scalelab.laws.forms import half_value_epochs


def effective_data(D, U, r_star):
    """D' of D tokens drawn from U unique tokens (U = inf or nan: all unique)."""
    D, U = np.asarray(D, float), np.asarray(U, float)
    fresh = ~np.isfinite(U) | (U >= D)
    Uc = np.where(fresh, D, U)
    R = D / Uc - 1.0
    return np.where(fresh, D, Uc + Uc * r_star * (1.0 - np.exp(-R / r_star)))


def measured_effective_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Each repeated run with its measured D': the fresh-data tokens that reach its loss at its size (NaN
    when its loss lies outside the fresh runs' range)."""
    out = []
    for _, g in runs.groupby("size", sort=False):
        fresh = g[g["U"].isna()].sort_values("D")
        if len(fresh) < 2:
            raise UserError("repetition fit: each size needs two or more fresh runs (U empty)")
        loss = np.minimum.accumulate(fresh["loss"].to_numpy())  # more fresh data never hurts: monotone
        logd = np.log(fresh["D"].to_numpy())
        for _, r in g[g["U"].notna()].iterrows():
            inside = loss[-1] <= r["loss"] <= loss[0]
            d_eff = float(np.exp(np.interp(r["loss"], loss[::-1], logd[::-1]))) if inside else np.nan
            out.append({**r.to_dict(), "epochs": r["D"] / r["U"], "D_eff": d_eff})
    return pd.DataFrame(out)


def _fit_r_star(R: np.ndarray, ratio: np.ndarray) -> float:
    """argmin over R* of sum (log(1 + R*(1 - exp(-R/R*))) - log ratio)^2, ratio = D'/U."""
    def sse(ln_r):
        r = np.exp(ln_r)
        return float(np.sum((np.log1p(r * (1 - np.exp(-R / r))) - np.log(ratio)) ** 2))
    return float(np.exp(minimize_scalar(sse, bounds=(np.log(0.05), np.log(1e4)), method="bounded").x))


def fit_repetition(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.9) -> dict:
    """``runs``: columns size, D (tokens trained), U (unique tokens; NaN for fresh runs), loss. Returns
    R*_D with a bootstrap interval, the half-value epoch, and the repeated runs with their measured D'."""
    need = {"size", "D", "U", "loss"} - set(runs.columns)
    if need:
        raise UserError(f"repetition fit: the runs lack the columns {sorted(need)}")
    rep = measured_effective_data(runs)
    use = rep[rep["D_eff"].notna() & (rep["epochs"] > 1)]
    if len(use) < 2:
        raise UserError("repetition fit: needs two or more repeated runs (over one epoch) whose loss the "
                        "fresh runs bracket")
    R, ratio = use["epochs"].to_numpy() - 1.0, use["D_eff"].to_numpy() / use["U"].to_numpy()
    r_star = _fit_r_star(R, ratio)
    rng = np.random.default_rng(seed)
    boot = [_fit_r_star(R[i], ratio[i]) for i in (rng.integers(0, len(R), len(R)) for _ in range(n_boot))]
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"R_D_star": r_star, "R_D_star_interval": [float(lo), float(hi)], "level": level,
            "half_value_epochs": half_value_epochs(r_star), "runs_used": len(use),
            "repeated": rep.to_dict("records")}
