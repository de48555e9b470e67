"""Performance benchmark (issues 8, 16): floor ratio, scaling, peers, memory, Numba compile time, profile.

Every number is measured in this run, on this machine; nothing here asserts a
timing.

Threads (issue 16): the headline figures are every method as a user runs it:
package defaults and the machine's default BLAS threads. A headline worker
gets no ``threadpool_limits`` and an environment without
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` /
``HCLSTAT_NUM_THREADS`` (removed if the caller set them; the JSON records
what was removed), so HCL applies its own thread rule
(:mod:`hclstat.threads`) and each peer its library's default. The floor ratio
and the peers on D1 are measured a second time on one BLAS thread
(``threadpool_limits(1)`` and ``OPENBLAS_NUM_THREADS=1``): the second line of
their tables (``--second-threads``). Every worker records the BLAS thread
count it saw. Every fit runs in its own subprocess (``--worker``), so that a fit that
exceeds its time budget can be stopped and recorded as such, and so that the
peak memory of one fit is not mixed with another's. Inside a worker the
reference and the method are timed back to back, repeated, and medians are
reported: other processes share the machine, so single timings are noisy.

Sections (``--sections``, default all):

``floor``
    Ratio of HCL's fit time (pattern learned, ``HCL(random_state=0).fit(views)``
    wall time, moments included) to the time of the BLAS product that forms
    the moments, ``X^T X`` of the stacked ``n x p`` data (NumPy ``X.T @ X`` of
    a C-ordered float64 array, which OpenBLAS runs as ``dsyrk``), timed in the
    same process under the same threads (headline: the machine's default;
    second line: one thread). Grid: ``n in {1e4, 1e5, 1e6}`` x ``p in {(100,200,300),
    (500,1000,1500)}``; design "P7": all seven structures of three modalities
    with rank 2, loadings i.i.d. N(0, 0.3^2), unit isotropic noise. A cell
    whose data do not fit in RAM (``n = 1e6, p = 3000``: 24 GB) is measured
    out of core: the data are written in row chunks to one ``.npy`` memmap per
    modality, HCL is fitted on the memmaps, and the reference is the same
    product accumulated over row chunks read from the memmaps (the read time
    is part of both; the pure product time is reported too). Target: ratio
    <= 3 for ``n >= 1e5``.
``scaling``
    Moment pass alone (:func:`hclstat.moments.compute_moments`) and the
    reference product vs ``n`` at ``p = 600`` (log-log slope, expected 1), and
    vs ``p`` at ``n = 20000`` (expected 2); HCL's whole fit vs ``p``.
``peers``
    HCL, MOFA+ (mofapy2), GFA (cca-zoo) and AJIVE (mvlearn) on identical
    data, fits interleaved per seed, each with its package defaults and the
    machine's default BLAS threads (on D1 also on one thread): wall time of
    ``fit`` (fits under 5 s are repeated ``--peer-repeats`` times on the same
    data in the same process, every method alike, and timed by the median),
    time ratio to HCL (paired by seed, same threads), exact-pattern fraction,
    median sin-theta error of ``col(A_{m,S})`` per level, peak extra RSS.
    Peers learn their ranks (ARD from ``--peer-k`` factors; AJIVE's own
    elbow rule); their pattern is read with the R2 rule of ``peers.py``.
    Designs: D1 (``p = (50, 60, 70)``, ``n = 500``) and P7 at larger sizes.
    Targets (default threads): HCL faster than every peer wherever the peer
    runs; >= 10x faster than MOFA+ on D1; HCL on D1 within 1.2x of its
    one-thread time.
``memory``
    Peak memory of one HCL fit beyond its input: ``tracemalloc`` peak of the
    Python/NumPy allocations made during ``fit`` (numpy reports its buffers
    to tracemalloc; BLAS-internal buffers are not seen), and the growth of
    the process's peak RSS (``getrusage`` maxrss) across the fit, both as a
    ratio to the input size.
``compile``
    Numba compilation: a subprocess with a fresh ``NUMBA_CACHE_DIR`` (cold)
    and a second one on the cache it left (warm); each times the import, a
    first and a second HCL fit and SFA fit on D1. ``compile = cold first fit -
    warm first fit``; ``cache load = warm first fit - warm second fit``.
``profile``
    cProfile of HCL (pattern learned) on D1 (and P7 at larger sizes in the
    default and full modes): function-level cumulative and own times.

Modes: ``--quick`` (a few minutes), default (about 10-15 minutes on 2 cores;
what ``make bench`` runs), ``--full`` (every cell, including the 24 GB
out-of-core one; an hour or more). Cells that a mode leaves out, that exceed
its time budget, or that do not fit in the memory or disk available, are
recorded as skipped / timed out with the reason, never silently dropped.

Outputs in ``--out`` (suffix ``_quick`` / ``_full`` by mode):
``bench_performance.json`` (configuration, machine, versions, the commit,
every measurement, targets with verdicts), ``bench_performance_{floor,scaling,
peers,peer_fits,memory}.csv`` (a ``commit`` column), ``bench_performance.png``
(the commit in its title), ``bench_performance_profile_<design>.txt`` (the
commit in its first line; + ``.prof``).

Usage::

    python benchmarks/bench_performance.py [--quick | --full] [--sections floor,peers] [--out DIR]
        [--threads default|T] [--second-threads T|none]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import PINNING_VARIABLES, blas_threads, commit_label, source_fingerprint  # noqa: E402

MARKER = "@@bench-performance-result@@"
STEM = "bench_performance"
SECTIONS = ("floor", "scaling", "peers", "memory", "compile", "profile")
METHODS = ("HCL", "MOFA+", "GFA", "AJIVE")
PEER_OF = {"MOFA+": "mofa", "GFA": "gfa", "AJIVE": "ajive"}
LEVELS = ("global", "partial", "specific")

RANKS = {
    # reference design D1: one global, one {a,b}, one specific per modality
    "D1": {("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1},
    # performance design: all seven structures of three modalities, rank 2
    "P7": {("a", "b", "c"): 2, ("a", "b"): 2, ("a", "c"): 2, ("b", "c"): 2, "a": 2, "b": 2, "c": 2},
}
SMALL_P = (100, 200, 300)
LARGE_P = (500, 1000, 1500)
D1_DIMS = (50, 60, 70)
LOADING_SCALE = 0.3
GEN_CHUNK = 50_000  # rows per generated chunk (each chunk seeded by its index)

#: cells per mode; anything of the full grid a mode leaves out is recorded as skipped.
#: peers: (design, dims, n, seeds, also on one thread)
FLOOR_GRID = [(n, p) for p in (SMALL_P, LARGE_P) for n in (10_000, 100_000, 1_000_000)]
MODES = {
    "quick": {
        "floor": {(10_000, SMALL_P): 1, (100_000, SMALL_P): 1},
        "fit_budget": 240,
        "scaling_n": [10_000, 20_000, 50_000, 100_000, 200_000],
        "scaling_p_moments": [150, 300, 600, 1200],
        "scaling_p_fit": [150, 300, 600],
        "scaling_repeats": 3,
        "peers": [("D1", D1_DIMS, 500, 2, True)],
        "peer_budget": 120,
        "memory": [("D1", D1_DIMS, 500), ("P7", SMALL_P, 10_000), ("P7", SMALL_P, 100_000)],
        "profile": [("D1", D1_DIMS, 500, 5)],
    },
    "default": {
        "floor": {(10_000, SMALL_P): 3, (100_000, SMALL_P): 3, (1_000_000, SMALL_P): 2,
                  (10_000, LARGE_P): 1, (100_000, LARGE_P): 1},
        "fit_budget": 300,
        "scaling_n": [10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000],
        "scaling_p_moments": [150, 300, 600, 1200, 2400],
        "scaling_p_fit": [150, 300, 600, 1200],
        "scaling_repeats": 2,
        "peers": [("D1", D1_DIMS, 500, 5, True), ("P7", SMALL_P, 2_000, 2, False)],
        "peer_budget": 120,
        "memory": [("D1", D1_DIMS, 500), ("P7", SMALL_P, 10_000), ("P7", SMALL_P, 100_000),
                   ("P7", SMALL_P, 1_000_000), ("P7", LARGE_P, 100_000)],
        "profile": [("D1", D1_DIMS, 500, 10), ("P7", SMALL_P, 10_000, 1), ("P7", SMALL_P, 100_000, 1),
                    ("P7", LARGE_P, 10_000, 1)],
    },
    "full": {
        "floor": {(10_000, SMALL_P): 3, (100_000, SMALL_P): 3, (1_000_000, SMALL_P): 2,
                  (10_000, LARGE_P): 2, (100_000, LARGE_P): 1, (1_000_000, LARGE_P): 1},
        "fit_budget": 3600,
        "scaling_n": [10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000],
        "scaling_p_moments": [150, 300, 600, 1200, 2400, 3000],
        "scaling_p_fit": [150, 300, 600, 1200, 2400, 3000],
        "scaling_repeats": 5,
        "peers": [("D1", D1_DIMS, 500, 10, True), ("P7", SMALL_P, 2_000, 3, True), ("P7", SMALL_P, 10_000, 2, False),
                  ("P7", LARGE_P, 10_000, 1, False)],
        "peer_budget": 1800,
        "memory": [("D1", D1_DIMS, 500), ("P7", SMALL_P, 10_000), ("P7", SMALL_P, 100_000),
                   ("P7", SMALL_P, 1_000_000), ("P7", LARGE_P, 10_000), ("P7", LARGE_P, 100_000)],
        "profile": [("D1", D1_DIMS, 500, 10), ("P7", SMALL_P, 10_000, 1), ("P7", SMALL_P, 100_000, 1),
                    ("P7", LARGE_P, 10_000, 1)],
    },
}
SCALING_P_N = 20_000
#: peer fits shorter than this are repeated ``--peer-repeats`` times and timed by the median
REPEAT_BELOW_S = 5.0


# ======================================================================= shared
def design_dims(dims):
    return dict(zip("abc", (int(d) for d in dims)))


def make_model(ranks, dims, seed=0):
    from hclstat.hierarchy import Hierarchy
    from hclstat.model import HierarchicalModel

    h = Hierarchy(dims=design_dims(dims), ranks=RANKS[ranks])
    return HierarchicalModel.random(h, loading_scale=LOADING_SCALE, noise=1.0, noise_model="isotropic",
                                    random_state=np.random.default_rng([seed, 0]))


def sample(model, n, seed=0):
    """Rows ``0..n-1`` of the seed's data: chunk ``i`` drawn from ``default_rng([seed, 1, i])``.

    The same rows as :func:`generate_files` writes, so an in-memory sample and
    a prefix of a file agree.
    """
    parts = {m: [] for m in model.hierarchy.modalities}
    for i, start in enumerate(range(0, n, GEN_CHUNK)):
        views, _ = model.sample(min(GEN_CHUNK, n - start), random_state=np.random.default_rng([seed, 1, i]))
        for m, x in views.items():
            parts[m].append(x)
    return {m: np.concatenate(p) if len(p) > 1 else p[0] for m, p in parts.items()}


def data_bytes(n, dims):
    return 8 * int(n) * int(sum(dims))


def pattern_string(h):
    return " ".join(f"{''.join(sorted(s))}:{h.rank(s)}" for s in h.structures) if h is not None else ""


def level_of(structure, M=3):
    return "global" if len(structure) == M else ("specific" if len(structure) == 1 else "partial")


def score(h_est, loadings, model):
    """Exact pattern and median sin-theta error per level (matched structures only)."""
    from hclstat.metrics import loading_errors, pattern_scores

    sc = pattern_scores(h_est, model.hierarchy)
    errs = loading_errors(loadings, model.loadings)
    out = {"exact": bool(sc["exact"]), "pattern": pattern_string(h_est)}
    for lev in LEVELS:
        ev = [float(e) for (s, _), e in errs.items() if level_of(s) == lev and np.isfinite(e)]
        out[f"err_{lev}"] = float(np.median(ev)) if ev else float("nan")
    return out


def maxrss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def rss_bytes():
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Growth of the resident set's high-water mark across a block of code.

    On Linux the mark is reset first (``/proc/self/clear_refs``), so pages
    touched earlier (e.g. a memmap read while loading the data) do not hide
    the block's own peak; elsewhere ``getrusage`` maxrss is used (a lower bound).
    """

    def __enter__(self):
        gc.collect()
        self.exact = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            pass
        self.before = rss_bytes()
        self.base = self.before if self.exact else max(maxrss_bytes(), self.before)
        return self

    def __exit__(self, *exc):
        peak = _vm_hwm() if self.exact else maxrss_bytes()
        self.extra = max(int(peak - self.base), 0)
        return False


