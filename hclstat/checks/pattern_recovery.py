"""Check ``pattern_recovery``: P(exact hierarchy) rises to 1 with ``n`` and with the signal strength.

HCL learns the pattern of design D1 (:func:`hclstat.model.d1_hierarchy`, i.i.d.
``N(0, s^2)`` loadings); the binary shared/private view
(:class:`hclstat.baselines.SharedPrivate`) is fitted on the same samples.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..metrics import pattern_scores
from ..model import HierarchicalModel, d1_hierarchy
from .runner import register_check
from .shared import (COLORS, criterion, exact_rate_criterion, figure, grid_ticks, monotone_up_to_mc, save_figure,
    unevaluable)

__all__ = ["evaluate_pattern_recovery", "pattern_recovery"]

_PATTERN_QUICK = {"dims": {"a": 20, "b": 25, "c": 30}, "noise": 1.0, "replications": 40, "final_replications": 100,
                  "n": [250, 500, 1000, 2000, 4000, 8000], "loading_scale_for_n": 0.2,
                  "loading_scale": [0.1, 0.15, 0.2, 0.3, 0.5, 1.0], "n_for_loading_scale": 1000,
                  "p_regression": 0.9, "alpha": 0.05, "fwer": 0.05}
_PATTERN_FULL = dict(_PATTERN_QUICK, dims={"a": 50, "b": 60, "c": 70}, replications=100, final_replications=200,
                     n=[250, 500, 1000, 2000, 4000, 8000, 16000], loading_scale_for_n=0.1,
                     loading_scale=[0.05, 0.075, 0.1, 0.15, 0.3, 1.0], n_for_loading_scale=500)
_SWEEPS = ("n", "loading_scale")
_CLAIM = (
    "The probability that HCL recovers the exact hierarchy (structures and ranks) rises to 1 with the "
    "sample size n and with the signal strength; the binary shared/private view never can when a "
    "partial structure exists."
)
_CRITERION = (
    "P(exact) non-decreasing up to Monte-Carlo error along each sweep (no significant drop at "
    "family-wise level 0.05); at the largest n / loading scale exact in enough of final_replications "
    "fits that a regression to P(exact) = 0.9 fails with probability >= 0.95; the fitted "
    "shared-private view exact in no fit; every HCL fit converged"
)


def evaluate_pattern_recovery(results, settings):
    """Criteria of the pattern-recovery check from its ``results`` dict.

    ``results[sweep]`` holds ``hcl_exact`` (P(exact) over the first
    ``replications`` fits at each grid point), ``final_exact`` and
    ``final_fits`` (count and number of fits at the last grid point, on
    ``final_replications``) and ``shared_private_exact`` (count per grid point)
    with ``shared_private_fits``; ``results["has_partial"]`` says whether the
    design has a partial structure.
    """
    from scipy.stats import norm

    crit = []
    R = results["replications"]
    n_steps = sum(len(results[sw]["hcl_exact"]) - 1 for sw in _SWEEPS)
    # one-sided z-test of each drop, Bonferroni over every step of both sweeps
    z = float(norm.ppf(1.0 - settings["fwer"] / max(n_steps, 1)))
    for sweep in _SWEEPS:
        res = results[sweep]
        p = np.asarray(res["hcl_exact"])
        ok, allowed = monotone_up_to_mc(p, R, z=z)
        crit.append(criterion(f"vs_{sweep}/non_decreasing",
                              f"no drop of P(exact) between neighbouring grid points is significant (one-sided "
                              f"z-test at family-wise level {settings['fwer']:g} over {n_steps} steps: z = {z:.2f})",
                              p, ok, allowed_drops=allowed))
        crit.append(exact_rate_criterion(f"vs_{sweep}/reaches_one", f"HCL's pattern at the largest {sweep}",
                                         res["final_exact"], res["final_fits"], settings["p_regression"],
                                         settings["alpha"]))
        name = f"vs_{sweep}/shared_private_never_exact"
        statement = ("the binary shared/private view cannot represent a partial structure: its fitted pattern is "
                     "exact in 0 fits at every grid point")
        if not results["has_partial"]:
            crit.append(unevaluable(name, statement, "the design has no partial structure"))
        else:
            sp = np.asarray(res["shared_private_exact"])
            crit.append(criterion(name, statement, int(sp.sum()), sp.sum() == 0 and np.all(res["shared_private_fits"]),
                                  n=int(np.sum(res["shared_private_fits"]))))
    return crit


def _sweep(ctx, grid, cell0, h, sp_ranks):
    """HCL and shared-private fits over one sweep's grid; the last point gets ``final_replications``."""
    from ..baselines import SharedPrivate
    from ..estimators.hcl import HCL

    s = ctx.settings
    R = s["replications"]
    rows = []
    for j, (n, scale) in enumerate(grid):
        n_reps = max(R, s["final_replications"]) if j == len(grid) - 1 else R
        exact, sp_exact, sp_recall, scores, failures = [], [], [], [], Counter()
        sp_hierarchies = Counter()
        for r in range(n_reps):
            rng_model, rng_data = ctx.streams(cell0 + j, r)
            model = HierarchicalModel.random(h, loading_scale=scale, noise=s["noise"], random_state=rng_model)
            views, _ = model.sample(n, random_state=rng_data)
            est = ctx.fit("hcl", HCL(None, noise_model="isotropic", penalty=None, random_state=r), views)
            sc = pattern_scores(est.hierarchy_, h)
            exact.append(bool(sc["exact"]))
            if r < R:
                scores.append(sc)
                # the binary view's pattern is fixed by its ranks, so its convergence cannot change P(exact)
                sp = ctx.fit("shared_private", SharedPrivate(noise_model="isotropic", random_state=r, **sp_ranks),
                             views, gate=False)
                sp_sc = pattern_scores(sp.hierarchy_, h)
                sp_exact.append(bool(sp_sc["exact"]))
                sp_recall.append(float(sp_sc["structure_recall"]))
                sp_hierarchies[", ".join(f"{sp.hierarchy_.name(t)}: {k}" for t, k in sp.hierarchy_.ranks.items())] += 1
            if not sc["exact"]:
                failures[", ".join(f"{est.hierarchy_.name(t)}: {k}" for t, k in est.hierarchy_.ranks.items())] += 1
        rows.append({"n": n, "loading_scale": scale, "exact": exact, "sp_exact": sp_exact, "sp_recall": sp_recall,
                     "scores": scores,
                     "failures": dict(failures.most_common(10)), "sp_hierarchies": dict(sp_hierarchies)})

    def mean_score(row, key):
        return float(np.mean([x[key] for x in row["scores"]]))

    return {
        "hcl_exact": [float(np.mean(row["exact"][:R])) for row in rows],
        "hcl_structure_precision": [mean_score(row, "structure_precision") for row in rows],
        "hcl_structure_recall": [mean_score(row, "structure_recall") for row in rows],
        "hcl_support_hamming": [mean_score(row, "support_hamming") for row in rows],
        "final_exact": int(np.sum(rows[-1]["exact"])),
        "final_fits": len(rows[-1]["exact"]),
        "shared_private_exact": [int(np.sum(row["sp_exact"])) for row in rows],
        "shared_private_fits": [len(row["sp_exact"]) for row in rows],
        "shared_private_structure_recall": [float(np.mean(row["sp_recall"])) for row in rows],
        "shared_private_hierarchies": [row["sp_hierarchies"] for row in rows],
        "failures": {f"n={row['n']}, loading_scale={row['loading_scale']}": row["failures"]
                     for row in rows if row["failures"]},
    }


