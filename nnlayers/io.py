"""save / load: an ``.npz`` with the parameters plus the graph as JSON.

The JSON lists every object once, layers first, then models (a model
after the models it calls), so shared layers keep their identity: each
layer's tensors are stored as ``"<id>.<name>"``. Loading uses
``allow_pickle=False`` and checks every shape against the architecture
before any layer is built, so a hostile file can neither run code nor
make nnlayers allocate more than the file itself holds. Files written by
the first version (a Sequential, format "nnlayers-sequential") still load.
"""
import json
import zipfile

import numpy as np

from .layers import _CLASSES, layer_from_config, python_layer_from_config

FORMAT = "nnlayers-model"
VERSION = 2
FORMAT_V1 = "nnlayers-sequential"

__all__ = ["save", "load"]


# ---------------------------------------------------------------- writing

def _collect(model):
    """Every layer (in order of first use) and every model (each after the
    models it calls) reachable from `model`."""
    from .model import Model

    leaves, models, seen = [], [], set()

    def visit(m):
        for obj in m._spec.objects:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, Model):
                visit(obj)
            else:
                leaves.append(obj)
        models.append(m)

    seen.add(id(model))
    visit(model)
    return leaves, models


def _model_entry(m, ids):
    spec = m._spec
    return {"type": "model", "class": type(m).__name__, "name": m.name,
            "inputs": [[w, None if d is None else str(np.dtype(d)), n]
                       for w, d, n in spec.inputs],
            "objects": [ids[id(o)] for o in spec.objects],
            "names": list(spec.names),
            "nodes": [[oi, [list(r) for r in refs]] for oi, refs in spec.nodes],
            "outputs": [list(r) for r in spec.outputs],
            "multi_in": bool(m._multi_in), "multi_out": bool(m._multi_out),
            "output_names": list(m._output_names)}


def _layer_entry(layer):
    """A layer's JSON entry. A layer written in Python also records its
    module, dtype and tensors (names, shapes, buffer or not): the loader
    checks a file against them before building anything."""
    entry = {"type": "layer", "class": type(layer).__name__, "config": layer.get_config(),
             "name": layer.name, "trainable": bool(layer.trainable)}
    if layer._builtin:
        return entry
    try:
        json.dumps(entry["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): its config "
                         f"{entry['config']!r} is not JSON ({e}); define get_config() "
                         f"returning JSON-able constructor arguments") from None
    tensors = {k: [list(v.shape), False] for k, v in layer.params.items()}
    tensors.update({k: [list(v.shape), True] for k, v in layer.buffers.items()})
    entry.update({"python": True, "module": type(layer).__module__,
                  "dtype": None if layer.dtype is None else np.dtype(layer.dtype).name,
                  "tensors": tensors})
    return entry


def python_classes(model):
    """{class name: class} of the layers written in Python in `model`
    (what load's custom_objects must give)."""
    return {type(layer).__name__: type(layer) for layer in _collect(model)[0]
            if not layer._builtin}


def to_archive(model, weights=True):
    """(architecture dict, {name: array}) describing `model` (without
    weights: the architecture alone, {})."""
    leaves, models = _collect(model)
    ids = {id(o): i for i, o in enumerate(leaves + models)}
    objects = [_layer_entry(layer) for layer in leaves]
    objects += [_model_entry(m, ids) for m in models]
    arrays = {}
    for i, layer in enumerate(leaves if weights else []):
        for k, v in layer.params.items():
            arrays[f"{i}.{k}"] = np.array(v)
        for k, v in layer.buffers.items():
            arrays[f"{i}.{k}"] = np.array(v)
    arch = {"format": FORMAT, "version": VERSION, "dtype": str(np.dtype(model.dtype)),
            "objects": objects, "root": ids[id(model)]}
    if weights:
        arch["run"] = {"seed": int(model.seed), "step": int(model._step),
                       "training": bool(model.training)}
    return arch, arrays


def _optimizer_archive(optimizer, model, leaves):
    """The optimizer as JSON (its class, groups, steps, clipping; each
    parameter as [layer id, tensor name]) and its state arrays, named
    "__optimizer__.<segment>.<state name>"."""
    ids = {id(layer): i for i, layer in enumerate(leaves)}
    sd = optimizer.state_dict()
    segments = optimizer._segments
    for layer, _, _ in segments:
        if id(layer) not in ids:
            raise ValueError(f"save(optimizer=...): the optimizer updates {layer!r}, which is "
                             f"not in this model; save it with the model it trains")
    groups = []
    for g in sd["param_groups"]:
        g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
             if k != "params"}
        g["params"] = []
        groups.append(g)
    for k, (layer, tensor, group) in enumerate(segments):
        groups[group]["params"].append([ids[id(layer)], tensor])
    meta = {"class": type(optimizer).__name__, "groups": groups,
            **{k: v for k, v in sd.items() if k not in ("state", "param_groups")}}
    arrays = {f"__optimizer__.{k}.{name}": np.array(a)
              for k, st in sd["state"].items() for name, a in st.items()}
    return meta, arrays


