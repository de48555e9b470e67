"""One 2-D array in, views out: the scikit-learn face of the representation estimators.

The estimators of :mod:`hclstat.estimators` take *views* (one table per
modality). :class:`ColumnViews` takes the single ``(n_samples, n_features)``
array (or DataFrame) that scikit-learn passes around, groups its columns into
modalities as :class:`~sklearn.compose.ColumnTransformer` groups columns, and
hands the views to a wrapped estimator, so that ``Pipeline``,
``cross_val_score`` and ``GridSearchCV`` apply unchanged.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from .base import stack_scores, validate_params
from .hcl import HCL

__all__ = ["ColumnViews", "default_views"]


def default_views(n_features):
    """The split used when ``views=None``: two contiguous halves ``x0`` and ``x1``.

    ``x0`` holds the first ``ceil(p / 2)`` columns and ``x1`` the others. With
    2 or 3 columns a half has a single column, which the model fits as pure
    noise (an ``EstimationWarning`` says so): a modality's total rank stays
    below its number of columns.

    Parameters
    ----------
    n_features : int

    Returns
    -------
    dict of str to ndarray of int
    """
    if n_features < 2:
        raise ValueError(
            f"views=None splits X into two modalities: expected at least 2 columns, got {n_features} "
            "feature(s); pass views={name: columns}"
        )
    half = (n_features + 1) // 2
    return {"x0": np.arange(half), "x1": np.arange(half, n_features)}


def _selector_indices(name, sel, n_features, feature_names):
    """Column indices (int array, input order kept) of one modality's selector."""
    where = f"views[{name!r}]"
    if isinstance(sel, slice):
        return np.arange(n_features)[sel]
    if isinstance(sel, (str, numbers.Integral)) and not isinstance(sel, (bool, np.bool_)):
        sel = [sel]
    arr = np.asarray(sel)
    if arr.ndim != 1:
        raise ValueError(f"{where}: expected a slice or a 1-D list of columns, got shape {arr.shape}")
    if arr.dtype == bool:
        if arr.size != n_features:
            raise ValueError(f"{where}: expected a boolean mask of {n_features} entries, got {arr.size}")
        return np.flatnonzero(arr)
    if arr.size and arr.dtype.kind in "OUS":
        if feature_names is None:
            raise ValueError(f"{where}: column names need a DataFrame with string column names, got {arr[:3].tolist()}")
        lookup = {c: j for j, c in enumerate(feature_names)}
        wanted = arr.tolist()
        unknown = [c for c in wanted if c not in lookup]
        if unknown:
            raise ValueError(f"{where}: expected columns of X, got unknown names {unknown[:5]}")
        return np.array([lookup[c] for c in wanted], dtype=np.intp)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected a slice, column indices, names or a boolean mask, got dtype {arr.dtype}")
    arr = arr.astype(np.intp)
    bad = arr[(arr < -n_features) | (arr >= n_features)]
    if bad.size:
        raise ValueError(f"{where}: expected column indices in [0, {n_features}), got {int(bad[0])}")
    return np.where(arr < 0, arr + n_features, arr)


