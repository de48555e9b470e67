"""Identification of a hierarchical latent-variable model from its covariance.

Given the covariance of the stacked modalities, :func:`identify` recovers, by
exact linear algebra (no optimisation at the population level):

* the hierarchy — every structure ``S`` and its rank ``k_S`` — from the *rank
  lattice* of the cross-covariances, with a rank-consistency test;
* every column space ``col(A_{m,S})`` by *bilinear annihilation*;
* the signal blocks ``A_{m,S} A_{m',S}^T``;
* with a noise model, the specific structures and the noise variances.

:func:`check_identifiable` and :func:`check_model` state the conditions, and
:func:`counterexample` builds correlated-latent models that break them.

Notation (DESIGN §1): ``x_m = sum_{S ∋ m} A_{m,S} z_S + e_m``;
``Sigma_{mm'} = sum_{S ⊇ {m,m'}} A_{m,S} A_{m',S}^T`` for ``m != m'``.
*General position* means that for every modality ``m`` the stacked loadings
``[A_{m,S}]_{S ∋ m}`` have full column rank.
"""

from __future__ import annotations

import itertools
import numbers
import warnings
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from .exceptions import EstimationWarning, IdentifiabilityError
from .lattice import implied_rank, mobius_estimates
from .hierarchy import Hierarchy
from .model import HierarchicalModel
from .moments import Moments
from .utils import check_random_state

__all__ = [
    "identify",
    "Identification",
    "RankConsistency",
    "IdentifiabilityReport",
    "check_identifiable",
    "check_model",
    "counterexample",
    "ledermann_bound",
    "diagonal_max_rank",
    "NOISE_MODELS",
    "DEFAULT_TOL",
]

NOISE_MODELS = ("isotropic", "diagonal", None)
#: default relative rank threshold; suits population covariances (exact up to rounding)
DEFAULT_TOL = 1e-8
MAJORITY_RULE = (
    "majority: the most frequent member estimate (negative estimates read as 0); "
    "ties go to the smaller rank"
)
COUNTEREXAMPLE_KINDS = ("equal_covariance", "spurious_sharing")


# =========================================================================== helpers
def _order_key(index):
    """Canonical structure order (global first, then by size, then modality order)."""
    return lambda s: (-len(s), sorted(index[m] for m in s))


def _label(s, index):
    return "{" + ",".join(sorted(s, key=index.__getitem__)) + "}"


def _subsets(items, *, empty=False):
    """Subsets of ``items`` as frozensets, by increasing size."""
    items = list(items)
    for r in range(0 if empty else 1, len(items) + 1):
        for c in itertools.combinations(items, r):
            yield frozenset(c)


def _top_left(X, k):
    """Top-``k`` left singular vectors of ``X`` (an orthonormal basis, shape (rows, k))."""
    if k == 0:
        return np.zeros((X.shape[0], 0))
    u, _, _ = np.linalg.svd(X, full_matrices=False)
    return u[:, :k]


def _annihilate(X, N):
    """``X (I - N N^T)``: remove from the rows of ``X`` the directions of ``col(N)``."""
    if N.shape[1] == 0:
        return X
    return X - (X @ N) @ N.T


def _intersection(bases, d):
    """Orthonormal basis of ``∩ col(U_i)`` (dimension ``d`` known).

    Solves ``U_1 a_1 = U_i a_i`` (i >= 2) by the ``d`` smallest singular vectors of
    the stacked difference system: the smallest singular values grow linearly
    with the principal angles (an averaged-projector eigenproblem would grow
    quadratically, i.e. lose half the digits).
    """
    if d == 0:
        return np.zeros((bases[0].shape[0], 0))
    if len(bases) == 1:
        return bases[0][:, :d]
    widths = [b.shape[1] for b in bases]
    starts = np.concatenate([[0], np.cumsum(widths)])
    p = bases[0].shape[0]
    system = np.zeros((p * (len(bases) - 1), starts[-1]))
    for i in range(1, len(bases)):
        rows = slice(p * (i - 1), p * i)
        system[rows, : widths[0]] = bases[0]
        system[rows, starts[i] : starts[i + 1]] = -bases[i]
    _, _, vt = np.linalg.svd(system, full_matrices=True)
    coef = vt[-d:].T
    # average the |bases| representations of each intersection vector (symmetric in the inputs)
    v = sum(bases[i] @ coef[starts[i] : starts[i + 1]] for i in range(len(bases))) / len(bases)
    return _top_left(v, d)


def _span(parts, d, p):
    """Orthonormal basis of the (direct) sum of the column spaces in ``parts``."""
    parts = [q for q in parts if q.shape[1] > 0]
    if d == 0 or not parts:
        return np.zeros((p, 0))
    return _top_left(np.hstack(parts), d)


def _norm2(X):
    return float(np.linalg.norm(X, 2)) if X.size else 0.0


def _majority(values):
    vals = [max(int(v), 0) for v in values]
    counts = Counter(vals)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


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


# ===================================================================== validation
def _check_dims(dims):
    if isinstance(dims, Hierarchy):
        dims = dims.dims
    if not isinstance(dims, Mapping) or len(dims) == 0:
        raise TypeError(
            f"dims: expected a non-empty mapping modality name -> number of columns, got {dims!r}"
        )
    base = Hierarchy(dict(dims), {})  # validates names and sizes
    if base.n_modalities < 2:
        raise IdentifiabilityError(
            f"dims: identification from cross-covariances needs at least 2 modalities, "
            f"got {base.n_modalities} ({list(base.modalities)})"
        )
    return base


