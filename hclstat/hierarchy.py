"""The sharing pattern of a hierarchical latent-variable model.

A *structure* is a non-empty set of modality names; it carries ``k_S >= 0``
latent components that load on exactly the modalities in ``S``.  The
:class:`Hierarchy` holds the modality dimensions and the ranks of the
structures with ``k_S > 0``.
"""

from __future__ import annotations

import itertools
import json
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["Hierarchy", "Structure", "as_structure", "LEVELS"]

Structure = frozenset
LEVELS = ("global", "partial", "specific")


def as_structure(key, modalities=None, *, argname="structure"):
    """Turn a structure key (name, tuple, set, frozenset) into a frozenset.

    A bare string is read as the singleton structure of that modality.
    When ``modalities`` is given, unknown names raise ``ValueError``.
    """
    if isinstance(key, str):
        s = frozenset([key])
    elif isinstance(key, Iterable):
        items = list(key)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(
                    f"{argname}: expected modality names (str), got {item!r} "
                    f"of type {type(item).__name__} in {key!r}"
                )
        s = frozenset(items)
        if len(s) != len(items):
            raise ValueError(f"{argname}: modality repeated in {key!r}")
    else:
        raise TypeError(
            f"{argname}: expected a modality name or a collection of names, got {key!r}"
        )
    if not s:
        raise ValueError(f"{argname}: a structure must name at least one modality, got {key!r}")
    if modalities is not None:
        unknown = sorted(s.difference(modalities))
        if unknown:
            raise ValueError(
                f"{argname} {sorted(s)} names unknown modality {unknown}; "
                f"known modalities are {list(modalities)}"
            )
    return s


