"""Monotone links from a latent Gaussian to observed mixed-type columns (DESIGN §9).

The hierarchical model holds for a latent Gaussian ``x*`` on the correlation
scale; observed column ``j`` is ``x_j = g_j(x*_j)`` with ``x*_j ~ N(0, 1)`` and
``g_j`` monotone (non-decreasing):

* ``continuous``: ``g(u) = f(u)``, ``f`` strictly increasing (identity, ``exp``,
  ``cube`` or a callable checked on a grid);
* ``binary``: ``g(u) = 1{u > c}``, ``c = Phi^{-1}(1 - prevalence)``;
* ``ordinal``: ``g(u) = #{k : u > c_k}``, ``c_k = Phi^{-1}(p_0 + ... + p_k)``
  (levels ``0 .. K-1``; ``K = 3`` is *ternary*);
* ``truncated``: ``g(u) = 1{u > c} f(u)``, ``c = Phi^{-1}(zero_fraction)``, ``f``
  positive and increasing on ``(c, inf)`` (``exp``: ``exp(u)``; ``shift``: ``u - c``);
* ``count``: ``g(u) = F_mu^{-1}(Phi(u))`` (Poisson quantiles: ``x ~ Poisson(mu)``
  exactly) or ``g(u) = floor(exp(a + b u))``.

A parameter given as a pair ``(lo, hi)`` is drawn ``U[lo, hi]`` per column when
the links are expanded to columns (:meth:`MixedLinks.from_specs`), once, so that
the model is fully specified. The mixed model itself:
:class:`hclstat.model.engine.MixedModel`.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import stats

from ..utils import check_random_state

__all__ = [
    "LINK_KINDS",
    "TYPE_CODES",
    "ColumnLink",
    "MixedLinks",
    "binary",
    "continuous",
    "count",
    "ordinal",
    "ternary",
    "truncated",
]

LINK_KINDS = ("continuous", "binary", "ordinal", "truncated", "count")
#: the column type codes an estimator sees (a 3-level ordinal is "ternary")
TYPE_CODES = ("continuous", "binary", "ternary", "ordinal", "truncated", "count")
_PARAMS = {
    "continuous": ("transform",),
    "binary": ("prevalence",),
    "ordinal": ("probabilities", "n_levels", "min_probability"),
    "truncated": ("zero_fraction", "transform"),
    "count": ("mean", "a", "b"),
}
_CONTINUOUS_TRANSFORMS = {"identity": lambda u: u, "exp": np.exp, "cube": lambda u: u ** 3}
#: grid on which a callable transform is checked (covers all but ~1e-12 of N(0, 1))
_GRID = np.linspace(-7.0, 7.0, 2801)


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _unit_value(name, value, *, kind):
    """A probability in (0, 1) or a range ``(lo, hi)`` inside (0, 1)."""
    if isinstance(value, np.ndarray):
        value = value.item() if value.ndim == 0 else tuple(value.tolist())
    if _is_number(value):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{kind}: {name} must lie in (0, 1), got {value!r}")
        return float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value):
        lo, hi = map(float, value)
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"{kind}: the range of {name} must satisfy 0 < lo <= hi < 1, got {tuple(value)!r}")
        return (lo, hi)
    raise ValueError(f"{kind}: {name} expected a number in (0, 1) or a range (lo, hi), got {value!r}")


def _check_increasing(f, grid, what):
    """Error unless ``f`` is finite and strictly increasing on ``grid`` (and positive if asked)."""
    try:
        y = np.asarray(f(grid), dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"{what}: the transform failed on an array argument ({type(exc).__name__}: {exc}); "
                         "expected a vectorised function") from None
    if y.shape != grid.shape or not np.all(np.isfinite(y)):
        raise ValueError(f"{what}: the transform must return finite values of the argument's shape "
                         f"on [{grid[0]:.3g}, {grid[-1]:.3g}]")
    bad = np.flatnonzero(np.diff(y) <= 0)
    if bad.size:
        raise ValueError(f"{what}: the transform is not strictly increasing: f({grid[bad[0] + 1]:.4g}) <= "
                         f"f({grid[bad[0]]:.4g}); a link must be monotone")
    return y


class ColumnLink:
    """The link of one column: ``ColumnLink(kind, **params)``.

    Built by :func:`continuous`, :func:`binary`, :func:`ordinal`,
    :func:`ternary`, :func:`truncated` and :func:`count`. A link whose
    parameters are all fixed is *resolved* (``is_resolved``); one with a range
    ``(lo, hi)`` or drawn category probabilities is a spec, made concrete by
    :meth:`resolve`.

    Attributes
    ----------
    kind : str
        One of :data:`LINK_KINDS`.
    params : dict
        The parameters as given (or as drawn, once resolved).
    """

    __slots__ = ("kind", "params", "_thresholds", "_transform")

    def __init__(self, kind, **params):
        if kind not in LINK_KINDS:
            raise ValueError(f"kind: expected one of {LINK_KINDS}, got {kind!r}")
        unknown = sorted(set(params) - set(_PARAMS[kind]))
        if unknown:
            raise ValueError(f"{kind}: unknown parameters {unknown}; expected some of {list(_PARAMS[kind])}")
        self.kind = kind
        self.params = getattr(self, f"_check_{kind}")(dict(params))
        self._thresholds = self._transform = None
        if self.is_resolved:
            self._build()

    # ------------------------------------------------------------ validation
    @staticmethod
    def _check_continuous(p):
        t = p.get("transform")
        t = "identity" if t is None else t
        if isinstance(t, str):
            if t not in _CONTINUOUS_TRANSFORMS:
                raise ValueError(f"continuous: transform expected one of {sorted(_CONTINUOUS_TRANSFORMS)} "
                                 f"or a strictly increasing callable, got {t!r}")
        elif callable(t):
            _check_increasing(t, _GRID, "continuous")
        else:
            raise ValueError(f"continuous: transform expected a name or a callable, got {t!r}")
        return {"transform": t}

    @staticmethod
    def _check_binary(p):
        if "prevalence" not in p:
            raise ValueError("binary: prevalence is required (a number in (0, 1) or a range (lo, hi))")
        return {"prevalence": _unit_value("prevalence", p["prevalence"], kind="binary")}

    @staticmethod
    def _check_ordinal(p):
        probs, k = p.get("probabilities"), p.get("n_levels")
        min_p = p.get("min_probability", 0.1)
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64)
            if probs.ndim != 1 or probs.size < 3:
                raise ValueError(f"ordinal: probabilities expected at least 3 category probabilities "
                                 f"(2 levels: use binary), got {probs.tolist()!r}")
            if np.any(~np.isfinite(probs)) or np.any(probs <= 0) or abs(probs.sum() - 1.0) > 1e-9:
                raise ValueError(f"ordinal: probabilities must be positive and sum to 1, got {probs.tolist()!r}")
            if k is not None and k != probs.size:
                raise ValueError(f"ordinal: n_levels={k!r} disagrees with {probs.size} probabilities")
            return {"probabilities": tuple(float(q) for q in probs)}
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 3:
            raise ValueError(f"ordinal: expected probabilities or an integer n_levels >= 3, got n_levels={k!r}")
        if not _is_number(min_p) or not 0.0 <= min_p < 1.0 / k:
            raise ValueError(f"ordinal: min_probability must lie in [0, 1/n_levels) = [0, {1.0 / k:.4g}), "
                             f"got {min_p!r}")
        return {"probabilities": None, "n_levels": int(k), "min_probability": float(min_p)}

    @staticmethod
    def _check_truncated(p):
        zf = _unit_value("zero_fraction", p.get("zero_fraction", 0.5), kind="truncated")
        t = p.get("transform", "exp")
        if isinstance(t, str) and t not in ("exp", "shift"):
            raise ValueError(f"truncated: transform expected 'exp', 'shift' or a callable, got {t!r}")
        if not isinstance(t, str) and not callable(t):
            raise ValueError(f"truncated: transform expected 'exp', 'shift' or a callable, got {t!r}")
        return {"zero_fraction": zf, "transform": t}

    @staticmethod
    def _check_count(p):
        mean, a, b = p.get("mean"), p.get("a"), p.get("b")
        if (mean is None) == (a is None and b is None):
            raise ValueError("count: give either mean (Poisson quantiles) or a and b (floor(exp(a + b u)))")
        if mean is not None:
            ok_range = isinstance(mean, (tuple, list)) and len(mean) == 2 and all(_is_number(v) for v in mean)
            if ok_range and 0 < mean[0] <= mean[1]:
                return {"mean": (float(mean[0]), float(mean[1]))}
            if not _is_number(mean) or not mean > 0:
                raise ValueError(f"count: mean expected a positive number or a range (lo, hi), got {mean!r}")
            return {"mean": float(mean)}
        if not (_is_number(a) and _is_number(b)) or not b > 0:
            raise ValueError(f"count: expected numbers a and b > 0 (floor(exp(a + b u))), got a={a!r}, b={b!r}")
        return {"a": float(a), "b": float(b)}

    # -------------------------------------------------------------- resolving
    @property
    def is_resolved(self):
        """Whether every parameter is fixed (no range, no drawn probabilities)."""
        if self.kind == "ordinal":
            return self.params["probabilities"] is not None
        return not any(isinstance(v, tuple) for v in self.params.values())

    def resolve(self, random_state=None):
        """A resolved copy: ranges drawn ``U[lo, hi]``; ordinal probabilities drawn as
        ``min_probability + (1 - K min_probability) Dirichlet(1, ..., 1)``."""
        if self.is_resolved:
            return self
        rng = check_random_state(random_state)
        if self.kind == "ordinal":
            k, m = self.params["n_levels"], self.params["min_probability"]
            probs = m + (1.0 - k * m) * rng.dirichlet(np.ones(k))
            return ColumnLink("ordinal", probabilities=probs / probs.sum())
        drawn = {name: rng.uniform(*v) if isinstance(v, tuple) else v for name, v in self.params.items()}
        return ColumnLink(self.kind, **drawn)

    def _build(self):
        kind, p = self.kind, self.params
        if kind == "binary":
            self._thresholds = np.array([stats.norm.ppf(1.0 - p["prevalence"])])
        elif kind == "ordinal":
            cum = np.cumsum(p["probabilities"])[:-1]
            self._thresholds = stats.norm.ppf(cum)
        elif kind == "truncated":
            c = float(stats.norm.ppf(p["zero_fraction"]))
            self._thresholds = np.array([c])
            t = p["transform"]
            if t == "exp":
                self._transform = np.exp
            elif t == "shift":
                self._transform = lambda u: u - c
            else:
                grid = np.linspace(c, c + 7.0, 1401)[1:]
                if np.any(_check_increasing(t, grid, "truncated") <= 0):
                    raise ValueError(f"truncated: the transform must be positive on (c, inf), c = {c:.4g}")
                self._transform = t
        else:
            self._thresholds = np.empty(0)
            if kind == "continuous":
                t = p["transform"]
                self._transform = _CONTINUOUS_TRANSFORMS[t] if isinstance(t, str) else t

    def _require_resolved(self, what):
        if not self.is_resolved:
            raise ValueError(f"{what}: the link {self!r} has unresolved parameters; call resolve(random_state)")

    # ----------------------------------------------------------- properties
    @property
    def type_code(self):
        """The column type for estimation, one of :data:`TYPE_CODES`."""
        if self.kind == "ordinal":
            probs = self.params["probabilities"]
            k = len(probs) if probs is not None else self.params["n_levels"]
            return "ternary" if k == 3 else "ordinal"
        return self.kind

    @property
    def thresholds(self):
        """Latent cut points ``c_k`` (binary, ordinal, truncated; empty otherwise)."""
        self._require_resolved("thresholds")
        return self._thresholds.copy()

    @property
    def zratio(self):
        """The true margin parameters, ndarray of shape (2,).

        binary and truncated: ``(P(x at its lower value), nan)``; ternary:
        ``(P(level 0), P(level 0) + P(level 1))``; otherwise ``(nan, nan)``.
        """
        self._require_resolved("zratio")
        out = np.full(2, np.nan)
        if self.kind in ("binary", "truncated"):
            out[0] = stats.norm.cdf(self._thresholds[0])
        elif self.type_code == "ternary":
            out[:] = stats.norm.cdf(self._thresholds)
        return out

    def __call__(self, u):
        """The observed values ``g(u)`` for latent values ``u``, float64 of ``u``'s shape."""
        self._require_resolved("link")
        u = np.asarray(u, dtype=np.float64)
        kind, p = self.kind, self.params
        if kind == "continuous":
            return np.asarray(self._transform(u), dtype=np.float64)
        if kind in ("binary", "ordinal"):
            # level = number of thresholds strictly below u
            return np.searchsorted(self._thresholds, u, side="left").astype(np.float64)
        if kind == "truncated":
            c = self._thresholds[0]
            out = np.zeros_like(u)
            above = u > c
            out[above] = self._transform(u[above])
            return out
        if "mean" in p:
            # Poisson quantile of Phi(u), through the survival functions (no Phi(u) rounding to 1)
            return stats.poisson.isf(stats.norm.sf(u), p["mean"]).astype(np.float64)
        return np.floor(np.exp(p["a"] + p["b"] * u))

    def __eq__(self, other):
        if not isinstance(other, ColumnLink):
            return NotImplemented
        return self.kind == other.kind and self.params == other.params

    __hash__ = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if v is not None)
        return f"ColumnLink({self.kind!r}{', ' if args else ''}{args})"


