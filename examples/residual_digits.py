"""Handwritten digits (8x8, scikit-learn's ``load_digits``) with a
residual network built as a graph (``nl.Model``, Keras's functional API).

Needs the optional extra scikit-learn (``pip install nnlayers[examples]``).

The network::

    x (64) -> Linear 128 -> ReLU = h
    h -> Linear 128 -> ReLU -> Linear 128 = r       (the residual branch)
    Add(h, r) -> ReLU -> Linear 10                  (the skip joins it)

Back-propagation through the skip is the multi-path chain rule of the
lecture notes: ``h`` feeds two consumers (the branch and the Add), so its
gradient is the sum of both. The data are split 75/25 with a fixed seed
and standardised as in ``digits.py``; training is minibatch SGD with
momentum and L2 weight decay. The script prints the test accuracy (at
least 0.97 with this configuration) and that of the plain chain of the
same layers without the skip, for comparison.

Run: ``python examples/residual_digits.py``
"""
import os
import sys

import numpy as np

try:
    import nnlayers as nl
except ImportError:  # a source checkout built in place: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nnlayers as nl
from nnlayers.datasets import load_digits_split

# ---- configuration -------------------------------------------------------
WIDTH = 128
EPOCHS = 40
BATCH_SIZE = 32
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-3
TEST_SIZE = 0.25
SEED = 0              # the split, the initialisation and the shuffling


def load_data(test_size=TEST_SIZE, seed=SEED):
    """Digits as float32, split and standardised (``nnlayers.datasets``);
    returns ``X_train, X_test, y_train, y_test``."""
    return load_digits_split(test_size=test_size, seed=seed, dtype=np.float32)


def build_model(n_in, width, n_out, residual=True, seed=SEED):
    """The residual network above (or, with residual=False, the same
    layers as a plain chain)."""
    x = nl.Input(n_in)
    h = nl.ReLU()(nl.Linear(n_in, width, seed=seed)(x))
    r = nl.ReLU()(nl.Linear(width, width, seed=seed + 1)(h))
    r = nl.Linear(width, width, seed=seed + 2)(r)
    joined = nl.Add()([h, r]) if residual else r
    out = nl.Linear(width, n_out, seed=seed + 3)(nl.ReLU()(joined))
    return nl.Model(inputs=x, outputs=out, name="residual" if residual else "chain")


def train(model, X_train, y_train, epochs=EPOCHS, verbose=False):
    opt = nl.SGD(model, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return model.fit(X_train, y_train, loss=nl.SoftmaxCrossEntropy(), optimizer=opt,
                     epochs=epochs, batch_size=BATCH_SIZE, seed=SEED,
                     verbose=1 if verbose else 0)


def main(epochs=EPOCHS, verbose=True):
    """Train both networks; returns their test accuracies."""
    X_train, X_test, y_train, y_test = load_data()
    results = {}
    for residual in (True, False):
        model = build_model(X_train.shape[1], WIDTH, 10, residual=residual)
        train(model, X_train, y_train, epochs=epochs, verbose=False)
        acc = model.evaluate(X_test, y_test, nl.SoftmaxCrossEntropy())["accuracy"]
        results["residual" if residual else "chain"] = acc
        if verbose:
            kind = "residual graph" if residual else "plain chain   "
            print(f"{kind}: {model.num_parameters()} parameters, test accuracy {acc:.4f}")
    return {"test_accuracy": results["residual"], "chain_test_accuracy": results["chain"]}


if __name__ == "__main__":
    main()
