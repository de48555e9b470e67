"""hclstat: estimation under hierarchical latent-variable models of multimodal tabular data."""

from ._version import __version__
from .exceptions import ConvergenceWarning, EstimationWarning, IdentifiabilityError, IdentifiabilityWarning
from .hierarchy import Hierarchy
from .model import HierarchicalModel
from .moments import Moments, compute_moments
from . import metrics

__all__ = [
    "__version__",
    "Hierarchy",
    "HierarchicalModel",
    "Moments",
    "compute_moments",
    "metrics",
    "ConvergenceWarning",
    "EstimationWarning",
    "IdentifiabilityError",
    "IdentifiabilityWarning",
]
