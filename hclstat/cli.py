"""Command-line interface: ``hclstat fit | predict | simulate | check | demo``.

Exit codes: 0 success, 1 failure (bad input, failed estimation, failed check),
2 usage error (unknown option, malformed ``--view``/``--prep``/``--target``).
Errors are reported as one line on stderr, never as a traceback (``--traceback``
shows it for debugging).

Results are built in a temporary directory next to ``--out`` and renamed into
place only when the whole run succeeded, so a failed run leaves no partial
result. An existing ``--out`` is replaced (after success) when it is empty or
was written by an earlier hclstat run; any other existing directory needs
``--overwrite``. ``simulate`` is the exception: the study runner writes its own
resumable checkpoints into ``--out``.

``fit`` writes into ``--out``::

    hierarchy.json                         the fitted sharing pattern (Hierarchy.to_dict)
    loadings/<structure>__<modality>.csv   feature x comp1..k_S, e.g. labs+codes__labs.csv
    scores/<structure>.csv                 ID x comp1..k_S
    noise_variances.csv                    modality, feature, noise_variance
    variance_explained.csv                 modality x structure (+ noise) shares
    missingness.csv                        missing entries per modality
    data_report.json                       join (dropped IDs per modality), preprocessing
    summary.txt                            results summary + data report
    figures/pattern.png, variance_explained.png, top_features.png
    run.json                               version, command line, seed
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._version import __version__

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "hclstat"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

#: the demo's design: reference design D1 (one global, one {a,b}, one specific per modality)
DEMO_DIMS = {"a": 50, "b": 60, "c": 70}
DEMO_RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1}
DEMO_LOADING_SCALE = 0.3


FIT_EPILOG = """\
example:
  hclstat fit --view labs=labs.csv --view codes=codes.parquet --prep codes=log1p \\
              --id patient_id --out results

output (built in a temporary directory beside DIR, moved into place on success;
an existing DIR is replaced only if empty or written by hclstat, else --overwrite):
  hierarchy.json                        fitted sharing pattern (valid --hierarchy input)
  loadings/<structure>__<modality>.csv  feature x comp1..k, e.g. labs+codes__labs.csv
  scores/<structure>.csv                ID x comp1..k
  noise_variances.csv                   modality, feature, noise_variance
  variance_explained.csv, missingness.csv, data_report.json, summary.txt, run.json
  figures/pattern.png, variance_explained.png, top_features.png

