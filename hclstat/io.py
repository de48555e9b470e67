"""Reading modality tables, joining them on an ID, and writing results.

Input: one table per modality (CSV, TSV or Parquet), joined on an ID column or
by row order. With an ID column the *intersection* of IDs is used by default
(``join="inner"``) and the IDs each modality loses are reported; ``join="outer"``
keeps the union and a modality's rows that are absent become all-NaN
(block-missing), which the pairwise-complete moments handle without imputing.

Out of core: :func:`load_views_chunked` reads the tables with
``dask.dataframe`` in row chunks, learns the preprocessing in one pass (means
and scales merged across chunks) and returns the preprocessed modalities as
dask arrays, from which the moments are computed chunk by chunk
(:func:`hclstat.moments.compute_moments`); :func:`write_scores_chunked` writes
the component scores chunk by chunk.

Output: writers for a fitted representation (hierarchy JSON, loadings per
structure and modality, scores per structure, noise variances) and
:func:`atomic_directory`, which builds a result in a temporary directory beside
its destination and moves it into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .hierarchy import Hierarchy
from .preprocess import DataWarning, ModalityPreprocessor, Preprocessing, _names

__all__ = [
    "MIN_ROWS",
    "JoinReport",
    "MultiViewData",
    "ChunkedViewData",
    "read_table",
    "load_views_chunked",
    "write_scores_chunked",
    "join_tables",
    "load_views",
    "missingness_table",
    "read_hierarchy",
    "structure_label",
    "write_representation",
    "atomic_directory",
    "is_hclstat_output",
]

#: fewest joined rows accepted by :func:`load_views` (second moments of fewer rows are noise)
MIN_ROWS = 10
#: file written into every output directory; marks it as replaceable by a later run
RUN_FILE = "run.json"

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
    ids = [str(i) for i in ids]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{ids[:limit]}{more}"


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
        missing = ids.isna().to_numpy()
        if missing.any():
            rows = np.flatnonzero(missing)
            raise ValueError(f"{label}{path} has {rows.size} row(s) without an ID (rows {_show_ids(rows)})")
        ids = pd.Index(ids.astype(str).astype(object), name=id_column)
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            raise ValueError(f"{label}duplicated IDs in column {id_column!r} of {path}: {_show_ids(dup)}")
        table.index = ids
    if table.shape[1] == 0:
        raise ValueError(f"{label}{path} has no data columns" + (f" besides {id_column!r}" if id_column else ""))
    return table


@dataclass
class JoinReport:
    """How the modality tables were joined.

    Attributes
    ----------
    id_column : str or None
        ``None`` when rows were joined by position.
    join : {"inner", "outer"}
    n_rows : int
        Rows of the joined data.
    rows_per_modality : dict of str to int
        Rows of each table before the join.
    dropped_ids : dict of str to list of str
        Inner join: each modality's IDs that are not in every other table.
    missing_ids : dict of str to list of str
        Outer join: IDs of the joined data that a modality does not have
        (its rows there are all-NaN).
    """

    id_column: str | None
    join: str
    n_rows: int
    rows_per_modality: dict
    dropped_ids: dict = field(default_factory=dict)
    missing_ids: dict = field(default_factory=dict)

    def to_dict(self):
        return {
            "id_column": self.id_column,
            "join": self.join,
            "n_rows": self.n_rows,
            "rows_per_modality": dict(self.rows_per_modality),
            "dropped_ids": {m: list(v) for m, v in self.dropped_ids.items()},
            "missing_ids": {m: list(v) for m, v in self.missing_ids.items()},
        }

    def lines(self):
        """Human-readable lines (one per modality that lost or lacks rows)."""
        how = f"on ID column {self.id_column!r} ({self.join} join)" if self.id_column else "by row order"
        out = [f"joined {len(self.rows_per_modality)} modalities {how}: {self.n_rows} rows"]
        for m, ids in self.dropped_ids.items():
            if ids:
                out.append(f"modality {m!r}: dropped {len(ids)} ID(s) not present in every table: {_show_ids(ids)}")
        for m, ids in self.missing_ids.items():
            if ids:
                out.append(f"modality {m!r}: missing for {len(ids)} ID(s) (rows left all-NaN): {_show_ids(ids)}")
        return out


def join_tables(tables, *, id_column=None, join="inner"):
    """Align modality tables on their index (IDs) or by row order.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        As returned by :func:`read_table` (indexed by ID when ``id_column``).
    id_column : str, optional
        ``None`` joins by row order: every table must have the same number of rows.
    join : {"inner", "outer"}
        Keep the IDs present in every table, or in any table.

    Returns
    -------
    aligned : dict of str to pandas.DataFrame, all with the same index
    report : JoinReport
    """
    if join not in ("inner", "outer"):
        raise ValueError(f"join: expected 'inner' or 'outer', got {join!r}")
    if not tables:
        raise ValueError("tables: expected at least one modality")
    rows = {m: int(t.shape[0]) for m, t in tables.items()}
    if id_column is None:
        if len(set(rows.values())) > 1:
            raise ValueError(
                f"row counts differ across modalities {rows}; joining by row order needs equal counts "
                "(give the ID column, CLI: --id COLUMN)"
            )
        n = next(iter(rows.values()))
        index = pd.RangeIndex(n, name="row")
        aligned = {m: t.set_axis(index, axis=0) for m, t in tables.items()}
        return aligned, JoinReport(None, join, n, rows)
    indexes = {m: t.index for m, t in tables.items()}
    first = next(iter(indexes.values()))
    if join == "inner":
        common = set(first)
        for idx in indexes.values():
            common &= set(idx)
        if not common:
            examples = "; ".join(f"{m}: {_show_ids(idx, 3)}" for m, idx in indexes.items())
            raise ValueError(
                f"no ID in column {id_column!r} is common to all modalities ({examples}); "
                "check the ID column and its format"
            )
        keep = pd.Index([i for i in first if i in common], name=id_column)
        dropped = {m: [i for i in idx if i not in common] for m, idx in indexes.items()}
        missing = {}
    else:
        seen, order = set(), []
        for idx in indexes.values():
            for i in idx:
                if i not in seen:
                    seen.add(i)
                    order.append(i)
        keep = pd.Index(order, name=id_column)
        dropped = {}
        sets = {m: set(idx) for m, idx in indexes.items()}
        missing = {m: [i for i in keep if i not in sets[m]] for m in indexes}
    aligned = {m: t.reindex(keep) for m, t in tables.items()}
    return aligned, JoinReport(id_column, join, len(keep), rows, dropped, missing)


def missingness_table(views):
    """Missing entries per modality.

    Returns
    -------
    pandas.DataFrame indexed by modality with columns ``rows``, ``features``,
    ``missing_fraction`` (of entries), ``rows_all_missing`` (block-missing rows),
    ``rows_any_missing``, ``features_any_missing`` and ``min_observed`` (the
    fewest observed values of any feature).
    """
    out = []
    for m, t in views.items():
        x = np.asarray(t, dtype=np.float64)
        nan = np.isnan(x)
        out.append(
            {
                "modality": m,
                "rows": x.shape[0],
                "features": x.shape[1],
                "missing_fraction": float(nan.mean()) if nan.size else 0.0,
                "rows_all_missing": int(nan.all(axis=1).sum()),
                "rows_any_missing": int(nan.any(axis=1).sum()),
                "features_any_missing": int(nan.any(axis=0).sum()),
                "min_observed": int((~nan).sum(axis=0).min()) if x.shape[1] else 0,
            }
        )
    return pd.DataFrame(out).set_index("modality")


@dataclass
class MultiViewData:
    """Joined, preprocessed modalities ready for an estimator.

    Attributes
    ----------
    views : dict of str to pandas.DataFrame
        float64 tables with the same index (the IDs), NaN where missing.
    join : JoinReport
    preprocessors : dict of str to ModalityPreprocessor
        Fitted; apply them to new rows with ``transform``.
    missingness : pandas.DataFrame
        :func:`missingness_table` of ``views``.
    """

    views: dict
    join: JoinReport
    preprocessors: dict
    missingness: pd.DataFrame

    @property
    def ids(self):
        return next(iter(self.views.values())).index

    @property
    def id_name(self):
        return self.join.id_column or "row"

    @property
    def dims(self):
        return {m: int(t.shape[1]) for m, t in self.views.items()}

    def to_dict(self):
        """JSON-serialisable report of the join, the preprocessing and the missingness."""
        return {
            "join": self.join.to_dict(),
            "preprocessing": {m: p.report() for m, p in self.preprocessors.items()},
            "missingness": json.loads(self.missingness.to_json(orient="index")),
        }

    def report(self):
        """Readable text: join, preprocessing per modality, missingness table."""
        lines = ["Data", "-" * 60, *self.join.lines(), ""]
        for m, p in self.preprocessors.items():
            r = p.report()
            extra = ""
            if r["one_hot"]:
                extra += f"; one-hot {list(r['one_hot'])}"
            if r["dropped_constant"]:
                extra += f"; dropped constant {r['dropped_constant']}"
            lines.append(f"{m}: {r['columns_in']} -> {r['columns_out']} columns ({r['steps']}{extra})")
        lines += ["", "Missingness", "-" * 60, self.missingness.to_string(float_format=lambda v: f"{v:.3f}")]
        return "\n".join(lines)


def load_views(sources, *, id_column=None, join="inner", preprocessing=None, min_rows=MIN_ROWS, progress=None):
    """Read, join and preprocess one table per modality.

    Parameters
    ----------
    sources : dict of str to path or pandas.DataFrame
        Modality name -> file (CSV/TSV/Parquet) or an already loaded table
        (which must contain ``id_column`` when one is given).
    id_column : str, optional
        Join on this column; without it rows are joined by position.
    join : {"inner", "outer"}
        Intersection (default) or union of the IDs; see :func:`join_tables`.
    preprocessing : dict of str to Preprocessing or str, optional
        Per-modality steps; modalities not listed get the default (centre and scale).
    min_rows : int
        Fewest joined rows accepted.
    progress : callable, optional
        Called with a short message after each table is read (e.g. a progress bar update).

    Returns
    -------
    MultiViewData
    """
    if not isinstance(sources, Mapping) or not sources:
        raise ValueError("sources: expected a non-empty mapping modality name -> file")
    preprocessing = dict(preprocessing or {})
    unknown = sorted(set(preprocessing) - set(sources))
    if unknown:
        raise ValueError(f"preprocessing given for unknown modalities {unknown}; modalities are {list(sources)}")
    tables = {}
    for m, src in sources.items():
        if isinstance(src, pd.DataFrame):
            t = src.copy()
            t.columns = [str(c) for c in t.columns]
            if id_column is not None:
                if id_column not in t.columns:
                    raise ValueError(f"modality {m!r}: ID column {id_column!r} not found")
                t = t.set_index(t.pop(id_column).astype(str).astype(object).rename(id_column))
                dup = t.index[t.index.duplicated()].unique()
                if len(dup):
                    raise ValueError(f"modality {m!r}: duplicated IDs in column {id_column!r}: {_show_ids(dup)}")
            if t.shape[0] == 0 or t.shape[1] == 0:
                raise ValueError(f"modality {m!r}: the table is empty")
        else:
            t = read_table(src, id_column=id_column, name=m)
        tables[m] = t
        if progress is not None:
            progress(f"read {m}")
    aligned, report = join_tables(tables, id_column=id_column, join=join)
    if report.n_rows < min_rows:
        raise ValueError(
            f"only {report.n_rows} rows after joining the modalities (need at least {min_rows})"
        )
    views, preps = {}, {}
    for m, t in aligned.items():
        prep = ModalityPreprocessor(preprocessing.get(m, Preprocessing()), name=m)
        views[m] = prep.fit_transform(t)
        preps[m] = prep
    return MultiViewData(views, report, preps, missingness_table(views))


# ------------------------------------------------------------ out of core
@dataclass
class ChunkedViewData(MultiViewData):
    """:class:`MultiViewData` whose views are dask arrays read in row chunks.

    Attributes (besides those of :class:`MultiViewData`)
    ----------------------------------------------------
    views : dict of str to dask.array.Array of shape (n_samples, p_m)
        Preprocessed float64 modalities, NaN where missing, computed on demand.
    row_ids : pandas.Index
        Sample IDs (or row positions) of the rows, in order.
    feature_names : dict of str to list of str
        Column names after preprocessing.
    chunk_rows : int
        Requested rows per chunk.
    """

    row_ids: pd.Index = None
    feature_names: dict = field(default_factory=dict)
    chunk_rows: int = 0

    @property
    def ids(self):
        return self.row_ids

    @property
    def dims(self):
        return {m: int(a.shape[1]) for m, a in self.views.items()}

    def to_dict(self):
        out = super().to_dict()
        out["chunks"] = {"rows_requested": self.chunk_rows,
                         "rows_per_chunk": {m: [int(c) for c in a.chunks[0]] for m, a in self.views.items()}}
        return out


def _compressed(path):
    return path.name.lower().endswith((".gz", ".bz2", ".xz", ".zip"))


def _open_chunked(path, *, chunk_rows, id_column, name):
    """A lazy ``dask.dataframe`` of one table, partitioned into about ``chunk_rows`` rows."""
    import dask.dataframe as dd

    label = f"modality {name!r}: "
    kind = _check_source(path, label)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            if meta.num_rows == 0:
                raise ValueError(f"{label}{path} has no rows")
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            largest = max(groups)
            if largest > 2 * chunk_rows:
                warnings.warn(
                    f"{label}{path} has Parquet row groups of up to {largest} rows, which are read whole "
                    f"(more than the {chunk_rows} rows asked for); rewrite it with row_group_size={chunk_rows} "
                    "to bound the memory per chunk",
                    DataWarning,
                    stacklevel=3,
                )
            per_part = max(1, int(round(chunk_rows / max(np.median(groups), 1))))
            frame = dd.read_parquet(path, split_row_groups=per_part)
            columns = [str(c) for c in frame.columns]
        else:
            if _compressed(path):
                raise ValueError(
                    f"{label}{path} is compressed and cannot be split into row chunks; decompress it or "
                    "convert it to Parquet (or read it in memory, without --chunks)"
                )
            sep = "\t" if kind == "tsv" else ","
            head = pd.read_csv(path, sep=sep, nrows=1000, dtype={id_column: str} if id_column else None)
            with open(path, "rb") as fh:
                block = fh.read(1 << 20)
            bytes_per_row = len(block) / max(block.count(b"\n"), 1)
            # numeric columns as float64, so a chunk's missing values cannot change a column's type
            dtype = {c: "float64" for c in head.columns
                     if pd.api.types.is_numeric_dtype(head[c].dtype) and not pd.api.types.is_bool_dtype(head[c].dtype)}
            dtype.update({c: "object" for c in head.columns if head[c].dtype == object})
            if id_column:
                dtype[id_column] = "object"
            frame = dd.read_csv(path, sep=sep, blocksize=max(int(chunk_rows * bytes_per_row), 1 << 10),
                                dtype=dtype, sample=1 << 20)
            columns = [str(c) for c in head.columns]
    except pd.errors.EmptyDataError:
        raise ValueError(f"{label}{path} is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ImportError) as exc:
        raise ValueError(f"{label}cannot read {path} as {kind.upper()}: {_first_line(exc)}") from None
    if id_column is not None and id_column not in columns:
        raise ValueError(f"{label}ID column {id_column!r} not found in {path}; its columns are {_show_ids(columns, 8)}")
    if len([c for c in columns if c != id_column]) == 0:
        raise ValueError(f"{label}{path} has no data columns" + (f" besides {id_column!r}" if id_column else ""))
    return frame


def _summarise_partition(part, id_column, onehot, log1p):
    """One pass over one chunk: rows, IDs, and per column what the preprocessing needs.

    Numeric columns (after ``log1p``): observed count, mean, sum of squared
    deviations (merged across chunks with Chan's formula), min, max, and the
    first offending row (infinite, or negative under ``log1p``). Non-numeric
    columns: level counts (for one-hot encoding).
    """
    out = {"rows": len(part), "columns": {}}
    if id_column is not None:
        ids = part[id_column]
        out["ids"] = np.where(ids.isna().to_numpy(), None, ids.astype(str).to_numpy(dtype=object))
        part = part.drop(columns=[id_column])
    for c in part.columns:
        col = part[c]
        key = str(c)
        numeric = pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)
        if not numeric:
            obs = col.dropna().astype(str)
            out["columns"][key] = {"kind": "category", "count": int(obs.size),
                                   "levels": obs.value_counts().to_dict() if onehot else {}}
            continue
        x = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        rec = {"kind": "number", "inf_row": None, "negative": None}
        inf = np.isinf(x)
        if inf.any():
            rec["inf_row"] = int(np.flatnonzero(inf)[0])
            x = np.where(inf, np.nan, x)
        if log1p:
            neg = x < 0
            if neg.any():
                i = int(np.flatnonzero(neg)[0])
                rec["negative"] = (i, float(x[i]))
                x = np.where(neg, np.nan, x)
            x = np.log1p(x)
        obs = x[~np.isnan(x)]
        rec["count"] = int(obs.size)
        rec["mean"] = float(obs.mean()) if obs.size else 0.0
        rec["m2"] = float(np.sum((obs - rec["mean"]) ** 2)) if obs.size else 0.0
        rec["min"] = float(obs.min()) if obs.size else np.nan
        rec["max"] = float(obs.max()) if obs.size else np.nan
        out["columns"][key] = rec
    return out


def _merge_moments(a, b):
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations)."""
    n = a["count"] + b["count"]
    if b["count"] == 0:
        return dict(a)
    if a["count"] == 0:
        return dict(b)
    delta = b["mean"] - a["mean"]
    return {"count": n, "mean": a["mean"] + delta * b["count"] / n,
            "m2": a["m2"] + b["m2"] + delta * delta * a["count"] * b["count"] / n,
            "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"])}


