"""Planning an IsoFLOP ladder from compute budgets.

Shapes come from one dial, the width: d_model in steps of ``width_step``, n_layers =
max(1, round(d_model / aspect)) (a fixed aspect ratio, depth grows with width), head_dim fixed,
d_ff from the SwiGLU rule (8/3 d_model rounded to 64), tied embeddings. Per budget C, the sizes are
spread log-uniformly over a factor ``span`` around a guess of N*(C) = sqrt(C / (6 r)) for
``tokens_per_param`` r, each snapped to the nearest shape of the family; D = C / (6 N).

FLOPs convention (explicit): C = 6 N D with N the *total* parameter count. With tied embeddings
every parameter is used in a matmul (the embedding matrix also projects to the logits), so 6N is the
training matmul cost per token up to attention, which the store records separately (exact FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scalelab.config import DataConfig, build, read_config_file
from scalelab.errors import UserError
from scalelab.ladder.heuristics import HEURISTICS
from scalelab.model.config import ModelConfig


@dataclass(frozen=True)
class LadderSpec:
    budgets: tuple[float, ...] = (2e11, 6e11, 2e12)
    sizes_per_budget: int = 4
    span: float = 12.0  # ratio between the largest and smallest size of a budget
    tokens_per_param: float = 20.0  # where the sizes are centred (Chinchilla's rule of thumb)
    strategy: str = "cosine"  # cosine (one run per point) | wsd (one run per size, cooldown branches)
    vocab_size: int = 1024
    seq_len: int = 128
    aspect: int = 32  # d_model / n_layers
    head_dim: int = 16
    width_step: int = 16
    min_width: int = 32
    max_width: int = 1024
    heuristics: str = "deepseek"
    seed: int = 0
    threads: int = 1  # torch threads per run
    eval_tokens: int = 32768
    evals_per_run: int = 4
    wsd_decay_frac: float = 0.2
    data: DataConfig = field(default_factory=lambda: DataConfig(max_bytes=0, tokenizer_train_bytes=4_000_000))

    def validate(self) -> "LadderSpec":
        if not self.budgets or any(not (b > 0) for b in self.budgets):
            raise UserError("ladder.budgets must be a list of positive FLOP counts, e.g. [1e12, 3e12]")
        if self.sizes_per_budget < 1:
            raise UserError("ladder.sizes_per_budget must be >= 1")
        if self.strategy not in ("cosine", "wsd"):
            raise UserError(f"ladder.strategy must be cosine or wsd, got {self.strategy!r}")
        if self.span < 1 or self.tokens_per_param <= 0:
            raise UserError("ladder.span must be >= 1 and ladder.tokens_per_param > 0")
        if self.heuristics not in HEURISTICS:
            raise UserError(f"ladder.heuristics must be one of {sorted(HEURISTICS)}")
        if self.min_width % self.head_dim or self.width_step % self.head_dim:
            raise UserError("ladder.min_width and ladder.width_step must be multiples of ladder.head_dim")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["budgets"] = list(self.budgets)
        return d


@dataclass(frozen=True)
class Rung:
    """One planned run: a shape, a token budget and its hyper-parameters."""

    name: str
    budget: float
    d_model: int
    n_layers: int
    n_heads: int
    N: int  # total parameters
    N_non_embedding: int
    D: int  # training tokens
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    group: str = ""  # WSD: the shape's main run that this point branches from
    decay_start: int | None = None  # WSD: first cooldown step of this point

    @property
    def C(self) -> float:
        return 6.0 * self.N * self.D


def shape(spec: LadderSpec, d_model: int) -> ModelConfig:
    return ModelConfig(d_model=d_model, n_layers=max(1, round(d_model / spec.aspect)),
                       n_heads=d_model // spec.head_dim, head_dim=spec.head_dim, vocab_size=spec.vocab_size,
                       max_seq_len=spec.seq_len, tie_embeddings=True)


def family(spec: LadderSpec) -> list[ModelConfig]:
    return [shape(spec, d) for d in range(spec.min_width, spec.max_width + 1, spec.width_step)]


def _nearest(fam: list[ModelConfig], n: float) -> ModelConfig:
    return min(fam, key=lambda c: abs(math.log(c.num_params_total / n)))


def plan(spec: LadderSpec) -> list[Rung]:
    spec = spec.validate()
    fam = family(spec)
    rungs: list[Rung] = []
    smallest = fam[0].num_params_total
    for C in sorted(spec.budgets):
        n_guess = math.sqrt(C / (6.0 * spec.tokens_per_param))
        k = spec.sizes_per_budget
        targets = [n_guess * spec.span ** ((i / (k - 1) - 0.5) if k > 1 else 0.0) for i in range(k)]
        chosen: list[ModelConfig] = []
        for t in targets:
            c = _nearest(fam, t)
            if c in chosen:  # snap collisions to the next larger unused shape
                bigger = [f for f in fam if f.num_params_total > chosen[-1].num_params_total and f not in chosen]
                if not bigger:
                    continue
                c = bigger[0]
            chosen.append(c)
        rungs += [make_rung(spec, c, C, smallest=smallest) for c in chosen]
    if spec.strategy == "wsd":
        rungs = _wsd(spec, rungs)
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise UserError("two budgets map to the same run name; space the budgets further apart")
    return rungs


def make_rung(spec: LadderSpec, c: ModelConfig, C: float, prefix: str = "", smallest: int | None = None) -> Rung:
    """Shape ``c`` trained on budget C: D = C / (6N) rounded to whole steps, batch, lr and warmup
    from the spec's heuristics. A budget that buys too few steps is a UserError."""
    heur = HEURISTICS[spec.heuristics]()
    N = c.num_params_total
    D = int(C / (6.0 * N))
    min_tokens = heur.min_steps * heur.min_batch_seqs * spec.seq_len
    if D < min_tokens:
        raise UserError(
            f"budget {C:.3g} FLOPs is too small for the {N:,}-parameter model: it buys {D:,} tokens, fewer than "
            f"{min_tokens:,} ({heur.min_steps} steps of {heur.min_batch_seqs} sequences); raise the budget or "
            f"lower ladder.tokens_per_param/min_width (smallest shape: {smallest or N:,} parameters)")
    b = heur.batch_size(C, D, spec.seq_len)
    steps = max(1, round(D / (b * spec.seq_len)))
    return Rung(name=f"{prefix}C{C:.0e}-N{N / 1e3:.0f}k".replace("+", ""), budget=C, d_model=c.d_model,
                n_layers=c.n_layers, n_heads=c.n_heads, N=N, N_non_embedding=c.num_params_non_embedding,
                D=steps * b * spec.seq_len,  # whole steps: the token count actually trained
                steps=steps, batch_size=b, lr=heur.lr(C),
                warmup_steps=heur.warmup_steps(N, b * spec.seq_len, steps))