class Hierarchy:
    """Sharing pattern: modality dimensions and the ranks of the structures.

    Parameters
    ----------
    dims : mapping of str to int
        Number of columns ``p_m`` of each modality. The order of the mapping is
        the modality order used everywhere (covariance blocks, support matrix).
    ranks : mapping of structure to int
        ``k_S`` for each structure ``S``. A key is a tuple/set/frozenset of
        modality names, or a single name for a modality-specific structure.
        Structures of rank 0 are dropped.

    Attributes
    ----------
    modalities : tuple of str
    dims : dict of str to int
    structures : tuple of frozenset
        Global first, then partial by decreasing size, then specific; ties are
        broken by modality order.

    Examples
    --------
    >>> h = Hierarchy(dims={"a": 10, "b": 12, "c": 8},
    ...               ranks={("a", "b", "c"): 1, ("a", "b"): 1, "a": 1, "b": 1, "c": 1})
    >>> h.n_components
    5
    >>> h.level(("a", "b"))
    'partial'
    """

    def __init__(self, dims, ranks):
        if not isinstance(dims, Mapping) or len(dims) == 0:
            raise TypeError(
                f"dims: expected a non-empty mapping modality name -> number of columns, got {dims!r}"
            )
        checked_dims = {}
        for name, p in dims.items():
            if not isinstance(name, str):
                raise TypeError(f"dims: modality names must be str, got {name!r}")
            if isinstance(p, bool) or not isinstance(p, numbers.Integral):
                raise TypeError(f"dims[{name!r}]: expected a positive integer, got {p!r}")
            if p <= 0:
                raise ValueError(f"dims[{name!r}]: expected a positive integer, got {p}")
            checked_dims[name] = int(p)
        self._modalities = tuple(checked_dims)
        self._dims = checked_dims
        self._index = {m: i for i, m in enumerate(self._modalities)}

        if not isinstance(ranks, Mapping):
            raise TypeError(f"ranks: expected a mapping structure -> rank, got {type(ranks).__name__}")
        checked = {}
        for key, k in ranks.items():
            s = as_structure(key, self._modalities, argname="ranks: structure")
            if isinstance(k, bool) or not isinstance(k, numbers.Integral):
                raise TypeError(
                    f"ranks[{sorted(s)}]: expected a non-negative integer, got {k!r}"
                )
            if k < 0:
                raise ValueError(f"ranks[{sorted(s)}]: expected a non-negative integer, got {k}")
            if s in checked:
                raise ValueError(f"ranks: structure {sorted(s)} is given twice")
            checked[s] = int(k)
        checked = {s: k for s, k in checked.items() if k > 0}
        self._structures = tuple(sorted(checked, key=self._sort_key))
        self._ranks = {s: checked[s] for s in self._structures}

        for m in self._modalities:
            total = self.modality_rank(m)
            if total > self._dims[m]:
                parts = ", ".join(
                    f"{self.name(s)}: {self._ranks[s]}" for s in self.structures_of(m)
                )
                raise ValueError(
                    f"modality {m!r}: total rank {total} ({parts}) exceeds its "
                    f"{self._dims[m]} columns; lower the ranks or add columns"
                )

    # ------------------------------------------------------------------ basics
    def _sort_key(self, s):
        return (-len(s), sorted(self._index[m] for m in s))

    @property
    def modalities(self):
        """Modality names in order."""
        return self._modalities

    @property
    def dims(self):
        """``{modality: p_m}`` (a copy)."""
        return dict(self._dims)

    @property
    def n_modalities(self):
        return len(self._modalities)

    @property
    def structures(self):
        """Structures with positive rank, in canonical order."""
        return self._structures

    @property
    def ranks(self):
        """``{structure: k_S}`` in canonical order (a copy)."""
        return dict(self._ranks)

    @property
    def n_components(self):
        """Total number of latent components ``K = sum_S k_S``."""
        return int(sum(self._ranks.values()))

    @property
    def n_features(self):
        return int(sum(self._dims.values()))

    def index(self, modality):
        """Position of a modality in the modality order."""
        try:
            return self._index[modality]
        except KeyError:
            raise ValueError(
                f"unknown modality {modality!r}; known modalities are {list(self._modalities)}"
            ) from None

    def structure(self, key):
        """Validate a structure key against this hierarchy's modalities."""
        return as_structure(key, self._modalities)

    def rank(self, structure):
        """``k_S``; zero for a valid structure that carries no component."""
        return self._ranks.get(self.structure(structure), 0)

    def level(self, structure):
        """``"global"`` (all modalities), ``"partial"`` or ``"specific"`` (one)."""
        s = self.structure(structure)
        if len(s) == 1:
            return "specific"
        if len(s) == self.n_modalities:
            return "global"
        return "partial"

    def name(self, structure):
        """A readable label such as ``{a,b}`` in modality order."""
        s = self.structure(structure)
        return "{" + ",".join(sorted(s, key=self._index.__getitem__)) + "}"

    def structures_of(self, modality):
        """Structures (with positive rank) that load on ``modality``."""
        self.index(modality)
        return tuple(s for s in self._structures if modality in s)

    def modality_rank(self, modality):
        """Total rank ``sum_{S ∋ m} k_S`` of one modality."""
        return int(sum(self._ranks[s] for s in self.structures_of(modality)))

    def component_slices(self):
        """``{structure: slice}`` into the ``K`` component columns."""
        out, start = {}, 0
        for s in self._structures:
            out[s] = slice(start, start + self._ranks[s])
            start += self._ranks[s]
        return out

    def feature_slices(self):
        """``{modality: slice}`` into the stacked ``p = sum_m p_m`` features."""
        out, start = {}, 0
        for m in self._modalities:
            out[m] = slice(start, start + self._dims[m])
            start += self._dims[m]
        return out

    def support_matrix(self):
        """Binary ``(M, K)`` matrix: entry ``(m, j)`` is 1 iff component ``j`` loads on ``m``."""
        B = np.zeros((self.n_modalities, self.n_components), dtype=np.int64)
        for s, sl in self.component_slices().items():
            for m in s:
                B[self._index[m], sl] = 1
        return B

    def all_structures(self):
        """Every non-empty subset of modalities, in canonical order."""
        subsets = []
        for size in range(self.n_modalities, 0, -1):
            subsets.extend(frozenset(c) for c in itertools.combinations(self._modalities, size))
        return tuple(sorted(subsets, key=self._sort_key))

    # ---------------------------------------------------------- comparisons/io
    def __eq__(self, other):
        if not isinstance(other, Hierarchy):
            return NotImplemented
        return (
            self._modalities == other._modalities
            and self._dims == other._dims
            and self._ranks == other._ranks
        )

    def __hash__(self):
        return hash((self._modalities, tuple(self._dims.values()), tuple(self._ranks.items())))

    def __repr__(self):
        dims = ", ".join(f"{m}={p}" for m, p in self._dims.items())
        ranks = ", ".join(f"{self.name(s)}: {k}" for s, k in self._ranks.items())
        return f"Hierarchy(dims=({dims}), ranks=({ranks or 'none'}))"

    def to_dict(self):
        """JSON-serialisable description; inverse of :meth:`from_dict`."""
        return {
            "dims": dict(self._dims),
            "ranks": [
                {"structure": sorted(s, key=self._index.__getitem__), "rank": k}
                for s, k in self._ranks.items()
            ],
        }

    @classmethod
    def from_dict(cls, data):
        """Build a hierarchy from :meth:`to_dict` output (or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, Mapping) or "dims" not in data or "ranks" not in data:
            raise ValueError(
                "hierarchy description: expected a mapping with keys 'dims' and 'ranks', "
                f"got {data!r:.200}"
            )
        ranks = data["ranks"]
        if isinstance(ranks, Mapping):  # {"a,b": 1} convenience form
            pairs = {tuple(str(k).split(",")): v for k, v in ranks.items()}
        else:
            pairs = {}
            for i, entry in enumerate(ranks):
                if not isinstance(entry, Mapping) or "structure" not in entry or "rank" not in entry:
                    raise ValueError(
                        f"hierarchy description: ranks[{i}] must have keys 'structure' and "
                        f"'rank', got {entry!r}"
                    )
                key = as_structure(entry["structure"], argname=f"ranks[{i}]: structure")
                if key in pairs:
                    raise ValueError(f"ranks: structure {sorted(key)} is given twice")
                pairs[key] = entry["rank"]
        return cls(dims=dict(data["dims"]), ranks=pairs)

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)
