"""Tests of nnlayers/_reference.py and nnlayers/gradcheck.py.

Both modules are loaded by file path, so these tests run without the
compiled extension. The reference is checked against independent
computations: float64 central differences of its own forward functions,
hand-unrolled SGD steps and explicit loops.
"""

import importlib.util
import math
import pathlib
import sys
import warnings

import numpy as np
import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "nnlayers"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_nnl_test_{name}", PKG / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


ref = _load("_reference")
gc = _load("gradcheck")

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "step", "cos",
        "gelu", "silu", "elu", "softsign", "hardtanh"]
# the activations with arguments, in settings that change the function
ACT_ARGS = [("leaky_relu", {"slope": -0.3}), ("gelu", {"approximate": "tanh"}),
            ("gelu", {"approximate": 1.0}), ("elu", {"alpha": 0.4}), ("elu", {"alpha": -0.7}),
            ("elu", {"alpha": 0.0}), ("hardtanh", {"min_val": -0.5, "max_val": 2.0})]
# where each kind's derivative jumps (finite differences stay away)
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "step": (0.0,), "elu": (0.0,),
         "hardtanh": (-1.0, 1.0, -0.5, 2.0)}
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# independent finite differences (not using gradcheck.py)
# ---------------------------------------------------------------------------

def num_vjp(fn, x, r, eps=1e-6):
    """d/dx sum(r * fn(x)) by float64 central differences, entry by entry."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = np.sum(r * (fn(xp) - fn(xm))) / (2 * eps)
    return g


def num_grad(fn, x, eps=1e-6):
    """Gradient of a scalar function by float64 central differences."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (fn(xp) - fn(xm)) / (2 * eps)
    return g


def away_from_zero(rng, shape, margin=0.1):
    z = rng.standard_normal(shape) * 2
    return np.where(np.abs(z) < margin, np.sign(z + 1e-300) * (margin + np.abs(z)), z)


