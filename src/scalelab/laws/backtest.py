"""Back-tests: fit a method on the smaller-compute runs of a public ladder, predict the final loss of
the largest ones, and score the error and the interval. A forecast is worth its error on data it
was not fitted to.

Protocol (`splits`): a *run* is one trained model (a point of an IsoFLOP grid, or a whole training
curve); its compute is C = 6 N D at its last point. Runs are sorted by compute; a cut-off trains on
every run at or below it (for curves: their points past the first 10% of training, thinned to at most
30 per run, as Choshen et al. 2024 advise against the earliest checkpoints) and predicts the final
loss of every run above it. Cut-offs are chosen so that the extrapolation ratio (largest held-out C /
largest fitted C) lands near 4x, 16x and 64x where the data reach. No held-out point ever enters a fit
(tested).

Public ladders are fetched on first use from their pinned sources (`scalelab.datasets`; `scalelab data
list` gives each one's source, licence and citation); this project's own demo ladder ships with it. Two
are kept "untouched": no method choice may be tuned on them, and they are reported apart.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from scalelab import datasets
from scalelab.economics.flops import train_flops_6nd
from scalelab.errors import UserError
from scalelab.laws.methods import Method
from scalelab.laws.table import load_table


def _chinchilla() -> pd.DataFrame:
    d = datasets.load("chinchilla-epoch")
    d = d[d["loss"].rank(method="first", ascending=False) > 5]  # the replication drops 5 outliers
    N, C = d["Model Size"].to_numpy(float), d["Training FLOP"].to_numpy(float)
    return pd.DataFrame({"run": np.arange(len(d)).astype(str), "N": N, "D": C / (6 * N), "loss": d["loss"]})


def _misfitting() -> pd.DataFrame:
    d = datasets.load("misfitting-final")
    best = d.loc[d.groupby(["N", "D"])["loss"].idxmin()]  # each (N, D) at its best peak learning rate
    return pd.DataFrame({"run": best["model"] + "@" + best["D"].astype(str), "N": best["N"], "D": best["D"],
                         "loss": best["loss"]})


def _misfitting_curves() -> pd.DataFrame:
    """Every checkpoint (D = its tokens) of the run at the best peak learning rate of each (N, final D).
    Cosine schedules: only a run's last point is a model trained to its D."""
    d = datasets.load("misfitting-curves")
    d["run"] = d["model"] + "@" + d["total_steps"].astype(str) + "@" + d["peak_lr"].astype(str) + "@" + d["sweep"]
    fin = d[d["step"] == d.groupby("run")["step"].transform("max")]
    best = fin.loc[fin.groupby(["N", "D"])["loss"].idxmin(), "run"]
    d = d[d["run"].isin(set(best))]
    return pd.DataFrame({"run": d["run"], "N": d["N"], "D": d["D"], "loss": d["loss"]})


def _curves(d: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"run": d["model"], "N": d["N"], "D": d["D"], "loss": d["loss"]})


def _opt() -> pd.DataFrame:
    return _curves(datasets.load("opt-curves"))


def _gpt3() -> pd.DataFrame:
    d = datasets.load("gpt3-curves")
    return _curves(d[d["curve"] == "val"])


def _datablations() -> pd.DataFrame:
    d = datasets.load("datablations-final")
    d = d[d["epochs"] <= 1.0]  # single-epoch runs: no repetition, so any loss form applies
    return pd.DataFrame({"run": d["run"], "N": d["N"], "D": d["D"], "loss": d["loss"]})


def _demo() -> pd.DataFrame:
    d = pd.read_csv(resources.files("scalelab") / "examples" / "scalelab_demo_2026-11-29.csv")
    return d[["run", "N", "D", "loss"]]


@dataclass(frozen=True)
class Dataset:
    name: str
    load: object  # () -> DataFrame with run, N, D, loss (every point; a run's last point is its final)
    curves: bool  # runs are training curves (else one point per run)
    untouched: bool  # kept out of every tuning decision; reported apart
    about: str
    sources: tuple[str, ...] = ()  # the public datasets it is built from (`scalelab data list`); () = shipped


