/*
 * norm.c (template): normalisation layers, torch's semantics, x (N, F).
 *
 * BatchNorm (torch's BatchNorm1d), per column over the batch:
 *   training  mu = mean_n x, var = mean_n (x - mu)^2 (biased),
 *             xhat = (x - mu) / sqrt(var + eps), y = gamma xhat + beta;
 *             running_mean = (1 - m) running_mean + m mu,
 *             running_var  = (1 - m) running_var + m var N / (N - 1)
 *             (m = momentum; with momentum < 0 ("None"), m = 1 / batches,
 *             a cumulative average), batches += 1
 *   eval      the same with the running statistics (when tracked)
 *   VJP       dxhat = dy gamma;
 *             dx = invstd / N (N dxhat - sum_n dxhat - xhat sum_n dxhat xhat)
 *             (eval: dx = dxhat invstd); dgamma = sum_n dy xhat,
 *             dbeta = sum_n dy
 * In a training step the running statistics change only once the loss is
 * accepted (the op's commit, after the loss check): a rejected step
 * leaves them as they were.
 *
 * LayerNorm (torch's), per row over the F features: the same formulas
 * with the sums over the row, no running statistics; row-wise, so a
 * batch may be split between threads.
 *
 * Workspace: xhat (N, F) (both), then BatchNorm's mean, invstd and
 * biased batch variance (F each; the commit reads the variance as the
 * forward measured it: recovering it from invstd would lose its digits
 * when var << eps in float32), or LayerNorm's invstd per row (N).
 * Tensors: gamma (F), beta (F) when affine (params); BatchNorm's
 * running_mean (F), running_var (F), num_batches_tracked (1) when tracked
 * (buffers).
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

#define NORM_AFFINE(L) ((L)->bias)
#define NORM_GAMMA(L) (NORM_AFFINE(L) ? (const real *)(L)->t[0].data : NULL)
#define NORM_BETA(L) (NORM_AFFINE(L) ? (const real *)(L)->t[1].data : NULL)
#define BN_TRACK(L) ((L)->arg[2] != 0)
#define BN_RUNNING(L, k) ((real *)(L)->t[(NORM_AFFINE(L) ? 2 : 0) + (k)].data)

/* y[n] = gamma xhat[n] + beta over F columns (no affine: y = xhat) */
static void FN(affine_rows)(real *y, const real *xhat, const real *gamma,
                            const real *beta, size_t N, size_t F)
{
    size_t n, f;
    for (n = 0; n < N; n++) {
        const real *h = xhat + n * F;
        real *o = y + n * F;
        if (gamma)
            for (f = 0; f < F; f++)
                o[f] = gamma[f] * h[f] + beta[f];
        else
            for (f = 0; f < F; f++)
                o[f] = h[f];
    }
}

/* ---- BatchNorm ---- */

/* BatchNorm's column loops run over blocks of NN_BN_COLS columns, row by
 * row: contiguous reads and NN_BN_COLS independent sums, each column's
 * still summed over the rows in order */
#ifndef NN_BN_COLS
#define NN_BN_COLS 16
#endif

/* mean (F) and biased variance (F) of x (N, F) over the rows, in double */
static void FN(column_moments)(real *mean, real *var, const real *x,
                               size_t N, size_t F)
{
    size_t n, f0, j;
    for (f0 = 0; f0 < F; f0 += NN_BN_COLS) {
        size_t nb = F - f0 < NN_BN_COLS ? F - f0 : NN_BN_COLS;
        double s[NN_BN_COLS] = {0}, q[NN_BN_COLS] = {0}, mu[NN_BN_COLS];
        for (n = 0; n < N; n++) {
            const real *r = x + n * F + f0;
            for (j = 0; j < nb; j++)
                s[j] += (double)r[j];
        }
        for (j = 0; j < nb; j++)
            mu[j] = s[j] / (double)N;
        for (n = 0; n < N; n++) {
            const real *r = x + n * F + f0;
            for (j = 0; j < nb; j++) {
                double d = (double)r[j] - mu[j];
                q[j] += d * d;
            }
        }
        for (j = 0; j < nb; j++) {
            mean[f0 + j] = (real)mu[j];
            var[f0 + j] = (real)(q[j] / (double)N);
        }
    }
}

