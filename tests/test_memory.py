"""Memory behaviour: no growth of the resident set over many calls, input
reference counts left as they were, no leak on error paths, and no heap
allocation by the C core in steady state (``nnlayers._core.alloc_count()``).

Profiles
--------
default (CI)        20,000 calls of each operation, 2,000 iterations of each
                    error case (100 for loading a corrupt file).
NNLAYERS_HEAVY=1    100,000 calls of each operation, 10,000 iterations of each
                    error case (500 for loading a corrupt file).

Every loop is preceded by a warm-up (2,000 calls) so NumPy's caches, the
allocator's arenas and the model's workspace are in place before measuring.
The resident set is read from ``/proc/self/statm`` (current RSS, not the
peak); growth must stay under 1 MiB. Because a leak can hide in memory the
process freed earlier (the whole suite runs in one process), two more
figures are checked: bytes malloc has handed out (glibc's mallinfo2, also
under 1 MiB) and Python's allocated blocks (sys.getallocatedblocks: fewer
than one per 20 calls). Run with ``-s`` to see the measured figures (lines
starting with ``[rss]``).
"""

import ctypes
import gc
import os
import sys

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

HEAVY = os.environ.get("NNLAYERS_HEAVY") == "1"
CALLS = 100_000 if HEAVY else 20_000
WARMUP = 2_000
ERR_ITERS = 10_000 if HEAVY else 2_000
LOAD_ITERS = 500 if HEAVY else 100
RSS_LIMIT = 1 << 20          # 1 MiB
PAGE = os.sysconf("SC_PAGE_SIZE")

needs_statm = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                 reason="needs /proc/self/statm (Linux)")


