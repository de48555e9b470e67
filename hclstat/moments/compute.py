"""Centred second moments in one pass over the data.

Every estimator works from these: cost ``O(n p^2)`` once (one BLAS product),
after which nothing depends on ``n``.  Missing entries (NaN) give
pairwise-complete moments with their counts; nothing is imputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import check_views, is_dask_array

__all__ = ["Moments", "compute_moments", "moments_from_covariance"]


@dataclass
class Moments:
    """Centred second moments of stacked modalities.

    Attributes
    ----------
    modalities : tuple of str
    dims : dict of str to int
    covariance : ndarray of shape (p, p)
        Sample covariance (divisor ``count - 1``) of the stacked features.
    counts : ndarray of shape (p, p) or None
        Number of rows where both features are observed; ``None`` when no entry
        is missing (every count is ``n_samples``).
    n_samples : int
        Number of rows.
    means : ndarray of shape (p,)
        Column means over observed entries.
    feature_names : dict of str to list of str or None
    """

    modalities: tuple
    dims: dict
    covariance: np.ndarray
    n_samples: int
    means: np.ndarray
    counts: np.ndarray | None = None
    feature_names: dict = field(default_factory=dict)

    @property
    def slices(self):
        return _slices(self.modalities, self.dims)

    @property
    def has_missing(self):
        return self.counts is not None

    def block(self, a, b):
        """Covariance block ``Cov(x_a, x_b)``, shape (p_a, p_b) (a view)."""
        sl = self.slices
        for m in (a, b):
            if m not in sl:
                raise ValueError(f"unknown modality {m!r}; known modalities are {list(self.modalities)}")
        return self.covariance[sl[a], sl[b]]

    def block_count(self, a, b):
        """Effective sample size of block ``(a, b)``: the smallest pairwise count."""
        if self.counts is None:
            return self.n_samples
        sl = self.slices
        return int(self.counts[sl[a], sl[b]].min())

    def count_table(self):
        """``(M, M)`` table of effective sample sizes per modality pair."""
        M = len(self.modalities)
        out = np.empty((M, M), dtype=np.int64)
        for i, a in enumerate(self.modalities):
            for j, b in enumerate(self.modalities):
                out[i, j] = self.block_count(a, b)
        return out


def compute_moments(views, *, ddof=1, modalities=None):
    """Centred covariance of the stacked views with pairwise-complete counts.

    Parameters
    ----------
    views : dict of str to array-like / DataFrame / dask array, or list
        Rows aligned across modalities; NaN marks a missing entry.
    ddof : int
        Divisor is ``count - ddof``.

    Returns
    -------
    Moments

    Notes
    -----
    Without missing entries this is one symmetric product ``Xc^T Xc`` of the
    centred, stacked data, accumulated over row chunks (no ``n x p`` copy). With missing entries, writing ``W`` for the observation mask
    and ``X0`` for the data with NaN set to 0, the pairwise-complete covariance
    of features ``i, j`` over the rows where both are observed is

        (X0^T X0 - (X0^T W) ∘ (W^T X0) / N) / (N - ddof),   N = W^T W,

    three BLAS products, exact (not an approximation).
    """
    arrays, names = check_views(views, modalities=modalities)
    mods = tuple(arrays)
    dims = {m: int(a.shape[1]) for m, a in arrays.items()}
    if any(is_dask_array(a) for a in arrays.values()):
        import dask.array as da

        X = da.concatenate([da.asarray(a) for a in arrays.values()], axis=1)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # checked below
            cov, means, counts, n = _moments_dask(X, ddof)
    else:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            cov, means, counts, n = _moments_numpy([arrays[m] for m in mods], ddof)
    if counts is not None:
        few = np.argwhere(counts <= ddof)
        if few.size:
            i, j = few[0]
            sl = _slices(mods, dims)
            raise ValueError(
                f"features {_feature(mods, sl, names, i)} and {_feature(mods, sl, names, j)} are "
                f"observed together in only {counts[i, j]} rows; their covariance is undefined. "
                "Drop one of them or supply more complete rows"
            )
    _check_representable(cov, means, arrays, names)
    return Moments(mods, dims, cov, int(n), means, counts, names)


def _column_range(x):
    """``(largest |value|, whether the values differ)`` of one column over its observed entries."""
    if is_dask_array(x):
        import dask
        import dask.array as da

        lo, hi, big = dask.compute(da.nanmin(x), da.nanmax(x), da.nanmax(abs(x)))
    else:
        lo, hi, big = np.nanmin(x), np.nanmax(x), np.nanmax(np.abs(x))
    return float(big), bool(hi > lo)


def _check_representable(cov, means, arrays, names):
    """A variance or mean that float64 cannot hold is an error naming the column, never inf/NaN moments.

    Squares of values beyond about 1e154 overflow (the variance becomes inf or
    NaN) and those below about 1e-154 underflow (a varying column gets
    variance 0, which reads as a constant column).
    """
    var = np.diag(cov)
    suspect = np.flatnonzero(~np.isfinite(var) | ~np.isfinite(means) | (var <= np.finfo(np.float64).tiny))
    start = 0
    for m, x in arrays.items():
        p = x.shape[1]
        for i in suspect[(suspect >= start) & (suspect < start + p)]:
            largest, varies = _column_range(x[:, i - start])
            if np.isfinite(var[i]) and np.isfinite(means[i]) and not varies:
                continue  # a constant column: the estimators say so
            how, what = ("large", "overflow") if largest >= 1.0 else ("small", "underflow")
            nm = names.get(m)
            raise ValueError(
                f"modality {m!r}: column {i - start}{f' ({nm[i - start]!r})' if nm else ''} has values too {how} "
                f"for the second moments in float64 (largest |value| {largest:.3g}: their squares {what}, so its "
                f"variance would be {var[i]:g}); rescale it (e.g. by a power of ten, or standardise it: "
                "the default preprocessing of hclstat.io.load_views and the command line)"
            )
        start += p


def moments_from_covariance(covariance, dims, n_samples, *, means=None):
    """Wrap a given covariance (e.g. a population covariance) as :class:`Moments`."""
    dims = dict(dims)
    p = sum(dims.values())
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (p, p):
        raise ValueError(f"covariance: expected shape ({p}, {p}) from dims {dims}, got {cov.shape}")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(cov).max())):
        raise ValueError("covariance: expected a symmetric matrix")
    means = np.zeros(p) if means is None else np.asarray(means, dtype=np.float64)
    return Moments(tuple(dims), dims, 0.5 * (cov + cov.T), int(n_samples), means, None, {m: None for m in dims})


def _slices(mods, dims):
    out, start = {}, 0
    for m in mods:
        out[m] = slice(start, start + dims[m])
        start += dims[m]
    return out


def _feature(mods, sl, names, i):
    for m in mods:
        if sl[m].start <= i < sl[m].stop:
            j = i - sl[m].start
            nm = names.get(m)
            return f"{m!r} column {j}" + (f" ({nm[j]!r})" if nm else "")
    raise IndexError(i)  # pragma: no cover


#: rows per chunk are chosen so a chunk holds about this many float64 entries
_CHUNK_ENTRIES = 1 << 22


def _moments_numpy(blocks, ddof):
    """Moments of column blocks (one per modality) without an ``n x p`` copy.

    Rows are processed in chunks: each chunk of the stacked, shifted data is
    formed once (``chunk x p``) and accumulated with one symmetric rank-k update
    (BLAS ``dsyrk``: half the flops of the general product ``X^T X``). The shift
    is the first chunk's mean, which keeps the one-pass formula
    ``(sum y y^T - n m m^T) / (n - ddof)`` free of cancellation.
    """
    from scipy.linalg.blas import dsyrk

    n = blocks[0].shape[0]
    p = sum(b.shape[1] for b in blocks)
    step = max(1, min(n, _CHUNK_ENTRIES // max(p, 1)))
    if any(np.isnan(b[i : i + step]).any() for b in blocks for i in range(0, n, step)):
        return _pairwise_moments(np.concatenate(blocks, axis=1), ddof)
    shifts = [b[:step].mean(axis=0) for b in blocks]
    shift = np.concatenate(shifts)
    acc = np.zeros((p, p), order="F")
    s1 = np.zeros(p)
    buf = np.empty((step, p))
    for i in range(0, n, step):
        rows = min(step, n - i)
        Y = buf[:rows]
        start = 0
        for b, sh in zip(blocks, shifts):
            # copy and shift in one pass over the chunk
            np.subtract(b[i : i + rows], sh, out=Y[:, start : start + b.shape[1]])
            start += b.shape[1]
        s1 += Y.sum(axis=0)
        # Y.T is Fortran-ordered, so dsyrk reads it in place (Y itself would be copied)
        acc = dsyrk(1.0, Y.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
    m = s1 / n
    cov = _finish_upper(acc, m, n, ddof)
    return cov, m + shift, None, n


def _finish_upper(acc, m, n, ddof, block=512):
    """``(acc - n m m^T) / (n - ddof)`` from the upper triangle of ``acc``, in place.

    Column blocks at a time, so no other ``p x p`` array is formed (``np.triu``
    and ``np.outer`` would each make one).
    """
    p = acc.shape[0]
    for j in range(0, p, block):
        e = min(j + block, p)
        diag = acc[j:e, j:e]
        diag[...] = np.triu(diag) + np.triu(diag, 1).T
        acc[e:, j:e] = acc[j:e, e:].T
    for j in range(0, p, block):
        e = min(j + block, p)
        acc[:, j:e] -= n * np.outer(m, m[j:e])
    acc /= n - ddof
    # symmetric: the transpose is the same matrix, C-ordered without a copy
    return acc.T if acc.flags.f_contiguous else acc


def _observed_mean(X):
    """Column means over observed entries (0 for a column with none): the shift."""
    obs = ~np.isnan(X)
    count = obs.sum(axis=0)
    total = np.where(obs, X, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.zeros(X.shape[1]), where=count > 0)


def _pairwise_moments(X, ddof):
    n = X.shape[0]
    mask = np.isnan(X)
    # the pairwise formula is shift-invariant; without a shift it cancels like
    # sum x^2 - n mean^2 (errors grow with the square of the column means)
    shift = _observed_mean(X)
    W = (~mask).astype(np.float64)
    X0 = np.where(mask, 0.0, X - shift)
    N = W.T @ W
    S1 = X0.T @ W  # S1[i, j] = sum of x_i over rows where j is observed
    S2 = X0.T @ X0
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (S2 - S1 * S1.T / N) / (N - ddof)
    counts = np.rint(N).astype(np.int64)
    means = np.diag(S1) / np.diag(N) + shift
    return cov, means, counts, n


def _moments_dask(X, ddof):
    import dask
    import dask.array as da

    n = X.shape[0]
    mask = da.isnan(X)
    # one pass for the missingness and the observed column means, which shift
    # the data so the sum-of-products formulas do not cancel catastrophically
    any_missing, count, total = dask.compute(mask.any(), (~mask).sum(axis=0), da.where(mask, 0.0, X).sum(axis=0))
    shift = np.divide(total, count, out=np.zeros(X.shape[1]), where=count > 0)
    if not bool(any_missing):
        Y = X - shift
        s1, s2 = dask.compute(Y.sum(axis=0), Y.T @ Y)
        m = s1 / n
        cov = (s2 - n * np.outer(m, m)) / (n - ddof)
        return cov, m + shift, None, n
    W = (~mask).astype(np.float64)
    X0 = da.where(mask, 0.0, X - shift)
    N, S1, S2 = dask.compute(W.T @ W, X0.T @ W, X0.T @ X0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (S2 - S1 * S1.T / N) / (N - ddof)
    return cov, np.diag(S1) / np.diag(N) + shift, np.rint(N).astype(np.int64), n
