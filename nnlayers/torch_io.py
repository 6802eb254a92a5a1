"""PyTorch weight exchange: state dicts in torch's names and layout,
``from_torch`` and ``to_torch``.

nnlayers stores a Linear's weight as ``W`` (in, out) (``y = x W + b``);
torch stores ``weight`` (out, in) (``y = x weightᵀ + bias``). The state
dict here is torch's: for each layer under its model name ("0", "2",
"encoder.1"), ``N.weight`` (out, in) and ``N.bias`` for Linear;
``N.weight``, ``N.bias``, ``N.running_mean``, ``N.running_var`` and
``N.num_batches_tracked`` (int64, shape ()) for BatchNorm; ``N.weight``
and ``N.bias`` for LayerNorm; a layer written in Python keeps its own
tensor names. So the state dict of ``Sequential(Linear, ReLU, Linear)``
has the keys of torch's ``nn.Sequential(nn.Linear, nn.ReLU, nn.Linear)``.

torch is imported only by ``from_torch``, ``to_torch`` and
``state_dict(tensors=True)`` (the ``nnlayers[torch]`` extra).
"""
from collections import OrderedDict, namedtuple

import numpy as np

__all__ = ["state_dict", "load_state_dict", "from_torch", "to_torch", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _import_torch(what):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch: pip install \"nnlayers[torch]\"") from None
    return torch


# ---------------------------------------------------------------- the mapping
# (torch name, nnlayers tensor name, how): how is "T" (transposed), "count"
# (num_batches_tracked: nnlayers (1,) float, torch () int64) or None

_TORCH_NAMES = {
    "linear": (("weight", "W", "T"), ("bias", "b", None)),
    "batchnorm": (("weight", "gamma", None), ("bias", "beta", None),
                  ("running_mean", "running_mean", None), ("running_var", "running_var", None),
                  ("num_batches_tracked", "num_batches_tracked", "count")),
    "layernorm": (("weight", "gamma", None), ("bias", "beta", None)),
}


def _entries(model):
    """(torch key, layer, nnlayers tensor name, how) for every tensor of
    every distinct layer, in the model's order."""
    from .model import Model

    if not isinstance(model, Model):
        raise TypeError(f"expected an nl.Model or nl.Sequential, got {type(model).__name__}")
    for prefix, layer in _leaves(model, ""):
        tensors = {**layer.params, **layer.buffers}
        if layer.kind in _TORCH_NAMES:
            for tname, nname, how in _TORCH_NAMES[layer.kind]:
                if nname in tensors:
                    yield f"{prefix}.{tname}", layer, nname, how
        else:   # a layer written in Python: its own names
            for nname in tensors:
                yield f"{prefix}.{nname}", layer, nname, None


