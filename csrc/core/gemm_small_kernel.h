/*
 * gemm_small_kernel.h (template): the unpacked float32 product of
 * gemm_small.c for one instruction set, included once per set with these
 * macros defined:
 *   SK(name)        name with the set's suffix (block_avx2, ...)
 *   SK_TARGET       the GCC target string ("avx2,fma", "avx512f")
 *   SK_LANES        floats per vector (8 or 16)
 *   SK_ROWS         rows of C per block of two-vector panels (6 or 8: as
 *                   many accumulators as the set's registers hold)
 *   SK_ROWS1        rows of C per block of one-vector panels (8: enough
 *                   independent sums to hide the multiply-add latency)
 *   sk_vec, sk_mask the vector and tail-mask types
 *   SK_ZERO() SK_SET1(x) SK_LOADU(p) SK_STOREU(p, v) SK_FMA(a, b, c)
 *   SK_MUL(a, b) SK_TAIL(n) SK_LOADM(m, p) SK_STOREM(p, m, v)
 *                   (SK_TAIL(n): the mask of the first n lanes, 0 < n <= lanes;
 *                   masked lanes are neither read nor written)
 *
 * Every element of C is the same sequence of roundings on every set:
 * acc = fma(a[k], b[k], acc) for k = 0, 1, ..., K - 1 from acc = 0, then
 * alpha * acc, then fma(beta, c, that) when beta != 0, where c is C's
 * value or, when a row c0 is given, c0[j] (C is then not read: a bias
 * starts every row). Only the number of lanes differs, so the sets give
 * bitwise identical products.
 */

#define SK_KERNEL static inline __attribute__((always_inline, target(SK_TARGET)))

/* The loops over a block's rows and vectors are unrolled by hand: left
 * to itself GCC keeps the accumulator array in memory for some (R, W,
 * TAIL), storing every accumulator at every k, which makes those blocks
 * several times slower (a partial second vector: N % 32 in 17..31 with
 * AVX-512, N % 16 in 9..15 with AVX2). */
#define SK_UNROLL _Pragma("GCC unroll 16")
#define SK_ROWS_MAX (SK_ROWS1 > SK_ROWS ? SK_ROWS1 : SK_ROWS)

/*
 * One block of C: rows i .. i + R - 1 (R = SK_ROWS, SK_ROWS1, 4 or 1), W
 * vectors of columns from j (W = 1 or 2), the last of them masked to
 * `tail` when TAIL.
 * A (M, K) row-major, or (K, M) when TA; B (K, N) row-major; c0 (N) or
 * NULL: C's starting row.
 */
SK_KERNEL void SK(block)(const int R, const int W, const int TAIL,
                         const int TA, size_t K, float alpha, const float *A,
                         size_t lda, size_t i, const float *B, size_t ldb,
                         size_t j, sk_mask tail, float beta, const float *c0,
                         float *C, size_t ldc)
{
    sk_vec acc[SK_ROWS_MAX][2];
    size_t k;
    int r, w;
    SK_UNROLL
    for (r = 0; r < R; r++)
        SK_UNROLL
        for (w = 0; w < W; w++)
            acc[r][w] = SK_ZERO();
    for (k = 0; k < K; k++) {
        const float *brow = B + k * ldb + j;
        sk_vec b[2];
        SK_UNROLL
        for (w = 0; w < W; w++)
            b[w] = (TAIL && w == W - 1) ? SK_LOADM(tail, brow + SK_LANES * w)
                                        : SK_LOADU(brow + SK_LANES * w);
        SK_UNROLL
        for (r = 0; r < R; r++) {
            sk_vec a = SK_SET1(TA ? A[k * lda + i + r] : A[(i + r) * lda + k]);
            SK_UNROLL
            for (w = 0; w < W; w++)
                acc[r][w] = SK_FMA(a, b[w], acc[r][w]);
        }
    }
    SK_UNROLL
    for (r = 0; r < R; r++) {
        float *crow = C + (i + r) * ldc + j;
        const float *start = c0 ? c0 + j : crow;
        SK_UNROLL
        for (w = 0; w < W; w++) {
            const int masked = TAIL && w == W - 1;
            sk_vec v = SK_MUL(SK_SET1(alpha), acc[r][w]);
            if (beta != 0)   /* beta == 0 overwrites, even a NaN */
                v = SK_FMA(SK_SET1(beta),
                           masked ? SK_LOADM(tail, start + SK_LANES * w)
                                  : SK_LOADU(start + SK_LANES * w),
                           v);
            if (masked)
                SK_STOREM(crow + SK_LANES * w, tail, v);
            else
                SK_STOREU(crow + SK_LANES * w, v);
        }
    }
}

