"""Loss-curve laws: the loss at every step of a run under its learning-rate schedule (#37, first part).

Two published forms, each fitted to whole curves given the exact per-step learning rate:

1. **Multi-Power Law** (Luo et al. 2025, arXiv 2503.12811, eq. 3): with eta_0 the peak rate at the end of
   warmup, eta_k the rate of step k after it, S_k(t) = sum_{tau=k..t} eta_tau and S_W the warmup's area,

       L(t) = L0 + A (S_1(t) + S_W)^(-alpha) - LD(t),
       LD(t) = B sum_{k=1..t} (eta_{k-1} - eta_k) G(eta_k^(-gamma) S_k(t)),   G(x) = 1 - (C x + 1)^(-beta).

2. **Annealing-momentum law** (Tissue et al. 2024, arXiv 2408.11029, eq. 5):

       L(s) = L0 + A S1^(-alpha) - C S2,   S1 = sum_{i<=s} eta_i,   S2 = sum_{i<=s} m_i,
       m_i = lam m_{i-1} + (eta_{i-1} - eta_i).

3. **multi-power-q** and **momentum-q** (scalelab's, chosen on the 25M and 100M public curves, 400M kept
   untouched: LOG 2026-12-06, session 3): the same laws with the progress sum S1 (warmup included) taken over
   eta_0 (eta_tau / eta_0)^q, so that a step's progress need not be proportional to its rate (the fits give
   q = 0.57-0.89, but 1.19 for multi-power-q at 25M: mostly, a low rate makes more progress per unit of rate
   than the sum of rates credits); the
   multi-power one with beta = 1, G(x) = C x / (1 + C x), and eta_k measured in units of the peak. They
   halve the published laws' worst final-step error on the unseen WSD cooldowns.

All are fitted by least squares on relative residuals (scipy's trust-region `least_squares`, from a few
starts). `mpl_schedule` rebuilds the Multi-Power Law repository's per-step schedules from their names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import lfilter

from scalelab import datasets
from scalelab.errors import UserError
from scalelab.laws.intervals import z_of


@dataclass
class Curve:
    """One run: ``lr[s]`` the learning rate of step s (s = 0..T, warmup included), the loss at ``steps``."""

    name: str
    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    warmup_steps: int = 0

    def __post_init__(self):
        self.lr, self.steps, self.loss = (np.asarray(x, float) for x in (self.lr, self.steps, self.loss))
        self.steps = self.steps.astype(int)
        if len(self.steps) != len(self.loss) or len(self.steps) == 0:
            raise UserError(f"curve {self.name}: steps and losses must be non-empty and of one length")
        if self.steps.max() >= len(self.lr) or self.steps.min() < self.warmup_steps:
            raise UserError(f"curve {self.name}: its steps must lie after warmup ({self.warmup_steps}) and within "
                            f"its {len(self.lr)}-step schedule")
        if not np.all(np.isfinite(self.loss)) or np.any(self.loss <= 0):
            raise UserError(f"curve {self.name}: losses must be positive finite numbers")


# ---- the Multi-Power Law's public schedules -----------------------------------------------------------

MPL_PEAK, MPL_MIN, MPL_WARMUP = 3e-4, 3e-5, 2160


def mpl_schedule(name: str, last_step: int) -> np.ndarray:
    """The per-step learning rate of the Multi-Power Law repository's schedule ``name`` (its
    src/lr_schedules.py, as the dataset's SOURCES describe it): linear warmup to 3e-4 over 2,160 steps, then
    cosine_T (to 3e-5 at T), constant_T, wsd_D_T (geometric decay from D to 3e-5 at T), wsdld_D_T (linear),
    wsdcon_X (3e-4 to step 8,000, then X e-5)."""
    s = np.arange(last_step + 1, dtype=float)
    lr = np.full(len(s), MPL_PEAK)
    if m := re.fullmatch(r"cosine_(\d+)", name):
        x = np.clip((s - MPL_WARMUP) / (int(m.group(1)) - MPL_WARMUP), 0, 1)
        lr = MPL_MIN + (MPL_PEAK - MPL_MIN) * 0.5 * (1 + np.cos(np.pi * x))
    elif m := re.fullmatch(r"wsd(ld)?_(\d+)_(\d+)", name):
        x = np.clip((s - int(m.group(2))) / (int(m.group(3)) - int(m.group(2))), 0, 1)
        lr = MPL_PEAK + (MPL_MIN - MPL_PEAK) * x if m.group(1) else MPL_PEAK ** (1 - x) * MPL_MIN ** x
    elif m := re.fullmatch(r"wsdcon_(\d+)", name):
        lr = np.where(s < 8000, MPL_PEAK, int(m.group(1)) * 1e-5)
    elif not re.fullmatch(r"constant_\d+", name):
        raise UserError(f"unknown Multi-Power Law schedule {name!r}")
    return np.where(s < MPL_WARMUP, MPL_PEAK * s / MPL_WARMUP, lr)


def warmup_end(lr: np.ndarray) -> int:
    """The first step whose rate reaches the schedule's peak: where the laws' post-warmup sums start."""
    return int(np.argmax(lr >= lr.max() * (1 - 1e-9)))


# ---- the laws ----------------------------------------------------------------------------------------------

def _change_blocks(c: Curve, max_blocks: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The steps k where the rate changes, with their drops d_k = eta_{k-1} - eta_k, grouped into at most
    about ``max_blocks`` blocks that never straddle a logged step: each block acts as one drop (the sum of
    its drops) at its drop-weighted mean step. Exact when ``max_blocks`` is None; with 512 blocks the
    public curves' predictions move by under 2e-5 relative and a fit runs ~10x faster."""
    e = c.lr[c.warmup_steps:]
    d = e[:-1] - e[1:]
    ks = np.flatnonzero(d) + 1  # 1-based step after warmup
    if max_blocks is None or len(ks) <= max_blocks:
        return ks.astype(float), d[ks - 1]
    t = c.steps - c.warmup_steps
    edges = np.union1d(np.linspace(0, len(e), max_blocks + 1).astype(int), t + 1)  # a block ends at each logged step
    block = np.searchsorted(edges, ks, side="right")
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    dk = d[ks - 1]
    drop = np.add.reduceat(dk, starts)
    safe = np.where(drop == 0, 1.0, drop)
    mean_k = np.where(drop == 0, ks[starts], np.add.reduceat(dk * ks, starts) / safe)
    return mean_k, drop


