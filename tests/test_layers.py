"""Single layers of nnlayers: gradients (finite differences), the C kernels
against their NumPy twins in nnlayers._reference, numerical stability,
Linear initialisation, the BLAS path against the naive GEMM, and the layer
object's bookkeeping (zero_grad, trainable, repr, config, pickle, copy)."""

import copy
import json
import pickle
import warnings

import numpy as np
import pytest

import nnlayers as nl
from _compare import assert_close, tol  # noqa: F401
import nnlayers._reference as ref
from nnlayers import _core
from nnlayers.layers import layer_from_config

DTYPES = [np.float32, np.float64]

# name -> (constructor(dtype, in_features, seed), kind, slope, class name);
# slope: LeakyReLU's, or the kind's arguments as a dict (see _reference)
SPECS = {
    "linear": (lambda dt, i, s: nl.Linear(i, 4, bias=True, dtype=dt, seed=s),
               "linear", 0.01, "Linear"),
    "linear_nobias": (lambda dt, i, s: nl.Linear(i, 4, bias=False, dtype=dt, seed=s),
                      "linear", 0.01, "Linear"),
    "identity": (lambda dt, i, s: nl.Identity(), "identity", 0.01, "Identity"),
    "relu": (lambda dt, i, s: nl.ReLU(), "relu", 0.01, "ReLU"),
    "leaky_relu": (lambda dt, i, s: nl.LeakyReLU(), "leaky_relu", 0.01, "LeakyReLU"),
    "leaky_relu_0.2": (lambda dt, i, s: nl.LeakyReLU(slope=0.2), "leaky_relu", 0.2,
                       "LeakyReLU"),
    "sigmoid": (lambda dt, i, s: nl.Sigmoid(), "sigmoid", 0.01, "Sigmoid"),
    "tanh": (lambda dt, i, s: nl.Tanh(), "tanh", 0.01, "Tanh"),
    "softplus": (lambda dt, i, s: nl.Softplus(), "softplus", 0.01, "Softplus"),
    "step": (lambda dt, i, s: nl.Step(), "step", 0.01, "Step"),
    "cos": (lambda dt, i, s: nl.Cos(), "cos", 0.01, "Cos"),
    "gelu": (lambda dt, i, s: nl.GELU(), "gelu", 0.01, "GELU"),
    "gelu_tanh": (lambda dt, i, s: nl.GELU(approximate="tanh"), "gelu",
                  {"approximate": "tanh"}, "GELU"),
    "silu": (lambda dt, i, s: nl.SiLU(), "silu", 0.01, "SiLU"),
    "elu": (lambda dt, i, s: nl.ELU(), "elu", 0.01, "ELU"),
    "elu_0.4": (lambda dt, i, s: nl.ELU(alpha=0.4), "elu", {"alpha": 0.4}, "ELU"),
    "elu_-0.7": (lambda dt, i, s: nl.ELU(alpha=-0.7), "elu", {"alpha": -0.7}, "ELU"),
    "softsign": (lambda dt, i, s: nl.Softsign(), "softsign", 0.01, "Softsign"),
    "hardtanh": (lambda dt, i, s: nl.Hardtanh(), "hardtanh", 0.01, "Hardtanh"),
    "hardtanh_-0.5_2": (lambda dt, i, s: nl.Hardtanh(-0.5, 2.0), "hardtanh",
                        {"min_val": -0.5, "max_val": 2.0}, "Hardtanh"),
    "softmax": (lambda dt, i, s: nl.Softmax(), "softmax", 0.01, "Softmax"),
    "log_softmax": (lambda dt, i, s: nl.LogSoftmax(), "log_softmax", 0.01, "LogSoftmax"),
}
ALL = list(SPECS)
# where the derivative jumps (finite differences stay away)
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "leaky_relu_0.2": (0.0,), "step": (0.0,),
         "elu_0.4": (0.0,), "elu_-0.7": (0.0,), "hardtanh": (-1.0, 1.0),
         "hardtanh_-0.5_2": (-0.5, 2.0)}


def make(name, dtype, in_features=5, seed=7, rng=None):
    """A layer; a Linear gets a random (non-zero) bias so b matters."""
    ctor = SPECS[name][0]
    layer = ctor(dtype, in_features, seed)
    if rng is not None and "b" in layer.params:
        layer.params["b"] = rng.standard_normal(layer.params["b"].shape)
    return layer


