/*
 * gemm_small.c: float32 products too small for OpenBLAS's packing to pay,
 * on CPUs with AVX2 and FMA.
 *
 * OpenBLAS copies (packs) both operands into its own layout before any
 * product, and checks and allocates per call; for products of a few
 * thousand multiply-adds that costs more than the arithmetic. This file
 * computes such products without packing:
 *   C (M, N) = alpha op(A) op(B) + beta C, row-major
 * in blocks of 4 rows x 16 columns of C held in eight 8-float registers,
 * walking k in order (each element of C is one fused multiply-add chain
 * over k, as in OpenBLAS's kernels), B read a row of 16 at a time, A one
 * value at a time (either layout).
 *
 * It takes only the shapes where it beat OpenBLAS when this was written
 * (benchmarks/run.py times the steps that use it): N a multiple of 8, so
 * every load and store is a whole vector, at most NN_SMALL_GEMM_MAX
 * multiply-adds, and B not transposed, or transposed but small enough to
 * copy back (at most NN_SMALL_BT_MAX values, C of 16 rows or more); and
 * A^T B with N not a multiple of 8 but M one, computed as its transpose
 * (small_sgemm_tn_transposed). Rows of C that end in a partial vector, or
 * bigger transposed copies, lost to OpenBLAS and go there.
 *
 * nn_small_sgemm returns 0 (and does nothing) for any other product, or
 * when the CPU lacks AVX2 or FMA: OpenBLAS then does it.
 */
#include "nn.h"
#include "nn_blas.h"

#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SMALL_GEMM)
#define NN_HAVE_SMALL_GEMM 1
#include <immintrin.h>

#define NN_AVX2_FMA __attribute__((target("avx2,fma")))
#define NN_KERNEL static inline __attribute__((always_inline, target("avx2,fma")))

/* A transposed B is copied (transposed back) to the stack when it has at
 * most this many values and C at least 16 rows to pay for the copy */
#define NN_SMALL_BT_MAX 1024
/* Largest C computed transposed through a stack buffer (values) */
#define NN_SMALL_T_MAX 2048

/*
 * One block of C: rows i .. i + R - 1 (R = 4 or 1), columns j .. j + 8 W - 1
 * (W = 2 or 1 vectors). A (M, K) row-major, or (K, M) when TA; B (K, N).
 */
NN_KERNEL void block(const int R, const int W, const int TA, size_t K,
                     float alpha, const float *A, size_t lda, size_t i,
                     const float *B, size_t ldb, size_t j, float beta,
                     float *C, size_t ldc)
{
    __m256 acc[4][2];
    size_t k;
    int r, w;
    for (r = 0; r < R; r++)
        for (w = 0; w < W; w++)
            acc[r][w] = _mm256_setzero_ps();
    for (k = 0; k < K; k++) {
        const float *brow = B + k * ldb + j;
        __m256 b[2];
        for (w = 0; w < W; w++)
            b[w] = _mm256_loadu_ps(brow + 8 * w);
        for (r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(TA ? A + k * lda + i + r
                                              : A + (i + r) * lda + k);
            for (w = 0; w < W; w++)
                acc[r][w] = _mm256_fmadd_ps(a, b[w], acc[r][w]);
        }
    }
    for (r = 0; r < R; r++) {
        float *crow = C + (i + r) * ldc + j;
        for (w = 0; w < W; w++) {
            __m256 v = _mm256_mul_ps(_mm256_set1_ps(alpha), acc[r][w]);
            if (beta != 0)   /* beta == 0 overwrites, even a NaN */
                v = _mm256_fmadd_ps(_mm256_set1_ps(beta),
                                    _mm256_loadu_ps(crow + 8 * w), v);
            _mm256_storeu_ps(crow + 8 * w, v);
        }
    }
}

