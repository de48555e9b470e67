"""The package's warnings and domain errors."""

from sklearn.exceptions import ConvergenceWarning as _SkConvergenceWarning

__all__ = ["ConvergenceWarning", "EstimationWarning", "IdentifiabilityError", "IdentifiabilityWarning"]


class ConvergenceWarning(_SkConvergenceWarning):
    """An iterative solver stopped on its iteration budget before meeting its tolerance."""


class EstimationWarning(UserWarning):
    """An estimate was produced but should be read with care (e.g. inconsistent ranks)."""


class IdentifiabilityWarning(UserWarning):
    """The requested model is not identified in full; some quantities are only partly determined."""


class IdentifiabilityError(ValueError):
    """The model, not the input, is the problem: the quantity asked for is not identifiable."""
