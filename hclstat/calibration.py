"""A family-wise level for the cross-covariance rank lattice (Westfall-Young max-T).

The lattice runs one test per modality ``m`` and set ``U`` of other
modalities: is ``Cov(x_m, x_U)`` zero? Its statistic is the top singular
value ``s_{m,U}`` of the sample cross-covariance. Under the *global null*
(independent modalities, i.i.d. rows) the joint law of all these statistics
is unchanged when every modality's rows are permuted independently, so ``B``
such *joint draws* (:func:`draw_joint_permutations`) give ``B`` copies of the
whole family with the observed one exchangeable among them.

Each statistic is standardised by the mean and standard deviation of its
observed and null values together (``B + 1`` exchangeable values under the
null), ``t = (s - mu) / sd``, and the family is tested by the
Westfall-Young step-down max-T procedure (Westfall & Young, 1993, Alg. 2.8):
with the tests ordered by decreasing ``t``,

    p_(j) = max_{i <= j} (1 + #{draws b: max_{k >= i} t^b_(k) >= t_(i)}) / (B + 1),

and a test is rejected (its cross rank is at least 1) when ``p_(j) <= alpha``.
Singular values beyond the first count against the single-step family
threshold ``mu_0 + c sd_0`` (``mu_0, sd_0`` over the draws only, which a
strong signal cannot inflate; ``c`` the ``floor(alpha (B + 1))``-th largest
of the draws' family maxima on that scale); a rejected test has rank at
least 1. On complete rows the count then goes on by deflation: with ``k``
counted, the ``(k + 1)``-th singular value counts when it exceeds
``mu_k + c sd_k``, the moments of the draws' top singular value with the
observed top-``k`` directions projected off both sides (deflated parallel
analysis, Dobriban 2020: the strong directions no longer inflate the null of
the weaker ones; with p = (200, 400, 800) and n = 100 this is what finds a
rank-1 pair factor under a rank-2 global one).

What is controlled: under independent modalities, the probability that any
cross rank anywhere in the lattice comes out above 0 is at most ``alpha``
(a Monte Carlo test: exact for ``B`` with ``(B + 1) alpha`` an integer when
the nulls use every row; with a row subsample, up to the rescaling of its
nulls, :func:`finite_size_factor`). A rank above the true one of a correlated pair (a noise singular value
beyond the signal ones) is not a hypothesis of this family; it is counted
against the single-step threshold, the most conservative level of the
procedure.
"""

from __future__ import annotations

import math

import numpy as np

from .moments.data import CentredData
from .moments.nulls import matched_rows, null_geometry

__all__ = ["draw_joint_permutations", "familywise_test", "finite_size_factor", "minimum_permutations",
           "resolve_permutations", "row_source", "step_down"]

#: a singular value below this fraction of the undeflated count threshold is not tested by
#: deflation: the deflated thresholds measured on the p >> n design (p = 200/400/800, n = 100;
#: k = 1-3 directions off) were 0.78-1.0 of the undeflated ones; on D1 (s = 0.3, n = 500,
#: 10 seeds) 14 of 90 tests still form one, and a D1 fit takes 0.13 s against 0.10 s without
#: deflation (0.17 s ungated)
DEFLATION_GATE = 0.7

#: draws used when the level asks for fewer (the threshold is then an order statistic of 99 maxima)
DEFAULT_PERMUTATIONS = 99


