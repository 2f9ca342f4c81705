"""`scalelab fit` and `scalelab predict`."""

from __future__ import annotations

import warnings

import numpy as np

from scalelab.cli.args import level, non_negative_int, positive, positive_int
from scalelab.cli.output import print_json, table, warn
from scalelab.errors import UserError

# --example NAME: a public dataset (fetched on first use) and how many highest-loss points its paper drops
EXAMPLES = {"chinchilla": ("chinchilla-epoch", 5)}


def _table(title: str, rows: list[tuple]) -> None:
    table(title, ["quantity", "value", "interval"], rows)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def _load_fit_table(a):
    from scalelab.laws.table import load_table

    if a.example:
        if a.example not in EXAMPLES:
            raise UserError(f"--example must be one of {sorted(EXAMPLES)}")
        from scalelab import datasets

        name, drop = EXAMPLES[a.example]
        return load_table(str(datasets.table_path(name)), params=a.params, drop_highest_loss=drop)
    if a.table:
        return load_table(a.table, params=a.params, drop_highest_loss=a.drop_highest_loss,
                          exclude_flagged=a.exclude_flagged, include_holdout=a.include_holdout)
    raise UserError("give a TABLE.csv to fit, or --example chinchilla")


def _custom(a) -> bool:
    """A single form with the fitting flags given: the published approach 3, not a back-tested method."""
    return any(v is not None for v in (a.form, a.objective, a.optimizer)) or a.all_starts


def _fit_law(a, table):
    from dataclasses import replace

    from scalelab.laws.fitting import fit, fit_approach3
    from scalelab.laws.methods import DEFAULT_METHOD, get_method
    from scalelab.laws.selection import choose_form

    if a.approach != 3:
        return fit(table, approach=a.approach, bootstrap=a.bootstrap or 0, seed=a.seed), None
    if not _custom(a):
        from scalelab.laws.alloc_methods import attach_allocation

        method = get_method(a.method or DEFAULT_METHOD, arg="method")
        if a.bootstrap is not None:
            method = replace(method, bootstrap=a.bootstrap)
        law = replace(method, seed=a.seed).fit(table)
        return attach_allocation(law, table, seed=a.seed, bootstrap=a.bootstrap), None
    if a.method:
        raise UserError("--method picks a back-tested method; leave out --form/--objective/--optimizer/--all-starts "
                        "with it", arg="method")
    form, ranking = (a.form or "chinchilla"), None
    if form == "auto":
        form, ranking = choose_form(table)
    law = fit_approach3(table, optimizer=a.optimizer or "lbfgs", form=form, bootstrap=a.bootstrap or 0, seed=a.seed,
                        top_starts=None if a.all_starts else 32, objective=a.objective or "huber")
    return law, ranking


def _fit_rows(law, summary: dict, table) -> list[tuple]:
    ci = summary.get("ci", {})
    rows = []
    if law.form == "ensemble":
        for m in law.params["members"]:
            rows += [(f"{m['method']}: {k}", _fmt(v), "") for k, v in m["params"].items()]
    else:
        for k in list(law.params) + (["a", "b"] if "a" in summary and "a" not in law.params else []):
            lo_hi = ci.get(k)
            rows.append((k, _fmt(summary[k]), f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else ""))
    rows.append(("points", len(table), ""))
    if law.approach == "2":
        for o in law.info["optima"]:
            rows.append((f"N_opt @ C={o['C']:.3g}", _fmt(o["N_opt"]), "edge!" if o["edge"] else ""))
    return rows


