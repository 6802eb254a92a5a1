# Shared pytest configuration for the whole nnlayers test suite.
# Several test modules (and engineers) use this file: add new fixtures here
# rather than changing the behaviour of existing ones.
import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id: deterministic for a
    given test, different between tests and parametrizations."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
