"""Linear regression of the target on the weights (RegMix's linear variant)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from assay.mixsearch.regressors.base import Regressor


class Linear(Regressor):
    """y = Σ_j t_j r_j. The weights sum to one, so an intercept c is the same as adding c to every
    t_j: t_j is the loss the law predicts for training on domain j alone."""

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