def _check_covariance(covariance, base):
    if isinstance(covariance, Moments):
        covariance = covariance.covariance
    try:
        S = np.asarray(covariance, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"covariance: expected a square numeric array, got {type(covariance).__name__}"
        ) from None
    p = base.n_features
    if S.shape != (p, p):
        raise ValueError(
            f"covariance: expected shape ({p}, {p}) from dims {base.dims}, got {S.shape}"
        )
    if not np.all(np.isfinite(S)):
        raise ValueError("covariance: expected finite entries, got NaN or inf")
    asym = float(np.abs(S - S.T).max())
    if asym > 1e-8 * max(1.0, float(np.abs(S).max())):
        raise ValueError(f"covariance: expected a symmetric matrix, got max |S - S^T| = {asym:.3g}")
    return 0.5 * (S + S.T)


def _check_noise_model(noise_model):
    if noise_model not in NOISE_MODELS:
        raise ValueError(
            f"noise_model: expected 'isotropic', 'diagonal' or None, got {noise_model!r}"
        )
    return noise_model


def _check_tol(tol):
    if tol is None:
        return DEFAULT_TOL
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol: expected a number in (0, 1), got {tol!r}")
    return float(tol)


# ===================================================================== rank lattice
def _cross_ranks(Sigma, base, tol):
    """``rank Cov(x_m, x_U)`` for every modality ``m`` and non-empty ``U ⊆ others(m)``.

    A singular value counts iff it exceeds ``tol * sqrt(||Sigma_mm|| ||Sigma_UU||)``
    (the Cauchy–Schwarz bound of the block, so the threshold is invariant to
    rescaling ``x_m`` or ``x_U``).

    Returns ``{(m, U): (rank, relative singular values)}``.
    """
    mods = base.modalities
    sl = base.feature_slices()
    cols = {m: np.arange(sl[m].start, sl[m].stop) for m in mods}
    norm_m = {m: _norm2(Sigma[sl[m], sl[m]]) for m in mods}
    out = {}
    for m in mods:
        others = [o for o in mods if o != m]
        for U in _subsets(others):
            idx = np.concatenate([cols[u] for u in mods if u in U])
            s = np.linalg.svd(Sigma[sl[m]][:, idx], compute_uv=False)
            scale = np.sqrt(norm_m[m] * _norm2(Sigma[np.ix_(idx, idx)]))
            rel = s / scale if scale > 0 else np.zeros_like(s)
            out[(m, U)] = (int(np.sum(rel > tol)), rel)
    return out


class RankConsistency:
    """Agreement of the rank estimates of each structure across its members.

    Each non-specific structure ``S`` gets ``|S|`` estimates of ``k_S``, one per
    member modality (Möbius inversion of that modality's rank lattice). Under
    the model (uncorrelated latents, general position) they coincide.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per structure (label such as ``{a,b}``) that any member or the
        final choice gives a non-zero rank; one column per modality (the
        member's estimate, NaN for non-members), then ``final`` and ``agree``.
    consistent : bool
        True iff every structure's member estimates are equal and non-negative.
    disagreements : list of str
        One readable line per inconsistent structure.
    rule : str
        How the final rank was chosen.
    """

    def __init__(self, table, consistent, disagreements, rule):
        self.table = table
        self.consistent = bool(consistent)
        self.disagreements = list(disagreements)
        self.rule = rule

    def __bool__(self):
        return self.consistent

    def __repr__(self):
        state = "consistent" if self.consistent else f"{len(self.disagreements)} disagreement(s)"
        return f"RankConsistency({state}; rule: {self.rule})"


def _rank_consistency(estimates, base):
    """Combine member estimates ``{m: {S: k}}`` into final ranks and a report."""
    index = {m: i for i, m in enumerate(base.modalities)}
    structures = sorted({s for est in estimates.values() for s in est}, key=_order_key(index))
    final, rows, lines = {}, [], []
    for s in structures:
        members = [m for m in base.modalities if m in s]
        vals = [estimates[m][s] for m in members]
        final[s] = _majority(vals)
        agree = len(set(vals)) == 1 and vals[0] >= 0
        if not agree:
            lines.append(
                f"structure {_label(s, index)}: member estimates "
                + ", ".join(f"{m}: {v}" for m, v in zip(members, vals))
                + f"; final rank {final[s]}"
            )
        if final[s] or any(vals):
            row = {m: float(estimates[m][s]) if m in s else np.nan for m in base.modalities}
            row.update(final=final[s], agree=agree)
            rows.append((_label(s, index), row))
    table = pd.DataFrame(
        [r for _, r in rows],
        index=pd.Index([n for n, _ in rows], name="structure"),
        columns=list(base.modalities) + ["final", "agree"],
    )
    return final, RankConsistency(table, not lines, lines, MAJORITY_RULE)


