"""The analytic accounting of every supported architecture against transformers' own modules (built on
the meta device from the same config.json: no weights, no download) and against published figures."""

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ZOO, run_cli
from scalelab.errors import UserError
from scalelab.model import zoo
from scalelab.model.arch import Layer
from scalelab.model.hf_arch import DEFAULTS, READERS, arch_from_hf
from scalelab.model.hf_meta import build_on_meta
from scalelab.model.sources import model_counts

# the tests against transformers' own modules need it (the [hf] extra); the analytic ones do not
needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="needs transformers: pip install 'scalelab[hf]'")
TOWERS = re.compile(r"vision|multi_modal_projector")


def _language_model_params(model) -> dict[str, int]:
    """name -> numel of the language model's parameters (a multimodal model's towers left out)."""
    return {n: p.numel() for n, p in model.named_parameters() if not TOWERS.search(n)}


@needs_transformers
@pytest.mark.parametrize("name", zoo.names())
def test_analytic_counts_equal_transformers_modules(name):
    """Total, embedding and (MoE) active parameters, each from transformers' module shapes."""
    hf = zoo.load(name)
    arch, model = arch_from_hf(hf), build_on_meta(hf)
    params = _language_model_params(model)
    assert arch.num_params_total == sum(params.values()), name
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb_out.weight is emb_in.weight
    assert arch.tie_embeddings == tied
    assert arch.num_params_embedding == emb_in.weight.numel() * (1 if tied else 2) + params.get(
        "transformer.wpe.weight", 0)
    if arch.experts is None:
        assert arch.num_params_active == arch.num_params_total
    else:  # routed experts: the stacked expert tensors; a token uses top_k of their num_experts slices
        e = arch.experts
        routed = sum(v for n, v in params.items() if re.search(r"\.experts\.", n))
        assert arch.num_params_active == arch.num_params_total - routed * (e.num_experts - e.top_k) // e.num_experts


@needs_transformers
@pytest.mark.parametrize("name", ["qwen3-8b", "qwen3-30b-a3b", "gemma-2-9b", "gemma-3-1b", "mistral-shrunk",
                                  "deepseek-v3", "llama-4-scout"])
def test_keys_left_out_take_transformers_defaults(name):
    """A config.json without its optional keys counts as transformers builds it (DEFAULTS), and says so."""
    hf = zoo.load(name) if name != "mistral-shrunk" else {"model_type": "mistral", "hidden_size": 256,
                                                           "intermediate_size": 512, "num_attention_heads": 16,
                                                           "num_hidden_layers": 2, "vocab_size": 1000}
    text = hf.get("text_config", hf)
    for key in ("head_dim", "num_key_value_heads", "tie_word_embeddings", "sliding_window", "q_lora_rank",
                "first_k_dense_replace", "n_shared_experts", "num_experts_per_tok", "attention_chunk_size"):
        text.pop(key, None)
    arch = arch_from_hf(hf)
    assert arch.num_params_total == sum(_language_model_params(build_on_meta(hf)).values())
    if DEFAULTS.get(text["model_type"]):
        assert any("transformers' defaults used" in n for n in arch.notes)


@needs_transformers
def test_defaults_table_is_transformers_own():
    """Every default scalelab applies to a key a config leaves out (model/hf_defaults.py) is the installed
    transformers' own."""
    import transformers

    for mtype, table in DEFAULTS.items():
        fields = transformers.CONFIG_MAPPING[mtype].__dataclass_fields__
        for key, value in table.items():
            assert fields[key].default == value, (mtype, key)


