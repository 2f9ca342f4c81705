"""Speculative decoding with a ladder's own models, and the KV cache (Leviathan et al. 2023).

Drafts and targets of one family are trained on the offline corpus (one tokenizer). For every
draft/target pair and gamma, prompts from the held-out split are continued by speculative decoding
(model/speculative.py) and by the target alone, one sequence at a time with KV caches, as a server
decodes one request:

- alpha: Leviathan et al.'s acceptance rate, E[sum_x min(p(x), q(x))] over drafted positions;
- tokens per target pass, measured, against (1 - alpha^(gamma+1)) / (1 - alpha);
- wall-clock speed-up over the target alone, against the paper's (1 - alpha^(gamma+1)) /
  ((1 - alpha)(gamma c + 1)), with c the measured cost of a draft step relative to a target step.

Then the KV cache of each target: its bytes against economics' formula, and what an int8 cache
(model/kvquant.py) costs in validation loss and decoding speed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scalelab.economics.memory import kv_cache_bytes
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
from scalelab.model.kvquant import cached_loss, new_int8_cache
from scalelab.model.speculative import expected_tokens_per_pass, speculative_generate
from scalelab.model.transformer import generate
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class SpeculativeSpec(TrainSettings):
    targets: tuple[str, ...] = ("96x4",)
    drafts: tuple[str, ...] = ("16x1", "32x2", "48x2")
    target_tokens: int = 3_000_000
    draft_tokens: int = 1_000_000
    gammas: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    prompts: int = 6
    prompt_tokens: int = 16
    new_tokens: int = 96
    temperature: float = 1.0

    def validate(self) -> SpeculativeSpec:
        for s in (*self.targets, *self.drafts):
            Shape.parse(s)
        if not self.gammas or min(self.gammas) < 1:
            raise UserError("gammas: one or more values >= 1", arg="gammas")
        if self.prompt_tokens + self.new_tokens > self.seq_len:
            raise UserError(f"prompt_tokens + new_tokens must fit in seq_len={self.seq_len}", arg="new_tokens")
        return self


QUICK = dict(targets=("48x2",), drafts=("16x1",), target_tokens=300_000, draft_tokens=150_000, gammas=(1, 4),
             prompts=2, new_tokens=48, eval_tokens=8_192)


def _plan(spec: SpeculativeSpec) -> dict:
    out = {}
    for role, sizes, tokens in (("target", spec.targets, spec.target_tokens),
                                ("draft", spec.drafts, spec.draft_tokens)):
        for s in sizes:
            out[f"{role}-{Shape.parse(s).name}"] = (role, s, spec.run_config(s, tokens))
    return out


def _timed(fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _step_seconds(model, prompts: torch.Tensor) -> float:
    """Seconds per decoded token of ``model`` alone (batch 1, KV cache), over the prompts."""
    _, secs = _timed(lambda: [generate(model, p[None], 32, temperature=0) for p in prompts])
    return secs / (32 * len(prompts))


def measure_pair(target, draft, prompts: torch.Tensor, spec: SpeculativeSpec, target_s: float,
                 target_step_s: float) -> list[dict]:
    """One row per gamma: alpha, tokens per target pass (measured, predicted), speed-up (measured, predicted);
    ``target_s``: the target's own decoding time on the prompts, ``target_step_s``: its seconds per step."""
    c = _step_seconds(draft, prompts) / target_step_s
    rows = []
    for gamma in spec.gammas:
        g = torch.Generator().manual_seed(spec.seed)
        stats, secs = [], 0.0
        for p in prompts:
            t0 = time.perf_counter()
            stats.append(speculative_generate(target, draft, p[None], spec.new_tokens, gamma, spec.temperature, g)[1])
            secs += time.perf_counter() - t0
        drafted = sum(s.drafted for s in stats)
        alpha = sum(s.alpha_sum for s in stats) / max(1, drafted)
        rounds, tokens = sum(s.rounds for s in stats), sum(s.accepted + s.rounds for s in stats)
        rows.append({"gamma": gamma, "alpha": alpha, "tokens_per_pass": tokens / rounds,
                     "tokens_per_pass_predicted": expected_tokens_per_pass(alpha, gamma), "draft_cost_c": c,
                     "speedup": target_s / secs,
                     "speedup_predicted": expected_tokens_per_pass(alpha, gamma) / (gamma * c + 1)})
    return rows


