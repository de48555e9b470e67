"""Declarative simulation studies: configs, a resumable runner, tidy tables, figures.

A study is a TOML file (schema in ``simulations/README.md``)::

    [study]
    name = "d1_pattern"
    replications = 20
    seed = 20240611
    methods = ["hcl", "shared_private"]

    [grid]                       # every value is a list of levels; cartesian product
    n = [250, 500, 1000]
    loading_scale = [1.0, 0.3, 0.15]

    [model]                      # fixed values
    hierarchy = "D1"

:func:`run_study` expands the grid into *cells*, simulates each
``(cell, replication)`` once from its own seed, fits every method on the same
data, scores them against the truth and appends one checkpoint file per finished
``(cell, replication)``; an interrupted study resumes where it stopped and ends
with the rows an uninterrupted run gives, bit for bit. Work runs in process
(``workers=1``), on a local dask cluster (``workers > 1``) or on any dask
scheduler (``scheduler="tcp://..."``).

Seeds: replication ``r`` of cell ``c`` uses
``SeedSequence(seed, spawn_key=(c, r))`` -- the child that
``SeedSequence(seed).spawn(...)[c].spawn(...)[r]`` would give -- so its numbers do
not depend on the order in which tasks run, on the worker, or on the other cells.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import itertools
import json
import math
import numbers
import os
import string
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .hierarchy import LEVELS, Hierarchy
from .metrics import block_errors, loading_errors, pattern_scores
from .model import LATENT_LAWS, HierarchicalModel

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "StudyConfig",
    "StudyConfigError",
    "MethodUnavailableError",
    "MethodContext",
    "MethodSpec",
    "load_config",
    "register_method",
    "available_methods",
    "replication_seed",
    "cell_hierarchy",
    "simulate_replication",
    "run_replication",
    "run_study",
    "load_results",
    "summarize_results",
    "plot_study",
    "PARAMETERS",
    "METRICS",
    "DESIGNS",
    "COLUMNS",
]

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
#: metric groups a study may request
METRICS = ("pattern", "loading_sin_theta", "block_error", "block_error_relative", "fit_time")
DEFAULT_METRICS = ("pattern", "loading_sin_theta", "block_error", "fit_time")
#: named hierarchy designs (besides explicit specs in [hierarchies])
DESIGNS = ("D1", "published", "random")
#: columns of the tidy result table
COLUMNS = (
    ("cell", "replication", "seed", "method", "metric", "structure", "modality", "level", "value", "error")
    + PARAMETERS
    + ("study",)
)

_DEFAULTS = {
    "hierarchy": "D1",
    "noise": 1.0,
    "noise_model": "isotropic",
    "latent": "gaussian",
    "latent_correlation": 0.0,
}
_SECTIONS = ("study", "grid", "model", "hierarchies")
_STUDY_KEYS = ("name", "description", "replications", "seed", "methods", "metrics")
_CHECKPOINT_FORMAT = 1
_ERROR_CHARS = 500


class StudyConfigError(ValueError):
    """A study configuration is invalid; the message names the offending field."""


class MethodUnavailableError(ImportError):
    """A study names a method whose estimator cannot be imported."""


# ============================================================== parameters
def _where(section, key, index=None):
    return f"{section}.{key}" + (f"[{index}]" if index is not None else "")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_value(key, value, where):
    """Validate one level of a cell parameter; return its normalised form."""
    if key == "n":
        if not _is_int(value) or value < 2:
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
        if not _is_int(value) or value < 2:
            raise StudyConfigError(f"{where}: expected an integer number of modalities >= 2, got {value!r}")
        return int(value)
    if key == "p":
        if _is_int(value) and value >= 1:
            return int(value)
        if isinstance(value, Sequence) and not isinstance(value, str) and value and all(
            _is_int(v) and v >= 1 for v in value
        ):
            return tuple(int(v) for v in value)
        raise StudyConfigError(
            f"{where}: expected a positive integer (same dimension for every modality) or a list "
            f"of positive integers (one per modality), got {value!r}"
        )
    if key == "rank":
        if not _is_int(value) or value < 1:
            raise StudyConfigError(f"{where}: expected a positive integer rank, got {value!r}")
        return int(value)
    if key == "structure_probability":
        if not _is_real(value) or not 0 < value <= 1:
            raise StudyConfigError(f"{where}: expected a probability in (0, 1], got {value!r}")
        return float(value)
    if key == "loading_scale":
        if not _is_real(value) or not value > 0 or not math.isfinite(value):
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
        if not _is_real(value) or not value > 0 or not math.isfinite(value):
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


def _modality_names(M):
    if M <= len(string.ascii_lowercase):
        return tuple(string.ascii_lowercase[:M])
    return tuple(f"m{i + 1}" for i in range(M))


def _resolve_cell(params, hierarchies, where):
    """Fill design defaults (M, p, rank) and check that the combination makes sense."""
    out = dict(params)
    design = out["hierarchy"]
    M, p, rank = out["M"], out["p"], out["rank"]
    if design in ("D1", "published", "random"):
        defaults = {
            "D1": (3, (50, 60, 70), 1),
            "published": (3, (100, 500, 800), 3),
            "random": (3, None, 1),
        }[design]
        M = M if M is not None else (len(p) if isinstance(p, tuple) else defaults[0])
        if design == "D1" and M < 3:
            raise StudyConfigError(f"{where}: hierarchy 'D1' needs M >= 3 (a global and a partial structure), got M={M}")
        if p is None:
            if defaults[1] is None or M != 3:
                raise StudyConfigError(
                    f"{where}: p is missing; hierarchy {design!r} with M={M} needs the modality "
                    "dimensions (p = 100 or p = [100, 200, ...])"
                )
            p = defaults[1]
        rank = rank if rank is not None else defaults[2]
    elif design in hierarchies:
        spec = hierarchies[design]
        dims = spec["dims"]
        if M is not None and M != len(dims):
            raise StudyConfigError(
                f"{where}: M={M} does not match hierarchy {design!r}, which has {len(dims)} modalities"
            )
        M = len(dims)
        if rank is not None:
            raise StudyConfigError(
                f"{where}: rank is not used by the explicit hierarchy {design!r} (its ranks are given); remove it"
            )
        p = tuple(dims.values()) if p is None else p
    else:
        names = list(DESIGNS) + sorted(hierarchies)
        raise StudyConfigError(f"{where}: unknown hierarchy {design!r}; expected one of {names}")
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
        out["singular_values"] = (0.5, 1.5)
    out.update(M=M, p=tuple(p), rank=rank)
    if design != "random":
        try:
            h = cell_hierarchy(out, hierarchies)
        except (ValueError, TypeError) as exc:
            raise StudyConfigError(f"{where}: {exc}") from None
        rho = out["latent_correlation"]
        if rho:
            # the same latent covariance HierarchicalModel.random builds; fail now, not per replication
            phi = np.full((h.n_components, h.n_components), rho)
            for sl in h.component_slices().values():
                phi[sl, sl] = np.eye(sl.stop - sl.start)
            if np.linalg.eigvalsh(phi)[0] <= 0:
                raise StudyConfigError(
                    f"{where}: latent_correlation {rho} makes the latent covariance of {h.n_components} "
                    "components not positive definite; lower it"
                )
    return out


def cell_hierarchy(params, hierarchies=None, random_state=None):
    """The true :class:`~hclstat.hierarchy.Hierarchy` of a cell.

    ``params`` are resolved cell parameters (``StudyConfig.cells[i]``). For
    ``hierarchy = "random"`` the pattern is drawn from ``random_state``: each
    non-empty set of modalities is a structure with probability
    ``structure_probability`` and rank uniform on ``1..rank`` (redrawn until at
    least one structure exists and every modality's total rank fits its
    dimension).
    """
    hierarchies = hierarchies or {}
    design = params["hierarchy"]
    M, rank = params["M"], params["rank"]
    names = _modality_names(M)
    dims = dict(zip(names, params["p"]))
    if design == "D1":
        ranks = {names: rank, names[:2]: rank}
        ranks.update({m: rank for m in names})
        return Hierarchy(dims, ranks)
    if design == "published":
        subsets = [c for size in range(M, 0, -1) for c in itertools.combinations(names, size)]
        return Hierarchy(dims, {s: rank for s in subsets})
    if design == "random":
        rng = np.random.default_rng(random_state) if not isinstance(random_state, np.random.Generator) else random_state
        subsets = [c for size in range(M, 0, -1) for c in itertools.combinations(names, size)]
        q = params["structure_probability"]
        for _ in range(1000):
            present = rng.uniform(size=len(subsets)) < q
            k = rng.integers(1, rank + 1, size=len(subsets))
            ranks = {s: int(r) for s, r, keep in zip(subsets, k, present) if keep}
            totals = {m: sum(r for s, r in ranks.items() if m in s) for m in names}
            if ranks and all(totals[m] <= dims[m] for m in names):
                return Hierarchy(dims, ranks)
        raise ValueError(
            f"could not draw a random hierarchy whose ranks fit the dimensions {params['p']} in 1000 "
            "tries; raise p or lower rank / structure_probability"
        )
    spec = hierarchies[design]
    base = Hierarchy.from_dict(spec)
    new_dims = dict(zip(base.modalities, params["p"]))
    return Hierarchy(new_dims, base.ranks)


# ================================================================ methods
@dataclass(frozen=True)
class MethodContext:
    """What a method factory may use to build its estimator.

    Attributes
    ----------
    model : HierarchicalModel
        The simulation truth (oracle methods read its hierarchy).
    cell : dict
        The cell's resolved parameters (``noise_model``, ``n``, ...).
    random_state : int
        The method's own seed for this replication (derived from the
        replication seed and the method label).
    """

    model: HierarchicalModel
    cell: dict
    random_state: int

    @property
    def hierarchy(self):
        return self.model.hierarchy

    @property
    def noise_model(self):
        return self.cell["noise_model"]


@dataclass(frozen=True)
class _Registered:
    factory: object
    requires: tuple
    description: str


_METHODS: dict = {}


def register_method(name, factory, *, requires=(), description="", overwrite=False):
    """Make ``factory`` available to studies as ``name``.

    Parameters
    ----------
    name : str
    factory : callable
        ``factory(context: MethodContext, **options) -> estimator``; the
        estimator needs ``fit(views)`` and, for the metrics, ``hierarchy_`` and
        ``loadings_``. ``options`` are the extra keys of the method's entry in
        ``study.methods``. For dask execution the factory must be picklable
        (a module-level function).
    requires : sequence of str
        ``"module:attribute"`` names the factory imports; checked before a study
        starts so that a missing estimator fails at once, by name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable, got {type(factory).__name__}")
    if name in _METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    _METHODS[name] = _Registered(factory, tuple(requires), description)


