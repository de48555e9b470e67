"""Cox partial-likelihood group lasso (FISTA with backtracking), with its NumPy references.

With survival times ``t_i > 0``, event indicators ``d_i in {0, 1}`` and the
linear predictor ``eta = X b`` (no intercept: the partial likelihood does not
identify one), Breslow's partial log-likelihood is::

    l(b) = sum_{i: d_i = 1} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)],

which treats tied event times exactly as Breslow does (every subject tied at
``t_i`` stays in the risk set of each of the tied events). The solver minimises::

    F(b) = -(1/m) l(b) + lam * sum_g w_g ||b_g||_2 .

After one sort by time, the risk-set sums are reverse cumulative sums, so the
loss and its gradient ``-(1/m) X^T r`` take ``O(m p)`` per evaluation, with the
martingale-type residual ``r_j = d_j - exp(eta_j) sum_{i: d_i = 1, t_i <= t_j}
1 / S0(t_i)``, ``S0(t) = sum_{t_j >= t} exp(eta_j)`` (:func:`_cox_residual`,
the one compiled kernel; :func:`cox_residual_reference` is its brute-force
``O(m^2)`` NumPy reference). The residuals sum to zero, so adding a constant to
a column of ``X`` changes nothing.

Penalised solver: accelerated proximal gradient (FISTA) with backtracking on
the step and a function-value restart of the momentum, stopped when the largest
KKT violation over groups is below ``tol``. Unpenalised refit: Newton's method
with step halving (:func:`cox_newton`), whose Hessian
``X^T diag(d - r) X - sum_{d_i = 1} mu_i mu_i^T``, ``mu_i = S1(t_i) / S0(t_i)``,
also costs one sort and cumulative sums. Groups and the penalty:
:mod:`hclstat.kernels.group_penalty`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .group_penalty import _check_groups, _group_prox, _group_violation, _penalty_numpy, dual_norm_ratio

__all__ = [
    "cox_sort",
    "cox_partial_loglik",
    "cox_residual_reference",
    "cox_objective",
    "cox_kkt_violation",
    "cox_lambda_max",
    "cox_group_lasso",
    "cox_group_lasso_path",
    "cox_newton",
]


@njit(cache=True)
def _cox_residual(eta, event, first, last, resid):
    """Breslow log partial likelihood of ``eta`` (rows sorted by increasing time); fills ``resid``.

    ``first[j]`` / ``last[j]`` are the first / last sorted positions with the
    time of row ``j`` (its tie block).
    """
    n = eta.shape[0]
    shift = -np.inf
    for j in range(n):
        if eta[j] > shift:
            shift = eta[j]
    w = np.empty(n)
    s0 = np.empty(n)
    acc = 0.0
    for j in range(n - 1, -1, -1):
        w[j] = np.exp(eta[j] - shift)
        acc += w[j]
        s0[j] = acc
    cum = np.empty(n)
    loglik = 0.0
    acc = 0.0
    for i in range(n):
        if event[i] > 0.0:
            s = s0[first[i]]
            acc += 1.0 / s
            loglik += eta[i] - shift - np.log(s)
        cum[i] = acc
    for j in range(n):
        resid[j] = event[j] - w[j] * cum[last[j]]
    return loglik


def cox_residual_reference(eta, time, event):
    """Brute-force ``O(m^2)`` reference: ``(log PL, residuals)`` in the input row order."""
    eta = np.asarray(eta, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    at_risk = time[None, :] >= time[:, None]  # [i, j]: j is in the risk set of i
    w = np.exp(eta)
    s0 = at_risk @ w
    loglik = float(np.sum(event * (eta - np.log(s0))))
    resid = event - w * ((event / s0) @ at_risk)
    return loglik, resid


def _check_survival(X, time, event):
    X = np.ascontiguousarray(X, dtype=np.float64)
    time = np.ascontiguousarray(time, dtype=np.float64)
    event = np.ascontiguousarray(event, dtype=np.float64)
    if X.ndim != 2 or time.shape != (X.shape[0],) or event.shape != time.shape:
        raise ValueError(f"X, time, event: expected shapes (n, p), (n,), (n,), got {X.shape}, {time.shape}, "
                         f"{event.shape}")
    if not np.all(np.isfinite(X)) or not np.all(np.isfinite(time)):
        raise ValueError("X, time: expected finite values")
    if not np.all((event == 0) | (event == 1)) or not event.any():
        raise ValueError("event: expected indicators in {0, 1} with at least one event")
    return X, time, event


def cox_sort(time):
    """``(order, first, last)``: rows by increasing time and each sorted row's tie block."""
    time = np.asarray(time, dtype=np.float64)
    order = np.argsort(time, kind="stable")
    ts = time[order]
    first = np.searchsorted(ts, ts, side="left").astype(np.int64)
    last = (np.searchsorted(ts, ts, side="right") - 1).astype(np.int64)
    return order, first, last


