/*
 * net_step.c (template): one layer of any kind, and the whole chain
 * forward, backward, training step and epoch. The workspace layout is
 * described in nn.h (struct nn_net).
 *
 * Fusions: a Linear's bias is the starting value of its GEMM's output
 * (beta = 1), and a following elementwise activation runs in one pass over
 * the whole output block; during a training step the first layer's input
 * gradient is skipped, and each layer's SGD update runs inside the
 * backward sweep, with the weight gradient folded into the update's GEMM
 * (sgd.c, nn_sgd_linear_step).
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

nn_status FN(nn_layer_forward)(const nn_layer *L, real *out, const real *inp,
                               size_t N, size_t width)
{
    switch (L->kind) {
    case NN_LINEAR:
        return FN(nn_linear_forward)(out, inp, L->W, L->b, N, L->in, L->out);
    case NN_SOFTMAX:
        FN(nn_softmax_forward)(out, inp, N, width);
        return NN_OK;
    case NN_LOG_SOFTMAX:
        FN(nn_log_softmax_forward)(out, inp, N, width);
        return NN_OK;
    default:
        if (!nn_kind_is_elementwise(L->kind))
            return NN_ERR_ARG;
        FN(nn_act_forward_par)(L->kind, L->slope, out, inp, N * width);
        return NN_OK;
    }
}

nn_status FN(nn_layer_backward)(const nn_layer *L, real *dinp,
                                const real *dout, const real *inp,
                                const real *out, size_t N, size_t width)
{
    switch (L->kind) {
    case NN_LINEAR:
        return FN(nn_linear_backward)(dinp, L->trainable ? L->dW : NULL,
                                      L->trainable ? L->db : NULL, dout, inp,
                                      L->W, N, L->in, L->out);
    case NN_SOFTMAX:
        if (dinp)
            FN(nn_softmax_backward)(dinp, dout, out, N, width);
        return NN_OK;
    case NN_LOG_SOFTMAX:
        if (dinp)
            FN(nn_log_softmax_backward)(dinp, dout, out, N, width);
        return NN_OK;
    default:
        if (!nn_kind_is_elementwise(L->kind))
            return NN_ERR_ARG;
        if (dinp)
            FN(nn_act_backward_par)(L->kind, L->slope, dinp, dout, inp,
                                    out, N * width);
        return NN_OK;
    }
}

/* Output of layer i in the workspace: (N, width[i+1]) */
static real *FN(net_act)(const nn_net *net, size_t i)
{
    return (real *)net->act + net->batch * net->act_off[i];
}

/* Input of layer i: the caller's input for i == 0 */
static const real *FN(net_inp)(const nn_net *net, size_t i)
{
    return i == 0 ? (const real *)net->last_inp : FN(net_act)(net, i - 1);
}

nn_status FN(nn_net_forward_impl)(nn_net *net, const real *inp, size_t N)
{
    size_t i;
    nn_status st;
    net->batch = N;
    net->last_inp = inp;
    for (i = 0; i < net->n_layers; i++) {
        const nn_layer *L = net->layers[i];
        const real *x = FN(net_inp)(net, i);
        real *z = FN(net_act)(net, i);
        size_t w_in = net->width[i], w_out = net->width[i + 1];
        if (L->kind == NN_LINEAR && i + 1 < net->n_layers &&
            nn_kind_is_elementwise(net->layers[i + 1]->kind)) {
            /* Z = X W + b (the bias inside the GEMM), then A = f(Z) in
             * one pass over the whole block */
            const nn_layer *act = net->layers[i + 1];
            st = FN(nn_linear_forward)(z, x, (const real *)L->W,
                                       (const real *)L->b, N, w_in, w_out);
            if (st != NN_OK)
                return st;
            FN(nn_act_forward_par)(act->kind, act->slope,
                                   FN(net_act)(net, i + 1), z, N * w_out);
            i++;
            continue;
        }
        st = FN(nn_layer_forward)(L, z, x, N, w_in);
        if (st != NN_OK)
            return st;
    }
    return NN_OK;
}

/* Without an input gradient, back-propagation can stop at the lowest
 * trainable Linear layer: nothing below it needs a gradient. */
static size_t FN(lowest_needed_layer)(const nn_net *net, const real *dinp)
{
    size_t i;
    if (dinp)
        return 0;
    for (i = 0; i < net->n_layers; i++)
        if (net->layers[i]->kind == NN_LINEAR && net->layers[i]->trainable)
            return i;
    return net->n_layers;   /* nothing to train: no backward at all */
}

/*
 * Backward through layers L-1 .. 0 from dout (N, width[L]).
 * opt == NULL: parameter gradients accumulate (beta = 1 into dW).
 * opt != NULL: a training step. Each Linear layer's SGD update runs as
 * soon as its input gradient is out (nn_sgd_linear_step, which folds the
 * weight gradient into the update); the gradient buffers are scratch.
 */
