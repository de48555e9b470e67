"""Out-of-core fitting: ``hclstat fit --chunks ROWS`` and :func:`hclstat.io.load_views_chunked`.

The chunked path must give what the in-memory path gives (same preprocessing,
same moments, same fit, same files), read the tables in several chunks, and
fail with the same one-line errors.
"""

from __future__ import annotations

import gzip
import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import cli
from hclstat.cli import shared
from hclstat.estimators.base import BaseHierarchicalEstimator
from hclstat.hierarchy import Hierarchy
from hclstat.io import ChunkedViewData, load_views, load_views_chunked
from hclstat.model import HierarchicalModel
from hclstat.preprocess import DataWarning

# dask's Parquet reader calls a pandas API that pandas 3.1 deprecates; not about hclstat
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")

TRUTH = Hierarchy({"a": 8, "b": 9, "c": 10}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "c": 1})
N = 600
CHUNK = 130  # several chunks per table, the last one short


def _write(frame, path):
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=100)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


def _tables(tmp_path, n=N, seed=0, holes=True, with_ids=True):
    """One CSV, one Parquet and one TSV table with the same IDs in the same order, an offset and some NaN."""
    rng = np.random.default_rng(seed)
    model = HierarchicalModel.random(TRUTH, random_state=rng)
    views, _ = model.sample(n, random_state=rng)
    ids = [f"p{i:04d}" for i in range(n)]
    paths = {}
    for (m, x), suffix in zip(views.items(), (".csv", ".parquet", ".tsv")):
        t = pd.DataFrame(x + 100.0, columns=[f"{m}_{j}" for j in range(x.shape[1])])
        if holes:
            t.iloc[rng.uniform(size=n) < 0.05, 1] = np.nan
        if with_ids:
            t.insert(0, "pid", ids)
        paths[m] = _write(t, tmp_path / f"{m}{suffix}")
    return paths, ids


def _view_args(paths):
    out = []
    for m, p in paths.items():
        out += ["--view", f"{m}={p}"]
    return out


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class RecordingStub(BaseHierarchicalEstimator):
    """Leading eigenvectors per modality; records what ``fit`` was handed."""

    seen = []

    def __init__(self, hierarchy=None, random_state=None):
        self.hierarchy = hierarchy
        self.random_state = random_state

    def fit(self, views, y=None):
        RecordingStub.seen.append({m: (type(a), getattr(a, "chunks", None)) for m, a in views.items()})
        return super().fit(views, y)

    def _fit_moments(self, moments):
        mods = moments.modalities
        h = self.hierarchy or Hierarchy(moments.dims, {tuple(mods): 1, **{m: 1 for m in mods}})
        self.hierarchy_ = h
        self.loadings_ = {s: {} for s in h.structures}
        self.noise_variances_ = {}
        for m in h.modalities:
            w, v = np.linalg.eigh(moments.block(m, m))
            w, v = w[::-1], v[:, ::-1]
            col = 0
            for s in h.structures_of(m):
                k = h.rank(s)
                self.loadings_[s][m] = v[:, col:col + k] * np.sqrt(np.maximum(w[col:col + k] - 1, 0.1))
                col += k
            signal = sum((self.loadings_[s][m] ** 2).sum(axis=1) for s in h.structures_of(m))
            self.noise_variances_[m] = np.maximum(np.diag(moments.block(m, m)) - signal, 1e-2)


@pytest.fixture
def stub(monkeypatch):
    RecordingStub.seen = []
    monkeypatch.setattr(shared, "make_estimator", lambda args, hierarchy=None: RecordingStub(hierarchy))


def _same_outputs(a, b, atol):
    """Every CSV of two fit outputs: same shape and labels, numbers equal to ``atol``."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.csv"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.csv"))
    for f in files:
        x, y = pd.read_csv(a / f), pd.read_csv(b / f)
        assert list(x.columns) == list(y.columns), f
        num = x.select_dtypes("number").columns
        assert (x.drop(columns=num).astype(str).to_numpy() == y.drop(columns=num).astype(str).to_numpy()).all(), f
        assert_allclose(y[num].to_numpy(), x[num].to_numpy(), rtol=0, atol=atol, err_msg=str(f))
    for f in ("hierarchy.json",):
        assert json.loads((a / f).read_text()) == json.loads((b / f).read_text())


# ------------------------------------------------------------------ equivalence
def test_chunked_fit_equals_in_memory_hcl(tmp_path, capsys):
    """Real HCL, pattern learned: the chunked run writes the in-memory run's results."""
    paths, ids = _tables(tmp_path)
    mem, chk = tmp_path / "mem", tmp_path / "chk"
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--out", mem, "-q", "--no-figures"], capsys)
    assert code == 0, err
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--out", chk, "--chunks", CHUNK,
                         "--no-figures"], capsys)
    assert code == 0, err
    assert "reading in row chunks of about 130 rows" in err and "Traceback" not in err
    _same_outputs(mem, chk, atol=1e-8)
    z = pd.read_csv(next((chk / "scores").iterdir()), index_col="pid", dtype={"pid": str})
    assert list(z.index) == ids
    report = json.loads((chk / "data_report.json").read_text())
    assert report["chunks"]["rows_requested"] == CHUNK
    for m, rows in report["chunks"]["rows_per_chunk"].items():
        assert sum(rows) == N and len(rows) >= 3, (m, rows)
    assert (mem / "summary.txt").read_text() == (chk / "summary.txt").read_text()


