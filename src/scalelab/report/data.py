"""Everything a report shows, gathered from a ladder directory (store + fit files), fitting what is
missing. One dataclass, so the interactive and the static figures draw the same numbers."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.laws.law import FittedLaw


@dataclass
class ReportData:
    title: str
    curves: pd.DataFrame  # every evaluated point of every run
    finals: pd.DataFrame  # one row per finished ladder run (held-out runs excluded)
    holdouts: pd.DataFrame  # finished held-out runs
    law3: FittedLaw | None  # Chinchilla form, approach 3
    law2: FittedLaw | None  # approach 2 (allocation)
    law: FittedLaw | None  # the law used for predictions (selected, else law3)
    header: dict = field(default_factory=dict)
    specs: dict = field(default_factory=dict)  # run name -> planned rung (for hover text)

    @property
    def optima(self) -> list[dict]:
        """Approach 2's IsoFLOP minimum per budget (C, N_opt, D_opt, loss_opt, curvature, edge)."""
        return self.law2.info.get("optima", []) if self.law2 else []


def _load_or_none(path: Path) -> FittedLaw | None:
    return FittedLaw.load(path) if path.exists() else None


def gather(src: str | Path) -> ReportData:
    from scalelab.ladder.results import open_store, results_table
    from scalelab.laws.fitting import fit_approach2, fit_approach3
    from scalelab.laws.table import load_table

    src = Path(src)
    root = src.parent if src.suffix == ".sqlite" else src
    store = open_store(src)
    df = results_table(store)
    spec = store.get_meta("spec", {}) or {}
    specs = {r["name"]: json.loads(r["spec"]) for r in store.runs()}
    store.close()
    if df.empty:
        raise UserError(f"{src} has no evaluated runs to report on")
    finals = df[df["final"] & ~df["holdout"]].reset_index(drop=True)
    holdouts = df[df["final"] & df["holdout"]].reset_index(drop=True)
    law3, law2, law = (_load_or_none(root / f) for f in ("fit_approach3.json", "fit_approach2.json", "fit_selected.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = load_table(finals) if len(finals) > 5 else None
        if law3 is None and table is not None:
            law3 = fit_approach3(table, bootstrap=100, seed=0)
        if law2 is None and table is not None:
            try:
                law2 = fit_approach2(table, bootstrap=100, seed=0)
            except UserError:
                law2 = None
    law = law or law3
    data = spec.get("data", {})
    header = {
        "corpus": data.get("corpus", "stdlib") + (" (Python standard library, offline)" if data.get("corpus", "stdlib") == "stdlib" else ""),
        "tokenizer": f"byte-level BPE, vocab {spec.get('vocab_size', '?')}, trained locally",
        "context": spec.get("seq_len"),
        "budgets": [f"{b:.3g}" for b in spec.get("budgets", [])],
        "strategy": spec.get("strategy", "cosine"),
        "flops": "C = 6 N D, N = total parameters (tied embeddings); exact FLOPs with attention in hover text",
        "loss": "validation cross-entropy, nats per token",
        "runs": f"{len(finals)} ladder runs, {len(holdouts)} held out",
        "prediction law": f"{law.form} (approach {law.approach})" if law else "none",
    }
    return ReportData(title=f"scalelab report: {root.name}", curves=df, finals=finals, holdouts=holdouts,
                      law3=law3, law2=law2, law=law, header=header, specs=specs)


def hover(d: ReportData, row) -> str:
    s = d.specs.get(row["run"], {})
    return (f"{row['run']}<br>N = {int(row['N']):,} (non-emb {int(row['N_non_embedding']):,})<br>"
            f"D = {int(row['D']):,} tokens, C = {row['C']:.3g}<br>d_model {s.get('d_model')}, "
            f"{s.get('n_layers')} layers, batch {s.get('batch_size')}, lr {s.get('lr', float('nan')):.4g}<br>"
            f"loss {row['loss']:.4f}")


def interval(law: FittedLaw | None, values_fn, level=0.9):
    """(lo, hi) over a law's bootstrap samples of values_fn(params) (arrays), or None."""
    if law is None or not law.samples:
        return None
    vals = np.array([values_fn(s) for s in law.samples], float)
    q = (1 - level) / 2
    return np.nanquantile(vals, q, axis=0), np.nanquantile(vals, 1 - q, axis=0)


def optimal_path(d: ReportData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compute-optimal path drawn on the landscape: N*(C), D*(C) from approach 2 (else the
    prediction law), C from a third of the smallest budget to 10x the largest, and the prediction
    law's loss there. Needs d.law."""
    budgets = d.finals["budget"]
    alloc = (d.law2 or d.law).allocate(np.geomspace(budgets.min() / 3, budgets.max() * 10, 30))
    return alloc["N_opt"], alloc["D_opt"], d.law.predict(alloc["N_opt"], alloc["D_opt"])


def published_points() -> list[dict]:
    """Published models with a known training compute, for the frontier."""
    from scalelab.economics.published import models_table

    return [m for m in models_table() if m.get("compute_flops")]
