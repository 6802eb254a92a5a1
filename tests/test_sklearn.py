"""nnlayers.sklearn: MLPClassifier and MLPRegressor against scikit-learn.

- scikit-learn's own estimator checks (parametrize_with_checks), none
  expected to fail;
- the training rules against scikit-learn's MLP itself: with the same
  random_state the weights and loss curves agree to float64 rounding for
  SGD (momentum, Nesterov, invscaling, adaptive, early stopping) and Adam,
  shuffled or not, with or without a last partial batch;
- use in Pipeline, cross_val_score, GridSearchCV(n_jobs=2), pickling,
  clone, labels of any type, partial_fit, accuracy on digits;
- ``import nnlayers`` does not import scikit-learn; bad parameters.
"""
import pathlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import nnlayers as nl  # noqa: E402
from nnlayers.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---------------------------------------------------------------- scikit-learn's checks

# max_iter=100 as scikit-learn's own test suite sets for its MLPs; the sgd
# float64 instance runs the other solver and dtype through the same checks
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
                          MLPClassifier(solver="sgd", max_iter=100, dtype=np.float64)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_import_nnlayers_does_not_import_sklearn():
    code = ("import sys, nnlayers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------- same rules as scikit-learn

def _params_diff(a, b):
    return max(float(np.max(np.abs(p - q)))
               for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


def _both(sk_cls, nl_cls, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return (sk_cls(**params).fit(X, y), nl_cls(dtype=np.float64, **params).fit(X, y))


COMMON = dict(hidden_layer_sizes=(7, 5), random_state=3, shuffle=False, batch_size=40,
              alpha=0.01, max_iter=15, tol=0.0)


@pytest.fixture(scope="module")
def three_classes():
    return make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)


@pytest.mark.parametrize("extra", [
    dict(solver="sgd", momentum=0.0, learning_rate_init=0.1),
    dict(solver="sgd", momentum=0.9, learning_rate_init=0.05),
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.05),
    dict(solver="sgd", momentum=0.0, learning_rate="invscaling", learning_rate_init=0.5),
    dict(solver="sgd", momentum=0.0, activation="tanh", learning_rate_init=0.1),
    dict(solver="sgd", momentum=0.0, activation="logistic", learning_rate_init=0.1),
    dict(solver="sgd", momentum=0.0, activation="identity", learning_rate_init=0.05),
    # 108 training rows in batches of 27
    dict(solver="sgd", momentum=0.0, early_stopping=True, batch_size=27,
         learning_rate_init=0.1),
], ids=["sgd", "nesterov", "momentum", "invscaling", "tanh", "logistic", "identity",
        "early_stopping"])
def test_sgd_follows_sklearn_exactly(three_classes, extra):
    X, y = three_classes
    sk, ours = _both(SkClassifier, MLPClassifier, X, y, **{**COMMON, **extra})
    assert _params_diff(sk, ours) < 1e-12
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-12)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.validation_scores_ == sk.validation_scores_
    assert ours.best_loss_ == pytest.approx(sk.best_loss_, rel=1e-12) \
        if sk.best_loss_ is not None else ours.best_loss_ is None


def test_adaptive_learning_rate_and_stopping_follow_sklearn(three_classes):
    X, y = three_classes
    # tol=1 counts every epoch as "no improvement": lr / 5 every 3 epochs, until <= 1e-6
    params = dict(hidden_layer_sizes=(7,), random_state=3, shuffle=False, batch_size=40,
                  max_iter=40, tol=1.0, n_iter_no_change=2, solver="sgd", momentum=0.0,
                  learning_rate="adaptive", learning_rate_init=0.1)
    sk, ours = _both(SkClassifier, MLPClassifier, X, y, **params)
    assert ours.n_iter_ == sk.n_iter_ < 40
    assert ours._optimizer.lr == pytest.approx(sk._optimizer.learning_rate, rel=1e-12)
    assert _params_diff(sk, ours) < 1e-12


@pytest.mark.parametrize("target", ["binary", "multilabel"])
def test_logistic_outputs_follow_sklearn(three_classes, target):
    X, y = three_classes
    yb = y == 1 if target == "binary" else np.stack([y == 1, y == 2], axis=1)
    sk, ours = _both(SkClassifier, MLPClassifier, X, yb, solver="sgd", momentum=0.0,
                     **COMMON)
    assert ours.out_activation_ == sk.out_activation_ == "logistic"
    assert _params_diff(sk, ours) < 1e-12
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))


