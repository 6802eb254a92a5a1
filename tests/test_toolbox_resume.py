"""The training toolbox end to end (issue 11's test list, the parts not
covered elsewhere):

- resuming from ``model.save(path, optimizer=opt)`` and ``nl.load`` gives,
  to the bit, the weights and optimizer state of never stopping, for every
  optimizer (parameter groups and clipping included);
- every schedule driving every optimizer trains the same MLP as torch.optim
  with torch's scheduler, in float64 over 20 steps, to 1e-12 relative:
  in a hand-written loop and through ``fit(schedule=...)`` (a per-step
  schedule then runs inside the C epoch loop);
- fit with every optimizer and a per-step schedule allocates nothing in
  steady state;
- every argument error of fit's toolbox leaves the model, its optimizer,
  the schedule and the callbacks as they were.

The expected values come from the uninterrupted run, from torch, or from a
fresh model: never from constants taken from the code under test.
"""
import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core
from nnlayers import schedules as S
from test_optimizers import torch_mlp  # the same float64 twin of an nl MLP

SIZES = (4, 8, 6, 3)
N_ROWS, BATCH = 40, 8                   # 5 batches per epoch
EPOCHS = 4                              # 20 steps

# name: (class, keyword arguments); each is also built with two groups
# (biases without weight decay, at half the rate) and global-norm clipping
OPTIMIZERS = {
    "sgd": (nl.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd-plain": (nl.SGD, dict(lr=0.1)),
    "adam": (nl.Adam, dict(lr=0.01, weight_decay=0.01)),
    "adam-amsgrad": (nl.Adam, dict(lr=0.01, amsgrad=True)),
    "adamw": (nl.AdamW, dict(lr=0.01)),
    "rmsprop": (nl.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    "adagrad": (nl.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
}
TORCH_NAME = {nl.SGD: "SGD", nl.Adam: "Adam", nl.AdamW: "AdamW", nl.RMSprop: "RMSprop",
              nl.Adagrad: "Adagrad"}


def make_mlp(dtype=np.float64, seed=0):
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(nl.Linear(a, b, dtype=dtype, seed=seed + i))
        if i < len(SIZES) - 2:
            layers.append(nl.Tanh())
    return nl.Sequential(*layers)


def data(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ROWS, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1],
                                                                              N_ROWS)


def grouped(cls, model, kw, **extra):
    """Weights in group 0, biases in group 1 (no decay, half the rate)."""
    named = model.named_parameters()
    lr = kw["lr"]
    return cls([{"params": [p for n, p in named if n.endswith(".W")]},
                {"params": [p for n, p in named if n.endswith(".b")], "lr": lr / 2,
                 "weight_decay": 0.0}], **kw, **extra)


def params_of(model):
    return [np.array(v) for v in model.parameters().values()]


def assert_bitwise(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=f"array {k}")


def state_arrays(opt):
    sd = opt.state_dict()
    return [np.array(sd["state"][k][n]) for k in sorted(sd["state"]) for n in
            sorted(sd["state"][k])]


# ---------------------------------------------------------------------------
# resume from a file
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_from_saved_model_and_optimizer_is_bitwise(name, dtype, tmp_path):
    cls, kw = OPTIMIZERS[name]
    X, y = data(dtype)
    straight = make_mlp(dtype)
    opt = grouped(cls, straight, kw, clip_norm=0.5)
    straight.fit(X, y, optimizer=opt, epochs=EPOCHS, batch_size=BATCH, seed=3, verbose=0)

    first = make_mlp(dtype)
    opt1 = grouped(cls, first, kw, clip_norm=0.5)
    first.fit(X, y, optimizer=opt1, epochs=2, batch_size=BATCH, seed=3, verbose=0)
    path = tmp_path / "run.npz"
    first.save(path, optimizer=first.optimizer)
    del first, opt1

    resumed = nl.load(path)
    assert type(resumed.optimizer) is cls
    assert resumed.optimizer.param_groups == opt.param_groups
    assert resumed.optimizer.clip_norm == 0.5
    resumed.fit(X, y, optimizer=resumed.optimizer, epochs=EPOCHS, initial_epoch=2,
                batch_size=BATCH, seed=3, verbose=0)
    assert_bitwise(params_of(resumed), params_of(straight))
    assert resumed.optimizer.state_dict()["steps"] == opt.state_dict()["steps"] == 20
    assert_bitwise(state_arrays(resumed.optimizer), state_arrays(opt))


def test_saved_optimizer_updates_the_loaded_layers_not_the_old_ones(tmp_path):
    model = make_mlp()
    X, y = data()
    model.fit(X, y, optimizer=nl.Adam(model), epochs=1, batch_size=BATCH, seed=0, verbose=0)
    model.save(tmp_path / "m.npz", optimizer=model.optimizer)
    before = params_of(model)
    loaded = nl.load(tmp_path / "m.npz")
    loaded.train_step(X, y, nl.SoftmaxCrossEntropy(), loaded.optimizer)
    assert_bitwise(params_of(model), before)
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(loaded), before))


