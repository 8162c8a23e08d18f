"""AutoScale's per-domain power law (Kang et al. 2024, arXiv 2407.20177), in the form allenai/olmix's
``AutoscaleRegressor`` fits: L(r, N) = L∞ + Σ_i A_i · (N0_i + N·r_i)^(−γ_i).

N·r_i is domain i's data quantity, N0_i the quantity the model gets "for free" from the other
domains (transfer), γ_i how fast domain i's contribution saturates. N is measured in units of the
median quantity of the fit (1 when every proxy ran at the same quantity).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor, scale_ratio, varies

N0_RANGE = (1e-4, 10.0)
GAMMA_MAX = 5.0


class AutoScaleLaw(Regressor):
    """AutoScale's per-domain power law of the loss in each domain's data quantity."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Kang et al. 2024, AutoScale (COLM 2025): per-domain power laws of the loss in data quantity",
        arxiv="2407.20177",
        code="allenai/olmix: olmix/fit/utils.py (AutoscaleRegressor), as the research note reads it; not re-read",
        deviations=(
            "Each domain's term has an amplitude A_i: L + Σ_i A_i·(N0_i + N·r_i)^(−γ_i); the research note writes olmix's form "
            "without A_i. olmix calls its form a good-faith reading of a paper that is unclear on such targets.",
            "AutoScale's own extrapolation N(3) = N(2)·(N(2)/N(1)) and DDO are assay.mixsearch.ddo (assay-mix ddo / optimal), "
            "not this regressor.",
            "Bounded least squares (scipy) from two starts; N0_i in [1e-4, 10], γ_i <= 5.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: recovers a synthetic power law; "
                "tests/unit/mixsearch/test_mixsearch_propose.py: DDO and the AutoScale extrapolation",
    )

    name = "autoscale"
    uses_scale = True

    def n_params(self, m: int) -> int:
        return 3 * m + 1

    def fit(self, X, y, scale=None):
        X, y = np.asarray(X, float), np.asarray(y, float)
        n, m = X.shape
        self.s_ref = float(np.median(scale)) if varies(scale) else None
        s = scale_ratio(scale, n, self.s_ref)
        lo = np.r_[-np.inf, np.zeros(m), np.full(m, N0_RANGE[0]), np.zeros(m)]
        hi = np.r_[np.inf, np.full(m, np.inf), np.full(m, N0_RANGE[1]), np.full(m, GAMMA_MAX)]
        best = None
        for g0 in (0.5, 1.5):  # two starts: the bounded fit is well conditioned in γ from either side
            for n00 in (0.1,):
                design = np.hstack([np.ones((n, 1)), (n00 + s[:, None] * X) ** (-g0)])
                lin = lsq_linear(design, y, bounds=(np.r_[-np.inf, np.zeros(m)], np.full(m + 1, np.inf))).x
                p0 = np.clip(np.r_[lin, np.full(m, n00), np.full(m, g0)], lo, np.where(np.isinf(hi), 1e300, hi))
                r = least_squares(lambda p: self._eval(p, X, s) - y, p0, jac=lambda p: self._jac(p, X, s), bounds=(lo, hi), x_scale="jac", max_nfev=1000)
                if best is None or r.cost < best.cost:
                    best = r
        self.p = best.x
        return self

    @staticmethod
    def _eval(p, X, s):
        m = X.shape[1]
        L, A, N0, g = p[0], p[1 : m + 1], p[m + 1 : 2 * m + 1], p[2 * m + 1 :]
        return L + (A * (N0 + s[:, None] * X) ** (-g)).sum(axis=1)

    @staticmethod
    def _jac(p, X, s):
        m = X.shape[1]
        A, N0, g = p[1 : m + 1], p[m + 1 : 2 * m + 1], p[2 * m + 1 :]
        u = N0 + s[:, None] * X
        ug = u ** (-g)
        return np.hstack([np.ones((len(X), 1)), ug, -A * g * ug / u, -A * ug * np.log(u)])

    def predict(self, X, scale=None):
        X = np.asarray(X, float)
        return self._eval(self.p, X, scale_ratio(scale, len(X), self.s_ref))

    def params(self):
        m = (len(self.p) - 1) // 3
        return {"L": float(self.p[0]), "A": self.p[1 : m + 1].tolist(), "N0": self.p[m + 1 : 2 * m + 1].tolist(), "gamma": self.p[2 * m + 1 :].tolist(), "s_ref": self.s_ref}

    def convex_objective(self, x, scale: Optional[float] = None):
        import cvxpy as cp

        m = x.shape[0]
        s = float(scale_ratio(scale, 1, self.s_ref)[0])
        L, A, N0, g = self.p[0], self.p[1 : m + 1], self.p[m + 1 : 2 * m + 1], self.p[2 * m + 1 :]
        terms = [A[i] * cp.power(N0[i] + s * x[i], -g[i], approx=False) if g[i] > 1e-9 else A[i] * N0[i] ** 0 for i in range(m)]
        return L + cp.sum(cp.hstack(terms))
