"""Sequential: a chain of layers run by one C call per direction, with
Keras-style ``fit``/``predict``/``evaluate`` and ``save``."""
import numbers
import time

import numpy as np

from . import _core
from .layers import ParamDict
from .losses import Loss, SoftmaxCrossEntropy, loss_from_name
from .optim import SGD

__all__ = ["Sequential", "History"]


class History:
    """What ``fit`` records: ``history`` maps "loss", "accuracy" (for
    classification), "val_loss" and "val_accuracy" (with validation data)
    to one value per epoch; ``epoch`` lists the epoch indices."""

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


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _accuracy(pred, y):
    """Share of rows classified right: argmax for C > 1, logit > 0 for C == 1."""
    y = np.asarray(y)
    if pred.shape[0] == 0:
        return float("nan")
    if pred.shape[1] == 1:
        truth = (y.reshape(-1) > 0.5) if y.ndim == 1 or y.shape[1] == 1 else None
        return float(np.mean((pred[:, 0] > 0) == truth))
    guess = np.argmax(pred, axis=1)
    truth = y if y.ndim == 1 else np.argmax(y, axis=1)
    return float(np.mean(guess == truth))


def _check_widths(layers):
    """Refuse chains whose Linear widths cannot meet (activations keep the
    width), at construction rather than at the first forward."""
    last = None
    for i, layer in enumerate(layers):
        if isinstance(layer, _core.Layer) and layer.kind == "linear":
            if last is not None and layer.in_features != last[1]:
                raise ValueError(
                    f"layer {i} ({layer!r}) expects an input width of "
                    f"{layer.in_features}, but layer {last[0]} outputs {last[1]}")
            last = (i, layer.out_features)


