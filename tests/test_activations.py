"""GELU, SiLU, ELU, Softsign and Hardtanh: torch's semantics.

Against torch's modules (an optional peer) in float64 for forward and
backward, NaN and inf included; inside models, where the engine runs ELU
(alpha >= 0), Softsign and Hardtanh in place over their Linear's output,
against the NumPy reference both in place and not; and through save/load
and pickle. The parametrised suites (test_layers, test_inputs, test_fuzz,
test_reference) cover gradcheck, the twins in float32 and float64, every
input form and the bad arguments' neighbours; docs/errors.md lists the
bad arguments (test_errors_catalogue.py).
"""
import pickle

import numpy as np
import pytest

import nnlayers as nl
import nnlayers._reference as ref
from _compare import assert_close
from nnlayers import _core

DTYPES = [np.float32, np.float64]
NAN, INF = np.nan, np.inf

# name -> (nnlayers layer, torch module, both from the same arguments)
CASES = {
    "gelu": (lambda: nl.GELU(), lambda t: t.nn.GELU()),
    "gelu_tanh": (lambda: nl.GELU(approximate="tanh"), lambda t: t.nn.GELU(approximate="tanh")),
    "silu": (lambda: nl.SiLU(), lambda t: t.nn.SiLU()),
    "elu": (lambda: nl.ELU(), lambda t: t.nn.ELU()),
    "elu_0.3": (lambda: nl.ELU(alpha=0.3), lambda t: t.nn.ELU(alpha=0.3)),
    "elu_2": (lambda: nl.ELU(alpha=2.0), lambda t: t.nn.ELU(alpha=2.0)),
    "elu_-0.5": (lambda: nl.ELU(alpha=-0.5), lambda t: t.nn.ELU(alpha=-0.5)),
    "softsign": (lambda: nl.Softsign(), lambda t: t.nn.Softsign()),
    "hardtanh": (lambda: nl.Hardtanh(), lambda t: t.nn.Hardtanh()),
    "hardtanh_0_6": (lambda: nl.Hardtanh(0.0, 6.0), lambda t: t.nn.Hardtanh(0.0, 6.0)),
    "hardtanh_-2_-0.5": (lambda: nl.Hardtanh(-2.0, -0.5), lambda t: t.nn.Hardtanh(-2.0, -0.5)),
}


def torch_pass(torch, module, x, gy):
    """torch's forward and input gradient (float64)."""
    t = torch.tensor(x, requires_grad=True)
    y = module(t)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), t.grad.numpy()


def edges(layer):
    """Values where the derivative changes: the clamp's ends, 0."""
    if layer.kind == "hardtanh":
        return [layer.min_val, layer.max_val]
    return [0.0, -0.0]


# ---------------------------------------------------------------------------
# torch, float64
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_float64(name, rng):
    torch = pytest.importorskip("torch")
    layer, module = CASES[name][0](), CASES[name][1](torch)
    x = 3 * rng.standard_normal((40, 7))
    x[0, :2] = edges(layer)                          # the kinks themselves
    x[1] = [-40.0, -12.0, -6.0, 6.0, 12.0, 40.0, 1e-8]   # tails
    gy = rng.standard_normal(x.shape)
    y_t, gx_t = torch_pass(torch, module, x, gy)
    y = layer.forward(x)
    gx = layer.backward(gy)
    np.testing.assert_allclose(y, y_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-12, atol=1e-12)


