"""Layers: the Python face of the C ``Layer`` type.

Every class here subclasses :class:`nnlayers._core.Layer`; forward and
backward are C methods, so a call costs one trip into C. ``params`` and
``grads`` are NumPy views of the layer's own C memory (no copies).
"""
import numpy as np

from . import _core

__all__ = [
    "Layer", "Linear", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    "Softplus", "Step", "Cos", "Softmax", "LogSoftmax", "layer_from_config",
]


class ParamDict:
    """A mapping of parameter names to NumPy views of C-owned memory.

    Reading gives a writable view (``d["W"][...] = 0`` changes the layer).
    Assigning copies into the existing memory when the shape matches and
    raises ``ValueError`` otherwise. The memory moves once at most: when the
    layer joins a Sequential, into the model's parameter block (views taken
    before that keep the old values; take new ones).
    """

    __slots__ = ("_views", "_owner", "_what")

    def __init__(self, views, owner, what="params"):
        self._views = views
        self._owner = owner
        self._what = what

    def __getitem__(self, name):
        try:
            return self._views[name]
        except KeyError:
            raise KeyError(
                f"{self._owner!r} has no {self._what} named {name!r}; "
                f"it has {sorted(self._views)}") from None

    def __setitem__(self, name, value):
        view = self[name]
        self._owner._check_idle()  # not while another thread computes with it
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{self._what}[{name!r}] takes real numbers, got dtype {arr.dtype}")
        if arr.shape != view.shape:
            raise ValueError(
                f"{self._what}[{name!r}] has shape {view.shape}; cannot assign an "
                f"array of shape {arr.shape} (the memory is fixed; copy into it "
                f"with a matching shape)")
        np.copyto(view, arr, casting="unsafe")

    def __delitem__(self, name):
        raise TypeError(f"cannot delete {self._what}[{name!r}]")

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __contains__(self, name):
        return name in self._views

    def keys(self):
        return self._views.keys()

    def values(self):
        return self._views.values()

    def items(self):
        return self._views.items()

    def get(self, name, default=None):
        return self._views.get(name, default)

    def __repr__(self):
        inner = ", ".join(f"{k!r}: <{v.dtype} array of shape {v.shape}>"
                          for k, v in self._views.items())
        return f"{self._what}({{{inner}}})"


class Layer(_core.Layer):
    """Base class of every nnlayers layer.

    ``forward(x)`` (or ``layer(x)``) maps ``x`` (N, in) to a new array
    (N, out) and keeps what ``backward`` needs. ``backward(grad_output)``
    returns the vector-Jacobian product dL/dx at the last forward's input
    and *adds* dL/dW, dL/db into ``grads``. Each forward serves one backward.

    Do not modify the arrays passed to or returned by ``forward`` before the
    matching ``backward``: a standalone layer reads them again (a Sequential
    keeps its activations in its own workspace instead).
    """

    _kind = None

    @property
    def params(self):
        """Parameters by name: writable views of the layer's C memory."""
        return ParamDict(self._param_views(), self, "params")

    @property
    def grads(self):
        """Gradients by name, same layout as ``params``."""
        return ParamDict(self._grad_views(), self, "grads")

    def get_config(self):
        """Constructor arguments, JSON-able (used by save/load)."""
        cfg = {}
        if self.dtype is not None:
            cfg["dtype"] = str(np.dtype(self.dtype))
        return cfg

    def _arg_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.get_config().items())

    def __repr__(self):
        frozen = "" if self.trainable else ", trainable=False"
        return f"{type(self).__name__}({self._arg_repr()}{frozen})"

    def __reduce__(self):
        state = {"trainable": self.trainable,
                 "params": {k: np.array(v) for k, v in self.params.items()}}
        return (layer_from_config, (type(self).__name__, self.get_config()), state)

    def __setstate__(self, state):
        for k, v in state["params"].items():
            self.params[k] = v
        self.trainable = state["trainable"]


