/*
 * softmax.c (template): row-wise softmax and log-softmax, both shifted by
 * the row maximum so no exp() overflows.
 *   softmax      a = e^(z - m) / sum e^(z - m)
 *                dz = a * (da - sum_j da_j a_j)
 *   log-softmax  a = (z - m) - log sum e^(z - m)   (m never added back)
 *                dz = da - e^a * sum_j da_j
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

static real FN(row_max)(const real *z, size_t C)
{
    /* branch-free: a select per value, NaN noted on the side (any NaN
     * makes the row's maximum NaN) */
    size_t c;
    real m = z[0];
    int nan = z[0] != z[0];
    for (c = 1; c < C; c++) {
        real v = z[c];
        m = v > m ? v : m;
        nan |= v != v;
    }
    return nan ? (real)NAN : m;
}

/* log sum_c e^(z_c - m) for one row with maximum m: the log-normaliser
 * of the shifted row. Keeping m apart (rather than adding it back) means
 * z - lse is computed as (z - m) - this, which stays exact when the logits
 * are huge. An infinite m gives NaN (z - m = inf - inf), as in Softmax
 * and NumPy's shifted formula. */
static double FN(row_log_shifted_sum)(const real *z, size_t C, double m)
{
    size_t c;
    double s = 0;
    for (c = 0; c < C; c++)
        s += exp((double)z[c] - m);
    return log(s);
}

void FN(nn_softmax_forward)(real *out, const real *inp, size_t N, size_t C)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *z = inp + n * C;
        real *a = out + n * C;
        real m = FN(row_max)(z, C);
        real s = 0;
        for (c = 0; c < C; c++) {
            a[c] = R_EXP(z[c] - m);
            s += a[c];
        }
        for (c = 0; c < C; c++)
            a[c] /= s;
    }
}

void FN(nn_softmax_backward)(real *dinp, const real *dout, const real *out,
                             size_t N, size_t C)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *da = dout + n * C, *a = out + n * C;
        real *dz = dinp + n * C;
        real dot = 0;
        for (c = 0; c < C; c++)
            dot += da[c] * a[c];
        for (c = 0; c < C; c++)
            dz[c] = a[c] * (da[c] - dot);
    }
}

void FN(nn_log_softmax_forward)(real *out, const real *inp, size_t N,
                                size_t C)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *z = inp + n * C;
        real *a = out + n * C;
        double m = FN(row_max)(z, C);
        double ls = FN(row_log_shifted_sum)(z, C, m);
        /* (z - m) - log sum e^(z - m), in double */
        for (c = 0; c < C; c++)
            a[c] = (real)(((double)z[c] - m) - ls);
    }
}

void FN(nn_log_softmax_backward)(real *dinp, const real *dout,
                                 const real *out, size_t N, size_t C)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *da = dout + n * C, *a = out + n * C;
        real *dz = dinp + n * C;
        real sum = 0;
        for (c = 0; c < C; c++)
            sum += da[c];
        for (c = 0; c < C; c++)
            dz[c] = da[c] - R_EXP(a[c]) * sum;
    }
}
