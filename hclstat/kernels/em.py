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

Driver (:func:`run_em`, Python). Plain EM, or SQUAREM (Varadhan & Roland,
2008; :func:`squarem_point`): two EM steps, an extrapolation along them, one
stabilising EM step, kept only if it is at least as likely as the first EM step
(else the double EM step is kept), so accepted iterates never lower the
log-likelihood. The stopping rule is the same for both: one EM step from the
current iterate moves the parameters by at most ``tol`` (relative) and the
log-likelihood by at most ``tol`` times its size.

The compiled functions receive only contiguous float64/int64 arrays and scalars.
Per-modality row ranges and free sets are CSR-style: ``feat_ptr`` (M + 1,)
delimits the rows of each modality; ``free_ptr`` (M + 1,) and ``free_idx`` list
the free component indices of each modality.
"""

import numpy as np
from numba import njit
from scipy.linalg import cho_factor, cho_solve

__all__ = [
    "EMResult",
    "em_estep",
    "em_mstep",
    "em_mstep_reference",
    "gaussian_loglik",
    "relative_change",
    "run_em",
    "squarem_point",
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


# --------------------------------------------------------------- the EM driver
#: SQUAREM's step-length bound starts at 1 (a plain double EM step) and is
#: multiplied or divided by this factor as extrapolations succeed or fail
_STEP_FACTOR = 4.0


class EMResult:
    """Outcome of :func:`run_em`.

    Attributes
    ----------
    A : ndarray of shape (p, K)
    psi : ndarray of shape (p,)
    loglik_path : list of float
        Per-sample log-likelihood at the start and after each accepted iteration.
    n_iter : int
        EM map evaluations (M-steps) run; never more than ``max_iter``.
    n_extrapolated : int
        Accepted SQUAREM extrapolations (0 for plain EM).
    converged : bool
    change : float
        Relative parameter change of the last EM step taken from an accepted iterate.
    """

    __slots__ = ("A", "psi", "loglik_path", "n_iter", "n_extrapolated", "converged", "change")

    def __init__(self, A, psi, loglik_path, n_iter, n_extrapolated, converged, change):
        self.A, self.psi, self.loglik_path = A, psi, loglik_path
        self.n_iter, self.n_extrapolated = n_iter, n_extrapolated
        self.converged, self.change = converged, change


def relative_change(A, A_old, psi, psi_old):
    """Largest loading change relative to the largest loading, or noise change relative to itself."""
    scale = np.max(np.abs(A)) if A.size else 0.0
    dA = np.max(np.abs(A - A_old)) / scale if scale > 0 else 0.0
    dpsi = np.max(np.abs(psi - psi_old) / psi)
    return float(max(dA, dpsi))


def squarem_point(A0, psi0, A1, psi1, A2, psi2, step_max, psi_floor):
    """SQUAREM extrapolation (scheme S3 of Varadhan & Roland, 2008).

    With ``r = theta1 - theta0`` and ``v = theta2 - 2 theta1 + theta0`` for two
    successive EM maps ``theta1 = F(theta0)``, ``theta2 = F(theta1)``, the point
    is ``theta0 + 2 alpha r + alpha^2 v`` with ``alpha = ||r|| / ||v||`` clipped
    to ``[1, step_max]`` (``alpha = 1`` gives ``theta2`` exactly). Entries the
    pattern fixes at zero stay zero (they are zero in ``r`` and ``v``); noise
    variances are projected onto ``psi >= psi_floor``.

    Returns
    -------
    A, psi : ndarray
        The extrapolated point.
    alpha : float
        The step length used.
    """
    rA, rpsi = A1 - A0, psi1 - psi0
    vA, vpsi = A2 - 2.0 * A1 + A0, psi2 - 2.0 * psi1 + psi0
    r2 = float(np.sum(rA * rA) + np.sum(rpsi * rpsi))
    v2 = float(np.sum(vA * vA) + np.sum(vpsi * vpsi))
    alpha = np.sqrt(r2 / v2) if v2 > 0 else step_max
    alpha = float(min(max(alpha, 1.0), step_max))
    A = A0 + 2.0 * alpha * rA + alpha * alpha * vA
    psi = np.maximum(psi0 + 2.0 * alpha * rpsi + alpha * alpha * vpsi, psi_floor)
    return np.ascontiguousarray(A), np.ascontiguousarray(psi), alpha


def run_em(S, A, psi, floor, feat_ptr, free_ptr, free_idx, isotropic, *, max_iter, tol,
           accelerate=True, callback=None):
    """Maximise the Gaussian log-likelihood of ``S`` under the pattern by (accelerated) EM.

    Each iteration starts from the accepted iterate ``theta0`` and takes one EM
    step ``theta1 = F(theta0)``. **Convergence**: stop, returning ``theta1``,
    when that step changes the parameters by at most ``tol``
    (:func:`relative_change`) *and* the log-likelihood by at most
    ``tol * |loglik|``. Plain EM (``accelerate=False``) accepts ``theta1``.
    SQUAREM (``accelerate=True``) takes a second step ``theta2 = F(theta1)``,
    extrapolates (:func:`squarem_point`) and applies one stabilising EM step to
    the extrapolated point; the result is accepted only if its log-likelihood
    is at least that of ``theta1``, otherwise ``theta2`` is (the plain EM
    fall-back, a larger step bound after a success, a smaller one after a
    failure). Accepted iterates therefore never lower the log-likelihood. When
    the budget of ``max_iter`` M-steps runs out the last EM iterate is accepted.

    Parameters
    ----------
    S : ndarray of shape (p, p)
    A : ndarray of shape (p, K)
        Start, zero outside the pattern.
    psi : ndarray of shape (p,)
        Start, ``>= floor``.
    floor, feat_ptr, free_ptr, free_idx, isotropic
        As in :func:`em_mstep`.
    max_iter : int
        Budget of M-steps (EM map evaluations).
    tol : float
    accelerate : bool
    callback : callable, optional
        ``callback(n_iter, loglik, change)`` after every accepted iteration.

    Returns
    -------
    EMResult
    """
    s_diag = np.ascontiguousarray(np.diag(S))
    psi_floor = floor.copy()
    if isotropic:  # the projection must keep one variance per modality, as the M-step does
        for m in range(len(feat_ptr) - 1):
            rows = slice(feat_ptr[m], feat_ptr[m + 1])
            psi_floor[rows] = floor[rows].mean()

    def em_map(stats):
        A_new, psi_new = np.empty_like(A), np.empty_like(psi)
        em_mstep(stats[0], stats[1], s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic, A_new, psi_new)
        return A_new, psi_new

    stats = em_estep(S, A, psi)
    path = [stats[2]]
    n_iter = n_extrapolated = 0
    converged = False
    change = np.inf
    step_max = 1.0
    while n_iter < max_iter:
        A1, psi1 = em_map(stats)
        n_iter += 1
        stats1 = em_estep(S, A1, psi1)
        change = relative_change(A1, A, psi1, psi)
        converged = change <= tol and abs(stats1[2] - stats[2]) <= tol * abs(stats1[2])
        if converged or not accelerate or n_iter == max_iter:
            A, psi, stats = A1, psi1, stats1
        else:
            A2, psi2 = em_map(stats1)
            n_iter += 1
            Ap, psip, alpha = squarem_point(A, psi, A1, psi1, A2, psi2, step_max, psi_floor)
            accepted = False
            if n_iter < max_iter:
                try:
                    stats_p = em_estep(S, Ap, psip)
                    if np.isfinite(stats_p[2]):
                        An, psin = em_map(stats_p)
                        n_iter += 1
                        stats_n = em_estep(S, An, psin)
                        accepted = np.isfinite(stats_n[2]) and stats_n[2] >= stats1[2]
                except np.linalg.LinAlgError:
                    # a wild extrapolation can lose positive definiteness to round-off: reject it
                    accepted = False
            if accepted:
                A, psi, stats = An, psin, stats_n
                n_extrapolated += 1
                if alpha == step_max:
                    step_max *= _STEP_FACTOR
            else:
                A, psi, stats = A2, psi2, em_estep(S, A2, psi2)
                if alpha == step_max:
                    step_max = max(1.0, step_max / _STEP_FACTOR)
        path.append(stats[2])
        if callback is not None:
            callback(n_iter, stats[2], change)
        if converged:
            break
    return EMResult(A, psi, path, n_iter, n_extrapolated, converged, change)
