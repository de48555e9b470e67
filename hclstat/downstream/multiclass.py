"""The multinomial outcome model of :class:`~hclstat.downstream.HCLClassifier` (more than two classes).

With ``C > 2`` classes the classifier solves the multinomial group lasso over
structures (:mod:`hclstat.kernels.multinomial_group_lasso`): coefficients
``B`` of shape ``(K, C)`` (one column per class, the symmetric
parametrisation), the block of group ``g`` (``|g| x C``) penalised by
``lambda sqrt(|g|) ||B_g||_F`` so that a structure enters for every class or
for none, and unpenalised intercepts per class. The refit of the selected
groups is unpenalised; statsmodels ``MNLogit`` (baseline ``classes_[0]``)
gives its inference. The functions here are the classifier's outcome-model
methods for that case; it dispatches to them once ``classes_`` has more than
two labels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import logsumexp, softmax
from sklearn.model_selection import StratifiedKFold

from ..exceptions import EstimationWarning
from ..kernels.multinomial_group_lasso import (
    multinomial_group_lasso_path,
    multinomial_lambda_max,
    multinomial_newton,
    one_hot,
)

__all__ = ["multinomial_splitter", "prepare", "lambda_max", "path", "refit", "loss", "bic", "n_parameters",
           "statsmodels_refit", "inference_frame", "heldout_codes", "predict_proba"]


def _label_counts(classes, codes):
    return np.bincount(codes.astype(np.int64), minlength=classes.size)


def multinomial_splitter(est, y, seed):
    """Stratified folds; every class needs at least ``cv`` rows (one per validation fold)."""
    counts = _label_counts(est.classes_, y)
    k = int(np.argmin(counts))
    if counts[k] < est.cv:
        raise ValueError(
            f"cv={est.cv}: class {est.classes_.tolist()[k]!r} has only {counts[k]} row(s); stratified {est.cv}-fold "
            f"cross-validation needs at least {est.cv} per class. Use fewer folds, merge rare classes, "
            "or criterion='bic'"
        )
    return StratifiedKFold(est.cv, shuffle=True, random_state=seed)


def prepare(est, Zf, Zp, y, rows):
    codes = y[rows].astype(np.int64)
    missing = np.flatnonzero(_label_counts(est.classes_, codes) == 0)
    if missing.size:
        raise ValueError(
            f"cv: a training fold has no row of class {est.classes_.tolist()[missing[0]]!r}; the multinomial fit "
            "needs every class in every training fold (use a stratified splitter or fewer folds)"
        )
    return {
        "X": np.ascontiguousarray(Zf[rows]),
        "Y": one_hot(codes, est.classes_.size),
        "Zp": Zp[rows],
    }


def lambda_max(est, prob):
    grp_ptr, grp_indices, weights = est._grp
    return multinomial_lambda_max(prob["X"], prob["Y"], grp_ptr, grp_indices, weights)


def path(est, prob, lambdas):
    grp_ptr, grp_indices, weights = est._grp
    coefs, intercepts, iters, viols = multinomial_group_lasso_path(
        prob["X"], prob["Y"], grp_ptr, grp_indices, weights, lambdas, tol=est.tol, max_iter=est.max_iter,
    )
    est._n_unconverged += int(np.sum(viols > est.tol))
    return coefs, intercepts, int(iters.sum())


def refit(est, prob, support):
    """Unpenalised multinomial fit on the columns in ``support``: ``(b0 (C,), B (K, C))``, centred."""
    X, Y = prob["X"], prob["Y"]
    B = np.zeros((X.shape[1], Y.shape[1]))
    if not support.any():
        logp = np.log(Y.mean(axis=0))
        return logp - logp.mean(), B
    # Newton, not the penalised solver at lambda = 0: under separation (a rare class) a first-order
    # method needs millions of steps to flatten the gradient, Newton tens
    b0, B[support], _, _ = multinomial_newton(X[:, support], Y, tol=est.tol)
    return b0, B


def loss(y, eta):
    """Mean log-loss of the class codes ``y`` under the linear predictors ``eta`` (n, C)."""
    codes = y.astype(np.int64)
    return float(np.mean(logsumexp(eta, axis=1) - eta[np.arange(codes.size), codes]))


def bic(y, eta, df, m):
    return 2.0 * m * loss(y, eta) + df * np.log(m)


def n_parameters(support, n_classes):
    """Free parameters of a refit: (selected components + intercept) per contrast with the baseline."""
    return (int(support.sum()) + 1) * (n_classes - 1)


def _baseline_params(est, support):
    """The fitted symmetric coefficients as MNLogit's baseline contrasts, shape (1 + |support|, C - 1)."""
    full = np.vstack([est.intercept_[None, :], est._coef_vector()[support]])
    return full[:, 1:] - full[:, :1]


