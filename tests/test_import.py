"""`scalelab ladder import` on files written by the trackers themselves (#38): TensorBoard's SummaryWriter, MLflow's
client on a local store, wandb offline runs, a Hugging Face Trainer run; and a scalelab ladder logged to TensorBoard
and MLflow, imported back, gives the same fit as its own store."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from scalelab.model.sources import config_counts

# a law the synthetic runs follow: L = E + A / N^alpha + B / D^beta
E, A, ALPHA, B, BETA = 1.8, 400.0, 0.34, 1000.0, 0.28
TPS = 8192  # tokens per step


def llama(hidden: int, layers: int) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
            "intermediate_size": 4 * hidden, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 32),
            "num_key_value_heads": max(1, hidden // 32), "vocab_size": 4096, "max_position_embeddings": 512,
            "tie_word_embeddings": True, "rms_norm_eps": 1e-5}


SHAPES = [(64, 2), (96, 3), (128, 4), (192, 4), (256, 6), (320, 8)]


def law_curve(n: float, steps: np.ndarray) -> np.ndarray:
    return E + A / n ** ALPHA + B / (steps * TPS) ** BETA


def write_tensorboard_runs(root, budgets_steps=(400, 800)):
    """One folder per run: config.json and a SummaryWriter's event files (tags as a Trainer names them)."""
    from torch.utils.tensorboard import SummaryWriter

    for hidden, layers in SHAPES:
        cfg = llama(hidden, layers)
        n = config_counts(cfg)[1]["num_params_total"]
        for total in budgets_steps:
            d = root / f"h{hidden}-s{total}"
            d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps(cfg))
            w = SummaryWriter(str(d))
            steps = np.arange(20, total + 1, 20)
            for s, loss in zip(steps, law_curve(n, steps)):
                w.add_scalar("train/loss", loss * 1.01, s)
                w.add_scalar("eval/loss", loss, s)
                w.add_scalar("train/learning_rate", 1e-3, s)
            w.close()


def test_tensorboard_runs_import_with_counted_n_and_fit(tmp_path):
    write_tensorboard_runs(tmp_path / "tb")
    out = tmp_path / "ladder"
    r = run_cli("ladder", "import", tmp_path / "tb", "--out", out, "--tokens-per-step", TPS, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 12 and {x["loss_key"] for x in rows} == {"eval/loss"}  # validation preferred over train
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):  # N as transformers counts the model the config describes
        ref = sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**llama(64, 2))).parameters())
    assert {x["N"] for x in rows if x["run"].startswith("h64-")} == {ref}
    csv = tmp_path / "runs.csv"
    assert run_cli("ladder", "export", out, "--out", csv).returncode == 0
    df = pd.read_csv(csv)
    assert df["final"].sum() == 12 and (df[df["final"]]["D"] % TPS == 0).all()
    finals = df[df["final"]].set_index("run")
    n64 = finals.loc["h64-s800", "N"]
    assert finals.loc["h64-s800", "loss"] == pytest.approx(law_curve(n64, np.array([800]))[0], rel=1e-6)
    r = run_cli("fit", csv, "--json")  # what a user runs next
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_points"] == 12


def test_missing_n_tokens_or_loss_key_is_one_line_and_leaves_nothing(tmp_path):
    write_tensorboard_runs(tmp_path / "tb", budgets_steps=(200,))
    out = tmp_path / "ladder"
    for extra, msg in (((), "--tokens-per-step"), (("--tokens-per-step", "100", "--loss-key", "nope"), "--loss-key")):
        r = run_cli("ladder", "import", tmp_path / "tb", "--out", out, *extra)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not out.exists() and not list(tmp_path.glob(".ladder.importing-*"))
    os.remove(tmp_path / "tb" / "h64-s200" / "config.json")
    r = run_cli("ladder", "import", tmp_path / "tb", "--out", out, "--tokens-per-step", "100")
    assert r.returncode == 2 and "--params" in r.stderr and "h64-s200" in r.stderr and not out.exists()


