"""Tests for :mod:`hclstat.model`: the simulation engine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, stats

from hclstat.hierarchy import Hierarchy
from hclstat.model import LATENT_LAWS, STUDENT_T_DF, HierarchicalModel, draw_latent

fs = frozenset


def _stack(views, h):
    return np.concatenate([views[m] for m in h.modalities], axis=1)


@pytest.fixture
def model(hierarchy, rng):
    return HierarchicalModel.random(hierarchy, noise=1.0, random_state=rng)


# ------------------------------------------------------------ loading laws
def test_default_blocks_have_singular_values_in_range(hierarchy):
    svs = []
    for seed in range(20):
        model = HierarchicalModel.random(hierarchy, random_state=seed)
        for s in hierarchy.structures:
            assert set(model.loadings[s]) == set(s)
            for m, a in model.loadings[s].items():
                assert a.shape == (hierarchy.dims[m], hierarchy.rank(s))
                d = np.linalg.svd(a, compute_uv=False)
                svs.extend(d)
    svs = np.asarray(svs)
    assert svs.min() >= 0.5 - 1e-12
    assert svs.max() <= 1.5 + 1e-12
    # drawn across the interval, not pinned to a point
    assert svs.min() < 0.6 and svs.max() > 1.4
    assert stats.kstest(svs, stats.uniform(0.5, 1.0).cdf).pvalue > 1e-3


def test_custom_singular_value_range(hierarchy):
    model = HierarchicalModel.random(hierarchy, singular_values=(2.0, 2.0), random_state=1)
    for blocks in model.loadings.values():
        for a in blocks.values():
            assert_allclose(np.linalg.svd(a, compute_uv=False), 2.0, rtol=1e-12)


def test_loading_scale_gives_entry_variance():
    h = Hierarchy({"a": 300, "b": 400}, {("a", "b"): 5, "a": 3, "b": 4})
    s = 0.3
    model = HierarchicalModel.random(h, loading_scale=s, random_state=7)
    entries = np.concatenate([a.ravel() for blocks in model.loadings.values() for a in blocks.values()])
    N = entries.size
    assert N == 300 * 8 + 400 * 9
    # sample variance of N(0, s^2) has standard error s^2 sqrt(2 / (N - 1))
    assert abs(entries.var(ddof=1) - s**2) < 5 * s**2 * np.sqrt(2.0 / (N - 1))
    assert abs(entries.mean()) < 5 * s / np.sqrt(N)
    assert stats.kstest(entries, stats.norm(scale=s).cdf).pvalue > 1e-3


# -------------------------------------------------------------- noise laws
def test_isotropic_noise(hierarchy):
    model = HierarchicalModel.random(hierarchy, noise=2.5, random_state=0)
    for m in hierarchy.modalities:
        assert_array_equal(model.noise_variances[m], np.full(hierarchy.dims[m], 2.5))
    per = HierarchicalModel.random(hierarchy, noise={"a": 1.0, "b": 2.0, "c": 3.0}, random_state=0)
    assert [per.noise_variances[m][0] for m in "abc"] == [1.0, 2.0, 3.0]


def test_diagonal_noise_law():
    h = Hierarchy({"a": 1500, "b": 2500}, {("a", "b"): 1})
    c = {"a": 0.5, "b": 3.0}
    model = HierarchicalModel.random(h, noise=c, noise_model="diagonal", random_state=3)
    logs = []
    for m in h.modalities:
        v = model.noise_variances[m]
        assert v.shape == (h.dims[m],)
        # documented: c * w with log w ~ U[-log 4, log 4], i.e. within [c/4, 4c]
        assert np.all(v >= c[m] / 4) and np.all(v <= 4 * c[m])
        logs.append(np.log(v / c[m]))
    logs = np.concatenate(logs)
    law = stats.uniform(-np.log(4.0), 2 * np.log(4.0))
    assert stats.kstest(logs, law.cdf).pvalue > 1e-3
    assert logs.std() > 0.5  # genuinely heteroskedastic


# ------------------------------------------------------------- latent laws
# exact moments (mu4, mu6, mu8) of the standardised laws
LAW_MOMENTS = {
    "gaussian": (3.0, 15.0, 105.0),
    "laplace": (6.0, 90.0, 2520.0),
    "uniform": (9.0 / 5.0, 27.0 / 7.0, 9.0),
}
LAW_DISTRIBUTIONS = {
    "gaussian": stats.norm(),
    "laplace": stats.laplace(scale=1 / np.sqrt(2)),
    "uniform": stats.uniform(-np.sqrt(3), 2 * np.sqrt(3)),
    "student_t": stats.t(STUDENT_T_DF, scale=np.sqrt((STUDENT_T_DF - 2) / STUDENT_T_DF)),
}
DOCUMENTED_KURTOSIS = {"gaussian": 3.0, "laplace": 6.0, "uniform": 1.8, "student_t": 9.0}
N_LATENT = 40_000  # rows; times 7 components = 280,000 draws per law


def test_latent_laws_are_the_documented_ones():
    assert set(LATENT_LAWS) == set(DOCUMENTED_KURTOSIS)
    for law, dist in LAW_DISTRIBUTIONS.items():
        assert_allclose(dist.var(), 1.0, rtol=1e-12)
        assert_allclose(dist.stats(moments="k") + 3.0, DOCUMENTED_KURTOSIS[law], rtol=1e-12)


@pytest.mark.parametrize("law", LATENT_LAWS)
def test_latent_law_unit_variance_and_shape(hierarchy, law):
    model = HierarchicalModel.random(hierarchy, latent=law, random_state=11)
    z = model.sample_latents(N_LATENT, random_state=12)
    assert set(z) == set(hierarchy.structures)
    for s, zs in z.items():
        assert zs.shape == (N_LATENT, hierarchy.rank(s))
    x = np.concatenate(list(z.values()), axis=1).ravel()
    N = x.size
    mu4 = DOCUMENTED_KURTOSIS[law]
    assert abs(x.mean()) < 5 / np.sqrt(N)
    # Var of the sample variance of a unit-variance law: (mu4 - 1) / N
    assert abs(x.var() - 1.0) < 5 * np.sqrt((mu4 - 1.0) / N)
    assert stats.kstest(x, LAW_DISTRIBUTIONS[law].cdf).pvalue > 1e-3

    if law in LAW_MOMENTS:
        m4, m6, m8 = LAW_MOMENTS[law]
        # delta-method variance of the sample kurtosis of a symmetric unit-variance law
        var_b2 = m8 - m4**2 - 4 * m4 * (m6 - m4) + 4 * m4**2 * (m4 - 1)
        se = np.sqrt(var_b2 / N)
        kurt = stats.kurtosis(x, fisher=False)
        assert abs(kurt - mu4) < 5 * se, (law, kurt, mu4, se)
    else:
        # Student-t(5) has no 8th moment: its sample kurtosis has infinite variance
        # and no standard error. Check the fourth moment truncated at |x| <= c instead,
        # whose standard error is finite, against its exact value under the law.
        c = 6.0
        pdf = LAW_DISTRIBUTIONS[law].pdf
        t4 = integrate.quad(lambda u: u**4 * pdf(u), -c, c, limit=200)[0]
        t8 = integrate.quad(lambda u: u**8 * pdf(u), -c, c, limit=200)[0]
        inside = np.abs(x) <= c
        est = np.mean(np.where(inside, x**4, 0.0))
        assert abs(est - t4) < 5 * np.sqrt((t8 - t4**2) / N)
        # heavy tails: far beyond the Gaussian's 3 even when truncated
        assert t4 > 4.5


def test_draw_latent_rejects_unknown_law(rng):
    with pytest.raises(ValueError, match=r"latent: expected one of \('gaussian', .*\), got 'cauchy'"):
        draw_latent("cauchy", 3, rng)


# --------------------------------------------------- correlated latents
def test_latent_correlation_matrix(hierarchy):
    rho = 0.3
    model = HierarchicalModel.random(hierarchy, latent_correlation=rho, random_state=5)
    phi = model.latent_covariance
    K = hierarchy.n_components
    expected = np.full((K, K), rho)
    for sl in hierarchy.component_slices().values():
        expected[sl, sl] = np.eye(sl.stop - sl.start)
    assert_array_equal(phi, expected)
    assert np.linalg.eigvalsh(phi).min() > 0
    assert np.linalg.eigvalsh(model.covariance()).min() > 0
    A = model.stacked_loadings()
    psi = np.concatenate([model.noise_variances[m] for m in hierarchy.modalities])
    assert_allclose(model.covariance(), A @ phi @ A.T + np.diag(psi), rtol=0, atol=1e-12)


@pytest.mark.parametrize("law", ["gaussian", "laplace"])
def test_latent_correlation_is_realised_by_samples(hierarchy, law):
    rho = 0.3
    model = HierarchicalModel.random(hierarchy, latent=law, latent_correlation=rho, random_state=5)
    n = 40_000
    z = model.sample_latents(n, random_state=6)
    Z = np.concatenate([z[s] for s in hierarchy.structures], axis=1)
    emp = np.cov(Z, rowvar=False)
    # standard error of a covariance entry is at most ~sqrt(mu4 / n) for these laws
    assert_allclose(emp, model.latent_covariance, rtol=0, atol=5 * np.sqrt(6.0 / n))


@pytest.mark.parametrize("rho", [-0.5, -0.2, 0.6, 0.9])
def test_impossible_latent_correlation_errors(hierarchy, rho):
    with pytest.raises(ValueError, match="latent_covariance: not positive definite; lower the cross-structure"):
        HierarchicalModel.random(hierarchy, latent_correlation=rho, random_state=0)


def test_boundary_latent_correlation_is_singular_and_errors(hierarchy):
    # ranks (2, 1, 1, 2, 1): at rho = 1/2 the latent covariance is exactly singular
    # (I - rho diag(k) has two zero entries); a singular covariance is not positive definite.
    with pytest.raises(ValueError, match="latent_covariance: not positive definite"):
        HierarchicalModel.random(hierarchy, latent_correlation=0.5, random_state=0)


@pytest.mark.parametrize("rho", [1.0, -1.0, 1.5])
def test_latent_correlation_out_of_range(hierarchy, rho):
    with pytest.raises(ValueError, match=r"latent_correlation: expected a value in \(-1, 1\)"):
        HierarchicalModel.random(hierarchy, latent_correlation=rho)


# ----------------------------------------------------------- covariances
def test_sample_covariance_converges_at_root_n_rate(model, hierarchy):
    sigma = model.covariance()
    grid = 500 * 2 ** np.arange(6)  # 500 .. 16000
    reps = 8
    seeds = np.random.SeedSequence(99).spawn(len(grid) * reps)
    log_n, log_err = [], []
    for i, n in enumerate(grid):
        for r in range(reps):
            views, _ = model.sample(int(n), random_state=np.random.default_rng(seeds[i * reps + r]))
            S = np.cov(_stack(views, hierarchy), rowvar=False)
            log_n.append(np.log(n))
            log_err.append(np.log(np.linalg.norm(S - sigma)))
    slope = np.polyfit(log_n, log_err, 1)[0]
    assert abs(slope + 0.5) < 0.15, slope


def test_sample_shapes_and_reproducibility(model, hierarchy):
    views, latents = model.sample(50, random_state=3)
    assert list(views) == list(hierarchy.modalities)
    for m in hierarchy.modalities:
        assert views[m].shape == (50, hierarchy.dims[m])
        assert views[m].dtype == np.float64
    again, latents2 = model.sample(50, random_state=3)
    for m in hierarchy.modalities:
        assert_array_equal(again[m], views[m])
    for s in latents:
        assert_array_equal(latents2[s], latents[s])
        assert latents[s].flags["C_CONTIGUOUS"]


def test_views_are_signal_plus_noise_of_the_right_variance(hierarchy):
    model = HierarchicalModel.random(hierarchy, noise=2.0, noise_model="diagonal", random_state=4)
    n = 20_000
    views, z = model.sample(n, random_state=8)
    for m in hierarchy.modalities:
        signal = sum(z[s] @ model.loadings[s][m].T for s in hierarchy.structures_of(m))
        e = views[m] - signal
        psi = model.noise_variances[m]
        # Gaussian noise: the sample variance has relative standard error sqrt(2/n)
        assert_allclose(e.var(axis=0) / psi, 1.0, atol=5 * np.sqrt(2.0 / n))
        assert np.abs(np.corrcoef(e, z[fs("abc")], rowvar=False)[: e.shape[1], e.shape[1]:]).max() < 5 / np.sqrt(n)


def test_same_seed_gives_same_model(hierarchy):
    m1 = HierarchicalModel.random(hierarchy, random_state=123)
    m2 = HierarchicalModel.random(hierarchy, random_state=123)
    assert_array_equal(m1.covariance(), m2.covariance())
    m3 = HierarchicalModel.random(hierarchy, random_state=124)
    assert not np.allclose(m1.covariance(), m3.covariance())


def test_cross_covariance_is_block_of_covariance(model, hierarchy):
    sigma = model.covariance()
    sl = hierarchy.feature_slices()
    for a in hierarchy.modalities:
        for b in hierarchy.modalities:
            block = model.cross_covariance(a, b)
            assert block.shape == (hierarchy.dims[a], hierarchy.dims[b])
            assert_array_equal(block, sigma[sl[a], sl[b]])
    assert_allclose(model.cross_covariance("b", "a"), model.cross_covariance("a", "b").T, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="unknown modality 'z'"):
        model.cross_covariance("a", "z")


def test_sum_of_structures_formula(hierarchy):
    for seed in range(3):
        for noise_model in ("isotropic", "diagonal"):
            model = HierarchicalModel.random(hierarchy, noise_model=noise_model, random_state=seed)
            for a in hierarchy.modalities:
                for b in hierarchy.modalities:
                    shared = [s for s in hierarchy.structures if a in s and b in s]
                    expected = sum(model.loadings[s][a] @ model.loadings[s][b].T for s in shared)
                    if a == b:
                        expected = expected + np.diag(model.noise_variances[a])
                    assert_allclose(model.cross_covariance(a, b), expected, rtol=0, atol=1e-12)
            # a and c share only the global structure: noise-free, one term
            assert_allclose(
                model.cross_covariance("a", "c"), model.signal_block(("a", "b", "c"), "a", "c"), rtol=0, atol=1e-12
            )


def test_signal_block(model):
    assert_allclose(
        model.signal_block(("a", "b"), "a", "b"),
        model.loadings[fs("ab")]["a"] @ model.loadings[fs("ab")]["b"].T,
        rtol=0,
        atol=1e-15,
    )
    with pytest.raises(ValueError, match=r"structure \['a', 'b'\] does not carry components on both 'a' and 'c'"):
        model.signal_block(("a", "b"), "a", "c")
    with pytest.raises(ValueError, match=r"structure \['a', 'c'\] does not carry components"):
        model.signal_block(("a", "c"), "a", "c")


def test_stacked_loadings_pattern_matches_support(model, hierarchy):
    A = model.stacked_loadings()
    assert A.shape == (hierarchy.n_features, hierarchy.n_components)
    B = hierarchy.support_matrix()
    for m, rows in hierarchy.feature_slices().items():
        nonzero = np.any(A[rows] != 0, axis=0).astype(int)
        assert_array_equal(nonzero, B[hierarchy.index(m)])


# --------------------------------------------------------------- outcome
def test_linear_predictor(model, hierarchy):
    z = model.sample_latents(30, random_state=1)
    beta = {("a", "b", "c"): [1.0, -2.0], "c": 0.5}
    eta = model.linear_predictor(z, beta, intercept=0.7)
    expected = 0.7 + z[fs("abc")] @ np.array([1.0, -2.0]) + 0.5 * z[fs("c")][:, 0]
    assert_allclose(eta, expected, rtol=0, atol=1e-14)


def test_continuous_outcome(model):
    n = 20_000
    z = model.sample_latents(n, random_state=2)
    beta = {("a", "b", "c"): [1.0, -1.0], ("a", "b"): [0.5]}
    y = model.outcome(z, beta, noise=0.25, intercept=3.0, random_state=3)
    assert y.shape == (n,) and y.dtype == np.float64
    resid = y - model.linear_predictor(z, beta, intercept=3.0)
    assert abs(resid.mean()) < 5 * 0.5 / np.sqrt(n)
    assert abs(resid.var() - 0.25) < 5 * 0.25 * np.sqrt(2.0 / n)
    # zero noise is allowed and gives the linear predictor exactly
    assert_array_equal(model.outcome(z, beta, noise=0.0, intercept=3.0), model.linear_predictor(z, beta, intercept=3.0))


def test_binary_outcome(model):
    n = 40_000
    z = model.sample_latents(n, random_state=2)
    beta = {("a", "b", "c"): [1.5, 0.0], "b": [0.0, -1.0]}
    y = model.outcome(z, beta, kind="binary", intercept=-0.5, random_state=4)
    assert y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    p = 1.0 / (1.0 + np.exp(-model.linear_predictor(z, beta, intercept=-0.5)))
    se = np.sqrt(np.mean(p * (1 - p)) / n)
    assert abs(y.mean() - p.mean()) < 5 * se
    # and conditionally, on the rows with a large linear predictor
    eta = model.linear_predictor(z, beta, intercept=-0.5)
    hi = eta > 1.0
    assert abs(y[hi].mean() - p[hi].mean()) < 5 * np.sqrt(np.mean(p[hi] * (1 - p[hi])) / hi.sum())


def test_binary_outcome_extreme_predictor_is_quiet(model):
    z = model.sample_latents(200, random_state=2)
    beta = {"a": [2000.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = model.outcome(z, beta, kind="binary", random_state=1)
    assert_array_equal(y, (z[fs("a")][:, 0] > 0).astype(np.int64))


def test_outcome_errors(model):
    z = model.sample_latents(10, random_state=0)
    with pytest.raises(ValueError, match="kind: expected 'continuous' or 'binary', got 'count'"):
        model.outcome(z, {"a": [1.0]}, kind="count")
    with pytest.raises(ValueError, match="noise: expected a non-negative variance, got -1"):
        model.outcome(z, {"a": [1.0]}, noise=-1.0)
    with pytest.raises(ValueError, match=r"beta\[\{a,b,c\}\]: expected 2 coefficients, got 3"):
        model.outcome(z, {("a", "b", "c"): [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"beta: structure \{a,c\} is not a structure of the model"):
        model.outcome(z, {("a", "c"): [1.0]})
    with pytest.raises(ValueError, match=r"names unknown modality \['q'\]"):
        model.outcome(z, {"q": [1.0]})


# ------------------------------------------------------------ validation
def _valid_parts(model):
    loadings = {s: dict(blocks) for s, blocks in model.loadings.items()}
    noise = {m: v.copy() for m, v in model.noise_variances.items()}
    return loadings, noise


def test_constructor_accepts_its_own_parts_and_scalar_noise(model, hierarchy):
    loadings, noise = _valid_parts(model)
    rebuilt = HierarchicalModel(hierarchy, loadings, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert_allclose(rebuilt.covariance(), model.covariance(), rtol=0, atol=1e-15)
    # structure keys in any form
    keyed = {tuple(sorted(s)) if len(s) > 1 else next(iter(s)): v for s, v in loadings.items()}
    assert_allclose(HierarchicalModel(hierarchy, keyed, noise).covariance(), model.covariance(), atol=1e-15)
    assert repr(rebuilt).startswith("HierarchicalModel(Hierarchy(dims=(a=8, b=10, c=12)")


def test_constructor_errors(model, hierarchy):
    loadings, noise = _valid_parts(model)

    with pytest.raises(TypeError, match="hierarchy: expected a Hierarchy, got dict"):
        HierarchicalModel(hierarchy.to_dict(), loadings, noise)
    with pytest.raises(ValueError, match=r"latent: expected one of .*got 'cauchy'"):
        HierarchicalModel(hierarchy, loadings, noise, latent="cauchy")

    bad = dict(loadings)
    bad[fs("ac")] = {"a": np.ones((8, 1)), "c": np.ones((12, 1))}
    with pytest.raises(ValueError, match=r"loadings: structures \['\{a,c\}'\] are not in the hierarchy"):
        HierarchicalModel(hierarchy, bad, noise)

    bad = dict(loadings)
    del bad[fs("ab")]
    with pytest.raises(ValueError, match=r"loadings: structure \{a,b\} of the hierarchy has no loadings"):
        HierarchicalModel(hierarchy, bad, noise)

    bad = {s: dict(b) for s, b in loadings.items()}
    del bad[fs("ab")]["b"]
    with pytest.raises(ValueError, match=r"loadings\[\{a,b\}\]: missing block for modality 'b'"):
        HierarchicalModel(hierarchy, bad, noise)

    bad = {s: dict(b) for s, b in loadings.items()}
    bad[fs("ab")]["c"] = np.ones((12, 1))
    with pytest.raises(ValueError, match=r"loadings\[\{a,b\}\]: modality 'c' is not in this structure"):
        HierarchicalModel(hierarchy, bad, noise)

    bad = {s: dict(b) for s, b in loadings.items()}
    bad[fs("abc")]["b"] = np.ones((10, 3))
    with pytest.raises(ValueError, match=r"loadings\[\{a,b,c\}\]\['b'\]: expected shape \(10, 2\), got \(10, 3\)"):
        HierarchicalModel(hierarchy, bad, noise)

    bad = {s: dict(b) for s, b in loadings.items()}
    bad[fs("c")]["c"] = np.full((12, 1), np.nan)
    with pytest.raises(ValueError, match=r"loadings\[\{c\}\]\['c'\]: contains NaN or inf"):
        HierarchicalModel(hierarchy, bad, noise)

    with pytest.raises(ValueError, match=r"names unknown modality \['z'\]"):
        HierarchicalModel(hierarchy, {**loadings, "z": {"z": np.ones((1, 1))}}, noise)


def test_noise_variance_errors(model, hierarchy):
    loadings, noise = _valid_parts(model)
    with pytest.raises(TypeError, match="noise_variances: expected a dict modality -> variances, got float"):
        HierarchicalModel(hierarchy, loadings, 1.0)
    with pytest.raises(ValueError, match=r"noise_variances: unknown modalities \['z'\]"):
        HierarchicalModel(hierarchy, loadings, {**noise, "z": 1.0})
    with pytest.raises(ValueError, match="noise_variances: missing modality 'c'"):
        HierarchicalModel(hierarchy, loadings, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"noise_variances\['a'\]: expected shape \(8,\), got \(7,\)"):
        HierarchicalModel(hierarchy, loadings, {**noise, "a": np.ones(7)})
    v = np.ones(10)
    v[4] = 0.0
    with pytest.raises(ValueError, match=r"noise_variances\['b'\]: expected positive finite variances, got .*0\.0.* at column 4"):
        HierarchicalModel(hierarchy, loadings, {**noise, "b": v})
    v[4] = np.inf
    with pytest.raises(ValueError, match=r"noise_variances\['b'\]: expected positive finite variances, got .*inf.* at column 4"):
        HierarchicalModel(hierarchy, loadings, {**noise, "b": v})


def test_latent_covariance_errors(model, hierarchy):
    loadings, noise = _valid_parts(model)
    K = hierarchy.n_components
    with pytest.raises(ValueError, match=r"latent_covariance: expected shape \(7, 7\), got \(6, 6\)"):
        HierarchicalModel(hierarchy, loadings, noise, latent_covariance=np.eye(6))
    phi = np.eye(K)
    phi[0, 5] = 0.2
    with pytest.raises(ValueError, match="latent_covariance: expected a symmetric matrix"):
        HierarchicalModel(hierarchy, loadings, noise, latent_covariance=phi)
    phi = np.eye(K)
    phi[0, 1] = phi[1, 0] = 0.2  # inside the global structure
    with pytest.raises(ValueError, match=r"latent_covariance: the block of structure \{a,b,c\} must be the identity"):
        HierarchicalModel(hierarchy, loadings, noise, latent_covariance=phi)
    phi = np.eye(K)
    phi[0, 2] = phi[2, 0] = phi[0, 3] = phi[3, 0] = 0.9
    phi[2, 3] = phi[3, 2] = -0.9
    with pytest.raises(ValueError, match="latent_covariance: not positive definite"):
        HierarchicalModel(hierarchy, loadings, noise, latent_covariance=phi)
    ok = HierarchicalModel(hierarchy, loadings, noise, latent_covariance=np.eye(K))
    assert_allclose(ok.covariance(), model.covariance(), rtol=0, atol=1e-15)


def test_random_errors(hierarchy):
    with pytest.raises(TypeError, match="hierarchy: expected a Hierarchy, got dict"):
        HierarchicalModel.random(hierarchy.to_dict())
    with pytest.raises(ValueError, match="noise_model: expected 'isotropic' or 'diagonal', got 'full'"):
        HierarchicalModel.random(hierarchy, noise_model="full")
    for scale in (0.0, -1.0, "1"):
        with pytest.raises(ValueError, match="loading_scale: expected a positive number"):
            HierarchicalModel.random(hierarchy, loading_scale=scale)
    for sv in ((0.0, 1.0), (2.0, 1.0)):
        with pytest.raises(ValueError, match=r"singular_values: expected \(a, b\) with 0 < a <= b"):
            HierarchicalModel.random(hierarchy, singular_values=sv)
    with pytest.raises(ValueError, match="noise: expected a positive variance level for 'a', got 0"):
        HierarchicalModel.random(hierarchy, noise=0)
    with pytest.raises(ValueError, match="noise: expected a positive variance level for 'b', got -2.0"):
        HierarchicalModel.random(hierarchy, noise={"a": 1.0, "b": -2.0, "c": 1.0})
    with pytest.raises(ValueError, match="noise: expected a positive variance level for 'c', got None"):
        HierarchicalModel.random(hierarchy, noise={"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"latent: expected one of"):
        HierarchicalModel.random(hierarchy, latent="cauchy")
    with pytest.raises(TypeError, match="random_state: expected None, an int"):
        HierarchicalModel.random(hierarchy, random_state="seed")
    with pytest.raises(TypeError, match="random_state: expected None, an int or a numpy Generator, got a bool"):
        HierarchicalModel.random(hierarchy, random_state=True)


@pytest.mark.parametrize("n", [0, -5, 2.5, True, "10"])
def test_sample_rejects_bad_n(model, n):
    with pytest.raises(ValueError, match="n: expected a positive integer number of rows"):
        model.sample(n)


def test_random_state_forms(hierarchy):
    legacy = HierarchicalModel.random(hierarchy, random_state=np.random.RandomState(0))
    seq = HierarchicalModel.random(hierarchy, random_state=np.random.SeedSequence(0))
    assert_array_equal(seq.covariance(), HierarchicalModel.random(hierarchy, random_state=0).covariance())
    assert legacy.covariance().shape == (30, 30)


def test_pure_noise_model_samples_n_rows():
    # a hierarchy without components is the null model: views are noise only
    h = Hierarchy({"a": 3, "b": 4}, {})
    model = HierarchicalModel.random(h, noise=2.0, random_state=0)
    views, latents = model.sample(6000, random_state=1)
    assert latents == {}
    assert views["a"].shape == (6000, 3) and views["b"].shape == (6000, 4)
    assert_array_equal(model.covariance(), 2.0 * np.eye(7))
    S = np.cov(_stack(views, h), rowvar=False)
    assert_allclose(S, 2.0 * np.eye(7), rtol=0, atol=5 * 2.0 * np.sqrt(2.0 / 6000))


def test_sample_equals_latents_then_views(model):
    # sample() is sample_latents() followed by views_from_latents() on one stream
    views, latents = model.sample(40, random_state=9)
    rng = np.random.default_rng(9)
    z = model.sample_latents(40, rng)
    again = model.views_from_latents(z, rng)
    for s in latents:
        assert_array_equal(z[s], latents[s])
    for m in views:
        assert_array_equal(again[m], views[m])
