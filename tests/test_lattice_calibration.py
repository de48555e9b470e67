"""The rank lattice's stated level (issue 13, points 1-2): family-wise calibration on
independent views, missing entries, the subsample rescaling, and the pieces of the
procedure (step-down max-T, joint nulls, the eigenvalue kernel) against references.

Binomial bounds: with ``N`` independent data sets and a true rate ``alpha``, the
number of data sets with a false cross rank is Binomial(N, alpha); the checks
assert it inside the central 95% interval (two-sided: the level is exact, so a
procedure far below it is wrong too) or below the 99.9% upper quantile when the
count is too small for a lower bound to mean anything.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import binom
from threadpoolctl import threadpool_limits

from hclstat import HCL
from hclstat.calibration import finite_size_factor, minimum_permutations, resolve_permutations, step_down
from hclstat.kernels.spectra import lanczos_steps, top_eigenvalues, top_eigenvalues_reference
from hclstat.lattice import lattice_tests, rank_lattice
from hclstat.model import d1_model
from hclstat.moments import CentredData, compute_moments
from hclstat.moments import nulls
from hclstat.moments.nulls import matched_rows, null_geometry


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def independent_views(rng, dims, n, kind):
    """Views with no shared signal: isotropic, heteroskedastic (column sds in [1/2, 2]),
    heteroskedastic with a strong specific factor per modality, or heavy-tailed (t_5)."""
    out = {}
    for m, p in dims.items():
        sd = np.ones(p) if kind == "isotropic" else np.exp(rng.uniform(-np.log(2), np.log(2), p))
        x = (rng.standard_t(5, (n, p)) if kind == "t5" else rng.standard_normal((n, p))) * sd
        if kind == "spiked":
            x += np.outer(rng.standard_normal(n), rng.standard_normal(p))
        out[m] = x - x.mean(axis=0)
    return out


def false_rank_count(dims, n, kind, level, n_sets, seed):
    """Data sets (of ``n_sets``) where some cross rank of the lattice comes out above 0."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_sets):
        lat = rank_lattice(independent_views(rng, dims, n, kind), random_state=rng, level=level)
        hits += int(lat.observed["rank"].max() > 0)
    return hits


def binomial_interval(n_sets, level, mass=0.95):
    return binom.ppf((1 - mass) / 2, n_sets, level), binom.isf((1 - mass) / 2, n_sets, level)


# ------------------------------------------------------------ null calibration
QUICK = [
    # (dims, n, kind): p/n from 0.1 to 5
    ({"a": 30, "b": 40, "c": 50}, 400, "isotropic"),
    ({"a": 50, "b": 60, "c": 70}, 200, "heteroskedastic"),
    ({"a": 200, "b": 300, "c": 500}, 100, "heteroskedastic"),
]


def test_null_calibration_quick():
    # 3 designs x 70 data sets at level 0.05: 210 data sets, expected 10.5 with a false rank.
    # The old rule (mean + z sd of 10 null maxima, Bonferroni z) gave ~17.7% at 0.05 (37 of 210)
    level, per = 0.05, 70
    total = sum(false_rank_count(dims, n, kind, level, per, seed) for seed, (dims, n, kind) in enumerate(QUICK))
    lo, hi = binomial_interval(per * len(QUICK), level)
    assert lo <= total <= hi, (total, lo, hi)


SLOW = QUICK + [
    ({"a": 20, "b": 30, "c": 40}, 400, "heteroskedastic"),
    ({"a": 60, "b": 80, "c": 100}, 200, "spiked"),
    ({"a": 50, "b": 60, "c": 70}, 300, "t5"),
    ({"a": 30, "b": 40, "c": 50, "d": 60}, 300, "heteroskedastic"),
]


@pytest.mark.slow
@pytest.mark.parametrize("level", [0.01, 0.05])
@pytest.mark.parametrize("design", range(len(SLOW)))
def test_null_calibration(design, level):
    # >= 300 independent data sets per design and level; the false-any-rank count inside
    # the binomial 95% interval of the level
    dims, n, kind = SLOW[design]
    n_sets = 300
    hits = false_rank_count(dims, n, kind, level, n_sets, 100 + design)
    lo, hi = binomial_interval(n_sets, level)
    print(f"\n{dims} n={n} {kind} level={level}: {hits}/{n_sets} = {hits / n_sets:.3f} "
          f"(95% interval [{lo:.0f}, {hi:.0f}])")
    assert lo <= hits <= hi


