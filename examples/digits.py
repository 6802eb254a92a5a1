"""Handwritten digits (8x8, scikit-learn's ``load_digits``) with an MLP
trained by Adam under a cosine learning-rate schedule with early stopping,
timed against scikit-learn's ``MLPClassifier(solver="adam")``.

Needs the optional extra scikit-learn (``pip install nnlayers[examples]``).

The images (1797 x 64 grey levels 0..16) are split 75/25 with a fixed
seed and standardised with the training part's per-pixel mean and
standard deviation; the standard deviation is floored at one grey level
so that the almost-always-blank border pixels are not blown up into huge
values by a rare stroke. The network: one hidden ReLU layer, softmax
output, cross-entropy. nnlayers trains it with the toolbox:

- ``nl.Adam`` with L2 weight decay;
- ``nl.schedules.CosineAnnealingLR`` over the epochs (stepped by fit after
  each epoch);
- ``validation_split``: the last tenth of the training rows (before
  shuffling) is held out, and ``nl.callbacks.EarlyStopping`` watches its
  loss; with ``restore_best_weights=True`` the model ends with the weights
  of its best epoch, also when the epochs run out first.

``MLPClassifier(solver="adam")`` runs the same network, batch size, rate,
Adam betas and epsilon for the same number of epochs on all the training
rows, at a constant rate (it has no schedule). Its ``alpha`` adds
``alpha * W / batch_size`` to each minibatch gradient, so
``alpha = weight_decay * batch_size`` gives nnlayers' L2 decay
(scikit-learn does not decay biases; nnlayers does); ``tol=0`` and
``n_iter_no_change=max_iter`` make it run every epoch. Initialisations
differ (He for nnlayers, Glorot for scikit-learn). Since nnlayers may stop
early, the speed ratio is given per epoch as well as per fit.

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
HIDDEN = (256,)       # hidden layer widths: 64-256-10
EPOCHS = 60           # at most; the cosine schedule spans them
BATCH_SIZE = 32
LR = 3e-3             # Adam's starting rate, annealed to 0
WEIGHT_DECAY = 1e-4
VALIDATION_SPLIT = 0.1
PATIENCE = 10         # epochs without a better validation loss before stopping
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


def main(hidden=HIDDEN, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
         weight_decay=WEIGHT_DECAY, validation_split=VALIDATION_SPLIT, patience=PATIENCE,
         test_size=TEST_SIZE, seed=SEED, threads=THREADS, compare_sklearn=True, verbose=True):
    """Train, evaluate and (optionally) time against MLPClassifier.

    Returns a dict with ``accuracy`` (nnlayers, test), ``train_accuracy``,
    ``fit_seconds``, ``epochs_run``, ``best_epoch`` (0-based, whose weights
    the model holds), the ``model``, its ``history`` and the
    ``early_stopping`` callback; with ``compare_sklearn`` also
    ``sklearn_accuracy``, ``sklearn_fit_seconds``, ``sklearn_n_iter``,
    ``speedup`` (sklearn time / nnlayers time) and ``speedup_per_epoch``.
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
        opt = nl.Adam(model, lr=lr, weight_decay=weight_decay)
        schedule = nl.schedules.CosineAnnealingLR(opt, T_max=epochs)
        stop = nl.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=True)
        t0 = time.perf_counter()
        history = model.fit(X_train, y_train, loss=nl.SoftmaxCrossEntropy(), optimizer=opt,
                            epochs=epochs, batch_size=batch_size, shuffle=True, seed=seed,
                            validation_split=validation_split, schedule=schedule,
                            callbacks=[stop], verbose=0)
        results["fit_seconds"] = time.perf_counter() - t0
        results["train_accuracy"] = model.evaluate(X_train, y_train)["accuracy"]
        results["accuracy"] = model.evaluate(X_test, y_test)["accuracy"]
        results.update(model=model, history=history, early_stopping=stop,
                       epochs_run=len(history.epoch), best_epoch=stop.best_epoch)

        if compare_sklearn:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPClassifier

            clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), activation="relu",
                                solver="adam", learning_rate_init=lr, beta_1=0.9,
                                beta_2=0.999, epsilon=1e-8, alpha=weight_decay * batch_size,
                                batch_size=batch_size, max_iter=epochs, shuffle=True, tol=0.0,
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
            results["speedup_per_epoch"] = ((results["sklearn_fit_seconds"] /
                                             results["sklearn_n_iter"]) /
                                            (results["fit_seconds"] / results["epochs_run"]))
    finally:
        if limits is not None:
            limits.restore_original_limits()
        nl.set_num_threads(old_threads)

    if verbose:
        print(f"digits: {len(X_train)} training images ({validation_split:.0%} of them held "
              f"out for validation) / {len(X_test)} test images; MLP {arch} (ReLU), "
              f"Adam lr={lr} weight_decay={weight_decay}, cosine schedule, early stopping "
              f"(patience {patience}), batch {batch_size}, at most {epochs} epochs, "
              f"{'default' if threads is None else threads} BLAS thread(s)")
        print(f"  nnlayers       fit {results['fit_seconds']:7.3f} s   "
              f"test accuracy {results['accuracy']:.4f} (train {results['train_accuracy']:.4f})"
              f"   {results['epochs_run']} epochs, best {results['best_epoch'] + 1}")
        if compare_sklearn:
            print(f"  MLPClassifier  fit {results['sklearn_fit_seconds']:7.3f} s   "
                  f"test accuracy {results['sklearn_accuracy']:.4f} "
                  f"({results['sklearn_n_iter']} epochs, solver adam)")
            print(f"  speed ratio (MLPClassifier time / nnlayers time): "
                  f"{results['speedup']:.1f}x per fit, {results['speedup_per_epoch']:.1f}x "
                  f"per epoch")
    return results


if __name__ == "__main__":
    main()
