"""The batch split of training steps (csrc/core/graph_run.c, step_split).

At two threads or more, a training step of a mid-sized network splits its
batch: each thread runs the forward pass, the loss and the input gradients
for a block of rows with single-threaded products, then updates its share of
every layer's rows of W and columns of b. The maths is the same as a whole
step, only the rounding order of some products may differ.

``_core._split_mode(m)`` forces it (1: even one row a part) or turns it off
(0); -1 is the default (by size). ``_core._split_steps()`` counts split steps,
so each test checks which path it took.
"""
import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

POOL = _core._pool_info()["installed"]
needs_pool = pytest.mark.skipif(not POOL, reason="no worker pool (NNLAYERS_POOL=0)")


@pytest.fixture
def threads():
    """Set the thread count for the test, restore it and the split mode after."""
    old_threads, old_mode = nl.get_num_threads(), _core._split_mode(-1)
    _core._split_mode(old_mode)
    yield nl.set_num_threads
    nl.set_num_threads(old_threads)
    _core._split_mode(old_mode)


def model_of(dtype, loss_name, seed=0, d=13, h=(40, 24), c=5):
    layers = [nl.Linear(d, h[0], dtype=dtype, seed=seed), nl.ReLU(),
              nl.Linear(h[0], h[1], dtype=dtype, seed=seed + 1), nl.Softplus(),
              nl.Linear(h[1], h[1], dtype=dtype, seed=seed + 2), nl.LeakyReLU(-0.2),
              nl.Linear(h[1], h[1], dtype=dtype, seed=seed + 3), nl.Cos(),
              nl.Linear(h[1], h[1], dtype=dtype, seed=seed + 4), nl.Sigmoid(),
              nl.Linear(h[1], c, dtype=dtype, seed=seed + 5)]
    if loss_name == "nll":
        layers.append(nl.LogSoftmax())
    return nl.Sequential(*layers)


LOSSES = {
    "xent": (nl.SoftmaxCrossEntropy, "labels"),
    "xent-dense": (nl.SoftmaxCrossEntropy, "probs"),
    "nll": (nl.NLL, "labels"),
    "bce": (nl.BinaryCrossEntropy, "bits"),
    "mse": (nl.MSE, "real"),
}
SGDS = [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"weight_decay": 0.1}]


def targets(kind, n, c, dtype, rng):
    if kind == "labels":
        return rng.integers(0, c, size=n)
    if kind == "probs":
        t = rng.random((n, c))
        return (t / t.sum(1, keepdims=True)).astype(dtype)
    if kind == "bits":
        return (rng.random((n, c)) > 0.5).astype(dtype)
    return rng.standard_normal((n, c)).astype(dtype)


def run_steps(mode, dtype, loss_name, sgd, n=37, steps=3, seed=0):
    """`steps` train_steps in split mode `mode`: (losses, parameters,
    velocity, split steps taken)."""
    old = _core._split_mode(mode)
    try:
        rng = np.random.default_rng(seed + 100)
        model = model_of(dtype, loss_name, seed)
        loss_cls, tkind = LOSSES[loss_name]
        opt = nl.SGD(model, lr=0.1, **sgd)
        x = rng.standard_normal((n, 13)).astype(dtype)
        y = targets(tkind, n, 5, dtype, rng)
        before = _core._split_steps()
        losses = [model.train_step(x, y, loss_cls(), opt) for _ in range(steps)]
        vel = opt._velocity()              # None without momentum
        return (losses, {k: np.array(v) for k, v in model.parameters().items()},
                None if vel is None else np.array(vel, copy=True),
                _core._split_steps() - before)
    finally:
        _core._split_mode(old)


def assert_close_results(a, b, rtol):
    losses_a, params_a, vel_a, _ = a
    losses_b, params_b, vel_b, _ = b
    np.testing.assert_allclose(losses_a, losses_b, rtol=rtol)
    assert params_a.keys() == params_b.keys()
    for k in params_a:
        np.testing.assert_allclose(params_a[k], params_b[k], rtol=rtol, atol=rtol, err_msg=k)
    assert (vel_a is None) == (vel_b is None)
    if vel_a is not None:
        np.testing.assert_allclose(vel_a, vel_b, rtol=rtol, atol=rtol)


