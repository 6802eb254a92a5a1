"""Layers: the Python face of the C ``Layer`` type, and symbolic tensors.

Every class here subclasses :class:`nnlayers._core.Layer`; forward and
backward are C methods, so a call costs one trip into C. ``params`` and
``grads`` are NumPy views of C memory (no copies).

Calling a layer on NumPy arrays computes; calling it on a symbolic tensor
(from :func:`Input`) records a node of a graph instead and returns a new
symbolic tensor, as in Keras's functional API::

    x = nl.Input(784)
    h = nl.ReLU()(nl.Linear(784, 256)(x))
    out = nl.Add()([nl.Linear(256, 10)(h), nl.Linear(784, 10)(x)])
    model = nl.Model(inputs=x, outputs=out)
"""
import numbers
import threading

import numpy as np

from . import _core

__all__ = [
    "Layer", "Linear", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    "Softplus", "Step", "Cos", "GELU", "SiLU", "ELU", "Softsign", "Hardtanh",
    "Softmax", "LogSoftmax",
    "Add", "Subtract", "Multiply", "Average", "Concatenate",
    "Dropout", "BatchNorm", "LayerNorm",
    "Input", "SymbolicTensor", "layer_from_config", "python_layer_from_config",
]


# ---------------------------------------------------------------- names

_name_counters = {}
_name_lock = threading.Lock()


