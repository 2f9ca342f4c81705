"""Everything a report shows, computed once from a ladder directory (store + fit files): grids,
residuals, parabolas, frontiers and bands. The interactive (figures.py, plotly) and the static
(static.py, matplotlib) figures only draw these numbers.

The report never fits: it reads the fit files beside the store (`scalelab report DIR --fit` or the
demo writes them) and says which are missing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.economics.published import models_table
from scalelab.errors import UserError
from scalelab.ladder.results import FIT_FILES, ladder_dir, open_store, results_table, rung_quality, task_table
from scalelab.laws.law import FittedLaw
from scalelab.laws.published import PUBLISHED


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
    missing_fits: list = field(default_factory=list)  # fit files absent beside the store
    tasks: pd.DataFrame = field(default_factory=pd.DataFrame)  # ladders with [tasks]: `task_table`
    quality: dict = field(default_factory=dict)  # run name -> the rung checks' reasons ('' = none)

    @property
    def optima(self) -> list[dict]:
        """Approach 2's IsoFLOP minimum per budget (C, N_opt, D_opt, loss_opt, curvature, edge)."""
        return self.law2.info.get("optima", []) if self.law2 else []

    @property
    def budgets(self) -> list[float]:
        return sorted(self.finals["budget"].unique())

    def final_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.finals[k].to_numpy(float) for k in ("N", "D", "loss"))

    @cached_property
    def landscape(self) -> Landscape | None:
        """The prediction law's surface over the ladder's (N, D) range, IsoFLOP lines, the path."""
        if self.law is None:
            return None
        N, D, L = self.final_arrays()
        NN, DD = np.meshgrid(np.logspace(np.log10(N.min()) - 0.3, np.log10(N.max()) + 0.5, 40),
                             np.logspace(np.log10(D.min()) - 0.3, np.log10(D.max()) + 0.5, 40))
        lines = []
        for C in self.budgets:
            n = np.geomspace(N.min() / 2, N.max() * 2, 60)
            lines.append((C, n, C / (6 * n), self.law.predict(n, C / (6 * n))))
        fit = self.law.predict(N, D)
        return Landscape(NN, DD, self.law.predict(NN, DD), lines, optimal_path(self), (L - fit) / fit)

    @cached_property
    def parabolas(self) -> list[Parabola]:
        """Approach 2's fitted parabola in ln N per budget that has one (and its minimum)."""
        optima, out = {round(o["C"], 0): o for o in self.optima}, []
        for C in self.budgets:
            g = self.finals[self.finals["budget"] == C]
            o = optima.get(round(C, 0))
            if o:
                x = np.linspace(np.log(g["N"].min()) - 0.3, np.log(g["N"].max()) + 0.3, 60)
                out.append(Parabola(C, np.exp(x), o["curvature"] * (x - np.log(o["N_opt"])) ** 2 + o["loss_opt"], o))
        return out

    @cached_property
    def frontier(self) -> Frontier | None:
        """N*(C) and D*(C) from a third of the smallest budget to 1e25 FLOPs, with bootstrap bands."""
        law = self.law2 or self.law3
        if law is None:
            return None

        Cs = np.geomspace(min(self.budgets) / 3, 1e25, 80)
        bands = {key: interval(law, lambda s, key=key: law.allocate(Cs, params=s)[key]) for key in ("N_opt", "D_opt")}
        return Frontier(law, Cs, law.allocate(Cs), bands, PUBLISHED["besiroglu2024"].allocate(Cs), published_points())

    @cached_property
    def check(self) -> PredictionCheck | None:
        """Held-out runs predicted by the prediction law (with bands), and the ladder's residuals."""
        if self.law is None:
            return None

        h, law = self.holdouts, self.law
        hN, hD = h["N"].to_numpy(float), h["D"].to_numpy(float)
        band = law.predict_interval(hN, hD)[1:] if len(h) else None  # calibrated when the fit is
        band = None if band is None or band[0] is None else band
        N, D, L = self.final_arrays()
        fit = law.predict(N, D)
        return PredictionCheck(law.predict(hN, hD) if len(h) else np.array([]), band, (L - fit) / fit)


@dataclass
class Landscape:
    N: np.ndarray  # (40, 40) grid of N
    D: np.ndarray  # (40, 40) grid of D
    loss: np.ndarray  # (40, 40) the law's loss on the grid
    isoflops: list  # (C, N, D, loss) along each budget's IsoFLOP line
    path: tuple  # (N*, D*, loss) along the compute-optimal path
    residual: np.ndarray  # (actual - law) / law of each final ladder run


