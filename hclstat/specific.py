"""Specific (within-modality) ranks: the residual spectrum after the shared subspace.

For modality ``m`` with ``k`` shared components (the lattice's non-specific
ranks of the structures containing ``m``),

    S_mm = A_sh A_sh^T + A_sp A_sp^T + Psi_m,   span(A_sh) = left span of S_{m, others},

so the specific rank is the number of noise-whitened residual eigenvalues above
the white-noise edge once the shared directions (the top ``k`` left singular
vectors of the cross-covariance of ``m`` with all other modalities) are
projected out. Counting on that residual, not "within-modality total minus
shared", keeps the power for a specific factor when a shared factor's
within-modality spike sits below the edge although the cross-covariances see
it (D1 at s = 0.15).

The noise ``Psi_m`` is estimated along the way, without a factor-analysis fit
per rank: starting from the column variances, each step whitens by the current
``Psi``, counts the residual eigenvalues above the edge, and subtracts from the
column variances the shared part (``Q^T M Q - I`` on the shared directions) and
each counted spike's *debiased* contribution (the spiked-covariance inversion
of ``lambda = ell (1 + gamma / (ell - 1))``, ``gamma = p' / (n - 1)``, and its
eigenvector overlap), until the count and ``Psi`` stop moving. The debiasing is
what keeps ``p_m > n`` sane: the raw sample spikes carry the bulk's inflation,
and subtracting them drives ``Psi`` to its floor and the count to ``n``.

Level. The edge is the upper ``alpha / M`` Tracy-Widom quantile of the top
eigenvalue of a white ``(n - 1) x p'`` covariance (``p' = p_m - k``;
:func:`white_noise_edge`). Given the shared subspace, the chance that *any*
modality's specific rank exceeds its true value (a noise direction counted) is
at most about ``alpha`` (Bonferroni over modalities; a later residual
eigenvalue is stochastically below the top of a null of the same size).

Narrow modalities (``p_m^2 <= n``, ``p_m <= 20``, diagonal noise) keep the sequential
Bartlett likelihood-ratio test (:func:`lrt_rank`), started at the shared rank.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .exceptions import EstimationWarning
from .factor_analysis import NOISE_FLOOR, fa_noise as _fa_noise
from .hierarchy import Hierarchy
from .moments.base import require
from .moments.covariance import CovarianceDatafit

__all__ = [
    "ResidualRank",
    "datafit_specific_ranks",
    "lattice_hierarchy",
    "lrt_rank",
    "noise_whitened_rank",
    "residual_rank",
    "specific_level",
    "specific_ranks",
    "white_noise_edge",
]

#: the Tracy-Widom edge needs this many residual rows and columns
MIN_RESIDUAL = 10
#: a modality's rank "approaches" min(n - 1, p_m) above this fraction of it
RANK_WARNING_FRACTION = 0.5
_MAX_STEPS = 60
#: relative floor of the debiased noise estimate (a factor-analysis-free estimate must not
#: reach the collapse that drives a count to n)
_PF_FLOOR = 0.05
#: widest modality given to the likelihood-ratio test (with p^2 <= n); its chi-square law
#: assumes Gaussian data: a 40-column modality with Student-t latents, n = 4000, got the
#: right specific rank in 7/10 seeds by the test and 10/10 by the residual rule
LRT_MAX_COLUMNS = 20
#: largest squared entry of a unit residual direction still counted as a factor
LOCALISED = 0.5
#: the factor-analysis noise fit is used from this many rows per column (below, the debiased estimate)
FA_ROWS_PER_COLUMN = 2
#: share of a modality's columns at the noise floor that triggers a warning
FLOOR_WARNING_FRACTION = 0.02

#: upper quantiles of the Tracy-Widom (beta = 1) law
_TW1_QUANTILES = {0.10: 0.4501, 0.05: 0.9793, 0.025: 1.4538, 0.01: 2.0234, 0.005: 2.4224, 0.001: 3.2724}


def _tw1_quantile(alpha):
    """Upper ``alpha`` quantile of TW1, interpolated in ``log alpha`` between table levels."""
    levels = np.array(sorted(_TW1_QUANTILES))
    if not levels[0] <= alpha <= levels[-1]:
        raise ValueError(f"alpha: expected a level in [{levels[0]}, {levels[-1]}], got {alpha!r}")
    return float(np.interp(np.log(alpha), np.log(levels), [_TW1_QUANTILES[v] for v in levels]))


def white_noise_edge(n, p, alpha=0.01):
    """Upper ``alpha`` quantile of the top eigenvalue of a white-noise covariance.

    Johnstone's (2001) Tracy-Widom approximation for ``X^T X / n`` with ``X``
    an ``n x p`` standard Gaussian matrix: centring
    ``mu = (sqrt(n - 1/2) + sqrt(p - 1/2))^2`` and scale
    ``sigma = sqrt(mu) (1/sqrt(n - 1/2) + 1/sqrt(p - 1/2))^{1/3}``.
    """
    q = _tw1_quantile(alpha)
    a, b = np.sqrt(n - 0.5), np.sqrt(p - 0.5)
    mu = (a + b) ** 2
    sigma = (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0)
    return (mu + q * sigma) / n


def specific_level(alpha, n_modalities):
    """Per-modality level of the specific-rank tests (family-wise ``alpha``),
    floored at the smallest tabulated Tracy-Widom level."""
    return max(alpha / n_modalities, min(_TW1_QUANTILES))


def debiased_spikes(eigenvalues, gamma):
    """Population spikes ``ell`` and eigenvector overlaps ``cos^2`` behind sample eigenvalues.

    White noise of unit variance, aspect ratio ``gamma = p / n``: a spike
    ``ell > 1 + sqrt(gamma)`` puts the sample eigenvalue at
    ``lambda = ell (1 + gamma / (ell - 1))`` and its eigenvector at squared
    overlap ``(1 - gamma / (ell - 1)^2) / (1 + gamma / (ell - 1))`` with the
    population one (Baik, Ben Arous and Péché 2005; Paul 2007). Eigenvalues
    below the bulk edge give ``ell = 1 + sqrt(gamma)``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    b = lam + 1.0 - gamma
    ell = 0.5 * (b + np.sqrt(np.clip(b * b - 4.0 * lam, 0.0, None)))
    ell = np.maximum(ell, 1.0 + np.sqrt(gamma))
    x = gamma / (ell - 1.0)
    cos2 = np.clip((1.0 - x / (ell - 1.0)) / (1.0 + x), 1e-3, 1.0)
    return ell, cos2