class _Sorted:
    """A survival problem with its rows sorted by time once (what the solvers iterate on)."""

    def __init__(self, X, time, event):
        X, time, event = _check_survival(X, time, event)
        order, self.first, self.last = cox_sort(time)
        self.X = np.ascontiguousarray(X[order])
        self.event = np.ascontiguousarray(event[order])
        self.time = time[order]
        self.m = X.shape[0]
        self._resid = np.empty(self.m)

    def loss_grad(self, beta):
        """``(-(1/m) l(b), its gradient)``."""
        loglik = _cox_residual(self.X @ beta, self.event, self.first, self.last, self._resid)
        return -loglik / self.m, -(self.X.T @ self._resid) / self.m


def cox_partial_loglik(eta, time, event):
    """Breslow log partial likelihood of the linear predictors ``eta`` (any row order)."""
    eta = np.asarray(eta, dtype=np.float64).reshape(-1)
    order, first, last = cox_sort(time)
    ev = np.ascontiguousarray(np.asarray(event, dtype=np.float64)[order])
    return float(_cox_residual(np.ascontiguousarray(eta[order]), ev, first, last, np.empty(eta.size)))


def cox_objective(X, time, event, beta, grp_ptr, grp_indices, weights, lam):
    """``-(1/m) l(b) + lam * sum_g w_g ||b_g||``."""
    beta = np.asarray(beta, dtype=np.float64)
    loss = -cox_partial_loglik(np.asarray(X, dtype=np.float64) @ beta, time, event) / np.shape(X)[0]
    return loss + lam * _penalty_numpy(beta, grp_ptr, grp_indices, weights)


