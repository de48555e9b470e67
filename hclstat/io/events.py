"""Long-format event tables to one wide table per modality, relative to an index time per subject.

Clinical data arrive as long tables, one row per (subject, time, variable[,
value]). A prediction made at each subject's *index time* may use only what was
recorded before it, and its outcome only what happened after it:

* :func:`numeric_features` summarises numeric variables (labs, vitals) over a
  window before the index: last, mean, min, max, count, slope;
* :func:`event_features` turns events (diagnoses) into ever-before-index (0/1)
  and counts;
* :func:`outcome_within` (event within a horizon, NaN when censored) and
  :func:`time_to_event` (time and event indicator) use only rows strictly after
  the index.

Times are numbers on one clock (e.g. days); ``index`` gives each subject's index
time on that clock (``None``: 0 for everyone, for tables whose times are already
relative to the index, as in :func:`hclstat.datasets.load_nafld`). A row at the
index time itself is in neither the features (windows end before the index) nor
the outcomes (strictly after). Absent values stay absent: a summary without data
is NaN (counts are 0); nothing is imputed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ..preprocess import _names

__all__ = ["NUMERIC_SUMMARIES", "EVENT_SUMMARIES", "numeric_features", "event_features",
           "outcome_within", "time_to_event"]

#: the summaries :func:`numeric_features` computes
NUMERIC_SUMMARIES = ("last", "mean", "min", "max", "count", "slope")
#: the summaries :func:`event_features` computes
EVENT_SUMMARIES = ("ever", "count")

# internal column names (the user's may be anything)
_S, _V, _T, _X, _P = "_subject", "_variable", "_time", "_value", "_row"


# ------------------------------------------------------------------ checks
def _require_columns(table, columns, what):
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not found in the table (its columns are "
                         f"{_names(list(table.columns), 12)}); name them with subject=, time=, variable=, value=")


def _no_missing(table, column, what, role):
    missing = table[column].isna().to_numpy()
    if missing.any():
        raise ValueError(f"{what}: {missing.sum()} row(s) have no {role} in column {column!r} "
                         f"(first: row {table.index[missing.argmax()]!r})")


def _numeric(values, what, name):
    """``values`` as float64, or a TypeError naming ``name`` (numbers only, no booleans)."""
    if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
        raise TypeError(f"{what}: expected numbers in {name}, got dtype {values.dtype}"
                        + ("; convert dates to numbers (e.g. days since an origin)"
                           if ptypes.is_datetime64_any_dtype(values) else ""))
    return values.astype(np.float64)


def _values(table, value, variable, what):
    """The value column as float64; a non-numeric or infinite entry is an error naming its variable and row."""
    x = table[value]
    numbers = x.astype(np.float64) if ptypes.is_bool_dtype(x) else pd.to_numeric(x, errors="coerce")
    bad = (numbers.isna() & x.notna()).to_numpy() | np.isinf(numbers.to_numpy(dtype=np.float64))
    if bad.any():
        i = int(bad.argmax())
        shown = x.iloc[i].item() if isinstance(x.iloc[i], np.generic) else x.iloc[i]
        raise ValueError(f"{what}: variable {table[variable].iloc[i]!r} has a non-numeric or infinite value "
                         f"{shown!r} in column {value!r} (row {table.index[i]!r}; {bad.sum()} such rows)")
    return numbers.to_numpy(dtype=np.float64)


def _per_subject(series, name, what):
    """A Series subject -> number (a mapping is accepted), checked: unique subjects, numbers, no NaN."""
    series = series if isinstance(series, pd.Series) else pd.Series(series, dtype=None)
    dup = series.index[series.index.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{what}: {name} lists subjects more than once: {_names(dup)}")
    series = _numeric(series, what, f"{name}")
    missing = series.index[series.isna().to_numpy()]
    if len(missing):
        raise ValueError(f"{what}: {name} has no value for {len(missing)} subject(s): {_names(missing)}")
    return series


def _window(window, what):
    try:
        start, end = (float(w) for w in window)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected window=(start, end), two numbers, got {window!r}") from None
    if not end <= 0:
        raise ValueError(f"{what}: the window must end at or before the index (end <= 0), got end {end:g}; "
                         "features may use only what was recorded before the index time")
    if not start < end:
        raise ValueError(f"{what}: expected window start < end, got ({start:g}, {end:g})")
    return start, end


def _summaries(summaries, allowed, what):
    summaries = (summaries,) if isinstance(summaries, str) else tuple(summaries)
    unknown = [s for s in summaries if s not in allowed]
    if unknown or not summaries:
        raise ValueError(f"{what}: expected summaries among {list(allowed)}, got {list(summaries)}")
    if len(set(summaries)) < len(summaries):
        raise ValueError(f"{what}: a summary is given twice in {list(summaries)}")
    return summaries


# -------------------------------------------------------- subjects and times
def _row_set(table_subjects, index, subjects, fallback, what):
    """The output rows: ``subjects``, else the subjects of ``index``, of ``fallback``, of the table."""
    if subjects is not None:
        rows = pd.Index(np.asarray(subjects), name=None)
        dup = rows[rows.duplicated()].unique()
        if len(dup):
            raise ValueError(f"{what}: subjects lists subjects more than once: {_names(dup)}")
        if index is not None:
            absent = rows.difference(index.index)
            if len(absent):
                raise ValueError(f"{what}: index has no index time for {len(absent)} subject(s): {_names(absent)}")
    elif index is not None:
        rows = pd.Index(index.index)
    elif fallback is not None:
        rows = pd.Index(fallback.index)
    else:
        rows = pd.Index(pd.unique(table_subjects)).sort_values()
    if len(table_subjects) and len(rows) and not table_subjects.isin(rows).any():
        raise ValueError(f"{what}: no subject of the table is among the requested subjects (table: "
                         f"{_names(pd.unique(table_subjects)[:3])} ({table_subjects.dtype}); requested: "
                         f"{_names(rows[:3])} ({rows.dtype})); check that the IDs have the same type")
    return rows


def _long(table, *, subject, time, variable, value, index, subjects, what, fallback=None):
    """(rows, long): the row set and the table's rows of those subjects with times relative to the index."""
    _require_columns(table, [c for c in (subject, time, variable, value) if c is not None], what)
    _no_missing(table, subject, what, "subject")
    _no_missing(table, time, what, "time")
    t = _numeric(table[time], what, f"time column {time!r}").to_numpy()
    if index is not None:
        index = _per_subject(index, "index", what)
    rows = _row_set(table[subject], index, subjects, fallback, what)
    keep = table[subject].isin(rows).to_numpy()
    origin = 0.0 if index is None else table[subject].map(index).to_numpy(dtype=np.float64)
    long = pd.DataFrame({_S: table[subject].to_numpy(), _T: t - origin, _P: np.arange(len(table))})
    if variable is not None:
        _no_missing(table, variable, what, "variable")
        long[_V] = table[variable].astype(str).to_numpy()
    if value is not None:
        long[_X] = _values(table, value, variable, what)
    return rows.rename(subject), index, long[keep]


