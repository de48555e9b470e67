"""Group lasso solvers: squared loss in Gram form, logistic loss on data.

Squared loss (:func:`gram_group_lasso`). With a symmetric positive
semi-definite ``G`` (``p x p``) and a vector ``c`` (``p``)::

    min_b  F(b) = 1/2 b^T G b - c^T b + lam * sum_g w_g ||b_g||_2 .

With ``G = X^T X / n`` and ``c = X^T y / n`` this is
``1/(2n) ||y - X b||^2 + lam * sum_g w_g ||b_g||`` up to a constant; taking
``G`` as an argument (not ``X``) lets a caller pass a *corrected* Gram matrix,
e.g. a measurement-error-corrected one projected onto the PSD cone.
Solver: block coordinate descent, one proximal-gradient step per block with
step ``1 / L_g``, ``L_g = lambda_max(G_gg)`` (exact block minimisation when the
block is a multiple of the identity), keeping ``Gb = G b`` up to date, with
Anderson extrapolation of the epochs (accepted only when it lowers ``F``), as in
skglm: ill-conditioned ``G`` (projected corrected Gram matrices, ``m < p``)
otherwise needs thousands of epochs.

Logistic loss (:func:`logistic_group_lasso`). With labels ``y in {0, 1}``::

    min_{b0, b}  (1/n) sum_i [log(1 + exp(eta_i)) - y_i eta_i]
                 + lam * sum_g w_g ||b_g||_2,       eta = b0 + X b,

the intercept ``b0`` unpenalised (and fixed at 0 when ``fit_intercept`` is
false). Solver: accelerated proximal gradient (FISTA) with backtracking on the
step size and a function-value restart of the momentum.

Stopping rule (both): the largest KKT violation over groups,
``||grad_g + lam w_g b_g / ||b_g|| ||`` for ``b_g != 0`` and
``max(0, ||grad_g|| - lam w_g)`` for ``b_g = 0`` (and ``|d/db0|`` for the
intercept), below ``tol``.

Groups are CSR-style: the columns of group ``g`` are
``grp_indices[grp_ptr[g]:grp_ptr[g + 1]]``; ``weights[g] >= 0`` (zero leaves the
group unpenalised). The Python drivers validate, loop over epochs and check
convergence; the compiled functions receive only contiguous float64/int64
arrays and scalars and update their arrays in place. ``*_reference`` functions
run the same algorithms in plain NumPy for the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "make_groups",
    "group_lipschitz",
    "gram_group_lasso",
    "gram_group_lasso_path",
    "gram_group_lasso_reference",
    "gram_objective",
    "gram_kkt_violation",
    "gram_lambda_max",
    "logistic_group_lasso",
    "logistic_group_lasso_reference",
    "logistic_objective",
    "logistic_kkt_violation",
    "logistic_lambda_max",
]


# ----------------------------------------------------------------- helpers
def make_groups(sizes):
    """CSR group arrays for consecutive groups of the given sizes.

    Returns
    -------
    grp_ptr : ndarray of int64, shape (n_groups + 1,)
    grp_indices : ndarray of int64, shape (sum(sizes),)
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or np.any(sizes < 1):
        raise ValueError(f"sizes: expected positive group sizes, got {sizes!r}")
    grp_ptr = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=grp_ptr[1:])
    return grp_ptr, np.arange(grp_ptr[-1], dtype=np.int64)


