"""fit's toolbox: callbacks, validation split, sample and class weights,
initial_epoch, metrics, checks before the first update; gradcheck for
people; model.astype."""
import copy
import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnlayers as nl
import nnlayers._reference as ref

F64 = np.float64


def blobs(n=120, seed=0, dtype=F64):
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0.0], [-3.0, 2.0], [0.0, -4.0]])
    y = rng.integers(0, 3, size=n)
    return (centers[y] + rng.standard_normal((n, 2))).astype(dtype), y


def mlp(seed=0, dtype=F64):
    return nl.Sequential(nl.Linear(2, 8, dtype=dtype, seed=seed), nl.Tanh(),
                         nl.Linear(8, 3, dtype=dtype, seed=seed + 1))


def same_params(a, b):
    for (k, v), w in zip(a.parameters().items(), b.parameters().values()):
        np.testing.assert_array_equal(v, w, err_msg=k)


# ---------------------------------------------------------------- callbacks

def test_callback_hooks_are_called_in_order():
    X, y = blobs()
    calls = []

    class Spy(nl.callbacks.Callback):
        def on_train_begin(self, logs=None):
            calls.append(("train_begin", self.model is model))

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(("epoch_begin", epoch))

        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch_end", epoch, sorted(logs)))

        def on_train_end(self, logs=None):
            calls.append(("train_end",))

    model = mlp()
    model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=2, verbose=0, callbacks=[Spy()],
              validation_data=(X[:20], y[:20]))
    assert calls == [("train_begin", True), ("epoch_begin", 0),
                     ("epoch_end", 0, ["accuracy", "loss", "val_accuracy", "val_loss"]),
                     ("epoch_begin", 1),
                     ("epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"]),
                     ("train_end",)]
    assert not nl.callbacks.wants_batches(Spy())


def test_on_batch_end_sees_every_batch_loss():
    """A callback defining on_batch_end is called after every batch with
    that batch's loss: the losses of the equivalent train_step loop."""
    X, y = blobs(50)
    model, twin = mlp(), mlp()
    seen = []

    class PerBatch(nl.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((batch, logs["size"], logs["loss"]))

    assert nl.callbacks.wants_batches(PerBatch())
    model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=1, batch_size=16, shuffle=False,
              verbose=0, callbacks=[PerBatch()])
    opt = nl.SGD(twin, 0.1)
    want = [(b, len(X[s:s + 16]), twin.train_step(X[s:s + 16], y[s:s + 16],
                                                    nl.SoftmaxCrossEntropy(), opt))
            for b, s in enumerate(range(0, 50, 16))]
    assert seen == want
    same_params(model, twin)


@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_restores_the_best_epoch_bitwise(patience, tmp_path):
    """EarlyStopping(restore_best_weights) leaves the model equal, to the
    bit, to a checkpoint written at its best epoch; also when the epochs
    run out before it stops training."""
    X, y = blobs(200, seed=1)
    Xv, yv = blobs(60, seed=2)
    model = mlp(3)
    ckpt = nl.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.npz"), monitor="val_loss")
    es = nl.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                    restore_best_weights=True)
    hist = model.fit(X, y, optimizer=nl.SGD(model, 0.5, momentum=0.9), epochs=60,
                     batch_size=16, seed=4, validation_data=(Xv, yv), verbose=0,
                     callbacks=[ckpt, es])
    losses = hist.history["val_loss"]
    best = int(np.argmin(losses))
    assert es.best_epoch == best
    assert es.stopped_epoch is None or es.stopped_epoch == len(losses) - 1
    best_file = nl.load(str(tmp_path / f"e{best + 1}.npz"))
    same_params(model, best_file)
    # the epochs running out first: still restored
    model2 = mlp(3)
    es2 = nl.callbacks.EarlyStopping(monitor="val_loss", patience=1000,
                                     restore_best_weights=True)
    hist2 = model2.fit(X, y, optimizer=nl.SGD(model2, 0.5, momentum=0.9), epochs=8,
                       batch_size=16, seed=4, validation_data=(Xv, yv), verbose=0,
                       callbacks=[es2])
    assert es2.stopped_epoch is None and len(hist2.epoch) == 8
    assert model2.evaluate(Xv, yv)["loss"] == min(hist2.history["val_loss"])


