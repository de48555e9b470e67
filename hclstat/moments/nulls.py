"""Joint row-permutation nulls of the cross-covariance lattice, formed densely.

A *draw* moves the rows of every modality by its own permutation: modality
``o``'s row ``i`` becomes its row ``perm_o[i]`` (a modality without a
permutation stays in place). Under a draw the cross-covariance of a pair is

    C_ab = X_a[perm_a]^T X_b[perm_b] / (n - ddof) = X_a[perm_a o perm_b^{-1}]^T X_b / (n - ddof),

so one GEMM of the ``B`` row-gathered copies of the narrower block, side by
side, with the other block gives the pair under every draw (single precision,
already laid out draw by draw). Each test ``(m, U)`` then adds the pairs'
Grams, ``C_{m,U} C_{m,U}^T = sum_{o in U} C_mo C_mo^T``, and takes the top
eigenvalue of the smaller side's Gram (:func:`hclstat.kernels.spectra.top_eigenvalues`;
batched Lanczos on the products themselves for sides of 160 or more whose
Grams would not fit :data:`_GRAM_BYTES`). With
``p_o > n`` a block is first replaced by ``U S`` of its thin SVD: the null
singular values depend on ``X_o`` only through ``X_o X_o^T``.

With missing entries (``masks``) the null is the pairwise-complete covariance
of the permuted data, exactly as :func:`hclstat.moments.compute_moments` forms
it (each row's mask moves with its values): with ``X0`` the centred data with
missing entries set to 0 and ``O`` the masks,

    C_ab = (X0_a^T P X0_b - (X0_a^T P O_b) o (O_a^T P X0_b) / N) / (N - ddof),   N = O_a^T P O_b,

four products, formed together from ``[X0 O]``.
"""

from __future__ import annotations

import numpy as np

from ..kernels.spectra import lanczos_coefficients, lanczos_steps, top_eigenvalues, top_tridiagonal_reference
from ..threads import large_product_threads

__all__ = ["batched_top_singular_values", "deflate", "joint_pair_products", "joint_relative",
           "joint_top_singular_values", "matched_rows", "null_geometry"]

#: Gram sides from which Lanczos may run on the pair products instead of a formed Gram ...
_GRAM_SIDE = 160
#: ... when the draws' Grams (float64) would take more than this many bytes (measured at
#: 99 draws: Gram and kernel 0.22 s against 0.47 s on the products for sides 300 x 300)
_GRAM_BYTES = 1 << 27
#: size of the buffer holding the gathered rows of a group of draws (bytes)
_GATHER_BYTES = 1 << 25


def joint_relative(draws, a, b):
    """Per draw, the rows of ``b`` paired with ``a``'s rows: ``perm_b o perm_a^{-1}``
    (``None`` when neither is permuted)."""
    pa, pb = draws.get(a), draws.get(b)
    if pa is None:
        return pb
    inv = np.argsort(pa, axis=1)
    return inv if pb is None else np.take_along_axis(pb, inv, axis=1)