# ====================================================================== subspaces
def _nonspecific_subspaces(Sigma, base, ranks):
    """``{(S, m): orthonormal basis of col A_{m,S}}`` for every non-specific ``S``.

    Bilinear annihilation. For ``m, m' ∈ S``,
    ``Sigma_{mm'} = sum_{S'' ⊇ {m,m'}} A_{m,S''} A_{m',S''}^T``; right-multiplying
    by the projector onto the orthogonal complement (in modality ``m'``) of

        N_{m'}(m, S) = span{A_{m',S''} : S'' ⊇ {m,m'}, S'' != S}

    leaves ``A_{m,S} A_{m',S}^T Π⊥_N``, whose column space is ``col A_{m,S}``
    (general position: ``col A_{m',S} ∩ N = 0``). ``N`` splits into

    * the structures not inside ``S``: ``sum_{j ∉ S} C_{m'}({m,m',j})`` with
      ``C_{m'}({m,m',j}) = col Sigma_{m'm} ∩ col Sigma_{m'j}`` — available directly;
    * the structures strictly inside ``S`` that contain ``{m,m'}`` — known
      already because structures are processed by increasing size.

    The ``|S| - 1`` annihilated blocks (one per ``m'``) are pooled and the top
    ``k_S`` left singular vectors taken. Every dimension comes from ``ranks``.
    """
    mods = base.modalities
    sl = base.feature_slices()
    index = {m: i for i, m in enumerate(mods)}
    structs = sorted(
        (s for s, k in ranks.items() if k > 0 and len(s) > 1),
        key=lambda s: (len(s), sorted(index[m] for m in s)),  # smaller first: see `inner`
    )

    def dim_up(T):
        return sum(k for s, k in ranks.items() if k > 0 and len(s) > 1 and T <= s)

    colspace, up = {}, {}

    def col(a, b):  # basis of col Sigma_{ab} in modality a
        if (a, b) not in colspace:
            colspace[(a, b)] = _top_left(Sigma[sl[a], sl[b]], dim_up(frozenset((a, b))))
        return colspace[(a, b)]

    def upper(a, b, j):  # C_a({a,b,j}) in modality a
        key = (a, frozenset((b, j)))
        if key not in up:
            up[key] = _intersection([col(a, b), col(a, j)], dim_up(frozenset((a, b, j))))
        return up[key]

    Q = {}
    for s in structs:
        for m in s:
            pooled = []
            for mp in sorted(s - {m}, key=index.__getitem__):
                parts = [upper(mp, m, j) for j in mods if j not in s]
                inner = [t for t in structs if len(t) < len(s) and {m, mp} <= t < s]
                parts += [Q[(t, mp)] for t in inner]
                # the parts overlap (a structure may contain several j ∉ S); their sum
                # is spanned by exactly the other structures of Sigma_{mm'}
                d = dim_up(frozenset((m, mp))) - ranks[s]
                N = _span(parts, d, base.dims[mp])
                pooled.append(_annihilate(Sigma[sl[m], sl[mp]], N))
            Q[(s, m)] = _top_left(np.hstack(pooled), ranks[s])
    return Q


def _cross_cores(Sigma, base, ranks, Q):
    """``{(S, m, m'): R_m R_{m'}^T}`` (k_S x k_S) for ``m != m'`` in ``S``.

    With ``A_{m,S} = Q_{m,S} R_m`` and ``B_m = [Q_{m,S''}]_{S'' ⊇ {m,m'}}`` (full
    column rank), ``Sigma_{mm'} = B_m diag(R_m R_{m'}^T) B_{m'}^T``, so the core of
    ``S`` is its diagonal block of ``B_m^+ Sigma_{mm'} B_{m'}^{+T}`` — exact.
    """
    mods = base.modalities
    sl = base.feature_slices()
    cores = {}
    for a, b in itertools.combinations(mods, 2):
        over = [s for s, k in ranks.items() if k > 0 and {a, b} <= s]
        if not over:
            continue
        Ba = np.hstack([Q[(s, a)] for s in over])
        Bb = np.hstack([Q[(s, b)] for s in over])
        C = np.linalg.pinv(Ba) @ Sigma[sl[a], sl[b]] @ np.linalg.pinv(Bb).T
        start = 0
        for s in over:
            k = ranks[s]
            block = C[start : start + k, start : start + k]
            cores[(s, a, b)] = block
            cores[(s, b, a)] = block.T
            start += k
    return cores


def _within_cores_from_cross(s, cores, index):
    """``{m: R_m R_m^T}`` for ``|S| >= 3`` from cross cores alone.

    ``A_m A_m^T = (A_m A_{m'}^T)(A_{m''} A_{m'}^T)^{-1}(A_{m''} A_m^T)``, averaged
    over the ordered pairs ``(m', m'')`` of the other members.
    """
    out = {}
    for m in s:
        others = sorted(s - {m}, key=index.__getitem__)
        acc = []
        for m1, m2 in itertools.permutations(others, 2):
            acc.append(cores[(s, m, m1)] @ np.linalg.solve(cores[(s, m2, m1)], cores[(s, m2, m)]))
        G = sum(acc) / len(acc)
        out[m] = 0.5 * (G + G.T)
    return out


# ===================================================================== noise fits
def _fit_isotropic(R, scale, tol, rank=None):
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


def _fa_closed_form(R, r):
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


def _fa_objective(psi, R, r):
    """``1/2 sum`` of the squared ``p - r`` smallest eigenvalues of ``R - diag(psi)`` and its gradient."""
    ev, U = np.linalg.eigh(R - np.diag(psi))
    tail = ev[: R.shape[0] - r]
    Ut = U[:, : R.shape[0] - r]
    return 0.5 * float(tail @ tail), -(Ut**2) @ tail


def _fa_refine(R, r, psi0, maxiter=300):
    """Minimum-residual (ULS) refinement of ``psi``, bounded to ``[0, R_ii]``.

    Converging starts need ~50-110 iterations at the population level; the cap
    only bounds the cost of starts caught by a spurious local minimum.
    """
    d = np.diag(R).copy()
    x0 = np.clip(psi0, 0.0, d)
    f0, _ = _fa_objective(x0, R, r)
    res = minimize(
        _fa_objective, x0, args=(R, r), jac=True, method="L-BFGS-B",
        bounds=list(zip(np.zeros_like(d), d)),
        options={"maxiter": maxiter, "maxfun": 2 * maxiter, "ftol": 0.0, "gtol": 1e-15, "maxcor": 30},
    )
    return (res.x, float(res.fun)) if res.fun <= f0 else (x0, f0)


