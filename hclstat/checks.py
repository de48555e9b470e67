"""Paper checks: one simulation per theoretical claim, judged by a constant-free criterion.

Each check simulates from the model, fits the estimators, measures, writes a
figure (``<out>/<name>/<name>.png``; log-log where a rate is claimed, with the
fitted slope and its bootstrap band) and a JSON summary
(``<out>/<name>/summary.json``: settings, numbers, every criterion and the
verdict), and passes or fails by a criterion that does not depend on unknown
constants (a log-log slope, a ratio, a probability, an exact identity).

========================  ===================================================================
check                     claim
========================  ===================================================================
``identifiability``       population covariance -> exact structures, ranks, subspaces and
                          signal blocks; correlated latents -> two parameter sets with equal
                          covariance, or a covariance the rank lattice flags
``loading_rates``         sin-theta error of every ``col(A_{m,S})`` ~ ``n^{-1/2}`` at every
                          level, isotropic and heteroskedastic noise; HCL within a bounded
                          ratio of the oracle MLE; concatenated PCA plateaus
``dimension_scaling``     mean squared sin-theta affine in ``p`` at fixed ``n``:
                          ``E sin^2 ~ (c0 + c1 p) / n``
``pattern_recovery``      P(exact hierarchy) rises to 1 with ``n`` and with signal strength
``excess_risk``           downstream excess risk ~ ``m^{-1}``, coefficient error ~ ``m^{-1/2}``,
                          task-relevant structures selected
``over_alignment``        the binary shared/private view keeps a bias on partially shared data;
                          HCL's error vanishes at ``n^{-1/2}``
``published_design``      DESIGN §7 design: block errors after one Procrustes rotation ~ ``n^{-1/2}``
========================  ===================================================================

Every check has a *quick* mode (CI, seconds) and a *full* mode (the figures of
``paper_checks/README.md``). Seeds are fixed: replication ``r`` of condition
``c`` of a check uses :func:`hclstat.studies.replication_seed` on the check's
base seed, so any number in a summary can be reproduced alone.

Run from Python (:func:`run_checks`), from the command line
(``hclstat check [NAME ...|all] [--quick] [--out DIR]``) or with the scripts
``paper_checks/<name>.py [--quick|--full] [--out DIR]`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .hierarchy import LEVELS, Hierarchy
from .metrics import block_errors, loading_errors, pattern_scores, subspace_distance
from .model import HierarchicalModel
from .studies import _atomic_write_text, _save, cell_hierarchy, replication_seed

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

logger = logging.getLogger(__name__)

#: tolerance for "exact" population recovery: sqrt(machine epsilon)
EXACT_TOL = float(np.sqrt(np.finfo(float).eps))
#: bootstrap resamples (over replications) for the slope bands
N_BOOT = 1000
#: colours of the methods in every figure
COLORS = {
    "hcl": "C0",
    "sfa": "C1",
    "hcl_learned": "C2",
    "pca": "C3",
    "shared_private": "C3",
    "oracle": "0.35",
}


# ================================================================ registry
@dataclass(frozen=True)
class Check:
    """A registered check.

    Attributes
    ----------
    name : str
    func : callable
        ``func(ctx: CheckContext) -> dict`` with keys ``results`` (numbers),
        ``criteria`` (list of criterion dicts, see :func:`_criterion`) and
        optionally ``notes`` (list of str).
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
    """

    name: str
    mode: str
    settings: dict
    seed: int
    out: Path
    warnings: Counter = field(default_factory=Counter)

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

    def fit(self, label, estimator, views, *args):
        """``estimator.fit(views, *args)``, counting its warnings under ``label``."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator.fit(views, *args)
        for w in caught:
            self.warnings[f"{label}: {w.category.__name__}"] += 1
        return estimator

    @property
    def figure_path(self):
        return self.out / f"{self.name}.png"


# ============================================================ statistics
def loglog_slope(x, values, *, n_boot=N_BOOT, random_state=0, level=0.95):
    """Log-log slope of the replication mean against ``x``, with a bootstrap band.

    Fits ``log mean_r values[:, r] = a + b log x`` by least squares. The band
    resamples replications (columns) with replacement, refits, and takes the
    percentile interval of the slope and of the fitted line at each ``x``.

    Parameters
    ----------
    x : array-like of shape (n_points,)
        Positive abscissae (sample sizes).
    values : array-like of shape (n_points, n_replications)
        Positive measurements; replication ``r`` may share randomness across
        points (nested samples), which the bootstrap respects.
    n_boot : int
    random_state : int
    level : float
        Coverage of the band.

    Returns
    -------
    dict
        ``slope``, ``intercept``, ``slope_ci`` (pair), ``mean`` and ``se``
        (per point), ``band_low`` / ``band_high`` (fitted line, per point).
    """
    x = np.asarray(x, dtype=np.float64)
    Y = np.asarray(values, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != x.shape[0]:
        raise ValueError(f"values: expected {x.shape[0]} rows (one per x), got {Y.shape[0]}")
    if np.any(x <= 0) or not np.all(np.isfinite(Y)) or np.any(Y.mean(axis=1) <= 0):
        raise ValueError("loglog_slope: expected positive x and finite values with positive means")
    lx = np.log(x)
    mean = Y.mean(axis=1)
    slope, intercept = np.polyfit(lx, np.log(mean), 1)
    R = Y.shape[1]
    se = Y.std(axis=1, ddof=1) / np.sqrt(R) if R > 1 else np.full(x.shape, np.nan)
    alpha = 100.0 * (1.0 - level) / 2.0
    if R > 1 and n_boot:
        rng = np.random.default_rng(random_state)
        idx = rng.integers(0, R, size=(n_boot, R))
        boot = Y[:, idx].mean(axis=2)  # (n_points, n_boot)
        boot = np.where(boot > 0, boot, np.nan)
        ok = np.all(np.isfinite(boot), axis=0)
        coef = np.polyfit(lx, np.log(boot[:, ok]), 1)
        lines = np.exp(coef[1][None, :] + coef[0][None, :] * lx[:, None])
        ci = np.percentile(coef[0], [alpha, 100.0 - alpha])
        band = np.percentile(lines, [alpha, 100.0 - alpha], axis=1)
    else:
        ci = np.array([np.nan, np.nan])
        band = np.vstack([np.exp(intercept + slope * lx)] * 2)
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "slope_ci": [float(ci[0]), float(ci[1])],
        "mean": mean,
        "se": se,
        "band_low": band[0],
        "band_high": band[1],
    }


def affine_fit(x, y):
    """Least-squares line ``y = intercept + slope x`` and its ``R^2``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    tss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / tss if tss > 0 else 0.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def monotone_up_to_mc(p, n_reps, *, z=2.0):
    """Whether proportions ``p`` (each from ``n_reps`` trials) never drop beyond Monte-Carlo error.

    Step ``i -> i+1`` may decrease by at most ``z`` standard errors of the
    difference of two independent proportions at their pooled value,
    ``z sqrt(2 pbar (1 - pbar) / n_reps)``.

    Returns
    -------
    (bool, list of float)
        The verdict and the largest allowed drop of each step.
    """
    p = np.asarray(p, dtype=np.float64)
    allowed = []
    ok = True
    for a, b in zip(p[:-1], p[1:]):
        pbar = 0.5 * (a + b)
        tol = z * math.sqrt(max(2.0 * pbar * (1.0 - pbar), 0.0) / n_reps)
        allowed.append(tol)
        if b < a - tol - 1e-12:
            ok = False
    return ok, allowed


def _criterion(name, statement, value, passed, **extra):
    """One pass/fail rule as stored in the summary."""
    out = {"name": name, "statement": statement, "value": value, "passed": bool(passed)}
    out.update(extra)
    return out


def _slope_criterion(name, fit, target, tol):
    s = fit["slope"]
    return _criterion(
        name,
        f"log-log slope within {target:+g} ± {tol:g}",
        s,
        abs(s - target) <= tol,
        ci=fit["slope_ci"],
    )


def _fit_summary(fit):
    """The JSON part of a :func:`loglog_slope` result."""
    return {
        "slope": fit["slope"],
        "slope_ci": fit["slope_ci"],
        "mean": fit["mean"],
        "se": fit["se"],
    }


# ============================================================== simulation
def _model_from_singular_values(h, d, rng, noise, noise_model="isotropic"):
    """The published loading law with given singular values ``d[(S, m)]`` (arrays of length k_S)."""
    loadings = {}
    for s in h.structures:
        k = h.rank(s)
        loadings[s] = {}
        for m in h.modalities:
            if m not in s:
                continue
            q, r = np.linalg.qr(rng.standard_normal((h.dims[m], k)))
            u = q * np.sign(np.diag(r))
            q2, r2 = np.linalg.qr(rng.standard_normal((k, k)))
            rot = q2 * np.sign(np.diag(r2))
            loadings[s][m] = (u * d[(s, m)]) @ rot
    if noise_model == "isotropic":
        psi = {m: np.full(h.dims[m], float(noise)) for m in h.modalities}
    else:
        psi = {m: noise * np.exp(rng.uniform(-np.log(4.0), np.log(4.0), h.dims[m])) for m in h.modalities}
    return HierarchicalModel(h, loadings, psi)


def _streamed_moments(model, n, rng, chunk=100_000):
    """Sample moments of ``n`` rows of ``model`` drawn ``chunk`` rows at a time (no ``n x p`` array)."""
    from .moments import moments_from_covariance

    h = model.hierarchy
    p = h.n_features
    total = np.zeros(p)
    cross = np.zeros((p, p))
    done = 0
    while done < n:
        k = min(chunk, n - done)
        views, _ = model.sample(k, random_state=rng)
        X = np.concatenate([views[m] for m in h.modalities], axis=1)
        total += X.sum(axis=0)
        cross += X.T @ X
        done += k
    mean = total / n
    cov = (cross - n * np.outer(mean, mean)) / (n - 1)
    return moments_from_covariance(cov, h.dims, n, means=mean)


def _prefix(views, n):
    return {m: v[:n] for m, v in views.items()}


def _d1(dims):
    """Design D1: one global, one {a,b} and one specific component per modality."""
    names = tuple(dims)
    ranks = {names: 1, names[:2]: 1}
    ranks.update({m: 1 for m in names})
    return Hierarchy(dict(dims), ranks)


def _published(dims, r):
    names = tuple(dims)
    subsets = [c for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)]
    return Hierarchy(dict(dims), {s: r for s in subsets})


def _level_means(errors, h, levels=LEVELS):
    """Mean of ``{(structure, modality): value}`` per level (NaN for an empty level)."""
    out = {}
    for lv in levels:
        vals = [v for (s, _), v in errors.items() if s in h.ranks and h.level(s) == lv]
        out[lv] = float(np.mean(vals)) if vals else math.nan
    return out


def _levels_of(h):
    return [lv for lv in LEVELS if any(h.level(s) == lv for s in h.structures)]


def _cross_covariance(loadings, a, b, shape):
    """``sum_{S ∋ a, b} A_{a,S} A_{b,S}^T`` of a loading dict."""
    out = np.zeros(shape)
    for blocks in loadings.values():
        if a in blocks and b in blocks:
            out += blocks[a] @ blocks[b].T
    return out


# =============================================================== figures
def _figure(n_rows, n_cols, width=4.0, height=3.3):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    return fig, axes


def _rate_panel(ax, x, fit, label, color, *, marker="o", ls="-", band=True):
    """Means with ±1 SE bars, the fitted line and its bootstrap band, on log-log axes."""
    x = np.asarray(x, dtype=np.float64)
    mean, se = np.asarray(fit["mean"]), np.asarray(fit["se"])
    lo = np.clip(mean - np.nan_to_num(se), mean * 0.05, None)
    ax.errorbar(x, mean, yerr=[mean - lo, np.nan_to_num(se)], fmt=marker, color=color, ms=4, capsize=2, lw=1)
    line = np.exp(fit["intercept"] + fit["slope"] * np.log(x))
    ci = fit["slope_ci"]
    text = f"{label}: slope {fit['slope']:.3f}"
    if np.all(np.isfinite(ci)):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    ax.plot(x, line, ls=ls, color=color, lw=1.3, label=text)
    if band:
        ax.fill_between(x, fit["band_low"], fit["band_high"], color=color, alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _grid_ticks(ax, x)
    ax.grid(True, which="both", alpha=0.3)


def _legend_below(ax, fontsize=6.5):
    """Legend in the lower left of a log-log panel, after lowering the y-axis so it covers no data."""
    handles, _ = ax.get_legend_handles_labels()
    lo, hi = ax.get_ylim()
    frac = min(0.09 * len(handles) + 0.04, 0.6)  # share of the height the legend needs
    ax.set_ylim(lo / (hi / lo) ** (frac / (1.0 - frac)), hi)
    ax.legend(fontsize=fontsize, loc="lower left")


def _compact(v):
    v = float(v)
    if v >= 1000 and v % 1000 == 0:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _grid_ticks(ax, x):
    """Major ticks at the grid values (compact labels), no minor labels: log axes stay readable."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    x = np.asarray(x, dtype=np.float64)
    ax.xaxis.set_major_locator(FixedLocator(x))
    ax.set_xticklabels([_compact(v) for v in x])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _reference_slope(ax, x, y0, slope, label=None):
    x = np.asarray(x, dtype=np.float64)
    ax.plot(x, y0 * (x / x[0]) ** slope, ls=":", color="0.5", lw=1, label=label or f"slope {slope:g}")


