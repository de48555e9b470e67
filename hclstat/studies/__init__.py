"""Declarative simulation studies: configs, a resumable runner, tidy tables, figures.

A study is a TOML file (schema in ``simulations/README.md``)::

    [study]
    name = "d1_pattern"
    replications = 20
    seed = 20240611
    methods = ["hcl", "shared_private"]

    [grid]                       # every value is a list of levels; cartesian product
    n = [250, 500, 1000]
    loading_scale = [1.0, 0.3, 0.15]

    [model]                      # fixed values
    hierarchy = "D1"

:func:`run_study` expands the grid into *cells*, simulates each
``(cell, replication)`` once from its own seed, fits every method on the same
data, scores them against the truth and appends one checkpoint file per finished
``(cell, replication)``; an interrupted study resumes where it stopped and ends
with the rows an uninterrupted run gives, bit for bit. Work runs in process
(``workers=1``), on a local dask cluster (``workers > 1``) or on any dask
scheduler (``scheduler="tcp://..."``).

Seeds: replication ``r`` of cell ``c`` uses
``SeedSequence(seed, spawn_key=(c, r))`` -- the child that
``SeedSequence(seed).spawn(...)[c].spawn(...)[r]`` would give -- so its numbers do
not depend on the order in which tasks run, on the worker, or on the other cells.

A fit that fails is recorded, not fatal: its row has ``metric = "error"``,
``summary.csv`` counts it in ``n_errors``, :func:`fit_failures` lists the
failed fits and :func:`run_study` warns (``EstimationWarning``) with their
number and the first error.

Modules: :mod:`~hclstat.studies.cells` (cell parameters, design defaults, the
true hierarchy of a cell), :mod:`~hclstat.studies.config` (the TOML schema),
:mod:`~hclstat.studies.methods` (the method registry),
:mod:`~hclstat.studies.runner` (replications, :func:`run_study`, dask),
:mod:`~hclstat.studies.storage` (atomic files, checkpoints, result tables),
:mod:`~hclstat.studies.figures` (:func:`plot_study`).
"""

from __future__ import annotations

# _save, _atomic_write_bytes, _atomic_write_text, cell_hierarchy and replication_seed are
# also the paper checks' (hclstat.checks imports them from here)
from .cells import DESIGNS, PARAMETERS, StudyConfigError, cell_hierarchy
from .config import DEFAULT_METRICS, METRICS, StudyConfig, load_config
from .figures import _save, plot_study
from .methods import (
    MethodContext,
    MethodSpec,
    MethodUnavailableError,
    available_methods,
    check_methods,
    register_method,
    unregister_method,
)
from .runner import replication_seed, run_replication, run_study, simulate_replication
from .storage import COLUMNS, _atomic_write_bytes, _atomic_write_text, count_fits, fit_failures, load_results, \
    summarize_results

__all__ = [
    "StudyConfig",
    "StudyConfigError",
    "MethodUnavailableError",
    "MethodContext",
    "MethodSpec",
    "load_config",
    "register_method",
    "unregister_method",
    "available_methods",
    "check_methods",
    "replication_seed",
    "cell_hierarchy",
    "simulate_replication",
    "run_replication",
    "run_study",
    "load_results",
    "summarize_results",
    "fit_failures",
    "count_fits",
    "plot_study",
    "PARAMETERS",
    "METRICS",
    "DEFAULT_METRICS",
    "DESIGNS",
    "COLUMNS",
]