def save(model, path, optimizer=None):
    """Write ``model`` to ``path`` (.npz): its tensors as float arrays
    named ``"<object id>.<name>"`` and the graph as JSON in
    ``"__architecture__"``; with ``optimizer``, its hyperparameters and
    state too, so that ``nl.load`` gives back both (``model.optimizer``)
    and training resumes exactly."""
    arch, arrays = to_archive(model)
    if optimizer is not None:
        meta, opt_arrays = _optimizer_archive(optimizer, model, _collect(model)[0])
        arch["optimizer"] = meta
        arrays.update(opt_arrays)
    arrays["__architecture__"] = np.array(json.dumps(arch))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# ---------------------------------------------------------------- reading

class _Bad(Exception):
    """Something in the file is wrong (turned into a ValueError)."""


_MAX_JSON_BYTES = 4 << 20


def _declared_tensors(entry):
    """{name: shape} a Python layer's entry declares; raises _Bad."""
    tensors = entry.get("tensors")
    if not isinstance(tensors, dict):
        raise _Bad("a Python layer's entry lists no tensors")
    out = {}
    for name, item in tensors.items():
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], list)
                and 1 <= len(item[0]) <= 2 and isinstance(item[1], bool)
                and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d < 2**31
                        for d in item[0])):
            raise _Bad(f"tensor {name!r} must be [shape, is_buffer], got {item!r}")
        out[name] = tuple(item[0])
    return out