def test_save_with_another_models_optimizer_is_refused(tmp_path):
    model, other = make_mlp(), make_mlp(seed=5)
    path = tmp_path / "m.npz"
    with pytest.raises(ValueError, match=r"save\(optimizer=...\): the optimizer updates .*"
                                         r"which is not in this model; save it with the "
                                         r"model it trains"):
        model.save(path, optimizer=nl.Adam(other))
    assert not path.exists()
    model.save(path)                        # still saves without it
    assert nl.load(path).optimizer is None


# ---------------------------------------------------------------------------
# every schedule on every optimizer against torch
# ---------------------------------------------------------------------------

# name: (build ours on opt, build torch's on (lr_scheduler module, opt), interval)
SCHEDULES = {
    "StepLR": (lambda o: S.StepLR(o, step_size=2, gamma=0.5),
               lambda T, o: T.StepLR(o, step_size=2, gamma=0.5), "epoch"),
    "StepLR-per-step": (lambda o: S.StepLR(o, step_size=3, gamma=0.7, interval="step"),
                        lambda T, o: T.StepLR(o, step_size=3, gamma=0.7), "step"),
    "ExponentialLR": (lambda o: S.ExponentialLR(o, gamma=0.8),
                      lambda T, o: T.ExponentialLR(o, gamma=0.8), "epoch"),
    "CosineAnnealingLR": (lambda o: S.CosineAnnealingLR(o, T_max=3, eta_min=1e-3),
                          lambda T, o: T.CosineAnnealingLR(o, T_max=3, eta_min=1e-3), "epoch"),
    "CosineAnnealingLR-per-step": (
        lambda o: S.CosineAnnealingLR(o, T_max=20, interval="step"),
        lambda T, o: T.CosineAnnealingLR(o, T_max=20), "step"),
    "OneCycleLR": (lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=20,
                                          cycle_momentum=_cycles(o)),
                   lambda T, o: T.OneCycleLR(o, max_lr=0.05, total_steps=20,
                                             cycle_momentum=_cycles(o)), "step"),
    "LinearWarmup": (lambda o: S.LinearWarmup(o, steps=6),
                     lambda T, o: T.LinearLR(o, start_factor=1 / 6, end_factor=1.0,
                                             total_iters=6), "step"),
    "LinearWarmup-cosine": (
        lambda o: S.LinearWarmup(o, steps=5, after=S.CosineAnnealingLR(o, T_max=15,
                                                                       interval="step")),
        lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 1 / 5, 1.0, 5),
                                        T.CosineAnnealingLR(o, T_max=15)], milestones=[5]),
        "step"),
}
SCHEDULE_OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]


def _cycles(opt):
    """OneCycleLR cycles momentum or beta1: not for Adagrad (torch refuses
    it too), nor for a plain SGD."""
    groups = opt.param_groups
    return "beta1" in groups[0] or groups[0].get("momentum", 0) > 0 or (
        "betas" in groups[0])


def torch_twin(torch, model, cls, kw):
    tmodel = torch_mlp(torch, model)
    lins = [m for m in tmodel if hasattr(m, "weight")]
    topt = getattr(torch.optim, TORCH_NAME[cls])(
        [{"params": [m.weight for m in lins]},
         {"params": [m.bias for m in lins], "lr": kw["lr"] / 2, "weight_decay": 0.0}],
        **kw, foreach=False)
    return tmodel, topt


def torch_params(tmodel):
    return [a for m in tmodel if hasattr(m, "weight")
            for a in (m.weight.detach().numpy().T, m.bias.detach().numpy())]


