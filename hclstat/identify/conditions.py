"""The conditions of identification: for a hierarchy, and for a concrete model."""

from __future__ import annotations

import itertools

import numpy as np

from ..hierarchy import Hierarchy
from ..lattice import implied_rank
from ..model import HierarchicalModel
from .noise import diagonal_max_rank
from .population_lattice import label, population_lattice
from .validation import DEFAULT_TOL, check_noise_model, check_tol

__all__ = ["IdentifiabilityReport", "check_identifiable", "check_model"]


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
      the latter identify uses a closed form; otherwise the iterative
      factor-analysis fit :func:`hclstat.factor_analysis.fa_noise` (a note says so).
    * ``noise_model=None``: the non-specific structures are identified;
      specific structures and the within blocks of ``|S| = 2`` structures never
      are (listed in ``notes``), and ``identifiable`` refers to the rest.

    Returns
    -------
    IdentifiabilityReport
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy: expected a Hierarchy, got {type(hierarchy).__name__}")
    noise_model = check_noise_model(noise_model)
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
                "(Ledermann bound holds) but identify() uses the iterative factor-analysis fit "
                "(fa_noise) instead of the closed form"
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
    tol = check_tol(tol)
    if noise_model == "auto":
        noise_model = _detect_noise_model(model)
    noise_model = check_noise_model(noise_model)
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
        _, observed = population_lattice(Sigma, Hierarchy(h.dims, {}), tol)
        for (m, U), (r, _) in observed.items():
            expected = implied_rank(h.ranks, m, U)
            if r != expected:
                reasons.append(
                    f"rank Cov(x_{m}, x_{label(U, {x: i for i, x in enumerate(h.modalities)})}) = {r}"
                    f" but the hierarchy implies {expected}"
                )
    ident = check_identifiable(h, noise_model)
    return IdentifiabilityReport(reasons + ident.reasons, ident.notes)

