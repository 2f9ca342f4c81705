"""Post-training: SFT, then DPO on the model's own answers (Rafailov et al. 2023; InstructGPT's recipe
without the reward model).

A character-level model is pretrained on a stream of arithmetic problems, briefly, so that it is
right only part of the time. Then, through train/preference.py:

1. SFT: fine-tuning on prompt -> answer demonstrations, the loss on the answer tokens only.
2. Preferences: for each of ``pair_prompts`` training prompts the SFT model samples two answers at
   temperature 1; a pair is kept when exactly one is right (chosen) and one wrong (rejected): a
   preference with a checkable answer instead of a human label.
3. DPO from the SFT model (the frozen reference) at several beta.

Every model is scored on held-out problems never trained on: greedy exact match, and against the
SFT model the KL of its answer distribution, E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)] estimated on
sampled answers: how far each beta let the policy move.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from scalelab.data.tasks import TaskMix, parse_task, problem_set
from scalelab.errors import UserError
from scalelab.evaluate.codec import CHARS
from scalelab.evaluate.harness import decode, evaluate_task
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
from scalelab.train.preference import completion_logps, dpo_loss, pad_completions, sft_loss
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class DPOSpec:
    task: str = "addition:digits=3,format=plain"
    size: str = "96x3"
    pretrain_tokens: int = 3_000_000
    """pretraining on the problem stream: at 96x3, about 37% exact match (docs/LOG.md), right only part
    of the time, so that two samples often disagree."""
    pretrain_batch: int = 32
    sft_examples: int = 2_000
    sft_steps: int = 150
    sft_lr: float = 1e-3
    pair_prompts: int = 1_500
    dpo_steps: int = 20
    """about three passes over the pairs: 150 steps at lr 2e-4 (25 passes) collapsed every policy (docs/LOG.md)."""
    dpo_lr: float = 5e-5
    betas: tuple[float, ...] = (0.03, 0.1, 0.3)
    nll_weight: float = 1.0
    """each beta is trained twice: pure DPO, and with this weight on the chosen answers' NLL added to
    the loss (RPO, Pang et al. 2024; TRL's rpo_alpha); 0 = pure DPO only."""
    batch_size: int = 64
    eval_problems: int = 300
    seed: int = 0

    def validate(self) -> DPOSpec:
        parse_task(self.task)
        Shape.parse(self.size)
        if not self.betas or min(self.betas) <= 0:
            raise UserError("betas: one or more values > 0", arg="betas")
        return self


QUICK = dict(task="addition:digits=2,format=plain", size="32x2", pretrain_tokens=1_500_000, pretrain_batch=8,
             sft_examples=400, sft_steps=40, pair_prompts=400, dpo_steps=10, betas=(0.1,), eval_problems=100)


def _pairs(problems) -> tuple[list[list[int]], list[list[int]]]:
    """(contexts, answers) as token ids."""
    pairs = [CHARS.pair(p.prompt, p.answer) for p in problems]
    return [c for c, _ in pairs], [a for _, a in pairs]


def _batches(n: int, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.choice(n, min(batch, n), replace=False)


def sft(model, problems, spec: DPOSpec):
    """Fine-tune a copy of ``model`` on the problems' answers."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.0)
    ctx, ans = _pairs(problems)
    for idx in _batches(len(problems), spec.batch_size, spec.sft_steps, spec.seed):
        ids, mask = pad_completions([ctx[i] for i in idx], [ans[i] for i in idx])
        loss = sft_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def preference_pairs(model, task, problems, seed: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(context, chosen answer ids, rejected answer ids) where one of two samples is right."""
    out = []
    for p, d in zip(problems, decode(model, problems, samples=2, temperature=1.0, seed=seed)):
        right = [task.answer_of(t) == task.answer_of(p.answer) for t in d.texts]
        if right[0] != right[1]:
            good, bad = (d.texts[0], d.texts[1]) if right[0] else (d.texts[1], d.texts[0])
            ctx = CHARS.context(p.prompt)
            out.append((ctx, CHARS.encode(good + "\n"), CHARS.encode(bad + "\n")))
    return out


def dpo(reference, pairs, beta: float, spec: DPOSpec, nll_weight: float = 0.0):
    """DPO from ``reference`` (frozen) on the pairs (plus ``nll_weight`` x the chosen answers' NLL per
    token) -> (policy, mean reward margin over the last 10 steps)."""
    policy = copy.deepcopy(reference).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=spec.dpo_lr, weight_decay=0.0)
    margins = []
    for idx in _batches(len(pairs), spec.batch_size, spec.dpo_steps, spec.seed + 1):
        ctx = [pairs[i][0] for i in idx]
        ids, mask = pad_completions(ctx + ctx, [pairs[i][1] for i in idx] + [pairs[i][2] for i in idx])
        with torch.no_grad():
            rc, rr = completion_logps(reference, ids, mask).chunk(2)
        pc, pr = completion_logps(policy, ids, mask).chunk(2)
        loss, margin = dpo_loss(pc, pr, rc, rr, beta)
        if nll_weight:  # per token of the chosen answers
            loss = loss - nll_weight * pc.sum() / mask[:len(idx), 1:].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        margins.append(float(margin.mean()))
    return policy.eval(), float(np.mean(margins[-10:]))


@torch.no_grad()
def kl_from(policy, reference, problems, seed: int) -> float:
    """E_{y ~ policy}[log policy(y|x) - log reference(y|x)] over sampled answers (nats per answer)."""
    ctx, ans = [], []
    for p, d in zip(problems, decode(policy, problems, samples=4, temperature=1.0, seed=seed)):
        for t in d.texts:
            ctx.append(CHARS.context(p.prompt))
            ans.append(CHARS.encode(t + "\n"))
    ids, mask = pad_completions(ctx, ans)
    return float((completion_logps(policy, ids, mask) - completion_logps(reference, ids, mask)).mean())


def _checkpointed(out: Path, name: str, make, template):
    """A post-trained model saved under OUT/post/NAME (reloaded if there: a restarted lab skips it)."""
    path = out / "post" / name
    if (path / "model.safetensors").exists():
        model = copy.deepcopy(template)
        load_model(model, str(path / "model.safetensors"))
        return model.eval(), None
    model, extra = make()
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / "model.tmp"))  # written whole, then renamed: never half a file
    os.replace(path / "model.tmp", path / "model.safetensors")
    return model, extra


