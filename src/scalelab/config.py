"""Typed, frozen run configuration loaded from TOML (or JSON) with strict ``key=value`` overrides.

    [model]     ModelConfig  (scalelab.model.config), with an optional [model.moe] table
    [data]      DataConfig   corpus and tokenizer
    [optim]     OptimConfig  AdamW
    [schedule]  ScheduleConfig
    [train]     TrainConfig  batch, budget, evaluation, checkpoints, device
    [tasks]     TasksConfig  tasks evaluated during training (and mixed into the data)

Unknown keys and wrong types are errors (exit code 2) that name the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from scalelab.data.tasks import parse_task
from scalelab.errors import UserError
from scalelab.io import read_config_file
from scalelab.model.config import ModelConfig, MoEConfig
from scalelab.model.hf import config_from_hf
from scalelab.typed import build, is_optional, parse_text, section_type


@dataclass(frozen=True)
class DataConfig:
    """The corpus and its tokenization (a byte-level BPE trained for the run's vocabulary size)."""

    corpus: str = "stdlib"
    """'stdlib' (this Python's standard library, offline), a local .txt/.jsonl/.parquet file or folder,
    or 'hf:NAME[:CONFIG]' (a Hugging Face dataset, streamed)."""
    text_field: str = "text"
    """the text column of .jsonl/.parquet/HF records."""
    hf_split: str = "train"
    hf_data_files: str | None = None
    """hf: local data files for a builder such as 'hf:json' (their names, sizes and times key the cache)."""
    hf_revision: str | None = None
    """hf: the dataset's git revision (a commit, tag or branch) on the hub: pins what the cache key means."""
    max_bytes: int = 0
    """cap on corpus bytes read (0 = all)."""
    tokenizer_train_bytes: int = 8_000_000
    """corpus bytes the BPE tokenizer is trained on."""
    tokenizer: str = ""
    """an existing tokenizer to train with: a tokenizer.json (Hugging Face `tokenizers` format, e.g. of
    GPT-NeoX or Llama 3) or a folder holding one; '' = train a byte-level BPE of model.vocab_size."""
    val_fraction: float = 0.03
    """fraction of documents (by a hash of their id) held out for validation."""
    shard_tokens: int = 50_000_000
    """tokens per on-disk shard."""
    id_field: str = ""
    """a field of each JSONL record / Parquet row naming the document ('' = FILE:LINE): the split follows
    it, so a document keeps its side when the corpus is filtered or reordered."""
    unique_tokens: int = 0
    """train on U tokens of the training split only (0 = all of it): U / (seq_len + 1) windows spread
    evenly over the split, in shuffled epochs, so a run of D tokens sees each D / U times: the
    repetition of the data-constrained regime (Muennighoff et al. 2023). The dataset and its validation
    split are the same as without the cap."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (fused), weight decay on matrices only."""

    lr: float = 3e-3
    """peak learning rate (the schedule scales it)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    """applied to matrices only (not norms gains)."""
    grad_clip: float = 1.0
    """global-norm clip; 0 disables."""


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, a pure function of the step (train/schedule.py)."""

    kind: str = "cosine"
    """cosine | wsd | constant."""
    warmup_steps: int = -1
    """-1 = warmup_frac of the run."""
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.1
    """final lr / peak lr (cosine, wsd)."""
    decay_frac: float = 0.2
    """wsd: the last fraction of steps that cools down."""
    decay_start_step: int = -1
    """wsd: the first cooldown step; -1 = (1 - decay_frac) * total steps. A WSD branch (a cooldown
    from a shared stable stage, Hägele et al. 2024) sets it, so its config.json describes the
    schedule it trained with and retrains it from scratch."""


@dataclass(frozen=True)
class TrainConfig:
    """Batch, budget, evaluation, checkpoints and device of one run."""

    batch_size: int = 16
    """sequences per micro-batch."""
    grad_accum: int = 1
    """micro-batches per optimizer step."""
    seq_len: int = 256
    """tokens per training sequence (<= model.max_seq_len)."""
    max_tokens: int = 2_000_000
    """token budget; the run takes ceil(max_tokens / tokens_per_step) steps."""
    max_steps: int = 0
    """if > 0, overrides max_tokens."""
    eval_every: int = 100
    """steps; evaluation also runs at the end."""
    eval_tokens: int = 65_536
    """validation tokens per evaluation (fixed windows spread over the validation split)."""
    log_every: int = 10
    """steps between metrics records."""
    checkpoint_every: int = 0
    """steps; 0 = only at the end (and at every evaluation if resumable)."""
    keep_checkpoints: int = 2
    """newest checkpoints kept (branch points are kept apart)."""
    seed: int = 0
    """seeds the initialisation and every batch (batches are a function of seed, step, micro-batch)."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    dtype: str = "auto"
    """auto (bf16 autocast on CUDA where supported, fp32 elsewhere) | fp32 | bf16 (autocast; on a CPU only where
    it has bf16 instructions, avx512_bf16 or amx_bf16: 1.2-1.8x faster steps at d_model 128-512 on a Zen 4, and
    its losses differ from fp32's, so keep one dtype across a ladder; docs/guide/performance.md)."""
    compile: str = "auto"
    """auto | on | off."""
    parallel: str = "ddp"
    """under torchrun: ddp (replicate) | fsdp (FSDP2 full shard); ignored otherwise."""
    threads: int = 0
    """torch intra-op threads on CPU; 0 = leave torch's default."""
    divergence_factor: float = 1.5
    """stop when loss > factor * ln(vocab) or is not finite."""
    progress: bool = True
    """a progress bar on the terminal."""
    loggers: tuple[str, ...] = ()
    """experiment trackers fed every record: tensorboard, mlflow (train/tracking.py; pip install 'scalelab[track]')."""

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len


@dataclass(frozen=True)
class TasksConfig:
    """Tasks a run is evaluated on at every evaluation, on held-out problems scored with the run's own
    tokenizer (exact match, answer NLL and bits per byte, ...: `scalelab.evaluate`), and optionally
    mixed into its training text."""

    names: tuple[str, ...] = ()
    """task specs, e.g. 'addition:digits=2' (`scalelab tasks show SPEC` prints problems), or .jsonl files
    of {"prompt": ..., "answer": ...} lines. On the command line: tasks.names='addition:digits=1;addition:digits=2'."""
    train_fraction: float = 0.0
    """fraction of the training text that is task problems (never the held-out ones); 0 = evaluate only."""
    eval_problems: int = 200
    """held-out problems per task (at most a fifth of a task's distinct problems when it is trained on)."""
    max_new_tokens: int = 16
    """greedy decoding budget per answer (exact match)."""

    def validate(self) -> TasksConfig:
        for name in self.names:
            parse_task(name)
        if not 0 <= self.train_fraction < 1:
            raise UserError(f"tasks.train_fraction must be in [0, 1), got {self.train_fraction}")
        if self.train_fraction > 0 and not self.names:
            raise UserError("tasks.train_fraction > 0 needs tasks.names, e.g. tasks.names=addition:digits=2")
        if self.eval_problems < 1 or self.max_new_tokens < 1:
            raise UserError("tasks.eval_problems and tasks.max_new_tokens must be >= 1")
        return self


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015): the training loss mixes the data's cross-entropy with
    the KL divergence from a frozen teacher's next-token distribution, both at a temperature
    (train/distill.py). The recorded train loss stays the data's cross-entropy; the teacher's forward
    FLOPs are counted apart in the run summary (``teacher_flops``)."""

    teacher: str = ""
    """a scalelab run directory (its newest checkpoint, read when training starts) sharing this run's
    tokenizer; '' = no distillation."""
    temperature: float = 1.0
    """softens both distributions; the KL term is scaled by temperature**2 so its gradients keep their size."""
    weight: float = 0.5
    """the KL term's weight; the data's cross-entropy gets 1 - weight (1 = pure distillation)."""

    def validate(self) -> DistillConfig:
        if self.temperature <= 0 or not 0 <= self.weight <= 1:
            raise UserError(f"distill.temperature must be > 0 and distill.weight in [0, 1], got "
                            f"{self.temperature} and {self.weight}")
        return self


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> RunConfig:
        self.model.validate()
        self.tasks.validate()
        self.distill.validate()
        t, s = self.train, self.schedule
        for name in ("batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "eval_tokens"):
            if getattr(t, name) < 1:
                raise UserError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if t.seq_len > self.model.max_seq_len:
            raise UserError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}; "
                            "raise model.max_seq_len or lower train.seq_len")
        if t.max_tokens <= 0 and t.max_steps <= 0:
            raise UserError("set train.max_tokens or train.max_steps to a positive number")
        if s.kind not in ("cosine", "wsd", "constant"):
            raise UserError(f"schedule.kind must be cosine, wsd or constant, got {s.kind!r}")
        if s.decay_start_step >= 0 and s.kind != "wsd":
            raise UserError(f"schedule.decay_start_step is for schedule.kind=wsd, not {s.kind!r}; remove it")
        if s.decay_start_step > self.total_steps:
            raise UserError(f"schedule.decay_start_step={s.decay_start_step} is past the run's last step "
                            f"({self.total_steps}); lower it or train longer")
        if not 0 <= s.min_lr_ratio <= 1 or not 0 < s.decay_frac <= 1 or not 0 <= s.warmup_frac < 1:
            raise UserError("schedule.min_lr_ratio must be in [0, 1], decay_frac in (0, 1], warmup_frac in [0, 1)")
        if self.optim.lr <= 0:
            raise UserError(f"optim.lr must be > 0, got {self.optim.lr}")
        unknown = set(t.loggers) - {"tensorboard", "mlflow", "wandb"}
        if unknown:
            raise UserError(f"train.loggers: unknown tracker {sorted(unknown)[0]!r}; choose from tensorboard, "
                            "mlflow, wandb")
        for name, allowed in (("device", ("auto", "cpu", "cuda", "mps")), ("dtype", ("auto", "fp32", "bf16")),
                              ("compile", ("auto", "on", "off")), ("parallel", ("ddp", "fsdp"))):
            if getattr(t, name) not in allowed and not (name == "device" and t.device.startswith("cuda:")):
                raise UserError(f"train.{name} must be one of {allowed}, got {getattr(t, name)!r}")
        return self

    @property
    def total_steps(self) -> int:
        t = self.train
        return t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.max_tokens / t.tokens_per_step))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- a run's identity -----------------------------------------------------------------------------

# keys that change how a run is carried out, watched or kept, not what it computes: a run may be resumed
# or reused with other values of these; any other key makes it another run
NOT_IDENTITY = {f"train.{k}" for k in ("threads", "progress", "loggers", "log_every", "checkpoint_every",
                                       "keep_checkpoints", "device", "compile", "parallel")}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def identity(cfg: RunConfig) -> dict:
    """Every key that determines a run's results (model, data, optim, schedule, seed, tasks, distill),
    flattened: ``{"optim.lr": 0.003, ...}``."""
    return {k: v for k, v in _flatten(json.loads(json.dumps(cfg.to_dict()))).items() if k not in NOT_IDENTITY}


def fingerprint(cfg: RunConfig) -> str:
    """A short hash of `identity`: equal for two configs exactly when they train the same run."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:16]


def identity_diff(old: RunConfig, new: RunConfig) -> list[str]:
    """``key: old -> new`` for each identity key the two configs set differently."""
    a, b = identity(old), identity(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# ---- loading --------------------------------------------------------------------------------------

def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides to a raw config dict, strictly: unknown keys and
    unparsable values are errors. Works on the user's raw keys, not the resolved config, so derived
    fields (head_dim, d_ff, ...) are derived again from the overridden values."""
    data = json.loads(json.dumps(data))  # deep copy
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"override {ov!r} must look like section.key=value, e.g. train.max_tokens=1e6")
        key, text = ov.split("=", 1)
        _set_path(data, key.strip().split("."), text)
    return data


def _set_path(data: dict, parts: list[str], text: str) -> None:
    node, cls, key = data, RunConfig, ".".join(parts)
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            where = ".".join(parts[:i]) or "top level"
            raise UserError(f"unknown config key {key!r}; keys in [{where}]: {', '.join(sorted(hints))}")
        inner = section_type(hints[part])
        if i < len(parts) - 1:
            if inner is None:
                raise UserError(f"config key {'.'.join(parts[:i + 1])!r} is a value, not a section")
            if node.get(part) is None:  # e.g. model.moe.num_experts=8 on a dense model
                node[part] = {}
            node, cls = node[part], inner
        elif inner is not None:
            if text.strip().lower() in ("none", "null") and is_optional(hints[part]):
                node[part] = None
            else:
                raise UserError(f"config key {key!r} is a section; set one of its keys, e.g. {key}.<key>=...")
        else:
            node[part] = parse_text(hints[part], text, key)


def load_dict(data: dict) -> RunConfig:
    return build(RunConfig, resolve_init_from(data)).validate()


# model keys a run may set differently from the checkpoint it starts from
INIT_FROM_FREE = ("init_from", "max_seq_len", "init_std")


def resolve_init_from(data: dict) -> dict:
    """A config whose [model] names ``init_from``: the architecture is the checkpoint's (its config.json),
    and the data is tokenized with its tokenizer.json unless data.tokenizer says otherwise. A model key
    that contradicts the checkpoint is an error. A resolved config (a run's config.json) whose checkpoint
    folder has since gone is kept as it is: the run's own checkpoints hold its weights."""
    model = dict(data.get("model") or {})
    src = model.get("init_from")
    if not src or (not Path(src).expanduser().exists() and set(_arch_keys()) <= set(model)):
        return data
    if not Path(src).expanduser().is_dir():
        raise UserError(f"model.init_from: {src} is not a folder (a Hugging Face checkpoint: config.json + "
                        "*.safetensors)")
    arch = dataclasses.asdict(config_from_hf(Path(src).expanduser()))
    for k, v in model.items():
        if k not in INIT_FROM_FREE and arch.get(k, object()) != v:
            raise UserError(f"model.{k}={v!r} contradicts model.init_from={src} ({k}={arch.get(k)!r}); "
                            "remove it: the checkpoint sets the architecture")
    out = {**data, "model": {**arch, **{k: model[k] for k in INIT_FROM_FREE if k in model}}}
    tok = Path(src).expanduser() / "tokenizer.json"
    if tok.exists() and not (data.get("data") or {}).get("tokenizer"):
        out["data"] = {**(data.get("data") or {}), "tokenizer": str(tok)}
    return out


def _arch_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig) if f.name not in INIT_FROM_FREE]


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a TOML/JSON run config (None = all defaults) and apply overrides."""
    data = read_config_file(path) if path is not None else {}
    return load_dict(apply_overrides(data, overrides or []))


__all__ = ["RunConfig", "ModelConfig", "MoEConfig", "DataConfig", "OptimConfig", "ScheduleConfig",
           "TrainConfig", "TasksConfig", "DistillConfig", "load_config", "load_dict", "apply_overrides", "identity",
           "fingerprint", "identity_diff"]
