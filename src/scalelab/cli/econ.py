"""`scalelab plan` and `scalelab models`: compute, cost and sizing from a law, and published models."""

from __future__ import annotations

from scalelab.cli.args import fraction, level, positive, positive_int
from scalelab.cli.output import print_json, warn


def cmd_plan(a) -> int:
    if a.mixture:
        from scalelab.cli.mixture import cmd_plan_mixture

        return cmd_plan_mixture(a)
    if a.compute is None:
        from scalelab.errors import UserError

        raise UserError("give --compute C (training FLOPs), or --mixture FIT for a data mixture")
    from scalelab.economics.planning import plan_run
    from scalelab.ui import console

    out = plan_run(a.compute, a.law, a.gpu, a.gpus, a.mfu, a.price, a.inference_tokens, a.unique_tokens)
    warn(out["warnings"])
    if a.json:
        print_json(out)
        return 0
    from rich.table import Table

    if a.unique_tokens is not None:
        return _print_unique(a, out)

    t = Table(title=f"{a.compute:.3g} FLOPs under {a.law} on {out['gpus']} x {out['gpu']} at {out['mfu']:.0%} MFU")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    iv = lambda k: f"  [{out[k][0]:.3g}, {out[k][1]:.3g}]" if k in out else ""  # noqa: E731
    t.add_row("N* (parameters)", f"{out['N_opt']:.3g}{iv('N_opt_interval')}")
    t.add_row("D* (tokens)", f"{out['D_opt']:.3g}{iv('D_opt_interval')}")
    t.add_row("tokens per parameter", f"{out['tokens_per_param']:.1f}")
    if out["predicted_loss"] is not None:
        t.add_row("predicted loss", f"{out['predicted_loss']:.4f}{iv('loss_interval')}")
    t.add_row("GPU-hours", f"{out['gpu_hours']:,.0f}")
    t.add_row("wall-clock days", f"{out['days']:,.1f}")
    t.add_row("cost (USD)", f"${out['cost_usd']:,.0f} at ${out['price_per_gpu_hour']:.2f}/GPU-hour")
    if "inference_aware" in out:
        ia = out["inference_aware"]
        t.add_row(f"inference-aware N (serving {ia['inference_tokens']:.3g} tokens)", f"{ia['N']:.3g}")
        t.add_row("inference-aware D_train", f"{ia['D_train']:.3g} ({ia['tokens_per_param']:.0f} tokens/param)")
        t.add_row("total cost, Chinchilla-optimal -> inference-aware",
                  f"${ia['chinchilla_total_cost_usd']:,.0f} -> ${ia['total_cost_usd']:,.0f} "
                  f"({ia['saving']:.1%} saved)")
    console().print(t)
    return 0


def _print_unique(a, out: dict) -> int:
    from rich.table import Table

    from scalelab.ui import console

    free = out["unconstrained"]
    t = Table(title=f"{a.compute:.3g} FLOPs under {a.law} with {out['unique_tokens']:.3g} unique tokens")
    for col in ("", "data capped", "unconstrained"):
        t.add_column(col, justify="right")
    t.add_row("N* (parameters)", f"{out['N_opt']:.3g}", f"{free['N_opt']:.3g}")
    t.add_row("D* (tokens)", f"{out['D_opt']:.3g}", f"{free['D_opt']:.3g}")
    t.add_row("epochs over the unique tokens", f"{out['epochs']:.2f}", f"{free['epochs']:.2f}")
    t.add_row("predicted loss", f"{out['predicted_loss']:.4f}",
              f"{free['loss_with_unique_data']:.4f} with that much unique data, "
              f"{free['loss_on_capped_data']:.4f} on the capped data")
    t.add_row("GPU-hours", f"{out['gpu_hours']:,.0f}", "")
    console().print(t)
    print(f"past {out['half_value_epochs']:.1f} epochs a repeated token is worth less than half a fresh one; "
          f"{out['constants']}")
    return 0


