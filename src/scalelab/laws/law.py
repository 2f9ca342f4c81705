"""`FittedLaw`: a law form with parameters, optional bootstrap samples, prediction and allocation.

A fitted law is what `scalelab fit` writes (JSON) and what `scalelab predict` / `scalelab plan` read.
Approach-2 fits carry no loss surface, only the allocation N_opt = k C^a (form "allocation").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scalelab.errors import UserError
from scalelab.io import atomic_write_text, to_plain
from scalelab.laws.allocation import allocate
from scalelab.laws.forms import FORMS, get_form
from scalelab.laws.intervals import widen

SUMMARY_OMITS = ("fitted_points",)  # kept in the fit file, too long for a summary


@dataclass
class FittedLaw:
    form: str  # chinchilla | kaplan | compute | overtraining | data_constrained | allocation
    params: dict
    approach: str = ""  # "1", "2", "3", "published"
    samples: list[dict] = field(default_factory=list)  # bootstrap parameter draws
    info: dict = field(default_factory=dict)  # n_points, objective, conventions, source, ...

    # ---- prediction -----------------------------------------------------------------------
    def predict(self, N, D, **kw) -> np.ndarray:
        if self.form == "allocation":
            raise UserError("an approach-2 fit has no loss surface: it predicts N*(C), D*(C) only "
                            "(use --compute); fit approach 3 to predict a loss")
        return get_form(self.form).predict(self.params, N, D, **kw)

    def predict_samples(self, N, D) -> np.ndarray | None:
        if not self.samples or self.form == "allocation":
            return None
        f = get_form(self.form)
        return np.array([f.predict(s, N, D) for s in self.samples])

    def interval(self, values: np.ndarray | None, level: float = 0.9):
        if values is None or len(values) == 0:
            return None
        q = (1 - level) / 2
        return np.nanquantile(values, q, axis=0), np.nanquantile(values, 1 - q, axis=0)

    def widen(self, pred, iv, C, level: float = 0.9):
        """The interval a forecast states: the bootstrap's ``iv`` (or None), widened for extrapolation
        to compute ``C`` when the fit carries a calibration (laws/intervals.py, eq. 1); None if neither."""
        cal = self.info.get("calibration")
        if not cal:
            return iv
        ratio = np.asarray(C, float) / cal["C_max_fitted"]
        return widen(pred, *(iv if iv is not None else (None, None)), ratio, cal["sigma_per_decade"], level)

    def forecast(self, N, D, level: float = 0.9):
        """(loss, bootstrap interval or None, stated interval or None) at (N, D): the stated one is the
        bootstrap's widened for extrapolation when the fit is calibrated (the back-test keeps both)."""
        pred = np.atleast_1d(self.predict(N, D)).astype(float)
        boot = self.interval(self.predict_samples(N, D), level)
        return pred, boot, self.widen(pred, boot, 6.0 * np.asarray(N, float) * np.asarray(D, float), level)

    def predict_interval(self, N, D, level: float = 0.9):
        """(loss, lo, hi) at (N, D): lo/hi are None when the fit has neither samples nor calibration."""
        pred, _, iv = self.forecast(N, D, level)
        return (pred, None, None) if iv is None else (pred, np.atleast_1d(iv[0]), np.atleast_1d(iv[1]))

    # ---- allocation -----------------------------------------------------------------------
    def exponents(self, params: dict | None = None) -> tuple[float, float]:
        """(a, b): N_opt ∝ C^a, D_opt ∝ C^b."""
        p = self.params if params is None else params
        if self.form in ("chinchilla", "data_constrained"):
            s = p["alpha"] + p["beta"]
            return p["beta"] / s, p["alpha"] / s
        if self.form == "allocation":
            return p["a"], p["b"]
        raise UserError(f"the {self.form} form has no closed-form allocation exponents")

    def allocate(self, C, flops_per_token=None, params: dict | None = None) -> dict:
        """Compute-optimal N*, D* for budget(s) C; ``flops_per_token(N)`` defaults to 6N."""
        return allocate(self, np.asarray(C, float), flops_per_token, params)

    def allocate_with_interval(self, C, level: float = 0.9, flops_per_token=None, calibrated: bool = True) -> dict:
        """N*, D*, tokens/param and the loss at the optimum, with bootstrap intervals. With ``calibrated``,
        the loss's interval is widened for extrapolation when the fit carries a loss calibration, and
        N*'s when it carries an allocation calibration (laws/intervals.py eq. 1; D* = C / 6N* and
        tokens per parameter follow N*'s bounds)."""
        out = self.allocate(C, flops_per_token)
        if self.samples:
            draws = [self.allocate(C, flops_per_token, s) for s in self.samples]
            for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
                if key in out and out[key] is not None:
                    vals = np.array([d[key] for d in draws], float)
                    lo, hi = self.interval(vals, level)
                    out[key + "_lo"], out[key + "_hi"] = lo, hi
        if out.get("loss") is not None and calibrated:
            iv = (out["loss_lo"], out["loss_hi"]) if "loss_lo" in out else None
            iv = self.widen(out["loss"], iv, out["C"], level)
            if iv is not None:
                out["loss_lo"], out["loss_hi"] = iv
        cal = self.info.get("allocation_calibration")
        if cal and calibrated and flops_per_token is None:
            lo, hi = widen(out["N_opt"], out.get("N_opt_lo"), out.get("N_opt_hi"), out["C"] / cal["C_max_fitted"],
                           cal["sigma_per_decade"], level)
            out.update(N_opt_lo=lo, N_opt_hi=hi, D_opt_lo=out["C"] / (6 * hi), D_opt_hi=out["C"] / (6 * lo),
                       tokens_per_param_lo=out["C"] / (6 * hi**2), tokens_per_param_hi=out["C"] / (6 * lo**2))
        return out

    def ci(self, level: float = 0.9) -> dict:
        """Per-parameter (and allocation-exponent) bootstrap intervals."""
        if not self.samples or self.form == "ensemble":
            return {}
        out = {}
        for k in self.params:
            vals = np.array([s[k] for s in self.samples], float)
            lo, hi = self.interval(vals, level)
            out[k] = [float(lo), float(hi)]
        if self.form in ("chinchilla", "allocation"):
            ab = np.array([self.exponents(s) for s in self.samples])
            for j, name in enumerate(("a", "b")):
                lo, hi = self.interval(ab[:, j], level)
                out[name] = [float(lo), float(hi)]
        return out

    # ---- serialisation --------------------------------------------------------------------
    def summary(self, level: float = 0.9) -> dict:
        if self.form == "ensemble":
            d = {"members": [{"form": m["form"], **{k: float(v) for k, v in m["params"].items()}}
                             for m in self.params["members"]]}
            d.update(form=self.form, approach=self.approach, bootstrap=len(self.samples))
            d.update({k: v for k, v in self.info.items() if k not in d and k not in SUMMARY_OMITS})
            return d
        d = {k: float(v) for k, v in self.params.items()}
        if self.form in ("chinchilla", "allocation", "data_constrained"):
            a, b = self.exponents()
            d.update(a=a, b=b)
        d.update(form=self.form, approach=self.approach)
        if self.samples:
            d["ci"] = self.ci(level)
            d["ci_level"] = level
            d["bootstrap"] = len(self.samples)
        d.update({k: v for k, v in self.info.items() if k not in d and k not in SUMMARY_OMITS})
        return d

    def to_json(self) -> str:
        return json.dumps(to_plain(asdict(self)), indent=2)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> FittedLaw:
        p = Path(path)
        if not p.exists():
            raise UserError(f"law file not found: {p}")
        try:
            d = json.loads(p.read_text())
            check_params(d["form"], d["params"])
            return cls(form=d["form"], params=d["params"], approach=d.get("approach", ""),
                       samples=d.get("samples", []), info=d.get("info", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            why = f" ({e.args[0]})" if type(e) is ValueError else ""
            raise UserError(f"{p} is not a scalelab fit file (written by `scalelab fit --out`){why}") from None


ALLOCATION_PARAMS = ("a", "b", "k")


def check_params(form: str, params: dict) -> None:
    """Every parameter the form needs is there and is a finite number (members of an ensemble too);
    raises KeyError for an unknown form, ValueError naming what is missing or bad."""
    if form == "ensemble":
        if not params["members"]:
            raise ValueError("an ensemble with no members")
        for m in params["members"]:
            check_params(m["form"], m["params"])
        return
    if form not in FORMS and form != "allocation":
        raise KeyError("form")
    names = ALLOCATION_PARAMS if form == "allocation" else FORMS[form].param_names
    for k in names:
        if k not in params:
            raise ValueError(f"the {form} form's parameter {k!r} is missing")
        if not isinstance(params[k], (int, float)) or not np.isfinite(params[k]):
            raise ValueError(f"the {form} form's parameter {k!r} is {params[k]!r}, not a finite number")