def _plot(out, s, path):
    R = s["replications"]
    fig, axes = figure(1, 2, width=4.8, height=3.6)
    for ax, sweep in zip(axes[0], _SWEEPS):
        d = out[sweep]
        x = np.asarray(d["grid"], dtype=float)
        p = np.asarray(d["hcl_exact"])
        se = np.sqrt(p * (1 - p) / R)
        ax.errorbar(x, p, yerr=2 * se, marker="o", color=COLORS["hcl"], capsize=2, label="HCL (pattern learned) ±2 SE")
        ax.plot(x[-1], d["final_exact"] / d["final_fits"], "*", ms=9, color=COLORS["hcl"],
                label=f"HCL at the last point, {d['final_fits']} fits")
        ax.plot(x, d["hcl_structure_recall"], ls=":", marker=".", color=COLORS["hcl"], label="HCL structure recall")
        ax.plot(x, np.asarray(d["shared_private_exact"]) / np.asarray(d["shared_private_fits"]), marker="s",
                color=COLORS["shared_private"], label="shared-private (fitted)")
        ax.plot(x, d["shared_private_structure_recall"], ls=":", marker=".", color=COLORS["shared_private"],
                label="shared-private structure recall")
        ax.set_xscale("log")
        grid_ticks(ax, x)
        ax.set_ylim(-0.03, 1.05)
        fixed = ", ".join(f"{k}={v}" for k, v in d["fixed"].items())
        ax.set_title(f"P(exact hierarchy) vs {sweep} ({fixed})", fontsize=9)
        ax.set_xlabel(sweep)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="center right")
    return save_figure(fig, path)


