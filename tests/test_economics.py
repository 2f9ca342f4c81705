"""Economics against published figures: KV cache, ZeRO, GPT-3 FLOPs, PaLM MFU, Korthikanti activations,
inference-aware sizing; and the commands never touch torch (no weights allocated)."""

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, ZOO, run_cli
from scalelab.economics.cost import decode_throughput, training_cost
from scalelab.economics.flops import hfu, mfu, palm_flops_per_token, train_flops_6nd
from scalelab.economics.hardware import get_hardware
from scalelab.economics.memory import (
    activation_bytes,
    korthikanti_bytes_per_layer,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    train_state_bytes,
    weights_bytes,
)
from scalelab.errors import UserError
from scalelab.model import ModelConfig
from scalelab.model.hf import config_from_hf

LLAMA2_70B = ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672, vocab_size=32000,
                         max_seq_len=4096, tie_embeddings=False)  # Touvron et al. 2023b, HF config


def test_kv_cache_published_figures():
    llama7 = config_from_hf(ZOO / "llama-2-7b.json")
    assert kv_cache_bytes_per_token(llama7) == 524_288
    assert kv_cache_bytes_per_token(LLAMA2_70B) == 327_680
    assert LLAMA2_70B.num_params_total == pytest.approx(68.98e9, rel=1e-3)
    mqa = ModelConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=1)
    assert kv_cache_bytes_per_token(mqa) == 524_288 // 32
    assert kv_cache_bytes(llama7, context=4096, batch=8) == 524_288 * 4096 * 8
    assert kv_cache_bytes(llama7, context=32768, window=4096) == 524_288 * 4096  # sliding window


def test_zero_paper_example():
    # Rajbhandari et al. 2020, Fig. 1: 7.5B parameters, 64 GPUs, mixed-precision Adam (K = 12)
    got = [train_state_bytes(7.5e9, "mixed", zero=z, dp=64)["total"] / 1e9 for z in range(4)]
    assert got == pytest.approx([120, 31.4, 16.6, 1.9], abs=0.06)
    assert train_state_bytes(1e9, "mixed-fp32-grads")["total"] == 18e9
    assert train_state_bytes(1e9, "bf16")["total"] == 8e9
    with pytest.raises(UserError, match="regime"):
        train_state_bytes(1e9, "fp64")


def test_gpt3_flops_and_palm_mfu():
    assert train_flops_6nd(175e9, 300e9) == pytest.approx(3.14e23, rel=0.01)
    # PaLM 540B: 238.3k tokens/s on 6144 TPU v4 chips (275 TFLOP/s) -> 46.2% MFU (Chowdhery et al. App. B)
    fpt = palm_flops_per_token(540.35e9, n_layers=118, n_heads=48, head_dim=256, seq_len=2048)
    assert mfu(238.3e3, fpt, 6144, get_hardware("tpu-v4").peak_bf16_flops) == pytest.approx(0.462, abs=0.001)
    attn = 12 * 118 * 48 * 256 * 2048
    assert hfu(238.3e3, fpt, 6144, 275e12, "full") == pytest.approx(0.462 * 4 / 3, abs=0.002)
    assert 0.462 < hfu(238.3e3, fpt, 6144, 275e12, "selective", attn) < 0.47


def test_korthikanti_gpt3_activations():
    # GPT-3 175B, s = 2048, b = 1, h = 12288, a = 96: 2.87 GB per layer without parallelism
    assert korthikanti_bytes_per_layer(2048, 1, 12288, 96) / 1e9 == pytest.approx(2.87, abs=0.01)
    assert korthikanti_bytes_per_layer(2048, 1, 12288, 96, "selective") == 34 * 2048 * 12288
    assert korthikanti_bytes_per_layer(2048, 1, 12288, 96, "full") == 2 * 2048 * 12288


def test_our_activation_model_orders_recomputation():
    cfg = config_from_hf(ZOO / "llama-2-7b.json")
    none = activation_bytes(cfg, 4096, 1, "none", flash=False)["per_layer"]
    flash = activation_bytes(cfg, 4096, 1, "none", flash=True)["per_layer"]
    full = activation_bytes(cfg, 4096, 1, "full")["per_layer"]
    assert none > flash > full == 2 * 4096 * cfg.d_model
    assert none - flash == 2 * cfg.n_heads * 4096 * 4096  # the s^2 softmax term flash never stores


