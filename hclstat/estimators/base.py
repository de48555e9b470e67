"""Shared machinery of the representation estimators.

Every estimator works from :class:`~hclstat.moments.Moments`; ``fit(views)``
computes them once and hands them to ``_fit_moments``. Subclasses set
``hierarchy_``, ``loadings_`` and ``noise_variances_`` there; everything else
(scores, results, validation) lives here.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..data import check_views
from ..hierarchy import Hierarchy
from ..moments import Moments, compute_moments

__all__ = ["BaseHierarchicalEstimator", "stack_loadings", "posterior_scores"]


def stack_loadings(hierarchy, loadings):
    """``(p, K)`` stacked loading matrix (zeros where a structure skips a modality)."""
    h = hierarchy
    A = np.zeros((h.n_features, h.n_components))
    rows, cols = h.feature_slices(), h.component_slices()
    for s in h.structures:
        for m, a in loadings[s].items():
            A[rows[m], cols[s]] = a
    return A


def posterior_scores(X, means, A, psi):
    """Posterior means ``E[z | x]`` under the Gaussian factor model.

    For a row with observed features ``o``::

        z_hat = (I + A_o^T Psi_o^{-1} A_o)^{-1} A_o^T Psi_o^{-1} (x_o - mu_o)

    Rows are grouped by their missingness pattern so each pattern costs one
    ``K x K`` solve; a row with nothing observed gets ``z_hat = 0`` (the prior mean).

    Parameters
    ----------
    X : ndarray of shape (n, p), NaN for missing entries
    means : ndarray of shape (p,)
    A : ndarray of shape (p, K)
    psi : ndarray of shape (p,)
    """
    n, p = X.shape
    K = A.shape[1]
    Xc = X - means
    miss = np.isnan(Xc)
    W = A / psi[:, None]
    if not miss.any():
        G = np.eye(K) + A.T @ W
        return np.linalg.solve(G, (Xc @ W).T).T
    Z = np.zeros((n, K))
    patterns, inverse = np.unique(miss, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for k, pat in enumerate(patterns):
        rows = np.flatnonzero(inverse == k)
        obs = ~pat
        if not obs.any():
            continue
        Ao, Wo = A[obs], W[obs]
        G = np.eye(K) + Ao.T @ Wo
        Z[rows] = np.linalg.solve(G, (Xc[np.ix_(rows, obs)] @ Wo).T).T
    return Z


class BaseHierarchicalEstimator(TransformerMixin, BaseEstimator):
    """Base class: moments in, hierarchy / loadings / noise variances out.

    Fitted attributes set by every subclass
    ---------------------------------------
    hierarchy_ : Hierarchy
    loadings_ : dict of frozenset to dict of str to ndarray of shape (p_m, k_S)
    noise_variances_ : dict of str to ndarray of shape (p_m,)
    modalities_ : tuple of str
    means_ : dict of str to ndarray of shape (p_m,)
    n_samples_ : int
    feature_names_ : dict of str to list of str or None
    """

    def fit(self, views, y=None):
        """Fit from views: a dict modality name -> (n, p_m) table, or a list."""
        moments = compute_moments(views)
        return self.fit_moments(moments)

    def fit_moments(self, moments):
        """Fit from precomputed :class:`~hclstat.moments.Moments` (e.g. dask-built)."""
        if not isinstance(moments, Moments):
            raise TypeError(f"moments: expected hclstat.Moments, got {type(moments).__name__}")
        self.modalities_ = tuple(moments.modalities)
        self.dims_ = dict(moments.dims)
        self.n_samples_ = int(moments.n_samples)
        sl = moments.slices
        self.means_ = {m: moments.means[sl[m]].copy() for m in moments.modalities}
        self.feature_names_ = dict(moments.feature_names)
        self._check_dims(moments)
        self._fit_moments(moments)
        return self

    def _check_dims(self, moments):
        for m, p in moments.dims.items():
            if p < 2:
                raise ValueError(
                    f"modality {m!r} has {p} column; the model needs at least 2 columns per modality "
                    "(merge it into another modality or drop it)"
                )
        hierarchy = getattr(self, "hierarchy", None)
        if hierarchy is not None:
            if not isinstance(hierarchy, Hierarchy):
                raise TypeError(f"hierarchy: expected a Hierarchy or None, got {type(hierarchy).__name__}")
            if hierarchy.modalities != tuple(moments.modalities) or hierarchy.dims != dict(moments.dims):
                raise ValueError(
                    f"hierarchy: its modalities/dims {hierarchy.dims} do not match the data {dict(moments.dims)}"
                )

    def _fit_moments(self, moments):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------- outputs
    def stacked_loadings(self):
        """``(p, K)`` loading matrix in ``hierarchy_`` order."""
        check_is_fitted(self, "loadings_")
        return stack_loadings(self.hierarchy_, self.loadings_)

    def transform(self, views):
        """Component scores ``{structure: ndarray (n, k_S)}``.

        Posterior means under the fitted Gaussian factor model (see
        :func:`posterior_scores`); missing entries are skipped row by row, never
        imputed.
        """
        check_is_fitted(self, "loadings_")
        arrays, _ = check_views(views, modalities=self.modalities_, min_rows=1)
        for m, a in arrays.items():
            if a.shape[1] != self.dims_[m]:
                raise ValueError(
                    f"modality {m!r}: expected {self.dims_[m]} columns as in fit, got {a.shape[1]}"
                )
        h = self.hierarchy_
        X = np.concatenate([np.asarray(arrays[m]) for m in h.modalities], axis=1)
        mu = np.concatenate([self.means_[m] for m in h.modalities])
        psi = np.concatenate([self.noise_variances_[m] for m in h.modalities])
        Z = posterior_scores(X, mu, self.stacked_loadings(), psi)
        return {s: np.ascontiguousarray(Z[:, sl]) for s, sl in h.component_slices().items()}

    def fit_transform(self, views, y=None):
        return self.fit(views).transform(views)

    def implied_covariance(self):
        """Fitted covariance ``A A^T + Psi`` of the stacked features."""
        A = self.stacked_loadings()
        cov = A @ A.T
        cov[np.diag_indices_from(cov)] += np.concatenate(
            [self.noise_variances_[m] for m in self.hierarchy_.modalities]
        )
        return cov

    def get_results(self):
        """A :class:`~hclstat.results.HierarchicalResults` with summary tables and plots."""
        from ..results import HierarchicalResults

        check_is_fitted(self, "loadings_")
        return HierarchicalResults(self)


class ModelRepresentation(BaseHierarchicalEstimator):
    """The true model of a simulation as a fitted representation (the oracle).

    ``fit`` only records column means (the model is centred, so they are zero
    unless data are given); ``transform`` returns posterior means of the latents
    under the *true* loadings and noise variances. Use it as the oracle in
    downstream comparisons and checks.

    Parameters
    ----------
    model : HierarchicalModel
    """

    def __init__(self, model=None):
        self.model = model

    def _fit_moments(self, moments):
        self._set_from_model()

    def _set_from_model(self):
        model = self.model
        if model is None or not hasattr(model, "hierarchy"):
            raise TypeError(f"model: expected a HierarchicalModel, got {type(model).__name__}")
        self.hierarchy_ = model.hierarchy
        self.loadings_ = {s: {m: a.copy() for m, a in b.items()} for s, b in model.loadings.items()}
        self.noise_variances_ = {m: v.copy() for m, v in model.noise_variances.items()}

    def fit(self, views=None, y=None):
        """Record the model; with ``views`` also their column means."""
        if views is None:
            h = self.model.hierarchy
            self.modalities_ = h.modalities
            self.dims_ = h.dims
            self.n_samples_ = 0
            self.means_ = {m: np.zeros(p) for m, p in h.dims.items()}
            self.feature_names_ = {m: None for m in h.modalities}
            self._set_from_model()
            return self
        return super().fit(views)
