"""Per-size training heuristics, one swappable object (the OLMo-core split: the ladder decides
*what* to train, the heuristics decide *how*). `ladder.heuristics` names one:

- ``deepseek`` (default): DeepSeek LLM's compute-optimal fits (Bi et al. 2024, eq. 1), C in FLOPs:
      learning rate   eta_opt = 0.3118 * C^-0.1250
      batch (tokens)  B_opt   = 0.2920 * C^0.3271
  fitted on 1e17..3e20 FLOPs; at 1e11..1e13 FLOPs they extrapolate to lr ~1e-2 and ~2k-10k tokens
  per batch, which is what small models train well with.
- ``steplaw``: StepLaw (Li et al. 2025), N non-embedding parameters, D tokens:
      eta_opt = 1.79 N^-0.713 D^0.307,  B_opt = 0.58 D^0.571 tokens.
- ``mup``: every rung in muP (model.parametrization=mup, base width = ladder.min_width, untied
  embeddings) at one lr, ``ladder.mup_base_lr`` (tuned once at the smallest width; 0 = DeepSeek's lr
  at the smallest budget); batch as deepseek. Untying adds a vocab x d_model readout to every rung,
  so its N (and the D its budget buys) differs from the other rule sets' at the same width.
- ``fitted:FILE``: lr = coef N^n_exp D^d_exp from a JSON file ({"lr_law": {coef, n_exp, d_exp, n}},
  what `scalelab lab lr-transfer` writes as lr_law.json); batch as deepseek.

Warmup is N tokens (one token per parameter, as OLMo's ladder does), capped at a quarter of the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from scalelab.errors import UserError
from scalelab.laws.hyper import DEEPSEEK_BATCH, DEEPSEEK_LR, STEPLAW_BATCH, steplaw_lr
from scalelab.model.config import ModelConfig


@dataclass(frozen=True)
class Recipe:
    """How one (shape, budget) point trains: what the heuristics decide."""

    batch_size: int  # sequences per step
    steps: int
    lr: float  # peak learning rate
    warmup_steps: int
    rule: str = ""
    """which rule set the lr and batch (the heuristics' name)."""

    def tokens(self, seq_len: int) -> int:
        """Tokens actually trained: whole steps of whole batches."""
        return self.steps * self.batch_size * seq_len


@dataclass(frozen=True)
class DeepSeekHeuristics:
    lr_coef: float = DEEPSEEK_LR["coef"]
    lr_exp: float = DEEPSEEK_LR["c_exp"]
    batch_coef: float = DEEPSEEK_BATCH["coef"]
    batch_exp: float = DEEPSEEK_BATCH["c_exp"]
    min_batch_seqs: int = 4
    min_steps: int = 40
    max_warmup_frac: float = 0.25
    name: str = "deepseek"

    def lr(self, compute_flops: float) -> float:
        return self.lr_coef * compute_flops ** self.lr_exp

    def batch_tokens(self, compute_flops: float) -> float:
        return self.batch_coef * compute_flops ** self.batch_exp

    # what the other rule sets replace: lr and batch of a (C, model, D) point, and the model itself
    def lr_for(self, compute_flops: float, model: ModelConfig, tokens: float) -> float:
        return self.lr(compute_flops)

    def batch_tokens_for(self, compute_flops: float, tokens: float) -> float:
        return self.batch_tokens(compute_flops)

    def model(self, c: ModelConfig) -> ModelConfig:
        return c

    def describe(self) -> str:
        return (f"{self.name}: lr = {self.lr_coef:g} C^{self.lr_exp:g}, "
                f"batch = {self.batch_coef:g} C^{self.batch_exp:g} tokens")

    def batch_size(self, batch_tokens: float, tokens: float, seq_len: int) -> int:
        """Sequences per step: B_opt rounded to whole sequences, reduced if the run would be too short."""
        b = max(self.min_batch_seqs, round(batch_tokens / seq_len))
        while b > self.min_batch_seqs and tokens / (b * seq_len) < self.min_steps:
            b -= 1
        return b

    def warmup_steps(self, num_params: int, batch_tokens: int, steps: int) -> int:
        return max(1, min(int(self.max_warmup_frac * steps), math.ceil(num_params / batch_tokens)))

    def min_tokens(self, seq_len: int) -> int:
        return self.min_steps * self.min_batch_seqs * seq_len

    def recipe(self, compute_flops: float, model: ModelConfig, tokens: float, seq_len: int) -> Recipe:
        """Batch, steps, lr and warmup for ``model`` trained on ``tokens`` at C."""
        b = self.batch_size(self.batch_tokens_for(compute_flops, tokens), tokens, seq_len)
        steps = max(1, round(tokens / (b * seq_len)))
        return Recipe(batch_size=b, steps=steps, lr=self.lr_for(compute_flops, model, tokens),
                      warmup_steps=self.warmup_steps(model.num_params_total, b * seq_len, steps), rule=self.name)


@dataclass(frozen=True)
class StepLawHeuristics(DeepSeekHeuristics):
    name: str = "steplaw"

    def lr_for(self, compute_flops: float, model: ModelConfig, tokens: float) -> float:
        return steplaw_lr(model.num_params_non_embedding, tokens)

    def batch_tokens_for(self, compute_flops: float, tokens: float) -> float:
        return STEPLAW_BATCH["coef"] * tokens ** STEPLAW_BATCH["d_exp"]

    def describe(self) -> str:
        return "steplaw: lr = 1.79 N^-0.713 D^0.307 (N non-embedding), batch = 0.58 D^0.571 tokens"


@dataclass(frozen=True)
class MuPHeuristics(DeepSeekHeuristics):
    base_lr: float = 1e-2
    base_width: int = 32
    name: str = "mup"

    def lr_for(self, compute_flops: float, model: ModelConfig, tokens: float) -> float:
        return self.base_lr  # muP moves the per-layer rates (lr / m on hidden matrices), not this one

    def model(self, c: ModelConfig) -> ModelConfig:
        # untied: with one matrix as embedding and readout, muP's optimum did not transfer across widths
        # in the lr-transfer lab, with two it did (docs/LOG.md 2026-11-30)
        return replace(c, parametrization="mup", mup_base_width=self.base_width, tie_embeddings=False).validate()

    def describe(self) -> str:
        return (f"mup: lr {self.base_lr:.4g} at every width (hidden matrices lr / m, m = d_model / "
                f"{self.base_width}; untied embeddings), batch = deepseek's {self.batch_coef:g} C^{self.batch_exp:g} "
                "tokens")


@dataclass(frozen=True)
class FittedHeuristics(DeepSeekHeuristics):
    coef: float = 1.0
    n_exp: float = 0.0
    d_exp: float = 0.0
    non_embedding: bool = True
    source: str = ""
    name: str = "fitted"

    def lr_for(self, compute_flops: float, model: ModelConfig, tokens: float) -> float:
        n = model.num_params_non_embedding if self.non_embedding else model.num_params_total
        return self.coef * n ** self.n_exp * tokens ** self.d_exp

    def describe(self) -> str:
        return (f"fitted ({self.source}): lr = {self.coef:.3g} N^{self.n_exp:+.3f} D^{self.d_exp:+.3f}"
                f"{' (N non-embedding)' if self.non_embedding else ''}, batch = deepseek's")


def fitted_from_file(path: str) -> FittedHeuristics:
    p = Path(path)
    try:
        law = json.loads(p.read_text())["lr_law"]
        return FittedHeuristics(coef=float(law["coef"]), n_exp=float(law["n_exp"]), d_exp=float(law["d_exp"]),
                                non_embedding=law.get("n", "non_embedding") == "non_embedding", source=str(p))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"ladder.heuristics=fitted:{path}: cannot read an lr law from it ({type(e).__name__}: {e}); "
                        "give the lr_law.json `scalelab lab lr-transfer` writes") from None


NAMES = ("deepseek", "steplaw", "mup", "fitted:FILE")


def heuristics_for(name: str, budgets=(), min_width: int = 32, mup_base_lr: float = 0.0) -> DeepSeekHeuristics:
    """The heuristics named by ``ladder.heuristics`` (see the module docstring)."""
    if name == "deepseek":
        return DeepSeekHeuristics()
    if name == "steplaw":
        return StepLawHeuristics()
    if name == "mup":
        lr = mup_base_lr or DeepSeekHeuristics().lr(min(budgets) if budgets else 1e12)
        return MuPHeuristics(base_lr=lr, base_width=min_width)
    if name.startswith("fitted:") and len(name) > len("fitted:"):
        return fitted_from_file(name[len("fitted:"):])
    raise UserError(f"ladder.heuristics must be one of {', '.join(NAMES)}; got {name!r}")