def unregister_method(name):
    """Remove a registered method (tests use it to clean up)."""
    _METHODS.pop(name, None)


def available_methods():
    """``{name: description}`` of every registered method."""
    return {name: m.description for name, m in _METHODS.items()}


def _import(target, method):
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj
    except (ImportError, AttributeError) as exc:
        raise MethodUnavailableError(
            f"method {method!r} needs {module}.{attr}, which cannot be imported ({exc}); "
            "remove the method from study.methods or update hclstat"
        ) from exc


def check_methods(methods):
    """Raise :class:`MethodUnavailableError` naming the first method whose estimator is missing."""
    for spec in methods:
        for target in _METHODS[spec.name].requires:
            _import(target, spec.name)


def _hcl(ctx, **options):
    cls = _import("hclstat.estimators.hcl:HCL", "hcl")
    kw = {"noise_model": ctx.noise_model, "random_state": ctx.random_state, **options}
    return cls(hierarchy=None, **kw)


def _hcl_oracle(ctx, **options):
    cls = _import("hclstat.estimators.hcl:HCL", "hcl_oracle")
    kw = {"noise_model": ctx.noise_model, "random_state": ctx.random_state, **options}
    return cls(hierarchy=ctx.hierarchy, **kw)


def _sfa_oracle(ctx, **options):
    cls = _import("hclstat.estimators.sfa:StructuredFactorAnalysis", "sfa_oracle")
    kw = {"noise_model": ctx.noise_model, "random_state": ctx.random_state, **options}
    return cls(ctx.hierarchy, **kw)


