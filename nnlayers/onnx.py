"""ONNX export: ``nl.onnx.export(model, path, opset=17)``.

Writes a standard ONNX graph (the default ``ai.onnx`` domain only) of a
model built from the built-in layers: a ``Sequential`` or any graph
(several inputs and outputs, merges, shared layers, nested models), in
eval mode (Dropout is the identity, BatchNorm uses its running
statistics), float32 or float64 as the model computes. The engine's own
flattened graph is walked, so nested models come out expanded and a
shared layer's parameters are stored once.

The ``onnx`` package (the ``nnlayers[onnx]`` extra) is imported only when
``export`` runs. Parameters keep nnlayers' names ("0.W", "linear_2.b")
and layout (a Linear's W is (in, out), so it is ``Gemm``'s B as is).

Where a single ONNX operator would not reproduce the model to its
precision, the export writes the same formula with elementary operators:
- float64 models: ONNX stores float attributes (``epsilon``, ``alpha``) as
  float32, so LeakyReLU, ELU, BatchNorm and LayerNorm are written with
  float64 constants instead; Softplus, Softsign, Average and GELU too,
  because onnxruntime has no float64 kernel for those operators (nor for
  ``Erf``: a float64 model with exact GELU exports, but onnxruntime cannot
  run it);
- opsets below 17 (no LayerNormalization) and below 20 (no Gelu).
"""
import numbers
import os

import numpy as np

__all__ = ["export", "MIN_OPSET", "DEFAULT_OPSET"]

MIN_OPSET = 13       # Softmax over the last axis alone, Clip with tensor bounds
DEFAULT_OPSET = 17   # the first with LayerNormalization

_SQRT1_2 = 0.70710678118654752440    # 1 / sqrt(2)
_SQRT_2_PI = 0.79788456080286535588  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("nl.onnx.export needs the onnx package: "
                          "pip install \"nnlayers[onnx]\"") from None
    return onnx


def _check_model(model):
    """The model's flat layers, each built in; TypeError naming the first
    layer written in Python (it has no ONNX form)."""
    from .model import Model

    if not isinstance(model, Model):
        hint = " (wrap a layer: nl.Sequential(layer))" if hasattr(model, "kind") else ""
        raise TypeError(f"nl.onnx.export(model, ...): model must be an nl.Model or "
                        f"nl.Sequential, got {type(model).__name__}{hint}")
    for layer in model._flat_layers:
        if layer.kind not in _EMIT:
            raise TypeError(
                f"nl.onnx.export: model {model.name!r} holds layer {layer.name!r} "
                f"({type(layer).__name__}), a layer written in Python (kind "
                f"{layer.kind!r}); only built-in layers have an ONNX form. Replace it "
                f"by built-in layers, or export the part of the model without it")
    return model._flat_layers


def _check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"nl.onnx.export: opset must be an int, got {type(opset).__name__}")
    if opset < MIN_OPSET:
        raise ValueError(f"nl.onnx.export: opset={opset} is below {MIN_OPSET}, the oldest "
                         f"supported (Softmax over the last axis needs opset 13); pass "
                         f"opset={MIN_OPSET} or higher")
    return int(opset)


class _Graph:
    """The ONNX nodes and initializers being written, with unique names."""

    def __init__(self, onnx, opset, dtype):
        self.onnx = onnx
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.f64 = self.dtype == np.float64
        self.elem = onnx.TensorProto.DOUBLE if self.f64 else onnx.TensorProto.FLOAT
        self.nodes = []
        self.inits = []
        self.used = set()
        self.consts = {}
        self.params = {}

    def fresh(self, base):
        """A value or node name not used yet: base, base_1, base_2, ..."""
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def op(self, op_type, inputs, base, **attrs):
        """Append one node; the name of its output."""
        out = self.fresh(base)
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), [out], name=self.fresh(f"{base}/{op_type}"), **attrs))
        return out

    def tensor(self, name, array):
        """An initializer holding array (in the model's dtype unless it is
        an integer array); its name."""
        a = np.asarray(array)
        if a.dtype.kind == "f":
            a = a.astype(self.dtype)
        name = self.fresh(name)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def const(self, value):
        """A scalar constant of the model's dtype (one initializer per value)."""
        key = float(value)
        if key not in self.consts:
            self.consts[key] = self.tensor(f"const_{len(self.consts)}", np.array(key))
        return self.consts[key]

    def param(self, layer, prefix, key, values=None):
        """The initializer of layer's tensor `key` (a parameter or buffer),
        named "<prefix>.<key>" as in model.parameters(); written once per
        layer, however often it is used. `values` replaces absent tensors
        (BatchNorm without affine: ones and zeros)."""
        k = (id(layer), key)
        if k not in self.params:
            tensors = {**layer.params, **layer.buffers}
            arr = tensors[key] if key in tensors else values
            self.params[k] = self.tensor(f"{prefix}.{key}", np.array(arr))
        return self.params[k]

    def reduce_mean(self, x, axis, base):
        """Mean over one axis, kept (axes an attribute before opset 18, an
        input from 18)."""
        if self.opset >= 18:
            axes = self.tensor(f"{base}.axes", np.array([axis], dtype=np.int64))
            return self.op("ReduceMean", [x, axes], base, keepdims=1)
        return self.op("ReduceMean", [x], base, axes=[axis], keepdims=1)


