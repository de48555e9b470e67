"""Rank statistics of a mixed table, pair by pair, at the cost of a product (DESIGN §9).

The latent Gaussian copula is estimated from one rank statistic per pair of
columns: Kendall's tau-a, or Spearman's rho for two continuous columns. Both
are computed over each pair's complete rows, exactly.

Why one product does most of it. Let ``R`` be mid-ranks over ``n`` rows and
``h = 2 R - (n + 1)`` (twice the centred mid-ranks, an integer). For a binary
column ``b`` with ``n_1`` ones the mid-ranks take two values ``n/2`` apart, so
``h_b = n (b - mean b)``, and for any column ``y`` the tau-a numerator (the
Mann-Whitney form ``2 (b^T R_y - n_1 (n_1 + 1) / 2) - n_1 n_0``) is

    sum_{i<l} sign(b_i - b_l) sign(y_i - y_l) = 2 (b - mean b)^T (R_y - mean R_y) = h_b^T h_y / n,

so ``tau_a(b, y) = 2 h_b^T h_y / (n^2 (n - 1))``, binary partners included (the
2x2 counts: ``n n_11 - n_1. n_.1``). Spearman's rho is the correlation of the
mid-ranks, ``h_j^T h_k / (|h_j| |h_k|)``. One BLAS product ``H^T H`` of the
rank matrix thus gives every pair with a binary column and every Spearman pair;
ternary and truncated columns with non-binary partners need a real Kendall tau
(:func:`hclstat.kernels.kendall.kendall_numerators`).
"""

from __future__ import annotations

import numpy as np

from ..kernels.kendall import column_order, kendall_numerators, midrank_products, midranks_from_order
from .column_types import _as_matrix, _checked_types

__all__ = ["midranks", "pair_statistics", "rank_scores"]

_CONTINUOUS_STATISTICS = ("spearman", "kendall")


def midranks(x):
    """Mid-ranks of each column over its observed rows.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_columns)
        NaN is missing.

    Returns
    -------
    ndarray of shape (n_samples, n_columns), float64
        Ranks ``1 .. n_j`` among column ``j``'s ``n_j`` observed rows, ties given
        their mean rank; NaN stays NaN. One sort per column.
    """
    arr, _ = _as_matrix(x, None)
    order, dense, n_obs, _ = column_order(arr)
    return midranks_from_order(order, dense, n_obs).T


def rank_scores(x, types=None, *, names=None, order=None):
    """Centred mid-distribution transform of each column, for permutation nulls.

    ``psi_j(x_ij) = (R_ij - (n_j + 1) / 2) / n_j`` with ``R`` the mid-ranks over
    column ``j``'s ``n_j`` observed rows (NaN where missing); it is the same for
    every type (``types``, when given, is only validated as in ``check_types``).

    On complete data (``n`` rows), for a binary column ``b`` and any column ``y``,
    ``tau_a(b, y) = 8 / (n - 1) * sum_i psi_b(b_i) psi_y(y_i)`` exactly, and for two
    continuous columns Spearman's rho is the correlation of their scores.

    Returns
    -------
    ndarray of shape (n_samples, n_columns), float64
    """
    arr, names = _as_matrix(x, names)
    info = column_order(arr) if order is None else order  # order: as in check_types
    order, dense, n_obs, _ = info
    if types is not None:
        _checked_types(types, names, info)
    return ((midranks_from_order(order, dense, n_obs) - 0.5 * (n_obs + 1)[:, None]) / n_obs[:, None]).T


def _pair_classes(types, continuous):
    """Upper-triangle pairs ``(j, k)`` and which of them come from rank products."""
    j, k = np.triu_indices(types.size, 1)
    binary = types == "binary"
    with_binary = binary[j] | binary[k]
    both_continuous = (types[j] == "continuous") & (types[k] == "continuous")
    spearman = both_continuous & (continuous == "spearman") & ~with_binary
    return j, k, with_binary, spearman


def _product_terms(arr, info, j, k, centred=None):
    """``(n_jk, sum h_j h_k, sum h_j^2, sum h_k^2)`` of the pairs ``(j, k)`` (float64 arrays).

    Pairs of two complete columns come from one BLAS product of the rank matrix;
    pairs with a missing entry from the O(n) kernel over their complete rows.
    """
    n = arr.shape[0]
    order, dense, n_obs, _ = info
    complete = n_obs == n
    terms = np.empty((4, j.size))
    block = complete[j] & complete[k]
    if block.any():
        cols = np.flatnonzero(complete)
        where = np.full(arr.shape[1], -1)
        where[cols] = np.arange(cols.size)
        if centred is not None:  # h = 2 (R - (n + 1) / 2) on complete columns: the Gram exactly 4 C C^T
            c = centred if cols.size == centred.shape[0] else centred[cols]
            gram = c @ c.T
            gram *= 4.0
        else:
            h = 2.0 * midranks_from_order(order[cols], dense[cols], n_obs[cols]) - (n + 1)
            gram = h @ h.T
        a, b = where[j[block]], where[k[block]]
        terms[0, block] = n
        terms[1:, block] = gram[a, b], gram[a, a], gram[b, b]
    rest = ~block
    if rest.any():
        out = midrank_products(order, dense, n_obs, j[rest].astype(np.int64), k[rest].astype(np.int64))
        terms[:, rest] = np.asarray(out, dtype=np.float64)
    return terms


