"""Metrics for ``fit(metrics=...)`` and ``evaluate(metrics=...)``.

Built-in names, each a C kernel (csrc/core/loss.c) so that training
computes them inside the C step as it computes the loss:

* ``"accuracy"``: argmax against the class (C > 1); for one output, the
  prediction against a threshold (0 for logits, 0.5 for probabilities,
  from the loss's ``from_logits``) — the loss decides what the output
  means;
* ``"mse"``: the plain mean squared error over all outputs, as
  scikit-learn's ``mean_squared_error`` and Keras compute it (``nl.MSE``,
  the loss, is ½ of the squared error summed over outputs);
* ``"mae"``: the mean absolute error;
* ``"binary_accuracy"``: per output, the prediction against the threshold
  compared with the target > 0.5, averaged;
* ``"top_k_accuracy"``: the class among the k = 5 largest outputs
  (``"top_k_categorical_accuracy"``, Keras's name, is the same).

During fit, the built-in metrics are sums over the rows of each batch as
it trained, weighted by ``sample_weight``/``class_weight`` as the loss
is, divided by the rows seen.

A callable ``f(y_true, y_pred) -> float`` is a metric too: it sees NumPy
arrays, on the validation data after each epoch, and on the training data
after each epoch (one extra pass of predict over it, the weights of the
epoch's end; built-in metrics instead average over the epoch's batches as
they trained, as Keras does).
"""
import numpy as np

__all__ = ["BUILTIN", "resolve_metrics", "c_metrics"]

BUILTIN = ("accuracy", "mse", "mae", "binary_accuracy", "top_k_accuracy")
ALIASES = {"acc": "accuracy", "top_k_categorical_accuracy": "top_k_accuracy"}
# the C kernels' names (csrc/py/loss.c) where they differ
_C_NAMES = {"top_k_accuracy": "top_k_categorical_accuracy"}


class _Metric:
    """A metric as fit and evaluate use it: a built-in name, or a callable
    logged under its __name__."""

    __slots__ = ("name", "fn")

    def __init__(self, name, fn=None):
        self.name, self.fn = name, fn

    def __repr__(self):
        return f"metric {self.name!r}"


def resolve_metrics(metrics):
    """The list of metrics from names and callables; ValueError naming an
    unknown one."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    out, seen = [], set()
    for i, m in enumerate(metrics):
        if isinstance(m, str):
            name = ALIASES.get(m, m)
            if name not in BUILTIN:
                raise ValueError(f"metrics[{i}]: unknown metric {m!r}; the built-in ones are "
                                 f"{', '.join(BUILTIN)}, or pass a callable "
                                 f"f(y_true, y_pred) -> float")
            met = _Metric(name)
        elif callable(m):
            met = _Metric(getattr(m, "__name__", f"metric_{i}"), m)
        else:
            raise TypeError(f"metrics[{i}] must be a name or a callable, got "
                            f"{type(m).__name__}")
        if met.name in seen:
            raise ValueError(f"metrics: {met.name!r} is given twice")
        seen.add(met.name)
        out.append(met)
    return out


def value(metric, loss, pred, target):
    """One metric on predictions and targets (a float)."""
    if metric.fn is not None:
        return float(metric.fn(np.asarray(target), np.asarray(pred)))
    n = np.asarray(pred).shape[0]
    return loss._metric(_C_NAMES.get(metric.name, metric.name), pred, target) / n if n \
        else float("nan")


def c_metrics(metric_list, n_outputs):
    """What fit asks its C loop to sum (``_fit_epoch(metrics=)``): one
    tuple of built-in names per output, or None when there are none
    (accuracy comes with every classification loss anyway)."""
    names = tuple(_C_NAMES.get(m.name, m.name) for m in metric_list
                  if m.fn is None and m.name != "accuracy")
    return [names] * n_outputs if names else None


def epoch_metrics(model, metric_list, X, y, metric_sums, seen):
    """The metrics an epoch of fit logs besides the loss: built-in ones
    from the sums its C loop returned (metric_sums: one dict per output,
    or None), callables on the training data after the epoch."""
    out = {}
    callables = [m for m in metric_list if m.fn is not None]
    for m in metric_list:
        if m.fn is not None or m.name == "accuracy":
            continue
        for j, name in enumerate(model._output_names):
            key = m.name if not model._multi_out else f"{name}_{m.name}"
            s = metric_sums[j][_C_NAMES.get(m.name, m.name)]
            out[key] = s / seen if seen else float("nan")
    if callables:
        preds = model.predict(X)
        ps = preds if model._multi_out else [preds]
        ys = y if model._multi_out else [y]
        for m in callables:
            for j, name in enumerate(model._output_names):
                key = m.name if not model._multi_out else f"{name}_{m.name}"
                out[key] = float(m.fn(np.asarray(ys[j]), ps[j]))
    return out
