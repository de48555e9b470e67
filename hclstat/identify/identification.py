"""Identification of a hierarchical latent-variable model from its covariance: :func:`identify`."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..exceptions import EstimationWarning, IdentifiabilityError
from ..hierarchy import Hierarchy
from ..model import HierarchicalModel
from ..moments import Moments
from .noise import within_modality
from .population_lattice import RANK_RULE, population_lattice, rank_consistency, rank_table
from .subspaces import cross_cores, nonspecific_subspaces, within_cores_from_cross
from .validation import check_covariance, check_dims, check_noise_model, check_tol

__all__ = ["Identification", "identify"]


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
        :class:`RankConsistency`); the final ranks are still those of the lattice's
        integer least-squares fit of every observed rank.

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

    Each ``S`` gets ``|S|`` such estimates; they must agree. The ranks are
    decided by the package's one rank lattice,
    :func:`hclstat.lattice.lattice_from_tests` (the same Möbius inversion and
    the same integer least-squares fit of all observed ranks as the sample
    lattice :func:`hclstat.lattice.rank_lattice`), with the population
    threshold above in place of a permutation null. Under the model the fit
    is exact (misfit 0) and returns the member estimates.

    *Subspaces* by bilinear annihilation (not orthogonal complements, DESIGN
    §6): ``col A_{m,S} = col(Sigma_{mm'} Π⊥_{N})`` with ``N`` the span, in
    modality ``m'``, of the other structures that appear in ``Sigma_{mm'}``
    (see :func:`~hclstat.identify.subspaces.nonspecific_subspaces`). *Cross blocks*: with
    ``B_m = [Q_{m,S''}]_{S'' ⊇ {m,m'}}``, the ``S`` block of
    ``B_m^+ Sigma_{mm'} B_{m'}^{+T}``. *Within blocks*, ``|S| >= 3``:
    ``A_m A_m^T = (A_m A_{m'}^T)(A_{m''}A_{m'}^T)^+(A_{m''}A_m^T)``.

    *Specific parts* (noise model). ``R_m = Sigma_mm - sum_{|S|>=3} A_{m,S}A_{m,S}^T
    = X_m + Psi_m`` with ``X_m`` PSD of rank ``r'_m = sum_{S ∋ m, |S| <= 2} k_S``.
    Isotropic: ``sigma_m^2`` is the bottom eigenvalue level of ``R_m`` (needs
    ``r'_m < p_m``). Diagonal: factor analysis of ``R_m`` — off-diagonal rank,
    Albert's closed form when ``p_m >= 2 r'_m + 1`` (the exact population
    solution), else :func:`hclstat.factor_analysis.fa_noise` refined to an exact
    root (see :func:`hclstat.identify.noise.fit_diagonal`); identified generically under the Ledermann bound ``(p_m - r'_m)^2 > p_m + r'_m``
    (or ``p_m >= 2 r'_m + 1``).
    Then with ``W_m = Sigma_mm - Psi_m`` and ``N_m`` the non-specific span,
    ``col A_{m,{m}} = col(W_m Π⊥_{N_m})`` and the within blocks of the ``|S| <= 2``
    structures are the diagonal blocks of ``B^+ W_m B^{+T}``,
    ``B = [Q_{m,S}]_{S ∋ m}``.
    """
    if dims is None and isinstance(covariance, Moments):
        dims = covariance.dims
    base = check_dims(dims)
    Sigma = check_covariance(covariance, base)
    noise_model = check_noise_model(noise_model)
    tol = check_tol(tol)
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
        lattice, observed = population_lattice(Sigma, base, tol)
        consistency = rank_consistency(lattice, base)
        ns_ranks = {s: k for s, k in lattice.ranks.items() if k > 0}
        if not consistency.consistent:
            warnings.warn(
                "rank estimates disagree across member modalities ("
                + "; ".join(consistency.disagreements)
                + f"). Final ranks by {RANK_RULE} (misfit {lattice.misfit:g}). The covariance may come from "
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
    Q = nonspecific_subspaces(Sigma, base, ns_ranks)
    cores = cross_cores(Sigma, base, ns_ranks, Q)
    for s in ns_ranks:
        if len(s) >= 3:
            for m, G in within_cores_from_cross(s, cores, index).items():
                cores[(s, m, m)] = G

    # ---- specific parts and the remaining within blocks: the noise model
    noise_variances, spec_ranks = None, {}
    if noise_model is not None:
        noise_variances = {}
        for m in mods:
            given = None if hierarchy is None else hierarchy.rank(m)
            psi, k_spec, problems = within_modality(
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
        dimensions=rank_table(base, ranks, observed),
        unidentified=_unidentified_statements(h, noise_model),
        rank_consistency=consistency, noise_variances=noise_variances,
        noise_model=noise_model, tol=tol,
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

