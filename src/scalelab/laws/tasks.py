"""Task-metric laws: forecast an accuracy (exact match, pass@k ...) of a model not yet trained.

Two steps, as the OLMo and Llama 3 model ladders do (Bhagia et al. 2024, arXiv:2412.04403; Dubey et
al. 2024, section 3.2.1):

  1. the task loss x (``via``: bits per byte or NLL of the correct answer, or any loss the table has)
     in (N, D), with the same estimators as the loss laws (`laws/methods.py`, the default method);
  2. the metric from the task loss through a sigmoid that falls from a ceiling of 1 (perfect
     accuracy as the task loss vanishes) to a fitted floor b (chance, or below it for tasks that
     models get systematically wrong):

         acc(x) = b + (1 - b) / (1 + exp(k (x - x0))),     k > 0, 0 <= b < 1.           (1)

The chained forecast draws step 1's stated interval (bootstrap, widened for extrapolation) and
step 2's bootstrap fits (runs resampled) together, and adds step 2's residual scatter, which holds
the metric's own evaluation noise (a few hundred questions give +-2 points): the interval is for the
metric a new model will *measure*, not only for its expected value.

Without ``via`` (direct): q = -ln(metric) is fitted as a loss in (N, D) with the same estimators (a
power law on log-accuracy, Krajewski et al. 2025, with the form's floor as a ceiling below 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.stats import median_abs_deviation

from scalelab.errors import UserError
from scalelab.io import atomic_write_json, read_json
from scalelab.laws.intervals import z_of
from scalelab.laws.law import FittedLaw, check_params
from scalelab.laws.methods import DEFAULT_METHOD, get_method
from scalelab.laws.table import load_table

SIGMOID_PARAMS = 3  # b, k, x0 of eq. (1)
RISE_MIN = 0.02  # metric spread across the ladder below which no rise has been seen
KIND = "task-forecast"


# ---- step 2: the sigmoid of eq. (1) -----------------------------------------------------------------
def sigmoid(theta, x) -> np.ndarray:
    """Eq. (1) with theta = (b, ln k, x0)."""
    b, lnk, x0 = theta
    return b + (1.0 - b) / (1.0 + np.exp(np.clip(np.exp(lnk) * (np.asarray(x, float) - x0), -50, 50)))


def fit_sigmoid(x, y, start=None) -> np.ndarray:
    """Least squares from a grid of starts (the slope and midpoint of a sigmoid have several basins),
    or from ``start`` alone (a bootstrap refit warm-started at the full data's optimum)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    starts = [start] if start is not None else \
        [[min(float(y.min()), 0.5), lnk, x0] for lnk in (-1.0, 0.0, 1.0, 2.0) for x0 in np.percentile(x, [10, 50, 90])]
    best = None
    for t0 in starts:
        r = least_squares(lambda t: sigmoid(t, x) - y, t0, bounds=([0.0, -8.0, -np.inf], [0.999, 8.0, np.inf]))
        if best is None or r.cost < best.cost:
            best = r
    return best.x


# ---- one task ---------------------------------------------------------------------------------------
@dataclass
class TaskLaw:
    """One task's fitted forecast: step 1 (a `FittedLaw` of the task loss) and step 2 (eq. 1), or a
    direct law of -ln(metric)."""

    metric: str
    via: str | None
    step1: FittedLaw  # the task loss (chained) or -ln(metric) (direct)
    theta: list[float] = field(default_factory=list)  # eq. (1): b, ln k, x0 (chained only)
    theta_samples: list[list[float]] = field(default_factory=list)
    resid_sd: float = 0.0  # step 2's robust residual scale, in metric units
    n_points: int = 0
    rising: bool = True  # some fitted run is above the floor; if none, nothing bounds the rise from above

    def predict(self, N, D, level: float = 0.9, draws: int = 400, seed: int = 0) -> dict:
        """{metric: {value, lo, hi, level}} and, chained, {via: {...}} at each (N, D)."""
        N, D = np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float))
        x, lo, hi = self.step1.predict_interval(N, D, level)
        if self.via is None:  # direct: the law is of q = -ln(metric); high q = low metric
            iv = None if lo is None else (np.exp(-hi), np.exp(-lo))
            return {self.metric: _entry(np.exp(-x), iv, level)}
        rng = np.random.default_rng(seed)
        z = z_of(level)
        sd1 = np.zeros_like(x) if lo is None else np.log(hi / lo) / (2 * z)  # step 1 as a log-normal
        xs = x[None, :] * np.exp(sd1[None, :] * rng.standard_normal((draws, len(x))))
        thetas = np.asarray(self.theta_samples or [self.theta], float)
        pick = thetas[rng.integers(len(thetas), size=draws)]
        ys = np.stack([sigmoid(t, xi) for t, xi in zip(pick, xs)])
        ys = np.clip(ys + self.resid_sd * rng.standard_normal(ys.shape), 0.0, 1.0)
        q = (1 - level) / 2
        y_hi = np.quantile(ys, 1 - q, axis=0) if self.rising else np.ones_like(x)
        return {self.metric: _entry(sigmoid(self.theta, x), (np.quantile(ys, q, axis=0), y_hi), level),
                self.via: _entry(x, None if lo is None else (lo, hi), level)}

    def to_dict(self) -> dict:
        return {"metric": self.metric, "via": self.via, "step1": json.loads(self.step1.to_json()),
                "theta": [float(v) for v in self.theta],
                "theta_samples": [[float(v) for v in t] for t in self.theta_samples],
                "resid_sd": self.resid_sd, "n_points": self.n_points, "rising": self.rising}

    @classmethod
    def from_dict(cls, d: dict) -> TaskLaw:
        s = d["step1"]
        check_params(s["form"], s["params"])
        law = FittedLaw(s["form"], s["params"], s.get("approach", ""), s.get("samples", []), s.get("info", {}))
        return cls(d["metric"], d["via"], law, d["theta"], d["theta_samples"], d["resid_sd"], d["n_points"],
                   d.get("rising", True))