@needs_pool
@pytest.mark.parametrize("sgd", SGDS, ids=["plain", "momentum", "nesterov-wd", "wd"])
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_split_step_is_the_whole_step(threads, loss_name, sgd):
    """Every loss and SGD rule, through every kind of layer the split runs
    row by row (in-place and not, Softplus and Cos keep their input,
    LogSoftmax): the same losses, parameters and momentum as a whole step."""
    threads(2)
    whole = run_steps(0, np.float64, loss_name, sgd)
    split = run_steps(1, np.float64, loss_name, sgd)
    assert whole[3] == 0 and split[3] == 3
    assert_close_results(split, whole, rtol=1e-12)


@needs_pool
@pytest.mark.parametrize("n_threads,n", [(2, 2), (2, 3), (3, 3), (3, 7), (2, 17), (4, 37)])
def test_split_of_few_rows_and_more_threads_than_cores(threads, n_threads, n):
    """Parts of one row, an odd split, more parts than cores."""
    threads(n_threads)
    whole = run_steps(0, np.float64, "xent", {"momentum": 0.9}, n=n)
    split = run_steps(1, np.float64, "xent", {"momentum": 0.9}, n=n)
    assert split[3] == 3
    assert_close_results(split, whole, rtol=1e-12)


def mid_model(dtype=np.float32, seed=0):
    # 3 x 96 x (256 x 384 + 384 x 128 + 128 x 10) multiply-adds a step:
    # split by size (default mode) at two threads
    return nl.Sequential(nl.Linear(256, 384, dtype=dtype, seed=seed), nl.ReLU(),
                         nl.Linear(384, 128, dtype=dtype, seed=seed + 1), nl.Tanh(),
                         nl.Linear(128, 10, dtype=dtype, seed=seed + 2))


def mid_train(mode, dtype=np.float32, epochs=2, seed=0):
    old = _core._split_mode(mode)
    try:
        rng = np.random.default_rng(5)
        X = rng.standard_normal((250, 256)).astype(dtype)
        y = rng.integers(0, 10, size=250)
        model = mid_model(dtype, seed)
        opt = nl.SGD(model, lr=0.05, momentum=0.9)
        before = _core._split_steps()
        hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=opt, epochs=epochs,
                         batch_size=96, seed=3, verbose=0)
        return hist, {k: np.array(v) for k, v in model.parameters().items()}, \
            _core._split_steps() - before
    finally:
        _core._split_mode(old)


@needs_pool
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fit_splits_by_size_and_matches_whole_steps(threads, dtype, rtol):
    """fit (with its gathers on the workers) splits mid-sized steps by
    default: same history (loss, accuracy) and parameters as whole steps. The
    last batch of 58 rows splits too."""
    threads(2)
    h_whole, p_whole, n_whole = mid_train(0, dtype)
    h_split, p_split, n_split = mid_train(-1, dtype)
    assert n_whole == 0 and n_split == 6          # 2 epochs x 3 batches
    np.testing.assert_allclose(h_split.history["loss"], h_whole.history["loss"], rtol=rtol)
    assert h_split.history["accuracy"] == h_whole.history["accuracy"]
    for k in p_whole:
        np.testing.assert_allclose(p_split[k], p_whole[k], rtol=rtol, atol=rtol, err_msg=k)


@needs_pool
def test_no_split_at_one_thread_or_for_small_steps(threads):
    threads(1)
    assert mid_train(-1, epochs=1)[2] == 0
    threads(2)
    old = _core._split_mode(-1)
    try:
        small = nl.Sequential(nl.Linear(8, 8, seed=1), nl.ReLU(), nl.Linear(8, 3, seed=2))
        before = _core._split_steps()
        small.train_step(np.ones((64, 8), np.float32), np.zeros(64, np.int64),
                         nl.SoftmaxCrossEntropy(), nl.SGD(small, lr=0.1))
        assert _core._split_steps() == before
    finally:
        _core._split_mode(old)



