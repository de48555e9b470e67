"""The reference designs, defined once: D1, the published design (DESIGN §7) and
the real-table regimes of issue 13.

* **D1** — modalities ``a, b, c`` with ``p = (50, 60, 70)``; one global, one
  ``{a, b}`` and one specific component per modality (rank ``r`` each).
* **published** — ``M = 3`` modalities, every non-empty subset a structure of
  rank ``r`` (seven structures), dimensions such as ``(100, 500, 800)``,
  loadings ``U diag(d) R`` (:func:`~hclstat.model.engine.published_block`) and
  isotropic noise ``c I``.
* **wide** (p >> n) — ``p = (200, 400, 800)`` (:data:`WIDE_DIMS`), meant for
  ``n = 100`` rows; a rank-2 global, a rank-1 ``{a, b}`` and rank-2 specific
  structures, or no signal at all (:func:`wide_model`).
* **large ranks** — six modalities of widths 80, 200, 60, 250, 50 and 8
  (:data:`LARGE_RANK_DIMS`), 42 components in 11 structures
  (:data:`LARGE_RANK_RANKS`), with a 10-class label drawn from the latents
  (:class:`LatentClassRule`).
* **independent views** — no latent component at all, isotropic or
  heteroskedastic noise, ``p_m / n`` set by the caller
  (:func:`independent_views_model`): the null of every cross-covariance test.
* **mixed D1** (issue 14) — D1 with loading scale 0.5 observed through
  monotone links of its standardised latent columns (:func:`mixed_d1_model`):
  ``b`` binary (prevalence ``U[0.05, 0.3]`` per column), ``c`` zero-inflated
  and skewed (half zeros, the rest ``exp`` of the latent value), ``a``
  continuous; :func:`mixed_d1_all_model` also mixes ``a`` (ternary, 5-level
  ordinal and continuous columns interleaved).
"""

from __future__ import annotations

import itertools
import numbers

import numpy as np

from ..hierarchy import Hierarchy
from ..utils import check_random_state
from . import links as _links
from .engine import HierarchicalModel, MixedModel, draw_noise_variances, published_block

__all__ = [
    "D1_DIMS",
    "PUBLISHED_DIMS",
    "WIDE_DIMS",
    "LARGE_RANK_DIMS",
    "LARGE_RANK_RANKS",
    "LARGE_RANK_LABEL_STRUCTURES",
    "LatentClassRule",
    "d1_hierarchy",
    "d1_model",
    "independent_views_hierarchy",
    "independent_views_model",
    "large_rank_hierarchy",
    "large_rank_model",
    "mixed_d1_all_model",
    "mixed_d1_links",
    "mixed_d1_model",
    "published_hierarchy",
    "model_from_singular_values",
    "modality_names",
    "wide_hierarchy",
    "wide_model",
]

#: modality dimensions of design D1
D1_DIMS = {"a": 50, "b": 60, "c": 70}
#: modality dimensions of the published design
PUBLISHED_DIMS = {"a": 100, "b": 500, "c": 800}
#: modality dimensions of the p >> n design (issue 13, point 4; meant for n = 100)
WIDE_DIMS = {"a": 200, "b": 400, "c": 800}
#: modality dimensions of the large-rank design (issue 13, point 5; meant for n = 1600)
LARGE_RANK_DIMS = {"a": 80, "b": 200, "c": 60, "d": 250, "e": 50, "f": 8}
#: true ranks of the large-rank design: 14 shared and 28 specific components (K = 42);
#: modality totals a 13, b 18, c 8, d 19, e 8, f 4 (a width-8 block identifies at most 4)
LARGE_RANK_RANKS = {
    ("a", "b", "c", "d", "e", "f"): 3,
    ("a", "b"): 3,
    ("b", "d"): 4,
    ("a", "d"): 2,
    ("c", "d", "e"): 2,
    "a": 5,
    "b": 8,
    "c": 3,
    "d": 8,
    "e": 3,
    "f": 1,
}


def modality_names(M):
    """``a, b, c, ...`` for ``M <= 26``, ``m1, m2, ...`` beyond."""
    if M <= 26:
        return tuple(chr(ord("a") + i) for i in range(M))
    return tuple(f"m{i + 1}" for i in range(M))


