"""Learning the sharing pattern: the cross-covariance rank lattice.

For a modality ``m`` and a set ``U`` of other modalities,

    rank Cov(x_m, x_U) = sum of k_S over structures S ∋ m that meet U

— noise-free, so no noise model is needed. Each rank is estimated by counting
singular values of the sample cross-covariance above a threshold from joint
row-permutation nulls (every modality's rows shuffled independently), all
``M (2^{M-1} - 1)`` tests decided together at a stated family-wise level
(:mod:`hclstat.calibration`: under independent modalities, the chance of any
cross rank above 0 is at most the level); every non-specific ``k_S`` then
follows by Möbius inversion over ``U``. Each ``S``
gets one estimate per member; the final ranks are the integer least-squares fit
of *all* observed ranks (started from the rounded median of the member
estimates), and disagreement between members is reported.

Specific ranks (the whitened within-modality residual after the shared
subspace) live in :mod:`hclstat.specific`; their names are re-exported here.

One algorithm (:func:`lattice_from_tests`) takes its tests from a threshold
policy; both policies here read a datafit (:mod:`hclstat.moments.base`):
:func:`permutation_test` (the family-wise procedure on a row source) and
:func:`bound_test` (an analytic null bound, no rows). :func:`datafit_lattice`
is what the estimators call; :func:`rank_lattice` its array / Moments form.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .calibration import draw_joint_permutations, familywise_test, resolve_permutations, row_source
from .moments.base import require
from .moments.compute import Moments, compute_moments
from .moments.covariance import CovarianceDatafit
from .specific import (  # noqa: F401 (re-exported: the specific-rank tests moved to hclstat.specific)
    _TW1_QUANTILES,
    _tw1_quantile,
    _whitened_rank,
    datafit_specific_ranks,
    lattice_hierarchy,
    lrt_rank,
    noise_whitened_rank,
    specific_level,
    specific_ranks,
    white_noise_edge,
)
from .utils import check_random_state

__all__ = [
    "RankLattice",
    "bound_test",
    "datafit_lattice",
    "datafit_specific_ranks",
    "fit_structure_ranks",
    "implied_rank",
    "lattice_from_tests",
    "lattice_tests",
    "lattice_hierarchy",
    "lrt_rank",
    "mobius_estimates",
    "noise_whitened_rank",
    "permutation_test",
    "rank_lattice",
    "specific_level",
    "specific_ranks",
    "white_noise_edge",
]


@dataclass
class RankLattice:
    """Observed cross-covariance ranks and the structure ranks they imply.

    Attributes
    ----------
    observed : DataFrame
        One row per (modality, set U): ``rank``, ``threshold`` (the level the
        singular values are counted against) and the largest sample singular
        value; with the family-wise procedure also ``p_value`` (step-down
        adjusted) and ``first_threshold`` (the level the largest singular value
        met in the step-down).
    member_estimates : DataFrame
        One row per (structure, member modality): the Möbius estimate of ``k_S``.
    ranks : dict of frozenset to int
        Final non-specific ranks (integer least squares over all observed ranks).
    consistent : bool
        Whether every structure's member estimates agree with each other.
    misfit : float
        Sum of squared differences between observed ranks and those implied by ``ranks``.
    """

    observed: pd.DataFrame
    member_estimates: pd.DataFrame
    ranks: dict
    consistent: bool
    misfit: float
    thresholds: dict = field(default_factory=dict)


def _others(modalities, m):
    return [o for o in modalities if o != m]


def _nonempty_subsets(items):
    for size in range(1, len(items) + 1):
        for c in itertools.combinations(items, size):
            yield frozenset(c)


def implied_rank(ranks, m, U):
    """``rank Cov(x_m, x_U) = sum k_S`` over structures ``S ∋ m`` meeting ``U``
    (uncorrelated latents, general position)."""
    return int(sum(k for s, k in ranks.items() if m in s and s & U))


def mobius_estimates(observed, m, others):
    """Member ``m``'s estimate of every ``k_{{m} ∪ T}``, ``T ⊆ others`` non-empty.

    ``k_{{m}∪T} = -sum_{V ⊆ T} (-1)^{|T \\ V|} rank Cov(x_m, x_{W \\ V})`` with
    ``W = others``, ``observed[(m, U)] = rank Cov(x_m, x_U)`` and
    ``rank Cov(x_m, x_∅) = 0``.
    """
    W = frozenset(others)
    est = {}
    for T in _nonempty_subsets(list(others)):
        total = 0
        for size in range(len(T) + 1):
            for V in itertools.combinations(sorted(T, key=list(others).index), size):
                rest = W - frozenset(V)
                if rest:
                    total += (-1) ** (len(T) - size) * observed[(m, rest)]
        est[frozenset([m]) | T] = -total
    return est




def fit_structure_ranks(observed_ranks, modalities, start):
    """Integer least-squares fit of non-specific ranks to observed cross ranks.

    ``observed_ranks`` maps ``(m, U)`` to an observed rank. Starting from
    ``start`` ({structure: int}), the best single-unit move (+1/-1 on one
    structure) is taken while it lowers the squared misfit; ties keep the
    current value (and, among moves, the first structure in canonical order).
    Taking the *best* move, not the first improving one, makes a start one unit
    from an exact fit return that fit.
    """
    structs = [frozenset(c) for size in range(len(modalities), 1, -1) for c in itertools.combinations(modalities, size)]
    ranks = {s: max(0, int(start.get(s, 0))) for s in structs}

    def misfit(r):
        return float(sum((obs - implied_rank(r, m, U)) ** 2 for (m, U), obs in observed_ranks.items()))

    best = misfit(ranks)
    while True:
        move, move_val = None, best - 1e-12
        for s in structs:
            for step in (-1, 1):
                if ranks[s] + step < 0:
                    continue
                ranks[s] += step
                val = misfit(ranks)
                ranks[s] -= step
                if val < move_val:
                    move, move_val = (s, step), val
        if move is None:
            break
        ranks[move[0]] += move[1]
        best = move_val
    return {s: k for s, k in ranks.items() if k > 0}, best


def lattice_tests(modalities):
    """The lattice's tests ``(m, others)`` in the order they run: modality by modality,
    every non-empty ``U`` of the other modalities (by size, then position)."""
    mods = list(modalities)
    for m in mods:
        W = _others(mods, m)
        for U in _nonempty_subsets(W):
            yield m, [o for o in W if o in U]


def permutation_test(datafit, null, draws, *, alpha=0.01, max_count=None):
    """Threshold policy: the family-wise procedure on joint row-permutation nulls.

    Every test of the lattice is decided at once by the Westfall-Young
    step-down max-T procedure of :func:`hclstat.calibration.familywise_test`
    on the statistics of ``null`` (a row source) under the joint ``draws``
    (:func:`hclstat.calibration.draw_joint_permutations`); ``datafit``
    supplies the observed values. Under independent modalities the chance
    that any cross rank of the lattice comes out above 0 is at most ``alpha``.
    """
    require(null, ["permutation_nulls"], "the permutation threshold policy")
    require(datafit, ["cross_singular_values"], "the rank lattice")
    return familywise_test(datafit, null, draws, lattice_tests(datafit.modalities), alpha=alpha,
                           max_count=max_count)


def bound_test(datafit, *, max_count=None):
    """Threshold policy without rows: the datafit's analytic null bound of ``S_{m,U}``."""
    require(datafit, ["null_bound", "cross_singular_values"], "the bound threshold policy")

    def test(m, others):
        tau = datafit.null_bound(m, others)
        return tau, datafit.cross_singular_values(m, others, tau, max_count=max_count)

    return test


