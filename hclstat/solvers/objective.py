"""The HCL objective on a dense (whitened) covariance.

    F(A) = sum_{m<m'} w_{mm'} || S_{mm'} - A_m A_m'^T ||_F^2
           + gamma/2 * sum_m || offdiag(S_mm - A_m A_m^T) ||_F^2
           + lambda * sum_m sum_j c_{mj} || A_{m,:,j} ||_2

(``A_m A_m'^T`` sums over the components the two modalities share: the others
are zero blocks of the stacked ``A``.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["hcl_objective"]

#: a trace-form block residual below this fraction of ||S_block||_F^2 has lost half its
#: digits to cancellation (an exact fit gives negative round-off): recompute it directly
_CANCEL = 1e-8


def hcl_objective(S, A, slices, support, *, gamma=1.0, weights=None, lam=0.0, c=None):
    """The HCL objective ``F(A)`` (see the module docstring).

    Parameters
    ----------
    S : ndarray of shape (p, p)
        (Whitened) sample covariance of the stacked modalities.
    A : ndarray of shape (p, K)
        Stacked loadings; block ``(m, j)`` must be zero where ``support[m, j]`` is 0.
    slices : list of slice
        Feature rows of each modality, in order.
    support : ndarray of shape (M, K) of bool
    weights : ndarray of shape (M, M), optional
        Pair weights ``w_{mm'}`` (default 1).
    lam : float
        Penalty level; ``c`` (M x K) are the per-block penalty weights.
    """
    M = len(slices)
    val = 0.0
    for a in range(M):
        Aa = A[slices[a]]
        Ga = Aa.T @ Aa
        for b in range(a + 1, M):
            w = 1.0 if weights is None else weights[a, b]
            Sab = S[slices[a], slices[b]]
            Ab = A[slices[b]]
            # ||S - Aa Ab^T||^2 = ||S||^2 - 2 tr(Aa^T S Ab) + tr(Ga Gb), without a p_a x p_b residual
            s2 = float(np.einsum("ij,ij->", Sab, Sab))
            v = s2 - 2.0 * float(np.einsum("ij,ij->", Aa, Sab @ Ab)) + float(np.einsum("ij,ji->", Ga, Ab.T @ Ab))
            if v < _CANCEL * s2:  # near an exact fit the expansion is all round-off: use the residual
                R = Sab - Aa @ Ab.T
                v = float(np.einsum("ij,ij->", R, R))
            val += w * v
        Saa = S[slices[a], slices[a]]
        s2 = float(np.einsum("ij,ij->", Saa, Saa))
        full = s2 - 2.0 * float(np.einsum("ij,ij->", Aa, Saa @ Aa)) + float(np.einsum("ij,ij->", Ga, Ga))
        diag = np.diag(Saa) - np.einsum("ij,ij->i", Aa, Aa)
        v = full - float(diag @ diag)
        if v < _CANCEL * s2:
            R = Saa - Aa @ Aa.T
            np.fill_diagonal(R, 0.0)
            v = float(np.einsum("ij,ij->", R, R))
        val += 0.5 * gamma * v
        if lam:
            val += lam * float(np.sum(c[a] * np.linalg.norm(Aa, axis=0)))
    return val
