"""The nnlayers networks the benchmarks time, built one way for
benchmarks/run.py and benchmarks/_compare_worker.py (which may run an
older nnlayers: the chain uses only Sequential, Linear and ReLU)."""
import numpy as np


def mlp(nl, sizes, seed=0):
    """``Linear - ReLU - ... - Linear`` of the given widths, float32."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nl.ReLU())
        layers.append(nl.Linear(a, b, dtype=np.float32, seed=seed + i))
    return nl.Sequential(*layers)


def residual(nl, sizes, skip=True):
    """a-h-h-c as a graph (nl.Model): the middle layer's output and its
    input added before the last layer (skip=True), or the plain chain of
    the same size written as a graph."""
    a, h, _, c = sizes
    inp = nl.Input(a)
    h1 = nl.ReLU()(nl.Linear(a, h, seed=0)(inp))
    h2 = nl.ReLU()(nl.Linear(h, h, seed=1)(h1))
    out = nl.Linear(h, c, seed=2)(nl.Add()([h2, h1]) if skip else h2)
    return nl.Model(inp, out)
