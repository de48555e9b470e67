"""Tests of hclstat.identify: exact population identification, conditions, counterexamples."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import Hierarchy, HierarchicalModel, compute_moments
from hclstat.exceptions import EstimationWarning, IdentifiabilityError
from hclstat.identify import (
    Identification,
    check_identifiable,
    check_model,
    counterexample,
    identify,
    ledermann_bound,
)
from hclstat.metrics import subspace_distance

EXACT = 1e-8


# ------------------------------------------------------------------ helpers
def random_hierarchy(rng, noise_model):
    """Random structures over M in 3..5 modalities, dims satisfying the conditions.

    Diagonal noise gets ``p_m >= 2 r'_m + 1`` (the closed-form regime); the
    Ledermann-only regime has its own test.
    """
    M = int(rng.integers(3, 6))
    mods = [f"m{i}" for i in range(M)]
    ranks = {}
    for size in range(2, M + 1):
        for c in itertools.combinations(mods, size):
            if rng.uniform() < (0.35 if M < 5 else 0.2):
                ranks[c] = int(rng.integers(1, 3))
    for m in mods:
        if rng.uniform() < 0.7:
            ranks[(m,)] = int(rng.integers(1, 3))
    dims = {}
    for m in mods:
        total = sum(k for s, k in ranks.items() if m in s)
        low = sum(k for s, k in ranks.items() if m in s and len(s) <= 2)
        need = max(total + 1, 2 * low + 1) if noise_model == "diagonal" else total + 1
        dims[m] = need + int(rng.integers(0, 8))
    return Hierarchy(dims, ranks)


def max_subspace_error(res, model):
    h = model.hierarchy
    return max(
        (subspace_distance(res.subspaces[s][m], model.loadings[s][m]) for s in h.structures for m in s),
        default=0.0,
    )


def max_block_error(res, model):
    worst = 0.0
    for s, blocks in res.blocks.items():
        for (a, b), B in blocks.items():
            T = model.signal_block(s, a, b)
            worst = max(worst, np.linalg.norm(B - T) / np.linalg.norm(T))
    return worst


def identify_quietly(*args, **kwargs):
    """identify() with every warning turned into an error (population input must be clean)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return identify(*args, **kwargs)


@pytest.fixture
def h3():
    return Hierarchy(
        {"a": 10, "b": 12, "c": 14},
        {("a", "b", "c"): 2, ("a", "b"): 1, ("a", "c"): 1, ("b", "c"): 2, "a": 1, "b": 2, "c": 1},
    )


# ------------------------------------------------ exact population recovery
@pytest.mark.parametrize("seed", range(60))
def test_recovers_random_hierarchies_exactly(seed):
    rng = np.random.default_rng(seed)
    noise_model = ("isotropic", "diagonal")[seed % 2]
    h = random_hierarchy(rng, noise_model)
    loading_scale = 0.5 if seed % 3 == 0 else None  # both loading laws
    model = HierarchicalModel.random(h, random_state=rng, noise_model=noise_model, loading_scale=loading_scale)
    assert check_identifiable(h, noise_model).identifiable
    assert check_model(model).identifiable

    res = identify_quietly(model.covariance(), h.dims, noise_model=noise_model)

    assert isinstance(res, Identification)
    assert res.hierarchy == h
    assert res.rank_consistency.consistent
    assert res.rank_consistency.table["agree"].all()
    assert max_subspace_error(res, model) < EXACT
    # every block is identified with a noise model, within blocks included
    for s in h.structures:
        assert set(res.blocks[s]) == set(itertools.product(s, s))
    assert max_block_error(res, model) < EXACT
    for m in h.modalities:
        assert_allclose(res.noise_variances[m], model.noise_variances[m], rtol=EXACT)
    assert (res.dimensions["rank"] == res.dimensions["expected"]).all()
    # the identified parameters reproduce the covariance
    cov = model.covariance()
    assert np.abs(res.to_model().covariance() - cov).max() < EXACT * np.abs(cov).max()