def assert_ieee_close(got, want):
    """The same NaN positions and infinities; finite values to 1e-12."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions")
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_nan_and_inf_like_torch(name):
    """NaN propagates through forward; ±inf gives what torch gives. In
    backward a NaN input gives NaN (GELU, SiLU, Softsign) or passes dy
    (ELU: its test z <= 0 is false for NaN), as torch; a NaN or inf dy
    propagates wherever the derivative is not a select's 0."""
    torch = pytest.importorskip("torch")
    layer, module = CASES[name][0](), CASES[name][1](torch)
    x = np.array([[NAN, INF, -INF, 0.5, -0.5, 3.0, -3.0]])
    gy = np.array([[1.0, 1.0, 1.0, NAN, INF, -INF, 2.0]])
    with np.errstate(all="ignore"):
        y_t, gx_t = torch_pass(torch, module, x, gy)
        y = layer.forward(x)
        gx = layer.backward(gy)
    assert np.isnan(y[0, 0])
    assert_ieee_close(y, y_t)
    if layer.kind == "hardtanh":
        # torch's vectorised hardtanh_backward gives 0 at a NaN input, its
        # scalar loop (short tensors like this one) passes dy: nnlayers is
        # always the select, lo < z < hi, false for NaN
        assert gx[0, 0] == 0.0
        assert_ieee_close(gx[:, 1:], gx_t[:, 1:])
    elif layer.kind == "softsign":
        # torch's Softsign is x / (1 + |x|) through autograd: an infinite dy
        # meets inf - inf there (NaN); nnlayers gives dy f'(x) = ±inf
        assert list(gx[0, 4:6]) == [INF, -INF] and np.all(np.isnan(gx_t[0, 4:6]))
        assert_ieee_close(gx[:, :4], gx_t[:, :4])
        assert_ieee_close(gx[:, 6:], gx_t[:, 6:])
    else:
        assert_ieee_close(gx, gx_t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hardtanh_edges_and_nan(dtype):
    """Derivative 1 strictly inside, 0 at min_val and max_val and outside,
    0 at NaN; the forward keeps NaN."""
    layer = nl.Hardtanh(-0.5, 2.0, dtype=dtype)
    x = np.array([[-0.75, -0.5, -0.4999, 0.0, 1.9999, 2.0, 2.5, NAN]], dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, np.array([[-0.5, -0.5, -0.4999, 0, 1.9999, 2, 2, NAN]],
                                              dtype))
    gx = layer.backward(np.full_like(x, 3.0))
    np.testing.assert_array_equal(gx, np.array([[0, 0, 3, 3, 3, 0, 0, 0]], dtype))


def test_gelu_tail_does_not_cancel():
    """GELU's lower tail through erfc (torch's 1 + erf(.) rounds to 0)."""
    x = np.array([[-10.0, -20.0, -30.0]])
    y = nl.GELU().forward(x)
    want = ref.activation_forward("gelu", x)
    assert np.all(y < 0) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, want, rtol=1e-13)
    assert y[0, 0] == pytest.approx(-7.619853024160527e-23, rel=1e-12)


# ---------------------------------------------------------------------------
# inside models: in place over the Linear's output, and not
# ---------------------------------------------------------------------------

ACTS = {
    "gelu": lambda: nl.GELU(), "gelu_tanh": lambda: nl.GELU(approximate="tanh"),
    "silu": lambda: nl.SiLU(), "elu": lambda: nl.ELU(), "elu_0.3": lambda: nl.ELU(0.3),
    "elu_0": lambda: nl.ELU(0.0), "elu_-0.5": lambda: nl.ELU(-0.5),
    "softsign": lambda: nl.Softsign(), "hardtanh": lambda: nl.Hardtanh(),
    "hardtanh_-0.5_2": lambda: nl.Hardtanh(-0.5, 2.0),
}


def specs_of(layers):
    return [(layer.kind, {k: np.array(v) for k, v in layer.params.items()} or None,
             layer._args) for layer in layers]


def chain_reference(layers, x, gy):
    specs = specs_of(layers)
    y, caches = ref.sequential_forward(specs, x)
    gx, grads = ref.sequential_backward(specs, caches, gy)
    return y, gx, grads


def linear(i, o, dtype, seed, rng):
    lin = nl.Linear(i, o, dtype=dtype, seed=seed)
    lin.params["b"] = rng.standard_normal(o)
    return lin


def check_model(model, layers, x, rng, dtype):
    """forward, backward and the parameter gradients against the reference."""
    model.zero_grad()
    y = model.forward(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    y_r, gx_r, grads_r = chain_reference(layers, x, gy)
    assert_close(y, y_r, dtype)
    assert_close(gx, gx_r, dtype)
    for layer, g in zip(layers, grads_r):
        for k, v in g.items():
            assert_close(layer.grads[k], v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTS))
def test_in_a_sequential(name, dtype, rng):
    """Linear -> activation -> Linear: ELU (alpha >= 0), Softsign and
    Hardtanh run in place over the first Linear's output and take their
    backward from it."""
    layers = [linear(5, 8, dtype, 1, rng), ACTS[name](), linear(8, 3, dtype, 2, rng)]
    model = nl.Sequential(*layers)
    for _ in range(2):            # the workspace is reused: still right
        check_model(model, layers, (2 * rng.standard_normal((9, 5))).astype(dtype), rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTS))
