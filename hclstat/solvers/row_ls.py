"""Dense solvers: exact row least-squares alternation, and majorise-minimise penalised sweeps.

Both read the whole (whitened) covariance of a dense datafit
(:class:`~hclstat.moments.covariance.CovarianceDatafit`): ``O(p^2 K)`` per
alternation, independent of ``n``. The compiled cores are
:func:`hclstat.kernels.hcl.row_ls_sweep` and
:func:`hclstat.kernels.hcl.penalised_block_step`.
"""

from __future__ import annotations

import numpy as np

from ..kernels.hcl import penalised_block_step, row_ls_sweep
from .base import FitInfo, Solver
from .objective import hcl_objective

__all__ = ["RowLeastSquares", "cross_terms"]

#: smallest share of a feature's variance left to noise (communality bound)
MIN_NOISE_SHARE = 5e-3
#: relative tolerance of the penalised path (it only reads supports off its solutions)
PATH_TOL = 1e-5


def cross_terms(S, A, sl, a):
    """``G = sum_{b != a} A_b^T A_b`` and ``C = sum_{b != a} S_ab A_b`` of modality ``a``."""
    K = A.shape[1]
    G = np.zeros((K, K))
    C = np.zeros((sl[a].stop - sl[a].start, K))
    for b in range(len(sl)):
        if b == a:
            continue
        Ab = A[sl[b]]
        G += Ab.T @ Ab
        C += S[sl[a], sl[b]] @ Ab
    return G, np.ascontiguousarray(C)


