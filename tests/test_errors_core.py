"""Bad input to layers and Sequential: each kind of mistake raises
ValueError or TypeError with a message naming the argument and what was
expected, and the object keeps working afterwards (a correct call gives the
same result as on a fresh object with the same parameters)."""

import numpy as np
import pytest

import nnlayers as nl
import nnlayers._reference as ref

N, D_IN, D_OUT = 7, 5, 3


# ---------------------------------------------------------------------------
# objects under test, and "still works" checks against fresh copies
# ---------------------------------------------------------------------------

def make_linear():
    lin = nl.Linear(D_IN, D_OUT, dtype=np.float64, seed=21)
    lin.params["b"] = np.linspace(-1, 1, D_OUT)
    return lin


def make_tanh():
    return nl.Tanh()


def make_model():
    model = nl.Sequential(nl.Linear(D_IN, 4, dtype=np.float64, seed=22), nl.Sigmoid(),
                          nl.Linear(4, D_OUT, dtype=np.float64, seed=23))
    model[0].params["b"] = [0.1, -0.2, 0.3, -0.4]
    return model


MAKERS = {"linear": make_linear, "tanh": make_tanh, "model": make_model}


def out_width(name):
    return D_IN if name == "tanh" else D_OUT


def grads_of(obj):
    g = obj.gradients() if hasattr(obj, "gradients") else obj.grads
    return {k: np.array(v, copy=True) for k, v in g.items()}


def run(obj, x, gy):
    obj.zero_grad()
    y = obj.forward(x)
    gx = obj.backward(gy)
    return y, gx, grads_of(obj)


def assert_same_as_fresh(name, obj, rng):
    """A full forward/backward on obj equals the same on a fresh object."""
    x = rng.standard_normal((N, D_IN))
    gy = rng.standard_normal((N, out_width(name)))
    got = run(obj, x, gy)
    want = run(MAKERS[name](), x, gy)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])
    assert got[2].keys() == want[2].keys()
    for k in want[2]:
        assert np.array_equal(got[2][k], want[2][k]), k


def good_input(rng):
    return rng.standard_normal((N, D_IN))


# ---------------------------------------------------------------------------
# widths
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("width", [4, 6, 1])
def test_linear_wrong_width(width, rng):
    lin = make_linear()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 5\).*in_features=5"):
        lin.forward(rng.standard_normal((N, width)))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 5\)"):
        lin(rng.standard_normal((N, width)))
    assert_same_as_fresh("linear", lin, rng)


@pytest.mark.parametrize("width", [4, 6])
def test_model_wrong_width_names_the_layer(width, rng):
    model = make_model()
    msg = rf"x has {width} columns.*layer 0 \(Linear\(in_features=5.*input width of 5"
    with pytest.raises(ValueError, match=msg):
        model.forward(rng.standard_normal((N, width)))
    assert_same_as_fresh("model", model, rng)


def test_model_inner_width_mismatch_names_the_layer(rng):
    # refused when the model is built, naming both layers and both widths
    first = nl.Linear(5, 4, dtype=np.float64, seed=1)
    msg = r"layer 2 \(Linear\(in_features=3.*width of 3, but layer 1 outputs 4"
    with pytest.raises(ValueError, match=msg):
        nl.Sequential(first, nl.ReLU(), nl.Linear(3, 2, dtype=np.float64, seed=2))
    # the layers were not taken: they can still form a correct model
    model = nl.Sequential(first, nl.ReLU(), nl.Linear(4, 2, dtype=np.float64, seed=2))
    assert model.forward(rng.standard_normal((N, 5))).shape == (N, 2)


@pytest.mark.parametrize("name,how", [("linear", "forward"), ("model", "forward"),
                                      ("model", "train_step")])
def test_failed_forward_does_not_corrupt_pending_backward(name, how, rng):
    # forward(x) ok; forward(bad width) raises; then backward(gy). The
    # failed call must leave no trace: backward either refuses with
    # ValueError or returns the VJP at x (as if the failed call never
    # happened). It must never mix the bad call's shape into the result.
    obj, fresh = MAKERS[name](), MAKERS[name]()
    x = good_input(rng)
    gy = rng.standard_normal((N, D_OUT))
    obj.zero_grad()
    obj.forward(x)
    bad_x = rng.standard_normal((N, D_IN + 2))
    with pytest.raises(ValueError, match="columns"):
        if how == "forward":
            obj.forward(bad_x)
        else:
            obj.train_step(bad_x, np.zeros(N, dtype=np.int64), nl.SoftmaxCrossEntropy(),
                           nl.SGD(obj, lr=0.1))
    try:
        gx = obj.backward(gy)
    except ValueError:
        gx = None
    y_want, gx_want, grads_want = run(fresh, x, gy)
    if gx is not None:
        assert gx.shape == (N, D_IN), f"backward returned shape {gx.shape}"
        assert np.array_equal(gx, gx_want)
        for k, v in grads_of(obj).items():
            assert np.array_equal(v, grads_want[k]), k
    else:
        for k, v in grads_of(obj).items():
            assert np.all(v == 0), k
    assert_same_as_fresh(name, obj, rng)


