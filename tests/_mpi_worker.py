"""Run under mpiexec by tests/test_distributed.py: ``python _mpi_worker.py
CASE OUTDIR``. Each case trains or fails on every rank and writes what
it saw to OUTDIR/CASE-<rank>.npz (arrays) or .json (messages); the test
computes the single-process reference itself and compares."""
import json
import os
import signal
import sys

import numpy as np

import nnlayers as nl
from nnlayers import distributed

F64 = np.float64
# the data every case draws from: the same on every rank
RNG = np.random.default_rng(1234)
X = RNG.standard_normal((1000, 6))
Y = RNG.integers(0, 3, 1000)


def seq(dropout):
    layers = [nl.Linear(6, 10), nl.Tanh()]
    if dropout:
        layers.append(nl.Dropout(0.25))
    layers.append(nl.Linear(10, 3))
    return nl.Sequential(*layers).astype(np.float64)


def graph():
    x = nl.Input(6)
    a = nl.Tanh()(nl.Linear(6, 8)(x))
    b = nl.ReLU()(nl.Linear(6, 8)(x))
    h = nl.Dropout(0.2)(nl.Add()([a, b]))
    return nl.Model(x, nl.Linear(8, 3)(h)).astype(np.float64)


def my_rows(comm, counts):
    """Rank r's own rows: the r-th block of sizes counts."""
    start = sum(counts[:comm.rank])
    return slice(start, start + counts[comm.rank])


def train(comm, model, opt, counts, bs, epochs, shuffle, seed=7, **kw):
    rows = my_rows(comm, counts)
    return model.fit(X[rows], Y[rows], optimizer=opt, comm=comm, batch_size=bs,
                     epochs=epochs, shuffle=shuffle, seed=seed, verbose=0, **kw)


def save_npz(out, case, comm, **arrays):
    np.savez(os.path.join(out, f"{case}-{comm.rank}.npz"), **arrays)


def save_json(out, case, comm, obj):
    with open(os.path.join(out, f"{case}-{comm.rank}.json"), "w") as f:
        json.dump(obj, f)


def case_equal(comm, out):
    """2 ranks x 40 rows, batch 8 per rank: 20 steps over 4 epochs of SGD
    with momentum (shuffled, Dropout), Adam on a graph with Dropout (not
    shuffled)."""
    res = {}
    m = seq(dropout=True)
    res["sgd_init"] = m._param_block().copy()
    h = train(comm, m, nl.SGD(m, lr=0.1, momentum=0.9), [40, 40], 8, 4, True)
    res["sgd"], res["sgd_loss"] = m._param_block().copy(), np.array(h.history["loss"])
    g = graph()
    res["adam_init"] = g._param_block().copy()
    h = train(comm, g, nl.Adam(g, lr=0.01), [40, 40], 8, 4, False)
    res["adam"], res["adam_loss"] = g._param_block().copy(), np.array(h.history["loss"])
    res["adam_acc"] = np.array(h.history["accuracy"])
    save_npz(out, "equal", comm, **res)


def case_uneven(comm, out):
    """3 ranks, 1000 rows (shard="auto": 333, 333, 334), batch 64."""
    m = seq(dropout=False)
    init = m._param_block().copy()
    h = m.fit(X, Y, optimizer=nl.SGD(m, lr=0.05, momentum=0.5), comm=comm, shard="auto",
              batch_size=64, epochs=1, shuffle=False, seed=3, verbose=0)
    save_npz(out, "uneven", comm, init=init, params=m._param_block().copy(),
             loss=np.array(h.history["loss"]))


def case_zero(comm, out):
    """4 ranks with 50, 30, 0, 21 rows, batch 16, shuffled: a rank with no
    rows, ranks that run out early, partial last batches."""
    m = seq(dropout=True)
    init = m._param_block().copy()
    h = train(comm, m, nl.Adam(m, lr=0.01), [50, 30, 0, 21], 16, 2, True)
    save_npz(out, "zero", comm, init=init, params=m._param_block().copy(),
             loss=np.array(h.history["loss"]))


class Boom(nl.Layer):
    """Identity that raises (or sends itself SIGINT, or returns inf) on
    one rank at one forward call."""

    def __init__(self, rank, at, how):
        super().__init__(dtype=np.float64)
        self.rank, self.at, self.how, self.calls = rank, at, how, 0

    def forward(self, x):
        self.calls += 1
        if distributed.init().rank == self.rank and self.calls == self.at:
            if self.how == "raise":
                raise RuntimeError("boom in a Python layer")
            if self.how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            if self.how == "inf":
                return x * np.inf
        return x

    def backward(self, g):
        return g


def attempt(fn):
    try:
        fn()
    except BaseException as e:   # the worker reports whatever was raised
        return {"type": type(e).__name__, "message": str(e)}
    return {"type": None, "message": ""}


