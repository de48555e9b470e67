"""Vectorised multivariate normal CDFs of correlation matrices (d = 2, 3, 4).

* :func:`bvn_cdf` — ``Phi_2(h, k; rho)`` from Owen's T function (exact to double
  precision up to the accuracy of :func:`scipy.special.owens_t`), broadcast over arrays:

      Phi_2(h, k; rho) = (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta,
      a_h = (k - rho h) / (h sqrt(1 - rho^2)),  a_k = (h - rho k) / (k sqrt(1 - rho^2)),

  with ``beta = 1/2`` when ``h k < 0`` (or ``h k = 0`` and ``h + k < 0``), else 0.
* :func:`mvn_cdf` — ``P(X <= u)`` for ``X ~ N(0, R)``, d = 3, 4, batched over
  ``(u, R)``, by Plackett's identity along the path ``R(t)`` that scales the
  first row and column of ``R`` by ``t`` (Genz 2004 for d = 3):

      Phi_d(h; R) = Phi(h_0) Phi_{d-1}(h_1:; R_1:) + int_0^1 sum_j r_0j phi_2(h_0, h_j; t r_0j)
                    Phi_{d-2}(rest | x_0 = h_0, x_j = h_j; R(t)) dt,

  Gauss-Legendre in ``w`` with ``t = 1 - (1 - w)^2``; the innermost ``Phi_{d-2}`` is
  ``Phi`` or the exact :func:`bvn_cdf`, and ``Phi_3`` of the base term recurses.
  ``R(t)`` is positive definite for ``t < 1`` when ``R_1:`` is, so the coordinate
  put first is the one leaving the best-conditioned ``R_1:``; a singular ``R``
  only matters at ``t = 1``, where the substitution tames it. Measured (48 nodes):
  agreement with adaptive quadrature to ~1e-15 on random well-conditioned
  matrices and to below 1e-8 on near-singular ones (smallest eigenvalue ~1e-7).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, owens_t

__all__ = ["bvn_cdf", "mvn_cdf"]

#: |limits| beyond which Phi is 0 or 1 in double precision (Phi(-37.5) ~ 5e-308)
_BIG = 37.5
#: Gauss-Legendre nodes per conditioning coordinate, by dimension
_NODES = {3: 48, 4: 48}


def bvn_cdf(h, k, rho):
    """Bivariate standard normal CDF ``P(X <= h, Y <= k)`` with correlation ``rho``.

    Parameters
    ----------
    h, k, rho : array_like
        Broadcast together; ``h`` and ``k`` may be infinite, ``|rho| <= 1``.

    Returns
    -------
    ndarray
        ``Phi_2(h, k; rho)`` of the broadcast shape (NaN where an input is NaN).
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (h, k, rho)))
    if np.any(np.abs(rho) > 1.0 + 1e-12):
        raise ValueError(f"bvn_cdf: expected correlations in [-1, 1], got max |rho| = {np.nanmax(np.abs(rho)):g}")
    rho = np.clip(rho, -1.0, 1.0)
    h = np.clip(h, -_BIG, _BIG)
    k = np.clip(k, -_BIG, _BIG)
    s = np.sqrt((1.0 - rho) * (1.0 + rho))
    with np.errstate(divide="ignore", invalid="ignore"):
        a_h = (k - rho * h) / (h * s)
        a_k = (h - rho * k) / (k * s)
    # h = 0 (k != 0): the ratio is sign(k) * inf, not NaN
    a_h = np.where(h == 0.0, np.copysign(np.inf, k), a_h)
    a_k = np.where(k == 0.0, np.copysign(np.inf, h), a_k)
    hk = h * k
    beta = np.where((hk < 0.0) | ((hk == 0.0) & (h + k < 0.0)), 0.5, 0.0)
    out = 0.5 * (ndtr(h) + ndtr(k)) - owens_t(h, a_h) - owens_t(k, a_k) - beta
    origin = (h == 0.0) & (k == 0.0)
    out = np.where(origin, 0.25 + np.arcsin(rho) / (2.0 * np.pi), out)
    out = np.where(rho == 1.0, ndtr(np.minimum(h, k)), out)
    out = np.where(rho == -1.0, np.maximum(ndtr(h) - ndtr(-k), 0.0), out)
    out = np.array(np.clip(out, 0.0, 1.0))
    out[np.isnan(h) | np.isnan(k) | np.isnan(rho)] = np.nan
    return out[()] if out.ndim == 0 else out


