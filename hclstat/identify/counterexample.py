"""Correlated-latent models that defeat identification (DESIGN §1)."""

from __future__ import annotations

import itertools
import numbers

import numpy as np

from ..hierarchy import Hierarchy
from ..model import HierarchicalModel
from ..utils import check_random_state

__all__ = ["counterexample", "COUNTEREXAMPLE_KINDS"]

COUNTEREXAMPLE_KINDS = ("equal_covariance", "spurious_sharing")


def counterexample(hierarchy, rho, random_state=None, kind="equal_covariance"):
    """Correlated-latent models that defeat identification.

    Parameters
    ----------
    hierarchy : Hierarchy
    rho : float
        Latent correlation; ``|rho| < 1`` (``< 1/sqrt(2)`` for ``"spurious_sharing"``).
    random_state : None, int or Generator
        Seeds the loadings (default law of :meth:`HierarchicalModel.random`,
        isotropic noise of variance 1).
    kind : {"equal_covariance", "spurious_sharing"}

    Returns
    -------
    (model_a, model_b) : tuple of HierarchicalModel, for ``"equal_covariance"``
        Equal population covariance, different loadings. ``model_a`` has
        correlated latents, ``model_b`` uncorrelated ones.

        *Nested construction* (used when the hierarchy has structures
        ``T ⊊ S``): ``Cov(z_S, z_T) = C = rho [I 0]``. Writing
        ``z_T = C^T z_S + w`` with ``Cov(w) = I - C^T C = L L^T``, ``model_b`` has
        the same hierarchy and ``A'_{m,S} = A_{m,S} + A_{m,T} C^T`` (``m ∈ T``),
        ``A'_{m,T} = A_{m,T} L``. ``model_b`` is in general position, so
        :func:`identify` returns *its* subspaces: ``model_a``'s loadings are not
        recoverable.

        *Specific-pair construction* (no nested pair; needs specific structures
        on two modalities ``a, b``): ``Cov(z_a, z_b) = rho`` on
        ``k = min(k_a, k_b)`` components, reproduced by an uncorrelated model with
        an extra ``{a,b}`` structure of rank ``k``, ``A'_{a,ab} = A_{a}[:, :k]``,
        ``A'_{b,ab} = rho A_b[:, :k]``, ``a``'s specific loadings reduced to the
        remaining columns and ``b``'s first ``k`` scaled by ``sqrt(1 - rho^2)``
        (``model_b`` is then not in general position on ``b``).
    model : HierarchicalModel, for ``"spurious_sharing"``
        Needs specific structures on three modalities ``a, b, c``; the first
        component of ``z_a`` is correlated by ``rho`` with the first of ``z_b``
        and of ``z_c``, which stay uncorrelated with each other. Seen from ``a``
        the lattice shows an extra ``{a,b,c}`` component, from ``b`` an extra
        ``{a,b}``, from ``c`` an extra ``{a,c}``: the member estimates disagree,
        so no uncorrelated model in general position has this covariance (it is
        reproducible only with exact cancellations between structures) and
        :func:`identify` flags it through :class:`RankConsistency`.
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy: expected a Hierarchy, got {type(hierarchy).__name__}")
    if kind not in COUNTEREXAMPLE_KINDS:
        raise ValueError(f"kind: expected one of {COUNTEREXAMPLE_KINDS}, got {kind!r}")
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real):
        raise TypeError(f"rho: expected a real number, got {rho!r}")
    rho = float(rho)
    h = hierarchy
    rng = check_random_state(random_state)
    base = HierarchicalModel.random(h, random_state=rng)
    cs = h.component_slices()
    K = h.n_components

    if kind == "spurious_sharing":
        if not (rho != 0 and abs(rho) < 1 / np.sqrt(2)):
            raise ValueError(
                f"rho: expected 0 < |rho| < 1/sqrt(2) = 0.7071 (positive definite latent "
                f"covariance), got {rho}"
            )
        spec = [m for m in h.modalities if h.rank(m) > 0]
        if len(spec) < 3:
            raise ValueError(
                "kind='spurious_sharing' needs specific structures on at least 3 modalities; "
                f"the hierarchy has them on {spec}"
            )
        a, b, c = spec[:3]
        phi = np.eye(K)
        ia, ib, ic = (cs[frozenset([x])].start for x in (a, b, c))
        phi[ia, ib] = phi[ib, ia] = rho
        phi[ia, ic] = phi[ic, ia] = rho
        return HierarchicalModel(h, base.loadings, base.noise_variances, latent_covariance=phi)

    if not (rho != 0 and abs(rho) < 1):
        raise ValueError(f"rho: expected 0 < |rho| < 1, got {rho}")
    nested = [(s, t) for s in h.structures for t in reversed(h.structures) if t < s]
    if nested:
        s, t = nested[0]
        ks, kt = h.rank(s), h.rank(t)
        k = min(ks, kt)
        C = np.zeros((ks, kt))
        C[np.arange(k), np.arange(k)] = rho
        phi = np.eye(K)
        phi[cs[s], cs[t]] = C
        phi[cs[t], cs[s]] = C.T
        model_a = HierarchicalModel(h, base.loadings, base.noise_variances, latent_covariance=phi)
        L = np.linalg.cholesky(np.eye(kt) - C.T @ C)
        loadings = {u: dict(blocks) for u, blocks in base.loadings.items()}
        for m in t:
            loadings[s][m] = base.loadings[s][m] + base.loadings[t][m] @ C.T
            loadings[t][m] = base.loadings[t][m] @ L
        model_b = HierarchicalModel(h, loadings, base.noise_variances)
        return model_a, model_b

    spec = [m for m in h.modalities if h.rank(m) > 0]
    pairs = [
        (a, b) for a, b in itertools.permutations(spec, 2)
        if h.modality_rank(b) + min(h.rank(a), h.rank(b)) <= h.dims[b]
    ]
    if len(spec) < 2 or not pairs:
        raise ValueError(
            "kind='equal_covariance' needs two nested structures T ⊊ S, or specific structures "
            "on two modalities a, b with room for one more component on b "
            f"(p_b > total rank); got {h!r}"
        )
    a, b = pairs[0]
    k = min(h.rank(a), h.rank(b))
    fa, fb = frozenset([a]), frozenset([b])
    phi = np.eye(K)
    ia, ib = cs[fa].start, cs[fb].start
    for j in range(k):
        phi[ia + j, ib + j] = phi[ib + j, ia + j] = rho
    model_a = HierarchicalModel(h, base.loadings, base.noise_variances, latent_covariance=phi)
    Aa, Ab = base.loadings[fa][a], base.loadings[fb][b]
    ranks = h.ranks
    pair = frozenset([a, b])  # not in h: {a} ⊊ {a,b} would have been nested
    ranks[pair] = k
    ranks[fa] = h.rank(a) - k
    loadings = {u: dict(blocks) for u, blocks in base.loadings.items()}
    loadings[pair] = {a: Aa[:, :k], b: rho * Ab[:, :k]}
    if ranks[fa]:
        loadings[fa] = {a: Aa[:, k:]}
    else:
        del loadings[fa]
    Ab2 = Ab.copy()
    Ab2[:, :k] *= np.sqrt(1.0 - rho**2)
    loadings[fb] = {b: Ab2}
    model_b = HierarchicalModel(Hierarchy(h.dims, ranks), loadings, base.noise_variances)
    return model_a, model_b