def test_adam_close_to_sklearn(three_classes):
    """torch's Adam adds epsilon to sqrt(v̂), scikit-learn's to sqrt(v); with
    a tiny epsilon both are the same rule."""
    X, y = three_classes
    sk, ours = _both(SkClassifier, MLPClassifier, X, y, solver="adam", epsilon=1e-12,
                     learning_rate_init=0.01, **COMMON)
    assert _params_diff(sk, ours) < 1e-6
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-6)


@pytest.mark.parametrize("epsilon", [1e-8, 1e-3])
def test_adam_follows_sklearn_with_its_epsilon(three_classes, epsilon):
    """nnlayers.sklearn's Adam adds epsilon where scikit-learn's does
    (nl.Adam(eps_hat=True)), so the weights and loss curve agree at any
    epsilon, not only a negligible one."""
    X, y = three_classes
    sk, ours = _both(SkClassifier, MLPClassifier, X, y, solver="adam", epsilon=epsilon,
                     learning_rate_init=0.01, **COMMON)
    assert ours._optimizer.param_groups[0]["eps_hat"] is True
    assert _params_diff(sk, ours) < 1e-9
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("extra", [
    dict(solver="sgd", momentum=0.9, learning_rate_init=0.05),
    dict(solver="sgd", momentum=0.0, learning_rate="invscaling", learning_rate_init=0.5),
    dict(solver="adam", learning_rate_init=0.01),
    dict(solver="adam", learning_rate_init=0.01, early_stopping=True),
], ids=["sgd", "invscaling", "adam", "adam-early-stopping"])
def test_shuffled_with_a_partial_batch_follows_sklearn(three_classes, extra):
    """shuffle=True draws scikit-learn's row orders from random_state, and
    a last batch smaller than batch_size gets its decay alpha / rows: the
    same weights and loss curve in float64. 120 rows in batches of 50 end
    with 20 (108 and 8 with early stopping's split)."""
    X, y = three_classes
    params = {**COMMON, "shuffle": True, "batch_size": 50, "alpha": 0.05, **extra}
    sk, ours = _both(SkClassifier, MLPClassifier, X, y, **params)
    tol = 1e-9 if extra["solver"] == "adam" else 1e-12
    assert _params_diff(sk, ours) < tol
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=tol)
    assert ours.n_iter_ == sk.n_iter_


def test_shuffled_partial_fit_and_regressor_follow_sklearn():
    """partial_fit shuffles as scikit-learn's (a fresh random state per
    call); MLPRegressor likewise."""
    X, y = make_regression(n_samples=130, n_features=5, n_targets=2, random_state=0)
    y = y / 100
    params = {**COMMON, "shuffle": True, "batch_size": 50, "solver": "adam",
              "learning_rate_init": 0.01}
    sk, ours = _both(SkRegressor, MLPRegressor, X, y, **params)
    assert _params_diff(sk, ours) < 1e-9
    for _ in range(3):
        sk.partial_fit(X[:110], y[:110])
        ours.partial_fit(X[:110], y[:110])
    assert _params_diff(sk, ours) < 1e-9
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-9)


def test_regression_loss_and_weights_follow_sklearn():
    X, y = make_regression(n_samples=120, n_features=5, n_targets=2, random_state=0)
    y = y / 100
    sk, ours = _both(SkRegressor, MLPRegressor, X, y, solver="sgd", momentum=0.0,
                     learning_rate_init=0.01, **COMMON)
    assert _params_diff(sk, ours) < 1e-12
    np.testing.assert_allclose(ours.loss_curve_, sk.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict(X), sk.predict(X), atol=1e-12)
    assert ours.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-12)


def test_initial_loss_is_log_loss_plus_l2_term(three_classes):
    """One full batch: loss_ is the log loss at the initial weights plus
    alpha / (2 n) ||W||², computed here from the definition."""
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(4,), alpha=0.5, batch_size=len(X), max_iter=1,
                        shuffle=False, random_state=0, dtype=np.float64,
                        learning_rate_init=1e-9).fit(X, y)
    W = [c.copy() for c in est.coefs_]          # lr 1e-9: still the initial weights
    b = [i.copy() for i in est.intercepts_]
    h = np.maximum(X @ W[0] + b[0], 0)
    z = h @ W[1] + b[1]
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    data = -logp[np.arange(len(y)), y].mean()
    l2 = 0.5 * 0.5 * sum((w ** 2).sum() for w in W) / len(X)
    assert est.loss_ == pytest.approx(data + l2, rel=1e-6)


