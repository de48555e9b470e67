"""Reading modality tables out of core, in row chunks, with ``dask``.

The preprocessing is learned in one pass over the chunks (:func:`_summarise_partition`
per chunk, merged by :func:`_chunked_preprocessor`) and gives the same
:class:`~hclstat.preprocess.ModalityPreprocessor` (and the same errors) as
the in-memory path of :func:`hclstat.io.load_views`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..preprocess import DataWarning, ModalityPreprocessor, Preprocessing, _names, check_columns, check_non_numeric, \
    out_of_range_error
from .join import MIN_ROWS, JoinReport, MultiViewData, _check_equal_rows, _check_sources
from .read import _check_encoding, _check_sep, _check_source, _decode_error, _first_line, _head_lines, _id_index, _resolve_sep, \
    _show_ids

__all__ = ["ChunkedViewData", "load_views_chunked"]


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


def _open_chunked(path, *, chunk_rows, id_column, name, sep=None, encoding="utf-8"):
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
            sep = _resolve_sep(path, kind, sep, _head_lines(path, encoding), label)
            head = pd.read_csv(path, sep=sep, nrows=1000, dtype={id_column: str} if id_column else None,
                               encoding=encoding)
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
                                dtype=dtype, sample=1 << 20, encoding=encoding)
            columns = [str(c) for c in head.columns]
    except pd.errors.EmptyDataError:
        raise ValueError(f"{label}{path} is empty") from None
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, label, exc) from None
    except (OSError, pd.errors.ParserError, ImportError) as exc:
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
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite spread is an error after the merge
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
    check_non_numeric(name, prep.spec, nonnum)
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
    constant = check_columns(
        name,
        prep.spec,
        list(stats),
        all_nan=[c for c, st in stats.items() if st["count"] == 0],
        constant=[c for c, st in stats.items() if st["min"] == st["max"]],
        stacklevel=3,
    )
    kept = [c for c in stats if c not in constant]
    prep.dropped_constant_ = constant
    prep.feature_names_out_ = kept
    means = pd.Series([stats[c]["mean"] for c in kept], index=kept, dtype=np.float64)
    std = pd.Series([np.sqrt(stats[c]["m2"] / (stats[c]["count"] - 1)) if stats[c]["count"] > 1 else np.nan
                     for c in kept], index=kept, dtype=np.float64)
    for c in kept:
        if stats[c]["count"] > 1 and not (np.isfinite(means[c]) and np.isfinite(std[c]) and std[c] > 0):
            # the in-memory path rescales such a column; merged chunk sums of squares cannot be
            raise out_of_range_error(name, c, max(abs(stats[c]["min"]), abs(stats[c]["max"])), chunked=True)
    prep.means_ = means if prep.spec.center else pd.Series(0.0, index=kept)
    prep.scales_ = std if prep.spec.scale else pd.Series(1.0, index=kept)
    observed = {c: stats[c]["count"] for c in kept}
    return prep, observed


def load_views_chunked(sources, *, chunk_rows, id_column=None, join="inner", preprocessing=None,
                       min_rows=MIN_ROWS, progress=None, sep=None, encoding=None):
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
    sep, encoding : str, optional
        Delimiter and text encoding of the CSV/TSV files, as in :func:`~hclstat.io.read_table`.

    Returns
    -------
    ChunkedViewData
    """
    import dask
    import dask.array as da

    preprocessing = _check_sources(sources, preprocessing)
    sep, encoding = _check_sep(sep), _check_encoding(encoding)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive integer, got {chunk_rows!r}")
    if join not in ("inner", "outer"):
        raise ValueError(f"join: expected 'inner' or 'outer', got {join!r}")
    frames, summaries, ids, rows = {}, {}, {}, {}
    for m, src in sources.items():
        if isinstance(src, pd.DataFrame):
            raise TypeError(f"modality {m!r}: reading in row chunks needs a file, got a DataFrame")
        path = Path(src)
        frame = _open_chunked(path, chunk_rows=int(chunk_rows), id_column=id_column, name=m, sep=sep,
                              encoding=encoding)
        spec = Preprocessing.parse(preprocessing.get(m, Preprocessing()))
        parts = frame.to_delayed()
        try:
            summaries[m] = list(dask.compute(*[dask.delayed(_summarise_partition)(p, id_column, spec.onehot, spec.log1p)
                                               for p in parts]))
        except UnicodeDecodeError as exc:
            raise _decode_error(path, encoding, f"modality {m!r}: ", exc) from None
        except (ValueError, TypeError, OSError, pd.errors.ParserError) as exc:
            raise ValueError(f"modality {m!r}: cannot read {path} in row chunks: {_first_line(exc)}") from None
        frames[m] = (path, frame, spec)
        rows[m] = int(sum(s["rows"] for s in summaries[m]))
        if rows[m] == 0:
            raise ValueError(f"modality {m!r}: {path} has no rows")
        if id_column is not None:
            chunk_ids = np.concatenate([s["ids"] for s in summaries[m]])
            ids[m] = _id_index(chunk_ids, np.array([v is None for v in chunk_ids], dtype=bool),
                               label=f"modality {m!r}: ", path=path, id_column=id_column)
        if progress is not None:
            progress(f"read {m}")
    first = next(iter(sources))
    if id_column is None:
        row_ids = pd.RangeIndex(_check_equal_rows(rows), name="row")
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