# ---------------------------------------------------------------- one layer each
# emit(g, layer, prefix, xs, base) -> the name of the node's output
# xs: its inputs' value names (N, width each)

def _linear(g, layer, prefix, xs, base):
    W = g.param(layer, prefix, "W")                       # (I, O), nnlayers' layout
    if layer.bias:
        return g.op("Gemm", [xs[0], W, g.param(layer, prefix, "b")], base)
    return g.op("MatMul", [xs[0], W], base)


def _simple(op_type):
    def emit(g, layer, prefix, xs, base):
        return g.op(op_type, xs[:1], base)
    return emit


def _leaky_relu(g, layer, prefix, xs, base):
    x, slope = xs[0], layer.slope
    if not g.f64:
        return g.op("LeakyRelu", [x], base, alpha=slope)
    pos = g.op("Greater", [x, g.const(0)], base + "/pos")
    return g.op("Where", [pos, x, g.op("Mul", [x, g.const(slope)], base + "/neg")], base)


def _softplus(g, layer, prefix, xs, base):
    x = xs[0]
    if not g.f64:
        return g.op("Softplus", [x], base)
    # max(z, 0) + log(1 + e^-|z|)
    e = g.op("Exp", [g.op("Neg", [g.op("Abs", [x], base + "/abs")], base + "/neg")],
             base + "/exp")
    tail = g.op("Log", [g.op("Add", [e, g.const(1)], base + "/1p")], base + "/log")
    return g.op("Add", [g.op("Max", [x, g.const(0)], base + "/max"), tail], base)


def _step(g, layer, prefix, xs, base):
    x = xs[0]   # [z > 0], NaN stays NaN
    gt = g.op("Cast", [g.op("Greater", [x, g.const(0)], base + "/gt")], base + "/cast",
              to=g.elem)
    return g.op("Where", [g.op("IsNaN", [x], base + "/nan"), x, gt], base)


def _gelu(g, layer, prefix, xs, base):
    x, tanh_form = xs[0], layer.approximate == "tanh"
    if g.opset >= 20 and not g.f64:
        return g.op("Gelu", [x], base, approximate=layer.approximate)
    half_x = g.op("Mul", [x, g.const(0.5)], base + "/half")
    if tanh_form:   # z (1 + tanh(sqrt(2/pi) (z + kappa z^3))) / 2
        cube = g.op("Mul", [g.op("Mul", [x, x], base + "/sq"), x], base + "/cube")
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(_GELU_KAPPA)], base + "/k")],
                     base + "/inner")
        t = g.op("Tanh", [g.op("Mul", [inner, g.const(_SQRT_2_PI)], base + "/u")],
                 base + "/tanh")
    else:           # z (1 + erf(z / sqrt 2)) / 2
        t = g.op("Erf", [g.op("Mul", [x, g.const(_SQRT1_2)], base + "/scaled")], base + "/erf")
    return g.op("Mul", [half_x, g.op("Add", [t, g.const(1)], base + "/1p")], base)


def _silu(g, layer, prefix, xs, base):
    return g.op("Mul", [xs[0], g.op("Sigmoid", [xs[0]], base + "/sigmoid")], base)


def _elu(g, layer, prefix, xs, base):
    x, alpha = xs[0], layer.alpha
    if not g.f64:
        return g.op("Elu", [x], base, alpha=alpha)
    # z > 0 ? z : alpha (e^min(z, 0) - 1)
    em1 = g.op("Sub", [g.op("Exp", [g.op("Min", [x, g.const(0)], base + "/min")],
                            base + "/exp"), g.const(1)], base + "/em1")
    neg = g.op("Mul", [em1, g.const(alpha)], base + "/neg")
    return g.op("Where", [g.op("Greater", [x, g.const(0)], base + "/pos"), x, neg], base)


