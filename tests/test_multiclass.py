"""Multinomial group lasso (kernel, cvxpy certificates) and the multiclass HCLClassifier."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp, softmax
from threadpoolctl import threadpool_limits

from hclstat.downstream import HCLClassifier
from hclstat.downstream.risk import _true_posterior
from hclstat.estimators.base import ModelRepresentation
from hclstat.exceptions import EstimationWarning
from hclstat.hierarchy import Hierarchy
from hclstat.kernels import multinomial_group_lasso as mgl
from hclstat.kernels.group_lasso import logistic_group_lasso, make_groups
from hclstat.model import HierarchicalModel

SIZES = [2, 3, 1, 2, 4]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _softmax_labels(eta, rng):
    """One draw of ``y ~ Categorical(softmax(eta_i))`` per row."""
    return (softmax(eta, axis=1).cumsum(axis=1) > rng.uniform(size=(eta.shape[0], 1))).argmax(axis=1)


@pytest.fixture(params=[3, 4])
def problem(request, rng):
    """Correlated design, 5 groups (2 active), ``C`` classes."""
    C = request.param
    n, p = 150, sum(SIZES)
    X = rng.standard_normal((n, p))
    X[:, 3] += X[:, 2]  # correlation across groups
    B = np.zeros((p, C))
    B[:5] = rng.standard_normal((5, C))
    y = _softmax_labels(0.2 * np.arange(C) + X @ B, rng)
    grp_ptr, grp_indices = make_groups(SIZES)
    return X, mgl.one_hot(y, C), grp_ptr, grp_indices, np.sqrt(np.asarray(SIZES, dtype=float))


def _groups(grp_ptr, grp_indices):
    return [grp_indices[grp_ptr[g]:grp_ptr[g + 1]] for g in range(grp_ptr.size - 1)]


def _cvxpy(X, Y, groups, w, lam):
    B = cp.Variable((X.shape[1], Y.shape[1]))
    b0 = cp.Variable(Y.shape[1])
    eta = X @ B + np.ones((X.shape[0], 1)) @ cp.reshape(b0, (1, Y.shape[1]), order="C")
    loss = (cp.sum(cp.log_sum_exp(eta, axis=1)) - cp.sum(cp.multiply(Y, eta))) / X.shape[0]
    pen = sum(w[g] * cp.norm(B[idx, :], "fro") for g, idx in enumerate(groups))
    prob = cp.Problem(cp.Minimize(loss + lam * pen))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9)
    assert prob.status == cp.OPTIMAL
    return B.value, prob.value


def _independent_kkt(X, Y, b0, B, groups, w, lam):
    """KKT residual from scipy's softmax: stationarity on active blocks, dual feasibility on zero ones."""
    R = softmax(b0 + X @ B, axis=1) - Y
    G = X.T @ R / X.shape[0]
    worst = np.linalg.norm(R.mean(axis=0))
    for g, idx in enumerate(groups):
        nb = np.linalg.norm(B[idx])
        if nb > 0:
            worst = max(worst, np.linalg.norm(G[idx] + lam * w[g] * B[idx] / nb))
        else:
            worst = max(worst, np.linalg.norm(G[idx]) - lam * w[g])
    return worst


