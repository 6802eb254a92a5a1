"""Model and Sequential: graphs of layers run by the C engine.

``Model(inputs, outputs)`` is Keras's functional API: any graph of layers
built by calling layers on symbolic tensors (fan-out, merges, shared
layers, nested models, several inputs and outputs). ``Sequential`` is the
chain case of the same class. Both share one implementation of forward,
backward, train_step, fit, predict, evaluate, parameters, save/load,
pickling and deep copies.

A model is described by a *spec*: its inputs, the objects it calls
(layers and nested models, each under a name), the nodes (which object,
on which values) and its outputs. The C engine runs the spec flattened:
nested models are expanded into their layers, so every node it sees is
one layer.
"""
import numbers
import time

import numpy as np

from . import _core
from .layers import Layer, ParamDict, SymbolicTensor, _auto_name, _call_symbolic, _check_name
from .layers import BatchNorm, _symbolic_inputs
from .losses import Loss, SoftmaxCrossEntropy, loss_from_name
from .optim import SGD

__all__ = ["Model", "Sequential", "History"]


class History:
    """What ``fit`` records: ``history`` maps "loss", "accuracy" (for
    classification), "val_loss" and "val_accuracy" (with validation data)
    to one value per epoch, and for a model of several outputs each
    output's "<name>_loss" and "<name>_accuracy" too; ``epoch`` lists the
    epoch indices."""

    def __init__(self, params):
        self.history = {}
        self.epoch = []
        self.params = params

    def _record(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"

    def plot(self, metrics=None):
        """Draw each metric's curve per epoch, train and (when recorded)
        validation ("val_<name>") on one axes, one axes per metric, with
        matplotlib; returns the ``Figure``.

        metrics : None (every recorded metric: "loss", "accuracy", ...), a
            name, or a list of names from ``history``.
        """
        names = self._plot_names(metrics)
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib "
                              "(or \"nnlayers[notebook]\")") from None
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5),
                                 squeeze=False)
        x = np.array(self.epoch) + 1   # epochs counted from 1, as fit prints them
        for ax, name in zip(axes[0], names):
            ax.plot(x, self.history[name], marker=".", label="validation"
                    if name.startswith("val_") else "train")
            if "val_" + name in self.history:
                ax.plot(x, self.history["val_" + name], marker=".", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.legend()
        fig.tight_layout()
        return fig

    def _plot_names(self, metrics):
        """The names plot draws, checked."""
        if not self.epoch:
            raise ValueError("History.plot: nothing to plot, fit recorded no epoch")
        if metrics is None:
            return [k for k in self.history if not k.startswith("val_")] or list(self.history)
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"History.plot: metrics must be names (str), got "
                                f"{type(name).__name__}")
            if name not in self.history:
                raise ValueError(f"History.plot: no metric {name!r} was recorded; "
                                 f"recorded: {sorted(self.history)}")
        if not names:
            raise ValueError("History.plot: metrics is empty; give None for every metric")
        return names


def _in_jupyter_kernel():
    """True inside a Jupyter kernel (IPython already imported there)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _progress_bar(**kwargs):
    """fit's progress bar: tqdm's widget bar in a Jupyter kernel that has
    ipywidgets (the ``notebook`` extra), else its text bar. Not tqdm.auto:
    without ipywidgets it warns "IProgress not found" before falling back."""
    from tqdm.std import tqdm as text_bar

    if _in_jupyter_kernel():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as widget_bar

            return widget_bar(**kwargs)
        except ImportError:   # no (or too old) ipywidgets: the text bar
            pass
    return text_bar(**kwargs)


def _check_epochs(epochs, initial_epoch):
    for name, v in (("epochs", epochs), ("initial_epoch", initial_epoch)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int >= 0, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if initial_epoch > epochs:
        raise ValueError(f"initial_epoch ({initial_epoch}) is past epochs ({epochs}): fit trains "
                         f"epochs initial_epoch .. epochs - 1")
    return int(epochs), int(initial_epoch)


def _epoch_order(shuffle, rng, seed, epoch, n):
    """The order fit visits the n rows in at epoch `epoch` (None: as
    stored): shuffle's own (a callable), or a permutation drawn from rng,
    else from (seed, epoch)."""
    if callable(shuffle):
        return shuffle(epoch)   # checked in C (_fit_epoch's order)
    if not shuffle:
        return None
    gen = rng if rng is not None else np.random.default_rng([seed, epoch])
    # int64 already where the platform's intp is: no second copy of n rows
    return gen.permutation(n).astype(np.int64, copy=False)


def _fit_optimizer(model, optimizer):
    """fit's optimizer: the one given, else the one the model last trained
    with (its state kept, as Keras's compiled optimizer), else SGD(lr=0.01)."""
    if optimizer is not None:
        return optimizer
    last = getattr(model, "optimizer", None)
    return last if last is not None else SGD(model, lr=0.01)


def _callback_list(callbacks):
    """The callbacks, checked, with a TerminateOnNaN unless one is given."""
    from .callbacks import Callback, TerminateOnNaN

    cbs = list(callbacks or [])
    for i, cb in enumerate(cbs):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] is {type(cb).__name__}, not an "
                            f"nnlayers.callbacks.Callback")
    if not any(isinstance(cb, TerminateOnNaN) for cb in cbs):
        cbs.append(TerminateOnNaN())
    return cbs


def _nan_callback(cbs):
    from .callbacks import TerminateOnNaN

    return next(cb for cb in cbs if isinstance(cb, TerminateOnNaN))


def _batch_caller(cbs):
    """on_batch(batch, rows, loss) for the C loop: every per-batch callback."""
    def on_batch(batch, rows, loss):
        logs = {"batch": batch, "size": rows, "loss": loss}
        for cb in cbs:
            cb.on_batch_end(batch, logs)
    return on_batch


def _validation_pair(validation_data, validation_split):
    if not isinstance(validation_split, numbers.Real) or isinstance(validation_split, bool) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a float in [0, 1), got {validation_split!r}")
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    return tuple(validation_data)


