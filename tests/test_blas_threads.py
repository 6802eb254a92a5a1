"""nl.set_num_threads / get_num_threads, and threadpoolctl seeing and
limiting nnlayers' own OpenBLAS (a different library from NumPy's)."""
import numpy as np
import pytest

import nnlayers as nl

threadpoolctl = pytest.importorskip("threadpoolctl")  # in the test extras


@pytest.fixture
def restore_threads():
    old = nl.get_num_threads()
    yield
    nl.set_num_threads(old)


def _nnlayers_pools():
    import scipy_openblas32

    lib = scipy_openblas32.get_library(fullname=True)
    return [p for p in threadpoolctl.threadpool_info()
            if p.get("filepath", "").endswith(lib)]


def test_set_and_get_num_threads(restore_threads):
    nl.set_num_threads(1)
    assert nl.get_num_threads() == 1
    nl.set_num_threads(2)
    assert nl.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 100000])
def test_set_num_threads_rejects_bad_counts(bad, restore_threads):
    before = nl.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads"):
        nl.set_num_threads(bad)
    assert nl.get_num_threads() == before


def test_set_num_threads_rejects_non_int(restore_threads):
    with pytest.raises(TypeError, match="int"):
        nl.set_num_threads(1.5)


def test_threadpoolctl_sees_nnlayers_openblas(restore_threads):
    pools = _nnlayers_pools()
    assert len(pools) == 1, threadpoolctl.threadpool_info()
    nl.set_num_threads(2)
    assert _nnlayers_pools()[0]["num_threads"] == 2


def test_threadpoolctl_limits_nnlayers(restore_threads):
    nl.set_num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1):
        assert nl.get_num_threads() == 1
        # work inside the limit leaves the limit in place (small products
        # run single-threaded and restore the count they found)
        model = nl.Sequential(nl.Linear(8, 4, seed=0), nl.ReLU(), nl.Linear(4, 2, seed=1))
        model.forward(np.ones((3, 8), np.float32))
        assert nl.get_num_threads() == 1
    assert nl.get_num_threads() == 2


def test_small_products_leave_the_thread_setting_alone(restore_threads):
    nl.set_num_threads(2)
    model = nl.Sequential(nl.Linear(8, 4, seed=0), nl.ReLU(), nl.Linear(4, 2, seed=1))
    x = np.ones((3, 8), np.float32)
    model.forward(x)
    model.backward(np.ones((3, 2), np.float32))
    assert nl.get_num_threads() == 2