def _row_label(ids, offset, i):
    return ids[int(offset) + i] if ids is not None else int(offset) + i


def _chunked_preprocessor(name, spec, summaries, ids, columns):
    """A fitted :class:`ModalityPreprocessor` from the per-chunk summaries (as ``fit_transform`` would learn it)."""
    prep = ModalityPreprocessor(spec, name=name)
    offsets = np.concatenate([[0], np.cumsum([s["rows"] for s in summaries])])
    kinds = {}
    for s in summaries:
        for c, rec in s["columns"].items():
            kinds.setdefault(c, set()).add(rec["kind"])
    mixed = [c for c, k in kinds.items() if len(k) > 1]
    if mixed:
        raise ValueError(f"modality {name!r}: columns {_names(mixed)} hold numbers in some row chunks and text in others")
    nonnum = [c for c in columns if kinds[c] == {"category"}]
    if nonnum and not prep.spec.onehot:
        raise ValueError(
            f"modality {name!r}: non-numeric columns {_names(nonnum)}; request one-hot "
            f"encoding for this modality (CLI: --prep {name}=onehot) or drop them"
        )
    # the first offending entry in row order, named as the in-memory path names it
    for k, s in enumerate(summaries):
        for c in columns:
            rec = s["columns"][c]
            if rec["kind"] == "number" and rec["inf_row"] is not None:
                raise ValueError(
                    f"modality {name!r}: infinite value in column {c!r} at row "
                    f"{_row_label(ids, offsets[k], rec['inf_row'])!r}; remove or replace infinite entries"
                )
            if rec["kind"] == "number" and rec["negative"] is not None:
                i, v = rec["negative"]
                raise ValueError(
                    f"modality {name!r}: log1p needs non-negative counts, column {c!r} has {v!r} at row "
                    f"{_row_label(ids, offsets[k], i)!r}"
                )
    prep.columns_in_ = list(columns)
    prep.categories_ = {}
    stats = {}
    for c in columns:
        if c in nonnum:
            counts, observed = {}, 0
            for s in summaries:
                rec = s["columns"][c]
                observed += rec["count"]
                for level, k in rec["levels"].items():
                    counts[level] = counts.get(level, 0) + int(k)
            levels = sorted(counts)
            prep.categories_[c] = levels
            for level in levels[1:] if len(levels) > 1 else levels:
                k = counts[level]
                mean = k / observed if observed else 0.0
                stats[f"{c}={level}"] = {"count": observed, "mean": mean, "m2": k * (1 - mean),
                                         "min": 0.0 if k < observed else 1.0, "max": 1.0 if k > 0 else 0.0}
        else:
            acc = {"count": 0, "mean": 0.0, "m2": 0.0, "min": np.inf, "max": -np.inf}
            for s in summaries:
                acc = _merge_moments(acc, s["columns"][c])
            stats[c] = acc
    all_nan = [c for c, st in stats.items() if st["count"] == 0]
    if all_nan:
        raise ValueError(
            f"modality {name!r}: columns {_names(all_nan)} have no observed value (all NaN "
            "in the rows used); drop them"
        )
    constant = [c for c, st in stats.items() if st["min"] == st["max"]]
    if constant:
        if not prep.spec.drop_constant:
            raise ValueError(f"modality {name!r}: constant columns {_names(constant)}; drop them")
        warnings.warn(
            f"modality {name!r}: dropped {len(constant)} constant column(s) {_names(constant)}",
            DataWarning,
            stacklevel=3,
        )
    kept = [c for c in stats if c not in constant]
    if not kept:
        raise ValueError(f"modality {name!r}: no column is left after dropping constant columns")
    prep.dropped_constant_ = constant
    prep.feature_names_out_ = kept
    means = pd.Series([stats[c]["mean"] for c in kept], index=kept, dtype=np.float64)
    std = pd.Series([np.sqrt(stats[c]["m2"] / (stats[c]["count"] - 1)) if stats[c]["count"] > 1 else np.nan
                     for c in kept], index=kept, dtype=np.float64)
    prep.means_ = means if prep.spec.center else pd.Series(0.0, index=kept)
    prep.scales_ = std if prep.spec.scale else pd.Series(1.0, index=kept)
    observed = {c: stats[c]["count"] for c in kept}
    return prep, observed


