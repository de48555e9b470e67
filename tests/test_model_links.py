"""Mixed-type links and the mixed model (issue 14): margins, monotonicity, the
latent correlation, the correlation-scale model, specs and their errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from hclstat.hierarchy import Hierarchy
from hclstat.model import (
    ColumnLink,
    HierarchicalModel,
    MixedLinks,
    MixedModel,
    binary,
    continuous,
    count,
    d1_model,
    mixed_d1_all_model,
    mixed_d1_links,
    mixed_d1_model,
    ordinal,
    ternary,
    truncated,
)

#: standard errors allowed for one empirical frequency (one stated margin)
Z_ONE = 4.0
#: for the maximum over many columns or pairs (about 10^4 of them)
Z_MAX = 5.0


def _within_binomial(freq, prob, n, z):
    """Empirical frequencies within ``z`` binomial standard errors of ``prob``."""
    se = np.sqrt(prob * (1.0 - prob) / n)
    assert np.all(np.abs(freq - prob) <= z * se), (freq, prob, z * se)


@pytest.fixture
def u(rng):
    return rng.standard_normal(40_000)


@pytest.fixture
def small_model(hierarchy):
    return HierarchicalModel.random(hierarchy, loading_scale=0.8, noise=1.0, random_state=5)


# ------------------------------------------------------------------ margins
def test_binary_margin_and_zratio(u):
    g = binary(prevalence=0.2)
    x = g(u)
    assert set(np.unique(x)) == {0.0, 1.0}
    _within_binomial(x.mean(), 0.2, u.size, Z_ONE)
    assert g.type_code == "binary"
    assert_allclose(g.thresholds, [stats.norm.ppf(0.8)], rtol=1e-14)
    assert_allclose(g.zratio[0], 0.8, rtol=1e-14) and np.isnan(g.zratio[1])


def test_ternary_margin_and_zratio(u):
    g = ternary((0.2, 0.5, 0.3))
    x = g(u)
    assert set(np.unique(x)) == {0.0, 1.0, 2.0}
    _within_binomial(np.array([(x == k).mean() for k in range(3)]), np.array([0.2, 0.5, 0.3]), u.size, Z_ONE)
    assert g.type_code == "ternary"
    assert_allclose(g.zratio, [0.2, 0.7], rtol=1e-13)


def test_drawn_ordinal_margin(u, rng):
    spec = ordinal(n_levels=5, min_probability=0.05)
    assert not spec.is_resolved and spec.type_code == "ordinal"
    g = spec.resolve(rng)
    p = np.array(g.params["probabilities"])
    assert p.shape == (5,) and np.all(p >= 0.05 - 1e-15)
    assert_allclose(p.sum(), 1.0, rtol=1e-14)
    x = g(u)
    _within_binomial(np.array([(x == k).mean() for k in range(5)]), p, u.size, Z_ONE)
    assert np.all(np.isnan(g.zratio))  # only ternary columns carry two zratios


@pytest.mark.parametrize("transform", ["exp", "shift"])
def test_truncated_margin_and_values(u, transform):
    g = truncated(zero_fraction=0.4, transform=transform)
    x = g(u)
    c = stats.norm.ppf(0.4)
    _within_binomial((x == 0).mean(), 0.4, u.size, Z_ONE)
    above = u > c
    want = np.exp(u[above]) if transform == "exp" else u[above] - c
    assert_allclose(x[above], want, rtol=1e-14)
    assert np.all(x[above] > 0) and np.all(x[~above] == 0)
    assert_allclose(g.zratio[0], 0.4, rtol=1e-13)


def test_poisson_count_margin(u):
    g = count(mean=3.0)
    x = g(u)
    assert g.type_code == "count" and np.all(x == np.round(x))
    pmf = stats.poisson.pmf(np.arange(8), 3.0)
    _within_binomial(np.array([(x == k).mean() for k in range(8)]), pmf, u.size, Z_ONE)
    # the quantile of Phi(u), computed the direct way where Phi(u) is not rounded to 1
    mid = np.abs(u) < 5
    assert_array_equal(x[mid], stats.poisson.ppf(stats.norm.cdf(u[mid]), 3.0))


def test_exp_count_and_continuous_transforms(u):
    assert_array_equal(count(a=0.5, b=0.7)(u), np.floor(np.exp(0.5 + 0.7 * u)))
    assert_allclose(continuous("exp")(u), np.exp(u), rtol=1e-15)
    assert_allclose(continuous("cube")(u), u ** 3, rtol=1e-15)
    assert_array_equal(continuous()(u), u)
    assert_allclose(continuous(np.arctan)(u), np.arctan(u), rtol=1e-15)


@pytest.mark.parametrize("link", [
    continuous(), continuous("exp"), binary(0.1), ternary((0.3, 0.3, 0.4)), ordinal((0.1, 0.2, 0.3, 0.4)),
    truncated(0.5, "exp"), truncated(0.7, "shift"), truncated(0.3, lambda v: np.log1p(np.exp(v))),
    count(mean=1.5), count(a=-1.0, b=2.0),
], ids=lambda link: re.sub(r" at 0x[0-9a-f]+", "", repr(link)))  # stable across xdist workers
def test_every_link_is_monotone(link):
    grid = np.linspace(-8, 8, 20001)
    y = link(grid)
    assert y.shape == grid.shape and np.all(np.isfinite(y))
    assert np.all(np.diff(y) >= 0)
    if link.kind == "continuous":
        assert np.all(np.diff(y) > 0)


# ------------------------------------------------------------ the mixed model
def test_latent_correlation_matches_latent_draws():
    mixed = mixed_d1_all_model(random_state=11)
    n = 20_000
    views, latents, latent_views = mixed.sample(n, random_state=12, return_latent_views=True)
    x = np.hstack([latent_views[m] for m in mixed.hierarchy.modalities])
    R = mixed.latent_correlation()
    assert_allclose(np.diag(R), 1.0, rtol=0, atol=1e-15)
    assert_allclose(R, R.T, rtol=0, atol=0)
    # the latent columns are standardised: mean 0 and variance 1 within a few SE
    assert np.max(np.abs(x.mean(axis=0))) < Z_MAX / np.sqrt(n)
    assert np.max(np.abs(x.var(axis=0) - 1.0)) < Z_MAX * np.sqrt(2.0 / n)
    # a sample correlation's SE is (1 - r^2) / sqrt(n)
    err = np.abs(np.corrcoef(x, rowvar=False) - R)
    assert np.max(err / (1.0 - R ** 2 + 1e-12)) < Z_MAX / np.sqrt(n)
    # the observed views are the links of the latent views
    obs = mixed.observe(latent_views)
    for m in views:
        assert_array_equal(obs[m], views[m])
    assert set(latents) == set(mixed.hierarchy.structures)


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_latent_model_covariance_is_the_latent_correlation(hierarchy, rho):
    model = HierarchicalModel.random(hierarchy, noise=2.0, noise_model="diagonal", latent_correlation=rho,
                                     random_state=3)
    mixed = MixedModel(model, {"a": binary(0.3)})
    R = mixed.latent_correlation()
    assert_allclose(mixed.latent_model().covariance(), R, rtol=0, atol=1e-14)
    D = np.sqrt(np.diag(model.covariance()))
    assert_allclose(R, model.covariance() / np.outer(D, D), rtol=1e-13)
    assert_allclose(mixed.latent_sd(), D, rtol=1e-14)
    assert mixed.latent_model().hierarchy is model.hierarchy


def test_design_margins_match_zratios():
    mixed = mixed_d1_all_model(random_state=2)
    n = 20_000
    views, _ = mixed.sample(n, random_state=4)
    z, types = mixed.zratios, mixed.types
    for m in ("a", "b", "c"):
        lower = np.where(np.isin(types[m], ["binary", "truncated", "ternary"]))[0]
        freq0 = (views[m][:, lower] == 0).mean(axis=0)
        _within_binomial(freq0, z[m][lower, 0], n, Z_MAX)
    tern = np.where(types["a"] == "ternary")[0]
    _within_binomial((views["a"][:, tern] <= 1).mean(axis=0), z["a"][tern, 1], n, Z_MAX)


def test_observed_columns_are_monotone_in_their_latent():
    mixed = mixed_d1_all_model(random_state=6)
    views, _, latent_views = mixed.sample(3000, random_state=7, return_latent_views=True)
    for m in views:
        order = np.argsort(latent_views[m], axis=0)
        sorted_obs = np.take_along_axis(views[m], order, axis=0)
        assert np.all(np.diff(sorted_obs, axis=0) >= 0), m


def test_mixed_d1_designs():
    default = mixed_d1_model(random_state=0)
    assert default.hierarchy.dims == {"a": 50, "b": 60, "c": 70}
    t, z = default.types, default.zratios
    assert np.all(t["a"] == "continuous") and np.all(t["b"] == "binary") and np.all(t["c"] == "truncated")
    prevalence = 1.0 - z["b"][:, 0]
    assert np.all((prevalence >= 0.05) & (prevalence <= 0.3)) and np.unique(prevalence).size == 60
    assert_allclose(z["c"][:, 0], 0.5, rtol=1e-14)
    assert np.all(np.isnan(z["a"]))
    # loadings are d1_model's with the same seed (drawn before the links)
    ref = d1_model(0.5, random_state=0)
    assert_allclose(default.model.stacked_loadings(), ref.stacked_loadings(), rtol=0)
    everything = mixed_d1_all_model(random_state=0)
    kinds, counts = np.unique(everything.types["a"], return_counts=True)
    assert dict(zip(kinds, counts)) == {"continuous": 30, "ternary": 20}
    assert mixed_d1_model(random_state=0, n_mixed="").links.is_identity
    assert set(mixed_d1_links("c")) == {"c"}


# --------------------------------------------------------------- the specs
def test_per_column_and_per_modality_specs(small_model):
    p = small_model.hierarchy.dims
    per_column = [binary(0.2)] * 3 + [continuous()] * (p["b"] - 3)
    mixed = small_model.with_links({"a": {0: ternary((0.2, 0.3, 0.5)), 5: count(mean=2.0)},
                                    "b": per_column, "c": binary((0.05, 0.3))}, random_state=1)
    t = mixed.types
    assert t["a"][0] == "ternary" and t["a"][5] == "count"
    assert np.all(np.delete(t["a"], [0, 5]) == "continuous")
    assert list(t["b"][:4]) == ["binary"] * 3 + ["continuous"]
    prevalence = 1.0 - mixed.zratios["c"][:, 0]
    assert np.all((prevalence >= 0.05) & (prevalence <= 0.3)) and np.unique(prevalence).size == p["c"]
    assert mixed.zratios["a"].shape == (p["a"], 2)
    # a modality left out is continuous; explicit resolved links round-trip
    assert np.all(MixedModel(small_model, {}).types["c"] == "continuous")
    again = MixedModel(small_model, mixed.links)
    assert again.links is mixed.links


def test_reproducible_with_a_seed():
    one, two = mixed_d1_all_model(random_state=9), mixed_d1_all_model(random_state=9)
    for m in ("a", "b", "c"):
        assert_array_equal(one.zratios[m], two.zratios[m])
    v1, _ = one.sample(50, random_state=3)
    v2, _ = two.sample(50, random_state=3)
    for m in v1:
        assert_array_equal(v1[m], v2[m])
    other = mixed_d1_all_model(random_state=10)
    assert not np.allclose(other.zratios["b"], one.zratios["b"])


@pytest.mark.parametrize("make, match", [
    (lambda: ColumnLink("poisson", mean=1.0), r"kind: expected one of"),
    (lambda: ColumnLink("binary", prevalence=0.2, mean=1.0), r"binary: unknown parameters \['mean'\]"),
    (lambda: binary(1.5), r"binary: prevalence must lie in \(0, 1\), got 1.5"),
    (lambda: binary(0.0), r"binary: prevalence must lie in \(0, 1\)"),
    (lambda: binary((0.2, 1.0)), r"range of prevalence must satisfy 0 < lo <= hi < 1"),
    (lambda: binary("often"), r"binary: prevalence expected a number in \(0, 1\) or a range"),
    (lambda: ColumnLink("binary"), r"binary: prevalence is required"),
    (lambda: continuous(np.sin), r"continuous: the transform is not strictly increasing"),
    (lambda: continuous(lambda v: float(v)), r"continuous: the transform failed on an array argument"),
    (lambda: continuous("log"), r"continuous: transform expected one of"),
    (lambda: truncated(0.5, lambda v: v - 10.0), r"truncated: the transform must be positive on \(c, inf\)"),
    (lambda: truncated(0.5, lambda v: -v), r"truncated: the transform is not strictly increasing"),
    (lambda: truncated(1.0), r"truncated: zero_fraction must lie in \(0, 1\)"),
    (lambda: ordinal((0.2, 0.2, 0.2)), r"ordinal: probabilities must be positive and sum to 1"),
    (lambda: ordinal((0.4, 0.6)), r"at least 3 category probabilities \(2 levels: use binary\)"),
    (lambda: ordinal(n_levels=2), r"ordinal: expected probabilities or an integer n_levels >= 3"),
    (lambda: ordinal(n_levels=4, min_probability=0.3), r"min_probability must lie in \[0, 1/n_levels\)"),
    (lambda: count(), r"count: give either mean"),
    (lambda: count(mean=-1.0), r"count: mean expected a positive number"),
    (lambda: count(a=0.0, b=-1.0), r"count: expected numbers a and b > 0"),
])
def test_link_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_model_spec_errors(small_model):
    with pytest.raises(ValueError, match=r"links: unknown modalities \['z'\]; the model has \['a', 'b', 'c'\]"):
        small_model.with_links({"z": binary(0.2)})
    with pytest.raises(ValueError, match=r"links\['a'\]: expected 8 column links \(p_a = 8\), got 3"):
        small_model.with_links({"a": [binary(0.2)] * 3})
    with pytest.raises(ValueError, match=r"links\['a'\]: column indices \[8\] outside 0..7"):
        small_model.with_links({"a": {8: binary(0.2)}})
    with pytest.raises(TypeError, match=r"links\['b'\]\[1\]: expected a ColumnLink, got str"):
        small_model.with_links({"b": [binary(0.2), "binary"] + [continuous()] * 8})
    with pytest.raises(ValueError, match=r"unresolved parameters; call resolve"):
        MixedLinks({"a": [binary((0.1, 0.2))]})
    with pytest.raises(ValueError, match=r"links\['a'\]: expected 8 column links, got 2"):
        MixedModel(small_model, MixedLinks({"a": [binary(0.2)] * 2, "b": [continuous()] * 10,
                                            "c": [continuous()] * 12}))
    with pytest.raises(ValueError, match=r"n_mixed: expected distinct modalities"):
        mixed_d1_model(n_mixed="bd")
    with pytest.raises(TypeError, match=r"model: expected a HierarchicalModel"):
        MixedModel("model", {})


def test_non_gaussian_latents_need_identity_links():
    h = Hierarchy({"a": 4, "b": 5}, {("a", "b"): 1})
    model = HierarchicalModel.random(h, loading_scale=1.0, latent="laplace", random_state=0)
    with pytest.raises(ValueError, match=r"mixed links need Gaussian latents .* got latent='laplace'"):
        MixedModel(model, {"a": binary(0.3)})
    views, _ = MixedModel(model, {"a": continuous()}).sample(10, random_state=0)
    assert views["a"].shape == (10, 4)


# ------------------------------------------------ the MOFA+ peer on mixed views
def _peers():
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip("mofapy2")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    spec = importlib.util.spec_from_file_location("_bench_peers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_mofa_peer_takes_per_view_likelihoods():
    peers = _peers()
    h = Hierarchy({"a": 6, "b": 8, "c": 5}, {("a", "b", "c"): 1, "a": 1})
    mixed = MixedModel(HierarchicalModel.random(h, loading_scale=1.0, random_state=0),
                       {"b": binary(0.3), "c": count(mean=2.0)})
    views, _ = mixed.sample(150, random_state=1)
    fit = peers.fit_mofa(views, n_factors=3, max_iter=30, likelihoods={"b": "bernoulli", "c": "poisson"})
    assert fit.info["likelihoods"] == {"a": "gaussian", "b": "bernoulli", "c": "poisson"}
    # the likelihoods reached mofapy2's model: its observation nodes
    assert fit.info["y_nodes"] == {"a": "Y_Node", "b": "Bernoulli_PseudoY_Jaakkola", "c": "Poisson_PseudoY"}
    assert fit.r2.shape == (3, 3) and fit.W["b"].shape == (8, 3)
    assert set(peers.fit_mofa(views, n_factors=2, max_iter=5).info["y_nodes"].values()) == {"Y_Node"}
    assert peers.mofa_likelihoods(views) == ["gaussian"] * 3
    with pytest.raises(ValueError, match=r"likelihoods\['a'\]: a 'poisson' view must hold non-negative integers"):
        peers.mofa_likelihoods(views, "poisson")
    with pytest.raises(ValueError, match=r"likelihoods\['a'\]: a 'bernoulli' view must hold only 0 and 1"):
        peers.mofa_likelihoods(views, {"a": "bernoulli"})
    with pytest.raises(ValueError, match=r"likelihoods\['b'\]: expected one of \('gaussian', 'bernoulli'"):
        peers.mofa_likelihoods(views, {"b": "binomial"})
    with pytest.raises(ValueError, match=r"likelihoods: unknown modalities \['z'\]"):
        peers.mofa_likelihoods(views, {"z": "poisson"})
