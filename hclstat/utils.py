"""Small shared helpers: random state handling and partial spectral decompositions."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_random_state",
    "random_streams",
    "eigenvalues_above",
    "singular_values_above",
    "top_eigh",
    "top_singular_values",
    "top_svd",
]


def check_random_state(random_state):
    """Return a :class:`numpy.random.Generator`.

    ``None`` gives fresh OS entropy; an int or a :class:`numpy.random.SeedSequence`
    seeds a new generator; a Generator is returned as is (shared state); a legacy
    ``RandomState`` is wrapped so that it keeps driving the stream.
    """
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, bool):
            raise TypeError("random_state: expected None, an int or a numpy Generator, got a bool")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    raise TypeError(
        f"random_state: expected None, an int, a SeedSequence or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )


#: below this many rows or columns a dense LAPACK decomposition beats Lanczos
_LANCZOS_MIN_DIM = 160


def _lanczos_start(size):
    """A fixed starting vector, so that Lanczos results do not depend on ARPACK's own seed."""
    return np.random.default_rng(20261128).standard_normal(size)


def top_singular_values(C, k):
    """The ``k`` largest singular values of ``C``, in descending order.

    Lanczos (ARPACK, started from a fixed vector and run to machine precision)
    on matrices with both sides of at least ``_LANCZOS_MIN_DIM`` when ``k`` is
    small next to them; a LAPACK SVD otherwise, or when ARPACK does not converge.
    """
    C = np.asarray(C, dtype=np.float64)
    m = min(C.shape)
    k = int(min(k, m))
    if k <= 0:
        return np.zeros(0)
    if m >= _LANCZOS_MIN_DIM and 4 * k < m:
        from scipy.sparse.linalg import ArpackNoConvergence, svds

        try:
            s = svds(C, k=k, return_singular_vectors=False, v0=_lanczos_start(m), tol=0)
            return np.sort(s)[::-1]
        except ArpackNoConvergence:
            pass
    return np.linalg.svd(C, compute_uv=False)[:k]


def _values_above(top, full, m, tau, first):
    """Values above ``tau`` (at least the largest), descending: ``top(k)`` for growing
    ``k`` while Lanczos pays, ``full()`` once ``k`` nears ``m``."""
    k = max(1, int(first))
    while True:
        s = full() if (4 * k >= m or m < _LANCZOS_MIN_DIM) else top(k)
        if s.size == 0:
            return s
        if s.size < k or s[-1] <= tau or 4 * k >= m or m < _LANCZOS_MIN_DIM:
            return s[: max(1, int(np.sum(s > tau)))]
        k *= 2


def singular_values_above(C, tau, *, first=8):
    """Every singular value of ``C`` above ``tau`` (at least the largest one), descending.

    Asks Lanczos for the top ``first`` values and doubles the count until the
    smallest returned value is at most ``tau``, so the work follows the number
    of values above ``tau`` rather than the size of ``C``.
    """
    C = np.asarray(C, dtype=np.float64)
    return _values_above(lambda k: top_singular_values(C, k), lambda: np.linalg.svd(C, compute_uv=False),
                         min(C.shape), tau, first)


def eigenvalues_above(S, tau, *, first=8):
    """Every eigenvalue of symmetric ``S`` above ``tau`` (at least the largest one), descending."""
    S = np.asarray(S, dtype=np.float64)
    return _values_above(lambda k: top_eigh(S, k)[0], lambda: np.linalg.eigvalsh(S)[::-1], S.shape[0], tau, first)


def top_svd(C, k):
    """Leading ``k`` singular triplets ``(U, s, Vt)`` of ``C``, descending (Lanczos when it pays)."""
    C = np.asarray(C, dtype=np.float64)
    m = min(C.shape)
    k = int(min(k, m))
    if k > 0 and m >= _LANCZOS_MIN_DIM and 4 * k < m:
        from scipy.sparse.linalg import ArpackNoConvergence, svds

        try:
            U, s, Vt = svds(C, k=k, v0=_lanczos_start(m), tol=0)
            order = np.argsort(s)[::-1]
            return U[:, order], s[order], Vt[order]
        except ArpackNoConvergence:
            pass
    U, s, Vt = np.linalg.svd(C, full_matrices=False)
    return U[:, :k], s[:k], Vt[:k]


def top_eigh(S, k):
    """The ``k`` largest eigenvalues of symmetric ``S`` and their eigenvectors, descending.

    Lanczos (ARPACK, fixed start, machine precision) when ``k`` is small next to
    a large ``S``; LAPACK's subset solver (``dsyevr``) otherwise.
    """
    from scipy.linalg import eigh

    S = np.asarray(S, dtype=np.float64)
    p = S.shape[0]
    k = int(min(k, p))
    if k <= 0:
        return np.zeros(0), np.zeros((p, 0))
    if p >= _LANCZOS_MIN_DIM and 4 * k < p:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        try:
            w, V = eigsh(S, k=k, which="LA", v0=_lanczos_start(p), tol=0)
            order = np.argsort(w)[::-1]
            return w[order], V[:, order]
        except ArpackNoConvergence:
            pass
    w, V = eigh(S, subset_by_index=[p - k, p - 1])
    return w[::-1], V[:, ::-1]


def random_streams(random_state, k):
    """``k`` independent Generators derived from ``random_state``.

    An int, ``None`` or a :class:`numpy.random.SeedSequence` is spawned
    (``SeedSequence(random_state).spawn(k)``), so the same int gives the same
    streams and no two streams replay one another; a Generator spawns ``k``
    children (its own stream is not advanced).
    """
    if isinstance(random_state, np.random.SeedSequence):
        return [np.random.default_rng(s) for s in random_state.spawn(k)]
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return [np.random.default_rng(s) for s in np.random.SeedSequence(random_state).spawn(k)]
    return check_random_state(random_state).spawn(k)