def joint_pair_products(blocks, masks, denominator, pair, draws):
    """``C_ab`` under every draw, shape (B, p_a, p_b), float32.

    Parameters
    ----------
    blocks : dict of str to ndarray of shape (n, p_o), float32
        Centred rows (missing entries 0).
    masks : dict of str to ndarray of shape (n, p_o) (float32 0/1), or None
        Observation masks (``None``: complete data, divisor ``denominator``).
    denominator : float
        ``n - ddof`` for complete data; with masks, ``ddof``.
    pair : (str, str)
    draws : dict of str to ndarray of shape (B, n)
        Row permutations per modality (a missing key: identity); at least one given.
    """
    a, b = pair
    if masks is None:
        Za, Zb = blocks[a], blocks[b]
    else:
        Za = np.concatenate([blocks[a], masks[a]], axis=1)
        Zb = np.concatenate([blocks[b], masks[b]], axis=1)
    rel = joint_relative(draws, b, a)  # a's rows paired with b's, per draw
    count, n, wa = rel.shape[0], Za.shape[0], Za.shape[1]
    prod = np.empty((count, wa, Zb.shape[1]), dtype=np.float32)
    # draws in groups whose gathered rows fit one reused buffer (a fresh gather of every
    # draw's rows at once costs more in page faults than the product itself); within a
    # group, draw j's copy of a's rows sits in column block j and the GEMM gives the
    # group's products draw by draw
    step = max(1, min(count, _GATHER_BYTES // max(4 * n * wa, 1)))
    buf = np.empty(n * step * wa, dtype=np.float32)
    # the products of wide blocks are the large GEMMs of the fit: they regain the caller's threads
    with large_product_threads(2.0 * count * n * wa * Zb.shape[1]):
        for start in range(0, count, step):
            k = min(step, count - start)
            group = buf[: n * k * wa]  # contiguous: both reshapes below are views
            np.take(Za, rel[start : start + k].T, axis=0, out=group.reshape(n, k, wa))
            np.matmul(group.reshape(n, k * wa).T, Zb, out=prod[start : start + k].reshape(k * wa, Zb.shape[1]))
    if masks is None:
        prod *= np.float32(1.0 / denominator)
        return prod
    pa, pb = blocks[a].shape[1], blocks[b].shape[1]
    A, S1, S2, N = prod[:, :pa, :pb], prod[:, :pa, pb:], prod[:, pa:, :pb], np.rint(prod[:, pa:, pb:])
    with np.errstate(invalid="ignore", divide="ignore"):
        C = (A - S1 * S2 / N) / (N - np.float32(denominator))
    # pairs co-observed in at most ddof rows have no covariance: they add nothing to the null
    return np.where(N > denominator, C, np.float32(0.0)).astype(np.float32, copy=False)


def joint_top_singular_values(products, dims, tests, count):
    """Top singular value of ``C_{m,U}`` under every draw, shape (count, n_tests).

    ``products(a, b)`` returns the (count, p_a, p_b) pair products (cached by
    the caller); tests are ``(m, others)``. Equal problems (``(a, [b])`` and
    ``(b, [a])``) are solved once.
    """
    grams, problems, keys = {}, {}, []

    def gram(m, o):  # C_mo C_mo^T, (count, p_m, p_m)
        if (m, o) not in grams:
            C = np.ascontiguousarray(products(m, o))
            grams[(m, o)] = np.matmul(C, C.transpose(0, 2, 1))
        return grams[(m, o)]

    for m, others in tests:
        others = tuple(others)
        pm, pu = dims[m], sum(dims[o] for o in others)
        if len(others) == 1 and pu < pm:
            m, others, pm, pu = others[0], (m,), pu, pm
        key = (m, frozenset(others))
        keys.append(key)
        if key in problems:
            continue
        side = min(pm, pu)
        if side < _GRAM_SIDE or count * side * side * 8 <= _GRAM_BYTES:
            if pm <= pu:
                G = sum(gram(m, o) for o in others)
            else:
                C = np.concatenate([products(m, o) for o in others], axis=2)
                G = np.matmul(C.transpose(0, 2, 1), C)
            top = top_eigenvalues(np.ascontiguousarray(G, dtype=np.float64), _start(side), lanczos_steps(side))
        else:
            if pm <= pu:
                stack = [np.ascontiguousarray(products(m, o)) for o in others]
                apply = lambda V, s=stack: sum(np.matmul(C, np.matmul(C.transpose(0, 2, 1), V)) for C in s)
            else:
                C = np.concatenate([products(m, o) for o in others], axis=2)
                apply = lambda V, C=C: np.matmul(C.transpose(0, 2, 1), np.matmul(C, V))
            top = top_tridiagonal_reference(*lanczos_coefficients(apply, count, _start(side), lanczos_steps(side)))
        problems[key] = np.sqrt(np.clip(top, 0.0, None))
    return np.column_stack([problems[key] for key in keys])


def deflate(C, left, right):
    """``(I - L L^T) C_b (I - R R^T)`` for every draw ``b``: ``C`` of shape (B, p_m, p_U),
    ``left`` (p_m, k) and ``right`` (p_U, k) with orthonormal columns."""
    L = np.asarray(left, dtype=C.dtype)
    R = np.asarray(right, dtype=C.dtype)
    T = C - np.matmul(L, np.matmul(L.T, C))
    T -= np.matmul(np.matmul(T, R), R.T)
    return T


def batched_top_singular_values(C):
    """Top singular value of every ``C[b]`` (shape (B, p, q)): the top eigenvalue of the smaller
    side's Gram, formed when it fits :data:`_GRAM_BYTES` (or the side is below
    :data:`_GRAM_SIDE`), else batched Lanczos on ``C`` itself."""
    count, p, q = C.shape
    if p > q:
        C, p, q = C.transpose(0, 2, 1), q, p
    side = p
    if side < _GRAM_SIDE or count * side * side * 8 <= _GRAM_BYTES:
        G = np.matmul(C, C.transpose(0, 2, 1))
        top = top_eigenvalues(np.ascontiguousarray(G, dtype=np.float64), _start(side), lanczos_steps(side))
    else:
        C = np.ascontiguousarray(C)
        apply = lambda V: np.matmul(C, np.matmul(C.transpose(0, 2, 1), V))  # noqa: E731
        top = top_tridiagonal_reference(*lanczos_coefficients(apply, count, _start(side), lanczos_steps(side)))
    return np.sqrt(np.clip(top, 0.0, None))


_STARTS = {}


def _start(dim):
    """The fixed Lanczos start (a unit Gaussian vector): the value found does not depend on it."""
    if dim not in _STARTS:
        v = np.random.default_rng(0).standard_normal(dim)
        _STARTS[dim] = v / np.linalg.norm(v)
    return _STARTS[dim]


def matched_rows(x, target):
    """A row subsample transformed so its sample covariance is ``target`` (the full sample's).

    The permutation null of a cross-covariance depends on the rows mostly
    through the two blocks' sample covariances (its covariance is
    ``S_aa ⊗ S_bb / (n - 1)`` exactly); a subsample's are noisier than the full
    sample's (their top eigenvalues larger), which makes the plain
    ``sqrt((n_sub - 1) / (n - 1))`` rescaling of its nulls only first-order.
    Centred on their own means, the rows become ``x_c L_sub^{-T} L^T`` (``L``
    Cholesky factors): covariance ``target`` exactly. When either covariance is
    not positive definite (``p >= n_sub - 1``, a constant column) the centred
    rows are returned unchanged (the first-order rescaling).

    Parameters
    ----------
    x : ndarray of shape (n_sub, p), complete
    target : ndarray of shape (p, p)

    Returns
    -------
    ndarray of shape (n_sub, p), columns centred
    """
    xc = x - x.mean(axis=0)
    n, p = xc.shape
    if p >= n - 1:
        return xc
    try:
        low_sub = np.linalg.cholesky(xc.T @ xc / (n - 1))
        low = np.linalg.cholesky(np.asarray(target, dtype=np.float64))
    except np.linalg.LinAlgError:
        return xc
    from scipy.linalg import solve_triangular

    # x_c L_sub^{-T}: rows with identity covariance, then L^T gives the target
    return solve_triangular(low_sub, xc.T, lower=True).T @ low.T


def null_geometry(moments):
    """``{m: (tr S_mm, ||S_mm||_F^2)}`` of :class:`~hclstat.moments.Moments`: what
    :func:`hclstat.calibration.finite_size_factor` needs of a matched row source."""
    return {m: (float(np.trace(moments.block(m, m))), float(np.sum(moments.block(m, m) ** 2)))
            for m in moments.modalities}
