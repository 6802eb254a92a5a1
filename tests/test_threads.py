"""Threads: one object serves one call at a time (a second thread gets
nl.ConcurrentUseError, never a crash or a corrupted result), including
calls that share memory with a running call (zero_grad, SGD.step and the
model holding its layers); the BLAS thread count a user sets is not undone
by calls in other threads; different models run in parallel with the GIL
released; and Ctrl-C during fit leaves a working model.

Profiles
--------
default (CI)        8 threads x 12 rounds of 3 calls on one model; two
                    models x 150 train steps in parallel; 5 interrupted fits.
NNLAYERS_HEAVY=1    8 threads x 60 rounds; two models x 600 train steps;
                    5 interrupted fits.
"""

import copy
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest

import nnlayers as nl

HEAVY = os.environ.get("NNLAYERS_HEAVY") == "1"
ROUNDS = 60 if HEAVY else 12
PARALLEL_STEPS = 600 if HEAVY else 150
N_THREADS = 8


def medium_model(seed=0, dtype=np.float64):
    """256-256-256-10: a call lasts a few milliseconds, long enough to overlap."""
    return nl.Sequential(nl.Linear(256, 256, dtype=dtype, seed=seed), nl.ReLU(),
                         nl.Linear(256, 256, dtype=dtype, seed=seed + 1), nl.Tanh(),
                         nl.Linear(256, 10, dtype=dtype, seed=seed + 2))


def medium_data(seed=0, n=64, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 256)).astype(dtype)
    y = rng.integers(0, 10, size=n)
    g = rng.standard_normal((n, 10)).astype(dtype)
    return x, y, g


def param_block(model):
    return np.array(model._param_block())


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def is_missing_forward(exc):
    """A backward whose forward another thread's call consumed: each forward
    serves one backward, so this is the documented ValueError, not a race."""
    return isinstance(exc, ValueError) and "needs a forward" in str(exc)


def is_other_forward(exc):
    """A backward after another thread's forward of a different batch size
    (predict in batches): the documented shape ValueError."""
    return isinstance(exc, ValueError) and "shape of the last forward's output" in str(exc)


# ---------------------------------------------------------------------------
# one model, eight threads
# ---------------------------------------------------------------------------

def test_same_model_from_eight_threads_is_serialised():
    """forward, backward, train_step and fit on one model from 8 threads,
    started together by a barrier every round. Every call either raises
    ConcurrentUseError or gives exactly (bitwise) what a serial run gives:
    all train_step/fit calls use the same batch, so after k successful
    updates the model must equal k serial train steps, whatever the order;
    each forward/backward must equal the serial one at one of those k+1
    parameter states; the losses must be the k serial losses."""
    x, y, g = medium_data(1)
    model = medium_model(10)
    start = copy.deepcopy(model)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=0.01, momentum=0.9)
    barrier = threading.Barrier(N_THREADS)
    logs = [[] for _ in range(N_THREADS)]

    def call(log, op, fn):
        try:
            log.append((op, fn()))
        except nl.ConcurrentUseError:
            log.append((op, "busy"))
        except BaseException as e:            # recorded, judged below
            log.append((op, e))

    def worker(t):
        r = random.Random(1000 + t)
        log = logs[t]
        for _ in range(ROUNDS):
            barrier.wait()
            for _ in range(3):
                op = r.choice(["forward", "forward+backward", "train_step", "fit"])
                if op == "forward":
                    call(log, "forward", lambda: model.forward(x))
                elif op == "forward+backward":
                    call(log, "forward", lambda: model.forward(x))
                    call(log, "backward", lambda: model.backward(g))
                elif op == "train_step":
                    call(log, "train_step", lambda: model.train_step(x, y, loss, opt))
                else:
                    call(log, "fit", lambda: model.fit(
                        x, y, loss=loss, optimizer=opt, epochs=1, batch_size=len(x),
                        shuffle=False, verbose=0).history["loss"][0])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    entries = [e for log in logs for e in log]
    unexpected = [(op, r) for op, r in entries if isinstance(r, BaseException)
                  and not (op == "backward" and is_missing_forward(r))]
    assert not unexpected, f"calls failed with other errors: {unexpected[:5]}"
    busy = sum(1 for _, r in entries if isinstance(r, str))
    ok = {op: [r for o, r in entries if o == op and not isinstance(r, (str, BaseException))]
          for op in ("forward", "backward", "train_step", "fit")}
    print(f"\n[threads] {len(entries)} calls: {busy} ConcurrentUseError, "
          + ", ".join(f"{k} ok {len(v)}" for k, v in ok.items()))
    assert busy > 0, "8 threads released together never collided"
    assert ok["forward"] and (ok["train_step"] or ok["fit"])

    # serial replay: k identical train steps from the same start
    k = len(ok["train_step"]) + len(ok["fit"])
    ropt, rloss = nl.SGD(start, lr=0.01, momentum=0.9), nl.SoftmaxCrossEntropy()
    fwd_states, bwd_states, losses = [], [], []
    for i in range(k + 1):
        fwd_states.append(start.forward(x))
        bwd_states.append(start.backward(g))
        if i < k:
            losses.append(start.train_step(x, y, rloss, ropt))

    for out in ok["forward"]:
        assert any(same_bits(out, s) for s in fwd_states), \
            "a concurrent forward differs from every serial forward"
    for gx in ok["backward"]:
        assert any(same_bits(gx, s) for s in bwd_states), \
            "a concurrent backward differs from every serial backward"
    got_losses = sorted(ok["train_step"] + ok["fit"])
    assert got_losses == sorted(losses), "losses differ from the serial run's"
    for log in logs:        # each thread saw its updates in order
        mine = [r for op, r in log if op in ("train_step", "fit")
                and not isinstance(r, (str, BaseException))]
        idx = [losses.index(v) for v in mine]
        assert idx == sorted(idx)
    assert same_bits(param_block(model), param_block(start)), \
        "final parameters differ from k serial train steps"
    assert same_bits(np.array(opt._velocity()), np.array(ropt._velocity()))

    # the model is valid and works serially
    assert np.all(np.isfinite(param_block(model)))
    v = model.train_step(x, y, loss, opt)
    assert v == start.train_step(x, y, rloss, ropt)
    assert same_bits(model.forward(x), start.forward(x))


