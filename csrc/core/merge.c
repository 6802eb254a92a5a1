/*
 * merge.c (template): layers that join several inputs (Keras's merge
 * layers), each x_i (N, F) unless noted:
 *   add          y = sum_i x_i                 dx_i = dy
 *   subtract     y = x_0 - x_1                 dx_0 = dy, dx_1 = -dy
 *   multiply     y = prod_i x_i (elementwise)  dx_i = dy * prod_{j != i} x_j
 *   average      y = (1/k) sum_i x_i           dx_i = dy / k
 *   concatenate  y = [x_0 | x_1 | ...] (N, sum F_i)   dx_i = dy's block i
 * Every dx_i is written (dx_acc[i] 0) or added to (1) in input order, so
 * two inputs fed by one value (Add()([x, x])) get the sum of both.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* d (+)= s * v over n values */
NN_VECTOR_CLONES
static void FN(scaled_store)(real *restrict d, const real *restrict v,
                             real s, size_t n, int acc)
{
    size_t i;
    if (acc)
        for (i = 0; i < n; i++)
            d[i] += s * v[i];
    else if (s == 1)
        memcpy(d, v, n * sizeof(real));
    else
        for (i = 0; i < n; i++)
            d[i] = s * v[i];
}

/* y = scale * sum of the inputs (add, average) */
NN_VECTOR_CLONES
static nn_status FN(op_sum_forward_scaled)(const nn_node_io *io, real scale)
{
    size_t i, j, n = io->n * io->out_w;
    real *y = io->y;
    const real *a = io->x[0];
    for (i = 0; i < n; i++)
        y[i] = a[i];
    for (j = 1; j < io->n_in; j++) {
        const real *b = io->x[j];
        for (i = 0; i < n; i++)
            y[i] += b[i];
    }
    if (scale != 1)
        for (i = 0; i < n; i++)
            y[i] *= scale;
    return NN_OK;
}

nn_status FN(nn_op_add_forward)(const nn_node_io *io)
{
    return FN(op_sum_forward_scaled)(io, 1);
}

nn_status FN(nn_op_average_forward)(const nn_node_io *io)
{
    return FN(op_sum_forward_scaled)(io, (real)(1.0 / (double)io->n_in));
}

/* dx_i (+)= scale_i dy */
static nn_status FN(op_sum_backward_scaled)(const nn_node_io *io, real scale,
                                            int negate_second)
{
    size_t j, n = io->n * io->out_w;
    for (j = 0; j < io->n_in; j++) {
        real s = (negate_second && j == 1) ? -scale : scale;
        if (io->dx[j])
            FN(scaled_store)(io->dx[j], io->dy, s, n, io->dx_acc[j]);
    }
    return NN_OK;
}

nn_status FN(nn_op_add_backward)(const nn_node_io *io)
{
    return FN(op_sum_backward_scaled)(io, 1, 0);
}

nn_status FN(nn_op_average_backward)(const nn_node_io *io)
{
    return FN(op_sum_backward_scaled)(io, (real)(1.0 / (double)io->n_in), 0);
}

NN_VECTOR_CLONES
nn_status FN(nn_op_subtract_forward)(const nn_node_io *io)
{
    size_t i, n = io->n * io->out_w;
    const real *a = io->x[0], *b = io->x[1];
    real *y = io->y;
    for (i = 0; i < n; i++)
        y[i] = a[i] - b[i];
    return NN_OK;
}

nn_status FN(nn_op_subtract_backward)(const nn_node_io *io)
{
    return FN(op_sum_backward_scaled)(io, 1, 1);
}

NN_VECTOR_CLONES
nn_status FN(nn_op_multiply_forward)(const nn_node_io *io)
{
    size_t i, j, n = io->n * io->out_w;
    real *y = io->y;
    const real *a = io->x[0];
    for (i = 0; i < n; i++)
        y[i] = a[i];
    for (j = 1; j < io->n_in; j++) {
        const real *b = io->x[j];
        for (i = 0; i < n; i++)
            y[i] *= b[i];
    }
    return NN_OK;
}

/* dx_j (+)= dy * prod_{i != j} x_i: the product of the others is formed
 * in input order (not y / x_j, which fails where x_j is 0) */
NN_VECTOR_CLONES
nn_status FN(nn_op_multiply_backward)(const nn_node_io *io)
{
    size_t i, j, m, n = io->n * io->out_w;
    const real *dy = io->dy;
    for (j = 0; j < io->n_in; j++) {
        real *d = io->dx[j];
        int acc = io->dx_acc[j];
        if (!d)
            continue;
        for (i = 0; i < n; i++) {
            real p = dy[i];
            for (m = 0; m < io->n_in; m++)
                if (m != j)
                    p *= ((const real *)io->x[m])[i];
            d[i] = acc ? d[i] + p : p;
        }
    }
    return NN_OK;
}

nn_status FN(nn_op_concatenate_forward)(const nn_node_io *io)
{
    size_t r, j, off = 0, W = io->out_w;
    real *y = io->y;
    for (j = 0; j < io->n_in; j++) {
        const real *x = io->x[j];
        size_t w = io->in_w[j];
        for (r = 0; r < io->n; r++)
            memcpy(y + r * W + off, x + r * w, w * sizeof(real));
        off += w;
    }
    return NN_OK;
}

nn_status FN(nn_op_concatenate_backward)(const nn_node_io *io)
{
    size_t r, j, off = 0, W = io->out_w;
    const real *dy = io->dy;
    for (j = 0; j < io->n_in; j++) {
        size_t w = io->in_w[j];
        if (io->dx[j])
            for (r = 0; r < io->n; r++)
                FN(scaled_store)((real *)io->dx[j] + r * w, dy + r * W + off,
                                 1, w, io->dx_acc[j]);
        off += w;
    }
    return NN_OK;
}
