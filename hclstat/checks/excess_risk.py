"""Check ``excess_risk``: the downstream refit has excess risk ~ ``1/m`` and selects the task-relevant structures.

:class:`hclstat.downstream.HCLRegressor` (group lasso over structures, refit)
on the scores of an HCL representation fitted once on a large unlabelled
sample, with the true representation as reference.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..hierarchy import Hierarchy
from ..metrics import loading_errors, pattern_scores
from ..model import HierarchicalModel
from .runner import register_check
from .shared import (COLORS, criterion, figure, fit_summary, grid_ticks, legend_below, loglog_slope, prefix, rate_panel,
    reference_slope, save_figure, slope_criterion, streamed_moments)

__all__ = ["evaluate_excess_risk", "excess_risk_check"]

_RISK_QUICK = {"dims": {"a": 15, "b": 20, "c": 25}, "rank": 2, "noise": 1.0, "outcome_noise": 1.0,
               "beta": {"a,b,c": [1.0, -0.5], "a,b": [0.6, 0.6]},
               "m": [1000, 2000, 4000, 8000, 16000], "replications": 60, "n_unlabeled": 1_000_000,
               "n_unlabeled_learned": 50_000,
               "n_test": 20_000, "n_lambdas": 20, "risk_tol": 0.15, "coef_tol": 0.1, "max_final_fp": 0.05}
_RISK_FULL = dict(_RISK_QUICK, m=[1000, 2000, 4000, 8000, 16000, 32000, 64000], replications=100,
                  n_unlabeled=4_000_000, risk_tol=0.1)
_REPRESENTATIONS = ("hcl", "oracle")
_KEYS = ("excess_risk", "coef_error", "recall", "false_positives")
_CLAIM = (
    "Downstream, the group lasso over structures on HCL scores selects the task-relevant structures and "
    "its refit has excess risk ~ 1/m and coefficient error ~ m^-1/2 in the labelled sample size m."
)
_CRITERION = (
    "log-log slope of the mean excess risk within -1 ± 0.15 (quick; ± 0.1 full), of the RMS "
    "coefficient error within -1/2 ± 0.1; recall 1 in every fit at the largest m (never falling); "
    "mean false positives at the largest m <= 0.05 (never above the smallest m's); every HCL and "
    "regressor fit converged"
)


def evaluate_excess_risk(results, settings):
    """Criteria of the excess-risk check from its ``results`` dict."""
    crit = []
    for rep in _REPRESENTATIONS:
        res = results[rep]
        crit.append(slope_criterion(f"{rep}/excess_risk_slope", res["excess_risk"], -1.0, settings["risk_tol"]))
        crit.append(slope_criterion(f"{rep}/coefficient_error_slope", res["coef_error"], -0.5, settings["coef_tol"]))
        recall = np.asarray(res["recall"])
        crit.append(criterion(f"{rep}/recall_one",
                              "every fit at the largest m selects every task-relevant structure (recall 1), and "
                              "the mean recall does not fall as m grows",
                              recall, bool(recall[-1] == 1.0 and np.all(np.diff(recall) >= -1e-12))))
        fp = np.asarray(res["false_positives"])
        crit.append(criterion(f"{rep}/false_positives_vanish",
                              f"mean number of false-positive structures at the largest m <= "
                              f"{settings['max_final_fp']:g} and not above its value at the smallest m",
                              float(fp[-1]), fp[-1] <= settings["max_final_fp"] and fp[-1] <= fp[0] + 1e-12))
    return crit


def _design(s):
    """Every structure but ``{a,c}`` (relevant and irrelevant partials), ``beta`` on two of them."""
    dims = s["dims"]
    names = tuple(dims)
    ranks = {c: s["rank"] for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)
             if size != 2 or c != names[::2]}
    h = Hierarchy(dims, ranks)
    beta = {tuple(k.split(",")): v for k, v in s["beta"].items()}
    bvec = {st: np.zeros(h.rank(st)) for st in h.structures}
    for k, v in beta.items():
        bvec[h.structure(k)] = np.asarray(v, dtype=np.float64)
    return h, beta, bvec, {h.structure(k) for k in beta}


def _representations(ctx, model, streams):
    """HCL fitted once on the streamed moments of ``n_unlabeled`` rows; its Procrustes rotation to the truth;
    HCL learning the pattern on ``n_unlabeled_learned`` rows."""
    from scipy.linalg import orthogonal_procrustes

    from ..estimators.hcl import HCL

    s = ctx.settings
    h = model.hierarchy
    rng_unl, rng_learn = streams
    moments = streamed_moments(model, s["n_unlabeled"], rng_unl)
    rep_hcl = ctx.fit("representation/hcl", HCL(h, noise_model="isotropic", random_state=ctx.seed), moments,
                      method="fit_moments")
    rot = {}
    for st in h.structures:
        mods = [m for m in h.modalities if m in st]
        At = np.vstack([model.loadings[st][m] for m in mods])
        Ae = np.vstack([rep_hcl.loadings_[st][m] for m in mods])
        rot[st] = orthogonal_procrustes(At, Ae)[0]  # Ae ≈ At @ rot: coefficients on HCL scores are rot^T beta
    unl_views, _ = model.sample(s["n_unlabeled_learned"], random_state=rng_learn)
    rep_l = ctx.fit("representation/hcl_learned", HCL(None, noise_model="isotropic", random_state=ctx.seed),
                    unl_views)
    return rep_hcl, rot, rep_l


def _regressions(ctx, model, reps, rot, beta, bvec, relevant, test):
    from ..downstream import HCLRegressor, excess_risk

    s = ctx.settings
    h = model.hierarchy
    ms, R = np.asarray(s["m"]), s["replications"]
    vals = {rep: {k: np.zeros((len(ms), R)) for k in _KEYS} for rep in _REPRESENTATIONS}
    for r in range(R):
        rng_lab, rng_y = ctx.streams(1, r)
        views, latents = model.sample(int(ms[-1]), random_state=rng_lab)
        y = model.outcome(latents, beta, noise=s["outcome_noise"], random_state=rng_y)
        for rep_name, rep in reps.items():
            target = {st: (rot[st].T @ bvec[st] if rep_name == "hcl" else bvec[st]) for st in h.structures}
            for i, m in enumerate(ms):
                reg = HCLRegressor(rep, n_lambdas=s["n_lambdas"], random_state=r)
                ctx.fit(f"regressor/{rep_name}", reg, prefix(views, int(m)), y[: int(m)])
                v = vals[rep_name]
                v["excess_risk"][i, r] = excess_risk(reg, model, beta, sample=test)
                v["coef_error"][i, r] = float(np.sqrt(sum(np.sum((reg.coef_[st] - target[st]) ** 2)
                                                          for st in h.structures)))
                sel = set(reg.selected_structures_)
                v["recall"][i, r] = len(sel & relevant) / len(relevant)
                v["false_positives"][i, r] = len(sel - relevant)
    return vals


def _rms_fit(ms, errors, seed):
    """Slope of the RMS error: half the log-log slope of the mean squared error (bands likewise)."""
    sq = loglog_slope(ms, errors**2, random_state=seed)
    return dict(sq, slope=0.5 * sq["slope"], intercept=0.5 * sq["intercept"],
                slope_ci=[0.5 * c for c in sq["slope_ci"]], mean=np.sqrt(sq["mean"]),
                se=0.5 * sq["se"] / np.sqrt(sq["mean"]), band_low=np.sqrt(sq["band_low"]),
                band_high=np.sqrt(sq["band_high"]))


def _plot(out, s, path):
    ms = np.asarray(s["m"])
    fig, axes = figure(1, 3, width=4.2, height=3.5)
    labels = {"hcl": f"HCL repr. ({s['n_unlabeled']:.0e} unlabelled)", "oracle": "true representation"}
    for rep_name, ls, mk in (("hcl", "-", "o"), ("oracle", "--", "s")):
        color = COLORS["hcl"] if rep_name == "hcl" else COLORS["oracle"]
        rate_panel(axes[0, 0], ms, out[rep_name]["excess_risk"], labels[rep_name], color, marker=mk, ls=ls)
        rate_panel(axes[0, 1], ms, out[rep_name]["coef_error"], labels[rep_name], color, marker=mk, ls=ls)
        axes[0, 2].plot(ms, out[rep_name]["recall"], marker=mk, ls=ls, color=color, label=f"recall, {rep_name}")
        axes[0, 2].plot(ms, out[rep_name]["false_positives"], marker=mk, ls=":", color=color,
                        label=f"mean false positives, {rep_name}")
    reference_slope(axes[0, 0], ms, out["hcl"]["excess_risk"]["mean"][0] * 1.5, -1.0, "slope -1")
    reference_slope(axes[0, 1], ms, out["hcl"]["coef_error"]["mean"][0] * 1.3, -0.5, "slope -1/2")
    axes[0, 0].set_title("excess risk (vs Bayes predictor given x)")
    axes[0, 1].set_title("RMS coefficient error (aligned basis)")
    axes[0, 2].set_title("selection of task-relevant structures")
    for j, ax in enumerate(axes[0]):
        ax.set_xlabel("m (labelled rows)")
        if j < 2:
            legend_below(ax)
        else:
            ax.set_ylim(-0.05, 1.1)
            ax.legend(fontsize=6.5, loc="center right")
    axes[0, 2].set_xscale("log")
    grid_ticks(axes[0, 2], ms)
    axes[0, 2].grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


@register_check("excess_risk", claim=_CLAIM, criterion=_CRITERION, quick=_RISK_QUICK, full=_RISK_FULL, seed=20240705)
def excess_risk_check(ctx):
    """The HCL and the true representation, each under :class:`~hclstat.downstream.HCLRegressor` on nested
    labelled samples; the HCL representation's own fit (and HCL learning the pattern) must converge."""
    from ..estimators.base import ModelRepresentation

    s = ctx.settings
    h, beta, bvec, relevant = _design(s)
    ms = np.asarray(s["m"])
    rng_model, rng_test, rng_unl, rng_learn = ctx.streams(0, 0, n=4)
    model = HierarchicalModel.random(h, noise=s["noise"], random_state=rng_model)
    test = model.sample(s["n_test"], random_state=rng_test)
    rep_hcl, rot, rep_l = _representations(ctx, model, (rng_unl, rng_learn))
    reps = {"hcl": rep_hcl, "oracle": ModelRepresentation(model).fit()}
    vals = _regressions(ctx, model, reps, rot, beta, bvec, relevant, test)
    out = {"m": ms, "hierarchy": h.to_dict(), "relevant": [h.name(st) for st in h.structures if st in relevant],
           "n_unlabeled": s["n_unlabeled"],
           "hcl_representation_sin_theta": {f"{h.name(st)}:{m}": v for (st, m), v in
                                            loading_errors(rep_hcl.loadings_, model.loadings).items()},
           "hcl_learned_representation": {"n_unlabeled": s["n_unlabeled_learned"],
                                          "exact": bool(pattern_scores(rep_l.hierarchy_, h)["exact"]),
                                          "hierarchy": rep_l.hierarchy_.to_dict()}}
    for rep_name in _REPRESENTATIONS:
        v = vals[rep_name]
        out[rep_name] = {
            "excess_risk": loglog_slope(ms, v["excess_risk"], random_state=ctx.seed),
            "coef_error": _rms_fit(ms, v["coef_error"], ctx.seed),
            "recall": v["recall"].mean(axis=1),
            "false_positives": v["false_positives"].mean(axis=1),
            "exact_selection_fraction": ((v["recall"] == 1) & (v["false_positives"] == 0)).mean(axis=1),
        }
    crit = evaluate_excess_risk(out, s)
    figures = [_plot(out, s, ctx.figure_path)]
    for rep_name in _REPRESENTATIONS:
        for k in ("excess_risk", "coef_error"):
            out[rep_name][k] = fit_summary(out[rep_name][k])
    notes = [
        "HCL representation: HCL with the true hierarchy fitted once, on the moments of an unlabelled sample of "
        f"n_unlabeled = {s['n_unlabeled']} rows, and used for every replication and m; the true representation "
        "(ModelRepresentation) is the reference. Labelled samples are nested (first m rows of one draw per "
        "replication).",
        "Excess risk: hclstat.downstream.excess_risk against the Bayes predictor given the views, on one shared "
        f"test sample of {s['n_test']} rows.",
        "Coefficient error: HCL's scores are identified up to one rotation per structure; the true coefficients are "
        "rotated by the orthogonal Procrustes map between true and fitted loadings of each structure.",
        f"hcl_learned_representation: HCL(hierarchy=None) on {s['n_unlabeled_learned']} unlabelled rows "
        f"{'found' if out['hcl_learned_representation']['exact'] else 'did not find'} the exact pattern (reported, "
        "not gated).",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": figures}
