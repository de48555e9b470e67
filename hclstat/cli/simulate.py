"""``hclstat simulate``: run a simulation study config (:func:`hclstat.studies.run_study`).

Exit status: 1 when every fit of the study failed (the message gives their
number and the first error); when only some failed, 0 with a warning line on
stderr giving their number and the first error. Either way the failed fits are
the ``metric = "error"`` rows of ``results.csv`` and the ``n_errors`` of
``summary.csv``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from . import shared
from .base import EXIT_OK, CLIError, add_common, positive_int


def add_parser(sub):
    p = sub.add_parser("simulate", help="run a simulation study from a config file",
                       description="Run a study config (hclstat.studies.run_study); the runner writes "
                                   "resumable checkpoints and tidy result tables into --out. Exit 1 when "
                                   "every fit failed; a warning when some did.")
    p.add_argument("config", help="study config file")
    p.add_argument("--out", required=True, metavar="DIR", help="study output directory (resumable)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler address (default: a local cluster of --workers processes)")
    p.add_argument("--workers", type=positive_int, metavar="N", default=os.cpu_count() or 1,
                   help="worker processes of the local cluster (default: the number of cores; 1 runs in this process)")
    p.add_argument("--max-cells", type=positive_int, metavar="N",
                   help="run only the first N cells of the grid (a quick look)")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args, console):
    run_study = shared.import_attr("hclstat.studies", "run_study", "the study runner is")
    from ..exceptions import EstimationWarning
    from ..studies.runner import FAILED_FITS_MESSAGE
    from ..studies.storage import count_fits, fit_failures

    if not Path(args.config).is_file():
        raise CLIError(f"study config not found: {args.config}")
    extra = {"max_cells": args.max_cells} if args.max_cells is not None else {}
    with warnings.catch_warnings():
        # the runner's warning about failed fits: reported below, once, with the exit status
        warnings.filterwarnings("ignore", message=FAILED_FITS_MESSAGE, category=EstimationWarning)
        table = run_study(args.config, args.out, scheduler=args.scheduler, workers=args.workers,
                          quiet=args.quiet, **extra)
    if not hasattr(table, "columns"):
        raise CLIError(f"the study runner returned no result table (got {type(table).__name__})")
    n_fits, failed = count_fits(table), fit_failures(table)
    if n_fits == 0:
        raise CLIError(f"the study recorded no fit; nothing was run (see {args.out})")
    if len(failed):
        first = failed.iloc[0]
        text = (f"{len(failed)} of {n_fits} fits failed; first, cell {first['cell']} replication "
                f"{first['replication']} method {first['method']!r}: {first['error']}")
        where = f"the error rows of {Path(args.out) / 'results.csv'}"
        if len(failed) == n_fits:
            raise CLIError(f"every fit of the study failed: {text} (see {where})")
        console.warn(f"{text} (see {where} and n_errors in {Path(args.out) / 'summary.csv'})")
    console.result(f"wrote {args.out}")
    return EXIT_OK
