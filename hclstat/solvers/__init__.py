"""Solvers of the HCL objective on a datafit (:mod:`hclstat.moments.base`).

* :mod:`~hclstat.solvers.base` — :class:`Solver` (declares the datafit operations it needs), :class:`FitInfo`;
* :mod:`~hclstat.solvers.objective` — the dense objective :func:`hcl_objective`;
* :mod:`~hclstat.solvers.row_ls` — :class:`RowLeastSquares`: exact row least squares with
  extrapolation and the penalised majorise-minimise sweeps, on dense moments;
* :mod:`~hclstat.solvers.product_mm` — :class:`ProductMajoriseMinimise`: block
  majorise-minimise steps from products with the data;
* :mod:`~hclstat.solvers.spectral` — the spectral (Möbius) initialiser;
* :mod:`~hclstat.solvers.fit`, :mod:`~hclstat.solvers.path`, :mod:`~hclstat.solvers.selection`,
  :mod:`~hclstat.solvers.pipeline` — one fit on a support, the penalised path, BIC and merging,
  and the pipeline the estimators run.
"""

from .base import FitInfo, Solver
from .objective import hcl_objective
from .pipeline import PatternFit, fit_hierarchy, path_disagreements
from .product_mm import ProductMajoriseMinimise
from .row_ls import RowLeastSquares
from .selection import gaussian_bic
from .spectral import spectral_initialiser

__all__ = [
    "FitInfo",
    "PatternFit",
    "ProductMajoriseMinimise",
    "RowLeastSquares",
    "Solver",
    "fit_hierarchy",
    "gaussian_bic",
    "hcl_objective",
    "path_disagreements",
    "spectral_initialiser",
]
