"""Multinomial (softmax) group lasso by FISTA with backtracking, in NumPy.

With one-hot labels ``Y`` (``n x C``, one 1 per row)::

    min_{b0, B}  (1/n) sum_i [log sum_c exp(eta_ic) - sum_c Y_ic eta_ic]
                 + lam * sum_g w_g ||B_g||_F,          eta = 1 b0^T + X B,

with ``B`` of shape ``(p, C)`` (the symmetric parametrisation: one column per
class), ``B_g`` the ``|g| x C`` block of the rows of group ``g`` (a group is
in or out for every class at once) and the intercepts ``b0`` (``C``)
unpenalised. The loss is unchanged when a constant is added to every class
(``b0 + a 1``, ``B + v 1^T``); the penalty removes that freedom for ``B``
(the minimiser has rows summing to zero: centring a row lowers its norm), and
the iterates keep it, because the rows of the gradient sum to zero. The
intercepts are returned centred (``sum_c b0_c = 0``).

Solver: accelerated proximal gradient (FISTA) with backtracking on the step
size and a function-value restart of the momentum, as
:func:`hclstat.kernels.logistic_group_lasso.logistic_group_lasso`. Stopping
rule: the largest KKT violation over groups (Frobenius norms of the blocks)
and ``||d/db0||_2`` below ``tol``. Plain NumPy, no compiled kernel: the
linear predictors are kept class-major (``C x n``), so the log-sum-exp reduces
over the long contiguous axis; that makes a loss-and-gradient evaluation about
three times faster than the row-major layout (0.2 ms against 0.63 ms at
``n = 2000``, ``p = 30``, ``C = 10``, one thread) and as fast as a Numba loop.

The unpenalised refit of a selected set is :func:`multinomial_newton` (damped
Newton), which stays fast under separation, where the MLE does not exist.
"""

from __future__ import annotations

import numpy as np

from .group_penalty import _check_groups, dual_norm_ratio

__all__ = [
    "multinomial_group_lasso",
    "multinomial_group_lasso_path",
    "multinomial_objective",
    "multinomial_kkt_violation",
    "multinomial_lambda_max",
    "one_hot",
    "multinomial_newton",
]


def one_hot(codes, n_classes):
    """``(n, n_classes)`` float64 indicator matrix of integer class codes ``0..n_classes-1``."""
    codes = np.asarray(codes).astype(np.int64, copy=False).reshape(-1)
    Y = np.zeros((codes.size, int(n_classes)))
    Y[np.arange(codes.size), codes] = 1.0
    return Y


def _check_multinomial(X, Y):
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or Y.shape[0] != X.shape[0] or Y.shape[1] < 2:
        raise ValueError(f"X, Y: expected shapes (n, p) and (n, C) with C >= 2, got {X.shape} and {Y.shape}")
    if not (np.all((Y == 0) | (Y == 1)) and np.all(Y.sum(axis=1) == 1)):
        raise ValueError("Y: expected one-hot rows (0/1 with a single 1 per row)")
    empty = np.flatnonzero(Y.sum(axis=0) == 0)
    if empty.size:
        raise ValueError(
            f"Y: class column {int(empty[0])} has no rows; every class needs at least one row "
            "(its intercept would be -infinity)"
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("X: expected finite values")
    return X, Y


class _Groups:
    """Block norms, penalty and prox of the row groups of a ``(p, C)`` matrix."""

    def __init__(self, grp_ptr, grp_indices, weights, p):
        self.ptr, self.idx, self.w = _check_groups(grp_ptr, grp_indices, weights, p)
        self.sizes = np.diff(self.ptr)
        self.p = p

    def norms(self, B):
        rows = np.einsum("ij,ij->i", B, B)[self.idx]
        return np.sqrt(np.add.reduceat(rows, self.ptr[:-1]))

    def penalty(self, B):
        return float(self.w @ self.norms(B))

    def row_values(self, per_group):
        out = np.zeros(self.p)
        out[self.idx] = np.repeat(per_group, self.sizes)
        return out

    def prox(self, V, thr):
        norms = self.norms(V)
        t = thr * self.w
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(norms > t, 1.0 - t / norms, 0.0)
        return V * self.row_values(scale)[:, None]

    def violation(self, G, B, lam):
        """Largest KKT violation over groups given the smooth gradient ``G``."""
        bn = self.norms(B)
        pen = lam * self.w
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(bn > 0, pen / bn, 0.0)
        active = self.norms(G + B * self.row_values(unit)[:, None])
        inactive = np.maximum(self.norms(G) - pen, 0.0)
        return float(np.max(np.where(bn > 0, active, inactive), initial=0.0))


class _Data:
    """``X`` (n, p) with its class-major companions ``X^T`` (p, n) and ``Y^T`` (C, n)."""

    def __init__(self, X, Y):
        self.X, self.XT, self.YT = X, np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T)
        self.n = X.shape[0]


