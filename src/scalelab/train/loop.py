"""The training loop: one run from a `RunConfig`, read top to bottom in `train()`.

    setup()  -> a `TrainState`: data, model, AdamW, (resume from the newest checkpoint)
    for each step:
        train_step(): lr from the schedule; grad_accum micro-batches of (B, T) tokens; clip; AdamW
        every log_every steps: one host sync -> a `MetricsRecord` (+ validation on eval steps)
        `CheckpointPolicy.should_save(step)`: an atomic checkpoint (and kept branch points)
    summary.json once the run is complete

Runs with `[tasks]` are also scored on each task's held-out problems at every evaluation (exact match,
answer bits per byte ...: `evaluate/during.py`), into the same record.

Policies live apart from the loop (torchtitan's split): `CheckpointPolicy` decides when to save,
`Hooks` receive every record and may stop the run early (the ladder streams records into its
store through them; tests stop a run midway to resume it).

Determinism: batches are a pure function of (seed, step, micro) and the lr of the step, so a
resumed run repeats an uninterrupted one exactly on CPU (tested).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scalelab.config import RunConfig
from scalelab.data.shards import TokenDataset
from scalelab.economics.hardware import hardware_for_device
from scalelab.errors import Diverged, UserError
from scalelab.evaluate.during import TaskEvaluator
from scalelab.io import hold_lock
from scalelab.model.hf_weights import load_hf_into
from scalelab.model.transformer import Transformer
from scalelab.provenance import environment
from scalelab.train import distributed as parallel
from scalelab.train.checkpoint import keep_copy, load_checkpoint, save_checkpoint
from scalelab.train.data import load_dataset
from scalelab.train.distill import distillation_loss, load_teacher
from scalelab.train.hooks import Chain, Hooks
from scalelab.train.metrics import bits_per_byte, cpu_info, matmul_peak_flops, native_bf16
from scalelab.train.optim import build_optimizer
from scalelab.train.records import MetricsRecord, MetricsWriter
from scalelab.train.rundir import RunDir
from scalelab.train.schedule import lr_at
from scalelab.train.tracking import open_trackers


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
    if amp is not None and dev == "cpu" and native_bf16(cpu_info()) is False:
        # measured on a Zen 4 with oneDNN held below its bf16 kernels: bf16 matmuls 3-72 GFLOP/s vs 140-198 fp32
        raise UserError("train.dtype=bf16 on a CPU without bf16 instructions (avx512_bf16 or amx_bf16): its bf16 "
                        "matmuls run slower than fp32, up to 50x; use train.dtype=fp32 (or auto)")
    # MoE: each step's expert sizes are data-dependent, and dynamo recompiles for new ones until it gives
    # up (a 74-step MoE run took 7m43s compiled, docs/LOG.md): `auto` leaves MoE models eager
    compile_ = t.compile == "on" or (t.compile == "auto" and dev.startswith("cuda") and cfg.model.moe is None)
    return dev, amp, compile_


# `compile=auto` compiles only runs expected to take longer than this, estimated at ASSUMED_MFU of the
# peak (CPU 50%: the 30% it was tuned with against a peak that read 332 GFLOP/s on this project's Zen 4
# machine, now 203 measured, docs/LOG.md 2026-12-06, so that the decisions stay where they were).
# CPU: inductor speeds a step up 1.3-1.4x for d_model 64-256 but costs 15-30 s to compile.
# CUDA (H200): 1.81x at 125M (519k vs 286k tokens/s) for 25-30 s of compiling, so it pays from ~60 s
# of eager training; the demo's 13 tiny runs, each compiled, took 143 s in all, 80 s not (docs/LOG.md, 2026-11-30).
COMPILE_MIN_SECONDS = {"cpu": 120.0, "cuda": 60.0}
ASSUMED_MFU = {"cpu": 0.5, "cuda": 0.3}


def compile_pays_off(total_tokens: float, flops_per_token: float, peak_flops: float, device: str = "cpu") -> bool:
    return total_tokens * flops_per_token / (ASSUMED_MFU[device] * peak_flops) > COMPILE_MIN_SECONDS[device]


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch_size: int, device: str, amp) -> float:
    """Mean next-token loss (nats) over a fixed set of windows (n, T + 1)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size].to(device)  # (b, T + 1)
        with autocast(device, amp):
            out = model(w[:, :-1], targets=w[:, 1:], return_logits=False)
        total += out.loss.item() * w[:, 1:].numel()
        count += w[:, 1:].numel()
    model.train()
    return total / count