def _check_groups(grp_ptr, grp_indices, weights, p):
    grp_ptr = np.ascontiguousarray(grp_ptr, dtype=np.int64)
    grp_indices = np.ascontiguousarray(grp_indices, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    n_groups = grp_ptr.size - 1
    if n_groups < 1 or grp_ptr[0] != 0 or np.any(np.diff(grp_ptr) < 1) or grp_ptr[-1] != grp_indices.size:
        raise ValueError(
            "grp_ptr: expected increasing offsets starting at 0 and ending at len(grp_indices), "
            f"got {grp_ptr!r}"
        )
    if np.any(grp_indices < 0) or np.any(grp_indices >= p) or np.unique(grp_indices).size != grp_indices.size:
        raise ValueError(f"grp_indices: expected distinct column indices in [0, {p}), got {grp_indices!r}")
    if weights.shape != (n_groups,) or np.any(~np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"weights: expected {n_groups} non-negative finite weights, got {weights!r}")
    return grp_ptr, grp_indices, weights


def group_lipschitz(G, grp_ptr, grp_indices):
    """``L_g = lambda_max(G_gg)`` for each group (NumPy; once per problem)."""
    G = np.asarray(G, dtype=np.float64)
    out = np.empty(grp_ptr.size - 1)
    for g in range(out.size):
        idx = grp_indices[grp_ptr[g]:grp_ptr[g + 1]]
        out[g] = max(float(np.linalg.eigvalsh(G[np.ix_(idx, idx)])[-1]), 0.0)
    return out


# --------------------------------------------------- squared loss: kernels
@njit(cache=True)
def _gram_epoch(G, c, beta, Gb, grp_ptr, grp_indices, weights, lipschitz, lam):
    """One BCD epoch over all groups; updates ``beta`` and ``Gb = G beta`` in place."""
    n_groups = grp_ptr.shape[0] - 1
    p = G.shape[0]
    for g in range(n_groups):
        L = lipschitz[g]
        if L <= 0.0:
            continue  # a zero block: its coefficients stay where they are (zero)
        start = grp_ptr[g]
        size = grp_ptr[g + 1] - start
        v = np.empty(size)
        norm = 0.0
        for j in range(size):
            k = grp_indices[start + j]
            v[j] = beta[k] - (Gb[k] - c[k]) / L
            norm += v[j] * v[j]
        norm = np.sqrt(norm)
        thr = lam * weights[g] / L
        scale = 0.0
        if norm > thr:
            scale = 1.0 - thr / norm
        for j in range(size):
            k = grp_indices[start + j]
            delta = scale * v[j] - beta[k]
            if delta != 0.0:
                beta[k] += delta
                for i in range(p):
                    Gb[i] += G[i, k] * delta


@njit(cache=True)
def _group_violation(grad, beta, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation over groups given the smooth gradient."""
    n_groups = grp_ptr.shape[0] - 1
    worst = 0.0
    for g in range(n_groups):
        start = grp_ptr[g]
        stop = grp_ptr[g + 1]
        bnorm = 0.0
        gnorm = 0.0
        for j in range(start, stop):
            k = grp_indices[j]
            bnorm += beta[k] * beta[k]
            gnorm += grad[k] * grad[k]
        bnorm = np.sqrt(bnorm)
        gnorm = np.sqrt(gnorm)
        pen = lam * weights[g]
        if bnorm == 0.0:
            viol = gnorm - pen
            if viol < 0.0:
                viol = 0.0
        else:
            viol = 0.0
            for j in range(start, stop):
                k = grp_indices[j]
                d = grad[k] + pen * beta[k] / bnorm
                viol += d * d
            viol = np.sqrt(viol)
        if viol > worst:
            worst = viol
    return worst


@njit(cache=True)
def _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam):
    return _group_violation(Gb - c, beta, grp_ptr, grp_indices, weights, lam)


@njit(cache=True)
def _penalty(beta, grp_ptr, grp_indices, weights):
    total = 0.0
    for g in range(grp_ptr.shape[0] - 1):
        s = 0.0
        for j in range(grp_ptr[g], grp_ptr[g + 1]):
            s += beta[grp_indices[j]] ** 2
        total += weights[g] * np.sqrt(s)
    return total


def _penalty_numpy(beta, grp_ptr, grp_indices, weights):
    return float(
        sum(
            weights[g] * np.linalg.norm(beta[grp_indices[grp_ptr[g]:grp_ptr[g + 1]]])
            for g in range(grp_ptr.size - 1)
        )
    )


def gram_objective(G, c, beta, grp_ptr, grp_indices, weights, lam):
    """``F(b) = 1/2 b^T G b - c^T b + lam sum_g w_g ||b_g||``."""
    beta = np.asarray(beta, dtype=np.float64)
    return float(0.5 * beta @ G @ beta - c @ beta) + lam * _penalty_numpy(beta, grp_ptr, grp_indices, weights)


def gram_kkt_violation(G, c, beta, grp_ptr, grp_indices, weights, lam):
    """Largest KKT violation of ``beta`` (0 at the optimum)."""
    beta = np.ascontiguousarray(beta, dtype=np.float64)
    Gb = np.ascontiguousarray(G @ beta)
    return float(_gram_violation(np.ascontiguousarray(c, dtype=np.float64), beta, Gb,
                                 np.ascontiguousarray(grp_ptr, dtype=np.int64),
                                 np.ascontiguousarray(grp_indices, dtype=np.int64),
                                 np.ascontiguousarray(weights, dtype=np.float64), float(lam)))


def gram_lambda_max(c, grp_ptr, grp_indices, weights):
    """Smallest ``lam`` for which ``b = 0`` is optimal: ``max_g ||c_g|| / w_g``.

    Groups with zero weight are unpenalised, so zero is optimal for no ``lam``
    unless their ``c_g`` vanishes; they are rejected here.
    """
    out = 0.0
    for g in range(grp_ptr.size - 1):
        if weights[g] <= 0:
            raise ValueError("gram_lambda_max: every group needs a positive weight")
        out = max(out, float(np.linalg.norm(c[grp_indices[grp_ptr[g]:grp_ptr[g + 1]]])) / weights[g])
    return out


def _check_gram(G, c):
    G = np.ascontiguousarray(G, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G: expected a square matrix, got shape {G.shape}")
    if c.shape != (G.shape[0],):
        raise ValueError(f"c: expected shape ({G.shape[0]},), got {c.shape}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(c))):
        raise ValueError("G, c: expected finite values")
    if not np.allclose(G, G.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(G).max(initial=0.0)))):
        raise ValueError("G: expected a symmetric matrix")
    return G, c


def _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, lam, tol, max_epochs, anderson):
    """Epoch loop with Anderson extrapolation (as in skglm); updates ``beta`` in place.

    Every ``anderson`` epochs the last ``anderson + 1`` iterates are combined
    with the weights that minimise the norm of the combined differences; the
    extrapolated point replaces the iterate only if it lowers the objective,
    so the objective still never increases.
    """
    Gb = np.ascontiguousarray(G @ beta)
    violation = _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam)
    history = np.empty((anderson + 1, beta.size)) if anderson > 0 else None
    n_hist = 0
    epoch = 0
    while violation > tol and epoch < max_epochs:
        _gram_epoch(G, c, beta, Gb, grp_ptr, grp_indices, weights, lipschitz, lam)
        epoch += 1
        if history is not None:
            history[n_hist] = beta
            n_hist += 1
            if n_hist == anderson + 1:
                n_hist = 0
                U = np.diff(history, axis=0)
                try:
                    z = np.linalg.solve(U @ U.T, np.ones(anderson))
                except np.linalg.LinAlgError:
                    z = None
                if z is not None and np.isfinite(z).all() and z.sum() != 0:
                    acc = (z / z.sum()) @ history[1:]
                    f_acc = 0.5 * acc @ G @ acc - c @ acc + lam * _penalty(acc, grp_ptr, grp_indices, weights)
                    f_cur = 0.5 * beta @ Gb - c @ beta + lam * _penalty(beta, grp_ptr, grp_indices, weights)
                    if f_acc < f_cur:
                        beta[:] = acc
                        Gb = np.ascontiguousarray(G @ beta)
        if epoch % 10 == 0:  # keep Gb exact: rank-one updates accumulate rounding
            Gb = np.ascontiguousarray(G @ beta)
        violation = _gram_violation(c, beta, Gb, grp_ptr, grp_indices, weights, lam)
    return epoch, float(violation)


def gram_group_lasso(G, c, grp_ptr, grp_indices, weights, lam, *, beta0=None, lipschitz=None,
                     tol=1e-10, max_epochs=100_000, anderson=5):
    """Solve the squared-loss group lasso in Gram form by block coordinate descent.

    Parameters
    ----------
    G : ndarray of shape (p, p)
        Symmetric positive semi-definite (the solver converges to a minimiser
        only then; an indefinite ``G`` must be projected first).
    c : ndarray of shape (p,)
    grp_ptr, grp_indices : ndarray of int64
        CSR group description (see :func:`make_groups`).
    weights : ndarray of shape (n_groups,)
    lam : float
        Penalty level ``>= 0``.
    beta0 : ndarray of shape (p,), optional
        Warm start (copied).
    lipschitz : ndarray of shape (n_groups,), optional
        Precomputed :func:`group_lipschitz` (reused along a path).
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_epochs : int
    anderson : int
        Anderson extrapolation every ``anderson`` epochs (0: plain BCD, the
        iterates of :func:`gram_group_lasso_reference`).

    Returns
    -------
    beta : ndarray of shape (p,)
    n_epochs : int
    violation : float
        Final KKT violation; above ``tol`` when the epoch budget ran out (the
        caller decides whether to warn: kernels import nothing from the package).
    """
    G, c = _check_gram(G, c)
    p = G.shape[0]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    lipschitz = group_lipschitz(G, grp_ptr, grp_indices) if lipschitz is None else np.ascontiguousarray(lipschitz, dtype=np.float64)
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True)
    epoch, violation = _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, float(lam),
                                  tol, max_epochs, int(anderson))
    return beta, epoch, violation


def gram_group_lasso_path(G, c, grp_ptr, grp_indices, weights, lambdas, *, tol=1e-10, max_epochs=100_000,
                          anderson=5):
    """:func:`gram_group_lasso` along a path of penalty levels, warm-started.

    Validates once and reuses the block Lipschitz constants; ``lambdas`` are
    solved in the order given (decreasing is the efficient order).

    Returns
    -------
    coefs : ndarray of shape (n_lambdas, p)
    n_epochs : ndarray of int64, shape (n_lambdas,)
    violations : ndarray of shape (n_lambdas,)
    """
    G, c = _check_gram(G, c)
    p = G.shape[0]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    lambdas = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise ValueError(f"lambdas: expected non-negative numbers, got {lambdas!r}")
    lipschitz = group_lipschitz(G, grp_ptr, grp_indices)
    coefs = np.zeros((lambdas.size, p))
    epochs = np.zeros(lambdas.size, dtype=np.int64)
    viols = np.zeros(lambdas.size)
    beta = np.zeros(p)
    for i, lam in enumerate(lambdas):
        epochs[i], viols[i] = _bcd_solve(G, c, beta, grp_ptr, grp_indices, weights, lipschitz, float(lam),
                                         tol, max_epochs, int(anderson))
        coefs[i] = beta
    return coefs, epochs, viols


def gram_group_lasso_reference(G, c, grp_ptr, grp_indices, weights, lam, *, beta0=None,
                               tol=1e-10, max_epochs=100_000):
    """Plain-NumPy block coordinate descent: the iterates of :func:`gram_group_lasso` with ``anderson=0``."""
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    p = G.shape[0]
    groups = [np.asarray(grp_indices[grp_ptr[g]:grp_ptr[g + 1]]) for g in range(len(grp_ptr) - 1)]
    L = [max(float(np.linalg.eigvalsh(G[np.ix_(idx, idx)])[-1]), 0.0) for idx in groups]
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64)

    def violation(b):
        grad = G @ b - c
        out = 0.0
        for g, idx in enumerate(groups):
            nb, pen = np.linalg.norm(b[idx]), lam * weights[g]
            v = max(np.linalg.norm(grad[idx]) - pen, 0.0) if nb == 0 else np.linalg.norm(grad[idx] + pen * b[idx] / nb)
            out = max(out, v)
        return out

    epoch = 0
    while violation(beta) > tol and epoch < max_epochs:
        for g, idx in enumerate(groups):
            if L[g] <= 0:
                continue
            v = beta[idx] - (G[idx] @ beta - c[idx]) / L[g]
            nv, thr = np.linalg.norm(v), lam * weights[g] / L[g]
            beta[idx] = (1.0 - thr / nv) * v if nv > thr else 0.0
        epoch += 1
    return beta, epoch, float(violation(beta))


# ------------------------------------------------ logistic loss: kernels
@njit(cache=True)
def _log1pexp(t):
    if t > 0.0:
        return t + np.log1p(np.exp(-t))
    return np.log1p(np.exp(t))


@njit(cache=True)
def _sigmoid(t):
    if t >= 0.0:
        return 1.0 / (1.0 + np.exp(-t))
    e = np.exp(t)
    return e / (1.0 + e)


@njit(cache=True)
def _logistic_loss_grad(X, y, b0, beta, grad, need_grad):
    """Mean logistic loss at ``(b0, beta)``; fills ``grad`` (p,) and returns d/db0 too."""
    n, p = X.shape
    loss = 0.0
    g0 = 0.0
    if need_grad:
        for k in range(p):
            grad[k] = 0.0
    for i in range(n):
        eta = b0
        for k in range(p):
            eta += X[i, k] * beta[k]
        loss += _log1pexp(eta) - y[i] * eta
        if need_grad:
            r = _sigmoid(eta) - y[i]
            g0 += r
            for k in range(p):
                grad[k] += r * X[i, k]
    if need_grad:
        for k in range(p):
            grad[k] /= n
    return loss / n, g0 / n


@njit(cache=True)
def _group_prox(v, out, grp_ptr, grp_indices, weights, thr):
    """``out = prox_{thr * sum_g w_g ||.||}(v)`` (group soft-thresholding)."""
    for g in range(grp_ptr.shape[0] - 1):
        start = grp_ptr[g]
        stop = grp_ptr[g + 1]
        norm = 0.0
        for j in range(start, stop):
            norm += v[grp_indices[j]] ** 2
        norm = np.sqrt(norm)
        t = thr * weights[g]
        scale = 0.0
        if norm > t:
            scale = 1.0 - t / norm
        for j in range(start, stop):
            k = grp_indices[j]
            out[k] = scale * v[k]


@njit(cache=True)
def _logistic_fista_step(X, y, grp_ptr, grp_indices, weights, lam, fit_intercept,
                         beta, beta_prev, b0s, state, grad, work_y, work_new):
    """One FISTA iteration with backtracking, in place.

    ``b0s = [b0, b0_prev]``; ``state = [t, L, F(beta)]``. On return ``beta`` holds
    the new iterate, ``beta_prev`` the old one, ``state`` is updated.
    """
    p = beta.shape[0]
    t, L, F_old = state[0], state[1], state[2]
    t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
    mom = (t - 1.0) / t_new
    for k in range(p):
        work_y[k] = beta[k] + mom * (beta[k] - beta_prev[k])
    y0 = b0s[0] + mom * (b0s[0] - b0s[1])
    f_y, g0 = _logistic_loss_grad(X, y, y0, work_y, grad, True)
    if not fit_intercept:
        g0 = 0.0
    v = np.empty(p)
    while True:
        for k in range(p):
            v[k] = work_y[k] - grad[k] / L
        _group_prox(v, work_new, grp_ptr, grp_indices, weights, lam / L)
        new0 = y0 - g0 / L
        f_new, _ = _logistic_loss_grad(X, y, new0, work_new, grad, False)
        # sufficient decrease: f(new) <= f(y) + <grad, new - y> + L/2 ||new - y||^2
        lin = g0 * (new0 - y0)
        quad = (new0 - y0) ** 2
        for k in range(p):
            d = work_new[k] - work_y[k]
            lin += grad[k] * d
            quad += d * d
        if f_new <= f_y + lin + 0.5 * L * quad + 1e-12 * (1.0 + abs(f_y)) or L > 1e12:
            break
        L *= 2.0
    F_new = f_new + lam * _penalty(work_new, grp_ptr, grp_indices, weights)
    if F_new > F_old and t > 1.0:
        # function-value restart: drop the momentum, keep the previous iterate
        # (a momentum-free step is always accepted: it descends in exact
        # arithmetic, and near the optimum F differences are below round-off)
        state[0] = 1.0
        state[1] = L
        for k in range(p):
            beta_prev[k] = beta[k]
        b0s[1] = b0s[0]
        return
    for k in range(p):
        beta_prev[k] = beta[k]
        beta[k] = work_new[k]
    b0s[1] = b0s[0]
    b0s[0] = new0
    state[0] = t_new
    state[1] = L
    state[2] = F_new


@njit(cache=True)
def _logistic_violation(X, y, b0, beta, grp_ptr, grp_indices, weights, lam, fit_intercept):
    grad = np.empty(beta.shape[0])
    _, g0 = _logistic_loss_grad(X, y, b0, beta, grad, True)
    viol = _group_violation(grad, beta, grp_ptr, grp_indices, weights, lam)
    if fit_intercept and abs(g0) > viol:
        viol = abs(g0)
    return viol


def _check_logistic(X, y):
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X, y: expected shapes (n, p) and (n,), got {X.shape} and {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y: expected labels in {0, 1}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: expected finite values")
    return X, y


def logistic_objective(X, y, intercept, beta, grp_ptr, grp_indices, weights, lam):
    """Mean logistic loss plus the group penalty."""
    eta = intercept + X @ beta
    loss = float(np.mean(np.logaddexp(0.0, eta) - y * eta))
    return loss + lam * _penalty_numpy(np.asarray(beta, dtype=np.float64), grp_ptr, grp_indices, weights)


def logistic_kkt_violation(X, y, intercept, beta, grp_ptr, grp_indices, weights, lam, fit_intercept=True):
    """Largest KKT violation of ``(intercept, beta)`` (0 at the optimum)."""
    X, y = _check_logistic(X, y)
    return float(_logistic_violation(X, y, float(intercept), np.ascontiguousarray(beta, dtype=np.float64),
                                     np.ascontiguousarray(grp_ptr, dtype=np.int64),
                                     np.ascontiguousarray(grp_indices, dtype=np.int64),
                                     np.ascontiguousarray(weights, dtype=np.float64), float(lam),
                                     bool(fit_intercept)))


def logistic_lambda_max(X, y, grp_ptr, grp_indices, weights, fit_intercept=True):
    """Smallest ``lam`` for which ``beta = 0`` (intercept at the log-odds of ``mean y``) is optimal."""
    X, y = _check_logistic(X, y)
    ybar = float(np.mean(y)) if fit_intercept else 0.5
    grad = X.T @ (ybar - y) / X.shape[0]
    out = 0.0
    for g in range(grp_ptr.size - 1):
        if weights[g] <= 0:
            raise ValueError("logistic_lambda_max: every group needs a positive weight")
        out = max(out, float(np.linalg.norm(grad[grp_indices[grp_ptr[g]:grp_ptr[g + 1]]])) / weights[g])
    return out


def _initial_step(X, fit_intercept):
    # a lower guess of the Lipschitz constant sigma_max([1 X])^2 / (4n); backtracking raises it
    n = X.shape[0]
    col = float(np.max(np.sum(X * X, axis=0), initial=0.0)) / n
    return max(0.25 * max(col, 1.0 if fit_intercept else 0.0), 1e-8)


def _start_intercept(y, fit_intercept):
    if not fit_intercept:
        return 0.0
    ybar = float(np.clip(np.mean(y), 1e-12, 1 - 1e-12))
    return float(np.log(ybar / (1.0 - ybar)))


def logistic_group_lasso(X, y, grp_ptr, grp_indices, weights, lam, *, fit_intercept=True,
                         beta0=None, intercept0=None, tol=1e-8, max_iter=100_000):
    """Solve the logistic group lasso by FISTA with backtracking.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    y : ndarray of shape (n,), values in {0, 1}
    grp_ptr, grp_indices, weights, lam
        As in :func:`gram_group_lasso`.
    fit_intercept : bool
    beta0, intercept0 : warm start, optional
    tol : float
        Stop when the largest KKT violation is below ``tol``.
    max_iter : int

    Returns
    -------
    intercept : float
    beta : ndarray of shape (p,)
    n_iter : int
    violation : float
        Final KKT violation (above ``tol`` when the budget ran out).
    """
    X, y = _check_logistic(X, y)
    p = X.shape[1]
    grp_ptr, grp_indices, weights = _check_groups(grp_ptr, grp_indices, weights, p)
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: expected a non-negative number, got {lam!r}")
    beta = np.zeros(p) if beta0 is None else np.array(beta0, dtype=np.float64, copy=True)
    b0 = _start_intercept(y, fit_intercept) if intercept0 is None else float(intercept0)
    if not fit_intercept:
        b0 = 0.0
    beta_prev = beta.copy()
    b0s = np.array([b0, b0])
    F0 = logistic_objective(X, y, b0, beta, grp_ptr, grp_indices, weights, lam)
    state = np.array([1.0, _initial_step(X, fit_intercept), F0])
    grad, work_y, work_new = np.empty(p), np.empty(p), np.empty(p)
    fi = bool(fit_intercept)
    violation = _logistic_violation(X, y, b0s[0], beta, grp_ptr, grp_indices, weights, lam, fi)
    it = 0
    while violation > tol and it < max_iter:
        _logistic_fista_step(X, y, grp_ptr, grp_indices, weights, lam, fi,
                             beta, beta_prev, b0s, state, grad, work_y, work_new)
        it += 1
        if it % 5 == 0 or state[0] == 1.0:
            violation = _logistic_violation(X, y, b0s[0], beta, grp_ptr, grp_indices, weights, lam, fi)
    return float(b0s[0]), beta, it, float(violation)


def logistic_group_lasso_reference(X, y, grp_ptr, grp_indices, weights, lam, *, fit_intercept=True,
                                   tol=1e-8, max_iter=100_000):
    """Plain-NumPy FISTA with backtracking and restart, same iterates as :func:`logistic_group_lasso`."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = X.shape
    groups = [np.asarray(grp_indices[grp_ptr[g]:grp_ptr[g + 1]]) for g in range(len(grp_ptr) - 1)]

    def loss(b0, b):
        eta = b0 + X @ b
        return float(np.mean(np.logaddexp(0.0, eta) - y * eta))

    def gradient(b0, b):
        r = 1.0 / (1.0 + np.exp(-(b0 + X @ b))) - y
        return float(np.mean(r)) if fit_intercept else 0.0, X.T @ r / n

    def penalty(b):
        return sum(weights[g] * np.linalg.norm(b[idx]) for g, idx in enumerate(groups))

    def prox(v, thr):
        out = np.zeros_like(v)
        for g, idx in enumerate(groups):
            nv, t = np.linalg.norm(v[idx]), thr * weights[g]
            out[idx] = (1.0 - t / nv) * v[idx] if nv > t else 0.0
        return out

    def violation(b0, b):
        g0, g = gradient(b0, b)
        out = abs(g0)
        for k, idx in enumerate(groups):
            nb, pen = np.linalg.norm(b[idx]), lam * weights[k]
            v = max(np.linalg.norm(g[idx]) - pen, 0.0) if nb == 0 else np.linalg.norm(g[idx] + pen * b[idx] / nb)
            out = max(out, v)
        return out

    b0 = _start_intercept(y, fit_intercept)
    beta, beta_prev, b0_prev = np.zeros(p), np.zeros(p), b0
    t, L = 1.0, _initial_step(X, fit_intercept)
    F_old = loss(b0, beta) + lam * penalty(beta)
    it = 0
    viol = violation(b0, beta)
    while viol > tol and it < max_iter:
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_new
        wy, y0 = beta + mom * (beta - beta_prev), b0 + mom * (b0 - b0_prev)
        f_y = loss(y0, wy)
        g0, g = gradient(y0, wy)
        while True:
            new = prox(wy - g / L, lam / L)
            new0 = y0 - g0 / L
            f_new = loss(new0, new)
            quad = (new0 - y0) ** 2 + np.sum((new - wy) ** 2)
            lin = g0 * (new0 - y0) + g @ (new - wy)
            if f_new <= f_y + lin + 0.5 * L * quad + 1e-12 * (1.0 + abs(f_y)) or L > 1e12:
                break
            L *= 2.0
        F_new = f_new + lam * penalty(new)
        if F_new > F_old and t > 1.0:
            t, beta_prev, b0_prev = 1.0, beta.copy(), b0
        else:
            beta_prev, b0_prev = beta, b0
            beta, b0, t, F_old = new, new0, t_new, F_new
        it += 1
        if it % 5 == 0 or t == 1.0:
            viol = violation(b0, beta)
    return b0, beta, it, float(viol)

