"""The core's matrix product (nn_gemm) on every path it can take, against a
float64 NumPy product: gemv for a single row or column of C, the small
products whose zeroing nnlayers does itself, and ordinary OpenBLAS calls;
both transposes, leading dimensions wider than the operands, alpha and
beta (beta = 0 must overwrite a C full of NaN), and the reference GEMM.
Through the binding's test hook nnlayers._core._gemm."""
import itertools

import numpy as np
import pytest

import nnlayers as nl
from nnlayers import _core

DTYPES = [np.float32, np.float64]
# (M, N, K): single row, single column, both, K = 1, small, and one above
# OpenBLAS's single-thread limit (2^19 multiply-adds). Up to 2^16
# multiply-adds, float32 products reach the kernels of gemm_small.c
# (AVX-512 or AVX2): whole two-vector panels, one vector left, a masked
# partial vector (N not a multiple of 8 or 16) alone or after a whole one,
# rows left over after blocks of 8 (AVX-512) or 6 (AVX2) and of 4, a
# one-vector panel's blocks of 8 rows, then 4, then 1 (15, 12, 20), K = 1,
# and the largest size (2^16)
SHAPES = [(1, 7, 5), (6, 1, 5), (1, 1, 9), (4, 3, 1), (1, 300, 200), (300, 1, 200),
          (5, 6, 7), (32, 32, 64), (80, 70, 120),
          (3, 8, 1), (5, 16, 7), (9, 24, 33), (7, 40, 2), (64, 32, 32), (8, 8, 8),
          (32, 10, 32), (8, 3, 5), (16, 7, 40), (6, 20, 9), (5, 45, 3), (2, 2, 2),
          (15, 12, 20),
          # and with B transposed (copied back) when C has >= 16 rows
          (16, 16, 16), (20, 32, 10), (33, 8, 50), (17, 10, 12), (16, 50, 20)]
# Above 2^16 multiply-adds and below OpenBLAS's single-thread limit, B not
# transposed and C at least 32 columns wide: the same kernels
# (MID_SHAPES), with every kind of row and column left over
MID_SHAPES = [(37, 64, 200), (70, 33, 64), (23, 32, 700), (13, 48, 300)]
SHAPES += MID_SHAPES
PAD = 3   # extra columns: lda, ldb, ldc wider than the operands


def operands(M, N, K, ta, tb, dtype, rng):
    """A, B, C arrays (with PAD extra columns) and their used blocks."""
    ar, ac = (K, M) if ta else (M, K)
    br, bc = (N, K) if tb else (K, N)
    A = rng.standard_normal((ar, ac + PAD)).astype(dtype)
    B = rng.standard_normal((br, bc + PAD)).astype(dtype)
    C = rng.standard_normal((M, N + PAD)).astype(dtype)
    opA = A[:, :ac].astype(np.float64)
    opB = B[:, :bc].astype(np.float64)
    return A, B, C, (opA.T if ta else opA), (opB.T if tb else opB)


def tol(dtype, K):
    return (2e-6 if dtype == np.float32 else 1e-13) * max(1, K) ** 0.5 * 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.5, 1.0), (2.0, 0.25)])