def autocast(device: str, amp):
    return torch.autocast(device_type=device.split(":")[0], dtype=amp) if amp is not None else nullcontext()


# ---- state -----------------------------------------------------------------------------------------

@dataclass
class TrainState:
    """Everything the loop touches, built once by `setup`."""

    cfg: RunConfig
    run: RunDir
    dist: parallel.DistInfo
    device: str
    amp: torch.dtype | None
    compiled: bool
    model: Transformer
    step_fn: torch.nn.Module  # what forward/backward runs through: the model, DDP or compiled
    optimizer: torch.optim.Optimizer
    dataset: TokenDataset
    eval_windows: torch.Tensor  # (n, T + 1) fixed validation windows
    local_batch: int  # sequences per rank
    peak_flops: float
    task_eval: object | None = None  # `evaluate.during.TaskEvaluator` when the run has [tasks]
    achievable_flops: float = 0.0  # the measured matmul peak (= peak_flops where no datasheet applies)
    peak_source: str = "measured matmul"
    teacher: Transformer | None = None  # [distill]: the frozen teacher (train/distill.py)
    teacher_flops_per_token: int = 0  # its forward pass
    start_step: int = 0
    tokens: int = 0
    last: MetricsRecord | None = None  # the newest record (kept across a resume at the very end)
    log: object = print

    @property
    def flops_per_token(self) -> int:
        return self.cfg.model.flops_per_token_exact(self.cfg.train.seq_len)


def setup(cfg: RunConfig, run: RunDir, resume: bool, dataset: TokenDataset | None, log) -> TrainState:
    t = cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    device, amp, compile_ = resolve_device(cfg)
    dist = parallel.init(device)  # torchrun: join the process group (see train/distributed.py)
    device = parallel.local_device(device, dist)
    local_batch = parallel.check_batch(t.batch_size, dist)
    if resume:
        run.check_same_run(cfg, fix=f"resume it with its own config (scalelab train --out {run.path} --resume), "
                                    "or train this config into another --out")
    if dist.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
    ds = dataset or (load_dataset(cfg, log=log) if dist.is_main else None)
    parallel.barrier(dist)  # rank 0 tokenizes; the others then read its cached shards
    ds = ds or load_dataset(cfg, log=lambda *a: None)
    if dist.is_main:
        run.write_config(cfg)
        run.tokenizer_file.write_bytes((ds.path / "tokenizer.json").read_bytes())
    measured = matmul_peak_flops(device, "bf16" if amp is not None else "fp32") * dist.world
    sheet = datasheet_peak(device, amp) * dist.world
    peak = sheet or measured
    flops_per_token = cfg.model.flops_per_token_exact(t.seq_len)
    kind = device.split(":")[0]
    if t.compile == "auto" and kind in COMPILE_MIN_SECONDS and cfg.model.moe is None:
        compile_ = compile_pays_off(cfg.total_steps * t.tokens_per_step, flops_per_token, peak, kind)

    torch.manual_seed(t.seed)
    model = Transformer(cfg.model).to(device)
    fsdp = dist.enabled and t.parallel == "fsdp"
    ckpt = run.latest_checkpoint() if resume else None
    if cfg.model.init_from and ckpt is None:  # a Hugging Face checkpoint's weights (config.py resolve_init_from)
        load_hf_into(model, cfg.model.init_from)
    loaded = load_checkpoint(ckpt, model) if ckpt is not None and fsdp else None  # FSDP: before sharding
    module = parallel.wrap(model, t.parallel, dist, device)
    optimizer = build_optimizer(model, cfg.optim)
    teacher, teacher_flops = load_teacher(cfg.distill, cfg.model.vocab_size, t.seq_len, ds.path / "tokenizer.json",
                                          device)
    state = TrainState(cfg, run, dist, device, amp, compile_, model, torch.compile(module) if compile_ else module,
                       optimizer, ds, ds.eval_windows(t.seq_len, t.eval_tokens), local_batch, peak,
                       task_evaluator(cfg, ds), achievable_flops=measured,
                       peak_source="datasheet" if sheet else "measured matmul", teacher=teacher,
                       teacher_flops_per_token=teacher_flops, log=log)
    if ckpt is not None:
        _resume(state, ckpt, loaded, fsdp)
    return state


