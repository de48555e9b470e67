"""Partial spectral decompositions (Lanczos with a LAPACK fallback) against full LAPACK."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hclstat.utils import eigenvalues_above, singular_values_above, top_eigh, top_singular_values, top_svd


def _spiked(shape, spikes, seed):
    """Noise plus ``spikes`` strong directions: the shape of a sample cross-covariance."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal(shape) / np.sqrt(shape[1])
    k = len(spikes)
    U = np.linalg.qr(rng.standard_normal((shape[0], k)))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], k)))[0]
    return C + (U * np.asarray(spikes)) @ V.T


# small shapes go to LAPACK, large ones to Lanczos
SHAPES = [(40, 70), (300, 200), (700, 1100)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 3, 12])
def test_top_singular_values_match_lapack(shape, k):
    C = _spiked(shape, [30.0, 20.0, 10.0, 5.0], seed=k)
    s = np.linalg.svd(C, compute_uv=False)
    assert_allclose(top_singular_values(C, k), s[:k], rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_singular_values_above_returns_exactly_those_above(shape):
    # 20 spikes: more than the first Lanczos request (8), so the count must double
    spikes = np.linspace(40.0, 5.0, 20)
    C = _spiked(shape, spikes, seed=1)
    s = np.linalg.svd(C, compute_uv=False)
    for cut in (0, 3, 19, 20, 25):
        tau = 0.5 * (s[cut] + s[cut + 1])  # between two singular values
        got = singular_values_above(C, tau)
        assert got.size == cut + 1
        assert_allclose(got, s[: cut + 1], rtol=1e-10)
    # nothing above: the largest value is still returned (the lattice reports it)
    got = singular_values_above(C, 2 * s[0])
    assert_allclose(got, s[:1], rtol=1e-10)


@pytest.mark.parametrize("p", [50, 400])
def test_top_eigh_and_eigenvalues_above_match_lapack(p):
    C = _spiked((p, p + 50), np.linspace(30.0, 3.0, 12), seed=p)
    S = C @ C.T
    w, V = np.linalg.eigh(S)
    w, V = w[::-1], V[:, ::-1]
    wk, Vk = top_eigh(S, 5)
    assert_allclose(wk, w[:5], rtol=1e-10)
    # eigenvectors up to sign
    assert_allclose(np.abs(np.sum(Vk * V[:, :5], axis=0)), 1.0, atol=1e-8)
    for cut in (0, 9, 11):
        tau = 0.5 * (w[cut] + w[cut + 1])
        assert_allclose(eigenvalues_above(S, tau), w[: cut + 1], rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_top_svd_gives_singular_triplets(shape):
    C = _spiked(shape, [30.0, 20.0, 10.0], seed=3)
    U, s, Vt = top_svd(C, 3)
    assert_allclose(s, np.linalg.svd(C, compute_uv=False)[:3], rtol=1e-10)
    assert_allclose(C @ Vt.T, U * s, atol=1e-9 * s[0])
    assert_allclose(U.T @ U, np.eye(3), atol=1e-10)


def test_results_do_not_depend_on_arpack_seeding():
    # a fixed start vector: repeated calls are bit-identical
    C = _spiked((600, 900), [30.0, 20.0, 10.0], seed=4)
    assert np.array_equal(top_singular_values(C, 4), top_singular_values(C, 4))
    S = C @ C.T
    assert np.array_equal(top_eigh(S, 3)[0], top_eigh(S, 3)[0])


def test_degenerate_requests():
    C = np.ones((5, 3))
    assert top_singular_values(C, 0).shape == (0,)
    w, V = top_eigh(np.eye(4), 0)
    assert w.shape == (0,) and V.shape == (4, 0)
    assert singular_values_above(np.zeros((0, 3)), 1.0).shape == (0,)
    # k above the smaller side is clipped to it
    assert top_singular_values(C, 10).shape == (3,)