def _expected_tensors(entry):
    """{name: shape} of a layer's tensors from its entry (class and
    config, or the shapes a Python layer's entry declares), without
    building it; raises _Bad."""
    if entry.get("python"):
        return _declared_tensors(entry)
    cls_name, cfg = entry.get("class"), entry.get("config")
    cls = _CLASSES.get(cls_name) if isinstance(cls_name, str) else None
    if cls is None:
        raise _Bad(f"unknown layer class {cls_name!r}")
    if not isinstance(cfg, dict):
        raise _Bad(f"layer config must be a dict, got {type(cfg).__name__}")
    try:
        return cls._tensor_shapes(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise _Bad(f"{cls_name} config is invalid ({e})") from None


def _check_ref(ref, n_inputs, n_outs, k):
    """A value reference [k, j] of node k's inputs (or an output)."""
    if (not isinstance(ref, list) or len(ref) != 2 or
            not all(isinstance(v, int) and not isinstance(v, bool) for v in ref)):
        raise _Bad(f"a value reference must be [node, index], got {ref!r}")
    a, j = ref
    if a == -1:
        if not 0 <= j < n_inputs:
            raise _Bad(f"input {j} does not exist")
    elif not (0 <= a < k and 0 <= j < n_outs[a]):
        raise _Bad(f"value {ref!r} does not come before its use")
    return (a, j)


def _spec_from_entry(entry, built, n_outputs_of):
    """The spec of a model entry, its objects taken from `built`."""
    from .model import _Spec

    inputs = entry.get("inputs")
    objects = entry.get("objects")
    names = entry.get("names")
    nodes = entry.get("nodes")
    outputs = entry.get("outputs")
    if not (isinstance(inputs, list) and isinstance(objects, list) and isinstance(names, list)
            and isinstance(nodes, list) and isinstance(outputs, list)) or not nodes:
        raise _Bad("a model entry lacks inputs, objects, names, nodes or outputs")
    if len(names) != len(objects) or not all(isinstance(n, str) for n in names):
        raise _Bad("a model entry's names do not match its objects")
    spec_inputs = []
    for item in inputs:
        if not (isinstance(item, list) and len(item) == 3):
            raise _Bad(f"a model input must be [width, dtype, name], got {item!r}")
        w, d, n = item
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise _Bad(f"an input width must be a positive int or null, got {w!r}")
        if d not in (None, "float32", "float64") or not isinstance(n, str):
            raise _Bad(f"bad model input {item!r}")
        spec_inputs.append((w, None if d is None else np.dtype(d), n))
    objs = []
    for oid in objects:
        if not isinstance(oid, int) or isinstance(oid, bool) or oid not in built:
            raise _Bad(f"a model calls object {oid!r}, which does not come before it")
        objs.append(built[oid])
    spec_nodes, n_outs = [], []
    for k, node in enumerate(nodes):
        if not (isinstance(node, list) and len(node) == 2 and isinstance(node[1], list)):
            raise _Bad(f"node {k} must be [object, [inputs]]")
        oi = node[0]
        if not isinstance(oi, int) or isinstance(oi, bool) or not 0 <= oi < len(objs):
            raise _Bad(f"node {k} calls object {oi!r}, which the model does not list")
        refs = [_check_ref(r, len(spec_inputs), n_outs, k) for r in node[1]]
        spec_nodes.append((oi, refs))
        n_outs.append(n_outputs_of(objs[oi]))
    outs = [_check_ref(r, len(spec_inputs), n_outs, len(nodes)) for r in outputs]
    return _Spec(spec_inputs, objs, list(names), spec_nodes, outs)


def _python_layer(entry, custom_objects):
    """A layer written in Python, from its entry: its class from
    custom_objects (nothing named by the file is imported), built from its
    config, its tensors checked against the entry's."""
    name = entry.get("class")
    cls = (custom_objects or {}).get(name) if isinstance(name, str) else None
    if cls is None:
        raise _Bad(f"layer class {name!r} (module {entry.get('module')!r}) is written in "
                   f"Python; pass its class to load: custom_objects={{{name!r}: {name}}} "
                   f"(nnlayers never imports code a file names)")
    dtype = entry.get("dtype")
    if dtype not in (None, "float32", "float64"):
        raise _Bad(f"unsupported dtype {dtype!r}")
    try:
        layer = python_layer_from_config(cls, entry.get("config") or {}, dtype)
    except Exception as e:   # the user's constructor may raise anything
        raise _Bad(f"building {name} from its config failed: {type(e).__name__}: {e}") from None
    have = {k: tuple(v.shape) for k, v in {**layer.params, **layer.buffers}.items()}
    if have != _declared_tensors(entry):
        raise _Bad(f"{name} built from its config has tensors {have}, the file "
                   f"{_declared_tensors(entry)}")
    return layer


def _build(arch, arrays, shapes_of, custom_objects=None):
    """The model described by a checked architecture; `arrays` maps
    "<id>.<name>" to arrays whose shapes shapes_of(name) gives (None: the
    layers keep their new weights); custom_objects gives the classes of
    layers written in Python by name."""
    from .model import Model, Sequential

    objects = arch.get("objects")
    root = arch.get("root")
    if not isinstance(objects, list) or not objects:
        raise _Bad("the architecture lists no objects")
    if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < len(objects):
        raise _Bad(f"root {root!r} is not an object")
    dtype = arch.get("dtype")
    if dtype not in ("float32", "float64"):
        raise _Bad(f"unsupported dtype {dtype!r}")
    # every tensor against the architecture, before any layer is built
    expected = {}
    for i, entry in enumerate(objects):
        if not isinstance(entry, dict) or entry.get("type") not in ("layer", "model"):
            raise _Bad(f"object {i} is neither a layer nor a model")
        if entry["type"] == "layer":
            for k, shape in _expected_tensors(entry).items():
                expected[f"{i}.{k}"] = shape
    if arrays is None:
        expected, arrays = {}, {}
    opt_names = {n for n in arrays if n.startswith("__optimizer__.")}
    tensors = set(arrays) - opt_names
    if tensors != set(expected):
        raise _Bad(f"tensors {sorted(tensors)} do not match the architecture's {sorted(expected)}")
    if opt_names and "optimizer" not in arch:
        raise _Bad("optimizer state without an optimizer in the architecture")
    for name, shape in expected.items():
        a_shape, a_dtype = shapes_of(name)
        if a_shape != shape:
            raise _Bad(f"{name} has shape {a_shape}, the architecture says {shape}")
        if a_dtype != np.dtype(dtype):
            raise _Bad(f"{name} has dtype {a_dtype}, the architecture says {dtype}")
    built = {}

    def n_outputs_of(obj):
        return len(obj._spec.outputs) if isinstance(obj, Model) else 1

    classes = {"Model": Model, "Sequential": Sequential}
    for i, entry in enumerate(objects):
        try:
            if entry["type"] == "layer":
                layer = _python_layer(entry, custom_objects) if entry.get("python") else \
                    layer_from_config(entry.get("class"), entry.get("config"))
                for k in (list(layer.params) + list(layer.buffers)) if arrays else []:
                    target = layer.params if k in layer.params else layer.buffers
                    target[k] = arrays[f"{i}.{k}"]
                layer.trainable = bool(entry.get("trainable", True))
                if isinstance(entry.get("name"), str):
                    layer.name = entry["name"]
                built[i] = layer
            else:
                cls = classes.get(entry.get("class"))
                if cls is None:
                    raise _Bad(f"object {i}: unknown model class {entry.get('class')!r}")
                spec = _spec_from_entry(entry, built, n_outputs_of)
                names = entry.get("output_names")
                built[i] = cls._from_spec(spec, entry.get("name"),
                                          bool(entry.get("multi_in")),
                                          bool(entry.get("multi_out")),
                                          names if isinstance(names, list) else None)
        except (TypeError, ValueError, KeyError) as e:
            raise _Bad(f"object {i}: {e}") from None
    model = built[root]
    if not isinstance(model, Model):
        raise _Bad("the root object is not a model")
    _restore_run(model, arch.get("run"))
    model.optimizer = None
    if "optimizer" in arch:
        model.optimizer = _build_optimizer(arch["optimizer"], built, arrays, opt_names)
    return model


def _restore_run(model, run):
    """The model's generator seed and step count (random layers' masks)
    and its mode (train/eval)."""
    if run is None:
        return
    if not (isinstance(run, dict) and all(isinstance(run.get(k), int) and run[k] >= 0
                                          for k in ("seed", "step"))
            and isinstance(run.get("training", True), bool)):
        raise _Bad(f"run must be {{'seed': int, 'step': int, 'training': bool}}, got {run!r}")
    model.seed, model._step = run["seed"], run["step"]
    model.train(run.get("training", True))


def _build_optimizer(meta, built, arrays, names):
    """The saved optimizer over the loaded layers, its hyperparameters,
    steps and state restored exactly (by its load_state_dict, which checks
    every shape before changing anything)."""
    from . import optim

    classes = {c.__name__: c for c in optim.OPTIMIZERS}
    if not isinstance(meta, dict) or meta.get("class") not in classes:
        raise _Bad(f"unknown optimizer {meta.get('class') if isinstance(meta, dict) else meta!r}")
    groups = meta.get("groups")
    if not isinstance(groups, list) or not groups:
        raise _Bad("the optimizer has no parameter groups")
    param_groups, sd_groups, k = [], [], 0
    for g in groups:
        refs = g.get("params") if isinstance(g, dict) else None
        if not isinstance(refs, list) or not refs:
            raise _Bad("an optimizer group lists no parameters")
        views = []
        for ref in refs:
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], int)
                    and ref[0] in built and isinstance(ref[1], str)
                    and hasattr(built[ref[0]], "params")
                    and ref[1] in built[ref[0]].params):
                raise _Bad(f"an optimizer parameter {ref!r} is no layer's tensor")
            views.append(built[ref[0]].params[ref[1]])
        hyper = {a: b for a, b in g.items() if a not in ("params", "betas")}
        param_groups.append({"params": views, **hyper})
        sd_groups.append({**{a: b for a, b in g.items() if a != "params"},
                          "params": list(range(k, k + len(views)))})
        k += len(views)
    state = {i: {} for i in range(k)}   # a segment without state has no arrays
    for name in names:
        _, seg, key = name.split(".", 2)
        if not seg.isdigit() or int(seg) >= k:
            raise _Bad(f"optimizer entry {name!r} names no segment")
        state.setdefault(int(seg), {})[key] = arrays[name]
    sd = {**{a: b for a, b in meta.items() if a not in ("class", "groups")},
          "state": state, "param_groups": sd_groups}
    try:
        opt = classes[meta["class"]](param_groups, lr=param_groups[0].get("lr"),
                                     clip_norm=meta.get("clip_norm"),
                                     clip_value=meta.get("clip_value"))
        opt.load_state_dict(sd)
    except (TypeError, ValueError, KeyError) as e:
        raise _Bad(f"optimizer: {e}") from None
    return opt


