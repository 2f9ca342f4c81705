"""Hyperparameter scaling laws: the optimal learning rate (and batch) as power laws in N and D.

    lr*(N, D) = c * N^a * D^b        (1) fitted by least squares on log lr*
    B*(D)     = c * D^b               (2)

Published fits this module compares against (N non-embedding parameters, D training tokens, C FLOPs):
- StepLaw (Li et al. 2025, "Predictable Scale: Part I", eq. 1-2): lr* = 1.79 N^-0.713 D^0.307,
  B* = 0.58 D^0.571 tokens; 3,700 models, 215M-1B non-embedding parameters in the released grid.
- DeepSeek LLM (Bi et al. 2024, eq. 1): lr* = 0.3118 C^-0.125, B* = 0.2920 C^0.3271 tokens.

An optimum on a grid of learning rates is the vertex of a least-squares parabola in log lr through
the grid minimum and up to two points each side (a loss that is convex near its optimum: StepLaw's
section 3 observation); at the grid's edge it is the edge, flagged, since the true optimum lies beyond.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from scalelab import datasets

STEPLAW_LR = {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307}
STEPLAW_BATCH = {"coef": 0.58, "d_exp": 0.571}
DEEPSEEK_LR = {"coef": 0.3118, "c_exp": -0.1250}
DEEPSEEK_BATCH = {"coef": 0.2920, "c_exp": 0.3271}


def steplaw_lr(n_non_embedding: float, tokens: float) -> float:
    return STEPLAW_LR["coef"] * n_non_embedding ** STEPLAW_LR["n_exp"] * tokens ** STEPLAW_LR["d_exp"]


def grid_optimum(values, losses, window: int = 2) -> dict:
    """-> {"value", "loss", "at_edge", "index"}: the optimum of ``losses`` over a grid of positive
    ``values`` (learning rates), interpolated in log value: the vertex of a least-squares parabola
    through the grid minimum and up to ``window`` points each side (single short runs are noisy: three
    points put the vertex wherever the noise does). Non-finite losses (diverged runs) count as worse
    than any finite one."""
    x = np.log(np.asarray(values, dtype=float))
    y = np.asarray(losses, dtype=float)
    order = np.argsort(x)
    x, y = x[order], np.where(np.isfinite(y[order]), y[order], np.inf)
    i = int(np.argmin(y))
    if not np.isfinite(y[i]):
        return {"value": math.nan, "loss": math.nan, "at_edge": True, "index": i}
    if i == 0 or i == len(x) - 1 or not np.isfinite(y[i - 1:i + 2]).all():
        return {"value": float(np.exp(x[i])), "loss": float(y[i]), "at_edge": i in (0, len(x) - 1), "index": i}
    lo, hi = i - 1, i + 2  # the minimum and a neighbour each side, widened to `window` each side where finite
    while lo > max(0, i - window) and np.isfinite(y[lo - 1]):
        lo -= 1
    while hi < min(len(x), i + window + 1) and np.isfinite(y[hi]):
        hi += 1
    a, b, c = np.polyfit(x[lo:hi], y[lo:hi], 2)
    if a <= 0:  # no valley in the window (noise): the grid's own minimum
        return {"value": float(np.exp(x[i])), "loss": float(y[i]), "at_edge": False, "index": i}
    v = float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))
    return {"value": float(np.exp(v)), "loss": float(a * v * v + b * v + c), "at_edge": False, "index": i}


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * prod_k x_k ^ exps[k], fitted on log y; ``rmse_log``: residual RMS of ln y."""

    coef: float
    exps: dict
    rmse_log: float
    n_points: int

    def predict(self, **xs) -> float:
        return self.coef * math.prod(float(xs[k]) ** e for k, e in self.exps.items())

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, name: str = "y") -> str:
        terms = " ".join(f"{k}^{e:+.3f}" for k, e in self.exps.items())
        return f"{name} = {self.coef:.3g} {terms} (rmse {self.rmse_log:.2f} in ln, {self.n_points} points)"


def fit_power_law(y, **xs) -> PowerLaw:
    """Least squares of ln y on ln x_k (and a constant). Needs more points than unknowns."""
    y = np.asarray(y, dtype=float)
    cols = {k: np.log(np.asarray(v, dtype=float)) for k, v in xs.items()}
    A = np.column_stack([np.ones_like(y)] + list(cols.values()))
    if len(y) <= A.shape[1]:
        raise ValueError(f"{len(y)} points cannot fit {A.shape[1]} unknowns")
    beta, *_ = np.linalg.lstsq(A, np.log(y), rcond=None)
    rmse = float(np.sqrt(np.mean((A @ beta - np.log(y)) ** 2)))
    return PowerLaw(coef=float(np.exp(beta[0])), exps=dict(zip(cols, map(float, beta[1:]))), rmse_log=rmse,
                    n_points=len(y))


def load_steplaw() -> pd.DataFrame:
    """StepFun's public lr x batch grid, fetched on first use (`scalelab data list`: steplaw-grid)."""
    return datasets.load("steplaw-grid")


def steplaw_optima(table: pd.DataFrame, loss: str = "smooth_loss") -> pd.DataFrame:
    """Per (N_non_embedding, D) cell of the StepLaw grid: the (lr, batch) with the lowest ``loss``
    (the grid's own argmin, as the paper takes it), with D_suspect rows left out."""
    t = table[~table["D_suspect"].astype(bool)] if "D_suspect" in table else table
    best = t.loc[t.groupby(["N_non_embedding", "D"])[loss].idxmin()]
    return best[["N_non_embedding", "D", "lr", "tokens_per_batch", loss]].reset_index(drop=True)


def refit_steplaw(table: pd.DataFrame) -> dict:
    """Laws (1) and (2) refitted on the public StepLaw grid, beside the paper's published constants."""
    best = steplaw_optima(table)
    lr = fit_power_law(best["lr"], N=best["N_non_embedding"], D=best["D"])
    batch = fit_power_law(best["tokens_per_batch"], D=best["D"])
    return {"cells": len(best), "lr": lr.to_dict(), "batch": batch.to_dict(), "published_lr": STEPLAW_LR,
            "published_batch": STEPLAW_BATCH}
