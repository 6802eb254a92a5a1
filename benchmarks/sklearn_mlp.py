"""nnlayers.sklearn's MLPClassifier / MLPRegressor against scikit-learn's own,
at the same settings, side by side in one process.

    python benchmarks/sklearn_mlp.py [--repeats 3] [--threads 1] [--dtype float32] [--quick]
    python benchmarks/sklearn_mlp.py --score-seeds 10    # accuracy only, 60,000 rows

Cases (inputs standardised; held-out score: accuracy or R²):
  digits      load_digits, 1797 rows x 64, 25 % held out; classifier on
              the classes, regressor on the digit's value (0..9)
  synthetic   60,000 rows x 50 (make_classification: 5 classes, 20
              informative; make_regression: 20 informative, noise 10),
              10,000 held out
Settings, equal for both: hidden_layer_sizes=(100,), solver="adam" and the
other scikit-learn defaults, random_state=r in repeat r, max_iter 200 on digits and
30 on the synthetic sets (both stop at n_iter_no_change / tol before
that when they converge); nnlayers in --dtype (float32, its default,
or float64), scikit-learn in float64 (what it uses for float64 input).
Both estimators draw the same initial weights and row orders from
random_state, so in float64 they train alike to rounding. Both BLAS
libraries are limited to --threads threads (threadpoolctl for NumPy's,
nl.set_num_threads for nnlayers'). Fit time is the median of --repeats
fits, the two estimators alternating; the ratio is scikit-learn's time
over nnlayers'. Scores and iteration counts are the means over the
repeats (random_state 0 .. repeats - 1).
"""
import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import nnlayers as nl
from nnlayers.sklearn import MLPClassifier, MLPRegressor


def _scaled(X_tr, X_te):
    sc = StandardScaler().fit(X_tr)
    return sc.transform(X_tr), sc.transform(X_te)


def datasets(quick):
    """(name, task, X_tr, X_te, y_tr, y_te, max_iter)."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
    X_tr, X_te = _scaled(X_tr, X_te)
    out = [("digits", "classifier", X_tr, X_te, y_tr, y_te, 20 if quick else 200),
           ("digits", "regressor", X_tr, X_te, y_tr.astype(float), y_te.astype(float),
            20 if quick else 200)]
    n = 6000 if quick else 60000
    Xc, yc = make_classification(n_samples=n, n_features=50, n_informative=20, n_classes=5,
                                 random_state=0)
    Xr, yr = make_regression(n_samples=n, n_features=50, n_informative=20, noise=10.0,
                             random_state=0)
    yr = yr / yr.std()
    for task, X, y in (("classifier", Xc, yc), ("regressor", Xr, yr)):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=n // 6, random_state=0)
        X_tr, X_te = _scaled(X_tr, X_te)
        out.append((f"synthetic {n:,}", task, X_tr, X_te, y_tr, y_te, 5 if quick else 30))
    return out


def run_case(task, X_tr, X_te, y_tr, y_te, max_iter, repeats, dtype):
    """{name: (median fit s, mean score, mean n_iter_)} for both estimators."""
    classes = {"classifier": (MLPClassifier, SkClassifier),
               "regressor": (MLPRegressor, SkRegressor)}[task]
    times = {"nnlayers": [], "scikit-learn": []}
    scores = {"nnlayers": [], "scikit-learn": []}
    iters = {"nnlayers": [], "scikit-learn": []}
    for r in range(repeats):
        order = list(zip(("nnlayers", "scikit-learn"), classes))
        for name, cls in (order if r % 2 == 0 else order[::-1]):
            kw = {"dtype": dtype} if name == "nnlayers" else {}
            est = cls(hidden_layer_sizes=(100,), max_iter=max_iter, random_state=r, **kw)
            t0 = time.perf_counter()
            est.fit(X_tr, y_tr)
            times[name].append(time.perf_counter() - t0)
            scores[name].append(est.score(X_te, y_te))
            iters[name].append(est.n_iter_)
    return {k: (statistics.median(times[k]), statistics.mean(scores[k]),
                statistics.mean(iters[k])) for k in times}


def score_seeds(seeds, dtype):
    """Held-out accuracy of both classifiers on the 60,000-row set over
    random_state 0 .. seeds - 1 (no timing): the per-seed scores, their
    means, and on how many seeds nnlayers is ahead, level and behind."""
    name, task, X_tr, X_te, y_tr, y_te, max_iter = datasets(False)[2]
    ours, theirs = [], []
    for r in range(seeds):
        kw = dict(hidden_layer_sizes=(100,), max_iter=max_iter, random_state=r)
        ours.append(MLPClassifier(dtype=dtype, **kw).fit(X_tr, y_tr).score(X_te, y_te))
        theirs.append(SkClassifier(**kw).fit(X_tr, y_tr).score(X_te, y_te))
        print(f"random_state={r}: accuracy {ours[-1]:.4f} / {theirs[-1]:.4f}", flush=True)
    d = np.array(ours) - np.array(theirs)
    print(f"{name} MLPClassifier over {seeds} seeds: mean accuracy nnlayers "
          f"{np.mean(ours):.4f}, scikit-learn {np.mean(theirs):.4f}; nnlayers ahead on "
          f"{int((d > 0).sum())}, level on {int((d == 0).sum())}, behind on "
          f"{int((d < 0).sum())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="nnlayers' dtype (scikit-learn trains in float64)")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--score-seeds", type=int, metavar="N",
                    help="instead of the table: both classifiers' accuracy on the "
                         "60,000-row set over random_state 0..N-1")
    args = ap.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    nl.set_num_threads(args.threads)
    if args.score_seeds:
        with threadpool_limits(limits=args.threads):
            score_seeds(args.score_seeds, np.dtype(args.dtype))
        return
    print(f"threads={args.threads} repeats={args.repeats} nnlayers dtype={args.dtype} "
          f"(median fit time; mean score "
          f"and iterations over random_state 0..{args.repeats - 1})")
    head = ("| data | estimator | score (nnlayers / scikit-learn) | iterations | "
            "fit s nnlayers | fit s scikit-learn | speed-up |")
    print(head)
    print("|" + "---|" * 7)
    with threadpool_limits(limits=args.threads):
        for name, task, X_tr, X_te, y_tr, y_te, max_iter in datasets(args.quick):
            res = run_case(task, X_tr, X_te, y_tr, y_te, max_iter, args.repeats,
                           np.dtype(args.dtype))
            (t_nl, s_nl, it_nl), (t_sk, s_sk, it_sk) = res["nnlayers"], res["scikit-learn"]
            metric = "accuracy" if task == "classifier" else "R²"
            print(f"| {name} | MLP{task.capitalize()} | {metric} {s_nl:.4f} / {s_sk:.4f} | "
                  f"{it_nl:.0f} / {it_sk:.0f} | {t_nl:.2f} | {t_sk:.2f} | {t_sk / t_nl:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
