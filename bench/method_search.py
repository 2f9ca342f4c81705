"""Search for better fitting methods with the back-test (#17 item 3): every candidate is scored
without bootstrap (point predictions only) on every split, and averages of forms are scored from the
stored predictions. Choices are made on the tuned-on datasets; the untouched ones are printed apart.

    .venv/bin/python bench/method_search.py [--out bench/results/method_search.json]

Per-dataset medians of |relative error| are the score (a dataset with many points must not
outvote the others); the per-point median over all held-out points is printed too.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import pandas as pd

from scalelab.io import atomic_write_json
from scalelab.laws.backtest import DATASETS, splits, worker_pool
from scalelab.laws.methods import Method
from scalelab.laws.table import load_table

FORMS = ("chinchilla", "kaplan", "overtraining", "compute")
VARIANTS = {
    "": {},
    "lik": {"objective": "huber-likelihood"},
    "w0.5": {"weight_power": 0.5},
    "w1": {"weight_power": 1.0},
    "run": {"per_run": True},
    "drop25": {"drop_smallest": 0.25},
    "drop50": {"drop_smallest": 0.5},
    "prog50": {"min_progress": 0.5},
    "finals": {"min_progress": 1.0},
}


def candidates() -> list[Method]:
    return [Method(f"{f}{'+' + v if v else ''}", form=f, bootstrap=0, **kw)
            for f, (v, kw) in itertools.product(FORMS, VARIANTS.items())]


def _task(task):
    method, split = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            law = method.fit(load_table(split.train))
            pred = np.atleast_1d(law.predict(split.test["N"].to_numpy(float), split.test["D"].to_numpy(float)))
        except Exception as e:  # noqa: BLE001 -- a candidate that cannot fit a split is recorded
            return [{"method": method.name, "dataset": split.dataset, "error": str(e)}]
    t = split.test
    return [{"method": method.name, "dataset": split.dataset, "untouched": split.untouched,
             "split_ratio": split.ratio, "run": str(t["run"].iloc[j]), "actual": float(t["loss"].iloc[j]),
             "predicted": float(pred[j])} for j in range(len(t))]


def ensembles(df: pd.DataFrame, members_pool: list[str], sizes=(2, 3)) -> pd.DataFrame:
    """Geometric means (avg) of the predictions of every combination of ``members_pool``, and for three
    members their median (med), which one member jumping to another basin cannot move."""
    key = ["dataset", "split_ratio", "run"]
    wide = df.pivot_table(index=key, columns="method", values="predicted").dropna(axis=1)
    base = df.drop_duplicates(key).set_index(key)[["untouched", "actual"]]
    out = []
    for k in sizes:
        for combo in itertools.combinations([m for m in members_pool if m in wide.columns], k):
            pred = np.exp(np.log(wide[list(combo)]).mean(axis=1))
            out.append(base.assign(method="avg(" + ",".join(combo) + ")", predicted=pred).reset_index())
            if k == 3:
                med = wide[list(combo)].median(axis=1)
                out.append(base.assign(method="med(" + ",".join(combo) + ")", predicted=med).reset_index())
    return pd.concat(out, ignore_index=True) if out else df.iloc[:0]


def scores(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(abs_err=(df["predicted"] - df["actual"]).abs() / df["actual"])
    per_ds = df.pivot_table(index="method", columns="dataset", values="abs_err", aggfunc="median")
    tuned = [d for d in per_ds.columns if not DATASETS[d].untouched]
    untouched = [d for d in per_ds.columns if DATASETS[d].untouched]
    per_ds["tuned_median"] = per_ds[tuned].median(axis=1)
    per_ds["tuned_worst_ds"] = per_ds[tuned].max(axis=1)
    per_ds["tuned_points"] = df[~df["untouched"]].groupby("method")["abs_err"].median()
    if untouched:
        per_ds["untouched_median"] = per_ds[untouched].median(axis=1)
    return per_ds.sort_values("tuned_median")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/method_search.json")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    t0 = time.time()
    tasks = [(m, s) for name in DATASETS for s in splits(name) for m in candidates()]
    with worker_pool(a.workers) as pool:
        rows = [r for rs in pool.imap(_task, tasks) for r in rs]
    failed = [r for r in rows if "error" in r]
    df = pd.DataFrame([r for r in rows if "error" not in r])
    singles = scores(df)
    complete = singles[singles.drop(columns=[c for c in singles.columns if "_" in c]).notna().all(axis=1)]
    top = list(complete.index[:10])  # fitted on every dataset
    combos = scores(ensembles(df, top + [f for f in FORMS if f not in top]))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print((singles * 100).round(2).to_string())
    print((combos.head(10) * 100).round(2).to_string())
    aware = combos[[not any(m.startswith("compute") for m in i[4:-1].split(",")) for i in combos.index]]
    print("averages of forms that tell N from D (no compute form):")
    print((aware.head(10) * 100).round(2).to_string())
    print(f"{len(tasks)} fits, {len(failed)} failed, {time.time() - t0:.0f} s")
    atomic_write_json(a.out, {"singles": singles.reset_index().to_dict("records"),
                              "ensembles": combos.head(30).reset_index().to_dict("records"),
                              "ensembles_nd_aware": aware.head(30).reset_index().to_dict("records"),
                              "failed": failed, "seconds": time.time() - t0})


if __name__ == "__main__":
    main()
