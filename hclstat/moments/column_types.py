"""Column types of a mixed table for the latent Gaussian copula (DESIGN §9).

Each observed column is a monotone function of a latent Gaussian coordinate; its
*type* says which, and picks the bridge function from the latent correlation to
Kendall's tau:

* ``"continuous"`` — ``f_j(x*_j)`` with ``f_j`` strictly increasing;
* ``"binary"`` — two distinct observed values (any coding; the lower is level 0);
* ``"ternary"`` — three ordered values (levels 0, 1, 2);
* ``"truncated"`` — zero-inflated: a point mass at the column's minimum and
  continuous above it.

:func:`infer_types` reads the types off the data, :func:`check_types` validates
the types a user gives (or infers the ``"auto"`` ones), and :func:`zratios` gives
the level proportions the bridge functions need. Missing entries (NaN) are
ignored throughout: every count is over the column's observed rows.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..exceptions import EstimationWarning
from ..kernels.kendall import column_order

__all__ = ["COLUMN_TYPES", "check_types", "infer_types", "zratios"]

#: the type codes, in the order the bridge functions list them
COLUMN_TYPES = ("continuous", "binary", "ternary", "truncated")
#: a continuous column with at most this many distinct values gets a warning
FEW_DISTINCT = 10
_AUTO = "auto"


def _as_matrix(x, names):
    """``(x as float64 (n, p), column names or None)``; a DataFrame gives its column names."""
    if names is None and hasattr(x, "columns"):
        names = [str(c) for c in x.columns]
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"x: expected a numeric array of shape (n_samples, n_columns), got {type(x).__name__} ({err})"
        ) from None
    if arr.ndim != 2:
        raise ValueError(f"x: expected a 2-D array of shape (n_samples, n_columns), got {arr.ndim} dimension(s)")
    if names is not None:
        names = [str(c) for c in names]
        if len(names) != arr.shape[1]:
            raise ValueError(f"names: expected {arr.shape[1]} names (one per column of x), got {len(names)}")
    bad = np.flatnonzero(np.isinf(arr).any(axis=0))
    if bad.size:
        raise ValueError(
            f"x: {_column(bad[0], names)} has infinite entries; replace them by NaN (missing) or finite values"
        )
    return arr, names


def _column(j, names):
    """How an error names column ``j``: its index, and its name when there is one."""
    return f"column {j} ({names[j]!r})" if names is not None else f"column {j}"


def _summary(info):
    """Per column: distinct observed values, observed rows, rows at level 0 and at level <= 1.

    ``info`` is :func:`~hclstat.kernels.kendall.column_order` of the table.
    """
    _, dense, n_obs, n_levels = info
    at_min, at_most_one = getattr(info, "at_min", None), getattr(info, "at_most_one", None)
    if at_min is None or at_most_one is None:  # a plain tuple: count from the dense ranks
        at_min = (dense == 0).sum(axis=1)
        at_most_one = ((dense >= 0) & (dense <= 1)).sum(axis=1)
    return n_levels, n_obs, at_min, at_most_one


def _require_two_levels(n_levels, names):
    bad = np.flatnonzero(n_levels < 2)
    if bad.size:
        where = ", ".join(f"{_column(j, names)}: {n_levels[j]}" for j in bad)
        raise ValueError(
            f"x: columns need at least 2 distinct observed values, got {where}; "
            "drop the constant (or entirely missing) columns"
        )


def _inferred(n_levels, n_obs, at_min, truncated_min_fraction):
    types = np.full(n_levels.shape, "continuous", dtype="<U10")
    types[n_levels == 2] = "binary"
    types[n_levels == 3] = "ternary"
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = at_min / n_obs
    types[(n_levels > 3) & (fraction >= truncated_min_fraction)] = "truncated"
    return types


def _warn_few_distinct(types, n_levels, names, stacklevel):
    few = np.flatnonzero((types == "continuous") & (n_levels > 3) & (n_levels <= FEW_DISTINCT))
    if few.size:
        where = ", ".join(f"{_column(j, names)}: {n_levels[j]}" for j in few)
        warnings.warn(
            f"columns typed 'continuous' with only {4}-{FEW_DISTINCT} distinct observed values ({where}): "
            "their heavy ties attenuate the rank statistics, so the latent correlations of these columns "
            "are biased towards zero; consider coarsening them to binary/ternary or typing them explicitly",
            EstimationWarning,
            stacklevel=stacklevel,
        )


def infer_types(x, *, names=None, truncated_min_fraction=0.05, return_report=False):
    """The type of each column, read off its observed values.

    Two distinct observed values give ``"binary"``, three ``"ternary"``; more than
    three with at least ``truncated_min_fraction`` of the observed rows at the
    column's minimum give ``"truncated"``; otherwise ``"continuous"``. An
    :class:`~hclstat.exceptions.EstimationWarning` names the continuous columns
    with 4 to 10 distinct values (their ties attenuate the rank statistics).

    Parameters
    ----------
    x : array-like of shape (n_samples, n_columns)
        The table; NaN is missing and ignored. A DataFrame gives its column names.
    names : sequence of str, optional
        Column names for the report and the messages.
    truncated_min_fraction : float in (0, 1]
        Smallest share of the observed rows at the minimum that makes a point mass.
    return_report : bool
        Also return a DataFrame with, per column: ``column``, ``type``,
        ``n_distinct``, ``n_observed``, ``fraction_at_minimum``.

    Returns
    -------
    types : ndarray of shape (n_columns,), str
    report : pandas.DataFrame, only when ``return_report``

    Raises
    ------
    ValueError
        If a column has fewer than two distinct observed values (naming it).
    """
    if not 0.0 < truncated_min_fraction <= 1.0:
        raise ValueError(f"truncated_min_fraction: expected a share in (0, 1], got {truncated_min_fraction!r}")
    arr, names = _as_matrix(x, names)
    n_levels, n_obs, at_min, _ = _summary(column_order(arr))
    _require_two_levels(n_levels, names)
    types = _inferred(n_levels, n_obs, at_min, truncated_min_fraction)
    _warn_few_distinct(types, n_levels, names, stacklevel=3)
    if not return_report:
        return types
    import pandas as pd

    report = pd.DataFrame(
        {
            "column": names if names is not None else np.arange(arr.shape[1]),
            "type": types,
            "n_distinct": n_levels,
            "n_observed": n_obs,
            "fraction_at_minimum": at_min / n_obs,
        }
    )
    return types, report


def _requested(types, p):
    """The requested types as an array of ``p`` codes (``"auto"`` allowed)."""
    allowed = COLUMN_TYPES + (_AUTO,)
    if types is None:
        return np.full(p, _AUTO, dtype="<U10")
    if isinstance(types, str):
        if types not in allowed:
            raise ValueError(f"types: expected one of {allowed} or a sequence of them, got {types!r}")
        return np.full(p, types, dtype="<U10")
    types = list(types)
    if len(types) != p:
        raise ValueError(f"types: expected {p} entries (one per column of x), got {len(types)}")
    bad = [(j, t) for j, t in enumerate(types) if not isinstance(t, str) or t not in allowed]
    if bad:
        raise ValueError(f"types: expected entries in {allowed}, got {bad[0][1]!r} at column {bad[0][0]}")
    return np.asarray(types, dtype="<U10")


def _mismatch(t, d, at_min):
    """Why an explicit type ``t`` does not fit a column with ``d`` distinct values, or None."""
    if t == "binary" and d != 2:
        return f"has {d} distinct observed values, and a binary column needs exactly 2"
    if t == "ternary" and d != 3:
        return f"has {d} distinct observed values, and a ternary column needs exactly 3"
    if t in ("truncated", "continuous") and d <= 3:
        exact = "binary" if d == 2 else "ternary"
        return f"has only {d} distinct observed values, which the {exact} type describes exactly"
    if t == "truncated" and at_min < 2:
        return "has a single observed row at its minimum (no point mass there)"
    return None


def check_types(types, x, *, names=None, truncated_min_fraction=0.05, order=None):
    """Validated column types: given, inferred, or a mix of both.

    Parameters
    ----------
    types : None, str or sequence of str
        ``None`` or ``"auto"`` infers every column (:func:`infer_types`); one code of
        :data:`COLUMN_TYPES` applies to all columns; a sequence gives one code per
        column, ``"auto"`` entries inferred.
    x : array-like of shape (n_samples, n_columns)
        The table (NaN missing).
    names : sequence of str, optional
        Column names for the messages (a DataFrame gives its own).
    truncated_min_fraction : float
        As in :func:`infer_types`, for the inferred columns.
    order : tuple, optional
        :func:`~hclstat.kernels.kendall.column_order` of ``x`` when already
        computed (one sort per column serves every function of this module and
        of :mod:`~hclstat.moments.ranks`).

    Returns
    -------
    ndarray of shape (n_columns,), str

    Raises
    ------
    ValueError
        Naming the column, when a given type does not fit its data: ``"binary"``
        without exactly 2 distinct observed values, ``"ternary"`` without exactly 3,
        ``"continuous"``/``"truncated"`` with 3 or fewer, ``"truncated"`` with a
        single row at its minimum; and for columns with fewer than 2 distinct values.
    """
    arr, names = _as_matrix(x, names)
    return _checked_types(types, names, column_order(arr) if order is None else order, truncated_min_fraction)


def _checked_types(types, names, info, truncated_min_fraction=0.05):
    """:func:`check_types` on a table already sorted by :func:`column_order`."""
    n_levels, n_obs, at_min, _ = _summary(info)
    requested = _requested(types, n_levels.size)
    _require_two_levels(n_levels, names)
    inferred = _inferred(n_levels, n_obs, at_min, truncated_min_fraction)
    auto = requested == _AUTO
    out = np.where(auto, inferred, requested)
    for j in np.flatnonzero(~auto):
        why = _mismatch(out[j], n_levels[j], at_min[j])
        if why is not None:
            raise ValueError(
                f"types: {_column(j, names)} is typed {str(out[j])!r} but {why}; "
                f"type it {str(inferred[j])!r} (what its data show) or 'auto'"
            )
    _warn_few_distinct(out, n_levels, names, stacklevel=4)
    return out


def zratios(x, types, *, names=None, order=None):
    """Level proportions per column, as ``latentcor`` lays them out.

    Returns
    -------
    ndarray of shape (2, n_columns)
        binary and truncated: ``(share of observed rows at the minimum, nan)``;
        ternary: ``(P(level 0), P(level 0) + P(level 1))``; continuous: ``(nan, nan)``.
        Shares are over each column's observed rows. ``types`` is checked with
        :func:`check_types` (so ``"auto"`` works). ``order`` as in :func:`check_types`.
    """
    arr, names = _as_matrix(x, names)
    info = column_order(arr) if order is None else order
    types = _checked_types(types, names, info)
    _, n_obs, at_min, at_most_one = _summary(info)
    out = np.full((2, arr.shape[1]), np.nan)
    levelled = types != "continuous"
    out[0, levelled] = at_min[levelled] / n_obs[levelled]
    ternary = types == "ternary"
    out[1, ternary] = at_most_one[ternary] / n_obs[ternary]
    return out
