"""Spirals: a two-layer softmax network against softmax regression.

Both models are trained with SoftmaxCrossEntropy and SGD (momentum 0.9)
on the same interleaved spirals:

* softmax regression: one ``Linear(2, C)`` -- its decision boundaries are
  straight lines, so on two interleaved spirals it stays near chance;
* a two-layer network: ``Linear(2, H) - ReLU - Linear(H, C)`` -- the hidden
  ReLU layer bends the boundary along the arms.

Run: ``python examples/spirals.py``
"""
import os
import sys
import time

try:
    import nnlayers as nl
except ImportError:  # a source checkout built in place: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nnlayers as nl
from nnlayers.datasets import make_spirals, train_test_split

# ---- configuration -------------------------------------------------------
N_SAMPLES = 1000
N_CLASSES = 2
NOISE = 0.05
HIDDEN = 128
EPOCHS = 200
BATCH_SIZE = 32
LR = 0.05
MOMENTUM = 0.9
SEED = 0


def train(model, X, y, epochs, lr, batch_size, seed):
    """Fit ``model`` with SoftmaxCrossEntropy and SGD; returns the History."""
    opt = nl.SGD(model, lr=lr, momentum=MOMENTUM)
    return model.fit(X, y, loss=nl.SoftmaxCrossEntropy(), optimizer=opt, epochs=epochs,
                     batch_size=batch_size, seed=seed, verbose=0)


def main(n_samples=N_SAMPLES, n_classes=N_CLASSES, noise=NOISE, hidden=HIDDEN,
         epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, seed=SEED, verbose=True):
    """Train both models; returns a dict with ``network_accuracy``,
    ``linear_accuracy`` (test), their train accuracies, ``gap`` and the
    trained ``network`` / ``linear`` models."""
    X, y = make_spirals(n_samples, n_classes=n_classes, noise=noise, seed=seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=seed)

    network = nl.Sequential(nl.Linear(2, hidden, seed=seed), nl.ReLU(),
                            nl.Linear(hidden, n_classes, seed=seed + 1))
    linear = nl.Sequential(nl.Linear(2, n_classes, seed=seed))

    results = {}
    for name, model in (("network", network), ("linear", linear)):
        t0 = time.perf_counter()
        train(model, X_train, y_train, epochs, lr, batch_size, seed)
        results[f"{name}_seconds"] = time.perf_counter() - t0
        results[f"{name}_train_accuracy"] = model.evaluate(X_train, y_train)["accuracy"]
        results[f"{name}_accuracy"] = model.evaluate(X_test, y_test)["accuracy"]
    results["gap"] = results["network_accuracy"] - results["linear_accuracy"]
    results.update(network=network, linear=linear, n_classes=n_classes)

    if verbose:
        print(f"{n_classes} interleaved spirals: {len(X_train)} training / {len(X_test)} test "
              f"points, noise {noise}; {epochs} epochs of SGD (lr {lr}, momentum {MOMENTUM})")
        rows = (("softmax regression", f"Linear(2,{n_classes})", "linear"),
                ("two-layer network", f"Linear(2,{hidden})-ReLU-Linear({hidden},{n_classes})",
                 "network"))
        for title, arch, key in rows:
            print(f"  {title:<19} {arch:<34} test accuracy {results[key + '_accuracy']:.3f} "
                  f"(train {results[key + '_train_accuracy']:.3f}, "
                  f"{results[key + '_seconds']:.2f} s)")
        print(f"  gap: {results['gap']:+.3f} (chance is {1 / n_classes:.3f})")
    return results


if __name__ == "__main__":
    main()