def test_early_stopping_counts_patience_like_keras():
    model = mlp()
    es = nl.callbacks.EarlyStopping(monitor="loss", patience=2, mode="min")
    es.set_model(model)
    es.on_train_begin()
    model.stop_training = False
    for epoch, v in enumerate([1.0, 0.5, 0.6, 0.7]):
        es.on_epoch_end(epoch, {"loss": v})
    assert model.stop_training and es.stopped_epoch == 3 and es.best_epoch == 1
    with pytest.raises(KeyError, match="monitor='val_loss' is not among fit's logs"):
        nl.callbacks.EarlyStopping().on_epoch_end(0, {"loss": 1.0})


def _logged_keys(model, X, y, **kw):
    """The keys one real epoch of fit logs, on a copy of model."""
    m = copy.deepcopy(model)
    return set(m.fit(X, y, optimizer=nl.SGD(m, 0.01), epochs=1, verbose=0, **kw).history)


@pytest.mark.parametrize("case", ["classify", "metrics+val", "regression", "two-outputs"])
def test_monitor_keys_are_checked_before_the_first_update(case, tmp_path):
    """A monitor must name a key fit logs: any key it does log passes, one
    it does not raises ValueError before any update, naming the key and
    the keys there are."""
    X, y = blobs()
    model, kw = mlp(), {}
    if case == "metrics+val":
        kw = {"metrics": ["mae", "top_k_accuracy"], "validation_data": (X[:30], y[:30])}
    elif case == "regression":
        y = np.eye(3)[y]
        kw = {"loss": nl.MSE(), "metrics": ["mae"]}
    elif case == "two-outputs":
        x = nl.Input(2)
        h = nl.Tanh()(nl.Linear(2, 8, dtype=F64, seed=0)(x))
        model = nl.Model(x, [nl.Linear(8, 3, dtype=F64, seed=1)(h),
                             nl.Linear(8, 1, dtype=F64, seed=2)(h)])
        y = [y, X[:, :1]]
        kw = {"loss": [nl.SoftmaxCrossEntropy(), nl.MSE()], "metrics": ["mae"],
              "validation_data": (X[:30], [y[0][:30], y[1][:30]])}
    keys = _logged_keys(model, X, y, **kw)
    for key in sorted(keys):
        m = copy.deepcopy(model)
        m.fit(X, y, optimizer=nl.SGD(m, 0.01), epochs=1, verbose=0, **kw,
              callbacks=[nl.callbacks.EarlyStopping(monitor=key),
                         nl.callbacks.ReduceLROnPlateau(monitor=key)])
    before = {k: np.array(v) for k, v in model.parameters().items()}
    bad = [nl.callbacks.EarlyStopping(monitor="val_los"),
           nl.callbacks.ReduceLROnPlateau(monitor="acuracy"),
           nl.callbacks.ModelCheckpoint(tmp_path / "c.npz", monitor="los", save_best_only=True)]
    for cb in bad:
        with pytest.raises(ValueError, match=rf"{type(cb).__name__}: monitor='{cb.monitor}' "
                           r"is not among fit's logs \(they have \["):
            model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=2, verbose=0, **kw,
                      callbacks=[cb])
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # a checkpoint of every epoch monitors nothing
    model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=1, verbose=0, **kw,
              callbacks=[nl.callbacks.ModelCheckpoint(tmp_path / "c.npz", monitor="los")])
    assert (tmp_path / "c.npz").exists()


def test_shuffle_callable_gives_each_epochs_order():
    """shuffle=f: epoch e visits the rows in f(e)'s order, as fit without
    shuffling over rows stored in that order; a wrong order raises
    ValueError naming shuffle before that epoch's updates."""
    X, y = blobs()
    rng = np.random.default_rng(5)
    orders = [rng.permutation(len(X)) for _ in range(3)]
    model, twin = mlp(), mlp()
    seen = []

    def order(epoch):
        seen.append(epoch)
        return orders[epoch]

    model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=3, batch_size=16, verbose=0,
              shuffle=order)
    assert seen == [0, 1, 2]
    opt = nl.SGD(twin, 0.1)
    for e in range(3):
        twin.fit(X[orders[e]], y[orders[e]], optimizer=opt, epochs=1, batch_size=16,
                 verbose=0, shuffle=False)
    same_params(model, twin)
    before = {k: np.array(v) for k, v in model.parameters().items()}
    for bad in (np.arange(len(X) - 1), np.full(len(X), len(X)), -np.arange(len(X))):
        with pytest.raises(ValueError, match=r"shuffle: an epoch's order of the rows must "
                           r"be a permutation of range\(120\)"):
            model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=1, verbose=0,
                      shuffle=lambda e, bad=bad: bad)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("bad", [[(0, 0)], [(4999, 39)], [(3100, 7), (4000, 1)],
                                 [(4000, 1), (3100, 7), (12, 30)], [(2500, 5), (2499, 6)]])
