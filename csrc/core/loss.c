/*
 * loss.c (template): losses and metrics on a batch of predictions pred
 * (N, C). Every loss is averaged over the batch (the 1/N of the notes),
 * with an optional weight w[n] per row, and is accumulated in double.
 * Targets come as labels (N) of class ids or as dense rows T (N, C).
 * dpred (N, C) receives dL/dpred (times a loss weight when several losses
 * add up).
 *   softmax cross-entropy  L = 1/N sum_n [ lse(z_n) sum_c T_nc - T_n . z_n ],
 *                          computed shifted: lse - z = log sum e^(z-m) - (z - m)
 *                          dz = (softmax(z) sum_c T_nc - T) / N
 *   NLL on log-probs       L = -1/N sum T . logp,   dlogp = -T / N
 *   binary cross-entropy   L = 1/N sum softplus(z) - y z,  dz = (sigmoid(z) - y) / N
 *   squared error          L = 1/N sum 1/2 (yhat - y)^2,   dyhat = (yhat - y) / N
 * On probabilities (Keras's from_logits=False), clip(u) = u clipped to
 * [eps, 1 - eps], eps = NN_PROB_EPS, whose derivative is 0 outside:
 *   categorical            u = p / sum_c p_c (per row), q = clip(u),
 *                          L = -1/N sum_n T_n . log q_n
 *                          a_c = dL/du_c = -T_c / u_c where u_c is not
 *                          clipped, else 0
 *                          dp_k = (a_k - sum_c a_c u_c) / (N sum_c p_c)
 *   binary                 q = clip(p), summed over the C outputs:
 *                          L = -1/N sum [y log q + (1 - y) log(1 - q)]
 *                          dp = (q - y) / (q (1 - q)) / N where p is not
 *                          clipped, else 0
 * The mean over all N C elements (torch's and Keras's regression losses),
 * d = yhat - y:
 *   Huber (delta)          L = 1/(N C) sum [|d| <= delta ? d^2 / 2
 *                                           : delta (|d| - delta / 2)]
 *                          dyhat = clamp(d, -delta, delta) / (N C)
 *   absolute error         L = 1/(N C) sum |d|,   dyhat = sign(d) / (N C),
 *                          sign(0) = 0 (torch's subgradient)
 * With labels, T is the one-hot row of the label. NaN in a prediction
 * gives a NaN loss (and gradient) in every kind.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

static nn_status FN(check_labels)(const int64_t *labels, size_t N, size_t C)
{
    size_t n;
    for (n = 0; n < N; n++)
        if (labels[n] < 0 || (uint64_t)labels[n] >= (uint64_t)C)
            return NN_ERR_LABEL;
    return NN_OK;
}

#ifdef NN_REAL_IS_FLOAT
#ifndef NN_EXP_NONPOSITIVE_DEFINED
#define NN_EXP_NONPOSITIVE_DEFINED
/*
 * v[i] = exp(v[i]) in place, for v[i] <= 0 (or NaN): the shifted logits of
 * a softmax. Written as straight-line selects so the loop vectorises,
 * unlike libm's expf:
 *   v = k ln2 + r, k = round(v / ln2), |r| <= ln2 / 2 (ln2 split in a
 *   short high part and a low part, so k * ln2_hi is exact)
 *   e^r by its Taylor series to r^7 (truncation < 6e-8 relative)
 *   e^v = 2^k e^r, 2^k built from its exponent bits
 * Below -87 the result (< FLT_MIN) is flushed to 0; NaN stays NaN.
 * Checked against expf over [-87, 0] in tests/test_losses.py.
 */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void nn_exp_nonpositive_f32(float *v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float x = v[i];
        float xc = x > -87.0f ? x : -87.0f;   /* NaN -> -87: safe below */
        float k = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
        float r = (xc - k * 0.693359375f) - k * -2.12194440e-4f;
        float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f +
                  r * (4.16666679e-2f + r * (8.33333377e-3f +
                  r * (1.38888892e-3f + r * 1.98412701e-4f))))));
        int32_t bits = ((int32_t)k + 127) * (1 << 23);
        float scale, res;
        memcpy(&scale, &bits, sizeof scale);
        res = x > -87.0f ? p * scale : 0.0f;
        v[i] = x != x ? x : res;
    }
}
#endif
#define ROW_EXP(e, C) nn_exp_nonpositive_f32((e), (C))
#else
#define ROW_EXP(e, C)                                                      \
    do {                                                                   \
        size_t c_;                                                         \
        for (c_ = 0; c_ < (C); c_++)                                       \
            (e)[c_] = R_EXP((e)[c_]);                                      \
    } while (0)
