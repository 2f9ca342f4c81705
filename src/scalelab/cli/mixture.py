"""Data mixtures: `fit TABLE --mixture`, `predict FIT --mixture a=..`, `plan --mixture FIT`, `backtest --mixtures`."""

from __future__ import annotations

import math

from scalelab.cli.args import method_names
from scalelab.cli.output import fit_written, print_json, save_and_print_json, table
from scalelab.errors import UserError


def cmd_fit_mixture(a) -> int:
    from scalelab.laws.mixture import DEFAULT_MIXTURE_METHOD, MixtureMethod, read_mixtures

    if not a.table:
        raise UserError("give a mixture table: `scalelab fit RUNS.csv --mixture` (columns w_<domain>, "
                        "loss_<domain>, optionally N, D)")
    fitted = MixtureMethod(a.method or DEFAULT_MIXTURE_METHOD).fit(read_mixtures(a.table))
    if a.out:
        fitted.save(a.out)
    t = fitted.table
    hw, ht = fitted.half_widths(a.level, fitted.target_weights(None))
    out = {"method": fitted.method, "runs": len(t.W), "weights": t.weights, "domains": t.domains,
           "scale": t.scale is not None, "level": a.level,
           "cv_half_width_log": dict(zip(t.domains, hw.tolist())), "cv_half_width_log_mean_target": ht}
    if a.json:
        print_json(out)
        return 0
    table(f"mixture law {fitted.method}: {len(t.W)} runs, {len(t.weights)} proportions, {len(t.domains)} losses",
          ["domain", f"{a.level:.0%} interval (cross-validated)"],
          [(d, f"x/ {math.exp(h):.4f}") for d, h in zip(t.domains, hw)] +
          [("mean of the domains", f"x/ {math.exp(ht):.4f}")])
    fit_written(a.out, f"forecast a mixture: scalelab predict {{fit}} --mixture {t.weights[0]}=0.5,{t.weights[1]}=0.5 "
                       f"[--target DOMAIN]")
    return 0


def cmd_predict_mixture(a) -> int:
    from scalelab.laws.mixture import FittedMixture, parse_mixture

    fitted = FittedMixture.load(a.law)
    if not a.mixture:
        raise UserError(f"{a.law} is a mixture fit: give --mixture DOMAIN=P,... (domains: "
                        f"{', '.join(fitted.table.weights)})")
    out = fitted.forecast(parse_mixture(a.mixture), a.level, a.target, a.params, a.tokens)
    if a.json:
        print_json(out)
        return 0
    rows = [(d, f"{v['loss']:.4f}", f"[{v['loss_lo']:.4f}, {v['loss_hi']:.4f}]") for d, v in out["domains"].items()]
    t = out["target"]
    rows.append((f"target ({t['weights']})", f"{t['loss']:.4f}", f"[{t['loss_lo']:.4f}, {t['loss_hi']:.4f}]"))
    table(f"{a.law} ({out['method']})", ["domain", "loss", f"{a.level:.0%} interval"], rows)
    print(f"intervals: {out['interval']}")
    return 0


def cmd_plan_mixture(a) -> int:
    from scalelab.laws.mixture import FittedMixture, parse_mixture
    from scalelab.laws.mixture_plan import plan_mixture

    fitted = FittedMixture.load(a.mixture)
    supply = parse_mixture(a.supply, what="--supply") if a.supply else None
    natural = parse_mixture(a.natural) if a.natural else None
    out = plan_mixture(fitted, target=a.target, supply=supply, tokens=a.tokens, natural=natural, level=a.level,
                       n=a.params, max_epochs=a.max_epochs)
    if a.json:
        print_json(out)
        return 0
    best, nat = out["best"], out["natural"]
    table(f"mixture for target {out['target']} ({out['candidates']:,} candidates; the top {out['top']} averaged)",
          ["domain", "proposed", "natural"] + (["epochs (proposed)"] if supply else []),
          [(d, f"{best['mixture'][d]:.3f}", f"{nat['mixture'][d]:.3f}")
           + ((f"{out['epochs'][d]:.2f}",) if supply else ()) for d in fitted.table.weights])
    g = out["gain"]
    print(f"target loss: proposed {best['target']['loss']:.4f} [{best['target']['loss_lo']:.4f}, "
          f"{best['target']['loss_hi']:.4f}], natural {nat['target']['loss']:.4f}; predicted gain "
          f"{g['loss']:+.4f} [{g['loss_lo']:+.4f}, {g['loss_hi']:+.4f}] ({a.level:.0%}; natural: {out['natural_is']})")
    for note in out["notes"]:
        print(f"note: {note}")
    return 0


def cmd_backtest_mixtures(a) -> int:
    from scalelab.laws.mixture import METHODS
    from scalelab.laws.mixture_backtest import run_mixture_backtest

    methods = method_names(a.methods, METHODS, "mixture method")
    res = run_mixture_backtest(methods, a.level)
    if save_and_print_json(res, a.out, a.json, detail="none"):
        return 0
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    rows = [r for r in res["rows"] if r["data"].startswith("RegMix")]
    table(f"mixture back-test on RegMix's runs (fitted on 512 mixtures at 1M; {a.level:.0%} intervals)",
          ["method", "data", "target", "Spearman", "median |err|", "coverage", f"{rows[0].get('few_shot_runs', 16)}"
           "-run map: median |err|", "coverage "],
          [(r["method"], r["data"] + (" *" if r["split"] == "untouched" else ""), r["target"],
            f"{r['spearman']:.3f}", pct(r.get("median_abs_error")), pct(r.get("coverage")),
            pct(r.get("few_shot_median_abs_error")), pct(r.get("few_shot_coverage"))) for r in rows])
    for r in res["rows"]:
        if r["data"].startswith("BiMix"):
            print(f"{r['data']}: bimix fitted on {r['fitted_on']}, scored on {r['scored_on']}: median |err| "
                  f"{r['median_abs_error']:.2%}, worst {r['worst_abs_error']:.2%} over every domain")
    print(f"* untouched (the default was chosen on 60M: {res['chosen_on_60M']})")
    if a.out:
        print(f"wrote {a.out}")
    return 0
