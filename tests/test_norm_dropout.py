"""Dropout, BatchNorm and LayerNorm (csrc/core/dropout.c, norm.c).

Each layer: nl.gradcheck in float64; the C kernels against their NumPy
twins in nnlayers/_reference.py (float32 and float64); torch's modules in
training and eval mode when torch is installed. Then what the engine adds:
Dropout's mask (statistics, the same mask in the VJP, reproducible seeded
fits, independent of the batch split between threads), BatchNorm's
running statistics as buffers (views, saved and loaded, never touched by
an optimizer, always those of the whole batch), the steady state without
allocations, and the edge cases (one row, no rows) that must leave the
model as it was.
"""
import pickle

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core
from nnlayers import _reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
POOL = _core._pool_info()["installed"]
needs_pool = pytest.mark.skipif(not POOL, reason="no worker pool (NNLAYERS_POOL=0)")


def data(rng, n, f, dtype=np.float64, scale=2.0, shift=0.5):
    """Columns with different means and spreads (so normalising matters)."""
    x = rng.standard_normal((n, f)) * (scale * rng.random(f) + 0.1) + shift * np.arange(f)
    return x.astype(dtype)


def set_affine(layer, rng):
    if "gamma" in layer.params:
        layer.params["gamma"] = 1 + 0.5 * rng.standard_normal(layer.features)
        layer.params["beta"] = rng.standard_normal(layer.features)


def affine_of(layer):
    if "gamma" not in layer.params:
        return None, None
    return np.array(layer.params["gamma"]), np.array(layer.params["beta"])


BN_CONFIGS = [dict(), dict(momentum=None), dict(affine=False),
              dict(track_running_stats=False), dict(eps=1e-3, momentum=0.3)]
BN_IDS = ["default", "momentum-None", "no-affine", "no-running", "eps-momentum"]


# ---------------------------------------------------------------------------
# gradient checks (float64)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", BN_CONFIGS, ids=BN_IDS)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck(rng, cfg, training):
    """Training: the VJP through the batch statistics; eval: through the
    running statistics (the buffers gradcheck puts back every time)."""
    bn = nl.BatchNorm(5, dtype=np.float64, **cfg)
    set_affine(bn, rng)
    if "running_var" in bn.buffers:
        bn.buffers["running_mean"] = rng.standard_normal(5)
        bn.buffers["running_var"] = 0.5 + rng.random(5)
    bn.training = training
    before = {k: np.array(v) for k, v in bn.buffers.items()}
    res = nl.gradcheck(bn, data(rng, 7, 5))
    assert res.ok, res
    for k, v in bn.buffers.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_gradcheck(rng, affine):
    ln = nl.LayerNorm(6, dtype=np.float64, elementwise_affine=affine)
    set_affine(ln, rng)
    assert nl.gradcheck(ln, data(rng, 5, 6)).ok


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_dropout_gradcheck(rng, p):
    """Training mode at a fixed step: gradcheck resets the step, so every
    forward reuses the analytic pass's mask."""
    d = nl.Dropout(p, dtype=np.float64)
    d.training = True
    d._step = 17
    assert nl.gradcheck(d, data(rng, 6, 9)).ok


def test_model_with_all_three_gradchecks(rng):
    """The three in a graph, in training mode (batch statistics, masks)."""
    x = nl.Input(5)
    h = nl.BatchNorm(8, dtype=np.float64)(nl.Linear(5, 8, bias=False, dtype=np.float64,
                                                 seed=1)(x))
    h = nl.Dropout(0.25)(nl.Tanh()(h))
    out = nl.Linear(8, 3, dtype=np.float64, seed=2)(nl.LayerNorm(8, dtype=np.float64)(h))
    model = nl.Model(x, out)
    model.seed = 3
    X = data(rng, 9, 5)
    assert nl.gradcheck(model, X).ok
    y = rng.integers(0, 3, 9)
    assert nl.gradcheck(model, X, loss=nl.SoftmaxCrossEntropy(), target=y).ok