# ---------------------------------------------------------------------------
# ndim
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(D_IN,), (2, N, D_IN), ()])
@pytest.mark.parametrize("name", list(MAKERS))
def test_wrong_ndim(name, shape, rng):
    obj = MAKERS[name]()
    nd = len(shape)
    with pytest.raises(ValueError, match=rf"x must be a 2-D array.*got a {nd}-D array"):
        obj.forward(rng.standard_normal(shape))
    assert_same_as_fresh(name, obj, rng)


@pytest.mark.parametrize("name", list(MAKERS))
def test_wrong_ndim_gradient(name, rng):
    obj = MAKERS[name]()
    x = good_input(rng)
    gy = rng.standard_normal((N, out_width(name)))
    obj.zero_grad()
    obj.forward(x)
    with pytest.raises(ValueError, match=r"grad_output must be a 2-D array.*1-D"):
        obj.backward(gy.ravel())
    with pytest.raises(ValueError, match=r"grad_output must be a 2-D array.*3-D"):
        obj.backward(gy[None])
    # the failed calls consumed nothing: the pending backward still works
    gx = obj.backward(gy)
    _, gx_want, grads_want = run(MAKERS[name](), x, gy)
    assert np.array_equal(gx, gx_want)
    for k, v in grads_of(obj).items():
        assert np.array_equal(v, grads_want[k])
    assert_same_as_fresh(name, obj, rng)


# ---------------------------------------------------------------------------
# state: backward before forward, backward twice
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MAKERS))
def test_backward_before_forward(name, rng):
    obj = MAKERS[name]()
    with pytest.raises(ValueError, match=r"backward\(\) needs a forward\(\) first"):
        obj.backward(rng.standard_normal((N, out_width(name))))
    assert all(np.all(v == 0) for v in grads_of(obj).values())
    assert_same_as_fresh(name, obj, rng)


@pytest.mark.parametrize("name", list(MAKERS))
def test_backward_twice(name, rng):
    obj = MAKERS[name]()
    x = good_input(rng)
    gy = rng.standard_normal((N, out_width(name)))
    _, _, once = run(obj, x, gy)
    with pytest.raises(ValueError, match=r"forward\(\)"):
        obj.backward(gy)
    # the refused second backward did not add into the gradients
    for k, v in grads_of(obj).items():
        assert np.array_equal(v, once[k]), k
    assert_same_as_fresh(name, obj, rng)


@pytest.mark.parametrize("bad", [(N, D_OUT + 1), (N + 1, D_OUT), (1, D_OUT), (N, 1)])
@pytest.mark.parametrize("name", ["linear", "model"])
def test_gradient_of_wrong_shape(name, bad, rng):
    obj = MAKERS[name]()
    x = good_input(rng)
    gy = rng.standard_normal((N, D_OUT))
    obj.zero_grad()
    obj.forward(x)
    with pytest.raises(ValueError, match=rf"grad_output must have the shape.*\({N}, {D_OUT}\)"):
        obj.backward(rng.standard_normal(bad))
    assert all(np.all(v == 0) for v in grads_of(obj).values())
    # the failed call consumed nothing: the correct backward still works
    gx = obj.backward(gy)
    _, gx_want, grads_want = run(MAKERS[name](), x, gy)
    assert np.array_equal(gx, gx_want)
    for k, v in grads_of(obj).items():
        assert np.array_equal(v, grads_want[k])
    assert_same_as_fresh(name, obj, rng)


def test_activation_gradient_of_wrong_shape(rng):
    act = make_tanh()
    act.forward(good_input(rng))
    with pytest.raises(ValueError, match=rf"grad_output must have the shape.*\({N}, {D_IN}\)"):
        act.backward(rng.standard_normal((N, D_IN + 1)))
    assert_same_as_fresh("tanh", act, rng)


