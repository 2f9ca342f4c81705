"""Distillation: when does a teacher's distribution beat the data (Busbridge et al. 2025)?

One teacher is trained on the offline corpus. Students of several sizes are then trained at the same
token budgets twice: from scratch on the data, and distilled from the teacher (train/distill.py:
KL to the teacher's next-token distribution at a temperature, mixed with the data's cross-entropy
by ``weight``). Both see the same tokens in the same order, so the student's own compute is equal;
the teacher's forward passes are counted apart (``teacher_flops``) and together with the student's.
Every model is scored on the same held-out split.

Read: (1) the gain L_scratch - L_distill per size and budget, and the budget where it crosses zero
(distillation "stops winning"; Busbridge et al. find the crossing moves out with the student's
size); (2) whether a distilled student beats a larger model trained from scratch at equal compute,
counting only the student's FLOPs and counting the teacher's inference too (the seeds' "a
well-distilled 7B model might outperform a 13B model trained from scratch", at this lab's scale).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
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
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class DistillSpec(TrainSettings):
    teacher: str = "96x3"
    teacher_tokens: int = 3_000_000
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2")
    tokens: tuple[int, ...] = (250_000, 750_000, 2_000_000)
    temperature: float = 1.0
    weight: float = 1.0
    """the KL term's weight (1 = pure distillation, as Busbridge et al. train their students)."""

    def validate(self) -> DistillSpec:
        teacher = Shape.parse(self.teacher)
        for s in self.sizes:
            if Shape.parse(s).d_model * Shape.parse(s).n_layers >= teacher.d_model * teacher.n_layers:
                raise UserError(f"student size {s} is not smaller than the teacher {self.teacher}", arg="sizes")
        if len(self.tokens) < 2 or min(self.tokens) < self.batch_size * self.seq_len:
            raise UserError(f"tokens: two or more budgets of at least one batch ({self.batch_size * self.seq_len})",
                            arg="tokens")
        if self.temperature <= 0 or not 0 < self.weight <= 1:
            raise UserError("temperature must be > 0 and weight in (0, 1]", arg="weight")
        return self


QUICK = dict(teacher="64x2", teacher_tokens=600_000, sizes=("32x1",), tokens=(100_000, 300_000),
             eval_tokens=16_384)


def _config(spec: DistillSpec, size: str, tokens: int, teacher_dir: Path | None = None):
    cfg = spec.run_config(size, tokens)
    if teacher_dir is None:
        return cfg
    return replace(cfg, distill=replace(cfg.distill, teacher=str(teacher_dir.resolve()),
                                        temperature=spec.temperature, weight=spec.weight))


def _plan(spec: DistillSpec, out: Path) -> dict:
    """run name -> (size, tokens, kind, config); the teacher first."""
    teacher_dir = RunDir.under(out, f"teacher-{Shape.parse(spec.teacher).name}").path
    plan = {teacher_dir.name: (spec.teacher, spec.teacher_tokens, "teacher",
                               _config(spec, spec.teacher, spec.teacher_tokens))}
    for size in spec.sizes:
        for tokens in spec.tokens:
            for kind in ("scratch", "distilled"):
                plan[f"{Shape.parse(size).name}-{kind}-{tokens}"] = (
                    size, tokens, kind, _config(spec, size, tokens, teacher_dir if kind == "distilled" else None))
    return plan


