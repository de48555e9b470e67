"""Linear regression on hierarchical component scores: :class:`HCLRegressor`."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import RegressorMixin

from ..exceptions import EstimationWarning
from ..kernels.group_lasso import gram_group_lasso_path, gram_lambda_max
from .base import BaseHCLPredictor, check_outcome_shape

__all__ = ["HCLRegressor"]


def _check_continuous(y, n):
    """A real, finite outcome of ``n >= 3`` rows as float64."""
    y = check_outcome_shape(y, n)
    if y.dtype == object or not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"y: expected real numbers, got dtype {y.dtype}")
    y = y.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "NaN" if np.isnan(y[i]) else "infinite value"
        raise ValueError(
            f"y: {what} at position {i} ({int(bad.sum())} non-finite in all); "
            "drop those rows or impute the outcome first"
        )
    if n < 3:
        raise ValueError(f"y: need at least 3 labelled rows, got {n}")
    return y


def _psd_project(G, floor_rel=1e-4):
    """Clip the eigenvalues of a symmetric matrix at ``floor_rel * max(lambda_max, tiny)``.

    This is the Frobenius-nearest matrix with that eigenvalue floor. Returns the
    matrix, its smallest eigenvalue before clipping and whether it was clipped.
    """
    G = 0.5 * (G + G.T)
    w, U = np.linalg.eigh(G)
    floor = floor_rel * max(float(w[-1]), np.finfo(float).tiny)
    if w[0] >= floor:
        return G, float(w[0]), False
    Gp = (U * np.maximum(w, floor)) @ U.T
    return np.ascontiguousarray(0.5 * (Gp + Gp.T)), float(w[0]), True


def _solve_sym(G, c):
    try:
        return np.linalg.solve(G, c)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(G, c, rcond=None)[0]


class HCLRegressor(RegressorMixin, BaseHCLPredictor):
    """Structure-selecting linear regression on hierarchical component scores.

    Fits (or reuses) a representation, then solves on the centred scores
    ``Zt`` of the labelled rows the group lasso::

        min_b  1/2 b^T (G - E) b - c^T b + lambda * sum_g sqrt(|g|) ||b_g||_2,
        G = Zt^T Zt / m,   c = Zt^T y / m,

    with ``E`` the measurement-error correction (zero for posterior scores; see
    :mod:`hclstat.downstream`), picks ``lambda`` by cross-validation or BIC,
    and refits the selected groups without penalty.

    Parameters
    ----------
    representation : estimator or None
        ``None`` (default): ``HCL()`` fitted on ``unlabeled_views`` or ``views``.
        An unfitted estimator is cloned and fitted likewise; a fitted one is
        used as is unless ``refit_representation=True``.
    groups : {"structure", "component"}
        Penalise structures (default) or single components.
    scores : {"posterior", "bartlett"}
        Posterior means ``E[z|x]`` (default) or Bartlett (GLS) scores.
    measurement_error : {"correct", "ignore"}
        Subtract the model-implied error covariance ``Cov(zt, zt - z)`` from the
        score Gram matrix (default; zero for posterior scores, ``(A^T Psi^{-1} A)^{-1}``
        for Bartlett scores) or not.
    criterion : {"cv", "bic"}
    cv : int or splitter
        Number of folds (default 5) or a scikit-learn splitter.
    cv_rule : {"1se", "min"}
    cv_refit : bool
        Score each ``lambda`` by the validation loss of the unpenalised refit
        of its selected set (default) or of the penalised fit.
    n_lambdas : int
    lambda_min_ratio : float
    lambdas : array-like, optional
        Explicit penalty levels (overrides the two above).
    refit_representation : bool
    tol : float
        KKT tolerance of the group-lasso solver.
    max_iter : int
        Epoch budget of the solver per penalty level.
    random_state : None, int or Generator
        Folds and (when created here) the representation's randomness.

    Attributes
    ----------
    representation_ : fitted representation estimator
    hierarchy_ : Hierarchy
    structures_ : tuple of frozenset
    selected_structures_ : tuple of frozenset
    support_ : ndarray of bool, shape (K,)
    coef_ : dict of frozenset to ndarray of shape (k_S,)
        Refit coefficients (zeros for unselected structures).
    intercept_ : float
    lambda_path_ : ndarray of shape (n_lambdas,)
        Decreasing penalty levels.
    lambda_ : float
    lambda_index_ : int
    path_coefs_ : ndarray of shape (n_lambdas, K)
        Penalised coefficients on the full labelled sample.
    cv_scores_ : ndarray of shape (n_lambdas, n_folds) or None
        Validation mean squared errors (lower is better).
    cv_se_ : ndarray of shape (n_lambdas,) or None
    criterion_path_ : ndarray of shape (n_lambdas,)
        Mean CV loss or BIC along the path.
    refit_results_ : statsmodels RegressionResults
    n_iter_ : int
        Solver epochs over the full-sample path.
    """

    # scikit-learn reads the parameters off this signature; __init__ only stores them
    def __init__(self, representation=None, *, groups="structure", scores="posterior", measurement_error="correct",
                 criterion="cv", cv=5, cv_rule="1se", cv_refit=True, n_lambdas=50, lambda_min_ratio=1e-3,
                 lambdas=None, refit_representation=False, tol=1e-8, max_iter=10_000, random_state=None):
        self._store_params(locals())

    def _validate_params(self):
        super()._validate_params()
        if self.measurement_error not in ("correct", "ignore"):
            raise ValueError(
                f"measurement_error: expected 'correct' or 'ignore', got {self.measurement_error!r}"
            )

    def _corrects_measurement_error(self):
        return self.measurement_error == "correct"

    def _check_outcome(self, y, n):
        return _check_continuous(y, n)

    # problem = centred (corrected) Gram form of the rows
    def _prepare(self, Zf, Zp, y, rows, *, warn_psd):
        Z, yr = Zf[rows], y[rows]
        zbar, ybar = Z.mean(axis=0), float(yr.mean())
        Zc = Z - zbar
        m = rows.size
        G = Zc.T @ Zc / m - self._E
        G, eig_min, projected = _psd_project(G)
        if warn_psd and projected and self._E.any():
            warnings.warn(
                f"the measurement-error-corrected score Gram matrix is indefinite (smallest eigenvalue "
                f"{eig_min:.3g}); it was projected onto the PSD cone. The score error covariance is large "
                f"against the spread of the scores at m = {m}: coefficients are unstable",
                EstimationWarning,
                stacklevel=3,
            )
        c = Zc.T @ (yr - ybar) / m
        return {
            "G": np.ascontiguousarray(G),
            "c": np.ascontiguousarray(c),
            "ybar": ybar,
            "zpbar": Zp[rows].mean(axis=0),
            "Zp": Zp[rows],
        }

    def _lambda_max(self, prob):
        grp_ptr, grp_indices, weights = self._grp
        return gram_lambda_max(prob["c"], grp_ptr, grp_indices, weights)

    def _path(self, prob, lambdas):
        grp_ptr, grp_indices, weights = self._grp
        coefs, epochs, viols = gram_group_lasso_path(
            prob["G"], prob["c"], grp_ptr, grp_indices, weights, lambdas,
            tol=self.tol, max_epochs=self.max_iter,
        )
        self._n_unconverged += int(np.sum(viols > self.tol))
        return coefs, prob["ybar"] - coefs @ prob["zpbar"], int(epochs.sum())

    def _refit(self, prob, support):
        b = np.zeros(prob["c"].shape[0])
        if support.any():
            G = prob["G"][np.ix_(support, support)]
            b[support] = _solve_sym(G, prob["c"][support])
        return prob["ybar"] - prob["zpbar"] @ b, b

    @staticmethod
    def _loss(y, eta):
        return float(np.mean((y - eta) ** 2))

    @staticmethod
    def _bic(y, eta, df, m):
        rss = float(np.sum((y - eta) ** 2))
        return m * np.log(max(rss, np.finfo(float).tiny) / m) + df * np.log(m)

    def _statsmodels_refit(self, Zp, y, support):
        import statsmodels.api as sm

        return sm.OLS(np.asarray(y, dtype=np.float64), self._design(Zp, support)).fit()

    def predict(self, views):
        """Predicted outcome of new rows, shape (n,)."""
        return self.decision_function(views)