def _entry(value, iv, level: float) -> dict:
    v = np.atleast_1d(value).astype(float)
    out = {"value": v}
    if iv is not None:
        out.update(lo=np.atleast_1d(iv[0]).astype(float), hi=np.atleast_1d(iv[1]).astype(float), level=level)
    return out


def fit_task(df: pd.DataFrame, metric: str, via: str | None, method: str = DEFAULT_METHOD,
             bootstrap: int | None = None, seed: int = 0, step1_fits: dict | None = None) -> TaskLaw:
    """Fit one task's table (columns N, D or C, ``metric``, and ``via`` if chained). ``step1_fits``:
    step-1 laws already fitted for other tasks, by their rows: the tasks of one table often share one
    task-loss column (each model's loss on a common text), and an identical fit is made once."""
    m = get_method(method)
    if bootstrap is not None:
        from dataclasses import replace

        m = replace(m, bootstrap=bootstrap)
    if via is None:
        law = m.fit(load_table(df.assign(loss=-np.log(df[metric].clip(lower=1e-6)))))
        return TaskLaw(metric, None, law, n_points=len(df))
    rows = df[["N", "D", via]].rename(columns={via: "loss"}) if "D" in df else df.assign(loss=df[via])
    fits = {} if step1_fits is None else step1_fits
    key = rows.to_csv(index=False)
    if key not in fits:
        fits[key] = m.fit(load_table(rows))
    law = fits[key]
    x, y = df[via].to_numpy(float), df[metric].to_numpy(float)
    theta = fit_sigmoid(x, y)
    rng = np.random.default_rng(seed)
    # runs resampled, as for the loss laws: on synthetic ladders whose held-out accuracy lies past every
    # fitted one, this covered 88% of 48 held-out points at 90%; redrawing residuals instead, 79% (LOG)
    samples = [fit_sigmoid(x[i], y[i], start=np.clip(theta, [0, -8, -np.inf], [0.999, 8, np.inf]))
               for i in (rng.integers(len(x), size=len(x)) for _ in range(m.bootstrap))]
    # a rise the ladder has not begun (every run at the floor, e.g. exact match 0 everywhere) cannot be
    # timed from it: the forecast keeps its floor and says nothing about how high a bigger model gets
    scatter = float(median_abs_deviation(y - sigmoid(theta, x), scale="normal"))
    rising = bool(np.max(y) - np.min(y) > max(3 * scatter, RISE_MIN))
    return TaskLaw(metric, via, law, list(theta), [list(t) for t in samples], scatter, len(df), rising)


