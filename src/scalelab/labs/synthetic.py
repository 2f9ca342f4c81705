"""Synthetic data and model collapse (Shumailov et al. 2024, "AI models collapse when trained on
recursively generated data"; Gerstgrasser et al. 2024, "Is model collapse inevitable?").

Generation 0 is trained on real text (the offline corpus). Each later generation is trained, at the
same size and the same number of tokens, on text sampled from the generation before it:

    replace:  only the previous generation's samples (Shumailov's setting)
    mix:      half the previous generation's samples, half real training text

Every model is scored on the same held-out real documents (the synthetic corpora carry the real
validation documents under their own ids, so the split, the tokenizer and the evaluation windows are
those of generation 0; the lab checks it). Each synthetic corpus records the run, checkpoint, weights
hash, seed and temperature it was sampled with (``data/<chain>-g<k>.json``), and is re-derivable
from them. Beside the loss on real data, the samples' own statistics show the mechanism: the
distribution's tails thin (fewer distinct n-grams, lower unigram entropy) generation after generation.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scalelab.data.corpora import is_validation
from scalelab.data.quality import training_id
from scalelab.data.shards import documents
from scalelab.data.tokenizer import end_of_text, load_tokenizer
from scalelab.errors import UserError
from scalelab.io import atomic_write_text
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    pyplot,
    savefig,
    train_or_load,
    write_documents,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.model.transformer import generate
from scalelab.report.page import table_html
from scalelab.train.data import data_spec
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir, file_sha256
from scalelab.train.runner import load_run

CHAINS = ("replace", "mix")


@dataclass(frozen=True)
class SyntheticSpec(TrainSettings):
    size: str = "48x2"
    tokens: int = 1_000_000
    """training tokens of every generation (and tokens sampled for the next)."""
    generations: int = 4
    """synthetic generations after generation 0."""
    temperature: float = 1.0
    real_fraction: float = 0.5
    """the mix chain's share of real training text."""
    max_bytes: int = 8_000_000

    def validate(self) -> SyntheticSpec:
        Shape.parse(self.size)
        if self.generations < 1 or self.temperature <= 0 or not 0 < self.real_fraction < 1:
            raise UserError("generations >= 1, temperature > 0 and real_fraction in (0, 1)", arg="generations")
        return self


QUICK = dict(size="32x1", tokens=100_000, generations=2, max_bytes=2_000_000, eval_tokens=16_384)


# ---- sampling a corpus from a model ----------------------------------------------------------------

def sample_documents(model, tokenizer, n_tokens: int, seq_len: int, seed: int, temperature: float = 1.0,
                     batch: int = 128) -> tuple[list[str], int]:
    """At least ``n_tokens`` tokens sampled from ``model``, each sequence started at the end-of-text
    token (a document boundary) and cut at the ones it generates -> (documents, tokens sampled)."""
    eot = end_of_text(tokenizer)[1]
    g = torch.Generator().manual_seed(seed)
    docs, n = [], 0
    while n < n_tokens:
        start = torch.full((batch, 1), eot, dtype=torch.long)
        out = generate(model, start, seq_len - 1, temperature=temperature, generator=g)[:, 1:]  # (B, T - 1)
        n += out.numel()
        for row in out.tolist():
            piece = []
            for t in row + [eot]:
                if t == eot:
                    if piece:
                        docs.append(tokenizer.decode(piece))
                    piece = []
                else:
                    piece.append(t)
    return docs, n


def synthesize(run: RunDir, tokenizer, path: Path, n_tokens: int, seq_len: int, seed: int, temperature: float,
               extra_docs: list[tuple[str, str, str]]) -> dict:
    """``path`` (JSONL): documents sampled from ``run``'s newest checkpoint under training-side ids,
    plus ``extra_docs``; beside it PATH.json saying what sampled them. -> that record."""
    ckpt = run.latest_checkpoint()
    model, _, _ = load_run(run, checkpoint=ckpt)
    docs, sampled = sample_documents(model, tokenizer, n_tokens, seq_len, seed, temperature)
    rows = [(training_id(f"{path.stem}", i, 0.03), t, "synthetic") for i, t in enumerate(docs)] + extra_docs
    write_documents(path, rows)
    record = {"generator": str(run.path), "checkpoint": ckpt.name,
              "weights_sha256": file_sha256(ckpt / "model.safetensors"), "seed": seed, "temperature": temperature,
              "tokens_sampled": sampled, "documents": len(docs), "sequence_tokens": seq_len - 1}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2))
    return record