def _row_weights(sample_weight, class_weight, ys, n, dtype, multi_out):
    """Per-row loss weights from sample_weight and class_weight, or None."""
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape not in ((n,), (n, 1)):
            raise ValueError(f"sample_weight must have one weight per row ({n}), got "
                             f"shape {w.shape}")
        w = w.reshape(n)
    if class_weight is not None:
        if multi_out:
            raise ValueError("class_weight is for a model of one output; give sample_weight")
        labels = np.asarray(ys[0])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ValueError("class_weight needs class-id targets y of shape (n,)")
        labels = labels.astype(np.int64)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be a dict or 'balanced', got "
                                 f"{class_weight!r}")
            classes, counts = np.unique(labels, return_counts=True)
            table = dict(zip(classes.tolist(), (n / (len(classes) * counts)).tolist()))
        elif isinstance(class_weight, dict):
            table = {int(k): float(v) for k, v in class_weight.items()}
            bad = [k for k, v in table.items() if not (np.isfinite(v) and v >= 0)]
            if bad:
                raise ValueError(f"class_weight[{bad[0]}] must be finite and >= 0, got "
                                 f"{table[bad[0]]!r}")
        else:
            raise TypeError(f"class_weight must be a dict or 'balanced', got "
                            f"{type(class_weight).__name__}")
        cw = np.array([table.get(int(c), 1.0) for c in labels], dtype=np.float64)
        w = cw if w is None else w * cw
    if w is None:
        return None
    # the training loop's own check, now: before fit changes anything
    return _core.check_weights(w, dtype, n, "sample_weight")


def _check_batch_statistics(model, n, batch_size):
    """Before fit's first update: a BatchNorm trains on batch statistics,
    which need more than one row, so no minibatch may have a single row
    (else fit would stop part-way, at the last batch of an epoch)."""
    last = n - (n - 1) // batch_size * batch_size
    if n == 0 or min(batch_size, last) > 1:
        return
    bn = next((layer for layer in model._flat_layers if isinstance(layer, BatchNorm)), None)
    if bn is not None:
        raise ValueError(
            f"batch_size={batch_size} over {n} training rows gives a batch of 1 row, but "
            f"layer {bn.name!r} (BatchNorm) trains on batch statistics, which need more "
            f"than one row: choose a batch_size of 2 or more for which rows % batch_size "
            f"!= 1, or drop a row")


def _per_step(schedule):
    return schedule is not None and schedule.interval == "step"


def _step_plan(schedule, n_batches):
    """Per batch b of an epoch, (names, values (n_batches, groups, names)):
    the values after b steps of a per-step schedule, in torch's order (a
    batch, then ``schedule.step()``), so batch 0 runs with the values the
    optimizer holds now. It peeks n_batches steps ahead, as far as fit
    steps the schedule after the epoch, so a schedule that would run past
    its end fails before the epoch rather than after it."""
    names, later = schedule._peek(n_batches)
    now = np.array([[g[k] for k in names] for g in schedule.optimizer.param_groups],
                   dtype=np.float64)
    return names, np.concatenate([now[None], later[:-1]])


def _check_schedule(schedule, optimizer, epochs=None, n_batches=None):
    """Everything that would stop the schedule during fit, checked before
    the first update: its optimizer, who steps it, and (given the epochs
    and the batches per epoch) its end."""
    if not hasattr(schedule, "_peek") or not hasattr(schedule, "interval"):
        raise TypeError(f"schedule must be an nnlayers.schedules schedule, got "
                        f"{type(schedule).__name__}")
    if schedule.optimizer is not optimizer:
        raise ValueError("schedule is built on another optimizer than fit's: build it on "
                         "the optimizer you pass to fit")
    if getattr(schedule, "_driven_by", None) is not None:
        raise ValueError(f"schedule is the after= of {schedule._driven_by}, which steps it: "
                         f"pass that schedule to fit")
    if epochs is None:
        return
    steps = epochs * (n_batches if _per_step(schedule) else 1)
    schedule._check_reach(schedule.last_epoch + steps, f"fit ({epochs} epochs of "
                          f"{n_batches} batches)")


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


# ---------------------------------------------------------------- specs

INPUT = -1   # a value reference (INPUT, i) is the model's input i


class _Spec:
    """A model's structure, before flattening.

    inputs:  [(width or None, dtype or None, name)]
    objects: the distinct layers and nested models it calls
    names:   their entry names (parameter names start with them)
    nodes:   [(object index, [value references])]
    outputs: [value references]
    A value reference is (INPUT, i) for input i, or (k, j) for output j of
    node k.
    """

    __slots__ = ("inputs", "objects", "names", "nodes", "outputs")

    def __init__(self, inputs, objects, names, nodes, outputs):
        self.inputs = inputs
        self.objects = objects
        self.names = names
        self.nodes = nodes
        self.outputs = outputs


def _node_label(name, uses):
    """The name of a node: its layer's name, with the use count after the
    first use of a shared layer."""
    return name if uses == 0 else f"{name}[{uses}]"


def _flatten(spec, in_values, n_inputs, flat):
    """Append spec's nodes, nested models expanded, to `flat` (the C
    engine's graph); in_values are the flat values of spec's inputs.
    Returns the flat values of spec's outputs."""
    values = {(INPUT, i): v for i, v in enumerate(in_values)}
    for k, (oi, refs) in enumerate(spec.nodes):
        obj = spec.objects[oi]
        ins = [values[r] for r in refs]
        if isinstance(obj, Model):
            outs = _flatten(obj._spec, ins, n_inputs, _Prefixed(flat, spec.names[oi]))
        else:
            outs = [flat.add_node(obj, ins, spec.names[oi])]
        for j, v in enumerate(outs):
            values[(k, j)] = v
    return [values[r] for r in spec.outputs]


class _FlatGraph:
    """The C engine's view: distinct layers, nodes of one layer each, and
    what messages call each node (`label` makes it from a name)."""

    def __init__(self, n_inputs, label):
        self.n_inputs = n_inputs
        self.label = label
        self.layers = []
        self.index = {}
        self.nodes = []
        self.names = []
        self.uses = {}

    def add_node(self, layer, ins, name, nested=False):
        li = self.index.get(id(layer))
        if li is None:
            li = self.index[id(layer)] = len(self.layers)
            self.layers.append(layer)
        uses = self.uses.get(id(layer), 0)
        self.uses[id(layer)] = uses + 1
        self.nodes.append((li, tuple(ins)))
        name = _node_label(name, uses)
        self.names.append(f"node {name!r}" if nested else self.label(name))
        return self.n_inputs + len(self.nodes) - 1


class _Prefixed:
    """A _FlatGraph seen from inside a nested model: node names get the
    nested model's name in front."""

    def __init__(self, flat, prefix):
        self.flat = flat
        self.prefix = prefix

    def add_node(self, layer, ins, name, nested=True):
        return self.flat.add_node(layer, ins, f"{self.prefix}/{name}", True)


