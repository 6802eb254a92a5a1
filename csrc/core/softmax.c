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

#define NN_LANES 8

/*
 * Largest value of z (C), C >= 1, in NN_LANES independent running maxima
 * so the loop vectorises (one chain of compares would not). A NaN may or
 * may not come out as the maximum; callers do not depend on it: the NaN
 * reaches the row's sum of exponentials, and so every value of the row,
 * either way.
 */
NN_INLINE real FN(row_max)(const real *z, size_t C)
{
    real lane[NN_LANES], m;
    size_t c, j;
    if (C < NN_LANES) {
        m = z[0];
        for (c = 1; c < C; c++)
            m = z[c] > m ? z[c] : m;
        return m;
    }
    for (j = 0; j < NN_LANES; j++)
        lane[j] = z[j];
    for (c = NN_LANES; c + NN_LANES <= C; c += NN_LANES)
        for (j = 0; j < NN_LANES; j++)
            lane[j] = z[c + j] > lane[j] ? z[c + j] : lane[j];
    for (; c < C; c++)
        lane[0] = z[c] > lane[0] ? z[c] : lane[0];
    m = lane[0];
    for (j = 1; j < NN_LANES; j++)
        m = lane[j] > m ? lane[j] : m;
    return m;
}

/* Sum of e (C) in double, in NN_LANES independent partial sums (one
 * chain of dependent adds would cost an add's latency per value). */
NN_INLINE double FN(row_sum)(const real *e, size_t C)
{
    double lane[NN_LANES] = {0}, s = 0;
    size_t c, j;
    for (c = 0; c + NN_LANES <= C; c += NN_LANES)
        for (j = 0; j < NN_LANES; j++)
            lane[j] += (double)e[c + j];
    for (; c < C; c++)
        s += (double)e[c];
    for (j = 0; j < NN_LANES; j++)
        s += lane[j];
    return s;
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

/* dinp (+)= out * (dout - rowsum(dout * out)) */
static void FN(softmax_backward)(real *dinp, const real *dout,
                                 const real *out, size_t N, size_t C, int acc)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *da = dout + n * C, *a = out + n * C;
        real *dz = dinp + n * C;
        real dot = 0;
        for (c = 0; c < C; c++)
            dot += da[c] * a[c];
        for (c = 0; c < C; c++) {
            real v = a[c] * (da[c] - dot);
            dz[c] = acc ? dz[c] + v : v;
        }
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

/* dinp (+)= dout - exp(out) * rowsum(dout) */
static void FN(log_softmax_backward)(real *dinp, const real *dout,
                                     const real *out, size_t N, size_t C,
                                     int acc)
{
    size_t n, c;
    for (n = 0; n < N; n++) {
        const real *da = dout + n * C, *a = out + n * C;
        real *dz = dinp + n * C;
        real sum = 0;
        for (c = 0; c < C; c++)
            sum += da[c];
        for (c = 0; c < C; c++) {
            real v = da[c] - R_EXP(a[c]) * sum;
            dz[c] = acc ? dz[c] + v : v;
        }
    }
}

nn_status FN(nn_op_softmax_forward)(const nn_node_io *io)
{
    FN(nn_softmax_forward)(io->y, io->x[0], io->n, io->out_w);
    return NN_OK;
}

nn_status FN(nn_op_softmax_backward)(const nn_node_io *io)
{
    if (io->dx[0])
        FN(softmax_backward)(io->dx[0], io->dy, io->y, io->n, io->out_w,
                             io->dx_acc[0]);
    return NN_OK;
}

nn_status FN(nn_op_log_softmax_forward)(const nn_node_io *io)
{
    FN(nn_log_softmax_forward)(io->y, io->x[0], io->n, io->out_w);
    return NN_OK;
}

nn_status FN(nn_op_log_softmax_backward)(const nn_node_io *io)
{
    if (io->dx[0])
        FN(log_softmax_backward)(io->dx[0], io->dy, io->y, io->n, io->out_w,
                                 io->dx_acc[0]);
    return NN_OK;
}