class Linear(Layer):
    """Fully connected layer ``y = x W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Widths; ``W`` is stored (in_features, out_features) as in the
        lecture notes, ``b`` (out_features,).
    bias : bool
        Whether to add ``b`` (zero-initialised).
    dtype : numpy.float32 (default) or numpy.float64
    init : {"he", "glorot", "uniform"}
        He: N(0, 2/in); Glorot: U(±sqrt(6/(in+out))); uniform: U(±1/sqrt(in)).
        Weights are random, never all equal (zero init cannot break symmetry).
    seed : int or None
        Makes the initialisation reproducible.

    The VJP: dL/dx = G Wᵀ, dL/dW += xᵀ G, dL/db += Σₙ G[n].
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32,
                 init="he", seed=None):
        super().__init__("linear", in_features, out_features, bias=bias,
                         dtype=dtype, init=init, seed=seed)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": str(np.dtype(self.dtype))}

    def __reduce__(self):
        cls, args, state = super().__reduce__()
        return cls, args, state


def _activation(name, kind, doc):
    def __init__(self, dtype=None):
        _core.Layer.__init__(self, kind, dtype=dtype)

    __init__.__doc__ = doc
    return type(name, (Layer,), {"__init__": __init__, "__doc__": doc,
                                 "_kind": kind, "__module__": __name__})


_DTYPE_DOC = ("\n\n    dtype : None (default: adopts the model's, or float32 inputs stay "
              "float32 and others become float64), numpy.float32 or numpy.float64.")

Identity = _activation("Identity", "identity",
                       "Identity ``y = z``; its VJP passes the gradient through." + _DTYPE_DOC)
ReLU = _activation("ReLU", "relu",
                   "Rectified linear unit ``max(z, 0)``; derivative ``[z > 0]``." + _DTYPE_DOC)
Sigmoid = _activation("Sigmoid", "sigmoid",
                      "Logistic ``1 / (1 + e^-z)``, overflow-free; derivative ``a (1 - a)``." + _DTYPE_DOC)
Tanh = _activation("Tanh", "tanh", "Hyperbolic tangent; derivative ``1 - a²``." + _DTYPE_DOC)
Softplus = _activation("Softplus", "softplus",
                       "The soft ReLU ``log(1 + e^z)``, computed stably as "
                       "``max(z, 0) + log1p(e^-|z|)``; derivative ``sigmoid(z)``." + _DTYPE_DOC)
Step = _activation("Step", "step",
                   "Hard threshold ``[z > 0]``. Its derivative is zero almost everywhere, "
                   "so backward returns zeros: it cannot train the layers below it "
                   "(the reason smooth activations replaced it)." + _DTYPE_DOC)
Cos = _activation("Cos", "cos",
                  "Cosine ``cos z``, for random Fourier features; derivative ``-sin z``." + _DTYPE_DOC)
Softmax = _activation("Softmax", "softmax",
                      "Row-wise softmax, shifted by the row maximum; VJP "
                      "``a * (g - Σ g a)``. For training, prefer SoftmaxCrossEntropy on "
                      "logits (fused and stabler)." + _DTYPE_DOC)
LogSoftmax = _activation("LogSoftmax", "log_softmax",
                         "Row-wise log-softmax ``z - logsumexp(z)``; VJP "
                         "``g - e^a Σ g``. Pairs with the NLL loss." + _DTYPE_DOC)


class LeakyReLU(Layer):
    """Leaky ReLU ``z if z > 0 else slope * z``; derivative 1 or ``slope``."""

    _kind = "leaky_relu"

    def __init__(self, slope=0.01, dtype=None):
        super().__init__("leaky_relu", dtype=dtype, slope=float(slope))

    def get_config(self):
        cfg = {"slope": self.slope}
        cfg.update(super().get_config())
        return cfg


_CLASSES = {c.__name__: c for c in (Linear, Identity, ReLU, LeakyReLU, Sigmoid, Tanh,
                                    Softplus, Step, Cos, Softmax, LogSoftmax)}


def layer_from_config(class_name, config):
    """Build a layer from its class name and ``get_config()`` dict."""
    try:
        cls = _CLASSES[class_name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layer class {class_name!r}; known: "
                         f"{sorted(_CLASSES)}") from None
    if not isinstance(config, dict):
        raise ValueError(f"layer config must be a dict, got {type(config).__name__}")
    cfg = dict(config)
    if "dtype" in cfg:
        if cfg["dtype"] not in ("float32", "float64"):
            raise ValueError(f"layer dtype must be 'float32' or 'float64', got {cfg['dtype']!r}")
        cfg["dtype"] = np.dtype(cfg["dtype"])
    if cls is Linear:
        cfg.setdefault("seed", 0)
    return cls(**cfg)
