"""Accuracy measures against a simulation truth.

Depends only on :mod:`hclstat.hierarchy`.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import linear_sum_assignment

from .hierarchy import Hierarchy

__all__ = [
    "orthonormal_basis",
    "principal_angles",
    "subspace_distance",
    "pattern_scores",
    "loading_errors",
    "block_errors",
    "excess_risk",
]

SUBSPACE_KINDS = ("sin_theta", "chordal", "spectral")


def __getattr__(name):
    # excess_risk needs the downstream layer; import it only when asked so that
    # metrics keeps depending on the hierarchy alone
    if name == "excess_risk":
        from .downstream import excess_risk

        return excess_risk
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def orthonormal_basis(A, *, rtol=None):
    """Orthonormal basis of ``col(A)`` (numerical rank by singular-value cut-off)."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {A.shape}")
    if A.shape[1] == 0 or not np.any(A):
        return np.zeros((A.shape[0], 0))
    u, s, _ = np.linalg.svd(A, full_matrices=False)
    if rtol is None:
        rtol = max(A.shape) * np.finfo(float).eps
    return u[:, s > rtol * s[0]]


def principal_angles(U, V):
    """Principal angles (radians, ascending) between ``col(U)`` and ``col(V)``.

    There are ``min(dim col U, dim col V)`` of them.
    """
    qu, qv = orthonormal_basis(U), orthonormal_basis(V)
    if qu.shape[0] != qv.shape[0]:
        raise ValueError(f"subspaces live in different spaces: {qu.shape[0]} vs {qv.shape[0]} rows")
    if qu.shape[1] == 0 or qv.shape[1] == 0:
        return np.zeros(0)
    a, b = (qu, qv) if qu.shape[1] <= qv.shape[1] else (qv, qu)
    cos = np.sort(np.clip(np.linalg.svd(b.T @ a, compute_uv=False), 0.0, 1.0))[::-1]
    # sines from the residual are accurate for small angles, where arccos is not
    sin = np.sort(np.clip(np.linalg.svd(a - b @ (b.T @ a), compute_uv=False), 0.0, 1.0))
    return np.arctan2(sin, cos)


def subspace_distance(U, V, kind="sin_theta"):
    """Distance between the column spaces of ``U`` and ``V``.

    Invariant to the bases chosen (any invertible column transform). With
    principal angles ``theta_1..theta_k``, ``k = min(k_U, k_V)``, and
    ``d = |k_U - k_V|`` unmatched directions:

    * ``"sin_theta"`` (default): ``sqrt(d + sum_i sin^2 theta_i)``, the Frobenius
      norm of the sines, with unmatched directions counted as at right angles;
      two orthogonal k-dimensional spaces are at ``sqrt(k)``.
    * ``"chordal"``: ``||P_U - P_V||_F = sqrt(d + 2 sum_i sin^2 theta_i)``.
    * ``"spectral"``: ``||P_U - P_V||_2`` (``max sin theta_i``; 1 when ``d > 0``).

    Parameters
    ----------
    U : ndarray of shape (p, k_U)
    V : ndarray of shape (p, k_V)
    kind : {"sin_theta", "chordal", "spectral"}
    """
    if kind not in SUBSPACE_KINDS:
        raise ValueError(f"kind: expected one of {SUBSPACE_KINDS}, got {kind!r}")
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if U.ndim == 1:
        U = U[:, None]
    if V.ndim == 1:
        V = V[:, None]
    if U.shape[0] != V.shape[0]:
        raise ValueError(
            f"U and V must have the same number of rows (ambient dimension), got {U.shape[0]} and {V.shape[0]}"
        )
    ku, kv = orthonormal_basis(U).shape[1], orthonormal_basis(V).shape[1]
    d = abs(ku - kv)
    s2 = np.sin(principal_angles(U, V)) ** 2
    if kind == "sin_theta":
        return float(np.sqrt(d + s2.sum()))
    if kind == "chordal":
        return float(np.sqrt(d + 2.0 * s2.sum()))
    if d > 0:
        return 1.0
    return float(np.sqrt(s2.max())) if s2.size else 0.0


def _as_hierarchy(h, argname):
    if hasattr(h, "hierarchy_"):
        h = h.hierarchy_
    elif hasattr(h, "hierarchy") and not isinstance(h, Hierarchy):
        h = h.hierarchy
    if not isinstance(h, Hierarchy):
        raise TypeError(f"{argname}: expected a Hierarchy (or a fitted estimator/model), got {type(h).__name__}")
    return h