def _check_ids(name, path, id_column, ids):
    missing = np.array([v is None for v in ids], dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(f"modality {name!r}: {path} has {rows.size} row(s) without an ID (rows {_show_ids(rows)})")
    index = pd.Index(ids, name=id_column)
    dup = index[index.duplicated()].unique()
    if len(dup):
        raise ValueError(f"modality {name!r}: duplicated IDs in column {id_column!r} of {path}: {_show_ids(dup)}")
    return index


def load_views_chunked(sources, *, chunk_rows, id_column=None, join="inner", preprocessing=None,
                       min_rows=MIN_ROWS, progress=None):
    """Read and preprocess one table per modality out of core, in row chunks.

    The out-of-core counterpart of :func:`load_views`: the same preprocessing
    (:class:`~hclstat.preprocess.ModalityPreprocessor`, learned in one pass
    over the chunks: column means and standard deviations are merged across
    chunks, one-hot levels collected) and the same checks and messages, but no
    table is ever held in memory whole. The modalities come back as dask
    arrays; :func:`hclstat.moments.compute_moments` (and so every estimator's
    ``fit``) reduces them chunk by chunk.

    Parameters
    ----------
    sources : dict of str to path
        Modality name -> CSV/TSV (uncompressed) or Parquet file.
    chunk_rows : int
        Rows per chunk, about: CSV files are split into byte ranges of about
        that many rows; Parquet files are read by row group (a warning says
        when the row groups are much larger).
    id_column : str, optional
        Column of sample IDs. Rows are not joined: every table must list the
        same IDs in the same order (checked; an error says where they differ).
        Without it, rows are aligned by position. The IDs (not the data) are
        held in memory.
    join : {"inner", "outer"}
        Recorded; with aligned tables both keep every row.
    preprocessing : dict of str to Preprocessing or str, optional
    min_rows : int
    progress : callable, optional
        Called with a short message after each table is read.

    Returns
    -------
    ChunkedViewData
    """
    import dask
    import dask.array as da

    if not isinstance(sources, Mapping) or not sources:
        raise ValueError("sources: expected a non-empty mapping modality name -> file")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive integer, got {chunk_rows!r}")
    if join not in ("inner", "outer"):
        raise ValueError(f"join: expected 'inner' or 'outer', got {join!r}")
    preprocessing = dict(preprocessing or {})
    unknown = sorted(set(preprocessing) - set(sources))
    if unknown:
        raise ValueError(f"preprocessing given for unknown modalities {unknown}; modalities are {list(sources)}")
    frames, summaries, ids, rows = {}, {}, {}, {}
    for m, src in sources.items():
        if isinstance(src, pd.DataFrame):
            raise TypeError(f"modality {m!r}: reading in row chunks needs a file, got a DataFrame")
        path = Path(src)
        frame = _open_chunked(path, chunk_rows=int(chunk_rows), id_column=id_column, name=m)
        spec = Preprocessing.parse(preprocessing.get(m, Preprocessing()))
        parts = frame.to_delayed()
        try:
            summaries[m] = list(dask.compute(*[dask.delayed(_summarise_partition)(p, id_column, spec.onehot, spec.log1p)
                                               for p in parts]))
        except (ValueError, TypeError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise ValueError(f"modality {m!r}: cannot read {path} in row chunks: {_first_line(exc)}") from None
        frames[m] = (path, frame, spec)
        rows[m] = int(sum(s["rows"] for s in summaries[m]))
        if rows[m] == 0:
            raise ValueError(f"modality {m!r}: {path} has no rows")
        if id_column is not None:
            ids[m] = _check_ids(m, path, id_column, np.concatenate([s["ids"] for s in summaries[m]]))
        if progress is not None:
            progress(f"read {m}")
    first = next(iter(sources))
    if id_column is None:
        if len(set(rows.values())) > 1:
            raise ValueError(
                f"row counts differ across modalities {rows}; joining by row order needs equal counts "
                "(give the ID column, CLI: --id COLUMN)"
            )
        row_ids = pd.RangeIndex(rows[first], name="row")
    else:
        row_ids = ids[first]
        for m, idx in ids.items():
            if len(idx) == len(row_ids) and (idx == row_ids).all():
                continue
            if len(idx) != len(row_ids):
                where = f"{len(idx)} IDs vs {len(row_ids)}"
            else:
                i = int(np.flatnonzero(np.asarray(idx != row_ids))[0])
                where = f"row {i}: {idx[i]!r} vs {row_ids[i]!r}"
            raise ValueError(
                f"reading in row chunks needs every table to list the same IDs in the same order; modality {m!r} "
                f"differs from {first!r} ({where}); sort the tables alike, or read them in memory "
                "(without --chunks) to join them"
            )
    n = len(row_ids)
    if n < min_rows:
        raise ValueError(f"only {n} rows after joining the modalities (need at least {min_rows})")
    views, preps, names, observed = {}, {}, {}, {}
    for m, (path, frame, spec) in frames.items():
        columns = [c for c in summaries[m][0]["columns"]]
        prep, observed[m] = _chunked_preprocessor(m, spec, summaries[m], ids.get(m), columns)
        data_frame = frame.drop(columns=[id_column]) if id_column is not None else frame
        out_cols = list(prep.feature_names_out_)
        meta = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in out_cols})

        def apply(part, prep=prep, out_cols=out_cols):
            if len(part) == 0:
                return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in out_cols})
            return prep.transform(part.set_axis([str(c) for c in part.columns], axis=1))

        lengths = [s["rows"] for s in summaries[m]]
        views[m] = data_frame.map_partitions(apply, meta=meta).to_dask_array(lengths=lengths)
        preps[m], names[m] = prep, out_cols
    # rows with every (or any) entry missing need one more pass, only where something is missing
    rowstats = {m: (0, 0) for m in views}
    holey = [m for m in views if any(k < n for k in observed[m].values())]
    if holey:
        nan = {m: da.isnan(views[m]) for m in holey}
        got = dask.compute(*[(nan[m].all(axis=1).sum(), nan[m].any(axis=1).sum()) for m in holey])
        rowstats.update({m: (int(a), int(b)) for m, (a, b) in zip(holey, got)})
    table = []
    for m in views:
        counts = np.array([observed[m][c] for c in names[m]])
        table.append({
            "modality": m, "rows": n, "features": len(names[m]),
            "missing_fraction": float(1 - counts.sum() / (n * counts.size)),
            "rows_all_missing": rowstats[m][0], "rows_any_missing": rowstats[m][1],
            "features_any_missing": int((counts < n).sum()), "min_observed": int(counts.min()),
        })
    report = JoinReport(id_column, join, n, rows)
    return ChunkedViewData(views, report, preps, pd.DataFrame(table).set_index("modality"),
                           row_ids=row_ids, feature_names=names, chunk_rows=int(chunk_rows))


