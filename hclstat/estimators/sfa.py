"""Structured factor analysis: the Gaussian likelihood counterpart of HCL.

Factor analysis whose loading matrix is constrained to the block pattern of a
given :class:`~hclstat.hierarchy.Hierarchy`, fitted by EM from the sample
covariance alone. Handed the true pattern it is the *oracle* estimator that the
checks compare HCL to.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.linalg import eigh
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ConvergenceWarning
from ..hierarchy import Hierarchy, as_structure
from ..kernels.em import run_em
from ..utils import check_random_state
from .base import RANDOM_STATE, VERBOSE, BaseHierarchicalEstimator

__all__ = ["StructuredFactorAnalysis", "pattern_arrays", "count_parameters", "check_rank_budget"]

logger = logging.getLogger(__name__)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

NOISE_MODELS = ("diagonal", "isotropic")
INITS = ("spectral", "random")
ACCELERATIONS = ("squarem", "none")
#: noise variances are bounded below by this share of the feature's sample variance
#: (R's ``factanal`` default ``lower = 0.005``, and HCL's communality bound): at a
#: Heywood case the likelihood's supremum lies at psi_j = 0 and EM creeps towards it
#: sub-linearly without converging; with the bound the maximiser is attained
NOISE_FLOOR = 5e-3
#: random restarts tried when the spectral start ends at a Heywood solution
HEYWOOD_RESTARTS = 3
#: relative size of the random perturbation added to the spectral start
INIT_JITTER = 1e-2


def pattern_arrays(hierarchy):
    """CSR description of the block pattern for the EM kernels.

    Returns
    -------
    feat_ptr : int64 ndarray of shape (M + 1,)
        Rows ``feat_ptr[m]:feat_ptr[m+1]`` of the stacked features are modality ``m``.
    free_ptr : int64 ndarray of shape (M + 1,)
    free_idx : int64 ndarray of shape (sum_m K_m,)
        ``free_idx[free_ptr[m]:free_ptr[m+1]]`` are the (sorted) components that
        may load on modality ``m``: those of the structures containing ``m``.
    """
    h = hierarchy
    feat_ptr = np.zeros(h.n_modalities + 1, dtype=np.int64)
    feat_ptr[1:] = np.cumsum([h.dims[m] for m in h.modalities])
    cols = h.component_slices()
    free_ptr = np.zeros(h.n_modalities + 1, dtype=np.int64)
    free = []
    for i, m in enumerate(h.modalities):
        idx = sorted(j for s in h.structures_of(m) for j in range(cols[s].start, cols[s].stop))
        free.extend(idx)
        free_ptr[i + 1] = free_ptr[i] + len(idx)
    return feat_ptr, free_ptr, np.asarray(free, dtype=np.int64)


def _free_mask(hierarchy):
    """Boolean ``(p, K)`` mask of the loading entries the pattern leaves free."""
    h = hierarchy
    mask = np.zeros((h.n_features, h.n_components), dtype=bool)
    rows, cols = h.feature_slices(), h.component_slices()
    for s in h.structures:
        for m in s:
            mask[rows[m], cols[s]] = True
    return mask


def count_parameters(hierarchy, noise_model="diagonal"):
    """Number of free parameters of the structured factor model.

    ``sum_S k_S (sum_{m in S} p_m) - sum_S k_S (k_S - 1) / 2`` loadings (one
    orthogonal rotation per structure is not identified) plus ``p`` noise
    variances (diagonal) or ``M`` (isotropic).
    """
    h = hierarchy
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model: expected one of {NOISE_MODELS}, got {noise_model!r}")
    n = 0
    for s, k in h.ranks.items():
        n += k * sum(h.dims[m] for m in s) - k * (k - 1) // 2
    n += h.n_features if noise_model == "diagonal" else h.n_modalities
    return int(n)


def check_rank_budget(hierarchy, noise_model="diagonal"):
    """Raise ``ValueError`` when the pattern cannot be fitted by a factor model.

    Two basic budgets: every modality keeps at least one column beyond its total
    rank (otherwise its noise variances are not identified), and the number of
    free parameters (:func:`count_parameters`) does not exceed the
    ``p (p + 1) / 2`` distinct entries of the covariance.
    """
    h = hierarchy
    for m in h.modalities:
        if h.modality_rank(m) >= h.dims[m]:
            raise ValueError(
                f"hierarchy: modality {m!r} has total rank {h.modality_rank(m)} and {h.dims[m]} "
                f"columns; expected a total rank below the number of columns (the noise needs "
                f"at least one column), got {h.modality_rank(m)} >= {h.dims[m]}"
            )
    n_par = count_parameters(h, noise_model)
    budget = h.n_features * (h.n_features + 1) // 2
    if n_par > budget:
        raise ValueError(
            f"hierarchy: the structured factor model has {n_par} free parameters but the "
            f"covariance only {budget} distinct entries; expected at most {budget} parameters, "
            f"got {n_par}. Lower the ranks"
        )


def _spectral_init(S, h, noise_model, rng):
    """Deterministic spectral start, then a small perturbation drawn from ``rng``.

    Structures are visited in the hierarchy's canonical order (global, partial
    by decreasing size, specific). A shared structure ``S`` takes the leading
    ``k_S`` eigenvectors of the cross-covariance among its modalities after
    deflating the structures already placed, with the within-modality blocks
    zeroed (they carry the noise). For ``k = 1`` and equal block norms the
    leading eigenvalue of that block-off-diagonal matrix is ``(|S| - 1) / |S|``
    of the signal, hence the rescaling. A specific structure takes the leading
    eigenvectors of the modality's residual covariance, shrunk by a noise level
    read off its trailing eigenvalues. The greedy start is biased; EM removes
    the bias.
    """
    rows, cols = h.feature_slices(), h.component_slices()
    A = np.zeros((h.n_features, h.n_components))
    noise_level = {}
    for m in h.modalities:
        w = np.linalg.eigvalsh(S[rows[m], rows[m]])
        tail = w[: h.dims[m] - h.modality_rank(m)]
        noise_level[m] = max(float(np.mean(tail)), NOISE_FLOOR * float(np.mean(np.diag(S)[rows[m]])))
    for s in h.structures:
        k = h.rank(s)
        mods = [m for m in h.modalities if m in s]
        if len(mods) >= 2:
            idx = np.concatenate([np.arange(rows[m].start, rows[m].stop) for m in mods])
            R = S[np.ix_(idx, idx)] - A[idx] @ A[idx].T
            off = 0
            for m in mods:
                R[off : off + h.dims[m], off : off + h.dims[m]] = 0.0
                off += h.dims[m]
            w, V = eigh(R, subset_by_index=[len(idx) - k, len(idx) - 1])
            w = np.maximum(w, 0.0) * len(mods) / (len(mods) - 1)
            A[idx, cols[s]] = V * np.sqrt(w)
        else:
            (m,) = mods
            R = S[rows[m], rows[m]] - A[rows[m]] @ A[rows[m]].T
            pm = h.dims[m]
            w, V = eigh(R, subset_by_index=[pm - k, pm - 1])
            sig = np.sqrt(np.maximum(w - noise_level[m], 1e-3 * noise_level[m]))
            A[rows[m], cols[s]] = V * sig
    free = _free_mask(h)
    if free.any():
        rms = np.sqrt(np.mean(A[free] ** 2)) if np.any(A[free]) else np.sqrt(np.mean(np.diag(S)))
        A[free] += INIT_JITTER * rms * rng.standard_normal(int(free.sum()))
    return A, _initial_noise(S, A, h, noise_model)


def _random_init(S, h, noise_model, rng):
    """Free loadings i.i.d. normal at a scale that splits each variance evenly."""
    A = np.zeros((h.n_features, h.n_components))
    free = _free_mask(h)
    if free.any():
        scale = np.sqrt(0.5 * np.mean(np.diag(S)) / max(1, h.n_components))
        A[free] = scale * rng.standard_normal(int(free.sum()))
    return A, _initial_noise(S, A, h, noise_model)


def _initial_noise(S, A, h, noise_model):
    d = np.diag(S)
    psi = np.maximum(d - np.sum(A**2, axis=1), 0.1 * d)
    if noise_model == "isotropic":
        for sl in h.feature_slices().values():
            psi[sl] = psi[sl].mean()
    return psi


def _loadings_init(init, S, h, noise_model):
    """Warm start from a ``{structure: {modality: (p_m, k_S)}}`` dict."""
    A = np.zeros((h.n_features, h.n_components))
    rows, cols = h.feature_slices(), h.component_slices()
    given = {}
    for key, blocks in init.items():
        s = as_structure(key, h.modalities, argname="init: structure")
        if h.rank(s) == 0:
            raise ValueError(f"init: structure {h.name(s)} is not in the hierarchy {h!r}")
        given[s] = blocks
    for s in h.structures:
        if s not in given:
            raise ValueError(f"init: expected loadings for every structure, got none for {h.name(s)}")
        for m in s:
            if m not in given[s]:
                raise ValueError(f"init[{h.name(s)}]: expected a block for modality {m!r}, got none")
            a = np.asarray(given[s][m], dtype=np.float64)
            want = (h.dims[m], h.rank(s))
            if a.shape != want:
                raise ValueError(f"init[{h.name(s)}][{m!r}]: expected shape {want}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"init[{h.name(s)}][{m!r}]: expected finite values, got NaN or inf")
            A[rows[m], cols[s]] = a
    return A, _initial_noise(S, A, h, noise_model)


class StructuredFactorAnalysis(BaseHierarchicalEstimator):
    r"""Gaussian factor analysis with loadings constrained to a sharing pattern.

    For the stacked features ``x`` (modalities in ``hierarchy`` order)::

        x = A z + e,   z ~ N(0, I_K),   e ~ N(0, Psi),

    where column block ``S`` of ``A`` (the ``k_S`` components of structure
    ``S``) is zero on every modality outside ``S``. The estimate maximises the
    Gaussian log-likelihood of the sample covariance ``S_hat``,

    .. math::

        \ell(A, \Psi) = -\frac{n}{2}\left[p \log 2\pi + \log\det\Sigma
                        + \operatorname{tr}(\Sigma^{-1}\hat S)\right],
        \qquad \Sigma = A A^\top + \Psi,

    by EM with a row-wise closed-form M-step (see :mod:`hclstat.kernels.em`),
    accelerated by default by SQUAREM (Varadhan & Roland, 2008) with a
    monotonicity safeguard. Only second moments are used, so an EM step costs
    ``O(p^2 K)`` independently of ``n``.

    Parameters
    ----------
    hierarchy : Hierarchy
        The sharing pattern (structures and ranks). Required: this estimator
        does not learn the pattern; use :class:`~hclstat.estimators.hcl.HCL`
        for that.
    noise_model : {"diagonal", "isotropic"}, default="diagonal"
        ``Psi_m = diag(psi_m)`` (heteroskedastic) or ``sigma_m^2 I`` (one
        variance per modality).
    max_iter : int, default=10000
        Maximum number of EM steps (M-steps, the unit of cost: an accelerated
        iteration spends three). Typical fits take under a hundred; a Heywood
        case (a noise variance driven to its bound, ``NOISE_FLOOR``) approaches
        the bound sub-linearly and can take a few thousand.
    tol : float, default=1e-7
        Stop when one EM step from the current iterate changes no loading by
        more than ``tol`` times the largest loading, no noise variance by more
        than ``tol`` times itself, and the log-likelihood by at most ``tol``
        times its absolute value. (The parameter part is the binding one: near
        the optimum the log-likelihood changes quadratically and stalls at
        round-off long before the loadings do.)
    init : {"spectral", "random"} or dict, default="spectral"
        ``"spectral"``: greedy eigen-decomposition of the cross-covariances
        structure by structure plus a small perturbation from ``random_state``;
        ``"random"``: i.i.d. normal free loadings; a dict
        ``{structure: {modality: ndarray (p_m, k_S)}}`` is a warm start.
    random_state : None, int or numpy Generator
        Drives the perturbation of the start; the fit is deterministic given it.
    verbose : bool or int, default=False
        Log the log-likelihood every ``verbose`` iterations (``True`` = every
        50) to the ``hclstat.estimators.sfa`` logger at INFO level.
    acceleration : {"squarem", "none"}, default="squarem"
        ``"squarem"``: each iteration takes two EM steps, extrapolates along
        them (scheme S3 of Varadhan & Roland, 2008) and applies one more EM
        step; the result replaces the iterate only if its log-likelihood is at
        least that of the first EM step, otherwise the plain double EM step is
        kept. ``"none"``: plain EM, one step per iteration. Both reach the same
        maximum; on strong signals plain EM needs ten times as many steps.

    Attributes
    ----------
    hierarchy_ : Hierarchy
        The pattern fitted (``hierarchy``).
    loadings_ : dict of frozenset to dict of str to ndarray of shape (p_m, k_S)
    noise_variances_ : dict of str to ndarray of shape (p_m,)
    n_iter_ : int
        EM steps (M-steps) run, at most ``max_iter``.
    n_extrapolated_ : int
        Accepted SQUAREM extrapolations (0 with ``acceleration="none"``).
    converged_ : bool
    n_starts_ : int
        EM runs made: 1, or ``1 + HEYWOOD_RESTARTS`` when the spectral start ended
        at a noise variance on its bound or did not converge within ``max_iter``
        (random starts; the most likely run is kept, and ``n_iter_``, the paths
        and ``converged_`` are those of that run).
    heywood_ : bool
        Whether a fitted noise variance sits at its bound ``NOISE_FLOOR * S_jj``.
    loglik_path_ : ndarray of shape (n_accepted + 1,)
        Log-likelihood at the start and after each accepted iteration
        (``n_accepted = n_iter_`` for plain EM, about a third of it with
        SQUAREM); non-decreasing up to round-off.
    loglik_ : float
        Log-likelihood of the fitted parameters (``n = n_samples_``).
    n_parameters_ : int
        Free parameters (:func:`count_parameters`).
    bic_ : float
        ``-2 loglik_ + n_parameters_ log n``.

    Notes
    -----
    Within a structure the loadings are identified up to one ``k_S x k_S``
    orthogonal rotation, so compare column spaces or the products
    ``A_{m,S} A_{m',S}^T``, not the raw blocks. With pairwise-complete moments
    (missing entries) the same EM is run on the pairwise covariance; its
    log-likelihood is then a working criterion, not an exact likelihood.

    Examples
    --------
    >>> from hclstat import Hierarchy, HierarchicalModel
    >>> h = Hierarchy({"a": 20, "b": 25}, {("a", "b"): 1, "a": 1, "b": 1})
    >>> model = HierarchicalModel.random(h, random_state=0)
    >>> views, _ = model.sample(500, random_state=1)
    >>> sfa = StructuredFactorAnalysis(h, random_state=0).fit(views)
    >>> sfa.loadings_[frozenset({"a", "b"})]["a"].shape
    (20, 1)
    """

    def __init__(
        self,
        hierarchy=None,
        *,
        noise_model="diagonal",
        max_iter=10_000,
        tol=1e-7,
        init="spectral",
        random_state=None,
        verbose=False,
        acceleration="squarem",
    ):
        self.hierarchy = hierarchy
        self.noise_model = noise_model
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.verbose = verbose
        self.acceleration = acceleration

    # ------------------------------------------------------------ validation
    _parameter_constraints: dict = {
        "hierarchy": [Hierarchy, None],
        "noise_model": [StrOptions(set(NOISE_MODELS))],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": [StrOptions(set(INITS)), dict],
        "random_state": RANDOM_STATE,
        "verbose": VERBOSE,
        "acceleration": [StrOptions(set(ACCELERATIONS))],
    }

    def _check_params(self):
        self._validate_params()
        v = self.verbose
        self._log_every = (50 if v else 0) if isinstance(v, (bool, np.bool_)) else int(v)

    def _resolve_hierarchy(self, moments):
        """The pattern to fit; subclasses build it from their own parameters."""
        if self.hierarchy is None:
            raise ValueError(
                "StructuredFactorAnalysis needs the sharing pattern; pass hierarchy=... "
                "or use HCL to learn it"
            )
        return self.hierarchy

    def fit(self, views, y=None):
        """Fit from views: a dict modality name -> (n, p_m) table, or a list.

        Parameters
        ----------
        views : dict of str to array-like of shape (n_samples, p_m), or list
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        return super().fit(views, y)

    def fit_moments(self, moments):
        """Fit from precomputed :class:`~hclstat.moments.Moments`."""
        self._check_params()
        return super().fit_moments(moments)

    # ------------------------------------------------------------------- fit
    def _fit_moments(self, moments):
        h = self._resolve_hierarchy(moments)
        if not isinstance(h, Hierarchy):
            raise TypeError(f"hierarchy: expected a Hierarchy, got {type(h).__name__}")
        if h.modalities != tuple(moments.modalities) or h.dims != dict(moments.dims):
            raise ValueError(
                f"hierarchy: expected the modalities/dims of the data {dict(moments.dims)}, got {h.dims}"
            )
        check_rank_budget(h, self.noise_model)
        S = np.ascontiguousarray(moments.covariance, dtype=np.float64)
        if not np.all(np.isfinite(S)):
            raise ValueError("moments: expected a finite covariance, got NaN or inf entries")
        s_diag = np.ascontiguousarray(np.diag(S))
        if np.any(s_diag <= 0):
            j = int(np.flatnonzero(s_diag <= 0)[0])
            m, col = _locate(h, j)
            raise ValueError(
                f"modality {m!r} column {col}: expected a positive variance, got {float(s_diag[j])!r}; "
                "drop constant columns before fitting"
            )
        n = max(int(moments.n_samples), 1)
        rng = check_random_state(self.random_state)
        if isinstance(self.init, dict):
            A, psi = _loadings_init(self.init, S, h, self.noise_model)
        elif self.init == "spectral":
            A, psi = _spectral_init(S, h, self.noise_model, rng)
        else:
            A, psi = _random_init(S, h, self.noise_model, rng)
        floor = NOISE_FLOOR * s_diag
        A = np.ascontiguousarray(A)

        feat_ptr, free_ptr, free_idx = pattern_arrays(h)
        callback = None
        if self._log_every:
            every, logged = self._log_every, [0]

            def callback(n_iter, ll, change):
                if n_iter // every > logged[0]:
                    logged[0] = n_iter // every
                    logger.info(
                        "SFA iteration %d: log-likelihood per sample %.12g, relative change %.3g",
                        n_iter, ll, change,
                    )

        def em(A, psi):
            return run_em(
                S, A, np.ascontiguousarray(np.maximum(psi, floor)), floor, feat_ptr, free_ptr, free_idx,
                self.noise_model == "isotropic", max_iter=self.max_iter, tol=self.tol,
                accelerate=self.acceleration == "squarem", callback=callback,
            )

        res = em(A, psi)
        n_starts = 1
        if self.init == "spectral" and (_at_bound(res.psi, floor) or not res.converged):
            # a noise variance at its bound (a Heywood solution) is often a local maximum
            # the spectral start leads into (measured on D1: 40 log-likelihood units below
            # the maximum random starts find); so is a run still drifting at max_iter (D1,
            # diagonal noise, n = 8000 and 32000: a specific factor collapsing onto one
            # column, 1100-8700 units below the maximum random starts reach in 40-70
            # steps): restart and keep the most likely fit
            for _ in range(HEYWOOD_RESTARTS):
                other = em(*_random_init(S, h, self.noise_model, rng))
                n_starts += 1
                if other.loglik_path[-1] > res.loglik_path[-1]:
                    res = other
        if not res.converged:
            warnings.warn(
                f"StructuredFactorAnalysis: EM did not converge in max_iter={self.max_iter} "
                f"iterations (last relative parameter change {res.change:.3g}, tol={self.tol}); "
                "raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=_stacklevel_outside_package(),
            )
        A, psi = res.A, res.psi
        rows, cols = h.feature_slices(), h.component_slices()
        self.hierarchy_ = h
        self.loadings_ = {
            s: {m: A[rows[m], cols[s]].copy() for m in h.modalities if m in s} for s in h.structures
        }
        self.noise_variances_ = {m: psi[rows[m]].copy() for m in h.modalities}
        self.n_iter_ = int(res.n_iter)
        self.n_extrapolated_ = int(res.n_extrapolated)
        self.converged_ = bool(res.converged)
        self.n_starts_ = n_starts
        self.heywood_ = _at_bound(psi, floor)
        self.loglik_path_ = n * np.asarray(res.loglik_path)
        self.loglik_ = float(self.loglik_path_[-1])
        self.n_parameters_ = count_parameters(h, self.noise_model)
        self.bic_ = float(-2.0 * self.loglik_ + self.n_parameters_ * np.log(n))
        return self


def _at_bound(psi, floor):
    """Whether a noise variance sits at its lower bound (a Heywood solution)."""
    return bool(np.any(psi <= floor * (1.0 + 1e-9)))


def _stacklevel_outside_package():
    """``stacklevel`` that points a warning at the first caller outside hclstat."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _locate(h, j):
    for m, sl in h.feature_slices().items():
        if sl.start <= j < sl.stop:
            return m, j - sl.start
    raise IndexError(j)  # pragma: no cover