# ---- a table of tasks ---------------------------------------------------------------------------------
@dataclass
class TaskForecast:
    """One `TaskLaw` per task of a table: what `scalelab fit TABLE --metric COL [--via COL]` writes."""

    metric: str
    via: str | None
    tasks: dict[str, TaskLaw]
    info: dict = field(default_factory=dict)

    def predict(self, N, D, level: float = 0.9) -> dict[str, dict]:
        return {name: law.predict(N, D, level) for name, law in self.tasks.items()}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"kind": KIND, "metric": self.metric, "via": self.via, "info": self.info,
                                 "tasks": {k: v.to_dict() for k, v in self.tasks.items()}})

    @classmethod
    def load(cls, path: str | Path) -> TaskForecast:
        d = read_json(path, "fit file")
        try:
            tasks = {k: TaskLaw.from_dict(v) for k, v in d["tasks"].items()}
            return cls(d["metric"], d["via"], tasks, d.get("info", {}))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is not a scalelab task-forecast file (written by `scalelab fit --metric`)"
                            ) from None


def task_rows(df: pd.DataFrame, metric: str, via: str | None) -> pd.DataFrame:
    """The rows a task fit uses, checked: the columns exist, the metric is a fraction in [0, 1], the
    task loss positive and finite; only rows marked ``final`` when the table has that column (a
    checkpoint mid-schedule is not a trained model of its size)."""
    for col, flag in ((metric, "metric"), (via, "via")):
        if col is not None and col not in df.columns:
            raise UserError(f"{flag}: the table has no column {col!r} (columns: {list(df.columns)})", arg=flag)
    if "final" in df.columns:
        df = df[df["final"].astype(bool)]
    if "task" in df.columns:  # a ladder's task table: tasks that do not measure this metric are not its data
        measured = pd.to_numeric(df[metric], errors="coerce").notna().groupby(df["task"]).transform("any")
        df = df[measured]
        if df.empty:
            raise UserError(f"metric: no task of the table measures {metric!r}", arg="metric")
    y = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(y) | (y < 0) | (y > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"metric: column {metric!r} must hold fractions in [0, 1] (an accuracy, exact match, "
                        f"pass@k); row {i + 1} has {df[metric].iloc[i]!r}", arg="metric")
    if via is not None:
        x = pd.to_numeric(df[via], errors="coerce").to_numpy(float)
        if (~np.isfinite(x) | (x <= 0)).any():
            raise UserError(f"via: column {via!r} must hold a positive task loss (bits per byte or NLL of the answer)",
                            arg="via")
    return df


def fit_tasks(table: pd.DataFrame, metric: str, via: str | None = None, method: str = DEFAULT_METHOD,
              bootstrap: int | None = None, seed: int = 0) -> TaskForecast:
    """One fit per task (the ``task`` column, or the whole table as one task)."""
    df = task_rows(table, metric, via)
    groups = dict(tuple(df.groupby("task"))) if "task" in df.columns else {metric: df}
    need = max(SIGMOID_PARAMS + 1, get_method(method).min_points())
    tasks, step1_fits = {}, {}
    for name, g in groups.items():
        if len(g) < need:
            raise UserError(f"task {name!r} has {len(g)} runs; a {'chained' if via else 'direct'} forecast with "
                            f"method {method} needs at least {need}", arg="metric")
        tasks[str(name)] = fit_task(g, metric, via, method, bootstrap, seed, step1_fits)
    return TaskForecast(metric, via, tasks, {"method": method, "n_runs": int(len(df)),
                                             "params_max": float(df["N"].max()) if "N" in df else None})
