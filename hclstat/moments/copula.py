"""Latent Gaussian copula moments for mixed-type modalities (DESIGN §9).

The hierarchical model holds for a latent Gaussian ``x*`` on the correlation
scale; each observed column is a monotone function of its latent coordinate
(continuous, binary, ternary, truncated: a point mass at the minimum).  The
latent correlation ``R`` then has exactly the block structure of the model,
and it is estimated pair by pair from rank statistics inverted through their
bridge functions (:mod:`~hclstat.moments.ranks`, :mod:`~hclstat.moments.bridges`),
then projected to the nearest correlation matrix.

**What the estimators see.** The rank-based estimate ``R_hat`` is noisier
than a Gaussian sample correlation: under independence ``r_hat_jk`` has
variance ``c_j c_k / n`` with ``c_j = Var(h_j) / E[h_j(X_j) Z_j]^2 >= 1`` the
inverse squared correlation between column ``j``'s rank score ``h_j`` (its
centred mid-distribution transform) and its latent ``Z_j`` (``pi / 3`` for a
continuous column; ``pi_0 pi_1 / phi(Delta)^2`` for a binary one with
threshold ``Delta``).  To first order ``R_hat`` is the sample covariance of
the *null scores* ``u_j = h_j / E[h_j Z_j]`` with its diagonal ``c_j`` reset
to 1.  The datafit therefore holds ``S = R_hat + diag(c - 1)``: a covariance
with the latent loadings and noise variances ``psi_j + c_j - 1`` that behaves,
for the rank lattice, the specific-rank tests and the factor-analysis noise
fit, like a Gaussian sample covariance over ``n`` rows.  The permutation
nulls permute the rows of the null scores (the same statistic, linearised at
``R = 0``; exact for every pair with a binary column and for continuous pairs
up to the bridge's curvature, the Hajek projection of Kendall's tau for the
others).  The latent noise variances are ``psi_j = psi_tilde_j - (c_j - 1)``.

**Scores for new samples** (:class:`CopulaMargins.latent_scores`): each
observed value is replaced by the conditional mean of its latent coordinate
given the value (normal scores ``Phi^-1(F_hat(x))`` from the training margin
for continuous values; ``E[Z | category]`` for a category), and the Gaussian
posterior mean of the factors is taken with noise variances
``psi_j + v_j``, ``v_j = 1 - Var(E[Z_j | X_j])`` the latent variance the
category loses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.special import ndtr, ndtri

from ..exceptions import EstimationWarning
from ..kernels.kendall import ColumnOrder, column_order, midranks_from_order
from ..threads import work_threads
from .bridge_inverse import R_EDGE, latent_correlation, nearest_correlation
from .bridges import bridge_slope_at_zero
from .compute import Moments, _feature, _slices
from .column_types import check_types, zratios
from .ranks import pair_statistics

__all__ = ["MARGIN_ROWS", "CopulaMargins", "CopulaMoments", "copula_moments", "resolve_types"]

#: the Hajek projection of Kendall's tau-a: tau ~ 8 Cov(h_j, h_k), so the
#: first Hermite coefficient of a rank score is its Kendall slope over sqrt(8)
_HAJEK = np.sqrt(8.0)
#: rows kept for the training margins that score new samples
MARGIN_ROWS = 20_000
#: normal scores are taken at mid-distribution ranks kept this far inside (0, 1)
_EDGE = 0.5


def resolve_types(types, arrays, names, *, return_order=False):
    """Per-modality column types from the user's ``types`` (None / a type / per modality).

    ``types`` is ``"auto"`` (infer every column), one type code for every
    column, or a dict ``{modality: spec}`` where ``spec`` is a type code,
    ``"auto"``, a sequence (one entry per column) or a dict ``{column name:
    type}`` (other columns inferred). Modalities not in the dict are inferred.
    """
    if isinstance(types, dict):
        unknown = sorted(set(types) - set(arrays))
        if unknown:
            raise ValueError(f"types: unknown modalities {unknown}; the modalities are {list(arrays)}")
    out, orders = {}, {}
    for m, x in arrays.items():
        spec = types.get(m, "auto") if isinstance(types, dict) else types
        cols = names.get(m)
        if isinstance(spec, dict):
            if cols is None:
                raise ValueError(f"types[{m!r}]: a dict of column names needs a DataFrame with named columns")
            missing = sorted(set(spec) - set(cols))
            if missing:
                raise ValueError(f"types[{m!r}]: unknown columns {missing}")
            spec = [spec.get(c, "auto") for c in cols]
        x = np.asarray(x, dtype=np.float64)
        orders[m] = column_order(x, threads=work_threads())
        try:
            out[m] = np.asarray(check_types(spec, x, names=cols, order=orders[m]), dtype=object)
        except ValueError as err:
            raise ValueError(f"modality {m!r}: {err}") from None
    return (out, orders) if return_order else out


@dataclass
class CopulaMargins:
    """What scoring new samples needs from the training data, per stacked column.

    Attributes
    ----------
    types : ndarray of str, shape (p,)
    zratios : ndarray of shape (2, p)
    inflation : ndarray of shape (p,)
        ``c_j``: variance of the null score (see the module docstring).
    lost : ndarray of shape (p,)
        ``v_j = 1 - Var(E[Z_j | X_j])``: latent variance a category does not carry.
    sorted_values : list of ndarray
        Observed training values of each column, sorted (the margin); above
        :data:`MARGIN_ROWS` rows, ``MARGIN_ROWS`` evenly spaced order statistics
        (the margin to ``1 / MARGIN_ROWS``, and the estimator stays small);
        for binary and ternary columns their levels.
    label : callable
        Stacked column index -> ``"'modality' column j ('name')"`` for messages.
    """

    types: np.ndarray
    zratios: np.ndarray
    inflation: np.ndarray
    lost: np.ndarray
    sorted_values: list
    label: object

    @classmethod
    def from_data(cls, X, types, zr, inflation, label, info):
        """The margins of ``X`` from its :func:`~hclstat.kernels.kendall.column_order` ``info``."""
        order, dense, n_obs, _ = info
        sorted_values = []
        for j, t in enumerate(types):
            m = int(n_obs[j])
            if t == "binary":  # its two levels: the first and the last observed value in its order
                sorted_values.append(X[order[j, [0, m - 1]], j])
                continue
            if t == "ternary":  # the levels, from every row (a rare level must not be lost)
                rows = order[j, :m]
                vals = X[rows, j]
                cuts = np.searchsorted(dense[j, rows], np.arange(1, 3))
                sorted_values.append(np.concatenate([[vals[0]], vals[cuts]]))
            elif m > MARGIN_ROWS:  # evenly spaced order statistics: the margin to 1 / MARGIN_ROWS
                sorted_values.append(X[order[j, np.linspace(0, m - 1, MARGIN_ROWS).astype(np.intp)], j])
            else:
                sorted_values.append(X[order[j, :m], j])
        lost = np.array([_lost_variance(t, zr[:, j]) for j, t in enumerate(types)])
        return cls(np.asarray(types, dtype=object), zr, inflation, lost, sorted_values, label)

    def latent_scores(self, X):
        """Conditional means of the latent coordinates given observed values (NaN kept)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.full(X.shape, np.nan)
        for j, t in enumerate(self.types):
            col, obs = X[:, j], ~np.isnan(X[:, j])
            vals = self.sorted_values[j]
            if t == "continuous":
                out[obs, j] = _normal_scores(col[obs], vals)
                continue
            cuts = ndtri(self.zratios[:, j][~np.isnan(self.zratios[:, j])])
            x = col[obs]
            if t == "truncated":  # vals sorted: vals[0] is the point mass
                bad = x < vals[0]
                means = np.where(x <= vals[0], _interval_mean(-np.inf, cuts[0]), _normal_scores(x, vals))
                seen = f"its training minimum {vals[0]:g}"
            else:  # vals are the levels
                idx = np.minimum(np.searchsorted(vals, x), vals.size - 1)
                bad = vals[idx] != x
                edges = np.concatenate([[-np.inf], cuts, [np.inf]])
                means = _interval_mean(edges[idx], edges[idx + 1])
                seen = f"levels {vals.tolist()}"
            if np.any(bad):
                i = int(np.flatnonzero(obs)[np.flatnonzero(bad)[0]])
                raise ValueError(f"modality {self.label(j)} ({t}): row {i} holds {float(col[i]):g}, a value the "
                                 f"training data never had for this {t} column ({seen}); recode it or refit")
            out[obs, j] = means
        return out