def _leaves(model, prefix):
    """(name, layer) of every layer by its place, as torch names modules:
    a layer at two places of a chain comes under both names (torch's
    state_dict lists a shared module under each), nested models expanded."""
    from .model import Model, Sequential

    if isinstance(model, Sequential):
        items = [(str(i), obj) for i, obj in enumerate(model._items)]
    else:
        items = list(zip(model._spec.names, model._spec.objects))
    for name, obj in items:
        if isinstance(obj, Model):
            yield from _leaves(obj, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", obj


def _view(layer, name):
    return layer.params[name] if name in layer.params else layer.buffers[name]


def _to_torch_layout(value, how):
    if how == "T":
        return np.ascontiguousarray(value.T)
    if how == "count":
        return np.array(int(value[0]), dtype=np.int64)
    return np.array(value)


def state_dict(model, tensors=False):
    """An OrderedDict of copies of every parameter and buffer in torch's
    names and layout (see the module's docstring); ``tensors=True`` gives
    ``torch.Tensor`` values instead of NumPy arrays (what torch's
    ``load_state_dict`` takes)."""
    d = OrderedDict((key, _to_torch_layout(_view(layer, name), how))
                    for key, layer, name, how in _entries(model))
    if tensors:
        torch = _import_torch("state_dict(tensors=True)")
        d = OrderedDict((k, torch.from_numpy(v)) for k, v in d.items())
    return d


def _as_array(value, key):
    """A NumPy array of value (an array, a torch tensor, a number)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"load_state_dict: {key!r} must hold real numbers, got dtype "
                        f"{arr.dtype}")
    return arr


def _converted(arr, key, view, how):
    """arr (torch layout) as an array of view's shape; ValueError naming
    the key, both shapes and the layout when they do not fit."""
    if how == "T":
        want = view.shape[::-1]
        if arr.shape != want:
            hint = ""
            if arr.shape == view.shape:
                hint = (" — it looks transposed: nnlayers' own W is (in_features, "
                        "out_features); pass W.T, or use model.state_dict() to get "
                        "torch's layout")
            raise ValueError(f"load_state_dict: {key!r} has shape {arr.shape}, expected "
                             f"{want} in torch's layout (out_features, in_features){hint}")
        return arr.T
    if how == "count":
        if arr.size != 1:
            raise ValueError(f"load_state_dict: {key!r} must be one count (torch's shape ()), "
                             f"got shape {arr.shape}")
        return arr.reshape(1)
    if arr.shape != view.shape:
        raise ValueError(f"load_state_dict: {key!r} has shape {arr.shape}, expected "
                         f"{view.shape}")
    return arr


def load_state_dict(model, state_dict, strict=True):
    """Copy a state dict in torch's names and layout (NumPy arrays or torch
    tensors; e.g. torch's ``module.state_dict()``) into ``model``.

    ``strict=True``: the keys must be exactly the model's (ValueError
    listing the missing and unexpected ones). Every key, shape and dtype is
    checked before anything is written, so a bad state dict changes
    nothing. Returns ``(missing_keys, unexpected_keys)`` as torch does.
    """
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"load_state_dict: state_dict must be a mapping of names to arrays "
                        f"or tensors, got {type(state_dict).__name__}")
    entries = list(_entries(model))
    expected = [e[0] for e in entries]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict.keys() if k not in set(expected)]
    if strict and (missing or unexpected):
        raise ValueError(f"load_state_dict: the keys do not match the model's (strict=True): "
                         f"missing {missing}, unexpected {unexpected}; the model's keys are "
                         f"{expected} (torch's names: N.weight (out, in), N.bias, ...)")
    writes = []
    for key, layer, name, how in entries:
        if key in state_dict:
            view = _view(layer, name)
            writes.append((layer, name, _converted(_as_array(state_dict[key], key), key,
                                                   view, how)))
    model._check_idle()
    for layer, name, arr in writes:
        np.copyto(_view(layer, name), arr, casting="unsafe")
    return IncompatibleKeys(missing, unexpected)


# ---------------------------------------------------------------- from torch

def _np_dtype(torch, module, dtype):
    """The model's dtype: `dtype`, else that of the module's floating
    tensors (float32 when it has none)."""
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"from_torch: dtype must be numpy.float32 or numpy.float64, "
                            f"got {dtype}")
        return dtype
    found = {t.dtype for t in list(module.parameters()) + list(module.buffers())
             if t.is_floating_point()}
    table = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
    if not found:
        return np.dtype(np.float32)
    if len(found) > 1 or not found <= set(table):
        raise TypeError(f"from_torch: the module's tensors have dtypes "
                        f"{sorted(map(str, found))}; nnlayers computes in one of float32 "
                        f"and float64: convert the module first (module.float() or "
                        f"module.double()) or pass dtype=")
    return table[found.pop()]


def _copy_from_torch(layer, module, where):
    """Copy module's tensors into layer (names from _TORCH_NAMES)."""
    for tname, nname, how in _TORCH_NAMES[layer.kind]:
        t = getattr(module, tname, None)
        if t is None:
            continue
        arr = t.detach().cpu().numpy()
        view = _view(layer, nname)
        np.copyto(view, _converted(arr, f"{where}.{tname}", view, how), casting="unsafe")