def _spec_from_tensors(inputs, outputs):
    """The spec of the graph between symbolic `inputs` and `outputs`."""
    in_index = {}
    for i, t in enumerate(inputs):
        if t.node is not None:
            raise ValueError(
                f"inputs[{i}] ({t!r}) is computed by layer {t.node.layer.name!r}; a "
                f"model's inputs must come from nl.Input(...)")
        if id(t) in in_index:
            raise ValueError(f"inputs[{i}] ({t!r}) is listed twice")
        in_index[id(t)] = i
    objects, names, obj_index, nodes, node_index = [], [], {}, [], {}

    def ref(t, path):
        if t.node is None:
            if id(t) not in in_index:
                raise ValueError(
                    f"graph disconnected: {path} depends on input {t.name!r}, which "
                    f"is not in the model's inputs")
            return (INPUT, in_index[id(t)])
        return (visit(t.node, path), t.index)

    def visit(node, path):
        key = id(node)
        if key in node_index:
            if node_index[key] is None:
                raise ValueError(f"the graph has a cycle at layer {node.layer.name!r}")
            return node_index[key]
        node_index[key] = None
        refs = [ref(t, f"layer {node.layer.name!r}") for t in node.inputs]
        layer = node.layer
        if id(layer) not in obj_index:
            obj_index[id(layer)] = len(objects)
            objects.append(layer)
            names.append(layer.name)
        nodes.append((obj_index[id(layer)], refs))
        node_index[key] = len(nodes) - 1
        return node_index[key]

    out_refs = [ref(t, f"output {t.name!r}") for t in outputs]
    seen = {}
    for layer, name in zip(objects, names):
        if name in seen and seen[name] is not layer:
            raise ValueError(
                f"two different layers are named {name!r} ({seen[name]!r} and "
                f"{layer!r}); names must be unique in a model")
        seen[name] = layer
    spec_inputs = [(t.width, t.dtype, t.name) for t in inputs]
    return _Spec(spec_inputs, objects, names, nodes, out_refs)


def _as_tensor_list(x, what):
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items:
        raise ValueError(f"Model needs at least one of {what}")
    for i, t in enumerate(items):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(
                f"Model({what}=...): item {i} is {type(t).__name__}, not a symbolic "
                f"tensor; build a model from nl.Input(...) and layers called on it, "
                f"then call the model on arrays")
    return items


def _widths_of(spec, in_widths, label=None):
    """Widths of spec's outputs for inputs of these widths (None where a
    width is not known), checking each layer as it goes; `label(k)` names
    node k in messages."""
    values = _value_widths(spec, in_widths, label)
    return [values[r] for r in spec.outputs]


def _value_widths(spec, in_widths, label=None):
    """{value reference: width or None} of every value of spec (its
    inputs and each node's outputs)."""
    label = label or (lambda k: f"node {spec.names[spec.nodes[k][0]]!r}")
    values = {(INPUT, i): w for i, w in enumerate(in_widths)}

    def source(ref):
        return "the input" if ref[0] == INPUT else label(ref[0])

    for k, (oi, refs) in enumerate(spec.nodes):
        obj = spec.objects[oi]
        ins = [values[r] for r in refs]
        if isinstance(obj, Model):
            outs = _widths_of(obj._spec, ins)
        elif any(w is None for w in ins):
            outs = [None]
        else:
            fixed = obj.in_features
            if fixed is not None and len(ins) == 1 and ins[0] != fixed:
                raise ValueError(f"{label(k)} ({obj!r}) expects an input width of {fixed}, but "
                                 f"{source(refs[0])} outputs {ins[0]}")
            outs = [obj._out_width(ins)]
        for j, w in enumerate(outs):
            values[(k, j)] = w
    return values


def _python_layers_adopt(layers, input_dtypes):
    """Layers written in Python without a dtype of their own take the one
    every other layer with a dtype (and the inputs) agree on."""
    dts = {np.dtype(d) for d in input_dtypes}
    dts |= {np.dtype(layer.dtype) for layer in layers if layer.dtype is not None
            and (layer._builtin or layer.__dict__.get("_dtype_given", True))}
    if len(dts) == 1:
        (dtype,) = dts
        for layer in layers:
            layer._adopt_dtype(dtype)


# ---------------------------------------------------------------- Model

