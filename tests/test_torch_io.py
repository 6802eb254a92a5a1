"""PyTorch weight exchange (nnlayers/torch_io.py): state dicts in torch's
names and layout, load_state_dict, nl.from_torch and model.to_torch.

Outputs are compared with torch's own (eval mode): elementwise within rtol
of the value plus rtol times the largest magnitude, rtol 1e-12 in float64
and 1e-6 in float32. The state-dict layout and error tests need no torch.
"""
import subprocess
import sys

import numpy as np
import pytest

import nnlayers as nl

F32, F64 = np.float32, np.float64
RTOL = {F32: 1e-6, F64: 1e-12}


def _torch():
    return pytest.importorskip("torch")


def _assert_close(got, ref, dtype):
    rtol = RTOL[dtype]
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * float(np.abs(ref).max()))


def _data(n, width, dtype, seed=0):
    return (1.5 * np.random.default_rng(seed).standard_normal((n, width))).astype(dtype)


def _nl_model(dtype=F64):
    bn = nl.BatchNorm(6, eps=1e-3, momentum=0.2, dtype=dtype)
    rng = np.random.default_rng(7)
    bn.params["gamma"] = rng.uniform(0.5, 2.0, 6)
    bn.params["beta"] = rng.standard_normal(6)
    bn.buffers["running_mean"] = rng.standard_normal(6)
    bn.buffers["running_var"] = rng.uniform(0.3, 3.0, 6)
    bn.buffers["num_batches_tracked"] = [17]
    ln = nl.LayerNorm(5, eps=1e-4, dtype=dtype)
    ln.params["gamma"] = rng.uniform(0.5, 2.0, 5)
    return nl.Sequential(nl.Linear(4, 6, dtype=dtype, seed=1), bn, nl.GELU(), nl.Dropout(0.3),
                         nl.Linear(6, 5, dtype=dtype, seed=2), ln, nl.LeakyReLU(0.1),
                         nl.Linear(5, 3, bias=False, dtype=dtype, seed=3), nl.LogSoftmax())


# ---------------------------------------------------------------- state dict

def test_state_dict_is_in_torchs_names_and_layout():
    model = _nl_model()
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked", "4.weight", "4.bias",
                        "5.weight", "5.bias", "7.weight"]
    W = model[0].params["W"]
    assert sd["0.weight"].shape == (6, 4) and W.shape == (4, 6)
    np.testing.assert_array_equal(sd["0.weight"], W.T)
    np.testing.assert_array_equal(sd["1.running_var"], model[1].buffers["running_var"])
    assert sd["1.num_batches_tracked"].dtype == np.int64
    assert sd["1.num_batches_tracked"].shape == () and int(sd["1.num_batches_tracked"]) == 17
    sd["0.weight"][...] = 0   # copies: the model is unchanged
    assert np.abs(model[0].params["W"]).sum() > 0


def test_state_dict_round_trip_into_another_model_without_torch():
    a, b = _nl_model(), _nl_model()
    b[0].params["W"] = np.zeros((4, 6))
    b.load_state_dict(a.state_dict())
    x = _data(5, 4, F64)
    np.testing.assert_array_equal(b.predict(x), a.predict(x))
    for k, v in a.buffers().items():
        np.testing.assert_array_equal(b.buffers()[k], v)


def test_graph_and_nested_names():
    x = nl.Input(3)
    enc = nl.Sequential(nl.Linear(3, 4, name="inner"), nl.ReLU(), name="enc")
    out = nl.Linear(4, 2, name="head")(enc(x))
    sd = nl.Model(x, out).state_dict()
    assert list(sd) == ["enc.0.weight", "enc.0.bias", "head.weight", "head.bias"]


class Scale(nl.Layer):
    def __init__(self, features):
        super().__init__(dtype=np.float64)
        self.s = self.add_param("s", (features,), init="ones")

    def forward(self, x):
        return x * self.s

    def backward(self, g):
        return g * self.s


def test_python_layer_keeps_its_own_names():
    model = nl.Sequential(nl.Linear(2, 3, dtype=F64), Scale(3))
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.s"]
    sd["1.s"] = np.array([1.0, 2.0, 3.0])
    model.load_state_dict(sd)
    np.testing.assert_array_equal(model[1].params["s"], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- errors

def _params_of(model):
    return {k: np.array(v) for k, v in {**model.parameters(), **model.buffers()}.items()}


def test_transposed_weight_is_named_and_nothing_changes():
    model = _nl_model()
    before = _params_of(model)
    sd = model.state_dict()
    sd["4.bias"] = sd["4.bias"] + 1.0            # would be written first if unchecked
    sd["0.weight"] = model[0].params["W"].copy()  # nnlayers' (in, out) layout
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 6\), expected \(6, 4\) "
                                         r"in torch's layout \(out_features, in_features\)"
                                         r" — it looks transposed.*pass W.T"):
        model.load_state_dict(sd)
    for k, v in _params_of(model).items():
        np.testing.assert_array_equal(v, before[k])
    x = _data(3, 4, F64)
    assert np.isfinite(model.predict(x)).all()


def test_bad_state_dicts_change_nothing():
    model = _nl_model()
    before = _params_of(model)
    sd = model.state_dict()
    del sd["1.running_var"]
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing \['1.running_var'\], unexpected "
                                         r"\['extra.weight'\]"):
        model.load_state_dict(sd)
    sd = model.state_dict()
    sd["4.bias"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"'4.bias' has shape \(7,\), expected \(5,\)"):
        model.load_state_dict(sd)
    sd = model.state_dict()
    sd["4.bias"] = np.array(["a"] * 5)
    with pytest.raises(TypeError, match="'4.bias' must hold real numbers"):
        model.load_state_dict(sd)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        model.load_state_dict([1, 2])
    for k, v in _params_of(model).items():
        np.testing.assert_array_equal(v, before[k])


