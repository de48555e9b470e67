"""The penalised path over calibrated multipliers, and the choice of a support."""

from __future__ import annotations

import numpy as np

from ..penalties.block_group import BlockGroupPenalty
from .fit import fit_support
from .selection import (
    describe_support,
    gaussian_bic,
    hierarchy_from_support,
    noise_variances,
    support_key,
)

__all__ = ["DEFAULT_LAMBDAS", "choose_support", "penalised_path"]

#: multipliers of the calibrated block weights (1: the level noise alone reaches)
DEFAULT_LAMBDAS = (1.0, 2.0, 4.0)


def penalised_path(solver, datafit, psi, support0, A0, n, h, *, lambdas=None, selection="lattice",
                   noise_model="diagonal"):
    """Run the penalised path from the lattice fit ``A0`` and choose a support.

    Every (modality, component) block is free, with the calibrated weights of
    :meth:`~hclstat.penalties.BlockGroupPenalty.calibrated` at ``A0``; each
    multiplier (increasing) starts from the previous solution and reads a
    support off its non-zero blocks. The choice among the lattice support and
    the visited ones is :func:`choose_support`.

    Returns
    -------
    support : ndarray of shape (M, K') of bool
    A : ndarray of shape (p, K')
        Loadings of the chosen support (the lattice fit ``A0`` when it is kept).
    rows : list of dict
        One per multiplier (``lambda``, ``pattern``, ``support``,
        ``agrees_with_lattice``, ``objective``, ``rejected_steps``, ``selected``;
        ``bic`` with ``selection="bic"``), then the lattice pattern at ``lambda = 0``.
    """
    dh = 1.0 / np.sqrt(psi)
    dfw = datafit.rescaled(dh)
    A = A0 * dh[:, None]
    penalty = BlockGroupPenalty.calibrated(dfw, A, n)
    M, K = support0.shape
    free_all = np.ones((M, K), dtype=bool)
    key0 = support_key(support0)
    candidates, rows = {key0: support0}, []
    for lam in sorted(DEFAULT_LAMBDAS if lambdas is None else tuple(lambdas)):
        A, objective, rejected = solver.penalised(dfw, A, free_all, penalty.levels(lam))
        sl = list(dfw.slices.values())
        sup = np.array([[np.any(A[sl[a], j] != 0.0) for j in range(K)] for a in range(M)])
        candidates.setdefault(support_key(sup), sup)
        rows.append({"lambda": lam, "pattern": describe_support(h, sup), "support": support_key(sup),
                     "agrees_with_lattice": support_key(sup) == key0, "objective": objective,
                     "rejected_steps": rejected})
    return choose_support(solver, datafit, psi, support0, A0, n, h, candidates, rows, selection=selection,
                          noise_model=noise_model)


def choose_support(solver, datafit, psi, support0, A0, n, h, candidates, rows, *, selection="lattice",
                   noise_model="diagonal"):
    """The support kept — the lattice's, or with ``selection="bic"`` the smallest
    :func:`~hclstat.solvers.selection.gaussian_bic` among it and the candidates
    (each refitted without penalty) — its loadings, and the finished path rows."""
    key0 = support_key(support0)
    best, fits, scores = key0, {key0: (support0, A0)}, {}
    if selection == "bic":
        sizes = np.array([s.stop - s.start for s in datafit.slices.values()])
        for key, sup in candidates.items():
            keep = sup.any(axis=0)
            sub = sup[:, keep]
            if not keep.any() or np.any(sub.sum(axis=1) > sizes - 1):
                continue  # empty, or leaves a modality no noise dimension
            hk = hierarchy_from_support(h, sub)
            start = A0 if key == key0 else (A0 * np.repeat(sup, sizes, axis=0))[:, keep]
            Ak, _ = fit_support(solver, datafit, psi, sub, hk, start)
            scores[key] = gaussian_bic(datafit, Ak, noise_variances(datafit, Ak, noise_model), sub, n, noise_model)
            fits[key] = (sub, Ak)
        best = min(scores, key=scores.get)
        for r in rows:
            r["bic"] = scores.get(r["support"], np.nan)
    for r in rows:
        r["selected"] = r["support"] == best
    rows.append({"lambda": 0.0, "pattern": describe_support(h, support0), "support": key0,
                 "agrees_with_lattice": True, "objective": np.nan, "rejected_steps": 0, "selected": key0 == best,
                 **({"bic": scores.get(key0, np.nan)} if selection == "bic" else {})})
    sub, Ak = fits[best]
    return sub, Ak, rows