def _rebuild(arch, arrays, custom_objects=None):
    """Unpickling (and astype): the model from to_archive's output."""
    return _build(arch, arrays, lambda name: (arrays[name].shape, arrays[name].dtype),
                  custom_objects)


def from_config(config, custom_objects=None):
    """Model.from_config: the model of get_config()'s dict, new weights."""
    if not isinstance(config, dict) or config.get("format") != FORMAT or \
            config.get("version") != VERSION:
        raise ValueError("from_config takes the dict of Model.get_config() "
                         f"(format {FORMAT!r}, version {VERSION})")
    try:
        return _build(config, None, None, custom_objects)
    except _Bad as e:
        raise ValueError(f"from_config: {e}") from None


def _bad(path, why):
    return ValueError(f"{path!s} is not a valid nnlayers model file: {why}")


def _peek(npz, key):
    """(shape, dtype) of an entry, from its .npy header only."""
    name = key if key.endswith(".npy") else key + ".npy"
    with npz.zip.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dt = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dt = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    if dt.hasobject:
        raise ValueError(f"entry {key!r} holds Python objects")
    need = int(np.prod(shape, dtype=object)) * dt.itemsize
    if need > npz.zip.getinfo(name).file_size:
        raise ValueError(f"entry {key!r} claims {need} bytes but holds fewer (truncated?)")
    return tuple(shape), dt