@dataclass
class ResidualRank:
    """The specific-rank test of one modality.

    Attributes
    ----------
    rank : int
        Specific rank (residual eigenvalues above ``edge``).
    shared : int
        Shared directions projected out.
    psi : ndarray of shape (p_m,)
        Noise variances at the last step.
    eigenvalues : ndarray
        Top whitened residual eigenvalues (those above the edge, and the next).
    edge : float
    n_rows : int
    at_floor : int
        Noise variances at ``floor`` times their column variance.
    n_steps : int
    floor : float
        Relative floor of the noise estimate used.
    """

    rank: int
    shared: int
    psi: np.ndarray
    eigenvalues: np.ndarray
    edge: float
    n_rows: int
    at_floor: int
    n_steps: int
    floor: float = NOISE_FLOOR


def _shared_basis(datafit, m, k, d):
    """Raw-coordinate basis (p_m, k) of the top ``k`` left singular directions of the
    correlation-scaled cross-covariance of ``m`` with every other modality."""
    others = [o for o in datafit.modalities if o != m]
    if k == 0 or not others:
        return np.zeros((d.size, 0))
    q_others = np.concatenate([1.0 / np.sqrt(datafit.diag(o)) for o in others])
    U = datafit.cross_left_singular(m, others, k, q=1.0 / np.sqrt(d), q_others=q_others)
    return U * np.sqrt(d)[:, None]


def _orthonormal(B):
    if not B.shape[1]:
        return B
    U, s, _ = np.linalg.svd(B, full_matrices=False)
    return U[:, s > 1e-10 * s[0]]


def _residual_above(datafit, m, q, Q, edge, first):
    """Top whitened residual eigenpairs: all above ``edge`` and the next one."""
    p = datafit.dims[m]
    k = min(max(first, 1), p)
    while True:
        w, V = datafit.residual_eigh(m, k, q=q, basis=Q)
        if w[-1] <= edge or k >= p:
            return w, V
        k = min(2 * k, p)


def _debiased_noise(datafit, m, d, psi, Q, w, V, c, gamma, floor):
    """Column variances minus the shared part (``Q^T M Q - I`` on the shared directions) and
    the debiased contribution of the ``c`` counted residual spikes, in the whitening ``psi``."""
    q = 1.0 / np.sqrt(psi)
    signal = np.zeros(d.size)
    if Q.shape[1]:
        g, G = np.linalg.eigh(Q.T @ (q[:, None] * datafit.cross(m, m, q[:, None] * Q)))
        signal += (Q @ G) ** 2 @ np.clip(g - 1.0, 0.0, None)
    if c:
        ell, cos2 = debiased_spikes(w[:c], gamma)
        signal += np.clip(V[:, :c] ** 2 - (1.0 - cos2) / V.shape[0], 0.0, None) @ ((ell - 1.0) / cos2)
    return np.clip(d - psi * signal, floor * d, d)