@pytest.mark.parametrize("seed", [2, 4, 6, 7])
def test_diagonal_noise_between_ledermann_and_closed_form(seed):
    # r' = 5 on 'a' with p = 9: Ledermann holds ((9-5)^2 = 16 > 14), p < 2r'+1 = 11
    h = Hierarchy(
        {"a": 9, "b": 8, "c": 8},
        {("a", "b", "c"): 1, ("a", "b"): 2, ("a", "c"): 2, "a": 1, "b": 1, "c": 1},
    )
    report = check_identifiable(h, "diagonal")
    assert report.identifiable
    assert any("iterative factor-analysis fit (fa_noise)" in n and "'a'" in n for n in report.notes)
    model = HierarchicalModel.random(h, random_state=seed, noise_model="diagonal")
    res = identify_quietly(model.covariance(), h.dims, noise_model="diagonal")
    assert res.hierarchy == h
    assert max_subspace_error(res, model) < EXACT
    assert max_block_error(res, model) < EXACT
    assert_allclose(res.noise_variances["a"], model.noise_variances["a"], rtol=EXACT)


def test_m2_and_unequal_scales():
    h = Hierarchy({"x": 6, "y": 30}, {("x", "y"): 2, "x": 1, "y": 3})
    model = HierarchicalModel.random(h, random_state=0)
    D = np.concatenate([np.full(6, 100.0), np.full(30, 0.01)])  # rescale modalities
    cov = model.covariance() * np.outer(D, D)
    res = identify_quietly(cov, h.dims)
    assert res.hierarchy == h
    for m in h.modalities:
        for s in h.structures_of(m):
            A = model.loadings[s][m] * D[h.feature_slices()[m]][:, None]
            assert subspace_distance(res.subspaces[s][m], A) < EXACT


def test_accepts_moments_and_returns_readable_tables(h3):
    from hclstat.moments import moments_from_covariance

    model = HierarchicalModel.random(h3, random_state=3)
    res = identify_quietly(moments_from_covariance(model.covariance(), h3.dims, 1000), None)
    assert res.hierarchy == h3
    assert list(res.dimensions.columns) == ["modality", "with", "rank", "expected", "smallest_kept", "largest_dropped"]
    assert len(res.dimensions) == 3 * 3  # M (2^{M-1} - 1) sets
    assert (res.dimensions["largest_dropped"] < 1e-12).all()
    table = res.rank_consistency.table
    assert list(table.columns) == ["a", "b", "c", "final", "agree"]
    assert table.loc["{a,b,c}", "final"] == 2 and np.isnan(table.loc["{a,b}", "c"])
    summary = res.summary()
    assert list(summary["structure"]) == [h3.name(s) for s in h3.structures]
    assert "rank_consistent=True" in repr(res)


def test_loadings_reproduce_blocks_up_to_rotation(h3):
    model = HierarchicalModel.random(h3, random_state=4)
    res = identify_quietly(model.covariance(), h3.dims)
    L = res.loadings()
    for s in h3.structures:
        for a in s:
            for b in s:
                assert_allclose(L[s][a] @ L[s][b].T, model.signal_block(s, a, b), atol=1e-10)


def test_given_hierarchy_skips_rank_estimation(h3):
    model = HierarchicalModel.random(h3, random_state=5, noise_model="diagonal")
    res = identify_quietly(model.covariance(), h3.dims, noise_model="diagonal", hierarchy=h3)
    assert res.rank_consistency is None
    assert res.dimensions["rank"].isna().all()
    assert max_subspace_error(res, model) < EXACT


