"""Post-training losses: DPO equals TRL's DPOTrainer on the same log-probabilities; SFT targets answers only."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from scalelab.model.config import ModelConfig
from scalelab.model.transformer import Transformer
from scalelab.train.preference import completion_logps, dpo_loss, pad_completions, sft_loss, token_logps


def _model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=2, max_seq_len=32, init_std=0.2))


def _batch():
    prompts = [[1, 5, 7], [2, 9], [3, 3, 3, 4]]
    chosen = [[11, 12], [13, 14, 15], [16]]
    rejected = [[21], [22, 23], [24, 25, 26]]
    ids, mask = pad_completions(prompts + prompts, chosen + rejected)  # TRL's layout: chosen rows, then rejected
    return ids, mask


class _TRLModel:
    """What TRL's DPOTrainer reads from a model called with labels and fused_lm_head=True: per-token
    log-probabilities of the labels (0 where a label is -100) and a few metrics' inputs."""

    def __init__(self, model):
        self.model, self.training, self.is_gradient_checkpointing = model, True, False

    def __call__(self, input_ids, labels, **_):
        logits = self.model(input_ids[:, :-1]).logits.float()
        lp = logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        keep = labels[:, 1:] != -100
        return SimpleNamespace(log_probs=lp * keep, entropy=torch.zeros_like(lp), mean_logits=logits.mean(-1),
                               is_top1=logits.argmax(-1) == input_ids[:, 1:])


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trls_dpo_trainer(beta):
    trl = pytest.importorskip("trl")
    policy, ref = _model(0), _model(1)
    ids, mask = _batch()
    pc, pr = completion_logps(policy, ids, mask).chunk(2)
    with torch.no_grad():
        rc, rr = completion_logps(ref, ids, mask).chunk(2)
    ours, _ = dpo_loss(pc, pr, rc, rr, beta)
    acc = SimpleNamespace(device="cpu", gather_for_metrics=lambda t: t, gather=lambda t: t)
    fake = SimpleNamespace(model=_TRLModel(policy), ref_model=_TRLModel(ref), accelerator=acc, beta=beta,
                           aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=False,
                           f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0],
                           use_weighting=False, label_smoothing=0.0, _metrics=defaultdict(lambda: defaultdict(list)),
                           _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "completion_mask": mask.long()}
    theirs = trl.DPOTrainer._compute_loss(fake, fake.model, inputs, return_outputs=False)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)
    g_ours = torch.autograd.grad(ours, policy.tok_emb.weight)[0]
    g_theirs = torch.autograd.grad(trl.DPOTrainer._compute_loss(fake, fake.model, inputs, return_outputs=False),
                                   policy.tok_emb.weight)[0]
    assert torch.allclose(g_ours, g_theirs, atol=1e-6)


def test_sft_loss_scores_the_answer_tokens_only():
    model = _model(2)
    ids, mask = pad_completions([[1, 2, 3]], [[4, 5]])
    lp = token_logps(model, ids)[0]
    assert torch.allclose(sft_loss(model, ids, mask), -(lp[2] + lp[3]) / 2)  # tokens 4 and 5, predicted at 2 and 3
    changed = ids.clone()
    changed[0, 0] = 9  # the prompt changes the context, never the target set
    assert mask[0].tolist() == [0, 0, 0, 1, 1]
    assert not torch.allclose(sft_loss(model, changed, mask), sft_loss(model, ids, mask))


def test_dpo_loss_is_log2_at_the_reference_and_falls_as_the_margin_grows():
    z = torch.zeros(4)
    loss, margin = dpo_loss(z, z, z, z, beta=0.1)
    assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 1e-7 and margin.abs().max() == 0
    better, _ = dpo_loss(z + 1, z - 1, z, z, beta=0.1)
    assert better < loss
