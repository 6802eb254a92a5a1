"""Small synthetic data sets for examples and tests (plain NumPy).

* :func:`make_spirals` -- interleaved 2-D spirals, one arm per class; no
  linear classifier separates them, a small MLP does.
* :func:`make_xor` -- the four XOR points of the lecture notes.
* :func:`train_test_split` -- a seeded random held-out split.
* :func:`load_digits_split` -- scikit-learn's digits, split and
  standardised (needs scikit-learn).
"""
import numbers

import numpy as np

__all__ = ["make_spirals", "make_xor", "train_test_split", "load_digits_split"]


def make_spirals(n_samples=600, n_classes=2, noise=0.05, turns=1.5, seed=None,
                 dtype=np.float32):
    """Interleaved spirals in the plane, one arm per class.

    Arm ``k`` (of ``C = n_classes``) is the curve
    ``r(t) (cos θ, sin θ)`` with ``r(t) = t``, ``θ = 2π (turns · t + k / C)``
    for ``t`` in (0, 1]; points are drawn at uniformly spaced ``t`` (with
    a random offset) and Gaussian noise of standard deviation
    ``noise`` is added to each coordinate. The arms wind around each other,
    so softmax regression stays near chance while a network with one
    hidden layer of a few dozen ReLUs separates them.

    Parameters
    ----------
    n_samples : int
        Total number of points, split as evenly as possible between the
        classes (the first ``n_samples % n_classes`` classes get one more).
    n_classes : int >= 2
        Number of arms / classes (2 or 3 are typical).
    noise : float >= 0
        Standard deviation of the Gaussian noise (the spiral has radius 1).
    turns : float > 0
        How many times each arm winds around the origin.
    seed : int, numpy Generator or None
        Makes the draw reproducible.
    dtype : numpy.float32 (default) or numpy.float64
        dtype of ``X``.

    Returns
    -------
    X : ndarray (n_samples, 2) of ``dtype``
    y : ndarray (n_samples,) of int64, class ids in ``[0, n_classes)``.
        Rows are in random order.
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_classes = _check_int(n_classes, "n_classes", 2)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if not turns > 0:
        raise ValueError(f"turns must be > 0, got {turns!r}")
    rng = np.random.default_rng(seed)
    counts = np.full(n_classes, n_samples // n_classes)
    counts[: n_samples % n_classes] += 1
    xs, ys = [], []
    for k, m in enumerate(counts):
        if m == 0:
            continue
        # evenly spaced along the arm, starting a little off the centre
        t = 0.05 + 0.95 * (np.arange(m) + rng.uniform(0, 1, m)) / m
        theta = 2.0 * np.pi * (turns * t + k / n_classes)
        pts = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
        pts += noise * rng.standard_normal(pts.shape)
        xs.append(pts)
        ys.append(np.full(m, k, dtype=np.int64))
    X = np.concatenate(xs)
    y = np.concatenate(ys)
    order = rng.permutation(n_samples)
    return np.ascontiguousarray(X[order], dtype=dtype), y[order]


def make_xor(dtype=np.float32):
    """The four XOR points and their labels.

    Returns
    -------
    X : ndarray (4, 2) of ``dtype``: rows (0,0), (0,1), (1,0), (1,1)
    y : ndarray (4,) of int64: 0, 1, 1, 0
    """
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return X, y


def train_test_split(X, y, test_size=0.25, seed=None):
    """Split ``X`` and ``y`` row-wise into a random train and test part.

    Parameters
    ----------
    X : array (n, ...); y : array (n, ...)
    test_size : float in (0, 1) (share of rows) or int (number of rows)
        A float is rounded up: ``ceil(test_size * n)`` rows go to the test
        part. Both parts get at least one row.
    seed : int, numpy Generator or None
        Makes the permutation reproducible.

    Returns
    -------
    X_train, X_test, y_train, y_test
        Copies of the selected rows (dtypes kept).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError("X and y must have at least one dimension")
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X and y must have the same number of rows, got {n} and {y.shape[0]}")
    if n < 2:
        raise ValueError(f"need at least 2 rows to split, got {n}")
    if isinstance(test_size, bool):
        raise TypeError("test_size must be a float in (0, 1) or an int")
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
    elif isinstance(test_size, numbers.Real):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size as a share must be in (0, 1), got {test_size!r}")
        n_test = int(np.ceil(test_size * n))
    else:
        raise TypeError(f"test_size must be a float in (0, 1) or an int, "
                        f"got {type(test_size).__name__}")
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_size gives {n_test} test rows out of {n}; "
                         f"need between 1 and {n - 1}")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


def load_digits_split(test_size=0.25, seed=0, dtype=np.float32):
    """scikit-learn's 8x8 handwritten digits (1797 x 64 grey levels 0..16),
    split with :func:`train_test_split` and standardised with the training
    part's per-pixel mean and standard deviation; the standard deviation
    is floored at one grey level so that the almost-always-blank border
    pixels are not blown up into huge values by a rare stroke.

    Needs scikit-learn (imported here only). Returns
    ``X_train, X_test, y_train, y_test`` (X of ``dtype``, y int64).
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(dtype), y.astype(np.int64), test_size=test_size, seed=seed)
    mean = X_train.mean(axis=0)
    std = np.maximum(X_train.std(axis=0), 1.0)   # at least one grey level
    return (((X_train - mean) / std).astype(dtype), ((X_test - mean) / std).astype(dtype),
            y_train, y_test)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
