"""Curve fits as users make them (#37): a tidy curve table, `fit --curves`, `predict --schedule`, the schedule
syntax against the trainer's own schedule, and the ladder's curve export."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from scalelab.config import ScheduleConfig
from scalelab.errors import UserError
from scalelab.laws.curve_law import CurveMethod, FittedCurves
from scalelab.laws.curve_table import read_curves
from scalelab.laws.curves import Curve, FittedCurveLaw
from scalelab.laws.schedule_spec import schedule_lr
from scalelab.train.schedule import lr_at

PEAK, TPS = 1e-3, 4096.0


def truth_at(n: float) -> FittedCurveLaw:
    """A momentum law whose parameters follow N exactly as `trend_params` extrapolates them."""
    return FittedCurveLaw("momentum", {"L0": 6.0 - 0.2 * np.log(n), "A": 4.0 * n ** -0.15, "alpha": 0.5,
                                       "C": 5.0, "lam": 0.99})


def synthetic_table(sizes=(1e6, 4e6), noise=0.001, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for spec, steps in (("cosine:warmup=50", 1000), ("constant:warmup=50", 1000), ("wsd:decay=0.3,warmup=50", 600)):
            lr = schedule_lr(spec, steps, PEAK)
            logged = np.arange(25, steps + 1, 25)  # one point logged mid-warmup (step 25): left out of the fit
            loss = truth_at(n).predict(Curve(spec, lr, logged, np.ones(len(logged)))) * \
                np.exp(noise * rng.standard_normal(len(logged)))
            rows += [{"run": f"{n:.0e}-{spec}", "N": n, "step": s, "tokens": s * TPS, "lr": lr[s], "loss": v}
                     for s, v in zip(logged, loss)]
    return pd.DataFrame(rows)


def test_the_schedule_syntax_gives_the_trainers_own_rates():
    for spec, cfg in (("cosine:warmup=40,min=0.1", ScheduleConfig("cosine", warmup_steps=40, min_lr_ratio=0.1)),
                      ("wsd:decay=0.25,warmup=40,min=0", ScheduleConfig("wsd", 40, min_lr_ratio=0, decay_frac=0.25)),
                      ("wsd:decay_start=300,warmup=40", ScheduleConfig("wsd", 40, decay_start_step=300)),
                      ("constant:warmup=0.1", ScheduleConfig("constant", 40))):
        got = schedule_lr(spec, 400, PEAK)
        want = [lr_at(s, 400, PEAK, cfg) for s in range(400)]
        assert got[:400] == pytest.approx(want, rel=1e-12), spec
    two = schedule_lr("two-stage:at=0.5,ratio=0.3", 100, PEAK)
    assert two[49] == PEAK and two[50] == pytest.approx(0.3 * PEAK)
    sqrt = schedule_lr("wsd:decay=0.5,shape=sqrt,min=0", 100, PEAK)
    linear = schedule_lr("wsd:decay=0.5,shape=linear,min=0", 100, PEAK)
    assert sqrt[99] == linear[99] == 0.0 and sqrt[49] == linear[49] == PEAK
    assert sqrt[75] == pytest.approx(PEAK * (1 - np.sqrt(26 / 50)))  # 1 - sqrt: below linear mid-cooldown
    assert sqrt[75] < linear[75]
    for bad, msg in (("cosin", "unknown kind"), ("wsd:shape=cubic", "shape must be"), ("wsd:decay=x", "a number"),
                     ("cosine:decay=0.2", "cosine takes")):
        with pytest.raises(UserError, match=msg):
            schedule_lr(bad, 100, PEAK)


def test_a_curve_table_reads_rates_warmup_and_tokens(tmp_path):
    t = read_curves(synthetic_table())
    assert sorted(t.by_size) == [1e6, 4e6] and all(len(cs) == 3 for cs in t.by_size.values())
    c = t.by_size[1e6][0]
    assert c.warmup_steps == 50 and c.steps.min() == 50  # the point logged at step 25 was in warmup
    assert any("during warmup" in n for n in t.notes)
    assert t.tokens_per_step[c.name] == TPS and t.peak_lr == pytest.approx(PEAK)
    df = synthetic_table()
    df.loc[df["run"] == df["run"].iloc[0], "holdout"] = True
    assert sum(len(cs) for cs in read_curves(df).by_size.values()) == 5
    with pytest.raises(UserError, match="missing column"):
        read_curves(df.drop(columns="loss"))
    with pytest.raises(UserError, match="--schedules"):
        read_curves(df.drop(columns="lr"))
    sched = tmp_path / "s.csv"  # the same rates at every step, from a separate file
    pd.DataFrame([{"run": r, "step": s, "lr": v} for r in df["run"].unique()
                  for s, v in enumerate(schedule_lr("constant:warmup=50", 1000, PEAK))]).to_csv(sched, index=False)
    assert read_curves(df.drop(columns="lr"), sched).peak_lr == pytest.approx(PEAK)


def test_curves_of_two_sizes_forecast_a_bigger_models_unseen_schedule(tmp_path):
    fitted = CurveMethod("momentum").fit(read_curves(synthetic_table()))
    fitted.save(tmp_path / "fit.json")
    loaded = FittedCurves.load(tmp_path / "fit.json")
    lr = schedule_lr("wsd:decay=0.2,shape=sqrt,warmup=50", 2000, PEAK)  # unseen shape, 2x the steps, 4x the size
    out = loaded.forecast(16e6, lr, TPS, 0.9)
    true = truth_at(16e6).predict(Curve("t", lr, np.array([2000]), np.ones(1), 49))[0]
    f = out["final"]
    assert f["loss"] == pytest.approx(true, rel=0.01) and f["loss_lo"] < true < f["loss_hi"]
    assert out["size_extrapolation_decades"] == pytest.approx(np.log10(4))
    assert out["curve"][-1]["step"] == 2000 and out["curve"][-1]["tokens"] == 2000 * TPS
    assert out["warnings"] == []  # 2x the fitted steps, the fitted peak rate: inside what the back-test measured
    far = loaded.forecast(16e6, schedule_lr("cosine:warmup=50", 2500, 0.5 * PEAK), TPS, 0.9)["warnings"]
    assert len(far) == 2 and "2.5x the steps" in far[0] and "peaks at lr 0.0005" in far[1]
    one = CurveMethod("momentum").fit(read_curves(synthetic_table(sizes=(1e6,))))
    with pytest.raises(UserError, match="two sizes or more"):
        one.forecast(4e6, lr, TPS)
    assert one.forecast(1e6, lr, TPS)["size_extrapolation_decades"] == 0.0


def test_fit_curves_then_predict_a_schedule_from_the_command_line(tmp_path):
    csv, fit = tmp_path / "curves.csv", tmp_path / "fit.json"
    synthetic_table().to_csv(csv, index=False)
    r = run_cli("fit", csv, "--curves", "--method", "momentum", "--out", fit)
    assert r.returncode == 0, r.stderr
    r = run_cli("predict", fit, "--params", "4e6", "--schedule", "wsd:decay=0.2", "--steps", "1500",
                "--tokens-per-step", str(TPS), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["final"]) == {"loss", "loss_lo", "loss_hi", "level"}
    assert set(out["curve"][0]) == {"step", "tokens", "loss", "loss_lo", "loss_hi"}
    lr = schedule_lr("wsd:decay=0.2", 1500, PEAK, 49)
    true = truth_at(4e6).predict(Curve("t", lr, np.array([1500]), np.ones(1), 49))[0]
    assert out["final"]["loss"] == pytest.approx(true, rel=0.005)
    r = run_cli("predict", fit, "--params", "4e6", "--schedule", "wsd:shape=cubic", "--steps", "10")
    assert r.returncode == 2 and "shape must be" in r.stderr and "Traceback" not in r.stderr


def test_a_joint_law_recovers_its_loss_floor_in_n_and_forecasts_a_bigger_model():
    """Curves of three sizes drawn from a joint momentum law (L0(N) = E + A_N N^-alpha_N, the rest shared): the
    joint fit finds E, alpha_N and forecasts a 4x bigger model's unseen schedule."""
    from scalelab.laws.curves import JointCurveLaw, fit_joint

    truth = JointCurveLaw("momentum", {"E": 1.9, "log_A_N": np.log(40.0), "alpha_N": 0.3, "A": 0.4, "alpha": 0.5,
                                       "C": 5.0, "lam": 0.99})
    rng = np.random.default_rng(1)
    by_size = {}
    for n in (1e6, 3e6, 1e7):
        law = FittedCurveLaw("momentum", truth.at(n))
        for spec in ("cosine:warmup=50", "wsd:decay=0.3,warmup=50"):
            lr = schedule_lr(spec, 800, PEAK)
            steps = np.arange(60, 801, 20)
            clean = law.predict(Curve(spec, lr, steps, np.ones(len(steps)), 49))
            by_size.setdefault(n, []).append(Curve(spec, lr, steps, clean * np.exp(5e-4 * rng.standard_normal(
                len(steps))), 49))
    got = fit_joint(by_size, "momentum")
    assert got.params["E"] == pytest.approx(1.9, abs=0.1) and got.params["alpha_N"] == pytest.approx(0.3, rel=0.25)
    lr = schedule_lr("wsd:decay=0.2,shape=sqrt,warmup=50", 1600, PEAK)
    c = Curve("t", lr, np.array([1600]), np.ones(1), 49)
    want = FittedCurveLaw("momentum", truth.at(4e7)).predict(c)[0]
    assert FittedCurveLaw("momentum", got.at(4e7)).predict(c)[0] == pytest.approx(want, rel=0.01)
    with pytest.raises(UserError, match="3 sizes or more"):
        CurveMethod("momentum", "joint").fit(read_curves(synthetic_table()))