def test_published_figures():
    """Model cards and papers (SOURCES.md), exact where they are exact, else at their precision (some round,
    some truncate: the figure is within one unit of its last digit)."""
    a = {n: arch_from_hf(zoo.load(n)) for n in zoo.names()}
    assert a["pythia-1.4b"].num_params_total == 1_414_647_808  # Pythia README
    assert a["llama-2-7b"].num_params_total == 6_738_415_616
    g2 = a["gemma-2-9b"]  # Gemma 2 report, Table 2
    assert (g2.num_params_embedding, g2.num_params_non_embedding) == (917_504_000, 8_324_201_984)
    assert round(a["gemma-3-1b"].num_params_embedding / 1e6) == 302
    assert round(a["gemma-3-1b"].num_params_non_embedding / 1e6) == 698
    assert round(a["gemma-3-4b"].num_params_non_embedding / 1e6) == 3209  # Gemma 3 report, Table 1
    for name, total, active, digits in [("qwen2.5-7b", 7.61, 7.61, 2), ("qwen3-8b", 8.2, 8.2, 1),
                                        ("qwen3-30b-a3b", 30.5, 3.3, 1), ("deepseek-v3", 671, 37, 0),
                                        ("olmoe-1b-7b", 6.9, 1.3, 1), ("mixtral-8x7b", 46.7, 12.9, 1),
                                        ("phi-3-mini-4k", 3.8, 3.8, 1), ("deepseek-v2-lite", 15.7, None, 1)]:
        assert abs(a[name].num_params_total / 1e9 - total) < 10 ** -digits, name
        if active is not None:
            assert abs(a[name].num_params_active / 1e9 - active) < 10 ** -digits, name
    assert abs(a["qwen2.5-7b"].num_params_non_embedding / 1e9 - 6.53) < 0.01
    assert abs(a["qwen3-8b"].num_params_non_embedding / 1e9 - 6.95) < 0.01
    assert abs(a["qwen3-30b-a3b"].num_params_non_embedding / 1e9 - 29.9) < 0.1
    assert round(a["gpt2"].num_params_total / 1e6) == 124
    # DeepSeek-V2: MLA caches (d_c + d_h^R) = 4.5 d_h elements per token and layer (Table 1 of the paper)
    mla = a["deepseek-v3"].attention
    assert mla.kv_cache_elements_per_token() == 4.5 * 128
    # Llama 4 Scout: 109B total with its vision encoder, 17B active (model card)
    _, scout = model_counts("llama-4-scout")
    assert round(scout["num_params_with_other_towers"] / 1e9) == 109 and round(scout["num_params_active"] / 1e9) == 17


@needs_transformers
def test_shipped_tower_counts_are_transformers_own():
    """The vision towers recorded for shipped multimodal configs (so `count` needs no torch) equal what
    transformers counts on the meta device today."""
    from scalelab.model import hf_meta, zoo
    from scalelab.model.hf_arch import arch_from_hf

    for name, towers in zoo.OTHER_TOWERS.items():
        d = zoo.load(name)
        assert hf_meta.meta_counts(d)["num_params_total"] - arch_from_hf(d).num_params_total == towers, name


