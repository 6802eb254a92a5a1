/*
 * nn_blas.h: the one wrapper around CBLAS gemm.
 *
 * Which OpenBLAS symbols we call is decided here and only here:
 *   NN_BLAS_SCIPY_PREFIX defined  -> the scipy-openblas32 wheel, whose
 *                                    symbols carry a "scipy_" prefix
 *   otherwise                      -> a system OpenBLAS (plain names)
 * The prototypes are declared here rather than taken from a cblas.h, so
 * the same source builds against either library. CBLAS enums are ints.
 * Every dimension handed to BLAS must fit in an int: see nn_blas_fits().
 */
#ifndef NN_BLAS_H
#define NN_BLAS_H

#include <limits.h>
#include <stddef.h>

#ifdef NN_BLAS_SCIPY_PREFIX
#define NN_BLAS(name) scipy_##name
#else
#define NN_BLAS(name) name
#endif

enum {
    NN_CBLAS_ROW_MAJOR = 101,
    NN_CBLAS_NO_TRANS = 111,
    NN_CBLAS_TRANS = 112
};

void NN_BLAS(cblas_sgemm)(int order, int trans_a, int trans_b, int M, int N,
                          int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C,
                          int ldc);
void NN_BLAS(cblas_dgemm)(int order, int trans_a, int trans_b, int M, int N,
                          int K, double alpha, const double *A, int lda,
                          const double *B, int ldb, double beta, double *C,
                          int ldc);
void NN_BLAS(cblas_sgemv)(int order, int trans, int M, int N, float alpha,
                          const float *A, int lda, const float *x, int incx,
                          float beta, float *y, int incy);
void NN_BLAS(cblas_dgemv)(int order, int trans, int M, int N, double alpha,
                          const double *A, int lda, const double *x, int incx,
                          double beta, double *y, int incy);

/* OpenBLAS >= 0.3.28: hand the jobs of parallel products to the program's
 * own threads (pool.c). Weak: NULL with an older OpenBLAS. */
#if defined(__GNUC__) && defined(__ELF__)
#define NN_WEAK __attribute__((weak))
#else
#define NN_WEAK
#endif
typedef void (*nn_blas_dojob)(int thread_num, void *jobdata, int dojob_data);
typedef void (*nn_blas_threads_callback)(int sync, nn_blas_dojob dojob,
                                         int numjobs, size_t jobdata_elsize,
                                         void *jobdata, int dojob_data);
NN_WEAK void NN_BLAS(openblas_set_threads_callback_function)(
    nn_blas_threads_callback callback);

void NN_BLAS(openblas_set_num_threads)(int n);
int NN_BLAS(openblas_get_num_threads)(void);
char *NN_BLAS(openblas_get_config)(void);

/* 1 when every size fits the int that CBLAS takes. */
static inline int nn_blas_fits(size_t M, size_t N, size_t K, size_t lda,
                               size_t ldb, size_t ldc)
{
    return M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX &&
           ldb <= INT_MAX && ldc <= INT_MAX;
}

/* OpenBLAS runs a gemm of fewer multiply-adds than this on the calling
 * thread alone (2 x 65536 x GEMM_MULTITHREAD_THRESHOLD 4 in its
 * interface/gemm.c) */
#define NN_GEMM_ONE_THREAD 524288.0

/* float32 products of at most this many multiply-adds (2^16) may go to
 * the AVX-512 or AVX2 kernels of gemm_small.c whatever their shape;
 * bigger ones only when gemm_small.c's nn_small_sgemm_takes says so. */
#define NN_SMALL_GEMM_MAX 65536.0

/* gemm_small.c: 1 if it computed C (M, N) = alpha op(A) op(B) + beta C
 * (with c0 (N) not NULL: + beta c0 in every row, C not read), 0 (nothing
 * done) if it does not take the product (nn.h's nn_small_sgemm_takes). */
int nn_small_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                   float alpha, const float *A, size_t lda, const float *B,
                   size_t ldb, float beta, const float *c0, float *C,
                   size_t ldc);

/* Set by nn_use_reference_gemm(); read by the gemm template. */
extern int nn_reference_gemm_on;

#endif /* NN_BLAS_H */
