"""Check ``published_design``: on the paper's design the block errors after one Procrustes rotation ~ ``n^{-1/2}``.

The design is :func:`hclstat.model.published_hierarchy` (``M = 3``, all seven
structures of rank ``r``) with the published loading law
(:meth:`hclstat.model.HierarchicalModel.random` with ``singular_values``) and
isotropic noise; the metric is :func:`hclstat.metrics.block_errors`.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from ..metrics import block_errors, pattern_scores
from ..model import HierarchicalModel, published_hierarchy
from .runner import register_check
from .shared import (COLORS, exact_rate_criterion, figure, fit_summary, level_means, levels_of, loglog_slope, prefix,
    rate_axes, rate_panel, reference_slope, save_figure, slope_criterion, unevaluable)

__all__ = ["evaluate_published_design", "published_design"]

_PUB_QUICK = {"dims": {"a": 20, "b": 40, "c": 60}, "rank": 2, "noise": 0.25, "singular_values": [0.5, 1.5],
              "n": [2000, 4000, 8000, 16000, 32000], "replications": 8, "slope_tol": 0.15,
              "p_regression": 0.9, "alpha": 0.05}
_PUB_FULL = dict(_PUB_QUICK, dims={"a": 100, "b": 500, "c": 800}, rank=3, noise=6.0,
                 n=[5000, 10000, 15000, 20000, 25000, 30000], replications=3)
_METHODS = ("hcl", "hcl_learned", "sfa")
_NAMES = {"hcl": "HCL (known pattern)", "hcl_learned": "HCL (learned ranks)", "sfa": "SFA (known pattern)"}
_CLAIM = (
    "On the paper's design (M = 3, all seven structures of rank r, orthonormal x U[0.5,1.5] x rotation "
    "loadings, isotropic noise) the published block metric ||Â_mS Â_mS^T - A_mS A_mS^T||_F after one "
    "Procrustes rotation decays like n^-1/2, for HCL with the known pattern, HCL with learned ranks, "
    "and structured factor analysis."
)
_CRITERION = (
    "log-log slope of the mean block error per level within -1/2 ± 0.15 for HCL (known pattern), "
    "HCL (learned ranks, every fit counted) and SFA; the learned pattern exact in every fit at the "
    "largest n (binomial gate); every fit converged"
)


def evaluate_published_design(results, settings):
    """Criteria of the published-design check from its ``results`` dict.

    Every method (HCL with the known pattern, HCL learning the ranks, SFA with
    the known pattern) is judged on its slope at every level; HCL learning the
    ranks is also judged on how often its pattern is exact at the largest n
    (``results["hcl_learned_exact"]``: per-n fraction over
    ``results["replications"]`` fits). Its block errors include the fits
    whose pattern is wrong (:func:`~hclstat.metrics.block_errors` counts a
    missing block's whole signal as error): that is the error of the
    estimator the claim is about. A slope that cannot be computed (no finite
    positive mean error) fails, with the reason.
    """
    crit = []
    for meth in _METHODS:
        for lv, fit in results[meth]["levels"].items():
            name = f"{meth}/{lv}/block_error_slope"
            if fit is None:
                crit.append(unevaluable(name, f"log-log slope within -0.5 ± {settings['slope_tol']:g}",
                                        f"{_NAMES[meth]}: no finite positive mean block error at every n"))
            else:
                crit.append(slope_criterion(name, fit, -0.5, settings["slope_tol"]))
    R = int(results["replications"])
    exact = np.asarray(results["hcl_learned_exact"], dtype=float)
    n_exact = int(round(exact[-1] * R))
    crit.append(exact_rate_criterion("hcl_learned/pattern_exact_at_largest_n",
                                     "the learned pattern at the largest n", n_exact, R,
                                     settings["p_regression"], settings["alpha"]))
    return crit


def _safe_slope(ns, values, seed):
    """:func:`loglog_slope`, or None when some n has no finite positive mean (recorded as unevaluable)."""
    if not np.all(np.isfinite(values)) or np.any(values.mean(axis=1) <= 0):
        return None
    return loglog_slope(ns, values, random_state=seed)


def _plot(fits, levels, ns, path):
    fig, axes = figure(1, len(levels), width=4.2, height=3.5)
    for ax, lv in zip(axes[0], levels):
        for meth, mk, ls in (("hcl", "o", "-"), ("sfa", "s", "--"), ("hcl_learned", "^", ":")):
            if fits[meth][lv] is not None:
                rate_panel(ax, ns, fits[meth][lv], _NAMES[meth], COLORS[meth], marker=mk, ls=ls, band=meth == "hcl")
        if fits["hcl"][lv] is not None:
            reference_slope(ax, ns, fits["hcl"][lv]["mean"][0] * 1.4, -0.5, "slope -1/2")
        rate_axes(ax, f"{lv} blocks: mean ||ÂÂ' - AA'||_F")
    return save_figure(fig, path)


@register_check("published_design", claim=_CLAIM, criterion=_CRITERION, quick=_PUB_QUICK, full=_PUB_FULL, seed=20240707)
def published_design(ctx):
    """Block errors of HCL (known pattern), HCL (learned ranks) and SFA over the n grid.

    Gate of the learned pattern (replaces "exact in >= 90% of replications at
    every n, else its criteria are dropped"): exact in at least
    ``binomial_gate(replications, p_regression, alpha)`` fits at the largest
    n. With 8 (quick) or 3 (full) replications no count separates 0.9 from 1,
    so the gate is every fit, which catches a regression to P(exact) <= 0.69
    (quick) / 0.37 (full) with probability >= 0.95; the statement in the
    summary says so. The learned-ranks slope is always judged.
    """
    from ..estimators.hcl import HCL
    from ..estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    h = published_hierarchy(s["dims"], s["rank"])
    levels = levels_of(h)
    ns, R = np.asarray(s["n"]), s["replications"]
    err = {meth: {lv: np.zeros((len(ns), R)) for lv in levels} for meth in _METHODS}
    blocks = {meth: np.zeros((len(ns), R, sum(len(st) for st in h.structures))) for meth in _METHODS}
    exact = np.zeros((len(ns), R))
    times = Counter()
    for r in range(R):
        rng_model, rng_data = ctx.streams(0, r)
        model = HierarchicalModel.random(h, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                         random_state=rng_model)
        views, _ = model.sample(int(ns[-1]), random_state=rng_data)
        for i, n in enumerate(ns):
            v = prefix(views, int(n))
            ests = {"hcl": HCL(h, noise_model="isotropic", random_state=r),
                    "hcl_learned": HCL(None, noise_model="isotropic", penalty=None, random_state=r),
                    "sfa": StructuredFactorAnalysis(h, noise_model="isotropic", random_state=r)}
            for meth, est in ests.items():
                t0 = time.perf_counter()
                ctx.fit(meth, est, v)
                times[meth] += time.perf_counter() - t0
                be = block_errors(est.loadings_, model.loadings, h.dims)
                blocks[meth][i, r] = [be[(st, m)] for st in h.structures for m in h.modalities if m in st]
                for lv, val in level_means(be, h, levels).items():
                    err[meth][lv][i, r] = val
                if meth == "hcl_learned":
                    exact[i, r] = pattern_scores(est.hierarchy_, h)["exact"]
    fits = {meth: {lv: _safe_slope(ns, err[meth][lv], ctx.seed) for lv in levels} for meth in _METHODS}
    out = {"n": ns, "hierarchy": h.to_dict(), "replications": R, "hcl_learned_exact": exact.mean(axis=1),
           "fit_seconds_total": dict(times),
           "block_labels": [f"{h.name(st)}:{m}" for st in h.structures for m in h.modalities if m in st]}
    for meth in _METHODS:
        out[meth] = {"levels": fits[meth], "mean_block_error": blocks[meth].mean(axis=1)}
    crit = evaluate_published_design(out, s)
    figures = [_plot(fits, levels, ns, ctx.figure_path)]
    for meth in _METHODS:
        out[meth]["levels"] = {lv: None if f is None else fit_summary(f) for lv, f in fits[meth].items()}
    notes = [
        f"dims {dict(s['dims'])}, rank {s['rank']} for all seven structures, isotropic noise c = {s['noise']:g}.",
        "Block metric: hclstat.metrics.block_errors (one orthogonal Procrustes rotation of the whole stacked "
        "loading matrix onto the truth, then the Frobenius error of A_mS A_mS^T per block), averaged per level.",
        f"HCL with learned ranks: HCL(hierarchy=None, penalty=None); its pattern was exact in "
        f"{', '.join(f'{int(round(x * R))}/{R}' for x in out['hcl_learned_exact'])} fits at n = "
        f"{', '.join(str(int(n)) for n in ns)}; every fit enters its block errors.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": figures}