def _loss_grad(data, b0, B, need_grad):
    """Mean softmax loss at ``(b0, B)`` and, when asked, its gradients ``(g0 (C,), G (p, C))``."""
    eta = B.T @ data.XT  # (C, n): reductions over classes run along contiguous rows
    eta += b0[:, None]
    dot = np.einsum("ij,ij->", data.YT, eta)
    top = eta.max(axis=0)
    eta -= top
    np.exp(eta, out=eta)
    s = eta.sum(axis=0)
    loss = float(np.sum(top) + np.sum(np.log(s)) - dot) / data.n
    if not need_grad:
        return loss, None, None
    eta /= s
    eta -= data.YT  # now the residual softmax(eta) - Y, class-major
    return loss, eta.mean(axis=1), (eta @ data.X).T / data.n


def _initial_step(X):
    # a lower guess of the Lipschitz constant (<= sigma_max([1 X])^2 / (2n)); backtracking raises it
    col = float(np.max(np.sum(X * X, axis=0), initial=0.0)) / X.shape[0]
    return max(0.5 * max(col, 1.0), 1e-8)


def _start_intercept(Y):
    logp = np.log(Y.mean(axis=0))
    return logp - logp.mean()


def _fista(data, groups, lam, B, b0, tol, max_iter):
    """FISTA with backtracking and function-value restart from ``(b0, B)``; returns the solution."""
    B_prev, b0_prev = B.copy(), b0.copy()
    t, L = 1.0, _initial_step(data.X)
    F_old = _loss_grad(data, b0, B, False)[0] + lam * groups.penalty(B)

    def violation(b0, B):
        _, g0, G = _loss_grad(data, b0, B, True)
        return max(float(np.linalg.norm(g0)), groups.violation(G, B, lam))

    viol = violation(b0, B)
    it = 0
    while viol > tol and it < max_iter:
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_new
        WB, w0 = B + mom * (B - B_prev), b0 + mom * (b0 - b0_prev)
        f_y, g0, G = _loss_grad(data, w0, WB, True)
        while True:
            new = groups.prox(WB - G / L, lam / L)
            new0 = w0 - g0 / L
            f_new = _loss_grad(data, new0, new, False)[0]
            d, d0 = new - WB, new0 - w0
            lin = float(np.einsum("ij,ij->", G, d) + g0 @ d0)
            quad = float(np.einsum("ij,ij->", d, d) + d0 @ d0)
            # sufficient decrease: f(new) <= f(y) + <grad, new - y> + L/2 ||new - y||^2
            if f_new <= f_y + lin + 0.5 * L * quad + 1e-12 * (1.0 + abs(f_y)) or L > 1e12:
                break
            L *= 2.0
        F_new = f_new + lam * groups.penalty(new)
        if F_new > F_old and t > 1.0:
            # restart: drop the momentum, keep the current iterate (as the binary kernel)
            t, B_prev, b0_prev = 1.0, B, b0
        else:
            B_prev, b0_prev = B, b0
            B, b0, t, F_old = new, new0, t_new, F_new
        it += 1
        if it % 5 == 0 or t == 1.0:
            viol = violation(b0, B)
    return b0 - b0.mean(), B, it, float(viol)


