"""The spectral (Möbius) initialiser, aligned with structures, on any datafit."""

from __future__ import annotations

import numpy as np

from ..moments.base import require

__all__ = ["spectral_initialiser"]

#: the datafit operations the initialiser calls
REQUIRED = ("cross", "top_left_singular", "top_eigh", "fa_noise")


def reduced_scales(C, members, k, n_iter=50):
    """Coefficients ``G_m`` (k x k) with ``C[m, m'] ≈ G_m G_m'^T``: an SVD start
    from the first pair, then alternating least squares over the members."""
    i0, j0 = members[0], members[1]
    U, s, Vt = np.linalg.svd(C[i0, j0])
    G = {i0: U * np.sqrt(s), j0: Vt.T * np.sqrt(s)}
    for i in members[2:]:
        G[i] = np.linalg.lstsq(G[i0], C[i0, i], rcond=None)[0].T
    for _ in range(n_iter if len(members) > 2 else 0):
        change = 0.0
        for i in members:
            Gs = np.vstack([G[j] for j in members if j != i])
            Cs = np.hstack([C[i, j] for j in members if j != i])
            new = np.linalg.lstsq(Gs, Cs.T, rcond=None)[0].T
            change = max(change, float(np.linalg.norm(new - G[i])) / max(float(np.linalg.norm(new)), 1e-300))
            G[i] = new
        if change <= 1e-8:  # a starting value: more digits would not change the fit
            break
    return G


def spectral_initialiser(datafit, h):
    """Starting loadings (stacked, shape (p, K)) for hierarchy ``h`` on a (whitened) datafit.

    Structures are taken from the top of the lattice down. For structure ``S``
    and member ``m`` the directions shared with every other member are the top
    eigenvectors of the sum of projectors onto the leading left singular
    subspaces of the residual cross-covariances ``R_{mm'} = S_{mm'} - A_m A_m'^T``,
    ``m' in S`` (``top_left_singular``); their scale comes from a small
    alternating least-squares fit of the reduced cross-covariances
    ``Q_m^T R_{mm'} Q_m'`` (``cross``). Specific blocks are the top eigenpairs
    of the residual within-modality covariance less a factor-analysis noise
    (``fa_noise``, ``top_eigh``).
    """
    require(datafit, REQUIRED, "the spectral initialiser")
    mods = h.modalities
    sl = [datafit.slices[m] for m in mods]
    cs = h.component_slices()
    A = np.zeros((datafit.n_features, h.n_components))
    for s in h.structures:
        k = h.rank(s)
        members = [i for i, m in enumerate(mods) if m in s]
        if len(members) == 1:
            continue
        bases = {}
        for i in members:
            Us = []
            for j in members:
                if j == i:
                    continue
                # rank of the remaining pair signal: structures not yet fitted containing both
                r = sum(h.rank(t) for t in h.structures if mods[i] in t and mods[j] in t and not np.any(A[sl[i], cs[t]]))
                Us.append(datafit.top_left_singular(mods[i], mods[j], max(r, k), A[sl[i]], A[sl[j]]))
            # top eigenvectors of the sum of projectors sum_j U_j U_j^T: the left
            # singular vectors of [U_1 U_2 ...] (no p_m x p_m matrix needed)
            bases[i] = np.linalg.svd(np.hstack(Us), full_matrices=False)[0][:, :k]
        reduced = {(i, j): bases[i].T @ (datafit.cross(mods[i], mods[j], bases[j]) - A[sl[i]] @ (A[sl[j]].T @ bases[j]))
                   for i in members for j in members if i != j}
        G = reduced_scales(reduced, members, k)
        for i in members:
            A[sl[i], cs[s]] = bases[i] @ G[i]
    for a, m in enumerate(mods):
        spec = frozenset([m])
        if h.rank(spec) == 0:
            continue
        psi = datafit.fa_noise(m, h.modality_rank(m))
        w, V = datafit.top_eigh(m, h.rank(spec), shift=psi, low_rank=A[sl[a]])
        A[sl[a], cs[spec]] = V * np.sqrt(np.clip(w, 1e-3, None))
    return A