def datafit_lattice(datafit, *, null=None, n_permutations=None, max_rank=None, random_state=None, level=0.01):
    """The rank lattice of a datafit.

    With a row source ``null`` (a datafit with ``permutation_nulls``, e.g.
    :class:`~hclstat.moments.data.CentredData` on the rows or a subsample of
    them) the tests are decided together at family-wise level ``level``
    (:func:`permutation_test`), the joint permutations drawn from
    ``random_state`` modality by modality before anything else; without one,
    by the analytic bound (:func:`bound_test`, no stated level). See
    :func:`rank_lattice` for ``n_permutations``, ``level`` and ``max_rank``.
    """
    mods = list(datafit.modalities)
    if len(mods) < 2:
        raise ValueError(f"rank lattice: need at least 2 modalities, got {len(mods)}")
    if n_permutations is not None and n_permutations < 1:
        raise ValueError(f"n_permutations: expected a positive integer or None, got {n_permutations}")
    if level is None or not 0 < level < 1:
        raise ValueError(f"level: expected a family-wise level in (0, 1), got {level!r}")
    if null is None:
        test = bound_test(datafit, max_count=max_rank)
    else:
        count = resolve_permutations(n_permutations, level)
        draws = draw_joint_permutations(mods, null.n_samples, count, check_random_state(random_state))
        test = permutation_test(datafit, null, draws, alpha=level, max_count=max_rank)
    return lattice_from_tests(mods, test, max_rank=max_rank)


