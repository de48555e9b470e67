"""Pairwise rank statistics over each pair's complete rows.

The kernels read the columns through one sort each (:func:`column_order`):

* ``order`` (int64, shape (p, n)): ``order[j]`` is column ``j``'s rows in ascending
  order of value, its ``n_obs[j]`` observed rows first;
* ``dense`` (int64, shape (p, n)): ``dense[j, i]`` is entry ``(i, j)``'s 0-based
  dense rank among column ``j``'s distinct observed values, ``-1`` where missing;
* ``n_levels`` (int64, shape (p,)): distinct observed values per column.

A pair ``(j, k)`` is walked in ``j``'s order, skipping the rows where ``k`` is
missing, so its statistic is exactly the one of its complete rows with no copy.

* :func:`kendall_numerators` — ``concordant - discordant`` (ties count 0) and the
  complete-row count, O(n log m_k) per pair with a Fenwick tree over ``k``'s
  ``m_k`` levels: tie groups of ``j`` are queried before they are inserted, so a
  pair tied in ``j`` counts neither way (Knight's sort-then-count idea, with the
  tree in place of the merge sort so that one sort of ``j`` serves every partner).
* :func:`midrank_products` — the centred mid-ranks of both columns over the pair's
  complete rows, and their cross and squared sums, O(n) per pair.

* :func:`midranks_from_order` — mid-ranks of every column, O(n) per column.

The pair kernels return exact integers (mid-ranks kept as ``2 R - (n + 1)``).
:func:`kendall_numerators_reference` and :func:`midrank_products_reference`
compute the same from the raw columns in O(n^2) and O(n log n) NumPy;
``scipy.stats.rankdata`` is the reference of the other two.

The loops over pairs are serial: ``prange`` was measured no faster on the shared
2-core machine (780 Kendall pairs of n = 20,000: 0.59 s serial, 0.67 s with two
threads), and its OpenMP threads slowed the BLAS product that follows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "column_order",
    "kendall_numerators",
    "kendall_numerators_reference",
    "midrank_products",
    "midrank_products_reference",
    "midranks_from_order",
]


def column_order(x):
    """``(order, dense, n_obs, n_levels)`` of a float array of shape (n, p), NaN missing.

    One sort per column (NaN sorts last); the order of tied rows is immaterial to
    every kernel here, which treat a tie group as a whole.
    """
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    order = np.argsort(xt, axis=1).astype(np.int64, copy=False)
    dense, n_obs, n_levels = _levels(xt, order)
    return order, dense, n_obs, n_levels


@njit(cache=True)
def _levels(xt, order):
    p, n = xt.shape
    dense = np.full((p, n), -1, dtype=np.int64)
    n_obs = np.zeros(p, dtype=np.int64)
    n_levels = np.zeros(p, dtype=np.int64)
    for j in range(p):
        level = -1
        previous = np.nan
        t = 0
        while t < n and not np.isnan(xt[j, order[j, t]]):
            value = xt[j, order[j, t]]
            if t == 0 or value != previous:
                level += 1
                previous = value
            dense[j, order[j, t]] = level
            t += 1
        n_obs[j] = t
        n_levels[j] = level + 1
    return dense, n_obs, n_levels


@njit(cache=True)
def midranks_from_order(order, dense, n_obs):
    """Mid-ranks of each column over its observed rows, shape (p, n) float64 (NaN where missing)."""
    p, n = order.shape
    out = np.full((p, n), np.nan)
    for j in range(p):
        t = 0
        while t < n_obs[j]:
            u = t
            while u < n_obs[j] and dense[j, order[j, u]] == dense[j, order[j, t]]:
                u += 1
            # positions t .. u-1 hold ranks t+1 .. u
            for s in range(t, u):
                out[j, order[j, s]] = 0.5 * (t + u + 1)
            t = u
    return out


@njit(cache=True)
def _group_end(order, dense, j, t, n_obs_j):
    """End (exclusive) of the tie group of column ``j`` that starts at sorted position ``t``."""
    level = dense[j, order[j, t]]
    u = t + 1
    while u < n_obs_j and dense[j, order[j, u]] == level:
        u += 1
    return u


@njit(cache=True)
def _kendall_pair(order, dense, n_obs_j, j, k, m_k):
    """(concordant - discordant, complete rows) of columns ``j`` and ``k``."""
    tree = np.zeros(m_k + 1, dtype=np.int64)  # Fenwick tree: rows inserted per level of k
    inserted = 0
    numerator = 0
    t = 0
    while t < n_obs_j:
        u = _group_end(order, dense, j, t, n_obs_j)
        # query the whole tie group of j before inserting it: pairs tied in j count 0
        for s in range(t, u):
            y = dense[k, order[j, s]]
            if y < 0:
                continue
            below = 0  # earlier rows (smaller j) with a smaller k: concordant
            i = y
            while i > 0:
                below += tree[i]
                i -= i & (-i)
            not_above = 0  # earlier rows with k at most y (ties in k count neither way)
            i = y + 1
            while i > 0:
                not_above += tree[i]
                i -= i & (-i)
            numerator += below - (inserted - not_above)
        for s in range(t, u):
            y = dense[k, order[j, s]]
            if y < 0:
                continue
            i = y + 1
            while i <= m_k:
                tree[i] += 1
                i += i & (-i)
            inserted += 1
        t = u
    return numerator, inserted


@njit(cache=True)
def kendall_numerators(order, dense, n_obs, n_levels, first, second):
    """Kendall numerators of the pairs ``(first[i], second[i])`` over their complete rows.

    Parameters
    ----------
    order, dense : ndarray of shape (p, n), int64
        Sorted row order and dense ranks per column (see the module docstring).
    n_obs, n_levels : ndarray of shape (p,), int64
        Observed rows and distinct observed values per column.
    first, second : ndarray of shape (P,), int64
        The pairs; ``second`` should be the column with fewer levels (the tree's side).

    Returns
    -------
    numerators, counts : ndarray of shape (P,), int64
        ``sum_{i<l} sign(x_ij - x_lj) sign(x_ik - x_lk)`` over the complete rows, and
        their number. Cost O(n log m) per pair, ``m = n_levels[second[i]]``.
    """
    P = first.shape[0]
    numerators = np.empty(P, dtype=np.int64)
    counts = np.empty(P, dtype=np.int64)
    for i in range(P):
        j, k = first[i], second[i]
        numerators[i], counts[i] = _kendall_pair(order, dense, n_obs[j], j, k, n_levels[k])
    return numerators, counts


@njit(cache=True)
def _centred_midranks(order, dense, n_obs_j, j, k, n_pair, out):
    """``2 R - (n_pair + 1)`` of column ``j`` over the rows where ``k`` is observed, into ``out``."""
    before = 0
    t = 0
    while t < n_obs_j:
        u = _group_end(order, dense, j, t, n_obs_j)
        tied = 0
        for s in range(t, u):
            if dense[k, order[j, s]] >= 0:
                tied += 1
        # the tied rows hold ranks before+1 .. before+tied; twice their mean is 2 before + tied + 1
        value = 2 * before + tied - n_pair
        for s in range(t, u):
            out[order[j, s]] = value
        before += tied
        t = u


@njit(cache=True)
def midrank_products(order, dense, n_obs, first, second):
    """Centred mid-rank products of the pairs ``(first[i], second[i])`` over their complete rows.

    With ``h_j = 2 R_j - (n_jk + 1)`` (``R_j`` the mid-ranks of column ``j`` among the
    ``n_jk`` complete rows of the pair), returns ``n_jk``, ``sum h_j h_k``,
    ``sum h_j^2`` and ``sum h_k^2``, all int64 (exact). Cost O(n) per pair (three
    passes over the sorted rows) plus two int64 work arrays of length n.
    """
    P = first.shape[0]
    n = order.shape[1]
    counts = np.empty(P, dtype=np.int64)
    cross = np.empty(P, dtype=np.int64)
    ss_first = np.empty(P, dtype=np.int64)
    ss_second = np.empty(P, dtype=np.int64)
    for i in range(P):
        j, k = first[i], second[i]
        n_pair = 0
        for s in range(n_obs[j]):
            if dense[k, order[j, s]] >= 0:
                n_pair += 1
        h_j = np.empty(n, dtype=np.int64)
        h_k = np.empty(n, dtype=np.int64)
        _centred_midranks(order, dense, n_obs[j], j, k, n_pair, h_j)
        _centred_midranks(order, dense, n_obs[k], k, j, n_pair, h_k)
        c = 0
        a = 0
        b = 0
        for s in range(n_obs[j]):
            r = order[j, s]
            if dense[k, r] >= 0:
                c += h_j[r] * h_k[r]
                a += h_j[r] * h_j[r]
                b += h_k[r] * h_k[r]
        counts[i], cross[i], ss_first[i], ss_second[i] = n_pair, c, a, b
    return counts, cross, ss_first, ss_second


def _complete(x, y):
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def kendall_numerators_reference(x, y):
    """``(concordant - discordant, n)`` of two float columns over their complete rows, O(n^2)."""
    x, y = _complete(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    return int(np.triu(s, 1).sum()), x.size


def midrank_products_reference(x, y):
    """``(n, sum h_x h_y, sum h_x^2, sum h_y^2)`` with ``h = 2 R - (n + 1)`` over the complete rows."""
    from scipy.stats import rankdata

    x, y = _complete(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    n = x.size
    hx = np.rint(2.0 * rankdata(x) - (n + 1)).astype(np.int64)
    hy = np.rint(2.0 * rankdata(y) - (n + 1)).astype(np.int64)
    return n, int(hx @ hy), int(hx @ hx), int(hy @ hy)
