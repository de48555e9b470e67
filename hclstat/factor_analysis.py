"""The factor-analysis noise fit: one implementation for every caller.

``fa_noise(S, r)`` is the diagonal noise ``Psi`` of the rank-``r`` Gaussian
factor-analysis fit of a covariance block ``S`` (the maximum-likelihood
discrepancy, minimised over ``Psi`` as R's ``factanal`` does). The specific-rank
tests, the HCL initialiser and the population identification ask for the same
``(block, rank)`` fit several times, so recent fits are memoised by content;
the memo is guarded by a lock (estimators may run in threads).
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict

import numpy as np

from .exceptions import ConvergenceWarning
from .utils import _LANCZOS_MIN_DIM, top_eigh

__all__ = ["NOISE_FLOOR", "fa_noise", "fa_noise_fit"]

#: lower bound of every fitted noise variance, relative to its column's variance
NOISE_FLOOR = 1e-4

_MEMO = OrderedDict()
_MEMO_SIZE = 64
_MEMO_LOCK = threading.Lock()


def fa_noise(S, r):
    """Diagonal noise of the rank-``r`` factor-analysis fit of ``S`` (memoised).

    Parameters
    ----------
    S : ndarray of shape (p, p)
        A covariance block.
    r : int
        Number of factors.

    Returns
    -------
    psi : ndarray of shape (p,)
    """
    S = np.ascontiguousarray(S, dtype=np.float64)
    key = (hashlib.blake2b(S.view(np.uint8), digest_size=16).digest(), S.shape, int(r))
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None:
            _MEMO.move_to_end(key)
            return hit.copy()
    psi = fa_noise_fit(S, r)
    with _MEMO_LOCK:
        _MEMO[key] = psi.copy()
        if len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return psi


#: largest projected-gradient entry (relative to the discrepancy, floored at 1) of a
#: stationary point; L-BFGS-B's line search stops "abnormally" at round-off level
#: near the optimum (measured: projected gradients 3e-10 to 5e-8 there)
_STATIONARY_TOL = 1e-6


def _stationary(res, bounds):
    """Whether the L-BFGS-B iterate satisfies the first-order conditions of its box."""
    lo, hi = np.array(bounds).T
    g, x = np.asarray(res.jac, dtype=float), np.asarray(res.x, dtype=float)
    free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
    pg = np.abs(g[free]).max(initial=0.0)
    return bool(np.isfinite(res.fun) and pg <= _STATIONARY_TOL * max(1.0, abs(float(res.fun))))


def fa_noise_fit(S, r):
    """Diagonal noise of the rank-``r`` Gaussian factor-analysis fit of ``S``.

    Minimises the profile discrepancy over ``psi`` with L-BFGS-B: with
    ``theta_j`` the eigenvalues of ``Psi^{-1/2} S Psi^{-1/2}``,
    ``F(psi) = sum_{j > r} (theta_j - log theta_j)``, whose gradient is
    ``diag(L L^T + Psi - S) / psi^2`` for the profiled loadings ``L``. A fit the
    optimiser does not certify (``res.success`` false) and that is not stationary
    either (see :func:`_stationary`) raises a
    :class:`~hclstat.exceptions.ConvergenceWarning` that says why.
    """
    from scipy.optimize import minimize

    d = np.diag(S).copy()
    p = d.size
    if r == 0:
        return d
    if r >= p:
        return 1e-3 * d

    # F needs the tail of the spectrum of M = Psi^{-1/2} S Psi^{-1/2}. Small blocks take
    # it from a full eigendecomposition; large ones from the top r pairs alone, as
    # F = tr(M) - log det(M) - sum_{j <= r} (theta_j - log theta_j)
    #   = sum(d / psi) + sum(log psi) - log det S - sum_{j <= r} (...)
    # (log det S is a constant and is dropped)
    partial = p >= _LANCZOS_MIN_DIM and 4 * r < p

    def fun(logpsi):
        psi = np.exp(logpsi)
        q = 1.0 / np.sqrt(psi)
        Mq = S * q[:, None] * q[None, :]
        if partial:
            w, V = top_eigh(Mq, r)
            head = np.clip(w, 1e-300, None)
            value = np.sum(d / psi) + np.sum(logpsi) - np.sum(head - np.log(head))
        else:
            w, V = np.linalg.eigh(Mq)
            w, V = w[::-1], V[:, ::-1]
            tail = np.clip(w[r:], 1e-300, None)
            value = np.sum(tail - np.log(tail))
            w, V = w[:r], V[:, :r]
        L = V * np.sqrt(np.clip(w - 1.0, 0.0, None))
        load = L * np.sqrt(psi)[:, None]
        g = np.sum(load**2, axis=1) + psi - d
        return float(value), g / psi  # chain rule for log psi

    w0, V0 = top_eigh(S, r)
    common = np.sum(V0**2 * np.clip(w0, 0.0, None), axis=1)
    start = np.log(np.clip(d - common, 0.05 * d, None))
    bounds = [(np.log(NOISE_FLOOR * di), np.log(di)) for di in d]
    res = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    if not res.success and not _stationary(res, bounds):
        warnings.warn(
            f"factor-analysis noise fit of rank {r} on a {p}-column block did not converge "
            f"({res.message}); its noise variances, and the ranks tested against them, may be off",
            ConvergenceWarning,
            stacklevel=3,
        )
    return np.exp(res.x)
