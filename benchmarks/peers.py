"""Thin adapters to the peer packages of the pattern benchmark.

Each adapter fits one peer on views ``{modality: (n, p_m) array}`` and returns
a :class:`PeerFit`: factor scores ``Z`` (n, K), loadings ``W[m]`` (p_m, K) and
the per-view variance explained ``r2`` (M, K). :func:`derive_pattern` turns a
fit into a sharing pattern (a :class:`hclstat.hierarchy.Hierarchy`) and
loadings keyed by structure, so that the peers are scored with the same
:mod:`hclstat.metrics` functions as the package's own estimators.

Pattern rule (the same for every peer): factor ``k`` is *active* on view ``m``
when its variance explained there,

    R2_{m,k} = 1 - ||X_m - z_k w_{m,k}^T||_F^2 / ||X_m||_F^2   (X_m centred),

exceeds ``threshold`` (default 0.01, i.e. 1 %); this is MOFA+'s own per-factor
definition (``BayesNet.calculate_variance_explained``). A factor's structure is
its set of active views; factors active nowhere are dropped; ``k_S`` counts the
factors with structure ``S``.

Peers:

* ``mofa``: MOFA+ (``mofapy2``), Gaussian likelihoods by default (per-view
  ``"bernoulli"`` or ``"poisson"`` on request, ``likelihoods=``), default
  priors (ARD on the weights per view and factor, spike-and-slab on the
  weights), default "fast" convergence mode, views not rescaled.
* ``gfa``: group factor analysis, ``cca_zoo.probabilistic.GFA`` (a NumPy port
  of the R package CCAGFA: variational Bayes with per-view ARD and an isotropic
  noise per view; needs neither JAX nor NumPyro).
* ``ajive``: angle-based JIVE, ``mvlearn.decomposition.AJIVE`` (mvlearn 0.4.1;
  its import needs seaborn): per-view signal ranks from its own profile-
  likelihood elbow (``init_signal_ranks=None``), joint rank from the Wedin /
  random-direction bounds, individual ranks from its singular-value
  thresholds. AJIVE has only a joint (all-view) and individual (one-view)
  parts, so it cannot express a partially shared structure.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from hclstat.hierarchy import Hierarchy

__all__ = ["PeerFit", "PEERS", "MOFA_LIKELIHOODS", "available", "fit_mofa", "mofa_likelihoods",
           "fit_gfa", "fit_ajive", "derive_pattern", "pattern_from_r2",
           "variance_explained"]


@dataclass
class PeerFit:
    """A fitted peer reduced to what the benchmark scores."""

    Z: np.ndarray  # (n, K) factor scores
    W: dict  # modality -> (p_m, K) loadings
    r2: np.ndarray  # (M, K) per-view variance explained of each factor
    n_iter: int
    converged: bool
    info: dict = field(default_factory=dict)


def available(peer):
    """``(True, version)`` when the peer's package imports, else ``(False, reason)``."""
    module = {"mofa": "mofapy2", "gfa": "cca_zoo", "ajive": "mvlearn"}[peer]
    try:
        mod = importlib.import_module(module)
        if peer == "gfa":
            importlib.import_module("cca_zoo.probabilistic").GFA  # noqa: B018
        if peer == "ajive":
            importlib.import_module("mvlearn.decomposition").AJIVE  # noqa: B018
    except Exception as exc:  # any import failure makes the peer unavailable, with its reason
        return False, f"{module} not importable: {type(exc).__name__}: {exc}"
    from importlib.metadata import version

    dist = {"mofapy2": "mofapy2", "cca_zoo": "cca-zoo", "mvlearn": "mvlearn"}[module]
    try:
        return True, version(dist)
    except Exception:  # pragma: no cover - metadata missing in an odd install
        return True, getattr(mod, "__version__", "unknown")


def variance_explained(views, Z, W):
    """MOFA+'s per-factor R2 of every view: ndarray of shape (M, K)."""
    mods = list(views)
    r2 = np.zeros((len(mods), Z.shape[1]))
    for i, m in enumerate(mods):
        X = views[m] - views[m].mean(axis=0)
        ss = float(np.sum(X * X))
        for k in range(Z.shape[1]):
            R = X - np.outer(Z[:, k], W[m][:, k])
            r2[i, k] = 1.0 - float(np.sum(R * R)) / ss
    return r2


