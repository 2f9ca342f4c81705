"""Data: tokenizer round trip, shards, deterministic sampling, local and HF-datasets sources."""

import json

import numpy as np
import pytest

from scalelab.data.corpora import is_validation, iter_corpus, iter_stdlib
from scalelab.data.shards import DataSpec, TokenDataset, build_dataset
from scalelab.data.tokenizer import train_bpe
from scalelab.errors import UserError

TEXT = ["def f(x):\n    return x * 2  # double\n", "Ünïcödé ✓ and emoji 🚀 survive byte-level BPE.\n",
        "class A:\n    '''Docstring.'''\n    pass\n"] * 50


def test_tokenizer_round_trip_exact():
    tok = train_bpe(TEXT, vocab_size=300)
    for t in TEXT[:3] + ["completely unseen text: ∑ x_i² ≥ 0 \t\t\n"]:
        assert tok.decode(tok.encode(t).ids) == t
    assert tok.get_vocab_size() <= 300


def test_stdlib_corpus_is_deterministic_and_large():
    docs = list(iter_stdlib())
    assert len(docs) > 500
    assert sum(len(t) for _, t in docs) > 10_000_000  # the default corpus is real and sizeable
    assert [d for d, _ in docs] == sorted(d for d, _ in docs)


def test_split_is_by_document_and_stable():
    ids = [f"doc{i}" for i in range(5000)]
    val = [i for i in ids if is_validation(i, 0.03)]
    assert 100 < len(val) < 200
    assert val == [i for i in ids if is_validation(i, 0.03)]


def test_dataset_build_sample_and_eval(small_dataset):
    ds = small_dataset
    x1, y1 = ds.sample(4, 32, seed=0, step=7)
    x2, y2 = ds.sample(4, 32, seed=0, step=7)
    assert x1.shape == (4, 32) and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one
    x3, _ = ds.sample(4, 32, seed=0, step=8)
    assert not np.array_equal(x1, x3)
    ev = ds.eval_windows(32, 2048)
    assert ev.shape == (64, 33)
    assert 1.5 < ds.bytes_per_token() < 6.0  # BPE merges: more than one byte per token
    m = ds.manifest["splits"]
    assert m["val"]["num_docs"] > 0 and m["train"]["num_docs"] > 10 * m["val"]["num_docs"]


def test_unique_tokens_cap_repeats_a_fixed_spread_set_in_epochs(small_dataset):
    """data.unique_tokens=U: U / (T + 1) windows spread over the whole split, and over 3 epochs each is
    drawn exactly 3 times, whatever the batch and accumulation split, in a new order each epoch."""
    T = 32
    U = 20 * (T + 1)
    stream = np.concatenate([np.asarray(a) for a in small_dataset.splits["train"]])
    starts = {}
    for step in range(15):  # 15 steps x 2 micro-batches x 2 windows = 60 windows = 3 epochs of 20
        for micro in range(2):
            x, y = small_dataset.sample(2, T, seed=1, step=step, micro=micro, limit=U, accum=2)
            for row, nxt in zip(x.numpy(), y.numpy()):
                assert np.array_equal(row[1:], nxt[:-1])
                starts.setdefault(row.tobytes(), []).append(step)
    assert len(starts) == 20 and all(len(v) == 3 for v in starts.values())  # 20 windows, each once an epoch
    first = [np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(stream, T) == np.frombuffer(k, x.numpy(
        ).dtype), axis=1))[0] for k in starts]
    assert max(first) > 0.9 * len(stream) and min(first) < 0.1 * len(stream)  # spread over the whole split
    with pytest.raises(UserError, match="exceeds"):
        small_dataset.sample(2, T, seed=1, step=0, limit=10 ** 12)


