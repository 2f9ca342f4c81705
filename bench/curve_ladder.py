"""Curves against final points on scalelab's own CPU ladder (#37, item 4a and its acceptance).

The question: forecasting a held-out run with 4x the ladder's largest budget, is a curve law fitted to every
checkpoint of a WSD ladder (`ladder plan --strategy wsd`: each shape's constant-rate trunk with short
cooldowns at the smaller budgets) at least as accurate as the final-point default on the IsoFLOP grid, and from
how many FLOPs? Inputs: a finished `scalelab demo` folder (the IsoFLOP grid, its held-out run at 4x and that
run's measured loss) and the same ladder run with strategy wsd and 16 evaluations per run on the same corpus:

    scalelab demo --out runs/demo
    scalelab ladder plan ... (the demo's spec with strategy = "wsd", evals_per_run = 16) --out wsd.toml
    scalelab ladder run wsd.toml --out runs/wsd
    python bench/curve_ladder.py --grid runs/demo --wsd runs/wsd --json bench/results/curve_ladder.json

Each forecast is of the held-out run's final validation loss under its own (cosine) schedule; each method's
FLOPs are what training its runs cost (a WSD branch adds only its cooldown to its trunk). A smaller WSD ladder
(the budgets below the largest) is scored too: its trunks end at their last kept branch point.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.io import atomic_write_json
from scalelab.ladder.results import curve_table, open_store, results_table
from scalelab.laws.curve_law import CurveMethod
from scalelab.laws.curve_table import read_curves
from scalelab.laws.curves import FORMS
from scalelab.laws.methods import DEFAULT_METHOD, get_method
from scalelab.laws.table import load_table
from scalelab.train.rundir import RunDir
from scalelab.train.schedule import lr_at


def holdout(grid: Path) -> dict:
    store = open_store(grid)
    name = store.get_meta("holdouts")[0]
    row = next(r for r in store.runs() if r["name"] == name)
    cfg = RunDir.under(grid, name).read_config()
    T = cfg.total_steps
    lr = np.r_[0.0, [lr_at(s, T, cfg.optim.lr, cfg.schedule) for s in range(T)]]  # index t: the update making step t
    return {"name": name, "N": row["N"], "D": row["D"], "steps": T, "loss": row["final_loss"], "lr": lr,
            "tokens_per_step": row["D"] / T}


def final_point(table: pd.DataFrame, hold: dict) -> dict:
    law = get_method(DEFAULT_METHOD).fit(load_table(table.reset_index(drop=True)).finals())
    loss, lo, hi = law.predict_interval(hold["N"], hold["D"], 0.9)
    return {"loss": float(loss[0]), "lo": float(lo[0]), "hi": float(hi[0])}


def grid_flops(df: pd.DataFrame) -> float:
    f = df[df["final"] & ~df["holdout"]]
    return float((6 * f["N"] * f["D"]).sum())


def wsd_subset(store, budgets: set[float]) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The WSD ladder reduced to ``budgets``: its final-point table, its curve table (each trunk's records up to
    the last kept branch point) and its training FLOPs."""
    res = results_table(store, include_holdout=False)
    runs = {r["name"]: r for r in store.runs()}
    specs = {n: json.loads(r["spec"]) for n, r in runs.items()}
    kept = {n for n, r in runs.items() if r["budget"] in budgets}
    curves = curve_table(store)
    parts, flops = [curves[curves["run"].isin(kept)]], 0.0
    for group in {s["group"] for s in specs.values()}:
        members = [n for n in runs if specs[n]["group"] == group]
        trunk = max(members, key=lambda n: runs[n]["steps"])
        mine = [n for n in members if n in kept]
        if not mine:
            continue
        tps = runs[trunk]["D"] / runs[trunk]["steps"]
        flops += 6 * runs[trunk]["N"] * tps * max(specs[n]["decay_start"] or runs[n]["steps"] for n in mine)
        flops += sum(6 * runs[n]["N"] * tps * (runs[n]["steps"] - (specs[n]["decay_start"] or runs[n]["steps"]))
                     for n in mine)
        if trunk not in kept:  # the trunk's constant-rate stretch that the kept branches started from
            start = max(specs[n]["decay_start"] or 0 for n in mine)
            t = curves[(curves["run"] == trunk) & (curves["step"] <= start)]
            parts.append(t.assign(run=f"{trunk}-trunk"))
    table = res[res["run"].isin(kept)]
    return table, pd.concat(parts, ignore_index=True), flops


def curve_forecasts(curves: pd.DataFrame, hold: dict) -> dict:
    out = {}
    table = read_curves(curves)
    for form in FORMS:
        for across in ("trend", "joint"):
            try:
                fitted = CurveMethod(form, across).fit(table)
                f = fitted.forecast(hold["N"], hold["lr"], hold["tokens_per_step"], 0.9)["final"]
                out[f"{form}/{across}"] = {"loss": f["loss"], "lo": f["loss_lo"], "hi": f["loss_hi"]}
            except Exception as e:  # noqa: BLE001  (a fit that fails is a result too)
                out[f"{form}/{across}"] = {"error": str(e).splitlines()[0]}
    return out


def score(pred: dict, truth: float) -> dict:
    if "loss" not in pred:
        return pred
    return {**pred, "error": pred["loss"] / truth - 1, "covered": bool(pred["lo"] <= truth <= pred["hi"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True, help="a finished `scalelab demo` folder")
    p.add_argument("--wsd", required=True, help="the same ladder with strategy wsd, evals_per_run 16")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    hold = holdout(Path(a.grid))
    grid_store = open_store(a.grid)
    gdf = results_table(grid_store)
    base_flops = grid_flops(gdf)
    rows = [{"method": "final points (default), IsoFLOP grid", "flops": base_flops,
             **score(final_point(gdf[~gdf["holdout"]], hold), hold["loss"])}]
    store = open_store(a.wsd)
    budgets = sorted({r["budget"] for r in store.runs()})
    for keep in (set(budgets), set(budgets[:-1])):
        table, curves, flops = wsd_subset(store, keep)
        label = f"WSD ladder, budgets {', '.join(f'{b:.0e}' for b in sorted(keep))}"
        if table["final"].sum() >= 6:
            rows.append({"method": f"final points (default), {label}", "flops": flops,
                         **score(final_point(table, hold), hold["loss"])})
        for k, v in curve_forecasts(curves, hold).items():
            rows.append({"method": f"curves {k}, {label}", "flops": flops, **score(v, hold["loss"])})
    for r in rows:
        r["flops_ratio"] = r["flops"] / base_flops
        err = f"{r['error']:+.2%} ({'in' if r['covered'] else 'OUT'})" if "error" in r and "loss" in r else r.get(
            "error", "")
        print(f"{r['method']:70s} FLOPs {r['flops_ratio']:.2f}x  {err}")
    res = {"holdout": {k: v for k, v in hold.items() if k != "lr"}, "grid_flops": base_flops, "rows": rows,
           "data": "scalelab demo corpus (Python standard library), DEMO ladder budgets 1e11-1e12 FLOPs; held-out "
                   f"run {hold['name']} at 4x the largest budget"}
    if a.json:
        atomic_write_json(a.json, json.loads(json.dumps(res, default=float)))
    print(f"held-out {hold['name']}: N = {hold['N']:,}, D = {hold['D']:,}, measured loss {hold['loss']:.4f}"
          + ("" if math.isfinite(hold["loss"]) else " (not trained)"))


if __name__ == "__main__":
    main()
