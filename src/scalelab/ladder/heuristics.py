"""Per-size training heuristics, one swappable object (the OLMo-core split: the ladder decides
*what* to train, the heuristics decide *how*).

`DeepSeekHeuristics` (default) uses the compute-optimal hyper-parameter fits of DeepSeek LLM
(Bi et al. 2024, eq. 1), with C the training compute in FLOPs:
    learning rate   eta_opt = 0.3118 * C^-0.1250
    batch (tokens)  B_opt   = 0.2920 * C^0.3271
fitted on 1e17..3e20 FLOPs; at 1e11..1e13 FLOPs they extrapolate to lr ~1e-2 and ~2k-10k tokens
per batch, which is what small models train well with. Warmup is N tokens (one token per parameter,
as OLMo's ladder does), capped at a quarter of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How one (shape, budget) point trains: what the heuristics decide."""

    batch_size: int  # sequences per step
    steps: int
    lr: float  # peak learning rate
    warmup_steps: int

    def tokens(self, seq_len: int) -> int:
        """Tokens actually trained: whole steps of whole batches."""
        return self.steps * self.batch_size * seq_len


@dataclass(frozen=True)
class DeepSeekHeuristics:
    lr_coef: float = 0.3118
    lr_exp: float = -0.1250
    batch_coef: float = 0.2920
    batch_exp: float = 0.3271
    min_batch_seqs: int = 4
    min_steps: int = 40
    max_warmup_frac: float = 0.25

    def lr(self, compute_flops: float) -> float:
        return self.lr_coef * compute_flops ** self.lr_exp

    def batch_tokens(self, compute_flops: float) -> float:
        return self.batch_coef * compute_flops ** self.batch_exp

    def batch_size(self, compute_flops: float, tokens: float, seq_len: int) -> int:
        """Sequences per step: B_opt rounded to whole sequences, reduced if the run would be too short."""
        b = max(self.min_batch_seqs, round(self.batch_tokens(compute_flops) / seq_len))
        while b > self.min_batch_seqs and tokens / (b * seq_len) < self.min_steps:
            b -= 1
        return b

    def warmup_steps(self, num_params: int, batch_tokens: int, steps: int) -> int:
        return max(1, min(int(self.max_warmup_frac * steps), math.ceil(num_params / batch_tokens)))

    def min_tokens(self, seq_len: int) -> int:
        return self.min_steps * self.min_batch_seqs * seq_len

    def recipe(self, compute_flops: float, num_params: int, tokens: float, seq_len: int) -> Recipe:
        """Batch, steps, lr and warmup for a model of ``num_params`` trained on ``tokens`` at C."""
        b = self.batch_size(compute_flops, tokens, seq_len)
        steps = max(1, round(tokens / (b * seq_len)))
        return Recipe(batch_size=b, steps=steps, lr=self.lr(compute_flops),
                      warmup_steps=self.warmup_steps(num_params, b * seq_len, steps))


HEURISTICS = {"deepseek": DeepSeekHeuristics}
