"""Top eigenvalues of many small symmetric positive semi-definite matrices.

The permutation nulls of the rank lattice need the largest eigenvalue of a
``d x d`` Gram for every (draw, test): hundreds of matrices of a few dozen
rows, where a LAPACK call per matrix costs ~100 us of overhead-bound
tridiagonalisation. :func:`top_eigenvalues` runs a fixed number of Lanczos
steps per matrix (``d^2`` flops each) and bisects the small tridiagonal;
:func:`top_eigenvalues_reference` is the same computation in NumPy, batched.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["lanczos_coefficients", "lanczos_steps", "top_eigenvalues", "top_eigenvalues_reference", "top_tridiagonal_reference"]

#: bisection halvings: from a bracket no wider than the top eigenvalue, 2^-40 relative
_HALVINGS = 40


def lanczos_steps(dim):
    """Lanczos steps for a ``dim x dim`` null Gram: measured on null cross-covariances of sides
    50-159 with heteroskedastic columns, the top eigenvalue is then within ~1e-7 relative."""
    return int(min(dim, 16 + dim // 8 if dim < 160 else 40 + dim // 20))


@njit(cache=True)
def top_eigenvalues(G, start, steps):
    """Largest eigenvalue of each ``G[i]`` (shape (P, d, d), float64, PSD), from ``steps``
    Lanczos steps started at ``start`` (shape (d,), unit norm) and bisection.

    No reorthogonalisation: lost orthogonality only repeats converged values,
    so the top Ritz value is never above the top eigenvalue.
    """
    P, d, _ = G.shape
    out = np.empty(P)
    diag = np.empty(steps)
    off = np.zeros(max(steps - 1, 1))
    q = np.empty(d)
    prev = np.empty(d)
    w = np.empty(d)
    for i in range(P):
        q[:] = start
        prev[:] = 0.0
        beta = 0.0
        k = steps
        Gi = G[i]
        for j in range(steps):
            # w = G q as a sum of rows (G symmetric): vectorises without reassociating sums
            w[:] = 0.0
            for c in range(d):
                qc = q[c]
                for r in range(d):
                    w[r] += Gi[c, r] * qc
            alpha = 0.0
            for r in range(d):
                alpha += w[r] * q[r]
            diag[j] = alpha
            if j == steps - 1:
                break
            nrm = 0.0
            for r in range(d):
                w[r] -= alpha * q[r] + beta * prev[r]
                nrm += w[r] * w[r]
            beta = np.sqrt(nrm)
            off[j] = beta
            if beta <= 1e-300:  # invariant subspace: T so far holds the top eigenvalue
                k = j + 1
                break
            for r in range(d):
                prev[r] = q[r]
                q[r] = w[r] / beta
        out[i] = _top_tridiagonal(diag, off, k)
    return out


@njit(cache=True)
def _top_tridiagonal(diag, off, k):
    lo = diag[0]
    hi = diag[0]
    for j in range(k):
        radius = 0.0
        if j > 0:
            radius += abs(off[j - 1])
        if j < k - 1:
            radius += abs(off[j])
        lo = max(lo, diag[j])
        hi = max(hi, diag[j] + radius)
    for _ in range(_HALVINGS):
        x = 0.5 * (lo + hi)
        d = diag[0] - x
        above = d > 0
        for j in range(1, k):
            if d == 0.0:
                d = 1e-300
            d = diag[j] - x - off[j - 1] * off[j - 1] / d
            if d > 0:
                above = True
        if above:
            lo = x
        else:
            hi = x
    return hi


def top_tridiagonal_reference(diag, off):
    """Largest eigenvalue of each symmetric tridiagonal (rows of ``diag`` (P, k), ``off`` (P, k-1)),
    by bisection on Sturm counts, batched in NumPy."""
    radius = np.zeros_like(diag)
    radius[:, :-1] += np.abs(off)
    radius[:, 1:] += np.abs(off)
    lo, hi = diag.max(axis=1), (diag + radius).max(axis=1)
    off2 = off**2
    for _ in range(_HALVINGS):
        x = 0.5 * (lo + hi)
        d = diag[:, 0] - x
        above = d > 0
        for j in range(1, diag.shape[1]):
            d = diag[:, j] - x - off2[:, j - 1] / np.where(d == 0, 1e-300, d)
            above |= d > 0
        lo, hi = np.where(above, x, lo), np.where(above, hi, x)
    return hi


def lanczos_coefficients(apply, count, start, steps, dtype=np.float32):
    """Lanczos tridiagonals of ``count`` PSD operators known through batched products
    ``V (count, d, 1) -> G V`` (NumPy, in ``dtype``), started at ``start`` (d,)."""
    q = np.repeat(start.astype(dtype)[None, :, None], count, axis=0)
    prev = np.zeros_like(q)
    diag, off = np.zeros((count, steps)), np.zeros((count, max(steps - 1, 0)))
    beta = np.zeros((count, 1, 1), dtype=dtype)
    for j in range(steps):
        w = apply(q).astype(dtype, copy=False)
        alpha = np.sum(w * q, axis=1, keepdims=True)
        diag[:, j] = alpha[:, 0, 0]
        if j == steps - 1:
            break
        w = w - (alpha * q + beta * prev)
        beta = np.linalg.norm(w, axis=1, keepdims=True)
        off[:, j] = beta[:, 0, 0]
        prev, q = q, w / np.where(beta > 0, beta, 1.0)
    return diag, off


def top_eigenvalues_reference(G, start, steps):
    """:func:`top_eigenvalues` in NumPy (batched over the matrices)."""
    G = np.asarray(G, dtype=np.float64)
    diag, off = lanczos_coefficients(lambda V: np.matmul(G, V), G.shape[0], start, steps, dtype=np.float64)
    return top_tridiagonal_reference(diag, off)
