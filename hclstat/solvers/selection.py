"""Supports: noise variances, the Gaussian BIC, readable patterns, merging components."""

from __future__ import annotations

import numpy as np

from ..hierarchy import Hierarchy

__all__ = ["describe_support", "gaussian_bic", "hierarchy_from_support", "merge_components",
           "noise_variances", "support_key", "support_of"]

#: smallest noise variance, as a share of the feature's variance
NOISE_FLOOR = 1e-6


def noise_variances(datafit, A, noise_model):
    """``Psi = diag(S - A A^T)``, floored at ``NOISE_FLOOR diag(S)``, stacked (p,);
    averaged within each modality for the isotropic model."""
    d = datafit.stacked_diag()
    psi = np.clip(d - np.sum(A * A, axis=1), NOISE_FLOOR * d, None)
    if noise_model == "isotropic":
        for s in datafit.slices.values():
            psi[s] = psi[s].mean()
    return psi


def support_of(h):
    """Boolean (M, K) support of hierarchy ``h`` (modality ``m`` carries component ``j``)."""
    return h.support_matrix().astype(bool).reshape(h.n_modalities, h.n_components)


def support_key(sup):
    return tuple(tuple(int(v) for v in row) for row in sup)


def describe_support(h, sup):
    """Readable pattern of a support: ``{a,b,c}:1 {a,b}:1 ...``."""
    counts = {}
    for j in range(sup.shape[1]):
        s = frozenset(m for a, m in enumerate(h.modalities) if sup[a, j])
        if s:
            counts[s] = counts.get(s, 0) + 1
    order = sorted(counts, key=lambda s: (-len(s), sorted(h.index(m) for m in s)))
    return " ".join(f"{h.name(s)}:{counts[s]}" for s in order) or "(empty)"


def hierarchy_from_support(h, sup):
    """The hierarchy (on ``h``'s modalities and dims) whose components are the columns of ``sup``."""
    ranks = {}
    for j in range(sup.shape[1]):
        s = tuple(m for a, m in enumerate(h.modalities) if sup[a, j])
        ranks[s] = ranks.get(s, 0) + 1
    return Hierarchy(dims=h.dims, ranks=ranks)


def merge_components(h, A, support):
    """Drop empty components and group the others by modality set into structures (canonical order)."""
    mods = h.modalities
    keep = support.any(axis=0)
    A, support = A[:, keep], support[:, keep]
    hh = hierarchy_from_support(h, support)
    cols = []
    for s in hh.structures:
        cols.extend(j for j in range(support.shape[1]) if frozenset(m for a, m in enumerate(mods) if support[a, j]) == s)
    return hh, A[:, cols], support[:, cols]


def gaussian_bic(datafit, A, psi, support, n, noise_model):
    """Gaussian BIC ``-2 loglik + log(n) df`` of ``Sigma = A A^T + Psi`` against the datafit's moments.

    By the determinant lemma and Woodbury (no ``p x p`` matrix), with ``W = Psi^{-1} A``
    and ``M = I + A^T W``: ``log det Sigma = sum log psi + log det M`` and
    ``tr(Sigma^{-1} S) = sum_j S_jj / psi_j - tr(M^{-1} W^T S W)`` (``quadratic``).
    ``df = sum_S [k_S sum_{m in S} p_m - k_S (k_S - 1) / 2]`` plus the noise
    parameters. ``Sigma`` that is not positive definite (a non-positive or
    non-finite noise variance, or ``det M <= 0``) has no Gaussian likelihood:
    the BIC is ``+inf``, never a finite number from a dropped sign.
    """
    psi = np.asarray(psi, dtype=np.float64)
    if not np.all(np.isfinite(psi)) or np.any(psi <= 0):
        return np.inf
    K = A.shape[1]
    W = A / psi[:, None]
    Mk = np.eye(K) + A.T @ W
    sign, logdet_m = np.linalg.slogdet(Mk)
    if sign <= 0 or not np.isfinite(logdet_m):
        return np.inf
    logdet = float(np.sum(np.log(psi))) + logdet_m
    trace = float(np.sum(datafit.stacked_diag() / psi)) - float(np.trace(np.linalg.solve(Mk, datafit.quadratic(W))))
    ll = -0.5 * n * (logdet + trace)
    sizes = [s.stop - s.start for s in datafit.slices.values()]
    groups = {}
    for j in range(support.shape[1]):
        groups.setdefault(tuple(support[:, j]), []).append(j)
    df = 0
    for key, js in groups.items():
        k = len(js)
        df += k * sum(p for p, on in zip(sizes, key) if on) - k * (k - 1) // 2
    df += A.shape[0] if noise_model == "diagonal" else len(sizes)
    return -2.0 * ll + np.log(n) * df
