"""Mixed-type modalities in the estimators: the copula source and the Pearson guard.

:class:`~hclstat.estimators.hcl.HCL` with ``types`` set fits the latent
Gaussian copula moments (:mod:`hclstat.moments.copula`); without it, columns
that look binary or zero-inflated are named in an
:class:`~hclstat.exceptions.EstimationWarning`, since their Pearson moments
are not those of the latent factors.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..exceptions import EstimationWarning
from ..factor_analysis import NOISE_FLOOR
from ..moments.column_types import COLUMN_TYPES as MIXED_TYPES
from ..moments.copula import copula_moments, resolve_types

__all__ = ["MIXED_TYPES", "fit_copula", "latent_noise", "warn_mixed_columns"]
#: a column with at least this share of its rows at its minimum looks zero-inflated
_POINT_MASS = 0.05
#: rows looked at by the Pearson guard
_CHECK_ROWS = 5000


def fit_copula(types, arrays, names, *, stacklevel):
    """The copula moments for ``HCL(types=types)`` (see :func:`~hclstat.moments.copula.copula_moments`)."""
    resolved, orders = resolve_types(types, arrays, names, return_order=True)
    return resolved, copula_moments(arrays, resolved, names, orders=orders, stacklevel=stacklevel + 1)


def latent_noise(fitted_noise, margins, modalities, dims):
    """Latent noise variances ``psi_j = psi_tilde_j - (c_j - 1)`` (floored) from the copula fit."""
    out, start = {}, 0
    for m in modalities:
        c = margins.inflation[start:start + dims[m]]
        out[m] = np.maximum(fitted_noise[m] - (c - 1.0), NOISE_FLOOR)
        start += dims[m]
    return out


def warn_mixed_columns(arrays, names, *, stacklevel):
    """Name the modalities whose columns look binary or zero-inflated under Pearson moments.

    A cheap check on the first ``_CHECK_ROWS`` rows (two values only, or a
    point mass at the minimum), so every ``HCL().fit`` can afford it;
    ``types="auto"`` infers the types properly
    (:func:`~hclstat.moments.column_types.infer_types`).
    """
    found = []
    for m, x in arrays.items():
        x = np.asarray(x[:_CHECK_ROWS], dtype=np.float64)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no verdict
            lo, hi = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
            obs = (~np.isnan(x)).sum(axis=0)
            at_lo = (x == lo).sum(axis=0)
            two = ((x == lo) | (x == hi)).sum(axis=0) == obs
        binary = int(np.sum(two & (hi > lo)))
        massed = int(np.sum(~two & (at_lo >= _POINT_MASS * np.maximum(obs, 1))))
        if binary or massed:
            parts = [f"{binary} binary" if binary else "", f"{massed} with a point mass at the minimum" if massed else ""]
            found.append(f"{m!r}: {' and '.join(p for p in parts if p)} of {x.shape[1]} columns")
    if found:
        warnings.warn(
            "columns that are not continuous are fitted as linear-Gaussian (Pearson moments), which "
            f"attenuates and distorts their latent correlations: {'; '.join(found)}. Pass types='auto' "
            "(or per-modality types) to fit the latent Gaussian copula",
            EstimationWarning, stacklevel=stacklevel + 1,
        )
