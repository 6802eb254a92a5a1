"""Tests of the optimizers Adam, AdamW, RMSprop and Adagrad, and of gradient
clipping (clip_norm=, clip_value=) on every optimizer, SGD included.

The expected parameters come from iterating the NumPy twins in
``nnlayers._reference`` (adam_step, ..., clip_grad_norm, clip_grad_value)
on gradients that the NumPy reference model computes, never from the code
under test; torch.optim, when installed, is a second peer. Also: the batch
split of training steps, state_dict / load_state_dict, errors, and no
allocation in steady state.
"""
import copy

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core
from nnlayers import _reference as ref

DTYPES = [np.float32, np.float64]
SIZES = (3, 5, 4, 3)
STEPS = 20

# name: (class, keyword arguments)
CONFIGS = {
    "sgd-momentum-wd": (nl.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd-nesterov": (nl.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (nl.Adam, dict(lr=0.01)),
    "adam-wd": (nl.Adam, dict(lr=0.01, weight_decay=0.1)),
    "adam-amsgrad-wd": (nl.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    "adam-small-beta1": (nl.Adam, dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6)),
    "adamw": (nl.AdamW, dict(lr=0.01)),
    "adamw-amsgrad": (nl.AdamW, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    # eps after the bias correction (scikit-learn's and Keras's Adam; no torch twin)
    "adam-eps-hat": (nl.Adam, dict(lr=0.01, eps=1e-3, eps_hat=True)),
    "adamw-eps-hat": (nl.AdamW, dict(lr=0.01, eps=1e-3, eps_hat=True, amsgrad=True)),
    "rmsprop": (nl.RMSprop, dict(lr=0.01)),
    "rmsprop-wd": (nl.RMSprop, dict(lr=0.01, weight_decay=0.1)),
    "rmsprop-centered": (nl.RMSprop, dict(lr=0.01, centered=True)),
    "rmsprop-momentum": (nl.RMSprop, dict(lr=0.01, momentum=0.9)),
    "rmsprop-centered-momentum": (nl.RMSprop, dict(lr=0.005, alpha=0.3, centered=True,
                                                   momentum=0.5, weight_decay=0.01)),
    "adagrad": (nl.Adagrad, dict(lr=0.1)),
    "adagrad-all": (nl.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01,
                                     initial_accumulator_value=0.5)),
}
CLIPS = {"none": {}, "value": {"clip_value": 0.05}, "norm": {"clip_norm": 0.3}}

# defaults of each class (the reference needs every hyperparameter)
DEFAULTS = {
    nl.SGD: dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    nl.Adam: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  eps_hat=False),
    nl.AdamW: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                   eps_hat=False),
    nl.RMSprop: dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False),
    nl.Adagrad: dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                     eps=1e-10),
}


def make_mlp(dtype=np.float64, seed=0, sizes=SIZES):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nl.Linear(a, b, dtype=dtype, seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nl.Tanh())
    return nl.Sequential(*layers)


def params_of(model):
    return [np.array(v) for v in model.parameters().values()]


def segment_order(model, opt):
    """Per segment of opt, the index of its tensor in model.parameters()."""
    ptrs = [v.ctypes.data for v in model.parameters().values()]
    return [ptrs.index(layer.params[t].ctypes.data) for layer, t, _ in opt._segments]


