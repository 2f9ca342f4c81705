"""Loss curves: `scalelab fit --curves`, `scalelab predict CURVEFIT --schedule`, and `scalelab backtest --curves`
(curve laws fitted on three public schedules, scored on six they never saw)."""

from __future__ import annotations

import numpy as np

from scalelab.cli.args import method_names
from scalelab.cli.output import fit_written, print_json, save_and_print_json, table
from scalelab.errors import UserError


def cmd_backtest_curves(a) -> int:
    from scalelab.laws.backtest import map_tasks
    from scalelab.laws.curve_horizons import misfitting_groups, score_horizons
    from scalelab.laws.curves import FORMS, mpl_curves, score_across_sizes, score_curve_law

    forms = method_names(a.methods, FORMS, "curve law")
    curves = mpl_curves()
    rows = map_tasks(score_curve_law, [(f, m, curves[m], a.level) for f in forms for m in sorted(curves, key=_size)],
                     a.workers)
    for f in forms:  # across sizes: 25M and 100M's laws, each parameter's trend in N, scored at 400M
        fitted = {r["model"]: r["params"] for r in rows if r["form"] == f and r["model"] in ("25M", "100M")}
        rows += score_across_sizes(f, fitted, "400M", curves["400M"], a.level)
    groups = misfitting_groups()
    rows += map_tasks(score_horizons, [(f, k, cs, a.level) for f in forms for k, cs in groups.items()], a.workers)
    summary = summarize(rows)
    res = {"data": "Multi-Power Law public curves (Luo et al. 2025): fitted on cosine_24000, constant_24000, "
                   "wsdcon_9; scored on the 6 other schedules. (Mis)Fitting open_lm cosine runs (Li et al. 2025): "
                   "each size x peak rate fitted on its shorter horizons, scored on its longest",
           "calibration": "interval sigmas (laws.curves.CALIBRATION) from the 25M and 100M unseen schedules and "
                          "the 400M size extrapolation; 400M's own unseen schedules are held out from it",
           "level": a.level, "summary": summary, "rows": rows}
    if save_and_print_json(res, a.out, a.json):
        return 0
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    table(f"curve back-test: unseen schedules of each size, and 400M from the 25M and 100M laws (errors relative "
          f"to the loss; {a.level:.0%} intervals)",
          ["law", "size", "fitted: mean |err|", "unseen: mean |err|", "unseen: mean |final err|", "worst final err",
           "final covered", "curve coverage"],
          [(r["form"], r["model"] + (" *" if r["model"] == "400M" else ""),
            pct(r["fitted_mean_abs_error"]) if r["fitted_mean_abs_error"] is not None else "-",
            pct(r["unseen_mean_abs_error"]), pct(r["unseen_mean_abs_final_error"]), f"{r['worst_final_error']:+.2%}",
            f"{r['final_covered']}/{r['unseen']}", f"{r['curve_coverage']:.0%}") for r in summary])
    print("* held out from the interval's calibration (sigma_schedule comes from 25M and 100M; sigma_size from the "
          "400M extrapolation itself, so that row's coverage is in-sample)")
    ratios = [r["horizon_ratio"] for r in rows if r["split"] == "unseen" and "horizon_ratio" in r]
    if ratios:
        print(f"open_lm: (Mis)Fitting's cosine runs, {len(ratios) // len(forms)} size x peak-rate groups, each fitted "
              f"on its shorter runs and scored on its longest ({min(ratios):.1f}-{max(ratios):.1f}x the steps); "
              f"no calibration used them; median |final err| "
              + ", ".join(f"{r['form']} {r['unseen_median_abs_final_error']:.2%}" for r in summary
                          if r["model"].startswith("open_lm")))
    if a.by_split:
        table("per schedule", ["law", "size", "schedule", "split", "mean |err|", "final err", "final covered"],
              [(r["form"], r["model"], r["schedule"], r["split"], pct(r["mean_abs_error"]), f"{r['final_error']:+.2%}",
                "yes" if r["final_covered"] else "no")
               for r in rows])
    if a.out:
        print(f"wrote {a.out}")
    return 0


def _size(model: str) -> float:
    return float(model.rstrip("M"))


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for (form, model) in dict.fromkeys((r["form"], r["model"]) for r in rows):
        g = [r for r in rows if r["form"] == form and r["model"] == model]
        fit, unseen = [r for r in g if r["split"] == "fitted"], [r for r in g if r["split"] == "unseen"]
        finals = [r["final_error"] for r in unseen]
        out.append({"form": form, "model": model,
                    "fitted_mean_abs_error": float(np.mean([r["mean_abs_error"] for r in fit])) if fit else None,
                    "unseen_mean_abs_error": float(np.mean([r["mean_abs_error"] for r in unseen])),
                    "unseen_mean_abs_final_error": float(np.mean(np.abs(finals))),
                    "unseen_median_abs_final_error": float(np.median(np.abs(finals))),
                    "worst_final_error": float(max(finals, key=abs)), "unseen": len(unseen),
                    "final_covered": sum(r["final_covered"] for r in unseen),
                    "curve_coverage": float(np.mean([r["curve_coverage"] for r in unseen]))})
    return out