#: the per-view likelihoods mofapy2 offers
MOFA_LIKELIHOODS = ("gaussian", "bernoulli", "poisson")


def mofa_likelihoods(views, likelihoods=None):
    """One mofapy2 likelihood per view, checked against the data.

    ``None`` (default): Gaussian everywhere; a string: that likelihood for every
    view; a dict ``{modality: likelihood}``: the views it leaves out Gaussian.
    ``"bernoulli"`` views must hold only 0 and 1, ``"poisson"`` views
    non-negative integers (NaN allowed: MOFA+ treats it as missing).
    """
    mods = list(views)
    if likelihoods is None:
        likelihoods = "gaussian"
    if isinstance(likelihoods, str):
        likelihoods = dict.fromkeys(mods, likelihoods)
    if not hasattr(likelihoods, "items"):
        raise TypeError(f"likelihoods: expected None, a string or a dict modality -> likelihood, "
                        f"got {type(likelihoods).__name__}")
    unknown = sorted(set(likelihoods) - set(mods))
    if unknown:
        raise ValueError(f"likelihoods: unknown modalities {unknown}; the views are {mods}")
    out = []
    for m in mods:
        lik = likelihoods.get(m, "gaussian")
        if lik not in MOFA_LIKELIHOODS:
            raise ValueError(f"likelihoods[{m!r}]: expected one of {MOFA_LIKELIHOODS}, got {lik!r}")
        x = np.asarray(views[m], dtype=np.float64)
        x = x[~np.isnan(x)]
        if lik == "bernoulli" and not np.all((x == 0) | (x == 1)):
            raise ValueError(f"likelihoods[{m!r}]: a 'bernoulli' view must hold only 0 and 1")
        if lik == "poisson" and not np.all((x >= 0) & (x == np.floor(x))):
            raise ValueError(f"likelihoods[{m!r}]: a 'poisson' view must hold non-negative integers")
        out.append(lik)
    return out


def fit_mofa(views, *, n_factors=15, max_iter=1000, seed=0, likelihoods=None):
    """Fit MOFA+ with its default priors; everything it prints is swallowed.

    ``likelihoods``: per-view likelihoods (:func:`mofa_likelihoods`; default
    Gaussian everywhere). For a non-Gaussian view MOFA+ fits on its
    pseudo-data, and ``r2`` is MOFA+'s variance explained of that pseudo-data.
    """
    from mofapy2.run.entry_point import entry_point

    liks = mofa_likelihoods(views, likelihoods)
    mods = list(views)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ent = entry_point()
            ent.set_data_options(scale_views=False)
            ent.set_data_matrix(
                [[np.asarray(views[m], dtype=np.float64)] for m in mods],
                likelihoods=liks,
                views_names=mods,
            )
            ent.set_model_options(factors=n_factors, spikeslab_weights=True, ard_weights=True)
            ent.set_train_options(iter=max_iter, convergence_mode="fast", seed=seed, quiet=True, dropR2=None)
            ent.build()
            ent.run()
    except SystemExit as exc:  # mofapy2 calls exit() on some failures
        raise RuntimeError(f"mofapy2 exited: {exc}; output tail: {sink.getvalue()[-300:]!r}") from None
    model = ent.model
    Z = np.asarray(model.nodes["Z"].getExpectation(), dtype=np.float64)
    W = {m: np.asarray(w, dtype=np.float64) for m, w in zip(mods, model.nodes["W"].getExpectation())}
    r2 = np.asarray(model.calculate_variance_explained()[0], dtype=np.float64)
    n_iter = len(model.getTrainingStats()["number_factors"])
    return PeerFit(Z=Z, W=W, r2=r2, n_iter=n_iter, converged=n_iter < max_iter,
                   info={"n_factors_start": n_factors, "likelihoods": dict(zip(mods, liks)),
                         "y_nodes": {m: type(y).__name__ for m, y in zip(mods, model.nodes["Y"].getNodes())}})


