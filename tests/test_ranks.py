"""Column types and pairwise rank statistics of mixed tables, against direct and O(n^2) references."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import rankdata, spearmanr

from hclstat.exceptions import EstimationWarning
from hclstat.moments.column_types import check_types, infer_types, zratios
from hclstat.moments.ranks import midranks, pair_statistics, rank_scores

TYPES = ["continuous", "continuous", "binary", "binary", "ternary", "truncated", "truncated", "continuous"]


def _mixed(rng, n=120, missing=0.0):
    """One column per kind, correlated through a latent Gaussian; odd codings and ties on purpose."""
    z = rng.standard_normal((n, 8)) @ rng.standard_normal((8, 8))
    x = np.column_stack(
        [
            z[:, 0],
            np.exp(np.round(z[:, 1] * 4) / 4),  # continuous with ties
            np.where(z[:, 2] > 0.3, 7.0, 3.0),  # binary coded {3, 7}
            (z[:, 3] > -0.2).astype(float),
            np.digitize(z[:, 4], [-0.6, 0.5]) * 5.0 - 1.0,  # ternary coded {-1, 4, 9}
            np.maximum(z[:, 5], 0.0),
            2.0 + np.maximum(z[:, 6] - 0.4, 0.0),  # zero-inflated with its point mass at 2
            z[:, 7] ** 3,
        ]
    )
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _tau_a(x, y):
    """Kendall's tau-a over the complete rows, O(n^2)."""
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    n = x.size
    return np.triu(s, 1).sum() / (n * (n - 1) / 2)


def _reference(x, types, continuous="spearman"):
    p = x.shape[1]
    out = np.eye(p)
    for j in range(p):
        for k in range(j + 1, p):
            if types[j] == types[k] == "continuous" and continuous == "spearman":
                keep = ~(np.isnan(x[:, j]) | np.isnan(x[:, k]))
                out[j, k] = spearmanr(x[keep, j], x[keep, k])[0]
            else:
                out[j, k] = _tau_a(x[:, j], x[:, k])
            out[k, j] = out[j, k]
    return out


# ---- column types ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_infer_types_reads_every_kind(rng, missing):
    assert_array_equal(infer_types(_mixed(rng, missing=missing)), TYPES)


def test_infer_types_report(rng):
    x = _mixed(rng, missing=0.3)
    names = [f"c{j}" for j in range(x.shape[1])]
    types, report = infer_types(pd.DataFrame(x, columns=names), return_report=True)
    assert list(report.columns) == ["column", "type", "n_distinct", "n_observed", "fraction_at_minimum"]
    assert list(report["column"]) == names and list(report["type"]) == list(types)
    observed = ~np.isnan(x)
    for j in range(x.shape[1]):
        col = x[observed[:, j], j]
        assert report["n_distinct"][j] == np.unique(col).size
        assert report["n_observed"][j] == col.size
        assert report["fraction_at_minimum"][j] == np.mean(col == col.min())


def test_truncated_threshold_is_inclusive():
    x = np.arange(100.0)[:, None].repeat(2, axis=1)
    x[:5, 0] = 0.0  # 5 of 100 rows at the minimum
    x[:4, 1] = 0.0
    assert_array_equal(infer_types(x, truncated_min_fraction=0.05), ["truncated", "continuous"])
    assert_array_equal(infer_types(x, truncated_min_fraction=0.04), ["truncated", "truncated"])
    with pytest.raises(ValueError, match=r"truncated_min_fraction: expected a share in \(0, 1\]"):
        infer_types(x, truncated_min_fraction=0.0)


def test_constant_column_is_an_error_naming_it(rng):
    x = _mixed(rng)
    x[:, 3] = 1.0
    x[:, 5] = np.nan
    with pytest.raises(ValueError, match=r"column 3 \('sex'\): 1, column 5 \('lab'\): 0; drop the constant"):
        infer_types(x, names=["a", "b", "c", "sex", "e", "lab", "g", "h"])
    with pytest.raises(ValueError, match=r"column 3: 1, column 5: 0"):
        check_types("auto", x)


