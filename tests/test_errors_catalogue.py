"""The catalogue of bad inputs (docs/errors.md), one test per row.

Every test checks three things: the exception type, a message that names
the argument and what was expected, and that the object still works
afterwards (a correct call succeeds and gives bit-for-bit the result a
fresh object with equal parameters gives). Rows already covered that way
elsewhere in tests/ are referenced from docs/errors.md instead of being
repeated here. The last test keeps docs/errors.md honest: every test name
in its "Test" column must exist in tests/.
"""
import copy
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

ROOT = pathlib.Path(__file__).resolve().parent.parent
N, D_IN, D_HID, D_OUT = 6, 4, 5, 3
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# objects under test and "still works" checks
# ---------------------------------------------------------------------------

def make_linear(dtype=np.float64):
    lin = nl.Linear(D_IN, D_OUT, dtype=dtype, seed=3)
    lin.params["b"] = np.linspace(-0.5, 0.5, D_OUT)
    return lin


def make_model(dtype=np.float64):
    model = nl.Sequential(nl.Linear(D_IN, D_HID, dtype=dtype, seed=4), nl.Tanh(),
                          nl.Linear(D_HID, D_OUT, dtype=dtype, seed=5))
    model[0].params["b"] = np.linspace(-1, 1, D_HID)
    return model


def make_data(seed=0, n=N, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D_IN)).astype(dtype), rng.integers(0, D_OUT, n)


def snapshot(obj):
    p = obj.parameters() if hasattr(obj, "parameters") else obj.params
    return {k: np.array(v, copy=True) for k, v in p.items()}


def grads_of(obj):
    g = obj.gradients() if hasattr(obj, "gradients") else obj.grads
    return {k: np.array(v, copy=True) for k, v in g.items()}


def assert_same_dict(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), k


def assert_forward_backward_like(obj, fresh, width_in=D_IN, seed=1):
    """forward + backward on obj equal the same on a fresh twin, bitwise."""
    rng = np.random.default_rng(seed)
    dt = obj.dtype if obj.dtype is not None else np.float64
    x = rng.standard_normal((N, width_in)).astype(dt)
    results = []
    for o in (obj, fresh):
        o.zero_grad()
        y = o.forward(x)
        gy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(y.dtype)
        results.append((y, o.backward(gy), grads_of(o)))
    (y, gx, g), (y2, gx2, g2) = results
    assert y.dtype == y2.dtype and np.array_equal(y, y2)
    assert gx.dtype == gx2.dtype and np.array_equal(gx, gx2)
    assert_same_dict(g, g2)


def assert_trains_like(model, fresh, opt=None, fresh_opt=None, seed=2):
    """forward/backward and two train_steps on model equal those on fresh."""
    assert_same_dict(snapshot(model), snapshot(fresh))
    assert_forward_backward_like(model, fresh, seed=seed)
    opt = opt if opt is not None else nl.SGD(model, 0.1, momentum=0.5)
    fresh_opt = fresh_opt if fresh_opt is not None else nl.SGD(fresh, 0.1, momentum=0.5)
    for k in range(2):
        x, y = make_data(seed + 10 + k, dtype=model.dtype)
        v1 = model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
        v2 = fresh.train_step(x, y, nl.SoftmaxCrossEntropy(), fresh_opt)
        assert v1 == v2
        assert_same_dict(snapshot(model), snapshot(fresh))


def assert_loss_like(loss, cls, pred, target):
    """loss.forward/backward equal those of a fresh loss, bitwise."""
    fresh = cls()
    assert loss.forward(pred, target) == fresh.forward(pred, target)
    g, g2 = loss.backward(), fresh.backward()
    assert g.dtype == g2.dtype and np.array_equal(g, g2)


# ---------------------------------------------------------------------------
# shapes: ndim, width, batch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(N * D_OUT,), (1, N, D_OUT)])
def test_err_ndim_loss_pred(shape):
    loss = nl.MSE()
    pred = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"pred must be a 2-D array.*got a {len(shape)}-D"):
        loss.forward(pred, np.zeros((N, D_OUT)))
    with pytest.raises(ValueError, match=r"forward\(pred, target\) first"):
        loss.backward()
    assert_loss_like(loss, nl.MSE, np.ones((N, D_OUT)), np.zeros((N, D_OUT)))


