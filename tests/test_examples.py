"""The examples run and reach their documented results; ``python -m nnlayers``
works; ``nnlayers.datasets`` behaves as documented.

Each example exposes ``main(...)`` returning a dict of its results; the
tests call it (mostly with the scripts' own configuration, which is fast)
with ``verbose=False``.
"""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

if ROOT not in sys.path:   # plain `pytest` does not put the checkout on sys.path
    sys.path.append(ROOT)
from nnlayers.datasets import make_spirals, make_xor, train_test_split  # noqa: E402


def load_example(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"nnlayers_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# nnlayers.datasets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [2, 3])
def test_make_spirals_shapes_labels_and_seed(n_classes):
    X, y = make_spirals(301, n_classes=n_classes, noise=0.05, seed=3)
    assert X.shape == (301, 2) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (301,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=n_classes)
    assert counts.sum() == 301 and counts.max() - counts.min() <= 1
    X2, y2 = make_spirals(301, n_classes=n_classes, noise=0.05, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = make_spirals(301, n_classes=n_classes, noise=0.05, seed=4)
    assert not np.array_equal(X, X3)
    assert make_spirals(10, dtype=np.float64, seed=0)[0].dtype == np.float64


def test_make_spirals_not_linearly_separable():
    # least-squares one-vs-rest on the raw coordinates stays near chance
    X, y = make_spirals(1000, n_classes=2, seed=0)
    A = np.column_stack([X.astype(np.float64), np.ones(len(X))])
    w, *_ = np.linalg.lstsq(A, 2.0 * y - 1.0, rcond=None)
    assert np.mean((A @ w > 0) == (y == 1)) < 0.7


def test_make_xor():
    X, y = make_xor()
    np.testing.assert_array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    assert y.dtype == np.int64


def test_train_test_split():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, seed=1)
    assert X_tr.shape == (15, 2) and X_te.shape == (5, 2) and y_tr.shape == (15,)
    np.testing.assert_array_equal(X_tr[:, 0] // 2, y_tr)   # rows stay paired
    np.testing.assert_array_equal(X_te[:, 0] // 2, y_te)
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == list(range(20))
    again = train_test_split(X, y, test_size=0.25, seed=1)
    np.testing.assert_array_equal(again[3], y_te)
    assert train_test_split(X, y, test_size=3, seed=0)[1].shape == (3, 2)
    with pytest.raises(ValueError):
        train_test_split(X, y[:-1])
    with pytest.raises(ValueError):
        train_test_split(X, y, test_size=1.5)


# ---------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------

def test_xor_example():
    res = load_example("xor").main(seeds=20, hidden=(2, 16), verbose=False)
    assert res["hand_set_outputs"] == [0.0, 1.0, 1.0, 0.0]       # exactly
    rates = res["success_rates"]
    assert rates[16] > rates[2], rates
    assert rates[16] >= 0.8, rates


def test_spirals_example():
    res = load_example("spirals").main(verbose=False)
    assert res["network_accuracy"] >= 0.9, res["network_accuracy"]
    assert res["linear_accuracy"] <= 0.75, res["linear_accuracy"]
    assert res["gap"] == pytest.approx(res["network_accuracy"] - res["linear_accuracy"])


def test_random_features_example():
    res = load_example("random_features").main(verbose=False)
    assert res["rff_accuracy"] >= 0.9, res["rff_accuracy"]
    assert res["network_accuracy"] >= 0.9, res["network_accuracy"]
    rff = res["rff_model"]
    assert rff[0].trainable is False and rff[2].trainable is True
    for name, before in res["frozen_initial"].items():
        np.testing.assert_array_equal(rff[0].params[name], before)
    assert res["frozen_unchanged"] is True
    # the frozen layer holds the random Fourier weights, not an initialiser's
    assert np.all((res["frozen_initial"]["b"] >= 0) & (res["frozen_initial"]["b"] <= 2 * np.pi))


def test_digits_example_accuracy_and_sklearn_timing():
    """Adam + a cosine schedule + EarlyStopping (restore_best_weights,
    validation_split) reach 0.975 on the held-out quarter (issue 11)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("threadpoolctl")
    digits = load_example("digits")
    res = digits.main(verbose=False)            # the script's full configuration
    assert res["accuracy"] >= 0.975, res["accuracy"]
    model, stop = res["model"], res["early_stopping"]
    assert isinstance(model.optimizer, digits.nl.Adam)
    assert isinstance(stop, digits.nl.callbacks.EarlyStopping) and stop.restore_best_weights
    losses = res["history"].history["val_loss"]
    assert 1 <= res["epochs_run"] == len(losses) <= digits.EPOCHS
    assert res["best_epoch"] == int(np.argmin(losses))
    # the schedule ran: the rate left is the cosine's after epochs_run epochs
    want = digits.LR * (1 + np.cos(np.pi * res["epochs_run"] / digits.EPOCHS)) / 2
    assert model.optimizer.lr == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert res["fit_seconds"] > 0
    assert res["sklearn_fit_seconds"] > 0
    assert res["sklearn_n_iter"] == digits.EPOCHS   # ran every epoch
    assert res["sklearn_accuracy"] >= 0.9
    assert res["speedup"] == pytest.approx(res["sklearn_fit_seconds"] / res["fit_seconds"])


def test_residual_digits_example_reaches_97_percent():
    pytest.importorskip("sklearn")
    example = load_example("residual_digits")
    res = example.main(verbose=False)           # the script's full configuration
    assert res["test_accuracy"] >= 0.97, res
    # the graph really has the skip: it differs from the plain chain
    model = example.build_model(64, 16, 10)
    kinds = [layer.kind for layer in model.layers]
    assert "add" in kinds
    chain = example.build_model(64, 16, 10, residual=False)
    assert "add" not in [layer.kind for layer in chain.layers]


def test_examples_readme_lists_every_example():
    text = open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8").read()
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith((".py", ".ipynb")):
            assert name in text, name


# ---------------------------------------------------------------------------
# python -m nnlayers
# ---------------------------------------------------------------------------

def test_python_m_nnlayers():
    proc = subprocess.run([sys.executable, "-m", "nnlayers", "--epochs", "3", "--seed", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"test accuracy:\s*([0-9.]+)", proc.stdout)
    assert m, proc.stdout
    assert 0.0 <= float(m.group(1)) <= 1.0
    assert "train accuracy:" in proc.stdout
    assert "Epoch 3/3" in proc.stderr       # the progress bar (verbose=1)


def test_python_m_nnlayers_quiet_without_sklearn_or_matplotlib():
    code = ("import sys, runpy\n"
            "for name in ('sklearn', 'matplotlib', 'scipy'):\n"
            "    sys.modules[name] = None   # importing them now fails\n"
            "sys.argv = ['nnlayers', '--epochs', '2', '--quiet']\n"
            "runpy.run_module('nnlayers', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"test accuracy:\s*[0-9.]+", proc.stdout), proc.stdout
    assert "Epoch" not in proc.stderr