def _auto_name(base):
    """Keras-style unique names: "linear", "linear_1", "linear_2", ..."""
    with _name_lock:
        n = _name_counters.get(base, 0)
        _name_counters[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _check_name(name):
    if not isinstance(name, str) or not name or "." in name or "/" in name:
        raise ValueError(f"name must be a non-empty str without '.' or '/', got {name!r}")
    return name


# ---------------------------------------------------------------- params

def _same_memory(a, view):
    """True when a is an array over exactly view's memory (the result of
    an in-place operator on the view)."""
    return (isinstance(a, np.ndarray) and a.dtype == view.dtype and a.shape == view.shape
            and a.strides == view.strides
            and a.__array_interface__["data"][0] == view.__array_interface__["data"][0])


class ParamDict:
    """A mapping of parameter names to NumPy views of C-owned memory.

    Reading gives a writable view (``d["W"][...] = 0`` changes the layer).
    Assigning copies into the existing memory when the shape matches and
    raises ``ValueError`` otherwise. The memory moves when the layer joins
    a model (into the model's parameter block): views taken before that
    keep the old values; take new ones.
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
        if _same_memory(value, view):
            return   # d[name] += g: the view was updated in place already
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


# ---------------------------------------------------------------- symbolic

class SymbolicTensor:
    """A placeholder for a value in a graph being built (Keras's
    KerasTensor): ``nl.Input(784)`` makes one, and calling a layer on it
    returns another. It has a width (columns) and no values; pass real
    arrays to the finished model instead.

    ``node`` is the node that computes it (None for an input) and ``index``
    which of that node's outputs it is.
    """

    __slots__ = ("node", "index", "width", "dtype", "name", "__weakref__")
    _nnlayers_symbolic = True

    def __init__(self, width, dtype=None, name=None, node=None, index=0):
        self.width = width
        self.dtype = dtype
        self.name = name
        self.node = node
        self.index = index

    @property
    def shape(self):
        """(None, width): the batch is not known until a model runs."""
        return (None, self.width)

    def __repr__(self):
        dt = "" if self.dtype is None else f", dtype={np.dtype(self.dtype).name}"
        return f"<SymbolicTensor {self.name!r} width={self.width}{dt}>"

    def __array__(self, *args, **kwargs):
        raise TypeError(
            f"{self!r} is symbolic: it has no values. Build a model with "
            f"nl.Model(inputs, outputs) and call the model on NumPy arrays")

    def __bool__(self):
        raise TypeError(f"{self!r} is symbolic and has no truth value")

    def __len__(self):
        raise TypeError(f"{self!r} is symbolic: its batch size is not known")


class _Node:
    """One call of a layer (or a model) on symbolic tensors."""

    __slots__ = ("layer", "inputs", "outputs")

    def __init__(self, layer, inputs):
        self.layer = layer
        self.inputs = list(inputs)
        self.outputs = []


def Input(width, dtype=None, name=None):
    """A symbolic input of ``width`` columns (Keras's ``Input(shape=(width,))``).

    ``dtype`` (optional): numpy.float32 or numpy.float64, the model's dtype
    for layers without one of their own.
    """
    if isinstance(width, (tuple, list)):
        if len(width) != 1:
            raise ValueError(f"Input takes a width (features) or a 1-tuple, got {width!r}")
        width = width[0]
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise TypeError(f"Input(width): width must be a positive int, got {type(width).__name__}")
    if width < 1:
        raise ValueError(f"Input(width): width must be >= 1, got {width}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Input dtype must be numpy.float32 or numpy.float64, got {dtype}")
    return SymbolicTensor(int(width), dtype, _check_name(name) if name else _auto_name("input"))


def _symbolic_inputs(x):
    """x's symbolic tensors as a list if x is one or a list of them, else
    None (real data). Mixed lists are an error."""
    if isinstance(x, SymbolicTensor):
        return [x]
    if isinstance(x, (list, tuple)) and x and any(isinstance(t, SymbolicTensor) for t in x):
        bad = [type(t).__name__ for t in x if not isinstance(t, SymbolicTensor)]
        if bad:
            raise TypeError(
                f"a layer is called on symbolic tensors or on arrays, not both "
                f"(got {', '.join(bad)} among symbolic tensors)")
        return list(x)
    return None


def _call_symbolic(layer, inputs, out_widths, multi_out=False):
    """Record a node of `layer` on symbolic `inputs`; its outputs."""
    dtypes = {t.dtype for t in inputs if t.dtype is not None}
    if len(dtypes) > 1:
        raise TypeError(f"{layer.name!r}: its inputs have different dtypes {sorted(map(str, dtypes))}")
    dtype = dtypes.pop() if dtypes else None
    node = _Node(layer, inputs)
    outs = []
    for j, w in enumerate(out_widths):
        t = SymbolicTensor(w, dtype, layer.name if len(out_widths) == 1 else f"{layer.name}:{j}",
                           node, j)
        outs.append(t)
    node.outputs = outs
    return outs if multi_out else outs[0]


# ---------------------------------------------------------------- layers

class Layer(_core.Layer):
    """Base class of every nnlayers layer, and of layers written in Python.

    ``forward(x)`` (or ``layer(x)`` on arrays) maps ``x`` (N, in) to a new
    array (N, out) and keeps what ``backward`` needs.
    ``backward(grad_output)`` returns the vector-Jacobian product dL/dx at
    the last forward's input and *adds* the parameter gradients into
    ``grads``. Each forward serves one backward. Called on a symbolic
    tensor (``nl.Input``), a layer adds a node to a graph instead.

    Do not modify the arrays passed to or returned by ``forward`` before
    the matching ``backward``: a layer on its own reads them again (a model
    keeps its values in its own workspace instead).

    **A layer of your own** subclasses ``Layer``, calls
    ``super().__init__()`` (optionally ``dtype=np.float64``, ``name=...``),
    adds its tensors with :meth:`add_param` / :meth:`add_buffer`, and
    defines ``forward(self, x)`` (NumPy in, NumPy out; ``forward(self,
    *xs)`` for several inputs) and ``backward(self, g)`` (adds the
    parameter gradients into ``self.grads[...]`` and returns dL/dx, a list
    for several inputs)::

        class Scale(nl.Layer):
            def __init__(self, features):
                super().__init__()
                self.s = self.add_param("s", (features,), init="ones")
            def forward(self, x):
                self.x = x
                return x * self.s
            def backward(self, g):
                self.grads["s"] += (g * self.x).sum(0)
                return g * self.s

    In a model the engine calls it back, with the GIL, for that node only;
    its parameters live in the model's parameter block (``self.s`` is kept
    pointing at them) and every optimizer updates them. Define
    ``output_width(self, *in_widths)`` when the output is not as wide as
    the first input. ``self.training`` tells the mode of the call. Saving
    records the constructor's arguments (or what ``get_config()``
    returns): ``nl.load(path, custom_objects={"Scale": Scale})`` rebuilds
    it. See docs/api.md, "Layers written in Python".
    """

    _builtin = False   # True for the classes of this module (C kinds)

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        if not cls._builtin:   # the constructor's arguments: its config
            self.__dict__["_init_args"] = (args, dict(kwargs))
        return self

    def __init__(self, kind=None, *args, name=None, dtype=None, **kwargs):
        if kind is None:
            self._init_python_layer(name, dtype)
            return
        super().__init__(kind, *args, dtype=dtype, **kwargs)
        self.name = _check_name(name) if name is not None else _auto_name(kind)

    # ---- layers written in Python
    def _init_python_layer(self, name, dtype):
        cls = type(self)
        if cls._builtin:
            raise TypeError(f"{cls.__name__} is built in: it takes its kind's arguments")
        missing = [m for m in ("forward", "backward") if getattr(cls, m) is getattr(_core.Layer, m)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {' and '.join(missing)}: forward(self, "
                            f"x) -> y and backward(self, g) -> dL/dx (see nl.Layer's docstring)")
        super().__init__("external", dtype=dtype)
        self.__dict__["_handles"] = {}
        self.__dict__["_dtype_given"] = dtype is not None
        self.name = _check_name(name) if name is not None else _auto_name(cls.__name__.lower())

    def add_param(self, name, shape, init="zeros", seed=None):
        """A new trained parameter of a layer written in Python (call it in
        ``__init__``): ``shape`` a tuple of one or two ints, ``init`` one
        of "zeros", "ones", "normal" (std 0.01), "uniform" (±0.05), "he"
        (N(0, 2/fan_in)), "glorot" (U(±sqrt(6/(fan_in + fan_out)))), an
        array, or a callable ``f(shape, rng) -> array``; ``seed`` seeds the
        random ones. Returns a view of it: keep it as an attribute
        (``self.w = self.add_param(...)``), it follows the parameter into
        a model's block. Its gradient is ``self.grads[name]``."""
        return self._add_tensor_with(name, shape, init, seed, buffer=False)

    def add_buffer(self, name, shape, init="zeros", seed=None):
        """A new buffer (state saved with the layer, never trained), as
        :meth:`add_param`; its view is ``self.buffers[name]``."""
        return self._add_tensor_with(name, shape, init, seed, buffer=True)

    def _add_tensor_with(self, name, shape, init, seed, buffer):
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        if not isinstance(shape, (tuple, list)):
            raise TypeError(f"shape must be a tuple of ints, got {type(shape).__name__}")
        shape = tuple(shape)
        values = _initial_values(init, shape, seed, self.dtype or np.float32)
        self._add_tensor(name, shape, buffer)
        self._params_moved()
        view = (self.buffers if buffer else self.params)[name]
        view[...] = values
        self._handles[name] = view
        return view

    def _params_moved(self):
        """The tensors moved (a new one was added, or a model took them in
        its block): attributes that held the old views get the new ones."""
        old = self.__dict__.get("_handles", {})
        new = {**self._param_views(), **self._buffer_views()}
        moved = {id(v): new[k] for k, v in old.items() if k in new}
        for attr, val in list(self.__dict__.items()):
            if id(val) in moved:
                self.__dict__[attr] = moved[id(val)]
        self.__dict__["_handles"] = {k: moved.get(id(old.get(k)), v) for k, v in new.items()}

    def _adopt_dtype(self, dtype):
        """A layer written in Python and built without a dtype takes the
        model's (its tensors converted) when it is in no model yet."""
        if self._builtin or self.__dict__.get("_dtype_given", True) or self.dtype is None \
                or np.dtype(self.dtype) == np.dtype(dtype):
            return
        try:
            self._set_dtype(np.dtype(dtype))
        except RuntimeError:
            return   # already in a model: the model reports the mixed dtypes
        self._params_moved()

    def output_width(self, *in_widths):
        """The output width of a layer written in Python for inputs of
        these widths; by default that of the first input."""
        return in_widths[0]

    @classmethod
    def from_config(cls, config):
        """A layer of this class from ``get_config()``'s dict (Keras's
        convention: the constructor's keyword arguments)."""
        return cls(**config)

    def _python_config(self):
        """A layer written in Python: its constructor's arguments by name
        (its config unless it defines get_config)."""
        import inspect

        args, kwargs = self.__dict__.get("_init_args", ((), {}))
        try:
            bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: cannot name its constructor's arguments "
                            f"({e}); define get_config()") from None
        cfg = {}
        for i, (k, v) in enumerate(bound.arguments.items()):
            p = bound.signature.parameters[k]
            if i == 0:
                continue   # self
            if p.kind is p.VAR_POSITIONAL:
                if v:
                    raise TypeError(f"{type(self).__name__} takes *{k}: define get_config() "
                                    f"returning its constructor's keyword arguments")
            elif p.kind is p.VAR_KEYWORD:
                cfg.update(v)
            else:
                cfg[k] = v
        return cfg

    def __call__(self, x):
        sym = _symbolic_inputs(x)
        if sym is None:
            if not self._builtin and isinstance(x, (list, tuple)):
                return self.forward(*x)
            return self.forward(x)
        lo, hi = self._n_inputs
        if isinstance(x, SymbolicTensor) and hi != 1 and self._builtin:
            raise TypeError(f"{self!r} takes a list of at least {lo} tensors")
        if not isinstance(x, SymbolicTensor) and hi == 1:
            raise TypeError(f"{self!r} takes one tensor, got a list of {len(sym)}")
        if len(sym) < lo or (hi is not None and len(sym) > hi):
            most = "any number of" if hi is None else f"at most {hi}"
            raise ValueError(f"{self!r} takes at least {lo} and {most} inputs, got {len(sym)}")
        return _call_symbolic(self, sym, [self._out_width([t.width for t in sym])])

    def _out_width(self, widths):
        """The width of this layer's output for inputs of these widths;
        ValueError naming the layer if they do not fit."""
        try:
            return self._output_width(tuple(widths))
        except ValueError as e:
            raise ValueError(f"layer {self.name!r}: {e}") from None

    @property
    def params(self):
        """Parameters by name: writable views of the layer's C memory."""
        return ParamDict(self._param_views(), self, "params")

    @property
    def grads(self):
        """Gradients by name, same layout as ``params``."""
        return ParamDict(self._grad_views(), self, "grads")

    @property
    def buffers(self):
        """State kept with the layer but never trained, by name (views)."""
        return ParamDict(self._buffer_views(), self, "buffers")

    def count_params(self):
        """Number of trained values."""
        return self._n_params

    @classmethod
    def _tensor_shapes(cls, config):
        """{name: shape} of the tensors a layer of this class and config
        holds, without building it (the loader checks files with it)."""
        return {}

    def get_config(self):
        """Constructor arguments, JSON-able (used by save/load). For a
        layer written in Python: the arguments its constructor was called
        with, by name (override it when they are not JSON-able, with
        ``from_config`` if the constructor does not take them back)."""
        if not self._builtin:
            return self._python_config()
        cfg = {}
        if self.dtype is not None:
            cfg["dtype"] = str(np.dtype(self.dtype))
        return cfg

    def _arg_repr(self):
        try:
            cfg = self.get_config()
        except Exception:   # a user's layer whose config cannot be named
            return "..."
        return ", ".join(f"{k}={v}" for k, v in cfg.items())

    def __repr__(self):
        frozen = "" if self.trainable else ", trainable=False"
        return f"{type(self).__name__}({self._arg_repr()}{frozen})"

    def __reduce__(self):
        state = {"trainable": self.trainable, "name": self.name,
                 "params": {k: np.array(v) for k, v in self.params.items()},
                 "buffers": {k: np.array(v) for k, v in self.buffers.items()}}
        if not self._builtin:   # the class itself, pickled by reference
            dtype = None if self.dtype is None else np.dtype(self.dtype).name
            return (python_layer_from_config, (type(self), self.get_config(), dtype), state)
        return (layer_from_config, (type(self).__name__, self.get_config()), state)

    def __setstate__(self, state):
        for k, v in state["params"].items():
            self.params[k] = v
        for k, v in state.get("buffers", {}).items():
            self.buffers[k] = v
        self.trainable = state["trainable"]
        if "name" in state:
            self.name = state["name"]


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
    name : str or None
        Defaults to "linear", "linear_1", ... (unique in the process).

    The VJP: dL/dx = G Wᵀ, dL/dW += xᵀ G, dL/db += Σₙ G[n].
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32,
                 init="he", seed=None, name=None):
        super().__init__("linear", in_features, out_features, bias=bias,
                         dtype=dtype, init=init, seed=seed, name=name)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": str(np.dtype(self.dtype))}

    @classmethod
    def _tensor_shapes(cls, config):
        i, o = config["in_features"], config["out_features"]
        for v in (i, o):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31 - 1:
                raise ValueError(f"in/out features must be ints in [1, 2**31 - 1], got {v!r}")
        shapes = {"W": (i, o)}
        if config.get("bias", True):
            shapes["b"] = (o,)
        return shapes