@pytest.mark.parametrize("how", ["train_step", "fit"])
def test_err_ndim_training(how):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    bad = x.ravel()
    if how == "train_step":
        with pytest.raises(ValueError, match=r"x must be a 2-D array.*got a 1-D"):
            model.train_step(bad, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
    else:
        with pytest.raises(ValueError, match=r"X must be a 2-D array.*got a 1-D array of shape"):
            model.fit(bad, y, optimizer=nl.SGD(model, 0.1), verbose=0)
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("how", ["train_step", "fit"])
def test_err_width_training(how):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    bad = np.hstack([x, x[:, :1]])
    name = "x" if how == "train_step" else "X"
    msg = rf"{name} has {D_IN + 1} columns, but layer 0 \(Linear\(in_features={D_IN}.*input width of {D_IN}"
    with pytest.raises(ValueError, match=msg):
        if how == "train_step":
            model.train_step(bad, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
        else:
            model.fit(bad, y, optimizer=nl.SGD(model, 0.1), verbose=0)
    assert_trains_like(model, fresh)


GRAD_ROW_OBJECTS = {
    "linear": (make_linear, D_OUT),
    "tanh": (lambda: nl.Tanh(dtype=np.float64), D_IN),
    "relu": (lambda: nl.ReLU(dtype=np.float64), D_IN),
    "softmax": (lambda: nl.Softmax(dtype=np.float64), D_IN),
    "log_softmax": (lambda: nl.LogSoftmax(dtype=np.float64), D_IN),
    "model": (make_model, D_OUT),
}


@pytest.mark.parametrize("rows", [N + 1, N - 1, 0])
@pytest.mark.parametrize("name", list(GRAD_ROW_OBJECTS))
def test_err_grad_output_rows(name, rows):
    """grad_output with another batch size than the forward it answers."""
    make, width = GRAD_ROW_OBJECTS[name]
    obj = make()
    x, _ = make_data()
    obj.forward(x)
    with pytest.raises(ValueError, match=rf"grad_output must have the shape of the last "
                                         rf"forward's output \({N}, {width}\), got \({rows}, {width}\)"):
        obj.backward(np.ones((rows, width)))
    assert all(np.all(g == 0) for g in grads_of(obj).values())
    # the refused call consumed nothing: the right backward still works
    fresh = make()
    fresh.forward(x)
    gy = np.ones((N, width))
    assert np.array_equal(obj.backward(gy), fresh.backward(gy))
    assert_same_dict(grads_of(obj), grads_of(fresh))
    assert_forward_backward_like(obj, make())


@pytest.mark.parametrize("count", [N - 1, N + 1])
@pytest.mark.parametrize("how", ["mse_rows", "train_step", "fit"])
def test_err_target_count(how, count):
    """A target with another number of rows than the predictions."""
    if how == "mse_rows":
        loss = nl.MSE()
        with pytest.raises(ValueError, match=rf"target must have shape \({N}, {D_OUT}\) like the "
                                             rf"predictions.*got \({count}, {D_OUT}\)"):
            loss.forward(np.zeros((N, D_OUT)), np.zeros((count, D_OUT)))
        assert_loss_like(loss, nl.MSE, np.ones((N, D_OUT)), np.zeros((N, D_OUT)))
        return
    model, fresh = make_model(), make_model()
    x, _ = make_data()
    y = np.arange(count) % D_OUT
    with pytest.raises(ValueError, match=rf"target has {count} entries but the predictions "
                                         rf"have {N} rows"):
        if how == "train_step":
            model.train_step(x, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
        else:
            model.fit(x, y, optimizer=nl.SGD(model, 0.1), verbose=0)
    assert_trains_like(model, fresh)


def test_err_softmax_without_columns():
    for cls in (nl.Softmax, nl.LogSoftmax):
        layer = cls(dtype=np.float64)
        with pytest.raises(ValueError, match=r"x must have at least one column for a (log_)?softmax layer"):
            layer.forward(np.zeros((N, 0)))
        assert_forward_backward_like(layer, cls(dtype=np.float64))
    loss = nl.MSE()
    with pytest.raises(ValueError, match=r"pred must have at least one column"):
        loss.forward(np.zeros((N, 0)), np.zeros((N, 0)))
    assert_loss_like(loss, nl.MSE, np.ones((N, 2)), np.zeros((N, 2)))


# ---------------------------------------------------------------------------
# kinds: object / complex / string / None
# ---------------------------------------------------------------------------

NON_REAL = {
    "object": lambda shape: np.full(shape, object(), dtype=object),
    "complex": lambda shape: np.ones(shape, dtype=complex),
    "string": lambda shape: np.full(shape, "1"),
    "None": lambda shape: None,
}


@pytest.mark.parametrize("kind", list(NON_REAL))
@pytest.mark.parametrize("which", ["pred", "target"])
def test_err_non_real_loss(which, kind):
    loss = nl.MSE()
    good = np.zeros((N, D_OUT))
    bad = NON_REAL[kind]((N, D_OUT))
    msg = rf"{which} must (be an array of|hold) real numbers"
    with pytest.raises(TypeError, match=msg):
        loss.forward(bad, good) if which == "pred" else loss.forward(good, bad)
    assert_loss_like(loss, nl.MSE, np.ones((N, D_OUT)), good)


@pytest.mark.parametrize("kind", list(NON_REAL))
@pytest.mark.parametrize("which", ["x", "y"])
def test_err_non_real_train_step(which, kind):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    if which == "x":
        args, msg = (NON_REAL[kind]((N, D_IN)), y), r"\bx must (be an array of|hold) real numbers"
    else:
        args, msg = (x, NON_REAL[kind]((N,))), r"target must (be an array of|hold) real numbers"
    with pytest.raises(TypeError, match=msg):
        model.train_step(*args, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("kind", list(NON_REAL))
def test_err_non_real_fit(kind):
    """fit must refuse non-real X like forward and train_step do (TypeError
    naming X), and must not train on it."""
    model, fresh = make_model(), make_model()
    _, y = make_data()
    bad = NON_REAL[kind]((N, D_IN))
    with pytest.raises(TypeError, match=r"\bX\b.*real numbers"):
        model.fit(bad, y, optimizer=nl.SGD(model, 0.1), verbose=0)
    assert_trains_like(model, fresh)


# ---------------------------------------------------------------------------
# labels and targets through train_step / fit (losses: tests/test_losses.py)
# ---------------------------------------------------------------------------

BAD_LABELS = {
    "out_of_range": ([0, 1, 2, 3, 0, 1], r"target labels must be in \[0, 3\), got 3 at index 3"),
    "negative": ([0, 1, -1, 2, 0, 1], r"target labels must be in \[0, 3\), got -1 at index 2"),
    "non_integral": ([0, 1, 2, 0.5, 0, 1], r"target labels must be whole numbers.*0\.5 at index 3"),
    "nan": ([0, 1, 2, np.nan, 0, 1], r"target labels must be whole numbers.*nan at index 3"),
    # float and uint64 labels have range checks of their own (no int64 pass after)
    "float_out_of_range": (np.array([0.0, 1, 2, 3, 0, 1]),
                           r"target labels must be in \[0, 3\), got 3 at index 3"),
    "uint64_past_int64": (np.array([0, 1, 2, 2**63 + 5, 0, 1], dtype=np.uint64),
                          r"target labels must be in \[0, 3\), got 9223372036854775813 "
                          r"at index 3"),
}


@pytest.mark.parametrize("how", ["train_step", "fit"])
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_err_labels_training(case, how):
    labels, msg = BAD_LABELS[case]
    model, fresh = make_model(), make_model()
    opt, fresh_opt = nl.SGD(model, 0.1, momentum=0.9), nl.SGD(fresh, 0.1, momentum=0.9)
    x, y = make_data()
    # some momentum first, so "nothing changed" covers the velocity too
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
    fresh.train_step(x, y, nl.SoftmaxCrossEntropy(), fresh_opt)
    vel = np.array(opt._velocity(), copy=True)
    with pytest.raises(ValueError, match=msg):
        if how == "train_step":
            model.train_step(x, np.array(labels), nl.SoftmaxCrossEntropy(), opt)
        else:
            model.fit(x, np.array(labels), optimizer=opt, shuffle=False, verbose=0)
    np.testing.assert_array_equal(opt._velocity(), vel)
    assert_trains_like(model, fresh, opt, fresh_opt)


def test_err_bce_target_training():
    model = nl.Sequential(nl.Linear(D_IN, 2, dtype=np.float64, seed=6))
    fresh = nl.Sequential(nl.Linear(D_IN, 2, dtype=np.float64, seed=6))
    x, _ = make_data()
    bad = np.full((N, 2), 0.5)
    bad[4, 1] = 1.25
    with pytest.raises(ValueError, match=r"binary cross-entropy targets must be in \[0, 1\], "
                                         r"got 1\.25 at flat index 9"):
        model.train_step(x, bad, nl.BinaryCrossEntropy(), nl.SGD(model, 0.1))
    assert_same_dict(snapshot(model), snapshot(fresh))
    good = np.clip(bad, 0, 1)
    v1 = model.train_step(x, good, nl.BinaryCrossEntropy(), nl.SGD(model, 0.1))
    v2 = fresh.train_step(x, good, nl.BinaryCrossEntropy(), nl.SGD(fresh, 0.1))
    assert v1 == v2
    assert_same_dict(snapshot(model), snapshot(fresh))


# ---------------------------------------------------------------------------
# state: losses (layers and models: tests/test_errors_core.py)
# ---------------------------------------------------------------------------

LOSS_CASES = {
    "sce": (nl.SoftmaxCrossEntropy, lambda: np.array([0, 2, 1, 1, 0, 2])),
    "nll": (nl.NLL, lambda: np.array([0, 2, 1, 1, 0, 2])),
    "bce": (nl.BinaryCrossEntropy, lambda: np.full((N, D_OUT), 0.25)),
    "mse": (nl.MSE, lambda: np.full((N, D_OUT), 0.25)),
}


def _pred():
    return np.linspace(-2, 2, N * D_OUT).reshape(N, D_OUT)


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_err_loss_backward_before_forward(name):
    cls, target = LOSS_CASES[name]
    loss = cls()
    with pytest.raises(ValueError, match=r"backward\(\) needs a forward\(pred, target\) first"):
        loss.backward()
    assert_loss_like(loss, cls, _pred(), target())


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_err_loss_backward_twice(name):
    cls, target = LOSS_CASES[name]
    loss = cls()
    loss.forward(_pred(), target())
    first = loss.backward().copy()
    with pytest.raises(ValueError, match=r"backward\(\) needs a forward\(pred, target\) first "
                                         r"\(each forward serves one backward\)"):
        loss.backward()
    assert_loss_like(loss, cls, _pred(), target())
    loss.forward(_pred(), target())
    np.testing.assert_array_equal(loss.backward(), first)


@pytest.mark.parametrize("how", ["train_step", "fit"])
def test_err_backward_after_training(how):
    """train_step and fit leave no forward waiting for a backward."""
    model, fresh = make_model(), make_model()
    x, y = make_data()
    for m in (model, fresh):
        if how == "train_step":
            m.train_step(x, y, nl.SoftmaxCrossEntropy(), nl.SGD(m, 0.1))
        else:
            m.fit(x, y, optimizer=nl.SGD(m, 0.1), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=r"backward\(\) needs a forward\(\) first"):
        model.backward(np.ones((N, D_OUT)))
    assert_trains_like(model, fresh)


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------

def test_err_sgd_mixed_dtypes():
    a = nl.Linear(D_IN, D_HID, dtype=np.float32, seed=1)
    b = nl.Linear(D_HID, D_OUT, dtype=np.float64, seed=2)
    with pytest.raises(TypeError, match=r"SGD: the layers have mixed dtypes"):
        nl.SGD([a, b], 0.1)
    with pytest.raises(TypeError, match=r"params: item 1 is str, not an nnlayers layer or model"):
        nl.SGD([a, "b"], 0.1)
    # nothing was claimed: each layer still takes its own optimizer
    for layer in (a, b):
        twin = nl.Linear(layer.in_features, layer.out_features, dtype=layer.dtype,
                         seed=1 if layer is a else 2)
        for lyr in (layer, twin):
            for g in lyr.grads.values():
                g[...] = 1.0
            nl.SGD(lyr, 0.5).step()
        assert_same_dict(snapshot(layer), snapshot(twin))


@pytest.mark.parametrize("dtype", [np.int32, "float16", np.complex128, "int64"])
def test_err_bad_dtype(dtype):
    pattern = r"dtype must be numpy\.float32 or numpy\.float64, got"
    with pytest.raises(TypeError, match=pattern):
        nl.Linear(D_IN, D_OUT, dtype=dtype)
    for cls in (nl.ReLU, nl.Tanh, nl.Softmax):
        with pytest.raises(TypeError, match=pattern):
            cls(dtype=dtype)
    with pytest.raises(TypeError, match=pattern):
        nl.LeakyReLU(0.1, dtype=dtype)
    # the constructors still work
    assert_forward_backward_like(make_linear(), make_linear())
    assert_forward_backward_like(nl.Tanh(dtype=np.float64), nl.Tanh(dtype=np.float64))


# ---------------------------------------------------------------------------
# Linear sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,which,shown", [
    ((0, 3), "in_features", "0"), ((-1, 3), "in_features", "-1"),
    ((3, 0), "out_features", "0"), ((3, -7), "out_features", "-7"),
    ((-2**70, 3), "in_features", str(-2**70))])
def test_err_linear_size_not_positive(sizes, which, shown):
    allocs = _core.alloc_count()
    with pytest.raises(ValueError, match=rf"{which} must be a positive int, got {shown}"):
        nl.Linear(*sizes)
    assert _core.alloc_count() == allocs
    assert_forward_backward_like(make_linear(), make_linear())


@pytest.mark.parametrize("sizes,which,typename", [
    ((2.5, 3), "in_features", "float"), ((3.0, 3), "in_features", "float"),
    (("3", 3), "in_features", "str"), ((True, 3), "in_features", "bool"),
    ((3, False), "out_features", "bool"), ((3, None), "out_features", "NoneType")])
def test_err_linear_size_not_int(sizes, which, typename):
    allocs = _core.alloc_count()
    with pytest.raises(TypeError, match=rf"{which} must be a positive int, got {typename}"):
        nl.Linear(*sizes)
    assert _core.alloc_count() == allocs
    assert_forward_backward_like(make_linear(), make_linear())


@pytest.mark.parametrize("dtype", DTYPES)
def test_err_linear_size_overflow(dtype):
    """Sizes whose byte count overflows are refused before any allocation."""
    allocs = _core.alloc_count()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"Linear\(2147483647, 2147483647\): the parameter "
                                             r"byte count overflows"):
            nl.Linear(2**31 - 1, 2**31 - 1, dtype=dtype)
        with pytest.raises(ValueError, match=r"in_features = 2147483648 is too large.*"
                                             r"INT_MAX = 2147483647"):
            nl.Linear(2**31, 2, dtype=dtype)
        with pytest.raises(ValueError, match=r"out_features = 18446744073709551616 is too large"):
            nl.Linear(2, 2**64, dtype=dtype)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _core.alloc_count() == allocs
    assert peak < 2**20
    assert_forward_backward_like(make_linear(dtype), make_linear(dtype))


_HUGE_LINEAR = textwrap.dedent("""
    import json, resource, sys
    # a cap on the address space: on a host that overcommits memory the
    # allocation would otherwise "succeed" and be killed while zeroing it
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    import numpy as np
    import nnlayers as nl
    out = {}
    try:
        nl.Linear(100000, 100000, dtype=np.float64)
        out["exc"] = None
    except BaseException as e:
        out["exc"], out["msg"] = type(e).__name__, str(e)
    lin = nl.Linear(3, 2, dtype=np.float64, seed=0)
    x = np.ones((2, 3))
    out["works"] = bool(np.allclose(lin.forward(x), x @ np.array(lin.params["W"])))
    print(json.dumps(out))
""")


def _run_isolated(code, timeout=300):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env=env)


