"""Group lasso solvers: squared loss in Gram form, logistic loss on data.

Squared loss (:func:`gram_group_lasso`). With a symmetric positive
semi-definite ``G`` (``p x p``) and a vector ``c`` (``p``)::

    min_b  F(b) = 1/2 b^T G b - c^T b + lam * sum_g w_g ||b_g||_2 .

With ``G = X^T X / n`` and ``c = X^T y / n`` this is
``1/(2n) ||y - X b||^2 + lam * sum_g w_g ||b_g||`` up to a constant; taking
``G`` as an argument (not ``X``) lets a caller pass a *corrected* Gram matrix,
e.g. a measurement-error-corrected one projected onto the PSD cone.
Solver: block coordinate descent (:func:`bcd_epoch`, the package's one
group-lasso BCD kernel, which also solves the HCL block sub-problem), one
proximal-gradient step per block with step ``1 / L_g``,
``L_g = lambda_max(G_gg)`` (exact block minimisation when the block is a
multiple of the identity), keeping ``Gb = G b`` up to date, with
Anderson extrapolation of the epochs (accepted only when it lowers ``F``), as in
skglm: ill-conditioned ``G`` (projected corrected Gram matrices, ``m < p``)
otherwise needs thousands of epochs.

Logistic loss (:func:`logistic_group_lasso`, FISTA): in
:mod:`hclstat.kernels.logistic_group_lasso`, re-exported here; the groups and
the penalty: :mod:`hclstat.kernels.group_penalty`.

Stopping rule: the largest KKT violation over groups,
``||grad_g + lam w_g b_g / ||b_g|| ||`` for ``b_g != 0`` and
``max(0, ||grad_g|| - lam w_g)`` for ``b_g = 0``, below ``tol``.

Groups are CSR-style: the columns of group ``g`` are
``grp_indices[grp_ptr[g]:grp_ptr[g + 1]]``; ``weights[g] >= 0`` (zero leaves the
group unpenalised). The Python drivers validate, loop over epochs and check
convergence; the compiled functions receive only contiguous float64/int64
arrays and scalars and update their arrays in place. ``*_reference`` functions
run the same algorithms in plain NumPy for the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .group_penalty import (  # noqa: F401  (re-exported: the solvers' public import path)
    _check_groups,
    _group_violation,
    _penalty,
    _penalty_numpy,
    dual_norm_ratio,
    group_lipschitz,
    make_groups,
)
from . import logistic_group_lasso as _logistic
from .logistic_group_lasso import *  # noqa: F401,F403  (re-exported: the solvers' public import path)

__all__ = [
    "make_groups",
    "group_lipschitz",
    "bcd_epoch",
    "grouped_product",
    "gram_group_lasso",
    "gram_group_lasso_path",
    "gram_group_lasso_reference",
    "gram_objective",
    "gram_kkt_violation",
    "gram_lambda_max",
] + _logistic.__all__


# ------------------------------------------- the block-coordinate-descent core
@njit(cache=True)
def bcd_epoch(G, C, X, GX, grp_ptr, grp_indices, weights, lipschitz, lam, work):
    """One block-coordinate-descent epoch of the Gram-form group lasso (in place).

    The problem, in a matrix variable ``X`` (``q x P``) whose groups are sets of
    columns::

        min_X  1/2 tr(X G X^T) - tr(C^T X) + lam * sum_g w_g ||X[:, g]||_F .

    ``q = 1`` is the vector problem of :func:`gram_group_lasso`
    (``X = beta^T``); the HCL block sub-problem of
    :func:`hclstat.kernels.hcl.group_bcd` is ``X = A`` (``p_m x K``) with
    singleton column groups, ``G = H``, ``C = D`` and ``lam w_j = lam_j / 2``.
    Each group takes one proximal-gradient step with step ``1 / L_g``,
    ``L_g = lipschitz[g] = lambda_max(G_gg)``: with
    ``R = L_g X_g - (X G - C)_g`` (the residual of the other groups when
    ``G_gg = L_g I``), ``X_g <- R / L_g * max(0, 1 - lam w_g / ||R||_F)``, the
    exact block minimiser when ``G_gg`` is a multiple of the identity (always
    for singleton groups). ``GX = X G`` is kept up to date (``GX`` over the
    grouped columns: the caller initialises it). ``work`` is scratch of shape
    ``(largest group size, q)``. Groups with ``L_g <= 0`` are skipped.

    Returns
    -------
    max_change : float
        Largest squared Frobenius change of a group in this epoch.
    max_norm : float
        Largest squared Frobenius norm of a group after its update.
    """
    q = X.shape[0]
    P = X.shape[1]
    max_change = 0.0
    max_norm = 0.0
    for g in range(grp_ptr.shape[0] - 1):
        L = lipschitz[g]
        if L <= 0.0:
            continue  # a zero block: its coefficients stay where they are
        start = grp_ptr[g]
        size = grp_ptr[g + 1] - start
        norm = 0.0
        for j in range(size):
            k = grp_indices[start + j]
            for r in range(q):
                v = L * X[r, k] - (GX[r, k] - C[r, k])
                work[j, r] = v
                norm += v * v
        norm = np.sqrt(norm)
        pen = lam * weights[g]
        scale = 0.0
        if norm > pen:
            scale = (1.0 - pen / norm) / L
        change = 0.0
        gnorm = 0.0
        for j in range(size):
            k = grp_indices[start + j]
            for r in range(q):
                new = work[j, r] * scale
                delta = new - X[r, k]
                if delta != 0.0:  # a coefficient that stays put costs no update of GX
                    change += delta * delta
                    X[r, k] = new
                    for i in range(P):
                        GX[r, i] += delta * G[k, i]
                gnorm += new * new
        if change > max_change:
            max_change = change
        if gnorm > max_norm:
            max_norm = gnorm
    return max_change, max_norm


@njit(cache=True)
def grouped_product(X, G, cols, GX):
    """``GX = X[:, cols] G[cols, :]`` into ``GX``: the ``GX`` of :func:`bcd_epoch`
    when only the columns ``cols`` (distinct) take part in the problem."""
    if cols.shape[0] == X.shape[1]:  # every column: one BLAS call
        np.dot(X, G, GX)
        return
    GX[:, :] = 0.0
    for b in range(cols.shape[0]):
        c = cols[b]
        for r in range(X.shape[0]):
            x = X[r, c]
            if x != 0.0:
                for i in range(GX.shape[1]):
                    GX[r, i] += x * G[c, i]


@njit(cache=True)
def _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam):
    return _group_violation(Gb - c, beta, grp_ptr, grp_indices, weights, lam)


def gram_objective(G, c, beta, grp_ptr, grp_indices, weights, lam):
    """``F(b) = 1/2 b^T G b - c^T b + lam sum_g w_g ||b_g||``."""
    beta = np.asarray(beta, dtype=np.float64)
    return float(0.5 * beta @ G @ beta - c @ beta) + lam * _penalty_numpy(beta, grp_ptr, grp_indices, weights)


def gram_kkt_violation(G, c, beta, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation of ``beta`` (0 at the optimum)."""
    beta = np.ascontiguousarray(beta, dtype=np.float64)
    Gb = np.ascontiguousarray(G @ beta)
    return float(_gram_violation(np.ascontiguousarray(c, dtype=np.float64), beta, Gb,
                                 np.ascontiguousarray(grp_ptr, dtype=np.int64),
                                 np.ascontiguousarray(grp_indices, dtype=np.int64),
                                 np.ascontiguousarray(weights, dtype=np.float64), float(lam)))


