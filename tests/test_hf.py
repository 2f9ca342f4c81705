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


@pytest.fixture(scope="module")
def exported(small_cfg, small_dataset, tmp_path_factory):
    """A briefly trained run and its `scalelab export` (through the CLI, as a user runs it)."""
    from conftest import run_cli
    from scalelab.train.loop import train

    run, hf = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("hf")
    train(small_cfg("train.max_steps=80", "train.eval_every=80", "optim.lr=3e-3"), run, dataset=small_dataset)
    r = run_cli("export", run, "--out", hf)
    assert r.returncode == 0, r.stderr
    return run, hf


def test_export_carries_tokenizer_and_special_tokens(exported):
    from scalelab.data.tokenizer import load_tokenizer

    run, hf = exported
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    assert tok.bos_token == tok.eos_token == tok.pad_token == "<|endoftext|>" and tok.eos_token_id == 0
    text = "def f(x):\n    return x + 1\n"
    assert tok(text)["input_ids"] == load_tokenizer(run / "tokenizer.json").encode(text).ids  # nothing added
    model = transformers.AutoModelForCausalLM.from_pretrained(hf)
    assert model.config.eos_token_id == model.generation_config.eos_token_id == 0
    assert model.generation_config.pad_token_id == 0


def test_transformers_greedy_text_equals_scalelab_sample(exported):
    from conftest import run_cli

    run, hf = exported
    r = run_cli("sample", run, "--prompt", "def ", "--temperature", "0", "--max-new-tokens", "40")
    assert r.returncode == 0, r.stderr
    gen = transformers.pipeline("text-generation", model=str(hf), tokenizer=str(hf), device="cpu")
    out = gen("def ", max_new_tokens=40, do_sample=False)[0]["generated_text"]
    assert len(out) > len("def ") + 20 and out == r.stdout[:-1]  # print's newline


def test_transformers_generation_stops_at_the_exported_eos(exported):
    _, hf = exported
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # every logit 0: greedy picks id 0, <|endoftext|>, at once
    ids = tok("def ", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 1 and out[0, -1].item() == tok.eos_token_id
    gen = transformers.pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    assert gen("def ", max_new_tokens=20, do_sample=False)[0]["generated_text"] == "def "


def test_train_starts_from_a_local_hf_checkpoint_with_its_tokenizer(tmp_path):
    """`model.init_from=DIR`: the architecture, the weights and the tokenizer (here one whose end of text is
    Llama 2's `</s>`) come from a Hugging Face checkpoint made locally; a model key that contradicts it
    is a one-line error."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from conftest import SMALL_DATA, TINY_MODEL
    from scalelab.config import load_config
    from scalelab.train.loop import train
    from scalelab.train.runner import load_run

    ckpt = tmp_path / "tiny-llama"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["def f(x):\n    return x + 1\n" * 200, "import os\nclass A:\n    pass\n" * 200],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=160,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(cfg).eval()
    theirs.save_pretrained(ckpt)
    tok.save(str(ckpt / "tokenizer.json"))
    data = [o for o in SMALL_DATA if not o.startswith("model.")]
    run_cfg = load_config(None, data + [f"model.init_from={ckpt}", "model.max_seq_len=64", "train.seq_len=64",
                                        "train.batch_size=4", "train.max_steps=2", "optim.lr=1e-12",
                                        "optim.weight_decay=0", "train.progress=false", "train.eval_tokens=2048"])
    V = tok.get_vocab_size()
    assert (run_cfg.model.d_model, run_cfg.model.n_kv_heads, run_cfg.model.vocab_size) == (64, 2, V)
    train(run_cfg, tmp_path / "run")
    assert (tmp_path / "run" / "tokenizer.json").read_bytes() == (ckpt / "tokenizer.json").read_bytes()
    ours, _, _ = load_run(tmp_path / "run")
    x = torch.randint(0, V, (2, 32))
    with torch.no_grad():
        assert (ours(x).logits - theirs(x).logits).abs().max().item() < 1e-4  # it started from their weights
    with pytest.raises(UserError, match=r"model.d_model=128 contradicts model.init_from"):
        load_config(None, [f"model.init_from={ckpt}", "model.d_model=128"])
    with pytest.raises(UserError, match="not a folder"):
        load_config(None, [f"model.init_from={tmp_path / 'nowhere'}"])
    assert TINY_MODEL  # (the usual tiny shape is not used: the checkpoint decides the shape)
