"""``hclstat check``: run the paper checks (:func:`hclstat.checks.run_checks`); exit 1 when one fails.

A check passes only on an explicit verdict: ``True``, or a result whose
``passed`` (key or attribute) is ``True``. A result of ``None``, one without
``passed``, or a ``passed`` that is not a boolean is a failure, named in the
one-line message; so is a run that reports no check at all.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from . import shared
from .base import EXIT_FAILURE, EXIT_OK, PROG, add_common

_MISSING = object()


def add_parser(sub):
    p = sub.add_parser("check", help="run the verification scripts (paper checks)",
                       description="Run paper checks; exit 1 when a claim fails.")
    p.add_argument("names", nargs="*", default=["all"], help="checks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="quick mode (as in CI)")
    p.add_argument("--out", default="checks_output", metavar="DIR", help="output directory (default: checks_output)")
    add_common(p)
    p.set_defaults(func=run)
    return p


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def verdict(result):
    """``(passed, reason)`` of one check's result; anything but an explicit boolean verdict fails."""
    if _is_bool(result):
        return bool(result), "failed"
    if isinstance(result, Mapping):
        passed = result.get("passed", _MISSING)
    else:
        passed = getattr(result, "passed", _MISSING)
    if passed is _MISSING:
        return False, f"no verdict: got {_short(result)}, which has no 'passed'"
    if not _is_bool(passed):
        return False, f"no verdict: 'passed' is {_short(passed)}, expected True or False"
    return bool(passed), "failed"


def failed_checks(result):
    """``(n_checks, [(name, reason), ...])`` of what :func:`hclstat.checks.run_checks` returned.

    ``result`` is ``{name: summary}``; a single summary (a mapping with
    ``passed``), a sequence of summaries or an exit status are also read.
    ``n_checks = 0`` when nothing was reported (a failure too).
    """
    if isinstance(result, (int, np.integer)) and not _is_bool(result):
        return 1, [] if int(result) == 0 else [("checks", f"exit status {int(result)}")]
    if isinstance(result, Mapping) and "passed" not in result:
        items = list(result.items())
    elif isinstance(result, (list, tuple)):
        items = [(r.get("name", f"#{i}") if isinstance(r, Mapping) else f"#{i}", r) for i, r in enumerate(result)]
    else:
        items = [("checks", result)]
    if not items:
        return 0, []
    failed = []
    for name, value in items:
        passed, reason = verdict(value)
        if not passed:
            failed.append((str(name), reason))
    return len(items), failed


def run(args, console):
    run_checks = shared.import_attr("hclstat.checks", "run_checks", "the paper checks are")
    n, failed = failed_checks(run_checks(args.names, args.quick, args.out))
    if n == 0:
        print(f"{PROG} check: error: no check reported a result (see {args.out})", file=sys.stderr)
        return EXIT_FAILURE
    if failed:
        names = "; ".join(name if reason == "failed" else f"{name} ({reason})" for name, reason in failed)
        print(f"{PROG} check: error: {len(failed)} of {n} check(s) failed: {names} (see {args.out})", file=sys.stderr)
        return EXIT_FAILURE
    console.result(f"checks passed; wrote {args.out}")
    return EXIT_OK
