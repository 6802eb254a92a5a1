"""scikit-learn estimators trained by nnlayers: MLPClassifier, MLPRegressor.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` and
``MLPRegressor`` (the "adam" and "sgd" solvers): the same parameters,
defaults, fitted attributes and training rules, with the network an
``nl.Sequential`` trained by ``Model.fit`` (one C call per epoch) instead
of NumPy. This module imports scikit-learn; ``import nnlayers`` does not
import this module (``pip install "nnlayers[sklearn]"``).

What is scikit-learn's and how it maps onto nnlayers:

- network: Linear layers with the hidden activation between them; the
  output activation (softmax, logistic or identity) is applied in NumPy at
  prediction and fused into the loss for training (``from_logits``).
- objective per minibatch of B rows: the log loss (softmax cross-entropy,
  or binary cross-entropy summed over the outputs) or half the squared
  error, plus ``alpha / (2 B) ||W||²`` over the weights (not the biases):
  an L2 weight decay ``alpha / B`` on the weights' parameter group.
- init: Glorot uniform, bound ``sqrt(6 / (in + out))`` (2 for logistic)
  for weights and biases, drawn from ``random_state``.
- shuffling: each epoch reshuffles the last epoch's order with the same
  random state (``_EpochOrders``), so a given ``random_state`` visits the
  rows in scikit-learn's order.
- per epoch ("iteration"): ``loss_``, ``loss_curve_``, the stopping
  counter on the training loss or (``early_stopping``) on the validation
  score, the "invscaling" and "adaptive" learning rates, best-weight
  restoration; see ``_EpochRules``.
"""
import numbers
import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, shuffle
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      check_classification_targets, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import config as _config
from .callbacks import Callback, TerminateOnNaN
from .layers import Linear, ReLU, Sigmoid, Tanh
from .losses import MSE, BinaryCrossEntropy, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam
from .schedules import Schedule

try:                                   # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:                    # pragma: no cover (scikit-learn 1.3 - 1.5)
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
_SOLVERS = ("adam", "sgd")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


# ---------------------------------------------------------------- parameters

def _fail(est, name, expected, value, fix=""):
    raise ValueError(f"{type(est).__name__}: {name} must be {expected}, got {value!r}"
                     + (f"; {fix}" if fix else ""))