class Model(_core.Model):
    """A graph of layers (Keras's functional API)::

        x = nl.Input(784)
        h = nl.ReLU()(nl.Linear(784, 256)(x))
        out = nl.Add()([nl.Linear(256, 10)(h), nl.Linear(784, 10)(x)])
        model = nl.Model(inputs=x, outputs=out)

    ``inputs`` and ``outputs`` are symbolic tensors, or lists of them for
    several. A layer called at several places is shared (one set of
    parameters, gradients summed over its uses); a model called on
    symbolic tensors acts as one layer with its own parameters.

    The model owns one block for all parameters and one for all gradients
    (the layers' parameters become views into it) plus workspaces reused
    from call to call. ``forward``, ``backward``, ``train_step`` and each
    epoch of ``fit`` run in one C call. ``predict`` (and ``forward``) may
    run from several threads at once; training runs alone.
    """

    _default_name = "model"

    def __init__(self, inputs, outputs, name=None):
        ins = _as_tensor_list(inputs, "inputs")
        outs = _as_tensor_list(outputs, "outputs")
        spec = _spec_from_tensors(ins, outs)
        self._multi_in = isinstance(inputs, (list, tuple))
        self._multi_out = isinstance(outputs, (list, tuple))
        self._output_names = [t.name for t in outs]
        self._build(spec, name)

    # ---- construction
    def _build(self, spec, name):
        """Hand the flattened spec to the C engine."""
        self.name = _check_name(name) if name is not None else _auto_name(self._default_name)
        self._spec = spec
        flat = _FlatGraph(len(spec.inputs), self._node_text)
        outputs = _flatten(spec, list(range(len(spec.inputs))), len(spec.inputs), flat)
        dtypes = {np.dtype(d) for _, d, _ in spec.inputs if d is not None}
        if len(dtypes) > 1:
            raise TypeError(f"the model's inputs have different dtypes {sorted(map(str, dtypes))}")
        _python_layers_adopt(flat.layers, dtypes)
        names = flat.names + [f"input {n!r}" for _, _, n in spec.inputs]
        _core.Model.__init__(self, flat.layers, flat.nodes, [w for w, _, _ in spec.inputs],
                             outputs, names, dtypes.pop() if dtypes else None)
        self._flat_layers = tuple(flat.layers)
        self._flat_nodes = tuple(flat.nodes)
        self._flat_outputs = tuple(outputs)
        if not hasattr(self, "_output_names"):
            self._output_names = [f"output_{j}" for j in range(len(spec.outputs))]

    @staticmethod
    def _node_text(name):
        """What messages call the node of this name."""
        return f"node {name!r}"

    @classmethod
    def _from_spec(cls, spec, name, multi_in=None, multi_out=None, output_names=None):
        """A model of this class from a spec (load, pickling)."""
        self = cls.__new__(cls)
        self._multi_in = len(spec.inputs) > 1 if multi_in is None else multi_in
        self._multi_out = len(spec.outputs) > 1 if multi_out is None else multi_out
        if output_names is not None:
            self._output_names = list(output_names)
        self._build(spec, name)
        return self

    # ---- calling
    def __call__(self, x):
        sym = _symbolic_inputs(x)
        if sym is None:
            return self.forward(x)
        n = len(self._spec.inputs)
        if len(sym) != n:
            raise ValueError(f"{self.name!r} takes {n} input(s), got {len(sym)}")
        for t, (w, _, nm) in zip(sym, self._spec.inputs):
            if w is not None and t.width != w:
                raise ValueError(
                    f"{self.name!r}: input {nm!r} takes width {w}, got {t!r}")
        widths = _widths_of(self._spec, [t.width for t in sym])
        return _call_symbolic(self, sym, widths, multi_out=self._multi_out)

    def _out_width(self, widths):
        out = _widths_of(self._spec, list(widths))
        if len(out) != 1:
            raise ValueError(f"{self.name!r} has {len(out)} outputs")
        return out[0]

    # ---- structure
    @property
    def layers(self):
        """The layers and nested models this model calls, in order."""
        return tuple(self._spec.objects)

    @property
    def inputs(self):
        """(width, name) of each input (width None when any is taken)."""
        widths = self._input_widths
        return [(w, n) for w, (_, _, n) in zip(widths, self._spec.inputs)]

    def train(self, mode=True):
        """Training mode (torch's ``model.train()``): forward drops with
        Dropout and uses (and updates) BatchNorm's batch statistics.
        ``train_step`` and ``fit`` always train, ``predict`` and
        ``evaluate`` always evaluate, whatever the mode. Returns the model.
        Also sets the mode of its layers (for calls on them alone)."""
        self.training = bool(mode)
        for layer in self._flat_layers:
            layer.training = bool(mode)
        return self

    def eval(self):
        """Eval mode (torch's ``model.eval()``): ``train(False)``."""
        return self.train(False)

    @property
    def trainable(self):
        """True when any layer trains; setting it sets every layer's."""
        return any(layer.trainable for layer in self._flat_layers)

    @trainable.setter
    def trainable(self, value):
        for layer in self._flat_layers:
            layer.trainable = value

    def _named_leaves(self):
        """(name, layer) for every distinct layer, names from the entries
        ("0", "linear", "encoder.0", ...)."""
        seen = set()
        for name, obj in zip(self._spec.names, self._spec.objects):
            if isinstance(obj, Model):
                items = [(f"{name}.{n}", layer) for n, layer in obj._named_leaves()]
            else:
                items = [(name, obj)]
            for n, layer in items:
                if id(layer) not in seen:
                    seen.add(id(layer))
                    yield n, layer

    def parameters(self):
        """Parameters by name ("0.W", "linear.b", "encoder.0.W", ...): views
        into the model's parameter block. Assigning an array of the same
        shape copies it into the model."""
        return ParamDict({f"{n}.{k}": v for n, layer in self._named_leaves()
                          for k, v in layer.params.items()}, self, "parameters")

    def named_parameters(self):
        """(name, view) pairs of every parameter, as torch's: the names of
        ``parameters()``. The views can form optimizer parameter groups::

            decay = [p for n, p in model.named_parameters() if n.endswith(".W")]
        """
        return list(self.parameters().items())

    def get_weights(self):
        """Copies of every parameter and buffer, in a fixed order (Keras's
        ``get_weights``): what ``set_weights`` takes back."""
        return [np.array(v) for v in self.parameters().values()] + \
            [np.array(v) for v in self.buffers().values()]

    def set_weights(self, weights):
        """Copy arrays from ``get_weights()`` (same order and shapes) into
        the model. Every shape is checked before anything is written."""
        views = list(self.parameters().values()) + list(self.buffers().values())
        weights = list(weights)
        if len(weights) != len(views):
            raise ValueError(f"set_weights: the model has {len(views)} arrays, got "
                             f"{len(weights)}")
        arrays = [np.asarray(w) for w in weights]
        for i, (a, v) in enumerate(zip(arrays, views)):
            if a.shape != v.shape:
                raise ValueError(f"set_weights: array {i} has shape {a.shape}, the model's "
                                 f"has {v.shape}")
        self._check_idle()
        for a, v in zip(arrays, views):
            np.copyto(v, a, casting="unsafe")

    def gradients(self):
        """Gradients by the same names as ``parameters()``."""
        return ParamDict({f"{n}.{k}": v for n, layer in self._named_leaves()
                          for k, v in layer.grads.items()}, self, "gradients")

    def buffers(self):
        """Buffers (state that is not trained) by name, as views."""
        return ParamDict({f"{n}.{k}": v for n, layer in self._named_leaves()
                          for k, v in layer.buffers.items()}, self, "buffers")

    @property
    def params(self):
        return self.parameters()

    @property
    def grads(self):
        return self.gradients()

    def _trainable_parameter_names(self):
        return [f"{n}.{k}" for n, layer in self._named_leaves() if layer.trainable
                for k in layer.params]

    def num_parameters(self):
        """Number of scalar parameters."""
        return int(sum(layer.count_params() for _, layer in self._named_leaves()))

    count_params = num_parameters

    def __repr__(self):
        lines = []
        for k, (oi, refs) in enumerate(self._spec.nodes):
            ins = ", ".join(self._ref_name(r) for r in refs)
            lines.append(f"  {self._spec.names[oi]}: {self._spec.objects[oi]!r} <- {ins}")
        outs = ", ".join(self._ref_name(r) for r in self._spec.outputs)
        return f"{type(self).__name__}(name={self.name!r},\n" + "\n".join(lines) + \
            f"\n  outputs: {outs}\n)"

    def _ref_name(self, ref):
        """A value's name: the input's, or its node's (a shared layer's
        later uses as "name[1]", ...), with ":j" for output j > 0."""
        k, j = ref
        if k == INPUT:
            return self._spec.inputs[j][2]
        oi = self._spec.nodes[k][0]
        uses = sum(1 for o, _ in self._spec.nodes[:k] if o == oi)
        return _node_label(self._spec.names[oi], uses) + (f":{j}" if j else "")

    # ---- inspecting
    def _summary_rows(self):
        """One row per node: (node name, layer class, output width (None
        when it depends on the input), parameters (0 at a later use of a
        shared layer), the values it reads)."""
        in_widths = list(self._input_widths)
        if isinstance(self, Sequential) and in_widths[0] is None:
            in_widths[0] = _chain_input_width(self._items)
        widths = _value_widths(self._spec, in_widths)
        rows, counted = [], set()
        for w, _, name in self._spec.inputs:
            rows.append((name, "Input", w, 0, ""))
        for k, (oi, refs) in enumerate(self._spec.nodes):
            obj = self._spec.objects[oi]
            n = 0 if id(obj) in counted else obj.count_params()
            counted.add(id(obj))
            outs = [widths[(k, j)] for j in range(len(obj._spec.outputs))] \
                if isinstance(obj, Model) else [widths[(k, 0)]]
            width = outs[0] if len(outs) == 1 else tuple(outs)
            name = obj.name if isinstance(self, Sequential) else \
                self._ref_name((k, 0)).split(":")[0]
            rows.append((name, type(obj).__name__, width, n,
                         ", ".join(self._ref_name(r) for r in refs)))
        return rows

    def _param_totals(self):
        """(trainable, non-trainable) scalar counts: the parameters of
        frozen layers and every buffer (BatchNorm's running statistics)
        are not trained."""
        trained = frozen = 0
        for _, layer in self._named_leaves():
            n = layer.count_params()
            trained += n if layer.trainable else 0
            frozen += (0 if layer.trainable else n) + \
                sum(int(v.size) for v in layer.buffers.values())
        return trained, frozen

    def summary(self, print_fn=print):
        """Print a Keras-style table of the model: each node's name and
        layer, its output width, its parameter count and (for graphs) the
        values it reads; then the totals. Returns the text."""
        graph = not isinstance(self, Sequential)
        head = ["Node (type)", "Output width", "Params"] + (["Connected to"] if graph else [])
        body = [[f"{name} ({cls})", "?" if w is None else str(w), f"{n:,}"] +
                ([ins or "-"] if graph else [])
                for name, cls, w, n, ins in self._summary_rows()
                if graph or cls != "Input"]
        cols = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]

        def line(cells):
            return " " + "  ".join(c.ljust(w) for c, w in zip(cells, cols)).rstrip()

        width = sum(cols) + 2 * len(cols)
        trained, frozen = self._param_totals()
        text = "\n".join([f'{type(self).__name__}: "{self.name}"', "_" * width, line(head),
                          "=" * width] + [line(r) for r in body] + [
                          "=" * width, f"Total params: {trained + frozen:,}",
                          f"Trainable params: {trained:,}",
                          f"Non-trainable params: {frozen:,}", "_" * width])
        if print_fn is not None:
            print_fn(text)
        return text

    def _repr_html_(self):
        """Jupyter's display: the summary as an HTML table."""
        import html

        graph = not isinstance(self, Sequential)
        head = ["Node", "Layer", "Output width", "Params"] + (["Connected to"] if graph else [])
        rows = [[name, cls, "?" if w is None else str(w), f"{n:,}"] + ([ins] if graph else [])
                for name, cls, w, n, ins in self._summary_rows() if graph or cls != "Input"]
        trained, frozen = self._param_totals()
        cell = "".join
        table = ("<table><thead><tr>" + cell(f"<th>{html.escape(h)}</th>" for h in head) +
                 "</tr></thead><tbody>" +
                 cell("<tr>" + cell(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                      for r in rows) + "</tbody></table>")
        return (f"<div><b>{html.escape(type(self).__name__)}</b> "
                f"&quot;{html.escape(self.name)}&quot;{table}"
                f"<p>Total params: {trained + frozen:,} (trainable {trained:,}, "
                f"non-trainable {frozen:,})</p></div>")

    def get_config(self):
        """The architecture as a JSON-able dict (Keras's ``get_config``):
        every layer's class and config and the graph, without the weights.
        ``nl.Model.from_config(config)`` builds the same model with new
        weights (a Sequential comes back as a Sequential)."""
        from .io import to_archive

        arch, _ = to_archive(self, weights=False)
        return arch

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new model (fresh weights) from ``get_config()``'s dict;
        ``custom_objects`` maps the class names of layers written in
        Python to their classes, as for ``nl.load``."""
        from .io import from_config

        return from_config(config, custom_objects)

    # ---- running
    def predict(self, X, batch_size=None, comm=None, shard=None):
        """The model's output for X (n, in) (a list of arrays for several
        inputs; a list of outputs for several), computed in batches of
        ``batch_size`` rows (default: all at once). Several threads may
        predict with one model at once. With ``comm`` (nl.distributed),
        each rank predicts its rows (``shard="auto"``: its block of X) and
        every rank gets all rows' outputs, in rank order."""
        if comm is not None:
            from . import distributed

            return distributed.predict(self, X, comm, shard=shard, batch_size=batch_size)
        if batch_size is None:
            return self._predict(X)
        batch_size = _check_positive_int(batch_size, "batch_size")
        xs = list(X) if self._multi_in else [X]
        xs = [np.asarray(a) for a in xs]
        for a in xs:
            if a.ndim != 2:
                raise ValueError(f"X must be a 2-D array (samples, features), got shape {a.shape}")
        n = xs[0].shape[0]
        parts = []
        for i in range(0, n, batch_size):
            sl = [a[i:i + batch_size] for a in xs]
            parts.append(self._predict(sl if self._multi_in else sl[0]))
        if not parts:
            return self._predict(X)
        if self._multi_out:
            return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]
        return np.concatenate(parts, axis=0)

    def _losses(self, loss):
        """One nnlayers Loss per output, from a loss, a name, or a list."""
        n = len(self._spec.outputs)
        if loss is None:
            loss = SoftmaxCrossEntropy()
        if isinstance(loss, (list, tuple)) and (n > 1 or len(loss) == 1):
            if len(loss) != n:
                raise ValueError(f"loss: this model has {n} outputs, got a list of "
                                 f"{len(loss)} losses (give one per output, or one for all)")
            return [self._resolve_loss(x) for x in loss]
        return [self._resolve_loss(loss)] * n

    @staticmethod
    def _resolve_loss(loss):
        if isinstance(loss, str):
            loss = loss_from_name(loss)
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be an nnlayers loss (e.g. "
                            f"nnlayers.SoftmaxCrossEntropy()), got {type(loss).__name__}")
        return loss

    def _loss_weights(self, loss_weights):
        n = len(self._spec.outputs)
        if loss_weights is None:
            return [1.0] * n
        if isinstance(loss_weights, dict):
            unknown = set(loss_weights) - set(self._output_names)
            if unknown:
                raise ValueError(f"loss_weights names unknown outputs {sorted(unknown)}; "
                                 f"the outputs are {self._output_names}")
            return [float(loss_weights.get(name, 1.0)) for name in self._output_names]
        weights = [float(w) for w in loss_weights]
        if len(weights) != n:
            raise ValueError(f"loss_weights must give one weight per output ({n}), "
                             f"got {len(weights)}")
        return weights

    def evaluate(self, X, y, loss=None, batch_size=None, loss_weights=None, metrics=None,
                 comm=None, shard=None):
        """Loss (batch-averaged over all of X) and, for classification, the
        accuracy: ``{"loss": float, "accuracy": float}``, plus any
        ``metrics`` asked for (names or callables, see ``nl.metrics``). A
        model of several outputs also reports each output's "<name>_loss"
        (and "<name>_accuracy", "<name>_<metric>"); "loss" is then the
        weighted sum. With ``comm`` (nl.distributed), each rank passes its
        rows (or the full arrays with ``shard="auto"``) and every rank gets
        the result over all ranks' rows."""
        if comm is not None:
            from . import distributed

            return distributed.evaluate(self, X, y, comm, shard=shard, loss=loss,
                                        batch_size=batch_size, loss_weights=loss_weights,
                                        metrics=metrics)
        losses = self._losses(loss)
        self._check_data(X, y, losses if self._multi_out else losses[0], "X", "y")
        return self._evaluate_checked(X, y, loss=loss, batch_size=batch_size,
                                      loss_weights=loss_weights, metrics=metrics)

    def _evaluate_checked(self, X, y, loss=None, batch_size=None, loss_weights=None,
                          metrics=None):
        """evaluate on data that _check_data has passed: fit checks its
        validation data once, before the first epoch, not at every epoch's
        end (a pass over all of X_val each time)."""
        preds = self.predict(X, batch_size=batch_size)
        preds = preds if self._multi_out else [preds]
        return self._evaluate_predictions(preds, self._targets_list(y), loss=loss,
                                          loss_weights=loss_weights, metrics=metrics)

    def _evaluate_predictions(self, preds, ys, loss=None, loss_weights=None, metrics=None):
        """evaluate's result from the predictions and targets (lists, one
        per output)."""
        from .metrics import resolve_metrics, value

        losses = self._losses(loss)
        weights = self._loss_weights(loss_weights)
        metric_list = metrics if isinstance(metrics, list) and all(
            hasattr(m, "fn") for m in metrics) else resolve_metrics(metrics)
        out, total = {}, 0.0
        for j, (p, t, lf) in enumerate(zip(preds, ys, losses)):
            prefix = f"{self._output_names[j]}_" if self._multi_out else ""
            v = lf._value(p, t)
            total += weights[j] * v
            out[prefix + "loss"] = v
            if lf.is_classification:
                out[prefix + "accuracy"] = lf._correct(p, t) / p.shape[0] if p.shape[0] \
                    else float("nan")
            for m in metric_list:
                if m.name != "accuracy":
                    out[prefix + m.name] = value(m, lf, p, t)
        if self._multi_out:
            out = {"loss": total, **out}
        return out

    def _targets_list(self, y):
        n = len(self._spec.outputs)
        if not self._multi_out:
            return [y]
        if not isinstance(y, (list, tuple)) or len(y) != n:
            raise ValueError(f"y: this model has {n} outputs, so it takes a list of {n} targets")
        return list(y)

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32, shuffle=True,
            seed=None, validation_data=None, verbose=1, loss_weights=None, callbacks=None,
            validation_split=0.0, sample_weight=None, class_weight=None, initial_epoch=0,
            metrics=None, schedule=None, comm=None, shard=None):
        """Train with minibatches; returns a :class:`History`.

        Each epoch's loop over minibatches runs in C with the GIL released;
        Python is entered between epochs and, a few times a second, to draw
        progress and check for Ctrl-C (which stops within one batch and
        raises KeyboardInterrupt, leaving the model consistent: every batch
        is applied whole or not at all). Everything is checked before the
        first update: the data, the targets, validation_data, and X and the
        validation inputs for NaN or infinity (naming the first bad row).

        Parameters
        ----------
        X : array (n, in), or a list of arrays for several inputs
        y : labels (n,) or (n, 1), or targets (n, C); a list, one per output
        loss : an nnlayers loss (default SoftmaxCrossEntropy), or one per output
        optimizer : an nnlayers optimizer over this model; default the one
            this model last trained with (``model.optimizer``: an earlier
            fit's, or the one ``nl.load`` gave back), else SGD(lr=0.01).
            ``model.optimizer`` is set to it
        epochs : int >= 0, the epoch to end at; initial_epoch : the one to
            start from (resuming: ``fit(..., initial_epoch=5, epochs=10)``)
        batch_size : int >= 1 (a last partial batch is used)
        shuffle : reshuffle every epoch; with an int ``seed`` epoch e's order
            depends only on (seed, e), so a resumed fit shuffles as an
            uninterrupted one would. Or a callable ``shuffle(epoch)``
            returning that epoch's order of the rows (a permutation of
            ``range(n)``), to visit them as another library would
        seed : int or None. An int also becomes the model's ``seed`` (the
            key of Dropout's masks, with the step count), so a seeded fit
            of a model is bitwise reproducible
        validation_data : (X_val, y_val) evaluated after each epoch;
        validation_split : float in [0, 1): the last fraction of the rows
            (before shuffling, as Keras) held out as validation data instead
        sample_weight : (n,) weights of the rows in the loss (finite, >= 0);
        class_weight : {class id: weight} or "balanced" (n / (C * count of the
            class), scikit-learn's rule), multiplied into sample_weight
        metrics : names ("accuracy", "mse", "mae", "binary_accuracy",
            "top_k_accuracy") and callables ``f(y_true, y_pred) -> float``,
            logged per epoch (and with a "val_" prefix on validation data)
        callbacks : nnlayers.callbacks objects (a TerminateOnNaN is added
            unless one is given: a non-finite loss raises NonFiniteLossError
            naming the epoch and batch, that batch's update not applied)
        schedule : a learning-rate schedule on the optimizer
            (``nl.schedules``); an "epoch" schedule steps after each epoch,
            a "step" one after each batch (torch's order: batch 0 uses the
            rate the optimizer holds at the start), inside the C loop
        verbose : 0 silent, 1 a progress bar per epoch, 2 one line per epoch
        loss_weights : one weight per output (a list, or a dict by output
            name); the loss minimised is the weighted sum, as in Keras
        comm : data-parallel training over MPI (``nl.distributed.init()``):
            each rank trains on its rows (``shard="auto"``: its block of
            X), batch_size rows per rank per step, the gradients averaged
            over all ranks' rows; see docs/distributed.md
        """
        if comm is not None:
            from . import distributed

            return distributed.fit(
                self, X, y, comm, shard=shard, loss=loss, optimizer=optimizer,
                epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                validation_data=validation_data, verbose=verbose, loss_weights=loss_weights,
                callbacks=callbacks, validation_split=validation_split,
                sample_weight=sample_weight, class_weight=class_weight,
                initial_epoch=initial_epoch, metrics=metrics, schedule=schedule)
        if shard is not None:
            raise ValueError("shard= needs comm= (nl.distributed.init())")
        from . import callbacks as cbm
        from .metrics import c_metrics, resolve_metrics

        losses = self._losses(loss)
        weights = self._loss_weights(loss_weights)
        optimizer = _fit_optimizer(self, optimizer)
        epochs, initial_epoch = _check_epochs(epochs, initial_epoch)
        batch_size = _check_positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        cbs = _callback_list(callbacks)
        metric_list = resolve_metrics(metrics)
        summed = c_metrics(metric_list, len(self._output_names))
        # converted once, by the same C check as forward; a matching array
        # is used in place
        xs = list(X) if self._multi_in and isinstance(X, (list, tuple)) else [X]
        xs = [_core.as_input(a, self.dtype, "X") for a in xs]
        for a in xs:
            _core.check_finite(a, "X")
        n = xs[0].shape[0]
        ys = self._targets_list(y)
        val = _validation_pair(validation_data, validation_split)
        if validation_split:
            if validation_data is not None:
                raise ValueError("give validation_data or validation_split, not both")
            split = int(n * (1.0 - validation_split))
            if split < 1 or split >= n:
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{split} training and {n - split} validation rows of {n}")
            val = ([a[split:] for a in xs], [np.asarray(t)[split:] for t in ys])
            xs, ys, n = [a[:split] for a in xs], [np.asarray(t)[:split] for t in ys], split
            val = (val[0] if self._multi_in else val[0][0], val[1] if self._multi_out
                   else val[1][0])
        w = _row_weights(sample_weight, class_weight, ys, n, self.dtype, self._multi_out)
        if n == 0 and epochs > initial_epoch:
            raise ValueError("X has no rows: fit needs at least one sample")
        if epochs > initial_epoch:
            _check_batch_statistics(self, n, batch_size)
        loss_arg = losses if self._multi_out else losses[0]
        X_arg, y_arg = (xs if self._multi_in else xs[0]), (ys if self._multi_out else ys[0])
        if val is not None:   # checked now, not after the first epoch's updates
            vx = list(val[0]) if self._multi_in else [val[0]]
            self._check_data(vx if self._multi_in else vx[0], val[1], loss_arg,
                             "validation_data X", "validation_data y")
        if schedule is not None:
            _check_schedule(schedule, optimizer, epochs - initial_epoch,
                            (n + batch_size - 1) // batch_size)
        classify = [lf.is_classification for lf in losses]
        cbm.check_monitors(cbs, self._log_keys(classify, metric_list, val is not None))
        history = History({"epochs": epochs, "batch_size": batch_size, "samples": n})
        rng = np.random.default_rng(seed) if seed is None else None
        if seed is not None:
            self.seed = seed
        n_batches = (n + batch_size - 1) // batch_size
        per_batch = [cb for cb in cbs if cbm.wants_batches(cb)]
        self.optimizer, self.stop_training = optimizer, False
        for cb in cbs:
            cb.set_model(self)
            cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            order = _epoch_order(shuffle, rng, seed, epoch, n)
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            hyper = _step_plan(schedule, n_batches) if _per_step(schedule) else None
            bar, progress = self._progress(verbose, epoch, epochs, n, classify[0])
            on_batch = _batch_caller(per_batch) if per_batch else None
            t0 = time.perf_counter()
            try:
                loss_sum, seen, stopped, sums, correct, failed, msums = self._fit_epoch(
                    X_arg, y_arg, loss_arg, optimizer, batch_size, order=order,
                    progress=progress, loss_weights=weights, sample_weight=w, hyper=hyper,
                    on_batch=on_batch, metrics=summed)
            finally:
                if bar is not None:
                    bar.close()
            if _per_step(schedule):
                for _ in range(failed[0] if failed else n_batches):
                    schedule.step()
            if failed is not None:
                _nan_callback(cbs).on_nonfinite(epoch, failed[0], failed[1])
                if self.stop_training:
                    break
            logs = self._epoch_logs(loss_sum, seen, sums, correct, classify, metric_list,
                                    msums, X_arg, y_arg)
            if val is not None:
                v = self._evaluate_checked(val[0], val[1], loss_arg, metrics=metric_list,
                                           loss_weights=weights if self._multi_out else None)
                logs.update({"val_" + k: x for k, x in v.items()})
            if schedule is not None and not _per_step(schedule):
                schedule.step()
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            history._record(epoch, logs)
            if verbose == 2:
                dt = time.perf_counter() - t0
                text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {dt:.2f}s - {n / max(dt, 1e-12):,.0f} "
                      f"samples/s - {text}", flush=True)
            if stopped or self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end({})
        return history

    def _log_keys(self, classify, metric_list, validation):
        """The keys of fit's per-epoch logs (the order aside): those of
        _epoch_logs, and with validation their "val_" twins."""
        keys = ["loss"]
        for j, name in enumerate(self._output_names):
            prefix = f"{name}_" if self._multi_out else ""
            if self._multi_out:
                keys.append(prefix + "loss")
            if classify[j]:
                keys.append(prefix + "accuracy")
            keys += [prefix + m.name for m in metric_list if m.name != "accuracy"]
        return keys + ["val_" + k for k in keys] if validation else keys

    def _epoch_logs(self, loss_sum, seen, sums, correct, classify, metric_list, msums, X, y):
        """One epoch's training logs: the loss, each output's loss and
        accuracy (several outputs), and the metrics asked for."""
        from .metrics import epoch_metrics

        logs = {"loss": loss_sum / max(seen, 1)}
        if self._multi_out:
            for j, name in enumerate(self._output_names):
                logs[f"{name}_loss"] = sums[j] / max(seen, 1)
                if classify[j]:
                    logs[f"{name}_accuracy"] = correct[j] / max(seen, 1)
        elif classify[0]:
            logs["accuracy"] = correct[0] / max(seen, 1)
        logs.update(epoch_metrics(self, metric_list, X, y, msums, seen))
        return logs

    def _progress(self, verbose, epoch, epochs, n, classify):
        if verbose != 1:
            return None, None
        bar = _progress_bar(total=n, desc=f"Epoch {epoch + 1}/{epochs}", unit="sample",
                            unit_scale=True, leave=True)

        def progress(batch, n_batches, loss_sum, correct, seen):
            bar.update(seen - bar.n)
            post = {"loss": f"{loss_sum / max(seen, 1):.4f}"}
            if classify:
                post["acc"] = f"{correct / max(seen, 1):.3f}"
            bar.set_postfix(post, refresh=False)
            return False

        return bar, progress

    # ---- persistence
    def save(self, path, optimizer=None, comm=None):
        """Save the graph (JSON) and the parameters to an ``.npz`` file;
        with ``optimizer`` (e.g. ``model.optimizer`` after fit), its
        hyperparameters and state too: ``nl.load`` then gives back both
        (as ``model.optimizer``) and training resumes exactly. With
        ``comm`` (or inside a distributed fit), rank 0 writes and every
        rank waits for it."""
        from .distributed import root_only
        from .io import save

        root_only(self, lambda: save(self, path, optimizer=optimizer), comm)

    # ---- PyTorch weight exchange (nnlayers/torch_io.py)
    def state_dict(self, tensors=False):
        """Copies of every parameter and buffer in torch's names and layout
        (an OrderedDict): ``N.weight`` (out, in) and ``N.bias`` of a Linear,
        BatchNorm's ``running_mean``, ``running_var`` and
        ``num_batches_tracked``, ... NumPy arrays, or torch tensors with
        ``tensors=True``. A torch module of the same structure takes it."""
        from .torch_io import state_dict

        return state_dict(self, tensors)

    def load_state_dict(self, state_dict, strict=True):
        """Copy a state dict in torch's names and layout (NumPy arrays or
        torch tensors) into the model; everything is checked before
        anything is written. Returns (missing_keys, unexpected_keys)."""
        from .torch_io import load_state_dict

        return load_state_dict(self, state_dict, strict)

    def to_torch(self):
        """An equal ``torch.nn.Sequential`` (a chain only); see
        ``nnlayers.torch_io.to_torch``."""
        from .torch_io import to_torch

        return to_torch(self)

    def __reduce__(self):
        from .io import _rebuild, python_classes, to_archive

        arch, arrays = to_archive(self)
        return (_rebuild, (arch, arrays, python_classes(self)))

    def astype(self, dtype):
        """An independent copy of the model computing in ``dtype``
        (numpy.float32 or numpy.float64), its values converted: e.g. a
        float64 copy for ``nl.gradcheck`` (float32 cannot pass a
        finite-difference check)."""
        from .io import _rebuild, python_classes, to_archive

        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"astype takes numpy.float32 or numpy.float64, got {dtype}")
        arch, arrays = to_archive(self)
        arch["dtype"] = dtype.name
        for obj in arch["objects"]:
            if obj["type"] == "layer" and "dtype" in obj["config"]:
                obj["config"]["dtype"] = dtype.name
            if obj["type"] == "layer" and obj.get("dtype") is not None:   # Python layers
                obj["dtype"] = dtype.name
            elif obj["type"] == "model":
                obj["inputs"] = [[w, None if d is None else dtype.name, n]
                                 for w, d, n in obj["inputs"]]
        return _rebuild(arch, {k: v.astype(dtype) for k, v in arrays.items()},
                        python_classes(self))