def gram_lambda_max(c, grp_ptr, grp_indices, weights):
    """Smallest ``lam`` for which ``b = 0`` is optimal: ``max_g ||c_g|| / w_g``.

    Groups with zero weight are unpenalised, so zero is optimal for no ``lam``
    unless their ``c_g`` vanishes; they are rejected here.
    """
    return dual_norm_ratio(c, grp_ptr, grp_indices, weights, "gram_lambda_max")


def _check_gram(G, c):
    G = np.ascontiguousarray(G, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G: expected a square matrix, got shape {G.shape}")
    if c.shape != (G.shape[0],):
        raise ValueError(f"c: expected shape ({G.shape[0]},), got {c.shape}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(c))):
        raise ValueError("G, c: expected finite values")
    if not np.allclose(G, G.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(G).max(initial=0.0)))):
        raise ValueError("G: expected a symmetric matrix")
    return G, c


def _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, lam, tol, max_epochs, anderson):
    """Epoch loop with Anderson extrapolation (as in skglm); updates ``beta`` in place.

    Every ``anderson`` epochs the last ``anderson + 1`` iterates are combined
    with the weights that minimise the norm of the combined differences; the
    extrapolated point replaces the iterate only if it lowers the objective,
    so the objective still never increases.
    """
    Gb = np.ascontiguousarray(G @ beta)
    violation = _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam)
    history = np.empty((anderson + 1, beta.size)) if anderson > 0 else None
    n_hist = 0
    epoch = 0
    # the vector problem is the q = 1 case of bcd_epoch: row views share memory with beta, Gb
    X, GX, C = beta.reshape(1, -1), Gb.reshape(1, -1), c.reshape(1, -1)
    work = np.empty((int(np.max(np.diff(grp_ptr))), 1))
    while violation > tol and epoch < max_epochs:
        bcd_epoch(G, C, X, GX, grp_ptr, grp_indices, weights, lipschitz, lam, work)
        epoch += 1
        if history is not None:
            history[n_hist] = beta
            n_hist += 1
            if n_hist == anderson + 1:
                n_hist = 0
                U = np.diff(history, axis=0)
                try:
                    z = np.linalg.solve(U @ U.T, np.ones(anderson))
                except np.linalg.LinAlgError:
                    z = None
                if z is not None and np.isfinite(z).all() and z.sum() != 0:
                    acc = (z / z.sum()) @ history[1:]
                    f_acc = 0.5 * acc @ G @ acc - c @ acc + lam * _penalty(acc, grp_ptr, grp_indices, weights)
                    f_cur = 0.5 * beta @ Gb - c @ beta + lam * _penalty(beta, grp_ptr, grp_indices, weights)
                    if f_acc < f_cur:
                        beta[:] = acc
                        Gb[:] = G @ beta
        if epoch % 10 == 0:  # keep Gb exact: rank-one updates accumulate rounding
            Gb[:] = G @ beta
        violation = _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam)
    return epoch, float(violation)


