"""Writing results: a fitted representation as plain files, result directories
moved into place only on success, and reading a hierarchy file back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..hierarchy import Hierarchy
from .read import _first_line

__all__ = [
    "RUN_FILE",
    "atomic_directory",
    "check_output_target",
    "is_hclstat_output",
    "read_hierarchy",
    "structure_label",
    "write_representation",
    "write_scores_chunked",
]

#: file written into every output directory; marks it as replaceable by a later run
RUN_FILE = "run.json"


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
        # mkdtemp makes it private; give it the mode a new directory gets here, read off a probe
        # (setting the process-wide umask to read it would race with other threads creating files)
        probe = tmp / ".hclstat-mode-probe"
        probe.mkdir(mode=0o777)
        mode = probe.stat().st_mode & 0o777
        probe.rmdir()
        os.chmod(tmp, mode)
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