# ----------------------------------------------------------------- constructors
def continuous(transform=None):
    """``x = f(u)``: ``f`` the identity (``None``), ``"exp"``, ``"cube"`` or a
    strictly increasing vectorised callable (checked on a grid of [-7, 7])."""
    return ColumnLink("continuous", transform=transform)


def binary(prevalence):
    """``x = 1{u > c}`` with ``P(x = 1) = prevalence`` (a number or a range ``(lo, hi)``)."""
    return ColumnLink("binary", prevalence=prevalence)


def ordinal(probabilities=None, *, n_levels=None, min_probability=0.1):
    """Levels ``0 .. K-1`` with category probabilities ``probabilities`` (length
    ``K >= 3``), or drawn per column for ``n_levels = K`` (each at least
    ``min_probability``, see :meth:`ColumnLink.resolve`)."""
    if probabilities is None:
        return ColumnLink("ordinal", n_levels=n_levels, min_probability=min_probability)
    return ColumnLink("ordinal", probabilities=probabilities, n_levels=n_levels)


def ternary(probabilities=None, *, min_probability=0.1):
    """A 3-level :func:`ordinal`."""
    return ordinal(probabilities, n_levels=3, min_probability=min_probability)


def truncated(zero_fraction=0.5, transform="exp"):
    """Zero-inflated ``x = 1{u > c} f(u)``: ``P(x = 0) = zero_fraction`` (a number
    or a range); ``f`` is ``"exp"`` (``exp(u)``), ``"shift"`` (``u - c``) or a
    callable positive and strictly increasing on ``(c, inf)``."""
    return ColumnLink("truncated", zero_fraction=zero_fraction, transform=transform)


