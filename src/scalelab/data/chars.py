"""Character-level datasets for the task labs: the task alphabet, its tokenizer, and token datasets written in
the shard format of `scalelab.data.shards`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from scalelab.data.tasks import TaskMix
from scalelab.errors import UserError
from scalelab.io import build_atomically

EOT = "<|endoftext|>"
ALPHABET = "\n 0123456789+-*=,;:?.abcdefghijklmnopqrstuvwxyz"
CHAR_VOCAB_SIZE = 64  # model vocabulary for character-level task models (47 characters + EOT, padded to 64)


def char_tokenizer():
    """A character-level `tokenizers.Tokenizer` over ``ALPHABET`` (id 0 = EOT)."""
    from tokenizers import Tokenizer, decoders, models

    vocab = {EOT: 0, **{c: i + 1 for i, c in enumerate(ALPHABET)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.Fuse()
    return tok


def encode_chars(text: str) -> list[int]:
    bad = set(text) - set(ALPHABET)
    if bad:
        raise UserError(f"character {sorted(bad)[0]!r} is not in the task alphabet")
    return [ALPHABET.index(c) + 1 for c in text]


def decode_chars(ids) -> str:
    return "".join(ALPHABET[i - 1] if 0 < i <= len(ALPHABET) else "" for i in ids)


def write_char_dataset(root: Path, name: str, texts, meta: dict) -> Path:
    """Write texts {split: str} as a character-level token dataset (the shard format of
    `scalelab.data.shards`) at ``root/name``, atomically; an existing one is reused. ``texts`` is a
    callable returning the dict, so a cached dataset costs nothing."""
    def fill(tmp: Path) -> None:
        char_tokenizer().save(str(tmp / "tokenizer.json"))
        splits = {}
        for split, text in texts().items():
            ids = np.asarray(encode_chars(text), dtype=np.uint16)
            ids.tofile(tmp / f"{split}_000.bin")
            splits[split] = {"shards": [{"file": f"{split}_000.bin", "num_tokens": len(ids)}],
                             "num_tokens": len(ids), "num_bytes": len(text), "num_docs": text.count("\n")}
        manifest = {"format_version": 1, "spec": meta, "dtype": "uint16", "vocab_size": len(ALPHABET) + 1,
                    "eot_id": 0, "splits": splits}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))

    return build_atomically(Path(root) / name, fill)


def build_task_dataset(mix: TaskMix, train_chars: int, root: Path, val_chars: int = 20_000) -> Path:
    """Write ``mix`` as a character-level token dataset, cached by content."""
    key = hashlib.sha256(json.dumps([asdict(mix), train_chars, val_chars]).encode()).hexdigest()[:16]
    return write_char_dataset(root, f"tasks-{key}",
                              lambda: {"train": mix.stream(train_chars, mix.seed),
                                       "val": mix.stream(val_chars, mix.seed + 10_000)}, {"tasks": asdict(mix)})
