"""Identification of a hierarchical latent-variable model from its covariance.

Given the covariance of the stacked modalities, :func:`identify` recovers:

* the hierarchy — every structure ``S`` and its rank ``k_S`` — from the *rank
  lattice* of the cross-covariances (the package's one lattice algorithm,
  :func:`hclstat.lattice.lattice_from_tests`, under a population threshold),
  with a report of the agreement of member estimates;
* every column space ``col(A_{m,S})`` by *bilinear annihilation*;
* the signal blocks ``A_{m,S} A_{m',S}^T``;
* with a noise model, the specific structures and the noise variances.

All of it is exact linear algebra at the population level, except a diagonal
noise model outside Anderson & Rubin's ``p_m >= 2 r'_m + 1``, which needs the
iterative factor-analysis fit (refined to an exact root).
:func:`check_identifiable` and :func:`check_model` state the conditions, and
:func:`counterexample` builds correlated-latent models that break them.

Notation (DESIGN §1): ``x_m = sum_{S ∋ m} A_{m,S} z_S + e_m``;
``Sigma_{mm'} = sum_{S ⊇ {m,m'}} A_{m,S} A_{m',S}^T`` for ``m != m'``.
*General position* means that for every modality ``m`` the stacked loadings
``[A_{m,S}]_{S ∋ m}`` have full column rank.

Modules: :mod:`.population_lattice` (ranks and their agreement),
:mod:`.subspaces` (column spaces and signal blocks), :mod:`.noise`
(within-modality: noise model, specific part), :mod:`.identification`
(:func:`identify` and its result), :mod:`.conditions`, :mod:`.counterexample`.
"""

from .conditions import IdentifiabilityReport, check_identifiable, check_model
from .counterexample import COUNTEREXAMPLE_KINDS, counterexample
from .identification import Identification, identify
from .noise import diagonal_max_rank, ledermann_bound
from .population_lattice import RANK_RULE, RankConsistency
from .validation import DEFAULT_TOL, NOISE_MODELS

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
    "RANK_RULE",
    "COUNTEREXAMPLE_KINDS",
]