def _vm_hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return maxrss_bytes()


def fit_hcl(views, seed=0):
    from hclstat.estimators.hcl import HCL

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est = HCL(random_state=seed).fit(views)
        dt = time.perf_counter() - t0
    return est, dt, sorted({w.category.__name__ for w in caught})


def warm_up(method="HCL"):
    """One excluded fit on a small D1 data set: imports, Numba cache loads, first-call costs."""
    model = make_model("D1", D1_DIMS, seed=10**6)
    views = sample(model, 500, seed=10**6)
    t0 = time.perf_counter()
    if method == "HCL":
        fit_hcl(views)
    else:
        import peers

        kw = {"mofa": {"n_factors": 5, "max_iter": 20}, "gfa": {"n_components": 5, "max_iter": 50}, "ajive": {}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peers.PEERS[PEER_OF[method]](views, seed=0, **kw[PEER_OF[method]])
    return time.perf_counter() - t0


def threads_label(threads):
    """``"default"`` for the machine's threads (``None``), else the count as text."""
    return "default" if threads is None else str(int(threads))


def seen(blas):
    """The thread counts a worker's BLAS libraries reported, compactly (``"2"``, ``"1/2"``)."""
    return "/".join(sorted({str(v) for v in (blas or {}).values()})) or "?"


def slope(xs, ys):
    """Least-squares slope of log y on log x."""
    x, y = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def med(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


# ====================================================================== workers
def emit(result):
    print(MARKER + " " + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_views(task):
    """The task's views: generated in memory, copied from the data files, or the memmaps themselves."""
    dims, n = task["dims"], task["n"]
    if task.get("files"):
        out = {}
        for m, f in task["files"].items():
            mm = np.load(f, mmap_mode="r")
            out[m] = mm[:n] if task.get("memmap") else np.array(mm[:n])
        return out
    return sample(make_model(task["ranks"], dims, task.get("seed", 0)), n, task.get("seed", 0))


def stacked_product_out_of_core(views, chunk_rows):
    """``X^T X`` accumulated over row chunks read from the memmaps; (total s, product-only s)."""
    p = sum(v.shape[1] for v in views.values())
    n = next(iter(views.values())).shape[0]
    G = np.zeros((p, p))
    buf = np.empty((chunk_rows, p))
    t_prod = 0.0
    t0 = time.perf_counter()
    for i in range(0, n, chunk_rows):
        rows = min(chunk_rows, n - i)
        Y = buf[:rows]
        start = 0
        for v in views.values():
            Y[:, start:start + v.shape[1]] = v[i:i + rows]
            start += v.shape[1]
        t1 = time.perf_counter()
        G += Y.T @ Y
        t_prod += time.perf_counter() - t1
    return time.perf_counter() - t0, t_prod


def worker_floor(task):
    """Reference product, moment pass and HCL fit, back to back, ``repeats`` times."""
    from threadpoolctl import threadpool_limits

    from hclstat.moments import compute_moments

    with threadpool_limits(limits=task["threads"]):
        warm = warm_up("HCL")
        t0 = time.perf_counter()
        views = load_views(task)
        load_s = time.perf_counter() - t0
        model = make_model(task["ranks"], task["dims"], task.get("seed", 0))
        memmap = bool(task.get("memmap"))
        X = None if memmap else np.concatenate(list(views.values()), axis=1)
        res = {"warmup_s": warm, "load_s": load_s, "ref_s": [], "ref_product_s": [], "moments_s": [], "fit_s": [],
               "fit_time_attr_s": [], "memmap": memmap, "blas_threads": blas_threads()}
        for r in range(task["repeats"]):
            if memmap:
                total, prod = stacked_product_out_of_core(views, task.get("chunk_rows", 20_000))
                res["ref_s"].append(total)
                res["ref_product_s"].append(prod)
            else:
                t0 = time.perf_counter()
                G = X.T @ X
                res["ref_s"].append(time.perf_counter() - t0)
                del G
            est, dt, warned = fit_hcl(views)
            res["fit_s"].append(dt)
            res["fit_time_attr_s"].append(float(est.fit_time_))
            if not task.get("skip_moments"):
                t0 = time.perf_counter()
                compute_moments(views)
                res["moments_s"].append(time.perf_counter() - t0)
            res.update(score(est.hierarchy_, est.loadings_, model))
            res["warnings"] = warned
            res["repeats_done"] = r + 1
            emit(res)  # partial results survive a timeout in a later repeat


def worker_scaling_n(task):
    """Moment pass and reference product on row prefixes of one data set."""
    from threadpoolctl import threadpool_limits

    from hclstat.moments import compute_moments

    with threadpool_limits(limits=task["threads"]):
        full = load_views({**task, "n": max(task["ns"])})
        rows = []
        for n in sorted(task["ns"]):
            views = {m: a[:n] for m, a in full.items()}  # row prefixes of C-ordered arrays: contiguous
            X = np.concatenate(list(views.values()), axis=1)
            ref, mom = [], []
            for _ in range(task["repeats"]):
                t0 = time.perf_counter()
                X.T @ X
                ref.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                compute_moments(views)
                mom.append(time.perf_counter() - t0)
            del X
            rows.append({"n": n, "p": int(sum(task["dims"])), "ref_s": ref, "moments_s": mom})
            emit({"rows": rows})


def worker_peer(task):
    """One fit of one method on one (design, seed); time, accuracy, peak extra RSS."""
    from threadpoolctl import threadpool_limits

    import peers

    method = task["method"]
    with threadpool_limits(limits=task["threads"]):
        warm = warm_up(method)
        model = make_model(task["ranks"], task["dims"], task["seed"])
        views = sample(model, task["n"], task["seed"])
        info = {}

        def fit_once():
            if method == "HCL":
                est, dt, warned = fit_hcl(views, seed=task["seed"])
                return est, dt, warned
            peer = PEER_OF[method]
            kw = {"mofa": {"n_factors": task["peer_k"], "max_iter": task["mofa_iter"]},
                  "gfa": {"n_components": task["peer_k"], "max_iter": task["gfa_iter"]},
                  "ajive": {}}[peer]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                fit = peers.PEERS[peer](views, seed=task["seed"], **kw)
                dt = time.perf_counter() - t0
            return fit, dt, sorted({w.category.__name__ for w in caught})

        with PeakRSS() as mem:
            fit, dt, warned = fit_once()
        # fits shorter than REPEAT_BELOW_S are repeated on the same data (every method
        # alike) and timed by the median, as timeit does: one short fit is dominated
        # by the machine's noise
        times = [dt]
        while len(times) < task.get("repeats", 1) and dt < REPEAT_BELOW_S:
            times.append(fit_once()[1])
        dt = float(np.median(times))
        if method == "HCL":
            h, A = fit.hierarchy_, fit.loadings_
        if method != "HCL":
            h, A = peers.derive_pattern(fit, design_dims(task["dims"]), threshold=task["r2_threshold"])
            info = {"n_iter": fit.n_iter, "converged": fit.converged, **fit.info}
        emit({"time_s": dt, "times_s": times, "warmup_s": warm, "warnings": warned, "info": info,
              "blas_threads": blas_threads(),
              "peak_extra_rss_bytes": mem.extra, "rss_exact": mem.exact,
              "input_bytes": data_bytes(task["n"], task["dims"]), **score(h, A, model)})


class StagePeaks:
    """Peak traced memory of named stages of a fit (nested stages handled).

    Each wrapped function resets tracemalloc's peak on entry; the running
    maxima of the enclosing stages are carried on a stack, so every stage's
    peak (above the traced memory at its entry) is exact.
    """

    def __init__(self):
        self.peaks, self.held, self.stack, self.undo = {}, {}, [], []

    def wrap(self, owner, attr, label, held=False):
        import tracemalloc

        fn = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            cur, peak = tracemalloc.get_traced_memory()
            for frame in self.stack:
                frame["max"] = max(frame["max"], peak)
            if held and self.stack:  # memory the enclosing stage holds when this one starts
                self.held[label] = cur - self.stack[0]["base"]
            self.stack.append({"base": cur, "max": cur})
            tracemalloc.reset_peak()
            try:
                return fn(*args, **kwargs)
            finally:
                _, peak = tracemalloc.get_traced_memory()
                frame = self.stack.pop()
                self.peaks[label] = max(self.peaks.get(label, 0), max(frame["max"], peak) - frame["base"])
                for outer in self.stack:
                    outer["max"] = max(outer["max"], peak)

        setattr(owner, attr, wrapper)
        self.undo.append((owner, attr, fn))

    def restore(self):
        for owner, attr, fn in reversed(self.undo):
            setattr(owner, attr, fn)


def worker_memory(task):
    """Peak memory of one HCL fit beyond its input (tracemalloc, by stage, and maxrss)."""
    import tracemalloc

    from threadpoolctl import threadpool_limits

    import hclstat.estimators.hcl as hcl_mod
    import hclstat.moments.compute as compute_mod
    import hclstat.solvers.pipeline as pipeline_mod
    from hclstat.estimators.base import BaseHierarchicalEstimator

    with threadpool_limits(limits=task["threads"]):
        warm_up("HCL")
        views = load_views(task)
        input_bytes = int(sum(v.nbytes for v in views.values()))
        stages = StagePeaks()
        # each name is wrapped where its caller looks it up (the module that imported it)
        stages.wrap(hcl_mod.HCL, "fit", "fit")
        stages.wrap(hcl_mod, "check_views", "check_views (HCL.fit)")
        stages.wrap(hcl_mod, "compute_moments", "compute_moments")
        stages.wrap(compute_mod, "check_views", "check_views (inside compute_moments)")
        stages.wrap(compute_mod, "_moments_numpy", "_moments_numpy (chunked dsyrk)")
        stages.wrap(BaseHierarchicalEstimator, "fit_moments", "fit_moments (after the moment pass)", held=True)
        stages.wrap(hcl_mod, "datafit_lattice", "datafit_lattice (rank lattice)", held=True)
        stages.wrap(hcl_mod, "datafit_specific_ranks", "datafit_specific_ranks")
        stages.wrap(hcl_mod, "fit_hierarchy", "fit_hierarchy (noise-scale passes, path, refit)", held=True)
        stages.wrap(pipeline_mod, "fit_support", "fit_support (one fit on a support)")
        stages.wrap(pipeline_mod, "penalised_path", "penalised_path (penalty='group' only)")
        # the resident-set peak of an untraced fit first (tracemalloc's own tables would count)
        with PeakRSS() as mem:
            fit_hcl(views)
        tracemalloc.start()
        try:
            est, dt, _ = fit_hcl(views)
        finally:
            tracemalloc.stop()
            stages.restore()
        emit({"input_bytes": input_bytes, "traced_peak_extra_bytes": int(stages.peaks["fit"]),
              "rss_before_bytes": int(mem.before), "peak_extra_rss_bytes": int(mem.extra), "rss_exact": mem.exact,
              "stage_peak_bytes": stages.peaks, "held_at_entry_bytes": stages.held,
              "fit_s_with_tracemalloc": dt, "pattern": pattern_string(est.hierarchy_), "blas_threads": blas_threads()})


def worker_compile(task):
    """Import and first/second fits of HCL and SFA on D1 (NUMBA_CACHE_DIR set by the parent)."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    from hclstat.estimators.hcl import HCL
    from hclstat.estimators.sfa import StructuredFactorAnalysis

    out = {"import_s": time.perf_counter() - t0, "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")}
    model = make_model("D1", D1_DIMS, seed=0)
    views = sample(model, 500, seed=0)
    with threadpool_limits(limits=task["threads"]), warnings.catch_warnings():
        out["blas_threads"] = blas_threads()
        warnings.simplefilter("ignore")
        for name, make in (("HCL", lambda: HCL(random_state=0)),
                           ("SFA", lambda: StructuredFactorAnalysis(hierarchy=model.hierarchy, random_state=0))):
            for k in ("first", "second"):
                t0 = time.perf_counter()
                make().fit(views)
                out[f"{name}_{k}_fit_s"] = time.perf_counter() - t0
    cache = Path(os.environ.get("NUMBA_CACHE_DIR", "."))
    out["cache_files"] = len(list(cache.rglob("*.nbi")))
    emit(out)


def worker_profile(task):
    """cProfile of HCL fits; writes the stats and returns a function-level table."""
    import cProfile
    import io
    import pstats

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=task["threads"]):
        seen = blas_threads()
        warm_up("HCL")
        data = []
        for seed in range(task["seeds"]):
            model = make_model(task["ranks"], task["dims"], seed)
            data.append(sample(model, task["n"], seed))
        times = []
        prof = cProfile.Profile()
        for views in data:
            t0 = time.perf_counter()
            prof.enable()
            fit_hcl(views, seed=0)
            prof.disable()
            times.append(time.perf_counter() - t0)
    prof.dump_stats(task["prof_path"])
    stats = pstats.Stats(prof)
    total = sum(times)
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        short = fname.split("site-packages/")[-1] if "site-packages" in fname else fname.replace(str(HERE.parent) + "/", "")
        rows.append({"function": f"{short}:{line}({func})", "ncalls": nc, "tottime_s": tt, "cumtime_s": ct,
                     "own_share": tt / total if total else float("nan"),
                     "cum_share": ct / total if total else float("nan"),
                     "package": "hclstat/" in fname})
    text = io.StringIO()
    ps = pstats.Stats(prof, stream=text)
    ps.sort_stats("cumulative").print_stats(60)
    ps.sort_stats("tottime").print_stats(40)
    Path(task["txt_path"]).write_text(
        f"cProfile of HCL (pattern learned) on {task['name']} at commit {commit_label()}: {task['seeds']} fits, "
        f"{total:.3f} s in total ({total / max(len(times), 1):.3f} s per fit), BLAS threads "
        f"{threads_label(task['threads'])} (seen: {seen})\n\n" + text.getvalue())
    rows.sort(key=lambda r: -r["cumtime_s"])
    emit({"fit_s": times, "total_s": total, "functions": rows[:150]})


WORKERS = {"floor": worker_floor, "scaling_n": worker_scaling_n, "peer": worker_peer, "memory": worker_memory,
           "compile": worker_compile, "profile": worker_profile}


def generate_files(directory, ranks, dims, n, seed=0, progress=None):
    """Write ``n`` rows of the design as one ``.npy`` per modality, in row chunks (little RAM)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = make_model(ranks, dims, seed)
    files = {m: str(directory / f"{m}.npy") for m in model.hierarchy.modalities}
    arrays = {m: np.lib.format.open_memmap(files[m], mode="w+", dtype=np.float64,
                                           shape=(n, model.hierarchy.dims[m])) for m in files}
    for i, start in enumerate(range(0, n, GEN_CHUNK)):
        views, _ = model.sample(min(GEN_CHUNK, n - start), random_state=np.random.default_rng([seed, 1, i]))
        for m, x in views.items():
            arrays[m][start:start + x.shape[0]] = x
        if progress and i % 20 == 19:
            progress(f"generated {start + x.shape[0]:,} / {n:,} rows")
    for a in arrays.values():
        a.flush()
    del arrays
    return files


def worker_generate(task):
    files = generate_files(task["dir"], task["ranks"], task["dims"], task["n"], task.get("seed", 0))
    emit({"files": files})


WORKERS["generate"] = worker_generate


# ======================================================================= parent
class Runner:
    """Runs workers with budgets and collects the results of one benchmark run."""

    def __init__(self, args):
        self.args = args
        self.mode = "quick" if args.quick else ("full" if args.full else "default")
        self.cfg = MODES[self.mode]
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.suffix = {"quick": "_quick", "default": "", "full": "_full"}[self.mode]
        self.stem = STEM + self.suffix
        base = Path(args.scratch) if args.scratch else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="hclstat-bench-perf-", dir=base))
        self.data = {}
        self.fingerprint = source_fingerprint()  # at the start: the sources the workers import
        self.commit = commit_label(self.fingerprint)
        # headline: as users run it; second line: one thread (unless the same or switched off)
        self.headline = args.threads
        self.second = None if args.second_threads in ("none", args.threads) else args.second_threads
        self.removed_env = {k: os.environ[k] for k in PINNING_VARIABLES if k in os.environ}
        self.t_start = time.perf_counter()
        self.results = {"floor": [], "scaling": {"n": [], "p_moments": [], "p_fit": []}, "peers": [],
                        "memory": [], "compile": {}, "profile": {}}

    # -------------------------------------------------------------- plumbing
    def log(self, text):
        print(f"[{time.perf_counter() - self.t_start:7.0f} s] {text}", flush=True)

    def thread_settings(self, second=True):
        """The headline thread setting, then (with ``second``) the second line's, if any."""
        return [self.headline] + ([self.second] if second and self.second is not None else [])

    def run(self, task, *, timeout, threads, env=None):
        """Run one worker; returns its last result, or a status record (timeout / error).

        ``threads=None``: the machine's default BLAS threads and the package's own
        rule (no pinning variable in the worker's environment); an integer pins
        BLAS to that many threads (environment and ``threadpool_limits``).
        """
        task = {**task, "threads": threads}
        environ = {k: v for k, v in os.environ.items() if k not in PINNING_VARIABLES}
        if threads is not None:
            environ.update({k: str(threads) for k in PINNING_VARIABLES[:3]})
        environ.update(env or {})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
                                start_new_session=True)
        status = "ok"
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and its children only
            out, err = proc.communicate()
            status = "timeout"
        results = [json.loads(line[len(MARKER):]) for line in out.splitlines() if line.startswith(MARKER)]
        if status == "timeout":
            rec = results[-1] if results else {}
            return {**rec, "status": "timeout" if not results else "partial",
                    "reason": f"exceeded the {timeout:.0f} s budget of this mode"}
        if proc.returncode != 0 or not results:
            tail = [line for line in err.strip().splitlines() if line.strip()]
            return {"status": "error", "reason": (tail[-1] if tail else f"exit code {proc.returncode}")[:300]}
        return {**results[-1], "status": "ok"}

    def room(self, need_ram=0, need_disk=0):
        """None when there is room, else the reason why not."""
        import psutil

        avail = psutil.virtual_memory().available
        if need_ram and need_ram > 0.85 * avail:
            return f"needs about {need_ram / 2**30:.1f} GiB of RAM, {avail / 2**30:.1f} GiB available"
        if need_disk:
            free = shutil.disk_usage(self.scratch).free
            if need_disk + 5 * 2**30 > free:
                return f"needs {need_disk / 2**30:.1f} GiB of disk in {self.scratch} (+5 GiB margin), {free / 2**30:.1f} GiB free"
        return None

    def largest_n(self, ranks, dims):
        """The most rows this run needs of a design's data files (generated once, used as prefixes)."""
        ns = [n for (n, d) in self.cfg["floor"] if ranks == "P7" and tuple(d) == tuple(dims)]
        if "scaling" in self.args.sections and ranks == "P7" and tuple(dims) == SMALL_P:
            ns.append(max(self.cfg["scaling_n"]))
        if "memory" in self.args.sections:
            ns += [n for (r, d, n) in self.cfg["memory"] if r == ranks and tuple(d) == tuple(dims) and n > 50_000]
        return max(ns, default=0)

    def files_for(self, ranks, dims, n):
        """Data files with at least ``n`` rows of the design (generated once, reused as prefixes)."""
        key = (ranks, tuple(dims))
        have = self.data.get(key)
        if have and have["n"] >= n:
            return have["files"], None
        n = max(n, self.largest_n(ranks, dims))
        why = self.room(need_disk=data_bytes(n, dims))
        if why:
            return None, why
        if have:
            shutil.rmtree(Path(have["files"]["a"]).parent, ignore_errors=True)
        self.log(f"generating {n:,} x {sum(dims)} rows of {ranks} ({data_bytes(n, dims) / 2**30:.1f} GiB) in {self.scratch}")
        t0 = time.perf_counter()
        res = self.run({"task": "generate", "dir": str(self.scratch / f"{ranks}-{sum(dims)}"), "ranks": ranks,
                        "dims": list(dims), "n": n}, timeout=4 * 3600, threads=self.headline)
        if res["status"] != "ok":
            return None, f"data generation failed: {res.get('reason')}"
        self.data[key] = {"n": n, "files": res["files"], "generate_s": time.perf_counter() - t0}
        return res["files"], None

    def save(self):
        payload = {"config": self.config(), "results": self.results, "targets": self.targets(),
                   "elapsed_s": time.perf_counter() - self.t_start}
        (self.out / f"{self.stem}.json").write_text(json.dumps(payload, indent=1, default=_jsonable))

    def config(self):
        import psutil

        from hclstat import __version__

        versions = {"hclstat": __version__, "numpy": np.__version__, "python": platform.python_version()}
        for mod in ("scipy", "numba", "dask", "mofapy2", "cca_zoo", "mvlearn"):
            try:
                from importlib.metadata import version

                versions[mod] = version({"cca_zoo": "cca-zoo"}.get(mod, mod))
            except Exception:  # not installed: recorded as such
                versions[mod] = None
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            versions["blas"] = f"{blas.get('name')} {blas.get('version')}"
        except Exception:  # older numpy: no dict mode
            pass
        return {
            "mode": self.mode, "sections": self.args.sections, "commit": self.commit,
            "threads": {
                "headline": threads_label(self.headline),
                "second_line": threads_label(self.second) if self.second is not None else None,
                "headline_means": "package defaults and the machine's default BLAS threads: no threadpool_limits, "
                                  f"none of {list(PINNING_VARIABLES)} in the workers' environment"
                                  if self.headline is None else f"BLAS pinned to {self.headline} thread(s)",
                "second_line_for": "floor ratio; peers on the designs flagged in the mode's peer cells",
                "scaling_memory_profile_compile": threads_label(self.headline),
                "removed_from_environment": self.removed_env,
                "cpus": os.cpu_count(),
            },
            "fit_budget_s": self.cfg["fit_budget"], "peer_budget_s": self.cfg["peer_budget"],
            "designs": {"D1": {"dims": list(D1_DIMS), "ranks": _ranks_json("D1")},
                        "P7": {"dims": [list(SMALL_P), list(LARGE_P)], "ranks": _ranks_json("P7")},
                        "loading_scale": LOADING_SCALE, "noise": "isotropic, variance 1"},
            "reference": "NumPy X.T @ X of the stacked C-ordered float64 n x p data (OpenBLAS dsyrk), same process; "
                         "out of core: the same product accumulated over row chunks read from the memmaps",
            "hcl": "HCL(random_state=0).fit(views): pattern learned (hierarchy=None), package defaults; wall time "
                   "including the moment pass and input validation; each worker first fits a small excluded warm-up",
            "peers": {"peer_k": self.args.peer_k, "repeats": self.args.peer_repeats, "repeat_below_s": REPEAT_BELOW_S,
                      "mofa_iter": self.args.mofa_iter, "gfa_iter": self.args.gfa_iter,
                      "r2_threshold": self.args.r2_threshold, "ajive": "mvlearn AJIVE defaults (own elbow rule)"},
            "timing": "medians over repeats; reference and method timed back to back in one process; the machine "
                      "is shared with other processes, so timings are noisy",
            "machine": {"cpus": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
                        "platform": platform.platform()},
            "versions": versions,
            "source": self.fingerprint,
            "scratch": str(self.scratch),
        }

    # -------------------------------------------------------------- sections
    def section_floor(self):
        """Each cell under the headline threads, then the second line's (same data files)."""
        cells = self.cfg["floor"]
        for n, dims in FLOOR_GRID:
            p = sum(dims)
            for threads in self.thread_settings():
                rec = {"n": n, "p": p, "dims": "/".join(map(str, dims)), "threads": threads_label(threads),
                       "target": "ratio <= 3" if n >= 100_000 else ""}
                if (n, dims) not in cells:
                    rec.update(status="skipped", reason=f"not in the {self.mode} mode's cells (time budget); "
                                                        f"run {_mode_having(lambda cfg: (n, dims) in cfg['floor'])}")
                    self.results["floor"].append(rec)
                    continue
                need = data_bytes(n, dims)
                memmap = need * 2.6 > 0.85 * _available_ram()  # views + stacked copy + fit workspace
                rec["mode"] = "out-of-core memmap" if memmap else "in memory"
                files, why = self.files_for("P7", dims, n)
                if why:
                    rec.update(status="skipped", reason=why)
                    self.results["floor"].append(rec)
                    continue
                self.log(f"floor n={n:,} p={p}, threads {rec['threads']} ({rec['mode']}, {cells[(n, dims)]} repeat(s))")
                res = self.run({"task": "floor", "ranks": "P7", "dims": list(dims), "n": n, "files": files,
                                "memmap": memmap, "repeats": cells[(n, dims)], "skip_moments": memmap},
                               timeout=self.cfg["fit_budget"] * cells[(n, dims)] + 600, threads=threads)
                rec.update(self._floor_summary(res))
                self.results["floor"].append(rec)
                self.log(f"  -> {rec['status']}: ref {rec.get('ref_s', float('nan')):.2f} s, HCL "
                         f"{rec.get('fit_s', float('nan')):.2f} s, ratio {rec.get('ratio', float('nan')):.2f} "
                         f"(BLAS threads seen: {rec.get('blas_threads')}) {rec.get('reason', '')}")
                self.save()

    @staticmethod
    def _floor_summary(res):
        out = {"status": res["status"]}
        if "reason" in res:
            out["reason"] = res["reason"]
        if not res.get("fit_s"):
            return out
        ref, fit = res["ref_s"], res["fit_s"]
        k = min(len(ref), len(fit))
        out.update(
            repeats=k, ref_s=med(ref), fit_s=med(fit), moments_s=med(res.get("moments_s", [])),
            fit_after_moments_s=med(res["fit_time_attr_s"]),
            ratio=med([f / r for f, r in zip(fit[:k], ref[:k])]),
            ratio_moments=med([m / r for m, r in zip(res.get("moments_s", []), ref)]),
            ref_product_only_s=med(res.get("ref_product_s", [])),
            ref_all_s=ref, fit_all_s=fit, load_s=res.get("load_s"), exact=res.get("exact"),
            pattern=res.get("pattern"), warnings=";".join(res.get("warnings", [])),
            blas_threads=seen(res.get("blas_threads")) if res.get("blas_threads") else None,
        )
        return out

    def section_scaling(self):
        reps = self.cfg["scaling_repeats"]
        ns = self.cfg["scaling_n"]
        files, why = self.files_for("P7", SMALL_P, max(ns))
        need = 2.2 * data_bytes(max(ns), SMALL_P)
        why = why or self.room(need_ram=need)
        if why:
            self.results["scaling"]["n"] = [{"status": "skipped", "reason": why}]
        else:
            self.log(f"scaling in n: moment pass and reference product, p={sum(SMALL_P)}, n up to {max(ns):,}")
            res = self.run({"task": "scaling_n", "ranks": "P7", "dims": list(SMALL_P), "ns": ns, "files": files,
                            "repeats": reps}, timeout=self.cfg["fit_budget"] * 4, threads=self.headline)
            rows = [{**r, "status": "ok", "ref_median_s": med(r["ref_s"]), "moments_median_s": med(r["moments_s"])}
                    for r in res.get("rows", [])]
            done = {r["n"] for r in rows}
            rows += [{"n": n, "p": sum(SMALL_P), "status": res["status"] if res["status"] != "partial" else "timeout",
                      "reason": res.get("reason", "")} for n in ns if n not in done]
            self.results["scaling"]["n"] = rows
        self.save()
        # p: moment pass at fixed n (in-process data), then HCL's whole fit
        for p_total in self.cfg["scaling_p_moments"]:
            dims = [p_total // 6, p_total // 3, p_total // 2]
            self.log(f"scaling in p: moment pass, n={SCALING_P_N:,}, p={p_total}")
            res = self.run({"task": "scaling_n", "ranks": "P7", "dims": dims, "ns": [SCALING_P_N], "repeats": reps},
                           timeout=self.cfg["fit_budget"], threads=self.headline)
            r = (res.get("rows") or [{}])[0]
            self.results["scaling"]["p_moments"].append(
                {"n": SCALING_P_N, "p": p_total, "status": res["status"], "reason": res.get("reason", ""),
                 "ref_median_s": med(r.get("ref_s", [])), "moments_median_s": med(r.get("moments_s", []))})
        self.save()
        stop = None
        for p_total in self.cfg["scaling_p_fit"]:
            dims = [p_total // 6, p_total // 3, p_total // 2]
            rec = {"n": SCALING_P_N, "p": p_total}
            if stop:
                rec.update(status="skipped", reason=stop)
            else:
                self.log(f"scaling in p: HCL fit, n={SCALING_P_N:,}, p={p_total}")
                res = self.run({"task": "floor", "ranks": "P7", "dims": dims, "n": SCALING_P_N, "repeats": 1},
                               timeout=self.cfg["fit_budget"], threads=self.headline)
                rec.update(self._floor_summary(res))
                if res["status"] in ("timeout", "partial") and not res.get("fit_s"):
                    stop = f"a smaller p ({p_total}) already exceeded the {self.cfg['fit_budget']} s budget"
            self.results["scaling"]["p_fit"].append(rec)
            self.save()
        left_out = [p for p in MODES["full"]["scaling_p_fit"] if p not in self.cfg["scaling_p_fit"]]
        for p_total in left_out:
            where = _mode_having(lambda cfg: p_total in cfg["scaling_p_fit"])
            self.results["scaling"]["p_fit"].append(
                {"n": SCALING_P_N, "p": p_total, "status": "skipped",
                 "reason": f"not in the {self.mode} mode (time budget); run {where}"})

    def section_peers(self):
        import peers

        avail = {}
        for m in METHODS:
            if m in PEER_OF:
                ok, msg = peers.available(PEER_OF[m])
                avail[m] = (ok, msg)
        self.results["peers_available"] = {m: {"available": ok, "detail": msg} for m, (ok, msg) in avail.items()}
        timed_out = {}  # (method, threads) -> reason: larger designs are skipped after a timeout
        for ranks, dims, n, seeds, second in self.cfg["peers"]:
            name = f"{ranks} n={n} p={'/'.join(map(str, dims))}"
            truth_k = sum(RANKS[ranks].values())
            peer_k = max(self.args.peer_k, 2 * truth_k)
            for seed in range(seeds):
                for threads in self.thread_settings(second):
                    label = threads_label(threads)
                    for method in METHODS:
                        rec = {"design": name, "ranks": ranks, "n": n, "p": sum(dims), "seed": seed,
                               "threads": label, "method": method}
                        if method in avail and not avail[method][0]:
                            rec.update(status="unavailable", reason=avail[method][1])
                        elif (method, label) in timed_out:
                            rec.update(status="skipped", reason=timed_out[(method, label)])
                        else:
                            task = {"task": "peer", "method": method, "ranks": ranks, "dims": list(dims), "n": n,
                                    "seed": seed, "repeats": self.args.peer_repeats, "peer_k": peer_k,
                                    "mofa_iter": self.args.mofa_iter, "gfa_iter": self.args.gfa_iter,
                                    "r2_threshold": self.args.r2_threshold}
                            res = self.run(task, timeout=self.cfg["peer_budget"] + 60, threads=threads)
                            rec.update({k: v for k, v in res.items() if k != "info"}, info=res.get("info", {}),
                                       peer_k=peer_k if method in ("MOFA+", "GFA") else None)
                            if res["status"] == "timeout":
                                timed_out[(method, label)] = (f"timed out ({self.cfg['peer_budget']} s budget) on "
                                                              f"{name} seed {seed}, threads {label}")
                        self.results["peers"].append(rec)
                    line = " | ".join(f"{r['method']} {r['status']}"
                                      + (f" {r['time_s']:.3f}s{' exact' if r.get('exact') else ''}"
                                         if r.get("time_s") is not None else "")
                                      for r in self.results["peers"][-len(METHODS):])
                    self.log(f"peers {name} seed {seed} threads {label}: {line}")
                    self.save()

    def section_memory(self):
        for ranks, dims, n in self.cfg["memory"]:
            rec = {"design": ranks, "n": n, "p": sum(dims), "dims": "/".join(map(str, dims))}
            task = {"task": "memory", "ranks": ranks, "dims": list(dims), "n": n}
            if n > 50_000:
                files, why = self.files_for(ranks, dims, n)
                task["files"] = files
            else:
                why = None
            why = why or self.room(need_ram=3 * data_bytes(n, dims))
            if why:
                rec.update(status="skipped", reason=why)
            else:
                self.log(f"memory {ranks} n={n:,} p={sum(dims)}")
                res = self.run(task, timeout=self.cfg["fit_budget"] * 2, threads=self.headline)
                rec.update(res)
                if res.get("input_bytes"):
                    rec["traced_ratio"] = res["traced_peak_extra_bytes"] / res["input_bytes"]
                    rec["rss_ratio"] = res["peak_extra_rss_bytes"] / res["input_bytes"]
            self.results["memory"].append(rec)
            self.save()
        for ranks, dims, n in MODES["full"]["memory"]:
            if (ranks, dims, n) not in self.cfg["memory"]:
                where = _mode_having(lambda cfg: (ranks, dims, n) in cfg["memory"])
                self.results["memory"].append({"design": ranks, "n": n, "p": sum(dims), "dims": "/".join(map(str, dims)),
                                               "status": "skipped", "reason": f"not in the {self.mode} mode; run {where}"})

    def section_compile(self):
        cache = Path(tempfile.mkdtemp(prefix="numba-cache-", dir=self.scratch))
        out = {}
        for label in ("cold", "warm"):
            self.log(f"compile: {label} Numba cache ({cache})")
            out[label] = self.run({"task": "compile"}, timeout=900, threads=self.headline, env={"NUMBA_CACHE_DIR": str(cache)})
        shutil.rmtree(cache, ignore_errors=True)
        c, w = out["cold"], out["warm"]
        if c["status"] == "ok" and w["status"] == "ok":
            for name in ("HCL", "SFA"):
                out[f"{name}_compile_s"] = c[f"{name}_first_fit_s"] - w[f"{name}_first_fit_s"]
                out[f"{name}_cache_load_s"] = w[f"{name}_first_fit_s"] - w[f"{name}_second_fit_s"]
                out[f"{name}_fit_s"] = w[f"{name}_second_fit_s"]
        self.results["compile"] = out
        self.save()

    def section_profile(self):
        for ranks, dims, n, seeds in self.cfg["profile"]:
            name = f"{ranks}_n{n}_p{sum(dims)}"
            self.log(f"profile HCL on {name} ({seeds} fit(s))")
            res = self.run({"task": "profile", "name": name, "ranks": ranks, "dims": list(dims), "n": n,
                            "seeds": seeds, "prof_path": str(self.out / f"{self.stem}_profile_{name}.prof"),
                            "txt_path": str(self.out / f"{self.stem}_profile_{name}.txt")},
                           timeout=self.cfg["fit_budget"] * (seeds + 1), threads=self.headline)
            self.results["profile"][name] = res
            self.save()

    # -------------------------------------------------------------- summary
    def targets(self):
        out = []
        floor = [r for r in self.results["floor"] if r["n"] >= 100_000]
        for r in floor:
            ok = r.get("ratio")
            out.append({"target": f"floor ratio <= 3 at n={r['n']:,}, p={r['p']}, threads {r.get('threads')}",
                        "measured": f"{ok:.2f}" if ok is not None and np.isfinite(ok) else f"{r['status']}: {r.get('reason', '')}",
                        "met": (bool(ok <= 3) if ok is not None and np.isfinite(ok) else None)})
        rows = [r for r in self.results["scaling"]["n"] if r.get("status") == "ok"]
        if len(rows) >= 2:
            s = slope([r["n"] for r in rows], [r["moments_median_s"] for r in rows])
            out.append({"target": "moment pass: log-log slope in n about 1 (|slope - 1| <= 0.15)",
                        "measured": f"{s:.3f}", "met": bool(abs(s - 1) <= 0.15)})
        peers_tab = self.peer_table()
        for row in peers_tab:
            if row["method"] == "HCL" or not np.isfinite(row.get("ratio_to_hcl", float("nan"))):
                continue
            out.append({"target": f"HCL faster than {row['method']} on {row['design']}, threads {row['threads']}",
                        "measured": f"{row['method']} / HCL time = {row['ratio_to_hcl']:.1f}",
                        "met": bool(row["ratio_to_hcl"] > 1)})
        for row in peers_tab:
            if row["method"] == "MOFA+" and row["design"].startswith("D1") and np.isfinite(row["ratio_to_hcl"]):
                out.append({"target": f"HCL >= 10x faster than MOFA+ on D1, threads {row['threads']}",
                            "measured": f"{row['ratio_to_hcl']:.1f}x", "met": bool(row["ratio_to_hcl"] >= 10)})
        ratio = self.hcl_thread_ratio()
        if ratio is not None:
            out.append({"target": f"HCL on D1 with threads {threads_label(self.headline)} within 1.2x of its "
                                  f"{threads_label(self.second)}-thread time (paired by seed)",
                        "measured": f"{ratio['ratio']:.2f} ({ratio['headline_s']:.4f} s vs {ratio['second_s']:.4f} s)",
                        "met": bool(ratio["ratio"] <= 1.2) if np.isfinite(ratio["ratio"]) else None})
        for r in self.results["memory"]:
            if r.get("status") == "ok" and r["n"] >= 100_000:
                out.append({"target": f"no n x p copy beyond the input (peak extra < 0.25 x input) at n={r['n']:,}, p={r['p']}",
                            "measured": f"tracemalloc {r['traced_ratio']:.3f} x input, maxrss {r['rss_ratio']:.3f} x input",
                            "met": bool(max(r["traced_ratio"], r["rss_ratio"]) < 0.25)})
        return out

    def hcl_thread_ratio(self):
        """HCL's D1 time under the headline threads over its time under the second line's (median of seeds)."""
        if self.second is None:
            return None
        times = {}
        for r in self.results["peers"]:
            if r["method"] == "HCL" and r["design"].startswith("D1") and r.get("status") == "ok":
                times.setdefault(r["threads"], {})[r["seed"]] = r["time_s"]
        head, sec = times.get(threads_label(self.headline), {}), times.get(threads_label(self.second), {})
        seeds = sorted(set(head) & set(sec))
        if not seeds:
            return None
        return {"ratio": med([head[s] / sec[s] for s in seeds]), "headline_s": med([head[s] for s in seeds]),
                "second_s": med([sec[s] for s in seeds]), "seeds": len(seeds)}

    def peer_table(self):
        """One row per (design, threads, method); ratios to HCL paired by seed under the same threads."""
        recs = [r for r in self.results["peers"]]
        groups = list(dict.fromkeys((r["design"], r.get("threads", "1")) for r in recs))
        rows = []
        for d, t in groups:
            here = [r for r in recs if r["design"] == d and r.get("threads", "1") == t]
            hcl = {r["seed"]: r["time_s"] for r in here if r["method"] == "HCL" and r.get("status") == "ok"}
            for m in METHODS:
                rs = [r for r in here if r["method"] == m]
                ok = [r for r in rs if r.get("status") == "ok"]
                row = {"design": d, "threads": t, "method": m, "n_seeds": len(rs), "n_ok": len(ok),
                       "status": "ok" if ok else (rs[0]["status"] if rs else "n/a"),
                       "reason": "" if ok else (rs[0].get("reason", "") if rs else ""),
                       "time_median_s": med([r["time_s"] for r in ok]),
                       "ratio_to_hcl": med([r["time_s"] / hcl[r["seed"]] for r in ok if r["seed"] in hcl]),
                       "frac_exact": (sum(bool(r.get("exact")) for r in ok) / len(rs)) if rs else float("nan"),
                       "peak_extra_rss_mib": med([r.get("peak_extra_rss_bytes", float("nan")) / 2**20 for r in ok]),
                       "blas_threads_seen": "/".join(sorted({seen(r.get("blas_threads")) for r in ok}))}
                for lev in LEVELS:
                    row[f"err_{lev}"] = med([r.get(f"err_{lev}", float("nan")) for r in ok])
                rows.append(row)
        return rows

    def write_tables(self):
        import pandas as pd

        def write(rows, suffix):
            """One CSV, its first columns naming the commit and the run's threads setting."""
            df = pd.DataFrame(rows)
            df.insert(0, "commit", self.commit)
            df.to_csv(self.out / f"{self.stem}_{suffix}.csv", index=False)

        write([{k: v for k, v in r.items() if k not in ("ref_all_s", "fit_all_s")} for r in self.results["floor"]],
              "floor")
        sc = []
        for kind, rows in self.results["scaling"].items():
            for r in rows:
                sc.append({"series": {"n": "moments_vs_n", "p_moments": "moments_vs_p", "p_fit": "hcl_fit_vs_p"}[kind],
                           **{k: v for k, v in r.items() if k not in ("ref_s", "moments_s", "ref_all_s", "fit_all_s")}})
        write([{**r, "threads": threads_label(self.headline)} for r in sc], "scaling")
        write(self.peer_table(), "peers")
        write([{k: v for k, v in r.items() if k != "info"} for r in self.results["peers"]], "peer_fits")
        mem = []
        for r in self.results["memory"]:
            row = {k: v for k, v in r.items() if k not in ("stage_peak_bytes", "held_at_entry_bytes")}
            row.update({f"stage_peak_MiB[{k}]": v / 2**20 for k, v in r.get("stage_peak_bytes", {}).items()})
            row.update({f"held_MiB[{k}]": v / 2**20 for k, v in r.get("held_at_entry_bytes", {}).items()})
            mem.append({**row, "threads": threads_label(self.headline)})
        write(mem, "memory")

    def scaling_slopes(self):
        sc = self.results["scaling"]
        rows_n = [r for r in sc["n"] if r.get("status") == "ok"]
        rows_p = [r for r in sc["p_moments"] if r.get("status") == "ok"]
        rows_f = [r for r in sc["p_fit"] if r.get("status") in ("ok", "partial") and r.get("fit_s")]
        return {
            "moments_vs_n": slope([r["n"] for r in rows_n], [r["moments_median_s"] for r in rows_n]),
            "reference_vs_n": slope([r["n"] for r in rows_n], [r["ref_median_s"] for r in rows_n]),
            "moments_vs_n_large": slope([r["n"] for r in rows_n if r["n"] >= 100_000],
                                        [r["moments_median_s"] for r in rows_n if r["n"] >= 100_000]),
            "moments_vs_p": slope([r["p"] for r in rows_p], [r["moments_median_s"] for r in rows_p]),
            "reference_vs_p": slope([r["p"] for r in rows_p], [r["ref_median_s"] for r in rows_p]),
            "hcl_fit_vs_p": slope([r["p"] for r in rows_f], [r["fit_s"] for r in rows_f]),
            "hcl_after_moments_vs_p": slope([r["p"] for r in rows_f], [r["fit_after_moments_s"] for r in rows_f]),
        }

    def plot(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(16, 9))
        ax = axes[0, 0]
        fl = [r for r in self.results["floor"] if r.get("ratio") is not None and np.isfinite(r.get("ratio", np.nan))]
        head = threads_label(self.headline)
        for dims, color in ((SMALL_P, "C0"), (LARGE_P, "C1")):
            d = [r for r in fl if r["p"] == sum(dims) and r.get("threads") == head]
            if d:
                ax.plot([r["n"] for r in d], [r["ratio"] for r in d], "o-", color=color,
                        label=f"HCL fit, p={sum(dims)}, threads {head}")
                ax.plot([r["n"] for r in d], [r.get("ratio_moments", np.nan) for r in d], "s--", color=color, alpha=0.6,
                        label=f"moment pass, p={sum(dims)}, threads {head}")
            d = [r for r in fl if r["p"] == sum(dims) and r.get("threads") != head]
            if d:
                ax.plot([r["n"] for r in d], [r["ratio"] for r in d], "x:", color=color,
                        label=f"HCL fit, p={sum(dims)}, threads {d[0]['threads']}")
        ax.axhline(3, color="k", lw=0.8, ls=":", label="target 3 (n >= 1e5)")
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel("n"), ax.set_ylabel("time / time of X^T X")
        ax.set_title("floor ratio")
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        rows = [r for r in self.results["scaling"]["n"] if r.get("status") == "ok"]
        if rows:
            ns = [r["n"] for r in rows]
            ax.loglog(ns, [r["moments_median_s"] for r in rows], "o-", label=f"compute_moments (slope {slope(ns, [r['moments_median_s'] for r in rows]):.2f})")
            ax.loglog(ns, [r["ref_median_s"] for r in rows], "s-", label=f"X^T X (slope {slope(ns, [r['ref_median_s'] for r in rows]):.2f})")
        ax.set_xlabel("n"), ax.set_ylabel("seconds"), ax.set_title(f"moment pass vs n (p={sum(SMALL_P)})")
        ax.legend(fontsize=7)
        ax = axes[0, 2]
        rp = [r for r in self.results["scaling"]["p_moments"] if r.get("status") == "ok"]
        rf = [r for r in self.results["scaling"]["p_fit"] if r.get("fit_s")]
        if rp:
            ps = [r["p"] for r in rp]
            ax.loglog(ps, [r["moments_median_s"] for r in rp], "o-", label=f"compute_moments (slope {slope(ps, [r['moments_median_s'] for r in rp]):.2f})")
            ax.loglog(ps, [r["ref_median_s"] for r in rp], "s-", label=f"X^T X (slope {slope(ps, [r['ref_median_s'] for r in rp]):.2f})")
        if rf:
            ps = [r["p"] for r in rf]
            ax.loglog(ps, [r["fit_s"] for r in rf], "^-", label=f"HCL fit (slope {slope(ps, [r['fit_s'] for r in rf]):.2f})")
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("p"), ax.set_ylabel("seconds"), ax.set_title(f"vs p (n={SCALING_P_N:,})")
        ax.legend(fontsize=7)
        ax = axes[1, 0]
        tab = [r for r in self.peer_table() if np.isfinite(r["time_median_s"]) and r["threads"] == head]
        designs = list(dict.fromkeys(r["design"] for r in tab))
        width = 0.8 / len(METHODS)
        for j, m in enumerate(METHODS):
            vals = [next((r["time_median_s"] for r in tab if r["design"] == d and r["method"] == m), np.nan) for d in designs]
            ax.bar(np.arange(len(designs)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(designs)) + 0.4 - width / 2, [d.replace(" ", "\n") for d in designs], fontsize=7)
        ax.set_yscale("log"), ax.set_ylabel(f"median fit time [s] (BLAS threads: {head})"), ax.set_title("peers")
        ax.legend(fontsize=7)
        ax = axes[1, 1]
        mem = [r for r in self.results["memory"] if r.get("status") == "ok"]
        if mem:
            labels = [f"{r['design']}\nn={r['n']:.0e}\np={r['p']}" for r in mem]
            x = np.arange(len(mem))
            ax.bar(x - 0.2, [r["traced_ratio"] for r in mem], 0.4, label="tracemalloc peak extra / input")
            ax.bar(x + 0.2, [r["rss_ratio"] for r in mem], 0.4, label="maxrss growth / input")
            ax.set_xticks(x, labels, fontsize=7)
            ax.set_yscale("log")
            ax.axhline(1, color="k", lw=0.8, ls=":")
        ax.set_title("peak memory of one HCL fit beyond its input"), ax.legend(fontsize=7)
        ax = axes[1, 2]
        c = self.results.get("compile", {})
        if c.get("cold", {}).get("status") == "ok" and c.get("warm", {}).get("status") == "ok":
            names = ["import", "HCL 1st", "HCL 2nd", "SFA 1st", "SFA 2nd"]
            keys = ["import_s", "HCL_first_fit_s", "HCL_second_fit_s", "SFA_first_fit_s", "SFA_second_fit_s"]
            x = np.arange(len(names))
            ax.bar(x - 0.2, [c["cold"][k] for k in keys], 0.4, label="fresh Numba cache")
            ax.bar(x + 0.2, [c["warm"][k] for k in keys], 0.4, label="warm cache")
            ax.set_xticks(x, names)
            ax.set_yscale("log")
        ax.set_ylabel("seconds"), ax.set_title("Numba compilation (D1)"), ax.legend(fontsize=7)
        fig.suptitle(f"hclstat performance at commit {self.commit} ({self.mode} mode; {os.cpu_count()}-core machine, "
                     f"BLAS threads {head}{f', second line {threads_label(self.second)}' if self.second is not None else ''}; medians)")
        fig.tight_layout()
        fig.savefig(self.out / f"{self.stem}.png", dpi=110)
        plt.close(fig)

    def report(self):
        import pandas as pd

        pd.set_option("display.width", 220)
        pd.set_option("display.max_columns", 30)
        fmt = lambda v: f"{v:.3g}"  # noqa: E731
        print(f"\n== commit {self.commit}; headline: BLAS threads {threads_label(self.headline)}"
              + (f", second line: {threads_label(self.second)}" if self.second is not None else ""))
        print("\n== floor ratio: HCL fit time / time of X^T X under the same threads (medians; n >= 1e5 target <= 3)")
        cols = ["n", "p", "threads", "blas_threads", "mode", "status", "repeats", "ref_s", "ref_product_only_s", "moments_s", "fit_s",
                "fit_after_moments_s", "ratio", "ratio_moments", "exact", "reason"]
        fl = pd.DataFrame(self.results["floor"])
        print(fl[[c for c in cols if c in fl]].to_string(index=False, float_format=fmt))
        print("\n== scaling slopes (log-log):", json.dumps({k: round(v, 3) for k, v in self.scaling_slopes().items()}))
        print("\n== peers (ratio = method time / HCL time, paired by seed, same threads)")
        tab = pd.DataFrame(self.peer_table())
        if len(tab):
            print(tab.to_string(index=False, float_format=fmt))
        ratio = self.hcl_thread_ratio()
        if ratio is not None:
            print(f"   HCL on D1: threads {threads_label(self.headline)} {ratio['headline_s']:.4f} s, threads "
                  f"{threads_label(self.second)} {ratio['second_s']:.4f} s, ratio {ratio['ratio']:.2f} "
                  f"({ratio['seeds']} seeds)")
        print("\n== memory of one HCL fit beyond its input")
        mem = pd.DataFrame(self.results["memory"])
        if len(mem):
            cols = ["design", "n", "p", "status", "input_bytes", "traced_peak_extra_bytes", "traced_ratio",
                    "peak_extra_rss_bytes", "rss_ratio", "reason"]
            print(mem[[c for c in cols if c in mem]].to_string(index=False, float_format=fmt))
            for r in self.results["memory"]:
                if r.get("stage_peak_bytes"):
                    parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["stage_peak_bytes"].items())
                    held = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r.get("held_at_entry_bytes", {}).items())
                    print(f"   {r['design']} n={r['n']:,} p={r['p']}: peak MiB above entry by stage: {parts}; "
                          f"held by HCL.fit at entry to {held} MiB (input {r['input_bytes'] / 2**20:.1f} MiB)")
        c = self.results.get("compile", {})
        if "HCL_compile_s" in c:
            print(f"\n== Numba: HCL compile {c['HCL_compile_s']:.2f} s, cache load {c['HCL_cache_load_s']:.2f} s, "
                  f"warm fit {c['HCL_fit_s']:.3f} s; SFA compile {c['SFA_compile_s']:.2f} s, cache load "
                  f"{c['SFA_cache_load_s']:.2f} s; import cold {c['cold']['import_s']:.2f} s / warm {c['warm']['import_s']:.2f} s")
        for name, prof in self.results["profile"].items():
            if prof.get("status") != "ok":
                print(f"\n== profile {name}: {prof.get('status')} {prof.get('reason', '')}")
                continue
            print(f"\n== profile of HCL on {name}: {prof['total_s'] / len(prof['fit_s']):.3f} s per fit; "
                  "hclstat functions by cumulative time (share of fit time)")
            for r in [r for r in prof["functions"] if r["package"]][:25]:
                print(f"   {r['cum_share']:6.1%} cum {r['own_share']:6.1%} own {r['ncalls']:7d} calls  {r['function']}")
            print("   largest own times (any function):")
            for r in sorted(prof["functions"], key=lambda r: -r["tottime_s"])[:10]:
                print(f"   {r['own_share']:6.1%} own {r['ncalls']:7d} calls  {r['function']}")
        print("\n== targets")
        for t in self.targets():
            verdict = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            print(f"  [{verdict}] {t['target']}: {t['measured']}")

    def cleanup(self):
        if self.args.keep_data:
            self.log(f"data kept in {self.scratch}")
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _mode_having(test):
    """How to run the first (smallest) mode whose cells pass ``test``."""
    for mode, flag in (("quick", "--quick"), ("default", "the default mode"), ("full", "--full")):
        if test(MODES[mode]):
            return flag
    return "--full"


