#!/usr/bin/env python
"""Speed-up of training K independent models in 2 threads vs one thread.

    python benchmarks/threads.py [--models K] [--steps S] [--repeats R]
                                 [--sizes 784,256,10] [--batch 64] [--threads 2]

Every model is a float32 MLP (default 784-256-10) trained by train_step on
its own batch (default 64 rows). "serial" runs the K models' loops one after
the other in the main thread; "parallel" gives model i to thread i % T and
runs the T threads at once (train_step releases the GIL). nnlayers' OpenBLAS
is set to one thread (nl.set_num_threads(1)) and NumPy's BLAS is limited to
one thread with threadpoolctl, so the only parallelism is the Python threads.
After one warm-up of each, serial and parallel alternate for R repeats; the
medians are printed with the speed-up serial / parallel (ideal: T, bounded
by the number of cores).
"""

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import nnlayers as nl  # noqa: E402


def build(k, sizes, batch):
    jobs = []
    for i in range(k):
        layers = []
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if j:
                layers.append(nl.ReLU())
            layers.append(nl.Linear(a, b, dtype=np.float32, seed=100 * i + j))
        model = nl.Sequential(*layers)
        rng = np.random.default_rng(i)
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], size=batch)
        jobs.append((model, x, y, nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=1e-3, momentum=0.9)))
    return jobs


def train(jobs, steps):
    for model, x, y, loss, opt in jobs:
        for _ in range(steps):
            model.train_step(x, y, loss, opt)


def run_serial(jobs, steps):
    t0 = time.perf_counter()
    train(jobs, steps)
    return time.perf_counter() - t0


def run_parallel(jobs, steps, n_threads):
    groups = [jobs[t::n_threads] for t in range(n_threads)]
    barrier = threading.Barrier(n_threads + 1)
    errors = []

    def worker(group):
        barrier.wait()
        try:
            train(group, steps)
        except BaseException as e:      # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(g,)) for g in groups]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=4, help="K independent models (default 4)")
    p.add_argument("--steps", type=int, default=200, help="train steps per model (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    p.add_argument("--sizes", default="784,256,10", help="layer widths (default 784,256,10)")
    p.add_argument("--batch", type=int, default=64, help="rows per batch (default 64)")
    p.add_argument("--threads", type=int, default=2, help="threads for the parallel run")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from threadpoolctl import threadpool_limits

    old = nl.get_num_threads()
    with threadpool_limits(limits=1):
        nl.set_num_threads(1)
        try:
            jobs = build(args.models, sizes, args.batch)
            run_serial(jobs, max(1, args.steps // 4))                    # warm-up
            run_parallel(jobs, max(1, args.steps // 4), args.threads)
            serial, parallel = [], []
            for _ in range(args.repeats):
                serial.append(run_serial(jobs, args.steps))
                parallel.append(run_parallel(jobs, args.steps, args.threads))
        finally:
            nl.set_num_threads(old)

    s, q = statistics.median(serial), statistics.median(parallel)
    steps = args.models * args.steps
    print(f"nnlayers {nl.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"BLAS threads: nnlayers 1, numpy 1")
    print(f"{args.models} models {'-'.join(map(str, sizes))} float32, batch {args.batch}, "
          f"{args.steps} train steps each ({steps} in all), median of {args.repeats}")
    print(f"serial   (1 thread):  {s * 1e3:8.1f} ms   {s / steps * 1e6:7.1f} us/step   "
          f"repeats: {', '.join(f'{t * 1e3:.0f}' for t in serial)}")
    print(f"parallel ({args.threads} threads): {q * 1e3:8.1f} ms   "
          f"{q / steps * 1e6:7.1f} us/step   "
          f"repeats: {', '.join(f'{t * 1e3:.0f}' for t in parallel)}")
    print(f"speed-up: {s / q:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