def count(mean=None, *, a=None, b=None):
    """Counts: ``Poisson(mean)`` quantiles of ``Phi(u)`` (``mean`` a number or a
    range), or ``floor(exp(a + b u))`` with ``b > 0``."""
    params = {"mean": mean} if mean is not None else {"a": a, "b": b}
    return ColumnLink("count", **params)


# ------------------------------------------------------------------ per model
class MixedLinks:
    """Resolved per-column links of every modality.

    Parameters
    ----------
    columns : dict of str to sequence of ColumnLink
        ``{modality: [link of column 0, link of column 1, ...]}``, every link
        resolved. Use :meth:`from_specs` to expand modality-level specs.
    """

    def __init__(self, columns):
        if not hasattr(columns, "items"):
            raise TypeError(f"columns: expected a dict modality -> links, got {type(columns).__name__}")
        out = {}
        for m, links in columns.items():
            links = tuple(links)
            for j, link in enumerate(links):
                if not isinstance(link, ColumnLink):
                    raise TypeError(f"columns[{m!r}][{j}]: expected a ColumnLink, got {type(link).__name__}")
                link._require_resolved(f"columns[{m!r}][{j}]")
            out[m] = links
        self.columns = out

    @classmethod
    def from_specs(cls, specs, dims, *, random_state=None):
        """Expand specs to columns, drawing every free parameter once.

        Parameters
        ----------
        specs : dict of str to spec
            Per modality: one :class:`ColumnLink` (every column), a sequence of
            ``p_m`` links (one per column) or a dict ``{column index: link}``
            (the other columns continuous). Modalities left out are continuous.
        dims : dict of str to int
            Modality widths (e.g. ``hierarchy.dims``).
        random_state : int, Generator or None
            Draws the ranges column by column, modalities in ``dims`` order.
        """
        if isinstance(specs, MixedLinks):
            specs = specs.columns
        if not hasattr(specs, "items"):
            raise TypeError(f"links: expected a dict modality -> spec, got {type(specs).__name__}")
        unknown = sorted(set(specs) - set(dims))
        if unknown:
            raise ValueError(f"links: unknown modalities {unknown}; the model has {list(dims)}")
        rng = check_random_state(random_state)
        identity = continuous()
        columns = {}
        for m, p in dims.items():
            spec = specs.get(m, identity)
            if isinstance(spec, ColumnLink):
                per_column = [spec] * p
            elif hasattr(spec, "items"):
                bad = [j for j in spec if isinstance(j, bool) or not isinstance(j, numbers.Integral)
                       or not 0 <= j < p]
                if bad:
                    raise ValueError(f"links[{m!r}]: column indices {bad} outside 0..{p - 1}")
                per_column = [spec.get(j, identity) for j in range(p)]
            elif isinstance(spec, (list, tuple)):
                if len(spec) != p:
                    raise ValueError(f"links[{m!r}]: expected {p} column links (p_{m} = {p}), got {len(spec)}")
                per_column = list(spec)
            else:
                raise TypeError(f"links[{m!r}]: expected a ColumnLink, a list of {p} or a dict column -> link, "
                                f"got {type(spec).__name__}")
            for j, link in enumerate(per_column):
                if not isinstance(link, ColumnLink):
                    raise TypeError(f"links[{m!r}][{j}]: expected a ColumnLink, got {type(link).__name__}")
            columns[m] = [link.resolve(rng) for link in per_column]
        return cls(columns)

    def check_dims(self, dims):
        """Error unless the links cover exactly the modalities and widths ``dims``."""
        if set(self.columns) != set(dims):
            raise ValueError(f"links: modalities {sorted(self.columns)} differ from the model's {list(dims)}")
        for m, p in dims.items():
            if len(self.columns[m]) != p:
                raise ValueError(f"links[{m!r}]: expected {p} column links, got {len(self.columns[m])}")

    @property
    def types(self):
        """``{modality: ndarray of str, shape (p_m,)}`` of type codes (:data:`TYPE_CODES`)."""
        return {m: np.array([link.type_code for link in links]) for m, links in self.columns.items()}

    @property
    def zratios(self):
        """``{modality: ndarray of shape (p_m, 2)}``: row ``j`` is column ``j``'s ``zratio``."""
        return {m: np.array([link.zratio for link in links]).reshape(len(links), 2)
                for m, links in self.columns.items()}

    @property
    def is_identity(self):
        """Whether every column is continuous with the identity transform."""
        return all(link.kind == "continuous" and link.params["transform"] == "identity"
                   for links in self.columns.values() for link in links)

    def apply(self, latent_views):
        """Observed views ``{m: ndarray (n, p_m)}`` from standardised latent views."""
        out = {}
        for m, links in self.columns.items():
            u = np.asarray(latent_views[m], dtype=np.float64)
            if u.ndim != 2 or u.shape[1] != len(links):
                raise ValueError(f"latent_views[{m!r}]: expected shape (n, {len(links)}), got {u.shape}")
            out[m] = np.column_stack([g(u[:, j]) for j, g in enumerate(links)]) if links else u.copy()
        return out

    def __repr__(self):
        counts = {m: {str(k): int(v) for k, v in zip(*np.unique(t, return_counts=True))} for m, t in self.types.items()}
        return f"MixedLinks({counts})"
