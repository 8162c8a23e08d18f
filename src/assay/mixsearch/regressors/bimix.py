"""BiMix (Ge et al. 2024, arXiv 2405.14908): a bivariate law of a domain's loss in its proportion r_i
and the training quantity s,  L_i(r_i, s) = A_i / r_i^{α_i} · (B_i / s^{β_i} + C_i).

A_i only scales B_i and C_i, so the identifiable coefficients are P_i = A_i·B_i, Q_i = A_i·C_i, α_i, β_i.
A target over several domains (their weighted validation loss) is fitted as the sum of one such
term per domain (allenai/olmix's ``BimixRegressor`` does the same at one scale). When every proxy
ran at the same quantity, s carries no information and the law collapses to Σ_i F_i · r_i^{−α_i}.

r_i + ε with ε = 1e-3 keeps a domain that a proxy left out (RegMix zeroes tiny weights) finite: its
loss is then what the other domains teach, not infinity. Checked: the one-scale collapse is what
allenai/olmix's ``BimixRegressor`` fits (Σ_i F_i·x_i^{−α_i}, its docstring deriving it from BiMix), and
the bivariate form has the five coefficients per domain the paper's summary names (A_i, α_i, B_i, β_i,
C_i); the paper's own equation text was not available offline to compare symbol by symbol.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor, scale_ratio, varies

EPS = 1e-3
ALPHA_MAX, BETA_MAX = 4.0, 4.0


class BiMixLaw(Regressor):
    """BiMix's bivariate law of the loss in each domain's proportion and the training quantity."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ge et al. 2024, BiMix: Bivariate Data Mixing Law for LM Pretraining",
        arxiv="2405.14908",
        code="allenai/olmix: olmix/fit/utils.py (BimixRegressor, the one-scale collapse Σ_i F_i·x_i^(−α_i)), as the research "
             "note reads it; the paper released no code (research note)",
        deviations=(
            "The paper's equation was not available offline: the form L_i = A_i / r_i^α_i · (B_i / s^β_i + C_i) is from the "
            "research note (five coefficients per domain) and was not compared symbol by symbol.",
            "A target over several domains is fitted as a sum of one term per domain, as olmix; the paper fits domain i's loss "
            "against domain i's weight.",
            "r_i + 1e-3 keeps a domain that a proxy left out finite; α, β bounded in [0, 4].",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: recovers a bivariate law, and its one-scale collapse "
                "(synthetic)",
    )

    name = "bimix"
    uses_scale = True

    def n_params(self, m: int) -> int:
        return 4 * m if getattr(self, "_two_d", False) else 2 * m

    def fit(self, X, y, scale=None):
        X, y = np.asarray(X, float), np.asarray(y, float)
        n, m = X.shape
        self._two_d = varies(scale)
        self.s_ref = float(np.median(scale)) if self._two_d else None
        s = scale_ratio(scale, n, self.s_ref)
        logr = np.log(X + EPS)
        best = None
        for a0 in (0.05, 0.3, 1.0):
            for b0 in ((0.3, 1.0) if self._two_d else (0.0,)):
                powr = np.exp(-a0 * logr)
                if self._two_d:
                    design = np.hstack([powr * s[:, None] ** (-b0), powr])
                else:
                    design = powr
                lin = lsq_linear(design, y, bounds=(0, np.inf)).x
                p0 = np.r_[lin, np.full(m, a0)] if not self._two_d else np.r_[lin, np.full(m, a0), np.full(m, b0)]
                k = len(lin)
                lo = np.r_[np.zeros(k), np.zeros(m), np.zeros(m if self._two_d else 0)]
                hi = np.r_[np.full(k, np.inf), np.full(m, ALPHA_MAX), np.full(m if self._two_d else 0, BETA_MAX)]
                r = least_squares(lambda p: self._eval(p, logr, s, m) - y, np.clip(p0, lo, hi), jac=lambda p: self._jac(p, logr, s, m),
                                  bounds=(lo, hi), x_scale="jac", max_nfev=2000)
                if best is None or r.cost < best.cost:
                    best = r
        self.p = best.x
        return self

    def _eval(self, p, logr, s, m):
        if self._two_d:
            P, Q, a, b = p[:m], p[m : 2 * m], p[2 * m : 3 * m], p[3 * m :]
            return (np.exp(-a * logr) * (P * s[:, None] ** (-b) + Q)).sum(axis=1)
        F, a = p[:m], p[m:]
        return (F * np.exp(-a * logr)).sum(axis=1)

    def _jac(self, p, logr, s, m):
        if self._two_d:
            P, Q, a, b = p[:m], p[m : 2 * m], p[2 * m : 3 * m], p[3 * m :]
            ra = np.exp(-a * logr)
            sb = s[:, None] ** (-b)
            return np.hstack([ra * sb, ra, -logr * ra * (P * sb + Q), -ra * P * sb * np.log(s)[:, None]])
        F, a = p[:m], p[m:]
        ra = np.exp(-a * logr)
        return np.hstack([ra, -F * logr * ra])

    def predict(self, X, scale=None):
        X = np.asarray(X, float)
        return self._eval(self.p, np.log(X + EPS), scale_ratio(scale, len(X), self.s_ref), X.shape[1])

    def params(self):
        m = len(self.p) // (4 if self._two_d else 2)
        if self._two_d:
            return {"P": self.p[:m].tolist(), "Q": self.p[m : 2 * m].tolist(), "alpha": self.p[2 * m : 3 * m].tolist(), "beta": self.p[3 * m :].tolist(), "s_ref": self.s_ref}
        return {"F": self.p[:m].tolist(), "alpha": self.p[m:].tolist()}

    def convex_objective(self, x, scale: Optional[float] = None):
        import cvxpy as cp

        m = x.shape[0]
        s = float(scale_ratio(scale, 1, self.s_ref)[0])
        if self._two_d:
            coef = self.p[:m] * s ** (-self.p[3 * m :]) + self.p[m : 2 * m]
            alpha = self.p[2 * m : 3 * m]
        else:
            coef, alpha = self.p[:m], self.p[m:]
        # r^{-α} with α >= 0 is convex on r > 0; a term with α = 0 is a constant.
        terms = [coef[i] * cp.power(x[i] + EPS, -alpha[i], approx=False) if alpha[i] > 1e-9 else coef[i] for i in range(m)]
        return cp.sum(cp.hstack(terms))