class RowLeastSquares(Solver):
    """Alternation of exact row least-squares sweeps (unpenalised fit) and block
    majorise-minimise steps (penalised path) on a dense datafit.

    Parameters
    ----------
    gamma, tol, max_iter : see :class:`~hclstat.solvers.base.Solver`
    max_doublings : int
        Curvature doublings a penalised block step may take to majorise; a step
        that still does not majorise is rejected (the block keeps its value).
    """

    required_operations = ("covariance_matrix", "dense_block", "norm2")

    def __init__(self, *, gamma=1.0, tol=1e-7, max_iter=2000, max_doublings=30):
        super().__init__(gamma=gamma, tol=tol, max_iter=max_iter)
        self.max_doublings = int(max_doublings)

    def objective(self, datafit, A, support, lam=0.0, c=None):
        return hcl_objective(datafit.covariance_matrix(), A, list(datafit.slices.values()), support,
                             gamma=self.gamma, lam=lam, c=c)

    def fit(self, datafit, A, support):
        """Alternate exact row least-squares sweeps over modalities.

        After each sweep an extrapolation ``A + beta (A - A_prev)`` is tried and
        kept only if it lowers the objective (so the path stays monotone);
        ``beta`` grows after a success and halves after a failure. This is the
        line-search acceleration of alternating least squares; on ill-conditioned
        real data it cuts the number of sweeps several-fold.

        Returns
        -------
        A : ndarray of shape (p, K)
        info : FitInfo
        """
        self.validate(datafit)
        Sw = datafit.covariance_matrix()
        sl = list(datafit.slices.values())
        M = len(sl)
        A = np.ascontiguousarray(A)
        obj = lambda X: hcl_objective(Sw, X, sl, support, gamma=self.gamma)  # noqa: E731
        path = [obj(A)]
        # relative tolerance, floored at round-off of the data's own scale
        floor = 1e-13 * float(np.sum(Sw * Sw))
        ridge = 1e-12 * float(np.mean(np.diag(Sw)))
        frees = [np.flatnonzero(support[a]).astype(np.int64) for a in range(M)]
        within = [datafit.dense_block(m) for m in datafit.modalities]
        # communality bound ||a_i||^2 <= (1 - eps) S_ii: the noise keeps at least
        # a share eps of each variance (no Heywood case); start feasible
        caps = [np.ascontiguousarray((1.0 - MIN_NOISE_SHARE) * np.diag(w)) for w in within]
        for a in range(M):
            Aa = A[sl[a]]
            over = np.sum(Aa * Aa, axis=1) > caps[a]
            if over.any():
                Aa[over] *= np.sqrt(caps[a][over] / np.sum(Aa[over] ** 2, axis=1))[:, None]
        converged = False
        beta = 0.5
        it = 0
        for it in range(1, self.max_iter + 1):
            A_prev = A.copy()
            for a in range(M):
                if frees[a].size == 0:
                    continue
                G, C = cross_terms(Sw, A, sl, a)
                Aa = np.ascontiguousarray(A[sl[a]])
                row_ls_sweep(Aa, within[a], C, G, frees[a], self.gamma, ridge, caps[a])
                A[sl[a]] = Aa
            cur = obj(A)
            if it > 1:
                ext = A + beta * (A - A_prev)
                val = obj(ext)
                if val < cur:
                    A, cur = np.ascontiguousarray(ext), val
                    beta = min(2.0 * beta, 8.0)
                else:
                    beta = max(0.5 * beta, 0.05)
            path.append(cur)
            if abs(path[-2] - path[-1]) <= self.tol * max(abs(path[-1]), floor):
                converged = True
                break
        return A, FitInfo(it, converged, path)

    def penalised(self, datafit, A, free, lamv, n_outer=50):
        """Block majorise-minimise sweeps on the penalised objective (monotone).

        ``lamv`` (M x K) is the penalty level of every block. Curvature estimates
        of the within term, one per modality: each step starts from a quarter of
        the last accepted value and doubles until the quadratic model majorises
        (backtracking), capped by the global bound
        ``2 gamma (3 ||A_a||_2^2 + ||S_aa||_2)`` (with ``||A_a||_F^2 >= ||A_a||_2^2``).
        A step whose model still does not majorise after ``max_doublings`` is
        rejected, so the objective cannot increase.

        Returns
        -------
        A : ndarray of shape (p, K)
        objective : float
            Penalised objective at ``A``.
        n_rejected : int
            Block steps rejected.
        """
        self.validate(datafit)
        Sw = datafit.covariance_matrix()
        sl = list(datafit.slices.values())
        M = len(sl)
        g = self.gamma
        A = np.array(A, dtype=np.float64, order="C")
        lam, c = 1.0, lamv
        prev = hcl_objective(Sw, A, sl, free, gamma=g, lam=lam, c=c)
        cur = prev
        snorm = [datafit.norm2(m) for m in datafit.modalities]
        within = [datafit.dense_block(m) for m in datafit.modalities]
        frees = [np.flatnonzero(free[a]).astype(np.int64) for a in range(M)]
        lamvs = [np.ascontiguousarray(lamv[a], dtype=np.float64) for a in range(M)]
        Ls = [None] * M
        rejected = 0
        for _ in range(n_outer):
            swept = 0
            for a in range(M):
                Aa = np.ascontiguousarray(A[sl[a]])
                G, C = cross_terms(Sw, A, sl, a)
                bound = 2.0 * g * (3.0 * float(np.einsum("ij,ij->", Aa, Aa)) + snorm[a]) + 1e-12
                start = bound if Ls[a] is None else 0.25 * Ls[a]
                new, L, majorised = penalised_block_step(Aa, within[a], C, G, lamvs[a], frees[a], g, start, bound,
                                                         self.max_doublings)
                if majorised:
                    A[sl[a]] = new
                    Ls[a] = L
                else:  # keep the block; start the next step from the global bound
                    swept += 1
                    Ls[a] = 4.0 * bound
            rejected += swept
            cur = hcl_objective(Sw, A, sl, free, gamma=g, lam=lam, c=c)
            if not swept and prev - cur <= max(self.tol, PATH_TOL) * max(abs(cur), 1e-300):
                break
            prev = cur
        return A, cur, rejected
