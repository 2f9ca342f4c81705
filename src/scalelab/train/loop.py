"""The training loop: one run from a `RunConfig`, read top to bottom.

    build data -> build model and AdamW -> (resume) -> for each step:
        lr from the schedule; grad_accum micro-batches of (B, T) tokens; clip; AdamW step;
        every log_every steps: one host sync, metrics line, divergence check;
        every eval_every steps and at the end: validation loss and bits/byte, checkpoint.

Determinism: batches are a pure function of (seed, step, micro) and the lr of the step, so a
resumed run repeats an uninterrupted one exactly on CPU (tested).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from scalelab.config import RunConfig
from scalelab.data.shards import DataSpec, TokenDataset, build_dataset
from scalelab.errors import Diverged, UserError
from scalelab.model.transformer import Transformer
from scalelab.train import distributed as D
from scalelab.train.checkpoint import (atomic_write_text, keep_copy, latest_checkpoint, load_checkpoint,
                                      save_checkpoint)
from scalelab.train.metrics import MetricsWriter, bits_per_byte, matmul_peak_flops
from scalelab.train.optim import build_optimizer
from scalelab.train.schedule import lr_at


def data_spec(cfg: RunConfig) -> DataSpec:
    d = cfg.data
    return DataSpec(corpus=d.corpus, vocab_size=cfg.model.vocab_size, text_field=d.text_field,
                    hf_split=d.hf_split, hf_data_files=d.hf_data_files, max_bytes=d.max_bytes,
                    tokenizer_train_bytes=d.tokenizer_train_bytes, val_fraction=d.val_fraction,
                    shard_tokens=d.shard_tokens)


def load_dataset(cfg: RunConfig, log=print) -> TokenDataset:
    ds = TokenDataset(build_dataset(data_spec(cfg), log=log))
    if ds.vocab_size > cfg.model.vocab_size:
        raise UserError(f"the tokenizer has {ds.vocab_size} tokens but model.vocab_size={cfg.model.vocab_size}")
    return ds


def resolve_device(cfg: RunConfig) -> tuple[str, torch.dtype | None, bool]:
    """-> (device, autocast dtype or None, compile?)."""
    t = cfg.train
    dev = t.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    amp = None
    if t.dtype == "bf16" or (t.dtype == "auto" and dev.startswith("cuda") and torch.cuda.is_bf16_supported()):
        amp = torch.bfloat16
    compile_ = t.compile == "on" or (t.compile == "auto" and dev.startswith("cuda"))
    return dev, amp, compile_


# On CPU, torch.compile (inductor) speeds a training step up 1.3-1.4x for d_model 64-256 but costs
# 15-30 s to compile (docs/LOG.md), so `compile=auto` compiles only runs expected to take longer
# than this, estimated at 30% MFU of the measured matmul peak.
CPU_COMPILE_MIN_SECONDS = 120.0


def compile_pays_off(total_tokens: float, flops_per_token: float, peak_flops: float) -> bool:
    return total_tokens * flops_per_token / (0.3 * peak_flops) > CPU_COMPILE_MIN_SECONDS


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch_size: int, device: str, amp) -> float:
    """Mean next-token loss (nats) over a fixed set of windows (n, T + 1)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size].to(device)
        with _autocast(device, amp):
            out = model(w[:, :-1], targets=w[:, 1:], return_logits=False)
        total += out.loss.item() * w[:, 1:].numel()
        count += w[:, 1:].numel()
    model.train()
    return total / count


