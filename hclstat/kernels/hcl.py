"""Numba kernels of the HCL block updates, each with a NumPy reference.

The compiled functions receive only contiguous float64/int64 arrays and
scalars and update ``A`` in place. The ``*_reference`` functions are the
plain-NumPy statements of the same updates; tests require agreement to 1e-10.

Block sub-problem (modality ``m``, all other modalities fixed)::

    min_A  tr(A H A^T) - 2 tr(A^T D) + sum_j lam_j ||A[:, j]||_2

with ``H`` (K x K, positive definite) and ``D`` (p_m x K). Only the columns
listed in ``free`` may be non-zero. It is solved exactly by block coordinate
descent over columns with group soft-thresholding.
"""

import numpy as np
from numba import njit

from .group_lasso import bcd_epoch, grouped_product

__all__ = [
    "group_bcd",
    "group_bcd_reference",
    "block_objective",
    "row_ls_sweep",
    "row_ls_sweep_reference",
    "ball_ls",
    "ball_ls_reference",
    "penalised_block_step",
    "penalised_block_step_reference",
]


@njit(cache=True)
def block_objective(A, H, D, lam, free):
    """``tr(A H A^T) - 2 tr(A^T D) + sum_j lam_j ||A_j||`` over the free columns."""
    p = A.shape[0]
    val = 0.0
    for a in range(free.shape[0]):
        j = free[a]
        for b in range(free.shape[0]):
            k = free[b]
            h = H[j, k]
            if h != 0.0:
                s = 0.0
                for i in range(p):
                    s += A[i, j] * A[i, k]
                val += h * s
        s = 0.0
        nrm = 0.0
        for i in range(p):
            s += A[i, j] * D[i, j]
            nrm += A[i, j] * A[i, j]
        val += -2.0 * s + lam[j] * np.sqrt(nrm)
    return val


@njit(cache=True)
def group_bcd(A, H, D, lam, free, max_iter, tol):
    """Block coordinate descent for the group-lasso block sub-problem (in place).

    Each column update is exact: with the residual
    ``r = D_j - sum_{l != j} A_l H_lj``, the minimiser over column ``j`` is
    ``A_j = r / H_jj * max(0, 1 - lam_j / (2 ||r||))``. The sweeps are those
    of the package's one group-lasso kernel,
    :func:`hclstat.kernels.group_lasso.bcd_epoch`: halved, the sub-problem is
    the Gram-form group lasso ``1/2 tr(A H A^T) - tr(D^T A) +
    sum_j (lam_j / 2) ||A_j||`` in the matrix variable ``A`` with one group per
    free column (``G_jj = H_jj``, a scalar, so the proximal step is exact).

    Returns the number of sweeps; stops when the largest column change is
    below ``tol`` times the largest column norm.
    """
    p, K = A.shape
    nf = free.shape[0]
    grp_ptr = np.arange(nf + 1)
    weights = np.empty(nf)
    lipschitz = np.empty(nf)
    AH = np.empty((p, K))
    work = np.empty((1, p))
    for a in range(nf):
        weights[a] = lam[free[a]]
        lipschitz[a] = H[free[a], free[a]]
    grouped_product(A, H, free, AH)
    for it in range(max_iter):
        max_change, max_norm = bcd_epoch(H, D, A, AH, grp_ptr, free, weights, lipschitz, 0.5, work)
        if max_change <= tol * tol * max(max_norm, 1e-300):
            return it + 1
        if (it + 1) % 10 == 0:  # keep AH exact: rank-one updates accumulate rounding
            grouped_product(A, H, free, AH)
    return max_iter


def group_bcd_reference(A, H, D, lam, free, max_iter, tol):
    """NumPy statement of :func:`group_bcd` (same sweeps, same stopping rule)."""
    for it in range(max_iter):
        max_change = 0.0
        max_norm = 0.0
        for j in free:
            others = [l for l in free if l != j]
            r = D[:, j] - A[:, others] @ H[others, j]
            nrm = np.linalg.norm(r)
            shrink = (1.0 - 0.5 * lam[j] / nrm) / H[j, j] if nrm > 0.5 * lam[j] else 0.0
            new = r * shrink
            max_change = max(max_change, float(np.sum((new - A[:, j]) ** 2)))
            A[:, j] = new
            max_norm = max(max_norm, float(new @ new))
        if max_change <= tol * tol * max(max_norm, 1e-300):
            return it + 1
    return max_iter


