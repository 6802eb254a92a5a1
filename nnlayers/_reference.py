"""Plain-NumPy twins of the nnlayers C kernels.

Every function here mirrors one kernel of ``csrc/core`` (see ``nn.h``) and
exists so that tests can check the C code against an independent, readable
implementation. The functions are pure: they never modify their inputs and
always return new arrays.

Conventions
-----------
* Data arrays are 2-D ``(N, F)``: one row per sample.
* Arrays are computed in, and returned as, the dtype of the (first) data
  input: float32 stays float32, float64 stays float64. Any other real input
  (ints, bools) is converted to float64 first.
* Losses return ``(loss, grad)``: ``loss`` is a Python float computed with
  float64 accumulation, ``grad`` (dL/dpred) has the dtype of the prediction.
  Every loss is averaged over the batch (a factor ``1/N``).
* Target of the classification losses: either integer labels of shape
  ``(N,)`` (or ``(N, 1)`` when C > 1) with values in ``[0, C)``, or dense
  rows ``(N, C)``.

This module imports nothing from the ``nnlayers`` package, so it can be used
(and tested) without the compiled extension.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "LAYER_KINDS",
    "linear_forward",
    "linear_backward",
    "activation_forward",
    "activation_backward",
    "softmax_forward",
    "softmax_backward",
    "log_softmax_forward",
    "log_softmax_backward",
    "layer_forward",
    "layer_backward",
    "softmax_cross_entropy",
    "binary_cross_entropy",
    "mse",
    "nll",
    "categorical_cross_entropy",
    "binary_cross_entropy_probs",
    "huber",
    "mae",
    "PROB_EPS",
    "accuracy",
    "METRICS",
    "metric_rows",
    "metric_sum",
    "sgd_step",
    "adam_step",
    "adamw_step",
    "rmsprop_step",
    "adagrad_step",
    "clip_grad_norm",
    "clip_grad_value",
    "sequential_forward",
    "sequential_backward",
    "MERGES",
    "merge_forward",
    "merge_backward",
    "graph_forward",
    "graph_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_running_update",
    "layernorm_forward",
    "layernorm_backward",
]

#: Elementwise activation kinds, in the order of ``nn_kind`` in nn.h.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh",
               "softplus", "step", "cos", "gelu", "silu", "elu", "softsign",
               "hardtanh")

#: The arguments of the activations that take some, by the names of the op
#: table (a layer's ``_args``), with their defaults. GELU's ``approximate``
#: is "none" or "tanh" (or, as in the op table, 0 or 1).
ACTIVATION_ARGS = {"leaky_relu": {"slope": 0.01}, "gelu": {"approximate": "none"},
                   "elu": {"alpha": 1.0}, "hardtanh": {"min_val": -1.0, "max_val": 1.0}}

#: Every layer kind understood by :func:`layer_forward`.
LAYER_KINDS = ("linear",) + ACTIVATIONS + ("softmax", "log_softmax")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _float(a, name="x"):
    """``a`` as a float32/float64 ndarray (other real dtypes -> float64)."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real array, got dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def _like(a, dtype):
    """``a`` as an ndarray of exactly ``dtype``."""
    return np.asarray(a, dtype=dtype)


def _check_2d(a, name):
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N, C), got shape {a.shape}")


def _sigmoid(z):
    """Stable logistic function in z's dtype (no overflow for any z)."""
    e = np.exp(-np.abs(z))              # in (0, 1]: never overflows
    one = z.dtype.type(1)
    return np.where(z >= 0, one / (one + e), e / (one + e)).astype(z.dtype, copy=False)


def _dense_target(target, N, C, dtype, name="target"):
    """Labels (N,) or rows (N, C) -> dense (N, C) array of ``dtype``."""
    t = np.asarray(target)
    if t.ndim == 2 and C > 1 and t.shape == (N, 1):
        t = t.reshape(N)                # class ids as a column
    if t.ndim == 1:
        if t.shape[0] != N:
            raise ValueError(f"{name}: expected labels of shape ({N},), got {t.shape}")
        if t.dtype.kind == "f":
            if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
                raise TypeError(f"{name}: labels must be integers, got dtype {t.dtype}")
            t = t.astype(np.int64)
        elif t.dtype.kind not in "iu":
            raise TypeError(f"{name}: labels must be integers, got dtype {t.dtype}")
        if N and (t.min() < 0 or t.max() >= C):
            raise ValueError(f"{name}: labels must lie in [0, {C}), "
                             f"got range [{t.min()}, {t.max()}]")
        dense = np.zeros((N, C), dtype=dtype)
        dense[np.arange(N), t.astype(np.intp)] = 1
        return dense
    if t.shape != (N, C):
        raise ValueError(f"{name}: expected labels ({N},) or rows ({N}, {C}), got shape {t.shape}")
    return _like(t, dtype)


def _rows_target(y, N, C, dtype):
    """Dense targets (N, C), or (N,) when C == 1, -> (N, C) of ``dtype``."""
    y = np.asarray(y)
    if y.ndim == 1 and C == 1 and y.shape[0] == N:
        y = y.reshape(N, 1)
    if y.shape != (N, C):
        raise ValueError(f"target: expected shape ({N}, {C})"
                         + (f" or ({N},)" if C == 1 else "") + f", got {y.shape}")
    return _like(y, dtype)


def _batch(N, name="pred"):
    if N == 0:
        raise ValueError(f"{name}: the batch is empty (N == 0)")
    return N


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------

def linear_forward(x, W, b=None):
    """Fully connected layer ``y = x @ W + b``.

    x: (N, I), W: (I, O), b: (O,) or None  ->  y: (N, O) in x's dtype.
    """
    x = _float(x)
    W = _like(W, x.dtype)
    y = x @ W
    if b is not None:
        y = y + _like(b, x.dtype)
    return y


def linear_backward(gy, x, W, has_bias=True):
    """VJP of :func:`linear_forward`.

    gy: (N, O), x: (N, I), W: (I, O)  ->  (gx (N, I), dW (I, O), db (O,) or None)
    with ``gx = gy @ W.T``, ``dW = x.T @ gy``, ``db = gy.sum(0)``.
    """
    x = _float(x)
    dt = x.dtype
    gy = _like(gy, dt)
    W = _like(W, dt)
    gx = gy @ W.T
    dW = x.T @ gy
    db = gy.sum(axis=0, dtype=dt) if has_bias else None
    return gx, dW, db