# ------------------------------------------------------------ missing entries
def _masked_null_reference(views, draws, tests):
    """The null computed the slow way: permute each modality's rows (NaN with them),
    compute_moments, top singular value of every tested block."""
    count = next(iter(draws.values())).shape[0]
    out = np.empty((count, len(tests)))
    for j in range(count):
        mom = compute_moments({m: x[draws[m][j]] if m in draws else x for m, x in views.items()})
        for t, (m, others) in enumerate(tests):
            out[j, t] = np.linalg.svd(np.hstack([mom.block(m, o) for o in others]), compute_uv=False)[0]
    return out


@pytest.fixture(params=["one group, Grams", "groups of two draws, Lanczos on the products"])
def gather_groups(request, monkeypatch):
    # the pair products gather the draws' rows in groups that fit one buffer; a buffer of
    # two draws of the widest gathered block (here at most 2 x 25 x 120 float32 with masks)
    # leaves a partial last group. Sides of 160 or more run Lanczos on the products when
    # their Grams exceed the byte budget (here: always)
    if request.param != "one group, Grams":
        monkeypatch.setattr(nulls, "_GATHER_BYTES", 2 * 4 * 120 * 50)
        monkeypatch.setattr(nulls, "_GRAM_BYTES", 0)
    return request.param


def test_masked_joint_null_equals_pairwise_reference(gather_groups):
    rng = np.random.default_rng(3)
    dims, n = {"a": 12, "b": 25, "c": 170}, 120  # c: the Lanczos side (>= 160) and p > n
    views = {m: rng.standard_normal((n, p)) * rng.uniform(0.5, 2.0, p) + 3.0 for m, p in dims.items()}
    views = {m: np.where(rng.random(x.shape) < 0.3, np.nan, x) for m, x in views.items()}
    draws = {m: np.stack([rng.permutation(n) for _ in range(6)]) for m in "abc"}
    tests = list(lattice_tests(dims))
    mom = compute_moments(views)
    sl = mom.slices
    means = {m: mom.means[sl[m]] for m in dims}
    source = CentredData({m: np.where(np.isnan(x), means[m], x) for m, x in views.items()}, means=means,
                         dense_nulls=True, masks={m: ~np.isnan(x) for m, x in views.items()})
    got = source.joint_permutation_nulls(tests, draws)
    assert_allclose(got, _masked_null_reference(views, draws, tests), rtol=2e-6)
    # the old null filled NaN with 0 and divided by n - 1: about (1 - q)^2 too small
    filled = {m: np.nan_to_num(x - means[m]) for m, x in views.items()}
    old = CentredData(filled, means={m: np.zeros(p) for m, p in dims.items()}, dense_nulls=True)
    assert np.median(old.joint_permutation_nulls(tests, draws) / got) < 0.8
    # with masks the nulls need the dense engine (counts are entry by entry)
    lanczos = CentredData(filled, means={m: np.zeros(p) for m, p in dims.items()},
                          masks={m: ~np.isnan(x) for m, x in views.items()})
    with pytest.raises(ValueError, match="a row source with masks needs dense_nulls=True"):
        lanczos.permutation_nulls("a", ["b"], draws)


MISSING_SEEDS = range(4)


