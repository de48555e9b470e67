"""The datafit interface: what solvers and the rank lattice ask of a moment source.

A *datafit* represents the centred second moments ``S`` of the stacked
modalities, possibly column-scaled (``diag(s) S diag(s)``, the noise whitening
of the fit), without saying how they are stored. Solvers
(:mod:`hclstat.solvers`) and the rank lattice (:mod:`hclstat.lattice`) only
call the operations below; each source implements those it can:

========================  ===========================================================
operation                 meaning (``S_ab``: block of modalities ``a, b``)
========================  ===========================================================
``rescaled(s)``           the same source with column scales ``s`` (stacked, absolute)
``count(a, b)``           rows behind block ``(a, b)`` (pairwise counts when missing)
``cross(a, b, B)``        ``S_ab @ B``
``diag(a)``               diagonal of ``S_aa``
``quadratic(W)``          ``W^T S W`` for a stacked ``W`` of shape (p, k)
``norm2(a)``              spectral norm of ``S_aa``
``top_eigh(a, k, ...)``   top eigenpairs of ``diag(q) S_aa diag(q) - diag(shift) - L L^T``
``eigenvalues_above``     every eigenvalue of ``diag(q) S_aa diag(q)`` above a level
``top_left_singular``     top left singular vectors of ``S_ab - L_a L_b^T``
``cross_singular_values`` singular values of ``S_{a,U}`` above a level (the lattice)
``cross_svd(a, U, k)``    top ``k`` singular triplets of ``S_{a,U}`` (deflated lattice counts)
``cross_left_singular``   top left singular vectors of ``S_{a,others}`` (scaled): the shared subspace
``residual_eigh``         eigenpairs of ``S_aa`` (scaled) with a basis projected out (specific ranks)
``permutation_nulls``     top singular value of ``S_{a,U}`` under row permutations
``null_bound``            analytic null level of ``S_{a,U}`` (no rows needed)
``fa_noise(a, r)``        rank-``r`` factor-analysis noise of ``S_aa``
``dense_block(a)``        ``S_aa`` as an array (asked only for narrow modalities)
``covariance_matrix()``   all of ``S`` as a ``p x p`` array (dense solvers)
``matmat / rmatmat``      products with the centred data (product solvers)
``objective_constant``    ``sum_{a<b} ||S_ab||^2 + gamma/2 sum_a ||S_aa||^2``
========================  ===========================================================

Sources today: :class:`~hclstat.moments.covariance.CovarianceDatafit` (dense
centred moments, pairwise complete with counts) and
:class:`~hclstat.moments.data.CentredData` (products with the centred rows,
for wide modalities). A missing-aware row source (counts per block; its
permutation null moves each row's mask with its values and divides by the
same counts) or a rank-based copula source (latent correlations) is a new
module here implementing the same operations. A solver names what it needs
(``required_operations``) and :func:`require` says which are missing.
"""

from __future__ import annotations

import numpy as np

from .compute import _slices

__all__ = ["Datafit", "require"]


def require(datafit, operations, user):
    """Raise a TypeError naming every operation of ``operations`` that ``datafit`` lacks.

    Parameters
    ----------
    datafit : object
    operations : iterable of str
        Names of the methods ``user`` calls.
    user : str
        Who asks (a solver or a threshold policy), for the message.
    """
    missing = [op for op in operations if not callable(getattr(datafit, op, None))]
    if missing:
        raise TypeError(
            f"{user} needs the datafit operations {missing}, which {type(datafit).__name__} does not implement; "
            "choose a datafit that provides them (see hclstat.moments.base)"
        )
    return datafit


class Datafit:
    """Common structure of every moment source (see the module docstring).

    Subclasses set ``modalities`` (tuple of str), ``dims`` (dict of str to
    int) and ``n_samples`` (int) and implement the operations they can; the
    generic ones here are derived from :meth:`cross`, :meth:`diag` and
    :meth:`top_eigh`.
    """

    modalities: tuple = ()
    dims: dict = {}
    n_samples: int = 0

    @property
    def slices(self):
        """``{modality: slice}`` of the stacked features."""
        return _slices(self.modalities, self.dims)

    @property
    def n_features(self):
        return int(sum(self.dims.values()))

    def split(self, v):
        """Split a stacked (p, ...) array into ``{modality: block}`` views."""
        return {m: v[s] for m, s in self.slices.items()}

    def count(self, a, b):
        """Rows behind block ``(a, b)`` (every row for a complete source)."""
        return self.n_samples

    def stacked_diag(self):
        """Diagonal of ``S``, shape (p,)."""
        return np.concatenate([self.diag(m) for m in self.modalities])

    def quadratic(self, W):
        """``W^T S W`` for a stacked ``W`` of shape (p, k), from block products."""
        parts = self.split(np.asarray(W, dtype=np.float64))
        k = W.shape[1]
        out = np.zeros((k, k))
        for a in self.modalities:
            acc = sum(self.cross(a, b, parts[b]) for b in self.modalities)
            out += parts[a].T @ acc
        return 0.5 * (out + out.T)

    def eigenvalues_above(self, a, tau, *, q=None, first=8):
        """Every eigenvalue of ``diag(q) S_aa diag(q)`` above ``tau`` (at least the largest),
        by :meth:`top_eigh` for a doubling count."""
        p = self.dims[a]
        k = min(first, p)
        while True:
            w = self.top_eigh(a, k, q=q)[0]
            if w.size < k or w[-1] <= tau or k >= p:
                return w[: max(1, int(np.sum(w > tau)))]
            k = min(2 * k, p)
