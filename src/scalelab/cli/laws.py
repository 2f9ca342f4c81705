"""`scalelab fit` and `scalelab predict`."""

from __future__ import annotations

import warnings
from importlib import resources

import numpy as np

from scalelab.cli.output import print_json, table
from scalelab.errors import UserError

EXAMPLES = {"chinchilla": ("chinchilla_besiroglu2024.csv", 5)}


def _table(title: str, rows: list[tuple]) -> None:
    table(title, ["quantity", "value", "interval"], rows)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def cmd_fit(a) -> int:
    from scalelab.laws.fitting import fit
    from scalelab.laws.selection import choose_form
    from scalelab.laws.table import load_table

    if a.example:
        if a.example not in EXAMPLES:
            raise UserError(f"--example must be one of {sorted(EXAMPLES)}")
        fname, drop = EXAMPLES[a.example]
        src = resources.files("scalelab") / "examples" / fname
        table = load_table(str(src), params=a.params, drop_highest_loss=drop)
    elif a.table:
        table = load_table(a.table, params=a.params, drop_highest_loss=a.drop_highest_loss)
    else:
        raise UserError("give a TABLE.csv to fit, or --example chinchilla")
    if a.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    table = table.finals() if a.approach != 1 else table
    ranking = None
    form = a.form
    if form == "auto":
        form, ranking = choose_form(table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if a.approach == 3:
            from scalelab.laws.fitting import fit_approach3

            law = fit_approach3(table, method=a.method, form=form, bootstrap=a.bootstrap, seed=a.seed,
                                top_starts=None if a.all_starts else 32, objective=a.objective)
        else:
            law = fit(table, approach=a.approach, bootstrap=a.bootstrap, seed=a.seed)
    if ranking:
        law.info["form_ranking"] = ranking
    if a.out:
        law.save(a.out)
    summary = law.summary(a.level)
    if a.json:
        print_json(summary)
    else:
        for w in caught:
            print(f"warning: {w.message}")
        ci = summary.get("ci", {})
        rows = []
        for k in list(law.params) + (["a", "b"] if "a" in summary and "a" not in law.params else []):
            lo_hi = ci.get(k)
            rows.append((k, _fmt(summary[k]), f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else ""))
        rows.append(("points", len(table), ""))
        if law.approach == "2":
            for o in law.info["optima"]:
                rows.append((f"N_opt @ C={o['C']:.3g}", _fmt(o["N_opt"]), "edge!" if o["edge"] else ""))
        _table(f"approach {law.approach} fit ({law.form}, N = {table.param_convention} params)", rows)
        if ranking:
            print("form ranking by leave-largest-out error: " +
                  ", ".join(f"{r['form']} {r['mean_abs_relative_error']:.2%}" for r in ranking))
        if a.out:
            print(f"wrote {a.out}")
    return 0


def cmd_predict(a) -> int:
    from scalelab.laws.published import get_law

    law = get_law(a.law)
    if a.compute is not None:
        if a.compute <= 0:
            raise UserError("--compute must be a positive number of FLOPs")
        r = law.allocate_with_interval(a.compute, level=a.level)
        out = {k: (float(np.atleast_1d(v)[0]) if v is not None else None) for k, v in r.items() if k != "C"}
        out["C"] = a.compute
        if out.get("loss") is None:
            out.pop("loss", None)
    else:
        if a.params is None or a.tokens is None:
            raise UserError("give --params N and --tokens D, or --compute C")
        if a.params <= 0 or a.tokens <= 0:
            raise UserError("--params and --tokens must be positive")
        kw = {"unique_tokens": a.unique_tokens} if a.unique_tokens else {}
        out = {"N": a.params, "D": a.tokens, "loss": float(np.atleast_1d(law.predict(a.params, a.tokens, **kw))[0])}
        samples = law.predict_samples(a.params, a.tokens)
        if samples is not None:
            lo, hi = law.interval(samples.reshape(len(samples), -1)[:, 0], a.level)
            out.update(loss_lo=float(lo), loss_hi=float(hi))
    out["law"] = a.law
    if a.json:
        print_json(out)
    else:
        rows = []
        for k in ("loss", "N_opt", "D_opt", "tokens_per_param"):
            if k in out:
                iv = f"[{_fmt(out[k + '_lo'])}, {_fmt(out[k + '_hi'])}]" if k + "_lo" in out else ""
                rows.append((k, _fmt(out[k]), iv))
        what = f"C = {a.compute:.3g} FLOPs" if a.compute else f"N = {a.params:.3g}, D = {a.tokens:.3g}"
        title = f"{a.law}: {what}"
        _table(title, rows)
    return 0


def cmd_backtest(a) -> int:
    from scalelab.laws.backtest import DATASETS, run_backtest
    from scalelab.laws.methods import METHODS, get_method

    datasets = [d.strip() for d in a.datasets.split(",")] if a.datasets else list(DATASETS)
    for d in datasets:
        if d not in DATASETS:
            raise UserError(f"--datasets: unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    methods = [get_method(m.strip()) for m in a.methods.split(",")] if a.methods else list(METHODS.values())
    res = run_backtest(methods, datasets, level=a.level, workers=a.workers)
    if a.out:
        from scalelab.io import atomic_write_json

        atomic_write_json(a.out, res)
    if a.json:
        print_json({k: v for k, v in res.items() if k != "points"})
        return 0
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    table(f"back-test by split ({a.level:.0%} intervals): median |error| (worst)",
          ["dataset", "ratio", "fitted points", "method", "held out", "median |err|", "worst", "coverage"],
          [(r["dataset"], f"{r['split_ratio']:.1f}x", r["n_train"], r["method"], r["points"],
            pct(r["median_abs_error"]), pct(r["worst_abs_error"]), pct(r["coverage"])) for r in res["by_split"]])
    table(f"back-test summary over held-out points ({a.level:.0%} intervals)",
          ["method", "data", "points", "median |err|", "worst", "coverage", "median width", "median ratio"],
          [(r["method"], r["data"], r["points"], pct(r["median_abs_error"]), pct(r["worst_abs_error"]),
            pct(r["coverage"]), pct(r["median_rel_width"]), f"{r['median_ratio']:.1f}x") for r in res["summary"]])
    failed = [p for p in res["points"] if "error" in p]
    if failed:
        print(f"{len(failed)} fits failed: " + "; ".join(f"{p['dataset']} {p['method']}: {p['error']}"
                                                           for p in failed[:3]))
    if a.out:
        print(f"wrote {a.out}")
    return 0


def register(sub) -> None:
    f = sub.add_parser("fit", help="fit a scaling law to a table of runs", description=(
        "Fit a scaling law. TABLE has columns N, D (or C), loss; aliases params, tokens, flops. "
        "Approach 3 fits L = E + A/N^alpha + B/D^beta (Huber in log space, L-BFGS from the "
        "Chinchilla grid); approach 2 fits IsoFLOP parabolas; approach 1 uses training curves."))
    f.add_argument("table", nargs="?")
    f.add_argument("--approach", type=int, default=3, choices=[1, 2, 3])
    f.add_argument("--form", default="chinchilla",
                   choices=["chinchilla", "kaplan", "overtraining", "compute", "auto"],
                   help="law form for approach 3; auto = best by leave-largest-out cross-validation")
    f.add_argument("--method", default="lbfgs", choices=["lbfgs", "varpro"])
    f.add_argument("--objective", default="huber", choices=["huber", "huber-likelihood"])
    f.add_argument("--all-starts", action="store_true",
                   help="run L-BFGS from every grid start (exactly as published; slower)")
    f.add_argument("--bootstrap", type=int, default=0, metavar="K", help="bootstrap resamples for intervals")
    f.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--params", default=None, choices=["total", "non_embedding"],
                   help="which parameter count is N when the table has both")
    f.add_argument("--drop-highest-loss", type=int, default=0, metavar="K")
    f.add_argument("--example", default=None, help="fit a shipped table: chinchilla")
    f.add_argument("--json", action="store_true")
    f.add_argument("--out", default=None, help="write the fit (with bootstrap samples) as JSON")
    f.set_defaults(fn=cmd_fit)

    p = sub.add_parser("predict", help="predict loss or the compute-optimal allocation from a law",
                       description="LAW is a fit file from `scalelab fit --out` or a built-in: kaplan2020, "
                                   "hoffmann2022, hoffmann2022-unrounded, besiroglu2024, muennighoff2023.")
    p.add_argument("law")
    p.add_argument("--params", type=float, default=None, help="N, parameters")
    p.add_argument("--tokens", type=float, default=None, help="D, training tokens")
    p.add_argument("--unique-tokens", type=float, default=None, help="unique tokens (muennighoff2023)")
    p.add_argument("--compute", type=float, default=None, help="C, training FLOPs: gives N*, D*")
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_predict)

    b = sub.add_parser("backtest", help="score fitting methods by predicting the largest runs of public ladders",
                       description="Each dataset's runs are cut by compute; every method is fitted below a cut and "
                                   "predicts the final loss of the runs above it (extrapolation ratios near 4x, 16x, "
                                   "64x). Datasets: chinchilla, misfitting, opt, scalelab-demo; untouched (never "
                                   "tuned on): gpt3, datablations. Sources: scalelab/examples/backtest/SOURCES.md.")
    b.add_argument("--datasets", default=None, help="comma-separated (default: all)")
    b.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    b.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    b.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    b.add_argument("--json", action="store_true", help="print the summary and per-split tables as JSON")
    b.add_argument("--out", default=None, help="write everything, every held-out point included, as JSON")
    b.set_defaults(fn=cmd_backtest)