@dataclass
class Parabola:
    C: float
    N: np.ndarray
    loss: np.ndarray
    optimum: dict  # N_opt, loss_opt, edge, ...


@dataclass
class Frontier:
    law: FittedLaw
    C: np.ndarray
    alloc: dict  # N_opt, D_opt at each C
    bands: dict  # key -> (lo, hi) or None
    reference: dict  # the Chinchilla refit's allocation (Besiroglu et al. 2024)
    published: list[dict]


@dataclass
class PredictionCheck:
    predicted: np.ndarray  # the held-out runs' predicted loss
    band: tuple | None  # their (lo, hi) forecast interval (bootstrap, widened when calibrated)
    residual: np.ndarray  # relative residual of each final ladder run


def _load_or_none(path: Path) -> FittedLaw | None:
    return FittedLaw.load(path) if path.exists() else None


def gather(src: str | Path) -> ReportData:
    src, root = Path(src), ladder_dir(src)
    store = open_store(src)
    df, tasks = results_table(store), task_table(store)
    spec = store.get_meta("spec", {}) or {}
    specs = {r["name"]: json.loads(r["spec"]) for r in store.runs()}
    quality = rung_quality(store)
    store.close()
    if df.empty:
        raise UserError(f"{src} has no evaluated runs to report on")
    finals = df[df["final"] & ~df["holdout"]].reset_index(drop=True)
    holdouts = df[df["final"] & df["holdout"]].reset_index(drop=True)
    law3, law2, law = (_load_or_none(root / f) for f in FIT_FILES)
    missing = [f for f in FIT_FILES if not (root / f).exists()]
    law = law or law3
    data = spec.get("data", {})
    corpus = data.get("corpus", "stdlib")
    header = {
        "corpus": corpus + (" (Python standard library, offline)" if corpus == "stdlib" else ""),
        "tokenizer": f"byte-level BPE, vocab {spec.get('vocab_size', '?')}, trained locally",
        "context": spec.get("seq_len"),
        "budgets": [f"{b:.3g}" for b in spec.get("budgets", [])],
        "strategy": spec.get("strategy", "cosine"),
        "flops": "C = 6 N D, N = total parameters (tied embeddings); exact FLOPs with attention in hover text",
        "loss": "validation cross-entropy, nats per token",
        "runs": f"{len(finals)} ladder runs, {len(holdouts)} held out",
        "prediction law": f"{law.form} (approach {law.approach})" if law else "none",
        "rung checks": _quality_line(quality),
        "fit files": ", ".join(FIT_FILES) if law3 is not None else
        f"missing {', '.join(missing)}: laws are not drawn; run `scalelab report {src} --fit` to fit them",
    }
    return ReportData(title=f"scalelab report: {root.name}", curves=df, finals=finals, holdouts=holdouts,
                      law3=law3, law2=law2, law=law, header=header, specs=specs, missing_fits=missing, tasks=tasks,
                      quality=dict(zip(quality["run"], quality["quality"])))


def _quality_line(q: pd.DataFrame) -> str:
    """The rung-quality checks (ladder/quality.py) in one line: which rungs are flagged and why."""
    if q.empty:
        return "no finished rungs"
    flagged = q[q["quality"] != ""]
    noise = q["noise"].iloc[0]
    scale = f"noise scale {noise:.3f} in ln loss, {q['noise_source'].iloc[0]}" if np.isfinite(noise) else \
        "too few rungs to measure their noise"
    head = f"{len(flagged)} of {len(q)} rungs flagged ({scale})"
    return head + "".join(f"; {r['run']}: {r['quality']}" for _, r in flagged.iterrows())


def hover(d: ReportData, row) -> str:
    s = d.specs.get(row["run"], {})
    return (f"{row['run']}<br>N = {int(row['N']):,} (non-emb {int(row['N_non_embedding']):,})<br>"
            f"D = {int(row['D']):,} tokens, C = {row['C']:.3g}<br>d_model {s.get('d_model')}, "
            f"{s.get('n_layers')} layers, batch {s.get('batch_size')}, lr {s.get('lr', float('nan')):.4g}<br>"
            f"loss {row['loss']:.4f}" + (f"<br>flagged: {d.quality[row['run']]}" if d.quality.get(row["run"]) else ""))


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
    return [m for m in models_table() if m.get("compute_flops")]
