"""EM for Gaussian factor analysis with a block-zero loading pattern.

Model (stacked features, ``p`` rows, ``K`` components)::

    x = A z + e,   z ~ N(0, I_K),   e ~ N(0, Psi),   Psi = diag(psi),

where row ``i`` of ``A`` may be non-zero only on the *free* components of its
modality (the components of the structures containing that modality). EM works
from the sample covariance ``S`` alone.

E-step (:func:`em_estep`, NumPy/BLAS). With ``W = Psi^{-1} A`` and
``G = I + A^T W`` (Woodbury: ``beta = A^T Sigma^{-1} = G^{-1} W^T``, so only
``K x K`` systems are solved, never a ``p x p`` one)::

    Sxz = S beta^T = S W G^{-1}                       (p, K)
    Ezz = I - beta A + beta S beta^T = G^{-1} + G^{-1} W^T S W G^{-1}   (K, K)

M-step (:func:`em_mstep`, Numba; :func:`em_mstep_reference`, NumPy). Row ``i``
of modality ``m`` with free set ``F_m``::

    a_i[F_m] = Sxz[i, F_m] Ezz[F_m, F_m]^{-1},    r_i = S_ii - a_i[F_m] . Sxz[i, F_m]

``psi_i = max(r_i, floor_i)`` (diagonal noise) or, for isotropic noise, one
``sigma_m^2 = max(mean_i r_i, mean_i floor_i)`` per modality. Both are the exact
maximisers of the expected complete-data log-likelihood under the constraints,
so the log-likelihood never decreases.

The compiled functions receive only contiguous float64/int64 arrays and scalars.
Per-modality row ranges and free sets are CSR-style: ``feat_ptr`` (M + 1,)
delimits the rows of each modality; ``free_ptr`` (M + 1,) and ``free_idx`` list
the free component indices of each modality.
"""

import numpy as np
from numba import njit
from scipy.linalg import cho_factor, cho_solve

