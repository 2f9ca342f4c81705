import os
import sys
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
ZOO = Path(__file__).parents[1] / "src" / "scalelab" / "model" / "zoo"  # published HF configs (SOURCES.md)
# ../shared/fixtures beside the checkout (CI lays it there): `raw/` mirrors the public files scalelab downloads,
# laid out as OWNER/REPO/COMMIT/PATH, and the tidy tables beside it are what the dataset builders must give.
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
MIRROR = SHARED_FIXTURES / "raw"
if MIRROR.is_dir():  # the tests (and every `scalelab` they start) read public data from the mirror, offline
    os.environ.setdefault("SCALELAB_DATA_DIR", str(MIRROR))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session tokenizes into its own cache: tests never depend on ~/.cache."""
    cache = tmp_path_factory.mktemp("scalelab-cache")
    old = os.environ.get("SCALELAB_CACHE")
    os.environ["SCALELAB_CACHE"] = str(cache)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield cache
    if old is None:
        os.environ.pop("SCALELAB_CACHE", None)
    else:
        os.environ["SCALELAB_CACHE"] = old


_UNAVAILABLE: dict[str, str] = {}


@pytest.fixture(scope="session")
def public(_isolated_cache):
    """``public(name, ...)`` -> the tidy tables' paths, fetched (from the mirror) into this session's cache;
    a test that needs a dataset and has neither a mirror nor a network is skipped, saying so."""
    from scalelab import datasets
    from scalelab.errors import UserError

    def get(*names):
        paths = []
        for name in names:
            if name not in _UNAVAILABLE:
                try:
                    paths.append(datasets.table_path(name))
                    continue
                except UserError as e:
                    _UNAVAILABLE[name] = str(e)
            pytest.skip(f"needs the public dataset {name}, and there is no mirror (SCALELAB_DATA_DIR or "
                        f"{MIRROR}) and no download: {_UNAVAILABLE[name]}")
        return paths[0] if len(paths) == 1 else paths

    return get


# A small slice of the default corpus: fast to tokenize (~2 s), big enough to learn from.
SMALL_DATA = ["data.max_bytes=3000000", "data.tokenizer_train_bytes=1000000", "model.vocab_size=512"]
TINY_MODEL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64",
              "train.seq_len=64", "train.batch_size=8", "train.eval_tokens=4096", "train.progress=false"]


@pytest.fixture(scope="session")
def small_cfg():
    from scalelab.config import load_config

    return lambda *extra: load_config(None, SMALL_DATA + TINY_MODEL + list(extra))


@pytest.fixture(scope="session")
def small_dataset(small_cfg):
    from scalelab.train.data import load_dataset

    return load_dataset(small_cfg(), log=lambda *a: None)


def run_cli(*args, env=None):
    """Run the installed `scalelab` console script; returns CompletedProcess."""
    import subprocess

    exe = Path(sys.executable).parent / "scalelab"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The quick demo's ladder once per session, as `scalelab demo --gpu` trains it where there is no CUDA
    device (its toy-scale twin: the GPU demo's command path, the quick ladder), else `scalelab demo --quick`:
    (output dir, completed process)."""
    import torch

    out = tmp_path_factory.mktemp("demo") / "demo"
    r = run_cli("demo", "--quick" if torch.cuda.is_available() else "--gpu", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r
