"""Reading one modality table: file formats and the checks on a source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..preprocess import _names

__all__ = ["read_table"]

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".txt")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".tab")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def _format_of(path):
    name = path.name.lower()
    for kind, suffixes in (("csv", CSV_SUFFIXES), ("tsv", TSV_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _show_ids(ids, limit=5):
    return _names(ids, limit)


def _id_index(ids, missing, *, label, path, id_column):
    """The IDs of one table as an index, or an error naming the rows without one or the duplicates."""
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(f"{label}{path} has {rows.size} row(s) without an ID (rows {_show_ids(rows)})")
    index = pd.Index(ids, name=id_column)
    dup = index[index.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{label}duplicated IDs in column {id_column!r} of {path}: {_show_ids(dup)}")
    return index



def _check_source(path, label):
    """The format of an existing table file, or a one-line error."""
    if not path.exists():
        raise FileNotFoundError(f"{label}file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{label}{path} is a directory, expected a CSV or Parquet file")
    kind = _format_of(path)
    if kind is None:
        raise ValueError(
            f"{label}unrecognised file format {''.join(path.suffixes) or '(no suffix)'!r} of {path}; "
            "expected .csv, .tsv or .parquet"
        )
    return kind


def read_table(path, *, id_column=None, name=None):
    """Read one modality table.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (optionally compressed), ``.tsv`` or ``.parquet``.
    id_column : str, optional
        Column holding the sample IDs. It becomes the index (IDs are read as
        strings, so ``007`` stays ``007``); missing or duplicated IDs are errors.
    name : str, optional
        Modality name used in messages.

    Returns
    -------
    pandas.DataFrame
        The data columns, indexed by ID (or by row position without ``id_column``).
    """
    path = Path(path)
    label = f"modality {name!r}: " if name else ""
    kind = _check_source(path, label)
    try:
        if kind == "parquet":
            table = pd.read_parquet(path)
        else:
            dtype = {id_column: str} if id_column else None
            table = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=dtype)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{label}{path} is empty") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, ImportError) as exc:
        # pyarrow's ArrowInvalid and friends subclass ValueError/OSError
        raise ValueError(f"{label}cannot read {path} as {kind.upper()}: {_first_line(exc)}") from None
    table.columns = [str(c) for c in table.columns]
    if table.shape[0] == 0:
        raise ValueError(f"{label}{path} has no rows")
    if id_column is not None:
        if id_column not in table.columns:
            raise ValueError(
                f"{label}ID column {id_column!r} not found in {path}; its columns are "
                f"{_show_ids(table.columns, 8)}"
            )
        ids = table.pop(id_column)
        table.index = _id_index(ids.astype(str).astype(object), ids.isna().to_numpy(),
                                label=label, path=path, id_column=id_column)
    if table.shape[1] == 0:
        raise ValueError(f"{label}{path} has no data columns" + (f" besides {id_column!r}" if id_column else ""))
    return table
