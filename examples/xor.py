"""XOR with a 2-2-1 ReLU network: the hand-set solution and learning it.

(a) The lecture notes' exact solution: hidden layer ``h = relu(x W + c)``
    with ``W = [[1, 1], [1, 1]]``, ``c = [0, -1]``, output ``y = h w + b``
    with ``w = [[1], [-2]]``, ``b = 0``, set through ``layer.params``. It
    outputs exactly 0, 1, 1, 0.
(b) Learning XOR from random initialisation with full-batch gradient
    descent (``train_step`` on the four points): the share of seeds that
    end with all four points classified correctly, for the minimal 2-2-1
    network and for a wider hidden layer. Narrow ReLU networks often get
    stuck (dead units, bad local minima); wider ones almost never do.

Run: ``python examples/xor.py``
"""
import os
import sys

import numpy as np

try:
    import nnlayers as nl
except ImportError:  # a source checkout built in place: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nnlayers as nl
from nnlayers.datasets import make_xor

# ---- configuration -------------------------------------------------------
SEEDS = 20            # random initialisations per architecture
HIDDEN = (2, 16)      # hidden widths compared: the minimal one and a wider one
STEPS = 2000          # full-batch gradient steps
LR = 0.1
LOSS = "mse"          # "mse" (linear output, threshold 0.5) or "bce" (logit, threshold 0)


def hand_set_network(dtype=np.float64):
    """The 2-2-1 ReLU network of the lecture notes with its exact weights."""
    model = nl.Sequential(nl.Linear(2, 2, dtype=dtype), nl.ReLU(), nl.Linear(2, 1, dtype=dtype))
    model[0].params["W"] = [[1, 1], [1, 1]]
    model[0].params["b"] = [0, -1]
    model[2].params["W"] = [[1], [-2]]
    model[2].params["b"] = [0]
    return model


def train_xor(hidden, seed, steps=STEPS, lr=LR, loss=LOSS):
    """Train a 2-hidden-1 ReLU network on XOR from a seeded random start.

    Returns ``(success, outputs)``: whether all four points end up on the
    right side of the threshold, and the final outputs (4,).
    """
    X, y = make_xor()
    target = y.reshape(-1, 1).astype(np.float32)
    model = nl.Sequential(nl.Linear(2, hidden, seed=2 * seed), nl.ReLU(),
                          nl.Linear(hidden, 1, seed=2 * seed + 1))
    if loss == "mse":
        loss_fn, threshold = nl.MSE(), 0.5
    elif loss == "bce":
        loss_fn, threshold = nl.BinaryCrossEntropy(), 0.0
    else:
        raise ValueError(f"loss must be 'mse' or 'bce', got {loss!r}")
    opt = nl.SGD(model, lr=lr)
    for _ in range(steps):
        model.train_step(X, target, loss_fn, opt)
    out = model.predict(X)[:, 0]
    success = bool(np.array_equal((out > threshold).astype(np.int64), y))
    return success, out


def main(seeds=SEEDS, hidden=HIDDEN, steps=STEPS, lr=LR, loss=LOSS, verbose=True):
    """Run both parts; returns a dict with ``hand_set_outputs`` (list of 4
    floats) and ``success_rates`` (hidden width -> share of ``seeds``
    successful runs), plus the configuration."""
    X, y = make_xor()
    outputs = hand_set_network().predict(X)[:, 0]
    if verbose:
        print("(a) hand-set 2-2-1 ReLU network (W=[[1,1],[1,1]], c=[0,-1], w=[[1],[-2]], b=0)")
        for x, o, t in zip(X, outputs, y):
            print(f"    x={x.astype(int).tolist()}  output={o:g}  target={t}")

    rates = {}
    if verbose:
        print(f"(b) learning XOR from random initialisation: {seeds} seeds, {steps} full-batch "
              f"steps, lr={lr}, loss={loss}")
    for h in hidden:
        wins = sum(train_xor(h, s, steps=steps, lr=lr, loss=loss)[0] for s in range(seeds))
        rates[h] = wins / seeds
        if verbose:
            print(f"    2-{h}-1: {wins}/{seeds} seeds classify all four points correctly "
                  f"(success rate {rates[h]:.2f})")
    return {"hand_set_outputs": outputs.tolist(), "success_rates": rates,
            "seeds": seeds, "steps": steps, "lr": lr, "loss": loss}


if __name__ == "__main__":
    main()
