"""Tests of the losses: SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, NLL.

* float64 finite-difference checks (nl.gradcheck) for every loss and every
  target form;
* values and gradients against the NumPy twins in nnlayers._reference,
  float32 and float64;
* batch averaging, stability at huge logits;
* target validation (clear ValueError before any work, object still works);
* state errors (backward before forward, backward twice).
"""
import warnings

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _reference as ref

DTYPES = [np.float32, np.float64]
N, C = 5, 4

LOSSES = {
    "sce": (nl.SoftmaxCrossEntropy, ref.softmax_cross_entropy),
    "bce": (nl.BinaryCrossEntropy, ref.binary_cross_entropy),
    "mse": (nl.MSE, ref.mse),
    "nll": (nl.NLL, ref.nll),
}


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


def labels(rng, n=N, c=C):
    return rng.integers(0, c, size=n)


def one_hot(lab, c=C):
    t = np.zeros((lab.shape[0], c))
    t[np.arange(lab.shape[0]), lab] = 1.0
    return t


def soft_rows(rng, n=N, c=C):
    p = rng.random((n, c)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def log_probs(rng, n=N, c=C):
    z = rng.standard_normal((n, c))
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def target_for(name, form, rng, n=N, c=C):
    """A valid target for loss `name` in the given form."""
    if form == "labels":
        return labels(rng, n, c)
    if form == "onehot":
        return one_hot(labels(rng, n, c), c)
    if form == "soft":
        return soft_rows(rng, n, c)
    if form == "probs":          # BCE (N, C) in [0, 1], includes the endpoints
        t = rng.random((n, c))
        t[0, 0], t[-1, -1] = 0.0, 1.0
        return t
    if form == "probs1d":        # BCE (N,) when C == 1
        t = rng.random(n)
        t[0] = 1.0
        return t
    if form == "dense":          # MSE
        return rng.standard_normal((n, c))
    raise AssertionError(form)


CASES = [
    ("sce", "labels"), ("sce", "onehot"), ("sce", "soft"),
    ("nll", "labels"), ("nll", "onehot"), ("nll", "soft"),
    ("bce", "probs"), ("bce", "probs1d"),
    ("mse", "dense"),
]


def pred_for(name, rng, n=N, c=C, dtype=np.float64):
    if name == "nll":
        return log_probs(rng, n, c).astype(dtype)
    return (rng.standard_normal((n, c)) * 2).astype(dtype)


def case_shapes(form):
    return (N, 1) if form == "probs1d" else (N, C)


# ---------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,form", CASES)
def test_gradcheck_float64(name, form, rng):
    n, c = case_shapes(form)
    loss = LOSSES[name][0]()
    x = pred_for(name, rng, n, c)
    t = target_for(name, form, rng, n, c)
    x0, t0 = x.copy(), np.array(t, copy=True)
    res = nl.gradcheck(loss, x, target=t)
    assert res.ok
    assert res.max_rel_error <= 1e-6, res
    # inputs are left unchanged
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)


def test_gradcheck_detects_a_wrong_gradient(rng):
    """Sanity check that the harness above can fail: a loss whose backward is
    off by a factor must be rejected."""

    class Doubled:
        def __init__(self):
            self.inner = nl.MSE()

        def forward(self, x, t):
            return self.inner.forward(x, t)

        def backward(self):
            return 2.0 * self.inner.backward()

    x = rng.standard_normal((3, 2))
    t = rng.standard_normal((3, 2))
    res = nl.gradcheck(Doubled(), x, target=t, raise_exception=False)
    assert not res.ok and res.max_rel_error > 0.1


# ---------------------------------------------------------------------------
# against the NumPy reference
# ---------------------------------------------------------------------------

