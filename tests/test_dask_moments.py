"""Out-of-core moments: dask arrays from NumPy, a NumPy memmap, chunked Parquet and Zarr.

Each source must give the in-memory moments of the same numbers to 1e-10
(covariance, means and, with missing entries, the pairwise counts exactly).
"""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from hclstat.model import HierarchicalModel
from hclstat.moments import compute_moments

# dask's Parquet reader calls a pandas API that pandas 3.1 deprecates; not about hclstat
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")

N_ROWS = 403  # not a multiple of any chunk size below


@pytest.fixture
def views(hierarchy, rng):
    model = HierarchicalModel.random(hierarchy, random_state=rng)
    out, _ = model.sample(N_ROWS, random_state=rng)
    # a large common offset: the one-pass formula must not cancel catastrophically
    return {m: x + 1e3 for m, x in out.items()}


def _holey(views, rng, frac=0.1):
    out = {}
    for m, x in views.items():
        x = x.copy()
        x[rng.uniform(size=x.shape) < frac] = np.nan
        out[m] = x
    return out


def _from_numpy(views, tmp_path, chunks):
    return {m: da.from_array(x, chunks=(chunks, -1)) for m, x in views.items()}


def _from_memmap(views, tmp_path, chunks):
    out = {}
    for m, x in views.items():
        mm = np.lib.format.open_memmap(tmp_path / f"{m}.npy", mode="w+", dtype=np.float64, shape=x.shape)
        for i in range(0, x.shape[0], 100):  # written in row chunks, as a large file would be
            mm[i : i + 100] = x[i : i + 100]
        mm.flush()
        del mm
        ro = np.load(tmp_path / f"{m}.npy", mmap_mode="r")
        assert isinstance(ro, np.memmap)
        out[m] = da.from_array(ro, chunks=(chunks, -1))
    return out


def _from_parquet(views, tmp_path, chunks):
    """One Parquet dataset per modality, written in partitions of ``chunks`` rows."""
    out = {}
    for m, x in views.items():
        frame = pd.DataFrame(x, columns=[f"{m}{j}" for j in range(x.shape[1])])
        path = tmp_path / f"{m}.parquet"
        dd.from_pandas(frame, chunksize=chunks).to_parquet(path, write_index=False)
        table = dd.read_parquet(path)
        assert table.npartitions > 1
        out[m] = table.to_dask_array(lengths=True)
    return out


def _from_zarr(views, tmp_path, chunks):
    """One Zarr array per modality, stored in row chunks of ``chunks`` rows."""
    out = {}
    for m, x in views.items():
        path = str(tmp_path / f"{m}.zarr")
        da.from_array(x, chunks=(chunks, -1)).to_zarr(path)
        arr = da.from_zarr(path)
        assert arr.numblocks[0] > 1
        out[m] = arr
    return out


SOURCES = {"numpy": _from_numpy, "memmap": _from_memmap, "parquet": _from_parquet, "zarr": _from_zarr}


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "nan"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_dask_source_equals_in_memory(views, rng, tmp_path, source, missing):
    src = _holey(views, rng) if missing else views
    lazy = SOURCES[source](src, tmp_path, chunks=64)
    assert all(isinstance(a, da.Array) for a in lazy.values())
    ref = compute_moments(src)
    got = compute_moments(lazy)
    assert got.modalities == ref.modalities
    assert got.dims == ref.dims
    assert got.n_samples == N_ROWS
    assert isinstance(got.covariance, np.ndarray)
    assert_allclose(got.covariance, ref.covariance, rtol=0, atol=1e-10)
    assert_allclose(got.means, ref.means, rtol=0, atol=1e-10)
    if missing:
        assert_array_equal(got.counts, ref.counts)
    else:
        assert got.counts is None


@pytest.mark.parametrize("chunks", [1000, 400, 7])
def test_chunk_sizes_do_not_matter(views, tmp_path, chunks):
    """One chunk, a last chunk of 3 rows, and many tiny chunks give the same moments."""
    ref = compute_moments(views)
    got = compute_moments(_from_numpy(views, tmp_path, chunks))
    assert_allclose(got.covariance, ref.covariance, rtol=0, atol=1e-10)


def test_misaligned_row_chunks_across_modalities(views, tmp_path):
    """Modalities chunked differently (as separate files are) are stacked correctly."""
    lazy = {
        "a": da.from_array(views["a"], chunks=(50, -1)),
        "b": da.from_array(views["b"], chunks=(130, 4)),
        "c": _from_parquet({"c": views["c"]}, tmp_path, chunks=90)["c"],
    }
    assert_allclose(compute_moments(lazy).covariance, compute_moments(views).covariance, rtol=0, atol=1e-10)


def test_memmap_in_memory_path_equals_array(views, tmp_path):
    """A memmap handed over directly (not through dask) takes the chunked dsyrk path unchanged."""
    mm = {}
    for m, x in views.items():
        np.save(tmp_path / f"{m}.npy", x)
        mm[m] = np.load(tmp_path / f"{m}.npy", mmap_mode="r")
    assert_allclose(compute_moments(mm).covariance, compute_moments(views).covariance, rtol=0, atol=1e-12)


def test_dask_ddof0_and_block_missing(views, tmp_path):
    """Rows where one modality is absent (block-missing) give the pairwise counts exactly."""
    holey = {m: x.copy() for m, x in views.items()}
    holey["c"][:120] = np.nan
    ref = compute_moments(holey, ddof=0)
    got = compute_moments(_from_memmap(holey, tmp_path, chunks=50), ddof=0)
    assert_array_equal(got.counts, ref.counts)
    assert got.block_count("a", "c") == N_ROWS - 120
    assert_allclose(got.covariance, ref.covariance, rtol=0, atol=1e-10)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_pairwise_moments_with_large_means(rng, lazy):
    """Missing entries and column means of 1e5: no cancellation in the pairwise formula."""
    X = rng.standard_normal((403, 12)) + 1e5 * rng.uniform(0.5, 1.5, size=12)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    X[:60, :4] = np.nan  # the first chunk has no value in these columns
    src = {"a": da.from_array(X, chunks=(50, -1)) if lazy else X}
    mom = compute_moments(src)
    assert_allclose(mom.covariance, pd.DataFrame(X).cov().to_numpy(), rtol=0, atol=1e-9)
    assert_allclose(mom.means, np.nanmean(X, axis=0), rtol=1e-14)


def test_hcl_fits_dask_views_as_it_fits_arrays(tmp_path):
    # the whole fit from lazy views (Zarr here): moments by dask, the permutation
    # row subsample (n > permutation_rows) gathered from the chunks; same result
    import warnings

    from hclstat import HCL, Hierarchy

    h = Hierarchy({"a": 20, "b": 25, "c": 30}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "c": 1})
    model = HierarchicalModel.random(h, loading_scale=0.5, random_state=3)
    views, _ = model.sample(1500, random_state=4)
    lazy = _from_zarr(views, tmp_path, chunks=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = HCL(random_state=0, permutation_rows=700).fit(views)
        out = HCL(random_state=0, permutation_rows=700).fit(lazy)
    assert dense.hierarchy_ == h and out.hierarchy_ == h
    for s, blocks in dense.loadings_.items():
        for m, A in blocks.items():
            assert_allclose(out.loadings_[s][m], A, rtol=1e-6, atol=1e-8)
