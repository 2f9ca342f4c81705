"""Hugging Face interop: our exported weights load in `transformers` and give the same logits."""

import importlib
import importlib.util
import json

import pytest
import torch

from conftest import FIXTURES, ZOO
from scalelab.errors import UserError
from scalelab.model import MLAConfig, ModelConfig, MoEConfig
from scalelab.model.hf import config_from_hf, config_to_hf
from scalelab.model.hf_weights import load_hf, save_hf
from scalelab.model.transformer import Transformer

# the tests that compare with transformers need it (the [hf] extra); the config round trips below do not
transformers = importlib.import_module("transformers") if importlib.util.find_spec("transformers") else None
needs_transformers = pytest.mark.skipif(transformers is None, reason="needs transformers: pip install 'scalelab[hf]'")

CASES = {
    "llama-gqa-untied": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=257,
                                    tie_embeddings=False, rope_theta=5e5, max_seq_len=64),
    "llama-tied": ModelConfig(d_model=48, n_layers=2, n_heads=3, vocab_size=100, max_seq_len=64),
    "mixtral": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=211, max_seq_len=64,
                           tie_embeddings=False, moe=MoEConfig(num_experts=4, top_k=2, d_expert=96)),
    # the options of today's open models, each against its own transformers class
    "mistral-window": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=64,
                                  sliding_window=8),
    "qwen2-bias": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=64,
                              qkv_bias=True, tie_embeddings=False),
    "qwen3-qknorm-window": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=32, vocab_size=97,
                                       max_seq_len=64, qk_norm="head", sliding_window=12),
    "qwen3-moe": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=64,
                             qk_norm="head", tie_embeddings=False, moe=MoEConfig(num_experts=8, top_k=2, d_expert=32)),
    "olmoe": ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=97, max_seq_len=64, qk_norm="full",
                         tie_embeddings=False, moe=MoEConfig(num_experts=8, top_k=3, d_expert=32, renormalize=False)),
    # DeepSeek-V2: MLA (a query bottleneck here) + fine-grained and shared experts after a dense first layer
    "deepseek-v2": ModelConfig(d_model=64, n_layers=3, n_heads=4, head_dim=16, vocab_size=97, max_seq_len=64,
                               tie_embeddings=False, mla=MLAConfig(kv_lora_rank=24, q_lora_rank=32, rope_head_dim=8),
                               moe=MoEConfig(num_experts=8, top_k=2, d_expert=16, num_shared_experts=2,
                                             first_dense_layers=1, renormalize=False)),
    "deepseek-v2-dense-mla": ModelConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=97, max_seq_len=64,
                                         mla=MLAConfig(kv_lora_rank=32)),
}
CLASS = {"mixtral": "MixtralForCausalLM", "mistral-window": "MistralForCausalLM", "qwen2-bias": "Qwen2ForCausalLM",
         "qwen3-qknorm-window": "Qwen3ForCausalLM", "qwen3-moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM",
         "deepseek-v2": "DeepseekV2ForCausalLM", "deepseek-v2-dense-mla": "DeepseekV2ForCausalLM"}


@pytest.mark.parametrize("name", list(CASES))
@needs_transformers
def test_logits_match_transformers(name, tmp_path):
    cfg = CASES[name]
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    for p in ours.parameters():  # random, not init-scale, weights: a wiring mistake cannot hide
        torch.nn.init.normal_(p, std=0.1)
    save_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == CLASS.get(name, "LlamaForCausalLM")
    x = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        a = ours(x).logits
        b = theirs(x).logits
    assert (a - b).abs().max().item() < 1e-4
    back = load_hf(tmp_path)  # and our loader reads the same files back exactly
    assert back.cfg.counts() == cfg.counts() and (cfg.moe is None or back.cfg.moe.renormalize == cfg.moe.renormalize)
    for (n, p), q in zip(ours.named_parameters(), back.parameters()):
        assert torch.equal(p, q), n


def test_import_configs_roundtrip():
    for f in ("llama-2-7b.json", "mixtral-8x7b.json", "qwen2.5-7b.json", "qwen3-8b.json", "qwen3-30b-a3b.json",
              "olmoe-1b-7b.json"):
        cfg = config_from_hf(ZOO / f)
        back = config_from_hf(config_to_hf(cfg))
        assert back.counts() == cfg.counts() and back.qk_norm == cfg.qk_norm and back.qkv_bias == cfg.qkv_bias
        assert (back.moe and back.moe.renormalize) == (cfg.moe and cfg.moe.renormalize), f


def test_import_errors(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="cannot be built by scalelab's model family"):
        config_from_hf(p)
    p.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": None}))  # absent: 32
    with pytest.raises(UserError, match="lacks the field 'num_hidden_layers' that a llama config must have"):
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


@needs_transformers
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


