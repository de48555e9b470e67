"""Tests of hclstat.moments.bridges and bridge_inverse: latent correlations from Kendall's tau."""

from __future__ import annotations

import time
import warnings
from itertools import combinations_with_replacement

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from hclstat.moments.bridge_inverse import R_EDGE, invert_bridge, latent_correlation, nearest_correlation
from hclstat.moments.bridges import (TYPES, bridge, bridge_slope_at_zero, spearman_bridge, spearman_inverse,
                                     tau_bound, tau_range)

PAIRS = list(combinations_with_replacement(TYPES, 2))
NAN2 = (np.nan, np.nan)


def _zr(kind, rng, m, lo=0.15, hi=0.85):
    """Random zratios (2, m) of a column type."""
    if kind == "continuous":
        return np.full((2, m), np.nan)
    if kind in ("binary", "truncated"):
        return np.vstack([rng.uniform(lo, hi, m), np.full(m, np.nan)])
    z = np.sort(rng.uniform(lo, hi, (2, m)), axis=0)
    z[1] = np.maximum(z[1], z[0] + 0.05)
    return z


def _observe(kind, z, zr):
    """The observed column of a latent standard normal column."""
    d = stats.norm.ppf(zr)
    if kind == "continuous":
        return np.exp(z)
    if kind == "binary":
        return (z > d[0]).astype(float)
    if kind == "truncated":
        return np.where(z > d[0], z - d[0], 0.0)
    return (z > d[0]).astype(float) + (z > d[1])


def _tau_a(x, y):
    """Kendall tau-a from scipy's tau-b and the tie counts."""
    n0 = len(x) * (len(x) - 1) / 2

    def tied(v):
        counts = np.unique(v, return_counts=True)[1]
        return np.sum(counts * (counts - 1) / 2)

    return stats.kendalltau(x, y).statistic * np.sqrt((n0 - tied(x)) * (n0 - tied(y))) / n0


@pytest.mark.parametrize("pair", PAIRS)
def test_matches_latentcor(pair, rng):
    with warnings.catch_warnings():  # latentcor imports pkg_resources (deprecated)
        warnings.simplefilter("ignore")
        from latentcor.latentcor import r_sol

    codes = sorted((TYPES.index(pair[0]), TYPES.index(pair[1])), reverse=True)
    first, second = TYPES[codes[0]], TYPES[codes[1]]
    m = 5
    r = rng.uniform(-0.95, 0.95, m)
    z1, z2 = _zr(first, rng, m), _zr(second, rng, m)
    mine = bridge(first, second, r, z1, z2)
    if codes == [0, 0]:
        ref = 2 / np.pi * np.arcsin(r)
    else:
        fun = getattr(r_sol, f"bridge_{codes[0]}{codes[1]}")
        ref = [fun(r_sol, r[i], z1[:, i], z2[:, i]) for i in range(m)]
    # latentcor calls scipy's multivariate normal CDF at its default abseps = 1e-5, up to 8 of them weighted
    assert_allclose(mine, ref, rtol=0, atol=1e-4)
    assert_allclose(bridge(second, first, r, z2, z1), mine, rtol=0, atol=1e-14)


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("r", [-0.45, 0.7])
def test_matches_monte_carlo(pair, r):
    rng = np.random.default_rng([20240611, PAIRS.index(pair), int(100 * r) + 100])
    zr1, zr2 = _zr(pair[0], rng, 1)[:, 0], _zr(pair[1], rng, 1)[:, 0]
    batches, n = 20, 10_000  # 200k draws; the batch means give the standard error
    taus = []
    for _ in range(batches):
        z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n)
        taus.append(_tau_a(_observe(pair[0], z[:, 0], zr1), _observe(pair[1], z[:, 1], zr2)))
    se = np.std(taus, ddof=1) / np.sqrt(batches)
    expected = bridge(pair[0], pair[1], [r], zr1, zr2)[0]
    assert abs(np.mean(taus) - expected) < 4 * se