def test_mixed_calls_on_one_model_and_its_layers_never_crash():
    """A wider mix (layer calls inside the model, SGD.step, predict,
    evaluate with a shared loss) from 8 threads: only ConcurrentUseError or,
    for a backward, the ValueErrors that the same interleaving gives in one
    thread (its forward was consumed, or another thread's predict left a
    forward of a different batch size pending); afterwards the
    parameters are finite and serial calls work."""
    x, y, g = medium_data(2)
    model = medium_model(20)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=1e-3, momentum=0.5)
    g0 = np.full((len(x), 256), 1e-3)
    barrier = threading.Barrier(N_THREADS)
    errors, counts = [], {"busy": 0, "ok": 0}
    lock = threading.Lock()

    ops = {
        "forward": lambda: model.forward(x),
        "backward": lambda: model.backward(g),
        "train_step": lambda: model.train_step(x, y, loss, opt),
        "fit": lambda: model.fit(x, y, loss=loss, optimizer=opt, epochs=1, batch_size=16,
                                 verbose=0),
        "predict": lambda: model.predict(x, batch_size=16),
        "evaluate": lambda: model.evaluate(x, y, loss),
        "layer0.forward": lambda: model[0].forward(x),
        "layer0.backward": lambda: model[0].backward(g0),
        "layer1.forward": lambda: model[1].forward(x),
        "sgd.step": opt.step,
    }

    def worker(t):
        r = random.Random(2000 + t)
        for _ in range(ROUNDS):
            barrier.wait()
            for _ in range(3):
                name = r.choice(sorted(ops))
                try:
                    ops[name]()
                    outcome = "ok"
                except nl.ConcurrentUseError:
                    outcome = "busy"
                except ValueError as e:
                    if "backward" in name and (is_missing_forward(e) or is_other_forward(e)):
                        outcome = "ok"
                    else:
                        outcome = (name, e)
                except BaseException as e:
                    outcome = (name, e)
                with lock:
                    if isinstance(outcome, tuple):
                        errors.append(outcome)
                    else:
                        counts[outcome] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:5]
    assert counts["busy"] > 0
    assert np.all(np.isfinite(param_block(model)))
    assert np.isfinite(model.train_step(x, y, loss, opt))
    assert np.all(np.isfinite(model.predict(x)))
    model.fit(x, y, loss=loss, optimizer=opt, epochs=1, batch_size=32, verbose=0)
    assert np.all(np.isfinite(param_block(model)))


