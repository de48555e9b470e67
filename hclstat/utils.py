"""Small shared helpers (random state handling)."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_random_state"]


def check_random_state(random_state):
    """Return a :class:`numpy.random.Generator`.

    ``None`` gives fresh OS entropy; an int or a :class:`numpy.random.SeedSequence`
    seeds a new generator; a Generator is returned as is (shared state); a legacy
    ``RandomState`` is wrapped so that it keeps driving the stream.
    """
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, bool):
            raise TypeError("random_state: expected None, an int or a numpy Generator, got a bool")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    raise TypeError(
        f"random_state: expected None, an int, a SeedSequence or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )
