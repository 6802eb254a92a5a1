"""Layers written in Python (subclasses of nl.Layer) as first-class nodes.

The engine calls them back for their node only; these tests check that
such a layer computes what the same maths as a built-in layer computes
(a Python Linear against nl.Linear, a Python product against
nl.Multiply), trains with every optimizer, passes gradcheck, survives
save/load/pickle/astype, and that every way a user's layer can go wrong
gives an error naming it with nothing changed.
"""
import copy
import pickle
import threading

import numpy as np
import pytest

import nnlayers as nl


# ---------------------------------------------------------------------------
# layers written in Python, as a user would
# ---------------------------------------------------------------------------

class Scale(nl.Layer):
    """The issue's example: y = x * s."""

    def __init__(self, features):
        super().__init__()
        self.s = self.add_param("s", (features,), init="ones")

    def forward(self, x):
        self.x = x
        return x * self.s

    def backward(self, g):
        self.grads["s"] += (g * self.x).sum(0)
        return g * self.s


class PyLinear(nl.Layer):
    """y = x W + b in NumPy, the same maths as nl.Linear."""

    def __init__(self, n_in, n_out, dtype=None):
        super().__init__(dtype=dtype)
        self.W = self.add_param("W", (n_in, n_out), init="glorot", seed=1)
        self.b = self.add_param("b", (n_out,))

    def output_width(self, *widths):
        return self.W.shape[1]

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, g):
        self.grads["W"] += self.x.T @ g
        self.grads["b"] += g.sum(0)
        return g @ self.W.T


class PyProduct(nl.Layer):
    """Two inputs: y = a * b."""

    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return [g * self.b, g * self.a]


