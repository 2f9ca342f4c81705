"""MoE vs dense at equal active parameters and training compute.

For each dense shape (d_model x layers) the lab trains three models on the same tokens of the offline
corpus: the dense model, an MoE with 8 experts top-2 whose experts are half the dense MLP width, and a
fine-grained MoE with 16 experts top-4 at a quarter of the width. All three have the same active
parameters and, up to the router, the same training FLOPs; the MoEs hold 4x the MLP parameters.

Measured: validation loss against training compute, active and total parameters; the fit of Clark
et al. (2022), log L = a log N + b log E + c log N log E + d (N active parameters, E experts, dense
E = 1); the effective-parameter multiplier (the dense size whose power-law fit reaches the MoE's loss,
over the MoE's active parameters); expert-load balance over training with and without the balancing
and z losses; measured wall-clock per token next to the FLOPs per token.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scalelab.config import DataConfig, load_dict
from scalelab.errors import UserError
from scalelab.labs.common import Shape, begin, pyplot, savefig, train_or_load, write_report, write_summary
from scalelab.labs.progress import LabProgress
from scalelab.model.config import swiglu_hidden
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir

# variant -> (experts, top_k, expert width as a fraction of the dense d_ff, balancing losses on)
VARIANTS = {"dense": (1, 1, 1.0, True), "moe-8x2": (8, 2, 0.5, True), "moe-16x4": (16, 4, 0.25, True)}
ABLATION = ("moe-8x2-nobal", (8, 2, 0.5, False))


@dataclass(frozen=True)
class MoESpec:
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2")
    variants: tuple[str, ...] = ("dense", "moe-8x2", "moe-16x4")
    tokens: int = 2_000_000
    ablation: bool = True  # the middle size's 8x2 MoE again without load-balancing and z losses
    vocab_size: int = 512
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    eval_tokens: int = 32_768
    data: DataConfig = field(default_factory=lambda: DataConfig(tokenizer_train_bytes=4_000_000))

    def validate(self) -> MoESpec:
        for s in self.sizes:
            Shape.parse(s)
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise UserError(f"unknown variant {unknown[0]!r}; variants: {', '.join(VARIANTS)}")
        if "dense" not in self.variants:
            raise UserError("variants must include dense (the baseline every MoE is compared with)", arg="variants")
        if len(self.sizes) < 2:
            raise UserError("sizes needs at least two sizes", arg="sizes")
        return self


QUICK = dict(sizes=("32x1", "48x1"), variants=("dense", "moe-8x2"), tokens=100_000, ablation=False,
             eval_tokens=8192)


def model_for(spec: MoESpec, shape: Shape, variant: tuple) -> dict:
    experts, top_k, frac, balance = variant
    d = {"vocab_size": spec.vocab_size, "d_model": shape.d_model, "n_layers": shape.n_layers,
         "n_heads": shape.d_model // 16, "max_seq_len": spec.seq_len}
    if experts > 1:
        d_ff = swiglu_hidden(shape.d_model)
        d["moe"] = {"num_experts": experts, "top_k": top_k, "d_expert": int(d_ff * frac),
                    **({} if balance else {"lb_coef": 0.0, "z_coef": 0.0})}
    return d


def _config(spec: MoESpec, shape: Shape, variant):
    return load_dict({"model": model_for(spec, shape, variant), "data": asdict(spec.data), "optim": {"lr": spec.lr},
                      "train": {"batch_size": spec.batch_size, "seq_len": spec.seq_len, "max_tokens": spec.tokens,
                                "seed": spec.seed, "eval_every": 10 ** 9, "eval_tokens": spec.eval_tokens,
                                "log_every": 10, "progress": False, "compile": "off"}})


def _row(size, name, variant, cfg, run_dir, ds, log) -> dict:
    """Train (or reuse) one model; -> its losses, speed and expert loads."""
    _, summary = train_or_load(cfg, run_dir, ds, log)
    recs = run_dir.read_metrics()
    m = cfg.model
    row = {"size": size, "variant": name, "experts": variant[0], "top_k": variant[1],
           "num_params_active": m.num_params_active, "num_params_total": m.num_params_total,
           "flops": summary["flops"], "flops_per_token": summary["flops_per_token_exact"],
           "val_loss": summary["final"]["val_loss"],
           "tokens_per_s": float(np.median([r.tokens_per_s for r in recs[1:]] or [recs[0].tokens_per_s])),
           "curve": [(r.tokens, r.train_loss) for r in recs]}
    if variant[0] > 1:
        loads = np.array([r.expert_load for r in recs])  # (logs, E) mean over layers
        cv = loads.std(1) / loads.mean(1)
        row.update(load_cv=cv.tolist(), load_cv_final=float(cv[-1]), load_max_over_mean_final=float(
            loads[-1].max() / loads[-1].mean()), lb_loss_final=recs[-1].lb_loss, z_loss_final=recs[-1].z_loss)
    log(f"  {Shape.parse(size).name} {name:14s} active {m.num_params_active:>9,} total {m.num_params_total:>9,} "
        f"val {row['val_loss']:.4f}  {row['tokens_per_s']:,.0f} tok/s")
    return row


def run(spec: MoESpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    jobs = [(s, v, VARIANTS[v]) for s in spec.sizes for v in spec.variants]
    if spec.ablation and "moe-8x2" in spec.variants:
        jobs.append((spec.sizes[len(spec.sizes) // 2], ABLATION[0], ABLATION[1]))
    cfgs = {f"{Shape.parse(size).name}-{name}": (size, name, variant, _config(spec, Shape.parse(size), variant))
            for size, name, variant in jobs}
    ds = None
    results = []
    with LabProgress(out, {run: c[-1] for run, c in cfgs.items()}, "MoE lab"):
        for run_name, (size, name, variant, cfg) in cfgs.items():
            if ds is None:
                ds = load_dataset(cfg, log=log)
            results.append(_row(size, name, variant, cfg, RunDir.under(out, run_name), ds, log))
    summary = {"spec": asdict(spec), "runs": results, **analyse(spec, results), "seconds": time.perf_counter() - t0}
    figs = plot(summary, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def clark_fit(rows: list[dict]) -> dict:
    """Least squares of log L = a log N + b log E + c log N log E + d (Clark et al. 2022, eq. 1)."""
    N = np.log([r["num_params_active"] for r in rows])
    E = np.log([r["experts"] for r in rows])
    L = np.log([r["val_loss"] for r in rows])
    X = np.column_stack([N, E, N * E, np.ones_like(N)])
    if len(rows) < 5 or np.ptp(E) == 0:
        return {"ok": False, "reason": "needs at least 5 runs over 2 or more expert counts"}
    coef, *_ = np.linalg.lstsq(X, L, rcond=None)
    resid = L - X @ coef
    return {"ok": True, "a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2]), "d": float(coef[3]),
            "rms_log_residual": float(np.sqrt(np.mean(resid ** 2))), "points": len(rows)}


def analyse(spec: MoESpec, rows: list[dict]) -> dict:
    main = [r for r in rows if not r["variant"].endswith("nobal")]
    dense = sorted([r for r in main if r["variant"] == "dense"], key=lambda r: r["num_params_active"])
    # dense power law L = k N^-alpha, in logs; the MoE's effective N is where it meets the MoE's loss
    if len(dense) < 2:
        raise UserError("the MoE lab needs dense runs at two or more sizes")
    slope, icpt = np.polyfit(np.log([r["num_params_active"] for r in dense]), np.log([r["val_loss"] for r in dense]), 1)
    comparisons = []
    for r in main:
        if r["variant"] == "dense":
            continue
        d = next(x for x in dense if x["size"] == r["size"])
        n_eff = math.exp((math.log(r["val_loss"]) - icpt) / slope) if slope < 0 else math.nan
        comparisons.append({"size": r["size"], "variant": r["variant"], "dense_loss": d["val_loss"],
                            "moe_loss": r["val_loss"], "moe_better": r["val_loss"] < d["val_loss"],
                            "loss_gain": d["val_loss"] - r["val_loss"],
                            "flops_ratio": r["flops"] / d["flops"],
                            "effective_param_multiplier": n_eff / r["num_params_active"],
                            "wallclock_per_token_ratio": d["tokens_per_s"] / r["tokens_per_s"]})
    largest = spec.sizes[-1]
    balance = [{"variant": r["variant"], "size": r["size"], "load_cv_final": r["load_cv_final"],
                "max_over_mean_load": r["load_max_over_mean_final"], "lb_loss": r["lb_loss_final"],
                "z_loss": r["z_loss_final"], "val_loss": r["val_loss"]}
               for r in rows if r["experts"] > 1 and r["size"] == spec.sizes[len(spec.sizes) // 2]]
    return {"dense_power_law": {"alpha": float(-slope), "log_k": float(icpt)},
            "clark2022": clark_fit([r for r in main if r["variant"] in ("dense", "moe-8x2")]),
            "clark2022_all_variants": clark_fit(main),
            "krajewski2024": {"ok": False, "reason": "needs 3 or more granularities at several sizes and "
                                                     "token counts (5 free parameters); the default lab has 2"},
            "comparisons": comparisons,
            "largest_size": {c["variant"]: c for c in comparisons if c["size"] == largest},
            "balance": balance}


def plot(summary: dict, out: Path) -> list[Path]:
    plt = pyplot()
    rows = [r for r in summary["runs"] if not r["variant"].endswith("nobal")]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for vi, v in enumerate(variants):
        rs = sorted([r for r in rows if r["variant"] == v], key=lambda r: r["flops"])
        for ax, key in zip(axes, ("flops", "num_params_active", "num_params_total")):
            ax.plot([r[key] for r in rs], [r["val_loss"] for r in rs], "o-", color=f"C{vi}", label=v)
    for ax, label in zip(axes, ("training FLOPs", "active parameters", "total parameters")):
        ax.set(xscale="log", xlabel=label)
    axes[0].set_ylabel("validation loss")
    axes[0].legend()
    fig.tight_layout()
    paths = [savefig(fig, out, "moe_vs_dense")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    balance_size = summary["balance"][0]["size"]
    for i, r in enumerate([r for r in summary["runs"] if r["experts"] > 1 and r["size"] == balance_size]
                          if summary["balance"] else []):
        toks = [t for t, _ in r["curve"]]
        axes[0].plot(toks, r["load_cv"], color=f"C{i}", label=r["variant"])
        axes[1].plot(toks, [loss for _, loss in r["curve"]], color=f"C{i}", label=r["variant"])
    axes[0].set(xlabel="tokens", ylabel="expert load: coefficient of variation", title="balance over training")
    axes[1].set(xlabel="tokens", ylabel="train loss", title="training curves")
    if summary["balance"]:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(savefig(fig, out, "moe_balance"))
    return paths


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    lg = s["largest_size"]
    text = "; ".join(f"{v}: loss {c['moe_loss']:.4f} vs dense {c['dense_loss']:.4f} at {c['flops_ratio']:.3f}x the "
                     f"FLOPs, effective-parameter multiplier {c['effective_param_multiplier']:.2f}, wall-clock per "
                     f"token {c['wallclock_per_token_ratio']:.2f}x dense" for v, c in lg.items())
    clark = s["clark2022"]
    fit = (f"Clark et al. fit (dense + 8x2): a={clark['a']:.4f} b={clark['b']:.4f} c={clark['c']:.4f} "
           f"d={clark['d']:.3f}, rms log residual {clark['rms_log_residual']:.4f}." if clark["ok"] else clark["reason"])
    runs = [{k: r[k] for k in ("size", "variant", "num_params_active", "num_params_total", "flops", "val_loss",
                               "tokens_per_s")} for r in s["runs"]]
    write_report(out, "MoE vs dense at equal active parameters", [
        ("Loss against compute, active and total parameters", f"Largest size: {text}. {fit}", [figs[0]],
         table_html(runs) + table_html(s["comparisons"])),
        ("Expert load balance", "Coefficient of variation of the fraction of tokens each expert receives "
         "(mean over layers); 0 is perfectly uniform.", [figs[1]], table_html(s["balance"])),
    ])


def headline(s: dict) -> str:
    return "\n".join(f"largest size, {v}: MoE {c['moe_loss']:.4f} vs dense {c['dense_loss']:.4f} "
                     f"(multiplier {c['effective_param_multiplier']:.2f}x, "
                     f"wall-clock/token {c['wallclock_per_token_ratio']:.2f}x)"
                     for v, c in s["largest_size"].items())