def pattern_scores(estimated, truth):
    """Agreement of an estimated sharing pattern with the truth.

    Returns
    -------
    dict with keys
        ``exact`` (bool: same structures and ranks), ``structure_precision`` and
        ``structure_recall`` (over structures with positive rank; 1.0 when the
        reference set is empty), ``rank_errors`` ({structure: estimated - true}
        over the union of structures), ``support_hamming`` (entries that differ
        between the binary support matrices after the best matching of
        components; an unmatched component counts its whole column).
    """
    est = _as_hierarchy(estimated, "estimated")
    tru = _as_hierarchy(truth, "truth")
    if est.modalities != tru.modalities:
        raise ValueError(
            f"estimated and true hierarchies have different modalities: {est.modalities} vs {tru.modalities}"
        )
    se, st = set(est.structures), set(tru.structures)
    both = se & st
    union = sorted(se | st, key=lambda s: (-len(s), sorted(tru.index(m) for m in s)))
    cols_e = [s for s in est.structures for _ in range(est.rank(s))]
    cols_t = [s for s in tru.structures for _ in range(tru.rank(s))]
    K = max(len(cols_e), len(cols_t))
    cost = np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            a = cols_e[i] if i < len(cols_e) else frozenset()
            b = cols_t[j] if j < len(cols_t) else frozenset()
            cost[i, j] = len(a ^ b)
    hamming = int(cost[linear_sum_assignment(cost)].sum()) if K else 0
    return {
        "exact": est == tru,
        "structure_precision": len(both) / len(se) if se else 1.0,
        "structure_recall": len(both) / len(st) if st else 1.0,
        "rank_errors": {s: est.rank(s) - tru.rank(s) for s in union},
        "support_hamming": hamming,
    }


def _normalise_loadings(loadings):
    out = {}
    for s, blocks in loadings.items():
        key = frozenset([s]) if isinstance(s, str) else frozenset(s)
        out[key] = {m: np.asarray(a, dtype=np.float64) for m, a in blocks.items()}
    return out


def loading_errors(estimated_loadings, true_loadings, kind="sin_theta"):
    """Subspace distance of every ``col(A_{m,S})`` present in both.

    Returns ``{(structure, modality): distance}``.
    """
    est, tru = _normalise_loadings(estimated_loadings), _normalise_loadings(true_loadings)
    out = {}
    for s in tru:
        if s not in est:
            continue
        for m, a in tru[s].items():
            if m in est[s]:
                out[(s, m)] = subspace_distance(est[s][m], a, kind=kind)
    return out


def block_errors(estimated_loadings, true_loadings, dims=None, *, relative=False):
    """The published metric: ``||Â_{m,S} Â_{m,S}^T - A_{m,S} A_{m,S}^T||_F``.

    ``Â`` is the whole stacked loading matrix (features x components, every
    structure) after one orthogonal Procrustes rotation onto the truth.
    Structures are matched by name; a structure missing on one side, or with a
    smaller rank, is padded with zero columns.

    Returns ``{(structure, modality): error}`` for every block of the truth
    (divided by ``||A_{m,S} A_{m,S}^T||_F`` when ``relative``).
    """
    est, tru = _normalise_loadings(estimated_loadings), _normalise_loadings(true_loadings)
    structs = list(tru) + [s for s in est if s not in tru]
    mods = []
    for src in (tru, est):
        for blocks in src.values():
            for m in blocks:
                if m not in mods:
                    mods.append(m)
    if dims is None:
        dims = {}
        for src in (tru, est):
            for blocks in src.values():
                for m, a in blocks.items():
                    dims.setdefault(m, a.shape[0])
    width = {
        s: max(
            max((a.shape[1] for a in tru.get(s, {}).values()), default=0),
            max((a.shape[1] for a in est.get(s, {}).values()), default=0),
        )
        for s in structs
    }
    row0, col0 = {}, {}
    r = 0
    for m in mods:
        row0[m] = r
        r += dims[m]
    c = 0
    for s in structs:
        col0[s] = c
        c += width[s]
    E, T = np.zeros((r, c)), np.zeros((r, c))
    for src, dst in ((est, E), (tru, T)):
        for s, blocks in src.items():
            for m, a in blocks.items():
                if a.shape[0] != dims[m]:
                    raise ValueError(
                        f"loadings of structure {sorted(s)}, modality {m!r}: expected {dims[m]} rows, got {a.shape[0]}"
                    )
                dst[row0[m] : row0[m] + dims[m], col0[s] : col0[s] + a.shape[1]] = a
    R, _ = orthogonal_procrustes(E, T)
    ER = E @ R
    out = {}
    for s, blocks in tru.items():
        cs = slice(col0[s], col0[s] + width[s])
        for m, a in blocks.items():
            rs = slice(row0[m], row0[m] + dims[m])
            ab = ER[rs, cs]
            ref = a @ a.T
            err = float(np.linalg.norm(ab @ ab.T - ref))
            out[(s, m)] = err / float(np.linalg.norm(ref)) if relative else err
    return out
