"""Harrell's concordance index in ``O(n log n)`` (a Fenwick tree over risk ranks), with its NumPy reference.

A pair ``(i, j)`` is comparable when the earlier of the two times is an event:
``d_i = 1`` and either ``t_j > t_i`` or ``t_j = t_i`` with ``j`` censored (a
subject censored at an event time was still at risk then). Pairs of tied event
times are not comparable. A comparable pair is concordant when ``risk_i >
risk_j`` and counts 1/2 when the risks are tied.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["concordance_counts", "concordance_counts_reference"]


@njit(cache=True)
def _fenwick_add(tree, k):
    k += 1
    while k < tree.shape[0]:
        tree[k] += 1
        k += k & -k


@njit(cache=True)
def _fenwick_prefix(tree, k):
    """Number of inserted ranks ``<= k`` (``k = -1`` gives 0)."""
    total = 0
    k += 1
    while k > 0:
        total += tree[k]
        k -= k & -k
    return total


@njit(cache=True)
def _concordance_sweep(time, event, rank, n_ranks):
    """Counts over rows sorted by decreasing time: ``(concordant, tied_risk, comparable)``."""
    n = time.shape[0]
    tree = np.zeros(n_ranks + 1, dtype=np.int64)
    concordant = 0
    tied = 0
    comparable = 0
    inserted = 0
    i = 0
    while i < n:
        j = i
        while j < n and time[j] == time[i]:
            j += 1
        for k in range(i, j):  # censored at this time: at risk for the events tied with them
            if event[k] == 0:
                _fenwick_add(tree, rank[k])
                inserted += 1
        for k in range(i, j):
            if event[k] != 0:
                below = _fenwick_prefix(tree, rank[k] - 1)
                concordant += below
                tied += _fenwick_prefix(tree, rank[k]) - below
                comparable += inserted
        for k in range(i, j):
            if event[k] != 0:
                _fenwick_add(tree, rank[k])
                inserted += 1
        i = j
    return concordant, tied, comparable


def concordance_counts(time, event, risk):
    """``(concordant, tied_risk, comparable)`` pair counts (validated float/int inputs of equal length)."""
    risk_levels, rank = np.unique(np.asarray(risk, dtype=np.float64), return_inverse=True)
    order = np.argsort(-np.asarray(time, dtype=np.float64), kind="stable")
    return _concordance_sweep(
        np.ascontiguousarray(np.asarray(time, dtype=np.float64)[order]),
        np.ascontiguousarray(np.asarray(event, dtype=np.int64)[order]),
        np.ascontiguousarray(rank.reshape(-1)[order].astype(np.int64)),
        risk_levels.size,
    )


def concordance_counts_reference(time, event, risk):
    """The same counts by comparing every pair (``O(n^2)`` memory: small ``n`` only)."""
    t = np.asarray(time, dtype=np.float64)
    d = np.asarray(event) != 0
    r = np.asarray(risk, dtype=np.float64)
    later = (t[None, :] > t[:, None]) | ((t[None, :] == t[:, None]) & ~d[None, :])
    comparable = later & d[:, None]
    np.fill_diagonal(comparable, False)
    concordant = comparable & (r[:, None] > r[None, :])
    tied = comparable & (r[:, None] == r[None, :])
    return int(concordant.sum()), int(tied.sum()), int(comparable.sum())
