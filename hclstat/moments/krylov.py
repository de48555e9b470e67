"""Block Krylov (Lanczos) eigensolvers for symmetric operators known through products.

Used by the data-backed datafit (:class:`hclstat.moments.data.CentredData`),
whose spectra (cross-covariance singular values, permutation nulls,
within-modality eigenvalues) come from products with thin matrices only.
"""

from __future__ import annotations

import numpy as np

from ..utils import check_random_state

__all__ = ["block_lanczos", "lanczos_lockstep"]

#: extra Krylov directions beyond the requested rank (a subspace of k + margin
#: resolves the k-th value against its neighbours)
_MARGIN = 6
#: relative change of the top Ritz values at which the Krylov iteration stops
RITZ_TOL = 1e-9
#: looser tolerance where Ritz values are only counted against a threshold
#: whose own sampling fluctuation is of order p^(-2/3) >> 1e-6
COUNT_TOL = 1e-6
_KRYLOV_MAX_ITER = 60


def _project_out(Y, Qs):
    """``Y - Q Q^T Y`` for the basis held as a list of column blocks (no concatenated copy)."""
    for Q in Qs:
        Y = Y - Q @ (Q.T @ Y)
    return Y


def _orthonormalise(Y, Qs=()):
    """Orthonormal basis of ``col(Y)`` orthogonal to the blocks ``Qs`` (two Gram-Schmidt passes).

    Columns of ``Y`` that are (numerically) inside ``col(Qs)`` are dropped, so
    the result may have fewer columns than ``Y``.
    """
    scale = np.linalg.norm(Y, axis=0).max(initial=0.0)
    if scale == 0.0:
        return Y[:, :0]
    Y = _project_out(_project_out(Y, Qs), Qs)
    U, s, _ = np.linalg.svd(Y, full_matrices=False)
    U = U[:, s > 1e-10 * scale]
    if len(Qs) and U.shape[1]:
        U, s, _ = np.linalg.svd(_project_out(U, Qs), full_matrices=False)
        U = U[:, s > 0.5]
    return U


def block_lanczos(apply, dim, k, *, random_state=None, start=None, block=None,
                  max_iter=_KRYLOV_MAX_ITER, tol=RITZ_TOL):
    """Largest algebraic eigenpairs of a symmetric operator known through products.

    Block Krylov iteration with full reorthogonalisation and Rayleigh-Ritz
    extraction (block Lanczos; Musco & Musco, 2015, for the randomized
    analysis): the basis grows by ``block`` directions per product until the
    top ``k`` Ritz values change by less than ``tol`` (relative to the
    largest in magnitude) or the basis spans the whole space.

    Parameters
    ----------
    apply : callable
        ``B -> M B`` for ``B`` of shape (dim, b), ``M`` symmetric.
    dim : int
    k : int
        Number of eigenpairs returned (at most ``dim``).
    start : ndarray of shape (dim, j), optional
        Directions to start from (e.g. a previous estimate); random directions
        fill the block.
    block : int, optional
        Block size (default ``k + 6``).

    Returns
    -------
    w : ndarray of shape (k,)
        Eigenvalue estimates, decreasing (Ritz values: never above the truth).
    V : ndarray of shape (dim, k)
        Orthonormal Ritz vectors.
    """
    (w, V), = lanczos_lockstep(lambda blocks, idx: [apply(blocks[0])], dim, k, 1, random_state=random_state,
                                starts=None if start is None else [start], block=block, max_iter=max_iter, tol=tol)
    return w, V


def lanczos_lockstep(apply_many, dim, k, n_ops, *, random_state=None, starts=None, block=None,
                      max_iter=_KRYLOV_MAX_ITER, tol=RITZ_TOL):
    """:func:`block_lanczos` on ``n_ops`` operators of one size, advanced together.

    ``apply_many(blocks, idx)`` returns ``[M_i B for B, i in zip(blocks, idx)]``;
    batching lets the products share passes over the data (e.g. several
    permutation nulls of one cross-covariance). An operator leaves the batch
    once its Ritz values have converged.
    """
    rng = check_random_state(random_state)
    k = int(min(k, dim))
    b = int(min(dim, block if block is not None else k + _MARGIN))
    if k <= 0:
        return [(np.zeros(0), np.zeros((dim, 0))) for _ in range(n_ops)]
    # per operator: the basis (a list of blocks), the product of its newest block, the projected matrix T
    Qs, last, Ts, prev = [], [], [], [None] * n_ops
    for i in range(n_ops):
        B0 = rng.standard_normal((dim, b))
        if starts is not None and starts[i] is not None and starts[i].shape[1]:
            j = min(starts[i].shape[1], b)
            B0[:, :j] = starts[i][:, :j]
        Qs.append([_orthonormalise(B0)])
    for i, Y in enumerate(apply_many([q[0] for q in Qs], list(range(n_ops)))):
        last.append(Y)
        Ts.append(Qs[i][0].T @ Y)
    active = list(range(n_ops))
    for _ in range(max_iter):
        still, blocks = [], []
        for i in active:
            T = Ts[i]
            w = np.linalg.eigvalsh(0.5 * (T + T.T))[::-1][:k]
            done = prev[i] is not None and np.max(np.abs(w - prev[i])) <= tol * max(np.abs(w).max(), 1e-300)
            prev[i] = w
            if done or T.shape[0] >= dim:
                continue
            new = _orthonormalise(last[i], Qs[i])[:, : dim - T.shape[0]]
            if new.shape[1] == 0:  # invariant subspace found
                continue
            still.append(i)
            blocks.append(new)
        active = still
        if not active:
            break
        for i, new, Ynew in zip(active, blocks, apply_many(blocks, active)):
            top = np.vstack([Q.T @ Ynew for Q in Qs[i]])
            Ts[i] = np.block([[Ts[i], top], [top.T, new.T @ Ynew]])
            Qs[i].append(new)
            last[i] = Ynew
    out = []
    for i in range(n_ops):
        w, V = np.linalg.eigh(0.5 * (Ts[i] + Ts[i].T))
        V = V[:, ::-1][:, :k]
        vectors, start = np.zeros((dim, V.shape[1])), 0
        for Q in Qs[i]:
            vectors += Q @ V[start : start + Q.shape[1]]
            start += Q.shape[1]
        out.append((w[::-1][:k], vectors))
    return out