def test_non_strict_load_reports_keys():
    model = _nl_model()
    sd = {"0.bias": np.arange(6.0), "nope": np.zeros(1)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert unexpected == ["nope"] and "0.weight" in missing and "0.bias" not in missing
    np.testing.assert_array_equal(model[0].params["b"], np.arange(6.0))


def test_to_torch_refuses_what_torch_has_no_module_for():
    x = nl.Input(3)
    graph = nl.Model(x, nl.Add()([nl.Linear(3, 3)(x), x]))
    with pytest.raises(TypeError, match="is a graph model; only chains.*state_dict"):
        graph.to_torch()
    step = nl.Step()
    with pytest.raises(TypeError, match=rf"layer {step.name!r} \(Step, kind 'step'\) has no "
                                        r"torch.nn module"):
        nl.Sequential(nl.Linear(3, 3), step).to_torch()


def test_import_nnlayers_does_not_import_torch():
    code = ("import sys, nnlayers as nl; nl.Sequential(nl.Linear(2, 2)).state_dict(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- with torch

def _torch_model(torch, dtype):
    nn = torch.nn
    torch.manual_seed(0)
    shared = nn.Linear(5, 5)
    m = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=None), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(6, 5), nn.LayerNorm(5), nn.GELU(approximate="tanh"), shared, nn.SiLU(),
        nn.Sequential(nn.Linear(5, 5), nn.ELU(0.5), nn.Softsign()), shared,
        nn.LeakyReLU(0.05), nn.Sigmoid(), nn.Linear(5, 5), nn.Tanh(), nn.Hardtanh(-0.4, 0.7),
        nn.Softplus(), nn.ReLU6(), nn.Identity(), nn.Linear(5, 4, bias=False),
        nn.BatchNorm1d(4, affine=False), nn.LayerNorm(4, elementwise_affine=False),
        nn.Softmax(dim=-1))
    m = m.to(torch.float64 if dtype == F64 else torch.float32)
    m.train()
    with torch.no_grad():   # running statistics away from their start
        for i in range(3):
            m(torch.from_numpy(_data(16, 4, dtype, 10 + i)))
    return m.eval()


@pytest.mark.parametrize("dtype", [F32, F64])
def test_from_torch_gives_the_same_outputs(dtype):
    torch = _torch()
    tm = _torch_model(torch, dtype)
    model = nl.from_torch(tm)
    assert isinstance(model, nl.Sequential) and model.dtype == dtype
    assert model.training is False and model[7] is model[10]   # the shared module
    x = _data(12, 4, dtype)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    _assert_close(model.predict(x), ref, dtype)
    assert int(model[1].buffers["num_batches_tracked"][0]) == 3


@pytest.mark.parametrize("dtype", [F32, F64])
def test_to_torch_gives_the_same_outputs(dtype):
    torch = _torch()
    model = _nl_model(dtype)
    model.fit(_data(32, 4, dtype), np.arange(32) % 3, loss=nl.NLL(), epochs=1, batch_size=8,
              verbose=0, seed=0)
    model.eval()
    tm = model.to_torch()
    assert isinstance(tm, torch.nn.Sequential) and not tm.training
    assert tm[0].weight.dtype == (torch.float64 if dtype == F64 else torch.float32)
    x = _data(9, 4, dtype, 3)
    with torch.no_grad():
        got = tm(torch.from_numpy(x)).numpy()
    _assert_close(got, model.predict(x), dtype)


def test_round_trips_in_float64():
    torch = _torch()
    tm = _torch_model(torch, F64)
    x = _data(10, 4, F64, 5)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    back = nl.from_torch(tm).to_torch().eval()
    with torch.no_grad():
        _assert_close(back(torch.from_numpy(x)).numpy(), ref, F64)
    # torch's state_dict into an nnlayers model, and nnlayers' into torch
    model = nl.from_torch(tm)
    assert list(model.state_dict()) == list(tm.state_dict())   # a shared module twice too
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())
    fresh = nl.from_torch(_torch_model(torch, F64).apply(_reset))
    fresh.load_state_dict(tm.state_dict())
    _assert_close(fresh.predict(x), ref, F64)
    other = _torch_model(torch, F64).apply(_reset)
    other.load_state_dict(model.state_dict(tensors=True))
    with torch.no_grad():
        _assert_close(other(torch.from_numpy(x)).numpy(), ref, F64)


def _reset(m):
    if hasattr(m, "reset_parameters"):
        m.reset_parameters()
    if hasattr(m, "reset_running_stats"):
        m.reset_running_stats()


def test_from_torch_errors_name_the_module():
    torch = _torch()
    nn = torch.nn
    with pytest.raises(TypeError, match=r"module\[1\] is torch.nn.modules.conv.Conv1d, which "
                                        r"has no nnlayers layer; supported: Sequential"):
        nl.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Conv1d(1, 1, 1)))
    with pytest.raises(ValueError, match=r"module\[0\] is Softmax\(dim=0\)"):
        nl.from_torch(nn.Sequential(nn.Softmax(dim=0)))
    with pytest.raises(ValueError, match=r"Softplus\(beta=2"):
        nl.from_torch(nn.Sequential(nn.Softplus(beta=2.0)))
    with pytest.raises(TypeError, match="takes a torch.nn.Sequential, got Linear"):
        nl.from_torch(nn.Linear(2, 2))
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
    with pytest.raises(TypeError, match=r"dtypes \['torch.float32', 'torch.float64'\].*"
                                        r"module.double\(\)"):
        nl.from_torch(mixed)
    assert nl.from_torch(mixed, dtype=np.float64).dtype == np.float64
