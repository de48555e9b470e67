"""Moment sources: centred second moments and the datafits built on them.

* :mod:`~hclstat.moments.compute` — :class:`Moments` in one pass over the data
  (pairwise complete with counts; numpy or dask);
* :mod:`~hclstat.moments.base` — the datafit interface the solvers and the rank
  lattice use, and :func:`require`;
* :mod:`~hclstat.moments.covariance` — :class:`CovarianceDatafit`, dense moments;
* :mod:`~hclstat.moments.data` — :class:`CentredData`, products with the centred rows;
* :mod:`~hclstat.moments.krylov` — block Lanczos for the data-backed spectra.
"""

from .base import Datafit, require
from .compute import _CHUNK_ENTRIES, Moments, _moments_numpy, check_views, compute_moments, moments_from_covariance
from .covariance import CovarianceDatafit
from .data import CentredData
from .krylov import block_lanczos

__all__ = [
    "CentredData",
    "CovarianceDatafit",
    "Datafit",
    "Moments",
    "block_lanczos",
    "compute_moments",
    "moments_from_covariance",
    "require",
]