def cmd_fit(a) -> int:
    if a.mixture:
        from scalelab.cli.mixture import cmd_fit_mixture

        return cmd_fit_mixture(a)
    if a.curves:
        from scalelab.cli.curves import cmd_fit_curves

        return cmd_fit_curves(a)
    if a.schedules:
        raise UserError("--schedules goes with --curves (a curve table's per-step learning rates)")
    if a.metric is not None or a.via is not None:
        from scalelab.cli.task_laws import cmd_fit_tasks

        return cmd_fit_tasks(a)
    table = _load_fit_table(a)
    table = table.finals() if a.approach != 1 else table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law, ranking = _fit_law(a, table)
    if ranking:
        law.info["form_ranking"] = ranking
    if a.out:
        law.save(a.out)
    summary = law.summary(a.level)
    if a.json:
        print_json(summary)
        return 0
    for w in sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)}):  # not numpy's noise
        print(f"warning: {w}")
    for note in table.notes:
        if note.startswith(("excluded ", "left out ")):
            print(note)
    how = f"method {law.info['method']}" if "method" in law.info and law.approach == "3" and not _custom(a) \
        else f"{law.form}"
    _table(f"approach {law.approach} fit ({how}, N = {table.param_convention} params)",
           _fit_rows(law, summary, table))
    if "calibration" in law.info:
        c = law.info["calibration"]
        print(f"forecast intervals: bootstrap ({len(law.samples)} resamples) widened by "
              f"{c['sigma_per_decade']:.4f} in log loss per decade of compute past the largest fitted run "
              f"(C = {c['C_max_fitted']:.3g}); calibrated on the back-test")
    alloc = law.info.get("allocation")
    if alloc:
        print(f"N* and D* (`predict --compute`): allocation method {alloc['method']}, the allocation back-test's "
              f"choice; the loss method is {law.info['method']}")
    if ranking:
        err = lambda v: "too few runs below the held-out budgets to fit" if np.isnan(v) else f"{v:.2%}"  # noqa: E731
        print("form ranking by leave-largest-out error: " +
              ", ".join(f"{r['form']} {err(r['mean_abs_relative_error'])}" for r in ranking))
    if a.out:
        print(f"wrote {a.out}")
    return 0


def cmd_predict(a) -> int:
    from scalelab.io import json_kind
    from scalelab.laws import curve_law, mixture, tasks
    from scalelab.laws.published import get_law

    kind = json_kind(a.law)  # a task forecast, a curve fit or a mixture fit has its own predict
    if kind == tasks.KIND:
        from scalelab.cli.task_laws import cmd_predict_tasks

        return cmd_predict_tasks(a)
    if kind == curve_law.KIND:
        from scalelab.cli.curves import cmd_predict_curves

        return cmd_predict_curves(a)
    if kind == mixture.KIND:
        from scalelab.cli.mixture import cmd_predict_mixture

        return cmd_predict_mixture(a)
    if a.mixture or a.target:
        raise UserError(f"--mixture and --target forecast a mixture; {a.law} is not a mixture fit (`scalelab fit "
                        f"RUNS.csv --mixture --out FIT.json` writes one)")
    if a.schedule or a.steps:
        raise UserError(f"--schedule and --steps forecast a curve; {a.law} is not a curve fit (`scalelab fit "
                        f"CURVES.csv --curves --out FIT.json` writes one)")
    from scalelab.laws.ranges import compute_warning, unique_tokens_warning

    law = get_law(a.law)
    if a.compute is not None and (a.params is not None or a.tokens is not None or a.unique_tokens is not None):
        raise UserError("give --compute C (for N*, D*) or --params N --tokens D [--unique-tokens U] (for a loss), "
                        "not both; a capped allocation is `scalelab plan --compute C --unique-tokens U`")
    C = a.compute or 6.0 * (a.params or 0) * (a.tokens or 0)  # the compute the question is about
    warnings_ = [compute_warning(law, C)]
    if a.compute is not None:
        from scalelab.laws.alloc_methods import allocation_forecast

        out = allocation_forecast(law, a.compute, a.level)
    else:
        if a.params is None or a.tokens is None:
            raise UserError("give --params N and --tokens D, or --compute C")
        if a.unique_tokens:
            warnings_.append(unique_tokens_warning(a.unique_tokens))
            loss = law.predict(a.params, a.tokens, unique_tokens=a.unique_tokens)
            out = {"N": a.params, "D": a.tokens, "loss": float(np.atleast_1d(loss)[0])}
        else:
            loss, lo, hi = law.predict_interval(a.params, a.tokens, a.level)
            out = {"N": a.params, "D": a.tokens, "loss": float(loss[0])}
            if lo is not None:
                out.update(loss_lo=float(lo[0]), loss_hi=float(hi[0]))
    c_fit = law.info.get("C_max_fitted")
    if c_fit:
        out["extrapolation_ratio"] = C / c_fit
    if "loss_lo" in out or "N_opt_lo" in out:
        out["level"] = a.level
    if "loss_lo" in out:
        cal = law.info.get("calibration")
        out["loss_interval"] = ("bootstrap + extrapolation (calibrated on the loss back-test)" if cal
                                else "bootstrap only (not calibrated)")
    out["law"] = a.law
    out["warnings"] = [w for w in warnings_ if w]
    warn(out["warnings"])
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
        for what, key in (("loss", "loss_interval"), (f"N*, D* ({out.get('allocation_method')})",
                                                       "allocation_interval")):
            if key in out:
                print(f"{a.level:.0%} interval of {what}: {out[key]}")
        if out.get("extrapolation_ratio"):
            print(f"extrapolation: {out['extrapolation_ratio']:.3g}x the largest fitted compute")
    return 0


