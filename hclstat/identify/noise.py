"""Within-modality identification: the noise model, the specific part, the ``|S| <= 2`` blocks.

Once the structures of three or more modalities are removed (their within
blocks follow from cross-covariances), a modality's covariance is
``R_m = X_m + Psi_m`` with ``X_m`` PSD of rank ``r'_m = sum_{S ∋ m, |S| <= 2} k_S``.
Isotropic noise is the bottom eigenvalue level of ``R_m``. Diagonal noise is the
factor-analysis fit of ``R_m``: the package's one fit,
:func:`hclstat.factor_analysis.fa_noise`, except where Albert's closed form is
the exact population solution (``p_m >= 2 r'_m + 1`` and the closed form
reproduces ``R_m``); see :func:`fit_diagonal`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..exceptions import IdentifiabilityError
from ..factor_analysis import fa_noise
from .subspaces import annihilate, norm2, span, top_left

__all__ = ["ledermann_bound", "diagonal_max_rank", "fit_isotropic", "fit_diagonal", "within_modality"]


def ledermann_bound(p):
    """Largest factor rank ``r`` with ``(p - r)^2 > p + r`` (0 when none).

    Below this bound (strict inequality) a ``p``-variate factor-analysis model
    ``L L^T + diag(psi)`` with ``rank L = r`` is generically globally identified
    (Bekker & ten Berge, 1997); at or above it there are at least as many
    parameters as covariance entries and, apart from ``p = 3, r = 1`` (see
    :func:`diagonal_max_rank`), the model is not identified.
    """
    r = 0
    while (p - (r + 1)) ** 2 > p + (r + 1):
        r += 1
    return r


def diagonal_max_rank(p):
    """Largest rank ``r`` for which diagonal noise is identified in ``p`` columns.

    Either Anderson & Rubin's ``p >= 2r + 1`` (unique, closed form) or the strict
    Ledermann bound (generic); they differ only at ``p = 3, r = 1`` (just
    identified: one factor in three variables).
    """
    return max(ledermann_bound(p), (p - 1) // 2)



def fit_isotropic(R, scale, tol, rank=None):
    """``R = X + sigma^2 I`` with ``X`` PSD of rank ``r < p``: (psi, r).

    ``sigma^2`` is the bottom eigenvalue level (the mean of the ``p - r``
    smallest eigenvalues); ``r`` counts eigenvalues more than ``tol * scale``
    above the smallest.
    """
    p = R.shape[0]
    ev = np.linalg.eigvalsh(R)
    if rank is None:
        rank = int(np.sum(ev - ev[0] > tol * scale))
    if rank >= p:
        raise IdentifiabilityError(
            f"isotropic noise needs a noise direction: residual rank {rank} >= {p} columns"
        )
    sigma2 = float(ev[: p - rank].mean())
    if sigma2 <= 0:
        raise ValueError(f"the isotropic noise level came out as {sigma2:.3g} <= 0")
    return np.full(p, sigma2), rank


def fa_closed_form(R, r):
    """Diagonal of a rank-``r`` ``L`` from the off-diagonal of ``R = L + diag(psi)``.

    Albert's identity: for row ``i`` and disjoint index sets ``I, J`` not
    containing ``i`` with ``rank L_{IJ} = r``, ``L_ii = L_{iJ} L_{IJ}^+ L_{Ii}``
    (off-diagonal entries only, so noise-free). Needs ``p >= 2r + 1``
    (Anderson & Rubin's condition).
    """
    p = R.shape[0]
    psi = np.empty(p)
    for i in range(p):
        others = np.delete(np.arange(p), i)
        half = (p - 1) // 2
        I, J = others[:half], others[half:]
        u, s, vt = np.linalg.svd(R[np.ix_(I, J)], full_matrices=False)
        pinv = (vt[:r].T / s[:r]) @ u[:, :r].T if r else np.zeros((len(J), len(I)))
        psi[i] = R[i, i] - R[i, J] @ pinv @ R[I, i]
    return psi



def _fit_quality(Rn, psi, r, tol):
    """``(residual, psd)`` of noise ``psi`` for a rank-``r`` fit of ``Rn``.

    The residual is the norm of the ``p - r`` smallest eigenvalues of
    ``Rn - diag(psi)`` (zero iff the fit is exact); ``psd``: the ``r`` kept
    eigenvalues, the signal, are above ``-tol``.
    """
    ev = np.linalg.eigvalsh(Rn - np.diag(psi))
    q = ev.size - r
    return float(np.sqrt(ev[:q] @ ev[:q])), bool(r == 0 or ev[q:].min() >= -tol)


def _root_polish(Rn, r, psi, steps=8):
    """Newton steps on the exact-fit equations ``V^T (Rn - diag(psi)) V = 0``.

    ``V`` holds the ``p - r`` bottom eigenvectors of ``Rn - diag(psi)``; with
    ``V`` frozen the equations are linear in ``psi``
    (``sum_i delta_i V_ia V_ib = (V^T (Rn - diag psi) V)_ab``) and, near an
    exact fit, freezing ``V`` costs only second order, so the steps converge
    quadratically. This refines the root :func:`~hclstat.factor_analysis.fa_noise`
    has found to the precision of the input (its optimiser stops at about
    ``1e-7`` relative); it is kept only while it lowers the residual.
    """
    p = Rn.shape[0]
    q = p - r
    a, b = np.triu_indices(q)
    weight = np.where(a == b, 1.0, np.sqrt(2.0))  # off-diagonal entries count twice in ||.||_F
    best, best_res = psi, _fit_quality(Rn, psi, r, np.inf)[0]
    for _ in range(steps):
        w, V = np.linalg.eigh(Rn - np.diag(best))
        V = V[:, :q]
        J = (V[:, a] * V[:, b]).T * weight[:, None]
        rhs = np.where(a == b, w[a], 0.0) * weight
        cand = best + np.linalg.lstsq(J, rhs, rcond=None)[0]
        res = _fit_quality(Rn, cand, r, np.inf)[0]
        if not res < best_res:
            break
        best, best_res = cand, res
    return best


#: start budgets of the diagonal-noise fit when ``p < 2r + 1`` (no closed form): the
#: likelihood has spurious local minima there (measured at p = 9, r = 5: about
#: 40% of starts reach the exact fit), so candidate ranks are tried round-robin
#: with growing numbers of starts
FA_START_BUDGETS = (4, 16, 64)


def _congruence(p, i):
    """Diagonal scaling of the ``i``-th start (ones for ``i = 0``; seeded by ``i``)."""
    return np.ones(p) if i == 0 else np.exp(np.random.default_rng(i).uniform(-1.0, 1.0, p))


def _ml_discrepancy(Rn, psi, r):
    """Profile discrepancy ``sum_{j > r} (theta_j - log theta_j)`` of
    :func:`~hclstat.factor_analysis.fa_noise_fit` (theta: eigenvalues of
    ``Psi^{-1/2} Rn Psi^{-1/2}``), to choose among starts that are not exact."""
    q = 1.0 / np.sqrt(psi)
    theta = np.clip(np.linalg.eigvalsh(Rn * q[:, None] * q[None, :])[: Rn.shape[0] - r], 1e-300, None)
    return float(np.sum(theta - np.log(theta)))


def _fit_rank(Rn, r, tol, start=0):
    """Rank-``r`` diagonal noise of ``Rn`` from start ``start``: ``(psi, residual, psd, warnings)``.

    Start 0 is Albert's closed form when ``p >= 2r + 1`` and it reproduces
    ``Rn`` (the exact population solution). Otherwise the fit is
    :func:`~hclstat.factor_analysis.fa_noise`, refined by :func:`_root_polish`
    when that makes it exact. Start ``i >= 1`` fits the congruent
    ``D_i Rn D_i`` (:func:`_congruence`) and maps back, ``psi = psi_i / D_i^2``:
    the factor model is equivariant under diagonal scaling, the start
    ``fa_noise`` derives from its input is not, so this is a restart of the
    same fit. Warnings of the fit are returned, not raised: the caller knows
    whether the fit is used.
    """
    p = Rn.shape[0]
    if start == 0 and p >= 2 * r + 1:
        psi = fa_closed_form(Rn, r)
        resid, psd = _fit_quality(Rn, psi, r, tol)
        if resid <= tol and psd:
            return psi, resid, psd, []
    d = _congruence(p, start)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        psi = fa_noise(Rn * d[:, None] * d[None, :], r) / d**2
    resid, psd = _fit_quality(Rn, psi, r, tol)
    polished = _root_polish(Rn, r, psi)
    p_resid, p_psd = _fit_quality(Rn, polished, r, tol)
    if p_resid <= tol and p_psd:
        # an exact fit is certified by its residual: the optimiser's own flag is moot
        return polished, p_resid, p_psd, []
    return psi, resid, psd, list(caught)


def fit_diagonal(R, scale, tol, r_min, rank=None):
    """Factor analysis ``R = X + diag(psi)``, ``X`` PSD of rank ``r``: (psi, r).

    The rank is the off-diagonal rank (rank of the block between the two halves
    of the columns, noise-free) unless given. When that block is saturated
    (``r >= p/2``), every rank up to :func:`diagonal_max_rank` is a candidate; a
    fit is exact when the ``p - r`` smallest eigenvalues of ``R - diag(psi)``
    are below ``tol * scale``, and the rank is then read off ``R - diag(psi)``
    (an exact fit at a too-large candidate reproduces the true, smaller rank).
    Each fit is :func:`_fit_rank`; ranks with ``p < 2r + 1`` get the starts of
    :data:`FA_START_BUDGETS`. With a given rank and no exact start (a sample
    covariance) the start of least likelihood discrepancy is returned.
    """
    p = R.shape[0]
    Rn = R / scale  # tolerances are relative
    n_starts = {r: 1 if p >= 2 * r + 1 else FA_START_BUDGETS[-1] for r in range(p + 1)}
    if rank is not None:
        fits = []
        for i in range(min(n_starts[rank], FA_START_BUDGETS[1])):
            fits.append(_fit_rank(Rn, rank, tol, i))
            if fits[-1][1] <= tol and fits[-1][2]:
                break
        psi, _, _, caught = min(fits, key=lambda f: (not f[2], _ml_discrepancy(Rn, f[0], rank)))
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=4)
        return psi * scale, rank
    h = p // 2
    s = np.linalg.svd(Rn[:h, h:], compute_uv=False) if h else np.zeros(0)
    r0 = int(np.sum(s > tol))
    if r0 < min(h, p - h):  # not saturated: the off-diagonal rank is the rank
        candidates = [max(r0, r_min)]
    else:
        candidates = list(range(max(r0, r_min), max(diagonal_max_rank(p), r0, r_min) + 1))
    best, done = {}, {r: 0 for r in candidates}
    for budget in FA_START_BUDGETS:
        for r in candidates:
            for i in range(done[r], min(budget, n_starts[r])):
                psi, resid, psd, _ = _fit_rank(Rn, r, tol, i)
                if resid <= tol and psd:
                    return psi * scale, int(np.sum(np.linalg.eigvalsh(Rn - np.diag(psi)) > tol))
                if r not in best or (psd, -resid) > (best[r][1], -best[r][0]):
                    best[r] = (resid, psd)
            done[r] = max(done[r], budget)
    tried = "; ".join(f"rank {r}: residual {b[0]:.2g}" + ("" if b[1] else " (not PSD)") for r, b in best.items())
    raise IdentifiabilityError(
        "diagonal noise: no factor rank up to the identification limit "
        f"({diagonal_max_rank(p)} for {p} columns) reproduces the within-modality covariance "
        f"to tol={tol:g} ({tried})"
    )


def within_modality(Sigma, base, m, ns_ranks, Q, cores, noise_model, tol, given_spec=None):
    """Noise, specific subspace and the ``|S| <= 2`` within cores of modality ``m``.

    Adds ``Q[({m}, m)]`` and ``cores[(S, m, m)]`` in place; returns
    ``(psi, k_spec, warning messages)``.
    """
    sl = base.feature_slices()
    p = base.dims[m]
    Smm = Sigma[sl[m], sl[m]]
    scale = norm2(Smm)
    own = [s for s in ns_ranks if m in s]
    # R_m = X_m + Psi_m once the cross-identified |S| >= 3 blocks are removed
    R = Smm.copy()
    for s in own:
        if len(s) >= 3:
            R -= Q[(s, m)] @ cores[(s, m, m)] @ Q[(s, m)].T
    r_pairs = sum(ns_ranks[s] for s in own if len(s) == 2)
    r_known = None if given_spec is None else r_pairs + given_spec
    try:
        if noise_model == "isotropic":
            psi, r = fit_isotropic(R, scale, tol, r_known)
        else:
            psi, r = fit_diagonal(R, scale, tol, r_pairs, r_known)
    except IdentifiabilityError as exc:
        raise IdentifiabilityError(f"modality {m!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(
            f"modality {m!r}: {exc}: the within-modality residual is not a noise-plus-low-rank "
            f"matrix. tol={tol:g} may be too small for this covariance (a sample covariance "
            "needs a larger tol, or pass `hierarchy`), or it does not follow the model"
        ) from None
    problems = []
    k_spec = r - r_pairs
    if k_spec < 0:
        problems.append(
            f"modality {m!r}: the residual within-modality rank {r} is below the "
            f"rank {r_pairs} of its |S| = 2 structures; specific rank set to 0. The "
            f"noise model {noise_model!r} may not fit, or tol={tol:g} may not suit the input"
        )
        k_spec = 0
    room = p - sum(ns_ranks[s] for s in own)
    if k_spec > room:
        problems.append(
            f"modality {m!r}: the residual within-modality rank {r} leaves a specific rank "
            f"{k_spec} > the {room} columns left by the non-specific structures; capped at "
            f"{room}. The covariance may not follow the model (see rank_consistency) or "
            f"tol={tol:g} may be too small for it"
        )
        k_spec = room

    W = Smm - np.diag(psi)  # the signal part of Sigma_mm
    spec = frozenset([m])
    if k_spec:
        # col A_{m,{m}} = col(W Π⊥_{N_m}): annihilate the non-specific span on the right
        N = span([Q[(s, m)] for s in own], sum(ns_ranks[s] for s in own), p)
        Q[(spec, m)] = top_left(annihilate(W, N), k_spec)
    # W = B diag(R_S R_S^T) B^T over every structure of m: read the |S| <= 2 cores off
    # the coefficients in the joint (non-orthogonal) basis B
    basis = own + ([spec] if k_spec else [])
    if any(len(s) <= 2 for s in basis):
        widths = [ns_ranks.get(s, k_spec) for s in basis]
        Bp = np.linalg.pinv(np.hstack([Q[(s, m)] for s in basis]))
        C = Bp @ W @ Bp.T
        start = 0
        for s, k in zip(basis, widths):
            if len(s) <= 2:
                G = C[start : start + k, start : start + k]
                cores[(s, m, m)] = 0.5 * (G + G.T)
            start += k
    return psi, k_spec, problems

