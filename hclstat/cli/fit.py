"""``hclstat fit``: fit HCL (or SFA) to one table per modality and write its results."""

from __future__ import annotations

import argparse
import warnings

from . import shared
from .base import EXIT_OK, JOIN_HELP as _JOIN_HELP, UsageError, add_common, add_data, add_estimator, add_figures, add_output, \
    positive_int, stages

EPILOG = """\
examples:
  hclstat fit --view labs=labs.csv --view codes=codes.parquet --prep codes=log1p \\
              --id patient_id --out results
  hclstat fit --mudata cohort.h5mu --out results     # modalities = its .mod, joined on obs names

output (built in a temporary directory beside DIR, moved into place on success;
an existing DIR is replaced only if empty or written by hclstat, else --overwrite):
  hierarchy.json                        fitted sharing pattern (valid --hierarchy input)
  loadings/<structure>__<modality>.csv  feature x comp1..k, e.g. labs+codes__labs.csv
  scores/<structure>.csv                ID x comp1..k
  noise_variances.csv                   modality, feature, noise_variance
  variance_explained.csv, missingness.csv, data_report.json, summary.txt, run.json
  figures/pattern.png, variance_explained.png, top_features.png

joining (--id COLUMN): by default every sample of every table is kept (--join
outer); a sample missing from a table is missing in that modality, and each
covariance block uses the samples measured in both of its modalities. The data
report (summary.txt, data_report.json "rows") gives the rows each modality and
each pair of modalities contributes. --join inner keeps only the IDs present
in every table (and reports the IDs it dropped).

out of core (--chunks ROWS): the tables are read with dask in chunks of about
ROWS rows; preprocessing statistics, moments and scores are computed chunk by
chunk, so no table is held in memory whole. The tables must list the same rows
(or, with --id, the same IDs) in the same order (so nothing is joined:
--join outer, which needs the in-memory join, is refused); CSV files must be
uncompressed, Parquet files are read by row group.
"""

#: ``--join`` help for ``fit`` (it also reads out of core)
JOIN_HELP = _JOIN_HELP + ". With --chunks the tables must list the same rows, so nothing is joined"


def add_parser(sub):
    p = sub.add_parser("fit", help="fit a hierarchical model to modality tables and write its results",
                       description="Fit HCL (or SFA) to one table per modality; write the pattern, loadings, "
                                   "scores, noise variances, a summary and figures.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data(p, join_help=JOIN_HELP, mudata=True)
    add_estimator(p)
    add_output(p)
    add_figures(p)
    p.add_argument("--chunks", type=positive_int, metavar="ROWS",
                   help="out of core: read the tables with dask in chunks of about ROWS rows and compute the "
                        "moments chunk by chunk (tables must list the same rows/IDs in the same order; "
                        "uncompressed CSV or Parquet, read by row group). Default: read every table into memory")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args, console):
    from ..io import atomic_directory, check_output_target

    shared.check_estimator_args(args)
    chunked = args.chunks is not None
    if chunked:
        if args.join == "outer":
            raise UsageError("--chunks reads tables that list the same rows in the same order; "
                             "--join outer needs the in-memory join (drop --chunks)")
        # the tables must be aligned, so nothing is joined and every row is kept (recorded as the default)
        args.join = "outer"
        # deprecation notices dask's readers raise about pandas say nothing about the data
        warnings.filterwarnings("ignore", module=r"dask(\.|$)")
    check_output_target(args.out, overwrite=args.overwrite)
    reads = ["read"] * len(args.view or [args.mudata])
    with stages(console, reads + ["fit", "scores", "write"], "hclstat fit") as step:
        data = shared.load_data(args, console, step, chunked=chunked)
        hierarchy = shared.hierarchy_from_args(args, data)
        shared.check_max_rank(args.max_rank, data)
        estimator = shared.make_estimator(args, hierarchy)
        shared.fit_estimator(estimator, data.views, console)
        step("fit")
        if chunked:
            # dask views carry no column names: give the fitted model those of the files
            estimator.feature_names_ = dict(data.feature_names)
            scores = None  # written chunk by chunk below
        else:
            scores = estimator.transform(data.views)
        step("scores")
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            shared.write_fit_outputs(tmp, estimator, scores, data, args)
        step("write")
    console.result(f"wrote {args.out}")
    return EXIT_OK