class ModeProbe(nl.Layer):
    """Identity that records the mode of each call."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x.copy()

    def backward(self, g):
        return g


class Faulty(nl.Layer):
    """Identity that misbehaves on request ("forward" or "backward":
    raise; "shape", "dtype", "type": return a wrong value)."""

    def __init__(self, features):
        super().__init__()
        self.w = self.add_param("w", (features,), init="ones")
        self.fault = None
        self.where = None

    def _bad(self, x, where):
        if self.where != where:
            return x
        if self.fault == "raise":
            raise RuntimeError(f"deliberate failure in {where}")
        if self.fault == "shape":
            return x[:, :-1]
        if self.fault == "dtype":
            return x.astype(np.float16)
        if self.fault == "type":
            return x.tolist()
        return x

    def forward(self, x):
        return self._bad(x * self.w, "forward")

    def backward(self, g):
        return self._bad(g * self.w, "backward")


def chain_with(layer_py, dtype=np.float64, seed=0):
    return nl.Sequential(nl.Linear(5, 6, dtype=dtype, seed=seed), layer_py, nl.Tanh(),
                         nl.Linear(6, 3, dtype=dtype, seed=seed + 1))


def data(n=24, d=5, c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, c, n)


# ---------------------------------------------------------------------------
# the layer on its own
# ---------------------------------------------------------------------------

def test_scale_alone_forward_backward_and_params():
    s = Scale(4)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert s.dtype == np.float32 and repr(s) == "Scale(features=4)"
    assert np.array_equal(s.params["s"], np.ones(4, np.float32))
    assert s.s is not None and np.shares_memory(s.s, s.params["s"])
    s.s[...] = [1, 2, 3, 4]
    np.testing.assert_array_equal(s(x), x * [1, 2, 3, 4])
    g = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(s.backward(g), g * [1, 2, 3, 4])
    np.testing.assert_array_equal(s.grads["s"], x.sum(0))
    assert s.count_params() == 4 and s.name.startswith("scale")


def test_standalone_gradcheck():
    layer = PyLinear(4, 3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 4))
    assert nl.gradcheck(layer, x).ok


def test_layer_without_forward_or_backward_is_refused():
    class NoBackward(nl.Layer):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="NoBackward must define backward"):
        NoBackward()


def test_add_param_errors_leave_the_layer_as_it_was():
    s = Scale(3)
    with pytest.raises(ValueError, match="cannot add parameter 's'"):
        s.add_param("s", (3,))
    with pytest.raises(ValueError, match="init must be one of"):
        s.add_param("t", (3,), init="bogus")
    with pytest.raises(ValueError, match=r"init gives shape \(2,\), the tensor's is \(3,\)"):
        s.add_param("t", (3,), init=np.zeros(2))
    with pytest.raises(ValueError, match="shape must be a tuple of one or two positive ints"):
        s.add_param("t", (1, 2, 3))
    with pytest.raises(ValueError, match="each dimension of shape must be a positive int"):
        s.add_param("t", (0,))
    assert list(s.params) == ["s"] and np.array_equal(s.s, np.ones(3, np.float32))
    for i in range(7):
        s.add_param(f"p{i}", (2,))
    with pytest.raises(ValueError, match="at most 8 tensors"):
        s.add_param("p8", (2,))
    assert np.array_equal(s.s, np.ones(3, np.float32))   # still bound after 7 moves


def test_add_param_after_joining_a_model_is_refused():
    s = Scale(6)
    model = chain_with(s, dtype=np.float32)
    with pytest.raises(RuntimeError, match="already in a model; add parameters"):
        s.add_param("t", (6,))
    assert list(s.params) == ["s"]
    x, _ = data(dtype=np.float32)
    assert model.predict(x).shape == (24, 3)


def test_forgetting_super_init_is_a_clear_error():
    class Forgetful(nl.Layer):
        def __init__(self):
            pass

        def forward(self, x):
            return x

        def backward(self, g):
            return g

    with pytest.raises(TypeError, match=r"Forgetful was not initialised: call super\(\).__init__\(\)"):
        nl.Sequential(nl.Linear(2, 2), Forgetful())


def test_buffers_init_and_seed():
    class WithBuffer(Scale):
        def __init__(self, features):
            super().__init__(features)
            self.count = self.add_buffer("count", (1,))
            self.r = self.add_param("r", (features, 2), init="he", seed=5)

    a, b = WithBuffer(3), WithBuffer(3)
    assert list(a.buffers) == ["count"] and list(a.params) == ["s", "r"]
    np.testing.assert_array_equal(a.r, b.r)
    assert np.std(a.r) > 0 and np.array_equal(a.s, np.ones(3, np.float32))


# ---------------------------------------------------------------------------
# in models: the same maths as built-in layers
# ---------------------------------------------------------------------------

def twin_models(dtype=np.float64):
    """A chain with a PyLinear and the same chain with nl.Linear, equal
    weights."""
    py = PyLinear(6, 4, dtype=dtype)
    builtin = nl.Linear(6, 4, dtype=dtype)
    builtin.params["W"] = py.W
    builtin.params["b"] = py.b
    make = lambda mid: nl.Sequential(nl.Linear(5, 6, dtype=dtype, seed=3), nl.ReLU(), mid,  # noqa
                                     nl.Tanh(), nl.Linear(4, 3, dtype=dtype, seed=4))
    return make(py), make(builtin)


OPTIMIZERS = {
    "sgd": lambda m: nl.SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda m: nl.Adam(m, lr=0.01),
    "adamw": lambda m: nl.AdamW(m, lr=0.01),
    "rmsprop": lambda m: nl.RMSprop(m, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda m: nl.Adagrad(m, lr=0.1),
    "sgd_clip": lambda m: nl.SGD(m, lr=0.1, clip_norm=0.5),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_python_linear_trains_like_nl_linear(opt):
    py_model, nl_model = twin_models()
    x, y = data()
    o1, o2 = OPTIMIZERS[opt](py_model), OPTIMIZERS[opt](nl_model)
    for k in range(5):
        l1 = py_model.train_step(x, y, nl.SoftmaxCrossEntropy(), o1)
        l2 = nl_model.train_step(x, y, nl.SoftmaxCrossEntropy(), o2)
        assert l1 == pytest.approx(l2, rel=1e-12)
    for (k, a), b in zip(py_model.parameters().items(), nl_model.parameters().values()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=k)
    # the attributes follow the parameters into the model's block
    py = py_model[2]
    assert np.shares_memory(py.W, py_model.parameters()["2.W"])


def test_python_linear_fit_and_predict_like_nl_linear():
    py_model, nl_model = twin_models()
    x, y = data(n=50)
    h1 = py_model.fit(x, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.Adam(py_model),
                      epochs=3, batch_size=8, seed=1, verbose=0)
    h2 = nl_model.fit(x, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.Adam(nl_model),
                      epochs=3, batch_size=8, seed=1, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-10)
    np.testing.assert_allclose(py_model.predict(x), nl_model.predict(x), rtol=1e-10)


def test_two_input_python_layer_in_a_graph_matches_multiply():
    def build(merge):
        a, b = nl.Input(4), nl.Input(4)
        ha, hb = nl.Linear(4, 5, dtype=np.float64, seed=1)(a), \
            nl.Linear(4, 5, dtype=np.float64, seed=2)(b)
        out = nl.Linear(5, 2, dtype=np.float64, seed=3)(merge([ha, hb]))
        return nl.Model([a, b], out)

    m_py, m_nl = build(PyProduct()), build(nl.Multiply())
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((7, 4)), rng.standard_normal((7, 4))]
    np.testing.assert_allclose(m_py.predict(xs), m_nl.predict(xs), rtol=1e-14)
    assert nl.gradcheck(m_py, xs).ok
    g = rng.standard_normal((7, 2))
    m_py.forward(xs)
    m_nl.forward(xs)
    for a, b in zip(m_py.backward(g), m_nl.backward(g)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_output_width_sets_the_graph_widths():
    x = nl.Input(6)
    h = PyLinear(6, 9, dtype=np.float64)(x)
    assert h.width == 9
    model = nl.Model(x, nl.Linear(9, 2, dtype=np.float64)(h))
    assert model.predict(np.ones((3, 6))).shape == (3, 2)


def test_gradcheck_of_model_with_python_layer_and_loss():
    model = chain_with(Scale(6))
    model = model.astype(np.float64)
    x, y = data(n=6)
    model[1].s[...] = np.linspace(0.5, 1.5, 6)
    assert nl.gradcheck(model, x).ok
    assert nl.gradcheck(model, x, loss=nl.SoftmaxCrossEntropy(), target=y).ok


def test_the_layer_sees_the_mode_of_each_call():
    probe = ModeProbe()
    model = nl.Sequential(nl.Linear(5, 3, dtype=np.float64), probe)
    x, y = data(c=3)
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
    model.predict(x)
    model.evaluate(x, y, loss=nl.SoftmaxCrossEntropy())
    model.eval()
    model.forward(x)
    model.train()
    model.forward(x)
    assert probe.modes == [True, False, False, False, True]
    assert probe.training is True   # the layer's own flag is put back


def test_frozen_python_layer_is_not_updated():
    s = Scale(6)
    model = chain_with(s)
    s.trainable = False
    x, y = data()
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), nl.Adam(model, lr=0.1))
    np.testing.assert_array_equal(s.s, np.ones(6))


class StackedLinear(PyLinear):
    """A PyLinear that may be called at several places in a graph: the
    engine calls backward in the reverse order of the forward calls, so
    the inputs are kept on a stack (in training mode, when a backward
    follows)."""

    def __init__(self, n_in, n_out, dtype=None):
        super().__init__(n_in, n_out, dtype=dtype)
        self.stack = []

    def forward(self, x):
        if self.training:
            self.stack.append(x)
        return x @ self.W + self.b

    def backward(self, g):
        self.x = self.stack.pop()
        return super().backward(g)


def test_shared_python_layer_sums_its_gradients():
    """A Python layer called twice: its gradient is the sum over both uses,
    as for a shared nl.Linear."""
    def build(shared):
        x = nl.Input(4)
        h = nl.Linear(4, 4, dtype=np.float64, seed=5)(x)
        out = nl.Add()([shared(h), shared(nl.Tanh()(h))])
        return nl.Model(x, nl.Linear(4, 2, dtype=np.float64, seed=6)(out))

    py = StackedLinear(4, 4, dtype=np.float64)
    builtin = nl.Linear(4, 4, dtype=np.float64)
    builtin.params["W"], builtin.params["b"] = py.W, py.b
    m_py, m_nl = build(py), build(builtin)
    x, y = data(n=10, d=4, c=2)
    o1, o2 = nl.SGD(m_py, 0.1, momentum=0.9), nl.SGD(m_nl, 0.1, momentum=0.9)
    for _ in range(3):
        m_py.train_step(x, y, nl.SoftmaxCrossEntropy(), o1)
        m_nl.train_step(x, y, nl.SoftmaxCrossEntropy(), o2)
    for a, b in zip(m_py.parameters().values(), m_nl.parameters().values()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert py.stack == []


# ---------------------------------------------------------------------------
# failures: clear errors naming the layer, nothing changed
# ---------------------------------------------------------------------------

FAULTS = [
    ("forward", "raise", RuntimeError, "deliberate failure in forward"),
    ("backward", "raise", RuntimeError, "deliberate failure in backward"),
    ("forward", "shape", ValueError, r"the output of forward must have shape \(24, 6\), "
                                     r"got \(24, 5\)"),
    ("backward", "shape", ValueError, r"the input gradient backward returns must have shape "
                                      r"\(24, 6\), got \(24, 5\)"),
    ("forward", "dtype", TypeError, "the output of forward must have the model's dtype "
                                    "float64, got float16"),
    ("backward", "dtype", TypeError, "must have the model's dtype float64, got float16"),
    ("forward", "type", TypeError, "the output of forward must be a NumPy array of shape "
                                   r"\(24, 6\), got list"),
]


def snapshot(model, opt=None):
    out = {k: np.array(v) for k, v in model.parameters().items()}
    out.update({"buf." + k: np.array(v) for k, v in model.buffers().items()})
    if opt is not None:
        sd = opt.state_dict()
        out["steps"] = np.array(sd["steps"])
        for i, st in sd["state"].items():
            out.update({f"state.{i}.{k}": v for k, v in st.items()})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("where, fault, exc, msg", FAULTS,
                         ids=[f"{w}-{f}" for w, f, _, _ in FAULTS])
@pytest.mark.parametrize("call", ["train_step", "fit"])
def test_failing_python_layer_changes_nothing(where, fault, exc, msg, call):
    faulty = Faulty(6)
    model = nl.Sequential(nl.Linear(5, 6, dtype=np.float64, seed=1), nl.BatchNorm(6,
                          dtype=np.float64), faulty, nl.Tanh(),
                          nl.Linear(6, 3, dtype=np.float64, seed=2))
    opt = nl.Adam(model, lr=0.1)
    x, y = data()
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)   # some optimizer state
    before = snapshot(model, opt)
    faulty.fault, faulty.where = fault, where
    with pytest.raises(exc, match=msg) as info:
        if call == "train_step":
            model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
        else:
            model.fit(x, y, loss=nl.SoftmaxCrossEntropy(), optimizer=opt, epochs=1,
                      batch_size=24, verbose=0)
    note = " ".join(getattr(info.value, "__notes__", []))
    assert f"in {where} of layer {faulty.name!r} (Faulty)" in note
    assert_same(snapshot(model, opt), before)
    # the model stays usable
    faulty.fault = None
    assert np.isfinite(model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt))
    assert model.predict(x).shape == (24, 3)


def test_failing_forward_in_predict_names_the_layer():
    faulty = Faulty(6)
    model = chain_with(faulty)
    faulty.fault, faulty.where = "raise", "forward"
    with pytest.raises(RuntimeError, match="deliberate failure") as info:
        model.predict(data()[0])
    assert "in forward of layer" in " ".join(info.value.__notes__)
    faulty.fault = None
    assert model.predict(data()[0]).shape == (24, 3)


def test_backward_returning_the_wrong_number_of_gradients():
    class OneGrad(PyProduct):
        def backward(self, g):
            return [g * self.b]

    a, b = nl.Input(3), nl.Input(3)
    model = nl.Model([a, b], nl.Linear(3, 2, dtype=np.float64)(OneGrad()([a, b])))
    xs = [np.ones((4, 3)), np.ones((4, 3))]
    model.forward(xs)
    with pytest.raises(ValueError, match=r"one input gradient per input \(2\), got 1"):
        model.backward(np.ones((4, 2)))


def test_bad_output_width_is_refused_at_build():
    class Bad(Scale):
        def output_width(self, *widths):
            return 0

    with pytest.raises(ValueError, match="output_width must return a positive int"):
        Bad(3)(nl.Input(3))


# ---------------------------------------------------------------------------
# save, load, pickle, astype, config
# ---------------------------------------------------------------------------

def trained_graph():
    x = nl.Input(5)
    h = nl.Linear(5, 6, seed=1)(x)
    out = nl.Linear(6, 3, seed=2)(nl.ReLU()(Scale(6)(h)))
    model = nl.Model(x, out)
    X, y = data(dtype=np.float32)
    model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.Adam(model, lr=0.01), epochs=2,
              verbose=0, seed=0)
    return model, X


def test_save_load_with_custom_objects(tmp_path):
    model, X = trained_graph()
    path = tmp_path / "m.npz"
    model.save(path)
    with pytest.raises(ValueError, match=r"layer class 'Scale' .* pass its class to load: "
                                         r"custom_objects=\{'Scale': Scale\}"):
        nl.load(path)
    loaded = nl.load(path, custom_objects={"Scale": Scale})
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert isinstance(loaded.layers[1], Scale)


def test_load_checks_the_rebuilt_layer_against_the_file(tmp_path):
    model, _ = trained_graph()
    path = tmp_path / "m.npz"
    model.save(path)

    class Scale2(Scale):   # another shape of tensor under the same name
        def __init__(self, features):
            super().__init__(features + 1)

    with pytest.raises(ValueError, match=r"Scale built from its config has tensors "
                                         r"\{'s': \(7,\)\}, the file \{'s': \(6,\)\}"):
        nl.load(path, custom_objects={"Scale": Scale2})


def test_unjsonable_config_is_refused_at_save(tmp_path):
    class Holder(Scale):
        def __init__(self, features, thing=None):
            super().__init__(features)

    model = nl.Sequential(nl.Linear(3, 4), Holder(4, thing=object()))
    with pytest.raises(ValueError, match="its config .* is not JSON .* define get_config"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_pickle_deepcopy_astype_and_from_config():
    model, X = trained_graph()
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(other.predict(X), model.predict(X))
        assert other.layers[1] is not model.layers[1]
    m64 = model.astype(np.float64)
    assert m64.layers[1].dtype == np.float64 and m64.layers[1].s.dtype == np.float64
    np.testing.assert_allclose(m64.predict(X.astype(np.float64)), model.predict(X), rtol=1e-5)
    fresh = nl.Model.from_config(model.get_config(), custom_objects={"Scale": Scale})
    assert fresh.predict(X).shape == (24, 3)
    np.testing.assert_array_equal(fresh.layers[1].s, np.ones(6, np.float32))   # new weights
    layer = pickle.loads(pickle.dumps(model.layers[1]))
    np.testing.assert_array_equal(layer.s, model.layers[1].s)


# ---------------------------------------------------------------------------
# threads and nesting
# ---------------------------------------------------------------------------

def test_concurrent_predict_with_a_python_layer():
    model, X = trained_graph()
    want = model.predict(X)
    out, errors = [None] * 6, []

    def run(i):
        try:
            for _ in range(20):
                out[i] = model.predict(X)
        except Exception as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and all(np.array_equal(o, want) for o in out)


def test_python_layer_running_another_model_inside_fit():
    """A layer that calls another model's predict and train_step from its
    forward: no deadlock, and the outer model trains."""
    inner = nl.Sequential(nl.Linear(6, 6, seed=9))
    inner_opt = nl.SGD(inner, 1e-3)

    class Wrapper(nl.Layer):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            inner.train_step(x, np.zeros(len(x), np.int64), nl.SoftmaxCrossEntropy(), inner_opt)
            return inner.predict(x)

        def backward(self, g):
            return g @ inner[0].params["W"].T

    model = nl.Sequential(nl.Linear(5, 6, seed=1), Wrapper(), nl.Linear(6, 3, seed=2))
    X, y = data(n=200, dtype=np.float32)
    h = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                  epochs=2, batch_size=50, verbose=0)
    assert np.all(np.isfinite(h.history["loss"]))


# ---------------------------------------------------------------------------
# the acceptance: digits with a Python layer and a shared Linear
# ---------------------------------------------------------------------------

def test_digits_with_python_layer_and_shared_linear(tmp_path):
    pytest.importorskip("sklearn")
    from nnlayers.datasets import load_digits_split

    X_train, X_test, y_train, y_test = load_digits_split(seed=0)
    x = nl.Input(64)
    h = nl.Dropout(0.2)(nl.ReLU()(nl.Linear(64, 128, seed=1)(x)))
    shared = nl.Linear(128, 128, seed=2)
    a = nl.ReLU()(shared(h))
    b = nl.ReLU()(shared(Scale(128)(a)))
    out = nl.Linear(128, 10, seed=3)(nl.Dropout(0.2)(nl.Add()([a, b])))
    model = nl.Model(x, out)
    opt = nl.AdamW(model, lr=2e-3, weight_decay=1e-2)
    model.fit(X_train, y_train, loss=nl.SoftmaxCrossEntropy(), optimizer=opt, epochs=40,
              batch_size=32, seed=0, verbose=0,
              schedule=nl.schedules.CosineAnnealingLR(opt, T_max=40))
    acc = model.evaluate(X_test, y_test, loss=nl.SoftmaxCrossEntropy())["accuracy"]
    assert acc >= 0.97, acc
    small = model.astype(np.float64)
    # eps 1e-5: the trained net's small gradient entries (~1e-3) put
    # eps 1e-6's rounding noise near the 1e-6 tolerance
    assert nl.gradcheck(small, X_test[:4].astype(np.float64), eps=1e-5).ok
    path = tmp_path / "digits.npz"
    model.save(path)
    loaded = nl.load(path, custom_objects={"Scale": Scale})
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
