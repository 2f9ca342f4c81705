"""Token shards: the corpus tokenized once into memory-mapped arrays, with a manifest.

Layout of a dataset directory (cached under ``$SCALELAB_CACHE/datasets/<key>/``; the key hashes the
corpus content, the tokenizer settings and the split, so a change to any of them rebuilds)::

    manifest.json          splits -> shards (file, num_tokens), bytes of text per split, dtype
    tokenizer.json         the BPE tokenizer the shards were encoded with
    train_000.bin ...      uint16 (vocab <= 65536) or uint32 token ids, documents separated by EOT

Sampling is a pure function of (seed, step, micro-step): resuming at step s reproduces exactly the
batches an uninterrupted run would have seen, with no sampler state to save.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scalelab.data.corpora import COMPRESSED, corpus_fingerprint, is_validation, iter_corpus, local_files
from scalelab.data.tasks import mix_documents
from scalelab.data.tokenizer import end_of_text, load_tokenizer, save_atomic, tokenizer_file, train_bpe
from scalelab.errors import UserError
from scalelab.io import build_atomically, cache_dir
from scalelab.ui import ByteProgress

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataSpec:
    """What defines a tokenized dataset (a subset of the run's DataConfig plus the vocab size)."""

    corpus: str = "stdlib"
    vocab_size: int = 4096
    text_field: str = "text"
    hf_split: str = "train"
    hf_data_files: str | None = None
    hf_revision: str | None = None
    max_bytes: int = 0  # 0 = the whole corpus
    tokenizer_train_bytes: int = 8_000_000
    val_fraction: float = 0.03
    shard_tokens: int = 50_000_000
    tasks: tuple[str, ...] = ()
    """task problems mixed into the text (`data.tasks.mix_documents`), ``task_fraction`` of its characters,
    never the ``task_heldout`` problems per task that runs are evaluated on."""
    task_fraction: float = 0.0
    task_heldout: int = 0
    tokenizer: str = ""
    """an existing tokenizer.json to encode with ('' = train a byte-level BPE of ``vocab_size``)."""
    id_field: str = ""
    """the JSONL/Parquet field naming each document ('' = FILE:LINE): it decides the split."""

    def key(self) -> str:
        fp = corpus_fingerprint(self.corpus, self.text_field, self.max_bytes or None, self.hf_split,
                                self.hf_data_files, self.hf_revision)
        parts = [FORMAT_VERSION, fp, self.vocab_size, self.hf_split, self.hf_data_files, self.max_bytes,
                 self.tokenizer_train_bytes, self.val_fraction, self.shard_tokens]
        if self.task_fraction > 0:  # (keys of datasets without tasks are unchanged)
            parts += [_task_fingerprint(self.tasks), self.task_fraction, self.task_heldout]
        if self.id_field:  # (keys of datasets split by FILE:LINE are unchanged)
            parts.append(["id_field", self.id_field])
        if self.tokenizer:  # its content, not its path; the vocabulary is the tokenizer's
            parts[2] = hashlib.sha256(tokenizer_file(self.tokenizer).read_bytes()).hexdigest()[:16]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _task_fingerprint(names: tuple[str, ...]) -> list[str]:
    """Task specs, with a .jsonl file of pairs named by its content (edited pairs rebuild the data)."""
    return [hashlib.sha256(Path(n).expanduser().read_bytes()).hexdigest()[:16] if n.endswith(".jsonl") else n
            for n in names]


def documents(spec: DataSpec):
    """The ``(doc_id, text)`` pairs a dataset of ``spec`` is built from, in order (both splits)."""
    yield from _docs(spec)


def _docs(spec: DataSpec):
    if spec.task_fraction > 0:
        yield from mix_documents(_corpus_docs(spec), spec.tasks, spec.task_fraction, spec.task_heldout)
    else:
        yield from _corpus_docs(spec)


def _corpus_docs(spec: DataSpec):
    total = 0
    for doc_id, text in iter_corpus(spec.corpus, spec.text_field, spec.hf_split, spec.hf_data_files,
                                    spec.hf_revision, spec.id_field):
        yield doc_id, text
        total += len(text.encode("utf-8", errors="replace"))
        if spec.max_bytes and total >= spec.max_bytes:
            return


def build_dataset(spec: DataSpec, root: Path | None = None, log=print) -> Path:
    """Tokenize ``spec``'s corpus into shards (or return the cached directory)."""
    root = Path(root) if root else cache_dir() / "datasets"
    out = root / spec.key()

    def fill(tmp: Path) -> None:
        log(f"building dataset {out.name} from corpus {spec.corpus!r} (vocab {spec.vocab_size}) ...")
        tok = load_tokenizer(tokenizer_file(spec.tokenizer)) if spec.tokenizer else _train_tokenizer(spec)
        save_atomic(tok, tmp / "tokenizer.json")
        manifest = _write_shards(spec, tok, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))

    return build_atomically(out, fill)


