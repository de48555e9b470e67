"""The rank lattice: exact recovery in the population, the robust rank fit, null levels.

Population checks use :func:`moments_from_covariance` on ``model.covariance()``
with a huge ``n``: every null threshold then shrinks like ``n^{-1/2}`` while the
population cross-covariance ranks are exact, so the lattice must return the
true non-specific ranks with no disagreement between member modalities.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose
from threadpoolctl import threadpool_limits

from hclstat import HierarchicalModel, Hierarchy
import hclstat.lattice as lattice_module
import hclstat.factor_analysis as fa_module
from hclstat.factor_analysis import fa_noise as _fa_noise, fa_noise_fit as _fa_noise_fit
from hclstat.lattice import (
    implied_rank,
    _nonempty_subsets,
    fit_structure_ranks,
    lattice_hierarchy,
    noise_whitened_rank,
    rank_lattice,
    specific_ranks,
    white_noise_edge,
)
from hclstat.moments import compute_moments, moments_from_covariance

#: population sample size: null thresholds ~ 3e-3, a few % of the weakest signal singular values
N_POP = 10**8


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # small LAPACK calls; several BLAS threads on a shared 2-core machine only contend
    with threadpool_limits(1):
        yield


def random_hierarchy(M, seed):
    """Random pattern on M modalities: every structure gets rank 0, 1 or 2 (prob .4/.4/.2)."""
    rng = np.random.default_rng(seed)
    mods = [chr(ord("a") + i) for i in range(M)]
    dims = {m: int(rng.integers(20, 41)) for m in mods}
    ranks = {}
    for size in range(M, 0, -1):
        for c in itertools.combinations(mods, size):
            k = int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))
            if k:
                ranks[c] = k
    return Hierarchy(dims, ranks)


def nonspecific(h):
    return {s: k for s, k in h.ranks.items() if len(s) > 1}


def exact_observations(ranks, modalities):
    """``rank Cov(x_m, x_U)`` implied by the structure ranks, for every m and U ⊆ others(m)."""
    return {
        (m, U): implied_rank(ranks, m, U)
        for m in modalities
        for U in _nonempty_subsets([o for o in modalities if o != m])
    }


def moebius_start(observed, modalities):
    """Rounded median of the member estimates (independent of :func:`rank_lattice`'s code).

    For ``T ⊆ W = others(m)``: ``k_{{m} ∪ T} = sum_{V ⊆ T} (-1)^{|T \\ V| + 1} r(m, W \\ V)``.
    """
    est = {}
    for m in modalities:
        W = frozenset(o for o in modalities if o != m)
        r = {U: observed[(m, U)] for U in _nonempty_subsets(sorted(W))}
        r[frozenset()] = 0
        for T in _nonempty_subsets(sorted(W)):
            val = sum((-1) ** (len(T) - len(V) + 1) * r[W - V] for V in map(frozenset, _subsets(T)))
            est.setdefault(T | {m}, []).append(val)
    return {s: int(np.round(np.median(v))) for s, v in est.items()}


def _subsets(T):
    T = sorted(T)
    for size in range(len(T) + 1):
        yield from itertools.combinations(T, size)


# seeds of random_hierarchy whose models fit the factor-analysis noise step cleanly
# (M = 3 + seed % 2: two hierarchies on 3 modalities, two on 4)
POPULATION_SEEDS = [0, 1, 4, 5]


# ------------------------------------------------------------ population lattice
@pytest.mark.parametrize("seed", POPULATION_SEEDS)
def test_lattice_recovers_population_ranks_exactly(seed):
    h = random_hierarchy(3 + seed % 2, seed)
    model = HierarchicalModel.random(h, noise_model="diagonal", random_state=seed)
    mom = moments_from_covariance(model.covariance(), h.dims, N_POP)
    lat = rank_lattice(moments=mom)
    assert lat.ranks == nonspecific(h)
    assert lat.consistent
    assert lat.misfit == 0.0
    # every member modality's Möbius estimate is the true rank (0 for absent structures)
    for row in lat.member_estimates.itertuples():
        s = frozenset(row.structure.split(","))
        assert row.estimate == h.rank(s), (row.structure, row.modality)
    # observed cross ranks are the implied ones, and the thresholds are far below the signal
    truth = exact_observations(nonspecific(h), h.modalities)
    for row in lat.observed.itertuples():
        U = frozenset(row.U.split(","))
        assert row.rank == truth[(row.modality, U)]
        # the null bound: far below the signal, far above round-off
        assert 1e-10 < row.threshold < (0.05 * row.top_singular_value if row.rank else 1.0)
    # specific ranks from the within-modality spectra against the noise model
    spec, total = specific_ranks(mom, lat.ranks)
    for m in h.modalities:
        assert spec[frozenset([m])] == h.rank(frozenset([m])), m
        assert total[m] == h.modality_rank(m)
    assert lattice_hierarchy(h.dims, lat.ranks, spec) == h


def test_lattice_from_data_recovers_d1():
    h = Hierarchy({"a": 50, "b": 60, "c": 70}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1})
    model = HierarchicalModel.random(h, loading_scale=0.3, random_state=0)
    views, _ = model.sample(500, random_state=100)
    centred = {m: v - v.mean(axis=0) for m, v in views.items()}
    lat = rank_lattice(centred, random_state=0)
    assert lat.ranks == nonspecific(h)
    assert lat.consistent and lat.misfit == 0.0
    # nulls from a row subsample, rescaled to the full n, reach the same ranks
    mom = compute_moments(views)
    sub = {m: v[:300] for m, v in centred.items()}
    lat_sub = rank_lattice(sub, moments=mom, random_state=0)
    assert lat_sub.ranks == nonspecific(h)


def test_lattice_max_rank_caps_observed_ranks():
    h = Hierarchy({"a": 20, "b": 20, "c": 20}, {("a", "b", "c"): 2, ("a", "b"): 2})
    model = HierarchicalModel.random(h, random_state=0)
    lat = rank_lattice(moments=moments_from_covariance(model.covariance(), h.dims, N_POP), max_rank=1)
    assert lat.observed["rank"].max() == 1


def test_lattice_errors():
    h = Hierarchy({"a": 5, "b": 5}, {("a", "b"): 1})
    mom = moments_from_covariance(HierarchicalModel.random(h, random_state=0).covariance(), h.dims, 100)
    with pytest.raises(ValueError, match="pass the centred views"):
        rank_lattice()
    with pytest.raises(ValueError, match="need at least 2 modalities, got 1"):
        rank_lattice({"a": np.zeros((10, 3))})
    with pytest.raises(ValueError, match="n_permutations: expected a positive integer or None, got 0"):
        rank_lattice(moments=mom, n_permutations=0)
    centred = {"a": np.random.default_rng(0).standard_normal((30, 3)), "b": np.random.default_rng(1).standard_normal((30, 2))}
    with pytest.raises(ValueError, match=r"n_permutations: expected at least 99 permutations for the family-wise "
                                         r"level alpha=0.01 .*, got 10"):
        rank_lattice(centred, n_permutations=10)
    with pytest.raises(ValueError, match=r"n_permutations: expected at least 19 .* alpha=0.05 .*, got 18"):
        rank_lattice(centred, n_permutations=18, level=0.05)
    with pytest.raises(ValueError, match=r"level: expected a family-wise level in \(0, 1\), got None"):
        rank_lattice(centred, level=None)


# ------------------------------------------------------------ integer rank fit
@pytest.mark.parametrize("seed", range(8))
def test_fit_structure_ranks_returns_exact_fit_from_a_nearby_start(seed):
    h = random_hierarchy(3 + seed % 2, seed)
    mods = list(h.modalities)
    truth = nonspecific(h)
    obs = exact_observations(truth, mods)
    ranks, misfit = fit_structure_ranks(obs, mods, moebius_start(obs, mods))
    assert ranks == truth and misfit == 0.0
    # from a start one unit off on any single structure the best move leads back
    structs = [frozenset(c) for size in range(len(mods), 1, -1) for c in itertools.combinations(mods, size)]
    for s in structs:
        for step in (-1, 1):
            start = {t: truth.get(t, 0) for t in structs}
            start[s] += step
            if start[s] < 0:
                continue
            ranks, misfit = fit_structure_ranks(obs, mods, start)
            assert ranks == truth and misfit == 0.0, (sorted(s), step)


@pytest.mark.parametrize("seed", range(8))
def test_fit_structure_ranks_fixes_a_single_corrupted_observation(seed):
    # One observed rank off by one moves the Möbius estimates of that modality
    # only. When U is not the whole of others(m) the fit started from the member
    # medians (as rank_lattice does) returns the truth, at misfit exactly 1.
    h = random_hierarchy(3 + seed % 2, seed)
    mods = list(h.modalities)
    truth = nonspecific(h)
    obs = exact_observations(truth, mods)
    checked = 0
    for (m, U), k in obs.items():
        if len(U) == len(mods) - 1:
            continue
        for step in (-1, 1):
            if k + step < 0:
                continue
            bad = dict(obs)
            bad[(m, U)] = k + step
            ranks, misfit = fit_structure_ranks(bad, mods, moebius_start(bad, mods))
            assert ranks == truth and misfit == 1.0, (m, sorted(U), step)
            checked += 1
    assert checked >= 2 * len(mods)


# ------------------------------------------------------------------ noise side
def test_white_noise_edge_matches_simulated_quantile():
    # the 99% quantile of the top eigenvalue of X^T X / n, X an n x p white Gaussian
    # matrix; with 400 draws its standard error is ~0.3% of the value (order-statistic
    # variance q (1 - q) / (N f(x_q)^2)), far inside the 3% allowed here
    n, p, draws = 400, 40, 400
    rng = np.random.default_rng(2024)
    top = np.empty(draws)
    top_centred = np.empty(draws)
    for i in range(draws):
        X = rng.standard_normal((n, p))
        top[i] = np.linalg.eigvalsh(X.T @ X / n)[-1]
        top_centred[i] = np.linalg.eigvalsh(np.cov(X, rowvar=False))[-1]
    for alpha in (0.05, 0.01):
        assert_allclose(np.quantile(top, 1 - alpha), white_noise_edge(n, p, alpha), rtol=0.03)
    # the centred covariance (divisor n - 1) is the same law with n - 1 degrees of freedom,
    # the form noise_whitened_rank uses
    assert_allclose(np.quantile(top_centred, 0.99), white_noise_edge(n - 1, p, 0.01), rtol=0.03)
    # and the edge is above the Marchenko-Pastur bulk edge (1 + sqrt(p/n))^2
    assert white_noise_edge(n, p, 0.01) > (1 + np.sqrt(p / n)) ** 2


def test_white_noise_edge_levels():
    edges = [white_noise_edge(500, 50, a) for a in (0.1, 0.05, 0.01, 0.001)]
    assert np.all(np.diff(edges) > 0)
    # levels between table entries are interpolated in log(alpha)
    assert white_noise_edge(500, 50, 0.01) < white_noise_edge(500, 50, 0.005) < white_noise_edge(500, 50, 0.001)
    with pytest.raises(ValueError, match=r"alpha: expected a level in \[0.001, 0.1\], got 0.2"):
        white_noise_edge(500, 50, 0.2)


def _factor_covariance(rng, p, r, spread=4.0):
    L = rng.standard_normal((p, r))
    psi = np.exp(rng.uniform(-np.log(spread), np.log(spread), p))
    return L @ L.T + np.diag(psi), psi


@pytest.mark.parametrize("p, r", [(20, 3), (40, 6)])
def test_fa_noise_recovers_population_noise(rng, p, r):
    S, psi = _factor_covariance(rng, p, r)
    assert_allclose(_fa_noise(S, r), psi, rtol=1e-6)
    # rank 0: the noise is the whole variance
    assert_allclose(_fa_noise(S, 0), np.diag(S), rtol=0)


@pytest.mark.parametrize("p, r", [(200, 3), (400, 8)])
def test_fa_noise_from_top_eigenpairs_equals_the_full_spectrum_fit(rng, monkeypatch, p, r):
    # large blocks evaluate the factor-analysis discrepancy from the top r eigenpairs
    # (Lanczos); it must land where the full-spectrum evaluation does, on a sample
    # covariance (population fits are exact either way)
    Sigma, _ = _factor_covariance(rng, p, r)
    X = rng.multivariate_normal(np.zeros(p), Sigma, size=3 * p)
    S = np.cov(X.T)
    partial = _fa_noise_fit(S, r)
    monkeypatch.setattr(fa_module, "_LANCZOS_MIN_DIM", 10**9)  # force the full spectrum
    full = _fa_noise_fit(S, r)
    assert_allclose(partial, full, rtol=1e-6)


@pytest.mark.parametrize("noise_model", ["diagonal", "isotropic"])
@pytest.mark.parametrize("r", [0, 1, 4])
def test_noise_whitened_rank_returns_population_rank(rng, noise_model, r):
    p = 30
    L = rng.standard_normal((p, r))
    psi = np.full(p, 0.7) if noise_model == "isotropic" else np.exp(rng.uniform(-np.log(4), np.log(4), p))
    S = L @ L.T + np.diag(psi)
    for n in (10**6, N_POP):
        k, psi_hat = noise_whitened_rank(S, n, noise_model=noise_model)
        assert k == r
        assert_allclose(psi_hat, psi, rtol=1e-6)
    assert noise_whitened_rank(S, N_POP, noise_model=noise_model, max_rank=1)[0] == min(r, 1)


def test_noise_whitened_rank_returns_the_smallest_self_consistent_rank():
    # seed 3 of random_hierarchy (M = 4), modality b: 6 factors in 21 columns. Every
    # rank above 6 is self-consistent as well; the search must stop at the first one
    h = random_hierarchy(4, 3)
    model = HierarchicalModel.random(h, noise_model="diagonal", random_state=3)
    S = model.covariance()[h.feature_slices()["b"], h.feature_slices()["b"]]
    assert h.modality_rank("b") == 6
    for n in (10**6, N_POP):
        assert noise_whitened_rank(S, n)[0] == 6


def test_lattice_hierarchy_trims_to_the_noise_budget():
    # modality a has 3 columns: total rank at most 2; the specific part goes first
    h = lattice_hierarchy({"a": 3, "b": 10}, {frozenset("ab"): 2}, {frozenset("a"): 2, frozenset("b"): 1})
    assert h == Hierarchy({"a": 3, "b": 10}, {("a", "b"): 2, "b": 1})


def test_lrt_rank_never_returns_a_rejected_rank():
    # p = 5 allows testing r = 0, 1, 2 only (Ledermann bound); with three strong factors
    # all three are rejected: the old code returned 2, a rank it had just rejected
    from hclstat.exceptions import EstimationWarning
    from hclstat.lattice import lrt_rank

    rng = np.random.default_rng(0)
    L = 2.0 * rng.standard_normal((5, 3))
    S = L @ L.T + np.diag(rng.uniform(0.5, 1.0, 5))
    with pytest.warns(EstimationWarning, match=r"every rank up to 2 was rejected .* returning 3 as a lower bound"):
        assert lrt_rank(S, 10**6) == 3
    with pytest.warns(EstimationWarning, match=r"every rank up to the cap 1 was rejected"):
        assert lrt_rank(S, 10**6, max_rank=1) == 1
    with pytest.raises(ValueError, match=r"S: expected a positive-definite covariance"):
        lrt_rank(np.ones((5, 5)), 100)
