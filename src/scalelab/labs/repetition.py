"""The data wall: what repeating data is worth (Muennighoff et al. 2023, "Scaling Data-Constrained LMs").

At each size the lab trains, on the offline corpus, models that see D = e x U tokens for epochs
e = 1, 2, 4, ...: once drawn from only U unique tokens (`data.unique_tokens`: e shuffled epochs over
the same U tokens), once from fresh data (all D tokens distinct). Every run is scored on the same
held-out validation split. The fresh runs trace loss against data at each size; a repeated run's
effective data D' is the amount of fresh data that reaches its loss; Muennighoff's
D' = U + U R*_D (1 - exp(-(e - 1) / R*_D)) is fitted to them (laws/repetition.py), and R*_D compared
with their 15.4. Then: after how many epochs is a repeated token worth less than half a fresh one?
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    pyplot,
    savefig,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.laws.forms import MUENNIGHOFF_REPETITION
from scalelab.laws.repetition import effective_data, fit_repetition
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class RepetitionSpec(TrainSettings):
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2")
    unique_tokens: int = 200_000
    epochs: tuple[int, ...] = (1, 2, 4, 8, 16)

    def validate(self) -> RepetitionSpec:
        for s in self.sizes:
            Shape.parse(s)
        if len(self.epochs) < 3 or min(self.epochs) < 1 or max(self.epochs) < 4:
            raise UserError("epochs: three or more values >= 1 reaching at least 4 (e.g. 1,2,4,8,16)", arg="epochs")
        if self.unique_tokens < 10 * (self.seq_len + 1):
            raise UserError(f"unique_tokens must hold ten windows of {self.seq_len + 1} tokens", arg="unique_tokens")
        return self


QUICK = dict(sizes=("32x1", "48x1"), unique_tokens=40_000, epochs=(1, 2, 4, 8), eval_tokens=16_384)


def _config(spec: RepetitionSpec, size: str, epochs: int, repeated: bool):
    data = {**asdict(spec.data), "unique_tokens": spec.unique_tokens if repeated else 0}
    return spec.run_config(size, epochs * spec.unique_tokens, data=data)


def _plan(spec: RepetitionSpec) -> dict:
    """run name -> (size, epochs, repeated?, config); the 1-epoch fresh run serves both curves."""
    out = {}
    for size in spec.sizes:
        shape = Shape.parse(size)
        for e in spec.epochs:
            for repeated in (False, True):
                if not (repeated and e == 1):
                    out[f"{shape.name}-{'rep' if repeated else 'fresh'}{e}"] = (size, e, repeated,
                                                                               _config(spec, size, e, repeated))
    return out


def run(spec: RepetitionSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    plan, rows, ds = _plan(spec), [], None
    with LabProgress(out, {name: p[-1] for name, p in plan.items()}, "repetition lab"):
        for name, (size, e, repeated, cfg) in plan.items():
            ds = ds or load_dataset(cfg, log=log)
            if e * spec.unique_tokens > ds.num_tokens("train"):
                raise UserError(f"{e} epochs of {spec.unique_tokens:,} tokens exceed the corpus's "
                                f"{ds.num_tokens('train'):,} fresh tokens; lower epochs or unique_tokens")
            _, summary = train_or_load(cfg, RunDir.under(out, name), ds, log)
            rows.append({"size": size, "epochs": e, "kind": "repeated" if repeated else "fresh",
                         "num_params": cfg.model.num_params_total, "D": summary["tokens"],
                         "U": spec.unique_tokens if repeated else math.nan, "loss": summary["final"]["val_loss"]})
            log(f"  {name:16s} {rows[-1]['num_params']:>8,} params  {e:>2} x {spec.unique_tokens:,} tokens  "
                f"val {rows[-1]['loss']:.4f}")
    runs = pd.DataFrame(rows)
    fit = fit_repetition(runs)
    summary = {"spec": asdict(spec), "runs": rows, "fit": fit, "seconds": time.perf_counter() - t0,
               "published_R_D_star": MUENNIGHOFF_REPETITION["R_D_star"]}
    figs = plot(runs, fit, spec, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def plot(runs: pd.DataFrame, fit: dict, spec: RepetitionSpec, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for size in spec.sizes:
        g = runs[runs["size"] == size]
        f = g[g["kind"] == "fresh"].sort_values("D")
        r = g[(g["kind"] == "repeated") | (g["epochs"] == 1)].sort_values("D")
        line = a.plot(f["D"], f["loss"], "o-", label=f"{Shape.parse(size).name} fresh")[0]
        a.plot(r["D"], r["loss"], "s--", color=line.get_color(), label=f"{Shape.parse(size).name} repeated")
    a.set(xscale="log", xlabel="training tokens D", ylabel="validation loss", title="fresh vs repeated data")
    a.legend(fontsize=7)
    rep = pd.DataFrame(fit["repeated"])
    b.scatter(rep["epochs"], rep["D_eff"] / rep["U"], label="measured D'/U")
    e = np.linspace(1, max(spec.epochs), 100)
    for r_star, label in ((fit["R_D_star"], f"fit R*_D = {fit['R_D_star']:.1f}"),
                          (MUENNIGHOFF_REPETITION["R_D_star"], "Muennighoff et al. R*_D = 15.4")):
        b.plot(e, effective_data(e, 1.0, r_star), label=label)
    b.plot(e, e, ":", color="grey", label="fresh data (D' = D)")
    b.set(xlabel="epochs over the unique tokens", ylabel="effective data D' / U", title="what repeats are worth")
    b.legend(fontsize=7)
    return [savefig(fig, out, "repetition")]


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    f = s["fit"]
    text = (f"R*_D = {f['R_D_star']:.1f} [{f['R_D_star_interval'][0]:.1f}, {f['R_D_star_interval'][1]:.1f}] "
            f"({f['level']:.0%} bootstrap; Muennighoff et al. 15.4 on C4 at 10M-9B parameters): a repeated token "
            f"is worth less than half a fresh one after {f['half_value_epochs']:.1f} epochs. Each repeated run's "
            "effective data is the fresh data that reaches its loss at its size.")
    rep = [{k: r[k] for k in ("size", "epochs", "loss", "D", "D_eff")} for r in f["repeated"]]
    write_report(out, "Repetition lab: the data wall", [("What repeated data is worth", text, figs, table_html(rep)),
                                                        ("Runs", "", [], table_html(s["runs"]))])


def headline(s: dict) -> str:
    f = s["fit"]
    return (f"R*_D = {f['R_D_star']:.1f} [{f['R_D_star_interval'][0]:.1f}, {f['R_D_star_interval'][1]:.1f}] "
            f"(Muennighoff et al.: 15.4); a repeat is worth half a fresh token after {f['half_value_epochs']:.1f} "
            f"epochs; {f['runs_used']} repeated runs used")
