"""Command-line interface: ``hclstat fit | predict | simulate | check | demo | events``.

Exit codes: 0 success, 1 failure (bad input, failed estimation, failed check),
2 usage error (unknown option, malformed ``--view``/``--prep``/``--target``).
Errors are reported as one line on stderr, never as a traceback (``--traceback``
shows it for debugging).

Results are built in a temporary directory next to ``--out`` and renamed into
place only when the whole run succeeded, so a failed run leaves no partial
result. An existing ``--out`` is replaced (after success) when it is empty or
was written by an earlier hclstat run; any other existing directory needs
``--overwrite``. ``simulate`` is the exception: the study runner writes its own
resumable checkpoints into ``--out``; it exits 1 when every fit of the study
failed and warns (exit 0) when some did. ``check`` exits 1 unless every check
gives an explicit passing verdict.

One module per command (:mod:`~hclstat.cli.fit`, :mod:`~hclstat.cli.predict`,
:mod:`~hclstat.cli.simulate`, :mod:`~hclstat.cli.check`,
:mod:`~hclstat.cli.demo`, :mod:`~hclstat.cli.events`), each with ``add_parser(subparsers)`` and
``run(args, console)``; :mod:`~hclstat.cli.base` holds the exit codes, errors,
console and option parsing, :mod:`~hclstat.cli.shared` the estimator, data and
output plumbing the commands share.

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
import sys
import warnings

import numpy as np

from .._version import __version__
from . import check, demo, events, fit, predict, simulate
from .base import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROG, CLIError, Console, UsageError, one_line, show_warning
from .demo import DEMO_DIMS, DEMO_LOADING_SCALE

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "UsageError", "CLIError",
           "DEMO_DIMS", "DEMO_LOADING_SCALE"]

#: the command modules, in the order ``hclstat --help`` lists them
COMMANDS = (fit, predict, simulate, check, demo, events)


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
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


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
        print(f"{PROG}: error: a command is required (fit, predict, simulate, check, demo, events)", file=sys.stderr)
        return EXIT_USAGE
    args.argv = argv
    console = Console(quiet=args.quiet)
    where = f"{PROG} {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show_warning
            return args.func(args, console)
    except UsageError as exc:
        print(f"{where}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if args.traceback:
            raise
        expected = (CLIError, ValueError, TypeError, OSError, KeyError, np.linalg.LinAlgError)
        if isinstance(exc, expected):
            print(f"{where}: error: {one_line(exc)}", file=sys.stderr)
        else:
            print(f"{where}: internal error: {type(exc).__name__}: {one_line(exc)} "
                  "(rerun with --traceback for details)", file=sys.stderr)
        return EXIT_FAILURE