def _check_real(est, name, low, high=None, low_open=False, high_open=False):
    """A number in the interval; bools are refused."""
    v = getattr(est, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or np.isnan(v):
        _fail(est, name, "a real number", v)
    bad_low = v <= low if low_open else v < low
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        lo = f"{'(' if low_open else '['}{low}"
        hi = f"{high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
        _fail(est, name, f"in {lo}, {hi}", v)


def _check_int(est, name, low):
    v = getattr(est, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        _fail(est, name, f"an int >= {low}", v)


def _hidden_sizes(est):
    """hidden_layer_sizes as a list of ints >= 1 (an int is one layer)."""
    h = est.hidden_layer_sizes
    sizes = [h] if isinstance(h, numbers.Integral) and not isinstance(h, bool) else h
    try:
        sizes = list(sizes)
    except TypeError:
        _fail(est, "hidden_layer_sizes", "an int or a sequence of ints >= 1", h)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            _fail(est, "hidden_layer_sizes", "an int or a sequence of ints >= 1", h,
                  "e.g. (100,) or (64, 32)")
    return [int(s) for s in sizes]


def _model_dtype(est):
    try:
        dt = np.dtype(est.dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{type(est).__name__}: dtype must be numpy.float32 or "
                        f"numpy.float64, got {est.dtype!r}")
    return dt


def _check_params(est):
    """Every hyperparameter, checked before any work (scikit-learn's ranges)."""
    for name, options in (("activation", tuple(_ACTIVATIONS)), ("solver", _SOLVERS),
                          ("learning_rate", _LEARNING_RATES)):
        if getattr(est, name) not in options:
            fix = ("'lbfgs' is not offered: use 'adam' or 'sgd', or scikit-learn's own "
                   "estimator" if getattr(est, name) == "lbfgs" else "")
            _fail(est, name, f"one of {options}", getattr(est, name), fix)
    _check_real(est, "alpha", 0.0)
    _check_real(est, "learning_rate_init", 0.0, low_open=True)
    _check_real(est, "power_t", 0.0)
    _check_real(est, "tol", 0.0)
    _check_real(est, "momentum", 0.0, 1.0)
    _check_real(est, "validation_fraction", 0.0, 1.0, high_open=True)
    _check_real(est, "beta_1", 0.0, 1.0, high_open=True)
    _check_real(est, "beta_2", 0.0, 1.0, high_open=True)
    _check_real(est, "epsilon", 0.0, low_open=True)
    _check_int(est, "max_iter", 1)
    _check_int(est, "n_iter_no_change", 1)
    if est.batch_size != "auto":
        _check_int(est, "batch_size", 1)
    if est.n_threads is not None:
        _check_int(est, "n_threads", 1)
    for name in ("shuffle", "nesterovs_momentum", "early_stopping", "warm_start"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            _fail(est, name, "True or False", getattr(est, name))
    if not isinstance(est.verbose, (bool, np.bool_)):
        _check_int(est, "verbose", 0)
    return _hidden_sizes(est), _model_dtype(est)


@contextmanager
def _threads(n):
    """nnlayers' BLAS thread count set to n for the block (None: unchanged)."""
    if n is None:
        yield
        return
    old = _config.get_num_threads()
    _config.set_num_threads(int(n))
    try:
        yield
    finally:
        _config.set_num_threads(old)


# ---------------------------------------------------------------- training rules

class _EpochOrders:
    """fit's shuffle: scikit-learn's epoch orders. Each call reshuffles
    the previous epoch's order with the estimator's random state
    (``sklearn.utils.shuffle``), as MLPClassifier's loop does, so the
    same ``random_state`` draws the same inits, split and orders."""

    def __init__(self, n, random_state):
        self.order = np.arange(n, dtype=np.int64)
        self.random_state = random_state

    def __call__(self, epoch):
        self.order = shuffle(self.order, random_state=self.random_state)
        return self.order


class _StopOnNonFinite(TerminateOnNaN):
    """Stops fit quietly at a non-finite loss and remembers where."""

    def __init__(self):
        super().__init__(raise_error=False)
        self.where = None

    def on_nonfinite(self, epoch, batch, loss):
        self.where = (epoch + 1, batch + 1)
        super().on_nonfinite(epoch, batch, loss)


def _sq_norm(arrays):
    with np.errstate(over="ignore"):         # diverging weights give inf, as the loss
        return sum(float(np.dot(a.ravel(), a.ravel())) for a in arrays)


class _L2Term(Callback):
    """The L2 part of scikit-learn's epoch loss. Each batch's loss has
    0.5 alpha ||W||² / B with the weights before its update, and the epoch
    loss averages the batches weighted by their rows B, so the epoch's L2
    part is 0.5 alpha / n times the sum over batches of ||W||² before
    each. This class serves alpha = 0 (no per-batch call); _L2Batches
    the others."""

    def __init__(self, est, n_batches):
        self.est, self.n_batches, self.sq = est, n_batches, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.sq = _sq_norm(self.est.coefs_) if self.est.alpha > 0 else 0.0

    def value(self, n):
        return 0.5 * self.est.alpha * self.sq / n


class _L2Batches(_L2Term):
    """_L2Term with the sum over batches (fit calls it after each batch)."""

    def on_batch_end(self, batch, logs=None):
        if batch < self.n_batches - 1:      # the weights the next batch starts from
            self.sq += _sq_norm(self.est.coefs_)


class _BatchDecay(Schedule):
    """The weights' decay alpha / B of each batch, B its rows: scikit-learn
    divides the L2 gradient by the rows of the batch, so a last batch
    smaller than batch_size has a larger decay. A per-step schedule on the
    groups (weights, biases), so fit sets it inside its C loop; given only
    when the last batch is smaller."""

    names = ("weight_decay",)
    _config_names = ("n_batches", "decay", "last_decay")

    def __init__(self, optimizer, n_batches, decay, last_decay):
        super().__init__(optimizer, "step", n_batches=n_batches, decay=decay,
                         last_decay=last_decay)

    def _configure(self, n_batches, decay, last_decay):
        return {"n_batches": n_batches, "decay": decay, "last_decay": last_decay}

    def _at(self, t):   # step t of fit's count is batch t % n_batches of an epoch
        last = t % self.n_batches == self.n_batches - 1
        return ((self.last_decay if last else self.decay,), (0.0,))


class _EpochRules(Callback):
    """scikit-learn's end-of-iteration rules, run by fit after each epoch:
    loss_ (data loss + the L2 term), the no-improvement counter, the
    invscaling / adaptive learning rate, and stopping."""

    def __init__(self, est, n_train, penalty, val):
        self.est, self.n_train, self.penalty, self.val = est, n_train, penalty, val
        self.converged = False

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_ = logs["loss"] / est._loss_scale + self.penalty.value(self.n_train)
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))
        self._count(est)
        opt = est._optimizer
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            opt.lr = float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            if self._stops(est, opt):
                self.converged = True
                self.model.stop_training = True
            else:
                est._no_improvement_count = 0

    def _count(self, est):
        """Update the counter (and the best weights or loss), as scikit-learn's
        _update_no_improvement_count."""
        if self.val is not None:
            score = est._score_raw(*self.val)
            est.validation_scores_.append(score)
            if est.verbose:
                print("Validation score: %f" % score)
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_weights = est.model_.get_weights()
        else:
            if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, est.loss_curve_[-1])

    @staticmethod
    def _stops(est, opt):
        """scikit-learn's trigger_stopping: stop, or (adaptive sgd) divide the
        learning rate by 5 until it is <= 1e-6."""
        what = "Validation score" if est.early_stopping else "Training loss"
        msg = (f"{what} did not improve more than tol={est.tol:f} for "
               f"{est.n_iter_no_change} consecutive epochs.")
        if est.solver != "sgd" or est.learning_rate != "adaptive":
            if est.verbose:
                print(msg + " Stopping.")
            return True
        if opt.lr <= 1e-6:
            if est.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        opt.lr = opt.lr / 5.0
        if est.verbose:
            print(msg + " Setting learning rate to %f" % opt.lr)
        return False


