"""Callbacks for ``Model.fit`` (Keras's names and meanings).

``fit(..., callbacks=[...])`` calls, on each callback, ``set_model(model)``
then ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_epoch_end(epoch, logs)`` (logs: the epoch's "loss", metrics and
"val_*" values) and ``on_train_end(logs)``. A callback stops training by
setting ``model.stop_training = True``; ``model.optimizer`` is the
optimizer fit uses.

``on_batch_end(batch, logs)`` is different: only a callback that defines
it makes fit's C loop come back to Python after every batch (with logs
``{"batch": b, "size": rows, "loss": batch loss}``). That costs a few
microseconds per batch (taking the GIL and calling Python), which on a
small network is as much as the training step itself; without such a
callback the epoch runs in C with no Python call per batch.
"""
import csv
import math
import os
import tempfile

from . import _core

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "CSVLogger", "LambdaCallback", "TerminateOnNaN"]


class Callback:
    """Base class: every hook does nothing. Subclass it and override the
    hooks you need (see the module docstring for when fit calls them)."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def __repr__(self):
        return f"{type(self).__name__}()"


def wants_batches(callback):
    """Whether fit must call this callback after every batch: it (or a
    class it inherits from, below Callback) defines on_batch_end."""
    return type(callback).on_batch_end is not Callback.on_batch_end or \
        getattr(callback, "_per_batch", False)


def _monitor_mode(monitor, mode):
    """'min' or 'max' for a monitored quantity ('auto': max for accuracy-
    like names, min for the rest, as Keras)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"


class _Monitor:
    """The best value of a monitored log entry so far."""

    def __init__(self, monitor, mode, min_delta):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str (a key of fit's logs), got "
                            f"{type(monitor).__name__}")
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def missing(self, keys, who):
        """The message for a monitor that is not among fit's log keys."""
        hint = ("pass validation_data or validation_split for val_* keys"
                if self.monitor.startswith("val_") else "check the spelling")
        return (f"{who}: monitor={self.monitor!r} is not among fit's logs (they have "
                f"{sorted(keys)}); {hint}")

    def value(self, logs, who):
        if self.monitor not in (logs or {}):
            raise KeyError(self.missing(logs or {}, who))
        return float(logs[self.monitor])

    def improves(self, v):
        if self.mode == "min":
            return v < self.best - self.min_delta
        return v > self.best + self.min_delta


def check_monitors(callbacks, keys):
    """Before fit's first update: each callback's monitored value is one of
    the keys fit will log, so a misspelt monitor fails before training
    rather than after the first epoch. A callback monitors through its
    ``_monitored()``: its _Monitor, or None when it monitors nothing."""
    for cb in callbacks:
        mon = cb._monitored() if hasattr(cb, "_monitored") else None
        if mon is not None and mon.monitor not in keys:
            raise ValueError(mon.missing(keys, type(cb).__name__))