def test_gemm_matches_float64_product(dtype, M, N, K, ta, tb, alpha, beta):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    A, B, C, opA, opB = operands(M, N, K, ta, tb, dtype, rng)
    if beta == 0:
        C[:, :N] = np.nan          # must be overwritten, not scaled
    before = C.copy()
    want = alpha * (opA @ opB) + (beta * before[:, :N].astype(np.float64) if beta else 0)
    a0, b0 = A.copy(), B.copy()
    _core._gemm(A, B, C, ta, tb, M, N, K, alpha, beta)
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(C[:, :N], want, rtol=tol(dtype, K), atol=tol(dtype, K) * scale)
    # the padding columns of C and the inputs are untouched
    np.testing.assert_array_equal(C[:, N:], before[:, N:])
    np.testing.assert_array_equal(A, a0)
    np.testing.assert_array_equal(B, b0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", [(1, 7, 5), (6, 1, 5), (5, 6, 7)])
def test_reference_gemm_agrees(dtype, M, N, K):
    rng = np.random.default_rng(3)
    A, B, C, _, _ = operands(M, N, K, True, False, dtype, rng)
    C1, C2 = C.copy(), C.copy()
    _core._gemm(A, B, C1, True, False, M, N, K, 0.5, 0.5)
    old = _core.use_reference_gemm(True)
    try:
        _core._gemm(A, B, C2, True, False, M, N, K, 0.5, 0.5)
    finally:
        _core.use_reference_gemm(old)
    np.testing.assert_allclose(C1, C2, rtol=tol(dtype, K), atol=tol(dtype, K))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_sum_scales_c(dtype):
    """K = 0: C = beta C (and beta = 0 overwrites NaN)."""
    A = np.zeros((3, 1), dtype)
    B = np.zeros((1, 4), dtype)
    C = np.full((3, 4), 2.0, dtype)
    _core._gemm(A, B, C, False, False, 3, 4, 0, 1.0, 0.5)
    np.testing.assert_array_equal(C, np.full((3, 4), 1.0, dtype))
    C[...] = np.nan
    _core._gemm(A, B, C, False, False, 3, 4, 0, 1.0, 0.0)
    np.testing.assert_array_equal(C, np.zeros((3, 4), dtype))


def test_gemm_hook_checks_sizes():
    A = np.zeros((3, 4))
    with pytest.raises(ValueError, match="do not fit"):
        _core._gemm(A, A, A, False, False, 3, 4, 5, 1.0, 0.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core._gemm(A, A.T, A, False, False, 1, 1, 1, 1.0, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_features", [1, 5])
def test_batch_of_one_and_single_output(dtype, out_features):
    """The layer paths that reach gemv: a batch of one row (forward, input
    gradient) and a layer with one output (forward, weight gradient)."""
    rng = np.random.default_rng(11)
    lin = nl.Linear(6, out_features, dtype=dtype, seed=2)
    W = np.array(lin.params["W"], dtype=np.float64)
    b = np.array(lin.params["b"], dtype=np.float64)
    for n in (1, 4):
        x = rng.standard_normal((n, 6)).astype(dtype)
        g = rng.standard_normal((n, out_features)).astype(dtype)
        lin.zero_grad()
        y = lin.forward(x)
        gx = lin.backward(g)
        x64, g64 = x.astype(np.float64), g.astype(np.float64)
        t = tol(dtype, 6)
        np.testing.assert_allclose(y, x64 @ W + b, rtol=t, atol=t)
        np.testing.assert_allclose(gx, g64 @ W.T, rtol=t, atol=t)
        np.testing.assert_allclose(lin.grads["W"], x64.T @ g64, rtol=t, atol=t)
        np.testing.assert_allclose(lin.grads["b"], g64.sum(0), rtol=t, atol=t)


# The small products are computed by an AVX-512 kernel or an AVX2 one,
# chosen by cpuid (capped by the test hook _core._simd); "none" sends them
# to OpenBLAS. Every element is the same chain of roundings on both sets.
SIMD_SETS = [name for name in ("avx512", "avx2")
             if _core._simd(name) == name]
_core._simd("avx512")   # back to the CPU's best


def gemm_under(cap, A, B, C, *args):
    C = C.copy()
    old = _core._simd()
    try:
        _core._simd(cap)
        _core._gemm(A, B, C, *args)
    finally:
        _core._simd(old)
    return C


@pytest.mark.skipif(len(SIMD_SETS) < 2, reason="this CPU has no AVX-512: one set only")
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.5, 1.0), (2.0, 0.25)])
def test_small_kernels_bitwise_equal_across_sets(M, N, K, ta, tb, alpha, beta):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    A, B, C, _, _ = operands(M, N, K, ta, tb, np.float32, rng)
    args = (ta, tb, M, N, K, alpha, beta)
    np.testing.assert_array_equal(gemm_under("avx512", A, B, C, *args),
                                  gemm_under("avx2", A, B, C, *args))


