"""Gradient-boosted trees (LightGBM), RegMix's regressor (Liu et al. 2024, regression.ipynb: gbdt,
learning rate 1e-2, up to 1,000 rounds, early stopping after 3 rounds). RegMix early-stops on its
test mixtures; here the stopping set is a held-out fifth of the training proxies, so the reported
held-out quality stays honest."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.mixsearch.regressors.base import Regressor

LEARNING_RATE = 1e-2
ROUNDS = 1000
EARLY_STOP = 3


class LightGBM(Regressor):
    """Gradient-boosted trees (LightGBM), RegMix's regressor."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Liu et al. 2024, RegMix: Data Mixture as Regression for Language Model Pre-training (ICLR 2025)",
        arxiv="2407.01492",
        code="sail-sg/regmix: regression_fitting/regression.ipynb (LGBMRegressor), as the research note reads it; not re-read",
        deviations=(
            "Early stopping on a held-out fifth of the training proxies; RegMix stops on its test mixtures, which lets them "
            "into the fit. Under 20 proxies there is no early stopping.",
            "min_child_samples = max(2, min(20, n // 10)) so that small tables can split (LightGBM's default 20).",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_regressors.py: learns a piecewise-constant law (synthetic)",
        notes="Fixed in the module, as RegMix: gbdt, learning rate 1e-2, up to 1,000 rounds, early stopping after 3. Piecewise "
              "constant: propose with the simulation (optimize refuses it).",
    )

    name = "lightgbm"
    smooth = False  # piecewise constant: no gradient for a continuous optimiser

    def n_params(self, m: int) -> int:
        return 7

    def fit(self, X, y, scale=None):
        import lightgbm as lgb

        X, y = np.asarray(X, float), np.asarray(y, float)
        n = len(y)
        kw = dict(objective="regression", learning_rate=LEARNING_RATE, n_estimators=ROUNDS, random_state=self.seed,
                  min_child_samples=max(2, min(20, n // 10)), verbose=-1, n_jobs=1)
        self.model = lgb.LGBMRegressor(**kw)
        if n >= 20:
            rng = np.random.default_rng(self.seed)
            held = rng.permutation(n)[: max(2, n // 5)]
            train = np.setdiff1d(np.arange(n), held)
            import inspect

            # lightgbm >= 4.7 names the stopping set eval_X / eval_y (eval_set is deprecated there)
            held_set = {"eval_X": (X[held],), "eval_y": (y[held],)} if "eval_X" in inspect.signature(self.model.fit).parameters else {"eval_set": [(X[held], y[held])]}
            self.model.fit(X[train], y[train], **held_set, callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)])
        else:
            self.model.fit(X, y)
        return self

    def predict(self, X, scale=None):
        return self.model.predict(np.asarray(X, float))

    def params(self):
        return {"rounds": int(self.model.best_iteration_ or self.model.n_estimators), "importance": self.model.feature_importances_.tolist()}
