"""Inverting the bridges: latent correlations from rank statistics, and their projection.

* :func:`invert_bridge` — ``r`` with ``F(r) = tau`` for all pairs of one type
  combination at once: Illinois (modified regula falsi) on ``[-R_EDGE, R_EDGE]``,
  all pairs in lockstep, each step evaluating the bridge only on the pairs not yet
  converged. A bridge is increasing in ``r``, so the bracket is kept and the
  iteration cannot leave it. A ``tau`` outside ``(F(-R_EDGE), F(R_EDGE))`` — at or
  beyond the attainable bound, or in the last sliver before it — is mapped to
  ``-R_EDGE`` or ``R_EDGE`` and flagged.
* :func:`latent_correlation` — the p x p latent correlation from a matrix of
  statistics (Spearman's rho for continuous pairs, Kendall's tau-a otherwise),
  one vectorised inversion per type combination present.
* :func:`nearest_correlation` — the nearest correlation matrix with eigenvalues
  at least a floor (Higham's alternating projections, statsmodels).
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.correlation_tools import corr_clipped

from .bridges import TYPES, bridge, margins, spearman_inverse, type_code

__all__ = ["R_EDGE", "invert_bridge", "latent_correlation", "nearest_correlation"]

#: latent correlations are confined to [-R_EDGE, R_EDGE]; statistics beyond its image are flagged
R_EDGE = 0.999
#: Illinois iterations before giving up (the bracket halves at worst every other step)
_MAX_ITER = 200
#: a statistic this close to F(+/-R_EDGE) counts as at the edge (the bridge is flat there to rounding)
_AT_EDGE = 1e-12


def invert_bridge(tau, type_j, type_k, zr_j=(np.nan, np.nan), zr_k=(np.nan, np.nan), *, tol=1e-8):
    """Latent correlations ``r`` with ``bridge(type_j, type_k, r, zr_j, zr_k) = tau``.

    Parameters
    ----------
    tau : array_like of shape (m,)
        Kendall tau-a of the pairs (NaN allowed: NaN out).
    type_j, type_k : str
        The type combination shared by all pairs, in either order.
    zr_j, zr_k : array_like of shape (2, m) or broadcastable
        The zratios of the two columns of each pair.
    tol : float
        Width of the final bracket on ``r``.

    Returns
    -------
    r : ndarray of shape (m,)
    clipped : ndarray of bool of shape (m,)
        Pairs whose ``tau`` lies outside ``(F(-R_EDGE), F(R_EDGE))``: their ``r`` is
        ``-R_EDGE`` or ``R_EDGE``.
    """
    tau = np.atleast_1d(np.asarray(tau, dtype=float))
    if tau.ndim != 1:
        raise ValueError(f"invert_bridge: expected tau of shape (m,), got {tau.shape}")
    if not tol > 0:
        raise ValueError(f"invert_bridge: expected tol > 0, got {tol!r}")
    m = tau.shape[0]
    cj, ck = type_code(type_j, "type_j"), type_code(type_k, "type_k")
    zj, zk = margins(cj, zr_j, m, "zr_j"), margins(ck, zr_k, m, "zr_k")

    def g(idx, r):
        return bridge(type_j, type_k, r, zj[:, idx], zk[:, idx]) - tau[idx]

    r_out = np.full(m, np.nan)
    clipped = np.zeros(m, dtype=bool)
    every = np.arange(m)
    lo, hi = np.full(m, -R_EDGE), np.full(m, R_EDGE)
    g_lo, g_hi = g(every, lo), g(every, hi)
    low, high = g_lo >= -_AT_EDGE, g_hi <= _AT_EDGE
    r_out[low], r_out[high] = -R_EDGE, R_EDGE
    clipped[low | high] = True
    if cj == ck == 0:  # closed form
        inner = ~(low | high) & ~np.isnan(g_lo + g_hi)
        r_out[inner] = np.sin(np.pi / 2.0 * tau[inner])
        return r_out, clipped
    act = np.flatnonzero(~(low | high) & ~np.isnan(g_lo + g_hi))
    # Illinois: a, b bracket the root with g(a) < 0 < g(b) at the start; b is the newest point
    a, b, ga, gb = lo[act], hi[act], g_lo[act], g_hi[act]
    for _ in range(_MAX_ITER):
        if act.size == 0:
            break
        c = (a * gb - b * ga) / (gb - ga)
        c = np.where(np.isfinite(c) & (c > np.minimum(a, b)) & (c < np.maximum(a, b)), c, 0.5 * (a + b))
        gc = g(act, c)
        flip = gc * gb < 0.0
        ga = np.where(flip, gb, 0.5 * ga)
        a = np.where(flip, b, a)
        b, gb = c, gc
        done = (np.abs(b - a) <= tol) | (gc == 0.0)
        r_out[act[done]] = b[done]
        keep = ~done
        act, a, b, ga, gb = act[keep], a[keep], b[keep], ga[keep], gb[keep]
    if act.size:  # not reached for monotone bridges; keep the best point rather than fail
        r_out[act] = b
    return r_out, clipped


def _types_and_margins(types, zratios, p):
    """Codes (p,) and zratios (2, p) of the columns, checked column by column."""
    if len(types) != p:
        raise ValueError(f"types: expected {p} entries (one per column of stat), got {len(types)}")
    codes = np.array([type_code(t, f"types[{j}]") for j, t in enumerate(types)], dtype=int)
    zr = np.asarray(zratios, dtype=float)
    if zr.shape != (2, p):
        raise ValueError(f"zratios: expected shape (2, {p}), got {zr.shape}")
    for j in range(p):
        margins(codes[j], zr[:, j], 1, f"zratios[:, {j}] (column {j}, {TYPES[codes[j]]})")
    return codes, zr


def latent_correlation(stat, types, zratios, *, continuous="spearman", tol=1e-8):
    """Pointwise latent correlation matrix from pairwise rank statistics.

    Parameters
    ----------
    stat : array_like of shape (p, p)
        Symmetric; ``stat[j, k]`` is Spearman's rho when both columns are continuous
        and ``continuous="spearman"``, Kendall's tau-a otherwise. NaN allowed.
    types : sequence of str of length p
        Column types, from :data:`~hclstat.moments.bridges.TYPES`.
    zratios : array_like of shape (2, p)
    continuous : {"spearman", "kendall"}
        Statistic of the continuous-continuous pairs.
    tol : float
        Passed to :func:`invert_bridge`.

    Returns
    -------
    R : ndarray of shape (p, p)
        Symmetric, unit diagonal, NaN where ``stat`` is; not projected (see
        :func:`nearest_correlation`).
    info : dict
        ``n_clipped`` (int) and ``clipped_pairs`` (ndarray of shape (n_clipped, 2),
        ``j < k``): pairs whose statistic is at or beyond what the margins allow,
        set to ``+/-R_EDGE``.
    """
    stat = np.asarray(stat, dtype=float)
    if stat.ndim != 2 or stat.shape[0] != stat.shape[1]:
        raise ValueError(f"stat: expected a square matrix, got shape {stat.shape}")
    if continuous not in ("spearman", "kendall"):
        raise ValueError(f"continuous: expected 'spearman' or 'kendall', got {continuous!r}")
    both = ~(np.isnan(stat) | np.isnan(stat.T))
    if not np.allclose(stat[both], stat.T[both], atol=1e-12, rtol=0.0):
        raise ValueError("stat: expected a symmetric matrix")
    p = stat.shape[0]
    codes, zr = _types_and_margins(types, zratios, p)
    rows, cols = np.triu_indices(p, 1)
    # each pair's columns ordered by type code, higher first
    swap = codes[rows] < codes[cols]
    hi, lo = np.where(swap, cols, rows), np.where(swap, rows, cols)
    hi_code, lo_code = codes[hi], codes[lo]
    values = np.full(rows.size, np.nan)
    clipped = np.zeros(rows.size, dtype=bool)
    for c1 in range(4):
        for c2 in range(c1 + 1):
            sel = np.flatnonzero((hi_code == c1) & (lo_code == c2))
            if sel.size == 0:
                continue
            s = stat[rows[sel], cols[sel]]
            if (c1, c2) == (0, 0) and continuous == "spearman":
                r = spearman_inverse(s)
                out = np.abs(r) >= R_EDGE
                values[sel], clipped[sel] = np.clip(r, -R_EDGE, R_EDGE), out
                continue
            values[sel], clipped[sel] = invert_bridge(s, TYPES[c1], TYPES[c2], zr[:, hi[sel]], zr[:, lo[sel]],
                                                      tol=tol)
    R = np.eye(p)
    R[rows, cols] = values
    R[cols, rows] = values
    pairs = np.stack([rows[clipped], cols[clipped]], axis=1)
    return R, {"n_clipped": int(clipped.sum()), "clipped_pairs": pairs}


def nearest_correlation(R, *, floor=1e-6, tol=1e-7, max_iter=100):
    """Nearest correlation matrix whose eigenvalues are at least ``floor``.

    Higham's (2002) alternating projections with Dykstra's correction, between
    the matrices with eigenvalues >= ``floor`` and those with unit diagonal,
    stopped when an iteration moves no entry by more than ``tol`` (at most
    ``max_iter`` iterations, one ``p x p`` eigendecomposition each); a final
    :func:`~statsmodels.stats.correlation_tools.corr_clipped` step enforces
    the floor (up to the rescaling to unit diagonal). A matrix already above
    the floor is returned unchanged. (statsmodels' ``corr_nearest`` runs the
    same projections but its stopping rule never fires at a positive
    threshold: ``100 p`` eigendecompositions, over a minute at ``p = 180``.)

    Returns
    -------
    R_pd : ndarray of shape (p, p)
    max_abs_change : float
        ``max |R_pd - R|``.
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"R: expected a square matrix, got shape {R.shape}")
    if np.isnan(R).any():
        raise ValueError("R: expected no NaN entries (a pair without a statistic); fill or drop those columns first")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor: expected 0 <= floor < 1, got {floor!r}")
    R = 0.5 * (R + R.T)
    if np.linalg.eigvalsh(R)[0] >= floor:
        return R.copy(), 0.0
    Y, dS = R.copy(), np.zeros_like(R)
    for _ in range(max_iter):
        Rk = Y - dS
        w, V = np.linalg.eigh(Rk)
        X = (V * np.maximum(w, floor)) @ V.T
        dS = X - Rk
        Y_new = X.copy()
        np.fill_diagonal(Y_new, 1.0)
        moved = float(np.max(np.abs(Y_new - Y)))
        Y = 0.5 * (Y_new + Y_new.T)
        if moved < tol:
            break
    out = Y
    if np.linalg.eigvalsh(out)[0] < (1.0 - 1e-6) * floor:
        out = corr_clipped(out, threshold=floor)
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return out, float(np.max(np.abs(out - R)))