#endif

/* Loss of row n given its max m and s = sum exp(z - m); turns e (the
 * row's exp(z - m)) into the row's gradient times gs. Returns the row's
 * loss. */
NN_INLINE double FN(xent_row)(real *e, const real *z, real m, double s,
                           const int64_t *labels, const real *T, size_t n,
                           size_t C, double gs)
{
    size_t c;
    /* Shifted form: lse - z = log s - (z - m), never adding m back, so
     * huge logits lose nothing. A row with an infinite maximum gives NaN
     * (inf - inf), as the shifted formula does in NumPy and in Softmax. */
    double ls = log(s), tsum = 1, row = 0;
    if (labels) {
        row = ls - ((double)z[labels[n]] - (double)m);
    } else {
        const real *t = T + n * C;
        tsum = 0;
        for (c = 0; c < C; c++) {
            tsum += t[c];
            if (t[c] != 0)
                row -= (double)t[c] * ((double)z[c] - (double)m);
        }
        row += ls * tsum;
    }
    {
        /* g = (softmax(z) * sum(t) - t) gs, softmax = e / s */
        real scale = (real)(tsum * gs / s);
        for (c = 0; c < C; c++)
            e[c] *= scale;
        if (labels)
            e[labels[n]] -= (real)gs;
        else
            for (c = 0; c < C; c++)
                e[c] -= (real)((double)T[n * C + c] * gs);
    }
    return row;
}

#define XENT_CHUNK 128

/* The gradient scale of row n: scale, times w[n] when weighted */
#define ROW_SCALE(w, n, scale) ((w) ? (double)(w)[n] * (scale) : (scale))
#define ROW_WEIGHT(w, n) ((w) ? (double)(w)[n] : 1.0)

#ifdef NN_AVX512_KERNELS
/*
 * Softmax cross-entropy on rows of at most 16 classes (an output layer's
 * usual width) with AVX-512: each row is one vector under a mask, where
 * the loops over C of the code below run a few lanes at a time and spend
 * most of their time on loop overhead and remainders. Same steps as
 * softmax_xent_rows with labels, in the same order: the same bits.
 */