def _windowed(table, summaries, allowed, window, what, **columns):
    """``(summaries, rows, variables, long)``: the checked summaries, the row set, every variable
    of the table (sorted) and the table's rows inside the window before each index."""
    summaries = _summaries(summaries, allowed, what)
    start, end = _window(window, what)
    rows, _, long = _long(table, what=what, **columns)
    variables = sorted(pd.unique(long[_V]))
    return summaries, rows, variables, long[(long[_T] >= start) & (long[_T] < end)]


def _wide(stats, rows, variables, summaries, counts):
    """Per-(subject, variable) summaries -> one row per subject, columns ``{variable}_{summary}``."""
    columns = [f"{v}_{s}" for v in variables for s in summaries]
    if stats.empty:
        wide = pd.DataFrame(np.nan, index=rows, columns=columns)
    else:
        wide = stats[list(summaries)].unstack(_V)
        wide.columns = [f"{v}_{s}" for s, v in wide.columns]
        wide = wide.reindex(index=rows, columns=columns)
    wide.index.name = rows.name
    for s in counts:
        cols = [f"{v}_{s}" for v in variables]
        wide[cols] = wide[cols].fillna(0).astype(np.int64)
    return wide


# ------------------------------------------------------------------ features
def numeric_features(table, *, subject="id", time="days", variable="test", value="value", index=None,
                     window=(-np.inf, 0), summaries=NUMERIC_SUMMARIES, subjects=None):
    r"""Summaries of numeric variables over a window before each subject's index time.

    Parameters
    ----------
    table : DataFrame
        Long format: one row per measurement, columns ``subject``, ``time``,
        ``variable``, ``value``. Duplicate (subject, time, variable) rows are
        allowed (each counts); rows with a missing value are ignored.
    subject, time, variable, value : str
        Column names (defaults: R's NAFLD ``nafld2``).
    index : Series or mapping subject -> number, optional
        Each subject's index time on the clock of ``time``. None: 0 for every
        subject (times already relative to the index).
    window : (start, end)
        Rows with ``index + start <= time < index + end`` are used (start
        inclusive, end exclusive); ``end <= 0``, so nothing at or after the
        index reaches a feature. Default: everything before the index.
    summaries : sequence of str
        Among ``last`` (the value at the latest time in the window; among rows
        tied at that time the last in table order), ``mean``, ``min``,
        ``max``, ``count`` (rows in the window), ``slope`` (least-squares slope
        of value on time, per unit of time,
        :math:`\sum (t-\bar t)(x-\bar x) / \sum (t-\bar t)^2`; NaN with fewer
        than two distinct times).
    subjects : sequence, optional
        The rows of the result, in this order (subjects without any row get
        one). Default: the subjects of ``index`` if given, else those of the
        table (sorted).

    Returns
    -------
    DataFrame of shape (n_subjects, n_variables * n_summaries)
        Indexed by subject, columns ``f"{variable}_{summary}"`` for every
        variable of the table (sorted; a variable without rows in the window
        gives NaN columns). ``count`` is 0 without data; every other summary
        is NaN (no imputation).
    """
    what = "numeric_features"
    summaries, rows, variables, long = _windowed(table, summaries, NUMERIC_SUMMARIES, window, what, subject=subject,
                                                 time=time, variable=variable, value=value, index=index,
                                                 subjects=subjects)
    long = long[long[_X].notna()]
    # sorted by time within each (subject, variable), ties in table order: "last" is the final row
    long = long.sort_values([_S, _V, _T, _P])
    keys = [_S, _V]
    if "slope" in summaries:
        grouped = long.groupby(keys, sort=False)
        dt = long[_T] - grouped[_T].transform("mean")
        long = long.assign(_sxy=dt * (long[_X] - grouped[_X].transform("mean")), _sxx=dt * dt)
    grouped = long.groupby(keys, sort=False)
    agg = {"last": (_X, "last"), "mean": (_X, "mean"), "min": (_X, "min"), "max": (_X, "max"),
           "count": (_X, "size")}
    stats = grouped.agg(**{s: agg[s] for s in summaries if s != "slope"})
    if "slope" in summaries:
        sums = grouped[["_sxy", "_sxx"]].sum()
        distinct = grouped[_T].max() > grouped[_T].min()
        stats["slope"] = (sums["_sxy"] / sums["_sxx"]).where(distinct)
    return _wide(stats, rows, variables, summaries, counts=[s for s in summaries if s == "count"])


