"""Zero-copy contract: parameters are views of C memory, inputs of the right
dtype/layout are read in place (no conversion), inputs are never written,
and every other real input is converted to the same values."""

import tracemalloc

import numpy as np
import pytest

import nnlayers as nl
import nnlayers._reference as ref
from nnlayers import _core

DTYPES = [np.float32, np.float64]


def other_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


# ---------------------------------------------------------------------------
# parameter views
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_param_views_are_c_memory(dtype):
    lin = nl.Linear(5, 3, dtype=dtype, seed=1)
    W1, W2 = lin.params["W"], lin.params["W"]
    assert np.shares_memory(W1, W2)
    for d in (lin.params, lin.grads):
        for k in ("W", "b"):
            v = d[k]
            assert v.base is lin
            assert v.dtype == np.dtype(dtype)
            assert v.flags.writeable and v.flags.c_contiguous
    assert np.shares_memory(lin.grads["W"], lin.grads["W"])
    assert not np.shares_memory(lin.params["W"], lin.grads["W"])
    assert not np.shares_memory(lin.params["W"], lin.params["b"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_writing_the_view_changes_forward(dtype, rng):
    lin = nl.Linear(5, 3, dtype=dtype, seed=1)
    x = rng.standard_normal((4, 5)).astype(dtype)
    y0 = lin.forward(x)
    lin.backward(np.zeros_like(y0))
    W = lin.params["W"]
    W[...] = 0
    W[2, 1] = 2.0
    lin.params["b"][...] = [1, 2, 3]
    y = lin.forward(x)
    want = np.tile(np.array([1, 2, 3], dtype=dtype), (4, 1))
    want[:, 1] += 2 * x[:, 2]
    assert not np.array_equal(y, y0)
    np.testing.assert_allclose(y, want, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_assigning_params_copies_into_same_memory(dtype, rng):
    lin = nl.Linear(5, 3, dtype=dtype, seed=1)
    old_view = lin.params["W"]
    new = rng.standard_normal((5, 3))            # float64: cast on copy
    lin.params["W"] = new
    assert np.shares_memory(lin.params["W"], old_view)
    assert not np.shares_memory(lin.params["W"], new)
    assert np.array_equal(old_view, new.astype(dtype))
    new[...] = 99                                 # the layer kept its own copy
    assert not np.any(lin.params["W"] == 99)
    x = rng.standard_normal((2, 5)).astype(dtype)
    np.testing.assert_allclose(lin.forward(x), ref.linear_forward(x, old_view, lin.params["b"]),
                               rtol=1e-5)


@pytest.mark.parametrize("bad", [(3, 5), (5, 4), (15,), (1, 5, 3)])
def test_assigning_wrong_shape_raises_and_keeps_W(bad, rng):
    lin = nl.Linear(5, 3, dtype=np.float64, seed=1)
    before = lin.params["W"].copy()
    with pytest.raises(ValueError, match="shape"):
        lin.params["W"] = rng.standard_normal(bad)
    assert np.array_equal(lin.params["W"], before)
    with pytest.raises(ValueError, match="shape"):
        lin.params["b"] = np.ones(4)
    assert np.all(lin.params["b"] == 0)


def test_model_parameter_views(rng):
    model = nl.Sequential(nl.Linear(4, 3, seed=1), nl.ReLU(), nl.Linear(3, 2, seed=2))
    block = model._param_block()
    v1, v2 = model.parameters()["2.W"], model.parameters()["2.W"]
    assert np.shares_memory(v1, v2) and np.shares_memory(v1, block)
    model[2].params["W"] = np.zeros((3, 2))
    model[2].params["b"] = [5, 6]
    y = model.forward(rng.standard_normal((3, 4)).astype(np.float32))
    assert np.array_equal(y, np.tile(np.array([5, 6], np.float32), (3, 1)))


# ---------------------------------------------------------------------------
# no conversion for right-typed C-contiguous input
# ---------------------------------------------------------------------------

def _copies():
    return _core.input_copies()


def _targets(dtype):
    """(name, object, input width, output width) with dtype `dtype`."""
    return [
        ("linear", nl.Linear(6, 3, dtype=dtype, seed=1), 6, 3),
        ("tanh", nl.Tanh(), 6, 6),
        ("softmax", nl.Softmax(), 6, 6),
        ("model", nl.Sequential(nl.Linear(6, 4, dtype=dtype, seed=2), nl.Sigmoid(),
                                nl.Linear(4, 3, dtype=dtype, seed=3)), 6, 3),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_right_input_is_not_copied(dtype, rng):
    for name, obj, din, dout in _targets(dtype):
        x = rng.standard_normal((5, din)).astype(dtype)
        g = rng.standard_normal((5, dout)).astype(dtype)
        obj.forward(x)
        obj.backward(g)                           # warm-up
        c0 = _copies()
        y = obj.forward(x)
        assert _copies() == c0, name
        obj.backward(g)
        assert _copies() == c0, name
        assert y.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_readonly_right_input_is_read_in_place(dtype, rng):
    # right dtype, C-contiguous and aligned: read in place (it is never
    # written, so read-only does not matter)
    for name, obj, din, dout in _targets(dtype):
        x = rng.standard_normal((5, din)).astype(dtype)
        g = rng.standard_normal((5, dout)).astype(dtype)
        x.flags.writeable = False
        g.flags.writeable = False
        c0 = _copies()
        y = obj.forward(x)
        obj.backward(g)
        assert _copies() == c0, name
        assert y.flags.writeable


def _wrong_layouts(x, dtype):
    """Variants of x that must be converted for a layer of `dtype`."""
    wide = np.repeat(x, 2, axis=1)
    return {
        "other_float": x.astype(other_dtype(dtype)),
        "int": np.round(3 * x).astype(np.int64),
        "fortran": np.asfortranarray(x),
        "strided": wide[:, ::2],
        "reversed": x[::-1],
        "byteswapped": x.astype(np.dtype(dtype).newbyteorder(">")),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_other_inputs_are_copied_once(dtype, rng):
    for name, obj, din, dout in _targets(dtype):
        x = rng.standard_normal((5, din)).astype(dtype)
        g = rng.standard_normal((5, dout)).astype(dtype)
        for vname, xv in _wrong_layouts(x, dtype).items():
            if obj.dtype is None and vname == "other_float":
                continue                  # an adopting layer takes either float
            c0 = _copies()
            obj.forward(xv)
            assert _copies() == c0 + 1, (name, vname)
            gv = _wrong_layouts(g, obj.dtype or dtype)[vname]
            obj.backward(gv)
            assert _copies() == c0 + 2, (name, vname)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_adopting_dtype_copies_only_non_floats(dtype, rng):
    layer = nl.Sigmoid()
    x = rng.standard_normal((4, 3)).astype(dtype)
    c0 = _copies()
    assert layer.forward(x).dtype == np.dtype(dtype)        # adopts: no copy
    layer.backward(np.ones((4, 3), dtype))
    assert _copies() == c0
    layer.forward(np.arange(12).reshape(4, 3))              # ints -> float64
    assert _copies() == c0 + 1


@pytest.mark.parametrize("kind", ["layer", "model"])
def test_no_copy_seen_by_tracemalloc(kind):
    N, D = 1000, 1000
    obj = nl.Linear(D, 2, seed=0)
    if kind == "model":
        obj = nl.Sequential(obj, nl.ReLU())
    x32 = np.ones((N, D), np.float32)
    obj.forward(x32)                               # warm-up (workspace)
    obj.backward(np.ones((N, 2), np.float32))

    def peak(x):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            obj.forward(x)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            obj.backward(np.ones((N, 2), np.float32))

    assert peak(x32) < x32.nbytes // 10           # x32 was read in place
    assert peak(x32.astype(np.float64)) >= x32.nbytes   # a float32 copy was made


# ---------------------------------------------------------------------------
# inputs are never written
# ---------------------------------------------------------------------------

ALL_LAYERS = [
    lambda dt: nl.Linear(4, 4, dtype=dt, seed=1), lambda dt: nl.Linear(4, 4, bias=False, dtype=dt),
    lambda dt: nl.Identity(), lambda dt: nl.ReLU(), lambda dt: nl.LeakyReLU(0.2),
    lambda dt: nl.Sigmoid(), lambda dt: nl.Tanh(), lambda dt: nl.Softplus(),
    lambda dt: nl.Step(), lambda dt: nl.Cos(), lambda dt: nl.Softmax(), lambda dt: nl.LogSoftmax(),
    lambda dt: nl.GELU(), lambda dt: nl.GELU(approximate="tanh"), lambda dt: nl.SiLU(),
    lambda dt: nl.ELU(0.5), lambda dt: nl.Softsign(), lambda dt: nl.Hardtanh(-0.5, 0.5),
]


def _frozen(a, readonly):
    a = np.array(a, copy=True)
    if readonly:
        a.flags.writeable = False
    return a


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_never_write_inputs(dtype, readonly, rng):
    for make in ALL_LAYERS:
        layer = make(dtype)
        x = _frozen(rng.standard_normal((5, 4)).astype(dtype), readonly)
        g = _frozen(rng.standard_normal((5, 4)).astype(dtype), readonly)
        x0, g0 = x.tobytes(), g.tobytes()
        y = layer.forward(x)
        gx = layer.backward(g)
        assert x.tobytes() == x0 and g.tobytes() == g0, repr(layer)
        # outputs are new arrays, never the inputs
        assert not np.shares_memory(y, x) and not np.shares_memory(gx, g), repr(layer)
        assert not np.shares_memory(gx, x) and not np.shares_memory(y, g), repr(layer)


def _model(dtype):
    return nl.Sequential(nl.Identity(), nl.Linear(4, 5, dtype=dtype, seed=1), nl.Tanh(),
                         nl.Linear(5, 3, dtype=dtype, seed=2), nl.Identity())


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_model_never_writes_inputs(dtype, readonly, rng):
    model = _model(dtype)
    x = _frozen(rng.standard_normal((6, 4)).astype(dtype), readonly)
    g = _frozen(rng.standard_normal((6, 3)).astype(dtype), readonly)
    x0, g0 = x.tobytes(), g.tobytes()
    y = model.forward(x)
    gx = model.backward(g)
    assert x.tobytes() == x0 and g.tobytes() == g0
    assert not np.shares_memory(y, x) and not np.shares_memory(gx, g)

    labels = _frozen(rng.integers(0, 3, size=6), readonly)
    dense = _frozen(rng.random((6, 3)).astype(dtype), readonly)
    l0, d0 = labels.tobytes(), dense.tobytes()
    opt = nl.SGD(model, lr=0.1)
    for loss, target in [(nl.SoftmaxCrossEntropy(), labels), (nl.MSE(), dense),
                         (nl.BinaryCrossEntropy(), dense)]:
        value = model.train_step(x, target, loss, opt)
        assert np.isfinite(value)
    assert x.tobytes() == x0 and labels.tobytes() == l0 and dense.tobytes() == d0


# ---------------------------------------------------------------------------
# every real input works and equals its converted form
# ---------------------------------------------------------------------------

def _variants(x):
    wide = np.repeat(x, 2, axis=1)
    return {
        "int": np.round(3 * x).astype(np.int32),
        "bool": x > 0,
        "float32": x.astype(np.float32),
        "float64": x.astype(np.float64),
        "fortran": np.asfortranarray(x),
        "strided": wide[:, ::2],
        "reversed": x[::-1],
        "reversed_cols": x[:, ::-1],
        "big_endian_f8": x.astype(">f8"),
        "big_endian_f4": x.astype(">f4"),
        "list": x.tolist(),
        "readonly": _frozen(x, True),
    }


def _expected_dtype(layer_dtype, variant):
    """dtype a layer computes in: its own, or (adopting) float32 for float32
    arrays and float64 for everything else."""
    if layer_dtype is not None:
        return np.dtype(layer_dtype)
    v = np.asarray(variant)
    return np.dtype(np.float32) if isinstance(variant, np.ndarray) and v.dtype.kind == "f" \
        and v.dtype.itemsize == 4 else np.dtype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_real_input_equals_converted(dtype, rng):
    objs = [nl.Linear(6, 3, dtype=dtype, seed=1), nl.Tanh(), nl.LeakyReLU(0.2),
            nl.LogSoftmax(),
            nl.Sequential(nl.Linear(6, 4, dtype=dtype, seed=2), nl.ReLU(),
                          nl.Linear(4, 3, dtype=dtype, seed=3))]
    x = rng.standard_normal((5, 6)).astype(dtype)
    for obj in objs:
        for vname, xv in _variants(x).items():
            dt = _expected_dtype(obj.dtype, xv)
            conv = np.ascontiguousarray(np.asarray(xv), dtype=dt)
            y_conv = obj.forward(conv)
            gy = rng.standard_normal(y_conv.shape).astype(dt)
            gv = _variants(gy)[vname]        # the gradient in the same form
            gx_want = obj.backward(np.ascontiguousarray(np.asarray(gv), dtype=dt))
            y = obj.forward(xv)
            assert y.dtype == dt, (obj, vname)
            assert np.array_equal(y, y_conv), (obj, vname)
            gx = obj.backward(gv)
            assert gx.dtype == dt, (obj, vname)
            assert np.array_equal(gx, gx_want), (obj, vname)