def cox_kkt_violation(X, time, event, beta, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation of ``beta`` over groups (0 at the optimum)."""
    prob = _Sorted(X, time, event)
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, prob.X.shape[1])
    beta = np.ascontiguousarray(beta, dtype=np.float64)
    return float(_group_violation(prob.loss_grad(beta)[1], beta, grp_ptr, grp_indices, weights, float(lam)))


def cox_lambda_max(X, time, event, grp_ptr, grp_indices, weights):
    """Smallest ``lam`` at which ``b = 0`` is optimal: ``max_g ||grad_g(0)|| / w_g``."""
    prob = _Sorted(X, time, event)
    grad = prob.loss_grad(np.zeros(prob.X.shape[1]))[1]
    return dual_norm_ratio(grad, grp_ptr, grp_indices, weights, "cox_lambda_max")


def _initial_step(prob):
    # the curvature is at most (events / m) * max ||x_j - x_k||^2 / 4; start well below, backtrack up
    spread = float(np.max(np.var(prob.X, axis=0), initial=0.0))
    return max(0.25 * spread * prob.event.sum() / prob.m, 1e-8)


def _fista(prob, grp, lam, beta, step, tol, max_iter):
    """FISTA with backtracking and restart from ``beta``; returns ``(beta, L, n_iter, violation)``."""
    grp_ptr, grp_indices, weights = grp
    L = step
    f, g = prob.loss_grad(beta)
    F = f + lam * _penalty_numpy(beta, grp_ptr, grp_indices, weights)
    violation = _group_violation(g, beta, grp_ptr, grp_indices, weights, lam)
    previous, t, it = beta.copy(), 1.0, 0
    new = np.empty_like(beta)
    while violation > tol and it < max_iter:
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        point = beta + ((t - 1.0) / t_next) * (beta - previous)
        f_point, g_point = prob.loss_grad(point)
        while True:
            _group_prox(point - g_point / L, new, grp_ptr, grp_indices, weights, lam / L)
            f_new, g_new = prob.loss_grad(new)
            d = new - point
            if f_new <= f_point + g_point @ d + 0.5 * L * (d @ d) + 1e-12 * (1.0 + abs(f_point)) or L > 1e12:
                break
            L *= 2.0
        F_new = f_new + lam * _penalty_numpy(new, grp_ptr, grp_indices, weights)
        it += 1
        if F_new > F and t > 1.0:
            # restart: drop the momentum; the next (momentum-free) step descends
            previous, t = beta.copy(), 1.0
            continue
        previous, beta = beta, new.copy()
        g, F, t = g_new, F_new, t_next
        violation = _group_violation(g, beta, grp_ptr, grp_indices, weights, lam)
    return beta, L, it, float(violation)


def _checked(X, time, event, grp_ptr, grp_indices, weights):
    prob = _Sorted(X, time, event)
    return prob, _check_groups(grp_ptr, grp_indices, weights, prob.X.shape[1])


def cox_group_lasso(X, time, event, grp_ptr, grp_indices, weights, lam, *, beta0=None, tol=1e-8,
                    max_iter=100_000):
    """Solve the Cox group lasso by FISTA with backtracking.

    Parameters
    ----------
    X : ndarray of shape (m, p)
    time : ndarray of shape (m,)
    event : ndarray of shape (m,), values in {0, 1}
    grp_ptr, grp_indices, weights, lam
        Groups (CSR-style), their weights and the penalty level.
    beta0 : ndarray of shape (p,), optional
        Warm start.
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_iter : int

    Returns
    -------
    beta : ndarray of shape (p,)
    n_iter : int
    violation : float
        Final KKT violation (above ``tol`` when the budget ran out).
    """
    prob, grp = _checked(X, time, event, grp_ptr, grp_indices, weights)
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    p = prob.X.shape[1]
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True).reshape(p)
    beta, _, it, viol = _fista(prob, grp, lam, beta, _initial_step(prob), tol, max_iter)
    return beta, it, viol


def cox_group_lasso_path(X, time, event, grp_ptr, grp_indices, weights, lambdas, *, tol=1e-8, max_iter=100_000):
    """Solutions along decreasing ``lambdas`` with warm starts (one sort for the path).

    Returns
    -------
    coefs : ndarray of shape (n_lambdas, p)
    n_iter : ndarray of int, shape (n_lambdas,)
    violations : ndarray of shape (n_lambdas,)
    """
    prob, grp = _checked(X, time, event, grp_ptr, grp_indices, weights)
    lambdas = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    p = prob.X.shape[1]
    coefs = np.zeros((lambdas.size, p))
    iters = np.zeros(lambdas.size, dtype=np.int64)
    viols = np.zeros(lambdas.size)
    beta, step = np.zeros(p), _initial_step(prob)
    for i, lam in enumerate(lambdas):
        beta, step, iters[i], viols[i] = _fista(prob, grp, float(lam), beta, step, tol, max_iter)
        coefs[i] = beta
    return coefs, iters, viols


def cox_newton(X, time, event, *, beta0=None, tol=1e-10, max_iter=100):
    """Unpenalised Breslow maximum partial likelihood by Newton's method with step halving.

    Returns
    -------
    beta : ndarray of shape (p,)
    n_iter : int
    converged : bool
        False when ``max_iter`` ran out or the Hessian is singular (e.g. a
        column that separates the events), in which case ``beta`` is the last
        iterate.
    """
    prob = _Sorted(X, time, event)
    Xs, ev, m = prob.X, prob.event, prob.m
    p = Xs.shape[1]
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True).reshape(p)
    hit = ev > 0
    f, g = prob.loss_grad(beta)
    for it in range(1, max_iter + 1):
        eta = Xs @ beta
        w = np.exp(eta - eta.max())
        s0 = np.cumsum(w[::-1])[::-1][prob.first[hit]]
        s1 = np.cumsum((w[:, None] * Xs)[::-1], axis=0)[::-1][prob.first[hit]]
        mu = s1 / s0[:, None]
        resid = prob._resid  # the residual of the last loss_grad(beta)
        H = (Xs.T * (ev - resid)) @ Xs / m - mu.T @ mu / m
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return beta, it, False
        shrink = 1.0
        while True:
            f_new, g_new = prob.loss_grad(beta - shrink * step)
            if f_new <= f + 1e-14 * (1.0 + abs(f)) or shrink < 1e-10:
                break
            shrink *= 0.5
        beta = beta - shrink * step
        f, g = f_new, g_new
        if np.max(np.abs(shrink * step)) < tol:
            return beta, it, True
    return beta, max_iter, False
