"""What a benchmark result was measured on: the commit of the imported ``hclstat`` and the BLAS threads.

Every result file of the benchmark scripts names the commit it ran at
(:func:`source_fingerprint`, :func:`commit_label`) and the BLAS thread count
its fits saw (:func:`blas_threads`).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

__all__ = ["PINNING_VARIABLES", "blas_threads", "commit_label", "source_fingerprint"]

#: environment variables that pin BLAS / OpenMP threads, and the package's own override
PINNING_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "HCLSTAT_NUM_THREADS")


def source_fingerprint():
    """Git commit, dirty flag and a SHA-256 of the package sources the run imports.

    Results compare only at equal fingerprints: the commit names the code, the
    hash catches uncommitted edits (``git_dirty``) and copies outside the repository.
    """
    import hclstat

    root = Path(hclstat.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    out = {"hclstat_sources_sha256": digest.hexdigest()[:16], "hclstat_path": str(root)}
    try:
        git = ["git", "-C", str(root.parent)]
        out["git_head"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         check=True).stdout.strip()
        out["git_dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "hclstat"], capture_output=True,
                                               text=True, check=True).stdout.strip())
        # the scripts measure too: uncommitted edits to them (not to their results) are recorded
        out["benchmarks_dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "--", "benchmarks/*.py"],
                                                      capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass  # not a git checkout: the source hash still names the code
    return out


def commit_label(fingerprint=None):
    """``"d055bf4"``, ``"d055bf4-dirty"`` (uncommitted edits to ``hclstat/`` or the scripts), or
    ``"sources <sha>"`` outside a git checkout."""
    fp = fingerprint if fingerprint is not None else source_fingerprint()
    if "git_head" in fp:
        return fp["git_head"] + ("-dirty" if fp.get("git_dirty") or fp.get("benchmarks_dirty") else "")
    return f"sources {fp['hclstat_sources_sha256']}"


def blas_threads():
    """Thread counts of the loaded BLAS libraries as this process sees them now (``{library: n}``)."""
    from threadpoolctl import threadpool_info

    return {f"{i['internal_api']}:{Path(i['filepath']).name}": int(i["num_threads"])
            for i in threadpool_info() if i.get("user_api") == "blas"}
