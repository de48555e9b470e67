"""Cell parameters of a study: their validation, design defaults and the true hierarchy of a cell.

A *cell* is one point of the study grid: a dict of every name in
:data:`PARAMETERS`. :func:`check_value` validates one level as written in the
config, :func:`resolve_cell` fills the design defaults (``M``, ``p``, ``rank``)
and checks that the combination makes sense, :func:`cell_hierarchy` builds the
cell's true :class:`~hclstat.hierarchy.Hierarchy` (the D1 and published designs
come from :mod:`hclstat.model.designs`).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from ..hierarchy import Hierarchy
from ..model import LATENT_LAWS
from ..model.designs import D1_DIMS, PUBLISHED_DIMS, d1_hierarchy, modality_names, published_hierarchy

__all__ = ["PARAMETERS", "DESIGNS", "StudyConfigError", "check_value", "resolve_cell", "cell_hierarchy"]

#: cell parameters (grid / model keys), in table-column order
PARAMETERS = (
    "n",
    "hierarchy",
    "M",
    "p",
    "rank",
    "structure_probability",
    "loading_scale",
    "singular_values",
    "noise",
    "noise_model",
    "latent",
    "latent_correlation",
)
#: named hierarchy designs (besides explicit specs in [hierarchies])
DESIGNS = ("D1", "published", "random")

#: (M, p, rank) a design uses when the config leaves them out (p None: must be given)
_DESIGN_DEFAULTS = {
    "D1": (len(D1_DIMS), tuple(D1_DIMS.values()), 1),
    "published": (len(PUBLISHED_DIMS), tuple(PUBLISHED_DIMS.values()), 3),
    "random": (3, None, 1),
}
DEFAULTS = {
    "hierarchy": "D1",
    "noise": 1.0,
    "noise_model": "isotropic",
    "latent": "gaussian",
    "latent_correlation": 0.0,
}
#: the loading law when neither loading_scale nor singular_values is given
DEFAULT_SINGULAR_VALUES = (0.5, 1.5)


class StudyConfigError(ValueError):
    """A study configuration is invalid; the message names the offending field."""


def where(section, key, index=None):
    return f"{section}.{key}" + (f"[{index}]" if index is not None else "")


def is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_finite(v):
    return _is_real(v) and v > 0 and math.isfinite(v)


def check_value(key, value, where):
    """Validate one level of a cell parameter; return its normalised form."""
    if key == "n":
        if not is_int(value) or value < 2:
            raise StudyConfigError(f"{where}: expected an integer number of rows >= 2, got {value!r}")
        return int(value)
    if key == "hierarchy":
        if isinstance(value, str):
            return value
        if isinstance(value, Mapping):
            return dict(value)
        raise StudyConfigError(
            f"{where}: expected a design name ({', '.join(map(repr, DESIGNS))}), the name of a "
            f"[hierarchies] entry or an inline table with 'dims' and 'ranks', got {value!r}"
        )
    if key == "M":
        if not is_int(value) or value < 2:
            raise StudyConfigError(f"{where}: expected an integer number of modalities >= 2, got {value!r}")
        return int(value)
    if key == "p":
        if is_int(value) and value >= 1:
            return int(value)
        if isinstance(value, Sequence) and not isinstance(value, str) and value and all(
            is_int(v) and v >= 1 for v in value
        ):
            return tuple(int(v) for v in value)
        raise StudyConfigError(
            f"{where}: expected a positive integer (same dimension for every modality) or a list "
            f"of positive integers (one per modality), got {value!r}"
        )
    if key == "rank":
        if not is_int(value) or value < 1:
            raise StudyConfigError(f"{where}: expected a positive integer rank, got {value!r}")
        return int(value)
    if key == "structure_probability":
        if not _is_real(value) or not 0 < value <= 1:
            raise StudyConfigError(f"{where}: expected a probability in (0, 1], got {value!r}")
        return float(value)
    if key == "loading_scale":
        if not _positive_finite(value):
            raise StudyConfigError(f"{where}: expected a positive number, got {value!r}")
        return float(value)
    if key == "singular_values":
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(_is_real(v) for v in value)
            and 0 < value[0] <= value[1]
        ):
            return (float(value[0]), float(value[1]))
        hint = ""
        if where.startswith("grid.") and _is_real(value):
            hint = " (every [grid] value is a list of levels: write [[0.5, 1.5]] for one level)"
        raise StudyConfigError(f"{where}: expected a pair [a, b] with 0 < a <= b, got {value!r}{hint}")
    if key == "noise":
        if not _positive_finite(value):
            raise StudyConfigError(f"{where}: expected a positive noise variance level, got {value!r}")
        return float(value)
    if key == "noise_model":
        if value not in ("isotropic", "diagonal"):
            raise StudyConfigError(f"{where}: expected 'isotropic' or 'diagonal', got {value!r}")
        return value
    if key == "latent":
        if value not in LATENT_LAWS:
            raise StudyConfigError(f"{where}: expected one of {list(LATENT_LAWS)}, got {value!r}")
        return value
    if key == "latent_correlation":
        if not _is_real(value) or not -1 < value < 1:
            raise StudyConfigError(f"{where}: expected a correlation in (-1, 1), got {value!r}")
        return float(value)
    raise AssertionError(key)  # pragma: no cover


def _design_shape(out, hierarchies, where):
    """``(M, p, rank)`` of a cell: the design's defaults or those of its explicit hierarchy."""
    design = out["hierarchy"]
    M, p, rank = out["M"], out["p"], out["rank"]
    if design in _DESIGN_DEFAULTS:
        default_m, default_p, default_rank = _DESIGN_DEFAULTS[design]
        M = M if M is not None else (len(p) if isinstance(p, tuple) else default_m)
        if design == "D1" and M < 3:
            raise StudyConfigError(f"{where}: hierarchy 'D1' needs M >= 3 (a global and a partial structure), got M={M}")
        if p is None:
            if default_p is None or M != default_m:
                raise StudyConfigError(
                    f"{where}: p is missing; hierarchy {design!r} with M={M} needs the modality "
                    "dimensions (p = 100 or p = [100, 200, ...])"
                )
            p = default_p
        return M, p, rank if rank is not None else default_rank
    if design in hierarchies:
        dims = hierarchies[design]["dims"]
        if M is not None and M != len(dims):
            raise StudyConfigError(
                f"{where}: M={M} does not match hierarchy {design!r}, which has {len(dims)} modalities"
            )
        if rank is not None:
            raise StudyConfigError(
                f"{where}: rank is not used by the explicit hierarchy {design!r} (its ranks are given); remove it"
            )
        return len(dims), tuple(dims.values()) if p is None else p, rank
    names = list(DESIGNS) + sorted(hierarchies)
    raise StudyConfigError(f"{where}: unknown hierarchy {design!r}; expected one of {names}")


