"""The install: the core fits, predicts and plans without torch or the report's libraries; a command that
needs an extra says which; the wheel builds and works in a fresh environment."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ZOO

# runs scalelab's CLI as if torch, tokenizers, safetensors, plotly, matplotlib and transformers were absent
WITHOUT_EXTRAS = """
import sys
BLOCKED = {"torch", "tokenizers", "safetensors", "plotly", "matplotlib", "transformers", "ray"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from scalelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def core(*args):
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


CORE = [
    ["fit", "--example", "chinchilla", "--json"],
    ["predict", "besiroglu2024", "--params", "1e9", "--tokens", "2e10", "--json"],
    ["backtest", "--methods", "chinchilla", "--datasets", "gpt3", "--workers", "1", "--json"],
    ["plan", "--compute", "1e24"],
    ["models"],
    ["count", str(ZOO / "llama-2-7b.json"), "--json"],
    ["count", "deepseek-v3", "--json"],
    ["fit", "--example", "pythia-tasks", "--metric", "acc", "--via", "lambada_nll", "--json"],
]


def test_core_commands_need_no_torch_and_no_report_libraries(public):
    """Every core command, in one interpreter where the extras' libraries cannot be imported."""
    public("chinchilla-epoch", "gpt3-curves", "pythia-evals-curves")  # fetched already, or skipped saying why
    code = WITHOUT_EXTRAS.replace("sys.exit(main(sys.argv[1:]))", (
        "import contextlib, io, json\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes.append(main(args))\n"
        "print(json.dumps(codes))\n"))
    import json

    r = subprocess.run([sys.executable, "-c", code, json.dumps(CORE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == [0] * len(CORE), r.stderr[-2000:]


def test_a_command_needing_an_extra_names_it():
    r = core("train", "train.max_steps=1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "scalelab: error: this command needs torch, which the core install leaves out: pip install "
        "'scalelab[train]' (or 'scalelab[all]')"], r.stderr


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_fits(tmp_path, public):
    """`python -m build` -> a wheel with no third-party data; a new venv with only the core's dependencies
    (from PyPI or pip's cache) runs `scalelab fit --example chinchilla` from it (its data fetched, here from
    the test mirror)."""
    public("chinchilla-epoch")  # skips, saying why, with neither a mirror nor a network
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", root], check=True,
                   capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("scalelab-*.whl"))
    import zipfile

    data = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith((".csv", ".parquet", ".jsonl", ".xlsx", ".pkl"))}
    assert data == {"scalelab/datasets/files.csv", "scalelab/examples/scalelab_demo_2026-11-29.csv"}, data
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True, timeout=300)
    py = tmp_path / "venv" / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, timeout=900)
    r = subprocess.run([tmp_path / "venv" / "bin" / "scalelab", "fit", "--example", "chinchilla"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "E" in r.stdout, r.stderr
    has_torch = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0
    assert not has_torch  # the core pulled no torch
    r = subprocess.run([tmp_path / "venv" / "bin" / "scalelab", "--version"], capture_output=True, text=True)
    assert r.stdout.startswith("scalelab ")
