"""Tests of Sequential.fit / predict / evaluate / train_step.

Expected numbers come from replaying the same batches by hand (train_step
or forward/loss/backward/SGD on a deep copy) or from nnlayers._reference,
never from the method under test.
"""
import _thread
import copy
import re
import signal
import threading
import time

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _reference as ref


def mlp(sizes=(2, 16, 3), dtype=np.float64, seed=0, act=nl.Tanh):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nl.Linear(a, b, dtype=dtype, seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(act())
    return nl.Sequential(*layers)


def blobs(n=300, seed=0, dtype=np.float64):
    """Three well separated Gaussian blobs in 2-D."""
    rng = np.random.default_rng(seed)
    centers = np.array([[4.0, 0.0], [-4.0, 3.0], [0.0, -5.0]])
    y = rng.integers(0, 3, size=n)
    X = centers[y] + 0.7 * rng.standard_normal((n, 2))
    return X.astype(dtype), y


def params_of(model):
    return {k: np.array(v, copy=True) for k, v in model.parameters().items()}


def all_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a) and set(a) == set(b)


def all_finite(model):
    return all(np.all(np.isfinite(v)) for v in model.parameters().values())


# ---------------------------------------------------------------------------
# History and learning
# ---------------------------------------------------------------------------

def test_fit_learns_separable_blobs_and_records_history():
    X, y = blobs(300, seed=1)
    Xv, yv = blobs(90, seed=2)
    model = mlp(seed=3)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, 0.1, momentum=0.9)
    hist = model.fit(X, y, loss=loss, optimizer=opt, epochs=8, batch_size=16,
                     seed=0, validation_data=(Xv, yv), verbose=0)
    assert isinstance(hist, nl.History)
    h = hist.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 8 for v in h.values())
    assert list(hist.epoch) == list(range(8))
    assert all(np.isfinite(v) for vals in h.values() for v in vals)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > 0.9
    assert h["val_accuracy"][-1] > 0.9
    # the last validation entries describe the final model
    pred = model.predict(Xv)
    want_loss, _ = ref.softmax_cross_entropy(pred, yv)
    assert h["val_loss"][-1] == pytest.approx(want_loss, rel=1e-10)
    assert h["val_accuracy"][-1] == pytest.approx(np.mean(np.argmax(pred, 1) == yv))
    assert np.mean(np.argmax(model.predict(X), 1) == y) > 0.9


def test_fit_mse_has_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    Y = X @ rng.standard_normal((3, 2)) + 0.5
    Xv = rng.standard_normal((16, 3))
    Yv = Xv @ rng.standard_normal((3, 2))
    model = mlp((3, 8, 2), seed=4)
    hist = model.fit(X, Y, loss=nl.MSE(), optimizer=nl.SGD(model, 0.05), epochs=5,
                     batch_size=8, seed=1, validation_data=(Xv, Yv), verbose=0)
    assert set(hist.history) == {"loss", "val_loss"}
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert "accuracy" not in model.evaluate(X, Y, nl.MSE())


def test_fit_zero_epochs_changes_nothing():
    X, y = blobs(20)
    model = mlp()
    before = params_of(model)
    hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                     epochs=0, verbose=0)
    assert hist.history == {} and list(hist.epoch) == []
    assert all_equal(params_of(model), before)


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                     ("4", TypeError), (None, TypeError)])
def test_bad_batch_size(bad, exc):
    X, y = blobs(10)
    model = mlp()
    before = params_of(model)
    with pytest.raises(exc) as e:
        model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                  batch_size=bad, verbose=0)
    assert "batch_size" in str(e.value)
    assert all_equal(params_of(model), before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_batch_fit_equals_one_train_step_bitwise(dtype):
    X, y = blobs(10, seed=5, dtype=dtype)
    model = mlp(dtype=dtype, seed=6)
    hand = copy.deepcopy(model)
    hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                     epochs=1, batch_size=10, shuffle=False, verbose=0)
    value = hand.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(hand, 0.1))
    assert all_equal(params_of(model), params_of(hand))
    assert hist.history["loss"][0] == pytest.approx(value, rel=1e-6 if dtype == np.float32 else 1e-14)