def test_err_linear_size_too_big_for_memory():
    """Linear(100000, 100000, float64) needs 80 GB per buffer: MemoryError (or
    ValueError), never a crash; the process keeps working."""
    r = _run_isolated(_HUGE_LINEAR)
    assert r.returncode == 0, f"the process died (rc {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["exc"] in ("MemoryError", "ValueError"), out
    assert out["works"]


# ---------------------------------------------------------------------------
# activation arguments
# ---------------------------------------------------------------------------

def assert_activations_work():
    """The constructors still work: a GELU, ELU and Hardtanh built now
    equal fresh ones."""
    for make in (lambda: nl.GELU(approximate="tanh", dtype=np.float64),
                 lambda: nl.ELU(0.5, dtype=np.float64),
                 lambda: nl.Hardtanh(-0.5, 0.5, dtype=np.float64)):
        assert_forward_backward_like(make(), make())


@pytest.mark.parametrize("bad", ["fast", "Tanh", "", None, 1, True])
def test_err_gelu_approximate(bad):
    with pytest.raises(ValueError,
                       match=re.escape(f"approximate must be 'none' or 'tanh', got {bad!r}")):
        nl.GELU(approximate=bad)
    assert_activations_work()


@pytest.mark.parametrize("lo,hi", [(1.0, 1.0), (2, -2), (0.0, -1e-9)])
def test_err_hardtanh_range(lo, hi):
    msg = f"max_val must be greater than min_val, got min_val={lo!r}, max_val={hi!r}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        nl.Hardtanh(lo, hi)
    with pytest.raises(ValueError, match=re.escape(msg)):
        nl.Hardtanh(min_val=lo, max_val=hi, dtype=np.float32)
    assert_activations_work()


