"""Random number generators from seeds.

Library code never seeds global state: every random entry point takes a ``seed`` (an int) or
an already running ``numpy.random.Generator``, turned into a generator here.
"""

from __future__ import annotations

import numpy as np

from emae.errors import EmaeError


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """A generator for ``seed``: an int seeds a new one, a generator is used as it is.

    Passing a generator lets several calls draw from one stream (e.g. a dataset generated
    piece by piece); passing the same int twice gives the same draws.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise EmaeError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))
