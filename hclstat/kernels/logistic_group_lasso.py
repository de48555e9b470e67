"""Logistic-loss group lasso (FISTA with backtracking), with its NumPy reference.

With labels ``y in {0, 1}``::

    min_{b0, b}  (1/n) sum_i [log(1 + exp(eta_i)) - y_i eta_i]
                 + lam * sum_g w_g ||b_g||_2,       eta = b0 + X b,

the intercept ``b0`` unpenalised (and fixed at 0 when ``fit_intercept`` is
false). Solver: accelerated proximal gradient (FISTA) with backtracking on the
step size and a function-value restart of the momentum. Stopping rule: the
largest KKT violation over groups (and ``|d/db0|`` for the intercept) below
``tol``. Groups and the penalty: :mod:`hclstat.kernels.group_penalty`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .group_penalty import _check_groups, _group_prox, _group_violation, _penalty, _penalty_numpy, dual_norm_ratio

__all__ = [
    "logistic_group_lasso",
    "logistic_group_lasso_reference",
    "logistic_objective",
    "logistic_kkt_violation",
    "logistic_lambda_max",
]


@njit(cache=True)
def _log1pexp(t):
    if t > 0.0:
        return t + np.log1p(np.exp(-t))
    return np.log1p(np.exp(t))


@njit(cache=True)
def _sigmoid(t):
    if t >= 0.0:
        return 1.0 / (1.0 + np.exp(-t))
    e = np.exp(t)
    return e / (1.0 + e)


@njit(cache=True)
def _logistic_loss_grad(X, y, b0, beta, grad, need_grad):
    """Mean logistic loss at ``(b0, beta)``; fills ``grad`` (p,) and returns d/db0 too."""
    n, p = X.shape
    loss = 0.0
    g0 = 0.0
    if need_grad:
        for k in range(p):
            grad[k] = 0.0
    for i in range(n):
        eta = b0
        for k in range(p):
            eta += X[i, k] * beta[k]
        loss += _log1pexp(eta) - y[i] * eta
        if need_grad:
            r = _sigmoid(eta) - y[i]
            g0 += r
            for k in range(p):
                grad[k] += r * X[i, k]
    if need_grad:
        for k in range(p):
            grad[k] /= n
    return loss / n, g0 / n


@njit(cache=True)
def _logistic_fista_step(X, y, grp_ptr, grp_indices, weights, lam, fit_intercept,
                         beta, beta_prev, b0s, state, grad, work_y, work_new):
    """One FISTA iteration with backtracking, in place.

    ``b0s = [b0, b0_prev]``; ``state = [t, L, F(beta)]``. On return ``beta`` holds
    the new iterate, ``beta_prev`` the old one, ``state`` is updated.
    """
    p = beta.shape[0]
    t, L, F_old = state[0], state[1], state[2]
    t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
    mom = (t - 1.0) / t_new
    for k in range(p):
        work_y[k] = beta[k] + mom * (beta[k] - beta_prev[k])
    y0 = b0s[0] + mom * (b0s[0] - b0s[1])
    f_y, g0 = _logistic_loss_grad(X, y, y0, work_y, grad, True)
    if not fit_intercept:
        g0 = 0.0
    v = np.empty(p)
    while True:
        for k in range(p):
            v[k] = work_y[k] - grad[k] / L
        _group_prox(v, work_new, grp_ptr, grp_indices, weights, lam / L)
        new0 = y0 - g0 / L
        f_new, _ = _logistic_loss_grad(X, y, new0, work_new, grad, False)
        # sufficient decrease: f(new) <= f(y) + <grad, new - y> + L/2 ||new - y||^2
        lin = g0 * (new0 - y0)
        quad = (new0 - y0) ** 2
        for k in range(p):
            d = work_new[k] - work_y[k]
            lin += grad[k] * d
            quad += d * d
        if f_new <= f_y + lin + 0.5 * L * quad + 1e-12 * (1.0 + abs(f_y)) or L > 1e12:
            break
        L *= 2.0
    F_new = f_new + lam * _penalty(work_new, grp_ptr, grp_indices, weights)
    if F_new > F_old and t > 1.0:
        # function-value restart: drop the momentum, keep the previous iterate
        # (a momentum-free step is always accepted: it descends in exact
        # arithmetic, and near the optimum F differences are below round-off)
        state[0] = 1.0
        state[1] = L
        for k in range(p):
            beta_prev[k] = beta[k]
        b0s[1] = b0s[0]
        return
    for k in range(p):
        beta_prev[k] = beta[k]
        beta[k] = work_new[k]
    b0s[1] = b0s[0]
    b0s[0] = new0
    state[0] = t_new
    state[1] = L
    state[2] = F_new


@njit(cache=True)
def _logistic_violation(X, y, b0, beta, grp_ptr, grp_indices, weights, lam, fit_intercept):
    grad = np.empty(beta.shape[0])
    _, g0 = _logistic_loss_grad(X, y, b0, beta, grad, True)
    viol = _group_violation(grad, beta, grp_ptr, grp_indices, weights, lam)
    if fit_intercept and abs(g0) > viol:
        viol = abs(g0)
    return viol


def _check_logistic(X, y):
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X, y: expected shapes (n, p) and (n,), got {X.shape} and {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y: expected labels in {0, 1}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: expected finite values")
    return X, y


def logistic_objective(X, y, intercept, beta, grp_ptr, grp_indices, weights, lam):
    """Mean logistic loss plus the group penalty."""
    eta = intercept + X @ beta
    loss = float(np.mean(np.logaddexp(0.0, eta) - y * eta))
    return loss + lam * _penalty_numpy(np.asarray(beta, dtype=np.float64), grp_ptr, grp_indices, weights)


def logistic_kkt_violation(X, y, intercept, beta, grp_ptr, grp_indices, weights, lam, fit_intercept=True):
    """Largest KKT violation of ``(intercept, beta)`` (0 at the optimum)."""
    X, y = _check_logistic(X, y)
    return float(_logistic_violation(X, y, float(intercept), np.ascontiguousarray(beta, dtype=np.float64),
                                     np.ascontiguousarray(grp_ptr, dtype=np.int64),
                                     np.ascontiguousarray(grp_indices, dtype=np.int64),
                                     np.ascontiguousarray(weights, dtype=np.float64), float(lam),
                                     bool(fit_intercept)))


def logistic_lambda_max(X, y, grp_ptr, grp_indices, weights, fit_intercept=True):
    """Smallest ``lam`` for which ``beta = 0`` (intercept at the log-odds of ``mean y``) is optimal."""
    X, y = _check_logistic(X, y)
    ybar = float(np.mean(y)) if fit_intercept else 0.5
    grad = X.T @ (ybar - y) / X.shape[0]
    return dual_norm_ratio(grad, grp_ptr, grp_indices, weights, "logistic_lambda_max")


def _initial_step(X, fit_intercept):
    # a lower guess of the Lipschitz constant sigma_max([1 X])^2 / (4n); backtracking raises it
    n = X.shape[0]
    col = float(np.max(np.sum(X * X, axis=0), initial=0.0)) / n
    return max(0.25 * max(col, 1.0 if fit_intercept else 0.0), 1e-8)


def _start_intercept(y, fit_intercept):
    if not fit_intercept:
        return 0.0
    ybar = float(np.clip(np.mean(y), 1e-12, 1 - 1e-12))
    return float(np.log(ybar / (1.0 - ybar)))


def logistic_group_lasso(X, y, grp_ptr, grp_indices, weights, lam, *, fit_intercept=True,
                         beta0=None, intercept0=None, tol=1e-8, max_iter=100_000):
    """Solve the logistic group lasso by FISTA with backtracking.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    y : ndarray of shape (n,), values in {0, 1}
    grp_ptr, grp_indices, weights, lam
        As in :func:`gram_group_lasso`.
    fit_intercept : bool
    beta0, intercept0 : warm start, optional
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_iter : int

    Returns
    -------
    intercept : float
    beta : ndarray of shape (p,)
    n_iter : int
    violation : float
        Final KKT violation (above ``tol`` when the budget ran out).
    """
    X, y = _check_logistic(X, y)
    p = X.shape[1]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True)
    b0 = _start_intercept(y, fit_intercept) if intercept0 is None else float(intercept0)
    if not fit_intercept:
        b0 = 0.0
    beta_prev = beta.copy()
    b0s = np.array([b0, b0])
    F0 = logistic_objective(X, y, b0, beta, grp_ptr, grp_indices, weights, lam)
    state = np.array([1.0, _initial_step(X, fit_intercept), F0])
    grad, work_y, work_new = np.empty(p), np.empty(p), np.empty(p)
    fi = bool(fit_intercept)
    violation = _logistic_violation(X, y, b0s[0], beta, grp_ptr, grp_indices, weights, lam, fi)
    it = 0
    while violation > tol and it < max_iter:
        _logistic_fista_step(X, y, grp_ptr, grp_indices, weights, lam, fi,
                             beta, beta_prev, b0s, state, grad, work_y, work_new)
        it += 1
        if it % 5 == 0 or state[0] == 1.0:
            violation = _logistic_violation(X, y, b0s[0], beta, grp_ptr, grp_indices, weights, lam, fi)
    return float(b0s[0]), beta, it, float(violation)


def logistic_group_lasso_reference(X, y, grp_ptr, grp_indices, weights, lam, *, fit_intercept=True,
                                   tol=1e-8, max_iter=100_000):
    """Plain-NumPy FISTA with backtracking and restart, same iterates as :func:`logistic_group_lasso`."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = X.shape
    groups = [np.asarray(grp_indices[grp_ptr[g]:grp_ptr[g + 1]]) for g in range(len(grp_ptr) - 1)]

    def loss(b0, b):
        eta = b0 + X @ b
        return float(np.mean(np.logaddexp(0.0, eta) - y * eta))

    def gradient(b0, b):
        r = 1.0 / (1.0 + np.exp(-(b0 + X @ b))) - y
        return float(np.mean(r)) if fit_intercept else 0.0, X.T @ r / n

    def penalty(b):
        return sum(weights[g] * np.linalg.norm(b[idx]) for g, idx in enumerate(groups))

    def prox(v, thr):
        out = np.zeros_like(v)
        for g, idx in enumerate(groups):
            nv, t = np.linalg.norm(v[idx]), thr * weights[g]
            out[idx] = (1.0 - t / nv) * v[idx] if nv > t else 0.0
        return out

    def violation(b0, b):
        g0, g = gradient(b0, b)
        out = abs(g0)
        for k, idx in enumerate(groups):
            nb, pen = np.linalg.norm(b[idx]), lam * weights[k]
            v = max(np.linalg.norm(g[idx]) - pen, 0.0) if nb == 0 else np.linalg.norm(g[idx] + pen * b[idx] / nb)
            out = max(out, v)
        return out

    b0 = _start_intercept(y, fit_intercept)
    beta, beta_prev, b0_prev = np.zeros(p), np.zeros(p), b0
    t, L = 1.0, _initial_step(X, fit_intercept)
    F_old = loss(b0, beta) + lam * penalty(beta)
    it = 0
    viol = violation(b0, beta)
    while viol > tol and it < max_iter:
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_new
        wy, y0 = beta + mom * (beta - beta_prev), b0 + mom * (b0 - b0_prev)
        f_y = loss(y0, wy)
        g0, g = gradient(y0, wy)
        while True:
            new = prox(wy - g / L, lam / L)
            new0 = y0 - g0 / L
            f_new = loss(new0, new)
            quad = (new0 - y0) ** 2 + np.sum((new - wy) ** 2)
            lin = g0 * (new0 - y0) + g @ (new - wy)
            if f_new <= f_y + lin + 0.5 * L * quad + 1e-12 * (1.0 + abs(f_y)) or L > 1e12:
                break
            L *= 2.0
        F_new = f_new + lam * penalty(new)
        if F_new > F_old and t > 1.0:
            t, beta_prev, b0_prev = 1.0, beta.copy(), b0
        else:
            beta_prev, b0_prev = beta, b0
            beta, b0, t, F_old = new, new0, t_new, F_new
        it += 1
        if it % 5 == 0 or t == 1.0:
            viol = violation(b0, beta)
    return b0, beta, it, float(viol)

