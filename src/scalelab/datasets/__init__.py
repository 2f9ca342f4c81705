"""Public data by reference: scalelab ships no third-party data. Each public dataset is built on first
use from its source files at a pinned commit, downloaded (or copied from a local mirror), verified by
sha256 and cached, as SciPy and scikit-learn do with theirs.

    load("misfitting-final")    -> the tidy table (a DataFrame), fetched and built if needed
    table_path("chinchilla-epoch") -> the cached tidy CSV
    fetch("pythia-evals-curves")   -> the raw files, verified

`registry.py` lists the datasets (source, commit, licence, citation, builder); `download.py` says where
files come from and where they are cached (``$SCALELAB_CACHE``, ``$SCALELAB_DATA_DIR``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scalelab.datasets.download import cache_dir, fetch_files, raw_path
from scalelab.datasets.registry import BUILD_VERSION, DATASETS, PublicDataset, get
from scalelab.io import atomic_write_text

__all__ = ["DATASETS", "PublicDataset", "Status", "fetch", "get", "load", "status", "table_path"]


def fetch(name: str) -> dict[str, Path]:
    """The dataset's raw files (path inside its repository -> verified local file), fetched where missing."""
    ds = get(name)
    files = ds.files()
    paths = fetch_files(files, f"{ds.name} ({ds.source.repo}@{ds.source.commit[:7]})")
    prefix = f"{ds.source.repo}/{ds.source.commit}/"
    return {k.removeprefix(prefix): p for k, p in zip(files, paths)}


def _table_file(ds: PublicDataset) -> Path:
    """The built table's place in the cache, named by what it was built from (files and builder)."""
    key = hashlib.sha256(repr((BUILD_VERSION, sorted(ds.files().items()))).encode()).hexdigest()[:16]
    return cache_dir() / "tables" / f"{ds.name}-{key}.csv"


def table_path(name: str) -> Path:
    """The tidy table as a CSV in the cache, built from the raw files on first use."""
    ds = get(name)
    out = _table_file(ds)
    if not out.is_file():
        table = ds.build(fetch(name))
        atomic_write_text(out, table.to_csv(index=False, float_format=ds.float_format, lineterminator="\n"))
    return out


def load(name: str) -> pd.DataFrame:
    """The tidy table of a public dataset (`scalelab data list` names them)."""
    return pd.read_csv(table_path(name))


@dataclass(frozen=True)
class Status:
    name: str
    files: int
    size_bytes: int  # of the raw files
    cached: bool  # every raw file is in the cache
    built: bool  # the tidy table is in the cache


def status(name: str) -> Status:
    """What the cache holds of a dataset (looks only at the disk: no download, no hashing)."""
    ds = get(name)
    keys = ds.files()
    return Status(name, len(keys), ds.size_bytes(), all(raw_path(k).is_file() for k in keys),
                  _table_file(ds).is_file())
