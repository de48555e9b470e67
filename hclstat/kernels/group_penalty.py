"""The group penalty ``lam * sum_g w_g ||b_g||_2`` shared by the group-lasso solvers.

Groups are CSR-style: the columns of group ``g`` are
``grp_indices[grp_ptr[g]:grp_ptr[g + 1]]``; ``weights[g] >= 0`` (zero leaves the
group unpenalised). Here: the group arrays and their validation, the penalty
value, its proximal operator (group soft-thresholding) and the KKT violation
of a point given the gradient of the smooth part.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["make_groups", "group_lipschitz"]


def make_groups(sizes):
    """CSR group arrays for consecutive groups of the given sizes.

    Returns
    -------
    grp_ptr : ndarray of int64, shape (n_groups + 1,)
    grp_indices : ndarray of int64, shape (sum(sizes),)
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or np.any(sizes < 1):
        raise ValueError(f"sizes: expected positive group sizes, got {sizes!r}")
    grp_ptr = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=grp_ptr[1:])
    return grp_ptr, np.arange(grp_ptr[-1], dtype=np.int64)


def _check_groups(grp_ptr, grp_indices, weights, p):
    grp_ptr = np.ascontiguousarray(grp_ptr, dtype=np.int64)
    grp_indices = np.ascontiguousarray(grp_indices, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    n_groups = grp_ptr.size - 1
    if n_groups < 1 or grp_ptr[0] != 0 or np.any(np.diff(grp_ptr) < 1) or grp_ptr[-1] != grp_indices.size:
        raise ValueError(
            "grp_ptr: expected increasing offsets starting at 0 and ending at len(grp_indices), "
            f"got {grp_ptr!r}"
        )
    if np.any(grp_indices < 0) or np.any(grp_indices >= p) or np.unique(grp_indices).size != grp_indices.size:
        raise ValueError(f"grp_indices: expected distinct column indices in [0, {p}), got {grp_indices!r}")
    if weights.shape != (n_groups,) or np.any(~np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"weights: expected {n_groups} non-negative finite weights, got {weights!r}")
    return grp_ptr, grp_indices, weights


def group_lipschitz(G, grp_ptr, grp_indices):
    """``L_g = lambda_max(G_gg)`` for each group (NumPy; once per problem)."""
    G = np.asarray(G, dtype=np.float64)
    out = np.empty(grp_ptr.size - 1)
    for g in range(out.size):
        idx = grp_indices[grp_ptr[g]:grp_ptr[g + 1]]
        out[g] = max(float(np.linalg.eigvalsh(G[np.ix_(idx, idx)])[-1]), 0.0)
    return out


@njit(cache=True)
def _group_violation(grad, beta, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation over groups given the smooth gradient."""
    n_groups = grp_ptr.shape[0] - 1
    worst = 0.0
    for g in range(n_groups):
        start = grp_ptr[g]
        stop = grp_ptr[g + 1]
        bnorm = 0.0
        gnorm = 0.0
        for j in range(start, stop):
            k = grp_indices[j]
            bnorm += beta[k] * beta[k]
            gnorm += grad[k] * grad[k]
        bnorm = np.sqrt(bnorm)
        gnorm = np.sqrt(gnorm)
        pen = lam * weights[g]
        if bnorm == 0.0:
            viol = gnorm - pen
            if viol < 0.0:
                viol = 0.0
        else:
            viol = 0.0
            for j in range(start, stop):
                k = grp_indices[j]
                d = grad[k] + pen * beta[k] / bnorm
                viol += d * d
            viol = np.sqrt(viol)
        if viol > worst:
            worst = viol
    return worst


@njit(cache=True)
def _penalty(beta, grp_ptr, grp_indices, weights):
    total = 0.0
    for g in range(grp_ptr.shape[0] - 1):
        s = 0.0
        for j in range(grp_ptr[g], grp_ptr[g + 1]):
            s += beta[grp_indices[j]] ** 2
        total += weights[g] * np.sqrt(s)
    return total


def _penalty_numpy(beta, grp_ptr, grp_indices, weights):
    return float(
        sum(
            weights[g] * np.linalg.norm(beta[grp_indices[grp_ptr[g]:grp_ptr[g + 1]]])
            for g in range(grp_ptr.size - 1)
        )
    )


@njit(cache=True)
def _group_prox(v, out, grp_ptr, grp_indices, weights, thr):
    """``out = prox_{thr * sum_g w_g ||.||}(v)`` (group soft-thresholding)."""
    for g in range(grp_ptr.shape[0] - 1):
        start = grp_ptr[g]
        stop = grp_ptr[g + 1]
        norm = 0.0
        for j in range(start, stop):
            norm += v[grp_indices[j]] ** 2
        norm = np.sqrt(norm)
        t = thr * weights[g]
        scale = 0.0
        if norm > t:
            scale = 1.0 - t / norm
        for j in range(start, stop):
            k = grp_indices[j]
            out[k] = scale * v[k]


def dual_norm_ratio(grad, grp_ptr, grp_indices, weights, caller):
    """``max_g ||grad_g|| / w_g``: the smallest ``lam`` at which zero is optimal
    when ``grad`` is the smooth gradient at zero (every weight must be positive)."""
    out = 0.0
    for g in range(grp_ptr.size - 1):
        if weights[g] <= 0:
            raise ValueError(f"{caller}: every group needs a positive weight")
        out = max(out, float(np.linalg.norm(grad[grp_indices[grp_ptr[g]:grp_ptr[g + 1]]])) / weights[g])
    return out
