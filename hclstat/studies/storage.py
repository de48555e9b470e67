"""What a study writes: atomic files, checkpoints, the manifest and the tidy result tables.

Every file is written to a temporary file beside its target and renamed into
place (``os.replace``), so a reader never sees half a file. The temporary file
is created by ``os.open`` with mode ``0o666``, so it gets exactly the
permissions a plain ``open`` would (the process umask applies); the umask is
never read or changed, which would race with other threads creating files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import warnings
from pathlib import Path

from .cells import PARAMETERS, StudyConfigError

__all__ = ["COLUMNS", "load_results", "summarize_results", "fit_failures"]

#: columns of the tidy result table
COLUMNS = (
    ("cell", "replication", "seed", "method", "metric", "structure", "modality", "level", "value", "error")
    + PARAMETERS
    + ("study",)
)
#: how the ``error`` of a row whose fit (or simulation) failed begins; a failed metric is ``"metric ..."``
FIT_ERROR_PREFIXES = ("fit: ", "simulation: ")
CHECKPOINT_FORMAT = 1

_INT_COLUMNS = ("cell", "replication", "seed", "n", "M")
_FLOAT_COLUMNS = ("value", "rank", "structure_probability", "loading_scale", "noise", "latent_correlation")
_TEXT_COLUMNS = ("method", "metric", "structure", "modality", "level", "error", "hierarchy", "p",
                 "singular_values", "noise_model", "latent", "study")
_RUN_KEYS = ["cell", "replication", "method"]


# ------------------------------------------------------------ atomic files
@contextlib.contextmanager
def atomic_file(path, suffix=".tmp"):
    """Yield a binary file object; on success its content replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # 0o666 less the umask, as open() would give
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file beside {str(path)!r}")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_write_bytes(path, data):
    with atomic_file(path) as fh:
        fh.write(data)


def _atomic_write_text(path, text):
    _atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(table, path):
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    _atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------- checkpoints, manifest
def checkpoint_path(out, cell, replication):
    return Path(out) / "checkpoints" / f"cell{cell:05d}-rep{replication:05d}.json"


def write_checkpoint(out, fingerprint, cell, replication, seed, rows):
    doc = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "cell": cell, "replication": replication,
           "seed": seed, "rows": rows}
    _atomic_write_text(checkpoint_path(out, cell, replication), json.dumps(doc))


def read_checkpoint(path, fingerprint):
    """The rows of a checkpoint, or None when it is absent or unreadable (then it is redone)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        warnings.warn(f"checkpoint {str(path)!r} is unreadable; its replication will be redone", stacklevel=3)
        return None
    if data.get("fingerprint") != fingerprint:
        raise StudyConfigError(
            f"checkpoint {str(path)!r} belongs to a different study configuration "
            f"(fingerprint {data.get('fingerprint')} vs {fingerprint}); use another output directory"
        )
    return data["rows"]


def write_manifest(config, out):
    """``out/study.json``; refuses a directory holding another configuration's results."""
    path = Path(out) / "study.json"
    fp = config.fingerprint
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old.get("fingerprint") != fp:
            raise StudyConfigError(
                f"out: {str(out)!r} holds results of a different study configuration "
                f"(fingerprint {old.get('fingerprint')} vs {fp}); choose another output directory "
                "or delete it to start over"
            )
    from .._version import __version__

    manifest = {"fingerprint": fp, "hclstat_version": __version__, "config": config.to_dict()}
    _atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False))


# ------------------------------------------------------------------ tables
def _normalise(table):
    """One set of dtypes whether the table was built in memory or read from CSV."""
    for col in _INT_COLUMNS:
        table[col] = table[col].astype("int64")
    for col in _FLOAT_COLUMNS:
        table[col] = table[col].astype("float64")
    for col in _TEXT_COLUMNS:
        values = table[col].astype(object)
        table[col] = values.where(values.notna(), None).astype(object)
    return table


def make_table(rows):
    import pandas as pd

    return _normalise(pd.DataFrame.from_records(rows, columns=list(COLUMNS)))


def load_results(path):
    """Read a result table written by :func:`run_study` (a CSV file or the study directory).

    Floats are parsed round-trip exactly; dtypes match the table :func:`run_study` returns.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    # pandas >= 3 parses floats round-trip exactly by default and deprecates the option
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                        dtype={c: object for c in _TEXT_COLUMNS}, **exact)
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{str(path)!r} is not an hclstat study table: missing columns {missing}")
    return _normalise(table[list(COLUMNS)])


def as_table(results):
    """A result table from a DataFrame or a path to ``results.csv`` (or its directory)."""
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results
    if isinstance(results, (str, os.PathLike)):
        return load_results(results)
    raise TypeError(f"results: expected a DataFrame or a path to results.csv, got {type(results).__name__}")


def summarize_results(table):
    """Mean, standard deviation and count of each metric per cell, method, structure and modality.

    Error rows are left out of the statistics; ``n_errors`` counts them per
    cell and method. A cell and method with nothing but errors (every fit
    failed) keeps one row, ``metric = "error"`` with ``count = 0``, so that a
    failure is never missing from the summary.
    """
    import pandas as pd

    table = as_table(table)
    keys = ["cell", "method", "metric", "structure", "modality", "level"]
    params = [c for c in PARAMETERS if c in table]
    is_error = table["metric"] == "error"
    ok = table[~is_error]
    summary = (
        ok.groupby(keys + params, dropna=False, sort=True)["value"]
        .agg(mean="mean", std="std", count="count")
        .reset_index()
    )
    errors = table[is_error]
    failed_only = errors.merge(ok[["cell", "method"]].drop_duplicates(), on=["cell", "method"], how="left",
                               indicator=True)
    failed_only = failed_only[failed_only["_merge"] == "left_only"].drop_duplicates(["cell", "method"])
    if not failed_only.empty:
        extra = failed_only[keys + params].assign(mean=float("nan"), std=float("nan"), count=0)
        summary = pd.concat([summary, extra], ignore_index=True).sort_values(["cell", "method"], kind="mergesort")
    counts = errors.groupby(["cell", "method"]).size().rename("n_errors")
    summary = summary.merge(counts.reset_index(), on=["cell", "method"], how="left")
    summary["n_errors"] = summary["n_errors"].fillna(0).astype(int)
    summary["count"] = summary["count"].astype(int)
    return summary[keys + ["mean", "std", "count", "n_errors"] + params].reset_index(drop=True)


def fit_failures(table):
    """The failed fits of a study table: one row per ``(cell, replication, method)`` whose fit failed.

    A fit failed when the estimator could not be built or fitted, or the
    replication could not be simulated (its ``error`` starts with ``"fit: "``
    or ``"simulation: "``); a metric that could not be computed on a finished
    fit is not a failed fit.

    Returns
    -------
    pandas.DataFrame
        Columns ``cell, replication, method, error``, in table order.
    """
    table = as_table(table)
    errors = table["error"].astype(str)
    failed = (table["metric"] == "error") & errors.str.startswith(FIT_ERROR_PREFIXES)
    return table.loc[failed, _RUN_KEYS + ["error"]].drop_duplicates(_RUN_KEYS).reset_index(drop=True)


def count_fits(table):
    """The number of ``(cell, replication, method)`` fits a study table records."""
    return int(as_table(table)[_RUN_KEYS].drop_duplicates().shape[0])