def pair_statistics(x, types=None, *, continuous="spearman", names=None, order=None, centred=None):
    """Kendall's tau-a, or Spearman's rho, of every pair of columns over its complete rows.

    ``stat[j, k]`` is Spearman's rho (Pearson correlation of mid-ranks) when both
    columns are continuous and ``continuous="spearman"``; otherwise Kendall's tau-a,
    ``(concordant - discordant) / (n_jk (n_jk - 1) / 2)`` with ties counting 0.

    Cost per pair, with ``n`` rows, after one sort per column (O(n p log n)):

    * complete data, a binary column in the pair, or two continuous columns under
      Spearman: an entry of one BLAS product ``H^T H`` of the rank matrix,
      O(n p^2) for all of them together;
    * the same pairs with a missing entry in either column: O(n) each, a walk of
      both columns' sorted rows restricted to the pair's complete rows (pairs of
      two complete columns still come from the product);
    * a ternary or truncated column with a non-binary partner (and continuous
      pairs under ``continuous="kendall"``): a Kendall kernel, O(n log m) each with
      ``m`` the partner's (the one with fewer levels') distinct values: O(n) when a
      ternary is in the pair, O(n log n) for truncated/continuous pairs.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_columns)
        NaN is missing.
    types : None, str or sequence of str
        Column types, checked (or inferred) by :func:`check_types`.
    continuous : {"spearman", "kendall"}
        The statistic for two continuous columns.
    names : sequence of str, optional
        Column names for messages (a DataFrame gives its own).
    order, centred : optional
        :func:`~hclstat.kernels.kendall.column_order` of ``x``, and its centred
        mid-ranks ``R_j - (n_j + 1) / 2`` (shape (n_columns, n_samples), NaN where
        missing), when already computed.

    Returns
    -------
    stat : ndarray of shape (n_columns, n_columns), float64
        Symmetric, unit diagonal. NaN for a pair with fewer than 2 complete rows,
        and for Spearman on a pair where a column is constant over its rows
        (tau-a is then 0).
    counts : ndarray of shape (n_columns, n_columns), int64, or None
        ``counts[j, k]`` complete rows of the pair (diagonal: observed rows of the
        column); None when nothing is missing.
    """
    if continuous not in _CONTINUOUS_STATISTICS:
        raise ValueError(f"continuous: expected one of {_CONTINUOUS_STATISTICS}, got {continuous!r}")
    arr, names = _as_matrix(x, names)
    n, p = arr.shape
    info = column_order(arr) if order is None else order  # order: as in check_types
    types = _checked_types(types, names, info)
    order, dense, n_obs, n_levels = info
    j, k, with_binary, spearman = _pair_classes(types, continuous)
    values = np.empty(j.size)
    pair_rows = np.empty(j.size)

    product = with_binary | spearman
    n_jk, cross, ss_j, ss_k = _product_terms(arr, info, j[product], k[product], centred)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = 2.0 * cross / (n_jk * n_jk * (n_jk - 1))
        rho = cross / np.sqrt(ss_j * ss_k)
    values[product] = np.where(spearman[product], rho, tau)
    pair_rows[product] = n_jk

    kendall = ~product
    if kendall.any():
        first, second = j[kendall], k[kendall]
        # the tree runs over the side with fewer levels: O(n log m) with m small for ternary
        swap = n_levels[second] > n_levels[first]
        first, second = np.where(swap, second, first), np.where(swap, first, second)
        first, second = first.astype(np.int64), second.astype(np.int64)
        numerators, m = kendall_numerators(order, dense, n_obs, n_levels, first, second)
        with np.errstate(invalid="ignore", divide="ignore"):
            values[kendall] = numerators / (0.5 * m * (m - 1.0))
        pair_rows[kendall] = m

    values[pair_rows < 2] = np.nan
    stat = np.eye(p)
    stat[j, k] = stat[k, j] = values
    if np.all(n_obs == n):
        return stat, None
    counts = np.diag(n_obs).astype(np.int64)
    counts[j, k] = counts[k, j] = pair_rows.astype(np.int64)
    return stat, counts
