"""The latent Gaussian copula source and HCL(types=...): moments, nulls, fits, scores, errors."""

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import HCL
from hclstat.exceptions import EstimationWarning
from hclstat.model import independent_views_model, mixed_d1_all_model, mixed_d1_model
from hclstat.model.links import MixedLinks, binary, truncated
from hclstat.model.engine import MixedModel
from hclstat.moments.copula import copula_moments, resolve_types


def _sample(model, n, seed):
    views, _ = model.sample(n, random_state=seed)
    return views


@pytest.fixture(scope="module")
def mixed():
    model = mixed_d1_model(random_state=0)
    return model, _sample(model, 2000, 1)


def test_latent_correlation_matches_the_model(mixed):
    """Every block of the estimate within a few standard errors of the true latent correlation."""
    model, views = mixed
    types = resolve_types("auto", views, {})
    assert list(types["b"]) == ["binary"] * 60 and list(types["c"]) == ["truncated"] * 70
    cop = copula_moments(views, types)
    R, truth = cop.latent_correlation, model.latent_correlation()
    err = (R - truth)[np.triu_indices_from(R, 1)]
    # binary columns at 5% prevalence inflate the variance up to ~4.5x per column: bound by the inflation
    c = cop.margins.inflation
    scale = np.sqrt(np.outer(c, c)[np.triu_indices_from(R, 1)] / views["a"].shape[0])
    z = err / scale
    # measured sd 0.90-0.97 per pair type; rare binary pairs clipped at -0.999 make the only heavy tail
    assert 0.85 < np.std(z) < 1.1 and np.quantile(np.abs(z), 0.999) < 4.0
    assert abs(np.mean(z)) < 0.05  # no bias (16,110 pairs)


def test_inflation_is_the_null_variance_of_the_latent_estimate():
    """Under independence n r_hat_jk^2 / (c_j c_k) averages 1 (the factorised null variance)."""
    h_model = independent_views_model(0.1, 1000, random_state=3)
    a, b, _ = h_model.hierarchy.modalities
    links = MixedLinks.from_specs({a: binary(prevalence=(0.05, 0.3)), b: truncated(zero_fraction=0.5, transform="exp")},
                                  h_model.hierarchy.dims, random_state=3)
    model = MixedModel(h_model, links)
    ratios, clipped = [], 0
    for seed in range(4):
        views = _sample(model, 1000, seed)
        cop = copula_moments(views, resolve_types("auto", views, {}))
        R, c = cop.pointwise, cop.margins.inflation
        keep = np.triu(np.ones(R.shape, dtype=bool), 1)
        for j, k in cop.bound_pairs:  # set to +/-0.999 and named in a warning: not a null draw
            keep[j, k] = False
        clipped += len(cop.bound_pairs)
        ratios.append(1000 * R[keep] ** 2 / np.outer(c, c)[keep])
    ratios = np.concatenate(ratios)
    assert clipped < 0.002 * ratios.size
    # chi-square(1) mean 1, sd sqrt(2); pairs are nearly independent at the null (measured: 1.005 pooled,
    # 1.001-1.009 per seed, in line with the per-seed SE 0.0067)
    assert abs(ratios.mean() - 1.0) < 5 * np.sqrt(2.0 / ratios.size)


def test_monotone_transforms_of_continuous_columns_leave_the_moments_unchanged(mixed):
    _, views = mixed
    types = resolve_types("auto", views, {})
    bent = dict(views, a=np.exp(views["a"]) ** 3)
    a, b = copula_moments(views, types), copula_moments(bent, types)
    assert_allclose(a.moments.covariance, b.moments.covariance, atol=1e-12)


def test_hcl_types_learns_the_mixed_pattern_where_pearson_does_not(mixed):
    model, views = mixed
    est = HCL(types="auto", random_state=0).fit(views)
    assert est.hierarchy_ == model.hierarchy, est.hierarchy_
    assert {m: set(t) for m, t in est.types_.items()} == {"a": {"continuous"}, "b": {"binary"}, "c": {"truncated"}}
    for m, psi in est.noise_variances_.items():
        assert np.all((psi > 0) & (psi < 1.0 + 1e-9)), m  # latent uniquenesses on the correlation scale
    with pytest.warns(EstimationWarning, match=r"'b': 60 binary.*'c': 70 with a point mass"):
        HCL(random_state=0).fit(views)


def test_all_mixed_design_is_learned():
    model = mixed_d1_all_model(random_state=2)
    views = _sample(model, 2000, 5)
    est = HCL(types="auto", random_state=0).fit(views)
    assert est.hierarchy_ == model.hierarchy, est.hierarchy_


