"""Hugging Face interop: our exported weights load in `transformers` and give the same logits."""

import json

import pytest
import torch

from conftest import FIXTURES
from scalelab.errors import UserError
from scalelab.model import ModelConfig, MoEConfig
from scalelab.model.hf import config_from_hf, config_to_hf
from scalelab.model.hf_weights import load_hf, save_hf
from scalelab.model.transformer import Transformer

transformers = pytest.importorskip("transformers")

CASES = {
    "llama-gqa-untied": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=257,
                                    tie_embeddings=False, rope_theta=5e5, max_seq_len=64),
    "llama-tied": ModelConfig(d_model=48, n_layers=2, n_heads=3, vocab_size=100, max_seq_len=64),
    "mixtral": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=211, max_seq_len=64,
                           tie_embeddings=False, moe=MoEConfig(num_experts=4, top_k=2, d_expert=96)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(name, tmp_path):
    cfg = CASES[name]
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    for p in ours.parameters():  # random, not init-scale, weights: a wiring mistake cannot hide
        torch.nn.init.normal_(p, std=0.1)
    save_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    expected = "MixtralForCausalLM" if cfg.moe else "LlamaForCausalLM"
    assert type(theirs).__name__ == expected
    x = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        a = ours(x).logits
        b = theirs(x).logits
    assert (a - b).abs().max().item() < 1e-4
    back = load_hf(tmp_path)  # and our loader reads the same files back exactly
    for (n, p), q in zip(ours.named_parameters(), back.parameters()):
        assert torch.equal(p, q), n


def test_import_configs_roundtrip():
    for f in ("llama-2-7b.config.json", "mixtral-8x7b.config.json"):
        cfg = config_from_hf(FIXTURES / f)
        assert config_from_hf(config_to_hf(cfg)) == cfg


def test_import_errors(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="not supported"):
        config_from_hf(p)
    p.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(UserError, match="num_attention_heads"):
        config_from_hf(p)
    with pytest.raises(UserError, match="shared experts"):
        config_to_hf(ModelConfig(moe=MoEConfig(num_shared_experts=1)))
