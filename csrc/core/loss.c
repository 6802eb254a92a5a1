/*
 * loss.c (template): losses on a batch of predictions pred (N, C).
 * Every loss is averaged over the batch (the 1/N of the notes) and is
 * accumulated in double. Targets come as labels (N) of class ids or as
 * dense rows T (N, C). dpred (N, C), when given, receives dL/dpred.
 *   softmax cross-entropy  L = 1/N sum_n [ lse(z_n) sum_c T_nc - T_n . z_n ]
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

nn_status FN(nn_softmax_xent)(double *loss, real *dpred, const real *pred,
                              const int64_t *labels, const real *T, size_t N,
                              size_t C)
{
    size_t n, c;
    double total = 0, invN = 1.0 / (double)N;
    if (labels && FN(check_labels)(labels, N, C) != NN_OK)
        return NN_ERR_LABEL;
    if (!labels && !T)
        return NN_ERR_ARG;
    for (n = 0; n < N; n++) {
        const real *z = pred + n * C;
        double lse = FN(row_logsumexp)(z, C);
        if (labels) {
            size_t y = (size_t)labels[n];
            total += lse - (double)z[y];
            if (dpred) {
                real *g = dpred + n * C;
                for (c = 0; c < C; c++)
                    g[c] = (real)(exp((double)z[c] - lse) * invN);
                g[y] -= (real)invN;
            }
        } else {
            const real *t = T + n * C;
            double tsum = 0;
            for (c = 0; c < C; c++) {
                tsum += t[c];
                if (t[c] != 0)
                    total -= (double)t[c] * (double)z[c];
            }
            total += lse * tsum;
            if (dpred) {
                real *g = dpred + n * C;
                for (c = 0; c < C; c++)
                    g[c] = (real)((exp((double)z[c] - lse) * tsum -
                                   (double)t[c]) * invN);
            }
        }
    }
    *loss = total * invN;
    return NN_OK;
}

nn_status FN(nn_nll)(double *loss, real *dpred, const real *pred,
                     const int64_t *labels, const real *T, size_t N, size_t C)
{
    size_t n, c;
    double total = 0, invN = 1.0 / (double)N;
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
    *loss = total * invN;
    return NN_OK;
}

nn_status FN(nn_binary_xent)(double *loss, real *dpred, const real *pred,
                             const real *T, size_t N, size_t C)
{
    size_t i, n = N * C;
    double total = 0, invN = 1.0 / (double)N;
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
    *loss = total * invN;
    return NN_OK;
}

nn_status FN(nn_mse)(double *loss, real *dpred, const real *pred,
                     const real *T, size_t N, size_t C)
{
    size_t i, n = N * C;
    double total = 0, invN = 1.0 / (double)N;
    if (!T)
        return NN_ERR_ARG;
    for (i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)T[i];
        total += 0.5 * d * d;
        if (dpred)
            dpred[i] = (real)(d * invN);
    }
    *loss = total * invN;
    return NN_OK;
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
