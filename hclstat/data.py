"""Validation of multimodal input: ``dict`` name -> table, or a list of tables.

Every error names what is wrong, where (modality, column, row) and what to do.

Rows are samples. A pandas DataFrame (or Series) carries its samples' IDs in
its index; modalities given as DataFrames whose indices differ are joined on
the index as :func:`pandas.concat` with ``axis=1`` would (an outer join): every
sample of any modality is kept, and a sample absent from a modality becomes an
all-NaN row of it (block-missing), which the pairwise-complete moments
(:func:`hclstat.moments.compute_moments`) and the scores skip. Arrays carry no
IDs: their rows are matched by position, so they need equal row counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .exceptions import EstimationWarning

__all__ = ["MIN_BLOCK_ROWS", "check_views", "is_dask_array", "joined_index", "warn_few_block_rows"]

#: fewest rows a covariance block may rest on without an EstimationWarning (see :func:`warn_few_block_rows`)
MIN_BLOCK_ROWS = 10


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


def _pandas():
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return None
    return pd


def _ids_of(table):
    """The index of a DataFrame/Series (its rows' sample IDs), ``None`` for anything else."""
    pd = _pandas()
    if pd is not None and isinstance(table, (pd.DataFrame, pd.Series)):
        return table.index
    return None


def _join_index(named):
    """The joined row index of ``named`` and the samples each modality lacks.

    Returns ``(index, absent)``: ``index`` is the union of the DataFrames'
    indices in order of first appearance (the first modality's rows in its
    order, then the rows new in the second, ...), ``absent`` maps each
    modality to a boolean mask over ``index`` of the samples it lacks. Both
    are ``None`` when no join is needed: every DataFrame has the same index in
    the same order (tables without IDs are then matched by position).
    """
    ids = {m: _ids_of(t) for m, t in named.items()}
    framed = [m for m, idx in ids.items() if idx is not None]
    if not framed or all(ids[m].equals(ids[framed[0]]) for m in framed[1:]):
        return None, None
    bare = [m for m, idx in ids.items() if idx is None]
    if bare:
        raise ValueError(
            f"views: modalities {framed} are DataFrames with different indices (sample IDs), to be joined on "
            f"them, but {bare} carry no IDs (arrays: rows matched by position); give every modality as a "
            "DataFrame indexed by sample ID"
        )
    for m in framed:
        dup = ids[m][ids[m].duplicated()]
        if len(dup):
            raise ValueError(
                f"modality {m!r}: duplicated index label {dup[0]!r} ({len(dup.unique())} label(s) repeated); "
                "modalities are joined on their indices, so each sample ID must appear once per modality"
            )
    index = ids[framed[0]].append([ids[m] for m in framed[1:]]).drop_duplicates()
    absent = {m: ~np.asarray(index.isin(ids[m])) for m in framed}
    return index, absent


def joined_index(views):
    """Sample IDs of the rows that ``fit``, ``transform`` and ``score_samples`` see.

    Parameters
    ----------
    views : dict of str to array-like or DataFrame, or list

    Returns
    -------
    pandas.Index or None
        The union of the DataFrames' indices in order of first appearance when
        their indices differ (set or order); the common index when every
        modality is a DataFrame with the same index; ``None`` when rows are
        matched by position (some modality is an array).
    """
    named = _as_named(views)
    index, _ = _join_index(named)
    if index is not None:
        return index
    ids = [_ids_of(t) for t in named.values()]
    return ids[0] if all(i is not None for i in ids) else None


def _reindexed(table, index):
    """``table`` on ``index`` (rows it lacks all-NaN); integer and bool columns become float64 first."""
    pd = _pandas()
    if isinstance(table, pd.Series):
        table = table.to_frame()
    # reindexing an integer column would make an object or float column anyway; do it explicitly
    numeric = {c: np.float64 for c in table.columns
               if pd.api.types.is_bool_dtype(table[c]) or pd.api.types.is_integer_dtype(table[c])}
    return (table.astype(numeric) if numeric else table).reindex(index)


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


def _row_label(index, i):
    label = None if index is None else index[i]
    return f"row {i}" if label is None or label == i else f"row {i} (ID {label!r})"


def _check_entries(m, arr, names, *, allow_missing, min_rows, index=None):
    """Reject infinite entries (and NaN unless ``allow_missing``) and columns with
    fewer than ``min_rows`` observed values, without an ``n x p`` mask.

    Column sums propagate every NaN and infinity, so one pass that allocates
    ``p`` numbers clears clean data; only data that fails it is scanned again in
    row chunks to say where the offending entry is.

    Returns
    -------
    ndarray of bool of shape (n,) or None
        Rows with at least one observed entry; ``None`` when no entry is missing.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(arr, axis=0)).all():
            return None
    n, p = arr.shape
    step = max(1, _SCAN_ENTRIES // max(p, 1))
    observed = np.zeros(p, dtype=np.int64)
    present = np.ones(n, dtype=bool)
    for start in range(0, n, step):
        chunk = arr[start : start + step]
        bad = np.isinf(chunk)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"modality {m!r}: infinite value at {_row_label(index, start + i)}, {_column_label(names, j)}; "
                "remove or replace infinite entries"
            )
        nan = np.isnan(chunk)
        if nan.any() and not allow_missing:
            i, j = np.argwhere(nan)[0]
            raise ValueError(
                f"modality {m!r}: missing value (NaN) at {_row_label(index, start + i)}, "
                f"{_column_label(names, j)}; this operation needs complete data"
            )
        observed += chunk.shape[0] - nan.sum(axis=0)
        present[start : start + step] = ~nan.all(axis=1)
    few = np.flatnonzero(observed < min_rows)
    if few.size:
        j = int(few[0])
        raise ValueError(
            f"modality {m!r}: {_column_label(names, j)} has only {observed[j]} observed "
            f"values (need at least {min_rows}); drop the column"
        )
    return present


def _check_shared_rows(present, minimum):
    """Every pair of modalities must have ``minimum`` rows with an observed entry in both."""
    mods = list(present)
    for i, a in enumerate(mods):
        for b in mods[i + 1:]:
            pa, pb = present[a], present[b]
            if pa is None and pb is None:
                continue
            if pa is None or pb is None:
                shared = int((pb if pa is None else pa).sum())
            else:
                shared = int(np.count_nonzero(pa & pb))
            if shared < minimum:
                raise ValueError(
                    f"modalities {a!r} and {b!r} share only {shared} row(s) (samples with an observed entry in "
                    f"both; need at least {minimum} for their cross-covariance); add samples measured on both, "
                    "check that their IDs match (type and format), or fit them separately"
                )


def check_views(views, *, min_rows=2, allow_missing=True, modalities=None, check_finite=True,
                min_shared_rows=None):
    """Validate views and return ``(arrays, feature_names)``.

    Modalities given as pandas DataFrames are matched on their index (the
    sample IDs), not by position: indices with the same labels in a different
    order are aligned to the first modality's order, and indices with
    different labels are joined as an outer join (the union of the IDs in
    order of first appearance, see :func:`joined_index`), so every row a
    modality has is kept and a sample a modality lacks becomes an all-NaN row
    of it. Arrays (NumPy, dask) carry no IDs: their rows are matched by
    position and must be as many in every modality.

    Parameters
    ----------
    views : dict of str to array-like or DataFrame, or list of them
        One table per modality. A list is named ``view0, view1, ...``.
    min_rows : int
        Fewest rows accepted (and fewest observed values of any column).
    allow_missing : bool
        Whether NaN entries, and samples absent from a modality, are accepted
        (they are never imputed).
    modalities : sequence of str, optional
        Expected modality names (and order), e.g. those of a fitted estimator.
    min_shared_rows : int, optional
        When DataFrames are joined on their indices: fewest rows every pair of
        modalities must share (rows with an observed entry in both), else a
        ValueError naming the pair (typically IDs of different types or
        formats). Default: ``min_rows`` when it is 2 or more (fitting: a
        cross-covariance needs two common rows), no requirement when it is 1
        (scoring, where a sample is scored from the modalities it has).
        Positionally matched arrays are checked per pair of features by
        :func:`~hclstat.moments.compute_moments`.

    Returns
    -------
    arrays : dict of str to ndarray of shape (n_samples, p_m)
        float64 arrays (dask arrays are passed through lazily, unchecked for inf).
    feature_names : dict of str to list of str or None

    Raises
    ------
    ValueError
        Arrays (or arrays and DataFrames) with different row counts; a
        DataFrame with a duplicated index label when a join is needed; two
        modalities sharing fewer than ``min_shared_rows`` rows; and the entry
        checks (infinite values, NaN when ``allow_missing=False``).
    """
    named = _as_named(views)
    # rows in the order of the views as given (joined_index), whatever the order of `modalities`
    given = named
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
    index, absent = _join_index(given)
    if index is not None:
        if not allow_missing:
            m = next(m for m, a in absent.items() if a.any())
            raise ValueError(
                f"modality {m!r}: no row for sample {index[np.flatnonzero(absent[m])[0]]!r} "
                f"({int(absent[m].sum())} of the {len(index)} samples of the joined modalities); "
                "this operation needs complete data (every sample in every modality)"
            )
        named = {m: _reindexed(t, index) for m, t in named.items()}
    else:
        # positional: a DataFrame's labels name the rows of every modality
        index = next((i for i in map(_ids_of, named.values()) if i is not None), None)
    arrays, names = {}, {}
    for name, table in named.items():
        arr, cols = _to_array(name, table)
        if arr.shape[1] == 0:
            raise ValueError(f"modality {name!r}: has no columns")
        arrays[name], names[name] = arr, cols
    rows = {m: a.shape[0] for m, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"views: row counts differ across modalities {rows}; tables without sample IDs (arrays) are matched "
            "by position and need equal counts: give each modality as a pandas DataFrame indexed by sample ID "
            "(modalities measured on different samples are then joined on it)"
        )
    n = next(iter(rows.values()))
    if n < min_rows:
        raise ValueError(f"views: need at least {min_rows} rows (samples), got {n}")
    if check_finite:
        present = {}
        for m, arr in arrays.items():
            if is_dask_array(arr):
                continue
            present[m] = _check_entries(m, arr, names[m], allow_missing=allow_missing, min_rows=min_rows,
                                        index=index)
        if absent is not None:
            if min_shared_rows is None:
                min_shared_rows = min_rows if min_rows >= 2 else 0
            _check_shared_rows(present, min_shared_rows)
    return arrays, names


def warn_few_block_rows(moments, *, stacklevel=2):
    """Warn about covariance blocks estimated from fewer than ``MIN_BLOCK_ROWS`` rows.

    A block's rows are its smallest pairwise count (the rows where both
    features are observed; with absent modalities, the samples the two
    modalities share). Below 10 rows a single sample correlation must exceed
    0.63 to differ from zero at the 5% level, so the block's rank test has
    almost no power and its loadings are mostly noise. The count is fixed
    rather than ``p``-dependent: the permutation and random-matrix thresholds
    already scale with ``p`` and stay valid, it is the signal that is lost.
    Fewer than 2 rows is an error (:func:`check_views`,
    :func:`~hclstat.moments.compute_moments`). Complete data are not checked:
    every block then rests on the whole sample.

    Parameters
    ----------
    moments : hclstat.moments.Moments
    stacklevel : int
        Passed to :func:`warnings.warn` (2: the caller of this function).
    """
    if not moments.has_missing:
        return
    mods = moments.modalities
    for i, a in enumerate(mods):
        for b in mods[i:]:
            rows = moments.block_count(a, b)
            if rows >= MIN_BLOCK_ROWS:
                continue
            what = f"modality {a!r} has" if a == b else f"modalities {a!r} and {b!r} share"
            warnings.warn(
                f"{what} only {rows} observed rows (the fewest of any pair of its features; at least "
                f"{MIN_BLOCK_ROWS} are needed for a usable covariance block): its rank test has almost no power "
                "and its loadings are mostly noise; add samples measured on both or drop one of them",
                EstimationWarning,
                stacklevel=stacklevel,
            )
