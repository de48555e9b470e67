"""Cox proportional-hazards regression on hierarchical component scores: :class:`HCLSurvival`."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..exceptions import EstimationWarning
from ..kernels.concordance import concordance_counts
from ..kernels.cox_group_lasso import cox_group_lasso_path, cox_lambda_max, cox_newton, cox_partial_loglik
from .base import BaseHCLPredictor, check_outcome_shape

__all__ = ["HCLSurvival", "concordance_index"]


def _check_time(time, n):
    time = check_outcome_shape(time, n, "time")
    kind = time.dtype
    if kind == object or not np.issubdtype(kind, np.number) or np.issubdtype(kind, np.complexfloating):
        raise ValueError(f"time: expected real numbers, got dtype {time.dtype}")
    time = time.astype(np.float64)
    bad = ~(np.isfinite(time) & (time > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "NaN" if np.isnan(time[i]) else f"{time[i]:g}"
        raise ValueError(
            f"time: expected positive finite survival times, got {what} at position {i} "
            f"({int(bad.sum())} invalid in all); drop those rows or fix their follow-up"
        )
    return time


def _check_event(event, n):
    event = check_outcome_shape(event, n, "event")
    if event.dtype == bool:
        return event.astype(np.float64)
    if event.dtype == object or not np.issubdtype(event.dtype, np.number):
        raise ValueError(f"event: expected 0/1 or booleans, got dtype {event.dtype}")
    ev = event.astype(np.float64)
    bad = ~((ev == 0) | (ev == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"event: expected 0 (censored) or 1 (event), got {event[i].item()!r} at position {i} "
            f"({int(bad.sum())} invalid in all)"
        )
    return ev


def _check_survival_outcome(time, event, n):
    """``(n, 2)`` float array ``[time, event]`` of validated survival outcomes with at least one event."""
    out = np.column_stack([_check_time(time, n), _check_event(event, n)])
    if not out[:, 1].any():
        raise ValueError(
            "event: every row is censored (no event observed); a Cox model needs at least one event"
        )
    return out


def concordance_index(time, event, risk):
    """Harrell's concordance index of risk scores (higher = earlier event expected).

    A pair is comparable when the earlier time is an event (``t_j > t_i``, or
    ``t_j = t_i`` with ``j`` censored); it is concordant when the earlier
    event has the higher risk, and tied risks count 1/2::

        C = (#concordant + #tied / 2) / #comparable .

    ``O(n log n)`` (:mod:`hclstat.kernels.concordance`).

    Parameters
    ----------
    time : array-like of shape (n,), positive
    event : array-like of shape (n,), 0/1 or bool
    risk : array-like of shape (n,)
        E.g. the linear predictor :meth:`HCLSurvival.predict`.

    Returns
    -------
    float
    """
    risk = check_outcome_shape(risk, np.size(risk), "risk").astype(np.float64)
    y = _check_survival_outcome(time, event, risk.size)
    if not np.all(np.isfinite(risk)):
        raise ValueError(f"risk: expected finite values, got a non-finite one at position "
                         f"{int(np.flatnonzero(~np.isfinite(risk))[0])}")
    concordant, tied, comparable = concordance_counts(y[:, 0], y[:, 1], risk)
    if comparable == 0:
        raise ValueError("time, event: no comparable pair (a pair needs an event and a row still at risk at its time)")
    return (concordant + 0.5 * tied) / comparable


class HCLSurvival(BaseHCLPredictor):
    """Structure-selecting Cox regression on hierarchical component scores.

    Solves the Cox group lasso on the scores ``Zt`` of the labelled rows::

        min_b  -(1/m) l(b) + lambda * sum_g sqrt(|g|) ||b_g||_2,
        l(b) = sum_{i: d_i = 1} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)],   eta = Zt b,

    (Breslow's partial likelihood; tied times handled exactly as Breslow does),
    by FISTA with backtracking along the path from ``lambda_max`` (the KKT
    bound at ``b = 0``) with warm starts; picks ``lambda`` by cross-validation
    (default) or BIC; refits the selected groups by unpenalised maximum partial
    likelihood (Newton), with statsmodels ``PHReg`` inference. There is no
    intercept: ``intercept_`` is 0 and :meth:`predict` is the log relative
    hazard ``zt^T coef``. No Gram correction applies; as for the classifier,
    latent scores seen through posterior means give mildly attenuated
    coefficients, while the ranking (hence the concordance) is that of
    ``E[z | x]^T beta``.

    Cross-validation uses the cross-validated partial likelihood of Verweij and
    van Houwelingen (1993): for fold ``k`` with coefficients ``b_{-k}``
    fitted on the other folds, the loss is ``-(l(b_{-k}) - l_{-k}(b_{-k})) /
    d_k``, the full-sample partial log-likelihood minus that of the training
    rows (so the validation rows are scored against the whole risk set, which
    stays stable for small folds), per event ``d_k`` of the fold. Folds are
    stratified on the event indicator. ``criterion="bic"``:
    ``-2 l(b_refit) + df log(#events)`` with ``df`` the number of selected
    components.

    Parameters
    ----------
    representation, groups, scores, criterion, cv, cv_rule, cv_refit, n_lambdas,
    lambda_min_ratio, lambdas, refit_representation, tol, max_iter, random_state
        As in :class:`~hclstat.downstream.HCLRegressor` (``criterion``
        defaults to ``"cv"``; ``tol`` is the KKT tolerance of the Cox solver).

    Attributes
    ----------
    representation_, hierarchy_, structures_, selected_structures_, support_,
    coef_, lambda_path_, lambda_, lambda_index_, path_coefs_, cv_scores_,
    cv_se_, criterion_path_, n_iter_
        As in :class:`~hclstat.downstream.HCLRegressor`; ``cv_scores_`` are
        cross-validated negative partial log-likelihoods per event.
    intercept_ : float
        Always 0.
    refit_results_ : statsmodels ``PHRegResults`` or None
        None when no structure is selected. Computed on first access (PHReg
        loops over the distinct event times in Python: measured 1.7 s at
        ``m = 20,000``, against 0.8 s for the whole BIC fit and 6 s for the
        5-fold CV fit).
    baseline_times_ : ndarray
        Distinct event times of the labelled sample.
    baseline_cumulative_hazard_ : ndarray
        Breslow's cumulative baseline hazard at ``baseline_times_`` (for
        ``eta = 0``).
    """

    _fits_intercept = False

    # scikit-learn reads the parameters off this signature; __init__ only stores them
    def __init__(self, representation=None, *, groups="structure", scores="posterior", criterion="cv", cv=5,
                 cv_rule="1se", cv_refit=True, n_lambdas=50, lambda_min_ratio=1e-3, lambdas=None,
                 refit_representation=False, tol=1e-7, max_iter=10_000, random_state=None):
        self._store_params(locals())

    # ------------------------------------------------------------- fit
    def fit(self, views, time, event, unlabeled_views=None):
        """Fit the representation (if needed), select structures, refit.

        Parameters
        ----------
        views : dict of str to array-like of shape (m, p_m), or list
            The labelled sample.
        time : array-like of shape (m,)
            Follow-up times, positive and finite.
        event : array-like of shape (m,)
            1 (or True) for an observed event, 0 for a censored time.
        unlabeled_views : dict or list, optional
            A separate sample on which the representation is fitted.

        Returns
        -------
        self
        """
        self._deferring = True
        try:
            super().fit(views, (time, event), unlabeled_views)
        finally:
            self._deferring = False
        eta = self.decision_function(views)
        self._fit_baseline(eta, self._outcome)
        del self._outcome
        return self

    def _check_outcome(self, y, n):
        if n < 3:
            raise ValueError(f"time, event: need at least 3 labelled rows, got {n}")
        self._outcome = _check_survival_outcome(*y, n)
        return self._outcome

    def _default_splitter(self, y, seed):
        n_events = int(y[:, 1].sum())
        if n_events < self.cv:
            raise ValueError(
                f"cv={self.cv}: only {n_events} events; use fewer folds, criterion='bic' or more labelled rows"
            )
        return StratifiedKFold(self.cv, shuffle=True, random_state=seed)

    def _cv_labels(self, y):
        event = y[:, 1].astype(np.int64)
        if hasattr(self.cv, "split"):
            return event
        # stratify on the event only when every fold can get a censored row too
        return event if (event == 0).sum() >= self.cv else np.zeros_like(event)

    def _prepare(self, Zf, Zp, y, rows, *, warn_psd):
        return {"X": np.ascontiguousarray(Zf[rows]), "time": y[rows, 0], "event": y[rows, 1], "Zp": Zp[rows]}

    def _lambda_max(self, prob):
        return cox_lambda_max(prob["X"], prob["time"], prob["event"], *self._grp)

    def _path(self, prob, lambdas):
        coefs, iters, viols = cox_group_lasso_path(prob["X"], prob["time"], prob["event"], *self._grp, lambdas,
                                                   tol=self.tol, max_iter=self.max_iter)
        self._n_unconverged += int(np.sum(viols > self.tol))
        return coefs, np.zeros(lambdas.size), int(iters.sum())

    def _refit(self, prob, support):
        b = np.zeros(prob["X"].shape[1])
        if support.any():
            # not converged only when the partial likelihood has no maximiser (separation): keep the last iterate
            b[support] = cox_newton(prob["X"][:, support], prob["time"], prob["event"])[0]
        return 0.0, b

    @staticmethod
    def _loss(y, eta):
        return -cox_partial_loglik(eta, y[:, 0], y[:, 1]) / y[:, 1].sum()

    def _fold_loss(self, y, eta, train, val):
        full = cox_partial_loglik(eta, y[:, 0], y[:, 1])
        rest = cox_partial_loglik(eta[train], y[train, 0], y[train, 1])
        return -(full - rest) / max(float(y[val, 1].sum()), 1.0)

    @staticmethod
    def _bic(y, eta, df, m):
        return -2.0 * cox_partial_loglik(eta, y[:, 0], y[:, 1]) + df * np.log(y[:, 1].sum())

    @property
    def refit_results_(self):
        pending = self.__dict__.get("_refit_pending")
        if pending is not None:
            self.__dict__["_refit_results"] = self._phreg(*pending)
            self.__dict__["_refit_pending"] = None
        if "_refit_results" not in self.__dict__:
            raise AttributeError("refit_results_: not fitted yet; call fit first")
        return self.__dict__["_refit_results"]

    @refit_results_.setter
    def refit_results_(self, value):
        self.__dict__["_refit_results"] = value

    def _statsmodels_refit(self, Zp, y, support):
        if getattr(self, "_deferring", False):  # the refit of fit(): computed when first asked for
            self.__dict__["_refit_pending"] = (Zp, y, support)
            return None
        return self._phreg(Zp, y, support)

    def _phreg(self, Zp, y, support):
        if not support.any():
            return None
        from statsmodels.duration.hazard_regression import PHReg

        X = self._design(Zp, support).drop(columns="const")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return PHReg(y[:, 0], X, status=y[:, 1], ties="breslow").fit(
                    start_params=self._coef_vector()[support])
        except Exception as exc:  # singular information matrix, separation
            warnings.warn(
                f"HCLSurvival: the statsmodels PHReg refit failed ({type(exc).__name__}: {exc}); "
                "summary() is unavailable (often too few events for the selected components)",
                EstimationWarning,
                stacklevel=3,
            )
            return None

    def _fit_baseline(self, eta, y):
        """Breslow's estimate ``H0(t) = sum_{event times u <= t} d(u) / sum_{t_j >= u} exp(eta_j)``."""
        time, event = y[:, 0], y[:, 1]
        self._baseline_shift = float(eta.max())
        w = np.exp(eta - self._baseline_shift)
        times, inverse = np.unique(time, return_inverse=True)
        deaths = np.bincount(inverse, weights=event, minlength=times.size)
        at_risk = np.cumsum(np.bincount(inverse, weights=w, minlength=times.size)[::-1])[::-1]
        keep = deaths > 0
        self.baseline_times_ = times[keep]
        # stored for eta = 0 (the shift undone), which is what statsmodels reports too
        self.baseline_cumulative_hazard_ = np.cumsum(deaths[keep] / at_risk[keep]) * np.exp(-self._baseline_shift)

    # ---------------------------------------------------------- output
    def predict(self, views):
        """Log relative hazard ``zt^T coef`` of new rows, shape (n,) (higher = higher risk)."""
        return self.decision_function(views)

    def predict_survival_function(self, views, times=None):
        """``S(t | x) = exp(-H0(t) exp(eta(x)))`` with Breslow's baseline, shape (n, n_times).

        ``times`` defaults to ``baseline_times_``; the baseline is a step
        function (0 before the first event time).
        """
        eta = self.decision_function(views)
        times = self.baseline_times_ if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(self.baseline_times_, times, side="right") - 1
        H0 = np.where(idx >= 0, self.baseline_cumulative_hazard_[np.maximum(idx, 0)], 0.0)
        scaled = H0 * np.exp(self._baseline_shift)  # H0 * exp(eta) = scaled * exp(eta - shift)
        return np.exp(-scaled[None, :] * np.exp(eta - self._baseline_shift)[:, None])

    def score(self, views, time, event):
        """Harrell's concordance index of :meth:`predict` on ``(views, time, event)``."""
        return concordance_index(time, event, self.predict(views))

    def _heldout_outcome(self, y, n):
        return _check_survival_outcome(*y, n)

    def _outcome_pair(self, caller, views, time, event):
        self._check_fitted()
        if not (views is None) == (time is None) == (event is None):
            raise ValueError(f"{caller}: pass views, time and event (held-out rows), or none of them")
        if not self.support_.any():
            raise ValueError(
                f"{caller}: no structure was selected (lambda = {self.lambda_:.4g}); there is no refit to report"
            )
        return None if time is None else (time, event)

    def summary(self, views=None, time=None, event=None, alpha=0.05):
        """statsmodels ``PHReg`` summary of the refit on the selected structures.

        As :meth:`HCLRegressor.summary <hclstat.downstream.HCLRegressor.summary>`,
        with held-out ``(views, time, event)`` for inference by sample splitting.
        """
        return super().summary(views, self._outcome_pair("summary", views, time, event), alpha=alpha)

    def summary_frame(self, views=None, time=None, event=None, alpha=0.05):
        """Inference table, one row per selected component, with hazard ratios.

        Columns as :meth:`HCLRegressor.summary_frame
        <hclstat.downstream.HCLRegressor.summary_frame>` plus ``hazard_ratio``,
        ``hr_ci_low``, ``hr_ci_high`` (``exp`` of ``coef`` and its interval).
        """
        frame = super().summary_frame(views, self._outcome_pair("summary_frame", views, time, event), alpha=alpha)
        frame["hazard_ratio"] = np.exp(frame["coef"])
        frame["hr_ci_low"] = np.exp(frame["ci_low"])
        frame["hr_ci_high"] = np.exp(frame["ci_high"])
        return frame