# ---------------------------------------------------------------------------
# refusing calls that would race with a running call
# ---------------------------------------------------------------------------

def _model_busy(model):
    """Whether a call on model is running in another thread (no side effect:
    forward(None) fails its argument check once it has claimed the model)."""
    try:
        model.forward(None)
    except nl.ConcurrentUseError:
        return True
    except TypeError:
        return False
    raise AssertionError("forward(None) returned")


def _optimizer_busy(opt):
    """Whether a call on opt runs (no side effect: re-initialising it with
    lr=-1 checks 'in use' before rejecting the learning rate)."""
    try:
        nl.SGD.__init__(opt, [], -1.0)
    except nl.ConcurrentUseError:
        return True
    except ValueError:
        return False
    raise AssertionError("SGD.__init__(lr=-1) returned")


def _call_during(long_call, busy, victim, attempts=20, prepare=None):
    """Start long_call (one call) in a thread, wait until busy() says it is
    running, call victim, and check busy() again. Returns "refused" if the
    victim raised ConcurrentUseError, "ran" if it returned while the long
    call was running both before and after it (so they overlapped), and
    None if no attempt was conclusive. prepare() runs before each attempt."""
    for _ in range(attempts):
        if prepare is not None:
            prepare()
        th = threading.Thread(target=long_call)
        th.start()
        try:
            while th.is_alive() and not busy():
                pass
            if not busy():
                continue
            try:
                victim()
            except nl.ConcurrentUseError:
                return "refused"
            if busy():
                return "ran"
        finally:
            th.join()
    return None


def _long_fit_problem():
    rng = np.random.default_rng(3)
    model = nl.Sequential(nl.Linear(64, 128, dtype=np.float64, seed=30), nl.Tanh(),
                          nl.Linear(128, 10, dtype=np.float64, seed=31))
    X = rng.standard_normal((4000, 64))
    y = rng.integers(0, 10, size=4000)
    loss = nl.SoftmaxCrossEntropy()
    opt = nl.SGD(model, lr=1e-3, momentum=0.9)
    return model, X, y, loss, opt


@pytest.mark.parametrize("victim", ["model.forward", "layer.forward", "sgd.step"])
def test_calls_are_refused_while_fit_runs(victim):
    """The documented guard: while fit runs in one thread, another thread's
    forward (of the model or of one of its layers) and SGD.step get
    ConcurrentUseError."""
    model, X, y, loss, opt = _long_fit_problem()
    fn = {"model.forward": lambda: model.forward(X[:4]),
          "layer.forward": lambda: model[0].forward(X[:4]),
          "sgd.step": opt.step}[victim]
    outcome = _call_during(
        lambda: model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=4, verbose=0),
        lambda: _model_busy(model), fn)
    assert outcome == "refused", f"{victim} {outcome} during fit"


@pytest.mark.parametrize("victim", ["model.zero_grad", "layer.zero_grad", "sgd.zero_grad"])
def test_zero_grad_is_refused_while_fit_runs(victim):
    """zero_grad writes the gradient block that the running train step reads
    for its SGD update: run concurrently it silently changes the update
    (before 562332c it did: parameters differed from the serial run by up to
    0.1 after 200 steps). Like every other call it must raise
    ConcurrentUseError."""
    model, X, y, loss, opt = _long_fit_problem()
    fn = {"model.zero_grad": model.zero_grad, "layer.zero_grad": model[2].zero_grad,
          "sgd.zero_grad": opt.zero_grad}[victim]
    outcome = _call_during(
        lambda: model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=4, verbose=0),
        lambda: _model_busy(model), fn)
    assert outcome is not None, "fit never observed running"
    assert outcome == "refused", (
        f"{victim}() ran while fit was running in another thread (no ConcurrentUseError)")


def _long_step_problem():
    """A small model whose SGD also holds a big extra layer, so SGD.step is
    long while calls on the small model are quick."""
    model = nl.Sequential(nl.Linear(8, 8, seed=40), nl.Tanh(), nl.Linear(8, 4, seed=41))
    big = nl.Linear(2048, 2048, seed=42)
    opt = nl.SGD([big, model[0], model[2]], lr=1e-6, momentum=0.9)
    return model, opt, nl.SoftmaxCrossEntropy()


@pytest.mark.parametrize("victim", ["model.forward", "model.backward", "layer.forward",
                                    "model.zero_grad"])