def gram_group_lasso(G, c, grp_ptr, grp_indices, weights, lam, *, beta0=None, lipschitz=None,
                     tol=1e-10, max_epochs=100_000, anderson=5):
    """Solve the squared-loss group lasso in Gram form by block coordinate descent.

    Parameters
    ----------
    G : ndarray of shape (p, p)
        Symmetric positive semi-definite (the solver converges to a minimiser
        only then; an indefinite ``G`` must be projected first).
    c : ndarray of shape (p,)
    grp_ptr, grp_indices : ndarray of int64
        CSR group description (see :func:`make_groups`).
    weights : ndarray of shape (n_groups,)
    lam : float
        Penalty level ``>= 0``.
    beta0 : ndarray of shape (p,), optional
        Warm start (copied).
    lipschitz : ndarray of shape (n_groups,), optional
        Precomputed :func:`group_lipschitz` (reused along a path).
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_epochs : int
    anderson : int
        Anderson extrapolation every ``anderson`` epochs (0: plain BCD, the
        iterates of :func:`gram_group_lasso_reference`).

    Returns
    -------
    beta : ndarray of shape (p,)
    n_epochs : int
    violation : float
        Final KKT violation; above ``tol`` when the epoch budget ran out (the
        caller decides whether to warn: kernels import nothing from the package).
    """
    G, c = _check_gram(G, c)
    p = G.shape[0]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    lipschitz = group_lipschitz(G, grp_ptr, grp_indices) if lipschitz is None else np.ascontiguousarray(lipschitz, dtype=np.float64)
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True)
    epoch, violation = _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, float(lam),
                                  tol, max_epochs, int(anderson))
    return beta, epoch, violation


def gram_group_lasso_path(G, c, grp_ptr, grp_indices, weights, lambdas, *, tol=1e-10, max_epochs=100_000,
                          anderson=5):
    """:func:`gram_group_lasso` along a path of penalty levels, warm-started.

    Validates once and reuses the block Lipschitz constants; ``lambdas`` are
    solved in the order given (decreasing is the efficient order).

    Returns
    -------
    coefs : ndarray of shape (n_lambdas, p)
    n_epochs : ndarray of int64, shape (n_lambdas,)
    violations : ndarray of shape (n_lambdas,)
    """
    G, c = _check_gram(G, c)
    p = G.shape[0]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    lambdas = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise ValueError(f"lambdas: expected non-negative numbers, got {lambdas!r}")
    lipschitz = group_lipschitz(G, grp_ptr, grp_indices)
    coefs = np.zeros((lambdas.size, p))
    epochs = np.zeros(lambdas.size, dtype=np.int64)
    viols = np.zeros(lambdas.size)
    beta = np.zeros(p)
    for i, lam in enumerate(lambdas):
        epochs[i], viols[i] = _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, float(lam),
                                         tol, max_epochs, int(anderson))
        coefs[i] = beta
    return coefs, epochs, viols


def gram_group_lasso_reference(G, c, grp_ptr, grp_indices, weights, lam, *, beta0=None,
                               tol=1e-10, max_epochs=100_000):
    """Plain-NumPy block coordinate descent: the iterates of :func:`gram_group_lasso` with ``anderson=0``."""
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    p = G.shape[0]
    groups = [np.asarray(grp_indices[grp_ptr[g]:grp_ptr[g + 1]]) for g in range(len(grp_ptr) - 1)]
    L = [max(float(np.linalg.eigvalsh(G[np.ix_(idx, idx)])[-1]), 0.0) for idx in groups]
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64)

    def violation(b):
        grad = G @ b - c
        out = 0.0
        for g, idx in enumerate(groups):
            nb, pen = np.linalg.norm(b[idx]), lam * weights[g]
            v = max(np.linalg.norm(grad[idx]) - pen, 0.0) if nb == 0 else np.linalg.norm(grad[idx] + pen * b[idx] / nb)
            out = max(out, v)
        return out

    epoch = 0
    while violation(beta) > tol and epoch < max_epochs:
        for g, idx in enumerate(groups):
            if L[g] <= 0:
                continue
            R = L[g] * beta[idx] - (G[idx] @ beta - c[idx])
            nr, pen = np.linalg.norm(R), lam * weights[g]
            beta[idx] = R * ((1.0 - pen / nr) / L[g]) if nr > pen else 0.0
        epoch += 1
    return beta, epoch, float(violation(beta))
