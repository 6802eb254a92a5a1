"""Timing helpers for the nnlayers benchmarks (in-process, time.perf_counter)."""

import gc
import itertools
import math
import os
import statistics
import threading
import time

_TASKS = "/proc/self/task"


class Timing:
    """Result of :func:`bench`: seconds per call for each repeat."""

    def __init__(self, per_call, iters):
        self.per_call = list(per_call)  # seconds per call, one entry per repeat
        self.iters = iters  # calls per repeat

    @property
    def median(self):
        return statistics.median(self.per_call)

    def as_dict(self):
        return {
            "repeats_ms": [t * 1e3 for t in self.per_call],
            "iters_per_repeat": self.iters,
        }


def _loop(fn, n):
    t0 = time.perf_counter()
    for _ in itertools.repeat(None, n):
        fn()
    return time.perf_counter() - t0


def _other_running_threads():
    """Number of this process's other threads in state R (running), or None if unknown."""
    try:
        me = threading.get_native_id()
        n = 0
        for tid in os.listdir(_TASKS):
            if int(tid) == me:
                continue
            try:
                with open(f"{_TASKS}/{tid}/stat") as f:
                    stat = f.read()
            except OSError:  # thread exited
                continue
            if stat[stat.rindex(")") + 2] == "R":
                n += 1
        return n
    except (OSError, ValueError, AttributeError):
        return None


def wait_idle(max_wait):
    """Wait until no other thread of this process is running (BLAS/OpenMP workers
    keep spinning for a while after their last call: ~0.1 s for OpenBLAS), at most
    ``max_wait`` seconds. Where /proc is not available, just sleep ``max_wait``.
    Returns the seconds waited."""
    if max_wait <= 0:
        return 0.0
    t0 = time.perf_counter()
    idle_polls = 0
    while True:
        busy = _other_running_threads()
        if busy is None:
            time.sleep(max_wait)
            break
        idle_polls = idle_polls + 1 if busy == 0 else 0
        if idle_polls >= 2 or time.perf_counter() - t0 >= max_wait:
            break
        time.sleep(0.002)
    return time.perf_counter() - t0


def _warmup(fn, warmup_time, min_time):
    """Warm up fn; return the number of calls per repeat (>= min_time seconds)."""
    fn()
    n = 1
    while True:
        spent = _loop(fn, n)
        if spent >= warmup_time:
            break
        n *= 2 if spent * 2 >= warmup_time else 4
    return max(1, int(math.ceil(min_time / max(spent / n, 1e-9))))


def bench(fn, repeats=5, min_time=0.2, warmup_time=None):
    """Time ``fn()`` alone; see :func:`bench_group`. Returns a :class:`Timing`."""
    out = bench_group({"fn": fn}, repeats, min_time, warmup_time, settle=0.0)["fn"]
    if isinstance(out, BaseException):
        raise out
    return out


def bench_group(fns, repeats=5, min_time=0.2, warmup_time=None, contexts=None, settle=1.0):
    """Time several callables side by side, repeats interleaved.

    ``fns`` maps a key to a no-arg callable. Each is warmed up (at least two
    calls and about ``warmup_time`` seconds) and given a number of calls ``n``
    so one repeat lasts >= ``min_time``. Then ``repeats`` rounds are run; in
    each round every callable does one untimed call and one timed loop of its
    ``n`` calls, so slow drifts of the machine hit all of them alike.
    Whenever the callable changes, first :func:`wait_idle` (at most ``settle``
    seconds): BLAS/OpenMP worker threads of the previous library keep spinning
    for ~0.1 s after their last call and would steal cores from the next one.
    ``contexts`` optionally maps a key to a context-manager factory entered
    around that callable's warm-up and loops (e.g. torch.inference_mode).
    The garbage collector is paused while timing (as :mod:`timeit` does).

    Returns {key: Timing or the exception the callable raised}.
    """
    if warmup_time is None:
        warmup_time = max(0.5 * min_time, 0.05)
    contexts = contexts or {}
    results, iters, times = {}, {}, {}

    def run(key, what):
        ctx = contexts.get(key)
        try:
            if ctx is None:
                return what()
            with ctx():
                return what()
        except Exception as exc:  # recorded, other callables go on
            results[key] = exc
            return None

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        last = None

        def switch_to(key):
            nonlocal last
            if last != key:
                wait_idle(settle)
            last = key

        for key, fn in fns.items():
            switch_to(key)
            n = run(key, lambda fn=fn: _warmup(fn, warmup_time, min_time))
            if n is not None:
                iters[key] = n
                times[key] = []
        for _ in range(max(1, repeats)):
            for key, fn in fns.items():
                if key in results:
                    continue

                def one(fn=fn, n=iters[key]):
                    fn()
                    return _loop(fn, n) / n

                switch_to(key)
                t = run(key, one)
                if t is not None:
                    times[key].append(t)
    finally:
        if was_enabled:
            gc.enable()
    for key in fns:
        if key not in results:
            results[key] = Timing(times[key], iters[key])
    return {key: results[key] for key in fns}


def bench_interleaved(fns, repeats=5, settle=0.0):
    """Time several one-shot callables alternately (a, b, a, b, ...).

    Each callable is one whole repeat (e.g. one epoch). One warm-up round is run
    first (after :func:`wait_idle` for at most ``settle`` seconds).
    Returns a list of :class:`Timing` (seconds per call of each fn).
    """
    wait_idle(settle)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for fn in fns:
            fn()
        times = [[] for _ in fns]
        for _ in range(max(1, repeats)):
            for i, fn in enumerate(fns):
                times[i].append(_loop(fn, 1))
    finally:
        if was_enabled:
            gc.enable()
    return [Timing(t, 1) for t in times]
