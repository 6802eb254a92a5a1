"""Tests of Sequential.save / nl.load, pickling and deepcopy."""
import copy
import io
import json
import os
import pathlib
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core


def make_model(dtype=np.float32, frozen=(2,)):
    model = nl.Sequential(
        nl.Linear(3, 6, dtype=dtype, seed=1),
        nl.LeakyReLU(slope=0.237),
        nl.Linear(6, 5, bias=False, dtype=dtype, seed=2, init="glorot"),
        nl.Tanh(),
        nl.Linear(5, 4, dtype=dtype, seed=3, init="uniform"),
        nl.Sigmoid(),
        nl.Linear(4, 2, dtype=dtype, seed=4),
    )
    # non-zero biases so that they are really stored
    rng = np.random.default_rng(0)
    for layer in model:
        if "b" in layer.params:
            layer.params["b"] = rng.standard_normal(layer.params["b"].shape)
    for i in frozen:
        model[i].trainable = False
    return model


def describe(model):
    return [(type(layer).__name__, layer.get_config(), bool(layer.trainable)) for layer in model]


def assert_same_model(a, b):
    assert describe(a) == describe(b)
    assert np.dtype(a.dtype) == np.dtype(b.dtype)
    pa, pb = a.parameters(), b.parameters()
    assert list(pa) == list(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype, k
        assert np.array_equal(pa[k], pb[k]), k


def write_file(path, arch, arrays):
    """An .npz in the layout nnlayers writes, from explicit pieces."""
    entries = dict(arrays)
    if arch is not None:
        entries["__architecture__"] = np.array(json.dumps(arch))
    with open(path, "wb") as f:
        np.savez(f, **entries)


def linear_arch(i=2, o=3, dtype="float64", bias=True):
    return {"format": "nnlayers-sequential", "version": 1, "dtype": dtype,
            "layers": [{"class": "Linear",
                        "config": {"in_features": i, "out_features": o, "bias": bias,
                                   "dtype": dtype},
                        "trainable": True}]}


def linear_arrays(i=2, o=3, dtype=np.float64):
    return {"0.W": np.arange(i * o, dtype=dtype).reshape(i, o), "0.b": np.ones(o, dtype=dtype)}


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_exact(dtype, tmp_path):
    model = make_model(dtype)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nl.load(path)
    assert isinstance(loaded, nl.Sequential)
    assert_same_model(model, loaded)
    assert loaded[1].slope == model[1].slope == pytest.approx(0.237)
    assert isinstance(loaded[1], nl.LeakyReLU)
    assert [layer.trainable for layer in loaded] == [True, True, False, True, True, True, True]
    x = np.random.default_rng(1).standard_normal((9, 3)).astype(dtype)
    assert np.array_equal(model.predict(x), loaded.predict(x))
    # the loaded model owns its memory and trains independently
    loaded.train_step(x, np.array([0, 1] * 4 + [0]), nl.SoftmaxCrossEntropy(),
                      nl.SGD(loaded, 0.5))
    assert not np.array_equal(model.parameters()["0.W"], loaded.parameters()["0.W"])
    np.testing.assert_array_equal(model.parameters()["2.W"], loaded.parameters()["2.W"])  # frozen


def test_save_load_accepts_str_and_any_suffix(tmp_path):
    model = make_model(np.float64, frozen=())
    path = str(tmp_path / "weights.bin")
    model.save(path)
    assert os.path.exists(path)
    assert_same_model(model, nl.load(path))


def test_saved_file_is_plain_npz(tmp_path):
    """The format the docs promise: float arrays "<object id>.<name>" plus
    the graph as JSON; readable by NumPy without pickle. For a Sequential
    the object ids are the positions, as in the first version's files."""
    model = make_model(np.float64)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        assert names == set(model.parameters()) | {"__architecture__"}
        arch = json.loads(str(z["__architecture__"]))
        for k, v in model.parameters().items():
            assert np.array_equal(z[k], v)
    assert arch["format"] == "nnlayers-model" and arch["version"] == 2
    layers = [o for o in arch["objects"] if o["type"] == "layer"]
    assert [spec["class"] for spec in layers] == [type(layer).__name__ for layer in model]
    root = arch["objects"][arch["root"]]
    assert root["class"] == "Sequential" and root["objects"] == list(range(len(model)))


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        nl.load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path):
    model = make_model(np.float64)
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10, 0):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError) as exc:
            nl.load(bad)
        assert str(bad) in str(exc.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError):
        nl.load(path)


