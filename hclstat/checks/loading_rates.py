"""Check ``loading_rates``: the sin-theta error of every ``col(A_{m,S})`` decays like ``n^{-1/2}``.

On design D1 (:func:`hclstat.model.d1_hierarchy`), under isotropic and
heteroskedastic noise, HCL with the true pattern is compared with the oracle
(:class:`~hclstat.estimators.sfa.StructuredFactorAnalysis` with the true
pattern) and with concatenated PCA.
"""

from __future__ import annotations

import math

import numpy as np

from ..hierarchy import Hierarchy
from ..metrics import loading_errors, pattern_scores, subspace_distance
from ..model import HierarchicalModel, d1_hierarchy
from .runner import register_check
from .shared import (COLORS, criterion, figure, fit_summaries, fit_summary, grid_ticks, level_means, levels_of,
    loglog_slope, prefix, rate_axes, rate_panel, ratio_of_means, reference_slope, save_figure,
    slope_criterion)

__all__ = ["evaluate_loading_rates", "loading_rates", "ratio_gate_z"]

_RATES_QUICK = {"dims": {"a": 50, "b": 60, "c": 70}, "noise": 0.5, "singular_values": [0.5, 1.5],
                "n": [1000, 2000, 4000, 8000, 16000], "replications": 10, "learned_replications": 5,
                "slope_tol": 0.1, "nsq_tol": 0.2, "ratio_se_bound": 0.0075, "ratio_fwer": 0.05,
                "ratio_slope_max": 0.1, "pca_plateau": -0.25}
_RATES_FULL = dict(_RATES_QUICK, n=[1000, 2000, 4000, 8000, 16000, 32000, 64000], replications=30,
                   learned_replications=10)
_NOISE_MODELS = ("isotropic", "diagonal")
_CLAIM = (
    "The sin-theta error of every col(A_mS) decays like n^-1/2 at every level (global, partial, "
    "specific), for isotropic and heteroskedastic noise, within a bounded factor of the oracle MLE; "
    "PCA on concatenated views does not (it plateaus under heteroskedastic noise)."
)
_CRITERION = (
    "HCL (true pattern) log-log slope within -1/2 ± 0.1 per level; n x squared error flat "
    "(slope within 0 ± 0.2); HCL/SFA ratio <= 1 + z SE_bound = 1.022 at every n "
    "(SE_bound 0.0075, family-wise level 0.05) and not growing (slope <= 0.1); PCA's global slope > -0.25 under diagonal noise; "
    "every HCL and SFA fit converged"
)


def ratio_gate_z(n_tests, fwer):
    """One-sided normal quantile at family-wise level ``fwer`` (Bonferroni over ``n_tests`` ratios)."""
    from scipy.stats import norm

    return float(norm.ppf(1.0 - fwer / max(int(n_tests), 1)))


def evaluate_loading_rates(results, settings):
    """Criteria of the loading-rates check from its ``results`` dict.

    The oracle-ratio gate is ``1 + z SE_bound``: ``SE_bound =
    settings["ratio_se_bound"]`` bounds the bootstrap standard error of the
    ratio of mean errors HCL / SFA (paired over replications: both estimators
    see the same samples), and ``z`` is the one-sided normal quantile at
    family-wise level ``settings["ratio_fwer"]``, Bonferroni over every
    (noise model, level, n). The criterion passes iff every ratio is below the
    gate *and* every measured SE is within the bound (otherwise the gate's
    premise is false and the ratio cannot be judged at that precision).
    """
    crit = []
    noise_models = results["noise_models"]
    n_tests = sum(len(res["ratio_to_sfa"][lv]["ratio"]) for res in noise_models.values() for lv in res["ratio_to_sfa"])
    z = ratio_gate_z(n_tests, settings["ratio_fwer"])
    se_bound = settings["ratio_se_bound"]
    gate = 1.0 + z * se_bound
    for nm, res in noise_models.items():
        for lv, fit in res["hcl"]["levels"].items():
            crit.append(slope_criterion(f"{nm}/{lv}/hcl_slope", fit, -0.5, settings["slope_tol"]))
            nsq = res["hcl"]["n_sq_err"][lv]
            crit.append(criterion(f"{nm}/{lv}/n_times_sq_error_flat",
                                  f"log-log slope of n x mean sin^2 within 0 ± {settings['nsq_tol']:g}",
                                  nsq["slope"], abs(nsq["slope"]) <= settings["nsq_tol"], ci=nsq["slope_ci"]))
            ratio = res["ratio_to_sfa"][lv]
            r, se = np.asarray(ratio["ratio"], dtype=float), np.asarray(ratio["se"], dtype=float)
            worst = float(np.max(r))
            se_ok = bool(np.all(se <= se_bound))
            crit.append(criterion(f"{nm}/{lv}/ratio_to_oracle_bounded",
                                  f"at every n, mean error HCL / SFA(true pattern) <= 1 + z SE_bound = {gate:.4f} "
                                  f"(SE_bound = {se_bound:g}, z = {z:.2f}: one-sided, family-wise level "
                                  f"{settings['ratio_fwer']:g} over {n_tests} ratios) and every bootstrap SE of "
                                  f"the ratio <= SE_bound",
                                  worst, worst <= gate and se_ok, ratio=r, se=se, gate=gate,
                                  **({} if se_ok else {"reason": f"bootstrap SE up to {float(np.max(se)):.4g} "
                                                                 f"exceeds SE_bound = {se_bound:g}"})))
            crit.append(criterion(f"{nm}/{lv}/ratio_to_oracle_not_growing",
                                  f"log-log slope of the ratio HCL / SFA <= {settings['ratio_slope_max']:g}",
                                  ratio["slope"], ratio["slope"] <= settings["ratio_slope_max"]))
    pca = noise_models["diagonal"]["pca_global"]
    crit.append(criterion("diagonal/global/pca_plateaus",
                          f"concatenated PCA, global structure, heteroskedastic noise: log-log slope > "
                          f"{settings['pca_plateau']:g} (its error does not vanish at n^-1/2)",
                          pca["slope"], pca["slope"] > settings["pca_plateau"], ci=pca["slope_ci"]))
    return crit


