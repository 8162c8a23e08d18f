"""Ground costs: LAVA's feature cost c(x, y) = ‖x − y‖²/2 and its class term λ_y·W(a, b)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from assay.lazy import torch


def feature_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """c(x, y) = ‖x − y‖² / 2, LAVA's p = 2 ground cost (the 1/2 makes its gradient x − y)."""
    c = 0.5 * (x * x).sum(1)[:, None] + 0.5 * (y * y).sum(1)[None, :] - x @ y.T
    return c.clamp_min_(0)


def mean_feature_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean of c over all N·M pairs, in closed form: (E‖x‖² + E‖y‖²)/2 − x̄·ȳ (no N×M matrix)."""
    return float(half_sq_norms(x).mean() + half_sq_norms(y).mean() - x.mean(0) @ y.mean(0))


def half_sq_norms(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """scale·‖x_i‖²/2 per row, without an N×d temporary (1.5 GB for a million 384-d float32 rows)."""
    return torch.linalg.vector_norm(x, dim=1).square_().mul_(0.5 * scale)


def label_distances(
    x: np.ndarray, lx: np.ndarray, y: np.ndarray, ly: np.ndarray, classes: list, max_points: int, seed: int
) -> np.ndarray:
    """W[a, b] = OT_c(P_pool(x | a), P_target(x | b)) for every pair of classes: the OTDD label cost
    (Alvarez-Melis & Fusi 2020) that LAVA adds to the feature cost. Exact ``ot.emd2`` on at most
    ``max_points`` seeded samples per class (the distance of two empirical measures converges as the
    samples grow; 500 per side keeps each solve well under a second)."""
    import ot

    rng = np.random.default_rng(seed)

    def sample(z, labels, c):
        rows = np.flatnonzero(labels == c)
        if len(rows) > max_points:
            rows = np.sort(rng.choice(rows, max_points, replace=False))
        return torch.as_tensor(z[rows], dtype=torch.float64)

    xs = [sample(x, lx, c) for c in classes]
    ys = [sample(y, ly, c) for c in classes]
    w = np.zeros((len(classes), len(classes)))
    for a, xa in enumerate(xs):
        for b, yb in enumerate(ys):
            m = feature_cost(xa, yb)
            w[a, b] = float(ot.emd2(torch.full((len(xa),), 1.0 / len(xa), dtype=torch.float64), torch.full((len(yb),), 1.0 / len(yb), dtype=torch.float64), m, numItermax=10_000_000))
    return w


@dataclass
class Labels:
    """Class labels of pool and target for LAVA's ground cost d((x,a),(x',b)) = λ_x·c(x, x') + λ_y·W(a, b)."""

    x: np.ndarray
    y: np.ndarray
    lambda_y: float = 1.0
    max_points: int = 500
    """Examples per class (each side) in the class-to-class distances W."""
    balance: bool = True
    """Target mass per class = the pool's class share (see ``LabelCost``)."""


class LabelCost:
    """The class term λ_y·W(a_i, b_j) of the ground cost, served in row blocks, with the target
    weights it implies and its mean over the pool/target pairs.

    With ``balance`` the target mass per class is the pool's class share, spread evenly within the
    class. With LAVA's uniform weights, a class that is more frequent in the pool than in the small
    target set must ship its surplus to other classes at cost W(a, b), and every point of that class
    looks harmful; balancing leaves the within-class quality as the signal."""

    def __init__(self, x: np.ndarray, y: np.ndarray, labels: Labels, seed: int, dtype: torch.dtype, device: torch.device):
        lx, ly = np.asarray(labels.x), np.asarray(labels.y)
        classes = sorted(set(lx.tolist()), key=str)
        if set(ly.tolist()) != set(classes):
            raise ValueError(f"pool classes {classes} and target classes {sorted(set(ly.tolist()), key=str)} differ")
        w = label_distances(x, lx, y, ly, classes, labels.max_points, seed)
        code = {c: i for i, c in enumerate(classes)}
        self.codes = np.asarray([code[c] for c in lx.tolist()])
        """Class index of every pool point."""
        cy = np.asarray([code[c] for c in ly.tolist()])
        self._cx = torch.as_tensor(self.codes, device=device)
        self._cy = torch.as_tensor(cy, device=device)
        self._w = torch.as_tensor(labels.lambda_y * w, dtype=dtype, device=device)
        px = np.bincount(self.codes, minlength=len(classes)) / len(lx)
        py = np.bincount(cy, minlength=len(classes)) / len(ly)
        self.b: Optional[torch.Tensor] = None
        """Target weights (None = uniform)."""
        if labels.balance:
            b = px[cy] / np.bincount(cy, minlength=len(classes))[cy]
            self.b = torch.as_tensor(b / b.sum(), dtype=dtype, device=device)
            py = px
        self.mean = float(px @ (labels.lambda_y * w) @ py)
        """Mean of the class term under the pool and target class shares."""

    def rows(self, subset: Optional[np.ndarray] = None) -> Callable[[slice], torch.Tensor]:
        """``extra_cost(rows)`` for the solvers: the [rows, M] block of the class term, over the pool
        or over its points ``subset``."""
        cx = self._cx if subset is None else self._cx[torch.as_tensor(subset, device=self._cx.device)]
        return lambda rows: self._w[cx[rows]][:, self._cy]