nn_status FN(nn_op_batchnorm_forward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, F = io->out_w, n, f;
    real *xhat = io->ws, *mean = xhat + io->N * F, *invstd = mean + F;
    real *var = invstd + F;
    const real *x = io->x[0];
    int batch_stats = io->training || !BN_TRACK(L);
    if (batch_stats) {
        if (N < 2 && io->training)
            return NN_ERR_BATCH;
        FN(column_moments)(mean, var, x, N, F);
        for (f = 0; f < F; f++)
            invstd[f] = (real)(1.0 / sqrt((double)var[f] + L->arg[0]));
    } else {
        const real *rm = BN_RUNNING(L, 0), *rv = BN_RUNNING(L, 1);
        for (f = 0; f < F; f++) {
            mean[f] = rm[f];
            invstd[f] = (real)(1.0 / sqrt((double)rv[f] + L->arg[0]));
        }
    }
    for (n = 0; n < N; n++)
        for (f = 0; f < F; f++)
            xhat[n * F + f] = (x[n * F + f] - mean[f]) * invstd[f];
    FN(affine_rows)(io->y, xhat, NORM_GAMMA(L), NORM_BETA(L), N, F);
    if (io->training == 1 && BN_TRACK(L))   /* a forward alone: now */
        return FN(nn_op_batchnorm_commit)(io);
    return NN_OK;
}

/* The running statistics from the batch's (training forward's mean and
 * variance in the workspace) */
nn_status FN(nn_op_batchnorm_commit)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, F = io->out_w, f;
    const real *mean = (const real *)io->ws + io->N * F, *var = mean + 2 * F;
    real *rm, *rv, *count;
    double m, unbias = (double)N / (double)(N - 1);
    if (!BN_TRACK(L) || !io->training)
        return NN_OK;
    rm = BN_RUNNING(L, 0);
    rv = BN_RUNNING(L, 1);
    count = BN_RUNNING(L, 2);
    count[0] += 1;
    m = L->arg[1] >= 0 ? L->arg[1] : 1.0 / (double)count[0];
    for (f = 0; f < F; f++) {
        rm[f] = (real)((1 - m) * (double)rm[f] + m * (double)mean[f]);
        rv[f] = (real)((1 - m) * (double)rv[f] + m * (double)var[f] * unbias);
    }
    return NN_OK;
}

/* dgamma = sum_n dy xhat, dbeta = sum_n dy, through the engine's pg */
nn_status FN(nn_op_norm_param_grads)(const nn_node_io *io)
{
    const real *xhat = io->ws;
    nn_status st;
    if (!NORM_AFFINE(io->L))
        return NN_OK;
    st = FN(nn_pg_colsum_prod)(io->pg, 0, xhat, io->dy, io->n);
    if (st == NN_OK)
        st = FN(nn_pg_colsum)(io->pg, 1, io->dy, io->n);
    return st;
}

/* dx (+)= the VJP over columns [f0, f0 + nb) */
static void FN(batchnorm_dx_block)(real *dx, int acc, const real *dy,
                                   const real *xhat, const real *invstd,
                                   const real *gamma, int batch_stats,
                                   size_t N, size_t F, size_t f0, size_t nb)
{
    double g1[NN_BN_COLS], s1[NN_BN_COLS] = {0}, s2[NN_BN_COLS] = {0};
    double k[NN_BN_COLS], dN = (double)N;
    size_t n, j;
    for (j = 0; j < nb; j++) {
        g1[j] = gamma ? (double)gamma[f0 + j] : 1.0;
        k[j] = (double)invstd[f0 + j];
    }
    if (batch_stats) {
        for (n = 0; n < N; n++) {
            const real *gy = dy + n * F + f0, *h = xhat + n * F + f0;
            for (j = 0; j < nb; j++) {
                double d = (double)gy[j] * g1[j];
                s1[j] += d;
                s2[j] += d * (double)h[j];
            }
        }
    }
    for (n = 0; n < N; n++) {
        const real *gy = dy + n * F + f0, *h = xhat + n * F + f0;
        real *o = dx + n * F + f0;
        for (j = 0; j < nb; j++) {
            double d = (double)gy[j] * g1[j];
            double v = batch_stats
                           ? k[j] / dN * (dN * d - s1[j] - (double)h[j] * s2[j])
                           : d * k[j];
            o[j] = acc ? o[j] + (real)v : (real)v;
        }
    }
}

