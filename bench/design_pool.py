"""Pool-based test of `scalelab ladder suggest` (laws/design.py) on the (Mis)Fitting open_lm sweep
(#17 item 6). The largest-compute runs are the targets; the rest are a pool of runs one could train.
Every strategy starts from the same cheapest runs and adds one pool run at a time:

* suggest  -- the run that most narrows the forecast interval at the target per FLOP (laws/design.py)
* isoflop  -- the usual ladder: the pool in order of compute (every size of a budget, then the next)
* random   -- a random order (median over seeds)

After each addition the method is refitted and the median |relative error| at the targets recorded.
Score: the FLOPs spent (seed runs included) until the error reaches a threshold and stays below it.

    .venv/bin/python bench/design_pool.py [--out bench/results/design_pool.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

from scalelab.io import atomic_write_json
from scalelab.laws.backtest import finals, load_backtest
from scalelab.laws.design import bounds, suggest
from scalelab.laws.methods import METHODS, Method
from scalelab.laws.table import load_table

METHOD = Method("chinchilla", bootstrap=0, sigma_per_decade=0.011)  # --method replaces it
AS_CLI = False  # --as-cli: offer only the candidates `ladder suggest` offers


def setup(dataset: str, n_targets: int, gap: float, n_seed: int):
    fin = finals(load_backtest(dataset)).sort_values("C").reset_index(drop=True)
    targets = fin.iloc[-n_targets:]
    pool = fin[fin["C"] <= targets["C"].min() / gap]
    seed_idx = list(pool.index[:n_seed])
    return pool, targets, seed_idx


def error(chosen: pd.DataFrame, targets: pd.DataFrame) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        law = METHOD.fit(load_table(chosen))
    pred = law.predict(targets["N"].to_numpy(float), targets["D"].to_numpy(float))
    return float(np.median(np.abs(pred - targets["loss"].to_numpy(float)) / targets["loss"].to_numpy(float)))


def run(order_fn, pool, targets, seed_idx, steps: int) -> list[dict]:
    chosen = list(seed_idx)
    trace = [{"flops": float(pool.loc[chosen, "C"].sum()), "error": error(pool.loc[chosen], targets)}]
    for _ in range(steps):
        left = [i for i in pool.index if i not in chosen]
        if not left:
            break
        chosen.append(order_fn(chosen, left))
        trace.append({"flops": float(pool.loc[chosen, "C"].sum()), "error": error(pool.loc[chosen], targets),
                      "added": int(chosen[-1])})
    return trace


def by_suggest(pool, targets):
    tN, tD = float(targets["N"].iloc[-1]), float(targets["D"].iloc[-1])

    def pick(chosen, left):
        sub = pool.loc[chosen]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            law = METHOD.fit(load_table(sub))
        cand = pool.loc[left]
        if AS_CLI:  # the candidates `ladder suggest` would offer: sizes and compute within `bounds`
            n_min, cap = bounds(sub["N"], sub["D"], tN, tD)
            ok = cand[(cand["N"] >= n_min) & (cand["C"] <= cap)]
            cand = ok if len(ok) else cand
        res = suggest(law, sub["N"], sub["D"], sub["loss"], tN, tD, cand["N"], cand["D"], k=1)
        return cand.index[res["suggestions"][0]["index"]] if res["suggestions"] else left[0]
    return pick


def flops_to(trace: list[dict], thr: float) -> float | None:
    """FLOPs at the first step after which the error stays <= thr."""
    for i in range(len(trace)):
        if all(t["error"] <= thr for t in trace[i:]):
            return trace[i]["flops"]
    return None


def error_at(trace: list[dict], flops: float) -> float:
    """The error after the last step that had spent at most ``flops``."""
    return [t for t in trace if t["flops"] <= flops][-1]["error"]


def summarize(traces: dict) -> list[dict]:
    """FLOPs until the error stays under each threshold, and every strategy's error at the FLOPs the
    cheapest-first (isoflop) order spent."""
    rnd = [k for k in traces if k.startswith("random")]
    rows = []
    for thr in (0.05, 0.03, 0.02, 0.01):
        f = {k: flops_to(v, thr) for k, v in traces.items()}
        rows.append({"threshold": thr, "suggest": f["suggest"], "isoflop": f["isoflop"],
                     "random_median": float(np.median([np.inf if f[k] is None else f[k] for k in rnd])),
                     "random_reached": sum(f[k] is not None for k in rnd), "random_seeds": len(rnd)})
    x = traces["isoflop"][-1]["flops"]
    rows.append({"error_at_flops": x, "suggest": error_at(traces["suggest"], x),
                 "isoflop": error_at(traces["isoflop"], x),
                 "random_median": float(np.median([error_at(traces[k], x) for k in rnd]))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="misfitting")
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--gap", type=float, default=4.0, help="pool runs have C <= smallest target C / gap")
    ap.add_argument("--seed-runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--method", default="ensemble", help="a registered method, fitted without bootstrap")
    ap.add_argument("--as-cli", action="store_true", help="suggest among the pool runs within the CLI's bounds")
    ap.add_argument("--baselines", help="reuse the isoflop and random traces of an earlier JSON (same data, method)")
    ap.add_argument("--out", default="bench/results/design_pool.json")
    a = ap.parse_args()
    global METHOD, AS_CLI
    AS_CLI = a.as_cli
    METHOD = Method(**{**METHODS[a.method].__dict__, "bootstrap": 0,
                       "sigma_per_decade": METHODS[a.method].sigma_per_decade or 0.011})
    t0 = time.time()
    pool, targets, seed_idx = setup(a.dataset, a.targets, a.gap, a.seed_runs)
    traces = {"suggest": run(by_suggest(pool, targets), pool, targets, seed_idx, a.steps)}
    if a.baselines:
        old = json.load(open(a.baselines))["traces"]
        traces.update({k: v for k, v in old.items() if k != "suggest"})
    else:
        traces["isoflop"] = run(lambda c, left: left[0], pool, targets, seed_idx, a.steps)
    for s in range(0 if a.baselines else a.random_seeds):
        rng = np.random.default_rng(s)
        traces[f"random{s}"] = run(lambda c, left, rng=rng: left[int(rng.integers(len(left)))], pool, targets,
                                   seed_idx, a.steps)
    rows = summarize(traces)
    for r in rows:
        print(r)
    for k in ("suggest", "isoflop", "random0"):
        print(k, [(f"{t['flops']:.2e}", f"{t['error']:.2%}") for t in traces[k][:12]])
    atomic_write_json(a.out, {"dataset": a.dataset, "pool_runs": len(pool), "targets": targets.to_dict("records"),
                              "pool_max_flops": float(pool["C"].max()), "summary": rows, "traces": traces,
                              "seconds": time.time() - t0, "method": METHOD.name, "as_cli": AS_CLI,
                              "baselines_from": a.baselines})
    print(f"pool {len(pool)} runs (C <= {pool['C'].max():.3g}), targets C {targets['C'].min():.3g}.."
          f"{targets['C'].max():.3g}; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