def resolve_cell(params, hierarchies, where):
    """Fill design defaults (M, p, rank) and check that the combination makes sense."""
    out = dict(params)
    design = out["hierarchy"]
    M, p, rank = _design_shape(out, hierarchies, where)
    if isinstance(p, int):
        p = (p,) * M
    if len(p) != M:
        raise StudyConfigError(f"{where}: p has {len(p)} dimensions but the hierarchy has M={M} modalities")
    if out["structure_probability"] is not None and design != "random":
        raise StudyConfigError(
            f"{where}: structure_probability is only used by hierarchy = 'random', not {design!r}; remove it"
        )
    if design == "random":
        if out["structure_probability"] is None:
            out["structure_probability"] = 0.5
        if rank > min(p):
            raise StudyConfigError(f"{where}: rank {rank} exceeds the smallest modality dimension {min(p)}")
    if out["loading_scale"] is not None and out["singular_values"] is not None:
        raise StudyConfigError(
            f"{where}: give either loading_scale (Gaussian loadings) or singular_values "
            "(orthonormal basis x singular values x rotation), not both"
        )
    if out["loading_scale"] is None and out["singular_values"] is None:
        out["singular_values"] = DEFAULT_SINGULAR_VALUES
    out.update(M=M, p=tuple(p), rank=rank)
    if design != "random":
        try:
            h = cell_hierarchy(out, hierarchies)
        except (ValueError, TypeError) as exc:
            raise StudyConfigError(f"{where}: {exc}") from None
        _check_latent_correlation(h, out["latent_correlation"], where)
    return out


def _check_latent_correlation(h, rho, where):
    if not rho:
        return
    # the same latent covariance HierarchicalModel.random builds; fail now, not per replication
    phi = np.full((h.n_components, h.n_components), rho)
    for sl in h.component_slices().values():
        phi[sl, sl] = np.eye(sl.stop - sl.start)
    if np.linalg.eigvalsh(phi)[0] <= 0:
        raise StudyConfigError(
            f"{where}: latent_correlation {rho} makes the latent covariance of {h.n_components} "
            "components not positive definite; lower it"
        )


def cell_hierarchy(params, hierarchies=None, random_state=None):
    """The true :class:`~hclstat.hierarchy.Hierarchy` of a cell.

    ``params`` are resolved cell parameters (``StudyConfig.cells[i]``). The
    ``D1`` and ``published`` designs are those of :mod:`hclstat.model.designs`.
    For ``hierarchy = "random"`` the pattern is drawn from ``random_state``:
    each non-empty set of modalities is a structure with probability
    ``structure_probability`` and rank uniform on ``1..rank`` (redrawn until at
    least one structure exists and every modality's total rank fits its
    dimension).
    """
    hierarchies = hierarchies or {}
    design = params["hierarchy"]
    M, rank = params["M"], params["rank"]
    names = modality_names(M)
    dims = dict(zip(names, params["p"]))
    if design == "D1":
        return d1_hierarchy(dims, rank)
    if design == "published":
        return published_hierarchy(dims, rank)
    if design == "random":
        return _random_hierarchy(dims, rank, params["structure_probability"], random_state)
    base = Hierarchy.from_dict(hierarchies[design])
    return Hierarchy(dict(zip(base.modalities, params["p"])), base.ranks)


def _random_hierarchy(dims, rank, q, random_state):
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    names = tuple(dims)
    # largest subsets first: the order of the draws, which fixes every seeded pattern
    subsets = [c for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)]
    for _ in range(1000):
        present = rng.uniform(size=len(subsets)) < q
        k = rng.integers(1, rank + 1, size=len(subsets))
        ranks = {s: int(r) for s, r, keep in zip(subsets, k, present) if keep}
        totals = {m: sum(r for s, r in ranks.items() if m in s) for m in names}
        if ranks and all(totals[m] <= dims[m] for m in names):
            return Hierarchy(dims, ranks)
    raise ValueError(
        f"could not draw a random hierarchy whose ranks fit the dimensions {tuple(dims.values())} in 1000 "
        "tries; raise p or lower rank / structure_probability"
    )


def format_param(v):
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return v


def describe(params):
    """``"n=60, p=6,7,8"``: a cell's parameters that differ from the defaults."""
    parts = []
    for k in PARAMETERS:
        v = params.get(k)
        if v is None or (k in DEFAULTS and v == DEFAULTS[k]):
            continue
        parts.append(f"{k}={format_param(v)}")
    return ", ".join(parts)
