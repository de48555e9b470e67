"""Per-modality preprocessing of tabular input.

Each modality declares its own steps (:class:`Preprocessing`); a
:class:`ModalityPreprocessor` learns them on one table and applies the same
transform to new rows. The steps, in order:

1. non-numeric columns: one-hot encoded when ``onehot`` is requested, an error
   naming them otherwise;
2. ``log1p`` of the numeric columns (counts), which must be non-negative;
3. columns with no observed value are an error; constant columns (a single
   distinct observed value) are dropped with a :class:`DataWarning` naming them;
4. centring (subtract the column mean) and scaling (divide by the column
   standard deviation, ``ddof=1``), both over observed entries, both on by
   default.

Missing entries (NaN) are carried through untouched: they are never imputed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

__all__ = ["DataWarning", "Preprocessing", "ModalityPreprocessor", "PREPROCESSING_TOKENS", "column_mean_std",
           "out_of_range_error"]

#: tokens accepted by :meth:`Preprocessing.parse` and what each one sets
PREPROCESSING_TOKENS = {
    "center": ("center", True),
    "nocenter": ("center", False),
    "scale": ("scale", True),
    "noscale": ("scale", False),
    "log1p": ("log1p", True),
    "onehot": ("onehot", True),
    "keepconstant": ("drop_constant", False),
    "raw": None,  # no centring, no scaling
}


class DataWarning(UserWarning):
    """The input was changed in a way the user should know about (e.g. a column dropped)."""


def _names(cols, limit=10):
    cols = [str(c) for c in cols]
    more = f" and {len(cols) - limit} more" if len(cols) > limit else ""
    return f"{cols[:limit]}{more}"


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing declared for one modality.

    Parameters
    ----------
    center : bool
        Subtract each column's mean (over observed entries). Default True.
    scale : bool
        Divide each column by its standard deviation (``ddof=1``). Default True.
    log1p : bool
        Apply ``log(1 + x)`` to the numeric columns first (for counts).
    onehot : bool
        One-hot encode the non-numeric columns (reference coding: the first
        level in sorted order is dropped, so the indicators are not collinear).
        Without it a non-numeric column is an error.
    drop_constant : bool
        Drop constant columns with a warning (default); when False they are an error.
    """

    center: bool = True
    scale: bool = True
    log1p: bool = False
    onehot: bool = False
    drop_constant: bool = True

    @classmethod
    def parse(cls, text):
        """Build from a comma-separated list of tokens, e.g. ``"log1p,noscale"``.

        Tokens: ``center``/``nocenter``, ``scale``/``noscale``, ``log1p``,
        ``onehot``, ``keepconstant``, ``raw`` (= ``nocenter,noscale``).
        Unlisted steps keep their defaults.
        """
        if isinstance(text, cls):
            return text
        if not isinstance(text, str):
            raise TypeError(f"preprocessing: expected a string of tokens, got {type(text).__name__}")
        values = {f.name: f.default for f in fields(cls)}
        for token in (t.strip().lower().replace("-", "").replace("_", "") for t in text.split(",")):
            if not token:
                continue
            if token not in PREPROCESSING_TOKENS:
                raise ValueError(
                    f"preprocessing: unknown step {token!r}; expected some of {sorted(PREPROCESSING_TOKENS)}"
                )
            if token == "raw":
                values.update(center=False, scale=False)
            else:
                key, value = PREPROCESSING_TOKENS[token]
                values[key] = value
        return cls(**values)

    def describe(self):
        """Short text such as ``"log1p, center, scale"``."""
        steps = [name for name in ("onehot", "log1p", "center", "scale") if getattr(self, name)]
        if not self.drop_constant:
            steps.append("keep constant")
        return ", ".join(steps) if steps else "raw (no centring or scaling)"


def check_non_numeric(name, spec, columns):
    """Raise unless ``spec`` one-hot encodes the non-numeric ``columns`` of modality ``name`` (or there are none)."""
    if columns and not spec.onehot:
        raise ValueError(
            f"modality {name!r}: non-numeric columns {_names(columns)}; request one-hot "
            f"encoding for this modality (CLI: --prep {name}=onehot) or drop them"
        )


