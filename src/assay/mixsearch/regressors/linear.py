"""Linear regression of the target on the weights (RegMix's linear variant)."""

from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor


class Linear(Regressor):
    """Linear regression of the target on the weights (RegMix's linear variant): y = Σ_j t_j r_j.

    The weights sum to one, so an intercept c is the same as adding c to every t_j: t_j is the loss
    the law predicts for training on domain j alone."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Liu et al. 2024, RegMix: Data Mixture as Regression for Language Model Pre-training (ICLR 2025), its linear variant",
        arxiv="2407.01492",
        code="sail-sg/regmix: regression_fitting/regression.ipynb — not checked",
        deviations=("No separate intercept: the weights sum to one, so an intercept is absorbed into the coefficients.",),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: recovers known per-domain losses (synthetic)",
    )

    name = "linear"

    def n_params(self, m: int) -> int:
        return m

    def fit(self, X, y, scale=None):
        self.t, *_ = np.linalg.lstsq(np.asarray(X, float), np.asarray(y, float), rcond=None)
        return self

    def predict(self, X, scale=None):
        return np.asarray(X, float) @ self.t

    def params(self):
        return {"t": self.t.tolist()}

    def convex_objective(self, x, scale: Optional[float] = None):
        return self.t @ x
