"""The data-backed datafit: products with the centred rows, no ``p x p`` block.

Every quantity HCL needs is a product of a covariance block with a thin matrix,

    S_ab B = X_{a,c}^T (X_{b,c} B) / (n - 1),     X_{b,c} B = X_b B - 1 (mu_b^T B),

two passes over the rows costing ``O(n (p_a + p_b) k)``. :class:`CentredData`
holds the raw views and their means (no centred copy) and applies centring,
column scaling (noise whitening) and row subsets inside those products;
spectra come from block Krylov iterations (:mod:`hclstat.moments.krylov`).
It is also the row source of the permutation nulls of the dense path.
"""

from __future__ import annotations

import numpy as np

from ..utils import check_random_state
from .base import Datafit
from .krylov import COUNT_TOL, RITZ_TOL, block_lanczos, lanczos_lockstep
from .nulls import batched_top_singular_values, deflate, joint_pair_products, joint_relative, joint_top_singular_values

__all__ = ["CentredData"]

#: rows per gathered chunk hold about this many float64 entries (row subsets only)
_CHUNK_ENTRIES = 1 << 18
#: permutation nulls advanced together by block Lanczos (bounds the Krylov bases held at once)
_LOCKSTEP_DRAWS = 10
#: Hutchinson probes per modality for the objective constant
_N_PROBES = 16


