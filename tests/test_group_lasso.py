"""Group-lasso kernels: NumPy references, cvxpy certificates and identities."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from hclstat.kernels import group_lasso as gl

SIZES = [2, 3, 1, 2, 4]


@pytest.fixture
def problem(rng):
    """A correlated design with 5 groups, 2 of them active."""
    n, p = 200, sum(SIZES)
    X = rng.standard_normal((n, p))
    X[:, 3] += X[:, 2]  # correlation across groups
    X -= X.mean(axis=0)
    b = np.zeros(p)
    b[:5] = [1.0, -1.0, 0.5, 0.3, -0.4]
    y = X @ b + rng.standard_normal(n)
    y -= y.mean()
    grp_ptr, grp_indices = gl.make_groups(SIZES)
    w = np.sqrt(np.asarray(SIZES, dtype=float))
    return X, y, grp_ptr, grp_indices, w


@pytest.fixture
def binary_problem(rng):
    n, p = 300, sum(SIZES)
    X = rng.standard_normal((n, p))
    X[:, 3] += X[:, 2]
    b = np.zeros(p)
    b[:5] = [1.0, -1.0, 0.5, 0.3, -0.4]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.3 + X @ b)))).astype(float)
    grp_ptr, grp_indices = gl.make_groups(SIZES)
    return X, y, grp_ptr, grp_indices, np.sqrt(np.asarray(SIZES, dtype=float))


def _groups(grp_ptr, grp_indices):
    return [grp_indices[grp_ptr[g]:grp_ptr[g + 1]] for g in range(grp_ptr.size - 1)]


def _kkt(grad, beta, groups, w, lam):
    """Independent KKT residual: stationarity on active groups, dual feasibility on zero ones."""
    worst = 0.0
    for g, idx in enumerate(groups):
        nb = np.linalg.norm(beta[idx])
        if nb > 0:
            worst = max(worst, np.linalg.norm(grad[idx] + lam * w[g] * beta[idx] / nb))
        else:
            worst = max(worst, np.linalg.norm(grad[idx]) - lam * w[g])
    return worst


def _gram_cvxpy(G, c, groups, w, lam):
    b = cp.Variable(G.shape[0])
    pen = sum(w[g] * cp.norm(b[idx], 2) for g, idx in enumerate(groups))
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(b, cp.psd_wrap(G)) - c @ b + lam * pen))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return b.value, prob.value


def _logistic_cvxpy(X, y, groups, w, lam, fit_intercept=True):
    b = cp.Variable(X.shape[1])
    b0 = cp.Variable() if fit_intercept else 0.0
    eta = b0 + X @ b
    pen = sum(w[g] * cp.norm(b[idx], 2) for g, idx in enumerate(groups))
    obj = cp.sum(cp.logistic(eta) - cp.multiply(y, eta)) / X.shape[0] + lam * pen
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL)
    return prob.value


# ---------------------------------------------------------------- squared
@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.01])
def test_gram_matches_numpy_reference(problem, ratio):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    lam = ratio * gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    b, ep, viol = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lam, tol=1e-12, anderson=0)
    b_ref, ep_ref, _ = gl.gram_group_lasso_reference(G, c, grp_ptr, grp_indices, w, lam, tol=1e-12)
    assert ep == ep_ref  # same algorithm, same iterates
    assert_allclose(b, b_ref, rtol=0, atol=1e-10)
    assert viol <= 1e-12


@pytest.mark.parametrize("ratio", [0.7, 0.2, 0.02])
def test_gram_certified_by_cvxpy(problem, ratio):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    groups = _groups(grp_ptr, grp_indices)
    lam = ratio * gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lam, tol=1e-10)
    b_cvx, f_cvx = _gram_cvxpy(G, c, groups, w, lam)
    f = gl.gram_objective(G, c, b, grp_ptr, grp_indices, w, lam)
    assert abs(f - f_cvx) <= 1e-6 * max(1.0, abs(f_cvx))
    assert f <= f_cvx + 1e-9  # never worse than the interior-point solution
    assert _kkt(G @ b - c, b, groups, w, lam) <= 1e-6
    assert_allclose(b, b_cvx, atol=1e-5)
    active_cvx = [np.linalg.norm(b_cvx[idx]) > 1e-6 for idx in groups]
    active = [np.linalg.norm(b[idx]) > 0 for idx in groups]
    assert active == active_cvx


def test_gram_zero_at_and_above_lambda_max(problem):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    lmax = gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    for lam in (lmax, 2 * lmax):
        b, ep, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lam)
        assert np.all(b == 0.0) and ep == 0
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, 0.99 * lmax)
    assert np.count_nonzero(b) > 0


def test_one_group_unpenalised_is_least_squares(problem):
    X, y, *_ = problem
    n, p = X.shape
    G, c = X.T @ X / n, X.T @ y / n
    grp_ptr, grp_indices = gl.make_groups([p])
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, np.ones(1), 0.0, tol=1e-12)
    assert_allclose(b, np.linalg.lstsq(X, y, rcond=None)[0], rtol=0, atol=1e-9)


def test_one_group_penalised_is_ridge_with_implied_level(problem):
    # stationarity of one group: (G + mu I) b = c with mu = lam w / ||b||
    X, y, *_ = problem
    n, p = X.shape
    G, c = X.T @ X / n, X.T @ y / n
    grp_ptr, grp_indices = gl.make_groups([p])
    lam = 0.3 * gl.gram_lambda_max(c, grp_ptr, grp_indices, np.ones(1))
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, np.ones(1), lam, tol=1e-12)
    mu = lam / np.linalg.norm(b)
    assert_allclose(b, np.linalg.solve(G + mu * np.eye(p), c), rtol=0, atol=1e-10)


def test_singleton_groups_reduce_to_lasso(problem):
    from sklearn.linear_model import Lasso

    X, y, *_ = problem
    n, p = X.shape
    G, c = X.T @ X / n, X.T @ y / n
    grp_ptr, grp_indices = gl.make_groups([1] * p)
    alpha = 0.05
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, np.ones(p), alpha, tol=1e-12)
    ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    assert_allclose(b, ref, rtol=0, atol=1e-8)


def test_gram_objective_never_increases_over_epochs(problem):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    lam = 0.05 * gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    L = gl.group_lipschitz(G, grp_ptr, grp_indices)
    beta, Gb = np.zeros(G.shape[0]), np.zeros(G.shape[0])
    work = np.empty((max(SIZES), 1))
    f_prev = gl.gram_objective(G, c, beta, grp_ptr, grp_indices, w, lam)
    for _ in range(30):
        gl.bcd_epoch(G, c[None, :], beta[None, :], Gb[None, :], grp_ptr, grp_indices, w, L, lam, work)
        f = gl.gram_objective(G, c, beta, grp_ptr, grp_indices, w, lam)
        assert f <= f_prev + 1e-14
        f_prev = f
    assert_allclose(Gb, G @ beta, atol=1e-12)


def test_anderson_acceleration_on_ill_conditioned_gram(rng):
    # m < p: a rank-deficient Gram, where plain BCD crawls at small lambda
    X = rng.standard_normal((8, 12))
    y = rng.standard_normal(8)
    G, c = X.T @ X / 8 + 1e-4 * np.eye(12), X.T @ y / 8
    grp_ptr, grp_indices = gl.make_groups([2] * 6)
    w = np.sqrt(2.0) * np.ones(6)
    lam = 1e-3 * gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    b, ep, viol = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lam, tol=1e-10)
    b0, ep0, viol0 = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lam, tol=1e-10, anderson=0,
                                         max_epochs=200_000)
    assert viol <= 1e-10 and viol0 <= 1e-10 and ep < ep0 / 5
    assert_allclose(b, b0, atol=1e-6)


def test_gram_path_equals_single_solves(problem):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    lams = gl.gram_lambda_max(c, grp_ptr, grp_indices, w) * np.geomspace(1, 1e-3, 12)
    coefs, epochs, viols = gl.gram_group_lasso_path(G, c, grp_ptr, grp_indices, w, lams, tol=1e-12)
    assert coefs.shape == (12, G.shape[0]) and np.all(viols <= 1e-12)
    for i in (0, 5, 11):
        b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, lams[i], tol=1e-12)
        assert_allclose(coefs[i], b, atol=1e-9)


def test_unpenalised_group_is_free(problem):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    w0 = w.copy()
    w0[0] = 0.0
    lam = 10.0 * gl.gram_lambda_max(c, grp_ptr, grp_indices, w)
    b, _, _ = gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w0, lam, tol=1e-12)
    idx = grp_indices[grp_ptr[0]:grp_ptr[1]]
    assert np.count_nonzero(b) == idx.size
    assert_allclose(b[idx], np.linalg.solve(G[np.ix_(idx, idx)], c[idx]), atol=1e-10)


# --------------------------------------------------------------- logistic
@pytest.mark.parametrize("ratio", [0.5, 0.05])
def test_logistic_matches_numpy_reference(binary_problem, ratio):
    X, y, grp_ptr, grp_indices, w = binary_problem
    lam = ratio * gl.logistic_lambda_max(X, y, grp_ptr, grp_indices, w)
    b0, b, _, viol = gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, w, lam, tol=1e-12)
    r0, rb, _, rviol = gl.logistic_group_lasso_reference(X, y, grp_ptr, grp_indices, w, lam, tol=1e-12)
    assert viol <= 1e-12 and rviol <= 1e-12
    # the iterates differ by summation order only; both converge to the same optimum
    assert_allclose(b, rb, rtol=0, atol=1e-9)
    assert abs(b0 - r0) <= 1e-9


@pytest.mark.parametrize("ratio", [0.6, 0.15, 0.01])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_logistic_certified_by_cvxpy(binary_problem, ratio, fit_intercept):
    X, y, grp_ptr, grp_indices, w = binary_problem
    groups = _groups(grp_ptr, grp_indices)
    lam = ratio * gl.logistic_lambda_max(X, y, grp_ptr, grp_indices, w, fit_intercept=fit_intercept)
    b0, b, _, _ = gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, w, lam,
                                          fit_intercept=fit_intercept, tol=1e-10)
    if not fit_intercept:
        assert b0 == 0.0
    f_cvx = _logistic_cvxpy(X, y, groups, w, lam, fit_intercept)
    f = gl.logistic_objective(X, y, b0, b, grp_ptr, grp_indices, w, lam)
    assert abs(f - f_cvx) <= 1e-6
    assert f <= f_cvx + 1e-9
    r = 1 / (1 + np.exp(-(b0 + X @ b))) - y
    grad = X.T @ r / len(y)
    assert _kkt(grad, b, groups, w, lam) <= 1e-6
    if fit_intercept:
        assert abs(r.mean()) <= 1e-6


def test_logistic_zero_at_lambda_max(binary_problem):
    X, y, grp_ptr, grp_indices, w = binary_problem
    lmax = gl.logistic_lambda_max(X, y, grp_ptr, grp_indices, w)
    b0, b, _, _ = gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, w, lmax)
    assert np.all(b == 0.0)
    assert_allclose(b0, np.log(y.mean() / (1 - y.mean())), atol=1e-12)
    _, b, _, _ = gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, w, 0.99 * lmax)
    assert np.count_nonzero(b) > 0


def test_logistic_unpenalised_is_maximum_likelihood(binary_problem):
    import statsmodels.api as sm

    X, y, *_ = binary_problem
    grp_ptr, grp_indices = gl.make_groups([X.shape[1]])
    b0, b, _, _ = gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, np.ones(1), 0.0, tol=1e-12)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12).params
    assert_allclose(np.r_[b0, b], ref, atol=1e-8)


# ------------------------------------------------------------- validation
def test_kernel_input_errors(problem):
    X, y, grp_ptr, grp_indices, w = problem
    G, c = X.T @ X / len(y), X.T @ y / len(y)
    with pytest.raises(ValueError, match="grp_ptr: expected increasing offsets"):
        gl.gram_group_lasso(G, c, np.array([0, 3, 2]), grp_indices, w[:2], 0.1)
    with pytest.raises(ValueError, match="grp_indices: expected distinct column indices"):
        gl.gram_group_lasso(G, c, grp_ptr, np.zeros_like(grp_indices), w, 0.1)
    with pytest.raises(ValueError, match="weights: expected 5 non-negative"):
        gl.gram_group_lasso(G, c, grp_ptr, grp_indices, -w, 0.1)
    with pytest.raises(ValueError, match="G: expected a symmetric matrix"):
        gl.gram_group_lasso(G + np.triu(np.ones_like(G)), c, grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="lam: expected a non-negative number"):
        gl.gram_group_lasso(G, c, grp_ptr, grp_indices, w, -1.0)
    with pytest.raises(ValueError, match=r"y: expected labels in \{0, 1\}"):
        gl.logistic_group_lasso(X, y, grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="sizes: expected positive group sizes"):
        gl.make_groups([2, 0])
