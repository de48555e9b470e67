"""EM kernels: Numba against the NumPy reference, Woodbury against dense algebra."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hclstat.kernels.em import em_estep, em_mstep, em_mstep_reference, gaussian_loglik


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
