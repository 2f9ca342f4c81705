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
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from scalelab.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig, TasksConfig, TrainConfig
from scalelab.economics.flops import train_flops_6nd
from scalelab.errors import UserError
from scalelab.io import read_config_file
from scalelab.ladder.heuristics import Recipe, heuristics_for
from scalelab.model.config import ModelConfig
from scalelab.typed import build


@dataclass(frozen=True)
class LadderSpec:
    budgets: tuple[float, ...] = (2e11, 6e11, 2e12)
    sizes_per_budget: int = 4
    span: float = 12.0
    """ratio between the largest and smallest size of a budget."""
    tokens_per_param: float = 20.0
    """where the sizes are centred (Chinchilla's rule of thumb)."""
    strategy: str = "cosine"
    """cosine (one run per point) | wsd (one run per size, cooldown branches)."""
    vocab_size: int = 1024
    seq_len: int = 128
    aspect: int = 32
    """d_model / n_layers."""
    head_dim: int = 16
    width_step: int = 16
    min_width: int = 32
    max_width: int = 1024
    heuristics: str = "deepseek"
    """how each rung's lr and batch are set (ladder/heuristics.py): deepseek | steplaw | mup | fitted:FILE."""
    mup_base_lr: float = 0.0
    """heuristics=mup: the lr tuned at the smallest width (0 = DeepSeek's lr at the smallest budget)."""
    seeds: int = 1
    """runs of each budget's centre rung (seeds seed .. seed+seeds-1): their spread is the seed noise the
    rung-quality checks (ladder/quality.py) measure "off the trend" against."""
    seed: int = 0
    threads: int = 1
    """torch threads per run."""
    eval_tokens: int = 32768
    evals_per_run: int = 4
    wsd_decay_frac: float = 0.2
    loggers: tuple[str, ...] = ()
    """experiment trackers for every rung (train.loggers): one tracked run per rung, grouped by ladder."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_bytes=0, tokenizer_train_bytes=4_000_000))
    tasks: TasksConfig = field(default_factory=TasksConfig)
    """tasks every rung is evaluated on at each evaluation (and mixed into the data at train_fraction)."""

    def validate(self) -> LadderSpec:
        if not self.budgets or any(not (b > 0) for b in self.budgets):
            raise UserError("ladder.budgets must be a list of positive FLOP counts, e.g. [1e12, 3e12]")
        if self.sizes_per_budget < 1:
            raise UserError("ladder.sizes_per_budget must be >= 1")
        if self.strategy not in ("cosine", "wsd"):
            raise UserError(f"ladder.strategy must be cosine or wsd, got {self.strategy!r}")
        if self.span < 1 or self.tokens_per_param <= 0:
            raise UserError("ladder.span must be >= 1 and ladder.tokens_per_param > 0")
        self.rules()  # an unknown name or an unreadable fitted file is a UserError
        if self.seeds < 1 or (self.seeds > 1 and self.strategy == "wsd"):
            raise UserError("ladder.seeds must be >= 1, and 1 with strategy wsd (its rungs share runs)")
        if self.min_width % self.head_dim or self.width_step % self.head_dim:
            raise UserError("ladder.min_width and ladder.width_step must be multiples of ladder.head_dim")
        self.tasks.validate()
        return self

    def rules(self):
        """The heuristics object this spec names."""
        return heuristics_for(self.heuristics, self.budgets, self.min_width, self.mup_base_lr)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["budgets"] = list(self.budgets)
        return d


@dataclass(frozen=True)
class Rung:
    """One planned run of the ladder: its name, budget and the full `RunConfig` that trains it."""

    name: str
    budget: float  # the IsoFLOP budget C this point belongs to (FLOPs, C = 6 N D)
    config: RunConfig
    group: str = ""
    """WSD: the shape group whose largest run this point branches from."""
    rule: str = ""
    """which heuristics set this rung's lr and batch."""
    replica_of: str = ""
    """`--seeds k`: the rung this one repeats with another seed."""

    @property
    def model(self) -> ModelConfig:
        return self.config.model

    @property
    def N(self) -> int:
        """Total parameters (tied embeddings: every parameter is in a matmul)."""
        return self.model.num_params_total

    @property
    def N_non_embedding(self) -> int:
        return self.model.num_params_non_embedding

    @property
    def steps(self) -> int:
        return self.config.total_steps

    @property
    def D(self) -> int:
        """Training tokens: whole steps of whole batches."""
        return self.steps * self.config.train.tokens_per_step

    @property
    def C(self) -> float:
        return train_flops_6nd(self.N, self.D)

    @property
    def decay_start(self) -> int | None:
        """WSD: the first cooldown step (where this point branches from its group's main run)."""
        s = self.config.schedule.decay_start_step
        return s if s >= 0 else None

    def record(self) -> dict:
        """What the store keeps of the plan: the config, and the numbers tables and hovers show."""
        c = self.config
        return {"name": self.name, "budget": self.budget, "group": self.group, "N": self.N,
                "N_non_embedding": self.N_non_embedding, "D": self.D, "C": self.C, "steps": self.steps,
                "d_model": self.model.d_model, "n_layers": self.model.n_layers, "n_heads": self.model.n_heads,
                "batch_size": c.train.batch_size, "lr": c.optim.lr, "warmup_steps": c.schedule.warmup_steps,
                "decay_start": self.decay_start, "lr_rule": self.rule, "replica_of": self.replica_of,
                "parametrization": self.model.parametrization, "seed": c.train.seed, "config": c.to_dict()}