def minimum_permutations(alpha):
    """Smallest ``B`` with ``(B + 1) alpha >= 1``: fewer draws cannot reach level ``alpha``
    (the smallest Monte Carlo p-value is ``1 / (B + 1)``)."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


def resolve_permutations(n_permutations, alpha):
    """``n_permutations`` or, for ``None``, ``max(99, minimum_permutations(alpha))``; a ValueError
    naming the minimum when the given number cannot reach the level."""
    low = minimum_permutations(alpha)
    if n_permutations is None:
        return max(DEFAULT_PERMUTATIONS, low)
    B = int(n_permutations)
    if B < low:
        raise ValueError(f"n_permutations: expected at least {low} permutations for the family-wise level "
                         f"alpha={alpha} (the smallest attainable p-value is 1 / (n_permutations + 1)), got "
                         f"{n_permutations}")
    return B


def draw_joint_permutations(modalities, n_rows, count, rng):
    """``count`` joint draws: a (count, n_rows) array of independent uniform row permutations
    per modality after the first (whose rows stay in place: every statistic ignores a
    common row order, so this is the law of permuting every modality)."""
    rows = np.broadcast_to(np.arange(n_rows), (count, n_rows))
    return {m: rng.permuted(rows, axis=1) for m in list(modalities)[1:]}


def step_down(t_obs, t_null, alpha):
    """Westfall-Young step-down max-T.

    Parameters
    ----------
    t_obs : ndarray of shape (T,)
    t_null : ndarray of shape (B, T)
    alpha : float

    Returns
    -------
    reject : ndarray of bool, shape (T,)
    p_values : ndarray of shape (T,)
        Adjusted (step-down, monotone) p-values.
    critical : ndarray of shape (T,)
        The critical value each test met: its step's for the rejected ones and
        the stopping step's for the others.
    single : float
        The single-step critical value (over the whole family).
    """
    t_obs, t_null = np.asarray(t_obs, dtype=np.float64), np.asarray(t_null, dtype=np.float64)
    B, T = t_null.shape
    k = _critical_rank(alpha, B)
    order = np.argsort(-t_obs, kind="stable")
    # successive maxima over the tests not yet rejected: column j is max over order[j:]
    tail = np.maximum.accumulate(t_null[:, order][:, ::-1], axis=1)[:, ::-1]
    raw = (1.0 + np.sum(tail >= t_obs[order][None, :], axis=0)) / (B + 1)
    adjusted = np.maximum.accumulate(raw)
    crit = -np.sort(-tail, axis=0)[k - 1]  # k-th largest null maximum per step
    reject_sorted = adjusted <= alpha + 1e-12
    stop = int(np.argmin(reject_sorted)) if not reject_sorted.all() else T - 1
    crit_sorted = np.where(reject_sorted, crit, crit[stop])
    reject, p_values, critical = np.empty(T, bool), np.empty(T), np.empty(T)
    reject[order], p_values[order], critical[order] = reject_sorted, adjusted, crit_sorted
    return reject, p_values, critical, float(crit[0])


def finite_size_factor(geometry, m, others, n, n_sub):
    """Second-order rescaling of a covariance-matched subsample's null of ``S_{m,U}`` to ``n`` rows.

    For white blocks the null's top singular value is near the edge
    ``(sqrt(p_m (1 - p_U / n)) + sqrt(p_U (1 - p_m / n))) / sqrt(n)`` of the
    Jacobi ensemble (the row space has dimension ``n``): with covariances
    matched, a subsample's null is that much too low. The factor is the ratio
    of the edges at ``n`` and ``n_sub``, with each side's effective dimension
    ``(tr S)^2 / ||S||_F^2`` (``geometry[o] = (tr S_oo, ||S_oo||_F^2)``; ``U``'s
    blocks uncorrelated, as under the null). Measured (p = 100 / 200 and 50 / 60,
    4x subsample, white, heteroskedastic and spiked): matched and rescaled null
    means within 0.4-1.9% of the full-sample ones, against -0.2% to +7.5% for
    the first-order rescaling.
    """
    def dim(mods):
        tr = sum(geometry[o][0] for o in mods)
        return tr * tr / max(sum(geometry[o][1] for o in mods), np.finfo(float).tiny)

    pa, pu = dim([m]), dim(others)

    def edge(rows):
        return np.sqrt(pa * max(1 - pu / rows, 0.0)) + np.sqrt(pu * max(1 - pa / rows, 0.0))

    low = edge(n_sub)
    return float(edge(n) / low) if low > 0 else 1.0


def familywise_test(datafit, null, draws, tests, *, alpha, max_count=None):
    """The threshold policy of the family-wise procedure, for :func:`hclstat.lattice.lattice_from_tests`.

    ``null`` is the row source (``permutation_nulls``); its statistics under
    ``draws`` are rescaled by ``sqrt((n_null - 1) / (n - 1))`` when it holds a
    row subsample of the ``n`` rows behind ``datafit``. A row source whose
    covariances were matched to the full sample's
    (:func:`~hclstat.moments.nulls.matched_rows`) says so by a
    ``null_geometry`` attribute (``{m: (tr S_mm, ||S_mm||_F^2)}``) and gets
    the second-order :func:`finite_size_factor` as well.

    Returns
    -------
    test : callable
        ``test(m, others) -> (threshold, singular_values, extra)`` with
        ``extra`` holding ``rank``, ``p_value`` and ``first_threshold`` (the
        level the top singular value met in the step-down).
    """
    tests = [(m, list(others)) for m, others in tests]
    n, n_sub = datafit.n_samples, null.n_samples
    scale = np.full(len(tests), np.sqrt((n_sub - 1) / (n - 1)))
    geometry = getattr(null, "null_geometry", None)
    if geometry is not None and n_sub < n:
        scale *= [finite_size_factor(geometry, m, others, n, n_sub) for m, others in tests]
    if hasattr(null, "joint_permutation_nulls"):
        tops = null.joint_permutation_nulls(tests, draws)
    else:
        tops = np.column_stack([null.permutation_nulls(m, others, draws) for m, others in tests])
    tops = scale[None, :] * np.asarray(tops, dtype=np.float64)
    observed = [datafit.cross_singular_values(m, others, np.inf, max_count=max_count) for m, others in tests]
    s_obs = np.array([float(sv[0]) if sv.size else 0.0 for sv in observed])
    # decisions: standardised over the observed and the draws together, a symmetric function of
    # B + 1 exchangeable values under the null (exact level)
    pooled = np.vstack([s_obs, tops])
    mu_p, sd_p = pooled.mean(axis=0), _positive(pooled.std(axis=0, ddof=1), pooled)
    reject, p_values, critical, _ = step_down((s_obs - mu_p) / sd_p, (tops - mu_p) / sd_p, alpha)
    # counting: standardised over the draws only (a strong signal would inflate the pooled spread)
    mu, sd = tops.mean(axis=0), _positive(tops.std(axis=0, ddof=1), tops)
    single = float(np.sort(((tops - mu) / sd).max(axis=1))[-_critical_rank(alpha, tops.shape[0])])
    deflation = bool(getattr(null, "supports_deflation", False))
    results = {}
    for j, (m, others) in enumerate(tests):
        tau = float(mu[j] + single * sd[j])
        sv = observed[j]
        if reject[j] and sv.size and sv[-1] > tau:
            sv = datafit.cross_singular_values(m, others, tau, max_count=max_count)
        rank = max(1, int(np.sum(sv > tau))) if reject[j] else 0
        last = np.nan
        if reject[j] and deflation:
            rank, sv, last = _deflated_count(datafit, null, draws, m, others, rank, sv, single, scale[j], tau,
                                             max_count)
        results[(m, tuple(others))] = (tau, sv, {"rank": rank, "p_value": float(p_values[j]),
                                                  "first_threshold": float(mu_p[j] + critical[j] * sd_p[j]),
                                                  "deflated_threshold": float(last)})

    def test(m, others):
        return results[(m, tuple(others))]

    return test


def _deflated_count(datafit, null, draws, m, others, rank, sv, c, scale, tau, max_count):
    """Extend a rejected test's count by deflation: with ``k`` singular values counted, the
    ``(k + 1)``-th is counted when it exceeds ``mu_k + c sd_k``, the moments of the null's top
    singular value with the observed top-``k`` singular directions projected off both sides
    (:meth:`~hclstat.moments.data.CentredData.deflated_permutation_nulls`) and ``c`` the family's
    single-step critical value. Returns ``(rank, singular values, the threshold that stopped it)``
    (NaN when no deflated null was formed).

    A singular value below :data:`DEFLATION_GATE` times the undeflated threshold ``tau`` stops
    the count without a deflated null (they cost one projected Gram per draw).
    """
    cap = min(datafit.dims[m], sum(datafit.dims[o] for o in others)) - 1
    if max_count is not None:
        cap = min(cap, int(max_count))
    last = np.nan
    while rank < cap:
        if sv.size > rank and not sv[rank] > DEFLATION_GATE * tau:
            break
        left, s, right = datafit.cross_svd(m, others, rank + 1)
        if s.size <= rank:
            break
        if sv.size <= rank:
            sv = s
            if not sv[rank] > DEFLATION_GATE * tau:
                break
        left, right = left[:, :rank], right[:, :rank]
        t = scale * np.asarray(null.deflated_permutation_nulls(m, others, left, right, draws), dtype=np.float64)
        sd = float(_positive(np.atleast_1d(t.std(ddof=1)), t[:, None])[0])
        last = float(t.mean() + c * sd)
        if not sv[rank] > last:
            break
        rank += 1
    return rank, sv, last


def _critical_rank(alpha, B):
    """Which largest of ``B`` null maxima is the level-``alpha`` critical value: the
    ``floor(alpha (B + 1))``-th (at least the first)."""
    return max(1, int(math.floor(alpha * (B + 1) + 1e-9)))


def _positive(sd, values):
    """Standard deviations with exact zeros (constant statistics) replaced by a tiny positive scale."""
    return np.where(sd > 0, sd, np.finfo(float).eps * np.maximum(np.abs(values).max(axis=0), 1.0))


def row_source(views, means, *, moments=None, subsample=False, random_state=None):
    """The rows behind the permutation nulls, as a dense-null :class:`CentredData`.

    ``views`` (NaN: missing) are centred with ``means``. Missing entries: each
    modality's observation mask goes with its rows (pairwise-complete nulls,
    as the moments; a missing entry holds its column's mean). A complete
    ``subsample`` of the rows behind ``moments`` has its covariances matched
    to the full sample's (:func:`~hclstat.moments.nulls.matched_rows`) and
    carries ``null_geometry`` (:func:`finite_size_factor`); with missing
    entries a subsample is rescaled to first order only.
    """
    views = {m: np.asarray(x, dtype=np.float64) for m, x in views.items()}
    masks = {m: ~np.isnan(x) for m, x in views.items()}
    if all(w.all() for w in masks.values()):
        masks = None
    means = {m: np.asarray(means[m], dtype=np.float64) for m in views}
    if masks is not None:
        views = {m: np.where(masks[m], x, means[m]) for m, x in views.items()}
    elif subsample:
        views = {m: matched_rows(x, moments.block(m, m)) for m, x in views.items()}
        means = {m: np.zeros(x.shape[1]) for m, x in views.items()}
    source = CentredData(views, means=means, random_state=random_state, dense_nulls=True, masks=masks)
    if subsample and masks is None:
        source.null_geometry = null_geometry(moments)
    return source