def _softsign(g, layer, prefix, xs, base):
    x = xs[0]
    if not g.f64:
        return g.op("Softsign", [x], base)
    den = g.op("Add", [g.op("Abs", [x], base + "/abs"), g.const(1)], base + "/den")
    return g.op("Div", [x, den], base)


def _hardtanh(g, layer, prefix, xs, base):
    return g.op("Clip", [xs[0], g.const(layer.min_val), g.const(layer.max_val)], base)


def _softmax(op_type):
    def emit(g, layer, prefix, xs, base):
        return g.op(op_type, xs[:1], base, axis=-1)
    return emit


def _add(g, layer, prefix, xs, base):
    return g.op("Add" if len(xs) == 2 else "Sum", xs, base)


def _multiply(g, layer, prefix, xs, base):
    y = xs[0]
    for i, x in enumerate(xs[1:]):
        y = g.op("Mul", [y, x], base if i == len(xs) - 2 else f"{base}/{i}")
    return y


def _average(g, layer, prefix, xs, base):
    if not g.f64:
        return g.op("Mean", xs, base)
    total = g.op("Sum", xs, base + "/sum")   # the core's sum * (1 / k)
    return g.op("Mul", [total, g.const(1.0 / len(xs))], base)


def _normalized(g, x, mean, var, eps, base):
    """(x - mean) / sqrt(var + eps), with float64 constants."""
    std = g.op("Sqrt", [g.op("Add", [var, g.const(eps)], base + "/var_eps")], base + "/std")
    return g.op("Div", [g.op("Sub", [x, mean], base + "/centred"), std], base + "/xhat")


def _affine(g, layer, prefix, xhat, base):
    if not layer.bias:
        return g.op("Identity", [xhat], base)
    y = g.op("Mul", [xhat, g.param(layer, prefix, "gamma")], base + "/scaled")
    return g.op("Add", [y, g.param(layer, prefix, "beta")], base)


def _batchnorm(g, layer, prefix, xs, base):
    x, f = xs[0], layer.features
    if not layer.track_running_stats:   # eval uses the batch's statistics
        mean = g.reduce_mean(x, 0, base + "/mean")
        d = g.op("Sub", [x, mean], base + "/d")
        var = g.reduce_mean(g.op("Mul", [d, d], base + "/d2"), 0, base + "/var")
        return _affine(g, layer, prefix, _normalized(g, x, mean, var, layer.eps, base), base)
    mean = g.param(layer, prefix, "running_mean")
    var = g.param(layer, prefix, "running_var")
    if g.f64:
        return _affine(g, layer, prefix, _normalized(g, x, mean, var, layer.eps, base), base)
    scale = g.param(layer, prefix, "gamma", np.ones(f))
    shift = g.param(layer, prefix, "beta", np.zeros(f))
    return g.op("BatchNormalization", [x, scale, shift, mean, var], base, epsilon=layer.eps)


def _layernorm(g, layer, prefix, xs, base):
    x, f = xs[0], layer.features
    if g.opset >= 17 and not g.f64:
        scale = g.param(layer, prefix, "gamma", np.ones(f))
        shift = g.param(layer, prefix, "beta", np.zeros(f))
        return g.op("LayerNormalization", [x, scale, shift], base, axis=-1,
                    epsilon=layer.eps)
    mean = g.reduce_mean(x, -1, base + "/mean")
    d = g.op("Sub", [x, mean], base + "/d")
    var = g.reduce_mean(g.op("Mul", [d, d], base + "/d2"), -1, base + "/var")
    return _affine(g, layer, prefix, _normalized(g, x, mean, var, layer.eps, base), base)


_EMIT = {
    "linear": _linear,
    "identity": _simple("Identity"),
    "dropout": _simple("Identity"),   # eval mode
    "relu": _simple("Relu"),
    "leaky_relu": _leaky_relu,
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "softplus": _softplus,
    "step": _step,
    "cos": _simple("Cos"),
    "gelu": _gelu,
    "silu": _silu,
    "elu": _elu,
    "softsign": _softsign,
    "hardtanh": _hardtanh,
    "softmax": _softmax("Softmax"),
    "log_softmax": _softmax("LogSoftmax"),
    "add": _add,
    "subtract": lambda g, layer, prefix, xs, base: g.op("Sub", xs, base),
    "multiply": _multiply,
    "average": _average,
    "concatenate": lambda g, layer, prefix, xs, base: g.op("Concat", xs, base, axis=1),
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
}

