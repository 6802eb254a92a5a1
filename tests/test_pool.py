"""nnlayers' worker threads (csrc/core/pool.c): OpenBLAS's parallel products
run on them, and fit gathers the next minibatch on them.

Products big enough to be split (more than 2^19 multiply-adds) and at least
two threads are needed for the pool to do anything, so the models here are
mid-sized and the thread count is set to 2 (or more) explicitly."""
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

threadpoolctl = pytest.importorskip("threadpoolctl")  # in the test extras

POOL_OFF = os.environ.get("NNLAYERS_POOL") == "0"


@pytest.fixture
def two_threads():
    old = nl.get_num_threads()
    nl.set_num_threads(2)
    yield
    nl.set_num_threads(old)


@pytest.fixture
def no_split():
    """Training steps whole, products split by OpenBLAS (as with NNLAYERS_POOL=0,
    where there is no batch split)."""
    old = _core._split_mode(0)
    yield
    _core._split_mode(old)


def mid_model(seed=0):
    # 96 x 384 activations: big enough for the elementwise passes to be
    # split between the threads too (NN_PAR_GRAIN)
    return nl.Sequential(nl.Linear(256, 384, seed=seed), nl.ReLU(),
                         nl.Linear(384, 128, seed=seed + 1), nl.Tanh(),
                         nl.Linear(128, 10, seed=seed + 2))


def mid_data(n=96, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 256)).astype(np.float32),
            rng.integers(0, 10, size=n))


def train(model, X, y, steps=5, epochs=2, **sgd):
    """A few train_steps, then fit epochs with shuffling: the parameters."""
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=0.05, **(sgd or {"momentum": 0.9}))
    for i in range(steps):
        model.train_step(X[i * 16:(i + 1) * 16 + 48], y[i * 16:(i + 1) * 16 + 48], loss, opt)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=epochs, batch_size=40, seed=7,
              verbose=0)
    return {k: np.array(v) for k, v in model.parameters().items()}


def test_pool_is_installed_with_the_pinned_openblas():
    info = _core._pool_info()
    if POOL_OFF:
        assert info == {"installed": False, "workers": 0}
    else:
        assert info["installed"] is True
        assert info["workers"] >= nl.get_num_threads() - 1


def test_set_num_threads_makes_the_workers(two_threads):
    nl.set_num_threads(3)
    assert nl.get_num_threads() == 3
    workers = _core._pool_info()["workers"]
    if POOL_OFF:    # NNLAYERS_POOL=0: OpenBLAS keeps its threads, none of ours
        assert workers == 0
    else:
        assert workers >= 2


RESULTS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {here!r})
    import nnlayers as nl
    from test_pool import mid_model, mid_data, train
    nl.set_num_threads(2)
    X, y = mid_data()
    params = train(mid_model(), X, y, **{sgd!r})
    np.savez({out!r}, **params)
    print(nl._core._pool_info()["installed"])
""")


@pytest.mark.parametrize("sgd", [{"momentum": 0.9}, {},
                                 {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}])
def test_results_are_bitwise_those_of_openblas_own_threads(two_threads, no_split, tmp_path,
                                                          sgd):
    """The same products split the same way, and elementwise passes split
    by position: running OpenBLAS's jobs on nnlayers' workers, splitting
    the elementwise passes and gathering on them changes no bit. (The batch
    split of training steps, off here, is compared in test_split.py.)"""
    X, y = mid_data()
    mine = train(mid_model(), X, y, **sgd)
    out = tmp_path / "openblas_threads.npz"
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NNLAYERS_POOL="0")
    script = RESULTS_SCRIPT.format(here=here, out=str(out), sgd=sgd)
    done = subprocess.run([sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"        # the child used OpenBLAS's threads
    theirs = np.load(out)
    assert set(theirs.files) == set(mine)
    for k in mine:
        np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)


def test_fit_gather_on_workers_matches_a_manual_loop(two_threads):
    """fit's shuffled minibatches, gathered partly on a worker, are exactly
    X[order[batch]]: the same parameters as train_step on those batches."""
    X, y = mid_data(n=130)        # a partial last batch
    a, b = mid_model(5), mid_model(5)
    loss_a, loss_b = nl.SoftmaxCrossEntropy(), nl.SoftmaxCrossEntropy()
    opt_a, opt_b = nl.SGD(a, lr=0.05), nl.SGD(b, lr=0.05)
    a.fit(X, y, loss=loss_a, optimizer=opt_a, epochs=2, batch_size=32, seed=11, verbose=0)
    for epoch in range(2):   # fit's order: the generator of (seed, epoch)
        order = np.random.default_rng([11, epoch]).permutation(len(X))
        for s in range(0, len(X), 32):
            idx = order[s:s + 32]
            b.train_step(X[idx], y[idx], loss_b, opt_b)
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(v, b.parameters()[k], err_msg=k)


def test_more_threads_than_cores_through_threadpoolctl(two_threads):
    """threadpoolctl raises OpenBLAS's count behind nnlayers' back: the pool
    makes the workers on the first product. A different split of the
    products may round differently (an ulp), nothing more."""
    X, y = mid_data()
    want = train(mid_model(), X, y, epochs=1)
    with threadpoolctl.threadpool_limits(limits=4, user_api="blas"):
        assert nl.get_num_threads() == 4
        got = train(mid_model(), X, y, epochs=1)
        if not POOL_OFF:
            assert _core._pool_info()["workers"] >= 3
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_two_python_threads_train_two_models_at_once(two_threads):
    """Parallel products from two user threads take turns on the pool; each
    model ends exactly where it does alone."""
    X, y = mid_data()
    want = [train(mid_model(s), X, y, epochs=3) for s in (0, 10)]
    got, errors = [None, None], []

    def run(i, seed):
        try:
            got[i] = train(mid_model(seed), X, y, epochs=3)
        except BaseException as e:     # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate((0, 10))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a training thread hung"
    assert not errors, errors
    for w, g in zip(want, got):
        for k in w:
            np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def _train_in_child(queue):
    nl.set_num_threads(2)
    X, y = mid_data()
    params = train(mid_model(), X, y, epochs=1)
    queue.put({k: v.tolist() for k, v in params.items()})


def test_forked_child_starts_its_own_workers(two_threads):
    """After fork the child has none of the parent's threads; its first
    parallel product must start new workers rather than wait for ghosts."""
    X, y = mid_data()
    train(mid_model(), X, y, epochs=1)          # the parent's workers exist
    want = train(mid_model(), X, y, epochs=1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_train_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    for k in want:
        np.testing.assert_array_equal(np.array(got[k], np.float32), want[k], err_msg=k)


def test_fit_stopped_by_the_callback_leaves_no_gather_running(two_threads):
    """An epoch that stops early (a non-finite loss in its first batch, or a
    per-batch callback raising in its second) must not leave a worker
    writing into the model's buffers: the model trains normally right
    after."""
    X, y = mid_data(n=200)
    X = X.copy()
    model = mid_model()
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=0.05)
    huge = np.full((200, 10), np.inf, np.float32)   # an infinite squared error
    with pytest.raises(nl.NonFiniteLossError):
        model.fit(X, huge, loss=nl.MSE(), optimizer=opt, epochs=1, batch_size=20, seed=1,
                  verbose=0)

    def stop_at_second(batch, logs):
        if batch == 1:
            raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=20, seed=1, verbose=0,
                  callbacks=[nl.callbacks.LambdaCallback(on_batch_end=stop_at_second)])
    for _ in range(3):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=20, seed=2, verbose=0)
    assert all(np.all(np.isfinite(v)) for v in model.parameters().values())
