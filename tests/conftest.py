"""Shared fixtures and the session guard of the hclstat test suite.

Markers (``slow``, ``checks``) are declared in ``setup.cfg``; nothing is
registered here.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

# xdist runs one worker per core; a multi-threaded BLAS inside each worker
# oversubscribes the machine (measured: HCL fits 10x slower on 2 cores)
_BLAS_LIMIT = threadpool_limits(1)

from hclstat.hierarchy import Hierarchy

#: one seed for the whole suite; a test that needs several streams spawns them
SEED = 20240611


@pytest.fixture
def rng():
    """A freshly seeded generator per test, so tests do not depend on their order."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="module")
def outcome_design():
    """The outcome-model design of the downstream tests: six rank-2 structures over three
    modalities, with its oracle representation (``(model, representation)``)."""
    from hclstat.estimators.base import ModelRepresentation
    from hclstat.model import HierarchicalModel

    h = Hierarchy(
        dims={"a": 15, "b": 20, "c": 25},
        ranks={("a", "b", "c"): 2, ("a", "b"): 2, ("b", "c"): 2, "a": 2, "b": 2, "c": 2},
    )
    model = HierarchicalModel.random(h, noise=1.0, random_state=1)
    return model, ModelRepresentation(model).fit()


@pytest.fixture
def hierarchy():
    """Three modalities with one global, one ``{a,b}`` and three specific structures."""
    return Hierarchy(
        dims={"a": 8, "b": 10, "c": 12},
        ranks={("a", "b", "c"): 2, ("a", "b"): 1, "a": 1, "b": 2, "c": 1},
    )


NO_TESTS_MESSAGE = (
    "no tests were collected (pytest exit status 5); hclstat's conftest turns this "
    "into a failure (exit status 1) so that an empty run can never pass or fail CI "
    "silently. Check the paths, the -k/-m expressions and the collection errors above."
)


def pytest_sessionfinish(session, exitstatus):
    # Under pytest-xdist the workers' statuses are not the run's: decide on the controller.
    if hasattr(session.config, "workerinput"):
        return
    if session.testscollected == 0 and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "ERROR: " + NO_TESTS_MESSAGE.split(";")[0], red=True, bold=True)
            reporter.write_line(NO_TESTS_MESSAGE, red=True)
        else:
            print(NO_TESTS_MESSAGE, file=sys.stderr)