def _check_lam(lam):
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    return lam


def _warm_start(B0, intercept0, Y, p):
    C = Y.shape[1]
    if B0 is None:
        B = np.zeros((p, C))
    else:
        B = np.array(B0, dtype=np.float64, copy=True)
        if B.shape != (p, C):
            raise ValueError(f"B0: expected shape {(p, C)}, got {B.shape}")
        B -= B.mean(axis=1, keepdims=True)  # the loss ignores row shifts; the penalty prefers centred rows
    b0 = _start_intercept(Y) if intercept0 is None else np.array(intercept0, dtype=np.float64, copy=True)
    if b0.shape != (C,):
        raise ValueError(f"intercept0: expected shape ({C},), got {b0.shape}")
    return B, b0


def multinomial_group_lasso(X, Y, grp_ptr, grp_indices, weights, lam, *, B0=None, intercept0=None,
                            tol=1e-8, max_iter=100_000):
    """Solve the multinomial group lasso by FISTA with backtracking.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    Y : ndarray of shape (n, C)
        One-hot labels (see :func:`one_hot`); every class needs a row.
    grp_ptr, grp_indices, weights, lam
        Row groups of ``B`` and the penalty, as in
        :func:`hclstat.kernels.group_lasso.gram_group_lasso`.
    B0, intercept0 : warm start, optional
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_iter : int

    Returns
    -------
    intercept : ndarray of shape (C,)
        Centred.
    B : ndarray of shape (p, C)
        Rows centred.
    n_iter : int
    violation : float
        Final KKT violation (above ``tol`` when the budget ran out).
    """
    X, Y = _check_multinomial(X, Y)
    groups = _Groups(grp_ptr, grp_indices, weights, X.shape[1])
    B, b0 = _warm_start(B0, intercept0, Y, X.shape[1])
    return _fista(_Data(X, Y), groups, _check_lam(lam), B, b0, tol, max_iter)


def multinomial_group_lasso_path(X, Y, grp_ptr, grp_indices, weights, lambdas, *, tol=1e-8, max_iter=100_000):
    """:func:`multinomial_group_lasso` along ``lambdas`` (in the order given), warm-started.

    Returns
    -------
    coefs : ndarray of shape (n_lambdas, p, C)
    intercepts : ndarray of shape (n_lambdas, C)
    n_iter : ndarray of int64, shape (n_lambdas,)
    violations : ndarray of shape (n_lambdas,)
    """
    X, Y = _check_multinomial(X, Y)
    groups = _Groups(grp_ptr, grp_indices, weights, X.shape[1])
    lambdas = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise ValueError(f"lambdas: expected non-negative numbers, got {lambdas!r}")
    B, b0 = _warm_start(None, None, Y, X.shape[1])
    data = _Data(X, Y)
    coefs = np.zeros((lambdas.size, X.shape[1], Y.shape[1]))
    intercepts = np.zeros((lambdas.size, Y.shape[1]))
    iters = np.zeros(lambdas.size, dtype=np.int64)
    viols = np.zeros(lambdas.size)
    for i, lam in enumerate(lambdas):
        b0, B, iters[i], viols[i] = _fista(data, groups, float(lam), B, b0, tol, max_iter)
        coefs[i], intercepts[i] = B, b0
    return coefs, intercepts, iters, viols


def multinomial_objective(X, Y, intercept, B, grp_ptr, grp_indices, weights, lam):
    """Mean softmax loss plus the group penalty."""
    X, Y = _check_multinomial(X, Y)
    groups = _Groups(grp_ptr, grp_indices, weights, X.shape[1])
    B = np.asarray(B, dtype=np.float64)
    loss = _loss_grad(_Data(X, Y), np.asarray(intercept, dtype=np.float64), B, False)[0]
    return loss + float(lam) * groups.penalty(B)


