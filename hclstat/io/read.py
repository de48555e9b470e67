"""Reading one modality table: file formats, delimiter and encoding, and the checks on a source.

A CSV's delimiter is sniffed from its first lines when it is not given (the
suffix's delimiter is kept whenever it splits those lines consistently), so a
semicolon-delimited ``.csv`` reads as it is meant to; the header is read as
written, so duplicated column names are an error instead of pandas' silent
``a``, ``a.1``; a byte the encoding cannot decode is reported with its offset.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import lzma
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..preprocess import DataWarning, _names

__all__ = ["read_table", "DELIMITERS"]

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".txt")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".tab")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")

#: delimiters tried, in this order, when a CSV's own does not split its first lines consistently
DELIMITERS = (",", ";", "\t", "|")
#: bytes of a text table read to sniff its delimiter and header
_HEAD_BYTES = 1 << 16


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


_SEP_NAMES = {"\\t": "\t", "tab": "\t", "TAB": "\t", "space": " "}


def _check_sep(sep):
    """``sep`` as one character (``"\\t"`` and ``"tab"`` mean a tab), or a ValueError."""
    if sep is None:
        return None
    sep = _SEP_NAMES.get(sep, sep) if isinstance(sep, str) else sep
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n":
        raise ValueError(f"sep: expected one delimiter character such as ',', ';' or '\\t', got {sep!r}")
    return sep


def _check_encoding(encoding):
    """The codec name of ``encoding`` (default UTF-8), or a ValueError."""
    if encoding is None:
        return "utf-8"
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(f"encoding: unknown encoding {encoding!r}; expected e.g. 'utf-8' or 'latin-1'") from None


@contextlib.contextmanager
def _open_bytes(path):
    """The decompressed bytes of a text table (the compressions pandas reads by suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as fh:
            yield fh
        return
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    with opener(path, "rb") as fh:
        yield fh


def _head_lines(path, encoding):
    """The first complete lines of a text table (undecodable bytes replaced: only for sniffing)."""
    with _open_bytes(path) as fh:
        block = fh.read(_HEAD_BYTES + 1)
    text = block[:_HEAD_BYTES].decode(encoding, errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[:-1] if len(block) > _HEAD_BYTES and len(lines) > 1 else lines


def _splits(lines, sep):
    """Number of fields of every line split on ``sep`` when they all agree (and exceed one), else 0."""
    widths = {len(row) for row in csv.reader(lines, delimiter=sep)}
    width = widths.pop() if len(widths) == 1 else 0
    return width if width > 1 else 0


def _other_delimiter(lines, sep):
    """The first of :data:`DELIMITERS` other than ``sep`` that splits ``lines`` consistently, or None."""
    return next((d for d in DELIMITERS if d != sep and lines and _splits(lines, d)), None)


def _delimiter_hint(lines, sep):
    """A sentence suggesting another delimiter when ``sep`` does not split the first lines but one does."""
    other = None if lines and _splits(lines, sep) else _other_delimiter(lines, sep)
    if other is None:
        return ""
    return (f"; its first lines look delimited by {other!r}, not {sep!r}: pass sep={other!r} "
            f"(CLI: --sep {_shell(other)})")


def _shell(sep):
    return "'\\t'" if sep == "\t" else f"'{sep}'"


def _resolve_sep(path, kind, sep, lines, label):
    """The delimiter of a text table: ``sep`` if given, else the suffix's unless another one splits the
    first lines consistently and it does not (a DataWarning says so)."""
    if sep is not None:
        return sep
    default = "\t" if kind == "tsv" else ","
    if not lines or _splits(lines, default):
        return default
    other = _other_delimiter(lines, default)
    if other is None:
        return default
    warnings.warn(
        f"{label}{path}: its first lines split into {_splits(lines, other)} columns on {other!r} but not on "
        f"{default!r}; reading it with sep={other!r} (pass sep={other!r}, CLI: --sep {_shell(other)}, to say so)",
        DataWarning,
        stacklevel=4,  # the caller of read_table
    )
    return other


def _undecodable(path, encoding):
    """``(byte offset, line, byte)`` of the first byte ``encoding`` cannot decode, or None."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, newlines = 0, 0
    with _open_bytes(path) as fh:
        while True:
            chunk = fh.read(1 << 20)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                where = offset - pending + exc.start
                return where, newlines + exc.object.count(b"\n", 0, exc.start) + 1, exc.object[exc.start]
            if not chunk:
                return None
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def _decode_error(path, encoding, label, exc):
    where = _undecodable(path, encoding)
    if where is None:  # pragma: no cover - pandas failed where a plain decode does not
        what = _first_line(exc)
    else:
        offset, line, byte = where
        what = f"byte 0x{byte:02x} at byte offset {offset} (line {line}) is not valid {encoding}"
    return ValueError(f"{label}cannot decode {path} as {encoding}: {what}; pass the file's encoding, e.g. "
                      "encoding='latin-1' (CLI: --encoding latin-1)")


def _header_names(lines, sep):
    """The column names of the header line as written (pandas renames duplicates ``a``, ``a.1``)."""
    return next(csv.reader(lines[:1], delimiter=sep), []) if lines else []


def _check_unique_names(names, source, label, *, what="column names", where="in the header"):
    """Duplicated names are an error naming each with its (0-based) positions."""
    names = [str(c) for c in names]
    seen = {}
    for j, c in enumerate(names):
        seen.setdefault(c, []).append(j)
    dup = {c: js for c, js in seen.items() if len(js) > 1}
    if dup:
        shown = "; ".join(f"{c!r} at positions {', '.join(map(str, js))}" for c, js in list(dup.items())[:5])
        more = f" (and {len(dup) - 5} more)" if len(dup) > 5 else ""
        raise ValueError(f"{label}duplicated {what} in {source}: {shown}{more} (0-based, {where}); "
                         "rename them so each column has its own name")


def _cannot_read(path, kind, label, exc, hint=""):
    if isinstance(exc, pd.errors.EmptyDataError):
        return ValueError(f"{label}{path} is empty")
    return ValueError(f"{label}cannot read {path} as {kind.upper()}: {_first_line(exc)}{hint}")


#: what reading a file may raise that says what is wrong with it (pyarrow's errors subclass ValueError/OSError)
_READ_ERRORS = (ValueError, OSError, UnicodeDecodeError, ImportError, zipfile.BadZipFile, lzma.LZMAError, EOFError)


def _read_text(path, kind, *, id_column, sep, encoding, label):
    """A CSV/TSV as read by pandas, after sniffing its delimiter and checking its header."""
    try:
        lines = _head_lines(path, encoding)
    except _READ_ERRORS as exc:
        raise _cannot_read(path, kind, label, exc) from None
    sep = _resolve_sep(path, kind, sep, lines, label)
    dtype = {id_column: str} if id_column else None
    try:
        table = pd.read_csv(path, sep=sep, dtype=dtype, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, label, exc) from None
    except _READ_ERRORS as exc:  # ParserError and EmptyDataError are ValueErrors
        raise _cannot_read(path, kind, label, exc, _delimiter_hint(lines, sep)) from None
    header = _header_names(lines, sep)
    if len(header) == table.shape[1]:
        _check_unique_names(header, path, label)
    if id_column is not None and id_column not in table.columns:
        raise ValueError(f"{label}ID column {id_column!r} not found in {path}; its columns are "
                         f"{_show_ids(table.columns, 8)}{_delimiter_hint(lines, sep)}")
    return table


def read_table(path, *, id_column=None, name=None, sep=None, encoding=None):
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
    sep : str, optional
        Delimiter of a CSV/TSV (``"\\t"`` or ``"tab"`` for a tab). Default:
        the suffix's (``,`` or tab) when it splits the first lines into the
        same number of columns, else the first of :data:`DELIMITERS` that
        does, with a :class:`~hclstat.preprocess.DataWarning`. Ignored for
        Parquet.
    encoding : str, optional
        Text encoding of a CSV/TSV (default UTF-8), e.g. ``"latin-1"``; a
        byte it cannot decode is an error giving its offset. Ignored for Parquet.

    Returns
    -------
    pandas.DataFrame
        The data columns, indexed by ID (or by row position without ``id_column``).
    """
    path = Path(path)
    label = f"modality {name!r}: " if name else ""
    sep, encoding = _check_sep(sep), _check_encoding(encoding)
    kind = _check_source(path, label)
    if kind == "parquet":
        try:
            table = pd.read_parquet(path)
        except _READ_ERRORS as exc:
            raise _cannot_read(path, kind, label, exc) from None
    else:
        table = _read_text(path, kind, id_column=id_column, sep=sep, encoding=encoding, label=label)
    _check_unique_names(table.columns, path, label)
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
