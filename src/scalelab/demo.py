"""`scalelab demo`: from compute budgets to a trained ladder, fitted laws, and a prediction for a run
four times bigger than any in the ladder, which is then trained and checked.

Everything lands in one directory:
    OUT/ladder.sqlite        every run's spec, status and metrics (the store)
    OUT/runs/<name>/         each run: config, metrics.jsonl, checkpoints
    OUT/runs.csv             the exported table (`scalelab fit OUT/runs.csv`)
    OUT/fit_approach3.json   fitted laws with bootstrap samples (`scalelab predict OUT/fit_approach3.json`)
    OUT/fit_approach2.json
    OUT/summary.json         the figures printed at the end
"""

from __future__ import annotations

import importlib.util
import math
import sysconfig
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from scalelab.config import DataConfig
from scalelab.errors import UserError
from scalelab.io import atomic_write_json
from scalelab.ladder.executors import run_ladder
from scalelab.ladder.plan import LadderSpec, Rung, family, make_rung, plan
from scalelab.ladder.progress import FlopsProgress
from scalelab.ladder.results import FIT_APPROACH2, FIT_APPROACH3, FIT_SELECTED, results_table
from scalelab.laws.fitting import fit_approach2, fit_approach3
from scalelab.laws.methods import DEFAULT_METHOD, get_method
from scalelab.laws.table import load_table
from scalelab.model.transformer import generate
from scalelab.report.html import write_report
from scalelab.train.data import load_dataset
from scalelab.train.rundir import RunDir
from scalelab.train.runner import load_run
from scalelab.ui import console

DEMO = LadderSpec(budgets=(1e11, 3e11, 1e12), sizes_per_budget=4, span=16.0, tokens_per_param=40.0,
                  vocab_size=512, seq_len=128, min_width=16, threads=1, eval_tokens=16384, evals_per_run=2,
                  data=DataConfig(tokenizer_train_bytes=4_000_000))
QUICK = replace(DEMO, budgets=(3e10, 6e10, 1.2e11), eval_tokens=8192)  # half the tokens of (3e10, 1e11, 3e11)
# `demo --gpu` (#41) on one CUDA device: 12 rungs of 1.4-14M parameters (5.6e15 FLOPs in all, then a held-out run
# at 4x the largest budget), meant for a few minutes of bf16 training; data: every Python source and text file
# installed beside the interpreter (`installed_python`), a corpus any offline GPU machine has. The budgets keep
# the longest rung (121M tokens) near one pass over such a corpus: 411 MB of files here gave 3.2 bytes per token
# at vocab 4096 (~126M tokens; 40 MB built in 30 s on 2 cores, docs/LOG.md). Not yet run on a GPU: the first GPU
# session sets the budgets from its measured speed (`--budgets`). Without CUDA the same command trains its
# toy-scale twin, the quick demo's ladder, on the CPU (tested).
GPU_DEMO = replace(DEMO, budgets=(1e14, 3e14, 1e15), span=8.0, tokens_per_param=20.0, vocab_size=4096, seq_len=512,
                   head_dim=64, width_step=64, min_width=128, threads=4, eval_tokens=1 << 20, evals_per_run=4,
                   data=DataConfig(tokenizer_train_bytes=20_000_000))  # corpus: `installed_python()`
HOLDOUT_FACTOR = 4.0
TARGETS = (1e15, 1e18, 1e21)


def holdout_rung(spec: LadderSpec, n_star: float, C: float) -> Rung:
    """The family shape nearest the compute-optimal N*(C), trained on D = C / (6N)."""
    c = min(family(spec), key=lambda m: abs(math.log(m.num_params_total / n_star)))
    return make_rung(spec, c, C, prefix="holdout-")