def test_fit_receives_dask_arrays_in_chunks(tmp_path, capsys, stub):
    paths, _ = _tables(tmp_path, with_ids=False)
    code, _, err = _run(["fit", *_view_args(paths), "--out", tmp_path / "o", "--chunks", 100, "-q",
                         "--no-figures"], capsys)
    assert code == 0, err
    assert "warning" not in err
    (seen,) = RecordingStub.seen
    for m, (kind, chunks) in seen.items():
        assert issubclass(kind, da.Array), m
        assert len(chunks[0]) > 1 and sum(chunks[0]) == N
    # without --id the rows are numbered 0..n-1, as in memory
    z = pd.read_csv(next((tmp_path / "o" / "scores").iterdir()))
    assert z.columns[0] == "row" and z["row"].tolist() == list(range(N))


def test_loader_equals_in_memory_preprocessing(tmp_path):
    """log1p counts, one-hot levels with NaN, a constant column and scaling: the same numbers."""
    rng = np.random.default_rng(1)
    n = 500
    counts = pd.DataFrame(rng.poisson(3.0, size=(n, 4)).astype(float), columns=[f"k{j}" for j in range(4)])
    counts.iloc[rng.uniform(size=n) < 0.1, 2] = np.nan
    counts["const"] = 7.0
    clin = pd.DataFrame(rng.standard_normal((n, 3)) * [1, 10, 1000] + 1e4, columns=["x", "y", "z"])
    clin["ward"] = rng.choice(["north", "south", "east"], size=n)
    clin.loc[rng.uniform(size=n) < 0.1, "ward"] = None
    paths = {"counts": _write(counts, tmp_path / "counts.csv"), "clin": _write(clin, tmp_path / "clin.parquet")}
    prep = {"counts": "log1p", "clin": "onehot"}
    with pytest.warns(DataWarning, match=r"modality 'counts': dropped 1 constant column\(s\) \['const'\]"):
        ref = load_views(paths, preprocessing=prep)
    with pytest.warns(DataWarning, match=r"modality 'counts': dropped 1 constant column\(s\) \['const'\]"):
        got = load_views_chunked(paths, chunk_rows=90, preprocessing=prep)
    assert isinstance(got, ChunkedViewData)
    for m in paths:
        assert got.feature_names[m] == list(ref.views[m].columns)
        assert isinstance(got.views[m], da.Array) and len(got.views[m].chunks[0]) > 1
        assert_allclose(got.views[m].compute(), ref.views[m].to_numpy(), rtol=0, atol=1e-10)
        assert got.preprocessors[m].report() == ref.preprocessors[m].report()
    pd.testing.assert_frame_equal(got.missingness, ref.missingness, check_exact=False, rtol=1e-12)
    assert got.dims == ref.dims and list(got.ids) == list(ref.ids)
    assert got.report() == ref.report()


# ----------------------------------------------------------------------- errors
def _case_misaligned(tmp_path):
    paths, _ = _tables(tmp_path, holes=False)
    t = pd.read_csv(paths["c"], sep="\t", dtype={"pid": str})
    _write(t.iloc[::-1], paths["c"])
    return paths, ["--id", "pid"], (r"reading in row chunks needs every table to list the same IDs in the same "
                                    r"order; modality 'c' differs from 'a' \(row 0: 'p0599' vs 'p0000'\)")


def _case_row_counts(tmp_path):
    paths, _ = _tables(tmp_path, holes=False, with_ids=False)
    t = pd.read_parquet(paths["b"])
    _write(t.iloc[:-5], paths["b"])
    return paths, [], r"row counts differ across modalities \{'a': 600, 'b': 595, 'c': 600\}"


def _case_compressed(tmp_path):
    paths, _ = _tables(tmp_path, holes=False, with_ids=False)
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(paths["a"].read_bytes()))
    paths["a"] = gz
    return paths, [], r"modality 'a': .*a\.csv\.gz is compressed and cannot be split into row chunks"


