"""HCL: the structure-aware contrastive estimator.

In the linear model the spectral contrastive loss between linear encoders of
two modalities is, up to constants, a low-rank fit of their cross-covariance.
HCL aligns a pair of modalities only through the structures they share::

    F(A) = sum_{m<m'} w_{mm'} || S_{mm'} - sum_{S ⊇ {m,m'}} A_{m,S} A_{m',S}^T ||_F^2
           + gamma/2 * sum_m || offdiag(S_mm - A_m A_m^T) ||_F^2
           + lambda * sum_m sum_j c_{mj} || A_{m,:,j} ||_2

computed on noise-whitened moments ``D^{-1/2} S D^{-1/2}`` (``D`` the current
noise-variance estimate, so every pair is fitted on the scale of its noise).
The unpenalised fit alternates over modalities with exact row least-squares
sweeps (Numba, :func:`hclstat.kernels.hcl.row_ls_sweep`); the penalised path
uses block majorise-minimise steps whose convex sub-problem (a group lasso with
matrix design) is solved exactly by :func:`hclstat.kernels.hcl.group_bcd`.
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
from ..kernels.hcl import penalised_block_step, row_ls_sweep
from ..lattice import _fa_noise, lattice_hierarchy, rank_lattice, specific_ranks
from ..moments import compute_moments
from ..utils import top_eigh, top_svd
from .base import RANDOM_STATE, VERBOSE, BaseHierarchicalEstimator

__all__ = ["HCL", "hcl_objective"]

_NOISE_FLOOR = 1e-6
#: a trace-form block residual below this fraction of ||S_block||_F^2 has lost half its
#: digits to cancellation (an exact fit gives negative round-off): recompute it directly
_CANCEL = 1e-8
_WEIGHT_FLOOR = 1e-2
#: smallest share of a feature's variance left to noise (communality bound)
_MIN_NOISE_SHARE = 5e-3
#: relative tolerance of the penalised confirmation path
_PATH_TOL = 1e-5


def hcl_objective(S, A, slices, support, *, gamma=1.0, weights=None, lam=0.0, c=None):
    """The HCL objective ``F(A)`` (see the module docstring).

    Parameters
    ----------
    S : ndarray of shape (p, p)
        (Whitened) sample covariance of the stacked modalities.
    A : ndarray of shape (p, K)
        Stacked loadings; block ``(m, j)`` must be zero where ``support[m, j]`` is 0.
    slices : list of slice
        Feature rows of each modality, in order.
    support : ndarray of shape (M, K) of bool
    weights : ndarray of shape (M, M), optional
        Pair weights ``w_{mm'}`` (default 1).
    lam : float
        Penalty level; ``c`` (M x K) are the per-block penalty weights.
    """
    M = len(slices)
    val = 0.0
    for a in range(M):
        Aa = A[slices[a]]
        Ga = Aa.T @ Aa
        for b in range(a + 1, M):
            w = 1.0 if weights is None else weights[a, b]
            Sab = S[slices[a], slices[b]]
            Ab = A[slices[b]]
            # ||S - Aa Ab^T||^2 = ||S||^2 - 2 tr(Aa^T S Ab) + tr(Ga Gb), without a p_a x p_b residual
            s2 = float(np.einsum("ij,ij->", Sab, Sab))
            v = s2 - 2.0 * float(np.einsum("ij,ij->", Aa, Sab @ Ab)) + float(np.einsum("ij,ji->", Ga, Ab.T @ Ab))
            if v < _CANCEL * s2:  # near an exact fit the expansion is all round-off: use the residual
                R = Sab - Aa @ Ab.T
                v = float(np.einsum("ij,ij->", R, R))
            val += w * v
        Saa = S[slices[a], slices[a]]
        s2 = float(np.einsum("ij,ij->", Saa, Saa))
        full = s2 - 2.0 * float(np.einsum("ij,ij->", Aa, Saa @ Aa)) + float(np.einsum("ij,ij->", Ga, Ga))
        diag = np.diag(Saa) - np.einsum("ij,ij->i", Aa, Aa)
        v = full - float(diag @ diag)
        if v < _CANCEL * s2:
            R = Saa - Aa @ Aa.T
            np.fill_diagonal(R, 0.0)
            v = float(np.einsum("ij,ij->", R, R))
        val += 0.5 * gamma * v
        if lam:
            val += lam * float(np.sum(c[a] * np.linalg.norm(Aa, axis=0)))
    return val


def _reduced_scales(C, members, k, n_iter=50):
    """Coefficients ``G_m`` (k x k) with ``C[m, m'] ≈ G_m G_m'^T``: an SVD start
    from the first pair, then alternating least squares over the members."""
    i0, j0 = members[0], members[1]
    U, s, Vt = np.linalg.svd(C[i0, j0])
    G = {i0: U * np.sqrt(s), j0: Vt.T * np.sqrt(s)}
    for i in members[2:]:
        G[i] = np.linalg.lstsq(G[i0], C[i0, i], rcond=None)[0].T
    for _ in range(n_iter if len(members) > 2 else 0):
        change = 0.0
        for i in members:
            Gs = np.vstack([G[j] for j in members if j != i])
            Cs = np.hstack([C[i, j] for j in members if j != i])
            new = np.linalg.lstsq(Gs, Cs.T, rcond=None)[0].T
            change = max(change, float(np.linalg.norm(new - G[i])) / max(float(np.linalg.norm(new)), 1e-300))
            G[i] = new
        if change <= 1e-8:  # a starting value: more digits would not change the fit
            break
    return G


def _generator(random_state):
    """A Generator is shared (its stream continues), anything else seeds a new one."""
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


class HCL(BaseHierarchicalEstimator):
    """Structure-aware contrastive estimator of a hierarchical latent-variable model.

    Parameters
    ----------
    hierarchy : Hierarchy or None
        The sharing pattern. ``None`` (default) learns the pattern and the ranks:
        non-specific ranks from the cross-covariance rank lattice with
        permutation-null thresholds per pair (:func:`hclstat.lattice.rank_lattice`),
        specific ranks from the noise-whitened within-modality spectrum, then a
        penalised path that prunes and confirms blocks, choosing among the
        supports it visits by BIC.
    max_rank : int, optional
        Cap on any structure's rank and on each modality's total rank.
    noise_model : {"diagonal", "isotropic"}
        ``Psi_m`` heteroskedastic diagonal or ``sigma_m^2 I``.
    penalty : {"group", None}
        ``"group"`` runs the penalised confirmation path when the pattern is
        learned; ``None`` keeps the lattice pattern as is.
    selection : {"lattice", "bic"}
        How the final pattern is chosen. ``"lattice"`` (default) keeps the
        pattern whose every rank passed its permutation / Tracy-Widom test; the
        penalised path is still run and recorded in ``selection_path_`` (with the
        BIC of each support it visits) as a confirmation. ``"bic"`` picks, among
        the lattice pattern and the supports visited by the path, the one with
        the smallest Gaussian BIC ``-2 loglik + log(n) df``,
        ``df = sum_S [k_S sum_{m in S} p_m - k_S (k_S - 1) / 2]`` + noise
        parameters. Measured on design D1 (p = 50/60/70, n = 500): BIC prunes
        true but weak components (loading scale 0.15), so it is not the default.
    gamma : float
        Weight of the within-modality off-diagonal term (pins scale and the
        specific parts).
    lambdas : sequence of float, optional
        Multipliers of the calibrated penalty weights along the path (default
        ``(1, 2, 4)``): a multiplier of 1 puts a block at the level where
        noise alone would make it non-zero.
    n_permutations : int
        Row permutations for the cross-covariance rank thresholds.
    permutation_rows : int
        Largest number of rows used for the permutation nulls; above it a
        random row subset is permuted and its null levels are rescaled by
        ``sqrt(n_sub / n)`` (keeps the pattern search from costing more than
        the moment pass at large ``n``).
    alpha : float
        Level of the rank tests: family-wise (Bonferroni) over the cross-covariance
        lattice, and of the Tracy-Widom / likelihood-ratio test for each
        specific rank.
    max_iter : int
        Alternation budget of each fit.
    tol : float
        Stop when the relative decrease of the objective falls below ``tol``.
    random_state : int, Generator or None
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
        One row per penalty multiplier: the support it selected, its BIC.
    fit_time_ : float
    """

    def __init__(
        self,
        hierarchy=None,
        *,
        max_rank=None,
        noise_model="diagonal",
        penalty="group",
        selection="lattice",
        gamma=1.0,
        lambdas=None,
        n_permutations=10,
        permutation_rows=5000,
        alpha=0.01,
        max_iter=2000,
        tol=1e-7,
        random_state=None,
        verbose=False,
    ):
        self.hierarchy = hierarchy
        self.max_rank = max_rank
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

    # ------------------------------------------------------------------ fit
    # checked by BaseHierarchicalEstimator._validate_params in fit / fit_moments
    _parameter_constraints: dict = {
        "hierarchy": [Hierarchy, None],
        "max_rank": [Interval(Integral, 1, None, closed="left"), None],
        "noise_model": [StrOptions({"diagonal", "isotropic"})],
        "penalty": [StrOptions({"group"}), None],
        "selection": [StrOptions({"lattice", "bic"})],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "lambdas": ["array-like", None],
        "n_permutations": [Interval(Integral, 1, None, closed="left")],
        "permutation_rows": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "random_state": RANDOM_STATE,
        "verbose": VERBOSE,
    }

    def fit(self, views, y=None):
        """Fit from views (dict modality name -> (n, p_m) table, or a list).

        The rank lattice needs the rows themselves (permutation thresholds);
        :meth:`fit_moments` falls back to a random-matrix bound.
        """
        self._validate_params()
        arrays, names = check_views(views)
        moments = compute_moments(arrays)
        moments.feature_names = names
        n = moments.n_samples
        rows = None
        if n > self.permutation_rows:
            rng = _generator(self.random_state)
            rows = np.sort(rng.choice(n, self.permutation_rows, replace=False))
        self._arrays = {
            m: (a if rows is None else a[rows]) - moments.means[moments.slices[m]] for m, a in arrays.items()
        } if self.hierarchy is None else None
        try:
            return self.fit_moments(moments)
        finally:
            self.__dict__.pop("_arrays", None)

    def _fit_moments(self, moments):
        rng = _generator(self.random_state)
        S = moments.covariance
        self._estimate(S, np.diag(S).copy(), moments.n_samples, rng, lambda: self._learn_ranks(moments, rng))

    def _estimate(self, source, d, n_samples, rng, learn):
        """The fitting pipeline, shared with :class:`MatrixFreeHCL`.

        ``source`` is what the stage methods (:meth:`_fit_support`,
        :meth:`_noise`, :meth:`_select`) read: the covariance matrix here, a
        data operator in the matrix-free subclass; ``d`` is the stacked
        variance diagonal and ``learn()`` returns the learned hierarchy.
        """
        t0 = time.perf_counter()
        if np.any(d <= 0):
            j = int(np.flatnonzero(d <= 0)[0])
            raise ValueError(f"feature {j} of the stacked data has zero variance; drop constant columns")
        h = self.hierarchy
        self.lattice_ = None
        if h is None:
            h = learn()
        else:
            self._check_requested(h)
        self._pattern_ready(rng)
        if h.n_components == 0:
            warnings.warn("no latent component was detected; the fitted model is pure noise", EstimationWarning, stacklevel=4)
        mods = h.modalities
        sl = [h.feature_slices()[m] for m in mods]
        support = self._support_of(h)
        # pass 1 on the correlation scale, pass 2 on the noise scale of pass 1
        A, info = self._fit_support(source, d, sl, support, h, None)
        psi = self._noise(source, A, sl)
        # whitening weights are capped at 100x the correlation-scale weight: a
        # near-zero noise estimate (a Heywood case) must not dominate the fit
        wscale = np.maximum(psi, _WEIGHT_FLOOR * d)
        A, info = self._fit_support(source, wscale, sl, support, h, A)
        path = []
        if self.hierarchy is None and self.penalty == "group" and h.n_components:
            support, A, path = self._select(source, wscale, sl, support, A, n_samples, h)
            h, A, support = self._merge(h, A, support)
            A, info = self._fit_support(source, wscale, sl, support, h, A)
        psi = self._noise(source, A, sl)
        self.hierarchy_ = h
        self.loadings_ = {
            s: {m: np.ascontiguousarray(A[sl[i], cs]) for i, m in enumerate(mods) if m in s}
            for s, cs in h.component_slices().items()
        }
        self.noise_variances_ = {m: psi[sl[i]].copy() for i, m in enumerate(mods)}
        self.n_iter_, self.converged_, self.objective_path_ = info
        self.selection_path_ = pd.DataFrame(path)
        self.fit_time_ = time.perf_counter() - t0
        if not self.converged_:
            warnings.warn(
                f"{type(self).__name__} stopped after max_iter={self.max_iter} alternations before the relative "
                f"objective change fell below tol={self.tol}; increase max_iter",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _pattern_ready(self, rng):
        """Hook between learning the pattern and fitting it (nothing to do here)."""

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
    def _learn_ranks(self, moments, rng):
        # the row subsample serves the permutation nulls only: released once they are drawn
        arrays = self.__dict__.pop("_arrays", None)
        self.lattice_ = rank_lattice(
            arrays if arrays is not None else None,
            moments=moments,
            n_permutations=self.n_permutations,
            max_rank=self.max_rank,
            random_state=rng,
            level=self.alpha,
        )
        del arrays
        self._warn_if_inconsistent()
        spec, _ = specific_ranks(moments, self.lattice_.ranks, noise_model=self.noise_model,
                                 alpha=self.alpha, max_rank=self.max_rank)
        ranks = dict(self.lattice_.ranks)
        if self.max_rank is not None:
            ranks = {s: min(k, self.max_rank) for s, k in ranks.items()}
            spec = {s: min(k, self.max_rank) for s, k in spec.items()}
        return lattice_hierarchy(moments.dims, ranks, spec)

    def _warn_if_inconsistent(self):
        if not self.lattice_.consistent:
            warnings.warn(
                "member modalities disagree on some structure ranks (see lattice_.member_estimates); "
                "the integer least-squares fit of all observed ranks decides. Disagreement suggests "
                "correlated latents or a signal too weak for this sample size",
                EstimationWarning,
                stacklevel=6,
            )

    @staticmethod
    def _support_of(h):
        sup = np.zeros((h.n_modalities, h.n_components), dtype=bool)
        sup[:] = h.support_matrix().astype(bool)
        return sup

    # ------------------------------------------------------------- fitting
    def _noise(self, S, A, sl):
        psi = np.clip(np.diag(S) - np.sum(A * A, axis=1), _NOISE_FLOOR * np.diag(S), None)
        if self.noise_model == "isotropic":
            for s in sl:
                psi[s] = psi[s].mean()
        return psi

    def _fit_support(self, S, scale, sl, support, h, A_start):
        """Unpenalised fit on a fixed support, on moments whitened by ``scale``."""
        dh = 1.0 / np.sqrt(scale)
        Sw = S * dh[:, None] * dh[None, :]
        if A_start is None:
            A = self._initialize(Sw, sl, support, h, S=S, scale=scale)
        else:
            A = A_start * dh[:, None]
        A, info = self._alternate(Sw, A, sl, support)
        return A * np.sqrt(scale)[:, None], info

    def _alternate(self, Sw, A, sl, support):
        """Alternate exact row least-squares sweeps over modalities.

        After each sweep an extrapolation ``A + beta (A - A_prev)`` is tried and
        kept only if it lowers the objective (so the path stays monotone);
        ``beta`` grows after a success and halves after a failure. This is the
        line-search acceleration of alternating least squares; on ill-conditioned
        real data it cuts the number of sweeps several-fold.
        """
        M = len(sl)
        A = np.ascontiguousarray(A)
        obj = lambda X: hcl_objective(Sw, X, sl, support, gamma=self.gamma)  # noqa: E731
        path = [obj(A)]
        # relative tolerance, floored at round-off of the data's own scale
        floor = 1e-13 * float(np.sum(Sw * Sw))
        ridge = 1e-12 * float(np.mean(np.diag(Sw)))
        frees = [np.flatnonzero(support[a]).astype(np.int64) for a in range(M)]
        within = [np.ascontiguousarray(Sw[s, s]) for s in sl]
        # communality bound ||a_i||^2 <= (1 - eps) S_ii: the noise keeps at least
        # a share eps of each variance (no Heywood case); start feasible
        caps = [np.ascontiguousarray((1.0 - _MIN_NOISE_SHARE) * np.diag(w)) for w in within]
        for a in range(M):
            Aa = A[sl[a]]
            over = np.sum(Aa * Aa, axis=1) > caps[a]
            if over.any():
                Aa[over] *= np.sqrt(caps[a][over] / np.sum(Aa[over] ** 2, axis=1))[:, None]
        converged = False
        beta = 0.5
        it = 0
        for it in range(1, self.max_iter + 1):
            A_prev = A.copy()
            for a in range(M):
                if frees[a].size == 0:
                    continue
                G, C = self._cross_terms(Sw, A, sl, a)
                Aa = np.ascontiguousarray(A[sl[a]])
                row_ls_sweep(Aa, within[a], C, G, frees[a], float(self.gamma), ridge, caps[a])
                A[sl[a]] = Aa
            cur = obj(A)
            if it > 1:
                ext = A + beta * (A - A_prev)
                val = obj(ext)
                if val < cur:
                    A, cur = np.ascontiguousarray(ext), val
                    beta = min(2.0 * beta, 8.0)
                else:
                    beta = max(0.5 * beta, 0.05)
            path.append(cur)
            if abs(path[-2] - path[-1]) <= self.tol * max(abs(path[-1]), floor):
                converged = True
                break
        return A, (it, converged, path)

    @staticmethod
    def _cross_terms(Sw, A, sl, a):
        K = A.shape[1]
        G = np.zeros((K, K))
        C = np.zeros((sl[a].stop - sl[a].start, K))
        for b in range(len(sl)):
            if b == a:
                continue
            Ab = A[sl[b]]
            G += Ab.T @ Ab
            C += Sw[sl[a], sl[b]] @ Ab
        return G, np.ascontiguousarray(C)

    def _initialize(self, source, sl, support, h, S=None, scale=None):
        """Spectral initialiser aligned with structures.

        Structures are taken from the top of the lattice down. For structure
        ``S`` and member ``m`` the directions shared with every other member are
        the top eigenvectors of the sum of projectors onto the leading left
        singular subspaces of the residual cross-covariances ``R_{mm'}``,
        ``m' in S``; their scale comes from a small alternating least-squares
        fit of the reduced cross-covariances. Specific blocks come from the
        residual within-modality covariance less a factor-analysis noise.
        """
        mods = h.modalities
        cs = h.component_slices()
        A = np.zeros((sum(s.stop - s.start for s in sl), h.n_components))
        for s in h.structures:
            k = h.rank(s)
            members = [i for i, m in enumerate(mods) if m in s]
            if len(members) == 1:
                continue
            bases = {}
            for i in members:
                Us = []
                for j in members:
                    if j == i:
                        continue
                    # rank of the remaining pair signal: structures not yet fitted containing both
                    r = sum(h.rank(t) for t in h.structures if mods[i] in t and mods[j] in t and not np.any(A[sl[i], cs[t]]))
                    Us.append(self._residual_basis(source, A, sl, i, j, max(r, k)))
                # top eigenvectors of the sum of projectors sum_j U_j U_j^T: the left
                # singular vectors of [U_1 U_2 ...] (no p_m x p_m matrix needed)
                bases[i] = np.linalg.svd(np.hstack(Us), full_matrices=False)[0][:, :k]
            G = _reduced_scales(self._reduced_cross(source, A, sl, members, bases), members, k)
            for i in members:
                A[sl[i], cs[s]] = bases[i] @ G[i]
        for a, m in enumerate(mods):
            spec = frozenset([m])
            if h.rank(spec) == 0:
                continue
            w, V = self._specific_top(source, A, sl, a, h.rank(spec), h.modality_rank(m), S=S, scale=scale)
            A[sl[a], cs[spec]] = V * np.sqrt(np.clip(w, 1e-3, None))
        return A

    # stages of the initialiser that read the (whitened) moments; MatrixFreeHCL
    # supplies the same quantities from products with the data
    @staticmethod
    def _residual_basis(Sw, A, sl, i, j, q):
        """Top ``q`` left singular vectors of ``R_ij = S_ij - A_i A_j^T``."""
        return top_svd(Sw[sl[i], sl[j]] - A[sl[i]] @ A[sl[j]].T, q)[0]

    @staticmethod
    def _reduced_cross(Sw, A, sl, members, bases):
        """``Q_i^T R_ij Q_j`` for every ordered pair of members."""
        return {(i, j): bases[i].T @ (Sw[sl[i], sl[j]] - A[sl[i]] @ A[sl[j]].T) @ bases[j]
                for i in members for j in members if i != j}

    @staticmethod
    def _specific_top(Sw, A, sl, a, k, modality_rank, S=None, scale=None):
        """Top ``k`` eigenpairs of ``S_aa - Psi_a - A_a A_a^T`` (``Psi_a``: factor-analysis noise)."""
        Saa = Sw[sl[a], sl[a]]
        if S is None:
            psi = _fa_noise(Saa, modality_rank)
        else:  # fitted on the raw block (shared with the rank search), then whitened
            psi = _fa_noise(S[sl[a], sl[a]], modality_rank) / scale[sl[a]]
        return top_eigh(Saa - np.diag(psi) - A[sl[a]] @ A[sl[a]].T, k)

    # ----------------------------------------------------- penalised path
    def _select(self, S, psi, sl, support0, A0, n, h):
        """Penalised confirmation path over calibrated multipliers.

        Every (modality, component) block is free; a block's penalty weight is
        the gradient norm that noise alone would give it at zero, so at
        multiplier 1 a block outside the pattern enters only if the data push it
        harder than noise would. Returns the chosen support, its loadings and
        one row per multiplier (the support visited and whether it agrees with
        the lattice pattern; with ``selection="bic"`` also each support's BIC).
        """
        dh = 1.0 / np.sqrt(psi)
        Sw = S * dh[:, None] * dh[None, :]
        Aw = A0 * dh[:, None]
        M, K = support0.shape
        # calibrated block weights: gradient norm a zero block would see from noise alone
        tau = self._pair_noise_levels(Sw, sl, n)
        col_norms = np.array([[np.linalg.norm(Aw[sl[b], j]) for j in range(K)] for b in range(M)])
        noise = np.maximum(tau @ col_norms, 1e-12)
        # adaptive weights: a block's push from the data when refitted alone,
        # z = ||sum_b (S_ab - A_a A_b^T + A_aj A_bj^T) A_bj||; blocks the data push
        # harder than noise are penalised in proportion noise / z (no shrinkage bias
        # for strong blocks), the others at the noise level itself
        z = np.zeros((M, K))
        for a in range(M):
            push = np.zeros((sl[a].stop - sl[a].start, K))
            for b in range(M):
                if b != a:
                    R = Sw[sl[a], sl[b]] @ Aw[sl[b]] - Aw[sl[a]] @ (Aw[sl[b]].T @ Aw[sl[b]])
                    push += R + Aw[sl[a]] * (col_norms[b] ** 2)[None, :]
            z[a] = np.linalg.norm(push, axis=0)
        c = 2.0 * noise * np.minimum(1.0, noise / np.maximum(z, 1e-300))
        lambdas = (1.0, 2.0, 4.0) if self.lambdas is None else tuple(self.lambdas)
        free_all = np.ones((M, K), dtype=bool)
        key0 = self._key(support0)
        candidates = {key0: support0}
        rows = []
        A = Aw.copy()
        for lam in sorted(lambdas):
            A = self._penalised(Sw, A, sl, free_all, lam, c)
            sup = np.array([[np.any(A[sl[a], j] != 0.0) for j in range(K)] for a in range(M)])
            candidates.setdefault(self._key(sup), sup)
            rows.append({"lambda": lam, "pattern": self._describe(h, sup), "support": self._key(sup),
                         "agrees_with_lattice": self._key(sup) == key0,
                         "objective": hcl_objective(Sw, A, sl, free_all, gamma=self.gamma, lam=lam, c=c)})
        return self._choose_support(S, psi, sl, support0, A0, n, h, candidates, rows)

    def _choose_support(self, source, psi, sl, support0, A0, n, h, candidates, rows):
        """The support kept (the lattice's, or with ``selection="bic"`` the best BIC
        among it and the path's candidates), its loadings, and the finished path rows."""
        key0 = self._key(support0)
        best, fits, scores = key0, {key0: (support0, A0)}, {}
        if self.selection == "bic":
            sizes = np.array([s.stop - s.start for s in sl])
            for key, sup in candidates.items():
                keep = sup.any(axis=0)
                sub = sup[:, keep]
                if not keep.any() or np.any(sub.sum(axis=1) > sizes - 1):
                    continue  # empty, or leaves a modality no noise dimension
                hk = self._hierarchy_from_support(h, sub)
                start = A0 if key == key0 else (A0 * np.repeat(sup, sizes, axis=0))[:, keep]
                Ak, _ = self._fit_support(source, psi, sl, sub, hk, start)
                scores[key] = self._bic(source, Ak, sl, sub, n)
                fits[key] = (sub, Ak)
            best = min(scores, key=scores.get)
            for r in rows:
                r["bic"] = scores.get(r["support"], np.nan)
        for r in rows:
            r["selected"] = r["support"] == best
        rows.append({"lambda": 0.0, "pattern": self._describe(h, support0), "support": key0,
                     "agrees_with_lattice": True, "objective": np.nan, "selected": key0 == best,
                     **({"bic": scores.get(key0, np.nan)} if self.selection == "bic" else {})})
        sub, Ak = fits[best]
        return sub, Ak, rows

    @staticmethod
    def _describe(h, sup):
        """Readable pattern of a support: ``{a,b,c}:1 {a,b}:1 ...``."""
        counts = {}
        for j in range(sup.shape[1]):
            s = frozenset(m for a, m in enumerate(h.modalities) if sup[a, j])
            if s:
                counts[s] = counts.get(s, 0) + 1
        order = sorted(counts, key=lambda s: (-len(s), sorted(h.index(m) for m in s)))
        return " ".join(f"{h.name(s)}:{counts[s]}" for s in order) or "(empty)"

    def _penalised(self, Sw, A, sl, free, lam, c, n_outer=50):
        """Block majorise-minimise steps on the penalised objective (monotone)."""
        M = len(sl)
        g = float(self.gamma)
        prev = hcl_objective(Sw, A, sl, free, gamma=g, lam=lam, c=c)
        snorm = [float(top_eigh(Sw[s, s], 1)[0][0]) for s in sl]  # covariance blocks: PSD
        within = [np.ascontiguousarray(Sw[s, s]) for s in sl]
        frees = [np.flatnonzero(free[a]).astype(np.int64) for a in range(M)]
        lamvs = [np.ascontiguousarray(lam * c[a]) for a in range(M)]
        # curvature estimates of the within term, one per modality: each step starts
        # from a quarter of the last accepted value and doubles until the quadratic
        # model majorises (backtracking), capped by the global bound
        # 2 gamma (3 ||A_a||_2^2 + ||S_aa||_2), with ||A_a||_F^2 >= ||A_a||_2^2
        Ls = [None] * M
        for _ in range(n_outer):
            for a in range(M):
                Aa = np.ascontiguousarray(A[sl[a]])
                G, C = self._cross_terms(Sw, A, sl, a)
                bound = 2.0 * g * (3.0 * float(np.einsum("ij,ij->", Aa, Aa)) + snorm[a]) + 1e-12
                start = bound if Ls[a] is None else 0.25 * Ls[a]
                new, Ls[a] = penalised_block_step(Aa, within[a], C, G, lamvs[a], frees[a], g, start, bound, 30)
                A[sl[a]] = new
            cur = hcl_objective(Sw, A, sl, free, gamma=g, lam=lam, c=c)
            # the path only reads supports off its solutions: a looser tolerance suffices
            if prev - cur <= max(self.tol, _PATH_TOL) * max(abs(cur), 1e-300):
                break
            prev = cur
        return A

    @staticmethod
    def _pair_noise_levels(Sw, sl, n):
        """Null spectral norm of each sample cross-covariance block.

        ``(sqrt(tr S_aa ||S_bb||) + sqrt(tr S_bb ||S_aa||)) / sqrt(n)``: the
        expected norm of the cross-covariance of two independent blocks with
        these covariances (the same bound :func:`hclstat.lattice.rank_lattice`
        uses without data), so signal variance inflates it as it should.
        """
        M = len(sl)
        tr = [float(np.trace(Sw[s, s])) for s in sl]
        top = [float(top_eigh(Sw[s, s], 1)[0][0]) for s in sl]  # covariance blocks: PSD
        tau = np.zeros((M, M))
        for a in range(M):
            for b in range(M):
                if a != b:
                    tau[a, b] = (np.sqrt(tr[a] * top[b]) + np.sqrt(tr[b] * top[a])) / np.sqrt(n)
        return tau

    @staticmethod
    def _key(sup):
        return tuple(tuple(int(v) for v in row) for row in sup)

    @staticmethod
    def _hierarchy_from_support(h, sup):
        mods = h.modalities
        ranks = {}
        for j in range(sup.shape[1]):
            s = tuple(m for a, m in enumerate(mods) if sup[a, j])
            ranks[s] = ranks.get(s, 0) + 1
        return Hierarchy(dims=h.dims, ranks=ranks)

    def _merge(self, h, A, support):
        """Group components by modality set into structures (canonical order)."""
        mods = h.modalities
        keep = support.any(axis=0)
        A, support = A[:, keep], support[:, keep]
        hh = self._hierarchy_from_support(h, support)
        cols = []
        for s in hh.structures:
            cols.extend(j for j in range(support.shape[1]) if frozenset(m for a, m in enumerate(mods) if support[a, j]) == s)
        return hh, A[:, cols], support[:, cols]

    def _bic(self, S, A, sl, support, n):
        psi = self._noise(S, A, sl)
        Sigma = A @ A.T
        Sigma[np.diag_indices_from(Sigma)] += psi
        sign, logdet = np.linalg.slogdet(Sigma)
        ll = -0.5 * n * (logdet + np.trace(np.linalg.solve(Sigma, S)))
        df = 0
        mods_sizes = [s.stop - s.start for s in sl]
        groups = {}
        for j in range(support.shape[1]):
            groups.setdefault(tuple(support[:, j]), []).append(j)
        for key, js in groups.items():
            k = len(js)
            df += k * sum(p for p, on in zip(mods_sizes, key) if on) - k * (k - 1) // 2
        df += S.shape[0] if self.noise_model == "diagonal" else len(sl)
        return -2.0 * ll + np.log(n) * df
