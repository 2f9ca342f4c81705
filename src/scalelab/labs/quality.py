"""Data quality: what filtering a raw corpus is worth, as a compute multiplier.

The filter is the one web pipelines use (CCNet, Wenzek et al. 2020; FineWeb, Penedo et al. 2024):
exact and MinHash near-duplicate removal (data/quality.py, `datasketch`), then a quality score, the
perplexity of a small reference model trained on trusted text (CCNet's Wikipedia model), keeping
the ``keep_fraction`` of documents it finds most fluent.

By default the raw corpus is the standard library with flaws planted in known amounts (exact
copies with a heavy-tailed popularity, near copies, junk: random characters and word salad), so the
filter's precision and recall can be counted; ``corpus=PATH`` filters a corpus of your own instead
(JSONL with ``id`` and ``text``, or text files; nothing planted). A tenth of the clean documents is
set apart as the reference model's trusted text and is in neither corpus. The same ladder (sizes at
``tokens_per_param`` tokens per parameter) is trained on the raw and on the filtered corpus, with one
tokenizer (trained on the trusted text), and scored on the same held-out clean documents (the split
follows each document's id; the filter only touches training documents). laws/shift.py then says
how the law moves: a compute multiplier, an offset of the irreducible loss, or everything.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from scalelab.data.corpora import is_validation
from scalelab.data.quality import Noise, deduplicate, plant_noise
from scalelab.data.tokenizer import load_tokenizer
from scalelab.errors import UserError
from scalelab.io import atomic_write_text
from scalelab.labs.common import (
    Shape,
    TrainSettings,
    begin,
    corpus_head,
    pyplot,
    read_documents,
    savefig,
    train_or_load,
    write_documents,
    write_report,
    write_summary,
)
from scalelab.labs.progress import LabProgress
from scalelab.laws.shift import fit_shift
from scalelab.report.page import table_html
from scalelab.train.loop import load_dataset
from scalelab.train.rundir import RunDir


@dataclass(frozen=True)
class QualitySpec(TrainSettings):
    corpus: str = ""
    """'' = the standard library with planted flaws; or a local corpus of raw documents to filter."""
    max_bytes: int = 20_000_000
    noise_exact: float = 0.2
    noise_near: float = 0.1
    noise_junk: float = 0.2
    """planted flaws as fractions of the clean training bytes (default corpus only)."""
    dedup_threshold: float = 0.75
    keep_fraction: float = 0.8
    """the perplexity filter keeps this fraction of the deduplicated training documents."""
    reference: str = "32x2"
    reference_tokens: int = 1_000_000
    reference_fraction: float = 0.1
    score_tokens: int = 1024
    """tokens of each document the reference model scores."""
    sizes: tuple[str, ...] = ("32x2", "48x2", "64x2", "80x2")
    tokens_per_param: float = 20.0

    def validate(self) -> QualitySpec:
        for s in (*self.sizes, self.reference):
            Shape.parse(s)
        if len(self.sizes) < 3:
            raise UserError("sizes: three or more, to fit a compute law to each corpus", arg="sizes")
        if not 0 < self.keep_fraction <= 1 or not 0 < self.reference_fraction < 0.5:
            raise UserError("keep_fraction must be in (0, 1] and reference_fraction in (0, 0.5)", arg="keep_fraction")
        if min(self.noise_exact, self.noise_near, self.noise_junk) < 0 or not 0.5 <= self.dedup_threshold < 1:
            raise UserError("noise fractions must be >= 0 and dedup_threshold in [0.5, 1)", arg="dedup_threshold")
        return self


QUICK = dict(max_bytes=3_000_000, reference="32x1", reference_tokens=200_000, sizes=("16x1", "24x1", "32x1"),
             tokens_per_param=8.0, score_tokens=256, eval_tokens=16_384)


def _data(spec: QualitySpec, corpus: Path, tokenizer: Path | None = None) -> dict:
    """The spec's [data] on one of the lab's corpora (and the shared tokenizer, once trained)."""
    return asdict(replace(spec.data, corpus=str(corpus.resolve()), id_field="id",
                          tokenizer=str(tokenizer.resolve()) if tokenizer else ""))


def _config(spec: QualitySpec, size: str, data: dict, tokens: int | None = None):
    cfg = spec.run_config(size, tokens or 1, data=data)
    if tokens is None:  # the ladder's budget: tokens_per_param x the model's parameters
        cfg = replace(cfg, train=replace(cfg.train, max_tokens=int(spec.tokens_per_param * cfg.model.num_params_total)))
    return cfg


def raw_corpora(spec: QualitySpec, folder: Path) -> tuple[Path, Path]:
    """reference.jsonl (trusted text) and raw.jsonl (the corpus to filter), written once."""
    ref, raw = folder / "reference.jsonl", folder / "raw.jsonl"
    if ref.exists() and raw.exists():
        return ref, raw
    folder.mkdir(parents=True, exist_ok=True)
    docs = corpus_head(spec.corpus or "stdlib", spec.max_bytes)
    trusted = [(i, t) for i, t in docs if is_validation(i + "#reference", spec.reference_fraction)]
    taken = {i for i, _ in trusted}
    rest = [(i, t) for i, t in docs if i not in taken]
    noise = Noise(spec.noise_exact, spec.noise_near, spec.noise_junk)
    rows = plant_noise(rest, noise, spec.seed) if not spec.corpus else [(i, t, "raw") for i, t in rest]
    write_documents(ref, [(i, t, "reference") for i, t in trusted])
    write_documents(raw, rows)
    return ref, raw


@torch.no_grad()
def perplexity_scores(model, tokenizer, texts: list[str], seq_len: int, max_tokens: int) -> np.ndarray:
    """Mean next-token loss (nats) of each text's first ``max_tokens`` tokens under ``model``
    (inf for a text of fewer than two tokens)."""
    windows, owner = [], []
    for k, enc in enumerate(tokenizer.encode_batch(texts)):
        ids = enc.ids[:max_tokens + 1]
        for s in range(0, max(len(ids) - 1, 0), seq_len):
            windows.append(ids[s:s + seq_len + 1])
            owner.append(k)
    total, count = np.zeros(len(texts)), np.zeros(len(texts))
    for b in range(0, len(windows), 64):
        chunk = windows[b:b + 64]
        x = torch.zeros(len(chunk), max(map(len, chunk)), dtype=torch.long)  # (B, T + 1), zero-padded
        mask = torch.zeros_like(x[:, 1:], dtype=torch.float)
        for j, w in enumerate(chunk):
            x[j, :len(w)] = torch.tensor(w)
            mask[j, :len(w) - 1] = 1
        logits = model(x[:, :-1]).logits  # (B, T, V)
        nll = F.cross_entropy(logits.transpose(1, 2).float(), x[:, 1:], reduction="none") * mask  # (B, T)
        np.add.at(total, owner[b:b + 64], nll.sum(1).numpy())
        np.add.at(count, owner[b:b + 64], mask.sum(1).numpy())
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def filter_corpus(spec: QualitySpec, raw: Path, model, tokenizer, folder: Path) -> tuple[Path, dict]:
    """filtered.jsonl: validation documents untouched; training documents deduplicated, then the
    ``keep_fraction`` with the lowest reference perplexity kept. -> (path, what was removed, by kind)."""
    out, stats_file = folder / "filtered.jsonl", folder / "filter.json"
    if out.exists() and stats_file.exists():
        return out, json.loads(stats_file.read_text())
    rows = read_documents(raw)
    train = [(i, t) for i, t, _ in rows if not is_validation(i, 0.03)]
    dedup = deduplicate(train, threshold=spec.dedup_threshold)
    kept = set(dedup.kept)
    text_of = dict(train)
    scores = dict(zip(dedup.kept, perplexity_scores(model, tokenizer, [text_of[i] for i in dedup.kept],
                                                    spec.seq_len, spec.score_tokens)))
    threshold = float(np.quantile(np.array(list(scores.values())), spec.keep_fraction))
    fluent = {i for i, s in scores.items() if s <= threshold}
    by_kind = {}
    for i, _, k in rows:
        if is_validation(i, 0.03):
            continue
        s = by_kind.setdefault(k, {"docs": 0, "exact_dup": 0, "near_dup": 0, "perplexity": 0, "kept": 0})
        s["docs"] += 1
        s["exact_dup" if i in dedup.exact else "near_dup" if i in dedup.near else
          "kept" if i in fluent else "perplexity"] += 1
    stats = {"threshold_nats": threshold, "by_kind": by_kind,
             "scores": {k: [float(scores[i]) for i, _, kk in rows if kk == k and i in scores] for k in by_kind}}
    write_documents(out, [(i, t, k) for i, t, k in rows if is_validation(i, 0.03) or (i in kept and i in fluent)])
    atomic_write_text(stats_file, json.dumps(stats))
    return out, stats


def _prepare(spec: QualitySpec, out: Path, log) -> tuple[dict, dict]:
    """The corpora, the reference model, the filter -> ({'raw': data, 'filtered': data}, filter stats)."""
    folder = out / "data"
    ref, raw = raw_corpora(spec, folder)
    ref_cfg = _config(spec, spec.reference, _data(spec, ref), tokens=spec.reference_tokens)
    ref_ds = load_dataset(ref_cfg, log=log)
    tok_file = folder / "tokenizer.json"
    if not tok_file.exists():
        shutil.copyfile(ref_ds.path / "tokenizer.json", tok_file)
    model, _ = train_or_load(ref_cfg, RunDir.under(out, f"reference-{Shape.parse(spec.reference).name}"), ref_ds, log)
    filtered, stats = filter_corpus(spec, raw, model, load_tokenizer(tok_file), folder)
    return {"raw": _data(spec, raw, tok_file), "filtered": _data(spec, filtered, tok_file)}, stats


def run(spec: QualitySpec, out: str | Path, log=print) -> dict:
    spec, out, t0 = begin(spec, out)
    data, stats = _prepare(spec, out, log)
    plan = {f"{Shape.parse(s).name}-{corpus}": (s, corpus, _config(spec, s, data[corpus]))
            for corpus in ("raw", "filtered") for s in spec.sizes}
    rows, sets = [], {}
    with LabProgress(out, {n: p[-1] for n, p in plan.items()}, "quality lab"):
        for name, (size, corpus, cfg) in plan.items():
            ds = sets.get(corpus) or sets.setdefault(corpus, load_dataset(cfg, log=log))
            if cfg.train.max_tokens > ds.num_tokens("train"):
                raise UserError(f"{name} needs {cfg.train.max_tokens:,} tokens but the {corpus} corpus has "
                                f"{ds.num_tokens('train'):,}: raise max_bytes or lower tokens_per_param")
            _, s = train_or_load(cfg, RunDir.under(out, name), ds, log)
            rows.append({"size": size, "corpus": corpus, "num_params": s["num_params_total"], "tokens": s["tokens"],
                         "flops": s["flops"], "loss": s["final"]["val_loss"]})
    runs = pd.DataFrame(rows)
    raw_r, fil = runs[runs["corpus"] == "raw"], runs[runs["corpus"] == "filtered"]
    shift = fit_shift(raw_r["flops"], raw_r["loss"], fil["flops"], fil["loss"])
    summary = {"spec": asdict(spec), "filter": {k: v for k, v in stats.items() if k != "scores"},
               "corpus_tokens": {k: ds.num_tokens("train") for k, ds in sets.items()}, "runs": rows,
               "shift": shift, "seconds": time.perf_counter() - t0}
    figs = plot(runs, shift, stats, out)
    write_summary(out, summary)
    _report(out, summary, figs)
    return summary


def plot(runs: pd.DataFrame, shift: dict, stats: dict, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    p = shift["multiplier"]["params"]
    grid = np.logspace(math.log10(runs["flops"].min()) - 0.2, math.log10(runs["flops"].max()) + 0.5, 60)
    for corpus, m, style in (("raw", 1.0, "o"), ("filtered", p["m"], "s")):
        g = runs[runs["corpus"] == corpus]
        line = a.plot(g["flops"], g["loss"], style, label=f"{corpus}")[0]
        a.plot(grid, p["E"] + p["A"] * (m * grid) ** -p["alpha"], "-", color=line.get_color(), lw=0.8)
    a.set(xscale="log", xlabel="training FLOPs", ylabel="validation loss (clean held-out documents)",
          title=f"filtering is worth {p['m']:.2f}x compute")
    a.legend(fontsize=8)
    scores = {k: np.asarray(v)[np.isfinite(v)] for k, v in stats["scores"].items() if len(v)}
    bins = np.linspace(min(map(np.min, scores.values())), max(map(np.max, scores.values())), 40)
    for k, v in scores.items():
        b.hist(v, bins=bins, alpha=0.5, label=f"{k} ({len(v)})")
    b.axvline(stats["threshold_nats"], color="k", ls="--", label="kept below")
    b.set(xlabel="reference model loss (nats/token)", ylabel="documents", title="the perplexity filter")
    b.legend(fontsize=7)
    return [savefig(fig, out, "quality")]


def _verdict(s: dict) -> str:
    sh = s["shift"]
    lo, hi = sh["multiplier"]["interval"]
    return (f"filtered data is worth {sh['m']:.2f}x compute [{lo:.2f}, {hi:.2f}] ({sh['level']:.0%} bootstrap); "
            f"best description by AICc: {sh['best']} (multiplier {sh['multiplier']['aicc']:.1f}, offset "
            f"{sh['offset']['aicc']:.1f}, separate laws {sh['separate']['aicc']:.1f})")


def _report(out: Path, s: dict, figs: list[Path]) -> None:
    kinds = [{"kind": k, **v} for k, v in s["filter"]["by_kind"].items()]
    cols = ("E", "A", "alpha", "m", "delta", "E_a", "A_a", "alpha_a", "E_b", "A_b", "alpha_b")
    laws = [{"hypothesis": k, **{c: s["shift"][k]["params"].get(c, "") for c in cols}, "sse": s["shift"][k]["sse"],
             "aicc": s["shift"][k]["aicc"]} for k in ("multiplier", "offset", "separate")]
    write_report(out, "Data quality lab", [
        ("What filtering is worth", _verdict(s) + ".", figs, table_html(laws)),
        ("What the filter removed (training documents, by planted kind)",
         f"Perplexity threshold {s['filter']['threshold_nats']:.3f} nats/token.", [], table_html(kinds)),
        ("Runs", "", [], table_html(s["runs"]))])


def headline(s: dict) -> str:
    kinds = s["filter"]["by_kind"]
    removed = {k: 1 - v["kept"] / v["docs"] for k, v in kinds.items()}
    return _verdict(s) + "; removed: " + ", ".join(f"{k} {v:.0%}" for k, v in removed.items())
