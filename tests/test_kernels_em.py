"""EM kernels: Numba against the NumPy reference, Woodbury against dense algebra."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hclstat.kernels.em import em_estep, em_mstep, em_mstep_reference, gaussian_loglik, run_em, squarem_point


def _random_problem(rng, dims=(6, 7, 5), K=5, free_sets=((0, 1, 2), (0, 1, 3), (0, 4))):
    """A random pattern problem: features in modality blocks, free components per modality."""
    p = sum(dims)
    feat_ptr = np.concatenate([[0], np.cumsum(dims)]).astype(np.int64)
    free_ptr = np.concatenate([[0], np.cumsum([len(f) for f in free_sets])]).astype(np.int64)
    free_idx = np.asarray([j for f in free_sets for j in f], dtype=np.int64)
    A = np.zeros((p, K))
    for m, f in enumerate(free_sets):
        A[feat_ptr[m] : feat_ptr[m + 1], list(f)] = rng.standard_normal((dims[m], len(f)))
    X = rng.standard_normal((3 * p, p)) @ np.diag(rng.uniform(0.5, 2.0, p))
    S = np.cov(X, rowvar=False)
    psi = rng.uniform(0.5, 2.0, p)
    return S, A, psi, feat_ptr, free_ptr, free_idx


def _q_function(A, psi, S, Sxz, Ezz):
    """Expected complete-data log-likelihood per sample (up to constants)."""
    quad = np.diag(S) - 2.0 * np.sum(A * Sxz, axis=1) + np.einsum("ij,jk,ik->i", A, Ezz, A)
    return -0.5 * np.sum(np.log(psi) + quad / psi)


@pytest.mark.parametrize("isotropic", [False, True])
def test_mstep_kernel_matches_reference(rng, isotropic):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    Sxz, Ezz, _ = em_estep(S, A, psi)
    s_diag = np.ascontiguousarray(np.diag(S))
    floor = 1e-6 * s_diag
    A_ref, psi_ref = em_mstep_reference(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic)
    A_out, psi_out = np.full_like(A, np.nan), np.full_like(psi, np.nan)
    em_mstep(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic, A_out, psi_out)
    assert_allclose(A_out, A_ref, rtol=0, atol=1e-10)
    assert_allclose(psi_out, psi_ref, rtol=0, atol=1e-10)


def test_mstep_respects_pattern_and_empty_free_set(rng):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(
        rng, dims=(4, 5, 3), K=3, free_sets=((0, 2), (), (1,))
    )
    Sxz, Ezz, _ = em_estep(S, A, psi)
    s_diag = np.ascontiguousarray(np.diag(S))
    A_out, psi_out = np.empty_like(A), np.empty_like(psi)
    em_mstep(Sxz, Ezz, s_diag, 1e-6 * s_diag, feat_ptr, free_ptr, free_idx, False, A_out, psi_out)
    assert np.all(A_out[0:4, 1] == 0.0)
    assert np.all(A_out[4:9] == 0.0)  # no free component: all zero, noise = variance
    assert_allclose(psi_out[4:9], s_diag[4:9], rtol=0, atol=0)
    assert np.all(A_out[9:12, [0, 2]] == 0.0)


@pytest.mark.parametrize("isotropic", [False, True])
def test_mstep_floor_is_applied(rng, isotropic):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    Sxz, Ezz, _ = em_estep(S, A, psi)
    s_diag = np.ascontiguousarray(np.diag(S))
    floor = 10.0 * s_diag  # above any residual: every variance sits on its floor
    A_out, psi_out = np.empty_like(A), np.empty_like(psi)
    em_mstep(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic, A_out, psi_out)
    A_ref, psi_ref = em_mstep_reference(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic)
    assert_allclose(psi_out, psi_ref, rtol=0, atol=1e-10)
    if isotropic:
        for m in range(3):
            rows = slice(feat_ptr[m], feat_ptr[m + 1])
            assert_allclose(psi_out[rows], floor[rows].mean(), rtol=1e-12)
    else:
        assert_allclose(psi_out, floor, rtol=1e-12)


@pytest.mark.parametrize("isotropic", [False, True])
def test_mstep_maximises_expected_complete_loglik(rng, isotropic):
    """The closed form is the constrained maximiser: no feasible perturbation does better."""
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    Sxz, Ezz, _ = em_estep(S, A, psi)
    s_diag = np.ascontiguousarray(np.diag(S))
    A1, psi1 = np.empty_like(A), np.empty_like(psi)
    em_mstep(Sxz, Ezz, s_diag, 1e-6 * s_diag, feat_ptr, free_ptr, free_idx, isotropic, A1, psi1)
    q_best = _q_function(A1, psi1, S, Sxz, Ezz)
    mask = A != 0
    for _ in range(20):
        A2 = A1 + 1e-3 * rng.standard_normal(A.shape) * mask
        if isotropic:
            psi2 = psi1.copy()
            for m in range(3):
                psi2[feat_ptr[m] : feat_ptr[m + 1]] *= np.exp(1e-3 * rng.standard_normal())
        else:
            psi2 = psi1 * np.exp(1e-3 * rng.standard_normal(psi1.shape))
        assert _q_function(A2, psi2, S, Sxz, Ezz) <= q_best + 1e-12


def test_estep_matches_dense_formulas(rng):
    S, A, psi, *_ = _random_problem(rng)
    p, K = A.shape
    Sxz, Ezz, ll = em_estep(S, A, psi)
    sigma = A @ A.T + np.diag(psi)
    beta = A.T @ np.linalg.inv(sigma)
    assert_allclose(Sxz, S @ beta.T, rtol=0, atol=1e-10)
    assert_allclose(Ezz, np.eye(K) - beta @ A + beta @ S @ beta.T, rtol=0, atol=1e-10)
    _, logdet = np.linalg.slogdet(sigma)
    direct = -0.5 * (p * np.log(2 * np.pi) + logdet + np.trace(np.linalg.solve(sigma, S)))
    assert_allclose(ll, direct, rtol=1e-12)
    assert_allclose(gaussian_loglik(S, A, psi), direct, rtol=1e-12)


def test_one_em_step_does_not_decrease_loglik(rng):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    s_diag = np.ascontiguousarray(np.diag(S))
    lls = []
    for _ in range(30):
        Sxz, Ezz, ll = em_estep(S, A, psi)
        lls.append(ll)
        em_mstep(Sxz, Ezz, s_diag, 1e-6 * s_diag, feat_ptr, free_ptr, free_idx, False, A, psi)
    assert np.all(np.diff(lls) >= -1e-12 * np.abs(lls[-1]))
    assert lls[-1] > lls[0]


# --------------------------------------------------------------- the driver
def _reference_plain_em(S, A, psi, floor, feat_ptr, free_ptr, free_idx, isotropic, n_steps):
    """Plain EM written out with the NumPy M-step, for the driver to match."""
    s_diag = np.diag(S)
    lls = []
    for _ in range(n_steps):
        Sxz, Ezz, ll = em_estep(S, A, psi)
        lls.append(ll)
        A, psi = em_mstep_reference(Sxz, Ezz, s_diag, floor, feat_ptr, free_ptr, free_idx, isotropic)
    lls.append(em_estep(S, A, psi)[2])
    return A, psi, lls


@pytest.mark.parametrize("isotropic", [False, True])
def test_plain_run_em_matches_reference_loop(rng, isotropic):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    floor = 1e-6 * np.diag(S)
    res = run_em(S, A, psi, floor, feat_ptr, free_ptr, free_idx, isotropic, max_iter=25, tol=0.0, accelerate=False)
    A_ref, psi_ref, lls = _reference_plain_em(S, A, psi, floor, feat_ptr, free_ptr, free_idx, isotropic, 25)
    assert res.n_iter == 25 and not res.converged and res.n_extrapolated == 0
    assert_allclose(res.A, A_ref, rtol=0, atol=1e-10)
    assert_allclose(res.psi, psi_ref, rtol=0, atol=1e-10)
    assert_allclose(res.loglik_path, lls, rtol=1e-12)


@pytest.mark.parametrize("isotropic", [False, True])
def test_squarem_run_em_is_monotone_and_reaches_the_plain_optimum(rng, isotropic):
    # a sample covariance of the pattern model itself (a random S drives the noise onto
    # its floor, a Heywood case where no EM converges), started away from the truth
    _, A_true, psi_true, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    Z = rng.standard_normal((400, A_true.shape[1]))
    X = Z @ A_true.T + np.sqrt(psi_true) * rng.standard_normal((400, len(psi_true)))
    S = np.cov(X, rowvar=False)
    A = np.where(A_true != 0, A_true + 0.5 * rng.standard_normal(A_true.shape), 0.0)
    psi = np.diag(S).copy()
    floor = 1e-6 * np.diag(S)
    args = (S, A, psi, floor, feat_ptr, free_ptr, free_idx, isotropic)
    fast = run_em(*args, max_iter=5000, tol=1e-10, accelerate=True)
    slow = run_em(*args, max_iter=100_000, tol=1e-12, accelerate=False)
    assert fast.converged and slow.converged
    assert fast.n_extrapolated > 0 and fast.n_iter < slow.n_iter / 3
    path = np.asarray(fast.loglik_path)
    assert np.all(np.diff(path) >= -1e-12 * abs(path[-1]))
    assert_allclose(fast.loglik_path[-1], slow.loglik_path[-1], rtol=1e-10)
    implied = [r.A @ r.A.T + np.diag(r.psi) for r in (fast, slow)]
    assert_allclose(implied[0], implied[1], rtol=0, atol=1e-6)
    if isotropic:
        for m in range(3):
            assert np.ptp(fast.psi[feat_ptr[m] : feat_ptr[m + 1]]) == 0.0


@pytest.mark.parametrize("max_iter", [1, 2, 3, 4, 5, 7])
def test_run_em_respects_the_budget(rng, max_iter):
    S, A, psi, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    calls = []
    res = run_em(S, A, psi, 1e-6 * np.diag(S), feat_ptr, free_ptr, free_idx, False,
                 max_iter=max_iter, tol=0.0, callback=lambda *a: calls.append(a))
    assert res.n_iter == max_iter and not res.converged
    assert len(calls) == len(res.loglik_path) - 1
    assert calls[-1][0] == max_iter


def test_squarem_point(rng):
    S, A0, psi0, feat_ptr, free_ptr, free_idx = _random_problem(rng)
    zeros = A0 == 0
    steps = [(A0, psi0)]
    s_diag = np.ascontiguousarray(np.diag(S))
    for _ in range(2):
        Sxz, Ezz, _ = em_estep(S, *steps[-1])
        steps.append(em_mstep_reference(Sxz, Ezz, s_diag, 1e-6 * s_diag, feat_ptr, free_ptr, free_idx, False))
    (A1, psi1), (A2, psi2) = steps[1], steps[2]
    floor = np.full_like(psi0, 1e-6)
    # alpha = 1 is exactly the double EM step
    A, psi, alpha = squarem_point(A0, psi0, A1, psi1, A2, psi2, 1.0, floor)
    assert alpha == 1.0
    assert_allclose(A, A2, rtol=0, atol=1e-14)
    assert_allclose(psi, psi2, rtol=0, atol=1e-14)
    # an unbounded step is ||r|| / ||v||, written out here, and keeps the pattern's zeros
    r = np.concatenate([(A1 - A0).ravel(), psi1 - psi0])
    v = np.concatenate([(A2 - 2 * A1 + A0).ravel(), psi2 - 2 * psi1 + psi0])
    want = np.linalg.norm(r) / np.linalg.norm(v)
    A, psi, alpha = squarem_point(A0, psi0, A1, psi1, A2, psi2, np.inf, floor)
    assert_allclose(alpha, max(want, 1.0), rtol=1e-12)
    assert_allclose(A, A0 + 2 * alpha * (A1 - A0) + alpha**2 * (A2 - 2 * A1 + A0), rtol=0, atol=1e-12)
    assert np.all(A[zeros] == 0.0)
    # the noise variances are projected onto the floor
    _, psi, _ = squarem_point(A0, psi0, A1, psi1, A2, psi2, np.inf, np.full_like(psi0, 1e3))
    assert np.all(psi == 1e3)
