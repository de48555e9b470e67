"""Matrix-free HCL for modalities with many columns (issue 8, "Large p").

:class:`HCL` starts from the ``p x p`` sample covariance: ``O(n p^2)`` flops
and ``8 p^2`` bytes once, then ``O(p^2 K)`` per alternation. With thousands to
tens of thousands of columns per modality both costs dominate.
:class:`MatrixFreeHCL` is the same estimator on another datafit: the centred
rows as an operator (:class:`~hclstat.moments.data.CentredData`, every covariance
block only through products with thin matrices, spectra by block Lanczos), with
the solver that needs only such products
(:class:`~hclstat.solvers.product_mm.ProductMajoriseMinimise`). The rank lattice,
the specific-rank tests, the initialiser, the penalised path and the BIC are the
same code as for :class:`HCL`, reading the datafit.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..data import check_views, is_dask_array
from ..moments.data import CentredData
from ..moments.krylov import block_lanczos
from ..solvers import ProductMajoriseMinimise
from ..threads import small_block_threads
from ..utils import random_streams
from .hcl import HCL

__all__ = ["CentredData", "MatrixFreeHCL", "block_lanczos"]


class MatrixFreeHCL(HCL):
    """HCL for wide modalities: no ``p x p`` moment block is ever formed.

    Same parameters, objective and fitted attributes as :class:`HCL`; it fits
    on the data-backed datafit :class:`~hclstat.moments.data.CentredData` with
    :class:`~hclstat.solvers.product_mm.ProductMajoriseMinimise`. Memory is the
    data plus ``O((n + p) K)``; each alternation costs ``O(n p K)`` flops
    (against ``O(n p^2)`` once plus ``O(p^2 K)`` per alternation for :class:`HCL`).

    What differs from :class:`HCL` is what the datafit and solver do:

    * **spectra**: top singular values / eigenpairs (rank lattice, Tracy-Widom
      rule, initialiser) by block Krylov iterations to a relative Ritz-value
      change of 1e-9 (1e-6 where values are only counted against a threshold);
      the same joint permutations are drawn, so with the same ``random_state``
      and ``n <= permutation_rows`` the thresholds agree with :class:`HCL`'s to
      that accuracy. On a row subsample (``n > permutation_rows``) the nulls are
      rescaled to first order only (matching the subsample's covariances to the
      full sample's, as :class:`HCL` does, would need the ``p x p`` blocks):
      measured up to ~5% higher thresholds. Specific ranks of
      narrow modalities (``p_m^2 <= n``, likelihood-ratio test) use the
      ``p_m x p_m`` block, then no larger than one column of the data.
    * **factor-analysis noise**: the same Gaussian factor fit, by
      principal-factor iteration from products (:meth:`CentredData.fa_noise`)
      instead of L-BFGS on the profile likelihood.
    * **block updates**: majorise-minimise steps instead of exact row least
      squares (both converge to stationary points of the same objective).
    * **objective**: monitored without its constant
      ``C = sum_{a<b} ||S_ab||_F^2 + gamma/2 sum_a ||S_aa||_F^2``;
      ``objective_path_`` holds ``F(A) - C`` (what matters for monotonicity), the
      stopping rule divides by ``|F - C + C_hat|`` with ``C_hat`` a Hutchinson
      estimate (16 probes per modality). The ``objective`` column of
      ``selection_path_`` is likewise ``F - C`` plus the penalty.

    Missing entries are not supported (use :class:`HCL`, whose moments are
    pairwise complete); :meth:`fit_moments` is not available (moments are
    what this estimator avoids).

    Parameters
    ----------
    See :class:`HCL`.

    Attributes
    ----------
    See :class:`HCL`; in addition

    objective_constant_estimate_ : float
        ``C_hat`` of the final refit (whitened scale).
    """

    _accepts_missing = False  # products with complete rows (see fit)

    def _solver(self):
        return ProductMajoriseMinimise(gamma=self.gamma, tol=self.tol, max_iter=self.max_iter)

    def fit(self, views, y=None):
        """Fit from views (dict modality name -> (n, p_m) table, or a list)."""
        self._validate_params()
        self._check_combination()
        # missing entries would need pairwise-complete products: HCL handles them
        arrays, names = check_views(views, allow_missing=False)
        for m, a in arrays.items():
            if is_dask_array(a):
                raise TypeError(
                    f"modality {m!r}: MatrixFreeHCL needs in-memory arrays, got a dask array; "
                    "use HCL (its moments are computed by dask) or load the array"
                )
        # the streams HCL.fit derives: row subsample, permutations, Krylov starts
        rows_rng, perm_rng, krylov_rng = random_streams(self.random_state, 3)
        op = CentredData(arrays, random_state=krylov_rng)
        self.modalities_ = tuple(op.modalities)
        self.dims_ = dict(op.dims)
        self.n_samples_ = int(op.n_samples)
        self.means_ = {m: op.means[m].copy() for m in op.modalities}
        self.feature_names_ = dict(names)
        self._check_dims(op)
        null = None
        if self.hierarchy is None:
            n = op.n_samples
            null = op.subset(np.sort(rows_rng.choice(n, self.permutation_rows, replace=False))) \
                if n > self.permutation_rows else op
        with small_block_threads(sum(op.dims.values())):
            fit = self._fit_datafit(op, null, perm_rng, stacklevel=3)
        self.objective_constant_estimate_ = fit.info.constant
        return self

    def transform(self, views):
        """Component scores ``{structure: ndarray (n, k_S)}`` (posterior means, as :meth:`HCL.transform`).

        Complete data are scored through per-modality products, without
        stacking the views; views with missing entries go through
        :func:`hclstat.estimators.base.posterior_scores`.
        """
        check_is_fitted(self, "loadings_")
        arrays, _ = check_views(views, modalities=self.modalities_, min_rows=1)
        for m, a in arrays.items():
            if a.shape[1] != self.dims_[m]:
                raise ValueError(f"modality {m!r}: expected {self.dims_[m]} columns as in fit, got {a.shape[1]}")
        if any(is_dask_array(a) or np.isnan(a.sum()) for a in arrays.values()):
            return super().transform(views)
        h = self.hierarchy_
        op = CentredData(arrays, means=self.means_)
        A = self.stacked_loadings()
        psi = np.concatenate([self.noise_variances_[m] for m in h.modalities])
        W = A / psi[:, None]
        sl = h.feature_slices()
        XW = sum(op.matmat(m, W[sl[m]]) for m in h.modalities) if h.n_components else np.zeros((op.n_samples, 0))
        Z = np.linalg.solve(np.eye(A.shape[1]) + A.T @ W, XW.T).T
        return {s: np.ascontiguousarray(Z[:, cs]) for s, cs in h.component_slices().items()}

    def fit_moments(self, moments):
        """Not available: :class:`MatrixFreeHCL` works from the rows."""
        raise TypeError(
            "MatrixFreeHCL works from the rows and never forms the moments; "
            "with precomputed Moments use HCL().fit_moments(moments)"
        )