@needs_transformers
def test_transformers_greedy_text_equals_scalelab_sample(exported):
    from conftest import run_cli

    run, hf = exported
    r = run_cli("sample", run, "--prompt", "def ", "--temperature", "0", "--max-new-tokens", "40")
    assert r.returncode == 0, r.stderr
    gen = transformers.pipeline("text-generation", model=str(hf), tokenizer=str(hf), device="cpu")
    out = gen("def ", max_new_tokens=40, do_sample=False)[0]["generated_text"]
    assert len(out) > len("def ") + 20 and out == r.stdout[:-1]  # print's newline


@needs_transformers
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


@needs_transformers
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


class _Req:  # what lm-evaluation-harness hands a model: an Instance's args
    def __init__(self, *args):
        self.args = args


@needs_transformers
def test_lm_eval_adapter_scores_like_transformers_on_the_exported_model(exported):
    """`ScalelabLM` (our model, our tokenizer) gives the log-likelihoods the exported checkpoint gives in
    transformers, computed here by hand: a reference implementation of the harness's request types."""
    pytest.importorskip("lm_eval")
    from scalelab.evaluate.benchmarks import ScalelabLM
    from scalelab.train.runner import load_run

    run, hf = exported
    model, _, tok = load_run(run)
    lm = ScalelabLM(model, tok, batch_size=2)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    htok = transformers.AutoTokenizer.from_pretrained(hf)
    pairs = [("def f(x):", " return x"), ("import", " os"), ("", "class A:"), ("x = 1 ", "+ 2")]
    got = lm.loglikelihood([_Req(c, t) for c, t in pairs])
    for (c, t), (lp, _) in zip(pairs, got):
        c2, t2 = (c.rstrip(), c[len(c.rstrip()):] + t)  # the harness moves trailing spaces to the continuation
        ctx = htok(c2)["input_ids"] or [htok.eos_token_id]
        whole = htok(c2 + t2)["input_ids"]
        ids = ctx + whole[len(ctx):] if c2 else ctx + whole
        with torch.no_grad():
            logp = torch.log_softmax(theirs(torch.tensor([ids])).logits[0].float(), -1)
        n = len(ids) - len(ctx)
        ref = sum(logp[len(ctx) - 1 + i, ids[len(ctx) + i]].item() for i in range(n))
        assert lp == pytest.approx(ref, abs=1e-3), (c, t)
    text = "def g(y):\n    return y * 2\n"
    ids = [htok.eos_token_id] + htok(text)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(theirs(torch.tensor([ids])).logits[0].float(), -1)
    ref = sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
    assert lm.loglikelihood_rolling([_Req(text)])[0] == pytest.approx(ref, abs=1e-3)


def _toy_tasks(folder):
    """Two local harness tasks over tests/fixtures/lm_eval/sums.jsonl: multiple choice and generation."""

    data = FIXTURES / "lm_eval" / "sums.jsonl"
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n" \
             "doc_to_text: \"{{question}}\"\ntarget_delimiter: \"\"\n"
    (folder / "mc.yaml").write_text("task: toy_sums\n" + common + "output_type: multiple_choice\n"
                                      "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{label}}\"\n"
                                      "metric_list:\n  - metric: acc\n")
    (folder / "gen.yaml").write_text("task: toy_sums_gen\n" + common + "output_type: generate_until\n"
                                       "doc_to_target: \"{{answer}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n"
                                       "  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n")


@pytest.mark.slow
@needs_transformers
def test_scalelab_eval_runs_local_harness_tasks_and_keeps_the_results(exported, tmp_path):
    """A run: results in RUN/lm_eval.json. A ladder: every finished run, and `ladder export --tasks` has them."""
    pytest.importorskip("lm_eval")
    import pandas as pd

    from conftest import run_cli
    from test_ladder import tiny_spec

    run, _ = exported
    _toy_tasks(tmp_path)
    r = run_cli("eval", run, "--tasks", "toy_sums,toy_sums_gen", "--include-path", tmp_path, "--json",
                env={"HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)["results"]
    assert 0 <= res["toy_sums"]["acc"] <= 1 and 0 <= res["toy_sums_gen"]["exact_match"] <= 1
    kept = json.loads((run / "lm_eval.json").read_text())
    assert kept["results"]["toy_sums"] == res["toy_sums"] and kept["step"] == 80
    r = run_cli("eval", run, "--tasks", "no_such_task", "--include-path", tmp_path)
    assert r.returncode == 2 and "error: --tasks: lm-evaluation-harness has no task 'no_such_task'" in r.stderr
    spec = tiny_spec(tmp_path, sizes=1)
    assert run_cli("ladder", "run", spec, "--out", tmp_path / "lad").returncode == 0
    r = run_cli("eval", tmp_path / "lad", "--tasks", "toy_sums", "--include-path", tmp_path,
                env={"HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 0 and "[2/2]" in r.stdout, r.stderr[-3000:]
    assert run_cli("ladder", "export", tmp_path / "lad", "--out", tmp_path / "t.csv", "--tasks").returncode == 0
    df = pd.read_csv(tmp_path / "t.csv")
    rows = df[df["task"] == "lm_eval/toy_sums"]
    assert len(rows) == 2 and rows["final"].all() and rows["acc"].between(0, 1).all()