def ref_grads(params, x, y):
    """dL/dparams of the NumPy reference MLP (Linear, Tanh, ..., softmax
    cross-entropy), params in model.parameters() order."""
    specs, k = [], 0
    for i in range(len(params) // 2):
        if i:
            specs.append(("tanh", None, 0.01))
        specs.append(("linear", {"W": params[k], "b": params[k + 1]}, 0.01))
        k += 2
    out, caches = ref.sequential_forward(specs, x)
    _, gz = ref.softmax_cross_entropy(out, y)
    _, grads = ref.sequential_backward(specs, caches, gz)
    return [g for gr in grads if gr for g in (gr["W"], gr["b"])]


def ref_update(cls, p, g, state, step, hyper):
    """One reference update of one parameter: (new p, new state)."""
    h = dict(hyper)
    if cls is nl.SGD:
        v = None if state is None else state.get("momentum_buffer")
        p, v = ref.sgd_step(p, g, v, **h)
        return p, ({} if v is None else {"momentum_buffer": v})
    if cls is nl.Adam:
        return ref.adam_step(p, g, state, step, **h)
    if cls is nl.AdamW:
        return ref.adamw_step(p, g, state, step, **h)
    if cls is nl.RMSprop:
        return ref.rmsprop_step(p, g, state, **h)
    return ref.adagrad_step(p, g, state, step, **h)


class RefOptimizer:
    """The reference optimizer over a list of parameters, each with its
    group's hyperparameters: clip by norm, then by value, then update."""

    def __init__(self, cls, params, hypers, clip_norm=None, clip_value=None):
        self.cls, self.p, self.hypers = cls, [np.array(p) for p in params], hypers
        self.state = [None] * len(params)
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.t = 0
        self.clipped = 0          # steps in which clipping changed something

    def step(self, grads):
        self.t += 1
        before = [np.array(g) for g in grads]
        if self.clip_norm:
            grads, _ = ref.clip_grad_norm(grads, self.clip_norm)
        if self.clip_value:
            grads = [ref.clip_grad_value(g, self.clip_value) for g in grads]
        self.clipped += any(not np.array_equal(a, b) for a, b in zip(before, grads))
        for k, g in enumerate(grads):
            self.p[k], self.state[k] = ref_update(self.cls, self.p[k], g, self.state[k],
                                                  self.t, self.hypers[k])


def hypers_for(cls, kw, groups):
    """Per parameter (W, b, W, b, ...) the reference's hyperparameters:
    one group, or biases in a second group without weight decay and at
    half the learning rate."""
    base = dict(DEFAULTS[cls])
    base.update(kw)
    n = 2 * (len(SIZES) - 1)
    if groups == "one":
        return [base] * n
    bias = dict(base, weight_decay=0.0, lr=base["lr"] / 2)
    return [base if k % 2 == 0 else bias for k in range(n)]


def make_optimizer(cls, model, kw, groups, **clip):
    if groups == "one":
        return cls(model, **kw, **clip)
    named = model.named_parameters()
    weights = [p for n, p in named if n.endswith(".W")]
    biases = [p for n, p in named if n.endswith(".b")]
    lr = dict(DEFAULTS[cls], **kw)["lr"]
    return cls([{"params": weights},
                {"params": biases, "weight_decay": 0.0, "lr": lr / 2}], **kw, **clip)


def assert_close(got, want, dtype, what, rtol32=1e-5):
    """Equal to rounding: elementwise rtol, and the same relative to the
    tensor's largest value (float32 rounding of the gradients is amplified
    where an adaptive step divides by a tiny root mean square)."""
    rtol = 1e-12 if dtype == np.float64 else rtol32
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.max(np.abs(want))),
                               err_msg=what)


def batch(rng, dtype, n=8):
    return rng.standard_normal((n, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], n)


def one_step(model, opt, x, y, how, loss=None):
    loss = loss or nl.SoftmaxCrossEntropy()
    if how == "train_step":
        return model.train_step(x, y, loss, opt)
    opt.zero_grad()
    value = loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    opt.step()
    return value


