"""Paper checks: one simulation per theoretical claim, judged by a constant-free criterion.

Each check simulates from the model, fits the estimators, measures, writes a
figure (``<out>/<name>/<name>.png``; log-log where a rate is claimed, with the
fitted slope and its bootstrap band) and a JSON summary
(``<out>/<name>/summary.json``: settings, numbers, every criterion and the
verdict), and passes or fails by a criterion that does not depend on unknown
constants (a log-log slope, a ratio, a probability, an exact identity). A
criterion that cannot be evaluated fails with its reason; every check also
fails when one of its estimator fits did not converge (``fits_converged``).

========================  ===================================================================
module / check            claim
========================  ===================================================================
``identifiability``       population covariance -> exact structures, ranks, subspaces and
                          signal blocks; correlated latents -> two parameter sets with equal
                          covariance, or a covariance the rank lattice flags
``loading_rates``         sin-theta error of every ``col(A_{m,S})`` ~ ``n^{-1/2}`` at every
                          level, isotropic and heteroskedastic noise; HCL within ``1 + z SE``
                          of the oracle MLE; concatenated PCA plateaus
``dimension_scaling``     mean squared sin-theta affine in ``p`` at fixed ``n``:
                          ``E sin^2 ~ (c0 + c1 p) / n``
``pattern_recovery``      P(exact hierarchy) rises to 1 with ``n`` and with signal strength;
                          the fitted shared/private view is never exact
``excess_risk``           downstream excess risk ~ ``m^{-1}``, coefficient error ~ ``m^{-1/2}``,
                          task-relevant structures selected
``over_alignment``        the binary shared/private view keeps a bias on partially shared data;
                          HCL's error vanishes at ``n^{-1/2}``
``published_design``      DESIGN §7 design: block errors after one Procrustes rotation ~ ``n^{-1/2}``
                          for HCL (known and learned pattern) and SFA
========================  ===================================================================

:mod:`~hclstat.checks.runner` holds the registry and runner,
:mod:`~hclstat.checks.shared` the slopes, gates, figure helpers and JSON.
Every check has a *quick* mode (CI) and a *full* mode (the figures of
``paper_checks/README.md``). Seeds are fixed: replication ``r`` of condition
``c`` of a check uses :func:`hclstat.studies.replication_seed` on the check's
base seed, so any number in a summary can be reproduced alone.

Run from Python (:func:`run_checks`), from the command line
(``hclstat check [NAME ...|all] [--quick] [--out DIR]``) or with the scripts
``paper_checks/<name>.py [--quick|--full] [--out DIR]`` (:func:`main`).
"""

from .runner import CHECKS, Check, CheckContext, available_checks, main, register_check, run_check, run_checks
from .shared import affine_fit, loglog_slope, monotone_up_to_mc

# importing the claim modules registers their checks, in this (run) order
from .identifiability import evaluate_identifiability  # noqa: E402  isort: skip
from .loading_rates import evaluate_loading_rates  # noqa: E402  isort: skip
from .dimension_scaling import evaluate_dimension_scaling  # noqa: E402  isort: skip
from .pattern_recovery import evaluate_pattern_recovery  # noqa: E402  isort: skip
from .excess_risk import evaluate_excess_risk  # noqa: E402  isort: skip
from .over_alignment import evaluate_over_alignment  # noqa: E402  isort: skip
from .published_design import evaluate_published_design  # noqa: E402  isort: skip

__all__ = [
    "CHECKS",
    "Check",
    "CheckContext",
    "register_check",
    "available_checks",
    "run_check",
    "run_checks",
    "main",
    "loglog_slope",
    "affine_fit",
    "monotone_up_to_mc",
    "evaluate_identifiability",
    "evaluate_loading_rates",
    "evaluate_dimension_scaling",
    "evaluate_pattern_recovery",
    "evaluate_excess_risk",
    "evaluate_over_alignment",
    "evaluate_published_design",
]