# ------------------------------------------------------------- no noise model
@pytest.mark.parametrize("seed", range(10))
def test_without_noise_model_recovers_the_non_specific_part(seed):
    rng = np.random.default_rng(100 + seed)
    h = random_hierarchy(rng, "isotropic")
    model = HierarchicalModel.random(h, random_state=rng, noise_model="diagonal")
    res = identify_quietly(model.covariance(), h.dims, noise_model=None)

    non_specific = Hierarchy(h.dims, {s: k for s, k in h.ranks.items() if len(s) > 1})
    assert res.hierarchy == non_specific
    assert res.noise_variances is None
    assert max_subspace_error(res, HierarchicalModel(
        non_specific, {s: model.loadings[s] for s in non_specific.structures}, model.noise_variances
    )) < EXACT
    for s in non_specific.structures:
        within = {(m, m) for m in s}
        if len(s) == 2:  # only the cross block is identified
            assert within.isdisjoint(res.blocks[s]) and len(res.blocks[s]) == 2
            assert any(f"structure {h.name(s)}: only the cross block" in u for u in res.unidentified)
        else:
            assert within <= set(res.blocks[s])
    assert max_block_error(res, model) < EXACT
    assert any("specific structures" in u and "not identified without a noise model" in u for u in res.unidentified)
    with pytest.raises(IdentifiabilityError, match="noise_model=None"):
        res.to_model()


def test_pair_structure_statement_names_the_invertible_transform(h3):
    model = HierarchicalModel.random(h3, random_state=6)
    res = identify_quietly(model.covariance(), h3.dims, noise_model=None)
    pair = [u for u in res.unidentified if u.startswith("structure {a,b}")]
    assert len(pair) == 1
    assert "up to an invertible transform" in pair[0] and "A_{a,S} A_{a,S}^T" in pair[0]


# ------------------------------------------------------------- conditions
def test_check_identifiable_reports_violations():
    h = Hierarchy({"a": 3, "b": 6}, {("a", "b"): 1, "a": 2, "b": 1})
    iso = check_identifiable(h, "isotropic")
    assert not iso.identifiable and len(iso.reasons) == 1
    assert "modality 'a': isotropic noise needs a noise direction" in iso.reasons[0]
    assert "{a,b}: 1, {a}: 2" in iso.reasons[0] and "less than p_m = 3; got 3" in iso.reasons[0]

    h = Hierarchy({"a": 5, "b": 6}, {("a", "b"): 2, "a": 1})
    diag = check_identifiable(h, "diagonal")
    assert not diag.identifiable
    assert "modality 'a': diagonal noise violates the Ledermann bound" in diag.reasons[0]
    assert "r = 3" in diag.reasons[0] and "4 <= 8" in diag.reasons[0]
    assert check_identifiable(h, "isotropic").identifiable

    one = check_identifiable(Hierarchy({"a": 5}, {"a": 1}))
    assert "needs at least 2 modalities" in one.reasons[0]

    none = check_identifiable(h, None)
    assert none.identifiable
    assert any("specific structure {a}" in n for n in none.notes)
    assert any("structure {a,b}: within-modality blocks not identified" in n for n in none.notes)
    with pytest.raises(ValueError, match="noise_model: expected 'isotropic', 'diagonal' or None, got 'gauss'"):
        check_identifiable(h, "gauss")
    with pytest.raises(TypeError, match="hierarchy: expected a Hierarchy, got dict"):
        check_identifiable({"a": 1})


def test_ledermann_bound():
    assert [ledermann_bound(p) for p in (1, 3, 5, 9, 10, 20)] == [0, 0, 2, 5, 5, 14]
    for p in range(2, 40):
        r = ledermann_bound(p)
        assert (p - r) ** 2 > p + r and (p - r - 1) ** 2 <= p + r + 1


def test_check_model_general_position_and_ranks():
    h = Hierarchy({"a": 6, "b": 6, "c": 6}, {("a", "b", "c"): 1, ("a", "b"): 1, "c": 1})
    model = HierarchicalModel.random(h, random_state=0)
    assert check_model(model).identifiable
    loadings = {s: dict(b) for s, b in model.loadings.items()}
    loadings[frozenset("ab")]["a"] = 2.0 * loadings[frozenset("abc")]["a"]  # collinear on 'a'
    bad = HierarchicalModel(h, loadings, model.noise_variances)
    report = check_model(bad)
    assert not report.identifiable
    assert any(
        "modality 'a': general position fails" in r and "rank 1 < 2 columns" in r and "{a,b,c}, {a,b}" in r
        for r in report.reasons
    )
    assert "rank Cov(x_a, x_{b}) = 1 but the hierarchy implies 2" in report.reasons
    with pytest.raises(TypeError, match="model: expected a HierarchicalModel"):
        check_model(h)