def _shared_private(ctx, **options):
    cls = _import("hclstat.baselines:SharedPrivate", "shared_private")
    h = ctx.hierarchy
    # the binary view with oracle ranks: the global rank is shared, the rest of each modality private
    n_shared = h.rank(h.modalities)
    private = {m: h.modality_rank(m) - n_shared for m in h.modalities}
    n_private = private if len(set(private.values())) > 1 else next(iter(private.values()))
    kw = {"n_shared": n_shared, "n_private": n_private, "noise_model": ctx.noise_model,
          "random_state": ctx.random_state, **options}
    return cls(**kw)


def _pca(ctx, **options):
    cls = _import("hclstat.baselines:ConcatenatedPCA", "pca")
    kw = {"n_components": ctx.hierarchy.n_components, **options}
    return cls(**kw)


def _pairwise_cca(ctx, **options):
    cls = _import("hclstat.baselines:PairwiseCCA", "pairwise_cca")
    return cls(**options)


def _truth(ctx, **options):
    from .estimators.base import ModelRepresentation

    return ModelRepresentation(ctx.model, **options)


register_method("hcl", _hcl, requires=("hclstat.estimators.hcl:HCL",),
                description="HCL learning the pattern (hierarchy=None)")
register_method("hcl_oracle", _hcl_oracle, requires=("hclstat.estimators.hcl:HCL",),
                description="HCL given the true hierarchy")
register_method("sfa_oracle", _sfa_oracle, requires=("hclstat.estimators.sfa:StructuredFactorAnalysis",),
                description="StructuredFactorAnalysis given the true hierarchy (the oracle MLE)")
register_method("shared_private", _shared_private, requires=("hclstat.baselines:SharedPrivate",),
                description="shared-private baseline with oracle ranks (global shared, rest private)")
register_method("pca", _pca, requires=("hclstat.baselines:ConcatenatedPCA",),
                description="PCA on the concatenated modalities, K = true total rank")
register_method("pairwise_cca", _pairwise_cca, requires=("hclstat.baselines:PairwiseCCA",),
                description="pairwise CCA baseline")