def _dims(dims, default):
    if dims is None:
        return dict(default)
    if isinstance(dims, dict):
        return dict(dims)
    dims = tuple(dims)
    return dict(zip(modality_names(len(dims)), dims))


def d1_hierarchy(dims=None, rank=1):
    """Design D1: a global, a ``{first, second}`` and a specific structure per modality.

    Parameters
    ----------
    dims : dict or sequence of int, optional
        Modality dimensions (default :data:`D1_DIMS`); at least three modalities.
    rank : int
        Rank of every structure.
    """
    dims = _dims(dims, D1_DIMS)
    names = tuple(dims)
    if len(names) < 3:
        raise ValueError(f"dims: design D1 needs at least 3 modalities (a global and a partial structure), got {len(names)}")
    ranks = {names: rank, names[:2]: rank}
    ranks.update({m: rank for m in names})
    return Hierarchy(dims, ranks)


def d1_model(loading_scale=0.3, noise=1.0, *, dims=None, rank=1, noise_model="isotropic", random_state=None):
    """A D1 model with i.i.d. ``N(0, s^2)`` loadings (``s = loading_scale``) and noise level ``noise``."""
    return HierarchicalModel.random(d1_hierarchy(dims, rank), loading_scale=loading_scale, noise=noise,
                                    noise_model=noise_model, random_state=random_state)


def published_hierarchy(dims=None, rank=3):
    """Every non-empty subset of the modalities a structure of rank ``rank``
    (default dimensions :data:`PUBLISHED_DIMS`)."""
    dims = _dims(dims, PUBLISHED_DIMS)
    names = tuple(dims)
    subsets = [c for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)]
    return Hierarchy(dims, {s: rank for s in subsets})


def model_from_singular_values(hierarchy, singular_values, noise, *, noise_model="isotropic", random_state=None):
    """The published loading law with *given* singular values.

    ``singular_values[(S, m)]`` is the array of length ``k_S`` for block
    ``A_{m,S}``; every block is ``U diag(d) R`` with Haar ``U`` and ``R``;
    noise as in :meth:`HierarchicalModel.random`.
    """
    h = hierarchy
    rng = check_random_state(random_state)
    loadings = {s: {m: published_block(rng, h.dims[m], singular_values[(s, m)]) for m in h.modalities if m in s}
                for s in h.structures}
    return HierarchicalModel(h, loadings, draw_noise_variances(h, noise, noise_model, rng))


# ------------------------------------------------------------------ issue 13: real-table regimes
def wide_hierarchy(signal=True):
    """The p >> n design on :data:`WIDE_DIMS`: a rank-2 global, a rank-1 ``{a, b}``
    and a rank-2 specific structure per modality; ``signal=False``: no structure."""
    if not isinstance(signal, bool):
        raise TypeError(f"signal: expected a bool, got {signal!r}")
    names = tuple(WIDE_DIMS)
    ranks = {names: 2, names[:2]: 1, **{m: 2 for m in names}} if signal else {}
    return Hierarchy(WIDE_DIMS, ranks)


def wide_model(loading_scale=0.5, noise=1.0, *, signal=True, noise_model="isotropic", random_state=None):
    """The p >> n model of issue 13 (point 4): :func:`wide_hierarchy` with i.i.d.
    ``N(0, s^2)`` loadings (``s = loading_scale``) and noise level ``noise``.

    ``signal=False`` is the pure-noise variant on the same widths (no latent
    component): every specific rank a method finds there is false.
    """
    return HierarchicalModel.random(wide_hierarchy(signal), loading_scale=loading_scale, noise=noise,
                                    noise_model=noise_model, random_state=random_state)


def large_rank_hierarchy():
    """The large-rank design: :data:`LARGE_RANK_DIMS` with :data:`LARGE_RANK_RANKS`.

    A rank-3 global; ``{a, b}`` rank 3, ``{b, d}`` rank 4, ``{a, d}`` rank 2,
    ``{c, d, e}`` rank 2; specific ranks 5, 8, 3, 8, 3 and 1 (``a`` to ``f``):
    42 components, at most 19 in one modality.
    """
    return Hierarchy(LARGE_RANK_DIMS, LARGE_RANK_RANKS)