def _case_infinite_late(tmp_path):
    paths, _ = _tables(tmp_path, holes=False)
    t = pd.read_csv(paths["a"], dtype={"pid": str})
    t.iloc[517, 3] = np.inf
    _write(t, paths["a"])
    return paths, ["--id", "pid"], r"modality 'a': infinite value in column 'a_2' at row 'p0517'; remove or replace"


def _case_infinite_by_position(tmp_path):
    paths, _ = _tables(tmp_path, holes=False, with_ids=False)
    t = pd.read_csv(paths["a"])
    t.iloc[401, 2] = -np.inf
    _write(t, paths["a"])
    return paths, [], r"modality 'a': infinite value in column 'a_2' at row 401;"


def _case_negative_log1p(tmp_path):
    paths, _ = _tables(tmp_path, holes=False)
    t = pd.read_parquet(paths["b"])
    t.iloc[333, 2] = -1.5
    _write(t, paths["b"])
    return paths, ["--id", "pid", "--prep", "b=log1p"], (r"modality 'b': log1p needs non-negative counts, column "
                                                          r"'b_1' has -1\.5 at row 'p0333'")


def _case_text_column(tmp_path):
    paths, _ = _tables(tmp_path, holes=False)
    t = pd.read_csv(paths["a"], dtype={"pid": str})
    t["site"] = "x"
    _write(t, paths["a"])
    return paths, ["--id", "pid"], r"modality 'a': non-numeric columns \['site'\]; request one-hot encoding"


def _case_duplicated_ids(tmp_path):
    paths, _ = _tables(tmp_path, holes=False)
    t = pd.read_csv(paths["a"], dtype={"pid": str})
    t.loc[450, "pid"] = "p0003"
    _write(t, paths["a"])
    return paths, ["--id", "pid"], r"modality 'a': duplicated IDs in column 'pid' of .*a\.csv: \['p0003'\]"


def _case_missing_file(tmp_path):
    paths, _ = _tables(tmp_path, holes=False, with_ids=False)
    paths["b"] = tmp_path / "nope.parquet"
    return paths, [], r"modality 'b': file not found: .*nope\.parquet"


ERRORS = {
    "misaligned": _case_misaligned, "row_counts": _case_row_counts, "compressed": _case_compressed,
    "infinite_late": _case_infinite_late, "infinite_by_position": _case_infinite_by_position,
    "negative_log1p": _case_negative_log1p, "text_column": _case_text_column,
    "duplicated_ids": _case_duplicated_ids, "missing_file": _case_missing_file,
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line(tmp_path, capsys, stub, case):
    paths, extra, pattern = ERRORS[case](tmp_path)
    out = tmp_path / "res"
    code, _, err = _run(["fit", *_view_args(paths), *extra, "--out", out, "--chunks", CHUNK, "-q"], capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hclstat fit: error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("argv, pattern", [
    (["--chunks", "0"], r"argument --chunks: expected a positive integer, got 0"),
    (["--chunks", "x"], r"argument --chunks: expected a positive integer, got 'x'"),
    (["--chunks", "100", "--join", "outer", "--id", "pid"], r"--join outer needs the in-memory join"),
])
def test_usage_errors(tmp_path, capsys, argv, pattern):
    paths, _ = _tables(tmp_path, n=50, holes=False)
    code, _, err = _run(["fit", *_view_args(paths), "--out", tmp_path / "o", *argv], capsys)
    assert code == 2
    import re

    assert re.search(pattern, err), err


def test_large_parquet_row_groups_warn_once(tmp_path, capsys, stub):
    paths, _ = _tables(tmp_path, holes=False, with_ids=False)
    t = pd.read_parquet(paths["b"])
    t.to_parquet(paths["b"], index=False, row_group_size=N)  # one row group of 600 rows
    code, _, err = _run(["fit", *_view_args(paths), "--out", tmp_path / "o", "--chunks", 100, "--no-figures"],
                        capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("hclstat: warning:")]
    assert len(warned) == 1
    assert "modality 'b': " in warned[0] and "row groups of up to 600 rows, which are read whole" in warned[0]


def test_loader_rejects_bad_arguments(tmp_path):
    paths, _ = _tables(tmp_path, n=50, holes=False)
    with pytest.raises(ValueError, match="chunk_rows: expected a positive integer, got 0"):
        load_views_chunked(paths, chunk_rows=0)
    with pytest.raises(ValueError, match="join: expected 'inner' or 'outer', got 'left'"):
        load_views_chunked(paths, chunk_rows=10, join="left")
    with pytest.raises(TypeError, match="modality 'a': reading in row chunks needs a file, got a DataFrame"):
        load_views_chunked({"a": pd.DataFrame({"x": [1.0, 2.0]})}, chunk_rows=10)
    with pytest.raises(ValueError, match=r"preprocessing given for unknown modalities \['z'\]"):
        load_views_chunked(paths, chunk_rows=10, preprocessing={"z": "log1p"})