def torch_train(torch, tmodel, topt, tsched, interval, X, y):
    import warnings

    for _ in range(EPOCHS):
        for s in range(0, N_ROWS, BATCH):
            topt.zero_grad()
            out = tmodel(torch.from_numpy(X[s:s + BATCH]))
            torch.nn.functional.cross_entropy(out, torch.from_numpy(y[s:s + BATCH])).backward()
            topt.step()
            if interval == "step":
                tsched.step()
        if interval == "epoch":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tsched.step()


def nl_train(model, opt, sched, X, y, how):
    if how == "fit":
        model.fit(X, y, optimizer=opt, schedule=sched, epochs=EPOCHS, batch_size=BATCH,
                  shuffle=False, verbose=0)
        return
    loss = nl.SoftmaxCrossEntropy()
    for _ in range(EPOCHS):
        for s in range(0, N_ROWS, BATCH):
            model.train_step(X[s:s + BATCH], y[s:s + BATCH], loss, opt)
            if sched.interval == "step":
                sched.step()
        if sched.interval == "epoch":
            sched.step()


@pytest.fixture
def torch():
    """torch on one thread: its idle workers spinning on the 2 cores would
    slow nnlayers' threads ten-fold."""
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


@pytest.mark.parametrize("how", ["loop", "fit"])
@pytest.mark.parametrize("opt_name", SCHEDULE_OPTIMIZERS)
@pytest.mark.parametrize("sched_name", sorted(SCHEDULES))
def test_schedule_trains_like_torch(sched_name, opt_name, how, torch):
    build, build_torch, interval = SCHEDULES[sched_name]
    cls, kw = OPTIMIZERS[opt_name]
    X, y = data()
    model = make_mlp(seed=11)
    tmodel, topt = torch_twin(torch, model, cls, kw)
    opt = grouped(cls, model, kw)
    sched = build(opt)
    assert sched.interval == interval
    tsched = build_torch(torch.optim.lr_scheduler, topt)
    nl_train(model, opt, sched, X, y, how)
    torch_train(torch, tmodel, topt, tsched, interval, X, y)
    assert opt._steps == EPOCHS * N_ROWS // BATCH
    for k, (got, want) in enumerate(zip(params_of(model), torch_params(tmodel))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.max(np.abs(want)),
                                   err_msg=f"parameter {k}")
    # the rates the two hold at the end (a torch lr of 0 is nnlayers' 0 too)
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups],
                               [g["lr"] for g in topt.param_groups], rtol=1e-12, atol=0)


def test_step_schedule_after_a_nonfinite_batch_counts_the_applied_batches():
    """fit stops before batch 3's update: the schedule has stepped once per
    applied batch (2), and the optimizer holds the rate it set."""
    X, y = data()
    T = np.eye(SIZES[-1])[y]
    T[2 * BATCH + 1] = np.inf                   # batch 3 (from 1) of epoch 1
    model = make_mlp()
    opt = nl.SGD(model, lr=0.1, momentum=0.9)
    sched = S.CosineAnnealingLR(opt, T_max=20, interval="step")
    with pytest.raises(nl.NonFiniteLossError, match=r"epoch 1: .*at batch 3"):
        model.fit(X, T, loss=nl.MSE(), optimizer=opt, schedule=sched, epochs=2,
                  batch_size=BATCH, shuffle=False, verbose=0)
    assert sched.last_epoch == 2 and opt._steps == 2
    assert opt.lr == sched.last_lr[0]
    twin = make_mlp()
    topt = nl.SGD(twin, lr=0.1, momentum=0.9)
    tsched = S.CosineAnnealingLR(topt, T_max=20, interval="step")
    for s in (0, BATCH):
        twin.train_step(X[s:s + BATCH], T[s:s + BATCH], nl.MSE(), topt)
        tsched.step()
    assert_bitwise(params_of(model), params_of(twin))
    assert opt.lr == topt.lr


# ---------------------------------------------------------------------------
# no allocation in steady state: fit with every optimizer and a schedule
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fit_with_every_optimizer_and_schedule_allocates_nothing(name):
    cls, kw = OPTIMIZERS[name]
    X, y = data(np.float32)
    model = make_mlp(np.float32)
    opt = grouped(cls, model, kw, clip_value=0.5)
    sched = S.CosineAnnealingLR(opt, T_max=1000, interval="step")
    w = np.linspace(0.5, 1.5, N_ROWS)
    common = dict(optimizer=opt, batch_size=BATCH, verbose=0, sample_weight=w,
                  schedule=sched)
    model.fit(X, y, epochs=1, seed=0, **common)            # warm-up
    before = _core.alloc_count()
    model.fit(X, y, epochs=4, seed=1, **common)
    assert _core.alloc_count() == before
    assert opt._steps == 25 and sched.last_epoch == 25