def _dataset_table(res: dict, pct) -> None:
    by = res["by_dataset"]
    names = list(dict.fromkeys(r["dataset"] for r in by))
    untouched = {r["dataset"] for r in by if r["untouched"]}
    rows = []
    for m in dict.fromkeys(r["method"] for r in by):
        cell = {r["dataset"]: r["median_abs_error"] for r in by if r["method"] == m}
        tuned = [cell[d] for d in names if d in cell and d not in untouched]
        rows.append((m, *[pct(cell.get(d)) for d in names], pct(float(np.median(tuned)) if tuned else None)))
    table("back-test: median |error| of held-out losses by dataset (* untouched: never tuned on)",
          ["method", *[d + ("*" if d in untouched else "") for d in names], "median (tuned-on)"], rows)


def cmd_backtest(a) -> int:
    if a.allocation:
        from scalelab.cli.allocation import cmd_backtest_allocation

        return cmd_backtest_allocation(a)
    if a.mixtures:
        from scalelab.cli.mixture import cmd_backtest_mixtures

        return cmd_backtest_mixtures(a)
    if a.curves:
        from scalelab.cli.curves import cmd_backtest_curves

        return cmd_backtest_curves(a)
    if a.tasks:
        from scalelab.cli.task_laws import cmd_backtest_tasks

        return cmd_backtest_tasks(a)
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
    if a.html:
        from scalelab.report.backtest import write_backtest_page

        write_backtest_page(res, a.html)
    if a.json:
        print_json({k: v for k, v in res.items() if k != "points"})
        return 0
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    if a.by_split:
        table(f"back-test by split ({a.level:.0%} intervals): median |error| (worst)",
              ["dataset", "ratio", "fitted points", "method", "held out", "median |err|", "worst", "coverage"],
              [(r["dataset"], f"{r['split_ratio']:.1f}x", r["n_train"], r["method"], r["points"],
                pct(r["median_abs_error"]), pct(r["worst_abs_error"]), pct(r["coverage"])) for r in res["by_split"]])
    _dataset_table(res, pct)
    table(f"back-test summary over held-out points ({a.level:.0%} intervals)",
          ["method", "data", "points", "median |err|", "worst", "coverage", "median width", "median ratio"],
          [(r["method"], r["data"], r["points"], pct(r["median_abs_error"]), pct(r["worst_abs_error"]),
            pct(r["coverage"]), pct(r["median_rel_width"]), f"{r['median_ratio']:.1f}x") for r in res["summary"]])
    failed = [p for p in res["points"] if "error" in p]
    if failed:
        print(f"{len(failed)} fits failed: " + "; ".join(f"{p['dataset']} {p['method']}: {p['error']}"
                                                           for p in failed[:3]))
    for path in (a.out, a.html):
        if path:
            print(f"wrote {path}")
    return 0


def register(sub) -> None:
    _register_fit(sub)
    _register_predict(sub)
    _register_backtest(sub)