@needs_pool
@pytest.mark.parametrize("sizes,rows,splits", [
    ((784, 256, 256, 10), 128, True),      # the benchmark's medium step
    ((784, 512, 512, 10), 256, True),
    ((784, 1024, 1024, 10), 256, False),   # a wide layer, a short batch
    ((784, 1024, 10), 256, False),
    ((784, 1024, 10), 512, True),          # the same layer, a long batch
])
def test_wide_layers_split_only_long_batches(threads, sizes, rows, splits):
    """A layer of 784 x 1024 or more: OpenBLAS's own split of each product
    is the better one under 512 rows (each part would pack the whole
    weight matrix for itself)."""
    threads(2)
    old = _core._split_mode(-1)
    try:
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nl.Linear(a, b, seed=i), nl.ReLU()]
        model = nl.Sequential(*layers[:-1])
        before = _core._split_steps()
        model.train_step(np.ones((rows, sizes[0]), np.float32), np.zeros(rows, np.int64),
                         nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=0.01))
        assert (_core._split_steps() - before == 1) == splits
    finally:
        _core._split_mode(old)

@needs_pool
def test_frozen_layers_and_layers_outside_the_optimizer(threads):
    """Only the optimizer's trainable layers change, as in a whole step; the
    input gradient still flows through the frozen layer above the lowest
    trained one."""
    threads(2)
    results = []
    for mode in (0, 1):
        old = _core._split_mode(mode)
        try:
            model = model_of(np.float64, "xent", seed=4)
            model[2].trainable = False                 # frozen, between trained ones
            opt = nl.SGD([model[0], model[4], model[10]], lr=0.1, momentum=0.5)
            frozen = {k: np.array(v) for k, v in model.parameters().items()
                      if k.split(".")[0] in ("2", "6", "8")}
            rng = np.random.default_rng(8)
            x, y = rng.standard_normal((33, 13)), rng.integers(0, 5, size=33)
            before = _core._split_steps()
            for _ in range(2):
                model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
            assert _core._split_steps() - before == (2 if mode else 0)
            params = {k: np.array(v) for k, v in model.parameters().items()}
            for k, v in frozen.items():
                np.testing.assert_array_equal(params[k], v, err_msg=k)
            results.append(params)
        finally:
            _core._split_mode(old)
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], rtol=1e-12, atol=1e-14,
                                   err_msg=k)
    assert not np.array_equal(results[1]["0.W"], model_of(np.float64, "xent", 4)[0].params["W"])


@needs_pool
@pytest.mark.parametrize("bad", ["label", "nan-first-part", "nan-last-part"])
def test_rejected_split_step_changes_nothing(threads, bad):
    """A split step whose loss is NaN in one part, or with a bad label, is
    rejected after phase 1: no parameter and no momentum changes."""
    threads(2)
    old = _core._split_mode(1)
    try:
        rng = np.random.default_rng(9)
        model = model_of(np.float64, "xent", seed=6)
        opt = nl.SGD(model, lr=0.1, momentum=0.9)
        loss = nl.SoftmaxCrossEntropy()
        x, y = rng.standard_normal((40, 13)), rng.integers(0, 5, size=40)
        model.train_step(x, y, loss, opt)                       # some momentum
        before = {k: np.array(v) for k, v in model.parameters().items()}
        vel = np.array(opt._velocity(), copy=True)
        if bad == "label":
            y = y.copy()
            y[-1] = 5
            exc = ValueError
        else:
            x = x.copy()
            x[1 if bad == "nan-first-part" else 38, 0] = np.nan
            exc = nl.NonFiniteLossError
        with pytest.raises(exc):
            model.train_step(x, y, loss, opt)
        for k, v in model.parameters().items():
            np.testing.assert_array_equal(v, before[k], err_msg=k)
        np.testing.assert_array_equal(opt._velocity(), vel)
    finally:
        _core._split_mode(old)


@needs_pool
def test_split_steps_allocate_nothing_in_steady_state(threads):
    threads(2)
    old = _core._split_mode(-1)
    try:
        rng = np.random.default_rng(10)
        model = mid_model()
        opt = nl.SGD(model, lr=0.01, momentum=0.9, nesterov=True)
        loss = nl.SoftmaxCrossEntropy()
        x = rng.standard_normal((96, 256)).astype(np.float32)
        y = rng.integers(0, 10, size=96)
        model.train_step(x, y, loss, opt)          # the workspace, once
        allocs, splits = _core.alloc_count(), _core._split_steps()
        for _ in range(100):
            model.train_step(x, y, loss, opt)
        assert _core._split_steps() - splits == 100
        assert _core.alloc_count() == allocs
    finally:
        _core._split_mode(old)