_DTYPE_DOC = ("\n\n    dtype : None (default: adopts the model's, or float32 inputs stay "
              "float32 and others become float64), numpy.float32 or numpy.float64.")


def _parameter_free(name, kind, doc):
    def __init__(self, dtype=None, name=None):
        Layer.__init__(self, kind, dtype=dtype, name=name)

    __init__.__doc__ = doc
    return type(name, (Layer,), {"__init__": __init__, "__doc__": doc,
                                 "__module__": __name__})


Identity = _parameter_free("Identity", "identity",
                           "Identity ``y = z``; its VJP passes the gradient through." + _DTYPE_DOC)
ReLU = _parameter_free("ReLU", "relu",
                       "Rectified linear unit ``max(z, 0)``; derivative ``[z > 0]``." + _DTYPE_DOC)
Sigmoid = _parameter_free("Sigmoid", "sigmoid",
                          "Logistic ``1 / (1 + e^-z)``, overflow-free; derivative ``a (1 - a)``."
                          + _DTYPE_DOC)
Tanh = _parameter_free("Tanh", "tanh", "Hyperbolic tangent; derivative ``1 - a²``." + _DTYPE_DOC)
Softplus = _parameter_free("Softplus", "softplus",
                           "The soft ReLU ``log(1 + e^z)``, computed stably as "
                           "``max(z, 0) + log1p(e^-|z|)``; derivative ``sigmoid(z)``." + _DTYPE_DOC)