def _register_fit(sub) -> None:
    f = sub.add_parser("fit", help="fit a scaling law to a table of runs (a curve law with --curves, a mixture "
                                   "law with --mixture)", description=(
        "Fit a scaling law. TABLE has columns N, D (or C), loss; aliases params, tokens, flops. "
        "Approach 3 fits L = E + A/N^alpha + B/D^beta (Huber in log space, L-BFGS from the "
        "Chinchilla grid); approach 2 fits IsoFLOP parabolas; approach 1 uses training curves."))
    f.add_argument("table", nargs="?",
                   help="a run table (.csv or .parquet), a curve table with --curves, a mixture table with --mixture")
    f.add_argument("--approach", type=int, default=3, choices=[1, 2, 3],
                   help="Hoffmann et al.'s approach: 1 (envelope of curves), 2 (IsoFLOP minima), 3 (parametric fit; "
                        "default)")
    f.add_argument("--method", default=None,
                   help="a back-tested method (`scalelab backtest`); default: the suite's winner, 'ensemble'; with "
                        "--curves: momentum-q (default), multi-power-q, momentum or multi-power")
    f.add_argument("--form", default=None,
                   choices=["chinchilla", "kaplan", "overtraining", "compute", "auto"],
                   help="fit one law form instead (approach 3 as published); auto = best by leave-largest-out")
    f.add_argument("--optimizer", default=None, choices=["lbfgs", "varpro"], help="with --form (default lbfgs)")
    f.add_argument("--objective", default=None, choices=["huber", "huber-likelihood"],
                   help="with --form (default huber)")
    f.add_argument("--all-starts", action="store_true",
                   help="run L-BFGS from every grid start (exactly as published; slower)")
    f.add_argument("--bootstrap", type=non_negative_int, default=None, metavar="K",
                   help="bootstrap resamples for intervals (default: the method's, 50; 0 with --form)")
    f.add_argument("--level", type=level, default=0.9, help="interval level (default 0.9)")
    f.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed (default 0)")
    f.add_argument("--params", default=None, choices=["total", "non_embedding"],
                   help="which parameter count is N when the table has both")
    f.add_argument("--drop-highest-loss", type=non_negative_int, default=0, metavar="K",
                   help="leave out the K highest-loss runs (Besiroglu et al. drop 5 of Chinchilla's)")
    f.add_argument("--exclude-flagged", action="store_true",
                   help="leave out the rungs the ladder's quality checks flagged (the exported table's quality "
                        "column; `scalelab ladder status` says why); each one left out is printed")
    f.add_argument("--include-holdout", action="store_true",
                   help="fit the rows a holdout column marks too (left out by default: `ladder export` marks the "
                        "runs kept to check the forecast)")
    f.add_argument("--example", default=None,
                   help="fit a public example (fetched on first use): chinchilla (or pythia-tasks with --metric)")
    f.add_argument("--metric", default=None, metavar="COL",
                   help="forecast this task metric column (accuracy, exact match ...: fractions in [0, 1]); "
                        "one fit per value of a `task` column")
    f.add_argument("--via", default=None, metavar="COL",
                   help="with --metric: the intermediate task-loss column (bpb or NLL of the answer); "
                        "without it the metric is fitted directly")
    f.add_argument("--curves", action="store_true",
                   help="TABLE is a curve table (run, N, step, tokens, lr, loss: every logged point with its learning "
                        "rate); fit a curve law per size (--method momentum-q (default), multi-power-q, momentum, "
                        "multi-power)")
    f.add_argument("--mixture", action="store_true",
                   help="TABLE is a mixture table (w_<domain> proportions, loss_<domain> losses, optionally N, D); "
                        "fit a mixture law (--method regmix (default), dml, bimix or linear)")
    f.add_argument("--across", default="trend", choices=["trend", "joint"],
                   help="with --curves: how the law reaches another size: each parameter's trend in log N "
                        "(default), or one joint fit with the loss floor E + A_N/N^alpha_N (3 sizes or more)")
    f.add_argument("--schedules", default=None, metavar="FILE",
                   help="with --curves: each run's learning rate at every step (columns run, step, lr)")
    f.add_argument("--json", action="store_true")
    f.add_argument("--out", default=None, help="write the fit (with bootstrap samples) as JSON")
    f.set_defaults(fn=cmd_fit)



