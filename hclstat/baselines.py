"""Baseline representations for simulations and the checks.

These are the peers HCL is compared with, not estimators to prefer:

* :class:`SharedPrivate` -- one global block plus one specific block per
  modality (the binary shared/private view that the hierarchical model
  generalises), fitted by structured factor analysis;
* :class:`ConcatenatedPCA` -- PCA of the concatenated modalities;
* :class:`PairwiseCCA` -- canonical correlation analysis of every modality pair.

All take views (``fit``) or :class:`~hclstat.moments.Moments`
(``fit_moments``) and expose ``hierarchy_`` and ``loadings_`` in the package's
format, so the metrics in :mod:`hclstat.metrics` apply unchanged. Which other
attributes apply is stated per class.
"""

from __future__ import annotations

import itertools
import numbers

import numpy as np
from scipy.linalg import eigh, svd
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .data import check_views
from .estimators.base import BaseHierarchicalEstimator
from .estimators.sfa import NOISE_FLOOR, StructuredFactorAnalysis
from .hierarchy import Hierarchy

__all__ = ["SharedPrivate", "ConcatenatedPCA", "PairwiseCCA"]


def _check_count(value, name, *, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    return int(value)


def _sign_fix(V):
    """Flip columns so that each one's largest-magnitude entry is positive (deterministic output)."""
    if V.size == 0:
        return V, np.ones(V.shape[1])
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return V * signs, signs


class SharedPrivate(StructuredFactorAnalysis):
    """Shared/private factor model: one global block plus a specific block per modality.

    The binary view of multimodal data: every latent component is shared by
    *all* modalities or belongs to *one*. It is exactly
    :class:`~hclstat.estimators.sfa.StructuredFactorAnalysis` on the hierarchy

        ``{all modalities: n_shared} + {m: n_private[m] for every m}``,

    so partially shared factors cannot be represented: their signal is pushed
    into the private blocks (or into the global block, aligning modalities that
    share nothing). That over- or under-alignment is what the checks show.

    Parameters
    ----------
    n_shared : int, default=1
        Rank of the global block.
    n_private : int or dict of str to int, default=1
        Rank of each modality's specific block; a dict must name every modality.
    noise_model, max_iter, tol, init, random_state, verbose, acceleration
        As in :class:`~hclstat.estimators.sfa.StructuredFactorAnalysis`
        (a dict ``init`` refers to the binary hierarchy's structures).

    Attributes
    ----------
    hierarchy_ : Hierarchy
        The binary hierarchy fitted (no partial structure).
    loadings_, noise_variances_, n_iter_, n_extrapolated_, converged_, loglik_path_, loglik_, n_parameters_, bic_
        As in :class:`~hclstat.estimators.sfa.StructuredFactorAnalysis`.
    """

    def __init__(
        self,
        n_shared=1,
        n_private=1,
        *,
        noise_model="diagonal", init="spectral", acceleration="squarem",
        max_iter=10_000, tol=1e-7, random_state=None, verbose=False,
    ):
        super().__init__(
            None, noise_model=noise_model, max_iter=max_iter, tol=tol, init=init,
            random_state=random_state, verbose=verbose, acceleration=acceleration,
        )
        self.n_shared = n_shared
        self.n_private = n_private

    # no ``hierarchy`` parameter: the pattern is built from the ranks
    hierarchy = None
    _parameter_constraints: dict = {
        **{k: v for k, v in StructuredFactorAnalysis._parameter_constraints.items() if k != "hierarchy"},
        "n_shared": [Interval(numbers.Integral, 0, None, closed="left")],
        # a dict's keys and values are checked against the data's modalities in binary_hierarchy
        "n_private": [Interval(numbers.Integral, 0, None, closed="left"), dict],
    }

    def binary_hierarchy(self, dims):
        """The shared/private :class:`Hierarchy` for modalities ``dims`` ({name: p_m})."""
        dims = dict(dims)
        mods = tuple(dims)
        if len(mods) < 2:
            raise ValueError(
                f"SharedPrivate: expected at least 2 modalities (shared means shared by several), got {len(mods)}"
            )
        n_shared = _check_count(self.n_shared, "n_shared")
        if isinstance(self.n_private, dict):
            unknown = sorted(set(self.n_private) - set(mods))
            missing = [m for m in mods if m not in self.n_private]
            if unknown or missing:
                raise ValueError(
                    f"n_private: expected a rank for every modality {list(mods)}, got "
                    f"keys {list(self.n_private)} (missing {missing}, unknown {unknown})"
                )
            private = {m: _check_count(self.n_private[m], f"n_private[{m!r}]") for m in mods}
        else:
            k = _check_count(self.n_private, "n_private")
            private = {m: k for m in mods}
        ranks = {tuple(mods): n_shared}
        ranks.update({(m,): private[m] for m in mods})
        return Hierarchy(dims, ranks)

    def _resolve_hierarchy(self, moments):
        return self.binary_hierarchy(moments.dims)


class ConcatenatedPCA(BaseHierarchicalEstimator):
    """PCA of the concatenated modalities, exposed as one global structure.

    With ``Shat = V diag(w) V^T`` the eigen-decomposition of the covariance of
    the stacked features (eigenvalues in decreasing order), the first
    ``n_components`` principal axes ``V_k`` give

    * ``loadings_ = {frozenset(all modalities): {m: V_k[rows of m] diag(w_k)^{1/2}}}``,
      so ``A A^T`` is the best rank-``k`` approximation of ``Shat``
      (Eckart--Young);
    * ``noise_variances_[m]`` = the diagonal of the residual ``Shat - A A^T`` on
      the rows of ``m`` (floored at a tiny fraction of each variance), so that
      the implied covariance ``A A^T + Psi`` has the sample variances on its
      diagonal.

    ``transform`` is the package-wide rule (posterior means under ``A`` and
    ``Psi``, see :func:`~hclstat.estimators.base.posterior_scores`), which
    makes scores comparable across estimators; :meth:`principal_scores` gives
    the classical standardised PC scores ``(x - mu) V_k diag(w_k)^{-1/2}``.

    Parameters
    ----------
    n_components : int, default=1
        Number of principal components; at most ``min_m p_m`` so that they
        form a valid global structure of a :class:`Hierarchy`.

    Attributes
    ----------
    hierarchy_ : Hierarchy
        One global structure of rank ``n_components``.
    loadings_ : dict
    noise_variances_ : dict of str to ndarray of shape (p_m,)
    components_ : ndarray of shape (n_components, p)
        Principal axes (unit norm; sign fixed so each axis's largest-magnitude
        entry is positive).
    explained_variance_ : ndarray of shape (n_components,)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    """

    _parameter_constraints: dict = {"n_components": [Interval(numbers.Integral, 1, None, closed="left")]}

    def __init__(self, n_components=1):
        self.n_components = n_components

    def _fit_moments(self, moments):
        k = int(self.n_components)
        dims = dict(moments.dims)
        cap = min(dims.values())
        if k > cap:
            raise ValueError(
                f"n_components: expected at most min_m p_m = {cap} (one global structure of a "
                f"Hierarchy cannot exceed any modality's width), got {k}"
            )
        S = np.asarray(moments.covariance, dtype=np.float64)
        if not np.all(np.isfinite(S)):
            raise ValueError("moments: expected a finite covariance, got NaN or inf entries")
        p = S.shape[0]
        w, V = eigh(S, subset_by_index=[p - k, p - 1])
        w, V = w[::-1], V[:, ::-1]
        V, _ = _sign_fix(V)
        if np.any(w <= 0):
            raise ValueError(
                f"n_components: expected at most the number of positive eigenvalues of the "
                f"covariance, got {k} (eigenvalue {w.min():.3g} among the top {k})"
            )
        h = Hierarchy(dims, {tuple(moments.modalities): k})
        g = h.structures[0]
        A = V * np.sqrt(w)
        d = np.diag(S)
        psi = np.maximum(d - np.sum(A**2, axis=1), NOISE_FLOOR * np.maximum(d, np.finfo(float).tiny))
        sl = moments.slices
        self.hierarchy_ = h
        self.loadings_ = {g: {m: A[sl[m]].copy() for m in moments.modalities}}
        self.noise_variances_ = {m: psi[sl[m]].copy() for m in moments.modalities}
        self.components_ = np.ascontiguousarray(V.T)
        self.explained_variance_ = w.copy()
        self.explained_variance_ratio_ = w / np.trace(S)
        return self

    def principal_scores(self, views):
        """Standardised principal-component scores ``{global structure: (n, k)}``.

        ``(x - mu) V_k diag(w_k)^{-1/2}``; unit sample variance on the training
        data. Rows must be complete (PCA scores have no missing-data rule).
        """
        check_is_fitted(self, "components_")
        X, mu = _stack_complete(self, views, "ConcatenatedPCA.principal_scores")
        Z = (X - mu) @ self.components_.T / np.sqrt(self.explained_variance_)
        return {self.hierarchy_.structures[0]: Z}


def _stack_complete(est, views, who):
    arrays, _ = check_views(views, modalities=est.modalities_, min_rows=1)
    for m, a in arrays.items():
        if a.shape[1] != est.dims_[m]:
            raise ValueError(f"modality {m!r}: expected {est.dims_[m]} columns as in fit, got {a.shape[1]}")
    X = np.concatenate([np.asarray(arrays[m], dtype=np.float64) for m in est.modalities_], axis=1)
    if np.isnan(X).any():
        raise ValueError(f"{who}: expected complete rows, got missing entries (NaN)")
    mu = np.concatenate([est.means_[m] for m in est.modalities_])
    return X, mu


def _inv_sqrt_and_sqrt(C):
    w, U = np.linalg.eigh(C)
    return (U / np.sqrt(w)) @ U.T, (U * np.sqrt(w)) @ U.T


class PairwiseCCA(BaseHierarchicalEstimator):
    r"""Canonical correlation analysis of every pair of modalities.

    For a pair ``(a, b)`` (in modality order) with ridge-regularised
    within-modality covariances
    ``C_aa = Shat_aa + ridge * (tr Shat_aa / p_a) I`` (likewise ``C_bb``),
    the SVD of the whitened cross-covariance

    .. math::  C_{aa}^{-1/2} \hat S_{ab} C_{bb}^{-1/2} = U D V^\top

    gives the canonical correlations ``D`` and weights ``C_aa^{-1/2} U``,
    ``C_bb^{-1/2} V``. The loadings of the pair structure ``{a, b}`` are the
    cross-covariance-implied ones of probabilistic CCA (Bach & Jordan, 2005),

    .. math::  A_{a,\{a,b\}} = C_{aa}^{1/2} U_k D_k^{1/2}, \quad
               A_{b,\{a,b\}} = C_{bb}^{1/2} V_k D_k^{1/2},

    so ``A_a A_b^T`` is the rank-``k`` canonical reconstruction of ``Shat_ab``.

    Parameters
    ----------
    n_components : int, default=1
        Canonical pairs kept per modality pair.
    ridge : float, default=1e-3
        Relative ridge added to each within-modality covariance before
        whitening (needed when ``p_m`` approaches ``n``); 0 is plain CCA.

    Attributes
    ----------
    hierarchy_ : Hierarchy
        One structure ``{a, b}`` of rank ``n_components`` per pair (requires
        ``(M - 1) * n_components <= p_m``).
    loadings_ : dict
        ``{frozenset({a, b}): {a: (p_a, k), b: (p_b, k)}}`` as above.
    pairs_ : dict of (str, str) to dict
        ``{(a, b): {"correlations": ndarray (k,), "weights": {a: (p_a, k), b: (p_b, k)}}}``.

    Notes
    -----
    Pairwise CCA has no joint noise model: ``noise_variances_`` is not set, and
    :meth:`implied_covariance` and :meth:`get_results` raise
    ``NotImplementedError``. :meth:`transform` returns, per pair, the standardised
    mean of the two canonical variates, ``(u_a + u_b) / sqrt(2 (1 + rho))``
    (unit variance without ridge), and needs complete rows.
    """

    _accepts_missing = False  # canonical correlations of complete rows

    _parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "ridge": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, n_components=1, *, ridge=1e-3):
        self.n_components = n_components
        self.ridge = ridge

    def _fit_moments(self, moments):
        k = int(self.n_components)
        r = self.ridge
        mods = tuple(moments.modalities)
        if len(mods) < 2:
            raise ValueError(f"PairwiseCCA: expected at least 2 modalities, got {len(mods)}")
        dims = dict(moments.dims)
        for m in mods:
            need = (len(mods) - 1) * k
            if need > dims[m]:
                raise ValueError(
                    f"n_components: modality {m!r} takes part in {len(mods) - 1} pairs of "
                    f"{k} components each; expected (M - 1) * n_components <= p_m = {dims[m]}, got {need}"
                )
        S = np.asarray(moments.covariance, dtype=np.float64)
        if not np.all(np.isfinite(S)):
            raise ValueError("moments: expected a finite covariance, got NaN or inf entries")
        whiten = {}
        for m in mods:
            C = moments.block(m, m)
            C = C + float(r) * np.trace(C) / dims[m] * np.eye(dims[m])
            wmin = np.linalg.eigvalsh(C)[0]
            if not wmin > 0:
                raise ValueError(
                    f"modality {m!r}: expected a positive definite within-modality covariance, "
                    f"got smallest eigenvalue {wmin:.3g}; use ridge > 0"
                )
            whiten[m] = _inv_sqrt_and_sqrt(C)
        pairs, loadings, ranks = {}, {}, {}
        for a, b in itertools.combinations(mods, 2):
            (ia, ra), (ib, rb) = whiten[a], whiten[b]
            U, d, Vt = svd(ia @ moments.block(a, b) @ ib, full_matrices=False)
            U, d, V = U[:, :k], d[:k], Vt[:k].T
            wa, signs = _sign_fix(ia @ U)
            U, V = U * signs, V * signs
            wb = ib @ V
            pairs[(a, b)] = {"correlations": d.copy(), "weights": {a: wa, b: wb}}
            s = frozenset((a, b))
            loadings[s] = {a: ra @ U * np.sqrt(d), b: rb @ V * np.sqrt(d)}
            ranks[(a, b)] = k
        self.hierarchy_ = Hierarchy(dims, ranks)
        self.loadings_ = loadings
        self.pairs_ = pairs
        return self

    def transform(self, views):
        """Pair scores ``{frozenset({a, b}): ndarray (n, k)}``.

        ``(u_a + u_b) / sqrt(2 (1 + rho))`` with the canonical variates
        ``u_a = (x_a - mu_a) w_a`` and ``u_b = (x_b - mu_b) w_b``.
        """
        check_is_fitted(self, "pairs_")
        X, mu = _stack_complete(self, views, "PairwiseCCA.transform")
        Xc = X - mu
        sl = {}
        start = 0
        for m in self.modalities_:
            sl[m] = slice(start, start + self.dims_[m])
            start += self.dims_[m]
        out = {}
        for (a, b), pr in self.pairs_.items():
            ua = Xc[:, sl[a]] @ pr["weights"][a]
            ub = Xc[:, sl[b]] @ pr["weights"][b]
            out[frozenset((a, b))] = (ua + ub) / np.sqrt(2.0 * (1.0 + pr["correlations"]))
        return out

    def implied_covariance(self):
        raise NotImplementedError(
            "PairwiseCCA has no joint noise model, hence no implied covariance; "
            "use the pair loadings (loadings_) or pairs_"
        )

    def get_results(self):
        raise NotImplementedError(
            "PairwiseCCA has no joint noise model, so the results tables (variance explained) "
            "do not apply; inspect pairs_ and loadings_"
        )