def test_fit_names_the_first_non_finite_row_of_X(dtype, bad):
    """X is checked on both threads in pieces of rows: the error names the
    first bad row (and its first bad column) wherever the others are."""
    X = np.random.default_rng(0).standard_normal((5000, 40)).astype(dtype)
    for k, (r, c) in enumerate(bad):
        X[r, c] = (np.nan, np.inf, -np.inf)[k % 3]
    r, c = min(bad)
    value = {0: "nan", 1: "inf", 2: "-inf"}[bad.index((r, c)) % 3]
    model = nl.Sequential(nl.Linear(40, 3, dtype=dtype))
    with pytest.raises(ValueError, match=rf"^X holds {value} at row {r} \(column {c}\)"):
        model.fit(X, np.zeros(5000, dtype=int), optimizer=nl.SGD(model, 0.1), verbose=0)
    X[r, c] = 0
    if len(bad) > 1:
        r2, c2 = sorted(bad)[1]
        with pytest.raises(ValueError, match=rf"^X holds .* at row {r2} \(column {c2}\)"):
            model.fit(X, np.zeros(5000, dtype=int), optimizer=nl.SGD(model, 0.1), verbose=0)


def test_fit_without_an_optimizer_continues_with_the_last_one():
    """fit() with no optimizer trains on with model.optimizer (its state
    kept, as Keras's compiled optimizer); a model that never trained gets
    SGD(lr=0.01)."""
    X, y = blobs()
    fresh = mlp()
    fresh.fit(X, y, epochs=1, verbose=0)
    assert isinstance(fresh.optimizer, nl.SGD) and fresh.optimizer.lr == 0.01
    model, twin = mlp(), mlp()
    opt, opt2 = nl.Adam(model, lr=0.01), nl.Adam(twin, lr=0.01)
    model.fit(X, y, optimizer=opt, epochs=2, batch_size=40, shuffle=False, verbose=0)
    model.fit(X, y, epochs=3, initial_epoch=2, batch_size=40, shuffle=False, verbose=0)
    assert model.optimizer is opt and opt.state_dict()["steps"] == 9
    twin.fit(X, y, optimizer=opt2, epochs=3, batch_size=40, shuffle=False, verbose=0)
    same_params(model, twin)


