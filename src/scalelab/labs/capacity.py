"""Knowledge-capacity lab: how many bits of knowledge does a model store per parameter?

Synthetic biographies (Allen-Zhu & Li 2024, "Physics of language models 3.3"): ``people`` names, each
with attributes drawn uniformly from known sets (city 4 bits, job 3, year 6, color 3). Every pass
writes each person's biography in random phrasings and order, followed by the same facts as
question-answer lines ("kavo mira, city:lima"). A ladder of model sizes is trained for
``exposures`` passes.

The bits a model stores about attribute a of person i are the entropy of the attribute minus the
model's cross-entropy (in bits) of the true value (and the end of line) after the question:

    bits = sum over attributes a of max(0, sum over people i of (log2 |values_a| - CE_ia))

A model that knows nothing predicts the prior (CE = log2 |values|, zero bits); one that knows a fact
exactly has CE = 0 and stores the attribute's full entropy; confident mistakes count against it. CE
is the probability of the value's characters, so mass the model puts on strings that are no value
makes the estimate conservative. Biographies alone taught these small character-level models no
fact in 60-300 passes (docs/LOG.md); the question lines are where the facts get stored.
Allen-Zhu & Li report about 2 bits per parameter at 1000 exposures (about 1 at 100).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from scalelab.data.chars import write_char_dataset
from scalelab.data.people import ATTRIBUTES, People
from scalelab.data.shards import TokenDataset
from scalelab.data.tasks import Problem
from scalelab.errors import UserError
from scalelab.evaluate.harness import score_answers
from scalelab.labs.common import (
    Shape,
    begin,
    model_dict,
    pyplot,
    run_config,
    savefig,
    train_or_load,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.report.page import table_html
from scalelab.train.rundir import RunDir


def bits_stored(logprob_bits: np.ndarray, entropy_bits: np.ndarray) -> dict:
    """Bits of knowledge from per-fact log2-probabilities of the true values.

    logprob_bits: (people, attributes) log2 p(true value); entropy_bits: (attributes,) log2 |values|.
    Per attribute: max(0, people * H_a - sum of cross-entropies), the information the model's
    predictions carry beyond the prior. Clipping is per attribute, not per fact: per-fact clipping
    would count the positive half of a know-nothing model's noise as knowledge."""
    per_attr = np.clip(entropy_bits * logprob_bits.shape[0] + logprob_bits.sum(0), 0.0, None)
    return {"bits": float(per_attr.sum()), "bits_per_attribute": per_attr.tolist(),
            "max_bits": float(entropy_bits.sum() * logprob_bits.shape[0])}


@dataclass(frozen=True)
class CapacitySpec:
    people: int = 200
    exposures: int = 100  # passes over every person's biography and questions
    sizes: tuple[str, ...] = ("32x1", "48x1", "64x2", "96x2")
    lr: float = 3e-3
    weight_decay: float = 0.0  # decay pulls memorised facts back toward the prior
    batch_size: int = 16
    seq_len: int = 128
    seed: int = 0

    def validate(self) -> CapacitySpec:
        if self.people < 10 or self.exposures < 1:
            raise UserError(f"people must be >= 10 and exposures >= 1, got {self.people} and {self.exposures}",
                            arg="people")
        if len(self.sizes) < 2:
            raise UserError("sizes needs two or more model sizes", arg="sizes")
        for s in self.sizes:
            Shape.parse(s)
        return self


QUICK = dict(people=100, exposures=10, sizes=("16x1", "32x1"))


def qa_prompt(name: str, attribute: str) -> str:
    return f"{name}, {attribute}:"


def corpus_text(pop: People, exposures: int, seed: int) -> str:
    """Per pass and person (people shuffled per pass): one biography in random phrasings and order,
    then the person's facts as question-answer lines in random order."""
    rows = pop.table()
    rng = np.random.default_rng([seed, 19])
    lines = []
    for _ in range(exposures):
        for i in rng.permutation(len(rows)):
            r = rows[i]
            lines.append(pop.biography(r, rng) + "\n")
            lines.extend(qa_prompt(r["name"], pop.attributes[j]) + r[pop.attributes[j]] + "\n"
                         for j in rng.permutation(len(pop.attributes)))
    return "".join(lines)


def build_dataset(pop: People, exposures: int, seed: int, root: Path):
    """The biographies as a token dataset; validation = one more pass (the facts are the same)."""
    return TokenDataset(write_char_dataset(
        root, f"bios-qa-{pop.n}-{pop.seed}-{exposures}-{seed}",
        lambda: {"train": corpus_text(pop, exposures, seed), "val": corpus_text(pop, 1, seed + 1)}, {"people": pop.n}))


def fact_logprobs(model, pop: People) -> np.ndarray:
    """(people, attributes) log2 p(value + newline | newline, name, attribute) in the question format."""
    rows = pop.table()
    problems = [Problem(qa_prompt(r["name"], a), r[a]) for r in rows for a in pop.attributes]
    lp = score_answers(model, problems)["logprobs"]  # natural-log probabilities of each answer token
    return np.array([sum(x) for x in lp]).reshape(len(rows), len(pop.attributes)) / math.log(2)