def away_from(rng, shape, kinks, margin=0.1):
    """2 N(0, 1) values, each at least `margin` from every kink."""
    z = rng.standard_normal(shape) * 2
    for k in kinks:
        d = z - k
        z = np.where(np.abs(d) < margin, k + np.sign(d + 1e-300) * (margin + np.abs(d)), z)
    assert all(np.min(np.abs(z - k)) >= margin * 0.99 for k in kinks)
    return z


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ACTS)
def test_activation_backward_matches_finite_differences(kind, rng):
    z = away_from(rng, (4, 5), KINKS.get(kind, ()) + (0.0,))
    r = rng.standard_normal(z.shape)
    slope = 0.07
    num = num_vjp(lambda t: ref.activation_forward(kind, t, slope), z, r)
    ana = ref.activation_backward(kind, r, z, slope)
    np.testing.assert_allclose(ana, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_dtype_preserved(kind, dtype, rng):
    z = rng.standard_normal((3, 4)).astype(dtype)
    gy = rng.standard_normal((3, 4)).astype(dtype)
    a = ref.activation_forward(kind, z, 0.2)
    g = ref.activation_backward(kind, gy, z, 0.2)
    assert a.dtype == dtype and g.dtype == dtype
    assert a.shape == z.shape and g.shape == z.shape
    # float32 result agrees with the float64 computation
    a64 = ref.activation_forward(kind, z.astype(np.float64), 0.2)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(a, a64, rtol=tol, atol=tol)


def test_activation_values():
    z = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ref.activation_forward("relu", z), [[0, 0, 0, 0.5, 3.0]])
    np.testing.assert_allclose(ref.activation_forward("leaky_relu", z, 0.1),
                               [[-0.2, -0.05, 0, 0.5, 3.0]])
    np.testing.assert_array_equal(ref.activation_forward("step", z), [[0, 0, 0, 1, 1]])
    np.testing.assert_allclose(ref.activation_forward("sigmoid", z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(ref.activation_forward("softplus", z), np.log1p(np.exp(z)))
    np.testing.assert_array_equal(ref.activation_backward("step", np.ones_like(z), z), 0)
    np.testing.assert_allclose(ref.activation_backward("cos", np.ones_like(z), z), -np.sin(z))
    with pytest.raises(TypeError):
        ref.activation_forward("mish", z)


@pytest.mark.parametrize("kind,args", ACT_ARGS, ids=[f"{k}-{a}" for k, a in ACT_ARGS])
def test_activation_arguments_match_finite_differences(kind, args, rng):
    z = away_from(rng, (4, 5), KINKS[kind] if kind in KINKS else ())
    r = rng.standard_normal(z.shape)
    num = num_vjp(lambda t: ref.activation_forward(kind, t, args), z, r)
    for ana in (ref.activation_backward(kind, r, z, args),          # a dict, as layer._args
                ref.activation_backward(kind, r, z, **args)):      # keywords
        np.testing.assert_allclose(ana, num, rtol=1e-6, atol=1e-8)
    # the arguments matter: the defaults give another function here
    assert not np.allclose(ref.activation_forward(kind, z, args), ref.activation_forward(kind, z)) \
        or kind == "gelu" and args["approximate"] == "none"


def test_new_activation_values():
    z = np.array([[-3.0, -1.0, 0.0, 0.5, 2.0]])
    phi = np.array([[0.5 * math.erfc(-v / math.sqrt(2)) for v in z[0]]])
    np.testing.assert_allclose(ref.activation_forward("gelu", z), z * phi, rtol=1e-14)
    u = math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)
    np.testing.assert_allclose(ref.activation_forward("gelu", z, approximate="tanh"),
                               0.5 * z * (1 + np.tanh(u)), rtol=1e-14)
    np.testing.assert_allclose(ref.activation_forward("silu", z), z / (1 + np.exp(-z)),
                               rtol=1e-15)
    np.testing.assert_allclose(ref.activation_forward("elu", z, alpha=0.5),
                               np.where(z > 0, z, 0.5 * (np.exp(z) - 1)), rtol=1e-15)
    np.testing.assert_allclose(ref.activation_forward("softsign", z),
                               [[-0.75, -0.5, 0, 1 / 3, 2 / 3]], rtol=1e-15)
    np.testing.assert_array_equal(ref.activation_forward("hardtanh", z, min_val=-1, max_val=0.5),
                                  [[-1, -1, 0, 0.5, 0.5]])
    # Hardtanh: derivative 0 at both edges and outside, 1 strictly inside
    edges = np.array([[-1.5, -1.0, -0.999, 0.999, 1.0, 1.5]])
    np.testing.assert_array_equal(ref.activation_derivative("hardtanh", edges),
                                  [[0, 0, 1, 1, 0, 0]])
    # GELU's lower tail does not cancel to 0: z Φ(z) at z = -10 is ~ -7.6e-23
    assert ref.activation_forward("gelu", np.array([[-10.0]]))[0, 0] == pytest.approx(
        -10 * 0.5 * math.erfc(10 / math.sqrt(2)), rel=1e-14)


def test_new_activations_nan_and_inf():
    """NaN in, NaN out (forward); backward as torch: NaN for GELU, SiLU and
    Softsign, dy through ELU, 0 from Hardtanh's select."""
    z = np.array([[np.nan, np.inf, -np.inf]])
    ones = np.ones_like(z)
    want_fwd = {"gelu": [np.nan, np.inf, np.nan], "silu": [np.nan, np.inf, np.nan],
                "elu": [np.nan, np.inf, -1.0], "softsign": [np.nan, np.nan, np.nan],
                "hardtanh": [np.nan, 1.0, -1.0]}
    want_bwd = {"gelu": [np.nan] * 3, "silu": [np.nan] * 3, "elu": [1.0, 1.0, 0.0],
                "softsign": [np.nan] * 3, "hardtanh": [0.0, 0.0, 0.0]}
    with np.errstate(all="ignore"):
        for kind in want_fwd:
            np.testing.assert_array_equal(ref.activation_forward(kind, z)[0], want_fwd[kind],
                                          err_msg=kind)
            np.testing.assert_array_equal(ref.activation_backward(kind, ones, z)[0],
                                          want_bwd[kind], err_msg=kind)
        np.testing.assert_array_equal(
            ref.activation_forward("gelu", z, approximate="tanh")[0], want_fwd["gelu"])
        # a NaN or inf gradient does not leak through Hardtanh where it is flat
        g = ref.activation_backward("hardtanh", np.array([[np.nan, np.inf, 3.0]]),
                                    np.array([[5.0, -5.0, 0.0]]))
        np.testing.assert_array_equal(g, [[0.0, 0.0, 3.0]])


def test_activation_argument_errors():
    z = np.zeros((1, 2))
    with pytest.raises(TypeError, match="takes no argument 'slope'"):
        ref.activation_forward("elu", z, {"slope": 0.2})
    with pytest.raises(TypeError, match="takes no argument 'alpha'"):
        ref.activation_forward("relu", z, alpha=0.2)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        ref.activation_forward("gelu", z, approximate="fast")
    with pytest.raises(ValueError, match="max_val must be greater than min_val"):
        ref.activation_backward("hardtanh", z, z, min_val=1.0, max_val=1.0)
    # a number is LeakyReLU's slope and means nothing to the others (old callers)
    np.testing.assert_array_equal(ref.activation_forward("elu", z, 0.3),
                                  ref.activation_forward("elu", z))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_softplus_stable_for_large_inputs(dtype):
    z = np.array([[-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            s = ref.activation_forward("sigmoid", z)
            ds = ref.activation_backward("sigmoid", np.ones_like(z), z)
            sp = ref.activation_forward("softplus", z)
            dsp = ref.activation_backward("softplus", np.ones_like(z), z)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(ds))
    assert np.all(np.isfinite(sp)) and np.all(np.isfinite(dsp))
    assert s[0, 0] == 0.0 and s[0, -1] == 1.0 and s[0, 3] == 0.5
    assert sp[0, -1] == dtype(1e4) and sp[0, 0] == 0.0


# ---------------------------------------------------------------------------
# softmax / log-softmax / linear
# ---------------------------------------------------------------------------

def test_softmax_forward_values(rng):
    z = rng.standard_normal((3, 6))
    y = ref.softmax_forward(z)
    e = np.exp(z)
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(ref.log_softmax_forward(z), np.log(e / e.sum(1, keepdims=True)),
                               rtol=1e-13, atol=1e-14)
    big = np.array([[1000.0, 1001.0, 999.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        yb = ref.softmax_forward(big)
        lb = ref.log_softmax_forward(big)
    np.testing.assert_allclose(yb, ref.softmax_forward(big - 1000), rtol=1e-14)
    np.testing.assert_allclose(lb, ref.log_softmax_forward(big - 1000), rtol=1e-14)


def test_softmax_backward_matches_finite_differences(rng):
    z = rng.standard_normal((3, 5))
    r = rng.standard_normal(z.shape)
    num = num_vjp(ref.softmax_forward, z, r)
    np.testing.assert_allclose(ref.softmax_backward(r, ref.softmax_forward(z)), num,
                               rtol=1e-6, atol=1e-9)


def test_log_softmax_backward_matches_finite_differences(rng):
    z = rng.standard_normal((3, 5))
    r = rng.standard_normal(z.shape)
    num = num_vjp(ref.log_softmax_forward, z, r)
    np.testing.assert_allclose(ref.log_softmax_backward(r, ref.log_softmax_forward(z)), num,
                               rtol=1e-6, atol=1e-9)


def test_linear_forward_backward(rng):
    x = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 2))
    b = rng.standard_normal(2)
    y = ref.linear_forward(x, W, b)
    loops = np.array([[sum(x[n, i] * W[i, o] for i in range(3)) + b[o] for o in range(2)]
                      for n in range(4)])
    np.testing.assert_allclose(y, loops, rtol=1e-13)
    np.testing.assert_allclose(ref.linear_forward(x, W, None), loops - b, rtol=1e-12, atol=1e-14)

    r = rng.standard_normal((4, 2))
    gx, dW, db = ref.linear_backward(r, x, W)
    np.testing.assert_allclose(gx, num_vjp(lambda t: ref.linear_forward(t, W, b), x, r), rtol=1e-6)
    np.testing.assert_allclose(dW, num_vjp(lambda t: ref.linear_forward(x, t, b), W, r), rtol=1e-6)
    np.testing.assert_allclose(db, num_vjp(lambda t: ref.linear_forward(x, W, t), b, r), rtol=1e-6)
    assert ref.linear_backward(r, x, W, has_bias=False)[2] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_dispatch(dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    gy = rng.standard_normal((3, 4)).astype(dtype)
    for kind in ACTS + ["softmax", "log_softmax"]:
        y = ref.layer_forward(kind, x, slope=0.3)
        gx, grads = ref.layer_backward(kind, gy, x, slope=0.3)
        assert y.dtype == dtype and gx.dtype == dtype and grads == {}
    W = rng.standard_normal((4, 2)).astype(dtype)
    p = {"W": W, "b": np.zeros(2, dtype)}
    y = ref.layer_forward("linear", x, p)
    gx, grads = ref.layer_backward("linear", rng.standard_normal((3, 2)).astype(dtype), x, p)
    assert y.shape == (3, 2) and y.dtype == dtype and gx.shape == (3, 4)
    assert set(grads) == {"W", "b"} and grads["W"].dtype == dtype
    _, grads = ref.layer_backward("linear", y, x, {"W": W, "b": None})
    assert set(grads) == {"W"}


def test_sequential_matches_finite_differences(rng):
    W1, b1 = rng.standard_normal((3, 5)), rng.standard_normal(5)
    W2, b2 = rng.standard_normal((5, 4)), rng.standard_normal(4)
    specs = [("linear", {"W": W1, "b": b1}, 0.01), ("tanh", None, 0.01),
             ("linear", {"W": W2, "b": b2}, 0.01), ("log_softmax", None, 0.01)]
    x = rng.standard_normal((2, 3))
    r = rng.standard_normal((2, 4))
    y, caches = ref.sequential_forward(specs, x)
    assert y.shape == (2, 4) and len(caches) == 4
    gx, grads = ref.sequential_backward(specs, caches, r)
    np.testing.assert_allclose(gx, num_vjp(lambda t: ref.sequential_forward(specs, t)[0], x, r),
                               rtol=1e-6, atol=1e-9)

    def with_W1(t):
        s = list(specs)
        s[0] = ("linear", {"W": t, "b": b1}, 0.01)
        return ref.sequential_forward(s, x)[0]
    np.testing.assert_allclose(grads[0]["W"], num_vjp(with_W1, W1, r), rtol=1e-6, atol=1e-9)
    assert grads[1] == {} and set(grads[2]) == {"W", "b"}


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

def _labels_and_dense(rng, N, C):
    labels = rng.integers(0, C, N)
    onehot = np.eye(C)[labels]
    soft = rng.random((N, C))
    soft /= soft.sum(1, keepdims=True)
    return labels, onehot, soft


def test_softmax_cross_entropy(rng):
    N, C = 5, 4
    z = rng.standard_normal((N, C))
    labels, onehot, soft = _labels_and_dense(rng, N, C)
    loss, grad = ref.softmax_cross_entropy(z, labels)
    # independent: mean of -log softmax at the label
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(N), labels])), rel=1e-12)
    np.testing.assert_allclose(grad, (p - onehot) / N, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, num_grad(lambda t: ref.softmax_cross_entropy(t, labels)[0], z),
                               rtol=1e-6, atol=1e-9)
    l2, g2 = ref.softmax_cross_entropy(z, onehot)
    assert l2 == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(g2, grad, rtol=1e-12, atol=1e-15)
    # dense rows that do not sum to 1 (scaled by 2): loss and grad double
    ls, gs = ref.softmax_cross_entropy(z, 2 * soft)
    np.testing.assert_allclose(gs, num_grad(lambda t: ref.softmax_cross_entropy(t, 2 * soft)[0], z),
                               rtol=1e-6, atol=1e-9)
    assert ls == pytest.approx(2 * ref.softmax_cross_entropy(z, soft)[0], rel=1e-12)
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(z, np.array([0, 1, 2, 3, 4]))


def test_binary_cross_entropy(rng):
    N, C = 4, 3
    z = rng.standard_normal((N, C)) * 3
    y = rng.random((N, C))
    loss, grad = ref.binary_cross_entropy(z, y)
    s = 1 / (1 + np.exp(-z))
    expect = -np.sum(y * np.log(s) + (1 - y) * np.log(1 - s)) / N
    assert loss == pytest.approx(expect, rel=1e-12)
    np.testing.assert_allclose(grad, num_grad(lambda t: ref.binary_cross_entropy(t, y)[0], z),
                               rtol=1e-6, atol=1e-9)
    z1, y1 = z[:, :1], (rng.random(N) > 0.5).astype(np.float64)
    l1, g1 = ref.binary_cross_entropy(z1, y1)
    l2, g2 = ref.binary_cross_entropy(z1, y1[:, None])
    assert l1 == l2 and g1.shape == (N, 1)
    np.testing.assert_array_equal(g1, g2)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        lb, gb = ref.binary_cross_entropy(np.array([[1000.0], [-1000.0]]), np.array([0.0, 1.0]))
    assert lb == pytest.approx(1000.0) and np.all(np.isfinite(gb))


def test_mse(rng):
    yhat = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 3))
    loss, grad = ref.mse(yhat, y)
    assert loss == pytest.approx(sum(0.5 * np.dot(yhat[n] - y[n], yhat[n] - y[n])
                                     for n in range(4)) / 4, rel=1e-12)
    np.testing.assert_allclose(grad, num_grad(lambda t: ref.mse(t, y)[0], yhat),
                               rtol=1e-6, atol=1e-9)