def test_check_model_applies_the_noise_conditions():
    h = Hierarchy({"a": 5, "b": 6}, {("a", "b"): 2, "a": 1})
    model = HierarchicalModel.random(h, random_state=0, noise_model="diagonal")
    report = check_model(model)  # auto-detects diagonal noise
    assert any("Ledermann bound" in r for r in report.reasons)
    assert check_model(model, noise_model="isotropic").identifiable


# ---------------------------------------------------------- counterexamples
def test_equal_covariance_counterexample(h3):
    model_a, model_b = counterexample(h3, 0.6, random_state=0)
    assert model_a.latent_covariance is not None and model_b.latent_covariance is None
    assert np.abs(model_a.covariance() - model_b.covariance()).max() < 1e-10
    differ = [
        subspace_distance(model_a.loadings[s][m], model_b.loadings[s][m])
        for s in h3.structures for m in s
    ]
    assert max(differ) > 0.1
    assert any("are correlated" in r for r in check_model(model_a).reasons)
    assert check_model(model_b).identifiable
    # identification returns the uncorrelated representation, not model_a's loadings
    res = identify_quietly(model_a.covariance(), h3.dims)
    assert res.hierarchy == h3
    assert max_subspace_error(res, model_b) < EXACT
    assert max_subspace_error(res, model_a) > 0.1


def test_equal_covariance_counterexample_without_nested_structures():
    h = Hierarchy({"a": 6, "b": 7, "c": 6}, {"a": 2, "b": 1, "c": 1})
    model_a, model_b = counterexample(h, -0.4, random_state=2)
    assert np.abs(model_a.covariance() - model_b.covariance()).max() < 1e-10
    assert model_b.hierarchy.rank(("a", "b")) == 1 and model_a.hierarchy.rank(("a", "b")) == 0
    assert model_b.latent_covariance is None


def test_spurious_sharing_is_flagged_by_rank_consistency(h3):
    model = counterexample(h3, 0.5, random_state=3, kind="spurious_sharing")
    assert isinstance(model, HierarchicalModel)
    with pytest.warns(EstimationWarning, match=r"rank estimates disagree across member modalities \(structure \{a,b,c\}: member estimates a: 3, b: 2, c: 2"):
        res = identify(model.covariance(), h3.dims, noise_model=None)
    rc = res.rank_consistency
    assert not rc.consistent and not rc
    assert not rc.table.loc["{a,b,c}", "agree"]
    assert rc.table.loc["{a,b}", ["a", "b"]].tolist() == [1.0, 2.0]
    assert "integer least squares" in rc.rule and rc.misfit > 0
    reasons = check_model(model).reasons
    assert any("{a} and {b} are correlated" in r for r in reasons)
    assert any(r.startswith("rank Cov(x_b, x_{a}) = 4") for r in reasons)


def _population_cross_ranks(cov, h, tol=1e-8):
    """``rank Cov(x_m, x_U)`` for every ``m`` and ``U``, counted independently of the package."""
    sl, out = h.feature_slices(), {}
    for m in h.modalities:
        others = [o for o in h.modalities if o != m]
        for size in range(1, len(others) + 1):
            for U in itertools.combinations(others, size):
                idx = np.concatenate([np.arange(sl[o].start, sl[o].stop) for o in U])
                s = np.linalg.svd(cov[sl[m]][:, idx], compute_uv=False)
                out[(m, frozenset(U))] = int(np.sum(s > tol * s[0]))
    return out