def _config(spec: CapacitySpec, size: str, tokens: int):
    cfg = run_config(model_dict(Shape.parse(size), max_seq_len=spec.seq_len), tokens, spec.lr, spec.batch_size,
                     spec.seq_len, spec.seed)
    return replace(cfg, optim=replace(cfg.optim, weight_decay=spec.weight_decay))


def _row(size, cfg, run, ds, pop, entropy, log) -> dict:
    """Train (or reuse) one model; -> the bits of facts it stores."""
    model, summary = train_or_load(cfg, run, ds, log)
    b = bits_stored(fact_logprobs(model, pop), entropy)
    m = cfg.model
    row = {"size": size, "num_params": m.num_params_total, "num_params_non_embedding": m.num_params_non_embedding,
           "val_loss": summary["final"]["val_loss"], **b,
           "bits_per_param": b["bits"] / m.num_params_total,
           "bits_per_non_embedding_param": b["bits"] / m.num_params_non_embedding,
           "fraction_known": b["bits"] / b["max_bits"]}
    log(f"  {run.name}: {m.num_params_total:,} params stores {b['bits']:,.0f} of {b['max_bits']:,.0f} bits "
        f"({row['bits_per_param']:.3f} bits/param)")
    return row


def run(spec: CapacitySpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    pop = People(spec.people, seed=spec.seed + 1234)
    ds = build_dataset(pop, spec.exposures, spec.seed, out / "data")
    entropy = np.array([math.log2(len(ATTRIBUTES[a][0])) for a in pop.attributes])
    tokens = ds.num_tokens("train")
    cfgs = {Shape.parse(size).name: _config(spec, size, tokens) for size in spec.sizes}
    with LabProgress(out, cfgs, "capacity lab"):
        results = [_row(size, cfgs[Shape.parse(size).name], RunDir.under(out, Shape.parse(size).name), ds, pop,
                        entropy, log) for size in spec.sizes]
    n = np.array([r["num_params"] for r in results])
    bits = np.array([r["bits"] for r in results])
    unsaturated = [r for r in results if r["fraction_known"] < 0.8]
    total_bits = float(entropy.sum() * pop.n)
    summary = {"spec": asdict(spec), "bits_per_person": pop.bits_per_person(), "total_bits": total_bits,
               "training_tokens": tokens, "results": results,
               # non-decreasing up to noise: 1% of all the facts' bits (a know-nothing model scatters around 0)
               "bits_grow_with_params": bool(np.all(np.diff(bits[np.argsort(n)]) >= -0.01 * total_bits)),
               "bits_largest_minus_smallest": float(bits[np.argmax(n)] - bits[np.argmin(n)]),
               # the most any model stored per parameter while still short of all the facts (above 80% a
               # model is limited by the data, not by its size)
               "bits_per_param_best_unsaturated": max((r["bits_per_param"] for r in unsaturated), default=math.nan),
               "fraction_known_largest": results[int(np.argmax(n))]["fraction_known"],
               "method": "sum over attributes of max(0, sum over people of (log2|values| - CE bits of the true value "
                         "after the question 'name, attribute:')); total parameters incl. the tied embedding",
               "seconds": time.perf_counter() - t0}
    figs = plot(summary, out)
    write_summary(out, summary)
    write_report(out, "Knowledge capacity: bits per parameter", [
        ("Bits stored against parameters",
         f"{pop.n} people x {pop.bits_per_person():.0f} bits = {summary['total_bits']:,.0f} bits of facts, "
         "each person's "
         f"biography and questions seen {spec.exposures} times. Below 80% of the facts, the best model stores "
         f"{summary['bits_per_param_best_unsaturated']:.3f} bits per parameter; the largest knows "
         f"{summary['fraction_known_largest']:.0%} of the facts. Method: {summary['method']}.",
         figs, table_html([{k: r[k] for k in ("size", "num_params", "bits", "max_bits", "bits_per_param",
                                                "bits_per_non_embedding_param", "val_loss")} for r in results]))])
    return summary


def plot(summary: dict, out: Path) -> list[Path]:
    plt = pyplot()
    rs = summary["results"]
    fig, ax = plt.subplots(figsize=(6, 4.3))
    n = [r["num_params"] for r in rs]
    ax.plot(n, [r["bits"] for r in rs], "o-", label="bits stored")
    xs = np.array([min(n), max(n)])
    for bpp, ls in ((2.0, "--"), (1.0, ":")):
        ax.plot(xs, bpp * xs, ls, color="gray", lw=1, label=f"{bpp:g} bits/param")
    ax.axhline(summary["total_bits"], color="k", lw=0.8, label="all facts")
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="bits of knowledge")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [savefig(fig, out, "capacity")]


def headline(s: dict) -> str:
    return (f"bits grow with parameters: {s['bits_grow_with_params']}; below 80% of the facts at most "
            f"{s['bits_per_param_best_unsaturated']:.3f} bits/parameter; the largest model knows "
            f"{s['fraction_known_largest']:.0%} of the facts")