def test_nll(rng):
    N, C = 5, 4
    logp = ref.log_softmax_forward(rng.standard_normal((N, C)))
    labels, onehot, soft = _labels_and_dense(rng, N, C)
    loss, grad = ref.nll(logp, labels)
    assert loss == pytest.approx(-np.mean(logp[np.arange(N), labels]), rel=1e-12)
    np.testing.assert_allclose(grad, num_grad(lambda t: ref.nll(t, labels)[0], logp),
                               rtol=1e-6, atol=1e-9)
    l2, g2 = ref.nll(logp, onehot)
    assert l2 == pytest.approx(loss, rel=1e-12)
    np.testing.assert_array_equal(g2, grad)
    np.testing.assert_allclose(ref.nll(logp, soft)[1],
                               num_grad(lambda t: ref.nll(t, soft)[0], logp), rtol=1e-6, atol=1e-9)
    # -inf log-probs where the target is 0 do not poison the loss
    lp = np.array([[0.0, -np.inf]])
    assert ref.nll(lp, np.array([0]))[0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_dtypes(dtype, rng):
    z = rng.standard_normal((3, 4)).astype(dtype)
    labels = np.array([0, 3, 1])
    for fn, t in [(ref.softmax_cross_entropy, labels), (ref.nll, labels),
                  (ref.binary_cross_entropy, rng.random((3, 4)).astype(dtype)),
                  (ref.mse, rng.standard_normal((3, 4)).astype(dtype))]:
        loss, grad = fn(z, t)
        assert isinstance(loss, float) and grad.dtype == dtype


def test_accuracy():
    pred = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.0, 3.0]])
    assert ref.accuracy(pred, np.array([1, 0, 2, 0])) == 0.75
    assert ref.accuracy(pred, np.eye(3)[[1, 1, 2, 2]]) == 0.75
    logits = np.array([[0.5], [-0.2], [3.0], [-1.0]])
    assert ref.accuracy(logits, np.array([1.0, 0.0, 0.0, 0.0])) == 0.75
    assert ref.accuracy(logits, np.array([[0.9], [0.2], [0.7], [0.4]])) == 1.0


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_three_steps_hand_unrolled(dtype):
    p0 = np.array([1.0, -2.0, 0.5], dtype=dtype)
    g = [np.array([0.1, 0.2, -0.3], dtype=dtype),
         np.array([-0.4, 0.0, 0.25], dtype=dtype),
         np.array([0.05, -0.1, 0.6], dtype=dtype)]
    lr, mu, wd = 0.1, 0.9, 0.01
    tol = dict(rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7 if dtype == np.float32 else 0)

    # plain SGD
    p, v = p0.copy(), None
    for k in range(3):
        p, v = ref.sgd_step(p, g[k], v, lr)
    np.testing.assert_allclose(p, p0 - lr * (g[0] + g[1] + g[2]), **tol)
    assert p.dtype == dtype

    # momentum + weight decay, unrolled by hand
    a = p0.astype(np.float64)
    G = [x.astype(np.float64) for x in g]
    d0 = G[0] + wd * a
    v1 = d0
    a1 = a - lr * v1
    d1 = G[1] + wd * a1
    v2 = mu * v1 + d1
    a2 = a1 - lr * v2
    d2 = G[2] + wd * a2
    v3 = mu * v2 + d2
    a3 = a2 - lr * v3
    p, v = p0.copy(), np.zeros_like(p0)
    for k in range(3):
        p, v = ref.sgd_step(p, g[k], v, lr, momentum=mu, weight_decay=wd)
    np.testing.assert_allclose(p, a3, **tol)
    np.testing.assert_allclose(v, v3, **tol)

    # Nesterov + weight decay, unrolled by hand
    d0 = G[0] + wd * a
    v1 = d0
    a1 = a - lr * (d0 + mu * v1)
    d1 = G[1] + wd * a1
    v2 = mu * v1 + d1
    a2 = a1 - lr * (d1 + mu * v2)
    d2 = G[2] + wd * a2
    v3 = mu * v2 + d2
    a3 = a2 - lr * (d2 + mu * v3)
    p, v = p0.copy(), None
    for k in range(3):
        p, v = ref.sgd_step(p, g[k], v, lr, momentum=mu, nesterov=True, weight_decay=wd)
    np.testing.assert_allclose(p, a3, **tol)
    np.testing.assert_allclose(v, v3, **tol)


