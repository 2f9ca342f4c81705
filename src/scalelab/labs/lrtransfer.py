"""Learning-rate transfer: does the best learning rate move with width, and does muP hold it still?

The same family (2 layers, head_dim 16, untied embeddings, the offline corpus) at several widths is
trained at every learning rate of a grid, once in the standard parametrization (SP) and once in muP
(model.parametrization=mup, base width = the narrowest: Yang et al. 2022). Per (parametrization,
width) the optimum is the vertex of a parabola in log lr (laws/hyper.py). Under SP with Adam the
optimum is expected to fall roughly like 1/width; under muP to stay put.

SP's optima at several widths, and at one width for several token counts, then give a fitted law
lr* = c N^a D^b (N non-embedding), compared with DeepSeek LLM's lr*(C) and StepLaw's lr*(N, D) at our
points (an extrapolation of theirs by 3-4 orders of magnitude in N, said so), and the StepLaw grid
itself refitted (the public dataset steplaw-grid, fetched on first use; D_suspect rows left out). The fitted
law is written to lr_law.json, which `ladder plan --heuristics fitted:lr_law.json` reads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.errors import UserError
from scalelab.io import atomic_write_text
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    model_dict,
    pyplot,
    run_config,
    savefig,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.ladder.heuristics import DeepSeekHeuristics
from scalelab.laws.hyper import fit_power_law, grid_optimum, load_steplaw, refit_steplaw, steplaw_lr
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class LRTransferSpec(TrainSettings):
    widths: tuple[int, ...] = (32, 64, 128)
    n_layers: int = 2
    lrs: tuple[float, ...] = (2 ** -10, 2 ** -9, 2 ** -8, 2 ** -7, 2 ** -6, 2 ** -5, 2 ** -4)
    tokens: int = 400_000
    tokens_sweep: tuple[int, ...] = (150_000, 1_000_000)
    """extra token counts for SP at ``sweep_width``: the D in lr*(N, D)."""
    sweep_width: int = 64
    parametrizations: tuple[str, ...] = ("sp", "mup")
    tie_embeddings: bool = False
    """untied by default: with one matrix for the embedding and the readout, muP's optimum did not
    transfer here (docs/LOG.md 2026-11-30), with two it did."""

    def validate(self) -> LRTransferSpec:
        if len(self.widths) < 2 or any(w % 16 or w < 16 for w in self.widths):
            raise UserError("widths: two or more multiples of 16 (head_dim 16), e.g. [32, 64, 128]", arg="widths")
        if len(self.lrs) < 3 or min(self.lrs) <= 0:
            raise UserError("lrs: three or more positive learning rates", arg="lrs")
        if set(self.parametrizations) - {"sp", "mup"} or not self.parametrizations:
            raise UserError("parametrizations: sp and/or mup", arg="parametrizations")
        if self.tokens_sweep and self.sweep_width not in self.widths:
            raise UserError(f"sweep_width must be one of widths {list(self.widths)}", arg="sweep_width")
        return self


QUICK = dict(widths=(32, 64), lrs=(2 ** -9, 2 ** -7, 2 ** -5), tokens=60_000, tokens_sweep=(30_000,),
             sweep_width=32, eval_tokens=8_192)


def _plan(spec: LRTransferSpec) -> dict:
    """name -> (parametrization, width, tokens, lr, RunConfig)."""
    points = [(p, w, spec.tokens) for p in spec.parametrizations for w in spec.widths]
    points += [("sp", spec.sweep_width, d) for d in spec.tokens_sweep if "sp" in spec.parametrizations]
    out = {}
    for p, w, d in points:
        mup = {"parametrization": "mup", "mup_base_width": min(spec.widths)} if p == "mup" else {}
        model = model_dict(Shape(w, spec.n_layers), max_seq_len=spec.seq_len, vocab_size=spec.vocab_size,
                           tie_embeddings=spec.tie_embeddings, **mup)
        for lr in spec.lrs:
            cfg = run_config(model, d, lr, spec.batch_size, spec.seq_len, spec.seed, data=asdict(spec.data),
                             eval_tokens=spec.eval_tokens)
            out[f"{p}-d{w}-D{d // 1000}k-lr{lr:.2e}{'-tied' if spec.tie_embeddings else ''}"] = (p, w, d, lr, cfg)
    return out


def run(spec: LRTransferSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    plan, rows, ds = _plan(spec), [], None
    with LabProgress(out, {n: p[-1] for n, p in plan.items()}, "learning-rate transfer lab"):
        for name, (p, w, d, lr, cfg) in plan.items():
            ds = ds or load_dataset(cfg, log=log)
            _, s = train_or_load(cfg, RunDir.under(out, name), ds, log)
            loss = s["final"].get("val_loss", math.nan)
            rows.append({"parametrization": p, "width": w, "planned_tokens": d, "tokens": s["tokens"], "lr": lr,
                         "val_loss": loss,
                         "N": s["num_params_total"], "N_non_embedding": s["num_params_non_embedding"]})
    runs = pd.DataFrame(rows)
    optima = _optima(runs)
    summary = {"spec": asdict(spec), "runs": rows, "optima": optima.to_dict("records"),
               "drift": _drift(optima, spec.tokens), **_laws(optima, spec)}
    for o in summary["optima"]:
        log(f"  {o['parametrization']:3s} d_model {o['width']:3d}, {o['tokens']:>9,} tokens: lr* {o['lr_opt']:.2e} "
            f"(loss {o['loss_opt']:.3f}{', at the grid edge' if o['at_edge'] else ''})")
    law_text = _law_text(summary)
    log(law_text)
    summary["seconds"] = time.perf_counter() - t0
    if summary["fitted_lr_law"]:  # what `ladder plan --heuristics fitted:FILE` reads
        atomic_write_text(out / "lr_law.json", json.dumps({"lr_law": summary["fitted_lr_law"],
                                                           "source": str(out / "summary.json")}, indent=2))
    write_summary(out, summary)
    figs = plot(runs, optima, summary, out)
    write_report(out, "Learning-rate transfer lab", [
        ("The optimum across widths: SP vs muP", headline(summary), figs, table_html(summary["optima"])),
        ("The lr law against DeepSeek's and StepLaw's", law_text, [], table_html(summary["law_points"]))])
    return summary


def _optima(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (p, w, d), g in runs.groupby(["parametrization", "width", "planned_tokens"]):
        o = grid_optimum(g["lr"], g["val_loss"])
        rows.append({"parametrization": p, "width": w, "planned_tokens": d, "tokens": int(g["tokens"].iloc[0]),
                     "N": int(g["N"].iloc[0]),
                     "N_non_embedding": int(g["N_non_embedding"].iloc[0]), "lr_opt": o["value"],
                     "loss_opt": o["loss"], "at_edge": o["at_edge"],
                     "diverged": int((~np.isfinite(g["val_loss"])).sum())})
    return pd.DataFrame(rows)


def _drift(optima: pd.DataFrame, tokens: int) -> dict:
    """Per parametrization: lr* at the widest over lr* at the narrowest width (main token count), and
    the slope of ln lr* against ln width (SP with Adam: about -1 expected; muP: 0)."""
    out = {}
    for p, g in optima[optima["planned_tokens"] == tokens].groupby("parametrization"):
        g = g.sort_values("width")
        ok = g[np.isfinite(g["lr_opt"])]
        out[p] = {"ratio_widest_to_narrowest": float(ok["lr_opt"].iloc[-1] / ok["lr_opt"].iloc[0]),
                  "slope_vs_width": float(np.polyfit(np.log(ok["width"]), np.log(ok["lr_opt"]), 1)[0]),
                  "any_at_edge": bool(g["at_edge"].any())}
    return out


def _laws(optima: pd.DataFrame, spec: LRTransferSpec) -> dict:
    sp = optima[(optima["parametrization"] == "sp") & ~optima["at_edge"] & np.isfinite(optima["lr_opt"])]
    law = fit_power_law(sp["lr_opt"], N=sp["N_non_embedding"], D=sp["tokens"]) if len(sp) >= 4 else None
    points = []
    for r in sp.to_dict("records"):
        C = 6.0 * r["N"] * r["tokens"]
        points.append({"width": r["width"], "N_non_embedding": r["N_non_embedding"], "tokens": r["tokens"],
                       "lr_opt": r["lr_opt"], "fitted": law.predict(N=r["N_non_embedding"], D=r["tokens"]) if law
                       else math.nan, "deepseek": DeepSeekHeuristics().lr(C),
                       "steplaw": steplaw_lr(r["N_non_embedding"], r["tokens"])})
    fitted = {"coef": law.coef, "n_exp": law.exps["N"], "d_exp": law.exps["D"], "n": "non_embedding",
              "rmse_log": law.rmse_log, "points": law.n_points} if law else None
    return {"fitted_lr_law": fitted, "law_points": points,
            "steplaw_refit": refit_steplaw(load_steplaw())}


def _law_text(s: dict) -> str:
    f, st = s["fitted_lr_law"], s["steplaw_refit"]
    pts = s["law_points"]
    if not f:
        return "Too few interior SP optima to fit lr*(N, D) (each needs a grid minimum with a neighbour each side)."
    err = {k: float(np.exp(np.mean(np.abs(np.log([p[k] / p["lr_opt"] for p in pts]))))) for k in
           ("deepseek", "steplaw")}
    return (f"Fitted on SP's interior optima: lr* = {f['coef']:.3g} N^{f['n_exp']:+.3f} D^{f['d_exp']:+.3f} "
            f"(N non-embedding; rmse {f['rmse_log']:.2f} in ln over {f['points']} points). StepLaw publishes "
            f"N^-0.713 D^+0.307; its public grid refitted here ({st['cells']} cells, D_suspect rows out) gives "
            f"N^{st['lr']['exps']['N']:+.3f} D^{st['lr']['exps']['D']:+.3f}, batch D^{st['batch']['exps']['D']:+.3f} "
            f"(published 0.571). At our points DeepSeek's lr*(C) is off by a factor {err['deepseek']:.2f} on "
            f"average and StepLaw's by {err['steplaw']:.2f}: both extrapolated from 1e8-1e9 parameters to ours.")


def plot(runs: pd.DataFrame, optima: pd.DataFrame, s: dict, out: Path) -> list[Path]:
    plt = pyplot()
    pars = sorted(runs["parametrization"].unique(), key=lambda p: p != "sp")
    fig, axes = plt.subplots(1, len(pars) + 1, figsize=(5 * (len(pars) + 1), 4))
    main = runs["planned_tokens"] == s["spec"]["tokens"]
    opt = optima[optima["planned_tokens"] == s["spec"]["tokens"]].set_index(["parametrization", "width"])["lr_opt"]
    for ax, p in zip(axes, pars):
        for w, g in runs[main & (runs["parametrization"] == p)].groupby("width"):
            g = g.sort_values("lr")
            line = ax.plot(g["lr"], g["val_loss"], "o-", label=f"d_model {w}")[0]
            ax.axvline(opt[(p, w)], color=line.get_color(), ls=":", lw=0.8)
        ax.set(xscale="log", xlabel="learning rate", ylabel="validation loss", title=p.upper())
        lo = runs[main & (runs["parametrization"] == p)]["val_loss"].min()
        ax.set_ylim(lo - 0.05, lo + 1.0)
        ax.legend(fontsize=7)
    ax = axes[-1]
    pts = s["law_points"]
    if pts:
        n = np.array([p["N_non_embedding"] for p in pts])
        ax.plot(n, [p["lr_opt"] for p in pts], "ko", label="measured optimum (SP)")
        for key, marker in (("fitted", "x"), ("deepseek", "s"), ("steplaw", "^")):
            ax.plot(n, [p[key] for p in pts], marker, ls="none", mfc="none", label=f"{key}'s lr* at the same (N, D)")
    ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters", ylabel="lr*", title="lr* laws")
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    fig.tight_layout()
    ax.legend(fontsize=7)
    return [savefig(fig, out, "lr_transfer")]


def headline(s: dict) -> str:
    edge = "; an optimum at the grid edge"
    parts = [f"{p.upper()}: lr* x{d['ratio_widest_to_narrowest']:.2f} from narrowest to widest "
             f"(slope {d['slope_vs_width']:+.2f} in ln width{edge if d['any_at_edge'] else ''})"
             for p, d in s["drift"].items()]
    return "; ".join(parts)