#: start budgets of the diagonal-noise fit when p < 2r + 1 (no closed form): the
#: minimum-residual landscape has spurious local minima there, so candidate
#: ranks are tried round-robin with growing numbers of deterministic restarts
FA_START_BUDGETS = (4, 16, 100)
FA_STARTS_GIVEN = 10


def _fa_start(Rn, r, i):
    """The ``i``-th deterministic start for a rank-``r`` fit.

    ``i = 0``: Albert's closed form when ``p >= 2r + 1`` (exact at the population
    level), else the squared-multiple-correlation start
    ``psi_j = (1 - r/2p) / (R^{-1})_jj``; ``i >= 1``: uniform random ``psi`` in
    ``(0.02, 0.98) diag(R)`` (seeded by ``i``).
    """
    p = Rn.shape[0]
    if i == 0 and p >= 2 * r + 1:
        return _fa_closed_form(Rn, r)
    if i == 0:
        try:
            return (1.0 - r / (2.0 * p)) / np.diag(np.linalg.inv(Rn))
        except np.linalg.LinAlgError:
            return 0.5 * np.diag(Rn)
    return np.random.default_rng(i).uniform(0.02, 0.98, p) * np.diag(Rn)


def _fa_try(Rn, r, i, tol):
    """One start: ``(psi, residual, psd, exact)``."""
    p = Rn.shape[0]
    psi, f = _fa_refine(Rn, r, _fa_start(Rn, r, i))
    ev = np.linalg.eigvalsh(Rn - np.diag(psi))
    resid = float(np.sqrt(2.0 * f))
    psd = r == 0 or ev[p - r :].min() >= -tol  # the r kept eigenvalues are the signal
    return psi, resid, psd, resid <= tol and psd


def _fit_diagonal(R, scale, tol, r_min, rank=None):
    """Factor analysis ``R = X + diag(psi)``, ``X`` PSD of rank ``r``: (psi, r).

    The rank is the off-diagonal rank (rank of the block between the two halves
    of the columns, noise-free) unless given. When that block is saturated
    (``r >= p/2``), every rank up to :func:`diagonal_max_rank` is a candidate; a fit
    is exact when the ``p - r`` smallest eigenvalues of ``R - diag(psi)`` are below
    ``tol * scale``, and the rank is then read off ``R - diag(psi)`` (an exact fit
    at a too-large candidate reproduces the true, smaller rank).
    """
    p = R.shape[0]
    Rn = R / scale  # tolerances are relative
    if rank is not None:
        n = 1 if p >= 2 * rank + 1 else FA_STARTS_GIVEN
        fits = [_fa_try(Rn, rank, i, tol) for i in range(n)]
        best = min(fits, key=lambda t: (not t[2], t[1]))  # PSD first, then residual
        return best[0] * scale, rank
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
            for i in range(done[r], budget if p < 2 * r + 1 else 1):
                psi, resid, psd, exact = _fa_try(Rn, r, i, tol)
                if r not in best or (psd, -resid) > (best[r][2], -best[r][1]):
                    best[r] = (psi, resid, psd)
                if exact:
                    ev = np.linalg.eigvalsh(Rn - np.diag(psi))
                    return psi * scale, int(np.sum(ev > tol))
            done[r] = max(done[r], budget)
    tried = "; ".join(
        f"rank {r}: residual {b[1]:.2g}" + ("" if b[2] else " (not PSD)") for r, b in best.items()
    )
    raise IdentifiabilityError(
        "diagonal noise: no factor rank up to the identification limit "
        f"({diagonal_max_rank(p)} for {p} columns) reproduces the within-modality covariance "
        f"to tol={tol:g} ({tried})"
    )


