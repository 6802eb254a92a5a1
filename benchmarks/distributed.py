"""Data-parallel training over MPI: throughput at 1, 2 and 4 ranks, the
all-reduce time of the benchmark networks' gradient blocks, and whether
overlapping the all-reduce with the backward pass pays.

    python benchmarks/distributed.py [--ranks 1,2,4] [--steps 20] [--repeats 5]

The script starts itself under ``mpiexec -n p`` (from the Python
environment's bin, oversubscription allowed, one BLAS thread per rank)
for each p, and prints one table. Each rank-run measures, on the medium
(784-256-256-10, global batch 128) and large (784-1024-1024-10, global
batch 256) float32 networks, at a fixed global batch (batch_size =
global / p per rank):

- fit:      ``model.fit(comm=)`` steps per second (the whole protocol:
            status exchange, gradient Allreduce, update);
- blocking: a bare loop of ``_grad_step``, one Allreduce of the gradient
            block, ``_apply_step`` (no status exchange);
- overlap:  the same loop, each layer's gradient handed to a non-blocking
            ``Iallreduce`` as the engine reports it complete
            (``_grad_step(ready=...)``), all waited for before the update;
- allreduce: one Allreduce of the gradient block alone.

At p=1 it also times the single-process ``fit`` (the C loop, no comm).
Timing: in one process per rank, warm-up first, the median over repeats
of (steps / seconds) on rank 0; the modes alternate within each repeat.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ALPHA = 5e-6   # assumed latency of one message on a cluster network (s)
NETS = {"medium": ((784, 256, 256, 10), 128), "large": ((784, 1024, 1024, 10), 256)}


def _env():
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="true", OPENBLAS_NUM_THREADS="1",
                NNLAYERS_NUM_THREADS="1", NNLAYERS_DIST_BENCH="worker")


def _mlp(nl, sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nl.ReLU())
        layers.append(nl.Linear(a, b, dtype=np.float32, seed=i))
    return nl.Sequential(*layers)


def _worker(args):
    from mpi4py import MPI

    import nnlayers as nl

    nl.set_num_threads(1)
    comm = nl.distributed.init()
    out = {}
    for name, (sizes, global_batch) in NETS.items():
        bs = global_batch // comm.size
        steps = args.steps
        rng = np.random.default_rng(comm.rank)
        X = rng.standard_normal((bs * steps, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], bs * steps)
        model = _mlp(nl, sizes)
        opt = nl.SGD(model, lr=1e-3, momentum=0.9)
        loss = nl.SoftmaxCrossEntropy()
        g = model._grad_block()
        total = global_batch

        def fit():
            model.fit(X, y, loss=loss, optimizer=opt, batch_size=bs, epochs=1, shuffle=False,
                      verbose=0, comm=comm)

        def fit_single():
            model.fit(X, y, loss=loss, optimizer=opt, batch_size=bs, epochs=1, shuffle=False,
                      verbose=0)

        def blocking():
            for k in range(steps):
                model._grad_step(X[k * bs:(k + 1) * bs], y[k * bs:(k + 1) * bs], loss, opt,
                                 total, comm.rank * bs)
                comm.comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
                model._apply_step(opt, bs)

        def overlap():
            for k in range(steps):
                reqs = []

                def ready(off, n):
                    reqs.append(comm.comm.Iallreduce(MPI.IN_PLACE, g[off:off + n],
                                                     op=MPI.SUM))

                model._grad_step(X[k * bs:(k + 1) * bs], y[k * bs:(k + 1) * bs], loss, opt,
                                 total, comm.rank * bs, ready=ready)
                MPI.Request.Waitall(reqs)
                model._apply_step(opt, bs)

        def allreduce():
            for _ in range(steps):
                comm.comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)

        modes = {"fit": fit, "blocking": blocking, "overlap": overlap, "allreduce": allreduce}
        if comm.size == 1:
            modes["single"] = fit_single
        times = {m: [] for m in modes}
        for m in modes.values():   # warm-up
            m()
        for _ in range(args.repeats):
            for m, fn in modes.items():
                comm.barrier()
                t0 = time.perf_counter()
                fn()
                comm.barrier()
                times[m].append(time.perf_counter() - t0)
        out[name] = {"params": int(g.size), "bytes": int(g.nbytes), "batch_per_rank": bs,
                     "global_batch": global_batch,
                     **{m: steps / statistics.median(t) for m, t in times.items()}}
    if comm.is_root:
        print("RESULT " + json.dumps(out), flush=True)


def _launch(p, args):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [mpiexec, "--map-by", ":OVERSUBSCRIBE", "-n", str(p), sys.executable,
           os.path.abspath(__file__), "--steps", str(args.steps), "--repeats",
           str(args.repeats)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1200)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"mpiexec -n {p} failed:\n{r.stdout}\n{r.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if os.environ.get("NNLAYERS_DIST_BENCH") == "worker":
        return _worker(args)
    ranks = [int(p) for p in args.ranks.split(",")]
    res = {p: _launch(p, args) for p in ranks}
    print(f"cores: {os.cpu_count()} (shared with other work); 1 BLAS thread per rank; "
          f"float32; {args.steps} steps x {args.repeats} repeats, median")
    hdr = (f"{'net':7} {'p':>2} {'rows/rank':>9} {'fit st/s':>9} {'samples/s':>10} "
           f"{'scaling':>8} {'blocking':>9} {'overlap':>9} {'ovl/blk':>8} "
           f"{'allreduce ms':>12} {'grad MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for name in NETS:
        base = res[ranks[0]][name]["fit"] * res[ranks[0]][name]["global_batch"]
        for p in ranks:
            r = res[p][name]
            sps = r["fit"] * r["global_batch"]
            print(f"{name:7} {p:>2} {r['batch_per_rank']:>9} {r['fit']:>9.1f} {sps:>10.0f} "
                  f"{sps / base:>8.2f} {r['blocking']:>9.1f} {r['overlap']:>9.1f} "
                  f"{r['overlap'] / r['blocking']:>8.2f} {1e3 / r['allreduce']:>12.3f} "
                  f"{r['bytes'] / 1e6:>8.2f}")
        if 1 in res:
            r = res[1][name]
            print(f"{name:7}  single-process fit (no comm): {r['single']:.1f} steps/s; "
                  f"fit(comm) at p=1 is {r['fit'] / r['single']:.2f}x of it")
    if 1 in res:
        print_model(res[1])


def predicted_efficiency(t_c, t_o, nbytes, p, gbps, alpha=ALPHA):
    """The cost model of docs/distributed.md: E(p) = t_c / (p t(p)) with
    t(p) = t_c / p + 2 (p-1)/p S / bw + 2 (p-1) alpha + t_o."""
    t_ar = 2 * (p - 1) / p * nbytes / (gbps * 1e9 / 8) + 2 * (p - 1) * alpha
    return t_c / (p * (t_c / p + t_ar + t_o))


def print_model(r1):
    """Predicted scaling efficiency on 8 and 64 machines, from t_c and t_o
    measured here at p=1."""
    print(f"\ncost model (docs/distributed.md), alpha = {ALPHA * 1e6:g} us per message, "
          f"one rank per machine; t_c, t_o measured above at p=1")
    print(f"{'net':7} {'t_c ms':>7} {'t_o ms':>7} {'grad MB':>8} "
          + " ".join(f"{f'p={p} {g}Gb/s':>13}" for p in (8, 64) for g in (10, 100)))
    for name, r in r1.items():
        t_c = 1 / r["single"]
        t_o = max(1 / r["fit"] - 1 / r["single"], 0.0)
        cells = " ".join(f"{predicted_efficiency(t_c, t_o, r['bytes'], p, g):>13.2f}"
                         for p in (8, 64) for g in (10, 100))
        print(f"{name:7} {t_c * 1e3:>7.2f} {t_o * 1e3:>7.3f} {r['bytes'] / 1e6:>8.2f} {cells}")


if __name__ == "__main__":
    main()