def event_features(table, *, subject="id", time="days", variable="event", index=None, window=(-np.inf, 0),
                   summaries=EVENT_SUMMARIES, subjects=None):
    """Events (diagnoses, procedures) over a window before each subject's index time.

    Parameters
    ----------
    table : DataFrame
        Long format: one row per event, columns ``subject``, ``time``,
        ``variable`` (defaults: R's NAFLD ``nafld3``).
    index, window, subjects
        As in :func:`numeric_features` (start inclusive, end exclusive,
        ``end <= 0``).
    summaries : sequence of str
        ``ever`` (1 if the event is recorded in the window, else 0) and
        ``count`` (rows in the window).

    Returns
    -------
    DataFrame of shape (n_subjects, n_events * n_summaries)
        Indexed by subject, integer columns ``f"{event}_ever"``,
        ``f"{event}_count"`` for every event of the table (sorted). A subject
        without a record has 0: ``ever`` means *recorded* before the index.
    """
    what = "event_features"
    summaries, rows, variables, long = _windowed(table, summaries, EVENT_SUMMARIES, window, what, subject=subject,
                                                 time=time, variable=variable, value=None, index=index,
                                                 subjects=subjects)
    count = long.groupby([_S, _V], sort=False).size()
    stats = pd.DataFrame({"ever": (count > 0).astype(np.int64), "count": count})
    return _wide(stats, rows, variables, summaries, counts=summaries)


# ------------------------------------------------------------------ outcomes
def _first_after(table, *, subject, time, variable, which, index, follow_up, subjects, what):
    """(rows, first event time after the index (NaN: none), end of follow-up after the index)."""
    if (variable is None) != (which is None):
        raise ValueError(f"{what}: give both variable= (the column naming the event) and which= (the event), "
                         "or neither (every row of the table is the event)")
    if follow_up is not None:
        follow_up = _per_subject(follow_up, "follow_up", what)
    rows, index, long = _long(table, subject=subject, time=time, variable=variable, value=None, index=index,
                              subjects=subjects, what=what, fallback=follow_up)
    if variable is not None:
        which = [which] if isinstance(which, str) else [str(w) for w in which]
        known = set(table[variable].astype(str))
        unknown = [w for w in which if w not in known]
        if unknown:
            raise ValueError(f"{what}: which={unknown} not among the events of column {variable!r} "
                             f"({_names(sorted(known), 12)})")
        long = long[long[_V].isin(which)]
    if follow_up is None:
        end = pd.Series(np.inf, index=rows)
    else:
        absent = rows.difference(follow_up.index)
        if len(absent):
            raise ValueError(f"{what}: follow_up has no end of follow-up for {len(absent)} subject(s): "
                             f"{_names(absent)}")
        end = follow_up.reindex(rows) - (0.0 if index is None else index.reindex(rows))
    # only rows strictly after the index and within follow-up (the observed window) are outcomes
    long = long[(long[_T] > 0) & (long[_T] <= long[_S].map(end).to_numpy(dtype=np.float64))]
    first = long.groupby(_S)[_T].min().reindex(rows)
    return rows, first, end


