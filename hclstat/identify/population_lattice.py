"""The rank lattice of a population covariance and the agreement of its members.

The ranks are decided by the package's one lattice algorithm,
:func:`hclstat.lattice.lattice_from_tests` (Möbius inversion per member, then
the integer least-squares fit of every observed rank); only the threshold
policy differs from the sample lattice: a singular value of ``Cov(x_m, x_U)``
counts iff it exceeds ``tol * sqrt(||Sigma_mm||_2 ||Sigma_UU||_2)`` (the
Cauchy–Schwarz bound of the block, so the threshold is invariant to rescaling
``x_m`` or ``x_U``), where the sample lattice uses a permutation null.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..lattice import implied_rank, lattice_from_tests
from .subspaces import norm2

__all__ = ["RankConsistency", "population_lattice", "RANK_RULE"]

RANK_RULE = (
    "integer least squares (hclstat.lattice.fit_structure_ranks): the non-negative structure "
    "ranks whose implied cross-covariance ranks fit every observed rank best, searched from the "
    "rounded median of the member estimates"
)


def order_key(index):
    """Canonical structure order (global first, then by size, then modality order)."""
    return lambda s: (-len(s), sorted(index[m] for m in s))


def label(s, index):
    return "{" + ",".join(sorted(s, key=index.__getitem__)) + "}"


def subsets(items):
    """Non-empty subsets of ``items`` as frozensets, by increasing size."""
    items = list(items)
    for r in range(1, len(items) + 1):
        for c in itertools.combinations(items, r):
            yield frozenset(c)


def population_lattice(Sigma, base, tol):
    """The rank lattice of ``Sigma`` under the population threshold policy.

    Parameters
    ----------
    Sigma : ndarray of shape (p, p)
        Covariance of the stacked modalities of ``base``.
    base : Hierarchy
        Supplies the modalities and their column slices.
    tol : float
        Relative threshold (see the module docstring).

    Returns
    -------
    lattice : RankLattice
        As :func:`hclstat.lattice.lattice_from_tests` returns it.
    observed : dict
        ``{(m, U): (rank, singular values relative to the threshold's scale)}``,
        the ranks being the lattice's own.
    """
    sl = base.feature_slices()
    norm_m = {m: norm2(Sigma[sl[m], sl[m]]) for m in base.modalities}
    keys, relative = [], []

    def test(m, others):
        idx = np.concatenate([np.arange(sl[o].start, sl[o].stop) for o in others])
        s = np.linalg.svd(Sigma[sl[m]][:, idx], compute_uv=False)
        scale = np.sqrt(norm_m[m] * norm2(Sigma[np.ix_(idx, idx)]))
        keys.append((m, frozenset(others)))
        relative.append(s / scale if scale > 0 else np.zeros_like(s))
        # a zero block (scale 0) has rank 0: no value exceeds an infinite threshold
        return (tol * scale if scale > 0 else np.inf), s

    lattice = lattice_from_tests(base.modalities, test)
    # lattice_from_tests records one row per test, in the order the tests ran
    ranks = lattice.observed["rank"].to_numpy()
    return lattice, {key: (int(r), rel) for key, r, rel in zip(keys, ranks, relative)}


class RankConsistency:
    """Agreement of the rank estimates of each structure across its members.

    Each non-specific structure ``S`` gets ``|S|`` estimates of ``k_S``, one per
    member modality (Möbius inversion of that modality's rank lattice). Under
    the model (uncorrelated latents, general position) they coincide. The final
    ranks are not a vote among them: the lattice's integer least-squares fit of
    all observed ranks decides (see ``rule``).

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
    misfit : float
        Sum of squared differences between the observed cross-covariance ranks
        and those the final ranks imply (0 when the lattice is consistent).
    """

    def __init__(self, table, consistent, disagreements, rule, misfit=0.0):
        self.table = table
        self.consistent = bool(consistent)
        self.disagreements = list(disagreements)
        self.rule = rule
        self.misfit = float(misfit)

    def __bool__(self):
        return self.consistent

    def __repr__(self):
        state = "consistent" if self.consistent else f"{len(self.disagreements)} disagreement(s)"
        return f"RankConsistency({state}; rule: {self.rule})"


def rank_consistency(lattice, base):
    """The member estimates of ``lattice`` against its final ranks, as a :class:`RankConsistency`."""
    mods = base.modalities
    index = {m: i for i, m in enumerate(mods)}
    # the lattice labels a structure by its members in modality order, joined by ","
    names = {",".join(o for o in mods if o in s): s for s in subsets(mods) if len(s) > 1}
    estimates = {}
    for row in lattice.member_estimates.itertuples(index=False):
        estimates.setdefault(names[row.structure], {})[row.modality] = int(row.estimate)
    rows, lines = [], []
    for s in sorted(estimates, key=order_key(index)):
        members = [m for m in mods if m in s]
        vals = [estimates[s][m] for m in members]
        final = int(lattice.ranks.get(s, 0))
        agree = len(set(vals)) == 1 and vals[0] >= 0
        if not agree:
            lines.append(
                f"structure {label(s, index)}: member estimates "
                + ", ".join(f"{m}: {v}" for m, v in zip(members, vals))
                + f"; final rank {final}"
            )
        if final or any(vals):
            row = {m: float(estimates[s][m]) if m in s else np.nan for m in mods}
            row.update(final=final, agree=agree)
            rows.append((label(s, index), row))
    table = pd.DataFrame(
        [r for _, r in rows],
        index=pd.Index([n for n, _ in rows], name="structure"),
        columns=list(mods) + ["final", "agree"],
    )
    return RankConsistency(table, not lines, lines, RANK_RULE, lattice.misfit)


def rank_table(base, ranks, observed):
    """The ``dimensions`` table: observed vs expected ``rank Cov(x_m, x_U)``."""
    index = {m: i for i, m in enumerate(base.modalities)}
    rows = []
    for m in base.modalities:
        for U in subsets([o for o in base.modalities if o != m]):
            row = {"modality": m, "with": label(U, index), "expected": implied_rank(ranks, m, U)}
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