# ---------------------------------------------------------------- the base class

class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: parameters, the network,
    the stochastic training loop, pickling."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, dtype=np.float32, n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.n_threads = n_threads

    # ---- tags (scikit-learn >= 1.6; the classifier also has the older _more_tags)
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ---- network
    def _build(self, n_in, hidden, n_out, dtype, rs):
        """The Sequential, Glorot-uniform initialised from rs as scikit-learn's."""
        units = [n_in] + hidden + [n_out]
        act = _ACTIVATIONS[self.activation]
        layers = []
        for i in range(len(units) - 1):
            layers.append(Linear(units[i], units[i + 1], dtype=dtype))
            if act is not None and i < len(units) - 2:
                layers.append(act(dtype=dtype))
        model = Sequential(layers)
        factor = 2.0 if self.activation == "logistic" else 6.0
        params = model.parameters()
        for k, layer in enumerate(layers):
            if isinstance(layer, Linear):
                fan_in, fan_out = layer.in_features, layer.out_features
                bound = np.sqrt(factor / (fan_in + fan_out))
                params[f"{k}.W"] = rs.uniform(-bound, bound, (fan_in, fan_out))
                params[f"{k}.b"] = rs.uniform(-bound, bound, fan_out)
        return model

    def _link(self):
        """coefs_ and intercepts_: views of model_'s weights (in, out) and biases."""
        params = self.model_.parameters()
        idx = [k for k, layer in enumerate(self.model_.layers) if isinstance(layer, Linear)]
        self.coefs_ = [params[f"{k}.W"] for k in idx]
        self.intercepts_ = [params[f"{k}.b"] for k in idx]

    def _make_optimizer(self, weight_decay):
        """Adam or SGD over model_: weight decay on the weights only."""
        groups = [{"params": self.coefs_, "weight_decay": weight_decay},
                  {"params": self.intercepts_, "weight_decay": 0.0}]
        if self.solver == "adam":
            # eps_hat: epsilon where scikit-learn's Adam adds it
            return Adam(groups, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                        eps=self.epsilon, eps_hat=True)
        return SGD(groups, lr=self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum > 0))

    def _initialize(self, n_in, hidden, n_out, dtype, rs):
        self.model_ = self._build(n_in, hidden, n_out, dtype, rs)
        self._link()
        self.n_outputs_ = n_out
        self.n_layers_ = len(hidden) + 2
        self.n_iter_ = 0
        self.t_ = 0
        self._best_weights = self.model_.get_weights()   # early stopping's, as scikit-learn's
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    # ---- fit
    def _fit(self, X, y, incremental):
        hidden, dtype = _check_params(self)
        first = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, first, dtype)
        rs = check_random_state(self.random_state)
        n_out = Y.shape[1] if Y.ndim == 2 else self._n_logits()
        if first:
            self._initialize(X.shape[1], hidden, n_out, dtype, rs)
        elif n_out != self.n_outputs_:
            raise ValueError(f"{type(self).__name__}: y has {n_out} outputs, the fitted "
                             f"network {self.n_outputs_}; fit with warm_start=False to "
                             f"start again")
        with _threads(self.n_threads):
            self._fit_stochastic(X, Y, rs, incremental)
        return self

    def _check_incremental(self):
        """partial_fit's checks, before anything is set."""
        _check_params(self)
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True; set "
                             "early_stopping=False or call fit")

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _split(self, X, Y, rs):
        """(X_train, Y_train, (X_val, y_val) or None): scikit-learn's split."""
        if not self.early_stopping:
            return X, Y, None
        stratify = Y if self._stratify() else None
        X_tr, X_val, Y_tr, Y_val = train_test_split(
            X, Y, random_state=rs, test_size=self.validation_fraction, stratify=stratify)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        return X_tr, Y_tr, (X_val, self._val_targets(Y_val))

    def _fit_stochastic(self, X, Y, rs, incremental):
        X_tr, Y_tr, val = self._split(X, Y, rs)
        n = X_tr.shape[0]
        bs = self._batch_size(n)
        decay = self.alpha / bs
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer(decay)
        else:
            self._optimizer.set_hyper("weight_decay", decay, group=0)
        n_batches = (n + bs - 1) // bs
        penalty = (_L2Batches if self.alpha > 0 else _L2Term)(self, n_batches)
        last = n - (n_batches - 1) * bs
        decays = _BatchDecay(self._optimizer, n_batches, decay, self.alpha / last) \
            if self.alpha > 0 and last < bs else None
        rules = _EpochRules(self, n, penalty, val)
        guard = _StopOnNonFinite()
        self.n_iter_ = 0
        try:
            self.model_.fit(X_tr, Y_tr, loss=self._loss(), optimizer=self._optimizer,
                            epochs=1 if incremental else self.max_iter, batch_size=bs,
                            shuffle=_EpochOrders(n, rs) if self.shuffle else False,
                            verbose=0, callbacks=[guard, penalty, rules], schedule=decays)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if guard.where is not None:
            raise ValueError(
                f"{type(self).__name__}.fit: the loss became non-finite at iteration "
                f"{guard.where[0]}, batch {guard.where[1]} (that batch not applied); scale X "
                f"(e.g. StandardScaler) or lower learning_rate_init")
        if not incremental and not rules.converged and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          f"reached and the optimization hasn't converged yet.",
                          ConvergenceWarning)
        if val is not None:
            self.model_.set_weights(self._best_weights)

    def fit(self, X, y):
        """Fit the network to X (n, features) and y; returns self."""
        return self._fit(X, y, incremental=False)

    # ---- predict
    def _check_X(self, X):
        check_is_fitted(self)
        X = _validate_data(self, X, accept_sparse=["csr", "csc"], dtype=self.model_.dtype,
                           reset=False)
        return X.toarray() if hasattr(X, "toarray") else X

    def _logits(self, X):
        with _threads(self.n_threads):
            return self.model_.predict(X)

    # ---- pickling: coefs_/intercepts_ are views, the optimizer is rebuilt
    def __getstate__(self):
        state = dict(super().__getstate__())
        for k in ("coefs_", "intercepts_"):
            state.pop(k, None)
        opt = state.pop("_optimizer", None)
        if opt is not None:
            state["_optimizer_state"] = opt.state_dict()
        return state

    def __setstate__(self, state):
        opt_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if "model_" in state:
            self._link()
            if opt_state is not None:
                self._optimizer = self._make_optimizer(0.0)
                self._optimizer.load_state_dict(opt_state)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0, -z)).astype(z.dtype, copy=False)


