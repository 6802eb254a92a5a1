"""Graphs: nl.Model over any graph of layers (fan-out, merges, shared
layers, nesting, several inputs and outputs), against finite differences,
the NumPy reference of the multi-path chain rule, and Sequential."""
import copy
import pickle
import threading

import numpy as np
import pytest

import nnlayers as nl
import nnlayers._reference as ref
from _compare import assert_close

F64 = np.float64
DTYPES = [np.float32, np.float64]


def lin(i, o, dtype=F64, seed=0, **kw):
    return nl.Linear(i, o, dtype=dtype, seed=seed, **kw)


def flat_reference(model, inputs):
    """The NumPy reference of the model's graph: (outputs, values, nodes)."""
    nodes = []
    for li, ins in model._flat_nodes:
        layer = model._flat_layers[li]
        params = {k: np.array(v) for k, v in layer.params.items()} or None
        nodes.append((layer.kind, params, getattr(layer, "slope", 0.01), ins))
    outs, values = ref.graph_forward(nodes, inputs, model._flat_outputs)
    return outs, values, nodes


def reference_grads(model, inputs, gouts):
    """Input gradients and every parameter's gradient (summed over a shared
    layer's uses) by the reference, named as model.parameters()."""
    _, values, nodes = flat_reference(model, inputs)
    gx, node_grads = ref.graph_backward(nodes, values, model._flat_outputs, gouts,
                                        len(inputs))
    per_layer = {}
    for (li, _), g in zip(model._flat_nodes, node_grads):
        acc = per_layer.setdefault(li, {})
        for k, v in g.items():
            acc[k] = acc[k] + v if k in acc else v
    names = {id(layer): n for n, layer in model._named_leaves()}
    grads = {}
    for li, g in per_layer.items():
        for k, v in g.items():
            grads[f"{names[id(model._flat_layers[li])]}.{k}"] = v
    return gx, grads


def residual_model(dtype=F64, width=6):
    x = nl.Input(width)
    h = nl.ReLU()(lin(width, 5, dtype, 1)(x))
    mid = nl.Tanh()(lin(5, 5, dtype, 2)(h))
    out = lin(5, 3, dtype, 3)(nl.Add()([mid, h]))
    return nl.Model(inputs=x, outputs=out)


# ---------------------------------------------------------------- gradients

def test_gradcheck_fan_out(rng):
    x = nl.Input(4, dtype=F64)
    a = lin(4, 3, seed=1)(x)
    b = nl.Sigmoid()(lin(4, 3, seed=2)(x))       # x feeds two nodes
    c = nl.Tanh()(a)                              # a feeds two nodes
    out = nl.Add()([nl.Multiply()([a, b]), c, nl.Subtract()([c, b])])
    model = nl.Model(x, out)
    X = rng.standard_normal((5, 4))
    nl.gradcheck(model, X)
    gout = rng.standard_normal((5, 3))
    want_out, _, _ = flat_reference(model, [X])
    assert_close(model.forward(X), want_out[0], F64)
    model.zero_grad()
    gx = model.backward(gout)
    want_gx, want = reference_grads(model, [X], [gout])
    assert_close(gx, want_gx[0], F64)
    for k, v in want.items():
        assert_close(model.gradients()[k], v, F64)


@pytest.mark.parametrize("kind,n", [("add", 2), ("add", 3), ("subtract", 2), ("multiply", 2),
                                    ("multiply", 3), ("average", 2), ("average", 4),
                                    ("concatenate", 2), ("concatenate", 3)])
def test_gradcheck_each_merge(kind, n, rng):
    cls = {"add": nl.Add, "subtract": nl.Subtract, "multiply": nl.Multiply,
           "average": nl.Average, "concatenate": nl.Concatenate}[kind]
    x = nl.Input(3, dtype=F64)
    widths = [4] * n if kind != "concatenate" else [2, 3, 4][:n]
    branches = [nl.Tanh()(lin(3, w, seed=i)(x)) for i, w in enumerate(widths)]
    merged = cls()(branches)
    out = lin(merged.width, 2, seed=9)(merged)
    model = nl.Model(x, out)
    X = rng.standard_normal((4, 3))
    nl.gradcheck(model, X)
    assert_close(model.forward(X), flat_reference(model, [X])[0][0], F64)