def residual_rank(datafit, m, shared, *, noise_model="diagonal", alpha=0.01, max_rank=None):
    """Specific rank of modality ``m`` from its whitened residual after ``shared`` shared directions.

    See the module docstring for the rule. The count starts on the
    correlation scale (``Psi = diag S_mm``: conservative, the signal sits in
    the diagonal) and is refined under a noise estimate of the rank found so
    far, stepping only up, to the first count the noise estimate of that rank
    confirms. The noise estimate is the factor-analysis fit ``fa_noise(m, k + c)``
    for a diagonal model with ``n >= 2 p_m`` (one fit per *jump* of the count;
    the last is the one the initialiser asks for, memoised); otherwise the
    column variances minus the debiased spikes (:func:`debiased_spikes`),
    floored at ``0.05`` of the column variance, where a factor-analysis fit
    would overfit (``p_m`` near or above ``n``). Datafit operations: ``diag``,
    ``cross``, ``cross_left_singular``, ``residual_eigh`` (and ``fa_noise``).

    ``max_rank`` caps the specific rank.

    Returns
    -------
    ResidualRank
    """
    p, n = datafit.dims[m], int(datafit.count(m, m))
    d = datafit.diag(m)
    k = int(min(shared, p - 1))
    Braw = _shared_basis(datafit, m, k, d)
    p_res = p - k
    cap = max(0, min(p_res - 1, n - 2 - k))
    if max_rank is not None:
        cap = min(cap, int(max_rank))
    edge = white_noise_edge(max(n - 1, 1), max(p_res, 1), alpha)
    gamma = p_res / max(n - 1, 1)
    use_fa = noise_model == "diagonal" and n >= FA_ROWS_PER_COLUMN * p

    def count_under(psi, first):
        q = 1.0 / np.sqrt(psi)
        Q = _orthonormal(Braw * q[:, None])
        w, V = _residual_above(datafit, m, q, Q, edge, first)
        # a direction with most of its mass on one column is that column's own variance
        # (a noise variance driven to its floor: a Heywood case), not a factor
        spread = np.max(V * V, axis=0) <= LOCALISED
        w, V = w[spread], V[:, spread]
        return int(min(np.sum(w > edge), cap)), Q, w, V

    psi = d.copy() if noise_model == "diagonal" else np.full(p, d.mean())
    c, Q, w, V = count_under(psi, 4)
    step = 1
    while step < _MAX_STEPS:
        if use_fa:  # floored as the debiased estimate: a Heywood column must not become a spike
            new = np.maximum(datafit.fa_noise(m, k + c), _PF_FLOOR * d)
        elif noise_model != "diagonal" and n >= 2 * p:  # mean of the p - r smallest eigenvalues
            new = np.full(p, (d.sum() - float(np.sum(datafit.top_eigh(m, k + c)[0]))) / (p - k - c))
        else:
            new = _debiased_noise(datafit, m, d, psi, Q, w, V, min(c, w.size), gamma, _PF_FLOOR)
            if noise_model != "diagonal":
                new = np.full(p, new.mean())
        c_new, Q_new, w_new, V_new = count_under(new, c + 4)
        step += 1
        psi = new
        if c_new <= c:  # the count this noise estimate confirms: iterating further only feeds back
            break
        c, Q, w, V = c_new, Q_new, w_new, V_new
    floor = _PF_FLOOR
    return ResidualRank(rank=c, shared=k, psi=psi, eigenvalues=w[: c + 1], edge=float(edge), n_rows=n,
                        at_floor=int(np.sum(psi <= floor * d * (1 + 1e-9))), n_steps=step, floor=floor)


def noise_whitened_rank(S, n, *, noise_model="diagonal", alpha=0.01, max_rank=None):
    """Signal rank of one modality's covariance against its noise model.

    Counts eigenvalues of ``Psi^{-1/2} S Psi^{-1/2}`` above the upper ``alpha``
    Tracy-Widom quantile of the top eigenvalue of a white-noise covariance of
    the same size (:func:`white_noise_edge`), with the noise estimate ``Psi``
    of a rank-``r`` fit (isotropic: mean residual eigenvalue; diagonal:
    factor-analysis fit), and returns the smallest self-consistent rank: the
    first ``r`` whose whitened spectrum has at most ``r`` eigenvalues above
    the edge. One factor-analysis fit per rank step: meant for a single small
    block (the estimators use :func:`residual_rank`).

    Returns
    -------
    rank : int
    psi : ndarray of shape (p,)
        Noise variances of the rank-``rank`` fit.
    """
    return _whitened_rank(CovarianceDatafit.from_matrix(S, {"m": S.shape[0]}, n), "m", n,
                          noise_model=noise_model, alpha=alpha, max_rank=max_rank)


