"""What every paper check uses: slopes and fits, criteria and gates, sample helpers, figures, strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np

from ..hierarchy import LEVELS
from ..studies import _atomic_write_text, _save

__all__ = [
    "EXACT_TOL",
    "N_BOOT",
    "COLORS",
    "loglog_slope",
    "affine_fit",
    "monotone_up_to_mc",
    "ratio_of_means",
    "binomial_gate",
    "criterion",
    "unevaluable",
    "exact_rate_criterion",
    "slope_criterion",
    "fit_summary",
    "write_json",
]

#: tolerance for "exact" population recovery: sqrt(machine epsilon)
EXACT_TOL = float(np.sqrt(np.finfo(float).eps))
#: bootstrap resamples (over replications) for the slope bands and the standard errors
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
        # a resample whose mean is not positive at some x has no log: leave it out
        ok = np.all(boot > 0, axis=0)
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


def ratio_of_means(x, num, den, *, n_boot=N_BOOT, random_state=0):
    """Ratio of replication means ``mean_r num / mean_r den`` per point, its bootstrap SE and log-log slope.

    The bootstrap resamples replications *jointly* for numerator and
    denominator (the two estimators are fitted on the same samples, so their
    errors are paired).

    Parameters
    ----------
    x : array-like of shape (n_points,)
    num, den : array-like of shape (n_points, n_replications)

    Returns
    -------
    dict
        ``ratio`` and ``se`` (per point) and ``slope`` (log-log, of the ratio against ``x``).
    """
    x = np.asarray(x, dtype=np.float64)
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2 or num.shape[0] != x.size:
        raise ValueError(f"num, den: expected two arrays of shape ({x.size}, n_replications), "
                         f"got {num.shape} and {den.shape}")
    ratio = num.mean(axis=1) / den.mean(axis=1)
    R = num.shape[1]
    idx = np.random.default_rng(random_state).integers(0, R, size=(n_boot, R))
    boot = num[:, idx].mean(axis=2) / den[:, idx].mean(axis=2)
    se = boot.std(axis=1, ddof=1) if R > 1 else np.full(x.shape, np.nan)
    return {"ratio": ratio, "se": se, "slope": float(np.polyfit(np.log(x), np.log(ratio), 1)[0])}


def binomial_gate(n_trials, p_regression, alpha):
    """Fewest successes out of ``n_trials`` that a success probability ``p_regression`` reaches with
    probability at most ``alpha``.

    Requiring at least this many successes makes a regression to
    ``p_regression`` fail with probability ``>= 1 - alpha``; when the true
    probability is 1 the gate always passes.

    Returns
    -------
    int
        ``min {k : P(Binomial(n_trials, p_regression) >= k) <= alpha}``.
    """
    from scipy.stats import binom

    if not 0 < p_regression < 1 or not 0 < alpha < 1:
        raise ValueError(f"p_regression, alpha: expected values in (0, 1), got {p_regression!r}, {alpha!r}")
    for k in range(int(n_trials) + 1):
        if binom.sf(k - 1, n_trials, p_regression) <= alpha:
            return k
    return int(n_trials) + 1  # too few trials to tell p_regression from 1


# ============================================================== criteria
def criterion(name, statement, value, passed, **extra):
    """One pass/fail rule as stored in the summary."""
    out = {"name": name, "statement": statement, "value": value, "passed": bool(passed)}
    out.update(extra)
    return out


def unevaluable(name, statement, reason):
    """A criterion that could not be evaluated: it fails, and says why."""
    return criterion(name, statement, None, False, reason=f"not evaluable: {reason}")


def exact_rate_criterion(name, what, n_exact, n_fits, p_regression, alpha):
    """``what`` exact in at least ``k`` of ``n_fits`` fits, ``k`` = :func:`binomial_gate`.

    A true P(exact) of 1 always passes; a regression to ``p_regression`` fails
    with probability at least ``1 - alpha``. With too few fits to reach that
    power the gate is every fit, and the statement gives the regression it
    does catch at ``1 - alpha`` (``alpha^(1 / n_fits)``).
    """
    k = binomial_gate(n_fits, p_regression, alpha)
    if k > n_fits:
        power = f"{n_fits} fits are too few to catch a regression to {p_regression:g}; requiring all of them " \
                f"catches one to {alpha ** (1.0 / n_fits):.3f} or below with probability >= {1 - alpha:g}"
        k = n_fits
    else:
        power = f"a regression of P(exact) to {p_regression:g} fails with probability >= {1 - alpha:g}"
    return criterion(name, f"{what} exact in >= {k} of {n_fits} fits ({power})", n_exact, n_exact >= k,
                     gate=k, n=n_fits)


def slope_criterion(name, fit, target, tol):
    s = fit["slope"]
    return criterion(name, f"log-log slope within {target:+g} ± {tol:g}", s, abs(s - target) <= tol,
                     ci=fit["slope_ci"])


def fit_summary(fit):
    """The JSON part of a :func:`loglog_slope` result."""
    return {"slope": fit["slope"], "slope_ci": fit["slope_ci"], "mean": fit["mean"], "se": fit["se"]}


def fit_summaries(fits):
    """:func:`fit_summary` of every value of a dict of :func:`loglog_slope` results."""
    return {k: fit_summary(f) for k, f in fits.items()}


# ============================================================== simulation
def streamed_moments(model, n, rng, chunk=100_000):
    """Sample moments of ``n`` rows of ``model`` drawn ``chunk`` rows at a time (no ``n x p`` array)."""
    from ..moments import moments_from_covariance

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


def prefix(views, n):
    """The first ``n`` rows of every view (nested samples)."""
    return {m: v[:n] for m, v in views.items()}


def level_means(errors, h, levels=LEVELS):
    """Mean of ``{(structure, modality): value}`` per level (NaN for an empty level)."""
    out = {}
    for lv in levels:
        vals = [v for (s, _), v in errors.items() if s in h.ranks and h.level(s) == lv]
        out[lv] = float(np.mean(vals)) if vals else math.nan
    return out


def levels_of(h):
    """The levels (global, partial, specific) that ``h`` has a structure at, in that order."""
    return [lv for lv in LEVELS if any(h.level(s) == lv for s in h.structures)]


def cross_covariance(loadings, a, b, shape):
    """``sum_{S ∋ a, b} A_{a,S} A_{b,S}^T`` of a loading dict."""
    out = np.zeros(shape)
    for blocks in loadings.values():
        if a in blocks and b in blocks:
            out += blocks[a] @ blocks[b].T
    return out


# =============================================================== figures
def figure(n_rows, n_cols, width=4.0, height=3.3):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    return fig, axes


def rate_panel(ax, x, fit, label, color, *, marker="o", ls="-", band=True):
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
    grid_ticks(ax, x)
    ax.grid(True, which="both", alpha=0.3)


def legend_below(ax, fontsize=6.5):
    """Legend in the lower left of a log-log panel, after lowering the y-axis so it covers no data."""
    handles, _ = ax.get_legend_handles_labels()
    lo, hi = ax.get_ylim()
    frac = min(0.09 * len(handles) + 0.04, 0.6)  # share of the height the legend needs
    ax.set_ylim(lo / (hi / lo) ** (frac / (1.0 - frac)), hi)
    ax.legend(fontsize=fontsize, loc="lower left")


def rate_axes(ax, title, xlabel="n", fontsize=6.5):
    """Title, x label and legend of a finished log-log rate panel."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    legend_below(ax, fontsize=fontsize)


def _compact(v):
    v = float(v)
    if v >= 1000 and v % 1000 == 0:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def grid_ticks(ax, x):
    """Major ticks at the grid values (compact labels), no minor labels: log axes stay readable."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    x = np.asarray(x, dtype=np.float64)
    ax.xaxis.set_major_locator(FixedLocator(x))
    ax.set_xticklabels([_compact(v) for v in x])
    ax.xaxis.set_minor_formatter(NullFormatter())


def reference_slope(ax, x, y0, slope, label=None):
    x = np.asarray(x, dtype=np.float64)
    ax.plot(x, y0 * (x / x[0]) ** slope, ls=":", color="0.5", lw=1, label=label or f"slope {slope:g}")


def save_figure(fig, path):
    return str(_save(fig, path))


# =================================================================== JSON
def jsonable(obj):
    """Plain JSON types; non-finite floats become None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
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


def write_json(path, doc):
    """Write ``doc`` as strict JSON (no NaN / Infinity), atomically."""
    _atomic_write_text(path, json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n")