def run(spec: DistillSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    plan, rows, ds = _plan(spec, out), [], None
    with LabProgress(out, {name: p[-1] for name, p in plan.items()}, "distillation lab"):
        for name, (size, tokens, kind, cfg) in plan.items():
            ds = ds or load_dataset(cfg, log=log)
            _, s = train_or_load(cfg, RunDir.under(out, name), ds, log)
            rows.append({"size": size, "kind": kind, "num_params": s["num_params_total"], "tokens": s["tokens"],
                         "student_flops": s["flops"], "teacher_inference_flops": s.get("teacher_flops", 0),
                         "loss": s["final"]["val_loss"]})
            rows[-1]["total_flops"] = rows[-1]["student_flops"] + rows[-1]["teacher_inference_flops"]
            log(f"  {name:24s} {rows[-1]['num_params']:>9,} params  {tokens:>9,} tokens  val {rows[-1]['loss']:.4f}")
    runs = pd.DataFrame(rows)
    summary = {"spec": asdict(spec), "runs": rows, "teacher": rows[0], "gains": gains(runs),
               "versus_larger": versus_larger(runs), "seconds": time.perf_counter() - t0}
    figs = plot(runs, spec, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def gains(runs: pd.DataFrame) -> list[dict]:
    """Per size: L_scratch - L_distilled at each budget, and the budget where it first turns negative
    (interpolated in log tokens; None when distillation wins, or loses, at every budget measured); where
    it wins at every budget but less at the last, the line through the last two extrapolated to zero."""
    out = []
    for size, g in runs[runs["kind"] != "teacher"].groupby("size", sort=False):
        p = g.pivot_table(index="tokens", columns="kind", values="loss").sort_index()
        gain = (p["scratch"] - p["distilled"]).to_numpy()
        log_d = np.log(p.index.to_numpy(float))
        cross = None
        for i in range(1, len(gain)):
            if gain[i - 1] > 0 >= gain[i]:
                cross = float(np.exp(log_d[i - 1] + gain[i - 1] / (gain[i - 1] - gain[i]) * (log_d[i] - log_d[i - 1])))
                break
        slope = (gain[-1] - gain[-2]) / (log_d[-1] - log_d[-2])
        extrapolated = float(np.exp(log_d[-1] - gain[-1] / slope)) if cross is None and gain[-1] > 0 > slope else None
        out.append({"size": size, "num_params": int(g["num_params"].iloc[0]), "tokens": p.index.tolist(),
                    "gain": gain.tolist(), "stops_winning_at_tokens": cross,
                    "stops_winning_extrapolated_tokens": extrapolated})
    return out


def _loss_at(curve: pd.DataFrame, flops: float, column: str) -> float:
    """A scratch curve's loss at ``flops`` (linear in log FLOPs between its runs; NaN outside them)."""
    c = curve.sort_values(column)
    x = np.log(c[column].to_numpy(float))
    if not x[0] <= math.log(flops) <= x[-1]:
        return math.nan
    return float(np.interp(math.log(flops), x, c["loss"].to_numpy(float)))


def versus_larger(runs: pd.DataFrame) -> list[dict]:
    """Each distilled student against every larger size trained from scratch, at the same student FLOPs
    and at the same FLOPs counting the teacher's inference (the larger model's loss interpolated)."""
    students = runs[runs["kind"] == "distilled"]
    scratch = runs[runs["kind"] == "scratch"]
    out = []
    for _, r in students.iterrows():
        for size, curve in scratch[scratch["num_params"] > r["num_params"]].groupby("size", sort=False):
            at_student = _loss_at(curve, r["student_flops"], "student_flops")
            at_total = _loss_at(curve, r["total_flops"], "student_flops")
            out.append({"student": r["size"], "tokens": int(r["tokens"]), "loss": r["loss"], "larger": size,
                        "larger_loss_same_student_flops": at_student, "larger_loss_same_total_flops": at_total,
                        "beats_at_student_flops": bool(r["loss"] < at_student) if math.isfinite(at_student) else None,
                        "beats_at_total_flops": bool(r["loss"] < at_total) if math.isfinite(at_total) else None})
    return out


def plot(runs: pd.DataFrame, spec: DistillSpec, out: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    teacher = runs[runs["kind"] == "teacher"].iloc[0]
    for size in spec.sizes:
        g = runs[runs["size"] == size]
        s, d = (g[g["kind"] == k].sort_values("tokens") for k in ("scratch", "distilled"))
        name = Shape.parse(size).name
        line = axes[0].plot(s["student_flops"], s["loss"], "o-", label=f"{name} scratch")[0]
        axes[0].plot(d["student_flops"], d["loss"], "s--", color=line.get_color(), label=f"{name} distilled")
        axes[1].plot(s["total_flops"], s["loss"], "o-", color=line.get_color(), label=f"{name} scratch")
        axes[1].plot(d["total_flops"], d["loss"], "s--", color=line.get_color(), label=f"{name} distilled")
        axes[2].plot(s["tokens"], s["loss"].to_numpy() - d["loss"].to_numpy(), "o-", label=name)
    for ax, x, title in ((axes[0], "student training FLOPs", "equal student compute"),
                         (axes[1], "student + teacher inference FLOPs", "teacher inference counted")):
        ax.axhline(teacher["loss"], color="grey", ls=":", label=f"teacher {Shape.parse(spec.teacher).name}")
        ax.set(xscale="log", xlabel=x, ylabel="validation loss", title=title)
        ax.legend(fontsize=7)
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set(xscale="log", xlabel="student training tokens", ylabel="L scratch - L distilled (nats)",
                title="what distillation gains")
    axes[2].legend(fontsize=7)
    return [savefig(fig, out, "distill")]


def _verdicts(s: dict) -> list[str]:
    lines = []
    for g in s["gains"]:
        ext = g.get("stops_winning_extrapolated_tokens")
        where = (f"stops winning near {g['stops_winning_at_tokens']:,.0f} tokens" if g["stops_winning_at_tokens"]
                 else (f"wins at every budget (extrapolated to stop near {ext:,.0f} tokens)" if ext else
                       "wins at every budget" if min(g["gain"]) > 0 else
                       "wins at no budget" if max(g["gain"]) <= 0 else "gain changes sign more than once"))
        lines.append(f"{Shape.parse(g['size']).name}: gain {', '.join(f'{v:+.3f}' for v in g['gain'])} nats; {where}")
    return lines


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    t = s["teacher"]
    text = (f"Teacher {Shape.parse(t['size']).name} ({t['num_params']:,} params, {t['tokens']:,} tokens): "
            f"validation loss {t['loss']:.4f}. " + "; ".join(_verdicts(s)) + ".")
    write_report(out, "Distillation lab", [
        ("Distilled vs from scratch at equal student tokens", text, figs, ""),
        ("Distilled students against larger models from scratch", "Larger model's loss interpolated along its "
         "scratch runs at the distilled student's FLOPs (its own, and with the teacher's inference).", [],
         table_html(s["versus_larger"])),
        ("Runs", "", [], table_html(s["runs"]))])


def headline(s: dict) -> str:
    def tally(key: str) -> str:
        known = [v[key] for v in s["versus_larger"] if v[key] is not None]
        return f"{sum(known)} of {len(known)}"

    return ("; ".join(_verdicts(s)) + ". A distilled student beats a larger model from scratch at equal student "
            f"FLOPs in {tally('beats_at_student_flops')} pairs, and counting the teacher's inference in "
            f"{tally('beats_at_total_flops')} (pairs outside the larger model's runs left out).")