# ---------------------------------------------------------------- Sequential

def _chain_input_width(items):
    """The input width a chain takes: that of its first layer with a fixed
    input width, when every layer before it keeps the width; else None."""
    for obj in items:
        if isinstance(obj, Model):
            widths = obj._input_widths
            return widths[0] if len(widths) == 1 else None
        if obj.in_features is not None:
            return obj.in_features
    return None


class Sequential(Model):
    """A chain of layers: ``Sequential(Linear(2, 2), ReLU(), Linear(2, 1))``.

    The chain case of :class:`Model` (the same engine and methods). A
    layer may appear more than once (its parameters are shared); a model
    inside is called as one layer. ``model[i]``, ``len(model)`` and
    iteration give the items in order; parameters are named by position
    ("0.W", "2.b").
    """

    _default_name = "sequential"

    def __init__(self, *layers, name=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, obj in enumerate(layers):
            if not isinstance(obj, (_core.Layer, Model)):
                raise TypeError(f"Sequential takes layers or models; argument {i} is "
                                f"{type(obj).__name__}")
            if isinstance(obj, Model) and (len(obj._spec.inputs) != 1 or
                                           len(obj._spec.outputs) != 1):
                raise ValueError(f"argument {i} ({obj.name!r}) has several inputs or "
                                 f"outputs; a Sequential chains models of one each")
        objects, names, index, nodes = [], [], {}, []
        for i, obj in enumerate(layers):
            if id(obj) not in index:
                index[id(obj)] = len(objects)
                objects.append(obj)
                names.append(str(i))
            nodes.append((index[id(obj)], [(INPUT, 0) if i == 0 else (i - 1, 0)]))
        spec = _Spec([(None, None, "input")], objects, names, nodes, [(len(layers) - 1, 0)])
        width = _chain_input_width(layers)
        if width is not None:   # the chain's widths checked now, not at the first call
            _widths_of(spec, [width], lambda k: f"layer {k}")
        self._items = tuple(layers)
        self._multi_in = self._multi_out = False
        self._output_names = ["output"]
        self._build(spec, name)

    @classmethod
    def _from_spec(cls, spec, name, multi_in=None, multi_out=None, output_names=None):
        self = super()._from_spec(spec, name, False, False, ["output"])
        self._items = tuple(spec.objects[oi] for oi, _ in spec.nodes)
        return self

    @staticmethod
    def _node_text(name):
        return f"layer {name}"

    @property
    def layers(self):
        """The items of the chain, in order."""
        return self._items

    def __getitem__(self, index):
        return self._items[index]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        lines = [f"  ({i}): {obj!r}" for i, obj in enumerate(self._items)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

