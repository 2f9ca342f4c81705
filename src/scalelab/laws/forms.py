"""Law forms. Each is fitted in log space: log L_hat = f(theta; log features), with its Jacobian, so
one Huber / L-BFGS machinery (fitting.py) fits them all.

* Chinchilla (Hoffmann et al. 2022, eq. 2):   L = E + A / N^alpha + B / D^beta
* Kaplan (Kaplan et al. 2020, eq. 1.5):      L = [(Nc/N)^(aN/aD) + Dc/D]^aD
* Compute (OpenAI 2023 "predictable scaling"): L = c + a C^b   (b < 0)
* Over-training (Gadre et al. 2024, eq. 4):  L = E + (a M^eta + b M^-eta) C^-eta,  M = D/N, C = 6ND
* Data-constrained (Muennighoff et al. 2023, eq. 5): Chinchilla with effective D' and N' (predict only)

Exponentiated parameters (E, A, B, ...) are optimised as logs, as Chinchilla does, so they stay
positive and the objective is well scaled.
"""

from __future__ import annotations

import itertools

import numpy as np

from scalelab.errors import UserError

LN6 = np.log(6.0)


def _lse(terms: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log-sum-exp of broadcast terms and the softmax weights (its gradient)."""
    t = np.broadcast_arrays(*terms)
    m = np.max(t, axis=0)
    ex = [np.exp(x - m) for x in t]
    s = sum(ex)
    return m + np.log(s), [e / s for e in ex]


class Form:
    name = ""
    param_names: tuple[str, ...] = ()
    theta_names: tuple[str, ...] = ()

    def features(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        return {"lnN": np.log(N), "lnD": np.log(D)}

    def log_predict(self, theta, F) -> tuple[np.ndarray, np.ndarray]:  # pred (n,), jac (n, p)
        raise NotImplementedError

    def to_params(self, theta) -> dict:
        raise NotImplementedError

    def to_theta(self, params: dict) -> np.ndarray:
        raise NotImplementedError

    def grid(self) -> np.ndarray:
        raise NotImplementedError

    def bounds(self):
        """Box constraints for L-BFGS-B (None = unbounded); keep exponents physical."""
        return None

    def predict(self, params: dict, N, D) -> np.ndarray:
        pred, _ = self.log_predict(self.to_theta(params), self.features(N, D))
        return np.exp(pred)


class Chinchilla(Form):
    name = "chinchilla"
    param_names = ("E", "A", "B", "alpha", "beta")
    theta_names = ("a", "b", "e", "alpha", "beta")  # a = ln A, b = ln B, e = ln E

    def log_predict(self, theta, F):
        a, b, e, al, be = theta
        pred, (w1, w2, w3) = _lse([a - al * F["lnN"], b - be * F["lnD"], e + 0.0 * F["lnN"]])
        jac = np.stack([w1, w2, w3, -w1 * F["lnN"], -w2 * F["lnD"]], axis=-1)
        return pred, jac

    def bounds(self):
        # exponents in [0, 4]: beyond that a term is a step function the data cannot pin down
        return [(-50, 100), (-50, 100), (-10, 10), (0.0, 4.0), (0.0, 4.0)]

    def to_params(self, theta):
        a, b, e, al, be = (float(x) for x in theta)
        return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be}

    def to_theta(self, p):
        return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])

    def grid(self):
        """The start grid of Hoffmann et al. (2022, Appendix D.2), as used by Besiroglu et al."""
        al = np.arange(0, 2.5, 0.5)
        be = np.arange(0, 2.5, 0.5)
        e = np.arange(-1, 1.5, 0.5)
        a = np.arange(0, 30, 5)
        b = np.arange(0, 30, 5)
        return np.array([(a_, b_, e_, al_, be_) for al_, be_, e_, a_, b_ in itertools.product(al, be, e, a, b)])


class Kaplan(Form):
    name = "kaplan"
    param_names = ("Nc", "Dc", "alpha_N", "alpha_D")
    theta_names = ("ln_Nc", "ln_Dc", "alpha_N", "alpha_D")

    def log_predict(self, theta, F):
        lnc, ldc, an, ad = theta
        u1 = (an / ad) * (lnc - F["lnN"])
        u2 = ldc - F["lnD"]
        S, (w1, w2) = _lse([u1, u2])
        jac = np.stack([an * w1, ad * w2, w1 * (lnc - F["lnN"]), S - w1 * u1], axis=-1)
        return ad * S, jac

    @staticmethod
    def loss_N(params: dict, N) -> np.ndarray:
        """L(N) = (Nc/N)^alpha_N: the infinite-data limit of the joint form (Kaplan eq. 1.1)."""
        return (params["Nc"] / np.asarray(N, float)) ** params["alpha_N"]

    @staticmethod
    def loss_D(params: dict, D) -> np.ndarray:
        """L(D) = (Dc/D)^alpha_D: the infinite-model limit of the joint form (Kaplan eq. 1.2)."""
        return (params["Dc"] / np.asarray(D, float)) ** params["alpha_D"]

    def to_params(self, theta):
        lnc, ldc, an, ad = (float(x) for x in theta)
        return {"Nc": np.exp(lnc), "Dc": np.exp(ldc), "alpha_N": an, "alpha_D": ad}

    def to_theta(self, p):
        return np.array([np.log(p["Nc"]), np.log(p["Dc"]), p["alpha_N"], p["alpha_D"]])

    def grid(self):
        return np.array(list(itertools.product(np.log([1e10, 1e12, 1e14, 1e16]), np.log([1e9, 1e11, 1e13, 1e15]),
                                               [0.05, 0.1, 0.2, 0.4], [0.05, 0.1, 0.2, 0.4])))


class ComputeLaw(Form):
    """L(C) = c + a C^b with b < 0; the features are built from C (= 6ND when given N and D)."""

    name = "compute"
    param_names = ("a", "b", "c")
    theta_names = ("ln_a", "k", "ln_c")  # b = -k

    def features(self, N, D, C=None):
        C = 6.0 * np.asarray(N, float) * np.asarray(D, float) if C is None else np.asarray(C, float)
        return {"lnC": np.log(C)}

    def log_predict(self, theta, F):
        la, k, lc = theta
        pred, (w1, w2) = _lse([la - k * F["lnC"], lc + 0.0 * F["lnC"]])
        return pred, np.stack([w1, -w1 * F["lnC"], w2], axis=-1)

    def to_params(self, theta):
        la, k, lc = (float(x) for x in theta)
        return {"a": np.exp(la), "b": -k, "c": np.exp(lc)}

    def to_theta(self, p):
        return np.array([np.log(p["a"]), -p["b"], np.log(p["c"])])

    def grid(self):
        return np.array(list(itertools.product(np.arange(-5, 30, 5), [0.02, 0.05, 0.1, 0.2, 0.3, 0.5],
                                               np.arange(-1, 1.5, 0.5))))


class Overtraining(Form):
    """Gadre et al. (2024): L = E + (a M^eta + b M^-eta) C^-eta with token multiplier M = D/N."""

    name = "overtraining"
    param_names = ("E", "a", "b", "eta")
    theta_names = ("e", "ln_a", "ln_b", "eta")

    def features(self, N, D):
        lnN, lnD = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
        return {"lnM": lnD - lnN, "lnC": LN6 + lnN + lnD}

    def log_predict(self, theta, F):
        e, la, lb, eta = theta
        lnM, lnC = F["lnM"], F["lnC"]
        pred, (w1, w2, w3) = _lse([e + 0.0 * lnM, la + eta * (lnM - lnC), lb - eta * (lnM + lnC)])
        jac = np.stack([w1, w2, w3, w2 * (lnM - lnC) - w3 * (lnM + lnC)], axis=-1)
        return pred, jac

    def to_params(self, theta):
        e, la, lb, eta = (float(x) for x in theta)
        return {"E": np.exp(e), "a": np.exp(la), "b": np.exp(lb), "eta": eta}

    def to_theta(self, p):
        return np.array([np.log(p["E"]), np.log(p["a"]), np.log(p["b"]), p["eta"]])

    def grid(self):
        return np.array(list(itertools.product(np.arange(-1, 1.5, 0.5), np.arange(0, 30, 5), np.arange(0, 30, 5),
                                               [0.1, 0.2, 0.3, 0.5])))


# Muennighoff et al. 2023, eq. 5 and Sec. 3: how fast repeated tokens (R*_D) and excess parameters (R*_N)
# lose their value, fitted on C4 at 10M-9B parameters
MUENNIGHOFF_REPETITION = {"R_D_star": 15.4, "R_N_star": 5.3}


def half_value_epochs(r_star: float) -> float:
    """Epochs after which one more repeated token is worth less than half a fresh one: the marginal value
    of repeats, dD'/dD = exp(-R_D / R*_D), falls below 1/2 at R_D = R*_D ln 2 repetitions."""
    return 1.0 + r_star * float(np.log(2.0))


class DataConstrained(Form):
    """Muennighoff et al. (2023): Chinchilla evaluated at effective data D' and parameters N'.

    D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D)),   R_D = D / U_D - 1 (repeated epochs)
    N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)),   U_N = min(N, N_opt(U_D)),  R_N = N / U_N - 1
    With no repetition (U_D >= D) it is exactly the Chinchilla form.
    """

    name = "data_constrained"
    param_names = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")

    def predict(self, params: dict, N, D, unique_tokens=None) -> np.ndarray:
        N, D = np.asarray(N, float), np.asarray(D, float)
        U_D = D if unique_tokens is None else np.minimum(np.asarray(unique_tokens, float), D)
        R_D = D / U_D - 1.0
        D_eff = U_D + U_D * params["R_D_star"] * (1.0 - np.exp(-R_D / params["R_D_star"]))
        al, be, A, B = params["alpha"], params["beta"], params["A"], params["B"]
        # N that is compute-optimal for U_D tokens (inverting D_opt(C) of the Chinchilla form).
        G = (al * A / (be * B)) ** (1.0 / (al + be))
        a_exp, b_exp = be / (al + be), al / (al + be)
        n_opt_for_ud = G * (U_D * G) ** (a_exp / b_exp)
        U_N = np.minimum(N, n_opt_for_ud)
        R_N = N / U_N - 1.0
        N_eff = U_N + U_N * params["R_N_star"] * (1.0 - np.exp(-R_N / params["R_N_star"]))
        return params["E"] + A / N_eff**al + B / D_eff**be


class Ensemble(Form):
    """The geometric mean of several fitted forms: ln L = mean_k ln L_k(N, D). Its params are
    {"members": [{"form": name, "params": {...}}, ...]}; fitted member by member (laws/methods.py)."""

    name = "ensemble"
    param_names = ("members",)

    def predict(self, params: dict, N, D) -> np.ndarray:
        logs = [np.log(get_form(m["form"]).predict(m["params"], N, D)) for m in params["members"]]
        return np.exp(np.mean(logs, axis=0))


FORMS: dict[str, Form] = {f.name: f for f in (Chinchilla(), Kaplan(), ComputeLaw(), Overtraining(),
                                                DataConstrained(), Ensemble())}


def get_form(name: str) -> Form:
    if name not in FORMS:
        raise UserError(f"unknown law form {name!r}; choose from {sorted(FORMS)}")
    return FORMS[name]