def test_last_partial_batch_is_used_and_weighted():
    """n=10, batch_size=4, no shuffle: batches of 4, 4 and 2 rows. The model
    must equal three hand train_steps, and the epoch's loss/accuracy must be
    the row-weighted means over all 10 rows."""
    X, y = blobs(10, seed=7)
    model = mlp(seed=8)
    hand = copy.deepcopy(model)
    kw = dict(momentum=0.9, weight_decay=0.01)
    hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.2, **kw),
                     epochs=2, batch_size=4, shuffle=False, verbose=0)
    hopt, hloss = nl.SGD(hand, 0.2, **kw), nl.SoftmaxCrossEntropy()
    for epoch in range(2):
        total, correct, seen = 0.0, 0, 0
        for s in range(0, 10, 4):
            xb, yb = X[s:s + 4], y[s:s + 4]
            correct += int(np.sum(np.argmax(hand.predict(xb), 1) == yb))
            total += hand.train_step(xb, yb, hloss, hopt) * len(yb)
            seen += len(yb)
        assert seen == 10
        assert hist.history["loss"][epoch] == pytest.approx(total / 10, rel=1e-12)
        assert hist.history["accuracy"][epoch] == pytest.approx(correct / 10)
    for k, v in params_of(model).items():
        np.testing.assert_allclose(v, hand.parameters()[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_shuffle_uses_every_row_once_per_epoch():
    """With shuffling, one epoch of batch_size=n is one step on all rows:
    the mean gradient does not depend on the order."""
    X, y = blobs(12, seed=9)
    model = mlp(seed=10)
    hand = copy.deepcopy(model)
    model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
              epochs=1, batch_size=12, shuffle=True, seed=3, verbose=0)
    hand.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(hand, 0.1))
    for k, v in params_of(model).items():
        np.testing.assert_allclose(v, hand.parameters()[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ---------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_is_bitwise_reproducible(dtype):
    X, y = blobs(200, seed=11, dtype=dtype)

    def run(fit_seed):
        model = mlp((2, 32, 32, 3), dtype=dtype, seed=12)
        hist = model.fit(X, y, loss=nl.SoftmaxCrossEntropy(),
                         optimizer=nl.SGD(model, 0.05, momentum=0.9), epochs=3,
                         batch_size=16, shuffle=True, seed=fit_seed, verbose=0)
        return params_of(model), hist.history

    p1, h1 = run(123)
    p2, h2 = run(123)
    p3, _ = run(124)
    assert all_equal(p1, p2)
    assert h1 == h2
    assert not all_equal(p1, p3)


# ---------------------------------------------------------------------------
# verbosity
# ---------------------------------------------------------------------------

def _fit_small(verbose, epochs=3):
    X, y = blobs(40, seed=13)
    model = mlp(seed=14)
    return model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                     epochs=epochs, batch_size=8, seed=0, verbose=verbose)


def test_verbose_0_is_silent(capsys):
    _fit_small(0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_2_prints_one_line_per_epoch(capsys):
    hist = _fit_small(2, epochs=3)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3, out
    for i, line in enumerate(lines):
        assert line.startswith(f"Epoch {i + 1}/3"), line
        assert "loss" in line
    assert len(hist.history["loss"]) == 3


def test_verbose_1_progress_bar_runs(capsys):
    hist = _fit_small(1, epochs=2)
    out, err = capsys.readouterr()
    assert len(hist.history["loss"]) == 2
    assert "Epoch 1/2" in out + err


def test_bad_verbose():
    with pytest.raises(ValueError):
        _fit_small(3)


# ---------------------------------------------------------------------------
# non-finite loss
# ---------------------------------------------------------------------------

def _parse_epoch_batch(msg):
    ep = re.search(r"epoch\s+(\d+)", msg, re.IGNORECASE)
    ba = re.search(r"batch\s+(\d+)", msg, re.IGNORECASE)
    assert ep and ba, f"message does not name epoch and batch: {msg!r}"
    return int(ep.group(1)), int(ba.group(1))


def test_overflowing_target_stops_with_error_and_skips_that_batch():
    X, _ = blobs(10, seed=15)
    T = np.zeros((10, 3))
    T[6, 1] = 1e200                       # in the second batch of 4 (rows 4..7)
    model = mlp(seed=16)
    hand = copy.deepcopy(model)
    loss = nl.MSE()
    with pytest.raises(nl.NonFiniteLossError) as exc:
        model.fit(X, T, loss=loss, optimizer=nl.SGD(model, 0.1), epochs=3, batch_size=4,
                  shuffle=False, verbose=0)
    assert isinstance(exc.value, nl.NNLayersError)
    epoch, batch = _parse_epoch_batch(str(exc.value))
    assert epoch == 1
    assert batch in (1, 2)                 # second batch, 0- or 1-based
    assert all_finite(model)
    # exactly the first batch was applied
    hand.train_step(X[:4], T[:4], nl.MSE(), nl.SGD(hand, 0.1))
    for k, v in params_of(model).items():
        np.testing.assert_allclose(v, hand.parameters()[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # the model still works
    Xc, yc = blobs(10, seed=17)
    loss = nl.SoftmaxCrossEntropy()
    assert np.isfinite(model.train_step(Xc, yc, loss, nl.SGD(model, 0.1)))
    assert np.all(np.isfinite(model.predict(Xc)))
    model.fit(Xc, yc, loss=loss, optimizer=nl.SGD(model, 0.1), epochs=1, verbose=0)
    assert all_finite(model)


def test_diverging_lr_stops_at_the_right_epoch_and_batch():
    """Linear(1, 1) on x = 10, y = 0 with MSE and lr = 10: w is multiplied by
    (1 - lr x^2 / 1) each step, so the loss overflows to inf after a few dozen
    steps. The step is found with the NumPy reference."""
    n, bs, lr = 8, 4, 10.0
    X = np.full((n, 1), 10.0)
    Y = np.zeros((n, 1))
    layer = nl.Linear(1, 1, bias=False, dtype=np.float64, seed=0)
    layer.params["W"] = np.array([[0.5]])
    model = nl.Sequential(layer)

    # reference run
    w, step = np.array([[0.5]]), 0
    expect = None
    for epoch in range(200):
        for b, s in enumerate(range(0, n, bs)):
            xb, yb = X[s:s + bs], Y[s:s + bs]
            with np.errstate(over="ignore"):
                value, g = ref.mse(ref.linear_forward(xb, w), yb)
            if not np.isfinite(value):
                expect = (epoch, b, w.copy())
                break
            _, dW, _ = ref.linear_backward(g, xb, w, has_bias=False)
            w, _ = ref.sgd_step(w, dW, None, lr)
        if expect:
            break
    assert expect is not None and expect[0] >= 2      # the test is meaningful

    with pytest.raises(nl.NonFiniteLossError) as exc:
        model.fit(X, Y, loss=nl.MSE(), optimizer=nl.SGD(model, lr), epochs=200,
                  batch_size=bs, shuffle=False, verbose=0)
    epoch, batch = _parse_epoch_batch(str(exc.value))
    assert epoch == expect[0] + 1                          # epochs are 1-based
    assert batch in (expect[1], expect[1] + 1)
    w_now = model.parameters()["0.W"]
    assert np.all(np.isfinite(w_now))
    np.testing.assert_allclose(w_now, expect[2], rtol=1e-9)   # that batch not applied
    # still works
    layer.params["W"] = np.array([[0.01]])
    out = model.predict(X)
    np.testing.assert_allclose(out, X * 0.01, rtol=1e-15)


# ---------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------

def _big_problem():
    rng = np.random.default_rng(18)
    X = rng.standard_normal((3000, 32))
    y = rng.integers(0, 10, size=3000)
    model = mlp((32, 128, 128, 10), dtype=np.float64, seed=19, act=nl.ReLU)
    return X, y, model


def _interrupt_fit(how, verbose=0):
    X, y, model = _big_problem()
    start = copy.deepcopy(model)
    fired = {}

    def fire():
        fired["t"] = time.perf_counter()
        if how == "interrupt_main":
            _thread.interrupt_main()
        else:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    timer = threading.Timer(0.3, fire)
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.01),
                      epochs=400, batch_size=16, shuffle=False, verbose=verbose)
            # (if fit returns, pytest.raises fails the test)
    finally:
        timer.cancel()
        timer.join()
    t_end = time.perf_counter()
    assert "t" in fired
    return model, start, X, y, t_end - fired["t"], t_end - t0


@pytest.mark.parametrize("how", ["interrupt_main", "pthread_kill"])
def test_ctrl_c_stops_fit_quickly(how):
    model, start, X, y, latency, total = _interrupt_fit(how)
    assert latency < 1.0, f"KeyboardInterrupt came {latency:.2f} s after the signal"
    assert all_finite(model)
    assert not all_equal(params_of(model), params_of(start))   # it did train
    # the model still works
    loss = nl.SoftmaxCrossEntropy()
    assert np.isfinite(model.train_step(X[:16], y[:16], loss, nl.SGD(model, 0.01)))
    assert np.all(np.isfinite(model.predict(X[:50])))


def test_ctrl_c_leaves_whole_batches_applied():
    """Interrupted parameters equal the parameters after some whole number
    of batches (replayed with train_step, which fit matches bitwise)."""
    model, start, X, y, latency, _ = _interrupt_fit("interrupt_main", verbose=0)
    assert latency < 1.0
    got = params_of(model)
    hopt, hloss = nl.SGD(start, 0.01), nl.SoftmaxCrossEntropy()
    n, bs = X.shape[0], 16
    deadline = time.perf_counter() + 20
    found = False
    s = 0
    while time.perf_counter() < deadline:
        start.train_step(X[s:s + bs], y[s:s + bs], hloss, hopt)
        s += bs
        if s >= n:          # next epoch (the last batch of an epoch is partial)
            s = 0
        if all_equal(params_of(start), got):
            found = True
            break
    assert found, "interrupted parameters match no whole number of batches"


def test_ctrl_c_with_progress_bar():
    model, _, X, _, latency, _ = _interrupt_fit("interrupt_main", verbose=1)
    assert latency < 1.0
    assert all_finite(model)
    assert np.all(np.isfinite(model.predict(X[:10])))


# ---------------------------------------------------------------------------
# predict / evaluate
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_in_batches_equals_whole(dtype):
    X, _ = blobs(53, seed=20, dtype=dtype)
    model = mlp((2, 16, 16, 3), dtype=dtype, seed=21)
    whole = model.predict(X)
    tol = dict(rtol=1e-13, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for k in (1, 7, 53, 100):
        part = model.predict(X, batch_size=k)
        assert part.shape == whole.shape and part.dtype == whole.dtype
        np.testing.assert_allclose(part, whole, **tol)
    # and matches the reference chain
    specs = [("linear", {"W": np.array(L.params["W"]), "b": np.array(L.params["b"])}, 0.01)
             if L.kind == "linear" else (L.kind, None, 0.01) for L in model]
    want, _ = ref.sequential_forward(specs, X)
    np.testing.assert_allclose(whole, want, **tol)


@pytest.mark.parametrize("batch_size", [None, 6])
def test_evaluate_consistent_with_loss_on_predictions(batch_size):
    X, y = blobs(40, seed=22)
    model = mlp(seed=23)
    res = model.evaluate(X, y, nl.SoftmaxCrossEntropy(), batch_size=batch_size)
    assert set(res) == {"loss", "accuracy"}
    pred = model.predict(X)
    assert res["loss"] == pytest.approx(nl.SoftmaxCrossEntropy().forward(pred, y), rel=1e-12)
    assert res["loss"] == pytest.approx(ref.softmax_cross_entropy(pred, y)[0], rel=1e-12)
    assert res["accuracy"] == pytest.approx(np.mean(np.argmax(pred, 1) == y))


def test_evaluate_leaves_a_pending_loss_forward_alone():
    """evaluate with the loss the user is holding a forward on: backward
    still hands out that forward's gradient, and the loss can be shared
    with evaluate calls in other threads."""
    X, y = blobs(40, seed=26)
    model = mlp(seed=27)
    loss = nl.SoftmaxCrossEntropy()
    pred = model.predict(X[:7])
    loss.forward(pred, y[:7])
    res = model.evaluate(X, y, loss)
    g = loss.backward()
    assert g.shape == (7, 3)
    np.testing.assert_allclose(g, ref.softmax_cross_entropy(pred, y[:7])[1], rtol=1e-12)
    assert loss._value(pred, y[:7]) == pytest.approx(ref.softmax_cross_entropy(pred, y[:7])[0],
                                                     rel=1e-12)
    with pytest.raises(ValueError, match="needs a forward"):
        loss.backward()   # _value held no gradient
    assert res["loss"] == pytest.approx(ref.softmax_cross_entropy(model.predict(X), y)[0],
                                        rel=1e-12)


def test_evaluate_binary_cross_entropy_accuracy():
    rng = np.random.default_rng(24)
    X = rng.standard_normal((30, 2))
    y = (X[:, 0] > 0).astype(np.float64)
    model = mlp((2, 4, 1), seed=25)
    res = model.evaluate(X, y, nl.BinaryCrossEntropy())
    pred = model.predict(X)
    assert res["loss"] == pytest.approx(ref.binary_cross_entropy(pred, y)[0], rel=1e-12)
    assert res["accuracy"] == pytest.approx(np.mean((pred[:, 0] > 0) == (y > 0.5)))


# ---------------------------------------------------------------------------
# train_step state
# ---------------------------------------------------------------------------

def test_train_step_zero_rows():
    model = mlp()
    before = params_of(model)
    with pytest.raises(ValueError):
        model.train_step(np.zeros((0, 2)), np.zeros((0,), dtype=np.int64),
                         nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
    assert all_equal(params_of(model), before)


def test_fit_and_evaluate_zero_rows():
    """An empty data set has no loss: fit must reject it like train_step
    does instead of recording loss 0.0 / accuracy 0.0 for every epoch, and
    evaluate must not report a NaN loss."""
    model = mlp()
    before = params_of(model)
    X, y = np.zeros((0, 2)), np.zeros((0,), dtype=np.int64)
    with pytest.raises(ValueError):
        model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
                  epochs=2, verbose=0)
    assert all_equal(params_of(model), before)
    with pytest.raises(ValueError):
        model.evaluate(X, y, nl.SoftmaxCrossEntropy())


def test_backward_after_train_step_raises():
    X, y = blobs(8)
    model = mlp()
    model.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, 0.1))
    with pytest.raises(ValueError):
        model.backward(np.ones((8, 3)))
    # a fresh forward re-arms backward
    model.forward(X)
    gx = model.backward(np.ones((8, 3)))
    assert gx.shape == X.shape


def test_backward_after_fit_raises():
    X, y = blobs(8)
    model = mlp()
    model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=nl.SGD(model, 0.1),
              epochs=1, batch_size=3, verbose=0)
    with pytest.raises(ValueError):
        model.backward(np.ones((8, 3)))


