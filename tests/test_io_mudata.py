"""Reading scverse ``MuData`` (:func:`hclstat.io.from_mudata`, ``hclstat fit --mudata``)."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import cli
from hclstat.estimators.hcl import HCL
from hclstat.hierarchy import Hierarchy
from hclstat.io import mudata as hmu
from hclstat.io import from_mudata, to_mudata
from hclstat.metrics import pattern_scores
from hclstat.model import d1_model
from hclstat.moments import compute_moments
from hclstat.preprocess import DataWarning

import anndata as ad  # noqa: E402  (the test extra installs mudata and its anndata)
import mudata as md  # noqa: E402
import scipy.sparse as sparse  # noqa: E402

N, SEED = 1000, 3


def _mudata(mods, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's own deprecation notices about its update behaviour
        return md.MuData(mods, **kw)


def _adata(x, obs, var, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's notice about duplicated names (some tests make them)
        return ad.AnnData(X=x, obs=pd.DataFrame(index=list(obs)), var=pd.DataFrame(index=list(var)), **kw)


def _d1(n=N, seed=SEED, fraction=0.3):
    """D1 (s = 0.3) as a MuData whose modality ``b`` lacks ``fraction`` of the obs (drawn per obs)."""
    model = d1_model(0.3, random_state=seed)
    views, _ = model.sample(n, random_state=seed)
    ids = np.array([f"s{i:04d}" for i in range(n)], dtype=object)
    keep = np.random.default_rng(seed).random(n) >= fraction
    rows = {m: keep if m == "b" else np.ones(n, bool) for m in views}
    frames = {m: pd.DataFrame(x[rows[m]], index=pd.Index(ids[rows[m]], name="obs"),
                              columns=[f"{m}_{j}" for j in range(x.shape[1])]) for m, x in views.items()}
    mdata = _mudata({m: _adata(t.to_numpy(), t.index, t.columns) for m, t in frames.items()})
    return model, frames, mdata


@pytest.fixture(scope="module")
def d1():
    return _d1()


@pytest.fixture(scope="module")
def d1_file(d1, tmp_path_factory):
    path = tmp_path_factory.mktemp("mu") / "d1.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d1[2].write(path)
    return path


# ------------------------------------------------------------------ reading
@pytest.mark.parametrize("source", ["object", "file"])
def test_modalities_keep_their_own_obs(d1, d1_file, source):
    _, frames, mdata = d1
    views = from_mudata(mdata if source == "object" else d1_file)
    assert list(views) == ["a", "b", "c"]
    for m, t in frames.items():
        got = views[m]
        assert got.index.name == "obs" and list(got.index) == list(t.index) and list(got.columns) == list(t.columns)
        assert got.dtypes.eq(np.float64).all()
        assert_allclose(got.to_numpy(), t.to_numpy(), rtol=0, atol=0)
    # b has only the rows it was measured on (30% absent), the others every row
    assert 0.25 < 1 - len(views["b"]) / N < 0.35 and len(views["a"]) == N


def test_modalities_and_layer_selection(rng):
    x = rng.standard_normal((12, 3))
    a = _adata(x, [f"o{i}" for i in range(12)], ["g0", "g1", "g2"], layers={"counts": 10 * x})
    b = _adata(rng.standard_normal((8, 2)), [f"o{i}" for i in range(8)], ["p0", "p1"], layers={"counts": np.ones((8, 2))})
    mdata = _mudata({"rna": a, "prot": b})
    views = from_mudata(mdata, modalities=["prot", "rna"], layer="counts")
    assert list(views) == ["prot", "rna"]
    assert_allclose(views["rna"].to_numpy(), 10 * x)
    assert list(from_mudata(mdata, modalities="rna")) == ["rna"]
    with pytest.raises(ValueError, match=r"modalities: expected some of the MuData's modalities \['rna', 'prot'\], "
                                         r"got \['atac'\]"):
        from_mudata(mdata, modalities=["atac"])
    with pytest.raises(ValueError, match=r"modality 'rna': no layer 'raw'; its layers are \['counts'\]"):
        from_mudata(mdata, layer="raw")


def test_sparse_matrix_is_densified_with_a_warning_above_the_limit(rng, monkeypatch):
    x = rng.standard_normal((20, 5)) * (rng.random((20, 5)) < 0.3)
    mdata = _mudata({"a": _adata(sparse.csr_matrix(x), [f"o{i}" for i in range(20)], list("vwxyz")),
                     "b": _adata(x[:, :2].copy(), [f"o{i}" for i in range(20)], ["p", "q"])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 100 entries: below the limit, no warning
        assert_allclose(from_mudata(mdata)["a"].to_numpy(), x)
    monkeypatch.setattr(hmu, "DENSIFY_WARNING_ENTRIES", 50)
    with pytest.warns(DataWarning, match=r"modality 'a': densifying sparse \.X of shape \(20, 5\)"):
        from_mudata(mdata)


def test_duplicated_names_within_a_modality_are_errors(rng):
    obs = [f"o{i}" for i in range(6)]
    x = rng.standard_normal((6, 3))
    with pytest.raises(ValueError, match=r"duplicated var names in modality 'a': 'g' at positions 0, 2"):
        from_mudata(_mudata({"a": _adata(x, obs, ["g", "h", "g"])}))
    with pytest.raises(ValueError, match=r"modality 'a': duplicated obs names \['o1'\]"):
        from_mudata(_mudata({"a": _adata(x, ["o0", "o1", "o2", "o3", "o4", "o1"], ["g", "h", "k"])}))


def test_bad_sources(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"MuData file not found: .*none\.h5mu"):
        from_mudata(tmp_path / "none.h5mu")
    (tmp_path / "t.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match=r"expected a MuData \.h5mu file, got suffix '\.csv'"):
        from_mudata(tmp_path / "t.csv")
    (tmp_path / "bad.h5mu").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.h5mu as MuData"):
        from_mudata(tmp_path / "bad.h5mu")
    with pytest.raises(TypeError, match=r"path_or_mudata: expected a MuData object or the path"):
        from_mudata(3)
    monkeypatch.setitem(sys.modules, "mudata", None)  # as if not installed
    (tmp_path / "x.h5mu").write_text("")
    with pytest.raises(ImportError, match=r"reading MuData needs the mudata package .*pip install 'hclstat\[mudata\]'"):
        from_mudata(tmp_path / "x.h5mu")


# ------------------------------------------------------------- fit end to end
def test_round_trip_through_an_h5mu_file(d1, tmp_path):
    # views with different row sets -> MuData -> .h5mu -> views: the same tables, rows and names
    _, frames, _ = d1
    frames = {m: t.copy() for m, t in frames.items()}
    frames["a"].iloc[3, 2] = np.nan  # a missing entry of a present row stays missing
    path = tmp_path / "out" / "views.h5mu"
    mdata = to_mudata(frames, path)
    assert list(mdata.mod) == list(frames) and path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    for source in (mdata, path):
        back = from_mudata(source)
        assert list(back) == list(frames)
        for m, t in frames.items():
            assert list(back[m].index) == list(t.index) and list(back[m].columns) == list(t.columns)
            assert_allclose(back[m].to_numpy(), t.to_numpy(), rtol=0, atol=0)
    assert np.isnan(from_mudata(path)["a"].iloc[3, 2])
    assert len(from_mudata(path)["b"]) < len(frames["a"])  # b's absent obs stay absent


def test_to_mudata_errors(tmp_path):
    ok = pd.DataFrame(np.ones((3, 2)), index=["x", "y", "z"], columns=["u", "v"])
    with pytest.raises(TypeError, match="views: expected a non-empty dict"):
        to_mudata({})
    with pytest.raises(TypeError, match=r"views\['a'\]: expected a DataFrame"):
        to_mudata({"a": np.ones((3, 2))})
    with pytest.raises(ValueError, match=r"views\['a'\]: duplicated sample IDs"):
        to_mudata({"a": ok.set_axis(["x", "x", "z"])})
    with pytest.raises(ValueError, match=r"views\['a'\]: non-numeric columns \['v'\]"):
        to_mudata({"a": ok.assign(v=["p", "q", "r"])})
    with pytest.raises(ValueError, match="must end in .h5mu"):
        to_mudata({"a": ok}, tmp_path / "views.csv")


def test_fit_from_mudata_with_a_modality_missing_30_percent_of_its_obs(d1, d1_file):
    """HCL.fit outer-joins the modalities on their obs names: the absent rows are missing, not dropped."""
    model, frames, _ = d1
    views = from_mudata(d1_file)
    n_b = len(views["b"])
    moments = compute_moments(views)
    assert moments.n_samples == N
    assert moments.block_count("a", "b") == n_b and moments.block_count("a", "c") == N
    fit = HCL(random_state=SEED).fit(views)
    assert pattern_scores(fit.hierarchy_, model.hierarchy)["exact"]
    ref = HCL(random_state=SEED).fit(frames)  # the same tables handed over directly
    assert fit.hierarchy_ == ref.hierarchy_
    for s, blocks in ref.loadings_.items():
        for m, a in blocks.items():
            assert_allclose(fit.loadings_[s][m], a, rtol=1e-12, atol=1e-12)
    scores = fit.transform(views)
    assert all(z.shape[0] == N for z in scores.values())


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_fit_from_an_h5mu_file(d1, d1_file, tmp_path, capsys):
    model, frames, _ = d1
    out = tmp_path / "res"
    code, err = _run(["fit", "--mudata", d1_file, "--out", out, "--no-figures", "-q", "--seed", str(SEED)], capsys)
    assert code == 0, err
    h = Hierarchy.from_dict(json.loads((out / "hierarchy.json").read_text()))
    assert pattern_scores(h, model.hierarchy)["exact"]
    report = json.loads((out / "data_report.json").read_text())
    assert report["join"]["id_column"] == "obs_names" and report["join"]["n_rows"] == N
    assert report["rows"]["per_modality"] == {"a": N, "b": len(frames["b"]), "c": N}
    label = "+".join(sorted(next(iter(h.structures)), key=h.index))
    z = pd.read_csv(out / "scores" / f"{label}.csv", index_col="obs_names")
    assert list(z.index) == list(frames["a"].index)


@pytest.mark.parametrize("extra, message", [
    (["--view", "a=a.csv"], "either as --mudata FILE or as --view NAME=FILE, not both"),
    (["--id", "pid"], "--mudata: rows are matched by the obs names of the modalities; drop --id"),
    (["--chunks", "100"], "a --mudata file is read into memory (drop --chunks)"),
])
def test_cli_mudata_usage_errors(d1_file, tmp_path, capsys, extra, message):
    code, err = _run(["fit", "--mudata", d1_file, *extra, "--out", tmp_path / "o", "-q"], capsys)
    assert code == 2 and message in err, err


def test_cli_layer_needs_mudata_and_a_view_or_mudata_is_needed(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("x\n1\n")
    code, err = _run(["fit", "--view", f"a={tmp_path / 'a.csv'}", "--layer", "counts", "--out", tmp_path / "o"],
                     capsys)
    assert code == 2 and "--layer applies to --mudata only" in err, err
    code, err = _run(["fit", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "expected at least one --view NAME=FILE" in err, err