SUPPORTED_KINDS = tuple(sorted(_EMIT))


# ---------------------------------------------------------------- the model

def _input_widths(model):
    """Each input's width (None when a chain of width-keeping layers does
    not fix it)."""
    from .model import Sequential, _chain_input_width

    widths = list(model._input_widths)
    if isinstance(model, Sequential) and widths[0] is None:
        widths[0] = _chain_input_width(model._items)
    return widths


def _output_widths(model, in_widths):
    from .model import _widths_of

    if any(w is None for w in in_widths):
        return [None] * len(model._flat_outputs)
    return _widths_of(model._spec, in_widths)


def _build_graph(onnx, model, opset):
    """The onnx GraphProto of model's flattened graph."""
    g = _Graph(onnx, opset, model.dtype)
    prefixes = {id(layer): name for name, layer in model._named_leaves()}
    in_widths = _input_widths(model)
    n_in = len(in_widths)
    values = [g.fresh(name) for _, _, name in model._spec.inputs]
    uses = {}
    for li, ins in model._flat_nodes:
        layer = model._flat_layers[li]
        uses[li] = uses.get(li, 0) + 1
        prefix = prefixes[id(layer)]
        base = prefix if uses[li] == 1 else f"{prefix}[{uses[li] - 1}]"
        values.append(_EMIT[layer.kind](g, layer, prefix, [values[v] for v in ins], base))
    outputs = _name_outputs(g, model, values, n_in)

    def info(name, width):
        return onnx.helper.make_tensor_value_info(
            name, g.elem, ["batch", "features" if width is None else int(width)])

    out_widths = _output_widths(model, in_widths)
    return onnx.helper.make_graph(
        g.nodes, model.name, [info(v, w) for v, w in zip(values[:n_in], in_widths)],
        [info(v, w) for v, w in zip(outputs, out_widths)], initializer=g.inits)


def _name_outputs(g, model, values, n_in):
    """The graph's output names: the model's output names where free, an
    Identity node where a value is an input or is output twice."""
    names = []
    taken = set(values[:n_in])
    for j, v in enumerate(model._flat_outputs):
        wanted = model._output_names[j] if j < len(model._output_names) else f"output_{j}"
        src = values[v]
        if v < n_in or src in names or wanted in taken or (wanted != src and wanted in g.used):
            names.append(g.op("Identity", [src], wanted))
            continue
        if wanted != src:
            _rename(g, src, wanted)
        values[v] = wanted
        names.append(wanted)
    return names


def _rename(g, old, new):
    """Rename value `old` to `new` (unused) in every node."""
    g.used.add(new)
    for node in g.nodes:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new


def to_proto(model, opset=DEFAULT_OPSET):
    """The ONNX ``ModelProto`` of ``model`` (what :func:`export` writes),
    checked by ``onnx.checker``."""
    _check_model(model)
    opset = _check_opset(opset)
    onnx = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"nl.onnx.export: opset={opset} is newer than the installed onnx "
                         f"{onnx.__version__} knows ({newest}); pass opset <= {newest}")
    from ._version import __version__

    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(_build_graph(onnx, model, opset), opset_imports=opsets,
                                   producer_name="nnlayers", producer_version=__version__)
    proto.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` as an ONNX file at ``path`` and return the
    ``onnx.ModelProto``.

    model : an nl.Model or nl.Sequential of built-in layers (a layer
        written in Python raises TypeError naming it). Exported in eval
        mode: Dropout is the identity, BatchNorm uses its running
        statistics (the batch's when it tracks none), as ``predict``.
    path : a file path (str or os.PathLike).
    opset : the ai.onnx opset, 13 (the oldest supported) up to what the
        installed onnx knows; default 17. Below 17 LayerNorm and below 20
        GELU are written with elementary operators.

    The graph's inputs are the model's (named as its ``nl.Input``s; a
    Sequential's is "input"), of shape (batch, width) and the model's
    dtype; its outputs are named as the model's. Needs the ``onnx``
    package: ``pip install "nnlayers[onnx]"``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"nl.onnx.export: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    proto = to_proto(model, opset)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return proto
