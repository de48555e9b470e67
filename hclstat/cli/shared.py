"""What the commands share at run time: the estimator, the data, and the fit outputs.

The estimators and the readers are imported when a command runs, so that
``hclstat --help`` stays fast and a missing part is reported by name.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time

from .._version import __version__
from .base import _NAME, CLIError, UsageError, one_line, parse_preprocessing, parse_types, parse_views


def import_attr(module, attr, what):
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


def construct(cls, **kwargs):
    """``cls(**kwargs)``; a keyword ``cls`` does not accept is an error naming both, never dropped."""
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise TypeError(
                f"{cls.__name__} does not accept the keyword argument {unknown[0]!r} that the command line "
                f"sets; expected some of {list(params)}, got {sorted(kwargs)}"
            )
    return cls(**kwargs)


def make_estimator(args, hierarchy=None):
    """The representation estimator chosen on the command line (imported lazily).

    ``hcl`` (default): :class:`hclstat.estimators.hcl.HCL`, which learns the
    pattern when ``hierarchy`` is None; ``sfa``:
    :class:`hclstat.estimators.sfa.StructuredFactorAnalysis` on a given pattern.
    """
    name = getattr(args, "estimator", "hcl")
    common = {"noise_model": args.noise_model, "random_state": args.seed, "verbose": args.verbose}
    if name == "sfa":
        if hierarchy is None:
            raise UsageError("--estimator sfa needs --hierarchy (structured factor analysis fits a given pattern)")
        SFA = import_attr("hclstat.estimators.sfa", "StructuredFactorAnalysis",
                          "the StructuredFactorAnalysis estimator is")
        return construct(SFA, hierarchy=hierarchy, **common)
    HCL = import_attr("hclstat.estimators.hcl", "HCL", "the HCL estimator is")
    mods = getattr(args, "modalities", None) or [v.partition("=")[0].strip() for v in getattr(args, "view", None) or []]
    types = parse_types(getattr(args, "types", None), mods)
    return construct(HCL, hierarchy=hierarchy, max_rank=args.max_rank, types=types, **common)


def check_estimator_args(args):
    """Command-line combinations that are wrong whatever the data (checked before reading it)."""
    if getattr(args, "estimator", "hcl") == "sfa":
        if not getattr(args, "hierarchy", None):
            raise UsageError("--estimator sfa needs --hierarchy (structured factor analysis fits a given pattern)")
        if args.max_rank is not None:
            raise UsageError("--max-rank applies to HCL only; --estimator sfa takes the ranks from --hierarchy")
        if getattr(args, "types", None):
            raise UsageError("--type applies to HCL only (structured factor analysis is linear-Gaussian)")


#: the ID column of the obs names of a ``--mudata`` file's modalities
OBS_COLUMN = "obs_names"


def _mudata_sources(args, chunked):
    """``--mudata FILE``: its modalities as tables with their obs names in :data:`OBS_COLUMN`."""
    from .. import io as hio

    if args.view:
        raise UsageError("give the modalities either as --mudata FILE or as --view NAME=FILE, not both")
    if args.id:
        raise UsageError("--mudata: rows are matched by the obs names of the modalities; drop --id")
    if chunked:
        raise UsageError("--chunks reads --view tables in row chunks; a --mudata file is read into memory "
                         "(drop --chunks)")
    try:
        frames = hio.from_mudata(args.mudata, layer=args.layer)
    except ImportError as exc:
        raise CLIError(one_line(exc)) from None
    for m, t in frames.items():
        if not _NAME.match(m):
            raise CLIError(f"--mudata: modality name {m!r} may only contain letters, digits, '_', '.' and '-' "
                           "(it names output files); rename it in the MuData file")
        if OBS_COLUMN in t.columns:
            raise CLIError(f"--mudata: modality {m!r} has a variable named {OBS_COLUMN!r}, which names the obs "
                           "column of the outputs; rename it")
    return {m: t.rename_axis(OBS_COLUMN).reset_index() for m, t in frames.items()}, OBS_COLUMN


def load_data(args, console, step, *, chunked=False):
    """The joined, preprocessed views of ``--view``/``--prep`` (read in row chunks when ``chunked``),
    or of the modalities of ``--mudata``."""
    from .. import io as hio

    if getattr(args, "mudata", None):
        sources, id_column = _mudata_sources(args, chunked)
    else:
        if getattr(args, "layer", None):
            raise UsageError("--layer applies to --mudata only")
        sources, id_column = parse_views(args.view), args.id
    args.modalities = list(sources)
    prep = parse_preprocessing(args.prep, list(sources))
    if args.join is None:  # the default of every command: keep every sample
        args.join = "outer"
    options = {"id_column": id_column, "join": args.join, "preprocessing": prep, "progress": lambda msg: step(msg),
               "sep": args.sep, "encoding": args.encoding}
    if chunked:
        data = hio.load_views_chunked(sources, chunk_rows=args.chunks, **options)
    else:
        data = hio.load_views(sources, **options)
    for line in [*data.join.lines(), *data.rows_lines()]:
        console.info(line)
    if chunked:
        chunks = {m: len(a.chunks[0]) for m, a in data.views.items()}
        console.info(f"reading in row chunks of about {args.chunks} rows: {chunks} chunks per modality")
    return data


def check_max_rank(max_rank, data):
    """``--max-rank`` against each modality's columns and its rows (those with data, after an outer join)."""
    if max_rank is None:
        return
    rows = data.shared_rows
    for m, p in data.dims.items():
        n = int(rows.loc[m, m])
        allowed = min(p, n - 1)
        if max_rank > allowed:
            why = f"its {p} columns after preprocessing" if p <= n - 1 else f"{n} rows"
            raise CLIError(f"--max-rank {max_rank} exceeds what modality {m!r} allows: at most {allowed} ({why})")


