"""The one factor-analysis noise fit: convergence is reported, the memo is thread-safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.optimize
from numpy.testing import assert_allclose

import hclstat.factor_analysis as fa_module
from hclstat.exceptions import ConvergenceWarning
from hclstat.factor_analysis import fa_noise, fa_noise_fit


def _sample_covariance(rng, p=30, r=2, n=400):
    L = rng.standard_normal((p, r))
    X = rng.standard_normal((n, r)) @ L.T + rng.standard_normal((n, p)) * np.sqrt(rng.uniform(0.5, 2.0, p))
    return np.cov(X.T)


def test_an_uncertified_fit_warns_instead_of_passing_quietly(rng, monkeypatch):
    # the old fit ignored res.success: a failed optimisation returned its last iterate silently
    S = _sample_covariance(rng)

    def stuck(fun, x0, **kwargs):  # an optimiser that gave up at its start
        value, grad = fun(x0)
        return scipy.optimize.OptimizeResult(x=x0, fun=value, jac=grad, success=False,
                                             message="ABNORMAL_TERMINATION_IN_LNSRCH")

    monkeypatch.setattr(scipy.optimize, "minimize", stuck)
    with pytest.warns(ConvergenceWarning, match=r"rank 2 on a 30-column block did not converge \(ABNORMAL"):
        fa_noise_fit(S, 2)


def test_an_abnormal_stop_at_a_stationary_point_is_accepted(rng, monkeypatch, recwarn):
    # L-BFGS-B reports ABNORMAL when its line search runs into round-off at the optimum
    S = _sample_covariance(rng)
    real = scipy.optimize.minimize
    seen = []

    def abnormal(*args, **kwargs):
        res = real(*args, **kwargs)
        res.success = False
        seen.append(res)
        return res

    monkeypatch.setattr(scipy.optimize, "minimize", abnormal)
    psi = fa_noise_fit(S, 2)
    assert seen and not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]
    monkeypatch.undo()
    assert_allclose(psi, fa_noise_fit(S, 2), rtol=0)


def test_a_certified_fit_is_silent(rng, recwarn):
    fa_noise_fit(_sample_covariance(rng), 2)
    assert not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]


def test_memo_returns_copies_and_is_safe_under_threads(rng):
    blocks = [_sample_covariance(np.random.default_rng(i)) for i in range(6)]
    serial = [fa_noise_fit(S, 2) for S in blocks]
    fa_module._MEMO.clear()
    out, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                out[i] = fa_noise(blocks[i % 6], 2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, psi in out.items():
        assert_allclose(psi, serial[i % 6], rtol=1e-10)
    # a caller mutating its result must not corrupt the memo
    first = fa_noise(blocks[0], 2)
    first[:] = -1.0
    assert np.all(fa_noise(blocks[0], 2) > 0)
    assert len(fa_module._MEMO) <= fa_module._MEMO_SIZE