def run(spec: DPOSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    task = parse_task(spec.task)
    mix = TaskMix(tasks=(spec.task,), test_size=spec.eval_problems, seed=spec.seed)
    tests = mix.test_sets()[task.spec]
    held = {p.prompt for p in tests}
    cfg = run_config(model_dict(Shape.parse(spec.size), max_seq_len=64), spec.pretrain_tokens, 3e-3,
                     spec.pretrain_batch, 64, spec.seed)
    with LabProgress(out, {"base": cfg}, "post-training lab"):
        base, _ = train_or_load(cfg, RunDir.under(out, "base"), task_dataset(mix, out, 4 * spec.pretrain_tokens), log)
    demos = problem_set(task, spec.sft_examples, spec.seed + 1, exclude=held)
    ref, _ = _checkpointed(out, "sft", lambda: (sft(base, demos, spec), None), base)
    prompts = problem_set(task, spec.pair_prompts, spec.seed + 2, exclude=held)
    pairs = preference_pairs(ref, task, prompts, spec.seed)
    if len(pairs) < 8:
        raise UserError(f"only {len(pairs)} of {len(prompts)} prompts got one right and one wrong answer from the "
                        "SFT model: raise pretrain_tokens or pick an easier task", arg="pretrain_tokens")
    rows = [{"model": "pretrained", "beta": None, **_scores(base, ref, task, tests, spec)},
            {"model": "sft", "beta": None, **_scores(ref, ref, task, tests, spec)}]
    for beta in spec.betas:
        for w in sorted({0.0, spec.nll_weight}):
            name = "dpo" if not w else f"dpo+nll{w:g}"
            policy, margin = _checkpointed(out, f"{name}-beta{beta:g}", lambda b=beta, w=w: dpo(ref, pairs, b, spec, w),
                                           base)
            rows.append({"model": name, "beta": beta, **_scores(policy, ref, task, tests, spec),
                         "final_margin": margin})
            log(f"  {name} beta {beta:g}: exact match {rows[-1]['exact_match']:.3f} (SFT {rows[1]['exact_match']:.3f}),"
                f" KL from SFT {rows[-1]['kl_from_sft']:.3f} nats")
    summary = {"spec": asdict(spec), "pairs": len(pairs), "pair_prompts": len(prompts), "results": rows,
               "seconds": time.perf_counter() - t0}
    figs = plot(rows, out)
    write_summary(out, summary)
    write_report(out, "Post-training lab: SFT and DPO", [("Exact match and KL from the SFT model", headline(summary),
                                                          figs, table_html(rows))])
    return summary


def _scores(model, ref, task, tests, spec: DPOSpec) -> dict:
    r = evaluate_task(model, task, tests)
    return {"exact_match": r["exact_match"], "answer_nll_per_token": r["answer_nll_per_token"],
            "kl_from_sft": kl_from(model, ref, tests, spec.seed + 3)}


def plot(rows: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, ax = plt.subplots(1, 1, figsize=(6, 4))
    for r in rows:
        label = r["model"] + (f" beta={r['beta']:g}" if r["beta"] else "")
        ax.scatter(max(r["kl_from_sft"], 1e-3), r["exact_match"], label=label)
    ax.set(xscale="log", xlabel="KL from the SFT model (nats per answer)", ylabel="exact match (held-out)",
           title="what each step of post-training buys")
    ax.legend(fontsize=7)
    return [savefig(fig, out, "dpo")]


def headline(s: dict) -> str:
    r = {(x["model"], x["beta"]): x for x in s["results"]}
    base, ref = r[("pretrained", None)], r[("sft", None)]
    parts = []
    for kind in dict.fromkeys(x["model"] for x in s["results"] if x["model"].startswith("dpo")):
        best = max((x for x in s["results"] if x["model"] == kind), key=lambda x: x["exact_match"])
        parts.append(f"{kind} {best['exact_match']:.3f} (beta {best['beta']:g}, KL from SFT {best['kl_from_sft']:.3f})")
    return (f"exact match on {s['spec']['eval_problems']} held-out problems: pretrained {base['exact_match']:.3f}, "
            f"SFT {ref['exact_match']:.3f}, best " + ", ".join(parts) +
            f"; {s['pairs']} preference pairs from {s['pair_prompts']} prompts")
