"""muP (model.parametrization=mup): the coordinate check, and the per-layer learning rates reaching
the weights through the training loop."""

import pytest
import torch

from scalelab.errors import UserError
from scalelab.model.config import ModelConfig, MoEConfig
from scalelab.model.mup import coord_check, width_slope
from scalelab.model.transformer import Transformer
from scalelab.train.loop import train
from scalelab.train.runner import load_run

BASE = ModelConfig(d_model=64, n_layers=2, n_heads=4, head_dim=16, vocab_size=256, max_seq_len=32)
WIDTHS = [64, 128, 256, 512]


@pytest.fixture(scope="module")
def coords():
    return {p: coord_check(BASE, WIDTHS, p, lr=1e-2, steps=4) for p in ("sp", "mup")}


def test_coordinates_grow_with_width_under_sp_and_stay_flat_under_mup(coords):
    """microsoft/mup's coord check: after a few Adam steps at one lr, SP's hidden activations grow
    roughly like width^2 here and its logits like width; muP's stay within a factor ~2 from 64 to
    512 wide (|slope| of log size against log width < 0.5)."""
    sp = {k: width_slope(WIDTHS, v[-1]) for k, v in coords["sp"]["act"].items()}
    mup = {k: width_slope(WIDTHS, v[-1]) for k, v in coords["mup"]["act"].items()}
    for name in ("attn_out", "mlp_out", "block_out"):
        assert sp[name] > 1.0, (name, sp)
    assert sp["logits"] > 0.5, sp
    assert all(abs(s) < 0.5 for s in mup.values()), mup
    # and at the base width the two are the same model
    for name in coords["sp"]["act"]:
        assert coords["sp"]["act"][name][:, 0] == pytest.approx(coords["mup"]["act"][name][:, 0], rel=1e-5)


def test_training_loop_applies_mup_learning_rates(small_cfg, small_dataset, tmp_path):
    """Adam's first step moves every weight by ~lr (its update is lr * g / |g|): under muP at m = 4 the
    hidden matrices move by lr / 4 and the embedding by lr, through `train`'s own schedule."""
    moved = {}
    for par in ("sp", "mup"):
        cfg = small_cfg("train.max_steps=1", "optim.weight_decay=0", "optim.lr=1e-2", f"model.parametrization={par}",
                        "model.mup_base_width=16")
        torch.manual_seed(cfg.train.seed)
        init = Transformer(cfg.model)
        s = train(cfg, tmp_path / par, dataset=small_dataset)
        model, _, _ = load_run(tmp_path / par)
        lr = s["final"]["lr"]
        moved[par] = {n: float((p - q).detach().abs().max()) / lr for (n, p), q in
                      zip(model.named_parameters(), init.parameters()) if n in ("tok_emb.weight",
                                                                                "layers.0.attn.wq.weight")}
    assert moved["sp"]["tok_emb.weight"] == pytest.approx(1.0, rel=0.02)
    assert moved["sp"]["layers.0.attn.wq.weight"] == pytest.approx(1.0, rel=0.02)
    assert moved["mup"]["tok_emb.weight"] == pytest.approx(1.0, rel=0.02)
    assert moved["mup"]["layers.0.attn.wq.weight"] == pytest.approx(0.25, rel=0.02)


def test_mup_refusals():
    with pytest.raises(UserError, match="parametrization must be sp or mup"):
        ModelConfig(parametrization="ntk").validate()
    with pytest.raises(UserError, match="dense models"):
        ModelConfig(parametrization="mup", moe=MoEConfig()).validate()
    from scalelab.model.hf import config_to_hf

    with pytest.raises(UserError, match="export a model trained with sp"):
        config_to_hf(ModelConfig(d_model=128, parametrization="mup", mup_base_width=64))
