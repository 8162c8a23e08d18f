"""Gaussian-process regression (scikit-learn): constant × RBF + white noise, as allenai/olmix's
``GPRegressor``. With proxies at several data quantities, log(quantity) is one more input."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor, varies


class GaussianProcess(Regressor):
    """Gaussian-process regression: constant × RBF + white noise."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        code="allenai/olmix: olmix/fit/utils.py (GPRegressor: constant × RBF + white noise), as the research note reads it; its "
             "hyper-parameters were not checked",
        deviations=(
            "normalize_y, 2 optimizer restarts, and log(quantity) as one more input when proxies ran at several quantities: "
            "assay's choices.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: recovers a known length scale and noise (synthetic)",
        notes="A non-parametric baseline among the regressors olmix compares, not a paper's law.",
    )

    name = "gp"

    def n_params(self, m: int) -> int:
        return 3  # amplitude, length scale, noise

    def min_rows(self, m: int) -> int:
        return 4

    def _inputs(self, X, scale):
        X = np.asarray(X, float)
        if not self._with_scale:
            return X
        s = np.broadcast_to(np.asarray(scale, dtype=float), (len(X),))
        return np.hstack([X, np.log(s)[:, None] - self._log_ref])

    def fit(self, X, y, scale=None):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        self._with_scale = varies(scale)
        self._log_ref = float(np.median(np.log(scale))) if self._with_scale else 0.0
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(0.5, (1e-2, 1e2)) + WhiteKernel(1e-2, (1e-8, 1e1))
        self.gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=self.seed)
        self.gp.fit(self._inputs(X, scale), np.asarray(y, float))
        return self

    def predict(self, X, scale=None):
        X = np.asarray(X, float)
        out = np.empty(len(X))
        for i in range(0, len(X), 8192):  # the cross-kernel of 100k samples × 512 proxies in pieces
            out[i : i + 8192] = self.gp.predict(self._inputs(X[i : i + 8192], scale if scale is None or np.ndim(scale) == 0 else scale[i : i + 8192]))
        return out

    def params(self):
        k = self.gp.kernel_
        return {"amplitude": float(k.k1.k1.constant_value), "length_scale": float(k.k1.k2.length_scale), "noise": float(k.k2.noise_level)}