def _pca_global_error(ctx, views, model, glob, label):
    from ..baselines import ConcatenatedPCA

    h = model.hierarchy
    p = ctx.fit(label, ConcatenatedPCA(h.rank(glob)), views)
    return float(np.mean([subspace_distance(p.loadings_[glob][m], model.loadings[glob][m]) for m in h.modalities]))


def _noise_model_cell(ctx, c, nm, h):
    """Errors of HCL, SFA and PCA over the n grid for one noise model, and HCL learning the pattern."""
    from ..estimators.hcl import HCL
    from ..estimators.sfa import StructuredFactorAnalysis

    s = ctx.settings
    ns = np.asarray(s["n"])
    R = s["replications"]
    levels = levels_of(h)
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
            v = prefix(views, int(n))
            for meth, est in (("hcl", HCL(h, noise_model=nm, random_state=r)),
                              ("sfa", StructuredFactorAnalysis(h, noise_model=nm, random_state=r))):
                ctx.fit(f"{nm}/{meth}", est, v)
                e = loading_errors(est.loadings_, model.loadings)
                for lv, val in level_means(e, h, levels).items():
                    err[meth][lv][i, r] = val
                if meth == "hcl":
                    for lv, val in level_means({k: x**2 for k, x in e.items()}, h, levels).items():
                        sq[lv][i, r] = val
            pca[i, r] = _pca_global_error(ctx, v, model, h.structures[0], f"{nm}/pca")
        if r < s["learned_replications"]:
            est = ctx.fit(f"{nm}/hcl_learned", HCL(None, noise_model=nm, random_state=r), views)
            learned.append({"exact": bool(pattern_scores(est.hierarchy_, h)["exact"]),
                            "hierarchy": est.hierarchy_.to_dict(),
                            "levels": level_means(loading_errors(est.loadings_, model.loadings), h, levels),
                            "hcl_known_levels": {lv: err["hcl"][lv][-1, r] for lv in levels}})
    seed = 1000 * c
    fits = {meth: {lv: loglog_slope(ns, err[meth][lv], random_state=seed) for lv in levels} for meth in ("hcl", "sfa")}
    res = {"hcl": {"levels": fits["hcl"],
                   "n_sq_err": {lv: loglog_slope(ns, ns[:, None] * sq[lv], random_state=seed) for lv in levels}},
           "sfa": {"levels": fits["sfa"]},
           "ratio_to_sfa": {lv: ratio_of_means(ns, err["hcl"][lv], err["sfa"][lv], random_state=seed)
                            for lv in levels},
           "pca_global": loglog_slope(ns, pca, random_state=seed)}
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
    return res


def _pca_control(ctx, dims):
    """One global structure only, where PCA is consistent under equal isotropic noise."""
    s = ctx.settings
    ns = np.asarray(s["n"])
    hg = Hierarchy(dict(dims), {tuple(dims): 1})
    control = {}
    for c, nm in enumerate(_NOISE_MODELS, start=2):
        e = np.zeros((len(ns), s["replications"]))
        for r in range(s["replications"]):
            rng_model, rng_data = ctx.streams(c, r)
            model = HierarchicalModel.random(hg, singular_values=tuple(s["singular_values"]), noise=s["noise"],
                                             noise_model=nm, random_state=rng_model)
            views, _ = model.sample(int(ns[-1]), random_state=rng_data)
            for i, n in enumerate(ns):
                e[i, r] = _pca_global_error(ctx, prefix(views, int(n)), model, hg.structures[0], f"control/{nm}/pca")
        control[nm] = loglog_slope(ns, e, random_state=c)
    return control


