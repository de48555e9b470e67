"""The HCL fitting pipeline on a datafit: two noise-scale passes, the optional path, the refit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import FitInfo
from .fit import fit_support
from .path import penalised_path
from .selection import merge_components, noise_variances, support_of

__all__ = ["PatternFit", "fit_hierarchy", "path_disagreements"]

#: whitening weights are capped at 1 / WEIGHT_FLOOR times the correlation-scale weight
WEIGHT_FLOOR = 1e-2


@dataclass
class PatternFit:
    """What :func:`fit_hierarchy` returns.

    Attributes
    ----------
    hierarchy : Hierarchy
        The fitted pattern (the given one, or the one the path selected).
    A : ndarray of shape (p, K)
        Stacked loadings.
    psi : ndarray of shape (p,)
        Noise variances.
    info : FitInfo
        Of the final refit.
    path : list of dict
        Rows of the penalised path (empty when it did not run).
    """

    hierarchy: object
    A: np.ndarray
    psi: np.ndarray
    info: FitInfo
    path: list = field(default_factory=list)


def fit_hierarchy(datafit, h, solver, *, noise_model="diagonal", run_path=False, selection="lattice",
                  lambdas=None):
    """Fit loadings and noise for hierarchy ``h`` on ``datafit`` with ``solver``.

    Pass 1 fits on the correlation scale (``D = diag S``), pass 2 on the noise
    scale of pass 1 (weights capped at ``1 / WEIGHT_FLOOR`` times those of
    pass 1: a near-zero noise estimate, a Heywood case, must not dominate the
    fit). With ``run_path`` the penalised path
    (:func:`~hclstat.solvers.path.penalised_path`) runs from pass 2, its chosen
    support is merged into structures and refitted.
    """
    d = datafit.stacked_diag()
    support = support_of(h)
    A, info = fit_support(solver, datafit, d, support, h, None)
    psi = noise_variances(datafit, A, noise_model)
    wscale = np.maximum(psi, WEIGHT_FLOOR * d)
    A, info = fit_support(solver, datafit, wscale, support, h, A)
    rows = []
    if run_path and h.n_components:
        support, A, rows = penalised_path(solver, datafit, wscale, support, A, datafit.n_samples, h,
                                          lambdas=lambdas, selection=selection, noise_model=noise_model)
        h, A, support = merge_components(h, A, support)
        A, info = fit_support(solver, datafit, wscale, support, h, A)
    return PatternFit(h, A, noise_variances(datafit, A, noise_model), info, rows)


def _ranks_of(pattern):
    """``{structure name: rank}`` from a path row's pattern string (``{a,b}:1 {c}:2``)."""
    if pattern == "(empty)":
        return {}
    return {name: int(k) for name, k in (item.rsplit(":", 1) for item in pattern.split())}


def path_disagreements(rows):
    """Readable differences between each path row that disagrees with the lattice and the
    lattice pattern (the ``lambda = 0`` row), e.g. ``"lambda=4: {c} 1 -> 0"``; empty when none."""
    if not rows:
        return []
    lattice = _ranks_of(rows[-1]["pattern"])
    out = []
    for r in rows[:-1]:
        if r["agrees_with_lattice"]:
            continue
        path = _ranks_of(r["pattern"])
        diffs = [f"{s} {lattice.get(s, 0)} -> {path.get(s, 0)}" for s in sorted(set(lattice) | set(path))
                 if lattice.get(s, 0) != path.get(s, 0)]
        out.append(f"lambda={r['lambda']:g}: " + (", ".join(diffs) or "same ranks, other components"))
    return out
