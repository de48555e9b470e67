"""The method registry of the studies: which estimators a study can name, and how each is built."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..model import HierarchicalModel

__all__ = [
    "MethodContext",
    "MethodSpec",
    "MethodUnavailableError",
    "register_method",
    "unregister_method",
    "available_methods",
    "check_methods",
]


class MethodUnavailableError(ImportError):
    """A study names a method whose estimator cannot be imported."""


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
class MethodSpec:
    """One entry of ``study.methods``: registry ``name``, result ``label``, factory ``options``."""

    label: str
    name: str
    options: dict = field(default_factory=dict)

    def to_dict(self):
        return {"label": self.label, "name": self.name, "options": dict(self.options)}


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


def is_registered(name):
    return name in _METHODS


def factory_of(name):
    """The registered factory of method ``name``."""
    return _METHODS[name].factory


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


def _with_defaults(ctx, options):
    return {"noise_model": ctx.noise_model, "random_state": ctx.random_state, **options}


def _hcl(ctx, **options):
    cls = _import("hclstat.estimators.hcl:HCL", "hcl")
    return cls(hierarchy=None, **_with_defaults(ctx, options))


def _hcl_oracle(ctx, **options):
    cls = _import("hclstat.estimators.hcl:HCL", "hcl_oracle")
    return cls(hierarchy=ctx.hierarchy, **_with_defaults(ctx, options))


def _sfa_oracle(ctx, **options):
    cls = _import("hclstat.estimators.sfa:StructuredFactorAnalysis", "sfa_oracle")
    return cls(ctx.hierarchy, **_with_defaults(ctx, options))


def _shared_private(ctx, **options):
    cls = _import("hclstat.baselines:SharedPrivate", "shared_private")
    h = ctx.hierarchy
    # the binary view with oracle ranks: the global rank is shared, the rest of each modality private
    n_shared = h.rank(h.modalities)
    private = {m: h.modality_rank(m) - n_shared for m in h.modalities}
    n_private = private if len(set(private.values())) > 1 else next(iter(private.values()))
    return cls(**{"n_shared": n_shared, "n_private": n_private, **_with_defaults(ctx, options)})


def _pca(ctx, **options):
    cls = _import("hclstat.baselines:ConcatenatedPCA", "pca")
    return cls(**{"n_components": ctx.hierarchy.n_components, **options})


def _pairwise_cca(ctx, **options):
    cls = _import("hclstat.baselines:PairwiseCCA", "pairwise_cca")
    return cls(**options)


def _truth(ctx, **options):
    from ..estimators.base import ModelRepresentation

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