# ---------------------------------------------------------------------------
# every optimizer against its NumPy twin
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("groups", ["one", "two"])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("how", ["train_step", "step"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_matches_reference(cfg, dtype, how, clip, groups):
    cls, kw = CONFIGS[cfg]
    model = make_mlp(dtype, seed=1)
    opt = make_optimizer(cls, model, kw, groups, **CLIPS[clip])
    twin = RefOptimizer(cls, params_of(model), hypers_for(cls, kw, groups), **CLIPS[clip])
    rng = np.random.default_rng(3)
    start = params_of(model)
    for _ in range(STEPS):
        x, y = batch(rng, dtype)
        grads = ref_grads(twin.p, x, y)
        one_step(model, opt, x, y, how)
        twin.step(grads)
        for k, (got, want) in enumerate(zip(params_of(model), twin.p)):
            assert got.dtype == np.dtype(dtype)
            assert_close(got, want, dtype, f"parameter {k}")
    assert opt._steps == STEPS
    assert any(not np.array_equal(a, b) for a, b in zip(start, params_of(model)))
    if clip != "none":
        assert twin.clipped >= STEPS // 2          # the clipping did act
    # the state too, by torch's names
    state = opt.state_dict()["state"]
    for k, i in enumerate(segment_order(model, opt)):
        assert sorted(state[k]) == sorted(twin.state[i])
        for name, want in twin.state[i].items():
            # RMSprop's momentum_buffer sums g / rms, whose float32 rounding
            # grows most where rms is small: 1e-4 for float32 state
            assert_close(state[k][name], want, dtype, f"{k} {name}", rtol32=1e-4)


def test_reference_twins_first_steps_in_closed_form():
    """The twins themselves, on their first step, where the rules reduce to
    closed forms (no C code involved)."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(7), rng.standard_normal(7)
    lr, eps = 0.1, 1e-3
    # Adam: m = (1-b1) g, v = (1-b2) g^2: p - lr g / (|g| + eps)
    new, st = ref.adam_step(p, g, None, 1, lr=lr, eps=eps)
    np.testing.assert_allclose(new, p - lr * g / (np.abs(g) + eps), rtol=1e-14)
    np.testing.assert_allclose(st["exp_avg"], 0.1 * g, rtol=1e-14)
    np.testing.assert_allclose(st["exp_avg_sq"], 0.001 * g * g, rtol=1e-14)
    # eps_hat (scikit-learn's step): p - lr sqrt(bc2) / bc1 m / (sqrt(v) + eps),
    # written here as scikit-learn writes it, at step 2
    m1, v1 = 0.1 * g, 0.001 * g * g
    g2 = rng.standard_normal(7)
    p1, st1 = ref.adam_step(p, g, None, 1, lr=lr, eps=eps, eps_hat=True)
    new, _ = ref.adam_step(p1, g2, st1, 2, lr=lr, eps=eps, eps_hat=True)
    m2, v2 = 0.9 * m1 + 0.1 * g2, 0.999 * v1 + 0.001 * g2 * g2
    lr_t = lr * np.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    np.testing.assert_allclose(new, p1 - lr_t * m2 / (np.sqrt(v2) + eps), rtol=1e-13)
    # AdamW decays first
    new, _ = ref.adamw_step(p, g, None, 1, lr=lr, eps=eps, weight_decay=0.5)
    np.testing.assert_allclose(new, p * (1 - lr * 0.5) - lr * g / (np.abs(g) + eps),
                               rtol=1e-14)
    # RMSprop: s = (1-alpha) g^2
    new, st = ref.rmsprop_step(p, g, None, lr=lr, alpha=0.75, eps=eps)
    np.testing.assert_allclose(new, p - lr * g / (0.5 * np.abs(g) + eps), rtol=1e-14)
    # centered: a = (1-alpha) g, s - a^2 = (0.25 - 0.0625) g^2
    new, st = ref.rmsprop_step(p, g, None, lr=lr, alpha=0.75, eps=eps, centered=True,
                               momentum=0.9)
    d = np.sqrt(0.1875) * np.abs(g) + eps
    np.testing.assert_allclose(st["momentum_buffer"], g / d, rtol=1e-14)
    np.testing.assert_allclose(new, p - lr * g / d, rtol=1e-14)
    # Adagrad at step 3 with lr_decay: clr = lr / (1 + 2 lr_decay)
    new, st = ref.adagrad_step(p, g, {"sum": np.full(7, 4.0)}, 3, lr=lr, lr_decay=0.5,
                               eps=eps)
    np.testing.assert_allclose(new, p - lr / 2 * g / (np.sqrt(4 + g * g) + eps), rtol=1e-14)
    # clipping
    grads = [np.array([3.0, 0.0]), np.array([[4.0]])]
    clipped, norm = ref.clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped[0], [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    assert ref.clip_grad_norm(grads, 10.0)[0][1][0, 0] == 4.0
    np.testing.assert_array_equal(ref.clip_grad_value(np.array([-2.0, 0.5, np.nan, 3.0]), 1.0),
                                  [-1.0, 0.5, np.nan, 1.0])


def test_adagrad_initial_accumulator_is_in_the_state_at_creation():
    model = make_mlp(np.float32)
    opt = nl.Adagrad(model, initial_accumulator_value=0.25)
    for st in opt.state_dict()["state"].values():
        assert st["sum"].dtype == np.float32
        assert np.all(st["sum"] == np.float32(0.25))


def test_clip_norm_scales_the_gradients_step_leaves():
    """optimizer.step() clips the gradients in place (as torch's
    clip_grad_norm_): afterwards they hold what the update used."""
    model = make_mlp(np.float64)
    opt = nl.SGD(model, lr=0.1, clip_norm=1e-3)
    rng = np.random.default_rng(0)
    x, y = batch(rng, np.float64)
    loss = nl.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    grads = [np.array(g) for g in model.gradients().values()]
    want, norm = ref.clip_grad_norm(grads, 1e-3)
    assert norm > 1e-3
    opt.step()
    got = list(model.gradients().values())
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    assert np.sqrt(sum(np.sum(g ** 2) for g in got)) == pytest.approx(1e-3, rel=1e-5)


def test_clip_properties_and_repr():
    model = make_mlp()
    opt = nl.Adam(model, clip_norm=1.0)
    assert opt.clip_norm == 1.0 and opt.clip_value is None
    opt.clip_value = 0.5
    opt.clip_norm = None
    assert opt.clip_norm is None and opt.clip_value == 0.5
    assert repr(opt) == ("Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, "
                         "amsgrad=False, clip_value=0.5, layers=3)")
    assert repr(nl.Adagrad(model)).startswith("Adagrad(lr=0.01, lr_decay=0.0")
    assert repr(nl.RMSprop(model)).startswith("RMSprop(lr=0.01, alpha=0.99")
    assert repr(nl.AdamW(model)).startswith("AdamW(lr=0.001, betas=(0.9, 0.999)")


def test_param_groups_betas_and_set_hyper():
    model = make_mlp()
    opt = nl.Adam([{"params": [model[0]], "betas": (0.8, 0.9)}, {"params": [model[2], model[4]]}],
                  lr=0.01)
    g0, g1 = opt.param_groups
    assert g0["betas"] == (0.8, 0.9) and (g0["beta1"], g0["beta2"]) == (0.8, 0.9)
    assert g1["betas"] == (0.9, 0.999)
    assert sorted(g0) == ["amsgrad", "beta1", "beta2", "betas", "eps", "eps_hat", "lr", "weight_decay"]
    opt.set_hyper("betas", (0.5, 0.6), group=1)
    opt.set_hyper("beta1", 0.7)
    assert [g["betas"] for g in opt.param_groups] == [(0.7, 0.9), (0.7, 0.6)]
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    # a failing set changes no group
    with pytest.raises(ValueError, match=r"beta2 \(betas\[1\]\) must be a finite number in "
                                         r"\[0, 1\), got 1"):
        opt.set_hyper("betas", (0.1, 1.0))
    assert [g["betas"] for g in opt.param_groups] == [(0.7, 0.9), (0.7, 0.6)]


def test_parameter_views_make_groups():
    """Views from layer.params, model.parameters() and named_parameters()
    pick single tensors; a layer or model in a group gives all of its."""
    model = make_mlp()
    named = dict(model.named_parameters())
    opt = nl.SGD([{"params": [named["0.W"], model[2].params["W"], model.parameters()["4.W"]]},
                  {"params": [named["0.b"], named["2.b"], named["4.b"]], "lr": 0.5}], lr=0.1)
    assert [(ly.name, t, g) for ly, t, g in opt._segments] == [
        (model[0].name, "W", 0), (model[2].name, "W", 0), (model[4].name, "W", 0),
        (model[0].name, "b", 1), (model[2].name, "b", 1), (model[4].name, "b", 1)]
    # the same tensor twice in one group counts once
    opt = nl.Adam([model[0].params["W"], model[0].params["W"], model[2]])
    assert [t for _, t, _ in opt._segments] == ["W", "W", "b"]


# ---------------------------------------------------------------------------
# torch.optim as a peer
# ---------------------------------------------------------------------------

TORCH = {
    "sgd-momentum-wd": "SGD", "sgd-nesterov": "SGD", "adam": "Adam", "adam-wd": "Adam",
    "adam-amsgrad-wd": "Adam", "adam-small-beta1": "Adam", "adamw": "AdamW",
    "adamw-amsgrad": "AdamW", "rmsprop": "RMSprop", "rmsprop-wd": "RMSprop",
    "rmsprop-centered": "RMSprop", "rmsprop-momentum": "RMSprop",
    "rmsprop-centered-momentum": "RMSprop", "adagrad": "Adagrad", "adagrad-all": "Adagrad",
}


def torch_mlp(torch, model):
    layers = []
    for layer in model:
        if isinstance(layer, nl.Linear):
            W, b = layer.params["W"], layer.params["b"]
            t = torch.nn.Linear(W.shape[0], W.shape[1], dtype=torch.float64)
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(np.array(W.T)))
                t.bias.copy_(torch.from_numpy(np.array(b)))
            layers.append(t)
        else:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def torch_params(tmodel):
    out = []
    for m in tmodel:
        if hasattr(m, "weight"):
            out += [m.weight.detach().numpy().T, m.bias.detach().numpy()]
    return out


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("how", ["train_step", "step"])
@pytest.mark.parametrize("cfg", list(TORCH))
def test_matches_torch(cfg, how, clip):
    torch = pytest.importorskip("torch")
    cls, kw = CONFIGS[cfg]
    model = make_mlp(np.float64, seed=5)
    tmodel = torch_mlp(torch, model)
    opt = cls(model, **kw, **CLIPS[clip])
    tparams = [p for m in tmodel if hasattr(m, "weight") for p in (m.weight, m.bias)]
    topt = getattr(torch.optim, TORCH[cfg])(tparams, **kw, foreach=False)
    rng = np.random.default_rng(9)
    for _ in range(STEPS):
        x, y = batch(rng, np.float64)
        one_step(model, opt, x, y, how)
        topt.zero_grad()
        out = tmodel(torch.from_numpy(x))
        torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
        if "clip_norm" in CLIPS[clip]:
            torch.nn.utils.clip_grad_norm_(tparams, CLIPS[clip]["clip_norm"])
        if "clip_value" in CLIPS[clip]:
            torch.nn.utils.clip_grad_value_(tparams, CLIPS[clip]["clip_value"])
        topt.step()
        for k, (got, want) in enumerate(zip(params_of(model), torch_params(tmodel))):
            scale = np.max(np.abs(want))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale,
                                       err_msg=f"parameter {k}")
    # the state, by torch's names
    state = opt.state_dict()["state"]
    for k, p in enumerate(tparams):
        tstate = {n: v for n, v in topt.state[p].items()
                  if n != "step" and v is not None}
        assert sorted(state[k]) == sorted(tstate)
        for name, v in tstate.items():
            want = v.detach().numpy().T if p.ndim == 2 else v.detach().numpy()
            np.testing.assert_allclose(state[k][name], want, rtol=1e-10,
                                       atol=1e-12 * np.max(np.abs(want)), err_msg=name)


# ---------------------------------------------------------------------------
# split steps
# ---------------------------------------------------------------------------

@pytest.fixture
def two_threads():
    old_threads, old_mode = nl.get_num_threads(), _core._split_mode(-1)
    _core._split_mode(old_mode)
    nl.set_num_threads(2)
    yield
    nl.set_num_threads(old_threads)
    _core._split_mode(old_mode)


def split_run(mode, cfg, clip, n=37, steps=4):
    old = _core._split_mode(mode)
    try:
        cls, kw = CONFIGS[cfg]
        model = make_mlp(np.float64, seed=2, sizes=(13, 40, 24, 5))
        opt = cls(model, **kw, **CLIPS[clip])
        rng = np.random.default_rng(4)
        x = rng.standard_normal((n, 13))
        y = rng.integers(0, 5, n)
        before = _core._split_steps()
        losses = [model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt) for _ in range(steps)]
        return losses, params_of(model), opt.state_dict()["state"], _core._split_steps() - before
    finally:
        _core._split_mode(old)


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("cfg", ["sgd-momentum-wd", "adam-amsgrad-wd", "adamw",
                                 "rmsprop-centered-momentum", "adagrad-all"])
def test_split_step_is_the_whole_step(two_threads, cfg, clip):
    whole = split_run(0, cfg, clip)
    split = split_run(1, cfg, clip)
    assert whole[3] == 0 and split[3] == 4
    np.testing.assert_allclose(split[0], whole[0], rtol=1e-12)
    for a, b in zip(split[1], whole[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for k in whole[2]:
        for name in whole[2][k]:
            np.testing.assert_allclose(split[2][k][name], whole[2][k][name], rtol=1e-10,
                                       atol=1e-14)


# ---------------------------------------------------------------------------
# vector sets: the update rules run 16-wide (AVX-512), 8-wide (AVX2) or
# scalar, chosen by cpuid and capped by the test hook _core._simd
# ---------------------------------------------------------------------------

SIMD_CAPS = [name for name in ("avx512", "avx2") if _core._simd(name) == name] + ["none"]
_core._simd("avx512")   # back to the CPU's best


def run_under(cap, cfg, dtype, clip, steps=6):
    """Parameters and state after `steps` optimizer steps on fixed random
    gradients (no products: only the update rule runs), with the vector
    set capped at `cap`; segments of 37 * 45 and 45 values have whole
    vectors and a tail on every set."""
    old = _core._simd()
    try:
        _core._simd(cap)
        assert _core._simd() == cap
        cls, kw = CONFIGS[cfg]
        model = make_mlp(dtype, seed=5, sizes=(37, 45, 7))
        opt = cls(model, **kw, **CLIPS[clip])
        rng = np.random.default_rng(6)
        for _ in range(steps):
            for g in model.gradients().values():
                g[...] = rng.standard_normal(g.shape)
            opt.step()
        return params_of(model), opt.state_dict()["state"]
    finally:
        _core._simd(old)


@pytest.mark.parametrize("clip", ["none", "norm"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_update_rules_bitwise_equal_across_vector_sets(cfg, dtype, clip):
    runs = {cap: run_under(cap, cfg, dtype, clip) for cap in SIMD_CAPS}
    first = runs[SIMD_CAPS[0]]
    start = params_of(make_mlp(dtype, seed=5, sizes=(37, 45, 7)))
    assert any(not np.array_equal(a, b) for a, b in zip(first[0], start))
    for cap in SIMD_CAPS[1:]:
        params, state = runs[cap]
        for a, b in zip(params, first[0]):
            np.testing.assert_array_equal(a, b, err_msg=f"{cap} vs {SIMD_CAPS[0]}")
        for k in first[1]:
            for name in first[1][k]:
                np.testing.assert_array_equal(state[k][name], first[1][k][name],
                                              err_msg=f"{cap} vs {SIMD_CAPS[0]}: {name}")


# ---------------------------------------------------------------------------
# state_dict
# ---------------------------------------------------------------------------

def train(model, opt, rng, steps, how="train_step"):
    for _ in range(steps):
        x, y = batch(rng, model[0].dtype)
        one_step(model, opt, x, y, how)


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_state_dict_resume_is_bitwise(cfg, dtype, clip):
    cls, kw = CONFIGS[cfg]
    straight = make_mlp(dtype, seed=7)
    opt = make_optimizer(cls, straight, kw, "two", **CLIPS[clip])
    train(straight, opt, np.random.default_rng(1), STEPS)

    first = make_mlp(dtype, seed=7)
    opt1 = make_optimizer(cls, first, kw, "two", **CLIPS[clip])
    rng = np.random.default_rng(1)
    train(first, opt1, rng, STEPS // 2)
    sd = opt1.state_dict()
    assert sd["kind"] == cls._kind and sd["steps"] == STEPS // 2
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1, 2], [3, 4, 5]]
    # copies, not views
    for st in sd["state"].values():
        for a in st.values():
            assert not np.shares_memory(a, opt1._state_view())
    resumed = make_mlp(dtype, seed=99)
    resumed.set_weights(first.get_weights())
    other_kw = dict(kw, lr=0.123)         # overwritten by the state_dict
    opt2 = make_optimizer(cls, resumed, other_kw, "two")
    opt2.load_state_dict(sd)
    assert opt2.param_groups == opt1.param_groups
    assert (opt2.clip_norm, opt2.clip_value) == (opt1.clip_norm, opt1.clip_value)
    train(resumed, opt2, rng, STEPS - STEPS // 2)
    for a, b in zip(params_of(resumed), params_of(straight)):
        np.testing.assert_array_equal(a, b)
    got, want = opt2.state_dict(), opt.state_dict()
    assert got["steps"] == want["steps"] == STEPS
    for k in want["state"]:
        for name in want["state"][k]:
            np.testing.assert_array_equal(got["state"][k][name], want["state"][k][name])


# ---------------------------------------------------------------------------
# errors: a clear message naming the argument; nothing changes
# ---------------------------------------------------------------------------

def snapshot(model, opt=None):
    out = {"params": params_of(model)}
    if opt is not None:
        sd = opt.state_dict()
        out["opt"] = (sd["steps"], sd["clip_norm"], sd["clip_value"], sd["param_groups"],
                      {k: {n: np.array(a) for n, a in st.items()}
                       for k, st in sd["state"].items()})
    return out


def assert_same(a, b):
    for x, y in zip(a["params"], b["params"]):
        np.testing.assert_array_equal(x, y)
    if "opt" in a:
        assert a["opt"][:4] == b["opt"][:4]
        for k in a["opt"][4]:
            for n in a["opt"][4][k]:
                np.testing.assert_array_equal(a["opt"][4][k][n], b["opt"][4][k][n])


BAD_HYPER = [
    (nl.Adam, dict(lr=-1.0), ValueError, r"lr must be a finite number >= 0, got -1$"),
    (nl.Adam, dict(lr=float("nan")), ValueError, r"lr must be a finite number >= 0, got nan"),
    (nl.Adam, dict(betas=(1.0, 0.9)), ValueError,
     r"beta1 \(betas\[0\]\) must be a finite number in \[0, 1\), got 1$"),
    (nl.AdamW, dict(betas=(0.9, -0.1)), ValueError,
     r"beta2 \(betas\[1\]\) must be a finite number in \[0, 1\), got -0.1"),
    (nl.Adam, dict(betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\), got 0.9"),
    (nl.Adam, dict(betas=(0.9, 0.99, 0.999)), TypeError, r"betas must be a pair"),
    (nl.Adam, dict(eps=-1e-8), ValueError, r"eps must be a finite number >= 0, got -1e-08"),
    (nl.AdamW, dict(weight_decay=-0.01), ValueError,
     r"weight_decay must be a finite number >= 0, got -0.01"),
    (nl.RMSprop, dict(alpha=-0.5), ValueError, r"alpha must be a finite number >= 0, got -0.5"),
    (nl.RMSprop, dict(momentum=float("inf")), ValueError,
     r"momentum must be a finite number >= 0, got inf"),
    (nl.RMSprop, dict(eps=float("nan")), ValueError, r"eps must be a finite number >= 0"),
    (nl.Adagrad, dict(lr_decay=-1.0), ValueError,
     r"lr_decay must be a finite number >= 0, got -1"),
    (nl.Adagrad, dict(initial_accumulator_value=-0.1), ValueError,
     r"initial_accumulator_value must be a finite number >= 0, got -0.1"),
    (nl.Adagrad, dict(lr="fast"), TypeError, r"must be real number"),
    (nl.SGD, dict(lr=0.1, clip_norm=0.0), ValueError,
     r"clip_norm must be None or a finite number > 0, got 0$"),
    (nl.Adam, dict(clip_norm=float("inf")), ValueError,
     r"clip_norm must be None or a finite number > 0, got inf"),
    (nl.RMSprop, dict(clip_value=-1.0), ValueError,
     r"clip_value must be None or a finite number > 0, got -1"),
    (nl.Adagrad, dict(clip_value="big"), TypeError,
     r"clip_value must be None or a number > 0, got str"),
]


@pytest.mark.parametrize("cls,kw,exc,msg", BAD_HYPER,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _, _ in BAD_HYPER])
def test_bad_hyperparameters(cls, kw, exc, msg):
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(exc, match=msg):
        cls(model, **kw)
    assert_same(before, snapshot(model))
    opt = cls(model, **({"lr": 0.1} if cls is nl.SGD else {}))   # it still works
    train(model, opt, np.random.default_rng(0), 2)


@pytest.mark.parametrize("cls,name,value,exc,msg", [
    (nl.Adam, "amsgrad", True, ValueError,
     r"cannot change amsgrad of this optimizer: it would change the state kept for each "
     r"parameter \(exp_avg, exp_avg_sq, max_exp_avg_sq, not exp_avg, exp_avg_sq\)"),
    (nl.RMSprop, "centered", True, ValueError, r"cannot change centered"),
    (nl.RMSprop, "momentum", 0.9, ValueError, r"cannot change momentum"),
    (nl.SGD, "momentum", 0.9, ValueError, r"cannot change momentum .*\(momentum_buffer, not "
                                          r"no state\)"),
    (nl.Adam, "momentum", 0.9, AttributeError, r"adam has no hyperparameter 'momentum'"),
    (nl.Adam, "eps", -1.0, ValueError, r"eps must be a finite number >= 0"),
    (nl.SGD, "nesterov", True, ValueError, r"nesterov=True needs momentum > 0"),
])
def test_bad_set_hyper_changes_nothing(cls, name, value, exc, msg):
    model = make_mlp()
    opt = cls(model, lr=0.1)
    train(model, opt, np.random.default_rng(0), 3)
    before = snapshot(model, opt)
    with pytest.raises(exc, match=msg):
        opt.set_hyper(name, value)
    assert_same(before, snapshot(model, opt))


def test_rmsprop_momentum_can_change_while_it_keeps_the_state():
    model = make_mlp()
    opt = nl.RMSprop(model, momentum=0.9)
    opt.set_hyper("momentum", 0.5)
    assert opt.param_groups[0]["momentum"] == 0.5


def bad_groups(model):
    W = model[0].params["W"]
    return {
        "not-a-parameter": ([{"params": [np.zeros((3, 5))]}], ValueError,
                            r"parameter group 0: item 0 is an ndarray that is not an nnlayers "
                            r"parameter"),
        "slice": ([{"params": [W[:2]]}], ValueError,
                  r"item 0 is an ndarray in .*'s memory but not one of its parameters \(a "
                  r"slice"),
        "plain-ndarray": ([np.ones(3)], ValueError,
                          r"params: item 0 is an ndarray that is not an nnlayers parameter"),
        "twice": ([{"params": [model]}, {"params": [W]}], ValueError,
                  r"'s W is in parameter groups 0 and 1: each parameter can be in one group"),
        "no-params": ([{"lr": 0.1}], TypeError, r"parameter group 0 has no 'params'"),
        "wrong-item": ([{"params": [model, "W"]}], TypeError,
                       r"parameter group 0: item 1 is str, not an nnlayers layer or model "
                       r"\(nor a parameter view\)"),
        "unknown-hyper": ([{"params": [model], "momentum": 0.9}], TypeError,
                          r"adam takes no hyperparameter 'momentum'"),
        "bad-group-value": ([{"params": [model], "eps": -1}], ValueError,
                            r"eps must be a finite number >= 0, got -1"),
    }


@pytest.mark.parametrize("case", list(bad_groups(make_mlp())))
def test_bad_parameter_groups(case):
    model = make_mlp()
    groups, exc, msg = bad_groups(model)[case]
    before = snapshot(model)
    with pytest.raises(exc, match=msg):
        nl.Adam(groups)
    assert_same(before, snapshot(model))


def stale_view_group():
    layer = nl.Linear(3, 5, dtype=np.float64)
    W = layer.params["W"]          # taken before the layer moves into a model
    nl.Sequential(layer, nl.Tanh(), nl.Linear(5, 2, dtype=np.float64))
    return W


def test_view_taken_before_the_model_was_built_is_refused():
    with pytest.raises(ValueError, match=r"a view taken before the layer joined a model"):
        nl.SGD([stale_view_group()], lr=0.1)


def bad_state_dicts(sd):
    """name: (change to a copy of sd, exception, message)"""
    def edit(f):
        def make():
            d = copy.deepcopy(sd)
            f(d)
            return d
        return make

    def set_(path, value):
        def f(d):
            obj = d
            for k in path[:-1]:
                obj = obj[k]
            obj[path[-1]] = value
        return f
    return {
        "not-a-dict": (lambda: [sd], TypeError, r"state_dict must be a dict"),
        "missing-key": (edit(lambda d: d.pop("steps")), ValueError,
                        r"state_dict: missing keys \['steps'\], unknown keys \[\]"),
        "unknown-key": (edit(set_(["extra"], 1)), ValueError, r"unknown keys \['extra'\]"),
        "kind": (edit(set_(["kind"], "sgd")), ValueError,
                 r"state_dict: kind is 'sgd', this optimizer is 'adam'"),
        "group-count": (edit(lambda d: d["param_groups"].pop()), ValueError,
                        r"param_groups has 1 groups, this optimizer 2"),
        "group-params": (edit(set_(["param_groups", 0, "params"], [0, 2, 4])), ValueError,
                         r"param_groups\[0\] holds parameters \[0, 2, 4\], this optimizer's "
                         r"group 0 holds \[0, 1, 2\]"),
        "group-value": (edit(set_(["param_groups", 1, "beta2"], 1.5)), ValueError,
                        r"param_groups\[1\]: .*betas and beta2 disagree|param_groups\[1\]: "
                        r"beta2"),
        "group-betas": (edit(lambda d: (d["param_groups"][1].pop("beta1"),
                                        d["param_groups"][1].pop("beta2"),
                                        d["param_groups"][1].update(betas=(0.9, 1.0)))),
                        ValueError, r"state_dict: param_groups\[1\]: beta2 \(betas\[1\]\) must "
                                    r"be a finite number in \[0, 1\), got 1"),
        "group-layout": (edit(set_(["param_groups", 0, "amsgrad"], True)), ValueError,
                         r"state_dict: param_groups\[0\]: it would change the state kept"),
        "group-unknown": (edit(set_(["param_groups", 0, "momentum"], 0.9)), TypeError,
                          r"state_dict: param_groups\[0\]: adam takes no hyperparameter "
                          r"'momentum'"),
        "state-keys": (edit(lambda d: d["state"].pop(5)), ValueError,
                       r"state has entries \[0, 1, 2, 3, 4\], this optimizer has parameters "
                       r"0 \.\. 5"),
        "state-names": (edit(lambda d: d["state"][3].pop("exp_avg")), ValueError,
                        r"state\[3\] \(.*\.b\) holds \['exp_avg_sq'\], this optimizer keeps "
                        r"\['exp_avg', 'exp_avg_sq'\]"),
        "state-shape": (edit(set_(["state", 0, "exp_avg"], np.zeros((5, 3)))), ValueError,
                        r"state\[0\] \(.*\.W\)\['exp_avg'\] has shape \(5, 3\), the parameter "
                        r"\(3, 5\)"),
        "state-dtype": (edit(set_(["state", 0, "exp_avg"], np.zeros((3, 5), np.float32))),
                        TypeError, r"state\[0\] .*\['exp_avg'\] must be a float64 array, got "
                                   r"float32"),
        "state-list": (edit(set_(["state", 2, "exp_avg_sq"], [[0.0] * 4] * 5)), TypeError,
                       r"must be a float64 array, got list"),
        "steps-negative": (edit(set_(["steps"], -1)), ValueError,
                           r"state_dict: steps must be an int >= 0, got -1"),
        "steps-float": (edit(set_(["steps"], 2.0)), TypeError,
                        r"state_dict: steps must be an int, got float"),
        "clip": (edit(set_(["clip_norm"], -2.0)), ValueError,
                 r"state_dict: clip_norm must be None or a finite number > 0, got -2"),
    }


@pytest.mark.parametrize("case", list(bad_state_dicts({})))
def test_bad_state_dict_changes_nothing(case):
    model = make_mlp()
    source = nl.Adam([{"params": [model[0].params["W"], model[2].params["W"],
                                  model[4].params["W"]]},
                      {"params": [model[0].params["b"], model[2].params["b"],
                                  model[4].params["b"]], "lr": 0.5}], clip_value=0.1)
    train(model, source, np.random.default_rng(0), 3)
    sd = source.state_dict()
    other = make_mlp(seed=4)
    opt = nl.Adam([{"params": [other[0].params["W"], other[2].params["W"],
                               other[4].params["W"]]},
                   {"params": [other[0].params["b"], other[2].params["b"],
                               other[4].params["b"]]}], lr=0.01)
    train(other, opt, np.random.default_rng(1), 2)
    before = snapshot(other, opt)
    make, exc, msg = bad_state_dicts(sd)[case]
    with pytest.raises(exc, match=msg):
        opt.load_state_dict(make())
    assert_same(before, snapshot(other, opt))
    opt.load_state_dict(sd)                # the right one still loads
    assert opt.state_dict()["steps"] == 3


# ---------------------------------------------------------------------------
# no allocation in steady state
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("cfg", ["sgd-nesterov", "adam-amsgrad-wd", "adamw", "rmsprop-centered",
                                 "rmsprop-centered-momentum", "adagrad-all"])
def test_no_allocations_in_steady_state(cfg, clip):
    cls, kw = CONFIGS[cfg]
    model = make_mlp(np.float32, sizes=(8, 16, 4))
    opt = cls(model, **kw, **CLIPS[clip])
    loss = nl.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    for _ in range(5):
        model.train_step(X[:16], y[:16], loss, opt)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=16, seed=0, verbose=0)
    before = _core.alloc_count()
    for _ in range(200):
        model.train_step(X[:16], y[:16], loss, opt)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=3, batch_size=16, seed=1, verbose=0)
    for _ in range(20):
        opt.step()
    assert _core.alloc_count() == before
