"""Sequential: whole-model gradients, equality with chaining the layers
(standalone and the NumPy reference), the parameter block and its views,
the container interface, layer ownership, and the lecture notes' XOR net."""

import copy
import gc
import pickle

import numpy as np
import pytest

import nnlayers as nl
from _compare import assert_close, tol  # noqa: F401
import nnlayers._reference as ref

DTYPES = [np.float32, np.float64]


# Architectures: lists of layer constructors taking (dtype, seed). Widths
# chosen so every Linear differs in shape from its neighbours.
ARCHS = {
    "tanh_sigmoid_softplus": lambda dt: [
        nl.Linear(4, 6, dtype=dt, seed=1), nl.Tanh(),
        nl.Linear(6, 5, dtype=dt, seed=2), nl.Sigmoid(),
        nl.Linear(5, 3, dtype=dt, seed=3), nl.Softplus()],
    "relu_logsoftmax": lambda dt: [
        nl.Linear(4, 7, dtype=dt, seed=4), nl.ReLU(),
        nl.Linear(7, 3, dtype=dt, seed=5), nl.LogSoftmax()],
    "cos_softmax": lambda dt: [
        nl.Linear(4, 6, dtype=dt, seed=6), nl.Cos(),
        nl.Linear(6, 3, dtype=dt, seed=7), nl.Softmax()],
    # activation first, two Linears in a row, no bias, Identity, leaky
    "mixed": lambda dt: [
        nl.Tanh(), nl.Linear(4, 5, dtype=dt, seed=8), nl.Linear(5, 6, bias=False, dtype=dt, seed=9),
        nl.LeakyReLU(0.2), nl.Linear(6, 4, dtype=dt, seed=10), nl.Identity(),
        nl.Linear(4, 2, dtype=dt, seed=11)],
    # a LeakyReLU with a negative slope cannot run in place over its Linear's
    # output (the sign of the output no longer tells the sign of the input)
    "negative_leaky": lambda dt: [
        nl.Linear(4, 6, dtype=dt, seed=16), nl.LeakyReLU(-0.3),
        nl.Linear(6, 5, dtype=dt, seed=17), nl.ReLU(),
        nl.Linear(5, 3, dtype=dt, seed=18), nl.LeakyReLU(0.0)],
    "step_and_default_leaky": lambda dt: [
        nl.Linear(4, 5, dtype=dt, seed=12), nl.LeakyReLU(),
        nl.Linear(5, 5, dtype=dt, seed=13), nl.Step(),
        nl.Linear(5, 3, dtype=dt, seed=14), nl.Softmax(), nl.Linear(3, 2, dtype=dt, seed=15)],
    # torch's activations: ELU (alpha >= 0), Softsign and Hardtanh run in
    # place over their Linear's output; ELU with alpha < 0 cannot
    "torch_activations": lambda dt: [
        nl.Linear(4, 6, dtype=dt, seed=19), nl.GELU(),
        nl.Linear(6, 6, dtype=dt, seed=20), nl.ELU(0.5),
        nl.Linear(6, 5, dtype=dt, seed=21), nl.Hardtanh(-1.5, 2.0),
        nl.Linear(5, 5, dtype=dt, seed=22), nl.SiLU(),
        nl.Linear(5, 4, dtype=dt, seed=23), nl.Softsign(),
        nl.Linear(4, 4, dtype=dt, seed=24), nl.ELU(-0.3), nl.GELU(approximate="tanh"),
        nl.Linear(4, 3, dtype=dt, seed=25)],
}
GRADCHECK_ARCHS = ["tanh_sigmoid_softplus", "relu_logsoftmax", "cos_softmax", "mixed",
                   "negative_leaky", "torch_activations"]


def build(arch, dtype, rng):
    layers = ARCHS[arch](dtype)
    for layer in layers:
        if "b" in layer.params:
            layer.params["b"] = 0.5 * rng.standard_normal(layer.params["b"].shape)
    return nl.Sequential(*layers)


def specs_of(model):
    """(kind, params, arguments) per layer for nnlayers._reference."""
    out = []
    for layer in model:
        P = {k: np.array(v, copy=True) for k, v in layer.params.items()} or None
        out.append((layer.kind, P, layer._args))
    return out


def kinks(layer):
    """Where the layer's derivative jumps."""
    if layer.kind in ("relu", "leaky_relu", "step", "elu"):
        return [0.0]
    if layer.kind == "hardtanh":
        return [layer.min_val, layer.max_val]
    return []