def test_bridge_properties():
    zr = {"continuous": NAN2, "binary": (0.3, np.nan), "truncated": (0.6, np.nan), "ternary": (0.2, 0.7)}
    r = np.linspace(-0.99, 0.99, 41)
    for a, b in PAIRS:
        f = bridge(a, b, r, zr[a], zr[b])
        assert abs(bridge(a, b, [0.0], zr[a], zr[b])[0]) < 1e-12, (a, b)
        assert np.all(np.diff(f) > 0), (a, b)
        bound = tau_bound(a, b, zr[a], zr[b])
        lower, upper = tau_range(a, b, zr[a], zr[b])
        assert np.all((f > lower) & (f < upper) & (f <= bound)), (a, b)
        assert upper[0] <= bound[0] + 1e-8, (a, b)  # latentcor's bound is an upper bound of tau
    # binary-binary: F(1) = 2 (min p - p1 p2), F(-1) = 2 (max(0, p1 + p2 - 1) - p1 p2)
    lower, upper = tau_range("binary", "binary", (0.3, np.nan), (0.8, np.nan))
    assert_allclose([lower[0], upper[0]], [2 * (0.1 - 0.24), 2 * (0.3 - 0.24)], atol=1e-12)
    assert_allclose(tau_bound("binary", "binary", (0.3, np.nan), (0.8, np.nan)), upper, atol=1e-12)
    # truncated-binary at r = 1: tau = 2 P(z < D_b) P(z' > max(D_b, D_t))
    assert_allclose(tau_range("binary", "truncated", (0.3, np.nan), (0.6, np.nan))[1], 2 * 0.3 * 0.4, atol=1e-8)
    assert np.isnan(bridge("binary", "binary", [0.2, np.nan], (0.3, np.nan), (0.4, np.nan))[1])
    assert_allclose(spearman_inverse(spearman_bridge(r)), r, atol=1e-14)
    with pytest.raises(ValueError, match="type_k: expected one of"):
        bridge("binary", "count", [0.1], (0.3, np.nan))
    with pytest.raises(ValueError, match=r"zr_j: expected P\(x at its lower value\) in \(0, 1\)"):
        bridge("binary", "continuous", [0.1], (1.0, np.nan))
    with pytest.raises(ValueError, match=r"zr_k: expected 0 < P\(0\) < P\(0\) \+ P\(1\) < 1"):
        bridge("binary", "ternary", [0.1], (0.5, np.nan), (0.6, 0.4))


@pytest.mark.parametrize("pair", PAIRS)
def test_inversion_round_trip(pair, rng):
    r = np.tile(np.linspace(-0.95, 0.95, 39), 4)
    zj, zk = _zr(pair[0], rng, r.size, 0.2, 0.8), _zr(pair[1], rng, r.size, 0.2, 0.8)
    tau = bridge(pair[0], pair[1], r, zj, zk)
    r_hat, clipped = invert_bridge(tau, pair[1], pair[0], zk, zj)
    assert not clipped.any()
    # where the bridge is nearly flat tau does not determine r: check the residual there
    h = 1e-5
    slope = (bridge(*pair, r + h, zj, zk) - bridge(*pair, r - h, zj, zk)) / (2 * h)
    sharp = slope > 1e-3
    assert sharp.mean() > 0.9
    assert np.max(np.abs(r_hat - r)[sharp]) < 1e-6
    assert np.max(np.abs(bridge(*pair, r_hat, zj, zk) - tau)) < 1e-8


def test_inversion_bounds_and_nan():
    zj, zk = (0.3, np.nan), (0.6, np.nan)
    top = bridge("binary", "binary", [R_EDGE], zj, zk)[0]
    bottom = bridge("binary", "binary", [-R_EDGE], zj, zk)[0]
    bound = tau_bound("binary", "binary", zj, zk)[0]
    tau = np.array([bound + 0.01, bound, bottom - 0.01, np.nan, 0.5 * top, 0.999 * top])
    r, clipped = invert_bridge(tau, "binary", "binary", zj, zk)
    assert_allclose(r[:3], [R_EDGE, R_EDGE, -R_EDGE])
    assert clipped.tolist() == [True, True, True, False, False, False]
    assert np.isnan(r[3])
    assert np.all(np.abs(r[4:]) < R_EDGE)
    r_cc, clipped_cc = invert_bridge([1.0, 0.3], "continuous", "continuous")
    assert clipped_cc.tolist() == [True, False]
    assert_allclose(r_cc, [R_EDGE, np.sin(np.pi / 2 * 0.3)])


@pytest.mark.parametrize("pair", PAIRS)
def test_slope_at_zero_factorises(pair):
    zr = {"continuous": NAN2, "binary": (0.3, np.nan), "truncated": (0.6, np.nan), "ternary": (0.2, 0.7)}
    other = {"continuous": NAN2, "binary": (0.75, np.nan), "truncated": (0.25, np.nan), "ternary": (0.4, 0.55)}
    a, b = pair
    h = 1e-4
    fd = (bridge(a, b, [h], zr[a], other[b]) - bridge(a, b, [-h], zr[a], other[b]))[0] / (2 * h)
    slopes = bridge_slope_at_zero([a, b], np.column_stack([zr[a], other[b]]))
    assert fd == pytest.approx(slopes[0] * slopes[1], abs=1e-7)


