"""Random Fourier features against a trained two-layer ReLU network.

Random Fourier features (Rahimi & Recht): the features
``phi(x) = cos(x W + b)`` with ``W ~ N(0, 2 gamma)`` (entrywise variance)
and ``b ~ U(0, 2 pi)`` satisfy
``E[2 phi(x) . phi(x') / D] = exp(-gamma |x - x'|^2)``: a linear model on
them approximates an RBF-kernel machine. Here the first layer is a frozen
``Linear(2, D)`` (``trainable = False``) whose W and b are drawn once and
written through ``params``, followed by ``Cos`` and a trainable
``Linear(D, C)``; only that last layer learns (a convex problem). The
constant ``sqrt(2 / D)`` of the kernel estimate is left to the trained
output weights.

The comparison is a two-layer ReLU network of the usual kind, where the
first layer is learned too. Both are trained on the same spirals with
SoftmaxCrossEntropy and SGD (momentum, a little weight decay), and the
script checks that the frozen layer's parameters did not move.

Run: ``python examples/random_features.py``
"""
import os
import sys
import time

import numpy as np

try:
    import nnlayers as nl
except ImportError:  # a source checkout built in place: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nnlayers as nl
from nnlayers.datasets import make_spirals, train_test_split

# ---- configuration -------------------------------------------------------
N_SAMPLES = 1000
N_CLASSES = 2
N_FEATURES = 256      # random features D
GAMMA = 20.0          # RBF kernel exp(-gamma |x - x'|^2): W ~ N(0, 2 gamma)
HIDDEN = 64           # width of the trained ReLU network
EPOCHS = 100
BATCH_SIZE = 32
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4   # applied to trainable layers only; the frozen one must not move
SEED = 0


def random_fourier_model(n_in, n_out, n_features=N_FEATURES, gamma=GAMMA, seed=SEED):
    """``Linear(n_in, D)`` frozen at random Fourier weights, ``Cos``, then a
    trainable ``Linear(D, n_out)``."""
    rng = np.random.default_rng(seed)
    features = nl.Linear(n_in, n_features)
    features.params["W"] = rng.normal(0.0, np.sqrt(2.0 * gamma), size=(n_in, n_features))
    features.params["b"] = rng.uniform(0.0, 2.0 * np.pi, size=n_features)
    features.trainable = False
    return nl.Sequential(features, nl.Cos(),
                         nl.Linear(n_features, n_out, init="glorot", seed=seed + 1))


def main(n_samples=N_SAMPLES, n_classes=N_CLASSES, n_features=N_FEATURES, gamma=GAMMA,
         hidden=HIDDEN, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
         weight_decay=WEIGHT_DECAY, seed=SEED, verbose=True):
    """Train both models on spirals. Returns a dict with the test
    accuracies ``rff_accuracy`` and ``network_accuracy``, the trained
    models ``rff_model`` / ``network``, ``frozen_initial`` (copies of the
    frozen layer's W and b before training) and ``frozen_unchanged``."""
    X, y = make_spirals(n_samples, n_classes=n_classes, seed=seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=seed)

    rff = random_fourier_model(2, n_classes, n_features=n_features, gamma=gamma, seed=seed)
    frozen_initial = {k: np.array(v, copy=True) for k, v in rff[0].params.items()}
    network = nl.Sequential(nl.Linear(2, hidden, seed=seed), nl.ReLU(),
                            nl.Linear(hidden, n_classes, seed=seed + 1))

    results = {}
    for name, model in (("rff", rff), ("network", network)):
        opt = nl.SGD(model, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
        t0 = time.perf_counter()
        model.fit(X_train, y_train, loss=nl.SoftmaxCrossEntropy(), optimizer=opt,
                  epochs=epochs, batch_size=batch_size, seed=seed, verbose=0)
        results[f"{name}_seconds"] = time.perf_counter() - t0
        results[f"{name}_train_accuracy"] = model.evaluate(X_train, y_train)["accuracy"]
        results[f"{name}_accuracy"] = model.evaluate(X_test, y_test)["accuracy"]
        results[f"{name}_trainable_parameters"] = int(sum(
            v.size for layer in model for v in layer.params.values() if layer.trainable))

    unchanged = all(np.array_equal(rff[0].params[k], v) for k, v in frozen_initial.items())
    results.update(rff_model=rff, network=network, frozen_initial=frozen_initial,
                   frozen_unchanged=unchanged)

    if verbose:
        print(f"{n_classes} spirals: {len(X_train)} training / {len(X_test)} test points; "
              f"{epochs} epochs of SGD (lr {lr}, momentum {MOMENTUM}, weight decay {weight_decay})")
        print(f"  random Fourier features  frozen Linear(2,{n_features}) + Cos + "
              f"Linear({n_features},{n_classes}), gamma={gamma}: test accuracy "
              f"{results['rff_accuracy']:.3f} (train {results['rff_train_accuracy']:.3f}, "
              f"{results['rff_trainable_parameters']} trained parameters, "
              f"{results['rff_seconds']:.2f} s)")
        print(f"  trained ReLU network     Linear(2,{hidden})-ReLU-Linear({hidden},{n_classes}): "
              f"test accuracy {results['network_accuracy']:.3f} "
              f"(train {results['network_train_accuracy']:.3f}, "
              f"{results['network_trainable_parameters']} trained parameters, "
              f"{results['network_seconds']:.2f} s)")
        print(f"  frozen layer unchanged by training: {unchanged}")
    return results


if __name__ == "__main__":
    main()
