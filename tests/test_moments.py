"""Tests for :mod:`hclstat.moments` (and the view validation of :mod:`hclstat.data`)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from hclstat.data import check_views
from hclstat.model import HierarchicalModel
from hclstat.moments import Moments, compute_moments, moments_from_covariance


@pytest.fixture
def views(hierarchy, rng):
    model = HierarchicalModel.random(hierarchy, random_state=rng)
    out, _ = model.sample(300, random_state=rng)
    # a large common offset: centring must not cancel catastrophically
    return {m: x + 50.0 for m, x in out.items()}


def _stack(views):
    return np.concatenate(list(views.values()), axis=1)


def _with_nans(views, rng, frac=0.15):
    out = {}
    for m, x in views.items():
        x = x.copy()
        x[rng.uniform(size=x.shape) < frac] = np.nan
        out[m] = x
    return out


def _pairwise_reference(X, ddof=1):
    """Brute force: each pair of features on the rows where both are observed."""
    p = X.shape[1]
    cov = np.empty((p, p))
    counts = np.empty((p, p), dtype=np.int64)
    obs = ~np.isnan(X)
    for i in range(p):
        for j in range(p):
            rows = obs[:, i] & obs[:, j]
            xi, xj = X[rows, i], X[rows, j]
            counts[i, j] = rows.sum()
            cov[i, j] = np.sum((xi - xi.mean()) * (xj - xj.mean())) / (rows.sum() - ddof)
    return cov, counts


# ---------------------------------------------------------- complete data
def test_complete_data_equals_np_cov(views, hierarchy):
    mom = compute_moments(views)
    X = _stack(views)
    assert isinstance(mom, Moments)
    assert mom.modalities == ("a", "b", "c")
    assert mom.dims == hierarchy.dims
    assert mom.n_samples == 300
    assert mom.counts is None and not mom.has_missing
    assert_allclose(mom.covariance, np.cov(X, rowvar=False), rtol=0, atol=1e-12)
    assert_allclose(mom.means, X.mean(axis=0), rtol=1e-14)
    assert_allclose(mom.covariance, mom.covariance.T, rtol=0, atol=1e-14)
    assert mom.feature_names == {"a": None, "b": None, "c": None}


def test_ddof(views):
    X = _stack(views)
    mom = compute_moments(views, ddof=0)
    assert_allclose(mom.covariance, np.cov(X, rowvar=False, ddof=0), rtol=0, atol=1e-12)


def test_blocks_and_counts_complete(views, hierarchy):
    mom = compute_moments(views)
    sl = hierarchy.feature_slices()
    assert mom.slices == sl
    for a in "abc":
        for b in "abc":
            assert_array_equal(mom.block(a, b), mom.covariance[sl[a], sl[b]])
            assert mom.block_count(a, b) == 300
    assert_array_equal(mom.count_table(), np.full((3, 3), 300))
    with pytest.raises(ValueError, match=r"unknown modality 'z'; known modalities are \['a', 'b', 'c'\]"):
        mom.block("a", "z")


def test_single_modality(views):
    mom = compute_moments({"b": views["b"]})
    assert_allclose(mom.covariance, np.cov(views["b"], rowvar=False), rtol=0, atol=1e-12)


# -------------------------------------------------------- missing entries
def test_pairwise_complete_equals_brute_force(views, rng):
    holey = _with_nans(views, rng)
    X = _stack(holey)
    mom = compute_moments(holey)
    ref_cov, ref_counts = _pairwise_reference(X)
    assert mom.has_missing
    assert mom.n_samples == 300
    assert_array_equal(mom.counts, ref_counts)
    assert_allclose(mom.covariance, ref_cov, rtol=0, atol=1e-10)
    assert_allclose(mom.means, np.nanmean(X, axis=0), rtol=0, atol=1e-10)
    # pandas agrees too (its .cov is pairwise-complete)
    assert_allclose(mom.covariance, pd.DataFrame(X).cov().to_numpy(), rtol=0, atol=1e-10)


def test_pairwise_counts_by_hand():
    a = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.nan], [4.0, 0.0], [5.0, 7.0]])
    b = np.array([[0.0], [1.0], [np.nan], [2.0], [np.nan]])
    mom = compute_moments({"a": a, "b": b})
    expected = np.array([[4, 3, 2], [3, 4, 3], [2, 3, 3]])
    assert_array_equal(mom.counts, expected)
    assert mom.block_count("a", "a") == 3
    assert mom.block_count("a", "b") == 2
    assert_array_equal(mom.count_table(), [[3, 2], [2, 3]])
    # features a0 and b0 jointly observed on rows 0 and 3: values (1, 0) and (4, 2)
    assert_allclose(mom.covariance[0, 2], np.cov([1.0, 4.0], [0.0, 2.0])[0, 1], rtol=1e-14)


def test_pairwise_ddof0(views, rng):
    holey = _with_nans(views, rng)
    mom = compute_moments(holey, ddof=0)
    ref_cov, _ = _pairwise_reference(_stack(holey), ddof=0)
    assert_allclose(mom.covariance, ref_cov, rtol=0, atol=1e-10)


# ------------------------------------------------------------------- dask
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "nan"])
def test_dask_equals_numpy(views, rng, missing):
    src = _with_nans(views, rng) if missing else views
    lazy = {m: da.from_array(x, chunks=(37, 4)) for m, x in src.items()}
    ref = compute_moments(src)
    got = compute_moments(lazy)
    assert got.n_samples == ref.n_samples
    assert got.dims == ref.dims
    assert_allclose(got.covariance, ref.covariance, rtol=0, atol=1e-10)
    assert_allclose(got.means, ref.means, rtol=0, atol=1e-10)
    assert isinstance(got.covariance, np.ndarray)
    if missing:
        assert_array_equal(got.counts, ref.counts)
    else:
        assert got.counts is None


def test_dask_mixed_with_numpy(views):
    mixed = {"a": da.from_array(views["a"], chunks=(50, 8)), "b": views["b"], "c": views["c"]}
    assert_allclose(compute_moments(mixed).covariance, compute_moments(views).covariance, rtol=0, atol=1e-10)


def test_dask_input_errors():
    with pytest.raises(ValueError, match="modality 'a': expected a 2-D array, got 1 dimensions"):
        compute_moments({"a": da.ones(10, chunks=5)})
    with pytest.raises(ValueError, match="modality 'a': expected a numeric array, got dtype"):
        compute_moments({"a": da.from_array(np.array([["x", "y"], ["z", "w"]]), chunks=1)})


# ------------------------------------------------------------- DataFrames
def test_dataframe_keeps_feature_names(views, rng):
    frames = {
        m: pd.DataFrame(x, columns=[f"{m}_{j}" for j in range(x.shape[1])]) for m, x in views.items()
    }
    mom = compute_moments(frames)
    assert mom.feature_names["a"] == [f"a_{j}" for j in range(8)]
    assert mom.feature_names["c"][-1] == "c_11"
    assert_allclose(mom.covariance, compute_moments(views).covariance, rtol=0, atol=1e-12)


def test_dataframe_with_missing_and_series():
    df = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "n": pd.array([1, 2, None, 5], dtype="Int64")})
    s = pd.Series([0.5, 1.0, 2.0, 0.0], name="s")
    mom = compute_moments({"a": df, "b": s})
    assert mom.feature_names == {"a": ["x", "n"], "b": ["s"]}
    ref, counts = _pairwise_reference(
        np.array([[1, 1, 0.5], [np.nan, 2, 1.0], [3, np.nan, 2.0], [4, 5, 0.0]], dtype=float)
    )
    assert_array_equal(mom.counts, counts)
    assert_allclose(mom.covariance, ref, rtol=0, atol=1e-12)


def test_list_input_is_named_view0_view1(views):
    mom = compute_moments([views["a"], views["b"]])
    assert mom.modalities == ("view0", "view1")
    assert mom.dims == {"view0": 8, "view1": 10}
    assert_allclose(mom.block("view1", "view0"), compute_moments(views).block("b", "a"), rtol=0, atol=1e-12)


def test_modalities_argument_orders_and_checks(views):
    mom = compute_moments(views, modalities=["c", "a", "b"])
    assert mom.modalities == ("c", "a", "b")
    assert_allclose(mom.block("a", "c"), compute_moments(views).block("a", "c"), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"views: expected modalities \['a', 'b', 'd'\], got \['a', 'b', 'c'\] "
                                         r"\(missing \['d'\]\) \(unexpected \['c'\]\)"):
        compute_moments(views, modalities=["a", "b", "d"])


def test_boolean_columns_are_numeric():
    x = np.array([[True, False], [False, False], [True, True]])
    mom = compute_moments({"a": x})
    assert_allclose(mom.covariance, np.cov(x.astype(float), rowvar=False), rtol=0, atol=1e-15)


# ----------------------------------------------------------------- errors
def test_error_inf_names_modality_row_and_column(views):
    bad = dict(views)
    bad["b"] = views["b"].copy()
    bad["b"][7, 3] = -np.inf
    with pytest.raises(ValueError, match=r"modality 'b': infinite value at row 7, column 3; remove or replace"):
        compute_moments(bad)
    frame = pd.DataFrame(bad["b"], columns=[f"lab{j}" for j in range(10)])
    with pytest.raises(ValueError, match=r"modality 'b': infinite value at row 7, column 3 \('lab3'\)"):
        compute_moments({"a": views["a"], "b": frame})


def test_error_misaligned_rows(views):
    bad = dict(views)
    bad["c"] = views["c"][:-1]
    with pytest.raises(ValueError, match=r"views: row counts differ across modalities \{'a': 300, 'b': 300, 'c': 299\}"):
        compute_moments(bad)


def test_error_non_numeric_columns():
    df = pd.DataFrame({"age": [1.0, 2.0, 3.0], "sex": ["f", "m", "f"], "ward": ["x", "y", "z"]})
    with pytest.raises(ValueError, match=r"modality 'clin': non-numeric columns \['sex', 'ward'\]; encode them"):
        compute_moments({"clin": df})
    with pytest.raises(ValueError, match="modality 'a': expected numeric values, got dtype <U1"):
        compute_moments({"a": np.array([["a", "b"], ["c", "d"]])})
    with pytest.raises(ValueError, match="modality 'a': expected numeric values, got dtype object"):
        compute_moments({"a": np.array([[1, None], [2, 3]], dtype=object)})


def test_error_fewer_than_two_rows():
    with pytest.raises(ValueError, match=r"views: need at least 2 rows \(samples\), got 1"):
        compute_moments({"a": np.ones((1, 3)), "b": np.ones((1, 2))})


def test_error_one_dimensional_array():
    with pytest.raises(ValueError, match=r"modality 'a': expected a 2-D array \(n_samples, p_m\), got shape \(5,\); "
                                         r"use x.reshape\(-1, 1\)"):
        compute_moments({"a": np.arange(5.0)})


def test_error_list_input_names_views_in_messages():
    with pytest.raises(ValueError, match=r"modality 'view1': expected a 2-D array"):
        compute_moments([np.ones((4, 2)), np.arange(4.0)])
    x = np.zeros((4, 2))
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match="modality 'view0': infinite value at row 2, column 1"):
        compute_moments([x, np.ones((4, 2))])


def test_error_pair_never_observed_together():
    a = np.array([[1.0], [2.0], [np.nan], [np.nan]])
    b = np.array([[np.nan], [np.nan], [3.0], [5.0]])
    with pytest.raises(ValueError, match=r"features 'a' column 0 and 'b' column 0 are observed together in only 0 rows; "
                                         r"their covariance is undefined"):
        compute_moments({"a": a, "b": b})
    names = pd.DataFrame(b, columns=["hb"])
    with pytest.raises(ValueError, match=r"features 'a' column 0 and 'b' column 0 \('hb'\) are observed together in only 0"):
        compute_moments({"a": a, "b": names})


def test_error_pair_observed_together_once():
    a = np.array([[1.0], [2.0], [4.0], [np.nan]])
    b = np.array([[np.nan], [np.nan], [3.0], [5.0]])
    with pytest.raises(ValueError, match="observed together in only 1 rows"):
        compute_moments({"a": a, "b": b})


def test_error_column_with_too_few_observations():
    a = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 1.0]])
    with pytest.raises(ValueError, match=r"modality 'a': column 1 has only 1 observed values \(need at least 2\)"):
        compute_moments({"a": a})


def test_error_container_types():
    with pytest.raises(ValueError, match="views: expected at least one modality, got an empty mapping"):
        compute_moments({})
    with pytest.raises(ValueError, match="views: expected at least one modality, got an empty list"):
        compute_moments([])
    with pytest.raises(TypeError, match="views: modality names must be str, got 0"):
        compute_moments({0: np.ones((3, 2))})
    with pytest.raises(TypeError, match="views: expected a dict modality name -> 2-D array/DataFrame"):
        compute_moments(np.ones((3, 2)))
    with pytest.raises(ValueError, match="modality 'a': has no columns"):
        compute_moments({"a": np.ones((3, 0))})


def test_check_views_without_missing():
    x = np.ones((3, 2))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"modality 'a': missing value \(NaN\) at row 1, column 0; this operation needs"):
        check_views({"a": x}, allow_missing=False)
    arrays, names = check_views({"a": np.ones((3, 2), dtype=np.int32)})
    assert arrays["a"].dtype == np.float64 and names == {"a": None}


# ------------------------------------------------ moments_from_covariance
def test_moments_from_covariance(hierarchy):
    model = HierarchicalModel.random(hierarchy, random_state=0)
    sigma = model.covariance()
    mom = moments_from_covariance(sigma, hierarchy.dims, 1000)
    assert mom.modalities == ("a", "b", "c")
    assert mom.n_samples == 1000 and mom.counts is None
    assert_allclose(mom.block("a", "c"), model.cross_covariance("a", "c"), rtol=0, atol=1e-15)
    assert_array_equal(mom.means, np.zeros(30))
    with pytest.raises(ValueError, match=r"covariance: expected shape \(30, 30\) from dims"):
        moments_from_covariance(sigma[:-1, :-1], hierarchy.dims, 10)
    skew = sigma.copy()
    skew[0, 1] += 1.0
    with pytest.raises(ValueError, match="covariance: expected a symmetric matrix"):
        moments_from_covariance(skew, hierarchy.dims, 10)


@pytest.mark.parametrize("missing", [False, True])
def test_check_views_scans_without_a_full_mask(rng, missing):
    # validation must not allocate an n x p mask (or copy) of a large input: clean
    # data is cleared by its column sums, dirty data is scanned in row chunks
    import tracemalloc

    x = rng.standard_normal((10_000, 500))  # 40 MB; the scan's chunks hold ~1 MB masks
    if missing:
        x[rng.random(x.shape) < 0.01] = np.nan
    tracemalloc.start()
    try:
        check_views({"a": x})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * x.nbytes, peak


def test_moment_pass_forms_one_p_by_p_matrix(rng):
    # the accumulator is symmetrised and centred in place: the pass allocates one
    # p x p matrix and one chunk buffer, never an n x p copy or p x p temporaries
    import tracemalloc

    from hclstat.moments import _CHUNK_ENTRIES

    n, p = 3000, 1200
    views = {"a": rng.standard_normal((n, 500)), "b": rng.standard_normal((n, 700)) + 3.0}
    tracemalloc.start()
    try:
        mom = compute_moments(views)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    budget = 8 * p * p + 8 * p * min(n, _CHUNK_ENTRIES // p)
    assert peak < 1.15 * budget, (peak, budget)
    X = np.hstack([views["a"], views["b"]])
    assert_allclose(mom.covariance, np.cov(X.T), rtol=0, atol=1e-12)
    assert mom.covariance.flags.c_contiguous