# ---------------------------------------------------------------- classifier

class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by nnlayers, a drop-in
    replacement for ``sklearn.neural_network.MLPClassifier`` (solvers
    "adam" and "sgd").

    Parameters are scikit-learn's, with its defaults and meaning
    (``hidden_layer_sizes=(100,)``, ``activation="relu"``,
    ``solver="adam"``, ``alpha=0.0001``, ``batch_size="auto"``,
    ``learning_rate="constant"``, ``learning_rate_init=0.001``,
    ``power_t=0.5``, ``max_iter=200``, ``shuffle=True``,
    ``random_state=None``, ``tol=1e-4``, ``verbose=False``,
    ``warm_start=False``, ``momentum=0.9``, ``nesterovs_momentum=True``,
    ``early_stopping=False``, ``validation_fraction=0.1``, ``beta_1=0.9``,
    ``beta_2=0.999``, ``epsilon=1e-8``, ``n_iter_no_change=10``), plus

    dtype : numpy.float32 (default) or numpy.float64
        What the network computes in (X is converted once).
    n_threads : int or None
        nnlayers' BLAS threads during fit and predict (None: unchanged).

    Targets: labels of any type (str, int, bool, ...), binary (one
    logistic output), multiclass (softmax) or multilabel (an indicator
    matrix, logistic outputs). Fitted attributes: ``classes_``,
    ``n_features_in_``, ``feature_names_in_`` (X with string column
    names), ``coefs_`` and ``intercepts_`` (views of the weights (in, out)
    and biases of ``model_``), ``loss_``, ``loss_curve_``, ``best_loss_``,
    ``validation_scores_``, ``best_validation_score_``, ``n_iter_``,
    ``t_``, ``n_layers_``, ``n_outputs_``, ``out_activation_`` and
    ``model_``, the trained ``nl.Sequential`` (it outputs the logits: the
    output activation is applied by predict_proba).
    """

    def _n_logits(self):
        return len(self.classes_) if self._lb.y_type_ == "multiclass" else 1

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = _validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                              dtype=dtype, reset=reset)
        X = X.toarray() if hasattr(X, "toarray") else X
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._lb = LabelBinarizer().fit(y)
            self.classes_ = self._lb.classes_
        else:
            self._check_classes(y)
        Y = self._lb.transform(y)
        self.out_activation_ = "softmax" if self._lb.y_type_ == "multiclass" else "logistic"
        if self.out_activation_ == "softmax":
            return X, np.argmax(Y, axis=1).astype(np.int64)   # class ids (n,)
        return X, Y.astype(dtype)                             # 0/1 targets (n, C)

    def _check_classes(self, y):
        classes = unique_labels(y)
        if self.warm_start:
            if set(classes) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same "
                                 f"classes as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {classes}")
        elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {classes}.")

    def _loss(self):
        self._loss_scale = 1.0
        if self.out_activation_ == "softmax":
            return SoftmaxCrossEntropy()
        return BinaryCrossEntropy()

    def _stratify(self):
        return self.n_outputs_ == 1

    def _val_targets(self, Y_val):
        if self.out_activation_ == "softmax":
            return self.classes_[Y_val]
        return self._lb.inverse_transform(Y_val)

    def _proba_raw(self, X):
        z = self._logits(X)
        return _softmax(z) if self.out_activation_ == "softmax" else _sigmoid(z)

    def _labels(self, p):
        return self._lb.inverse_transform(p.ravel() if self.n_outputs_ == 1 else p)

    def _score_raw(self, X, y):
        """Accuracy of checked arrays (early stopping's validation score)."""
        return accuracy_score(y, self._labels(self._proba_raw(X)))

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), from the current weights. ``classes`` (all the
        labels y may ever have) is required on the first call."""
        self._check_incremental()
        if _check_partial_fit_first_call(self, classes):
            self._lb = LabelBinarizer()
            self._lb.fit(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """The predicted labels (n,), or an indicator matrix (n, C) for multilabel."""
        return self._labels(self._proba_raw(self._check_X(X)))

    def predict_proba(self, X):
        """Probabilities (n, n_classes), columns in the order of ``classes_``."""
        p = self._proba_raw(self._check_X(X))
        if self.n_outputs_ == 1:
            p = p.ravel()
            return np.vstack([1 - p, p]).T
        return p

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        p = self.predict_proba(X)
        return np.log(p, out=p)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):   # pragma: no cover (scikit-learn < 1.6 reads this)
        return {"multilabel": True}


# ---------------------------------------------------------------- regressor

class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by nnlayers, a drop-in
    replacement for ``sklearn.neural_network.MLPRegressor`` (solvers
    "adam" and "sgd", the squared error). Parameters, ``dtype``,
    ``n_threads`` and fitted attributes as :class:`MLPClassifier`'s
    (no ``classes_``); ``out_activation_`` is "identity". y may be (n,) or
    (n, outputs).
    """

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = _validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                              y_numeric=True, dtype=dtype, reset=reset)
        X = X.toarray() if hasattr(X, "toarray") else X
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self.out_activation_ = "identity"
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y).astype(dtype)

    def _loss(self):
        # nnlayers' MSE sums ½ d² over the outputs; scikit-learn's loss_ averages them
        self._loss_scale = float(self.n_outputs_)
        return MSE()

    def _stratify(self):
        return False

    def _val_targets(self, Y_val):
        return Y_val.ravel() if Y_val.shape[1] == 1 else Y_val

    def _predict_raw(self, X):
        z = self._logits(X)
        return z.ravel() if z.shape[1] == 1 else z

    def _score_raw(self, X, y):
        """R² of checked arrays (early stopping's validation score)."""
        pred = self._predict_raw(X)
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(y, pred)

    def partial_fit(self, X, y):
        """One epoch over (X, y), from the current weights."""
        self._check_incremental()
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """The predictions (n,), or (n, outputs) for a y of several columns."""
        return self._predict_raw(self._check_X(X))
