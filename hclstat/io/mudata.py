"""The modalities of scverse's ``MuData`` (``.h5mu``), as MOFA+ users keep them: in and out.

A ``MuData`` holds one ``AnnData`` per modality in ``.mod``, each with its
own observations: a sample a modality was not measured on is simply not
among its ``obs_names``. :func:`from_mudata` keeps it that way: each
modality becomes a DataFrame of the rows it has, indexed by its obs names,
so that :meth:`HCL.fit <hclstat.estimators.hcl.HCL.fit>` (and
:func:`~hclstat.io.load_views`) join them on those names (an outer join:
the rows a modality lacks are all-NaN there, block-missing, never imputed).
:func:`to_mudata` goes the other way: views (DataFrames, each with the rows
it has) become a ``MuData`` (optionally written to an ``.h5mu`` file), and
``from_mudata(to_mudata(views))`` gives the views back.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..preprocess import DataWarning
from .read import _check_unique_names, _show_ids

__all__ = ["from_mudata", "to_mudata", "DENSIFY_WARNING_ENTRIES", "MUDATA_SUFFIXES"]

#: a sparse modality with more entries than this is densified with a DataWarning (8 bytes each: 80 MB)
DENSIFY_WARNING_ENTRIES = 10_000_000
MUDATA_SUFFIXES = (".h5mu",)
_INSTALL = "pip install 'hclstat[mudata]'"


def _import_mudata():
    try:
        import mudata
    except ImportError as exc:
        raise ImportError(f"reading MuData needs the mudata package ({exc}); install it with {_INSTALL}") from None
    return mudata


def _load(path_or_mudata):
    """A ``MuData`` object from itself or from an ``.h5mu`` path."""
    if hasattr(path_or_mudata, "mod") and isinstance(getattr(path_or_mudata, "mod"), Mapping):
        return path_or_mudata
    if not isinstance(path_or_mudata, (str, Path)):
        raise TypeError(f"path_or_mudata: expected a MuData object or the path of an .h5mu file, got "
                        f"{type(path_or_mudata).__name__}")
    path = Path(path_or_mudata)
    if not path.exists():
        raise FileNotFoundError(f"MuData file not found: {path}")
    if not path.name.lower().endswith(MUDATA_SUFFIXES):
        raise ValueError(f"{path}: expected a MuData .h5mu file, got suffix {''.join(path.suffixes) or '(none)'!r}")
    mudata = _import_mudata()
    try:
        with warnings.catch_warnings():
            # mudata's notice about its future update() behaviour says nothing about the file
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"mudata(\.|$)")
            return mudata.read_h5mu(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as MuData: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def _matrix(name, adata, layer):
    """The modality's values as a dense float64 array (a sparse one densified, with a warning when large)."""
    if layer is None:
        x, what = adata.X, ".X"
    else:
        layers = list(adata.layers.keys())
        if layer not in layers:
            raise ValueError(f"modality {name!r}: no layer {layer!r}; its layers are {layers} (layer=None reads .X)")
        x, what = adata.layers[layer], f"layer {layer!r}"
    if x is None:
        raise ValueError(f"modality {name!r}: {what} is empty (None); give a layer that holds the values")
    if hasattr(x, "to_memory"):  # a backed (on-disk) sparse dataset
        x = x.to_memory()
    if hasattr(x, "toarray"):
        n, p = x.shape
        if n * p > DENSIFY_WARNING_ENTRIES:
            warnings.warn(
                f"modality {name!r}: densifying sparse {what} of shape ({n}, {p}) ({n * p * 8 / 1e6:.0f} MB as "
                "float64); the moments need every entry (select fewer variables to use less memory)",
                DataWarning,
                stacklevel=3,  # the caller of from_mudata
            )
        x = x.toarray()
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"modality {name!r}: {what} has non-numeric dtype {x.dtype}; expected numbers")
    return x.astype(np.float64, copy=False)