def _from_module(torch, m, dtype, where, cache):
    """The nnlayers layer (or Sequential) for torch module m."""
    import nnlayers as nl

    nn = torch.nn
    if id(m) in cache:          # a module used twice stays one (shared) layer
        return cache[id(m)]
    t = type(m)
    simple = {nn.ReLU: nl.ReLU, nn.Sigmoid: nl.Sigmoid, nn.Tanh: nl.Tanh, nn.SiLU: nl.SiLU,
              nn.Softsign: nl.Softsign, nn.Identity: nl.Identity}
    if t in simple:
        layer = simple[t](dtype=dtype)
    elif t is nn.Sequential:
        layer = nl.Sequential(*[_from_module(torch, c, dtype, f"{where}[{i}]", cache)
                                for i, c in enumerate(m)])
    elif t is nn.Linear:
        layer = nl.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=dtype)
    elif t is nn.LeakyReLU:
        layer = nl.LeakyReLU(m.negative_slope, dtype=dtype)
    elif t is nn.GELU:
        layer = nl.GELU(m.approximate, dtype=dtype)
    elif t is nn.ELU:
        layer = nl.ELU(m.alpha, dtype=dtype)
    elif t in (nn.Hardtanh, nn.ReLU6):
        layer = nl.Hardtanh(m.min_val, m.max_val, dtype=dtype)
    elif t is nn.Softplus:
        if m.beta != 1:
            raise ValueError(f"from_torch: {where} is Softplus(beta={m.beta}); nnlayers' "
                             f"Softplus has beta=1")
        layer = nl.Softplus(dtype=dtype)
    elif t in (nn.Softmax, nn.LogSoftmax):
        if m.dim not in (-1, 1):
            raise ValueError(f"from_torch: {where} is {t.__name__}(dim={m.dim}); nnlayers' "
                             f"works over the features of each row (dim=-1 or 1)")
        layer = (nl.Softmax if t is nn.Softmax else nl.LogSoftmax)(dtype=dtype)
    elif t is nn.Dropout:
        layer = nl.Dropout(m.p, dtype=dtype)
    elif t is nn.BatchNorm1d:
        layer = nl.BatchNorm(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                             track_running_stats=m.track_running_stats, dtype=dtype)
    elif t is nn.LayerNorm:
        if len(m.normalized_shape) != 1 or (m.elementwise_affine and m.bias is None):
            raise ValueError(f"from_torch: {where} is {m!r}; nnlayers' LayerNorm normalises "
                             f"one feature axis, with both weight and bias or neither")
        layer = nl.LayerNorm(m.normalized_shape[0], eps=m.eps,
                             elementwise_affine=m.elementwise_affine, dtype=dtype)
    else:
        raise TypeError(f"from_torch: {where} is {t.__module__}.{t.__name__}, which has no "
                        f"nnlayers layer; supported: {', '.join(_SUPPORTED_TORCH)}")
    if getattr(layer, "kind", None) in _TORCH_NAMES:
        _copy_from_torch(layer, m, where)
    cache[id(m)] = layer
    return layer


_SUPPORTED_TORCH = ("Sequential", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
                    "Softplus (beta=1)", "GELU", "SiLU", "ELU", "Softsign", "Hardtanh",
                    "ReLU6", "Softmax (dim=-1)", "LogSoftmax (dim=-1)", "Identity", "Dropout",
                    "BatchNorm1d", "LayerNorm (one feature axis)")


def from_torch(module, dtype=None):
    """An nnlayers ``Sequential`` equal to a ``torch.nn.Sequential`` of
    supported modules (Linear, the activations nnlayers has, Dropout,
    BatchNorm1d, LayerNorm, nested Sequential), with copies of its weights
    and buffers, in its mode (train/eval).

    dtype : None (the module's: float32 or float64) or the dtype to
        convert to. A module used twice becomes one shared layer.

    torch's Softplus returns ``x`` where ``x > threshold`` (20); nnlayers
    computes ``log(1 + e^x)`` there too (a difference below 3e-9).
    """
    torch = _import_torch("nl.from_torch")
    if type(module) is not torch.nn.Sequential:
        raise TypeError(f"from_torch takes a torch.nn.Sequential, got "
                        f"{type(module).__name__}; wrap a module: torch.nn.Sequential(module)")
    dtype = _np_dtype(torch, module, dtype)
    model = _from_module(torch, module, dtype, "module", {})
    return model.train(module.training)