def _legendre(n):
    """Nodes and weights of ``n``-point Gauss-Legendre on (0, 1)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def _check(upper, corr):
    """Validated float copies of a batch of limits ``(m, d)`` and correlations ``(m, d, d)``."""
    upper = np.asarray(upper, dtype=float)
    corr = np.asarray(corr, dtype=float)
    if corr.ndim < 2 or corr.shape[-1] != corr.shape[-2]:
        raise ValueError(f"mvn_cdf: expected corr of shape (..., d, d), got {corr.shape}")
    d = corr.shape[-1]
    if upper.shape[-1:] != (d,):
        raise ValueError(f"mvn_cdf: expected upper of shape (..., {d}) to match corr, got {upper.shape}")
    if d not in (2, 3, 4):
        raise ValueError(f"mvn_cdf: expected dimension d in (2, 3, 4), got {d}")
    shape = np.broadcast_shapes(upper.shape[:-1], corr.shape[:-2])
    upper = np.broadcast_to(upper, shape + (d,)).reshape(-1, d)
    corr = np.broadcast_to(corr, shape + (d, d)).reshape(-1, d, d)
    diag = np.diagonal(corr, axis1=1, axis2=2)
    if not np.all(np.isnan(diag) | (np.abs(diag - 1.0) <= 1e-12)):
        raise ValueError("mvn_cdf: expected correlation matrices (unit diagonal)")
    if not np.all(np.isnan(corr) | (np.abs(corr - np.swapaxes(corr, 1, 2)) <= 1e-12)):
        raise ValueError("mvn_cdf: expected symmetric correlation matrices")
    return upper, corr, shape


def _reorder(upper, corr):
    """Put first the coordinate whose removal leaves the best-conditioned remainder."""
    m, d = upper.shape
    others = np.array([[a for a in range(d) if a != i] for i in range(d)])
    lam = np.stack([np.linalg.eigvalsh(corr[:, o][:, :, o])[:, 0] for o in others], axis=1)
    first = np.argmax(lam, axis=1)
    order = np.concatenate([first[:, None], others[first]], axis=1)
    rows = np.arange(m)[:, None]
    return upper[rows, order], corr[rows[:, :, None], order[:, :, None], order[:, None, :]]


def _plackett(h, r):
    """``Phi_d(h; R)`` for d = 3, 4 along ``R(t)`` (row/column 0 scaled by t) from t = 0 to 1.

    ``dPhi/dt = sum_j r_0j phi_2(h_0, h_j; t r_0j) Phi_{d-2}(rest | x_0 = h_0, x_j = h_j)``
    (Plackett's identity); ``t = 1 - (1 - w)^2`` cancels the ``1/sqrt(1 - t)`` of a
    correlation tending to +/-1 at t = 1.
    """
    m, d = h.shape
    base = ndtr(h[:, 0]) * (bvn_cdf(h[:, 1], h[:, 2], r[:, 1, 2]) if d == 3 else _plackett(h[:, 1:], r[:, 1:, 1:]))
    w, wt = _legendre(_NODES[d])
    t = 1.0 - (1.0 - w) ** 2
    weight = wt * 2.0 * (1.0 - w)
    h0 = h[:, :1]
    total = np.zeros(m)
    for j in range(1, d):
        rest = [a for a in range(1, d) if a != j]
        hj = h[:, j:j + 1]
        rho = t[None, :] * r[:, 0, j][:, None]  # (m, n)
        one = np.maximum((1.0 - rho) * (1.0 + rho), 1e-300)
        dens = np.exp(-(h0 * h0 - 2.0 * rho * h0 * hj + hj * hj) / (2.0 * one)) / (2.0 * np.pi * np.sqrt(one))
        # regression of the rest on (x_0, x_j) under R(t): cross-covariances (t r_0k, r_jk)
        c0 = t[None, :, None] * r[:, 0, rest][:, None, :]  # (m, n, |rest|)
        cj = np.broadcast_to(r[:, j, rest][:, None, :], c0.shape)
        b0 = (c0 - rho[:, :, None] * cj) / one[:, :, None]
        bj = (cj - rho[:, :, None] * c0) / one[:, :, None]
        mean = b0 * h0[:, :, None] + bj * hj[:, :, None]
        var = 1.0 - b0 * c0 - bj * cj
        sd = np.sqrt(np.maximum(var, 1e-300))
        with np.errstate(over="ignore"):
            lim = np.clip((h[:, rest][:, None, :] - mean) / sd, -_BIG, _BIG)
        if d == 3:
            cond = ndtr(lim[:, :, 0])
        else:
            cov = r[:, rest[0], rest[1]][:, None] - b0[:, :, 0] * c0[:, :, 1] - bj[:, :, 0] * cj[:, :, 1]
            cond = bvn_cdf(lim[:, :, 0], lim[:, :, 1], np.clip(cov / (sd[:, :, 0] * sd[:, :, 1]), -1.0, 1.0))
        total += r[:, 0, j] * ((dens * cond) @ weight)
    return base + total


def mvn_cdf(upper, corr):
    """Multivariate standard normal CDF ``P(X <= upper)``, ``X ~ N(0, corr)``, for d = 2, 3, 4.

    Parameters
    ----------
    upper : array_like of shape (..., d)
        Upper limits (may be infinite).
    corr : array_like of shape (..., d, d)
        Correlation matrices (unit diagonal); the batch shapes of ``upper`` and
        ``corr`` broadcast. Positive definite, or singular with some coordinate
        whose removal leaves a positive definite matrix (rank d - 1); a matrix of
        rank d - 2 or less is outside the method (inaccurate).

    Returns
    -------
    ndarray of the broadcast batch shape
        The probabilities; absolute error below about 1e-8 for d = 3 and 4
        (measured against Genz's algorithm, see ``tests/test_mvn.py``).
    """
    upper, corr, shape = _check(upper, corr)
    d = corr.shape[-1]
    if d == 2:
        out = bvn_cdf(upper[:, 0], upper[:, 1], corr[:, 0, 1])
    elif len(upper) == 0:
        out = np.empty(0)
    else:
        bad = np.isnan(upper).any(axis=1) | np.isnan(corr).any(axis=(1, 2))
        upper = np.where(bad[:, None], 0.0, upper)
        corr = np.where(bad[:, None, None], np.eye(d), corr)
        upper, corr = _reorder(upper, corr)
        out = _plackett(np.clip(upper, -_BIG, _BIG), corr)
        out = np.clip(out, 0.0, 1.0)
        out[bad] = np.nan
    return np.asarray(out).reshape(shape)[()]
