/*
 * gemm.c (template): C (M, N) = alpha op(A) op(B) + beta C, row-major.
 * op(A) is (M, K): A is (M, K) with lda >= K, or (K, M) with lda >= M when
 * trans_a. Likewise op(B) (K, N). The BLAS path checks every size against
 * INT_MAX; the naive path is kept beside it for cross-checks.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

void FN(nn_gemm_ref)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                     real alpha, const real *A, size_t lda, const real *B,
                     size_t ldb, real beta, real *C, size_t ldc)
{
    size_t i, j, k;
    for (i = 0; i < M; i++) {
        for (j = 0; j < N; j++) {
            double acc = 0.0;
            for (k = 0; k < K; k++) {
                real a = trans_a ? A[k * lda + i] : A[i * lda + k];
                real b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * (double)b;
            }
            /* beta == 0 means "overwrite", even if C holds NaN */
            C[i * ldc + j] = (real)(alpha * acc) +
                             (beta == 0 ? (real)0 : beta * C[i * ldc + j]);
        }
    }
}

nn_status FN(nn_gemm)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                      real alpha, const real *A, size_t lda, const real *B,
                      size_t ldb, real beta, real *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return NN_OK;
    if (K == 0) {
        /* empty sum: C = beta C */
        size_t i, j;
        for (i = 0; i < M; i++)
            for (j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0 ? (real)0 : beta * C[i * ldc + j];
        return NN_OK;
    }
    if (nn_reference_gemm_on) {
        FN(nn_gemm_ref)(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                        beta, C, ldc);
        return NN_OK;
    }
    if (!nn_blas_fits(M, N, K, lda, ldb, ldc))
        return NN_ERR_OVERFLOW;
    NN_BLAS_GEMM(NN_CBLAS_ROW_MAJOR,
                 trans_a ? NN_CBLAS_TRANS : NN_CBLAS_NO_TRANS,
                 trans_b ? NN_CBLAS_TRANS : NN_CBLAS_NO_TRANS,
                 (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb,
                 beta, C, (int)ldc);
    return NN_OK;
}
