"""BLAS threads: where a multi-threaded BLAS gains and where it loses (issue 16).

Design D1's pattern (one global, one {a,b}, one specific component per
modality) on three modalities splitting ``p_total`` columns 4 : 5 : 6,
loadings i.i.d. N(0, 0.3^2), unit noise. For each ``p_total`` two stages are
timed separately, each under one BLAS thread and under the machine's threads
(``threadpoolctl``), median of ``--repeats`` runs after a warm-up:

* ``moments``: :func:`hclstat.compute_moments` on ``n`` rows (one GEMM pass);
* ``fit``: ``HCL(random_state=0, ...)._fit_moments`` from those moments with the
  rank lattice (permutation nulls on the rows) — everything after the moment
  pass, run with the package's own thread rule switched off
  (``HCLSTAT_NUM_THREADS`` set to the limit being measured).

The crossover :data:`hclstat.threads.CROSSOVER_COLUMNS` is the smallest
``p_total`` at which the machine's threads make the ``fit`` stage faster.

A third section times one single-precision product ``X_a^T Y`` on 5000 rows
(the shape of the permutation nulls: ``p_a`` columns against the stacked
permuted copies ``Y`` of the other modalities) over a grid of widths, under
one thread and the machine's; :data:`hclstat.threads.CROSSOVER_FLOPS` is the
smallest operation count from which the machine's threads are at least 10%
faster (and stay so at every larger size measured).
Writes ``bench_threads.json`` (with the commit) to ``--out``.

Usage::

    python benchmarks/bench_threads.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit_label  # noqa: E402

GRID = (180, 600, 1500, 3000)
QUICK_GRID = (180, 600)
WEIGHTS = (4, 5, 6)


def _dims(p_total):
    w = np.array(WEIGHTS, dtype=float)
    sizes = np.floor(p_total * w / w.sum()).astype(int)
    sizes[-1] += p_total - sizes.sum()
    return dict(zip("abc", (int(s) for s in sizes)))


def _median_time(fn, repeats):
    fn()  # warm-up: imports, Numba loading, BLAS buffers
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def measure(p_total, n, repeats, threads):
    """Seconds of the two stages at one size under ``threads`` BLAS threads (None: the machine's)."""
    from threadpoolctl import threadpool_limits

    import hclstat as hc
    from hclstat.model import d1_model

    model = d1_model(0.3, 1.0, dims=_dims(p_total), random_state=0)
    views, _ = model.sample(n, random_state=1)
    limit = threads if threads is not None else os.cpu_count()
    os.environ["HCLSTAT_NUM_THREADS"] = str(limit)
    with threadpool_limits(limits=limit, user_api="blas"):
        t_mom = _median_time(lambda: hc.compute_moments(views), repeats)
        t_fit = _median_time(lambda: hc.HCL(random_state=0).fit(views), repeats) - t_mom
    return {"p_total": p_total, "n": n, "threads": limit, "moments_s": t_mom, "fit_after_moments_s": max(t_fit, 0.0)}


PRODUCT_ROWS = 5000
PRODUCT_GRID = ((50, 1300), (200, 4000), (300, 6000), (500, 25000), (1000, 20000), (1500, 15000))


def measure_products(repeats, threads):
    """Seconds of one float32 ``X_a^T Y`` per width pair under ``threads`` BLAS threads (None: the machine's)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    limit = threads if threads is not None else os.cpu_count()
    rows = []
    with threadpool_limits(limits=limit, user_api="blas"):
        for pa, q in PRODUCT_GRID:
            X = rng.standard_normal((PRODUCT_ROWS, pa)).astype(np.float32)
            Y = rng.standard_normal((PRODUCT_ROWS, q)).astype(np.float32)
            rows.append({"p_a": pa, "columns": q, "flops": 2.0 * PRODUCT_ROWS * pa * q, "threads": limit,
                         "seconds": _median_time(lambda: X.T @ Y, repeats)})
    return rows


def product_crossover(rows):
    """Smallest flop count from which the machine's threads are >= 10% faster at every larger size."""
    one = {r["flops"]: r["seconds"] for r in rows if r["threads"] == 1}
    many = {r["flops"]: r["seconds"] for r in rows if r["threads"] != 1}
    crossover = None
    for f in sorted(one, reverse=True):
        if many[f] * 1.1 <= one[f]:
            crossover = f
        else:
            break
    return crossover


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--worker", nargs=3, type=int, metavar=("P", "N", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        p, n, t = args.worker
        if p == 0:
            print(json.dumps(measure_products(args.repeats, t or None)))
        else:
            print(json.dumps(measure(p, n, args.repeats, t or None)))
        return 0
    rows = []
    for p in (QUICK_GRID if args.quick else GRID):
        for t in (1, 0):
            # a fresh process per cell: no thread pool or cache state carried over
            res = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--worker", str(p),
                                  str(args.n), str(t)], capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"p={p:5d} threads={r['threads']}: moments {r['moments_s']:.4f} s, fit after moments "
                  f"{r['fit_after_moments_s']:.4f} s", flush=True)
    crossover = None
    for p in sorted({r["p_total"] for r in rows}):
        one = next(r for r in rows if r["p_total"] == p and r["threads"] == 1)
        many = next(r for r in rows if r["p_total"] == p and r["threads"] != 1)
        if crossover is None and many["fit_after_moments_s"] < one["fit_after_moments_s"]:
            crossover = p
    products = []
    for t in (1, 0):
        res = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--worker", "0", "0", str(t)],
                             capture_output=True, text=True, check=True)
        products += json.loads(res.stdout.strip().splitlines()[-1])
    for r in products:
        print(f"product {PRODUCT_ROWS} x {r['p_a']} by {r['columns']} ({r['flops'] / 1e9:.1f} GFLOP), "
              f"threads={r['threads']}: {r['seconds'] * 1e3:.1f} ms", flush=True)
    flops = product_crossover(products)
    doc = {"commit": commit_label(), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "n": args.n, "rows": rows, "crossover_p_total": crossover, "products": products,
           "crossover_flops": flops}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("bench_threads_quick.json" if args.quick else "bench_threads.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    print(f"crossover (fit stage gains from {os.cpu_count()} threads from p_total =) {crossover}; "
          f"one product gains from {flops} flops; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