def test_few_distinct_continuous_columns_warn(rng):
    x = np.column_stack([rng.integers(0, 6, 200), rng.integers(0, 10, 200), rng.integers(0, 11, 200)]).astype(float)
    with pytest.warns(EstimationWarning, match=r"column 0 \('age'\): 6, column 1 \('score'\): 10\)") as caught:
        types = infer_types(x, names=["age", "score", "grade"], truncated_min_fraction=0.5)
    assert_array_equal(types, ["continuous"] * 3)
    assert "grade" not in str(caught[0].message) and "attenuate" in str(caught[0].message)
    # by default the 1/6 and 1/11 shares at the minimum make columns 0 and 2 truncated (no warning);
    # column 1 typed continuous explicitly still warns
    with pytest.warns(EstimationWarning, match=r"values \(column 1: 10\)"):
        assert_array_equal(check_types(["auto", "continuous", "auto"], x), ["truncated", "continuous", "truncated"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infer_types(rng.standard_normal((50, 3)))


def test_check_types_accepts_auto_single_and_mixed(rng):
    x = _mixed(rng)
    assert_array_equal(check_types(None, x), TYPES)
    assert_array_equal(check_types("auto", x), TYPES)
    assert_array_equal(check_types(["auto"] * 4 + ["ternary"] + ["auto"] * 3, x), TYPES)
    cont = x[:, [0, 7]]
    assert_array_equal(check_types("continuous", cont), ["continuous", "continuous"])
    # a truncated column may be typed continuous: the point mass is just ties then
    assert check_types(["continuous"] * 8, x[:, [0, 1, 5, 6, 7, 0, 1, 7]])[2] == "continuous"


@pytest.mark.parametrize(
    "column, given, message",
    [
        (4, "binary", r"column 4 \('t'\) is typed 'binary' but has 3 distinct .* exactly 2; type it 'ternary'"),
        (0, "ternary", r"column 0 \('a'\) is typed 'ternary' but has 120 distinct .* exactly 3; type it 'continuous'"),
        (0, "truncated", r"column 0 \('a'\) is typed 'truncated' but has a single observed row at its minimum"),
        (2, "continuous", r"column 2 \('b'\) is typed 'continuous' but has only 2 .* the binary type"),
        (4, "truncated", r"column 4 \('t'\) is typed 'truncated' but has only 3 .* the ternary type"),
    ],
)
def test_check_types_rejects_types_the_data_contradict(rng, column, given, message):
    x = _mixed(rng)
    names = ["a", "x1", "b", "b2", "t", "z1", "z2", "x7"]
    types = ["auto"] * 8
    types[column] = given
    with pytest.raises(ValueError, match=message + r".* or 'auto'"):
        check_types(types, x, names=names)


def test_check_types_rejects_bad_arguments(rng):
    x = _mixed(rng)
    with pytest.raises(ValueError, match=r"types: expected one of .*'auto'.*, got 'ordinal'"):
        check_types("ordinal", x)
    with pytest.raises(ValueError, match=r"types: expected 8 entries \(one per column of x\), got 2"):
        check_types(["binary", "auto"], x)
    with pytest.raises(ValueError, match=r"types: expected entries in .*, got 'bin' at column 1"):
        check_types(["auto", "bin"] + ["auto"] * 6, x)
    with pytest.raises(ValueError, match=r"names: expected 8 names"):
        check_types(None, x, names=["a"])
    with pytest.raises(ValueError, match=r"x: expected a 2-D array"):
        check_types(None, x[:, 0])
    x[4, 6] = np.inf
    with pytest.raises(ValueError, match=r"x: column 6 has infinite entries"):
        check_types(None, x)


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_zratios_are_level_shares_over_observed_rows(rng, missing):
    x = _mixed(rng, missing=missing)
    out = zratios(x, TYPES)
    assert out.shape == (2, 8)
    for j, t in enumerate(TYPES):
        col = x[~np.isnan(x[:, j]), j]
        levels = np.unique(col)
        if t == "continuous":
            assert np.isnan(out[:, j]).all()
        elif t == "ternary":
            assert_allclose(out[:, j], [np.mean(col == levels[0]), np.mean(col <= levels[1])], rtol=1e-15)
        else:
            assert out[0, j] == np.mean(col == levels[0]) and np.isnan(out[1, j])


# ---- ranks and pair statistics ---------------------------------------------------------


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_midranks_match_scipy(rng, missing):
    x = _mixed(rng, missing=missing)
    out = midranks(x)
    assert out.dtype == np.float64
    assert_array_equal(out, rankdata(x, axis=0, nan_policy="omit"))


@pytest.mark.parametrize("continuous", ["spearman", "kendall"])
@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_pair_statistics_match_the_reference_on_every_pair(rng, missing, continuous):
    x = _mixed(rng, n=150, missing=missing)
    stat, counts = pair_statistics(x, TYPES, continuous=continuous)
    assert_allclose(stat, _reference(x, TYPES, continuous), rtol=0, atol=1e-12)
    assert_array_equal(stat, stat.T)
    if missing:
        observed = (~np.isnan(x)).astype(int)
        assert_array_equal(counts, observed.T @ observed)
    else:
        assert counts is None


def test_pair_statistics_with_complete_and_incomplete_columns(rng):
    # the complete columns' pairs come from the product, the others from the kernels: both exact
    x = _mixed(rng, n=100, missing=0.0)
    x[rng.random(100) < 0.3, 3] = np.nan
    x[rng.random(100) < 0.3, 7] = np.nan
    stat, counts = pair_statistics(x, "auto")
    assert_allclose(stat, _reference(x, TYPES), rtol=0, atol=1e-12)
    assert counts[0, 1] == 100 and counts[3, 7] == np.sum(~np.isnan(x[:, 3]) & ~np.isnan(x[:, 7]))


def test_pair_statistics_undefined_pairs_are_nan():
    nan = np.nan
    x = np.array(
        [[0, nan, 5, 1], [1, nan, 5, 2], [0, nan, 1, 3], [nan, 1, 1, 4], [nan, 2, 2, 5], [1, 3, 2, 6]], dtype=float
    )
    with pytest.warns(EstimationWarning, match=r"column 3: 6"):
        stat, counts = pair_statistics(x, ["binary", "ternary", "ternary", "continuous"])
    # columns 0 and 1 share one complete row: nothing to rank
    assert np.isnan(stat[0, 1]) and counts[0, 1] == 1
    assert_allclose(stat[2, 3], _tau_a(x[:, 2], x[:, 3]), atol=1e-15)
    with pytest.raises(ValueError, match=r"continuous: expected one of \('spearman', 'kendall'\), got 'pearson'"):
        pair_statistics(x, "auto", continuous="pearson")


def test_rank_scores_reproduce_tau_and_spearman(rng):
    x = _mixed(rng, n=90)
    n = x.shape[0]
    psi = rank_scores(x, TYPES)
    assert_allclose(psi.sum(axis=0), 0.0, atol=1e-12)
    c_n = 8.0 / (n - 1)
    for b in (2, 3):
        for y in range(x.shape[1]):
            assert_allclose(c_n * psi[:, b] @ psi[:, y], _tau_a(x[:, b], x[:, y]), rtol=0, atol=1e-13)
    assert_allclose(np.corrcoef(psi[:, [0, 1, 7]], rowvar=False), spearmanr(x[:, [0, 1, 7]])[0], atol=1e-13)


def test_rank_scores_with_missing_entries(rng):
    x = _mixed(rng, missing=0.3)
    psi = rank_scores(x)
    observed = ~np.isnan(x)
    assert_array_equal(np.isnan(psi), ~observed)
    n_j = observed.sum(axis=0)
    assert_allclose(psi, (rankdata(x, axis=0, nan_policy="omit") - (n_j + 1) / 2) / n_j, rtol=1e-15)


def test_timing_smoke_half_binary_half_continuous():
    rng = np.random.default_rng(7)
    n, p = 20_000, 100
    x = rng.standard_normal((n, p))
    x[:, : p // 2] = x[:, : p // 2] > 0.3
    types = ["binary"] * (p // 2) + ["continuous"] * (p // 2)
    pair_statistics(x[:50], types)  # compile / load the kernels outside the clock
    start = time.perf_counter()
    stat, _ = pair_statistics(x, types)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    np.corrcoef(x, rowvar=False)
    print(f"pair_statistics {elapsed:.3f} s, {elapsed / (time.perf_counter() - start):.1f} x np.corrcoef")
    assert elapsed < 5.0
    assert np.all(np.abs(stat[np.triu_indices(p, 1)]) < 0.05)  # independent columns: |tau|, |rho| ~ 1/sqrt(n)
