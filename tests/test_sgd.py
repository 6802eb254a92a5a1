"""Tests of nl.SGD and Sequential.train_step.

The expected parameters always come from iterating
``nnlayers._reference.sgd_step`` (the NumPy twin of the C update) on copies
of the parameters, never from the code under test.
"""
import copy
import math

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _reference as ref

DTYPES = [np.float32, np.float64]

CONFIGS = {
    "plain": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    "momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    "nesterov": dict(momentum=0.9, nesterov=True, weight_decay=0.0),
    "wd": dict(momentum=0.0, nesterov=False, weight_decay=0.01),
    "wd_momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.01),
    "wd_nesterov": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
}


def make_mlp(dtype=np.float64, seed=0, sizes=(3, 5, 4, 3), frozen=()):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nl.Linear(a, b, dtype=dtype, seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nl.Tanh())
    model = nl.Sequential(*layers)
    for i in frozen:
        model[i].trainable = False
    return model


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.parameters().items()}


def tol(dtype):
    return dict(rtol=1e-14, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)


class RefSGD:
    """sgd_step from _reference iterated over a dict of parameters."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.p = {k: np.array(v, copy=True) for k, v in params.items()}
        self.v = {k: None for k in params}
        self.kw = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def step(self, grads, skip=()):
        for k in self.p:
            if k in skip:
                continue
            self.p[k], self.v[k] = ref.sgd_step(self.p[k], grads[k], self.v[k], **self.kw)


# ---------------------------------------------------------------------------
# update rules
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_step_with_fixed_gradients_matches_reference(cfg, dtype):
    model = make_mlp(dtype)
    lr = 0.05
    opt = nl.SGD(model, lr, **CONFIGS[cfg])
    twin = RefSGD(model.parameters(), lr, **CONFIGS[cfg])
    rng = np.random.default_rng(7)
    start = snapshot(model)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(dtype)
                 for k, v in model.parameters().items()}
        views = model.gradients()
        for k, g in grads.items():
            views[k][...] = g
        opt.step()
        twin.step(grads)
        for k, v in model.parameters().items():
            assert v.dtype == np.dtype(dtype)
            np.testing.assert_allclose(v, twin.p[k], **tol(dtype), err_msg=k)
    # the parameters did move
    assert any(not np.array_equal(start[k], v) for k, v in model.parameters().items())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_step_with_backward_gradients_matches_reference(cfg, dtype):
    model = make_mlp(dtype, seed=3)
    lr = 0.1
    opt = nl.SGD(model, lr, **CONFIGS[cfg])
    twin = RefSGD(model.parameters(), lr, **CONFIGS[cfg])
    loss = nl.SoftmaxCrossEntropy()
    rng = np.random.default_rng(11)
    for _ in range(4):
        x = rng.standard_normal((8, 3)).astype(dtype)
        y = rng.integers(0, 3, size=8)
        opt.zero_grad()
        for g in model.gradients().values():
            assert not np.any(g)
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        grads = {k: np.array(v, copy=True) for k, v in model.gradients().items()}
        assert any(np.any(g) for g in grads.values())
        opt.step()
        twin.step(grads)
        for k, v in model.parameters().items():
            np.testing.assert_allclose(v, twin.p[k], **tol(dtype), err_msg=k)


@pytest.mark.parametrize("cfg", ["momentum", "nesterov", "wd_nesterov"])
def test_momentum_state_is_one_block(cfg):
    model = make_mlp(np.float64)
    opt = nl.SGD(model, 0.05, **CONFIGS[cfg])
    twin = RefSGD(model.parameters(), 0.05, **CONFIGS[cfg])
    rng = np.random.default_rng(5)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape) for k, v in model.parameters().items()}
        for k, g in grads.items():
            model.gradients()[k][...] = g
        opt.step()
        twin.step(grads)
    vel = np.asarray(opt._velocity())
    assert vel.ndim == 1
    assert vel.size == model.num_parameters() == sum(v.size for v in model.parameters().values())
    # same values as the reference velocities (compared order-independently)
    want = np.concatenate([v.reshape(-1) for v in twin.v.values()])
    np.testing.assert_allclose(np.sort(vel), np.sort(want), rtol=1e-13, atol=1e-15)


def test_single_layer_and_layer_list():
    rng = np.random.default_rng(2)
    for make_target in (lambda L: L, lambda L: [L]):
        layer = nl.Linear(3, 2, dtype=np.float64, seed=4)
        opt = nl.SGD(make_target(layer), 0.2, momentum=0.5)
        twin = RefSGD(dict(layer.params), 0.2, momentum=0.5)
        for _ in range(3):
            grads = {k: rng.standard_normal(v.shape) for k, v in layer.params.items()}
            for k, g in grads.items():
                layer.grads[k][...] = g
            opt.step()
            twin.step(grads)
        for k, v in layer.params.items():
            np.testing.assert_allclose(v, twin.p[k], rtol=1e-14, atol=1e-15)


def test_lr_setter_takes_effect():
    model = make_mlp(np.float64)
    opt = nl.SGD(model, 0.1)
    twin = RefSGD(model.parameters(), 0.1)
    rng = np.random.default_rng(0)
    for lr in (0.1, 0.01, 0.3):
        opt.lr = lr
        twin.kw["lr"] = lr
        assert opt.lr == lr
        grads = {k: rng.standard_normal(v.shape) for k, v in model.parameters().items()}
        for k, g in grads.items():
            model.gradients()[k][...] = g
        opt.step()
        twin.step(grads)
    for k, v in model.parameters().items():
        np.testing.assert_allclose(v, twin.p[k], rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------
# frozen layers
# ---------------------------------------------------------------------------

FROZEN_CFG = dict(momentum=0.9, nesterov=True, weight_decay=0.1)


def test_frozen_layer_unchanged_by_step():
    model = make_mlp(np.float64, frozen=(2,))
    opt = nl.SGD(model, 0.1, **FROZEN_CFG)
    before = snapshot(model)
    rng = np.random.default_rng(1)
    for _ in range(4):
        for g in model.gradients().values():
            g[...] = rng.standard_normal(g.shape)
        opt.step()
    after = snapshot(model)
    for k in before:
        if k.startswith("2."):
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            assert not np.array_equal(after[k], before[k]), k


def test_layer_frozen_after_optimizer_creation_stops_changing():
    """Momentum built up before freezing must not keep moving the layer."""
    model = make_mlp(np.float64)
    opt = nl.SGD(model, 0.1, **FROZEN_CFG)
    rng = np.random.default_rng(3)
    for _ in range(2):
        for g in model.gradients().values():
            g[...] = rng.standard_normal(g.shape)
        opt.step()
    model[0].trainable = False
    before = snapshot(model)
    for _ in range(3):
        for g in model.gradients().values():
            g[...] = rng.standard_normal(g.shape)
        opt.step()
    after = snapshot(model)
    np.testing.assert_array_equal(after["0.W"], before["0.W"])
    np.testing.assert_array_equal(after["0.b"], before["0.b"])
    assert not np.array_equal(after["4.W"], before["4.W"])


def test_frozen_layer_unchanged_by_train_step_and_fit():
    model = make_mlp(np.float64, frozen=(0,))
    opt = nl.SGD(model, 0.1, **FROZEN_CFG)
    loss = nl.SoftmaxCrossEntropy()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, size=40)
    before = snapshot(model)
    for _ in range(3):
        model.train_step(x[:8], y[:8], loss, opt)
    model.fit(x, y, loss=loss, optimizer=opt, epochs=3, batch_size=7, seed=0, verbose=0)
    after = snapshot(model)
    np.testing.assert_array_equal(after["0.W"], before["0.W"])
    np.testing.assert_array_equal(after["0.b"], before["0.b"])
    assert not np.array_equal(after["2.W"], before["2.W"])
    assert not np.array_equal(after["4.W"], before["4.W"])


# ---------------------------------------------------------------------------
# hyper-parameter validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,needle", [
    (dict(lr=-1e-300), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=math.nan), "lr"),
    (dict(lr=math.inf), "lr"),
    (dict(lr=-math.inf), "lr"),
    (dict(lr=0.1, momentum=-0.5), "momentum"),
    (dict(lr=0.1, momentum=math.nan), "momentum"),
    (dict(lr=0.1, weight_decay=-0.01), "weight_decay"),
    (dict(lr=0.1, weight_decay=math.nan), "weight_decay"),
    (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov"),
])
def test_bad_hyper_parameters(kw, needle):
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError) as exc:
        nl.SGD(model, **kw)
    assert needle in str(exc.value)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("bad", [-1e-300, -1.0, math.nan, math.inf])
def test_setting_bad_lr(bad):
    model = make_mlp()
    opt = nl.SGD(model, 0.1)
    with pytest.raises(ValueError):
        opt.lr = bad
    assert opt.lr == 0.1
    # still usable
    for g in model.gradients().values():
        g[...] = 1.0
    before = snapshot(model)
    opt.step()
    np.testing.assert_allclose(model.parameters()["0.b"], before["0.b"] - 0.1, rtol=1e-6)


@pytest.mark.parametrize("target", [
    lambda: nl.Sequential(nl.ReLU(), nl.Tanh()),
    lambda: nl.ReLU(),
    lambda: [],
    lambda: [nl.Sigmoid()],
])
def test_sgd_needs_parameters(target):
    with pytest.raises(ValueError):
        nl.SGD(target(), 0.1)


# ---------------------------------------------------------------------------
# train_step
# ---------------------------------------------------------------------------

# every rule: train_step folds the weight gradient into the update in a
# different way for each (see nn_sgd_linear_step in csrc/core/sgd.c)
@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("loss_cls", [nl.SoftmaxCrossEntropy, nl.MSE])
def test_train_step_equals_manual_step(cfg, loss_cls):
    model = make_mlp(np.float64, seed=21)
    hand = copy.deepcopy(model)
    opt = nl.SGD(model, 0.1, **CONFIGS[cfg])
    hopt = nl.SGD(hand, 0.1, **CONFIGS[cfg])
    loss, hloss = loss_cls(), loss_cls()
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = rng.standard_normal((6, 3))
        if loss_cls is nl.MSE:
            y = rng.standard_normal((6, 3))
        else:
            y = rng.integers(0, 3, size=6)
        # stale gradients must not leak into train_step (it never reads them)
        for g in model.gradients().values():
            g[...] = 123.0
        got = model.train_step(x, y, loss, opt)
        hand.zero_grad()
        want = hloss.forward(hand.forward(x), y)
        hand.backward(hloss.backward())
        hopt.step()
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12)
        for k, v in model.parameters().items():
            np.testing.assert_allclose(v, hand.parameters()[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # the copy is independent of the original
    assert not np.shares_memory(model.parameters()["0.W"], hand.parameters()["0.W"])


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                {"weight_decay": 0.01}])
def test_backward_after_train_step_gives_the_gradient_at_the_new_parameters(kw):
    """train_step folds the weight gradient into the update and leaves the
    gradient buffers as scratch; zero_grad() + backward() afterwards must give
    exactly the gradient at the updated parameters."""
    model = make_mlp(np.float64, seed=2)
    opt = nl.SGD(model, 0.1, **kw)
    loss = nl.SoftmaxCrossEntropy()
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 3))
    y = rng.integers(0, 3, size=5)
    model.train_step(x, y, loss, opt)
    hand = copy.deepcopy(model)        # the updated parameters
    model.zero_grad()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    hand.zero_grad()
    hl = nl.SoftmaxCrossEntropy()
    hl.forward(hand.forward(x), y)
    hand.backward(hl.backward())
    for k, g in model.gradients().items():
        assert np.any(g != 0), k
        np.testing.assert_allclose(g, hand.gradients()[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ---------------------------------------------------------------------------
# optional peer: torch.optim.SGD
# ---------------------------------------------------------------------------

def test_matches_torch_sgd():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        pytest.skip("torch not installed")
    model = make_mlp(np.float64, seed=30, sizes=(4, 6, 5, 3))
    lin = [layer for layer in model if isinstance(layer, nl.Linear)]
    tw = [torch.tensor(np.array(L.params["W"]).T.copy(), requires_grad=True) for L in lin]
    tb = [torch.tensor(np.array(L.params["b"]).copy(), requires_grad=True) for L in lin]
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.01)
    opt = nl.SGD(model, 0.05, **kw)
    topt = torch.optim.SGD([p for pair in zip(tw, tb) for p in pair], lr=0.05, **kw)
    loss = nl.SoftmaxCrossEntropy()
    rng = np.random.default_rng(31)
    for _ in range(5):
        x = rng.standard_normal((10, 4))
        y = rng.integers(0, 3, size=10)
        got = model.train_step(x, y, loss, opt)
        topt.zero_grad()
        h = torch.from_numpy(x)
        for i in range(len(lin)):
            h = h @ tw[i].T + tb[i]
            if i < len(lin) - 1:
                h = torch.tanh(h)
        tl = F.cross_entropy(h, torch.from_numpy(y))
        tl.backward()
        topt.step()
        assert got == pytest.approx(tl.item(), rel=1e-10)
    for L, W, b in zip(lin, tw, tb):
        np.testing.assert_allclose(L.params["W"], W.detach().numpy().T, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(L.params["b"], b.detach().numpy(), rtol=1e-5, atol=1e-12)