nn_status FN(nn_net_backward_impl)(nn_net *net, real *dinp, const real *dout,
                                   const nn_sgd *opt)
{
    size_t i = net->n_layers, N = net->batch;
    size_t lowest = FN(lowest_needed_layer)(net, dinp);
    const real *g = dout;
    nn_status st;
    while (i-- > lowest) {
        nn_layer *L = net->layers[i];
        const real *x = FN(net_inp)(net, i);
        const real *a = FN(net_act)(net, i);
        real *gin = i == lowest ? dinp : (real *)net->grad[i & 1];
        size_t w_in = net->width[i], w_out = net->width[i + 1];
        if (L->kind == NN_LINEAR) {
            /* gin (N, I) = g W^T first: the update changes W */
            st = FN(nn_linear_backward)(gin, NULL, NULL, g, x, L->W, N, w_in,
                                        w_out);
            if (st == NN_OK && opt)
                st = FN(nn_sgd_linear_step)(opt, L, x, g, N);
            else if (st == NN_OK && L->trainable)
                st = FN(nn_linear_backward)(NULL, L->dW, L->db, g, x, L->W,
                                            N, w_in, w_out);
            if (st != NN_OK)
                return st;
        } else if (gin) {
            st = FN(nn_layer_backward)(L, gin, g, x, a, N, w_in);
            if (st != NN_OK)
                return st;
        }
        g = gin;
        if (!g)
            break;   /* nothing below needs a gradient */
    }
    return NN_OK;
}

static int FN(loss_is_classification)(nn_loss_kind k)
{
    return k != NN_LOSS_MSE;
}

nn_status FN(nn_net_train_step_impl)(nn_net *net, const nn_sgd *opt,
                                     nn_loss_kind loss, const real *inp,
                                     size_t N, const int64_t *labels,
                                     const real *T, double *loss_out,
                                     size_t *correct)
{
    size_t L = net->n_layers, C = net->width[L];
    const real *pred;
    real *dpred = (real *)net->grad[L & 1];
    nn_status st = FN(nn_net_forward_impl)(net, inp, N);
    if (st != NN_OK)
        return st;
    pred = FN(net_act)(net, L - 1);
    st = nn_loss_eval(NN_DTYPE, loss, loss_out, dpred, pred, labels, T, N, C);
    if (st != NN_OK)
        return st;
    if (correct)
        *correct = FN(loss_is_classification)(loss)
                       ? FN(nn_count_correct)(pred, labels, T, N, C)
                       : 0;
    if (!isfinite(*loss_out))
        return NN_ERR_NONFINITE;   /* nothing updated */
    /* updates only this network's layers, each as soon as its gradient
     * is complete */
    return FN(nn_net_backward_impl)(net, NULL, dpred, opt);
}

/* The gather of the minibatch of `count` rows starting at order[start]
 * into gather buffers k. */
static void FN(plan_gather)(nn_gather *g, nn_net *net, int k, const real *X,
                            size_t D, const int64_t *labels, const real *T,
                            size_t C, const int64_t *order, size_t start,
                            size_t count)
{
    g->x = (char *)net->xb[k];
    g->X = (const char *)X;
    g->x_row = D * sizeof(real);
    g->t = T ? (char *)net->tb[k] : NULL;
    g->T = (const char *)T;
    g->t_row = C * sizeof(real);
    g->l = labels ? net->lb[k] : NULL;
    g->labels = labels;
    g->order = order + start;
    g->count = count;
}

/*
 * With an order (shuffling), each minibatch is gathered into one of two
 * buffers while the other trains: the gather of batch b + 1 is offered to
 * the pool's idle workers (pool.c) before batch b trains, and whatever
 * they have not done when batch b + 1 starts is done then, on this
 * thread. Random rows of a big X come from memory, not cache; on a worker
 * that wait overlaps the training step instead of adding to it.
 */
nn_status FN(nn_net_fit_epoch_impl)(nn_net *net, const nn_sgd *opt,
                                    nn_loss_kind loss, const real *X,
                                    size_t n, size_t D,
                                    const int64_t *labels, const real *T,
                                    size_t C, const int64_t *order,
                                    size_t batch, nn_progress_fn progress,
                                    void *ctx, nn_epoch_result *res)
{
    size_t b, n_batches = (n + batch - 1) / batch;
    nn_gather gather;
    nn_task task;
    nn_status st = NN_OK;
    int k = 0;
    if (order) {
        FN(plan_gather)(&gather, net, 0, X, D, labels, T, C, order, 0,
                        n < batch ? n : batch);
        nn_gather_init(&task, &gather);
        nn_task_post(&task);
    }
    for (b = 0; b < n_batches; b++) {
        size_t start = b * batch, bs = n - start < batch ? n - start : batch;
        const real *xb = X + start * D;
        const int64_t *lb = labels ? labels + start : NULL;
        const real *tb = T ? T + start * C : NULL;
        double value = 0;
        size_t correct = 0;
        if (order) {
            nn_task_finish(&task);   /* batch b is in buffers k */
            xb = (const real *)net->xb[k];
            lb = labels ? net->lb[k] : NULL;
            tb = T ? (const real *)net->tb[k] : NULL;
            if (b + 1 < n_batches) {
                size_t next = start + bs;
                FN(plan_gather)(&gather, net, k ^ 1, X, D, labels, T, C,
                                order, next, n - next < batch ? n - next
                                                              : batch);
                nn_gather_init(&task, &gather);
                nn_task_post(&task);
            }
            k ^= 1;
        }
        st = FN(nn_net_train_step_impl)(net, opt, loss, xb, bs, lb, tb,
                                        &value, &correct);
        if (st != NN_OK) {
            res->failed_batch = b;
            break;
        }
        res->loss_sum += value * (double)bs;
        res->correct += correct;
        res->seen += bs;
        if (progress && progress(ctx, b, n_batches, res->loss_sum,
                                 res->correct, res->seen)) {
            st = NN_ERR_INTERRUPTED;
            break;
        }
    }
    if (order && b + 1 < n_batches)
        nn_task_finish(&task);   /* no worker may outlive this frame */
    return st;
}
