"""Input validation and defaults shared by :func:`identify` and the checks."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from ..exceptions import IdentifiabilityError
from ..hierarchy import Hierarchy
from ..moments import Moments

NOISE_MODELS = ("isotropic", "diagonal", None)
#: default relative rank threshold; suits population covariances (exact up to rounding)
DEFAULT_TOL = 1e-8


def check_dims(dims):
    if isinstance(dims, Hierarchy):
        dims = dims.dims
    if not isinstance(dims, Mapping) or len(dims) == 0:
        raise TypeError(
            f"dims: expected a non-empty mapping modality name -> number of columns, got {dims!r}"
        )
    base = Hierarchy(dict(dims), {})  # validates names and sizes
    if base.n_modalities < 2:
        raise IdentifiabilityError(
            f"dims: identification from cross-covariances needs at least 2 modalities, "
            f"got {base.n_modalities} ({list(base.modalities)})"
        )
    return base


def check_covariance(covariance, base):
    if isinstance(covariance, Moments):
        covariance = covariance.covariance
    try:
        S = np.asarray(covariance, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"covariance: expected a square numeric array, got {type(covariance).__name__}"
        ) from None
    p = base.n_features
    if S.shape != (p, p):
        raise ValueError(
            f"covariance: expected shape ({p}, {p}) from dims {base.dims}, got {S.shape}"
        )
    if not np.all(np.isfinite(S)):
        raise ValueError("covariance: expected finite entries, got NaN or inf")
    asym = float(np.abs(S - S.T).max())
    if asym > 1e-8 * max(1.0, float(np.abs(S).max())):
        raise ValueError(f"covariance: expected a symmetric matrix, got max |S - S^T| = {asym:.3g}")
    return 0.5 * (S + S.T)


def check_noise_model(noise_model):
    if noise_model not in NOISE_MODELS:
        raise ValueError(
            f"noise_model: expected 'isotropic', 'diagonal' or None, got {noise_model!r}"
        )
    return noise_model


def check_tol(tol):
    if tol is None:
        return DEFAULT_TOL
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol: expected a number in (0, 1), got {tol!r}")
    return float(tol)

