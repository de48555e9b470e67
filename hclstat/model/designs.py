"""The reference designs, defined once: D1 and the published design (DESIGN §7).

* **D1** — modalities ``a, b, c`` with ``p = (50, 60, 70)``; one global, one
  ``{a, b}`` and one specific component per modality (rank ``r`` each).
* **published** — ``M = 3`` modalities, every non-empty subset a structure of
  rank ``r`` (seven structures), dimensions such as ``(100, 500, 800)``,
  loadings ``U diag(d) R`` (:func:`~hclstat.model.engine.published_block`) and
  isotropic noise ``c I``.
"""

from __future__ import annotations

import itertools

from ..hierarchy import Hierarchy
from ..utils import check_random_state
from .engine import HierarchicalModel, draw_noise_variances, published_block

__all__ = [
    "D1_DIMS",
    "PUBLISHED_DIMS",
    "d1_hierarchy",
    "d1_model",
    "published_hierarchy",
    "model_from_singular_values",
    "modality_names",
]

#: modality dimensions of design D1
D1_DIMS = {"a": 50, "b": 60, "c": 70}
#: modality dimensions of the published design
PUBLISHED_DIMS = {"a": 100, "b": 500, "c": 800}


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