def test_model_checkpoint_survives_a_kill_mid_write(tmp_path):
    """A process killed while ModelCheckpoint writes leaves the previous
    checkpoint readable (the file is written to a temporary name and
    renamed)."""
    path = tmp_path / "ckpt.npz"
    code = textwrap.dedent(f"""
        import os, signal, numpy as np, nnlayers as nl
        import nnlayers.io as io
        X = np.random.default_rng(0).standard_normal((64, 2))
        y = np.random.default_rng(1).integers(0, 3, 64)
        model = nl.Sequential(nl.Linear(2, 400, dtype=np.float64, seed=0), nl.Tanh(),
                              nl.Linear(400, 3, dtype=np.float64, seed=1))
        saves = [0]
        real = np.savez
        def slow_savez(f, **arrays):
            saves[0] += 1
            if saves[0] == 2:            # the second checkpoint: die half-way
                f.write(b"PK\\x03\\x04 half a zip file")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(f, **arrays)
        io.np.savez = slow_savez
        model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=3, verbose=0,
                  callbacks=[nl.callbacks.ModelCheckpoint({str(path)!r}, monitor="loss")])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    model = nl.load(str(path))          # the first epoch's checkpoint, whole
    assert model.forward(np.zeros((1, 2))).shape == (1, 3)
    leftovers = [f for f in os.listdir(tmp_path) if f != "ckpt.npz"]
    assert all(f.startswith(".nnlayers-") for f in leftovers)


def test_model_checkpoint_best_only_and_filename_fields(tmp_path):
    X, y = blobs(90, seed=5)
    model = mlp(6)
    cb = nl.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{loss:.3f}.npz"),
                                      monitor="loss", save_best_only=True)
    hist = model.fit(X, y, optimizer=nl.SGD(model, 0.2), epochs=4, verbose=0, callbacks=[cb])
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".npz"))
    best = [e for e, v in enumerate(hist.history["loss"])
            if v == min(hist.history["loss"][:e + 1])]
    assert files == [f"m-{e + 1:02d}-{hist.history['loss'][e]:.3f}.npz" for e in best]


def test_reduce_lr_on_plateau_and_csv_logger(tmp_path):
    model = mlp()
    opt = nl.SGD([{"params": [model[0]], "lr": 0.4}, {"params": [model[2]], "lr": 0.2}], lr=0.4)
    model.optimizer = opt
    cb = nl.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                        min_lr=0.06)
    cb.set_model(model)
    cb.on_train_begin()
    lrs = []
    for epoch, v in enumerate([1.0, 0.9, 0.95, 0.93, 0.99, 0.98, 0.97, 0.96]):
        cb.on_epoch_end(epoch, {"val_loss": v})
        lrs.append([g["lr"] for g in opt.param_groups])
    # plateaus end at epochs 3 and 5 and 7 (patience 2): halved, floored at 0.06
    assert lrs[2] == [0.4, 0.2] and lrs[3] == [0.2, 0.1] and lrs[5] == [0.1, 0.06]
    assert lrs[7] == [0.06, 0.06]
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\)"):
        nl.callbacks.ReduceLROnPlateau(factor=1.5)
    X, y = blobs(60)
    path = tmp_path / "log.csv"
    fresh = mlp()
    fresh.fit(X, y, optimizer=nl.SGD(fresh, 0.1), epochs=3, verbose=0,
              callbacks=[nl.callbacks.CSVLogger(str(path))])
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy"}


def test_terminate_on_nan_raises_or_stops_quietly():
    X, _ = blobs(12)
    T = np.zeros((12, 3))
    T[9] = np.inf                                   # batch 3 of 3 (batch 4)
    for raise_error in (True, False):
        model, twin = mlp(), mlp()
        cbs = [nl.callbacks.TerminateOnNaN(raise_error=raise_error)]
        if raise_error:
            with pytest.raises(nl.NonFiniteLossError, match=r"epoch 1: .*at batch 3"):
                model.fit(X, T, loss=nl.MSE(), optimizer=nl.SGD(model, 0.1), epochs=2,
                          batch_size=4, shuffle=False, verbose=0, callbacks=cbs)
        else:
            hist = model.fit(X, T, loss=nl.MSE(), optimizer=nl.SGD(model, 0.1), epochs=2,
                             batch_size=4, shuffle=False, verbose=0, callbacks=cbs)
            assert hist.epoch == [] and model.stop_training
        opt = nl.SGD(twin, 0.1)
        for s in (0, 4):
            twin.train_step(X[s:s + 4], T[s:s + 4], nl.MSE(), opt)
        same_params(model, twin)


def test_lambda_callback_and_wrong_callbacks():
    X, y = blobs(40)
    model = mlp()
    ends = []
    model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=2, verbose=0, callbacks=[
        nl.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: ends.append(e))])
    assert ends == [0, 1]
    with pytest.raises(TypeError, match=r"LambdaCallback takes .*got \['on_epoch'\]"):
        nl.callbacks.LambdaCallback(on_epoch=print)
    with pytest.raises(TypeError, match=r"callbacks\[0\] is builtin_function_or_method, not "
                                        r"an nnlayers.callbacks.Callback"):
        model.fit(X, y, optimizer=nl.SGD(model, 0.1), verbose=0, callbacks=[print])


# ---------------------------------------------------------------- fit's arguments

def test_validation_split_holds_out_the_last_rows_before_shuffling():
    X, y = blobs(100)
    a, b = mlp(), mlp()
    ha = a.fit(X, y, optimizer=nl.SGD(a, 0.1), epochs=2, seed=3, verbose=0,
               validation_split=0.25)
    hb = b.fit(X[:75], y[:75], optimizer=nl.SGD(b, 0.1), epochs=2, seed=3, verbose=0,
               validation_data=(X[75:], y[75:]))
    assert ha.history == hb.history
    same_params(a, b)
    with pytest.raises(ValueError, match=r"validation_split must be a float in \[0, 1\)"):
        a.fit(X, y, optimizer=nl.SGD(a, 0.1), verbose=0, validation_split=1.0)


def test_sample_weight_of_ones_and_of_two():
    """All-ones weights equal no weights; a weight of 2 equals the row
    duplicated (one full batch, so the batch mean's denominator counts the
    duplicate: the loss averages over rows, sum of weights / N)."""
    X, y = blobs(8)
    a, b, c, d = mlp(), mlp(), mlp(), mlp()
    loss = nl.SoftmaxCrossEntropy()
    a.train_step(X, y, loss, nl.SGD(a, 0.1))
    b.train_step(X, y, loss, nl.SGD(b, 0.1), sample_weight=np.ones(8))
    same_params(a, b)
    w = np.ones(8)
    w[3] = 2.0
    # 2 x row 3 among 8 rows == row 3 twice among 9 rows, scaled by 9/8
    c.train_step(X, y, loss, nl.SGD(c, 0.1), sample_weight=w)
    Xd, yd = np.vstack([X, X[3:4]]), np.append(y, y[3])
    d.train_step(Xd, yd, loss, nl.SGD(d, 0.1 * 9 / 8))
    for (k, v), u in zip(c.parameters().items(), d.parameters().values()):
        np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-14, err_msg=k)
    # fit too, through the gathered (shuffled) batches
    e, f = mlp(), mlp()
    e.fit(X, y, optimizer=nl.SGD(e, 0.1), epochs=2, batch_size=3, seed=1, verbose=0)
    f.fit(X, y, optimizer=nl.SGD(f, 0.1), epochs=2, batch_size=3, seed=1, verbose=0,
          sample_weight=np.ones(8))
    same_params(e, f)
    with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0, got -1"):
        e.train_step(X, y, loss, nl.SGD(e, 0.1), sample_weight=-np.ones(8))


def test_class_weight_dict_and_balanced():
    X, y = blobs(30)
    a, b, c = mlp(), mlp(), mlp()
    weights = {0: 2.0, 1: 0.5}
    a.fit(X, y, optimizer=nl.SGD(a, 0.1), epochs=1, batch_size=30, shuffle=False, verbose=0,
          class_weight=weights)
    b.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(b, 0.1),
                 sample_weight=np.array([weights.get(int(k), 1.0) for k in y]))
    same_params(a, b)
    counts = np.bincount(y, minlength=3)
    c.fit(X, y, optimizer=nl.SGD(c, 0.1), epochs=1, batch_size=30, shuffle=False, verbose=0,
          class_weight="balanced")
    d = mlp()
    d.train_step(X, y, nl.SoftmaxCrossEntropy(), nl.SGD(d, 0.1),
                 sample_weight=30 / (3 * counts[y]))
    for (k, v), u in zip(c.parameters().items(), d.parameters().values()):
        np.testing.assert_allclose(v, u, rtol=1e-12, err_msg=k)
    with pytest.raises(ValueError, match="class_weight must be a dict or 'balanced'"):
        a.fit(X, y, optimizer=nl.SGD(a, 0.1), verbose=0, class_weight="auto")


def test_initial_epoch_resumes_like_one_fit():
    """fit(epochs=4) equals fit(epochs=2) then fit(initial_epoch=2,
    epochs=4): with an int seed, epoch e's order depends on (seed, e)."""
    X, y = blobs(50)
    a, b = mlp(), mlp()
    opt_a, opt_b = nl.SGD(a, 0.1, momentum=0.9), nl.SGD(b, 0.1, momentum=0.9)
    ha = a.fit(X, y, optimizer=opt_a, epochs=4, batch_size=8, seed=7, verbose=0)
    b.fit(X, y, optimizer=opt_b, epochs=2, batch_size=8, seed=7, verbose=0)
    hb = b.fit(X, y, optimizer=opt_b, epochs=4, batch_size=8, seed=7, verbose=0,
               initial_epoch=2)
    assert hb.epoch == [2, 3] and hb.history["loss"] == ha.history["loss"][2:]
    same_params(a, b)
    with pytest.raises(ValueError, match=r"initial_epoch \(5\) is past epochs \(4\)"):
        a.fit(X, y, optimizer=opt_a, epochs=4, initial_epoch=5, verbose=0)


def test_validation_data_is_checked_before_the_first_update():
    X, y = blobs(40)
    model, fresh = mlp(), mlp()
    bad = [((X[:, :1], y), r"validation_data X has 1 columns"),
           ((X, y[:5]), r"validation_data y has 5 entries but the predictions have 40"),
           ((X, np.full(40, 7)), r"target labels must be in \[0, 3\), got 7"),
           ((X.astype(complex), y), r"validation_data X must hold real numbers")]
    for data, msg in bad:
        with pytest.raises((ValueError, TypeError), match=msg):
            model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=1, verbose=0,
                      validation_data=data)
    same_params(model, fresh)