def rank_lattice(arrays=None, *, moments=None, n_permutations=None, max_rank=None, random_state=None, level=0.01):
    """Estimate the non-specific ranks from centred data.

    Parameters
    ----------
    arrays : dict of str to ndarray of shape (n_null, p_m), optional
        Centred views, or a random subset of their rows, for the permutation
        nulls; NaN marks a missing entry (its mask moves with its row and every
        null block is pairwise complete, as the statistic). When ``moments``
        is given too, the observed cross-covariances come from it; a complete
        subsample (``n_null < n``) then has its covariances matched to
        ``moments`` (:func:`hclstat.moments.nulls.matched_rows`) and its null
        levels rescaled by ``sqrt((n_null - 1) / (n - 1))`` times the
        second-order :func:`hclstat.calibration.finite_size_factor`.
    moments : Moments, optional
        Used when ``arrays`` is None: thresholds then come from the bound
        ``(sqrt(tr S_mm ||S_UU||) + sqrt(tr S_UU ||S_mm||)) / sqrt(n)`` on the
        spectral norm of the cross-covariance of independent blocks instead of
        permutations (no stated level).
    n_permutations : int or None
        Joint permutations (each permutes every modality's rows independently).
        ``None``: ``max(99, ceil(1 / level) - 1)``. Fewer than
        ``ceil(1 / level) - 1`` cannot reach the level: a ValueError.
    level : float
        Family-wise level of the whole lattice: under independent modalities
        the probability that any cross rank comes out above 0 is at most
        ``level`` (Westfall-Young step-down max-T over all
        ``M (2^{M-1} - 1)`` tests, :mod:`hclstat.calibration`; exact up to
        the Monte Carlo standardisation when the nulls use every row).
        Singular values beyond the first of a test are counted against its
        single-step family threshold.
    max_rank : int, optional
        Cap on any observed cross rank.

    Returns
    -------
    RankLattice
    """
    if arrays is None and moments is None:
        raise ValueError("rank lattice: pass the centred views (arrays) or their moments")
    null = None
    if arrays is not None:
        X = {m: np.asarray(a, dtype=np.float64) for m, a in arrays.items()}
        n_null = next(iter(X.values())).shape[0]
        subsample = moments is not None and n_null < moments.n_samples
        if moments is None:
            missing = any(np.isnan(a).any() for a in X.values())
            moments = compute_moments(X) if missing else _moments_of_centred(X)
        # Krylov starts (wide blocks only) from a child stream: the permutations keep the stream itself
        random_state = check_random_state(random_state)
        null = row_source(X, {m: np.zeros(a.shape[1]) for m, a in X.items()}, moments=moments,
                          subsample=subsample, random_state=random_state.spawn(1)[0])
    return datafit_lattice(CovarianceDatafit(moments), null=null, n_permutations=n_permutations,
                           max_rank=max_rank, random_state=random_state, level=level)


def _moments_of_centred(X):
    """:class:`Moments` of views that are centred already (``X^T X / (n - 1)``)."""
    mods = tuple(X)
    Xs = np.concatenate([X[m] for m in mods], axis=1)
    n = Xs.shape[0]
    return Moments(mods, {m: X[m].shape[1] for m in mods}, Xs.T @ Xs / (n - 1), n, np.zeros(Xs.shape[1]),
                   None, {m: None for m in mods})


def lattice_from_tests(modalities, test, *, max_rank=None):
    """The rank lattice from its tests, however they are computed.

    ``test(m, others)`` returns the threshold of ``rank Cov(x_m, x_U)`` for
    ``U = others`` and the singular values of the cross-covariance above it
    (at least its largest one), optionally with a dict of extra columns for
    :attr:`RankLattice.observed` (a ``rank`` there is the test's decision;
    otherwise the rank is the number of singular values above the threshold).
    Tests run in the order of :func:`lattice_tests`. Möbius inversion gives
    each member's estimate of every non-specific rank, and the integer
    least-squares fit of all observed ranks (from the rounded median of the
    member estimates) decides.
    """
    mods = list(modalities)
    rows, member_rows, observed, thresholds, estimates, r = [], [], {}, {}, {}, {}
    for m, others in lattice_tests(mods):
        U = frozenset(others)
        tau, sv, *extra = test(m, others)
        extra = dict(extra[0]) if extra else {}
        k = int(extra.pop("rank")) if "rank" in extra else int(np.sum(sv > tau))
        if max_rank is not None:
            k = min(k, int(max_rank))
        r[(m, U)] = observed[(m, U)] = k
        thresholds[(m, U)] = tau
        rows.append({"modality": m, "U": ",".join(others), "rank": k, "threshold": tau,
                     "top_singular_value": float(sv[0]) if sv.size else 0.0, **extra})
        if len(U) == len(mods) - 1:  # the last test of m: its Möbius estimates
            for s, val in mobius_estimates(r, m, _others(mods, m)).items():
                estimates.setdefault(s, {})[m] = val
                member_rows.append({"structure": ",".join(o for o in mods if o in s), "modality": m,
                                    "estimate": val})
            r = {}
    start = {s: int(np.round(np.median(list(e.values())))) for s, e in estimates.items()}
    consistent = all(len(set(e.values())) == 1 for e in estimates.values())
    ranks, misfit = fit_structure_ranks(observed, mods, start)
    return RankLattice(
        observed=pd.DataFrame(rows),
        member_estimates=pd.DataFrame(member_rows),
        ranks=ranks,
        consistent=consistent,
        misfit=misfit,
        thresholds=thresholds,
    )
