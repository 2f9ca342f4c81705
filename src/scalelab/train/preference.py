"""Post-training: supervised fine-tuning on answers, then Direct Preference Optimization (Rafailov et
al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model").

DPO trains the policy pi on pairs (prompt x, preferred y_w, dispreferred y_l) against a frozen
reference pi_ref (the SFT model), with no reward model and no sampling in the loop (their eq. 7):

    L = -log sigmoid( beta [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

log pi(y|x) sums the completion's token log-probabilities; beta sets how far the policy may move from
the reference (the implicit KL penalty's weight). Tested equal to TRL's DPOTrainer loss on the same
log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_completions(prompts: list[list[int]], completions: list[list[int]], pad: int = 0):
    """-> (ids (N, L), completion_mask (N, L)): prompt + completion, right-padded; mask 1 on completion tokens."""
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), L), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), L)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, len(p):len(p) + len(c)] = 1
    return ids, mask


def token_logps(model, ids: torch.Tensor) -> torch.Tensor:
    """(N, L - 1): log p(ids[:, t + 1] | ids[:, :t + 1])."""
    logits = model(ids[:, :-1]).logits.float()  # (N, L - 1, V)
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def completion_logps(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,): log pi(completion | prompt), the sum over completion tokens."""
    return (token_logps(model, ids) * mask[:, 1:]).sum(1)


def sft_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per completion token (the prompt is context, not target)."""
    return -(token_logps(model, ids) * mask[:, 1:]).sum() / mask[:, 1:].sum()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rafailov et al. eq. 7, averaged over pairs -> (loss, reward margins beta * (...) per pair)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()
