"""Study configs: the TOML / dict schema (``simulations/README.md``), its validation and grid expansion."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..hierarchy import Hierarchy
from .cells import DEFAULTS, DESIGNS, PARAMETERS, StudyConfigError, check_value, describe, is_int, resolve_cell, where
from .methods import MethodSpec, available_methods, is_registered

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["StudyConfig", "StudyConfigError", "load_config", "METRICS", "DEFAULT_METRICS"]

#: metric groups a study may request
METRICS = ("pattern", "loading_sin_theta", "block_error", "block_error_relative", "fit_time")
DEFAULT_METRICS = ("pattern", "loading_sin_theta", "block_error", "fit_time")

_SECTIONS = ("study", "grid", "model", "hierarchies")
_STUDY_KEYS = ("name", "description", "replications", "seed", "methods", "metrics")


def _parse_methods(value):
    at = "study.methods"
    if value is None:
        raise StudyConfigError(
            f"{at}: missing required field (a list of method names, e.g. methods = [\"hcl\", \"sfa_oracle\"])"
        )
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence) or not value:
        raise StudyConfigError(f"{at}: expected a non-empty list of method names or tables, got {value!r}")
    specs = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            name, label, options = entry, entry, {}
        elif isinstance(entry, Mapping):
            entry = dict(entry)
            name = entry.pop("name", None)
            if not isinstance(name, str):
                raise StudyConfigError(f"{at}[{i}]: a method table needs a 'name' (str), got {name!r}")
            label = entry.pop("label", name)
            if not isinstance(label, str) or not label:
                raise StudyConfigError(f"{at}[{i}]: label must be a non-empty str, got {label!r}")
            options = entry
        else:
            raise StudyConfigError(f"{at}[{i}]: expected a method name or a table, got {entry!r}")
        if not is_registered(name):
            raise StudyConfigError(f"{at}: unknown method {name!r}; known methods are {sorted(available_methods())}")
        if any(s.label == label for s in specs):
            raise StudyConfigError(f"{at}: label {label!r} is used twice; give the entries distinct labels")
        specs.append(MethodSpec(label, name, options))
    return tuple(specs)


def _parse_metrics(value):
    at = "study.metrics"
    if value is None:
        return DEFAULT_METRICS
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise StudyConfigError(f"{at}: expected a non-empty list of metric names, got {value!r}")
    for v in value:
        if v not in METRICS:
            raise StudyConfigError(f"{at}: unknown metric {v!r}; expected some of {list(METRICS)}")
    if len(set(value)) != len(value):
        raise StudyConfigError(f"{at}: a metric is listed twice in {list(value)}")
    return tuple(value)


def _parse_study(data, default_name):
    """The ``[study]`` section: ``(name, description, replications, seed, methods, metrics)``."""
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
    if not is_int(reps) or reps < 1:
        raise StudyConfigError(f"study.replications: expected a positive integer, got {reps!r}")
    if not is_int(seed) or seed < 0:
        raise StudyConfigError(f"study.seed: expected a non-negative integer, got {seed!r}")
    return name, description, int(reps), int(seed), _parse_methods(study.get("methods")), \
        _parse_metrics(study.get("metrics"))


def _parse_hierarchies(data):
    hierarchies = {}
    raw = data.get("hierarchies", {})
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"hierarchies: expected a table of named hierarchies, got {raw!r}")
    for name, spec in raw.items():
        hierarchies[name] = _check_hierarchy_spec(spec, f"hierarchies.{name}")
        if name in DESIGNS:
            raise StudyConfigError(f"hierarchies.{name}: the name is taken by a built-in design")
    return hierarchies


def _parse_fixed(data):
    model = data.get("model", {})
    if not isinstance(model, Mapping):
        raise StudyConfigError(f"model: expected a table of fixed parameters, got {model!r}")
    fixed = {}
    for key, value in model.items():
        if key not in PARAMETERS:
            raise StudyConfigError(f"model: unknown parameter {key!r}; expected one of {list(PARAMETERS)}")
        fixed[key] = check_value(key, value, where("model", key))
    return fixed


def _expand_grid(data, fixed, hierarchies):
    """Every cell of ``[grid]`` (or each ``[[grid]]`` table in turn); inline hierarchies go into ``hierarchies``."""
    grid = data.get("grid", {})
    grids = [grid] if isinstance(grid, Mapping) else grid
    if not isinstance(grids, list) or not all(isinstance(g, Mapping) for g in grids):
        raise StudyConfigError("grid: expected a table [grid] (or an array of tables [[grid]]) of parameter lists")
    cells, inline = [], 0
    for gi, g in enumerate(grids):
        section = "grid" if len(grids) == 1 else f"grid[{gi}]"
        axes = {}
        for key, levels in g.items():
            if key not in PARAMETERS:
                raise StudyConfigError(f"{section}: unknown parameter {key!r}; expected one of {list(PARAMETERS)}")
            if key in fixed:
                raise StudyConfigError(f"{section}.{key}: also given in [model]; a parameter is either fixed or varied")
            if not isinstance(levels, list):
                levels = [levels]
            if not levels:
                raise StudyConfigError(f"{section}.{key}: expected at least one level, got []")
            checked = []
            for i, v in enumerate(levels):
                v = check_value(key, v, where(section, key, i))
                if key == "hierarchy" and isinstance(v, dict):
                    label = v.pop("name", None) or f"hierarchy{inline}"
                    inline += 1
                    hierarchies[label] = _check_hierarchy_spec(v, where(section, key, i))
                    v = label
                checked.append(v)
            axes[key] = checked
        for combo in itertools.product(*axes.values()):
            params = {k: None for k in PARAMETERS}
            params.update(DEFAULTS)
            params.update(fixed)
            params.update(zip(axes, combo))
            cells.append(params)
    if "hierarchy" in fixed and isinstance(fixed["hierarchy"], dict):
        spec = fixed["hierarchy"]
        label = spec.pop("name", None) or "hierarchy"
        hierarchies[label] = _check_hierarchy_spec(spec, "model.hierarchy")
        for c in cells:
            c["hierarchy"] = label
    return cells


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

    @classmethod
    def from_dict(cls, data, *, default_name="study"):
        """Validate a parsed TOML document (a nested dict) and expand its grid."""
        if not isinstance(data, Mapping):
            raise StudyConfigError(f"config: expected a table of sections, got {type(data).__name__}")
        unknown = [k for k in data if k not in _SECTIONS]
        if unknown:
            raise StudyConfigError(f"config: unknown section {unknown[0]!r}; expected sections {list(_SECTIONS)}")
        name, description, reps, seed, methods, metrics = _parse_study(data, default_name)
        hierarchies = _parse_hierarchies(data)
        cells = _expand_grid(data, _parse_fixed(data), hierarchies)
        resolved = []
        for i, params in enumerate(cells):
            if params["n"] is None:
                raise StudyConfigError(
                    "n: missing required parameter; give the sample sizes in [grid] (n = [500, 1000]) or [model]"
                )
            resolved.append(resolve_cell(params, hierarchies, f"cell {i} ({describe(params)})"))
        return cls(name=name, description=description, replications=reps, seed=seed, methods=methods,
                   metrics=metrics, cells=tuple(resolved), hierarchies=hierarchies)

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


def _check_hierarchy_spec(spec, at):
    if not isinstance(spec, Mapping):
        raise StudyConfigError(f"{at}: expected a table with 'dims' and 'ranks', got {spec!r}")
    spec = dict(spec)
    try:
        h = Hierarchy.from_dict({k: v for k, v in spec.items() if k != "name"})
    except (ValueError, TypeError) as exc:
        raise StudyConfigError(f"{at}: {exc}") from None
    out = h.to_dict()
    if "name" in spec:
        out["name"] = spec["name"]
    return out


def _jsonable(params):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def load_config(config):
    """A :class:`StudyConfig` from a path to a TOML file, a parsed dict, or a config."""
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return StudyConfig.from_toml(config)
    if isinstance(config, Mapping):
        return StudyConfig.from_dict(config)
    raise TypeError(f"config: expected a path to a TOML file, a dict or a StudyConfig, got {type(config).__name__}")