def test_mlflow_store_and_wandb_offline_runs_import(tmp_path, monkeypatch):
    import mlflow
    import wandb
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ladder", artifact_location=(tmp_path / "art").as_uri())
    monkeypatch.chdir(tmp_path)
    for hidden, layers in SHAPES[:3]:
        n = config_counts(llama(hidden, layers))[1]["num_params_total"]
        steps = np.arange(10, 201, 10)
        run = client.create_run(exp, run_name=f"mlf-h{hidden}")
        for k, v in llama(hidden, layers).items():  # the model config as run parameters
            client.log_param(run.info.run_id, k, json.dumps(v))
        for s, loss in zip(steps, law_curve(n, steps)):
            client.log_metric(run.info.run_id, "val_loss", loss, step=int(s))
            client.log_metric(run.info.run_id, "tokens", float(s * TPS), step=int(s))
        client.set_terminated(run.info.run_id)
        w = wandb.init(project="p", name=f"wb-h{hidden}", dir=str(tmp_path / f"wb{hidden}"), mode="offline",
                       config=llama(hidden, layers), settings=wandb.Settings(silent=True, console="off",
                                                                             x_disable_stats=True))
        for s, loss in zip(steps, law_curve(n, steps)):
            w.log({"eval/loss": loss, "train/learning_rate": 3e-4}, step=int(s))
        w.finish()
    del mlflow
    out = tmp_path / "mixed"
    r = run_cli("ladder", "import", uri, *[tmp_path / f"wb{h}" for h, _ in SHAPES[:3]], "--out", out,
                "--tokens-per-step", TPS, "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["run"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {f"{k}-h{h}" for k in ("mlf", "wb") for h, _ in SHAPES[:3]}
    for h, layers in SHAPES[:3]:
        n = config_counts(llama(h, layers))[1]["num_params_total"]
        for k in ("mlf", "wb"):
            x = rows[f"{k}-h{h}"]
            assert x["N"] == n and x["tokens"] == 200 * TPS and x["points"] == 20
            assert x["final_loss"] == pytest.approx(law_curve(n, np.array([200]))[0], rel=1e-6)


def test_a_csv_log_with_a_column_map(tmp_path):
    steps = np.arange(1, 51)
    pd.DataFrame({"iter": np.tile(steps, 2), "name": np.repeat(["a", "b"], 50), "params": np.repeat([1e6, 4e6], 50),
                  "lm_loss": np.r_[law_curve(1e6, steps), law_curve(4e6, steps)]}).to_csv(tmp_path / "log.csv",
                                                                                          index=False)
    r = run_cli("ladder", "import", tmp_path / "log.csv", "--out", tmp_path / "l", "--tokens-per-step", TPS,
                "--map", "step=iter,run=name,N=params,loss=lm_loss", "--json")
    assert r.returncode == 0, r.stderr
    got = [(x["run"], x["N"], x["points"]) for x in json.loads(r.stdout)]
    assert got == [("a", 10 ** 6, 50), ("b", 4 * 10 ** 6, 50)]


@pytest.mark.slow  # a ladder run with trackers (~50 s): `make test-all`
def test_a_scalelab_ladder_logged_to_tensorboard_and_mlflow_imports_back_to_the_same_fit(tmp_path):
    from test_ladder import tiny_spec

    spec = tiny_spec(tmp_path, sizes=3)
    spec.write_text(spec.read_text().replace("evals_per_run = 4", 'evals_per_run = 4\nloggers = ["tensorboard", '
                                                                                        '"mlflow"]'))
    out = tmp_path / "lad"
    r = run_cli("ladder", "run", spec, "--out", out, "--parallel", "2")
    assert r.returncode == 0, r.stderr
    assert run_cli("ladder", "export", out, "--out", tmp_path / "own.csv").returncode == 0
    own = pd.read_csv(tmp_path / "own.csv").set_index(["run", "step"])
    for name, args in (("tb", (out / "runs", "--source", "tensorboard")), ("mlflow", (out,))):
        r = run_cli("ladder", "import", *args, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert run_cli("ladder", "export", tmp_path / name, "--out", tmp_path / f"{name}.csv").returncode == 0
        got = pd.read_csv(tmp_path / f"{name}.csv").set_index(["run", "step"]).loc[own.index]
        assert (got["N"] == own["N"]).all() and (got["D"] == own["D"]).all() and (got["final"] == own["final"]).all()
        assert np.allclose(got["loss"], own["loss"], rtol=1e-6)  # TensorBoard keeps float32
        preds = []  # the same forecast from either table (a 5-parameter fit to 6 points: compare what it predicts)
        for f in ("own", name):
            assert run_cli("fit", tmp_path / f"{f}.csv", "--form", "chinchilla", "--out", tmp_path / f"{f}.json"
                           ).returncode == 0
            r = run_cli("predict", tmp_path / f"{f}.json", "--params", 4 * own["N"].max(), "--tokens",
                        4 * own["D"].max(), "--json")
            preds.append(json.loads(r.stdout)["loss"])
        assert preds[1] == pytest.approx(preds[0], rel=1e-3), name


@pytest.mark.slow  # trains four Hugging Face Trainer runs (~30 s): `make test-all`
def test_hugging_face_trainer_runs_import_from_their_state_and_their_tensorboard_logs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parents[1] / "examples" / "hf_trainer_ladder.py"
    r = subprocess.run([sys.executable, str(example), "--out", str(tmp_path / "hf"), "--steps", "20,40",
                        "--hidden", "32,48"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {}
    for source in ("hf", "tensorboard"):
        r = run_cli("ladder", "import", tmp_path / "hf", "--source", source, "--out", tmp_path / f"imported-{source}",
                    "--json")
        assert r.returncode == 0, r.stderr
        got[source] = {x["run"]: x for x in json.loads(r.stdout)}
    assert set(got["hf"]) == {f"llama-h{h}-s{s}" for h in (32, 48) for s in (20, 40)}
    for name, x in got["hf"].items():
        t = got["tensorboard"][name]
        assert x["loss_key"] == "eval_loss" and t["loss_key"] == "eval/loss"
        assert x["tokens"] == t["tokens"] == int(name.rsplit("-s", 1)[1]) * 8 * 64  # num_input_tokens_seen
        assert x["N"] == t["N"] and x["final_loss"] == pytest.approx(t["final_loss"], rel=1e-6)
    assert got["hf"]["llama-h48-s40"]["final_loss"] < got["hf"]["llama-h48-s20"]["final_loss"]  # it learned


def test_task_metrics_in_the_logs_come_in_as_task_evaluations(tmp_path):
    """Logs that carry task metrics (scalelab's tracker names: tasks/<task>/<metric>) give the task table
    `fit --metric` reads."""
    steps = np.arange(10, 101, 10)
    rows = [{"step": s, "run": f"r{n}", "N": n, "val_loss": law_curve(n, np.array([s]))[0],
             "tasks/addition/exact_match": min(1.0, s / 100 * k), "tasks/addition/answer_bpb": 2.0 - s / 100}
            for k, n in enumerate((1e6, 2e6, 4e6), 1) for s in steps]
    pd.DataFrame(rows).to_csv(tmp_path / "log.csv", index=False)
    r = run_cli("ladder", "import", tmp_path / "log.csv", "--out", tmp_path / "l", "--tokens-per-step", TPS)
    assert r.returncode == 0, r.stderr
    r = run_cli("ladder", "export", tmp_path / "l", "--tasks", "--out", tmp_path / "tasks.csv")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "tasks.csv")
    assert len(t) == 30 and set(t["task"]) == {"addition"}
    got = t[(t["run"] == "r4000000.0") | (t["run"] == "r4000000")].sort_values("step")
    assert got["exact_match"].tolist() == pytest.approx([min(1.0, s / 100 * 3) for s in steps])
