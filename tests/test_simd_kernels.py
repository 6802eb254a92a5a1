"""The float32 kernels written with AVX-512 intrinsics (softmax
cross-entropy on rows of at most 16 classes, a Linear's bias gradient)
against the loops they stand for, run on the same machine by capping the
vector set with the test hook _core._simd: the same bits, NaN and
infinities included."""
import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

CAPS = [name for name in ("avx512", "avx2") if _core._simd(name) == name] + ["none"]
_core._simd("avx512")   # back to the CPU's best


def under(cap, fn):
    old = _core._simd()
    try:
        _core._simd(cap)
        assert _core._simd() == cap
        return fn()
    finally:
        _core._simd(old)


def xent_case(C, N, weighted, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((N, C)) * rng.choice([1, 10, 100])).astype(np.float32)
    if N > 5:
        z[2, :] = 0.0                       # a tie: every logit the max
        z[3, 0] = np.nan                    # a NaN row
        z[5, -1] = np.inf                   # an infinite max
        if C > 1:
            z[4, 1:] = -np.inf              # exp underflows to 0
    y = rng.integers(0, C, N)
    w = rng.random(N).astype(np.float32) if weighted else None
    return z, y, w


def xent(z, y, w):
    loss = nl.SoftmaxCrossEntropy()
    v = loss.forward(z, y, sample_weight=w) if w is not None else loss.forward(z, y)
    return np.float64(v), np.array(loss.backward(), copy=True)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("C", [1, 2, 7, 8, 9, 10, 15, 16, 17])
@pytest.mark.parametrize("N", [1, 7, 33, 300])
def test_softmax_xent_narrow_rows_bitwise_equal_across_vector_sets(C, N, weighted):
    z, y, w = xent_case(C, N, weighted, seed=C * 1000 + N)
    runs = {cap: under(cap, lambda: xent(z, y, w)) for cap in CAPS}
    v0, g0 = runs[CAPS[0]]
    # the float64 reference holds for the finite rows
    ok = np.isfinite(z).all(axis=1)
    zr = z.astype(np.float64)
    p = np.exp(zr - zr.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(N), y] -= 1
    scale = (w.astype(np.float64) if w is not None else np.ones(N)) / N
    np.testing.assert_allclose(g0[ok], (p * scale[:, None])[ok], rtol=1e-5, atol=1e-7)
    for cap in CAPS[1:]:
        v, g = runs[cap]
        np.testing.assert_array_equal(g, g0, err_msg=f"{cap} vs {CAPS[0]}")
        assert v == v0 or (np.isnan(v) and np.isnan(v0)), (cap, v, v0)


@pytest.mark.parametrize("O", [1, 10, 16, 17, 32, 63, 64, 65, 130])
@pytest.mark.parametrize("N", [1, 5, 64])
def test_bias_gradient_bitwise_equal_across_vector_sets(O, N):
    rng = np.random.default_rng(O * 100 + N)
    x = rng.standard_normal((N, 7)).astype(np.float32)
    dy = (rng.standard_normal((N, O)) * 10 ** rng.uniform(-3, 3, (N, O))).astype(np.float32)
    lin = nl.Linear(7, O, seed=3)

    def bias_grad():
        lin.zero_grad()
        lin.forward(x)
        lin.backward(dy)
        return np.array(lin.grads["b"], copy=True)

    runs = {cap: under(cap, bias_grad) for cap in CAPS}
    np.testing.assert_allclose(runs[CAPS[0]], dy.astype(np.float64).sum(axis=0),
                               rtol=1e-5, atol=1e-5 * np.abs(dy).sum(axis=0).max())
    for cap in CAPS[1:]:
        np.testing.assert_array_equal(runs[cap], runs[CAPS[0]], err_msg=cap)
