"""Optimizers: the Python face of the C ``Optimizer`` type.

An optimizer updates the parameter tensors it was given, in groups of
hyperparameters (as in ``torch.optim``), with its state in one block it
owns. The update rules are C kernels (``csrc/core``: sgd.c, adam.c,
rmsprop.c, adagrad.c, and clip.c for gradient clipping); a model's
``train_step`` and ``fit`` apply them inside the C training step, and
``step()`` applies them to the gradients a ``backward`` left.

What state each parameter keeps is the core's to say (``_state_layout``):
``state_dict`` and ``load_state_dict`` read and write it by torch's state
names (``exp_avg``, ``momentum_buffer``, ...).
"""
import numpy as np

from . import _core

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

_STATE_KEYS = ("kind", "steps", "clip_norm", "clip_value", "state", "param_groups")


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


def _view_tensor(arr, where):
    """(layer, tensor index) of a parameter view: an ndarray whose base is
    the layer, with the data pointer and shape of one of its parameters."""
    owner = arr.base
    while isinstance(owner, np.ndarray):      # a view of a view
        owner = owner.base
    if not isinstance(owner, _core.Layer):
        raise ValueError(f"{where} is an ndarray that is not an nnlayers parameter; take "
                         f"parameters from layer.params[...], model.parameters()[...] or "
                         f"model.named_parameters()")
    ptr = arr.__array_interface__["data"][0]
    for t, v in enumerate(owner.params.values()):
        if (v.__array_interface__["data"][0] == ptr and v.shape == arr.shape
                and v.dtype == arr.dtype):
            return owner, t
    raise ValueError(f"{where} is an ndarray in {owner!r}'s memory but not one of its "
                     f"parameters (a slice, or a view taken before the layer joined a "
                     f"model); pass the whole parameter from layer.params[...] or "
                     f"model.parameters()[...]")


def _group_tensors(params, gi):
    """(layer, tensor index) of every parameter in a group's params: models,
    layers (all their parameters) and parameter views, in order."""
    if isinstance(params, (_core.Model, _core.Layer)):
        items = [params]
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError(f"params must be a model, a layer, an iterable of layers or "
                            f"parameters, or a list of parameter groups, got "
                            f"{type(params).__name__}") from None
    out = []
    for i, it in enumerate(items):
        where = f"params: item {i}" if gi is None else f"parameter group {gi}: item {i}"
        if isinstance(it, np.ndarray):
            out.append(_view_tensor(it, where))
        elif isinstance(it, (_core.Model, _core.Layer)):
            out.extend((layer, t) for layer in _leaves(it) for t in range(len(layer.params)))
        else:
            raise TypeError(f"{where} is {type(it).__name__}, not an nnlayers layer or model "
                            f"(nor a parameter view)")
    return out


def _hyper(d):
    """A group's hyperparameters with betas=(b1, b2) as beta1, beta2."""
    d = dict(d)
    if "betas" in d:
        betas = d.pop("betas")
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        for name, v in (("beta1", b1), ("beta2", b2)):
            if name in d and d[name] != v:
                raise ValueError(f"betas and {name} disagree: {betas!r}, {name}={d[name]!r}")
            d[name] = v
    return d


def _segments(params, defaults):
    """(segments, groups) for the C optimizer: every trained tensor of the
    layers in params, one group, or torch-style parameter groups."""
    is_groups = (isinstance(params, (list, tuple)) and params
                 and all(isinstance(g, dict) for g in params))
    groups_in = params if is_groups else [{"params": params}]
    segments, groups, seen = [], [], {}
    for gi, g in enumerate(groups_in):
        if "params" not in g:
            raise TypeError(f"parameter group {gi} has no 'params'")
        hyper = dict(defaults)
        hyper.update(_hyper({k: v for k, v in g.items() if k != "params"}))
        groups.append(hyper)
        for layer, t in _group_tensors(g["params"], gi if is_groups else None):
            key = (id(layer), t)
            if key in seen:
                if seen[key] != gi:
                    name = list(layer.params)[t]
                    raise ValueError(f"{layer!r}'s {name} is in parameter groups "
                                     f"{seen[key]} and {gi}: each parameter can be in one "
                                     f"group only")
                continue
            seen[key] = gi
            segments.append((layer, t, gi))
    return segments, groups


