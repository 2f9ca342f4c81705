"""Text sources. Each yields ``(doc_id, text)`` pairs in a deterministic order.

* ``stdlib`` (default, no download): every ``.py`` file of the running interpreter's standard library,
  about 30 MB of human-written code and English docstrings, in sorted path order.
* a local path: a ``.txt`` file (one document), a ``.jsonl`` file (one document per line, field
  ``text_field``), a ``.parquet`` file (column ``text_field``), or a directory of such files.
* ``hf:NAME`` (or ``hf:NAME:CONFIG``): a Hugging Face dataset, streamed with `datasets`. This needs
  the network or a local cache; it is never used on the default path.

The train/validation split is by document: a document is in validation when a hash of its id falls
under ``val_fraction``, so the split is stable whatever order or subset the documents arrive in.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from scalelab.errors import UserError

TEXT_SUFFIXES = {".txt", ".md", ".py", ".jsonl", ".parquet"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib() -> Iterator[tuple[str, str]]:
    root = stdlib_root()
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if "site-packages" in rel.parts:
            continue
        yield str(rel), p.read_text(encoding="utf-8", errors="replace")


def _iter_file(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    suf = path.suffix
    if suf == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{i + 1} is not valid JSON; each line of a .jsonl file "
                                    "must be one JSON object") from None
                if text_field not in rec:
                    raise UserError(f"{path}:{i + 1} has no field {text_field!r}; set data.text_field")
                yield f"{path.name}:{i}", str(rec[text_field])
    elif suf == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise UserError(f"{path} has no column {text_field!r} (columns: {table.column_names}); "
                            "set data.text_field")
        for i, t in enumerate(table.column(text_field).to_pylist()):
            yield f"{path.name}:{i}", str(t)
    else:
        yield path.name, path.read_text(encoding="utf-8", errors="replace")


def iter_hf(name: str, split: str, text_field: str, config: str | None = None,
            data_files: str | None = None) -> Iterator[tuple[str, str]]:
    """Stream a Hugging Face dataset. ``name`` may be a hub id or a builder such as ``json`` with
    ``data_files`` (how the tests exercise this path offline)."""
    try:
        import datasets
    except ImportError:
        raise UserError("the hf: corpus needs the `datasets` package: pip install 'scalelab[hf]'") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True, data_files=data_files)
        it = iter(ds)
        first = next(it, None)
    except Exception as e:  # network, hub, missing file: many exception types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"data.corpus hf:{name}: cannot load the dataset ({msg}); it needs the network or a "
                        "local Hugging Face cache") from None
    if first is None:
        return

    for i, rec in enumerate(itertools.chain([first], it)):
        if text_field not in rec:
            raise UserError(f"dataset {name} has no field {text_field!r}; set data.text_field")
        yield f"{name}:{i}", str(rec[text_field])


def iter_corpus(corpus: str, text_field: str = "text", hf_split: str = "train",
                hf_data_files: str | None = None) -> Iterator[tuple[str, str]]:
    if corpus == "stdlib":
        yield from iter_stdlib()
        return
    if corpus.startswith("hf:"):
        parts = corpus[3:].split(":")
        yield from iter_hf(parts[0], hf_split, text_field, parts[1] if len(parts) > 1 else None, hf_data_files)
        return
    path = Path(corpus).expanduser()
    if not path.exists():
        raise UserError(f"data.corpus: {corpus!r} is neither 'stdlib', 'hf:NAME' nor an existing path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"data.corpus: directory {path} holds no {sorted(TEXT_SUFFIXES)} files")
        for f in files:
            yield from _iter_file(f, text_field)
    else:
        yield from _iter_file(path, text_field)


def is_validation(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return (h % 1_000_000) < val_fraction * 1_000_000


def corpus_fingerprint(corpus: str, text_field: str, max_bytes: int | None, hf_split: str = "train",
                       hf_data_files: str | None = None) -> str:
    """A content hash of the corpus (so caches follow the data, not its name).

    Local paths, and hf: corpora read from local ``data_files`` or capped by ``max_bytes``, are hashed
    by content. A hub dataset read whole is keyed by its name, split and data files (hashing it
    would mean downloading it to compute a cache key)."""
    h = hashlib.sha256()
    h.update(f"{text_field}|{max_bytes}".encode())
    if corpus.startswith("hf:"):
        h.update(f"{corpus}|{hf_split}|{hf_data_files}".encode())
        local = bool(hf_data_files) and bool(glob.glob(str(Path(hf_data_files).expanduser())))
        if not (local or max_bytes):
            return h.hexdigest()[:16]
    total = 0
    for doc_id, text in iter_corpus(corpus, text_field, hf_split, hf_data_files):
        b = text.encode("utf-8", errors="replace")
        h.update(doc_id.encode())
        h.update(b)
        total += len(b)
        if max_bytes and total >= max_bytes:
            break
    return h.hexdigest()[:16]
