"""Fitting laws to tables of runs, estimator style: each ``fit_*`` takes a `RunTable` and returns a
`FittedLaw`.

Approach 3 (Hoffmann et al. 2022, Appendix D.2), as published: minimise over theta
    sum_i Huber_delta( LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i ),  delta = 1e-3,
with L-BFGS from every point of a start grid, keeping the best objective. (The Huber loss with a
small delta is nearly an L1 fit of log-loss: robust to outliers.) The full Chinchilla grid has 4,500
starts; we evaluate the objective on all of them at once and run L-BFGS from the ``top_starts``
best (default: all), de-duplicated, since most starts fall into the same basin.

Variable projection ("varpro"): for each (alpha, beta) on a grid, E, A, B enter linearly in L, so
non-negative least squares gives them exactly; the best (alpha, beta) is then polished with
L-BFGS on the Huber objective. No start values to choose, and it cannot stop in a poor basin.

Approach 2: per compute budget, a parabola in ln N through the IsoFLOP points, its minimum
N_opt(C); then ln N_opt = ln k + a ln C by least squares, and D_opt = C / (6 N_opt).

Approach 1: from training curves, the minimum loss over runs at each compute (the envelope), the
run achieving it gives N_opt(C); then the same power-law fit.

Bootstrap: resample runs with replacement (rows, or whole runs for curves; within each budget for
approach 2), refit, and keep every parameter draw: intervals for parameters, exponents, predictions.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize, nnls

from scalelab.errors import UserError
from scalelab.laws.forms import Chinchilla, Form, get_form
from scalelab.laws.law import FittedLaw
from scalelab.laws.table import RunTable

HUBER_DELTA = 1e-3


# ---- the log-space Huber objective ----------------------------------------------------------------

def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(theta, form: Form, F, y, delta, w=None):
    pred, jac = form.log_predict(theta, F)
    r = pred - y
    h = huber(r, delta)
    g = np.clip(r, -delta, delta)
    if w is not None:
        h, g = h * w, g * w
    return float(h.sum()), jac.T @ g


def _grid_objectives(form: Form, grid: np.ndarray, F, y, delta, w=None) -> np.ndarray:
    """Objective at every start at once: (G,) -- vectorised over the grid, chunked for memory."""
    out = np.empty(len(grid))
    for s in range(0, len(grid), 512):
        th = grid[s:s + 512].T[:, :, None]  # (p, g, 1) broadcasts against the (n,) features
        pred, _ = form.log_predict(th, {k: v[None, :] for k, v in F.items()})
        h = huber(pred - y[None, :], delta)
        out[s:s + 512] = (h * (1 if w is None else w)).sum(axis=1)
    return out


def _huber_nll(theta_s, form: Form, F, y, delta, w=None):
    """Negative log-likelihood of a Huber-distributed residual with free scale sigma = exp(s)
    (Besiroglu et al. 2024, the main fit): sum_i rho_delta(r_i / sigma) + n log sigma + const."""
    theta, s = theta_s[:-1], theta_s[-1]
    sigma = np.exp(s)
    pred, jac = form.log_predict(theta, F)
    z = (pred - y) / sigma
    h, g = huber(z, delta), np.clip(z, -delta, delta)
    ww = np.ones_like(z) if w is None else w
    val = float((ww * h).sum() + ww.sum() * s)
    grad_theta = jac.T @ (ww * g) / sigma
    grad_s = float(-(ww * g * z).sum() + ww.sum())
    return val, np.append(grad_theta, grad_s)


def _fit_huber_likelihood(form, theta0, F, y, delta, w=None):
    r = form.log_predict(theta0, F)[0] - y
    x0 = np.append(theta0, np.log(max(np.median(np.abs(r)), 1e-6)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        b = form.bounds()
        res = minimize(_huber_nll, x0, args=(form, F, y, delta, w), jac=True, method="L-BFGS-B",
                       bounds=None if b is None else b + [(None, None)],
                       options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    return res.x[:-1], float(res.fun), float(np.exp(res.x[-1]))


def _lbfgs(form, theta0, F, y, delta, w=None):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = minimize(_objective, theta0, args=(form, F, y, delta, w), jac=True, method="L-BFGS-B",
                       bounds=form.bounds(), options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-10})
    return res.x, float(res.fun)


def _fit_log_space(form: Form, F, y, delta, starts: np.ndarray, top_starts: int | None, w=None):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        vals = _grid_objectives(form, starts, F, y, delta, w)
    order = np.argsort(np.where(np.isfinite(vals), vals, np.inf))
    if top_starts is not None:
        order = order[:top_starts]
    best_x, best_f = None, np.inf
    for i in order:
        x, f = _lbfgs(form, starts[i], F, y, delta, w)
        if not np.isfinite(f):
            continue
        if f < best_f:
            best_x, best_f = x, f
    if best_x is None:
        raise UserError("the fit did not converge from any start; check the table for inconsistent points")
    return best_x, best_f


# ---- approach 3 -----------------------------------------------------------------------------------

def fit_approach3(table: RunTable, optimizer: str = "lbfgs", delta: float = HUBER_DELTA,
                  top_starts: int | None = 32, bootstrap: int = 0, seed: int = 0,
                  form: str = "chinchilla", boot_starts: int = 0, objective: str = "huber",
                  weights: np.ndarray | None = None) -> FittedLaw:
    """Fit a parametric law (default: Chinchilla) to (N, D, loss) points.

    optimizer: "lbfgs" (the published grid + L-BFGS) or "varpro" (grid over exponents + NNLS). (A *method*,
    in `laws.methods`, is a whole recipe: form, objective, optimizer, intervals.)
    top_starts: run L-BFGS from this many best grid starts (None = every start, as published;
        on the Chinchilla data both give the same optimum, the full run takes ~30 s).
    objective: "huber" (Hoffmann et al.: summed Huber loss) or "huber-likelihood" (Besiroglu et al.:
        a Huber likelihood with a fitted scale, started from the plain fit).
    bootstrap: number of resamples; each refits from the full-data optimum (warm start) plus the
        ``boot_starts`` best grid starts on the resample.
    weights: one non-negative weight per row, multiplying its term of the objective (None: all 1).
    """
    f = get_form(form)
    n_par = len(f.param_names)
    if len(table) <= n_par:
        raise UserError(f"the {form} form has {n_par} parameters but the table has only {len(table)} points; "
                        "add runs")
    F, y = f.features(table.N, table.D), np.log(table.loss)
    w = None if weights is None else np.asarray(weights, float)
    if w is not None and (w.shape != (len(table),) or np.any(w < 0) or not np.all(np.isfinite(w))):
        raise UserError(f"weights must be {len(table)} non-negative finite numbers, one per row")
    if optimizer == "varpro":
        if form != "chinchilla" or w is not None:
            raise UserError("optimizer varpro is for the chinchilla form, unweighted")
        theta, obj = _varpro(table.N, table.D, table.loss, delta)
    elif optimizer == "lbfgs":
        theta, obj = _fit_log_space(f, F, y, delta, f.grid(), top_starts, w)
    else:
        raise UserError(f"unknown optimizer {optimizer!r}; use lbfgs or varpro")
    extra = {}
    if objective == "huber-likelihood":
        theta, obj, sigma = _fit_huber_likelihood(f, theta, F, y, delta, w)
        extra["sigma"] = sigma
    elif objective != "huber":
        raise UserError(f"unknown objective {objective!r}; use huber or huber-likelihood")
    at_bound = []
    for name, v, bd in zip(f.theta_names, theta, f.bounds() or []):
        if bd[0] is not None and (abs(v - bd[0]) < 1e-6 or abs(v - bd[1]) < 1e-6):
            at_bound.append(name)
    if at_bound:
        extra["degenerate"] = (f"{', '.join(at_bound)} at the bound of the search box: the table does not "
                               "determine this term; add runs that vary it (more sizes or budgets)")
        warnings.warn(extra["degenerate"], stacklevel=2)
    law = FittedLaw(form=form, params=f.to_params(theta), approach="3",
                    info={"n_points": len(table), "C_max_fitted": float(table.C.max()), "objective": obj,
                          "objective_kind": objective, **extra,
                          "optimizer": optimizer, "huber_delta": delta,
                          "param_convention": table.param_convention, "flops_convention": "C = 6 N D",
                          "notes": table.notes})
    if bootstrap:
        law.samples = _bootstrap3(f, table, theta, delta, bootstrap, seed, boot_starts, objective, w)
    return law


def _bootstrap3(f: Form, table: RunTable, theta: np.ndarray, delta: float, n_boot: int, seed: int,
                boot_starts: int, objective: str = "huber", weights: np.ndarray | None = None) -> list[dict]:
    """Resample runs with replacement (as weights: equivalent, and keeps arrays fixed-size)."""
    rng = np.random.default_rng(seed)
    F, y = f.features(table.N, table.D), np.log(table.loss)
    groups = table.run_ids()
    uniq, inv = np.unique(groups, return_inverse=True)
    grid = f.grid()
    samples = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        w = counts[inv].astype(float) * (1.0 if weights is None else weights)
        starts = [theta]
        if boot_starts > 0:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                vals = _grid_objectives(f, grid, F, y, delta, w)
            starts += [grid[i] for i in np.argsort(vals)[:boot_starts]]
        best, best_f = None, np.inf
        for s in starts:
            x, val = _lbfgs(f, s, F, y, delta, w)
            if val < best_f:
                best, best_f = x, val
        if objective == "huber-likelihood":
            best = _fit_huber_likelihood(f, best, F, y, delta, w)[0]
        samples.append(f.to_params(best))
    return samples


def _varpro(N, D, L, delta, n_grid: int = 40):
    """Grid over (alpha, beta), NNLS for (E, A, B) in linear space, then polish with L-BFGS."""
    best = (np.inf, None)
    for al in np.linspace(0.05, 1.5, n_grid):
        xa = N ** -al
        for be in np.linspace(0.05, 1.5, n_grid):
            X = np.stack([np.ones_like(N), xa, D ** -be], axis=1) / L[:, None]  # relative residuals
            coef, _ = nnls(X, np.ones_like(L))
            if np.any(coef <= 0):
                continue
            r = np.log(X @ coef)  # ≈ log(pred / L)
            obj = huber(r, delta).sum()
            if obj < best[0]:
                best = (obj, np.array([np.log(coef[1]), np.log(coef[2]), np.log(coef[0]), al, be]))
    if best[1] is None:
        raise UserError("varpro found no (alpha, beta) with positive E, A, B; try optimizer lbfgs")
    f = Chinchilla()
    return _lbfgs(f, best[1], f.features(N, D), np.log(L), delta)


# ---- approach 2 -----------------------------------------------------------------------------------

def isoflop_groups(table: RunTable, gap_dex: float = 0.1) -> np.ndarray:
    """Budget label per row: the `budget` column if present, else clusters of C separated by gaps of
    more than ``gap_dex`` decades (digitised or measured FLOPs scatter a few % around the budget);
    each cluster is labelled by the geometric mean of its C."""
    if "budget" in table.df.columns:
        return table.df["budget"].to_numpy(float)
    lc = np.log10(table.C)
    order = np.argsort(lc)
    cluster = np.concatenate([[0], np.cumsum(np.diff(lc[order]) > gap_dex)])
    labels = np.empty(len(lc))
    for c in np.unique(cluster):
        idx = order[cluster == c]
        labels[idx] = 10.0 ** lc[idx].mean()
    return labels


def near_valley(logN: np.ndarray, loss: np.ndarray, window_dex: float | None, at_least: int = 3) -> np.ndarray:
    """Mask of the points within ``window_dex`` decades of the lowest-loss size (at least the ``at_least``
    nearest): a parabola through the valley alone, where its Taylor approximation holds. Open-Athena
    2026 (arXiv 2603.22339) shows approach 2's parabola biased by wide and off-centre IsoFLOP grids."""
    if window_dex is None:
        return np.ones(len(logN), bool)
    dist = np.abs(logN - logN[np.argmin(loss)]) / np.log(10)
    return (dist <= window_dex) | (dist <= np.sort(dist)[min(at_least, len(dist)) - 1])


