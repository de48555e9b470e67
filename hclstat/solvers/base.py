"""What every solver shares: the operations it needs, and what a fit reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..moments.base import require

__all__ = ["FitInfo", "Solver"]


@dataclass
class FitInfo:
    """What one unpenalised fit reports.

    Attributes
    ----------
    n_iter : int
    converged : bool
    objective_path : list of float
        Objective after each alternation (the start first).
    constant : float or None
        The objective's data constant when the path omits it (product solvers).
    n_rejected : int
        Block steps rejected because their majoriser did not hold.
    """

    n_iter: int
    converged: bool
    objective_path: list = field(default_factory=list)
    constant: float | None = None
    n_rejected: int = 0


class Solver:
    """A fitting algorithm for the HCL objective on a datafit.

    Subclasses list the datafit operations they call in
    ``required_operations``; :meth:`validate` names any the datafit lacks.

    Parameters
    ----------
    gamma : float
        Weight of the within-modality term.
    tol : float
        Relative objective decrease at which an alternation stops.
    max_iter : int
        Alternation budget.
    """

    required_operations = ()

    def __init__(self, *, gamma=1.0, tol=1e-7, max_iter=2000):
        self.gamma = float(gamma)
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def validate(self, datafit):
        """Return ``datafit`` if it implements every operation this solver calls."""
        return require(datafit, self.required_operations, type(self).__name__)