@njit(cache=True)
def ball_ls(M, rhs, cap):
    """``argmin_a a M a^T - 2 a rhs^T`` subject to ``||a||^2 <= cap`` (``M`` PD).

    The unconstrained solution when it is feasible; otherwise
    ``a = (M + mu I)^{-1} rhs`` with the ``mu > 0`` at which ``||a||^2 = cap``,
    found by bisection on the secular equation in the eigenbasis of ``M``
    (the trust-region sub-problem; the minimiser is exact).
    """
    sol = np.linalg.solve(M, rhs)
    norm2 = 0.0
    for a in range(sol.shape[0]):
        norm2 += sol[a] * sol[a]
    if norm2 <= cap:
        return sol
    lam, Q = np.linalg.eigh(M)
    b = Q.T @ rhs
    nb = np.sqrt(np.sum(b * b))
    lo, hi = 0.0, nb / np.sqrt(cap)
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        phi = np.sum((b / (lam + mu)) ** 2)
        if phi > cap:
            lo = mu
        else:
            hi = mu
        if hi - lo <= 1e-15 * max(hi, 1e-300):
            break
    return Q @ (b / (lam + hi))


@njit(cache=True)
def row_ls_sweep(A, S, C, G, free, gamma, ridge, caps):
    """One Gauss-Seidel sweep of exact row least-squares updates (in place).

    For modality ``m`` with the other modalities fixed, the unpenalised HCL
    objective restricted to row ``i`` of ``A`` (p_m x K) is quadratic::

        a_i (G + gamma sum_{j != i} a_j^T a_j) a_i^T
            - 2 a_i (C_i + gamma sum_{j != i} S_ij a_j)^T

    where ``G = sum_m' w A_m'^T A_m'`` and ``C = sum_m' w S_mm' A_m'`` carry
    the cross-covariance terms and ``S`` is the modality's own covariance
    (its diagonal never enters). Only the ``free`` columns are updated.
    Each row is minimised exactly subject to its communality bound
    ``||a_i||^2 <= caps[i]`` (:func:`ball_ls`; ``inf`` for none), which rules
    out improper (Heywood) solutions whose implied variance exceeds the data's.
    ``ridge`` is added to the diagonal of each row system (a tiny value keeps
    a column that has collapsed to zero from making the system singular).
    """
    p = A.shape[0]
    K = A.shape[1]
    nf = free.shape[0]
    T = np.zeros((K, K))
    for i in range(p):
        for a in range(nf):
            j = free[a]
            for b in range(nf):
                k = free[b]
                T[j, k] += A[i, j] * A[i, k]
    M = np.empty((nf, nf))
    rhs = np.empty(nf)
    for i in range(p):
        for a in range(nf):
            j = free[a]
            aj = A[i, j]
            for b in range(nf):
                k = free[b]
                M[a, b] = G[j, k] + gamma * (T[j, k] - aj * A[i, k])
            M[a, a] += ridge
            s = 0.0
            for l in range(p):
                if l != i:
                    s += S[i, l] * A[l, j]
            rhs[a] = C[i, j] + gamma * s
        sol = ball_ls(M, rhs, caps[i])
        for a in range(nf):
            j = free[a]
            for b in range(nf):
                k = free[b]
                T[j, k] += sol[a] * sol[b] - A[i, j] * A[i, k]
        for a in range(nf):
            A[i, free[a]] = sol[a]


def ball_ls_reference(M, rhs, cap):
    """NumPy statement of :func:`ball_ls` (root of the secular equation by brentq)."""
    from scipy.optimize import brentq

    sol = np.linalg.solve(M, rhs)
    if sol @ sol <= cap:
        return sol
    lam, Q = np.linalg.eigh(M)
    b = Q.T @ rhs
    mu = brentq(lambda t: np.sum((b / (lam + t)) ** 2) - cap, 0.0, np.linalg.norm(b) / np.sqrt(cap), xtol=1e-300, rtol=1e-15)
    return Q @ (b / (lam + mu))


