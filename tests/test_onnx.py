"""nl.onnx.export checked by onnxruntime.

Every built-in layer kind, chains and graphs (several inputs and outputs,
merges, shared layers, nested models, BatchNorm with running statistics and
Dropout), float32 and float64, several opsets: onnxruntime's output on the
exported file must equal ``model.predict``, elementwise within ``rtol`` of
the value plus ``rtol`` times the output's largest magnitude (rtol 1e-5 in
float32, 1e-12 in float64).

One known gap: onnxruntime has no float64 kernel for ``Erf``, so a float64
model with exact GELU cannot run there. That case asserts onnxruntime's
error names Erf, and checks the same file with onnx's reference evaluator
instead, its Erf replaced by a float64 one (its own is float32).

The error tests need neither package.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import nnlayers as nl
import nnlayers.onnx as nlx

F32, F64 = np.float32, np.float64
RTOL = {F32: 1e-5, F64: 1e-12}


def _deps():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    return onnx, ort


def _assert_close(got, ref, dtype, what=""):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, what
    assert got.dtype == ref.dtype == np.dtype(dtype), what
    rtol = RTOL[dtype]
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(scale, 1e-30),
                               err_msg=what)


def _erf64_evaluator(onnx, proto):
    """onnx's reference evaluator with a float64 Erf (math.erf per value)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x):
            return (np.vectorize(math.erf, otypes=[x.dtype])(x),)

    return ReferenceEvaluator(proto, new_ops=[Erf])


def _run_exported(model, xs, tmp_path, opset=nlx.DEFAULT_OPSET):
    """Export, run in onnxruntime, return (outputs, proto)."""
    onnx, ort = _deps()
    path = tmp_path / f"{model.name}_{opset}.onnx"
    proto = nlx.export(model, path, opset=opset)
    feeds = {i.name: x for i, x in zip(proto.graph.input, xs)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:   # the one known gap: no float64 Erf in onnxruntime
        has_erf = any(n.op_type in ("Erf", "Gelu") for n in proto.graph.node)
        if not (xs[0].dtype == F64 and has_erf and "Erf" in str(e)):
            raise
        return _erf64_evaluator(onnx, proto).run(None, feeds), proto
    return sess.run(None, feeds), proto


def _check(model, xs, tmp_path, opset=nlx.DEFAULT_OPSET):
    dtype = xs[0].dtype.type
    ref = model.predict(xs if len(xs) > 1 else xs[0])
    ref = ref if isinstance(ref, list) else [ref]
    got, proto = _run_exported(model, xs, tmp_path, opset)
    assert len(got) == len(ref)
    for j, (g, r) in enumerate(zip(got, ref)):
        _assert_close(g, r, dtype, f"output {j} at opset {opset}")
    return proto


def _data(n, width, dtype, seed=0):
    return (2.0 * np.random.default_rng(seed).standard_normal((n, width))).astype(dtype)


# ---------------------------------------------------------------- every kind

ACTIVATIONS = {
    "identity": lambda d: nl.Identity(dtype=d),
    "relu": lambda d: nl.ReLU(dtype=d),
    "leaky_relu": lambda d: nl.LeakyReLU(0.2, dtype=d),
    "sigmoid": lambda d: nl.Sigmoid(dtype=d),
    "tanh": lambda d: nl.Tanh(dtype=d),
    "softplus": lambda d: nl.Softplus(dtype=d),
    "step": lambda d: nl.Step(dtype=d),
    "cos": lambda d: nl.Cos(dtype=d),
    "gelu": lambda d: nl.GELU(dtype=d),
    "gelu_tanh": lambda d: nl.GELU("tanh", dtype=d),
    "silu": lambda d: nl.SiLU(dtype=d),
    "elu": lambda d: nl.ELU(0.7, dtype=d),
    "softsign": lambda d: nl.Softsign(dtype=d),
    "hardtanh": lambda d: nl.Hardtanh(-0.5, 1.5, dtype=d),
    "softmax": lambda d: nl.Softmax(dtype=d),
    "log_softmax": lambda d: nl.LogSoftmax(dtype=d),
    "dropout": lambda d: nl.Dropout(0.3, dtype=d),
    "batchnorm": lambda d: _trained_bn(6, d),
    "batchnorm_plain": lambda d: nl.BatchNorm(6, affine=False, dtype=d),
    "batchnorm_batch_stats": lambda d: nl.BatchNorm(6, track_running_stats=False, dtype=d),
    "layernorm": lambda d: _random_affine(nl.LayerNorm(6, eps=1e-3, dtype=d)),
    "layernorm_plain": lambda d: nl.LayerNorm(6, elementwise_affine=False, dtype=d),
}


def _random_affine(layer, seed=1):
    rng = np.random.default_rng(seed)
    for k, v in layer.params.items():
        layer.params[k] = rng.standard_normal(v.shape) + (1.0 if k == "gamma" else 0.0)
    return layer


def _trained_bn(features, dtype):
    """A BatchNorm whose running statistics and parameters are not the
    defaults (so the export must carry them)."""
    bn = _random_affine(nl.BatchNorm(features, eps=1e-3, dtype=dtype))
    rng = np.random.default_rng(2)
    bn.buffers["running_mean"] = rng.standard_normal(features)
    bn.buffers["running_var"] = rng.uniform(0.2, 3.0, features)
    return bn


def _chain(act, dtype):
    return nl.Sequential(nl.Linear(5, 6, dtype=dtype, seed=3), ACTIVATIONS[act](dtype),
                         nl.Linear(6, 3, dtype=dtype, seed=4))


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_chain_of_each_kind(act, dtype, tmp_path):
    _check(_chain(act, dtype), [_data(7, 5, dtype)], tmp_path)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_every_kind_in_one_chain_at_each_opset(opset, dtype, tmp_path):
    layers = [nl.Linear(5, 6, dtype=dtype, seed=5)]
    for i, name in enumerate(sorted(ACTIVATIONS)):
        layers += [ACTIVATIONS[name](dtype), nl.Linear(6, 6, dtype=dtype, seed=10 + i)]
    onnx, _ = _deps()
    if opset > onnx.defs.onnx_opset_version():
        pytest.skip(f"the installed onnx knows opsets up to {onnx.defs.onnx_opset_version()}")
    proto = _check(nl.Sequential(*layers), [_data(9, 5, dtype)], tmp_path, opset)
    ops = {n.op_type for n in proto.graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17 and dtype == F32)
    assert ("Gelu" in ops) == (opset >= 20 and dtype == F32)
    assert ("BatchNormalization" in ops) == (dtype == F32)


def test_merges_step_and_inputs_of_unknown_width(tmp_path):
    x = _data(6, 4, F32)
    x[0, 0] = np.nan   # Step keeps NaN, as the core does
    x[1, 1] = 0.0
    model = nl.Sequential(nl.Step(dtype=F32), nl.ReLU())   # no fixed input width
    got, proto = _run_exported(model, [x], tmp_path)
    np.testing.assert_array_equal(got[0], model.predict(x))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "features"]