def case_failures(comm, out):
    """Several failures in a row on one communicator: each must stop every
    rank with the same error, and the next case must still run."""
    res = {}
    for how in ("raise", "sigint", "inf"):
        m = nl.Sequential(nl.Linear(6, 5, dtype=F64), Boom(1, 3, how),
                          nl.Linear(5, 3, dtype=F64))
        before = m._param_block().copy()
        res[how] = attempt(lambda: train(comm, m, nl.SGD(m, lr=0.1), [40, 40], 8, 1, False))
        res[how]["steps"] = int(m._step)
        res[how]["changed"] = bool(np.any(m._param_block() != before))
    # bad input on rank 1 only: a wrong width
    m = seq(dropout=False)
    xr = X[:40] if comm.rank == 0 else X[:40, :5]
    res["bad_input"] = attempt(lambda: m.fit(xr, Y[:40], comm=comm, verbose=0))
    # NaN in rank 1's X only: named by row and column, nothing updated
    m = seq(dropout=False)
    before = m._param_block().copy()
    xn = X[:40].copy()
    if comm.rank == 1:
        xn[7, 2] = np.nan
    res["nan_input"] = attempt(lambda: m.fit(xn, Y[:40], comm=comm, verbose=0))
    res["nan_input"]["changed"] = bool(np.any(m._param_block() != before))
    # mismatched models: rank 1 has a wider hidden layer; then another layer count
    m = nl.Sequential(nl.Linear(6, 10 + comm.rank), nl.Linear(10 + comm.rank, 3)).astype(
        np.float64)
    res["mismatch_width"] = attempt(lambda: m.fit(X[:40], Y[:40], comm=comm, verbose=0))
    layers = [nl.Linear(6, 3)] + ([nl.Tanh()] if comm.rank else [])
    m = nl.Sequential(*layers).astype(np.float64)
    res["mismatch_layers"] = attempt(lambda: m.fit(X[:40], Y[:40], comm=comm, verbose=0))
    # different batch_size per rank
    m = seq(dropout=False)
    res["mismatch_args"] = attempt(lambda: m.fit(X[:40], Y[:40], comm=comm, verbose=0,
                                                 batch_size=8 + comm.rank))
    # a callback of the user's that raises on rank 1 only, at the end of
    # epoch 0 and after batch 2; and one that stops training on rank 1 only
    class RaiseOnRank1(nl.callbacks.Callback):
        def __init__(self, where):
            self.where = where

        def on_epoch_end(self, epoch, logs):
            if self.where == "epoch" and comm.rank == 1:
                raise ValueError("callback failed on purpose")

        def on_batch_end(self, batch, logs):
            if self.where == "batch" and comm.rank == 1 and batch == 2:
                raise ValueError("batch callback failed on purpose")

    class StopOnRank1(nl.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            if comm.rank == 1:
                self.model.stop_training = True

    for where in ("epoch", "batch"):
        m = seq(dropout=False)
        res["callback_" + where] = attempt(lambda: m.fit(
            X[:40], Y[:40], comm=comm, verbose=0, epochs=3, batch_size=8,
            callbacks=[RaiseOnRank1(where)]))
    m = seq(dropout=False)
    res["stop"] = attempt(lambda: res.setdefault("stop_epochs", len(m.fit(
        X[:40], Y[:40], comm=comm, verbose=0, epochs=4, batch_size=8,
        callbacks=[StopOnRank1()]).history["loss"])))
    # and the communicator still works: a good fit after all that
    m = seq(dropout=False)
    res["after"] = attempt(lambda: train(comm, m, nl.SGD(m, lr=0.1), [40, 40], 8, 1, False))
    save_json(out, "failures", comm, res)


def case_uncaught(comm, out):
    """A rank's Python layer raises and nobody catches it: every process
    must exit (non-zero), none may hang."""
    m = nl.Sequential(nl.Linear(6, 5, dtype=F64), Boom(0, 2, "raise"),
                      nl.Linear(5, 3, dtype=F64))
    train(comm, m, nl.SGD(m, lr=0.1), [40, 40], 8, 1, False)


def case_io(comm, out):
    """Root-only output: progress bar, save, ModelCheckpoint; evaluate and
    predict with comm gathered to every rank."""
    from nnlayers import io

    writes = []
    real_save = io.save

    def counting_save(*a, **k):
        writes.append(a[1])
        return real_save(*a, **k)

    io.save = counting_save
    m = seq(dropout=False)
    ckpt = nl.callbacks.ModelCheckpoint(os.path.join(out, "ckpt-{epoch}.npz"))
    stderr = sys.stderr   # each rank's progress output to a file of its own
    with open(os.path.join(out, f"stderr-{comm.rank}.txt"), "w") as sys.stderr:
        h = m.fit(X[:200], Y[:200], optimizer=nl.SGD(m, lr=0.1), comm=comm, shard="auto",
                  batch_size=16, epochs=2, shuffle=True, seed=5, verbose=1, callbacks=[ckpt],
                  validation_data=(X[200:300], Y[200:300]))
    sys.stderr = stderr
    m.save(os.path.join(out, "final.npz"), comm=comm)
    io.save = real_save
    pred = m.predict(X[300:337], comm=comm, shard="auto")
    mine = X[300:337][distributed._shard_rows(distributed.init(), 37)]
    pred_own = m.predict(mine, comm=comm)
    ev = m.evaluate(X[300:337], Y[300:337], comm=comm, shard="auto", metrics=["mse"])
    # explicit broadcasts: rank 1's weights perturbed, rank 0's Adam stepped
    params = m._param_block().copy()
    if comm.rank == 1:
        m._param_block()[:] += 1.0
    distributed.broadcast_parameters(m, root=0, comm=comm)
    bcast_params = m._param_block().copy()
    adam = nl.Adam(m, lr=0.01)
    if comm.rank == 0:
        m.train_step(X[:8], Y[:8], nl.SoftmaxCrossEntropy(), adam)
    distributed.broadcast_optimizer_state(adam, root=0, comm=comm)
    sd = adam.state_dict()
    save_npz(out, "io", comm, params=params, pred=pred, pred_own=pred_own,
             val_loss=np.array(h.history["val_loss"]), loss=np.array(h.history["loss"]),
             bcast_params=bcast_params, adam_steps=np.array(sd["steps"]),
             adam_state=np.concatenate([np.ravel(v) for k in sorted(sd["state"])
                                        for v in sd["state"][k].values()]))
    save_json(out, "io", comm, {"writes": len(writes), "evaluate": ev})


if __name__ == "__main__":
    case, outdir = sys.argv[1], sys.argv[2]
    globals()["case_" + case](distributed.init(), outdir)
