"""Handwritten digits (8x8, scikit-learn's ``load_digits``) with an MLP,
timed against scikit-learn's ``MLPClassifier`` trained the same way.

Needs the optional extra scikit-learn (``pip install nnlayers[examples]``).

The images (1797 x 64 grey levels 0..16) are split 75/25 with a fixed
seed and standardised with the training part's per-pixel mean and
standard deviation; the standard deviation is floored at one grey level
so that the almost-always-blank border pixels are not blown up into huge
values by a rare stroke. Then the same network -- one hidden ReLU layer,
softmax output, cross-entropy, minibatch SGD with momentum and L2 weight
decay, a fixed number of epochs -- is trained by nnlayers
(``Sequential.fit``) and by ``MLPClassifier(solver="sgd")``.

Matching the two: scikit-learn's ``alpha`` adds ``alpha * W / batch_size``
to each minibatch gradient, so ``alpha = weight_decay * batch_size`` gives
the same decay (scikit-learn does not decay biases; nnlayers does). Its
momentum update ``v = mu v - lr g; w += v`` equals nnlayers' (torch's)
rule with a constant learning rate; ``nesterovs_momentum=False``,
``tol=0`` and ``n_iter_no_change=max_iter`` make it run every epoch.
Initialisations differ (He for nnlayers, Glorot for scikit-learn).

Both run with ``THREADS`` BLAS threads (nnlayers' own OpenBLAS via
``nl.set_num_threads``, NumPy's via threadpoolctl): at these matrix sizes
extra threads do not help, and oversubscribed OpenBLAS thread pools make
timings erratic.

Run: ``python examples/digits.py``
"""
import os
import sys
import time
import warnings

import numpy as np

try:
    import nnlayers as nl
except ImportError:  # a source checkout built in place: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nnlayers as nl
from nnlayers.datasets import load_digits_split

# ---- configuration -------------------------------------------------------
HIDDEN = (128,)       # hidden layer widths: 64-128-10
EPOCHS = 40
BATCH_SIZE = 32
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
TEST_SIZE = 0.25
SEED = 0              # the split, the initialisation and the shuffling
THREADS = 1           # BLAS threads for both libraries (None: leave as is)


def load_data(test_size=TEST_SIZE, seed=SEED):
    """Digits as float32, split and standardised (``nnlayers.datasets``);
    returns ``X_train, X_test, y_train, y_test``."""
    return load_digits_split(test_size=test_size, seed=seed, dtype=np.float32)


def build_model(n_in, hidden, n_out, seed=SEED):
    """``Linear - ReLU - ... - Linear`` with the given hidden widths."""
    sizes = (n_in,) + tuple(hidden) + (n_out,)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nl.Linear(sizes[i], sizes[i + 1], seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nl.ReLU())
    return nl.Sequential(*layers)


def main(hidden=HIDDEN, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, momentum=MOMENTUM,
         weight_decay=WEIGHT_DECAY, test_size=TEST_SIZE, seed=SEED, threads=THREADS,
         compare_sklearn=True, verbose=True):
    """Train, evaluate and (optionally) time against MLPClassifier.

    Returns a dict with ``accuracy`` (nnlayers, test), ``train_accuracy``,
    ``fit_seconds``, the ``model`` and its ``history``; with
    ``compare_sklearn`` also ``sklearn_accuracy``, ``sklearn_fit_seconds``,
    ``sklearn_n_iter`` and ``speedup`` (sklearn time / nnlayers time).
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    X_train, X_test, y_train, y_test = load_data(test_size, seed)
    n_classes = int(y_train.max()) + 1
    arch = "-".join(str(s) for s in (X_train.shape[1],) + tuple(hidden) + (n_classes,))
    results = {"architecture": arch, "epochs": epochs, "batch_size": batch_size,
               "threads": threads}

    old_threads = nl.get_num_threads()
    limits = threadpool_limits(limits=threads) if threads is not None else None
    try:
        if threads is not None:
            nl.set_num_threads(threads)
        model = build_model(X_train.shape[1], hidden, n_classes, seed)
        opt = nl.SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
        t0 = time.perf_counter()
        history = model.fit(X_train, y_train, loss=nl.SoftmaxCrossEntropy(), optimizer=opt,
                            epochs=epochs, batch_size=batch_size, shuffle=True, seed=seed,
                            verbose=0)
        results["fit_seconds"] = time.perf_counter() - t0
        results["train_accuracy"] = model.evaluate(X_train, y_train)["accuracy"]
        results["accuracy"] = model.evaluate(X_test, y_test)["accuracy"]
        results.update(model=model, history=history)

        if compare_sklearn:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPClassifier

            clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), activation="relu",
                                solver="sgd", learning_rate="constant", learning_rate_init=lr,
                                momentum=momentum, nesterovs_momentum=False,
                                alpha=weight_decay * batch_size, batch_size=batch_size,
                                max_iter=epochs, shuffle=True, tol=0.0,
                                n_iter_no_change=epochs, early_stopping=False,
                                random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                clf.fit(X_train, y_train)
                results["sklearn_fit_seconds"] = time.perf_counter() - t0
            results["sklearn_accuracy"] = float(clf.score(X_test, y_test))
            results["sklearn_n_iter"] = int(clf.n_iter_)
            results["speedup"] = results["sklearn_fit_seconds"] / results["fit_seconds"]
    finally:
        if limits is not None:
            limits.restore_original_limits()
        nl.set_num_threads(old_threads)

    if verbose:
        print(f"digits: {len(X_train)} training / {len(X_test)} test images; MLP {arch} (ReLU), "
              f"SGD lr={lr} momentum={momentum} weight_decay={weight_decay}, "
              f"batch {batch_size}, {epochs} epochs, "
              f"{'default' if threads is None else threads} BLAS thread(s)")
        print(f"  nnlayers       fit {results['fit_seconds']:7.3f} s   "
              f"test accuracy {results['accuracy']:.4f} (train {results['train_accuracy']:.4f})")
        if compare_sklearn:
            print(f"  MLPClassifier  fit {results['sklearn_fit_seconds']:7.3f} s   "
                  f"test accuracy {results['sklearn_accuracy']:.4f} "
                  f"({results['sklearn_n_iter']} epochs)")
            print(f"  speed ratio (MLPClassifier time / nnlayers time): {results['speedup']:.1f}x")
    return results


if __name__ == "__main__":
    main()