def token_stats(ids: list[int], n: int = 4) -> dict:
    """Diversity of a token stream: unigram entropy (bits/token), token types used, and the fraction of
    its n-grams that are distinct."""
    counts = np.array(list(Counter(ids).values()), float)
    p = counts / counts.sum()
    grams = Counter(tuple(ids[i:i + n]) for i in range(0, len(ids) - n + 1))
    return {"unigram_entropy_bits": float(-(p * np.log2(p)).sum()), "types": len(counts),
            f"distinct_{n}gram_fraction": len(grams) / max(1, sum(grams.values())), "stats_tokens": len(ids)}


# ---- the lab ---------------------------------------------------------------------------------------

STATS_TOKENS = 200_000  # tokens of each corpus its diversity is measured on


def _configs(spec: SyntheticSpec, out: Path) -> dict:
    """run name -> (chain, generation, config): generation 0 on real data, then each chain's generations."""
    real = {**asdict(spec.data), "max_bytes": spec.max_bytes}
    plan = {"g0-real": ("real", 0, spec.run_config(spec.size, spec.tokens, data=real))}
    tok = (out / "data" / "tokenizer.json").resolve()
    for k in range(1, spec.generations + 1):
        for chain in CHAINS:
            data = {**asdict(spec.data), "corpus": str((out / "data" / f"{chain}-g{k}.jsonl").resolve()),
                    "tokenizer": str(tok), "id_field": "id"}
            plan[f"{chain}-g{k}"] = (chain, k, spec.run_config(spec.size, spec.tokens, data=data))
    return plan


def _real_docs(cfg, ds, spec: SyntheticSpec) -> tuple[list, list]:
    """The real validation documents (all), and real training documents drawn at random from the whole
    split until they hold the mix chain's share (a prefix would be a few modules: narrower than the
    corpus, the repetition lab's lesson)."""
    val, train = [], []
    for doc_id, text in documents(data_spec(cfg)):
        (val if is_validation(doc_id, cfg.data.val_fraction) else train).append((doc_id, text))
    want = spec.real_fraction * spec.tokens * 1.05 * ds.bytes_per_token("train")  # bytes
    chosen, n = [], 0
    for i in np.random.default_rng(spec.seed).permutation(len(train)):
        if n >= want:
            break
        chosen.append((*train[i], "real"))
        n += len(train[i][1].encode("utf-8", errors="replace"))
    return [(i, t, "real-val") for i, t in val], chosen


def _next_corpus(spec: SyntheticSpec, out: Path, chain: str, k: int, parent: RunDir, tok, real: tuple) -> dict:
    path = out / "data" / f"{chain}-g{k}.jsonl"
    if path.exists() and path.with_suffix(".json").exists():
        return json.loads(path.with_suffix(".json").read_text())
    share = spec.real_fraction if chain == "mix" else 0.0
    extra = real[0] + (real[1] if chain == "mix" else [])
    return synthesize(parent, tok, path, math.ceil((1 - share) * spec.tokens * 1.05), spec.seq_len,
                      spec.seed * 1000 + 10 * k + CHAINS.index(chain), spec.temperature, extra)