# ===================================================================== the result
class Identification:
    """What :func:`identify` recovered from a covariance.

    Attributes
    ----------
    hierarchy : Hierarchy
        Identified structures and ranks. With ``noise_model=None`` only the
        non-specific structures (``|S| >= 2``).
    subspaces : dict
        ``{structure: {modality: ndarray of shape (p_m, k_S)}}``, orthonormal
        bases of ``col(A_{m,S})``.
    blocks : dict
        ``{structure: {(m, m'): ndarray of shape (p_m, p_m')}}``, the signal blocks
        ``A_{m,S} A_{m',S}^T`` that are identified (both orders; ``m == m'``
        included for ``|S| >= 3`` always, for ``|S| <= 2`` only with a noise model).
    dimensions : pandas.DataFrame
        The cross-covariance ranks used: one row per modality ``m`` and set ``U``
        of other modalities, with the observed ``rank`` of ``Cov(x_m, x_U)``, the
        ``expected`` rank under the identified hierarchy, and the smallest kept /
        largest dropped singular value relative to the threshold's scale.
    unidentified : list of str
        What the covariance does not determine under the stated assumptions.
    rank_consistency : RankConsistency or None
        Per-member rank estimates and their agreement (``None`` when the ranks
        were given).
    noise_variances : dict or None
        ``{modality: ndarray of shape (p_m,)}`` with a noise model, else ``None``.
    noise_model : {"isotropic", "diagonal", None}
    tol : float
    """

    def __init__(self, *, hierarchy, subspaces, blocks, cores, dimensions, unidentified,
                 rank_consistency, noise_variances, noise_model, tol):
        self.hierarchy = hierarchy
        self.subspaces = subspaces
        self.blocks = blocks
        self.dimensions = dimensions
        self.unidentified = unidentified
        self.rank_consistency = rank_consistency
        self.noise_variances = noise_variances
        self.noise_model = noise_model
        self.tol = tol
        self._cores = cores

    def loadings(self):
        """A loading set reproducing every identified signal block.

        For each structure whose blocks are all identified (``|S| >= 3``, or any
        ``S`` with a noise model), the PSD matrix of cores
        ``[R_m R_{m'}^T]_{m,m' ∈ S}`` is factored by its top ``k_S`` eigenpairs and
        ``A_{m,S} = Q_{m,S} R_m``. Unique up to one ``k_S x k_S`` rotation per structure.

        Returns
        -------
        dict ``{structure: {modality: ndarray of shape (p_m, k_S)}}``
        """
        h = self.hierarchy
        out = {}
        for s in h.structures:
            members = [m for m in h.modalities if m in s]
            if any((s, a, b) not in self._cores for a in members for b in members):
                continue
            k = h.rank(s)
            G = np.block([[self._cores[(s, a, b)] for b in members] for a in members])
            w, V = np.linalg.eigh(0.5 * (G + G.T))
            F = V[:, -k:] * np.sqrt(np.clip(w[-k:], 0.0, None))
            out[s] = {m: self.subspaces[s][m] @ F[i * k : (i + 1) * k] for i, m in enumerate(members)}
        return out

    def to_model(self):
        """The identified model as a :class:`HierarchicalModel` (needs a noise model).

        Its covariance reproduces the input covariance exactly at the population level.
        """
        if self.noise_model is None:
            raise IdentifiabilityError(
                "to_model: with noise_model=None the specific structures, the noise and the "
                "within-modality blocks of |S| = 2 structures are not identified; "
                "call identify(..., noise_model='isotropic' or 'diagonal')"
            )
        return HierarchicalModel(self.hierarchy, self.loadings(), self.noise_variances)

    def summary(self):
        """One row per identified structure: level, rank, members, blocks identified."""
        h = self.hierarchy
        rows = []
        for s in h.structures:
            members = [m for m in h.modalities if m in s]
            within = all((m, m) in self.blocks[s] for m in members)
            rows.append({
                "structure": h.name(s),
                "level": h.level(s),
                "rank": h.rank(s),
                "modalities": ",".join(members),
                "within_blocks": "identified" if within else "not identified",
            })
        return pd.DataFrame(rows, columns=["structure", "level", "rank", "modalities", "within_blocks"])

    def __repr__(self):
        consistent = "n/a" if self.rank_consistency is None else self.rank_consistency.consistent
        return (
            f"Identification({self.hierarchy!r}, noise_model={self.noise_model!r}, "
            f"rank_consistent={consistent}, {len(self.unidentified)} unidentified statement(s))"
        )


