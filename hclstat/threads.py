"""How many BLAS threads the package's linear algebra uses.

Two kinds of work: the moment pass and other large products (an ``n x p``
by ``p x p`` GEMM gains from every core), and the pattern search and
alternations that follow it (many small blocks: permutation nulls,
factor-analysis fits, row sweeps), where a multi-threaded BLAS spends more on
synchronisation than it gains. After the moment pass the estimators run under
:func:`small_block_threads`: one BLAS thread while the stacked dimension is
below :data:`CROSSOVER_COLUMNS` (set from ``benchmarks/bench_threads.py``),
the machine's threads above it. The moment pass keeps the machine's threads
(measured 1.2-1.6x faster with two threads from p = 600 on). On design D1 this
makes a default fit 3.9x faster than under the machine's two threads.

Inside that region one kind of work regains the caller's threads: a single
product of at least :data:`CROSSOVER_FLOPS` floating-point operations (the
pair products of the permutation nulls: one GEMM of up to a few thousand rows
by the draws' stacked columns), under :func:`large_product_threads`.

A user setting wins over the rule: the environment variable
``HCLSTAT_NUM_THREADS`` (a positive integer) fixes the thread count of every
stage; ``threadpoolctl.threadpool_limits`` set by the caller around a fit is
respected as an upper bound (the package only ever lowers the limit).
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["CROSSOVER_COLUMNS", "CROSSOVER_FLOPS", "ENV_VARIABLE", "large_product_threads", "moment_pass_threads",
           "small_block_threads", "user_threads", "work_threads"]

#: environment variable that fixes the number of BLAS threads
ENV_VARIABLE = "HCLSTAT_NUM_THREADS"
#: stacked dimension from which the post-moment stages keep the machine's threads.
#: ``benchmarks/bench_threads.py`` (2 cores, n = 2000) found no size up to the largest
#: measured, p = 3000, where two threads made them faster (1.6x slower at p = 180,
#: equal at 600, 1.3-1.5x slower at 1500 and 3000); above the measured range the
#: machine's threads are kept
CROSSOVER_COLUMNS = 4000
#: floating-point operations from which one product inside the small-block region runs on the
#: caller's threads: the permutation nulls' pair products (:mod:`hclstat.moments.nulls`).
#: ``benchmarks/bench_threads.py`` (product section, 2 cores, e26300a): a 5000 x 50 by 1300
#: product (6.5e8 flops) took 12.7 ms on one thread and 6.6 ms on two, and every larger one
#: gained 1.6-2x; smaller products were not measured
CROSSOVER_FLOPS = 6.5e8


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




_CONTROLLER = None
# the caller's BLAS thread count where the package lowered it (per thread of the caller)
_OUTER = threading.local()


def _controller():
    """One ``ThreadpoolController`` per process (finding the loaded libraries costs milliseconds)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        # the controller sees the libraries loaded when it is made: load SciPy's BLAS
        # (the package's linear algebra runs on NumPy's and SciPy's) before making it
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextlib.contextmanager
def _blas_limit(n, *, forced):
    """Limit BLAS to ``n`` threads (``None``: leave it); a rule's limit (``forced`` false)
    only ever lowers what the libraries run, a user's setting is applied as given."""
    if n is None:
        yield
        return
    ctl = _controller()
    current = _blas_counts()
    if not current or (not forced and n >= max(current)):
        yield  # nothing to lower: never raise a limit the caller has set
        return
    outer = getattr(_OUTER, "threads", None)
    _OUTER.threads = max(current) if not forced else None
    try:
        with ctl.limit(limits=n, user_api="blas"):
            yield
    finally:
        _OUTER.threads = outer


def large_product_threads(flops):
    """BLAS thread limit for one product of ``flops`` operations inside the small-block region.

    At or above :data:`CROSSOVER_FLOPS` the product runs on the threads the
    caller had before the package lowered them (never more); below it, or
    outside a region the package lowered, or under ``HCLSTAT_NUM_THREADS``,
    nothing changes.
    """
    outer = getattr(_OUTER, "threads", None)
    if outer is None or float(flops) < CROSSOVER_FLOPS or user_threads() is not None:
        return contextlib.nullcontext()
    return _controller().limit(limits=outer, user_api="blas")


def small_block_threads(n_columns):
    """BLAS thread limit for the stages after the moment pass.

    Parameters
    ----------
    n_columns : int
        Stacked dimension ``p = sum_m p_m`` of the fit.
    """
    n = user_threads()
    if n is not None:
        return _blas_limit(n, forced=True)
    return _blas_limit(1 if int(n_columns) < CROSSOVER_COLUMNS else None, forced=False)


def moment_pass_threads():
    """BLAS thread limit for the moment pass (only a user setting limits it)."""
    return _blas_limit(user_threads(), forced=True)


def work_threads():
    """Threads for the package's own column-parallel work (the copula's sorts and rank kernels).

    ``HCLSTAT_NUM_THREADS`` when set, else as many as BLAS runs with right now
    (so a caller's ``threadpool_limits`` bounds this work too); at least 1.
    """
    n = user_threads()
    if n is not None:
        return n
    return max(1, max(_blas_counts(), default=1))


def _blas_counts():
    """The thread count of every loaded BLAS library, now."""
    return [lib.num_threads for lib in _controller().select(user_api="blas").lib_controllers]