def check_columns(name, spec, columns, *, all_nan, constant, stacklevel):
    """The constant columns to drop, after the checks of step 3 (see the module docstring).

    Columns with no observed value are an error; constant ones are dropped
    with a :class:`DataWarning` (raised ``stacklevel`` frames above this
    function's caller), or an error when ``spec.drop_constant`` is off; so is
    dropping every column. Shared by the in-memory and the chunked fit.
    """
    if all_nan:
        raise ValueError(
            f"modality {name!r}: columns {_names(all_nan)} have no observed value (all NaN "
            "in the rows used); drop them"
        )
    if constant:
        if not spec.drop_constant:
            raise ValueError(f"modality {name!r}: constant columns {_names(constant)}; drop them")
        warnings.warn(
            f"modality {name!r}: dropped {len(constant)} constant column(s) {_names(constant)}",
            DataWarning,
            stacklevel=stacklevel + 1,
        )
    if len(constant) == len(columns):
        raise ValueError(f"modality {name!r}: no column is left after dropping constant columns")
    return list(constant)


class ModalityPreprocessor:
    """Learn and apply the :class:`Preprocessing` of one modality.

    Parameters
    ----------
    spec : Preprocessing or str
        The steps (a string is parsed by :meth:`Preprocessing.parse`).
    name : str
        Modality name, used in messages.

    Attributes
    ----------
    columns_in_ : list of str
        Input columns seen in :meth:`fit`.
    categories_ : dict of str to list of str
        Levels of each one-hot encoded column (the first is the dropped reference).
    dropped_constant_ : list of str
        Output columns dropped because they were constant.
    means_, scales_ : pandas.Series
        Centring and scaling applied to each output column (0 and 1 when off).
    feature_names_out_ : list of str
    """

    def __init__(self, spec="", name="view"):
        self.spec = Preprocessing.parse(spec)
        self.name = name

    # ------------------------------------------------------------------ fit
    def fit(self, table):
        """Learn categories, constant columns, means and scales from ``table``."""
        self.fit_transform(table)
        return self

    def fit_transform(self, table):
        """Learn the transform on ``table`` and return the transformed table.

        Parameters
        ----------
        table : pandas.DataFrame of shape (n_samples, n_columns)

        Returns
        -------
        pandas.DataFrame of float64, same index
        """
        table = self._check_frame(table)
        self.columns_in_ = [str(c) for c in table.columns]
        nonnum = [c for c in table.columns if not _is_numeric(table[c])]
        check_non_numeric(self.name, self.spec, nonnum)
        self.categories_ = {}
        for c in nonnum:
            levels = table[c].dropna().astype(str).unique().tolist()
            self.categories_[str(c)] = sorted(levels)
        out = self._encode(table)
        nunique = out.nunique(dropna=True)
        constant = check_columns(
            self.name,
            self.spec,
            [str(c) for c in out.columns],
            all_nan=[c for c in out.columns if out[c].notna().sum() == 0],
            constant=[str(c) for c in out.columns if nunique[c] <= 1],
            stacklevel=2,
        )
        out = out.drop(columns=constant)
        self.dropped_constant_ = constant
        means, std = column_mean_std(out, self.name)
        self.means_ = means if self.spec.center else pd.Series(0.0, index=out.columns)
        self.scales_ = std if self.spec.scale else pd.Series(1.0, index=out.columns)
        self.feature_names_out_ = [str(c) for c in out.columns]
        return self._standardise(out)

    # ------------------------------------------------------------ transform
    def transform(self, table):
        """Apply the learned transform to new rows (same input columns as in fit)."""
        if not hasattr(self, "feature_names_out_"):
            raise RuntimeError(f"modality {self.name!r}: the preprocessor is not fitted; call fit first")
        table = self._check_frame(table)
        cols = [str(c) for c in table.columns]
        missing = [c for c in self.columns_in_ if c not in cols]
        if missing:
            raise ValueError(f"modality {self.name!r}: columns {_names(missing)} seen in fit are missing")
        table = table.set_axis(cols, axis=1)[self.columns_in_]
        out = self._encode(table)[self.feature_names_out_]
        return self._standardise(out)

    # -------------------------------------------------------------- helpers
    def _check_frame(self, table):
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"modality {self.name!r}: expected a pandas DataFrame, got {type(table).__name__}")
        if table.shape[0] == 0:
            raise ValueError(f"modality {self.name!r}: the table has no rows")
        if table.shape[1] == 0:
            raise ValueError(f"modality {self.name!r}: the table has no data columns")
        dup = table.columns[table.columns.astype(str).duplicated()].astype(str).unique().tolist()
        if dup:
            raise ValueError(f"modality {self.name!r}: duplicated column names {_names(dup)}")
        return table

    def _encode(self, table):
        """Numeric float64 frame: one-hot indicators, log1p, inf check."""
        parts = {}
        for c in table.columns:
            key = str(c)
            col = table[c]
            if key in self.categories_:
                levels = self.categories_[key]
                observed = col.notna().to_numpy()
                as_str = col.astype(object).where(col.notna(), None)
                unknown = sorted({str(v) for v in as_str[observed]} - set(levels))
                if unknown:
                    raise ValueError(
                        f"modality {self.name!r}: column {key!r} has levels {_names(unknown)} not seen in fit"
                    )
                values = np.array([str(v) if ok else "" for v, ok in zip(as_str, observed)], dtype=object)
                # a single observed level gives one constant indicator, dropped (with a warning) later
                for level in levels[1:] if len(levels) > 1 else levels:
                    ind = (values == level).astype(np.float64)
                    ind[~observed] = np.nan
                    parts[f"{key}={level}"] = ind
                continue
            if not _is_numeric(col):
                raise ValueError(f"modality {self.name!r}: column {key!r} is not numeric")
            x = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            inf = np.isinf(x)
            if inf.any():
                i = int(np.flatnonzero(inf)[0])
                raise ValueError(
                    f"modality {self.name!r}: infinite value in column {key!r} at row {_row(table.index[i])!r}; "
                    "remove or replace infinite entries"
                )
            if self.spec.log1p:
                neg = x < 0
                if neg.any():
                    i = int(np.flatnonzero(neg)[0])
                    raise ValueError(
                        f"modality {self.name!r}: log1p needs non-negative counts, column {key!r} has "
                        f"{float(x[i])!r} at row {_row(table.index[i])!r}"
                    )
                x = np.log1p(x)
            parts[key] = x
        return pd.DataFrame(parts, index=table.index)

    def _standardise(self, out):
        scales = self.scales_.where(self.scales_ > 0, 1.0)
        return ((out - self.means_) / scales).astype(np.float64)

    def report(self):
        """``dict`` describing what was done (JSON-serialisable)."""
        return {
            "steps": self.spec.describe(),
            "columns_in": len(self.columns_in_),
            "columns_out": len(self.feature_names_out_),
            "one_hot": {c: {"levels": lv, "reference": lv[0] if lv else None} for c, lv in self.categories_.items()},
            "dropped_constant": list(self.dropped_constant_),
        }


