"""StructuredFactorAnalysis: the oracle estimator handed the true pattern."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone

from hclstat import ConvergenceWarning, HierarchicalModel, Hierarchy
from hclstat.estimators.sfa import (
    HEYWOOD_RESTARTS,
    NOISE_FLOOR,
    StructuredFactorAnalysis,
    check_rank_budget,
    count_parameters,
    pattern_arrays,
)
from hclstat.kernels import em as em_kernels
from hclstat.kernels.em import gaussian_loglik
from hclstat.metrics import loading_errors
from hclstat.model.designs import d1_hierarchy
from hclstat.model.designs import d1_model as make_d1_model
from hclstat.moments import compute_moments, moments_from_covariance

D1_DIMS = {"a": 50, "b": 60, "c": 70}
D1_RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1}


@pytest.fixture(scope="module")
def d1():
    return Hierarchy(D1_DIMS, D1_RANKS)


@pytest.fixture(scope="module")
def d1_model(d1):
    return HierarchicalModel.random(d1, loading_scale=0.3, random_state=11)


@pytest.fixture(scope="module")
def d1_views(d1_model):
    views, latents = d1_model.sample(2000, random_state=12)
    return views, latents


def _loglik_is_monotone(path):
    return np.all(np.diff(path) >= -1e-10 * np.abs(path[-1]))


# ----------------------------------------------------------------- the pattern
def test_pattern_arrays(d1):
    feat_ptr, free_ptr, free_idx = pattern_arrays(d1)
    assert feat_ptr.tolist() == [0, 50, 110, 180]
    # components: 0 global, 1 {a,b}, 2 {a}, 3 {b}, 4 {c}
    free = [free_idx[free_ptr[m] : free_ptr[m + 1]].tolist() for m in range(3)]
    assert free == [[0, 1, 2], [0, 1, 3], [0, 4]]
    assert feat_ptr.dtype == free_ptr.dtype == free_idx.dtype == np.int64


def test_count_parameters(d1):
    loadings = 180 + 110 + 50 + 60 + 70
    assert count_parameters(d1, "diagonal") == loadings + 180
    assert count_parameters(d1, "isotropic") == loadings + 3
    h = Hierarchy({"a": 6, "b": 6}, {("a", "b"): 2})
    assert count_parameters(h, "isotropic") == 2 * 12 - 1 + 2


# ------------------------------------------------------------------ EM on data
@pytest.mark.parametrize("acceleration", ["squarem", "none"])
@pytest.mark.parametrize("noise_model", ["diagonal", "isotropic"])
@pytest.mark.parametrize("init", ["spectral", "random"])
def test_loglik_never_decreases(d1, d1_views, noise_model, init, acceleration):
    views, _ = d1_views
    sfa = StructuredFactorAnalysis(
        d1, noise_model=noise_model, init=init, acceleration=acceleration, random_state=0
    ).fit(views)
    path = sfa.loglik_path_
    if acceleration == "none":
        assert path.shape == (sfa.n_iter_ + 1,) and sfa.n_extrapolated_ == 0
    else:
        # at most three EM steps per accepted iteration, and the extrapolation is used
        assert sfa.n_iter_ / 3 <= path.shape[0] - 1 < sfa.n_iter_
        assert sfa.n_extrapolated_ > 0
    assert _loglik_is_monotone(path)
    assert path[-1] > path[0]
    assert sfa.converged_
    assert sfa.loglik_ == path[-1]


def test_fitted_attributes_and_loglik_value(d1, d1_views):
    views, _ = d1_views
    sfa = StructuredFactorAnalysis(d1, random_state=0).fit(views)
    assert sfa.hierarchy_ is d1
    assert set(sfa.loadings_) == set(d1.structures)
    for s in d1.structures:
        assert set(sfa.loadings_[s]) == set(s)
        for m, a in sfa.loadings_[s].items():
            assert a.shape == (D1_DIMS[m], d1.rank(s))
    for m, p in D1_DIMS.items():
        assert sfa.noise_variances_[m].shape == (p,)
        assert np.all(sfa.noise_variances_[m] > 0)
    # the recorded log-likelihood is the Gaussian one of the returned parameters
    S = compute_moments(views).covariance
    psi = np.concatenate([sfa.noise_variances_[m] for m in d1.modalities])
    ll = 2000 * gaussian_loglik(S, sfa.stacked_loadings(), psi)
    assert_allclose(sfa.loglik_, ll, rtol=1e-10)
    assert sfa.n_parameters_ == count_parameters(d1)
    assert_allclose(sfa.bic_, -2 * sfa.loglik_ + sfa.n_parameters_ * np.log(2000))


def test_transform_recovers_latents(d1, d1_views):
    views, latents = d1_views
    sfa = StructuredFactorAnalysis(d1, random_state=0).fit(views)
    scores = sfa.transform(views)
    assert set(scores) == set(d1.structures)
    for s in d1.structures:
        assert scores[s].shape == (2000, 1)
        corr = abs(np.corrcoef(scores[s][:, 0], latents[s][:, 0])[0, 1])
        assert corr > 0.85, (d1.name(s), corr)


def test_deterministic_given_random_state(d1, d1_views):
    views, _ = d1_views
    fits = [StructuredFactorAnalysis(d1, random_state=5).fit(views) for _ in range(2)]
    for s in d1.structures:
        for m in s:
            assert np.array_equal(fits[0].loadings_[s][m], fits[1].loadings_[s][m])
    other = StructuredFactorAnalysis(d1, random_state=6).fit(views)
    # another perturbation of the start reaches the same optimum
    assert_allclose(other.loglik_, fits[0].loglik_, rtol=1e-9)


# ------------------------------------------- convergence on strong signals
#: D1 at loading scale s = 1 (n = 500, sample seed 10_000 + seed): seeds on which
#: plain EM stops at its default budget of 1000 steps (the oracle of issue 12)
STRONG_SEEDS = (0, 5)


def _strong_d1_moments(seed):
    model = make_d1_model(loading_scale=1.0, noise=1.0, random_state=seed)
    views, _ = model.sample(500, random_state=10_000 + seed)
    return compute_moments(views)


@pytest.mark.parametrize("seed", STRONG_SEEDS)
def test_converges_on_strong_signal_at_default_budget(seed):
    """Fails on plain EM: it warns and stops at a budget of 1000 M-steps on these seeds."""
    moments = _strong_d1_moments(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sfa = StructuredFactorAnalysis(d1_hierarchy(), random_state=seed).fit_moments(moments)
    assert sfa.converged_
    assert sfa.n_iter_ < 300  # measured 151 (seed 0) and 82 (seed 5)
    assert _loglik_is_monotone(sfa.loglik_path_)


@pytest.mark.parametrize("seed", STRONG_SEEDS)
def test_plain_em_runs_out_on_strong_signal(seed):
    """The case the acceleration exists for: plain EM does not converge in 1000 steps."""
    moments = _strong_d1_moments(seed)
    with pytest.warns(ConvergenceWarning, match=r"did not converge in max_iter=1000"):
        plain = StructuredFactorAnalysis(d1_hierarchy(), acceleration="none", max_iter=1000,
                                         random_state=seed).fit_moments(moments)
    assert not plain.converged_ and plain.n_iter_ == 1000
    accelerated = StructuredFactorAnalysis(d1_hierarchy(), random_state=seed).fit_moments(moments)
    # the accelerated optimum is at least as likely as plain EM at its budget
    assert accelerated.loglik_ >= plain.loglik_


@pytest.mark.parametrize("seed, noise_model", [(0, "diagonal"), (5, "diagonal"), (0, "isotropic")])
def test_accelerated_optimum_matches_long_plain_em(seed, noise_model):
    """Same maximum as plain EM run to tol=1e-13 (about 3000 of its 50,000 allowed steps)."""
    moments = _strong_d1_moments(seed)
    h = d1_hierarchy()
    fast = StructuredFactorAnalysis(h, noise_model=noise_model, random_state=seed).fit_moments(moments)
    ref = StructuredFactorAnalysis(
        h, noise_model=noise_model, acceleration="none", max_iter=50_000, tol=1e-13, random_state=seed
    ).fit_moments(moments)
    assert fast.converged_ and ref.converged_
    assert_allclose(fast.loglik_, ref.loglik_, rtol=1e-11)
    # implied covariances agree entrywise to 2e-5 of the largest entry (measured <= 6e-6;
    # plain EM at its 1000-step budget is off by 1.3e-4 on seed 0)
    C_fast, C_ref = fast.implied_covariance(), ref.implied_covariance()
    assert np.max(np.abs(C_fast - C_ref)) <= 2e-5 * np.max(np.abs(C_ref))


def test_rejected_extrapolations_fall_back_to_plain_em(d1, d1_views, monkeypatch):
    """The safeguard: extrapolations that lower the likelihood are never accepted."""
    views, _ = d1_views
    good = StructuredFactorAnalysis(d1, random_state=0).fit(views)
    real = em_kernels.squarem_point

    def overshoot(*args):
        A, psi, alpha = real(*args)
        return 50.0 * A, psi, alpha  # far off the likelihood's ridge

    monkeypatch.setattr(em_kernels, "squarem_point", overshoot)
    sfa = StructuredFactorAnalysis(d1, random_state=0).fit(views)
    assert sfa.n_extrapolated_ == 0
    assert _loglik_is_monotone(sfa.loglik_path_)
    assert sfa.converged_
    assert_allclose(sfa.loglik_, good.loglik_, rtol=1e-9)


# ------------------------------------------------------- the oracle's accuracy
@pytest.mark.parametrize("noise_model", ["diagonal", "isotropic"])
def test_population_covariance_recovers_truth(d1, noise_model):
    model = HierarchicalModel.random(d1, loading_scale=0.3, noise_model=noise_model, random_state=3)
    pop = moments_from_covariance(model.covariance(), d1.dims, 1000)
    sfa = StructuredFactorAnalysis(d1, noise_model=noise_model, tol=1e-12, max_iter=5000, random_state=0)
    sfa.fit_moments(pop)
    assert sfa.converged_
    errors = loading_errors(sfa.loadings_, model.loadings)
    assert len(errors) == 8
    assert max(errors.values()) < 1e-5, errors
    for m in d1.modalities:
        assert_allclose(sfa.noise_variances_[m], model.noise_variances[m], rtol=1e-6)
    assert_allclose(sfa.implied_covariance(), model.covariance(), atol=1e-8)


def test_error_rate_is_root_n(d1):
    """Mean sin-theta error per level decays like n^{-1/2} on a doubling grid."""
    ns = np.array([250, 500, 1000, 2000, 4000])
    levels = ("global", "partial", "specific")
    err = {lv: np.zeros(len(ns)) for lv in levels}
    cnt = {lv: np.zeros(len(ns)) for lv in levels}
    for seed in range(4):
        model = HierarchicalModel.random(d1, loading_scale=0.3, random_state=100 + seed)
        for i, n in enumerate(ns):
            views, _ = model.sample(int(n), random_state=1000 * seed + int(n))
            sfa = StructuredFactorAnalysis(d1, random_state=seed).fit(views)
            assert _loglik_is_monotone(sfa.loglik_path_)
            for (s, _m), e in loading_errors(sfa.loadings_, model.loadings).items():
                err[d1.level(s)][i] += e
                cnt[d1.level(s)][i] += 1
    for lv in levels:
        mean = err[lv] / cnt[lv]
        slope = np.polyfit(np.log(ns), np.log(mean), 1)[0]
        assert abs(slope + 0.5) < 0.15, (lv, slope, mean)
        assert np.all(np.diff(mean) < 0), (lv, mean)


def test_diagonal_vs_isotropic_noise(d1):
    model = HierarchicalModel.random(d1, loading_scale=0.3, noise_model="diagonal", random_state=21)
    views, _ = model.sample(3000, random_state=22)
    moments = compute_moments(views)
    diag = StructuredFactorAnalysis(d1, noise_model="diagonal", random_state=0).fit_moments(moments)
    iso = StructuredFactorAnalysis(d1, noise_model="isotropic", random_state=0).fit_moments(moments)
    for m in d1.modalities:
        assert np.ptp(iso.noise_variances_[m]) == 0.0  # one variance per modality
        corr = np.corrcoef(diag.noise_variances_[m], model.noise_variances[m])[0, 1]
        assert corr > 0.95
    # nested models: the heteroskedastic fit is at least as likely, and here much more so
    assert diag.loglik_ > iso.loglik_ + 100
    assert iso.n_parameters_ == diag.n_parameters_ - 180 + 3
    # on heteroskedastic data the right noise model estimates the loadings better
    e_diag = np.mean(list(loading_errors(diag.loadings_, model.loadings).values()))
    e_iso = np.mean(list(loading_errors(iso.loadings_, model.loadings).values()))
    assert e_diag < e_iso


def test_isotropic_truth_fits_both_noise_models(d1):
    model = HierarchicalModel.random(d1, loading_scale=0.3, noise_model="isotropic", random_state=23)
    views, _ = model.sample(3000, random_state=24)
    moments = compute_moments(views)
    for nm in ("diagonal", "isotropic"):
        sfa = StructuredFactorAnalysis(d1, noise_model=nm, random_state=0).fit_moments(moments)
        for m in d1.modalities:
            assert_allclose(sfa.noise_variances_[m].mean(), 1.0, atol=0.05)
        assert max(loading_errors(sfa.loadings_, model.loadings).values()) < 0.2


def test_warm_start_from_truth(d1, d1_model, d1_views):
    views, _ = d1_views
    warm = StructuredFactorAnalysis(d1, init=d1_model.loadings).fit(views)
    cold = StructuredFactorAnalysis(d1, random_state=0).fit(views)
    assert_allclose(warm.loglik_, cold.loglik_, rtol=1e-9)


def test_pairwise_complete_moments(d1, d1_model):
    views, _ = d1_model.sample(1500, random_state=31)
    rng = np.random.default_rng(32)
    holed = {m: np.where(rng.uniform(size=x.shape) < 0.05, np.nan, x) for m, x in views.items()}
    sfa = StructuredFactorAnalysis(d1, random_state=0).fit(holed)
    assert max(loading_errors(sfa.loadings_, d1_model.loadings).values()) < 0.3
    scores = sfa.transform(holed)
    assert all(np.all(np.isfinite(z)) for z in scores.values())


def test_sklearn_contract(d1, d1_views):
    views, _ = d1_views
    est = StructuredFactorAnalysis(d1, noise_model="isotropic", max_iter=50, random_state=1)
    params = est.get_params()
    assert params["hierarchy"] is d1 and params["noise_model"] == "isotropic"
    c = clone(est)
    assert c.get_params()["max_iter"] == 50
    assert not hasattr(c, "loadings_")
    results = StructuredFactorAnalysis(d1, random_state=0).fit(views).get_results()
    assert "n_iter" in results.summary()


def test_verbose_logs(d1, d1_views, caplog):
    views, _ = d1_views
    with caplog.at_level(logging.INFO, logger="hclstat.estimators.sfa"):
        sfa = StructuredFactorAnalysis(d1, verbose=10, random_state=0).fit(views)
    assert len(caplog.records) == sfa.n_iter_ // 10
    assert "log-likelihood" in caplog.records[0].getMessage()


# ------------------------------------------------------------------- failures
def test_convergence_warning(d1, d1_views):
    views, _ = d1_views
    with pytest.warns(ConvergenceWarning, match=r"did not converge in max_iter=3 iterations") as record:
        sfa = StructuredFactorAnalysis(d1, max_iter=3, random_state=0).fit(views)
    assert record[0].filename == __file__  # points at the caller, not into the package
    assert not sfa.converged_ and sfa.n_iter_ == 3
    with pytest.warns(ConvergenceWarning) as record:
        StructuredFactorAnalysis(d1, max_iter=3, random_state=0).fit_moments(compute_moments(views))
    assert record[0].filename == __file__
    assert _loglik_is_monotone(sfa.loglik_path_)


def test_missing_hierarchy(d1_views):
    views, _ = d1_views
    with pytest.raises(ValueError, match=r"needs the sharing pattern; pass hierarchy=\.\.\. or use HCL"):
        StructuredFactorAnalysis().fit(views)


def test_hierarchy_of_other_data(d1_views):
    views, _ = d1_views
    h = Hierarchy({"a": 50, "b": 60, "c": 71}, {("a", "b", "c"): 1})
    with pytest.raises(ValueError, match=r"do not match the data"):
        StructuredFactorAnalysis(h).fit(views)
    with pytest.raises(TypeError, match=r"hierarchy: expected a Hierarchy or None, got dict"):
        StructuredFactorAnalysis({"a": 1}).fit(views)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise_model": "full"}, r"noise_model: expected 'diagonal' or 'isotropic', got 'full'"),
        ({"max_iter": 0}, r"max_iter: expected a positive integer, got 0"),
        ({"tol": -1.0}, r"tol: expected a non-negative number, got -1.0"),
        ({"init": "pca"}, r"init: expected 'spectral', 'random' or a dict, got 'pca'"),
        ({"verbose": -1}, r"verbose: expected a bool or a non-negative integer, got -1"),
        ({"acceleration": "aitken"}, r"acceleration: expected 'squarem' or 'none', got 'aitken'"),
    ],
)
def test_bad_parameters(d1, d1_views, kwargs, match):
    views, _ = d1_views
    with pytest.raises(ValueError, match=match):
        StructuredFactorAnalysis(d1, **kwargs).fit(views)


def test_bad_init_dict(d1, d1_model, d1_views):
    views, _ = d1_views
    bad = {s: dict(b) for s, b in d1_model.loadings.items()}
    bad[frozenset({"a", "b"})]["a"] = np.zeros((50, 2))
    with pytest.raises(ValueError, match=r"init\[\{a,b\}\]\['a'\]: expected shape \(50, 1\), got \(50, 2\)"):
        StructuredFactorAnalysis(d1, init=bad).fit(views)
    partial = {s: b for s, b in d1_model.loadings.items() if len(s) > 1}
    with pytest.raises(ValueError, match=r"init: expected loadings for every structure, got none for \{a\}"):
        StructuredFactorAnalysis(d1, init=partial).fit(views)
    with pytest.raises(TypeError, match=r"init: expected 'spectral', 'random' or a dict, got list"):
        StructuredFactorAnalysis(d1, init=[1]).fit(views)


def test_rank_budget(rng):
    full = Hierarchy({"a": 3, "b": 4}, {("a", "b"): 2, "a": 1})
    with pytest.raises(ValueError, match=r"modality 'a' has total rank 3 and 3 columns; expected a total rank below"):
        check_rank_budget(full)
    one = Hierarchy({"a": 3}, {"a": 2})
    with pytest.raises(ValueError, match=r"expected at most 6 parameters, got 8"):
        check_rank_budget(one)
    X = rng.standard_normal((100, 3))
    with pytest.raises(ValueError, match=r"expected at most 6 parameters, got 8"):
        StructuredFactorAnalysis(one).fit({"a": X})


def test_constant_column(rng):
    h = Hierarchy({"a": 4, "b": 5}, {("a", "b"): 1})
    views = {"a": rng.standard_normal((50, 4)), "b": rng.standard_normal((50, 5))}
    views["b"][:, 2] = 1.0
    with pytest.raises(ValueError, match=r"modality 'b' column 2: expected a positive variance, got 0\.0"):
        StructuredFactorAnalysis(h).fit(views)


def _loading_rates_case(replication, n, n_largest):
    """The diagonal-noise data of ``loading_rates`` replication ``replication``: its model, and the
    first ``n`` rows of its sample of ``n_largest`` (the check's nested samples)."""
    from hclstat.studies import replication_seed

    seed = replication_seed(20240702, 1, replication)
    rng_model, rng_data = (np.random.default_rng(x) for x in np.random.SeedSequence(seed).spawn(2))
    h = d1_hierarchy()
    model = HierarchicalModel.random(h, singular_values=(0.5, 1.5), noise=0.5, noise_model="diagonal",
                                     random_state=rng_model)
    return h, model, {m: x[:n] for m, x in model.sample(n_largest, random_state=rng_data)[0].items()}


def test_a_heywood_case_converges_at_the_noise_bound():
    """A noise variance whose likelihood supremum is at 0 (a Heywood case).

    The data of the quick ``loading_rates`` check (diagonal noise, replication 9,
    n = 1000) where the oracle did not converge: with the old floor (1e-6 of the
    variance) EM crept towards 0 from the spectral start and had not converged
    after 20,000 M-steps; with the factanal-style bound that run converges at
    the bound (3409 M-steps) and the restarts find the likelier interior maximum.
    """
    h, model, views = _loading_rates_case(9, 1000, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sfa = StructuredFactorAnalysis(h, noise_model="diagonal", random_state=9).fit(views)
    assert sfa.converged_
    # the spectral start ends at a Heywood local maximum (the {a} factor collapsed onto
    # one feature, sin-theta 1.0, 40 log-likelihood units below the maximum); the
    # restarts find the maximum, which a start at the truth also reaches
    assert sfa.n_starts_ == 1 + HEYWOOD_RESTARTS and not sfa.heywood_
    from_truth = StructuredFactorAnalysis(h, noise_model="diagonal", init=model.loadings).fit(views)
    assert_allclose(sfa.loglik_, from_truth.loglik_, rtol=1e-9)
    assert loading_errors(sfa.loadings_, model.loadings)[(frozenset("a"), "a")] < 0.5


def test_spectral_run_still_drifting_at_max_iter_is_restarted():
    """Issue 12 (full-mode loading_rates, diagonal noise, replication 26 at n = 8000): the spectral start
    drifted for all 10,000 M-steps towards a specific factor collapsed onto one column (sin-theta 1.0,
    ~1100 log-likelihood units below the maximum) and the oracle reported a ConvergenceWarning; random
    restarts reach the maximum in 40-70 steps, and the start at the truth agrees."""
    h, model, views = _loading_rates_case(26, 8000, 64000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sfa = StructuredFactorAnalysis(h, noise_model="diagonal", random_state=26).fit(views)
    assert sfa.converged_ and sfa.n_starts_ == 1 + HEYWOOD_RESTARTS
    from_truth = StructuredFactorAnalysis(h, noise_model="diagonal", init=model.loadings).fit(views)
    assert_allclose(sfa.loglik_, from_truth.loglik_, rtol=1e-9)
    assert max(loading_errors(sfa.loadings_, model.loadings).values()) < 0.3
