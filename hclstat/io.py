"""Reading modality tables, joining them on an ID, and writing results.

Input: one table per modality (CSV, TSV or Parquet), joined on an ID column or
by row order. With an ID column the *intersection* of IDs is used by default
(``join="inner"``) and the IDs each modality loses are reported; ``join="outer"``
keeps the union and a modality's rows that are absent become all-NaN
(block-missing), which the pairwise-complete moments handle without imputing.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .hierarchy import Hierarchy
from .preprocess import ModalityPreprocessor, Preprocessing

__all__ = [
    "MIN_ROWS",
    "JoinReport",
    "MultiViewData",
    "read_table",
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
