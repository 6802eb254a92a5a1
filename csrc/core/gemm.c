/*
 * gemm.c (template): C (M, N) = alpha op(A) op(B) + beta C, row-major.
 * op(A) is (M, K): A is (M, K) with lda >= K, or (K, M) with lda >= M when
 * trans_a. Likewise op(B) (K, N). The BLAS path checks every size against
 * INT_MAX; the naive path is kept beside it for cross-checks.
 *
 * A single row or column of C goes to gemv: OpenBLAS does not forward such
 * gemm calls to gemv on x86-64, and its gemm would pack all of B for one
 * row. Everything else, in float32, goes to the unpacked kernels of
 * gemm_small.c when they take it (small products, and bigger ones on one
 * thread whose B stays in cache); else it is one ordinary call. OpenBLAS keeps
 * products of fewer than NN_GEMM_ONE_THREAD multiply-adds on the calling
 * thread, so tiny products never wake its thread pool. For those, an
 * overwrite (beta = 0) of a contiguous C zeroes C with one memset first
 * and asks OpenBLAS to add (beta = 1): OpenBLAS applies beta to a
 * row-major C one row at a time (a column of its column-major view),
 * which costs more than the product itself when C is small.
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

/* C (M, N) = beta C, where beta == 0 overwrites (even NaN) */
static void FN(scale_matrix)(real beta, real *C, size_t M, size_t N,
                             size_t ldc)
{
    size_t i, j;
    if (beta == 0 && ldc == N) {
        memset(C, 0, M * N * sizeof(real));
        return;
    }
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++)
            C[i * ldc + j] = beta == 0 ? (real)0 : beta * C[i * ldc + j];
}

/*
 * C (M, N) with M == 1 or N == 1 as one gemv. The vector operand is a
 * row or column of A or B, read with its stride; the result is a row of C
 * (stride 1) or a column (stride ldc). beta == 0 zeroes C first and passes
 * beta = 1, so a NaN already in C cannot survive as 0 * NaN.
 */
static void FN(gemv_product)(int trans_a, int trans_b, size_t M, size_t N,
                             size_t K, real alpha, const real *A, size_t lda,
                             const real *B, size_t ldb, real beta, real *C,
                             size_t ldc)
{
    if (beta == 0) {
        FN(scale_matrix)(0, C, M, N, ldc);
        beta = 1;
    }
    if (M == 1) {
        /* c (N) = alpha op(B)^T a + beta c, a = row 0 of op(A) (K) */
        int inc_a = trans_a ? (int)lda : 1;
        if (trans_b)   /* B is (N, K) */
            NN_BLAS_GEMV(NN_CBLAS_ROW_MAJOR, NN_CBLAS_NO_TRANS, (int)N,
                         (int)K, alpha, B, (int)ldb, A, inc_a, beta, C, 1);
        else           /* B is (K, N) */
            NN_BLAS_GEMV(NN_CBLAS_ROW_MAJOR, NN_CBLAS_TRANS, (int)K, (int)N,
                         alpha, B, (int)ldb, A, inc_a, beta, C, 1);
    } else {
        /* c (M) = alpha op(A) b + beta c, b = column 0 of op(B) (K) */
        int inc_b = trans_b ? 1 : (int)ldb;
        if (trans_a)   /* A is (K, M) */
            NN_BLAS_GEMV(NN_CBLAS_ROW_MAJOR, NN_CBLAS_TRANS, (int)K, (int)M,
                         alpha, A, (int)lda, B, inc_b, beta, C, (int)ldc);
        else           /* A is (M, K) */
            NN_BLAS_GEMV(NN_CBLAS_ROW_MAJOR, NN_CBLAS_NO_TRANS, (int)M,
                         (int)K, alpha, A, (int)lda, B, inc_b, beta, C,
                         (int)ldc);
    }
}

/* C (M, N) = A (M, K) B (K, N) + c0 (N) in every row, when the small
 * products of gemm_small.c take it (float32, M and N above 1, as
 * nn_gemm would send them there): 1 if done. 0: the caller fills C's rows
 * with c0 and calls nn_gemm with beta 1, the same roundings. */
static int FN(small_gemm_from_row)(size_t M, size_t N, size_t K,
                                   const real *A, const real *B,
                                   const real *c0, real *C)
{
#ifdef NN_REAL_IS_FLOAT
    if (M > 1 && N > 1 && K > 0 && !nn_reference_gemm_on)
        return nn_small_sgemm(0, 0, M, N, K, 1, A, K, B, N, 1, c0, C, N);
#endif
    (void)M; (void)N; (void)K; (void)A; (void)B; (void)c0; (void)C;
    return 0;
}

nn_status FN(nn_gemm)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                      real alpha, const real *A, size_t lda, const real *B,
                      size_t ldb, real beta, real *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return NN_OK;
    if (K == 0) {
        FN(scale_matrix)(beta, C, M, N, ldc);   /* empty sum: C = beta C */
        return NN_OK;
    }
    if (nn_reference_gemm_on) {
        FN(nn_gemm_ref)(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                        beta, C, ldc);
        return NN_OK;
    }
    if (!nn_blas_fits(M, N, K, lda, ldb, ldc))
        return NN_ERR_OVERFLOW;
    if (M == 1 || N == 1) {
        FN(gemv_product)(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                         beta, C, ldc);
        return NN_OK;
    }
#ifdef NN_REAL_IS_FLOAT
    if (nn_small_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                       beta, NULL, C, ldc))
        return NN_OK;
#endif
    if (beta == 0 && ldc == N && (double)M * N * K < NN_GEMM_ONE_THREAD) {
        /* OpenBLAS would zero C one row at a time: one memset here */
        FN(scale_matrix)(0, C, M, N, ldc);
        beta = 1;
    }
    NN_BLAS_GEMM(NN_CBLAS_ROW_MAJOR,
                 trans_a ? NN_CBLAS_TRANS : NN_CBLAS_NO_TRANS,
                 trans_b ? NN_CBLAS_TRANS : NN_CBLAS_NO_TRANS,
                 (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb,
                 beta, C, (int)ldc);
    return NN_OK;
}