# ---------------------------------------------------------------- in use

@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0)


def test_pipeline_cross_val_score(digits):
    X_tr, _, y_tr, _ = digits
    pipe = make_pipeline(StandardScaler(),
                         MLPClassifier(hidden_layer_sizes=(32,), batch_size=32, max_iter=30,
                                       random_state=0))
    scores = cross_val_score(pipe, X_tr[:600], y_tr[:600], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85


def test_grid_search_two_jobs(three_classes):
    X, y = three_classes
    grid = GridSearchCV(MLPClassifier(max_iter=50, random_state=0),
                        {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-1]},
                        cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(8,), (16,)]
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert grid.best_score_ > 0.5        # 3 classes: chance is 1/3
    assert isinstance(grid.best_estimator_.model_, nl.Sequential)


def test_pickle_round_trip_and_resume(three_classes):
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    for c, m in zip(copy.coefs_, copy.model_.parameters().values()):
        if c.shape == m.shape:
            assert np.shares_memory(c, copy.model_.parameters()["0.W"]) or \
                np.shares_memory(c, copy.model_.parameters()["2.W"])
    # the optimizer's state travels too: one more epoch gives the same weights
    est.partial_fit(X, y)
    copy.partial_fit(X, y)
    np.testing.assert_array_equal(copy.coefs_[0], est.coefs_[0])
    assert copy.loss_curve_ == est.loss_curve_


def test_coefs_are_live_views(three_classes):
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    assert [c.shape for c in est.coefs_] == [(6, 8), (8, 3)]
    assert [b.shape for b in est.intercepts_] == [(8,), (3,)]
    before = est.predict_proba(X)
    est.coefs_[1][:] = 0
    est.intercepts_[1][:] = 0
    np.testing.assert_allclose(est.predict_proba(X), 1 / 3, rtol=1e-6)
    assert not np.allclose(before, 1 / 3)


def test_clone_is_unfitted(three_classes):
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.3, dtype=np.float64, n_threads=1,
                        max_iter=3).fit(X, y)
    c = clone(est)
    assert c.get_params() == est.get_params()
    assert not hasattr(c, "model_") and not hasattr(c, "coefs_")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        c.predict(X)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([10, -3, 7]),
                                    np.array([True, False, True])], ids=["str", "int", "bool"])
def test_labels_of_any_type(three_classes, labels):
    X, y = three_classes
    y = labels[y]
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X, y)
    np.testing.assert_array_equal(est.classes_, np.unique(labels))
    pred = est.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(labels)
    assert (pred == y).mean() > 0.7
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), len(est.classes_))
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(est.classes_[proba.argmax(1)], pred)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba), rtol=1e-5)
    assert est.out_activation_ == ("logistic" if len(est.classes_) == 2 else "softmax")


def test_multilabel_indicator(three_classes):
    X, y = three_classes
    Y = np.stack([y == 0, y != 1, y == 2], axis=1).astype(int)
    params = dict(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
    est = MLPClassifier(**params).fit(X, Y)
    sk = SkClassifier(**params).fit(X, Y)
    assert est.predict(X).shape == Y.shape and est.predict_proba(X).shape == Y.shape
    assert set(np.unique(est.predict(X))) <= {0, 1}
    assert (est.predict(X) == Y).mean() >= (sk.predict(X) == Y).mean() - 0.05
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])


def test_partial_fit(three_classes):
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[:60], y[:60], classes=[0, 1, 2])
    first = est.loss_
    for _ in range(30):
        est.partial_fit(X, y)
    assert est.n_iter_ == 1 and est.t_ == 60 + 30 * 120 and len(est.loss_curve_) == 31
    assert est.loss_ < first
    with pytest.raises(ValueError, match="has classes not in"):
        est.partial_fit(X, np.where(y == 2, 5, y))
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    Xr, yr = make_regression(n_samples=80, n_features=4, random_state=0)
    for _ in range(3):
        reg.partial_fit(Xr, yr / 100)
    assert len(reg.loss_curve_) == 3 and reg.predict(Xr).shape == (80,)


def test_warm_start_continues(three_classes):
    X, y = three_classes
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0)
    est.fit(X, y)
    model = est.model_
    w = est.coefs_[0].copy()
    est.fit(X, y)
    assert est.model_ is model and not np.array_equal(w, est.coefs_[0])
    assert len(est.loss_curve_) == 10


