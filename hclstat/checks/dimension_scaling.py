"""Check ``dimension_scaling``: mean squared sin-theta affine in ``p`` at fixed ``n``, ``E sin^2 ~ (c0 + c1 p) / n``.

Design D1 with ``p_a = p_b = p_c = p`` and the published loading law with
singular values drawn once per replication (:func:`hclstat.model.model_from_singular_values`),
so that only ``p`` (and ``n``) change between cells.
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import loading_errors
from ..model import d1_hierarchy, model_from_singular_values
from .runner import register_check
from .shared import N_BOOT, affine_fit, criterion, figure, level_means, levels_of, prefix, save_figure

__all__ = ["evaluate_dimension_scaling", "dimension_scaling"]

_DIM_QUICK = {"p": [16, 32, 64, 128], "n": [4000, 8000], "noise": 1.0, "singular_values": [0.5, 1.5],
              "replications": 16, "min_r2": 0.9, "slope_ratio_tol": 0.3}
_DIM_FULL = dict(_DIM_QUICK, p=[25, 50, 100, 200, 400], n=[8000, 16000], replications=20)
_METHODS = ("hcl", "sfa")
_CLAIM = (
    "At fixed loading singular values, the mean squared sin-theta error is affine in p: "
    "E sin^2 ≈ (c0 + c1 p) / n."
)
_CRITERION = (
    "per level and n: affine fit of mean sin^2 on p with R^2 >= 0.9 and a slope whose bootstrap "
    "interval is above 0; the slope halves when n doubles (log2 ratio within 1 ± 0.3); every HCL "
    "and SFA fit converged"
)


def evaluate_dimension_scaling(results, settings):
    """Criteria of the dimension-scaling check from its ``results`` dict."""
    crit = []
    ns = results["n"]
    for lv, per_n in results["hcl"].items():
        for n in ns:
            fit = per_n[str(n)]
            crit.append(criterion(f"n={n}/{lv}/affine_r2",
                                  f"R^2 of the affine fit of mean sin^2 on p >= {settings['min_r2']:g}",
                                  fit["r2"], fit["r2"] >= settings["min_r2"]))
            crit.append(criterion(f"n={n}/{lv}/positive_slope",
                                  "slope of mean sin^2 in p > 0 (bootstrap 95% interval above 0)",
                                  fit["slope"], fit["slope_ci"][0] > 0, ci=fit["slope_ci"]))
        if len(ns) == 2:
            a, b = per_n[str(ns[0])]["slope"], per_n[str(ns[1])]["slope"]
            expect = math.log2(ns[1] / ns[0])
            val = math.log2(a / b) if a > 0 and b > 0 else -math.inf
            crit.append(criterion(f"{lv}/slope_scales_as_1_over_n",
                                  f"log2(slope at n={ns[0]} / slope at n={ns[1]}) within {expect:g} ± "
                                  f"{settings['slope_ratio_tol']:g} (the p-coefficient is c1/n)",
                                  val, abs(val - expect) <= settings["slope_ratio_tol"]))
    return crit


def _squared_errors(ctx):
    """``sq[meth][n][level]``: mean squared sin-theta, shape (len(p), replications)."""
    from ..estimators.hcl import HCL
    from ..estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    ps, ns, R = s["p"], list(s["n"]), s["replications"]
    h0 = d1_hierarchy({m: int(ps[0]) for m in "abc"})
    levels = levels_of(h0)
    a, b = s["singular_values"]
    sq = {meth: {n: {lv: np.zeros((len(ps), R)) for lv in levels} for n in ns} for meth in _METHODS}
    for r in range(R):
        rng_d, _ = ctx.streams(0, r)
        # one set of singular values per replication, shared by every p and n (fixed signal)
        d = {(st, m): rng_d.uniform(a, b, h0.rank(st)) for st in h0.structures for m in st}
        for i, p in enumerate(ps):
            h = d1_hierarchy({m: int(p) for m in "abc"})
            rng_model, rng_data = ctx.streams(1 + i, r)
            model = model_from_singular_values(h, d, s["noise"], random_state=rng_model)
            views, _ = model.sample(max(ns), random_state=rng_data)
            for n in ns:
                v = prefix(views, n)
                for meth, est in (("hcl", HCL(h, noise_model="isotropic", random_state=r)),
                                  ("sfa", StructuredFactorAnalysis(h, noise_model="isotropic", random_state=r))):
                    ctx.fit(meth, est, v)
                    e = loading_errors(est.loadings_, model.loadings)
                    for lv, val in level_means({k: x**2 for k, x in e.items()}, h, levels).items():
                        sq[meth][n][lv][i, r] = val
    return sq, levels


def _plot(fits, ps, ns, levels, path):
    fig, axes = figure(2, len(levels), width=4.0, height=3.4)
    xs = np.linspace(0, ps.max(), 50)
    for j, lv in enumerate(levels):
        ax = axes[0, j]
        for k, n in enumerate(ns):
            for meth, mk in (("hcl", "o"), ("sfa", "s")):
                f = fits[(meth, lv, n)]
                color = f"C{2 * k + (meth == 'sfa')}"
                ax.errorbar(ps, f["mean"], yerr=f["se"], fmt=mk, color=color, ms=4, capsize=2)
                if meth == "hcl":
                    ax.plot(xs, f["intercept"] + f["slope"] * xs, color=color, lw=1.2,
                            label=f"HCL n={n}: R²={f['r2']:.3f}")
                else:
                    ax.plot([], [], mk, color=color, label=f"SFA n={n}")
        ax.set_title(f"{lv}: mean sin² vs p")
        ax.set_ylabel("mean sin²θ")
        ax = axes[1, j]
        for k, n in enumerate(ns):
            f = fits[("hcl", lv, n)]
            ax.errorbar(ps, n * f["mean"], yerr=n * f["se"], fmt="o", color=f"C{2 * k}", ms=4, capsize=2,
                        label=f"n={n}: n × slope = {n * f['slope']:.2f}")
            ax.plot(xs, n * (f["intercept"] + f["slope"] * xs), color=f"C{2 * k}", lw=1)
        ax.set_title(f"{lv}: n × mean sin² vs p (one line ⇔ (c0 + c1 p)/n)", fontsize=9)
        ax.set_ylabel("n × mean sin²θ")
    for ax in axes.ravel():
        ax.set_xlabel("p (each modality)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5)
    return save_figure(fig, path)


@register_check("dimension_scaling", claim=_CLAIM, criterion=_CRITERION, quick=_DIM_QUICK, full=_DIM_FULL, seed=20240703)
def dimension_scaling(ctx):
    """Affine fits of HCL's mean sin^2 on ``p`` per level and ``n``, with a bootstrap interval of the slope."""
    s = ctx.settings
    ps, ns, R = np.asarray(s["p"]), list(s["n"]), s["replications"]
    sq, levels = _squared_errors(ctx)
    out = {"n": ns, "p": ps, "form": "E sin^2 ≈ (c0 + c1 p) / n: affine in p at fixed n, slope c1 / n"}
    rng = np.random.default_rng(ctx.seed)
    fits = {}
    for meth in _METHODS:
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
                out[meth][lv][str(n)] = fits[(meth, lv, n)] = fit
    crit = evaluate_dimension_scaling({"n": ns, "hcl": out["hcl"]}, s)
    notes = [
        "Design D1 with p_a = p_b = p_c = p; loadings = Haar orthonormal basis x singular values x rotation "
        "(hclstat.model.model_from_singular_values); the singular values are drawn once per replication from "
        "U[a, b] and reused for every p and n, so only p (and n) change between cells.",
        "The same sample of max(n) rows per (p, replication) is used for both n (its first rows for the smaller).",
    ]
    return {"results": out, "criteria": crit, "notes": notes,
            "figures": [_plot(fits, ps, ns, levels, ctx.figure_path)]}
