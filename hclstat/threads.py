"""How many BLAS threads the package's linear algebra uses.

Two kinds of work: the moment pass and other large products (an ``n x p``
by ``p x p`` GEMM gains from every core), and the pattern search and
alternations that follow it (many small blocks: permutation nulls,
factor-analysis fits, row sweeps), where a multi-threaded BLAS spends more on
synchronisation than it gains. After the moment pass the estimators run under
:func:`small_block_threads`: one BLAS thread while the stacked dimension is
below :data:`CROSSOVER_COLUMNS` (the crossover measured by
``benchmarks/bench_threads.py``), the machine's threads above it.

A user setting wins over the rule: the environment variable
``HCLSTAT_NUM_THREADS`` (a positive integer) fixes the thread count of every
stage; ``threadpoolctl.threadpool_limits`` set by the caller around a fit is
respected as an upper bound (the package only ever lowers the limit).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["CROSSOVER_COLUMNS", "ENV_VARIABLE", "small_block_threads", "user_threads"]

#: environment variable that fixes the number of BLAS threads
ENV_VARIABLE = "HCLSTAT_NUM_THREADS"
#: stacked dimension from which the post-moment stages keep the machine's threads
CROSSOVER_COLUMNS = 1500


def user_threads():
    """The thread count set by ``HCLSTAT_NUM_THREADS``, or ``None`` when unset.

    Raises
    ------
    ValueError
        When the variable is set to anything but a positive integer.
    """
    text = os.environ.get(ENV_VARIABLE, "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_VARIABLE}: expected a positive integer, got {text!r}")
    return n


def _threads_for(n_columns):
    n = user_threads()
    if n is not None:
        return n
    return 1 if n_columns < CROSSOVER_COLUMNS else None


@contextlib.contextmanager
def small_block_threads(n_columns):
    """BLAS thread limit for the stages after the moment pass.

    Parameters
    ----------
    n_columns : int
        Stacked dimension ``p = sum_m p_m`` of the fit.
    """
    n = _threads_for(int(n_columns))
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    current = [p.get("num_threads", n) for p in threadpool_info() if p.get("user_api") == "blas"]
    if current and n >= min(current) and user_threads() is None:
        yield  # never raise a limit the caller has set
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def moment_pass_threads():
    """BLAS thread limit for the moment pass (only a user setting limits it)."""
    n = user_threads()
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield
