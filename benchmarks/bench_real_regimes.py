"""Pattern learning on the regimes real tables have (issue 13): every "Must show" figure.

Sections (``--only`` picks some; each figure is printed with its target, MET /
NOT MET, and the command that reproduces it):

* ``null`` — calibration on independent views (:func:`hclstat.model.independent_views_model`:
  no latent component; isotropic and heteroskedastic noise; ``p_m / n`` in
  0.1, 0.5, 1, 2, 5 at ``n = 100``; three modalities). Each data set is fitted
  by ``HCL(alpha=a)`` at ``a = 0.01`` and ``0.05``. A *false structure* is a
  non-empty ``lattice_.ranks`` or a non-specific structure in ``hierarchy_``;
  a *false cross rank* is any positive rank in ``lattice_.observed`` (every
  test of the lattice). Target: the stated level inside the Clopper-Pearson
  95% interval of the observed rate, over 300 data sets per level (30 in
  ``--quick``).
* ``mcar`` — design D1 (``d1_model``, ``s = 0.3``), ``n = 1000``, 30% of the
  entries missing completely at random (NaN): exact pattern in >= 19/20 seeds.
  The complete-data fit of the same rows is run too (its exact count and the
  loading-error ratio are shown, without a target).
* ``absent`` — the same D1 data; 40% of the rows lack one whole modality
  (chosen uniformly), the views are DataFrames indexed by sample ID, each with
  its own rows in its own (shuffled) order: exact in >= 19/20 seeds, and the
  median sin-theta loading error within 1.2x that of the complete-data fit of
  the same rows (over the blocks both fits estimate).
* ``wide`` — p >> n: :func:`hclstat.model.wide_model` (``p = (200, 400, 800)``,
  ``n = 100``, loading scale 0.5): exact in >= 9/10 seeds; on its pure-noise
  variant (isotropic and heteroskedastic seeds alternate) no specific rank above 10.
* ``weak`` — D1 at ``s = 0.15``, ``n = 500``, data and seeds exactly as
  ``bench_patterns.py``: exact in >= 19/20 seeds.
* ``large`` — :func:`hclstat.model.large_rank_model` (six modalities, widths
  80/200/60/250/50/8, 42 components), ``n = 1600``, a 10-class label from
  :class:`hclstat.model.LatentClassRule`. ``HCL().fit`` with defaults: time
  (target <= 30 s), learned vs true ranks. Side by side, on the same data with
  the same number of factors ``K`` (HCL's learned total, the true 42 when HCL
  did not finish): MOFA+ (``peers.fit_mofa``) and PCA of the standardised
  stacked views; each representation is learnt without labels on all 1600 rows,
  a multinomial logistic regression (sklearn, standardised scores) is trained on
  1200 rows' labels and scored on the other 400. References: the posterior
  means under the true model (the best a linear factor representation can do)
  and the true latents. Full mode adds ``HCL(max_rank=10)``.

Guards: every fit runs in a persistent worker process (``multiprocessing``,
spawn) with a per-fit budget; a fit that raises is recorded with its error, a
fit that exceeds its budget is recorded as a timeout (the worker is killed and
restarted); the benchmark never stops on either. Times are measured inside the
worker around ``fit`` only, with the machine's default BLAS threads (pinning
variables removed before NumPy loads, as in ``bench_patterns.py``), after a
warm-up fit that loads the Numba kernels.

Only the public API is used (``hclstat.HCL``, ``hclstat.model``,
``hclstat.metrics``), so the script runs on any version of the estimator.

Outputs (``--out``, ``_quick`` suffix in quick mode, ``_<sections>`` with
``--only``), written atomically after every section: ``bench_real_regimes.json``
(configuration, commit, every fit, the figures) and ``bench_real_regimes.csv``
(one row per figure, with the commit).

Usage::

    python benchmarks/bench_real_regimes.py [--quick] [--only null,mcar] [--out benchmarks/results]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import PINNING_VARIABLES, blas_threads, commit_label, source_fingerprint  # noqa: E402

# timings as users run them: BLAS reads these when NumPy loads
REMOVED_ENV = {k: os.environ.pop(k) for k in PINNING_VARIABLES if k in os.environ}

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

SECTIONS = ("null", "mcar", "absent", "wide", "weak", "large")
STEM = "bench_real_regimes"
MODES = {
    "quick": {"null_per_cell": 3, "seeds": 3, "wide_seeds": 2, "budget": 60, "large_budget": 60,
              "mofa_iter": 15, "mofa_budget": 120, "max_rank10": False},
    "full": {"null_per_cell": 30, "seeds": 20, "wide_seeds": 10, "budget": 180, "large_budget": 300,
             "mofa_iter": 1000, "mofa_budget": 600, "max_rank10": True},
}
NULL_N, NULL_RATIOS, NULL_NOISE, ALPHAS = 100, (0.1, 0.5, 1.0, 2.0, 5.0), ("isotropic", "diagonal"), (0.01, 0.05)
D1_N, MISSING_Q, ABSENT_FRACTION, WIDE_N, WEAK_N = 1000, 0.3, 0.4, 100, 500
LARGE_N, LARGE_TRAIN, LARGE_SEED = 1600, 1200, 13


def rng(*key):
    return np.random.default_rng(list(key))


# ====================================================================== worker side
def _stack(scores, structures):
    return np.concatenate([scores[s] for s in structures], axis=1) if structures else np.zeros((LARGE_N, 0))


def pattern_string(h):
    return " ".join(f"{''.join(sorted(s))}:{h.rank(s)}" for s in h.structures) or "(none)"


def fit_record(est, model):
    """What every pattern fit reports: exactness, pattern, specific ranks, loading errors."""
    from hclstat.metrics import loading_errors, pattern_scores

    h = est.hierarchy_
    rec = {"pattern": pattern_string(h), "n_components": int(h.n_components),
           "specific": {m: int(h.rank(m)) for m in h.modalities}}
    if model is not None:
        sc = pattern_scores(h, model.hierarchy)
        rec.update(exact=bool(sc["exact"]), support_hamming=int(sc["support_hamming"]))
        rec["errors"] = {f"{''.join(sorted(s))}|{m}": float(e)
                         for (s, m), e in loading_errors(est.loadings_, model.loadings).items()}
    return rec


def timed_fit(views, **params):
    from hclstat import HCL

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est = HCL(**params).fit(views)
        dt = time.perf_counter() - t0
    return est, {"time_s": dt, "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught})}


def d1_data(s, n, seed):
    from hclstat.model import d1_model

    model = d1_model(s, random_state=rng(seed, 0))  # the streams of bench_patterns.make_data
    views, _ = model.sample(n, random_state=rng(seed, 1))
    return model, views


def absent_views(views, seed):
    """DataFrames indexed by ID; 40% of the rows lack one modality; each table shuffled."""
    g = rng(seed, 3)
    mods = list(views)
    n = next(iter(views.values())).shape[0]
    ids = np.array([f"id{i:05d}" for i in range(n)])
    lacking = np.full(n, -1)
    chosen = g.choice(n, int(round(ABSENT_FRACTION * n)), replace=False)
    lacking[chosen] = g.integers(0, len(mods), chosen.size)
    out = {}
    for i, m in enumerate(mods):
        keep = g.permutation(np.flatnonzero(lacking != i))
        out[m] = pd.DataFrame(views[m][keep], index=ids[keep], columns=[f"{m}{j}" for j in range(views[m].shape[1])])
    return out


def large_data():
    from hclstat.model import LatentClassRule, large_rank_model

    model = large_rank_model(random_state=rng(LARGE_SEED, 0))
    rule = LatentClassRule(model, random_state=rng(LARGE_SEED, 1))
    views, latents = model.sample(LARGE_N, random_state=rng(LARGE_SEED, 2))
    y = rule(latents, random_state=rng(LARGE_SEED, 3))
    train = np.zeros(LARGE_N, bool)
    train[rng(LARGE_SEED, 4).permutation(LARGE_N)[:LARGE_TRAIN]] = True
    return model, views, latents, y, train


def heldout_accuracy(Z, y, train):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(Z[train], y[train])
    return float(clf.score(Z[~train], y[~train]))


def run_task(task):
    """One guarded unit of work (in the worker): returns a JSON-able record."""
    kind = task["kind"]
    if kind == "warmup":
        _, views = d1_data(0.3, 300, 10**6)
        timed_fit(views, random_state=0)
        try:
            import mofapy2.run.entry_point  # noqa: F401  (its import is not MOFA+'s fit time)
        except ImportError:
            pass
        return {}
    if kind == "null":
        from hclstat.model import independent_views_model

        key = (NULL_NOISE.index(task["noise_model"]), NULL_RATIOS.index(task["ratio"]), task["rep"])
        model = independent_views_model(task["ratio"], NULL_N, noise_model=task["noise_model"],
                                        random_state=rng(17, *key, 0))
        views, _ = model.sample(NULL_N, random_state=rng(17, *key, 1))
        est, info = timed_fit(views, alpha=task["alpha"], random_state=task["rep"])
        rec = {**info, **fit_record(est, None)}
        lat = getattr(est, "lattice_", None)
        observed = getattr(lat, "observed", None)
        ranks = dict(getattr(lat, "ranks", {}) or {})
        cross = (bool((observed["rank"] > 0).any()) if isinstance(observed, pd.DataFrame) and "rank" in observed
                 else None)
        return {**rec, "false_cross_rank": cross, "false_specific": any(k > 0 for k in rec["specific"].values()),
                "false_structure": any(k > 0 for k in ranks.values())
                or any(len(s) > 1 for s in est.hierarchy_.structures)}
    if kind in ("mcar", "absent", "weak"):
        model, views = d1_data(0.15 if kind == "weak" else 0.3, WEAK_N if kind == "weak" else D1_N, task["seed"])
        if task.get("variant") == "missing":
            g = rng(task["seed"], 2)
            views = {m: np.where(g.random(x.shape) < MISSING_Q, np.nan, x) for m, x in views.items()}
        elif task.get("variant") == "absent":
            views = absent_views(views, task["seed"])
        est, info = timed_fit(views, random_state=task["seed"])
        extra = {"rows": {m: int(len(v)) for m, v in views.items()}} if task.get("variant") == "absent" else {}
        return {**info, **fit_record(est, model), **extra}
    if kind == "wide":
        from hclstat.model import wide_model

        model = wide_model(signal=task["signal"], noise_model=task["noise_model"],
                           random_state=rng(29, task["seed"], 0))
        views, _ = model.sample(WIDE_N, random_state=rng(29, task["seed"], 1))
        est, info = timed_fit(views, random_state=task["seed"])
        return {**info, **fit_record(est, model), "max_specific": max(fit_record(est, None)["specific"].values())}
    if kind == "large":
        model, views, latents, y, train = large_data()
        method = task["method"]
        if method == "true latents":
            Z, info = _stack(latents, model.hierarchy.structures), {"time_s": 0.0}
        elif method == "true-model scores":  # posterior means under the true model: the best linear representation
            A = model.stacked_loadings()
            psi = np.concatenate([model.noise_variances[m] for m in model.hierarchy.modalities])
            X = np.concatenate([views[m] - views[m].mean(axis=0) for m in model.hierarchy.modalities], axis=1)
            Z = np.linalg.solve(np.eye(A.shape[1]) + A.T @ (A / psi[:, None]), ((X / psi) @ A).T).T
            info = {"time_s": 0.0}
        elif method.startswith("HCL"):
            est, info = timed_fit(views, random_state=0, **task.get("params", {}))
            Z = _stack(est.transform(views), est.hierarchy_.structures)
            info.update(fit_record(est, model), learned={"".join(sorted(s)): int(est.hierarchy_.rank(s))
                                                         for s in est.hierarchy_.structures},
                        modality_totals={m: int(est.hierarchy_.modality_rank(m)) for m in est.hierarchy_.modalities})
        elif method == "MOFA+":
            import peers

            t0 = time.perf_counter()
            fit = peers.fit_mofa(views, n_factors=task["k"], max_iter=task["mofa_iter"], seed=0)
            Z, info = fit.Z, {"time_s": time.perf_counter() - t0, "n_iter": fit.n_iter, "converged": fit.converged}
        else:  # PCA of the standardised stacked views
            from sklearn.decomposition import PCA
            from sklearn.preprocessing import StandardScaler

            t0 = time.perf_counter()
            X = StandardScaler().fit_transform(np.concatenate([views[m] for m in model.hierarchy.modalities], axis=1))
            Z = PCA(task["k"], random_state=0).fit_transform(X)
            info = {"time_s": time.perf_counter() - t0}
        return {**info, "n_factors": int(Z.shape[1]), "accuracy": heldout_accuracy(Z, y, train),
                "blas_threads": blas_threads()}
    raise ValueError(f"task kind: expected one of {SECTIONS}, got {kind!r}")


def serve(conn, run=None):
    """The worker loop: receive a task, send back its record (an error is a record too).

    ``run`` executes one task (default :func:`run_task`)."""
    run = run_task if run is None else run
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            rec = {"status": "ok", **run(task)}
        except Exception as exc:  # a fit that raises is a result of the benchmark, not its failure
            rec = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:400],
                   "traceback_tail": traceback.format_exc().strip().splitlines()[-3:]}
        conn.send(rec)


# ====================================================================== parent side
class Worker:
    """A persistent worker process; a task over its budget kills and restarts it."""

    def __init__(self, target=None):
        """``target``: the worker loop (default :func:`serve`; another benchmark passes its own,
        which must answer ``{"kind": "warmup"}``)."""
        self.ctx = mp.get_context("spawn")
        self.target = serve if target is None else target
        self.proc = None
        self._start()

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=self.target, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.run({"kind": "warmup"}, budget=600, warm=False)

    def run(self, task, *, budget, warm=True):
        t0 = time.perf_counter()
        try:
            self.conn.send(task)
            if self.conn.poll(budget):
                rec = self.conn.recv()
            else:
                rec = {"status": "timeout", "error": f"did not finish within the {budget:g} s budget"}
        except (EOFError, OSError) as exc:
            rec = {"status": "crashed", "error": f"worker died: {type(exc).__name__} (exit code {self.proc.exitcode})"}
        rec.update(wall_s=time.perf_counter() - t0, budget_s=budget)
        if rec["status"] in ("timeout", "crashed"):
            self.proc.kill()
            self.proc.join()
            if warm:
                self._start()
        return {**{k: v for k, v in task.items() if k != "kind"}, "section": task["kind"], **rec}

    def close(self):
        try:
            self.conn.send(None)
            self.proc.join(10)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.kill()


def clopper_pearson(k, n):
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    return float(ci.low), float(ci.high)


def figure(section, name, measured, target, met, cmd, **numbers):
    return {"section": section, "figure": name, "measured": measured, "target": target, "met": met,
            "command": cmd, **numbers}


def count_exact(recs):
    return sum(bool(r.get("exact")) for r in recs if r["status"] == "ok")


def status_note(recs):
    bad = [r for r in recs if r["status"] != "ok"]
    if not bad:
        return ""
    kinds = pd.Series([r["status"] for r in bad]).value_counts().to_dict()
    return " (" + ", ".join(f"{v} {k}" for k, v in kinds.items()) + f"; e.g. {bad[0]['error'][:150]})"


def exact_figure(section, name, recs, n, need_frac, cmd):
    need = math.ceil(need_frac * n)
    x = count_exact(recs)
    return figure(section, name, f"{x}/{n}{status_note(recs)}", f">= {need}/{n}", x >= need, cmd, value=x, n=n)


def error_ratio(recs_a, recs_b):
    """Median error of fit a over median error of fit b, on the blocks both estimate (pooled over seeds)."""
    b_of = {(r["seed"], k): e for r in recs_b if r["status"] == "ok" for k, e in r["errors"].items()}
    pairs = [(e, b_of[(r["seed"], k)]) for r in recs_a if r["status"] == "ok" for k, e in r["errors"].items()
             if (r["seed"], k) in b_of]
    if not pairs:
        return float("nan"), 0
    a, b = np.array(pairs).T
    return float(np.median(a) / np.median(b)), len(pairs)


def section_null(w, cfg, cmd):
    recs = [w.run({"kind": "null", "noise_model": nm, "ratio": r, "rep": rep, "alpha": a}, budget=cfg["budget"])
            for nm in NULL_NOISE for r in NULL_RATIOS for rep in range(cfg["null_per_cell"]) for a in ALPHAS]
    figs = []
    for a in ALPHAS:
        sub = [x for x in recs if x["alpha"] == a]
        for flag, what in (("false_structure", "a false structure (lattice_.ranks or a non-specific structure)"),
                           ("false_cross_rank", "a false cross rank (any positive rank in lattice_.observed)")):
            ok = [x for x in sub if x["status"] == "ok" and x.get(flag) is not None]
            k = sum(bool(x[flag]) for x in ok)
            lo, hi = clopper_pearson(k, len(ok))
            met = bool(lo <= a <= hi) if ok and len(ok) == len(sub) else False
            figs.append(figure("null", f"null calibration, alpha={a:g}: rate of {what}",
                               f"{k}/{len(ok)} = {k / max(len(ok), 1):.4f}, 95% CI [{lo:.4f}, {hi:.4f}]"
                               f"{'; above the level' if ok and lo > a else ''}{status_note(sub)}",
                               f"alpha={a:g} inside the 95% CI ({len(sub)} data sets)", met, cmd,
                               value=k / max(len(ok), 1), n=len(ok), ci_low=lo, ci_high=hi))
        ok = [x for x in sub if x["status"] == "ok"]
        k = sum(bool(x["false_specific"]) for x in ok)
        figs.append(figure("null", f"null calibration, alpha={a:g}: rate of a false specific rank (no target)",
                           f"{k}/{len(ok)}", "-", None, cmd, value=k / max(len(ok), 1), n=len(ok)))
    cells = pd.DataFrame([x for x in recs if x["status"] == "ok"])
    cols = [c for c in ("false_structure", "false_cross_rank", "false_specific", "time_s")
            if c in cells and cells[c].notna().all()]
    table = "" if cells.empty else ("rate per cell (p_m / n = ratio, n = 100):\n" + cells.astype(
        {c: float for c in cols}).groupby(["alpha", "noise_model", "ratio"])[cols].mean().round(3).to_string())
    return recs, figs, table


def section_seeds(w, cfg, cmd, kind):
    n = cfg["seeds"]
    if kind == "weak":
        recs = [w.run({"kind": "weak", "seed": s}, budget=cfg["budget"]) for s in range(n)]
        return recs, [exact_figure("weak", "D1 s=0.15 n=500: exact pattern", recs, n, 0.95, cmd)], ""
    variant = "missing" if kind == "mcar" else "absent"
    recs = [w.run({"kind": kind, "seed": s, "variant": v}, budget=cfg["budget"])
            for s in range(n) for v in (variant, "complete")]
    miss = [r for r in recs if r["variant"] == variant]
    full = [r for r in recs if r["variant"] == "complete"]
    ratio, nb = error_ratio(miss, full)
    label = ("D1 s=0.3 n=1000, 30% of entries MCAR" if kind == "mcar"
             else "D1 s=0.3 n=1000, 40% of rows lack one modality (IDs)")
    figs = [exact_figure(kind, f"{label}: exact pattern", miss, n, 0.95, cmd),
            figure(kind, f"{label}: loading error / complete-data fit of the same rows",
                   f"{ratio:.3f} over {nb} blocks (complete-data fits exact {count_exact(full)}/{n})",
                   "<= 1.2" if kind == "absent" else "- (no target)",
                   (bool(ratio <= 1.2) if ratio == ratio else False) if kind == "absent" else None, cmd, value=ratio)]
    return recs, figs, ""


def section_wide(w, cfg, cmd):
    n = cfg["wide_seeds"]
    recs = [w.run({"kind": "wide", "seed": s, "signal": True, "noise_model": "isotropic"}, budget=cfg["budget"])
            for s in range(n)]
    noise = [w.run({"kind": "wide", "seed": s, "signal": False, "noise_model": ("isotropic", "diagonal")[s % 2]},
                   budget=cfg["budget"]) for s in range(n)]
    ok = [r["max_specific"] for r in noise if r["status"] == "ok"]
    mx = max(ok) if ok else float("nan")
    figs = [exact_figure("wide", "p >> n (200/400/800, n=100, scale 0.5): exact pattern", recs, n, 0.9, cmd),
            figure("wide", "p >> n pure noise: largest specific rank of any modality",
                   f"{mx} over {len(ok)}/{n} fits{status_note(noise)}", "<= 10",
                   bool(len(ok) == n and mx <= 10), cmd, value=mx)]
    return recs + noise, figs, ""


def section_large(w, cfg, cmd):
    from hclstat.model import large_rank_hierarchy

    truth = large_rank_hierarchy()
    hcl = w.run({"kind": "large", "method": "HCL"}, budget=cfg["large_budget"])
    recs = [hcl]
    if cfg["max_rank10"]:
        recs.append(w.run({"kind": "large", "method": "HCL(max_rank=10)", "params": {"max_rank": 10}},
                          budget=cfg["large_budget"]))
    k = hcl["n_components"] if hcl["status"] == "ok" and hcl["n_components"] > 0 else truth.n_components
    recs += [w.run({"kind": "large", "method": "MOFA+", "k": k, "mofa_iter": cfg["mofa_iter"]},
                   budget=cfg["mofa_budget"]),
             w.run({"kind": "large", "method": "PCA", "k": k}, budget=cfg["budget"]),
             w.run({"kind": "large", "method": "true-model scores"}, budget=cfg["budget"]),
             w.run({"kind": "large", "method": "true latents"}, budget=cfg["budget"])]
    t = hcl.get("time_s", float("nan")) if hcl["status"] == "ok" else float("nan")
    figs = [figure("large", "large ranks (n=1600, 6 modalities, K=42): HCL().fit time, defaults",
                   f"{t:.1f} s" if hcl["status"] == "ok" else f"{hcl['status']}: {hcl['error'][:150]}",
                   "<= 30 s", bool(t <= 30), cmd, value=t)]
    if hcl["status"] == "ok":
        true_tot = {m: truth.modality_rank(m) for m in truth.modalities}
        figs.append(figure("large", "large ranks: learned vs true pattern",
                           f"exact {hcl['exact']}; K {hcl['n_components']} vs {truth.n_components}; per modality "
                           + ", ".join(f"{m} {hcl['modality_totals'][m]}/{true_tot[m]}" for m in truth.modalities)
                           + f"; learned {hcl['pattern']}", "- (no target)", None, cmd))
    side = "; ".join(f"{r['method']} " + (f"acc {r['accuracy']:.3f}, {r['time_s']:.1f} s, K={r['n_factors']}"
                                          + (f", {r['n_iter']} it" if "n_iter" in r else "")
                                          + (" (not converged)" if r.get("converged") is False else "")
                                          if r["status"] == "ok" else f"{r['status']}") for r in recs)
    figs.append(figure("large", f"large ranks: held-out accuracy (400 rows) and time, same K={k}", side,
                       "- (side by side; no threshold in the issue)", None, cmd))
    return recs, figs, f"true pattern: {pattern_string(truth)}"


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_sections(*, stem, description, sections, modes, runners, target=None, argv=None, unit="fits"):
    """The command line and driver both benchmark scripts share.

    Parses ``--quick``, ``--only`` and ``--out``; runs ``runners[section](worker, cfg, cmd)``
    (each returning ``(records, figures, note)``) in a :class:`Worker` whose loop is
    ``target``; prints every figure with its verdict and writes ``<stem>.json`` and
    ``<stem>.csv`` atomically after each section.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="few data sets and seeds, short budgets")
    p.add_argument("--only", default=None, help=f"comma-separated sections out of {','.join(sections)}")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results directory")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = modes[mode]
    todo = list(sections) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(todo) - set(sections))
    if unknown:
        p.error(f"--only: expected sections out of {sections}, got {unknown}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = stem + ("_quick" if args.quick else "") + ("" if set(todo) == set(sections) else "_" + "-".join(todo))
    fp = source_fingerprint()
    commit = commit_label(fp)
    import hclstat

    payload = {"config": {"mode": mode, **cfg, "sections": todo, "commit": commit, "source": fp,
                          "hclstat_version": hclstat.__version__, "removed_env": REMOVED_ENV,
                          "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}},
               "figures": [], "fits": {}}
    print(f"{stem} ({mode}) at commit {commit}; sections {', '.join(todo)}", flush=True)
    t_all = time.perf_counter()
    w = Worker(target)
    try:
        for sec in todo:
            cmd = f"python benchmarks/{stem}.py{' --quick' if args.quick else ''} --only {sec}"
            t0 = time.perf_counter()
            recs, figs, note = runners[sec](w, cfg, cmd)
            payload["fits"][sec] = recs
            payload["figures"] += figs
            print(f"\n== {sec} ({time.perf_counter() - t0:.0f} s, {len(recs)} {unit})", flush=True)
            if note:
                print(note)
            for f in figs:
                verdict = {True: "MET", False: "NOT MET", None: "info"}[f["met"]]
                print(f"  [{verdict}] {f['figure']}\n      measured: {f['measured']}\n      target:   {f['target']}"
                      f"\n      command:  {f['command']}", flush=True)
            payload["elapsed_s"] = time.perf_counter() - t_all
            write_atomic(out / f"{name}.json", json.dumps(payload, indent=1, default=str))
            table = pd.DataFrame(payload["figures"])
            table.insert(0, "commit", commit)
            write_atomic(out / f"{name}.csv", table.to_csv(index=False))
    finally:
        w.close()
    if args.quick:
        print("\n(quick mode: few seeds and data sets; the verdicts scale the targets and are indicative only)")
    print(f"\nwrote {out / (name + '.json')} and {name}.csv ({time.perf_counter() - t_all:.0f} s)")
    return 0


def main(argv=None):
    runners = {"null": section_null, "wide": section_wide, "large": section_large,
               **{k: (lambda w, cfg, cmd, k=k: section_seeds(w, cfg, cmd, k)) for k in ("mcar", "absent", "weak")}}
    return run_sections(stem=STEM, description=__doc__.split("\n")[0], sections=SECTIONS, modes=MODES,
                        runners=runners, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