@pytest.mark.parametrize("bad", ["label", "nan", "other_optimizer"])
def test_rejected_train_step_changes_nothing(bad):
    """A train_step that fails (bad label, NaN loss, optimizer of another
    model) leaves parameters and momentum untouched."""
    X, y = blobs(6, seed=26)
    model = mlp(seed=27)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, 0.1, momentum=0.9)
    model.train_step(X, y, loss, opt)              # builds some momentum
    before, vel = params_of(model), np.array(opt._velocity(), copy=True)
    if bad == "label":
        args, exc = (X, np.array([0, 1, 2, 3, 0, 1]), loss, opt), ValueError
    elif bad == "nan":
        Xn = X.copy()
        Xn[2, 0] = np.nan
        args, exc = (Xn, y, loss, opt), nl.NonFiniteLossError
    else:
        args, exc = (X, y, loss, nl.SGD(copy.deepcopy(model), 0.1)), ValueError
    with pytest.raises(exc):
        model.train_step(*args)
    assert all_equal(params_of(model), before)
    np.testing.assert_array_equal(opt._velocity(), vel)
    assert np.isfinite(model.train_step(X, y, loss, opt))
    assert not all_equal(params_of(model), before)


def test_train_step_arguments_by_position_or_name():
    """train_step parses its arguments itself (vectorcall: x, y, loss,
    optimizer and an optional sample_weight): by position, by name, or
    mixed give the same step; a wrong call raises TypeError naming the
    problem and leaves the model working."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=6)

    def fresh():
        m = nl.Sequential(nl.Linear(4, 5, seed=1), nl.ReLU(), nl.Linear(5, 3, seed=2))
        return m, nl.SoftmaxCrossEntropy(), None

    results = []
    for call in (lambda m, l, o: m.train_step(x, y, l, o),
                 lambda m, l, o: m.train_step(x, y, loss=l, optimizer=o),
                 lambda m, l, o: m.train_step(optimizer=o, loss=l, y=y, x=x)):
        m, loss, _ = fresh()
        opt = nl.SGD(m, lr=0.1)
        results.append((call(m, loss, opt), m.parameters()["0.W"].copy()))
    for value, W in results[1:]:
        assert value == results[0][0]
        np.testing.assert_array_equal(W, results[0][1])

    m, loss, _ = fresh()
    opt = nl.SGD(m, lr=0.1)
    bad = [((x, y, loss), {}, "missing required argument 'optimizer'"),
           ((x, y, loss, opt, None, 1), {}, "takes 5 arguments"),
           ((x, y, loss, opt), {"loss": loss}, "multiple values for argument 'loss'"),
           ((x, y, loss), {"opt": opt}, "unexpected keyword argument 'opt'")]
    for args, kw, msg in bad:
        with pytest.raises(TypeError, match=re.escape(msg)):
            m.train_step(*args, **kw)
    assert np.isfinite(m.train_step(x, y, loss, opt))