def outcome_within(table, *, horizon, subject="id", time="days", variable=None, which=None, index=None,
                   follow_up=None, subjects=None):
    """Whether the event happens within ``horizon`` after each subject's index time.

    The outcome is 1 when the event has a row at a time in
    ``(index, index + horizon]``, 0 when it has none and the subject was
    followed through the horizon, and NaN (censored: unknown) when it has none
    and follow-up ends before ``index + horizon``. Rows at or before the index
    and after the end of follow-up are ignored.

    Parameters
    ----------
    table : DataFrame
        Long format: the event rows (``subject``, ``time``[, ``variable``]).
    horizon : float
        Positive, in units of ``time``.
    variable, which : str, optional
        The column naming events and the event(s) that count (a name or a list
        of names). Neither: every row is the event (e.g. a table of deaths).
    index : Series or mapping subject -> number, optional
        Index times (None: 0 for every subject).
    follow_up : Series or mapping subject -> number, optional
        Each subject's end of follow-up on the clock of ``time`` (with
        ``index=None``: the follow-up time after the index, e.g. NAFLD's
        ``futime``). None: every subject is followed through the horizon.
    subjects : sequence, optional
        The rows of the result. Default: the subjects of ``index``, else of
        ``follow_up``, else of the table.

    Returns
    -------
    Series of float (1.0, 0.0 or NaN), indexed by subject, named ``"outcome"``

    Examples
    --------
    Five-year mortality in NAFLD (deaths at ``futime`` where ``status`` is 1)::

        s = load_nafld().subjects
        deaths = s.loc[s["status"] == 1, ["id", "futime"]]
        y = outcome_within(deaths, horizon=5 * 365.25, time="futime",
                           follow_up=s.set_index("id")["futime"])
    """
    what = "outcome_within"
    if not (isinstance(horizon, (int, float, np.number)) and 0 < horizon < np.inf):
        raise ValueError(f"{what}: expected a positive finite horizon, got {horizon!r}")
    rows, first, end = _first_after(table, subject=subject, time=time, variable=variable, which=which,
                                    index=index, follow_up=follow_up, subjects=subjects, what=what)
    event = (first <= horizon).to_numpy()
    censored = ~event & (end < horizon).to_numpy()
    out = np.where(event, 1.0, np.where(censored, np.nan, 0.0))
    return pd.Series(out, index=rows, name="outcome")


def time_to_event(table, *, follow_up, subject="id", time="days", variable=None, which=None, index=None,
                  subjects=None):
    """Time from each subject's index to the first event after it, or to the end of follow-up.

    Parameters
    ----------
    table, subject, time, variable, which, index, subjects
        As in :func:`outcome_within`.
    follow_up : Series or mapping subject -> number
        Each subject's end of follow-up on the clock of ``time`` (required: it
        censors the subjects without the event). Rows after it are ignored.

    Returns
    -------
    DataFrame indexed by subject, columns ``time`` (float: after the index, to
    the first event strictly after it or to the end of follow-up) and
    ``event`` (int: 1 if the event was observed, 0 if censored).
    """
    what = "time_to_event"
    if follow_up is None:
        raise ValueError(f"{what}: follow_up is required (the end of follow-up censors subjects without the event)")
    rows, first, end = _first_after(table, subject=subject, time=time, variable=variable, which=which,
                                    index=index, follow_up=follow_up, subjects=subjects, what=what)
    never = rows[(end <= 0).to_numpy() & first.isna().to_numpy()]
    if len(never):
        raise ValueError(f"{what}: follow-up ends at or before the index time for {len(never)} subject(s) "
                         f"({_names(never)}); they are never at risk: leave them out of subjects")
    observed = first.notna()
    return pd.DataFrame({"time": first.where(observed, end).to_numpy(dtype=np.float64),
                         "event": observed.to_numpy().astype(np.int64)}, index=rows)
