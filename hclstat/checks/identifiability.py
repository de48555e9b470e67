"""Check ``identifiability``: population covariance -> exact recovery; correlated latents -> counterexamples.

Random hierarchies meeting :func:`~hclstat.identify.check_identifiable` are
recovered by :func:`~hclstat.identify.identify` from their population
covariance with every error at most ``sqrt(machine eps)``; with correlated
latents, :func:`~hclstat.identify.counterexample` gives two parameter sets with
equal covariance (and spurious sharing that the rank lattice flags).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..exceptions import EstimationWarning
from ..hierarchy import Hierarchy
from ..metrics import subspace_distance
from ..model import HierarchicalModel
from ..studies import cell_hierarchy
from .runner import register_check
from .shared import EXACT_TOL, criterion, figure, save_figure

__all__ = ["evaluate_identifiability", "identifiability"]

_IDENT_QUICK = {"n_hierarchies": 30, "M": [3, 5], "p": [8, 20], "max_rank": 2, "structure_probability": 0.5,
                "n_counterexamples": 10, "rho": 0.5}
_IDENT_FULL = {"n_hierarchies": 300, "M": [3, 6], "p": [8, 30], "max_rank": 3, "structure_probability": 0.5,
               "n_counterexamples": 100, "rho": 0.5}
_CLAIM = (
    "From the population covariance, the structures, ranks, column spaces col(A_mS), signal blocks "
    "and noise are recovered exactly; with correlated latents distinct parameters give the same "
    "covariance (and some correlations are detectable)."
)
_CRITERION = (
    "all random hierarchies recovered with errors <= sqrt(machine eps); counterexamples with "
    "equal covariances and different loadings; every detectable case flagged"
)


def _random_identifiable(ctx, i, noise_model, settings, max_tries=100):
    """A random hierarchy meeting :func:`check_identifiable` for ``noise_model``; tries used."""
    from ..identify import check_identifiable

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
    return [
        criterion("exact_hierarchy", "identify() returns the true structures and ranks for every random hierarchy",
                  rec["n_exact"], rec["n_exact"] == rec["n"], n=rec["n"]),
        criterion("subspaces_exact", f"max sin-theta error of every col(A_mS) <= sqrt(eps) = {tol:.1e}",
                  rec["max_sin_theta"], rec["max_sin_theta"] <= tol),
        criterion("blocks_exact", f"max relative error of every signal block A_mS A_m'S^T <= {tol:.1e}",
                  rec["max_block_error"], rec["max_block_error"] <= tol),
        criterion("noise_exact", f"max relative error of the noise variances <= {tol:.1e}",
                  rec["max_noise_error"], rec["max_noise_error"] <= tol),
        criterion("counterexample_equal_covariance",
                  f"correlated-latent counterexamples: the two covariances agree to <= {tol:.1e} (relative)",
                  ce["max_covariance_difference"], ce["max_covariance_difference"] <= tol),
        criterion("counterexample_different_loadings",
                  "... while their loadings differ (nested construction, same pattern): min over pairs of the "
                  "largest sin-theta distance between the two models' col(A_mS) exceeds 1e6 x the covariance "
                  "difference (the specific-pair construction differs in its pattern itself)",
                  ce["min_loading_difference"],
                  ce["min_loading_difference"] > 1e6 * max(ce["max_covariance_difference"], np.finfo(float).eps)),
        criterion("counterexample_not_recoverable",
                  "nested construction: identify() on the correlated model returns the uncorrelated twin's "
                  "subspaces (<= sqrt(eps)); in no instance does it return the correlated model itself",
                  ce["max_distance_to_twin"],
                  ce["max_distance_to_twin"] <= tol and ce["n_recovering_correlated_model"] == 0),
        criterion("detectable_flagged",
                  "spurious-sharing covariances (correlated specific latents) are flagged: member rank "
                  "estimates disagree and an EstimationWarning is raised, in every instance",
                  det["n_flagged"], det["n_flagged"] == det["n"], n=det["n"]),
    ]


def _population_recovery(ctx, s):
    from ..identify import check_model, identify

    models = ("isotropic", "diagonal", None)
    per = []
    tries_total = 0
    for i in range(s["n_hierarchies"]):
        noise_model = models[i % 3]
        h, rng, tries = _random_identifiable(ctx, i, noise_model or "isotropic", s)
        tries_total += tries
        model = HierarchicalModel.random(h, noise=1.0, noise_model=noise_model or "diagonal", random_state=rng)
        with ctx.recording("identify") as caught:
            ident = identify(model.covariance(), h.dims, noise_model=noise_model)
        exact, sub, blk, noise = _recovery_errors(ident, model, noise_model)
        per.append({"hierarchy": h.to_dict(), "noise_model": noise_model or "none", "exact": exact,
                    "sin_theta": sub, "block": blk, "noise": noise, "warnings": len(caught),
                    "general_position": bool(check_model(model, noise_model=noise_model).identifiable)})
    finite = [r for r in per if r["exact"]]
    return {
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


def _counterexample_row(ctx, h, ma, mb):
    from ..identify import check_model, identify

    Sa, Sb = ma.covariance(), mb.covariance()
    nested = ma.hierarchy == mb.hierarchy
    row = {"hierarchy": h.to_dict(), "construction": "nested" if nested else "specific_pair",
           "twin_hierarchy": mb.hierarchy.to_dict(),
           "covariance_difference": float(np.max(np.abs(Sa - Sb)) / np.max(np.abs(Sa))),
           "check_model_flags_a": not check_model(ma).identifiable}
    if nested:
        row["loading_difference"] = max(subspace_distance(ma.loadings[t][m], mb.loadings[t][m])
                                        for t in h.structures for m in t)
    else:  # the twin has an extra pair structure: the two parameter sets differ in their very pattern
        row["loading_difference"] = None
    row["recovers_correlated_model"] = False
    row["distance_to_twin"] = math.inf
    try:
        with ctx.recording("identify/counterexample"):
            ident = identify(Sa, h.dims, noise_model="isotropic")
    except ValueError as exc:
        row["identify"] = f"raised {type(exc).__name__}: {exc}"
        return row
    row["identify"] = ident.hierarchy.to_dict()
    if ident.hierarchy == mb.hierarchy:
        row["distance_to_twin"] = max(subspace_distance(ident.subspaces[t][m], mb.loadings[t][m])
                                      for t in mb.hierarchy.structures for m in t)
    if ident.hierarchy == h:
        row["recovers_correlated_model"] = max(
            subspace_distance(ident.subspaces[t][m], ma.loadings[t][m]) for t in h.structures for m in t
        ) <= EXACT_TOL
    return row


def _correlated_latents(ctx, s):
    """Equal-covariance counterexamples (the twin is what identify() sees) and detectable spurious sharing."""
    from ..identify import counterexample, identify

    rows, det_rows = [], []
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
        rows.append(_counterexample_row(ctx, h, ma, mb))
        model = counterexample(h, rho, random_state=rng_m, kind="spurious_sharing")
        # the flag lives in the rank lattice, which needs no noise model
        with ctx.recording("identify/spurious_sharing") as caught:
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
    return counter, detect


def _plot(results, path):
    recovery, counter, detect = results["recovery"], results["counterexample"], results["detectable"]
    per = recovery["instances"]
    nested_rows = [r for r in counter["instances"] if r["construction"] == "nested"]
    fig, axes = figure(1, 2, width=5.0)
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
    xs = np.arange(len(nested_rows))
    ax.scatter(xs, [max(r["covariance_difference"], floor) for r in nested_rows], s=14,
               label="|Sigma_a - Sigma_b| (rel.)")
    ax.scatter(xs, [r["loading_difference"] for r in nested_rows], s=14, label="max sin-theta between loadings a, b")
    ax.scatter(xs, [max(r["distance_to_twin"], floor) for r in nested_rows], s=14, marker="x",
               label="identify(Sigma_a) vs model b")
    ax.axhline(EXACT_TOL, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("counterexample (nested construction)")
    ax.set_title(f"correlated latents (rho = {counter['rho']}); detectable flagged {detect['n_flagged']}/{detect['n']}")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


@register_check("identifiability", claim=_CLAIM, criterion=_CRITERION, quick=_IDENT_QUICK, full=_IDENT_FULL, seed=20240701)
def identifiability(ctx):
    """Population recovery over random hierarchies (noise model cycling isotropic / diagonal / none)
    and the correlated-latent counterexamples; every gate is an identity up to ``sqrt(eps)`` or a count
    that must be complete."""
    s = ctx.settings
    recovery = _population_recovery(ctx, s)
    counter, detect = _correlated_latents(ctx, s)
    results = {"recovery": recovery, "counterexample": counter, "detectable": detect}
    return {"results": results, "criteria": evaluate_identifiability(results),
            "figures": [_plot(results, ctx.figure_path)]}
