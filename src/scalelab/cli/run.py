"""`scalelab train|sample|count|export`: one run, from a config to a model and back out."""

from __future__ import annotations

from pathlib import Path

from scalelab.cli.args import fraction, non_negative, non_negative_int, positive_int
from scalelab.cli.output import emit, table
from scalelab.errors import UserError

ACTIVE_HELP = ("'active' parameters are those one token uses: all dense weights, both vocabulary matrices "
               "(input embedding and output head), routers, shared experts and top_k routed experts (the "
               "convention Mistral uses for Mixtral's 12.9B). 6N uses the active count.")


def _zoo_names() -> list[str]:
    from scalelab.model import zoo

    return zoo.names()


# ---- train / sample / count / export ------------------------------------------------------------

def cmd_train(a) -> int:
    from scalelab.config import load_config
    from scalelab.train.loop import train
    from scalelab.train.rundir import RunDir

    config, overrides = a.config, list(a.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # no file: all overrides
        config, overrides = None, [config, *overrides]
    out = Path(a.out)
    run = RunDir(out)
    if a.resume and a.restart:
        raise UserError("--resume continues the run and --restart starts it over; give one")
    if a.resume and config is None and run.config_file.exists():
        # the run's own config; overrides may only change how it runs (threads, loggers, ...): the loop
        # refuses any that would make it another run (config.py `identity`)
        from scalelab.config import apply_overrides, load_dict
        from scalelab.io import read_json

        cfg = load_dict(apply_overrides(read_json(run.config_file, "run config"), overrides))
    else:
        cfg = load_config(config, overrides)
    if a.restart:
        run.clear()
    if not a.resume and (run.has_checkpoint() or run.is_complete()):
        raise UserError(f"{out} already holds a run; pass --resume to continue it, --restart to train it again "
                        "from scratch, or choose another --out")
    if a.resume:
        run.latest_checkpoint(report=lambda m: None, full=False)  # all corrupt: say so before any work
    summary = train(cfg, out, resume=a.resume)
    if summary.get("world_size", 1) > 1:  # under torchrun: leave the process group; rank 0 reports
        import torch.distributed as dist

        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank:
            return 0
    f = summary["final"]
    print(f"done: {summary['steps']} steps, {summary['tokens']:,} tokens, "
          f"val loss {f.get('val_loss', float('nan')):.4f}"
          f" (ln V = {summary['ln_vocab']:.3f}), {f.get('val_bpb', float('nan')):.4f} bits/byte -> {out}")
    return 0


def cmd_sample(a) -> int:
    import torch

    from scalelab.model.transformer import generate
    from scalelab.train.runner import load_run

    model, cfg, tok = load_run(a.run_dir)
    ids = tok.encode(a.prompt).ids or [0]
    if len(ids) >= cfg.model.max_seq_len:
        raise UserError(f"--prompt is {len(ids)} tokens; the model's context is {cfg.model.max_seq_len}")
    g = torch.Generator().manual_seed(a.seed)
    eot = tok.token_to_id("<|endoftext|>")  # a text ends there (the exported generation_config's eos)
    if a.draft:
        out = _speculative(a, model, tok, ids, g, eot)
    else:
        out = generate(model, torch.tensor([ids] * a.num_samples), a.max_new_tokens, temperature=a.temperature,
                       top_k=a.top_k, top_p=a.top_p, use_cache=not a.no_cache, generator=g, stop_token=eot).tolist()
    for row in out:
        new = row[len(ids):]
        print(tok.decode(ids + (new[:new.index(eot)] if eot in new else new)))
        if a.num_samples > 1:
            print("-" * 40)
    return 0


def _speculative(a, target, tok, ids: list[int], g, eot) -> list[list[int]]:
    """`sample --draft`: each sample by speculative decoding; the draft's statistics on stderr."""
    import sys

    import torch

    from scalelab.model.speculative import expected_tokens_per_pass, speculative_generate
    from scalelab.train.runner import load_run

    if a.top_k is not None or a.top_p is not None or a.no_cache:
        raise UserError("--draft samples at a temperature only; remove --top-k, --top-p and --no-cache")
    draft, _, draft_tok = load_run(a.draft)
    if draft_tok.to_str() != tok.to_str():
        raise UserError(f"--draft {a.draft} uses another tokenizer than {a.run_dir}; draft with a model of its ladder")
    rows = []
    for _ in range(a.num_samples):
        out, st = speculative_generate(target, draft, torch.tensor([ids]), a.max_new_tokens, gamma=a.gamma,
                                       temperature=a.temperature, generator=g, stop_token=eot)
        rows.append(out[0].tolist())
        print(f"speculative (gamma={a.gamma}): {st.accepted + st.rounds} tokens in {st.rounds} target passes "
              f"({st.tokens_per_target_pass:.2f} per pass; acceptance rate {st.acceptance_rate:.2f} predicts "
              f"{expected_tokens_per_pass(st.acceptance_rate, a.gamma):.2f})", file=sys.stderr)
    return rows


def cmd_count(a) -> int:
    from scalelab.model.sources import model_counts

    arch, res = model_counts(a.config, a.seq_len)
    if any(v is not None for v in (a.batch, a.gpu, a.dtype, a.zero)) or a.memory:
        if arch is None:
            raise UserError(f"{a.config}: memory needs the architecture, which only the analytic readers derive")
        from scalelab.economics.footprint import memory_report

        res.update(memory_report(arch, seq_len=a.seq_len or arch.max_seq_len, batch=a.batch or 1,
                                 dtype=a.dtype or "bf16", zero=a.zero or 0, dp=a.dp, gpu=a.gpu, regime=a.regime,
                                 recompute=a.recompute))
    emit(res, a.json, lambda r: table(str(a.config), ["quantity", "value"], list(_flat_rows(r))))
    return 0


def _flat_rows(d: dict, prefix: str = ""):
    """(dotted key, formatted value) for every number, string and bool of a nested dict."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat_rows(v, key + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield key, f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"
        elif isinstance(v, (str, bool)):
            yield key, str(v)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            yield from ((f"{key}[{i}]", x) for i, x in enumerate(v))


def cmd_export(a) -> int:
    from scalelab.model.hf import CLASSES, hf_model_type
    from scalelab.model.hf_weights import save_hf
    from scalelab.train.runner import load_run

    model, _, tok = load_run(a.run_dir)
    written = save_hf(model, a.out, tokenizer=tok)
    print(f"wrote {a.out}: {', '.join(written)} ({CLASSES[hf_model_type(model.cfg)]}; "
          f"bos = eos = pad = <|endoftext|>)")
    return 0


# ---- parser --------------------------------------------------------------------------------------

def register(sub) -> None:
    t = sub.add_parser("train", help="train one model from a config", description=(
        "Train one model. CONFIG is a TOML (or JSON) run config; omit it for the defaults. Overrides "
        "are section.key=value, e.g. model.d_model=256 train.max_tokens=5e6 schedule.kind=wsd."))
    t.add_argument("config", nargs="?", help="run config (.toml or .json)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides")
    t.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the run directory's last checkpoint, with the run's own config (overrides "
                        "may change only how it runs: train.threads, train.loggers, ...)")
    t.add_argument("--restart", action="store_true",
                   help="delete the run in --out (its checkpoints, metrics and summary) and train it from scratch")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("run_dir", help="a run folder (its config, tokenizer and checkpoint)")
    s.add_argument("--prompt", default="def ", help="text to continue (default 'def ')")
    s.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate (default 64)")
    s.add_argument("--temperature", type=non_negative, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=positive_int, default=None,
                   help="sample among the k most likely tokens (default: all)")
    s.add_argument("--top-p", type=fraction, default=None,
                   help="nucleus sampling: the smallest set of tokens with this probability, in (0, 1]")
    s.add_argument("--num-samples", type=positive_int, default=1, help="samples to draw (default 1)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default 0)")
    s.add_argument("--no-cache", action="store_true", help="recompute the whole prefix each token (slow)")
    s.add_argument("--draft", default=None, metavar="RUN_DIR",
                   help="speculative decoding: a smaller run with the same tokenizer drafts, this one verifies "
                        "(the output is distributed as this run's own samples; at temperature 0, identical)")
    s.add_argument("--gamma", type=positive_int, default=4, help="tokens drafted per target pass (with --draft)")
    s.set_defaults(fn=cmd_sample)

    c = sub.add_parser("count", help="exact parameter, FLOP and memory counts of a model config",
                       description="Analytic counts from a config alone, no weights allocated. " + ACTIVE_HELP)
    c.add_argument("config", help="HF config.json (Llama, Mistral, Mixtral, Qwen2/3, Qwen-MoE, DeepSeek-V2/V3, "
                   "Gemma 2/3, Phi-3, OLMo-2, OLMoE, GPT-2, GPT-NeoX, Llama 4; others through transformers), a "
                   "scalelab run config or run directory, or a shipped model's name: " + ", ".join(_zoo_names()))
    c.add_argument("--json", action="store_true")
    c.add_argument("--seq-len", type=positive_int, default=None,
                   help="context for the attention FLOPs (default max_seq_len)")
    c.add_argument("--batch", type=positive_int, default=None, help="micro-batch for activation / KV-cache memory")
    c.add_argument("--gpu", default=None, help="hardware name for memory fit (see `scalelab plan --help`)")
    c.add_argument("--dtype", default=None, help="weights dtype for serving: fp32, bf16, int8, int4")
    c.add_argument("--zero", type=int, default=None, choices=[0, 1, 2, 3], help="ZeRO stage for training memory")
    c.add_argument("--dp", type=positive_int, default=1, help="data-parallel ranks for ZeRO sharding")
    c.add_argument("--regime", default="mixed",
                   help="training precision: fp32, mixed, mixed-fp32-grads, adam8bit, bf16")
    c.add_argument("--recompute", default="none", choices=["none", "selective", "full"],
                   help="activation recomputation assumed by the memory estimate (default none)")
    c.add_argument("--memory", action="store_true", help="also print training and serving memory")
    c.set_defaults(fn=cmd_count)

    e = sub.add_parser("export", help="export a run as Hugging Face safetensors + config.json")
    e.add_argument("run_dir", help="a run folder")
    e.add_argument("--out", required=True, help="the Hugging Face folder to write")
    e.set_defaults(fn=cmd_export)