class Optimizer(_core.Optimizer):
    """Base class of the optimizers: ``step()``, ``zero_grad()``, ``lr``,
    ``param_groups``, ``set_hyper``, ``clip_norm``, ``clip_value``,
    ``state_dict()``, ``load_state_dict()``. Subclasses name their kind and
    defaults."""

    _kind = None
    _shown = ()

    def __init__(self, params, *, clip_norm=None, clip_value=None, **defaults):
        segments, groups = _segments(params, _hyper(defaults))
        super().__init__(self._kind, segments, groups, clip_norm, clip_value)

    def _public_group(self, i):
        g = self._group(i)
        if "beta1" in g:
            g["betas"] = (g["beta1"], g["beta2"])
        return g

    @property
    def param_groups(self):
        """Each group's hyperparameters (a copy; set them with
        ``set_hyper`` or ``lr``). Adam's and AdamW's show ``betas`` and also
        ``beta1``, ``beta2``."""
        return [self._public_group(i) for i in range(self._n_groups)]

    def set_hyper(self, name, value, group=None):
        """Set a hyperparameter of one group (or of every group), all or
        nothing. ``"betas"`` takes a pair."""
        groups = range(self._n_groups) if group is None else [group]
        pairs = list(_hyper({name: value}).items())
        old = {i: self._group(i) for i in groups}
        try:
            for i in groups:
                for k, v in pairs:
                    self._set_group(i, k, v)
        except Exception:
            for i, g in old.items():
                for k, _ in pairs:
                    if k in g:
                        self._set_group(i, k, g[k])
            raise

    @property
    def lr(self):
        """The learning rate of the first group; setting it sets every group's."""
        return self._group(0)["lr"]

    @lr.setter
    def lr(self, value):
        self.set_hyper("lr", value)

    def get_config(self):
        g = self._public_group(0)
        cfg = {k: g[k] for k in self._shown}
        for k in ("clip_norm", "clip_value"):
            if getattr(self, k) is not None:
                cfg[k] = getattr(self, k)
        return cfg

    def __repr__(self):
        cfg = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({cfg}, layers={len(self.layers)})"

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} objects are tied to their layers' memory and "
                        f"do not pickle; make a new one for the copied model")

    # ---- state_dict ----

    def _segment_state(self):
        """Per segment: (name of its parameter, shape, offset, state names)."""
        return [(f"{layer.name}.{tname}", layer.params[tname].shape, off, names)
                for (layer, tname, _), (off, names) in zip(self._segments,
                                                            self._state_layout())]

    def state_dict(self):
        """The optimizer's state as torch's ``state_dict``: copies of every
        state array by parameter index (``state[k]`` for the k-th parameter
        it holds, e.g. ``{"exp_avg": ..., "exp_avg_sq": ...}`` for Adam),
        the groups' hyperparameters with the indices of their parameters,
        the step count and the clipping::

            {"kind": "adam", "steps": 20, "clip_norm": None, "clip_value": None,
             "state": {0: {"exp_avg": array, "exp_avg_sq": array}, ...},
             "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ...,
                               "params": [0, 1, ...]}, ...]}
        """
        block = self._state_view()
        state = {}
        for k, (_, shape, off, names) in enumerate(self._segment_state()):
            n = int(np.prod(shape))
            state[k] = {name: np.array(block[off + j * n: off + (j + 1) * n]).reshape(shape)
                        for j, name in enumerate(names)}
        groups = self.param_groups
        for i, g in enumerate(groups):
            g["params"] = [k for k, seg in enumerate(self._segments) if seg[2] == i]
        return {"kind": self._kind, "steps": self._steps, "clip_norm": self.clip_norm,
                "clip_value": self.clip_value, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict()`` of an optimizer of the same kind over
        parameters of the same shapes in the same groups: hyperparameters,
        state (bitwise), step count and clipping. Everything is checked
        before anything changes; a bad state_dict raises ``ValueError`` or
        ``TypeError`` naming the entry and leaves the optimizer as it was."""
        d = state_dict
        if not isinstance(d, dict):
            raise TypeError(f"state_dict must be a dict from an optimizer's state_dict(), "
                            f"got {type(d).__name__}")
        missing = [k for k in _STATE_KEYS if k not in d]
        extra = sorted(str(k) for k in d if k not in _STATE_KEYS)
        if missing or extra:
            raise ValueError(f"state_dict: missing keys {missing}, unknown keys {extra}; "
                             f"it needs exactly {list(_STATE_KEYS)}")
        if d["kind"] != self._kind:
            raise ValueError(f"state_dict: kind is {d['kind']!r}, this optimizer is "
                             f"{self._kind!r}")
        groups = self._load_groups(d["param_groups"])
        block = self._load_block(d["state"])
        self._load_state(groups, block, d["steps"], d["clip_norm"], d["clip_value"])

    def _load_groups(self, groups):
        """The hyperparameter dicts of a state_dict's param_groups, checked
        against this optimizer's groups (the C side checks the values)."""
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict)
                                                            for g in groups):
            raise TypeError("state_dict: param_groups must be a list of dicts")
        if len(groups) != self._n_groups:
            raise ValueError(f"state_dict: param_groups has {len(groups)} groups, this "
                             f"optimizer {self._n_groups}")
        out = []
        for i, g in enumerate(groups):
            want = [k for k, seg in enumerate(self._segments) if seg[2] == i]
            got = g.get("params")
            if not isinstance(got, (list, tuple)) or list(got) != want:
                raise ValueError(f"state_dict: param_groups[{i}] holds parameters {got!r}, "
                                 f"this optimizer's group {i} holds {want}")
            try:
                out.append(_hyper({k: v for k, v in g.items() if k != "params"}))
            except (TypeError, ValueError) as e:
                raise type(e)(f"state_dict: param_groups[{i}]: {e}") from None
        return out

    def _load_block(self, state):
        """A state_dict's state as one block in this optimizer's layout (None
        without state), every name, shape and dtype checked."""
        layout = self._segment_state()
        if not isinstance(state, dict):
            raise TypeError("state_dict: state must be a dict {parameter index: {name: "
                            "array}}")
        keys = sorted(state, key=repr)
        if set(state) != set(range(len(layout))) or any(type(k) is not int for k in keys):
            raise ValueError(f"state_dict: state has entries {keys}, this optimizer has "
                             f"parameters 0 .. {len(layout) - 1}")
        view = self._state_view()
        if view is None:
            block = None
        else:
            block = np.empty(len(view), dtype=view.dtype)
        for k, (pname, shape, off, names) in enumerate(layout):
            entry = state[k]
            where = f"state_dict: state[{k}] ({pname})"
            if not isinstance(entry, dict) or sorted(entry) != sorted(names):
                got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(f"{where} holds {got}, this optimizer keeps {list(names)}")
            n = int(np.prod(shape))
            for j, name in enumerate(names):
                a = entry[name]
                if not isinstance(a, np.ndarray) or a.dtype != self.dtype:
                    got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                    raise TypeError(f"{where}[{name!r}] must be a {np.dtype(self.dtype)} "
                                    f"array, got {got}")
                if a.shape != shape:
                    raise ValueError(f"{where}[{name!r}] has shape {a.shape}, the parameter "
                                     f"{shape}")
                block[off + j * n: off + (j + 1) * n] = a.reshape(-1)
        return block


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay.

    ``SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, *,
    clip_norm=None, clip_value=None)`` takes a model, a layer, an iterable
    of layers or parameters, or parameter groups
    (``[{"params": layers, "weight_decay": 0.0}, ...]``, as in torch). The
    update rules are torch.optim.SGD's (dampening 0), for each parameter θ
    with gradient g:

        g ← g + λ θ                  (weight_decay λ: the L2 term λΩ(θ), Ω = ½‖θ‖²)
        v ← μ v + g                  (momentum μ > 0; v starts at 0)
        g ← g + μ v  if nesterov else  v
        θ ← θ − η g                  (lr η)

    Layers with ``trainable = False`` are never changed. The momentum state
    (``momentum_buffer``) lives in one block owned by the optimizer.
    ``step()`` applies one update; ``zero_grad()`` zeroes the gradients it
    uses. Clipping: see ``Optimizer`` and docs/api.md.
    """

    _kind = "sgd"
    _shown = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, *,
                 clip_norm=None, clip_value=None):
        super().__init__(params, clip_norm=clip_norm, clip_value=clip_value, lr=lr,
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

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


class Adam(Optimizer):
    """Adam (torch.optim.Adam's rules, maximize=False).

    ``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    amsgrad=False, *, eps_hat=False, clip_norm=None, clip_value=None)``. For each parameter
    θ with gradient g, at step t (1 for the first step):

        g ← g + λ θ                         (weight_decay λ, L2)
        m ← m + (1 − β₁)(g − m)             (torch's lerp; m starts at 0)
        v ← β₂ v + (1 − β₂) g²              (v starts at 0)
        v̂ ← max(v̂, v) if amsgrad else v
        θ ← θ − η / (1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

    ``eps_hat=True`` (not in torch) adds ε after the bias correction, as
    scikit-learn's and Keras's Adam do: the last line's ε becomes
    ε / √(1 − β₂ᵗ), i.e. θ ← θ − η √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v̂ + ε).
    ``nnlayers.sklearn`` uses it.

    State per parameter: ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with
    amsgrad, ``max_exp_avg_sq``. t counts the optimizer's steps.
    """

    _kind = "adam"
    _shown = ("lr", "betas", "eps", "weight_decay", "amsgrad")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, eps_hat=False, clip_norm=None, clip_value=None):
        super().__init__(params, clip_norm=clip_norm, clip_value=clip_value, lr=lr,
                         betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         eps_hat=eps_hat)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (torch.optim.AdamW's rules).

    ``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=1e-2, amsgrad=False, *, eps_hat=False, clip_norm=None,
    clip_value=None)``.
    For each parameter θ with gradient g, at step t:

        θ ← θ (1 − η λ)                     (weight_decay λ, decoupled: first)
        m ← m + (1 − β₁)(g − m)
        v ← β₂ v + (1 − β₂) g²
        v̂ ← max(v̂, v) if amsgrad else v
        θ ← θ − η / (1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

    State and ``eps_hat`` as Adam's.
    """

    _kind = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, eps_hat=False, clip_norm=None, clip_value=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, eps_hat=eps_hat, clip_norm=clip_norm,
                         clip_value=clip_value)


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop's rules, maximize=False).

    ``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
    momentum=0.0, centered=False, *, clip_norm=None, clip_value=None)``.
    For each parameter θ with gradient g:

        g ← g + λ θ                         (weight_decay λ, L2)
        s ← α s + (1 − α) g²                (s starts at 0)
        centered:  a ← a + (1 − α)(g − a);  d ← √(s − a²) + ε
        else:      d ← √s + ε
        momentum μ > 0:  b ← μ b + g / d;  θ ← θ − η b
        else:            θ ← θ − η g / d

    State per parameter: ``square_avg`` (s), ``momentum_buffer`` (b) when
    μ > 0, ``grad_avg`` (a) when centered.
    """

    _kind = "rmsprop"
    _shown = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, clip_norm=None, clip_value=None):
        super().__init__(params, clip_norm=clip_norm, clip_value=clip_value, lr=lr,
                         alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered)


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad's rules for dense gradients).

    ``Adagrad(params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
    initial_accumulator_value=0.0, eps=1e-10, *, clip_norm=None,
    clip_value=None)``. For each parameter θ with gradient g, at step t:

        g ← g + λ θ                         (weight_decay λ, L2)
        η_t = η / (1 + (t − 1) lr_decay)
        S ← S + g²                          (S starts at initial_accumulator_value)
        θ ← θ − η_t g / (√S + ε)

    State per parameter: ``sum`` (S).
    """

    _kind = "adagrad"
    _shown = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, clip_norm=None,
                 clip_value=None):
        super().__init__(params, clip_norm=clip_norm, clip_value=clip_value, lr=lr,
                         lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)


# the classes save/load knows by name
OPTIMIZERS = (SGD, Adam, AdamW, RMSprop, Adagrad)