def _parabola_optima(table: RunTable, labels: np.ndarray, w: np.ndarray | None = None,
                     window_dex: float | None = None):
    rows, warns = [], []
    for c in np.unique(labels):
        m = labels == c
        if m.sum() < 3:
            continue
        m[m] = near_valley(np.log(table.N[m]), table.loss[m], window_dex)
        x, L = np.log(table.N[m]), table.loss[m]
        ww = None if w is None else w[m]
        if ww is not None and (ww > 0).sum() < 3:
            continue
        if ww is not None and len(np.unique(x[ww > 0])) < 3:
            continue
        p2, p1, p0 = np.polyfit(x, L, 2, w=None if ww is None else np.sqrt(ww))
        if p2 <= 0:
            warns.append(f"budget {c:.3g}: the IsoFLOP points curve downward (no minimum); skipped")
            continue
        x_opt = -p1 / (2 * p2)
        outside = x_opt <= x.min() or x_opt >= x.max()
        best = np.argmin(L)
        edge = bool(outside or best in (np.argmin(x), np.argmax(x)))
        if edge:
            where = ("the fitted minimum lies outside the sampled sizes" if outside else
                     f"the lowest loss is at the {'smallest' if best == np.argmin(x) else 'largest'} size sampled")
            warns.append(f"budget {c:.3g}: {where}, so the valley is not bracketed (N_opt ≈ {np.exp(x_opt):.3g}, "
                         f"sampled {np.exp(x.min()):.3g}..{np.exp(x.max()):.3g}); add larger/smaller models at "
                         "this budget")
        rows.append({"C": float(c), "N_opt": float(np.exp(x_opt)), "D_opt": float(c / (6 * np.exp(x_opt))),
                     "loss_opt": float(p0 - p1 * p1 / (4 * p2)), "curvature": float(p2), "edge": edge,
                     "n_points": int(m.sum())})
    return rows, warns