def write_scores_chunked(directory, estimator, data):
    """Write ``scores/<structure>.csv`` of a fitted estimator chunk by chunk.

    Same files as :func:`write_representation` writes from in-memory scores;
    only one chunk of rows (and its ``n x K`` scores) is in memory at a time.

    Returns
    -------
    list of pathlib.Path
    """
    import dask

    directory = Path(directory)
    (directory / "scores").mkdir(exist_ok=True)
    h = estimator.hierarchy_
    mods = list(data.views)
    target = data.views[mods[0]].chunks[0]
    views = {m: data.views[m].rechunk({0: target}) for m in mods}
    paths = {s: directory / "scores" / f"{structure_label(h, s)}.csv" for s in h.structures}
    start = 0
    for i, rows in enumerate(target):
        block = dict(zip(mods, dask.compute(*[views[m].blocks[i] for m in mods])))
        scores = estimator.transform(block)
        index = pd.Index(data.ids[start:start + rows], name=data.id_name)
        for s in h.structures:
            z = np.asarray(scores[s], dtype=np.float64)
            pd.DataFrame(z, index=index, columns=_component_columns(z.shape[1])).to_csv(
                paths[s], mode="w" if i == 0 else "a", header=i == 0)
        start += rows
    return list(paths.values())


# ------------------------------------------------------------------ hierarchy
def read_hierarchy(path, dims=None):
    """Read a hierarchy JSON file (the format of :meth:`Hierarchy.to_dict`).

    Parameters
    ----------
    path : str or path-like
    dims : dict of str to int, optional
        The data's modality dimensions (after preprocessing). When given, the
        file may omit ``"dims"``; names it uses must be modalities of the data,
        and the result follows the data's modality order.

    Returns
    -------
    Hierarchy
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"hierarchy file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"hierarchy file {path} is not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read hierarchy file {path}: {_first_line(exc)}") from None
    if not isinstance(data, Mapping) or "ranks" not in data:
        raise ValueError(f"hierarchy file {path}: expected a JSON object with 'ranks' (and 'dims')")
    if dims is None:
        return Hierarchy.from_dict(data)
    dims = dict(dims)
    named = set()
    ranks = data["ranks"]
    if isinstance(ranks, Mapping):
        for key in ranks:
            named.update(str(key).split(","))
    elif isinstance(ranks, list):
        for entry in ranks:
            if isinstance(entry, Mapping) and "structure" in entry:
                s = entry["structure"]
                named.update([s] if isinstance(s, str) else [str(x) for x in s])
    file_dims = data.get("dims")
    if file_dims is not None:
        if not isinstance(file_dims, Mapping):
            raise ValueError(f"hierarchy file {path}: 'dims' must be an object modality -> columns")
        named.update(str(k) for k in file_dims)
    unknown = sorted(named - set(dims))
    if unknown:
        raise ValueError(
            f"hierarchy file {path} names unknown modalities {unknown}; the data has {list(dims)}"
        )
    if file_dims is not None:
        absent = [m for m in dims if m not in file_dims]
        if absent:
            raise ValueError(f"hierarchy file {path}: 'dims' has no entry for modalities {absent}")
        wrong = {m: (file_dims[m], dims[m]) for m in dims if file_dims[m] != dims[m]}
        if wrong:
            detail = ", ".join(f"{m!r}: file {a}, data {b}" for m, (a, b) in wrong.items())
            raise ValueError(
                f"hierarchy file {path}: dims disagree with the data after preprocessing ({detail}); "
                "omit 'dims' to take them from the data"
            )
    return Hierarchy.from_dict({"dims": dims, "ranks": ranks})


# ------------------------------------------------------------------ writing
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name):
    return _UNSAFE.sub("_", str(name)).strip("_") or "x"


def structure_label(hierarchy, structure):
    """File-name-safe label of a structure: member modalities joined by ``+`` in modality order."""
    s = hierarchy.structure(structure)
    return "+".join(_safe(m) for m in sorted(s, key=hierarchy.index))


def _feature_names(estimator, modality, p):
    names = (getattr(estimator, "feature_names_", None) or {}).get(modality)
    return list(names) if names is not None else [f"{modality}[{j}]" for j in range(p)]


def _component_columns(k):
    return [f"comp{j + 1}" for j in range(k)]


def write_representation(directory, estimator, scores=None, ids=None, id_name="row"):
    """Write a fitted representation as plain files.

    Layout inside ``directory``::

        hierarchy.json                     Hierarchy.to_dict() of hierarchy_
        loadings/<structure>__<modality>.csv  feature x comp1..k_S (feature names)
        scores/<structure>.csv             ID x comp1..k_S (when scores are given)
        noise_variances.csv                modality, feature, noise_variance

    ``<structure>`` is :func:`structure_label` (e.g. ``labs+codes``).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    directory = Path(directory)
    h = estimator.hierarchy_
    written = []
    path = directory / "hierarchy.json"
    path.write_text(json.dumps(h.to_dict(), indent=2) + "\n")
    written.append(path)
    (directory / "loadings").mkdir(exist_ok=True)
    for s in h.structures:
        for m in sorted(s, key=h.index):
            a = np.asarray(estimator.loadings_[s][m], dtype=np.float64)
            frame = pd.DataFrame(a, index=pd.Index(_feature_names(estimator, m, a.shape[0]), name="feature"),
                                 columns=_component_columns(a.shape[1]))
            path = directory / "loadings" / f"{structure_label(h, s)}__{_safe(m)}.csv"
            frame.to_csv(path)
            written.append(path)
    if scores is not None:
        (directory / "scores").mkdir(exist_ok=True)
        for s in h.structures:
            z = np.asarray(scores[s], dtype=np.float64)
            index = pd.Index(ids if ids is not None else np.arange(z.shape[0]), name=id_name)
            path = directory / "scores" / f"{structure_label(h, s)}.csv"
            pd.DataFrame(z, index=index, columns=_component_columns(z.shape[1])).to_csv(path)
            written.append(path)
    rows = []
    for m in h.modalities:
        v = np.asarray(estimator.noise_variances_[m], dtype=np.float64)
        for name, value in zip(_feature_names(estimator, m, v.shape[0]), v):
            rows.append((m, name, value))
    path = directory / "noise_variances.csv"
    pd.DataFrame(rows, columns=["modality", "feature", "noise_variance"]).to_csv(path, index=False)
    written.append(path)
    return written