register_method("truth", _truth, description="the true model (ModelRepresentation): zero-error reference")


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``study.methods``: registry ``name``, result ``label``, factory ``options``."""

    label: str
    name: str
    options: dict = field(default_factory=dict)

    def to_dict(self):
        return {"label": self.label, "name": self.name, "options": dict(self.options)}


def _parse_methods(value):
    where = "study.methods"
    if value is None:
        raise StudyConfigError(
            f"{where}: missing required field (a list of method names, e.g. methods = [\"hcl\", \"sfa_oracle\"])"
        )
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence) or not value:
        raise StudyConfigError(f"{where}: expected a non-empty list of method names or tables, got {value!r}")
    specs = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            name, label, options = entry, entry, {}
        elif isinstance(entry, Mapping):
            entry = dict(entry)
            name = entry.pop("name", None)
            if not isinstance(name, str):
                raise StudyConfigError(f"{where}[{i}]: a method table needs a 'name' (str), got {name!r}")
            label = entry.pop("label", name)
            if not isinstance(label, str) or not label:
                raise StudyConfigError(f"{where}[{i}]: label must be a non-empty str, got {label!r}")
            options = entry
        else:
            raise StudyConfigError(f"{where}[{i}]: expected a method name or a table, got {entry!r}")
        if name not in _METHODS:
            raise StudyConfigError(
                f"{where}: unknown method {name!r}; known methods are {sorted(_METHODS)}"
            )
        if any(s.label == label for s in specs):
            raise StudyConfigError(
                f"{where}: label {label!r} is used twice; give the entries distinct labels"
            )
        specs.append(MethodSpec(label, name, options))
    return tuple(specs)


def _parse_metrics(value):
    where = "study.metrics"
    if value is None:
        return DEFAULT_METRICS
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise StudyConfigError(f"{where}: expected a non-empty list of metric names, got {value!r}")
    for v in value:
        if v not in METRICS:
            raise StudyConfigError(f"{where}: unknown metric {v!r}; expected some of {list(METRICS)}")
    if len(set(value)) != len(value):
        raise StudyConfigError(f"{where}: a metric is listed twice in {list(value)}")
    return tuple(value)


# ================================================================= config
@dataclass(frozen=True)
class StudyConfig:
    """A validated, expanded study.

    Attributes
    ----------
    name, description : str
    replications : int
    seed : int
        Base seed; replication ``r`` of cell ``c`` uses ``replication_seed(seed, c, r)``.
    methods : tuple of MethodSpec
    metrics : tuple of str
    cells : tuple of dict
        Resolved parameters of every grid cell, in grid order (the cell index
        is the position in this tuple).
    hierarchies : dict
        Explicit hierarchy specs (``Hierarchy.to_dict`` form) by name.
    """

    name: str
    description: str
    replications: int
    seed: int
    methods: tuple
    metrics: tuple
    cells: tuple
    hierarchies: dict

    # ------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data, *, default_name="study"):
        """Validate a parsed TOML document (a nested dict) and expand its grid."""
        if not isinstance(data, Mapping):
            raise StudyConfigError(f"config: expected a table of sections, got {type(data).__name__}")
        unknown = [k for k in data if k not in _SECTIONS]
        if unknown:
            raise StudyConfigError(
                f"config: unknown section {unknown[0]!r}; expected sections {list(_SECTIONS)}"
            )
        study = data.get("study")
        if not isinstance(study, Mapping):
            raise StudyConfigError("study: missing required section [study] (replications, seed, methods)")
        bad = [k for k in study if k not in _STUDY_KEYS]
        if bad:
            raise StudyConfigError(f"study: unknown field {bad[0]!r}; expected fields {list(_STUDY_KEYS)}")
        name = study.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise StudyConfigError(f"study.name: expected a non-empty str, got {name!r}")
        description = study.get("description", "")
        if not isinstance(description, str):
            raise StudyConfigError(f"study.description: expected a str, got {description!r}")
        for key in ("replications", "seed"):
            if key not in study:
                raise StudyConfigError(f"study.{key}: missing required field")
        reps, seed = study["replications"], study["seed"]
        if not _is_int(reps) or reps < 1:
            raise StudyConfigError(f"study.replications: expected a positive integer, got {reps!r}")
        if not _is_int(seed) or seed < 0:
            raise StudyConfigError(f"study.seed: expected a non-negative integer, got {seed!r}")
        methods = _parse_methods(study.get("methods"))
        metrics = _parse_metrics(study.get("metrics"))

        hierarchies = {}
        raw_h = data.get("hierarchies", {})
        if not isinstance(raw_h, Mapping):
            raise StudyConfigError(f"hierarchies: expected a table of named hierarchies, got {raw_h!r}")
        for hname, spec in raw_h.items():
            hierarchies[hname] = _check_hierarchy_spec(spec, f"hierarchies.{hname}")
            if hname in DESIGNS:
                raise StudyConfigError(f"hierarchies.{hname}: the name is taken by a built-in design")

        model = data.get("model", {})
        if not isinstance(model, Mapping):
            raise StudyConfigError(f"model: expected a table of fixed parameters, got {model!r}")
        fixed = {}
        for key, value in model.items():
            if key not in PARAMETERS:
                raise StudyConfigError(f"model: unknown parameter {key!r}; expected one of {list(PARAMETERS)}")
            fixed[key] = _check_value(key, value, _where("model", key))

        grid = data.get("grid", {})
        grids = [grid] if isinstance(grid, Mapping) else grid
        if not isinstance(grids, list) or not all(isinstance(g, Mapping) for g in grids):
            raise StudyConfigError(
                "grid: expected a table [grid] (or an array of tables [[grid]]) of parameter lists"
            )
        cells, inline = [], 0
        for gi, g in enumerate(grids):
            section = "grid" if len(grids) == 1 else f"grid[{gi}]"
            axes = {}
            for key, levels in g.items():
                if key not in PARAMETERS:
                    raise StudyConfigError(
                        f"{section}: unknown parameter {key!r}; expected one of {list(PARAMETERS)}"
                    )
                if key in fixed:
                    raise StudyConfigError(
                        f"{section}.{key}: also given in [model]; a parameter is either fixed or varied"
                    )
                if not isinstance(levels, list):
                    levels = [levels]
                if not levels:
                    raise StudyConfigError(f"{section}.{key}: expected at least one level, got []")
                checked = []
                for i, v in enumerate(levels):
                    v = _check_value(key, v, _where(section, key, i))
                    if key == "hierarchy" and isinstance(v, dict):
                        label = v.pop("name", None) or f"hierarchy{inline}"
                        inline += 1
                        hierarchies[label] = _check_hierarchy_spec(v, _where(section, key, i))
                        v = label
                    checked.append(v)
                axes[key] = checked
            for combo in itertools.product(*axes.values()):
                params = {k: None for k in PARAMETERS}
                params.update(_DEFAULTS)
                params.update(fixed)
                params.update(zip(axes, combo))
                cells.append(params)
        if "hierarchy" in fixed and isinstance(fixed["hierarchy"], dict):
            spec = fixed["hierarchy"]
            label = spec.pop("name", None) or "hierarchy"
            hierarchies[label] = _check_hierarchy_spec(spec, "model.hierarchy")
            for c in cells:
                c["hierarchy"] = label
        resolved = []
        for i, params in enumerate(cells):
            if params["n"] is None:
                raise StudyConfigError(
                    "n: missing required parameter; give the sample sizes in [grid] (n = [500, 1000]) or [model]"
                )
            resolved.append(_resolve_cell(params, hierarchies, f"cell {i} ({_describe(params)})"))
        return cls(
            name=name,
            description=description,
            replications=int(reps),
            seed=int(seed),
            methods=methods,
            metrics=metrics,
            cells=tuple(resolved),
            hierarchies=hierarchies,
        )

    @classmethod
    def from_toml(cls, path):
        """Read and validate a TOML study file."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"config: no such file {str(path)!r}") from None
        except tomllib.TOMLDecodeError as exc:
            raise StudyConfigError(f"config {str(path)!r}: not valid TOML ({exc})") from None
        return cls.from_dict(data, default_name=path.stem)

    # -------------------------------------------------------------- output
    def to_dict(self):
        """JSON-serialisable normalised form (what the manifest stores)."""
        return {
            "name": self.name,
            "description": self.description,
            "replications": self.replications,
            "seed": self.seed,
            "methods": [m.to_dict() for m in self.methods],
            "metrics": list(self.metrics),
            "hierarchies": self.hierarchies,
            "cells": [_jsonable(c) for c in self.cells],
        }

    @property
    def fingerprint(self):
        """Hash of everything that decides a replication's rows.

        The replication count is left out (seeds do not depend on it), so a
        finished study can be extended with more replications in place.
        """
        d = self.to_dict()
        for key in ("name", "description", "replications"):
            d.pop(key)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def n_tasks(self):
        return len(self.cells) * self.replications


