"""hclstat: estimation under hierarchical latent-variable models of multimodal tabular data."""

from ._version import __version__
from .exceptions import ConvergenceWarning, EstimationWarning, IdentifiabilityError, IdentifiabilityWarning
from .hierarchy import Hierarchy
from .model import HierarchicalModel
from .moments import Moments, compute_moments, moments_from_covariance
from .estimators.arrays import ColumnViews
from .estimators.base import ModelRepresentation
from .estimators.hcl import HCL
from .estimators.sfa import StructuredFactorAnalysis
from .downstream import HCLClassifier, HCLRegressor, HCLSurvival
from . import baselines, metrics

__all__ = [
    "__version__",
    "Hierarchy",
    "HierarchicalModel",
    "Moments",
    "compute_moments",
    "moments_from_covariance",
    "HCL",
    "StructuredFactorAnalysis",
    "ModelRepresentation",
    "ColumnViews",
    "HCLRegressor",
    "HCLClassifier",
    "HCLSurvival",
    "baselines",
    "metrics",
    "ConvergenceWarning",
    "EstimationWarning",
    "IdentifiabilityError",
    "IdentifiabilityWarning",
]
