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
    "ColumnOrder",
    "column_order",
    "kendall_numerators",
    "kendall_numerators_reference",
    "midrank_products",
    "midrank_products_reference",
    "midranks_from_order",
]


#: a column whose first rows repeat values this often is argsorted stably: NumPy's quicksort
#: degrades on heavy ties (n = 1e5, per column: binary 13.7 ms quicksort against 2.4 ms stable,
#: zero-inflated 14.4 against 6.8; distinct values 7.3 against 10.7). A column with two
#: observed values is ordered by a partition instead (O(n))
_TIED_FRACTION = 0.1
_TIE_SAMPLE = 512


def _argsort_into(xt, columns, out):
    for j in columns:
        col = xt[j]
        head = col[:_TIE_SAMPLE]
        head = head[~np.isnan(head)]
        distinct = np.unique(head).size
        if distinct <= 2 and _two_level_order(col, out[j]):
            continue
        tied = head.size > 1 and distinct < (1.0 - _TIED_FRACTION) * head.size
        out[j] = np.argsort(col, kind="stable" if tied else "quicksort")


def _two_level_order(col, out):
    """The order of a column with at most two distinct observed values by partition, O(n)
    (rows of the lower value, of the higher, then the missing ones); False when it has more."""
    missing = np.isnan(col)
    if missing.all():
        return False
    low, high = np.nanmin(col), np.nanmax(col)
    at_low, at_high = col == low, col == high
    if not np.all(at_low | at_high | missing):
        return False
    parts = [np.flatnonzero(at_low)] + ([np.flatnonzero(at_high)] if high != low else []) + [np.flatnonzero(missing)]
    out[:] = np.concatenate(parts)
    return True


class ColumnOrder(tuple):
    """``(order, dense, n_obs, n_levels)``, with the per-column counts of rows at the lowest
    level (``at_min``) and at the two lowest (``at_most_one``) as attributes."""

    def __new__(cls, order, dense, n_obs, n_levels, at_min=None, at_most_one=None):
        out = super().__new__(cls, (order, dense, n_obs, n_levels))
        out.at_min, out.at_most_one = at_min, at_most_one
        return out


def column_order(x, *, threads=1):
    """``(order, dense, n_obs, n_levels)`` of a float array of shape (n, p), NaN missing.

    One sort per column (NaN sorts last); the order of tied rows is immaterial to
    every kernel here, which treat a tie group as a whole. ``threads`` > 1 sorts
    and levels groups of columns in that many threads (NumPy's sort and the
    kernels release the GIL); the result does not depend on it.
    """
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    p, n = xt.shape
    order = np.empty((p, n), dtype=np.int64)
    dense = np.empty((p, n), dtype=np.int64)
    n_obs, n_levels, at_min, at_most_one = (np.zeros(p, dtype=np.int64) for _ in range(4))

    def work(columns):
        _argsort_into(xt, columns, order)
        _levels_into(xt, order, columns[0], columns[-1] + 1, dense, n_obs, n_levels, at_min, at_most_one)

    _by_column_groups(p, threads, work)
    return ColumnOrder(order, dense, n_obs, n_levels, at_min, at_most_one)


def _by_column_groups(p, threads, work):
    """``work(columns)`` over contiguous groups of ``range(p)``, in ``threads`` threads."""
    threads = max(1, min(int(threads), p))
    groups = [g for g in np.array_split(np.arange(p), 4 * threads if threads > 1 else 1) if g.size]
    if threads == 1:
        for g in groups:
            work(g)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(work, groups):
            pass


@njit(cache=True, nogil=True)
def _levels_into(xt, order, start, stop, dense, n_obs, n_levels, at_min, at_most_one):
    n = xt.shape[1]
    for j in range(start, stop):
        for i in range(n):
            dense[j, i] = -1
        level = -1
        previous = np.nan
        t = 0
        low = 0
        while t < n and not np.isnan(xt[j, order[j, t]]):
            value = xt[j, order[j, t]]
            if t == 0 or value != previous:
                level += 1
                previous = value
                if level == 1:
                    low = t
            dense[j, order[j, t]] = level
            t += 1
        n_obs[j] = t
        n_levels[j] = level + 1
        # rows at level 0 (all observed rows for a constant column), and at levels 0 and 1
        at_min[j] = low if level >= 1 else t
        second = t
        for u in range(low, t):
            if dense[j, order[j, u]] > 1:
                second = u
                break
        at_most_one[j] = second


def midranks_from_order(order, dense, n_obs, *, threads=1):
    """Mid-ranks of each column over its observed rows, shape (p, n) float64 (NaN where missing)."""
    p, n = order.shape
    out = np.empty((p, n))
    _by_column_groups(p, threads, lambda g: _midranks_into(order, dense, n_obs, g[0], g[-1] + 1, out))
    return out


@njit(cache=True, nogil=True)
def _midranks_into(order, dense, n_obs, start, stop, out):
    n = order.shape[1]
    for j in range(start, stop):
        for i in range(n):
            out[j, i] = np.nan
        t = 0
        while t < n_obs[j]:
            u = t
            while u < n_obs[j] and dense[j, order[j, u]] == dense[j, order[j, t]]:
                u += 1
            # positions t .. u-1 hold ranks t+1 .. u
            for s in range(t, u):
                out[j, order[j, s]] = 0.5 * (t + u + 1)
            t = u


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