def test_ranks_follow_the_lattice_least_squares_rule_not_a_majority_vote(h3):
    # correlated latents: the members disagree, so a rule must choose. Majority vote
    # (the old rule) gives {a,b}: 1 and {a,c}: 1, whose implied cross ranks miss the
    # observed ones by a squared misfit of 7; the lattice's integer least squares gives
    # 2 and 2 (misfit 1, the unique global minimum over every rank vector in 0..4)
    from hclstat.lattice import implied_rank

    model = counterexample(h3, 0.5, random_state=3, kind="spurious_sharing")
    cov = model.covariance()
    observed = _population_cross_ranks(cov, h3)
    structs = [s for s in h3.structures if len(s) > 1]

    def misfit(ranks):
        return sum((r - implied_rank(ranks, m, U)) ** 2 for (m, U), r in observed.items())

    grid = sorted((misfit(dict(zip(structs, v))), v) for v in itertools.product(range(5), repeat=len(structs)))
    assert grid[0][0] < grid[1][0]  # a unique least-squares solution
    best = {s: k for s, k in zip(structs, grid[0][1]) if k}
    majority = {frozenset("abc"): 2, frozenset("ab"): 1, frozenset("ac"): 1, frozenset("bc"): 2}
    assert misfit(majority) > grid[0][0]

    with pytest.warns(EstimationWarning) as record:
        res = identify(cov, h3.dims, noise_model=None)
    assert res.hierarchy.ranks == best
    assert res.hierarchy.ranks != majority
    assert any("Final ranks by integer least squares" in str(w.message) for w in record)
    assert res.rank_consistency.misfit == grid[0][0]
    assert (res.rank_consistency.table["final"] == [best.get(frozenset(n.strip("{}").split(",")), 0)
                                                    for n in res.rank_consistency.table.index]).all()


def test_spurious_sharing_among_specifics_is_reported_not_a_crash():
    # each member sees a different structure (a: {a,b,c}, b: {a,b}, c: {a,c}); the least-squares
    # ranks keep a global component whose b-c cross core is zero: identify warns, and the within
    # blocks use the pseudo-inverse its docstring states (solve() raised LinAlgError here)
    h = Hierarchy({"a": 6, "b": 7, "c": 6}, {"a": 1, "b": 1, "c": 1})
    model = counterexample(h, 0.5, random_state=0, kind="spurious_sharing")
    with pytest.warns(EstimationWarning, match="rank estimates disagree"):
        res = identify(model.covariance(), h.dims, noise_model=None)
    assert not res.rank_consistency.consistent
    assert res.hierarchy.ranks == {frozenset("abc"): 1}


@pytest.mark.parametrize("seed", range(12))
def test_identify_and_the_sample_lattice_rule_agree_on_random_hierarchies(seed):
    # one decision rule: identify's ranks are lattice_from_tests' on the same observed ranks
    from hclstat.lattice import lattice_from_tests

    rng = np.random.default_rng(500 + seed)
    h = random_hierarchy(rng, "isotropic")
    cov = HierarchicalModel.random(h, random_state=rng).covariance()
    observed = _population_cross_ranks(cov, h)
    lattice = lattice_from_tests(h.modalities, lambda m, others: (0.5, np.ones(observed[(m, frozenset(others))])))
    res = identify_quietly(cov, h.dims, noise_model=None)
    assert res.hierarchy.ranks == lattice.ranks == {s: k for s, k in h.ranks.items() if len(s) > 1}


def test_counterexample_errors(h3):
    with pytest.raises(ValueError, match=r"rho: expected 0 < \|rho\| < 1, got 1.0"):
        counterexample(h3, 1.0)
    with pytest.raises(ValueError, match=r"expected 0 < \|rho\| < 1/sqrt\(2\)"):
        counterexample(h3, 0.8, kind="spurious_sharing")
    with pytest.raises(ValueError, match="kind: expected one of"):
        counterexample(h3, 0.3, kind="other")
    h = Hierarchy({"a": 5, "b": 5, "c": 5}, {("a", "b", "c"): 1, "a": 1, "b": 1})
    with pytest.raises(ValueError, match=r"needs specific structures on at least 3 modalities; the hierarchy has them on \['a', 'b'\]"):
        counterexample(h, 0.3, kind="spurious_sharing")
    with pytest.raises(TypeError, match="rho: expected a real number"):
        counterexample(h3, "0.3")


