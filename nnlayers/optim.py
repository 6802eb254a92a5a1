"""Optimizers: the Python face of the C ``Optimizer`` type.

An optimizer updates the parameter tensors it was given, in groups of
hyperparameters (as in ``torch.optim``), with its state in one block it
owns. The update rules are C kernels (``csrc/core``); a model's
``train_step`` and ``fit`` apply them inside the C training step.
"""
from . import _core

__all__ = ["Optimizer", "SGD"]


def _leaves(obj):
    """The layers of a model, a layer, or an iterable of them, in order."""
    if isinstance(obj, _core.Model):
        return list(obj._flat_layers)
    if isinstance(obj, _core.Layer):
        return [obj]
    try:
        items = list(obj)
    except TypeError:
        raise TypeError(f"params must be a model, a layer, an iterable of layers or a list "
                        f"of parameter groups, got {type(obj).__name__}") from None
    out = []
    for i, it in enumerate(items):
        if isinstance(it, (_core.Model, _core.Layer)):
            out.extend(_leaves(it))
        else:
            raise TypeError(f"params: item {i} is {type(it).__name__}, not an nnlayers "
                            f"layer or model")
    return out


def _segments(params, defaults):
    """(segments, groups) for the C optimizer: every trained tensor of the
    layers in params, one group, or torch-style parameter groups."""
    groups_in = params if (isinstance(params, (list, tuple)) and params
                           and all(isinstance(g, dict) for g in params)) else [{"params": params}]
    segments, groups, seen = [], [], set()
    for gi, g in enumerate(groups_in):
        if "params" not in g:
            raise TypeError(f"parameter group {gi} has no 'params'")
        hyper = dict(defaults)
        hyper.update({k: v for k, v in g.items() if k != "params"})
        groups.append(hyper)
        for layer in _leaves(g["params"]):
            for t, name in enumerate(layer.params):
                if (id(layer), t) in seen:
                    continue
                seen.add((id(layer), t))
                segments.append((layer, t, gi))
    return segments, groups


class Optimizer(_core.Optimizer):
    """Base class of the optimizers: ``step()``, ``zero_grad()``, ``lr``,
    ``param_groups``. Subclasses name their kind and defaults."""

    _kind = None

    def __init__(self, params, **defaults):
        segments, groups = _segments(params, defaults)
        super().__init__(self._kind, segments, groups)

    @property
    def param_groups(self):
        """Each group's hyperparameters (a copy; set them with
        ``set_hyper`` or ``lr``)."""
        return [self._group(i) for i in range(self._n_groups)]

    def set_hyper(self, name, value, group=None):
        """Set a hyperparameter of one group (or of every group)."""
        for i in range(self._n_groups) if group is None else [group]:
            self._set_group(i, name, value)

    @property
    def lr(self):
        """The learning rate of the first group; setting it sets every group's."""
        return self._group(0)["lr"]

    @lr.setter
    def lr(self, value):
        groups = [self._group(i) for i in range(self._n_groups)]
        try:
            self.set_hyper("lr", value)
        except Exception:
            for i, g in enumerate(groups):   # all or nothing
                self._set_group(i, "lr", g["lr"])
            raise

    def get_config(self):
        return {k: v for k, v in self._group(0).items() if k in self._shown}

    def __repr__(self):
        cfg = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({cfg}, layers={len(self.layers)})"

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} objects are tied to their layers' memory and "
                        f"do not pickle; make a new one for the copied model")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay.

    ``SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0)``
    takes a model, a layer, an iterable of layers, or parameter groups
    (``[{"params": layers, "weight_decay": 0.0}, ...]``, as in torch). The
    update rules are torch.optim.SGD's (dampening 0), for each parameter θ
    with gradient g:

        g ← g + λ θ                  (weight_decay λ: the L2 term λΩ(θ), Ω = ½‖θ‖²)
        v ← μ v + g                  (momentum μ > 0; v starts at 0)
        g ← g + μ v  if nesterov else  v
        θ ← θ − η g                  (lr η)

    Layers with ``trainable = False`` are never changed. The momentum state
    lives in one block owned by the optimizer. ``step()`` applies one
    update; ``zero_grad()`` zeroes the gradients it uses.
    """

    _kind = "sgd"
    _shown = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    @property
    def momentum(self):
        return self._group(0)["momentum"]

    @property
    def nesterov(self):
        return self._group(0)["nesterov"]

    @property
    def weight_decay(self):
        return self._group(0)["weight_decay"]

    def _velocity(self):
        """1-D view of the momentum block (None without momentum)."""
        return self._state_view()

