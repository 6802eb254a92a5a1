"""Data-parallel training over MPI (nnlayers.distributed).

Each test starts ``mpiexec -n p python tests/_mpi_worker.py CASE DIR``
through a subprocess with a timeout (a hang fails instead of blocking),
then checks what the ranks wrote against a single process computed here:
``train_step`` on the ranks' batches stacked in rank order, from rank 0's
initial weights, with the same seed and the documented shuffle (rank r,
epoch e: ``default_rng([seed, e, r]).permutation(its rows)``). Skipped
only when mpi4py or mpiexec is not installed.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import nnlayers as nl

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _mpi_worker as W  # noqa: E402

try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
    "mpiexec")
needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="mpi4py or mpiexec not installed "
                                      "(pip install \".[mpi]\")")
TIMEOUT = 90


def run(case, p, tmp_path, expect_ok=True):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="true", OPENBLAS_NUM_THREADS="1",
               NNLAYERS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [MPIEXEC, "--map-by", ":OVERSUBSCRIBE", "-n", str(p), sys.executable, os.path.join(HERE, "_mpi_worker.py"),
           case, str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if expect_ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def load(tmp_path, case, p, ext="npz"):
    out = []
    for r in range(p):
        path = tmp_path / f"{case}-{r}.{ext}"
        if ext == "npz":
            out.append(dict(np.load(path)))
        else:
            out.append(json.loads(path.read_text()))
    return out


def reference(model, opt, counts, bs, epochs, shuffle, seed=7, loss=None):
    """One process, step k on the ranks' k-th batches stacked in rank
    order; returns the per-epoch mean losses."""
    loss = loss or nl.SoftmaxCrossEntropy()
    model.seed, model._step = seed, 0
    starts = np.cumsum([0] + counts[:-1])
    steps = max((n + bs - 1) // bs for n in counts)
    losses = []
    for e in range(epochs):
        orders = [np.random.default_rng([seed, e, r]).permutation(n) if shuffle
                  else np.arange(n) for r, n in enumerate(counts)]
        total, seen = 0.0, 0
        for k in range(steps):
            idx = np.concatenate([s + o[k * bs:(k + 1) * bs] for s, o in zip(starts, orders)])
            rows = len(idx)
            total += model.train_step(W.X[idx], W.Y[idx], loss, opt) * rows
            seen += rows
        losses.append(total / seen)
    return np.array(losses)


def assert_rel(a, b, tol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
    assert err <= tol, f"relative error {err:.3g} > {tol:g}"


def identical_everywhere(ranks, key):
    for r in ranks[1:]:
        assert np.array_equal(r[key], ranks[0][key])


@needs_mpi
def test_two_ranks_equal_one_process(tmp_path):
    run("equal", 2, tmp_path)
    ranks = load(tmp_path, "equal", 2)
    for key in ("sgd", "sgd_loss", "adam", "adam_loss", "adam_acc"):
        identical_everywhere(ranks, key)
    # SGD with momentum, Dropout, shuffled: 4 epochs x 5 steps
    m = W.seq(dropout=True)
    m._param_block()[:] = ranks[0]["sgd_init"]
    lref = reference(m, nl.SGD(m, lr=0.1, momentum=0.9), [40, 40], 8, 4, True)
    assert not np.array_equal(ranks[0]["sgd"], ranks[0]["sgd_init"])
    assert_rel(ranks[0]["sgd"], m._param_block())
    assert_rel(ranks[0]["sgd_loss"], lref)
    # Adam on a graph with Dropout, not shuffled
    g = W.graph()
    g._param_block()[:] = ranks[0]["adam_init"]
    lref = reference(g, nl.Adam(g, lr=0.01), [40, 40], 8, 4, False)
    assert_rel(ranks[0]["adam"], g._param_block())
    assert_rel(ranks[0]["adam_loss"], lref)


@needs_mpi
def test_three_ranks_uneven_shards_partial_batch(tmp_path):
    run("uneven", 3, tmp_path)
    ranks = load(tmp_path, "uneven", 3)
    identical_everywhere(ranks, "params")
    m = W.seq(dropout=False)
    m._param_block()[:] = ranks[0]["init"]
    lref = reference(m, nl.SGD(m, lr=0.05, momentum=0.5), [333, 333, 334], 64, 1, False,
                     seed=3)
    assert_rel(ranks[0]["params"], m._param_block())
    assert_rel(ranks[0]["loss"], lref)


@needs_mpi
def test_four_ranks_one_without_rows(tmp_path):
    run("zero", 4, tmp_path)
    ranks = load(tmp_path, "zero", 4)
    identical_everywhere(ranks, "params")
    m = W.seq(dropout=True)
    m._param_block()[:] = ranks[0]["init"]
    lref = reference(m, nl.Adam(m, lr=0.01), [50, 30, 0, 21], 16, 2, True)
    assert_rel(ranks[0]["params"], m._param_block())
    assert_rel(ranks[0]["loss"], lref)


@needs_mpi
def test_failures_stop_every_rank_naming_the_rank(tmp_path):
    run("failures", 2, tmp_path)
    ranks = load(tmp_path, "failures", 2, "json")
    for res in ranks:
        # rank 1's Python layer raises at its 3rd forward (step index 2)
        assert res["raise"]["type"] == "RankFailedError"
        assert "rank 1: RuntimeError: boom in a Python layer" in res["raise"]["message"]
        assert "step 2" in res["raise"]["message"]
        assert res["raise"]["steps"] == 2   # steps 0, 1 applied, step 2 not
        # Ctrl-C on rank 1 during step 2: every rank stops at step 3
        assert res["sigint"]["type"] == "KeyboardInterrupt"
        assert "rank" in res["sigint"]["message"] and "step 3" in res["sigint"]["message"]
        assert res["sigint"]["steps"] == 3
        # a non-finite loss on rank 1: no update anywhere
        assert res["inf"]["type"] == "NonFiniteLossError"
        assert "rank 1" in res["inf"]["message"]
        assert res["inf"]["steps"] == 2
        assert res["bad_input"]["type"] == "RankFailedError"
        assert "rank 1" in res["bad_input"]["message"] and "rank 0" not in \
            res["bad_input"]["message"].split("failed:")[1]
        got = res["nan_input"]
        assert got["type"] == "RankFailedError", got
        assert "rank 1: ValueError: X holds nan at row 7 (column 2)" in got["message"], got
        assert not got["changed"]
        for key in ("mismatch_width", "mismatch_layers"):
            assert res[key]["type"] == "ValueError", res[key]
            assert "differs between ranks" in res[key]["message"]
            assert "rank 1 has" in res[key]["message"]
        assert res["mismatch_args"]["type"] == "ValueError"
        assert "'batch_size': 9" in res["mismatch_args"]["message"]
        # a user's callback raising on rank 1 only stops every rank, naming it
        for where, text in (("epoch", "epoch 0, on_epoch_end"),
                            ("batch", "step 2, on_batch_end")):
            got = res["callback_" + where]
            assert got["type"] == "RankFailedError", got
            assert text in got["message"] and "rank 1: ValueError" in got["message"]
        # a stop asked for on rank 1 only stops every rank after epoch 0
        assert res["stop"]["type"] is None, res["stop"]
        assert res["stop_epochs"] == 1
        assert res["after"]["type"] is None
    assert ranks[0] == ranks[1]


@needs_mpi
def test_uncaught_failure_ends_every_process(tmp_path):
    r = run("uncaught", 2, tmp_path, expect_ok=False)
    assert r.returncode != 0
    assert "rank 0: RuntimeError: boom in a Python layer" in r.stderr


@needs_mpi
def test_root_only_io_and_gathered_evaluate_predict(tmp_path):
    run("io", 2, tmp_path)
    ranks = load(tmp_path, "io", 2)
    info = load(tmp_path, "io", 2, "json")
    identical_everywhere(ranks, "params")
    # progress bars from the root only, counting every rank's rows
    out0 = (tmp_path / "stderr-0.txt").read_text()
    out1 = (tmp_path / "stderr-1.txt").read_text()
    assert "Epoch 1/2" in out0 and "Epoch 2/2" in out0 and "200/200" in out0
    assert out1 == ""
    # every write from rank 0: 2 checkpoints + the final save
    assert info[0]["writes"] == 3 and info[1]["writes"] == 0
    for f in ("ckpt-1.npz", "ckpt-2.npz", "final.npz"):
        assert (tmp_path / f).exists()
    final = nl.load(str(tmp_path / "final.npz"))
    np.testing.assert_array_equal(final._param_block(), ranks[0]["params"])
    # predict and evaluate: all 37 rows on every rank, as one process
    m = W.seq(dropout=False)
    m._param_block()[:] = ranks[0]["params"]
    want = m.predict(W.X[300:337])
    for rk in ranks:
        np.testing.assert_allclose(rk["pred"], want, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rk["pred_own"], want, rtol=1e-13, atol=1e-15)
    ev = m.evaluate(W.X[300:337], W.Y[300:337], metrics=["mse"])
    for i in info:
        assert set(i["evaluate"]) == set(ev)
        for k in ev:
            assert abs(i["evaluate"][k] - ev[k]) <= 1e-12 * max(1.0, abs(ev[k]))
    # explicit broadcasts of rank 0's parameters and Adam state
    for key in ("bcast_params", "adam_steps", "adam_state"):
        identical_everywhere(ranks, key)
    np.testing.assert_array_equal(ranks[1]["bcast_params"], ranks[0]["params"])
    assert int(ranks[1]["adam_steps"]) == 1 and np.any(ranks[1]["adam_state"] != 0)
    # validation loss in History: of all 100 validation rows
    assert ranks[0]["val_loss"].shape == (2,)
    np.testing.assert_array_equal(ranks[0]["val_loss"], ranks[1]["val_loss"])


def test_import_does_not_import_mpi4py():
    code = ("import sys, nnlayers as nl; nl.distributed; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_shard_without_comm_is_refused():
    m = W.seq(dropout=False)
    with pytest.raises(ValueError, match="shard= needs comm="):
        m.fit(W.X[:10], W.Y[:10], shard="auto", verbose=0)


@pytest.mark.parametrize("make_opt", [lambda m: nl.SGD(m, lr=0.1, momentum=0.9),
                                      lambda m: nl.Adam(m, lr=0.01, clip_norm=0.5)],
                         ids=["sgd", "adam-clipnorm"])
def test_split_step_sums_to_the_whole_step(make_opt):
    """The engine's step cut in two (no MPI): the gradients of two halves,
    each divided by the whole batch's rows and placed at their global rows
    (Dropout), added, then applied, equal train_step on the whole batch."""
    a, b = W.graph(), W.graph()
    b._param_block()[:] = a._param_block()
    a.seed = b.seed = 11
    oa, ob = make_opt(a), make_opt(b)
    loss = nl.SoftmaxCrossEntropy()
    x, y = W.X[:30], W.Y[:30]
    for _ in range(3):
        whole = a.train_step(x, y, loss, oa)
        s1, c1, _ = b._grad_step(x[:18], y[:18], loss, ob, 30, 0)
        g1 = b._grad_block().copy()
        s2, c2, _ = b._grad_step(x[18:], y[18:], loss, ob, 30, 18)
        b._grad_block()[:] += g1
        b._apply_step(ob, 12)
        assert abs((s1[0] + s2[0]) / 30 - whole) <= 1e-12 * abs(whole)
    assert a._step == b._step == 3
    assert_rel(b._param_block(), a._param_block())


def test_grad_step_refuses_a_divisor_below_its_rows():
    m = W.seq(dropout=False)
    opt = nl.SGD(m, lr=0.1)
    before = m._param_block().copy()
    with pytest.raises(ValueError, match="divisor >= them"):
        m._grad_step(W.X[:10], W.Y[:10], nl.SoftmaxCrossEntropy(), opt, 5, 0)
    with pytest.raises(ValueError, match="row0 must be >= 0"):
        m._grad_step(W.X[:10], W.Y[:10], nl.SoftmaxCrossEntropy(), opt, 10, -1)
    np.testing.assert_array_equal(m._param_block(), before)
    m._grad_step(W.X[:10], W.Y[:10], nl.SoftmaxCrossEntropy(), opt, 10, 0)
    m._apply_step(opt, 10)
    assert not np.array_equal(m._param_block(), before)