def fit_gfa(views, *, n_components=15, max_iter=10000, seed=0):
    """Fit cca-zoo's GFA (CCAGFA defaults; ARD pruning of unused dimensions on).

    ``Z`` is the posterior mean of the latent given all views; ``r2`` follows
    the MOFA+ definition on the centred views.
    """
    from cca_zoo.probabilistic import GFA

    mods = list(views)
    arrays = [np.asarray(views[m], dtype=np.float64) for m in mods]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gfa = GFA(n_components=n_components, max_iter=max_iter, random_state=seed,
                  n_posterior_samples=20).fit(arrays)
    Z = np.asarray(gfa.posterior_mean(arrays), dtype=np.float64)
    W = {m: np.asarray(w, dtype=np.float64) for m, w in zip(mods, gfa.weights_)}
    centred = {m: a - a.mean(axis=0) for m, a in zip(mods, arrays)}
    r2 = variance_explained(centred, Z, W)
    converged = not any("converge" in str(w.message).lower() for w in caught)
    return PeerFit(Z=Z, W=W, r2=r2, n_iter=int(gfa.n_iter_), converged=converged,
                   info={"n_components_start": n_components, "n_components_kept": int(gfa.n_components_)})


def fit_ajive(views, *, seed=0):
    """Fit mvlearn's AJIVE with its defaults (signal ranks from its own elbow rule).

    Factors: the joint scores (loading on every view, ``W_m = X_m^T U_joint``
    for the centred ``X_m``) followed by each view's individual scores (loading
    on that view only, ``W_m = V_m D_m``); ``r2`` follows the MOFA+ definition.
    """
    from mvlearn.decomposition import AJIVE

    mods = list(views)
    arrays = [np.asarray(views[m], dtype=np.float64) for m in mods]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj = AJIVE(random_state=seed).fit(arrays)
    centred = {m: a - a.mean(axis=0) for m, a in zip(mods, arrays)}
    J = np.asarray(aj.joint_scores_, dtype=np.float64).reshape(arrays[0].shape[0], -1)
    blocks_z = [J]
    W = {m: [centred[m].T @ J] for m in mods}
    for i, m in enumerate(mods):
        U, D, V = aj.individual_scores_[i], aj.individual_svals_[i], aj.individual_loadings_[i]
        r = 0 if U is None else U.shape[1]
        if r:
            blocks_z.append(np.asarray(U, dtype=np.float64))
        for o in mods:
            W[o].append(np.asarray(V, dtype=np.float64) * np.asarray(D)[None, :] if (o == m and r)
                        else np.zeros((centred[o].shape[1], r)))
    Z = np.concatenate(blocks_z, axis=1)
    W = {m: np.concatenate(w, axis=1) for m, w in W.items()}
    r2 = variance_explained(centred, Z, W)
    return PeerFit(Z=Z, W=W, r2=r2, n_iter=1, converged=True,
                   info={"joint_rank": int(aj.joint_rank_),
                         "individual_ranks": [int(k) for k in aj.individual_ranks_],
                         "init_signal_ranks": [int(k) for k in aj.init_signal_ranks_]})


PEERS = {"mofa": fit_mofa, "gfa": fit_gfa, "ajive": fit_ajive}


def derive_pattern(fit, dims, *, threshold=0.01):
    """Sharing pattern and structure-keyed loadings of a peer fit.

    Parameters
    ----------
    fit : PeerFit
    dims : dict of str to int
        Modality dimensions, in the order of ``fit.r2``'s rows.
    threshold : float
        A factor is active on a view when its R2 there exceeds ``threshold``.

    Returns
    -------
    hierarchy : Hierarchy
    loadings : dict
        ``{structure: {modality: ndarray (p_m, k_S)}}``: for each derived
        structure, the loading columns of its factors on each of its views.
    """
    groups = factor_structures(fit.r2, list(dims), threshold)
    h = Hierarchy(dims=dict(dims), ranks={s: len(ks) for s, ks in groups.items()})
    loadings = {s: {m: fit.W[m][:, ks] for m in s} for s, ks in groups.items()}
    return h, loadings


def factor_structures(r2, modalities, threshold):
    """``{structure: [factor indices]}`` from an (M, K) variance-explained matrix."""
    active = np.asarray(r2) > threshold
    groups = {}
    for k in range(active.shape[1]):
        s = frozenset(m for i, m in enumerate(modalities) if active[i, k])
        if s:
            groups.setdefault(s, []).append(k)
    return groups


def pattern_from_r2(r2, dims, threshold):
    """The :class:`Hierarchy` that ``threshold`` reads off an (M, K) R2 matrix."""
    groups = factor_structures(r2, list(dims), threshold)
    return Hierarchy(dims=dict(dims), ranks={s: len(ks) for s, ks in groups.items()})