def _autocast(device: str, amp):
    return torch.autocast(device_type=device.split(":")[0], dtype=amp) if amp is not None else nullcontext()


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, dataset: TokenDataset | None = None,
          on_log=None, console=None, stop_at_step: int | None = None, decay_start: int | None = None,
          save_at: tuple[int, ...] = ()) -> dict:
    """Train one run into ``run_dir``; returns the summary dict (also written to summary.json).

    ``on_log(record)`` is called with every metrics record (the ladder streams them into its store).
    ``stop_at_step`` ends early after that step with a checkpoint (used for WSD branching and tests).
    ``decay_start`` starts a WSD cooldown at that step; ``save_at`` keeps a copy of the checkpoint of
    those steps under ``run_dir/branch_points/`` (where WSD cooldown branches start from).
    """
    cfg = cfg.validate()
    run_dir = Path(run_dir)
    t_cfg, m_cfg = cfg.train, cfg.model
    log = console.log if console is not None else print
    if t_cfg.threads > 0:
        torch.set_num_threads(t_cfg.threads)
    device, amp, compile_ = resolve_device(cfg)
    dist = D.init(device)  # torchrun: join the process group (see train/distributed.py)
    device = D.local_device(device, dist)
    local_batch = D.check_batch(t_cfg.batch_size, dist)
    main = dist.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ds = dataset or (load_dataset(cfg, log=log) if main else None)
    D.barrier(dist)  # rank 0 tokenizes; the others then read its cached shards
    ds = ds or load_dataset(cfg, log=lambda *a: None)
    if main:
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
        (run_dir / "tokenizer.json").write_bytes((ds.path / "tokenizer.json").read_bytes())

    total_steps = cfg.total_steps
    tokens_per_step = t_cfg.tokens_per_step
    flops_per_token = m_cfg.flops_per_token_exact(t_cfg.seq_len)
    peak = matmul_peak_flops(device, "bf16" if amp is not None else "fp32") * dist.world
    if t_cfg.compile == "auto" and device == "cpu":
        compile_ = compile_pays_off(total_steps * tokens_per_step, flops_per_token, peak)

    torch.manual_seed(t_cfg.seed)
    model = Transformer(m_cfg).to(device)
    fsdp = dist.enabled and t_cfg.parallel == "fsdp"
    ckpt = latest_checkpoint(run_dir) if resume else None
    state = None
    if ckpt is not None and fsdp:  # FSDP: load the full state into the plain model before sharding
        state = load_checkpoint(ckpt, model)
    module = D.wrap(model, t_cfg.parallel, dist, device)
    optimizer = build_optimizer(model, cfg.optim)
    step_fn = torch.compile(module) if compile_ else module

    start_step, tokens_seen = 0, 0
    if ckpt is not None:
        full_opt = ckpt / "optimizer_full.pt"  # written under FSDP: keyed by parameter name
        if full_opt.exists():
            state = state or load_checkpoint(ckpt, model)
            D.load_optimizer_full(model, optimizer, torch.load(full_opt, weights_only=True))
        elif fsdp:
            raise UserError(f"{ckpt} was written without FSDP; resume it with train.parallel=ddp")
        else:
            state = load_checkpoint(ckpt, model, optimizer)
        start_step, tokens_seen = state["step"], state["tokens"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if main:
            log(f"resumed {run_dir} from {ckpt.name} (step {start_step}/{total_steps})")
    metrics = MetricsWriter(run_dir / "metrics.jsonl", resume_step=start_step if ckpt is not None else None) \
        if main else None

    eval_set = ds.eval_windows(t_cfg.seq_len, t_cfg.eval_tokens)
    bpt = ds.bytes_per_token("val")
    diverge_at = t_cfg.divergence_factor * math.log(m_cfg.vocab_size)
    end_step = min(total_steps, stop_at_step) if stop_at_step is not None else total_steps

    progress = _progress(t_cfg.progress and console is None and main, total_steps, start_step)
    task = progress.add_task("train", total=total_steps, completed=start_step, loss=float("nan"), tps=0.0) \
        if progress else None
    loss_acc = torch.zeros((), device=device)
    moe_acc: dict[str, torch.Tensor] = {}
    window_steps, t_window = 0, time.perf_counter()
    last: dict = metrics.kept[-1] if metrics and metrics.kept else {}  # a run resumed at its very end keeps its final record
    save_at = set(save_at)
    model.train()
    try:
        for step in range(start_step, end_step):
            lr = lr_at(step, total_steps, cfg.optim.lr, cfg.schedule, decay_start)
            for g in optimizer.param_groups:
                g["lr"] = lr
            for micro in range(t_cfg.grad_accum):
                # the global batch a single process would draw; each rank trains on its slice of it
                x, y = (D.shard(t, dist) for t in ds.sample(t_cfg.batch_size, t_cfg.seq_len, t_cfg.seed, step, micro))
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with _autocast(device, amp), D.no_sync(step_fn, micro == t_cfg.grad_accum - 1):
                    out = step_fn(x, targets=y, return_logits=False)
                    loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
                    (loss / t_cfg.grad_accum).backward()
                loss_acc += out.loss.detach() / t_cfg.grad_accum
                for k, v in out.moe.items():
                    moe_acc[k] = moe_acc.get(k, 0) + v.detach() / t_cfg.grad_accum
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), _clip_value(cfg))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += tokens_per_step
            window_steps += 1
            done = step + 1
            is_eval = done % t_cfg.eval_every == 0 or done == total_steps
            ck_every = t_cfg.checkpoint_every
            want_ckpt = done == end_step or done in save_at or (ck_every and done % ck_every == 0) or \
                (not ck_every and is_eval)
            # log (one host sync + divergence check) before any checkpoint: never save a diverged model
            if done % t_cfg.log_every == 0 or is_eval or want_ckpt:
                train_loss = D.mean(loss_acc, dist).item() / window_steps  # the one host sync per log window
                if not math.isfinite(train_loss) or train_loss > diverge_at:
                    raise Diverged(f"training diverged at step {done}: loss {train_loss:.4g} "
                                   f"(limit {diverge_at:.3g}); lower optim.lr or raise schedule.warmup_frac. "
                                   f"Last good checkpoint: {latest_checkpoint(run_dir) or 'none'}")
                dt = time.perf_counter() - t_window
                tps = window_steps * tokens_per_step / dt
                rec = {"step": done, "tokens": tokens_seen, "flops": tokens_seen * flops_per_token, "lr": lr,
                       "train_loss": train_loss, "grad_norm": float(grad_norm), "tokens_per_s": tps,
                       "mfu": tps * flops_per_token / peak}
                if moe_acc:
                    rec.update({"lb_loss": moe_acc["lb_loss"].item() / window_steps,
                                "z_loss": moe_acc["z_loss"].item() / window_steps,
                                "dropped_frac": moe_acc["dropped_frac"].item() / window_steps,
                                "expert_load": (moe_acc["load"] / window_steps).tolist()})
                if is_eval or done == end_step:
                    val = evaluate(model, eval_set, local_batch, device, amp)  # every rank: FSDP needs all
                    rec.update(val_loss=val, val_bpb=bits_per_byte(val, bpt))
                last = rec
                if main:
                    metrics.write(rec)
                    if on_log:
                        on_log(rec)
                if progress:
                    progress.update(task, completed=done, loss=train_loss, tps=tps)
                    if "val_loss" in rec:
                        progress.console.print(f"step {done}/{total_steps}  train {train_loss:.4f}  "
                                             f"val {rec['val_loss']:.4f}  bpb {rec['val_bpb']:.4f}  "
                                             f"{tps:,.0f} tok/s  MFU {rec['mfu']:.1%}")
                loss_acc.zero_()
                moe_acc = {}
                window_steps, t_window = 0, time.perf_counter()
            if want_ckpt:
                full = D.full_state(model, optimizer, t_cfg.parallel, dist)  # FSDP: gather (every rank)
                if main:
                    path = save_checkpoint(run_dir, done, full[0] if full else model, optimizer,
                                           {"step": done, "tokens": tokens_seen,
                                            "torch_rng": torch.get_rng_state().tolist()},
                                           keep=t_cfg.keep_checkpoints, optimizer_state=full[1] if full else None)
                    if done in save_at:
                        keep_copy(path, run_dir / "branch_points" / path.name)
                D.barrier(dist)
    finally:
        if progress:
            progress.stop()
        if metrics:
            metrics.close()

    summary = {"run_dir": str(run_dir), "steps": end_step, "total_steps": total_steps, "tokens": tokens_seen,
               "complete": end_step == total_steps, "resumed_from_step": start_step,
               "num_params_total": m_cfg.num_params_total, "num_params_active": m_cfg.num_params_active,
               "num_params_non_embedding": m_cfg.num_params_non_embedding,
               "flops_per_token_exact": flops_per_token, "flops_6nd": 6 * m_cfg.num_params_active * tokens_seen,
               "flops": flops_per_token * tokens_seen, "final": last, "peak_flops": peak, "device": device,
               "compiled": bool(compile_), "parallel": t_cfg.parallel if dist.enabled else "none",
               "world_size": dist.world,
               "ln_vocab": math.log(m_cfg.vocab_size), "bytes_per_token": bpt}
    if end_step == total_steps and main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _clip_value(cfg: RunConfig) -> float:
    return cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                 TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                 TimeRemainingColumn())
    p.start()
    return p


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(model, config, tokenizer) from a run directory's newest checkpoint."""
    from scalelab.config import load_dict
    from scalelab.data.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a scalelab run directory (no config.json)")
    cfg = load_dict(json.loads((run_dir / "config.json").read_text()))
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"{run_dir} has no checkpoint yet; train it first")
    model = Transformer(cfg.model)
    load_checkpoint(ckpt, model)
    return model.to(device).eval(), cfg, load_tokenizer(run_dir / "tokenizer.json")