def test_metrics_names_and_callables():
    X, y = blobs(60)
    model = mlp()
    calls = []

    def my_metric(y_true, y_pred):
        calls.append(y_pred.shape)
        return float(np.mean(np.argmax(y_pred, 1) == y_true))

    hist = model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=2, verbose=0,
                     metrics=["accuracy", my_metric], validation_data=(X, y))
    assert calls == [(60, 3)] * 4          # training data and validation, each epoch
    assert hist.history["my_metric"][-1] == pytest.approx(hist.history["val_my_metric"][-1])
    assert hist.history["val_my_metric"][-1] == pytest.approx(
        hist.history["val_accuracy"][-1])
    with pytest.raises(ValueError, match=r"metrics\[0\]: unknown metric 'f1'"):
        model.fit(X, y, optimizer=nl.SGD(model, 0.1), verbose=0, metrics=["f1"])


# ---------------------------------------------------------------- gradcheck, astype

def test_gradcheck_refuses_float32_with_the_fix_and_astype_makes_it():
    model = mlp(dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"float32.*nl.gradcheck\(model.astype\(np.float64\), "
                                         r"x.astype\(np.float64\)\)"):
        nl.gradcheck(model, x)
    m64 = model.astype(np.float64)
    assert m64.dtype == np.float64 and m64 is not model
    for (k, v), w in zip(model.parameters().items(), m64.parameters().values()):
        assert w.dtype == np.float64
        np.testing.assert_array_equal(v.astype(np.float64), w, err_msg=k)
    assert nl.gradcheck(m64, x.astype(np.float64)).ok
    # explicit tolerances run in float32 all the same
    res = nl.gradcheck(model, x, rtol=1e-1, atol=1e-2, eps=1e-2, raise_exception=False)
    assert set(res.errors) >= {"x", "0.W"}