class CentredData(Datafit):
    """Column-centred, column-scaled views as a linear operator.

    Holds the raw ``(n, p_m)`` float64 arrays and their column means; centring
    (``X_c B = X B - 1 (mu^T B)``), an optional column scaling ``s_m`` (noise
    whitening: the operator then represents ``X_c diag(s)``) and an optional
    row subset are applied inside each product. No ``n x p`` centred copy and
    no ``p x p`` block is ever formed.

    Parameters
    ----------
    views : dict of str to ndarray of shape (n_samples, p_m)
        Complete (no NaN) numeric views with aligned rows; float64 arrays are
        used without a copy.
    means : dict of str to ndarray of shape (p_m,), optional
        Column means (default: over all rows).
    scales : dict of str to ndarray of shape (p_m,), optional
        Column scales ``s_m`` (default 1).
    rows : ndarray of int, optional
        Use only these rows (e.g. a subsample for permutation nulls); the
        means are still those given (or of all rows).
    ddof : int
        Covariance divisor ``n_rows - ddof``.

    random_state : int, Generator or None
        Stream of the random Krylov starts (shared with every derived view).
    dense_nulls : bool
        Form the permutation nulls as dense single-precision products (a
        ``p_a x p_b`` block per pair and permutation: the fast choice for the
        rows behind dense moments) instead of block Lanczos from products.
    masks : dict of str to ndarray of bool of shape (n_samples, p_m), optional
        Observed entries (a row source with missing entries; needs
        ``dense_nulls``). Only the permutation nulls read them: each row's mask
        moves with its values and every null block is the pairwise-complete
        covariance of the permuted rows (:mod:`hclstat.moments.nulls`); the
        other products treat a masked entry as its column mean.

    Notes
    -----
    Centring inside products loses relative accuracy ``~ eps |mu|^2 / var``
    when a column's mean dwarfs its spread; standardise such columns first.
    """

    def __init__(self, views, *, means=None, scales=None, rows=None, ddof=1, random_state=None,
                 dense_nulls=False, masks=None):
        arrays = {}
        n = None
        for m, x in views.items():
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(f"modality {m!r}: expected a 2-D array, got shape {x.shape}")
            if not (x.flags.c_contiguous or x.flags.f_contiguous):
                x = np.ascontiguousarray(x)
            if n is not None and x.shape[0] != n:
                raise ValueError(f"views: expected aligned rows, got {n} and {x.shape[0]} (modality {m!r})")
            n = x.shape[0]
            arrays[m] = x
        if not arrays:
            raise ValueError("views: expected at least one modality, got none")
        self._views = arrays
        self.modalities = tuple(arrays)
        self.dims = {m: int(x.shape[1]) for m, x in arrays.items()}
        self.ddof = int(ddof)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n_samples = int(n if self.rows is None else self.rows.size)
        if self.n_samples - self.ddof < 1:
            raise ValueError(f"views: need more than {self.ddof} rows, got {self.n_samples}")
        if means is None:
            means = {m: x.mean(axis=0) for m, x in arrays.items()}
        self.means = {m: np.asarray(means[m], dtype=np.float64) for m in self.modalities}
        self.scales = None if scales is None else {m: np.asarray(scales[m], dtype=np.float64) for m in self.modalities}
        self._variances, self._norms, self._nulls = {}, {}, (None, None, None)
        self.random_state = check_random_state(random_state)
        self.dense_nulls = bool(dense_nulls)
        self.masks = None
        if masks is not None:
            self.masks = {m: np.asarray(masks[m], dtype=bool) for m in self.modalities}
            for m, w in self.masks.items():
                if w.shape != arrays[m].shape:
                    raise ValueError(f"masks: expected shape {arrays[m].shape} for modality {m!r}, got {w.shape}")

    # --------------------------------------------------------- derived views
    def _derive(self, **changes):
        new = object.__new__(CentredData)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def rescaled(self, scales):
        """The same data with column scales ``scales`` (dict, or stacked (p,) array)."""
        if not isinstance(scales, dict):
            scales = self.split(np.asarray(scales, dtype=np.float64))
        scales = {m: np.asarray(scales[m], dtype=np.float64) for m in self.modalities}
        # the cached raw variances stay valid: scales enter only in diag()
        return self._derive(scales=scales, _norms={}, _nulls=(None, None, None))

    def subset(self, rows):
        """The same data restricted to ``rows`` (the means stay those of all rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.rows is not None:
            rows = self.rows[rows]
        return self._derive(rows=rows, n_samples=int(rows.size), _variances={}, _norms={}, _nulls=(None, None, None))

    @property
    def denominator(self):
        return float(self.n_samples - self.ddof)

    def _scale(self, m):
        return None if self.scales is None else self.scales[m]

    def _chunks(self, m):
        step = max(1, _CHUNK_ENTRIES // max(self.dims[m], 1))
        for i in range(0, self.rows.size, step):
            yield i, min(i + step, self.rows.size)

    # -------------------------------------------------------------- products
    def matmat(self, m, B):
        """``X_{m,c} diag(s_m) B``, shape (n_rows, k)."""
        x = self._views[m]
        s = self._scale(m)
        B = np.asarray(B, dtype=np.float64)
        Bs = B if s is None else B * s[:, None]
        if self.rows is None:
            out = x @ Bs
        else:
            out = np.empty((self.rows.size, B.shape[1]))
            for i, j in self._chunks(m):
                out[i:j] = x[self.rows[i:j]] @ Bs
        out -= self.means[m] @ Bs
        return out

    def rmatmat(self, m, Y):
        """``diag(s_m) X_{m,c}^T Y``, shape (p_m, k)."""
        x = self._views[m]
        Y = np.asarray(Y, dtype=np.float64)
        if self.rows is None:
            out = x.T @ Y
        else:
            out = np.zeros((self.dims[m], Y.shape[1]))
            for i, j in self._chunks(m):
                out += x[self.rows[i:j]].T @ Y[i:j]
        out -= np.outer(self.means[m], Y.sum(axis=0))
        s = self._scale(m)
        if s is not None:
            out *= s[:, None]
        return out

    def cross(self, a, b, B):
        """``S_ab B = X_{a,c}^T (X_{b,c} B) / (n - ddof)`` (scaled), shape (p_a, k)."""
        return self.rmatmat(a, self.matmat(b, B)) / self.denominator

    def diag(self, m):
        """Diagonal of ``S_mm`` (scaled column variances), shape (p_m,)."""
        if m not in self._variances:
            x = self._views[m]
            mu = self.means[m]
            acc = np.zeros(self.dims[m])
            n = x.shape[0] if self.rows is None else self.rows.size
            step = max(1, _CHUNK_ENTRIES // max(self.dims[m], 1))
            for i in range(0, n, step):
                idx = slice(i, min(i + step, n)) if self.rows is None else self.rows[i : i + step]
                acc += np.sum((x[idx] - mu) ** 2, axis=0)
            self._variances[m] = acc / self.denominator
        v = self._variances[m]
        s = self._scale(m)
        return v.copy() if s is None else v * s * s

    def stacked_diag(self):
        return np.concatenate([self.diag(m) for m in self.modalities])


    def _rng(self, random_state):
        return self.random_state if random_state is None else check_random_state(random_state)

    # --------------------------------------------------------------- spectra
    def norm2(self, m, *, random_state=None, tol=COUNT_TOL):
        """Spectral norm of ``S_mm`` (block Lanczos; a Ritz value, so never above the truth; cached)."""
        key = (m, tol)
        if key not in self._norms:
            w, _ = block_lanczos(lambda B: self.cross(m, m, B), self.dims[m], 1, block=4, tol=tol,
                                 random_state=self._rng(random_state))
            self._norms[key] = float(w[0])
        return self._norms[key]

    def top_eigh(self, a, k, *, q=None, shift=None, low_rank=None, tol=RITZ_TOL, start=None):
        """Top ``k`` eigenpairs of ``diag(q) S_aa diag(q) - diag(shift) - L L^T`` (block Lanczos,
        optionally started from the directions ``start``)."""
        def apply(B):
            Y = self.cross(a, a, B) if q is None else q[:, None] * self.cross(a, a, q[:, None] * B)
            if shift is not None:
                Y = Y - shift[:, None] * B
            if low_rank is not None:
                Y = Y - low_rank @ (low_rank.T @ B)
            return Y

        return block_lanczos(apply, self.dims[a], k, random_state=self.random_state, tol=tol, start=start)

    def eigenvalues_above(self, a, tau, *, q=None, first=8):
        """Every eigenvalue of ``diag(q) S_aa diag(q)`` above ``tau`` (at least the largest), by
        block Lanczos for a doubling count (Ritz values are counted: :data:`COUNT_TOL`)."""
        p = self.dims[a]
        k = min(first, p)
        while True:
            w = self.top_eigh(a, k, q=q, tol=COUNT_TOL)[0]
            if w.size < k or w[-1] <= tau or k >= p:
                return w[: max(1, int(np.sum(w > tau)))]
            k = min(2 * k, p)

    def top_left_singular(self, a, b, k, La=None, Lb=None):
        """Top ``k`` left singular vectors of ``R = S_ab - L_a L_b^T`` (block Lanczos on ``R R^T``)."""
        def RRt(B):
            Y = self.cross(b, a, B) if La is None else self.cross(b, a, B) - Lb @ (La.T @ B)  # R^T B
            return self.cross(a, b, Y) if La is None else self.cross(a, b, Y) - La @ (Lb.T @ Y)

        return block_lanczos(RRt, self.dims[a], k, random_state=self.random_state)[1]

    def cross_left_singular(self, a, others, k, *, q=None, q_others=None):
        """Top ``k`` left singular vectors of ``diag(q) S_{a,U} diag(q_U)``, ``U = others``
        (``q_others``: the stacked column scales of ``U``; default 1), by block Lanczos."""
        others = list(others)
        scales = {m: np.ones(p) for m, p in self.dims.items()}
        if q is not None:
            scales[a] = np.asarray(q, dtype=np.float64)
        if q_others is not None:
            bounds = np.cumsum([0] + [self.dims[o] for o in others])
            for i, o in enumerate(others):
                scales[o] = np.asarray(q_others[bounds[i] : bounds[i + 1]], dtype=np.float64)
        if self.scales is not None:
            scales = {m: s * self.scales[m] for m, s in scales.items()}
        return self._derive(scales=scales, _norms={}, _nulls=(None, None, None)).svd(
            a, others, k, return_vectors=True)[0]

    def residual_eigh(self, a, k, *, q=None, basis=None):
        """Top ``k`` eigenpairs of ``(I - Q Q^T) diag(q) S_aa diag(q) (I - Q Q^T)`` for an
        orthonormal ``basis`` ``Q`` (``None``: no projection), by block Lanczos (counting tolerance)."""
        Q = None if basis is None or not basis.shape[1] else basis

        def proj(B):
            return B if Q is None else B - Q @ (Q.T @ B)

        def apply(B):
            B = proj(B)
            Y = self.cross(a, a, B) if q is None else q[:, None] * self.cross(a, a, q[:, None] * B)
            return proj(Y)

        return block_lanczos(apply, self.dims[a], k, random_state=self.random_state, tol=COUNT_TOL)

    def dense_block(self, a):
        """``S_aa`` as an array, from ``p_a`` products: meant for narrow modalities
        (``p_a^2 <= n``), where it is no larger than one column of the data."""
        S = self.cross(a, a, np.eye(self.dims[a]))
        return 0.5 * (S + S.T)
    def _cross_products(self, a, others, rel=None):
        """``S_j B`` and ``S_j^T Y`` for ``S_j = X_{a,c}^T X_{U,c}^{(j)} / (n - ddof)``, batched over ``j``.

        ``rel[o]`` (shape (n_problems, n)) moves the rows of each ``o`` in ``U``
        against ``a``'s in problem ``j`` (``X_o^{(j)}[i] = X_o[rel[o][j, i]]``);
        ``rel=None`` is the single unpermuted block. Each batched product is one
        pass over the rows of every modality involved.
        """
        bounds = np.cumsum([0] + [self.dims[o] for o in others])
        rel = {} if rel is None else rel
        inv = {}
        for o, r in rel.items():
            inv[o] = np.empty_like(r)
            np.put_along_axis(inv[o], r, np.broadcast_to(np.arange(r.shape[1]), r.shape), axis=1)

        def split(Y, widths):
            return np.split(Y, np.cumsum(widths)[:-1], axis=1)

        def fwd(blocks, idx):  # (p_U, b) -> (p_a, b)
            widths = [B.shape[1] for B in blocks]
            parts = None
            for i, o in enumerate(others):
                Y = split(self.matmat(o, np.hstack([B[bounds[i] : bounds[i + 1]] for B in blocks])), widths)
                Y = [y if o not in rel else y[rel[o][j]] for y, j in zip(Y, idx)]
                parts = Y if parts is None else [p + y for p, y in zip(parts, Y)]
            return split(self.rmatmat(a, np.hstack(parts)) / self.denominator, widths)

        def bwd(blocks, idx):  # (p_a, b) -> (p_U, b)
            widths = [B.shape[1] for B in blocks]
            Z = split(self.matmat(a, np.hstack(blocks)), widths)
            out = []
            for o in others:
                Zo = np.hstack([z if o not in inv else z[inv[o][j]] for z, j in zip(Z, idx)])
                out.append(self.rmatmat(o, Zo))
            return split(np.vstack(out) / self.denominator, widths)

        return fwd, bwd

    def svd(self, a, others, k, *, random_state=None, return_vectors=False, tol=RITZ_TOL):
        """Top ``k`` singular values (and vectors) of ``S_{a,U}``, ``U = others``.

        Block Lanczos on ``S S^T`` over the smaller side; the vectors of the
        other side follow from one product.

        Returns
        -------
        s : ndarray of shape (k,)
            Decreasing; Ritz values, so never above the exact ones.
        U : ndarray of shape (p_a, k), V : ndarray of shape (p_U, k)
            Only with ``return_vectors`` (``S V = U diag(s)``).
        """
        others = list(others)
        pa, pu = self.dims[a], sum(self.dims[o] for o in others)
        fwd, bwd = self._cross_products(a, others)
        k = int(min(k, pa, pu))
        random_state = self._rng(random_state)
        left = pa <= pu
        if left:
            w, X = block_lanczos(lambda B: fwd(bwd([B], [0]), [0])[0], pa, k, random_state=random_state, tol=tol)
        else:
            w, X = block_lanczos(lambda B: bwd(fwd([B], [0]), [0])[0], pu, k, random_state=random_state, tol=tol)
        s = np.sqrt(np.clip(w, 0.0, None))
        if not return_vectors:
            return s
        other = (bwd if left else fwd)([X], [0])[0] / np.where(s > 0, s, 1.0)[None, :]
        return (X, s, other) if left else (other, s, X)

    def cross_svd(self, a, others, k):
        """Top ``k`` singular triplets ``(U, s, V)`` of ``S_{a,U}`` (:meth:`svd` with vectors)."""
        return self.svd(a, others, k, return_vectors=True)

    def cross_singular_values(self, a, others, tau, *, max_count=None):
        """Enough top singular values of ``S_{a,U}`` (``U = others``) to count those above ``tau``:
        block Lanczos for a doubling count, stopping past ``max_count``."""
        cap = min(self.dims[a], sum(self.dims[o] for o in others))
        k = min(cap, (max_count + 1) if max_count is not None else 8)
        while True:
            sv = self.svd(a, others, k, tol=COUNT_TOL)
            if sv.size < k or sv[-1] <= tau or k >= cap or (max_count is not None and k > max_count):
                return sv
            k = min(2 * k, cap)

    def permutation_nulls(self, a, others, perms, *, random_state=None):
        """Top singular values of ``S_{a,U}`` (``U = others``) under row permutations.

        Parameters
        ----------
        a : str
        others : sequence of str
        perms : sequence of ndarray of shape (n,), or dict of str to ndarray of shape (B, n)
            A sequence moves the rows of ``x_U`` together against ``a``'s (row
            ``i`` of ``x_U`` becomes row ``perm[i]``): one null per permutation.
            A dict is a set of ``B`` *joint draws*: every modality's rows move by their own
            permutation (a modality without a key stays in place), each row's
            mask with its values. Repeated calls with the same draws share the
            pair products.

        Returns
        -------
        ndarray of shape (B,)

        Notes
        -----
        With ``dense_nulls`` the pair products are formed in single precision
        (:mod:`hclstat.moments.nulls`: the top singular value of a null moves by
        ~1e-7 relative against a Monte Carlo spread of several per cent);
        otherwise block Lanczos is advanced on all draws together, from products
        (complete data only).
        """
        others = list(others)
        if not isinstance(perms, dict):
            stacked = np.stack([np.asarray(p, dtype=np.int64) for p in perms])
            perms = {o: stacked for o in others}
        if self.dense_nulls:
            return self._dense_joint(perms)([(a, others)])[:, 0]
        if self.masks is not None:
            raise ValueError("permutation_nulls: a row source with masks needs dense_nulls=True (pairwise counts "
                             "are formed entry by entry)")
        rel = {o: r for o in others if (r := joint_relative(perms, a, o)) is not None}
        count = _draw_count(perms)
        pa, pu = self.dims[a], sum(self.dims[o] for o in others)
        rng = self._rng(random_state)
        out = []
        # draws in groups: each keeps a Krylov basis of its own (memory ~ group x dim x basis size)
        for start in range(0, count, _LOCKSTEP_DRAWS):
            part = {o: r[start : start + _LOCKSTEP_DRAWS] for o, r in rel.items()}
            size = min(_LOCKSTEP_DRAWS, count - start)
            fwd, bwd = self._cross_products(a, others, part)
            if pa <= pu:
                res = lanczos_lockstep(lambda bl, idx: fwd(bwd(bl, idx), idx), pa, 1, size, random_state=rng, block=4)
            else:
                res = lanczos_lockstep(lambda bl, idx: bwd(fwd(bl, idx), idx), pu, 1, size, random_state=rng, block=4)
            out.extend(np.sqrt(max(float(w[0]), 0.0)) for w, _ in res)
        return np.array(out)

    def joint_permutation_nulls(self, tests, draws):
        """:meth:`permutation_nulls` of several tests ``(a, others)`` under the same joint
        ``draws``, shape (B, n_tests) (dense nulls: each pair's product formed once)."""
        if self.dense_nulls:
            return self._dense_joint(draws)(tests)
        return np.column_stack([self.permutation_nulls(a, others, draws) for a, others in tests])

    def _centred32(self, m):
        x = self._views[m] if self.rows is None else self._views[m][self.rows]
        s = self._scale(m)
        y = x - self.means[m]
        if self.masks is not None:
            y[~self._mask(m)] = 0.0
        return (y if s is None else y * s).astype(np.float32)

    def _mask(self, m):
        return self.masks[m] if self.rows is None else self.masks[m][self.rows]

    def _dense_products(self, draws):
        """``(products, widths, bases, count)`` under ``draws``: ``products(x, y)`` the (B, w_x, w_y)
        pair products (cached for the last ``draws``); ``bases[m]`` the ``V^T`` of a block replaced
        by ``U S`` (``p_m > n``), else absent."""
        if self._nulls[0] is not draws:
            blocks = {m: self._centred32(m) for m in self.modalities}
            masks = None if self.masks is None else {m: self._mask(m).astype(np.float32) for m in self.modalities}
            widths, bases = {m: b.shape[1] for m, b in blocks.items()}, {}
            if masks is None:
                for m, b in blocks.items():
                    if b.shape[1] > b.shape[0]:
                        # p > n: the nulls' singular values depend on X_m only through X_m X_m^T
                        u, s, vt = np.linalg.svd(b.astype(np.float64), full_matrices=False)
                        blocks[m], bases[m] = (u * s).astype(np.float32), vt
                        widths[m] = blocks[m].shape[1]
            self._nulls = (draws, {}, (blocks, masks, widths, bases))
        cache, (blocks, masks, widths, bases) = self._nulls[1], self._nulls[2]
        denominator = self.denominator if masks is None else self.ddof

        def products(x, y):
            if (x, y) not in cache:
                if (y, x) not in cache:  # the narrower block is the one gathered
                    pair = (x, y) if widths[x] <= widths[y] else (y, x)
                    cache[pair] = joint_pair_products(blocks, masks, denominator, pair, draws)
                if (x, y) not in cache:
                    cache[(x, y)] = cache[(y, x)].transpose(0, 2, 1)
            return cache[(x, y)]

        return products, widths, bases, _draw_count(draws)

    def _dense_joint(self, draws):
        """``tests -> (B, n_tests)`` top null singular values under ``draws``."""
        products, widths, _, count = self._dense_products(draws)
        return lambda tests: joint_top_singular_values(products, widths, tests, count)

    @property
    def supports_deflation(self):
        """Whether :meth:`deflated_permutation_nulls` is available (dense nulls, complete rows)."""
        return self.dense_nulls and self.masks is None

    def deflated_permutation_nulls(self, a, others, left, right, draws):
        """Top singular value of ``P_L S_{a,U} P_R`` under each joint draw, shape (B,).

        ``left`` (p_a, k) and ``right`` (p_U, k) are directions (the observed
        top-``k`` singular vectors of ``S_{a,U}``), ``P = I - Q Q^T`` the
        projection off their span: the null of the ``(k + 1)``-th singular value
        once ``k`` are counted (deflated parallel analysis; Dobriban, 2020),
        formed from the pair products of :meth:`joint_permutation_nulls` (each
        draw's ``S_{a,U}`` is projected; no new product with the rows). Dense
        nulls on complete rows only (a missing entry's filled value would move
        with the projection).
        """
        if not self.supports_deflation:
            raise ValueError("deflated_permutation_nulls: needs dense_nulls=True and complete rows")
        others = list(others)
        products, widths, bases, _ = self._dense_products(draws)

        def coordinates(m, Q):  # directions in the coordinates of m's null block
            return bases[m] @ Q if m in bases else Q

        left = np.linalg.qr(coordinates(a, np.asarray(left, dtype=np.float64)))[0]
        cuts = np.cumsum([self.dims[o] for o in others])[:-1]
        right = np.vstack([coordinates(o, Q) for o, Q in zip(others, np.split(np.asarray(right, dtype=np.float64),
                                                                              cuts))])
        right = np.linalg.qr(right)[0]
        C = np.concatenate([products(a, o) for o in others], axis=2) if len(others) > 1 else products(a, others[0])
        return batched_top_singular_values(deflate(C, left, right))

    def frobenius2(self, a, b, *, chunk_columns=256):
        """``||S_ab||_F^2`` exactly, in column chunks of ``S_ab`` (``O(n p_a p_b)`` flops).

        Not used by the fit (see :class:`MatrixFreeHCL`); memory ``p_a x chunk_columns``.
        """
        total = 0.0
        pb = self.dims[b]
        for j in range(0, pb, chunk_columns):
            E = np.zeros((pb, min(chunk_columns, pb - j)))
            E[j : j + E.shape[1]] = np.eye(E.shape[1])
            block = self.cross(a, b, E)
            total += float(np.einsum("ij,ij->", block, block))
        return total



    # ------------------------------------------------------ factor analysis
    def fa_noise(self, a, r, *, n_iter=30, tol=1e-4):
        """Rank-``r`` factor-analysis noise of ``S_aa`` from products only.

        The problem :func:`hclstat.factor_analysis.fa_noise` solves (the Gaussian
        factor-analysis fit of the block), by a different route: fixed-point
        (principal-factor) iteration of its stationarity condition
        ``psi = diag(S - L L^T)``, ``L = Psi^{1/2} V (Theta - I)^{1/2}`` with
        ``(Theta, V)`` the top ``r`` eigenpairs of ``Psi^{-1/2} S Psi^{-1/2}``
        (block Lanczos), stopped at a relative change of ``tol``.
        """
        d = self.diag(a)
        if r == 0:
            return d
        p = d.size
        if r >= p:
            return 1e-3 * d
        w, V = self.top_eigh(a, r, tol=COUNT_TOL)
        psi = np.clip(d - np.sum(V**2 * np.clip(w, 0.0, None), axis=1), 0.05 * d, None)
        for _ in range(n_iter):
            w, V = self.top_eigh(a, r, q=1.0 / np.sqrt(psi), tol=COUNT_TOL, start=V)
            L = V * np.sqrt(np.clip(w - 1.0, 0.0, None)) * np.sqrt(psi)[:, None]
            new = np.clip(d - np.sum(L**2, axis=1), 1e-4 * d, d)
            done = np.max(np.abs(new - psi) / d) <= tol
            psi = new
            if done:
                break
        return psi

    def objective_constant(self, gamma, *, n_probes=_N_PROBES):
        """Hutchinson estimate of ``sum_{a<b} ||S_ab||_F^2 + gamma/2 sum_a ||S_aa||_F^2``
        (``n_probes`` Gaussian probes per modality; :meth:`frobenius2` is exact)."""
        mods = self.modalities
        Y = [self.matmat(m, self.random_state.standard_normal((self.dims[m], n_probes))) for m in mods]
        total = 0.0
        for a, m in enumerate(mods):
            P = self.rmatmat(m, np.hstack(Y[a:])) / self.denominator
            for j, b in enumerate(range(a, len(mods))):
                blk = P[:, j * n_probes : (j + 1) * n_probes]
                total += float(np.einsum("ij,ij->", blk, blk)) / n_probes * (0.5 * float(gamma) if b == a else 1.0)
        return total

    def quadratic(self, W):
        """``W^T S W = (X_c W)^T (X_c W) / (n - ddof)`` for a stacked ``W``: one pass per modality."""
        parts = self.split(np.asarray(W, dtype=np.float64))
        XW = sum(self.matmat(m, parts[m]) for m in self.modalities)
        return XW.T @ XW / self.denominator


def _draw_count(draws):
    return next(iter(draws.values())).shape[0]