def _check_hierarchy_spec(spec, where):
    if not isinstance(spec, Mapping):
        raise StudyConfigError(f"{where}: expected a table with 'dims' and 'ranks', got {spec!r}")
    spec = dict(spec)
    try:
        h = Hierarchy.from_dict({k: v for k, v in spec.items() if k != "name"})
    except (ValueError, TypeError) as exc:
        raise StudyConfigError(f"{where}: {exc}") from None
    out = h.to_dict()
    if "name" in spec:
        out["name"] = spec["name"]
    return out


def _jsonable(params):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _describe(params):
    parts = []
    for k in PARAMETERS:
        v = params.get(k)
        if v is None or (k in _DEFAULTS and v == _DEFAULTS[k]):
            continue
        parts.append(f"{k}={_format_param(v)}")
    return ", ".join(parts)


def _format_param(v):
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return v


def load_config(config):
    """A :class:`StudyConfig` from a path to a TOML file, a parsed dict, or a config."""
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return StudyConfig.from_toml(config)
    if isinstance(config, Mapping):
        return StudyConfig.from_dict(config)
    raise TypeError(
        f"config: expected a path to a TOML file, a dict or a StudyConfig, got {type(config).__name__}"
    )


# ============================================================ replication
def replication_seed(base_seed, cell, replication):
    """The 63-bit seed of replication ``replication`` of cell ``cell``.

    Derived from ``SeedSequence(base_seed, spawn_key=(cell, replication))``;
    it alone reproduces the replication (see :func:`simulate_replication`).
    """
    ss = np.random.SeedSequence(base_seed, spawn_key=(int(cell), int(replication)))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _method_seed(seed, label):
    # keyed by the label, so adding a method leaves the others' seeds alone
    ss = np.random.SeedSequence(seed, spawn_key=(2, zlib.crc32(label.encode())))
    return int(ss.generate_state(1, np.uint32)[0])


def _simulate(params, seed, hierarchies):
    model_ss, sample_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(model_ss)
    h = cell_hierarchy(params, hierarchies, random_state=rng)
    model = HierarchicalModel.random(
        h,
        singular_values=params["singular_values"] or (0.5, 1.5),
        loading_scale=params["loading_scale"],
        noise=params["noise"],
        noise_model=params["noise_model"],
        latent=params["latent"],
        latent_correlation=params["latent_correlation"],
        random_state=rng,
    )
    views, _ = model.sample(params["n"], random_state=np.random.default_rng(sample_ss))
    return model, views


def simulate_replication(config, cell, replication):
    """Re-create the truth and data of one replication: ``(model, views)``."""
    config = load_config(config)
    if not 0 <= cell < len(config.cells):
        raise ValueError(f"cell: expected an index in [0, {len(config.cells)}), got {cell!r}")
    seed = replication_seed(config.seed, cell, replication)
    return _simulate(config.cells[cell], seed, config.hierarchies)