def test_gradcheck_of_a_callable_and_below_atol():
    x = np.random.default_rng(1).standard_normal((3, 2))
    res = nl.gradcheck(lambda v: np.sin(v) * 3, x, vjp=lambda v, r: 3 * np.cos(v) * r)
    assert res.ok and res.errors["x"] is not None and res.errors["x"] < 1e-6
    with pytest.raises(nl.GradcheckError, match="'x'"):
        nl.gradcheck(lambda v: np.sin(v) * 3, x, vjp=lambda v, r: 3.3 * np.cos(v) * r)
    # a gradient that is zero everywhere is "below atol", not an error of 0
    zero = nl.gradcheck(nl.ReLU(dtype=F64), -np.ones((2, 3)))
    assert zero.ok and zero.errors["x"] is None and "below atol" in repr(zero)


def test_gradcheck_model_with_its_loss():
    X, y = blobs(6)
    model = mlp()
    assert nl.gradcheck(model, X, loss=nl.SoftmaxCrossEntropy(), target=y).ok
    with pytest.raises(ValueError, match=r"needs the loss's target="):
        nl.gradcheck(model, X, loss=nl.SoftmaxCrossEntropy())
    # the check is the loss of the model: finite differences of ref's loss
    p = model.forward(X)
    assert nl.SoftmaxCrossEntropy().forward(p, y) == pytest.approx(
        ref.softmax_cross_entropy(p, y)[0], rel=1e-12)
    assert copy.deepcopy(model).forward(X).shape == (6, 3)


def test_validation_data_is_checked_once_per_fit(monkeypatch):
    """fit checks validation_data (shapes, NaN and inf, labels) once, before
    the first update, and then evaluates it after every epoch without
    reading all of X_val for NaN again; the values are evaluate's."""
    X, y = blobs()
    model = mlp()
    seen = []
    real = nl.Model._check_data

    def spy(self, *args):
        seen.append(args[-2])   # the name the check reports X under
        return real(self, *args)

    monkeypatch.setattr(nl.Model, "_check_data", spy)
    hist = model.fit(X, y, optimizer=nl.SGD(model, 0.1), epochs=3, batch_size=16,
                     verbose=0, validation_data=(X[:20], y[:20]))
    assert seen == ["validation_data X"]
    assert len(hist.history["val_loss"]) == 3
    final = model.evaluate(X[:20], y[:20])
    assert seen[1:] == ["X"]    # evaluate itself still checks
    assert hist.history["val_loss"][-1] == final["loss"]
    assert hist.history["val_accuracy"][-1] == final["accuracy"]
