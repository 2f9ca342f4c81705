"""The common path in a notebook, torch-free: a ladder's table -> a fit -> forecasts (-> figures).

    import scalelab.api as sl
    df = sl.ladder_table("runs/demo")                  # one row per (run, evaluation); `final` = trained models
    law = sl.fit(df)                                   # the back-tested default method: a FittedLaw
    sl.forecast(law, N=[1e8, 1e9], D=[2e9, 2e10])      # DataFrame: N, D, C, loss, lo, hi (90%)
    sl.allocate(law, C=[1e20, 1e22])                   # DataFrame: C, N_opt, D_opt, tokens_per_param, loss
    tasks = sl.fit_tasks(sl.ladder_table("runs/tasks", tasks=True), metric="exact_match", via="answer_bpb")
    sl.forecast_tasks(tasks, N=3e5, D=1e7)             # DataFrame: one row per task

    from scalelab.report.figures import ladder_figures # the report's plotly figures ([report] extra)
    ladder_figures("runs/demo")["isoflop"]             # a go.Figure: displays inline

Nothing here prints, writes files or changes matplotlib's backend.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.ladder.results import open_store, results_table, task_table
from scalelab.laws.allocation import allocate_unique
from scalelab.laws.law import FittedLaw
from scalelab.laws.methods import DEFAULT_METHOD, get_method
from scalelab.laws.table import load_table
from scalelab.laws.task_backtest import DEFAULT_TASK_METHOD, TASK_METHODS
from scalelab.laws.tasks import TaskForecast
from scalelab.laws.tasks import fit_tasks as _fit_tasks

__all__ = ["ladder_table", "fit", "forecast", "allocate", "fit_tasks", "forecast_tasks", "DEFAULT_METHOD"]


def ladder_table(ladder_dir: str | Path, tasks: bool = False) -> pd.DataFrame:
    """What `scalelab ladder export [--tasks]` writes, as a DataFrame."""
    store = open_store(ladder_dir)
    try:
        return task_table(store) if tasks else results_table(store)
    finally:
        store.close()


def fit(table: pd.DataFrame | str | Path, method: str = DEFAULT_METHOD, bootstrap: int | None = None,
        seed: int = 0) -> FittedLaw:
    """A law fitted to a run table (a DataFrame with N, D or C and loss, or a CSV/Parquet path) with a
    back-tested method (`scalelab.laws.methods.METHODS`); only rows marked `final`, when marked."""
    m = replace(get_method(method), seed=seed, **({} if bootstrap is None else {"bootstrap": bootstrap}))
    with warnings.catch_warnings():  # overflow in a few bootstrap draws' exponentials: harmless, not news
        warnings.simplefilter("ignore", RuntimeWarning)
        return m.fit(load_table(table).finals())


def forecast(law: FittedLaw, N, D, level: float = 0.9) -> pd.DataFrame:
    """The law's loss at each (N, D) with its stated interval (calibrated when the law carries one)."""
    N, D = np.broadcast_arrays(np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float)))
    loss, lo, hi = law.predict_interval(N, D, level)
    return pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": loss, "lo": lo, "hi": hi, "level": level})


def allocate(law: FittedLaw, C, level: float = 0.9, unique_tokens: float | None = None) -> pd.DataFrame:
    """The compute-optimal N*, D* (and the loss there) for each budget C = 6 N D, with intervals; with
    ``unique_tokens``, the data-constrained optimum (Muennighoff et al. 2023: epochs, the unconstrained
    answer beside it, the epoch where a repeat is worth half a fresh token), one row per budget."""
    if unique_tokens is not None:
        rows = []
        for c in np.atleast_1d(np.asarray(C, float)):
            a = allocate_unique(law, float(c), unique_tokens)
            free = a.pop("unconstrained")
            rows.append({**a, **{f"unconstrained_{k}": v for k, v in free.items()}})
        return pd.DataFrame(rows)
    out = law.allocate_with_interval(np.atleast_1d(np.asarray(C, float)), level)
    return pd.DataFrame({k: np.atleast_1d(v) for k, v in out.items() if v is not None and np.ndim(v) <= 1})


def fit_tasks(table: pd.DataFrame, metric: str, via: str | None = None, method: str | None = None,
              **kw) -> TaskForecast:
    """One task forecast per task of a table, as `scalelab fit TABLE --metric M --via X` fits it (step 1
    with the task back-test's default method unless ``method`` says otherwise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _fit_tasks(table, metric, via, method=method or TASK_METHODS[DEFAULT_TASK_METHOD].law_method, **kw)


def forecast_tasks(fc: TaskForecast, N: float, D: float, level: float = 0.9) -> pd.DataFrame:
    """Each task's metric (and task loss) at one (N, D), with intervals: one row per task."""
    rows = []
    for task, res in fc.predict(N, D, level).items():
        row = {"task": task}
        for name, e in res.items():
            row[name] = float(e["value"][0])
            if "lo" in e:
                row[f"{name}_lo"], row[f"{name}_hi"] = float(e["lo"][0]), float(e["hi"][0])
        rows.append(row)
    return pd.DataFrame(rows)
