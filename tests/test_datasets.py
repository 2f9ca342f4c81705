"""Public data by reference: every builder reproduces its tidy table from the mirrored raw files, a wrong
hash is refused with nothing cached, a cache hit reads no network and no mirror, commands fetch on first
use from the mirror into a fresh cache, and offline without a mirror is one line naming --data-dir."""

import json
import os
from pathlib import Path

import pytest
import requests

import scalelab.datasets.download
from conftest import MIRROR, SHARED_FIXTURES, run_cli
from scalelab import datasets
from scalelab.datasets.download import raw_path
from scalelab.errors import UserError

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"needs the raw-file mirror {MIRROR}")


def _tidy_fixture(table: str) -> Path:
    hits = [p for p in SHARED_FIXTURES.rglob(table) if MIRROR not in p.parents]
    assert len(hits) == 1, (table, hits)
    return hits[0]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty scalelab cache and the mirror, for this test alone."""
    monkeypatch.setenv("SCALELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SCALELAB_DATA_DIR", str(MIRROR))
    return tmp_path / "cache"


@needs_mirror
@pytest.mark.parametrize("name", list(datasets.DATASETS))
def test_each_builder_reproduces_its_tidy_table_exactly(name, public):
    """Line for line, every character: the tidy copies in shared/fixtures were derived by hand from the same
    raw files (one of them was saved with Windows line ends)."""
    built = Path(public(name)).read_text().splitlines()
    assert built == _tidy_fixture(datasets.get(name).table).read_text().splitlines()


def test_every_registered_file_belongs_to_a_dataset_and_every_dataset_names_its_licence():
    used = set()
    for ds in datasets.DATASETS.values():
        used |= set(ds.files())
        assert ds.source.licence and ds.citation and len(ds.source.commit) == 40
    assert used == set(datasets.registry.registered_files())


@needs_mirror
def test_a_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, fresh_cache, monkeypatch):
    ds = datasets.get("opt-curves")
    (key,) = ds.files()
    bad_mirror = tmp_path / "mirror"
    (bad_mirror / key).parent.mkdir(parents=True)
    (bad_mirror / key).write_bytes((MIRROR / key).read_bytes().replace(b"OPT", b"0PT", 1))  # one byte off
    monkeypatch.setenv("SCALELAB_DATA_DIR", str(bad_mirror))
    with pytest.raises(UserError, match="sha256 is not the registered one"):
        datasets.load("opt-curves")
    folder = raw_path(key).parent
    assert not raw_path(key).exists() and (not folder.exists() or not any(folder.iterdir()))  # no temporary left
    assert not (fresh_cache / "public" / "tables").exists()


@needs_mirror
def test_a_cache_hit_reads_neither_the_network_nor_the_mirror(fresh_cache, monkeypatch):
    first = datasets.load("datablations-final")
    monkeypatch.delenv("SCALELAB_DATA_DIR")

    def no_network(*a, **k):
        raise AssertionError("network access on a cache hit")
    monkeypatch.setattr(requests.Session, "send", no_network)
    monkeypatch.setattr(scalelab.datasets.download.MirrorCopy, "__call__", no_network)
    assert datasets.load("datablations-final").equals(first)
    (fresh_cache / "public" / "tables").rename(fresh_cache / "public" / "old-tables")  # rebuilt from raw: no fetch
    assert datasets.load("datablations-final").equals(first)


@needs_mirror
def test_a_raw_file_changed_in_the_cache_is_fetched_again(fresh_cache):
    datasets.fetch("opt-curves")
    (key,) = datasets.get("opt-curves").files()
    raw_path(key).write_text("tampered")
    datasets.fetch("opt-curves")
    assert raw_path(key).read_bytes() == (MIRROR / key).read_bytes()


def test_offline_without_a_mirror_is_one_line_naming_data_dir(tmp_path, monkeypatch, capsys):
    from scalelab.cli import main

    monkeypatch.setenv("SCALELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCALELAB_DATA_DIR", raising=False)

    def offline(*a, **k):
        raise requests.ConnectionError("no network")
    monkeypatch.setattr(requests.Session, "send", offline)
    monkeypatch.setattr("pooch.core.time.sleep", lambda s: None)  # its retries, without the waits
    assert main(["fit", "--example", "chinchilla"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("scalelab: error: could not download https://raw.githubusercontent.com/"), err
    assert "--data-dir" in err[-1] and len(err) == 2  # the line saying what is fetched, then the error
    assert not list((tmp_path / "cache" / "public" / "raw").rglob("*.csv"))


def test_a_mirror_that_is_not_a_folder_or_lacks_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    from scalelab.cli import main

    monkeypatch.setenv("SCALELAB_CACHE", str(tmp_path / "cache"))
    os.environ.pop("SCALELAB_DATA_DIR", None)
    try:
        assert main(["--data-dir", str(tmp_path / "nowhere"), "data", "fetch", "opt-curves"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"scalelab: error: data-dir: {tmp_path / 'nowhere'} is not a folder; give a mirror laid out "
                       "as OWNER/REPO/COMMIT/PATH (or unset $SCALELAB_DATA_DIR to download)"], err
        (tmp_path / "empty").mkdir()
        assert main(["--data-dir", str(tmp_path / "empty"), "data", "fetch", "opt-curves"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "is missing from the mirror" in err[-1] and len(err) == 2, err
    finally:
        if MIRROR.is_dir():
            os.environ["SCALELAB_DATA_DIR"] = str(MIRROR)


@needs_mirror
def test_fit_and_backtest_fetch_on_first_use_from_the_mirror_into_a_fresh_cache(tmp_path):
    env = {"SCALELAB_CACHE": str(tmp_path / "cache"), "SCALELAB_DATA_DIR": ""}
    r = run_cli("--data-dir", MIRROR, "fit", "--example", "chinchilla", "--form", "chinchilla", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"scalelab: fetching chinchilla-epoch (epoch-research/analyzing-chinchilla@"
                                     f"9225883): 1 file(s) from the mirror {MIRROR} into {tmp_path}/cache/public/raw"]
    assert json.loads(r.stdout)["alpha"] == pytest.approx(0.347, abs=0.02)  # Besiroglu et al.'s refit
    r = run_cli("--data-dir", MIRROR, "backtest", "--datasets", "opt,datablations", "--methods", "chinchilla",
                "--workers", "1", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert {row["dataset"] for row in json.loads(r.stdout)["by_dataset"]} == {"opt", "datablations"}
    r = run_cli("data", "list", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["chinchilla-epoch"]["cached"] and rows["opt-curves"]["cached"] and not rows["mpl-curves"]["cached"]
    assert rows["opt-curves"]["licence"] == "MIT" and "arXiv:2410.11840" in rows["opt-curves"]["citation"]
