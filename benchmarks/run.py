#!/usr/bin/env python
"""nnlayers benchmarks: training steps, fit, predict and sgemm, side by side with
a textbook NumPy MLP and (if installed) PyTorch CPU and JAX (``jax.jit`` of
the whole step, and of predict); a residual graph against the chain of its
size; Adam on the medium case against torch.optim.Adam and a NumPy Adam,
with nnlayers' Adam/SGD step ratio.

    python benchmarks/run.py [--quick] [--json PATH] [--png PATH] [--repeats K]
                             [--fit-repeats K]
                             [--threads N] [--peers-only] [--no-torch] [--no-jax]

Prints a table, writes JSON (default benchmarks/results.json) and a PNG bar plot
(default benchmarks/results.png; skipped with a note if matplotlib is missing).
All float32. Each number is the median over repeats of a timed loop (after a
warm-up) inside this one process. This is a report, not a test: it exits 0
whether or not the targets are met; it exits 1 if a case raised an error and 2
if nnlayers cannot be imported (unless --peers-only).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

np = None  # imported in main() after the thread environment is set

LR = 0.01
TRAIN_CASES = [
    # name, layer sizes, batch, skipped under --quick
    ("small", (64, 32, 10), 32, False),
    ("mnist-128", (784, 128, 10), 64, False),
    ("medium", (784, 256, 256, 10), 128, False),
    ("large", (784, 1024, 1024, 10), 256, False),
    ("xl", (2048, 4096, 4096, 1000), 512, True),
]
PREDICT_SIZES = (784, 256, 10)
PREDICT_BATCHES = (1, 1024)
FIT_SIZES = (784, 256, 10)
FIT_BATCH = 64
FRAMEWORKS = ("nnlayers", "numpy", "torch", "jax")
PEERS = ("numpy", "torch", "jax")
# every training-step and predict case must beat the best peer by this much
BEST_PEER_MARGIN = 1.2
ADAM_SIZES, ADAM_BATCH, ADAM_LR = (784, 256, 256, 10), 128, 1e-3

FLOP_NOTE = (
    "FLOPs/step (training) = sum over Linear layers of 6*N*in*out (the issue's count: forward, "
    "input gradient, weight gradient); predict = sum of 2*N*in*out. Every framework SKIPS "
    "the first layer's input gradient (2*N*in0*out0 of those FLOPs are not done): GFLOP/s and "
    "%sgemm use the 6*N*in*out count, %done counts only the FLOPs actually done. Bias, "
    "activation, loss and SGD-update flops are not counted. The same count for every framework."
)


# --------------------------------------------------------------------------- helpers

def train_flops(sizes, n):
    """6*N*in*out per Linear layer (the issue's FLOP count)."""
    return sum(6 * n * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def train_flops_done(sizes, n):
    """The FLOPs a training step does: the first layer's input gradient
    (2*N*in0*out0) is skipped by nnlayers, the NumPy reference and torch."""
    return train_flops(sizes, n) - 2 * n * sizes[0] * sizes[1]


def predict_flops(sizes, n):
    return sum(2 * n * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def diffs_to_numpy(results):
    """(framework, relative loss difference, largest parameter difference)
    of each cross-check result against NumPy's; results maps a framework
    to (loss, (Ws, bs))."""
    base_loss, (bW, bb) = results["numpy"]
    for fw, (lossv, (Ws, bs)) in results.items():
        if fw == "numpy":
            continue
        dloss = abs(lossv - base_loss) / max(abs(base_loss), 1e-12)
        dpar = max(float(np.max(np.abs(p - q))) for p, q in zip(Ws + bs, bW + bb))
        yield fw, dloss, dpar


def arch(sizes):
    return "-".join(str(s) for s in sizes)


def cpu_model():
    """The CPU's name, with its family and model numbers where /proc/cpuinfo
    has them (a VM may report only a vendor's family name)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if not key.strip():
                    break   # the first CPU's block is enough
                fields.setdefault(key.strip(), val.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "cpu model", "Hardware"):
        if key in fields:
            if "cpu family" in fields and "model" in fields:
                return f"{fields[key]} (family {fields['cpu family']}, model {fields['model']})"
            return fields[key]
    return platform.processor() or platform.machine()


def import_nnlayers():
    """Import nnlayers (installed, else from the repo root). Returns (module, error)."""
    errors = []
    for extra in (None, REPO):
        added = False
        if extra is not None and extra not in sys.path:
            sys.path.insert(0, extra)
            added = True
        try:
            import nnlayers as nl
            import nnlayers._core  # noqa: F401  (the compiled extension)
            for name in ("Sequential", "Linear", "ReLU", "SoftmaxCrossEntropy", "SGD",
                         "get_num_threads"):
                if not hasattr(nl, name):
                    raise ImportError(f"nnlayers has no attribute {name!r} "
                                      f"(loaded from {getattr(nl, '__file__', None) or list(nl.__path__)})")
            return nl, None
        except Exception as exc:
            where = "installed" if extra is None else f"from {extra}"
            errors.append(f"  {where}: {type(exc).__name__}: {exc}")
            for mod in [m for m in sys.modules if m == "nnlayers" or m.startswith("nnlayers.")]:
                del sys.modules[mod]
            if added:
                sys.path.remove(extra)
    return None, "\n".join(errors)


def version_of(mod, dist):
    v = getattr(mod, "__version__", None)
    if v:
        return str(v)
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        return "unknown"


def numpy_blas_info():
    info = {}
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        info["name"] = blas.get("name")
        info["version"] = blas.get("version")
    except Exception:
        pass
    try:
        import threadpoolctl
        pools = [p for p in threadpoolctl.threadpool_info()
                 if p.get("user_api") == "blas" and "numpy" in p.get("filepath", "")]
        if pools:
            info["threads"] = pools[0].get("num_threads")
            info["architecture"] = pools[0].get("architecture")
    except Exception:
        pass
    return info


def blas_kernels():
    """The kernel set OpenBLAS chose in each library that loaded it, by
    threadpoolctl: {"nnlayers": "SkylakeX", "numpy": "SkylakeX"}. The
    environment's OPENBLAS_CORETYPE overrides OpenBLAS's own choice."""
    out = {}
    try:
        import threadpoolctl
        for p in threadpoolctl.threadpool_info():
            if p.get("internal_api") != "openblas":
                continue
            path = p.get("filepath", "")
            who = ("nnlayers" if "scipy_openblas32" in path
                   else "numpy" if "numpy" in path else os.path.basename(path))
            out[who] = p.get("architecture")
    except Exception:
        pass
    return out


def clean_json(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if np is not None and isinstance(obj, np.generic):
        return clean_json(obj.item())
    return obj


# --------------------------------------------------------------------------- runner

class Runner:
    def __init__(self, args, nl, torch, jax=None):
        self.args = args
        self.nl = nl
        self.torch = torch
        self.jax = jax
        self.rows = []
        self.errors = []
        self.checks = []
        self.sgemm = {}
        self.sgemm_fn = None
        self.fit_ratio = None
        self.fit_ratio_repeats = None
        self.repeats = args.repeats
        self.min_time = args.min_time

    # ---- bookkeeping
    def wanted(self, case):
        return not self.args.cases or case in self.args.cases

    def frameworks(self):
        fws = []
        if self.nl is not None:
            fws.append("nnlayers")
        fws.append("numpy")
        if self.torch is not None:
            fws.append("torch")
        if self.jax is not None:
            fws.append("jax")
        return fws

    def sgemm_ref(self):
        return self.sgemm.get("nnlayers") or self.sgemm.get("numpy")

    def add_row(self, case, kind, framework, sizes, batch, timing=None, flops=None,
                samples=None, error=None, flops_done=None, **extra):
        flops_done = flops if flops_done is None else flops_done
        row = {"case": case, "kind": kind, "framework": framework,
               "arch": arch(sizes) if sizes else None, "batch": batch,
               "ms": None, "samples_per_s": None, "gflops": None,
               "pct_sgemm": None, "pct_sgemm_done": None, "ratio": None,
               "flops_per_step": flops, "flops_done_per_step": flops_done, "error": error}
        if timing is not None:
            t = timing.median
            row["ms"] = t * 1e3
            if samples:
                row["samples_per_s"] = samples / t
            if flops:
                row["gflops"] = flops / t / 1e9
                row["gflops_done"] = flops_done / t / 1e9
                ref = self.sgemm_ref()
                if ref:
                    row["pct_sgemm"] = 100.0 * row["gflops"] / ref
                    row["pct_sgemm_done"] = 100.0 * row["gflops_done"] / ref
            row["ms_min"] = min(timing.per_call) * 1e3
            row["ms_max"] = max(timing.per_call) * 1e3
            row.update(timing.as_dict())
        row.update(extra)
        self.rows.append(row)
        return row

    def record_error(self, case, kind, framework, sizes, batch, exc):
        msg = f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{case}/{framework}: {msg}")
        print(f"  ERROR in {case} [{framework}]: {msg}", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return self.add_row(case, kind, framework, sizes, batch, error=msg)

    def run_group(self, case, kind, sizes, batch, flops, samples, builders, contexts=None,
                  local_sgemm=False, flops_done=None):
        """builders: {framework: () -> no-arg callable}. Times them side by side.

        local_sgemm: also time nnlayers' sgemm (n^3) in the same alternating
        repeats, and give this group's rows their % of *that* rate, as the
        median over repeats of (row's rate / sgemm rate) within the same
        repeat: on a shared VM the sgemm rate drifts within seconds, so a
        rate measured minutes (or repeats) earlier is not a fair yardstick."""
        fns = {}
        for fw, build in builders.items():
            try:
                fns[fw] = build()
            except Exception as exc:
                self.record_error(case, kind, fw, sizes, batch, exc)
        if local_sgemm and self.sgemm_fn is not None:
            # right after nnlayers in each round (bench_group runs them in
            # this order), so each pair is as close in time as it can be
            order = list(fns)
            at = order.index("nnlayers") + 1 if "nnlayers" in order else len(order)
            order.insert(at, "_sgemm")
            fns["_sgemm"] = self.sgemm_fn
            fns = {k: fns[k] for k in order}
        self.progress(f"{case} {arch(sizes) if sizes else ''} @ {batch}: {', '.join(fns)}")
        from _timing import bench_group
        res = bench_group(fns, self.repeats, self.min_time, contexts=contexts,
                          settle=self.args.settle)
        local, local_t = None, None
        t = res.pop("_sgemm", None)
        if t is not None and not isinstance(t, BaseException):
            n = self.args.sgemm_n
            local = 2 * n ** 3 / t.median / 1e9
            local_t = t
        rows = {}
        for fw, t in res.items():
            if isinstance(t, BaseException):
                rows[fw] = self.record_error(case, kind, fw, sizes, batch, t)
            else:
                rows[fw] = self.add_row(case, kind, fw, sizes, batch, t, flops, samples,
                                        flops_done=flops_done)
                if local and rows[fw]["gflops"]:
                    # paired: this repeat's step time against this repeat's sgemm
                    sg = 2 * self.args.sgemm_n ** 3
                    fd = flops if flops_done is None else flops_done
                    pairs = [(flops / ts) / (sg / tg) for ts, tg in zip(t.per_call, local_t.per_call)]
                    pairs_done = [(fd / ts) / (sg / tg) for ts, tg in zip(t.per_call, local_t.per_call)]
                    rows[fw]["sgemm_local_gflops"] = local
                    rows[fw]["sgemm_local_repeats_gflops"] = [sg / tg / 1e9 for tg in local_t.per_call]
                    rows[fw]["pct_sgemm"] = 100.0 * statistics.median(pairs)
                    rows[fw]["pct_sgemm_done"] = 100.0 * statistics.median(pairs_done)
                    rows[fw]["pct_sgemm_repeats"] = [100.0 * v for v in pairs]
        return rows, res

    def progress(self, msg):
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    # ---- model builders
    def nl_model(self, sizes, seed=0):
        from _nl_models import mlp
        return mlp(self.nl, sizes, seed)

    def nl_params(self, model):
        """Ws (in, out) and bs of the Linear layers, copied."""
        Ws, bs = [], []
        for layer in model.layers:
            if getattr(layer, "kind", None) == "linear":
                Ws.append(np.array(layer.params["W"]))
                bs.append(np.array(layer.params["b"]))
        return Ws, bs

    @staticmethod
    def data(sizes, n, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], size=n, dtype=np.int64)
        return x, y

    # ---- sgemm
    def run_sgemm(self):
        n = self.args.sgemm_n
        rng = np.random.default_rng(1)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out_nl = np.empty((n, n), dtype=np.float32)
        out_np = np.empty((n, n), dtype=np.float32)
        builders = {}
        if self.nl is not None:
            core = self.nl._core
            builders["nnlayers"] = lambda: (lambda: core.matmul(a, b, out_nl))
            self.sgemm_fn = lambda: core.matmul(a, b, out_nl)
        builders["numpy"] = lambda: (lambda: np.matmul(a, b, out=out_np))
        _, res = self.run_group(f"sgemm-{n}", "sgemm", None, n, 2 * n ** 3, None, builders)
        for fw, t in res.items():
            if not isinstance(t, BaseException):
                self.sgemm[fw] = 2 * n ** 3 / t.median / 1e9
        for row in self.rows:
            if row["kind"] == "sgemm" and row["gflops"] and self.sgemm_ref():
                row["pct_sgemm"] = 100.0 * row["gflops"] / self.sgemm_ref()
        if "nnlayers" in self.sgemm:
            try:
                self.check_sgemm_result(a, b)
            except Exception as exc:
                self.record_error("sgemm-check", "check", "nnlayers", None, n, exc)

    def check_sgemm_result(self, a, b):
        m = min(256, a.shape[0])
        ref = a[:m, :m].astype(np.float64) @ b[:m, :m].astype(np.float64)
        got = np.empty((m, m), dtype=np.float32)
        self.nl._core.matmul(np.ascontiguousarray(a[:m, :m]), np.ascontiguousarray(b[:m, :m]), got)
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        self.checks.append({"name": "nnlayers._core.matmul vs float64 reference",
                            "max_rel_err": err, "ok": err < 1e-4})

    # ---- cross-check: the frameworks compute the same training step
    def crosscheck(self):
        sizes, n = (64, 32, 10), 32
        x, y = self.data(sizes, n, seed=3)
        from _numpy_mlp import NumpyMLP
        ref = NumpyMLP(sizes, seed=5)
        results = {}
        try:
            if self.nl is not None:
                model = self.nl_model(sizes, seed=5)
                Ws, bs = self.nl_params(model)
                ref.set_params(Ws, bs)
                lossv = float(model.train_step(x, y, self.nl.SoftmaxCrossEntropy(),
                                               self.nl.SGD(model, lr=LR)))
                results["nnlayers"] = (lossv, self.nl_params(model))
            Ws0 = [w.copy() for w in ref.W]
            bs0 = [b.copy() for b in ref.b]
            if self.torch is not None:
                from _torch_mlp import TorchMLP
                tm = TorchMLP(self.torch, sizes, lr=LR)
                tm.set_params(Ws0, bs0)
                lossv = float(tm.step_fn(x, y)().detach())
                results["torch"] = (lossv, tm.get_params())
            if self.jax is not None:
                from _jax_mlp import JaxMLP
                jm = JaxMLP(self.jax, sizes, lr=LR)
                jm.set_params(Ws0, bs0)
                lossv = float(jm.step_fn(x, y)())
                results["jax"] = (lossv, jm.get_params())
            lossv = ref.train_step(x, y, LR)
            results["numpy"] = (lossv, ([w.copy() for w in ref.W], [b.copy() for b in ref.b]))
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            self.errors.append(f"crosscheck: {msg}")
            print(f"  ERROR in cross-check: {msg}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return
        for fw, dloss, dpar in diffs_to_numpy(results):
            ok = dloss < 1e-4 and dpar < 1e-5
            self.checks.append({"name": f"one training step {fw} vs numpy ({arch(sizes)} @ {n})",
                                "loss_rel_diff": dloss, "param_max_abs_diff": dpar, "ok": ok})

    # ---- training steps
    def run_train(self):
        from _numpy_mlp import NumpyMLP
        for name, sizes, n, big in TRAIN_CASES:
            if big and self.args.quick or not self.wanted(name):
                continue
            x, y = self.data(sizes, n)
            builders = {}
            if self.nl is not None:
                def build_nl(sizes=sizes, x=x, y=y):
                    model = self.nl_model(sizes)
                    loss = self.nl.SoftmaxCrossEntropy()
                    opt = self.nl.SGD(model, lr=LR)
                    return lambda: model.train_step(x, y, loss, opt)
                builders["nnlayers"] = build_nl

            def build_np(sizes=sizes, x=x, y=y):
                mlp = NumpyMLP(sizes)
                return lambda: mlp.train_step(x, y, LR)
            builders["numpy"] = build_np
            if self.torch is not None:
                def build_torch(sizes=sizes, x=x, y=y):
                    from _torch_mlp import TorchMLP
                    return TorchMLP(self.torch, sizes, lr=LR).step_fn(x, y)
                builders["torch"] = build_torch
            if self.jax is not None:
                def build_jax(sizes=sizes, x=x, y=y):
                    from _jax_mlp import JaxMLP
                    return JaxMLP(self.jax, sizes, lr=LR).step_fn(x, y)
                builders["jax"] = build_jax
            self.run_group(name, "train", sizes, n, train_flops(sizes, n), n, builders,
                           local_sgemm=name in ("medium", "large", "xl"),
                           flops_done=train_flops_done(sizes, n))

    # ---- a graph: the medium network with a skip around its middle layer
    def residual_step(self, sizes, x, y, skip=True):
        """A training step of the residual graph (skip=True) or of the
        chain of its size as a graph (_nl_models.residual)."""
        from _nl_models import residual
        nl = self.nl
        model = residual(nl, sizes, skip)
        loss, opt = nl.SoftmaxCrossEntropy(), nl.SGD(model, lr=LR)
        return lambda: model.train_step(x, y, loss, opt)

    def run_residual(self):
        if self.nl is None or not hasattr(self.nl, "Model") or not self.wanted("residual"):
            return
        sizes, n = (784, 256, 256, 10), 128
        x, y = self.data(sizes, n)
        builders = {"nnlayers": lambda: self.residual_step(sizes, x, y, True),
                    "nnlayers (chain)": lambda: self.residual_step(sizes, x, y, False)}
        self.run_group("residual", "train", sizes, n, train_flops(sizes, n), n, builders,
                       flops_done=train_flops_done(sizes, n))

    # ---- Adam on the medium case
    def run_adam(self):
        """One Adam step of the medium network: nl.Adam, torch.optim.Adam
        and the NumPy Adam side by side, with nnlayers' SGD step in the
        same rounds for the Adam/SGD ratio; first a check that one Adam
        step of each matches the NumPy one."""
        if not self.wanted("adam"):
            return
        from _numpy_mlp import NumpyAdamMLP
        sizes, n = ADAM_SIZES, ADAM_BATCH
        x, y = self.data(sizes, n)
        self.adam_crosscheck()
        builders = {}
        if self.nl is not None:
            def build_nl(opt_cls):
                model = self.nl_model(sizes)
                loss = self.nl.SoftmaxCrossEntropy()
                opt = opt_cls(model, lr=ADAM_LR)
                return lambda: model.train_step(x, y, loss, opt)
            builders["nnlayers"] = lambda: build_nl(self.nl.Adam)
            builders["nnlayers (SGD)"] = lambda: build_nl(self.nl.SGD)

        def build_np():
            mlp = NumpyAdamMLP(sizes, lr=ADAM_LR)
            return lambda: mlp.train_step(x, y)
        builders["numpy"] = build_np
        if self.torch is not None:
            def build_torch():
                from _torch_mlp import TorchMLP
                return TorchMLP(self.torch, sizes, lr=ADAM_LR, optimizer="adam").step_fn(x, y)
            builders["torch"] = build_torch
        self.run_group("medium-adam", "train", sizes, n, train_flops(sizes, n), n, builders,
                       flops_done=train_flops_done(sizes, n))

    def adam_crosscheck(self):
        from _numpy_mlp import NumpyAdamMLP
        sizes, n = (64, 32, 10), 32
        x, y = self.data(sizes, n, seed=4)
        ref = NumpyAdamMLP(sizes, seed=6, lr=0.01)
        W0, b0 = [w.copy() for w in ref.W], [b.copy() for b in ref.b]
        results = {}
        try:
            if self.nl is not None:
                model = self.nl_model(sizes, seed=6)
                for layer, W, b in zip([m for m in model.layers
                                        if getattr(m, "kind", None) == "linear"], W0, b0):
                    layer.params["W"], layer.params["b"] = W, b
                opt = self.nl.Adam(model, lr=0.01)
                for _ in range(3):
                    lossv = float(model.train_step(x, y, self.nl.SoftmaxCrossEntropy(), opt))
                results["nnlayers"] = (lossv, self.nl_params(model))
            if self.torch is not None:
                from _torch_mlp import TorchMLP
                tm = TorchMLP(self.torch, sizes, lr=0.01, optimizer="adam")
                tm.set_params(W0, b0)
                step = tm.step_fn(x, y)
                for _ in range(3):
                    lossv = float(step().detach())
                results["torch"] = (lossv, tm.get_params())
            for _ in range(3):
                lossv = ref.train_step(x, y)
            results["numpy"] = (lossv, (ref.W, ref.b))
        except Exception as exc:
            self.errors.append(f"adam crosscheck: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            return
        for fw, dloss, dpar in diffs_to_numpy(results):
            self.checks.append({"name": f"three Adam steps {fw} vs numpy ({arch(sizes)} @ {n})",
                                "loss_rel_diff": dloss, "param_max_abs_diff": dpar,
                                "ok": dloss < 1e-4 and dpar < 1e-4})

    # ---- predict
    def run_predict(self):
        from _numpy_mlp import NumpyMLP
        sizes = PREDICT_SIZES
        for n in PREDICT_BATCHES:
            if not self.wanted(f"predict-b{n}"):
                continue
            x, _ = self.data(sizes, n)
            builders, contexts = {}, {}
            if self.nl is not None:
                def build_nl(x=x):
                    model = self.nl_model(sizes)
                    return lambda: model.predict(x)
                builders["nnlayers"] = build_nl

            def build_np(x=x):
                mlp = NumpyMLP(sizes)
                return lambda: mlp.predict(x)
            builders["numpy"] = build_np
            if self.torch is not None:
                def build_torch(x=x):
                    from _torch_mlp import TorchMLP
                    tm = TorchMLP(self.torch, sizes)
                    tm.model.eval()
                    return tm.predict_fn(x)
                builders["torch"] = build_torch
                contexts["torch"] = self.torch.inference_mode
            if self.jax is not None:
                def build_jax(x=x):
                    from _jax_mlp import JaxMLP
                    return JaxMLP(self.jax, sizes).predict_fn(x)
                builders["jax"] = build_jax
            self.run_group(f"predict-b{n}", "predict", sizes, n, predict_flops(sizes, n), n,
                           builders, contexts)

    # ---- fit
    def run_fit(self):
        if self.nl is None or not self.wanted("fit"):
            return
        from _timing import bench_interleaved
        sizes, bs = FIT_SIZES, FIT_BATCH
        n = self.args.fit_samples
        name = "fit"
        self.progress(f"fit {arch(sizes)} on {n} samples, batch {bs}")
        X, y = self.data(sizes, n, seed=7)
        batches = [(X[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]  # contiguous views
        nb = len(batches)
        flops = sum(train_flops(sizes, xb.shape[0]) for xb, _ in batches)
        flops_done = sum(train_flops_done(sizes, xb.shape[0]) for xb, _ in batches)

        def one():
            nl = self.nl
            model = self.nl_model(sizes)
            loss = nl.SoftmaxCrossEntropy()
            opt = nl.SGD(model, lr=LR)

            def run_fit():
                model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=bs,
                          shuffle=True, seed=0, verbose=0)

            def run_steps():
                for xb, yb in batches:
                    model.train_step(xb, yb, loss, opt)

            tf, ts = bench_interleaved([run_fit, run_steps], self.args.fit_repeats,
                                       self.args.settle)
            # each fit epoch against the train_step epoch right after it
            pairs = [a / b for a, b in zip(tf.per_call, ts.per_call)]
            self.fit_ratio = statistics.median(pairs)
            self.fit_ratio_repeats = pairs

            # rows report per-batch ("step") time; samples/s over the epoch
            class PerStep:
                def __init__(self, t):
                    self.per_call = [v / nb for v in t.per_call]
                    self.median = t.median / nb
                    self.epoch = t

                def as_dict(self):
                    return {"epoch_s": [v for v in self.epoch.per_call], "iters_per_repeat": 1}

            self.add_row(name, "fit", "nnlayers", sizes, bs, PerStep(ts), flops / nb, n / nb,
                         flops_done=flops_done / nb, method="train_step loop", epoch_samples=n,
                         batches=nb)
            return self.add_row(name, "fit", "nnlayers", sizes, bs, PerStep(tf), flops / nb,
                                n / nb, flops_done=flops_done / nb, method="fit",
                                epoch_samples=n, batches=nb, fit_over_steps=self.fit_ratio,
                                fit_over_steps_repeats=pairs)

        try:
            one()
        except Exception as exc:
            self.record_error(name, "fit", "nnlayers", sizes, bs, exc)

    # ---- ratios and targets
    def fill_ratios(self):
        """ratio = median over repeats of (row's time / nnlayers' time in the
        same repeat): the frameworks of a case run back to back in each
        repeat, so each pair saw the same state of this shared machine,
        whose speed drifts by tens of percent within seconds."""
        base = {}
        for r in self.rows:
            if r["framework"] == "nnlayers" and r["ms"] and r["kind"] in ("train", "predict"):
                base[r["case"]] = r
        for r in self.rows:
            if r["kind"] in ("train", "predict") and r["ms"] and r["case"] in base:
                b = base[r["case"]]
                pairs = [a / c for a, c in zip(r["repeats_ms"], b["repeats_ms"])]
                r["ratio"] = statistics.median(pairs)
                r["ratio_repeats"] = pairs
                r["ratio_of_medians"] = r["ms"] / b["ms"]

    def find(self, case, fw):
        for r in self.rows:
            if r["case"] == case and r["framework"] == fw and r["kind"] != "fit":
                return r
        return None

    def targets(self):
        out = []

        def add(name, value, ok, detail):
            status = "N/A" if value is None else ("PASS" if ok else "MISS")
            out.append({"target": name, "status": status, "value": value, "detail": detail})

        def ratio(case, fw):
            r = self.find(case, fw)
            return r.get("ratio") if r else None

        for fw, need in (("numpy", 10.0), ("torch", 20.0)):
            v = ratio("small", fw)
            r = self.find("small", fw)
            add(f"small step >= {need:g}x faster than {fw}", v, v is not None and v >= need,
                f"{fw} / nnlayers time = {v:.2f}x, median over repeats of the paired ratio "
                f"(ratio of the medians {r['ratio_of_medians']:.2f}x) (need >= {need:g}x)"
                if v is not None else "not measured")
        # the share of the sgemm rate: by the 6*N*in*out count (small,
        # medium), or counting only the FLOPs done (large)
        for case, need, key, count in (("small", 40.0, "pct_sgemm", "6*N*in*out"),
                                       ("medium", 90.0, "pct_sgemm", "6*N*in*out"),
                                       ("large", 85.0, "pct_sgemm_done", "FLOPs done")):
            r = self.find(case, "nnlayers")
            v = r[key] if r and self.sgemm.get("nnlayers") else None
            ref = (r or {}).get("sgemm_local_gflops") or self.sgemm.get("nnlayers")
            where = "timed alongside" if (r or {}).get("sgemm_local_gflops") else "at start"
            add(f"{case} step >= {need:g}% of sgemm rate ({count})", v,
                v is not None and v >= need,
                f"{r['gflops']:.1f} GFLOP/s (6*N*in*out) = {r['pct_sgemm']:.1f}% of the sgemm "
                f"rate ({ref:.1f} GFLOP/s, {where}), {r['pct_sgemm_done']:.1f}% counting only "
                f"the FLOPs done (need >= {need:g}% by the {count})"
                if v is not None else "not measured")
        r = self.find("residual", "nnlayers (chain)")
        v = 1.0 / r["ratio"] if r and r.get("ratio") else None
        add("residual graph step <= 1.10 x the chain of its size", v, v is not None and v <= 1.10,
            f"residual / chain time = {v:.3f}, median over repeats of the paired ratio "
            f"(784-256-256-10 @ 128, a skip around the middle layer) (need <= 1.10)"
            if v is not None else "not measured")
        r = self.find("medium-adam", "nnlayers (SGD)")
        v = 1.0 / r["ratio"] if r and r.get("ratio") else None
        add("Adam step <= 1.10 x the SGD step (medium)", v, v is not None and v <= 1.10,
            f"nl.Adam / nl.SGD step time = {v:.3f}, median over repeats of the paired ratio "
            f"(784-256-256-10 @ 128) (need <= 1.10)" if v is not None else "not measured")
        v = self.fit_ratio
        add("fit time <= 1.03 x sum of train_step times", v, v is not None and v <= 1.03,
            f"fit / sum(train_step) = {v:.3f}, median over epoch pairs "
            f"({', '.join(f'{x:.3f}' for x in self.fit_ratio_repeats)}) (need <= 1.03)"
            if v is not None else "not measured")
        cases = []
        for r in self.rows:
            if r["kind"] in ("train", "predict") and r["case"] not in cases:
                cases.append(r["case"])
        for case in cases:
            if case == "residual":
                continue
            rs = {fw: ratio(case, fw) for fw in PEERS}
            parts = []
            for fw in PEERS:
                if rs[fw] is None:
                    parts.append(f"{fw} n/a")
                else:
                    parts.append(f"{fw} {rs[fw]:.2f}x")
            vals = [v for v in rs.values() if v is not None]
            v = min(vals) if vals else None
            add(f"{case}: >= {BEST_PEER_MARGIN:g}x faster than the best of numpy, torch and jax",
                v, v is not None and v >= BEST_PEER_MARGIN,
                "time ratio peer/nnlayers: " + ", ".join(parts))
        return out


# --------------------------------------------------------------------------- output

def fmt(v, spec, width):
    if v is None:
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def print_table(rows, machine):
    print()
    print("nnlayers benchmarks (float32, median of repeats, in-process perf_counter)")
    print(f"cpu: {machine['cpu_model']}  nproc={machine['nproc']}  threads={machine['threads']}")
    print(f"numpy {machine['numpy_version']}  torch {machine['torch_version'] or 'not available'}"
          f"  jax {machine.get('jax_version') or 'not available'}"
          f"  nnlayers {machine['nnlayers_version'] or 'not available'}")
    kernels = machine.get("blas_kernels") or {}
    if kernels:
        print("OpenBLAS kernels: " + ", ".join(f"{k} {v}" for k, v in kernels.items()))
    if machine.get("openblas_coretype_env"):
        print(f"note: OPENBLAS_CORETYPE={machine['openblas_coretype_env']} is set in the "
              f"environment and picks those kernels; unset it (and OPENBLAS_L2_SIZE) to "
              f"let OpenBLAS choose for this CPU")
    ref = machine.get("sgemm_reference")
    if ref:
        print(f"% sgemm is relative to the {ref} sgemm rate "
              f"({machine['sgemm_n']}^3: {machine['sgemm_ref_gflops']:.1f} GFLOP/s at start; "
              f"medium/large/xl rows: median over repeats of the row's rate / the sgemm rate "
              f"timed in the same repeat)")
    print("ratio = time / nnlayers time for the same case (>1: nnlayers is faster), the median over "
          "repeats of the ratio within each repeat")
    print(FLOP_NOTE)
    print()
    head = (f"{'case':<14} {'arch @ batch':<26} {'framework':<26} {'ms/step':>10} "
            f"{'samples/s':>12} {'GFLOP/s':>9} {'%sgemm':>7} {'%done':>7} {'ratio':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        fw = r["framework"] + (f" ({r['method']})" if r.get("method") else "")
        ab = f"{r['arch']} @ {r['batch']}" if r["arch"] else f"n={r['batch']}"
        if r.get("error"):
            print(f"{r['case']:<14} {ab:<26} {fw:<26} ERROR: {r['error']}")
            continue
        print(f"{r['case']:<14} {ab:<26} {fw:<26} {fmt(r['ms'], '.4f', 10)} "
              f"{fmt(r['samples_per_s'], ',.0f', 12)} {fmt(r['gflops'], '.1f', 9)} "
              f"{fmt(r['pct_sgemm'], '.1f', 7)} {fmt(r.get('pct_sgemm_done'), '.1f', 7)} "
              f"{fmt(r['ratio'], '.2f', 7)}")


def print_targets(targets, fit_ratio, notes, checks):
    print()
    for c in checks:
        vals = ", ".join(f"{k}={v:.2e}" for k, v in c.items() if isinstance(v, float))
        print(f"check [{'ok' if c['ok'] else 'FAILED'}] {c['name']}: {vals}")
    if fit_ratio is not None:
        print(f"fit: one epoch via model.fit / sum of per-batch train_step = {fit_ratio:.3f}")
    for n in notes:
        print(f"note: {n}")
    print()
    print("targets:")
    for t in targets:
        print(f"  [{t['status']:<4}] {t['target']}: {t['detail']}")


def write_png(path, rows, machine):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"PNG plot skipped: matplotlib not importable ({type(exc).__name__}: {exc})"
    colors = {"nnlayers": "#1f77b4", "numpy": "#ff7f0e", "torch": "#2ca02c", "jax": "#d62728"}
    cases = []
    for r in rows:
        if r["kind"] in ("train", "predict") and r["case"] not in cases:
            cases.append(r["case"])
    fws = [fw for fw in FRAMEWORKS if any(r["framework"] == fw for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(1, len(fws))
    for ax, key, ylabel, log in ((axes[0], "samples_per_s", "samples / s (log)", True),
                                 (axes[1], "pct_sgemm", "% of sgemm rate", False)):
        for j, fw in enumerate(fws):
            xs, ys = [], []
            for i, case in enumerate(cases):
                r = next((r for r in rows if r["case"] == case and r["framework"] == fw
                          and r["kind"] in ("train", "predict")), None)
                if r and r.get(key):
                    xs.append(i + (j - (len(fws) - 1) / 2) * width)
                    ys.append(r[key])
            ax.bar(xs, ys, width, label=fw, color=colors.get(fw))
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[0].set_title("throughput (train steps and predict)")
    axes[1].set_title(f"GFLOP/s as % of {machine.get('sgemm_reference') or '?'} sgemm")
    fig.suptitle(f"nnlayers benchmarks - {machine['cpu_model']}, {machine['threads']} threads")
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny, fast run (< 30 s): short repeats, no xl case, 6000-sample fit, 1024^3 sgemm")
    p.add_argument("--json", default=os.path.join(HERE, "results.json"), metavar="PATH",
                   help="JSON output (default: benchmarks/results.json)")
    p.add_argument("--png", default=os.path.join(HERE, "results.png"), metavar="PATH",
                   help="PNG bar plot (default: benchmarks/results.png)")
    p.add_argument("--repeats", type=int, default=None, metavar="K",
                   help="timed repeats per measurement (default 9, --quick 3)")
    p.add_argument("--fit-repeats", type=int, default=None, metavar="K",
                   help="fit / train_step epoch pairs (default 15, --quick 3): one pair "
                        "is two ~0.5 s epochs, and this VM's speed moves by tens of "
                        "percent between them")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for nnlayers, numpy's BLAS and torch (default: nl.get_num_threads())")
    p.add_argument("--min-time", type=float, default=None, metavar="S",
                   help="minimum seconds per timed repeat (default 0.1, --quick 0.02)")
    p.add_argument("--settle", type=float, default=None, metavar="S",
                   help="when switching library, wait at most S seconds until the previous one's "
                        "spinning BLAS/OpenMP worker threads are idle (default 1.0)")
    p.add_argument("--peers-only", action="store_true",
                   help="benchmark only the NumPy and PyTorch peers (nnlayers not needed)")
    p.add_argument("--cases", default=None, metavar="LIST",
                   help="comma-separated subset of cases to run: sgemm, small, mnist-128, medium, "
                        "large, xl, residual, adam, predict-b1, predict-b1024, fit (sgemm "
                        "always runs)")
    p.add_argument("--no-torch", action="store_true", help="do not use PyTorch even if installed")
    p.add_argument("--no-jax", action="store_true", help="do not use JAX even if installed")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 9
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1
    if args.settle is None:
        args.settle = 1.0
    if args.fit_repeats is None:
        args.fit_repeats = 3 if args.quick else 15
    if args.repeats < 1 or args.fit_repeats < 1:
        p.error("--repeats and --fit-repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    known = {"sgemm", "fit", "residual", "adam"} | {c[0] for c in TRAIN_CASES} | {f"predict-b{b}" for b in PREDICT_BATCHES}
    if args.cases:
        args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
        bad = args.cases - known
        if bad:
            p.error(f"--cases: unknown case(s) {sorted(bad)}; known: {sorted(known)}")
    args.sgemm_n = 1024 if args.quick else 2048
    args.fit_samples = 6000 if args.quick else 60000
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        # Before numpy/torch load their BLAS/OpenMP runtimes.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    global np
    import numpy
    np = numpy

    notes = []
    nl = None
    if not args.peers_only:
        nl, err = import_nnlayers()
        if nl is None:
            print("error: cannot import nnlayers (with its compiled _core):\n" + err + "\n"
                  "Build/install the package first (e.g. `pip install -e .` in the repo), "
                  "or run with --peers-only to benchmark only NumPy/PyTorch.", file=sys.stderr)
            return 2
    else:
        notes.append("--peers-only: nnlayers not benchmarked; % sgemm uses numpy's sgemm rate")

    torch = None
    if args.no_torch:
        notes.append("torch disabled by --no-torch")
    else:
        from _torch_mlp import load_torch
        torch, why = load_torch()
        if torch is None:
            notes.append(f"torch not available ({why}); PyTorch rows skipped")

    # One thread count for everybody.
    if nl is not None:
        if args.threads is not None:
            nl.set_num_threads(args.threads)
        threads = int(nl.get_num_threads())
    elif args.threads is not None:
        threads = args.threads
    else:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    if torch is not None:
        torch.set_num_threads(threads)
    jax = None
    if args.no_jax:
        notes.append("jax disabled by --no-jax")
    else:
        from _jax_mlp import load_jax
        jax, why = load_jax(threads)
        if jax is None:
            notes.append(f"jax not available ({why}); JAX rows skipped")
        elif threads not in (1, os.cpu_count()):
            notes.append(f"jax: XLA's CPU thread pool is not limited to {threads} threads")
    blas_limit = None
    try:
        import threadpoolctl
        blas_limit = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    except Exception:
        if args.threads is None:
            notes.append("threadpoolctl not available: numpy's BLAS uses its default thread count")

    machine = {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "numpy_blas": numpy_blas_info(),
        "torch_version": version_of(torch, "torch") if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "jax_version": version_of(jax, "jax") if jax is not None else None,
        "nnlayers_version": version_of(nl, "nnlayers") if nl is not None else None,
        "nnlayers_path": getattr(nl, "__file__", None) if nl is not None else None,
        "nnlayers_threads": threads if nl is not None else None,
    }
    try:
        machine["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass

    machine["blas_kernels"] = blas_kernels()
    machine["openblas_coretype_env"] = os.environ.get("OPENBLAS_CORETYPE")

    runner = Runner(args, nl, torch, jax)
    t_start = datetime.datetime.now()
    runner.run_sgemm()
    machine.update({
        "sgemm_n": args.sgemm_n,
        "sgemm_gflops": runner.sgemm.get("nnlayers"),
        "numpy_sgemm_gflops": runner.sgemm.get("numpy"),
        "sgemm_reference": ("nnlayers" if "nnlayers" in runner.sgemm
                            else "numpy" if "numpy" in runner.sgemm else None),
        "sgemm_ref_gflops": runner.sgemm_ref(),
    })
    runner.crosscheck()
    runner.run_train()
    runner.run_residual()
    runner.run_adam()
    runner.run_predict()
    runner.run_fit()
    runner.fill_ratios()
    targets = runner.targets()
    if blas_limit is not None:
        blas_limit.restore_original_limits()
    elapsed = (datetime.datetime.now() - t_start).total_seconds()

    for c in runner.checks:
        if not c["ok"]:
            notes.append(f"CHECK FAILED: {c}")
    print_table(runner.rows, machine)
    print_targets(targets, runner.fit_ratio, notes, runner.checks)

    result = {
        "machine": machine,
        "settings": {"quick": args.quick, "repeats": args.repeats, "min_time_s": args.min_time,
                     "settle_s": args.settle,
                     "peers_only": args.peers_only, "lr": LR, "flop_count": FLOP_NOTE,
                     "fit_samples": args.fit_samples, "fit_batch": FIT_BATCH,
                     "started": t_start.isoformat(timespec="seconds"), "elapsed_s": elapsed},
        "rows": runner.rows,
        "fit_over_steps": runner.fit_ratio,
        "targets": targets,
        "checks": runner.checks,
        "errors": runner.errors,
        "notes": notes,
    }
    d = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(d, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(clean_json(result), f, indent=2)
    print(f"\nwrote {args.json}")
    if args.png:
        msg = write_png(args.png, runner.rows, machine)
        print(msg if msg else f"wrote {args.png}")
    print(f"total {elapsed:.1f} s")
    if runner.errors:
        print(f"\n{len(runner.errors)} case(s) raised errors:", file=sys.stderr)
        for e in runner.errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
