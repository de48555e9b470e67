"""Tests for :mod:`hclstat.io` and :mod:`hclstat.preprocess`."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
from importlib.util import resolve_name

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat.estimators.base import ModelRepresentation
from hclstat.hierarchy import Hierarchy
from hclstat.io import (
    RUN_FILE,
    atomic_directory,
    check_output_target,
    is_hclstat_output,
    join_tables,
    load_views,
    missingness_table,
    read_hierarchy,
    read_table,
    structure_label,
    write_representation,
)
from hclstat.model import HierarchicalModel
from hclstat.preprocess import DataWarning, ModalityPreprocessor, Preprocessing


def _frame(rng, ids, cols, id_column="pid"):
    t = pd.DataFrame(rng.standard_normal((len(ids), len(cols))), columns=cols)
    t.insert(0, id_column, ids)
    return t


# ------------------------------------------------------------------ reading
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".csv.gz"])
def test_read_table_formats_keep_ids_as_strings(tmp_path, rng, suffix):
    t = _frame(rng, ["007", "010", "3"], ["x", "y"])
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        t.to_parquet(path)
    else:
        t.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    got = read_table(path, id_column="pid")
    assert list(got.index) == ["007", "010", "3"]
    assert got.index.name == "pid"
    assert list(got.columns) == ["x", "y"]
    assert_allclose(got.to_numpy(), t[["x", "y"]].to_numpy(), rtol=1e-15)


def test_read_table_integer_ids_from_parquet_match_csv(tmp_path, rng):
    t = _frame(rng, [1, 2, 3], ["x"])
    t.to_parquet(tmp_path / "a.parquet")
    t.to_csv(tmp_path / "b.csv", index=False)
    a = read_table(tmp_path / "a.parquet", id_column="pid")
    b = read_table(tmp_path / "b.csv", id_column="pid")
    assert list(a.index) == list(b.index) == ["1", "2", "3"]


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "make, id_column, match",
    [
        (lambda d: d / "absent.csv", None, "file not found"),
        (lambda d: d, None, "is a directory"),
        (lambda d: _write(d / "t.xlsx", "x"), None, r"unrecognised file format '\.xlsx'"),
        (lambda d: _write(d / "t.parquet", "not parquet"), None, "cannot read .* as PARQUET"),
        (lambda d: _write(d / "t.csv", ""), None, "is empty"),
        (lambda d: _write(d / "t.csv", "pid,x,y\n"), "pid", "has no rows"),
        (lambda d: _write(d / "t.csv", "pid\n1\n2\n"), "pid", "no data columns besides 'pid'"),
        (lambda d: _write(d / "t.csv", "id,x\n1,2\n"), "pid", "ID column 'pid' not found"),
        (lambda d: _write(d / "t.csv", "pid,x\n1,2\n,3\n"), "pid", r"1 row\(s\) without an ID"),
        (lambda d: _write(d / "t.csv", "pid,x\np1,1\np2,2\np1,3\np2,4\np3,5\n"), "pid",
         r"duplicated IDs in column 'pid' .*\['p1', 'p2'\]"),
    ],
)
def test_read_table_errors(tmp_path, make, id_column, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_table(make(tmp_path), id_column=id_column, name="labs")


# ------------------------------------------------------------------ joining
def test_inner_join_keeps_common_ids_in_first_order_and_reports_dropped(rng):
    a = _frame(rng, ["p1", "p2", "p3", "p4"], ["x"]).set_index("pid")
    b = _frame(rng, ["p4", "p5", "p2", "p1"], ["y"]).set_index("pid")
    aligned, report = join_tables({"a": a, "b": b}, id_column="pid", join="inner")
    assert list(aligned["a"].index) == list(aligned["b"].index) == ["p1", "p2", "p4"]
    assert report.dropped_ids == {"a": ["p3"], "b": ["p5"]}
    assert aligned["b"].loc["p2", "y"] == b.loc["p2", "y"]
    assert report.n_rows == 3 and report.rows_per_modality == {"a": 4, "b": 4}
    assert any("'a': dropped 1 ID(s)" in line and "p3" in line for line in report.lines())


def test_outer_join_leaves_block_missing_rows(rng):
    a = _frame(rng, ["p1", "p2", "p3"], ["x", "z"]).set_index("pid")
    b = _frame(rng, ["p2", "p4"], ["y"]).set_index("pid")
    aligned, report = join_tables({"a": a, "b": b}, id_column="pid", join="outer")
    assert list(aligned["a"].index) == ["p1", "p2", "p3", "p4"]
    assert aligned["a"].loc["p4"].isna().all()
    assert aligned["b"].loc[["p1", "p3"]].isna().all().all()
    assert report.missing_ids == {"a": ["p4"], "b": ["p1", "p3"]}
    table = missingness_table(aligned)
    assert table.loc["b", "rows_all_missing"] == 2
    assert table.loc["a", "rows_all_missing"] == 1
    assert_allclose(table.loc["a", "missing_fraction"], 2 / 8)


def test_join_errors(rng):
    a = _frame(rng, ["p1", "p2"], ["x"]).set_index("pid")
    b = _frame(rng, ["q1", "q2"], ["y"]).set_index("pid")
    with pytest.raises(ValueError, match="no ID in column 'pid' is common to all modalities"):
        join_tables({"a": a, "b": b}, id_column="pid", join="inner")
    c = _frame(rng, ["q1", "q2", "q3"], ["y"]).set_index("pid")
    with pytest.raises(ValueError, match=r"row counts differ across modalities \{'a': 2, 'c': 3\}"):
        join_tables({"a": a, "c": c})
    with pytest.raises(ValueError, match="join: expected 'inner' or 'outer'"):
        join_tables({"a": a}, join="left")


# ------------------------------------------------------------ preprocessing
def test_preprocessing_parse():
    assert Preprocessing.parse("") == Preprocessing()
    p = Preprocessing.parse("log1p, noscale,onehot")
    assert (p.log1p, p.scale, p.center, p.onehot) == (True, False, True, True)
    assert Preprocessing.parse("raw") == Preprocessing(center=False, scale=False)
    assert Preprocessing.parse("keep-constant").drop_constant is False
    with pytest.raises(ValueError, match="unknown step 'zscore'"):
        Preprocessing.parse("zscore")


def test_default_preprocessing_centres_and_scales(rng):
    t = pd.DataFrame({"x": rng.normal(5, 3, 50), "y": rng.normal(-2, 0.1, 50)})
    t.iloc[3, 0] = np.nan
    out = ModalityPreprocessor(name="labs").fit_transform(t)
    assert_allclose(out.mean(), 0, atol=1e-12)
    assert_allclose(out.std(ddof=1), 1, rtol=1e-12)
    assert np.isnan(out.iloc[3, 0])  # never imputed


def test_log1p_onehot_and_transform_of_new_rows(rng):
    t = pd.DataFrame({
        "count": [0, 3, 10, 1, 0, 7],
        "site": ["b", "a", "c", "a", None, "b"],
        "flag": [True, False, True, True, False, False],
    })
    prep = ModalityPreprocessor("log1p,onehot,raw", name="codes")
    out = prep.fit_transform(t)
    assert list(out.columns) == ["count", "site=b", "site=c", "flag"]
    assert_allclose(out["count"], np.log1p(t["count"]))
    assert out.loc[4, ["site=b", "site=c"]].isna().all()  # missing category stays missing
    assert out.loc[1, ["site=b", "site=c"]].tolist() == [0.0, 0.0]  # reference level 'a'
    assert prep.categories_ == {"site": ["a", "b", "c"]}
    new = prep.transform(t.iloc[:2])
    assert_allclose(new.to_numpy(), out.iloc[:2].to_numpy())
    with pytest.raises(ValueError, match=r"column 'site' has levels \['z'\] not seen in fit"):
        prep.transform(t.assign(site="z"))


@pytest.mark.parametrize(
    "table, spec, match",
    [
        (pd.DataFrame({"x": [1.0, 2, 3], "sex": ["f", "m", "f"], "site": list("abc")}), "",
         r"non-numeric columns \['sex', 'site'\]; request one-hot encoding .*--prep codes=onehot"),
        (pd.DataFrame({"x": [1.0, np.inf, 3]}), "", "infinite value in column 'x' at row 1"),
        (pd.DataFrame({"x": [1.0, 2, 3], "y": [np.nan] * 3}), "", r"columns \['y'\] have no observed value"),
        (pd.DataFrame({"x": [1.0, -2, 3]}), "log1p", "log1p needs non-negative counts, column 'x' has -2.0"),
        (pd.DataFrame({"x": [1.0, 1, 1]}), "keepconstant", r"constant columns \['x'\]"),
        (pd.DataFrame({"x": [1.0, 1, 1]}), "", "no column is left"),
    ],
)
def test_preprocessing_errors(table, spec, match):
    with pytest.raises(ValueError, match=match):
        with pytest.warns(DataWarning) if match == "no column is left" else _nothing():
            ModalityPreprocessor(spec, name="codes").fit_transform(table)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_constant_columns_dropped_with_a_warning_naming_them(rng):
    t = pd.DataFrame({"x": rng.standard_normal(8), "c1": 4.0, "c2": [np.nan] + [1.0] * 7})
    prep = ModalityPreprocessor(name="labs")
    with pytest.warns(DataWarning, match=r"modality 'labs': dropped 2 constant column\(s\) \['c1', 'c2'\]"):
        out = prep.fit_transform(t)
    assert list(out.columns) == ["x"]
    assert prep.report()["dropped_constant"] == ["c1", "c2"]


# --------------------------------------------------------------- load_views
def test_load_views_files_join_and_report(tmp_path, rng):
    ids = [f"p{i}" for i in range(30)]
    a = _frame(rng, ids[:25], ["x1", "x2", "x3"])
    b = _frame(rng, ids[5:][::-1], ["y1", "y2"])
    b[["y1", "y2"]] = rng.poisson(3, (len(b), 2))
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_parquet(tmp_path / "b.parquet")
    data = load_views({"a": tmp_path / "a.csv", "b": tmp_path / "b.parquet"}, id_column="pid",
                      preprocessing={"b": "log1p"}, join="inner")
    assert list(data.ids) == ids[5:25]
    assert data.dims == {"a": 3, "b": 2}
    assert data.join.dropped_ids == {"a": ids[:5], "b": ids[25:][::-1]}
    assert data.id_name == "pid"
    report = data.report()
    assert "modality 'a': dropped 5 ID(s)" in report and "log1p, center, scale" in report
    d = json.loads(json.dumps(data.to_dict()))
    assert d["join"]["dropped_ids"]["b"] == ids[25:][::-1]
    assert d["missingness"]["a"]["rows"] == 20


def test_load_views_too_few_rows_and_unknown_preprocessing(rng):
    a = _frame(rng, ["p1", "p2", "p3"], ["x", "y"])
    with pytest.raises(ValueError, match=r"only 3 rows after joining the modalities \(need at least 10\)"):
        load_views({"a": a}, id_column="pid")
    with pytest.raises(ValueError, match=r"preprocessing given for unknown modalities \['z'\]"):
        load_views({"a": a}, id_column="pid", preprocessing={"z": "log1p"})


# ---------------------------------------------------------------- hierarchy
def _write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_read_hierarchy_round_trip_and_dims_from_data(tmp_path, hierarchy):
    path = _write_json(tmp_path / "h.json", hierarchy.to_dict())
    assert read_hierarchy(path) == hierarchy
    assert read_hierarchy(path, dims=hierarchy.dims) == hierarchy
    spec = {"ranks": [{"structure": ["a", "b", "c"], "rank": 1}, {"structure": ["c"], "rank": 2}]}
    h = read_hierarchy(_write_json(tmp_path / "s.json", spec), dims={"a": 4, "b": 5, "c": 6})
    assert h.dims == {"a": 4, "b": 5, "c": 6} and h.rank("c") == 2 and h.rank(("a", "b", "c")) == 1
    h = read_hierarchy(_write_json(tmp_path / "m.json", {"ranks": {"a,b": 1}}), dims={"b": 3, "a": 4})
    assert h.modalities == ("b", "a") and h.rank(("a", "b")) == 1  # data order


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object with 'ranks'"),
        (json.dumps({"ranks": [{"structure": ["a", "z"], "rank": 1}]}), r"names unknown modalities \['z'\]"),
        (json.dumps({"dims": {"a": 4, "b": 5, "q": 1}, "ranks": []}), r"names unknown modalities \['q'\]"),
        (json.dumps({"dims": {"a": 4}, "ranks": []}), r"'dims' has no entry for modalities \['b'\]"),
        (json.dumps({"dims": {"a": 4, "b": 9}, "ranks": []}), "dims disagree with the data .*'b': file 9, data 5"),
        (json.dumps({"ranks": [{"structure": ["a"], "rank": 7}]}), "total rank 7 .* exceeds its 4 columns"),
    ],
)
def test_read_hierarchy_errors(tmp_path, content, match):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_hierarchy(path, dims={"a": 4, "b": 5})
    with pytest.raises(FileNotFoundError, match="hierarchy file not found"):
        read_hierarchy(tmp_path / "absent.json")


# ------------------------------------------------------------------ writing
def test_write_representation_layout(tmp_path, hierarchy, rng):
    model = HierarchicalModel.random(hierarchy, random_state=rng)
    est = ModelRepresentation(model).fit()
    views, _ = model.sample(7, random_state=rng)
    scores = est.transform(views)
    ids = [f"id{i}" for i in range(7)]
    written = write_representation(tmp_path, est, scores, ids=ids, id_name="pid")
    assert Hierarchy.from_dict(json.loads((tmp_path / "hierarchy.json").read_text())) == hierarchy
    n_blocks = sum(len(s) for s in hierarchy.structures)
    assert len(list((tmp_path / "loadings").iterdir())) == n_blocks
    # written with repr precision; read back exactly (pandas' default fast parser may be 1 ulp off)
    a = pd.read_csv(tmp_path / "loadings" / "a+b__b.csv", index_col="feature", float_precision="round_trip")
    assert list(a.columns) == ["comp1"] and a.shape == (10, 1)
    assert a.index[0] == "b[0]"
    assert_allclose(a.to_numpy(), model.loadings[frozenset("ab")]["b"], rtol=1e-15)
    z = pd.read_csv(tmp_path / "scores" / "a+b+c.csv", index_col="pid")
    assert list(z.index) == ids and z.shape == (7, 2)
    nv = pd.read_csv(tmp_path / "noise_variances.csv")
    assert nv.shape == (30, 3) and list(nv.columns) == ["modality", "feature", "noise_variance"]
    assert len(written) == 1 + n_blocks + len(hierarchy.structures) + 1
    assert structure_label(hierarchy, ("c", "a")) == "a+c"


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_atomic_directory_success_and_failure(tmp_path):
    out = tmp_path / "res"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(out) as tmp:
            (tmp / "half.csv").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and _leftovers(tmp_path, "res") == []
    with atomic_directory(out) as tmp:
        (tmp / RUN_FILE).write_text(json.dumps({"hclstat_version": "0"}))
        (tmp / "first.txt").write_text("1")
    assert (out / "first.txt").exists() and is_hclstat_output(out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "second.txt").write_text("2")
            raise RuntimeError("again")
    assert (out / "first.txt").exists() and not (out / "second.txt").exists()
    with atomic_directory(out) as tmp:  # an earlier hclstat output is replaced after success
        (tmp / "second.txt").write_text("2")
    assert (out / "second.txt").exists() and not (out / "first.txt").exists()
    assert _leftovers(tmp_path, "res") == []


def test_atomic_directory_leaves_the_umask_alone(tmp_path, monkeypatch):
    umask = os.umask(0o027)
    try:
        def no_umask(mask):  # os.umask is process-wide: setting it to read it races with other threads
            raise AssertionError(f"atomic_directory set the process umask to {mask:o}")

        monkeypatch.setattr(os, "umask", no_umask)
        with atomic_directory(tmp_path / "res") as tmp:
            (tmp / "a.txt").write_text("1")
    finally:
        monkeypatch.undo()
        os.umask(umask)
    out = tmp_path / "res"
    assert out.stat().st_mode & 0o777 == 0o750 and sorted(p.name for p in out.iterdir()) == ["a.txt"]


def test_check_output_target(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        check_output_target(tmp_path / "file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="was not written by hclstat; .* --overwrite"):
        check_output_target(foreign)
    check_output_target(foreign, overwrite=True)
    (tmp_path / "empty").mkdir()
    check_output_target(tmp_path / "empty")
    check_output_target(tmp_path / "absent")


# ------------------------------------------------------------------ layout
def test_io_package_keeps_every_import_path():
    import hclstat.io as pkg

    parts = {m.name: importlib.import_module(f"hclstat.io.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)}
    assert set(parts) == {"read", "join", "chunked", "write", "mudata", "events"}
    # what hclstat/cli.py, examples/ and tests/ import from hclstat.io
    used = ["load_views", "load_views_chunked", "read_hierarchy", "RUN_FILE", "ChunkedViewData", "MIN_ROWS",
            "write_representation", "write_scores_chunked", "atomic_directory", "check_output_target", "read_table"]
    for name in {*used, *pkg.__all__}:
        home = [mod for mod in parts.values() if name in mod.__all__]
        assert len(home) == 1 and getattr(pkg, name) is getattr(home[0], name), name
    for mod in parts.values():  # imports inside functions run late: resolve them now
        for node in ast.walk(ast.parse(inspect.getsource(mod))):
            if isinstance(node, ast.Import):
                assert all(importlib.import_module(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = importlib.import_module(resolve_name("." * node.level + (node.module or ""), "hclstat.io"))
                assert all(hasattr(target, a.name) for a in node.names), (mod.__name__, ast.unparse(node))