def _save_figure(fig, path):
    return str(_save(fig, path))


# =================================================================== JSON
def _jsonable(obj):
    """Plain JSON types; non-finite floats become None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (frozenset, set)):
        return sorted(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _write_json(path, doc):
    _atomic_write_text(path, json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")


# =============================================================================
# 1. identifiability
# =============================================================================
_IDENT_QUICK = {"n_hierarchies": 30, "M": [3, 5], "p": [8, 20], "max_rank": 2, "structure_probability": 0.5,
                "n_counterexamples": 10, "rho": 0.5}
_IDENT_FULL = {"n_hierarchies": 300, "M": [3, 6], "p": [8, 30], "max_rank": 3, "structure_probability": 0.5,
               "n_counterexamples": 100, "rho": 0.5}


def _random_identifiable(ctx, i, noise_model, settings, max_tries=100):
    """A random hierarchy meeting :func:`check_identifiable` for ``noise_model``; tries used."""
    from .identify import check_identifiable

    rng_h, rng_m = ctx.streams(0, i)
    lo_M, hi_M = settings["M"]
    lo_p, hi_p = settings["p"]
    for tries in range(1, max_tries + 1):
        M = int(rng_h.integers(lo_M, hi_M + 1))
        p = tuple(int(v) for v in rng_h.integers(lo_p, hi_p + 1, size=M))
        # about M + 2 structures whatever M (2^M - 1 candidate subsets)
        q = min(settings["structure_probability"], (M + 2) / (2**M - 1))
        params = {"hierarchy": "random", "M": M, "p": p, "rank": settings["max_rank"], "structure_probability": q}
        try:
            h = cell_hierarchy(params, random_state=rng_h)
        except ValueError:  # ranks do not fit these dimensions: draw again
            continue
        if check_identifiable(h, noise_model).identifiable:
            return h, rng_m, tries
    raise RuntimeError(f"no identifiable random hierarchy for {noise_model!r} in {max_tries} draws")


def _recovery_errors(ident, model, noise_model):
    """Largest errors of an :class:`~hclstat.identify.Identification` against the truth."""
    h = model.hierarchy
    target = h if noise_model is not None else Hierarchy(h.dims, {s: k for s, k in h.ranks.items() if len(s) > 1})
    exact = ident.hierarchy == target
    sub, blk = 0.0, 0.0
    noise = 0.0 if noise_model is not None else math.nan  # no noise is identified without a noise model
    if exact:
        for s in target.structures:
            for m in s:
                sub = max(sub, subspace_distance(ident.subspaces[s][m], model.loadings[s][m]))
            for (a, b), B in ident.blocks[s].items():
                T = model.loadings[s][a] @ model.loadings[s][b].T
                blk = max(blk, float(np.linalg.norm(B - T) / np.linalg.norm(T)))
        if noise_model is not None:
            for m in h.modalities:
                noise = max(noise, float(np.max(np.abs(ident.noise_variances[m] / model.noise_variances[m] - 1.0))))
    else:
        sub = blk = noise = math.inf
    return exact, sub, blk, noise


def evaluate_identifiability(results):
    """Criteria of the identifiability check from its ``results`` dict."""
    rec = results["recovery"]
    ce = results["counterexample"]
    det = results["detectable"]
    tol = EXACT_TOL
    crit = [
        _criterion("exact_hierarchy", "identify() returns the true structures and ranks for every random hierarchy",
                   rec["n_exact"], rec["n_exact"] == rec["n"], n=rec["n"]),
        _criterion("subspaces_exact", f"max sin-theta error of every col(A_mS) <= sqrt(eps) = {tol:.1e}",
                   rec["max_sin_theta"], rec["max_sin_theta"] <= tol),
        _criterion("blocks_exact", f"max relative error of every signal block A_mS A_m'S^T <= {tol:.1e}",
                   rec["max_block_error"], rec["max_block_error"] <= tol),
        _criterion("noise_exact", f"max relative error of the noise variances <= {tol:.1e}",
                   rec["max_noise_error"], rec["max_noise_error"] <= tol),
        _criterion("counterexample_equal_covariance",
                   f"correlated-latent counterexamples: the two covariances agree to <= {tol:.1e} (relative)",
                   ce["max_covariance_difference"], ce["max_covariance_difference"] <= tol),
        _criterion("counterexample_different_loadings",
                   "... while their loadings differ (nested construction, same pattern): min over pairs of the "
                   "largest sin-theta distance between the two models' col(A_mS) exceeds 1e6 x the covariance "
                   "difference (the specific-pair construction differs in its pattern itself)",
                   ce["min_loading_difference"],
                   ce["min_loading_difference"] > 1e6 * max(ce["max_covariance_difference"], np.finfo(float).eps)),
        _criterion("counterexample_not_recoverable",
                   "nested construction: identify() on the correlated model returns the uncorrelated twin's "
                   "subspaces (<= sqrt(eps)); in no instance does it return the correlated model itself",
                   ce["max_distance_to_twin"],
                   ce["max_distance_to_twin"] <= tol and ce["n_recovering_correlated_model"] == 0),
        _criterion("detectable_flagged",
                   "spurious-sharing covariances (correlated specific latents) are flagged: member rank "
                   "estimates disagree and an EstimationWarning is raised, in every instance",
                   det["n_flagged"], det["n_flagged"] == det["n"], n=det["n"]),
    ]
    return crit


@register_check(
    "identifiability",
    claim="From the population covariance, the structures, ranks, column spaces col(A_mS), signal blocks "
          "and noise are recovered exactly; with correlated latents distinct parameters give the same "
          "covariance (and some correlations are detectable).",
    criterion="all random hierarchies recovered with errors <= sqrt(machine eps); counterexamples with "
              "equal covariances and different loadings; every detectable case flagged",
    quick=_IDENT_QUICK,
    full=_IDENT_FULL,
    seed=20240701,
)
def identifiability(ctx):
    from .exceptions import EstimationWarning
    from .identify import check_model, counterexample, identify

    s = ctx.settings
    models = ("isotropic", "diagonal", None)
    per = []
    tries_total = 0
    for i in range(s["n_hierarchies"]):
        noise_model = models[i % 3]
        h, rng, tries = _random_identifiable(ctx, i, noise_model or "isotropic", s)
        tries_total += tries
        model = HierarchicalModel.random(h, noise=1.0, noise_model=noise_model or "diagonal", random_state=rng)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ident = identify(model.covariance(), h.dims, noise_model=noise_model)
        exact, sub, blk, noise = _recovery_errors(ident, model, noise_model)
        per.append({"hierarchy": h.to_dict(), "noise_model": noise_model or "none", "exact": exact,
                    "sin_theta": sub, "block": blk, "noise": noise, "warnings": len(caught),
                    "general_position": bool(check_model(model, noise_model=noise_model).identifiable)})
    finite = [r for r in per if r["exact"]]
    recovery = {
        "n": len(per),
        "n_exact": sum(r["exact"] for r in per),
        "by_noise_model": dict(Counter(r["noise_model"] for r in per)),
        "draws_per_identifiable_hierarchy": tries_total / max(len(per), 1),
        "max_sin_theta": max((r["sin_theta"] for r in per), default=0.0),
        "max_block_error": max((r["block"] for r in per), default=0.0),
        "max_noise_error": max((r["noise"] for r in per if not math.isnan(r["noise"])), default=0.0),
        "median_sin_theta": float(np.median([r["sin_theta"] for r in finite])) if finite else math.nan,
        "instances": per,
    }

    # correlated latents: equal covariance, different loadings (and the twin is what identify() sees)
    rows = []
    det_rows = []
    rho = s["rho"]
    for i in range(s["n_counterexamples"]):
        rng_h, rng_m = ctx.streams(1, i)
        M = 3 + i % 2
        dims = {m: int(v) for m, v in zip("abcd"[:M], rng_h.integers(10, 20, size=M))}
        names = tuple(dims)
        # global + specifics, with and without an {a,b} structure (nested pairs: the twin keeps the
        # pattern); every fifth: specifics only (the twin gains an {a,b} structure instead)
        ranks = {m: 1 + int(rng_h.integers(0, 2)) for m in names}
        if i % 5 != 4:
            ranks[names] = 1
            if i % 2 == 0:
                ranks[names[:2]] = 1
        h = Hierarchy(dims, ranks)
        ma, mb = counterexample(h, rho, random_state=rng_m, kind="equal_covariance")
        Sa, Sb = ma.covariance(), mb.covariance()
        cov_diff = float(np.max(np.abs(Sa - Sb)) / np.max(np.abs(Sa)))
        nested = ma.hierarchy == mb.hierarchy
        row = {"hierarchy": h.to_dict(), "construction": "nested" if nested else "specific_pair",
               "twin_hierarchy": mb.hierarchy.to_dict(), "covariance_difference": cov_diff,
               "check_model_flags_a": not check_model(ma).identifiable}
        if nested:
            row["loading_difference"] = max(subspace_distance(ma.loadings[t][m], mb.loadings[t][m])
                                            for t in h.structures for m in t)
        else:  # the twin has an extra pair structure: the two parameter sets differ in their very pattern
            row["loading_difference"] = None
        row["recovers_correlated_model"] = False
        row["distance_to_twin"] = math.inf
        try:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                ident = identify(Sa, h.dims, noise_model="isotropic")
        except ValueError as exc:
            row["identify"] = f"raised {type(exc).__name__}: {exc}"
        else:
            row["identify"] = ident.hierarchy.to_dict()
            if ident.hierarchy == mb.hierarchy:
                row["distance_to_twin"] = max(subspace_distance(ident.subspaces[t][m], mb.loadings[t][m])
                                              for t in mb.hierarchy.structures for m in t)
            if ident.hierarchy == h:
                row["recovers_correlated_model"] = max(
                    subspace_distance(ident.subspaces[t][m], ma.loadings[t][m]) for t in h.structures for m in t
                ) <= EXACT_TOL
        rows.append(row)
        # the detectable kind needs specific structures on three modalities
        model = counterexample(h, rho, random_state=rng_m, kind="spurious_sharing")
        # the flag lives in the rank lattice, which needs no noise model
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ident = identify(model.covariance(), h.dims, noise_model=None)
        warned = any(issubclass(w.category, EstimationWarning) for w in caught)
        det_rows.append({"hierarchy": h.to_dict(), "warned": warned,
                         "inconsistent": not ident.rank_consistency.consistent,
                         "disagreements": list(ident.rank_consistency.disagreements),
                         "identified_hierarchy": ident.hierarchy.to_dict()})
    nested_rows = [r for r in rows if r["construction"] == "nested"]
    counter = {
        "rho": rho,
        "n": len(rows),
        "n_nested": len(nested_rows),
        "n_specific_pair": len(rows) - len(nested_rows),
        "max_covariance_difference": max(r["covariance_difference"] for r in rows),
        "min_loading_difference": min((r["loading_difference"] for r in nested_rows), default=math.nan),
        "max_distance_to_twin": max((r["distance_to_twin"] for r in nested_rows), default=math.nan),
        "n_recovering_correlated_model": sum(r["recovers_correlated_model"] for r in rows),
        "n_flagged_by_check_model": sum(r["check_model_flags_a"] for r in rows),
        "instances": rows,
    }
    detect = {"rho": rho, "n": len(det_rows), "n_flagged": sum(r["warned"] and r["inconsistent"] for r in det_rows),
              "instances": det_rows}
    results = {"recovery": recovery, "counterexample": counter, "detectable": detect}
    crit = evaluate_identifiability(results)

    fig, axes = _figure(1, 2, width=5.0)
    ax = axes[0, 0]
    floor = 1e-17
    data = [[max(r[k], floor) for r in per if r["exact"] and not math.isnan(r[k])]
            for k in ("sin_theta", "block", "noise")]
    labels = ("sin-theta col(A_mS)", "signal blocks (rel.)", "noise variances (rel.)")
    for j, (vals, lab) in enumerate(zip(data, labels)):
        jitter = np.linspace(-0.15, 0.15, len(vals)) if vals else []
        ax.scatter(np.full(len(vals), j) + jitter, vals, s=10, alpha=0.6, label=lab)
    ax.axhline(EXACT_TOL, color="k", ls="--", lw=1, label="criterion sqrt(eps)")
    ax.set_yscale("log")
    ax.set_xticks([0, 1, 2], ["subspaces", "blocks", "noise"])
    ax.set_ylabel("largest error per hierarchy")
    ax.set_title(f"population recovery: {recovery['n_exact']}/{recovery['n']} hierarchies exact")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    cd = [max(r["covariance_difference"], floor) for r in nested_rows]
    ld = [r["loading_difference"] for r in nested_rows]
    td = [max(r["distance_to_twin"], floor) for r in nested_rows]
    xs = np.arange(len(nested_rows))
    ax.scatter(xs, cd, s=14, label="|Sigma_a - Sigma_b| (rel.)")
    ax.scatter(xs, ld, s=14, label="max sin-theta between loadings a, b")
    ax.scatter(xs, td, s=14, marker="x", label="identify(Sigma_a) vs model b")
    ax.axhline(EXACT_TOL, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("counterexample (nested construction)")
    ax.set_title(f"correlated latents (rho = {rho}); detectable flagged {detect['n_flagged']}/{detect['n']}")
    ax.legend(fontsize=7)
    return {"results": results, "criteria": crit, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 2. loading_rates
# =============================================================================
_RATES_QUICK = {"dims": {"a": 50, "b": 60, "c": 70}, "noise": 0.5, "singular_values": [0.5, 1.5],
                "n": [1000, 2000, 4000, 8000, 16000], "replications": 10, "learned_replications": 5,
                "slope_tol": 0.1, "nsq_tol": 0.2, "max_ratio": 1.5, "ratio_slope_max": 0.1, "pca_plateau": -0.25}
_RATES_FULL = dict(_RATES_QUICK, n=[1000, 2000, 4000, 8000, 16000, 32000, 64000], replications=30,
                   learned_replications=10)


def evaluate_loading_rates(results, settings):
    """Criteria of the loading-rates check from its ``results`` dict."""
    crit = []
    for nm, res in results["noise_models"].items():
        for lv, fit in res["hcl"]["levels"].items():
            crit.append(_slope_criterion(f"{nm}/{lv}/hcl_slope", fit, -0.5, settings["slope_tol"]))
            nsq = res["hcl"]["n_sq_err"][lv]
            crit.append(_criterion(f"{nm}/{lv}/n_times_sq_error_flat",
                                   f"log-log slope of n x mean sin^2 within 0 ± {settings['nsq_tol']:g}",
                                   nsq["slope"], abs(nsq["slope"]) <= settings["nsq_tol"], ci=nsq["slope_ci"]))
            ratio = res["ratio_to_sfa"][lv]
            worst = float(np.max(ratio["ratio"]))
            crit.append(_criterion(f"{nm}/{lv}/ratio_to_oracle_bounded",
                                   f"max over n of mean error HCL / SFA(true pattern) <= {settings['max_ratio']:g}",
                                   worst, worst <= settings["max_ratio"]))
            crit.append(_criterion(f"{nm}/{lv}/ratio_to_oracle_not_growing",
                                   f"log-log slope of the ratio HCL / SFA <= {settings['ratio_slope_max']:g}",
                                   ratio["slope"], ratio["slope"] <= settings["ratio_slope_max"]))
    pca = results["noise_models"]["diagonal"]["pca_global"]
    crit.append(_criterion("diagonal/global/pca_plateaus",
                           f"concatenated PCA, global structure, heteroskedastic noise: log-log slope > "
                           f"{settings['pca_plateau']:g} (its error does not vanish at n^-1/2)",
                           pca["slope"], pca["slope"] > settings["pca_plateau"], ci=pca["slope_ci"]))
    return crit


def _ratio_fit(n, num, den):
    r = np.asarray(num) / np.asarray(den)
    return {"ratio": r, "slope": float(np.polyfit(np.log(n), np.log(r), 1)[0])}


@register_check(
    "loading_rates",
    claim="The sin-theta error of every col(A_mS) decays like n^-1/2 at every level (global, partial, "
          "specific), for isotropic and heteroskedastic noise, within a bounded factor of the oracle MLE; "
          "PCA on concatenated views does not (it plateaus under heteroskedastic noise).",
    criterion="HCL (true pattern) log-log slope within -1/2 ± 0.1 per level; n x squared error flat "
              "(slope within 0 ± 0.2); HCL/SFA ratio <= 1.5 and not growing (slope <= 0.1); PCA's global "
              "slope > -0.25 under diagonal noise",
    quick=_RATES_QUICK,
    full=_RATES_FULL,
    seed=20240702,
)
def loading_rates(ctx):
    from .baselines import ConcatenatedPCA
    from .estimators.hcl import HCL
    from .estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    h = _d1(s["dims"])
    ns = np.asarray(s["n"])
    R = s["replications"]
    levels = _levels_of(h)
    glob = h.structures[0]
    out = {"noise_models": {}}
    for c, nm in enumerate(("isotropic", "diagonal")):
        err = {meth: {lv: np.zeros((len(ns), R)) for lv in levels} for meth in ("hcl", "sfa")}
        sq = {lv: np.zeros((len(ns), R)) for lv in levels}
        pca = np.zeros((len(ns), R))
        learned = []
        for r in range(R):
            rng_model, rng_data = ctx.streams(c, r)
            model = HierarchicalModel.random(h, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                             noise_model=nm, random_state=rng_model)
            views, _ = model.sample(int(ns[-1]), random_state=rng_data)
            for i, n in enumerate(ns):
                v = _prefix(views, int(n))
                for meth, est in (("hcl", HCL(h, noise_model=nm, random_state=r)),
                                  ("sfa", StructuredFactorAnalysis(h, noise_model=nm, random_state=r))):
                    ctx.fit(f"{nm}/{meth}", est, v)
                    e = loading_errors(est.loadings_, model.loadings)
                    for lv, val in _level_means(e, h, levels).items():
                        err[meth][lv][i, r] = val
                    if meth == "hcl":
                        for lv, val in _level_means({k: x**2 for k, x in e.items()}, h, levels).items():
                            sq[lv][i, r] = val
                p = ctx.fit(f"{nm}/pca", ConcatenatedPCA(h.rank(glob)), v)
                pca[i, r] = float(np.mean([subspace_distance(p.loadings_[glob][m], model.loadings[glob][m])
                                           for m in h.modalities]))
            if r < s["learned_replications"]:
                est = ctx.fit(f"{nm}/hcl_learned", HCL(None, noise_model=nm, random_state=r), views)
                sc = pattern_scores(est.hierarchy_, h)
                learned.append({"exact": bool(sc["exact"]), "hierarchy": est.hierarchy_.to_dict(),
                                "levels": _level_means(loading_errors(est.loadings_, model.loadings), h, levels),
                                "hcl_known_levels": {lv: err["hcl"][lv][-1, r] for lv in levels}})
        seed = 1000 * c
        res = {"hcl": {"levels": {}, "n_sq_err": {}}, "sfa": {"levels": {}}, "ratio_to_sfa": {}}
        fits = {"hcl": {}, "sfa": {}}
        for lv in levels:
            for meth in ("hcl", "sfa"):
                fits[meth][lv] = loglog_slope(ns, err[meth][lv], random_state=seed)
                res[meth]["levels"][lv] = fits[meth][lv]
            res["hcl"]["n_sq_err"][lv] = loglog_slope(ns, ns[:, None] * sq[lv], random_state=seed)
            res["ratio_to_sfa"][lv] = _ratio_fit(ns, err["hcl"][lv].mean(axis=1), err["sfa"][lv].mean(axis=1))
        res["pca_global"] = loglog_slope(ns, pca, random_state=seed)
        n_exact = sum(x["exact"] for x in learned)
        res["hcl_learned_at_largest_n"] = {
            "n": int(ns[-1]),
            "replications": len(learned),
            "exact_fraction": n_exact / max(len(learned), 1),
            "mean_error_when_exact": {lv: float(np.mean([x["levels"][lv] for x in learned if x["exact"]]))
                                      if n_exact else math.nan for lv in levels},
            "hcl_known_mean_error_same_replications": {
                lv: float(np.mean([x["hcl_known_levels"][lv] for x in learned])) if learned else math.nan
                for lv in levels},
            "instances": learned,
        }
        out["noise_models"][nm] = res
        out["noise_models"][nm]["_fits"] = fits

    # control: one global structure only, where PCA is consistent under equal isotropic noise
    hg = Hierarchy(dict(s["dims"]), {tuple(s["dims"]): 1})
    control = {}
    for c, nm in enumerate(("isotropic", "diagonal"), start=2):
        e = np.zeros((len(ns), R))
        for r in range(R):
            rng_model, rng_data = ctx.streams(c, r)
            model = HierarchicalModel.random(hg, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                             noise_model=nm, random_state=rng_model)
            views, _ = model.sample(int(ns[-1]), random_state=rng_data)
            g = hg.structures[0]
            for i, n in enumerate(ns):
                p = ConcatenatedPCA(1).fit(_prefix(views, int(n)))
                e[i, r] = float(np.mean([subspace_distance(p.loadings_[g][m], model.loadings[g][m])
                                         for m in hg.modalities]))
        control[nm] = loglog_slope(ns, e, random_state=c)
    out["pca_control_global_only"] = control

    crit = evaluate_loading_rates(out, s)

    fig, axes = _figure(2, len(levels) + 1, width=3.9, height=3.4)
    for row, nm in enumerate(("isotropic", "diagonal")):
        res = out["noise_models"][nm]
        fits = res.pop("_fits")
        for j, lv in enumerate(levels):
            ax = axes[row, j]
            _rate_panel(ax, ns, fits["hcl"][lv], "HCL (true pattern)", COLORS["hcl"])
            _rate_panel(ax, ns, fits["sfa"][lv], "SFA oracle", COLORS["sfa"], marker="s", ls="--", band=False)
            if lv == "global":
                _rate_panel(ax, ns, res["pca_global"], "concatenated PCA", COLORS["pca"], marker="^", ls="-.")
                _rate_panel(ax, ns, control[nm], "PCA, global-only design (control)", "C5", marker="v", ls=":",
                            band=False)
            _reference_slope(ax, ns, fits["hcl"][lv]["mean"][0] * 1.4, -0.5, "slope -1/2")
            ax.set_title(f"{nm} noise: {lv}")
            ax.set_xlabel("n")
            ax.set_ylabel("mean sin-theta")
            _legend_below(ax)
        ax = axes[row, -1]
        for lv in levels:
            ratio = res["ratio_to_sfa"][lv]
            ax.plot(ns, ratio["ratio"], marker="o", label=f"{lv}: slope {ratio['slope']:+.3f}")
        ax.axhline(1.0, color="0.5", lw=1)
        ax.axhline(s["max_ratio"], color="k", ls="--", lw=1, label=f"criterion {s['max_ratio']:g}")
        ax.set_xscale("log")
        _grid_ticks(ax, ns)
        ax.set_ylim(0.5, max(1.7, float(np.nanmax([np.max(res["ratio_to_sfa"][lv]["ratio"]) for lv in levels])) * 1.1))
        ax.set_title(f"{nm}: error ratio HCL / SFA")
        ax.set_xlabel("n")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5)
        # drop the bands from the JSON (they are in the figure)
        for part in ("hcl", "sfa"):
            res[part]["levels"] = {lv: _fit_summary(f) for lv, f in res[part]["levels"].items()}
        res["hcl"]["n_sq_err"] = {lv: _fit_summary(f) for lv, f in res["hcl"]["n_sq_err"].items()}
        res["pca_global"] = _fit_summary(res["pca_global"])
    out["pca_control_global_only"] = {nm: _fit_summary(f) for nm, f in control.items()}
    out["n"] = ns
    notes = [
        "HCL is given the true hierarchy (rates); HCL learning the pattern is reported at the largest n only.",
        "Each replication draws one model and one sample of the largest n; smaller n use its first rows "
        "(nested samples), so a replication's errors are correlated across n; the slope bands bootstrap "
        "whole replications.",
        "In design D1 concatenated PCA is biased even under isotropic noise (it mixes the global component with "
        "the other structures that load on the same modalities); the control 'pca_control_global_only' "
        "(one global structure, nothing else) isolates the heteroskedastic-noise bias: PCA is consistent "
        "(slope -1/2) under equal isotropic noise and plateaus under diagonal noise.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 3. dimension_scaling
# =============================================================================
_DIM_QUICK = {"p": [16, 32, 64, 128], "n": [4000, 8000], "noise": 1.0, "singular_values": [0.5, 1.5],
              "replications": 16, "min_r2": 0.9, "slope_ratio_tol": 0.3}
_DIM_FULL = dict(_DIM_QUICK, p=[25, 50, 100, 200, 400], n=[8000, 16000], replications=20)


def evaluate_dimension_scaling(results, settings):
    """Criteria of the dimension-scaling check from its ``results`` dict."""
    crit = []
    ns = results["n"]
    for lv, per_n in results["hcl"].items():
        for n in ns:
            fit = per_n[str(n)]
            crit.append(_criterion(f"n={n}/{lv}/affine_r2",
                                   f"R^2 of the affine fit of mean sin^2 on p >= {settings['min_r2']:g}",
                                   fit["r2"], fit["r2"] >= settings["min_r2"]))
            crit.append(_criterion(f"n={n}/{lv}/positive_slope",
                                   "slope of mean sin^2 in p > 0 (bootstrap 95% interval above 0)",
                                   fit["slope"], fit["slope_ci"][0] > 0, ci=fit["slope_ci"]))
        if len(ns) == 2:
            a, b = per_n[str(ns[0])]["slope"], per_n[str(ns[1])]["slope"]
            expect = math.log2(ns[1] / ns[0])
            val = math.log2(a / b) if a > 0 and b > 0 else -math.inf
            crit.append(_criterion(f"{lv}/slope_scales_as_1_over_n",
                                   f"log2(slope at n={ns[0]} / slope at n={ns[1]}) within {expect:g} ± "
                                   f"{settings['slope_ratio_tol']:g} (the p-coefficient is c1/n)",
                                   val, abs(val - expect) <= settings["slope_ratio_tol"]))
    return crit


@register_check(
    "dimension_scaling",
    claim="At fixed loading singular values, the mean squared sin-theta error is affine in p: "
          "E sin^2 ≈ (c0 + c1 p) / n.",
    criterion="per level and n: affine fit of mean sin^2 on p with R^2 >= 0.9 and a slope whose bootstrap "
              "interval is above 0; the slope halves when n doubles (log2 ratio within 1 ± 0.3)",
    quick=_DIM_QUICK,
    full=_DIM_FULL,
    seed=20240703,
)
def dimension_scaling(ctx):
    from .estimators.hcl import HCL
    from .estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    ps = np.asarray(s["p"])
    ns = list(s["n"])
    R = s["replications"]
    h0 = _d1({"a": int(ps[0]), "b": int(ps[0]), "c": int(ps[0])})
    levels = _levels_of(h0)
    a, b = s["singular_values"]
    sq = {meth: {n: {lv: np.zeros((len(ps), R)) for lv in levels} for n in ns} for meth in ("hcl", "sfa")}
    for r in range(R):
        rng_d, _ = ctx.streams(0, r)
        # one set of singular values per replication, shared by every p and n (fixed signal)
        d = {(st, m): rng_d.uniform(a, b, h0.rank(st)) for st in h0.structures for m in st}
        for i, p in enumerate(ps):
            h = _d1({"a": int(p), "b": int(p), "c": int(p)})
            rng_model, rng_data = ctx.streams(1 + i, r)
            model = _model_from_singular_values(h, d, rng_model, s["noise"])
            views, _ = model.sample(max(ns), random_state=rng_data)
            for n in ns:
                v = _prefix(views, n)
                for meth, est in (("hcl", HCL(h, noise_model="isotropic", random_state=r)),
                                  ("sfa", StructuredFactorAnalysis(h, noise_model="isotropic", random_state=r))):
                    ctx.fit(meth, est, v)
                    e = loading_errors(est.loadings_, model.loadings)
                    for lv, val in _level_means({k: x**2 for k, x in e.items()}, h, levels).items():
                        sq[meth][n][lv][i, r] = val
    out = {"n": ns, "p": ps, "form": "E sin^2 ≈ (c0 + c1 p) / n: affine in p at fixed n, slope c1 / n"}
    rng = np.random.default_rng(ctx.seed)
    fits = {}
    for meth in ("hcl", "sfa"):
        out[meth] = {}
        for lv in levels:
            out[meth][lv] = {}
            for n in ns:
                Y = sq[meth][n][lv]
                fit = affine_fit(ps, Y.mean(axis=1))
                idx = rng.integers(0, R, size=(N_BOOT, R))
                boot = np.polyfit(ps, Y[:, idx].mean(axis=2), 1)[0]
                fit["slope_ci"] = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
                fit["mean"] = Y.mean(axis=1)
                fit["se"] = Y.std(axis=1, ddof=1) / np.sqrt(R)
                fit["n_times_mean"] = n * Y.mean(axis=1)
                out[meth][lv][str(n)] = fit
                fits[(meth, lv, n)] = fit
    crit = evaluate_dimension_scaling({"n": ns, "hcl": out["hcl"]}, s)

    fig, axes = _figure(2, len(levels), width=4.0, height=3.4)
    for j, lv in enumerate(levels):
        ax = axes[0, j]
        for k, n in enumerate(ns):
            for meth, mk in (("hcl", "o"), ("sfa", "s")):
                f = fits[(meth, lv, n)]
                color = f"C{2 * k + (meth == 'sfa')}"
                ax.errorbar(ps, f["mean"], yerr=f["se"], fmt=mk, color=color, ms=4, capsize=2)
                if meth == "hcl":
                    xs = np.linspace(0, ps.max(), 50)
                    ax.plot(xs, f["intercept"] + f["slope"] * xs, color=color, lw=1.2,
                            label=f"HCL n={n}: R²={f['r2']:.3f}")
                else:
                    ax.plot([], [], mk, color=color, label=f"SFA n={n}")
        ax.set_title(f"{lv}: mean sin² vs p")
        ax.set_xlabel("p (each modality)")
        ax.set_ylabel("mean sin²θ")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5)
        ax = axes[1, j]
        for k, n in enumerate(ns):
            f = fits[("hcl", lv, n)]
            ax.errorbar(ps, n * f["mean"], yerr=n * f["se"], fmt="o", color=f"C{2 * k}", ms=4, capsize=2,
                        label=f"n={n}: n × slope = {n * f['slope']:.2f}")
            xs = np.linspace(0, ps.max(), 50)
            ax.plot(xs, n * (f["intercept"] + f["slope"] * xs), color=f"C{2 * k}", lw=1)
        ax.set_title(f"{lv}: n × mean sin² vs p (one line ⇔ (c0 + c1 p)/n)", fontsize=9)
        ax.set_xlabel("p (each modality)")
        ax.set_ylabel("n × mean sin²θ")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5)
    notes = [
        "Design D1 with p_a = p_b = p_c = p; loadings = Haar orthonormal basis x singular values x rotation; "
        "the singular values are drawn once per replication from U[a, b] and reused for every p and n, so only "
        "p (and n) change between cells.",
        "The same sample of max(n) rows per (p, replication) is used for both n (its first rows for the smaller).",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 4. pattern_recovery
# =============================================================================
_PATTERN_QUICK = {"dims": {"a": 20, "b": 25, "c": 30}, "noise": 1.0, "replications": 40,
                  "n": [250, 500, 1000, 2000, 4000, 8000], "loading_scale_for_n": 0.2,
                  "loading_scale": [0.1, 0.15, 0.2, 0.3, 0.5, 1.0], "n_for_loading_scale": 1000,
                  "min_final": 0.9, "fwer": 0.05}
_PATTERN_FULL = dict(_PATTERN_QUICK, dims={"a": 50, "b": 60, "c": 70}, replications=100,
                     n=[250, 500, 1000, 2000, 4000, 8000, 16000], loading_scale_for_n=0.1,
                     loading_scale=[0.05, 0.075, 0.1, 0.15, 0.3, 1.0], n_for_loading_scale=500)


def evaluate_pattern_recovery(results, settings):
    """Criteria of the pattern-recovery check from its ``results`` dict."""
    from scipy.stats import norm

    crit = []
    R = results["replications"]
    sweeps = ("n", "loading_scale")
    n_steps = sum(len(results[sw]["hcl_exact"]) - 1 for sw in sweeps)
    # one-sided z-test of each drop, Bonferroni over every step of both sweeps
    z = float(norm.ppf(1.0 - settings["fwer"] / max(n_steps, 1)))
    for sweep in sweeps:
        p = np.asarray(results[sweep]["hcl_exact"])
        ok, allowed = monotone_up_to_mc(p, R, z=z)
        crit.append(_criterion(f"vs_{sweep}/non_decreasing",
                               f"no drop of P(exact) between neighbouring grid points is significant (one-sided "
                               f"z-test at family-wise level {settings['fwer']:g} over {n_steps} steps: z = {z:.2f})",
                               p, ok, allowed_drops=allowed))
        crit.append(_criterion(f"vs_{sweep}/reaches_one",
                               f"P(exact) at the largest {sweep} >= {settings['min_final']:g}",
                               float(p[-1]), p[-1] >= settings["min_final"]))
    return crit


@register_check(
    "pattern_recovery",
    claim="The probability that HCL recovers the exact hierarchy (structures and ranks) rises to 1 with the "
          "sample size n and with the signal strength; the binary shared/private view never can when a "
          "partial structure exists.",
    criterion="P(exact) non-decreasing up to Monte-Carlo error along each sweep (no significant drop at "
              "family-wise level 0.05) and >= 0.9 at the largest n / loading scale",
    quick=_PATTERN_QUICK,
    full=_PATTERN_FULL,
    seed=20240704,
)
def pattern_recovery(ctx):
    from .baselines import SharedPrivate
    from .estimators.hcl import HCL

    s = ctx.settings
    h = _d1(s["dims"])
    R = s["replications"]
    sp = SharedPrivate(n_shared=h.rank(h.structures[0]),
                       n_private={m: h.modality_rank(m) - h.rank(h.structures[0]) for m in h.modalities})
    sp_scores = pattern_scores(sp.binary_hierarchy(h.dims), h)
    sweeps = {
        "n": [(int(n), s["loading_scale_for_n"]) for n in s["n"]],
        "loading_scale": [(s["n_for_loading_scale"], float(v)) for v in s["loading_scale"]],
    }
    out = {"replications": R, "hierarchy": h.to_dict()}
    cell = 0
    for sweep, grid in sweeps.items():
        exact, prec, rec, ham = [], [], [], []
        failures = {}
        for n, scale in grid:
            e = []
            for r in range(R):
                rng_model, rng_data = ctx.streams(cell, r)
                model = HierarchicalModel.random(h, loading_scale=scale, noise=s["noise"], random_state=rng_model)
                views, _ = model.sample(n, random_state=rng_data)
                # penalty=None: the returned pattern is the rank lattice's, exactly as with the default
                # selection="lattice" (the penalised path there only confirms and is recorded)
                est = ctx.fit("hcl", HCL(None, noise_model="isotropic", penalty=None, random_state=r), views)
                sc = pattern_scores(est.hierarchy_, h)
                e.append(sc)
                if not sc["exact"]:
                    wrong = failures.setdefault(f"n={n}, loading_scale={scale}", Counter())
                    wrong[", ".join(f"{est.hierarchy_.name(t)}: {k}" for t, k in est.hierarchy_.ranks.items())] += 1
            cell += 1
            exact.append(float(np.mean([x["exact"] for x in e])))
            prec.append(float(np.mean([x["structure_precision"] for x in e])))
            rec.append(float(np.mean([x["structure_recall"] for x in e])))
            ham.append(float(np.mean([x["support_hamming"] for x in e])))
        out[sweep] = {
            "grid": [n for n, _ in grid] if sweep == "n" else [v for _, v in grid],
            "fixed": {"loading_scale": s["loading_scale_for_n"]} if sweep == "n" else {"n": s["n_for_loading_scale"]},
            "hcl_exact": exact,
            "hcl_structure_precision": prec,
            "hcl_structure_recall": rec,
            "hcl_support_hamming": ham,
            "shared_private_exact": [float(sp_scores["exact"])] * len(grid),
            "shared_private_structure_recall": [float(sp_scores["structure_recall"])] * len(grid),
            "failures": {cell: dict(c.most_common(10)) for cell, c in failures.items()},
        }
    crit = evaluate_pattern_recovery(out, s)

    fig, axes = _figure(1, 2, width=4.8, height=3.6)
    for ax, sweep in zip(axes[0], ("n", "loading_scale")):
        d = out[sweep]
        x = np.asarray(d["grid"], dtype=float)
        p = np.asarray(d["hcl_exact"])
        se = np.sqrt(p * (1 - p) / R)
        ax.errorbar(x, p, yerr=2 * se, marker="o", color=COLORS["hcl"], capsize=2, label="HCL (pattern learned) ±2 SE")
        ax.plot(x, d["hcl_structure_recall"], ls=":", marker=".", color=COLORS["hcl"], label="HCL structure recall")
        ax.plot(x, d["shared_private_exact"], marker="s", color=COLORS["shared_private"],
                label="shared-private (0 by construction)")
        ax.plot(x, d["shared_private_structure_recall"], ls=":", marker=".", color=COLORS["shared_private"],
                label="shared-private structure recall")
        ax.axhline(s["min_final"], color="k", ls="--", lw=1, label=f"criterion {s['min_final']:g}")
        ax.set_xscale("log")
        _grid_ticks(ax, x)
        ax.set_ylim(-0.03, 1.05)
        fixed = ", ".join(f"{k}={v}" for k, v in d["fixed"].items())
        ax.set_title(f"P(exact hierarchy) vs {sweep} ({fixed})", fontsize=9)
        ax.set_xlabel(sweep)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="center right")
    notes = [
        "HCL(hierarchy=None, penalty=None): with the default selection='lattice' HCL returns the rank-lattice "
        "pattern whatever the penalised path does (the path only confirms it and is recorded), so penalty=None "
        "gives the same pattern at a tenth of the cost.",
        "Shared-private is the binary hierarchy (global rank k_G, the rest of each modality private) with "
        "oracle ranks: it has no partial structure, so its exact recovery of D1 (which has {a,b}) is 0 by "
        "construction and is not fitted; its structure recall is 4/5 at every n.",
        "Loadings: i.i.d. N(0, s^2) entries (loading_scale s), unit isotropic noise.",
        "Why P(exact) levels off near 0.97 rather than reaching 1: every lattice rank is a permutation test at a "
        "fixed level (threshold = the largest of n_permutations = 5 null singular values), so the chance of one "
        "false extra rank does not shrink with n or signal; the typical miss at large n / signal merges {a,b} "
        "into the global structure ({a,b,c}: 2). Measured separately on the quick design (200 replications): "
        "P(exact) = 0.97 at n = 1000, s = 1 and 0.975 at n = 8000, s = 0.2 with 5 permutations; 0.995 with 20.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 5. excess_risk
# =============================================================================
_RISK_QUICK = {"dims": {"a": 15, "b": 20, "c": 25}, "rank": 2, "noise": 1.0, "outcome_noise": 1.0,
               "beta": {"a,b,c": [1.0, -0.5], "a,b": [0.6, 0.6]},
               "m": [1000, 2000, 4000, 8000, 16000], "replications": 60, "n_unlabeled": 1_000_000,
               "n_unlabeled_learned": 50_000,
               "n_test": 20_000, "n_lambdas": 20, "risk_tol": 0.15, "coef_tol": 0.1, "max_final_fp": 0.05}
_RISK_FULL = dict(_RISK_QUICK, m=[1000, 2000, 4000, 8000, 16000, 32000, 64000], replications=100,
                  n_unlabeled=4_000_000, risk_tol=0.1)


def evaluate_excess_risk(results, settings):
    """Criteria of the excess-risk check from its ``results`` dict."""
    crit = []
    for rep in ("hcl", "oracle"):
        res = results[rep]
        crit.append(_slope_criterion(f"{rep}/excess_risk_slope", res["excess_risk"], -1.0, settings["risk_tol"]))
        crit.append(_slope_criterion(f"{rep}/coefficient_error_slope", res["coef_error"], -0.5, settings["coef_tol"]))
        recall = np.asarray(res["recall"])
        crit.append(_criterion(f"{rep}/recall_one",
                               "every fit at the largest m selects every task-relevant structure (recall 1), and "
                               "the mean recall does not fall as m grows",
                               recall, bool(recall[-1] == 1.0 and np.all(np.diff(recall) >= -1e-12))))
        fp = np.asarray(res["false_positives"])
        crit.append(_criterion(f"{rep}/false_positives_vanish",
                               f"mean number of false-positive structures at the largest m <= "
                               f"{settings['max_final_fp']:g} and not above its value at the smallest m",
                               float(fp[-1]), fp[-1] <= settings["max_final_fp"] and fp[-1] <= fp[0] + 1e-12))
    return crit


@register_check(
    "excess_risk",
    claim="Downstream, the group lasso over structures on HCL scores selects the task-relevant structures and "
          "its refit has excess risk ~ 1/m and coefficient error ~ m^-1/2 in the labelled sample size m.",
    criterion="log-log slope of the mean excess risk within -1 ± 0.15 (quick; ± 0.1 full), of the RMS "
              "coefficient error within -1/2 ± 0.1; recall 1 in every fit at the largest m (never falling); "
              "mean false positives at the largest m <= 0.05 (never above the smallest m's)",
    quick=_RISK_QUICK,
    full=_RISK_FULL,
    seed=20240705,
)
def excess_risk_check(ctx):
    from scipy.linalg import orthogonal_procrustes

    from .downstream import HCLRegressor, excess_risk
    from .estimators.base import ModelRepresentation
    from .estimators.hcl import HCL

    s = ctx.settings
    dims = s["dims"]
    names = tuple(dims)
    ranks = {c: s["rank"] for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)
             if size != 2 or c != names[::2]}  # every structure but {a,c}: relevant and irrelevant partials
    h = Hierarchy(dims, ranks)
    beta = {tuple(k.split(",")): v for k, v in s["beta"].items()}
    relevant = {h.structure(k) for k in beta}
    bvec = {st: np.zeros(h.rank(st)) for st in h.structures}
    for k, v in beta.items():
        bvec[h.structure(k)] = np.asarray(v, dtype=np.float64)
    ms = np.asarray(s["m"])
    R = s["replications"]
    rng_model, rng_test, rng_unl, rng_learn = ctx.streams(0, 0, n=4)
    model = HierarchicalModel.random(h, noise=s["noise"], random_state=rng_model)
    test = model.sample(s["n_test"], random_state=rng_test)
    oracle = ModelRepresentation(model).fit()
    # one representation, fitted once on a large unlabelled sample (streamed into its moments)
    moments = _streamed_moments(model, s["n_unlabeled"], rng_unl)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep_hcl = HCL(h, noise_model="isotropic", random_state=ctx.seed).fit_moments(moments)
    for w in caught:
        ctx.warnings[f"representation/hcl: {w.category.__name__}"] += 1
    rot = {}
    for st in h.structures:
        mods = [m for m in h.modalities if m in st]
        At = np.vstack([model.loadings[st][m] for m in mods])
        Ae = np.vstack([rep_hcl.loadings_[st][m] for m in mods])
        rot[st] = orthogonal_procrustes(At, Ae)[0]  # Ae ≈ At @ rot: coefficients on HCL scores are rot^T beta
    unl_views, _ = model.sample(s["n_unlabeled_learned"], random_state=rng_learn)
    rep_l = ctx.fit("representation/hcl_learned", HCL(None, noise_model="isotropic", random_state=ctx.seed), unl_views)
    learned_exact = bool(pattern_scores(rep_l.hierarchy_, h)["exact"])
    del unl_views
    keys = ("excess_risk", "coef_error", "recall", "false_positives")
    vals = {rep: {k: np.zeros((len(ms), R)) for k in keys} for rep in ("hcl", "oracle")}
    for r in range(R):
        rng_lab, rng_y = ctx.streams(1, r)
        views, latents = model.sample(int(ms[-1]), random_state=rng_lab)
        y = model.outcome(latents, beta, noise=s["outcome_noise"], random_state=rng_y)
        for rep_name, rep in (("hcl", rep_hcl), ("oracle", oracle)):
            for i, m in enumerate(ms):
                reg = HCLRegressor(rep, n_lambdas=s["n_lambdas"], random_state=r)
                ctx.fit(f"regressor/{rep_name}", reg, _prefix(views, int(m)), y[: int(m)])
                vals[rep_name]["excess_risk"][i, r] = excess_risk(reg, model, beta, sample=test)
                target = {st: (rot[st].T @ bvec[st] if rep_name == "hcl" else bvec[st]) for st in h.structures}
                vals[rep_name]["coef_error"][i, r] = float(np.sqrt(sum(np.sum((reg.coef_[st] - target[st]) ** 2)
                                                                       for st in h.structures)))
                sel = set(reg.selected_structures_)
                vals[rep_name]["recall"][i, r] = len(sel & relevant) / len(relevant)
                vals[rep_name]["false_positives"][i, r] = len(sel - relevant)
    out = {"m": ms, "hierarchy": h.to_dict(), "relevant": [h.name(st) for st in h.structures if st in relevant],
           "n_unlabeled": s["n_unlabeled"],
           "hcl_representation_sin_theta": {f"{h.name(st)}:{m}": v for (st, m), v in
                                            loading_errors(rep_hcl.loadings_, model.loadings).items()},
           "hcl_learned_representation": {"n_unlabeled": s["n_unlabeled_learned"], "exact": learned_exact,
                                          "hierarchy": rep_l.hierarchy_.to_dict()}}
    fits = {}
    for rep_name in ("hcl", "oracle"):
        v = vals[rep_name]
        fits[(rep_name, "risk")] = loglog_slope(ms, v["excess_risk"], random_state=ctx.seed)
        # RMS coefficient error: slope of sqrt(mean squared error) = half the slope of the mean squared error
        sq = loglog_slope(ms, v["coef_error"] ** 2, random_state=ctx.seed)
        coef = dict(sq, slope=0.5 * sq["slope"], intercept=0.5 * sq["intercept"],
                    slope_ci=[0.5 * c for c in sq["slope_ci"]], mean=np.sqrt(sq["mean"]),
                    se=0.5 * sq["se"] / np.sqrt(sq["mean"]), band_low=np.sqrt(sq["band_low"]),
                    band_high=np.sqrt(sq["band_high"]))
        fits[(rep_name, "coef")] = coef
        out[rep_name] = {
            "excess_risk": fits[(rep_name, "risk")],
            "coef_error": coef,
            "recall": v["recall"].mean(axis=1),
            "false_positives": v["false_positives"].mean(axis=1),
            "exact_selection_fraction": ((v["recall"] == 1) & (v["false_positives"] == 0)).mean(axis=1),
        }
    crit = evaluate_excess_risk(out, s)

    fig, axes = _figure(1, 3, width=4.2, height=3.5)
    labels = {"hcl": f"HCL repr. ({s['n_unlabeled']:.0e} unlabelled)", "oracle": "true representation"}
    for rep_name, ls, mk in (("hcl", "-", "o"), ("oracle", "--", "s")):
        color = COLORS["hcl"] if rep_name == "hcl" else COLORS["oracle"]
        _rate_panel(axes[0, 0], ms, fits[(rep_name, "risk")], labels[rep_name], color, marker=mk, ls=ls)
        _rate_panel(axes[0, 1], ms, fits[(rep_name, "coef")], labels[rep_name], color, marker=mk, ls=ls)
        axes[0, 2].plot(ms, out[rep_name]["recall"], marker=mk, ls=ls, color=color, label=f"recall, {rep_name}")
        axes[0, 2].plot(ms, out[rep_name]["false_positives"], marker=mk, ls=":", color=color,
                        label=f"mean false positives, {rep_name}")
    _reference_slope(axes[0, 0], ms, fits[("hcl", "risk")]["mean"][0] * 1.5, -1.0, "slope -1")
    _reference_slope(axes[0, 1], ms, fits[("hcl", "coef")]["mean"][0] * 1.3, -0.5, "slope -1/2")
    axes[0, 0].set_title("excess risk (vs Bayes predictor given x)")
    axes[0, 1].set_title("RMS coefficient error (aligned basis)")
    axes[0, 2].set_title("selection of task-relevant structures")
    for j, ax in enumerate(axes[0]):
        ax.set_xlabel("m (labelled rows)")
        if j < 2:
            _legend_below(ax)
        else:
            ax.set_ylim(-0.05, 1.1)
            ax.legend(fontsize=6.5, loc="center right")
    axes[0, 2].set_xscale("log")
    _grid_ticks(axes[0, 2], ms)
    axes[0, 2].grid(True, which="both", alpha=0.3)
    for rep_name in ("hcl", "oracle"):
        for k in ("excess_risk", "coef_error"):
            out[rep_name][k] = _fit_summary(out[rep_name][k])
    notes = [
        "HCL representation: HCL with the true hierarchy fitted once, on the moments of an unlabelled sample of "
        "n_unlabeled rows (large, so that its own error -- of order p / n_unlabeled in the excess risk -- stays "
        "below the labelled-sample term over the m grid), and used for every replication and m; the true "
        "representation (ModelRepresentation) is the reference. Labelled samples are nested (first m rows of "
        "one draw per replication).",
        "Excess risk: hclstat.downstream.excess_risk against the Bayes predictor given the views "
        "(reference='observed'), on one shared test sample.",
        "Coefficient error: HCL's scores are identified up to one rotation per structure; the true coefficients are "
        "rotated by the orthogonal Procrustes map between true and fitted loadings of each structure.",
        "hcl_learned_representation: whether HCL(hierarchy=None) on n_unlabeled_learned unlabelled rows finds "
        "the exact pattern (then its structures are the ones the group lasso selects among).",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 6. over_alignment
# =============================================================================
_ALIGN_QUICK = {"dims": {"a": 50, "b": 60, "c": 70}, "noise": 0.5, "singular_values": [0.5, 1.5],
                "n": [1000, 2000, 4000, 8000, 16000], "replications": 10, "plateau": -0.2, "hcl_tol": 0.15}
_ALIGN_FULL = dict(_ALIGN_QUICK, n=[1000, 2000, 4000, 8000, 16000, 32000, 64000], replications=30)

#: the two binary (shared/private) views fitted, and the error each one cannot shed
_BINARY_VIEWS = {
    "shared_private": ("cross_ab", "oracle ranks: global rank k_G shared, the rest of each modality private"),
    "shared_private_wide": ("global_block_ab", "shared rank k_G + k_ab (the {a,b} factor called global), "
                                               "specific ranks private"),
}


def evaluate_over_alignment(results, settings):
    """Criteria of the over-alignment check from its ``results`` dict."""
    crit = []
    for view, (metric, _) in _BINARY_VIEWS.items():
        fit = results[view][metric]
        crit.append(_criterion(f"{view}/{metric}_plateaus",
                               f"{view}: log-log slope of the relative error of {metric} > {settings['plateau']:g}",
                               fit["slope"], fit["slope"] > settings["plateau"], ci=fit["slope_ci"]))
    for metric in ("cross_ab", "global_block_ab"):
        crit.append(_slope_criterion(f"hcl/{metric}_slope", results["hcl"][metric], -0.5, settings["hcl_tol"]))
    return crit


@register_check(
    "over_alignment",
    claim="Fitted to partially shared data, the binary shared/private view keeps a bias that does not vanish "
          "with n -- with the oracle global rank it cannot carry the {a,b} signal in Sigma_ab; with the {a,b} "
          "factor counted as global it attributes that signal to the global structure -- while HCL's errors "
          "vanish at n^-1/2.",
    criterion="relative error of the fitted Sigma_ab (oracle-rank binary view) and of the global block "
              "A_a,G A_b,G^T (wide binary view): log-log slope > -0.2 (plateau); HCL's slopes for both within "
              "-1/2 ± 0.15",
    quick=_ALIGN_QUICK,
    full=_ALIGN_FULL,
    seed=20240706,
)
def over_alignment(ctx):
    from .baselines import SharedPrivate
    from .estimators.hcl import HCL

    s = ctx.settings
    h = _d1(s["dims"])
    a, b, c = h.modalities
    glob, part = h.structures[0], h.structures[1]
    ns = np.asarray(s["n"])
    R = s["replications"]
    kg, kp = h.rank(glob), h.rank(part)
    specific = {m: h.rank(m) for m in h.modalities}
    binary = {
        "shared_private": (kg, {m: h.modality_rank(m) - kg for m in h.modalities}),
        "shared_private_wide": (kg + kp, specific),
    }
    meths = ("hcl",) + tuple(binary)
    keys = ("cross_ab", "cross_ac", "global_block_ab")
    err = {meth: {k: np.zeros((len(ns), R)) for k in keys} for meth in meths}
    part_err = np.zeros((len(ns), R))
    c_share = np.zeros((len(ns), R))
    pa, pb, pc = (h.dims[m] for m in (a, b, c))
    for r in range(R):
        rng_model, rng_data = ctx.streams(0, r)
        model = HierarchicalModel.random(h, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                         random_state=rng_model)
        views, _ = model.sample(int(ns[-1]), random_state=rng_data)
        T = {"cross_ab": _cross_covariance(model.loadings, a, b, (pa, pb)),
             "cross_ac": _cross_covariance(model.loadings, a, c, (pa, pc)),
             "global_block_ab": model.signal_block(glob, a, b)}
        Tpart = model.signal_block(part, a, b)
        for i, n in enumerate(ns):
            v = _prefix(views, int(n))
            fits = {"hcl": ctx.fit("hcl", HCL(h, noise_model="isotropic", random_state=r), v)}
            for view, (shared, private) in binary.items():
                fits[view] = ctx.fit(view, SharedPrivate(shared, private, noise_model="isotropic", random_state=r), v)
            for meth, est in fits.items():
                L = est.loadings_
                E = {"cross_ab": _cross_covariance(L, a, b, (pa, pb)),
                     "cross_ac": _cross_covariance(L, a, c, (pa, pc)),
                     "global_block_ab": L[glob][a] @ L[glob][b].T}
                for k in keys:
                    err[meth][k][i, r] = np.linalg.norm(E[k] - T[k]) / np.linalg.norm(T[k])
            Lp = fits["hcl"].loadings_[part]
            part_err[i, r] = np.linalg.norm(Lp[a] @ Lp[b].T - Tpart) / np.linalg.norm(Tpart)
            sv = np.linalg.svd(fits["shared_private_wide"].loadings_[glob][c], compute_uv=False)
            c_share[i, r] = sv[-1] / sv[0]
    out = {"n": ns, "binary_views": {v: {"shared": sh, "private": pr, "description": _BINARY_VIEWS[v][1]}
                                     for v, (sh, pr) in binary.items()}}
    fits = {}
    for meth in meths:
        out[meth] = {}
        for k in keys:
            fits[(meth, k)] = loglog_slope(ns, err[meth][k], random_state=ctx.seed)
            out[meth][k] = fits[(meth, k)]
    fits[("hcl", "partial_block_ab")] = loglog_slope(ns, part_err, random_state=ctx.seed)
    out["hcl"]["partial_block_ab"] = fits[("hcl", "partial_block_ab")]
    fits["c_share"] = loglog_slope(ns, c_share, random_state=ctx.seed)
    out["shared_private_wide"]["c_loading_ratio"] = fits["c_share"]
    crit = evaluate_over_alignment(out, s)

    titles = {"cross_ab": "Σ_ab (fitted cross-covariance)", "cross_ac": "Σ_ac (fitted cross-covariance)",
              "global_block_ab": "global block A_a,G A_b,G^T"}
    styles = {"hcl": ("HCL (true pattern)", COLORS["hcl"], "o", "-"),
              "shared_private": ("shared-private (oracle ranks)", COLORS["shared_private"], "s", "--"),
              "shared_private_wide": ("shared-private, {a,b} counted global", "C4", "D", "-.")}
    fig, axes = _figure(1, 4, width=4.0, height=3.6)
    for ax, k in zip(axes[0], keys):
        for meth in meths:
            label, color, mk, ls = styles[meth]
            _rate_panel(ax, ns, fits[(meth, k)], label, color, marker=mk, ls=ls, band=meth != "shared_private_wide")
        if k == "cross_ab":
            _rate_panel(ax, ns, fits[("hcl", "partial_block_ab")], "HCL: partial block A_a,S A_b,S^T", "C2",
                        marker="^", ls=":", band=False)
        _reference_slope(ax, ns, fits[("hcl", k)]["mean"][0] * 1.4, -0.5, "slope -1/2")
        ax.set_title(f"relative error of {titles[k]}", fontsize=9)
        ax.set_xlabel("n")
        _legend_below(ax, fontsize=6)
    ax = axes[0, 3]
    _rate_panel(ax, ns, fits["c_share"], "σ2/σ1 of c's 'global' loadings", "C4", marker="D", ls="-.")
    ax.set_title("wide binary view: its 2nd 'global' component\nstops loading on c", fontsize=9)
    ax.set_xlabel("n")
    _legend_below(ax)
    for meth in meths:
        out[meth] = {k: _fit_summary(f) for k, f in out[meth].items()}
    notes = [
        "Design D1 (global + {a,b} + specifics, rank 1 each), isotropic noise; HCL is given the true pattern.",
        "shared_private: the binary view of hclstat.studies' 'shared_private' (oracle global rank, the rest of "
        "each modality private). It has no {a,b} structure, so its fitted Sigma_ab = A_a,G A_b,G^T cannot carry "
        "the partial signal A_a,S A_b,S^T: the {a,b} factor is split into two unrelated private factors.",
        "shared_private_wide: the binary view with the {a,b} factor counted as global (shared rank k_G + k_ab). "
        "It can fit the covariance -- its extra 'global' component stops loading on c (last panel: the ratio "
        "of c's singular values -> 0) -- but then the global structure carries the partial signal: its block "
        "A_a,G A_b,G^T is off by A_a,S A_b,S^T at every n (over-alignment).",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


# =============================================================================
# 7. published_design
# =============================================================================
_PUB_QUICK = {"dims": {"a": 20, "b": 40, "c": 60}, "rank": 2, "noise": 0.25, "singular_values": [0.5, 1.5],
              "n": [2000, 4000, 8000, 16000, 32000], "replications": 8, "slope_tol": 0.15, "min_exact": 0.9}
_PUB_FULL = dict(_PUB_QUICK, dims={"a": 100, "b": 500, "c": 800}, rank=3, noise=6.0,
                 n=[5000, 10000, 15000, 20000, 25000, 30000], replications=3)


def evaluate_published_design(results, settings):
    """Criteria of the published-design check from its ``results`` dict."""
    crit = []
    for meth in ("hcl", "sfa", "hcl_learned"):
        res = results[meth]
        if meth == "hcl_learned":
            exact = np.asarray(results["hcl_learned_exact"])
            if not np.all(exact >= settings["min_exact"]):
                continue  # a wrong pattern pads blocks with zeros: the rate claim is about the known pattern
        for lv, fit in res["levels"].items():
            crit.append(_slope_criterion(f"{meth}/{lv}/block_error_slope", fit, -0.5, settings["slope_tol"]))
    return crit


@register_check(
    "published_design",
    claim="On the paper's design (M = 3, all seven structures of rank r, orthonormal x U[0.5,1.5] x rotation "
          "loadings, isotropic noise) the published block metric ||Â_mS Â_mS^T - A_mS A_mS^T||_F after one "
          "Procrustes rotation decays like n^-1/2, for HCL with the known pattern, HCL with learned ranks, "
          "and structured factor analysis.",
    criterion="log-log slope of the mean block error per level within -1/2 ± 0.15 for HCL (known pattern) and "
              "SFA, and for HCL with learned ranks when its pattern is exact in >= 90% of replications at every n",
    quick=_PUB_QUICK,
    full=_PUB_FULL,
    seed=20240707,
)
def published_design(ctx):
    from .estimators.hcl import HCL
    from .estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    h = _published(s["dims"], s["rank"])
    levels = _levels_of(h)
    ns = np.asarray(s["n"])
    R = s["replications"]
    meths = ("hcl", "hcl_learned", "sfa")
    err = {meth: {lv: np.zeros((len(ns), R)) for lv in levels} for meth in meths}
    blocks = {meth: np.zeros((len(ns), R, sum(len(st) for st in h.structures))) for meth in meths}
    exact = np.zeros((len(ns), R))
    times = Counter()
    for r in range(R):
        rng_model, rng_data = ctx.streams(0, r)
        model = HierarchicalModel.random(h, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                         random_state=rng_model)
        views, _ = model.sample(int(ns[-1]), random_state=rng_data)
        for i, n in enumerate(ns):
            v = _prefix(views, int(n))
            ests = {"hcl": HCL(h, noise_model="isotropic", random_state=r),
                    "hcl_learned": HCL(None, noise_model="isotropic", penalty=None, random_state=r),
                    "sfa": StructuredFactorAnalysis(h, noise_model="isotropic", random_state=r)}
            for meth, est in ests.items():
                t0 = time.perf_counter()
                ctx.fit(meth, est, v)
                times[meth] += time.perf_counter() - t0
                be = block_errors(est.loadings_, model.loadings, h.dims)
                blocks[meth][i, r] = [be[(st, m)] for st in h.structures for m in h.modalities if m in st]
                for lv, val in _level_means(be, h, levels).items():
                    err[meth][lv][i, r] = val
                if meth == "hcl_learned":
                    exact[i, r] = pattern_scores(est.hierarchy_, h)["exact"]
    out = {"n": ns, "hierarchy": h.to_dict(), "hcl_learned_exact": exact.mean(axis=1),
           "fit_seconds_total": dict(times),
           "block_labels": [f"{h.name(st)}:{m}" for st in h.structures for m in h.modalities if m in st]}
    fits = {}
    for meth in meths:
        out[meth] = {"levels": {}, "mean_block_error": blocks[meth].mean(axis=1)}
        for lv in levels:
            fits[(meth, lv)] = loglog_slope(ns, err[meth][lv], random_state=ctx.seed)
            out[meth]["levels"][lv] = fits[(meth, lv)]
    crit = evaluate_published_design(out, s)

    fig, axes = _figure(1, len(levels), width=4.2, height=3.5)
    names = {"hcl": "HCL (known pattern)", "hcl_learned": "HCL (learned ranks)", "sfa": "SFA (known pattern)"}
    for ax, lv in zip(axes[0], levels):
        for meth, mk, ls in (("hcl", "o", "-"), ("sfa", "s", "--"), ("hcl_learned", "^", ":")):
            _rate_panel(ax, ns, fits[(meth, lv)], names[meth], COLORS[meth], marker=mk, ls=ls, band=meth == "hcl")
        _reference_slope(ax, ns, fits[("hcl", lv)]["mean"][0] * 1.4, -0.5, "slope -1/2")
        ax.set_title(f"{lv} blocks: mean ||ÂÂ' - AA'||_F")
        ax.set_xlabel("n")
        _legend_below(ax)
    for meth in meths:
        out[meth]["levels"] = {lv: _fit_summary(f) for lv, f in out[meth]["levels"].items()}
    notes = [
        f"dims {dict(s['dims'])}, rank {s['rank']} for all seven structures, isotropic noise c = {s['noise']:g}"
        + (" (the paper's c = 6 is undetectable at these dimensions and n; c is lowered so that every block's "
           "signal is detectable at the quick n)" if ctx.quick else " (the paper's design)") + ".",
        "Block metric: hclstat.metrics.block_errors (one orthogonal Procrustes rotation of the whole stacked "
        "loading matrix onto the truth, then the Frobenius error of A_mS A_mS^T per block), averaged per level.",
        "HCL with learned ranks: HCL(hierarchy=None, penalty=None) (the lattice pattern, as with the default "
        "selection='lattice'); with a wrong pattern block_errors pads missing structures with zeros, so its "
        "slope enters the criteria only when its pattern is exact in >= 90% of replications at every n.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_save_figure(fig, ctx.figure_path)]}


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
        ``figures``, ``runtime_seconds``, ``warnings`` ... A check that raises
        gives ``passed = False`` and an ``error`` entry (the traceback is in
        the JSON), so that one broken check does not hide the others.
    """
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; expected one of {list(CHECKS)}")
    from ._version import __version__

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
        with _blas_threads(1), np.errstate(all="ignore"):
            body = check.func(ctx)
        summary.update(body)
        failed = [c["name"] for c in body["criteria"] if not c["passed"]]
        summary["passed"] = not failed and bool(body["criteria"])
        summary["failed_criteria"] = failed
    except Exception as exc:  # reported in the summary; the other checks go on
        summary.update(passed=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        logger.error("check %s raised %s: %s", name, type(exc).__name__, exc)
    summary["runtime_seconds"] = time.perf_counter() - t0
    summary["warnings"] = dict(ctx.warnings)
    _write_json(directory / "summary.json", summary)
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
    _write_json(out / "summary.json", index)
    return results


def _report(summary):
    lines = [f"{summary['name']} ({summary['mode']}): {'PASSED' if summary['passed'] else 'FAILED'} "
             f"in {summary['runtime_seconds']:.1f} s"]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    for c in summary.get("criteria", []):
        v = c["value"]
        if isinstance(v, (float, np.floating)):
            v = f"{v:.4g}"
        elif isinstance(v, (list, np.ndarray)):
            v = "[" + ", ".join(f"{x:.3g}" for x in np.asarray(v, dtype=float)) + "]"
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['name']}: {v}  ({c['statement']})")
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
    print(_report(summary))
    return 0 if summary["passed"] else 1