@dataclass
class CopulaMoments:
    """The latent copula moments of stacked modalities and their null scores.

    ``pointwise`` is the estimate with each pair inverted on its own;
    ``latent_correlation`` the same after the projection that makes
    ``R + diag(c - 1)`` (the datafit's matrix) positive definite: the nearest
    correlation matrix of ``D^-1/2 (R + diag(c - 1)) D^-1/2``, ``D = diag(c)``,
    scaled back (``R`` itself stays indefinite when ``p`` is large against
    ``n / c``, as a sample covariance minus a diagonal does);
    ``projection_change`` is the largest entry the projection moved.
    """

    moments: Moments
    null_scores: dict
    margins: CopulaMargins
    latent_correlation: np.ndarray
    pointwise: np.ndarray
    projection_change: float
    bound_pairs: list


def copula_moments(arrays, types, names=None, *, orders=None, stacklevel=2):
    """Latent copula moments of ``arrays`` (dict modality -> (n, p_m), NaN missing).

    ``types`` as resolved by :func:`resolve_types` (``orders``: the column orders
    it returns, else each column is sorted here). Returns a
    :class:`CopulaMoments`: ``moments.covariance`` is ``R_hat + diag(c - 1)``
    (see the module docstring), ``null_scores`` the rows the permutation nulls
    permute.
    """
    names = names or {}
    mods = tuple(arrays)
    dims = {m: arrays[m].shape[1] for m in mods}
    X = np.concatenate([np.asarray(arrays[m], dtype=np.float64) for m in mods], axis=1)
    t = np.concatenate([np.asarray(types[m], dtype=object) for m in mods])
    threads = work_threads()
    if orders is None:
        sort = column_order(X, threads=threads)
    else:  # per-modality sorts stack into the table's
        sort = ColumnOrder(*(np.concatenate([orders[m][i] for m in mods]) for i in range(4)),
                           *(np.concatenate([getattr(orders[m], a) for m in mods]) for a in ("at_min", "at_most_one")))
    n_obs = sort[2]
    # centred mid-ranks (p, n), in place: one pass serves the rank product and the null scores
    centred = midranks_from_order(*sort[:3], threads=threads)
    centred -= 0.5 * (n_obs + 1)[:, None]
    zr = zratios(X, t, order=sort)
    stat, counts = pair_statistics(X, t, order=sort, centred=centred)
    R, info = latent_correlation(stat, t, zr)
    # picklable (the margins live in a fitted estimator): the moments' own feature labels
    label = partial(_feature, mods, _slices(mods, dims), names)
    bound = [(int(j), int(k)) for j, k in np.asarray(info.get("clipped_pairs", np.empty((0, 2))), dtype=int)]
    a = bridge_slope_at_zero(t, zr)
    if bound:
        # beyond F(+/-0.999) the inverse is undefined (typically two rare binary columns, whose bridge
        # is flat for negative r): take the first-order inverse tau / tau'(0), the statistic the
        # permutation nulls use, rather than +/-0.999, which would plant a false factor
        j, k = np.array(bound).T
        R[j, k] = R[k, j] = np.clip(stat[j, k] / (a[j] * a[k]), -R_EDGE, R_EDGE)
        shown = "; ".join(f"{label(j)} with {label(k)}" for j, k in bound[:5])
        warnings.warn(f"{len(bound)} of {X.shape[1] * (X.shape[1] - 1) // 2} column pairs have a rank statistic "
                      "beyond what their margins allow for any latent correlation (typical of pairs of rare "
                      "binary columns); their latent correlation is the first-order inverse tau / tau'(0): "
                      f"{shown}{' ...' if len(bound) > 5 else ''}", EstimationWarning, stacklevel=stacklevel + 1)
    e = a / _HAJEK
    # the null scores: rank_scores / e, formed in place from the centred ranks
    ut = centred
    ut /= (n_obs * e)[:, None]
    del centred
    u = ut.T  # (n, p) view
    inflation = np.einsum("ij,ij->i", ut, ut) / X.shape[0] if counts is None else np.nanmean(ut * ut, axis=1)
    # R_hat + diag(c - 1) is, to first order, the sample covariance of u: the matrix to make
    # positive definite (R_hat itself is indefinite whenever p is large against n / c)
    root = np.sqrt(inflation)
    C = R / np.outer(root, root)
    C[np.diag_indices_from(C)] = 1.0
    C_pd, _ = nearest_correlation(C)
    S = C_pd * np.outer(root, root)
    R_pd = S.copy()
    R_pd[np.diag_indices_from(R_pd)] = 1.0
    change = float(np.max(np.abs(R_pd - R)))
    n = X.shape[0]
    moments = Moments(mods, dims, S, n, np.zeros(X.shape[1]), counts, dict(names))
    sl = moments.slices
    null_scores = {m: np.ascontiguousarray(u[:, sl[m]]) for m in mods}
    margins = CopulaMargins.from_data(X, t, zr, inflation, label, sort)
    return CopulaMoments(moments, null_scores, margins, R_pd, R, float(change), bound)