def _wsd(spec: LadderSpec, rungs: list[Rung]) -> list[Rung]:
    """One WSD run per shape to its largest token count, cooldown branches at the smaller ones.

    All points of a shape share the batch size, lr and warmup of its largest budget (they are one
    run until their cooldown starts)."""
    from collections import defaultdict

    by_shape = defaultdict(list)
    for r in rungs:
        by_shape[r.d_model].append(r)
    out = []
    for d, rs in sorted(by_shape.items()):
        top = max(rs, key=lambda r: r.D)
        group = f"wsd-d{d}"
        for r in sorted(rs, key=lambda r: r.D):
            steps = max(1, round(r.D / (top.batch_size * spec.seq_len)))
            decay = steps - max(1, round(spec.wsd_decay_frac * steps))
            out.append(Rung(name=r.name, budget=r.budget, d_model=d, n_layers=r.n_layers, n_heads=r.n_heads,
                            N=r.N, N_non_embedding=r.N_non_embedding, D=steps * top.batch_size * spec.seq_len,
                            steps=steps, batch_size=top.batch_size, lr=top.lr,
                            warmup_steps=min(top.warmup_steps, max(1, decay)), group=group,
                            decay_start=max(decay, min(top.warmup_steps, decay))))
    return out


def rung_overrides(spec: LadderSpec, r: Rung) -> dict:
    """The RunConfig (as a raw dict) that trains rung ``r``."""
    evals = max(1, spec.evals_per_run)
    return {
        "model": {"d_model": r.d_model, "n_layers": r.n_layers, "n_heads": r.n_heads, "head_dim": spec.head_dim,
                  "vocab_size": spec.vocab_size, "max_seq_len": spec.seq_len, "tie_embeddings": True},
        "data": asdict(spec.data),
        "optim": {"lr": r.lr},
        "schedule": {"kind": spec.strategy, "warmup_steps": r.warmup_steps, "decay_frac": spec.wsd_decay_frac},
        "train": {"batch_size": r.batch_size, "seq_len": spec.seq_len, "max_steps": r.steps,
                  "max_tokens": r.D, "eval_every": max(1, r.steps // evals), "eval_tokens": spec.eval_tokens,
                  "log_every": max(1, min(25, r.steps // 10)), "seed": spec.seed, "threads": spec.threads,
                  "progress": False, "keep_checkpoints": 1},
    }


# ---- LADDER.toml ---------------------------------------------------------------------------------

def load_spec(path: str | Path) -> LadderSpec:
    return spec_from_dict(read_config_file(path, "ladder file"))


def spec_from_dict(raw: dict) -> LadderSpec:
    lad = dict(raw.get("ladder", {}))
    unknown = set(raw) - {"ladder", "data"}
    if unknown:
        raise UserError(f"unknown section(s) {sorted(unknown)} in ladder file; use [ladder] and [data]")
    if "budgets" in lad:
        if not isinstance(lad["budgets"], list):
            raise UserError("ladder.budgets must be a list, e.g. budgets = [1e12, 3e12, 1e13]")
        lad["budgets"] = tuple(float(b) for b in lad["budgets"])
    if "data" in raw:
        lad["data"] = raw["data"]
    spec = build(LadderSpec, lad, "ladder")
    return spec.validate()


def spec_to_toml(spec: LadderSpec) -> str:
    lines = ["# scalelab ladder: `scalelab ladder run THIS_FILE --out DIR`", "[ladder]"]
    for f in fields(LadderSpec):
        if f.name == "data":
            continue
        v = getattr(spec, f.name)
        lines.append(f"{f.name} = {_toml(v)}")
    lines.append("\n[data]")
    for k, v in asdict(spec.data).items():
        if v is not None:
            lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return f"{v:.6g}" if "e" in f"{v:.6g}" or "." in f"{v:.6g}" else f"{v:.1f}"
    return str(v)