# ---------------------------------------------------------------- to torch

def _to_module(torch, item, tdtype, where, cache):
    """The torch module for an nnlayers layer or nested Sequential."""
    from .model import Model, Sequential

    nn = torch.nn
    if id(item) in cache:
        return cache[id(item)]
    if isinstance(item, Model):
        if not isinstance(item, Sequential):
            raise TypeError(f"to_torch: {where} ({item.name!r}) is a graph model; only chains "
                            f"(nl.Sequential) have a torch.nn.Sequential form")
        m = nn.Sequential(*[_to_module(torch, x, tdtype, f"{where}[{i}]", cache)
                            for i, x in enumerate(item)])
        cache[id(item)] = m
        return m
    kind = item.kind
    simple = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU,
              "softsign": nn.Softsign, "identity": nn.Identity, "softplus": nn.Softplus}
    if kind in simple:
        m = simple[kind]()
    elif kind == "linear":
        m = nn.Linear(item.in_features, item.out_features, bias=item.bias, dtype=tdtype)
    elif kind == "leaky_relu":
        m = nn.LeakyReLU(item.slope)
    elif kind == "gelu":
        m = nn.GELU(approximate=item.approximate)
    elif kind == "elu":
        m = nn.ELU(item.alpha)
    elif kind == "hardtanh":
        m = nn.Hardtanh(item.min_val, item.max_val)
    elif kind == "softmax":
        m = nn.Softmax(dim=-1)
    elif kind == "log_softmax":
        m = nn.LogSoftmax(dim=-1)
    elif kind == "dropout":
        m = nn.Dropout(item.p)
    elif kind == "batchnorm":
        m = nn.BatchNorm1d(item.features, eps=item.eps, momentum=item.momentum,
                           affine=item.affine, track_running_stats=item.track_running_stats,
                           dtype=tdtype)
    elif kind == "layernorm":
        m = nn.LayerNorm(item.features, eps=item.eps,
                         elementwise_affine=item.elementwise_affine, dtype=tdtype)
    else:
        what = "a layer written in Python" if kind == "external" else f"kind {kind!r}"
        raise TypeError(f"to_torch: {where} is layer {item.name!r} ({type(item).__name__}, "
                        f"{what}), which has no torch.nn module")
    if kind in _TORCH_NAMES:
        with torch.no_grad():
            for tname, nname, how in _TORCH_NAMES[kind]:
                t = getattr(m, tname, None)
                if t is not None:
                    src = torch.from_numpy(_to_torch_layout(_view(item, nname), how))
                    t.copy_(src.reshape(t.shape))
    cache[id(item)] = m
    return m


def to_torch(model):
    """A ``torch.nn.Sequential`` equal to an nnlayers ``Sequential`` (its
    layers as torch modules, copies of the weights and buffers, the
    model's dtype and mode). Graph models, Step, Cos and layers written in
    Python have no such form: TypeError naming the layer (for a graph,
    build the torch module yourself and load ``model.state_dict()``)."""
    from .model import Model, Sequential

    if not isinstance(model, Model):
        raise TypeError(f"to_torch: model must be an nl.Sequential, got "
                        f"{type(model).__name__}")
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch: {model.name!r} is a graph model; only chains "
                        f"(nl.Sequential) have a torch.nn.Sequential form. Build the torch "
                        f"module yourself and load model.state_dict(tensors=True)")
    for layer in model._flat_layers:   # every layer checked before torch is imported
        if layer.kind in ("step", "cos", "external") or layer._n_inputs[1] != 1:
            _to_module_error(layer)
    torch = _import_torch("to_torch")
    tdtype = torch.float64 if np.dtype(model.dtype) == np.float64 else torch.float32
    return _to_module(torch, model, tdtype, "model", {}).train(model.training)


def _to_module_error(layer):
    what = "a layer written in Python" if layer.kind == "external" else f"kind {layer.kind!r}"
    raise TypeError(f"to_torch: layer {layer.name!r} ({type(layer).__name__}, {what}) has "
                    f"no torch.nn module")
