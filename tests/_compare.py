"""Comparison helpers shared by the tests that check kernels against
nnlayers._reference (float32 and float64)."""
import numpy as np


def tol(dtype):
    """Relative tolerance for comparing against the NumPy reference."""
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_close(got, want, dtype):
    """got has dtype and want's shape, and matches it to tol(dtype),
    absolute error scaled by want's magnitude."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol(dtype), atol=tol(dtype) * scale)
