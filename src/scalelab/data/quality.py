"""Data quality: duplicate removal and the constructed "raw crawl" the quality lab filters.

Deduplication follows the web-corpus pipelines (CCNet, FineWeb, DCLM):

1. exact duplicates: documents whose normalised text (lower case, whitespace collapsed) hashes the
   same as an earlier one;
2. near duplicates: MinHash signatures of word 5-gram shingles (Broder 1997), indexed by
   locality-sensitive hashing (`datasketch.MinHashLSH`); a document whose estimated Jaccard
   similarity to an earlier kept one is at least ``threshold`` is dropped (FineWeb: 5-grams,
   ~0.75-0.8). The first of a cluster is kept.

`plant_noise` builds a corpus whose flaws are known: clean documents plus exact copies (with a
heavy-tailed popularity, as boilerplate pages have), near copies (a few lines edited) and junk
(random characters; word salad drawn from the corpus's own words). Planted documents get ids that
fall on the training side of the id-hash split, so the validation documents stay the clean ones.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash, MinHashLSH

from scalelab.data.corpora import is_validation

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def shingles(text: str, n: int = 5) -> list[bytes]:
    """The document's word n-grams (the whole text as one shingle when it has fewer than n words)."""
    words = normalize(text).split(" ")
    if len(words) <= n:
        return [" ".join(words).encode()]
    return list({" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)})


@dataclass
class Dedup:
    """What `deduplicate` found: kept ids in order, and each dropped id -> the kept id it duplicates."""

    kept: list[str] = field(default_factory=list)
    exact: dict[str, str] = field(default_factory=dict)
    near: dict[str, str] = field(default_factory=dict)


def deduplicate(docs: Iterable[tuple[str, str]], threshold: float = 0.75, bands: tuple[int, int] = (14, 8),
                ngram: int = 5, seed: int = 1) -> Dedup:
    """Exact, then MinHash-LSH near-duplicate removal over ``(doc_id, text)`` in order. ``bands``: LSH
    buckets x hashes per bucket (FineWeb's 14 x 8: a pair at Jaccard 0.86 is a candidate with
    probability 1 - (1 - 0.86^8)^14 = 0.99; datasketch's own choice for 0.75 misses a quarter of them)."""
    out, first = Dedup(), {}
    num_perm = bands[0] * bands[1]
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=bands)
    signatures: dict[str, MinHash] = {}
    for doc_id, text in docs:
        digest = hashlib.sha1(normalize(text).encode()).digest()
        if digest in first:
            out.exact[doc_id] = first[digest]
            continue
        first[digest] = doc_id
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles(text, ngram))
        match = next((c for c in lsh.query(m) if signatures[c].jaccard(m) >= threshold), None)
        if match is not None:  # LSH candidates are verified against the signature estimate
            out.near[doc_id] = match
            continue
        lsh.insert(doc_id, m)
        signatures[doc_id] = m
        out.kept.append(doc_id)
    return out


# ---- a corpus with known flaws --------------------------------------------------------------------

@dataclass(frozen=True)
class Noise:
    """Planted flaws, each as a fraction of the clean training bytes."""

    exact: float = 0.2
    near: float = 0.1
    junk: float = 0.2


def training_id(prefix: str, i: int, val_fraction: float) -> str:
    """An id ``prefix-i[-k]`` that falls on the training side of the split."""
    k = 0
    while is_validation(doc_id := f"{prefix}-{i}" + (f"-{k}" if k else ""), val_fraction):
        k += 1
    return doc_id


def _near_copy(text: str, rng: np.random.Generator) -> str:
    """A few lines deleted or with a number changed: what templated pages and mirrors differ by."""
    lines = text.split("\n")
    out = []
    for line in lines:
        u = rng.random()
        if u < 0.02:
            continue
        out.append(line + f"  # {rng.integers(1000)}" if u < 0.04 else line)
    return "\n".join(out)


def _junk(size: int, words: list[str], rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.5:  # random printable characters (encoded blobs, broken extraction)
        chars = np.array(list(string.ascii_letters + string.digits + string.punctuation + " " * 10))
        return "junk-chars", "".join(rng.choice(chars, size))
    out, n = [], 0
    while n < size:  # word salad: the corpus's own words, in no order
        w = words[rng.integers(len(words))]
        out.append(w)
        n += len(w) + 1
    return "junk-words", " ".join(out)


def plant_noise(docs: list[tuple[str, str]], noise: Noise, seed: int = 0,
                val_fraction: float = 0.03) -> list[tuple[str, str, str]]:
    """-> (doc_id, text, kind): the clean documents in order, then the planted ones shuffled (so a
    deduplication in reading order keeps the originals); kind: clean | exact | near | junk-chars | junk-words."""
    rng = np.random.default_rng(seed)
    train = [(i, t) for i, t in docs if not is_validation(i, val_fraction)]
    clean_bytes = sum(len(t) for _, t in train)
    popularity = 1.0 / np.arange(1, len(train) + 1) ** 1.1  # a few documents copied many times (Zipf)
    popularity = rng.permutation(popularity / popularity.sum())
    words = [w for _, t in train[:200] for w in t.split()][:200_000]
    planted: list[tuple[str, str, str]] = []
    for kind, frac in (("exact", noise.exact), ("near", noise.near), ("junk", noise.junk)):
        n_bytes = 0
        while n_bytes < frac * clean_bytes:
            src = train[rng.choice(len(train), p=popularity) if kind == "exact" else rng.integers(len(train))][1]
            if kind == "exact":
                k, text = "exact", src
            elif kind == "near":
                k, text = "near", _near_copy(src, rng)
            else:
                k, text = _junk(max(200, len(src)), words, rng)
            planted.append((training_id(k, len(planted), val_fraction), text, k))
            n_bytes += len(text)
    return [(i, t, "clean") for i, t in docs] + [planted[j] for j in rng.permutation(len(planted))]