def test_transform_scores_new_rows_from_the_training_margins(mixed):
    model, views = mixed
    est = HCL(types="auto", random_state=0).fit(views)
    new, latents = model.sample(500, random_state=9)
    Z = est.transform(new)
    for s, z in Z.items():
        truth = latents[s][:, 0]
        assert abs(np.corrcoef(z[:, 0], truth)[0, 1]) > 0.5, s
    assert np.isfinite(est.score(new))
    bad = dict(new, b=new["b"].copy())
    bad["b"][3, 7] = 0.5
    with pytest.raises(ValueError, match=r"'b' column 7 \(binary\): row 3 holds 0.5"):
        est.transform(bad)


def test_missing_entries_and_absent_rows_are_pairwise(mixed):
    model, views = mixed
    rng = np.random.default_rng(4)
    holed = {m: np.where(rng.random(x.shape) < 0.2, np.nan, x) for m, x in views.items()}
    est = HCL(types="auto", random_state=0).fit(holed)
    assert est.hierarchy_ == model.hierarchy, est.hierarchy_
    frames = {m: pd.DataFrame(x, index=[f"s{i}" for i in range(x.shape[0])]) for m, x in views.items()}
    frames["c"] = frames["c"].iloc[:1500]
    est = HCL(types={"b": "binary"}, random_state=0).fit(frames)
    assert est.types_["b"].tolist() == ["binary"] * 60 and set(est.types_["c"]) == {"truncated"}


def test_bad_types_are_clear_errors(mixed):
    _, views = mixed
    with pytest.raises(ValueError, match=r"types: unknown modalities \['z'\]"):
        HCL(types={"z": "binary"}).fit(views)
    with pytest.raises(ValueError, match=r"modality 'a'"):
        HCL(types={"a": "binary"}).fit(views)
    with pytest.raises(ValueError, match="call fit"):
        from hclstat.moments import compute_moments

        HCL(types="auto").fit_moments(compute_moments(views))
    with pytest.raises(ValueError, match="types"):
        HCL(types="ordinal").fit(views)


def test_continuous_data_give_no_mixed_warning():
    model = mixed_d1_model(random_state=0, n_mixed="")
    views = _sample(model, 300, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        HCL(random_state=0).fit(views)


def test_cli_type_fits_the_copula_and_reports_the_types(tmp_path, capsys, mixed):
    from hclstat import cli

    _, views = mixed
    args = []
    for m, x in views.items():
        frame = pd.DataFrame(x[:800], columns=[f"{m}{j}" for j in range(x.shape[1])])
        frame.insert(0, "sid", [f"s{i}" for i in range(800)])
        frame.to_csv(tmp_path / f"{m}.csv", index=False)
        args += ["--view", f"{m}={tmp_path / f'{m}.csv'}"]
    out = tmp_path / "res"
    code = cli.main(["fit", *args, "--id", "sid", "--type", "b=binary", "--type", "auto", "--out", str(out), "-q",
                     "--no-figures"])
    err = capsys.readouterr().err
    assert code == 0, err
    kinds = pd.read_csv(out / "column_types.csv")
    assert kinds.groupby("modality")["type"].agg(lambda t: set(t)).to_dict() == {
        "a": {"continuous"}, "b": {"binary"}, "c": {"truncated"}}
    summary = (out / "summary.txt").read_text()
    assert "b: 60 binary" in summary and "c: 70 truncated" in summary
    code = cli.main(["fit", *args, "--id", "sid", "--type", "q=binary", "--out", str(tmp_path / "r2"), "-q"])
    assert code != 0 and "--type: unknown modality 'q'" in capsys.readouterr().err


@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_null_scores_are_the_rank_scores_over_their_hermite_slopes(mixed, missing):
    # the pass forms them in place from the centred mid-ranks: the same as rank_scores / (slope / sqrt 8)
    from hclstat.moments.bridges import bridge_slope_at_zero
    from hclstat.moments.column_types import zratios
    from hclstat.moments.ranks import rank_scores

    _, views = mixed
    rng = np.random.default_rng(5)
    arrays = {m: np.where(rng.random(x.shape) < missing, np.nan, x) for m, x in views.items()}
    types = resolve_types("auto", arrays, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        cop = copula_moments(arrays, types)
    for m, x in arrays.items():
        e = bridge_slope_at_zero(types[m], zratios(x, types[m])) / np.sqrt(8.0)
        assert_allclose(cop.null_scores[m], rank_scores(x, types[m]) / e, rtol=1e-13, atol=1e-15)
