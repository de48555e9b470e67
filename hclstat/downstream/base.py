"""What every downstream predictor shares: the representation, the scores, the
group lasso over structures along a penalty path, the choice of ``lambda``
(cross-validation or BIC), the unpenalised refit and its statsmodels summary.

An outcome model is a subclass of :class:`BaseHCLPredictor` in a module of its
own that supplies the methods named in :data:`OUTCOME_MODEL_METHODS` (see the
class docstring); everything else is here, once.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from ..data import check_views
from ..estimators.base import stack_loadings
from ..exceptions import ConvergenceWarning
from ..kernels.group_lasso import make_groups
from ..utils import check_random_state

__all__ = ["BaseHCLPredictor", "OUTCOME_MODEL_METHODS", "POST_SELECTION_CAVEAT", "check_outcome_shape"]

POST_SELECTION_CAVEAT = (
    "Post-selection inference: standard errors, confidence intervals and p-values are those of "
    "the unpenalised refit on the selected structures, computed as if the selection had been "
    "fixed in advance. When selection and inference use the same rows they are optimistic "
    "(intervals too narrow, p-values too small), most for structures near the selection "
    "threshold; pass held-out rows to summary(views, y) for valid inference by sample "
    "splitting. The representation is treated as known (its estimation error is ignored), "
    "which is accurate when it was fitted on many more rows than the labelled sample."
)

#: the methods an outcome model must define (see :class:`BaseHCLPredictor`)
OUTCOME_MODEL_METHODS = (
    "_check_outcome",
    "_prepare",
    "_lambda_max",
    "_path",
    "_refit",
    "_loss",
    "_bic",
    "_statsmodels_refit",
)


def check_outcome_shape(y, n, name="y"):
    """The outcome ``name`` as a 1-D ndarray of ``n`` values (a Series, a DataFrame or one column accepted)."""
    if y is None:
        raise ValueError(f"{name}: expected an outcome array, got None")
    if isinstance(y, (pd.Series, pd.DataFrame)):
        y = y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape (n_samples,), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(
            f"{name}: expected {n} values (one per row of views), got {y.shape[0]}; "
            "align the outcome with the rows of the views"
        )
    return y


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator, "loadings_")
    except NotFittedError:
        return False
    return True


class BaseHCLPredictor(BaseEstimator):
    """Representation + group lasso over structures + unpenalised refit.

    Not an estimator on its own: an outcome model subclasses it and defines

    ``_check_outcome(y, n)``
        Validate the labelled outcome of ``n`` rows and return it as the array
        the other methods take (may set fitted attributes, e.g. ``classes_``).
    ``_prepare(Zf, Zp, y, rows, *, warn_psd)``
        The penalised problem on the given rows of the fitting scores ``Zf``
        (a dict; it must hold ``"Zp"``, the prediction scores of those rows).
    ``_lambda_max(prob)``
        Smallest penalty at which every group is zero.
    ``_path(prob, lambdas)``
        ``(coefs, intercepts, n_iter)``: penalised coefficients of shape
        ``(n_lambdas, K)`` (or ``(n_lambdas, K, C)`` for ``C`` linear predictors,
        a row of each ``K x C`` matrix in or out as a whole) and intercepts
        along the decreasing ``lambdas``; add the number of unconverged problems
        to ``self._n_unconverged``.
    ``_refit(prob, support)``
        ``(b0, b)``: unpenalised fit on the columns in the boolean ``support``
        (``b`` of shape ``(K,)`` or ``(K, C)``, zero off the support).
    ``_loss(y, eta)``
        Mean loss of linear predictors ``eta`` (the cross-validation score).
    ``_bic(y, eta, df, m)``
        BIC of a refit with ``df`` parameters on ``m`` rows.
    ``_statsmodels_refit(Zp, y, support)``
        The statsmodels results of the refit (for :meth:`summary`), or None
        when it cannot be computed (after a warning).

    and may override ``_heldout_outcome`` (outcome of held-out rows for
    :meth:`summary`; default ``_check_outcome``), ``_corrects_measurement_error``
    (default False: no Gram correction, see :mod:`hclstat.downstream`),
    ``_default_splitter`` (default ``KFold``), ``_cv_labels`` (what the
    splitter stratifies on; default ``y``), ``_fold_loss`` (the validation
    loss of a fold given the linear predictors of *all* rows; default
    ``_loss`` on the validation rows), ``_n_parameters`` (the BIC's ``df``;
    default selected components + the intercept; set ``_fits_intercept =
    False`` when the model has none) and ``_inference_frame`` (the
    :meth:`summary_frame` table of the statsmodels results).
    :data:`OUTCOME_MODEL_METHODS` lists
    the required names; ``fit`` says which are missing.
    """

    #: whether the outcome model has an intercept (counted as a parameter by BIC)
    _fits_intercept = True

    # ------------------------------------------------------------ params
    def _store_params(self, arguments):
        """Store the ``__init__`` arguments (``locals()``) under their own names, nothing else."""
        for name in self._get_param_names():
            setattr(self, name, arguments[name])

    def _validate_params(self):
        if self.groups not in ("structure", "component"):
            raise ValueError(f"groups: expected 'structure' or 'component', got {self.groups!r}")
        if self.scores not in ("posterior", "bartlett"):
            raise ValueError(f"scores: expected 'posterior' or 'bartlett', got {self.scores!r}")
        if self.criterion not in ("cv", "bic"):
            raise ValueError(f"criterion: expected 'cv' or 'bic', got {self.criterion!r}")
        if self.cv_rule not in ("1se", "min"):
            raise ValueError(f"cv_rule: expected '1se' or 'min', got {self.cv_rule!r}")
        cv = self.cv
        if isinstance(cv, bool) or not (
            (isinstance(cv, numbers.Integral) and cv >= 2) or hasattr(cv, "split")
        ):
            raise ValueError(f"cv: expected an integer >= 2 or a cross-validation splitter, got {cv!r}")
        if self.lambdas is None:
            n = self.n_lambdas
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"n_lambdas: expected a positive integer, got {n!r}")
            r = self.lambda_min_ratio
            if not isinstance(r, numbers.Real) or not 0 < r < 1:
                raise ValueError(f"lambda_min_ratio: expected a number in (0, 1), got {r!r}")
        else:
            lam = np.asarray(self.lambdas, dtype=np.float64).reshape(-1)
            if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam < 0):
                raise ValueError(f"lambdas: expected non-negative finite penalty levels, got {self.lambdas!r}")
        if not isinstance(self.tol, numbers.Real) or not self.tol > 0:
            raise ValueError(f"tol: expected a positive number, got {self.tol!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter: expected a positive integer, got {self.max_iter!r}")

    def _check_interface(self):
        missing = [name for name in OUTCOME_MODEL_METHODS if not callable(getattr(self, name, None))]
        if missing:
            raise TypeError(
                f"{type(self).__name__}: an outcome model must define {', '.join(missing)} "
                "(see hclstat.downstream.base.BaseHCLPredictor)"
            )

    # ---------------------------------------------------- representation
    def _fit_representation(self, views, unlabeled_views, rng):
        rep = self.representation
        source = views if unlabeled_views is None else unlabeled_views
        if rep is None:
            from ..estimators.hcl import HCL  # lazy: downstream imports without HCL

            rep = HCL()
            if "random_state" in rep.get_params():
                rep.set_params(random_state=int(rng.integers(2**31 - 1)))
            return rep.fit(source)
        if not (hasattr(rep, "fit") and hasattr(rep, "transform")):
            raise TypeError(
                "representation: expected a hierarchical estimator (HCL, StructuredFactorAnalysis, "
                f"ModelRepresentation) or None, got {type(rep).__name__}"
            )
        if _is_fitted(rep) and not self.refit_representation:
            if unlabeled_views is not None:
                raise ValueError(
                    "unlabeled_views: the representation is already fitted, so they would be ignored; "
                    "pass refit_representation=True to refit it on them, or drop them"
                )
            return rep
        return clone(rep).fit(source)

    # ------------------------------------------------------------ scores
    def _corrects_measurement_error(self):
        """Whether Bartlett scores get the Gram correction (fit on them, predict with posterior scores)."""
        return False

    def _score_matrices(self, views):
        """``(Z_fit, Z_pred)``: scores the penalised fit uses, and those predictions use."""
        rep = self.representation_
        h = rep.hierarchy_
        post = rep.transform(views)
        Zp = np.concatenate([post[s] for s in h.structures], axis=1) if h.structures else np.zeros((0, 0))
        if self.scores == "posterior":
            return Zp, Zp
        Zb = self._bartlett_scores(views)
        return (Zb, Zp) if self._corrects_measurement_error() else (Zb, Zb)

    def _bartlett_scores(self, views):
        rep = self.representation_
        h = rep.hierarchy_
        arrays, _ = check_views(views, modalities=rep.modalities_, min_rows=1)
        X = np.concatenate([np.asarray(arrays[m]) for m in h.modalities], axis=1)
        if np.isnan(X).any():
            raise ValueError(
                "scores='bartlett' needs complete rows; the views have missing entries. "
                "Use scores='posterior', which skips missing entries row by row"
            )
        mu = np.concatenate([rep.means_[m] for m in h.modalities])
        psi = np.concatenate([rep.noise_variances_[m] for m in h.modalities])
        A = stack_loadings(h, rep.loadings_)
        W = A / psi[:, None]
        N = A.T @ W
        return np.linalg.solve(N, ((X - mu) @ W).T).T

    def _error_covariance(self):
        """Model-implied ``Cov(zt, zt - z)`` of the fitted scores (see :mod:`hclstat.downstream`)."""
        K = self.representation_.hierarchy_.n_components
        if self.scores == "posterior" or not self._corrects_measurement_error():
            return np.zeros((K, K))
        rep = self.representation_
        h = rep.hierarchy_
        psi = np.concatenate([rep.noise_variances_[m] for m in h.modalities])
        A = stack_loadings(h, rep.loadings_)
        N = A.T @ (A / psi[:, None])
        V = np.linalg.inv(N)
        return 0.5 * (V + V.T)

    # ------------------------------------------------------------ groups
    def _groups(self, h):
        if self.groups == "structure":
            sizes = [h.rank(s) for s in h.structures]
        else:
            sizes = [1] * h.n_components
        grp_ptr, grp_indices = make_groups(sizes)
        weights = np.sqrt(np.asarray(sizes, dtype=np.float64))
        return grp_ptr, grp_indices, weights

    def _component_labels(self, h):
        labels = []
        for s in h.structures:
            labels.extend(f"{h.name(s)}[{j}]" for j in range(h.rank(s)))
        return labels

    # --------------------------------------------------------------- fit
    def fit(self, views, y, unlabeled_views=None):
        """Fit the representation (if needed), select structures, refit.

        Parameters
        ----------
        views : dict of str to array-like of shape (m, p_m), or list
            The labelled sample.
        y : array-like of shape (m,)
        unlabeled_views : dict or list, optional
            A separate (typically larger) unlabelled sample on which the
            representation is fitted; by default it is fitted on ``views``.

        Returns
        -------
        self
        """
        self._check_interface()
        self._validate_params()
        arrays, _ = check_views(views, min_rows=1)
        n = next(iter(arrays.values())).shape[0]
        y = self._check_outcome(y, n)
        rng = check_random_state(self.random_state)
        self.representation_ = self._fit_representation(views, unlabeled_views, rng)
        h = self.representation_.hierarchy_
        self.hierarchy_ = h
        self.structures_ = tuple(h.structures)
        if h.n_components == 0:
            raise ValueError("representation: the fitted hierarchy has no components; nothing to select")
        Zf, Zp = self._score_matrices(views)
        self._E = self._error_covariance()
        self._grp = self._groups(h)
        self.n_features_in_ = h.n_components

        full = self._prepare(Zf, Zp, y, np.arange(n), warn_psd=True)
        self.lambda_max_ = self._lambda_max(full)
        if self.lambdas is not None:
            lambdas = np.sort(np.asarray(self.lambdas, dtype=np.float64).reshape(-1))[::-1].copy()
        elif self.lambda_max_ <= 0:
            lambdas = np.array([0.0])
        else:
            lambdas = self.lambda_max_ * np.geomspace(1.0, self.lambda_min_ratio, self.n_lambdas)
        self.lambda_path_ = lambdas
        self._n_unconverged = 0

        path_b, path_b0, n_iter = self._path(full, lambdas)
        self.path_coefs_ = path_b
        self.path_intercepts_ = path_b0
        self.n_iter_ = n_iter
        idx = self._choose_lambda(Zf, Zp, y, full, rng)
        self.lambda_index_ = idx
        self.lambda_ = float(lambdas[idx])
        if self._n_unconverged:
            warnings.warn(
                f"{type(self).__name__}: the group-lasso solver hit max_iter={self.max_iter} on "
                f"{self._n_unconverged} problem(s) of the path/cross-validation; raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )

        support = self._support(path_b[idx])
        self.support_ = support
        b0, b = self._refit(full, support)
        sl = h.component_slices()
        self.coef_ = {s: b[sl[s]].copy() for s in h.structures}
        self.intercept_ = float(b0) if np.ndim(b0) == 0 else np.asarray(b0, dtype=np.float64)
        self.selected_structures_ = tuple(s for s in h.structures if np.any(support[sl[s]]))
        self.refit_results_ = self._statsmodels_refit(Zp, y, support)
        return self

    # ------------------------------------------------------ tuning rules
    def _choose_lambda(self, Zf, Zp, y, full, rng):
        """Index into ``lambda_path_`` of the chosen penalty; sets ``cv_scores_``, ``cv_se_``, ``criterion_path_``."""
        if self.criterion == "bic":
            self.cv_scores_ = None
            self.cv_se_ = None
            self.criterion_path_ = self._bic_path(full, self.path_coefs_, y)
            return int(np.argmin(self.criterion_path_))
        self.cv_scores_ = self._cross_validate(Zf, Zp, y, self.lambda_path_, rng)
        mean = self.cv_scores_.mean(axis=1)
        se = self.cv_scores_.std(axis=1, ddof=1) / np.sqrt(self.cv_scores_.shape[1])
        self.criterion_path_ = mean
        self.cv_se_ = se
        i_min = int(np.argmin(mean))
        if self.cv_rule == "min":
            return i_min
        ok = np.flatnonzero(mean <= mean[i_min] + se[i_min])
        return int(ok.min())  # lambdas are decreasing: the first is the largest

    def _support(self, b):
        """Columns of the groups with a non-zero coefficient (groups are consecutive)."""
        grp_ptr = self._grp[0]
        b = np.abs(b) if np.ndim(b) == 1 else np.abs(b).sum(axis=1)  # (K, C): a row is in for every class
        nz = np.add.reduceat(b, grp_ptr[:-1]) > 0
        return np.repeat(nz, np.diff(grp_ptr))

    @staticmethod
    def _linear(Zp, b0, b):
        return b0 + Zp @ b

    def _default_splitter(self, y, seed):
        if y.shape[0] < 2 * self.cv:
            raise ValueError(f"cv={self.cv}: need at least {2 * self.cv} labelled rows, got {y.shape[0]}")
        return KFold(self.cv, shuffle=True, random_state=seed)

    def _cv_labels(self, y):
        return y

    def _cross_validate(self, Zf, Zp, y, lambdas, rng):
        splitter = self.cv if hasattr(self.cv, "split") else self._default_splitter(y, int(rng.integers(2**31 - 1)))
        rows = np.arange(y.shape[0])
        losses = []
        for train, val in splitter.split(rows, self._cv_labels(y)):
            prob = self._prepare(Zf, Zp, y, train, warn_psd=False)
            pb, pb0, _ = self._path(prob, lambdas)
            cache, fold = {}, np.empty(lambdas.size)
            for i in range(lambdas.size):
                if self.cv_refit:
                    support = self._support(pb[i])
                    key = support.tobytes()
                    if key not in cache:
                        cache[key] = self._refit(prob, support)
                    b0, b = cache[key]
                else:
                    b0, b = pb0[i], pb[i]
                fold[i] = self._fold_loss(y, self._linear(Zp, b0, b), train, val)
            losses.append(fold)
        return np.column_stack(losses)

    def _fold_loss(self, y, eta, train, val):
        """Validation loss of one fold from the linear predictors ``eta`` of all rows."""
        return self._loss(y[val], eta[val])

    def _bic_path(self, prob, path_b, y):
        m = y.shape[0]
        out, cache = np.empty(path_b.shape[0]), {}
        for i in range(path_b.shape[0]):
            support = self._support(path_b[i])
            key = support.tobytes()
            if key not in cache:
                b0, b = self._refit(prob, support)
                eta = self._linear(prob["Zp"], b0, b)
                cache[key] = self._bic(y, eta, self._n_parameters(support), m)
            out[i] = cache[key]
        return out

    def _n_parameters(self, support):
        """Free parameters of the refit on ``support`` (the BIC's ``df``): components + intercept."""
        return int(support.sum()) + int(self._fits_intercept)

    # ------------------------------------------------------------ output
    def _check_fitted(self):
        check_is_fitted(self, "coef_")

    def _coef_vector(self):
        return np.concatenate([self.coef_[s] for s in self.structures_])

    def _prediction_scores(self, views):
        self._check_fitted()
        return self._score_matrices(views)[1]

    def decision_function(self, views):
        """Linear predictor ``b0 + sum_S zt_S^T coef_S`` of new rows, shape (n,)."""
        Zp = self._prediction_scores(views)
        return self.intercept_ + Zp @ self._coef_vector()

    def _design(self, Zp, support):
        labels = np.asarray(self._component_labels(self.hierarchy_))[support]
        X = pd.DataFrame(Zp[:, support], columns=list(labels))
        X.insert(0, "const", 1.0)
        return X

    def summary(self, views=None, y=None, alpha=0.05):
        """statsmodels summary of the unpenalised refit on the selected structures.

        Parameters
        ----------
        views, y : optional
            Held-out labelled rows. When given, the selected model is refitted on
            them (the representation and the selection stay fixed), which makes
            the inference valid conditionally on the selection (sample
            splitting). By default the refit on the training rows is used; see
            the caveat below.
        alpha : float
            Level of the confidence intervals.

        Returns
        -------
        statsmodels.iolib.summary.Summary
            One row per selected component (``{structure}[j]``) plus ``const``.

        Notes
        -----
        Post-selection inference: on the training rows the intervals and
        p-values treat the selected set as fixed in advance, so they are
        optimistic (see :data:`POST_SELECTION_CAVEAT`, printed under the
        table); held-out rows give valid inference conditionally on the
        selection. The representation is treated as known. For
        ``scores="bartlett"`` the table is the regression on the posterior
        scores of the selected components (the calibrated refit, consistent for
        the same ``beta``), whose estimates differ from the
        measurement-error-corrected ``coef_`` in finite samples.
        """
        res = self._results_for(views, y)
        if res is None:
            raise ValueError("summary: the refit could not be computed (see the EstimationWarning from fit)")
        title = f"{type(self).__name__}: refit on the selected structures"
        smry = res.summary(alpha=alpha, title=title)
        names = ", ".join(self.hierarchy_.name(s) for s in self.selected_structures_) or "none"
        notes = [
            f"Selected structures: {names} (lambda = {self.lambda_:.4g}, criterion = {self.criterion}).",
            ("Inference on held-out rows (sample splitting)." if views is not None else POST_SELECTION_CAVEAT),
        ]
        if hasattr(smry, "add_extra_txt"):
            smry.add_extra_txt(notes)
        else:  # a summary2 table (PHReg)
            for note in notes:
                smry.add_text(note)
        return smry

    def summary_frame(self, views=None, y=None, alpha=0.05):
        """Inference table as a DataFrame: one row per selected component.

        Columns: ``structure``, ``component``, ``coef``, ``std_err``, ``ci_low``,
        ``ci_high``, ``p_value``; indexed by ``term`` (for a multiclass
        :class:`HCLClassifier`, by ``(class, term)``: one block per class
        against the baseline ``classes_[0]``). Same caveat as :meth:`summary`.
        """
        res = self._results_for(views, y)
        if res is None:
            raise ValueError("summary_frame: the refit could not be computed")
        return self._inference_frame(res, alpha)

    def _inference_frame(self, res, alpha):
        """The table of :meth:`summary_frame` from statsmodels results with one parameter vector."""
        return self._inference_table(list(res.model.exog_names), np.asarray(res.params), np.asarray(res.bse),
                                     np.asarray(res.conf_int(alpha=alpha)), np.asarray(res.pvalues))

    def _inference_table(self, names, params, bse, ci, pvalues):
        """One row per term: its structure and component, estimate, standard error, interval, p-value."""
        h = self.hierarchy_
        lookup = {f"{h.name(s)}[{j}]": (h.name(s), j) for s in h.structures for j in range(h.rank(s))}
        rows = []
        for i, name in enumerate(names):
            s_name, j = lookup.get(name, ("intercept", -1))
            rows.append({"term": name, "structure": s_name, "component": j, "coef": float(params[i]),
                         "std_err": float(bse[i]), "ci_low": float(ci[i, 0]), "ci_high": float(ci[i, 1]),
                         "p_value": float(pvalues[i])})
        return pd.DataFrame(rows).set_index("term")

    def _heldout_outcome(self, y, n):
        """The outcome of ``n`` held-out rows, encoded as in fit (the fitted state unchanged)."""
        return self._check_outcome(y, n)

    def _results_for(self, views, y):
        self._check_fitted()
        if (views is None) != (y is None):
            raise ValueError("summary: pass both views and y (held-out rows), or neither")
        if views is None:
            return self.refit_results_
        Zp = self._prediction_scores(views)
        return self._statsmodels_refit(Zp, self._heldout_outcome(y, Zp.shape[0]), self.support_)
