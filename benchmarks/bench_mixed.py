"""Mixed-type modalities through the latent Gaussian copula (issue 14): every "Must show" figure.

Sections (``--only`` picks some; each figure is printed with its target, MET /
NOT MET, and the command that reproduces it):

* ``pattern`` — the mixed D1 designs (:func:`hclstat.model.mixed_d1_model`:
  ``a`` continuous, ``b`` binary at prevalence U[0.05, 0.3], ``c``
  zero-inflated, half zeros, ``exp`` above; and
  :func:`hclstat.model.mixed_d1_all_model`, ``a`` ternary and continuous
  columns too), loading scale 0.5, ``n = 2000``, 20 seeds (3 in ``--quick``).
  On the same data: ``HCL(types="auto")`` (copula moments; target exact >=
  19/20), ``HCL()`` (Pearson moments) and MOFA+ with a Bernoulli likelihood for
  ``b`` (Gaussian elsewhere; 10 factors; its pattern from the per-factor
  variance explained, ``peers.derive_pattern``).
* ``rates`` — sin-theta loading errors of ``HCL(hierarchy=truth, types="auto")``
  against the latent correlation-scale loadings on the ``bc`` design for ``n``
  in 1000-16000 (10 seeds; 3 in quick): the log-log slope of the median error
  (target within 0.1 of -1/2), and the ratio to ``HCL(hierarchy=truth)`` on
  the continuous latent data of the same draws.
* ``speed`` — the latent-correlation pass (types, margins, rank statistics,
  bridge inversion, nearest correlation: ``hclstat.moments.copula.copula_moments``)
  over the product ``X^T X`` of the centred data at ``n = 1e5, p = 600`` (half
  binary; ``n = 2e4`` in quick): target at most 5. And against ``latentcor``'s
  ``original`` method at ``n = 2000, p = 100`` (half binary), same data, same
  run: times and the largest difference of the two estimates.
* ``null`` — calibration on independent mixed modalities (three modalities:
  binary, truncated, continuous; ``p_m / n`` in 0.1, 0.5, 1 at ``n = 200``): the
  rate of any false cross rank in the lattice at ``alpha`` 0.01 and 0.05 inside
  the Clopper-Pearson 95% interval, 300 data sets per level (30 in quick).

Guards and timing as ``bench_real_regimes.py`` (its worker, spawned once,
kills a fit over its budget; the machine's default BLAS threads).

Usage::

    python benchmarks/bench_mixed.py [--quick] [--only pattern,speed] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_regimes as regimes  # noqa: E402  (removes BLAS pinning before NumPy loads)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SECTIONS = ("pattern", "rates", "speed", "null")
STEM = "bench_mixed"
MODES = {
    "quick": {"seeds": 3, "rate_seeds": 3, "rate_ns": (1000, 4000, 16000), "null_per_cell": 5, "speed_n": 20_000,
              "mofa_iter": 15, "budget": 120, "mofa_budget": 180},
    "full": {"seeds": 20, "rate_seeds": 10, "rate_ns": (1000, 2000, 4000, 8000, 16000), "null_per_cell": 50,
             "speed_n": 100_000, "mofa_iter": 1000, "mofa_budget": 900, "budget": 300},
}
PATTERN_N, NULL_N, NULL_RATIOS, ALPHAS = 2000, 200, (0.1, 0.5, 1.0), (0.01, 0.05)
SPEED_P, LATENTCOR_N, LATENTCOR_P = 600, 2000, 100
DESIGNS = ("bc", "abc")


# ====================================================================== worker side
def design(name, seed):
    from hclstat.model import mixed_d1_all_model, mixed_d1_model

    if name == "abc":
        return mixed_d1_all_model(random_state=regimes.rng(41, seed, 0))
    return mixed_d1_model(random_state=regimes.rng(41, seed, 0))


def _null_model(ratio, rep):
    from hclstat.model import independent_views_model
    from hclstat.model.engine import MixedModel
    from hclstat.model.links import MixedLinks, binary, truncated

    key = (NULL_RATIOS.index(ratio), rep)
    h = independent_views_model(ratio, NULL_N, random_state=regimes.rng(43, *key, 0))
    a, b, _ = h.hierarchy.modalities
    links = MixedLinks.from_specs({a: binary(prevalence=(0.05, 0.3)), b: truncated(zero_fraction=0.5, transform="exp")},
                                  h.hierarchy.dims, random_state=regimes.rng(43, *key, 1))
    return MixedModel(h, links), regimes.rng(43, *key, 2)


def run_task(task):
    kind = task["kind"]
    if kind == "warmup":
        model = design("bc", 10**6)
        views, _ = model.sample(300, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            regimes.timed_fit(views, types="auto", random_state=0)
        return {}
    if kind == "pattern":
        model = design(task["design"], task["seed"])
        views, _ = model.sample(PATTERN_N, random_state=regimes.rng(41, task["seed"], 1))
        if task["method"] == "MOFA+":
            import peers

            t0 = time.perf_counter()
            fit = peers.fit_mofa(views, n_factors=10, max_iter=task["mofa_iter"], seed=task["seed"],
                                 likelihoods={"b": "bernoulli"})
            dt = time.perf_counter() - t0
            h, _ = peers.derive_pattern(fit, model.hierarchy.dims)
            from hclstat.metrics import pattern_scores

            return {"time_s": dt, "pattern": regimes.pattern_string(h),
                    "exact": bool(pattern_scores(h, model.hierarchy)["exact"]), "converged": fit.converged}
        params = {"types": "auto"} if task["method"] == "HCL copula" else {}
        est, info = regimes.timed_fit(views, random_state=task["seed"], **params)
        rec = regimes.fit_record(est, None)
        from hclstat.metrics import pattern_scores

        return {**info, **rec, "exact": bool(pattern_scores(est.hierarchy_, model.hierarchy)["exact"])}
    if kind == "rates":
        from hclstat.metrics import loading_errors

        model = design("bc", task["seed"])
        views, _, latent_views = model.sample(task["n"], random_state=regimes.rng(47, task["seed"], task["n"]),
                                              return_latent_views=True)
        h = model.hierarchy
        if task["method"] == "copula":
            est, info = regimes.timed_fit(views, hierarchy=h, types="auto", random_state=0)
        else:  # the standardised latent x* itself: the same loadings, Pearson moments
            est, info = regimes.timed_fit(latent_views, hierarchy=h, random_state=0)
        errs = loading_errors(est.loadings_, model.latent_model().loadings)
        return {**info, "median_error": float(np.median(list(errs.values())))}
    if kind == "speed":
        return speed_task(task)
    if kind == "null":
        model, g = _null_model(task["ratio"], task["rep"])
        views, _ = model.sample(NULL_N, random_state=g)
        est, info = regimes.timed_fit(views, types="auto", alpha=task["alpha"], random_state=task["rep"])
        obs = getattr(est.lattice_, "observed", None)
        cross = bool((obs["rank"] > 0).any()) if isinstance(obs, pd.DataFrame) and "rank" in obs else None
        return {**info, "false_cross_rank": cross,
                "false_structure": any(len(s) > 1 for s in est.hierarchy_.structures)}
    raise ValueError(f"task kind: expected one of {SECTIONS}, got {kind!r}")


def _mixed_block(n, p, seed):
    """``n x p`` latent Gaussian data with 10 factors, the first half of the columns binarised."""
    g = np.random.default_rng(seed)
    L = g.normal(0, 0.4, (p, 10))
    X = g.standard_normal((n, 10)) @ L.T + g.standard_normal((n, p))
    half = p // 2
    cut = np.quantile(X[:, :half], 1 - g.uniform(0.05, 0.5, half), axis=0).diagonal()
    X[:, :half] = (X[:, :half] > cut).astype(float)
    return X, np.array(["binary"] * half + ["continuous"] * (p - half), dtype=object)


def speed_task(task):
    from hclstat.moments.copula import copula_moments
    from hclstat.threads import moment_pass_threads

    if task["what"] == "pass":
        X, types = _mixed_block(task["n"], SPEED_P, 5)
        views, kinds = {"x": X}, {"x": types}
        with moment_pass_threads():
            copula_moments(views, kinds)  # warm the kernels
            t0 = time.perf_counter()
            copula_moments(views, kinds)
            t_pass = time.perf_counter() - t0
            t0 = time.perf_counter()
            Xc = X - X.mean(axis=0)
            Xc.T @ Xc
            t_prod = time.perf_counter() - t0
        return {"n": task["n"], "p": SPEED_P, "pass_s": t_pass, "product_s": t_prod, "ratio": t_pass / t_prod,
                "blas_threads": regimes.blas_threads()}
    X, types = _mixed_block(LATENTCOR_N, LATENTCOR_P, 6)
    t0 = time.perf_counter()
    ours = copula_moments({"x": X}, {"x": types}).pointwise
    t_ours = time.perf_counter() - t0
    try:
        import latentcor
    except ImportError as exc:
        return {"error_latentcor": f"latentcor not installed: {exc}", "ours_s": t_ours}
    tps = ["bin" if t == "binary" else "con" for t in types]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = latentcor.latentcor(X, tps=tps, method="original", use_nearPD=False)
        t_lc = time.perf_counter() - t0
    diff = np.abs(np.asarray(out["Rpointwise"], dtype=float) - ours)
    binary = types == "binary"
    with_binary = binary[:, None] | binary[None, :]
    # pairs with a binary column: the same statistic (Kendall's tau-a) and bridge, so only the inversions differ;
    # continuous pairs: latentcor inverts Kendall's tau, hclstat Spearman's rho (one product), so sampling noise
    return {"ours_s": t_ours, "latentcor_s": t_lc, "speedup": t_lc / t_ours,
            "max_abs_diff_binary_pairs": float(diff[with_binary].max()),
            "max_abs_diff_continuous_pairs": float(diff[~with_binary].max())}


def serve(conn):
    regimes.serve(conn, run_task)


# ====================================================================== parent side
def section_pattern(w, cfg, cmd):
    recs, figs = [], []
    for d in DESIGNS:
        for seed in range(cfg["seeds"]):
            for method in ("HCL copula", "HCL Pearson", "MOFA+"):
                budget = cfg["mofa_budget"] if method == "MOFA+" else cfg["budget"]
                recs.append(w.run({"kind": "pattern", "design": d, "seed": seed, "method": method,
                                   "mofa_iter": cfg["mofa_iter"]}, budget=budget))
        for method in ("HCL copula", "HCL Pearson", "MOFA+"):
            sub = [r for r in recs if r["design"] == d and r["method"] == method]
            n = cfg["seeds"]
            if method == "HCL copula":
                figs.append(regimes.exact_figure("pattern", f"design {d}: {method} exact pattern", sub, n, 0.95, cmd))
            else:
                x = regimes.count_exact(sub)
                figs.append(regimes.figure("pattern", f"design {d}: {method} exact pattern (side by side)",
                                           f"{x}/{n}{regimes.status_note(sub)}", "-", None, cmd, value=x, n=n))
            times = [r["time_s"] for r in sub if r["status"] == "ok"]
            if times:
                figs.append(regimes.figure("pattern", f"design {d}: {method} median fit time (s)",
                                           f"{np.median(times):.3f}", "-", None, cmd, value=float(np.median(times))))
    return recs, figs, ""


def section_rates(w, cfg, cmd):
    recs = [w.run({"kind": "rates", "n": n, "seed": s, "method": m}, budget=cfg["budget"])
            for n in cfg["rate_ns"] for s in range(cfg["rate_seeds"]) for m in ("copula", "continuous")]
    df = pd.DataFrame([r for r in recs if r["status"] == "ok"])
    figs = []
    if df.empty:
        return recs, [regimes.figure("rates", "loading-error slope", "no fit finished", "-0.5 +/- 0.1", False, cmd)], ""
    med = df.groupby(["method", "n"])["median_error"].median().unstack(0)
    complete = med.notna().all().all() and len(med) == len(cfg["rate_ns"])
    slope = float(np.polyfit(np.log(med.index.values), np.log(med["copula"].values), 1)[0]) if complete else math.nan
    figs.append(regimes.figure("rates", "copula loading error: log-log slope in n (median sin-theta)",
                               f"{slope:.3f}{regimes.status_note(recs)}", "within 0.1 of -0.5",
                               bool(complete and abs(slope + 0.5) <= 0.1), cmd, value=slope))
    ratio = (med["copula"] / med["continuous"]).round(3).to_dict()
    figs.append(regimes.figure("rates", "copula error / error on the continuous latent data, per n",
                               json.dumps({int(k): v for k, v in ratio.items()}), "-", None, cmd))
    return recs, figs, "median sin-theta error per n:\n" + med.round(4).to_string()


def section_speed(w, cfg, cmd):
    recs = [w.run({"kind": "speed", "what": "pass", "n": cfg["speed_n"]}, budget=cfg["budget"]),
            w.run({"kind": "speed", "what": "latentcor"}, budget=max(cfg["budget"], 600))]
    figs = []
    a, b = recs
    if a["status"] == "ok":
        figs.append(regimes.figure("speed", f"latent-correlation pass / X^T X at n={a['n']}, p={a['p']} (half binary)",
                                   f"{a['ratio']:.2f} ({a['pass_s']:.2f} s / {a['product_s']:.2f} s, "
                                   f"{a['blas_threads']} BLAS threads)", "<= 5", a["ratio"] <= 5, cmd,
                                   value=a["ratio"]))
    else:
        figs.append(regimes.figure("speed", "latent-correlation pass / X^T X", a.get("error", a["status"]), "<= 5",
                                   False, cmd))
    if b["status"] == "ok" and "latentcor_s" in b:
        figs.append(regimes.figure("speed", f"latentcor original / hclstat at n={LATENTCOR_N}, p={LATENTCOR_P}",
                                   f"{b['speedup']:.0f}x ({b['latentcor_s']:.2f} s / {b['ours_s']:.3f} s); largest "
                                   f"|R_latentcor - R_hclstat| over pairs with a binary column (same tau-a "
                                   f"and bridge) {b['max_abs_diff_binary_pairs']:.1e}, over continuous pairs "
                                   f"(Kendall vs Spearman) {b['max_abs_diff_continuous_pairs']:.3f}", "-", None, cmd,
                                   value=b["speedup"]))
    else:
        figs.append(regimes.figure("speed", "latentcor comparison", str(b.get("error") or b.get("error_latentcor")),
                                   "-", False, cmd))
    return recs, figs, ""


def section_null(w, cfg, cmd):
    recs = [w.run({"kind": "null", "ratio": r, "rep": rep, "alpha": a}, budget=cfg["budget"])
            for r in NULL_RATIOS for rep in range(cfg["null_per_cell"]) for a in ALPHAS]
    figs = []
    for a in ALPHAS:
        sub = [x for x in recs if x["alpha"] == a]
        ok = [x for x in sub if x["status"] == "ok" and x.get("false_cross_rank") is not None]
        k = sum(bool(x["false_cross_rank"]) for x in ok)
        lo, hi = regimes.clopper_pearson(k, len(ok))
        met = bool(lo <= a <= hi) if ok and len(ok) == len(sub) else False
        figs.append(regimes.figure("null", f"mixed null, alpha={a:g}: rate of a false cross rank",
                                   f"{k}/{len(ok)} = {k / max(len(ok), 1):.4f}, 95% CI [{lo:.4f}, {hi:.4f}]"
                                   f"{regimes.status_note(sub)}", f"alpha={a:g} inside the 95% CI ({len(sub)} data sets)",
                                   met, cmd, value=k / max(len(ok), 1), n=len(ok), ci_low=lo, ci_high=hi))
    return recs, figs, ""


def main(argv=None):
    runners = {"pattern": section_pattern, "rates": section_rates, "speed": section_speed, "null": section_null}
    return regimes.run_sections(stem=STEM, description=__doc__.split("\n")[0], sections=SECTIONS, modes=MODES,
                                runners=runners, target=serve, argv=argv, unit="runs")


if __name__ == "__main__":
    sys.exit(main())