def test_in_a_graph_not_in_place(name, dtype, rng):
    """The same activation over a value that another node also reads (so it
    cannot run in place), and over a model input, against the reference."""
    x = nl.Input(5, dtype=dtype)
    lin1, lin2, lin3 = (linear(5, 8, dtype, 1, rng), linear(8, 3, dtype, 2, rng),
                        linear(8, 3, dtype, 3, rng))
    act, act_in = ACTS[name](), ACTS[name]()
    h = lin1(x)
    out = nl.Add()([lin2(act(h)), lin3(h)])        # h has two readers
    out2 = act_in(x)                              # an input: never in place
    model = nl.Model(inputs=x, outputs=[out, out2])
    X = (2 * rng.standard_normal((7, 5))).astype(dtype)
    g, g2 = (rng.standard_normal((7, 3)).astype(dtype),
             rng.standard_normal((7, 5)).astype(dtype))
    model.zero_grad()
    y, y2 = model.forward(X)
    gx = model.backward([g, g2])
    nodes = [("linear", specs_of([lin1])[0][1], 0.01, [0]),
             (act.kind, None, act._args, [1]),
             ("linear", specs_of([lin2])[0][1], 0.01, [2]),
             ("linear", specs_of([lin3])[0][1], 0.01, [1]),
             ("add", None, 0.01, [3, 4]),
             (act_in.kind, None, act_in._args, [0])]
    (y_r, y2_r), values = ref.graph_forward(nodes, [X], [5, 6])
    (gx_r,), node_grads = ref.graph_backward(nodes, values, [5, 6], [g, g2], 1)
    assert_close(y, y_r, dtype)
    assert_close(y2, y2_r, dtype)
    assert_close(gx, gx_r, dtype)
    for lin, k in ((lin1, 0), (lin2, 2), (lin3, 3)):
        for key, v in node_grads[k].items():
            assert_close(lin.grads[key], v, dtype)


CHAINS = [
    ("hardtanh", "sigmoid"), ("elu", "tanh"), ("softsign", "elu"), ("elu", "hardtanh"),
    ("hardtanh", "softsign"), ("relu", "elu"), ("leaky_relu", "softsign"),
    ("tanh", "hardtanh"), ("sigmoid", "elu_0.3"), ("elu_-0.5", "hardtanh"),
    ("gelu", "elu"), ("silu", "hardtanh_-0.5_2"), ("hardtanh_-0.5_2", "gelu"),
]
MORE = {"sigmoid": nl.Sigmoid, "tanh": nl.Tanh, "relu": nl.ReLU,
        "leaky_relu": lambda: nl.LeakyReLU(0.2)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first,second", CHAINS, ids=["-".join(c) for c in CHAINS])
def test_two_activations_in_a_row(first, second, dtype, rng):
    """An activation that takes its backward from its output (NEEDS_OUT)
    keeps it: the next one does not run in place over it."""
    make = {**ACTS, **MORE}
    layers = [linear(4, 6, dtype, 1, rng), make[first](), make[second](),
              linear(6, 2, dtype, 2, rng)]
    model = nl.Sequential(*layers)
    check_model(model, layers, (2 * rng.standard_normal((8, 4))).astype(dtype), rng, dtype)


@pytest.mark.parametrize("name", ["elu", "softsign", "hardtanh", "gelu_tanh"])
def test_trains_like_the_reference(name, rng):
    """Two SGD steps of a model with the activation in place equal the
    reference's chain rule and update."""
    dtype = np.float64
    layers = [linear(4, 6, dtype, 1, rng), ACTS[name](), linear(6, 3, dtype, 2, rng)]
    model = nl.Sequential(*layers)
    opt = nl.SGD(model, lr=0.1)
    for step in range(2):
        x = rng.standard_normal((10, 4))
        labels = rng.integers(0, 3, 10)
        specs = specs_of(layers)
        z, caches = ref.sequential_forward(specs, x)
        loss_r, g = ref.softmax_cross_entropy(z, labels)
        _, grads_r = ref.sequential_backward(specs, caches, g)
        want = {i: {k: layers[i].params[k] - 0.1 * v for k, v in gr.items()}
                for i, gr in enumerate(grads_r)}
        loss = model.train_step(x, labels, nl.SoftmaxCrossEntropy(), opt)
        assert loss == pytest.approx(loss_r, rel=1e-12)
        for i, params in want.items():
            for k, v in params.items():
                assert_close(layers[i].params[k], v, dtype)


def split_steps_run(mode, rng_seed):
    """Three SGD steps of a chain of the five in split mode `mode`:
    (losses, parameters, split steps taken)."""
    old = _core._split_mode(mode)
    try:
        rng = np.random.default_rng(rng_seed)
        model = all_five_model(np.float64)
        opt = nl.SGD(model, lr=0.1, momentum=0.9)
        x = rng.standard_normal((29, 4))
        y = rng.integers(0, 2, 29)
        before = _core._split_steps()
        losses = [model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt) for _ in range(3)]
        return (losses, {k: np.array(v) for k, v in model.parameters().items()},
                _core._split_steps() - before)
    finally:
        _core._split_mode(old)