def _whitened_rank(datafit, m, n, *, noise_model, alpha, max_rank):
    """:func:`noise_whitened_rank` of modality ``m`` of a datafit (``fa_noise``, ``top_eigh``,
    ``eigenvalues_above``, ``diag``)."""
    p = datafit.dims[m]
    cap = p - 1 if max_rank is None else min(int(max_rank), p - 1)
    null_top = white_noise_edge(n - 1, p, alpha=alpha)
    trace = float(np.sum(datafit.diag(m)))
    r = 0
    while True:
        if noise_model == "isotropic":  # mean of the p - r smallest eigenvalues
            psi = np.full(p, (trace - float(np.sum(datafit.top_eigh(m, r)[0]))) / (p - r))
        else:
            psi = datafit.fa_noise(m, r)
        above = datafit.eigenvalues_above(m, null_top, q=1.0 / np.sqrt(psi))
        count = min(int(np.sum(above > null_top)), cap)
        if count <= r:
            return r, psi
        r = count if r == 0 else r + 1


def lrt_rank(S, n, *, alpha=0.01, max_rank=None, start=0):
    """Number of factors by the sequential Bartlett-corrected likelihood-ratio test.

    For ``r = start, start + 1, ...`` the statistic
    ``(n - 1 - (2p + 5)/6 - 2r/3) * F_r`` with
    ``F_r = log det(L L^T + Psi) - log det S + tr((L L^T + Psi)^{-1} S) - p``
    of the rank-``r`` factor-analysis fit is compared with the upper ``alpha``
    quantile of chi-square with ``((p - r)^2 - (p + r)) / 2`` degrees of
    freedom; the first ``r`` not rejected is returned (at most the Ledermann
    bound, where the degrees of freedom run out). Valid for ``p`` small next to
    ``n``; :func:`datafit_specific_ranks` uses it when ``p^2 <= n``, started at
    the modality's shared rank (a rank the cross-covariances established).
    """
    from scipy.stats import chi2

    p = S.shape[0]
    cap = p - 1 if max_rank is None else min(int(max_rank), p - 1)
    sign, logdet_s = np.linalg.slogdet(S)
    if sign <= 0:
        raise ValueError(f"S: expected a positive-definite covariance for the likelihood-ratio test, got a "
                         f"singular or indefinite {p} x {p} block (more columns than rows?)")
    start = min(int(start), cap)
    for r in range(start, cap + 1):
        df = ((p - r) ** 2 - (p + r)) / 2.0
        if df <= 0 and r == start:  # nothing tested: the shared rank already uses every degree of freedom
            return r
        if df <= 0:
            # every rank below r was rejected: r is the smallest rank the data allow,
            # but it cannot be tested (returning r - 1 would return a rejected rank)
            warnings.warn(f"lrt_rank: every rank up to {r - 1} was rejected at level {alpha} and rank {r} "
                          f"leaves no degrees of freedom for p = {p} (Ledermann bound): returning {r} as a "
                          "lower bound", EstimationWarning, stacklevel=2)
            return r
        psi = _fa_noise(S, r)
        q = 1.0 / np.sqrt(psi)
        w, V = np.linalg.eigh(S * q[:, None] * q[None, :])
        w, V = w[::-1], V[:, ::-1]
        L = (V[:, :r] * np.sqrt(np.clip(w[:r] - 1.0, 0.0, None))) * np.sqrt(psi)[:, None]
        Sigma = L @ L.T + np.diag(psi)
        _, logdet = np.linalg.slogdet(Sigma)
        F = logdet - logdet_s + np.trace(np.linalg.solve(Sigma, S)) - p
        stat = (n - 1 - (2 * p + 5) / 6.0 - 2 * r / 3.0) * F
        if stat <= chi2.isf(alpha, df):
            return r
    warnings.warn(f"lrt_rank: every rank up to the cap {cap} was rejected at level {alpha}: returning the cap, "
                  "a lower bound (raise max_rank)", EstimationWarning, stacklevel=2)
    return cap


def specific_ranks(moments, nonspecific, *, noise_model="diagonal", alpha=0.01, max_rank=None):
    """:func:`datafit_specific_ranks` of :class:`~hclstat.moments.Moments`."""
    return datafit_specific_ranks(CovarianceDatafit(moments), nonspecific, noise_model=noise_model,
                                  alpha=alpha, max_rank=max_rank, stacklevel=3)