def from_mudata(path_or_mudata, *, modalities=None, layer=None):
    """The modalities of a ``MuData`` as the views of an estimator.

    Parameters
    ----------
    path_or_mudata : str, path-like or mudata.MuData
        An ``.h5mu`` file (read with ``mudata.read_h5mu``; needs the
        ``mudata`` extra: ``pip install 'hclstat[mudata]'``) or a ``MuData``.
    modalities : sequence of str, optional
        The modalities of ``.mod`` to read, in this order (default: all, in
        the order of ``.mod``).
    layer : str, optional
        Read this layer of every modality instead of ``.X``.

    Returns
    -------
    dict of str to pandas.DataFrame
        Modality name -> float64 table of shape (n_obs of the modality, n_vars),
        indexed by its obs names (index name ``"obs"``), columns its var
        names. A sample a modality lacks is not among its rows (pass the dict
        to ``HCL.fit``, which joins the modalities on their indexes). A sparse
        matrix is densified (a :class:`~hclstat.preprocess.DataWarning` above
        :data:`DENSIFY_WARNING_ENTRIES` entries).

    Raises
    ------
    ImportError
        Reading a file without the ``mudata`` package.
    ValueError
        An unknown modality or layer; duplicated obs or var names within a
        modality; non-numeric values; a MuData whose modalities share
        variables (``axis=1``) rather than observations.
    """
    mdata = _load(path_or_mudata)
    if getattr(mdata, "axis", 0) != 0:
        raise ValueError("MuData with axis=1 (modalities share variables, not observations): hclstat's modalities "
                         "are feature sets measured on the same samples (axis=0)")
    available = list(mdata.mod.keys())
    if modalities is None:
        modalities = available
    elif isinstance(modalities, str):
        modalities = [modalities]
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in available]
    if unknown or not modalities:
        raise ValueError(f"modalities: expected some of the MuData's modalities {available}, got {modalities}")
    out = {}
    for m in modalities:
        adata = mdata.mod[m]
        obs = pd.Index(adata.obs_names.astype(str), name="obs")
        dup = obs[obs.duplicated()].unique()
        if len(dup):
            raise ValueError(f"modality {m!r}: duplicated obs names {_show_ids(dup)}; each sample must appear once "
                             "per modality (the modalities are joined on them)")
        var = [str(v) for v in adata.var_names]
        _check_unique_names(var, f"modality {m!r}", "", what="var names", where="in its var")
        out[m] = pd.DataFrame(_matrix(m, adata, layer), index=obs, columns=var)
    return out


def to_mudata(views, path=None):
    """Views as a ``MuData`` (one ``AnnData`` per modality), optionally written to ``path``.

    Parameters
    ----------
    views : dict of str to pandas.DataFrame
        Modality name -> table indexed by sample IDs (its obs names), columns
        its variables. Each table holds the rows that modality has; a sample
        absent from a modality is simply not in its index (NaN entries of a
        present row stay NaN in ``.X``).
    path : str or path-like, optional
        Write the ``MuData`` to this ``.h5mu`` file (atomically: through a
        temporary file in the same directory, renamed on success).

    Returns
    -------
    mudata.MuData
    """
    if not isinstance(views, Mapping) or not views:
        raise TypeError(f"views: expected a non-empty dict of modality name -> DataFrame, got "
                        f"{type(views).__name__}")
    mudata = _import_mudata()
    import anndata

    mods = {}
    for m, table in views.items():
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"views[{m!r}]: expected a DataFrame indexed by sample IDs, got {type(table).__name__}")
        obs = pd.Index(table.index.astype(str), name=None)
        dup = obs[obs.duplicated()].unique()
        if len(dup):
            raise ValueError(f"views[{m!r}]: duplicated sample IDs {_show_ids(dup)}; each sample must appear once")
        var = [str(c) for c in table.columns]
        _check_unique_names(var, f"views[{m!r}]", "", what="column names", where="in its columns")
        try:
            x = table.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            bad = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
            raise ValueError(f"views[{m!r}]: non-numeric columns {bad[:5]}; MuData holds numbers") from None
        mods[str(m)] = anndata.AnnData(X=x, obs=pd.DataFrame(index=obs), var=pd.DataFrame(index=var))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"mudata(\.|$)")
        mdata = mudata.MuData(mods)
    if path is not None:
        _write_atomic(mdata, Path(path))
    return mdata


def _write_atomic(mdata, path):
    if not path.name.lower().endswith(MUDATA_SUFFIXES):
        raise ValueError(f"{path}: a MuData file must end in .h5mu")
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.h5mu", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"mudata(\.|$)")
            mdata.write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