def _read(npz, key, path):
    try:
        return npz[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise _bad(path, f"entry {key!r} is unreadable ({e})") from None


class _LazyArrays(dict):
    """Arrays read from the archive only when the builder asks."""

    def __init__(self, npz, names, path):
        super().__init__((n, None) for n in names)
        self._npz, self._path = npz, path

    def __getitem__(self, key):
        return _read(self._npz, key, self._path)


def _v1_as_v2(arch):
    """A first-version Sequential architecture in the current form."""
    specs = arch.get("layers")
    if not isinstance(specs, list) or not specs:
        raise _Bad("the architecture lists no layers")
    objects = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise _Bad(f"layer {i} has no config")
        objects.append({"type": "layer", "class": spec.get("class"), "config": spec["config"],
                        "trainable": spec.get("trainable", True)})
    n = len(objects)
    objects.append({"type": "model", "class": "Sequential", "name": None,
                    "inputs": [[None, None, "input"]], "objects": list(range(n)),
                    "names": [str(i) for i in range(n)],
                    "nodes": [[i, [[-1, 0] if i == 0 else [i - 1, 0]]] for i in range(n)],
                    "outputs": [[n - 1, 0]]})
    return {"format": FORMAT, "version": VERSION, "dtype": arch.get("dtype"),
            "objects": objects, "root": n}


def load(path, custom_objects=None):
    """Read a model written by ``Model.save`` (or a Sequential's of the
    first version). ``custom_objects`` maps the class names of layers
    written in Python to their classes (as in Keras): nnlayers never
    imports code a file names. Raises FileNotFoundError for a missing
    file and ValueError for anything truncated, corrupted, mismatched,
    not written by nnlayers, or holding a Python layer's class that
    custom_objects does not give."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise _bad(path, f"cannot read it as .npz ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single array, not an .npz archive")
    with npz:
        try:
            headers = {k: _peek(npz, k) for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise _bad(path, f"an entry is unreadable ({e})") from None
        if "__architecture__" not in headers:
            raise _bad(path, "no __architecture__ entry")
        shape, dt = headers.pop("__architecture__")
        if dt.kind != "U" or shape != () or dt.itemsize > _MAX_JSON_BYTES:
            raise _bad(path, "__architecture__ is not a JSON string")
        raw = _read(npz, "__architecture__", path)
        try:
            arch = json.loads(str(raw))
        except ValueError as e:
            raise _bad(path, f"__architecture__ is not valid JSON ({e})") from None
        if not isinstance(arch, dict) or arch.get("format") not in (FORMAT, FORMAT_V1):
            raise _bad(path, "not written by nnlayers (format marker missing)")
        try:
            if arch.get("format") == FORMAT_V1:
                if arch.get("version") != 1:
                    raise _Bad(f"unsupported version {arch.get('version')!r}")
                arch = _v1_as_v2(arch)
            elif arch.get("version") != VERSION:
                raise _Bad(f"unsupported version {arch.get('version')!r}")
            return _build(arch, _LazyArrays(npz, headers, path), lambda n: headers[n],
                          custom_objects)
        except _Bad as e:
            raise _bad(path, str(e)) from None
