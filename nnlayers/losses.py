"""Losses: the Python face of the C ``Loss`` type.

Every loss averages over the batch (the 1/N of the lecture notes):
``loss.forward(pred, target, sample_weight=None)`` returns a float and
computes dL/dpred in the same pass; ``loss.backward()`` returns that
gradient (N, C). With ``sample_weight`` (N,) (finite, >= 0) the loss is
``1/N Σₙ wₙ Lₙ``: still divided by N, not by Σw (Keras's
"sum_over_batch_size"), so a weight of 2 counts a row twice in the sum.

How the sums over outputs differ (C outputs per row, d = ŷ - y):

==========================  =======================================
``MSE``                     ``1/N Σₙ ½ Σ_c d²`` (summed over outputs,
                            with the ½: the lecture notes)
``Huber``, ``MAE``          ``1/(N C) Σ`` (mean over every element:
                            torch's HuberLoss/L1Loss, Keras's Huber/MAE)
``BinaryCrossEntropy``      summed over the C outputs, averaged over
                            the batch
==========================  =======================================

scikit-learn's and Keras's ``mean_squared_error`` is the mean over all
elements without the ½: it equals ``2 * MSE / C``.
"""
from . import _core

__all__ = ["Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MSE", "NLL",
           "Huber", "MAE", "loss_from_name"]


def _rebuild(cls, config):
    return cls(**config)


class Loss(_core.Loss):
    """Base class of the losses. Targets are validated before any work:
    labels out of range, negative, non-integral or of the wrong count raise
    ``ValueError``. Properties (from the C loss): ``kind``,
    ``from_logits``, ``threshold`` (where a single output counts as
    positive for accuracy: 0 for a logit, 0.5 for a probability),
    ``is_classification``."""

    _kind = None

    def __init__(self, **options):
        super().__init__(self._kind, **options)

    def get_config(self):
        """The constructor's arguments (a JSON-able dict)."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __reduce__(self):
        return (_rebuild, (type(self), self.get_config()))


class SoftmaxCrossEntropy(Loss):
    """Categorical cross-entropy, on logits (default) or on probabilities.

    ``from_logits=True``: softmax and cross-entropy fused, on logits ``z``
    (N, C): ``L = 1/N Σₙ [logsumexp(zₙ) - zₙ[yₙ]]``; gradient
    ``(softmax(z) - onehot(y)) / N`` (with rows ``y``:
    ``(softmax(z)·Σy - y) / N``). Stable for any logits: it works with
    logsumexp, never exp(z) alone.

    ``from_logits=False``: ``pred`` holds probabilities ``p`` (after a
    Softmax), treated as Keras does: each row normalised to sum 1, then
    clipped, ``q = clip(p / Σ_c p_c, ε, 1 - ε)`` with ε = 1e-7, and
    ``L = -1/N Σₙ yₙ · log qₙ``. The gradient is the exact derivative of
    that: 0 for an entry that was clipped, and through the row
    normalisation ``dL/dp_k = (a_k - Σ_c a_c u_c) / (N Σ_c p_c)`` with
    ``u = p / Σp`` and ``a_c = -y_c / u_c`` (0 where clipped). The
    predictions are not checked to be in [0, 1] (Keras clips instead).

    Targets: integer class ids (N,) or (N, 1), or probability / one-hot
    rows (N, C).
    """

    _kind = "softmax_cross_entropy"

    def __init__(self, from_logits=True):
        super().__init__(from_logits=from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy with targets ``y`` in [0, 1], summed over the C
    outputs and averaged over the batch (Keras and torch average over the
    outputs too: divide by C to compare).

    ``from_logits=True``: on logits ``z`` (N, C),
    ``L = 1/N Σ [softplus(z) - y z]`` (the sigmoid is inside); gradient
    ``(sigmoid(z) - y) / N``. Stable for large |z|.

    ``from_logits=False``: on probabilities ``p`` (after a Sigmoid),
    clipped as Keras does, ``q = clip(p, ε, 1 - ε)`` with ε = 1e-7:
    ``L = -1/N Σ [y log q + (1 - y) log(1 - q)]``; gradient
    ``(q - y) / (q (1 - q)) / N``, 0 where ``p`` was clipped. The
    predictions are not checked to be in [0, 1] (Keras clips instead).

    A target of shape (N,) is accepted when C == 1.
    """

    _kind = "binary_cross_entropy"

    def __init__(self, from_logits=True):
        super().__init__(from_logits=from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}


class MSE(Loss):
    """Squared error, the Gaussian output of the notes:
    ``L = 1/N Σₙ ½‖ŷₙ - yₙ‖²`` (averaged over the batch, summed over the C
    outputs, with the ½), gradient ``(ŷ - y) / N``.

    Not the "mean squared error" of scikit-learn, Keras or torch's
    MSELoss, which average over every element and have no ½:
    ``sklearn.metrics.mean_squared_error(y, ŷ) == 2 * MSE()(ŷ, y) / C``.
    """

    _kind = "mse"


class Huber(Loss):
    """Huber loss, the mean over all N·C elements (torch's HuberLoss,
    Keras's Huber): with ``d = ŷ - y``,
    ``h(d) = ½ d²`` for ``|d| <= delta``, ``delta (|d| - ½ delta)`` beyond;
    ``L = 1/(N C) Σ h(d)``; gradient ``clamp(d, -delta, delta) / (N C)``.

    Unlike ``MSE`` (summed over the outputs) it averages over the outputs
    too. ``delta`` must be a finite number > 0 (``ValueError``)."""

    _kind = "huber"

    def __init__(self, delta=1.0):
        super().__init__(delta=delta)

    def get_config(self):
        return {"delta": self.delta}


class MAE(Loss):
    """Mean absolute error over all N·C elements (torch's L1Loss, Keras's
    MeanAbsoluteError): ``L = 1/(N C) Σ |ŷ - y|``; gradient
    ``sign(ŷ - y) / (N C)`` with sign(0) = 0 (torch's subgradient).
    Unlike ``MSE`` it averages over the outputs too."""

    _kind = "mae"


class NLL(Loss):
    """Negative log-likelihood on log-probabilities (pair it with LogSoftmax):
    ``L = -1/N Σₙ logp[n, yₙ]``, averaged over the batch; gradient
    ``-onehot(y) / N``. Targets: class ids (N,) or (N, 1), or rows (N, C)."""

    _kind = "nll"


_CLASSES = (SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, NLL, Huber, MAE)
_BY_NAME = {c._kind: c for c in _CLASSES}
_BY_NAME.update({c.__name__: c for c in _CLASSES})


def loss_from_name(name):
    """A loss from its class name or kind ('SoftmaxCrossEntropy', 'mse',
    'huber', 'mae', ...), with its default options."""
    try:
        return _BY_NAME[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known: {sorted(_BY_NAME)}") from None