def _plot(out, control, levels, s, path):
    ns = np.asarray(s["n"])
    fig, axes = figure(2, len(levels) + 1, width=3.9, height=3.4)
    for row, nm in enumerate(_NOISE_MODELS):
        res = out["noise_models"][nm]
        for j, lv in enumerate(levels):
            ax = axes[row, j]
            hcl_fit = res["hcl"]["levels"][lv]
            rate_panel(ax, ns, hcl_fit, "HCL (true pattern)", COLORS["hcl"])
            rate_panel(ax, ns, res["sfa"]["levels"][lv], "SFA oracle", COLORS["sfa"], marker="s", ls="--", band=False)
            if lv == "global":
                rate_panel(ax, ns, res["pca_global"], "concatenated PCA", COLORS["pca"], marker="^", ls="-.")
                rate_panel(ax, ns, control[nm], "PCA, global-only design (control)", "C5", marker="v", ls=":",
                           band=False)
            reference_slope(ax, ns, hcl_fit["mean"][0] * 1.4, -0.5, "slope -1/2")
            ax.set_ylabel("mean sin-theta")
            rate_axes(ax, f"{nm} noise: {lv}")
        ax = axes[row, -1]
        for lv in levels:
            ratio = res["ratio_to_sfa"][lv]
            ax.errorbar(ns, ratio["ratio"], yerr=ratio["se"], marker="o", capsize=2,
                        label=f"{lv}: slope {ratio['slope']:+.3f}")
        ax.axhline(1.0, color="0.5", lw=1)
        ax.set_xscale("log")
        grid_ticks(ax, ns)
        ax.set_title(f"{nm}: error ratio HCL / SFA (±1 SE)")
        ax.set_xlabel("n")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5)
    return save_figure(fig, path)


@register_check("loading_rates", claim=_CLAIM, criterion=_CRITERION, quick=_RATES_QUICK, full=_RATES_FULL, seed=20240702)
def loading_rates(ctx):
    """D1, HCL (true pattern) vs the SFA oracle and concatenated PCA over a doubling n grid.

    Gates: slopes within ``-1/2 ± slope_tol``; the oracle ratio at most
    ``1 + z SE_bound`` (see :func:`evaluate_loading_rates`). Derivation of
    ``SE_bound = 0.0075``: at this check's seed (quick mode, 10 replications)
    the ratios are 1.000-1.012 and their paired bootstrap SEs 0.0003-0.0072
    over every converged cell (0.068 in the one cell whose oracle fit did not
    converge); with ``z = 2.94`` (30 ratios, family-wise 0.05) the gate is
    1.022, so a loss of more than about 2% to the oracle fails, where the
    former gate (1.5) let any loss short of 50% pass. Full mode has more
    replications, hence smaller SEs, under the same bound. Every HCL / SFA fit
    must converge (runner criterion ``fits_converged``).
    """
    s = ctx.settings
    h = d1_hierarchy(s["dims"])
    levels = levels_of(h)
    out = {"noise_models": {nm: _noise_model_cell(ctx, c, nm, h) for c, nm in enumerate(_NOISE_MODELS)}}
    control = _pca_control(ctx, s["dims"])
    crit = evaluate_loading_rates(out, s)
    figures = [_plot(out, control, levels, s, ctx.figure_path)]
    for res in out["noise_models"].values():  # the bands are in the figure, not the JSON
        for part in ("hcl", "sfa"):
            res[part]["levels"] = fit_summaries(res[part]["levels"])
        res["hcl"]["n_sq_err"] = fit_summaries(res["hcl"]["n_sq_err"])
        res["pca_global"] = fit_summary(res["pca_global"])
    out["pca_control_global_only"] = fit_summaries(control)
    out["n"] = np.asarray(s["n"])
    notes = [
        "HCL is given the true hierarchy (rates); HCL learning the pattern is reported at the largest n only "
        f"({s['learned_replications']} replications), not gated.",
        "Each replication draws one model and one sample of the largest n; smaller n use its first rows "
        "(nested samples), so a replication's errors are correlated across n; the slope bands and the ratio "
        "SEs bootstrap whole replications.",
        "In design D1 concatenated PCA is biased even under isotropic noise (it mixes the global component with "
        "the other structures that load on the same modalities); the control 'pca_control_global_only' "
        "(one global structure, nothing else) isolates the heteroskedastic-noise bias.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": figures}