def test_single_npy_is_rejected(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(ValueError):
        nl.load(path)


class _Marker:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("where", ["extra", "parameter", "architecture"])
def test_pickled_object_array_is_rejected_without_running_code(where, tmp_path):
    marker = tmp_path / "EXECUTED"
    evil = np.array([{"a": 1}, _Marker(marker)], dtype=object)
    arrays = linear_arrays()
    arch = linear_arch()
    if where == "extra":
        arrays["evil"] = evil
    elif where == "parameter":
        arrays["0.W"] = evil
    else:
        arrays["__architecture__"] = evil
        arch = None
    path = tmp_path / "evil.npz"
    write_file(path, arch, arrays)
    with pytest.raises(ValueError):
        nl.load(path)
    assert not marker.exists()
    # the file really is hostile: a pickle-enabled load would run the payload
    key = {"extra": "evil", "parameter": "0.W", "architecture": "__architecture__"}[where]
    with np.load(path, allow_pickle=True) as z:
        z[key]
    assert marker.exists()


def test_wrong_architecture_shape(tmp_path):
    path = tmp_path / "m.npz"
    write_file(path, linear_arch(2, 3), linear_arrays(2, 4))
    with pytest.raises(ValueError) as exc:
        nl.load(path)
    assert "0.W" in str(exc.value) or "0.b" in str(exc.value)


@pytest.mark.parametrize("mutate", ["missing_param", "extra_param", "bias_mismatch"])
def test_parameter_set_must_match_architecture(mutate, tmp_path):
    arrays, arch = linear_arrays(), linear_arch()
    if mutate == "missing_param":
        del arrays["0.b"]
    elif mutate == "extra_param":
        arrays["1.W"] = np.zeros((3, 3))
    else:
        arch = linear_arch(bias=False)
    path = tmp_path / "m.npz"
    write_file(path, arch, arrays)
    with pytest.raises(ValueError):
        nl.load(path)


def test_valid_hand_written_file_loads(tmp_path):
    """The hand-written layout used by the error tests is itself valid, so
    those tests fail for the reason they name."""
    path = tmp_path / "m.npz"
    write_file(path, linear_arch(2, 3), linear_arrays(2, 3))
    model = nl.load(path)
    np.testing.assert_array_equal(model[0].params["W"], linear_arrays()["0.W"])
    x = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(model.predict(x), x @ linear_arrays()["0.W"] + 1.0)


@pytest.mark.parametrize("field", ["in_features", "out_features"])
def test_absurd_shapes_in_json(field, tmp_path):
    arch = linear_arch(2, 3)
    arch["layers"][0]["config"][field] = 10**12
    path = tmp_path / "m.npz"
    write_file(path, arch, linear_arrays(2, 3))
    allocs = _core.alloc_count()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            nl.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _core.alloc_count() == allocs
    assert peak < 50 * 2**20


def test_lying_npy_header_does_not_allocate(tmp_path):
    """A parameter entry whose .npy header claims shape (10**12, 3) but holds
    a few bytes: load must answer ValueError (corrupt file) without trying to
    allocate what the header claims (io.py promises a hostile file cannot
    make nnlayers allocate more than the file holds)."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    head.write(b"\0" * 64)
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("0.W.npy", head.getvalue())
        for name, arr in (("0.b", np.zeros(3)),
                          ("__architecture__", np.array(json.dumps(linear_arch(2, 3))))):
            buf = io.BytesIO()
            np.save(buf, arr)
            z.writestr(name + ".npy", buf.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            nl.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"load tried to allocate {peak} bytes"


def test_missing_architecture(tmp_path):
    path = tmp_path / "m.npz"
    write_file(path, None, linear_arrays())
    with pytest.raises(ValueError) as exc:
        nl.load(path)
    assert "__architecture__" in str(exc.value)


@pytest.mark.parametrize("mutate", [
    lambda a: a.update(format="something-else"),
    lambda a: a.update(version=99),
    lambda a: a.update(layers=[]),
    lambda a: a.update(dtype="float16"),
    lambda a: a["layers"][0].update({"class": "Conv2d"}),
    lambda a: a["layers"][0].update(config="not a dict"),
    lambda a: a["layers"][0]["config"].update(in_features="two"),
])
def test_bad_architecture_fields(mutate, tmp_path):
    arch = linear_arch()
    mutate(arch)
    path = tmp_path / "m.npz"
    write_file(path, arch, linear_arrays())
    with pytest.raises(ValueError):
        nl.load(path)


def test_architecture_not_json(tmp_path):
    path = tmp_path / "m.npz"
    arrays = linear_arrays()
    arrays["__architecture__"] = np.array("{this is not json")
    write_file(path, None, arrays)
    with pytest.raises(ValueError):
        nl.load(path)


@pytest.mark.parametrize("arr_dtype,arch_dtype", [
    (np.float32, "float64"), (np.float64, "float32"), (np.int64, "float64"),
    (np.complex128, "float64"), (np.float16, "float32")])
def test_wrong_dtype_in_arrays(arr_dtype, arch_dtype, tmp_path):
    path = tmp_path / "m.npz"
    write_file(path, linear_arch(dtype=arch_dtype), linear_arrays(dtype=arr_dtype))
    with pytest.raises(ValueError) as exc:
        nl.load(path)
    assert "dtype" in str(exc.value)


# ---------------------------------------------------------------------------
# pickle and deepcopy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy_give_equal_independent_models(how, dtype):
    model = make_model(dtype)
    if how == "pickle":
        clone = pickle.loads(pickle.dumps(model))
    else:
        clone = copy.deepcopy(model)
    assert clone is not model
    assert_same_model(model, clone)
    assert clone[1].slope == model[1].slope
    x = np.random.default_rng(2).standard_normal((7, 3)).astype(dtype)
    assert np.array_equal(model.predict(x), clone.predict(x))
    for k, v in clone.parameters().items():
        assert not np.shares_memory(v, model.parameters()[k]), k
    before = {k: np.array(v) for k, v in model.parameters().items()}
    # change the copy in place, by training, and by freezing
    clone.parameters()["0.W"][...] = 0
    clone[0].params["b"] = np.full(6, 3.0)
    clone[4].trainable = False
    clone.train_step(x, np.array([0, 1, 1, 0, 1, 0, 0]), nl.SoftmaxCrossEntropy(),
                     nl.SGD(clone, 0.5))
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert model[4].trainable
    assert not np.array_equal(model.predict(x), clone.predict(x))
    # and the other way round
    model.parameters()["6.W"][...] = 7.0
    assert not np.any(clone.parameters()["6.W"] == 7.0)


def test_pickle_of_pickle_and_layer(tmp_path):
    model = make_model(np.float64)
    twice = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(model))))
    assert_same_model(model, twice)
    layer = nl.Linear(3, 2, dtype=np.float64, seed=5)
    layer.trainable = False
    lc = pickle.loads(pickle.dumps(layer))
    assert not lc.trainable
    np.testing.assert_array_equal(lc.params["W"], layer.params["W"])
    assert not np.shares_memory(lc.params["W"], layer.params["W"])