def _short_error(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _evaluate(estimator, model, metrics):
    """Yield ``(metric, structure, modality, level, value, error)`` tuples."""
    h = model.hierarchy
    for group in metrics:
        if group == "fit_time":
            continue
        try:
            if group == "pattern":
                sc = pattern_scores(estimator.hierarchy_, h)
                rows = [
                    ("pattern_exact", None, None, None, float(sc["exact"])),
                    ("structure_precision", None, None, None, float(sc["structure_precision"])),
                    ("structure_recall", None, None, None, float(sc["structure_recall"])),
                    ("support_hamming", None, None, None, float(sc["support_hamming"])),
                ]
                rows += [
                    ("rank_error", h.name(s), None, h.level(s), float(e)) for s, e in sc["rank_errors"].items()
                ]
            else:
                if group == "loading_sin_theta":
                    errs = loading_errors(estimator.loadings_, model.loadings)
                else:
                    errs = block_errors(
                        estimator.loadings_, model.loadings, h.dims, relative=group == "block_error_relative"
                    )
                order = {s: i for i, s in enumerate(h.structures)}
                mod = {m: i for i, m in enumerate(h.modalities)}
                keys = sorted(errs, key=lambda sm: (order.get(sm[0], len(order)), mod.get(sm[1], 0)))
                rows = [(group, h.name(s), m, h.level(s), float(errs[(s, m)])) for s, m in keys]
        except Exception as exc:  # a broken metric must not hide the others
            yield ("error", None, None, None, math.nan, f"metric {group}: {_short_error(exc)}")
            continue
        for r in rows:
            yield r + (None,)


def run_replication(params, cell, replication, seed, methods, metrics, hierarchies=None, study=""):
    """Simulate one replication and score every method on the same data.

    Parameters
    ----------
    params : dict
        Resolved cell parameters.
    cell, replication, seed : int
    methods : sequence of (label, factory, options)
    metrics : sequence of str
    hierarchies : dict, optional
        Explicit hierarchy specs by name.

    Returns
    -------
    list of dict
        Rows of the tidy table (keys :data:`COLUMNS`). A method that fails
        gives one row with ``metric = "error"`` and the message; the others go on.
    """
    base = {"cell": int(cell), "replication": int(replication), "seed": int(seed)}
    cellcols = {k: (_format_param(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    rows = []

    def add(method, metric, structure, modality, level, value, error=None):
        row = dict(base, method=method, metric=metric, structure=structure, modality=modality,
                   level=level, value=value, error=error)
        row.update(cellcols)
        row["study"] = study
        rows.append(row)

    try:
        model, views = _simulate(params, seed, hierarchies or {})
    except Exception as exc:
        for label, _, _ in methods:
            add(label, "error", None, None, None, math.nan, f"simulation: {_short_error(exc)}")
        return rows
    for label, factory, options in methods:
        ctx = MethodContext(model=model, cell=dict(params), random_state=_method_seed(seed, label))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                estimator = factory(ctx, **options)
                t0 = time.perf_counter()
                estimator.fit(views)
                elapsed = time.perf_counter() - t0
            except Exception as exc:
                add(label, "error", None, None, None, math.nan, f"fit: {_short_error(exc)}")
                continue
        if "fit_time" in metrics:
            add(label, "fit_time", None, None, None, float(elapsed))
        if caught:
            first = caught[0]
            add(label, "warnings", None, None, None, float(len(caught)),
                f"{first.category.__name__}: {str(first.message)[:_ERROR_CHARS]}")
        for metric, s, m, level, value, error in _evaluate(estimator, model, metrics):
            add(label, metric, s, m, level, value, error)
    return rows


# ================================================================ storage
def _file_mode():
    """``0o666`` less the umask: what a plain ``open`` creates (``mkstemp`` makes files private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write_bytes(path, data):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def _atomic_write_text(path, text):
    _atomic_write_bytes(path, text.encode("utf-8"))


def _checkpoint_path(out, cell, replication):
    return Path(out) / "checkpoints" / f"cell{cell:05d}-rep{replication:05d}.json"


def _read_checkpoint(path, fingerprint):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        warnings.warn(f"checkpoint {str(path)!r} is unreadable; its replication will be redone", stacklevel=3)
        return None
    if data.get("fingerprint") != fingerprint:
        raise StudyConfigError(
            f"checkpoint {str(path)!r} belongs to a different study configuration "
            f"(fingerprint {data.get('fingerprint')} vs {fingerprint}); use another output directory"
        )
    return data["rows"]


def _write_manifest(config, out):
    path = Path(out) / "study.json"
    fp = config.fingerprint
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old.get("fingerprint") != fp:
            raise StudyConfigError(
                f"out: {str(out)!r} holds results of a different study configuration "
                f"(fingerprint {old.get('fingerprint')} vs {fp}); choose another output directory "
                "or delete it to start over"
            )
    from ._version import __version__

    manifest = {"fingerprint": fp, "hclstat_version": __version__, "config": config.to_dict()}
    _atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False))


_INT_COLUMNS = ("cell", "replication", "seed", "n", "M")
_FLOAT_COLUMNS = ("value", "rank", "structure_probability", "loading_scale", "noise", "latent_correlation")
_TEXT_COLUMNS = ("method", "metric", "structure", "modality", "level", "error", "hierarchy", "p",
                 "singular_values", "noise_model", "latent", "study")


def _normalise(table):
    """One set of dtypes whether the table was built in memory or read from CSV."""
    for col in _INT_COLUMNS:
        table[col] = table[col].astype("int64")
    for col in _FLOAT_COLUMNS:
        table[col] = table[col].astype("float64")
    for col in _TEXT_COLUMNS:
        values = table[col].astype(object)
        table[col] = values.where(values.notna(), None).astype(object)
    return table


def _table(rows):
    import pandas as pd

    return _normalise(pd.DataFrame.from_records(rows, columns=list(COLUMNS)))


def load_results(path):
    """Read a result table written by :func:`run_study` (a CSV file or the study directory).

    Floats are parsed round-trip exactly; dtypes match the table :func:`run_study` returns.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    # pandas >= 3 parses floats round-trip exactly by default and deprecates the option
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                        dtype={c: object for c in _TEXT_COLUMNS}, **exact)
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{str(path)!r} is not an hclstat study table: missing columns {missing}")
    return _normalise(table[list(COLUMNS)])


def summarize_results(table):
    """Mean, standard deviation and count of each metric per cell, method, structure and modality.

    Error rows are left out; ``n_errors`` counts them per cell and method.
    """
    import pandas as pd

    table = _as_table(table)
    keys = ["cell", "method", "metric", "structure", "modality", "level"]
    params = [c for c in PARAMETERS if c in table]
    ok = table[table["metric"] != "error"]
    summary = (
        ok.groupby(keys + params, dropna=False, sort=True)["value"]
        .agg(mean="mean", std="std", count="count")
        .reset_index()
    )
    errors = table[table["metric"] == "error"].groupby(["cell", "method"]).size().rename("n_errors")
    summary = summary.merge(errors.reset_index(), on=["cell", "method"], how="left")
    summary["n_errors"] = summary["n_errors"].fillna(0).astype(int)
    return summary[keys + ["mean", "std", "count", "n_errors"] + params]


# ================================================================= runner
def run_study(
    config,
    out,
    *,
    scheduler=None,
    workers=None,
    quiet=False,
    max_cells=None,
    plot=True,
    on_replication=None,
):
    """Run (or resume) a simulation study.

    Parameters
    ----------
    config : path, dict or StudyConfig
        A TOML study file (schema in ``simulations/README.md``) or its parsed form.
    out : path
        Output directory. It receives ``study.json`` (the normalised config and
        its fingerprint), ``checkpoints/`` (one JSON file per finished
        ``(cell, replication)``), ``results.csv`` (the tidy table),
        ``summary.csv`` and ``figures/``. Rerunning on the same directory skips
        finished replications; a different configuration is refused.
    scheduler : str, optional
        Address of a running dask scheduler (``"tcp://host:8786"``); tasks run on
        its workers.
    workers : int, optional
        Without ``scheduler``: ``1`` or ``None`` runs in this process; ``k > 1``
        starts a local dask cluster of ``k`` single-threaded worker processes.
    quiet : bool
        No progress bar.
    max_cells : int, optional
        Run only the first ``max_cells`` cells of the grid (a quick mode); the
        table holds those cells only.
    plot : bool
        Write the standard figures (:func:`plot_study`) into ``out/figures``.
    on_replication : callable, optional
        ``on_replication(cell, replication, rows)`` after each replication's
        checkpoint is written (progress hooks; an exception it raises stops the
        study, leaving the finished checkpoints in place).

    Returns
    -------
    pandas.DataFrame
        The tidy table: one row per (cell, replication, method, metric,
        structure, modality), columns :data:`COLUMNS`.
    """
    config = load_config(config)
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers: expected a positive integer or None, got {workers!r}")
    if max_cells is not None and (not _is_int(max_cells) or max_cells < 1):
        raise ValueError(f"max_cells: expected a positive integer or None, got {max_cells!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler: expected an address str, got {type(scheduler).__name__}")
    check_methods(config.methods)
    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_manifest(config, out)
    fp = config.fingerprint

    n_cells = len(config.cells) if max_cells is None else min(max_cells, len(config.cells))
    tasks = [(c, r) for c in range(n_cells) for r in range(config.replications)]
    results = {}
    for c, r in tasks:
        rows = _read_checkpoint(_checkpoint_path(out, c, r), fp)
        if rows is not None:
            results[(c, r)] = rows
    pending = [t for t in tasks if t not in results]
    methods = [(m.label, _METHODS[m.name].factory, dict(m.options)) for m in config.methods]

    def payload(c, r):
        return (config.cells[c], c, r, replication_seed(config.seed, c, r), methods,
                config.metrics, config.hierarchies, config.name)

    from tqdm import tqdm

    failures = []
    with tqdm(total=len(tasks), initial=len(results), disable=quiet, desc=config.name,
              unit="rep", file=sys.stderr, dynamic_ncols=True) as bar:

        def finished(c, r, rows):
            doc = {"format": _CHECKPOINT_FORMAT, "fingerprint": fp, "cell": c, "replication": r,
                   "seed": replication_seed(config.seed, c, r), "rows": rows}
            _atomic_write_text(_checkpoint_path(out, c, r), json.dumps(doc))
            results[(c, r)] = rows
            bar.update(1)
            if on_replication is not None:
                on_replication(c, r, rows)

        if pending and scheduler is None and (workers is None or workers == 1):
            for c, r in pending:
                finished(c, r, run_replication(*payload(c, r)))
        elif pending:
            if scheduler is not None and workers not in (None, 1):
                warnings.warn("workers is ignored when a scheduler address is given", stacklevel=2)
            failures = _run_distributed(pending, payload, finished, scheduler, workers)

    table = _table([row for t in tasks if t in results for row in results[t]])
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    _atomic_write_text(out / "results.csv", buf.getvalue())
    ok = table[table["metric"] != "error"]
    if not ok.empty:
        buf = io.StringIO()
        summarize_results(table).to_csv(buf, index=False)
        _atomic_write_text(out / "summary.csv", buf.getvalue())
    if failures:
        lines = "; ".join(f"cell {c} replication {r}: {msg}" for c, r, msg in failures[:5])
        raise RuntimeError(
            f"{len(failures)} replication(s) did not finish ({lines}); the others are saved in "
            f"{str(out)!r}; rerun the same command to retry them"
        )
    if plot:
        plot_study(table, out / "figures")
    return table


def _run_distributed(pending, payload, finished, scheduler, workers):
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    failures = []
    try:
        futures = {}
        for c, r in pending:
            args = payload(c, r)
            fut = client.submit(run_replication, *args, key=f"hclstat-replication-{args[3]:x}-{c}-{r}", pure=False)
            futures[fut] = (c, r)
        for fut in as_completed(futures):
            c, r = futures[fut]
            try:
                rows = fut.result()
            except Exception as exc:  # a lost worker, not a method failure (those are rows)
                failures.append((c, r, _short_error(exc)))
                continue
            finally:
                fut.release()
            finished(c, r, rows)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return failures


# ================================================================= figures
def _as_table(results):
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results
    if isinstance(results, (str, os.PathLike)):
        return load_results(results)
    raise TypeError(f"results: expected a DataFrame or a path to results.csv, got {type(results).__name__}")


def _varying(table):
    out = []
    for c in PARAMETERS:
        if c in table and table[c].astype(str).nunique() > 1:
            out.append(c)
    return out


def _numeric_x(table, x):
    if x == "p":
        return table["p"].astype(str).map(lambda s: float(np.mean([float(v) for v in s.split(",")])))
    return table[x].astype(float)


def _line_label(method, others, key):
    extra = ", ".join(f"{k}={v}" for k, v in zip(others, key))
    return f"{method}" + (f" ({extra})" if extra else "")


def _save(fig, path):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def _lines(d, x, varying):
    """Yield ``(label, xs, ys)`` means over replications (and blocks) per method and other parameters."""
    others = [v for v in varying if v != x]
    d = d.assign(_x=_numeric_x(d, x))
    keys = ["method"] + others
    for key, g in d.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        m = g.groupby("_x")["value"].mean().sort_index()
        yield _line_label(key[0], others, key[1:]), m.index.to_numpy(), m.to_numpy()


def _error_figure(d, x, varying, metric, *, loglog, squared=False, slope=None):
    from matplotlib.figure import Figure

    levels = [lv for lv in LEVELS if (d["level"] == lv).any()]
    fig = Figure(figsize=(4.2 * len(levels) + 1.5, 3.8))
    axes = fig.subplots(1, len(levels), squeeze=False, sharey=True)[0]
    if squared:
        d = d.assign(value=d["value"] ** 2)
    for ax, level in zip(axes, levels):
        first = None
        for label, xs, ys in _lines(d[d["level"] == level], x, varying):
            if np.nanmax(np.abs(ys), initial=0.0) < 1e-10:
                continue  # exact to rounding (the true model): nothing to see on a log scale
            keep = ys > 0 if loglog else np.isfinite(ys)
            ax.plot(xs[keep], ys[keep], marker="o", label=label)
            if first is None and keep.sum() >= 1:
                first = (xs[keep][0], ys[keep][0], xs[keep][-1])
        if slope is not None and first is not None:
            x0, y0, x1 = first
            xr = np.array([x0, x1])
            ax.plot(xr, y0 * (xr / x0) ** slope, ls="--", color="0.5", lw=1, label=f"slope {slope:g}")
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(f"{level} structures")
        ax.set_xlabel("p (mean per modality)" if x == "p" else x)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"mean {metric}" + ("$^2$" if squared else ""))
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def _pattern_table(table):
    """Exact-recovery indicator per (cell, replication, method); a failed fit counts as a miss."""
    has = table.loc[table["metric"] == "pattern_exact", "method"].unique()
    t = table[table["method"].isin(has)]
    keys = ["cell", "replication", "method"] + [c for c in PARAMETERS if c in t]
    exact = t[t["metric"] == "pattern_exact"][["cell", "replication", "method", "value"]]
    runs = t[keys].drop_duplicates(subset=["cell", "replication", "method"])
    out = runs.merge(exact, on=["cell", "replication", "method"], how="left")
    out["value"] = out["value"].fillna(0.0)
    return out


def plot_study(results, out):
    """Write the standard figures of a study table into directory ``out``.

    * ``{metric}_vs_n.png`` for ``loading_sin_theta``, ``block_error`` and
      ``block_error_relative`` when ``n`` varies: mean error against ``n``,
      one panel per level (global / partial / specific), one line per method
      (and per value of every other varying parameter), log-log, with a
      reference slope of -1/2. Lines at rounding level (the ``truth`` method)
      are left out.
    * ``loading_sin_theta_squared_vs_p.png`` when ``p`` varies (theory: affine in ``p``).
    * ``pattern_recovery_vs_{x}.png`` for ``x`` in ``n``, ``loading_scale``,
      ``noise``: the fraction of replications with the exact pattern (a failed
      fit counts as a miss).
    * ``fit_time_vs_n.png`` when ``n`` varies.

    Parameters
    ----------
    results : DataFrame or path
        The table returned by :func:`run_study` or its ``results.csv``.
    out : path
        Directory (created if needed).

    Returns
    -------
    list of Path
        The files written.
    """
    from matplotlib.figure import Figure

    table = _as_table(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    varying = _varying(table)
    ok = table[(table["metric"] != "error") & table["value"].notna()]
    paths = []
    for metric in ("loading_sin_theta", "block_error", "block_error_relative"):
        d = ok[ok["metric"] == metric]
        if d.empty:
            continue
        if "n" in varying:
            fig = _error_figure(d, "n", varying, metric, loglog=True, slope=-0.5)
            paths.append(_save(fig, out / f"{metric}_vs_n.png"))
        if "p" in varying and metric == "loading_sin_theta":
            fig = _error_figure(d, "p", varying, metric, loglog=False, squared=True)
            paths.append(_save(fig, out / f"{metric}_squared_vs_p.png"))
    if (ok["metric"] == "pattern_exact").any():
        pt = _pattern_table(table)
        for x in ("n", "loading_scale", "noise"):
            if x not in varying:
                continue
            fig = Figure(figsize=(6.5, 4))
            ax = fig.subplots()
            for label, xs, ys in _lines(pt, x, varying):
                ax.plot(xs, ys, marker="o", label=label)
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel(x)
            ax.set_ylabel("P(exact pattern recovered)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
            paths.append(_save(fig, out / f"pattern_recovery_vs_{x}.png"))
    d = ok[ok["metric"] == "fit_time"]
    if not d.empty and "n" in varying:
        fig = Figure(figsize=(6.5, 4))
        ax = fig.subplots()
        for label, xs, ys in _lines(d, "n", varying):
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel("mean fit time (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        paths.append(_save(fig, out / "fit_time_vs_n.png"))
    return paths