def test_quantized_weights_and_serving():
    assert weights_bytes(1e9, "int4", group_size=128) == pytest.approx(1e9 * 4.125 / 8)
    assert weights_bytes(1e9, "int8", group_size=64, zero_point=True) == pytest.approx(1e9 * 8.5 / 8)
    llama7 = config_from_hf(ZOO / "llama-2-7b.json")
    h100 = get_hardware("h100-sxm")
    one = decode_throughput(llama7, h100, batch=1, context=2048)
    big = decode_throughput(llama7, h100, batch=256, context=2048)
    # batch 1 is memory-bound: one step reads all bf16 weights (Llama-2-7B's published 6,738,415,616 parameters)
    # plus the sequence's KV cache (2 x 32 layers x 4096 x 2 bytes = 524,288 bytes per token, by hand)
    published = 6_738_415_616
    step_bytes = 2 * published + 524_288 * 2048
    assert one["bound"] == "memory" and one["tokens_per_s"] == pytest.approx(h100.bandwidth_bytes_per_s / step_bytes)
    # batching amortises the weights but not the (MHA) KV cache: 256 x 2048 tokens of cache = 275 GB a step
    assert 10 * one["tokens_per_s"] < big["tokens_per_s"] < 256 * one["tokens_per_s"]
    assert big["usd_per_million_tokens"] < one["usd_per_million_tokens"]
    # MHA at 2k context: each sequence's KV cache costs more bytes than its FLOPs can hide, so decoding
    # never turns compute-bound; at a short context it does, near W * peak / bandwidth / 2N sequences
    assert one["compute_bound_batch"] is None
    # (even at 128 tokens a sequence brings 2N FLOPs per 67 MB of cache: 200 FLOPs/byte < the ridge)
    ridge = h100.peak_bf16_flops / h100.bandwidth_bytes_per_s  # ~295 FLOPs per byte
    assert decode_throughput(llama7, h100, batch=1, context=128)["compute_bound_batch"] is None
    short = decode_throughput(llama7, h100, batch=1, context=32)["compute_bound_batch"]
    kv_seq = 524_288 * 32
    expected = 2 * published * ridge / (2 * published - ridge * kv_seq)
    assert short == pytest.approx(expected, rel=0.05)
    mixtral = config_from_hf(ZOO / "mixtral-8x7b.json")
    m1 = decode_throughput(mixtral, h100, batch=1, context=2048)
    assert m1["tokens_per_s"] > decode_throughput(llama7, h100, 1, 2048)["tokens_per_s"] / 3  # ~13B active


def test_training_cost_against_a_published_run():
    """Llama 3 405B (Dubey et al. 2024): 3.8e25 FLOPs at 38-43% BF16 MFU on H100s took 30.84M GPU-hours
    (Table 4 and section 3.3.4; the reported hours include restarts and evaluation, the MFU does not)."""
    c = training_cost(3.8e25, get_hardware("h100-sxm"), n_gpus=16_384, mfu=0.38, price=2.0)
    assert c["gpu_hours"] == pytest.approx(30.84e6, rel=0.12)
    with pytest.raises(UserError, match="mfu"):
        training_cost(1e24, get_hardware("h100-sxm"), mfu=1.5)


