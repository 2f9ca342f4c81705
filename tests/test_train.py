"""Training: loss falls, exact resume, divergence handling, schedules, config errors."""

import json
import math

import numpy as np
import pytest
import torch

from scalelab.config import ScheduleConfig, load_config
from scalelab.errors import Diverged, UserError
from scalelab.train.hooks import StopAt
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir
from scalelab.train.runner import load_run
from scalelab.train.schedule import lr_at

# a run of seconds, for comparing two ways of training the same model step by step
TWELVE_TINY_STEPS = ["train.max_steps=12", "train.eval_every=12", "train.log_every=4", "model.d_model=32",
                     "model.n_layers=1", "model.n_heads=2"]


def _records(run_dir) -> list[dict]:
    return [r.to_dict() for r in RunDir(run_dir).read_metrics()]


def test_loss_falls_well_below_ln_vocab(small_cfg, small_dataset, tmp_path):
    cfg = small_cfg("train.max_steps=150", "train.eval_every=50", "optim.lr=3e-3")
    s = train(cfg, tmp_path, dataset=small_dataset)
    recs = _records(tmp_path)
    vals = [r["val_loss"] for r in recs if "val_loss" in r]
    assert len(vals) == 3
    assert vals[0] > vals[1] > vals[2]
    assert vals[-1] < math.log(512) - 1.5  # ln 512 = 6.24
    assert s["final"]["val_bpb"] > 0
    assert (tmp_path / "summary.json").exists()
    assert s["tokens"] == 150 * 8 * 64
    env = s["environment"]  # where the result came from, to compare runs across machines
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["scalelab"]
    assert s["peak_source"] == "measured matmul" and s["peak_flops"] == s["achievable_flops"] > 0
    assert recs[-1]["flops"] == s["tokens"] * cfg.model.flops_per_token_exact(64)


def test_task_metrics_improve_while_the_task_is_in_the_data(small_cfg, tmp_path):
    """A run with `[tasks]` mixed into its text is scored on held-out problems at every evaluation with
    its own BPE tokenizer: the answer's bits per byte fall as it trains (the chained forecast's step 1)."""
    cfg = small_cfg("train.max_steps=100", "train.eval_every=50", "optim.lr=3e-3", "tasks.names=addition:digits=1",
                    "tasks.train_fraction=0.3")
    train(cfg, tmp_path)
    evals = [r["tasks"]["addition:digits=1,format=plain"] for r in _records(tmp_path) if "val_loss" in r]
    assert len(evals) == 2
    bpb = [e["answer_bpb"] for e in evals]
    assert bpb[0] > bpb[-1] and bpb[-1] < 0.8 * bpb[0], bpb
    assert all(0 <= e["exact_match"] <= 1 and e["answer_nll_per_token"] > 0 for e in evals)
    # the problems it was scored on never appear in its training text; others do, at about the fraction
    from scalelab.data.tasks import heldout, parse_task
    from scalelab.train.data import load_dataset

    ds = load_dataset(cfg, log=lambda *a: None)
    text = ds.tokenizer().decode(np.concatenate([np.asarray(a) for a in ds.splits["train"]]).tolist())
    lines = set(text.split("\n"))
    held = heldout(parse_task("addition:digits=1"), cfg.tasks.eval_problems, trained=True)
    assert len(held) == 20 and not {p.prompt + p.answer for p in held} & lines
    sums = [ln for ln in lines if ln.count("+") == 1 and ln.endswith(tuple("0123456789")) and "=" in ln]
    assert len(sums) >= 70  # the 80 trainable problems of 100 (a few code lines look alike)


OPTIONS = ["model.moe.num_experts=4", "model.moe.top_k=2", "model.moe.num_shared_experts=1",
           "model.moe.first_dense_layers=1", "model.moe.renormalize=false", "model.qkv_bias=true",
           "model.qk_norm=head", "model.sliding_window=16"]  # DeepSeek-style MoE, Qwen2/3 and Mistral options


MLA = ["model.mla.kv_lora_rank=16", "model.moe.num_experts=4", "model.moe.top_k=2", "model.moe.num_shared_experts=1",
       "model.moe.first_dense_layers=1", "model.moe.renormalize=false"]  # DeepSeek-V2's shape


