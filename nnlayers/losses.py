"""Losses: the Python face of the C ``Loss`` type.

Every loss averages over the batch (the 1/m of the lecture notes):
``loss.forward(pred, target)`` returns a float and computes dL/dpred in the
same pass; ``loss.backward()`` returns that gradient (N, C).
"""
from . import _core

__all__ = ["Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MSE", "NLL",
           "loss_from_name"]


class Loss(_core.Loss):
    """Base class of the losses. Targets are validated before any work:
    labels out of range, negative, non-integral or of the wrong count raise
    ``ValueError``."""

    _kind = None

    def __init__(self):
        super().__init__(self._kind)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __reduce__(self):
        return (type(self), ())

    @property
    def is_classification(self):
        """Whether accuracy is meaningful for this loss."""
        return self._kind != "mse"


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused, on logits ``z`` (N, C).

    ``L = 1/N Σₙ [logsumexp(zₙ) - zₙ[yₙ]]``, averaged over the batch;
    gradient ``(softmax(z) - onehot(y)) / N``. Targets: integer class ids (N,)
    or probability / one-hot rows (N, C) (then ``(softmax(z)·Σy - y) / N``).
    Stable for any logits: it works with logsumexp, never exp(z) alone.
    """

    _kind = "softmax_cross_entropy"


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits ``z`` (N, C) with targets in [0, 1].

    ``L = 1/N Σ [softplus(z) - y z]`` (the sigmoid is inside), averaged over
    the batch and summed over the C outputs; gradient ``(sigmoid(z) - y) / N``.
    Stable for large |z|. A target of shape (N,) is accepted when C == 1.
    """

    _kind = "binary_cross_entropy"


class MSE(Loss):
    """Squared error, the Gaussian output of the notes:
    ``L = 1/N Σₙ ½‖ŷₙ - yₙ‖²`` (averaged over the batch, summed over
    outputs, with the ½), gradient ``(ŷ - y) / N``. Note: torch's MSELoss
    averages over every element and has no ½."""

    _kind = "mse"


class NLL(Loss):
    """Negative log-likelihood on log-probabilities (pair it with LogSoftmax):
    ``L = -1/N Σₙ logp[n, yₙ]``, averaged over the batch; gradient
    ``-onehot(y) / N``. Targets: class ids (N,) or rows (N, C)."""

    _kind = "nll"


_BY_NAME = {c._kind: c for c in (SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, NLL)}
_BY_NAME.update({c.__name__: c for c in (SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, NLL)})


def loss_from_name(name):
    """A loss from its class name or kind ('SoftmaxCrossEntropy', 'mse', ...)."""
    try:
        return _BY_NAME[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known: {sorted(_BY_NAME)}") from None