# ---------------------------------------------------------------------------
# Elementwise activations
# ---------------------------------------------------------------------------

_SQRT1_2 = 0.70710678118654752440        # 1 / sqrt(2)
_INV_SQRT_2PI = 0.39894228040143267794   # 1 / sqrt(2 pi)
_SQRT_2_PI = 0.79788456080286535588      # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def _act_args(kind, slope, args):
    """The arguments of activation `kind` (a dict, defaults filled in) from
    `slope`, a number (LeakyReLU's slope; ignored by the other kinds) or a
    dict by name (a layer's ``_args``), and keyword arguments."""
    out = dict(ACTIVATION_ARGS.get(kind, {}))
    given = dict(slope) if isinstance(slope, dict) else (
        {"slope": slope} if kind == "leaky_relu" else {})
    given.update(args)
    for name, value in given.items():
        if name not in out:
            raise TypeError(f"kind {kind!r} takes no argument {name!r}; "
                            f"it takes {sorted(out) or 'none'}")
        out[name] = value
    if kind == "gelu":
        a = out["approximate"]
        if not isinstance(a, str):
            a = "none" if a == 0 else "tanh"
        if a not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {a!r}")
        out["approximate"] = a
    if kind == "hardtanh" and not out["min_val"] < out["max_val"]:
        raise ValueError(f"max_val must be greater than min_val, got "
                         f"min_val={out['min_val']!r}, max_val={out['max_val']!r}")
    return out


def _erfc(x):
    """erfc elementwise, from float64 (NumPy has no erfc), in x's dtype."""
    x = np.asarray(x)
    y = np.frompyfunc(math.erfc, 1, 1)(x.astype(np.float64))
    return np.asarray(y, dtype=np.float64).astype(x.dtype)


def _normal_cdf(z):
    """Φ(z) = erfc(-z/√2) / 2 in z's dtype (no cancellation in the tail)."""
    dt = z.dtype.type
    return dt(0.5) * _erfc(-z * dt(_SQRT1_2))


def _gelu_tanh_arg(z):
    """u = √(2/π) (z + 0.044715 z³), the tanh form's argument."""
    dt = z.dtype.type
    return dt(_SQRT_2_PI) * (z + dt(_GELU_KAPPA) * z * z * z)


def _hardtanh_inside(z, args):
    """[min_val < z < max_val] (False for NaN)."""
    dt = z.dtype.type
    return (z > dt(args["min_val"])) & (z < dt(args["max_val"]))


