"""Absent modalities: modalities measured on different samples, joined on their IDs.

Views given as DataFrames are joined on their index (outer join,
:func:`hclstat.data.check_views`); the fit uses every row a modality has
(pairwise counts per covariance block), the scores use the modalities each
sample has, and the command line keeps every sample by default and reports
the rows of each modality and each pair.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import cli
from hclstat.data import MIN_BLOCK_ROWS, check_views, joined_index
from hclstat.estimators.base import gaussian_log_likelihood, posterior_scores
from hclstat.estimators.hcl import HCL
from hclstat.estimators.matrix_free import MatrixFreeHCL
from hclstat.exceptions import EstimationWarning
from hclstat.hierarchy import Hierarchy
from hclstat.io import load_views
from hclstat.io.join import shared_rows_table
from hclstat.metrics import block_errors, loading_errors, pattern_scores
from hclstat.model import HierarchicalModel, d1_model
from hclstat.moments import compute_moments

SMALL = Hierarchy({"a": 6, "b": 7, "c": 8}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "c": 1})


def _ids(n):
    return np.array([f"s{i:04d}" for i in range(n)], dtype=object)


def _d1_absent(seed, n=1000, fraction=0.4):
    """D1 (s = 0.3): ``fraction`` of the rows lack one whole modality (drawn per row), IDs in the index.

    Returns the model, the frames with absent rows, and the complete frames on the same rows.
    """
    model = d1_model(0.3, random_state=seed)
    views, _ = model.sample(n, random_state=seed)
    rng = np.random.default_rng(seed + 1000)
    ids = _ids(n)
    hit = rng.random(n) < fraction
    which = rng.integers(0, len(views), n)
    frames = {m: pd.DataFrame(x[~(hit & (which == k))], index=ids[~(hit & (which == k))])
              for k, (m, x) in enumerate(views.items())}
    return model, frames, {m: pd.DataFrame(x, index=ids) for m, x in views.items()}


def _mean(errors):
    return float(np.mean(list(errors.values())))


@pytest.fixture
def small(rng):
    """SMALL sampled on 200 rows; ``a`` lacks rows 0-39, ``c`` rows 150-199 (IDs in the index)."""
    model = HierarchicalModel.random(SMALL, random_state=rng)
    views, _ = model.sample(200, random_state=rng)
    ids = _ids(200)
    keep = {"a": slice(40, 200), "b": slice(0, 200), "c": slice(0, 150)}
    frames = {m: pd.DataFrame(x[keep[m]], index=ids[keep[m]]) for m, x in views.items()}
    return model, views, frames, ids


# ------------------------------------------------------------------ the join
def test_frames_with_different_rows_are_outer_joined(small):
    _, views, frames, ids = small
    arrays, _ = check_views(frames)
    # union in order of first appearance: a's rows, then the ones b adds
    order = np.r_[np.arange(40, 200), np.arange(40)]
    assert list(joined_index(frames)) == list(ids[order])
    for m in "abc":
        assert arrays[m].shape == (200, SMALL.dims[m])
    assert np.isnan(arrays["a"][160:]).all() and not np.isnan(arrays["a"][:160]).any()
    assert_allclose(arrays["b"], views["b"][order], rtol=0, atol=0)
    c_rows = order < 150
    assert_allclose(arrays["c"][c_rows], views["c"][order[c_rows]], rtol=0, atol=0)
    assert np.isnan(arrays["c"][~c_rows]).all()


def test_moments_use_the_rows_each_pair_shares(small):
    _, views, frames, _ = small
    mom = compute_moments(frames)
    assert mom.n_samples == 200
    counts = {(a, b): mom.block_count(a, b) for a in "abc" for b in "abc"}
    assert counts[("a", "a")] == 160 and counts[("b", "b")] == 200 and counts[("c", "c")] == 150
    assert counts[("a", "b")] == 160 and counts[("a", "c")] == 110 and counts[("b", "c")] == 150
    # block (a, c) is the covariance of rows 40-149, exactly
    ref = np.cov(np.hstack([views["a"][40:150], views["c"][40:150]]).T)
    assert_allclose(mom.block("a", "c"), ref[:6, 6:], rtol=1e-10, atol=1e-12)


def test_reordered_index_is_aligned_not_matched_by_position(small):
    _, views, _, ids = small
    frames = {m: pd.DataFrame(x, index=ids) for m, x in views.items()}
    perm = np.random.default_rng(3).permutation(200)
    shuffled = {**frames, "b": frames["b"].iloc[perm]}
    assert list(joined_index(shuffled)) == list(ids)
    assert_allclose(compute_moments(shuffled).covariance, compute_moments(frames).covariance, rtol=1e-12, atol=1e-12)
    assert not compute_moments(shuffled).has_missing


def test_arrays_need_equal_row_counts():
    with pytest.raises(ValueError, match=r"views: row counts differ across modalities \{'a': 30, 'b': 25\}; "
                                         r"tables without sample IDs \(arrays\) are matched by position"):
        check_views({"a": np.zeros((30, 3)), "b": np.ones((25, 2))})


def test_frames_and_arrays_cannot_be_joined():
    a = pd.DataFrame(np.ones((4, 2)), index=list("wxyz"))
    b = pd.DataFrame(np.ones((3, 2)), index=list("xyq"))
    with pytest.raises(ValueError, match=r"views: modalities \['a', 'b'\] are DataFrames with different indices .* "
                                         r"but \['c'\] carry no IDs"):
        check_views({"a": a, "b": b, "c": np.ones((4, 2))})
    # the same index in the same order: positional, arrays welcome
    arrays, _ = check_views({"a": a, "c": np.ones((4, 2))})
    assert arrays["c"].shape == (4, 2)


def test_duplicated_index_label_is_an_error():
    a = pd.DataFrame(np.ones((4, 2)), index=list("wxyz"))
    b = pd.DataFrame(np.ones((3, 2)), index=list("xyx"))
    with pytest.raises(ValueError, match=r"modality 'b': duplicated index label 'x' \(1 label\(s\) repeated\)"):
        check_views({"a": a, "b": b})


def test_modalities_without_common_ids_are_an_error():
    rng = np.random.default_rng(0)
    a = pd.DataFrame(rng.standard_normal((20, 3)), index=range(20))  # integer IDs
    b = pd.DataFrame(rng.standard_normal((20, 3)), index=[str(i) for i in range(20)])  # the same, as strings
    with pytest.raises(ValueError, match=r"modalities 'a' and 'b' share only 0 row\(s\) .* check that their IDs match"):
        HCL(hierarchy=Hierarchy({"a": 3, "b": 3}, {("a", "b"): 1})).fit({"a": a, "b": b})
    # scoring asks nothing of the pair: each sample is scored from what it has
    arrays, _ = check_views({"a": a, "b": b}, min_rows=1)
    assert arrays["a"].shape == (40, 3)


def test_fit_refusing_missing_entries_names_the_absent_sample(small):
    _, _, frames, _ = small
    with pytest.raises(ValueError, match=r"modality 'a': no row for sample 's0000' \(40 of the 200 samples"):
        MatrixFreeHCL(hierarchy=SMALL).fit(frames)


def test_few_shared_rows_warn_naming_the_pair(rng):
    model = HierarchicalModel.random(SMALL, random_state=rng)
    views, _ = model.sample(120, random_state=rng)
    ids = _ids(120)
    frames = {"a": pd.DataFrame(views["a"][:64], index=ids[:64]),
              "b": pd.DataFrame(views["b"], index=ids),
              "c": pd.DataFrame(views["c"][56:], index=ids[56:])}  # a and c share rows 56-63
    with pytest.warns(EstimationWarning, match=rf"modalities 'a' and 'c' share only 8 observed rows .* "
                                               rf"at least {MIN_BLOCK_ROWS} are needed") as record:
        HCL(hierarchy=SMALL).fit(frames)
    assert not any("'a' and 'b'" in str(w.message) or "'b' and 'c'" in str(w.message) for w in record)
    assert all(w.filename == __file__ for w in record if "share only" in str(w.message))  # points at the fit call


# ------------------------------------------------------------------ the fit
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_given_pattern_fit_uses_every_row(seed):
    model, frames, full = _d1_absent(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        fit = HCL(hierarchy=model.hierarchy).fit(frames)
    ref = HCL(hierarchy=model.hierarchy).fit(full)
    assert fit.n_samples_ == 1000
    # the fit equals the fit on the explicitly padded data, so nothing but the join happened
    padded = {m: f.reindex(full["a"].index) for m, f in frames.items()}
    same = HCL(hierarchy=model.hierarchy).fit(padded)
    for s, blocks in fit.loadings_.items():
        for m, a in blocks.items():
            assert_allclose(a, same.loadings_[s][m], rtol=1e-10, atol=1e-12)
    true = model.loadings
    assert _mean(loading_errors(fit.loadings_, true)) <= 1.2 * _mean(loading_errors(ref.loadings_, true))
    assert _mean(block_errors(fit.loadings_, true)) <= 1.2 * _mean(block_errors(ref.loadings_, true))


@pytest.mark.parametrize("seed", range(5))
def test_pattern_from_moments_with_absent_rows(seed):
    """The moments (pairwise counts per block) and the bound thresholds learn the pattern."""
    model, frames, _ = _d1_absent(seed)
    fit = HCL(random_state=seed).fit_moments(compute_moments(frames))
    assert pattern_scores(fit.hierarchy_, model.hierarchy)["exact"]


def test_learned_pattern_with_absent_rows():
    """D1, 40% of rows without one modality: exact in >= 19/20 seeds, loading errors within 1.2x of complete data."""
    misses = []
    for seed in range(20):
        model, frames, full = _d1_absent(seed)
        fit = HCL(random_state=seed).fit(frames)
        if not pattern_scores(fit.hierarchy_, model.hierarchy)["exact"]:
            misses.append(seed)
            assert len(misses) <= 1, f"inexact in seeds {misses}"
            continue
        ref = HCL(random_state=seed).fit(full)
        true = model.loadings
        assert _mean(loading_errors(fit.loadings_, true)) <= 1.2 * _mean(loading_errors(ref.loadings_, true)), seed
        assert _mean(block_errors(fit.loadings_, true)) <= 1.2 * _mean(block_errors(ref.loadings_, true)), seed


# ------------------------------------------------------------------ scores
def test_scores_of_a_sample_come_from_the_modalities_it_has(small):
    model, views, frames, ids = small
    fit = HCL(hierarchy=SMALL).fit(frames)
    scores = fit.transform(frames)
    index = joined_index(frames)
    assert all(z.shape[0] == 200 for z in scores.values())
    mu, A, psi = fit._stacked_model()
    sl = SMALL.feature_slices()
    # sample s0190 has a? no (kept 40-199: yes), b yes, c no (c stops at 149)
    i = list(index).index("s0190")
    obs = np.r_[np.arange(sl["a"].start, sl["b"].stop)]
    x = np.concatenate([views["a"][190], views["b"][190]])[None, :]
    expected = posterior_scores(x, mu[obs], A[obs], psi[obs])[0]
    got = np.concatenate([scores[s][i] for s in SMALL.structures])
    assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert_allclose(scores[frozenset("c")][i], 0.0, atol=0)  # nothing observed informs {c}: its prior mean
    ll = fit.score_samples(frames)
    assert_allclose(ll[i], gaussian_log_likelihood(x, mu[obs], A[obs], psi[obs])[0], rtol=1e-12)
    assert np.isfinite(fit.score(frames))
    # views in another order: rows follow joined_index of the views as given
    other = {m: frames[m] for m in "cab"}
    again = fit.transform(other)
    pos = {k: j for j, k in enumerate(joined_index(other))}
    assert list(joined_index(other))[:3] == ["s0000", "s0001", "s0002"]
    for s in SMALL.structures:
        assert_allclose(again[s][[pos[k] for k in index]], scores[s], rtol=1e-12, atol=1e-12)


def test_matrix_free_transform_scores_absent_rows_like_hcl(small):
    model, views, frames, ids = small
    complete = {m: pd.DataFrame(x, index=ids) for m, x in views.items()}
    mf = MatrixFreeHCL(hierarchy=SMALL).fit(complete)
    got = mf.transform(frames)
    mu, A, psi = mf._stacked_model()
    X = np.hstack([check_views(frames)[0][m] for m in SMALL.modalities])
    Z = posterior_scores(X, mu, A, psi)
    for s, cs in SMALL.component_slices().items():
        assert_allclose(got[s], Z[:, cs], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ command line
def _cohort(tmp_path, n=90, seed=4):
    """Four omics-like tables of one cohort, each on a different subset (about half to nearly all)."""
    rng = np.random.default_rng(seed)
    h = Hierarchy({"rna": 6, "meth": 5, "prot": 4, "cnv": 5},
                  {("rna", "meth", "prot", "cnv"): 1, "rna": 1, "meth": 1, "prot": 1, "cnv": 1})
    model = HierarchicalModel.random(h, random_state=rng)
    views, _ = model.sample(n, random_state=rng)
    ids = np.array([f"pt{i:03d}" for i in range(n)])
    cover = {"rna": 0.98, "meth": 0.8, "prot": 0.5, "cnv": 0.65}
    paths, kept = {}, {}
    for m, x in views.items():
        rows = np.sort(rng.choice(n, int(round(cover[m] * n)), replace=False))
        t = pd.DataFrame(x[rows], columns=[f"{m}{j}" for j in range(x.shape[1])])
        t.insert(0, "pid", ids[rows])
        paths[m] = tmp_path / f"{m}.csv"
        t.iloc[rng.permutation(len(rows))].to_csv(paths[m], index=False)
        kept[m] = set(ids[rows])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(h.to_dict()))
    return paths, kept, spec


def _fit_cli(tmp_path, paths, spec, out, *extra):
    argv = ["fit", *[a for m, p in paths.items() for a in ("--view", f"{m}={p}")], "--id", "pid",
            "--hierarchy", spec, "--out", out, "--no-figures", *extra]
    return cli.main([str(a) for a in argv])


def test_cli_default_join_keeps_every_sample_and_reports_pairs(tmp_path, capsys):
    paths, kept, spec = _cohort(tmp_path)
    union, common = set.union(*kept.values()), set.intersection(*kept.values())
    assert len(common) < 0.6 * len(union)  # the defect: an inner join drops about half the patients
    assert _fit_cli(tmp_path, paths, spec, tmp_path / "outer") == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "outer" / "data_report.json").read_text())
    assert report["join"]["join"] == "outer" and report["join"]["n_rows"] == len(union)
    assert report["rows"]["per_modality"] == {m: len(k) for m, k in kept.items()}
    mods = list(kept)
    pairs = {f"{a}+{b}": len(kept[a] & kept[b]) for i, a in enumerate(mods) for b in mods[i + 1:]}
    assert report["rows"]["per_pair"] == pairs
    assert "rows shared by each pair (their cross-covariance): " + ", ".join(f"{k} {v}" for k, v in pairs.items()) \
        in err
    summary = (tmp_path / "outer" / "summary.txt").read_text()
    assert f"rows with data per modality: rna {len(kept['rna'])}" in summary
    scores = pd.read_csv(next((tmp_path / "outer" / "scores").iterdir()), index_col="pid")
    assert set(scores.index) == union

    assert _fit_cli(tmp_path, paths, spec, tmp_path / "inner", "--join", "inner") == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "inner" / "data_report.json").read_text())
    assert report["join"]["n_rows"] == len(common)
    assert report["rows"]["per_modality"] == {m: len(common) for m in kept}
    assert sum(len(v) for v in report["join"]["dropped_ids"].values()) == sum(len(k - common) for k in kept.values())


def test_cli_chunks_need_aligned_tables(tmp_path, capsys):
    paths, _, spec = _cohort(tmp_path)
    code = _fit_cli(tmp_path, paths, spec, tmp_path / "o", "--chunks", "40")
    err = capsys.readouterr().err
    assert code == 1
    assert "reading in row chunks needs every table to list the same IDs in the same order" in err
    assert "(without --chunks) to join them" in err
    assert _fit_cli(tmp_path, paths, spec, tmp_path / "o", "--chunks", "40", "--join", "outer") == 2
    assert "--join outer needs the in-memory join (drop --chunks)" in capsys.readouterr().err


def test_load_views_outer_and_shared_rows_table(tmp_path):
    rng = np.random.default_rng(1)
    a = pd.DataFrame(rng.standard_normal((30, 3)), columns=["x", "y", "z"])
    a.insert(0, "pid", [f"p{i}" for i in range(30)])
    b = pd.DataFrame(rng.standard_normal((20, 2)), columns=["u", "v"])
    b.insert(0, "pid", [f"p{i}" for i in range(12, 32)])
    data = load_views({"a": a, "b": b}, id_column="pid", join="outer")
    assert data.join.n_rows == 32
    t = shared_rows_table(data.views)
    assert t.loc["a", "a"] == 30 and t.loc["b", "b"] == 20 and t.loc["a", "b"] == t.loc["b", "a"] == 18
    assert data.to_dict()["rows"] == {"per_modality": {"a": 30, "b": 20}, "per_pair": {"a+b": 18}}
    inner = load_views({"a": a, "b": b}, id_column="pid", join="inner")
    assert inner.join.n_rows == 18 and inner.to_dict()["rows"]["per_pair"] == {"a+b": 18}
    with pytest.raises(ValueError, match=r"modalities with fewer than 10 rows: \{'b': 5\}"):
        load_views({"a": a, "b": b.iloc[:5]}, id_column="pid", join="outer")