def cmd_fit_curves(a) -> int:
    """`scalelab fit CURVES.csv --curves [--schedules FILE] [--method momentum-q|multi-power-q|momentum|multi-power]
    --out fit.json`."""
    from scalelab.laws.curve_law import DEFAULT_FORM, CurveMethod
    from scalelab.laws.curve_table import read_curves

    if not a.table:
        raise UserError("give a curve table: `scalelab fit CURVES.csv --curves` (columns run, N, step, tokens, lr, "
                        "loss; `scalelab ladder export LADDER --curves --out CURVES.csv` writes one)")
    fitted = CurveMethod(a.method or DEFAULT_FORM, a.across).fit(read_curves(a.table, a.schedules))
    if a.out:
        fitted.save(a.out)
    out = {"form": fitted.form, "sizes": [{"N": n, "runs": fitted.info["runs"][n], "rmse_relative":
                                            fitted.info["rmse_relative"][n], "params": p}
                                           for n, p in fitted.sizes.items()],
           "points": fitted.info["points"], "peak_lr": fitted.info["peak_lr"],
           "warmup_steps": fitted.info["warmup_steps"], "tokens_per_step": fitted.info["tokens_per_step"],
           "notes": fitted.info["notes"]}
    if a.json:
        print_json(out)
        return 0
    for note in fitted.info["notes"]:
        print(note)
    names = list(next(iter(fitted.sizes.values())))
    if fitted.info.get("joint"):
        print("joint law: " + ", ".join(f"{k} = {v:.4g}" for k, v in fitted.info["joint"].items()))
    table(f"{fitted.form} law per size ({a.across} across sizes)",
          ["N", "runs", "rel. rmse", *names],
          [(f"{n:.4g}", len(fitted.info["runs"][n]), f"{fitted.info['rmse_relative'][n]:.3%}",
            *[f"{p[k]:.4g}" for k in names]) for n, p in fitted.sizes.items()])
    fit_written(a.out, "forecast any schedule: scalelab predict {fit} --params N --schedule wsd:decay=0.2 --steps T "
                       "--tokens-per-step B")
    return 0


def cmd_predict_curves(a) -> int:
    """`scalelab predict CURVEFIT.json --params N --schedule SPEC --steps T [--tokens-per-step B] [--lr PEAK]`."""
    from scalelab.laws.curve_law import FittedCurves
    from scalelab.laws.schedule_spec import schedule_lr

    fitted = FittedCurves.load(a.law)
    if a.params is None or a.steps is None:
        raise UserError("a curve fit forecasts a run: give --params N --steps T [--schedule SPEC] "
                        "[--tokens-per-step B]")
    tps = a.tokens_per_step or fitted.info.get("tokens_per_step")
    if not tps:
        raise UserError("the fitted curves had no tokens column; give --tokens-per-step B")
    peak = a.lr or fitted.info["peak_lr"]
    a.schedule = a.schedule or "cosine"
    lr = schedule_lr(a.schedule, a.steps, peak, fitted.info.get("warmup_steps", 0))
    out = fitted.forecast(a.params, lr, tps, a.level)
    out.update(schedule=a.schedule, peak_lr=float(lr.max()), law=a.law,
               interval="calibrated on the Multi-Power Law public curves (scalelab backtest --curves)")
    if a.json:
        print_json(out)
        return 0
    f = out["final"]
    table(f"N = {a.params:.4g}: {a.schedule}, {a.steps} steps",
          ["step", "tokens", "loss", f"{a.level:.0%} interval"],
          [(p["step"], f"{p['tokens']:.4g}", f"{p['loss']:.4f}", f"[{p['loss_lo']:.4f}, {p['loss_hi']:.4f}]")
           for p in out["curve"][:: max(1, len(out["curve"]) // 10)]] +
          [("final", f"{out['tokens']:.4g}", f"{f['loss']:.4f}", f"[{f['loss_lo']:.4f}, {f['loss_hi']:.4f}]")])
    print(f"{a.level:.0%} interval: {out['interval']}; {out['size_extrapolation_decades']:.2f} decades of N past "
          f"the fitted sizes, {out['step_extrapolation_ratio']:.2g}x the longest fitted run's steps")
    for w in out["warnings"]:
        print(f"warning: {w}")
    return 0
