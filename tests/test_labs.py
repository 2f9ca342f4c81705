"""The labs end to end (quick settings) and their estimators on cases with known answers."""

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from scalelab.labs import progress
from scalelab.labs.capacity import bits_stored
from scalelab.labs.progress import LabProgress, planned_flops, trained_flops
from scalelab.labs.quantize import quantize_model, quantize_tensor
from scalelab.model.config import ModelConfig
from scalelab.model.transformer import Transformer
from scalelab.train.rundir import RunDir


def _cli(*args):
    return run_cli(*args)


def test_bits_estimator_on_a_model_that_stores_a_known_subset_of_facts():
    # 300 people, attributes with 16 and 8 values. The "model" knows the first 120 people exactly
    # (p = 1), has the prior (uniform) for the rest: it stores 120 * (4 + 3) bits.
    H = np.log2([16, 8])
    lp = np.tile(-H, (300, 1))
    lp[:120] = 0.0
    b = bits_stored(lp, H)
    assert b["bits"] == pytest.approx(120 * 7)
    assert b["max_bits"] == pytest.approx(300 * 7)
    # half-sure about a 16-way attribute (p = 1/2): 3 of its 4 bits
    lp2 = np.array([[-1.0, -3.0]])
    assert bits_stored(lp2, H)["bits_per_attribute"] == pytest.approx([3.0, 0.0])
    # a confidently wrong model stores nothing (never negative)
    assert bits_stored(np.full((10, 2), -20.0), H)["bits"] == 0.0
    # a model at the prior with noise around it stores ~nothing (per-fact clipping would report ~0.8 bits/fact)
    noisy = -H + np.random.default_rng(0).normal(0, 2, size=(2000, 2))
    assert bits_stored(noisy, H)["bits"] < 0.05 * 2000


def test_rtn_quantizer_error_bounds_and_levels():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    for bits in (8, 4, 2):
        q = quantize_tensor(w, bits, group_size=32)
        scale = w.view(16, 2, 32).abs().amax(-1, keepdim=True) / ((2 ** bits - 1) / 2)
        levels = torch.round(q.view(16, 2, 32) / scale)
        assert ((levels >= -(2 ** (bits - 1))) & (levels <= 2 ** (bits - 1) - 1)).all()
        assert len(torch.unique(levels)) <= 2 ** bits
        err = (q - w).view(16, 2, 32).abs()
        # inside the range the error is at most half a step (the clamped top level costs up to one step)
        assert (err <= scale * 1.0001).all()
    assert torch.equal(quantize_tensor(w, 16), w.to(torch.bfloat16).float())
    e8 = (quantize_tensor(w, 8, 32) - w).pow(2).mean()
    e4 = (quantize_tensor(w, 4, 32) - w).pow(2).mean()
    e4c = (quantize_tensor(w, 4, 0) - w).pow(2).mean()
    assert e8 < e4 / 100 and e4 < e4c  # more bits, smaller groups: smaller error


def test_quantize_model_counts_bytes_and_agrees_with_torchao():
    torchao = pytest.importorskip("torchao")  # noqa: F841
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=128, max_seq_len=32)
    torch.manual_seed(0)
    a = Transformer(cfg)
    b = Transformer(cfg)
    b.load_state_dict(a.state_dict())
    info = quantize_model(a, 4, group_size=32)
    norms = sum(p.numel() for n, p in a.named_parameters() if p.dim() == 1)
    n_lin = cfg.num_params_total - cfg.num_params_embedding - norms
    assert info["quantized_params"] == n_lin
    assert info["weight_bytes"] == pytest.approx(n_lin * 4 / 8 + n_lin / 32 * 2 + (cfg.num_params_total - n_lin) * 2)
    quantize_(b, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
              filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)
    x = torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        la, lb = a(x).logits, b(x).logits
    assert (la - lb).abs().max() < 1e-4  # the same codes and scales: the same model