Step = _parameter_free("Step", "step",
                       "Hard threshold ``[z > 0]``. Its derivative is zero almost everywhere, "
                       "so backward returns zeros: it cannot train the layers below it "
                       "(the reason smooth activations replaced it)." + _DTYPE_DOC)
Cos = _parameter_free("Cos", "cos",
                      "Cosine ``cos z``, for random Fourier features; derivative ``-sin z``."
                      + _DTYPE_DOC)
SiLU = _parameter_free("SiLU", "silu",
                       "Sigmoid-weighted linear unit (swish) ``z σ(z)``, σ overflow-free; "
                       "derivative ``σ(z) (1 + z (1 - σ(z)))``." + _DTYPE_DOC)
Softsign = _parameter_free("Softsign", "softsign",
                           "Softsign ``z / (1 + |z|)``; derivative ``1 / (1 + |z|)²``, "
                           "computed from the output as ``(1 - |a|)²``." + _DTYPE_DOC)
Softmax = _parameter_free("Softmax", "softmax",
                          "Row-wise softmax, shifted by the row maximum; VJP "
                          "``a * (g - Σ g a)``. For training, prefer SoftmaxCrossEntropy on "
                          "logits (fused and stabler)." + _DTYPE_DOC)
LogSoftmax = _parameter_free("LogSoftmax", "log_softmax",
                             "Row-wise log-softmax ``z - logsumexp(z)``; VJP "
                             "``g - e^a Σ g``. Pairs with the NLL loss." + _DTYPE_DOC)