def row_ls_sweep_reference(A, S, C, G, free, gamma, ridge, caps):
    """NumPy statement of :func:`row_ls_sweep`."""
    free = np.asarray(free)
    for i in range(A.shape[0]):
        others = np.arange(A.shape[0]) != i
        Ao = A[others][:, free]
        M = G[np.ix_(free, free)] + gamma * Ao.T @ Ao + ridge * np.eye(free.size)
        rhs = C[i, free] + gamma * S[i, others] @ Ao
        A[i, free] = ball_ls_reference(M, rhs, caps[i])


@njit(cache=True)
def _offdiag_residual_sq(S, A, E):
    """``E = S - A A^T`` with a zero diagonal (into ``E``); returns ``||E||_F^2``."""
    p, K = A.shape
    total = 0.0
    for i in range(p):
        E[i, i] = 0.0
        for j in range(i + 1, p):
            s = 0.0
            for k in range(K):
                s += A[i, k] * A[j, k]
            e = S[i, j] - s
            E[i, j] = e
            E[j, i] = e
            total += 2.0 * e * e
    return total


@njit(cache=True)
def penalised_block_step(A, S, C, G, lam, free, gamma, L, bound, max_halvings):
    """One majorise-minimise step of the penalised HCL objective in one modality.

    The objective in block ``A`` (p x K), the others fixed, is the cross term
    ``tr(A G A^T) - 2 tr(A^T C)``, the within term
    ``h(A) = gamma / 2 ||offdiag(S - A A^T)||_F^2`` and the group penalty
    ``sum_j lam_j ||A_j||``. ``h`` is replaced by its quadratic model at
    ``A`` with curvature ``L`` (doubled until it majorises ``h`` at the
    solution, at most ``max_halvings`` times), and the resulting group-lasso
    block problem is solved exactly by :func:`group_bcd`. ``A`` is not
    modified; ``bound`` caps the starting ``L``.

    Returns
    -------
    new : ndarray of shape (p, K)
        The minimiser of the last quadratic model tried.
    L : float
        Its curvature.
    majorised : bool
        Whether the model majorises ``h`` at ``new``. When false (the doublings
        ran out) ``new`` may raise the objective: the caller must reject it.
    """
    p, K = A.shape
    E = np.empty((p, p))
    hw = 0.5 * gamma * _offdiag_residual_sq(S, A, E)
    grad = -2.0 * gamma * (E @ A)  # gradient of h at A
    L = min(L, bound)
    new = A.copy()
    majorised = False
    for _ in range(max_halvings):
        H = G.copy()
        for k in range(K):
            H[k, k] += 0.5 * L
        D = C - 0.5 * grad + 0.5 * L * A
        new[:, :] = A
        group_bcd(new, H, D, lam, free, 1000, 1e-10)
        hn = 0.5 * gamma * _offdiag_residual_sq(S, new, E)
        lin = 0.0
        quad = 0.0
        for i in range(p):
            for k in range(K):
                d = new[i, k] - A[i, k]
                lin += grad[i, k] * d
                quad += d * d
        if hn <= hw + lin + 0.5 * L * quad + 1e-12 * max(1.0, hw):
            majorised = True
            break
        L *= 2.0
    return new, L, majorised


def penalised_block_step_reference(A, S, C, G, lam, free, gamma, L, bound, max_halvings):
    """NumPy statement of :func:`penalised_block_step` (same returns)."""
    E = S - A @ A.T
    np.fill_diagonal(E, 0.0)
    grad = -2.0 * gamma * (E @ A)
    hw = 0.5 * gamma * float(np.sum(E * E))
    L = min(L, bound)
    eye = np.eye(G.shape[0])
    new = A.copy()
    for _ in range(max_halvings):
        H = G + 0.5 * L * eye
        D = C - 0.5 * grad + 0.5 * L * A
        new = A.copy()
        group_bcd_reference(new, H, D, lam, free, 1000, 1e-10)
        En = S - new @ new.T
        np.fill_diagonal(En, 0.0)
        hn = 0.5 * gamma * float(np.sum(En * En))
        diff = new - A
        if hn <= hw + float(np.sum(grad * diff)) + 0.5 * L * float(np.sum(diff * diff)) + 1e-12 * max(1.0, hw):
            return new, L, True
        L *= 2.0
    return new, L, False