# ------------------------------------------------------------------ kernel
@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.01])
def test_solver_certified_by_cvxpy(problem, ratio):
    X, Y, grp_ptr, grp_indices, w = problem
    groups = _groups(grp_ptr, grp_indices)
    lam = ratio * mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    b0, B, _, viol = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lam, tol=1e-10)
    assert viol <= 1e-10
    B_cvx, f_cvx = _cvxpy(X, Y, groups, w, lam)
    f = mgl.multinomial_objective(X, Y, b0, B, grp_ptr, grp_indices, w, lam)
    assert abs(f - f_cvx) <= 1e-6 * abs(f_cvx)
    assert f <= f_cvx + 1e-9  # the first-order solution is at least as good as the interior point's
    ours = [np.linalg.norm(B[idx]) > 0 for idx in groups]
    theirs = [np.linalg.norm(B_cvx[idx]) > 1e-6 for idx in groups]
    assert ours == theirs
    assert_allclose(B, B_cvx - B_cvx.mean(axis=1, keepdims=True), atol=1e-4)
    # the KKT conditions, checked independently of the kernel's own residual
    assert _independent_kkt(X, Y, b0, B, groups, w, lam) <= 1e-9
    assert mgl.multinomial_kkt_violation(X, Y, b0, B, grp_ptr, grp_indices, w, lam) <= 1e-10
    # symmetric parametrisation: rows of B and the intercepts are centred over classes
    assert_allclose(B.sum(axis=1), 0.0, atol=1e-12)
    assert abs(b0.sum()) <= 1e-12


def test_lambda_max_is_the_threshold(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    lam_max = mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    b0, B, _, viol = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lam_max, tol=1e-10)
    assert np.all(B == 0) and viol <= 1e-10
    logp = np.log(Y.mean(axis=0))
    assert_allclose(b0, logp - logp.mean(), atol=1e-9)  # the empty model predicts the class frequencies
    _, B, _, _ = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, 0.99 * lam_max, tol=1e-10)
    active = [np.linalg.norm(B[idx]) > 0 for idx in _groups(grp_ptr, grp_indices)]
    assert sum(active) == 1


def test_two_classes_reduce_to_the_logistic_group_lasso(problem, rng):
    # C = 2, centred columns B = [-beta/2, beta/2]: ||B_g||_F = ||beta_g|| / sqrt(2), so the
    # multinomial problem at lam is the logistic one at lam / sqrt(2)
    X, _, grp_ptr, grp_indices, w = problem
    y = (rng.uniform(size=X.shape[0]) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 4])))).astype(float)
    lam = 0.02
    b0, B, _, _ = mgl.multinomial_group_lasso(X, mgl.one_hot(y, 2), grp_ptr, grp_indices, w, lam, tol=1e-11)
    a0, beta, _, _ = logistic_group_lasso(X, y, grp_ptr, grp_indices, w, lam / np.sqrt(2), tol=1e-11)
    assert_allclose(B[:, 1] - B[:, 0], beta, atol=1e-8)
    assert b0[1] - b0[0] == pytest.approx(a0, abs=1e-8)


def test_path_warm_starts_match_single_solves(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    lam_max = mgl.multinomial_lambda_max(X, Y, grp_ptr, grp_indices, w)
    lams = lam_max * np.geomspace(1.0, 0.01, 6)
    coefs, b0s, _, viols = mgl.multinomial_group_lasso_path(X, Y, grp_ptr, grp_indices, w, lams, tol=1e-10)
    assert np.all(viols <= 1e-10)
    for i in (2, 5):
        b0, B, _, _ = mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, lams[i], tol=1e-10)
        assert_allclose(coefs[i], B, atol=1e-7)
        assert_allclose(b0s[i], b0, atol=1e-7)


def test_kernel_input_errors(problem):
    X, Y, grp_ptr, grp_indices, w = problem
    with pytest.raises(ValueError, match="Y: expected one-hot rows"):
        mgl.multinomial_group_lasso(X, 2 * Y, grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="Y: class column 1 has no rows"):
        mgl.multinomial_group_lasso(X, mgl.one_hot(np.zeros(X.shape[0]), 3), grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match=r"X, Y: expected shapes \(n, p\) and \(n, C\)"):
        mgl.multinomial_group_lasso(X, Y[:-1], grp_ptr, grp_indices, w, 0.1)
    with pytest.raises(ValueError, match="lam: expected a non-negative number"):
        mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, -1.0)
    with pytest.raises(ValueError, match="B0: expected shape"):
        mgl.multinomial_group_lasso(X, Y, grp_ptr, grp_indices, w, 0.1, B0=np.zeros(3))
