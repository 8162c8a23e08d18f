"""Regressors of a target metric over mixtures (and data quantity): one module per law.

Every regressor has the same small interface (:class:`~assay.mixsearch.regressors.base.Regressor`):
``fit(X, y, scale)``, ``predict(X, scale)``, ``params()``, ``min_rows(m)``; capabilities say what a
proposer may do with it (``smooth``: a gradient exists; ``convex_objective``: an exact convex
program over the simplex).
"""

from __future__ import annotations

from assay.mixsearch.regressors.autoscale import AutoScaleLaw
from assay.mixsearch.regressors.base import Regressor, check_rows
from assay.mixsearch.regressors.bimix import BiMixLaw
from assay.mixsearch.regressors.gp import GaussianProcess
from assay.mixsearch.regressors.lightgbm import LightGBM
from assay.mixsearch.regressors.linear import Linear
from assay.mixsearch.regressors.loglinear import LogLinearLaw

REGRESSORS: dict[str, type[Regressor]] = {
    cls.name: cls for cls in (LightGBM, Linear, LogLinearLaw, BiMixLaw, AutoScaleLaw, GaussianProcess)
}


def make_regressor(name: str, seed: int = 0) -> Regressor:
    from assay.errors import UserError

    if name not in REGRESSORS:
        raise UserError("--regressor", name, f"unknown regressor; choose from {sorted(REGRESSORS)}")
    return REGRESSORS[name](seed=seed)


def fit_regressor(name: str, table, seed: int = 0) -> Regressor:
    model = make_regressor(name, seed)
    check_rows(model, len(table.y), len(table.domains))
    return model.fit(table.X, table.y, table.scale)


__all__ = ["REGRESSORS", "Regressor", "fit_regressor", "make_regressor"]
