"""Running a study: seeds, one replication (simulate, fit every method, score), the resumable runner, dask."""

from __future__ import annotations

import math
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..exceptions import EstimationWarning
from ..metrics import block_errors, loading_errors, pattern_scores
from ..model import HierarchicalModel
from .cells import DEFAULT_SINGULAR_VALUES, cell_hierarchy, format_param, is_int
from .config import load_config
from .figures import plot_study
from .methods import MethodContext, check_methods, factory_of
from .storage import (
    checkpoint_path,
    count_fits,
    fit_failures,
    make_table,
    read_checkpoint,
    summarize_results,
    write_checkpoint,
    write_csv,
    write_manifest,
)

__all__ = ["replication_seed", "simulate_replication", "run_replication", "run_study", "FAILED_FITS_MESSAGE"]

_ERROR_CHARS = 500
#: a regular expression matching the start of :func:`run_study`'s warning about failed fits
FAILED_FITS_MESSAGE = r"\d+ of \d+ fits of the study failed"


def replication_seed(base_seed, cell, replication):
    """The 63-bit seed of replication ``replication`` of cell ``cell``.

    Derived from ``SeedSequence(base_seed, spawn_key=(cell, replication))``;
    it alone reproduces the replication (see :func:`simulate_replication`).
    """
    ss = np.random.SeedSequence(base_seed, spawn_key=(int(cell), int(replication)))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _method_seed(seed, label):
    # keyed by the label, so adding a method leaves the others' seeds alone
    ss = np.random.SeedSequence(seed, spawn_key=(2, zlib.crc32(label.encode())))
    return int(ss.generate_state(1, np.uint32)[0])


def _simulate(params, seed, hierarchies):
    model_ss, sample_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(model_ss)
    h = cell_hierarchy(params, hierarchies, random_state=rng)
    model = HierarchicalModel.random(
        h,
        singular_values=params["singular_values"] or DEFAULT_SINGULAR_VALUES,
        loading_scale=params["loading_scale"],
        noise=params["noise"],
        noise_model=params["noise_model"],
        latent=params["latent"],
        latent_correlation=params["latent_correlation"],
        random_state=rng,
    )
    views, _ = model.sample(params["n"], random_state=np.random.default_rng(sample_ss))
    return model, views


def simulate_replication(config, cell, replication):
    """Re-create the truth and data of one replication: ``(model, views)``."""
    config = load_config(config)
    if not 0 <= cell < len(config.cells):
        raise ValueError(f"cell: expected an index in [0, {len(config.cells)}), got {cell!r}")
    seed = replication_seed(config.seed, cell, replication)
    return _simulate(config.cells[cell], seed, config.hierarchies)