out of core (--chunks ROWS): the tables are read with dask in chunks of about
ROWS rows; preprocessing statistics, moments and scores are computed chunk by
chunk, so no table is held in memory whole. The tables must list the same rows
(or, with --id, the same IDs) in the same order; CSV files must be
uncompressed, Parquet files are read by row group.
"""


class UsageError(Exception):
    """The command line is malformed (exit code 2)."""


class CLIError(Exception):
    """The run failed for a reason the user can act on (exit code 1)."""


# ---------------------------------------------------------------- messages
class _Console:
    def __init__(self, quiet=False):
        self.quiet = quiet

    def info(self, text):
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)  # keeps an active progress bar intact

    def result(self, text):
        if not self.quiet:
            print(text)

    def stages(self, names, desc):
        """A tqdm bar over named stages (disabled when quiet or stderr is not a terminal)."""
        from tqdm.auto import tqdm

        return _Stages(tqdm(total=len(names), desc=desc, unit="step", file=sys.stderr,
                            disable=True if self.quiet else None, leave=False,
                            bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}] {postfix}"))


class _Stages:
    def __init__(self, bar):
        self.bar = bar

    def __call__(self, label):
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


@contextlib.contextmanager
def _stages(console, names, desc):
    stages = console.stages(names, desc)
    try:
        yield stages
    finally:
        stages.close()


def _one_line(exc):
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = f"key {text} not found"
    return text or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


# ----------------------------------------------------------------- parsing
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def _parse_views(items):
    """``["labs=labs.csv", ...]`` -> ``{"labs": "labs.csv", ...}`` in the given order."""
    views = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UsageError(f"--view: expected NAME=FILE, got {item!r}")
        if not _NAME.match(name):
            raise UsageError(
                f"--view: modality name {name!r} may only contain letters, digits, '_', '.' and '-'"
            )
        if name in views:
            raise UsageError(f"--view: modality {name!r} is given twice")
        views[name] = path
    if not views:
        raise UsageError("expected at least one --view NAME=FILE")
    return views


def _parse_preprocessing(items, modalities):
    from .preprocess import Preprocessing

    out = {}
    for item in items or []:
        name, sep, steps = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--prep: expected NAME=STEPS (e.g. codes=log1p,noscale), got {item!r}")
        if name not in modalities:
            raise UsageError(f"--prep: unknown modality {name!r}; the --view modalities are {list(modalities)}")
        if name in out:
            raise UsageError(f"--prep: modality {name!r} is given twice")
        try:
            out[name] = Preprocessing.parse(steps)
        except ValueError as exc:
            raise UsageError(f"--prep {name}: {exc}") from None
    return out


def _add_common(p):
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or messages (warnings and errors still go to stderr)")
    p.add_argument("--traceback", action="store_true", help="show the Python traceback of an error (for debugging)")


def _add_output(p, default=None):
    if default is None:
        p.add_argument("--out", required=True, metavar="DIR",
                       help="output directory (built in a temporary directory and moved into place on success)")
    else:
        p.add_argument("--out", default=default, metavar="DIR", help=f"output directory (default: {default})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty --out that was not written by hclstat (only after success)")


def _add_estimator(p, *, pattern=True):
    g = p.add_argument_group("estimator")
    if pattern:
        g.add_argument("--hierarchy", metavar="JSON",
                       help="sharing pattern to impose (Hierarchy JSON; 'dims' may be omitted). "
                            "Without it HCL learns the pattern")
        g.add_argument("--estimator", choices=("hcl", "sfa"), default="hcl",
                       help="hcl: structure-aware contrastive estimator (default); "
                            "sfa: structured factor analysis (needs --hierarchy)")
    g.add_argument("--max-rank", type=_positive_int, metavar="K",
                   help="largest rank considered per structure; at most the columns of every modality")
    g.add_argument("--noise-model", choices=("diagonal", "isotropic"), default="diagonal",
                   help="noise covariance per modality (default: diagonal)")
    g.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default: 0)")
    g.add_argument("--verbose", action="store_true", help="let the estimator report its iterations")


def _add_data(p):
    g = p.add_argument_group("data")
    g.add_argument("--view", action="append", metavar="NAME=FILE", required=True,
                   help="one modality table (CSV, TSV or Parquet); repeat for each modality")
    g.add_argument("--id", metavar="COLUMN",
                   help="ID column to join the tables on (default: join by row order)")
    g.add_argument("--join", choices=("inner", "outer"), default="inner",
                   help="inner: IDs present in every table (default); outer: any table, "
                        "a modality's absent rows become missing (block-missing)")
    g.add_argument("--prep", action="append", metavar="NAME=STEPS",
                   help="preprocessing of one modality, comma-separated: center/nocenter, scale/noscale, "
                        "log1p, onehot, keepconstant, raw (default: center,scale)")


def build_parser():
    """The argparse parser of the ``hclstat`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Hierarchical latent-variable models of multimodal tabular data.",
        epilog="Exit codes: 0 success, 1 failure, 2 usage error. "
               "Run 'hclstat COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="fit a hierarchical model to modality tables and write its results",
                       description="Fit HCL (or SFA) to one table per modality; write the pattern, loadings, "
                                   "scores, noise variances, a summary and figures.",
                       epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data(p)
    _add_estimator(p)
    _add_output(p)
    p.add_argument("--top", type=_positive_int, default=10,
                   help="features per structure in top_features.png (default: 10)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--chunks", type=_positive_int, metavar="ROWS",
                   help="out of core: read the tables with dask in chunks of about ROWS rows and compute the "
                        "moments chunk by chunk (tables must list the same rows/IDs in the same order; "
                        "uncompressed CSV or Parquet, read by row group). Default: read every table into memory")
    _add_common(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("predict", help="predict an outcome from the components (HCLRegressor / HCLClassifier)",
                       description="Fit a representation and a downstream model on the labelled rows; "
                                   "write predictions for every row and the model summary.")
    _add_data(p)
    p.add_argument("--target", required=True, metavar="FILE:COLUMN",
                   help="table holding the outcome and its column; rows without a value are only predicted")
    p.add_argument("--task", choices=("auto", "regression", "classification"), default="auto",
                   help="auto: classification for a non-numeric or two-valued target, else regression")
    p.add_argument("--test-fraction", type=_fraction, default=0.0, metavar="F",
                   help="hold out this share of the labelled rows to report test metrics (default: 0)")
    _add_estimator(p)
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("simulate", help="run a simulation study from a config file",
                       description="Run a study config (hclstat.studies.run_study); the runner writes "
                                   "resumable checkpoints and tidy result tables into --out.")
    p.add_argument("config", help="study config file")
    p.add_argument("--out", required=True, metavar="DIR", help="study output directory (resumable)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler address (default: a local cluster of --workers processes)")
    p.add_argument("--workers", type=_positive_int, metavar="N", default=os.cpu_count() or 1,
                   help="worker processes of the local cluster (default: the number of cores; 1 runs in this process)")
    p.add_argument("--max-cells", type=_positive_int, metavar="N",
                   help="run only the first N cells of the grid (a quick look)")
    _add_common(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("check", help="run the verification scripts (paper checks)",
                       description="Run paper checks; exit 1 when a claim fails.")
    p.add_argument("names", nargs="*", default=["all"], help="checks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="quick mode (as in CI)")
    p.add_argument("--out", default="checks_output", metavar="DIR", help="output directory (default: checks_output)")
    _add_common(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("demo", help="simulate the reference design, learn the pattern, write results and figures",
                       description="Simulate design D1 (modalities a/b/c with p = 50/60/70, one global, one {a,b} "
                                   "and one specific component per modality, loading scale 0.3, unit noise), fit "
                                   "HCL with the pattern learned, and write the fit outputs plus a comparison "
                                   "with the truth.")
    p.add_argument("--n", type=_positive_int, default=2000, help="samples (default: 2000)")
    _add_estimator(p, pattern=False)
    p.set_defaults(estimator="hcl", hierarchy=None)
    _add_output(p, default="demo_output")
    p.add_argument("--top", type=_positive_int, default=10, help="features per structure in top_features.png")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    _add_common(p)
    p.set_defaults(func=_cmd_demo)
    return parser


# ----------------------------------------------------------------- plumbing
def _import(module, attr, what):
    """``module.attr``, or a CLIError saying that this part is not installed."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise CLIError(f"{what} not available in this installation (module {module} not found)") from None
        raise
    obj = getattr(mod, attr, None)
    if obj is None:
        raise CLIError(f"{what} not available in this installation ({module} has no {attr})")
    return obj


def _construct(cls, **kwargs):
    """``cls(**kwargs)`` keeping only the keyword arguments its ``__init__`` accepts."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs)
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def _make_estimator(args, hierarchy=None):
    """The representation estimator chosen on the command line (imported lazily).

    ``hcl`` (default): :class:`hclstat.estimators.hcl.HCL`, which learns the
    pattern when ``hierarchy`` is None; ``sfa``:
    :class:`hclstat.estimators.sfa.StructuredFactorAnalysis` on a given pattern.
    """
    name = getattr(args, "estimator", "hcl")
    if name == "sfa":
        if hierarchy is None:
            raise UsageError("--estimator sfa needs --hierarchy (structured factor analysis fits a given pattern)")
        SFA = _import("hclstat.estimators.sfa", "StructuredFactorAnalysis", "the StructuredFactorAnalysis estimator is")
        return _construct(SFA, hierarchy=hierarchy, noise_model=args.noise_model, random_state=args.seed,
                          verbose=args.verbose)
    HCL = _import("hclstat.estimators.hcl", "HCL", "the HCL estimator is")
    return HCL(hierarchy=hierarchy, max_rank=args.max_rank, noise_model=args.noise_model,
               random_state=args.seed, verbose=args.verbose)


def _check_estimator_args(args):
    """Command-line combinations that are wrong whatever the data (checked before reading it)."""
    if getattr(args, "estimator", "hcl") == "sfa":
        if not getattr(args, "hierarchy", None):
            raise UsageError("--estimator sfa needs --hierarchy (structured factor analysis fits a given pattern)")
        if args.max_rank is not None:
            raise UsageError("--max-rank applies to HCL only; --estimator sfa takes the ranks from --hierarchy")


def _load_data(args, console, stages):
    from .io import load_views

    sources = _parse_views(args.view)
    prep = _parse_preprocessing(args.prep, list(sources))
    data = load_views(sources, id_column=args.id, join=args.join, preprocessing=prep,
                      progress=lambda msg: stages(msg))
    for line in data.join.lines():
        console.info(line)
    return data


def _load_data_chunked(args, console, stages):
    from .io import load_views_chunked

    sources = _parse_views(args.view)
    prep = _parse_preprocessing(args.prep, list(sources))
    data = load_views_chunked(sources, chunk_rows=args.chunks, id_column=args.id, join=args.join,
                              preprocessing=prep, progress=lambda msg: stages(msg))
    for line in data.join.lines():
        console.info(line)
    chunks = {m: len(a.chunks[0]) for m, a in data.views.items()}
    console.info(f"reading in row chunks of about {args.chunks} rows: {chunks} chunks per modality")
    return data


def _check_max_rank(max_rank, data):
    if max_rank is None:
        return
    n = data.join.n_rows
    for m, p in data.dims.items():
        allowed = min(p, n - 1)
        if max_rank > allowed:
            why = f"its {p} columns after preprocessing" if p <= n - 1 else f"{n} rows"
            raise CLIError(f"--max-rank {max_rank} exceeds what modality {m!r} allows: at most {allowed} ({why})")


def _hierarchy_from_args(args, data):
    if not getattr(args, "hierarchy", None):
        return None
    from .io import read_hierarchy

    return read_hierarchy(args.hierarchy, dims=data.dims)


def _run_record(command, argv, args, estimator=None):
    record = {
        "hclstat_version": __version__,
        "command": command,
        "argv": list(argv),
        "seed": getattr(args, "seed", None),
    }
    if estimator is not None:
        record["estimator"] = type(estimator).__name__
        record["estimator_params"] = {k: repr(v) for k, v in sorted(estimator.get_params(deep=False).items())}
    return record


def _write_fit_outputs(tmp, estimator, scores, data, args, *, extra_summary=""):
    """Everything ``fit`` writes (see the module docstring); returns the summary text.

    ``scores=None`` with out-of-core ``data`` writes the scores chunk by chunk.
    """
    from .io import RUN_FILE, ChunkedViewData, write_representation, write_scores_chunked

    if scores is None and isinstance(data, ChunkedViewData):
        write_representation(tmp, estimator, None)
        write_scores_chunked(tmp, estimator, data)
    else:
        write_representation(tmp, estimator, scores, ids=list(data.ids), id_name=data.id_name)
    results = estimator.get_results()
    results.variance_explained.to_csv(tmp / "variance_explained.csv")
    data.missingness.to_csv(tmp / "missingness.csv")
    (tmp / "data_report.json").write_text(json.dumps(data.to_dict(), indent=2) + "\n")
    summary = results.summary() + "\n\n" + data.report() + "\n"
    if extra_summary:
        summary += "\n" + extra_summary + "\n"
    (tmp / "summary.txt").write_text(summary)
    if not args.no_figures:
        from .plotting import write_figures

        write_figures(results, tmp / "figures", top=args.top)
    (tmp / RUN_FILE).write_text(json.dumps(_run_record(args.command, args.argv, args, estimator), indent=2) + "\n")
    return summary


def _fit_estimator(estimator, views, console):
    t0 = time.perf_counter()
    estimator.fit(views)
    console.info(f"fitted {type(estimator).__name__} in {time.perf_counter() - t0:.1f} s: "
                 f"{estimator.hierarchy_!r}")
    return estimator


# ----------------------------------------------------------------- commands
def _cmd_fit(args, console):
    from .io import atomic_directory, check_output_target

    _check_estimator_args(args)
    if args.chunks is not None:
        if args.join == "outer":
            raise UsageError("--chunks reads tables that list the same rows in the same order; "
                             "--join outer needs the in-memory join (drop --chunks)")
        # deprecation notices dask's readers raise about pandas say nothing about the data
        warnings.filterwarnings("ignore", module=r"dask(\.|$)")
    check_output_target(args.out, overwrite=args.overwrite)
    with _stages(console, ["read"] * len(args.view) + ["fit", "scores", "write"], "hclstat fit") as step:
        data = _load_data(args, console, step) if args.chunks is None else _load_data_chunked(args, console, step)
        hierarchy = _hierarchy_from_args(args, data)
        _check_max_rank(args.max_rank, data)
        estimator = _make_estimator(args, hierarchy)
        _fit_estimator(estimator, data.views, console)
        step("fit")
        if args.chunks is None:
            scores = estimator.transform(data.views)
        else:
            # dask views carry no column names: give the fitted model those of the files
            estimator.feature_names_ = dict(data.feature_names)
            scores = None  # written chunk by chunk below
        step("scores")
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            _write_fit_outputs(tmp, estimator, scores, data, args)
        step("write")
    console.result(f"wrote {args.out}")
    return EXIT_OK


def _parse_target(text):
    path, sep, column = text.rpartition(":")
    if not sep or not path or not column:
        raise UsageError(f"--target: expected FILE:COLUMN, got {text!r}")
    return path, column


def _read_target(text, data):
    """The outcome column aligned with the joined rows (NaN where unknown)."""
    from .io import read_table

    path, column = _parse_target(text)
    table = read_table(path, id_column=data.join.id_column, name="target")
    if column not in table.columns:
        raise CLIError(f"--target: column {column!r} not found in {path}; its columns are {list(table.columns)[:10]}")
    y = table[column]
    if data.join.id_column is None:
        if len(y) != len(data.ids):
            raise CLIError(f"--target: {path} has {len(y)} rows but the views have {len(data.ids)} "
                           "(joined by row order)")
        return y.set_axis(data.ids)
    return y.reindex(data.ids)


def _encode_target(y, task):
    """Resolve ``auto`` and encode a binary outcome as 0/1; returns (values, task, classes)."""
    import pandas as pd

    observed = y.dropna()
    numeric = pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    if task == "auto":
        task = "classification" if (not numeric or observed.nunique() == 2) else "regression"
    if task == "regression":
        if not numeric:
            raise CLIError(f"--target: regression needs a numeric outcome, column {y.name!r} is {y.dtype}")
        values = y.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            raise CLIError(f"--target: column {y.name!r} has infinite values")
        return values, task, None
    classes = sorted(observed.unique().tolist(), key=str)
    if len(classes) != 2:
        raise CLIError(f"--target: classification needs exactly 2 classes, column {y.name!r} has "
                       f"{len(classes)}: {classes[:5]}")
    values = np.full(len(y), np.nan)
    values[(y == classes[1]).to_numpy(dtype=bool, na_value=False)] = 1.0
    values[(y == classes[0]).to_numpy(dtype=bool, na_value=False)] = 0.0
    return values, task, classes


def _metrics(task, y, pred, proba=None):
    if task == "regression":
        resid = y - pred
        tss = float(np.sum((y - y.mean()) ** 2))
        return {"n": int(y.size), "mse": float(np.mean(resid**2)),
                "r2": float(1 - np.sum(resid**2) / tss) if tss > 0 else float("nan")}
    out = {"n": int(y.size), "accuracy": float(np.mean(pred == y))}
    if proba is not None:
        p = np.clip(proba, 1e-12, 1 - 1e-12)
        out["log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out


def _cmd_predict(args, console):
    import pandas as pd

    from .io import MIN_ROWS, RUN_FILE, atomic_directory, check_output_target

    _check_estimator_args(args)
    _parse_target(args.target)
    check_output_target(args.out, overwrite=args.overwrite)
    with _stages(console, ["read"] * len(args.view) + ["fit", "predict", "write"], "hclstat predict") as step:
        data = _load_data(args, console, step)
        y_raw = _read_target(args.target, data)
        y, task, classes = _encode_target(y_raw, args.task)
        labelled = ~np.isnan(y)
        if labelled.sum() < MIN_ROWS:
            raise CLIError(f"--target: only {int(labelled.sum())} rows have an outcome (need at least {MIN_ROWS})")
        hierarchy = _hierarchy_from_args(args, data)
        _check_max_rank(args.max_rank, data)
        rng = np.random.default_rng(args.seed)
        test = np.zeros(len(y), dtype=bool)
        if args.test_fraction > 0:
            idx = np.flatnonzero(labelled)
            n_test = int(round(args.test_fraction * idx.size))
            if idx.size - n_test < MIN_ROWS or n_test < 1:
                raise CLIError(f"--test-fraction {args.test_fraction} leaves too few training or test rows "
                               f"({idx.size} labelled)")
            test[rng.choice(idx, size=n_test, replace=False)] = True
        train = labelled & ~test
        cls_name = "HCLClassifier" if task == "classification" else "HCLRegressor"
        Model = _import("hclstat.downstream", cls_name, f"the {cls_name} model is")
        representation = _make_estimator(args, hierarchy)
        model = _construct(Model, representation=representation, random_state=args.seed)
        rows = lambda mask: {m: t.iloc[np.flatnonzero(mask)] for m, t in data.views.items()}  # noqa: E731
        # the representation is unsupervised: fit it on every row except the held-out ones
        unlabelled = ~labelled
        extra = {"unlabeled_views": rows(~test)} if unlabelled.any() else {}
        t0 = time.perf_counter()
        model.fit(rows(train), y[train], **extra)
        console.info(f"fitted {cls_name} on {int(train.sum())} rows in {time.perf_counter() - t0:.1f} s")
        step("fit")
        pred = np.asarray(model.predict(data.views), dtype=np.float64).reshape(-1)
        proba = None
        if task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(data.views), dtype=np.float64)
            proba = proba[:, 1] if proba.ndim == 2 else proba.reshape(-1)
        step("predict")
        part = lambda mask: _metrics(task, y[mask], pred[mask], None if proba is None else proba[mask])  # noqa: E731
        metrics = {"task": task, "train": part(train)}
        if test.any():
            metrics["test"] = part(test)
        if classes is not None:
            metrics["classes"] = {"0": str(classes[0]), "1": str(classes[1])}
        frame = pd.DataFrame(index=pd.Index(list(data.ids), name=data.id_name))
        frame["target"] = y_raw.to_numpy()
        if classes is not None:
            frame["prediction"] = [classes[int(v)] if np.isfinite(v) else None for v in pred]
            if proba is not None:
                frame[f"probability_{classes[1]}"] = proba
        else:
            frame["prediction"] = pred
        frame["split"] = np.where(test, "test", np.where(train, "train", "unlabelled"))
        try:
            summary = str(model.summary()) if hasattr(model, "summary") else repr(model)
        except ValueError as exc:  # e.g. the unpenalised refit failed; the predictions stand
            summary = f"{cls_name}: no inference summary ({_one_line(exc)})"
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            frame.to_csv(tmp / "predictions.csv")
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            (tmp / "summary.txt").write_text(summary + "\n\n" + data.report() + "\n")
            (tmp / "data_report.json").write_text(json.dumps(data.to_dict(), indent=2) + "\n")
            fitted = getattr(model, "representation_", None)
            if fitted is not None and hasattr(fitted, "hierarchy_"):
                (tmp / "hierarchy.json").write_text(json.dumps(fitted.hierarchy_.to_dict(), indent=2) + "\n")
            (tmp / RUN_FILE).write_text(json.dumps(_run_record("predict", args.argv, args), indent=2) + "\n")
        step("write")
    for split in ("train", "test"):
        if split in metrics:
            console.info(f"{split}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in metrics[split].items()))
    console.result(f"wrote {args.out}")
    return EXIT_OK


def _cmd_simulate(args, console):
    run_study = _import("hclstat.studies", "run_study", "the study runner is")
    if not Path(args.config).is_file():
        raise CLIError(f"study config not found: {args.config}")
    extra = {"max_cells": args.max_cells} if args.max_cells is not None else {}
    run_study(args.config, args.out, scheduler=args.scheduler, workers=args.workers, quiet=args.quiet, **extra)
    console.result(f"wrote {args.out}")
    return EXIT_OK


def _passed(result):
    if result is None:
        return True
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    if isinstance(result, dict):
        if "passed" in result:
            return bool(result["passed"])
        return all(_passed(v) for v in result.values())
    if isinstance(result, (list, tuple)):
        return all(_passed(v) for v in result)
    return bool(getattr(result, "passed", True))


def _cmd_check(args, console):
    run_checks = _import("hclstat.checks", "run_checks", "the paper checks are")
    result = run_checks(args.names, args.quick, args.out)
    if isinstance(result, (int, np.integer)) and not isinstance(result, (bool, np.bool_)):
        status = EXIT_OK if int(result) == 0 else EXIT_FAILURE
    else:
        status = EXIT_OK if _passed(result) else EXIT_FAILURE
    if status != EXIT_OK:
        print(f"{PROG} check: error: at least one check failed (see {args.out})", file=sys.stderr)
    else:
        console.result(f"checks passed; wrote {args.out}")
    return status


def _comparison(estimator, model):
    """Pattern scores and loading errors of a fit against the simulation truth."""
    import pandas as pd

    from .metrics import loading_errors, pattern_scores

    est_h, true_h = estimator.hierarchy_, model.hierarchy
    scores = pattern_scores(est_h, true_h)
    rows = []
    for s, err in scores["rank_errors"].items():
        rows.append({"structure": true_h.name(s), "level": true_h.level(s), "true_rank": true_h.rank(s),
                     "estimated_rank": est_h.rank(s), "rank_error": err})
    pattern = pd.DataFrame(rows).set_index("structure")
    errors = loading_errors(estimator.loadings_, model.loadings)
    rows = []
    for s in true_h.structures:
        for m in sorted(s, key=true_h.index):
            rows.append({"structure": true_h.name(s), "modality": m,
                         "sin_theta": errors.get((s, m), float("nan"))})
    loadings = pd.DataFrame(rows)
    text = "\n".join([
        "Learned vs true hierarchy",
        "-" * 60,
        f"exact pattern recovery: {scores['exact']}",
        f"structure precision: {scores['structure_precision']:.3f}   recall: {scores['structure_recall']:.3f}   "
        f"support Hamming distance: {scores['support_hamming']}",
        "",
        pattern.to_string(),
        "",
        "Loading subspace error (sin-theta distance to the true col(A_{m,S}); NaN: structure not found)",
        "-" * 60,
        loadings.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    ])
    return scores, pattern, loadings, text


def _cmd_demo(args, console):
    import pandas as pd

    from .hierarchy import Hierarchy
    from .io import atomic_directory, check_output_target, load_views
    from .model import HierarchicalModel

    check_output_target(args.out, overwrite=args.overwrite)
    with _stages(console, ["simulate", "fit", "scores", "write"], "hclstat demo") as step:
        truth = Hierarchy(DEMO_DIMS, DEMO_RANKS)
        rng = np.random.default_rng(args.seed)
        model = HierarchicalModel.random(truth, loading_scale=DEMO_LOADING_SCALE, noise=1.0,
                                         noise_model="isotropic", random_state=rng)
        arrays, _ = model.sample(args.n, random_state=rng)
        ids = [f"s{i:05d}" for i in range(args.n)]
        frames = {}
        for m, x in arrays.items():
            frame = pd.DataFrame(x, columns=[f"{m}{j + 1}" for j in range(x.shape[1])])
            frame.insert(0, "sample", ids)
            frames[m] = frame
        # the model's own scale, so the loadings compare with the truth (moments centre anyway)
        data = load_views(frames, id_column="sample", preprocessing={m: "raw" for m in frames})
        console.info(f"simulated {args.n} samples of {truth!r}")
        step("simulate")
        estimator = _make_estimator(args, None)
        _fit_estimator(estimator, data.views, console)
        step("fit")
        scores = estimator.transform(data.views)
        step("scores")
        pattern_scores, pattern, loadings, text = _comparison(estimator, model)
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            _write_fit_outputs(tmp, estimator, scores, data, args, extra_summary=text)
            (tmp / "true_hierarchy.json").write_text(json.dumps(truth.to_dict(), indent=2) + "\n")
            pattern.to_csv(tmp / "pattern_comparison.csv")
            loadings.to_csv(tmp / "loading_errors.csv", index=False)
            (tmp / "comparison.txt").write_text(text + "\n")
            (tmp / "data").mkdir()
            for m, frame in frames.items():
                frame.to_csv(tmp / "data" / f"{m}.csv", index=False)
            if not args.no_figures:
                from .plotting import pattern_comparison_figure, save_figure

                save_figure(pattern_comparison_figure(truth, estimator.hierarchy_),
                            tmp / "figures" / "pattern_true_vs_estimated.png")
        step("write")
    console.info(text)
    console.result(f"wrote {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------- main
def main(argv=None):
    """Run the command line; returns the exit code (0 success, 1 failure, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (fit, predict, simulate, check, demo)", file=sys.stderr)
        return EXIT_USAGE
    args.argv = argv
    console = _Console(quiet=args.quiet)
    where = f"{PROG} {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.func(args, console)
    except UsageError as exc:
        print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if args.traceback:
            raise
        expected = (CLIError, ValueError, TypeError, OSError, KeyError, np.linalg.LinAlgError)
        if isinstance(exc, expected):
            print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"{where}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                  "(rerun with --traceback for details)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