@pytest.mark.parametrize("kind", ref.MERGES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_layers_against_reference(kind, dtype, rng):
    """Each merge alone (a layer called on arrays) against its twin."""
    layer = {"add": nl.Add, "subtract": nl.Subtract, "multiply": nl.Multiply,
             "average": nl.Average, "concatenate": nl.Concatenate}[kind]()
    n = 2 if kind == "subtract" else 3
    widths = [2, 3, 1] if kind == "concatenate" else [4] * n
    xs = [rng.standard_normal((5, w)).astype(dtype) for w in widths[:n]]
    y = layer(xs)
    assert_close(y, ref.merge_forward(kind, xs), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(layer.backward(gy), ref.merge_backward(kind, gy, xs)):
        assert_close(got, want, dtype)


def test_same_value_into_two_inputs_of_a_merge(rng):
    """Add()([h, h]) and Multiply()([h, h]): both slots write one gradient."""
    x = nl.Input(3, dtype=F64)
    h = lin(3, 3, seed=1)(x)
    out = nl.Concatenate()([nl.Add()([h, h]), nl.Multiply()([h, h])])
    model = nl.Model(x, out)
    X = rng.standard_normal((4, 3))
    nl.gradcheck(model, X)
    assert_close(model.forward(X), flat_reference(model, [X])[0][0], F64)


def test_gradcheck_shared_layers(rng):
    """One encoder applied to two inputs (one set of parameters), and a
    weight tied between two branches of one input: the gradient of a
    shared layer is the sum over its uses."""
    enc = lin(4, 3, seed=1)
    x1, x2 = nl.Input(4, dtype=F64), nl.Input(4, dtype=F64)
    a, b = enc(x1), enc(x2)
    tied = lin(3, 3, seed=2)
    p1 = tied(nl.ReLU()(a))
    p2 = tied(nl.Tanh()(b))
    out = nl.Concatenate()([p1, p2, nl.Subtract()([a, b])])
    model = nl.Model([x1, x2], out)
    assert len(model._flat_layers) == len(set(map(id, model._flat_layers)))
    assert sum(1 for li, _ in model._flat_nodes if model._flat_layers[li] is enc) == 2
    assert set(model.parameters()) == {f"{enc.name}.W", f"{enc.name}.b",
                                       f"{tied.name}.W", f"{tied.name}.b"}
    X1, X2 = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    nl.gradcheck(model, [X1, X2])
    gout = rng.standard_normal((5, 9))
    model.zero_grad()
    model.forward([X1, X2])
    gx = model.backward(gout)
    want_gx, want = reference_grads(model, [X1, X2], [gout])
    for got, w in zip(gx, want_gx):
        assert_close(got, w, F64)
    for k, v in want.items():
        assert_close(model.gradients()[k], v, F64)


def test_shared_layer_trains_as_one(rng):
    """train_step on a shared layer: one update from the summed gradient,
    as plain SGD on the reference gradient gives."""
    enc = lin(3, 3, seed=1)
    x = nl.Input(3, dtype=F64)
    out = enc(nl.Tanh()(enc(x)))
    model = nl.Model(x, out)
    X, T = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    W0, b0 = np.array(enc.params["W"]), np.array(enc.params["b"])
    pred = flat_reference(model, [X])[0][0]
    _, gpred = ref.mse(pred, T)
    _, grads = reference_grads(model, [X], [gpred])
    model.train_step(X, T, nl.MSE(), nl.SGD(model, lr=0.5))
    assert_close(enc.params["W"], W0 - 0.5 * grads[f"{enc.name}.W"], F64)
    assert_close(enc.params["b"], b0 - 0.5 * grads[f"{enc.name}.b"], F64)


def test_gradcheck_nesting(rng):
    """A Sequential and a Model called on symbolic tensors act as layers
    with their own parameters, named under them."""
    block = nl.Sequential(lin(4, 4, seed=1), nl.Tanh(), lin(4, 4, seed=2), name="block")
    xi = nl.Input(4)
    inner = nl.Model(xi, nl.Add()([nl.ReLU()(lin(4, 4, seed=3)(xi)), xi]), name="inner")
    x = nl.Input(4, dtype=F64)
    out = lin(4, 2, seed=4)(inner(block(x)))
    model = nl.Model(x, out)
    names = set(model.parameters())
    assert {"block.0.W", "block.2.b"} <= names
    assert sum(k.startswith("inner.") for k in names) == 2
    X = rng.standard_normal((3, 4))
    nl.gradcheck(model, X)
    # the nested models still work on their own, sharing the parameters
    assert_close(block.forward(X), np.array(flat_reference(block, [X])[0][0]), F64)
    seq = nl.Sequential(block, nl.ReLU(), inner)   # models inside a Sequential
    nl.gradcheck(seq, X)


def test_gradcheck_two_inputs_two_outputs_weighted_losses(rng):
    a, b = nl.Input(3, dtype=F64), nl.Input(2, dtype=F64)
    h = nl.Tanh()(nl.Concatenate()([lin(3, 4, seed=1)(a), lin(2, 4, seed=2)(b)]))
    o1 = lin(8, 2, seed=3)(h)
    o2 = lin(8, 3, seed=4)(nl.ReLU()(h))
    model = nl.Model([a, b], [o1, o2])
    xa, xb = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    t1, t2 = rng.standard_normal((6, 2)), rng.integers(0, 3, 6)
    losses = [nl.MSE(), nl.SoftmaxCrossEntropy()]
    nl.gradcheck(model, [xa, xb])
    nl.gradcheck(model, [xa, xb], loss=losses, target=[t1, t2], loss_weights=[0.25, 2.0])
    # train_step minimises the weighted sum: its value is the weighted sum
    # of the losses before the step
    p1, p2 = model.predict([xa, xb])
    want = 0.25 * ref.mse(p1, t1)[0] + 2.0 * ref.softmax_cross_entropy(p2, t2)[0]
    ev = model.evaluate([xa, xb], [t1, t2], loss=losses, loss_weights=[0.25, 2.0])
    assert ev["loss"] == pytest.approx(want, rel=1e-12)
    out_names = model._output_names
    assert ev[f"{out_names[0]}_loss"] == pytest.approx(ref.mse(p1, t1)[0], rel=1e-12)
    opt = nl.SGD(model, lr=0.1)
    hist = model.fit([xa, xb], [t1, t2], loss=losses, optimizer=opt, epochs=1, batch_size=6,
                     shuffle=False, verbose=0, loss_weights=[0.25, 2.0])
    assert hist.history["loss"][0] == pytest.approx(want, rel=1e-12)


def test_two_class_softmax_as_a_graph_with_two_paths(rng):
    """The notes' 2-class softmax regression written as a graph: one score
    path per class (z_k = x w_k + b_k), joined, then softmax cross-entropy.
    The gradient of each path's weights is (p_k - y_k) x / N, by the
    multi-path chain rule; checked against finite differences too."""
    x = nl.Input(3, dtype=F64)
    s0, s1 = lin(3, 1, seed=1), lin(3, 1, seed=2)
    z = nl.Concatenate()([s0(x), s1(x)])
    model = nl.Model(x, z)
    X, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    loss = nl.SoftmaxCrossEntropy()
    nl.gradcheck(model, X, loss=loss, target=y)
    model.zero_grad()
    Z = model.forward(X)
    loss.forward(Z, y)
    model.backward(loss.backward())
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    Y = np.eye(2)[y]
    for k, path in enumerate((s0, s1)):
        want_W = X.T @ (P[:, k:k + 1] - Y[:, k:k + 1]) / len(X)
        assert_close(path.grads["W"], want_W, F64)
        assert_close(path.grads["b"], (P[:, k] - Y[:, k]).mean(keepdims=True), F64)


ACTS = {"relu": nl.ReLU, "leaky": lambda: nl.LeakyReLU(0.1), "neg_leaky": lambda: nl.LeakyReLU(-0.2),
        "sigmoid": nl.Sigmoid, "tanh": nl.Tanh, "softplus": nl.Softplus, "identity": nl.Identity,
        "cos": nl.Cos}


@pytest.mark.parametrize("first", sorted(ACTS))
@pytest.mark.parametrize("second", sorted(ACTS))
def test_two_activations_in_a_row(first, second, rng):
    """An activation runs in place over its input only when that storage
    is its producer's own: after Linear-ReLU (in place), a Sigmoid must not
    overwrite what ReLU's backward reads."""
    model = nl.Sequential(lin(3, 4, seed=1), ACTS[first](), ACTS[second](), lin(4, 2, seed=2))
    x = rng.standard_normal((5, 3))
    nl.gradcheck(model, x)
    out, _, _ = flat_reference(model, [x])
    assert_close(model.forward(x), out[0], F64)


# ---------------------------------------------------------------- Sequential is a graph

def _chain_layers(dtype):
    return [lin(7, 6, dtype, 1), nl.ReLU(), lin(6, 5, dtype, 2), nl.Tanh(),
            lin(5, 4, dtype, 3), nl.LeakyReLU(0.1), lin(4, 3, dtype, 4)]


def _as_model(layers):
    x = nl.Input(layers[0].in_features)
    h = x
    for layer in layers:
        h = layer(h)
    return nl.Model(x, h)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sequential_and_model_are_bitwise_identical(dtype, momentum, rng):
    layers = _chain_layers(dtype)
    seq = nl.Sequential(*layers)
    model = _as_model(copy.deepcopy(layers))
    X = rng.standard_normal((33, 7)).astype(dtype)
    y = rng.integers(0, 3, 33)
    np.testing.assert_array_equal(seq.forward(X), model.forward(X))
    g = rng.standard_normal((33, 3)).astype(dtype)
    seq.zero_grad()
    model.zero_grad()
    np.testing.assert_array_equal(seq.backward(g), model.backward(g))
    for a, b in zip(seq.gradients().values(), model.gradients().values()):
        np.testing.assert_array_equal(a, b)
    loss = nl.SoftmaxCrossEntropy()
    o1, o2 = nl.SGD(seq, 0.05, momentum=momentum), nl.SGD(model, 0.05, momentum=momentum)
    for _ in range(5):
        assert seq.train_step(X, y, loss, o1) == model.train_step(X, y, loss, o2)
    seq.fit(X, y, loss=loss, optimizer=o1, epochs=2, batch_size=8, seed=3, verbose=0)
    model.fit(X, y, loss=loss, optimizer=o2, epochs=2, batch_size=8, seed=3, verbose=0)
    for a, b in zip(seq.parameters().values(), model.parameters().values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("acts", [("relu", "sigmoid"), ("relu", "tanh"), ("leaky_relu", "relu"),
                                  ("identity", "relu"), ("relu", "step", "sigmoid")])
def test_chained_in_place_activations_keep_what_backward_reads(acts, rng):
    """An activation runs in place over its input only when that input's
    producer does not run in place itself: ReLU's backward reads its input,
    which a Sigmoid in place over ReLU's output would overwrite (found by
    test_fuzz: Linear, ReLU, Sigmoid at x = -1 gave dx = 0.25 instead of 0)."""
    make = {"relu": nl.ReLU, "sigmoid": nl.Sigmoid, "tanh": nl.Tanh, "identity": nl.Identity,
            "step": nl.Step, "leaky_relu": lambda: nl.LeakyReLU(0.2)}
    model = nl.Sequential(lin(4, 5, seed=1), *[make[a]() for a in acts])
    x = rng.standard_normal((9, 4))
    x[0] = -x[0]                       # both signs before the first activation
    gy = rng.standard_normal((9, 5))
    specs = [(layer.kind, {k: np.array(v) for k, v in layer.params.items()} or None,
              getattr(layer, "slope", 0.01)) for layer in model]
    out, caches = ref.sequential_forward(specs, x)
    np.testing.assert_allclose(model.forward(x), out, rtol=1e-12)
    gx, _ = ref.sequential_backward(specs, caches, gy)
    np.testing.assert_allclose(model.backward(gy), gx, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- errors

def _trains_like(model, fresh, X, y, loss=None):
    """model (after a refused call) and an untouched copy train alike."""
    loss = loss or nl.SoftmaxCrossEntropy()
    a = model.train_step(X, y, loss, nl.SGD(model, 0.1))
    b = fresh.train_step(X, y, loss, nl.SGD(fresh, 0.1))
    assert a == b
    for p, q in zip(model.parameters().values(), fresh.parameters().values()):
        np.testing.assert_array_equal(p, q)


def test_error_cycle_is_refused():
    """Symbolic calls cannot make a cycle; the C graph refuses one anyway
    (a node that reads a value computed after it), naming the node."""
    a, b = lin(3, 3, seed=1), nl.ReLU()
    with pytest.raises(ValueError, match=r"node 'first' reads a value that is not computed "
                                         r"before it \(a cycle"):
        nl._core.Model([a, b], [(0, (2,)), (1, (1,))], [3], [2], ["node 'first'",
                                                             "node 'second'"])
    model = nl.Sequential(a, b)     # the layers were not taken
    assert model.forward(np.ones((2, 3))).shape == (2, 3)


def test_error_disconnected_and_unused_inputs():
    x1, x2 = nl.Input(3, name="first"), nl.Input(3, name="second")
    out = lin(3, 2, seed=1)(x2)
    with pytest.raises(ValueError, match=r"graph disconnected: layer '.*' depends on input "
                                         r"'second', which is not in the model's inputs"):
        nl.Model(x1, out)
    with pytest.raises(ValueError, match=r"input 'first' is not used by any layer that leads "
                                         r"to an output"):
        nl.Model([x1, x2], out)
    model = nl.Model(x2, out)       # the same tensors still make a model
    assert model.forward(np.ones((2, 3))).shape == (2, 2)


def test_error_merge_of_different_widths_names_the_layer():
    x = nl.Input(3)
    a, b = lin(3, 4, seed=1)(x), lin(3, 5, seed=2)(x)
    add = nl.Add(name="join")
    with pytest.raises(ValueError, match=r"layer 'join': input 1 of Add\(\) has 5 columns but "
                                         r"input 0 has 4"):
        add([a, b])
    out = add([a, lin(3, 4, seed=3)(x)])   # the layer still works
    assert out.width == 4
    X = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"input 1 of Add\(\) has 5 columns"):
        add([np.ones((2, 4)), np.ones((2, 5))])
    assert nl.Model(x, out).forward(X).shape == (2, 4)


def test_error_symbolic_tensor_given_to_forward():
    model = residual_model()
    fresh = copy.deepcopy(model)
    for call in (model.forward, model.predict, lambda t: model.train_step(
            t, np.zeros(2, int), nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))):
        with pytest.raises(TypeError, match=r"got a symbolic tensor .* take NumPy arrays"):
            call(nl.Input(6))
    rng = np.random.default_rng(0)
    _trains_like(model, fresh, rng.standard_normal((4, 6)), rng.integers(0, 3, 4))


def test_error_real_array_where_a_symbolic_tensor_is_needed():
    x = nl.Input(3)
    out = lin(3, 2)(x)
    with pytest.raises(TypeError, match=r"Model\(inputs=...\): item 0 is ndarray, not a "
                                        r"symbolic tensor"):
        nl.Model(np.zeros((2, 3)), out)
    with pytest.raises(TypeError, match=r"Model\(outputs=...\): item 0 is ndarray"):
        nl.Model(x, np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"called on symbolic tensors or on arrays, not both"):
        nl.Add()([x, np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"computed by layer .*; a model's inputs must come "
                                         r"from nl\.Input"):
        nl.Model(out, out)
    assert nl.Model(x, out).forward(np.ones((1, 3))).shape == (1, 2)


def test_error_wrong_number_of_inputs_targets_losses(rng):
    a, b = nl.Input(3, dtype=F64), nl.Input(2, dtype=F64)
    h = nl.Concatenate()([lin(3, 2, seed=1)(a), lin(2, 2, seed=2)(b)])
    model = nl.Model([a, b], [lin(4, 2, seed=3)(h), lin(4, 3, seed=4)(h)])
    fresh = copy.deepcopy(model)
    xa, xb = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    y = [rng.standard_normal((4, 2)), rng.integers(0, 3, 4)]
    losses = [nl.MSE(), nl.SoftmaxCrossEntropy()]
    opt = nl.SGD(model, 0.1)
    with pytest.raises(TypeError, match=r"x: this model has 2 inputs, so it takes a list of 2"):
        model.forward(xa)
    with pytest.raises(ValueError, match=r"x: this model has 2 inputs, got a list of 3"):
        model.predict([xa, xb, xb])
    with pytest.raises(ValueError, match=r"this model has 2 outputs, so it takes a list of 2 "
                                         r"targets"):
        model.train_step([xa, xb], y[:1], losses, opt)
    with pytest.raises(ValueError, match=r"loss: this model has 2 outputs, got a list of 3 "
                                         r"losses"):
        model.train_step([xa, xb], y, losses + [nl.MSE()], opt)
    with pytest.raises(ValueError, match=r"loss_weights must give one weight per output"):
        model.fit([xa, xb], y, loss=losses, optimizer=opt, loss_weights=[1.0], verbose=0)
    with pytest.raises(ValueError, match=r"input 1 has 3 rows but input 0 has 4"):
        model.forward([xa, xb[:3]])
    with pytest.raises(ValueError, match=r"grad_output: this model has 2 outputs, got a list of"
                                         r" 1 gradients"):
        model.forward([xa, xb])
        model.backward([np.ones((4, 2))])
    for m in (model, fresh):
        m.zero_grad()
        m.forward([xa, xb])
    np.testing.assert_array_equal(model.backward([np.ones((4, 2)), np.ones((4, 3))])[0],
                                  fresh.backward([np.ones((4, 2)), np.ones((4, 3))])[0])
    a1 = model.train_step([xa, xb], y, losses, nl.SGD(model, 0.1))
    a2 = fresh.train_step([xa, xb], y, losses, nl.SGD(fresh, 0.1))
    assert a1 == a2


def test_error_names_must_be_unique():
    x = nl.Input(3)
    out = lin(3, 3, name="dense")(lin(3, 3, name="dense")(x))
    with pytest.raises(ValueError, match=r"two different layers are named 'dense'"):
        nl.Model(x, out)


# ---------------------------------------------------------------- threads

def test_concurrent_predict_from_eight_threads_matches_serial(rng):
    """Inference from many threads: each call on a workspace of its own,
    no ConcurrentUseError, the serial results to the bit, and the calls do
    overlap (readers seen at once)."""
    model = residual_model(np.float32, width=64)
    batches = [rng.standard_normal((int(n), 64)).astype(np.float32)
               for n in rng.integers(1, 300, 8)]
    serial = [model.predict(b) for b in batches]
    results, errors, most = [None] * 8, [], [0]
    start = threading.Barrier(9)
    done = threading.Event()

    def work(i):
        start.wait()
        try:
            for _ in range(200):
                out = model.predict(batches[i])
                if not np.array_equal(out, serial[i]):
                    raise AssertionError(f"thread {i}: differs from the serial result")
            results[i] = model.forward(batches[i])
        except Exception as exc:   # collected, asserted below
            errors.append(exc)

    def watch():
        start.wait()
        while not done.is_set():
            most[0] = max(most[0], model._users[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    watcher = threading.Thread(target=watch)
    for t in threads + [watcher]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)
    assert most[0] >= 2, "the predicts never ran at the same time"
    # the model trains afterwards (no claim left behind)
    model.train_step(batches[0], np.zeros(len(batches[0]), int), nl.SoftmaxCrossEntropy(),
                     nl.SGD(model, 0.01))


def test_training_refuses_while_predicts_run(rng):
    model = residual_model(np.float32, width=64)
    X = rng.standard_normal((2000, 64)).astype(np.float32)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            model.predict(X)

    th = threading.Thread(target=loop)
    th.start()
    refused = 0
    try:
        for _ in range(2000):
            try:
                model.train_step(X[:8], np.zeros(8, int), nl.SoftmaxCrossEntropy(),
                                 nl.SGD(model, 0.01))
            except nl.ConcurrentUseError as e:
                assert "one writer" in str(e)
                refused += 1
                break
    finally:
        stop.set()
        th.join()
    assert refused == 1


# ---------------------------------------------------------------- memory and copies

@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_graph_training_allocates_nothing_in_steady_state(momentum, rng):
    model = residual_model(np.float32, width=16)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.01, momentum=momentum)
    model.train_step(X, y, loss, opt)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=16, verbose=0)
    before = nl._core.alloc_count()
    for _ in range(20):
        model.train_step(X, y, loss, opt)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=3, batch_size=16, verbose=0)
    assert nl._core.alloc_count() == before


def test_save_load_pickle_deepcopy_keep_the_graph(tmp_path, rng):
    enc = lin(4, 3, seed=1)
    block = nl.Sequential(lin(3, 3, seed=2), nl.Tanh(), name="block")
    x1, x2 = nl.Input(4, dtype=F64), nl.Input(4, dtype=F64)
    out1 = block(enc(x1))
    out2 = nl.Add()([enc(x2), block(enc(x2))])
    model = nl.Model([x1, x2], [out1, out2], name="twin")
    X = [rng.standard_normal((5, 4)), rng.standard_normal((5, 4))]
    want = model.predict(X)
    path = tmp_path / "g.npz"
    model.save(path)
    copies = [nl.load(path), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    for other in copies:
        assert type(other) is nl.Model and other.name == "twin"
        for a, b in zip(other.predict(X), want):
            np.testing.assert_array_equal(a, b)
        assert list(other.parameters()) == list(model.parameters())
        # shared identity survives: one encoder, used at three nodes
        encs = [other._flat_layers[li] for li, _ in other._flat_nodes
                if other._flat_layers[li].name == enc.name]
        assert len(encs) == 3 and all(e is encs[0] for e in encs)
        # and the copy is independent of the original
        other.parameters()[f"{enc.name}.W"][...] = 0
        assert np.any(model.parameters()[f"{enc.name}.W"] != 0)
        nested = [o for o in other.layers if isinstance(o, nl.Sequential)]
        assert len(nested) == 1 and nested[0].name == "block"


def test_residual_model_learns_xor_like_data(rng):
    """A small residual graph trained with fit reaches a low loss."""
    X = rng.standard_normal((256, 6)).astype(np.float32)
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    model = residual_model(np.float32)
    hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(),
                     optimizer=nl.SGD(model, 0.1, momentum=0.9), epochs=60, batch_size=32,
                     seed=1, verbose=0)
    assert hist.history["accuracy"][-1] > 0.9


# ---------------------------------------------------------------- torch (optional peer)

def _random_graph(rng, n_nodes=10):
    """A random graph of two inputs: each node picks a kind and earlier
    values of its width; every value not consumed feeds a final sum."""
    width = 4
    x1, x2 = nl.Input(width, dtype=F64), nl.Input(width, dtype=F64)
    values = [x1, x2]
    consumed = set()
    shared = lin(width, width, seed=99)
    for k in range(n_nodes):
        kind = rng.choice(["linear", "shared", "relu", "tanh", "sigmoid", "add", "multiply",
                           "subtract", "average"])
        picks = [values[i] for i in rng.choice(len(values), size=2)]
        if kind in ("linear", "shared"):
            layer = shared if kind == "shared" else lin(width, width, seed=int(k))
            out = layer(picks[0])
            used = picks[:1]
        elif kind in ("relu", "tanh", "sigmoid"):
            out = {"relu": nl.ReLU, "tanh": nl.Tanh, "sigmoid": nl.Sigmoid}[kind]()(picks[0])
            used = picks[:1]
        else:
            cls = {"add": nl.Add, "multiply": nl.Multiply, "subtract": nl.Subtract,
                   "average": nl.Average}[kind]
            out = cls()(picks)
            used = picks
        consumed.update(id(t) for t in used)
        values.append(out)
    loose = [t for t in values if id(t) not in consumed]
    head = lin(width, 3, seed=7)(loose[0] if len(loose) == 1 else nl.Add()(loose))
    return nl.Model([x1, x2], [head, values[-1]])


def _torch_forward(torch, model, inputs, tparams):
    """The model's flattened graph in torch: outputs, from torch tensors."""
    vals = list(inputs)
    for li, ins in model._flat_nodes:
        layer = model._flat_layers[li]
        xs = [vals[i] for i in ins]
        k = layer.kind
        if k == "linear":
            W, b = tparams[id(layer)]
            vals.append(xs[0] @ W + b)
        elif k == "relu":
            vals.append(torch.relu(xs[0]))
        elif k == "tanh":
            vals.append(torch.tanh(xs[0]))
        elif k == "sigmoid":
            vals.append(torch.sigmoid(xs[0]))
        elif k == "add":
            vals.append(sum(xs[1:], xs[0]))
        elif k == "subtract":
            vals.append(xs[0] - xs[1])
        elif k == "multiply":
            out = xs[0]
            for t in xs[1:]:
                out = out * t
            vals.append(out)
        elif k == "average":
            vals.append(sum(xs[1:], xs[0]) / len(xs))
        else:
            raise AssertionError(k)
    return [vals[v] for v in model._flat_outputs]


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_match_torch_autograd(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    model = _random_graph(rng)
    X = [rng.standard_normal((5, 4)), rng.standard_normal((5, 4))]
    g = [rng.standard_normal((5, 3)), rng.standard_normal((5, 4))]
    tparams = {}
    for layer in model._flat_layers:
        if layer.kind == "linear":
            tparams[id(layer)] = [torch.tensor(np.array(layer.params[k]), requires_grad=True)
                                  for k in ("W", "b")]
    tin = [torch.tensor(x, requires_grad=True) for x in X]
    touts = _torch_forward(torch, model, tin, tparams)
    outs = model.forward(X)
    for a, b in zip(outs, touts):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-12)
    sum((t * torch.tensor(gk)).sum() for t, gk in zip(touts, g)).backward()
    model.zero_grad()
    gx = model.backward(g)
    for a, t in zip(gx, tin):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-11, atol=1e-12)
    for layer in model._flat_layers:
        if layer.kind == "linear":
            W, b = tparams[id(layer)]
            np.testing.assert_allclose(layer.grads["W"], W.grad.numpy(), rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(layer.grads["b"], b.grad.numpy(), rtol=1e-11, atol=1e-12)