def multinomial_kkt_violation(X, Y, intercept, B, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation of ``(intercept, B)`` (0 at the optimum)."""
    X, Y = _check_multinomial(X, Y)
    groups = _Groups(grp_ptr, grp_indices, weights, X.shape[1])
    B = np.asarray(B, dtype=np.float64)
    _, g0, G = _loss_grad(_Data(X, Y), np.asarray(intercept, dtype=np.float64), B, True)
    return max(float(np.linalg.norm(g0)), groups.violation(G, B, float(lam)))


def multinomial_lambda_max(X, Y, grp_ptr, grp_indices, weights):
    """Smallest ``lam`` for which ``B = 0`` (intercepts at the log class frequencies) is optimal.

    At ``B = 0`` the optimal intercepts give probabilities equal to the class
    frequencies ``pi``, so the gradient is ``G = X^T (1 pi^T - Y) / n`` and
    ``lam_max = max_g ||G_g||_F / w_g``.
    """
    X, Y = _check_multinomial(X, Y)
    _check_groups(grp_ptr, grp_indices, weights, X.shape[1])
    G = X.T @ (Y.mean(axis=0) - Y) / X.shape[0]
    return dual_norm_ratio(G, grp_ptr, grp_indices, weights, "multinomial_lambda_max")


def multinomial_newton(X, Y, *, tol=1e-8, max_iter=100):
    """Unpenalised multinomial maximum likelihood by damped Newton (the refit of a selected set).

    Baseline parametrisation (class 0 fixed at zero, so the Hessian is
    definite when the MLE exists), Armijo backtracking on the mean loss; the
    result is returned symmetric and centred like :func:`multinomial_group_lasso`.
    Under (quasi-)separation the MLE does not exist: the coefficients grow
    while the loss creeps to its infimum, and Newton gets the gradient below
    ``tol`` in tens of steps where a first-order method would need millions.

    Returns
    -------
    intercept : ndarray of shape (C,)
    B : ndarray of shape (p, C)
    n_iter : int
    gradient : float
        Largest absolute gradient entry at the end (above ``tol``: not converged).
    """
    X, Y = _check_multinomial(X, Y)
    n, C = Y.shape
    X1 = np.column_stack([np.ones(n), X])
    q = X1.shape[1]
    theta = np.zeros((q, C - 1))
    theta[0] = np.log(Y[:, 1:].mean(axis=0) / Y[:, 0].mean())

    def evaluate(theta):
        eta = np.column_stack([np.zeros(n), X1 @ theta])
        lse = np.logaddexp.reduce(eta, axis=1)
        return float(np.mean(lse - np.einsum("ij,ij->i", Y, eta))), np.exp(eta - lse[:, None])

    f, P = evaluate(theta)
    grad = np.inf
    it = 0
    while it < max_iter:
        G = X1.T @ (P[:, 1:] - Y[:, 1:]) / n
        grad = float(np.max(np.abs(G)))
        if grad <= tol:
            break
        # H = blockdiag(X1^T diag(P_a) X1) - Q^T Q / n with Q = [X1 * P_a]_a, all divided by n
        Q = (X1[:, None, :] * P[:, 1:, None]).reshape(n, -1)
        H = -(Q.T @ Q)
        for a in range(C - 1):
            H[a * q:(a + 1) * q, a * q:(a + 1) * q] += X1.T @ Q[:, a * q:(a + 1) * q]
        g = G.T.reshape(-1)
        try:
            step = np.linalg.solve(H / n, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H / n, g, rcond=None)[0]
        step = step.reshape(C - 1, q).T
        t, slope = 1.0, float(np.sum(G * step))
        while True:
            f_new, P_new = evaluate(theta - t * step)
            if f_new <= f - 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        it += 1
        if t < 1e-10:  # no descent left in double precision
            break
        theta -= t * step
        f, P = f_new, P_new
    full = np.column_stack([np.zeros(q), theta])
    full -= full.mean(axis=1, keepdims=True)
    return full[0], full[1:], it, grad
