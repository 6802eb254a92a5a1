/*
 * loss.c (template): losses on a batch of predictions pred (N, C).
 * Every loss is averaged over the batch (the 1/N of the notes) and is
 * accumulated in double. Targets come as labels (N) of class ids or as
 * dense rows T (N, C). dpred (N, C), when given, receives dL/dpred.
 *   softmax cross-entropy  L = 1/N sum_n [ lse(z_n) sum_c T_nc - T_n . z_n ],
 *                          computed shifted: lse - z = log sum e^(z-m) - (z - m)
 *                          dz = (softmax(z) sum_c T_nc - T) / N
 *   NLL on log-probs       L = -1/N sum T . logp,   dlogp = -T / N
 *   binary cross-entropy   L = 1/N sum softplus(z) - y z,  dz = (sigmoid(z) - y) / N
 *   squared error          L = 1/N sum 1/2 (yhat - y)^2,   dyhat = (yhat - y) / N
 * With labels, T is the one-hot row of the label.
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
 * row's exp(z - m), or NULL) into the row's gradient. Returns the row's
 * loss. */
NN_INLINE double FN(xent_row)(real *e, const real *z, real m, double s,
                           const int64_t *labels, const real *T, size_t n,
                           size_t C, double invN)
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
    if (e) {
        /* g = (softmax(z) * sum(t) - t) / N, softmax = e / s */
        real scale = (real)(tsum * invN / s);
        for (c = 0; c < C; c++)
            e[c] *= scale;
        if (labels)
            e[labels[n]] -= (real)invN;
        else
            for (c = 0; c < C; c++)
                e[c] -= (real)((double)T[n * C + c] * invN);
    }
    return row;
}

#define XENT_CHUNK 128

NN_VECTOR_CLONES
static nn_status FN(softmax_xent_rows)(double *sum, real *dpred,
                                       const real *pred,
                                       const int64_t *labels, const real *T,
                                       size_t N, size_t C, double invN)
{
    size_t n, n0, r, c;
    double total = 0;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
    if (!dpred) {
        /* value only: one row at a time, no buffer to write */
        for (n = 0; n < N; n++) {
            const real *z = pred + n * C;
            real m = FN(row_max)(z, C);
            double s = exp(FN(row_log_shifted_sum)(z, C, m));
            total += FN(xent_row)(NULL, z, m, s, labels, T, n, C, invN);
        }
        *sum = total;
        return NN_OK;
    }
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
        for (r = 0; r < rows; r++)
            total += FN(xent_row)(block + r * C, pred + (n0 + r) * C, m[r],
                                  s[r], labels, T, n0 + r, C, invN);
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(nll_rows)(double *sum, real *dpred, const real *pred,
                              const int64_t *labels, const real *T, size_t N,
                              size_t C, double invN)
{
    size_t n, c;
    double total = 0;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        const real *lp = pred + n * C;
        real *g = dpred ? dpred + n * C : NULL;
        if (labels) {
            size_t y = (size_t)labels[n];
            total -= (double)lp[y];
            if (g) {
                for (c = 0; c < C; c++)
                    g[c] = 0;
                g[y] = (real)(-invN);
            }
        } else {
            const real *t = T + n * C;
            for (c = 0; c < C; c++) {
                if (t[c] != 0)
                    total -= (double)t[c] * (double)lp[c];
                if (g)
                    g[c] = (real)(-(double)t[c] * invN);
            }
        }
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(binary_xent_rows)(double *sum, real *dpred,
                                      const real *pred, const real *T,
                                      size_t N, size_t C, double invN)
{
    size_t i, n = N * C;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (i = 0; i < n; i++) {
        double z = pred[i], y = T[i];
        /* softplus(z) - y z, with softplus(z) = max(z,0) + log1p(e^-|z|) */
        total += (z > 0 ? z : 0) + log1p(exp(-fabs(z))) - y * z;
        if (dpred) {
            double s = z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
            dpred[i] = (real)((s - y) * invN);
        }
    }
    *sum = total;
    return NN_OK;
}

static nn_status FN(mse_rows)(double *sum, real *dpred, const real *pred,
                              const real *T, size_t N, size_t C, double invN)
{
    size_t i, n = N * C;
    double total = 0;
    if (!T)
        return NN_ERR_ARG;
    for (i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)T[i];
        total += 0.5 * d * d;
        if (dpred)
            dpred[i] = (real)(d * invN);
    }
    *sum = total;
    return NN_OK;
}

/*
 * Rows [0, N) of a larger batch: *sum receives the sum of their losses and
 * dpred their gradients, scaled by invN (1 / the whole batch's rows), so
 * the parts of a batch split between threads add up to the batch's loss.
 */
nn_status FN(nn_loss_rows)(nn_loss_kind kind, double *sum, real *dpred,
                           const real *pred, const int64_t *labels,
                           const real *T, size_t N, size_t C, double invN)
{
    switch (kind) {
    case NN_LOSS_SOFTMAX_XENT:
        return FN(softmax_xent_rows)(sum, dpred, pred, labels, T, N, C, invN);
    case NN_LOSS_NLL:
        return FN(nll_rows)(sum, dpred, pred, labels, T, N, C, invN);
    case NN_LOSS_BINARY_XENT:
        return FN(binary_xent_rows)(sum, dpred, pred, T, N, C, invN);
    case NN_LOSS_MSE:
        return FN(mse_rows)(sum, dpred, pred, T, N, C, invN);
    }
    return NN_ERR_ARG;
}

/* The whole batch: the mean loss (nn_loss_eval) */
nn_status FN(nn_loss_mean)(nn_loss_kind kind, double *loss, real *dpred,
                           const real *pred, const int64_t *labels,
                           const real *T, size_t N, size_t C)
{
    double invN = 1.0 / (double)N, sum = 0;
    nn_status st = FN(nn_loss_rows)(kind, &sum, dpred, pred, labels, T, N,
                                    C, invN);
    if (st == NN_OK)
        *loss = sum * invN;
    return st;
}

static size_t FN(row_argmax)(const real *z, size_t C)
{
    size_t c, best = 0;
    for (c = 1; c < C; c++)
        if (z[c] > z[best])
            best = c;
    return best;
}

size_t FN(nn_count_correct)(const real *pred, const int64_t *labels,
                            const real *T, size_t N, size_t C)
{
    size_t n, correct = 0;
    for (n = 0; n < N; n++) {
        const real *p = pred + n * C;
        if (C == 1) {
            int yes = labels ? labels[n] == 1 : T[n] > (real)0.5;
            correct += (p[0] > 0) == yes;
        } else {
            size_t guess = FN(row_argmax)(p, C);
            size_t truth = labels ? (size_t)labels[n]
                                  : FN(row_argmax)(T + n * C, C);
            correct += guess == truth;
        }
    }
    return correct;
}