def demo_spec(quick: bool = False, gpu: bool = False, budgets: tuple[float, ...] | None = None) -> LadderSpec:
    """The demo's ladder: DEMO, QUICK, or with ``gpu`` GPU_DEMO where CUDA is (its corpus resolved to this
    machine's installed Python files) and QUICK, its toy-scale twin, where it is not; ``budgets`` replaces the
    ladder's budgets."""
    spec = QUICK if quick else DEMO
    if gpu and torch.cuda.is_available():
        spec = replace(GPU_DEMO, data=replace(GPU_DEMO.data, corpus=str(installed_python())))
    elif gpu:
        spec = QUICK
    spec = replace(spec, budgets=tuple(budgets)) if budgets else spec
    if importlib.util.find_spec("tensorboard") is not None:  # `tensorboard --logdir OUT/runs` shows every rung
        spec = replace(spec, loggers=("tensorboard",))
    return spec.validate()


def installed_python() -> Path:
    """The folder of this interpreter's installed packages (site-packages: torch, numpy and the rest, all
    their .py, .md and .txt files), the GPU demo's corpus."""
    return Path(sysconfig.get_paths()["purelib"])


def run_demo(out_dir: str | Path, quick: bool = False, parallel: int = 2, gpu: bool = False,
             budgets: tuple[float, ...] | None = None) -> dict:
    t0 = time.time()
    out = Path(out_dir)
    con = console()
    spec = demo_spec(quick, gpu, budgets)
    if gpu and not torch.cuda.is_available():
        con.print("no CUDA device: `demo --gpu` trains its toy-scale twin (the quick demo's ladder) on the CPU")
    rungs = plan(spec)
    C_hold = HOLDOUT_FACTOR * max(spec.budgets)
    corpus = "Python standard library" if spec.data.corpus == "stdlib" else spec.data.corpus
    con.print(f"[bold]scalelab demo[/]: {len(rungs)} runs at budgets "
              f"{', '.join(f'{b:.0e}' for b in spec.budgets)} FLOPs, then a held-out run at {C_hold:.0e} FLOPs\n"
              f"corpus: {corpus} (offline), byte-level BPE vocab {spec.vocab_size}, "
              f"context {spec.seq_len}; C = 6 N D, N = total parameters (tied embeddings); out: {out}")
    with FlopsProgress(out / "ladder.sqlite", rungs, C_hold, description="demo") as bar:
        store = run_ladder(spec, out, parallel=parallel)
        df = results_table(store)
        table = load_table(df[~df["holdout"]].reset_index(drop=True)).finals()
        law3, law2, law_sel, caught = _fit_laws(table, bootstrap=50 if spec.budgets == QUICK.budgets else 200)
        chosen = DEFAULT_METHOD
        alloc_law = law2 or law3
        law3.save(out / FIT_APPROACH3)
        if law2 is not None:
            law2.save(out / FIT_APPROACH2)
        law_sel.save(out / FIT_SELECTED)
        n_star = float(alloc_law.allocate(C_hold)["N_opt"][0])  # approach 2: straight from the IsoFLOP minima
        hold = holdout_rung(spec, n_star, C_hold)
        bar.add([hold])
        pred, (lo, hi), by_form = _predict_holdout(hold, table, law3, law_sel, chosen)
        store.set_meta("holdouts", [hold.name])
        run_ladder(replace(spec, threads=0), out, parallel=1, rungs=rungs + [hold], only=[hold.name])
        actual = [r for r in store.runs() if r["name"] == hold.name][0]["final_loss"]
    df = results_table(store)
    df.to_csv(out / "runs.csv", index=False)
    store.close()
    sample = _sample(RunDir.under(out, hold.name))
    corpus = _corpus_size(hold, rungs)
    rel = (actual - pred) / pred
    interior = {f"{o['C']:.3g}": not o["edge"] for o in law2.info["optima"]} if law2 else {}
    s3 = law3.summary()
    summary = {
        "runs": len(rungs) + 1, "ladder_runs": len(rungs), "budgets": list(spec.budgets),
        "conventions": {"flops": "C = 6 N D", "params": "total (tied embeddings)", "loss": "validation nats/token"},
        "fit": {"approach3": {k: s3[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b", "ci")},
                "approach2": ({"a": law2.params["a"], "b": law2.params["b"], "k": law2.params["k"], "ci": law2.ci(),
                               "optima": law2.info["optima"]} if law2 else None),
                "selection": {"method": "the back-tested default (scalelab backtest)", "chosen": chosen,
                              "law": law_sel.summary()}},
        "interior_minima": interior, "warnings": sorted({str(w.message) for w in caught}),
        "holdout": {"name": hold.name, "C": C_hold, "N": hold.N, "D": hold.D, "law": chosen,
                    "predicted_loss": pred, "predicted_interval": [float(lo), float(hi)], "actual_loss": actual,
                    "relative_error": rel, "predicted_by_form": by_form,
                    "relative_error_by_form": {k: (actual - v) / v for k, v in by_form.items()}},
        "allocations": _allocations(alloc_law, law_sel),
        "sample": sample,
        "corpus": corpus,
    }

    report = write_report(out, out / "report.html", png_dir=out / "figures")
    summary["report"] = str(report)
    summary["wall_seconds"] = time.time() - t0
    atomic_write_json(out / "summary.json", summary)
    _print_summary(con, summary)
    return summary


def _predict_holdout(hold, table, law3, law_sel, chosen: str):
    """The selected law's prediction for the held-out run with its interval, and every form's."""
    pred, lo, hi = law_sel.predict_interval(hold.N, hold.D)
    pred, interval = float(pred[0]), (float(lo[0]), float(hi[0]))
    by_form = {chosen: pred}
    for form in ("chinchilla", "kaplan", "overtraining"):
        if form not in by_form:
            by_form[form] = float((law3 if form == "chinchilla" else fit_approach3(table, form=form))
                                  .predict(hold.N, hold.D))
    return pred, interval, by_form


def _allocations(alloc_law, law_sel) -> list[dict]:
    """N*, D* at the TARGETS budgets (with intervals) and the selected law's loss there."""
    rows = []
    for C in TARGETS:
        a = alloc_law.allocate_with_interval(C)
        row = {k: float(np.atleast_1d(v)[0]) for k, v in a.items() if v is not None}
        loss, lo, hi = law_sel.predict_interval(row["N_opt"], row["D_opt"])
        row["loss"], row["loss_lo"], row["loss_hi"] = float(loss[0]), float(lo[0]), float(hi[0])
        rows.append(row)
    return rows


def _fit_laws(table, bootstrap: int = 200):
    """Approach 3 (Chinchilla form), approach 2 (None when a budget has no valley), each with ``bootstrap``
    resamples (50 for the quick ladder, a first look: its 200 took ~10 of the quick demo's 80 s), and the
    default method, the back-test's winner, that makes the forecasts (its own 50 resamples, as calibrated).
    -> (law3, law2, forecast law, warnings caught)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law3 = fit_approach3(table, bootstrap=bootstrap, seed=0)  # Chinchilla form
        try:
            law2 = fit_approach2(table, bootstrap=bootstrap, seed=0)
        except UserError as e:  # no valley at some budget: allocate with approach 3 instead
            warnings.warn(f"approach 2 unavailable: {e}", stacklevel=2)
            law2 = None
        law_sel = get_method(DEFAULT_METHOD).fit(table)  # its 50 resamples: the interval was calibrated with 50
    return law3, law2, law_sel, caught


def _corpus_size(hold, rungs) -> dict:
    """The corpus's tokens (its cached shards' manifest) and how many times the longest run reads them."""
    ds = load_dataset(hold.config, log=lambda *a: None)
    train = ds.num_tokens("train")
    longest = max(r.D for r in [*rungs, hold])
    return {"corpus": hold.config.data.corpus, "train_tokens": train, "val_tokens": ds.num_tokens("val"),
            "longest_run_tokens": longest, "max_epochs": longest / train}


def _sample(run_dir: Path, prompt: str = "def ", tokens: int = 40) -> dict:
    """A few tokens from the held-out model: what a 4e12-FLOP model of Python looks like."""

    model, _, tok = load_run(run_dir)
    ids = torch.tensor([tok.encode(prompt).ids])
    out = generate(model, ids, tokens, temperature=0.8, top_k=40, generator=torch.Generator().manual_seed(0))
    return {"prompt": prompt, "temperature": 0.8, "text": tok.decode(out[0].tolist())}


def _print_summary(con, s: dict) -> None:
    from rich.table import Table

    f3, f2, h = s["fit"]["approach3"], s["fit"]["approach2"], s["holdout"]
    t = Table(title="fitted laws (90% bootstrap intervals)")
    t.add_column("parameter")
    t.add_column("approach 3", justify="right")
    t.add_column("approach 2", justify="right")
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        ci = f3["ci"].get(k)
        v3 = f"{f3[k]:.4g} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else f"{f3[k]:.4g}"
        v2 = ""
        if k in ("a", "b") and f2:
            c2 = f2["ci"].get(k)
            v2 = f"{f2[k]:.3f} [{c2[0]:.3f}, {c2[1]:.3f}]" if c2 else f"{f2[k]:.3f}"
        t.add_row(k, v3, v2)
    con.print(t)
    edges = [c for c, ok in s["interior_minima"].items() if not ok]
    con.print("IsoFLOP minima: " + ("interior at every budget" if not edges else f"at the edge for {edges}"))
    sel = s["fit"]["selection"]
    cal = sel["law"].get("calibration", {})
    con.print(f"forecasts use [bold]{sel['chosen']}[/], the method that won the back-test on public ladders "
              f"(`scalelab backtest`); intervals: bootstrap widened by {cal.get('sigma_per_decade', 0):.3f} "
              "log-loss per decade of extrapolation, calibrated there")
    t = Table(title=f"held-out run: {HOLDOUT_FACTOR:.0f}x the largest ladder budget, at approach 2's N*(C)")
    for col in ("C", "N", "D", "law", "predicted loss", "actual loss", "error"):
        t.add_column(col, justify="right")
    for form, p in h["predicted_by_form"].items():
        iv = f" [{h['predicted_interval'][0]:.4f}, {h['predicted_interval'][1]:.4f}]" if form == h["law"] else ""
        t.add_row(f"{h['C']:.3g}", f"{h['N']:,}", f"{h['D']:,}", form + (" (chosen)" if form == h["law"] else ""),
                  f"{p:.4f}{iv}", f"{h['actual_loss']:.4f}", f"{h['relative_error_by_form'][form]:+.2%}")
    con.print(t)
    src = "approach 2" if f2 else "approach 3"
    t = Table(title=f"compute-optimal allocation extrapolated from this ladder ({src}; loss from {h['law']})")
    for col in ("C (FLOPs)", "N*", "D*", "D*/N*", "loss"):
        t.add_column(col, justify="right")
    for a in s["allocations"]:
        t.add_row(f"{a['C']:.0e}", f"{a['N_opt']:.3g} [{a['N_opt_lo']:.2g}, {a['N_opt_hi']:.2g}]",
                  f"{a['D_opt']:.3g} [{a['D_opt_lo']:.2g}, {a['D_opt_hi']:.2g}]",
                  f"{a['tokens_per_param']:.1f}",
                  f"{a['loss']:.3f}" + (f" [{a['loss_lo']:.3f}, {a['loss_hi']:.3f}]" if "loss_lo" in a else ""))
    con.print(t)
    from rich.markup import escape

    c = s["corpus"]
    con.print(f"corpus {c['corpus']}: {c['train_tokens']:,} training tokens; the longest run reads "
              f"{c['longest_run_tokens']:,} ({c['max_epochs']:.2f} epochs)")
    con.print(f"sample from the held-out model (temperature 0.8): [dim]{escape(s['sample']['text'])!r}[/]")
    for w in s["warnings"]:
        con.print(f"[yellow]warning:[/] {w}")
    con.print(f"{s['runs']} runs in {s['wall_seconds'] / 60:.1f} min. Open {s['report']} (interactive, offline); "
              "figures/*.png|svg, summary.json, runs.csv, fit_*.json (try `scalelab predict <out>/fit_selected.json "
              "--compute 1e18`)" + (f"; curves: `tensorboard --logdir {Path(s['report']).parent / 'runs'}`"
                                    if importlib.util.find_spec("tensorboard") else ""))