def _synthetic_ids(ds, record: dict) -> list[int]:
    """The first STATS_TOKENS tokens of a corpus's synthetic documents, as sampled (before re-encoding)."""
    path = Path(record["corpus"])
    with open(path, encoding="utf-8") as f:
        texts = [r["text"] for r in map(json.loads, f) if r["kind"] == "synthetic"][:STATS_TOKENS // 16]
    tok = ds.tokenizer()
    return [t for enc in tok.encode_batch(texts) for t in enc.ids][:STATS_TOKENS]


def run(spec: SyntheticSpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    plan = _configs(spec, out)
    rows = []
    with LabProgress(out, {n: p[-1] for n, p in plan.items()}, "synthetic-data lab"):
        cfg0 = plan["g0-real"][-1]
        ds0 = load_dataset(cfg0, log=log)
        (out / "data").mkdir(exist_ok=True)
        if not (out / "data" / "tokenizer.json").exists():
            shutil.copyfile(ds0.path / "tokenizer.json", out / "data" / "tokenizer.json")
        tok, real = load_tokenizer(out / "data" / "tokenizer.json"), _real_docs(cfg0, ds0, spec)
        parents = {}
        for name, (chain, k, cfg) in plan.items():
            record = None
            if k > 0:
                record = {**_next_corpus(spec, out, chain, k, parents[chain], tok, real),
                          "corpus": cfg.data.corpus}
            ds = ds0 if k == 0 else load_dataset(cfg, log=log)
            if ds.num_tokens("val") != ds0.num_tokens("val"):
                raise UserError(f"{name}: its validation split differs from the real corpus's; delete {out}/data")
            run = RunDir.under(out, name)
            _, s = train_or_load(cfg, run, ds, log)
            for c in (CHAINS if k == 0 else (chain,)):
                parents[c] = run
            ids = np.concatenate(ds0.splits["train"])[:STATS_TOKENS].tolist() if k == 0 else _synthetic_ids(ds, record)
            rows.append({"chain": chain, "generation": k, "val_loss": s["final"]["val_loss"], "tokens": s["tokens"],
                         "sampled_from": record and Path(record["generator"]).name, **token_stats(ids)})
            log(f"  {name:12s} val loss on real data {rows[-1]['val_loss']:.4f}")
    summary = {"spec": asdict(spec), "runs": rows, "collapse": collapse(rows), "seconds": time.perf_counter() - t0}
    figs = plot(rows, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def collapse(rows: list[dict]) -> dict:
    """Per chain: the loss on real data gained over generation 0 at each generation, and its growth per
    generation after the first (a least-squares slope over generations 1..G: the first generation's
    jump is the sampler's approximation error, the later growth is the compounding)."""
    base = next(r["val_loss"] for r in rows if r["generation"] == 0)
    out = {}
    for chain in CHAINS:
        g = sorted((r["generation"], r["val_loss"] - base) for r in rows if r["chain"] == chain)
        ks, d = np.array([k for k, _ in g], float), np.array([v for _, v in g])
        growth = float(np.polyfit(ks, d, 1)[0]) if len(g) > 1 else float("nan")
        out[chain] = {"excess_loss": d.tolist(), "growth_per_generation": growth}
    return out


def plot(rows: list[dict], out: Path) -> list[Path]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    g0 = next(r for r in rows if r["generation"] == 0)
    for chain, style in zip(CHAINS, ("o-", "s--")):
        g = [g0] + [r for r in rows if r["chain"] == chain]
        a.plot([r["generation"] for r in g], [r["val_loss"] for r in g], style, label=chain)
        b.plot([r["generation"] for r in g], [r["distinct_4gram_fraction"] for r in g], style, label=chain)
    a.set(xlabel="generation", ylabel="validation loss on real text", title="training on a model's own samples")
    b.set(xlabel="generation (0: real text)", ylabel="distinct 4-grams / 4-grams",
          title="diversity of each generation's training text")
    for ax in (a, b):
        ax.legend(fontsize=8)
    return [savefig(fig, out, "synthetic")]


def _verdict(s: dict) -> str:
    c = s["collapse"]
    return "; ".join(f"{chain}: {', '.join(f'{v:+.3f}' for v in c[chain]['excess_loss'])} nats over real data "
                     f"(generations 1-{len(c[chain]['excess_loss'])}; then {c[chain]['growth_per_generation']:+.3f} "
                     "per generation)" for chain in CHAINS)


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    write_report(out, "Synthetic data lab: model collapse", [
        ("Loss on real held-out text, generation by generation", _verdict(s) + ".", figs, table_html(s["runs"]))])


def headline(s: dict) -> str:
    return _verdict(s)
