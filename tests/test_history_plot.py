"""History.plot: one axes per metric, train and validation curves with the
recorded values; matplotlib imported only when plot runs."""
import subprocess
import sys

import numpy as np
import pytest

import nnlayers as nl

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture(scope="module")
def history():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nl.Sequential(nl.Linear(3, 8, seed=0), nl.ReLU(), nl.Linear(8, 2, seed=1))
    return model.fit(X, y, epochs=4, batch_size=8, verbose=0, seed=0,
                     validation_data=(X[:10], y[:10]))


def _lines(ax):
    return {line.get_label(): line.get_ydata() for line in ax.get_lines()}


def test_plot_draws_every_metric_with_its_validation_curve(history):
    import matplotlib.pyplot as plt

    fig = history.plot()
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "accuracy"]
    for ax in axes:
        name = ax.get_ylabel()
        lines = _lines(ax)
        np.testing.assert_array_equal(lines["train"], history.history[name])
        np.testing.assert_array_equal(lines["validation"], history.history["val_" + name])
        np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3, 4])
    plt.close(fig)


def test_plot_chosen_metrics(history):
    import matplotlib.pyplot as plt

    fig = history.plot("val_accuracy")
    (ax,) = fig.get_axes()
    assert list(_lines(ax)) == ["validation"]
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no metric 'mse' was recorded; recorded: \["):
        history.plot(["loss", "mse"])
    with pytest.raises(TypeError, match="metrics must be names"):
        history.plot([1])
    with pytest.raises(ValueError, match="nothing to plot"):
        nl.History({}).plot()


def test_plot_without_matplotlib(history, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="History.plot needs matplotlib"):
        history.plot()


def test_import_nnlayers_does_not_import_matplotlib():
    code = "import sys, nnlayers; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