def statsmodels_refit(est, Zp, y, support):
    """``MNLogitResults`` of the refit (baseline ``classes_[0]``), or None after an EstimationWarning."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    X = est._design(Zp, support)
    names = [str(c) for c in est.classes_]
    endog = pd.Series(pd.Categorical.from_codes(y.astype(np.int64), categories=names), name="y")
    start = _baseline_params(est, support).ravel(order="F")  # MNLogit stacks the contrasts class by class
    problem = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = sm.MNLogit(endog, X).fit(start_params=start, disp=0, maxiter=200)
        if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
            problem = "perfect separation: some class is predicted with certainty"
        elif not res.mle_retvals.get("converged", True):
            problem = "no convergence in 200 Newton steps: the coefficients run off to infinity (separation)"
        elif not np.all(np.isfinite(np.asarray(res.bse))):
            problem = "singular information matrix: standard errors are not finite"
    except Exception as exc:  # singular Hessian, overflow
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return res
    counts = _label_counts(est.classes_, y)
    warnings.warn(
        f"HCLClassifier: the statsmodels MNLogit refit failed ({problem}); summary() is unavailable "
        f"(often too few rows per class: the rarest, {est.classes_.tolist()[int(np.argmin(counts))]!r}, has "
        f"{int(counts.min())} of {y.shape[0]})",
        EstimationWarning,
        stacklevel=4,
    )
    return None


def inference_frame(est, res, alpha):
    """Per-class inference rows of an ``MNLogitResults``, indexed by ``(class, term)``."""
    names = list(res.model.exog_names)
    n_exog, n_contrasts = len(names), est.classes_.size - 1
    params, bse, pvalues = (np.asarray(a, dtype=np.float64) for a in (res.params, res.bse, res.pvalues))
    ci = np.asarray(res.conf_int(alpha=alpha), dtype=np.float64).reshape(n_contrasts, n_exog, 2)
    frames = []
    for j, label in enumerate(est.classes_.tolist()[1:]):
        frame = est._inference_table(names, params[:, j], bse[:, j], ci[j], pvalues[:, j])
        frames.append(pd.concat({label: frame}, names=["class"]))
    return pd.concat(frames)


def heldout_codes(est, classes, codes):
    """Held-out labels (``classes[codes]``) coded as in fit; every class must occur (MNLogit needs it)."""
    unknown = set(classes.tolist()) - set(est.classes_.tolist())
    if unknown:
        raise ValueError(f"y: labels {sorted(unknown)} were not seen in fit (classes {list(est.classes_)})")
    absent = [c for c in est.classes_.tolist() if c not in set(classes.tolist())]
    if absent:
        raise ValueError(
            f"y: the held-out rows have no row of class {absent[0]!r}; the multinomial refit needs every "
            f"class of fit ({list(est.classes_)})"
        )
    return np.searchsorted(est.classes_, classes)[codes].astype(np.float64)


def predict_proba(eta):
    return softmax(eta, axis=1)
