"""Shared machinery of the representation estimators.

Every estimator works from :class:`~hclstat.moments.Moments`; ``fit(views)``
computes them once and hands them to ``_fit_moments``. Subclasses set
``hierarchy_``, ``loadings_`` and ``noise_variances_`` there; everything else
(scores, likelihood, results, parameter validation) lives here.

Parameters are declared once per estimator, in a class-level
``_parameter_constraints`` written with scikit-learn's constraint objects
(:class:`~sklearn.utils._param_validation.Interval`,
:class:`~sklearn.utils._param_validation.StrOptions`, types, ``None``,
``"boolean"``, ``"array-like"``); :func:`validate_params` checks them in ``fit``
and raises :class:`~sklearn.utils._param_validation.InvalidParameterError` (a
``ValueError`` and a ``TypeError``) worded ``"name: expected ..., got ..."``.
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, Options, make_constraint
from sklearn.utils.validation import check_is_fitted

from ..data import check_views, warn_few_block_rows
from ..exceptions import EstimationWarning
from ..hierarchy import Hierarchy
from ..moments import Moments, compute_moments
from ..threads import moment_pass_threads, small_block_threads

__all__ = [
    "BaseHierarchicalEstimator",
    "stack_loadings",
    "stack_scores",
    "posterior_scores",
    "gaussian_log_likelihood",
    "validate_params",
]

_LOG_2PI = float(np.log(2.0 * np.pi))

#: ``_parameter_constraints`` entries shared by the estimators
RANDOM_STATE = [
    Interval(numbers.Integral, 0, None, closed="left"),
    np.random.Generator,
    np.random.RandomState,
    np.random.SeedSequence,
    None,
]
VERBOSE = ["boolean", Interval(numbers.Integral, 0, None, closed="left")]


def stack_loadings(hierarchy, loadings):
    """``(p, K)`` stacked loading matrix (zeros where a structure skips a modality)."""
    h = hierarchy
    A = np.zeros((h.n_features, h.n_components))
    rows, cols = h.feature_slices(), h.component_slices()
    for s in h.structures:
        for m, a in loadings[s].items():
            A[rows[m], cols[s]] = a
    return A


def stack_scores(hierarchy, scores, n_samples):
    """``(n, K)`` array of component scores, columns in ``hierarchy.component_slices()`` order.

    The order of :meth:`BaseHierarchicalEstimator.get_feature_names_out`; a
    hierarchy without components gives an ``(n, 0)`` array.
    """
    blocks = [np.asarray(scores[s], dtype=np.float64) for s in hierarchy.structures]
    return np.hstack(blocks) if blocks else np.zeros((n_samples, 0))


def _missingness_groups(X):
    """``[(rows, observed), ...]``: rows grouped by their pattern of observed (non-NaN) entries."""
    miss = np.isnan(X)
    if not miss.any():
        return [(np.arange(X.shape[0]), np.ones(X.shape[1], dtype=bool))]
    patterns, inverse = np.unique(miss, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [(np.flatnonzero(inverse == k), ~pat) for k, pat in enumerate(patterns)]


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
    W = A / psi[:, None]
    Z = np.zeros((n, K))
    for rows, obs in _missingness_groups(Xc):
        if not obs.any():
            continue
        Ao, Wo = A[obs], W[obs]
        G = np.eye(K) + Ao.T @ Wo
        Z[rows] = np.linalg.solve(G, (Xc[np.ix_(rows, obs)] @ Wo).T).T
    return Z


def gaussian_log_likelihood(X, means, A, psi):
    r"""Per-row Gaussian log-likelihood under ``N(mu, Sigma)``, ``Sigma = A A^T + diag(psi)``.

    A row with observed features ``o`` gets the log-density of the marginal
    ``N(mu_o, Sigma_oo)`` of those entries,

    .. math::

        \ell(x) = -\tfrac12\left[|o| \log 2\pi + \log\det\Sigma_{oo}
                   + (x_o - \mu_o)^\top \Sigma_{oo}^{-1} (x_o - \mu_o)\right],

    computed through the ``K x K`` capacitance matrix
    ``G_o = I + A_o^T Psi_o^{-1} A_o`` (Woodbury identity and
    ``det Sigma_oo = det Psi_o det G_o``), so a missingness pattern costs
    ``O(p K^2 + K^3)`` and no ``p x p`` matrix is formed. A row with nothing
    observed gets 0 (the empty marginal).

    Parameters
    ----------
    X : ndarray of shape (n, p), NaN for missing entries
    means : ndarray of shape (p,)
    A : ndarray of shape (p, K)
    psi : ndarray of shape (p,), positive

    Returns
    -------
    ndarray of shape (n,)
    """
    Xc = X - means
    W = A / psi[:, None]
    out = np.zeros(X.shape[0])
    for rows, obs in _missingness_groups(Xc):
        if not obs.any():
            continue
        R = Xc[np.ix_(rows, obs)]
        quad = np.einsum("ij,ij->i", R, R / psi[obs])
        logdet = float(np.sum(np.log(psi[obs])))
        if A.shape[1]:
            L = np.linalg.cholesky(np.eye(A.shape[1]) + A[obs].T @ W[obs])
            V = solve_triangular(L, (R @ W[obs]).T, lower=True)
            quad -= np.einsum("ij,ij->j", V, V)
            logdet += 2.0 * float(np.sum(np.log(np.diag(L))))
        out[rows] = -0.5 * (obs.sum() * _LOG_2PI + logdet + quad)
    return out


# ------------------------------------------------------------ parameters
def _article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def _describe_interval(c):
    kind = "integer" if c.type is numbers.Integral else "number"
    lo, hi = c.left, c.right
    lo_in, hi_in = c.closed in ("left", "both"), c.closed in ("right", "both")
    if hi is None and lo is not None:
        if lo == 0 and lo_in:
            return f"a non-negative {kind}"
        if lo == 0 or (kind == "integer" and lo == 1 and lo_in):
            return f"a positive {kind}"
        return f"{_article(kind)} {kind} {'>=' if lo_in else '>'} {lo}"
    if lo is None and hi is not None:
        return f"{_article(kind)} {kind} {'<=' if hi_in else '<'} {hi}"
    if lo is None:
        return f"{_article(kind)} {kind}"
    return f"{_article(kind)} {kind} in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _alternatives(constraint, default):
    """Readable alternatives of one constraint (options: the default first, then sorted)."""
    if constraint is None:
        return ["None"]
    if isinstance(constraint, Interval):
        return [_describe_interval(constraint)]
    if isinstance(constraint, Options):
        return [repr(o) for o in sorted(constraint.options, key=lambda o: (o != default, repr(o)))]
    if isinstance(constraint, type):
        return [f"{_article(constraint.__name__)} {constraint.__name__}"]
    if constraint == "boolean":
        return ["a bool"]
    if constraint == "array-like":
        return ["an array-like"]
    return [str(make_constraint(constraint))]


def _satisfies(value, constraint):
    # a bool is an Integral to Python but never a count, a rank or a tolerance
    if isinstance(constraint, Interval) and isinstance(value, (bool, np.bool_)):
        return False
    return make_constraint(constraint).is_satisfied_by(value)


def _shown(value):
    if value is None or isinstance(value, (str, bool, np.bool_, numbers.Number)):
        return repr(value)
    return type(value).__name__


def validate_params(estimator):
    """Check an estimator's parameters against its class-level ``_parameter_constraints``.

    ``_parameter_constraints`` maps each ``__init__`` parameter to a list of
    scikit-learn constraints (any one may hold) or to ``"no_validation"``;
    parameters it does not name are not checked here. Unlike scikit-learn's
    own check, a bool never satisfies a numeric :class:`Interval`.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        (a ``ValueError`` and a ``TypeError``) for the first parameter that
        satisfies none of its constraints, e.g.
        ``"max_iter: expected a positive integer, got 0"``.
    """
    params = estimator.get_params(deep=False)
    for name, allowed in getattr(estimator, "_parameter_constraints", {}).items():
        if name not in params or allowed == "no_validation":
            continue
        value = params[name]
        if any(_satisfies(value, c) for c in allowed):
            continue
        sig = inspect.signature(type(estimator).__init__).parameters
        default = sig[name].default if name in sig else None
        alts = [a for c in allowed for a in _alternatives(c, default)]
        expected = alts[0] if len(alts) == 1 else ", ".join(alts[:-1]) + " or " + alts[-1]
        raise InvalidParameterError(f"{name}: expected {expected}, got {_shown(value)}")


class BaseHierarchicalEstimator(TransformerMixin, BaseEstimator):
    """Base class: moments in, hierarchy / loadings / noise variances out.

    Subclasses declare their parameters in ``_parameter_constraints`` (see
    :func:`validate_params`); ``fit`` and ``fit_moments`` check them first.

    Fitted attributes set by every subclass
    ---------------------------------------
    hierarchy_ : Hierarchy
    loadings_ : dict of frozenset to dict of str to ndarray of shape (p_m, k_S)
    noise_variances_ : dict of str to ndarray of shape (p_m,)
    modalities_ : tuple of str
    means_ : dict of str to ndarray of shape (p_m,)
        Column means over the observed entries of each modality (the ``mu``
        of :meth:`transform` and :meth:`score_samples`).
    n_samples_ : int
        Rows of the (joined) data: with modalities on different samples, the
        number of samples of any modality.
    feature_names_ : dict of str to list of str or None

    Absent modalities: DataFrames indexed by sample ID are joined on the index
    (outer join, :func:`hclstat.data.check_views`; a reordered index is
    aligned), so each covariance block uses the samples observed in both of
    its modalities; arrays need equal row counts. Scores and likelihoods use
    the modalities each sample has, rows in :func:`hclstat.data.joined_index` order.
    """

    _parameter_constraints: dict = {}

    def _validate_params(self):
        validate_params(self)

    #: whether fit and transform accept NaN entries (the sklearn ``allow_nan`` tag)
    _accepts_missing = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # moments are pairwise complete and scores skip missing entries, unless the
        # estimator needs complete rows (``_accepts_missing = False``)
        tags.input_tags.allow_nan = self._accepts_missing
        return tags

    def fit(self, views, y=None):
        """Fit from views: a dict modality name -> (n, p_m) table (DataFrames joined on their index), or a list."""
        self._validate_params()
        with moment_pass_threads():
            moments = compute_moments(views)
        return self.fit_moments(moments)

    def fit_moments(self, moments):
        """Fit from precomputed :class:`~hclstat.moments.Moments` (e.g. dask-built)."""
        self._validate_params()
        if not isinstance(moments, Moments):
            raise TypeError(f"moments: expected hclstat.Moments, got {type(moments).__name__}")
        self.modalities_ = tuple(moments.modalities)
        self.dims_ = dict(moments.dims)
        self.n_samples_ = int(moments.n_samples)
        sl = moments.slices
        self.means_ = {m: moments.means[sl[m]].copy() for m in moments.modalities}
        self.feature_names_ = dict(moments.feature_names)
        self._check_dims(moments)
        warn_few_block_rows(moments, stacklevel=4)
        # many small blocks from here on: see hclstat.threads for the rule
        with small_block_threads(sum(moments.dims.values())):
            self._fit_moments(moments)
        return self

    def _check_dims(self, moments):
        for m, p in moments.dims.items():
            if p < 2:
                # a modality's total rank stays below its column count (else its noise is not identified)
                warnings.warn(
                    f"modality {m!r} has {p} column: it cannot carry a latent component (a modality's total "
                    "rank must be below its number of columns), so it is fitted as pure noise; merge it "
                    "into another modality or drop it",
                    EstimationWarning,
                    stacklevel=4,
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

    def _stack_views(self, views):
        """Validated views stacked as ``(n, p)`` in modality order (NaN kept)."""
        arrays, _ = check_views(views, modalities=self.modalities_, min_rows=1)
        for m, a in arrays.items():
            if a.shape[1] != self.dims_[m]:
                raise ValueError(
                    f"modality {m!r}: expected {self.dims_[m]} columns as in fit, got {a.shape[1]}"
                )
        return np.concatenate([np.asarray(arrays[m]) for m in self.hierarchy_.modalities], axis=1)

    def _stacked_model(self):
        """Stacked means ``(p,)``, loadings ``(p, K)`` and noise variances ``(p,)``."""
        check_is_fitted(self, "loadings_")
        if not hasattr(self, "noise_variances_"):
            raise NotImplementedError(
                f"{type(self).__name__} has no joint noise model, hence no Gaussian likelihood"
            )
        mods = self.hierarchy_.modalities
        mu = np.concatenate([self.means_[m] for m in mods])
        psi = np.concatenate([self.noise_variances_[m] for m in mods])
        margins = getattr(self, "copula_margins_", None)
        if margins is not None:
            psi = psi + margins.lost  # the latent variance a category does not carry
        return mu, self.stacked_loadings(), psi

    def _model_rows(self, views):
        """Stacked rows in the space the Gaussian model describes (NaN kept).

        The features themselves; for a latent-copula fit (``copula_margins_``)
        the conditional means of the latent coordinates given the observed
        values, from the training margins.
        """
        X = self._stack_views(views)
        margins = getattr(self, "copula_margins_", None)
        if margins is None:
            return X
        return margins.latent_scores(X)

    def transform(self, views):
        """Component scores ``{structure: ndarray (n, k_S)}``.

        Posterior means under the fitted Gaussian factor model (see
        :func:`posterior_scores`); missing entries are skipped row by row, never
        imputed. :func:`stack_scores` turns them into one ``(n, K)`` array
        whose columns :meth:`get_feature_names_out` names.

        A sample absent from some modalities (joined as in ``fit``) gets the
        posterior mean given the modalities it has; a structure none of whose
        modalities it has gets 0, its prior mean.
        """
        check_is_fitted(self, "loadings_")
        Z = posterior_scores(self._model_rows(views), *self._stacked_model())
        return {s: np.ascontiguousarray(Z[:, sl]) for s, sl in self.hierarchy_.component_slices().items()}

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

    def get_covariance(self):
        """The fitted covariance ``Sigma = A A^T + Psi``.

        Returns
        -------
        ndarray of shape (p, p)
            Features stacked in modality order (``modalities_``), each
            modality's columns in their input order.
        """
        check_is_fitted(self, "loadings_")
        return self.implied_covariance()

    def score_samples(self, views):
        """Gaussian log-likelihood of each row under the fitted ``N(mu, Sigma)``.

        ``mu`` are the fitted column means (``means_``), ``Sigma`` is
        :meth:`get_covariance`. A row with missing entries (or a sample absent
        from some modalities, joined as in ``fit``) is scored by the marginal
        density of its observed entries (no imputation); see
        :func:`gaussian_log_likelihood`.

        Parameters
        ----------
        views : dict of str to array-like of shape (n_samples, p_m), or list

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "loadings_")
        return gaussian_log_likelihood(self._model_rows(views), *self._stacked_model())

    def score(self, views, y=None):
        """Mean per-row log-likelihood (:meth:`score_samples`); higher is better.

        What :class:`~sklearn.model_selection.GridSearchCV` maximises by
        default. With missing entries the rows' marginal log-likelihoods, over
        different numbers of observed entries, are averaged as they are.
        """
        return float(np.mean(self.score_samples(views)))

    def get_feature_names_out(self, input_features=None):
        """Names of the ``K`` components: ``"{a,b}_0"``, ``"{a,b}_1"``, ``"{a}_0"``, ...

        The structure's name (:meth:`Hierarchy.name`: its modalities in
        modality order) and the component's index within the structure, in
        the column order of :func:`stack_scores` (``hierarchy_.component_slices()``).

        Parameters
        ----------
        input_features : array-like of str, optional
            Only its length is checked against the ``p`` fitted features: the
            components' names do not depend on the input names.

        Returns
        -------
        ndarray of str objects, shape (K,)
        """
        check_is_fitted(self, "loadings_")
        h = self.hierarchy_
        if input_features is not None and len(input_features) != h.n_features:
            raise ValueError(
                f"input_features: expected {h.n_features} names (the fitted features), got {len(input_features)}"
            )
        names = [f"{h.name(s)}_{j}" for s in h.structures for j in range(h.rank(s))]
        return np.asarray(names, dtype=object)

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