def datasheet_peak(device: str, amp) -> float:
    """MFU's denominator on a known GPU training in bf16: its datasheet's dense peak, as Megatron,
    torchtitan and PaLM's MFU use (0 elsewhere: the measured matmul peak is used)."""
    if not device.startswith("cuda") or amp is None:
        return 0.0
    hw = hardware_for_device(torch.cuda.get_device_name(device))
    return hw.peak_bf16_flops if hw else 0.0


def task_evaluator(cfg: RunConfig, ds: TokenDataset):
    if not cfg.tasks.names:
        return None
    return TaskEvaluator(cfg.tasks, ds.tokenizer())


def _resume(state: TrainState, ckpt: Path, loaded: dict | None, fsdp: bool) -> None:
    full_opt = ckpt / "optimizer_full.pt"  # written under FSDP: keyed by parameter name
    if full_opt.exists():
        loaded = loaded or load_checkpoint(ckpt, state.model)
        parallel.load_optimizer_full(state.model, state.optimizer, torch.load(full_opt, weights_only=True))
    elif fsdp:
        raise UserError(f"{ckpt} was written without FSDP; resume it with train.parallel=ddp")
    else:
        loaded = load_checkpoint(ckpt, state.model, state.optimizer)
    state.start_step, state.tokens = loaded["step"], loaded["tokens"]
    torch.set_rng_state(torch.tensor(loaded["torch_rng"], dtype=torch.uint8))
    if state.dist.is_main:
        state.log(f"resumed {state.run.path} from {ckpt.name} (step {state.start_step}/{state.cfg.total_steps})")


# ---- one step --------------------------------------------------------------------------------------

@dataclass
class Window:
    """Losses summed on the device between two records (read back with one host sync)."""

    loss: torch.Tensor
    moe: dict = field(default_factory=dict)
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)


def train_step(s: TrainState, step: int, window: Window) -> tuple[float, torch.Tensor]:
    """One optimizer step (grad_accum micro-batches) -> (lr, gradient norm before clipping)."""
    t, dist = s.cfg.train, s.dist
    lr = lr_at(step, s.cfg.total_steps, s.cfg.optim.lr, s.cfg.schedule)
    for g in s.optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)  # muP's hidden matrices: lr / m (train/optim.py)
    for micro in range(t.grad_accum):
        # the global batch a single process would draw; each rank trains on its slice of it
        x, y = (parallel.shard(b, dist) for b in s.dataset.sample(t.batch_size, t.seq_len, t.seed, step, micro,
                                                                     limit=s.cfg.data.unique_tokens,
                                                                     accum=t.grad_accum))
        x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)  # (B, T) each
        with autocast(s.device, s.amp), parallel.no_sync(s.step_fn, micro == t.grad_accum - 1):
            out, loss = forward_loss(s, x, y)
            loss = loss if out.aux_loss is None else loss + out.aux_loss
            (loss / t.grad_accum).backward()
        window.loss += out.loss.detach() / t.grad_accum
        for k, v in out.moe.items():
            window.moe[k] = window.moe.get(k, 0) + v.detach() / t.grad_accum
    clip = s.cfg.optim.grad_clip if s.cfg.optim.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), clip)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.tokens += t.tokens_per_step
    window.steps += 1
    return lr, grad_norm


def forward_loss(s: TrainState, x: torch.Tensor, y: torch.Tensor):
    """-> (the model's output, whose ``loss`` is the data's cross-entropy: what is recorded; the loss
    backward runs on): the same, except under distillation (train/distill.py)."""
    if s.teacher is None:
        out = s.step_fn(x, targets=y, return_logits=False)
        return out, out.loss
    with torch.no_grad():
        teacher_logits = s.teacher(x).logits  # (B, T, V)
    out = s.step_fn(x, return_logits=True)
    d = s.cfg.distill
    loss, out.loss = distillation_loss(out.logits, teacher_logits, y, d.temperature, d.weight)
    return out, loss