# ---------------------------------------------------------------------------
# the C kernels against their NumPy twins
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", BN_CONFIGS, ids=BN_IDS)
def test_batchnorm_against_twin(rng, dtype, cfg):
    """Forward, input and parameter gradients, and the running statistics
    over three training calls, then eval mode."""
    bn = nl.BatchNorm(6, dtype=dtype, **cfg)
    set_affine(bn, rng)
    gamma, beta = affine_of(bn)
    tracked = "running_mean" in bn.buffers
    rm, rv, count = np.zeros(6, dtype), np.ones(6, dtype), 0
    eps, mom = bn.eps, bn.momentum
    for step in range(3):
        x, g = data(rng, 11, 6, dtype), rng.standard_normal((11, 6)).astype(dtype)
        bn.zero_grad()
        y = bn.forward(x)
        gx = bn.backward(g)
        np.testing.assert_allclose(y, ref.batchnorm_forward(x, gamma, beta, eps), **TOL[dtype])
        rgx, rgr = ref.batchnorm_backward(g, x, gamma, eps)
        np.testing.assert_allclose(gx, rgx, **TOL[dtype])
        for k, v in rgr.items():
            np.testing.assert_allclose(bn.grads[k], v, **TOL[dtype], err_msg=k)
        if tracked:
            rm, rv, count = ref.batchnorm_running_update(rm, rv, x, mom, count)
            np.testing.assert_allclose(bn.buffers["running_mean"], rm, **TOL[dtype])
            np.testing.assert_allclose(bn.buffers["running_var"], rv, **TOL[dtype])
            assert bn.buffers["num_batches_tracked"][0] == count
    bn.training = False
    kept = {k: np.array(v) for k, v in bn.buffers.items()}
    x, g = data(rng, 4, 6, dtype), rng.standard_normal((4, 6)).astype(dtype)
    run = dict(running_mean=rm, running_var=rv) if tracked else {}
    bn.zero_grad()
    y = bn.forward(x)
    gx = bn.backward(g)
    np.testing.assert_allclose(y, ref.batchnorm_forward(x, gamma, beta, eps, training=False,
                                                        **run), **TOL[dtype])
    rgx, rgr = ref.batchnorm_backward(g, x, gamma, eps, training=False, **run)
    np.testing.assert_allclose(gx, rgx, **TOL[dtype])
    for k, v in rgr.items():
        np.testing.assert_allclose(bn.grads[k], v, **TOL[dtype], err_msg=k)
    for k, v in bn.buffers.items():   # eval leaves the statistics alone
        np.testing.assert_array_equal(v, kept[k], err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_layernorm_against_twin(rng, dtype, affine, training):
    ln = nl.LayerNorm(7, dtype=dtype, elementwise_affine=affine, eps=1e-4)
    ln.training = training
    set_affine(ln, rng)
    gamma, beta = affine_of(ln)
    x, g = data(rng, 5, 7, dtype), rng.standard_normal((5, 7)).astype(dtype)
    y = ln.forward(x)
    gx = ln.backward(g)
    np.testing.assert_allclose(y, ref.layernorm_forward(x, gamma, beta, 1e-4), **TOL[dtype])
    rgx, rgr = ref.layernorm_backward(g, x, gamma, 1e-4)
    np.testing.assert_allclose(gx, rgx, **TOL[dtype])
    for k, v in rgr.items():
        np.testing.assert_allclose(ln.grads[k], v, **TOL[dtype], err_msg=k)


def dropout_mask(d, shape, dtype):
    """The keep mask of d's next training forward (its step put back)."""
    step = d._step
    keep = d.forward(np.ones(shape, dtype)) != 0
    d._step = step
    return keep


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_dropout_against_twin(rng, dtype, p):
    """Bitwise: y = x keep / (1 - p), and the VJP with the same mask."""
    d = nl.Dropout(p, dtype=dtype)
    x, g = data(rng, 8, 13, dtype), rng.standard_normal((8, 13)).astype(dtype)
    keep = dropout_mask(d, x.shape, dtype)
    y = d.forward(x)
    gx = d.backward(g)
    np.testing.assert_array_equal(y, ref.dropout_forward(x, keep, p))
    np.testing.assert_array_equal(gx, ref.dropout_backward(g, keep, p))
    if p == 1.0:
        assert not keep.any() and not y.any()
    d.training = False
    np.testing.assert_array_equal(d.forward(x), ref.dropout_forward(x, keep, p, training=False))
    np.testing.assert_array_equal(d.backward(g), g)


# ---------------------------------------------------------------------------
# against torch
# ---------------------------------------------------------------------------

def torch_bn(torch, bn):
    tb = torch.nn.BatchNorm1d(bn.features, eps=bn.eps, momentum=bn.momentum,
                              affine=bn.affine, track_running_stats=bn.track_running_stats,
                              dtype=torch.float64)
    if bn.affine:
        with torch.no_grad():
            tb.weight.copy_(torch.from_numpy(np.array(bn.params["gamma"], np.float64)))
            tb.bias.copy_(torch.from_numpy(np.array(bn.params["beta"], np.float64)))
    return tb


def torch_call(torch, module, x, g):
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    module.zero_grad()
    y = module(xt)
    y.backward(torch.from_numpy(np.asarray(g, np.float64)))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", BN_CONFIGS, ids=BN_IDS)
def test_batchnorm_against_torch(rng, dtype, cfg):
    """Five training calls (outputs, input and parameter gradients, running
    statistics), then eval mode. torch in float64; ours in dtype."""
    torch = pytest.importorskip("torch")
    tol = TOL[dtype] if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    bn = nl.BatchNorm(6, dtype=dtype, **cfg)
    set_affine(bn, rng)
    tb = torch_bn(torch, bn)
    for mode in ["train"] * 5 + ["eval"] * 2:
        bn.training = mode == "train"
        tb.train(mode == "train")
        x = data(rng, 10, 6, dtype)
        g = rng.standard_normal((10, 6)).astype(dtype)
        bn.zero_grad()
        y, gx = bn.forward(x), bn.backward(g)
        ty, tgx = torch_call(torch, tb, x, g)
        np.testing.assert_allclose(y, ty, **tol, err_msg=f"{mode} y")
        np.testing.assert_allclose(gx, tgx, **tol, err_msg=f"{mode} gx")
        if bn.affine:
            np.testing.assert_allclose(bn.grads["gamma"], tb.weight.grad.numpy(), **tol)
            np.testing.assert_allclose(bn.grads["beta"], tb.bias.grad.numpy(), **tol)
        if bn.track_running_stats:
            np.testing.assert_allclose(bn.buffers["running_mean"], tb.running_mean.numpy(),
                                       **tol)
            np.testing.assert_allclose(bn.buffers["running_var"], tb.running_var.numpy(),
                                       **tol)
            assert bn.buffers["num_batches_tracked"][0] == tb.num_batches_tracked.item()


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_var_keeps_its_digits_when_var_is_below_eps(rng, dtype):
    """A batch variance near 1e-8 (eps 1e-5): the running variance to
    float32 precision (it used to be recovered from 1/sqrt(var + eps),
    which lost four digits in float32). torch float64 as the reference."""
    torch = pytest.importorskip("torch")
    x = (1 + 1e-4 * rng.standard_normal((64, 4))).astype(dtype)
    bn = nl.BatchNorm(4, momentum=1.0, dtype=dtype)
    bn.forward(x)
    tb = torch.nn.BatchNorm1d(4, momentum=1.0, dtype=torch.float64)
    tb(torch.from_numpy(x.astype(np.float64)))
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(bn.buffers["running_var"], tb.running_var.numpy(), rtol=rtol)
    np.testing.assert_allclose(bn.buffers["running_mean"], tb.running_mean.numpy(), rtol=rtol)


def test_batchnorm_model_trains_as_torch(rng):
    """Five train_steps of Linear-BN-ReLU-Linear with SGD (momentum, weight
    decay) against torch: the losses, every parameter and the running
    statistics (committed once per accepted step, never decayed by the
    optimizer); then predict (eval mode) against torch's eval."""
    torch = pytest.importorskip("torch")
    model = nl.Sequential(nl.Linear(6, 8, dtype=np.float64, seed=1),
                          nl.BatchNorm(8, dtype=np.float64), nl.ReLU(),
                          nl.Linear(8, 3, dtype=np.float64, seed=2))
    set_affine(model[1], rng)
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8, dtype=torch.float64), torch_bn(torch, model[1]),
                             torch.nn.ReLU(), torch.nn.Linear(8, 3, dtype=torch.float64))
    with torch.no_grad():
        for i in (0, 3):
            tm[i].weight.copy_(torch.from_numpy(model[i].params["W"].T.copy()))
            tm[i].bias.copy_(torch.from_numpy(model[i].params["b"].copy()))
    opt = nl.SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for step in range(5):
        x, y = data(rng, 12, 6), rng.integers(0, 3, 12)
        loss = model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        topt.step()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
    tol = dict(rtol=1e-10, atol=1e-12)
    for i in (0, 3):
        np.testing.assert_allclose(model[i].params["W"], tm[i].weight.detach().numpy().T, **tol)
        np.testing.assert_allclose(model[i].params["b"], tm[i].bias.detach().numpy(), **tol)
    np.testing.assert_allclose(model[1].params["gamma"], tm[1].weight.detach().numpy(), **tol)
    np.testing.assert_allclose(model[1].params["beta"], tm[1].bias.detach().numpy(), **tol)
    np.testing.assert_allclose(model[1].buffers["running_mean"], tm[1].running_mean.numpy(), **tol)
    np.testing.assert_allclose(model[1].buffers["running_var"], tm[1].running_var.numpy(), **tol)
    assert model[1].buffers["num_batches_tracked"][0] == 5
    tm.eval()
    x = data(rng, 7, 6)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), tm(torch.from_numpy(x)).numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_against_torch(rng, dtype, affine):
    torch = pytest.importorskip("torch")
    tol = TOL[dtype] if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    ln = nl.LayerNorm(7, dtype=dtype, elementwise_affine=affine)
    set_affine(ln, rng)
    tl = torch.nn.LayerNorm(7, eps=ln.eps, elementwise_affine=affine, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(np.array(ln.params["gamma"], np.float64)))
            tl.bias.copy_(torch.from_numpy(np.array(ln.params["beta"], np.float64)))
    for training in (True, False):
        ln.training = training
        tl.train(training)
        x, g = data(rng, 6, 7, dtype), rng.standard_normal((6, 7)).astype(dtype)
        ln.zero_grad()
        y, gx = ln.forward(x), ln.backward(g)
        ty, tgx = torch_call(torch, tl, x, g)
        np.testing.assert_allclose(y, ty, **tol)
        np.testing.assert_allclose(gx, tgx, **tol)
        if affine:
            np.testing.assert_allclose(ln.grads["gamma"], tl.weight.grad.numpy(), **tol)
            np.testing.assert_allclose(ln.grads["beta"], tl.bias.grad.numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_against_torch(rng, dtype, p):
    """Eval: both the identity. Training: the masks come from different
    generators, so torch's output is read for its mask; the twin given that
    mask reproduces torch's output and gradient, and ours (checked against
    the twin above) keeps the same fraction."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    td = torch.nn.Dropout(p)
    d = nl.Dropout(p, dtype=dtype)
    x = (data(rng, 200, 50, dtype) + 0.5).astype(dtype)
    x[x == 0] = 1
    g = rng.standard_normal(x.shape).astype(dtype)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    y = td(xt)
    y.backward(torch.from_numpy(g))
    keep = y.detach().numpy() != 0
    np.testing.assert_allclose(y.detach().numpy(), ref.dropout_forward(x, keep, p), rtol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy(), ref.dropout_backward(g, keep, p), rtol=1e-6)
    ours = d.forward(x) != 0
    assert abs(ours.mean() - keep.mean()) < 6 * np.sqrt(p * (1 - p) / x.size)
    td.eval()
    d.training = False
    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    y = td(xt)
    y.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(d.forward(x), y.detach().numpy())
    np.testing.assert_array_equal(d.backward(g), xt.grad.numpy())


# ---------------------------------------------------------------------------
# Dropout's mask
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_kept_fraction_and_scale(p):
    """Over 10^6 values the kept fraction is within 3 sigma of 1 - p (also
    in the even and odd columns, which take the two halves of one random
    word), kept values are x / (1 - p), and the VJP uses the same mask."""
    d = nl.Dropout(p, dtype=np.float32)
    x = np.ones((1000, 1000), np.float32)
    y = d.forward(x)
    keep = y != 0
    n = keep.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 3 * sigma
    for half in (keep[:, 0::2], keep[:, 1::2]):
        assert abs(half.mean() - (1 - p)) < 3 * np.sqrt(p * (1 - p) / half.size)
    np.testing.assert_array_equal(y[keep], np.float32(1 / (1 - p)))
    g = np.full(x.shape, 3.0, np.float32)
    gx = d.backward(g)
    np.testing.assert_array_equal(gx != 0, keep)
    np.testing.assert_array_equal(gx[keep], np.float32(3.0) * np.float32(1 / (1 - p)))


def test_dropout_masks_change_with_step_seed_and_node():
    """A new mask at every training call, another for another seed and for
    another Dropout node of the same model."""
    x = np.ones((64, 32))
    model = nl.Sequential(nl.Dropout(0.5), nl.Identity(), nl.Dropout(0.5))
    model.seed = 1
    a = model.forward(x)
    b = model.forward(x)
    assert not np.array_equal(a, b)
    model.seed, model._step = 1, 0
    np.testing.assert_array_equal(model.forward(x), a)
    model.seed, model._step = 2, 0
    assert not np.array_equal(model.forward(x), a)
    one = nl.Sequential(nl.Dropout(0.5))
    one.seed, one._step = 1, 0
    single = one.forward(x) != 0
    both = a != 0                # the product of two nodes' masks
    assert both.mean() < 0.35 and not np.array_equal(both, single)


def test_dropout_model_backward_uses_the_forward_mask(rng):
    model = nl.Sequential(nl.Linear(5, 40, dtype=np.float64, seed=1), nl.Dropout(0.4))
    x = data(rng, 30, 5)
    y = model.forward(x)
    model.zero_grad()
    g = rng.standard_normal(y.shape)
    model.backward(g)
    keep = y != 0
    pre = x @ model[0].params["W"] + model[0].params["b"]
    np.testing.assert_allclose(model[0].grads["W"], x.T @ (g * keep / 0.6), rtol=1e-12)
    np.testing.assert_allclose(y, np.where(keep, pre / 0.6, 0), rtol=1e-12)


def dropout_net(dtype=np.float64, seed=0):
    return nl.Sequential(nl.Linear(10, 32, dtype=dtype, seed=seed), nl.ReLU(), nl.Dropout(0.3),
                         nl.Linear(32, 32, dtype=dtype, seed=seed + 1), nl.Tanh(),
                         nl.Dropout(0.5), nl.Linear(32, 4, dtype=dtype, seed=seed + 2))


def test_seeded_fit_is_bitwise_reproducible(rng):
    X, y = data(rng, 100, 10, np.float32), rng.integers(0, 4, 100)
    results = []
    for fit_seed in (5, 5, 6):
        model = dropout_net(np.float32)
        h = model.fit(X, y, optimizer=nl.SGD(model, lr=0.05, momentum=0.9), epochs=3,
                      batch_size=16, seed=fit_seed, verbose=0)
        results.append(([np.array(v) for v in model.parameters().values()], h.history["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
    assert any(not np.array_equal(a, b) for a, b in zip(results[0][0], results[2][0]))


@pytest.fixture
def threads():
    """Set the thread count for the test; restore it and the split mode."""
    old_threads, old_mode = nl.get_num_threads(), _core._split_mode(-1)
    _core._split_mode(old_mode)
    yield nl.set_num_threads
    nl.set_num_threads(old_threads)
    _core._split_mode(old_mode)


@needs_pool
def test_dropout_mask_does_not_depend_on_the_thread_split(threads, rng):
    """A training forward and backward of a Dropout model: one thread (a
    whole batch) against two threads with the batch split (forced, and
    counted): bitwise the same outputs and input gradients."""
    x, g = data(rng, 37, 24), rng.standard_normal((37, 24))
    out = {}
    for n_threads, mode in ((1, 0), (2, 1)):
        threads(n_threads)
        _core._split_mode(mode)
        model = nl.Sequential(nl.Dropout(0.4), nl.Identity(), nl.Dropout(0.2))
        model.seed = 11
        before = _core._split_steps()
        y = model.forward(x)
        gx = model.backward(g)
        assert (_core._split_steps() > before) == (mode == 1)
        out[n_threads] = (y, gx)
    np.testing.assert_array_equal(out[1][0], out[2][0])
    np.testing.assert_array_equal(out[1][1], out[2][1])


def split_or_whole_steps(mode, make, dtype=np.float64, steps=4, n=37):
    """`steps` train_steps of make() at split mode `mode`: losses,
    parameters, buffers, split steps taken."""
    old = _core._split_mode(mode)
    try:
        rng = np.random.default_rng(5)
        model = make(dtype)
        model.seed = 9
        opt = nl.SGD(model, lr=0.1, momentum=0.9)
        x, y = data(rng, n, 10, dtype), rng.integers(0, 4, n)
        before = _core._split_steps()
        losses = [model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt) for _ in range(steps)]
        return (losses, {k: np.array(v) for k, v in model.parameters().items()},
                {k: np.array(v) for k, v in model.buffers().items()},
                _core._split_steps() - before, model, x)
    finally:
        _core._split_mode(old)


@needs_pool
def test_dropout_split_steps_match_whole_steps(threads):
    """Split training steps: the masks are the whole step's (the products'
    rounding order alone differs)."""
    threads(2)
    whole = split_or_whole_steps(0, dropout_net)
    split = split_or_whole_steps(1, dropout_net)
    assert whole[3] == 0 and split[3] == 4
    np.testing.assert_allclose(split[0], whole[0], rtol=1e-12)
    for k in whole[1]:
        np.testing.assert_allclose(split[1][k], whole[1][k], rtol=1e-11, atol=1e-13, err_msg=k)


def bn_net(dtype):
    return nl.Sequential(nl.Linear(10, 16, dtype=dtype, seed=0), nl.BatchNorm(16, dtype=dtype),
                         nl.ReLU(), nl.Dropout(0.3), nl.Linear(16, 16, dtype=dtype, seed=1),
                         nl.LayerNorm(16, dtype=dtype), nl.Tanh(),
                         nl.Linear(16, 4, dtype=dtype, seed=2))


def ln_net(dtype):
    return nl.Sequential(nl.Linear(10, 16, dtype=dtype, seed=0), nl.LayerNorm(16, dtype=dtype),
                         nl.ReLU(), nl.Dropout(0.3), nl.Linear(16, 4, dtype=dtype, seed=1))


@needs_pool
@pytest.mark.parametrize("make", [bn_net, ln_net], ids=["batchnorm", "layernorm"])
def test_norm_split_steps_match_whole_steps(threads, make):
    """With split steps asked for, BatchNorm's statistics are still the
    whole batch's (a model with a BatchNorm never splits its batch: the
    layer is not row-wise); LayerNorm is row-wise and splits. Both agree
    with whole steps within rounding."""
    threads(2)
    whole = split_or_whole_steps(0, make)
    split = split_or_whole_steps(1, make)
    assert whole[3] == 0
    assert split[3] == (0 if make is bn_net else 4)
    np.testing.assert_allclose(split[0], whole[0], rtol=1e-12)
    for k in whole[1]:
        np.testing.assert_allclose(split[1][k], whole[1][k], rtol=1e-11, atol=1e-13, err_msg=k)
    for k in whole[2]:
        np.testing.assert_allclose(split[2][k], whole[2][k], rtol=1e-11, atol=1e-13, err_msg=k)
    if make is bn_net:   # one more step, the running mean against the whole batch's
        _core._split_mode(1)
        model, x = split[4], split[5]
        h = x @ model[0].params["W"] + model[0].params["b"]
        rm0 = np.array(model[1].buffers["running_mean"])
        model.train_step(x, np.zeros(len(x), int), nl.SoftmaxCrossEntropy(),
                         nl.SGD(model, lr=0.0))
        np.testing.assert_allclose(model[1].buffers["running_mean"],
                                   0.9 * rm0 + 0.1 * h.mean(0), rtol=1e-12)


# ---------------------------------------------------------------------------
# buffers, modes, saving
# ---------------------------------------------------------------------------

def test_buffers_are_views_the_kernels_read(rng):
    model = nl.Sequential(nl.Linear(4, 5, dtype=np.float64, seed=0), nl.BatchNorm(5,
                          dtype=np.float64))
    bn = model[1]
    a, b = bn.buffers["running_mean"], model.buffers()["1.running_mean"]
    assert isinstance(a, np.ndarray) and np.shares_memory(a, b)
    assert set(bn.buffers) == {"running_mean", "running_var", "num_batches_tracked"}
    assert set(bn.params) == {"gamma", "beta"}
    assert not any(k.startswith("1.running") for k in model.parameters())
    model.eval()
    x = data(rng, 3, 4)
    h = x @ model[0].params["W"] + model[0].params["b"]
    bn.buffers["running_mean"][...] = h.mean(0)
    bn.buffers["running_var"] = np.full(5, 4.0)
    np.testing.assert_allclose(model.predict(x), (h - h.mean(0)) / np.sqrt(4.0 + 1e-5),
                               rtol=1e-12)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "AdamW"])
def test_optimizers_never_touch_the_buffers(rng, opt_name):
    """Steps with weight decay: the running statistics follow torch's
    update exactly (a decayed or stepped buffer would not)."""
    model = nl.Sequential(nl.BatchNorm(6, dtype=np.float64), nl.Linear(6, 3, dtype=np.float64,
                                                                         seed=1))
    opt = getattr(nl, opt_name)(model, lr=0.5, weight_decay=0.3)
    rm, rv, count = np.zeros(6), np.ones(6), 0
    for _ in range(4):
        x, y = data(rng, 8, 6), rng.integers(0, 3, 8)
        model.train_step(x, y, nl.SoftmaxCrossEntropy(), opt)
        rm, rv, count = ref.batchnorm_running_update(rm, rv, x, 0.1, count)
    np.testing.assert_allclose(model.buffers()["0.running_mean"], rm, rtol=1e-12)
    np.testing.assert_allclose(model.buffers()["0.running_var"], rv, rtol=1e-12)
    assert model.buffers()["0.num_batches_tracked"][0] == 4


def trained_bn_model(rng, mode):
    model = bn_net(np.float32)
    x, y = data(rng, 32, 10, np.float32), rng.integers(0, 4, 32)
    model.fit(x, y, optimizer=nl.Adam(model, lr=0.01), epochs=2, batch_size=8, seed=1, verbose=0)
    model.train(mode == "train")
    return model, x


@pytest.mark.parametrize("how", ["save", "pickle"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_buffers_and_mode_are_saved(rng, tmp_path, how, mode):
    model, x = trained_bn_model(rng, mode)
    if how == "save":
        model.save(tmp_path / "m.nlz")
        back = nl.load(tmp_path / "m.nlz")
    else:
        back = pickle.loads(pickle.dumps(model))
    assert back.training == (mode == "train")
    assert all(layer.training == (mode == "train") for layer in back.layers)
    for k, v in model.buffers().items():
        np.testing.assert_array_equal(back.buffers()[k], v, err_msg=k)
        assert not np.shares_memory(back.buffers()[k], v)
    assert model.buffers()["1.num_batches_tracked"][0] == 8
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_modes_of_fit_predict_evaluate(rng):
    """predict and evaluate use the running statistics and no masks (eval),
    whatever the mode; train_step and fit train; the mode stays as set."""
    model, x = trained_bn_model(rng, "train")
    y = rng.integers(0, 4, len(x))
    before = {k: np.array(v) for k, v in model.buffers().items()}
    p1 = model.predict(x)
    np.testing.assert_array_equal(model.predict(x), p1)          # no masks
    # running statistics: one row alone gives the batch's row 0 (to the
    # rounding of a one-row product, which goes to gemv, not gemm; batch
    # statistics would change it at the first digit)
    np.testing.assert_allclose(model.predict(x[:1]), p1[:1], rtol=1e-6, atol=1e-6)
    model.evaluate(x, y)
    assert model.training
    for k, v in model.buffers().items():
        np.testing.assert_array_equal(v, before[k])
    model.eval()
    np.testing.assert_array_equal(model.forward(x), p1)
    model.train_step(x, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=0.0))
    assert not model.training
    assert model.buffers()["1.num_batches_tracked"][0] == before["1.num_batches_tracked"][0] + 1


def test_config_summary_and_astype():
    model = bn_net(np.float32)
    cfg = model.get_config()
    back = nl.Sequential.from_config(cfg)
    assert [type(x).__name__ for x in back.layers] == [type(x).__name__ for x in model.layers]
    assert back.layers[1].get_config() == model.layers[1].get_config()
    bn = nl.BatchNorm(5, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    assert nl.BatchNorm.from_config(bn.get_config()).get_config() == bn.get_config()
    ln = nl.LayerNorm(4, eps=1e-6, elementwise_affine=False)
    assert nl.LayerNorm.from_config(ln.get_config()).get_config() == ln.get_config()
    assert nl.Dropout.from_config(nl.Dropout(0.25).get_config()).p == 0.25
    text = model.summary(print_fn=lambda s: None)
    assert "BatchNorm" in text and "Dropout" in text and "LayerNorm" in text
    # BatchNorm(16): 32 trained, 33 buffer values; LayerNorm(16): 32 trained
    trained = 10 * 16 + 16 + 32 + 16 * 16 + 16 + 32 + 16 * 4 + 4
    assert f"Trainable params: {trained}" in text
    m64 = model.astype(np.float64)
    assert m64.buffers()["1.running_var"].dtype == np.float64
    assert m64[3].p == 0.3


# ---------------------------------------------------------------------------
# steady state without allocations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_threads", [1, 2])
def test_train_step_with_dropout_and_batchnorm_allocates_nothing(n_threads):
    old = nl.get_num_threads()
    nl.set_num_threads(n_threads)
    try:
        rng = np.random.default_rng(0)
        model = bn_net(np.float32)
        opt = nl.SGD(model, lr=1e-3, momentum=0.9)
        X, y = data(rng, 64, 10, np.float32), rng.integers(0, 4, 64)
        loss = nl.SoftmaxCrossEntropy()
        for _ in range(5):
            model.train_step(X, y, loss, opt)
        model.fit(X, y, optimizer=opt, epochs=1, batch_size=16, seed=0, verbose=0)
        model.predict(X)
        before = _core.alloc_count()
        for _ in range(300):
            model.train_step(X, y, loss, opt)
        model.fit(X, y, optimizer=opt, epochs=2, batch_size=16, seed=1, verbose=0)
        model.predict(X)
        assert _core.alloc_count() == before
    finally:
        nl.set_num_threads(old)


# ---------------------------------------------------------------------------
# edge cases: one row, no rows
# ---------------------------------------------------------------------------

def model_state(model, opt):
    s = {k: np.array(v) for k, v in model.parameters().items()}
    s.update({k: np.array(v) for k, v in model.buffers().items()})
    s["_step"] = model._step
    s["opt"] = pickle.dumps(opt.state_dict())
    return s


def assert_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_batchnorm_one_row_in_training_is_refused_and_changes_nothing(rng):
    model = bn_net(np.float64)
    opt = nl.Adam(model, lr=0.01)
    X, y = data(rng, 9, 10), rng.integers(0, 4, 9)
    model.train_step(X, y, nl.SoftmaxCrossEntropy(), opt)
    before = model_state(model, opt)
    with pytest.raises(ValueError, match="more than one row per batch.*model.eval"):
        model.train_step(X[:1], y[:1], nl.SoftmaxCrossEntropy(), opt)
    with pytest.raises(ValueError, match="more than one row per batch"):
        model.forward(X[:1])                     # training mode
    with pytest.raises(ValueError, match=r"batch_size=4 over 9 training rows gives a batch "
                                         r"of 1 row.*'batchnorm.*BatchNorm"):
        model.fit(X, y, optimizer=opt, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size=1"):
        model.fit(X, y, optimizer=opt, batch_size=1, epochs=1, verbose=0)
    assert_state(model_state(model, opt), before)
    bn = nl.BatchNorm(3)
    with pytest.raises(ValueError, match="more than one row"):
        bn.forward(np.ones((1, 3), np.float32))
    assert bn.buffers["num_batches_tracked"][0] == 0 and bn.buffers["running_var"].all()
    # eval mode takes one row (the running statistics), and training goes on
    model.eval()
    assert model.predict(X[:1]).shape == (1, 4)
    model.forward(X[:1])
    model.fit(X[:8], y[:8], optimizer=opt, batch_size=4, epochs=1, verbose=0)
    assert model.buffers()["1.num_batches_tracked"][0] == 3


def test_rejected_step_leaves_the_running_statistics(rng):
    """A step refused for a non-finite loss commits nothing: BatchNorm's
    statistics, the parameters and the step count stay as they were."""
    model = bn_net(np.float32)
    opt = nl.SGD(model, lr=0.1, momentum=0.9)
    X, y = data(rng, 6, 10, np.float32), rng.integers(0, 4, 6)
    model.train_step(X, y, nl.SoftmaxCrossEntropy(), opt)
    before = model_state(model, opt)
    bad = X.copy()
    bad[2, 3] = np.inf
    with pytest.raises(nl.NonFiniteLossError):
        model.train_step(bad, y, nl.SoftmaxCrossEntropy(), opt)
    after = model_state(model, opt)
    assert_state(after, before)


def test_empty_batch(rng):
    """No rows: eval gives an empty output (as torch); training refuses it
    (torch returns an empty output too, but counts a batch); nothing
    changes either way."""
    model = bn_net(np.float64)
    opt = nl.SGD(model, lr=0.1)
    X, y = data(rng, 6, 10), rng.integers(0, 4, 6)
    model.train_step(X, y, nl.SoftmaxCrossEntropy(), opt)
    before = model_state(model, opt)
    with pytest.raises(ValueError, match="at least one sample"):
        model.train_step(X[:0], y[:0], nl.SoftmaxCrossEntropy(), opt)
    with pytest.raises(ValueError, match="more than one row per batch"):
        model.forward(X[:0])
    assert model.predict(X[:0]).shape == (0, 4)
    ln = nl.LayerNorm(10, dtype=np.float64)
    assert ln.forward(X[:0]).shape == (0, 10)
    d = nl.Dropout(0.5)
    assert d.forward(np.zeros((0, 3))).shape == (0, 3)
    assert_state(model_state(model, opt), before)
    np.testing.assert_array_equal(model.predict(X), model.predict(X))


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match=r"Dropout\(p\): p must be a probability"):
        nl.Dropout(1.5)
    for bad in (2.0, "0.1", float("nan"), True):
        with pytest.raises(ValueError, match="BatchNorm: momentum must be in"):
            nl.BatchNorm(4, momentum=bad)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        nl.LayerNorm(4, eps=0)
    with pytest.raises(ValueError, match="features must be a positive int"):
        nl.BatchNorm(0)
    with pytest.raises(ValueError, match="width|features|columns"):
        nl.BatchNorm(4).forward(np.ones((3, 5), np.float32))
