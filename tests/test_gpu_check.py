"""`make gpu-check` is prepared on the CPU: it must say there is no GPU and exit 0, and its every
stage must run (at toy sizes, `--dry-run`) before a GPU's scarce minutes are spent on it."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _check(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine `make gpu-check` itself is the test")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    r = _check("--json", tmp_path / "g.json")
    assert r.returncode == 0 and "no CUDA GPU here" in r.stdout and not (tmp_path / "g.json").exists()


def test_dry_run_exercises_every_stage(tmp_path):
    r = _check("--dry-run", "--skip", "demo", "--json", tmp_path / "g.json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "g.json").read_text())
    for stage in ("tests", "throughput", "loss_chunks"):
        assert "error" not in out[stage], out[stage]
    # the GPU tests were collected and ran (skipped here, for want of a GPU; exit 5 would mean none were found)
    skipped = re.search(r"(\d+) skipped", out["tests"]["summary"])
    assert out["tests"]["returncode"] == 0 and skipped and int(skipped.group(1)) >= 5, out["tests"]["summary"]
    assert out["throughput"]["tokens_per_s"] > 0 and out["throughput"]["hf_tokens_per_s"] > 0
    assert set(out["loss_chunks"]["ms"]) and out["loss_chunks"]["best_chunk"] > 0


def test_the_throughput_bench_runs_only_the_configs_meant_for_the_device():
    """With no arguments on a CPU it leaves out the GPU-sized MoE config (over 20 minutes and 17 GB there);
    asked for it on a CPU, it refuses in one line."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--configs", "moe-d768-e8k2-s1024",
                        "--device", "cpu"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "is for a GPU" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import throughput
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert "moe-d768-e8k2-s1024" not in throughput.default_configs("cpu", quick=False)
    assert "moe-d768-e8k2-s1024" in throughput.default_configs("cuda", quick=False)