def ref_params(layer):
    """The layer's parameters as plain copies for nnlayers._reference."""
    if not len(layer.params):
        return None
    return {k: np.array(v, copy=True) for k, v in layer.params.items()}


def away_from(x, kinks, margin=0.1):
    """x with every value at least `margin` from every kink (kinks sorted,
    more than 2 * margin apart)."""
    for k in kinks:
        d = x - k
        x = np.where(np.abs(d) < margin, k + np.where(d >= 0, 1.0, -1.0) * margin, x)
    return x


# ---------------------------------------------------------------------------
# finite differences (float64)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_gradcheck_every_layer(name, rng):
    layer = make(name, np.float64, 5, rng=rng)
    x = 1.5 * rng.standard_normal((4, 5))
    if name in KINKS:
        x = away_from(x, KINKS[name])
        assert all(np.min(np.abs(x - k)) >= 0.1 - 1e-12 for k in KINKS[name])
    res = nl.gradcheck(layer, x)
    assert res.ok
    assert res.max_rel_error <= 1e-6
    # the input gradient and every parameter (W and b for Linear) were checked
    expected = {"x"} | set(layer.params)
    if name == "linear":
        assert expected == {"x", "W", "b"}
    if name == "linear_nobias":
        assert expected == {"x", "W"}
    assert set(res.errors) == expected


class _CountingLayer:
    """Duck-typed wrapper that counts forward calls (to see which mode
    gradcheck used)."""

    def __init__(self, layer):
        self.layer = layer
        self.calls = 0
        self.params = layer.params
        self.grads = layer.grads

    def forward(self, x):
        self.calls += 1
        return self.layer.forward(x)

    def backward(self, g):
        return self.layer.backward(g)

    def zero_grad(self):
        self.layer.zero_grad()


@pytest.mark.parametrize("name", ["linear", "tanh", "softmax", "log_softmax"])
def test_gradcheck_random_direction_mode(name, rng):
    # x (40, 30) has 1200 entries and W (30, 20) 600: both above the default
    # max_elements=512, so they are checked along random directions.
    layer = nl.Linear(30, 20, dtype=np.float64, seed=3) if name == "linear" else make(name, None)
    if name == "linear":
        layer.params["b"] = rng.standard_normal(20)
    x = rng.standard_normal((40, 30))
    wrapped = _CountingLayer(layer)
    res = nl.gradcheck(wrapped, x)
    assert res.ok
    assert res.max_rel_error <= 1e-6
    assert set(res.errors) == {"x"} | set(layer.params)
    # per-element checking of x alone would take 2400 forwards
    assert wrapped.calls < 200