@pytest.mark.parametrize("moe", [False, True, "options", "mla"], ids=["dense", "moe", "options", "mla"])
def test_resume_equals_uninterrupted(small_cfg, small_dataset, tmp_path, moe):
    # dense: with a task evaluated at every evaluation (its metrics must resume exactly too)
    extra = ["model.moe.num_experts=4", "model.moe.top_k=2"] if moe is True else {"options": OPTIONS, "mla": MLA}.get(
        moe) or [
        "tasks.names=addition:digits=2", "tasks.eval_problems=40"]
    cfg = small_cfg("train.max_steps=24", "train.eval_every=8", "train.log_every=4", "train.grad_accum=2", *extra)
    full = tmp_path / "full"
    part = tmp_path / "part"
    train(cfg, full, dataset=small_dataset)
    train(cfg, part, dataset=small_dataset, hooks=StopAt(12))  # "killed" after step 12
    assert RunDir(part).latest_checkpoint().name == "step_00000012"
    train(cfg, part, dataset=small_dataset, resume=True)
    a, b = _records(full), _records(part)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss", "grad_norm", "lr", "tasks"):
            if k in ra:
                assert ra[k] == rb[k], (ra["step"], k)
    ma, _, _ = load_run(full)
    mb, _, _ = load_run(part)
    for (n, p), q in zip(ma.named_parameters(), mb.parameters()):
        assert torch.equal(p, q), n
    if not moe:
        assert set(a[-1]["tasks"]) == {"addition:digits=2,format=plain"}
    if moe in ("options", "mla"):  # and it learns
        assert a[-1]["train_loss"] < a[0]["train_loss"] - 0.3, (a[0]["train_loss"], a[-1]["train_loss"])
    if moe:
        assert "expert_load" in a[-1] and len(a[-1]["expert_load"]) == 4
        assert a[-1]["lb_loss"] >= 1.0 - 1e-6  # E * sum f_i P_i >= 1 up to sampling


def test_divergence_stops_and_keeps_last_good_checkpoint(small_cfg, small_dataset, tmp_path):
    good = small_cfg("train.max_steps=60", "train.eval_every=10", "train.log_every=5")
    train(good, tmp_path, dataset=small_dataset, hooks=StopAt(10))
    # continue it with an absurd learning rate (its config.json edited by hand: a changed config is otherwise
    # refused on resume, tests/test_identity.py): it must stop, naming the good checkpoint
    bad = small_cfg("train.max_steps=60", "train.eval_every=10", "train.log_every=5", "optim.lr=30",
                    "optim.grad_clip=0")
    RunDir(tmp_path).write_config(bad)
    with pytest.raises(Diverged, match="step_00000010"):
        train(bad, tmp_path, dataset=small_dataset, resume=True)
    ck = RunDir(tmp_path).latest_checkpoint()
    assert ck.name == "step_00000010"
    assert json.loads((ck / "state.json").read_text())["step"] == 10


def test_schedules():
    total, peak = 100, 1.0
    cos = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, total, peak, cos) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    wsd = ScheduleConfig(kind="wsd", warmup_steps=10, decay_frac=0.2, min_lr_ratio=0.0)
    w = [lr_at(s, total, peak, wsd) for s in range(total)]
    assert all(v == 1.0 for v in w[10:80])
    assert w[-1] == pytest.approx(0.0) and w[85] < w[80]
    const = ScheduleConfig(kind="constant", warmup_steps=0)
    assert {lr_at(s, total, peak, const) for s in range(total)} == {1.0}


@pytest.mark.parametrize("overrides,msg", [
    (["train.bogus=1"], "unknown config key 'train.bogus'"),
    (["model.n_heads=6", "model.n_kv_heads=4"], "not divisible"),
    (["train.batch_size=x"], "expects int"),
    (["train.seq_len=512"], "exceeds model.max_seq_len"),
    (["schedule.kind=linear"], "cosine, wsd or constant"),
    (["nodot"], "section.key=value"),
    (["model=3"], "is a section"),
    (["tasks.names=additon:digits=2"], "unknown task 'additon'"),
    (["tasks.names=addition:digits=2", "tasks.train_fraction=1"], "train_fraction must be in"),
    (["tasks.train_fraction=0.1"], "needs tasks.names"),
    (['train.loggers=["tensorboard", "neptune"]'], "unknown tracker 'neptune'; choose from tensorboard, mlflow, wandb"),
])
def test_config_errors_are_clear(overrides, msg):
    with pytest.raises(UserError, match=msg):
        load_config(None, overrides)