@needs_pool
def test_products_on_workers_that_go_parallel_get_threads_of_their_own(threads):
    """Should another user thread raise OpenBLAS's count during a split, the
    parts' products on the workers go parallel. The test hook keeps the
    count at 2 during splits to make that happen every time: those products
    run on threads of their own instead of waiting for the busy workers,
    and the step ends as a whole step does."""
    threads(2)
    old_keep = _core._split_keep_blas_threads(True)
    try:
        h_keep, p_keep, n_keep = mid_train(1, np.float64, epochs=1)
    finally:
        _core._split_keep_blas_threads(old_keep)
    h_whole, p_whole, _ = mid_train(0, np.float64, epochs=1)
    assert n_keep == 3
    np.testing.assert_allclose(h_keep.history["loss"], h_whole.history["loss"], rtol=1e-12)
    for k in p_whole:
        np.testing.assert_allclose(p_keep[k], p_whole[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert nl.get_num_threads() == 2


@needs_pool
def test_thread_count_is_restored_after_split_steps(threads):
    threads(3)
    mid_train(1, epochs=1)
    assert nl.get_num_threads() == 3


@needs_pool
@pytest.mark.parametrize("how", ["nnlayers", "threadpoolctl"])
def test_thread_count_changed_by_another_thread_during_training(threads, how):
    """One thread trains mid-sized (split) steps while another keeps changing
    the thread count: through nl.set_num_threads (which waits for the step
    under way) or threadpoolctl (which sets OpenBLAS's count directly, in the
    middle of splits). No hang, no error, finite parameters; the count ends
    as the other thread last set it."""
    threads(2)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import threading
    rng = np.random.default_rng(12)
    model = mid_model()
    opt = nl.SGD(model, lr=0.01, momentum=0.9)
    loss = nl.SoftmaxCrossEntropy()
    x = rng.standard_normal((96, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=96)
    stop, errors = threading.Event(), []

    def toggle():
        try:
            k = 0
            while not stop.is_set():
                n = 1 + k % 2
                if how == "nnlayers":
                    nl.set_num_threads(n)
                else:
                    threadpoolctl.threadpool_limits(limits=n, user_api="blas")
                k += 1
            if how == "nnlayers":
                nl.set_num_threads(2)
            else:
                threadpoolctl.threadpool_limits(limits=2, user_api="blas")
        except BaseException as e:     # reported below
            errors.append(e)

    t = threading.Thread(target=toggle)
    before = _core._split_steps()
    t.start()
    try:
        for _ in range(300):
            model.train_step(x, y, loss, opt)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive(), "the toggling thread hung"
    assert not errors, errors
    assert _core._split_steps() > before
    for k, v in model.parameters().items():
        assert np.all(np.isfinite(v)), k
    model.train_step(x, y, loss, opt)          # the count is settled now
    assert nl.get_num_threads() == 2


@needs_pool
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_forward_splits_its_rows_too(threads, dtype, rtol):
    """predict and forward of a big batch split its rows between the threads
    (counted by _split_steps): the same outputs as a whole forward, and the
    activations it keeps serve backward as before."""
    threads(2)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((300, 256)).astype(dtype)
    dout = rng.standard_normal((300, 10)).astype(dtype)
    out = {}
    for mode in (0, -1):
        old = _core._split_mode(mode)
        try:
            model = mid_model(dtype)
            before = _core._split_steps()
            pred = model.predict(x)
            fwd = model.forward(x)
            dx = model.backward(dout)
            grads = {k: np.array(v) for k, v in model.grads.items()}
            assert _core._split_steps() - before == (2 if mode else 0)
            out[mode] = (pred, fwd, dx, grads)
        finally:
            _core._split_mode(old)
    # in float32 the two paths may take different products (unpacked
    # kernels for a block of rows, OpenBLAS for the whole batch): sums agree
    # to a few roundings of their largest terms, so atol scales with the
    # array there; float64 products always go to OpenBLAS
    def atol(b):
        return rtol * max(1.0, np.abs(b).max()) if dtype == np.float32 else rtol

    for a, b in zip(out[-1][:3], out[0][:3]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol(b))
    for k in out[0][3]:
        b = out[0][3][k]
        np.testing.assert_allclose(out[-1][3][k], b, rtol=rtol, atol=atol(b), err_msg=k)
