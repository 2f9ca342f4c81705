"""Ladder results as a table `scalelab fit` reads: one row per (run, evaluated token count).

Built from the store's `MetricsRecord`s and planned rungs; C = 6 N D is computed here, once
(`economics.flops.train_flops_6nd`), and ``C_exact`` is the loop's exact count with attention.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from scalelab.economics.flops import train_flops_6nd
from scalelab.errors import UserError
from scalelab.io import atomic_write_text
from scalelab.ladder.plan import plan, spec_from_stored
from scalelab.ladder.quality import check_rungs
from scalelab.ladder.store import Store
from scalelab.laws.fitting import fit_approach2, fit_approach3
from scalelab.laws.methods import DEFAULT_METHOD, get_method
from scalelab.laws.table import load_table
from scalelab.train.records import MetricsRecord

# the fit files a ladder directory holds beside its store (the demo and `report --fit` write them)
FIT_APPROACH3, FIT_APPROACH2, FIT_SELECTED = "fit_approach3.json", "fit_approach2.json", "fit_selected.json"
FIT_FILES = (FIT_APPROACH3, FIT_APPROACH2, FIT_SELECTED)


def ladder_dir(src: str | Path) -> Path:
    """The ladder directory named by ``src``: the directory itself, or the one holding ``src`` when it
    is the store (``ladder.sqlite``)."""
    p = Path(src)
    return p.parent if p.suffix == ".sqlite" else p


def open_store(out_dir: str | Path) -> Store:
    p = Path(out_dir)
    db = ladder_dir(p) / "ladder.sqlite"
    if not db.exists():
        raise UserError(f"{p} holds no ladder (no ladder.sqlite); run `scalelab ladder run` first")
    return Store(db)


def _points(store: Store, include_holdout: bool) -> list[tuple[dict, MetricsRecord]]:
    """(loss-table row, its record) for every evaluated point, read from the store once."""
    runs = {r["name"]: r for r in store.runs()}
    holdouts = set(store.get_meta("holdouts", []))
    out = []
    for name, rec in store.records():
        r = runs[name]
        if not rec.evaluated or (name in holdouts and not include_holdout):
            continue
        spec = json.loads(r["spec"])
        out.append(({"run": name, "budget": r["budget"], "N": r["N"], "N_non_embedding": r["N_non_embedding"],
                     "D": rec.tokens, "C": train_flops_6nd(r["N"], rec.tokens), "C_exact": rec.flops,
                     "loss": rec.val_loss, "bpb": rec.val_bpb, "step": rec.step,
                     "final": r["status"] == "done" and rec.step == r["steps"],
                     "d_model": spec["d_model"], "n_layers": spec["n_layers"], "lr": spec["lr"],
                     "batch_size": spec["batch_size"], "holdout": name in holdouts}, rec))
    return out


def results_table(store: Store, include_holdout: bool = True, quality: bool = False) -> pd.DataFrame:
    """The loss table; with ``quality``, each row also carries its run's rung-quality reasons."""
    df = pd.DataFrame([row for row, _ in _points(store, include_holdout)])
    if quality and not df.empty:
        q = rung_quality(store, df)
        df["quality"] = df["run"].map(dict(zip(q["run"], q["quality"]))).fillna("")
    return df