def test_attention_context_against_masks():
    """The keys a query attends, averaged over the sequence, counted from explicit masks."""
    t = 50
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    causal = j <= i
    for layer, mask in [(Layer(), causal), (Layer(window=8), causal & (i - j < 8)),
                        (Layer(chunk=16), causal & (i // 16 == j // 16)), (Layer(window=64), causal)]:
        assert layer.context(t, causal=True) == pytest.approx(mask.sum() / t)
    assert Layer(window=8).context(t, causal=False) == 8 and Layer(window=64).context(t, causal=False) == t


@needs_transformers
def test_sliding_window_cache_matches_transformers(tmp_path):
    """The KV cache a sliding-window model keeps, from transformers' own cache after a forward pass."""
    import torch
    import transformers

    cfg = transformers.Gemma2Config(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                                    head_dim=16, num_hidden_layers=4, vocab_size=100, sliding_window=8)
    model = transformers.Gemma2ForCausalLM(cfg).eval()
    hf = json.loads(cfg.to_json_string())
    arch = arch_from_hf(hf)
    for t in (5, 40):
        with torch.no_grad():
            cache = model(torch.randint(0, 100, (1, t)), use_cache=True).past_key_values
        cached = sum(layer.keys.shape[-2] * layer.keys.shape[1] * (layer.keys.shape[-1] + layer.values.shape[-1])
                     for layer in cache.layers)
        # transformers keeps window - 1 past positions for the next token (which attends them and itself);
        # we count the window, the positions a new query sees: at most one position per layer apart
        assert 0 <= arch.kv_cache_elements(t) - cached <= 4 * 32 * (t > 8), t


@needs_transformers
def test_unknown_model_type_falls_back_to_transformers_and_says_what_it_lacks(tmp_path):
    hf = {"model_type": "starcoder2", "architectures": ["Starcoder2ForCausalLM"], "hidden_size": 64,
          "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
          "vocab_size": 100}
    assert "starcoder2" not in READERS
    p = tmp_path / "config.json"
    p.write_text(json.dumps(hf))
    arch, d = model_counts(str(p))
    assert arch is None and d["num_params_total"] == sum(x.numel() for x in build_on_meta(hf).parameters())
    assert "not derived: num_params_active" in d["notes"][0] and "num_params_active" not in d


@needs_transformers
@pytest.mark.parametrize("hf,msg", [
    # a key set to null has no value (an absent one takes transformers' default, noted: see below)
    ({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": None},
     "lacks the field 'num_hidden_layers' that a qwen3"),
    ({"model_type": "nonesuch"}, "known neither to scalelab's readers nor to transformers"),
    ({"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
      "num_hidden_layers": 2, "vocab_size": 10, "layer_types": ["full_attention"]}, "layer_types has 1 entries"),
])
def test_bad_configs_are_one_line_errors(tmp_path, hf, msg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(hf))
    with pytest.raises(UserError, match=re.escape(msg)):
        model_counts(str(p))
    if hf["model_type"] == "qwen3":  # and through the command line: exit 2, one line (the CLI's own test)
        r = run_cli("count", p)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_count_reads_shipped_names_and_memory_for_any_architecture():
    d = json.loads(run_cli("count", "deepseek-v3", "--json", "--seq-len", "4096", "--batch", "1",
                           "--gpu", "h100-sxm").stdout)
    assert d["num_params_total"] == arch_from_hf(json.loads((ZOO / "deepseek-v3.json").read_text())).num_params_total
    assert d["kv_cache_bytes"] == 61 * 576 * 2 * 4096 and d["fits_serving"] is False


def test_a_config_that_leaves_keys_to_transformers_is_counted_with_its_defaults_and_says_so():
    """google/gemma-3-4b-it's text_config leaves num_attention_heads, max_position_embeddings and more to
    transformers: they take its defaults (131072 positions, not 2048) and the notes list them."""
    from scalelab.model import zoo
    from scalelab.model.hf_arch import arch_from_hf

    d = zoo.load("gemma-3-4b")
    sparse = {**d, "text_config": {k: v for k, v in d["text_config"].items()
                                   if k not in ("num_attention_heads", "max_position_embeddings", "head_dim")}}
    full, arch = arch_from_hf(d), arch_from_hf(sparse)
    assert arch.max_seq_len == 131072 and arch.num_params_total == full.num_params_total
    assert any("num_attention_heads=8" in n and "max_position_embeddings=131072" in n for n in arch.notes)


def test_count_is_quiet_and_torch_free_for_a_shipped_config_and_quiet_through_transformers(tmp_path):
    """A shipped multimodal name is counted without torch; the same config given as a file goes through
    transformers (its vision tower), still without a line of library noise."""
    code = ("import sys; from scalelab.cli import main; rc = main(['count', 'gemma-3-4b', '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    (tmp_path / "g.json").write_text(json.dumps(zoo.load("gemma-3-4b")))
    if importlib.util.find_spec("transformers") is not None:
        r = run_cli("count", tmp_path / "g.json", "--json")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert json.loads(r.stdout)["num_params_other_towers"] == zoo.OTHER_TOWERS["gemma-3-4b"]
