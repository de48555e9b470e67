"""Tests for the command line (:mod:`hclstat.cli`).

Most cases run in-process through ``main(argv)`` (it returns the exit code);
a few run ``python -m hclstat`` as a subprocess to check the real entry point.
The plumbing tests replace the estimator by a stub (``shared.make_estimator``);
the others run the real HCL, SFA and downstream models, which the package
always ships (a missing one is a failure, not a skip).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hclstat import cli
from hclstat.cli import shared
from hclstat.estimators.base import BaseHierarchicalEstimator
from hclstat.hierarchy import Hierarchy
from hclstat.model import HierarchicalModel
from hclstat.model.designs import D1_DIMS, d1_hierarchy

TRUTH = Hierarchy({"a": 8, "b": 9, "c": 10}, {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "c": 1})
N = 300


# ----------------------------------------------------------------- fixtures
class StubEstimator(BaseHierarchicalEstimator):
    """A deterministic stand-in for HCL: leading eigenvectors per modality.

    Keeps the CLI plumbing tests independent of the real estimators' numerics.
    """

    def __init__(self, hierarchy=None, random_state=None):
        self.hierarchy = hierarchy
        self.random_state = random_state

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
    monkeypatch.setattr(shared, "make_estimator", lambda args, hierarchy=None: StubEstimator(hierarchy))


def _tables(tmp_path, seed=0, n=N):
    """Three modality files (CSV, Parquet, CSV) with shuffled, partly overlapping IDs."""
    rng = np.random.default_rng(seed)
    model = HierarchicalModel.random(TRUTH, random_state=rng)
    views, latents = model.sample(n, random_state=rng)
    ids = np.array([f"p{i:04d}" for i in range(n)])
    _tables.latents = {s: pd.DataFrame(z, index=ids) for s, z in latents.items()}
    paths = {}
    for k, (m, x) in enumerate(views.items()):
        t = pd.DataFrame(x, columns=[f"{m}_{j}" for j in range(x.shape[1])])
        t.insert(0, "pid", ids)
        t = t.iloc[rng.permutation(n)]
        extra = pd.DataFrame(rng.standard_normal((2, x.shape[1])), columns=t.columns[1:])
        extra.insert(0, "pid", [f"only_{m}_{i}" for i in range(2)])  # dropped by the inner join
        t = pd.concat([t, extra], ignore_index=True)
        path = tmp_path / (f"{m}.parquet" if k == 1 else f"{m}.csv")
        t.to_parquet(path) if k == 1 else t.to_csv(path, index=False)
        paths[m] = path
    return paths, list(ids)


def _view_args(paths):
    out = []
    for m, p in paths.items():
        out += ["--view", f"{m}={p}"]
    return out


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _outer_ids(paths):
    """The IDs the (default) outer join keeps: the first table's in its order, then each new one's."""
    out = []
    for path in paths.values():
        t = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"pid": str})
        out += [i for i in t["pid"] if i not in set(out)]
    return out


def _check_fit_output(out, ids, hierarchy=None, join="outer"):
    h = Hierarchy.from_dict(json.loads((out / "hierarchy.json").read_text()))
    assert h.dims == TRUTH.dims
    if hierarchy is not None:
        assert h == hierarchy
    for s in h.structures:
        label = "+".join(sorted(s, key=h.index))
        z = pd.read_csv(out / "scores" / f"{label}.csv", index_col="pid", dtype={"pid": str})
        assert list(z.index) == ids and z.shape == (len(ids), h.rank(s))
        for m in s:
            a = pd.read_csv(out / "loadings" / f"{label}__{m}.csv", index_col="feature")
            assert list(a.index) == [f"{m}_{j}" for j in range(h.dims[m])]
            assert list(a.columns) == [f"comp{j + 1}" for j in range(h.rank(s))]
    nv = pd.read_csv(out / "noise_variances.csv")
    assert nv.shape == (h.n_features, 3) and (nv["noise_variance"] > 0).all()
    summary = (out / "summary.txt").read_text()
    assert "Sharing pattern" in summary and "Variance explained" in summary and "Missingness" in summary
    report = json.loads((out / "data_report.json").read_text())
    assert report["join"]["n_rows"] == len(ids) and report["join"]["join"] == join
    if join == "inner":
        assert report["join"]["dropped_ids"]["a"] == ["only_a_0", "only_a_1"]
        assert report["rows"]["per_modality"] == {m: len(ids) for m in "abc"}
    else:
        assert report["join"]["missing_ids"]["a"] == ["only_b_0", "only_b_1", "only_c_0", "only_c_1"]
        assert report["rows"]["per_modality"] == {m: len(ids) - 4 for m in "abc"}
        assert report["rows"]["per_pair"] == {"a+b": len(ids) - 6, "a+c": len(ids) - 6, "b+c": len(ids) - 6}
    for name in ("pattern", "variance_explained", "top_features"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "run.json").read_text())["command"] == "fit"
    return h


# ------------------------------------------------------------ fit (in-process)
@pytest.mark.parametrize("join", ["outer", "inner", None])
def test_fit_end_to_end_with_stub(tmp_path, capsys, stub, join):
    paths, ids = _tables(tmp_path)
    out = tmp_path / "res"
    option = [] if join is None else ["--join", join]
    code, stdout, err = _run(["fit", *_view_args(paths), "--id", "pid", *option, "--out", out], capsys)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    if join == "inner":
        assert "modality 'b': dropped 2 ID(s)" in err
        assert f"rows shared by each pair (their cross-covariance): a+b {N}, a+c {N}, b+c {N}" in err
        kept = [i for i in pd.read_csv(paths["a"], dtype={"pid": str})["pid"] if not i.startswith("only")]
    else:  # the default keeps every sample
        assert "(outer join): 306 rows" in err and "modality 'b': missing for 4 ID(s)" in err
        assert f"rows with data per modality: a {N + 2}, b {N + 2}, c {N + 2}" in err
        kept = _outer_ids(paths)
    _check_fit_output(out, kept, join=join or "outer")
    assert _leftovers(tmp_path) == []


def test_fit_with_hierarchy_spec_round_trips(tmp_path, capsys, stub):
    paths, ids = _tables(tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ranks": {"a,b,c": 1, "a,b": 1, "a": 1, "c": 1}}))  # dims from the data
    out = tmp_path / "res"
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--hierarchy", spec, "--out", out, "-q"], capsys)
    assert code == 0, err
    assert err == ""
    h = Hierarchy.from_dict(json.loads((out / "hierarchy.json").read_text()))
    assert h == TRUTH
    # the written file is itself a valid --hierarchy
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--hierarchy", out / "hierarchy.json",
                         "--out", tmp_path / "res2", "-q", "--no-figures"], capsys)
    assert code == 0, err
    assert Hierarchy.from_dict(json.loads((tmp_path / "res2" / "hierarchy.json").read_text())) == TRUTH
    assert not (tmp_path / "res2" / "figures").exists()


def test_fit_outer_join_block_missing_and_preprocessing(tmp_path, capsys, stub):
    rng = np.random.default_rng(1)
    n = 60
    ids = [f"s{i}" for i in range(n)]
    a = pd.DataFrame(rng.standard_normal((n, 4)), columns=list("wxyz"))
    a.insert(0, "sid", ids)
    a["site"] = rng.choice(["north", "south", "east"], n)
    a["const"] = 1.0
    b = pd.DataFrame(rng.poisson(4, (n - 10, 3)), columns=["c1", "c2", "c3"])
    b.insert(0, "sid", ids[10:])  # block-missing for the first 10 IDs
    b.loc[3, "c1"] = np.nan
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "res"
    argv = ["fit", "--view", f"a={tmp_path / 'a.csv'}", "--view", f"b={tmp_path / 'b.parquet'}", "--id", "sid",
            "--join", "outer", "--prep", "a=onehot", "--prep", "b=log1p", "--out", out, "--no-figures"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert "hclstat: warning: modality 'a': dropped 1 constant column(s) ['const']" in err
    assert "modality 'b': missing for 10 ID(s)" in err
    miss = pd.read_csv(out / "missingness.csv", index_col="modality")
    assert miss.loc["b", "rows_all_missing"] == 10 and miss.loc["a", "rows_all_missing"] == 0
    assert miss.loc["b", "rows_any_missing"] == 11  # 10 block-missing + one entry
    scores = pd.read_csv(next((out / "scores").iterdir()), index_col="sid")
    assert list(scores.index) == ids
    feats = pd.read_csv(out / "noise_variances.csv")
    assert feats.loc[feats.modality == "a", "feature"].tolist() == ["w", "x", "y", "z", "site=north", "site=south"]
    report = json.loads((out / "data_report.json").read_text())
    assert report["preprocessing"]["a"]["one_hot"]["site"]["reference"] == "east"
    assert report["preprocessing"]["b"]["steps"] == "log1p, center, scale"


def test_existing_output_replaced_only_after_success(tmp_path, capsys, stub, monkeypatch):
    paths, _ = _tables(tmp_path)
    out = tmp_path / "res"
    argv = ["fit", *_view_args(paths), "--id", "pid", "--out", out, "-q"]
    assert _run(argv, capsys)[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    import hclstat.plotting

    def broken(*args, **kwargs):
        (args[1]).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(hclstat.plotting, "write_figures", broken)
    code, _, err = _run(argv, capsys)
    assert code == 1
    assert err.strip() == "hclstat fit: internal error: RuntimeError: disk full (rerun with --traceback for details)"
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and _leftovers(tmp_path) == []


def test_foreign_directory_needs_overwrite(tmp_path, capsys, stub):
    paths, _ = _tables(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    argv = ["fit", *_view_args(paths), "--id", "pid", "--out", out, "-q", "--no-figures"]
    code, _, err = _run(argv, capsys)
    assert code == 1 and "pass --overwrite" in err
    assert (out / "thesis.tex").read_text() == "precious"
    code, _, err = _run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "thesis.tex").exists() and (out / "hierarchy.json").exists()


# ------------------------------------------------------------ bad input
def _csv(path, frame):
    frame.to_csv(path, index=False)
    return path


def _good(tmp_path, name, n=30, p=4, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    t = pd.DataFrame(rng.standard_normal((n, p)), columns=[f"{name}{j}" for j in range(p)])
    t.insert(0, "pid", ids if ids is not None else [f"p{i}" for i in range(n)])
    return _csv(tmp_path / f"{name}.csv", t)


def _with(tmp_path, name, edit, **kw):
    path = _good(tmp_path, name, **kw)
    t = pd.read_csv(path)
    edit(t)
    return _csv(path, t)


def _args_pair(a, b, *extra):
    return ["fit", "--view", f"a={a}", "--view", f"b={b}", "--id", "pid", *extra]


def _hier(tmp_path, obj):
    path = tmp_path / "spec.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


BAD = {
    "missing file": (lambda d: _args_pair(d / "nope.csv", _good(d, "b")), 1, "modality 'a': file not found:"),
    "unreadable format": (lambda d: _args_pair(_hier(d, "{}").rename(d / "a.xlsx"), _good(d, "b")), 1,
                          "unrecognised file format '.xlsx'"),
    "corrupt parquet": (lambda d: _args_pair(_hier(d, "garbage").rename(d / "a.parquet"), _good(d, "b")), 1,
                        "cannot read"),
    "empty table": (lambda d: _args_pair(_hier(d, "pid,x,y\n").rename(d / "a.csv"), _good(d, "b")), 1,
                    "has no rows"),
    "empty file": (lambda d: _args_pair(_hier(d, "").rename(d / "a.csv"), _good(d, "b")), 1, "is empty"),
    "no common IDs": (lambda d: _args_pair(_good(d, "a"), _good(d, "b", ids=[f"q{i}" for i in range(30)])), 1,
                      "no ID in column 'pid' is common to modalities 'a' and 'b' (a: ['p0', 'p1', 'p2'] and 27 more; "
                      "b: ['q0', 'q1', 'q2'] and 27 more)"),
    "no common IDs, inner": (lambda d: _args_pair(_good(d, "a"), _good(d, "b", ids=[f"q{i}" for i in range(30)]),
                                                  "--join", "inner"), 1,
                             "no ID in column 'pid' is common to all modalities"),
    "duplicated IDs": (lambda d: _args_pair(_good(d, "a", ids=[f"p{i % 28}" for i in range(30)]), _good(d, "b")), 1,
                       "duplicated IDs in column 'pid'"),
    "inf value": (lambda d: _args_pair(_with(d, "a", lambda t: t.__setitem__("a1", t["a1"].where(t.index != 4,
                                                                                                  np.inf))),
                                       _good(d, "b")), 1, "infinite value in column 'a1' at row 'p4'"),
    "all-NaN column": (lambda d: _args_pair(_with(d, "a", lambda t: t.__setitem__("a2", np.nan)), _good(d, "b")), 1,
                       "columns ['a2'] have no observed value"),
    "too few rows": (lambda d: _args_pair(_good(d, "a", n=6), _good(d, "b", n=8)), 1,
                     "only 8 rows after joining the modalities (need at least 10)"),
    "modality with too few rows": (lambda d: _args_pair(_good(d, "a", n=6), _good(d, "b")), 1,
                                   "modalities with fewer than 10 rows: {'a': 6}; drop them or add samples"),
    "too few rows, inner": (lambda d: _args_pair(_good(d, "a", n=6), _good(d, "b"), "--join", "inner"), 1,
                            "only 6 rows after joining the modalities (need at least 10)"),
    "rank above modality": (lambda d: _args_pair(_good(d, "a"), _good(d, "b", p=3), "--max-rank", "4"), 1,
                            "--max-rank 4 exceeds what modality 'b' allows: at most 3"),
    "hierarchy unknown modality": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--hierarchy",
                                                        _hier(d, {"ranks": {"a,z": 1}})), 1,
                                   "names unknown modalities ['z']"),
    "hierarchy rank too high": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--hierarchy",
                                                     _hier(d, {"ranks": {"a": 5}})), 1, "exceeds its 4 columns"),
    "hierarchy not JSON": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--hierarchy", _hier(d, "{oops")), 1,
                           "is not valid JSON"),
    "non-numeric column": (lambda d: _args_pair(_with(d, "a", lambda t: t.__setitem__("sex", "f")), _good(d, "b")), 1,
                           "non-numeric columns ['sex']; request one-hot encoding"),
    "ID column absent": (lambda d: ["fit", "--view", f"a={_good(d, 'a')}", "--id", "patient", "--out", d / "o"], 1,
                         "ID column 'patient' not found"),
    "row counts differ": (lambda d: ["fit", "--view", f"a={_good(d, 'a')}", "--view", f"b={_good(d, 'b', n=31)}"], 1,
                          "row counts differ across modalities"),
    "negative counts": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--prep", "b=log1p"), 1,
                        "log1p needs non-negative counts"),
    "out is a file": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--out", _hier(d, "x").rename(d / "f")), 1,
                      "exists and is not a directory"),
    "malformed --view": (lambda d: ["fit", "--view", "a.csv"], 2, "--view: expected NAME=FILE"),
    "bad modality name": (lambda d: ["fit", "--view", "a,b=x.csv"], 2, "may only contain letters"),
    "view given twice": (lambda d: ["fit", "--view", "a=x.csv", "--view", "a=y.csv"], 2, "'a' is given twice"),
    "unknown --prep step": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--prep", "a=zscore"), 2,
                            "unknown step 'zscore'"),
    "--prep unknown modality": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--prep", "q=log1p"), 2,
                                "--prep: unknown modality 'q'"),
    "sfa without hierarchy": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--estimator", "sfa"), 2,
                              "--estimator sfa needs --hierarchy"),
    "sfa with max-rank": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--estimator", "sfa", "--hierarchy",
                                               _hier(d, {"ranks": {"a,b": 1}}), "--max-rank", "2"), 2,
                          "--max-rank applies to HCL only"),
    "max-rank zero": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--max-rank", "0"), 2,
                      "argument --max-rank: expected a positive integer, got 0"),
    "bad --join": (lambda d: _args_pair(_good(d, "a"), _good(d, "b"), "--join", "left"), 2, "invalid choice: 'left'"),
    "no command": (lambda d: [], 2, "a command is required"),
    "target without column": (lambda d: ["predict", "--view", f"a={_good(d, 'a')}", "--id", "pid", "--target",
                                         str(_good(d, "y")), "--out", d / "o"], 2, "--target: expected FILE:COLUMN"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input(tmp_path, capsys, stub, case):
    make, expected_code, message = BAD[case]
    argv = [str(a) for a in make(tmp_path)]
    if "--out" not in argv and argv:
        argv += ["--out", str(tmp_path / "o")]
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = _run(argv, capsys)
    assert code == expected_code, err
    assert message in err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err  # one line, last
    if expected_code == 1:
        assert errors[0].startswith(("hclstat fit: error: ", "hclstat predict: error: ")), err
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing new, no temp dirs


def test_missing_optional_parts_give_a_clear_error(capsys, monkeypatch, tmp_path):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name in ("hclstat.checks", "hclstat.estimators.hcl"):
            err = ModuleNotFoundError(f"No module named {name!r}")
            err.name = name
            raise err
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    code, _, err = _run(["check", "all", "--quick", "--out", tmp_path / "c"], capsys)
    assert code == 1
    assert err.strip() == ("hclstat check: error: the paper checks are not available in this installation "
                           "(module hclstat.checks not found)")
    paths, _ = _tables(tmp_path)
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--out", tmp_path / "o", "-q"], capsys)
    assert code == 1 and "the HCL estimator is not available" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------ other commands
def test_simulate_and_check_delegate(tmp_path, capsys, monkeypatch):
    calls = {}

    def run_study(config, out, scheduler=None, workers=None, quiet=False):
        calls["study"] = (config, out, scheduler, workers, quiet)
        return pd.DataFrame({"cell": [0], "replication": [0], "method": ["m"], "metric": ["fit_time"],
                             "value": [0.1], "error": [None]})

    def run_checks(names, quick, out):
        calls["checks"] = (names, quick, out)
        return {"identifiability": {"passed": True}, "rates": {"passed": calls.get("fail") is None}}

    def fake(module, attr, what):
        return {"run_study": run_study, "run_checks": run_checks}[attr]

    monkeypatch.setattr(shared, "import_attr", fake)
    config = tmp_path / "study.toml"
    config.write_text("")
    code, _, err = _run(["simulate", config, "--out", tmp_path / "s", "--workers", "2", "-q"], capsys)
    assert code == 0, err
    assert calls["study"] == (str(config), str(tmp_path / "s"), None, 2, True)
    code, _, err = _run(["simulate", tmp_path / "absent.toml", "--out", tmp_path / "s"], capsys)
    assert code == 1 and "study config not found" in err
    assert _run(["check", "--quick", "--out", tmp_path / "c"], capsys)[0] == 0
    assert calls["checks"] == (["all"], True, str(tmp_path / "c"))
    calls["fail"] = True
    code, _, err = _run(["check", "rates", "--out", tmp_path / "c"], capsys)
    assert code == 1 and err.strip() == f"hclstat check: error: 1 of 2 check(s) failed: rates (see {tmp_path / 'c'})"
    assert calls["checks"] == (["rates"], False, str(tmp_path / "c"))


class _Verdict:
    def __init__(self, passed):
        self.passed = passed


class _NoVerdict:
    pass


CHECK_RESULTS = {
    # a result of None, or one without 'passed', used to count as a pass
    "None": ({"rates": {"passed": True}, "ident": None}, "1 of 2 check(s) failed: ident (no verdict: got None, "
                                                         "which has no 'passed')"),
    "no passed key": ({"rates": {"runtime_seconds": 1.0}}, "1 of 1 check(s) failed: rates (no verdict: got "
                                                             "{'runtime_seconds': 1.0}, which has no 'passed')"),
    "object without passed": ({"rates": _NoVerdict()}, "1 of 1 check(s) failed: rates (no verdict: got <"),
    "passed not a bool": ({"rates": {"passed": None}}, "1 of 1 check(s) failed: rates (no verdict: 'passed' is "
                                                         "None, expected True or False)"),
    "failed attribute": ({"a": _Verdict(True), "b": _Verdict(False)}, "1 of 2 check(s) failed: b (see "),
    "nothing reported": ({}, "no check reported a result"),
    "bare None": (None, "1 of 1 check(s) failed: checks (no verdict: got None"),
}


@pytest.mark.parametrize("case", list(CHECK_RESULTS), ids=list(CHECK_RESULTS))
def test_check_without_an_explicit_passing_verdict_fails(tmp_path, capsys, monkeypatch, case):
    result, message = CHECK_RESULTS[case]
    monkeypatch.setattr(shared, "import_attr", lambda module, attr, what: lambda names, quick, out: result)
    code, stdout, err = _run(["check", "--quick", "--out", tmp_path / "c"], capsys)
    assert code == 1 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("hclstat check: error: ") and message in err, err


def test_check_passes_on_explicit_verdicts(tmp_path, capsys, monkeypatch):
    result = {"a": {"passed": np.bool_(True)}, "b": True, "c": _Verdict(True)}
    monkeypatch.setattr(shared, "import_attr", lambda module, attr, what: lambda names, quick, out: result)
    code, stdout, err = _run(["check", "--out", tmp_path / "c"], capsys)
    assert code == 0 and err == "" and stdout.startswith("checks passed")


def _study(tmp_path, methods):
    path = tmp_path / "study.toml"
    path.write_text(f'[study]\nreplications = 2\nseed = 1\nmethods = {methods}\n'
                    '[grid]\nn = [40, 60]\n[model]\np = [4, 5, 6]\n')
    return path


def test_simulate_fails_when_every_fit_failed(tmp_path, capsys):
    # the only method gets an option HCL does not take: every row is an error row (this used to exit 0)
    config = _study(tmp_path, '[{ name = "hcl", bogus = 1 }]')
    code, stdout, err = _run(["simulate", config, "--out", tmp_path / "s", "--workers", "1", "-q"], capsys)
    assert code == 1 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hclstat simulate: error: every fit of the study failed: 4 of 4 fits failed; "
                               "first, cell 0 replication 0 method 'hcl': fit: TypeError: ")
    assert "bogus" in lines[0] and "results.csv" in lines[0]
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert set(summary["method"]) == {"hcl"} and summary["n_errors"].sum() == 4


def test_simulate_warns_when_some_fits_failed(tmp_path, capsys):
    config = _study(tmp_path, '[{ name = "hcl", label = "bad", bogus = 1 }, "truth"]')
    code, stdout, err = _run(["simulate", config, "--out", tmp_path / "s", "--workers", "1", "-q"], capsys)
    assert code == 0, err
    assert stdout == ""  # -q
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "hclstat: warning: 4 of 8 fits failed; first, cell 0 replication 0 method 'bad': fit: TypeError: "), err
    assert "n_errors" in lines[0]
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert summary.loc[summary["method"] == "bad", "n_errors"].eq(2).all()
    assert summary.loc[summary["method"] == "truth", "n_errors"].eq(0).all()


def test_construct_refuses_a_keyword_the_estimator_does_not_take():
    class Narrow:
        def __init__(self, representation=None):
            self.representation = representation

    with pytest.raises(TypeError, match=r"^Narrow does not accept the keyword argument 'random_state' that the "
                                        r"command line sets; expected some of \['representation'\]"):
        shared.construct(Narrow, representation=None, random_state=0)
    assert isinstance(shared.construct(Narrow, representation=1), Narrow)

    class Open:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    assert shared.construct(Open, a=1).kwargs == {"a": 1}


def test_predict_with_a_model_missing_an_argument_fails_naming_it(tmp_path, capsys, stub, monkeypatch):
    # a downstream model without random_state used to be built silently without the seed
    class _NoSeed(_StubRegressor):
        def __init__(self, representation=None):
            self.representation = representation

    paths, _ = _tables(tmp_path)
    a = pd.read_csv(paths["a"], dtype={"pid": str})
    pd.DataFrame({"pid": a["pid"], "y": a["a_0"]}).to_csv(tmp_path / "y.csv", index=False)
    real = shared.import_attr
    monkeypatch.setattr(shared, "import_attr",
                        lambda m, attr, w: _NoSeed if attr == "HCLRegressor" else real(m, attr, w))
    code, _, err = _run(["predict", *_view_args(paths), "--id", "pid", "--target", f"{tmp_path / 'y.csv'}:y",
                         "--out", tmp_path / "pred", "-q"], capsys)
    assert code == 1
    assert err.strip().startswith("hclstat predict: error: _NoSeed does not accept the keyword argument "
                                  "'random_state'"), err
    assert not (tmp_path / "pred").exists()


class _StubRegressor:
    def __init__(self, representation=None, random_state=None):
        self.representation = representation

    def fit(self, views, y, unlabeled_views=None):
        self.representation_ = self.representation.fit(unlabeled_views if unlabeled_views is not None else views)
        Z = self._design(views)
        self.coef_ = np.linalg.lstsq(Z, y, rcond=None)[0]
        return self

    def _design(self, views):
        z = self.representation_.transform(views)
        return np.column_stack([np.ones(len(next(iter(views.values()))))] + list(z.values()))

    def predict(self, views):
        return self._design(views) @ self.coef_

    def summary(self):
        return "stub regression summary"


def test_predict_with_stub_models(tmp_path, capsys, stub, monkeypatch):
    paths, ids = _tables(tmp_path)
    a = pd.read_csv(paths["a"], dtype={"pid": str})
    target = pd.DataFrame({"pid": a["pid"], "y": a["a_0"] * 2 + 1})
    target.loc[:19, "y"] = np.nan  # unlabelled rows are only predicted
    target.to_csv(tmp_path / "y.csv", index=False)
    real = shared.import_attr
    monkeypatch.setattr(shared, "import_attr",
                        lambda m, attr, w: _StubRegressor if attr == "HCLRegressor" else real(m, attr, w))
    out = tmp_path / "pred"
    code, _, err = _run(["predict", *_view_args(paths), "--id", "pid", "--target", f"{tmp_path / 'y.csv'}:y",
                         "--test-fraction", "0.25", "--join", "inner", "--out", out], capsys)
    assert code == 0, err
    pred = pd.read_csv(out / "predictions.csv", index_col="pid")
    assert len(pred) == N and list(pred.columns) == ["target", "prediction", "split"]
    assert pred["split"].value_counts().to_dict() == {"train": 210, "test": 70, "unlabelled": 20}
    assert pred.loc[pred.split == "unlabelled", "target"].isna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["test"]["n"] == 70 and metrics["test"]["r2"] > 0.3
    assert (out / "summary.txt").read_text().startswith("stub regression summary")
    # the default join keeps the samples some tables lack too (issue 13); they have no target here
    code, _, err = _run(["predict", *_view_args(paths), "--id", "pid", "--target", f"{tmp_path / 'y.csv'}:y",
                         "--test-fraction", "0.25", "--out", tmp_path / "pred_outer"], capsys)
    assert code == 0, err
    outer = pd.read_csv(tmp_path / "pred_outer" / "predictions.csv", index_col="pid")
    assert len(outer) > N and set(pred.index) < set(outer.index)
    assert outer.loc[outer.split == "unlabelled", "target"].isna().all()
    assert outer.loc[outer.split != "unlabelled", "target"].notna().all()


# ------------------------------------------------------------ demo
def test_demo_in_process_with_stub(tmp_path, capsys, stub):
    out = tmp_path / "demo"
    code, stdout, err = _run(["demo", "--n", "200", "--out", out], capsys)
    assert code == 0, err
    for name in ("hierarchy.json", "true_hierarchy.json", "comparison.txt", "pattern_comparison.csv",
                 "loading_errors.csv", "summary.txt", "figures/pattern_true_vs_estimated.png", "data/a.csv"):
        assert (out / name).exists(), name
    assert cli.DEMO_DIMS == D1_DIMS
    assert Hierarchy.from_dict(json.loads((out / "true_hierarchy.json").read_text())) == d1_hierarchy()
    pc = pd.read_csv(out / "pattern_comparison.csv", index_col="structure")
    assert pc.loc["{a,b}", "true_rank"] == 1 and pc.loc["{a,b}", "estimated_rank"] == 0  # the stub has no {a,b}
    assert "Learned vs true hierarchy" in (out / "summary.txt").read_text()
    le = pd.read_csv(out / "loading_errors.csv")
    assert len(le) == 8 and le["sin_theta"].isna().sum() == 2


# ------------------------------------------------------------ real estimators
def _subprocess(argv, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COV_")}
    return subprocess.run([sys.executable, "-m", "hclstat", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_subprocess_usage_and_bad_input(tmp_path):
    r = _subprocess(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("hclstat ")
    r = _subprocess(["fit", "--view", "a"], tmp_path)
    assert r.returncode == 2 and "the following arguments are required: --out" in r.stderr
    r = _subprocess(["fit", "--view", "a=nope.csv", "--view", "b=nope2.parquet", "--out", "res"], tmp_path)
    assert r.returncode == 1
    assert r.stderr == "hclstat fit: error: modality 'a': file not found: nope.csv\n"
    assert list(tmp_path.iterdir()) == []


def test_subprocess_fit_hcl_learns_pattern_and_is_reproducible(tmp_path):
    paths, _ = _tables(tmp_path, n=600)
    kept = _outer_ids(paths)
    runs = []
    for name in ("r1", "r2"):
        r = _subprocess(["fit", *_view_args(paths), "--id", "pid", "--seed", "3", "--out", name, "--no-figures"
                         if name == "r2" else "--top=5"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        runs.append(tmp_path / name)
    h = _check_fit_output(runs[0], kept)
    assert h.n_components >= 1 and json.loads((runs[0] / "run.json").read_text())["estimator"] == "HCL"
    files = sorted(p.relative_to(runs[0]) for p in (runs[0] / "loadings").iterdir())
    assert files and files == sorted(p.relative_to(runs[1]) for p in (runs[1] / "loadings").iterdir())
    for f in files:
        assert (runs[0] / f).read_bytes() == (runs[1] / f).read_bytes(), f
    for name in ("hierarchy.json", "noise_variances.csv"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes()


def test_fit_hcl_in_process_with_given_hierarchy_and_max_rank(tmp_path, capsys):
    paths, ids = _tables(tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TRUTH.to_dict()))
    out = tmp_path / "res"
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--hierarchy", spec, "--max-rank", "2",
                         "--out", out, "-q"], capsys)
    assert code == 0, err
    assert Hierarchy.from_dict(json.loads((out / "hierarchy.json").read_text())) == TRUTH


def test_fit_sfa_with_hierarchy(tmp_path, capsys):
    paths, ids = _tables(tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ranks": TRUTH.to_dict()["ranks"]}))
    out = tmp_path / "res"
    code, _, err = _run(["fit", *_view_args(paths), "--id", "pid", "--estimator", "sfa", "--hierarchy", spec,
                         "--out", out, "-q", "--no-figures"], capsys)
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["estimator"] == "StructuredFactorAnalysis"
    assert Hierarchy.from_dict(json.loads((out / "hierarchy.json").read_text())) == TRUTH


def test_demo_with_hcl(tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = _run(["demo", "--n", "1000", "--out", out, "-q"], capsys)
    assert code == 0, err
    pc = pd.read_csv(out / "pattern_comparison.csv", index_col="structure")
    assert set(pc.index) >= {"{a,b,c}", "{a,b}", "{a}", "{b}", "{c}"}
    assert (pc["rank_error"] == pc["estimated_rank"] - pc["true_rank"]).all()
    le = pd.read_csv(out / "loading_errors.csv")
    assert len(le) == 8 and (le["sin_theta"].dropna() >= 0).all()
    assert (out / "figures" / "pattern_true_vs_estimated.png").exists()


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_predict_with_real_models(tmp_path, capsys, task):
    paths, ids = _tables(tmp_path, n=400)
    rng = np.random.default_rng(5)
    signal = 2 * _tables.latents[frozenset("abc")].iloc[:, 0].to_numpy()
    if task == "regression":
        y = signal + 0.3 * rng.standard_normal(len(ids))
    else:
        y = np.where(signal + 0.3 * rng.standard_normal(len(ids)) > 0, "case", "control")
    pd.DataFrame({"pid": ids, "outcome": y}).to_csv(tmp_path / "y.csv", index=False)
    out = tmp_path / "pred"
    code, _, err = _run(["predict", *_view_args(paths), "--id", "pid", "--target", f"{tmp_path / 'y.csv'}:outcome",
                         "--test-fraction", "0.2", "--out", out, "-q"], capsys)
    assert code == 0, err
    pred = pd.read_csv(out / "predictions.csv", index_col="pid")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task
    if task == "classification":
        assert set(pred["prediction"]) <= {"case", "control"} and "probability_control" in pred.columns
        assert metrics["classes"] == {"0": "case", "1": "control"}
        assert metrics["test"]["accuracy"] > 0.7
    else:
        assert metrics["test"]["r2"] > 0.5
    assert (out / "hierarchy.json").exists()


@pytest.mark.slow
def test_breast_cancer_example_writes_its_figures(tmp_path, monkeypatch):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "breast_cancer_views.py"
    monkeypatch.syspath_prepend(str(example.parent))
    import breast_cancer_views

    views, diagnosis = breast_cancer_views.breast_cancer_views()
    assert [t.shape for t in views.values()] == [(569, 11)] * 3 and diagnosis.nunique() == 2
    breast_cancer_views.main(tmp_path / "bc")
    for name in ("pattern", "variance_explained", "top_features"):
        assert (tmp_path / "bc" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert Hierarchy.from_dict(json.loads((tmp_path / "bc" / "hierarchy.json").read_text())).modalities == (
        "mean", "se", "worst")
