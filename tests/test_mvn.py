"""Tests of hclstat.moments.mvn: bivariate and tri/quadrivariate normal CDFs."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate, stats
from scipy.special import ndtr

from hclstat.moments.mvn import bvn_cdf, mvn_cdf


def _random_corr(rng, d, near_singular=False):
    """A random correlation matrix; near-singular: rank d - 1 plus a 1e-3 perturbation."""
    a = rng.normal(size=(d, d if not near_singular else d - 1))
    if near_singular:
        a = np.hstack([a, 1e-3 * rng.normal(size=(d, 1))])
    s = a @ a.T
    sd = np.sqrt(np.diag(s))
    return s / np.outer(sd, sd)


def _conditioned_quad(u, c, i, inner):
    """P(X <= u) by adaptive quadrature over x_i of phi(x_i) times ``inner`` of the rest given x_i."""
    o = [a for a in range(len(u)) if a != i]
    b = c[o, i]
    cov = c[np.ix_(o, o)] - np.outer(b, b)
    sd = np.sqrt(np.diag(cov))
    cond = cov / np.outer(sd, sd)
    np.fill_diagonal(cond, 1.0)

    def f(z):
        return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi) * inner((u[o] - b * z) / sd, cond)

    return integrate.quad(f, -12.0, u[i], epsabs=1e-14, epsrel=1e-13, limit=1000)[0]


def test_bvn_matches_scipy_including_axes_and_near_singular(rng):
    m = 40
    h, k = rng.normal(0, 2, m), rng.normal(0, 2, m)
    rho = rng.uniform(-1, 1, m)
    rho[:10] = np.sign(rho[:10]) * (1 - 10.0 ** rng.uniform(-12, -3, 10))
    h[10:15], k[13:18] = 0.0, 0.0
    ref = [stats.multivariate_normal.cdf([a, b], cov=[[1, r], [r, 1]], abseps=1e-12, releps=1e-12,
                                         allow_singular=True) for a, b, r in zip(h, k, rho)]
    assert_allclose(bvn_cdf(h, k, rho), ref, rtol=0, atol=1e-12)


def test_bvn_special_values():
    rho = np.array([-0.9, -0.3, 0.0, 0.4, 0.95])
    assert_allclose(bvn_cdf(0.0, 0.0, rho), 0.25 + np.arcsin(rho) / (2 * np.pi), atol=1e-15)
    assert_allclose(bvn_cdf(0.3, -0.5, 0.0), ndtr(0.3) * ndtr(-0.5), atol=1e-15)
    h, k = np.array([-1.0, 0.2, 1.5]), np.array([0.5, 0.2, -0.4])
    assert_allclose(bvn_cdf(h, k, 1.0), ndtr(np.minimum(h, k)), atol=1e-15)
    assert_allclose(bvn_cdf(h, k, -1.0), np.maximum(ndtr(h) - ndtr(-k), 0), atol=1e-15)
    assert_allclose(bvn_cdf(h, k, 1 - 1e-13), ndtr(np.minimum(h, k)), atol=1e-6)
    assert_allclose(bvn_cdf(np.inf, k, 0.7), ndtr(k), atol=1e-15)
    assert_allclose(bvn_cdf(-np.inf, k, 0.7), 0.0, atol=1e-15)
    assert bvn_cdf(np.inf, np.inf, -0.2) == pytest.approx(1.0)
    assert np.isnan(bvn_cdf(np.nan, 0.0, 0.5)) and np.isnan(bvn_cdf(0.0, 0.0, np.nan))
    with pytest.raises(ValueError, match=r"correlations in \[-1, 1\]"):
        bvn_cdf(0.0, 0.0, 1.5)


@pytest.mark.parametrize("near_singular", [False, True])
def test_trivariate_matches_adaptive_quadrature(rng, near_singular):
    corr = np.array([_random_corr(rng, 3, near_singular) for _ in range(25)])
    upper = rng.normal(0, 1.5, (25, 3))

    def inner(lim, cond):
        return bvn_cdf(lim[0], lim[1], cond[0, 1])

    # median over the three conditioning coordinates guards against a quadrature that misses a spike
    ref = [np.median([_conditioned_quad(u, c, i, inner) for i in range(3)]) for u, c in zip(upper, corr)]
    assert_allclose(mvn_cdf(upper, corr), ref, rtol=0, atol=5e-8)


def test_quadrivariate_matches_quadrature_over_trivariate(rng):
    corr = np.array([_random_corr(rng, 4, k % 2 == 1) for k in range(8)])
    upper = rng.normal(0, 1.5, (8, 4))

    def inner(lim, cond):
        return mvn_cdf(lim, cond)

    ref = [_conditioned_quad(u, c, 0, inner) for u, c in zip(upper, corr)]
    assert_allclose(mvn_cdf(upper, corr), ref, rtol=0, atol=5e-8)


@pytest.mark.parametrize("d", [3, 4])
def test_matches_scipy_genz(rng, d):
    corr = np.array([_random_corr(rng, d) for _ in range(3)])
    upper = rng.normal(0, 1.0, (3, d))
    ref = [stats.multivariate_normal.cdf(u, cov=c, abseps=1e-8, releps=0, maxpts=10 ** 6, rng=np.random.default_rng(5))
           for u, c in zip(upper, corr)]
    # scipy's randomised lattice meets abseps only in probability; 1e-6 is its observed worst error
    assert_allclose(mvn_cdf(upper, corr), ref, rtol=0, atol=1e-6)


def test_reductions_and_batching(rng):
    c = _random_corr(rng, 3)
    u = np.array([0.3, -0.2, 0.5])
    # an infinite limit drops a coordinate; independence factorises
    assert_allclose(mvn_cdf([np.inf, u[1], u[2]], c), bvn_cdf(u[1], u[2], c[1, 2]), atol=1e-12)
    assert_allclose(mvn_cdf([-np.inf, u[1], u[2]], c), 0.0, atol=1e-15)
    block = np.eye(4)
    block[2, 3] = block[3, 2] = 0.6
    v = np.array([0.1, -0.4, 0.8, 0.2])
    assert_allclose(mvn_cdf(v, block), ndtr(v[0]) * ndtr(v[1]) * bvn_cdf(v[2], v[3], 0.6), atol=1e-12)
    batch = mvn_cdf(np.stack([u, u + 0.1]), c)  # one matrix broadcast over two limits
    assert batch.shape == (2,)
    assert_allclose(batch[1], mvn_cdf(u + 0.1, c), atol=1e-15)
    assert np.isnan(mvn_cdf([np.nan, 0, 0], c))


def test_input_errors():
    with pytest.raises(ValueError, match=r"dimension d in \(2, 3, 4\)"):
        mvn_cdf(np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match=r"upper of shape \(\.\.\., 3\)"):
        mvn_cdf(np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="unit diagonal"):
        mvn_cdf(np.zeros(3), 2 * np.eye(3))
