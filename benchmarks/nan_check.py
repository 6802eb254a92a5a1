#!/usr/bin/env python
"""What fit's NaN/Inf scan of X costs next to one epoch of training.

fit scans its inputs (``nnlayers._core.check_finite``, the C check it calls
before the first update) so that a NaN or an infinity is reported as such,
naming the array and the first bad row, instead of as a non-finite loss
later. This script times that scan against one epoch of ``fit`` on the same
data, side by side in alternating rounds (median of the per-round ratios),
for a digits-sized problem and an MNIST-sized one:

    python benchmarks/nan_check.py [--repeats K] [--threads N]

It prints a table and exits 0; it is a report, not a test.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# name, rows, layer sizes, batch
CASES = [
    ("digits", 1347, (64, 256, 10), 32),
    ("mnist", 60000, (784, 256, 10), 128),
]


def one_round(nl, core, X, y, model, opt, batch):
    """(seconds of one scan of X, seconds of one epoch of fit)."""
    t0 = time.perf_counter()
    core.check_finite(X, "X")
    t1 = time.perf_counter()
    model.fit(X, y, optimizer=opt, epochs=1, batch_size=batch, seed=0, verbose=0)
    return t1 - t0, time.perf_counter() - t1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, metavar="K")
    p.add_argument("--threads", type=int, default=None, metavar="N")
    args = p.parse_args(argv)
    import numpy as np
    import nnlayers as nl
    from nnlayers import _core
    from _nl_models import mlp

    if args.threads:
        nl.set_num_threads(args.threads)
    print(f"fit's NaN/Inf scan of X against one epoch of fit (float32, "
          f"{nl.get_num_threads()} threads, median over {args.repeats} rounds)")
    print(f"{'case':<8} {'X shape':<14} {'model @ batch':<20} {'scan ms':>9} {'epoch ms':>10} "
          f"{'scan/epoch':>11}")
    for name, n, sizes, batch in CASES:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], n)
        model = mlp(nl, sizes, 0)
        opt = nl.SGD(model, lr=0.01)
        one_round(nl, _core, X, y, model, opt, batch)        # warm-up
        scans, epochs, ratios = [], [], []
        for _ in range(args.repeats):
            s, e = one_round(nl, _core, X, y, model, opt, batch)
            scans.append(s)
            epochs.append(e)
            ratios.append(s / e)
        arch = "-".join(map(str, sizes))
        print(f"{name:<8} {str(X.shape):<14} {arch + ' @ ' + str(batch):<20} "
              f"{statistics.median(scans) * 1e3:9.3f} {statistics.median(epochs) * 1e3:10.1f} "
              f"{statistics.median(ratios):11.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