# ---------------------------------------------------------------------------
# dtypes and kinds
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["32-64", "64-32", "act"])
def test_mixed_dtypes_in_sequential(order, rng):
    if order == "32-64":
        layers = [nl.Linear(3, 4, dtype=np.float32, seed=1), nl.ReLU(),
                  nl.Linear(4, 2, dtype=np.float64, seed=2)]
    elif order == "64-32":
        layers = [nl.Linear(3, 4, dtype=np.float64, seed=1),
                  nl.Linear(4, 2, dtype=np.float32, seed=2)]
    else:
        layers = [nl.Linear(3, 4, dtype=np.float64, seed=1), nl.Tanh(dtype=np.float32)]
    with pytest.raises(TypeError, match=r"dtype.*float(32|64).*float(32|64)"):
        nl.Sequential(*layers)
    # nothing was claimed: every layer still works and can join a model
    for layer in layers:
        if layer.kind == "linear":
            x = rng.standard_normal((2, layer.in_features))
            W = layer.params["W"].copy()
            m = nl.Sequential(layer)
            assert m.dtype == layer.dtype
            np.testing.assert_allclose(m.forward(x), x @ W.astype(np.float64),
                                       rtol=1e-5, atol=1e-6)
        else:
            x = rng.standard_normal((2, 4)).astype(np.float32)
            np.testing.assert_allclose(nl.Sequential(layer).forward(x),
                                       ref.activation_forward(layer.kind, x), rtol=1e-6)


BAD_INPUTS = {
    "object": lambda: np.array([[object()] * D_IN] * N, dtype=object),
    "complex": lambda: np.ones((N, D_IN), dtype=complex),
    "complex_list": lambda: [[1j] * D_IN] * N,
    "string": lambda: np.array([["a"] * D_IN] * N),
    "str": lambda: "abcde",
    "None": lambda: None,
    "ragged": lambda: [[1.0, 2.0], [3.0]],
    "dict": lambda: {"x": 1},
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
@pytest.mark.parametrize("name", list(MAKERS))
def test_non_real_inputs_raise_type_error(name, kind, rng):
    obj = MAKERS[name]()
    with pytest.raises(TypeError, match=r"\bx\b.*real"):
        obj.forward(BAD_INPUTS[kind]())
    assert_same_as_fresh(name, obj, rng)


@pytest.mark.parametrize("kind", ["object", "complex", "string", "None"])
@pytest.mark.parametrize("name", list(MAKERS))
def test_non_real_gradient_raises_type_error(name, kind, rng):
    obj = MAKERS[name]()
    x = good_input(rng)
    gy = rng.standard_normal((N, out_width(name)))
    bad = BAD_INPUTS[kind]()
    if isinstance(bad, np.ndarray):
        bad = np.resize(bad, (N, out_width(name)))
    obj.zero_grad()
    obj.forward(x)
    with pytest.raises(TypeError, match=r"grad_output.*real"):
        obj.backward(bad)
    gx = obj.backward(gy)
    _, gx_want, _ = run(MAKERS[name](), x, gy)
    assert np.array_equal(gx, gx_want)


# ---------------------------------------------------------------------------
# constructor arguments
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,which", [((0, 3), "in_features"), ((3, 0), "out_features"),
                                         ((-1, 3), "in_features"), ((3, -5), "out_features")])
def test_linear_non_positive_sizes(sizes, which):
    with pytest.raises(ValueError, match=rf"{which}.*positive"):
        nl.Linear(*sizes)


@pytest.mark.parametrize("sizes,which", [((2.5, 3), "in_features"), ((3.0, 3), "in_features"),
                                         ((3, "4"), "out_features"), ((None, 3), "in_features"),
                                         ((3, [4]), "out_features")])
def test_linear_non_int_sizes(sizes, which):
    with pytest.raises(TypeError, match=rf"{which}.*int"):
        nl.Linear(*sizes)


def test_linear_accepts_numpy_int_sizes(rng):
    lin = nl.Linear(np.int64(5), np.int32(3), dtype=np.float64, seed=21)
    assert (lin.in_features, lin.out_features) == (5, 3)
    assert type(lin.in_features) is int
    twin = make_linear()
    lin.params["b"] = twin.params["b"]
    x = good_input(rng)
    assert np.array_equal(lin.forward(x), twin.forward(x))


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "complex128", object])
def test_linear_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        nl.Linear(3, 2, dtype=dtype)