def rung_quality(store: Store, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rung-quality checks (ladder/quality.py) of a ladder's finished rungs (held-out runs apart):
    off-trend residuals, loss curves, and each rung's lr against the rule it was planned with.
    ``table``: the ladder's `results_table`, when the caller has read it already."""
    runs = {r["name"]: r for r in store.runs()}
    df = results_table(store, include_holdout=False) if table is None else table[~table["holdout"]]
    if df.empty:
        return pd.DataFrame(columns=["run", "quality"])
    finals = df[df["final"]].copy()
    finals["steps"] = finals["run"].map(lambda n: runs[n]["steps"])
    finals["replica_of"] = finals["run"].map(lambda n: json.loads(runs[n]["spec"]).get("replica_of", ""))
    curves: dict = {}
    imported = store.get_meta("imported") is not None  # a missing train loss there is one not logged at that step
    for name, rec in store.records():
        if not (imported and math.isnan(rec.train_loss)):
            curves.setdefault(name, []).append((rec.step, rec.train_loss, rec.val_loss))
    return check_rungs(finals, curves, _rule_lrs(store))


def _rule_lrs(store: Store) -> dict | None:
    """Each planned rung's lr under the ladder's own heuristics (None if the spec cannot be rebuilt)."""
    try:
        return {r.name: r.config.optim.lr for r in plan(spec_from_stored(store.get_meta("spec")))}
    except (UserError, TypeError, KeyError):
        return None


def task_table(store: Store, include_holdout: bool = True) -> pd.DataFrame:
    """One row per (run, evaluated step, task): the loss table's columns, a ``task`` column and the task's
    metrics (`evaluate.during.METRICS`): what `scalelab fit --metric exact_match --via answer_bpb` reads."""
    return pd.DataFrame([{"run": row["run"], "step": row["step"], "task": task, **row, **m}
                         for row, rec in _points(store, include_holdout) if rec.tasks
                         for task, m in rec.tasks.items()])


def curve_table(store: Store) -> pd.DataFrame:
    """Every record of every run with its learning rate: the curve table `scalelab fit --curves` reads
    (``loss`` is the validation loss, empty on records that were not evaluated; ``holdout`` marks the
    ladder's held-out runs, which the curve fit leaves out). A WSD branch's records start at its branch
    point, so its group's trunk records before that point come first, with their learning rates and no
    loss: the branch's schedule is whole, and no loss is counted twice."""
    runs = {r["name"]: r for r in store.runs()}
    specs = {n: json.loads(r["spec"]) for n, r in runs.items()}
    holdouts = set(store.get_meta("holdouts", []))
    recs: dict[str, list[MetricsRecord]] = {}
    for name, rec in store.records():
        recs.setdefault(name, []).append(rec)
    rows = []
    for name, rs in recs.items():
        trunk = _trunk(specs, runs, name)
        lead = [r for r in recs.get(trunk, []) if r.step < rs[0].step] if trunk else []
        rows += [{"run": name, "N": runs[name]["N"], "step": r.step, "tokens": r.tokens, "lr": r.lr,
                  "loss": r.val_loss if own else None, "train_loss": r.train_loss if own else None,
                  "holdout": name in holdouts} for r, own in [(r, False) for r in lead] + [(r, True) for r in rs]]
    return pd.DataFrame(rows)


def _trunk(specs: dict, runs: dict, name: str) -> str | None:
    """A WSD branch's trunk: the longest run of its group (None for a run that is not a branch)."""
    spec = specs[name]
    if not spec.get("group") or not spec.get("decay_start"):
        return None
    trunk = max((n for n, s in specs.items() if s.get("group") == spec["group"]), key=lambda n: runs[n]["steps"])
    return None if trunk == name else trunk


def export(out_dir: str | Path, dest: str | Path, tasks: bool = False, curves: bool = False) -> pd.DataFrame:
    """Write the loss table (or with ``tasks`` the task table, with ``curves`` the curve table) to ``dest``
    (.csv or .parquet)."""
    store = open_store(out_dir)
    df = curve_table(store) if curves else task_table(store) if tasks else results_table(store, quality=True)
    store.close()
    if df.empty:
        raise UserError(f"{out_dir} has no evaluated runs yet" if not tasks else
                        f"{out_dir} has no task evaluations; plan the ladder with tasks (ladder plan --task SPEC)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix == ".parquet":
        tmp = dest.with_name(f".{dest.name}.tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(dest)
    elif dest.suffix == ".csv":
        atomic_write_text(dest, df.to_csv(index=False))
    else:
        raise UserError(f"out must end in .csv or .parquet, got {dest.name}", arg="out")
    return df


def fit_ladder(out_dir: str | Path, bootstrap: int = 100, seed: int = 0) -> list[Path]:
    """Fit a finished ladder's final points and write the fit files the report reads: approach 3
    (Chinchilla form), the prediction law (the back-tested default method, `fit_selected.json`) and
    approach 2 (when every budget has a valley)."""
    store = open_store(out_dir)
    df = results_table(store, include_holdout=False)
    store.close()
    root = ladder_dir(out_dir)
    if df.empty or int(df["final"].sum()) < 6:
        raise UserError(f"{out_dir} has fewer than 6 finished runs; a scaling-law fit needs more")
    table = load_table(df[df["final"]].reset_index(drop=True))
    fit_approach3(table, bootstrap=bootstrap, seed=seed).save(root / FIT_APPROACH3)
    replace(get_method(DEFAULT_METHOD), seed=seed).fit(table).save(root / FIT_SELECTED)  # calibrated at its 50
    written = [root / FIT_APPROACH3, root / FIT_SELECTED]
    try:
        fit_approach2(table, bootstrap=bootstrap, seed=seed).save(root / FIT_APPROACH2)
        written.append(root / FIT_APPROACH2)
    except UserError:  # a budget without a valley: no approach-2 allocation
        pass
    return written
