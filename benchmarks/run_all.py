"""Run every benchmark script (what ``make bench`` runs).

Order: the cheap ones first, so a problem shows early; the long performance
benchmark last.

1. ``bench_downstream.py``   excess risk of structure selection (about 10 s quick, 2 min otherwise)
2. ``bench_patterns.py``     pattern recovery on D1 vs the oracle, MOFA+ and GFA
3. ``bench_matrix_free.py``  dense HCL vs the matrix-free path as p grows (quick grid by default)
4. ``bench_performance.py``  floor ratio, scaling, peers, memory, Numba compile time, profile
5. ``bench_threads.py``      one BLAS thread vs the machine's, per stage (quick grid unless ``--full``)
6. ``bench_real_regimes.py`` issue 13's figures: null calibration, missing entries, absent modalities,
   p >> n, weak specific factors, large ranks vs MOFA+ (its full mode in the default run)
7. ``bench_mixed.py``        issue 14's figures: mixed-type patterns (copula vs Pearson vs MOFA+ with a
   Bernoulli likelihood), loading-error rates, the latent-correlation pass vs X^T X and latentcor,
   calibration on mixed null data (its full mode in the default run)
8. any other ``bench_*.py`` in this directory, in name order (``--quick`` passed in the
   quick and default modes; such a script writes where it chooses)

Modes:

* ``--quick``: every script in its quick mode (a few minutes in total);
* default: the ``make bench`` run, about 15 minutes on 2 cores (14.3 measured)
  (``bench_downstream`` and ``bench_patterns`` in full, ``bench_matrix_free``
  quick, ``bench_performance`` in its default mode), plus ``bench_real_regimes``
  in full (estimated 10-20 minutes, not yet measured);
* ``--full``: every script in its full mode (hours: includes the 24 GB
  out-of-core cell of ``bench_performance``).

A script that fails does not stop the others; the exit status is 1 when any
failed. ``results/run_all[_quick|_full].json`` records the commit of the
``hclstat`` the scripts import and, per script, the command, exit status and
wall time.

Usage::

    python benchmarks/run_all.py [--quick | --full] [--only performance,patterns] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script -> arguments per mode ({out} is the results directory, {sfx} the mode's file suffix)
KNOWN = {
    "bench_downstream.py": {
        "quick": ["--quick", "--out", "{out}/bench_downstream_quick.json"],
        "default": ["--out", "{out}/bench_downstream.json"],
        "full": ["--out", "{out}/bench_downstream.json"],
    },
    "bench_patterns.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--out", "{out}"],
        "full": ["--out", "{out}"],
    },
    "bench_matrix_free.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--quick", "--out", "{out}"],
        "full": ["--out", "{out}"],
    },
    "bench_performance.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--out", "{out}"],
        "full": ["--full", "--out", "{out}"],
    },
    "bench_threads.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--quick", "--out", "{out}"],
        "full": ["--out", "{out}"],
    },
    "bench_real_regimes.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--out", "{out}"],
        "full": ["--out", "{out}"],
    },
    "bench_mixed.py": {
        "quick": ["--quick", "--out", "{out}"],
        "default": ["--out", "{out}"],
        "full": ["--out", "{out}"],
    },
}


def scripts():
    """Known scripts in their order, then any other ``bench_*.py`` by name."""
    found = sorted(p.name for p in HERE.glob("bench_*.py"))
    return [s for s in KNOWN if s in found] + [s for s in found if s not in KNOWN]


def command(script, mode, out):
    args = KNOWN.get(script, {}).get(mode)
    if args is None:  # a script this runner does not know: its quick mode unless --full
        args = [] if mode == "full" else ["--quick"]
    return [sys.executable, str(HERE / script)] + [a.format(out=out) for a in args]


def source_of(env):
    """The fingerprint of the ``hclstat`` the scripts import (asked of a child with their environment)."""
    code = ("import json, provenance; fp = provenance.source_fingerprint(); "
            "print(json.dumps({'commit': provenance.commit_label(fp), **fp}))")
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE.parent, capture_output=True, text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit status {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="every script in its quick mode (a few minutes)")
    g.add_argument("--full", action="store_true", help="every script in its full mode (hours)")
    p.add_argument("--only", default=None,
                   help="comma-separated names to run, e.g. 'performance,patterns' (bench_ prefix optional)")
    p.add_argument("--out", default=str(HERE / "results"), help="results directory (default: benchmarks/results)")
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else ("full" if args.full else "default")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = scripts()
    if args.only:
        wanted = {w.strip().removeprefix("bench_").removesuffix(".py") for w in args.only.split(",") if w.strip()}
        unknown = wanted - {s.removeprefix("bench_").removesuffix(".py") for s in todo}
        if unknown:
            p.error(f"--only: no benchmark script named {sorted(unknown)}; available: {todo}")
        todo = [s for s in todo if s.removeprefix("bench_").removesuffix(".py") in wanted]
    cmds = [(s, command(s, mode, out)) for s in todo]
    if args.list:
        for _, cmd in cmds:
            print(" ".join(cmd))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    record = {"mode": mode, "out": str(out), "source": source_of(env), "scripts": []}
    print(f"run_all ({mode}) at commit {record['source'].get('commit', '?')}", flush=True)
    suffix = {"quick": "_quick", "default": "", "full": "_full"}[mode]
    t_all = time.perf_counter()
    for script, cmd in cmds:
        print(f"\n{'=' * 78}\n== {script} ({mode})\n== {' '.join(cmd)}\n{'=' * 78}", flush=True)
        t0 = time.perf_counter()
        try:
            status = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        except KeyboardInterrupt:
            status = "interrupted"
        elapsed = time.perf_counter() - t0
        record["scripts"].append({"script": script, "command": cmd, "exit_status": status, "elapsed_s": elapsed})
        (out / f"run_all{suffix}.json").write_text(json.dumps(record, indent=1))
        print(f"== {script}: {'ok' if status == 0 else f'FAILED (exit status {status})'} in {elapsed:.0f} s", flush=True)
        if status == "interrupted":
            break
    record["elapsed_s"] = time.perf_counter() - t_all
    (out / f"run_all{suffix}.json").write_text(json.dumps(record, indent=1))
    print(f"\n{'=' * 78}\nrun_all ({mode}): {record['elapsed_s'] / 60:.1f} min")
    for r in record["scripts"]:
        print(f"  {r['script']:<24s} {'ok' if r['exit_status'] == 0 else 'FAILED':<7s} {r['elapsed_s']:7.0f} s")
    failed = [r["script"] for r in record["scripts"] if r["exit_status"] != 0]
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