def hierarchy_from_args(args, data):
    if not getattr(args, "hierarchy", None):
        return None
    from ..io import read_hierarchy

    return read_hierarchy(args.hierarchy, dims=data.dims)


def run_record(command, argv, args, estimator=None):
    """What ``run.json`` holds: version, command line, seed (and the estimator's parameters)."""
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


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def write_fit_outputs(tmp, estimator, scores, data, args, *, extra_summary=""):
    """Everything ``fit`` writes (see :mod:`hclstat.cli`); returns the summary text.

    ``scores=None`` with out-of-core ``data`` writes the scores chunk by chunk.
    """
    from ..io import RUN_FILE, ChunkedViewData, write_representation, write_scores_chunked

    if scores is None and isinstance(data, ChunkedViewData):
        write_representation(tmp, estimator, None)
        write_scores_chunked(tmp, estimator, data)
    else:
        write_representation(tmp, estimator, scores, ids=list(data.ids), id_name=data.id_name)
    results = estimator.get_results()
    results.variance_explained.to_csv(tmp / "variance_explained.csv")
    data.missingness.to_csv(tmp / "missingness.csv")
    write_json(tmp / "data_report.json", data.to_dict())
    summary = results.summary() + "\n\n" + data.report() + "\n"
    types = getattr(estimator, "types_", None)
    if types:
        summary += "\n" + write_column_types(tmp, estimator) + "\n"
    if extra_summary:
        summary += "\n" + extra_summary + "\n"
    (tmp / "summary.txt").write_text(summary)
    if not args.no_figures:
        from ..plotting import write_figures

        write_figures(results, tmp / "figures", top=args.top)
    write_json(tmp / RUN_FILE, run_record(args.command, args.argv, args, estimator))
    return summary


def write_column_types(tmp, estimator):
    """``column_types.csv`` (modality, feature, type) of a copula fit; returns its summary lines."""
    import pandas as pd

    rows, lines = [], ["column types (latent Gaussian copula; --type auto infers them):"]
    for m, kinds in estimator.types_.items():
        names = (estimator.feature_names_ or {}).get(m) or [f"x{j}" for j in range(len(kinds))]
        rows += [{"modality": m, "feature": f, "type": k} for f, k in zip(names, kinds)]
        counts = pd.Series(list(kinds)).value_counts()
        lines.append(f"  {m}: " + ", ".join(f"{c} {k}" for k, c in counts.items()))
    pd.DataFrame(rows).to_csv(tmp / "column_types.csv", index=False)
    return "\n".join(lines)


def fit_estimator(estimator, views, console):
    t0 = time.perf_counter()
    estimator.fit(views)
    console.info(f"fitted {type(estimator).__name__} in {time.perf_counter() - t0:.1f} s: "
                 f"{estimator.hierarchy_!r}")
    return estimator
