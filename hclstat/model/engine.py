"""Simulation engine for the hierarchical latent-variable model.

For modality ``m``::

    x_m = sum_{S ∋ m} A_{m,S} z_S + e_m,   Cov(z_S) = I_{k_S},   Cov(e_m) = Psi_m,

with ``z_S`` uncorrelated across structures unless a latent covariance is given
(which is how non-identifiable counterexamples are built).

:class:`MixedModel` observes such a model through monotone per-column links
(the latent Gaussian copula of DESIGN §9, links in :mod:`hclstat.model.links`).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit

from ..hierarchy import Hierarchy, as_structure
from ..utils import check_random_state
from .links import MixedLinks

__all__ = ["HierarchicalModel", "MixedModel", "LATENT_LAWS", "STUDENT_T_DF", "draw_latent", "draw_noise_variances",
           "published_block"]

LATENT_LAWS = ("gaussian", "laplace", "uniform", "student_t")
#: degrees of freedom of the Student-t latent law (finite fourth moment)
STUDENT_T_DF = 5.0


def draw_latent(law, size, rng):
    """Draw i.i.d. entries with mean 0 and variance 1 from a named law.

    ``gaussian`` N(0, 1); ``laplace`` with scale 1/sqrt(2); ``uniform`` on
    [-sqrt(3), sqrt(3)]; ``student_t`` with 5 degrees of freedom scaled by
    sqrt(3/5) (heavy tails, finite fourth moment).
    """
    if law == "gaussian":
        return rng.standard_normal(size)
    if law == "laplace":
        return rng.laplace(0.0, 1.0 / np.sqrt(2.0), size)
    if law == "uniform":
        return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size)
    if law == "student_t":
        return rng.standard_t(STUDENT_T_DF, size) * np.sqrt((STUDENT_T_DF - 2.0) / STUDENT_T_DF)
    raise ValueError(f"latent: expected one of {LATENT_LAWS}, got {law!r}")


def published_block(rng, p, d):
    """One block of the published loading law: ``U diag(d) R`` with ``U`` a Haar
    orthonormal ``(p, k)`` basis and ``R`` a Haar ``k x k`` rotation, ``k = len(d)``."""
    d = np.asarray(d, dtype=float)
    return (_random_orthonormal(rng, p, d.size) * d) @ _random_orthonormal(rng, d.size, d.size)


def draw_noise_variances(h, noise, noise_model, rng):
    """Noise variances per modality: ``c I`` (isotropic) or ``c diag(w)`` with
    ``log w_j ~ U[-log 4, log 4]`` (diagonal); ``noise`` is ``c`` or a dict of them."""
    if noise_model not in ("isotropic", "diagonal"):
        raise ValueError(f"noise_model: expected 'isotropic' or 'diagonal', got {noise_model!r}")
    out = {}
    for m in h.modalities:
        c = noise.get(m) if isinstance(noise, dict) else noise
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or c <= 0:
            raise ValueError(f"noise: expected a positive variance level for {m!r}, got {c!r}")
        if noise_model == "isotropic":
            out[m] = np.full(h.dims[m], float(c))
        else:
            out[m] = c * np.exp(rng.uniform(-np.log(4.0), np.log(4.0), h.dims[m]))
    return out


def _random_orthonormal(rng, p, k):
    q, r = np.linalg.qr(rng.standard_normal((p, k)))
    return q * np.sign(np.diag(r))  # Haar-distributed


class HierarchicalModel:
    """A fully specified hierarchical latent-variable model.

    Parameters
    ----------
    hierarchy : Hierarchy
    loadings : dict
        ``{structure: {modality: ndarray of shape (p_m, k_S)}}`` for every
        structure of ``hierarchy`` and every modality in it.
    noise_variances : dict
        ``{modality: ndarray of shape (p_m,)}``, positive; a scalar is broadcast.
    latent : {"gaussian", "laplace", "uniform", "student_t"}
        Law of the standardised latent entries (see :func:`draw_latent`).
    latent_covariance : ndarray of shape (K, K), optional
        Covariance of the stacked latents (components ordered as
        ``hierarchy.component_slices()``). Must have identity diagonal blocks
        per structure. ``None`` (default) is the identity: uncorrelated latents.
    """

    def __init__(self, hierarchy, loadings, noise_variances, latent="gaussian", latent_covariance=None):
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"hierarchy: expected a Hierarchy, got {type(hierarchy).__name__}")
        if latent not in LATENT_LAWS:
            raise ValueError(f"latent: expected one of {LATENT_LAWS}, got {latent!r}")
        self.hierarchy = hierarchy
        self.latent = latent
        self.loadings = self._check_loadings(hierarchy, loadings)
        self.noise_variances = self._check_noise(hierarchy, noise_variances)
        self.latent_covariance = self._check_latent_covariance(hierarchy, latent_covariance)

    # ------------------------------------------------------------ validation
    @staticmethod
    def _check_loadings(h, loadings):
        out = {}
        given = {as_structure(s, h.modalities, argname="loadings: structure"): v for s, v in loadings.items()}
        extra = [h.name(s) for s in given if h.rank(s) == 0]
        if extra:
            raise ValueError(f"loadings: structures {extra} are not in the hierarchy {h!r}")
        for s in h.structures:
            if s not in given:
                raise ValueError(f"loadings: structure {h.name(s)} of the hierarchy has no loadings")
            blocks = given[s]
            out[s] = {}
            for m in h.modalities:
                if m not in s:
                    if m in blocks:
                        raise ValueError(
                            f"loadings[{h.name(s)}]: modality {m!r} is not in this structure"
                        )
                    continue
                if m not in blocks:
                    raise ValueError(f"loadings[{h.name(s)}]: missing block for modality {m!r}")
                a = np.asarray(blocks[m], dtype=np.float64)
                want = (h.dims[m], h.rank(s))
                if a.shape != want:
                    raise ValueError(
                        f"loadings[{h.name(s)}][{m!r}]: expected shape {want}, got {a.shape}"
                    )
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"loadings[{h.name(s)}][{m!r}]: contains NaN or inf")
                out[s][m] = a
        return out

    @staticmethod
    def _check_noise(h, noise):
        if not hasattr(noise, "keys"):
            raise TypeError(
                f"noise_variances: expected a dict modality -> variances, got {type(noise).__name__}"
            )
        unknown = sorted(set(noise) - set(h.modalities))
        if unknown:
            raise ValueError(f"noise_variances: unknown modalities {unknown}")
        out = {}
        for m in h.modalities:
            if m not in noise:
                raise ValueError(f"noise_variances: missing modality {m!r}")
            v = np.asarray(noise[m], dtype=np.float64)
            v = np.full(h.dims[m], float(v)) if v.ndim == 0 else v
            if v.shape != (h.dims[m],):
                raise ValueError(
                    f"noise_variances[{m!r}]: expected shape ({h.dims[m]},), got {v.shape}"
                )
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                bad = int(np.flatnonzero(~(np.isfinite(v) & (v > 0)))[0])
                raise ValueError(
                    f"noise_variances[{m!r}]: expected positive finite variances, "
                    f"got {v[bad]!r} at column {bad}"
                )
            out[m] = v
        return out

    @staticmethod
    def _check_latent_covariance(h, phi):
        if phi is None:
            return None
        phi = np.asarray(phi, dtype=np.float64)
        K = h.n_components
        if phi.shape != (K, K):
            raise ValueError(f"latent_covariance: expected shape ({K}, {K}), got {phi.shape}")
        if not np.allclose(phi, phi.T, atol=1e-12):
            raise ValueError("latent_covariance: expected a symmetric matrix")
        for s, sl in h.component_slices().items():
            if not np.allclose(phi[sl, sl], np.eye(sl.stop - sl.start), atol=1e-12):
                raise ValueError(
                    f"latent_covariance: the block of structure {h.name(s)} must be the identity "
                    "(Cov(z_S) = I is the model's scale convention)"
                )
        # Cholesky succeeds on some exactly singular matrices, so test the spectrum
        eig = np.linalg.eigvalsh(phi)
        if K and eig[0] <= K * np.finfo(np.float64).eps * max(1.0, eig[-1]):
            raise ValueError(
                "latent_covariance: not positive definite; lower the cross-structure correlation"
            )
        return phi

    # ---------------------------------------------------------- construction
    @classmethod
    def random(
        cls,
        hierarchy,
        *,
        singular_values=(0.5, 1.5),
        loading_scale=None,
        noise=1.0,
        noise_model="isotropic",
        latent="gaussian",
        latent_correlation=0.0,
        random_state=None,
    ):
        """Draw a model for ``hierarchy``.

        Loading law (default, the published design): each block
        ``A_{m,S} = U diag(d) R`` with ``U`` a Haar-random orthonormal
        ``(p_m, k_S)`` basis, ``d_i ~ U[a, b]`` with ``(a, b) = singular_values``
        and ``R`` a Haar-random ``k_S x k_S`` rotation. With ``loading_scale=s``
        the entries are i.i.d. ``N(0, s^2)`` instead.

        Noise: ``noise`` is the variance level ``c`` (a scalar, or a dict per
        modality). ``"isotropic"`` gives ``Psi_m = c I``; ``"diagonal"`` gives
        heteroskedastic ``Psi_m = c diag(w)`` with ``log w_j ~ U[-log 4, log 4]``
        i.i.d. (variances spread over a factor of 16 around ``c``).

        ``latent_correlation = rho`` correlates every pair of components from
        *different* structures by ``rho`` (within a structure Cov = I); it must
        leave the latent covariance positive definite.
        """
        h = hierarchy
        if not isinstance(h, Hierarchy):
            raise TypeError(f"hierarchy: expected a Hierarchy, got {type(h).__name__}")
        rng = check_random_state(random_state)
        if noise_model not in ("isotropic", "diagonal"):
            raise ValueError(f"noise_model: expected 'isotropic' or 'diagonal', got {noise_model!r}")
        loadings = {}
        for s in h.structures:
            k = h.rank(s)
            loadings[s] = {}
            for m in h.modalities:
                if m not in s:
                    continue
                p = h.dims[m]
                if loading_scale is not None:
                    if not isinstance(loading_scale, numbers.Real) or loading_scale <= 0:
                        raise ValueError(f"loading_scale: expected a positive number, got {loading_scale!r}")
                    loadings[s][m] = loading_scale * rng.standard_normal((p, k))
                else:
                    a, b = singular_values
                    if not 0 < a <= b:
                        raise ValueError(
                            f"singular_values: expected (a, b) with 0 < a <= b, got {singular_values!r}"
                        )
                    u = _random_orthonormal(rng, p, k)
                    d = rng.uniform(a, b, k)  # drawn between the two bases (keeps seeded streams)
                    loadings[s][m] = (u * d) @ _random_orthonormal(rng, k, k)
        noise_variances = draw_noise_variances(h, noise, noise_model, rng)
        phi = None
        if latent_correlation:
            rho = float(latent_correlation)
            if not -1 < rho < 1:
                raise ValueError(f"latent_correlation: expected a value in (-1, 1), got {rho}")
            K = h.n_components
            phi = np.full((K, K), rho)
            for sl in h.component_slices().values():
                phi[sl, sl] = np.eye(sl.stop - sl.start)
        return cls(h, loadings, noise_variances, latent=latent, latent_covariance=phi)

    # -------------------------------------------------------------- moments
    def stacked_loadings(self):
        """The ``(p, K)`` loading matrix: modality row blocks, structure column blocks."""
        h = self.hierarchy
        A = np.zeros((h.n_features, h.n_components))
        rows, cols = h.feature_slices(), h.component_slices()
        for s, blocks in self.loadings.items():
            for m, a in blocks.items():
                A[rows[m], cols[s]] = a
        return A

    def covariance(self):
        """Population covariance ``A Phi A^T + Psi`` of the stacked features, shape (p, p)."""
        A = self.stacked_loadings()
        AP = A if self.latent_covariance is None else A @ self.latent_covariance
        cov = AP @ A.T
        cov[np.diag_indices_from(cov)] += np.concatenate(
            [self.noise_variances[m] for m in self.hierarchy.modalities]
        )
        return cov

    def cross_covariance(self, a, b):
        """Population covariance block ``Cov(x_a, x_b)``, shape (p_a, p_b)."""
        h = self.hierarchy
        sl = h.feature_slices()
        h.index(a), h.index(b)
        return self.covariance()[sl[a], sl[b]]

    def signal_block(self, structure, a, b):
        """``A_{a,S} A_{b,S}^T`` for a structure containing both modalities."""
        s = self.hierarchy.structure(structure)
        if s not in self.loadings or a not in s or b not in s:
            raise ValueError(
                f"structure {sorted(s)} does not carry components on both {a!r} and {b!r}"
            )
        return self.loadings[s][a] @ self.loadings[s][b].T

    # -------------------------------------------------------------- sampling
    def sample_latents(self, n, random_state=None):
        """Latent scores ``{structure: ndarray (n, k_S)}``."""
        rng = check_random_state(random_state)
        n = _check_n(n)
        h = self.hierarchy
        z = draw_latent(self.latent, (n, h.n_components), rng)
        if self.latent_covariance is not None:
            z = z @ np.linalg.cholesky(self.latent_covariance).T
        return {s: np.ascontiguousarray(z[:, sl]) for s, sl in h.component_slices().items()}

    def sample(self, n, random_state=None):
        """Draw ``n`` rows.

        Returns
        -------
        views : dict of str to ndarray of shape (n, p_m)
        latents : dict of frozenset to ndarray of shape (n, k_S)
        """
        rng = check_random_state(random_state)
        n = _check_n(n)
        latents = self.sample_latents(n, rng)
        # n passed on: a hierarchy without components (pure noise) has no latents to count rows
        return self._views(latents, n, rng), latents

    def views_from_latents(self, latents, random_state=None):
        """Views ``x_m = sum_S A_{m,S} z_S + e_m`` for given latents (fresh Gaussian noise)."""
        rng = check_random_state(random_state)
        n = next(iter(latents.values())).shape[0] if latents else 0
        return self._views(latents, n, rng)

    def _views(self, latents, n, rng):
        h = self.hierarchy
        views = {}
        for m in h.modalities:
            x = rng.standard_normal((n, h.dims[m])) * np.sqrt(self.noise_variances[m])
            for s in h.structures_of(m):
                x += latents[s] @ self.loadings[s][m].T
            views[m] = x
        return views

    def outcome(self, latents, beta, *, noise=1.0, kind="continuous", intercept=0.0, random_state=None):
        """Outcome ``y = intercept + sum_S z_S^T beta_S + eps``.

        ``kind="continuous"``: ``eps ~ N(0, noise)`` (``noise`` is a variance).
        ``kind="binary"``: ``y ~ Bernoulli(sigmoid(eta))`` with the linear
        predictor ``eta``; ``noise`` is ignored.
        """
        rng = check_random_state(random_state)
        eta = self.linear_predictor(latents, beta, intercept=intercept)
        if kind == "continuous":
            if not isinstance(noise, numbers.Real) or noise < 0:
                raise ValueError(f"noise: expected a non-negative variance, got {noise!r}")
            return eta + np.sqrt(noise) * rng.standard_normal(eta.shape[0])
        if kind == "binary":
            return (rng.uniform(size=eta.shape[0]) < expit(eta)).astype(np.int64)
        raise ValueError(f"kind: expected 'continuous' or 'binary', got {kind!r}")

    def linear_predictor(self, latents, beta, *, intercept=0.0):
        """``intercept + sum_S z_S^T beta_S`` (the Bayes predictor's linear part)."""
        h = self.hierarchy
        n = next(iter(latents.values())).shape[0]
        eta = np.full(n, float(intercept))
        for key, b in beta.items():
            s = h.structure(key)
            if s not in latents:
                raise ValueError(f"beta: structure {h.name(s)} is not a structure of the model")
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if b.shape[0] != h.rank(s):
                raise ValueError(
                    f"beta[{h.name(s)}]: expected {h.rank(s)} coefficients, got {b.shape[0]}"
                )
            eta += latents[s] @ b
        return eta

    def with_links(self, links, *, random_state=None):
        """This model observed through monotone links: a :class:`MixedModel`."""
        return MixedModel(self, links, random_state=random_state)

    def __repr__(self):
        return f"HierarchicalModel({self.hierarchy!r}, latent={self.latent!r})"


class MixedModel:
    """A hierarchical model observed through monotone links (latent Gaussian copula).

    The latent views are the model's views standardised column by column,
    ``x*_m = D_m^{-1/2} x_m`` with ``D = diag(Sigma)``, ``Sigma`` the model
    covariance; observed column ``j`` is ``g_j(x*_j)`` with ``g_j`` its link.
    The latents ``z_S`` are those of ``model``, so ``model.outcome`` applies to
    them unchanged.

    Parameters
    ----------
    model : HierarchicalModel
        Gaussian latents, unless every link is the continuous identity.
    links : MixedLinks or dict
        Resolved links, or specs expanded by :meth:`MixedLinks.from_specs`
        (per modality: one link, a list of ``p_m`` links, or ``{column: link}``).
    random_state : int, Generator or None
        Draws the free link parameters (prevalences, zero fractions, ...) once.
    """

    def __init__(self, model, links, *, random_state=None):
        if not isinstance(model, HierarchicalModel):
            raise TypeError(f"model: expected a HierarchicalModel, got {type(model).__name__}")
        h = model.hierarchy
        if not isinstance(links, MixedLinks):
            links = MixedLinks.from_specs(links, h.dims, random_state=random_state)
        links.check_dims(h.dims)
        if model.latent != "gaussian" and not links.is_identity:
            raise ValueError(f"model: mixed links need Gaussian latents (the copula is Gaussian), got "
                             f"latent={model.latent!r}; use latent='gaussian' or continuous identity links")
        self.model = model
        self.links = links
        A = model.stacked_loadings()
        AP = A if model.latent_covariance is None else A @ model.latent_covariance
        var = np.sum(AP * A, axis=1) + np.concatenate([model.noise_variances[m] for m in h.modalities])
        self._sd = np.sqrt(var)
        sd = {m: self._sd[sl] for m, sl in h.feature_slices().items()}
        loadings = {s: {m: a / sd[m][:, None] for m, a in blocks.items()} for s, blocks in model.loadings.items()}
        noise = {m: model.noise_variances[m] / sd[m] ** 2 for m in h.modalities}
        self._latent_model = HierarchicalModel(h, loadings, noise, latent=model.latent,
                                               latent_covariance=model.latent_covariance)

    @property
    def hierarchy(self):
        return self.model.hierarchy

    @property
    def types(self):
        """``{modality: ndarray of str (p_m,)}``: the column type codes for estimation."""
        return self.links.types

    @property
    def zratios(self):
        """``{modality: ndarray (p_m, 2)}``: the true margin parameters (see ``ColumnLink.zratio``)."""
        return self.links.zratios

    def latent_sd(self):
        """Standard deviations ``sqrt(diag Sigma)`` of the model's stacked columns, shape (p,)."""
        return self._sd.copy()

    def latent_correlation(self):
        """Exact correlation ``D^{-1/2} Sigma D^{-1/2}`` of the stacked latent ``x*``, shape (p, p)."""
        cov = self.model.covariance()
        corr = cov / np.outer(self._sd, self._sd)
        corr[np.diag_indices_from(corr)] = 1.0
        return corr

    def latent_model(self):
        """The model on the correlation scale: loadings ``D^{-1/2} A``, noise ``D^{-1} Psi``
        (its covariance is :meth:`latent_correlation`)."""
        return self._latent_model

    def observe(self, latent_views):
        """Observed mixed views from standardised latent views ``{m: (n, p_m)}``."""
        return self.links.apply(latent_views)

    def sample(self, n, random_state=None, *, return_latent_views=False):
        """Draw ``n`` rows.

        Returns
        -------
        views : dict of str to ndarray of shape (n, p_m)
            Observed mixed columns (float64; binary 0/1, ordinal levels 0..K-1).
        latents : dict of frozenset to ndarray of shape (n, k_S)
        latent_views : dict of str to ndarray of shape (n, p_m)
            Only with ``return_latent_views=True``: the standardised latent ``x*``.
        """
        latent_views, latents = self._latent_model.sample(n, random_state)
        views = self.links.apply(latent_views)
        return (views, latents, latent_views) if return_latent_views else (views, latents)

    def __repr__(self):
        return f"MixedModel({self.hierarchy!r}, {self.links!r})"


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: expected a positive integer number of rows, got {n!r}")
    return int(n)