# ===================================================================== identify
def identify(covariance, dims, *, noise_model="isotropic", tol=None, hierarchy=None):
    r"""Recover the hierarchy, column spaces and signal blocks from a covariance.

    Parameters
    ----------
    covariance : ndarray of shape (p, p) or Moments
        Covariance of the stacked modalities, blocks in the order of ``dims``
        (``p = sum_m p_m``). A population (or denoised) covariance gives exact
        results; see ``tol`` for sample covariances.
    dims : mapping of str to int
        ``{modality: p_m}``; at least two modalities. ``None`` takes them from a
        :class:`~hclstat.moments.Moments` input.
    noise_model : {"isotropic", "diagonal", None}
        Within-modality noise ``Psi_m``: ``sigma_m^2 I``, a diagonal matrix
        (factor analysis), or ``None`` (no assumption: only what the
        cross-covariances determine is returned).
    tol : float in (0, 1), optional
        Relative rank threshold, default ``1e-8`` (population input). A singular
        value ``s`` of ``Cov(x_m, x_U)`` counts iff
        ``s > tol * sqrt(||Sigma_mm||_2 ||Sigma_UU||_2)``. Within modality ``m``
        (specific ranks) an eigenvalue of the residual counts iff it exceeds the
        noise level by ``tol * ||Sigma_mm||_2``; a diagonal-noise fit is accepted
        iff its residual is below the same. For a **sample** covariance of ``n``
        rows the noise singular values are of order ``sigma^2 sqrt(p/n)``: pass a
        ``tol`` well above that and well below the weakest signal, or pass the
        ranks through ``hierarchy``; the estimators calibrate thresholds per
        pair with a permutation null instead.
    hierarchy : Hierarchy, optional
        Known structures and ranks (same dims). Skips rank estimation; every
        subspace and block is then a smooth function of the covariance, so
        sample covariances give errors of order ``n^{-1/2}``. Its specific
        structures are ignored when ``noise_model=None``.

    Returns
    -------
    Identification

    Warns
    -----
    EstimationWarning
        When the member modalities of a structure disagree on its rank (see
        :class:`RankConsistency`; the majority rule picks the final rank).

    Raises
    ------
    IdentifiabilityError
        When the noise model cannot be fitted under its identification
        condition (e.g. isotropic noise with no noise direction left).

    Notes
    -----
    *Ranks* (DESIGN §2, rank lattice). For a modality ``m`` and a set ``U`` of
    other modalities, ``rank Cov(x_m, x_U) = sum_{S ∋ m, S ∩ U != ∅} k_S``; with
    ``W = others(m)`` and ``T ⊆ W``,

    .. math:: k_{\{m\} \cup T} = -\sum_{V \subseteq T} (-1)^{|T \setminus V|}
              \operatorname{rank} \operatorname{Cov}(x_m, x_{W \setminus V}).

    Each ``S`` gets ``|S|`` such estimates; they must agree.

    *Subspaces* by bilinear annihilation (not orthogonal complements, DESIGN
    §6): ``col A_{m,S} = col(Sigma_{mm'} Π⊥_{N})`` with ``N`` the span, in
    modality ``m'``, of the other structures that appear in ``Sigma_{mm'}``
    (see ``_nonspecific_subspaces``). *Cross blocks*: with
    ``B_m = [Q_{m,S''}]_{S'' ⊇ {m,m'}}``, the ``S`` block of
    ``B_m^+ Sigma_{mm'} B_{m'}^{+T}``. *Within blocks*, ``|S| >= 3``:
    ``A_m A_m^T = (A_m A_{m'}^T)(A_{m''}A_{m'}^T)^+(A_{m''}A_m^T)``.

    *Specific parts* (noise model). ``R_m = Sigma_mm - sum_{|S|>=3} A_{m,S}A_{m,S}^T
    = X_m + Psi_m`` with ``X_m`` PSD of rank ``r'_m = sum_{S ∋ m, |S| <= 2} k_S``.
    Isotropic: ``sigma_m^2`` is the bottom eigenvalue level of ``R_m`` (needs
    ``r'_m < p_m``). Diagonal: factor analysis of ``R_m`` — off-diagonal rank,
    Albert's closed form when ``p_m >= 2 r'_m + 1``, minimum-residual refinement;
    identified generically under the Ledermann bound ``(p_m - r'_m)^2 > p_m + r'_m``
    (or ``p_m >= 2 r'_m + 1``).
    Then with ``W_m = Sigma_mm - Psi_m`` and ``N_m`` the non-specific span,
    ``col A_{m,{m}} = col(W_m Π⊥_{N_m})`` and the within blocks of the ``|S| <= 2``
    structures are the diagonal blocks of ``B^+ W_m B^{+T}``,
    ``B = [Q_{m,S}]_{S ∋ m}``.
    """
    if dims is None and isinstance(covariance, Moments):
        dims = covariance.dims
    base = _check_dims(dims)
    Sigma = _check_covariance(covariance, base)
    noise_model = _check_noise_model(noise_model)
    tol = _check_tol(tol)
    mods = base.modalities
    index = {m: i for i, m in enumerate(mods)}

    # ---- ranks of the non-specific structures
    if hierarchy is not None:
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"hierarchy: expected a Hierarchy or None, got {type(hierarchy).__name__}")
        if hierarchy.dims != base.dims or hierarchy.modalities != mods:
            raise ValueError(f"hierarchy: expected dims {base.dims}, got {hierarchy.dims}")
        ns_ranks = {s: k for s, k in hierarchy.ranks.items() if len(s) > 1}
        observed, consistency = None, None
    else:
        observed = _cross_ranks(Sigma, base, tol)
        estimates = {
            m: mobius_estimates({key: v[0] for key, v in observed.items()}, m, [o for o in mods if o != m])
            for m in mods
        }
        ns_ranks, consistency = _rank_consistency(estimates, base)
        ns_ranks = {s: k for s, k in ns_ranks.items() if k > 0}
        if not consistency.consistent:
            warnings.warn(
                "rank estimates disagree across member modalities ("
                + "; ".join(consistency.disagreements)
                + f"). Final ranks by the {MAJORITY_RULE}. The covariance may come from "
                "correlated latents (no uncorrelated model in general position reproduces it), "
                f"or tol={tol:g} may not suit it (sample covariance?)",
                EstimationWarning,
                stacklevel=2,
            )
    for m in mods:
        total = sum(k for s, k in ns_ranks.items() if m in s)
        if total > base.dims[m]:
            raise ValueError(
                f"modality {m!r}: the estimated non-specific ranks sum to {total} > p_m = "
                f"{base.dims[m]}: tol={tol:g} is too small for this covariance (a sample "
                "covariance needs a larger tol, or pass `hierarchy`), or it does not follow the "
                "model (uncorrelated latents in general position)"
            )

    # ---- non-specific subspaces and blocks: cross-covariances only
    Q = _nonspecific_subspaces(Sigma, base, ns_ranks)
    cores = _cross_cores(Sigma, base, ns_ranks, Q)
    for s in ns_ranks:
        if len(s) >= 3:
            for m, G in _within_cores_from_cross(s, cores, index).items():
                cores[(s, m, m)] = G

    # ---- specific parts and the remaining within blocks: the noise model
    noise_variances, spec_ranks = None, {}
    if noise_model is not None:
        noise_variances = {}
        for m in mods:
            given = None if hierarchy is None else hierarchy.rank(m)
            psi, k_spec, problems = _within_modality(
                Sigma, base, m, ns_ranks, Q, cores, noise_model, tol, given
            )
            for message in problems:
                warnings.warn(message, EstimationWarning, stacklevel=2)
            noise_variances[m], spec_ranks[m] = psi, k_spec

    ranks = dict(ns_ranks)
    ranks.update({frozenset([m]): k for m, k in spec_ranks.items() if k > 0})
    h = Hierarchy(base.dims, ranks)
    subspaces, blocks = {}, {}
    for s in h.structures:
        members = [m for m in mods if m in s]
        subspaces[s] = {m: Q[(s, m)] for m in members}
        blocks[s] = {
            (a, b): Q[(s, a)] @ cores[(s, a, b)] @ Q[(s, b)].T
            for a in members for b in members if (s, a, b) in cores
        }
    return Identification(
        hierarchy=h, subspaces=subspaces, blocks=blocks, cores=cores,
        dimensions=_rank_table(base, ranks, observed),
        unidentified=_unidentified_statements(h, noise_model),
        rank_consistency=consistency, noise_variances=noise_variances,
        noise_model=noise_model, tol=tol,
    )


