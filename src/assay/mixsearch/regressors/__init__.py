"""Regressors of a target metric over mixtures (and data quantity): one module per law.

Every regressor has the same small interface (:class:`~assay.mixsearch.regressors.base.Regressor`):
``fit(X, y, scale)``, ``predict(X, scale)``, ``params()``, ``min_rows(m)``; capabilities say what a
proposer may do with it (``smooth``: a gradient exists; ``convex_objective``: an exact convex
program over the simplex).

Modules: ``base`` (the interface), one module per law, ``registry`` (the regressors by name).
"""

from assay.mixsearch.regressors.base import Regressor, check_rows
from assay.mixsearch.regressors.registry import REGRESSORS, fit_regressor, make_regressor

__all__ = ["REGRESSORS", "Regressor", "check_rows", "fit_regressor", "make_regressor"]