@pytest.mark.parametrize("seed", MISSING_SEEDS)
def test_d1_with_30_percent_missing_entries_learns_the_pattern(seed):
    # D1, s = 0.3, n = 1000, 30% of entries missing completely at random. The old null
    # (NaN as 0, divisor n - 1) put the thresholds too low: 0/12 exact (global rank 4-5)
    model = d1_model(0.3, random_state=seed)
    views, _ = model.sample(1000, random_state=1000 + seed)
    rng = np.random.default_rng(seed)
    views = {m: np.where(rng.random(v.shape) < 0.3, np.nan, v) for m, v in views.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = HCL(random_state=seed).fit(views)
    h = model.hierarchy
    assert est.lattice_.ranks == {frozenset(s): k for s, k in h.ranks.items() if len(s) > 1}
    assert est.hierarchy_ == h


# ------------------------------------------------------------ subsample rescaling
@pytest.mark.parametrize("kind", ["white", "heteroskedastic"])
def test_matched_subsample_null_equals_the_full_sample_null(kind):
    # p = 100 / 200, n = 4 x the 1000 permuted rows (the ratios p / n_sub of p = 500 / 1000
    # at permutation_rows = 5000). The plain sqrt((n_sub - 1) / (n - 1)) rescaling is
    # first-order only (issue 13: 56.9 at n = 5000 against 54.0 at 40000): measured here
    # +4.6% (white). Matched covariances and the finite-size factor: within ~1-2%.
    rng = np.random.default_rng(7)
    n, n_sub, B = 4000, 1000, 99
    X = {"a": rng.standard_normal((n, 100)), "b": rng.standard_normal((n, 200))}
    if kind == "heteroskedastic":
        X = {"a": X["a"] * np.linspace(0.5, 2.0, 100), "b": X["b"] * np.exp(rng.uniform(-0.7, 0.7, 200))}
    X = {m: x - x.mean(axis=0) for m, x in X.items()}
    mom = compute_moments(X)
    rows = np.sort(rng.choice(n, n_sub, replace=False))
    scale = np.sqrt((n_sub - 1) / (n - 1))

    def mean_null(views):
        rows_n = next(iter(views.values())).shape[0]
        src = CentredData(views, means={m: np.zeros(x.shape[1]) for m, x in views.items()}, dense_nulls=True)
        draws = {"b": np.stack([rng.permutation(rows_n) for _ in range(B)])}
        return src.permutation_nulls("a", ["b"], draws).mean()

    full = mean_null(X)
    first_order = scale * mean_null({m: x[rows] for m, x in X.items()})
    factor = finite_size_factor(null_geometry(mom), "a", ["b"], n, n_sub)
    matched = scale * factor * mean_null({m: matched_rows(x[rows], mom.block(m, m)) for m, x in X.items()})
    assert abs(matched / full - 1) < (0.015 if kind == "white" else 0.025), (matched / full, first_order / full)
    if kind == "white":
        assert first_order / full - 1 > 0.03, first_order / full
    # the matched rows have exactly the target covariance
    xm = matched_rows(X["a"][rows], mom.block("a", "a"))
    assert_allclose(xm.T @ xm / (n_sub - 1), mom.block("a", "a"), rtol=0, atol=1e-10)
    # p >= n_sub - 1: no positive-definite subsample covariance, rows only centred
    wide = rng.standard_normal((30, 40))
    assert_allclose(matched_rows(wide, np.eye(40)), wide - wide.mean(axis=0))


def test_hcl_row_source_is_matched_on_a_subsample_and_masked_with_missing_entries():
    from hclstat.estimators.hcl import _row_source

    model = d1_model(0.3, random_state=2)
    views, _ = model.sample(1200, random_state=3)
    mom = compute_moments(views)
    rows = np.sort(np.random.default_rng(0).choice(1200, 400, replace=False))
    src = _row_source(views, mom, rows, np.random.default_rng(1))
    for m in views:  # the subsample's covariances are the full sample's
        x = src._views[m] - src.means[m]
        assert_allclose(x.T @ x / 399, mom.block(m, m), rtol=0, atol=1e-10)
    assert src.null_geometry == null_geometry(mom) and src.masks is None
    # all rows: nothing to match; missing entries: masks that move with the rows, no matching
    assert getattr(_row_source(views, mom, None, np.random.default_rng(1)), "null_geometry", None) is None
    holes = {m: np.where(np.random.default_rng(4).random(v.shape) < 0.2, np.nan, v) for m, v in views.items()}
    src = _row_source(holes, compute_moments(holes), rows, np.random.default_rng(1))
    assert all((src.masks[m] == ~np.isnan(holes[m][rows])).all() for m in views)
    assert getattr(src, "null_geometry", None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert HCL(random_state=0, permutation_rows=400).fit(views).hierarchy_ == model.hierarchy


# ------------------------------------------------------------ the procedure itself
def _step_down_brute_force(t_obs, t_null, alpha):
    """Westfall-Young step-down from its definition: successive maxima over the remaining set."""
    B, T = t_null.shape
    order = list(np.argsort(-t_obs, kind="stable"))
    reject, p_prev = np.zeros(T, bool), 0.0
    for j, i in enumerate(order):
        remaining = order[j:]
        p = (1 + sum(t_null[b, remaining].max() >= t_obs[i] for b in range(B))) / (B + 1)
        p_prev = max(p_prev, p)
        if p_prev > alpha:
            break
        reject[i] = True
    return reject


@pytest.mark.parametrize("seed", range(6))
def test_step_down_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    T, B = 9, 99
    t_null = rng.standard_normal((B, T))
    t_obs = rng.standard_normal(T) + np.where(rng.random(T) < 0.4, rng.uniform(1, 5, T), 0.0)
    reject, p, critical, single = step_down(t_obs, t_null, 0.05)
    assert (reject == _step_down_brute_force(t_obs, t_null, 0.05)).all()
    assert ((p <= 0.05) == reject).all()
    # a rejected test's statistic exceeds its step's critical value, which is at most the
    # single-step one (the 5th largest family maximum of 99 draws)
    assert np.all(t_obs[reject] > critical[reject]) and np.all(critical <= single + 1e-12)
    assert single == np.sort(t_null.max(axis=1))[-5]


def test_permutation_count_follows_the_level():
    assert minimum_permutations(0.01) == 99 and minimum_permutations(0.05) == 19
    assert minimum_permutations(0.03) == 33  # (33 + 1) * 0.03 >= 1
    assert resolve_permutations(None, 0.01) == 99 and resolve_permutations(None, 0.001) == 999
    assert resolve_permutations(None, 0.05) == 99 and resolve_permutations(40, 0.05) == 40
    with pytest.raises(ValueError, match=r"n_permutations: expected at least 99 permutations .* got 98"):
        resolve_permutations(98, 0.01)
    with pytest.raises(ValueError, match=r"n_permutations: expected at least 99 permutations .* got 10"):
        HCL(n_permutations=10).fit({"a": np.ones((20, 3)) + np.eye(20, 3), "b": np.eye(20, 4)})


def test_joint_nulls_are_one_dataset_per_draw(gather_groups):
    # the null of every test in draw j is the statistic of ONE permuted data set (the joint
    # law of the family is reproduced): symmetric pair tests agree exactly, and every value
    # matches the moments of the explicitly permuted rows; MatrixFreeHCL's Lanczos path agrees
    rng = np.random.default_rng(11)
    dims, n = {"a": 15, "b": 22, "c": 30, "d": 8}, 90
    views = {m: rng.standard_normal((n, p)) for m, p in dims.items()}
    draws = {m: np.stack([rng.permutation(n) for _ in range(5)]) for m in "bcd"}
    tests = list(lattice_tests(dims))
    dense = CentredData(views, dense_nulls=True).joint_permutation_nulls(tests, draws)
    assert_allclose(dense, _masked_null_reference(views, draws, tests), rtol=1e-6)
    products = CentredData(views).joint_permutation_nulls(tests, draws)
    assert_allclose(products, dense, rtol=1e-6)
    ab, ba = tests.index(("a", ["b"])), tests.index(("b", ["a"]))
    assert_allclose(dense[:, ab], dense[:, ba], rtol=0)


@pytest.mark.parametrize("d", [5, 50, 130])
def test_top_eigenvalue_kernel_matches_lapack(d):
    rng = np.random.default_rng(d)
    C = rng.standard_normal((40, d, d + 30)) * np.linspace(0.5, 2.0, d)[None, :, None]
    G = np.ascontiguousarray(np.matmul(C, C.transpose(0, 2, 1)))
    start = rng.standard_normal(d)
    start /= np.linalg.norm(start)
    exact = np.linalg.eigvalsh(G)[:, -1]
    got = top_eigenvalues(G, start, lanczos_steps(d))
    assert_allclose(got, exact, rtol=1e-6)
    assert_allclose(got, top_eigenvalues_reference(G, start, lanczos_steps(d)), rtol=1e-9)
    # Ritz values: never above the top eigenvalue
    assert np.all(top_eigenvalues(G, start, 3) <= exact * (1 + 1e-12))


def test_lattice_reports_the_procedure():
    rng = np.random.default_rng(5)
    views = independent_views(rng, {"a": 10, "b": 12, "c": 14}, 200, "isotropic")
    shared = rng.standard_normal(200)
    views["a"][:, 0] += 2 * shared
    views["b"][:, 0] += 2 * shared
    lat = rank_lattice(views, random_state=0)
    obs = lat.observed.set_index(["modality", "U"])
    assert obs.loc[("a", "b"), "rank"] == 1 and obs.loc[("a", "b"), "p_value"] == 0.01
    assert obs.loc[("c", "a"), "rank"] == 0 and obs.loc[("c", "a"), "p_value"] > 0.01
    # a test has rank >= 1 exactly when its top singular value clears its step-down level
    assert ((obs["rank"] > 0) == (obs["top_singular_value"] > obs["first_threshold"])).all()
    assert ((obs["rank"] > 0) == (obs["p_value"] <= 0.01)).all()
    assert lat.ranks == {frozenset("ab"): 1}