@pytest.mark.parametrize("make,name,typename", [
    (lambda: nl.ELU(alpha="1.0"), "alpha", "str"), (lambda: nl.ELU(None), "alpha", "NoneType"),
    (lambda: nl.Hardtanh(min_val=True), "min_val", "bool"),
    (lambda: nl.Hardtanh(max_val=[1.0]), "max_val", "list")])
def test_err_activation_argument_type(make, name, typename):
    with pytest.raises(TypeError, match=rf"{name} must be a real number, got {typename}"):
        make()
    assert_activations_work()


@pytest.mark.parametrize("make,name,shown", [
    (lambda: nl.ELU(alpha=float("nan")), "alpha", "nan"),
    (lambda: nl.ELU(alpha=float("inf")), "alpha", "inf"),
    (lambda: nl.Hardtanh(min_val=-float("inf")), "min_val", "-inf"),
    (lambda: nl.Hardtanh(max_val=float("nan")), "max_val", "nan"),
    (lambda: nl.LeakyReLU(slope=float("nan")), "slope", "nan")])
def test_err_activation_argument_not_finite(make, name, shown):
    with pytest.raises(ValueError, match=rf"{name} must be finite, got {shown}"):
        make()
    assert_activations_work()


# ---------------------------------------------------------------------------
# more than INT_MAX rows headed for BLAS
# ---------------------------------------------------------------------------

def _huge_rows(width, dtype=np.float32):
    return np.broadcast_to(np.zeros((1, width), dtype), (2**31, width))


def _huge_labels():
    return np.broadcast_to(np.zeros(1, np.int64), (2**31,))


def _prepared(obj, rows_in):
    obj.forward(np.zeros((N, rows_in), np.float32))
    return obj


# name -> (argument named in the message, axis, call(model, lin, opt)); the
# objects are prepared (a forward done) before the measured call
INT_MAX_CALLS = {
    "linear_forward": ("x", 0, lambda m, lin, opt: lin.forward(_huge_rows(D_IN))),
    "activation_forward": ("x", 0, lambda m, lin, opt: nl.ReLU().forward(_huge_rows(D_IN))),
    "model_forward": ("x", 0, lambda m, lin, opt: m.forward(_huge_rows(D_IN))),
    "model_forward_f64": ("x", 0, lambda m, lin, opt: m.forward(_huge_rows(D_IN, np.float64))),
    "predict": ("x", 0, lambda m, lin, opt: m.predict(_huge_rows(D_IN))),
    "evaluate": ("X", 0, lambda m, lin, opt: m.evaluate(_huge_rows(D_IN), _huge_labels())),
    "train_step": ("x", 0, lambda m, lin, opt: m.train_step(
        _huge_rows(D_IN), _huge_labels(), nl.SoftmaxCrossEntropy(), opt)),
    "loss": ("pred", 0, lambda m, lin, opt: nl.SoftmaxCrossEntropy().forward(
        _huge_rows(D_OUT), _huge_labels())),
    "linear_backward": ("grad_output", 0, lambda m, lin, opt: lin.backward(_huge_rows(D_OUT))),
    "model_backward": ("grad_output", 0, lambda m, lin, opt: m.backward(_huge_rows(D_OUT))),
    "columns": ("x", 1, lambda m, lin, opt: nl.Tanh().forward(
        np.broadcast_to(np.zeros((1, 1), np.float32), (2, 2**31)))),
}