def _power_fit(C: np.ndarray, N: np.ndarray) -> tuple[float, float]:
    a, lnk = np.polyfit(np.log(C), np.log(N), 1)
    return float(a), float(np.exp(lnk))


def fit_approach2(table: RunTable, bootstrap: int = 0, seed: int = 0, warn=True,
                  window_dex: float | None = None) -> FittedLaw:
    """Chinchilla's approach 2: each budget's optimum from a parabola in ln N, then N_opt = k C^a.
    ``window_dex``: fit each parabola to the points within that many decades of its lowest loss only."""
    labels = isoflop_groups(table)
    rows, warns = _parabola_optima(table, labels, window_dex=window_dex)
    if len(rows) < 2:
        why = f" ({warns[0]})" if warns else ""
        raise UserError("approach 2 needs at least 2 compute budgets with >= 3 model sizes and a valley each "
                        f"(found {len(rows)}){why}; add runs or use approach 3")
    if warn:
        for msg in warns:
            warnings.warn(msg, stacklevel=2)
    C = np.array([r["C"] for r in rows])
    a, k = _power_fit(C, np.array([r["N_opt"] for r in rows]))
    law = FittedLaw(form="allocation", params={"a": a, "b": 1.0 - a, "k": k}, approach="2",
                    info={"optima": rows, "warnings": warns, "n_points": len(table), "window_dex": window_dex,
                          "C_max_fitted": float(C.max()),
                          "param_convention": table.param_convention, "flops_convention": "C = 6 N D"})
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            w = np.zeros(len(table))
            for c in np.unique(labels):  # stratified: resample runs within each budget
                idx = np.flatnonzero(labels == c)
                np.add.at(w, rng.choice(idx, len(idx)), 1.0)
            rws, _ = _parabola_optima(table, labels, w, window_dex)
            if len(rws) >= 2:
                aa, kk = _power_fit(np.array([r["C"] for r in rws]), np.array([r["N_opt"] for r in rws]))
                samples.append({"a": aa, "b": 1.0 - aa, "k": kk})
        law.samples = samples
    return law