def out_of_range_error(name, column, largest, *, chunked=False):
    """The error of a column whose mean or variance float64 cannot hold (values near 1e200 or 1e-200)."""
    how = "too large" if largest >= 1.0 else "too small"
    where = " merged across row chunks" if chunked else ""
    return ValueError(
        f"modality {name!r}: column {column!r} has values {how} for its mean and variance{where} in float64 "
        f"(largest |value| {largest:.3g}; their squares {'overflow' if largest >= 1.0 else 'underflow'}); "
        "rescale it (e.g. by a power of ten)"
    )


def column_mean_std(table, name="view"):
    """Column means and standard deviations (``ddof=1``) over observed entries.

    A column whose squared deviations overflow (values near 1e200) or
    underflow (near 1e-200) in float64 is divided by its largest absolute
    value first and the result scaled back, which is exact up to rounding;
    only a column that still has no finite spread is an error
    (:func:`out_of_range_error`).

    Parameters
    ----------
    table : pandas.DataFrame of float64, no constant column
    name : str
        Modality name used in messages.

    Returns
    -------
    means, stds : pandas.Series indexed by column
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        means, std = table.mean(skipna=True), table.std(skipna=True, ddof=1)
        bad = [c for c in table.columns if table[c].count() > 1
               and not (np.isfinite(means[c]) and np.isfinite(std[c]) and std[c] > 0)]
        for c in bad:
            largest = float(table[c].abs().max())
            unit = table[c] / largest
            means[c], std[c] = largest * unit.mean(), largest * unit.std(ddof=1)
            if not (np.isfinite(means[c]) and np.isfinite(std[c]) and std[c] > 0):
                raise out_of_range_error(name, str(c), largest)
    return means, std


def _row(label):
    return label.item() if isinstance(label, np.generic) else label


def _is_numeric(col):
    return pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)
