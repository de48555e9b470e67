"""Input gaps of issue 15: huge/tiny column values, duplicated header names, the delimiter, the encoding.

Each message is pinned; each test failed on the code before the fix (see the
commit that added this file).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from hclstat import cli
from hclstat.io import load_views, read_table
from hclstat.moments import compute_moments
from hclstat.preprocess import DataWarning, ModalityPreprocessor


def _correlated(rng, n=200):
    z = rng.standard_normal((n, 1))
    a = z + 0.5 * rng.standard_normal((n, 3))
    b = z + 0.5 * rng.standard_normal((n, 2))
    return a, b


# ------------------------------------------------------- values near 1e200
@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_preprocessing_rescales_a_column_whose_squares_overflow(rng, scale):
    """Standardising a column of values near 1e200 (or 1e-200) gives what the same column at unit scale gives."""
    a, _ = _correlated(rng)
    unit = pd.DataFrame(a, columns=["p", "q", "r"])
    big = unit.copy()
    big["q"] = scale * (1.0 + 0.1 * unit["q"])
    ref = unit.copy()
    ref["q"] = 1.0 + 0.1 * unit["q"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning escapes
        got = ModalityPreprocessor(name="a").fit_transform(big)
    want = ModalityPreprocessor(name="a").fit_transform(ref)
    assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-12)


def test_load_views_then_moments_of_a_huge_column_are_finite(rng):
    a, b = _correlated(rng)
    a[:, 1] = 1e200 * (1.0 + 0.1 * a[:, 1])
    data = load_views({"a": pd.DataFrame(a, columns=["p", "q", "r"]), "b": pd.DataFrame(b, columns=["x", "y"])})
    m = compute_moments(data.views)
    assert np.isfinite(m.covariance).all()
    assert_allclose(np.diag(m.covariance), 1.0, rtol=1e-12)


@pytest.mark.parametrize("dask", [False, True])
@pytest.mark.parametrize("scale, how", [(1e200, "large.*overflow"), (1e-200, "small.*underflow")])
def test_moments_refuse_a_column_whose_squares_overflow(rng, scale, how, dask):
    """Raw (unscaled) values near 1e200: an error naming modality and column, never inf/NaN moments
    (before: NaN variance, read by HCL as 'zero variance')."""
    a, b = _correlated(rng)
    a[:, 1] = scale * (1.0 + 0.1 * a[:, 1])
    views = {"a": pd.DataFrame(a, columns=["p", "q", "r"]), "b": b}
    name = r"column 1 \('q'\)"
    if dask:
        import dask.array as da

        views = {"a": da.from_array(a, chunks=50), "b": da.from_array(b, chunks=50)}
        name = "column 1"
    with pytest.raises(ValueError, match=rf"modality 'a': {name} has values too {how}.*rescale it"):
        compute_moments(views)


def test_moments_of_a_huge_column_with_missing_entries_are_refused(rng):
    a, b = _correlated(rng)
    a[:, 2] = 1e200 * (1.0 + 0.1 * a[:, 2])
    a[:7, 2] = np.nan
    with pytest.raises(ValueError, match=r"modality 'a': column 2 has values too large.*largest \|value\| 1\.\d+e\+200"):
        compute_moments({"a": a, "b": b})


def test_moments_keep_constant_and_large_but_representable_columns(rng):
    a, b = _correlated(rng)
    a[:, 0] = 3.0  # constant: variance 0, left to the estimators' 'drop constant columns'
    a[:, 1] *= 1e150  # squares 1e300: representable
    m = compute_moments({"a": a, "b": b})
    assert m.covariance[0, 0] == 0.0
    assert_allclose(m.covariance[1, 1], np.var(a[:, 1], ddof=1), rtol=1e-12)


def test_chunked_preprocessing_refuses_a_column_whose_squares_overflow(tmp_path, rng):
    from hclstat.io import load_views_chunked

    a, b = _correlated(rng, 60)
    a[:, 1] = 1e200 * (1.0 + 0.1 * a[:, 1])
    pd.DataFrame(a, columns=["p", "q", "r"]).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(b, columns=["x", "y"]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match=r"modality 'a': column 'q' has values too large.*row chunks.*rescale"):
        load_views_chunked({"a": tmp_path / "a.csv", "b": tmp_path / "b.csv"}, chunk_rows=20)


# ------------------------------------------------------ duplicated names
def test_duplicated_header_names_are_an_error_naming_them_and_their_positions(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("pid,a,b,a,c,b\n1,1,2,3,4,5\n2,4,5,6,7,8\n")
    with pytest.raises(ValueError, match=r"modality 'labs': duplicated column names in .*dup\.csv: 'a' at positions "
                                         r"1, 3; 'b' at positions 2, 5 \(0-based, in the header\)"):
        read_table(path, id_column="pid", name="labs")


def test_a_genuine_dotted_name_is_not_a_duplicate(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("pid,a,a.1\n1,1,2\n2,4,5\n")
    assert list(read_table(path, id_column="pid").columns) == ["a", "a.1"]


# ------------------------------------------------------------- delimiter
@pytest.mark.parametrize("sep, suffix", [(";", ".csv"), ("\t", ".csv"), ("|", ".csv"), (";", ".csv.gz"),
                                         (",", ".tsv")])
def test_delimiter_is_sniffed_with_a_warning(tmp_path, rng, sep, suffix):
    t = pd.DataFrame(rng.standard_normal((5, 3)), columns=["x", "y", "z"])
    t.insert(0, "pid", [f"p{i}" for i in range(5)])
    path = tmp_path / f"t{suffix}"
    t.to_csv(path, sep=sep, index=False)
    shown = re.escape(repr(sep))
    with pytest.warns(DataWarning, match=rf"split into 4 columns on {shown} .*reading it with sep={shown}"):
        got = read_table(path, id_column="pid")
    assert list(got.columns) == ["x", "y", "z"] and list(got.index) == list(t["pid"])
    assert_allclose(got.to_numpy(), t[["x", "y", "z"]].to_numpy(), rtol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # given explicitly: no warning
        assert read_table(path, id_column="pid", sep="\\t" if sep == "\t" else sep).shape == (5, 3)


def test_a_comma_file_and_a_single_column_file_read_without_a_warning(tmp_path):
    (tmp_path / "a.csv").write_text("pid,x;y\n1,2\n3,4\n")  # a ';' inside a name does not make it delimited
    (tmp_path / "one.csv").write_text("x\n1\n2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(read_table(tmp_path / "a.csv", id_column="pid").columns) == ["x;y"]
        assert list(read_table(tmp_path / "one.csv").columns) == ["x"]


def test_wrong_explicit_delimiter_says_what_the_file_looks_like(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("pid;a;b\n1;1.5;2\n2;4;5\n")
    with pytest.raises(ValueError, match=r"ID column 'pid' not found in .*semi\.csv; its columns are \['pid;a;b'\]; "
                                         r"its first lines look delimited by ';', not ',': pass sep=';' "
                                         r"\(CLI: --sep ';'\)"):
        read_table(path, id_column="pid", sep=",")


def test_bad_sep_and_encoding_arguments(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x\n1\n")
    with pytest.raises(ValueError, match=r"sep: expected one delimiter character .*got ';;'"):
        read_table(path, sep=";;")
    with pytest.raises(ValueError, match=r"encoding: unknown encoding 'latin-9x'"):
        read_table(path, encoding="latin-9x")


# -------------------------------------------------------------- encoding
def test_undecodable_byte_is_reported_with_its_offset_and_the_option(tmp_path):
    path = tmp_path / "lat.csv"
    body = b"pid,name,x\n" + b"".join(b"p%d,abc,%d\n" % (i, i) for i in range(50000)) + b"q9,caf\xe9,1\n"
    path.write_bytes(body)
    offset = body.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"modality 'm': cannot decode .*lat\.csv as utf-8: byte 0xe9 at byte offset "
                                         rf"{offset} \(line 50002\) is not valid utf-8; pass the file's encoding, "
                                         r"e\.g\. encoding='latin-1' \(CLI: --encoding latin-1\)"):
        read_table(path, id_column="pid", name="m")
    got = read_table(path, id_column="pid", encoding="latin-1")
    assert got.loc["q9", "name"] == "café"


def test_undecodable_offset_across_read_chunks(tmp_path):
    """A multi-byte character split across the scanner's 1 MiB reads is not an error; the bad byte's offset is exact."""
    from hclstat.io.read import _undecodable

    head = b"x" * ((1 << 20) - 1) + "é".encode() + b"\n"  # 'é' straddles the first read
    path = tmp_path / "t.csv"
    path.write_bytes(head + b"ab\xffc\n")
    assert _undecodable(path, "utf-8") == (len(head) + 2, 2, 0xFF)


# ------------------------------------------------------------ command line
def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_sep_and_encoding(tmp_path, capsys, rng, monkeypatch):
    from hclstat.cli import shared

    captured = {}

    def stop(estimator, views, console):
        captured.update({m: v.shape for m, v in views.items()})
        raise ValueError("stop after reading")

    monkeypatch.setattr(shared, "fit_estimator", stop)
    a, b = _correlated(rng, 30)
    ta = pd.DataFrame(a, columns=["x", "y", "z"])
    ta.insert(0, "pid", [f"p{i}" for i in range(30)])
    tb = pd.DataFrame(b, columns=["é1", "é2"])
    tb.insert(0, "pid", [f"p{i}" for i in range(30)])
    ta.to_csv(tmp_path / "a.csv", sep=";", index=False)
    tb.to_csv(tmp_path / "b.csv", sep=";", index=False, encoding="latin-1")
    views = ["--view", f"a={tmp_path / 'a.csv'}", "--view", f"b={tmp_path / 'b.csv'}", "--id", "pid"]
    code, err = _run(["fit", *views, "--sep", ";", "--out", tmp_path / "o", "-q"], capsys)
    assert code == 1 and "modality 'b': cannot decode" in err and "--encoding latin-1" in err
    code, err = _run(["fit", *views, "--sep", ";", "--encoding", "latin-1", "--out", tmp_path / "o", "-q"], capsys)
    assert code == 1 and "stop after reading" in err, err
    assert captured == {"a": (30, 3), "b": (30, 2)}
    code, err = _run(["fit", *views, "--sep", ",", "--encoding", "latin-1", "--out", tmp_path / "o", "-q"], capsys)
    assert code == 1 and "look delimited by ';', not ',': pass sep=';' (CLI: --sep ';')" in err, err