nn_status FN(nn_op_batchnorm_backward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, F = io->out_w, f0;
    const real *xhat = io->ws, *invstd = (const real *)io->ws + io->N * F + F;
    real *dx = io->dx[0];
    int acc = dx ? io->dx_acc[0] : 0;
    int batch_stats = io->training || !BN_TRACK(L);
    for (f0 = 0; dx && f0 < F; f0 += NN_BN_COLS)
        FN(batchnorm_dx_block)(dx, acc, io->dy, xhat, invstd, NORM_GAMMA(L),
                               batch_stats, N, F, f0,
                               F - f0 < NN_BN_COLS ? F - f0 : NN_BN_COLS);
    return io->pg ? FN(nn_op_norm_param_grads)(io) : NN_OK;
}

/* ---- LayerNorm ---- */

nn_status FN(nn_op_layernorm_forward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, F = io->out_w, n, f;
    real *xhat = (real *)io->ws + io->row0 * F;
    real *invstd = (real *)io->ws + io->N * F + io->row0;
    for (n = 0; n < N; n++) {
        const real *x = (const real *)io->x[0] + n * F;
        double s = 0, q = 0, mu, k;
        for (f = 0; f < F; f++)
            s += (double)x[f];
        mu = s / (double)F;
        for (f = 0; f < F; f++)
            q += ((double)x[f] - mu) * ((double)x[f] - mu);
        k = 1.0 / sqrt(q / (double)F + L->arg[0]);
        invstd[n] = (real)k;
        for (f = 0; f < F; f++)
            xhat[n * F + f] = (real)(((double)x[f] - mu) * k);
    }
    FN(affine_rows)(io->y, xhat, NORM_GAMMA(L), NORM_BETA(L), N, F);
    return NN_OK;
}

nn_status FN(nn_op_layernorm_backward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, F = io->out_w, n, f;
    const real *xhat = (const real *)io->ws + io->row0 * F;
    const real *invstd = (const real *)io->ws + io->N * F + io->row0;
    const real *gamma = NORM_GAMMA(L);
    real *dx = io->dx[0];
    int acc = dx ? io->dx_acc[0] : 0;
    nn_node_io whole;
    for (n = 0; dx && n < N; n++) {
        const real *dy = (const real *)io->dy + n * F, *h = xhat + n * F;
        double s1 = 0, s2 = 0, k = (double)invstd[n];
        for (f = 0; f < F; f++) {
            double d = (double)dy[f] * (gamma ? (double)gamma[f] : 1.0);
            s1 += d;
            s2 += d * (double)h[f];
        }
        for (f = 0; f < F; f++) {
            double d = (double)dy[f] * (gamma ? (double)gamma[f] : 1.0);
            real v = (real)(k / (double)F *
                            ((double)F * d - s1 - (double)h[f] * s2));
            dx[n * F + f] = acc ? dx[n * F + f] + v : v;
        }
    }
    if (!io->pg)
        return NN_OK;
    whole = *io;   /* the parameter gradients read xhat from this row on */
    whole.ws = (real *)io->ws + io->row0 * F;
    return FN(nn_op_norm_param_grads)(&whole);
}

/* LayerNorm's parameter gradients over the whole batch (phase 2 of a
 * split step: io covers every row) */
nn_status FN(nn_op_layernorm_param_grads)(const nn_node_io *io)
{
    return FN(nn_op_norm_param_grads)(io);
}