_MERGE_DOC = ("\n\n    Called on a list of symbolic tensors it adds a node to a graph; on a "
              "list of arrays it computes. dtype as for activations.")

Add = _parameter_free("Add", "add",
                      "Elementwise sum of two or more inputs of one width: "
                      "``y = Σᵢ xᵢ``; VJP ``dxᵢ = dy``." + _MERGE_DOC)
Subtract = _parameter_free("Subtract", "subtract",
                           "Difference of exactly two inputs of one width: ``y = x₀ - x₁``; "
                           "VJP ``dx₀ = dy``, ``dx₁ = -dy``." + _MERGE_DOC)
Multiply = _parameter_free("Multiply", "multiply",
                           "Elementwise product of two or more inputs of one width: "
                           "``y = Πᵢ xᵢ``; VJP ``dxᵢ = dy Π_{j≠i} xⱼ``." + _MERGE_DOC)
Average = _parameter_free("Average", "average",
                          "Elementwise mean of two or more inputs of one width: "
                          "``y = (1/k) Σᵢ xᵢ``; VJP ``dxᵢ = dy / k``." + _MERGE_DOC)
Concatenate = _parameter_free("Concatenate", "concatenate",
                              "Two or more inputs side by side along the features: "
                              "``y = [x₀ | x₁ | ...]`` (width the sum of theirs); VJP: each "
                              "input gets its block of dy." + _MERGE_DOC)


