"""Emergence lab: is a sudden ability a property of the model or of the metric?

A ladder of model sizes is trained on a task mix (every size on the same number of tokens, several
seeds), and each model is evaluated at several points of its training. Every metric of the harness
(exact match, per-digit accuracy, edit distance, per-token NLL of the answer, probability of the
answer) is plotted against parameters and against training compute on the same axes.

Schaeffer et al. (2023): exact match on an L-token answer is roughly the product of L per-token
successes, so it can look like a phase transition while per-token log-likelihood improves smoothly.
The lab measures this directly: the product of per-position accuracies against exact match (their
correlation), and a logistic fit (midpoint and width, in decades) and the BIG-bench emergence score
for every metric. Some thresholds are real: the accuracy by number of carries shows where carry
propagation is learned.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scalelab.data.tasks import TaskMix, parse_task
from scalelab.errors import UserError
from scalelab.evaluate.harness import emergence_score, evaluate_task, fit_logistic
from scalelab.labs.common import (
    Shape,
    begin,
    model_dict,
    pyplot,
    run_config,
    savefig,
    task_dataset,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.report.page import table_html
from scalelab.train.checkpoint import load_checkpoint
from scalelab.train.rundir import RunDir

# metric -> (label, "higher is better")
METRICS = {
    "exact_match": ("exact match", True),
    "digit_accuracy": ("per-digit accuracy", True),
    "edit_distance": ("token edit distance", False),
    "answer_nll_per_token": ("answer NLL per token (nats)", False),
    "answer_prob": ("P(full answer)", True),
}


@dataclass(frozen=True)
class EmergenceSpec:
    tasks: tuple[str, ...] = ("addition:digits=2,format=plain",)
    sizes: tuple[str, ...] = ("16x1", "24x1", "32x1", "32x2", "48x2", "64x2")
    tokens: int = 3_000_000  # training tokens per run (same for every size)
    seeds: tuple[int, ...] = (0, 1)
    eval_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)  # points of training at which models are evaluated
    lr: float = 3e-3
    batch_size: int = 8
    seq_len: int = 64
    test_size: int = 300
    train_chars: int = 4_000_000

    def validate(self) -> EmergenceSpec:
        for t in self.tasks:
            parse_task(t)
        for s in self.sizes:
            Shape.parse(s)
        if len(self.sizes) < 3:
            raise UserError("sizes needs at least 3 model sizes to show a trend", arg="sizes")
        if not self.seeds:
            raise UserError("seeds needs at least one seed", arg="seeds")
        if any(not 0 < f <= 1 for f in self.eval_fractions) or 1.0 not in self.eval_fractions:
            raise UserError("eval fractions must lie in (0, 1] and include 1.0")
        if self.tokens < self.batch_size * self.seq_len * 10:
            raise UserError(f"tokens={self.tokens} is under 10 steps; raise it", arg="tokens")
        return self


QUICK = dict(sizes=("16x1", "32x1", "48x2"), tokens=200_000, seeds=(0,), eval_fractions=(0.5, 1.0), test_size=60,
             train_chars=300_000)


def _run_points(spec, cfg, run, ds, tasks, tests, log, **keys) -> list[dict]:
    """Train (or reuse) one model, then score every task at each of its evaluation fractions."""
    total = cfg.total_steps
    steps = sorted({max(1, round(f * total)) for f in spec.eval_fractions})
    model, _ = train_or_load(cfg, run, ds, log, branch_points=tuple(s for s in steps if s < total))
    points = []
    for step in steps:
        load_checkpoint(run.branch_point(step) if step < total else run.latest_checkpoint(), model)
        model.eval()
        for task in tasks.values():
            r = evaluate_task(model, task, tests[task.spec])
            points.append({**keys, "step": step, "final": step == total,
                           "num_params": cfg.model.num_params_total,
                           "num_params_non_embedding": cfg.model.num_params_non_embedding,
                           "tokens": step * cfg.train.tokens_per_step,
                           "train_flops": step * cfg.train.tokens_per_step *
                           cfg.model.flops_per_token_exact(spec.seq_len), **r})
    return points


def run(spec: EmergenceSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    mix = TaskMix(tasks=spec.tasks, test_size=spec.test_size)
    tests = mix.test_sets()
    tasks = {t.spec: t for t in mix.parsed()}
    ds = task_dataset(mix, out, spec.train_chars)
    cfgs = {f"{Shape.parse(size).name}-s{seed}": (size, seed, run_config(model_dict(Shape.parse(size)), spec.tokens,
                                                                         spec.lr, spec.batch_size, spec.seq_len, seed))
            for size in spec.sizes for seed in spec.seeds}
    points = []
    with LabProgress(out, {name: c for name, (_, _, c) in cfgs.items()}, "emergence lab"):
        for name, (size, seed, cfg) in cfgs.items():
            points += _run_points(spec, cfg, RunDir.under(out, name), ds, tasks, tests, log, size=size, seed=seed)
            log(f"  {Shape.parse(size).name} seed {seed}: " + ", ".join(
                f"{p['task'].split(':')[0]} EM {p['exact_match']:.2f} NLL {p['answer_nll_per_token']:.3f}"
                for p in points[-len(tasks):]))
    summary = analyse(spec, points)
    summary["seconds"] = time.perf_counter() - t0
    figures = plot(summary, points, out)
    write_summary(out, {**summary, "points": points})
    _report(out, summary, figures)
    return summary


def analyse(spec: EmergenceSpec, points: list[dict]) -> dict:
    """Per task: final metrics by size (mean and std over seeds), logistic fits and emergence scores."""
    out = {"spec": asdict(spec), "tasks": {}}
    for task in dict.fromkeys(p["task"] for p in points):
        pts = [p for p in points if p["task"] == task]
        finals = [p for p in pts if p["final"]]
        by_size = []
        for size in spec.sizes:
            rows = [p for p in finals if p["size"] == size]
            row = {"size": size, "num_params": rows[0]["num_params"], "train_flops": rows[0]["train_flops"]}
            for m in METRICS:
                v = np.array([r[m] for r in rows])
                row[m], row[m + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row["product_position_accuracy"] = float(np.mean([r["product_position_accuracy"] for r in rows]))
            by_size.append(row)
        logn = np.log10([r["num_params"] for r in by_size])
        logc = np.log10([p["train_flops"] for p in pts])
        fits = {}
        for m in METRICS:
            fits[m] = {"vs_params": fit_logistic(logn, [r[m] for r in by_size]),
                       "vs_compute": fit_logistic(logc, [p[m] for p in pts]),
                       "emergence_score_vs_params": emergence_score(logn, [r[m] for r in by_size])}
        em = np.array([p["exact_match"] for p in pts])
        prod = np.array([p["product_position_accuracy"] for p in pts])
        corr = float(np.corrcoef(em, prod)[0, 1]) if em.std() > 0 and prod.std() > 0 else math.nan
        out["tasks"][task] = {
            "by_size": by_size, "fits": fits,
            "exact_match_smallest": by_size[0]["exact_match"], "exact_match_largest": by_size[-1]["exact_match"],
            "nll_smallest": by_size[0]["answer_nll_per_token"], "nll_largest": by_size[-1]["answer_nll_per_token"],
            "corr_product_position_accuracy_vs_exact_match": corr,
            "mean_abs_gap_product_vs_exact_match": float(np.mean(np.abs(em - prod))),
            "by_difficulty_final": {r["size"]: _mean_dicts([p["by_difficulty"] for p in finals
                                                            if p["size"] == r["size"]])
                                    for r in by_size},
        }
    return out


def _mean_dicts(ds: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in ds if k in d])) for k in ds[0]}


def plot(summary: dict, points: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for ti, (task, res) in enumerate(summary["tasks"].items()):
        pts = [p for p in points if p["task"] == task]
        fig, axes = plt.subplots(2, len(METRICS), figsize=(4 * len(METRICS), 7), sharey="col")
        for j, (m, (label, _)) in enumerate(METRICS.items()):
            ax = axes[0, j]
            rows = res["by_size"]
            ax.errorbar([r["num_params"] for r in rows], [r[m] for r in rows], yerr=[r[m + "_std"] for r in rows],
                        marker="o", capsize=3)
            fit = res["fits"][m]["vs_params"]
            if fit["ok"]:
                xs = np.linspace(math.log10(rows[0]["num_params"]), math.log10(rows[-1]["num_params"]), 100)
                sigmoid = 1 + np.exp(-(xs - fit["midpoint"]) / fit["width"])
                ax.plot(10 ** xs, fit["lo"] + (fit["hi"] - fit["lo"]) / sigmoid,
                        "--", color="gray", lw=1)
            ax.set_xscale("log")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("parameters")
            ax = axes[1, j]
            for size in dict.fromkeys(p["size"] for p in pts):
                sp = sorted([p for p in pts if p["size"] == size], key=lambda p: p["train_flops"])
                seeds = sorted({p["seed"] for p in sp})
                xs = sorted({p["train_flops"] for p in sp})
                ys = [np.mean([p[m] for p in sp if p["train_flops"] == x]) for x in xs]
                ax.plot(xs, ys, marker=".", label=size if len(seeds) else None)
            ax.set_xscale("log")
            ax.set_xlabel("training FLOPs")
        axes[1, 0].legend(fontsize=7, title="size")
        fig.suptitle(f"{task}: every metric against parameters (top, final models, mean ± std over seeds) "
                     "and training compute (bottom)", fontsize=11)
        fig.tight_layout()
        paths.append(savefig(fig, out, f"metrics_{ti}"))
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
        ax.scatter([p["product_position_accuracy"] for p in pts], [p["exact_match"] for p in pts], s=14)
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        ax.set_xlabel("product of per-position accuracies")
        ax.set_ylabel("exact match")
        ax.set_title(f"r = {res['corr_product_position_accuracy_vs_exact_match']:.3f}", fontsize=10)
        fig.tight_layout()
        paths.append(savefig(fig, out, f"product_vs_exact_{ti}"))
    return paths


def _report(out: Path, summary: dict, figures: list[Path]) -> None:
    sections = []
    for ti, (task, res) in enumerate(summary["tasks"].items()):
        fit_rows = [{"metric": METRICS[m][0], "midpoint (log10 N)": f["vs_params"]["midpoint"],
                     "width (decades)": f["vs_params"]["width"], "midpoint (log10 C)": f["vs_compute"]["midpoint"],
                     "width C (decades)": f["vs_compute"]["width"], "emergence score": f["emergence_score_vs_params"]}
                    for m, f in res["fits"].items()]
        size_rows = [{"size": r["size"], "params": r["num_params"], "exact match": r["exact_match"],
                      "product of position acc.": r["product_position_accuracy"], "digit acc.": r["digit_accuracy"],
                      "NLL/token": r["answer_nll_per_token"], "P(answer)": r["answer_prob"]} for r in res["by_size"]]
        text = (f"Exact match goes from {res['exact_match_smallest']:.1%} to {res['exact_match_largest']:.1%} across "
                f"the ladder while the answer's NLL per token goes from {res['nll_smallest']:.3f} to "
                f"{res['nll_largest']:.3f} nats. The product of per-position accuracies tracks exact match with "
                f"correlation {res['corr_product_position_accuracy_vs_exact_match']:.3f}.")
        sections.append((task, text, [p for p in figures if p.stem.endswith(f"_{ti}")],
                         table_html(size_rows) + table_html(fit_rows)))
    write_report(out, "Emergence: abilities vs metrics", sections)


def headline(s: dict) -> str:
    lines = []
    for task, r in s["tasks"].items():
        f = r["fits"]
        lines.append(f"{task}: exact match {r['exact_match_smallest']:.1%} -> {r['exact_match_largest']:.1%}, "
                     "answer NLL "
                     f"{r['nll_smallest']:.3f} -> {r['nll_largest']:.3f} nats/token; product of position accuracies vs "
                     f"exact match r = {r['corr_product_position_accuracy_vs_exact_match']:.3f}")
        lines.append("  logistic in log10 N: " + ", ".join(
            f"{m} mid {f[m]['vs_params']['midpoint']:.2f} width {f[m]['vs_params']['width']:.2f}" for m in METRICS
            if f[m]["vs_params"]["ok"]))
    return "\n".join(lines)