# ---------------------------------------------------------------------------
# against the NumPy reference, float32 and float64
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5), (1, 3), (16, 9)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_forward_backward_match_reference(name, dtype, shape, rng):
    kind, slope = SPECS[name][1], SPECS[name][2]
    layer = make(name, dtype, shape[1], rng=rng)
    P = ref_params(layer)
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = layer.forward(x)
    y_ref = ref.layer_forward(kind, x, P, slope)
    assert_close(y, y_ref, dtype)

    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    layer.zero_grad()
    gx = layer.backward(gy)
    gx_ref, grads_ref = ref.layer_backward(kind, gy, x, P, slope)
    assert_close(gx, gx_ref, dtype)
    assert set(layer.grads) == set(grads_ref)
    for k, g in grads_ref.items():
        assert_close(layer.grads[k], g, dtype)
    if kind != "linear":
        assert len(layer.params) == 0 and len(layer.grads) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_adds_into_grads(bias, dtype, rng):
    lin = nl.Linear(6, 4, bias=bias, dtype=dtype, seed=11)
    if bias:
        lin.params["b"] = rng.standard_normal(4)
    P = ref_params(lin)
    lin.zero_grad()
    want = {k: 0 for k in lin.params}
    for _ in range(2):
        x = rng.standard_normal((5, 6)).astype(dtype)
        gy = rng.standard_normal((5, 4)).astype(dtype)
        lin.forward(x)
        gx = lin.backward(gy)
        gx_ref, g_ref = ref.layer_backward("linear", gy, x, P)
        assert_close(gx, gx_ref, dtype)          # gx is not accumulated
        for k in want:
            want[k] = want[k] + g_ref[k].astype(np.float64)
    for k in want:
        assert_close(lin.grads[k], want[k].astype(dtype), dtype)
    # the parameters themselves did not move
    for k in P:
        assert np.array_equal(lin.params[k], P[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_with_explicit_dtype_converts(dtype, rng):
    other = np.float64 if dtype == np.float32 else np.float32
    x = rng.standard_normal((3, 4)).astype(other)
    layer = nl.Tanh(dtype=dtype)
    assert layer.dtype == np.dtype(dtype)
    y = layer.forward(x)
    assert_close(y, ref.activation_forward("tanh", x.astype(dtype)), dtype)
    gx = layer.backward(np.ones((3, 4), dtype=other))
    assert_close(gx, ref.activation_backward("tanh", np.ones((3, 4), dtype), x.astype(dtype)),
                 dtype)


@pytest.mark.parametrize("name", [n for n in ALL if not n.startswith("linear")])
def test_activation_adopts_input_dtype(name, rng):
    layer = make(name, None)
    assert layer.dtype is None
    x = rng.standard_normal((3, 4))
    assert layer.forward(x.astype(np.float32)).dtype == np.float32
    layer.backward(np.ones((3, 4), np.float32))
    assert layer.forward(x).dtype == np.float64
    layer.backward(np.ones((3, 4)))
    y = layer.forward(np.arange(12).reshape(3, 4))           # ints -> float64
    assert y.dtype == np.float64
    kind, slope = SPECS[name][1], SPECS[name][2]
    assert_close(y, ref.layer_forward(kind, np.arange(12.0).reshape(3, 4), None, slope),
                 np.float64)


def test_kind_names():
    want = {"linear": "linear", "linear_nobias": "linear", "identity": "identity",
            "relu": "relu", "leaky_relu": "leaky_relu", "leaky_relu_0.2": "leaky_relu",
            "sigmoid": "sigmoid", "tanh": "tanh", "softplus": "softplus", "step": "step",
            "cos": "cos", "softmax": "softmax", "log_softmax": "log_softmax",
            "gelu": "gelu", "gelu_tanh": "gelu", "silu": "silu", "elu": "elu",
            "elu_0.4": "elu", "elu_-0.7": "elu", "softsign": "softsign",
            "hardtanh": "hardtanh", "hardtanh_-0.5_2": "hardtanh"}
    for name in ALL:
        layer = make(name, np.float64)
        assert layer.kind == want[name]
        assert isinstance(layer, nl.Layer)
    assert nl.LeakyReLU(slope=0.2).slope == pytest.approx(0.2)
    lin = nl.Linear(5, 3)
    assert (lin.in_features, lin.out_features) == (5, 3)
    assert lin.dtype == np.float32                      # the documented default
    assert lin.params["W"].shape == (5, 3) and lin.params["b"].shape == (3,)


# ---------------------------------------------------------------------------
# numerical stability
# ---------------------------------------------------------------------------

Z_EXTREME = [-1000.0, -710.0, -89.0, -30.0, 0.0, 30.0, 89.0, 710.0, 1000.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softplus", "sigmoid"])
def test_softplus_sigmoid_stable_at_extremes(name, dtype):
    z = np.array([Z_EXTREME], dtype=dtype)
    layer = make(name, None)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = layer.forward(z)
        g = layer.backward(np.ones_like(z))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    lo, hi = 0, -1                                     # z = -1000, z = +1000
    if name == "softplus":
        assert 0.0 <= y[0, lo] <= 1e-300
        assert y[0, hi] == pytest.approx(1000.0, rel=1e-7)
        assert g[0, lo] == pytest.approx(0.0, abs=1e-300)   # sigmoid(-1000)
        assert g[0, hi] == pytest.approx(1.0, rel=1e-7)
    else:
        assert y[0, lo] == pytest.approx(0.0, abs=1e-300)
        assert y[0, hi] == pytest.approx(1.0, rel=1e-7)
        assert g[0, lo] == pytest.approx(0.0, abs=1e-300)
        assert g[0, hi] == pytest.approx(0.0, abs=1e-300)
    assert np.all(y >= 0)
    kind = SPECS[name][1]
    with np.errstate(all="ignore"):
        assert_close(y, ref.activation_forward(kind, z), dtype)
        assert_close(g, ref.activation_backward(kind, np.ones_like(z), z), dtype)


HUGE_LOGITS = [[1000.0, 999.0, -1000.0, 0.0],
               [1e4, -1e4, 0.0, 1e4],
               [-1e4, -1e4, -1e4, -1e4],
               [3e4, 2e4, 1e4, 3e4 - 1.0]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_huge_logits(dtype, rng):
    z = np.array(HUGE_LOGITS, dtype=dtype)
    gy = rng.standard_normal(z.shape).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm = nl.Softmax()
        a = sm.forward(z)
        ga = sm.backward(gy)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(ga))
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=tol(dtype) / 10)
    assert np.array_equal(a.argmax(axis=1), z.argmax(axis=1))
    with np.errstate(all="ignore"):
        assert_close(a, ref.softmax_forward(z), dtype)
        assert_close(ga, ref.softmax_backward(gy, ref.softmax_forward(z)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_huge_logits(dtype, rng):
    z = np.array(HUGE_LOGITS, dtype=dtype)
    gy = rng.standard_normal(z.shape).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lsm = nl.LogSoftmax()
        la = lsm.forward(z)
        gla = lsm.backward(gy)
    assert np.all(np.isfinite(la)) and np.all(np.isfinite(gla))
    assert np.all(la <= 0)
    np.testing.assert_allclose(np.exp(la.astype(np.float64)).sum(axis=1), 1.0,
                               rtol=tol(dtype) * 10)
    # log-probabilities of the top classes are O(1) numbers: they must be
    # accurate to the dtype's precision, whatever the logits' magnitude
    # (computed as (z - max) - log(sum exp(z - max)), like the reference).
    with np.errstate(all="ignore"):
        assert_close(la, ref.log_softmax_forward(z), dtype)
        assert_close(gla, ref.log_softmax_backward(gy, ref.log_softmax_forward(z)), dtype)


# ---------------------------------------------------------------------------
# Linear initialisation
# ---------------------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300


@pytest.mark.parametrize("dtype", DTYPES)
def test_init_he(dtype):
    lin = nl.Linear(FAN_IN, FAN_OUT, init="he", dtype=dtype, seed=1)
    W = lin.params["W"].astype(np.float64)
    assert lin.params["W"].dtype == np.dtype(dtype)
    sigma = np.sqrt(2.0 / FAN_IN)
    assert abs(W.std() / sigma - 1) < 0.02
    assert abs(W.mean()) < 5 * sigma / np.sqrt(W.size)
    # normal, not uniform: ~68.3% within one sigma, tails beyond 3 sigma
    assert abs(np.mean(np.abs(W) < sigma) - 0.6827) < 0.01
    assert np.abs(W).max() > 3.5 * sigma
    assert np.all(lin.params["b"] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", ["glorot", "uniform"])
def test_init_uniform_schemes(init, dtype):
    lin = nl.Linear(FAN_IN, FAN_OUT, init=init, dtype=dtype, seed=2)
    W = lin.params["W"].astype(np.float64)
    bound = np.sqrt(6.0 / (FAN_IN + FAN_OUT)) if init == "glorot" else 1.0 / np.sqrt(FAN_IN)
    assert np.abs(W).max() <= bound * (1 + 1e-6)
    assert np.abs(W).max() > 0.99 * bound
    assert abs(W.std() / (bound / np.sqrt(3)) - 1) < 0.02
    assert abs(W.mean()) < 5 * bound / np.sqrt(3 * W.size)
    # flat: half the mass within half the bound
    assert abs(np.mean(np.abs(W) < bound / 2) - 0.5) < 0.01
    assert np.all(lin.params["b"] == 0)


@pytest.mark.parametrize("init", ["he", "glorot", "uniform"])
def test_init_seed_and_symmetry_breaking(init):
    a = nl.Linear(20, 10, init=init, seed=123, dtype=np.float64)
    b = nl.Linear(20, 10, init=init, seed=123, dtype=np.float64)
    c = nl.Linear(20, 10, init=init, seed=124, dtype=np.float64)
    d1 = nl.Linear(20, 10, init=init, dtype=np.float64)
    d2 = nl.Linear(20, 10, init=init, dtype=np.float64)
    assert np.array_equal(a.params["W"], b.params["W"])
    assert not np.array_equal(a.params["W"], c.params["W"])
    assert not np.array_equal(d1.params["W"], d2.params["W"])     # seed=None
    W = a.params["W"]
    assert np.unique(W).size > W.size // 2                        # not all equal
    assert np.all(a.params["b"] == 0)
    assert np.all(a.grads["W"] == 0) and np.all(a.grads["b"] == 0)


def test_init_invalid_name():
    with pytest.raises(ValueError, match="init"):
        nl.Linear(3, 2, init="xavier")


# ---------------------------------------------------------------------------
# BLAS path against the naive reference GEMM
# ---------------------------------------------------------------------------

def _linear_pass(dtype, reference_gemm, x, gy, W, b):
    old = _core.use_reference_gemm(reference_gemm)
    try:
        lin = nl.Linear(W.shape[0], W.shape[1], dtype=dtype, seed=0)
        lin.params["W"] = W
        lin.params["b"] = b
        y = lin.forward(x)
        gx = lin.backward(gy)
        model = nl.Sequential(nl.Linear(W.shape[0], W.shape[1], dtype=dtype, seed=0),
                              nl.Tanh(), nl.Linear(W.shape[1], 3, dtype=dtype, seed=5))
        model[0].params["W"] = W
        model[0].params["b"] = b
        my = model.forward(x)
        mgx = model.backward(np.ones_like(my))
        grads = {k: v.copy() for k, v in lin.grads.items()}
        mgrads = {k: v.copy() for k, v in model.gradients().items()}
    finally:
        assert _core.use_reference_gemm(old) == bool(reference_gemm)
    return y, gx, grads, my, mgx, mgrads


@pytest.mark.parametrize("dtype", DTYPES)
def test_blas_equals_reference_gemm(dtype, rng):
    I, O, N = 37, 23, 19
    x = rng.standard_normal((N, I)).astype(dtype)
    gy = rng.standard_normal((N, O)).astype(dtype)
    W = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    blas = _linear_pass(dtype, False, x, gy, W, b)
    naive = _linear_pass(dtype, True, x, gy, W, b)
    y, gx, grads, my, mgx, mgrads = blas
    for got, want in zip(blas[:2] + blas[3:5], naive[:2] + naive[3:5]):
        assert_close(got, want, dtype)
    for k in grads:
        assert_close(grads[k], naive[2][k], dtype)
    for k in mgrads:
        assert_close(mgrads[k], naive[5][k], dtype)
    # and both equal the NumPy reference
    assert_close(y, ref.linear_forward(x, W, b), dtype)
    gx_ref, dW_ref, db_ref = ref.linear_backward(gy, x, W)
    assert_close(naive[1], gx_ref, dtype)
    assert_close(naive[2]["W"], dW_ref, dtype)
    assert_close(naive[2]["b"], db_ref, dtype)


# ---------------------------------------------------------------------------
# bookkeeping: zero_grad, trainable, repr, config, pickle, deepcopy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_grad(dtype, rng):
    lin = nl.Linear(5, 3, dtype=dtype, seed=1)
    x = rng.standard_normal((4, 5)).astype(dtype)
    gy = rng.standard_normal((4, 3)).astype(dtype)
    lin.forward(x)
    lin.backward(gy)
    assert np.any(lin.grads["W"] != 0) and np.any(lin.grads["b"] != 0)
    W_before = lin.params["W"].copy()
    lin.zero_grad()
    assert np.all(lin.grads["W"] == 0) and np.all(lin.grads["b"] == 0)
    assert np.array_equal(lin.params["W"], W_before)
    lin.forward(x)
    lin.backward(gy)
    _, dW, db = ref.linear_backward(gy, x, W_before)
    assert_close(lin.grads["W"], dW, dtype)
    assert_close(lin.grads["b"], db, dtype)
    nl.ReLU().zero_grad()          # no parameters: a no-op that must not fail


@pytest.mark.parametrize("dtype", DTYPES)
def test_trainable_false(dtype, rng):
    lin = nl.Linear(5, 3, dtype=dtype, seed=1)
    assert lin.trainable is True
    lin.grads["W"][...] = 7
    lin.grads["b"][...] = -3
    lin.trainable = False
    assert lin.trainable is False
    x = rng.standard_normal((4, 5)).astype(dtype)
    gy = rng.standard_normal((4, 3)).astype(dtype)
    W = lin.params["W"].copy()
    y = lin.forward(x)
    gx = lin.backward(gy)
    assert_close(y, ref.linear_forward(x, W, lin.params["b"]), dtype)
    assert_close(gx, ref.linear_backward(gy, x, W)[0], dtype)
    assert np.all(lin.grads["W"] == 7) and np.all(lin.grads["b"] == -3)
    lin.trainable = True
    lin.zero_grad()
    lin.forward(x)
    lin.backward(gy)
    assert_close(lin.grads["W"], ref.linear_backward(gy, x, W)[1], dtype)


def test_repr():
    r = repr(nl.Linear(784, 128))
    assert r.startswith("Linear(")
    assert "in_features=784" in r and "out_features=128" in r
    assert "bias=True" in r and "float32" in r
    r = repr(nl.Linear(3, 2, bias=False, dtype=np.float64))
    assert "in_features=3" in r and "out_features=2" in r
    assert "bias=False" in r and "float64" in r
    assert "0.2" in repr(nl.LeakyReLU(slope=0.2))
    for name in ALL:
        assert repr(make(name, np.float64)).startswith(SPECS[name][3] + "(")


@pytest.mark.parametrize("name", ALL)
def test_get_config_round_trip(name, rng):
    layer = make(name, np.float64, 5, rng=rng)
    cfg = layer.get_config()
    assert json.loads(json.dumps(cfg)) == cfg          # JSON-able
    clone = layer_from_config(type(layer).__name__, cfg)
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    assert clone.kind == layer.kind and clone.dtype == layer.dtype
    for k, v in layer.params.items():
        assert clone.params[k].shape == v.shape
        clone.params[k] = v
    x = 2 * rng.standard_normal((3, 5))
    assert np.array_equal(clone.forward(x), layer.forward(x))


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", ALL)
def test_pickle_and_deepcopy(name, how, rng):
    dtype = np.float32 if name == "linear" else np.float64
    layer = make(name, dtype, 5, rng=rng)
    layer.trainable = False
    clone = pickle.loads(pickle.dumps(layer)) if how == "pickle" else copy.deepcopy(layer)
    assert type(clone) is type(layer) and clone is not layer
    assert clone.trainable is False
    assert clone.get_config() == layer.get_config()
    assert set(clone.params) == set(layer.params)
    for k in layer.params:
        assert clone.params[k].dtype == layer.params[k].dtype
        assert np.array_equal(clone.params[k], layer.params[k])
        assert not np.shares_memory(clone.params[k], layer.params[k])
        assert not np.shares_memory(clone.grads[k], layer.grads[k])
    x = (2 * rng.standard_normal((3, 5))).astype(dtype)
    assert np.array_equal(clone.forward(x), layer.forward(x))
    # independent memory: changing the clone leaves the original alone
    for k in layer.params:
        before = layer.params[k].copy()
        clone.params[k][...] = 0.5
        assert np.array_equal(layer.params[k], before)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copy_of_layer_inside_a_model(how, rng):
    model = nl.Sequential(nl.Linear(4, 3, dtype=np.float64, seed=1), nl.ReLU(),
                          nl.Linear(3, 2, dtype=np.float64, seed=2))
    model[2].params["b"] = rng.standard_normal(2)
    lin = model[2]
    clone = pickle.loads(pickle.dumps(lin)) if how == "pickle" else copy.deepcopy(lin)
    for k in lin.params:
        assert np.array_equal(clone.params[k], lin.params[k])
        assert not np.shares_memory(clone.params[k], model._param_block())
    # the copy is free to join another model
    other = nl.Sequential(clone, nl.Tanh())
    x = rng.standard_normal((3, 3))
    assert np.array_equal(other[0].forward(x), lin.forward(x))