# ---- approach 1 -----------------------------------------------------------------------------------

def envelope(table: RunTable, n_points: int = 40):
    """Minimum loss over runs at log-spaced compute values (Chinchilla's Approach 1)."""
    if "run" not in table.df.columns:
        raise UserError("approach 1 needs training curves: a `run` column with several rows per run")
    runs = {}
    for rid, g in table.df.groupby("run"):
        g = g.sort_values("C")
        runs[rid] = (np.log(g["C"].to_numpy(float)), g["loss"].to_numpy(float), float(g["N"].iloc[0]))
    lo = min(v[0].min() for v in runs.values())
    hi = max(v[0].max() for v in runs.values())
    pts = []
    for lc in np.linspace(lo, hi, n_points):
        best = None
        for lcs, L, N in runs.values():
            if lcs[0] <= lc <= lcs[-1] and len(lcs) > 1:
                val = float(np.interp(lc, lcs, L))
                if best is None or val < best[0]:
                    best = (val, N)
        if best is not None:
            pts.append((float(np.exp(lc)), best[1], best[0]))
    return pts


def fit_approach1(table: RunTable, bootstrap: int = 0, seed: int = 0) -> FittedLaw:
    pts = envelope(table)
    if len({p[1] for p in pts}) < 2:
        raise UserError("approach 1: one run is best at every compute; add runs of other sizes")
    C, N = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    a, k = _power_fit(C, N)
    law = FittedLaw(form="allocation", params={"a": a, "b": 1.0 - a, "k": k}, approach="1",
                    info={"envelope": [{"C": c, "N_opt": n, "loss": loss} for c, n, loss in pts],
                          "n_points": len(table), "param_convention": table.param_convention})
    if bootstrap:
        rng = np.random.default_rng(seed)
        ids = table.df["run"].unique()
        samples = []
        for _ in range(bootstrap):
            pick = rng.choice(ids, len(ids))
            parts = [table.df[table.df["run"] == r].assign(run=f"{r}#{j}") for j, r in enumerate(pick)]
            import pandas as pd

            sub = RunTable(pd.concat(parts, ignore_index=True), table.param_convention)
            p = envelope(sub)
            if len({q[1] for q in p}) >= 2:
                aa, kk = _power_fit(np.array([q[0] for q in p]), np.array([q[1] for q in p]))
                samples.append({"a": aa, "b": 1.0 - aa, "k": kk})
        law.samples = samples
    return law


def fit(table: RunTable, approach: int = 3, form: str = "chinchilla", bootstrap: int = 0, seed: int = 0,
        optimizer: str = "lbfgs") -> FittedLaw:
    if approach == 3:
        return fit_approach3(table, optimizer=optimizer, bootstrap=bootstrap, seed=seed, form=form)
    if approach == 2:
        return fit_approach2(table, bootstrap=bootstrap, seed=seed)
    if approach == 1:
        return fit_approach1(table, bootstrap=bootstrap, seed=seed)
    raise UserError(f"approach must be 1, 2 or 3, got {approach}", arg="approach")