def _arg_property(name, doc):
    """A read-only property: the layer's argument `name` (op table name)."""
    return property(lambda self: self._args[name], doc=doc)


class _WithArgs(Layer):
    """A layer whose constructor takes its kind's arguments: get_config
    gives the properties named in _CONFIG, then the dtype."""

    _CONFIG = ()

    def get_config(self):
        cfg = {k: getattr(self, k) for k in self._CONFIG}
        cfg.update(super().get_config())
        return cfg


class LeakyReLU(_WithArgs):
    """Leaky ReLU ``z if z > 0 else slope * z``; derivative 1 or ``slope``."""

    _CONFIG = ("slope",)
    slope = _arg_property("slope", "The negative slope.")

    def __init__(self, slope=0.01, dtype=None, name=None):
        super().__init__("leaky_relu", dtype=dtype, slope=float(slope), name=name)


def _real_arg(owner, name, value):
    """value as a float; TypeError naming the argument if it is not a real
    number (str, None, bool). NaN and inf are refused by the core."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    return float(value)


class GELU(_WithArgs):
    """Gaussian error linear unit, as ``torch.nn.GELU``.

    ``approximate="none"`` (default): ``z Φ(z) = z (1 + erf(z / √2)) / 2``,
    derivative ``Φ(z) + z φ(z)`` (Φ, φ: the standard normal's cdf and
    density; Φ is computed as ``erfc(-z / √2) / 2``, accurate in its tail).

    ``approximate="tanh"``: ``z (1 + tanh u) / 2`` with
    ``u = √(2/π) (z + 0.044715 z³)``, derivative
    ``(1 + tanh u) / 2 + z (1 - tanh² u) u' / 2``,
    ``u' = √(2/π) (1 + 3 · 0.044715 z²)``.

    ``dtype=None`` and ``name=None`` as for the other activations.
    """

    _APPROXIMATE = ("none", "tanh")
    _CONFIG = ("approximate",)

    def __init__(self, approximate="none", dtype=None, name=None):
        if not isinstance(approximate, str) or approximate not in self._APPROXIMATE:
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__("gelu", dtype=dtype, name=name,
                         approximate=float(self._APPROXIMATE.index(approximate)))

    @property
    def approximate(self):
        """"none" (erf) or "tanh"."""
        return self._APPROXIMATE[int(self._args["approximate"] != 0)]


class ELU(_WithArgs):
    """Exponential linear unit ``z if z > 0 else alpha (e^z - 1)`` (through
    expm1); derivative 1 or ``alpha e^z``, taken from the output as
    ``a + alpha`` when ``alpha >= 0`` (then it runs in place in a model).
    As in torch, a NaN input gives a NaN output and passes the gradient
    through (its test ``z <= 0`` is false).

    ``dtype=None`` and ``name=None`` as for the other activations.
    """

    _CONFIG = ("alpha",)
    alpha = _arg_property("alpha", "The value ``-alpha`` the negative side tends to.")

    def __init__(self, alpha=1.0, dtype=None, name=None):
        super().__init__("elu", dtype=dtype, alpha=_real_arg("ELU", "alpha", alpha), name=name)


class Hardtanh(_WithArgs):
    """Hard tanh: ``z`` clamped to ``[min_val, max_val]``; derivative 1
    strictly inside, 0 outside and at ``min_val`` and ``max_val`` (as
    torch's hardtanh_backward), taken from the output. A NaN input gives a
    NaN output and a zero gradient. Needs ``min_val < max_val``.

    ``dtype=None`` and ``name=None`` as for the other activations.
    """

    _CONFIG = ("min_val", "max_val")
    min_val = _arg_property("min_val", "The lower end of the clamp.")
    max_val = _arg_property("max_val", "The upper end of the clamp.")

    def __init__(self, min_val=-1.0, max_val=1.0, dtype=None, name=None):
        lo = _real_arg("Hardtanh", "min_val", min_val)
        hi = _real_arg("Hardtanh", "max_val", max_val)
        if lo >= hi:          # NaN, and inf that passes: refused by the core
            raise ValueError(f"Hardtanh: max_val must be greater than min_val, got "
                             f"min_val={min_val!r}, max_val={max_val!r}")
        super().__init__("hardtanh", dtype=dtype, min_val=lo, max_val=hi, name=name)


class Dropout(_WithArgs):
    """Inverted dropout (torch's): in training mode each value is kept
    with probability ``1 - p`` and scaled by ``1 / (1 - p)``, else set to 0;
    in eval mode it is the identity. The VJP uses the forward's mask.

    The mask comes from the model's generator: a function of the model's
    ``seed``, its training step, this node, the row's place in the batch
    and the column, so a seeded ``fit`` is bitwise reproducible and a
    row's mask does not depend on how a batch is split between threads.
    Called on its own, the layer's ``training`` flag decides the mode.
    """

    _CONFIG = ("p",)
    p = _arg_property("p", "The probability of dropping a value.")

    def __init__(self, p=0.5, dtype=None, name=None):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or \
                not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout(p): p must be a probability in [0, 1], got {p!r}")
        super().__init__("dropout", dtype=dtype, p=float(p), name=name)


def _check_features(features, who):
    if isinstance(features, bool) or not isinstance(features, (int, np.integer)) or features < 1:
        raise ValueError(f"{who}(features): features must be a positive int, got {features!r}")
    return int(features)


def _check_eps(eps, who):
    if not (isinstance(eps, (int, float, np.floating)) and not isinstance(eps, bool)
            and 0 < float(eps) < float("inf")):
        raise ValueError(f"{who}: eps must be a finite number > 0, got {eps!r}")
    return float(eps)


class BatchNorm(Layer):
    """Batch normalisation over the batch, per feature (torch's BatchNorm1d).

    Training: each column is normalised by the batch's mean and (biased)
    variance, ``y = gamma (x - mean) / sqrt(var + eps) + beta``, and the
    running estimates follow: ``running = (1 - momentum) running + momentum
    batch`` (the variance unbiased, N / (N - 1), as torch; momentum=None:
    a cumulative average). Eval: the running estimates instead. The VJP
    goes through the batch statistics.

    Parameters ``params["gamma"]``, ``params["beta"]`` (when ``affine``);
    buffers ``buffers["running_mean"]``, ``buffers["running_var"]``,
    ``buffers["num_batches_tracked"]`` (when ``track_running_stats``; saved
    and loaded, never touched by an optimizer). Without running statistics
    the batch's are used in eval mode too. Training needs more than one
    row per batch. In a training step the running statistics change only
    once the step's loss is accepted.
    """

    def __init__(self, features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, name=None):
        features = _check_features(features, "BatchNorm")
        eps = _check_eps(eps, "BatchNorm")
        if momentum is not None and (not isinstance(momentum, (int, float, np.floating)) or
                                     isinstance(momentum, bool) or
                                     not 0.0 <= float(momentum) <= 1.0):
            raise ValueError(f"BatchNorm: momentum must be in [0, 1] or None, got {momentum!r}")
        self._momentum = momentum
        super().__init__("batchnorm", features, bias=bool(affine), dtype=dtype, eps=eps,
                         momentum=-1.0 if momentum is None else float(momentum),
                         track_running_stats=1.0 if track_running_stats else 0.0, name=name)

    features = property(lambda self: self.in_features)
    eps = property(lambda self: self._args["eps"])
    momentum = property(lambda self: self._momentum)
    affine = property(lambda self: self.bias)
    track_running_stats = property(lambda self: self._args["track_running_stats"] != 0)

    def get_config(self):
        return {"features": self.features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats,
                "dtype": str(np.dtype(self.dtype))}

    @classmethod
    def _tensor_shapes(cls, config):
        f = _check_features(config["features"], "BatchNorm")
        shapes = {"gamma": (f,), "beta": (f,)} if config.get("affine", True) else {}
        if config.get("track_running_stats", True):
            shapes.update({"running_mean": (f,), "running_var": (f,),
                           "num_batches_tracked": (1,)})
        return shapes


class LayerNorm(Layer):
    """Layer normalisation over the features of each row (torch's):
    ``y = gamma (x - mean) / sqrt(var + eps) + beta`` with the row's mean
    and biased variance; parameters ``params["gamma"]`` and
    ``params["beta"]`` when ``elementwise_affine``. The same in training
    and eval mode."""

    def __init__(self, features, eps=1e-5, elementwise_affine=True, dtype=np.float32,
                 name=None):
        features = _check_features(features, "LayerNorm")
        eps = _check_eps(eps, "LayerNorm")
        super().__init__("layernorm", features, bias=bool(elementwise_affine), dtype=dtype,
                         eps=eps, name=name)

    features = property(lambda self: self.in_features)
    eps = property(lambda self: self._args["eps"])
    elementwise_affine = property(lambda self: self.bias)

    def get_config(self):
        return {"features": self.features, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine,
                "dtype": str(np.dtype(self.dtype))}

    @classmethod
    def _tensor_shapes(cls, config):
        f = _check_features(config["features"], "LayerNorm")
        return {"gamma": (f,), "beta": (f,)} if config.get("elementwise_affine", True) else {}


_CLASSES = {c.__name__: c for c in (Linear, Identity, ReLU, LeakyReLU, Sigmoid, Tanh,
                                    Softplus, Step, Cos, GELU, SiLU, ELU, Softsign, Hardtanh,
                                    Softmax, LogSoftmax,
                                    Add, Subtract, Multiply, Average, Concatenate,
                                    Dropout, BatchNorm, LayerNorm)}
for _cls in _CLASSES.values():
    _cls._builtin = True


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


def python_layer_from_config(cls, config, dtype=None):
    """A layer written in Python, rebuilt from its class and config in
    ``dtype`` (its tensors converted when the constructor chose another)."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)) or cls._builtin:
        raise TypeError(f"{cls!r} is not a layer written in Python (a subclass of nl.Layer)")
    layer = cls.from_config(dict(config))
    if not isinstance(layer, cls):
        raise TypeError(f"{cls.__name__}.from_config returned {type(layer).__name__}")
    if dtype is not None and layer.dtype != np.dtype(dtype):
        layer._set_dtype(np.dtype(dtype))
        layer._params_moved()
    return layer


def _initial_values(init, shape, seed, dtype):
    """add_param's initial values: an array of `shape`."""
    if callable(init) and not isinstance(init, str):
        values = np.asarray(init(shape, np.random.default_rng(seed)))
    elif isinstance(init, str):
        rng = np.random.default_rng(seed)
        fan_in = shape[0]
        fan_out = shape[1] if len(shape) == 2 else shape[0]
        makers = {
            "zeros": lambda: np.zeros(shape),
            "ones": lambda: np.ones(shape),
            "normal": lambda: rng.normal(0.0, 0.01, shape),
            "uniform": lambda: rng.uniform(-0.05, 0.05, shape),
            "he": lambda: rng.normal(0.0, np.sqrt(2.0 / fan_in), shape),
            "glorot": lambda: rng.uniform(-1, 1, shape) * np.sqrt(6.0 / (fan_in + fan_out)),
        }
        if init not in makers:
            raise ValueError(f"init must be one of {sorted(makers)}, an array or a callable "
                             f"f(shape, rng), got {init!r}")
        values = makers[init]()
    else:
        values = np.asarray(init)
    if values.shape != shape:
        raise ValueError(f"init gives shape {values.shape}, the tensor's is {shape}")
    if values.dtype.kind not in "biuf":
        raise TypeError(f"init must give real numbers, got dtype {values.dtype}")
    return values.astype(dtype)