class ColumnViews(TransformerMixin, BaseEstimator):
    """A representation estimator fitted to the column groups of one array.

    ``fit(X)`` splits the columns of ``X`` into modalities by ``views`` and
    fits a clone of ``estimator`` to them; ``transform(X)`` returns its
    component scores as one ``(n_samples, K)`` array, ``score(X)`` its mean
    Gaussian log-likelihood, so the wrapped estimator can sit in a
    :class:`~sklearn.pipeline.Pipeline` and be tuned by
    :class:`~sklearn.model_selection.GridSearchCV` (its parameters are
    ``estimator__<name>``).

    Parameters
    ----------
    estimator : representation estimator, default=None
        Any :class:`~hclstat.estimators.base.BaseHierarchicalEstimator`
        (``HCL``, ``StructuredFactorAnalysis``, a baseline, ...); ``None``
        means ``HCL()``. It is cloned, never fitted in place.
    views : dict of str to column selector, default=None
        Modality name -> its columns, in the order the modalities are stacked:
        a slice, a list or array of integer positions, a list of column names
        (for a DataFrame ``X``) or a boolean mask of ``n_features`` entries,
        e.g. ``{"a": slice(0, 50), "b": range(50, 110), "c": slice(110, None)}``.
        A column may belong to one modality only; columns that no modality
        names are dropped (as ``ColumnTransformer(remainder="drop")``).
        ``None`` splits the columns into two contiguous halves ``x0`` and
        ``x1`` (:func:`default_views`). That default lets generic tooling
        (``check_estimator``) run; a real analysis names its modalities.

    Attributes
    ----------
    estimator_ : BaseHierarchicalEstimator
        The fitted clone (``hierarchy_``, ``loadings_``, ``get_results()``, ...).
    views_ : dict of str to ndarray of int
        Column positions of each modality.
    columns_ : ndarray of int of shape (p,)
        The columns used, in modality order: row / column ``i`` of
        :meth:`get_covariance` is column ``columns_[i]`` of ``X``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from hclstat import HCL
    >>> from hclstat.model.designs import d1_model
    >>> views, _ = d1_model().sample(400, random_state=0)
    >>> X = np.hstack([views[m] for m in ("a", "b", "c")])
    >>> pipe = make_pipeline(
    ...     StandardScaler(),
    ...     ColumnViews(HCL(random_state=0), views={"a": slice(0, 50), "b": slice(50, 110), "c": slice(110, 180)}),
    ... )
    >>> pipe.fit_transform(X).shape[0]
    400
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "transform", "score_samples", "get_feature_names_out"]), None],
        "views": [dict, None],
    }

    def __init__(self, estimator=None, *, views=None):
        self.estimator = estimator
        self.views = views

    def _validate_params(self):
        validate_params(self)

    def _template(self):
        return HCL() if self.estimator is None else self.estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = get_tags(self._template()).input_tags.allow_nan
        return tags

    def _check_X(self, X, reset):
        finite = "allow-nan" if get_tags(self).input_tags.allow_nan else True
        # a fit needs two rows (a covariance); a transform or a score takes one
        return validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=finite,
                             ensure_min_samples=2 if reset else 1)

    def _resolve_views(self, n_features):
        if self.views is None:
            return default_views(n_features)
        if not self.views:
            raise ValueError("views: expected at least one modality, got an empty dict")
        names = getattr(self, "feature_names_in_", None)
        out, owner = {}, {}
        for m, sel in self.views.items():
            if not isinstance(m, str):
                raise TypeError(f"views: modality names must be str, got {m!r}")
            idx = _selector_indices(m, sel, n_features, None if names is None else list(names))
            if idx.size == 0:
                raise ValueError(f"views[{m!r}]: expected at least one column, got none")
            for j in idx:
                if j in owner:
                    raise ValueError(f"views: column {int(j)} is in both {owner[j]!r} and {m!r}")
                owner[j] = m
            out[m] = idx
        return out

    def _split(self, X):
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return {m: X[:, idx] for m, idx in self.views_.items()}
        # named columns reach the estimator (its results tables use them)
        return {m: pd.DataFrame(X[:, idx], columns=names[idx]) for m, idx in self.views_.items()}

    def fit(self, X, y=None):
        """Fit a clone of ``estimator`` to the column groups of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features); NaN marks a missing entry
            when the estimator accepts them (``HCL`` does)
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._check_X(X, reset=True)
        self.views_ = self._resolve_views(X.shape[1])
        self.columns_ = np.concatenate(list(self.views_.values()))
        self.estimator_ = clone(self._template()).fit(self._split(X))
        return self

    def transform(self, X):
        """Component scores, ndarray of shape (n_samples, K), named by :meth:`get_feature_names_out`."""
        check_is_fitted(self, "estimator_")
        X = self._check_X(X, reset=False)
        scores = self.estimator_.transform(self._split(X))
        return stack_scores(self.estimator_.hierarchy_, scores, X.shape[0])

    def score_samples(self, X):
        """Per-row Gaussian log-likelihood, ndarray of shape (n_samples,) (see the estimator's ``score_samples``)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.score_samples(self._split(self._check_X(X, reset=False)))

    def score(self, X, y=None):
        """Mean per-row Gaussian log-likelihood of ``X`` (higher is better)."""
        return float(np.mean(self.score_samples(X)))

    def get_covariance(self):
        """Fitted covariance, ndarray of shape (p, p), in the column order ``columns_``."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.get_covariance()

    def get_feature_names_out(self, input_features=None):
        """Component names (``"{x0,x1}_0"``, ...), in the column order of :meth:`transform`.

        ``input_features`` is checked against the fitted input columns, then ignored.
        """
        check_is_fitted(self, "estimator_")
        _check_feature_names_in(self, input_features)
        return self.estimator_.get_feature_names_out()
