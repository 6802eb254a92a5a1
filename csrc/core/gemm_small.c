/*
 * gemm_small.c: float32 products for which OpenBLAS's packing does not
 * pay, on CPUs with AVX-512 or with AVX2 and FMA, chosen at run time
 * (cpuid).
 *
 * OpenBLAS copies (packs) both operands into its own layout before any
 * product, and checks and allocates per call; for products of a few
 * thousand multiply-adds that costs more than the arithmetic. It also
 * packs all of B for every call, which is much of the work when C has
 * few rows: a layer's product on a training step's block of rows
 * (graph_run.c's batch split gives each thread a few dozen). This file
 * computes such products without packing:
 *   C (M, N) = alpha op(A) op(B) + beta C, row-major
 * (or + beta c0 in every row: a Linear's bias as the starting value)
 * in blocks of SK_ROWS rows (8 with AVX-512's 32 registers, 6 with
 * AVX2's 16) x 2 vectors of columns of C held in registers (8 rows x 1
 * vector for the last column panel of a narrow C), walking k in
 * order (each element of C is one fused multiply-add chain over k, as in
 * OpenBLAS's kernels), B read a row of vectors at a time, A one value at
 * a time (either layout). The last vector of a row that is not whole is
 * read and written through a mask. The kernel is written once
 * (gemm_small_kernel.h) and compiled for 16-float AVX-512 vectors and for
 * 8-float AVX2 vectors; both give bitwise identical products.
 *
 * nn_small_sgemm_takes says which products come here:
 *   - at most NN_SMALL_GEMM_MAX multiply-adds, B not transposed, or
 *     transposed but small enough to copy back (at most NN_SMALL_BT_MAX
 *     values, C of 16 rows or more);
 *   - or bigger ones that run on one thread (OpenBLAS would keep them on
 *     the calling thread, or is at one thread, as in a split training
 *     step: these kernels are single-threaded), with B not transposed,
 *     C at least 32 columns wide, or narrower (NN_SMALL_MIN_COLS or more)
 *     past NN_SMALL_NARROW_MIN multiply-adds, and B small enough to stay
 *     in the core's L2 cache (7/8 of it), from where each block of rows
 *     reads it again.
 * For any other product, or when the CPU has neither set (or the set
 * was capped by nn_simd_cap for a test), nn_small_sgemm returns 0 and
 * does nothing: OpenBLAS then does it.
 */
#include "nn.h"
#include "nn_blas.h"

#include <stddef.h>
#include <unistd.h>

/* The instruction set in use: the CPU's best (simd_cpu, probed where
 * the kernels are compiled), lowered by nn_simd_cap (a test hook that
 * runs the AVX2 path on an AVX-512 machine). Both are read and written
 * atomically; they only choose between equal results. */
static int simd_cap = NN_SIMD_AVX512;

/* A transposed B is copied (transposed back) to the stack when it has at
 * most this many values and C at least 16 rows to pay for the copy */
#define NN_SMALL_BT_MAX 1024

/* Above NN_SMALL_GEMM_MAX multiply-adds, a C narrower than 32 columns
 * (one vector per row of a block, most lanes masked when N is small)
 * comes here only past NN_SMALL_NARROW_MIN multiply-adds, and with at
 * least NN_SMALL_MIN_COLS columns. Below that OpenBLAS's AVX-512 builds
 * use unpacked kernels of their own that vectorise a narrow C better;
 * past it they pack, and these kernels are faster (a 10-class output
 * layer's product on predict's half of 1024 rows, for one). */
#define NN_SMALL_MIN_COLS 3
#define NN_SMALL_NARROW_MIN 1e6

#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SMALL_GEMM)
#define NN_HAVE_SMALL_GEMM 1
#include <immintrin.h>

static int simd_cpu = -1;               /* NN_SIMD_*, -1 until probed */

/* ---- AVX2 + FMA: 8 floats a vector; a mask is a vector of 0 / -1 ---- */
#define SK(name) name##_avx2
#define SK_TARGET "avx2,fma"
#define SK_LANES 8
#define SK_ROWS 6
#define SK_ROWS1 8
#define sk_vec __m256
#define sk_mask __m256i
#define SK_ZERO() _mm256_setzero_ps()
#define SK_SET1(x) _mm256_set1_ps(x)
#define SK_LOADU(p) _mm256_loadu_ps(p)
#define SK_STOREU(p, v) _mm256_storeu_ps(p, v)
#define SK_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define SK_MUL(a, b) _mm256_mul_ps(a, b)
#define SK_TAIL(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)),            \
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define SK_LOADM(m, p) _mm256_maskload_ps(p, m)
#define SK_STOREM(p, m, v) _mm256_maskstore_ps(p, m, v)
#include "gemm_small_kernel.h"
#undef SK
#undef SK_TARGET
#undef SK_LANES
#undef SK_ROWS
#undef SK_ROWS1
#undef sk_vec
#undef sk_mask
#undef SK_ZERO
#undef SK_SET1
#undef SK_LOADU
#undef SK_STOREU
#undef SK_FMA
#undef SK_MUL
#undef SK_TAIL
#undef SK_LOADM
#undef SK_STOREM