@pytest.mark.parametrize("cap", SIMD_SETS + ["none"])
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_every_set_matches_float64_product(cap, M, N, K, ta, tb):
    """Each set (and OpenBLAS alone) against the float64 product."""
    rng = np.random.default_rng(M + N + K)
    A, B, C, opA, opB = operands(M, N, K, ta, tb, np.float32, rng)
    C[:, :N] = np.nan
    got = gemm_under(cap, A, B, C, ta, tb, M, N, K, 1.5, 0.0)
    want = 1.5 * (opA @ opB)
    t = tol(np.float32, K)
    np.testing.assert_allclose(got[:, :N], want, rtol=t, atol=t * max(1.0, np.abs(want).max()))
    np.testing.assert_array_equal(got[:, N:], C[:, N:])


@pytest.mark.skipif(not SIMD_SETS, reason="this CPU has neither AVX2 nor AVX-512")
@pytest.mark.parametrize("cap", SIMD_SETS)
def test_which_products_the_unpacked_kernels_take(cap):
    """Every product up to 2^16 multiply-adds (a transposed B only small
    and under C of 16 rows or more); bigger ones only with B not
    transposed, C 32 columns or wider (3 or more past 10^6 multiply-adds),
    B within the L2 cache, and on one thread: under OpenBLAS's
    single-thread limit, or with nnlayers' OpenBLAS at one thread (as in a
    training step's batch split)."""
    takes = _core._small_gemm_takes
    old, threads = _core._simd(), nl.get_num_threads()
    try:
        _core._simd(cap)
        for M, N, K in MID_SHAPES:
            assert (M * N * K > 2 ** 16 and M * N * K < 2 ** 19
                    and takes(M, N, K, False, False) and takes(M, N, K, True, False))
            assert not takes(M, N, K, False, True)
        assert takes(64, 32, 32, False, False) and takes(16, 16, 16, False, True)
        assert not takes(8, 16, 16, False, True)          # C under 16 rows
        assert not takes(300, 10, 256, False, False)      # narrow, under 10^6
        assert not takes(8, 4096, 4096, False, False)     # B beyond any L2
        nl.set_num_threads(1)
        assert takes(64, 64, 200, False, False)           # 2^19.6, one thread
        assert takes(520, 10, 200, False, False)          # narrow, past 10^6
        assert takes(520, 10, 200, True, False)
        assert not takes(520, 2, 1000, False, False)      # C under 3 columns
        nl.set_num_threads(2)
        if nl.get_num_threads() == 2:
            assert not takes(64, 64, 200, False, False)   # OpenBLAS's threads
            assert not takes(520, 10, 200, False, False)
        _core._simd("none")
        assert not takes(37, 64, 200, False, False) and not takes(8, 8, 8, False, False)
    finally:
        _core._simd(old)
        nl.set_num_threads(threads)



@pytest.mark.skipif(not SIMD_SETS, reason="this CPU has neither AVX2 nor AVX-512")
@pytest.mark.parametrize("ta", [False, True])
def test_narrow_products_past_a_million_on_one_thread(ta):
    """A 10- and a 23-column C past 10^6 multiply-adds on one thread (a
    split step's or predict's half of the rows): the unpacked kernels take
    them, every set matches the float64 product, and the sets agree to
    the bit."""
    threads = nl.get_num_threads()
    try:
        nl.set_num_threads(1)
        for M, N, K in [(520, 10, 200), (300, 23, 150)]:
            assert _core._small_gemm_takes(M, N, K, ta, False)
            rng = np.random.default_rng(M + N + K)
            A, B, C, opA, opB = operands(M, N, K, ta, False, np.float32, rng)
            want = -0.5 * (opA @ opB) + C[:, :N].astype(np.float64)
            got = {cap: gemm_under(cap, A, B, C, ta, False, M, N, K, -0.5, 1.0)
                   for cap in SIMD_SETS}
            t = tol(np.float32, K)
            for g in got.values():
                np.testing.assert_allclose(g[:, :N], want, rtol=t,
                                           atol=t * max(1.0, np.abs(want).max()))
                np.testing.assert_array_equal(g[:, N:], C[:, N:])
            if len(got) == 2:
                np.testing.assert_array_equal(got["avx512"], got["avx2"])
    finally:
        nl.set_num_threads(threads)