def _short_error(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _metric_rows(estimator, model, group):
    """``(metric, structure, modality, level, value)`` tuples of one metric group."""
    h = model.hierarchy
    if group == "pattern":
        sc = pattern_scores(estimator.hierarchy_, h)
        rows = [(name, None, None, None, float(sc[key])) for name, key in (
            ("pattern_exact", "exact"), ("structure_precision", "structure_precision"),
            ("structure_recall", "structure_recall"), ("support_hamming", "support_hamming"))]
        return rows + [("rank_error", h.name(s), None, h.level(s), float(e)) for s, e in sc["rank_errors"].items()]
    if group == "loading_sin_theta":
        errs = loading_errors(estimator.loadings_, model.loadings)
    else:
        errs = block_errors(estimator.loadings_, model.loadings, h.dims, relative=group == "block_error_relative")
    order = {s: i for i, s in enumerate(h.structures)}
    mod = {m: i for i, m in enumerate(h.modalities)}
    keys = sorted(errs, key=lambda sm: (order.get(sm[0], len(order)), mod.get(sm[1], 0)))
    return [(group, h.name(s), m, h.level(s), float(errs[(s, m)])) for s, m in keys]


def _evaluate(estimator, model, metrics):
    """Yield ``(metric, structure, modality, level, value, error)`` tuples."""
    for group in metrics:
        if group == "fit_time":
            continue
        try:
            rows = _metric_rows(estimator, model, group)
        except Exception as exc:  # a broken metric must not hide the others
            yield ("error", None, None, None, math.nan, f"metric {group}: {_short_error(exc)}")
            continue
        for r in rows:
            yield r + (None,)


def run_replication(params, cell, replication, seed, methods, metrics, hierarchies=None, study=""):
    """Simulate one replication and score every method on the same data.

    Parameters
    ----------
    params : dict
        Resolved cell parameters.
    cell, replication, seed : int
    methods : sequence of (label, factory, options)
    metrics : sequence of str
    hierarchies : dict, optional
        Explicit hierarchy specs by name.

    Returns
    -------
    list of dict
        Rows of the tidy table (keys :data:`COLUMNS`). A method that fails
        gives one row with ``metric = "error"`` and the message (``"fit: ..."``,
        or ``"simulation: ..."`` for every method when the data could not be
        drawn); the others go on.
    """
    base = {"cell": int(cell), "replication": int(replication), "seed": int(seed)}
    cellcols = {k: (format_param(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    rows = []

    def add(method, metric, structure, modality, level, value, error=None):
        row = dict(base, method=method, metric=metric, structure=structure, modality=modality,
                   level=level, value=value, error=error)
        row.update(cellcols)
        row["study"] = study
        rows.append(row)

    try:
        model, views = _simulate(params, seed, hierarchies or {})
    except Exception as exc:
        for label, _, _ in methods:
            add(label, "error", None, None, None, math.nan, f"simulation: {_short_error(exc)}")
        return rows
    for label, factory, options in methods:
        ctx = MethodContext(model=model, cell=dict(params), random_state=_method_seed(seed, label))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                estimator = factory(ctx, **options)
                t0 = time.perf_counter()
                estimator.fit(views)
                elapsed = time.perf_counter() - t0
            except Exception as exc:
                add(label, "error", None, None, None, math.nan, f"fit: {_short_error(exc)}")
                continue
        if "fit_time" in metrics:
            add(label, "fit_time", None, None, None, float(elapsed))
        if caught:
            first = caught[0]
            add(label, "warnings", None, None, None, float(len(caught)),
                f"{first.category.__name__}: {str(first.message)[:_ERROR_CHARS]}")
        for metric, s, m, level, value, error in _evaluate(estimator, model, metrics):
            add(label, metric, s, m, level, value, error)
    return rows


def _check_run_args(workers, max_cells, scheduler):
    if workers is not None and (not is_int(workers) or workers < 1):
        raise ValueError(f"workers: expected a positive integer or None, got {workers!r}")
    if max_cells is not None and (not is_int(max_cells) or max_cells < 1):
        raise ValueError(f"max_cells: expected a positive integer or None, got {max_cells!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler: expected an address str, got {type(scheduler).__name__}")


def run_study(config, out, *, scheduler=None, workers=None, quiet=False, max_cells=None, plot=True,
              on_replication=None):
    """Run (or resume) a simulation study.

    Parameters
    ----------
    config : path, dict or StudyConfig
        A TOML study file (schema in ``simulations/README.md``) or its parsed form.
    out : path
        Output directory. It receives ``study.json`` (the normalised config and
        its fingerprint), ``checkpoints/`` (one JSON file per finished
        ``(cell, replication)``), ``results.csv`` (the tidy table),
        ``summary.csv`` (:func:`summarize_results`, with ``n_errors``) and
        ``figures/``. Rerunning on the same directory skips finished
        replications; a different configuration is refused.
    scheduler : str, optional
        Address of a running dask scheduler (``"tcp://host:8786"``); tasks run on
        its workers.
    workers : int, optional
        Without ``scheduler``: ``1`` or ``None`` runs in this process; ``k > 1``
        starts a local dask cluster of ``k`` single-threaded worker processes.
    quiet : bool
        No progress bar.
    max_cells : int, optional
        Run only the first ``max_cells`` cells of the grid (a quick mode); the
        table holds those cells only.
    plot : bool
        Write the standard figures (:func:`plot_study`) into ``out/figures``.
    on_replication : callable, optional
        ``on_replication(cell, replication, rows)`` after each replication's
        checkpoint is written (progress hooks; an exception it raises stops the
        study, leaving the finished checkpoints in place).

    Returns
    -------
    pandas.DataFrame
        The tidy table: one row per (cell, replication, method, metric,
        structure, modality), columns :data:`COLUMNS`.

    Warns
    -----
    EstimationWarning
        When some fits failed (their rows are ``metric = "error"``; see
        :func:`fit_failures`): how many, and the first error.
    """
    config = load_config(config)
    _check_run_args(workers, max_cells, scheduler)
    check_methods(config.methods)
    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_manifest(config, out)
    fp = config.fingerprint

    n_cells = len(config.cells) if max_cells is None else min(max_cells, len(config.cells))
    tasks = [(c, r) for c in range(n_cells) for r in range(config.replications)]
    results = {}
    for c, r in tasks:
        rows = read_checkpoint(checkpoint_path(out, c, r), fp)
        if rows is not None:
            results[(c, r)] = rows
    pending = [t for t in tasks if t not in results]
    methods = [(m.label, factory_of(m.name), dict(m.options)) for m in config.methods]

    def payload(c, r):
        return (config.cells[c], c, r, replication_seed(config.seed, c, r), methods,
                config.metrics, config.hierarchies, config.name)

    from tqdm import tqdm

    failures = []
    with tqdm(total=len(tasks), initial=len(results), disable=quiet, desc=config.name,
              unit="rep", file=sys.stderr, dynamic_ncols=True) as bar:

        def finished(c, r, rows):
            write_checkpoint(out, fp, c, r, replication_seed(config.seed, c, r), rows)
            results[(c, r)] = rows
            bar.update(1)
            if on_replication is not None:
                on_replication(c, r, rows)

        if pending and scheduler is None and (workers is None or workers == 1):
            for c, r in pending:
                finished(c, r, run_replication(*payload(c, r)))
        elif pending:
            if scheduler is not None and workers not in (None, 1):
                warnings.warn("workers is ignored when a scheduler address is given", stacklevel=2)
            failures = _run_distributed(pending, payload, finished, scheduler, workers)

    table = make_table([row for t in tasks if t in results for row in results[t]])
    write_csv(table, out / "results.csv")
    # written even when every fit failed: its n_errors is where a failure shows
    write_csv(summarize_results(table), out / "summary.csv")
    if failures:
        lines = "; ".join(f"cell {c} replication {r}: {msg}" for c, r, msg in failures[:5])
        raise RuntimeError(
            f"{len(failures)} replication(s) did not finish ({lines}); the others are saved in "
            f"{str(out)!r}; rerun the same command to retry them"
        )
    _warn_failed_fits(table)
    if plot:
        plot_study(table, out / "figures")
    return table


def _warn_failed_fits(table):
    failed = fit_failures(table)
    if failed.empty:
        return
    first = failed.iloc[0]
    warnings.warn(
        f"{len(failed)} of {count_fits(table)} fits of the study failed (their rows have "
        f"metric 'error'); first, cell {first['cell']} replication {first['replication']} method "
        f"{first['method']!r}: {first['error']}",
        EstimationWarning,
        stacklevel=3,
    )


def _run_distributed(pending, payload, finished, scheduler, workers):
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    failures = []
    try:
        futures = {}
        for c, r in pending:
            args = payload(c, r)
            fut = client.submit(run_replication, *args, key=f"hclstat-replication-{args[3]:x}-{c}-{r}", pure=False)
            futures[fut] = (c, r)
        for fut in as_completed(futures):
            c, r = futures[fut]
            try:
                rows = fut.result()
            except Exception as exc:  # a lost worker, not a method failure (those are rows)
                failures.append((c, r, _short_error(exc)))
                continue
            finally:
                fut.release()
            finished(c, r, rows)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return failures
