"""The block group penalty with calibrated weights.

    P(A) = lambda * sum_m sum_j c_{mj} || A_{m,:,j} ||_2

Each (modality ``m``, component ``j``) block is a group. A block's weight
``c_mj`` is set from the gradient norm that noise alone would give it at zero,
so at multiplier ``lambda = 1`` a block outside the pattern enters only if the
data push it harder than noise would; its proximal step is group
soft-thresholding (inside :func:`hclstat.kernels.hcl.group_bcd`).
"""

from __future__ import annotations

import numpy as np

from ..moments.base import require

__all__ = ["BlockGroupPenalty", "pair_noise_levels"]


def pair_noise_levels(datafit, n):
    """Null spectral norm of each cross-covariance block, ``(M, M)``.

    ``(sqrt(tr S_aa ||S_bb||) + sqrt(tr S_bb ||S_aa||)) / sqrt(n)``: the
    expected norm of the cross-covariance of two independent blocks with these
    covariances (the bound :func:`hclstat.lattice.bound_test` uses without
    rows), so signal variance inflates it as it should.
    """
    require(datafit, ["diag", "norm2"], "pair_noise_levels")
    mods = datafit.modalities
    M = len(mods)
    tr = [float(datafit.diag(m).sum()) for m in mods]
    top = [datafit.norm2(m) for m in mods]
    tau = np.zeros((M, M))
    for a in range(M):
        for b in range(M):
            if a != b:
                tau[a, b] = (np.sqrt(tr[a] * top[b]) + np.sqrt(tr[b] * top[a])) / np.sqrt(n)
    return tau


class BlockGroupPenalty:
    """``sum_m sum_j c_mj ||A_{m,:,j}||`` with weights ``c`` of shape (M, K).

    Parameters
    ----------
    weights : ndarray of shape (M, K)
        Non-negative block weights.
    """

    def __init__(self, weights):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise ValueError(f"weights: expected a finite non-negative (M, K) array, got shape {weights.shape}")
        self.weights = weights

    @classmethod
    def calibrated(cls, datafit, A, n):
        """Weights calibrated at loadings ``A`` (stacked, on ``datafit``'s scale).

        Noise level of block ``(a, j)``: ``nu_aj = sum_b tau_ab ||A_bj||``
        (:func:`pair_noise_levels`). Data push when the block is refitted alone:
        ``z_aj = ||sum_b (S_ab - A_a A_b^T + A_aj A_bj^T) A_bj||``. Blocks the
        data push harder than noise are penalised in proportion ``nu / z`` (no
        shrinkage bias for strong blocks), the others at the noise level:
        ``c = 2 nu min(1, nu / z)``.
        """
        require(datafit, ["cross", "diag", "norm2"], "BlockGroupPenalty.calibrated")
        mods = datafit.modalities
        sl = [datafit.slices[m] for m in mods]
        M, K = len(mods), A.shape[1]
        tau = pair_noise_levels(datafit, n)
        col_norms = np.array([[np.linalg.norm(A[sl[b], j]) for j in range(K)] for b in range(M)])
        noise = np.maximum(tau @ col_norms, 1e-12)
        z = np.zeros((M, K))
        for a in range(M):
            push = np.zeros((sl[a].stop - sl[a].start, K))
            for b in range(M):
                if b != a:
                    R = datafit.cross(mods[a], mods[b], A[sl[b]]) - A[sl[a]] @ (A[sl[b]].T @ A[sl[b]])
                    push += R + A[sl[a]] * (col_norms[b] ** 2)[None, :]
            z[a] = np.linalg.norm(push, axis=0)
        return cls(2.0 * noise * np.minimum(1.0, noise / np.maximum(z, 1e-300)))

    def levels(self, lam):
        """Penalty level of every block at multiplier ``lam``, shape (M, K)."""
        return lam * self.weights

    def value(self, A, slices, lam=1.0):
        """``lam * sum_m sum_j c_mj ||A_{m,:,j}||`` (``slices``: feature rows per modality, in order)."""
        return float(sum(lam * np.sum(self.weights[a] * np.linalg.norm(A[s], axis=0)) for a, s in enumerate(slices)))