# ---- records, evaluation, checkpoints --------------------------------------------------------------

def make_record(s: TrainState, step: int, lr: float, grad_norm, window: Window, evaluate_now: bool) -> MetricsRecord:
    """Read the window back (the one host sync per record), check divergence, maybe evaluate."""
    cfg = s.cfg
    train_loss = parallel.mean(window.loss, s.dist).item() / window.steps
    limit = cfg.train.divergence_factor * math.log(cfg.model.vocab_size)
    if not math.isfinite(train_loss) or train_loss > limit:
        raise Diverged(f"training diverged at step {step}: loss {train_loss:.4g} (limit {limit:.3g}); lower "
                       f"optim.lr or raise schedule.warmup_frac. Last good checkpoint: "
                       f"{s.run.latest_checkpoint() or 'none'}")
    tps = window.steps * cfg.train.tokens_per_step / (time.perf_counter() - window.t0)
    moe = {}
    if window.moe:
        w = window.moe
        moe = dict(lb_loss=w["lb_loss"].item() / window.steps, z_loss=w["z_loss"].item() / window.steps,
                   dropped_frac=w["dropped_frac"].item() / window.steps,
                   expert_load=tuple((w["load"] / window.steps).tolist()))
    val = {}
    if evaluate_now:
        loss = evaluate(s.model, s.eval_windows, s.local_batch, s.device, s.amp)  # every rank: FSDP needs all
        val = dict(val_loss=loss, val_bpb=bits_per_byte(loss, s.dataset.bytes_per_token("val")))
        if s.task_eval is not None:  # every rank (FSDP's forward needs all); the same problems everywhere
            with autocast(s.device, s.amp):
                val["tasks"] = s.task_eval(s.model)
            s.model.train()
    return MetricsRecord(step=step, tokens=s.tokens, flops=s.tokens * s.flops_per_token, lr=lr,
                         train_loss=train_loss, grad_norm=float(grad_norm), tokens_per_s=tps,
                         mfu=tps * s.flops_per_token / s.peak_flops, **moe, **val)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to log, evaluate and save. ``end_step`` is where this invocation stops (the run's last
    step, or earlier when a hook stops it); ``branch_points`` are steps whose checkpoints are also
    kept under ``branch_points/`` (where WSD cooldown branches start)."""

    total_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int = 0  # 0 = at every evaluation
    branch_points: frozenset = frozenset()

    def should_eval(self, step: int, end_step: int) -> bool:
        return step % self.eval_every == 0 or step in (self.total_steps, end_step)

    def should_save(self, step: int, end_step: int) -> bool:
        periodic = step % self.checkpoint_every == 0 if self.checkpoint_every else \
            step % self.eval_every == 0 or step == self.total_steps
        return step == end_step or step in self.branch_points or periodic

    def should_log(self, step: int, end_step: int) -> bool:
        return step % self.log_every == 0 or self.should_eval(step, end_step) or self.should_save(step, end_step)


def save(s: TrainState, step: int, policy: CheckpointPolicy) -> None:
    t = s.cfg.train
    full = parallel.full_state(s.model, s.optimizer, t.parallel, s.dist)  # FSDP: gather (every rank)
    if s.dist.is_main:
        state = {"step": step, "tokens": s.tokens, "torch_rng": torch.get_rng_state().tolist()}
        path = save_checkpoint(s.run, step, full[0] if full else s.model, s.optimizer, state,
                               keep=t.keep_checkpoints, optimizer_state=full[1] if full else None)
        if step in policy.branch_points:
            keep_copy(path, s.run.branch_point(step))
    parallel.barrier(s.dist)


# ---- the loop --------------------------------------------------------------------------------------

def train(cfg: RunConfig, run_dir: str | Path | RunDir, resume: bool = False, dataset: TokenDataset | None = None,
          hooks: Hooks | None = None, branch_points: tuple[int, ...] = (), log=print) -> dict:
    """Train one run into ``run_dir``; returns the summary dict (also written to summary.json once
    the run is complete). ``branch_points``: steps whose checkpoints are kept (see CheckpointPolicy).
    One process trains a run directory at a time (rank 0 holds RUN/run.lock)."""
    cfg, run = cfg.validate(), RunDir.of(run_dir)
    lock = hold_lock(run.lock_file, f"run directory {run.path}") if os.environ.get("RANK", "0") == "0" \
        else nullcontext()
    with lock:
        return _train(cfg, run, resume, dataset, hooks or Hooks(), branch_points, log)


def _train(cfg: RunConfig, run: RunDir, resume: bool, dataset, hooks: Hooks, branch_points, log) -> dict:
    s = setup(cfg, run, resume, dataset, log)
    t, total, main = cfg.train, cfg.total_steps, s.dist.is_main
    policy = CheckpointPolicy(total, t.log_every, t.eval_every, t.checkpoint_every, frozenset(branch_points))
    metrics = MetricsWriter(run.metrics_file, resume_step=s.start_step if s.start_step else None) if main else None
    s.last = metrics.kept[-1] if metrics and metrics.kept else None
    hooks = Chain(hooks, *open_trackers(cfg, run, s.start_step)) if main else hooks
    bar = _Bar(t.progress and main, total, s.start_step)
    window, end = Window(torch.zeros((), device=s.device)), total
    s.model.train()
    try:
        for step in range(s.start_step + 1, total + 1):  # `step` counts updates done: 1..total
            lr, grad_norm = train_step(s, step - 1, window)
            if hooks.stop_after(step):
                end = step
            if policy.should_log(step, end):  # log before any checkpoint: never save a diverged model
                rec = make_record(s, step, lr, grad_norm, window, policy.should_eval(step, end))
                s.last, window = rec, Window(window.loss.zero_())
                if main:
                    metrics.write(rec)
                    hooks.on_record(rec)
                bar.update(rec, total)
            if policy.should_save(step, end):
                save(s, step, policy)
            if step == end:
                break
    finally:
        bar.stop()
        hooks.close()
        if metrics:
            metrics.close()
    return _finish(s, end)


def _finish(s: TrainState, end_step: int) -> dict:
    cfg, m = s.cfg, s.cfg.model
    summary = {"run_dir": str(s.run.path), "steps": end_step, "total_steps": cfg.total_steps, "tokens": s.tokens,
               "complete": end_step == cfg.total_steps, "resumed_from_step": s.start_step,
               "num_params_total": m.num_params_total, "num_params_active": m.num_params_active,
               "num_params_non_embedding": m.num_params_non_embedding,
               "flops_per_token_exact": s.flops_per_token, "flops_6nd": 6 * m.num_params_active * s.tokens,
               "flops": s.flops_per_token * s.tokens, "teacher_flops": s.teacher_flops_per_token * s.tokens,
               "final": s.last.to_dict() if s.last else {},
               "peak_flops": s.peak_flops, "peak_source": s.peak_source, "achievable_flops": s.achievable_flops,
               "device": s.device, "compiled": bool(s.compiled), "environment": environment(s.device),
               "parallel": cfg.train.parallel if s.dist.enabled else "none", "world_size": s.dist.world,
               "ln_vocab": math.log(m.vocab_size), "bytes_per_token": s.dataset.bytes_per_token("val")}
    if summary["complete"] and s.dist.is_main:
        s.run.write_summary(summary)
    return summary


class _Bar:
    """A rich progress bar (or nothing): step, loss, tokens/s, and a line at every evaluation."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.p = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                          TimeRemainingColumn())
        self.task = self.p.add_task("train", total=total, completed=start, loss=float("nan"), tps=0.0)
        self.p.start()

    def update(self, r: MetricsRecord, total: int) -> None:
        if self.p is None:
            return
        self.p.update(self.task, completed=r.step, loss=r.train_loss, tps=r.tokens_per_s)
        if r.evaluated:
            self.p.console.print(f"step {r.step}/{total}  train {r.train_loss:.4f}  val {r.val_loss:.4f}  "
                                 f"bpb {r.val_bpb:.4f}  {r.tokens_per_s:,.0f} tok/s  MFU {r.mfu:.1%}")

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()