def _register_predict(sub) -> None:
    p = sub.add_parser("predict", help="forecast from a fit: a loss, N* and D*, a curve under a schedule, or a "
                                       "mixture's losses",
                       description="LAW is a fit file from `scalelab fit --out` or a built-in: kaplan2020, "
                                   "hoffmann2022, hoffmann2022-unrounded, besiroglu2024, muennighoff2023.")
    p.add_argument("law", help="a fit file (`scalelab fit --out`), a curve or mixture fit, or a built-in law name")
    p.add_argument("--params", type=positive, default=None, help="N, parameters")
    p.add_argument("--tokens", type=positive, default=None, help="D, training tokens")
    p.add_argument("--unique-tokens", type=positive, default=None, help="unique tokens (muennighoff2023)")
    p.add_argument("--compute", type=positive, default=None, help="C, training FLOPs: gives N*, D*")
    p.add_argument("--schedule", default=None, metavar="SPEC",
                   help="curve fits: the learning-rate schedule (default cosine), KIND[:key=value,...] (constant; "
                        "cosine:min=0.1; wsd:decay=0.2,shape=linear|cosine|sqrt|exp,min=0.1 or decay_start=STEP; "
                        "two-stage:at=0.8,ratio=0.1; every kind takes warmup=STEPS) or a CSV of per-step rates "
                        "(columns step, lr)")
    p.add_argument("--steps", type=positive_int, default=None, help="curve fits: the run's optimizer steps")
    p.add_argument("--tokens-per-step", type=positive, default=None,
                   help="curve fits: tokens per optimizer step (default: the fitted runs')")
    p.add_argument("--lr", type=positive, default=None, help="curve fits: the peak learning rate (default: the "
                                                             "fitted runs' peak)")
    p.add_argument("--mixture", default=None, metavar="D=P,...",
                   help="mixture fits: the proportions to forecast, e.g. web=0.6,code=0.4")
    p.add_argument("--target", default=None, metavar="T",
                   help="mixture fits: the target, the mean of the domain losses (default), a domain, or "
                        "DOMAIN=WEIGHT pairs")
    p.add_argument("--level", type=level, default=0.9, help="interval level, in (0, 1) (default 0.9)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_predict)



def _register_backtest(sub) -> None:
    b = sub.add_parser("backtest", help="score forecasting methods on public data they never saw (losses, "
                                        "allocation, curves, mixtures, tasks)",
                       description="Each dataset's runs are cut by compute; every method is fitted below a cut and "
                                   "predicts the final loss of the runs above it (extrapolation ratios near 4x, 16x, "
                                   "64x). Datasets: chinchilla, misfitting, misfitting-curves, opt, scalelab-demo; "
                                   "untouched (never tuned on): gpt3, datablations. The public ones are "
                                   "fetched on first use from their pinned sources: `scalelab data list`.")
    b.add_argument("--datasets", default=None, help="comma-separated (default: all)")
    b.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    b.add_argument("--level", type=level, default=0.9, help="interval level (default 0.9)")
    b.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    b.add_argument("--by-split", action="store_true", help="also print every cut-off of every dataset")
    b.add_argument("--tasks", action="store_true",
                   help="back-test task-accuracy forecasts instead (Pythia 2.8B-12B from 70M-1.4B)")
    b.add_argument("--allocation", action="store_true",
                   help="back-test compute-optimal allocation instead: N* and D* at held-out budgets of public "
                        "IsoFLOP sweeps and of synthetic ladders drawn from known laws")
    b.add_argument("--mixtures", action="store_true",
                   help="score the mixture laws on RegMix's public runs (and BiMix's): rank correlation at 60M and "
                        "1B, error and coverage at 1M and with 16 target-size runs")
    b.add_argument("--curves", action="store_true",
                   help="back-test loss-curve laws instead (Multi-Power Law, annealing momentum): fitted on three "
                        "schedules of the Multi-Power Law's public curves, scored on six others")
    b.add_argument("--synthetic", type=non_negative_int, default=24, metavar="N",
                   help="with --allocation: synthetic ladders (default 24; seeds 16 and up are untouched)")
    b.add_argument("--json", action="store_true", help="print the summary, per-dataset and per-split tables as JSON")
    b.add_argument("--out", default=None, help="write everything, every held-out point included, as JSON")
    b.add_argument("--html", default=None, help="write a page with the back-test's figures (offline HTML)")
    b.set_defaults(fn=cmd_backtest)