class EarlyStopping(Callback):
    """Stop training when a monitored value stops improving.

    ``EarlyStopping(monitor="val_loss", min_delta=0, patience=0,
    mode="auto", restore_best_weights=False, start_from_epoch=0)``:
    after ``patience`` epochs without an improvement of at least
    ``min_delta`` (epochs before ``start_from_epoch`` are not counted),
    training stops. With ``restore_best_weights``, the model gets the
    weights of its best epoch back whenever training ends: when this
    callback stops it, and also when the epochs run out (unlike Keras,
    which restores only when it stopped training itself).
    ``stopped_epoch`` and ``best_epoch`` say what happened.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, mode="auto",
                 restore_best_weights=False, start_from_epoch=0):
        self._mon = _Monitor(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int) \
                or start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be an int >= 0, got {start_from_epoch!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = start_from_epoch

    monitor = property(lambda self: self._mon.monitor)
    mode = property(lambda self: self._mon.mode)

    def _monitored(self):
        return self._mon

    def on_train_begin(self, logs=None):
        self._mon.best = math.inf if self._mon.mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        v = self._mon.value(logs, "EarlyStopping")
        if epoch < self.start_from_epoch:
            return
        if self._mon.improves(v):
            self._mon.best, self.best_epoch, self.wait = v, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"mode={self.mode!r}, restore_best_weights={self.restore_best_weights})")


def _atomic_save(model, path, optimizer):
    """Save to a temporary file in the same folder, then rename it onto
    `path`: a crash while writing leaves the old file (or none), never a
    broken one. In a distributed fit, the root rank writes, then every
    rank waits for it."""
    from .distributed import root_only

    root_only(model, lambda: _atomic_write(model, path, optimizer))


def _atomic_write(model, path, optimizer):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".nnlayers-", suffix=".npz.tmp", dir=folder)
    os.close(fd)
    try:
        from .io import save

        save(model, tmp, optimizer=optimizer)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class ModelCheckpoint(Callback):
    """Save the model (and fit's optimizer, so training can resume) after
    epochs. ``ModelCheckpoint(path, monitor="val_loss",
    save_best_only=False, mode="auto", save_optimizer=True)``: every epoch,
    or only when the monitored value improves. ``path`` may contain
    ``{epoch}`` (counted from 1, as Keras) and log keys, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``. The file is written
    atomically (a temporary file renamed onto it), so a crash mid-write
    never leaves a broken checkpoint."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 save_optimizer=True):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.save_best_only = bool(save_best_only)
        self.save_optimizer = bool(save_optimizer)
        self._mon = _Monitor(monitor, mode, 0)

    monitor = property(lambda self: self._mon.monitor)

    def _monitored(self):
        return self._mon if self.save_best_only else None

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            v = self._mon.value(logs, "ModelCheckpoint")
            if not self._mon.improves(v):
                return
            self._mon.best = v
        path = self.path.format(epoch=epoch + 1, **(logs or {}))
        _atomic_save(self.model, path, self.model.optimizer if self.save_optimizer else None)
        self.last_path = path

    def __repr__(self):
        return (f"ModelCheckpoint({self.path!r}, monitor={self.monitor!r}, "
                f"save_best_only={self.save_best_only})")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs
    without improvement of the monitored value (Keras's rule):
    ``ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10,
    min_lr=0, mode="auto", min_delta=1e-4, cooldown=0)``. Every group of
    fit's optimizer is scaled, never below ``min_lr``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_lr=0.0, mode="auto",
                 min_delta=1e-4, cooldown=0):
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"factor must be in (0, 1) (a reduction), got {factor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not float(min_lr) >= 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        self.factor, self.patience = float(factor), patience
        self.min_lr, self.cooldown = float(min_lr), int(cooldown)
        self._mon = _Monitor(monitor, mode, min_delta)

    monitor = property(lambda self: self._mon.monitor)

    def _monitored(self):
        return self._mon

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_left = 0
        self._mon.best = math.inf if self._mon.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        v = self._mon.value(logs, "ReduceLROnPlateau")
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._mon.improves(v):
            self._mon.best, self.wait = v, 0
            return
        if self.cooldown_left > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            opt = self.model.optimizer
            for i, group in enumerate(opt.param_groups):
                new = max(group["lr"] * self.factor, self.min_lr)
                if new < group["lr"]:
                    opt.set_hyper("lr", new, group=i)
            self.cooldown_left, self.wait = self.cooldown, 0
        if logs is not None:
            logs["lr"] = self.model.optimizer.lr

    def __repr__(self):
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, min_lr={self.min_lr})")


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file (``epoch`` first,
    then the keys in order). ``append=True`` adds to an existing file."""

    def __init__(self, path, separator=",", append=False):
        self.path = os.fspath(path)
        self.separator = separator
        self.append = bool(append)
        self._file = self._writer = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._keys = None
        self._header = not exists

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self._writer is None:
            self._keys = list(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self._keys,
                                          delimiter=self.separator)
            if self._header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None

    def __repr__(self):
        return f"CSVLogger({self.path!r})"


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda
    epoch, logs: ...)``; any of on_train_begin(logs), on_train_end(logs),
    on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs) and
    on_batch_end(batch, logs) (the last makes fit call back per batch)."""

    _names = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
              "on_batch_end")

    def __init__(self, **hooks):
        unknown = set(hooks) - set(self._names)
        if unknown:
            raise TypeError(f"LambdaCallback takes {', '.join(self._names)}; got "
                            f"{sorted(unknown)}")
        for name, fn in hooks.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self._hooks = {k: v for k, v in hooks.items() if v is not None}
        self._per_batch = "on_batch_end" in self._hooks

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_batch_end(self, batch, logs=None):
        self._call("on_batch_end", batch, logs)

    def _call(self, name, *args):
        fn = self._hooks.get(name)
        if fn is not None:
            fn(*args)

    def __repr__(self):
        return f"LambdaCallback({', '.join(self._hooks)})"


class TerminateOnNaN(Callback):
    """What fit does when a loss becomes NaN or infinite (the C loop then
    stops before that batch's update). On by default: fit adds one unless
    ``callbacks`` has one. ``raise_error=True`` (the default) raises
    ``nl.NonFiniteLossError`` naming the epoch and batch; ``False`` stops
    training quietly (Keras's TerminateOnNaN), keeping the epochs done."""

    def __init__(self, raise_error=True):
        self.raise_error = bool(raise_error)

    def on_nonfinite(self, epoch, batch, loss):
        """Called by fit at a non-finite loss (batch counted from 0)."""
        if self.raise_error:
            raise _core.NonFiniteLossError(
                f"epoch {epoch + 1}: the loss became non-finite ({loss:g}) at batch "
                f"{batch + 1} (counting from 1); training stopped before that batch's update")
        self.model.stop_training = True

    def __repr__(self):
        return f"TerminateOnNaN(raise_error={self.raise_error})"

