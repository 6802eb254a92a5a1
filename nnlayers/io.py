"""save / load: an ``.npz`` with the parameters plus the architecture as
JSON. Loading uses ``allow_pickle=False`` and checks every shape against
the architecture before any layer is built, so a hostile file can neither
run code nor make nnlayers allocate more than the file itself holds."""
import json
import zipfile

import numpy as np

from .layers import layer_from_config

FORMAT = "nnlayers-sequential"
VERSION = 1

__all__ = ["save", "load"]


def save(model, path):
    """Write ``model`` to ``path`` (.npz): parameters as float arrays named
    ``"<layer>.<name>"`` and the architecture as JSON in ``"__architecture__"``."""
    arch = {"format": FORMAT, "version": VERSION, "dtype": str(np.dtype(model.dtype)),
            "layers": [{"class": type(layer).__name__, "config": layer.get_config(),
                        "trainable": bool(layer.trainable)} for layer in model.layers]}
    arrays = {name: np.array(v) for name, v in model.parameters().items()}
    arrays["__architecture__"] = np.array(json.dumps(arch))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _bad(path, why):
    return ValueError(f"{path!s} is not a valid nnlayers model file: {why}")


def _expected_shapes(cls_name, cfg):
    if cls_name != "Linear":
        return {}
    try:
        i, o = int(cfg["in_features"]), int(cfg["out_features"])
    except (KeyError, TypeError, ValueError):
        return None
    shapes = {"W": (i, o)}
    if cfg.get("bias", True):
        shapes["b"] = (o,)
    return shapes


_MAX_JSON_BYTES = 4 << 20


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
        a = npz[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise _bad(path, f"entry {key!r} is unreadable ({e})") from None
    return a


def load(path):
    """Read a model written by ``Sequential.save``. Raises FileNotFoundError
    for a missing file and ValueError for anything truncated, corrupted,
    mismatched or not written by nnlayers."""
    from .model import Sequential

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
        if not isinstance(arch, dict) or arch.get("format") != FORMAT:
            raise _bad(path, "not written by nnlayers (format marker missing)")
        if arch.get("version") != VERSION:
            raise _bad(path, f"unsupported version {arch.get('version')!r}")
        specs = arch.get("layers")
        if not isinstance(specs, list) or not specs:
            raise _bad(path, "the architecture lists no layers")
        dtype = arch.get("dtype")
        if dtype not in ("float32", "float64"):
            raise _bad(path, f"unsupported dtype {dtype!r}")
        # check every parameter against the architecture before building
        expected = {}
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
                raise _bad(path, f"layer {i} has no config")
            shapes = _expected_shapes(spec.get("class"), spec["config"])
            if shapes is None:
                raise _bad(path, f"layer {i} has no valid in/out features")
            for name, shape in shapes.items():
                expected[f"{i}.{name}"] = shape
        if set(expected) != set(headers):
            raise _bad(path, f"parameters {sorted(headers)} do not match the "
                             f"architecture's {sorted(expected)}")
        # shapes and dtypes from the .npy headers, before reading any data
        for name, shape in expected.items():
            a_shape, a_dtype = headers[name]
            if a_shape != shape:
                raise _bad(path, f"{name} has shape {a_shape}, the architecture says {shape}")
            if a_dtype != np.dtype(dtype):
                raise _bad(path, f"{name} has dtype {a_dtype}, the architecture says {dtype}")
        arrays = {name: _read(npz, name, path) for name in expected}
        layers = []
        for i, spec in enumerate(specs):
            try:
                layer = layer_from_config(spec.get("class"), spec["config"])
            except (TypeError, ValueError) as e:
                raise _bad(path, f"layer {i}: {e}") from None
            for k, v in layer.params.items():
                layer.params[k] = arrays[f"{i}.{k}"]
            layer.trainable = bool(spec.get("trainable", True))
            layers.append(layer)
        try:
            return Sequential(*layers)
        except (TypeError, ValueError) as e:
            raise _bad(path, str(e)) from None
