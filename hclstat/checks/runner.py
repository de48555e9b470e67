"""The check registry and runner: what a check receives, how it is run, judged, written and reported.

Besides a check's own criteria, the runner adds one to every check:
``fits_converged`` — every estimator fit that the check made through
:meth:`CheckContext.fit` (HCL, the SFA oracle yardstick, the baselines whose
numbers enter a criterion, the downstream regressors) converged. A fit counts
as not converged when it raised a :class:`~hclstat.exceptions.ConvergenceWarning`
or ended with ``converged_ = False``; the criterion names how many fits of each
kind did not. Warnings other than hclstat's own are not silenced: they follow
the warning filters in force (the test suite turns RuntimeWarnings from hclstat
into errors), and those that are only shown are counted and logged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..exceptions import ConvergenceWarning, EstimationWarning, IdentifiabilityWarning
from ..studies import replication_seed
from .shared import criterion, write_json

__all__ = ["CHECKS", "Check", "CheckContext", "register_check", "available_checks", "run_check", "run_checks",
           "main"]

logger = logging.getLogger("hclstat.checks")

#: hclstat's own warnings: always recorded (and counted) inside a check, never shown
_OWN_WARNINGS = (ConvergenceWarning, EstimationWarning, IdentifiabilityWarning)


# ================================================================ registry
@dataclass(frozen=True)
class Check:
    """A registered check.

    Attributes
    ----------
    name : str
    func : callable
        ``func(ctx: CheckContext) -> dict`` with keys ``results`` (numbers),
        ``criteria`` (list of criterion dicts, see
        :func:`hclstat.checks.shared.criterion`) and optionally ``notes``
        (list of str) and ``figures``.
    claim : str
        The theoretical statement, one sentence.
    criterion : str
        The constant-free pass/fail rule, one sentence.
    quick, full : dict
        Settings of each mode (grids, replications, design).
    seed : int
        Base seed of the check.
    """

    name: str
    func: object
    claim: str
    criterion: str
    quick: dict
    full: dict
    seed: int


CHECKS: dict = {}


def register_check(name, *, claim, criterion, quick, full, seed):
    """Decorator registering ``func(ctx) -> dict`` as check ``name``."""

    def wrap(func):
        if name in CHECKS:
            raise ValueError(f"check {name!r} is already registered")
        CHECKS[name] = Check(name, func, claim, criterion, dict(quick), dict(full), int(seed))
        return func

    return wrap


def available_checks():
    """``{name: claim}`` of every registered check, in run order."""
    return {name: c.claim for name, c in CHECKS.items()}


@dataclass
class CheckContext:
    """What a check function receives.

    Attributes
    ----------
    name : str
    mode : {"quick", "full"}
    settings : dict
        The mode's settings (copied into the summary).
    seed : int
        Base seed of the check.
    out : Path
        The check's output directory (created).
    warnings : Counter
        ``"label: WarningClass" -> count`` of every warning recorded.
    fits, unconverged : Counter
        ``label -> count`` of the fits made through :meth:`fit`, and of those that did not converge.
    ungated : set
        Labels whose convergence is reported but not gated (``fit(..., gate=False)``).
    """

    name: str
    mode: str
    settings: dict
    seed: int
    out: Path
    warnings: Counter = field(default_factory=Counter)
    fits: Counter = field(default_factory=Counter)
    unconverged: Counter = field(default_factory=Counter)
    ungated: set = field(default_factory=set)

    @property
    def quick(self):
        return self.mode == "quick"

    def streams(self, cell, replication, n=2):
        """``n`` independent generators for replication ``replication`` of condition ``cell``.

        From :func:`hclstat.studies.replication_seed`, the scheme of the study
        runner (first stream: the truth; second: the data; further: extras).
        """
        seed = replication_seed(self.seed, cell, replication)
        return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]

    @contextlib.contextmanager
    def recording(self, label):
        """Record (and count under ``label``) the warnings raised in the block; yields their list.

        hclstat's own warnings are always recorded; every other warning
        follows the filters in force (an ``error`` filter still raises), and
        one that is recorded is also logged, so that no numerical problem
        passes unseen.
        """
        with warnings.catch_warnings(record=True) as caught:
            for category in _OWN_WARNINGS:
                warnings.simplefilter("always", category)
            yield caught
        for w in caught:
            self.warnings[f"{label}: {w.category.__name__}"] += 1
            if not issubclass(w.category, _OWN_WARNINGS):
                logger.warning("check %s, %s: %s: %s (%s:%s)", self.name, label, w.category.__name__, w.message,
                               w.filename, w.lineno)

    def fit(self, label, estimator, *args, method="fit", gate=True):
        """``estimator.<method>(*args)``, counting its warnings and whether it converged under ``label``.

        ``gate=False`` only for a fit whose numbers in the check cannot depend
        on its convergence (say why where it is used).
        """
        with self.recording(label) as caught:
            getattr(estimator, method)(*args)
        self.fits[label] += 1
        if not gate:
            self.ungated.add(label)
        warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
        if warned or getattr(estimator, "converged_", True) is False:
            self.unconverged[label] += 1
        return estimator

    @property
    def figure_path(self):
        return self.out / f"{self.name}.png"


def convergence_criterion(fits, unconverged, ungated=()):
    """``fits_converged``: every gated fit made through :meth:`CheckContext.fit` converged."""
    gated = [label for label in fits if label not in ungated]
    total = sum(fits[label] for label in gated)
    bad = sum(unconverged[label] for label in gated)
    detail = ", ".join(f"{label}: {unconverged[label]} of {fits[label]}" for label in gated if unconverged[label])
    return criterion("fits_converged",
                     f"every estimator fit converged (no ConvergenceWarning, converged_ not False); "
                     f"{bad} of {total} fits did not" + (f" ({detail})" if detail else ""),
                     bad, bad == 0, n_fits=total, not_converged={label: unconverged[label] for label in gated},
                     not_gated={label: f"{unconverged[label]} of {fits[label]} not converged" for label in ungated})


# ================================================================== runner
def _resolve_names(names):
    if names is None:
        return list(CHECKS)
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        if name == "all":
            out.extend(n for n in CHECKS if n not in out)
        elif name in CHECKS:
            if name not in out:
                out.append(name)
        else:
            raise ValueError(f"unknown check {name!r}; expected 'all' or some of {list(CHECKS)}")
    if not out:
        raise ValueError(f"names: expected at least one check name or 'all', got {names!r}")
    return out


@contextlib.contextmanager
def _blas_threads(n):
    # small matrices: threaded BLAS only adds contention on a shared machine
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn ships it
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def run_check(name, *, quick=True, out="checks_output", settings=None, seed=None):
    """Run one check; write ``<out>/<name>/summary.json`` and its figure; return the summary.

    Parameters
    ----------
    name : str
        A key of :data:`CHECKS`.
    quick : bool
        Quick (CI) or full mode.
    out : path
        Parent output directory.
    settings : dict, optional
        Overrides of the mode's settings (tests use it to shrink a check).
    seed : int, optional
        Another base seed (robustness runs); default the check's own.

    Returns
    -------
    dict
        The summary written to JSON: ``name``, ``claim``, ``criterion``,
        ``mode``, ``passed``, ``criteria``, ``results``, ``settings``,
        ``figures``, ``runtime_seconds``, ``warnings``, ``fits`` ... A check
        passes iff it returned at least one criterion and every criterion
        (including ``fits_converged``) passed. A check that raises gives
        ``passed = False`` and an ``error`` entry (the traceback is in the
        JSON), so that one broken check does not hide the others.
    """
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; expected one of {list(CHECKS)}")
    from .._version import __version__

    check = CHECKS[name]
    mode = "quick" if quick else "full"
    conf = dict(check.quick if quick else check.full)
    if settings:
        unknown = sorted(set(settings) - set(conf))
        if unknown:
            raise ValueError(f"settings: unknown keys {unknown} for check {name!r}; expected some of {sorted(conf)}")
        conf.update(settings)
    directory = Path(out) / name
    directory.mkdir(parents=True, exist_ok=True)
    seed = check.seed if seed is None else int(seed)
    ctx = CheckContext(name=name, mode=mode, settings=conf, seed=seed, out=directory)
    summary = {"name": name, "claim": check.claim, "criterion": check.criterion, "mode": mode,
               "seed": seed, "settings": conf, "hclstat_version": __version__}
    logger.info("check %s (%s mode) ...", name, mode)
    t0 = time.perf_counter()
    try:
        with _blas_threads(1):
            body = check.func(ctx)
        summary.update(body)
        summary["criteria"] = list(body["criteria"]) + [convergence_criterion(ctx.fits, ctx.unconverged, ctx.ungated)]
        failed = [c["name"] for c in summary["criteria"] if not c["passed"]]
        summary["passed"] = not failed and bool(body["criteria"])
        summary["failed_criteria"] = failed
    except Exception as exc:  # reported in the summary; the other checks go on
        summary.update(passed=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        logger.error("check %s raised %s: %s", name, type(exc).__name__, exc)
    summary["runtime_seconds"] = time.perf_counter() - t0
    summary["warnings"] = dict(ctx.warnings)
    summary["fits"] = {"total": dict(ctx.fits), "not_converged": dict(ctx.unconverged)}
    write_json(directory / "summary.json", summary)
    logger.info("check %s: %s in %.1f s", name, "passed" if summary["passed"] else "FAILED",
                summary["runtime_seconds"])
    return summary


def run_checks(names=("all",), quick=True, out="checks_output"):
    """Run checks by name (``"all"`` for every one) and write their outputs under ``out``.

    Used by ``hclstat check [NAME ...|all] [--quick] [--out DIR]``. Besides each
    check's directory, ``<out>/summary.json`` lists every check run with its
    verdict, runtime and failed criteria.

    Returns
    -------
    dict
        ``{name: summary}`` (see :func:`run_check`); a check passed iff
        ``summary["passed"]``.
    """
    todo = _resolve_names(names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in todo:
        results[name] = run_check(name, quick=quick, out=out)
    index = {
        "mode": "quick" if quick else "full",
        "passed": all(r["passed"] for r in results.values()),
        "checks": {
            name: {"passed": r["passed"], "runtime_seconds": r["runtime_seconds"],
                   "failed_criteria": r.get("failed_criteria", []), "error": r.get("error"),
                   "figures": r.get("figures", []), "summary": str(out / name / "summary.json")}
            for name, r in results.items()
        },
    }
    write_json(out / "summary.json", index)
    return results


def _format_value(v):
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, (list, np.ndarray)):
        return "[" + ", ".join(f"{x:.3g}" for x in np.asarray(v, dtype=float)) + "]"
    return v


def report(summary):
    """The text report of one check's summary: verdict, every criterion, the figures."""
    lines = [f"{summary['name']} ({summary['mode']}): {'PASSED' if summary['passed'] else 'FAILED'} "
             f"in {summary['runtime_seconds']:.1f} s"]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    for c in summary.get("criteria", []):
        reason = f" -- {c['reason']}" if c.get("reason") else ""
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['name']}: {_format_value(c['value'])}  "
                     f"({c['statement']}){reason}")
    for f in summary.get("figures", []):
        lines.append(f"  figure: {f}")
    return "\n".join(lines)


def main(name, argv=None):
    """Entry point of ``paper_checks/<name>.py [--quick|--full] [--out DIR]``; returns the exit code.

    0 when the claim holds, 1 when it fails (or the check raised).
    """
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; expected one of {list(CHECKS)}")
    check = CHECKS[name]
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=f"{check.claim}\n\nCriterion: {check.criterion}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", help="quick mode (as in CI)")
    mode.add_argument("--full", dest="quick", action="store_false", help="full mode (the README figures; default)")
    parser.set_defaults(quick=False)
    parser.add_argument("--out", default="checks_output", metavar="DIR",
                        help="output directory (default: checks_output)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    summary = run_check(name, quick=args.quick, out=args.out)
    print(report(summary))  # the script's output: this is the entry point of a program, not library code
    return 0 if summary["passed"] else 1