def test_plan_inference_aware_json():
    r = run_cli("plan", "--compute", "3e23", "--law", "hoffmann2022", "--inference-tokens", "2e12", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("N_opt", "D_opt", "tokens_per_param", "predicted_loss", "gpu_hours", "cost_usd", "days"):
        assert d[k] > 0
    ia = d["inference_aware"]
    assert ia["N"] < d["N_opt"] and ia["D_train"] > d["D_opt"] and ia["saving"] > 0
    assert ia["total_cost_usd"] < ia["chinchilla_total_cost_usd"]
    r = run_cli("plan", "--compute", "1e23", "--gpu", "abacus")
    assert r.returncode == 2 and "--gpu 'abacus' is unknown" in r.stderr


def test_models_table():
    r = run_cli("models", "--law", "hoffmann2022", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    g = rows["GPT-3 175B"]
    assert g["compute_flops"] == pytest.approx(3.15e23, rel=0.01)
    assert g["tokens_for_20_per_param"] == 3.5e12 and g["tokens_per_param"] < 2
    assert g["params_over_optimal"] > 1  # GPT-3 was too big for its compute
    assert rows["Chinchilla 70B"]["tokens_per_param"] == 20
    assert rows["DeepSeek-V3"]["params_active"] == 37e9 and rows["Mixtral 8x7B"]["tokens"] is None
    assert all(m["source"] for m in rows.values())


def test_count_memory_json():
    r = run_cli("count", ZOO / "llama-2-7b.json", "--json", "--batch", "2", "--seq-len", "2048",
                "--gpu", "a100-80gb", "--zero", "3", "--dp", "8")
    d = json.loads(r.stdout)
    assert d["kv_cache_bytes_per_token"] == 524_288
    assert d["weights_bytes"]["bf16"] == 2 * d["num_params_total"]
    assert d["train_memory_bytes"] > d["train_state_bytes"]["total"] == 16 * d["num_params_total"] / 8
    assert d["fits_serving"] is True
    dec = d["decode"]
    assert dec["bound"] == "memory" and dec["tokens_per_s"] > 0 and dec["usd_per_million_tokens"] > 0


def test_economics_never_imports_torch():
    code = ("import sys; from scalelab.cli import main; "
            "main(['plan', '--compute', '1e22', '--json']); main(['models', '--json']); "
            f"main(['count', r'{FIXTURES / 'mixtral-8x7b.config.json'}', '--json', '--batch', '4']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_gpu_names_as_torch_reports_them_find_their_datasheet():
    """MFU on a known GPU is against its datasheet peak: torch's device names map to the table."""
    from scalelab.economics.hardware import hardware_for_device

    names = {"NVIDIA H200": "h200", "NVIDIA H100 80GB HBM3": "h100-sxm", "NVIDIA H100 PCIe": "h100-pcie",
             "NVIDIA A100-SXM4-40GB": "a100-40gb", "NVIDIA A100-SXM4-80GB": "a100-80gb",
             "NVIDIA A100 80GB PCIe": "a100-80gb", "Tesla V100-SXM2-16GB": "v100", "NVIDIA L40S": "l40s",
             "NVIDIA GeForce RTX 4090": "rtx-4090", "AMD Instinct MI300X": "mi300x"}
    for name, key in names.items():
        assert hardware_for_device(name).name == key, name
    assert hardware_for_device("NVIDIA GeForce RTX 3090") is None


def test_data_constrained_allocation():
    """With ample unique data it is the closed-form Chinchilla optimum; capped, its optimum beats every
    other size on a grid, and it trains a smaller model for more epochs than the unconstrained answer
    (Muennighoff et al. 2023, Fig. 1: repeated data loses value slower than excess parameters)."""
    import numpy as np

    from scalelab.laws.allocation import allocate_unique
    from scalelab.laws.forms import get_form
    from scalelab.laws.published import get_law

    law, C = get_law("muennighoff2023"), 1e24
    free = law.allocate(C)
    ample = allocate_unique(law, C, 1e6 * float(free["D_opt"][0]))
    assert ample["N_opt"] == pytest.approx(float(free["N_opt"][0]), rel=1e-3)
    capped = allocate_unique(law, C, 2e10)
    form = get_form("data_constrained")
    grid = np.geomspace(capped["N_opt"] / 10, capped["N_opt"] * 10, 401)
    losses = form.predict(law.params, grid, C / (6 * grid), unique_tokens=2e10)
    assert capped["loss"] <= losses.min() + 1e-9
    assert capped["N_opt"] < capped["unconstrained"]["N_opt"] and capped["epochs"] > capped["unconstrained"]["epochs"]
    assert capped["loss"] < capped["unconstrained"]["loss_on_capped_data"]


@pytest.mark.parametrize("args,msg", [(["--unique-tokens", "0"], "--unique-tokens must be a positive number, got 0"),
                                      (["--unique-tokens", "1e12", "--inference-tokens", "1e12"], "give one"),
                                      (["--unique-tokens", "1e12", "--law", "kaplan2020"], "Chinchilla-form")])
def test_plan_unique_tokens_errors(args, msg):
    r = run_cli("plan", "--compute", "1e24", *args)
    assert r.returncode == 2 and msg in r.stderr
