"""Inputs that must simply work, each checked against nnlayers._reference in
float32 and float64:

* every memory layout and kind of real data: Fortran order, strided views,
  negative strides, read-only arrays, non-native byte order, misaligned
  buffers (odd data pointer), int and bool arrays, the other float dtype,
  float16, nested lists -- for forward and backward of every layer and of
  a Sequential (the gradient is passed in the same form);
* an empty batch (N = 0) in forward and backward (shapes (0, out) and
  (0, in), gradients unchanged), while losses, train_step, fit and
  evaluate refuse it with ValueError (a loss averages over the batch);
* NaN and ±inf in forward, propagated as IEEE arithmetic says (the same
  special values as the reference computed in the same dtype).
"""
import numpy as np
import pytest

import nnlayers as nl
from _compare import assert_close, tol  # noqa: F401
import nnlayers._reference as ref

DTYPES = [np.float32, np.float64]
N, F = 5, 6


def other_float(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


# ---------------------------------------------------------------------------
# objects under test, with their reference twins
# ---------------------------------------------------------------------------

ACTIVATIONS = {
    "identity": (nl.Identity, 0.01), "relu": (nl.ReLU, 0.01),
    "leaky_relu": (lambda dtype=None: nl.LeakyReLU(0.2, dtype=dtype), 0.2),
    "sigmoid": (nl.Sigmoid, 0.01), "tanh": (nl.Tanh, 0.01), "softplus": (nl.Softplus, 0.01),
    "step": (nl.Step, 0.01), "cos": (nl.Cos, 0.01), "softmax": (nl.Softmax, 0.01),
    "log_softmax": (nl.LogSoftmax, 0.01), "gelu": (nl.GELU, 0.01), "silu": (nl.SiLU, 0.01),
    "elu": (lambda dtype=None: nl.ELU(0.5, dtype=dtype), {"alpha": 0.5}),
    "softsign": (nl.Softsign, 0.01),
    "hardtanh": (lambda dtype=None: nl.Hardtanh(-0.5, 2.0, dtype=dtype),
                 {"min_val": -0.5, "max_val": 2.0}),
}
OBJECTS = ["linear", "linear_nobias"] + list(ACTIVATIONS) + ["sequential"]


def make(name, dtype):
    """(object, output width); Linear layers get a non-zero bias."""
    rng = np.random.default_rng(99)
    if name.startswith("linear"):
        obj = nl.Linear(F, 4, bias=name == "linear", dtype=dtype, seed=5)
        if obj.bias:
            obj.params["b"] = rng.standard_normal(4)
        return obj, 4
    if name == "sequential":
        obj = nl.Sequential(nl.Linear(F, 7, dtype=dtype, seed=6), nl.Tanh(),
                            nl.Linear(7, 5, dtype=dtype, seed=7), nl.LeakyReLU(0.2),
                            nl.Linear(5, 3, dtype=dtype, seed=8), nl.LogSoftmax())
        for layer in obj:
            if "b" in layer.params:
                layer.params["b"] = rng.standard_normal(layer.params["b"].shape)
        return obj, 3
    return ACTIVATIONS[name][0](dtype=dtype), F


def specs_of(obj, name):
    """The reference's (kind, params, arguments) for every layer of obj."""
    layers = list(obj) if name == "sequential" else [obj]
    out = []
    for layer in layers:
        params = {k: np.array(v, copy=True) for k, v in layer.params.items()} or None
        if params is not None and "b" not in params:
            params["b"] = None
        out.append((layer.kind, params, layer._args))
    return out


def reference(obj, name, x, gy):
    """(y, gx, grads per layer) from nnlayers._reference for inputs already
    converted to the object's dtype."""
    specs = specs_of(obj, name)
    y, caches = ref.sequential_forward(specs, x)
    gx, grads = ref.sequential_backward(specs, caches, gy)
    return y, gx, grads


def grads_of(obj, name):
    layers = list(obj) if name == "sequential" else [obj]
    return [{k: np.array(v, copy=True) for k, v in layer.grads.items()} for layer in layers]


# ---------------------------------------------------------------------------
# the input forms
# ---------------------------------------------------------------------------

def misaligned(a):
    """A C-contiguous copy of a whose data pointer is odd. (Slicing a
    bytearray copies it to an aligned buffer; a memoryview slice does not.)"""
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(memoryview(raw)[1:1 + a.nbytes], dtype=a.dtype).reshape(a.shape)
    out[...] = a
    return out


def read_only(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


FORMS = {
    "fortran": lambda a: np.asfortranarray(a),
    "strided": lambda a: _embed(a)[::2, ::3],
    "negative_strides": lambda a: np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],
    "read_only": read_only,
    "read_only_fortran": lambda a: read_only(np.asfortranarray(a)),
    "byte_swapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "misaligned": misaligned,
    "other_float": lambda a: a.astype(other_float(a.dtype)),
    "float16": lambda a: a.astype(np.float16),
    "int64": lambda a: np.rint(3 * a).astype(np.int64),
    "int32": lambda a: np.rint(3 * a).astype(np.int32),
    "uint8": lambda a: np.rint(3 * np.abs(a)).astype(np.uint8),
    "bool": lambda a: a > 0,
    "list": lambda a: a.tolist(),
}


def _embed(a):
    big = np.full((2 * a.shape[0], 3 * a.shape[1]), 1e30, dtype=a.dtype)
    big[::2, ::3] = a
    return big


def check_form(form, v):
    """The variant really has the property its name promises."""
    if form == "list":
        assert isinstance(v, list)
        return
    flags = v.flags
    if form in ("fortran", "read_only_fortran"):
        assert flags.f_contiguous and not flags.c_contiguous
    if form in ("strided", "negative_strides"):
        assert not flags.c_contiguous and not flags.f_contiguous
    if form == "negative_strides":
        assert all(s < 0 for s in v.strides)
    if form.startswith("read_only"):
        assert not flags.writeable
    if form == "byte_swapped":
        assert not v.dtype.isnative
    if form == "misaligned":
        assert v.ctypes.data % 2 == 1 and not flags.aligned


def converted(v, dtype):
    return np.ascontiguousarray(np.asarray(v), dtype=dtype)


def copy_of(v):
    return [list(r) for r in v] if isinstance(v, list) else np.array(v, copy=True)


def unchanged(v, before):
    if isinstance(v, list):
        return v == before
    return v.dtype == before.dtype and np.array_equal(v, before, equal_nan=True)


# ---------------------------------------------------------------------------
# every form, every object, both dtypes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("name", OBJECTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_input_form_matches_reference(dtype, name, form):
    obj, out_w = make(name, dtype)
    rng = np.random.default_rng(7)
    x = FORMS[form](rng.standard_normal((N, F)).astype(dtype))
    gy = FORMS[form](rng.standard_normal((N, out_w)).astype(dtype))
    check_form(form, x)
    check_form(form, gy)
    xc, gyc = converted(x, dtype), converted(gy, dtype)
    y_want, gx_want, grads_want = reference(obj, name, xc, gyc)
    x0, gy0 = copy_of(x), copy_of(gy)

    obj.zero_grad()
    y = obj.forward(x)
    gx = obj.backward(gy)
    assert_close(y, y_want, dtype)
    assert_close(gx, gx_want, dtype)
    for got, want in zip(grads_of(obj, name), grads_want):
        assert got.keys() == {k for k, v in want.items() if v is not None}
        for k in got:
            assert_close(got[k], want[k], dtype)
    # inputs are never written
    assert unchanged(x, x0) and unchanged(gy, gy0)
    # and the result equals the one for the converted C-contiguous input
    obj.zero_grad()
    assert np.array_equal(obj.forward(xc), y)
    assert np.array_equal(obj.backward(gyc), gx)


def adopted_dtype(v):
    """What a dtype=None activation computes in: float32 for float32 arrays
    (any layout or byte order), float64 for everything else."""
    if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize == 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("base", DTYPES)
def test_activation_adopts_dtype_of_any_form(base, name, form):
    layer = ACTIVATIONS[name][0]()
    assert layer.dtype is None
    rng = np.random.default_rng(8)
    x = FORMS[form](rng.standard_normal((N, F)).astype(base))
    gy = FORMS[form](rng.standard_normal((N, F)).astype(base))
    dt = adopted_dtype(x)
    xc, gyc = converted(x, dt), converted(gy, dt)
    y_want, gx_want, _ = reference(layer, name, xc, gyc)
    y = layer.forward(x)
    gx = layer.backward(gy)
    assert y.dtype == dt and gx.dtype == dt
    assert_close(y, y_want, dt)
    assert_close(gx, gx_want, dt)


# ---------------------------------------------------------------------------
# empty batch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", OBJECTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_forward_backward(dtype, name):
    obj, out_w = make(name, dtype)
    layers = list(obj) if name == "sequential" else [obj]
    for layer in layers:                      # gradients with known content
        for g in layer.grads.values():
            g[...] = 0.75
    before = grads_of(obj, name)
    x = np.zeros((0, F), dtype)
    y = obj.forward(x)
    assert y.shape == (0, out_w) and y.dtype == np.dtype(dtype)
    gx = obj.backward(np.zeros((0, out_w), dtype))
    assert gx.shape == (0, F) and gx.dtype == np.dtype(dtype)
    for got, want in zip(grads_of(obj, name), before):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # the reference agrees on the shapes
    y_want, gx_want, _ = reference(obj, name, x, np.zeros((0, out_w), dtype))
    assert y_want.shape == y.shape and gx_want.shape == gx.shape
    # and the object works normally afterwards
    rng = np.random.default_rng(9)
    x1, gy1 = rng.standard_normal((N, F)).astype(dtype), rng.standard_normal((N, out_w)).astype(dtype)
    obj.zero_grad()
    y_want, gx_want, _ = reference(obj, name, x1, gy1)
    assert_close(obj.forward(x1), y_want, dtype)
    assert_close(obj.backward(gy1), gx_want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_other_forms(dtype):
    """Empty arrays in other forms (Fortran, int, strided) work too."""
    lin, _ = make("linear", dtype)
    for x in (np.asfortranarray(np.zeros((0, F), dtype)), np.zeros((0, F), np.int64),
              np.zeros((0, 2 * F), dtype)[:, ::2]):
        y = lin.forward(x)
        assert y.shape == (0, 4) and y.dtype == np.dtype(dtype)
        assert lin.backward(np.zeros((0, 4), dtype)).shape == (0, F)


LOSSES = {"sce": nl.SoftmaxCrossEntropy, "nll": nl.NLL, "bce": nl.BinaryCrossEntropy,
          "mse": nl.MSE}


@pytest.mark.parametrize("name,target", [("sce", "labels"), ("sce", "rows"), ("nll", "labels"),
                                         ("nll", "rows"), ("bce", "rows"), ("mse", "rows")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_loss_raises(dtype, name, target):
    C = 3
    pred = np.zeros((0, C), dtype)
    t = np.zeros((0,), np.int64) if target == "labels" else np.zeros((0, C), dtype)
    loss = LOSSES[name]()
    with pytest.raises(ValueError, match=r"pred has no rows: a loss averages over the batch, "
                                         r"so it needs N >= 1"):
        loss.forward(pred, t)
    with pytest.raises(ValueError, match=r"forward\(pred, target\) first"):
        loss.backward()
    # the loss still works, and agrees with the reference
    p1 = np.linspace(-1, 1, 2 * C).reshape(2, C).astype(dtype)
    t1 = np.array([0, 2]) if target == "labels" else np.full((2, C), 0.5, dtype)
    value = loss.forward(p1, t1)
    want, gwant = {"sce": ref.softmax_cross_entropy, "nll": ref.nll,
                   "bce": ref.binary_cross_entropy, "mse": ref.mse}[name](p1, t1)
    assert value == pytest.approx(want, rel=tol(dtype))
    assert_close(loss.backward(), gwant, dtype)


def _mlp(dtype):
    return nl.Sequential(nl.Linear(F, 4, dtype=dtype, seed=1), nl.ReLU(),
                         nl.Linear(4, 3, dtype=dtype, seed=2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_training_raises(dtype):
    model, fresh = _mlp(dtype), _mlp(dtype)
    X, y = np.zeros((0, F), dtype), np.zeros((0,), np.int64)
    loss = nl.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"train_step needs at least one sample \(x has 0 rows\)"):
        model.train_step(X, y, loss, nl.SGD(model, 0.1))
    with pytest.raises(ValueError, match=r"X has no rows: fit needs at least one sample"):
        model.fit(X, y, loss=loss, optimizer=nl.SGD(model, 0.1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"pred has no rows"):
        model.evaluate(X, y, loss)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, fresh.parameters()[k], err_msg=k)
    # predict of an empty batch is fine
    assert model.predict(X).shape == (0, 3)
    assert model.predict(X, batch_size=2).shape == (0, 3)
    # the model still trains exactly like a fresh one
    rng = np.random.default_rng(10)
    X1, y1 = rng.standard_normal((4, F)).astype(dtype), np.array([0, 1, 2, 1])
    v1 = model.train_step(X1, y1, loss, nl.SGD(model, 0.1))
    v2 = fresh.train_step(X1, y1, nl.SoftmaxCrossEntropy(), nl.SGD(fresh, 0.1))
    assert v1 == v2
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, fresh.parameters()[k], err_msg=k)


# ---------------------------------------------------------------------------
# NaN and ±inf in forward
# ---------------------------------------------------------------------------

NAN, INF = np.nan, np.inf
SPECIAL_IN = [NAN, INF, -INF]
# what IEEE arithmetic gives for [nan, +inf, -inf]
SPECIAL_OUT = {
    "identity": [NAN, INF, -INF],
    "relu": [NAN, INF, 0.0],
    "leaky_relu": [NAN, INF, -INF],
    "sigmoid": [NAN, 1.0, 0.0],
    "tanh": [NAN, 1.0, -1.0],
    "softplus": [NAN, INF, 0.0],
    "step": [NAN, 1.0, 0.0],
    "cos": [NAN, NAN, NAN],
    "gelu": [NAN, INF, NAN],          # -inf * Φ(-inf) = -inf * 0, as torch
    "silu": [NAN, INF, NAN],          # -inf * σ(-inf), as torch
    "elu": [NAN, INF, -0.5],          # alpha 0.5
    "softsign": [NAN, NAN, NAN],      # inf / (1 + inf), as torch
    "hardtanh": [NAN, 2.0, -0.5],     # clamped to [-0.5, 2]
}


def assert_ieee_equal(got, want, dtype):
    """Same NaN positions, same infinities with the same signs, finite values
    close (exactly equal where want is special)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.dtype(dtype) and want.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg="+inf positions")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg="-inf positions")
    fin = np.isfinite(want)
    if fin.any():
        assert_close(got[fin], want[fin], dtype)


@pytest.mark.parametrize("name", list(SPECIAL_OUT))
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_activation(dtype, name):
    cls, slope = ACTIVATIONS[name]
    layer = cls(dtype=dtype)
    z = np.array([SPECIAL_IN, [1.5, -2.0, 0.25]], dtype)
    with np.errstate(all="ignore"):
        want = ref.activation_forward(name, z, slope)
    got = layer.forward(z)
    expected = np.array(SPECIAL_OUT[name], dtype)
    np.testing.assert_array_equal(want[0], expected)     # the reference says so too
    np.testing.assert_array_equal(got[0], expected)      # NaN == NaN here
    assert_ieee_equal(got, want, dtype)                  # and the finite row agrees


SOFTMAX_ROWS = {
    "plus_inf": [1.0, INF, 2.0],
    "minus_inf": [1.0, -INF, 2.0],
    "nan": [NAN, 1.0, 2.0],
    "all_minus_inf": [-INF, -INF, -INF],
    "finite": [1.0, 2.0, 3.0],
}


@pytest.mark.parametrize("row", list(SOFTMAX_ROWS))
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_softmax(dtype, name, row):
    """Row-wise softmax and log-softmax with special values, as IEEE
    arithmetic evaluates the shifted formula of the reference: a row holding
    +inf or NaN gives NaN everywhere; -inf gives probability 0 (log -inf)."""
    layer = ACTIVATIONS[name][0](dtype=dtype)
    z = np.array([SOFTMAX_ROWS[row], [0.5, -1.0, 2.0]], dtype)   # second row: finite
    with np.errstate(all="ignore"):
        want = ref.layer_forward(name, z)
    if row in ("plus_inf", "nan", "all_minus_inf"):
        assert np.all(np.isnan(want[0]))
    got = layer.forward(z)
    assert_ieee_equal(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_linear(dtype):
    """x @ W + b with inf/nan in x: the special values NumPy gives for the
    same product in the same dtype (small integer weights, so the finite
    entries are exact too)."""
    W = np.array([[1, -2, 0], [0, 3, 1], [2, 1, -1]], dtype)
    b = np.array([0.5, -1, 2], dtype)
    lin = nl.Linear(3, 3, dtype=dtype, seed=0)
    lin.params["W"] = W
    lin.params["b"] = b
    x = np.array([[INF, 1, 2],        # inf * 0 = nan in column 2
                  [1, INF, 2],
                  [-INF, INF, 1],     # inf - inf = nan
                  [NAN, 0, 0],
                  [1, 2, -INF],
                  [1, 2, 3]], dtype)
    with np.errstate(all="ignore"):
        want = ref.linear_forward(x, W, b)
    assert want.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(want[0], np.array([INF, -INF, NAN], dtype))
    got = lin.forward(x)
    np.testing.assert_array_equal(got, want)
    # the same inside a Sequential, through ReLU and a second Linear
    model = nl.Sequential(nl.Linear(3, 3, dtype=dtype, seed=0), nl.ReLU(),
                          nl.Linear(3, 2, dtype=dtype, seed=1))
    W2 = np.array([[1, 0], [-1, 2], [0, 1]], dtype)
    model[0].params["W"], model[0].params["b"] = W, b
    model[2].params["W"], model[2].params["b"] = W2, np.zeros(2, dtype)
    with np.errstate(all="ignore"):
        want2 = ref.linear_forward(ref.activation_forward("relu", want), W2, np.zeros(2, dtype))
    np.testing.assert_array_equal(model.forward(x), want2)
