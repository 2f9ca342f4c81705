"""Speculative decoding (Leviathan, Kalman & Matias 2023; Chen et al. 2023).

A small draft model proposes gamma tokens one at a time; the target scores all of them in one
forward pass and keeps a prefix, by rejection sampling, so that the output is distributed exactly as
the target's own samples:

    1. draft:  x_i ~ q(. | prefix, x_<i),  i = 1..gamma
    2. verify: p(. | prefix, x_<i) for i = 1..gamma+1, one target pass over the gamma drafts
    3. accept x_i while u_i < min(1, p(x_i) / q(x_i)), u_i ~ U(0, 1)
    4. at the first rejection, draw from norm(max(0, p - q)) instead; if all gamma were accepted,
       draw one more token from p(. | prefix, x_1..x_gamma)

Each round costs one target pass and yields between 1 and gamma+1 tokens. With acceptance rate
alpha = E[sum_x min(p(x), q(x))] (Leviathan et al., Definition 3.1), the expected tokens per target
pass is (1 - alpha^(gamma+1)) / (1 - alpha) (their equation 1). At temperature 0, p and q are
one-hot on their argmax and the output is the target's greedy output exactly.

Both models keep KV caches; a rejected suffix is dropped by moving the cache's position back (the
cache keeps every committed token but the newest, which is fed at the next step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scalelab.model.transformer import Transformer


@dataclass
class SpeculativeStats:
    rounds: int = 0  # target passes
    drafted: int = 0
    accepted: int = 0
    alpha_sum: float = 0.0  # sum over drafted positions of sum_x min(p(x), q(x))
    accepted_per_round: list = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """alpha, Leviathan et al.'s expected acceptance probability, averaged over drafted positions."""
        return self.alpha_sum / max(1, self.drafted)

    @property
    def tokens_per_target_pass(self) -> float:
        return (self.accepted + self.rounds) / max(1, self.rounds)


def expected_tokens_per_pass(alpha: float, gamma: int) -> float:
    """Leviathan et al. eq. 1: (1 - alpha^(gamma+1)) / (1 - alpha)."""
    return gamma + 1.0 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Next-token distributions (..., V); one-hot on the argmax at temperature 0."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    return (logits.float() / temperature).softmax(-1)


def _draw(p: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(p, 1, generator=generator))


def _draft(draft: Transformer, cache, pending: torch.Tensor, gamma: int, temperature: float, generator):
    """gamma tokens from the draft -> (tokens, their distributions (gamma, V))."""
    tokens, qs, x = [], [], pending
    for _ in range(gamma):
        q = _probs(draft(x, cache=cache).logits[0, -1], temperature)  # (V,)
        tokens.append(_draw(q, generator) if temperature > 0 else int(q.argmax()))
        qs.append(q)
        x = torch.tensor([[tokens[-1]]], device=pending.device)
    return tokens, torch.stack(qs)


def _verify(p: torch.Tensor, q: torch.Tensor, tokens: list[int], temperature: float, generator,
            stats: SpeculativeStats) -> list[int]:
    """Steps 3-4: the accepted drafts plus one token from the target (or the residual)."""
    if tokens:
        stats.alpha_sum += float(torch.minimum(p[:len(tokens)], q).sum())
    for i, t in enumerate(tokens):
        if temperature <= 0:
            ok = int(p[i].argmax()) == t
        else:
            u = float(torch.rand((), generator=generator))
            ok = u < min(1.0, float(p[i, t] / q[i, t]))
        if not ok:
            residual = (p[i] - q[i]).clamp_min(0)
            nxt = int(p[i].argmax()) if temperature <= 0 else _draw(residual / residual.sum(), generator)
            return tokens[:i] + [nxt]
    last = p[len(tokens)]
    return tokens + [int(last.argmax()) if temperature <= 0 else _draw(last, generator)]


@torch.no_grad()
def speculative_generate(target: Transformer, draft: Transformer, idx: torch.Tensor, max_new_tokens: int,
                         gamma: int = 4, temperature: float = 1.0, generator: torch.Generator | None = None,
                         stop_token: int | None = None) -> tuple[torch.Tensor, SpeculativeStats]:
    """Sample up to ``max_new_tokens`` after ``idx`` (1, T0) -> ((1, T0 + new), stats)."""
    if idx.shape[0] != 1:
        raise ValueError("speculative decoding here takes one sequence at a time")
    if target.cfg.vocab_size != draft.cfg.vocab_size:
        raise ValueError(f"draft vocabulary {draft.cfg.vocab_size} != target vocabulary {target.cfg.vocab_size}")
    target.eval(), draft.eval()
    limit = min(target.cfg.max_seq_len, draft.cfg.max_seq_len)
    tc, dc = target.new_cache(1), draft.new_cache(1)
    out, stats = idx[0].tolist(), SpeculativeStats()
    end = min(len(out) + max_new_tokens, limit)
    device = idx.device
    while len(out) < end:
        g = min(gamma, end - len(out) - 1)
        tokens, q = _draft(draft, dc, torch.tensor([out[dc.pos:]], device=device), g, temperature, generator) \
            if g else ([], None)
        block = torch.tensor([out[tc.pos:] + tokens], device=device)  # the pending token(s) + the drafts
        p = _probs(target(block, cache=tc).logits[0, -(g + 1):], temperature)  # (g + 1, V)
        new = _verify(p, q, tokens, temperature, generator, stats)
        stats.rounds += 1
        stats.drafted += g
        stats.accepted += len(new) - 1
        stats.accepted_per_round.append(len(new) - 1)
        out += new
        tc.pos = min(tc.pos, len(out) - 1)  # drop what the rejected drafts wrote
        dc.pos = min(dc.pos, len(out) - 1)
        if stop_token is not None and stop_token in new:
            out = out[:len(out) - len(new) + new.index(stop_token) + 1]
            break
    return torch.tensor([out[:end]], device=device), stats
