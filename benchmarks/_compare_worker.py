"""One side of benchmarks/compare.py: builds the cases with the nnlayers
this interpreter imports and times one of them whenever the parent asks.

Protocol (lines on stdin/stdout): the parent sends "<case> <min_time>";
the worker answers "<seconds per call>" after a warm-up-free timed loop
of at least min_time seconds ("error: ..." if the case failed). Only the
API every nnlayers version has is used (Sequential, Linear, ReLU, SGD,
train_step, predict, fit), so an older install can be the other side.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _nl_models import mlp, residual  # noqa: E402

LR = 0.01
TRAIN = {
    "small": ((64, 32, 10), 32),
    "mnist-128": ((784, 128, 10), 64),
    "medium": ((784, 256, 256, 10), 128),
    "large": ((784, 1024, 1024, 10), 256),
    "xl": ((2048, 4096, 4096, 1000), 512),
}
PREDICT = {"predict-b1": 1, "predict-b1024": 1024}
PREDICT_SIZES = (784, 256, 10)
FIT_SIZES, FIT_BATCH, FIT_ROWS = (784, 256, 10), 64, 4096


def data(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, sizes[0]), dtype=np.float32),
            rng.integers(0, sizes[-1], size=n, dtype=np.int64))


def graph_step(nl, skip, batch=128):
    """A training step of 784-256-256-10 as a graph, with (skip) or
    without a skip around the middle layer."""
    model = residual(nl, (784, 256, 256, 10), skip)
    X, y = data((784, 256, 256, 10), batch)
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=LR)
    return lambda: model.train_step(X, y, loss, opt)


def build(nl, case):
    if case in TRAIN:
        sizes, n = TRAIN[case]
        model = mlp(nl, sizes)
        x, y = data(sizes, n)
        loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=LR)
        return lambda: model.train_step(x, y, loss, opt)
    if case in PREDICT:
        model = mlp(nl, PREDICT_SIZES)
        x, _ = data(PREDICT_SIZES, PREDICT[case])
        return lambda: model.predict(x)
    if case == "fit":
        model = mlp(nl, FIT_SIZES)
        x, y = data(FIT_SIZES, FIT_ROWS)
        loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=LR)
        return lambda: model.fit(x, y, loss=loss, optimizer=opt, epochs=1,
                                 batch_size=FIT_BATCH, seed=0, verbose=0)
    if case == "medium-adam":   # nl.Adam (nnlayers >= 0.2 only)
        sizes, n = TRAIN["medium"]
        model = mlp(nl, sizes)
        x, y = data(sizes, n)
        loss, opt = nl.SoftmaxCrossEntropy(), nl.Adam(model, lr=1e-3)
        return lambda: model.train_step(x, y, loss, opt)
    if case == "residual":
        return graph_step(nl, True)
    if case == "chain-graph":
        return graph_step(nl, False)
    raise ValueError(f"unknown case {case!r}")


def timed(fn, min_time):
    fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / calls


def main():
    import nnlayers as nl

    fns = {}
    print(f"ready {nl.__file__}", flush=True)
    for line in sys.stdin:
        case, min_time = line.split()
        try:
            if case not in fns:
                fns[case] = build(nl, case)
            print(timed(fns[case], float(min_time)), flush=True)
        except Exception as exc:   # reported to the parent, which goes on
            print(f"error: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