# ---------------------------------------------------------------- graphs

def _graph(dtype):
    """Two inputs, two outputs; a shared layer, every merge, a nested
    model, a residual Add, BatchNorm and Dropout."""
    a, b = nl.Input(4, name="a"), nl.Input(4, name="b")
    shared = nl.Linear(4, 5, dtype=dtype, seed=1, name="shared")
    ha, hb = shared(a), shared(b)          # one layer, two uses
    inner_in = nl.Input(5)
    inner_h = nl.GELU("tanh", dtype=dtype)(nl.Linear(5, 5, dtype=dtype, seed=2)(inner_in))
    block = nl.Model(inner_in, nl.Add()([inner_in, inner_h]), name="block")   # residual
    merged = [nl.Add()([ha, hb]), nl.Subtract()([ha, hb]), nl.Multiply()([ha, hb, ha]),
              nl.Average()([ha, hb, block(ha)])]
    cat = nl.Concatenate()(merged + [block(hb)])                              # width 25
    h = nl.Dropout(0.5, dtype=dtype)(nl.ReLU()(_trained_bn(25, dtype)(cat)))
    out1 = nl.Linear(25, 3, dtype=dtype, seed=3, name="head")(h)
    out2 = nl.LogSoftmax()(nl.Linear(25, 2, dtype=dtype, seed=4, name="aux")(
        _random_affine(nl.LayerNorm(25, dtype=dtype))(h)))
    return nl.Model([a, b], [out1, out2], name="two_heads")


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("opset", [13, 17])
def test_graph_with_shared_nested_merges_bn_dropout(opset, dtype, tmp_path):
    model = _graph(dtype)
    proto = _check(model, [_data(8, 4, dtype, 1), _data(8, 4, dtype, 2)], tmp_path, opset)
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == model._output_names
    inits = {t.name for t in proto.graph.initializer}
    assert {n for n in inits if n.startswith("shared.")} == {"shared.W", "shared.b"}  # once
    assert {"head.W", "head.b", "aux.W", "aux.b"} <= inits
    assert sum(n.startswith("block.") and n.endswith(".W") for n in inits) == 1   # nested


