"""Bridge functions of the latent Gaussian copula: latent correlation -> Kendall's tau-a.

Column ``j`` is a monotone function of a latent standard normal ``z_j``; the pair
``(z_j, z_k)`` has correlation ``r``. Its *bridge* ``F(r)`` is the population
Kendall tau-a of the two observed columns; it depends on the two types and
their margins ("zratios", as in latentcor):

==============  ====================================  ==========================
type            observed                              zratios
==============  ====================================  ==========================
``continuous``  ``f(z)``, ``f`` strictly increasing   ``(nan, nan)``
``binary``      ``1{z > D}``                          ``(P(x = 0), nan)``
``truncated``   ``1{z > D} f(z)`` (zero-inflated)     ``(P(x = min), nan)``
``ternary``     ``1{z > D_1} + 1{z > D_2}``           ``(P(0), P(0) + P(1))``
==============  ====================================  ==========================

with ``D = Phi^{-1}(zratio)``. Formulas (``Phi_d`` standard normal CDFs with the
correlation matrices written out in :func:`_tau_of_codes`): continuous pairs
``2/pi arcsin r``; binary-continuous and binary-binary, Fan, Liu, Ning and Zou
(2017); truncated with continuous, binary or truncated, Yoon, Carroll and
Gaynanova (2020); ternary with any, Quan, Booth and Wells (2018) — as
implemented by latentcor's ``r_sol.bridge_XX`` (Yoon, Mueller and Gaynanova 2021),
evaluated here in closed form or with :func:`~hclstat.moments.mvn.mvn_cdf`,
vectorised over pairs. Every bridge is increasing in ``r`` and ``F(0) = 0``.

The inverse, the latent correlation matrix and its projection are in
:mod:`hclstat.moments.bridge_inverse`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from .mvn import bvn_cdf, mvn_cdf

__all__ = ["TYPES", "bridge", "bridge_slope_at_zero", "spearman_bridge", "spearman_inverse", "tau_bound",
           "tau_range"]

#: the observed column types, by code (latentcor's 0 con, 1 bin, 2 tru, 3 ter)
TYPES = ("continuous", "binary", "truncated", "ternary")
_CODE = {name: code for code, name in enumerate(TYPES)}
_S2 = np.sqrt(0.5)
#: the pairs whose bridge needs mvn_cdf, and the |r| they are evaluated at most
_VIA_MVN = {(2, 0), (2, 1), (2, 2), (3, 0), (3, 2)}
_R_MVN = 1.0 - 1e-12


def type_code(name, where="type"):
    """The code of a column type name; ``ValueError`` naming ``where`` otherwise."""
    try:
        return _CODE[name]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: expected one of {TYPES}, got {name!r}") from None


def margins(code, zr, m, where="zratios"):
    """``zr`` as a float array of shape (2, m), its entries checked for ``code``."""
    zr = np.asarray(zr, dtype=float)
    if zr.ndim == 1:
        zr = zr[:, None]
    try:
        zr = np.broadcast_to(zr, (2, m))
    except ValueError:
        raise ValueError(f"{where}: expected shape (2, {m}) or broadcastable, got {zr.shape}") from None
    if code in (1, 2):
        p = zr[0][~np.isnan(zr[0])]
        if np.any((p <= 0.0) | (p >= 1.0)):
            raise ValueError(f"{where}: expected P(x at its lower value) in (0, 1) for a {TYPES[code]} "
                             f"column, got {p[(p <= 0.0) | (p >= 1.0)][0]:g}; a constant column has no bridge")
    elif code == 3:
        ok = np.isnan(zr).any(axis=0) | ((zr[0] > 0.0) & (zr[0] < zr[1]) & (zr[1] < 1.0))
        if not ok.all():
            bad = np.flatnonzero(~ok)[0]
            raise ValueError(f"{where}: expected 0 < P(0) < P(0) + P(1) < 1 for a ternary column, got "
                             f"({zr[0, bad]:g}, {zr[1, bad]:g}) at pair {bad}; with a level empty use binary")
    return zr


def _corr(rows):
    """Stack of correlation matrices (m, d, d) from a nested list of (m,) arrays / scalars."""
    m = max(np.size(x) for row in rows for x in row)
    return np.stack([np.stack([np.broadcast_to(x, (m,)) for x in row], axis=-1) for row in rows], axis=1)


def _tau_of_codes(c1, c2, r, z1, z2):
    """Kendall tau-a for codes ``c1 >= c2``; ``z1``, ``z2`` zratios (2, m) of the two columns."""
    m = r.shape[0]
    with np.errstate(invalid="ignore"):
        d1, d2 = ndtri(z1), ndtri(z2)
    zero = np.zeros(m)
    one = np.ones(m)
    if (c1, c2) == (0, 0):
        return 2.0 / np.pi * np.arcsin(r)
    if (c1, c2) == (1, 0):
        return 4.0 * bvn_cdf(d1[0], 0.0, r * _S2) - 2.0 * z1[0]
    if (c1, c2) == (1, 1):
        return 2.0 * (bvn_cdf(d1[0], d2[0], r) - z1[0] * z2[0])
    if (c1, c2) == (2, 0):
        u = np.stack([-d1[0], zero, zero], axis=1)
        mat = _corr([[one, _S2, r * _S2], [_S2, one, r], [r * _S2, r, one]])
        return -2.0 * bvn_cdf(-d1[0], 0.0, _S2) + 4.0 * mvn_cdf(u, mat)
    if (c1, c2) == (2, 1):
        u = np.stack([-d1[0], d2[0], zero], axis=1)
        mat1 = _corr([[one, -r, _S2], [-r, one, -r * _S2], [_S2, -r * _S2, one]])
        mat2 = _corr([[one, zero, -_S2], [zero, one, -r * _S2], [-_S2, -r * _S2, one]])
        return 2.0 * (1.0 - z1[0]) * z2[0] - 2.0 * mvn_cdf(u, mat1) - 2.0 * mvn_cdf(u, mat2)
    if (c1, c2) == (2, 2):
        u = np.stack([-d1[0], -d2[0], zero, zero], axis=1)
        a = r * _S2
        mat1 = _corr([[one, zero, _S2, -a], [zero, one, -a, _S2], [_S2, -a, one, -r], [-a, _S2, -r, one]])
        mat2 = _corr([[one, r, _S2, a], [r, one, a, _S2], [_S2, a, one, r], [a, _S2, r, one]])
        return 2.0 * (mvn_cdf(u, mat2) - mvn_cdf(u, mat1))
    if (c1, c2) == (3, 0):
        a = r * _S2
        u = np.stack([d1[0], d1[1], zero], axis=1)
        mat = _corr([[one, zero, a], [zero, one, -a], [a, -a, one]])
        return (4.0 * bvn_cdf(d1[1], 0.0, a) - 2.0 * z1[1] + 4.0 * mvn_cdf(u, mat) - 2.0 * z1[0] * z1[1])
    if (c1, c2) == (3, 1):
        return (2.0 * bvn_cdf(d2[0], d1[1], r) * (1.0 - z1[0])
                - 2.0 * z1[1] * (z2[0] - bvn_cdf(d2[0], d1[0], r)))
    if (c1, c2) == (3, 2):
        a = r * _S2
        u = np.stack([-d1[0], d1[1], -d2[0], zero], axis=1)
        mat2 = _corr([[one, zero, zero, a], [zero, one, -r, a], [zero, -r, one, -_S2 * one], [a, a, -_S2 * one, one]])
        mat3 = _corr([[one, zero, r, a], [zero, one, zero, a], [r, zero, one, _S2 * one], [a, a, _S2 * one, one]])
        # the trivariate term of latentcor has a block-diagonal matrix: a product
        return (-2.0 * (1.0 - z1[0]) * z1[1] + 2.0 * ndtr(-d1[0]) * bvn_cdf(d1[1], d2[0], r)
                + 2.0 * mvn_cdf(u, mat2) + 2.0 * mvn_cdf(u, mat3))
    # (3, 3)
    return (2.0 * bvn_cdf(d1[1], d2[1], r) * bvn_cdf(-d1[0], -d2[0], r)
            - 2.0 * (z1[1] - bvn_cdf(d1[1], d2[0], r)) * (z2[1] - bvn_cdf(d1[0], d2[1], r)))


def _pair(type_j, type_k, zr_j, zr_k, m):
    """Codes ordered higher first (latentcor's convention) with their zratios, (2, m) each."""
    cj, ck = type_code(type_j, "type_j"), type_code(type_k, "type_k")
    zj, zk = margins(cj, zr_j, m, "zr_j"), margins(ck, zr_k, m, "zr_k")
    return (cj, ck, zj, zk) if cj >= ck else (ck, cj, zk, zj)


def bridge(type_j, type_k, r, zr_j=(np.nan, np.nan), zr_k=(np.nan, np.nan)):
    """Population Kendall tau-a of two columns whose latent correlation is ``r``.

    Parameters
    ----------
    type_j, type_k : str
        Column types, one of :data:`TYPES`, in either order.
    r : array_like of shape (m,)
        Latent correlations in [-1, 1].
    zr_j, zr_k : array_like of shape (2, m) or broadcastable (e.g. (2,))
        The zratios of the two columns (see the module docstring).

    Returns
    -------
    ndarray of shape (m,)
        ``F(r)``; NaN where ``r`` or a needed zratio is NaN.
    """
    r = np.atleast_1d(np.asarray(r, dtype=float))
    if r.ndim != 1:
        raise ValueError(f"bridge: expected r of shape (m,), got {r.shape}")
    if np.any(np.abs(r) > 1.0):
        raise ValueError(f"bridge: expected latent correlations in [-1, 1], got max |r| = {np.nanmax(np.abs(r)):g}")
    c1, c2, z1, z2 = _pair(type_j, type_k, zr_j, zr_k, r.shape[0])
    bad = np.isnan(r)
    if c1:
        bad |= np.isnan(z1[0]) | ((c1 == 3) & np.isnan(z1[1]))
    if c2:
        bad |= np.isnan(z2[0]) | ((c2 == 3) & np.isnan(z2[1]))
    out = np.full(r.shape, np.nan)
    if (~bad).any():
        # at |r| = 1 some matrices lose two ranks, outside what mvn_cdf integrates accurately
        rr = np.clip(r[~bad], -_R_MVN, _R_MVN) if (c1, c2) in _VIA_MVN else r[~bad]
        out[~bad] = _tau_of_codes(c1, c2, rr, z1[:, ~bad], z2[:, ~bad])
    return out


def tau_bound(type_j, type_k, zr_j=(np.nan, np.nan), zr_k=(np.nan, np.nan)):
    """latentcor's ``bound_XX``: an upper bound of ``tau_a`` for a type pair with these margins.

    Measured against :func:`tau_range`: it is the largest attainable ``|tau_a|``
    for continuous-binary, truncated-continuous, -binary, -truncated and
    ternary-continuous pairs; only the upper end ``F(1)`` for binary-binary
    (``|F(-1)|`` can exceed it); not attained for ternary-binary, -truncated and
    -ternary pairs (up to 0.2 above ``max(F(1), -F(-1))``). For the exact
    attainable range use :func:`tau_range`.

    Returns
    -------
    ndarray of shape (m,)
        ``m`` the broadcast number of pairs of the zratios (1 for two scalars' worth).
    """
    m = max(np.asarray(zr_j, dtype=float).reshape(2, -1).shape[1], np.asarray(zr_k, dtype=float).reshape(2, -1).shape[1])
    c1, c2, z1, z2 = _pair(type_j, type_k, zr_j, zr_k, m)
    p1, q1, p2, q2 = z1[0], z1[1], z2[0], z2[1]
    ter1 = p1 * (1.0 - p1) + (1.0 - q1) * (q1 - p1)
    ter2 = p2 * (1.0 - p2) + (1.0 - q2) * (q2 - p2)
    table = {
        (0, 0): np.ones(m),
        (1, 0): 2.0 * p1 * (1.0 - p1),
        (1, 1): 2.0 * np.minimum(p1, p2) * (1.0 - np.maximum(p1, p2)),
        (2, 0): 1.0 - p1 ** 2,
        (2, 1): 2.0 * np.maximum(p2, 1.0 - p2) * (1.0 - np.maximum(np.maximum(p2, 1.0 - p2), p1)),
        (2, 2): 1.0 - np.maximum(p1, p2) ** 2,
        (3, 0): 2.0 * ter1,
        (3, 1): 2.0 * np.minimum(ter1, p2 * (1.0 - p2)),
        (3, 2): 1.0 - np.maximum.reduce([p1, q1 - p1, 1.0 - q1, p2]) ** 2,
        (3, 3): 2.0 * np.minimum(ter1, ter2),
    }
    return table[(c1, c2)]


def tau_range(type_j, type_k, zr_j=(np.nan, np.nan), zr_k=(np.nan, np.nan)):
    """The attainable ``(F(-1), F(1))`` of a type pair, each of shape (m,) (bridges at singular matrices)."""
    zj, zk = np.asarray(zr_j, dtype=float).reshape(2, -1), np.asarray(zr_k, dtype=float).reshape(2, -1)
    m = max(zj.shape[1], zk.shape[1])
    zj, zk = np.broadcast_to(zj, (2, m)), np.broadcast_to(zk, (2, m))
    return bridge(type_j, type_k, np.full(m, -1.0), zj, zk), bridge(type_j, type_k, np.ones(m), zj, zk)


def spearman_bridge(r):
    """Population Spearman rho of two continuous columns, ``(6 / pi) arcsin(r / 2)``."""
    return 6.0 / np.pi * np.arcsin(np.asarray(r, dtype=float) / 2.0)


def spearman_inverse(rho):
    """Latent correlation of two continuous columns from Spearman's rho, ``2 sin(pi rho / 6)``."""
    return 2.0 * np.sin(np.pi * np.asarray(rho, dtype=float) / 6.0)


def bridge_slope_at_zero(types, zratios):
    """Per-column factors ``a_j`` with ``dF_jk/dr (0) = a_j a_k`` for every Kendall pair.

    With ``s_j(z, z') = sign(x_j(z) - x_j(z'))`` and two independent draws, the first
    Hermite term of ``tau = E[s_j s_k]`` gives ``dF/dr (0) = 2 c_j c_k`` with
    ``c_j = E[s_j(z, z') z]`` (Stein's identity; antisymmetry makes both draws
    contribute equally), so ``a_j = sqrt(2) c_j``:

    * continuous: ``c = E|z - z'| / 2 = 1 / sqrt(pi)``, ``a = sqrt(2 / pi)``;
    * binary: ``c = phi(D)``;
    * ternary: ``c = (p_0 + p_1) phi(D_1) + (p_1 + p_2) phi(D_2)`` (each threshold
      weighted by the jump of ``E_z' s(z, z')`` there);
    * truncated: ``c = p phi(D) + Phi(-sqrt(2) D) / sqrt(pi)`` (``p = Phi(D)``).

    Parameters
    ----------
    types : sequence of str of length p
    zratios : array_like of shape (2, p)

    Returns
    -------
    ndarray of shape (p,)
    """
    codes = np.array([type_code(t, f"types[{j}]") for j, t in enumerate(types)], dtype=int)
    zr = np.asarray(zratios, dtype=float).reshape(2, -1)
    if zr.shape[1] != codes.size:
        raise ValueError(f"zratios: expected shape (2, {codes.size}) to match types, got {zr.shape}")
    for code in np.unique(codes):
        margins(code, zr[:, codes == code], int(np.sum(codes == code)), "zratios")
    with np.errstate(invalid="ignore"):
        d = ndtri(zr)
    dens = np.exp(-0.5 * d * d) / np.sqrt(2.0 * np.pi)
    c = np.full(codes.size, 1.0 / np.sqrt(np.pi))
    c = np.where(codes == 1, dens[0], c)
    c = np.where(codes == 2, zr[0] * dens[0] + ndtr(-np.sqrt(2.0) * d[0]) / np.sqrt(np.pi), c)
    c = np.where(codes == 3, zr[1] * dens[0] + (1.0 - zr[0]) * dens[1], c)
    return np.sqrt(2.0) * c