DATASETS = {d.name: d for d in (
    Dataset("chinchilla", _chinchilla, False, False, "Hoffmann et al. 2022 IsoFLOP points (Epoch's digitisation)",
            ("chinchilla-epoch",)),
    Dataset("misfitting", _misfitting, False, False, "(Mis)Fitting open_lm sweep, 12M-1B, best lr per (N, D)",
            ("misfitting-final",)),
    Dataset("misfitting-curves", _misfitting_curves, True, False,
            "the same runs with every checkpoint (Choshen et al.: use, or not, the early ones)",
            ("misfitting-curves",)),
    Dataset("opt", _opt, True, False, "OPT 125M-175B training curves (ColPret)", ("opt-curves",)),
    Dataset("scalelab-demo", _demo, False, False, "this project's CPU demo ladder and its 4x held-out run"),
    Dataset("gpt3", _gpt3, True, True, "GPT-3 125M-175B validation curves, digitised (ColPret)", ("gpt3-curves",)),
    Dataset("datablations", _datablations, False, True, "Muennighoff et al. 2023 single-epoch runs, 7M-8.7B",
            ("datablations-final",)),
)}


def load_backtest(name: str) -> pd.DataFrame:
    if name not in DATASETS:
        raise UserError(f"datasets: unknown dataset {name!r}; choose from {', '.join(DATASETS)}", arg="datasets")
    d = DATASETS[name].load().reset_index(drop=True)
    d["C"] = train_flops_6nd(d["N"].to_numpy(float), d["D"].to_numpy(float))
    return d


@dataclass
class Split:
    dataset: str
    cut_flops: float  # runs with final compute <= this are fitted
    train: pd.DataFrame  # every fitted point
    test: pd.DataFrame  # the held-out runs' final points
    ratio: float  # largest held-out C / largest fitted C
    untouched: bool = False  # the dataset is kept out of tuning (reported apart)


def finals(d: pd.DataFrame) -> pd.DataFrame:
    """Each run's last point (largest D)."""
    return d.loc[d.groupby("run")["D"].idxmax()].reset_index(drop=True)


def _fit_points(d: pd.DataFrame, runs: set, curves: bool) -> pd.DataFrame:
    pts = d[d["run"].isin(runs)]
    if not curves:
        return pts.reset_index(drop=True)
    out = []
    for _, g in pts.groupby("run"):
        g = g[g["D"] >= 0.1 * g["D"].max()].sort_values("D")  # past the first 10% of training
        out.append(g.iloc[np.unique(np.linspace(0, len(g) - 1, min(30, len(g))).round().astype(int))])
    return pd.concat(out, ignore_index=True)


def splits(name: str, targets=(4.0, 16.0, 64.0), min_train_runs: int = 3, min_train_points: int = 8) -> list[Split]:
    """Cut-offs of dataset ``name`` whose extrapolation ratios are nearest ``targets`` (distinct ones)."""
    d, curves = load_backtest(name), DATASETS[name].curves
    fin = finals(d).sort_values("C").reset_index(drop=True)
    candidates = []
    for i in range(min_train_runs - 1, len(fin) - 1):
        cut = fin["C"].iloc[i]
        train_runs, test = set(fin["run"][fin["C"] <= cut]), fin[fin["C"] > cut]
        train = _fit_points(d, train_runs, curves)
        if len(test) and len(train) >= min_train_points and train["N"].nunique() >= min(3, min_train_runs):
            candidates.append(Split(name, float(cut), train, test.reset_index(drop=True),
                                    float(test["C"].max() / train["C"].max()), DATASETS[name].untouched))
    chosen = []
    for t in targets:
        best = min(candidates, key=lambda s: abs(np.log(s.ratio / t)), default=None)
        if best is not None and best not in chosen and 0.5 < best.ratio / t < 2.0:
            chosen.append(best)
    return chosen


def score(method: Method, split: Split, level: float = 0.9) -> list[dict]:
    """One row per held-out point: prediction, interval, relative error, whether the interval covered."""
    law = method.fit(load_table(split.train))
    t = split.test
    N, D, actual = (t[k].to_numpy(float) for k in ("N", "D", "loss"))
    pred, boot, iv = law.forecast(N, D, level)  # boot is kept to learn the calibration from
    lo, hi = (None, None) if iv is None else iv
    rows = []
    for j in range(len(t)):
        has = lo is not None
        rows.append({"dataset": split.dataset, "untouched": split.untouched,
                     "method": method.name, "form": law.form, "run": str(t["run"].iloc[j]),
                     "N": float(N[j]), "D": float(D[j]), "ratio": float(t["C"].iloc[j] / split.train["C"].max()),
                     "split_ratio": split.ratio, "n_train": len(split.train), "actual": float(actual[j]),
                     "predicted": float(pred[j]), "lo": float(lo[j]) if has else np.nan,
                     "hi": float(hi[j]) if has else np.nan,
                     "boot_lo": float(boot[0][j]) if boot is not None else float(pred[j]),
                     "boot_hi": float(boot[1][j]) if boot is not None else float(pred[j]),
                     "rel_error": float((pred[j] - actual[j]) / actual[j]),
                     "covered": bool(lo[j] <= actual[j] <= hi[j]) if has else None,
                     "rel_width": float((hi[j] - lo[j]) / actual[j]) if has else None})
    return rows


