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
# OpenBLAS's single-thread limit (2^19 multiply-adds). N a multiple of 8
# (with B not transposed) reaches the AVX2 kernel of gemm_small.c in
# float32: whole 16-column panels, an 8-column one, rows left over after
# blocks of 4, K = 1, and the largest size it takes (2^16)
SHAPES = [(1, 7, 5), (6, 1, 5), (1, 1, 9), (4, 3, 1), (1, 300, 200), (300, 1, 200),
          (5, 6, 7), (32, 32, 64), (80, 70, 120),
          (3, 8, 1), (5, 16, 7), (9, 24, 33), (7, 40, 2), (64, 32, 32), (8, 8, 8),
          # and with B transposed (copied back) when C has >= 16 rows
          (16, 16, 16), (20, 32, 10), (33, 8, 50),
          # A^T B with N not a multiple of 8 but M one: computed transposed
          (32, 10, 32), (8, 3, 5), (16, 7, 40)]
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