def test_speed_binary_pairs(rng):
    m = 100_000
    for kind in ("binary", "continuous"):
        r = rng.uniform(-0.9, 0.9, m)
        zj, zk = _zr("binary", rng, m), _zr(kind, rng, m)
        tau = bridge("binary", kind, r, zj, zk)
        start = time.perf_counter()
        r_hat, _ = invert_bridge(tau, "binary", kind, zj, zk)
        elapsed = time.perf_counter() - start
        print(f"invert_bridge binary-{kind}, {m} pairs: {elapsed:.2f} s")
        assert elapsed < 5.0
        assert np.median(np.abs(r_hat - r)) < 1e-8


def _mixed_problem(rng):
    types = ["continuous", "binary", "ternary", "truncated", "continuous", "binary", "truncated", "ternary"]
    p = len(types)
    zr = np.full((2, p), np.nan)
    for j, t in enumerate(types):
        zr[:, j] = _zr(t, rng, 1, 0.2, 0.8)[:, 0]
    a = rng.normal(size=(p, 3))
    cov = a @ a.T + np.eye(p)
    sd = np.sqrt(np.diag(cov))
    R = cov / np.outer(sd, sd)
    stat = np.eye(p)
    for j in range(p):
        for k in range(j + 1, p):
            if types[j] == types[k] == "continuous":
                stat[j, k] = spearman_bridge(R[j, k])
            else:
                stat[j, k] = bridge(types[j], types[k], [R[j, k]], zr[:, j], zr[:, k])[0]
            stat[k, j] = stat[j, k]
    return types, zr, R, stat


def test_latent_correlation_recovers_population_matrix(rng):
    types, zr, R, stat = _mixed_problem(rng)
    R_hat, info = latent_correlation(stat, types, zr)
    assert_allclose(R_hat, R, atol=1e-6)
    assert info["n_clipped"] == 0 and info["clipped_pairs"].shape == (0, 2)
    stat[1, 5] = stat[5, 1] = 0.99  # beyond what two binary margins allow
    stat[0, 2] = stat[2, 0] = np.nan
    R_hat, info = latent_correlation(stat, types, zr)
    assert info["n_clipped"] == 1 and info["clipped_pairs"].tolist() == [[1, 5]]
    assert R_hat[1, 5] == R_hat[5, 1] == R_EDGE
    assert np.isnan(R_hat[0, 2]) and np.isnan(R_hat[2, 0])
    assert_allclose(np.diag(R_hat), 1.0)
    zr_bad = zr.copy()
    zr_bad[0, 3] = 0.0
    with pytest.raises(ValueError, match=r"zratios\[:, 3\] \(column 3, truncated\)"):
        latent_correlation(stat, types, zr_bad)
    with pytest.raises(ValueError, match="types: expected 8 entries"):
        latent_correlation(stat, types[:-1], zr)
    with pytest.raises(ValueError, match="continuous: expected 'spearman' or 'kendall'"):
        latent_correlation(stat, types, zr, continuous="pearson")


def test_latent_correlation_kendall_for_continuous(rng):
    R = np.array([[1.0, 0.5], [0.5, 1.0]])
    stat = np.array([[1.0, 2 / np.pi * np.arcsin(0.5)], [2 / np.pi * np.arcsin(0.5), 1.0]])
    R_hat, _ = latent_correlation(stat, ["continuous"] * 2, np.full((2, 2), np.nan), continuous="kendall")
    assert_allclose(R_hat, R, atol=1e-12)


def test_nearest_correlation():
    R = np.array([[1.0, 0.9, 0.7], [0.9, 1.0, -0.3], [0.7, -0.3, 1.0]])
    assert np.linalg.eigvalsh(R)[0] < 0
    R_pd, change = nearest_correlation(R, floor=1e-6)
    assert np.linalg.eigvalsh(R_pd)[0] >= 0.99e-6
    assert_allclose(np.diag(R_pd), 1.0)
    assert change == pytest.approx(np.max(np.abs(R_pd - R))) and 0 < change < 0.5
    good = np.array([[1.0, 0.2], [0.2, 1.0]])
    same, zero = nearest_correlation(good)
    assert zero == 0.0 and np.array_equal(same, good)
    with pytest.raises(ValueError, match="R: expected no NaN entries"):
        nearest_correlation(np.array([[1.0, np.nan], [np.nan, 1.0]]))