def test_corrupt_shard_is_a_clear_error(small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(small_dataset.path, copy)
    shard = copy / "train_000.bin"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(UserError, match="corrupt shard"):
        TokenDataset(copy)


def _write_sources(tmp_path):
    docs = [f"record {i}: the quick brown fox jumps over {i % 7} lazy dogs." for i in range(400)]
    (tmp_path / "a.txt").write_text("\n".join(docs[:200]))
    with (tmp_path / "b.jsonl").open("w") as f:
        for d in docs:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    import pandas as pd

    pd.DataFrame({"content": docs}).to_parquet(tmp_path / "c.parquet")
    return docs


def test_local_sources(tmp_path):
    docs = _write_sources(tmp_path)
    assert [t for _, t in iter_corpus(str(tmp_path / "b.jsonl"))] == docs
    assert [t for _, t in iter_corpus(str(tmp_path / "c.parquet"), text_field="content")] == docs
    assert len(list(iter_corpus(str(tmp_path / "a.txt")))) == 1
    with pytest.raises(UserError, match="no column 'text'"):
        list(iter_corpus(str(tmp_path / "c.parquet")))
    with pytest.raises(UserError, match="neither"):
        list(iter_corpus(str(tmp_path / "missing.txt")))
    spec = DataSpec(corpus=str(tmp_path / "b.jsonl"), vocab_size=300, val_fraction=0.1, shard_tokens=1000)
    ds = TokenDataset(build_dataset(spec, root=tmp_path / "cache", log=lambda *a: None))
    assert len(ds.splits["train"]) > 1  # rolled over into several shards
    assert ds.num_tokens("train") == sum(len(a) for a in ds.splits["train"])
    x, _ = ds.sample(8, 16, seed=1, step=0)
    assert x.max() < ds.vocab_size


def test_huggingface_datasets_streaming_on_a_local_file(tmp_path):
    pytest.importorskip("datasets")
    docs = _write_sources(tmp_path)
    got = [t for _, t in iter_corpus("hf:json", hf_data_files=str(tmp_path / "b.jsonl"))]
    assert got == docs


def test_unloadable_hf_dataset_is_a_clear_error(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(UserError, match="cannot load the dataset"):
        list(iter_corpus("hf:json", hf_data_files=str(tmp_path / "missing.jsonl")))


def test_dataset_key_follows_hf_data_files_and_their_content(tmp_path):
    """Two runs differing only in data files, or in the content of a local data file, never share a
    token cache."""
    pytest.importorskip("datasets")  # local data files are hashed by content, streamed through `datasets`
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "one"}\n')
    b.write_text('{"text": "two"}\n')
    key = lambda f: DataSpec(corpus="hf:json", hf_data_files=str(f)).key()  # noqa: E731
    ka, kb = key(a), key(b)
    assert ka != kb
    a.write_text('{"text": "one, edited"}\n')
    assert key(a) != ka
    assert key(a) == key(a)  # and a key is stable


def test_compressed_jsonl_reads_as_plain(tmp_path):
    import bz2
    import gzip

    docs = _write_sources(tmp_path)
    raw = (tmp_path / "b.jsonl").read_bytes()
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "b.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "z" / "c.jsonl.bz2").write_bytes(bz2.compress(raw))
    assert [t for _, t in iter_corpus(str(tmp_path / "z" / "b.jsonl.gz"))] == docs
    assert [t for _, t in iter_corpus(str(tmp_path / "z"))] == docs + docs  # a folder of compressed files


def test_an_id_field_keeps_a_document_on_its_side_of_the_split_when_the_corpus_is_filtered(tmp_path):
    import pandas as pd

    recs = [{"id": f"page-{i}", "text": f"document {i}"} for i in range(400)]
    full, kept = tmp_path / "full.jsonl", tmp_path / "kept.jsonl"
    full.write_text("".join(json.dumps(r) + "\n" for r in recs))
    kept.write_text("".join(json.dumps(r) + "\n" for r in recs[::-3]))  # a third, reversed
    pd.DataFrame(recs[::2]).to_parquet(tmp_path / "half.parquet")
    side = {i: is_validation(i, 0.1) for i, _ in iter_corpus(str(full), id_field="id")}
    assert set(side) == {r["id"] for r in recs} and 20 < sum(side.values()) < 65
    for source in (kept, tmp_path / "half.parquet"):
        assert all(is_validation(i, 0.1) == side[i] for i, _ in iter_corpus(str(source), id_field="id"))
    # without data.id_field a record is FILE:LINE (an "id" that is not unique is not trusted silently)
    assert [i for i, _ in iter_corpus(str(kept))][:2] == ["kept.jsonl:0", "kept.jsonl:1"]
    with pytest.raises(UserError, match="no field 'doc'"):
        list(iter_corpus(str(kept), id_field="doc"))


def test_cache_key_reads_no_text_yet_follows_every_file(tmp_path, monkeypatch):
    """A second run on a big corpus starts without reading it: the key is a manifest of names, sizes and
    times; an edited or added file changes it."""
    import os

    from scalelab.data import corpora

    _write_sources(tmp_path)
    spec = DataSpec(corpus=str(tmp_path), vocab_size=300)
    key = spec.key()

    def no_reading(*a, **k):
        raise AssertionError("the key read the corpus")

    monkeypatch.setattr(corpora, "_iter_file", no_reading)
    assert spec.key() == key
    f = tmp_path / "b.jsonl"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert spec.key() != key
    assert DataSpec(corpus="hf:x/y", hf_revision="abc").key() != DataSpec(corpus="hf:x/y").key()


def test_eval_windows_read_across_shards_as_one_stream(tmp_path):
    """Validation windows come from the shards in place, a window may straddle two; the same windows as
    reading the concatenated split (the reference)."""
    docs = _write_sources(tmp_path)
    assert docs
    spec = DataSpec(corpus=str(tmp_path / "b.jsonl"), vocab_size=300, val_fraction=0.5, shard_tokens=700)
    ds = TokenDataset(build_dataset(spec, root=tmp_path / "cache", log=lambda *a: None))
    assert len(ds.splits["val"]) > 2
    whole = np.concatenate([np.asarray(a) for a in ds.splits["val"]]).astype(np.int64)
    w = ds.eval_windows(seq_len=50, max_tokens=5000).numpy()
    stride = (len(whole) - 51) // (len(w) - 1)
    assert len(w) > 3 and all((w[i] == whole[i * stride:i * stride + 51]).all() for i in range(len(w)))


# ---- data quality: deduplication (data/quality.py) -------------------------------------------------

def _random_docs(n: int, words: int, seed: int) -> list[tuple[str, str]]:
    """Documents of random words from a 5,000-word vocabulary: unrelated ones share almost no 5-gram."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{j}" for j in range(5000)]
    return [(f"doc-{i}", " ".join(rng.choice(vocab, words))) for i in range(n)]


def test_deduplication_removes_the_planted_copies_and_keeps_the_rest():
    from scalelab.data.quality import deduplicate

    rng = np.random.default_rng(1)
    docs = _random_docs(300, 400, seed=0)
    planted = {}
    for k, (src, text) in enumerate(docs[:40]):
        words = text.split()
        if k % 2:  # an exact copy, differently spaced and cased
            planted[f"copy-{k}"] = ("  ".join(words).upper(), src)
        else:  # a near copy: 1.5% of words replaced (Jaccard of 5-grams ~0.86)
            idx = rng.choice(len(words), len(words) * 3 // 200, replace=False)
            for j in idx:
                words[j] = "edited"
            planted[f"near-{k}"] = (" ".join(words), src)
    distant = " ".join(w if i % 4 else "changed" for i, w in enumerate(docs[50][1].split()))  # J ~ 0.
    stream = docs + [(i, t) for i, (t, _) in planted.items()] + [("distant", distant)]
    d = deduplicate(stream)
    assert {**d.exact, **d.near} == {i: src for i, (_, src) in planted.items()}
    assert set(d.exact) == {i for i in planted if i.startswith("copy")}
    assert d.kept == [i for i, _ in docs] + ["distant"]


def test_planted_noise_is_on_the_training_side_and_sized_as_asked():
    from scalelab.data.quality import Noise, plant_noise

    docs = _random_docs(200, 300, seed=2)
    out = plant_noise(docs, Noise(exact=0.2, near=0.1, junk=0.3), seed=0, val_fraction=0.1)
    assert [(i, t) for i, t, k in out if k == "clean"] == docs  # the clean documents first, in order
    planted = [(i, t, k) for i, t, k in out if k != "clean"]
    assert planted and not any(is_validation(i, 0.1) for i, _, _ in planted)
    clean = sum(len(t) for i, t in docs if not is_validation(i, 0.1))
    for kind, frac in (("exact", 0.2), ("near", 0.1), ("junk", 0.3)):
        size = sum(len(t) for _, t, k in planted if k.startswith(kind))
        assert frac * clean <= size < frac * clean + 3_000, kind  # one document past the target at most
    assert all(t in {t for _, t in docs} for _, t, k in planted if k == "exact")
