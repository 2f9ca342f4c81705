"""The `scalelab` command as a user runs it: JSON outputs, one-line errors with exit code 2."""

import json

import pytest

from conftest import SMALL_DATA, TINY_MODEL, ZOO, run_cli
from scalelab.economics.flops import palm_flops_per_token


def test_count_llama_and_mixtral_json():
    r = run_cli("count", ZOO / "llama-2-7b.json", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["num_params_total"] == 6_738_415_616
    assert d["num_params_embedding"] + d["num_params_non_embedding"] == d["num_params_total"]
    # the exact count agrees with PaLM's MFU formula (Chowdhery et al. 2022, App. B), 6N + 12 L H Q T,
    # once N leaves out what is no matmul: the input embedding (a lookup) and the norm gains
    L, dm, V, H, Q, T = 32, 4096, 32000, 32, 128, 4096
    matmul_params = d["num_params_total"] - V * dm - (2 * L * dm + dm)
    assert d["flops_per_token_exact"] == palm_flops_per_token(matmul_params, L, H, Q, T) == 46_084_915_200
    assert d["flops_per_token_exact"] > d["flops_per_token_6n"]  # attention at 4k context
    d = json.loads(run_cli("count", ZOO / "mixtral-8x7b.json", "--json").stdout)
    assert (d["num_params_total"], d["num_params_active"]) == (46_702_792_704, 12_879_925_248)
    assert "active" in run_cli("count", "--help").stdout


@pytest.mark.parametrize("args,msg", [
    (["count", "missing.json"], "not found"),
    (["train", "model.n_heads=6", "model.n_kv_heads=4"], "not divisible"),
    (["train", "train.nope=1"], "unknown config key"),
    (["fit", "missing.csv"], "not found"),
    (["predict", "nolaw", "--compute", "1e20"], "unknown law"),
    (["predict", "hoffmann2022", "--params", "-5", "--tokens", "1e9"], "positive"),
    (["sample", "nowhere"], "not a scalelab run directory"),
    # library errors name the argument; the CLI names the flag that sets it
    (["plan", "--compute", "1e20", "--mfu", "2"], "--mfu must be a fraction in (0, 1], got 2"),
    (["plan", "--compute", "1e20", "--gpu", "h900"], "--gpu 'h900' is unknown"),
    # lab settings are parsed as strictly as train overrides: a mistyped bool is an error, not False
    (["lab", "moe", "--set", "ablation=flase"], "--set ablation expects bool"),
    (["train", "train.progress=flase"], "train.progress expects bool"),
    # non-finite numbers on any numeric flag
    (["predict", "hoffmann2022", "--compute", "nan"], "--compute must be a finite number"),
    (["plan", "--compute", "inf"], "--compute must be a finite number"),
    # every numeric option has a domain, checked before any work (each of these once ended in a traceback,
    # a negative memory or cost, or silently used another value)
    (["count", "deepseek-v3", "--seq-len", "0"], "--seq-len must be an integer >= 1, got 0"),
    (["count", "deepseek-v3", "--seq-len=-4"], "--seq-len must be an integer >= 1, got -4"),
    (["ladder", "plan", "--budgets", "1e12", "--seq-len", "0"], "--seq-len must be an integer >= 1"),
    (["demo", "--gpu", "--budgets", "1e11,-3", "--out", "unused-demo-dir"], "--budgets must be positive FLOP counts"),
    (["plan", "--compute", "1e24", "--price=-3"], "--price must be a positive number, got -3"),
    (["plan", "--compute", "1e24", "--inference-tokens=-1e12"], "--inference-tokens must be a positive number"),
    (["predict", "muennighoff2023", "--params", "1e9", "--tokens", "1e10", "--unique-tokens", "-5"],
     "--unique-tokens must be a positive number"),
    (["count", "llama-2-7b", "--memory", "--batch", "0"], "--batch must be an integer >= 1"),
    (["tasks", "show", "addition", "-n", "-3"], "-n must be an integer >= 1"),
    (["predict", "hoffmann2022", "--params", "1e9", "--tokens", "1e10", "--compute", "1e21"], "not both"),
    (["plan"], "give --compute C"),  # argparse's own errors: one line too
    (["count", "qwen3-8"], "did you mean qwen3-8b?"),
])
def test_user_errors_are_one_line_exit_2(args, msg, tmp_path):
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.stderr


def test_a_bad_table_value_prints_as_the_user_wrote_it(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("N,D,loss\n1e6,1e9,3.0\n2e6,1e9,nan\n")
    r = run_cli("fit", p)
    assert r.returncode == 2 and r.stderr.strip().endswith("got nan") and "np." not in r.stderr, r.stderr


@pytest.mark.parametrize("args,says", [
    (["predict", "hoffmann2022", "--compute", "1e300", "--json"], "far past any training run to date"),
    (["plan", "--compute", "1e22", "--unique-tokens", "1", "--json"], "1 unique tokens is far outside"),
])
def test_questions_far_outside_the_data_answer_with_a_warning(args, says):
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [f"scalelab: warning: {json.loads(r.stdout)['warnings'][0]}"]
    assert says in r.stderr


def test_bad_table_exit_2(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("N,D,loss\n1e6,1e9,3.0\n-1,1e9,2.9\n")
    r = run_cli("fit", p)
    assert r.returncode == 2 and "row 2: column N" in r.stderr


def test_fit_example_and_predict_json(tmp_path, public):
    public("chinchilla-epoch")
    out = tmp_path / "fit.json"
    r = run_cli("fit", "--example", "chinchilla", "--form", "chinchilla", "--bootstrap", "50", "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "ci"):
        assert k in d
    assert abs(d["alpha"] - 0.347) < 0.01 and set(d["ci"]) >= {"E", "alpha", "a"}
    r = run_cli("predict", out, "--params", "7e10", "--tokens", "1.4e12", "--json")
    p = json.loads(r.stdout)
    assert p["loss_lo"] < p["loss"] < p["loss_hi"]
    r = run_cli("predict", out, "--compute", "1e24", "--json")
    p = json.loads(r.stdout)
    assert {"N_opt", "D_opt", "tokens_per_param", "loss", "N_opt_lo", "N_opt_hi"} <= set(p)


def test_train_sample_export_end_to_end(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", *SMALL_DATA, *TINY_MODEL, "train.max_steps=30", "train.eval_every=15", "--out", run)
    assert r.returncode == 0, r.stderr
    assert "val loss" in r.stdout
    r = run_cli("train", *SMALL_DATA, *TINY_MODEL, "train.max_steps=30", "--out", run)
    assert r.returncode == 2 and "--resume" in r.stderr  # never silently overwrite a run
    r = run_cli("sample", run, "--prompt", "def ", "--max-new-tokens", "20", "--temperature", "0")
    assert r.returncode == 0 and r.stdout.startswith("def ")
    # the run drafting for itself: the same greedy text, every draft accepted (gamma + 1 tokens per pass)
    s = run_cli("sample", run, "--prompt", "def ", "--max-new-tokens", "20", "--temperature", "0", "--draft", run,
                "--gamma", "4")
    assert s.returncode == 0 and s.stdout == r.stdout, s.stderr
    assert "acceptance rate 1.00" in s.stderr
    # (--no-cache's equal tokens: tests/test_model.py; `scalelab export` through the CLI: tests/test_hf.py)


@pytest.mark.parametrize("args", [["models"], ["models", "--json"]])
def test_a_closed_stdout_ends_quietly(args):
    """`scalelab models | head -1`: the reader goes away first; no BrokenPipe traceback (rich tables and
    plain JSON both)."""
    import subprocess
    import sys
    from pathlib import Path

    p = subprocess.Popen([str(Path(sys.executable).parent / "scalelab"), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before the interpreter has even started
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) in (0, 1, 141) and err == "", err  # rich exits 1 on a broken pipe, quietly


def test_version():
    from scalelab import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"scalelab {__version__}"


def test_bare_scalelab_prints_the_command_map_and_every_option_has_help():
    import argparse

    from scalelab.cli import GROUPS, build_parser

    r = run_cli()
    assert r.returncode == 0 and "start here" in r.stdout
    for title, names in GROUPS:  # every command, under its workflow
        assert f"{title}:" in r.stdout and all(f"  {n} " in r.stdout for n in names)
    missing = []

    def walk(parser, prefix):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    assert sp.description, f"`scalelab {' '.join(prefix + [name])}` has no description"
                    walk(sp, prefix + [name])
            elif not a.help and a.dest != "help":
                missing.append(f"{' '.join(prefix)} {a.option_strings or a.dest}")

    walk(build_parser(), [])
    assert missing == []