def test_feature_names_in():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=60, n_features=3, n_informative=2,
                               n_redundant=0, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5).fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c"])
    assert est.n_features_in_ == 3


def test_dtype_and_threads(three_classes):
    X, y = three_classes
    threads = nl.get_num_threads()
    est32 = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, n_threads=1).fit(X, y)
    assert nl.get_num_threads() == threads
    assert est32.model_.dtype == np.float32 and est32.coefs_[0].dtype == np.float32
    assert est32.predict_proba(X).dtype == np.float32
    est64 = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, dtype=np.float64).fit(X, y)
    assert est64.coefs_[0].dtype == np.float64


def test_max_iter_warns_convergence(three_classes):
    X, y = three_classes
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\)"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, y)


def test_accuracy_on_digits_comparable_to_sklearn(digits):
    X_tr, X_te, y_tr, y_te = digits
    params = dict(hidden_layer_sizes=(64,), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = make_pipeline(StandardScaler(), SkClassifier(**params)).fit(X_tr, y_tr)
        ours = make_pipeline(StandardScaler(), MLPClassifier(**params)).fit(X_tr, y_tr)
    sk_acc, our_acc = sk.score(X_te, y_te), ours.score(X_te, y_te)
    assert our_acc > 0.93
    assert our_acc >= sk_acc - 0.02


# ---------------------------------------------------------------- errors (docs/errors.md)

@pytest.mark.parametrize("params, exc, match", [
    (dict(solver="lbfgs"), ValueError, r"solver must be one of \('adam', 'sgd'\).*lbfgs"),
    (dict(activation="softmax"), ValueError, "activation must be one of"),
    (dict(learning_rate="optimal"), ValueError, "learning_rate must be one of"),
    (dict(hidden_layer_sizes=(10, 0)), ValueError, "hidden_layer_sizes must be an int or"),
    (dict(hidden_layer_sizes="big"), ValueError, "hidden_layer_sizes must be an int or"),
    (dict(alpha=-1.0), ValueError, r"alpha must be in \[0"),
    (dict(learning_rate_init=0.0), ValueError, r"learning_rate_init must be in \(0"),
    (dict(momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\]"),
    (dict(validation_fraction=1.0), ValueError, "validation_fraction must be in"),
    (dict(max_iter=0), ValueError, "max_iter must be an int >= 1"),
    (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
    (dict(n_threads=0), ValueError, "n_threads must be an int >= 1"),
    (dict(shuffle="yes"), ValueError, "shuffle must be True or False"),
    (dict(dtype=np.int32), TypeError, "dtype must be numpy.float32 or numpy.float64"),
])
def test_sklearn_bad_parameters(three_classes, params, exc, match):
    X, y = three_classes
    est = MLPClassifier(**{"max_iter": 2, **params})
    with pytest.raises(exc, match=match):
        est.fit(X, y)
    assert not hasattr(est, "model_")                  # nothing was built
    est.set_params(**MLPClassifier(max_iter=2).get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert est.fit(X, y).predict(X).shape == y.shape   # still works


def test_sklearn_partial_fit_errors(three_classes):
    X, y = three_classes
    est = MLPClassifier(early_stopping=True)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        est.partial_fit(X, y, classes=[0, 1, 2])
    est.set_params(early_stopping=False).partial_fit(X, y, classes=[0, 1, 2])
    reg = MLPRegressor(hidden_layer_sizes=(4,), warm_start=True, max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="y has 2 outputs, the fitted network 1"):
        reg.fit(X, np.stack([y, y], 1))
    assert reg.predict(X).shape == (len(X),)


def test_sklearn_nonfinite_loss_raises(three_classes):
    X, y = three_classes
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=10.0,
                       max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="loss became non-finite at iteration .*scale X"):
        est.fit(X * 1e3, y * 1e6)
    assert np.isfinite(est.coefs_[0]).all()            # that batch was not applied
    est.set_params(learning_rate_init=1e-3, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert np.isfinite(est.fit(X, y).predict(X)).all()


def test_benchmark_quick_run_prints_the_table():
    script = ROOT / "benchmarks" / "sklearn_mlp.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| digits")
            or line.startswith("| synthetic")]
    assert len(rows) == 4, proc.stdout
    for row in rows:
        ratio = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert ratio.endswith("x") and float(ratio[:-1]) > 0, row
