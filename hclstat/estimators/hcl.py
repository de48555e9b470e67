"""HCL: the structure-aware contrastive estimator.

In the linear model the spectral contrastive loss between linear encoders of
two modalities is, up to constants, a low-rank fit of their cross-covariance.
HCL aligns a pair of modalities only through the structures they share::

    F(A) = sum_{m<m'} w_{mm'} || S_{mm'} - sum_{S ⊇ {m,m'}} A_{m,S} A_{m',S}^T ||_F^2
           + gamma/2 * sum_m || offdiag(S_mm - A_m A_m^T) ||_F^2
           + lambda * sum_m sum_j c_{mj} || A_{m,:,j} ||_2

computed on noise-whitened moments ``D^{-1/2} S D^{-1/2}`` (``D`` the current
noise-variance estimate, so every pair is fitted on the scale of its noise).

The estimator is thin: it picks a datafit (:mod:`hclstat.moments`: here the
dense centred moments, :class:`~hclstat.moments.covariance.CovarianceDatafit`),
the solver matching it (:class:`~hclstat.solvers.row_ls.RowLeastSquares`), learns
the pattern with the rank lattice (:mod:`hclstat.lattice`) and runs
:func:`hclstat.solvers.pipeline.fit_hierarchy`.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, StrOptions

from ..data import check_views
from ..exceptions import ConvergenceWarning, EstimationWarning, IdentifiabilityError
from ..hierarchy import Hierarchy
from ..lattice import datafit_lattice, datafit_specific_ranks, lattice_hierarchy
from ..calibration import row_source
from ..moments import CovarianceDatafit, compute_moments
from ..solvers import RowLeastSquares, fit_hierarchy, hcl_objective, path_disagreements
from ..threads import moment_pass_threads
from ..utils import random_streams
from .base import RANDOM_STATE, VERBOSE, BaseHierarchicalEstimator
from .mixed import MIXED_TYPES, fit_copula, latent_noise, warn_mixed_columns

__all__ = ["HCL", "hcl_objective"]


class HCL(BaseHierarchicalEstimator):
    """Structure-aware contrastive estimator of a hierarchical latent-variable model.

    Parameters
    ----------
    hierarchy : Hierarchy or None
        The sharing pattern. ``None`` (default) learns the pattern and the ranks:
        non-specific ranks from the cross-covariance rank lattice with
        a family-wise permutation procedure (:func:`hclstat.lattice.datafit_lattice`),
        specific ranks from the noise-whitened within-modality residual after
        the shared subspace (:func:`hclstat.specific.datafit_specific_ranks`,
        valid when ``p_m > n``; an :class:`~hclstat.exceptions.EstimationWarning`
        names a modality whose noise reaches the floor, whose rank approaches
        ``min(n - 1, p_m)`` or that has too few rows for the test).
    max_rank : int, optional
        Cap on any structure's rank and on each modality's total rank.
    types : None, str or dict, optional
        Column types for mixed-type modalities. ``None`` (default): every
        column is linear-Gaussian (Pearson moments; columns that look binary
        or zero-inflated are named in an
        :class:`~hclstat.exceptions.EstimationWarning`). ``"auto"`` infers
        every column's type (two values: binary; three: ternary; a point mass
        at the minimum: truncated; else continuous;
        :func:`hclstat.moments.column_types.infer_types`); one of
        ``"continuous"``, ``"binary"``, ``"ternary"``, ``"truncated"`` for
        every column; or a dict ``{modality: type, "auto", one type per
        column, or {column name: type}}``. With types the model is the latent
        Gaussian copula (DESIGN §9, :mod:`hclstat.moments.copula`): the
        latent correlation is estimated from Kendall's tau / Spearman's rho
        through their bridge functions, the rank tests permute the rows of
        the rank scores, ``loadings_`` are on the latent correlation scale and
        ``noise_variances_`` are the latent ones. ``transform`` scores new
        rows from the training margins (conditional means of the latent
        coordinates given the observed values, then the Gaussian posterior
        mean). Needs the rows: :meth:`fit`, not :meth:`fit_moments`.
    max_components : int, optional
        Largest number of components in the learned model (``hierarchy=None``),
        for a representation of a given size. When the learned pattern has
        more, it is fitted once and the components explaining the most
        variance are kept: within each structure the principal directions of
        its loadings, ranked together across structures by the variance they
        explain on the correlation scale (eigenvalues of ``A_S^T D^{-1} A_S``,
        ``D = diag S``); the reduced pattern is then fitted as usual. ``None``
        (default) keeps every component the rank tests find. Ignored when
        ``hierarchy`` is given (its ranks are the size).
    noise_model : {"diagonal", "isotropic"}
        ``Psi_m`` heteroskedastic diagonal or ``sigma_m^2 I``.
    penalty : {None, "group"}
        ``None`` (default) keeps the lattice pattern. ``"group"`` also runs the
        penalised path over calibrated block weights (a diagnostic with
        ``selection="lattice"``: recorded in ``selection_path_``, and an
        :class:`~hclstat.exceptions.EstimationWarning` names the structures
        whenever a support it visits disagrees with the lattice; the candidate
        supports of ``selection="bic"``). Off by default because it decides
        nothing the lattice gets wrong: on design D1 (p = 50/60/70, n = 500,
        10 seeds) it pruned a true structure at multiplier 4 in 10/10 seeds at
        s = 0.3 (lattice exact in 10/10), and at s = 0.15 none of the supports
        it visited was the truth in the 4/10 seeds where the lattice missed a
        specific rank; it took a fifth to a third of the fit time.
    selection : {"lattice", "bic"}
        How the final pattern is chosen. ``"lattice"`` (default) keeps the
        pattern whose every rank passed its permutation / Tracy-Widom test.
        ``"bic"`` (needs ``penalty="group"``) picks, among the lattice pattern
        and the supports visited by the path, the one with the smallest
        Gaussian BIC ``-2 loglik + log(n) df``,
        ``df = sum_S [k_S sum_{m in S} p_m - k_S (k_S - 1) / 2]`` + noise
        parameters. Measured on D1: BIC prunes true but weak components
        (loading scale 0.15), so it is not the default.
    gamma : float
        Weight of the within-modality off-diagonal term (pins scale and the
        specific parts).
    lambdas : sequence of float, optional
        Multipliers of the calibrated penalty weights along the path (default
        ``(1, 2, 4)``): a multiplier of 1 puts a block at the level where
        noise alone would make it non-zero.
    n_permutations : int or None
        Joint row permutations (each permutes every modality's rows
        independently) for the cross-covariance rank lattice. ``None``
        (default): ``max(99, ceil(1 / alpha) - 1)``, enough for ``alpha``; a
        number below ``ceil(1 / alpha) - 1`` cannot reach the level and is a
        ValueError naming the minimum.
    permutation_rows : int
        Largest number of rows used for the permutation nulls; above it a
        random row subset is permuted, its covariances matched to the full
        sample's (complete data; :func:`hclstat.moments.nulls.matched_rows`)
        and its null levels rescaled by ``sqrt((n_sub - 1) / (n - 1))``:
        measured within 1% of the full-sample null (keeps the pattern search
        from costing more than the moment pass at large ``n``).
    alpha : float
        Level of the rank tests. The cross-covariance lattice is tested as one
        family (Westfall-Young step-down max-T, :mod:`hclstat.calibration`):
        under independent modalities the probability that any cross rank comes
        out above 0 is at most ``alpha``. Each specific rank is tested at
        ``alpha`` over the modalities (Tracy-Widom / likelihood-ratio test).
    max_iter : int
        Alternation budget of each fit.
    tol : float
        Stop when the relative decrease of the objective falls below ``tol``.
    random_state : int, Generator or None
        Seeds three independent streams (``SeedSequence(random_state).spawn(3)``):
        the row subsample of the permutation nulls, the permutations, and the
        random starts of iterative eigensolvers.
    verbose : bool

    Attributes
    ----------
    hierarchy_, loadings_, noise_variances_ : see :class:`BaseHierarchicalEstimator`
    lattice_ : RankLattice or None
        Observed ranks and member estimates (``None`` when the hierarchy is given).
    n_iter_ : int
        Alternations of the final refit.
    converged_ : bool
    objective_path_ : list of float
        Objective after each alternation of the final refit.
    selection_path_ : DataFrame
        With ``penalty="group"``: one row per penalty multiplier (the support
        it selected, whether it agrees with the lattice, rejected block steps,
        the BIC with ``selection="bic"``), then the lattice pattern at
        ``lambda = 0``; empty otherwise.
    fit_time_ : float
    """

    def __init__(
        self,
        hierarchy=None,
        *,
        max_rank=None,
        types=None,
        max_components=None,
        noise_model="diagonal",
        penalty=None,
        selection="lattice",
        gamma=1.0,
        lambdas=None,
        n_permutations=None,
        permutation_rows=5000,
        alpha=0.01,
        max_iter=2000,
        tol=1e-7,
        random_state=None,
        verbose=False,
    ):
        self.hierarchy = hierarchy
        self.max_rank = max_rank
        self.types = types
        self.max_components = max_components
        self.noise_model = noise_model
        self.penalty = penalty
        self.selection = selection
        self.gamma = gamma
        self.lambdas = lambdas
        self.n_permutations = n_permutations
        self.permutation_rows = permutation_rows
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    # checked by BaseHierarchicalEstimator._validate_params in fit / fit_moments
    _parameter_constraints: dict = {
        "hierarchy": [Hierarchy, None],
        "max_rank": [Interval(Integral, 1, None, closed="left"), None],
        "types": [StrOptions({"auto", *MIXED_TYPES}), dict, None],
        "max_components": [Interval(Integral, 1, None, closed="left"), None],
        "noise_model": [StrOptions({"diagonal", "isotropic"})],
        "penalty": [StrOptions({"group"}), None],
        "selection": [StrOptions({"lattice", "bic"})],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "lambdas": ["array-like", None],
        "n_permutations": [Interval(Integral, 1, None, closed="left"), None],
        "permutation_rows": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "random_state": RANDOM_STATE,
        "verbose": VERBOSE,
    }

    # ------------------------------------------------------------ choices
    def _solver(self):
        """The solver matching this estimator's datafit (dense moments: row least squares)."""
        return RowLeastSquares(gamma=self.gamma, tol=self.tol, max_iter=self.max_iter)

    def _check_combination(self):
        """What the per-parameter constraints cannot say: how two parameters combine."""
        if self.selection == "bic" and self.penalty != "group":
            raise ValueError(f"selection: 'bic' chooses among the penalised path's supports and needs "
                             f"penalty='group', got penalty={self.penalty!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, views, y=None):
        """Fit from views (dict modality name -> (n, p_m) table, or a list).

        The rank lattice needs the rows themselves (permutation thresholds);
        :meth:`fit_moments` falls back to a random-matrix bound.
        """
        self._validate_params()
        arrays, names = check_views(views)
        copula = None
        if self.types is None:
            warn_mixed_columns(arrays, names, stacklevel=2)
            with moment_pass_threads():
                moments = compute_moments(arrays)
            moments.feature_names = names
            null_rows = arrays
        else:
            with moment_pass_threads():
                types, copula = fit_copula(self.types, arrays, names, stacklevel=2)
            moments, null_rows = copula.moments, copula.null_scores
        streams = random_streams(self.random_state, 3)
        null = None
        if self.hierarchy is None:
            n = moments.n_samples
            rows = np.sort(streams[0].choice(n, self.permutation_rows, replace=False)) if n > self.permutation_rows else None
            null = _row_source(null_rows, moments, rows, streams[2])
        self._pending = (null, streams)
        try:
            self.fit_moments(moments)
        finally:
            self.__dict__.pop("_pending", None)
        self.copula_margins_ = None if copula is None else copula.margins
        self.types_ = None if copula is None else types
        if copula is not None:
            self.noise_variances_ = latent_noise(self.noise_variances_, copula.margins, self.hierarchy_.modalities,
                                                 self.dims_)
        return self

    def _fit_moments(self, moments):
        self._check_combination()
        if self.types is not None and "_pending" not in self.__dict__:  # not through fit
            raise ValueError("types: the latent copula moments are built from the rows; call fit(views), "
                             "not fit_moments (or leave types=None for Pearson moments)")
        null, streams = self.__dict__.pop("_pending", (None, None))
        if streams is None:
            streams, level = random_streams(self.random_state, 3), 4  # fit_moments called directly
        else:
            level = 5  # through fit
        self._fit_datafit(CovarianceDatafit(moments), null, streams[1], stacklevel=level)

    def _fit_datafit(self, datafit, null, rng, *, stacklevel):
        """Learn (or check) the hierarchy on ``datafit`` and fit it with :meth:`_solver`.

        ``null`` is the row source of the permutation nulls (``None``: the
        analytic bound), ``rng`` the stream of the permutations;
        ``stacklevel`` points warnings at the caller of ``fit``.
        """
        t0 = time.perf_counter()
        d = datafit.stacked_diag()
        if np.any(d <= 0):
            j = int(np.flatnonzero(d <= 0)[0])
            raise ValueError(f"feature {j} of the stacked data has zero variance; drop constant columns")
        h = self.hierarchy
        self.lattice_ = None
        if h is None:
            h = self._learn(datafit, null, rng, stacklevel)
        else:
            self._check_requested(h)
        if h.n_components == 0:
            warnings.warn("no latent component was detected; the fitted model is pure noise", EstimationWarning,
                          stacklevel=stacklevel)
        solver = self._solver()
        fit = fit_hierarchy(datafit, h, solver, noise_model=self.noise_model,
                            run_path=self.hierarchy is None and self.penalty == "group",
                            selection=self.selection, lambdas=self.lambdas)
        h, A, psi = fit.hierarchy, fit.A, fit.psi
        mods = h.modalities
        sl = [h.feature_slices()[m] for m in mods]
        self.hierarchy_ = h
        self.loadings_ = {
            s: {m: np.ascontiguousarray(A[sl[i], cs]) for i, m in enumerate(mods) if m in s}
            for s, cs in h.component_slices().items()
        }
        self.noise_variances_ = {m: psi[sl[i]].copy() for i, m in enumerate(mods)}
        self.n_iter_, self.converged_, self.objective_path_ = fit.info.n_iter, fit.info.converged, fit.info.objective_path
        self.selection_path_ = pd.DataFrame(fit.path)
        self.fit_time_ = time.perf_counter() - t0
        self._warn_about_fit(fit, solver, stacklevel + 1)
        return fit

    def _warn_about_fit(self, fit, solver, stacklevel):
        disagree = path_disagreements(fit.path)
        if disagree:
            kept = "the lattice pattern is kept" if self.selection == "lattice" else "BIC chose among them"
            warnings.warn(
                f"the penalised path disagrees with the rank-lattice pattern {fit.path[-1]['pattern']} "
                f"({'; '.join(disagree)}); {kept} (see selection_path_)",
                EstimationWarning, stacklevel=stacklevel,
            )
        rejected = int(sum(r.get("rejected_steps", 0) for r in fit.path)) + fit.info.n_rejected
        if rejected:
            warnings.warn(
                f"{rejected} majorise-minimise block steps found no majorising curvature within "
                f"{solver.max_doublings} doublings and were rejected (those blocks kept their values)",
                ConvergenceWarning, stacklevel=stacklevel,
            )
        if not fit.info.converged:
            warnings.warn(
                f"{type(self).__name__} stopped after max_iter={self.max_iter} alternations before the relative "
                f"objective change fell below tol={self.tol}; increase max_iter",
                ConvergenceWarning, stacklevel=stacklevel,
            )

    def _check_requested(self, h):
        for m in h.modalities:
            if h.modality_rank(m) > h.dims[m] - 1:
                raise IdentifiabilityError(
                    f"modality {m!r}: total rank {h.modality_rank(m)} leaves no noise dimension in its "
                    f"{h.dims[m]} columns; the loadings are not identified (lower the ranks)"
                )
        if self.max_rank is not None:
            for s in h.structures:
                if h.rank(s) > self.max_rank:
                    raise ValueError(f"hierarchy: structure {h.name(s)} has rank {h.rank(s)} above max_rank={self.max_rank}")

    # ------------------------------------------------------------ learning
    def _learn(self, datafit, null, rng, stacklevel):
        """The rank lattice (non-specific ranks) and the specific-rank tests on ``datafit``."""
        self.lattice_ = datafit_lattice(datafit, null=null, n_permutations=self.n_permutations,
                                        max_rank=self.max_rank, random_state=rng, level=self.alpha)
        if not self.lattice_.consistent:
            warnings.warn(
                "member modalities disagree on some structure ranks (see lattice_.member_estimates); "
                "the integer least-squares fit of all observed ranks decides. Disagreement suggests "
                "correlated latents or a signal too weak for this sample size",
                EstimationWarning,
                stacklevel=stacklevel + 1,
            )
        spec, _ = datafit_specific_ranks(datafit, self.lattice_.ranks, noise_model=self.noise_model,
                                         alpha=self.alpha, max_rank=self.max_rank, stacklevel=stacklevel + 2)
        ranks = dict(self.lattice_.ranks)
        if self.max_rank is not None:
            ranks = {s: min(k, self.max_rank) for s, k in ranks.items()}
            spec = {s: min(k, self.max_rank) for s, k in spec.items()}
        h = lattice_hierarchy(datafit.dims, ranks, spec)
        if self.max_components is not None and h.n_components > self.max_components:
            h = self._largest_components(datafit, h)
        return h

    def _largest_components(self, datafit, h):
        """The ``max_components`` components of ``h`` explaining the most standardised variance.

        ``h`` is fitted once; within each structure the principal directions of
        its loadings (eigenvalues of ``A_S^T D^{-1} A_S``, ``D = diag S``: the
        variance a direction explains, summed over columns as a share of each
        column's variance) are ranked together across structures.
        """
        fit = fit_hierarchy(datafit, h, self._solver(), noise_model=self.noise_model)
        d = datafit.stacked_diag()
        shares = [(float(v), s) for s, cs in h.component_slices().items()
                  for v in np.linalg.eigvalsh(fit.A[:, cs].T @ (fit.A[:, cs] / d[:, None]))]
        shares.sort(key=lambda t: -t[0])
        kept = {}
        for _, s in shares[: self.max_components]:
            kept[s] = kept.get(s, 0) + 1
        return Hierarchy(dims=dict(h.dims), ranks={tuple(sorted(s)): k for s, k in kept.items()})


def _row_source(arrays, moments, rows, rng):
    """The rows (all, or the subset ``rows``) behind the permutation nulls, centred with the
    full-sample means (:func:`hclstat.calibration.row_source`: masks with missing entries,
    covariances matched to the full sample's on a complete subsample)."""
    sl = moments.slices
    views = {m: a if rows is None else a[rows] for m, a in arrays.items()}
    return row_source(views, {m: moments.means[sl[m]] for m in arrays}, moments=moments,
                      subsample=rows is not None, random_state=rng)