def test_sgd_does_not_modify_inputs():
    p = np.array([1.0, 2.0])
    g = np.array([0.5, -0.5])
    v = np.array([0.1, 0.1])
    copies = p.copy(), g.copy(), v.copy()
    newp, newv = ref.sgd_step(p, g, v, 0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    for a, b in zip((p, g, v), copies):
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(newp, p) and not np.shares_memory(newv, v)


# ---------------------------------------------------------------------------
# gradcheck on pure-NumPy fakes
# ---------------------------------------------------------------------------

class FakeMatmul:
    """y = x @ W, with a configurable (possibly wrong) backward."""

    def __init__(self, I, O, seed=0, wrong=None):
        self.params = {"W": np.random.default_rng(seed).standard_normal((I, O))}
        self.grads = {"W": np.zeros((I, O))}
        self.wrong = wrong
        self.trainable = True
        self.n_forward = 0
        self.fail_after = None

    def zero_grad(self):
        self.grads["W"][...] = 0

    def forward(self, x):
        self.n_forward += 1
        if self.fail_after is not None and self.n_forward > self.fail_after:
            raise RuntimeError("forward failed on purpose")
        self.x = np.array(x, dtype=np.float64)
        return self.x @ self.params["W"]

    def backward(self, gy):
        W = self.params["W"]
        dW = self.x.T @ gy
        if self.wrong == "dW":
            dW = dW * 1.01
        self.grads["W"] += dW
        gx = gy @ W.T
        if self.wrong == "gx":
            gx = gx.copy()
            gx[0, 0] += 1e-3
        return gx


class FakeModel:
    """Two FakeMatmul layers with tanh in between, Sequential-style API."""

    def __init__(self):
        self.l0, self.l1 = FakeMatmul(3, 4, seed=1), FakeMatmul(4, 2, seed=2)

    def __getitem__(self, i):
        return (self.l0, None, self.l1)[i]

    def parameters(self):
        return {"0.W": self.l0.params["W"], "2.W": self.l1.params["W"]}

    def gradients(self):
        return {"0.W": self.l0.grads["W"], "2.W": self.l1.grads["W"]}

    def zero_grad(self):
        self.l0.zero_grad()
        self.l1.zero_grad()

    def forward(self, x):
        self.h = np.tanh(self.l0.forward(x))
        return self.l1.forward(self.h)

    def backward(self, gy):
        gh = self.l1.backward(gy)
        return self.l0.backward(gh * (1 - self.h ** 2))


class FakeSoftmaxXent:
    def __init__(self, wrong=False):
        self.wrong = wrong

    def forward(self, z, target):
        self.loss, self.g = ref.softmax_cross_entropy(z, target)
        return self.loss

    def backward(self):
        return self.g * (1.1 if self.wrong else 1.0)


def test_gradcheck_passes_on_correct_layer(rng):
    f = FakeMatmul(3, 4)
    W0 = f.params["W"].copy()
    x = rng.standard_normal((5, 3))
    x0 = x.copy()
    res = gc.gradcheck(f, x)
    assert res.ok and isinstance(res, gc.GradcheckResult)
    assert set(res.errors) == {"x", "W"}
    assert res.max_rel_error < 1e-6
    np.testing.assert_array_equal(f.params["W"], W0)   # restored exactly
    np.testing.assert_array_equal(x, x0)               # caller's x untouched
    assert "GradcheckResult(ok=True" in repr(res)
    # the grads hold the analytic gradient of sum(r * y)
    r = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_allclose(f.grads["W"], x.T @ r, rtol=1e-12)


@pytest.mark.parametrize("wrong,name", [("dW", "W"), ("gx", "x")])
def test_gradcheck_detects_wrong_backward(wrong, name, rng):
    f = FakeMatmul(3, 4, wrong=wrong)
    W0 = f.params["W"].copy()
    x = rng.standard_normal((5, 3))
    with pytest.raises(gc.GradcheckError) as exc:
        gc.gradcheck(f, x)
    assert isinstance(exc.value, AssertionError)
    assert repr(name) in str(exc.value) and "rtol" in str(exc.value)
    assert exc.value.result.worst == name and not exc.value.result.ok
    np.testing.assert_array_equal(f.params["W"], W0)
    res = gc.gradcheck(f, x, raise_exception=False)
    assert not res.ok and res.worst == name and res.errors[name] > 1e-4


def test_gradcheck_random_directions_for_large_arrays(rng):
    x = rng.standard_normal((40, 30))
    good = gc.gradcheck(FakeMatmul(30, 20), x, max_elements=100, n_directions=4)
    assert good.ok
    f = FakeMatmul(30, 20, wrong="dW")
    W0 = f.params["W"].copy()
    bad = gc.gradcheck(f, x, max_elements=100, n_directions=4, raise_exception=False)
    assert not bad.ok and bad.worst == "W"
    np.testing.assert_array_equal(f.params["W"], W0)


def test_gradcheck_restores_params_when_forward_raises(rng):
    f = FakeMatmul(3, 4)
    W0 = f.params["W"].copy()
    f.fail_after = 20       # analytic pass + a few finite differences, then boom
    with pytest.raises(RuntimeError):
        gc.gradcheck(f, rng.standard_normal((2, 3)))
    np.testing.assert_array_equal(f.params["W"], W0)


def test_gradcheck_skips_frozen_layer(rng):
    f = FakeMatmul(3, 4)
    f.trainable = False
    res = gc.gradcheck(f, rng.standard_normal((2, 3)))
    assert res.ok and set(res.errors) == {"x"}


def test_gradcheck_model(rng):
    m = FakeModel()
    res = gc.gradcheck(m, rng.standard_normal((4, 3)))
    assert res.ok and set(res.errors) == {"x", "0.W", "2.W"}
    m.l0.wrong = "dW"
    with pytest.raises(gc.GradcheckError, match="0.W"):
        gc.gradcheck(m, rng.standard_normal((4, 3)))


def test_gradcheck_loss(rng):
    z = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    res = gc.gradcheck(FakeSoftmaxXent(), z, target=labels)
    assert res.ok and set(res.errors) == {"x"}
    with pytest.raises(gc.GradcheckError):
        gc.gradcheck(FakeSoftmaxXent(wrong=True), z, target=labels)
