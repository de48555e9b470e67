"""Deflated lattice counts: beyond the first, a cross rank's next singular value is tested
against the null of the pair with the counted directions projected off (issue 13, p >> n)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hclstat import HCL
from hclstat.calibration import draw_joint_permutations
from hclstat.model import wide_model
from hclstat.moments import CentredData


def _reference(views, a, others, left, right, draws):
    """Brute force: the permuted cross-covariance in float64, the directions projected off both
    sides, its top singular value."""
    X = {m: v - v.mean(axis=0) for m, v in views.items()}
    La, Ru = np.linalg.qr(left)[0], np.linalg.qr(right)[0]
    PL, PR = np.eye(La.shape[0]) - La @ La.T, np.eye(Ru.shape[0]) - Ru @ Ru.T
    n, count = X[a].shape[0], next(iter(draws.values())).shape[0]

    def rows(m, b):
        return X[m][draws[m][b]] if m in draws else X[m]

    out = []
    for b in range(count):
        C = rows(a, b).T @ np.hstack([rows(o, b) for o in others]) / (n - 1)
        out.append(np.linalg.svd(PL @ C @ PR, compute_uv=False)[0])
    return np.array(out)


@pytest.mark.parametrize("widths", [(12, 20, 9), (150, 30, 60)])  # the second: a block wider than n
def test_deflated_null_equals_projected_permuted_data(widths):
    rng = np.random.default_rng(3)
    n = 80
    z = rng.standard_normal((n, 2))
    views = {m: z @ rng.standard_normal((2, p)) + rng.standard_normal((n, p)) for m, p in zip("abc", widths)}
    source = CentredData(views, dense_nulls=True)
    draws = draw_joint_permutations(list(views), n, 7, np.random.default_rng(0))
    for a, others, k in (("a", ["b"], 1), ("b", ["a", "c"], 2), ("c", ["a"], 2)):
        left, _, right = source.cross_svd(a, others, k)
        got = source.deflated_permutation_nulls(a, others, left, right, draws)
        assert_allclose(got, _reference(views, a, others, left, right, draws), rtol=2e-4)


def test_deflated_nulls_refuse_missing_entries():
    x = np.random.default_rng(0).standard_normal((30, 4))
    x[0, 0] = np.nan
    masks = {"a": ~np.isnan(x), "b": np.ones((30, 3), bool)}
    views = {"a": np.nan_to_num(x), "b": np.random.default_rng(1).standard_normal((30, 3))}
    source = CentredData(views, dense_nulls=True, masks=masks)
    assert not source.supports_deflation
    with pytest.raises(ValueError, match="complete rows"):
        source.deflated_permutation_nulls("a", ["b"], np.eye(4, 1), np.eye(3, 1), {"b": np.arange(30)[None]})


@pytest.mark.parametrize("seed", [6, 7, 9])  # the seeds of bench_real_regimes --only wide that missed {a,b}
def test_wide_design_keeps_the_pair_factor(seed):
    """p = (200, 400, 800), n = 100: without deflation these seeds lose the {a,b} factor (a count
    of 2 where the truth is 3); the deflated thresholds count it."""
    model = wide_model(random_state=np.random.default_rng([29, seed, 0]))
    views, _ = model.sample(100, random_state=np.random.default_rng([29, seed, 1]))
    est = HCL(random_state=seed).fit(views)
    assert est.hierarchy_.ranks == model.hierarchy.ranks
    obs = est.lattice_.observed
    # some count went past a threshold below the family's undeflated one
    used = obs["deflated_threshold"].notna()
    assert used.any()
    assert (obs.loc[used, "deflated_threshold"] < obs.loc[used, "threshold"]).all()