def _warn(tests, stacklevel):
    for m, t in tests.items():
        if t is None:
            continue
        if t.n_rows - 1 - t.shared < MIN_RESIDUAL or t.edge != t.edge:
            warnings.warn(f"modality {m!r}: {t.n_rows} rows leave {t.n_rows - 1 - t.shared} beyond its {t.shared} "
                          f"shared components, fewer than the {MIN_RESIDUAL} the specific-rank test needs; its "
                          "specific rank is unreliable", EstimationWarning, stacklevel=stacklevel + 1)
        if t.at_floor > FLOOR_WARNING_FRACTION * t.psi.size:
            warnings.warn(f"modality {m!r}: {t.at_floor} of its {t.psi.size} noise variances reached the floor "
                          f"({t.floor:g} x the column variance) in the specific-rank test; the model explains "
                          "nearly all of those columns (too few rows, or near-duplicate columns?)",
                          EstimationWarning, stacklevel=stacklevel + 1)
        total, limit = t.shared + t.rank, min(t.n_rows - 1, t.psi.size)
        if total > RANK_WARNING_FRACTION * limit:
            warnings.warn(f"modality {m!r}: rank {total} ({t.shared} shared + {t.rank} specific) approaches "
                          f"min(n - 1, p) = {limit}; the ranks and loadings of this modality are unreliable "
                          "(set max_rank or max_components for a smaller model)", EstimationWarning,
                          stacklevel=stacklevel + 1)


def datafit_specific_ranks(datafit, nonspecific, *, noise_model="diagonal", alpha=0.01, max_rank=None,
                           stacklevel=2, details=False):
    """Specific ranks: the whitened residual spectrum after each modality's shared subspace.

    Each modality is tested at level ``alpha / M`` (family-wise ``alpha``: the
    chance that some modality's specific rank exceeds its true value, given the
    shared subspaces). The rule is :func:`residual_rank`; for a diagonal noise
    model and a modality with ``p_m^2 <= n`` and at most
    :data:`LRT_MAX_COLUMNS` columns (few columns, where the
    chi-square approximation holds and a concentrated factor can hide in one
    unique variance) the sequential likelihood-ratio test :func:`lrt_rank` on
    the block (``dense_block``), started at the shared rank. ``n`` is the
    block's row count (``count(m, m)``); ``max_rank`` caps each modality's
    total (shared + specific) rank. An
    :class:`~hclstat.exceptions.EstimationWarning` names a modality whose noise
    reaches the floor, whose rank approaches ``min(n - 1, p_m)`` or that has
    fewer rows than the test needs.

    Returns
    -------
    specific : dict of frozenset to int
    total : dict of str to int
        Within-modality ranks (shared + specific).
    tests : dict of str to ResidualRank or None
        Only with ``details``: each modality's test (``None`` for the likelihood-ratio test).
    """
    require(datafit, ["diag", "cross", "cross_left_singular", "residual_eigh"], "the specific-rank tests")
    out, total, tests = {}, {}, {}
    alpha = specific_level(alpha, len(datafit.modalities))
    for m in datafit.modalities:
        n = datafit.count(m, m)
        ns = int(sum(k for s, k in nonspecific.items() if m in s))
        if noise_model == "diagonal" and datafit.dims[m] ** 2 <= n and datafit.dims[m] <= LRT_MAX_COLUMNS:
            r = lrt_rank(datafit.dense_block(m), n, alpha=alpha, start=ns, max_rank=max_rank)
            spec, tests[m] = max(0, r - ns), None
        else:
            tests[m] = residual_rank(datafit, m, ns, noise_model=noise_model, alpha=alpha,
                                     max_rank=None if max_rank is None else max(0, int(max_rank) - ns))
            spec = tests[m].rank
        total[m] = ns + spec
        out[frozenset([m])] = spec
    _warn(tests, stacklevel)
    return (out, total, tests) if details else (out, total)


def lattice_hierarchy(dims, nonspecific, specific):
    """Assemble a :class:`Hierarchy`, trimming ranks that exceed a modality's budget."""
    ranks = {**nonspecific, **specific}
    for m, p in dims.items():
        while sum(k for s, k in ranks.items() if m in s) > p - 1:
            # drop from the specific part first, then the smallest structure
            cands = sorted((s for s in ranks if m in s and ranks[s] > 0), key=lambda s: (len(s), ranks[s]))
            ranks[cands[0]] -= 1
    return Hierarchy(dims=dict(dims), ranks={tuple(sorted(s)): k for s, k in ranks.items() if k > 0})
