"""The package's BLAS thread rule and its user override."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from hclstat import threads
from hclstat.threads import ENV_VARIABLE, moment_pass_threads, small_block_threads, user_threads


def _blas_threads():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})


@pytest.fixture
def two_threads():
    """BLAS libraries at (up to) two threads; some library must actually run two."""
    with threadpool_limits(limits=2, user_api="blas"):
        if 2 not in _blas_threads():
            pytest.fail(f"expected a BLAS library at 2 threads for this test, got {_blas_threads()}")
        yield _blas_threads()


def test_small_fits_run_on_one_thread(two_threads, monkeypatch):
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    before = two_threads
    with small_block_threads(180):
        assert _blas_threads() == [1]
    assert _blas_threads() == before
    with small_block_threads(threads.CROSSOVER_COLUMNS):
        assert _blas_threads() == before
    with moment_pass_threads():
        assert _blas_threads() == before


def test_the_environment_variable_wins(two_threads, monkeypatch):
    monkeypatch.setenv(ENV_VARIABLE, "2")
    with small_block_threads(180):
        assert _blas_threads() == two_threads  # the user's 2 wins over the rule's 1
    monkeypatch.setenv(ENV_VARIABLE, "1")
    with moment_pass_threads():
        assert _blas_threads() == [1]
    assert user_threads() == 1


def test_a_caller_limit_is_never_raised(monkeypatch):
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    with threadpool_limits(limits=1, user_api="blas"):
        with small_block_threads(10 * threads.CROSSOVER_COLUMNS):
            assert _blas_threads() == [1]


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_setting_is_named(monkeypatch, value):
    monkeypatch.setenv(ENV_VARIABLE, value)
    with pytest.raises(ValueError, match=rf"HCLSTAT_NUM_THREADS: expected a positive integer, got '{value}'"):
        user_threads()


def test_hcl_fits_its_small_blocks_on_one_thread(two_threads, monkeypatch):
    from hclstat import HCL
    from hclstat.model import d1_model

    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    seen = []
    inner = HCL._fit_datafit

    def recording(self, *args, **kwargs):
        seen.append(_blas_threads())
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(HCL, "_fit_datafit", recording)
    views, _ = d1_model(0.3, 1.0, random_state=0).sample(300, random_state=1)
    HCL(random_state=0).fit(views)
    assert seen == [[1]] and _blas_threads() == two_threads


def test_the_rule_reaches_every_blas_library_loaded(two_threads, monkeypatch):
    # the controller is made once per process: it must cover SciPy's BLAS as well as NumPy's
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "_CONTROLLER", None)
    with small_block_threads(180):
        libs = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert {p["num_threads"] for p in libs} == {1}, libs


def test_large_products_regain_the_callers_threads_inside_the_small_block_region(monkeypatch):
    """Issue 16: the permutation nulls of wide blocks are single large GEMMs; inside the one-thread
    region they run on the caller's threads, never on more, and a user setting keeps its count."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from hclstat.threads import CROSSOVER_FLOPS, large_product_threads, small_block_threads

    def blas():
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    monkeypatch.delenv("HCLSTAT_NUM_THREADS", raising=False)
    with threadpool_limits(2, user_api="blas"):
        with small_block_threads(100):
            assert blas() == 1
            with large_product_threads(CROSSOVER_FLOPS / 10):
                assert blas() == 1
            with large_product_threads(CROSSOVER_FLOPS):
                assert blas() == 2
            assert blas() == 1
        with large_product_threads(CROSSOVER_FLOPS):  # outside the region: the caller's limit as it is
            assert blas() == 2
    with threadpool_limits(1, user_api="blas"):  # the caller asked for one thread: nothing to regain
        with small_block_threads(100), large_product_threads(CROSSOVER_FLOPS):
            assert blas() == 1
    monkeypatch.setenv("HCLSTAT_NUM_THREADS", "1")
    with threadpool_limits(2, user_api="blas"):
        with small_block_threads(100), large_product_threads(CROSSOVER_FLOPS):
            assert blas() == 1


def test_work_threads_follow_the_blas_limit_and_the_user_setting(two_threads, monkeypatch):
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    assert threads.work_threads() == 2
    with threadpool_limits(limits=1, user_api="blas"):
        assert threads.work_threads() == 1
    monkeypatch.setenv(ENV_VARIABLE, "3")
    assert threads.work_threads() == 3