def cmd_models(a) -> int:
    from scalelab.economics.published import models_table
    from scalelab.laws.published import get_law
    from scalelab.ui import console

    law = get_law(a.law) if a.law else None
    rows = models_table(law)
    if a.json:
        print_json(rows)
        return 0
    from rich.table import Table

    t = Table(title="published models" + (f" vs compute-optimal under {a.law}" if law else ""))
    cols = ["model", "params (active)", "tokens", "C = 6ND", "tokens/param"]
    if law:
        cols += ["N* at same C", "D*/N*", "N / N*"]
    cols.append("source")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "source") else "right")
    for r in rows:
        act = f"{r['params_total'] / 1e9:.1f}B" + (f" ({r['params_active'] / 1e9:.1f}B)"
                                                    if r["params_active"] != r["params_total"] else "")
        known = r["tokens"] is not None
        row = [r["name"], act, f"{r['tokens'] / 1e12:.2f}T" if known else "n/d",
               f"{r['compute_flops']:.2e}" if known else "", f"{r['tokens_per_param']:.1f}" if known else ""]
        if law:
            row += [f"{r['N_opt'] / 1e9:.1f}B" if known else "",
                    f"{r['optimal_tokens_per_param']:.1f}" if known else "",
                    f"{r['params_over_optimal']:.2f}x" if known else ""]
        row.append(r["source"])
        t.add_row(*row)
    console().print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="size, cost and time of a compute-optimal run under a law; or a data mixture "
                                    "(--mixture)",
                       description="N*, D*, predicted loss and the cost of training them; with --inference-tokens, "
                                   "the smaller, longer-trained model that minimises training + inference FLOPs at "
                                   "the same loss (Sardana & Frankle 2023).")
    p.add_argument("--compute", type=positive, default=None, help="training FLOPs (required unless --mixture)")
    p.add_argument("--law", default="besiroglu2024", help="built-in law name or a fit file")
    p.add_argument("--gpu", default="h100-sxm",
                   help="accelerator: v100, a100-40gb, a100-80gb, h100-pcie, h100-sxm (default), h200, b200, l40s, "
                        "rtx-4090, mi300x, tpu-v4, tpu-v5e, ... (economics/hardware.py)")
    p.add_argument("--gpus", type=positive_int, default=1024, help="accelerators training in parallel (default 1024)")
    p.add_argument("--mfu", type=fraction, default=0.4,
                   help="model FLOPs utilisation as a fraction of the dense bf16 peak, in (0, 1] (default 0.4)")
    p.add_argument("--price", type=positive, default=None, help="USD per GPU-hour (default: the hardware table's)")
    p.add_argument("--inference-tokens", type=positive, default=None,
                   help="tokens the model will serve over its life: sizes it for training + inference FLOPs (Sardana "
                        "et al. 2024)")
    p.add_argument("--unique-tokens", type=positive, default=None,
                   help="cap on distinct training tokens: the data-constrained allocation (Muennighoff et al. "
                        "2023), repeats past it, beside the unconstrained answer")
    p.add_argument("--mixture", default=None, metavar="FIT",
                   help="propose the data mixture a mixture fit (`fit --mixture --out`) says minimises --target")
    p.add_argument("--target", default=None, help="with --mixture: mean (default), a domain, or DOMAIN=WEIGHT pairs")
    p.add_argument("--supply", default=None, metavar="D=TOKENS,...",
                   help="with --mixture: tokens available per domain (repetition costed by Muennighoff's law)")
    p.add_argument("--tokens", type=positive, default=None, help="with --mixture --supply: the run's tokens")
    p.add_argument("--max-epochs", type=positive, default=4.0,
                   help="with --mixture --supply: the most any domain may repeat (default 4)")
    p.add_argument("--params", type=positive, default=None, help="with --mixture: N, for laws fitted with N, D")
    p.add_argument("--natural", default=None, metavar="D=P,...",
                   help="with --mixture: the mixture to compare with (default: supply-proportional)")
    p.add_argument("--level", type=level, default=0.9, help="interval level, in (0, 1) (default 0.9)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plan)
    m = sub.add_parser("models", help="published models, their compute, and distance from compute-optimal")
    m.add_argument("--law", default=None, help="compare with the compute-optimal allocation of this law")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_models)
