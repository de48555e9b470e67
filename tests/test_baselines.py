"""Baselines: shared/private factor model, concatenated PCA, pairwise CCA."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose

from hclstat import ConvergenceWarning, HierarchicalModel, Hierarchy
from hclstat.baselines import ConcatenatedPCA, PairwiseCCA, SharedPrivate
from hclstat.estimators.sfa import StructuredFactorAnalysis
from hclstat.metrics import subspace_distance
from hclstat.moments import compute_moments

D1_DIMS = {"a": 50, "b": 60, "c": 70}
AB = frozenset({"a", "b"})
ABC = frozenset({"a", "b", "c"})
#: room for the {a,b} factor in the private blocks of a and b
PRIVATE = {"a": 2, "b": 2, "c": 1}


@pytest.fixture(scope="module")
def d1():
    return Hierarchy(D1_DIMS, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1})


@pytest.fixture(scope="module")
def d1_model(d1):
    return HierarchicalModel.random(d1, loading_scale=0.3, random_state=41)


@pytest.fixture(scope="module")
def d1_views(d1_model):
    views, _ = d1_model.sample(2000, random_state=42)
    return views


@pytest.fixture(scope="module")
def sp_fit(d1_views):
    return SharedPrivate(1, PRIVATE, random_state=0).fit(d1_views)


def _concat(views):
    return np.concatenate([views[m] for m in ("a", "b", "c")], axis=1)


# ------------------------------------------------------------- SharedPrivate
def test_shared_private_is_sfa_on_the_binary_hierarchy(d1_views, sp_fit):
    sp = sp_fit
    h = sp.hierarchy_
    assert h == Hierarchy(D1_DIMS, {("a", "b", "c"): 1, "a": 2, "b": 2, "c": 1})
    assert [h.level(s) for s in h.structures] == ["global", "specific", "specific", "specific"]
    assert isinstance(sp, StructuredFactorAnalysis)
    sfa = StructuredFactorAnalysis(h, random_state=0).fit(d1_views)
    for s in h.structures:
        for m in s:
            assert sp.loadings_[s][m].shape == (D1_DIMS[m], h.rank(s))
            assert_allclose(sp.loadings_[s][m], sfa.loadings_[s][m], rtol=0, atol=1e-12)
    assert np.all(np.diff(sp.loglik_path_) >= -1e-10 * abs(sp.loglik_))
    scores = sp.transform(d1_views)
    assert {s: z.shape for s, z in scores.items()} == {s: (2000, h.rank(s)) for s in h.structures}


def test_shared_private_misplaces_the_partial_factor(d1, d1_model, d1_views, sp_fit):
    """The {a,b} factor has no home in the binary view: it lands in the private blocks."""
    sp = sp_fit
    oracle = StructuredFactorAnalysis(d1, random_state=0).fit(d1_views)
    assert not any(sp.hierarchy_.level(s) == "partial" for s in sp.hierarchy_.structures)
    # the partial factor's columns sit inside each modality's private span ...
    for m in ("a", "b"):
        truth = d1_model.loadings[AB][m]
        priv = sp.loadings_[frozenset({m})][m]
        proj = priv @ np.linalg.lstsq(priv, truth, rcond=None)[0]
        assert np.linalg.norm(truth - proj) / np.linalg.norm(truth) < 0.3
    # ... where they cannot explain the a-b covariance they create
    sigma = d1_model.covariance()
    sl = d1.feature_slices()
    ref = sigma[sl["a"], sl["b"]]

    def ab_error(est):
        fit = est.implied_covariance()[sl["a"], sl["b"]]
        return np.linalg.norm(fit - ref) / np.linalg.norm(ref)

    assert ab_error(sp) > 0.4
    assert ab_error(oracle) < 0.2


def test_shared_private_rank_dict(d1_views):
    sp = SharedPrivate(2, {"a": 1, "b": 0, "c": 1}, noise_model="isotropic", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sp.fit(d1_views)
    assert sp.hierarchy_.ranks == {ABC: 2, frozenset("a"): 1, frozenset("c"): 1}
    assert np.ptp(sp.noise_variances_["b"]) == 0.0
    assert sp.get_params()["n_private"] == {"a": 1, "b": 0, "c": 1}


def test_shared_private_passes_acceleration_on(d1_views, sp_fit):
    assert sp_fit.get_params()["acceleration"] == "squarem" and sp_fit.n_extrapolated_ > 0
    plain = SharedPrivate(1, PRIVATE, acceleration="none", max_iter=20_000, random_state=0).fit(d1_views)
    assert plain.n_extrapolated_ == 0 and plain.converged_
    assert plain.n_iter_ > sp_fit.n_iter_
    assert_allclose(plain.loglik_, sp_fit.loglik_, rtol=1e-9)
    with pytest.raises(ValueError, match=r"acceleration: expected 'squarem' or 'none', got None"):
        SharedPrivate(acceleration=None).fit(d1_views)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_private": {"a": 1, "b": 1}}, r"n_private: expected a rank for every modality .* \(missing \['c'\], unknown \[\]\)"),
        ({"n_private": {"a": 1, "b": 1, "c": 1, "d": 1}}, r"missing \[\], unknown \['d'\]"),
        ({"n_shared": -1}, r"n_shared: expected a non-negative integer, got -1"),
        ({"n_private": 1.5}, r"n_private: expected a non-negative integer or a dict, got 1.5"),
        ({"n_private": {"a": 1, "b": -2, "c": 1}}, r"n_private\['b'\]: expected a non-negative integer, got -2"),
    ],
)
def test_shared_private_bad_ranks(d1_views, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SharedPrivate(**kwargs).fit(d1_views)


def test_shared_private_needs_two_modalities(rng):
    with pytest.raises(ValueError, match=r"SharedPrivate: expected at least 2 modalities .* got 1"):
        SharedPrivate().fit({"a": rng.standard_normal((50, 5))})


# ----------------------------------------------------------- ConcatenatedPCA
def test_pca_recovers_leading_eigenvectors(d1_views):
    pca = ConcatenatedPCA(4).fit(d1_views)
    X = _concat(d1_views)
    S = np.cov(X, rowvar=False)
    w, V = np.linalg.eigh(S)
    w, V = w[::-1][:4], V[:, ::-1][:, :4]
    assert_allclose(pca.explained_variance_, w, rtol=1e-10)
    for j in range(4):
        v = pca.components_[j]
        assert_allclose(v * np.sign(v @ V[:, j]), V[:, j], rtol=0, atol=1e-8)
    assert_allclose(pca.explained_variance_ratio_, w / np.trace(S), rtol=1e-10)


def test_pca_fitted_attributes(d1_views):
    pca = ConcatenatedPCA(3).fit(d1_views)
    h = pca.hierarchy_
    assert h.structures == (ABC,) and h.rank(ABC) == 3
    assert set(pca.loadings_) == {ABC}
    A = pca.stacked_loadings()
    assert A.shape == (180, 3)
    for m, p in D1_DIMS.items():
        assert pca.loadings_[ABC][m].shape == (p, 3)
        assert pca.noise_variances_[m].shape == (p,)
    # loadings = axes scaled by sqrt(eigenvalue); noise = residual diagonal
    assert_allclose(A.T @ A, np.diag(pca.explained_variance_), atol=1e-9)
    S = compute_moments(d1_views).covariance
    assert_allclose(np.diag(pca.implied_covariance()), np.diag(S), rtol=1e-10)
    scores = pca.transform(d1_views)
    assert scores[ABC].shape == (2000, 3)
    pcs = pca.principal_scores(d1_views)[ABC]
    assert_allclose(np.cov(pcs, rowvar=False), np.eye(3), atol=1e-10)
    # posterior means and standardised PC scores span nearly the same directions
    assert subspace_distance(pcs, scores[ABC]) < 0.1


def test_pca_errors(d1_views):
    with pytest.raises(ValueError, match=r"n_components: expected at most min_m p_m = 50 .* got 51"):
        ConcatenatedPCA(51).fit(d1_views)
    with pytest.raises(ValueError, match=r"n_components: expected a positive integer, got 0"):
        ConcatenatedPCA(0).fit(d1_views)
    pca = ConcatenatedPCA(2).fit(d1_views)
    holed = {m: x.copy() for m, x in d1_views.items()}
    holed["a"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"principal_scores: expected complete rows, got missing entries"):
        pca.principal_scores(holed)


# --------------------------------------------------------------- PairwiseCCA
def _independent_cca(S_aa, S_bb, S_ab, ridge):
    """Canonical correlations via Cholesky whitening (a different square root)."""
    ra = S_aa + ridge * np.trace(S_aa) / S_aa.shape[0] * np.eye(S_aa.shape[0])
    rb = S_bb + ridge * np.trace(S_bb) / S_bb.shape[0] * np.eye(S_bb.shape[0])
    La, Lb = np.linalg.cholesky(ra), np.linalg.cholesky(rb)
    K = scipy.linalg.solve_triangular(La, S_ab, lower=True)
    K = scipy.linalg.solve_triangular(Lb, K.T, lower=True).T
    return scipy.linalg.svd(K, compute_uv=False)


@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_cca_correlations_match_direct_computation(d1_views, ridge):
    cca = PairwiseCCA(2, ridge=ridge).fit(d1_views)
    S = np.cov(_concat(d1_views), rowvar=False)
    sl = {"a": slice(0, 50), "b": slice(50, 110), "c": slice(110, 180)}
    assert list(cca.pairs_) == [("a", "b"), ("a", "c"), ("b", "c")]
    for (a, b), pr in cca.pairs_.items():
        d = _independent_cca(S[sl[a], sl[a]], S[sl[b], sl[b]], S[sl[a], sl[b]], ridge)
        assert_allclose(pr["correlations"], d[:2], rtol=0, atol=1e-10)
        wa, wb = pr["weights"][a], pr["weights"][b]
        assert wa.shape == (D1_DIMS[a], 2) and wb.shape == (D1_DIMS[b], 2)
        # weights give canonical variates: unit variance (without ridge), correlation rho
        ua, ub = _concat(d1_views)[:, sl[a]] @ wa, _concat(d1_views)[:, sl[b]] @ wb
        if ridge == 0.0:
            assert_allclose(np.cov(ua, rowvar=False), np.eye(2), atol=1e-8)
            assert_allclose(np.cov(ub, rowvar=False), np.eye(2), atol=1e-8)
            assert_allclose(np.diag(np.cov(ua.T, ub.T)[:2, 2:]), pr["correlations"], atol=1e-8)


def test_cca_loadings_reconstruct_cross_covariance(rng):
    """With full rank and no ridge, A_a A_b^T is the sample cross-covariance itself."""
    X = rng.standard_normal((300, 9)) @ rng.standard_normal((9, 9))
    views = {"a": X[:, :4], "b": X[:, 4:]}
    cca = PairwiseCCA(4, ridge=0.0).fit(views)
    S = compute_moments(views).covariance
    la, lb = cca.loadings_[AB]["a"], cca.loadings_[AB]["b"]
    assert_allclose(la @ lb.T, S[:4, 4:], atol=1e-10)


def test_cca_fitted_structure_and_scores(d1_model, d1_views):
    cca = PairwiseCCA(1).fit(d1_views)
    h = cca.hierarchy_
    assert set(h.structures) == {AB, frozenset("ac"), frozenset("bc")}
    assert all(h.rank(s) == 1 for s in h.structures)
    for s, blocks in cca.loadings_.items():
        assert {m: a.shape for m, a in blocks.items()} == {m: (D1_DIMS[m], 1) for m in s}
    assert not hasattr(cca, "noise_variances_")
    scores = cca.transform(d1_views)
    assert {s: z.shape for s, z in scores.items()} == {s: (2000, 1) for s in h.structures}
    # the a-c and b-c pairs can only share the global factor: their loadings find it
    glob = d1_model.loadings[ABC]
    for pair, m in ((frozenset("ac"), "c"), (frozenset("bc"), "c")):
        assert subspace_distance(cca.loadings_[pair][m], glob[m]) < 0.5
    with pytest.raises(NotImplementedError, match=r"no joint noise model"):
        cca.get_results()
    with pytest.raises(NotImplementedError, match=r"no joint noise model"):
        cca.implied_covariance()


def test_cca_errors(d1_views, rng):
    with pytest.raises(ValueError, match=r"ridge: expected a non-negative number, got -0.1"):
        PairwiseCCA(ridge=-0.1).fit(d1_views)
    with pytest.raises(ValueError, match=r"expected \(M - 1\) \* n_components <= p_m = 50, got 52"):
        PairwiseCCA(26).fit(d1_views)
    with pytest.raises(ValueError, match=r"PairwiseCCA: expected at least 2 modalities, got 1"):
        PairwiseCCA().fit({"a": rng.standard_normal((40, 3))})
    wide = {"a": rng.standard_normal((10, 30)), "b": rng.standard_normal((10, 4))}
    with pytest.raises(ValueError, match=r"modality 'a': expected a positive definite .* use ridge > 0"):
        PairwiseCCA(ridge=0.0).fit(wide)
    PairwiseCCA(ridge=1e-3).fit(wide)  # the ridge makes the wide modality usable
