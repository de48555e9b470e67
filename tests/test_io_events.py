"""Long event tables to wide modality tables (hclstat.io.events) and the ``hclstat events`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from pandas.testing import assert_frame_equal, assert_series_equal

from hclstat import cli
from hclstat.io import event_features, numeric_features, outcome_within, time_to_event

# subject 1: hdl at -10, -5, -5 (tie), -1, -1 (tie); at the index (0) and after it (3): must be ignored
# subject 2: hdl twice at -3 (one distinct time: slope NaN), chol once at -2
# subject 3: only rows at or after the index
ROWS = [
    (1, -10, "hdl", 1.0), (1, -5, "hdl", 3.0), (1, -1, "hdl", 2.0), (1, 0, "hdl", 100.0),
    (2, -3, "hdl", 7.0), (1, -5, "hdl", 4.0), (2, -2, "chol", 5.0), (1, 3, "hdl", 1000.0),
    (1, -1, "hdl", 6.0), (2, -3, "hdl", 9.0), (3, 0, "chol", 11.0), (3, 2, "hdl", 12.0),
]


@pytest.fixture
def labs():
    return pd.DataFrame(ROWS, columns=["id", "days", "test", "value"])


@pytest.fixture
def dx():
    return pd.DataFrame([(1, -20, "htn"), (1, -3, "htn"), (1, -3, "mi"), (2, -1, "htn"), (2, 0, "mi"),
                         (3, 5, "mi"), (1, 4, "htn")], columns=["id", "days", "event"])


def _slope(t, x):
    return np.polyfit(np.asarray(t, float), np.asarray(x, float), 1)[0]


def test_every_numeric_summary_has_its_known_value(labs):
    out = numeric_features(labs, subjects=[1, 2, 3, 4])
    assert list(out.index) == [1, 2, 3, 4] and out.index.name == "id"
    assert list(out.columns) == [f"{v}_{s}" for v in ("chol", "hdl")
                                 for s in ("last", "mean", "min", "max", "count", "slope")]
    h = out.loc[1]
    # before the index: (-10, 1), (-5, 3), (-5, 4), (-1, 2), (-1, 6); last: the later row of the -1 tie
    assert h["hdl_last"] == 6.0 and h["hdl_count"] == 5
    assert_allclose([h["hdl_mean"], h["hdl_min"], h["hdl_max"]], [16 / 5, 1.0, 6.0], rtol=1e-12)
    assert_allclose(h["hdl_slope"], _slope([-10, -5, -5, -1, -1], [1, 3, 4, 2, 6]), rtol=1e-12)
    s2 = out.loc[2]
    assert s2["hdl_last"] == 9.0 and s2["hdl_mean"] == 8.0 and s2["hdl_count"] == 2
    assert np.isnan(s2["hdl_slope"])  # two rows, one distinct time
    assert s2["chol_last"] == 5.0 and np.isnan(s2["chol_slope"])
    # no data: count 0, every other summary NaN (subject 3 only has rows at/after the index, 4 has none)
    for subject in (3, 4):
        assert (out.loc[subject].filter(like="_count") == 0).all()
        assert out.loc[subject].drop(["hdl_count", "chol_count"]).isna().all()
    assert out["hdl_count"].dtype == np.int64 and out["hdl_mean"].dtype == np.float64
    assert np.isnan(out.loc[1, "chol_last"]) and out.loc[1, "chol_count"] == 0


def test_window_start_is_inclusive_and_end_exclusive(labs):
    out = numeric_features(labs, window=(-5, -1), summaries=("count", "mean", "last"))
    assert out.loc[1, "hdl_count"] == 2 and out.loc[1, "hdl_mean"] == 3.5  # the two rows at -5; -1 excluded
    assert out.loc[1, "hdl_last"] == 4.0  # the later row of the tie at -5
    assert out.loc[2, "hdl_count"] == 2 and out.loc[2, "chol_count"] == 1
    assert list(out.columns) == ["chol_count", "chol_mean", "chol_last", "hdl_count", "hdl_mean", "hdl_last"]
    assert list(out.index) == [1, 2, 3]  # default rows: the subjects of the table


def test_index_times_shift_the_clock(labs):
    index = pd.Series({1: 1000.0, 2: -50.0, 3: 7.0})
    shifted = labs.assign(days=labs["days"] + labs["id"].map(index))
    assert_frame_equal(numeric_features(shifted, index=index), numeric_features(labs))
    dx = pd.DataFrame({"id": [1, 2], "days": [999.5, -49.0], "event": ["htn", "htn"]})
    ev = event_features(dx, index=index)
    assert list(ev["htn_ever"]) == [1, 0, 0]  # 2's event is after its index; 3 is in index only


def test_a_planted_post_index_value_changes_no_feature(labs, dx):
    index = pd.Series({1: 10.0, 2: 0.0, 3: -4.0})
    absolute = labs.assign(days=labs["days"] + labs["id"].map(index))
    planted = []
    for subject, t0 in index.items():
        for test in ("hdl", "chol"):
            planted += [(subject, t0, test, 1e12), (subject, t0 + 0.5, test, -1e12), (subject, t0 + 1e6, test, 1e12)]
    leaky = pd.concat([absolute, pd.DataFrame(planted, columns=absolute.columns)], ignore_index=True)
    for window in ((-np.inf, 0), (-6, 0), (-6, -2)):
        assert_frame_equal(numeric_features(leaky, index=index, window=window),
                           numeric_features(absolute, index=index, window=window))
    extra = pd.DataFrame([(s, t0 + d, e) for s, t0 in index.items() for d in (0, 1, 100) for e in ("htn", "mi")],
                         columns=dx.columns)
    dx_abs = dx.assign(days=dx["days"] + dx["id"].map(index))
    assert_frame_equal(event_features(pd.concat([dx_abs, extra]), index=index), event_features(dx_abs, index=index))


def test_event_features_ever_and_count(dx):
    out = event_features(dx, subjects=[1, 2, 3, 9])
    assert list(out.columns) == ["htn_ever", "htn_count", "mi_ever", "mi_count"]
    assert out.loc[1].tolist() == [1, 2, 1, 1]
    assert out.loc[2].tolist() == [1, 1, 0, 0]  # mi at the index is not before it
    assert out.loc[3].tolist() == [0, 0, 0, 0] and out.loc[9].tolist() == [0, 0, 0, 0]
    assert (out.dtypes == np.int64).all()
    window = event_features(dx, window=(-3, 0), summaries="ever")
    assert window.loc[1].tolist() == [1, 1]  # -3 is inside, -20 outside
    assert event_features(dx, window=(-20, -3)).loc[1].tolist() == [1, 1, 0, 0]


# ------------------------------------------------------------------ outcomes
@pytest.fixture
def outcome_table():
    # A: event at 5; B: at 15; C: none, followed 5; D: none, followed exactly 10; E: only at the index and before;
    # F: event at 8 after its follow-up ended at 6 (ignored)
    rows = [("A", 5, "death"), ("A", 7, "death"), ("B", 15, "death"), ("E", 0, "death"), ("E", -3, "death"),
            ("F", 8, "death"), ("C", 2, "stroke")]
    table = pd.DataFrame(rows, columns=["id", "days", "event"])
    follow = pd.Series({"A": 30.0, "B": 20.0, "C": 5.0, "D": 10.0, "E": 20.0, "F": 6.0})
    return table, follow


def test_outcome_within_horizon_and_censoring(outcome_table):
    table, follow = outcome_table
    y = outcome_within(table, horizon=10, variable="event", which="death", follow_up=follow)
    expected = pd.Series([1.0, 0.0, np.nan, 0.0, 0.0, np.nan], index=pd.Index(list("ABCDEF"), name="id"),
                         name="outcome")
    assert_series_equal(y, expected)
    # without follow-up nobody is censored; the stroke counts when asked for
    y = outcome_within(table, horizon=10, variable="event", which=["stroke", "death"], subjects=list("ABCDEF"))
    assert y.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    # a table of the event's rows only (variable=None), with index times on an absolute clock
    deaths = table[table["event"] == "death"].assign(days=lambda d: d["days"] + 100)
    index = pd.Series(100.0, index=follow.index)
    y2 = outcome_within(deaths, horizon=10, index=index, follow_up=follow + 100)
    assert_series_equal(y2, expected)


def test_an_outcome_row_before_the_index_cannot_change_the_outcome(outcome_table):
    table, follow = outcome_table
    early = pd.DataFrame([(s, d, "death") for s in "ABCDEF" for d in (-100, -1, 0)], columns=table.columns)
    with_early = pd.concat([early, table], ignore_index=True)
    kw = {"variable": "event", "which": "death", "follow_up": follow}
    assert_series_equal(outcome_within(with_early, horizon=10, **kw), outcome_within(table, horizon=10, **kw))
    assert_frame_equal(time_to_event(with_early, **kw), time_to_event(table, **kw))


def test_time_to_event(outcome_table):
    table, follow = outcome_table
    tte = time_to_event(table, variable="event", which="death", follow_up=follow)
    assert tte["time"].tolist() == [5.0, 15.0, 5.0, 10.0, 20.0, 6.0]
    assert tte["event"].tolist() == [1, 1, 0, 0, 0, 0] and tte["event"].dtype == np.int64
    never = r"before the index time for 1 subject\(s\) \(\['Z'\]\); they are never at risk"
    with pytest.raises(ValueError, match=never):
        time_to_event(table, variable="event", which="death", follow_up=pd.concat([follow, pd.Series({"Z": 0.0})]))
    with pytest.raises(ValueError, match="follow_up is required"):
        time_to_event(table, follow_up=None)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("call, error, message", [
    (lambda t: numeric_features(t, value="result"), ValueError, r"column\(s\) \['result'\] not found"),
    (lambda t: numeric_features(t, window=(-5, 1)), ValueError, r"window must end at or before the index.*end 1"),
    (lambda t: numeric_features(t, window=(-1, -1)), ValueError, "start < end"),
    (lambda t: numeric_features(t, window=5), TypeError, "expected window=\\(start, end\\)"),
    (lambda t: numeric_features(t, summaries=("last", "median")), ValueError, "expected summaries among"),
    (lambda t: numeric_features(t, summaries=("last", "last")), ValueError, "given twice"),
    (lambda t: numeric_features(t, index={1: 0.0, 2: 0.0}, subjects=[1, 2, 3]), ValueError,
     r"index has no index time for 1 subject\(s\): \['3'\]"),
    (lambda t: numeric_features(t, index=pd.Series([0.0, np.nan], index=[1, 2])), ValueError,
     r"index has no value for 1 subject\(s\): \['2'\]"),
    (lambda t: numeric_features(t, index=pd.Series([0.0, 1.0], index=[1, 1])), ValueError,
     "index lists subjects more than once"),
    (lambda t: numeric_features(t, subjects=["1", "2"]), ValueError,
     "no subject of the table is among the requested subjects.*same type"),
    (lambda t: numeric_features(t.assign(days=t["days"].astype(str))), TypeError,
     "expected numbers in time column 'days'"),
    (lambda t: numeric_features(t.assign(days=t["days"].where(t.index != 4))), ValueError,
     r"1 row\(s\) have no time in column 'days' \(first: row 4\)"),
    (lambda t: event_features(t, variable="test", window=(0, 1)), ValueError, "end <= 0"),
    (lambda t: outcome_within(t, horizon=0, variable="test", which="hdl"), ValueError, "positive finite horizon"),
    (lambda t: outcome_within(t, horizon=5, variable="test", which="ldl"), ValueError,
     r"which=\['ldl'\] not among the events of column 'test'"),
    (lambda t: outcome_within(t, horizon=5, which="hdl"), ValueError, "give both variable="),
    (lambda t: outcome_within(t, horizon=5, follow_up={1: 9.0}, subjects=[1, 2]), ValueError,
     r"follow_up has no end of follow-up for 1 subject\(s\): \['2'\]"),
    (lambda t: numeric_features([1, 2]), TypeError, "expected a pandas DataFrame, got list"),
])
def test_errors_say_what_is_wrong(labs, call, error, message):
    with pytest.raises(error, match=message):
        call(labs)


def test_a_non_numeric_value_names_its_variable_and_row(labs):
    bad = labs.astype({"value": object})
    bad.loc[6, "value"] = "<5"
    with pytest.raises(ValueError, match=r"variable 'chol' has a non-numeric or infinite value '<5' in column "
                                         r"'value' \(row 6; 1 such rows\)"):
        numeric_features(bad)
    # numbers written as text are numbers
    text = labs.astype({"value": str})
    assert_frame_equal(numeric_features(text), numeric_features(labs))
    with pytest.raises(ValueError, match="variable 'hdl' has a non-numeric or infinite value inf"):
        numeric_features(labs.assign(value=labs["value"].replace(7.0, np.inf)))


def test_missing_values_are_ignored_not_counted(labs):
    out = numeric_features(labs.assign(value=labs["value"].where(labs.index != 8)))  # subject 1's (-1, 6.0)
    assert out.loc[1, "hdl_count"] == 4 and out.loc[1, "hdl_last"] == 2.0


# ------------------------------------------------------------------ CLI
def test_cli_events_writes_the_wide_table(labs, dx, tmp_path, capsys):
    src = tmp_path / "labs.csv"
    labs.rename(columns={"id": "pid", "days": "t"}).to_csv(src, index=False)
    out = tmp_path / "out"
    code = cli.main(["events", str(src), "--kind", "numeric", "--window", "none", "-1", "--summaries",
                     "last,count", "--subject", "pid", "--time", "t", "--out", str(out), "-q"])
    assert code == 0
    got = pd.read_csv(out / "features.csv", index_col="pid")
    expected = numeric_features(labs, window=(-np.inf, -1), summaries=("last", "count"))
    assert_frame_equal(got, expected.rename_axis("pid"), check_dtype=False)
    assert (out / "run.json").is_file()
    dx.to_csv(tmp_path / "dx.csv", index=False)
    assert cli.main(["events", str(tmp_path / "dx.csv"), "--kind", "events", "--out", str(tmp_path / "dx")]) == 0
    assert pd.read_csv(tmp_path / "dx" / "features.csv", index_col="id").loc[1].tolist() == [1, 2, 1, 1]
    capsys.readouterr()
    code = cli.main(["events", str(src), "--kind", "numeric", "--subject", "pid", "--time", "t",
                     "--window", "-5", "2", "--out", str(tmp_path / "bad")])
    assert code == 1 and "window must end at or before the index" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
