"""MATES's data influence model (Yu, Das & Xiong 2024, arXiv 2406.06046), CPU-cheap: ridge regression
from an example's embedding to its oracle influence.

The authors fine-tune bert-base-uncased with a one-output regression head on (text, oracle value)
pairs: targets z-normalised, MSE, a 90/10 split, and the checkpoint of best held-out Spearman kept
(``cxcscmu/MATES@5d2860c``: ``train_data_influence_model.py``). Here the features are frozen
embeddings (assay's embedders), standardised per dimension; the targets are z-normalised the same
way; the ridge penalty α is chosen from a grid by the held-out Spearman (the analogue of their
checkpoint selection: the one capacity knob a closed-form regressor has), and the chosen α is then
refitted on all pairs.

    w = argmin ‖Xw − z‖² + α‖w‖²,   z = (y − ȳ)/s_y,   prediction ŷ = ȳ + s_y · Xw

with X the standardised features (no intercept: both sides are centred). Solved in the primal
(XᵀX + αI)w = Xᵀz when there are more pairs than dimensions, else in the dual w = Xᵀ(XXᵀ + αI)⁻¹z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RidgeInfluenceModel:
    """A fitted regressor: standardisation of features and targets, and the weights."""

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    weights: np.ndarray
    target_mean: float
    target_scale: float
    alpha: float

    @classmethod
    def fit(cls, features: np.ndarray, values: np.ndarray, alpha: float) -> "RidgeInfluenceModel":
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
            raise ValueError(f"need at least 2 (embedding, value) pairs with one value per row; got features {x.shape}, values {y.shape}")
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant dimension carries nothing; leave it at 0
        ym, ys = float(y.mean()), float(y.std())
        ys = ys if ys > 0 else 1.0
        xs, z = (x - mean) / scale, (y - ym) / ys
        n, d = xs.shape
        if n >= d:
            w = np.linalg.solve(xs.T @ xs + alpha * np.eye(d), xs.T @ z)
        else:
            w = xs.T @ np.linalg.solve(xs @ xs.T + alpha * np.eye(n), z)
        return cls(mean, scale, w, ym, ys, float(alpha))

    def predict_z(self, features: np.ndarray) -> np.ndarray:
        """Predictions in the z-normalised units the model was fitted in (what the authors' BERT head outputs)."""
        return ((np.asarray(features, dtype=np.float64) - self.feature_mean) / self.feature_scale) @ self.weights

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions in the oracle's own units (a change of the reference loss)."""
        return self.target_mean + self.target_scale * self.predict_z(features)

    def state_dict(self) -> dict:
        return {"feature_mean": self.feature_mean.tolist(), "feature_scale": self.feature_scale.tolist(), "weights": self.weights.tolist(),
                "target_mean": self.target_mean, "target_scale": self.target_scale, "alpha": self.alpha}

    @classmethod
    def from_state(cls, state: dict) -> "RidgeInfluenceModel":
        return cls(np.asarray(state["feature_mean"]), np.asarray(state["feature_scale"]), np.asarray(state["weights"]),
                   float(state["target_mean"]), float(state["target_scale"]), float(state["alpha"]))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (NaN when either side is constant or has fewer than 2 values)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # scipy.stats costs 0.4 s to import: only where MATES validates

    return float(spearmanr(a, b).statistic)


def fit_influence_model(features: np.ndarray, values: np.ndarray, alphas: list[float], holdout: float, seed) -> tuple[RidgeInfluenceModel, dict]:
    """The influence model for these oracle pairs, and what its fit measured. A seeded ``holdout``
    share of the pairs (the authors' 10 %) is held out; every α of ``alphas`` is fitted on the rest
    and scored by the held-out Spearman; the best α (ties: the larger, smoother) is refitted on all
    pairs. With fewer than 2 held-out or 2 training pairs there is nothing to choose on: the first α."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(values, dtype=np.float64)
    n = len(y)
    held = int(round(holdout * n))
    report: dict = {"pairs": n, "heldout_pairs": held if 2 <= held <= n - 2 else 0}
    chosen = float(alphas[0])
    if report["heldout_pairs"]:
        order = np.random.default_rng(seed).permutation(n)
        test, train = order[:held], order[held:]
        rhos = {float(a): spearman(RidgeInfluenceModel.fit(x[train], y[train], a).predict(x[test]), y[test]) for a in alphas}
        finite = {a: r for a, r in rhos.items() if np.isfinite(r)}
        if finite:
            chosen = max(finite, key=lambda a: (finite[a], a))
        report["heldout_spearman"] = rhos.get(chosen, float("nan"))
        report["heldout_spearman_by_alpha"] = {str(a): r for a, r in rhos.items()}
    model = RidgeInfluenceModel.fit(x, y, chosen)
    report["alpha"] = chosen
    report["train_spearman"] = spearman(model.predict(x), y)
    return model, report