def tolerances(dtype):
    if dtype == np.float64:
        return dict(rtol=1e-12, atol=1e-14)
    return dict(rtol=2e-5, atol=2e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,form", CASES)
def test_matches_reference(name, form, dtype, rng):
    n, c = case_shapes(form)
    cls, twin = LOSSES[name]
    loss = cls()
    x = pred_for(name, rng, n, c, dtype)
    t = target_for(name, form, rng, n, c)
    if form != "labels":
        t = t.astype(dtype)
    value = loss.forward(x, t)
    g = loss.backward()
    rv, rg = twin(x, t)
    assert isinstance(value, float)
    tol = tolerances(dtype)
    assert value == pytest.approx(rv, rel=tol["rtol"] * 10, abs=tol["atol"] * 10)
    assert g.dtype == np.dtype(dtype)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, rg, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_call_equals_forward_and_repeated_use(name, dtype, rng):
    """loss(pred, t) is loss.forward; a loss object is reusable for many
    forward/backward pairs with different batch sizes."""
    cls, twin = LOSSES[name]
    loss = cls()
    form = {"sce": "labels", "nll": "onehot", "bce": "probs", "mse": "dense"}[name]
    for n in (1, 7, 3):
        x = pred_for(name, rng, n, C, dtype)
        t = target_for(name, form, rng, n, C)
        v1 = loss(x, t)
        loss.backward()
        v2 = loss.forward(x, t)
        g = loss.backward()
        rv, rg = twin(x, t)
        assert v1 == v2
        assert v2 == pytest.approx(rv, rel=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(g, rg, **tolerances(dtype))


# ---------------------------------------------------------------------------
# batch averaging
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,form", CASES)
def test_batch_loss_is_mean_of_row_losses(name, form, rng):
    n, c = case_shapes(form)
    loss = LOSSES[name][0]()
    x = pred_for(name, rng, n, c)
    t = target_for(name, form, rng, n, c)
    whole = loss.forward(x, t)
    g_whole = loss.backward()
    rows, grads = [], []
    for i in range(n):
        rows.append(loss.forward(x[i:i + 1], t[i:i + 1]))
        grads.append(loss.backward())
    assert whole == pytest.approx(np.mean(rows), rel=1e-12, abs=1e-15)
    # the gradient of the mean is each 1-row gradient divided by N
    np.testing.assert_allclose(g_whole, np.concatenate(grads) / n, rtol=1e-12, atol=1e-16)


# ---------------------------------------------------------------------------
# stability
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0]] * 3 + [[-1e4, -1e4, -1e4]], dtype=dtype)
    y = np.array([0, 1, 2, 1])
    # per row: logsumexp - z[y]; logsumexp = 1e4 (other terms underflow),
    # last row: lse = -1e4 + log(3)
    per_row = np.array([0.0, 2e4, 1e4, np.log(3.0)])
    loss = nl.SoftmaxCrossEntropy()
    v = loss.forward(z, y)
    g = loss.backward()
    assert np.isfinite(v)
    assert v == pytest.approx(per_row.mean(), rel=1e-6)
    expect = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])
    expect[np.arange(4), y] -= 1
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, expect / 4, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_huge_logits(dtype):
    z = np.array([[1e4, -1e4], [1e4, -1e4]], dtype=dtype)
    y = np.array([[0.0, 0.0], [1.0, 1.0]])
    # softplus(z) - y z: [1e4, 0] for y = 0, [0, 1e4] for y = 1
    loss = nl.BinaryCrossEntropy()
    v = loss.forward(z, y)
    g = loss.backward()
    assert np.isfinite(v)
    assert v == pytest.approx((1e4 + 0 + 0 + 1e4) / 2, rel=1e-6)
    sig = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, (sig - y) / 2, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_huge_logit_one_column(dtype):
    z = np.array([[1e4], [-1e4], [1e4], [-1e4]], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss = nl.BinaryCrossEntropy()
    v = loss.forward(z, y)
    assert v == pytest.approx(2e4 / 4, rel=1e-6)
    g = loss.backward()
    np.testing.assert_allclose(g[:, 0], (np.array([1.0, 0, 1, 0]) - y) / 4, atol=1e-12)


# ---------------------------------------------------------------------------
# target validation
# ---------------------------------------------------------------------------

def _bad_label_targets():
    # (id, target, substrings the message must contain) for N=5, C=4
    ok = [0, 1, 2, 3, 0]
    return [
        ("out_of_range", np.array([0, 1, 4, 3, 0]), ["target", "[0, 4)"]),
        ("far_out_of_range", np.array([0, 1, 2, 2**32, 0]), ["target", "[0, 4)"]),
        ("negative", np.array([0, -1, 2, 3, 0]), ["target", "[0, 4)"]),
        ("non_integral", np.array([0, 1.5, 2, 3, 0]), ["target", "1.5"]),
        ("nan_label", np.array([0, np.nan, 2, 3, 0]), ["target", "nan"]),
        ("inf_label", np.array([0, np.inf, 2, 3, 0]), ["target"]),
        ("too_many", np.array(ok + [1]), ["target", "5"]),
        ("too_few", np.array(ok[:-1]), ["target", "5"]),
        ("dense_wrong_cols", np.zeros((N, C + 1)), ["target", str((N, C))]),
        ("dense_wrong_rows", np.zeros((N + 1, C)), ["target", str((N, C))]),
        ("dense_3d", np.zeros((N, C, 1)), ["target"]),
    ]


BAD_LABELS = _bad_label_targets()


def _check_message(exc, needles):
    msg = str(exc.value)
    for s in needles:
        assert s.lower() in msg.lower(), f"{s!r} not in message {msg!r}"


@pytest.mark.parametrize("name", ["sce", "nll"])
@pytest.mark.parametrize("case", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_bad_labels_fresh_loss(name, case, rng):
    _, bad, needles = case
    cls, twin = LOSSES[name]
    loss = cls()
    x = pred_for(name, rng)
    x0 = x.copy()
    with pytest.raises(ValueError) as exc:
        loss.forward(x, bad)
    _check_message(exc, needles)
    np.testing.assert_array_equal(x, x0)
    # nothing was computed: there is no gradient to hand out
    with pytest.raises(ValueError):
        loss.backward()
    # and the loss still works
    t = labels(rng)
    v = loss.forward(x, t)
    g = loss.backward()
    rv, rg = twin(x, t)
    assert v == pytest.approx(rv, rel=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["sce", "nll"])
@pytest.mark.parametrize("case", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_bad_labels_keep_pending_gradient(name, case, rng):
    """A forward that fails validation must not touch the gradient of the
    previous (successful) forward."""
    _, bad, _ = case
    cls, twin = LOSSES[name]
    loss = cls()
    x = pred_for(name, rng)
    t = labels(rng)
    v = loss.forward(x, t)
    with pytest.raises(ValueError):
        loss.forward(2.0 * x + 1.0, bad)
    g = loss.backward()
    rv, rg = twin(x, t)
    assert v == pytest.approx(rv, rel=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-15)


def test_huge_float_label_is_reported_faithfully(rng):
    """A float label far outside int64 (1e20) must be rejected with a message
    that reports the label (not an overflowed int64), without a NumPy cast
    warning leaking out."""
    loss = nl.SoftmaxCrossEntropy()
    x = pred_for("sce", rng)
    bad = np.array([0, 1, 1e20, 3, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as exc:
            loss.forward(x, bad)
    msg = str(exc.value)
    assert "target" in msg
    assert "-9223372036854775808" not in msg, msg


BCE_BAD = [
    ("above_one", lambda t: t.__setitem__((1, 2), 1.5) or t, ["target", "[0, 1]"]),
    ("negative", lambda t: t.__setitem__((0, 0), -0.1) or t, ["target", "[0, 1]"]),
    ("nan", lambda t: t.__setitem__((2, 1), np.nan) or t, ["target", "[0, 1]"]),
    ("inf", lambda t: t.__setitem__((2, 1), np.inf) or t, ["target", "[0, 1]"]),
]


@pytest.mark.parametrize("case", BCE_BAD, ids=[c[0] for c in BCE_BAD])
def test_bce_targets_outside_unit_interval(case, rng):
    _, make, needles = case
    loss = nl.BinaryCrossEntropy()
    x = pred_for("bce", rng)
    bad = make(target_for("bce", "probs", rng))
    with pytest.raises(ValueError) as exc:
        loss.forward(x, bad)
    _check_message(exc, needles)
    with pytest.raises(ValueError):
        loss.backward()
    # pending gradient of an earlier forward survives a rejected one
    t = target_for("bce", "probs", rng)
    loss.forward(x, t)
    with pytest.raises(ValueError):
        loss.forward(x, bad)
    g = loss.backward()
    np.testing.assert_allclose(g, ref.binary_cross_entropy(x, t)[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,bad_shape", [
    ("bce", (N,)),          # (N,) only allowed when C == 1
    ("bce", (N, C + 1)),
    ("bce", (N + 1, C)),
    ("mse", (N, C + 1)),
    ("mse", (N + 1, C)),
    ("mse", (N,)),
    ("mse", (N, C, 1)),
])
def test_dense_target_wrong_shape(name, bad_shape, rng):
    cls, twin = LOSSES[name]
    loss = cls()
    x = pred_for(name, rng)
    bad = np.full(bad_shape, 0.5)
    with pytest.raises(ValueError) as exc:
        loss.forward(x, bad)
    _check_message(exc, ["target"])
    with pytest.raises(ValueError):
        loss.backward()
    t = target_for(name, "probs" if name == "bce" else "dense", rng)
    v = loss.forward(x, t)
    assert v == pytest.approx(twin(x, t)[0], rel=1e-12)


@pytest.mark.parametrize("name,labels_form", [
    ("sce", False), ("sce", True), ("nll", False), ("nll", True),
    ("bce", False), ("mse", False)])
def test_empty_batch_rejected(name, labels_form):
    """A 0-row batch has no batch mean (1/N with N == 0): like its
    _reference twin (and train_step), the loss must raise ValueError rather
    than return NaN."""
    cls, twin = LOSSES[name]
    pred = np.zeros((0, C))
    t = np.zeros((0,), dtype=np.int64) if labels_form else np.zeros((0, C))
    with pytest.raises(ValueError):
        twin(pred, t)                       # the reference's behaviour
    loss = cls()
    with pytest.raises(ValueError):
        loss.forward(pred, t)
    with pytest.raises(ValueError):
        loss.backward()


# ---------------------------------------------------------------------------
# state errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LOSSES))
def test_backward_before_forward(name):
    loss = LOSSES[name][0]()
    with pytest.raises(ValueError) as exc:
        loss.backward()
    assert "forward" in str(exc.value)


@pytest.mark.parametrize("name", list(LOSSES))
def test_backward_twice(name, rng):
    cls, twin = LOSSES[name]
    loss = cls()
    form = {"sce": "labels", "nll": "labels", "bce": "probs", "mse": "dense"}[name]
    x = pred_for(name, rng)
    t = target_for(name, form, rng)
    loss.forward(x, t)
    g = loss.backward().copy()
    with pytest.raises(ValueError):
        loss.backward()
    # a new forward re-arms backward
    loss.forward(x, t)
    np.testing.assert_array_equal(loss.backward(), g)


# ---------------------------------------------------------------------------
# target forms beyond the basic ones
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_ignores_minus_inf_where_target_is_zero(dtype):
    with np.errstate(divide="ignore"):
        logp = np.log(np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])).astype(dtype)
    for t in (np.array([0, 2]), np.array([[1.0, 0, 0], [0, 0, 1.0]])):
        loss = nl.NLL()
        v = loss.forward(logp, t)
        assert v == pytest.approx((np.log(2) - np.log(0.8)) / 2, rel=1e-6)
        np.testing.assert_array_equal(loss.backward(), ref.nll(logp, t)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sce_unnormalised_rows(dtype, rng):
    """Rows that do not sum to 1: grad (softmax(z) * sum(y) - y) / N."""
    z = rng.standard_normal((4, 5)).astype(dtype)
    t = (rng.random((4, 5)) * 2).astype(dtype)
    loss = nl.SoftmaxCrossEntropy()
    v = loss.forward(z, t)
    rv, rg = ref.softmax_cross_entropy(z, t)
    tol = tolerances(dtype)
    assert v == pytest.approx(rv, rel=tol["rtol"] * 10)
    np.testing.assert_allclose(loss.backward(), rg, **tol)
    if dtype == np.float64:
        assert nl.gradcheck(nl.SoftmaxCrossEntropy(), z, target=t).max_rel_error <= 1e-6


def test_mse_one_column_accepts_flat_target(rng):
    yhat = rng.standard_normal((6, 1))
    y = rng.standard_normal(6)
    loss = nl.MSE()
    v = loss.forward(yhat, y)
    assert v == pytest.approx(0.5 * np.sum((yhat[:, 0] - y) ** 2) / 6, rel=1e-12)
    np.testing.assert_allclose(loss.backward()[:, 0], (yhat[:, 0] - y) / 6, rtol=1e-12)
    assert nl.gradcheck(nl.MSE(), yhat, target=y).max_rel_error <= 1e-6


def test_softmax_xent_float32_exp_is_accurate():
    # float32 softmax cross-entropy uses its own vectorised exp for the
    # shifted logits (csrc/core/loss.c); check it against float64 maths:
    # rows [x, 0] give p0 = e^x / (1 + e^x) for x across [-60, 0].
    x = np.linspace(-60, 0, 50001).astype(np.float32)
    z = np.stack([x, np.zeros_like(x)], axis=1)
    loss = nl.SoftmaxCrossEntropy()
    loss.forward(z, np.ones(len(x), dtype=np.int64))
    p0 = loss.backward()[:, 0].astype(np.float64) * len(x)
    e = np.exp(x.astype(np.float64))
    truth = e / (1 + e)
    rel = np.abs(p0 - truth) / truth
    assert rel.max() < 4 * np.finfo(np.float32).eps


def test_softmax_xent_float32_nan_and_inf_logits():
    loss = nl.SoftmaxCrossEntropy()
    z = np.array([[0.0, np.nan, 1.0], [0.0, -np.inf, 1.0]], dtype=np.float32)
    value = loss.forward(z, np.array([0, 0]))
    g = loss.backward()
    assert np.isnan(value)
    assert np.isnan(g[0]).all()
    # a -inf logit has probability exactly 0; the row stays finite
    assert g[1, 1] == 0.0 and np.isfinite(g[1]).all()
