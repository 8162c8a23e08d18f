"""The regressors by name (``assay-mix fit|propose --regressor``): every law of this package, and a
fitted one from a table."""

from __future__ import annotations

from assay.mixsearch.regressors.autoscale import AutoScaleLaw
from assay.mixsearch.regressors.base import Regressor, check_rows
from assay.mixsearch.regressors.bimix import BiMixLaw
from assay.mixsearch.regressors.gp import GaussianProcess
from assay.mixsearch.regressors.lightgbm import LightGBM
from assay.mixsearch.regressors.linear import Linear
from assay.mixsearch.regressors.loglinear import LogLinearLaw
from assay.mixsearch.regressors.projektor import ProjektorLaw

REGRESSORS: dict[str, type[Regressor]] = {
    cls.name: cls for cls in (LightGBM, Linear, LogLinearLaw, BiMixLaw, AutoScaleLaw, GaussianProcess, ProjektorLaw)
}


def make_regressor(name: str, seed: int = 0, table=None) -> Regressor:
    """The regressor ``name``, prepared for ``table`` when given (see :meth:`Regressor.prepare`)."""
    from assay.errors import UserError

    if name not in REGRESSORS:
        raise UserError("--regressor", name, f"unknown regressor; choose from {sorted(REGRESSORS)}")
    model = REGRESSORS[name](seed=seed)
    if table is not None:
        model.prepare(table)
    return model


def fit_regressor(name: str, table, seed: int = 0) -> Regressor:
    model = make_regressor(name, seed, table)
    check_rows(model, len(table.y), len(table.domains))
    return model.fit(table.X, table.y, table.scale)