def large_rank_model(singular_values=(2.0, 4.0), noise=1.0, *, noise_model="diagonal", random_state=None):
    """The large-rank model of issue 13 (point 5) on :func:`large_rank_hierarchy`.

    Loadings follow the published law ``U diag(d) R`` with ``d_i ~ U[a, b]``,
    ``(a, b) = singular_values`` (the default ``(2, 4)`` puts every spike well
    above the detection edge at ``n = 1600``); the noise is heteroskedastic by default
    (``noise_model="diagonal"``: variances spread over a factor of 16 around
    ``noise``), as on real tables. Labels: :class:`LatentClassRule`.
    """
    return HierarchicalModel.random(large_rank_hierarchy(), singular_values=singular_values, noise=noise,
                                    noise_model=noise_model, random_state=random_state)


#: structures whose latents carry the class label of the large-rank design by default
LARGE_RANK_LABEL_STRUCTURES = (("a", "b", "c", "d", "e", "f"), ("b", "d"), ("c", "d", "e"), "b", "c")


class LatentClassRule:
    """A class label drawn from the latents: ``y = argmax_c (eta_c + noise * eps_c)``.

    ``eta = sum_S z_S B_S`` over the chosen structures, with ``B_S`` of shape
    ``(k_S, n_classes)`` i.i.d. ``N(0, 1 / k)`` (``k`` the number of latents
    used: every class score has unit variance) and ``eps_c`` i.i.d. ``N(0, 1)``.
    The coefficients are drawn once, from ``random_state``; each call draws
    fresh ``eps``.

    Parameters
    ----------
    model : HierarchicalModel
    n_classes : int
        At least 2.
    structures : sequence of structure keys, optional
        Structures of ``model`` whose latents enter ``eta`` (default
        :data:`LARGE_RANK_LABEL_STRUCTURES` when those are all in the model,
        else every structure).
    noise : float
        Standard deviation of ``eps`` relative to the unit-variance class scores.
    random_state : int, Generator or None

    Attributes
    ----------
    coefficients : dict of frozenset to ndarray of shape (k_S, n_classes)
    """

    def __init__(self, model, n_classes=10, *, structures=None, noise=0.1, random_state=None):
        if not isinstance(model, HierarchicalModel):
            raise TypeError(f"model: expected a HierarchicalModel, got {type(model).__name__}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 2:
            raise ValueError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
        if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or noise < 0:
            raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
        h = model.hierarchy
        if structures is None:
            default = [frozenset([s]) if isinstance(s, str) else frozenset(s) for s in LARGE_RANK_LABEL_STRUCTURES]
            fits = all(s <= set(h.modalities) and h.rank(s) > 0 for s in default)
            structures = default if fits else list(h.structures)
        keys = [h.structure(s) for s in structures]
        absent = [h.name(s) for s in keys if h.rank(s) == 0]
        if absent or not keys:
            raise ValueError(f"structures: expected structures of the model, got {absent or 'none'}")
        rng = check_random_state(random_state)
        k = sum(h.rank(s) for s in keys)
        self.n_classes = int(n_classes)
        self.noise = float(noise)
        self.coefficients = {s: rng.standard_normal((h.rank(s), self.n_classes)) / np.sqrt(k) for s in keys}

    def scores(self, latents):
        """Class scores ``eta``: ndarray of shape (n, n_classes)."""
        return sum(latents[s] @ b for s, b in self.coefficients.items())

    def __call__(self, latents, random_state=None):
        """Labels ``0 .. n_classes - 1``: ndarray of shape (n,)."""
        rng = check_random_state(random_state)
        eta = self.scores(latents)
        return np.argmax(eta + self.noise * rng.standard_normal(eta.shape), axis=1).astype(np.int64)


def independent_views_hierarchy(dims):
    """A hierarchy without any component on ``dims`` (independent, pure-noise views)."""
    return Hierarchy(_dims(dims, D1_DIMS), {})


def independent_views_model(p_over_n, n_samples, *, n_modalities=3, noise=1.0, noise_model="isotropic",
                            random_state=None):
    """Independent views for calibrating the rank tests: no latent component.

    Every modality has ``p_m = max(1, round(p_over_n * n_samples))`` columns;
    noise ``c I`` (``noise_model="isotropic"``) or heteroskedastic
    ``c diag(w)``, ``log w_j ~ U[-log 4, log 4]`` (``"diagonal"``). Any
    structure or rank a method finds on draws of ``n_samples`` rows is false.
    """
    if isinstance(p_over_n, bool) or not isinstance(p_over_n, numbers.Real) or p_over_n <= 0:
        raise ValueError(f"p_over_n: expected a positive number, got {p_over_n!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 2:
        raise ValueError(f"n_samples: expected an integer >= 2, got {n_samples!r}")
    if isinstance(n_modalities, bool) or not isinstance(n_modalities, numbers.Integral) or n_modalities < 2:
        raise ValueError(f"n_modalities: expected an integer >= 2, got {n_modalities!r}")
    p = max(1, int(round(p_over_n * n_samples)))
    h = independent_views_hierarchy({m: p for m in modality_names(n_modalities)})
    return HierarchicalModel.random(h, noise=noise, noise_model=noise_model, random_state=random_state)


# ------------------------------------------------------------------ issue 14: mixed types
def _mixed_a_columns(p):
    """Modality ``a`` of the all-mixed design: columns ``j % 5`` in {0, 1} ternary
    (category probabilities drawn, each >= 0.1), 2 continuous through ``exp``,
    {3, 4} continuous (identity). Only types the copula moments have a bridge
    for (:mod:`hclstat.moments.bridges`); ordinal columns with more levels are
    not among them."""
    kinds = (_links.ternary(), _links.ternary(), _links.continuous("exp"),
             _links.continuous(), _links.continuous())
    return [kinds[j % 5] for j in range(p)]


def mixed_d1_links(n_mixed="bc", dims=None):
    """The link specs of the mixed D1 designs (before the per-column draws).

    Parameters
    ----------
    n_mixed : str or iterable of str
        The modalities observed through their mixed link; the others stay
        continuous (identity). ``b``: ``binary(prevalence=(0.05, 0.3))``;
        ``c``: ``truncated(zero_fraction=0.5, transform="exp")``; ``a``:
        ternary and continuous columns (:func:`_mixed_a_columns`).
    dims : dict, optional
        Modality widths (default :data:`D1_DIMS`).
    """
    dims = _dims(dims, D1_DIMS)
    names = tuple(dims)
    mixed = tuple(n_mixed)
    bad = sorted(set(mixed) - set(names[:3]))
    if bad or len(set(mixed)) != len(mixed):
        raise ValueError(f"n_mixed: expected distinct modalities among {names[:3]}, got {n_mixed!r}")
    a, b, c = names[:3]
    specs = {b: _links.binary(prevalence=(0.05, 0.3)), c: _links.truncated(zero_fraction=0.5, transform="exp"),
             a: _mixed_a_columns(dims[a])}
    return {m: specs[m] for m in mixed}


def mixed_d1_model(loading_scale=0.5, *, n_mixed="bc", noise=1.0, rank=1, random_state=None):
    """The mixed-type D1 design of issue 14, a :class:`MixedModel`.

    :func:`d1_model` (``p = 50/60/70``, i.i.d. ``N(0, s^2)`` loadings with
    ``s = loading_scale``, isotropic noise ``noise``) observed through the
    links of :func:`mixed_d1_links`: by default (``n_mixed="bc"``) ``a``
    continuous, ``b`` binary with prevalence drawn ``U[0.05, 0.3]`` per column,
    ``c`` zero-inflated with half zeros and ``exp`` of the latent value above
    the threshold. The loadings are drawn first, then the link parameters,
    from one ``random_state``.
    """
    rng = check_random_state(random_state)
    model = d1_model(loading_scale, noise, rank=rank, random_state=rng)
    return MixedModel(model, mixed_d1_links(n_mixed, model.hierarchy.dims), random_state=rng)


def mixed_d1_all_model(loading_scale=0.5, *, noise=1.0, rank=1, random_state=None):
    """The mixed D1 design with all three modalities mixed: ``a`` interleaves
    ternary and continuous (identity and ``exp``) columns, ``b`` binary, ``c``
    truncated (:func:`mixed_d1_model` with ``n_mixed="abc"``)."""
    return mixed_d1_model(loading_scale, n_mixed="abc", noise=noise, rank=rank, random_state=random_state)
