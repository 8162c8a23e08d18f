"""The regressor interface and the shared least-squares fitting of parametric laws."""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any, Optional

import numpy as np

from assay.errors import UserError


class Regressor(ABC):
    name: str = ""
    smooth: bool = True
    """The prediction has a gradient in the weights (a continuous optimiser can use it)."""
    uses_scale: bool = False
    """The law has a data-quantity variable (BiMix, AutoScale)."""
    needs: str = ""
    """What the law reads beyond the table ('' = nothing); ``--regressor all`` leaves such laws out."""
    batch_predict: bool = True
    """Predicting many mixtures at once is cheap (the simulation scores 100k of them); Projektor solves
    one OT problem per mixture and is proposed by its own gradient instead."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abstractmethod
    def n_params(self, m: int) -> int:
        """Free parameters of the law over m domains."""

    def min_rows(self, m: int) -> int:
        """Fewest proxies the fit is defined for: one more than the free parameters."""
        return self.n_params(m) + 1

    def prepare(self, table: Any) -> None:
        """Read what the law needs beyond the weights and targets from the table it will be fitted on
        (Projektor: the sources' pilot samples); the other laws need nothing."""

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, scale: Optional[np.ndarray] = None) -> "Regressor":
        """Fit to proxies X [n, m] and targets y [n] (scale: their data quantities)."""

    @abstractmethod
    def predict(self, X: np.ndarray, scale: Optional[np.ndarray | float] = None) -> np.ndarray:
        """Predicted targets of mixtures X [k, m]."""

    def params(self) -> dict[str, Any]:
        return {}

    def convex_objective(self, x, scale: Optional[float] = None):
        """A cvxpy expression of the prediction at the variable ``x`` (None: not a convex program)."""
        return None


def check_rows(model: Regressor, n: int, m: int, held_out: int = 0) -> None:
    """The fit on ``n`` rows of the table less ``held_out`` (a held-out evaluation) is defined."""
    need = model.min_rows(m)
    if n - held_out < need:
        if not held_out:
            raise UserError("--regressor", model.name, f"needs at least {need} proxies for {m} domains ({model.n_params(m)} parameters); the table has {n}")
        raise UserError("--regressor", model.name, f"needs at least {need} proxies for {m} domains ({model.n_params(m)} parameters) "
                        f"to fit with {held_out} held out, so a table of at least {need + held_out} rows; the table has {n}")


def scale_ratio(scale: Optional[np.ndarray | float], n: int, ref: Optional[float]) -> np.ndarray:
    """Data quantity in units of the fit's reference quantity (1 where the law ignores it)."""
    if scale is None or ref is None:
        return np.ones(n)
    s = np.broadcast_to(np.asarray(scale, dtype=float), (n,))
    return s / ref


def varies(scale: Optional[np.ndarray]) -> bool:
    return scale is not None and np.ptp(np.log(np.asarray(scale, dtype=float))) > 1e-6
