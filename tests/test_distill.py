"""Knowledge distillation: the loss, a teacher's signal actually training the student, exact resume."""

import math

import pytest
import torch
import torch.nn.functional as F

from scalelab.errors import UserError
from scalelab.train.distill import distillation_loss
from scalelab.train.hooks import StopAt
from scalelab.train.loop import train
from scalelab.train.rundir import RunDir


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0])
def test_a_one_hot_teacher_gives_the_cross_entropy(weight, temperature):
    """KL(onehot || p) = -log p(target): with a one-hot teacher the loss and its gradient are
    F.cross_entropy's, whatever the mixing weight."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g, requires_grad=True)  # (B, T, V)
    targets = torch.randint(0, 11, (2, 5), generator=g)
    teacher = F.one_hot(targets, 11).float() * 1e4  # softmax: exactly one-hot
    loss, ce = distillation_loss(logits, teacher, targets, temperature, weight)
    ref = F.cross_entropy(logits.view(-1, 11), targets.view(-1))
    assert torch.allclose(loss, ref, atol=1e-6) and torch.allclose(ce, ref)
    (grad,) = torch.autograd.grad(loss, logits)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_the_soft_term_vanishes_at_the_teacher_and_scales_gradients_by_tau_squared():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(3, 4, 9, generator=g)
    s = t.clone().requires_grad_(True)
    y = torch.randint(0, 9, (3, 4), generator=g)
    loss, _ = distillation_loss(s, t, y, temperature=2.0, weight=1.0)
    assert abs(loss.item()) < 1e-6  # a student equal to its teacher: KL = 0, no gradient
    assert torch.autograd.grad(loss, s)[0].abs().max() < 1e-6
    # Hinton et al.: at high temperature the soft gradient tends to (z_s - z_t) / (V * B * T) (centred logits),
    # the tau^2 factor cancelling the 1 / tau^2 of the softened distributions
    t = 0.1 * t
    s2 = (t + 0.01 * torch.randn(3, 4, 9, generator=g)).requires_grad_(True)
    loss, _ = distillation_loss(s2, t, y, temperature=30.0, weight=1.0)
    (grad,) = torch.autograd.grad(loss, s2)
    d = (s2 - t).detach()
    want = (d - d.mean(-1, keepdim=True)) / (9 * 12)
    assert torch.allclose(grad, want, rtol=0.02, atol=1e-7)


@pytest.fixture(scope="module")
def teacher(small_cfg, small_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    train(small_cfg("train.max_steps=120", "optim.lr=3e-3", "train.eval_every=1000"), path, dataset=small_dataset)
    return path


def test_a_trained_teachers_distribution_alone_trains_the_student(small_cfg, small_dataset, teacher, tmp_path):
    """Pure distillation (weight 1: no data term): from a trained teacher the student learns the language;
    from an untrained one (a near-uniform distribution) it does not, though both see the same tokens."""
    common = ["train.max_steps=60", "optim.lr=3e-3", "train.eval_every=1000", "model.d_model=32", "model.n_heads=2",
              "distill.weight=1.0", "distill.temperature=1.0"]
    untrained = tmp_path / "untrained"
    train(small_cfg("train.max_steps=1", "optim.lr=1e-9"), untrained, dataset=small_dataset)
    good = train(small_cfg(*common, f"distill.teacher={teacher}"), tmp_path / "a", dataset=small_dataset)
    bad = train(small_cfg(*common, f"distill.teacher={untrained}"), tmp_path / "b", dataset=small_dataset)
    ln_v = math.log(512)
    assert good["final"]["val_loss"] < ln_v - 0.8, good["final"]  # 5.24 here
    assert bad["final"]["val_loss"] > ln_v - 0.1, bad["final"]  # 6.22: the teacher's near-uniform guess
    teacher_cfg = RunDir(teacher).read_config()
    assert good["teacher_flops"] == teacher_cfg.model.forward_flops_per_token(64) * good["tokens"] > 0
    assert good["flops"] < good["teacher_flops"] * 3  # the student is smaller; its own FLOPs apart


def test_a_distilled_run_resumes_exactly(small_cfg, small_dataset, teacher, tmp_path):
    cfg = small_cfg("train.max_steps=16", "train.eval_every=8", "train.log_every=4", f"distill.teacher={teacher}",
                    "distill.temperature=2.0")
    train(cfg, tmp_path / "full", dataset=small_dataset)
    train(cfg, tmp_path / "part", dataset=small_dataset, hooks=StopAt(8))
    train(cfg, tmp_path / "part", dataset=small_dataset, resume=True)
    a, b = (RunDir(tmp_path / n).read_metrics() for n in ("full", "part"))
    assert [r.train_loss for r in a] == [r.train_loss for r in b] and a[-1].val_loss == b[-1].val_loss


def test_a_teacher_with_another_tokenizer_or_none_is_refused(small_cfg, small_dataset, teacher, tmp_path):
    with pytest.raises(UserError, match="distill.teacher: .* not a scalelab run"):
        train(small_cfg(f"distill.teacher={tmp_path / 'nothing'}", "train.max_steps=2"), tmp_path / "n")
    import shutil

    from scalelab.data.chars import char_tokenizer

    other = tmp_path / "other"  # the same teacher with another tokenizer beside it
    shutil.copytree(teacher, other)
    char_tokenizer().save(str(RunDir(other).tokenizer_file))
    with pytest.raises(UserError, match="another tokenizer"):
        train(small_cfg(f"distill.teacher={other}", "train.max_steps=2"), tmp_path / "s", dataset=small_dataset)
    with pytest.raises(UserError, match="distill.weight"):
        small_cfg("distill.weight=1.5")