def _train_tokenizer(spec: DataSpec):
    """A byte-level BPE of ``spec.vocab_size`` trained on the first ``tokenizer_train_bytes`` of training text."""
    train_texts, budget = [], spec.tokenizer_train_bytes
    for doc_id, text in _docs(spec):
        if budget <= 0:
            break
        if not is_validation(doc_id, spec.val_fraction):
            train_texts.append(text)
            budget -= len(text.encode("utf-8", errors="replace"))
    if not train_texts:
        raise UserError(f"data.corpus {spec.corpus!r} yielded no training text")
    return train_bpe(train_texts, spec.vocab_size)


def corpus_bytes(spec: DataSpec) -> int | None:
    """Bytes the build will read, for its progress bar (None when unknown: a hub dataset)."""
    if spec.corpus.startswith("hf:") or spec.corpus == "stdlib" or spec.task_fraction > 0:
        return spec.max_bytes or None
    files = local_files(spec.corpus)
    if any(f.suffix in COMPRESSED for f in files):  # its text is larger than its files
        return None
    size = sum(f.stat().st_size for f in files)
    return min(size, spec.max_bytes or size)


def _write_shards(spec: DataSpec, tok, out: Path) -> dict:
    eot = end_of_text(tok)[1]
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    splits = {s: {"shards": [], "num_tokens": 0, "num_bytes": 0, "num_docs": 0} for s in ("train", "val")}
    handles: dict[str, tuple] = {}

    def write(split: str, ids: np.ndarray):
        info = splits[split]
        while len(ids):
            if split not in handles or handles[split][1] >= spec.shard_tokens:
                if split in handles:
                    handles[split][0].close()
                name = f"{split}_{len(info['shards']):03d}.bin"
                info["shards"].append({"file": name, "num_tokens": 0})
                handles[split] = [open(out / name, "wb"), 0]
            fh = handles[split]
            room = spec.shard_tokens - fh[1]
            chunk, ids = ids[:room], ids[room:]
            chunk.astype(dtype).tofile(fh[0])
            fh[1] += len(chunk)
            info["shards"][-1]["num_tokens"] += len(chunk)
            info["num_tokens"] += len(chunk)

    batch: list[tuple[str, str]] = []

    def flush():
        encs = tok.encode_batch([t for _, t in batch])  # in parallel: the tokenizers library's threads
        for (doc_id, text), enc in zip(batch, encs):
            split = "val" if is_validation(doc_id, spec.val_fraction) else "train"
            n = len(text.encode("utf-8", errors="replace"))
            splits[split]["num_bytes"] += n
            splits[split]["num_docs"] += 1
            write(split, np.asarray(enc.ids + [eot], dtype=np.int64))
            bar.advance(n)
        batch.clear()

    with ByteProgress(f"tokenizing {spec.corpus}", corpus_bytes(spec)) as bar:
        size = 0
        for doc in _docs(spec):
            batch.append(doc)
            size += len(doc[1])
            if len(batch) >= 4096 or size >= 8_000_000:  # batches big enough to keep every core busy
                flush()
                size = 0
        if batch:
            flush()
    for fh in handles.values():
        fh[0].close()
    for s, info in splits.items():
        if info["num_tokens"] == 0:
            raise UserError(f"the {s} split of corpus {spec.corpus!r} is empty; add documents or change "
                            "data.val_fraction")
    return {"format_version": FORMAT_VERSION, "spec": spec.__dict__, "dtype": np.dtype(dtype).name,
            "vocab_size": tok.get_vocab_size(), "eot_id": eot, "splits": splits}