@register_check("pattern_recovery", claim=_CLAIM, criterion=_CRITERION, quick=_PATTERN_QUICK, full=_PATTERN_FULL, seed=20240704)
def pattern_recovery(ctx):
    """Two sweeps (n at a fixed loading scale, loading scale at a fixed n) of HCL learning D1's pattern.

    Gate of "rises to 1" (replaces P(exact) >= 0.9 on 40 fits, which a true
    P(exact) of 0.9 passed 63% of the time): at the last point of each sweep
    ``final_replications`` fits, of which at least
    ``binomial_gate(final_replications, p_regression, alpha)`` must be exact
    -- 96 of 100 in quick mode (P(Bin(100, 0.9) >= 96) = 0.024, while 95
    would give 0.058 > 0.05), 188 of 200 in full mode; a true P(exact) of 1
    always passes, and one of 0.99 (the lattice's family-wise level is about
    0.01) passes with probability 0.997 (quick). The monotonicity test uses the
    first ``replications`` fits of every grid point.
    """
    from ..baselines import SharedPrivate

    s = ctx.settings
    h = d1_hierarchy(s["dims"])
    glob = h.structures[0]
    sp_ranks = {"n_shared": h.rank(glob), "n_private": {m: h.modality_rank(m) - h.rank(glob) for m in h.modalities}}
    grids = {
        "n": [(int(n), s["loading_scale_for_n"]) for n in s["n"]],
        "loading_scale": [(s["n_for_loading_scale"], float(v)) for v in s["loading_scale"]],
    }
    out = {"replications": s["replications"], "final_replications": max(s["replications"], s["final_replications"]),
           "hierarchy": h.to_dict(), "has_partial": any(h.level(t) == "partial" for t in h.structures)}
    cell = 0
    for sweep, grid in grids.items():
        out[sweep] = _sweep(ctx, grid, cell, h, sp_ranks)
        out[sweep]["grid"] = [n for n, _ in grid] if sweep == "n" else [v for _, v in grid]
        out[sweep]["fixed"] = ({"loading_scale": s["loading_scale_for_n"]} if sweep == "n"
                               else {"n": s["n_for_loading_scale"]})
        cell += len(grid)
    crit = evaluate_pattern_recovery(out, s)
    sp_binary = SharedPrivate(**sp_ranks).binary_hierarchy(h.dims)
    notes = [
        f"HCL(hierarchy=None, penalty=None, noise_model='isotropic'): {s['replications']} fits per grid point, "
        f"{out['final_replications']} at the last point of each sweep; D1 dims {dict(s['dims'])} with i.i.d. "
        f"N(0, s^2) loadings and isotropic noise {s['noise']:g}.",
        f"SharedPrivate({sp_ranks}) fitted on the first {s['replications']} samples of every grid point: fitted "
        f"hierarchies {sorted(set().union(*(d for sw in _SWEEPS for d in out[sw]['shared_private_hierarchies'])))}; "
        f"the true hierarchy has {'a' if out['has_partial'] else 'no'} partial structure, and the binary view "
        f"({', '.join(sp_binary.name(t) for t in sp_binary.structures)}) has none.",
    ]
    return {"results": out, "criteria": crit, "notes": notes, "figures": [_plot(out, s, ctx.figure_path)]}