def test_simd_hook_names_its_argument():
    with pytest.raises(ValueError, match="cap must be"):
        _core._simd("sse")


@pytest.mark.skipif(len(SIMD_SETS) < 2, reason="this CPU has no AVX-512: one set only")
@pytest.mark.parametrize("rows,width,hidden", [(32, 64, 32), (48, 300, 64)])
def test_training_bitwise_equal_across_sets(rows, width, hidden):
    """A small float32 network (whose products all take the small kernels,
    10-wide masked ones included), and at one thread one whose first
    layer's products are above 2^19 multiply-adds (the unpacked path for
    one thread), train to the same bits on both sets."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((rows, width)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    weights = {}
    threads = nl.get_num_threads()
    for cap in SIMD_SETS:
        model = nl.Sequential(nl.Linear(width, hidden, seed=1), nl.ReLU(),
                              nl.Linear(hidden, 10, seed=2))
        opt = nl.SGD(model, lr=0.1, momentum=0.9)
        old = _core._simd()
        try:
            _core._simd(cap)
            nl.set_num_threads(1)
            assert _core._small_gemm_takes(rows, hidden, width, False, False)
            for _ in range(5):
                model.train_step(X, y, nl.SoftmaxCrossEntropy(), opt)
        finally:
            _core._simd(old)
            nl.set_num_threads(threads)
        weights[cap] = [np.array(p) for layer in (model[0], model[2])
                        for p in layer.params.values()]
    for a, b in zip(weights["avx512"], weights["avx2"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cap", SIMD_SETS + ["none"])
@pytest.mark.parametrize("N,I,O", [(32, 64, 32), (32, 32, 10), (5, 7, 3), (9, 33, 24),
                                   (1, 20, 5), (40, 16, 1), (80, 70, 120), (40, 150, 64)])
def test_linear_forward_starts_from_the_bias_bitwise(cap, N, I, O):
    """A Linear's forward starts its product from the bias: small products
    take the bias row in the kernel, others fill y with it and add the
    product (beta 1). Either way y is bitwise the product of the same set
    added to a C filled with the bias rows."""
    rng = np.random.default_rng(N * 100 + O)
    lin = nl.Linear(I, O, seed=3)
    lin.params["b"][...] = rng.standard_normal(O).astype(np.float32)
    x = rng.standard_normal((N, I)).astype(np.float32)
    W, b = np.array(lin.params["W"]), np.array(lin.params["b"])
    old = _core._simd()
    try:
        _core._simd(cap)
        y = lin.forward(x)
        C = np.repeat(b[None, :], N, axis=0)
        _core._gemm(x, W, C, False, False, N, O, I, 1.0, 1.0)
    finally:
        _core._simd(old)
    np.testing.assert_array_equal(y, C)
    np.testing.assert_allclose(y, x.astype(np.float64) @ W + b, rtol=1e-5, atol=1e-5)


def test_small_kernels_compile_out(tmp_path):
    """gemm_small.c builds where its kernels are left out (a CPU other than
    x86-64, or -DNN_NO_SMALL_GEMM): nn_small_sgemm then takes nothing and
    OpenBLAS does every product."""
    import os
    import shlex
    import subprocess
    import sysconfig

    core = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "csrc", "core")
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    build = subprocess.run(
        cc + ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
              "-DNN_NO_SMALL_GEMM", "-I", core, "-c", os.path.join(core, "gemm_small.c"),
              "-o", str(tmp_path / "gemm_small.o")],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
