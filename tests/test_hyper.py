"""Hyperparameter laws (laws/hyper.py) and the planner's heuristics (ladder/heuristics.py, `--seeds`)."""

import json
import math

import numpy as np
import pytest

from conftest import run_cli
from scalelab.errors import UserError
from scalelab.ladder.plan import LadderSpec, plan
from scalelab.laws.hyper import STEPLAW_BATCH, STEPLAW_LR, fit_power_law, grid_optimum, load_steplaw, refit_steplaw


def test_grid_optimum_finds_a_parabola_vertex_between_grid_points():
    lrs = 2.0 ** np.arange(-10, -3)
    true = 2 ** -6.6  # between grid points
    losses = 3.0 + 0.2 * (np.log(lrs) - math.log(true)) ** 2
    o = grid_optimum(lrs, losses)
    assert o["value"] == pytest.approx(true, rel=1e-6) and not o["at_edge"]
    losses[-1] = math.nan  # a diverged run is worse than any finite loss, not an error
    assert grid_optimum(lrs, losses)["value"] == pytest.approx(true, rel=1e-6)
    edge = grid_optimum(lrs, 3.0 + 0.01 * np.log(lrs))  # still falling at the smallest lr
    assert edge["at_edge"] and edge["value"] == lrs[0]


def test_power_law_fit_recovers_known_exponents():
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(5, 9, 40)
    D = 10 ** rng.uniform(8, 11, 40)
    y = 2.0 * N ** -0.7 * D ** 0.3 * np.exp(rng.normal(0, 0.05, 40))
    law = fit_power_law(y, N=N, D=D)
    assert law.exps["N"] == pytest.approx(-0.7, abs=0.03) and law.exps["D"] == pytest.approx(0.3, abs=0.03)
    assert law.coef == pytest.approx(2.0, rel=0.5) and law.rmse_log == pytest.approx(0.05, abs=0.02)


def test_the_public_steplaw_grid_refits_near_its_published_exponents(public):
    """StepLaw's released grid (17 cells once the D_suspect rows are out): each cell's argmin, refitted,
    lands within 0.15 of the published exponents (-0.713, +0.307; batch +0.571)."""
    public("steplaw-grid")
    r = refit_steplaw(load_steplaw())
    assert r["cells"] == 17
    assert r["lr"]["exps"]["N"] == pytest.approx(STEPLAW_LR["n_exp"], abs=0.15)
    assert r["lr"]["exps"]["D"] == pytest.approx(STEPLAW_LR["d_exp"], abs=0.15)
    assert r["batch"]["exps"]["D"] == pytest.approx(STEPLAW_BATCH["d_exp"], abs=0.15)


SPEC = dict(budgets=(1e12, 3e12), sizes_per_budget=3, min_width=32)


def _shapes(rungs):
    return [(r.name, r.model.d_model, r.model.n_layers, r.D) for r in rungs]


def test_heuristics_keep_the_shapes_and_change_lr_and_batch(tmp_path):
    law = tmp_path / "lr_law.json"
    law.write_text(json.dumps({"lr_law": {"coef": 1.0, "n_exp": -1.0, "d_exp": 0.0, "n": "non_embedding"}}))
    plans = {h: plan(LadderSpec(**SPEC, heuristics=h)) for h in ("deepseek", "steplaw", "mup", f"fitted:{law}")}
    base = plans["deepseek"]
    for h, rungs in plans.items():
        same = [(d, L) for _, d, L, _ in _shapes(rungs)] == [(d, L) for _, d, L, _ in _shapes(base)]
        assert same and (h == "mup" or [r.name for r in rungs] == [r.name for r in base]), h
        assert all(r.record()["lr_rule"] == h.split(":")[0] for r in rungs)
        assert all(r.record()["config"]["optim"]["lr"] == r.config.optim.lr for r in rungs)
    assert [r.config.optim.lr for r in plans["steplaw"]] != [r.config.optim.lr for r in base]
    assert [r.config.train.batch_size for r in plans["steplaw"]] != [r.config.train.batch_size for r in base]
    mup = plans["mup"]
    assert len({r.config.optim.lr for r in mup}) == 1  # one lr, tuned once, at every width
    assert all(r.model.parametrization == "mup" and r.model.mup_base_width == 32 for r in mup)
    # muP rungs untie the readout (the lab's finding): vocab x d_model more parameters at each width
    assert [r.N - b.N for r, b in zip(mup, base)] == [r.model.vocab_size * r.model.d_model for r in mup]
    assert all(r.model.parametrization == "sp" for r in base)
    fitted = plans[f"fitted:{law}"]
    assert [r.config.optim.lr * r.N_non_embedding for r in fitted] == pytest.approx([1.0] * len(fitted))
    assert [r.config.train.batch_size for r in fitted] == [r.config.train.batch_size for r in base]


def test_seeds_repeat_each_budgets_centre_rung():
    rungs = plan(LadderSpec(**SPEC, seeds=3))
    reps = [r for r in rungs if r.replica_of]
    assert len(reps) == 2 * len(SPEC["budgets"])
    for r in reps:
        orig = next(o for o in rungs if o.name == r.replica_of)
        assert r.config.train.seed != orig.config.train.seed
        assert r.config.model == orig.config.model and r.D == orig.D and r.config.optim == orig.config.optim
    assert len({r.config.train.seed for r in reps}) == 2


def test_bad_heuristics_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="ladder.heuristics must be one of"):
        plan(LadderSpec(**SPEC, heuristics="bogus"))
    with pytest.raises(UserError, match="cannot read an lr law"):
        plan(LadderSpec(**SPEC, heuristics=f"fitted:{tmp_path / 'none.json'}"))
    with pytest.raises(UserError, match="seeds"):
        plan(LadderSpec(**SPEC, seeds=2, strategy="wsd"))
    r = run_cli("ladder", "plan", "--budgets", "1e12", "--heuristics", "fitted:/nowhere.json")
    assert r.returncode == 2 and "ladder.heuristics=fitted:/nowhere.json" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
