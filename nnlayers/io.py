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
            arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise _bad(path, f"an entry is unreadable or holds Python objects ({e})") from None
        if "__architecture__" not in arrays:
            raise _bad(path, "no __architecture__ entry")
        raw = arrays.pop("__architecture__")
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise _bad(path, "__architecture__ is not a JSON string")
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
        if set(expected) != set(arrays):
            raise _bad(path, f"parameters {sorted(arrays)} do not match the "
                             f"architecture's {sorted(expected)}")
        for name, shape in expected.items():
            a = arrays[name]
            if a.shape != shape:
                raise _bad(path, f"{name} has shape {a.shape}, the architecture says {shape}")
            if a.dtype != np.dtype(dtype):
                raise _bad(path, f"{name} has dtype {a.dtype}, the architecture says {dtype}")
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