class Sequential(_core.Sequential):
    """A chain of layers: ``Sequential(Linear(2, 2), ReLU(), Linear(2, 1))``.

    The model owns one block for all parameters and one for all gradients
    (each layer's ``params`` become views into it), plus an activation
    workspace reused from call to call. ``forward`` and ``backward`` each
    run the whole chain in one C call; ``train_step`` runs forward, loss,
    backward and the SGD update in one C call; ``fit`` runs each epoch's
    minibatch loop in C.

    All layers share one dtype (a Linear sets it; activations adopt it).
    A layer belongs to at most one Sequential.
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        _check_widths(layers)
        super().__init__(*layers)

    # ---- container ----
    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def parameters(self):
        """Parameters by name ("0.W", "0.b", "2.W", ...): views into the
        model's parameter block. Assigning an array of the same shape copies
        it into the model (``model.parameters()["0.W"] = W``)."""
        return ParamDict({f"{i}.{k}": v for i, layer in enumerate(self.layers)
                          for k, v in layer.params.items()}, self, "parameters")

    def gradients(self):
        """Gradients by the same names as ``parameters()``."""
        return ParamDict({f"{i}.{k}": v for i, layer in enumerate(self.layers)
                          for k, v in layer.grads.items()}, self, "gradients")

    @property
    def params(self):
        return self.parameters()

    @property
    def grads(self):
        return self.gradients()

    def num_parameters(self):
        """Number of scalar parameters."""
        return int(sum(v.size for v in self.parameters().values()))

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

    def __reduce__(self):
        return (type(self), tuple(self.layers))

    # ---- training ----
    def _resolve_loss(self, loss):
        if isinstance(loss, str):
            loss = loss_from_name(loss)
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be an nnlayers loss (e.g. "
                            f"nnlayers.SoftmaxCrossEntropy()), got {type(loss).__name__}")
        return loss

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32,
            shuffle=True, seed=None, validation_data=None, verbose=1):
        """Train with minibatch SGD; returns a :class:`History`.

        Each epoch's loop over minibatches runs in C with the GIL released;
        Python is entered only between epochs and, a few times a second, to
        draw progress and check for Ctrl-C (which stops within one batch and
        raises KeyboardInterrupt, leaving the model consistent: every batch
        is applied whole or not at all). A NaN/Inf loss stops training with
        NonFiniteLossError naming the epoch and batch; that batch's update
        is not applied.

        Parameters
        ----------
        X : array (n, in); y : labels (n,) or targets (n, C)
        loss : an nnlayers loss (default SoftmaxCrossEntropy)
        optimizer : an nnlayers.SGD over this model (default SGD(lr=0.01))
        epochs : int >= 0; batch_size : int >= 1 (a last partial batch is used)
        shuffle : reshuffle every epoch with ``np.random.default_rng(seed)``
        validation_data : (X_val, y_val) evaluated after each epoch
        verbose : 0 silent, 1 a progress bar per epoch, 2 one line per epoch
        """
        loss = self._resolve_loss(SoftmaxCrossEntropy() if loss is None else loss)
        if optimizer is None:
            optimizer = SGD(self, lr=0.01)
        if not isinstance(optimizer, SGD) and not isinstance(optimizer, _core.SGD):
            raise TypeError(f"optimizer must be an nnlayers.SGD, got {type(optimizer).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
            raise TypeError(f"epochs must be an int >= 0, got {type(epochs).__name__}")
        if epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        batch_size = _check_positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        # converted once, by the same C check as forward (dtype kind, ndim,
        # INT_MAX rows); a matching array is used in place
        X = _core.as_input(X, self.dtype, "X")
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have one entry per row of X ({X.shape[0]}), "
                             f"got shape {y.shape}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
        n = X.shape[0]
        if n == 0 and epochs > 0:
            raise ValueError("X has no rows: fit needs at least one sample")
        rng = np.random.default_rng(seed)
        history = History({"epochs": epochs, "batch_size": batch_size, "samples": n})
        for epoch in range(epochs):
            order = rng.permutation(n).astype(np.int64) if shuffle else None
            bar, progress = self._progress(verbose, epoch, epochs, n, loss)
            t0 = time.perf_counter()
            try:
                loss_sum, correct, seen, stopped = self._fit_epoch(
                    X, y, loss, optimizer, batch_size, order=order, progress=progress)
            except _core.NonFiniteLossError as e:
                raise _core.NonFiniteLossError(f"epoch {epoch + 1}: {e}") from None
            finally:
                if bar is not None:
                    bar.close()
            logs = {"loss": loss_sum / max(seen, 1)}
            if loss.is_classification:
                logs["accuracy"] = correct / max(seen, 1)
            if validation_data is not None:
                val = self.evaluate(validation_data[0], validation_data[1], loss)
                logs.update({"val_" + k: v for k, v in val.items()})
            history._record(epoch, logs)
            if verbose == 2:
                dt = time.perf_counter() - t0
                text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {dt:.2f}s - {n / max(dt, 1e-12):,.0f} samples/s - {text}",
                      flush=True)
            if stopped:
                break
        return history

    def _progress(self, verbose, epoch, epochs, n, loss):
        if verbose != 1:
            return None, None
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"Epoch {epoch + 1}/{epochs}", unit="sample",
                   unit_scale=True, leave=True)

        def progress(batch, n_batches, loss_sum, correct, seen):
            bar.update(seen - bar.n)
            post = {"loss": f"{loss_sum / max(seen, 1):.4f}"}
            if loss.is_classification:
                post["acc"] = f"{correct / max(seen, 1):.3f}"
            bar.set_postfix(post, refresh=False)
            return False

        return bar, progress

    def predict(self, X, batch_size=None):
        """The model's output for X (n, in), computed in batches of
        ``batch_size`` rows (default: all at once)."""
        if batch_size is None:
            return self.forward(X)
        batch_size = _check_positive_int(batch_size, "batch_size")
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (samples, features), got shape {X.shape}")
        outs = [self.forward(X[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)]
        if not outs:
            return self.forward(X)
        return np.concatenate(outs, axis=0)

    def evaluate(self, X, y, loss=None, batch_size=None):
        """Loss (batch-averaged over all of X) and, for classification, the
        accuracy: returns ``{"loss": float, "accuracy": float}``."""
        loss = self._resolve_loss(SoftmaxCrossEntropy() if loss is None else loss)
        pred = self.predict(X, batch_size=batch_size)
        value = loss.forward(pred, y)
        loss.backward()  # release the gradient held for backward
        out = {"loss": value}
        if loss.is_classification:
            out["accuracy"] = _accuracy(pred, y)
        return out

    # ---- persistence ----
    def save(self, path):
        """Save architecture (JSON) and parameters to an ``.npz`` file."""
        from .io import save

        save(self, path)
