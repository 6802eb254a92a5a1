"""Tests of the losses on probabilities (from_logits=False), Huber and MAE,
the accuracy threshold, sample weights and the training metrics.

* every new loss against its NumPy twin (float32, float64) and by finite
  differences (float64, away from the kinks of the clip, |d| = delta, d = 0);
* against torch (an optional peer): HuberLoss, L1Loss, BCELoss, NLLLoss on
  the log of normalised probabilities;
* one training step (train_step, fit) against a NumPy step with the twin's
  gradient;
* the metric sums of Model._fit_epoch(metrics=) against the twins, whole and
  split steps;
* per-row weights, (N, 1) class ids, the threshold of accuracy;
* bad arguments: a clear exception and the object unchanged.
"""
import copy
import pickle

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core
from nnlayers import _reference as ref

DTYPES = [np.float32, np.float64]
N, C = 6, 4
EPS = ref.PROB_EPS
DELTA = 0.7


def tol(dtype):
    if dtype == np.float64:
        return dict(rtol=1e-12, atol=1e-14)
    return dict(rtol=3e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# the cases: loss, twin, predictions, targets
# ---------------------------------------------------------------------------

def probs_rows(rng, n=N, c=C):
    """Positive rows, not normalised (the loss normalises them), far from
    the clip: every p / sum(p) in [0.04, 0.9]."""
    return rng.random((n, c)) + 0.3


def probs(rng, n=N, c=C):
    """Probabilities well inside (eps, 1 - eps)."""
    return 0.05 + 0.9 * rng.random((n, c))


def away_from(d, points, margin=0.05):
    """d moved so that no entry is within margin of a point"""
    d = d.copy()
    for p in points:
        near = np.abs(d - p) < margin
        d[near] = p + np.where(d[near] >= p, margin, -margin) * 2
    return d


def regression(rng, kinks, n=N, c=C):
    y = rng.standard_normal((n, c))
    d = away_from(rng.standard_normal((n, c)) * 1.5, kinks)
    return y + d, y


def twin_huber(p, t):
    return ref.huber(p, t, DELTA)


CASES = {
    # name: (make loss, twin, make (pred, target) given rng and form)
    "cce_probs": (lambda: nl.SoftmaxCrossEntropy(from_logits=False),
                  ref.categorical_cross_entropy),
    "bce_probs": (lambda: nl.BinaryCrossEntropy(from_logits=False),
                  ref.binary_cross_entropy_probs),
    "huber": (lambda: nl.Huber(delta=DELTA), twin_huber),
    "mae": (lambda: nl.MAE(), ref.mae),
}

FORMS = [("cce_probs", "labels"), ("cce_probs", "labels_column"), ("cce_probs", "onehot"),
         ("cce_probs", "soft"), ("bce_probs", "probs"), ("bce_probs", "flat"),
         ("huber", "dense"), ("huber", "flat"), ("mae", "dense"), ("mae", "flat")]


def data_for(name, form, rng, n=N):
    """(pred, target) of loss `name` with targets in `form`; "flat" is
    (N,) with one output column."""
    c = 1 if form == "flat" else C
    if name == "cce_probs":
        p = probs_rows(rng, n, c)
        lab = rng.integers(0, c, size=n)
        if form == "labels":
            return p, lab
        if form == "labels_column":
            return p, lab.reshape(n, 1)
        if form == "onehot":
            return p, np.eye(c)[lab]
        t = rng.random((n, c))
        return p, t / t.sum(axis=1, keepdims=True)
    if name == "bce_probs":
        t = rng.random((n, c))
        t[0, 0] = 0.0
        t[-1, -1] = 1.0
        return probs(rng, n, c), (t[:, 0] if form == "flat" else t)
    kinks = [-DELTA, DELTA] if name == "huber" else [0.0]
    p, t = regression(rng, kinks, n, c)
    return p, (t[:, 0] if form == "flat" else t)


# ---------------------------------------------------------------------------
# against the twins, finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,form", FORMS)
def test_matches_twin(name, form, dtype, rng):
    make, twin = CASES[name]
    p, t = data_for(name, form, rng)
    p = p.astype(dtype)
    p0 = p.copy()
    loss = make()
    value = loss.forward(p, t)
    g = loss.backward()
    rv, rg = twin(p, t)
    assert isinstance(value, float)
    assert value == pytest.approx(rv, rel=10 * tol(dtype)["rtol"])
    assert g.dtype == np.dtype(dtype) and g.shape == p.shape
    np.testing.assert_allclose(g, rg, **tol(dtype))
    np.testing.assert_array_equal(p, p0)


@pytest.mark.parametrize("name,form", FORMS)
def test_gradcheck_float64(name, form, rng):
    make, _ = CASES[name]
    p, t = data_for(name, form, rng)
    res = nl.gradcheck(make(), p, target=t)
    assert res.ok and res.max_rel_error <= 1e-6, res


def test_gradcheck_detects_a_wrong_probability_gradient(rng):
    """The check above can fail: the categorical gradient without the
    normalisation's term is refused."""

    class NoNormalisation:
        def __init__(self):
            self.inner = nl.SoftmaxCrossEntropy(from_logits=False)

        def forward(self, p, t):
            self.p, self.t = p, t
            return self.inner.forward(p, t)

        def backward(self):
            self.inner.backward()
            u = self.p / self.p.sum(axis=1, keepdims=True)
            return -self.t / u / self.p.sum(axis=1, keepdims=True) / len(self.p)

    p, t = data_for("cce_probs", "soft", rng)
    res = nl.gradcheck(NoNormalisation(), p, target=t, raise_exception=False)
    assert not res.ok


# ---------------------------------------------------------------------------
# the clip (Keras's epsilon) and the kinks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_probs_clip_value_and_zero_gradient(dtype):
    p = np.array([[0.0, 1.0, 0.5, 2.0, -1.0, 0.25]], dtype=dtype)
    t = np.array([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    loss = nl.BinaryCrossEntropy(from_logits=False)
    value = loss.forward(p, t)
    g = loss.backward()
    # clipped to eps or 1 - eps: -log(eps) each for the first two, -log(1 - eps)
    # for 2.0 (target 1) and -1.0 (target 0)
    expect = (-2 * np.log(EPS) - 2 * np.log1p(-EPS) - np.log(0.5) - np.log(0.75))
    assert value == pytest.approx(expect, rel=1e-6)
    np.testing.assert_array_equal(g[0, [0, 1, 3, 4]], 0)
    np.testing.assert_allclose(g[0, [2, 5]], [(0.5 - 1) / 0.25, 0.25 / (0.25 * 0.75)],
                               rtol=1e-6)
    rv, rg = ref.binary_cross_entropy_probs(p, t)
    assert value == pytest.approx(rv, rel=1e-6)
    np.testing.assert_allclose(g, rg, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_probs_clip_and_normalisation(dtype):
    # row 0: a zero probability where the target is 1 (clipped: -log eps);
    # row 1: not normalised (sums to 4): the same loss as the row / 4
    p = np.array([[0.0, 0.6, 0.4], [0.8, 2.0, 1.2]], dtype=dtype)
    t = np.array([0, 1])
    loss = nl.SoftmaxCrossEntropy(from_logits=False)
    value = loss.forward(p, t)
    g = loss.backward()
    assert value == pytest.approx((-np.log(EPS) - np.log(0.5)) / 2, rel=1e-6)
    # row 0: the only target entry is clipped, so nothing passes: zero gradient
    np.testing.assert_array_equal(g[0], 0)
    # row 1: L = -log(p1 / S): dp = (-1/p1 + 1/S) at p1, 1/S elsewhere, / N
    np.testing.assert_allclose(g[1], np.array([0.25, -0.5 + 0.25, 0.25]) / 2, rtol=1e-6)
    rv, rg = ref.categorical_cross_entropy(p, t)
    assert value == pytest.approx(rv, rel=1e-6)
    np.testing.assert_allclose(g, rg, **tol(dtype))


def test_probability_predictions_are_not_validated():
    """Keras clips instead of refusing: predictions outside [0, 1] give a
    finite loss (only the targets are checked)."""
    loss = nl.BinaryCrossEntropy(from_logits=False)
    assert np.isfinite(loss.forward(np.array([[1.5, -0.5]]), np.array([[1.0, 0.0]])))
    loss = nl.SoftmaxCrossEntropy(from_logits=False)
    assert np.isfinite(loss.forward(np.array([[3.0, -1.0, 0.5]]), np.array([0])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_prediction_gives_nan(dtype):
    for loss in (nl.SoftmaxCrossEntropy(from_logits=False),
                 nl.BinaryCrossEntropy(from_logits=False), nl.Huber(), nl.MAE()):
        p = np.array([[0.2, np.nan, 0.3]], dtype=dtype)
        t = np.array([0]) if loss.kind == "softmax_cross_entropy" else np.zeros((1, 3))
        assert np.isnan(loss.forward(p, t))
        assert np.isnan(loss.backward()).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_subgradients_at_the_kinks(dtype):
    """torch's conventions: L1's gradient at d = 0 is 0; Huber's at
    |d| = delta is +-delta (both branches agree there)."""
    y = np.array([[1.0, -2.0, 0.5, 3.0]])
    d = np.array([[0.0, DELTA, -DELTA, 2.0]])
    p = (y + d).astype(dtype)
    d = p.astype(np.float64) - y      # the difference as the loss sees it
    loss = nl.MAE()
    loss.forward(p, y)
    np.testing.assert_array_equal(loss.backward(), (np.sign(d) / 4).astype(dtype))
    h = nl.Huber(delta=DELTA)
    value = h.forward(p, y)
    g = h.backward()
    np.testing.assert_allclose(g[0], np.clip(d[0], -DELTA, DELTA) / 4, **tol(dtype))
    rv, rg = ref.huber(p, y, DELTA)
    assert value == pytest.approx(rv, rel=1e-6)


# ---------------------------------------------------------------------------
# torch, an optional peer
# ---------------------------------------------------------------------------

def torch_value_grad(fn, p):
    torch = pytest.importorskip("torch")
    x = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    out = fn(torch, x)
    out.backward()
    return out.item(), x.grad.numpy()


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_matches_torch(delta, rng):
    p, t = regression(rng, [-delta, delta])
    v, g = torch_value_grad(
        lambda torch, x: torch.nn.HuberLoss(delta=delta)(x, torch.tensor(t)), p)
    loss = nl.Huber(delta=delta)
    assert loss.forward(p, t) == pytest.approx(v, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), g, rtol=1e-12, atol=1e-15)


def test_mae_matches_torch_with_zero_differences(rng):
    p, t = regression(rng, [0.0])
    t[0, :2] = p[0, :2]          # d = 0: L1's gradient is 0 there
    v, g = torch_value_grad(lambda torch, x: torch.nn.L1Loss()(x, torch.tensor(t)), p)
    loss = nl.MAE()
    assert loss.forward(p, t) == pytest.approx(v, rel=1e-12)
    gm = loss.backward()
    np.testing.assert_allclose(gm, g, rtol=1e-12, atol=1e-15)
    assert gm[0, 0] == 0 and gm[0, 1] == 0


def test_bce_probs_matches_torch(rng):
    """torch's BCELoss averages over every element; nnlayers sums over the
    C outputs: nnlayers = C * torch (clipping inactive inside (eps, 1-eps))."""
    p, t = probs(rng), rng.random((N, C))
    v, g = torch_value_grad(lambda torch, x: torch.nn.BCELoss()(x, torch.tensor(t)), p)
    loss = nl.BinaryCrossEntropy(from_logits=False)
    assert loss.forward(p, t) == pytest.approx(C * v, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), C * g, rtol=1e-10, atol=1e-14)


def test_categorical_probs_matches_torch_nll(rng):
    """NLLLoss on log(p / sum p), the gradient through the normalisation."""
    p = probs_rows(rng)
    y = rng.integers(0, C, size=N)

    def fn(torch, x):
        return torch.nn.NLLLoss()(torch.log(x / x.sum(dim=1, keepdim=True)),
                                  torch.tensor(y))

    v, g = torch_value_grad(fn, p)
    loss = nl.SoftmaxCrossEntropy(from_logits=False)
    assert loss.forward(p, y) == pytest.approx(v, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), g, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# training: one step against NumPy
# ---------------------------------------------------------------------------

TRAIN = {
    # name: (loss, output activation (None, "sigmoid", "softmax"), target kind)
    "cce_probs": (lambda: nl.SoftmaxCrossEntropy(from_logits=False), "softmax", "labels"),
    "cce_probs_rows": (lambda: nl.SoftmaxCrossEntropy(from_logits=False), "softmax", "soft"),
    "bce_probs": (lambda: nl.BinaryCrossEntropy(from_logits=False), "sigmoid", "probs"),
    "huber": (lambda: nl.Huber(delta=DELTA), None, "real"),
    "mae": (lambda: nl.MAE(), None, "real"),
}
TWINS = {"cce_probs": ref.categorical_cross_entropy, "cce_probs_rows": ref.categorical_cross_entropy,
         "bce_probs": ref.binary_cross_entropy_probs, "huber": twin_huber, "mae": ref.mae}
I = 5


def train_data(kind, rng, n):
    X = rng.standard_normal((n, I))
    if kind == "labels":
        return X, rng.integers(0, C, size=n)
    t = rng.random((n, C))
    if kind == "soft":
        return X, t / t.sum(axis=1, keepdims=True)
    if kind == "probs":
        return X, t
    return X, rng.standard_normal((n, C)) * 2


def train_model(act, seed=3):
    layers = [nl.Linear(I, C, dtype=np.float64, seed=seed)]
    if act == "sigmoid":
        layers.append(nl.Sigmoid())
    elif act == "softmax":
        layers.append(nl.Softmax())
    return nl.Sequential(*layers)


def numpy_step(W, b, act, twin, X, y, lr):
    """One SGD step through Linear (+ activation) with the twin's gradient."""
    z = X @ W + b
    if act is None:
        out = z
    else:
        out = ref.activation_forward(act, z) if act == "sigmoid" else ref.softmax_forward(z)
    value, g = twin(out, y)
    if act == "sigmoid":
        g = ref.activation_backward("sigmoid", g, z)
    elif act == "softmax":
        g = ref.softmax_backward(g, out)
    return W - lr * X.T @ g, b - lr * g.sum(axis=0), value


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_train_step_equals_numpy(name, rng):
    make, act, kind = TRAIN[name]
    model = train_model(act)
    lin = model[0]
    W, b = np.array(lin.params["W"]), np.array(lin.params["b"])
    X, y = train_data(kind, rng, 12)
    value = model.train_step(X, y, make(), nl.SGD(model, lr=0.3))
    W1, b1, rv = numpy_step(W, b, act, TWINS[name], X, y, 0.3)
    assert value == pytest.approx(rv, rel=1e-12)
    np.testing.assert_allclose(lin.params["W"], W1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.params["b"], b1, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_fit_equals_numpy_loop(name, rng):
    """Three batches (the last partial), no shuffling: the same steps."""
    make, act, kind = TRAIN[name]
    model = train_model(act)
    lin = model[0]
    W, b = np.array(lin.params["W"]), np.array(lin.params["b"])
    X, y = train_data(kind, rng, 20)
    hist = model.fit(X, y, loss=make(), optimizer=nl.SGD(model, lr=0.2), epochs=1,
                     batch_size=8, shuffle=False, verbose=0)
    total = 0.0
    for s in range(0, 20, 8):
        W, b, v = numpy_step(W, b, act, TWINS[name], X[s:s + 8], y[s:s + 8], 0.2)
        total += v * len(X[s:s + 8])
    np.testing.assert_allclose(lin.params["W"], W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.params["b"], b, rtol=1e-12, atol=1e-14)
    assert hist.history["loss"][0] == pytest.approx(total / 20, rel=1e-12)


def test_huber_delta_reaches_the_training_step(rng):
    """Two deltas, two different steps (the engine reads each loss's delta)."""
    X, y = train_data("real", rng, 10)
    out = []
    for delta in (0.1, 3.0):
        model = train_model(None)
        model.train_step(X, y, nl.Huber(delta=delta), nl.SGD(model, lr=0.5))
        W1, _, _ = numpy_step(*[np.array(train_model(None)[0].params[k]) for k in "Wb"],
                              None, lambda p, t, d=delta: ref.huber(p, t, d), X, y, 0.5)
        np.testing.assert_allclose(model[0].params["W"], W1, rtol=1e-12, atol=1e-14)
        out.append(np.array(model[0].params["W"]))
    assert not np.allclose(out[0], out[1])


def test_two_outputs_two_new_losses(rng):
    """A graph with a Huber head and a probability head: the total is the
    weighted sum, each output gets its own loss's argument."""
    x = nl.Input(I)
    h = nl.Linear(I, C, dtype=np.float64, seed=1)
    a = h(x)
    out2 = nl.Softmax()(nl.Linear(C, 3, dtype=np.float64, seed=2)(a))
    model = nl.Model(inputs=x, outputs=[a, out2])
    X = rng.standard_normal((9, I))
    y1 = rng.standard_normal((9, C))
    y2 = rng.integers(0, 3, size=9)
    losses = [nl.Huber(delta=0.4), nl.SoftmaxCrossEntropy(from_logits=False)]
    p1, p2 = model.predict(X)
    expect = 0.5 * ref.huber(p1, y1, 0.4)[0] + 2.0 * ref.categorical_cross_entropy(p2, y2)[0]
    res = model._fit_epoch(X, [y1, y2], losses, nl.SGD(model, lr=1e-300), 9,
                           loss_weights=[0.5, 2.0])
    assert res[0] / 9 == pytest.approx(expect, rel=1e-12)
    assert res[3] == [pytest.approx(9 * ref.huber(p1, y1, 0.4)[0], rel=1e-12),
                      pytest.approx(9 * ref.categorical_cross_entropy(p2, y2)[0], rel=1e-12)]


# ---------------------------------------------------------------------------
# training metrics (Model._fit_epoch(metrics=))
# ---------------------------------------------------------------------------

ALL_METRICS = ("mse", "mae", "binary_accuracy", "top_k_categorical_accuracy")


def frozen_fit(model, X, y, loss, metrics, batch):
    """One epoch with a learning rate too small to change any parameter:
    the metrics of the predictions model.predict(X) gives."""
    return model._fit_epoch(X, y, loss, nl.SGD(model, lr=1e-300), batch, metrics=metrics)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["logits_labels", "probs_rows", "bce_probs", "huber", "wide_labels"])
def test_fit_metric_sums_equal_twins(case, dtype, rng):
    c = 8 if case == "wide_labels" else C
    n = 23
    X = rng.standard_normal((n, I)).astype(dtype)
    layers = [nl.Linear(I, c, dtype=dtype, seed=4)]
    if case == "logits_labels" or case == "wide_labels":
        loss, y = nl.SoftmaxCrossEntropy(), rng.integers(0, c, size=n)
    elif case == "probs_rows":
        layers.append(nl.Softmax())
        t = rng.random((n, c))
        loss, y = nl.SoftmaxCrossEntropy(from_logits=False), t / t.sum(1, keepdims=True)
    elif case == "bce_probs":
        layers.append(nl.Sigmoid())
        loss, y = nl.BinaryCrossEntropy(from_logits=False), (rng.random((n, c)) > 0.5) * 1.0
    else:
        loss, y = nl.Huber(), rng.standard_normal((n, c))
    model = nl.Sequential(*layers)
    pred = model.predict(X)
    res = frozen_fit(model, X, y, loss, [ALL_METRICS], 5)
    assert len(res) == 7 and res[5] is None
    sums = res[6][0]
    assert set(sums) == set(ALL_METRICS)
    for name in ALL_METRICS:
        want = ref.metric_sum(name, pred, y, threshold=loss.threshold)
        assert sums[name] == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12,
                                           abs=1e-9), name
        # the kernel alone (Loss._metric) agrees
        assert loss._metric(name, pred, y) == pytest.approx(sums[name], rel=1e-6, abs=1e-9)
    # the parameters did not move
    np.testing.assert_array_equal(model.predict(X), pred)


def test_fit_metrics_per_output_and_subsets(rng):
    x = nl.Input(I)
    a = nl.Linear(I, C, dtype=np.float64, seed=1)(x)
    b = nl.Sigmoid()(nl.Linear(I, 1, dtype=np.float64, seed=2)(x))
    model = nl.Model(inputs=x, outputs=[a, b])
    X = rng.standard_normal((14, I))
    y = [rng.integers(0, C, size=14), (rng.random(14) > 0.5) * 1.0]
    losses = [nl.SoftmaxCrossEntropy(), nl.BinaryCrossEntropy(from_logits=False)]
    pa, pb = model.predict(X)
    res = frozen_fit(model, X, y, losses, [("top_k_categorical_accuracy",), ("binary_accuracy", "mse")], 4)
    assert res[6][0] == {"top_k_categorical_accuracy": pytest.approx(14.0)}
    assert set(res[6][1]) == {"binary_accuracy", "mse"}
    assert res[6][1]["binary_accuracy"] == pytest.approx(
        ref.metric_sum("binary_accuracy", pb, y[1], threshold=0.5), rel=1e-12)
    assert res[6][1]["mse"] == pytest.approx(ref.metric_sum("mse", pb, y[1]), rel=1e-12)
    # the accuracy of a single probability output uses 0.5
    assert res[4][1] == round(ref.accuracy(pb, y[1], threshold=0.5) * 14)
    # None for an output: no metrics there; without metrics=, five items
    res = frozen_fit(model, X, y, losses, [None, ("mae",)], 4)
    assert res[6] == [{}, {"mae": pytest.approx(ref.metric_sum("mae", pb, y[1]), rel=1e-12)}]
    assert model._fit_epoch(X, y, losses, nl.SGD(model, lr=1e-300), 4)[6] is None


@pytest.fixture
def threads():
    old_threads, old_mode = nl.get_num_threads(), _core._split_mode(-1)
    _core._split_mode(old_mode)
    yield nl.set_num_threads
    nl.set_num_threads(old_threads)
    _core._split_mode(old_mode)


@pytest.mark.parametrize("loss_name", ["huber", "mae", "cce_probs", "bce_probs"])
def test_split_step_metrics_and_losses_equal_whole(threads, loss_name, rng):
    """The split step adds each part's metric sums; with the new losses the
    split and the whole step train alike."""
    threads(2)
    make, act, kind = TRAIN[loss_name]
    X, y = train_data(kind, rng, 33)
    out = {}
    for mode in (0, 1):
        old = _core._split_mode(mode)
        try:
            model = train_model(act)
            before = _core._split_steps()
            res = model._fit_epoch(X, y, make(), nl.SGD(model, lr=0.1), 11, metrics=[ALL_METRICS])
            out[mode] = (res, np.array(model[0].params["W"]), _core._split_steps() - before)
        finally:
            _core._split_mode(old)
    assert out[0][2] == 0
    if _core._pool_info()["installed"]:
        assert out[1][2] == 3
    (r0, W0, _), (r1, W1, _) = out[0], out[1]
    assert r1[0] == pytest.approx(r0[0], rel=1e-12)
    assert r1[4] == r0[4]
    for name in ALL_METRICS:
        assert r1[6][0][name] == pytest.approx(r0[6][0][name], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(W1, W0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", [0, 1])
def test_training_with_new_losses_and_metrics_allocates_nothing(threads, mode, rng):
    """Steady state: train_step and _fit_epoch with metrics, whole and split
    steps, make no allocation in the C core."""
    threads(2)
    old = _core._split_mode(mode)
    try:
        for name in ("huber", "cce_probs"):
            make, act, kind = TRAIN[name]
            model = train_model(act)
            X, y = train_data(kind, rng, 32)
            loss, opt = make(), nl.SGD(model, lr=0.01)
            model.train_step(X, y, loss, opt)
            model._fit_epoch(X, y, loss, opt, 8, metrics=[ALL_METRICS])
            before = _core.alloc_count()
            for _ in range(5):
                model.train_step(X, y, loss, opt)
                model._fit_epoch(X, y, loss, opt, 8, metrics=[ALL_METRICS])
            assert _core.alloc_count() == before
    finally:
        _core._split_mode(old)


@pytest.mark.parametrize("dtype", DTYPES)
def test_metric_kernels_nan_ties_and_weights(dtype):
    loss = nl.SoftmaxCrossEntropy()
    pred = np.array([[0.1, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5],    # label 0 below 6 others
                     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2],    # label 0 tied with 5 others
                     [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                     [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], dtype=dtype)
    y = np.array([0, 0, 1, 2])
    rows = ref.metric_rows("top_k_categorical_accuracy", pred, y)
    np.testing.assert_array_equal(rows, [0, 1, 0, 1])
    assert loss._metric("top_k_categorical_accuracy", pred, y) == 2
    w = np.array([1.0, 2.0, 5.0, 0.5])
    assert loss._metric("top_k_categorical_accuracy", pred, y, sample_weight=w) == 2.5
    # C <= k: always right, unless NaN
    small = np.array([[0.0, 1.0, 2.0], [np.nan, 0, 0]], dtype=dtype)
    assert loss._metric("top_k_categorical_accuracy", small, np.array([0, 0])) == 1
    # binary accuracy: a NaN entry is never right
    b = nl.BinaryCrossEntropy(from_logits=False)
    p = np.array([[0.7, np.nan], [0.2, 0.6]], dtype=dtype)
    t = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert b._metric("binary_accuracy", p, t) == pytest.approx(0.5 + 0.5)
    assert ref.metric_sum("binary_accuracy", p, t, threshold=0.5) == pytest.approx(1.0)
    for name in ("mse", "mae"):
        q = np.array([[0.5, 1.0], [2.0, 0.0]], dtype=dtype)
        assert b._metric(name, q, t, sample_weight=[2.0, 1.0]) == pytest.approx(
            ref.metric_sum(name, q, t, sample_weight=[2.0, 1.0]), rel=1e-6)


def test_metric_mse_is_sklearn_mean_squared_error(rng):
    """sum / N of the mse metric is sklearn's mean_squared_error, which is
    2 * nl.MSE / C."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error
    p, t = rng.standard_normal((N, C)), rng.standard_normal((N, C))
    mse = nl.MSE()
    assert mse._metric("mse", p, t) / N == pytest.approx(mean_squared_error(t, p), rel=1e-12)
    assert 2 * mse.forward(p, t) / C == pytest.approx(mean_squared_error(t, p), rel=1e-12)
    assert mse._metric("mae", p, t) / N == pytest.approx(mean_absolute_error(t, p), rel=1e-12)
    assert nl.MAE().forward(p, t) == pytest.approx(mean_absolute_error(t, p), rel=1e-12)


# ---------------------------------------------------------------------------
# accuracy threshold
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_accuracy_threshold_follows_from_logits(dtype):
    pred = np.array([[0.3], [0.7], [-0.2], [np.nan]], dtype=dtype)
    y = np.array([0.0, 1.0, 0.0, 0.0])
    probs_loss = nl.BinaryCrossEntropy(from_logits=False)
    logits_loss = nl.BinaryCrossEntropy()
    assert probs_loss.threshold == 0.5 and logits_loss.threshold == 0.0
    # probabilities: 0.3 -> 0 (right), 0.7 -> 1 (right), -0.2 -> 0 (right), NaN never
    assert probs_loss._correct(pred, y) == 3
    assert ref.accuracy(pred, y, threshold=0.5) == 3 / 4
    # logits: 0.3 -> 1 (wrong), 0.7 -> 1, -0.2 -> 0
    assert logits_loss._correct(pred, y) == 2
    assert ref.accuracy(pred, y) == 2 / 4


def test_evaluate_accuracy_of_a_probability_output(rng):
    model = nl.Sequential(nl.Linear(I, 1, dtype=np.float64, seed=0), nl.Sigmoid())
    X = rng.standard_normal((30, I))
    y = (rng.random(30) > 0.5) * 1.0
    p = model.predict(X)
    out = model.evaluate(X, y, nl.BinaryCrossEntropy(from_logits=False))
    assert out["accuracy"] == ref.accuracy(p, y, threshold=0.5)
    assert out["loss"] == pytest.approx(ref.binary_cross_entropy_probs(p, y)[0], rel=1e-12)


# ---------------------------------------------------------------------------
# sample weights, for every loss
# ---------------------------------------------------------------------------

EVERY = {
    "sce": (nl.SoftmaxCrossEntropy, "labels"),
    "cce_probs": (lambda: nl.SoftmaxCrossEntropy(from_logits=False), "labels"),
    "nll": (nl.NLL, "labels"),
    "bce": (nl.BinaryCrossEntropy, "probs"),
    "bce_probs": (lambda: nl.BinaryCrossEntropy(from_logits=False), "probs"),
    "mse": (nl.MSE, "real"),
    "huber": (lambda: nl.Huber(delta=DELTA), "real"),
    "mae": (nl.MAE, "real"),
}


def every_data(name, rng, n=N):
    if name in ("cce_probs", "bce_probs"):
        p = probs(rng, n)
    elif name == "nll":
        z = rng.standard_normal((n, C))
        p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    else:
        p = rng.standard_normal((n, C)) * 2
    _, kind = EVERY[name]
    if kind == "labels":
        return p, rng.integers(0, C, size=n)
    if kind == "probs":
        return p, rng.random((n, C))
    return p, rng.standard_normal((n, C))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(EVERY))
def test_sample_weights(name, dtype, rng):
    make, _ = EVERY[name]
    p, t = every_data(name, rng)
    p = p.astype(dtype)
    loss = make()
    v = loss.forward(p, t)
    g = loss.backward()
    # all-ones weights: exactly no weights
    assert loss.forward(p, t, sample_weight=np.ones(N)) == v
    np.testing.assert_array_equal(loss.backward(), g)
    # a weight of 2 on row 1 counts it twice: the same sums (loss * rows) as
    # the batch with row 1 repeated
    w = np.ones(N)
    w[1] = 2.0
    vw = loss.forward(p, t, sample_weight=w)
    gw = loss.backward()
    rows = np.r_[np.arange(N), 1]
    vd = loss.forward(p[rows], t[rows])
    gd = loss.backward()
    assert vw * N == pytest.approx(vd * (N + 1), rel=10 * tol(dtype)["rtol"])
    gd_summed = gd[:N].copy()
    gd_summed[1] += gd[N]
    np.testing.assert_allclose(gw * N, gd_summed * (N + 1), rtol=tol(dtype)["rtol"] * 10,
                               atol=tol(dtype)["atol"] * 10)
    # a weight of 0 drops the row (its gradient is 0)
    w0 = np.ones(N)
    w0[2] = 0.0
    loss.forward(p, t, sample_weight=w0)
    assert not loss.backward()[2].any()


@pytest.mark.parametrize("bad,match", [
    (np.ones(N - 1), r"\(6,\)"),
    (np.ones((N, 1)), r"\(6,\)"),
    (np.r_[np.ones(N - 1), -1.0], ">= 0"),
    (np.r_[np.ones(N - 1), np.nan], "finite"),
    (np.r_[np.ones(N - 1), np.inf], "finite"),
])
def test_bad_sample_weights(bad, match, rng):
    loss = nl.Huber(delta=DELTA)
    p, t = every_data("huber", rng)
    v = loss.forward(p, t)
    with pytest.raises(ValueError, match=match) as exc:
        loss.forward(p + 1, t, sample_weight=bad)
    assert "sample_weight" in str(exc.value)
    # the pending gradient of the good forward is still there
    np.testing.assert_allclose(loss.backward(), twin_huber(p, t)[1], rtol=1e-12)
    assert loss.forward(p, t) == v
    with pytest.raises(TypeError, match="sample_weight"):
        loss.forward(p, t, sample_weight=np.array(["a"] * N))


# ---------------------------------------------------------------------------
# (N, 1) class ids
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,pred_of", [
    (nl.SoftmaxCrossEntropy, lambda rng: rng.standard_normal((N, C))),
    (lambda: nl.SoftmaxCrossEntropy(from_logits=False), lambda rng: probs(rng)),
    (nl.NLL, lambda rng: np.log(probs(rng) / probs(rng).sum(1, keepdims=True))),
])
def test_column_labels_like_flat_labels(make, pred_of, rng):
    p = pred_of(rng)
    y = rng.integers(0, C, size=N)
    loss = make()
    v = loss.forward(p, y)
    g = loss.backward()
    assert loss.forward(p, y.reshape(N, 1)) == v
    np.testing.assert_array_equal(loss.backward(), g)
    assert loss.forward(p, y.reshape(N, 1).astype(np.float64)) == v
    assert loss._correct(p, y.reshape(N, 1)) == loss._correct(p, y)
    bad = y.reshape(N, 1).copy()
    bad[3, 0] = C
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss.forward(p, bad)
    with pytest.raises(ValueError, match=r"\(N, 1\)"):
        loss.forward(p, np.zeros((N, 2)))


def test_column_labels_in_training(rng):
    model = nl.Sequential(nl.Linear(I, C, dtype=np.float64, seed=0))
    X = rng.standard_normal((10, I))
    y = rng.integers(0, C, size=10)
    a = model.train_step(X, y.reshape(10, 1), nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=0.1))
    W = np.array(model[0].params["W"])
    model2 = nl.Sequential(nl.Linear(I, C, dtype=np.float64, seed=0))
    b = model2.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(model2, lr=0.1))
    assert a == b
    np.testing.assert_array_equal(W, model2[0].params["W"])


# ---------------------------------------------------------------------------
# the loss objects: options, repr, pickling, config, names; bad arguments
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss,text,config,classify,from_logits", [
    (nl.SoftmaxCrossEntropy(), "SoftmaxCrossEntropy(from_logits=True)", {"from_logits": True}, True, True),
    (nl.SoftmaxCrossEntropy(from_logits=False), "SoftmaxCrossEntropy(from_logits=False)",
     {"from_logits": False}, True, False),
    (nl.BinaryCrossEntropy(False), "BinaryCrossEntropy(from_logits=False)", {"from_logits": False},
     True, False),
    (nl.Huber(delta=0.25), "Huber(delta=0.25)", {"delta": 0.25}, False, None),
    (nl.Huber(), "Huber(delta=1.0)", {"delta": 1.0}, False, None),
    (nl.MAE(), "MAE()", {}, False, None),
    (nl.MSE(), "MSE()", {}, False, None),
    (nl.NLL(), "NLL()", {}, True, None),
])
def test_loss_object(loss, text, config, classify, from_logits, rng):
    assert repr(loss) == text
    assert loss.get_config() == config
    assert loss.is_classification is classify
    assert loss.from_logits is from_logits
    for other in (pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss),
                  type(loss).from_config(loss.get_config())):
        assert type(other) is type(loss) and repr(other) == text
        assert other.threshold == loss.threshold
        p = probs(rng)
        t = rng.integers(0, C, size=N) if loss.kind in ("softmax_cross_entropy", "nll") \
            else rng.random((N, C))
        assert other.forward(p, t) == loss.forward(p, t)


def test_loss_from_name():
    for name, cls in [("huber", nl.Huber), ("Huber", nl.Huber), ("mae", nl.MAE),
                      ("MAE", nl.MAE), ("mse", nl.MSE), ("SoftmaxCrossEntropy", nl.SoftmaxCrossEntropy)]:
        assert type(nl.losses.loss_from_name(name)) is cls
    assert nl.losses.loss_from_name("huber").delta == 1.0
    with pytest.raises(ValueError, match="huber"):
        nl.losses.loss_from_name("hubber")


@pytest.mark.parametrize("delta,exc", [(0, ValueError), (-1.0, ValueError), (np.nan, ValueError),
                                       (np.inf, ValueError), ("1", TypeError), (None, TypeError)])
def test_bad_delta(delta, exc, rng):
    with pytest.raises(exc, match="delta"):
        nl.Huber(delta=delta) if delta is not None else nl.Huber(delta=[1])
    # a failed re-initialisation leaves a loss as it was, pending gradient too
    h = nl.Huber(delta=0.5)
    p, t = every_data("huber", rng)
    v = h.forward(p, t)
    with pytest.raises(exc, match="delta"):
        h.__init__(delta=delta if delta is not None else [1])
    assert h.delta == 0.5 and repr(h) == "Huber(delta=0.5)"
    np.testing.assert_allclose(h.backward(), ref.huber(p, t, 0.5)[1], rtol=1e-12)
    assert h.forward(p, t) == v


def test_options_for_other_losses_are_refused():
    with pytest.raises(ValueError, match="from_logits"):
        _core.Loss("mse", from_logits=False)
    with pytest.raises(ValueError, match="from_logits"):
        _core.Loss("huber", from_logits=False)
    with pytest.raises(ValueError, match="delta"):
        _core.Loss("mae", delta=0.5)
    with pytest.raises(ValueError, match="unknown loss"):
        _core.Loss("hinge")
    loss = _core.Loss("huber", delta=2.0)
    assert loss.delta == 2.0 and loss.kind == "huber"


@pytest.mark.parametrize("name", ["bce_probs", "huber", "mae"])
def test_bad_dense_targets(name, rng):
    make, twin = CASES[name]
    loss = make()
    p, t = data_for(name, "dense" if name != "bce_probs" else "probs", rng)
    v = loss.forward(p, t)
    bads = [np.zeros((N, C + 1)), np.zeros(N), np.zeros((N, C, 1))]
    if name == "bce_probs":
        above = t.copy()
        above[2, 1] = 1.5
        nan = t.copy()
        nan[0, 0] = np.nan
        bads += [above, nan]
    for bad in bads:
        with pytest.raises(ValueError, match="target"):
            loss.forward(p, bad)
    np.testing.assert_allclose(loss.backward(), twin(p, t)[1], rtol=1e-12)
    assert loss.forward(p, t) == v


def test_bad_metrics_argument(rng):
    model = nl.Sequential(nl.Linear(I, C, dtype=np.float64, seed=0))
    X, y = rng.standard_normal((8, I)), rng.integers(0, C, size=8)
    opt = nl.SGD(model, lr=0.1)
    W = np.array(model[0].params["W"])
    for bad, exc in [([("accuracy",)], ValueError), (("mse",), TypeError),
                     ([("mse",), ("mae",)], ValueError), (["mse"], TypeError),
                     ([(3,)], TypeError), ("mse", ValueError)]:
        with pytest.raises(exc, match="metric"):
            model._fit_epoch(X, y, nl.SoftmaxCrossEntropy(), opt, 4, metrics=bad)
    np.testing.assert_array_equal(model[0].params["W"], W)   # nothing trained
    assert set(model._fit_epoch(X, y, nl.SoftmaxCrossEntropy(), opt, 4,
                                metrics=[("mse",)])[6][0]) == {"mse"}