def _ranks_json(name):
    return {("".join(k) if isinstance(k, tuple) else k): v for k, v in RANKS[name].items()}


def _available_ram():
    import psutil

    return psutil.virtual_memory().available


def _threads_arg(text):
    """``'default'`` -> None (the machine's threads), ``'none'`` (no second line) as is, else a count >= 1."""
    if text in (None, "default"):
        return None
    if text == "none":
        return "none"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'default', 'none' or a positive integer, got {text!r}")
    return n


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a few minutes: small cells, one repeat")
    g.add_argument("--full", action="store_true", help="every cell, including the 24 GB out-of-core one (hours)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--scratch", default=None, help="directory for generated data (default: the system temp dir)")
    p.add_argument("--keep-data", action="store_true", help="keep the generated data files")
    p.add_argument("--threads", type=_threads_arg, default=None,
                   help="headline BLAS threads of every section: 'default' (the default: the machine's threads, "
                        "no pinning, the package's own rule) or a count")
    p.add_argument("--second-threads", type=_threads_arg, default=1,
                   help="BLAS threads of the second line of the floor ratio and the D1 peers (default 1; "
                        "'none' to skip it)")
    p.add_argument("--peer-k", type=int, default=15, help="starting factors of MOFA+/GFA (at least twice the truth)")
    p.add_argument("--peer-repeats", type=int, default=5,
                   help=f"timed fits per (method, seed) when one takes under {REPEAT_BELOW_S:.0f} s (median reported)")
    p.add_argument("--mofa-iter", type=int, default=1000)
    p.add_argument("--gfa-iter", type=int, default=10000)
    p.add_argument("--r2-threshold", type=float, default=0.01)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    if a.threads == "none":
        p.error("--threads: expected 'default' or a positive integer, got 'none'")
    bad = [s for s in a.sections if s not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}; expected a subset of {SECTIONS}")
    return a


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        task = json.loads(args.worker)
        warnings.simplefilter("ignore")
        WORKERS[task["task"]](task)
        return 0
    runner = Runner(args)
    runner.log(f"bench_performance, {runner.mode} mode, sections {args.sections}; results in {runner.out}")
    try:
        for section in SECTIONS:
            if section in args.sections:
                getattr(runner, f"section_{section}")()
    finally:
        runner.save()
        runner.cleanup()
    runner.write_tables()
    runner.plot()
    runner.report()
    runner.save()
    runner.log(f"wrote {runner.out / (runner.stem + '.json')} (+ _floor/_scaling/_peers/_memory .csv, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
