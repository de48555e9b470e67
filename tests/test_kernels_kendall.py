"""Rank kernels against NumPy/SciPy references: sorting, mid-ranks, Kendall numerators, rank products."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy.stats import rankdata

from hclstat.kernels.kendall import (
    column_order,
    kendall_numerators,
    kendall_numerators_reference,
    midrank_products,
    midrank_products_reference,
    midranks_from_order,
)


def _table(rng, n=150, missing=0.0):
    """Columns of every kind: continuous, heavy ties, binary, ternary, zero-inflated, mostly tied."""
    z = rng.standard_normal((n, 7)) @ rng.standard_normal((7, 7))
    x = np.column_stack(
        [
            z[:, 0],
            np.round(z[:, 1]),
            (z[:, 2] > 0.4) * 4.0 - 1.0,
            np.digitize(z[:, 3], [-0.5, 0.7]).astype(float),
            np.maximum(z[:, 4], 0.0),
            np.maximum(np.round(z[:, 5] * 2), -1.0),
            (z[:, 6] > 2.5).astype(float),
        ]
    )
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _all_pairs(p):
    j, k = np.triu_indices(p, 1)
    # both orientations: the walked column and the tree column swap roles
    return np.concatenate([j, k]).astype(np.int64), np.concatenate([k, j]).astype(np.int64)


@pytest.mark.parametrize("missing", [0.0, 0.3])
@pytest.mark.parametrize("threads", [1, 2])
def test_column_order_matches_scipy_dense_ranks(rng, missing, threads):
    x = _table(rng, missing=missing)
    order, dense, n_obs, n_levels = column_order(x, threads=threads)
    observed = ~np.isnan(x)
    assert_array_equal(n_obs, observed.sum(axis=0))
    for j in range(x.shape[1]):
        col = x[:, j]
        assert np.all(np.diff(col[order[j, : n_obs[j]]]) >= 0)
        assert np.all(np.isnan(col[order[j, n_obs[j] :]]))
        expected = rankdata(col[observed[:, j]], method="dense") - 1
        assert_array_equal(dense[j, observed[:, j]], expected)
        assert_array_equal(dense[j, ~observed[:, j]], -1)
        assert n_levels[j] == np.unique(col[observed[:, j]]).size


@pytest.mark.parametrize("missing", [0.0, 0.3])
@pytest.mark.parametrize("threads", [1, 2])
def test_midranks_match_scipy(rng, missing, threads):
    x = _table(rng, missing=missing)
    order, dense, n_obs, _ = column_order(x, threads=threads)
    expected = rankdata(x, axis=0, nan_policy="omit")
    assert_array_equal(midranks_from_order(order, dense, n_obs, threads=threads).T, expected)


def test_tied_columns_take_the_stable_sort_and_give_the_same_ranks(rng):
    # a binary column (ties throughout) and a continuous one: both sorts give valid orders
    n = 3000
    x = np.column_stack([(rng.random(n) < 0.3).astype(float), rng.standard_normal(n)])
    order, dense, n_obs, n_levels = column_order(x)
    assert_array_equal(order[0], np.argsort(x[:, 0], kind="stable"))
    assert_array_equal(n_levels, [2, n])
    assert_array_equal(midranks_from_order(order, dense, n_obs).T, rankdata(x, axis=0))


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_kendall_numerators_match_the_quadratic_reference(rng, missing):
    x = _table(rng, missing=missing)
    order, dense, n_obs, n_levels = column_order(x)
    first, second = _all_pairs(x.shape[1])
    numerators, counts = kendall_numerators(order, dense, n_obs, n_levels, first, second)
    expected = np.array([kendall_numerators_reference(x[:, a], x[:, b]) for a, b in zip(first, second)])
    assert_array_equal(numerators, expected[:, 0])
    assert_array_equal(counts, expected[:, 1])


def test_kendall_numerator_by_hand():
    # rows 1-4: four concordant pairs, (2,3) discordant, (3,4) tied in x counts 0
    x = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0], [3.0, 5.0]])
    order, dense, n_obs, n_levels = column_order(x)
    num, cnt = kendall_numerators(order, dense, n_obs, n_levels, np.array([0, 1]), np.array([1, 0]))
    assert_array_equal(num, [3, 3])
    assert_array_equal(cnt, [4, 4])
    assert kendall_numerators_reference(x[:, 0], x[:, 1]) == (3, 4)


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_midrank_products_match_the_reference(rng, missing):
    x = _table(rng, missing=missing)
    order, dense, n_obs, _ = column_order(x)
    first, second = _all_pairs(x.shape[1])
    out = np.column_stack(midrank_products(order, dense, n_obs, first, second))
    expected = np.array([midrank_products_reference(x[:, a], x[:, b]) for a, b in zip(first, second)])
    assert_array_equal(out, expected)


def test_pairs_without_complete_rows_give_zero_counts():
    x = np.array([[1.0, np.nan], [2.0, np.nan], [np.nan, 1.0], [np.nan, 2.0], [3.0, np.nan]])
    order, dense, n_obs, n_levels = column_order(x)
    pair = np.array([0]), np.array([1])
    assert_array_equal(kendall_numerators(order, dense, n_obs, n_levels, *pair), ([0], [0]))
    assert_array_equal(np.column_stack(midrank_products(order, dense, n_obs, *pair)), [[0, 0, 0, 0]])


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_column_order_counts_the_rows_at_the_lowest_levels(rng, missing):
    x = _table(rng, missing=missing)
    info = column_order(x)
    _, dense, _, _ = info
    assert_array_equal(info.at_min, (dense == 0).sum(axis=1))
    assert_array_equal(info.at_most_one, ((dense >= 0) & (dense <= 1)).sum(axis=1))
    order, dense2, n_obs, n_levels = info  # still a 4-tuple
    assert dense2 is dense


def test_two_level_columns_are_ordered_by_partition(rng):
    # binary columns (with missing entries, with a rare level, constant) and a three-level column
    n = 2000
    b = (rng.random(n) < 0.02).astype(float) * 3.0 - 1.0
    b[rng.random(n) < 0.1] = np.nan
    constant = np.where(rng.random(n) < 0.5, 2.0, np.nan)
    three = rng.integers(0, 3, n).astype(float)
    late = np.zeros(n)
    late[-5:] = 1.0  # the second level only after the sampled head rows
    x = np.column_stack([b, constant, three, late])
    order, dense, n_obs, n_levels = column_order(x)
    assert_array_equal(n_levels, [2, 1, 3, 2])
    for j in range(x.shape[1]):
        col = x[order[j], j]
        assert np.all(np.diff(col[: n_obs[j]]) >= 0) and np.isnan(col[n_obs[j]:]).all()
        assert sorted(order[j]) == list(range(n))
    assert_array_equal(midranks_from_order(order, dense, n_obs).T, rankdata(x, axis=0, nan_policy="omit"))
