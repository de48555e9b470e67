"""The covariance-backed datafit: dense centred moments (``p x p``, pairwise complete).

Every operation of :mod:`hclstat.moments.base` is a dense block operation on
the (column-scaled) sample covariance: ``O(p^2)`` memory, ``O(p^2 k)`` per
product, no dependence on ``n`` after the moment pass.
"""

from __future__ import annotations

import numpy as np

from ..factor_analysis import fa_noise
from ..utils import eigenvalues_above, singular_values_above, top_eigh, top_svd
from .base import Datafit
from .compute import Moments, moments_from_covariance

__all__ = ["CovarianceDatafit"]


class CovarianceDatafit(Datafit):
    """Dense centred moments as a datafit.

    Parameters
    ----------
    moments : Moments
        Centred second moments (pairwise complete with counts when entries are missing).
    scales : ndarray of shape (p,), optional
        Column scales ``s``: the datafit then represents ``diag(s) S diag(s)``
        (formed once, ``p x p``); factor-analysis fits still run on the raw
        blocks (so they are shared, memoised, with the rank search) and are rescaled.
    """

    def __init__(self, moments, *, scales=None):
        if not isinstance(moments, Moments):
            raise TypeError(f"moments: expected hclstat.Moments, got {type(moments).__name__}")
        self.moments = moments
        self.modalities = tuple(moments.modalities)
        self.dims = dict(moments.dims)
        self.n_samples = int(moments.n_samples)
        S = moments.covariance
        if scales is None:
            self.scales, self._S = None, S
        else:
            s = np.asarray(scales, dtype=np.float64)
            self.scales, self._S = s, S * s[:, None] * s[None, :]
        self._within, self._norms, self._lattice = {}, {}, (None, None, None)

    @classmethod
    def from_matrix(cls, covariance, dims, n_samples):
        """A datafit on a given covariance matrix (e.g. a population covariance)."""
        return cls(moments_from_covariance(covariance, dims, n_samples))

    def rescaled(self, scales):
        """The same moments with column scales ``scales`` (stacked (p,) array, absolute)."""
        return CovarianceDatafit(self.moments, scales=scales)

    def count(self, a, b):
        return self.moments.block_count(a, b)

    # ------------------------------------------------------------ products
    def covariance_matrix(self):
        """The whole (scaled) ``p x p`` covariance (a view; do not modify)."""
        return self._S

    def _block(self, a, b):
        sl = self.slices
        return self._S[sl[a], sl[b]]

    def dense_block(self, a):
        """``S_aa`` as a C-contiguous array (cached)."""
        if a not in self._within:
            self._within[a] = np.ascontiguousarray(self._block(a, a))
        return self._within[a]

    def cross(self, a, b, B):
        return self._block(a, b) @ B

    def diag(self, a):
        return np.diag(self._block(a, a)).copy()

    def stacked_diag(self):
        return np.diag(self._S).copy()

    def quadratic(self, W):
        out = W.T @ (self._S @ W)
        return 0.5 * (out + out.T)

    # ------------------------------------------------------------- spectra
    def norm2(self, a):
        if a not in self._norms:  # covariance blocks are PSD: the top eigenvalue is the norm
            self._norms[a] = float(top_eigh(self.dense_block(a), 1)[0][0])
        return self._norms[a]

    def _within_scaled(self, a, q):
        S = self.dense_block(a)
        return S if q is None else S * q[:, None] * q[None, :]

    def top_eigh(self, a, k, *, q=None, shift=None, low_rank=None):
        M = self._within_scaled(a, q)
        if shift is not None or low_rank is not None:
            M = M - (0.0 if shift is None else np.diag(shift)) - (0.0 if low_rank is None else low_rank @ low_rank.T)
        return top_eigh(M, k)

    def eigenvalues_above(self, a, tau, *, q=None, first=8):
        return eigenvalues_above(self._within_scaled(a, q), tau, first=first)

    def top_left_singular(self, a, b, k, La=None, Lb=None):
        R = self._block(a, b) if La is None else self._block(a, b) - La @ Lb.T
        return top_svd(R, k)[0]

    def cross_left_singular(self, a, others, k, *, q=None, q_others=None):
        """Top ``k`` left singular vectors of ``diag(q) S_{a,U} diag(q_U)``, ``U = others``
        (``q_others``: the stacked column scales of ``U``; default 1)."""
        cols, cross = self._cross_with_others(a)
        C = cross[:, np.concatenate([cols[o] for o in others])]
        if q is not None:
            C = C * q[:, None]
        if q_others is not None:
            C = C * q_others[None, :]
        return top_svd(C, k)[0]

    def residual_eigh(self, a, k, *, q=None, basis=None):
        """Top ``k`` eigenpairs of ``(I - Q Q^T) diag(q) S_aa diag(q) (I - Q Q^T)`` for an
        orthonormal ``basis`` ``Q`` of shape (p_a, j) (``None``: no projection)."""
        M = self._within_scaled(a, q)
        if basis is not None and basis.shape[1]:
            MQ = M @ basis
            M = M - basis @ MQ.T - MQ @ basis.T + basis @ ((basis.T @ MQ) @ basis.T)
        return top_eigh(0.5 * (M + M.T), k)

    def _cross_with_others(self, a):
        """``[S_ab]_{b != a}`` side by side and each ``b``'s columns in it (cached for the last ``a``)."""
        if self._lattice[0] != a:
            others = [o for o in self.modalities if o != a]
            cols, start = {}, 0
            for o in others:
                cols[o] = np.arange(start, start + self.dims[o])
                start += self.dims[o]
            cross = np.concatenate([self._block(a, o) for o in others], axis=1)
            self._lattice = (a, cols, cross)
        return self._lattice[1], self._lattice[2]

    def cross_singular_values(self, a, others, tau, *, max_count=None):
        """Singular values of ``S_{a,U}`` above ``tau`` (at least the largest), ``U = others``."""
        cols, cross = self._cross_with_others(a)
        idx = np.concatenate([cols[o] for o in others])
        return singular_values_above(cross[:, idx], tau)

    def cross_svd(self, a, others, k):
        """Top ``k`` singular triplets ``(U, s, V)`` of ``S_{a,U}`` (``S V = U diag(s)``), ``U = others``."""
        cols, cross = self._cross_with_others(a)
        U, s, Vt = top_svd(cross[:, np.concatenate([cols[o] for o in others])], k)
        return U, s, Vt.T

    def null_bound(self, a, others):
        """``(sqrt(tr S_aa ||S_UU||) + sqrt(tr S_UU ||S_aa||)) / sqrt(n)``: the expected spectral
        norm of the cross-covariance of independent blocks with these covariances."""
        Saa = self._block(a, a)
        sl = self.slices
        idx = np.concatenate([np.arange(sl[o].start, sl[o].stop) for o in others])
        SU = self._S[np.ix_(idx, idx)]
        tr_a, top_a = float(np.trace(Saa)), float(np.linalg.norm(Saa, 2))
        tr_u, top_u = float(np.trace(SU)), float(np.linalg.norm(SU, 2))
        return (np.sqrt(tr_a * top_u) + np.sqrt(tr_u * top_a)) / np.sqrt(self.n_samples)

    def fa_noise(self, a, r):
        """Rank-``r`` factor-analysis noise of ``S_aa``: :func:`hclstat.factor_analysis.fa_noise`
        on the raw block (memoised across callers), rescaled."""
        sl = self.slices[a]
        psi = fa_noise(self.moments.covariance[sl, sl], r)
        return psi if self.scales is None else psi * self.scales[sl] ** 2