@pytest.mark.parametrize("lab", ["emergence", pytest.param("test-time", marks=pytest.mark.slow),
                                 pytest.param("capacity", marks=pytest.mark.slow),
                                 pytest.param("attention", marks=pytest.mark.slow),
                                 pytest.param("repetition", marks=pytest.mark.slow),
                                 pytest.param("distill", marks=pytest.mark.slow),
                                 pytest.param("quality", marks=pytest.mark.slow),
                                 pytest.param("synthetic", marks=pytest.mark.slow),
                                 pytest.param("speculative", marks=pytest.mark.slow),
                                 pytest.param("icl", marks=pytest.mark.slow),
                                 pytest.param("dpo", marks=pytest.mark.slow),
                                 pytest.param("lr-transfer", marks=pytest.mark.slow)])  # slow ones: make test-all
def test_task_labs_quick_write_summary_figures_and_report(lab, tmp_path):
    out = tmp_path / lab
    r = _cli("lab", lab, "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert (out / "report.html").stat().st_size > 10_000 and list(out.glob("*.png"))
    if lab == "emergence":
        res = next(iter(s["tasks"].values()))
        assert len(res["by_size"]) == 3 and all(0 <= r["exact_match"] <= 1 for r in res["by_size"])
        # the smallest model's answers are worse than the largest's in likelihood
        assert res["nll_largest"] < res["nll_smallest"]
    elif lab == "test-time":
        for r in s["results"]:
            cov = r["sampling"]["pass_at_k"]
            assert all(b >= a - 1e-12 for a, b in zip(cov, cov[1:]))  # coverage never falls with k
            assert r["sampling"]["flops"] == sorted(r["sampling"]["flops"])
        assert {c["size"] for c in s["comparison"]} == {"16x1", "32x1"}
    elif lab == "repetition":  # 2 sizes x (4 fresh + 3 repeated) runs; repeats never beat fresh data
        assert len(s["runs"]) == 14 and s["fit"]["runs_used"] == 6 and s["fit"]["R_D_star"] > 0
        repeated = [r for r in s["fit"]["repeated"] if r["D_eff"] == r["D_eff"]]  # NaN: not estimable
        assert repeated and all(r["D_eff"] <= r["D"] * 1.25 for r in repeated)
    elif lab == "distill":  # a teacher, then 1 size x 2 budgets x scratch/distilled, all at equal tokens
        assert [r["kind"] for r in s["runs"]] == ["teacher"] + ["scratch", "distilled"] * 2
        for scratch, distilled in zip(s["runs"][1::2], s["runs"][2::2]):
            assert scratch["student_flops"] == distilled["student_flops"] and scratch["teacher_inference_flops"] == 0
            assert distilled["teacher_inference_flops"] > 0 and distilled["loss"] < math.log(512)
        assert len(s["gains"]) == 1 and len(s["gains"][0]["gain"]) == 2
    elif lab == "quality":  # the filter finds what was planted; the ladder trains on both corpora
        k = s["filter"]["by_kind"]
        assert k["exact"]["exact_dup"] == k["exact"]["docs"] and k["near"]["kept"] <= 0.2 * k["near"]["docs"]
        assert k["junk-chars"]["kept"] == 0 and k["clean"]["kept"] >= 0.7 * k["clean"]["docs"]
        assert s["corpus_tokens"]["filtered"] < s["corpus_tokens"]["raw"] and len(s["runs"]) == 6
        # separate laws nest both one-parameter shifts: a working fitter leaves them no smaller residual
        sh = s["shift"]
        assert sh["separate"]["sse"] <= min(sh["multiplier"]["sse"], sh["offset"]["sse"]) * (1 + 1e-6)
        assert sh["multiplier"]["params"]["m"] > 0
    elif lab == "synthetic":  # generation 0, then 2 generations of each chain; all scored on real text
        assert [(r["chain"], r["generation"]) for r in s["runs"]] == [("real", 0), ("replace", 1), ("mix", 1),
                                                                      ("replace", 2), ("mix", 2)]
        c = s["collapse"]
        assert min(c["replace"]["excess_loss"]) > 0 and c["mix"]["excess_loss"][-1] < c["replace"]["excess_loss"][-1]
        assert all(r["sampled_from"] for r in s["runs"][1:]) and json.loads((out / "data" / "mix-g2.json").read_text())
    elif lab == "speculative":  # one draft/target pair at gamma 1 and 4; the cache's bytes as economics says
        assert [r["gamma"] for r in s["pairs"]] == [1, 4]
        assert all(0 < r["alpha"] < 1 and 1 <= r["tokens_per_pass"] <= r["gamma"] + 1 for r in s["pairs"])
        kv = s["kv_cache"][0]
        assert kv["fp32_bytes"] == kv["fp32_bytes_formula"] and kv["int8_bytes"] < kv["fp32_bytes"] / 3
    elif lab == "icl":  # two depths, scored at every kept checkpoint; few-shot accuracy per k
        assert set(s["curves"]) == {"d32L1", "d32L2"} and all(len(c) >= 4 for c in s["curves"].values())
        assert all(0 <= r["prefix_matching_max"] <= 1 for c in s["curves"].values() for r in c)
        assert {(r["model"], r["shots"]) for r in s["few_shot"]} == {(m, k) for m in ("d32L1", "d32L2") for k in (0, 4)}
    elif lab == "dpo":  # pretrained, SFT, one DPO policy; KL measured from the SFT model (0 for itself)
        r = {x["model"]: x for x in s["results"]}
        assert set(r) == {"pretrained", "sft", "dpo", "dpo+nll1"} and abs(r["sft"]["kl_from_sft"]) < 1e-6
        assert r["dpo"]["kl_from_sft"] > 0 and s["pairs"] >= 8 and all(0 <= x["exact_match"] <= 1 for x in r.values())
    elif lab == "lr-transfer":  # 2 widths x 3 lrs x (sp, mup) + one more token count; muP = SP at the base width
        runs = {(r["parametrization"], r["width"], r["planned_tokens"], r["lr"]): r["val_loss"] for r in s["runs"]}
        assert len(runs) == 15 and all(runs[("sp", 32, 60_000, lr)] == runs[("mup", 32, 60_000, lr)]
                                       for lr in s["spec"]["lrs"])
        assert set(s["drift"]) == {"sp", "mup"}
        # lr* = c N^a D^b is fitted from 4 interior SP optima; the quick lab has 3: no law, no file
        assert s["fitted_lr_law"] is None and not (out / "lr_law.json").exists()
    elif lab == "attention":
        c = {(r["size"], r["variant"]): r for r in s["comparison"]}
        assert c[("64x1", "mqa")]["kv_cache_vs_mha"] == 0.25 and 0 < c[("64x1", "mla")]["kv_cache_vs_mha"] < 0.5
        assert all(r["val_loss"] < math.log(512) for r in s["runs"]) and all(r["tokens_per_s"] > 0 for r in s["runs"])
    else:
        # a minute of training stores few facts; that bits grow with size is the full lab's finding
        assert s["total_bits"] == 100 * 16 and s["results"][0]["val_loss"] < math.log(64)
    if lab == "emergence":
        _lab_bar_ends_full(out)
    # run again: every model is reused, nothing retrained
    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/summary.json")}
    r = _cli("lab", lab, "--quick", "--out", str(out))
    assert r.returncode == 0 and mtimes == {p: p.stat().st_mtime for p in out.glob("runs/*/summary.json")}


def _lab_bar_ends_full(out):
    """The lab bar's plan (from each run's config) equals what the loop recorded: it ends at exactly 100%,
    and a record cut mid-write (as the bar may read it) is skipped, not an error."""
    runs = {p.name: RunDir(p).read_config() for p in (out / "runs").iterdir()}
    assert all(trained_flops(RunDir(out / "runs" / n)) == planned_flops(c) > 0 for n, c in runs.items())
    with LabProgress(out, runs, "lab", show=True) as bar:
        assert progress.active()
    assert not progress.active() and bar.prog.tasks[0].completed == bar.total == sum(map(planned_flops, runs.values()))
    run = RunDir(next((out / "runs").iterdir()))
    with open(run.metrics_file, "a") as f:
        f.write('{"step": 99, "tokens": 1')
    assert trained_flops(run) == planned_flops(runs[run.name])


# slow-marked to keep `make test` under 10 minutes with its installs; `make test-all` runs it
@pytest.mark.slow
def test_moe_and_quantize_labs_quick(tmp_path):
    out = tmp_path / "moe"
    r = _cli("lab", "moe", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    runs = {(r["size"], r["variant"]): r for r in s["runs"]}
    for size in ("32x1", "48x1"):
        d, m = runs[(size, "dense")], runs[(size, "moe-8x2")]
        assert d["num_params_active"] == pytest.approx(m["num_params_active"], rel=0.02)  # matched active
        assert m["num_params_total"] > 1.5 * d["num_params_total"]
        assert m["flops"] == pytest.approx(d["flops"], rel=0.02)  # and matched compute
        assert 0 <= m["load_cv_final"] < 3
    assert math.isfinite(s["largest_size"]["moe-8x2"]["effective_param_multiplier"])
    dense = sorted(out.glob("runs/*-dense"))
    q = tmp_path / "q"
    r = _cli("lab", "quantize", *map(str, dense), "--out", str(q), "--set", "bits=16,8,4,2",
             "--set", "eval_tokens=4096")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((q / "summary.json").read_text())
    assert s["checks"]["worst_8bit_rel_increase"] < 0.01
    for m in s["models"]:
        for row in m["rows"]:
            assert row["predicted_weight_bytes"] == pytest.approx(row["weight_bytes"], rel=0.01)
    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed (dev extras): the lab's torchao cross-check did not run")
    assert s["models"][0]["torchao"]["ok"], s["models"][0]["torchao"]
    assert s["models"][0]["torchao"]["max_abs_diff"] < 1e-3


def test_attention_variants_hold_equal_parameters_and_their_caches_hold_what_economics_says():
    """Every variant within 3 d_model per layer of MHA's parameters, and the KV bytes per token read off
    the cache tensors each model allocates equal the analytic figure (MHA 2Hd, GQA 2Kd, MQA 2d, MLA C + r)."""
    from scalelab.labs.attention import VARIANTS, AttentionSpec, decode_speed, model_for
    from scalelab.labs.common import Shape
    from scalelab.model.config import ModelConfig

    spec, shape = AttentionSpec(decode_prompt=16, decode_tokens=2), Shape.parse("64x2")
    cfgs = {v: ModelConfig.from_dict(model_for(spec, shape, v)) for v in VARIANTS}
    for v, cfg in cfgs.items():
        assert abs(cfg.num_params_total - cfgs["mha"].num_params_total) <= 3 * 64 * 2, v
        measured = decode_speed(Transformer(cfg), 2, 16, 2)["kv_bytes_per_token_measured"]
        assert measured == cfg.kv_cache_elements_per_token * 4 == {"mha": 2 * 4 * 16, "gqa": 2 * 2 * 16,
                                                                     "mqa": 2 * 16, "mla": 32 + 8}[v] * 2 * 4


def test_lab_bad_settings_are_one_line_errors(tmp_path):
    r = _cli("lab", "emergence", "--set", "sizez=16x1", "--out", str(tmp_path))
    assert r.returncode == 2 and "settings are" in r.stderr and "Traceback" not in r.stderr
    r = _cli("lab", "test-time", "--set", "samples=12", "--out", str(tmp_path))
    assert r.returncode == 2 and "power of two" in r.stderr
    r = _cli("lab", "emergence", "some_run", "--out", str(tmp_path))
    assert r.returncode == 2 and "only the quantize lab" in r.stderr


def test_tasks_cli_show_and_write(tmp_path):
    r = _cli("tasks", "show", "addition:digits=3,format=scratchpad", "-n", "2", "--difficulty")
    assert r.returncode == 0 and r.stdout.count(";") == 2 and "difficulty" in r.stdout
    out = tmp_path / "mix.jsonl"
    r = _cli("tasks", "write", "--task", "addition:digits=2,format=plain", "--task", "recall:people=20",
             "--out", out, "--docs", "200", "--mix-with", "stdlib", "--fraction", "0.5")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["task_docs"] + info["base_docs"] == 200 and 60 < info["task_docs"] < 140
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert any("def " in t or "import " in t for t in texts) and any("+" in t and "=" in t for t in texts)
    r = _cli("tasks", "show", "division")
    assert r.returncode == 2 and "known tasks" in r.stderr


def test_clark_fit_recovers_known_coefficients():
    from scalelab.labs.moe import clark_fit

    a, b, c, d = -0.07, -0.05, 0.003, 1.6
    rows = []
    for n in (1e5, 3e5, 1e6, 3e6):
        for e in (1, 8, 16, 64):
            logl = a * np.log(n) + b * np.log(e) + c * np.log(n) * np.log(e) + d
            rows.append({"num_params_active": n, "experts": e, "val_loss": float(np.exp(logl))})
    f = clark_fit(rows)
    assert f["ok"] and f["rms_log_residual"] < 1e-10
    assert (f["a"], f["b"], f["c"], f["d"]) == pytest.approx((a, b, c, d), abs=1e-9)
    assert not clark_fit(rows[:4])["ok"]  # too few points / one expert count: no fit


@pytest.mark.slow
def test_forecast_lab_writes_its_forecast_before_training_the_target(tmp_path):
    """#20 item 4, quick settings: the forecast file exists before the target model's run does, a rerun
    reads it back instead of forecasting with hindsight, and every task is compared with its interval."""
    out = tmp_path / "forecast"
    r = _cli("lab", "forecast", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    fc = out / "forecast.json"
    target = out / "runs" / "d64L2-s0"
    assert fc.stat().st_mtime < min(p.stat().st_mtime for p in target.rglob("*") if p.is_file())
    assert len(s["tasks"]) == 2 and (out / "report.html").exists() and list(out.glob("forecast_*.png"))
    for c in s["tasks"].values():
        assert 0 <= c["lo"] <= c["hi"] <= 1 and c["inside"] == (c["lo"] <= c["actual"] <= c["hi"])
    before = fc.read_bytes()
    assert _cli("lab", "forecast", "--quick", "--out", str(out)).returncode == 0 and fc.read_bytes() == before


def test_a_synthetic_corpus_is_sampled_from_the_model_it_names(small_cfg, small_dataset, tmp_path):
    """The record beside a synthetic corpus names a checkpoint by its weights' hash; sampling that
    checkpoint again with the recorded seed gives the corpus's documents, and they are likelier under
    the model they claim than under another of the same shape."""
    import torch.nn.functional as F

    from scalelab.labs.synthetic import sample_documents, synthesize
    from scalelab.train.checkpoint import load_checkpoint
    from scalelab.train.loop import train
    from scalelab.train.rundir import file_sha256

    runs = {}
    for name, steps in (("a", 80), ("b", 8)):
        train(small_cfg(f"train.max_steps={steps}", "optim.lr=3e-3", "train.eval_every=1000"), tmp_path / name,
              dataset=small_dataset)
        runs[name] = RunDir(tmp_path / name)
    tok = small_dataset.tokenizer()
    record = synthesize(runs["a"], tok, tmp_path / "g1.jsonl", 2_000, 64, seed=7, temperature=1.0, extra_docs=[])
    docs = [json.loads(line)["text"] for line in (tmp_path / "g1.jsonl").read_text().splitlines()]
    assert record["tokens_sampled"] >= 2_000 and record["documents"] == len(docs)
    ckpt = RunDir(record["generator"]).path / "checkpoints" / record["checkpoint"]
    assert file_sha256(ckpt / "model.safetensors") == record["weights_sha256"]
    model = Transformer(runs["a"].read_config().model)
    load_checkpoint(ckpt, model)
    again, _ = sample_documents(model.eval(), tok, 2_000, 64, seed=record["seed"], temperature=record["temperature"])
    assert again == docs

    def nll(run):
        m = Transformer(run.read_config().model)
        load_checkpoint(run.latest_checkpoint(), m)
        ids = torch.tensor([t for d in docs[:40] for t in tok.encode(d).ids][:63 * 8]).view(8, 63)
        with torch.no_grad():
            return F.cross_entropy(m.eval()(ids[:, :-1]).logits.transpose(1, 2), ids[:, 1:]).item()

    assert nll(runs["a"]) < nll(runs["b"]) - 0.1  # 5.69 vs 5.94 here



@pytest.mark.slow
def test_schedules_lab_forecasts_unseen_schedules_before_training_them(tmp_path):
    """#37 item 5, quick settings: the law fitted on cosine and constant forecasts WSD and its own best schedule,
    written to forecast.json before those runs train; a rerun reads the forecast back."""
    out = tmp_path / "schedules"
    r = _cli("lab", "schedules", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    fc = out / "forecast.json"
    for target in ("wsd", "law-best"):
        run = out / "runs" / f"d32L1-{target}-s0"
        assert fc.stat().st_mtime < min(p.stat().st_mtime for p in run.rglob("*") if p.is_file())
    z = s["sizes"][0]
    best = min(z["candidates"], key=lambda c: c["forecast_final_loss"])
    assert {f["schedule"]: f["spec"] for f in z["forecasts"]}["law-best"] == best["schedule"]
    for f in z["forecasts"]:  # a forecast of a trained model's loss: finite, in the curve's range, scored
        c = z["curves"][f"d32L1-{f['schedule']}-s0"]
        assert c["loss"][-1] < c["loss"][0] and f["measured_final"] == c["loss"][-1]
        assert abs(f["final_error"]) < 0.2 and 0 < f["curve_mean_abs_error"] < 0.2
    before = fc.read_bytes()
    assert _cli("lab", "schedules", "--quick", "--out", str(out)).returncode == 0 and fc.read_bytes() == before


@pytest.mark.slow
def test_mixture_lab_forecasts_its_three_mixes_before_training_them(tmp_path):
    """#39 item 4, quick settings: proxies at random mixtures, the law's choice and the natural and uniform mixes
    forecast to forecast.json before the 4x models train, then measured; a rerun reads the forecast back."""
    out = tmp_path / "mixture"
    r = _cli("lab", "mixture", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    fc = out / "forecast.json"
    for mix in ("chosen", "natural", "uniform"):
        run = out / "runs" / f"d32L2-{mix}"
        assert fc.stat().st_mtime < min(p.stat().st_mtime for p in run.rglob("*") if p.is_file())
    assert len(s["proxies"]) == 10 and all(3 < p["loss_code"] < 8 for p in s["proxies"])
    v = s["verdict"]
    assert sorted(v["measured_order"]) == ["chosen", "natural", "uniform"]
    assert all(math.isfinite(r["measured_target"]) and r["measured_target"] < 7 for r in s["mixes"])
    before = fc.read_bytes()
    assert _cli("lab", "mixture", "--quick", "--out", str(out)).returncode == 0 and fc.read_bytes() == before
