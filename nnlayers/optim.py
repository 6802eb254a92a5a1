"""SGD: the Python face of the C ``SGD`` type."""
from . import _core

__all__ = ["SGD"]


class SGD(_core.SGD):
    """Stochastic gradient descent with momentum, Nesterov and weight decay.

    ``SGD(model_or_layers, lr, momentum=0.0, nesterov=False, weight_decay=0.0)``
    takes a Sequential, a Layer or an iterable of layers. The update rules
    are torch.optim.SGD's (dampening 0), for each parameter θ with
    gradient g:

        g ← g + λ θ                  (weight_decay λ: the L2 term λΩ(θ), Ω = ½‖θ‖²)
        v ← μ v + g                  (momentum μ > 0; v starts at 0)
        g ← g + μ v  if nesterov else  v
        θ ← θ − η g                  (lr η)

    Layers with ``trainable = False`` are never changed. The momentum state
    lives in one block owned by the optimizer. ``step()`` applies one
    update; ``zero_grad()`` zeroes the gradients it uses.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def __repr__(self):
        cfg = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"SGD({cfg}, layers={len(self.layers)})"

    def __reduce__(self):
        raise TypeError("SGD objects are tied to their layers' memory and do not "
                        "pickle; make a new SGD for the copied model")