def _progress_rates(lr: np.ndarray, q: float) -> np.ndarray:
    """eta_0 (eta_s / eta_0)^q for every step s (eta_0 the peak): the rates themselves when q = 1; their
    running sum is the laws' S1."""
    peak = lr.max()
    return lr if q == 1.0 else peak * (np.maximum(lr, 0.0) / peak) ** q


def _multi_power(L0, A, alpha, B, C, beta, gamma, c: Curve, q: float = 1.0, eta_unit: float = 1.0,
                 chunk: int = 64, max_blocks: int | None = 512) -> np.ndarray:
    """The Multi-Power Law's loss at ``c.steps``; ``q`` (progress exponent) and ``eta_unit`` (the rate the
    eta_k^-gamma factor is measured in) generalise it for the "multi-power-q" form: 1 and 1 are the paper's."""
    e = c.lr[c.warmup_steps:]  # e[0] = the peak, e[k] = step k after warmup
    v = _progress_rates(c.lr, q)
    progress = np.cumsum(v) - v[c.warmup_steps]  # S_W + S_1(t): the peak step e[0] itself is not summed
    cs = np.concatenate([[0.0], np.cumsum(e[1:])])  # cs[j] = sum_{i=1..j} e[i]
    k, drop = _change_blocks(c, max_blocks)  # only the steps where the rate changes contribute
    grid = np.arange(len(cs), dtype=float)
    cs_before = np.interp(k - 1, grid, cs)  # S_k(t) = cs[t] - cs[k-1]
    eta_k = np.maximum(np.interp(k, grid, e), 1e-12) / eta_unit  # a rate of 0: G = 1, the drop whole
    t = c.steps - c.warmup_steps
    out = L0 + A * progress[c.steps] ** (-alpha)
    for i in range(0, len(t), chunk):
        tt = t[i:i + chunk, None]
        mask = k[None, :] <= tt
        sk = np.where(mask, cs[tt] - cs_before[None, :], 0.0)
        g = 1.0 - (C * eta_k[None, :] ** (-gamma) * sk + 1.0) ** (-beta)
        out[i:i + chunk] -= B * (np.where(mask, g, 0.0) * drop[None, :]).sum(1)
    return out


