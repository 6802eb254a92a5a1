"""What a layer written in Python costs: the medium network with one small
Python layer, against the same network without it, side by side.

    python benchmarks/python_layer.py [--repeats 7] [--threads 2]

Cases (float32, SGD with momentum):
  plain     784-256-256-10 @ 128, all built-in
  +python   the same with Scale(256) (y = x * s, a NumPy forward and VJP,
            written as a user would) after the first hidden ReLU
  +identity the same with a Python layer that only copies (the trip into
            Python alone: GIL, the copies in and out, two calls)
Training step (train_step) and predict (batch 1024); medians of interleaved
repeats, and the extra microseconds per step of each Python layer.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import bench_group  # noqa: E402

import nnlayers as nl  # noqa: E402


class Scale(nl.Layer):
    """y = x * s (the issue's example)."""

    def __init__(self, features):
        super().__init__()
        self.s = self.add_param("s", (features,), init="ones")

    def forward(self, x):
        self.x = x
        return x * self.s

    def backward(self, g):
        self.grads["s"] += (g * self.x).sum(0)
        return g * self.s


class Copy(nl.Layer):
    """y = x: what calling into Python costs by itself."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, g):
        return g


def medium(extra=None):
    layers = [nl.Linear(784, 256, seed=1), nl.ReLU()]
    if extra is not None:
        layers.append(extra)
    layers += [nl.Linear(256, 256, seed=2), nl.ReLU(), nl.Linear(256, 10, seed=3)]
    return nl.Sequential(*layers)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    nl.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    Xp = rng.standard_normal((1024, 784)).astype(np.float32)
    loss = nl.SoftmaxCrossEntropy()
    models = {"plain": medium(), "+python": medium(Scale(256)), "+identity": medium(Copy())}
    steps, preds = {}, {}
    for name, m in models.items():
        opt = nl.SGD(m, lr=1e-3, momentum=0.9)
        steps[name] = (lambda m=m, opt=opt: m.train_step(X, y, loss, opt))
        preds[name] = (lambda m=m: m.predict(Xp))
    t_step = bench_group(steps, repeats=args.repeats, min_time=0.3)
    t_pred = bench_group(preds, repeats=args.repeats, min_time=0.3)
    base_s, base_p = t_step["plain"].median, t_pred["plain"].median
    print(f"medium 784-256-256-10, float32, {args.threads} threads, "
          f"medians of {args.repeats} interleaved repeats")
    print(f"{'case':<10} {'step @128 (us)':>15} {'ratio':>7} {'extra us':>9} "
          f"{'predict @1024 (us)':>19} {'ratio':>7} {'extra us':>9}")
    for name in models:
        s, p = t_step[name].median, t_pred[name].median
        print(f"{name:<10} {s * 1e6:>15.1f} {s / base_s:>7.3f} {(s - base_s) * 1e6:>9.1f} "
              f"{p * 1e6:>19.1f} {p / base_p:>7.3f} {(p - base_p) * 1e6:>9.1f}")


if __name__ == "__main__":
    main()
