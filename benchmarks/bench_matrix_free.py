"""Dense HCL against MatrixFreeHCL as the number of columns grows (issue 8).

Design: three modalities a, b, c splitting ``p_total`` columns 4 : 5 : 6, one
global, one {a,b} and one specific component per modality (design D1's
pattern), loadings i.i.d. N(0, 0.3^2), unit isotropic noise, ``n = 2000``
rows. Grid ``p_total`` in 600, 1500, 3000, 6000, 12000 (quick: 600, 1500, 3000).

Two modes, both estimators with package defaults and ``random_state=0``:

* ``given``: the true hierarchy is handed over; dense = ``HCL.fit`` (the
  moment pass plus the fit), matrix-free = ``MatrixFreeHCL.fit``;
* ``learned``: ``hierarchy=None``: rank lattice with permutation nulls,
  Tracy-Widom specific ranks, penalised confirmation path, refit.

Every fit runs in a fresh subprocess (single-threaded BLAS, so the numbers do
not depend on what else shares the machine's cores): data are drawn, both
estimators are warmed up on a small slice (imports, Numba loading), the peak
resident set is reset (``/proc/self/clear_refs``) and the timed fit runs.
Reported per fit: wall time, peak memory above the resident set before the
fit (``VmHWM - VmRSS``; the data themselves are excluded), whether the
hierarchy was recovered, the largest sin-theta error of a loading subspace,
and, per size, the largest subspace distance between the dense and the
matrix-free estimates. The crossover is where ``time_dense / time_free``
reaches 1 (log-log interpolation between grid points).

A dense run is skipped once a dense run of the same mode at a smaller size took
longer than ``--dense-budget`` seconds (default 900), and killed after
``--timeout`` seconds (default 3600); the JSON says which.

Outputs in ``--out`` (``_quick`` suffix in quick mode): ``bench_matrix_free.json``
and ``bench_matrix_free.png``. Every fit is a fresh process importing hclstat,
so a long run must not see the package change under it: run it against a
frozen copy (``git archive HEAD hclstat | tar -x -C SNAP``, then
``PYTHONPATH=SNAP HCLSTAT_SNAPSHOT_OF=<commit>``); the JSON records the source.

Usage::

    python benchmarks/bench_matrix_free.py [--quick] [--modes given,learned] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = (600, 1500, 3000, 6000, 12000)
QUICK_GRID = (600, 1500, 3000)
N_SAMPLES = 2000
WEIGHTS = (4, 5, 6)
RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1}
LOADING_SCALE = 0.3
METHODS = ("dense", "matrix-free")
STEM = "bench_matrix_free"


def dims_of(p_total):
    w = np.array(WEIGHTS, dtype=float)
    sizes = np.floor(p_total * w / w.sum()).astype(int)
    sizes[-1] += p_total - sizes.sum()
    return dict(zip("abc", (int(s) for s in sizes)))


# ------------------------------------------------------------------ worker
def _status_kb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)  # pragma: no cover


def worker(method, mode, p_total, loadings_path, trace=False):
    """One timed fit in this process; prints one JSON line.

    With ``trace`` the fit runs under :mod:`tracemalloc` (NumPy reports its
    buffers to it) and the traced peak is reported instead of the time.
    """
    import gc
    import warnings

    from threadpoolctl import threadpool_limits

    from hclstat import HCL, EstimationWarning, HierarchicalModel, Hierarchy
    from hclstat.estimators.matrix_free import MatrixFreeHCL
    from hclstat.metrics import loading_errors

    threadpool_limits(1)
    warnings.simplefilter("ignore", EstimationWarning)
    h = Hierarchy(dims_of(p_total), RANKS)
    model = HierarchicalModel.random(h, loading_scale=LOADING_SCALE, random_state=0)
    views, _ = model.sample(N_SAMPLES, random_state=1)
    cls = HCL if method == "dense" else MatrixFreeHCL

    def make(hh):
        return cls(hierarchy=hh if mode == "given" else None, random_state=0)

    warm = {m: x[:300, :40] for m, x in views.items()}
    make(Hierarchy({m: 40 for m in h.modalities}, RANKS)).fit(warm)
    gc.collect()
    if trace:
        import tracemalloc

        tracemalloc.start()
        est = make(h).fit(views)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"traced_peak_mb": traced / 2**20}))
        return
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak resident set to the current one
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    est = make(h).fit(views)
    wall = time.perf_counter() - t0
    peak = _status_kb("VmHWM") - rss0
    errors = loading_errors(est.loadings_, model.loadings)
    np.savez(loadings_path, **{
        f"{''.join(sorted(s))}|{m}": a for s, blocks in est.loadings_.items() for m, a in blocks.items()
    })
    print(json.dumps({
        "method": method, "mode": mode, "p_total": p_total, "dims": dims_of(p_total), "status": "ok",
        "time_s": wall, "peak_mb": peak / 1024.0, "data_mb": sum(x.nbytes for x in views.values()) / 2**20,
        "hierarchy_recovered": bool(est.hierarchy_ == h), "hierarchy": repr(est.hierarchy_),
        "max_sin_theta_to_truth": float(max(errors.values())) if errors else None,
        "n_iter": int(est.n_iter_), "converged": bool(est.converged_),
    }))


# ------------------------------------------------------------------ driver
#: glibc would otherwise serve new arrays from heap pages freed earlier (the data
#: generation's temporaries), which are already resident and so never raise the
#: peak resident set: fixed thresholds make every array above 128 KiB a fresh mapping
#: that is returned on free
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def run_one(method, mode, p_total, tmpdir, timeout, trace=False):
    path = os.path.join(tmpdir, f"{method}-{mode}-{p_total}.npz")
    cmd = [sys.executable, __file__, "--worker", method, mode, str(p_total), path] + (["--trace"] if trace else [])
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             env={**os.environ, **_MALLOC_ENV})
    except subprocess.TimeoutExpired:
        return {"method": method, "mode": mode, "p_total": p_total, "status": f"timeout after {timeout} s",
                "time_s": None, "peak_mb": None}, None
    if out.returncode != 0:
        return {"method": method, "mode": mode, "p_total": p_total, "status": "failed",
                "stderr": out.stderr[-2000:], "time_s": None, "peak_mb": None}, None
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    if trace:
        return rec, None
    rec["process_s"] = time.perf_counter() - t0
    return rec, path


def _load(path):
    with np.load(path) as z:
        out = {}
        for key in z.files:
            s, m = key.split("|")
            out.setdefault(frozenset(s), {})[m] = z[key]
        return out


def _source():
    """Which hclstat the workers import, and its git state (fits must all see the same code)."""
    import hclstat

    root = Path(hclstat.__file__).resolve().parent
    info = {"hclstat": str(root), "version": hclstat.__version__}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                        check=True).stdout.strip()
        info["dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=root,
                                            capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        # a copy outside the repository (run against a frozen snapshot): the caller names its commit
        if os.environ.get("HCLSTAT_SNAPSHOT_OF"):
            info["snapshot_of_commit"] = os.environ["HCLSTAT_SNAPSHOT_OF"]
    return info


def crossover(rows, mode):
    """Smallest p_total where dense time / matrix-free time reaches 1 (log-log interpolation)."""
    pts = []
    for p in sorted({r["p_total"] for r in rows if r["mode"] == mode}):
        t = {r["method"]: r["time_s"] for r in rows if r["mode"] == mode and r["p_total"] == p}
        if t.get("dense") and t.get("matrix-free"):
            pts.append((p, t["dense"] / t["matrix-free"]))
    if not pts:
        return {"p_total": None, "note": "no size with both timings"}
    if pts[0][1] >= 1.0:
        return {"p_total": None, "note": f"matrix-free already faster at the smallest size p_total={pts[0][0]}",
                "ratios": pts}
    for (p0, r0), (p1, r1) in zip(pts, pts[1:]):
        if r1 >= 1.0:
            f = (0.0 - np.log(r0)) / (np.log(r1) - np.log(r0))
            return {"p_total": float(np.exp(np.log(p0) + f * (np.log(p1) - np.log(p0)))), "between": [p0, p1],
                    "ratios": pts}
    return {"p_total": None, "note": "dense faster at every measured size", "ratios": pts}


def plot(rows, modes, cross, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"dense": "C0", "matrix-free": "C1"}
    markers = {"dense": "o", "matrix-free": "s"}
    for mode, ls in zip(modes, ("-", "--")):
        for method in METHODS:
            pts = sorted((r["p_total"], r["time_s"], r["peak_mb"]) for r in rows
                         if r["mode"] == mode and r["method"] == method and r.get("time_s"))
            if not pts:
                continue
            p, t, mem = map(np.array, zip(*pts))
            kw = dict(linestyle=ls, marker=markers[method], color=colors[method], label=f"{method} ({mode})")
            axes[0].plot(p, t, **kw)
            axes[1].plot(p, np.maximum(mem, 1e-1), **kw)
        c = cross.get(mode, {}).get("p_total")
        if c:
            axes[0].axvline(c, color="grey", linestyle=ls, linewidth=0.8)
            axes[0].annotate(f"{mode}: {c:.0f}", (c, axes[0].get_ylim()[1]), rotation=90, va="top", ha="right",
                             fontsize=7, color="grey")
    p = np.array(sorted({r["p_total"] for r in rows}), dtype=float)
    axes[1].plot(p, p**2 * 8 / 2**20, ":", color="grey", label="one p x p float64 matrix")
    axes[1].plot(p, N_SAMPLES * p * 8 / 2**20, "-.", color="grey", label="the data (n x p float64)")
    axes[0].set_ylabel("wall time of fit (s), 1 BLAS thread")
    axes[1].set_ylabel("peak resident memory above data (MB)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"p_total (3 modalities, 4:5:6), n = {N_SAMPLES}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("HCL (dense moments) vs MatrixFreeHCL")
    axes[1].set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID} instead of {GRID}")
    ap.add_argument("--grid", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    ap.add_argument("--modes", default="given,learned")
    ap.add_argument("--dense-budget", type=float, default=900.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--trace-budget", type=float, default=60.0,
                    help="also trace a dense fit's allocations when its timed run took at most this long (s)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--replot", metavar="JSON", help="redraw the figure from a results file and exit")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        summary = json.loads(Path(args.replot).read_text())
        png = Path(args.replot).with_suffix(".png")
        plot(summary["fits"], summary["modes"], summary["crossover"], png)
        print(f"wrote {png}")
        return
    grid = args.grid or (QUICK_GRID if args.quick else GRID)
    modes = tuple(args.modes.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    rows, distances = [], []
    over_budget = set()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="hclstat-bench-mf-") as tmpdir:
        for p_total in grid:
            for mode in modes:
                paths = {}
                for method in METHODS:
                    if method == "dense" and mode in over_budget:
                        rows.append({"method": method, "mode": mode, "p_total": p_total, "time_s": None,
                                     "peak_mb": None, "status": f"skipped: a smaller dense run exceeded "
                                                                f"{args.dense_budget:.0f} s"})
                        print(f"p={p_total:6d} {mode:8s} {method:12s} skipped", flush=True)
                        continue
                    rec, path = run_one(method, mode, p_total, tmpdir, args.timeout)
                    t = rec.get("time_s")
                    if t is not None and (method == "matrix-free" or t <= args.trace_budget):
                        # a second, untimed fit under tracemalloc: the NumPy allocations alone
                        traced, _ = run_one(method, mode, p_total, tmpdir, args.timeout, trace=True)
                        rec["traced_peak_mb"] = traced.get("traced_peak_mb")
                    rows.append(rec)
                    if path:
                        paths[method] = path
                    if method == "dense" and (rec.get("time_s") is None or rec["time_s"] > args.dense_budget):
                        over_budget.add(mode)
                    t = rec.get("time_s")
                    traced = rec.get("traced_peak_mb")
                    traced = f"{traced:7.1f}" if traced is not None else "not run (over --trace-budget)"
                    print(f"p={p_total:6d} {mode:8s} {method:12s} {rec['status']:8s} "
                          + (f"{t:8.2f} s  peak {rec['peak_mb']:8.1f} MB (traced {traced})"
                             f"  recovered={rec['hierarchy_recovered']} "
                             f"max sin-theta {rec['max_sin_theta_to_truth']:.3f}" if t is not None else ""),
                          flush=True)
                if len(paths) == 2:
                    from hclstat.metrics import loading_errors

                    d = loading_errors(_load(paths["matrix-free"]), _load(paths["dense"]))
                    distances.append({"mode": mode, "p_total": p_total,
                                      "max_distance_dense_vs_free": float(max(d.values())) if d else None})
    cross = {mode: crossover(rows, mode) for mode in modes}
    summary = {
        "benchmark": STEM, "quick": bool(args.quick),
        "design": {"dims_weights": WEIGHTS, "ranks": {",".join(k) if isinstance(k, tuple) else k: v
                                                      for k, v in RANKS.items()},
                   "loading_scale": LOADING_SCALE, "noise": "isotropic, variance 1", "n": N_SAMPLES},
        "grid": list(grid), "modes": list(modes), "blas_threads": 1, "source": _source(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "crossover": cross, "fits": rows, "dense_vs_free": distances,
        "total_wall_s": time.time() - started,
    }
    json_path = out / f"{STEM}{suffix}.json"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    plot(rows, modes, cross, out / f"{STEM}{suffix}.png")
    for mode, c in cross.items():
        print(f"crossover ({mode}): {c}")
    print(f"wrote {json_path} and {out / (STEM + suffix + '.png')}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], trace="--trace" in sys.argv[6:])
    else:
        main()