def test_model_calls_are_refused_while_its_optimizer_steps(victim):
    """SGD.step refuses to start while a model holding its layers is busy;
    the converse must hold too: while step() rewrites the weights (GIL
    released), a forward of the model would read them half-updated and
    backward/zero_grad would write the gradients it reads, so these calls
    must raise ConcurrentUseError (before 562332c they ran)."""
    model, opt, _ = _long_step_problem()
    x = np.random.default_rng(4).standard_normal((2, 8)).astype(np.float32)
    g = np.ones((2, 4), np.float32)
    def fn():
        if victim == "model.forward":
            model.forward(x)
        elif victim == "model.backward":
            model.backward(g)
        elif victim == "layer.forward":
            model[0].forward(x)
        else:
            model.zero_grad()

    outcome = _call_during(opt.step, lambda: _optimizer_busy(opt), fn,
                           prepare=lambda: model.forward(x))   # pending for backward
    assert outcome is not None, "SGD.step never observed running"
    assert outcome == "refused", (
        f"{victim} ran while SGD.step over its layers was running in another thread")


def test_sgd_step_is_refused_while_model_busy():
    model, X, y, loss, opt = _long_fit_problem()
    other = nl.SGD([model[2]], lr=1e-3)
    outcome = _call_during(
        lambda: model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=4, verbose=0),
        lambda: _model_busy(model), other.step)
    assert outcome == "refused"


def test_set_num_threads_is_not_undone_by_calls_in_other_threads():
    """nl.set_num_threads(n) while another thread trains a small model:
    nl.get_num_threads() must then say n. nnlayers runs small products on
    one OpenBLAS thread by lowering the process-wide count around the call
    and putting the previous count back; that put-back must not overwrite a
    setting made meanwhile by another thread (nl.set_num_threads, or
    threadpoolctl's threadpool_limits)."""
    old = nl.get_num_threads()
    model = nl.Sequential(nl.Linear(32, 32, seed=80), nl.ReLU(), nl.Linear(32, 10, seed=81))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=1e-3)
    stop = threading.Event()

    def train():
        while not stop.is_set():
            model.train_step(x, y, loss, opt)

    lost = []
    th = threading.Thread(target=train)
    try:
        nl.set_num_threads(2)
        th.start()
        for _ in range(200):
            nl.set_num_threads(1)
            time.sleep(0.002)
            if nl.get_num_threads() != 1:
                lost.append(nl.get_num_threads())
            nl.set_num_threads(2)
            time.sleep(0.002)
    finally:
        stop.set()
        th.join()
        nl.set_num_threads(old)
    assert not lost, (f"nl.set_num_threads(1) was undone by a train_step in another "
                      f"thread in {len(lost)} of 200 tries (count read back: {lost[0]})")


# ---------------------------------------------------------------------------
# different models in different threads: parallel, GIL released
# ---------------------------------------------------------------------------

def _overlapping(mine, theirs):
    """How many of the intervals `mine` overlap one of `theirs` (both in
    time order)."""
    j, count = 0, 0
    for a0, a1 in mine:
        while j < len(theirs) and theirs[j][1] <= a0:
            j += 1
        if j < len(theirs) and theirs[j][0] < a1:
            count += 1
    return count


def _timed_in_two_threads(calls, n):
    """Run calls[i]() n times in thread i (i = 0, 1), both released by a
    barrier, with a switch interval of 0.5 s: the GIL then changes hands
    only when a thread releases it (or after 0.5 s). Returns each thread's
    (start, end) times and return values."""
    intervals, values = [[], []], [[], []]
    barrier = threading.Barrier(2)

    def worker(i):
        fn = calls[i]
        barrier.wait()
        for _ in range(n):
            t0 = time.perf_counter()
            v = fn()
            t1 = time.perf_counter()
            intervals[i].append((t0, t1))
            values[i].append(v)

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old_switch)
    return intervals, values


def test_overlap_detector_control():
    """The detector used below: calls that hold the GIL (a Python busy loop
    of 2 ms) do not overlap (at most one forced switch per 0.5 s)."""
    def hold():
        t = time.perf_counter()
        while time.perf_counter() - t < 0.002:
            pass

    intervals, _ = _timed_in_two_threads([hold, hold], 100)
    ov = [_overlapping(intervals[0], intervals[1]), _overlapping(intervals[1], intervals[0])]
    print(f"\n[threads] GIL-holding control, overlapping calls: {ov[0]}/100, {ov[1]}/100")
    assert max(ov) <= 10