/* Columns j .. j + 8 W - 1 of every row of C, 4 rows at a time. */
NN_KERNEL void column_panel(const int W, const int TA, size_t M, size_t K,
                            float alpha, const float *A, size_t lda,
                            const float *B, size_t ldb, size_t j, float beta,
                            float *C, size_t ldc)
{
    size_t i;
    for (i = 0; i + 4 <= M; i += 4)
        block(4, W, TA, K, alpha, A, lda, i, B, ldb, j, beta, C, ldc);
    for (; i < M; i++)
        block(1, W, TA, K, alpha, A, lda, i, B, ldb, j, beta, C, ldc);
}

/* All of C (N a multiple of 8): 16-column panels, then one of 8 if left. */
NN_KERNEL void all_panels(const int TA, size_t M, size_t N, size_t K,
                          float alpha, const float *A, size_t lda,
                          const float *B, size_t ldb, float beta, float *C,
                          size_t ldc)
{
    size_t j;
    for (j = 0; j + 16 <= N; j += 16)
        column_panel(2, TA, M, K, alpha, A, lda, B, ldb, j, beta, C, ldc);
    if (j < N)
        column_panel(1, TA, M, K, alpha, A, lda, B, ldb, j, beta, C, ldc);
}

NN_AVX2_FMA static void small_sgemm_avx2(int trans_a, int trans_b, size_t M,
                                         size_t N, size_t K, float alpha,
                                         const float *A, size_t lda,
                                         const float *B, size_t ldb,
                                         float beta, float *C, size_t ldc)
{
    float bt[NN_SMALL_BT_MAX];
    if (trans_b) {
        /* B is (N, K): bt (K, N) = B^T, so op(B) is read by rows */
        size_t k, j;
        for (k = 0; k < K; k++)
            for (j = 0; j < N; j++)
                bt[k * N + j] = B[j * ldb + k];
        B = bt;
        ldb = N;
    }
    if (trans_a)
        all_panels(1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        all_panels(0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/*
 * C (M, N) = alpha A^T B + beta C with N not a multiple of 8 but M one (a
 * weight update C (I, O) += X^T G of a layer with, say, 10 outputs):
 * the kernel computes the transpose, T (N, M) = B^T A, whose rows are whole
 * vectors, with B read as the transposed operand and A as it is (no
 * copies), and C takes T^T.
 */
NN_AVX2_FMA static void small_sgemm_tn_transposed(size_t M, size_t N,
                                                  size_t K, float alpha,
                                                  const float *A, size_t lda,
                                                  const float *B, size_t ldb,
                                                  float beta, float *C,
                                                  size_t ldc)
{
    float t[NN_SMALL_T_MAX];
    size_t i, j;
    all_panels(1, N, M, K, 1.0f, B, ldb, A, lda, 0.0f, t, M);
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++)
            C[i * ldc + j] = alpha * t[j * M + i] +
                             (beta != 0 ? beta * C[i * ldc + j] : 0.0f);
}

static int cpu_has_avx2_fma(void)
{
    static int known = -1;
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif /* NN_HAVE_SMALL_GEMM */

int nn_small_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                   float alpha, const float *A, size_t lda, const float *B,
                   size_t ldb, float beta, float *C, size_t ldc)
{
#ifdef NN_HAVE_SMALL_GEMM
    if (trans_a && !trans_b && N % 8 != 0 && M % 8 == 0 &&
        (double)M * N * K <= NN_SMALL_GEMM_MAX && M * N <= NN_SMALL_T_MAX &&
        cpu_has_avx2_fma()) {
        small_sgemm_tn_transposed(M, N, K, alpha, A, lda, B, ldb, beta, C,
                                  ldc);
        return 1;
    }
    if (N % 8 != 0 || (double)M * N * K > NN_SMALL_GEMM_MAX ||
        (trans_b && (K * N > NN_SMALL_BT_MAX || M < 16)) ||
        !cpu_has_avx2_fma())
        return 0;
    small_sgemm_avx2(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta,
                     C, ldc);
    return 1;
#else
    (void)trans_a; (void)trans_b; (void)M; (void)N; (void)K; (void)alpha;
    (void)A; (void)lda; (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return 0;
#endif
}