def _within_modality(Sigma, base, m, ns_ranks, Q, cores, noise_model, tol, given_spec=None):
    """Noise, specific subspace and the ``|S| <= 2`` within cores of modality ``m``.

    Adds ``Q[({m}, m)]`` and ``cores[(S, m, m)]`` in place; returns
    ``(psi, k_spec, warning messages)``.
    """
    sl = base.feature_slices()
    p = base.dims[m]
    Smm = Sigma[sl[m], sl[m]]
    scale = _norm2(Smm)
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
            psi, r = _fit_isotropic(R, scale, tol, r_known)
        else:
            psi, r = _fit_diagonal(R, scale, tol, r_pairs, r_known)
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
        N = _span([Q[(s, m)] for s in own], sum(ns_ranks[s] for s in own), p)
        Q[(spec, m)] = _top_left(_annihilate(W, N), k_spec)
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


def _rank_table(base, ranks, observed):
    """The ``dimensions`` table: observed vs expected ``rank Cov(x_m, x_U)``."""
    index = {m: i for i, m in enumerate(base.modalities)}
    rows = []
    for m in base.modalities:
        for U in _subsets([o for o in base.modalities if o != m]):
            row = {"modality": m, "with": _label(U, index), "expected": implied_rank(ranks, m, U)}
            if observed is not None:
                r, rel = observed[(m, U)]
                row.update(
                    rank=r,
                    smallest_kept=float(rel[r - 1]) if r > 0 else np.nan,
                    largest_dropped=float(rel[r]) if r < rel.size else np.nan,
                )
            else:
                row.update(rank=np.nan, smallest_kept=np.nan, largest_dropped=np.nan)
            rows.append(row)
    return pd.DataFrame(
        rows, columns=["modality", "with", "rank", "expected", "smallest_kept", "largest_dropped"]
    )


def _unidentified_statements(h, noise_model):
    out = [
        "every structure S: the loadings A_{.,S} are identified only up to one k_S x k_S "
        "orthogonal rotation (column spaces and signal blocks are invariant)"
    ]
    if noise_model is not None:
        return out
    out.append(
        "specific structures {m} of modalities " + ", ".join(repr(m) for m in h.modalities)
        + ": ranks, column spaces and signal blocks are not identified without a noise model "
        "(the within-modality covariance Sigma_mm mixes them with the noise Psi_m)"
    )
    out.append("noise covariances Psi_m: not identified without a noise model")
    for s in h.structures:
        if len(s) == 2:
            a, b = sorted(s, key=h.index)
            out.append(
                f"structure {h.name(s)}: only the cross block A_{{{a},S}} A_{{{b},S}}^T and the "
                f"column spaces are identified; the loadings are determined only up to an "
                f"invertible transform (A_{{{a},S}} G, A_{{{b},S}} G^{{-T}}), so the within "
                f"blocks A_{{{a},S}} A_{{{a},S}}^T and A_{{{b},S}} A_{{{b},S}}^T need a noise model"
            )
    return out


# ===================================================================== conditions
class IdentifiabilityReport:
    """Outcome of :func:`check_identifiable` / :func:`check_model`.

    Attributes
    ----------
    identifiable : bool
        True iff ``reasons`` is empty.
    reasons : list of str
        Each violated condition, naming the modality and structure at fault.
    notes : list of str
        Parts that are not identified by design (e.g. with ``noise_model=None``)
        or remarks that do not break identification.
    """

    def __init__(self, reasons, notes=()):
        self.reasons = list(reasons)
        self.notes = list(notes)

    @property
    def identifiable(self):
        return not self.reasons

    def __bool__(self):
        return self.identifiable

    def __repr__(self):
        body = "; ".join(self.reasons) if self.reasons else "all conditions hold"
        return f"IdentifiabilityReport(identifiable={self.identifiable}: {body})"