def rss_bytes():
    """Current resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


try:
    _mallinfo2 = ctypes.CDLL(None).mallinfo2
    _mallinfo2.restype = _MallInfo2
except (OSError, AttributeError):      # not glibc >= 2.33
    _mallinfo2 = None


def heap_bytes():
    """Bytes malloc has handed out and not got back (glibc's mallinfo2), or
    None. Unlike the RSS it also sees a leak that fits in memory the
    process freed earlier (when the whole suite runs in one process)."""
    if _mallinfo2 is None:
        return None
    m = _mallinfo2()
    return m.uordblks + m.hblkhd


class Growth:
    """What n calls added: resident set, malloc'd bytes in use, and
    Python's allocated memory blocks (objects)."""

    def __init__(self, rss, heap, blocks, n):
        self.rss, self.heap, self.blocks, self.n = rss, heap, blocks, n

    def __str__(self):
        heap = "n/a" if self.heap is None else f"{self.heap / 1024:+.1f} KiB"
        return (f"RSS {self.rss / 1024:+.1f} KiB, malloc in use {heap}, "
                f"Python blocks {self.blocks:+d} over {self.n} calls")

    def check(self, what):
        assert self.rss < RSS_LIMIT, f"{what}: resident set grew: {self}"
        assert self.heap is None or self.heap < RSS_LIMIT, f"{what}: malloc'd memory grew: {self}"
        # a leaked object per call would add n blocks
        assert self.blocks < max(50, self.n // 20), f"{what}: Python objects accumulate: {self}"


def measure(fn, n, warmup=WARMUP):
    """Growth over ``n`` calls of fn, after a warm-up."""
    for _ in range(warmup):
        fn()
    gc.collect()
    rss0, heap0, blocks0 = rss_bytes(), heap_bytes(), sys.getallocatedblocks()
    for _ in range(n):
        fn()
    gc.collect()
    heap1 = heap_bytes()
    return Growth(rss_bytes() - rss0, None if heap0 is None else heap1 - heap0,
                  sys.getallocatedblocks() - blocks0, n)


def report(name, growth):
    print(f"\n[rss] {name}: {growth}")


def small_problem(dtype=np.float32, seed=0):
    """An 8-16-4 model at batch 4, its data, a loss and an SGD with momentum."""
    rng = np.random.default_rng(seed)
    model = nl.Sequential(nl.Linear(8, 16, dtype=dtype, seed=seed), nl.Tanh(),
                          nl.Linear(16, 4, dtype=dtype, seed=seed + 1))
    x = rng.standard_normal((4, 8)).astype(dtype)
    labels = rng.integers(0, 4, size=4)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=1e-3, momentum=0.9)
    return model, x, labels, loss, opt


# ---------------------------------------------------------------------------
# resident set over many successful calls
# ---------------------------------------------------------------------------

def _model_case(what):
    model, x, labels, loss, opt = small_problem()
    gout = np.full((4, 4), 0.25, dtype=np.float32)
    # an input the binding must convert (float64, Fortran order): a leaked
    # copy would cost ~300 bytes a call
    x_conv = np.asfortranarray(x.astype(np.float64))
    X = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    Y = np.random.default_rng(2).integers(0, 4, size=64)
    if what == "model.train_step":
        return lambda: model.train_step(x, labels, loss, opt)
    if what == "model.train_step(converted input)":
        return lambda: model.train_step(x_conv, labels.astype(np.int32), loss, opt)
    if what == "model.forward+backward":
        def fb():
            model.forward(x)
            model.backward(gout)
        return fb
    if what == "model.forward":
        return lambda: model.forward(x)
    if what == "model.predict(batch_size=16)":
        return lambda: model.predict(X, batch_size=16)
    if what == "model._fit_epoch(64 rows, batch 16)":
        order = np.arange(64, dtype=np.int64)[::-1].copy()
        return lambda: model._fit_epoch(X, Y, loss, opt, 16, order=order)
    raise AssertionError(what)


def _layer_case(what):
    rng = np.random.default_rng(3)
    x32 = rng.standard_normal((4, 8)).astype(np.float32)
    x64 = rng.standard_normal((4, 8))
    if what == "Linear.forward+backward":
        layer, x = nl.Linear(8, 16, seed=4), x32
    elif what == "Tanh.forward+backward":
        layer, x = nl.Tanh(), x64
    elif what == "LogSoftmax.forward+backward(strided input)":
        big = np.zeros((8, 16))
        big[::2, ::2] = x64
        layer, x = nl.LogSoftmax(), big[::2, ::2]          # converted on every call
    else:
        raise AssertionError(what)
    g = np.ones(layer.forward(x).shape, dtype=layer.forward(x).dtype)
    layer.backward(g)

    def fb():
        layer.forward(x)
        layer.backward(g)
    return fb


def _loss_case(what):
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((4, 3))
    if what == "SoftmaxCrossEntropy.forward+backward":
        loss, t = nl.SoftmaxCrossEntropy(), rng.integers(0, 3, size=4)
    elif what == "NLL.forward+backward(float labels)":
        loss, t = nl.NLL(), rng.integers(0, 3, size=4).astype(np.float64)
    elif what == "BinaryCrossEntropy.forward+backward":
        loss, t = nl.BinaryCrossEntropy(), rng.random((4, 3))
    elif what == "MSE.forward+backward(float32)":
        loss, pred, t = nl.MSE(), pred.astype(np.float32), rng.standard_normal((4, 3))
    else:
        raise AssertionError(what)

    def fb():
        loss.forward(pred, t)
        loss.backward()
    return fb


MODEL_CASES = ["model.train_step", "model.train_step(converted input)",
               "model.forward+backward", "model.forward", "model.predict(batch_size=16)",
               "model._fit_epoch(64 rows, batch 16)"]
LAYER_CASES = ["Linear.forward+backward", "Tanh.forward+backward",
               "LogSoftmax.forward+backward(strided input)"]
LOSS_CASES = ["SoftmaxCrossEntropy.forward+backward", "NLL.forward+backward(float labels)",
              "BinaryCrossEntropy.forward+backward", "MSE.forward+backward(float32)"]


@needs_statm
@pytest.mark.parametrize("what", MODEL_CASES + LAYER_CASES + LOSS_CASES + ["SGD.step"])
def test_rss_does_not_grow_over_many_calls(what):
    if what in MODEL_CASES:
        fn = _model_case(what)
    elif what in LAYER_CASES:
        fn = _layer_case(what)
    elif what in LOSS_CASES:
        fn = _loss_case(what)
    else:
        model, x, labels, loss, opt = small_problem()
        model.train_step(x, labels, loss, opt)
        fn = opt.step
    # fit epochs are 4 batches each: a quarter of the calls keeps the
    # number of train steps the same as for the others
    n = CALLS // 4 if "_fit_epoch" in what else CALLS
    growth = measure(fn, n)
    report(what, growth)
    growth.check(what)


@needs_statm
def test_leak_detectors_see_a_real_leak():
    """The measurements work: keeping 2 KiB a call (32768 calls, 64 MiB: more
    than the freed memory an earlier test could leave for it to hide in) is
    seen by each of them."""
    kept = []
    growth = measure(lambda: kept.append(np.ones(256)), 32768, warmup=10)
    report("control (keeps 2 KiB a call)", growth)
    assert growth.rss > RSS_LIMIT
    assert growth.heap is None or growth.heap > RSS_LIMIT
    assert growth.blocks >= 32768


# ---------------------------------------------------------------------------
# reference counts of the arguments
# ---------------------------------------------------------------------------

def refcounts(*objs):
    return [sys.getrefcount(o) for o in objs]


def test_train_step_keeps_no_references():
    model, x, labels, loss, opt = small_problem()
    layers = model.layers
    model.train_step(x, labels, loss, opt)
    before = refcounts(x, labels, loss, opt, model, *layers)
    for _ in range(1000):
        model.train_step(x, labels, loss, opt)
    assert refcounts(x, labels, loss, opt, model, *layers) == before


def test_fit_keeps_no_references():
    model, _, _, loss, opt = small_problem()
    rng = np.random.default_rng(6)
    X = rng.standard_normal((40, 8)).astype(np.float32)
    Y = rng.integers(0, 4, size=40)
    Xv, Yv = X[:20].copy(), Y[:20].copy()
    model.fit(X, Y, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    before = refcounts(X, Y, Xv, Yv, loss, opt, model)
    for _ in range(50):
        model.fit(X, Y, loss=loss, optimizer=opt, epochs=2, batch_size=8, verbose=0,
                  validation_data=(Xv, Yv))
    # validation predicts on Xv, which keeps nothing (unlike forward, whose
    # values serve a backward)
    assert refcounts(X, Y, Xv, Yv, loss, opt, model) == before
    model.fit(X, Y, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    assert refcounts(X, Y, Xv, Yv, loss, opt, model) == before


def test_model_holds_its_input_exactly_until_backward():
    """forward keeps one reference to an input it reads in place (for the
    backward that follows) and none to one it converted; backward, a failed
    forward and train_step drop it."""
    model, x, labels, loss, opt = small_problem()
    g = np.ones((4, 4), dtype=np.float32)
    base_x, base_g = sys.getrefcount(x), sys.getrefcount(g)
    for _ in range(1000):
        model.forward(x)
        assert sys.getrefcount(x) == base_x + 1        # the pending backward's input
        model.backward(g)
        assert sys.getrefcount(x) == base_x
    assert sys.getrefcount(g) == base_g
    model.forward(x)
    model.train_step(x, labels, loss, opt)             # no backward pending any more
    assert sys.getrefcount(x) == base_x
    xf = np.asfortranarray(x.astype(np.float64))       # converted: the copy is held
    base_xf = sys.getrefcount(xf)
    model.forward(xf)
    assert sys.getrefcount(xf) == base_xf
    model.backward(g)
    assert sys.getrefcount(xf) == base_xf


def test_standalone_layer_and_loss_references():
    rng = np.random.default_rng(7)
    lin = nl.Linear(8, 3, dtype=np.float64, seed=8)
    x = rng.standard_normal((5, 8))
    g = np.ones((5, 3))
    base = sys.getrefcount(x)
    for _ in range(1000):
        y = lin.forward(x)
        assert sys.getrefcount(x) == base + 1           # kept for backward
        assert sys.getrefcount(y) == 3                   # y, the layer, getrefcount's argument
        lin.backward(g)
        assert sys.getrefcount(x) == base
        assert sys.getrefcount(y) == 2
    loss = nl.SoftmaxCrossEntropy()
    pred, t = rng.standard_normal((5, 3)), rng.integers(0, 3, size=5)
    before = refcounts(pred, t, loss)
    for _ in range(1000):
        loss.forward(pred, t)
        gp = loss.backward()
        assert sys.getrefcount(gp) == 2                  # handed over, not kept
    assert refcounts(pred, t, loss) == before


# ---------------------------------------------------------------------------
# error paths
# ---------------------------------------------------------------------------

class ErrorCases:
    """Objects shared by the error cases. The bad inputs are large and need
    converting where possible, so a leaked copy would show in the RSS."""

    def __init__(self, tmp_path):
        rng = np.random.default_rng(9)
        self.model, self.x, self.labels, self.loss, self.opt = small_problem()
        self.lin = nl.Linear(8, 4, seed=10)
        self.tanh = nl.Tanh()
        self.x_wide = np.asfortranarray(rng.standard_normal((512, 7)))       # 28 KiB, float64
        self.x_3d = rng.standard_normal((64, 8, 2))
        self.x_1d = rng.standard_normal(8)
        self.x_obj = np.array([[object()] * 8] * 4, dtype=object)
        self.x512 = rng.standard_normal((512, 8))                             # float64: converted
        self.bad_labels = rng.integers(0, 4, size=512).astype(np.float64)   # 4 KiB, converted
        self.bad_labels[-1] = 4                                              # out of range, last
        self.frac_labels = self.bad_labels.copy()
        self.frac_labels[-1] = 1.5
        self.pred = rng.standard_normal((512, 4))
        self.g4 = np.ones((4, 4), dtype=np.float32)
        path = tmp_path / "model.npz"
        self.model.save(path)
        raw = path.read_bytes()
        self.truncated = tmp_path / "truncated.npz"
        self.truncated.write_bytes(raw[: len(raw) // 2])
        self.garbage = tmp_path / "garbage.npz"
        self.garbage.write_bytes(bytes(rng.integers(0, 256, size=len(raw), dtype=np.uint8)))
        self.bad_shape = tmp_path / "bad_shape.npz"
        arrays = {k: np.array(v) for k, v in self.model.parameters().items()}
        arrays["0.W"] = arrays["0.W"][:, :3]
        import json
        arch = {"format": "nnlayers-sequential", "version": 1, "dtype": "float32",
                "layers": [{"class": type(layer).__name__, "config": layer.get_config(),
                            "trainable": True} for layer in self.model.layers]}
        with open(self.bad_shape, "wb") as f:
            np.savez(f, __architecture__=np.array(json.dumps(arch)), **arrays)

    def sentinels(self):
        return (self.model, self.x, self.labels, self.loss, self.opt, self.lin, self.tanh,
                self.x_wide, self.x_3d, self.x512, self.bad_labels, self.pred,
                *self.model.layers)

    def cases(self):
        m, loss, opt = self.model, self.loss, self.opt
        return {
            "wrong width (forward)": (ValueError, lambda: m.forward(self.x_wide)),
            "wrong width (train_step)": (
                ValueError, lambda: m.train_step(self.x_wide, self.bad_labels, loss, opt)),
            "wrong width (Linear)": (ValueError, lambda: self.lin.forward(self.x_wide)),
            "wrong ndim (3-D)": (ValueError, lambda: m.forward(self.x_3d)),
            "wrong ndim (1-D, Linear)": (ValueError, lambda: self.lin.forward(self.x_1d)),
            "None input (model)": (TypeError, lambda: m.forward(None)),
            "None input (Tanh)": (TypeError, lambda: self.tanh.forward(None)),
            "None target (loss)": (TypeError, lambda: loss.forward(self.pred, None)),
            "object input": (TypeError, lambda: m.forward(self.x_obj)),
            "bad labels (train_step)": (
                ValueError, lambda: m.train_step(self.x512, self.bad_labels, loss, opt)),
            "bad labels (loss)": (ValueError, lambda: loss.forward(self.pred, self.bad_labels)),
            "fractional labels (loss)": (
                ValueError, lambda: loss.forward(self.pred, self.frac_labels)),
            "backward before forward (model)": (ValueError, lambda: m.backward(self.g4)),
            "backward before forward (Linear)": (ValueError, lambda: self.lin.backward(self.g4)),
            "backward before forward (loss)": (ValueError, nl.SoftmaxCrossEntropy().backward),
            "fit batch_size=0": (ValueError, lambda: m.fit(self.x512, self.bad_labels, loss=loss,
                                                           optimizer=opt, batch_size=0, verbose=0)),
            "fit batch_size=-3 (C)": (ValueError, lambda: m._fit_epoch(self.x512, self.bad_labels,
                                                                      loss, opt, -3)),
            "SGD momentum<0": (ValueError, lambda: nl.SGD(m, lr=0.1, momentum=-0.9)),
            "SGD lr=-1": (ValueError, lambda: nl.SGD(m, lr=-1.0)),
            "SGD lr=nan": (ValueError, lambda: nl.SGD(m.layers, lr=float("nan"))),
            "load truncated file": (ValueError, lambda: nl.load(self.truncated)),
            "load garbage file": (ValueError, lambda: nl.load(self.garbage)),
            "load mismatched shapes": (ValueError, lambda: nl.load(self.bad_shape)),
        }


ERROR_CASE_NAMES = [
    "wrong width (forward)", "wrong width (train_step)", "wrong width (Linear)",
    "wrong ndim (3-D)", "wrong ndim (1-D, Linear)", "None input (model)", "None input (Tanh)",
    "None target (loss)", "object input", "bad labels (train_step)", "bad labels (loss)",
    "fractional labels (loss)", "backward before forward (model)",
    "backward before forward (Linear)", "backward before forward (loss)", "fit batch_size=0",
    "fit batch_size=-3 (C)", "SGD momentum<0", "SGD lr=-1", "SGD lr=nan", "load truncated file",
    "load garbage file", "load mismatched shapes"]


@needs_statm
@pytest.mark.parametrize("case", ERROR_CASE_NAMES)
def test_error_path_does_not_leak(case, tmp_path):
    objs = ErrorCases(tmp_path)
    assert sorted(objs.cases()) == sorted(ERROR_CASE_NAMES)
    exc_type, fn = objs.cases()[case]
    n = LOAD_ITERS if case.startswith("load") else ERR_ITERS

    def call():
        try:
            fn()
        except exc_type:
            return
        raise AssertionError(f"{case}: expected {exc_type.__name__}")

    for _ in range(max(10, n // 10)):           # warm-up
        call()
    gc.collect()
    before_refs = refcounts(*objs.sentinels())
    before_allocs = _core.alloc_count()
    growth = measure(call, n, warmup=0)
    after_refs = refcounts(*objs.sentinels())
    report(f"error path: {case}", growth)
    growth.check(case)
    assert after_refs == before_refs, f"{case}: reference counts changed"
    assert _core.alloc_count() == before_allocs, f"{case}: the C core allocated"
    # the objects still work
    objs.model.train_step(objs.x, objs.labels, objs.loss, objs.opt)
    assert np.all(np.isfinite(objs.model._param_block()))


# ---------------------------------------------------------------------------
# no heap allocation by the C core in steady state (alloc_count)
# ---------------------------------------------------------------------------

def test_alloc_counter_counts():
    """The counter moves when the core does allocate: a new model (blocks,
    workspace) and a first call at a larger batch (workspace growth)."""
    a0 = _core.alloc_count()
    model, x, labels, loss, opt = small_problem()
    a1 = _core.alloc_count()
    assert a1 > a0
    model.forward(x)
    a2 = _core.alloc_count()
    assert a2 > a1                                    # first workspace
    model.forward(np.zeros((64, 8), np.float32))
    assert _core.alloc_count() > a2                   # a larger batch grows it


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, True, 1e-4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_makes_no_allocations_after_warmup(dtype, momentum, nesterov, wd):
    model, x, labels, loss, _ = small_problem(dtype)
    opt = nl.SGD(model, lr=1e-3, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    for _ in range(10):
        model.train_step(x, labels, loss, opt)
    before = _core.alloc_count()
    for _ in range(1000):
        model.train_step(x, labels, loss, opt)
    assert _core.alloc_count() == before


@pytest.mark.parametrize("sgd", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}])
def test_threaded_train_step_and_fit_make_no_core_allocations(sgd):
    """With two threads and products big enough to be split: OpenBLAS's
    jobs and the elementwise passes run on nnlayers' workers, fit gathers on
    them; the core still allocates nothing after warm-up. (OpenBLAS's own
    threaded level-3 driver mallocs its job table per split product; that is
    OpenBLAS's allocator, not the core's.)"""
    old = nl.get_num_threads()
    nl.set_num_threads(2)
    try:
        rng = np.random.default_rng(13)
        model = nl.Sequential(nl.Linear(256, 512, seed=0), nl.ReLU(), nl.Linear(512, 10, seed=1))
        loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=1e-3, **sgd)
        X = rng.standard_normal((512, 256)).astype(np.float32)
        y = rng.integers(0, 10, size=512)
        for _ in range(3):
            model.train_step(X[:128], y[:128], loss, opt)
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=128, seed=0, verbose=0)
        before = _core.alloc_count()
        for _ in range(200):
            model.train_step(X[:128], y[:128], loss, opt)
        model.fit(X, y, loss=loss, optimizer=opt, epochs=3, batch_size=128, seed=1, verbose=0)
        assert _core.alloc_count() == before
    finally:
        nl.set_num_threads(old)


def test_forward_backward_make_no_allocations_at_a_fixed_batch():
    model, x, _, _, _ = small_problem(np.float64)
    g = np.ones((4, 4))
    model.forward(x)
    model.backward(g)
    before = _core.alloc_count()
    for _ in range(1000):
        model.forward(x)
        model.backward(g)
    model.forward(x[:2])                  # a smaller batch fits the workspace
    model.backward(g[:2])
    assert _core.alloc_count() == before


def test_fit_makes_no_allocations_after_the_first_epoch():
    model, _, _, loss, opt = small_problem()
    rng = np.random.default_rng(11)
    X = rng.standard_normal((50, 8)).astype(np.float32)      # last batch partial
    Y = rng.integers(0, 4, size=50)
    Xv, Yv = X[:30], Y[:30]
    model.fit(X, Y, loss=loss, optimizer=opt, epochs=1, batch_size=8, seed=0, verbose=0,
              validation_data=(Xv, Yv))
    before = _core.alloc_count()
    model.fit(X, Y, loss=loss, optimizer=opt, epochs=5, batch_size=8, seed=1, verbose=0,
              validation_data=(Xv, Yv))
    model.fit(X, Y, loss=loss, optimizer=opt, epochs=3, batch_size=8, shuffle=False, verbose=0)
    model.fit(X, Y.astype(np.float64), loss=loss, optimizer=opt, epochs=2, batch_size=3,
              verbose=0)
    assert _core.alloc_count() == before
    # dense targets (a second gather buffer): one growth, then none
    T = np.eye(4, dtype=np.float32)[Y]
    model.fit(X, T, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    before = _core.alloc_count()
    model.fit(X, T, loss=loss, optimizer=opt, epochs=4, batch_size=8, verbose=0)
    assert _core.alloc_count() == before


def test_layers_losses_and_sgd_make_no_core_allocations():
    rng = np.random.default_rng(12)
    lin = nl.Linear(8, 4, seed=13)
    acts = [nl.ReLU(), nl.Softmax(), nl.LogSoftmax(), nl.Softplus(), nl.GELU(), nl.SiLU(),
            nl.ELU(), nl.Softsign(), nl.Hardtanh()]
    losses = [(nl.SoftmaxCrossEntropy(), rng.integers(0, 4, size=6)),
              (nl.BinaryCrossEntropy(), rng.random((6, 4))),
              (nl.MSE(), rng.standard_normal((6, 4))), (nl.NLL(), rng.integers(0, 4, size=6))]
    opt = nl.SGD(lin, lr=1e-3, momentum=0.5)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    before = _core.alloc_count()
    for _ in range(200):
        y = lin.forward(x)
        lin.backward(np.ones_like(y))
        opt.step()
        for a in acts:
            a.forward(y)
            a.backward(np.ones_like(y))
        for loss, t in losses:
            loss.forward(y, t)
            loss.backward()
    assert _core.alloc_count() == before