def shape(spec: LadderSpec, d_model: int) -> ModelConfig:
    return ModelConfig(d_model=d_model, n_layers=max(1, round(d_model / spec.aspect)),
                       n_heads=d_model // spec.head_dim, head_dim=spec.head_dim, vocab_size=spec.vocab_size,
                       max_seq_len=spec.seq_len, tie_embeddings=True)


def family(spec: LadderSpec) -> list[ModelConfig]:
    return [shape(spec, d) for d in range(spec.min_width, spec.max_width + 1, spec.width_step)]


def nearest_shape(fam: list[ModelConfig], n: float) -> ModelConfig:
    """The family member whose total parameter count is nearest ``n`` (in log distance)."""
    return min(fam, key=lambda c: abs(math.log(c.num_params_total / n)))


def plan(spec: LadderSpec) -> list[Rung]:
    spec = spec.validate()
    fam, heur = family(spec), spec.rules()
    rungs: list[Rung] = []
    smallest = fam[0].num_params_total
    for C in sorted(spec.budgets):
        n_guess = math.sqrt(C / (6.0 * spec.tokens_per_param))
        k = spec.sizes_per_budget
        targets = [n_guess * spec.span ** ((i / (k - 1) - 0.5) if k > 1 else 0.0) for i in range(k)]
        chosen: list[ModelConfig] = []
        for t in targets:
            c = nearest_shape(fam, t)
            if c in chosen:  # snap collisions to the next larger unused shape
                bigger = [f for f in fam if f.num_params_total > chosen[-1].num_params_total and f not in chosen]
                if not bigger:
                    continue
                c = bigger[0]
            chosen.append(c)
        budget_rungs = [make_rung(spec, c, C, smallest=smallest, heur=heur) for c in chosen]
        centre = min(budget_rungs, key=lambda r: abs(math.log(r.N / n_guess)))
        rungs += budget_rungs + [replicate(centre, spec.seed + j) for j in range(1, spec.seeds)]
    if spec.strategy == "wsd":
        rungs = _wsd(spec, rungs)
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise UserError("two budgets map to the same run name; space the budgets further apart")
    return rungs


def replicate(r: Rung, seed: int) -> Rung:
    """The same rung with another seed (its data order and initialisation)."""
    cfg = replace(r.config, train=replace(r.config.train, seed=seed))
    return replace(r, name=f"{r.name}-seed{seed}", config=cfg, replica_of=r.name)


def make_rung(spec: LadderSpec, c: ModelConfig, C: float, prefix: str = "", smallest: int | None = None,
              heur=None) -> Rung:
    """Shape ``c`` trained on budget C: D = C / (6N) rounded to whole steps, batch, lr and warmup
    from the spec's heuristics (which may also set the parametrization). A budget that buys too few
    steps is a UserError."""
    heur = heur or spec.rules()  # `plan` builds it once (a fitted rule reads its file)
    c = heur.model(c)
    N = c.num_params_total
    D = int(C / (6.0 * N))
    if D < heur.min_tokens(spec.seq_len):
        raise UserError(
            f"budget {C:.3g} FLOPs is too small for the {N:,}-parameter model: it buys {D:,} tokens, fewer than "
            f"{heur.min_tokens(spec.seq_len):,} ({heur.min_steps} steps of {heur.min_batch_seqs} sequences); "
            f"raise the budget or lower ladder.tokens_per_param/min_width "
            f"(smallest shape: {smallest or N:,} parameters)")
    name = f"{prefix}C{C:.0e}-N{N / 1e3:.0f}k".replace("+", "")
    recipe = heur.recipe(C, c, D, spec.seq_len)
    return Rung(name=name, budget=C, config=run_config(spec, c, recipe), rule=recipe.rule)