def activation_forward(kind, z, slope=0.01, **args):
    """Elementwise activation ``a = f(z)``; z any shape -> a, same shape/dtype.

    kind: "identity", "relu", "leaky_relu" (f(z) = z if z > 0 else slope*z),
    "sigmoid", "tanh", "softplus" (log(1 + e^z), stable), "step" ([z > 0]),
    "cos", "gelu" (z Φ(z); approximate="tanh": z (1 + tanh u) / 2 with
    u = √(2/π)(z + 0.044715 z³)), "silu" (z σ(z)), "elu" (z if z > 0 else
    alpha (e^z - 1)), "softsign" (z / (1 + |z|)), "hardtanh" (z clamped to
    [min_val, max_val]).

    slope: LeakyReLU's slope, or a dict of the kind's arguments by name
    (see ``ACTIVATION_ARGS``); ``args``: the same as keywords.
    """
    z = _float(z, "z")
    dt = z.dtype.type
    a = _act_args(kind, slope, args)
    if kind == "identity":
        return z.copy()
    if kind == "relu":
        return np.maximum(z, dt(0))  # NaN propagates, -inf -> 0
    if kind == "leaky_relu":
        return np.where(z > 0, z, dt(a["slope"]) * z).astype(z.dtype, copy=False)
    if kind == "sigmoid":
        return _sigmoid(z)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "softplus":
        return np.logaddexp(dt(0), z)
    if kind == "step":
        return np.where(np.isnan(z), z, (z > 0).astype(z.dtype))  # NaN propagates
    if kind == "cos":
        return np.cos(z)
    if kind == "gelu":
        if a["approximate"] == "tanh":
            return z * _sigmoid(dt(2) * _gelu_tanh_arg(z))   # (1 + tanh u) / 2 = σ(2u)
        return z * _normal_cdf(z)
    if kind == "silu":
        return z * _sigmoid(z)
    if kind == "elu":
        return np.where(z <= 0, dt(a["alpha"]) * np.expm1(z), z).astype(z.dtype, copy=False)
    if kind == "softsign":
        return z / (dt(1) + np.abs(z))
    if kind == "hardtanh":
        lo, hi = dt(a["min_val"]), dt(a["max_val"])
        return np.where(z < lo, lo, np.where(z > hi, hi, z)).astype(z.dtype, copy=False)
    raise TypeError(f"kind: unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def activation_derivative(kind, z, slope=0.01, **args):
    """f'(z) elementwise (same shape and dtype as z); arguments as for
    :func:`activation_forward`."""
    z = _float(z, "z")
    dt = z.dtype.type
    a = _act_args(kind, slope, args)
    if kind == "identity":
        return np.ones_like(z)
    if kind == "relu":
        return (z > 0).astype(z.dtype)
    if kind == "leaky_relu":
        return np.where(z > 0, dt(1), dt(a["slope"])).astype(z.dtype, copy=False)
    if kind == "sigmoid":
        s = _sigmoid(z)
        return s * (dt(1) - s)
    if kind == "tanh":
        t = np.tanh(z)
        return dt(1) - t * t
    if kind == "softplus":
        return _sigmoid(z)
    if kind == "step":
        return np.zeros_like(z)
    if kind == "cos":
        return -np.sin(z)
    if kind == "gelu":
        if a["approximate"] == "tanh":
            # s + 2 z s (1 - s) u' with s = σ(2u) = (1 + tanh u) / 2
            u = _gelu_tanh_arg(z)
            e = np.exp(dt(-2) * np.abs(u))
            r = dt(1) / (dt(1) + e)
            s = np.where(u >= 0, r, e * r)
            du = dt(_SQRT_2_PI) * (dt(1) + dt(3) * dt(_GELU_KAPPA) * z * z)
            return s + dt(2) * z * (e * r * r) * du
        pdf = dt(_INV_SQRT_2PI) * np.exp(dt(-0.5) * z * z)
        return _normal_cdf(z) + z * pdf
    if kind == "silu":
        s = _sigmoid(z)
        return s * (dt(1) + z * (dt(1) - s))
    if kind == "elu":   # z <= 0 is False for NaN: slope 1, as torch
        return np.where(z <= 0, dt(a["alpha"]) * np.exp(z), dt(1)).astype(z.dtype, copy=False)
    if kind == "softsign":
        # 1 / (1 + |z|)² from the output, (1 - |a|)²: NaN at ±inf, as torch
        m = dt(1) - np.abs(z / (dt(1) + np.abs(z)))
        return m * m
    if kind == "hardtanh":
        return _hardtanh_inside(z, a).astype(z.dtype)
    raise TypeError(f"kind: unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def activation_backward(kind, gy, z, slope=0.01, **args):
    """VJP of :func:`activation_forward`: ``gz = gy * f'(z)``.

    gy, z: same shape  ->  gz in z's dtype. "step" has derivative 0
    everywhere; "cos" has derivative ``-sin(z)``. ReLU and Hardtanh are
    selects (``gy`` where the derivative is 1, else 0, whatever gy holds).
    """
    z = _float(z, "z")
    gy = _like(gy, z.dtype)
    if gy.shape != z.shape:
        raise ValueError(f"gy: expected shape {z.shape}, got {gy.shape}")
    zero = z.dtype.type(0)
    if kind == "relu":  # a select, as torch's threshold_backward: 0 where z <= 0
        return np.where(z > 0, gy, zero)
    if kind == "hardtanh":  # a select, as torch's (vectorised) hardtanh_backward
        return np.where(_hardtanh_inside(z, _act_args(kind, slope, args)), gy, zero)
    if kind == "step":  # derivative 0 everywhere, whatever gy holds
        return np.zeros_like(z)
    return gy * activation_derivative(kind, z, slope, **args)


# ---------------------------------------------------------------------------
# Softmax / log-softmax (row-wise)
# ---------------------------------------------------------------------------

def softmax_forward(z):
    """Row-wise softmax, stable (row max subtracted). z: (N, C) -> (N, C)."""
    z = _float(z, "z")
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(gy, y):
    """VJP of softmax given its output y: ``gz = y * (gy - sum(gy*y, 1))``.

    gy, y: (N, C) -> gz (N, C) in y's dtype.
    """
    y = _float(y, "y")
    gy = _like(gy, y.dtype)
    return y * (gy - (gy * y).sum(axis=1, keepdims=True))


def log_softmax_forward(z):
    """Row-wise log-softmax, stable. z: (N, C) -> (N, C)."""
    z = _float(z, "z")
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def log_softmax_backward(gy, y):
    """VJP of log-softmax given its output y: ``gz = gy - exp(y) * sum(gy, 1)``.

    gy, y: (N, C) -> gz (N, C) in y's dtype.
    """
    y = _float(y, "y")
    gy = _like(gy, y.dtype)
    return gy - np.exp(y) * gy.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# Dispatch over layer kinds
# ---------------------------------------------------------------------------

def layer_forward(kind, x, params=None, slope=0.01):
    """Forward pass of any layer kind. x: (N, I) -> y: (N, O).

    ``params`` is used by "linear" only: a dict with "W" (I, O) and "b" (O,)
    (missing or None for no bias). ``slope``: an activation's arguments, as
    for :func:`activation_forward` (LeakyReLU's slope, or a dict by name).
    """
    if kind == "linear":
        if not params or params.get("W") is None:
            raise ValueError("params: 'linear' needs a dict with 'W' (and optionally 'b')")
        return linear_forward(x, params["W"], params.get("b"))
    if kind == "softmax":
        return softmax_forward(x)
    if kind == "log_softmax":
        return log_softmax_forward(x)
    return activation_forward(kind, x, slope)


def layer_backward(kind, gy, x, params=None, slope=0.01):
    """Backward pass of any layer kind at input x.

    gy: (N, O), x: (N, I) -> (gx (N, I), grads) where grads is
    ``{"W": dW, "b": db}`` for "linear" ("b" only when the layer has a
    bias) and ``{}`` for every other kind.
    """
    if kind == "linear":
        if not params or params.get("W") is None:
            raise ValueError("params: 'linear' needs a dict with 'W' (and optionally 'b')")
        has_bias = params.get("b") is not None
        gx, dW, db = linear_backward(gy, x, params["W"], has_bias)
        grads = {"W": dW}
        if has_bias:
            grads["b"] = db
        return gx, grads
    if kind == "softmax":
        return softmax_backward(gy, softmax_forward(x)), {}
    if kind == "log_softmax":
        return log_softmax_backward(gy, log_softmax_forward(x)), {}
    return activation_backward(kind, gy, x, slope), {}


def sequential_forward(specs, x):
    """Run a chain of layers.

    specs: list of ``(kind, params_or_None, slope)``; x: (N, D). slope:
    LeakyReLU's slope, or a dict of an activation's arguments by name.
    Returns ``(y, caches)`` where ``caches[i]`` is the input of layer i.
    """
    caches = []
    h = _float(x)
    for kind, params, slope in specs:
        caches.append(h)
        h = layer_forward(kind, h, params, slope)
    return h, caches


def sequential_backward(specs, caches, gy):
    """Back-propagate gy through the chain run by :func:`sequential_forward`.

    Returns ``(gx, grads)`` where ``grads[i]`` is layer i's grads dict.
    """
    if len(caches) != len(specs):
        raise ValueError(f"caches: expected {len(specs)} entries, got {len(caches)}")
    grads = [None] * len(specs)
    g = gy
    for i in range(len(specs) - 1, -1, -1):
        kind, params, slope = specs[i]
        g, grads[i] = layer_backward(kind, g, caches[i], params, slope)
    return g, grads


# ---------------------------------------------------------------------------
# Merge layers (several inputs of shape (N, F) each)
# ---------------------------------------------------------------------------

#: Layer kinds that join several inputs.
MERGES = ("add", "subtract", "multiply", "average", "concatenate")


def merge_forward(kind, xs):
    """A merge layer on inputs xs (a list of (N, F_i) arrays).

    add ``Σ xᵢ``; subtract ``x₀ - x₁``; multiply ``Π xᵢ`` (elementwise);
    average ``(1/k) Σ xᵢ``; concatenate ``[x₀ | x₁ | ...]`` along features.
    """
    xs = [_float(x, f"xs[{i}]") for i, x in enumerate(xs)]
    dt = xs[0].dtype
    xs = [_like(x, dt) for x in xs]
    if len(xs) < 2:
        raise ValueError(f"xs: a merge takes at least 2 inputs, got {len(xs)}")
    if kind == "add":
        return np.sum(xs, axis=0).astype(dt)
    if kind == "subtract":
        if len(xs) != 2:
            raise ValueError(f"xs: subtract takes exactly 2 inputs, got {len(xs)}")
        return xs[0] - xs[1]
    if kind == "multiply":
        return np.prod(xs, axis=0).astype(dt)
    if kind == "average":
        return (np.sum(xs, axis=0) / len(xs)).astype(dt)
    if kind == "concatenate":
        return np.concatenate(xs, axis=1)
    raise ValueError(f"kind: unknown merge {kind!r}; known: {MERGES}")


def merge_backward(kind, gy, xs):
    """VJP of a merge layer: the list of dL/dxᵢ for dL/dy = gy."""
    xs = [_float(x, f"xs[{i}]") for i, x in enumerate(xs)]
    dt = xs[0].dtype
    gy = _like(gy, dt)
    if kind == "add":
        return [gy.copy() for _ in xs]
    if kind == "subtract":
        return [gy.copy(), -gy]
    if kind == "average":
        return [(gy / len(xs)).astype(dt) for _ in xs]
    if kind == "multiply":
        out = []
        for i in range(len(xs)):
            others = [x for j, x in enumerate(xs) if j != i]
            out.append((gy * np.prod(others, axis=0)).astype(dt))
        return out
    if kind == "concatenate":
        edges = np.cumsum([0] + [x.shape[1] for x in xs])
        return [gy[:, a:b].copy() for a, b in zip(edges[:-1], edges[1:])]
    raise ValueError(f"kind: unknown merge {kind!r}; known: {MERGES}")


# ---------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------

def _node_forward(kind, ins, params, slope):
    if kind in MERGES:
        return merge_forward(kind, ins)
    return layer_forward(kind, ins[0], params, slope)


def graph_forward(nodes, inputs, outputs):
    """Run a graph of layers.

    nodes: list of ``(kind, params_or_None, slope, input value indices)``
    in topological order; values are numbered inputs first, then each
    node's output. inputs: the input arrays; outputs: value indices.
    Returns ``(outs, values)`` (values: every value, for the backward).
    """
    values = [_float(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    for kind, params, slope, ins in nodes:
        values.append(_node_forward(kind, [values[i] for i in ins], params, slope))
    return [values[v] for v in outputs], values


def graph_backward(nodes, values, outputs, gouts, n_inputs):
    """Back-propagation through the graph run by :func:`graph_forward`: a
    value's gradient is the sum over its consumers (the multi-path chain
    rule). Returns ``(input gradients, per-node grads dicts)``; the grads
    of a layer used at several nodes are to be summed by the caller."""
    grad = [None] * len(values)

    def add(v, g):
        grad[v] = g if grad[v] is None else grad[v] + g

    for v, g in zip(outputs, gouts):
        add(v, _like(g, values[v].dtype))
    node_grads = [{} for _ in nodes]
    for k in range(len(nodes) - 1, -1, -1):
        kind, params, slope, ins = nodes[k]
        g = grad[n_inputs + k]
        if g is None:
            continue
        xs = [values[i] for i in ins]
        if kind in MERGES:
            gxs, pg = merge_backward(kind, g, xs), {}
        else:
            gx, pg = layer_backward(kind, g, xs[0], params, slope)
            gxs = [gx]
        node_grads[k] = pg
        for i, gx in zip(ins, gxs):
            add(i, gx)
    zero = [np.zeros_like(values[i]) for i in range(n_inputs)]
    return [grad[i] if grad[i] is not None else zero[i] for i in range(n_inputs)], node_grads


# ---------------------------------------------------------------------------
# Dropout, BatchNorm, LayerNorm (torch's semantics)
# ---------------------------------------------------------------------------

def _keep_mask(keep, shape):
    k = np.asarray(keep)
    if k.shape != shape:
        raise ValueError(f"keep: expected a mask of shape {shape}, got {k.shape}")
    return k.astype(bool)


def dropout_forward(x, keep, p, training=True):
    """Inverted dropout with a given mask: ``y = x * keep / (1 - p)``
    (p == 1: y = 0); eval (training=False) or p == 0: ``y = x``.

    x: (N, F); keep: (N, F) of bools (True: kept)  ->  y (N, F) in x's dtype.
    """
    x = _float(x)
    if not training or p == 0:
        return x.copy()
    k = _keep_mask(keep, x.shape)
    scale = x.dtype.type(1.0 / (1.0 - p)) if p < 1 else x.dtype.type(0)
    return np.where(k, x * scale, x.dtype.type(0))


def dropout_backward(gy, keep, p, training=True):
    """VJP of :func:`dropout_forward`, with the forward's mask:
    ``gx = gy * keep / (1 - p)`` (eval: ``gx = gy``)."""
    return dropout_forward(gy, keep, p, training)


def _moments(x):
    """Column mean and biased variance of x (N, F), in x's dtype."""
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    return mu, var


def _affine(xhat, gamma, beta):
    """gamma xhat + beta per column (gamma None: xhat)."""
    if gamma is None:
        return xhat
    dt = xhat.dtype
    return xhat * _like(gamma, dt) + _like(beta, dt)


def _norm_grads(gy, xhat, gamma):
    """{"gamma": sum_n gy xhat, "beta": sum_n gy}, or {} without affine."""
    if gamma is None:
        return {}
    return {"gamma": (gy * xhat).sum(axis=0), "beta": gy.sum(axis=0)}


def _batch_stats(x, training, running_mean):
    """Whether batch statistics are used (training, or no running ones)."""
    use = training or running_mean is None
    if use and x.shape[0] < 2:
        raise ValueError(f"x: batch statistics need more than one row, got {x.shape[0]}")
    return use


def batchnorm_forward(x, gamma=None, beta=None, eps=1e-5, running_mean=None,
                      running_var=None, training=True):
    """torch's BatchNorm1d forward, x (N, F) -> y (N, F).

    Training, or no running statistics (running_mean None): per column the
    batch's mean and biased variance, ``xhat = (x - mean) / sqrt(var +
    eps)``; eval: the running statistics instead. ``y = gamma xhat + beta``
    (gamma None: no affine). Batch statistics need N > 1 (torch's rule).
    The running statistics are not touched: see
    :func:`batchnorm_running_update`.
    """
    x = _float(x)
    _check_2d(x, "x")
    dt = x.dtype
    if _batch_stats(x, training, running_mean):
        mu, var = _moments(x)
    else:
        mu, var = _like(running_mean, dt), _like(running_var, dt)
    xhat = (x - mu) / np.sqrt(var + dt.type(eps))
    return _affine(xhat, gamma, beta)


def batchnorm_backward(gy, x, gamma=None, eps=1e-5, running_mean=None,
                       running_var=None, training=True):
    """VJP of :func:`batchnorm_forward` at x (same arguments).

    With batch statistics the chain rule goes through the mean and the
    variance, term by term (s = 1 / sqrt(var + eps))::

        dxhat = gy gamma
        dvar  = sum_n dxhat (x - mu) (-1/2) s^3
        dmu   = -sum_n dxhat s + dvar sum_n (-2 (x - mu)) / N
        dx    = dxhat s + dvar 2 (x - mu) / N + dmu / N

    With running statistics: ``dx = dxhat / sqrt(running_var + eps)``.
    Returns ``(gx (N, F), grads)``, grads ``{"gamma": sum_n gy xhat,
    "beta": sum_n gy}`` (``{}`` when gamma is None).
    """
    x = _float(x)
    _check_2d(x, "x")
    dt = x.dtype
    gy = _like(gy, dt)
    N = dt.type(x.shape[0])
    dxhat = gy * _like(gamma, dt) if gamma is not None else gy
    if _batch_stats(x, training, running_mean):
        mu, var = _moments(x)
        s = dt.type(1) / np.sqrt(var + dt.type(eps))
        xc = x - mu
        dvar = (dxhat * xc).sum(axis=0) * dt.type(-0.5) * s ** 3
        dmu = -(dxhat * s).sum(axis=0) + dvar * (dt.type(-2) * xc).sum(axis=0) / N
        gx = dxhat * s + dvar * dt.type(2) * xc / N + dmu / N
    else:
        mu, var = _like(running_mean, dt), _like(running_var, dt)
        s = dt.type(1) / np.sqrt(var + dt.type(eps))
        gx = dxhat * s
    return gx, _norm_grads(gy, (x - mu) * s, gamma)


def batchnorm_running_update(running_mean, running_var, x, momentum=0.1,
                             num_batches_tracked=0):
    """torch's update of the running statistics by a training batch x
    (N > 1): ``new = (1 - m) old + m batch``, the batch variance unbiased
    (``var N / (N - 1)``); m = momentum or, momentum None, 1 / (batches
    tracked + 1) (a cumulative average). Returns ``(running_mean,
    running_var, num_batches_tracked + 1)``, new arrays in x's dtype."""
    x = _float(x)
    _check_2d(x, "x")
    dt = x.dtype
    N = x.shape[0]
    if N < 2:
        raise ValueError(f"x: the unbiased variance needs more than one row, got {N}")
    mu, var = _moments(x)
    count = num_batches_tracked + 1
    m = dt.type(1.0 / count if momentum is None else momentum)
    one = dt.type(1)
    rm = (one - m) * _like(running_mean, dt) + m * mu
    rv = (one - m) * _like(running_var, dt) + m * var * dt.type(N / (N - 1))
    return rm, rv, count


def layernorm_forward(x, gamma=None, beta=None, eps=1e-5):
    """torch's LayerNorm over the features of each row, x (N, F) -> y:
    ``xhat = (x - mean_row) / sqrt(var_row + eps)`` (biased variance),
    ``y = gamma xhat + beta`` (gamma None: no affine)."""
    x = _float(x)
    _check_2d(x, "x")
    mu, var = _moments(x.T)
    xhat = ((x.T - mu) / np.sqrt(var + x.dtype.type(eps))).T
    return _affine(xhat, gamma, beta)


def layernorm_backward(gy, x, gamma=None, eps=1e-5):
    """VJP of :func:`layernorm_forward`: BatchNorm's batch-statistics VJP
    on the transpose (a row's F features play the batch's N rows), with
    ``dxhat = gy gamma``. Returns ``(gx (N, F), grads)`` as
    :func:`batchnorm_backward`."""
    x = _float(x)
    _check_2d(x, "x")
    dt = x.dtype
    gy = _like(gy, dt)
    dxhat = gy * _like(gamma, dt) if gamma is not None else gy
    if x.shape[1] < 2:   # one feature: xhat = 0 whatever x, so dx = 0
        return np.zeros_like(x), _norm_grads(gy, np.zeros_like(x), gamma)
    gxT, _ = batchnorm_backward(dxhat.T, x.T, None, eps, training=True)
    mu, var = _moments(x.T)
    xhat = ((x.T - mu) / np.sqrt(var + dt.type(eps))).T
    return gxT.T, _norm_grads(gy, xhat, gamma)


# ---------------------------------------------------------------------------
# Losses (averaged over the batch)
# ---------------------------------------------------------------------------

def softmax_cross_entropy(z, target):
    """Softmax + cross-entropy on logits z: (N, C).

    target: int labels (N,) or dense rows T (N, C).
    loss = (1/N) sum_n [ lse(z_n) * sum_c T_nc - sum_c T_nc z_nc ]
    grad = (softmax(z) * T.sum(1, keepdims) - T) / N, in z's dtype.
    """
    z = _float(z, "pred")
    _check_2d(z, "pred")
    N, C = z.shape
    _batch(N)
    T = _dense_target(target, N, C, z.dtype)
    z64, T64 = z.astype(np.float64), T.astype(np.float64)
    m = z64.max(axis=1, keepdims=True)
    d = z64 - m  # shifted logits: lse - z = log(sum e^d) - d, exact for huge z
    ls = np.log(np.exp(d).sum(axis=1))
    # a target weight of 0 contributes nothing, even where d is -inf
    td = np.where(T64 != 0, T64 * d, 0.0)
    loss = float((ls * T64.sum(axis=1) - td.sum(axis=1)).sum() / N)
    grad = (softmax_forward(z) * T.sum(axis=1, keepdims=True) - T) / z.dtype.type(N)
    return loss, grad.astype(z.dtype, copy=False)


def binary_cross_entropy(z, target):
    """Binary cross-entropy on logits z: (N, C), target y in [0, 1].

    target: (N, C), or (N,) when C == 1.
    loss = (1/N) sum [softplus(z) - y*z]   (stable)
    grad = (sigmoid(z) - y) / N, in z's dtype.
    """
    z = _float(z, "pred")
    _check_2d(z, "pred")
    N, C = z.shape
    _batch(N)
    y = _rows_target(target, N, C, z.dtype)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    loss = float((np.logaddexp(0.0, z64) - y64 * z64).sum() / N)
    grad = (_sigmoid(z) - y) / z.dtype.type(N)
    return loss, grad.astype(z.dtype, copy=False)


def mse(yhat, y):
    """Mean squared error: loss = (1/N) sum_n 1/2 ||yhat_n - y_n||^2.

    yhat: (N, C); y: (N, C), or (N,) when C == 1.
    grad = (yhat - y) / N, in yhat's dtype.
    """
    yhat = _float(yhat, "pred")
    _check_2d(yhat, "pred")
    N, C = yhat.shape
    _batch(N)
    y = _rows_target(y, N, C, yhat.dtype)
    d64 = yhat.astype(np.float64) - y.astype(np.float64)
    loss = float(0.5 * (d64 * d64).sum() / N)
    grad = (yhat - y) / yhat.dtype.type(N)
    return loss, grad.astype(yhat.dtype, copy=False)


def nll(logp, target):
    """Negative log-likelihood on log-probabilities logp: (N, C).

    target: int labels (N,) or dense rows T (N, C).
    loss = -(1/N) sum T * logp  (entries with T == 0 contribute 0, even
    where logp is -inf); grad = -T / N, in logp's dtype.
    """
    logp = _float(logp, "pred")
    _check_2d(logp, "pred")
    N, C = logp.shape
    _batch(N)
    T = _dense_target(target, N, C, logp.dtype)
    T64, l64 = T.astype(np.float64), logp.astype(np.float64)
    prod = np.multiply(T64, l64, out=np.zeros_like(T64), where=T64 != 0)
    loss = float(-prod.sum() / N)
    grad = -T / logp.dtype.type(N)
    return loss, grad.astype(logp.dtype, copy=False)


#: Probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] (Keras's epsilon).
PROB_EPS = 1e-7


def _clip_passes(u):
    """Where clip(u) lets the gradient through (NaN does)."""
    return ~((u < PROB_EPS) | (u > 1 - PROB_EPS))


def categorical_cross_entropy(p, target):
    """Cross-entropy on probabilities p: (N, C), as Keras computes it.

    target: int labels (N,) or dense rows T (N, C).
    u = p / p.sum(1), q = clip(u, eps, 1 - eps), eps = 1e-7
    loss = -(1/N) sum T * log q
    grad: a = -T / u where u is not clipped (else 0);
          dp = (a - sum_c a_c u_c) / (N sum_c p_c), in p's dtype.
    """
    p = _float(p, "pred")
    _check_2d(p, "pred")
    N, C = p.shape
    _batch(N)
    T = _dense_target(target, N, C, np.float64)
    p64 = p.astype(np.float64)
    S = p64.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = p64 / S
        q = np.clip(u, PROB_EPS, 1 - PROB_EPS)
        loss = float(-(T * np.log(q)).sum() / N)
        a = np.where(_clip_passes(u), -T / u, 0.0)
        grad = (a - (a * u).sum(axis=1, keepdims=True)) / (S * N)
    return loss, grad.astype(p.dtype)


def binary_cross_entropy_probs(p, target):
    """Binary cross-entropy on probabilities p: (N, C), as Keras computes
    it, summed over the C outputs and averaged over the batch.

    target: (N, C), or (N,) when C == 1.
    q = clip(p, eps, 1 - eps); loss = -(1/N) sum [y log q + (1-y) log(1-q)]
    grad = (q - y) / (q (1 - q)) / N where p is not clipped, else 0.
    """
    p = _float(p, "pred")
    _check_2d(p, "pred")
    N, C = p.shape
    _batch(N)
    y = _rows_target(target, N, C, np.float64)
    p64 = p.astype(np.float64)
    q = np.clip(p64, PROB_EPS, 1 - PROB_EPS)
    loss = float(-(y * np.log(q) + (1 - y) * np.log1p(-q)).sum() / N)
    grad = np.where(_clip_passes(p64), (q - y) / (q * (1 - q)), 0.0) / N
    return loss, grad.astype(p.dtype)


def huber(yhat, y, delta=1.0):
    """Huber loss, the mean over all N*C elements (torch.nn.HuberLoss).

    d = yhat - y; h = d^2/2 for |d| <= delta, delta (|d| - delta/2) beyond
    loss = sum h / (N C); grad = clip(d, -delta, delta) / (N C).
    """
    yhat = _float(yhat, "pred")
    _check_2d(yhat, "pred")
    N, C = yhat.shape
    _batch(N)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
    d = yhat.astype(np.float64) - _rows_target(y, N, C, np.float64)
    a = np.abs(d)
    h = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    grad = np.clip(d, -delta, delta) / (N * C)
    return float(h.sum() / (N * C)), grad.astype(yhat.dtype)


def mae(yhat, y):
    """Mean absolute error over all N*C elements (torch.nn.L1Loss).

    loss = sum |yhat - y| / (N C); grad = sign(yhat - y) / (N C), sign(0) = 0.
    """
    yhat = _float(yhat, "pred")
    _check_2d(yhat, "pred")
    N, C = yhat.shape
    _batch(N)
    d = yhat.astype(np.float64) - _rows_target(y, N, C, np.float64)
    return float(np.abs(d).sum() / (N * C)), (np.sign(d) / (N * C)).astype(yhat.dtype)


def accuracy(pred, target, threshold=0.0):
    """Fraction of rows predicted correctly (a Python float in [0, 1]).

    C > 1: argmax of pred rows vs the labels (N,) or argmax of dense rows.
    C == 1: pred > threshold vs target > 0.5; target (N,) or (N, 1).
    threshold: 0 for a logit (from_logits=True), 0.5 for a probability.
    A row whose prediction holds a NaN is never right.
    """
    pred = _float(pred, "pred")
    _check_2d(pred, "pred")
    N, C = pred.shape
    _batch(N)
    t = np.asarray(target)
    if C == 1:
        t = t.reshape(-1)
        if t.shape[0] != N:
            raise ValueError(f"target: expected shape ({N},) or ({N}, 1), got {np.shape(target)}")
        correct = ((pred[:, 0] > threshold) == (t > 0.5)) & ~np.isnan(pred[:, 0])
    else:
        if t.ndim == 1:
            if t.shape[0] != N:
                raise ValueError(f"target: expected labels ({N},), got {t.shape}")
            labels = t.astype(np.int64)
        else:
            if t.shape != (N, C):
                raise ValueError(f"target: expected ({N},) or ({N}, {C}), got {t.shape}")
            labels = t.argmax(axis=1)
        correct = (pred.argmax(axis=1) == labels) & ~np.isnan(pred).any(axis=1)
    return float(np.count_nonzero(correct)) / N


# ---------------------------------------------------------------------------
# Training metrics (per row; a step reports their sums over rows)
# ---------------------------------------------------------------------------

#: The metric kinds, in the order of ``nn_metric_kind`` in nn.h.
METRICS = ("mse", "mae", "binary_accuracy", "top_k_categorical_accuracy")


def _in_top_k(pred, truth, k):
    """1.0 where class truth[n] is among the k largest of pred[n] (fewer
    than k values larger); 0 for a row holding a NaN."""
    N, C = pred.shape
    nan = np.isnan(pred).any(axis=1)
    if C <= k:
        return np.where(nan, 0.0, 1.0)
    at = pred[np.arange(N), truth][:, None]
    return np.where(nan, 0.0, ((pred > at).sum(axis=1) < k).astype(np.float64))


def metric_rows(name, pred, target, threshold=0.0, k=5):
    """Per-row values (N,) float64 of a training metric.

    target: labels (N,) or (N, 1) when C > 1 (their one-hot rows), or
    dense rows (N, C) ((N,) when C == 1).
      mse              mean over outputs of (pred - t)^2
      mae              mean over outputs of |pred - t|
      binary_accuracy  mean over outputs of [(pred > threshold) == (t > 0.5)],
                       a NaN prediction never right
      top_k_categorical_accuracy
                       the label (argmax of a dense row) among the k
                       largest predictions; rows with a NaN never right;
                       C <= k always right
    """
    pred = _float(pred, "pred")
    _check_2d(pred, "pred")
    N, C = pred.shape
    t = np.asarray(target)
    labels = C > 1 and t.shape in ((N,), (N, 1))
    T = _dense_target(t, N, C, np.float64) if labels else _rows_target(t, N, C, np.float64)
    p = pred.astype(np.float64)
    if name == "mse":
        return ((p - T) ** 2).mean(axis=1)
    if name == "mae":
        return np.abs(p - T).mean(axis=1)
    if name == "binary_accuracy":
        right = ((p > threshold) == (T > 0.5)) & ~np.isnan(p)
        return right.mean(axis=1)
    if name == "top_k_categorical_accuracy":
        truth = t.reshape(N).astype(np.int64) if labels else T.argmax(axis=1)
        return _in_top_k(p, truth, k)
    raise ValueError(f"unknown metric {name!r}; known: {METRICS}")


def metric_sum(name, pred, target, threshold=0.0, sample_weight=None, k=5):
    """The sum over rows of ``metric_rows`` (times sample_weight (N,))."""
    rows = metric_rows(name, pred, target, threshold, k)
    if sample_weight is not None:
        rows = rows * np.asarray(sample_weight, dtype=np.float64)
    return float(rows.sum())


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

def sgd_step(param, grad, velocity, lr, momentum=0.0, nesterov=False,
             weight_decay=0.0):
    """One SGD update (torch.optim.SGD rules, dampening 0).

        g = grad + weight_decay * param
        if momentum:  v = momentum * v + g;  g = g + momentum * v if nesterov else v
        param = param - lr * g

    param, grad, velocity: same shape (velocity may be None, meaning zeros).
    Returns ``(new_param, new_velocity)`` in param's dtype; the inputs are
    not modified. With momentum == 0 the velocity is returned unchanged (a
    copy, or None if None was given).
    """
    p = _float(param, "param")
    dt = p.dtype.type
    g = _like(grad, p.dtype)
    if g.shape != p.shape:
        raise ValueError(f"grad: expected shape {p.shape}, got {g.shape}")
    if weight_decay:
        g = g + dt(weight_decay) * p
    if momentum:
        v = np.zeros_like(p) if velocity is None else _like(velocity, p.dtype)
        if v.shape != p.shape:
            raise ValueError(f"velocity: expected shape {p.shape}, got {v.shape}")
        v = dt(momentum) * v + g
        g = g + dt(momentum) * v if nesterov else v
        new_v = v.copy()
    else:
        new_v = None if velocity is None else np.array(velocity, dtype=p.dtype)
    return p - dt(lr) * g, new_v


def _state(state, names, p, fill=0.0):
    """Copies of state[name] in p's dtype (fill where state is None or has no
    such entry), checked against p's shape."""
    out = {}
    for name in names:
        v = None if state is None else state.get(name)
        a = np.full_like(p, fill) if v is None else np.array(v, dtype=p.dtype)
        if a.shape != p.shape:
            raise ValueError(f"{name}: expected shape {p.shape}, got {a.shape}")
        out[name] = a
    return out


def _lerp(a, b, w, dt):
    """torch.lerp(a, b, w) for a scalar weight, in torch's rounding order:
    a + w (b - a) when |w| < 0.5, else b - (b - a)(1 - w)."""
    w = dt(w)
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (dt(1) - w)


def _param_grad(param, grad):
    """param as a float array, grad in its dtype and shape."""
    p = _float(param, "param")
    g = _like(grad, p.dtype)
    if g.shape != p.shape:
        raise ValueError(f"grad: expected shape {p.shape}, got {g.shape}")
    return p, g


def adam_step(param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, amsgrad=False, decoupled=False, eps_hat=False):
    """One Adam update (torch.optim.Adam's single-tensor rules; AdamW's with
    decoupled=True), in torch's order of operations. step t counts from 1.

        decoupled:  p = p (1 - lr wd)          else  g = g + wd p
        m = lerp(m, g, 1 - beta1)
        v = beta2 v + (1 - beta2) g^2
        vhat = max(vmax, v) if amsgrad else v   (vmax = vhat)
        p = p - lr / (1 - beta1^t) * m / (sqrt(vhat) / sqrt(1 - beta2^t) + eps)

    eps_hat: eps / sqrt(1 - beta2^t) in the last line (scikit-learn's and
    Keras's placement). state: dict with exp_avg, exp_avg_sq (and
    max_exp_avg_sq) or None for zeros. Returns ``(new_param, new_state)``
    in param's dtype.
    """
    p, g = _param_grad(param, grad)
    dt = p.dtype.type
    beta1, beta2 = betas
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    st = _state(state, names, p)
    if weight_decay != 0:
        if decoupled:
            p = p * dt(1 - lr * weight_decay)
        else:
            g = g + dt(weight_decay) * p
    m = _lerp(st["exp_avg"], g, 1 - beta1, dt)
    v = st["exp_avg_sq"] * dt(beta2) + (dt(1 - beta2) * g) * g
    bc1 = 1 - beta1 ** step
    bc2_sqrt = (1 - beta2 ** step) ** 0.5
    new = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = np.maximum(st["max_exp_avg_sq"], v)
        new["max_exp_avg_sq"] = v
    denom = np.sqrt(v) / dt(bc2_sqrt) + dt(eps / bc2_sqrt if eps_hat else eps)
    return p + (dt(-(lr / bc1)) * m) / denom, new


def adamw_step(param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
               weight_decay=1e-2, amsgrad=False, eps_hat=False):
    """One AdamW update (torch.optim.AdamW): :func:`adam_step` with the
    weight decay decoupled, p = p (1 - lr wd) before the Adam step."""
    return adam_step(param, grad, state, step, lr=lr, betas=betas, eps=eps,
                     weight_decay=weight_decay, amsgrad=amsgrad, decoupled=True,
                     eps_hat=eps_hat)


def rmsprop_step(param, grad, state, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False):
    """One RMSprop update (torch.optim.RMSprop's single-tensor rules).

        g = g + wd p
        s = alpha s + (1 - alpha) g^2
        centered: a = lerp(a, g, 1 - alpha); avg = sqrt(s - a^2) + eps
        else:     avg = sqrt(s) + eps
        momentum > 0: b = momentum b + g / avg; p = p - lr b
        else:         p = p - lr g / avg

    state: dict with square_avg (momentum_buffer, grad_avg) or None for
    zeros. Returns ``(new_param, new_state)``.
    """
    p, g = _param_grad(param, grad)
    dt = p.dtype.type
    names = (["square_avg"] + (["momentum_buffer"] if momentum > 0 else [])
             + (["grad_avg"] if centered else []))
    st = _state(state, names, p)
    if weight_decay != 0:
        g = g + dt(weight_decay) * p
    s = st["square_avg"] * dt(alpha) + (dt(1 - alpha) * g) * g
    new = {"square_avg": s}
    if centered:
        a = _lerp(st["grad_avg"], g, 1 - alpha, dt)
        new["grad_avg"] = a
        avg = np.sqrt(s - a * a) + dt(eps)
    else:
        avg = np.sqrt(s) + dt(eps)
    if momentum > 0:
        b = st["momentum_buffer"] * dt(momentum) + g / avg
        new["momentum_buffer"] = b
        return p + dt(-lr) * b, new
    return p + (dt(-lr) * g) / avg, new


def adagrad_step(param, grad, state, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
    """One Adagrad update (torch.optim.Adagrad, dense gradients). step t
    counts from 1.

        g = g + wd p
        clr = lr / (1 + (t - 1) lr_decay)
        sum = sum + g^2                (sum starts at initial_accumulator_value)
        p = p - clr g / (sqrt(sum) + eps)

    state: dict with sum, or None for the initial accumulator. Returns
    ``(new_param, new_state)``.
    """
    p, g = _param_grad(param, grad)
    dt = p.dtype.type
    st = _state(state, ["sum"], p, fill=initial_accumulator_value)
    if weight_decay != 0:
        g = g + dt(weight_decay) * p
    clr = lr / (1 + (step - 1) * lr_decay)
    acc = st["sum"] + g * g
    return p + (dt(-clr) * g) / (np.sqrt(acc) + dt(eps)), {"sum": acc}


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ without the side effect: the global
    L2 norm over every array in grads (summed in float64), and every
    gradient times min(1, max_norm / (norm + 1e-6)) (unchanged when that
    is 1). Returns ``(new_grads, norm)``."""
    gs = [_float(g, "grad") for g in grads]
    norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in gs)))
    coef = max_norm / (norm + 1e-6)
    if coef >= 1:
        return [g.copy() for g in gs], norm
    return [g * g.dtype.type(coef) for g in gs], norm


def clip_grad_value(grad, clip_value):
    """torch.nn.utils.clip_grad_value_ without the side effect: every value
    clamped to [-clip_value, clip_value] (NaN stays NaN)."""
    g = _float(grad, "grad")
    c = g.dtype.type(clip_value)
    return np.clip(g, -c, c)