def _score_task(task) -> list[dict]:
    """One (method, split): its rows, each carrying the fit's warnings (kept, not printed)."""
    method, split, level = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rows = score(method, split, level)
        except UserError as e:  # a form that cannot be fitted to this split: recorded, not fatal
            return [{"dataset": split.dataset, "method": method.name, "split_ratio": split.ratio, "error": str(e)}]
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    return [{**r, "warnings": notes} for r in rows]


BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def worker_pool(workers: int):
    """A spawn Pool whose processes each use one BLAS thread. The fits are many small array operations;
    with the default thread pools, 2 processes on 2 cores ran the suite in 5 min 37 s instead of 1 min 3 s
    (docs/LOG.md, 2026-11-30). The children read the variables when they import numpy."""
    saved = {k: os.environ.get(k) for k in BLAS_THREADS}
    os.environ.update({k: "1" for k in BLAS_THREADS})
    try:
        with mp.get_context("spawn").Pool(workers) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def map_tasks(fn, tasks: list, workers: int = 1, progress=None) -> list:
    """``fn`` (a module-level function returning a list of rows) over ``tasks``, in ``workers`` processes
    (`worker_pool`) or in this one; the rows concatenated in task order; ``progress(done, total)``."""
    out = []
    with worker_pool(workers) if workers > 1 else _nothing() as pool:
        results = pool.imap(fn, tasks) if pool is not None else map(fn, tasks)
        for i, rows in enumerate(results):
            out += rows
            if progress:
                progress(i + 1, len(tasks))
    return out


@contextmanager
def _nothing():
    yield None


def run_backtest(methods: list[Method], datasets: list[str], level: float = 0.9, workers: int = 1,
                 progress=None) -> dict:
    """Score every method on every split of every dataset -> {"points": [...], "summary": [...],
    "by_split": [...]} (points: one row per held-out point and method). ``workers`` processes."""
    for m in methods:
        m.validate()
    if not 0 < level < 1:
        raise UserError(f"level must be in (0, 1), got {level}", arg="level")
    tasks = [(m, s, level) for name in datasets for s in splits(name) for m in methods]
    points = map_tasks(_score_task, tasks, workers, progress)
    df = pd.DataFrame([p for p in points if "error" not in p])
    return {"level": level, "points": points, "summary": summarize(df), "by_dataset": by_dataset(df),
            "by_split": by_split(df)}


def _stats(g: pd.DataFrame) -> dict:
    err = g["rel_error"].abs()
    cov = g["covered"].dropna()
    return {"points": len(g), "median_abs_error": float(err.median()), "worst_abs_error": float(err.max()),
            "coverage": float(cov.mean()) if len(cov) else None,
            "median_rel_width": float(g["rel_width"].median()) if g["rel_width"].notna().any() else None,
            "median_ratio": float(g["ratio"].median())}


def summarize(df: pd.DataFrame) -> list[dict]:
    """Per method: the tuned-on datasets, the untouched ones, and all, apart."""
    if df.empty:
        return []
    rows = []
    for m, g in df.groupby("method", sort=False):
        for part, sub in (("tuned-on", g[~g["untouched"]]), ("untouched", g[g["untouched"]]), ("all", g)):
            if len(sub):
                rows.append({"method": m, "data": part, **_stats(sub)})
    return rows


def by_split(df: pd.DataFrame) -> list[dict]:
    if df.empty:
        return []
    return [{"dataset": k[0], "split_ratio": k[1], "method": k[2], "n_train": int(g["n_train"].iloc[0]),
             **_stats(g)} for k, g in df.groupby(["dataset", "split_ratio", "method"], sort=False)]


def by_dataset(df: pd.DataFrame) -> list[dict]:
    """Per method and dataset (every cut-off together); the suite's score is the median of these."""
    if df.empty:
        return []
    return [{"method": k[0], "dataset": k[1], "untouched": bool(g["untouched"].iloc[0]), **_stats(g)}
            for k, g in df.groupby(["method", "dataset"], sort=False)]
