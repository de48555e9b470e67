"""One unpenalised fit on a fixed support, on the noise scale it is given."""

from __future__ import annotations

import numpy as np

from .spectral import spectral_initialiser

__all__ = ["fit_support"]


def fit_support(solver, datafit, scale, support, h, A_start=None):
    """Fit loadings on ``support`` with ``solver``, on the datafit whitened by ``scale``.

    The objective is computed on ``D^{-1/2} S D^{-1/2}`` with ``D = diag(scale)``
    (so every pair is fitted on the scale of its noise); the start is the
    spectral initialiser on that scale, or ``A_start`` (original scale).

    Returns
    -------
    A : ndarray of shape (p, K)
        Loadings on the original scale.
    info : FitInfo
    """
    dh = 1.0 / np.sqrt(scale)
    dfw = datafit.rescaled(dh)
    A = spectral_initialiser(dfw, h) if A_start is None else A_start * dh[:, None]
    A, info = solver.fit(dfw, A, support)
    return A * np.sqrt(scale)[:, None], info