def measure_cache(name: str, model, ds, prompts: torch.Tensor, spec: SpeculativeSpec) -> dict:
    """A target's KV cache: bytes against economics' formula; int8's loss and decoding-speed cost."""
    cfg, S = model.cfg, model.cfg.max_seq_len
    fp, q8 = model.new_cache(1), new_int8_cache(model, 1)
    windows = ds.eval_windows(spec.seq_len, spec.eval_tokens)
    loss_fp = cached_loss(model, windows, lambda m, b: m.new_cache(b))
    loss_q8 = cached_loss(model, windows, new_int8_cache)
    _, t_fp = _timed(lambda: [generate(model, p[None], spec.new_tokens, temperature=0) for p in prompts])
    _, t_q8 = _timed(lambda: [generate(model, p[None], spec.new_tokens, temperature=0,
                                       cache=new_int8_cache(model, 1)) for p in prompts])
    return {"target": name, "context": S, "fp32_bytes": fp.k.nbytes + fp.v.nbytes,
            "fp32_bytes_formula": kv_cache_bytes(cfg, S, bytes_per=4), "int8_bytes": q8.nbytes(),
            "bf16_bytes_formula": kv_cache_bytes(cfg, S, bytes_per=2), "val_loss_fp32_cache": loss_fp,
            "val_loss_int8_cache": loss_q8, "int8_loss_increase": loss_q8 - loss_fp,
            "int8_decode_time_ratio": t_q8 / t_fp}


def run(spec: SpeculativeSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    plan, models, ds = _plan(spec), {}, None
    with LabProgress(out, {n: p[-1] for n, p in plan.items()}, "speculative-decoding lab"):
        for name, (_, _, cfg) in plan.items():
            ds = ds or load_dataset(cfg, log=log)
            models[name], s = train_or_load(cfg, RunDir.under(out, name), ds, log)
            log(f"  {name:14s} {s['num_params_total']:>9,} params  val {s['final']['val_loss']:.4f}")
    torch.manual_seed(spec.seed)
    prompts = ds.eval_windows(spec.seq_len, spec.prompts * (spec.seq_len + 1))[:spec.prompts, :spec.prompt_tokens]
    rows, caches = [], []
    for t_name in (n for n in plan if n.startswith("target")):
        target, t1 = models[t_name], time.perf_counter()
        for p in prompts:
            generate(target, p[None], spec.new_tokens, temperature=spec.temperature,
                     generator=torch.Generator().manual_seed(spec.seed))
        target_s, target_step_s = time.perf_counter() - t1, _step_seconds(target, prompts)
        for d_name in (n for n in plan if n.startswith("draft")):
            for r in measure_pair(target, models[d_name], prompts, spec, target_s, target_step_s):
                rows.append({"target": t_name, "draft": d_name, **r})
                log(f"  {d_name} -> {t_name} gamma {r['gamma']}: alpha {r['alpha']:.2f}, {r['tokens_per_pass']:.2f} "
                    f"tokens/pass (predicted {r['tokens_per_pass_predicted']:.2f}), speed-up {r['speedup']:.2f}x")
        caches.append(measure_cache(t_name, target, ds, prompts, spec))
    summary = {"spec": asdict(spec), "pairs": rows, "kv_cache": caches, "seconds": time.perf_counter() - t0}
    figs = plot(rows, out)
    write_summary(out, summary)
    write_report(out, "Speculative decoding lab", [
        ("Drafts and targets of one family", headline(summary), figs, table_html(rows)),
        ("The KV cache", "Bytes at the full context against scalelab.economics' formula; the int8 cache's "
                         "cost in validation loss and decoding time.", [], table_html(caches))])
    return summary


def plot(rows: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["draft"], r["target"]) for r in rows}):
        g = [r for r in rows if (r["draft"], r["target"]) == key]
        line = a.plot([r["gamma"] for r in g], [r["tokens_per_pass"] for r in g], "o", label=f"{key[0]} -> {key[1]}")[0]
        a.plot([r["gamma"] for r in g], [r["tokens_per_pass_predicted"] for r in g], "-", color=line.get_color())
        b.plot([r["gamma"] for r in g], [r["speedup"] for r in g], "o-", color=line.get_color(), label=key[0])
        b.plot([r["gamma"] for r in g], [r["speedup_predicted"] for r in g], ":", color=line.get_color())
    a.set(xlabel="gamma (tokens drafted per target pass)", ylabel="tokens per target pass",
          title="measured (dots) vs (1 - a^(g+1)) / (1 - a)")
    b.axhline(1, color="grey", lw=0.8)
    b.set(xlabel="gamma", ylabel="speed-up over the target alone", title="wall clock (dotted: predicted from c)")
    for ax in (a, b):
        ax.legend(fontsize=7)
    return [savefig(fig, out, "speculative")]


def headline(s: dict) -> str:
    best = max(s["pairs"], key=lambda r: r["speedup"])
    err = np.mean([abs(r["tokens_per_pass"] / r["tokens_per_pass_predicted"] - 1) for r in s["pairs"]])
    kv = s["kv_cache"][0]
    return (f"best: {best['draft']} drafting for {best['target']} at gamma {best['gamma']}, "
            f"alpha {best['alpha']:.2f}, {best['speedup']:.2f}x; tokens per pass within {err:.1%} of "
            f"Leviathan et al.'s formula on average; int8 KV cache: {kv['int8_bytes'] / kv['fp32_bytes']:.2f}x "
            f"the fp32 bytes, {kv['int8_loss_increase']:+.1e} "
            f"nats, decoding {kv['int8_decode_time_ratio']:.2f}x the time")