def check_identifiable(hierarchy, noise_model="isotropic"):
    """Conditions under which :func:`identify` recovers ``hierarchy`` exactly.

    Assuming uncorrelated latents and general position (see :func:`check_model`
    for a concrete model), the hierarchy is identified when

    * there are at least 2 modalities;
    * every modality's rank budget fits: ``sum_{S ∋ m} k_S <= p_m``;
    * ``noise_model="isotropic"``: a noise direction remains after the
      structures not pinned by cross-covariances,
      ``r'_m = sum_{S ∋ m, |S| <= 2} k_S < p_m``;
    * ``noise_model="diagonal"``: the Ledermann bound
      ``(p_m - r'_m)^2 > p_m + r'_m`` — generic global identification of the
      factor model of the residual (Bekker & ten Berge, 1997) — or Anderson &
      Rubin's ``p_m >= 2 r'_m + 1`` (which adds only ``p = 3, r' = 1``). Under
      the latter identify uses a closed form; otherwise an iterative
      minimum-residual fit with restarts (a note says so).
    * ``noise_model=None``: the non-specific structures are identified;
      specific structures and the within blocks of ``|S| = 2`` structures never
      are (listed in ``notes``), and ``identifiable`` refers to the rest.

    Returns
    -------
    IdentifiabilityReport
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy: expected a Hierarchy, got {type(hierarchy).__name__}")
    noise_model = _check_noise_model(noise_model)
    h = hierarchy
    reasons, notes = [], []
    if h.n_modalities < 2:
        reasons.append(
            f"only {h.n_modalities} modality ({list(h.modalities)}): identification from "
            "cross-covariances needs at least 2 modalities"
        )
    for m in h.modalities:
        p = h.dims[m]
        total = h.modality_rank(m)
        if total > p:  # pragma: no cover - Hierarchy refuses this already
            reasons.append(f"modality {m!r}: total rank {total} exceeds p_m = {p}")
        low = [s for s in h.structures_of(m) if len(s) <= 2]
        r = sum(h.rank(s) for s in low)
        parts = ", ".join(f"{h.name(s)}: {h.rank(s)}" for s in low) or "none"
        if noise_model == "isotropic" and r >= p:
            reasons.append(
                f"modality {m!r}: isotropic noise needs a noise direction, i.e. the ranks of its "
                f"specific and |S| = 2 structures ({parts}) must sum to less than p_m = {p}; got {r}"
            )
        elif noise_model == "diagonal" and r > diagonal_max_rank(p):
            reasons.append(
                f"modality {m!r}: diagonal noise violates the Ledermann bound "
                f"(p_m - r)^2 > p_m + r for r = {r} (structures {parts}), p_m = {p}: "
                f"{(p - r) ** 2} <= {p + r} (nor p_m >= 2r + 1); at most rank "
                f"{diagonal_max_rank(p)} is identified"
            )
        elif noise_model == "diagonal" and r > 0 and p < 2 * r + 1:
            notes.append(
                f"modality {m!r}: p_m = {p} < 2r + 1 = {2 * r + 1}: identified generically "
                "(Ledermann bound holds) but identify() uses an iterative minimum-residual fit "
                "instead of the closed form"
            )
    if noise_model is None:
        for m in h.modalities:
            notes.append(
                f"modality {m!r}: the specific structure {{{m}}} and the noise are not identified "
                "without a noise model"
            )
        for s in h.structures:
            if len(s) == 2:
                notes.append(
                    f"structure {h.name(s)}: within-modality blocks not identified without a noise "
                    "model (loadings only up to an invertible transform)"
                )
    return IdentifiabilityReport(reasons, notes)


def _detect_noise_model(model):
    iso = all(np.allclose(v, v[0], rtol=1e-12, atol=0) for v in model.noise_variances.values())
    return "isotropic" if iso else "diagonal"


def check_model(model, *, noise_model="auto", tol=DEFAULT_TOL):
    """Check that a concrete model satisfies the identification assumptions.

    * latents uncorrelated across structures;
    * general position: for each modality the stacked ``[A_{m,S}]_{S ∋ m}`` has
      full column rank (smallest singular value above ``tol`` times the largest);
    * the cross-covariance ranks equal the theory,
      ``rank Cov(x_m, x_U) = sum_{S ∋ m, S ∩ U != ∅} k_S`` (same ``tol`` as
      :func:`identify`);
    * the conditions of :func:`check_identifiable` for the noise model
      (``"auto"``: isotropic iff every modality's noise variances are equal).

    Returns
    -------
    IdentifiabilityReport
    """
    if not isinstance(model, HierarchicalModel):
        raise TypeError(f"model: expected a HierarchicalModel, got {type(model).__name__}")
    tol = _check_tol(tol)
    if noise_model == "auto":
        noise_model = _detect_noise_model(model)
    noise_model = _check_noise_model(noise_model)
    h = model.hierarchy
    reasons = []
    phi = model.latent_covariance
    if phi is not None:
        cs = h.component_slices()
        for s, t in itertools.combinations(h.structures, 2):
            c = float(np.abs(phi[cs[s], cs[t]]).max())
            if c > tol:
                reasons.append(
                    f"latents of structures {h.name(s)} and {h.name(t)} are correlated "
                    f"(max |corr| = {c:.3g}); identification assumes uncorrelated latents"
                )
    for m in h.modalities:
        own = h.structures_of(m)
        if not own:
            continue
        A = np.hstack([model.loadings[s][m] for s in own])
        sv = np.linalg.svd(A, compute_uv=False)
        if sv[-1] <= tol * sv[0]:
            full = int(np.sum(sv > tol * sv[0]))
            culprits = []
            for s in own:
                rest = [t for t in own if t != s]
                rr = (
                    np.linalg.matrix_rank(np.hstack([model.loadings[t][m] for t in rest]), tol * sv[0])
                    if rest else 0
                )
                if rr + h.rank(s) > full:
                    culprits.append(h.name(s))
            reasons.append(
                f"modality {m!r}: general position fails: the stacked loadings of structures "
                f"{', '.join(h.name(s) for s in own)} have rank {full} < {A.shape[1]} columns "
                f"(overlapping: {', '.join(culprits)})"
            )
    if h.n_modalities >= 2:
        Sigma = model.covariance()
        observed = _cross_ranks(Sigma, Hierarchy(h.dims, {}), tol)
        for (m, U), (r, _) in observed.items():
            expected = implied_rank(h.ranks, m, U)
            if r != expected:
                reasons.append(
                    f"rank Cov(x_{m}, x_{_label(U, {x: i for i, x in enumerate(h.modalities)})}) = {r}"
                    f" but the hierarchy implies {expected}"
                )
    ident = check_identifiable(h, noise_model)
    return IdentifiabilityReport(reasons + ident.reasons, ident.notes)


# ================================================================ counterexamples
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
