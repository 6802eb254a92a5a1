/*
 * nn_template.h: the macros a template body sees.
 *
 * The template bodies (the kernels, the optimizers' rules and the graph
 * engine graph_run.c) are written once over `real` and FN(name).
 * dtype_f32.c and dtype_f64.c define NN_REAL_IS_FLOAT or NN_REAL_IS_DOUBLE
 * and include them.
 */
#ifndef NN_TEMPLATE_H
#define NN_TEMPLATE_H

#define NN_CAT_(a, b) a##b
#define NN_CAT(a, b) NN_CAT_(a, b)

#if defined(NN_REAL_IS_FLOAT)
typedef float real;
#define NN_SFX _f32
#define NN_DTYPE NN_F32
#define NN_BLAS_GEMM NN_BLAS(cblas_sgemm)
#define NN_BLAS_GEMV NN_BLAS(cblas_sgemv)
#define R_EXP expf
#define R_LOG logf
#define R_LOG1P log1pf
#define R_EXPM1 expm1f
#define R_ERFC erfcf
#define R_TANH tanhf
#define R_COS cosf
#define R_SIN sinf
#define R_FABS fabsf
#define R_SQRT sqrtf
#elif defined(NN_REAL_IS_DOUBLE)
typedef double real;
#define NN_SFX _f64
#define NN_DTYPE NN_F64
#define NN_BLAS_GEMM NN_BLAS(cblas_dgemm)
#define NN_BLAS_GEMV NN_BLAS(cblas_dgemv)
#define R_EXP exp
#define R_LOG log
#define R_LOG1P log1p
#define R_EXPM1 expm1
#define R_ERFC erfc
#define R_TANH tanh
#define R_COS cos
#define R_SIN sin
#define R_FABS fabs
#define R_SQRT sqrt
#else
#error "define NN_REAL_IS_FLOAT or NN_REAL_IS_DOUBLE before nn_template.h"
#endif

/* NN_VECTOR_CLONES on a hot elementwise loop compiles it twice, for AVX2
 * and for the baseline, and picks one at load time (GCC's target_clones).
 * Only the vector width differs: no FMA, no reassociation, so both give
 * bit-identical results. Off under sanitizers and on other compilers. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_ADDRESS__) &&             \
    !defined(__SANITIZE_THREAD__) &&                                      \
    !defined(NN_NO_CLONES)
#define NN_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NN_VECTOR_CLONES
#endif

/* NN_AVX512_KERNELS: float32 kernels written with AVX-512 intrinsics
 * (the bias gradient in linear.c, softmax cross-entropy in loss.c), each
 * the same operations in the same order as the loop it stands for, so the
 * same bits. nn_simd_level() chooses them at run time, and its cap lets
 * the tests run the loops instead on an AVX-512 machine. */
#if defined(NN_REAL_IS_FLOAT) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__x86_64__) && !defined(NN_NO_CLONES)
#define NN_AVX512_KERNELS 1
#include <immintrin.h>
#endif

/* NN_INLINE on a small helper of such a loop: inlined into each clone,
 * so the helper's loops are compiled for AVX2 too. */
#if defined(__GNUC__)
#define NN_INLINE static inline __attribute__((always_inline))
#else
#define NN_INLINE static inline
#endif

/* NN_SIMD_VARIANTS(name, params, args, body): `static void name params`
 * that runs the always-inline `body args` compiled for AVX-512F, for AVX2
 * or for the baseline, as nn_simd_level() says (gemm_small.c; its cap
 * lets the tests run every path on an AVX-512 machine). For the optimizer
 * rules, whose square roots and divisions bound their speed: a 16-wide
 * divide does twice the work of an 8-wide one on CPUs with 512-bit units.
 * No FMA is formed (-std=c11 keeps -ffp-contract=off) and no sum is
 * reordered, so every path gives the same bits. */
#define NN_CAT_(a, b) a##b
#define NN_CAT(a, b) NN_CAT_(a, b)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(NN_NO_CLONES)
#define NN_SIMD_VARIANTS(name, params, args, body)                          \
    __attribute__((target("avx512f"))) static void NN_CAT(name, _avx512)   \
        params { body args; }                                               \
    __attribute__((target("avx2"))) static void NN_CAT(name, _avx2)        \
        params { body args; }                                               \
    static void NN_CAT(name, _base) params { body args; }                   \
    static void name params                                                 \
    {                                                                       \
        switch (nn_simd_level()) {                                          \
        case NN_SIMD_AVX512: NN_CAT(name, _avx512) args; break;             \
        case NN_SIMD_AVX2: NN_CAT(name, _avx2) args; break;                 \
        default: NN_CAT(name, _base) args; break;                           \
        }                                                                   \
    }
#else
#define NN_SIMD_VARIANTS(name, params, args, body)                          \
    static void name params { body args; }
#endif

/* NN_SPECIALISE16(flags, CALL): CALL(k) for the k in [0, 16) that equals
 * flags. With CALL an always-inline loop taking k as its flags (tests of
 * `k & BIT` in its body), every case compiles its own copy of the loop
 * with those tests folded away: a loop per combination of the options,
 * and no branch inside any. */
#define NN_SPECIALISE16(flags, CALL)                                         \
    switch ((flags) & 15u) {                                                 \
    case 0: CALL(0); break;   case 1: CALL(1); break;                        \
    case 2: CALL(2); break;   case 3: CALL(3); break;                        \
    case 4: CALL(4); break;   case 5: CALL(5); break;                        \
    case 6: CALL(6); break;   case 7: CALL(7); break;                        \
    case 8: CALL(8); break;   case 9: CALL(9); break;                        \
    case 10: CALL(10); break; case 11: CALL(11); break;                      \
    case 12: CALL(12); break; case 13: CALL(13); break;                      \
    case 14: CALL(14); break; default: CALL(15); break;                      \
    }

/* FN(nn_relu) -> nn_relu_f32 or nn_relu_f64 */
#define FN(name) NN_CAT(name, NN_SFX)

#endif /* NN_TEMPLATE_H */