def run_config(spec: LadderSpec, model: ModelConfig, r: Recipe, decay_start: int = -1) -> RunConfig:
    """The typed RunConfig that trains ``model`` with recipe ``r`` (no dict round trip)."""
    evals = max(1, spec.evals_per_run)
    schedule = ScheduleConfig(kind=spec.strategy, warmup_steps=r.warmup_steps, decay_frac=spec.wsd_decay_frac,
                              decay_start_step=decay_start)
    train = TrainConfig(batch_size=r.batch_size, seq_len=spec.seq_len, max_steps=r.steps,
                        max_tokens=r.tokens(spec.seq_len), eval_every=max(1, r.steps // evals),
                        eval_tokens=spec.eval_tokens, log_every=max(1, min(25, r.steps // 10)), seed=spec.seed,
                        threads=spec.threads, progress=False, keep_checkpoints=1, loggers=spec.loggers)
    return RunConfig(model=model, data=spec.data, optim=OptimConfig(lr=r.lr), schedule=schedule,
                     train=train, tasks=spec.tasks).validate()


def with_threads(cfg: RunConfig, threads: int) -> RunConfig:
    """The same run with another torch thread count (changes speed, not results)."""
    return replace(cfg, train=replace(cfg.train, threads=threads))


def _wsd(spec: LadderSpec, rungs: list[Rung]) -> list[Rung]:
    """One WSD run per shape to its largest token count, cooldown branches at the smaller ones.

    All points of a shape share the batch size, lr and warmup of its largest budget (they are one
    run until their cooldown starts)."""
    by_shape = defaultdict(list)
    for r in rungs:
        by_shape[r.model.d_model].append(r)
    out = []
    for d, rs in sorted(by_shape.items()):
        top = max(rs, key=lambda r: r.D)
        b, lr, warm = top.config.train.batch_size, top.config.optim.lr, top.config.schedule.warmup_steps
        for r in sorted(rs, key=lambda r: r.D):
            steps = max(1, round(r.D / (b * spec.seq_len)))
            decay = steps - max(1, round(spec.wsd_decay_frac * steps))
            recipe = Recipe(batch_size=b, steps=steps, lr=lr, warmup_steps=min(warm, max(1, decay)), rule=top.rule)
            cfg = run_config(spec, r.model, recipe, decay_start=max(decay, min(warm, decay)))
            out.append(Rung(name=r.name, budget=r.budget, config=cfg, group=f"wsd-d{d}", rule=top.rule))
    return out


# ---- LADDER.toml ---------------------------------------------------------------------------------

def load_spec(path: str | Path) -> LadderSpec:
    return spec_from_dict(read_config_file(path, "ladder file"))


def spec_from_dict(raw: dict) -> LadderSpec:
    lad = dict(raw.get("ladder", {}))
    unknown = set(raw) - {"ladder", "data", "tasks"}
    if unknown:
        raise UserError(f"unknown section(s) {sorted(unknown)} in ladder file; use [ladder], [data] and [tasks]")
    if "budgets" in lad and not isinstance(lad["budgets"], list):
        raise UserError("ladder.budgets must be a list, e.g. budgets = [1e12, 3e12, 1e13]")
    for section in ("data", "tasks"):
        if section in raw:
            lad[section] = raw[section]
    spec = build(LadderSpec, lad, "ladder")
    return spec.validate()


def spec_from_stored(d: dict) -> LadderSpec:
    """The spec a ladder's store keeps (`LadderSpec.to_dict`), rebuilt."""
    return build(LadderSpec, dict(d), "ladder").validate()


def spec_to_toml(spec: LadderSpec) -> str:
    lines = ["# scalelab ladder: `scalelab ladder run THIS_FILE --out DIR`", "[ladder]"]
    for f in fields(LadderSpec):
        if f.name in ("data", "tasks"):
            continue
        v = getattr(spec, f.name)
        lines.append(f"{f.name} = {_toml(v)}")
    for section in ("data", "tasks"):
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in asdict(getattr(spec, section)).items() if v is not None]
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