def test_different_models_run_in_parallel_and_match_serial_runs():
    """Two models trained in two threads (nl.set_num_threads(1)). The call
    intervals of the threads can overlap only if train_step runs without the
    GIL (see the control above): most calls of each thread must overlap a
    call of the other. The results are bitwise those of training the two
    models one after the other."""
    def make(seed):
        model = medium_model(seed, dtype=np.float32)
        return model, nl.SGD(model, lr=0.01, momentum=0.9), nl.SoftmaxCrossEntropy()

    data = [medium_data(5, dtype=np.float32), medium_data(6, dtype=np.float32)]
    seeds = (50, 60)
    old_threads = nl.get_num_threads()
    nl.set_num_threads(1)
    try:
        serial = []
        for i in range(2):
            model, opt, loss = make(seeds[i])
            x, y, _ = data[i]
            losses = [model.train_step(x, y, loss, opt) for _ in range(PARALLEL_STEPS)]
            serial.append((losses, param_block(model)))

        runs = [make(seeds[0]), make(seeds[1])]

        def step(i):
            model, opt, loss = runs[i]
            x, y, _ = data[i]
            return lambda: model.train_step(x, y, loss, opt)

        intervals, losses = _timed_in_two_threads([step(0), step(1)], PARALLEL_STEPS)
    finally:
        nl.set_num_threads(old_threads)

    n = PARALLEL_STEPS
    ov = [_overlapping(intervals[0], intervals[1]), _overlapping(intervals[1], intervals[0])]
    print(f"\n[threads] train_step calls overlapping the other thread's: {ov[0]}/{n}, {ov[1]}/{n}")
    assert min(ov) >= n // 2, f"only {ov} of {n} calls overlapped: the GIL seems held"
    for i in range(2):
        assert losses[i] == serial[i][0], f"model {i}: losses differ from the serial run"
        assert same_bits(param_block(runs[i][0]), serial[i][1]), \
            f"model {i}: parameters differ from the serial run"


# ---------------------------------------------------------------------------
# Ctrl-C during fit, a model whose layers an SGD also holds
# ---------------------------------------------------------------------------

def test_ctrl_c_during_fit_five_times_in_a_row():
    """fit in the main thread, SIGINT sent by pthread_kill from another
    thread after a random delay, five times. Each time: KeyboardInterrupt,
    finite parameters and momentum, the model and the optimizer are not left
    claimed (train_step and SGD.step work), and the next fit trains on."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not handled by Python's default handler here")
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3000, 32))
    y = rng.integers(0, 10, size=3000)
    model = nl.Sequential(nl.Linear(32, 128, dtype=np.float64, seed=70), nl.ReLU(),
                          nl.Linear(128, 128, dtype=np.float64, seed=71), nl.Tanh(),
                          nl.Linear(128, 10, dtype=np.float64, seed=72))
    opt = nl.SGD([model[0], model[2], model[4]], lr=0.01, momentum=0.9, nesterov=True)
    loss = nl.SoftmaxCrossEntropy()
    delays = random.Random(8)
    main = threading.main_thread().ident
    previous = param_block(model)
    for attempt in range(5):
        delay = delays.uniform(0.005, 0.4)

        def fire(delay=delay):
            time.sleep(delay)
            signal.pthread_kill(main, signal.SIGINT)

        killer = threading.Thread(target=fire)
        killer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                model.fit(X, y, loss=loss, optimizer=opt, epochs=10**6, batch_size=16,
                          seed=attempt, verbose=0)
        finally:
            killer.join()
        params = param_block(model)
        assert np.all(np.isfinite(params)), f"attempt {attempt}: non-finite parameters"
        assert np.all(np.isfinite(np.array(opt._velocity())))
        if delay > 0.1:   # a few hundred batches ran
            assert not same_bits(params, previous), f"attempt {attempt}: fit did not train"
        assert np.isfinite(model.train_step(X[:16], y[:16], loss, opt))
        opt.step()
        assert np.all(np.isfinite(model.predict(X[:50])))
        previous = param_block(model)
    hist = model.fit(X[:320], y[:320], loss=loss, optimizer=opt, epochs=2, batch_size=16,
                     verbose=0)
    assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"][-1])
    assert not same_bits(param_block(model), previous)