@pytest.mark.parametrize("call", list(INT_MAX_CALLS))
def test_err_int_max_rows(call):
    """(2**31, F) inputs (a broadcast view: no memory behind it) are refused
    with ValueError before anything is copied or allocated."""
    model, fresh = make_model(np.float32), make_model(np.float32)
    lin, lin_fresh = make_linear(np.float32), make_linear(np.float32)
    opt, fresh_opt = nl.SGD(model, 0.1), nl.SGD(fresh, 0.1)
    name, axis, run = INT_MAX_CALLS[call]
    if call.endswith("backward"):
        for obj in (model, fresh, lin, lin_fresh):
            _prepared(obj, D_IN)
    allocs = _core.alloc_count()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{name} has 2147483648 entries along axis {axis}; "
                                             rf".*at most INT_MAX = 2147483647"):
            run(model, lin, opt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes traced: the input was copied"
    assert _core.alloc_count() == allocs
    if call.endswith("backward"):
        # the refused backward consumed nothing: the pending forward still serves one
        gy = np.ones((N, D_OUT), np.float32)
        np.testing.assert_array_equal(model.backward(gy), fresh.backward(gy))
        np.testing.assert_array_equal(lin.backward(gy), lin_fresh.backward(gy))
    assert_trains_like(model, fresh, opt, fresh_opt)
    assert_forward_backward_like(lin, lin_fresh)


_HUGE_FIT = textwrap.dedent("""
    import json, resource
    # 16 GiB would be needed to copy the input: cap the address space so a
    # copy fails fast (MemoryError) instead of filling the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import numpy as np
    import nnlayers as nl
    out = {}
    model = nl.Sequential(nl.Linear(4, 3, seed=1))
    X = np.broadcast_to(np.zeros((1, 4), np.float32), (2**31, 4))
    y = np.broadcast_to(np.zeros(1, np.int64), (2**31,))
    try:
        model.fit(X, y, optimizer=nl.SGD(model, 0.1), verbose=0)
        out["exc"] = None
    except BaseException as e:
        out["exc"], out["msg"] = type(e).__name__, str(e)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")


def test_err_int_max_rows_fit():
    """fit must refuse (2**31, F) data like forward/train_step do: ValueError
    naming X and INT_MAX, before copying 16 GiB."""
    r = _run_isolated(_HUGE_FIT)
    assert r.returncode == 0, f"the process died (rc {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["exc"] == "ValueError", f"fit raised {out.get('exc')}: {out.get('msg')}"
    assert re.search(r"\bX has 2147483648 entries along axis 0.*INT_MAX", out["msg"]), out["msg"]
    assert out["maxrss_mb"] < 1024, out


# ---------------------------------------------------------------------------
# fit / predict / evaluate arguments
# ---------------------------------------------------------------------------

BAD_BATCH = [
    (0, ValueError, r"batch_size must be >= 1, got 0"),
    (-3, ValueError, r"batch_size must be >= 1, got -3"),
    (2.5, TypeError, r"batch_size must be an int, got float"),
    ("4", TypeError, r"batch_size must be an int, got str"),
    (True, TypeError, r"batch_size must be an int, got bool"),
    (None, TypeError, r"batch_size must be an int, got NoneType"),
]


# None is predict's and evaluate's default (all rows at once), not an error there
@pytest.mark.parametrize("how,bad,exc,msg",
                         [("fit",) + c for c in BAD_BATCH]
                         + [(h,) + c for h in ("predict", "evaluate")
                            for c in BAD_BATCH if c[0] is not None])
def test_err_batch_size(how, bad, exc, msg):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    with pytest.raises(exc, match=msg):
        if how == "fit":
            model.fit(x, y, optimizer=nl.SGD(model, 0.1), batch_size=bad, verbose=0)
        elif how == "predict":
            model.predict(x, batch_size=bad)
        else:
            model.evaluate(x, y, nl.SoftmaxCrossEntropy(), batch_size=bad)
    assert_same_dict(snapshot(model), snapshot(fresh))
    h1 = model.fit(x, y, optimizer=nl.SGD(model, 0.1), batch_size=4, seed=0, verbose=0)
    h2 = fresh.fit(x, y, optimizer=nl.SGD(fresh, 0.1), batch_size=4, seed=0, verbose=0)
    assert h1.history == h2.history
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("bad", [-1, -100])
def test_err_epochs_negative(bad):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    with pytest.raises(ValueError, match=rf"epochs must be an int >= 0, got {bad}"):
        model.fit(x, y, optimizer=nl.SGD(model, 0.1), epochs=bad, verbose=0)
    assert_trains_like(model, fresh)


# ---------------------------------------------------------------------------
# SGD hyper-parameters
# ---------------------------------------------------------------------------

BAD_LR = [(-1e-300, "-1e-300"), (-0.5, "-0.5"), (float("nan"), "nan"), (float("inf"), "inf"),
          (float("-inf"), "-inf")]


def _step_like_fresh(model, opt, fresh, fresh_opt):
    for m in (model, fresh):
        for g in m.gradients().values():
            g[...] = 0.25
    opt.step()
    fresh_opt.step()
    assert_same_dict(snapshot(model), snapshot(fresh))


@pytest.mark.parametrize("bad,shown", BAD_LR)
def test_err_lr_at_construction(bad, shown):
    model, fresh = make_model(), make_model()
    with pytest.raises(ValueError, match=rf"lr must be a finite number >= 0, got {shown}$"):
        nl.SGD(model, bad)
    assert_same_dict(snapshot(model), snapshot(fresh))
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("bad,shown", BAD_LR)
def test_err_lr_on_assignment(bad, shown):
    model, fresh = make_model(), make_model()
    opt, fresh_opt = nl.SGD(model, 0.1, momentum=0.5), nl.SGD(fresh, 0.1, momentum=0.5)
    with pytest.raises(ValueError, match=rf"lr must be a finite number >= 0, got {shown}$"):
        opt.lr = bad
    assert opt.lr == 0.1
    _step_like_fresh(model, opt, fresh, fresh_opt)
    assert_trains_like(model, fresh, opt, fresh_opt)


@pytest.mark.parametrize("kw,msg", [
    (dict(momentum=-0.5), r"momentum must be a finite number >= 0, got -0\.5"),
    (dict(momentum=float("nan")), r"momentum must be a finite number >= 0, got nan"),
    (dict(weight_decay=-1e-3), r"weight_decay must be a finite number >= 0, got -0\.001"),
    (dict(weight_decay=float("inf")), r"weight_decay must be a finite number >= 0, got inf"),
])
def test_err_momentum_weight_decay_negative(kw, msg):
    model, fresh = make_model(), make_model()
    with pytest.raises(ValueError, match=msg):
        nl.SGD(model, 0.1, **kw)
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("kw", [dict(nesterov=True), dict(nesterov=True, momentum=0.0)])
def test_err_nesterov_without_momentum(kw):
    model, fresh = make_model(), make_model()
    with pytest.raises(ValueError, match=r"nesterov=True needs momentum > 0"):
        nl.SGD(model, 0.1, **kw)
    opt = nl.SGD(model, 0.1, momentum=0.9, nesterov=True)
    fresh_opt = nl.SGD(fresh, 0.1, momentum=0.9, nesterov=True)
    assert_trains_like(model, fresh, opt, fresh_opt)


@pytest.mark.parametrize("target", ["activations_model", "activation", "empty_list"])
def test_err_sgd_without_parameters(target):
    acts = nl.Sequential(nl.ReLU(), nl.Tanh())
    arg = {"activations_model": acts, "activation": nl.Sigmoid(), "empty_list": []}[target]
    with pytest.raises(ValueError, match=r"SGD got no parameters \(none of its layers has any\)"):
        nl.SGD(arg, 0.1)
    assert_forward_backward_like(acts, nl.Sequential(nl.ReLU(), nl.Tanh()))
    model, fresh = make_model(), make_model()
    assert_trains_like(model, fresh)


# ---------------------------------------------------------------------------
# parameter assignment
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["layer", "model"])
@pytest.mark.parametrize("bad", [(D_OUT, D_IN), (D_IN, D_OUT + 1), (D_IN * D_OUT,), (1, D_IN, D_OUT), ()])
def test_err_param_wrong_shape(where, bad):
    if where == "layer":
        obj, fresh = make_linear(), make_linear()
        d, name, label = obj.params, "W", r"params\['W'\]"
        shape = (D_IN, D_OUT)
    else:
        obj, fresh = make_model(), make_model()
        d, name, label = obj.parameters(), "2.W", r"parameters\['2\.W'\]"
        shape = (D_HID, D_OUT)
        bad = tuple(D_HID if s == D_IN else s for s in bad)
    with pytest.raises(ValueError, match=rf"{label} has shape {re.escape(str(shape))}; cannot "
                                         rf"assign an array of shape {re.escape(str(bad))}"):
        d[name] = np.ones(bad)
    assert_same_dict(snapshot(obj), snapshot(fresh))
    if where == "layer":
        assert_forward_backward_like(obj, fresh)
    else:
        assert_trains_like(obj, fresh)


@pytest.mark.parametrize("value,dtype_shown", [
    ("abc", "<U3"), (np.full((D_IN, D_OUT), "1"), "<U1"), (None, "object"),
    (np.ones((D_IN, D_OUT), complex), "complex128"),
    (np.full((D_IN, D_OUT), object(), dtype=object), "object")])
@pytest.mark.parametrize("where", ["layer", "model"])
def test_err_param_non_numeric(where, value, dtype_shown):
    if where == "layer":
        obj, fresh = make_linear(), make_linear()
        d, name, label = obj.params, "W", r"params\['W'\]"
    else:
        obj, fresh = make_model(), make_model()
        d, name, label = obj.parameters(), "0.W", r"parameters\['0\.W'\]"
        if isinstance(value, np.ndarray):
            value = np.resize(value, (D_IN, D_HID))
    with pytest.raises(TypeError, match=rf"{label} takes real numbers, got dtype {dtype_shown}"):
        d[name] = value
    assert_same_dict(snapshot(obj), snapshot(fresh))
    if where == "layer":
        assert_forward_backward_like(obj, fresh)
    else:
        assert_trains_like(obj, fresh)


@pytest.mark.parametrize("where", ["layer", "model"])
def test_err_param_unknown_name(where):
    obj, fresh = (make_linear(), make_linear()) if where == "layer" else (make_model(), make_model())
    d = obj.params if where == "layer" else obj.parameters()
    known = ["W", "b"] if where == "layer" else ["0.W", "0.b", "2.W", "2.b"]
    what = "params" if where == "layer" else "parameters"
    with pytest.raises(KeyError, match=rf"has no {what} named '1\.W'; it has "
                                       rf"{re.escape(str(known))}"):
        d["1.W"] = np.zeros((D_IN, D_OUT))
    with pytest.raises(TypeError, match=rf"cannot delete {what}\['{known[0]}'\]"):
        del d[known[0]]
    assert_same_dict(snapshot(obj), snapshot(fresh))
    assert_forward_backward_like(obj, fresh)


# ---------------------------------------------------------------------------
# train_step / fit with the wrong companions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["train_step", "fit"])
@pytest.mark.parametrize("which", ["loss", "optimizer"])
def test_err_train_step_wrong_types(which, how):
    model, fresh = make_model(), make_model()
    x, y = make_data()
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1)
    if which == "loss":
        loss = [1, 2]
        msg = r"loss must be an nnlayers loss \(e\.g\. nnlayers\.SoftmaxCrossEntropy\(\)\), got list"
    else:
        opt = {"lr": 0.1}
        msg = r"optimizer must be an nnlayers optimizer \(e\.g\. nnlayers\.SGD\(model, lr=0\.01\)\), got dict"
    with pytest.raises(TypeError, match=msg):
        if how == "train_step":
            model.train_step(x, y, loss, opt)
        else:
            model.fit(x, y, loss=loss, optimizer=opt, verbose=0)
    assert_trains_like(model, fresh)


def test_err_unknown_loss_name():
    model, fresh = make_model(), make_model()
    x, y = make_data()
    with pytest.raises(ValueError, match=r"unknown loss 'cross_entropy'; known: \["):
        model.fit(x, y, loss="cross_entropy", optimizer=nl.SGD(model, 0.1), verbose=0)
    assert_trains_like(model, fresh)


@pytest.mark.parametrize("how", ["train_step", "fit"])
def test_err_optimizer_of_other_model(how):
    model, fresh = make_model(), make_model()
    other = copy.deepcopy(model)
    x, y = make_data()
    opt = nl.SGD(other, 0.1)
    with pytest.raises(ValueError, match=r"optimizer holds none of this model's layers; make it "
                                         r"with an nnlayers optimizer over this model, e\.g\. "
                                         r"nnlayers\.SGD\(model, lr=\.\.\.\)"):
        if how == "train_step":
            model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
        else:
            model.fit(x, y, optimizer=opt, verbose=0)
    assert_same_dict(snapshot(other), snapshot(fresh))
    assert_trains_like(model, fresh)


def test_err_unknown_init():
    with pytest.raises(ValueError, match=r"init must be 'he', 'glorot' or 'uniform', got 'xavier'"):
        nl.Linear(D_IN, D_OUT, init="xavier")
    # the constructor still works: the same seed gives the same layer
    assert_forward_backward_like(make_linear(), make_linear())


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

def _saved(tmp_path):
    model = make_model()
    path = tmp_path / "good.npz"
    model.save(path)
    return model, path


def _assert_loads_fine(model, path):
    loaded = nl.load(path)
    x, _ = make_data(7)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert_same_dict(snapshot(loaded), snapshot(model))


def test_err_load_missing(tmp_path):
    model, good = _saved(tmp_path)
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        nl.load(missing)
    _assert_loads_fine(model, good)


def _arch(i, o):
    return {"format": "nnlayers-sequential", "version": 1, "dtype": "float64",
            "layers": [{"class": "Linear", "config": {"in_features": i, "out_features": o,
                                                      "bias": True, "dtype": "float64"},
                        "trainable": True}]}


def _npz(path, entries):
    """entries: name -> ndarray or raw .npy bytes"""
    with zipfile.ZipFile(path, "w") as z:
        for name, value in entries.items():
            if isinstance(value, np.ndarray):
                buf = io.BytesIO()
                np.save(buf, value, allow_pickle=True)
                value = buf.getvalue()
            z.writestr(name + ".npy", value)


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _bad_file(kind, good, tmp_path):
    path = tmp_path / f"{kind}.npz"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return path, r"cannot read it as \.npz"
    if kind == "empty":
        path.write_bytes(b"")
        return path, r"cannot read it as \.npz"
    if kind == "corrupted":
        # flip bytes inside the first entry's compressed-free payload: the
        # zip CRC no longer matches
        raw = bytearray(data)
        for i in range(60, 120):
            raw[i] ^= 0xA5
        path.write_bytes(bytes(raw))
        return path, r"unreadable|cannot read"
    if kind == "wrong_architecture":
        _npz(path, {"0.W": np.zeros((2, 3)), "0.b": np.zeros(3),
                    "__architecture__": np.array(json.dumps(_arch(2, 4)))})
        return path, r"0\.W has shape \(2, 3\), the architecture says \(2, 4\)"
    if kind == "pickled_object":
        evil = np.array([_Payload(tmp_path / "EXECUTED"), 1], dtype=object)
        _npz(path, {"0.W": evil, "0.b": np.zeros(3),
                    "__architecture__": np.array(json.dumps(_arch(2, 3)))})
        return path, r"entry '0\.W' holds Python objects"
    if kind == "absurd_header":
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            head, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**7)})
        head.write(b"\0" * 64)
        _npz(path, {"0.W": head.getvalue(), "0.b": np.zeros(10**7 // 10**6),
                    "__architecture__": np.array(json.dumps(_arch(10**6, 10**7)))})
        return path, r"entry '0\.W' claims 80000000000000 bytes but holds fewer"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "empty", "corrupted", "wrong_architecture",
                                  "pickled_object", "absurd_header"])
def test_err_load_bad_file(kind, tmp_path):
    model, good = _saved(tmp_path)
    path, why = _bad_file(kind, good, tmp_path)
    allocs = _core.alloc_count()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a valid nnlayers "
                                             rf"model file: .*({why})"):
            nl.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"load allocated {peak} bytes for a hostile file"
    assert _core.alloc_count() == allocs
    assert not (tmp_path / "EXECUTED").exists(), "load ran code from the file"
    _assert_loads_fine(model, good)


# ---------------------------------------------------------------------------
# non-finite loss
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["nan_in_x", "mse_overflow"])
def test_err_nonfinite_train_step(bad):
    model, fresh = make_model(), make_model()
    opt, fresh_opt = nl.SGD(model, 0.1, momentum=0.9), nl.SGD(fresh, 0.1, momentum=0.9)
    x, y = make_data()
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
    fresh.train_step(x, y, nl.SoftmaxCrossEntropy(), fresh_opt)
    before, vel = snapshot(model), np.array(opt._velocity(), copy=True)
    if bad == "nan_in_x":
        xb = x.copy()
        xb[2, 1] = np.nan
        args, shown = (xb, y, nl.SoftmaxCrossEntropy()), "nan"
    else:                                  # (1e300)**2 overflows to inf
        args, shown = (x, np.full((N, D_OUT), 1e300), nl.MSE()), "inf"
    with pytest.raises(nl.NonFiniteLossError, match=rf"^train_step: the loss is {shown}; no "
                                                    r"parameter was updated$"):
        model.train_step(*args, opt)
    assert_same_dict(snapshot(model), before)
    np.testing.assert_array_equal(opt._velocity(), vel)
    assert_trains_like(model, fresh, opt, fresh_opt)


def test_err_nonfinite_fit():
    model, fresh = make_model(), make_model()
    x, _ = make_data(n=12)
    t = np.zeros((12, D_OUT))
    t[9, 0] = 1e200                      # batch 3 of 4 (rows 8..11): the loss overflows
    with pytest.raises(nl.NonFiniteLossError, match=r"^epoch 1: the loss became non-finite "
                                                    r"\(inf\) at batch 3 \(counting from 1\); "
                                                    r"training stopped before that batch's "
                                                    r"update$"):
        model.fit(x, t, loss=nl.MSE(), optimizer=nl.SGD(model, 0.1), batch_size=4,
                  shuffle=False, verbose=0)
    # exactly batches 1 and 2 were applied
    opt = nl.SGD(fresh, 0.1)
    for s in (0, 4):
        fresh.train_step(x[s:s + 4], t[s:s + 4], nl.MSE(), opt)
    assert_same_dict(snapshot(model), snapshot(fresh))
    assert_trains_like(model, fresh)


def test_err_nonfinite_data_before_training():
    """NaN or inf in X (or in validation_data's inputs) is reported as such,
    naming the array, the first bad row and its column, before any update."""
    model, fresh = make_model(), make_model()
    x, y = make_data(n=12)
    for bad, where in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        xb = x.copy()
        xb[9, 2] = bad
        with pytest.raises(ValueError, match=rf"^X holds {where} at row 9 \(column 2\): a "
                                             rf"network cannot learn from it"):
            model.fit(xb, y, optimizer=nl.SGD(model, 0.1), batch_size=4, verbose=0)
        with pytest.raises(ValueError, match=rf"^validation_data X holds {where} at row 9"):
            model.fit(x, y, optimizer=nl.SGD(model, 0.1), batch_size=4, verbose=0,
                      validation_data=(xb, y))
    assert_same_dict(snapshot(model), snapshot(fresh))
    assert_trains_like(model, fresh)


# a last layer the loss would apply again (Keras habits)
MISMATCHED_PAIRS = [
    # (last layer, loss, its name in the message, the fix it gives)
    (nl.Sigmoid, lambda: nl.BinaryCrossEntropy(), "Sigmoid", "from_logits=False"),
    (nl.Softmax, lambda: nl.SoftmaxCrossEntropy(), "Softmax", "from_logits=False"),
    (nl.LogSoftmax, lambda: nl.SoftmaxCrossEntropy(), "LogSoftmax", "use NLL"),
    (nl.LogSoftmax, lambda: nl.SoftmaxCrossEntropy(from_logits=False), "LogSoftmax", "use NLL"),
    (nl.Softmax, lambda: nl.NLL(), "Softmax", "use LogSoftmax"),
]


def _model_ending_with(last, seed=4):
    width = 1 if last is nl.Sigmoid else D_OUT
    return nl.Sequential(nl.Linear(D_IN, width, seed=seed, dtype=np.float64), last())


@pytest.mark.parametrize("last, make_loss, name, fix", MISMATCHED_PAIRS,
                         ids=[f"{p[2]}-{i}" for i, p in enumerate(MISMATCHED_PAIRS)])
def test_err_last_layer_applied_again_by_the_loss(last, make_loss, name, fix):
    """train_step, fit and evaluate refuse a final Sigmoid/Softmax/
    LogSoftmax with a loss that applies it again (or takes the other
    kind of output), naming the layer, the loss and the fix, with the
    model unchanged."""
    model, fresh = _model_ending_with(last), _model_ending_with(last)
    x, labels = make_data()
    y = (labels % 2).astype(np.float64)[:, None] if last is nl.Sigmoid else labels
    loss = make_loss()
    calls = {
        "train_step": lambda: model.train_step(x, y, loss, nl.SGD(model, 0.1)),
        "fit": lambda: model.fit(x, y, loss=loss, optimizer=nl.SGD(model, 0.1), epochs=1,
                                 verbose=0),
        "evaluate": lambda: model.evaluate(x, y, loss=loss),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=rf"loss {re.escape(repr(loss))} does not fit the "
                                             rf"model's output 0, which comes from layer "
                                             rf"'\w+' \({name}\(\)\): .*{fix}"):
            call()
        assert_same_dict(snapshot(model), snapshot(fresh))
    # the fix named in the message trains
    good = {"Sigmoid": nl.BinaryCrossEntropy(from_logits=False),
            "Softmax": nl.SoftmaxCrossEntropy(from_logits=False) if "from_logits" in fix
            else None,
            "LogSoftmax": nl.NLL()}[name]
    if good is not None:
        assert np.isfinite(model.train_step(x, y, good, nl.SGD(model, 0.1)))


# ---------------------------------------------------------------------------
# concurrent use of one object from two threads
# ---------------------------------------------------------------------------

def _busy_setup():
    rng = np.random.default_rng(31)
    X = rng.standard_normal((40000, 64))
    y = rng.integers(0, 4, 40000)
    model = nl.Sequential(nl.Linear(64, 1024, dtype=np.float64, seed=32), nl.ReLU(),
                          nl.Linear(1024, 4, dtype=np.float64, seed=33))
    return X, y, model


class _BusyFit:
    """Runs one long fit epoch in a thread; entering the block waits until
    the epoch's C loop is running (the parameters start to move)."""

    def __init__(self, model, X, y, opt):
        self.model, self.X, self.y, self.opt = model, X, y, opt
        self.done = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            self.model.fit(self.X, self.y, optimizer=self.opt, epochs=1, batch_size=8,
                           shuffle=False, verbose=0)
        except BaseException as e:        # reported by the test
            self.errors.append(e)
        finally:
            self.done.set()

    def __enter__(self):
        block = self.model._param_block()
        start = block.copy()
        self.thread.start()
        deadline = time.monotonic() + 30
        while np.array_equal(block, start) and not self.done.is_set():
            assert time.monotonic() < deadline, "fit did not start"
            time.sleep(0.0005)
        assert not self.done.is_set(), "fit finished before the checks could run"
        return self

    def __exit__(self, *exc):
        self.thread.join()
        return False


def test_err_concurrent_use():
    X, y, model = _busy_setup()
    start = copy.deepcopy(model)
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.01)
    calls = {
        "forward": (lambda: model.forward(X[:4]), r"this model is in use by another thread"),
        "call": (lambda: model(X[:4]), r"this model is in use"),
        "backward": (lambda: model.backward(np.ones((4, 4))), r"this model is in use"),
        "train_step": (lambda: model.train_step(X[:4], y[:4], loss, opt),
                       r"this model is in use"),
        "fit": (lambda: model.fit(X[:4], y[:4], optimizer=opt, verbose=0),
                r"this model is in use"),
        "predict": (lambda: model.predict(X[:4]), r"this model is in use"),
        "evaluate": (lambda: model.evaluate(X[:4], y[:4]), r"this model is in use"),
        "layer_forward": (lambda: model[0].forward(X[:4]),
                          r"this layer \(a model or optimizer holding it\) is in use by another "
                          r"thread"),
        "layer_backward": (lambda: model[2].backward(np.ones((4, 4))),
                           r"this layer \(a model or optimizer holding it\) is in use"),
        "optimizer_step": (lambda: opt.step(), r"this optimizer is in use by another thread"),
    }
    with _BusyFit(model, X, y, opt) as busy:
        for name, (call, msg) in calls.items():
            suffix = r"" if name == "optimizer_step" else r".*one writer"
            with pytest.raises(nl.ConcurrentUseError, match=msg + suffix):
                call()
        assert not busy.done.is_set(), "fit finished before the checks were done"
    assert not busy.errors, busy.errors
    assert isinstance(nl.ConcurrentUseError("x"), RuntimeError)
    # the refused calls did not disturb the fit: replaying it gives the same model
    start.fit(X, y, optimizer=nl.SGD(start, 0.01), epochs=1, batch_size=8, shuffle=False,
              verbose=0)
    assert_same_dict(snapshot(model), snapshot(start))
    # and afterwards everything works again
    np.testing.assert_array_equal(model.forward(X[:4]), start.forward(X[:4]))
    np.testing.assert_array_equal(model.backward(np.ones((4, 4))), start.backward(np.ones((4, 4))))
    v1 = model.train_step(X[:8], y[:8], loss, opt)
    v2 = start.train_step(X[:8], y[:8], nl.SoftmaxCrossEntropy(), nl.SGD(start, 0.01))
    assert v1 == v2
    assert_same_dict(snapshot(model), snapshot(start))


@pytest.mark.parametrize("call", ["model_zero_grad", "layer_zero_grad", "optimizer_zero_grad",
                                  "model_parameter_assignment", "layer_parameter_assignment"])
def test_err_concurrent_writes(call):
    """Calls that write the memory a running fit is using must be refused
    like forward is: docs/api.md promises ConcurrentUseError for concurrent
    calls on one object, the README "rather than corrupting it"."""
    X, y, model = _busy_setup()
    opt = nl.SGD(model, 0.01)
    calls = {
        "model_zero_grad": lambda: model.zero_grad(),
        "layer_zero_grad": lambda: model[0].zero_grad(),
        "optimizer_zero_grad": lambda: opt.zero_grad(),
        "model_parameter_assignment": lambda: model.parameters().__setitem__(
            "2.b", np.zeros(4)),
        "layer_parameter_assignment": lambda: model[2].params.__setitem__("b", np.zeros(4)),
    }
    with _BusyFit(model, X, y, opt) as busy:
        with pytest.raises(nl.ConcurrentUseError, match=r"in use by another thread"):
            calls[call]()
        assert not busy.done.is_set(), "fit finished before the check"
    assert not busy.errors, busy.errors
    assert np.all(np.isfinite(model.forward(X[:4])))


# ---------------------------------------------------------------------------
# the catalogue itself
# ---------------------------------------------------------------------------

def _doc_test_names():
    """(rows, test names) of the table in docs/errors.md; names are the
    backticked test_* words of the Test column."""
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["Bad input", "Where", "Exception", "Message names", "Test"], header
    assert set(rows[1].replace("|", "").strip()) <= set("-: "), rows[1]
    names = []
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"row does not have 5 cells: {line}"
        found = re.findall(r"`(test_\w+)`", cells[4])
        assert found, f"row names no test: {line}"
        names.extend(found)
    return rows[2:], names


def test_err_catalogue_points_at_existing_tests():
    rows, names = _doc_test_names()
    assert len(rows) >= 40
    sources = "\n".join(p.read_text(encoding="utf-8")
                        for p in sorted((ROOT / "tests").glob("test_*.py")))
    defined = set(re.findall(r"^\s*def (test_\w+)\s*\(", sources, flags=re.MULTILINE))
    missing = sorted(set(names) - defined)
    assert not missing, f"docs/errors.md names tests that do not exist: {missing}"
    # every test of this file except this one is in the catalogue
    here = set(re.findall(r"^def (test_err_\w+)\s*\(", pathlib.Path(__file__).read_text(),
                          flags=re.MULTILINE))
    unlisted = sorted(here - set(names) - {"test_err_catalogue_points_at_existing_tests"})
    assert not unlisted, f"tests missing from docs/errors.md: {unlisted}"