# ------------------------------------------------------------- input errors
def test_identify_input_errors(h3):
    cov = HierarchicalModel.random(h3, random_state=0).covariance()
    with pytest.raises(ValueError, match=r"covariance: expected shape \(36, 36\) from dims"):
        identify(cov[:-1, :-1], h3.dims)
    bad = cov.copy()
    bad[0, 1] += 1.0
    with pytest.raises(ValueError, match="covariance: expected a symmetric matrix"):
        identify(bad, h3.dims)
    bad = cov.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="covariance: expected finite entries"):
        identify(bad, h3.dims)
    with pytest.raises(ValueError, match="noise_model: expected 'isotropic', 'diagonal' or None, got 'iso'"):
        identify(cov, h3.dims, noise_model="iso")
    with pytest.raises(ValueError, match=r"tol: expected a number in \(0, 1\), got 0"):
        identify(cov, h3.dims, tol=0)
    with pytest.raises(IdentifiabilityError, match="needs at least 2 modalities, got 1"):
        identify(cov, {"a": 36})
    with pytest.raises(TypeError, match="dims: expected a non-empty mapping"):
        identify(cov, [10, 12, 14])
    with pytest.raises(ValueError, match="hierarchy: expected dims"):
        identify(cov, h3.dims, hierarchy=Hierarchy({"a": 10, "b": 12, "c": 15}, {}))


def test_isotropic_without_a_noise_direction_is_refused():
    h = Hierarchy({"a": 3, "b": 6}, {("a", "b"): 1, "a": 2, "b": 1})
    model = HierarchicalModel.random(h, random_state=0)
    with pytest.raises(IdentifiabilityError, match="modality 'a': isotropic noise needs a noise direction"):
        identify(model.covariance(), h.dims, hierarchy=h)


# ------------------------------------------------------ sample covariances
def test_sample_covariance_errors_shrink_like_root_n(h3):
    model = HierarchicalModel.random(h3, random_state=0)
    ns = np.array([2000, 8000, 32000])
    sub, blk = np.zeros((3, len(ns))), np.zeros((3, len(ns)))
    for rep in range(3):
        for j, n in enumerate(ns):
            views, _ = model.sample(int(n), random_state=1000 * rep + j)
            res = identify(compute_moments(views), None, hierarchy=h3)
            errs = [subspace_distance(res.subspaces[s][m], model.loadings[s][m]) for s in h3.structures for m in s]
            sub[rep, j] = np.mean(errs)
            rel = [
                np.linalg.norm(B - model.signal_block(s, a, b)) / np.linalg.norm(model.signal_block(s, a, b))
                for s in h3.structures for (a, b), B in res.blocks[s].items()
            ]
            blk[rep, j] = np.mean(rel)
    for errors in (sub, blk):
        slope = np.polyfit(np.log(ns), np.log(errors.mean(axis=0)), 1)[0]
        assert abs(slope + 0.5) < 0.15, slope


def test_sample_covariance_with_a_suitable_tol_recovers_the_hierarchy(h3):
    model = HierarchicalModel.random(h3, random_state=0)
    views, _ = model.sample(32000, random_state=1)
    # cross-covariance noise is ~ sqrt(p/n) relative (~0.01 here), the weakest signal ~0.09
    res = identify(compute_moments(views), None, noise_model=None, tol=0.05)
    assert res.hierarchy == Hierarchy(h3.dims, {s: k for s, k in h3.ranks.items() if len(s) > 1})
    assert res.rank_consistency.consistent
    assert (res.dimensions["smallest_kept"].dropna() > 0.05).all()
    assert (res.dimensions["largest_dropped"].dropna() < 0.05).all()
    # the default (population) tol reads noise as signal: flagged, then refused with the reason
    with pytest.warns(EstimationWarning, match="tol=1e-08 may not suit it"):
        with pytest.raises(ValueError, match="tol=1e-08 may be too small for this covariance"):
            identify(compute_moments(views), None)