def test_trained_model_in_training_mode_exports_eval_behaviour(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(F32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nl.Sequential(nl.Linear(4, 8, seed=0), nl.BatchNorm(8), nl.Dropout(0.5),
                          nl.ReLU(), nl.Linear(8, 2, seed=1))
    model.fit(X, y, epochs=2, batch_size=16, verbose=0, seed=0)
    model.train()
    assert not np.allclose(model.layers[1].buffers["running_var"], 1.0)
    _check(model, [X], tmp_path)


def test_shared_layer_in_a_chain_and_clashing_names(tmp_path):
    lin = nl.Linear(3, 3, seed=0)
    proto = _check(nl.Sequential(lin, nl.Tanh(), lin), [_data(4, 3, F32)], tmp_path)
    assert sorted(t.name for t in proto.graph.initializer) == ["0.W", "0.b"]
    x = nl.Input(3, name="same")   # an output named as the input gets a new name
    proto = _check(nl.Model(x, nl.ReLU(name="same")(x)), [_data(4, 3, F32)], tmp_path)
    assert [i.name for i in proto.graph.input] == ["same"]
    (out,) = proto.graph.output
    assert out.name != "same" and out.name.startswith("same_")


def test_file_is_a_checked_standard_model(tmp_path):
    onnx, _ = _deps()
    model = _chain("layernorm", F32)
    nlx.export(model, str(tmp_path / "m.onnx"))
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(loaded, full_check=True)
    assert [o.domain for o in loaded.opset_import] == [""]
    assert loaded.opset_import[0].version == nlx.DEFAULT_OPSET
    assert {t.name for t in loaded.graph.initializer} >= {"0.W", "0.b", "2.W", "2.b"}
    W = onnx.numpy_helper.to_array(next(t for t in loaded.graph.initializer
                                        if t.name == "0.W"))
    np.testing.assert_array_equal(W, model.layers[0].params["W"])


# ---------------------------------------------------------------- errors

class Scale(nl.Layer):
    def __init__(self, features):
        super().__init__()
        self.s = self.add_param("s", (features,), init="ones")

    def forward(self, x):
        return x * self.s

    def backward(self, g):
        return g * self.s


def test_python_layer_is_refused_by_name(tmp_path):
    model = nl.Sequential(nl.Linear(3, 3), Scale(3))
    name = model.layers[1].name
    with pytest.raises(TypeError, match=rf"layer {name!r} \(Scale\), a layer written in "
                                        r"Python"):
        nlx.export(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_python_layer_inside_a_nested_model_is_refused(tmp_path):
    x = nl.Input(3)
    inner = nl.Sequential(nl.ReLU(), Scale(3))
    model = nl.Model(x, nl.Linear(3, 2)(inner(x)))
    with pytest.raises(TypeError, match=r"\(Scale\), a layer written in Python"):
        nlx.export(model, tmp_path / "x.onnx")


def test_bad_arguments(tmp_path):
    model = _chain("relu", F32)
    with pytest.raises(ValueError, match=r"opset=12 is below 13.*opset=13 or higher"):
        nlx.export(model, tmp_path / "x.onnx", opset=12)
    with pytest.raises(TypeError, match="opset must be an int"):
        nlx.export(model, tmp_path / "x.onnx", opset="17")
    with pytest.raises(TypeError, match=r"nl.Model or nl.Sequential.*nl.Sequential\(layer\)"):
        nlx.export(nl.ReLU(), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="path must be a str"):
        nlx.export(model, 3)
    onnx, _ = _deps()
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match=f"opset <= {newest}"):
        nlx.export(model, tmp_path / "x.onnx", opset=newest + 1)
    assert not (tmp_path / "x.onnx").exists()


def test_import_nnlayers_does_not_import_onnx():
    code = ("import sys, nnlayers; nnlayers.onnx.DEFAULT_OPSET; "
            "print(any(m.split('.')[0] in ('onnx', 'onnxruntime') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