/* nn_exp_nonpositive_f32 on 16 lanes, operation for operation */
__attribute__((target("avx512f"), always_inline)) static inline __m512
exp_nonpositive_x16(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-87.0f), sh = _mm512_set1_ps(12582912.0f);
    __mmask16 above = _mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ);   /* NaN: 0 */
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_mask_blend_ps(above, lo, x);
    __m512 k = _mm512_sub_ps(
        _mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504f)), sh), sh);
    __m512 r = _mm512_sub_ps(
        _mm512_sub_ps(xc, _mm512_mul_ps(k, _mm512_set1_ps(0.693359375f))),
        _mm512_mul_ps(k, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.98412701e-4f);
    __m512i bits;
    p = _mm512_add_ps(_mm512_set1_ps(1.38888892e-3f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(8.33333377e-3f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(4.16666679e-2f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(1.66666672e-1f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(0.5f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
    bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127)), 23);
    p = _mm512_maskz_mul_ps(above, p, _mm512_castsi512_ps(bits));
    return _mm512_mask_blend_ps(nan, p, x);
}

/* e (n) = exp(e) in place, e <= 0 or NaN */
__attribute__((target("avx512f"), always_inline)) static inline void
exp_nonpositive_block_x16(float *e, size_t n)
{
    size_t i;
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(e + i, exp_nonpositive_x16(_mm512_loadu_ps(e + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(
            e + i, m, exp_nonpositive_x16(_mm512_maskz_loadu_ps(m, e + i)));
    }
}

/* The labels case of softmax_xent_rows for 1 <= C <= 16; returns the sum
 * of the (weighted) row losses */
__attribute__((target("avx512f"))) static double
softmax_xent_narrow_avx512(float *dpred, const float *pred,
                           const int64_t *labels, const float *w, size_t N,
                           size_t C, double scale)
{
    const __mmask16 row = (__mmask16)((1u << C) - 1);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    size_t n0, r;
    double total = 0;
    for (n0 = 0; n0 < N; n0 += XENT_CHUNK) {
        size_t rows = N - n0 < XENT_CHUNK ? N - n0 : XENT_CHUNK;
        float m[XENT_CHUNK];
        double s[XENT_CHUNK];
        float *block = dpred + n0 * C;
        /* shifted logits z - max(z), a row per vector */
        for (r = 0; r < rows; r++) {
            __m512 z = _mm512_maskz_loadu_ps(row, pred + (n0 + r) * C);
            m[r] = _mm512_reduce_max_ps(_mm512_mask_mov_ps(ninf, row, z));
            _mm512_mask_storeu_ps(block + r * C, row,
                                  _mm512_sub_ps(z, _mm512_set1_ps(m[r])));
        }
        exp_nonpositive_block_x16(block, rows * C);
        for (r = 0; r < rows; r++)
            s[r] = row_sum_f32(block + r * C, C);
        for (r = 0; r < rows; r++) {
            size_t n = n0 + r;
            double gs = ROW_SCALE(w, n, scale);
            total += ROW_WEIGHT(w, n) *
                     xent_row_f32(block + r * C, pred + n * C, m[r], s[r],
                                  labels, NULL, n, C, gs);
        }
    }
    return total;
}
#endif

NN_VECTOR_CLONES
static nn_status FN(softmax_xent_rows)(double *sum, real *dpred,
                                       const real *pred,
                                       const int64_t *labels, const real *T,
                                       const real *w, size_t N, size_t C,
                                       double scale)
{
    size_t n0, r, c;
    double total = 0;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
#ifdef NN_AVX512_KERNELS
    if (labels && C >= 1 && C <= 16 && nn_simd_level() == NN_SIMD_AVX512) {
        *sum = softmax_xent_narrow_avx512(dpred, pred, labels, w, N, C, scale);
        return NN_OK;
    }
#endif
    /* Chunks of rows: shifted logits for the whole chunk, one exp pass
     * over its block (long vector loops even for narrow rows), then each
     * row's loss and gradient. */
    for (n0 = 0; n0 < N; n0 += XENT_CHUNK) {
        size_t rows = N - n0 < XENT_CHUNK ? N - n0 : XENT_CHUNK;
        real m[XENT_CHUNK];
        double s[XENT_CHUNK];
        real *block = dpred + n0 * C;
        for (r = 0; r < rows; r++) {
            const real *z = pred + (n0 + r) * C;
            real *d = block + r * C;
            m[r] = FN(row_max)(z, C);
            for (c = 0; c < C; c++)
                d[c] = z[c] - m[r];
        }
        ROW_EXP(block, rows * C);
        /* the row sums in a loop of their own: independent rows, so
         * they overlap in the pipeline instead of waiting on each log */
        for (r = 0; r < rows; r++)
            s[r] = FN(row_sum)(block + r * C, C);
        if (w) {
            for (r = 0; r < rows; r++) {
                size_t n = n0 + r;
                total += (double)w[n] *
                         FN(xent_row)(block + r * C, pred + n * C, m[r], s[r],
                                      labels, T, n, C, (double)w[n] * scale);
            }
        } else {
            for (r = 0; r < rows; r++)
                total += FN(xent_row)(block + r * C, pred + (n0 + r) * C,
                                      m[r], s[r], labels, T, n0 + r, C,
                                      scale);
        }
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(nll_rows)(double *sum, real *dpred, const real *pred,
                              const int64_t *labels, const real *T,
                              const real *w, size_t N, size_t C,
                              double scale)
{
    size_t n, c;
    double total = 0;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        const real *lp = pred + n * C;
        real *g = dpred + n * C;
        double gs = ROW_SCALE(w, n, scale), row = 0;
        if (labels) {
            size_t y = (size_t)labels[n];
            row = -(double)lp[y];
            for (c = 0; c < C; c++)
                g[c] = 0;
            g[y] = (real)(-gs);
        } else {
            const real *t = T + n * C;
            for (c = 0; c < C; c++) {
                if (t[c] != 0)
                    row -= (double)t[c] * (double)lp[c];
                g[c] = (real)(-(double)t[c] * gs);
            }
        }
        total += ROW_WEIGHT(w, n) * row;
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(binary_xent_rows)(double *sum, real *dpred,
                                      const real *pred, const real *T,
                                      const real *w, size_t N, size_t C,
                                      double scale)
{
    size_t n, c;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        double gs = ROW_SCALE(w, n, scale), row = 0;
        for (c = 0; c < C; c++) {
            size_t i = n * C + c;
            double z = pred[i], y = T[i];
            double s = z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
            /* softplus(z) - y z, softplus(z) = max(z,0) + log1p(e^-|z|) */
            row += (z > 0 ? z : 0) + log1p(exp(-fabs(z))) - y * z;
            dpred[i] = (real)((s - y) * gs);
        }
        total += ROW_WEIGHT(w, n) * row;
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(mse_rows)(double *sum, real *dpred, const real *pred,
                              const real *T, const real *w, size_t N,
                              size_t C, double scale)
{
    size_t n, c;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        double gs = ROW_SCALE(w, n, scale), row = 0;
        for (c = 0; c < C; c++) {
            size_t i = n * C + c;
            double d = (double)pred[i] - (double)T[i];
            row += 0.5 * d * d;
            dpred[i] = (real)(d * gs);
        }
        total += ROW_WEIGHT(w, n) * row;
    }
    *sum = total;
    return NN_OK;
}

/* Row n's target at class c: T[n, c], or the one-hot row of labels[n] */
NN_INLINE double FN(target_at)(const int64_t *labels, const real *T,
                               size_t n, size_t C, size_t c)
{
    return labels ? (double)((uint64_t)labels[n] == (uint64_t)c)
                  : (double)T[n * C + c];
}

/* Whether clip() lets u through (its derivative is 1 there): NaN does */
NN_INLINE int FN(prob_passes)(double u)
{
    return !(u < NN_PROB_EPS || u > 1 - NN_PROB_EPS);
}

/* u clipped to [eps, 1 - eps]; NaN stays NaN */
NN_INLINE double FN(prob_clip)(double u)
{
    return u < NN_PROB_EPS ? NN_PROB_EPS
                           : (u > 1 - NN_PROB_EPS ? 1 - NN_PROB_EPS : u);
}

/* Row n of the cross-entropy on probabilities p (C): returns its loss,
 * its gradient times gs into g (see the header for the formulas). */
static double FN(categorical_row)(real *g, const real *p,
                                  const int64_t *labels, const real *T,
                                  size_t n, size_t C, double gs)
{
    size_t c;
    double S = 0, row = 0, au = 0;   /* au = sum_c a_c u_c */
    for (c = 0; c < C; c++)
        S += (double)p[c];
    for (c = 0; c < C; c++) {
        double t = FN(target_at)(labels, T, n, C, c), u = (double)p[c] / S;
        row -= t * log(FN(prob_clip)(u));
        if (FN(prob_passes)(u))
            au -= t;   /* a_c u_c = -t_c */
    }
    for (c = 0; c < C; c++) {
        double t = FN(target_at)(labels, T, n, C, c), u = (double)p[c] / S;
        double a = FN(prob_passes)(u) ? -t / u : 0;
        g[c] = (real)((a - au) / S * gs);
    }
    return row;
}

static nn_status FN(categorical_xent_rows)(double *sum, real *dpred,
                                           const real *pred,
                                           const int64_t *labels,
                                           const real *T, const real *w,
                                           size_t N, size_t C, double scale)
{
    size_t n;
    double total = 0;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++)
        total += ROW_WEIGHT(w, n) *
                 FN(categorical_row)(dpred + n * C, pred + n * C, labels, T,
                                     n, C, ROW_SCALE(w, n, scale));
    *sum = total;
    return NN_OK;
}

static nn_status FN(binary_xent_probs_rows)(double *sum, real *dpred,
                                            const real *pred, const real *T,
                                            const real *w, size_t N,
                                            size_t C, double scale)
{
    size_t n, c;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        double gs = ROW_SCALE(w, n, scale), row = 0;
        for (c = 0; c < C; c++) {
            size_t i = n * C + c;
            double p = pred[i], y = T[i], q = FN(prob_clip)(p);
            row -= y * log(q) + (1 - y) * log1p(-q);
            dpred[i] = FN(prob_passes)(p)
                           ? (real)((q - y) / (q * (1 - q)) * gs)
                           : 0;
        }
        total += ROW_WEIGHT(w, n) * row;
    }
    *sum = total;
    return NN_OK;
}

/* Huber (delta > 0) or, with delta 0, absolute error: their value at d
 * and their derivative into *g */
NN_INLINE double FN(robust_elem)(double d, double delta, double *g)
{
    double a = fabs(d);
    if (delta == 0) {
        *g = d > 0 ? 1 : (d < 0 ? -1 : d);   /* sign(0) = 0, NaN stays */
        return a;
    }
    *g = d < -delta ? -delta : (d > delta ? delta : d);
    return a <= delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
}

/* Huber (delta > 0) or absolute error (delta 0), averaged over all N C
 * elements: each row's loss is the mean over its outputs */
static nn_status FN(robust_rows)(double *sum, real *dpred, const real *pred,
                                 const real *T, const real *w, size_t N,
                                 size_t C, double scale, double delta)
{
    size_t n, c;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        double gs = ROW_SCALE(w, n, scale) / (double)C, row = 0;
        for (c = 0; c < C; c++) {
            size_t i = n * C + c;
            double g;
            row += FN(robust_elem)((double)pred[i] - (double)T[i], delta, &g);
            dpred[i] = (real)(g * gs);
        }
        total += ROW_WEIGHT(w, n) * row / (double)C;
    }
    *sum = total;
    return NN_OK;
}

/*
 * Rows [0, N), maybe of a larger batch: *sum receives the (weighted) sum
 * of their losses and dpred their gradients times scale (1 / the whole
 * batch's rows, times the loss's weight), so the parts of a batch split
 * between threads add up to the batch's loss. arg: Huber's delta (> 0).
 */
nn_status FN(nn_loss_rows)(nn_loss_kind kind, double arg, double *sum,
                           real *dpred, const real *pred,
                           const int64_t *labels, const real *T,
                           const real *w, size_t N, size_t C, double scale)
{
    switch (kind) {
    case NN_LOSS_SOFTMAX_XENT:
        return FN(softmax_xent_rows)(sum, dpred, pred, labels, T, w, N, C,
                                     scale);
    case NN_LOSS_NLL:
        return FN(nll_rows)(sum, dpred, pred, labels, T, w, N, C, scale);
    case NN_LOSS_BINARY_XENT:
        return FN(binary_xent_rows)(sum, dpred, pred, T, w, N, C, scale);
    case NN_LOSS_MSE:
        return FN(mse_rows)(sum, dpred, pred, T, w, N, C, scale);
    case NN_LOSS_CATEGORICAL_XENT:
        return FN(categorical_xent_rows)(sum, dpred, pred, labels, T, w, N,
                                         C, scale);
    case NN_LOSS_BINARY_XENT_PROBS:
        return FN(binary_xent_probs_rows)(sum, dpred, pred, T, w, N, C,
                                          scale);
    case NN_LOSS_HUBER:
        if (!(arg > 0 && isfinite(arg)))
            return NN_ERR_ARG;
        return FN(robust_rows)(sum, dpred, pred, T, w, N, C, scale, arg);
    case NN_LOSS_MAE:
        return FN(robust_rows)(sum, dpred, pred, T, w, N, C, scale, 0);
    default:
        return NN_ERR_ARG;
    }
}

/* Index of the largest value of z (C), the first one on ties; C if the
 * row holds a NaN (such a row is never classified right). */
static size_t FN(row_argmax)(const real *z, size_t C)
{
    size_t c, best = 0;
    for (c = 0; c < C; c++) {
        if (z[c] != z[c])
            return C;
        if (z[c] > z[best])
            best = c;
    }
    return best;
}

size_t FN(nn_count_correct)(const real *pred, const int64_t *labels,
                            const real *T, size_t N, size_t C,
                            double threshold)
{
    size_t n, correct = 0;
    for (n = 0; n < N; n++) {
        const real *p = pred + n * C;
        if (C == 1) {
            int yes = labels ? labels[n] == 1 : T[n] > (real)0.5;
            correct += p[0] == p[0] && ((double)p[0] > threshold) == yes;
        } else {
            size_t guess = FN(row_argmax)(p, C);
            size_t truth = labels ? (size_t)labels[n]
                                  : FN(row_argmax)(T + n * C, C);
            correct += guess < C && guess == truth;
        }
    }
    return correct;
}

/* ---- metrics ---- */

/* Mean over the row's outputs of (p - t)^2 (squared 1) or |p - t| */
static double FN(row_error)(const real *p, const int64_t *labels,
                            const real *T, size_t n, size_t C, int squared)
{
    size_t c;
    double acc = 0;
    for (c = 0; c < C; c++) {
        double d = (double)p[c] - FN(target_at)(labels, T, n, C, c);
        acc += squared ? d * d : fabs(d);
    }
    return acc / (double)C;
}

/* Fraction of the row's outputs on the target's side of the threshold */
static double FN(row_binary_accuracy)(const real *p, const int64_t *labels,
                                      const real *T, size_t n, size_t C,
                                      double threshold)
{
    size_t c, right = 0;
    for (c = 0; c < C; c++) {
        int yes = FN(target_at)(labels, T, n, C, c) > 0.5;
        right += p[c] == p[c] && ((double)p[c] > threshold) == yes;
    }
    return (double)right / (double)C;
}

/* 1 when class `truth` is among the k largest of p (C): fewer than k
 * values are larger. 0 for a row holding a NaN or truth >= C. */
static double FN(row_in_top_k)(const real *p, size_t truth, size_t C,
                               size_t k)
{
    size_t c, above = 0;
    for (c = 0; c < C; c++)
        if (p[c] != p[c])
            return 0;
    if (truth >= C)
        return 0;
    if (C <= k)
        return 1;
    for (c = 0; c < C; c++)
        above += p[c] > p[truth];
    return above < k;
}

static double FN(metric_row)(nn_metric_kind kind, const real *p,
                             const int64_t *labels, const real *T, size_t n,
                             size_t C, double threshold)
{
    switch (kind) {
    case NN_METRIC_MSE:
        return FN(row_error)(p, labels, T, n, C, 1);
    case NN_METRIC_MAE:
        return FN(row_error)(p, labels, T, n, C, 0);
    case NN_METRIC_BINARY_ACCURACY:
        return FN(row_binary_accuracy)(p, labels, T, n, C, threshold);
    default:   /* NN_METRIC_TOP_K */
        return FN(row_in_top_k)(p,
                                labels ? (size_t)labels[n]
                                       : FN(row_argmax)(T + n * C, C),
                                C, NN_TOP_K);
    }
}

nn_status FN(nn_metric_rows)(nn_metric_kind kind, double *sum,
                             const real *pred, const int64_t *labels,
                             const real *T, const real *w, size_t N,
                             size_t C, double threshold)
{
    size_t n;
    double total = 0;
    if ((unsigned)kind >= NN_METRIC_COUNT || (!labels && !T))
        return NN_ERR_ARG;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    for (n = 0; n < N; n++)
        total += ROW_WEIGHT(w, n) * FN(metric_row)(kind, pred + n * C, labels,
                                                   T, n, C, threshold);
    *sum = total;
    return NN_OK;
}