def test_config_toml_and_derived_fields(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[model]\nd_model = 128\nn_heads = 4\n[model.moe]\nnum_experts = 4\n[train]\nmax_tokens = 1e6\n')
    cfg = load_config(p, ["model.d_model=256"])
    assert cfg.model.head_dim == 64 and cfg.model.d_ff == 704  # derived again after the override
    assert cfg.model.moe.num_experts == 4 and cfg.train.max_tokens == 1_000_000
    # a list override as the TOML file writes it, or comma-separated: the same config
    as_list = load_config(None, ['train.loggers=["tensorboard", "mlflow"]', 'tasks.names=["addition:digits=2"]'])
    assert as_list.train.loggers == ("tensorboard", "mlflow") == load_config(None, [
        "train.loggers=tensorboard,mlflow"]).train.loggers and as_list.tasks.names == ("addition:digits=2",)
    p.write_text("[model\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(p)


def test_compiled_training_matches_eager(small_cfg, small_dataset, tmp_path):
    """torch.compile (inductor, on CPU here) trains the same model: losses agree to float tolerance."""
    base = TWELVE_TINY_STEPS
    eager = train(small_cfg(*base, "train.compile=off"), tmp_path / "eager", dataset=small_dataset)
    comp = train(small_cfg(*base, "train.compile=on"), tmp_path / "compiled", dataset=small_dataset)
    assert comp["compiled"] and not eager["compiled"]
    a, b = _records(tmp_path / "eager"), _records(tmp_path / "compiled")
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-3)
    assert comp["final"]["val_loss"] == pytest.approx(eager["final"]["val_loss"], rel=1e-3)


def test_bf16_training_on_a_cpu_with_bf16_instructions_follows_fp32(small_cfg, small_dataset, tmp_path):
    """train.dtype=bf16 on a CPU (autocast; the fused loss included) trains the same model as fp32 to bf16's
    precision: 8 bits of mantissa, so the losses agree to ~1%, not to float tolerance."""
    from scalelab.train.metrics import cpu_info, native_bf16

    if not native_bf16(cpu_info()):
        pytest.skip("this CPU has no bf16 instructions (train.dtype=bf16 is refused here, tested in test_peak)")
    base = [*TWELVE_TINY_STEPS, "train.compile=off"]
    fp32 = train(small_cfg(*base, "train.dtype=fp32"), tmp_path / "fp32", dataset=small_dataset)
    bf16 = train(small_cfg(*base, "train.dtype=bf16"), tmp_path / "bf16", dataset=small_dataset)
    a, b = _records(tmp_path / "fp32"), _records(tmp_path / "bf16")
    assert b[-1]["train_loss"] < b[0]["train_loss"] - 0.1  # it learns
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=2e-2)
        assert rb["train_loss"] != ra["train_loss"]  # and it did run in bf16
    assert bf16["final"]["val_loss"] == pytest.approx(fp32["final"]["val_loss"], rel=2e-2)


def test_compile_auto_decision():
    from scalelab.train.loop import compile_pays_off

    peak = 3e11
    assert not compile_pays_off(1e6, 1e6, peak)  # a 1e12-FLOP run: seconds, not worth 15-30 s of compiling
    assert not compile_pays_off(1e7, 1e6, peak)  # about a minute at 50% MFU: still not worth it
    assert compile_pays_off(1e9, 1e7, peak)  # 1e16 FLOPs: hours


def test_trackers_read_back_what_the_run_recorded_and_resume_in_place(small_cfg, small_dataset, tmp_path,
                                                                     monkeypatch):
    """TensorBoard's and MLflow's own readers, and W&B's own record format, see every record of
    metrics.jsonl; a killed and resumed run continues the same MLflow and W&B runs and TensorBoard keeps
    one value per step."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = small_cfg("train.max_steps=24", "train.eval_every=8", "train.log_every=4",
                    "train.loggers=tensorboard,mlflow,wandb")
    train(cfg, tmp_path, dataset=small_dataset, hooks=StopAt(12))
    train(cfg, tmp_path, dataset=small_dataset, resume=True)
    recs = _records(tmp_path)
    ev = EventAccumulator(str(tmp_path / "tensorboard"))
    ev.Reload()
    tb = ev.Scalars("train_loss")
    assert [e.step for e in tb] == [r["step"] for r in recs]  # 12 -> 24 resumed: no step twice
    assert [e.value for e in tb] == pytest.approx([r["train_loss"] for r in recs], rel=1e-6)
    assert [e.step for e in ev.Scalars("val_loss")] == [r["step"] for r in recs if "val_loss" in r]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["scalelab"], output_format="list")
    assert len(runs) == 1 and runs[0].info.run_name == tmp_path.name
    assert runs[0].data.params["model.d_model"] == "64" and runs[0].data.params["train.max_steps"] == "24"
    assert (tmp_path / "mlartifacts").is_dir()  # the config artifact beside the store, not in the cwd
    hist = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "train_loss")
    by_step = {m.step: m.value for m in hist}  # resumed steps 13-24 logged once more: same values
    assert sorted(by_step) == [r["step"] for r in recs]
    assert [by_step[r["step"]] for r in recs] == pytest.approx([r["train_loss"] for r in recs], rel=1e-9)
    # W&B, offline: one run id over both starts, the config attached, every step's loss once
    offline = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    records = [r for f in offline for r in _wandb_records(f)]
    runs = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
    assert len(offline) == 2 and len(runs) == 1
    config = next(r.run.config for r in records if r.WhichOneof("record_type") == "run")
    assert json.loads(next(u.value_json for u in config.update if u.key == "model"))["d_model"] == 64
    logged = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
            if "train_loss" in items:
                logged[items["_step"]] = items["train_loss"]
    assert sorted(logged) == [r["step"] for r in recs]
    assert [logged[r["step"]] for r in recs] == pytest.approx([r["train_loss"] for r in recs], rel=1e-9)


def _wandb_records(path):
    """The protobuf records of a W&B transaction log (.wandb: LevelDB's log format, 32 KiB blocks of
    checksum/length/type-framed chunks after a 7-byte header), parsed with wandb's own message classes."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 0:
            break
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start a record, MIDDLE/LAST extend it
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
