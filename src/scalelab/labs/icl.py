"""In-context learning appears: induction heads and their phase change (Olsson et al. 2022).

Models of 1, 2 and 3 layers are trained on the offline corpus (code, where copying from earlier in
the context pays), with checkpoints kept at log-spaced steps. At every checkpoint (model/heads.py):

- the in-context learning score on held-out windows: loss late in the context minus loss early
  (positions 96-127 vs 8-24 of 128; Olsson et al. use tokens 500 vs 50 of 512);
- on random tokens repeated once ([r_1..r_n, r_1..r_n], never seen in training): the loss on the
  repeat (an induction head predicts it by copying) and the best head's prefix-matching score
  (attention from r_j's repeat to the token after its first occurrence) and its copying score.

Olsson et al. find that induction heads form abruptly, in models of two or more layers only (one
layer cannot compose a previous-token head with a matching head), with a visible bump in the
training loss. Finally a few-shot task: k pairs (x_i, y_i) of random tokens, then a query x_q among
them; accuracy of predicting y_q, against k and depth.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from scalelab.data.corpora import iter_corpus
from scalelab.data.quality import training_id
from scalelab.errors import UserError
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    corpus_head,
    pyplot,
    savefig,
    train_or_load,
    write_documents,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.model.heads import (
    attention_patterns,
    copying_scores,
    in_context_score,
    position_losses,
    prefix_matching_scores,
    repeated_tokens,
)
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir
from scalelab.train.runner import load_run


@dataclass(frozen=True)
class ICLSpec(TrainSettings):
    sizes: tuple[str, ...] = ("64x1", "64x2", "64x3")
    tokens: int = 4_000_000
    checkpoints: int = 14
    """evaluation points, log-spaced over training."""
    repeat_len: int = 32
    shots: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    repeat_fraction: float = 0.5
    """share of the training bytes in documents that repeat a span of random words six times (where copying
    from the context pays, as in Olsson et al.'s repeated-sequence data); 0 = the corpus alone."""
    max_bytes: int = 8_000_000
    eval_windows: int = 64
    """held-out windows every checkpoint is scored on."""

    def validate(self) -> ICLSpec:
        for s in self.sizes:
            Shape.parse(s)
        if 2 * self.repeat_len > self.seq_len or self.checkpoints < 3:
            raise UserError("repeat_len must be at most seq_len / 2 and checkpoints >= 3", arg="repeat_len")
        if not 0 <= self.repeat_fraction < 0.9:
            raise UserError("repeat_fraction must be in [0, 0.9)", arg="repeat_fraction")
        if 3 * max(self.shots) + 2 > self.seq_len:
            raise UserError(f"the largest shot count needs 3 x shots + 2 <= seq_len={self.seq_len}", arg="shots")
        return self


QUICK = dict(sizes=("32x1", "32x2"), tokens=300_000, checkpoints=5, shots=(0, 4), eval_windows=16, max_bytes=2_000_000)


def _steps(spec: ICLSpec, total: int) -> tuple[int, ...]:
    return tuple(sorted({int(round(s)) for s in np.geomspace(10, total, spec.checkpoints)} | {total}))


def probe_sequences(spec: ICLSpec, tokenizer, words: list[str], n: int = 16) -> torch.Tensor:
    """(n, 2 repeat_len): spans of random corpus words never trained on (their own seed), tokenized,
    cut to repeat_len tokens and repeated once; with no repeat data, random token ids (model/heads.py)."""
    if not words:
        return repeated_tokens(n, spec.repeat_len, spec.vocab_size, seed=spec.seed + 1, low=spec.vocab_size // 4)
    rng = np.random.default_rng(spec.seed + 10_001)
    rows = [tokenizer.encode(" ".join(rng.choice(words, spec.repeat_len))).ids[:spec.repeat_len] for _ in range(n)]
    r = torch.tensor(rows)
    return torch.cat([r, r], dim=1)


def _score(model, spec: ICLSpec, val: torch.Tensor, rep: torch.Tensor) -> dict:
    """The in-context scores of one checkpoint."""
    T = spec.seq_len
    losses = position_losses(model, val)
    rep_losses = position_losses(model, torch.cat([rep, rep[:, :1]], dim=1))  # (2n,)
    n = spec.repeat_len
    pm = prefix_matching_scores(attention_patterns(model, rep), n)  # (layers, heads)
    layer, head = divmod(int(pm.argmax()), pm.shape[1])
    return {"icl_score": in_context_score(losses, (T // 16, T * 3 // 16), (T * 3 // 4, T)),
            "val_loss": float(losses.mean()), "repeat_loss_first": float(rep_losses[:n - 1].mean()),
            "repeat_loss_second": float(rep_losses[n:2 * n - 1].mean()), "prefix_matching_max": float(pm.max()),
            "best_head": f"L{layer}H{head}", "copying_best_head": float(copying_scores(model)[layer, head])}


@torch.no_grad()
def few_shot_accuracy(model, spec: ICLSpec, k: int, trials: int = 200) -> float:
    """k pairs "x y ;" of random tokens, then a query x among them: is y the argmax next token?"""
    g = torch.Generator().manual_seed(spec.seed + 7 + k)
    low, V = spec.vocab_size // 4, spec.vocab_size
    sep = low - 1  # one fixed separator token
    if k == 0:  # no examples: the mapping cannot be known; chance is 1 / (V - low)
        xs = torch.randint(low, V, (trials, 1), generator=g)
        ys = torch.randint(low, V, (trials, 1), generator=g)
        prompt = torch.cat([torch.full((trials, 1), sep), xs], dim=1)
        return float((model(prompt).logits[:, -1].argmax(-1) == ys[:, 0]).float().mean())
    xs = torch.stack([torch.randperm(V - low, generator=g)[:k] + low for _ in range(trials)])  # distinct inputs
    ys = torch.randint(low, V, (trials, k), generator=g)
    pairs = torch.stack([xs, ys, torch.full_like(xs, sep)], dim=-1).view(trials, 3 * k)
    q = torch.randint(0, k, (trials,), generator=g)
    prompt = torch.cat([pairs, xs[torch.arange(trials), q][:, None]], dim=1)  # (trials, 3k + 1)
    pred = model(prompt).logits[:, -1].argmax(-1)
    return float((pred == ys[torch.arange(trials), q]).float().mean())


def corpus(spec: ICLSpec, out: Path) -> Path:
    """OUT/data/icl.jsonl: the offline corpus (its documents keep their ids, so its validation split)
    and, on the training side, documents that repeat a span of 8 random corpus words six times."""
    path = out / "data" / "icl.jsonl"
    if path.exists():
        return path
    docs = corpus_head("stdlib", spec.max_bytes)
    n = sum(len(t) for _, t in docs)
    rng = np.random.default_rng(spec.seed)
    words = _words(spec, docs)
    rows = [(i, t, "corpus") for i, t in docs]
    n_repeat = int(len(docs) * spec.repeat_fraction / (1 - spec.repeat_fraction) * n / len(docs) / 600)
    for k in range(n_repeat):  # ~600 characters each, so the fraction holds by bytes too
        span = " ".join(rng.choice(words, 8))  # ~30-40 tokens: each repeat lies within one training window
        rows.append((training_id("repeat", k, 0.03), "\n".join([span] * 6), "repeat"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_documents(path, rows)
    return path


def _words(spec: ICLSpec, docs: list | None = None) -> list[str]:
    """The identifiers of the corpus's first 200 documents: what the repeated spans are drawn from."""
    docs = docs or [d for _, d in zip(range(200), iter_corpus("stdlib"))]
    return sorted({w for _, t in docs[:200] for w in t.split() if w.isidentifier()})


def run(spec: ICLSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    data = asdict(replace(spec.data, corpus=str(corpus(spec, out).resolve()), id_field="id")) \
        if spec.repeat_fraction else None
    plan = {Shape.parse(s).name: spec.run_config(s, spec.tokens, data=data, log_every=5) for s in spec.sizes}
    curves, fewshot = {}, []
    ds = load_dataset(next(iter(plan.values())), log=log)  # one [data] for every depth
    val = ds.eval_windows(spec.seq_len, spec.eval_windows * (spec.seq_len + 1))  # held-out windows and probes:
    rep = probe_sequences(spec, ds.tokenizer(), _words(spec) if spec.repeat_fraction else [])  # the same for all
    with LabProgress(out, plan, "in-context learning lab"):
        for name, cfg in plan.items():
            run = RunDir.under(out, name)
            steps = _steps(spec, cfg.total_steps)
            train_or_load(cfg, run, ds, log, branch_points=steps)
            curves[name] = [{"step": s, "tokens": s * cfg.train.tokens_per_step,
                             **_score(load_run(run, checkpoint=run.branch_point(s))[0], spec, val, rep)}
                            for s in steps]
            model = load_run(run)[0]
            fewshot += [{"model": name, "shots": k, "accuracy": few_shot_accuracy(model, spec, k)} for k in spec.shots]
            last = curves[name][-1]
            log(f"  {name}: ICL score {last['icl_score']:+.3f}, repeat loss {last['repeat_loss_first']:.2f} -> "
                f"{last['repeat_loss_second']:.2f}, prefix matching {last['prefix_matching_max']:.2f}")
    summary = {"spec": asdict(spec), "curves": curves, "few_shot": fewshot, "phase_change": phase_changes(curves),
               "train_loss": {n: [(r.step, r.train_loss) for r in RunDir.under(out, n).read_metrics()] for n in plan},
               "seconds": time.perf_counter() - t0}
    figs = plot(summary, out)
    write_summary(out, summary)
    write_report(out, "In-context learning lab: induction heads", [
        ("The phase change", headline(summary), figs, table_html([{"model": n, **r} for n, c in curves.items()
                                                                  for r in c])),
        ("Few-shot retrieval of a random mapping", "Accuracy of the query's label after k examples.", [],
         table_html(fewshot))])
    return summary


def phase_changes(curves: dict) -> dict:
    """Per model: the checkpoint interval where the repeat's gain (first-pass loss minus repeated-pass
    loss) rises fastest per e-fold of steps, the largest gain reached, and the gain at the end."""
    out = {}
    for name, c in curves.items():
        steps = np.array([r["step"] for r in c], float)
        gain = np.array([r["repeat_loss_first"] - r["repeat_loss_second"] for r in c])
        rise = np.diff(gain) / np.diff(np.log(steps))
        i = int(np.argmax(rise))
        out[name] = {"from_step": int(steps[i]), "to_step": int(steps[i + 1]), "rise_per_e_fold": float(rise[i]),
                     "repeat_gain_max": float(gain.max()), "repeat_gain_final": float(gain[-1])}
    return out


def plot(s: dict, out: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for name, c in s["curves"].items():
        tok = [r["tokens"] for r in c]
        line = axes[0].plot(tok, [r["repeat_loss_second"] for r in c], "o-", label=name)[0]
        axes[1].plot(tok, [r["prefix_matching_max"] for r in c], "o-", color=line.get_color(), label=name)
        axes[2].plot(tok, [r["icl_score"] for r in c], "o-", color=line.get_color(), label=name)
        steps, loss = zip(*s["train_loss"][name])
        axes[3].plot(np.array(steps) * s["spec"]["batch_size"] * s["spec"]["seq_len"], loss, lw=0.8, label=name,
                     color=line.get_color())
    for ax, y, title in ((axes[0], "loss on the repeated half", "copying random tokens from context"),
                         (axes[1], "best head's prefix-matching score", "induction heads"),
                         (axes[2], "ICL score (late - early loss)", "in-context learning score"),
                         (axes[3], "training loss", "the loss curve (bump = phase change)")):
        ax.set(xscale="log", xlabel="training tokens", ylabel=y, title=title)
        ax.legend(fontsize=7)
    return [savefig(fig, out, "icl")]


def headline(s: dict) -> str:
    parts = []
    for name, p in s["phase_change"].items():
        last = s["curves"][name][-1]
        best = max((r for r in s["few_shot"] if r["model"] == name), key=lambda r: r["shots"])
        parts.append(f"{name}: the repeat's loss falls up to {p['repeat_gain_max']:.2f} nats below the first "
                     f"pass (steepest between steps {p['from_step']} and {p['to_step']}; {p['repeat_gain_final']:.2f} "
                     f"at the end), prefix matching {last['prefix_matching_max']:.2f}, "
                     f"ICL score {last['icl_score']:+.2f}, {best['shots']}-shot accuracy {best['accuracy']:.2f}")
    return "; ".join(parts) + f". Chance in the few-shot task: {1 / (s['spec']['vocab_size'] * 3 / 4):.3f}."