# ---------------------------------------------------------------------------
# every argument error of fit's toolbox changes nothing
# ---------------------------------------------------------------------------

class Spy(nl.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")


def _bad_fit_arguments(X, y):
    """name: (fit keywords, exception, message)"""
    n = len(y)
    return {
        "sample_weight-negative": (dict(sample_weight=np.r_[np.ones(n - 1), -1.0]),
                                   ValueError, r"sample_weight must be finite and >= 0, got -1 "
                                               r"at index 39"),
        "sample_weight-nan": (dict(sample_weight=np.r_[np.nan, np.ones(n - 1)]), ValueError,
                              r"sample_weight must be finite and >= 0, got nan at index 0"),
        "sample_weight-shape": (dict(sample_weight=np.ones(3)), ValueError,
                                r"sample_weight must have one weight per row \(40\), got "
                                r"shape \(3,\)"),
        "class_weight-negative": (dict(class_weight={1: -2.0}), ValueError,
                                  r"class_weight\[1\] must be finite and >= 0, got -2.0"),
        "class_weight-name": (dict(class_weight="auto"), ValueError,
                              r"class_weight must be a dict or 'balanced', got 'auto'"),
        "class_weight-type": (dict(class_weight=[1.0, 2.0]), TypeError,
                              r"class_weight must be a dict or 'balanced', got list"),
        "validation_split-range": (dict(validation_split=1.0), ValueError,
                                   r"validation_split must be a float in \[0, 1\), got 1.0"),
        "validation_split-and-data": (dict(validation_split=0.2, validation_data=(X, y)),
                                      ValueError, r"give validation_data or validation_split, "
                                                  r"not both"),
        "validation_data-not-a-pair": (dict(validation_data=(X,)), ValueError,
                                       r"validation_data must be a pair \(X_val, y_val\)"),
        "validation_data-width": (dict(validation_data=(X[:, :2], y)), ValueError,
                                  r"validation_data X has 2 columns"),
        "validation_data-labels": (dict(validation_data=(X, np.full(n, 7))), ValueError,
                                   r"target labels must be in \[0, 3\), got 7"),
        "validation_data-nan": (dict(validation_data=(np.where(np.arange(n)[:, None] == 5,
                                                               np.nan, X), y)),
                                ValueError, r"validation_data X holds nan at row 5"),
        "initial_epoch-past": (dict(initial_epoch=9), ValueError,
                               r"initial_epoch \(9\) is past epochs \(2\)"),
        "initial_epoch-type": (dict(initial_epoch=1.0), TypeError,
                               r"initial_epoch must be an int >= 0, got float"),
        "metrics-unknown": (dict(metrics=["f1"]), ValueError, r"metrics\[0\]: unknown metric 'f1'"),
        "metrics-type": (dict(metrics=[3]), TypeError,
                         r"metrics\[0\] must be a name or a callable, got int"),
        "callbacks-item": (dict(callbacks=[print]), TypeError,
                           r"callbacks\[1\] is builtin_function_or_method, not an "
                           r"nnlayers.callbacks.Callback"),
        "schedule-type": (dict(schedule="cosine"), TypeError,
                          r"schedule must be an nnlayers.schedules schedule, got str"),
        "schedule-other-optimizer": ("other", ValueError,
                                     r"schedule is built on another optimizer than fit's"),
        "schedule-past-its-end": ("one-cycle", ValueError,
                                  r"the specified number of total steps is 6"),
        "schedule-driven-by-a-warmup": ("driven", ValueError,
                                        r"schedule is the after= of a LinearWarmup.*which steps "
                                        r"it: pass that schedule to fit"),
        "X-nan": (dict(X=np.where(np.arange(n)[:, None] == 3, np.inf, X)), ValueError,
                  r"X holds inf at row 3"),
    }


def _special_schedule(kind, opt):
    """fit keywords with a schedule built on opt (or on another optimizer)."""
    if kind == "other":
        return dict(schedule=S.StepLR(nl.Adam(make_mlp()), 2))
    if kind == "one-cycle":
        return dict(schedule=S.OneCycleLR(opt, max_lr=0.1, total_steps=6))
    after = S.CosineAnnealingLR(opt, T_max=30, interval="step")
    S.LinearWarmup(opt, steps=3, after=after)
    return dict(schedule=after)


@pytest.mark.parametrize("case", sorted(_bad_fit_arguments(*data())))
def test_fit_argument_error_changes_nothing(case):
    X, y = data()
    kwargs, exc, msg = _bad_fit_arguments(X, y)[case]
    model = make_mlp()
    opt = nl.Adam(model, lr=0.01)
    sched = S.CosineAnnealingLR(opt, T_max=50, interval="step")
    # a first fit: the optimizer has state, the model an optimizer, the
    # schedule a step count
    model.fit(X, y, optimizer=opt, schedule=sched, epochs=1, batch_size=BATCH, seed=0,
              verbose=0)
    special = kwargs if isinstance(kwargs, str) else None
    if special:
        kwargs = _special_schedule(special, opt)
    sched_state = sched.state_dict()
    new_opt = nl.Adam(model, lr=0.02)
    before = (params_of(model), state_arrays(opt), opt.param_groups, opt._steps)
    spy = Spy()
    args = dict(X=X, y=y, optimizer=opt if "schedule" in kwargs else new_opt,
                epochs=2, batch_size=BATCH, seed=1, verbose=0)
    args.update(kwargs)
    args["callbacks"] = [spy] + list(args.get("callbacks", []))
    with pytest.raises(exc, match=msg):
        model.fit(args.pop("X"), args.pop("y"), **args)
    assert_bitwise(params_of(model), before[0])
    assert_bitwise(state_arrays(opt), before[1])
    assert (opt.param_groups, opt._steps) == before[2:]
    assert new_opt._steps == 0
    assert model.optimizer is opt                 # not replaced by the failed fit
    assert sched.state_dict() == sched_state
    assert spy.calls == []                        # no callback was started
    # and the model still trains exactly as an untouched twin
    twin = make_mlp()
    topt = nl.Adam(twin, lr=0.01)
    tsched = S.CosineAnnealingLR(topt, T_max=50, interval="step")
    twin.fit(X, y, optimizer=topt, schedule=tsched, epochs=1, batch_size=BATCH, seed=0,
             verbose=0)
    if special:               # building a schedule sets its optimizer's rates
        _special_schedule(special, topt)
    for m, o, s in ((model, opt, sched), (twin, topt, tsched)):
        m.fit(X, y, optimizer=o, schedule=s, epochs=2, initial_epoch=1, batch_size=BATCH,
              seed=0, verbose=0)
    assert_bitwise(params_of(model), params_of(twin))


BAD_CALLBACKS = [
    (lambda: nl.callbacks.EarlyStopping(mode="best"), ValueError,
     r"mode must be 'auto', 'min' or 'max', got 'best'"),
    (lambda: nl.callbacks.EarlyStopping(patience=-1), ValueError,
     r"patience must be an int >= 0, got -1"),
    (lambda: nl.callbacks.EarlyStopping(start_from_epoch=-2), ValueError,
     r"start_from_epoch must be an int >= 0, got -2"),
    (lambda: nl.callbacks.EarlyStopping(monitor=3), TypeError,
     r"monitor must be a str \(a key of fit's logs\), got int"),
    (lambda: nl.callbacks.ReduceLROnPlateau(factor=1.0), ValueError,
     r"factor must be in \(0, 1\) \(a reduction\), got 1.0"),
    (lambda: nl.callbacks.ReduceLROnPlateau(min_lr=-1), ValueError,
     r"min_lr must be >= 0, got -1"),
    (lambda: nl.callbacks.ModelCheckpoint(7), TypeError, r"path must be a str or path, got int"),
    (lambda: nl.callbacks.LambdaCallback(on_epoch_end=3), TypeError,
     r"on_epoch_end must be callable, got int"),
]


@pytest.mark.parametrize("make,exc,msg", BAD_CALLBACKS,
                         ids=[m for _, _, m in BAD_CALLBACKS])
def test_callback_argument_errors(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "complex128"])
def test_astype_refuses_other_dtypes(dtype):
    model = make_mlp(np.float32)
    before = params_of(model)
    with pytest.raises(TypeError, match=r"astype takes numpy.float32 or numpy.float64, got "):
        model.astype(dtype)
    assert_bitwise(params_of(model), before)
    assert model.astype(np.float64).dtype == np.float64
