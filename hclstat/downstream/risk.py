"""Excess risk of a fitted predictor against the Bayes predictor of a known model."""

from __future__ import annotations

import numpy as np

__all__ = ["excess_risk"]


def _true_posterior(model, views):
    """Posterior mean ``E[z|x]`` (n, K) and covariance (K, K) under the true model (Woodbury)."""
    h = model.hierarchy
    A = model.stacked_loadings()
    psi = np.concatenate([model.noise_variances[m] for m in h.modalities])
    X = np.concatenate([np.asarray(views[m], dtype=np.float64) for m in h.modalities], axis=1)
    W = A / psi[:, None]
    K = A.shape[1]
    Phi_inv = np.eye(K) if model.latent_covariance is None else np.linalg.inv(model.latent_covariance)
    P = np.linalg.inv(Phi_inv + A.T @ W)
    P = 0.5 * (P + P.T)
    return (X @ W) @ P, P


def excess_risk(
    predictor,
    model,
    beta,
    *,
    intercept=0.0,
    kind=None,
    reference="observed",
    loss="log",
    n_samples=100_000,
    random_state=None,
    sample=None,
    return_std=False,
):
    """Excess risk of a fitted predictor against the Bayes predictor, by simulation.

    A fresh sample ``(x, z)`` of ``n_samples`` rows is drawn from ``model``
    and the *conditional* excess loss is averaged over it (expectations over
    the outcome noise are taken exactly, so no outcome is drawn).

    Continuous outcome (``predictor.predict``), squared loss:

    * ``reference="observed"`` (default): against the Bayes predictor given the
      views, ``f*(x) = E[y | x] = b0 + E[z | x]^T beta`` under the true model:
      ``E[(f(x) - f*(x))^2] = MSE(f) - MSE(f*)``. It tends to 0 as the predictor
      improves (rate ``1/m`` for a correctly selected refit).
    * ``reference="latent"``: against the oracle that sees the latents,
      ``eta = b0 + z^T beta``: ``E[(f(x) - eta)^2] = MSE(f) - sigma^2`` (the MSE
      minus the noise variance). It includes the irreducible
      ``beta^T Cov(z|x) beta`` of not observing ``z``.

    Binary outcome (``predictor.predict_proba``, positive class ``classes_[1]``):

    * ``loss="log"``: excess log-loss, ``E[KL(Bern(p*) || Bern(p_hat))]``;
    * ``loss="zero_one"``: excess 0-1 risk, ``E[|2 p* - 1| 1{decision differs}]``
      with the predictor's decision ``predict``;

    where ``p* = P(y = 1 | x) = E[sigmoid(eta) | x]`` (Gauss-Hermite quadrature
    over ``eta | x``) for ``reference="observed"`` and ``p* = sigmoid(eta)`` for
    ``"latent"``.

    For non-Gaussian latents (or correlated ones) the observed reference is the
    best *linear* predictor of ``eta`` from ``x`` (the posterior mean under the
    Gaussian model with the same second moments).

    Parameters
    ----------
    predictor : fitted HCLRegressor / HCLClassifier (or any estimator with
        ``predict`` / ``predict_proba`` on views)
    model : HierarchicalModel
    beta : dict of structure to array-like of shape (k_S,)
        True coefficients; structures not listed have ``beta_S = 0``.
    intercept : float
    kind : {"continuous", "binary"}, optional
        Inferred from ``predict_proba`` when omitted.
    reference : {"observed", "latent"}
    loss : {"log", "zero_one"}
        Binary outcomes only.
    n_samples : int
    random_state : None, int or Generator
    sample : tuple (views, latents), optional
        A pre-drawn sample of ``model`` (e.g. shared across predictors).
    return_std : bool
        Also return the Monte-Carlo standard error.

    Returns
    -------
    float, or (float, float) with ``return_std``
    """
    from ..model import HierarchicalModel

    if not isinstance(model, HierarchicalModel):
        raise TypeError(f"model: expected a HierarchicalModel, got {type(model).__name__}")
    if reference not in ("observed", "latent"):
        raise ValueError(f"reference: expected 'observed' or 'latent', got {reference!r}")
    if kind is None:
        kind = "binary" if hasattr(predictor, "predict_proba") else "continuous"
    if kind not in ("continuous", "binary"):
        raise ValueError(f"kind: expected 'continuous' or 'binary', got {kind!r}")
    if kind == "binary" and loss not in ("log", "zero_one"):
        raise ValueError(f"loss: expected 'log' or 'zero_one', got {loss!r}")
    if sample is None:
        views, latents = model.sample(n_samples, random_state=random_state)
    else:
        views, latents = sample
    eta = model.linear_predictor(latents, beta, intercept=intercept)
    if reference == "observed":
        h = model.hierarchy
        bvec = np.zeros(h.n_components)
        sl = h.component_slices()
        for key, b in beta.items():
            bvec[sl[h.structure(key)]] = np.asarray(b, dtype=np.float64).reshape(-1)
        mean, cov = _true_posterior(model, views)
        mu = intercept + mean @ bvec
        s2 = float(bvec @ cov @ bvec)
    if kind == "continuous":
        f = np.asarray(predictor.predict(views), dtype=np.float64)
        target = mu if reference == "observed" else eta
        per_row = (f - target) ** 2
    else:
        if reference == "observed":
            t, w = np.polynomial.hermite_e.hermegauss(64)
            w = w / np.sqrt(2.0 * np.pi)
            p_star = (0.5 * (1.0 + np.tanh(0.5 * (mu[:, None] + np.sqrt(s2) * t[None, :])))) @ w
        else:
            p_star = 0.5 * (1.0 + np.tanh(0.5 * eta))
        classes = getattr(predictor, "classes_", np.array([0, 1]))
        if loss == "log":
            proba = np.asarray(predictor.predict_proba(views), dtype=np.float64)
            q = np.clip(proba[:, 1], 1e-15, 1 - 1e-15)
            ps = np.clip(p_star, 1e-300, 1.0)
            qs = np.clip(1.0 - p_star, 1e-300, 1.0)
            per_row = p_star * (np.log(ps) - np.log(q)) + (1.0 - p_star) * (np.log(qs) - np.log(1.0 - q))
        else:
            decide = np.asarray(predictor.predict(views)) == classes[1]
            per_row = np.abs(2.0 * p_star - 1.0) * (decide != (p_star > 0.5))
    value = float(np.mean(per_row))
    if return_std:
        return value, float(np.std(per_row, ddof=1) / np.sqrt(per_row.size))
    return value