def is_hclstat_output(path):
    """Whether ``path`` is a directory written by a previous hclstat run (has its ``run.json``)."""
    marker = Path(path) / RUN_FILE
    try:
        return "hclstat_version" in json.loads(marker.read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_output_target(out, *, overwrite=False):
    """Raise ``FileExistsError`` unless ``out`` may receive a result.

    ``out`` may be absent, an empty directory, or an earlier hclstat output;
    anything else needs ``overwrite=True``. A file is never replaced.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if out.is_dir() and not overwrite and any(out.iterdir()) and not is_hclstat_output(out):
        raise FileExistsError(
            f"output directory {out} exists, is not empty and was not written by hclstat; "
            "choose another directory or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def atomic_directory(out, *, overwrite=False):
    """Build a result directory in a temporary place and move it to ``out`` on success.

    The temporary directory is created next to ``out`` (same file system, so the
    final move is a rename). If the ``with`` block raises, it is deleted and
    ``out`` is left untouched; an existing ``out`` is replaced only after the
    block succeeded (see :func:`check_output_target` for when that is allowed).

    Yields
    ------
    pathlib.Path
        The temporary directory to write into.
    """
    out = Path(out)
    check_output_target(out, overwrite=overwrite)
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            old.rmdir()
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(old, out)  # put the previous result back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