/* ---- AVX-512F: 16 floats a vector; a mask is 16 bits ---- */
#define SK(name) name##_avx512
#define SK_TARGET "avx512f"
#define SK_LANES 16
#define SK_ROWS 8
#define SK_ROWS1 8
#define sk_vec __m512
#define sk_mask __mmask16
#define SK_ZERO() _mm512_setzero_ps()
#define SK_SET1(x) _mm512_set1_ps(x)
#define SK_LOADU(p) _mm512_loadu_ps(p)
#define SK_STOREU(p, v) _mm512_storeu_ps(p, v)
#define SK_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SK_MUL(a, b) _mm512_mul_ps(a, b)
#define SK_TAIL(n) ((__mmask16)((1u << (n)) - 1u))
#define SK_LOADM(m, p) _mm512_maskz_loadu_ps(m, p)
#define SK_STOREM(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#include "gemm_small_kernel.h"

/* The best set this CPU has, probed once. */
static int cpu_simd(void)
{
    int v = __atomic_load_n(&simd_cpu, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f"))
            v = NN_SIMD_AVX512;
        else if (__builtin_cpu_supports("avx2") &&
                 __builtin_cpu_supports("fma"))
            v = NN_SIMD_AVX2;
        else
            v = NN_SIMD_NONE;
        __atomic_store_n(&simd_cpu, v, __ATOMIC_RELAXED);
    }
    return v;
}
#else
static int cpu_simd(void) { return NN_SIMD_NONE; }
#endif /* NN_HAVE_SMALL_GEMM */

int nn_simd_level(void)
{
    int cap = __atomic_load_n(&simd_cap, __ATOMIC_RELAXED);
    int cpu = cpu_simd();
    return cpu < cap ? cpu : cap;
}

int nn_simd_cap(int cap)
{
    if (cap < NN_SIMD_NONE)
        cap = NN_SIMD_NONE;
    if (cap > NN_SIMD_AVX512)
        cap = NN_SIMD_AVX512;
    return __atomic_exchange_n(&simd_cap, cap, __ATOMIC_RELAXED);
}

/* Bytes of B that the unpacked kernels read again for every block of
 * rows of a product above NN_SMALL_GEMM_MAX: 7/8 of the L2 cache of a
 * core (glibc's sysconf; 256 KiB when it does not say), probed once */
static size_t b_budget(void)
{
    static size_t budget;   /* atomic; 0 until probed */
    size_t v = __atomic_load_n(&budget, __ATOMIC_RELAXED);
    if (v == 0) {
        long l2 = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        v = (l2 > 0 ? (size_t)l2 : (size_t)256 << 10) / 8 * 7;
        __atomic_store_n(&budget, v, __ATOMIC_RELAXED);
    }
    return v;
}

int nn_small_sgemm_takes(int trans_a, int trans_b, size_t M, size_t N,
                         size_t K)
{
    double macs = (double)M * N * K;
    (void)trans_a;
    if (nn_simd_level() == NN_SIMD_NONE)
        return 0;
    if (macs <= NN_SMALL_GEMM_MAX)
        return !trans_b || (K * N <= NN_SMALL_BT_MAX && M >= 16);
    return !trans_b && N >= NN_SMALL_MIN_COLS &&
           (N >= 32 || macs > NN_SMALL_NARROW_MIN) &&
           (double)K * N * sizeof(float) <= (double)b_budget() &&
           (macs < NN_GEMM_ONE_THREAD ||
            NN_BLAS(openblas_get_num_threads)() == 1);
}

int nn_small_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                   float alpha, const float *A, size_t lda, const float *B,
                   size_t ldb, float beta, const float *c0, float *C,
                   size_t ldc)
{
#ifdef NN_HAVE_SMALL_GEMM
    int level;
    if (!nn_small_sgemm_takes(trans_a, trans_b, M, N, K))
        return 0;
    level = nn_simd_level();
    if (level == NN_SIMD_AVX512)
        small_sgemm_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                           beta, c0, C, ldc);
    else if (level == NN_SIMD_AVX2)
        small_sgemm_avx2(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                         beta, c0, C, ldc);
    else
        return 0;
    return 1;
#else
    (void)trans_a; (void)trans_b; (void)M; (void)N; (void)K; (void)alpha;
    (void)A; (void)lda; (void)B; (void)ldb; (void)beta; (void)c0; (void)C;
    (void)ldc;
    return 0;
#endif
}