def _normal_scores(x, sorted_train):
    """``Phi^-1`` of the training mid-distribution function at ``x`` (ties split)."""
    n = sorted_train.size
    below = np.searchsorted(sorted_train, x, side="left")
    upto = np.searchsorted(sorted_train, x, side="right")
    return ndtri((0.5 * (below + upto) + _EDGE) / (n + 2 * _EDGE))


def _interval_mean(a, b):
    """``E[Z | a < Z < b]`` for a standard normal ``Z`` (vectorised)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pdf = lambda z: np.where(np.isfinite(z), np.exp(-0.5 * np.where(np.isfinite(z), z, 0.0) ** 2), 0.0)  # noqa: E731
    return (pdf(a) - pdf(b)) / np.sqrt(2 * np.pi) / (ndtr(b) - ndtr(a))


def _lost_variance(t, zr):
    """``1 - Var(E[Z | X])`` for one column of type ``t`` with margins ``zr``."""
    if t == "continuous":
        return 0.0
    cuts = ndtri(zr[~np.isnan(zr)])
    if t == "truncated":
        c = cuts[0]
        phi = np.exp(-0.5 * c * c) / np.sqrt(2 * np.pi)
        m0 = _interval_mean(-np.inf, c)
        # the zero category carries its mean; above the cut the value carries z itself
        return float(max(0.0, 1.0 - ndtr(c) * m0 ** 2 - (c * phi + 1.0 - ndtr(c))))
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    probs = np.diff(ndtr(edges))
    means = _interval_mean(edges[:-1], edges[1:])
    return float(max(0.0, 1.0 - np.sum(probs * means ** 2)))
