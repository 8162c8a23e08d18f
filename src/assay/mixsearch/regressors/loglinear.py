"""Data Mixing Laws (Ye et al. 2024, arXiv 2403.16952, eq. 1): L = c + k · exp(Σ_j t_j r_j).

Because Σ r_j = 1, k is not identifiable apart from the t_j (k·e^{Σ t_j r_j} = e^{Σ (t_j + ln k) r_j}),
so the fit uses L = c + exp(Σ_j u_j r_j) and reports the canonical form with centred t
(Σ t_j = 0) and k = exp(mean u). Fitted with a Huber loss (δ = 0.02, as allenai/olmix's
``LogLinearRegressor``) by scipy's trust-region least squares from several starts, each started at
the closed-form fit of log(L − c₀) for a guess c₀ of the floor.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from scipy.optimize import least_squares

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor

HUBER_DELTA = 0.02


class LogLinearLaw(Regressor):
    """Data Mixing Laws' log-linear law L = c + k·exp(Σ_j t_j r_j)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ye et al. 2024, Data Mixing Laws: Optimizing Data Mixtures by Predicting Language Modeling Performance (eq. 1)",
        arxiv="2403.16952",
        code="allenai/olmix: olmix/fit/utils.py (LogLinearRegressor), as the research note reads it; not re-read (the authors' "
             "yegcjs/mixinglaws pipeline fits AdaBoost over MLPs instead)",
        deviations=(
            "One law for the aggregate target; the paper fits each domain's loss L_i = c_i + k_i·exp(Σ_j t_ij r_j) and chains it "
            "with step and model-size laws.",
            "Huber loss δ = 0.02 as olmix, but scipy's trust-region least squares from 6 starts (olmix: L-BFGS from 300).",
            "k is not identifiable apart from t when Σ r = 1: reported as centred t and k = exp(mean u).",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: recovers c, k and t of a synthetic law",
    )

    name = "log_linear"

    def n_params(self, m: int) -> int:
        return m + 1

    def fit(self, X, y, scale=None):
        X, y = np.asarray(X, float), np.asarray(y, float)
        lo, span = float(y.min()), float(np.ptp(y)) or 1.0

        def resid(p):
            return p[0] + np.exp(np.clip(X @ p[1:], -50, 50)) - y

        def jac(p):
            e = np.exp(np.clip(X @ p[1:], -50, 50))
            return np.hstack([np.ones((len(y), 1)), e[:, None] * X])

        best = None
        for q in (1e-3, 0.05, 0.3, 1.0, 3.0, 10.0):
            c0 = lo - q * span
            u0, *_ = np.linalg.lstsq(X, np.log(y - c0), rcond=None)
            # c stays below every observed value: k·exp(·) > 0, so the floor is under the data.
            r = least_squares(resid, np.r_[c0, u0], jac=jac, loss="huber", f_scale=HUBER_DELTA,
                              bounds=(np.r_[-np.inf, np.full(X.shape[1], -np.inf)], np.r_[lo, np.full(X.shape[1], np.inf)]))
            if best is None or r.cost < best.cost:
                best = r
        self.c, self.u = float(best.x[0]), best.x[1:]
        return self

    def predict(self, X, scale=None):
        return self.c + np.exp(np.asarray(X, float) @ self.u)

    def params(self):
        return {"c": self.c, "k": float(np.exp(self.u.mean())), "t": (self.u - self.u.mean()).tolist()}

    def convex_objective(self, x, scale: Optional[float] = None):
        import cvxpy as cp

        return self.c + cp.exp(self.u @ x)
