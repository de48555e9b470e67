"""Joining modality tables on an ID (or by row order) and preprocessing them in memory."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ..preprocess import ModalityPreprocessor, Preprocessing
from .read import _show_ids, read_table

__all__ = ["MIN_ROWS", "JoinReport", "MultiViewData", "join_tables", "load_views", "missingness_table",
           "shared_rows_table"]

#: fewest joined rows accepted by :func:`load_views` (second moments of fewer rows are noise)
MIN_ROWS = 10


def _check_sources(sources, preprocessing):
    """The per-modality preprocessing as a dict, after checking it names only modalities of ``sources``."""
    if not isinstance(sources, Mapping) or not sources:
        raise ValueError("sources: expected a non-empty mapping modality name -> file")
    preprocessing = dict(preprocessing or {})
    unknown = sorted(set(preprocessing) - set(sources))
    if unknown:
        raise ValueError(f"preprocessing given for unknown modalities {unknown}; modalities are {list(sources)}")
    return preprocessing


def _check_equal_rows(rows):
    """Joining by row order: every modality must have as many rows (``rows``: modality -> count)."""
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"row counts differ across modalities {rows}; joining by row order needs equal counts "
            "(give the ID column, CLI: --id COLUMN)"
        )
    return next(iter(rows.values()))


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


def _check_pairs_share_ids(indexes, sets, id_column):
    """Outer join: two modalities without a common ID have no cross-covariance (an error naming them)."""
    mods = list(indexes)
    for i, a in enumerate(mods):
        for b in mods[i + 1:]:
            if not sets[a] & sets[b]:
                raise ValueError(
                    f"no ID in column {id_column!r} is common to modalities {a!r} and {b!r} "
                    f"({a}: {_show_ids(indexes[a], 3)}; {b}: {_show_ids(indexes[b], 3)}), so nothing relates "
                    "them; check the ID column and its format"
                )


def join_tables(tables, *, id_column=None, join="outer"):
    """Align modality tables on their index (IDs) or by row order.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        As returned by :func:`read_table` (indexed by ID when ``id_column``).
    id_column : str, optional
        ``None`` joins by row order: every table must have the same number of rows.
    join : {"outer", "inner"}
        Keep the IDs present in any table (default; in order of
        first appearance: the first table's, then those new in the second,
        ...; a modality's rows for the IDs it lacks are all-NaN), or only those
        present in every table. Two
        modalities without a common ID are an error either way.

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
        n = _check_equal_rows(rows)
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
        _check_pairs_share_ids(indexes, sets, id_column)
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


def _observed_rows(x):
    """Rows of one modality with at least one observed entry (boolean, NumPy or dask)."""
    if hasattr(x, "dask"):
        import dask.array as da

        return ~da.isnan(x).all(axis=1)
    return ~np.isnan(np.asarray(x, dtype=np.float64)).all(axis=1)


def shared_rows_table(views, missingness=None):
    """Rows each modality, and each pair of modalities, contributes.

    Parameters
    ----------
    views : dict of str to DataFrame, ndarray or dask array
        Joined modalities (same rows), NaN where missing.
    missingness : pandas.DataFrame, optional
        Their :func:`missingness_table`; when no modality has an all-missing
        row every count is the row count and the data are not read again.

    Returns
    -------
    pandas.DataFrame of int, modality x modality
        Entry ``(a, b)``: rows with an observed entry in both ``a`` and ``b``
        (the rows behind their cross-covariance); the diagonal: rows with an
        observed entry in the modality.
    """
    mods = list(views)
    n = int(next(iter(views.values())).shape[0])
    out = pd.DataFrame(n, index=pd.Index(mods, name="modality"), columns=mods, dtype=np.int64)
    if missingness is not None and not (missingness["rows_all_missing"] > 0).any():
        return out
    present = {m: _observed_rows(x) for m, x in views.items()}
    if any(hasattr(v, "dask") for v in present.values()):
        import dask

        present = dict(zip(mods, dask.compute(*present.values())))
    for i, a in enumerate(mods):
        for b in mods[i:]:
            out.loc[a, b] = out.loc[b, a] = int(np.count_nonzero(present[a] & present[b]))
    return out


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

    @cached_property
    def shared_rows(self):
        """:func:`shared_rows_table` of the views: rows per modality (diagonal) and per pair."""
        return shared_rows_table(self.views, self.missingness)

    def rows_lines(self):
        """Readable lines: the rows each modality and each pair of modalities contributes."""
        t = self.shared_rows
        mods = list(t.index)
        out = ["rows with data per modality: " + ", ".join(f"{m} {t.loc[m, m]}" for m in mods)]
        if len(mods) > 1:
            pairs = [f"{a}+{b} {t.loc[a, b]}" for i, a in enumerate(mods) for b in mods[i + 1:]]
            out.append("rows shared by each pair (their cross-covariance): " + ", ".join(pairs))
        return out

    def to_dict(self):
        """JSON-serialisable report of the join, the rows per modality and pair, the preprocessing
        and the missingness."""
        t = self.shared_rows
        return {
            "join": self.join.to_dict(),
            "rows": {
                "per_modality": {m: int(t.loc[m, m]) for m in t.index},
                "per_pair": {f"{a}+{b}": int(t.loc[a, b]) for i, a in enumerate(t.index) for b in t.index[i + 1:]},
            },
            "preprocessing": {m: p.report() for m, p in self.preprocessors.items()},
            "missingness": json.loads(self.missingness.to_json(orient="index")),
        }

    def report(self):
        """Readable text: join, rows per modality and pair, preprocessing per modality, missingness table."""
        lines = ["Data", "-" * 60, *self.join.lines(), *self.rows_lines(), ""]
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


def load_views(sources, *, id_column=None, join="outer", preprocessing=None, min_rows=MIN_ROWS, progress=None,
               sep=None, encoding=None):
    """Read, join and preprocess one table per modality.

    Parameters
    ----------
    sources : dict of str to path or pandas.DataFrame
        Modality name -> file (CSV/TSV/Parquet) or an already loaded table
        (which must contain ``id_column`` when one is given).
    id_column : str, optional
        Join on this column; without it rows are joined by position.
    join : {"outer", "inner"}
        Union (default) or intersection of the IDs; see :func:`join_tables`.
        ``"outer"`` keeps every sample of every modality; the estimators then use, for each covariance block, the
        samples observed in both modalities (:attr:`MultiViewData.shared_rows`).
    preprocessing : dict of str to Preprocessing or str, optional
        Per-modality steps; modalities not listed get the default (centre and scale).
    min_rows : int
        Fewest joined rows accepted, and (outer join) fewest rows of any modality.
    progress : callable, optional
        Called with a short message after each table is read (e.g. a progress bar update).
    sep, encoding : str, optional
        Delimiter and text encoding of the CSV/TSV files (default: sniffed, UTF-8); see :func:`read_table`.

    Returns
    -------
    MultiViewData
    """
    preprocessing = _check_sources(sources, preprocessing)
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
            t = read_table(src, id_column=id_column, name=m, sep=sep, encoding=encoding)
        tables[m] = t
        if progress is not None:
            progress(f"read {m}")
    aligned, report = join_tables(tables, id_column=id_column, join=join)
    if report.n_rows < min_rows:
        raise ValueError(
            f"only {report.n_rows} rows after joining the modalities (need at least {min_rows})"
        )
    few = {m: k for m, k in report.rows_per_modality.items() if k < min_rows}
    if few:
        # what the inner join would have refused: a modality too small to estimate anything from
        raise ValueError(f"modalities with fewer than {min_rows} rows: {few}; drop them or add samples")
    views, preps = {}, {}
    for m, t in aligned.items():
        prep = ModalityPreprocessor(preprocessing.get(m, Preprocessing()), name=m)
        views[m] = prep.fit_transform(t)
        preps[m] = prep
    return MultiViewData(views, report, preps, missingness_table(views))
