"""Tests for the issue-13 designs of :mod:`hclstat.model.designs`: shapes, ranks, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from hclstat.hierarchy import Hierarchy
from hclstat.model import (
    LARGE_RANK_DIMS,
    LARGE_RANK_RANKS,
    WIDE_DIMS,
    HierarchicalModel,
    LatentClassRule,
    d1_model,
    independent_views_hierarchy,
    independent_views_model,
    large_rank_hierarchy,
    large_rank_model,
    wide_hierarchy,
    wide_model,
)

fs = frozenset


def _same_model(m1, m2):
    assert m1.hierarchy == m2.hierarchy
    for s, blocks in m1.loadings.items():
        for m, a in blocks.items():
            assert_array_equal(a, m2.loadings[s][m])
    for m, v in m1.noise_variances.items():
        assert_array_equal(v, m2.noise_variances[m])


# ------------------------------------------------------------------ p >> n
def test_wide_design_has_the_issue_ranks_and_widths():
    h = wide_hierarchy()
    assert h.dims == {"a": 200, "b": 400, "c": 800} == WIDE_DIMS
    assert h.ranks == {fs("abc"): 2, fs("ab"): 1, fs("a"): 2, fs("b"): 2, fs("c"): 2}
    model = wide_model(random_state=0)
    entries = np.concatenate([a.ravel() for blocks in model.loadings.values() for a in blocks.values()])
    # i.i.d. N(0, 0.5^2): 200*5 + 400*5 + 800*4 = 6200 entries, standard error of the sd about 0.0045
    assert entries.size == 6200
    assert abs(entries.std() - 0.5) < 0.02
    views, latents = model.sample(100, random_state=1)
    assert {m: x.shape for m, x in views.items()} == {"a": (100, 200), "b": (100, 400), "c": (100, 800)}
    assert set(latents) == set(h.structures)


def test_wide_pure_noise_variant_has_no_component():
    model = wide_model(signal=False, noise_model="diagonal", random_state=3)
    assert model.hierarchy.dims == WIDE_DIMS
    assert model.hierarchy.n_components == 0
    views, latents = model.sample(50, random_state=4)
    assert latents == {}
    assert views["c"].shape == (50, 800)
    # heteroskedastic noise: variances spread over a factor of 16 at most
    v = model.noise_variances["c"]
    assert v.max() / v.min() <= 16.0 + 1e-9 and v.max() / v.min() > 8.0
    with pytest.raises(TypeError, match="signal: expected a bool"):
        wide_hierarchy(signal=1)


def test_wide_model_is_reproducible_by_seed():
    _same_model(wide_model(random_state=7), wide_model(random_state=7))
    a = wide_model(random_state=7).loadings[fs("ab")]["a"]
    b = wide_model(random_state=8).loadings[fs("ab")]["a"]
    assert not np.allclose(a, b)


# ------------------------------------------------------------ large ranks
def test_large_rank_design_ranks_fit_every_width():
    h = large_rank_hierarchy()
    assert list(h.dims.values()) == [80, 200, 60, 250, 50, 8] and h.dims == LARGE_RANK_DIMS
    assert h.n_components == 42 == sum(LARGE_RANK_RANKS.values())
    totals = {m: h.modality_rank(m) for m in h.modalities}
    assert totals == {"a": 13, "b": 18, "c": 8, "d": 19, "e": 8, "f": 4}
    # every modality's total rank within the Ledermann bound (p - r)^2 >= p + r (factor analysis identified)
    for m, r in totals.items():
        p = h.dims[m]
        assert (p - r) ** 2 >= p + r, m
    assert h.rank(("a", "b", "c", "d", "e", "f")) == 3
    assert sorted(h.rank(m) for m in h.modalities) == [1, 3, 3, 5, 8, 8]


def test_large_rank_model_loadings_and_noise():
    model = large_rank_model(random_state=0)
    for blocks in model.loadings.values():
        for a in blocks.values():
            d = np.linalg.svd(a, compute_uv=False)
            assert d.min() >= 2.0 - 1e-12 and d.max() <= 4.0 + 1e-12
    v = np.concatenate(list(model.noise_variances.values()))
    assert v.max() / v.min() > 8.0  # heteroskedastic by default
    _same_model(model, large_rank_model(random_state=0))
    iso = large_rank_model(noise_model="isotropic", random_state=0)
    assert_allclose(np.concatenate(list(iso.noise_variances.values())), 1.0)


def test_latent_class_rule_draws_ten_classes_from_the_latents():
    model = large_rank_model(random_state=0)
    rule = LatentClassRule(model, random_state=1)
    assert rule.n_classes == 10
    used = set(rule.coefficients)
    assert used == {fs("abcdef"), fs("bd"), fs("cde"), fs("b"), fs("c")}
    assert sum(b.shape[0] for b in rule.coefficients.values()) == 3 + 4 + 2 + 8 + 3
    _, latents = model.sample(1600, random_state=2)
    y = rule(latents, random_state=3)
    assert y.shape == (1600,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    # without noise the label is the argmax of the linear class scores
    exact = LatentClassRule(model, noise=0.0, random_state=1)
    assert_array_equal(exact(latents), np.argmax(exact.scores(latents), axis=1))
    # the scores have unit variance per class
    assert_allclose(exact.scores(latents).var(axis=0).mean(), 1.0, rtol=0.15)
    # same seed, same coefficients; labels change only through eps
    again = LatentClassRule(model, random_state=1)
    assert_array_equal(again(latents, random_state=3), y)
    assert np.mean(rule(latents, random_state=4) == y) > 0.8


def test_latent_class_rule_on_another_model_and_bad_input():
    model = d1_model(random_state=0)
    rule = LatentClassRule(model, n_classes=3, random_state=0)
    assert set(rule.coefficients) == set(model.hierarchy.structures)
    rule = LatentClassRule(model, n_classes=3, structures=["a"], random_state=0)
    assert set(rule.coefficients) == {fs("a")}
    with pytest.raises(ValueError, match="n_classes: expected an integer >= 2"):
        LatentClassRule(model, n_classes=1)
    with pytest.raises(ValueError, match="structures: expected structures of the model"):
        LatentClassRule(model, structures=[("a", "c")])
    with pytest.raises(TypeError, match="model: expected a HierarchicalModel"):
        LatentClassRule(model.hierarchy)


# -------------------------------------------------------- independent views
@pytest.mark.parametrize("ratio, n, p", [(0.1, 100, 10), (5, 100, 500), (0.5, 7, 4), (0.01, 10, 1)])
def test_independent_views_widths_follow_p_over_n(ratio, n, p):
    model = independent_views_model(ratio, n, random_state=0)
    assert model.hierarchy.dims == {"a": p, "b": p, "c": p}
    assert model.hierarchy.n_components == 0
    views, _ = model.sample(n, random_state=1)
    assert all(x.shape == (n, p) for x in views.values())


def test_independent_views_noise_models_and_seeds():
    iso = independent_views_model(1.0, 50, n_modalities=4, random_state=0)
    assert iso.hierarchy.modalities == ("a", "b", "c", "d")
    assert_allclose(iso.noise_variances["d"], 1.0)
    het = independent_views_model(1.0, 50, noise=2.0, noise_model="diagonal", random_state=0)
    v = np.concatenate(list(het.noise_variances.values()))
    assert v.min() >= 2.0 / 4 - 1e-12 and v.max() <= 2.0 * 4 + 1e-12 and v.max() / v.min() > 8
    _same_model(het, independent_views_model(1.0, 50, noise=2.0, noise_model="diagonal", random_state=0))
    x1, _ = het.sample(50, random_state=5)
    x2, _ = het.sample(50, random_state=5)
    assert_array_equal(x1["a"], x2["a"])
    assert independent_views_hierarchy({"x": 3, "y": 4}) == Hierarchy({"x": 3, "y": 4}, {})
    with pytest.raises(ValueError, match="p_over_n: expected a positive number"):
        independent_views_model(0, 50)
    with pytest.raises(ValueError, match="n_modalities: expected an integer >= 2"):
        independent_views_model(1.0, 50, n_modalities=1)
    assert isinstance(iso, HierarchicalModel)