__all__ = [
    "em_estep",
    "em_mstep",
    "em_mstep_reference",
    "gaussian_loglik",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


def em_estep(S, A, psi):
    """E-step sufficient statistics and the log-likelihood of the current parameters.

    Pure NumPy on purpose: every step is a dense BLAS product or a ``K x K``
    Cholesky solve, where BLAS beats anything a Numba loop would do.

    Parameters
    ----------
    S : ndarray of shape (p, p)
        Sample covariance.
    A : ndarray of shape (p, K)
        Loadings.
    psi : ndarray of shape (p,)
        Positive noise variances.

    Returns
    -------
    Sxz : ndarray of shape (p, K)
        ``S beta^T``, the expected feature-latent cross moment.
    Ezz : ndarray of shape (K, K)
        ``E[z z^T]`` averaged over the sample.
    loglik : float
        Per-sample Gaussian log-likelihood
        ``-(1/2) [p log 2 pi + log det Sigma + tr(Sigma^{-1} S)]`` at ``(A, psi)``.
    """
    p, K = A.shape
    W = A / psi[:, None]
    G = np.eye(K) + A.T @ W
    cf = cho_factor(G, lower=True)
    SW = S @ W  # the O(p^2 K) product: BLAS, not Numba
    Sxz = cho_solve(cf, SW.T).T
    Ginv = cho_solve(cf, np.eye(K))
    WtSxz = W.T @ Sxz  # = W^T S W G^{-1}
    Ezz = Ginv + Ginv @ WtSxz
    Ezz = 0.5 * (Ezz + Ezz.T)
    logdet = 2.0 * np.sum(np.log(np.diag(cf[0]))) + np.sum(np.log(psi))
    # tr(Sigma^{-1} S) = tr(Psi^{-1} S) - tr(G^{-1} W^T S W) by Woodbury
    trace = np.sum(np.diag(S) / psi) - np.trace(WtSxz)
    loglik = -0.5 * (p * _LOG_2PI + logdet + trace)
    return np.ascontiguousarray(Sxz), np.ascontiguousarray(Ezz), float(loglik)


def gaussian_loglik(S, A, psi):
    """Per-sample Gaussian log-likelihood of ``S`` under ``Sigma = A A^T + diag(psi)``.

    Direct dense computation (``p x p`` Cholesky): the independent reference the
    tests hold the Woodbury form of :func:`em_estep` to.
    """
    p = S.shape[0]
    sigma = A @ A.T + np.diag(psi)
    cf = cho_factor(sigma, lower=True)
    logdet = 2.0 * np.sum(np.log(np.diag(cf[0])))
    return float(-0.5 * (p * _LOG_2PI + logdet + np.trace(cho_solve(cf, S))))


@njit(cache=True)
def em_mstep(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic, A, psi):
    """Row-wise closed-form M-step under the block-zero pattern, in place.

    Parameters
    ----------
    Sxz : ndarray of shape (p, K)
    Ezz : ndarray of shape (K, K), symmetric positive definite
    s_diag : ndarray of shape (p,)
        Diagonal of the sample covariance.
    floor : ndarray of shape (p,)
        Positive lower bound of each noise variance.
    feat_ptr : int64 ndarray of shape (M + 1,)
        Rows ``feat_ptr[m]:feat_ptr[m+1]`` belong to modality ``m``.
    free_ptr : int64 ndarray of shape (M + 1,)
    free_idx : int64 ndarray
        ``free_idx[free_ptr[m]:free_ptr[m+1]]`` are the free components of ``m``.
    isotropic : bool
        One noise variance per modality instead of one per row.
    A : ndarray of shape (p, K)
        Output loadings (overwritten; constrained entries set to 0).
    psi : ndarray of shape (p,)
        Output noise variances (overwritten).
    """
    n_mod = feat_ptr.shape[0] - 1
    K = Ezz.shape[0]
    for m in range(n_mod):
        r0 = feat_ptr[m]
        r1 = feat_ptr[m + 1]
        nr = r1 - r0
        f0 = free_ptr[m]
        nf = free_ptr[m + 1] - f0
        for i in range(r0, r1):
            for j in range(K):
                A[i, j] = 0.0
        resid = np.empty(nr)
        if nf > 0:
            E = np.empty((nf, nf))
            X = np.empty((nf, nr))
            for a in range(nf):
                ja = free_idx[f0 + a]
                for b in range(nf):
                    E[a, b] = Ezz[ja, free_idx[f0 + b]]
                for i in range(nr):
                    X[a, i] = Sxz[r0 + i, ja]
            # E symmetric: (X^T E^{-1})^T = E^{-1} X, one solve for all rows of m
            B = np.linalg.solve(E, X)
            for i in range(nr):
                acc = 0.0
                for a in range(nf):
                    v = B[a, i]
                    A[r0 + i, free_idx[f0 + a]] = v
                    acc += v * X[a, i]
                resid[i] = s_diag[r0 + i] - acc
        else:
            for i in range(nr):
                resid[i] = s_diag[r0 + i]
        if isotropic:
            mean_r = 0.0
            mean_f = 0.0
            for i in range(nr):
                mean_r += resid[i]
                mean_f += floor[r0 + i]
            mean_r /= nr
            mean_f /= nr
            v = mean_r if mean_r > mean_f else mean_f
            for i in range(nr):
                psi[r0 + i] = v
        else:
            for i in range(nr):
                r = resid[i]
                f = floor[r0 + i]
                psi[r0 + i] = r if r > f else f


def em_mstep_reference(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic):
    """NumPy statement of :func:`em_mstep`; returns ``(A, psi)`` instead of writing in place."""
    p, K = Sxz.shape
    A = np.zeros((p, K))
    psi = np.empty(p)
    for m in range(len(feat_ptr) - 1):
        rows = slice(feat_ptr[m], feat_ptr[m + 1])
        free = free_idx[free_ptr[m] : free_ptr[m + 1]]
        X = Sxz[rows][:, free]
        if free.size:
            Am = np.linalg.solve(Ezz[np.ix_(free, free)], X.T).T
            A[rows, free] = Am
            resid = s_diag[rows] - np.sum(Am * X, axis=1)
        else:
            resid = s_diag[rows].copy()
        if isotropic:
            psi[rows] = max(resid.mean(), floor[rows].mean())
        else:
            psi[rows] = np.maximum(resid, floor[rows])
    return A, psi