def preactivations_away_from_kinks(model, x, margin=1e-3):
    """Every input of a ReLU/LeakyReLU/Step/ELU is at least `margin` from
    0, of a Hardtanh from its ends."""
    _, caches = ref.sequential_forward(specs_of(model), x)
    for layer, h in zip(model, caches):
        for k in kinks(layer):
            if np.min(np.abs(h - k)) <= margin:
                return False
    return True


# ---------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", GRADCHECK_ARCHS)
def test_gradcheck_models(arch, rng):
    model = build(arch, np.float64, rng)
    x = rng.standard_normal((5, 4))
    assert preactivations_away_from_kinks(model, x)
    res = nl.gradcheck(model, x)
    assert res.ok
    assert res.max_rel_error <= 1e-6
    names = set(model.parameters())
    assert names and set(res.errors) == {"x"} | names


# ---------------------------------------------------------------------------
# the model equals chaining its layers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_model_equals_chained_layers_and_reference(arch, dtype, rng):
    model = build(arch, dtype, rng)
    assert model.dtype == np.dtype(dtype)
    x = rng.standard_normal((9, 4)).astype(dtype)
    specs = specs_of(model)

    model.zero_grad()
    y = model.forward(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    grads = {k: v.copy() for k, v in model.gradients().items()}

    # the NumPy reference
    y_ref, caches = ref.sequential_forward(specs, x)
    gx_ref, grads_ref = ref.sequential_backward(specs, caches, gy)
    assert_close(y, y_ref, dtype)
    assert_close(gx, gx_ref, dtype)
    for i, g in enumerate(grads_ref):
        for k, v in g.items():
            assert_close(grads[f"{i}.{k}"], v, dtype)

    # the same layers run one by one (standalone calls on layers in a model)
    model.zero_grad()
    h = x
    for layer in model:
        h = layer.forward(h)
    assert_close(h, y, dtype)
    g = gy
    for layer in reversed(model.layers):
        g = layer.backward(g)
    assert_close(g, gx, dtype)
    for k, v in model.gradients().items():
        assert_close(v, grads[k], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_backward_accumulates(dtype, rng):
    model = build("tanh_sigmoid_softplus", dtype, rng)
    specs = specs_of(model)
    model.zero_grad()
    total = {}
    for _ in range(2):
        x = rng.standard_normal((6, 4)).astype(dtype)
        gy = rng.standard_normal((6, 3)).astype(dtype)
        model.forward(x)
        model.backward(gy)
        _, caches = ref.sequential_forward(specs, x)
        _, grads_ref = ref.sequential_backward(specs, caches, gy)
        for i, gd in enumerate(grads_ref):
            for k, v in gd.items():
                total[f"{i}.{k}"] = total.get(f"{i}.{k}", 0) + v.astype(np.float64)
    for k, v in model.gradients().items():
        assert_close(v, total[k].astype(dtype), dtype)
    model.zero_grad()
    assert all(np.all(v == 0) for v in model.gradients().values())
    assert np.all(model._grad_block() == 0)


# ---------------------------------------------------------------------------
# parameters / gradients and the block
# ---------------------------------------------------------------------------

def test_parameter_names_and_views(rng):
    model = nl.Sequential(nl.Linear(4, 3, dtype=np.float64, seed=1), nl.ReLU(),
                          nl.Linear(3, 5, bias=False, dtype=np.float64, seed=2), nl.Tanh(),
                          nl.Linear(5, 2, dtype=np.float64, seed=3))
    params, grads = model.parameters(), model.gradients()
    assert list(params) == ["0.W", "0.b", "2.W", "4.W", "4.b"]
    assert list(grads) == list(params)
    shapes = {"0.W": (4, 3), "0.b": (3,), "2.W": (3, 5), "4.W": (5, 2), "4.b": (2,)}
    assert {k: v.shape for k, v in params.items()} == shapes
    pblock, gblock = model._param_block(), model._grad_block()
    assert pblock.ndim == 1 and pblock.size == sum(v.size for v in params.values())
    assert gblock.size == pblock.size
    for k in params:
        assert np.shares_memory(params[k], pblock)
        assert np.shares_memory(grads[k], gblock)
        assert not np.shares_memory(params[k], gblock)
        i, name = k.split(".")
        assert np.shares_memory(params[k], model[int(i)].params[name])
    keys = list(params)
    for a in range(len(keys)):                       # no two views overlap
        for b in range(a + 1, len(keys)):
            assert not np.shares_memory(params[keys[a]], params[keys[b]])
    # writes through the dict views are seen by the block and by forward
    params["4.b"][...] = [10.0, -10.0]
    assert np.isin([10.0, -10.0], pblock).all()
    x = rng.standard_normal((3, 4))
    P = specs_of(model)
    assert_close(model.forward(x), ref.sequential_forward(P, x)[0], np.float64)
    # and writes through the block are seen by the views
    pblock[...] = 0.25
    assert all(np.all(v == 0.25) for v in model.parameters().values())


def test_container_interface():
    layers = [nl.Linear(4, 3, seed=1), nl.ReLU(), nl.Linear(3, 2, seed=2), nl.Softmax()]
    model = nl.Sequential(*layers)
    assert len(model) == 4
    assert isinstance(model.layers, tuple)
    assert all(a is b for a, b in zip(model.layers, layers)) and len(model.layers) == 4
    assert model[0] is layers[0] and model[2] is layers[2]
    assert model[-1] is layers[-1] and model[-4] is layers[0]
    assert [m for m in model] == layers and all(a is b for a, b in zip(iter(model), layers))
    with pytest.raises(IndexError):
        model[4]
    r = repr(model)
    assert r.startswith("Sequential(")
    for layer in layers:
        assert repr(layer) in r
    assert "in_features=4" in r and "out_features=2" in r
    assert model.dtype == np.float32
    # a list of layers works too
    model2 = nl.Sequential([nl.Linear(2, 2, seed=0), nl.Tanh()])
    assert len(model2) == 2


# ---------------------------------------------------------------------------
# ownership
# ---------------------------------------------------------------------------

def test_layer_in_two_models_is_shared(rng):
    """A layer may be in several models: they share its parameters, which
    live in the block of the model built last (views taken before keep
    the old memory, so take new ones)."""
    lin = nl.Linear(4, 3, dtype=np.float64, seed=1)
    act = nl.ReLU()
    model = nl.Sequential(lin, act)
    lin.params["b"] = rng.standard_normal(3)
    W, b = lin.params["W"].copy(), lin.params["b"].copy()
    other = nl.Sequential(nl.Linear(3, 4, dtype=np.float64, seed=2), nl.Tanh(), lin, act)
    assert np.array_equal(lin.params["W"], W) and np.array_equal(lin.params["b"], b)
    assert np.shares_memory(lin.params["W"], other._param_block())
    assert np.array_equal(other.parameters()["2.W"], W)
    # one set of parameters: a change through one model is seen by the other
    other.parameters()["2.W"][...] = 0.25
    assert np.all(model.parameters()["0.W"] == 0.25)
    x = rng.standard_normal((3, 4))
    assert_close(model.forward(x), ref.sequential_forward(specs_of(model), x)[0], np.float64)
    x2 = rng.standard_normal((3, 3))
    assert_close(other.forward(x2), ref.sequential_forward(specs_of(other), x2)[0], np.float64)
    # the first model's block view brings the layer back into its own block
    block = model._param_block()
    assert np.shares_memory(lin.params["W"], block)
    assert np.all(lin.params["W"] == 0.25)
    del model
    gc.collect()
    assert_close(other.forward(x2), ref.sequential_forward(specs_of(other), x2)[0], np.float64)


def test_same_layer_twice_in_a_chain_is_tied(rng):
    """Sequential(lin, act, lin) applies one layer twice (tied weights):
    its gradient is the sum over both uses, checked by finite differences."""
    lin = nl.Linear(3, 3, dtype=np.float64, seed=1)
    act = nl.Tanh()
    model = nl.Sequential(lin, act, lin)
    assert model[0] is model[2] and len(model) == 3
    assert set(model.parameters()) == {"0.W", "0.b"}
    x = rng.standard_normal((4, 3))
    W, b = lin.params["W"], lin.params["b"]
    want = np.tanh(x @ W + b) @ W + b
    assert_close(model.forward(x), want, np.float64)
    nl.gradcheck(model, x)


def test_layer_free_after_model_collected_in_a_cycle(rng):
    lin = nl.Linear(3, 2, dtype=np.float64, seed=1)
    W = lin.params["W"].copy()
    model = nl.Sequential(lin)
    holder = [model]
    holder.append(holder)          # a reference cycle keeps the model alive
    model.cycle = holder
    del model, holder
    gc.collect()
    model2 = nl.Sequential(lin, nl.Sigmoid())
    assert np.array_equal(model2[0].params["W"], W)


# ---------------------------------------------------------------------------
# the lecture notes' XOR network
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_xor_network(dtype):
    model = nl.Sequential(nl.Linear(2, 2, dtype=dtype, seed=0), nl.ReLU(),
                          nl.Linear(2, 1, dtype=dtype, seed=0))
    model[0].params["W"] = [[1, 1], [1, 1]]
    model[0].params["b"] = [0, -1]
    model[2].params["W"] = [[1], [-2]]
    model[2].params["b"] = [0]
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = model.forward(X)
    assert y.dtype == np.dtype(dtype) and y.shape == (4, 1)
    assert np.array_equal(y, np.array([[0], [1], [1], [0]], dtype=dtype))
    assert np.array_equal(model(X), y)
    assert np.array_equal(model.predict(X), y)


# ---------------------------------------------------------------------------
# layers keep working standalone, sharing the model's memory
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_standalone_inside_model(dtype, rng):
    first = nl.Linear(4, 3, dtype=dtype, seed=1)
    act = nl.Tanh()
    last = nl.Linear(3, 2, dtype=dtype, seed=2)
    model = nl.Sequential(first, act, last)
    block = model._param_block()
    for k in first.params:
        assert np.shares_memory(first.params[k], block)
        assert np.shares_memory(last.params[k], block)
        assert np.shares_memory(first.grads[k], model._grad_block())
    assert act.dtype is None
    x = rng.standard_normal((5, 4)).astype(dtype)

    # standalone forward/backward of a member layer
    y1 = first.forward(x)
    assert_close(y1, ref.linear_forward(x, first.params["W"], first.params["b"]), dtype)
    # an activation in a model computes in the model's dtype
    assert act.forward(y1.astype(np.float64)).dtype == np.dtype(dtype)
    act.backward(np.ones((5, 3)))

    # writes through the layer are seen by the model ...
    first.params["W"][...] = 0.5
    first.params["b"] = np.arange(3)
    assert np.all(model.parameters()["0.W"] == 0.5)
    assert np.array_equal(model.parameters()["0.b"], np.arange(3, dtype=dtype))
    assert_close(model.forward(x), ref.sequential_forward(specs_of(model), x)[0], dtype)
    model.backward(np.ones((5, 2), dtype))
    # ... and writes through the model are seen by the layer
    model.parameters()["2.W"][...] = -1.0
    block[-1] = 3.0                                  # last entry: 2.b[1]
    assert np.all(last.params["W"] == -1.0) and last.params["b"][1] == 3.0
    y2 = last.forward(np.ones((1, 3), dtype))
    assert np.array_equal(y2, np.array([[-3.0 + last.params["b"][0], 0.0]], dtype=dtype))
    # gradients written by the model are seen through the layer
    model.zero_grad()
    model.forward(x)
    model.backward(np.ones((5, 2), dtype))
    assert np.array_equal(first.grads["W"], model.gradients()["0.W"])
    assert np.any(first.grads["W"] != 0)


# ---------------------------------------------------------------------------
# frozen layers and copies of a whole model
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_frozen_layer_in_model(dtype, rng):
    model = build("tanh_sigmoid_softplus", dtype, rng)
    model[2].trainable = False
    model.zero_grad()
    model[2].grads["W"][...] = 5
    x = rng.standard_normal((6, 4)).astype(dtype)
    gy = rng.standard_normal((6, 3)).astype(dtype)
    specs = specs_of(model)
    model.forward(x)
    gx = model.backward(gy)
    _, caches = ref.sequential_forward(specs, x)
    gx_ref, grads_ref = ref.sequential_backward(specs, caches, gy)
    assert_close(gx, gx_ref, dtype)                 # the gradient still flows through
    assert np.all(model[2].grads["W"] == 5) and np.all(model[2].grads["b"] == 0)
    for i in (0, 4):
        for k, v in grads_ref[i].items():
            assert_close(model[i].grads[k], v, dtype)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_model_copy_is_independent(how, rng):
    model = build("mixed", np.float64, rng)
    model[4].trainable = False
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert len(clone) == len(model)
    assert [type(a) for a in clone] == [type(b) for b in model]
    assert clone[4].trainable is False and clone[1].trainable is True
    assert list(clone.parameters()) == list(model.parameters())
    for k, v in model.parameters().items():
        assert np.array_equal(clone.parameters()[k], v)
    assert not np.shares_memory(clone._param_block(), model._param_block())
    x = rng.standard_normal((3, 4))
    assert np.array_equal(clone.forward(x), model.forward(x))
    clone._param_block()[...] = 0
    assert np.any(model._param_block() != 0)