/* Columns j .. j + W vectors of every row of C: two-vector panels
 * SK_ROWS rows at a time, one-vector panels SK_ROWS1 (enough sums in
 * flight to hide the multiply-add's latency), then 4 rows, then 1. */
SK_KERNEL void SK(column_panel)(const int W, const int TAIL, const int TA,
                                size_t M, size_t K, float alpha,
                                const float *A, size_t lda, const float *B,
                                size_t ldb, size_t j, sk_mask tail,
                                float beta, const float *c0, float *C,
                                size_t ldc)
{
    size_t i = 0;
    if (W == 2)
        for (; i + SK_ROWS <= M; i += SK_ROWS)
            SK(block)(SK_ROWS, W, TAIL, TA, K, alpha, A, lda, i, B, ldb, j,
                      tail, beta, c0, C, ldc);
    else
        for (; i + SK_ROWS1 <= M; i += SK_ROWS1)
            SK(block)(SK_ROWS1, W, TAIL, TA, K, alpha, A, lda, i, B, ldb, j,
                      tail, beta, c0, C, ldc);
    for (; i + 4 <= M; i += 4)
        SK(block)(4, W, TAIL, TA, K, alpha, A, lda, i, B, ldb, j, tail, beta,
                  c0, C, ldc);
    for (; i < M; i++)
        SK(block)(1, W, TAIL, TA, K, alpha, A, lda, i, B, ldb, j, tail, beta,
                  c0, C, ldc);
}

/*
 * All of C: panels of two whole vectors, then what is left (1 to 2 vectors
 * wide), its last vector masked when N is not a multiple of the lanes.
 */
SK_KERNEL void SK(all_panels)(const int TA, size_t M, size_t N, size_t K,
                              float alpha, const float *A, size_t lda,
                              const float *B, size_t ldb, float beta,
                              const float *c0, float *C, size_t ldc)
{
    const size_t two = 2 * SK_LANES;
    size_t j, left, part;
    sk_mask tail;
    for (j = 0; j + two <= N; j += two)
        SK(column_panel)(2, 0, TA, M, K, alpha, A, lda, B, ldb, j, SK_TAIL(1),
                         beta, c0, C, ldc);
    left = N - j;                       /* 0 <= left < 2 vectors */
    if (left == 0)
        return;
    part = left % SK_LANES;             /* lanes of a partial last vector */
    tail = SK_TAIL(part ? part : SK_LANES);
    if (left > SK_LANES)
        SK(column_panel)(2, part != 0, TA, M, K, alpha, A, lda, B, ldb, j,
                         tail, beta, c0, C, ldc);
    else
        SK(column_panel)(1, part != 0, TA, M, K, alpha, A, lda, B, ldb, j,
                         tail, beta, c0, C, ldc);
}

/* C (M, N) = alpha op(A) op(B) + beta C for a shape gemm_small.c accepted:
 * a transposed B is first copied back (B^T, at most NN_SMALL_BT_MAX values)
 * to the stack, so that op(B) is read by rows. */
__attribute__((target(SK_TARGET))) static void
SK(small_sgemm)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                float alpha, const float *A, size_t lda, const float *B,
                size_t ldb, float beta, const float *c0, float *C, size_t ldc)
{
    float bt[NN_SMALL_BT_MAX];
    if (trans_b) {
        /* B is (N, K): bt (K, N) = B^T */
        size_t k, j;
        for (k = 0; k < K; k++)
            for (j = 0; j < N; j++)
                bt[k * N + j] = B[j * ldb + k];
        B = bt;
        ldb = N;
    }
    if (trans_a)
        SK(all_panels)(1, M, N, K, alpha, A, lda, B, ldb, beta, c0, C, ldc);
    else
        SK(all_panels)(0, M, N, K, alpha, A, lda, B, ldb, beta, c0, C, ldc);
}

#undef SK_KERNEL
#undef SK_UNROLL
#undef SK_ROWS_MAX