@pytest.mark.skipif(not _core._pool_info()["installed"], reason="no worker pool")
def test_split_step_is_the_whole_step():
    """The batch split between threads (rows in blocks, in place where the
    engine can) gives the whole step's losses and parameters."""
    old = nl.get_num_threads()
    try:
        nl.set_num_threads(2)
        whole = split_steps_run(0, 5)
        split = split_steps_run(1, 5)
    finally:
        nl.set_num_threads(old)
    assert whole[2] == 0 and split[2] == 3
    np.testing.assert_allclose(split[0], whole[0], rtol=1e-12)
    for k in whole[1]:
        np.testing.assert_allclose(split[1][k], whole[1][k], rtol=1e-12, atol=1e-12,
                                   err_msg=k)


# ---------------------------------------------------------------------------
# save / load, pickle, config
# ---------------------------------------------------------------------------

def all_five_model(dtype):
    return nl.Sequential(
        nl.Linear(4, 6, dtype=dtype, seed=1), nl.GELU(approximate="tanh"),
        nl.Linear(6, 6, dtype=dtype, seed=2), nl.ELU(alpha=0.7),
        nl.Linear(6, 5, dtype=dtype, seed=3), nl.Hardtanh(-0.25, 1.5),
        nl.Linear(5, 5, dtype=dtype, seed=4), nl.SiLU(),
        nl.Linear(5, 4, dtype=dtype, seed=5), nl.Softsign(), nl.GELU(),
        nl.Linear(4, 2, dtype=dtype, seed=6))


@pytest.mark.parametrize("how", ["save", "pickle"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_model_save_load_and_pickle(how, dtype, tmp_path, rng):
    model = all_five_model(dtype)
    if how == "save":
        path = tmp_path / "acts.npz"
        model.save(path)
        clone = nl.load(path)
    else:
        clone = pickle.loads(pickle.dumps(model))
    assert [type(a) for a in clone] == [type(a) for a in model]
    assert [a.get_config() for a in clone] == [a.get_config() for a in model]
    assert clone[1].approximate == "tanh" and clone[10].approximate == "none"
    assert clone[3].alpha == 0.7
    assert (clone[5].min_val, clone[5].max_val) == (-0.25, 1.5)
    x = rng.standard_normal((5, 4)).astype(dtype)
    y = model.forward(x)
    np.testing.assert_array_equal(clone.forward(x), y)
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(clone.backward(gy), model.backward(gy))


def test_properties_config_and_repr():
    g = nl.GELU(approximate="tanh", dtype=np.float64, name="g")
    assert g.kind == "gelu" and g.approximate == "tanh" and g.name == "g"
    assert g.get_config() == {"approximate": "tanh", "dtype": "float64"}
    assert repr(g) == "GELU(approximate=tanh, dtype=float64)"
    assert nl.GELU().approximate == "none" and nl.GELU().get_config() == {"approximate": "none"}
    e = nl.ELU(alpha=2)
    assert e.alpha == 2.0 and isinstance(e.alpha, float) and e.get_config() == {"alpha": 2.0}
    h = nl.Hardtanh(min_val=-3, max_val=0.5)
    assert (h.min_val, h.max_val) == (-3.0, 0.5)
    assert h.get_config() == {"min_val": -3.0, "max_val": 0.5}
    assert "min_val=-3.0" in repr(h) and "max_val=0.5" in repr(h)
    assert nl.SiLU().kind == "silu" and nl.Softsign().kind == "softsign"
    assert nl.SiLU().get_config() == {} and nl.Softsign(dtype=np.float32).dtype == np.float32
    for cls in (nl.GELU, nl.SiLU, nl.ELU, nl.Softsign, nl.Hardtanh):
        assert cls.__name__ in nl.__all__ and "derivative" in cls.__doc__
        assert len(cls().params) == 0
