"""Normalisation and dropout in the medium network: nnlayers against the
same network in PyTorch (CPU), side by side in one run.

    python benchmarks/layers.py [--repeats 7] [--threads 2] [--min-time 0.3]

Networks (float32, SGD with momentum 0.9, softmax cross-entropy):
  plain     784-256-256-10: Linear-ReLU x2 - Linear
  bn+drop   Linear-BatchNorm-ReLU-Dropout(0.2) x2 - Linear(256, 10)
Cases: one training step at batch 128 (train mode: batch statistics,
masks) and predict at batch 1024 (eval mode: running statistics, no
masks; torch under inference_mode). Both libraries get the same thread
count (nl.set_num_threads, torch.set_num_threads). Before timing, the
torch copy is given nnlayers' weights and their eval outputs are
compared. Medians of interleaved repeats (benchmarks/_timing.bench_group)
and the ratio torch / nnlayers (> 1: nnlayers is faster).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import bench_group  # noqa: E402

import nnlayers as nl  # noqa: E402

SIZES = (784, 256, 256, 10)


def nl_model(norm):
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-2], SIZES[1:-1])):
        layers.append(nl.Linear(a, b, seed=i + 1))
        if norm:
            layers.append(nl.BatchNorm(b))
        layers.append(nl.ReLU())
        if norm:
            layers.append(nl.Dropout(0.2))
    layers.append(nl.Linear(SIZES[-2], SIZES[-1], seed=9))
    return nl.Sequential(*layers)


def torch_model(torch, model):
    """The same layers in torch, with model's weights (W transposed)."""
    mods = []
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, nl.Linear):
                m = torch.nn.Linear(layer.in_features, layer.out_features)
                m.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
                m.bias.copy_(torch.from_numpy(layer.params["b"].copy()))
            elif isinstance(layer, nl.BatchNorm):
                m = torch.nn.BatchNorm1d(layer.features, eps=layer.eps, momentum=layer.momentum)
                m.weight.copy_(torch.from_numpy(layer.params["gamma"].copy()))
                m.bias.copy_(torch.from_numpy(layer.params["beta"].copy()))
                m.running_mean.copy_(torch.from_numpy(layer.buffers["running_mean"].copy()))
                m.running_var.copy_(torch.from_numpy(layer.buffers["running_var"].copy()))
            elif isinstance(layer, nl.Dropout):
                m = torch.nn.Dropout(layer.p)
            else:
                m = torch.nn.ReLU()
            mods.append(m)
    return torch.nn.Sequential(*mods)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.3)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError as exc:
        sys.exit(f"this benchmark compares with PyTorch, which is not installed ({exc})")
    nl.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], 128)
    Xp = rng.standard_normal((1024, SIZES[0])).astype(np.float32)
    Xt, yt, Xpt = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Xp)
    loss = nl.SoftmaxCrossEntropy()

    steps, preds, contexts = {}, {}, {}
    for name, norm in (("plain", False), ("bn+drop", True)):
        m = nl_model(norm)
        opt = nl.SGD(m, lr=1e-3, momentum=0.9)
        m.train_step(X, y, loss, opt)                # running statistics not trivial
        tm = torch_model(torch, m)
        tm.eval()
        with torch.inference_mode():
            diff = np.abs(tm(Xpt).numpy() - m.predict(Xp)).max()
        if not diff < 1e-3:
            sys.exit(f"{name}: torch's eval output differs from nnlayers' by {diff:g}")
        tm.train()
        topt = torch.optim.SGD(tm.parameters(), lr=1e-3, momentum=0.9)

        def torch_step(tm=tm, topt=topt):
            topt.zero_grad(set_to_none=True)
            out = torch.nn.functional.cross_entropy(tm(Xt), yt)
            out.backward()
            topt.step()

        def torch_predict(tm=tm):
            tm.eval()
            out = tm(Xpt)
            tm.train()
            return out

        steps[(name, "nnlayers")] = lambda m=m, opt=opt: m.train_step(X, y, loss, opt)
        steps[(name, "torch")] = torch_step
        preds[(name, "nnlayers")] = lambda m=m: m.predict(Xp)
        preds[(name, "torch")] = torch_predict
        contexts[(name, "torch")] = torch.inference_mode
    t_step = bench_group(steps, repeats=args.repeats, min_time=args.min_time)
    t_pred = bench_group(preds, repeats=args.repeats, min_time=args.min_time, contexts=contexts)

    print(f"medium {'-'.join(map(str, SIZES))}, float32, {args.threads} threads "
          f"(torch {torch.__version__}), medians of {args.repeats} interleaved repeats")
    print(f"{'network':<8} {'case':<16} {'nnlayers (us)':>14} {'torch (us)':>11} "
          f"{'torch/nnlayers':>15}")
    for what, t in (("train step @128", t_step), ("predict @1024", t_pred)):
        for name in ("plain", "bn+drop"):
            a, b = t[(name, "nnlayers")], t[(name, "torch")]
            if isinstance(a, Exception) or isinstance(b, Exception):
                print(f"{name:<8} {what:<16} error: {a if isinstance(a, Exception) else b!r}")
                continue
            print(f"{name:<8} {what:<16} {a.median * 1e6:>14.1f} {b.median * 1e6:>11.1f} "
                  f"{b.median / a.median:>15.2f}")
    for what, t in (("train step", t_step), ("predict", t_pred)):
        for lib in ("nnlayers", "torch"):
            a, b = t[("plain", lib)], t[("bn+drop", lib)]
            if not (isinstance(a, Exception) or isinstance(b, Exception)):
                print(f"cost of BatchNorm+Dropout, {what}, {lib}: "
                      f"{(b.median - a.median) * 1e6:+.1f} us ({b.median / a.median:.2f}x plain)")


if __name__ == "__main__":
    main()
