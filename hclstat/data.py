"""Validation of multimodal input: ``dict`` name -> table, or a list of tables.

Every error names what is wrong, where (modality, column, row) and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["check_views", "is_dask_array"]


def is_dask_array(x):
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is a dependency
        return False
    return isinstance(x, da.Array)


def _column_label(names, j):
    return f"column {j} ({names[j]!r})" if names is not None else f"column {j}"


def _as_named(views):
    if isinstance(views, Mapping):
        if len(views) == 0:
            raise ValueError("views: expected at least one modality, got an empty mapping")
        for k in views:
            if not isinstance(k, str):
                raise TypeError(f"views: modality names must be str, got {k!r}")
        return dict(views)
    if isinstance(views, Sequence) and not isinstance(views, (str, bytes)) and not hasattr(views, "shape"):
        if len(views) == 0:
            raise ValueError("views: expected at least one modality, got an empty list")
        return {f"view{i}": v for i, v in enumerate(views)}
    raise TypeError(
        "views: expected a dict modality name -> 2-D array/DataFrame, or a list of them, "
        f"got {type(views).__name__}"
    )


def _to_array(name, table):
    """One modality -> (float64 2-D array or dask array, feature names or None)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(table, pd.Series):
        table = table.to_frame()
    if pd is not None and isinstance(table, pd.DataFrame):
        bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            raise ValueError(
                f"modality {name!r}: non-numeric columns {[str(c) for c in bad[:10]]}"
                f"{' ...' if len(bad) > 10 else ''}; encode them (one-hot) or drop them"
            )
        names = [str(c) for c in table.columns]
        arr = table.to_numpy(dtype=np.float64, na_value=np.nan)
        return arr, names
    if is_dask_array(table):
        if table.ndim != 2:
            raise ValueError(f"modality {name!r}: expected a 2-D array, got {table.ndim} dimensions")
        if not np.issubdtype(table.dtype, np.number):
            raise ValueError(f"modality {name!r}: expected a numeric array, got dtype {table.dtype}")
        return table.astype(np.float64), None
    arr = np.asarray(table)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(
            f"modality {name!r}: expected numeric values, got dtype {arr.dtype}; "
            "convert the table to numbers first"
        )
    if arr.ndim != 2:
        raise ValueError(
            f"modality {name!r}: expected a 2-D array (n_samples, p_m), got shape {arr.shape}; "
            "use x.reshape(-1, 1) for a single column"
        )
    return np.asarray(arr, dtype=np.float64), None


#: rows per chunk of the entry scan are chosen so a chunk holds about this many entries
_SCAN_ENTRIES = 1 << 20


def _check_entries(m, arr, names, *, allow_missing, min_rows):
    """Reject infinite entries (and NaN unless ``allow_missing``) and columns with
    fewer than ``min_rows`` observed values, without an ``n x p`` mask.

    Column sums propagate every NaN and infinity, so one pass that allocates
    ``p`` numbers clears clean data; only data that fails it is scanned again in
    row chunks to say where the offending entry is.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(arr, axis=0)).all():
            return
    n, p = arr.shape
    step = max(1, _SCAN_ENTRIES // max(p, 1))
    observed = np.zeros(p, dtype=np.int64)
    for start in range(0, n, step):
        chunk = arr[start : start + step]
        bad = np.isinf(chunk)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"modality {m!r}: infinite value at row {start + i}, {_column_label(names, j)}; "
                "remove or replace infinite entries"
            )
        nan = np.isnan(chunk)
        if nan.any() and not allow_missing:
            i, j = np.argwhere(nan)[0]
            raise ValueError(
                f"modality {m!r}: missing value (NaN) at row {start + i}, {_column_label(names, j)}; "
                "this operation needs complete data"
            )
        observed += chunk.shape[0] - nan.sum(axis=0)
    few = np.flatnonzero(observed < min_rows)
    if few.size:
        j = int(few[0])
        raise ValueError(
            f"modality {m!r}: {_column_label(names, j)} has only {observed[j]} observed "
            f"values (need at least {min_rows}); drop the column"
        )


def check_views(views, *, min_rows=2, allow_missing=True, modalities=None, check_finite=True):
    """Validate views and return ``(arrays, feature_names)``.

    Parameters
    ----------
    views : dict of str to array-like or DataFrame, or list of them
        One table per modality, rows aligned. A list is named ``view0, view1, ...``.
    min_rows : int
        Fewest rows accepted.
    allow_missing : bool
        Whether NaN entries are accepted (they are never imputed).
    modalities : sequence of str, optional
        Expected modality names (and order), e.g. those of a fitted estimator.

    Returns
    -------
    arrays : dict of str to ndarray of shape (n_samples, p_m)
        float64 arrays (dask arrays are passed through lazily, unchecked for inf).
    feature_names : dict of str to list of str or None
    """
    named = _as_named(views)
    if modalities is not None:
        missing = [m for m in modalities if m not in named]
        extra = [m for m in named if m not in modalities]
        if missing or extra:
            raise ValueError(
                f"views: expected modalities {list(modalities)}, got {list(named)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        named = {m: named[m] for m in modalities}
    arrays, names = {}, {}
    for name, table in named.items():
        arr, cols = _to_array(name, table)
        if arr.shape[1] == 0:
            raise ValueError(f"modality {name!r}: has no columns")
        arrays[name], names[name] = arr, cols
    rows = {m: a.shape[0] for m, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"views: row counts differ across modalities {rows}; rows must be aligned samples "
            "(join the tables on their ID first)"
        )
    n = next(iter(rows.values()))
    if n < min_rows:
        raise ValueError(f"views: need at least {min_rows} rows (samples), got {n}")
    if check_finite:
        for m, arr in arrays.items():
            if is_dask_array(arr):
                continue
            _check_entries(m, arr, names[m], allow_missing=allow_missing, min_rows=min_rows)
    return arrays, names