def _mpl_predict(p: np.ndarray, c: Curve) -> np.ndarray:
    return _multi_power(*p, c)


def _mpl_q_predict(p: np.ndarray, c: Curve) -> np.ndarray:
    L0, A, alpha, B, C, gamma, q = p
    return _multi_power(L0, A, alpha, B, C, 1.0, gamma, c, q=q, eta_unit=c.lr.max())


def _momentum_predict(p: np.ndarray, c: Curve) -> np.ndarray:
    L0, A, alpha, C, lam, *q = p
    s1 = np.cumsum(_progress_rates(c.lr, q[0] if q else 1.0))
    m = lfilter([1.0], [1.0, -lam], np.concatenate([[0.0], c.lr[:-1] - c.lr[1:]]))  # warmup included: LOG
    s2 = np.cumsum(m)
    return L0 + A * s1[c.steps] ** (-alpha) - C * s2[c.steps]


@dataclass(frozen=True)
class CurveForm:
    name: str
    params: tuple[str, ...]
    predict: object  # (params, Curve) -> losses at its steps
    starts: tuple[tuple[float, ...], ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


_MPL_STARTS = ((2.5, 0.5, 0.5, 400.0, 2.0, 0.5, 0.5), (3.0, 1.0, 0.3, 100.0, 1.0, 0.6, 0.6),
               (2.0, 2.0, 0.2, 1000.0, 5.0, 0.4, 0.4))
_MOM_STARTS = ((2.5, 1.0, 0.5, 300.0, 0.999), (3.0, 0.5, 0.3, 1000.0, 0.99), (2.0, 2.0, 0.2, 100.0, 0.9995))
FORMS = {f.name: f for f in (
    CurveForm("multi-power", ("L0", "A", "alpha", "B", "C", "beta", "gamma"), _mpl_predict, starts=_MPL_STARTS,
              lower=(0.0, 1e-6, 1e-3, 1e-3, 1e-6, 1e-3, 0.0), upper=(10.0, 1e3, 3.0, 1e5, 1e4, 5.0, 2.0)),
    CurveForm("momentum", ("L0", "A", "alpha", "C", "lam"), _momentum_predict, starts=_MOM_STARTS,
              lower=(0.0, 1e-6, 1e-3, 0.0, 0.0), upper=(10.0, 1e3, 3.0, 1e6, 0.99999)),
    # the two laws with progress sum_tau eta_0 (eta_tau / eta_0)^q (q = 1: the papers'); the multi-power one
    # with beta = 1, G(x) = Cx / (1 + Cx), and eta_k in units of the peak (LOG 2026-12-06, session 3)
    CurveForm("multi-power-q", ("L0", "A", "alpha", "B", "C", "gamma", "q"), _mpl_q_predict,
              starts=tuple((*s[:5], s[6], q) for s, q in zip(_MPL_STARTS, (0.8, 1.0, 0.6))),
              lower=(0.0, 1e-6, 1e-3, 1e-3, 1e-6, 0.0, 0.2), upper=(10.0, 1e3, 3.0, 1e5, 1e4, 3.0, 2.0)),
    CurveForm("momentum-q", ("L0", "A", "alpha", "C", "lam", "q"), _momentum_predict,
              starts=tuple((*s, 0.8) for s in _MOM_STARTS),
              lower=(0.0, 1e-6, 1e-3, 0.0, 0.0, 0.2), upper=(10.0, 1e3, 3.0, 1e6, 0.99999, 2.0)),
)}


@dataclass
class FittedCurveLaw:
    form: str
    params: dict
    info: dict = field(default_factory=dict)

    def predict(self, curve: Curve) -> np.ndarray:
        f = FORMS[self.form]
        return f.predict(np.array([self.params[k] for k in f.params]), curve)


def fit_curves(curves: list[Curve], form: str = "multi-power") -> FittedCurveLaw:
    """Least squares on the relative residuals of every point of every curve, from each of the form's
    starts; the best fit wins."""
    if form not in FORMS:
        raise UserError(f"curve form must be one of {sorted(FORMS)}, got {form!r}")
    f = FORMS[form]
    if sum(len(c.steps) for c in curves) <= len(f.params):
        raise UserError(f"the {form} law has {len(f.params)} parameters; give more curve points than that")

    def residuals(p):
        return np.concatenate([f.predict(p, c) / c.loss - 1.0 for c in curves])

    best = None
    for x0 in f.starts:
        r = least_squares(residuals, x0, bounds=(f.lower, f.upper), x_scale="jac", max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    rmse = float(np.sqrt(np.mean(best.fun ** 2)))
    return FittedCurveLaw(form, dict(zip(f.params, map(float, best.x))),
                          {"rmse_relative": rmse, "curves": [c.name for c in curves],
                           "points": int(sum(len(c.steps) for c in curves))})


# ---- one law for every size -------------------------------------------------------------------------------

@dataclass
class JointCurveLaw:
    """A curve law whose loss floor follows N, L0(N) = E + A_N N^-alpha_N, every other parameter shared by
    all sizes (as Chinchilla's data term B / D^beta is): the schedule's effect is measured once on every
    curve, and the size's effect once, on the floors."""

    form: str
    params: dict
    info: dict = field(default_factory=dict)

    def at(self, n: float) -> dict:
        p = dict(self.params)
        e, log_an, alpha_n = p.pop("E"), p.pop("log_A_N"), p.pop("alpha_N")
        return {"L0": e + float(np.exp(log_an - alpha_n * np.log(n))), **p}


def fit_joint(by_size: dict[float, list[Curve]], form: str = "multi-power") -> JointCurveLaw:
    """Least squares on the relative residuals of every point of every size at once (from a per-size
    start where one fits, else the form's starts)."""
    f = FORMS[form]
    shared = [k for k in f.params if k != "L0"]
    ns = np.array(sorted(by_size))
    lmin = min(float(c.loss.min()) for cs in by_size.values() for c in cs)

    def law(theta):
        return JointCurveLaw(form, dict(zip(("E", "log_A_N", "alpha_N", *shared), theta)))

    def residuals(theta):
        j = law(theta)
        return np.concatenate([f.predict(np.array([j.at(n)[k] for k in f.params]), c) / c.loss - 1.0
                               for n in ns for c in by_size[n]])

    lower = (0.0, -20.0, 1e-3, *[f.lower[f.params.index(k)] for k in shared])
    upper = (10.0, 40.0, 2.0, *[f.upper[f.params.index(k)] for k in shared])
    best = None
    for x0 in f.starts:
        for e_frac, alpha_n in ((0.6, 0.3), (0.9, 0.6)):
            theta0 = (e_frac * lmin, np.log(0.5 * lmin) + alpha_n * np.log(ns.min()), alpha_n,
                      *[x0[f.params.index(k)] for k in shared])
            r = least_squares(residuals, np.clip(theta0, lower, upper), bounds=(lower, upper), x_scale="jac",
                              max_nfev=600)
            if best is None or r.cost < best.cost:
                best = r
    j = law(best.x)
    j.params = {k: float(v) for k, v in j.params.items()}
    j.info = {"rmse_relative": float(np.sqrt(np.mean(best.fun ** 2))), "sizes": [float(n) for n in ns]}
    return j


# ---- the back-test on the Multi-Power Law's public curves ------------------------------------------------

# relative (log-loss) sigmas of a forecast from `scalelab backtest --curves` on 2026-12-06 (LOG, sessions 2
# and 3; `curve_law.calibrate` recomputes them from its rows and tests/test_curves.py checks the default's):
# sigma_schedule on the 25M and 100M models' unseen schedules, sigma_size from 25M+100M -> 400M
CALIBRATION = {
    "multi-power": {"sigma_schedule": 0.0036, "sigma_size_per_decade": 0.0302},
    "momentum": {"sigma_schedule": 0.0036, "sigma_size_per_decade": 0.0534},
    "multi-power-q": {"sigma_schedule": 0.0023, "sigma_size_per_decade": 0.0566},
    "momentum-q": {"sigma_schedule": 0.0023, "sigma_size_per_decade": 0.0546},
}
MPL_TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")  # the authors' fitting schedules (src/config.py)
MPL_TEST = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")


def mpl_curves() -> dict[str, dict[str, Curve]]:
    """model size -> schedule -> `Curve` of the public dataset mpl-curves (fetched on first use)."""
    d = datasets.load("mpl-curves")
    out: dict[str, dict[str, Curve]] = {}
    for (model, name), g in d.groupby(["model", "schedule"]):
        g = g.sort_values("step")
        out.setdefault(model, {})[name] = Curve(name, mpl_schedule(name, int(g["step"].max())),
                                                g["step"].to_numpy(), g["loss"].to_numpy(), MPL_WARMUP)
    return out


def score_curve(form: str, model: str, s: str, law: FittedCurveLaw, c: Curve, split: str, sigma: float,
           z: float) -> dict:
    log_err = np.log(law.predict(c) / c.loss)
    rel = np.expm1(log_err)
    return {"form": form, "model": model, "schedule": s, "split": split,
            "mean_abs_error": float(np.mean(np.abs(rel))), "final_error": float(rel[-1]),
            "final_loss": float(c.loss[-1]), "sigma": sigma, "final_covered": bool(abs(log_err[-1]) <= z * sigma),
            "curve_coverage": float(np.mean(np.abs(log_err) <= z * sigma)), "params": law.params}


def score_curve_law(task) -> list[dict]:
    """(form, model size, its curves, level): fit the training schedules, score every schedule with the
    calibrated interval (a task of `laws.backtest.map_tasks`)."""
    form, model, curves, level = task
    law = fit_curves([curves[s] for s in MPL_TRAIN], form)
    sigma = float(np.hypot(law.info["rmse_relative"], CALIBRATION[form]["sigma_schedule"]))
    z = z_of(level)
    return [score_curve(form, model, s, law, curves[s], "fitted" if s in MPL_TRAIN else "unseen", sigma, z)
            for s in (*MPL_TRAIN, *MPL_TEST)]


# ---- across sizes -------------------------------------------------------------------------------------------

MPL_SIZES = {"25M": 25e6, "100M": 100e6, "400M": 400e6}  # the models' nominal sizes


def trend_params(params_by_n: dict[float, dict], n_target: float) -> dict:
    """Each parameter's trend in N, extrapolated to ``n_target``: a least-squares line in log N through
    the fitted sizes, of the parameter itself for L0 (a loss), of log(1 - lam) for the momentum decay,
    and of its logarithm for every other (positive) parameter."""
    ns = np.log(np.array(sorted(params_by_n)))
    out = {}
    for k in params_by_n[min(params_by_n)]:
        v = np.array([params_by_n[n][k] for n in sorted(params_by_n)], float)
        to, back = {"L0": (lambda x: x, lambda y: y), "lam": (lambda x: np.log1p(-x), lambda y: -np.expm1(y))}.get(
            k, (np.log, np.exp))
        slope, icpt = np.polyfit(ns, to(np.maximum(v, 1e-300) if k not in ("L0", "lam") else v), 1)
        out[k] = float(back(icpt + slope * np.log(n_target)))
    return out


def score_across_sizes(form: str, params_by_model: dict[str, dict], target: str,
                       curves: dict[str, Curve], level: float = 0.9) -> list[dict]:
    """The law at ``target`` from the other sizes' fitted parameters (`trend_params`), scored on every
    schedule of the target size (none of which it saw)."""
    sizes = {MPL_SIZES[m]: p for m, p in params_by_model.items()}
    law = FittedCurveLaw(form, trend_params(sizes, MPL_SIZES[target]))
    decades = float(np.log10(MPL_SIZES[target] / max(sizes)))
    cal = CALIBRATION[form]
    sigma = float(np.hypot(cal["sigma_schedule"], cal["sigma_size_per_decade"] * decades))
    z = z_of(level)
    return [score_curve(form, f"{target} from {'+'.join(params_by_model)}", s, law, curves[s], "unseen", sigma, z)
            for s in (*MPL_TRAIN, *MPL_TEST)]