class TokenDataset:
    """Memory-mapped view of a dataset directory, with deterministic batch sampling."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            raise UserError(f"{self.path} is not a scalelab dataset (no manifest.json)")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{mpath} is corrupt; delete {self.path} and it will be rebuilt") from None
        self.dtype = np.dtype(self.manifest["dtype"])
        self.vocab_size = self.manifest["vocab_size"]
        self.eot_id = self.manifest["eot_id"]
        self.splits: dict[str, list[np.memmap]] = {}
        for split, info in self.manifest["splits"].items():
            arrs = []
            for sh in info["shards"]:
                f = self.path / sh["file"]
                expected = sh["num_tokens"] * self.dtype.itemsize
                if not f.exists() or f.stat().st_size != expected:
                    raise UserError(f"corrupt shard {f}: expected {expected} bytes; delete {self.path} "
                                    "and it will be rebuilt")
                arrs.append(np.memmap(f, dtype=self.dtype, mode="r"))
            self.splits[split] = arrs

    def tokenizer(self):
        return load_tokenizer(self.path / "tokenizer.json")

    def num_tokens(self, split: str) -> int:
        return self.manifest["splits"][split]["num_tokens"]

    def bytes_per_token(self, split: str = "val") -> float:
        info = self.manifest["splits"][split]
        return info["num_bytes"] / info["num_tokens"]

    def sample(self, batch_size: int, seq_len: int, seed: int, step: int, micro: int = 0,
               split: str = "train", limit: int = 0, accum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """B random windows of seq_len + 1 tokens; a pure function of (seed, step, micro). With ``limit``
        (`DataConfig.unique_tokens`), epochs over ``limit`` tokens instead: limit / (seq_len + 1) windows
        spread evenly over the split, each epoch a fresh permutation of them, so a run of D tokens sees
        each D / limit times."""
        if limit:
            return self._epoch_sample(batch_size, seq_len, seed, (step * accum + micro) * batch_size, split, limit)
        arrs = self.splits[split]
        sizes = np.array([len(a) for a in arrs], dtype=np.int64)
        if sizes.max() <= seq_len + 1:
            raise UserError(f"the {split} split has fewer than seq_len+1={seq_len + 1} tokens per shard; "
                            "use a larger corpus or a shorter train.seq_len")
        rng = np.random.default_rng([seed, step, micro])
        which = rng.choice(len(arrs), size=batch_size, p=sizes / sizes.sum()) if len(arrs) > 1 \
            else np.zeros(batch_size, dtype=np.int64)
        starts = (rng.random(batch_size) * (sizes[which] - seq_len - 1)).astype(np.int64)
        buf = np.stack([arrs[w][s:s + seq_len + 1] for w, s in zip(which, starts)]).astype(np.int64)
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]  # inputs (B, T), targets (B, T)

    def _epoch_sample(self, batch_size: int, seq_len: int, seed: int, first: int, split: str, limit: int):
        arrs = self.splits[split]
        ends = np.cumsum([len(a) for a in arrs])
        if limit > ends[-1]:
            raise UserError(f"data.unique_tokens={limit:,} exceeds the {ends[-1]:,} tokens of the {split} split; "
                            "lower it or use a larger corpus")
        n = limit // (seq_len + 1)  # the unique set: n windows spread evenly over the whole split, so that
        if n < 1:  # it samples the corpus as fresh data does (a prefix would be a few documents' topics)
            raise UserError(f"data.unique_tokens={limit} is shorter than one window of {seq_len + 1} tokens")
        stride = (int(ends[-1]) - seq_len - 1) // max(1, n - 1)
        rows, orders = [], {}
        for g in range(first, first + batch_size):  # the g-th window this run draws
            epoch, i = divmod(g, n)
            if epoch not in orders:  # one permutation per epoch (a batch spans one or two)
                orders[epoch] = np.random.default_rng([seed, epoch, 7919]).permutation(n)
            rows.append(_read_span(arrs, ends, int(orders[epoch][i]) * stride, seq_len + 1))
        t = torch.from_numpy(np.stack(rows).astype(np.int64))
        return t[:, :-1], t[:, 1:]

    def eval_windows(self, seq_len: int, max_tokens: int, split: str = "val") -> torch.Tensor:
        """A fixed validation set: up to max_tokens worth of windows, evenly spaced over the split (the
        shards read in place, as one stream: only the windows are loaded)."""
        arrs = self.splits[split]
        ends = np.cumsum([len(a) for a in arrs])
        total = int(ends[-1])
        n_avail = (total - 1) // (seq_len + 1)
        n = max(1, min(n_avail, max_tokens // seq_len))
        if n_avail < 1:
            raise UserError(f"the {split} split is shorter than one window of {seq_len + 1} tokens")
        stride = (total - seq_len - 1) // max(1, n - 1) if n > 1 else 0
        rows = [_read_span(arrs, ends, i * stride, seq_len + 1) for i in range(n)]
        return torch.from_numpy(np.stack(rows))  # (n, T + 1)


def _read_span(arrs: list, ends: np.ndarray, start: int, length: int) -> np.ndarray:
    """Tokens [start, start + length) of shards read as one stream (a span may cross a shard boundary)."""
    parts, pos = [], start
    while length > 0:
        k = int(np.searchsorted(ends, pos, side="right"))
        offset = pos - (int(ends[k - 1]) if k else 0)
        piece = np.asarray(arrs[k][offset:offset + length], dtype=np.int64)
        parts.append(piece)
        pos, length = pos + len(piece), length - len(piece)
    return np.concatenate(parts)
