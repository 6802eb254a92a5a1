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
 * (sgd.c, nn_sgd_linear_step). At two threads or more, a mid-sized step
 * splits its batch between the threads instead (train_step_split).
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

/* Rows [r0, r1) of the forward pass over the batch of net->batch rows
 * (net->last_inp, net->batch set): row-wise layers only, so parts of a
 * batch can run on different threads. */
static nn_status FN(forward_rows)(nn_net *net, size_t r0, size_t r1)
{
    size_t i, n = r1 - r0;
    nn_status st;
    for (i = 0; i < net->n_layers; i++) {
        const nn_layer *L = net->layers[i];
        size_t w_in = net->width[i], w_out = net->width[i + 1];
        const real *x = FN(net_inp)(net, i) + r0 * w_in;
        real *z = FN(net_act)(net, i) + r0 * w_out;
        if (L->kind == NN_LINEAR && i + 1 < net->n_layers &&
            nn_kind_is_elementwise(net->layers[i + 1]->kind)) {
            /* Z = X W + b (the bias inside the GEMM), then A = f(Z) in
             * one pass over the whole block */
            const nn_layer *act = net->layers[i + 1];
            st = FN(nn_linear_forward)(z, x, (const real *)L->W,
                                       (const real *)L->b, n, w_in, w_out);
            if (st != NN_OK)
                return st;
            FN(nn_act_forward_par)(act->kind, act->slope,
                                   FN(net_act)(net, i + 1) + r0 * w_out, z,
                                   n * w_out);
            i++;
            continue;
        }
        st = FN(nn_layer_forward)(L, z, x, n, w_in);
        if (st != NN_OK)
            return st;
    }
    return NN_OK;
}

nn_status FN(nn_net_forward_impl)(nn_net *net, const real *inp, size_t N)
{
    net->batch = N;
    net->last_inp = inp;
    return FN(forward_rows)(net, 0, N);
}

/* The first error of a split's parts, or NN_OK */
static nn_status FN(first_error)(const nn_status *st, size_t parts)
{
    size_t p;
    for (p = 0; p < parts; p++)
        if (st[p] != NN_OK)
            return st[p];
    return NN_OK;
}

/* A forward pass alone (predict, forward) may split its rows between the
 * threads like a training step, with no wait but the last. */
typedef struct {
    nn_net *net;
    size_t N, parts;
    nn_status st[NN_SPLIT_MAX];
} FN(split_forward);

static void FN(split_forward_chunk)(void *arg, size_t part)
{
    FN(split_forward) *s = arg;
    s->st[part] = FN(forward_rows)(s->net, s->N * part / s->parts,
                                   s->N * (part + 1) / s->parts);
}

nn_status FN(nn_net_forward_split_impl)(nn_net *net, const real *inp,
                                        size_t N)
{
    int parts = nn_step_begin(nn_split_worth(net, N, 0));
    FN(split_forward) s;
    nn_task task;
    nn_status st;
    if (parts < 2) {
        st = FN(nn_net_forward_impl)(net, inp, N);
        nn_step_end(parts);
        return st;
    }
    net->batch = N;
    net->last_inp = inp;
    memset(&s, 0, sizeof s);
    s.net = net;
    s.N = N;
    s.parts = (size_t)parts;
    memset(&task, 0, sizeof task);
    task.fn = FN(split_forward_chunk);
    task.arg = &s;
    task.n_chunks = s.parts;
    nn_task_run(&task);
    nn_step_end(parts);
    return FN(first_error)(s.st, s.parts);
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

static nn_status FN(train_step_whole)(nn_net *net, const nn_sgd *opt,
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

/*
 * A training step with the batch split between threads.
 *
 * Phase 1: every thread takes a block of rows and runs the forward pass,
 * the loss and the backward pass down to the lowest trainable Linear for
 * its rows alone, each product on its own thread (OpenBLAS at one thread).
 * Each Linear's output gradient is kept (the gradient stack, one block per
 * layer). Nothing the optimiser holds changes in phase 1.
 * Phase 2, once every row is done: every thread updates its share of each
 * Linear layer's rows of W and columns of b (nn_sgd_linear_step_part),
 * with the weight gradient over the whole batch folded in as before.
 *
 * So a step waits for the other threads twice, where products split by
 * OpenBLAS wait for each other many times inside every product: on a
 * batch of medium size that is most of the cost of threading.
 */
typedef struct {
    nn_net *net;
    const nn_sgd *opt;
    nn_loss_kind loss;
    const int64_t *labels;
    const real *T;
    size_t N, parts, lowest;
    int count_correct;
    nn_status st[NN_SPLIT_MAX];
    double loss_sum[NN_SPLIT_MAX];
    size_t correct[NN_SPLIT_MAX];
} FN(split_step);

/* Layer i's output gradient in the gradient stack: (N, width[i+1]) at
 * N * (width[1] + .. + width[i]) */
static real *FN(grad_block)(const nn_net *net, size_t i)
{
    size_t j, off = 0;
    for (j = 0; j < i; j++)
        off += net->width[j + 1];
    return (real *)net->gstack + net->batch * off;
}

/* Phase 1 for rows [r0, r1): forward, loss, input gradients. */
static nn_status FN(split_rows)(FN(split_step) *s, size_t part)
{
    nn_net *net = s->net;
    size_t L = net->n_layers, C = net->width[L], N = s->N;
    size_t r0 = N * part / s->parts, r1 = N * (part + 1) / s->parts;
    size_t n = r1 - r0, i;
    const real *pred = FN(net_act)(net, L - 1) + r0 * C;
    real *g = FN(grad_block)(net, L - 1) + r0 * C;
    nn_status st = FN(forward_rows)(net, r0, r1);
    if (st != NN_OK)
        return st;
    st = FN(nn_loss_rows)(s->loss, &s->loss_sum[part], g, pred,
                          s->labels ? s->labels + r0 : NULL,
                          s->T ? s->T + r0 * C : NULL, n, C,
                          1.0 / (double)N);
    if (st != NN_OK)
        return st;
    if (s->count_correct)
        s->correct[part] = FN(nn_count_correct)(
            pred, s->labels ? s->labels + r0 : NULL,
            s->T ? s->T + r0 * C : NULL, n, C);
    for (i = L; i-- > s->lowest + 1;) {
        /* gin: layer i's input gradient = layer i-1's output gradient */
        const nn_layer *Li = net->layers[i];
        size_t w_in = net->width[i], w_out = net->width[i + 1];
        const real *x = FN(net_inp)(net, i) + r0 * w_in;
        const real *a = FN(net_act)(net, i) + r0 * w_out;
        real *gin = FN(grad_block)(net, i - 1) + r0 * w_in;
        if (Li->kind == NN_LINEAR)   /* gin (n, I) = g W^T */
            st = FN(nn_gemm)(0, 1, n, w_in, w_out, 1, g, w_out,
                             (const real *)Li->W, w_out, 0, gin, w_in);
        else
            st = FN(nn_layer_backward)(Li, gin, g, x, a, n, w_in);
        if (st != NN_OK)
            return st;
        g = gin;
    }
    return NN_OK;
}

static void FN(split_rows_chunk)(void *arg, size_t part)
{
    FN(split_step) *s = arg;
    s->st[part] = FN(split_rows)(s, part);
}

/* Phase 2, share `part` of every trainable Linear layer's update. */
static void FN(split_update_chunk)(void *arg, size_t part)
{
    FN(split_step) *s = arg;
    nn_net *net = s->net;
    size_t i;
    nn_status st = NN_OK;
    for (i = s->lowest; i < net->n_layers && st == NN_OK; i++) {
        const nn_layer *Li = net->layers[i];
        if (Li->kind != NN_LINEAR)
            continue;
        st = FN(nn_sgd_linear_step_part)(s->opt, Li, FN(net_inp)(net, i),
                                         FN(grad_block)(net, i), s->N, part,
                                         s->parts);
    }
    s->st[part] = st;
}


static nn_status FN(train_step_split)(nn_net *net, const nn_sgd *opt,
                                      nn_loss_kind loss, const real *inp,
                                      size_t N, const int64_t *labels,
                                      const real *T, double *loss_out,
                                      size_t *correct, size_t parts)
{
    FN(split_step) s;
    nn_task task;
    size_t p;
    double total = 0;
    nn_status st;
    memset(&s, 0, sizeof s);
    s.net = net;
    s.opt = opt;
    s.loss = loss;
    s.labels = labels;
    s.T = T;
    s.N = N;
    s.parts = parts;
    s.lowest = FN(lowest_needed_layer)(net, NULL);
    s.count_correct = correct && FN(loss_is_classification)(loss);
    net->batch = N;
    net->last_inp = inp;
    memset(&task, 0, sizeof task);
    task.fn = FN(split_rows_chunk);
    task.arg = &s;
    task.n_chunks = parts;
    nn_task_run(&task);
    st = FN(first_error)(s.st, s.parts);
    if (st != NN_OK)
        return st;
    for (p = 0; p < parts; p++) {
        total += s.loss_sum[p];
        if (correct)
            *correct += s.correct[p];
    }
    *loss_out = total / (double)N;
    if (!isfinite(*loss_out))
        return NN_ERR_NONFINITE;   /* nothing updated */
    if (s.lowest >= net->n_layers)
        return NN_OK;              /* nothing to train */
    task.fn = FN(split_update_chunk);
    nn_task_run(&task);
    return FN(first_error)(s.st, s.parts);
}

nn_status FN(nn_net_train_step_impl)(nn_net *net, const nn_sgd *opt,
                                     nn_loss_kind loss, const real *inp,
                                     size_t N, const int64_t *labels,
                                     const real *T, double *loss_out,
                                     size_t *correct)
{
    int parts = nn_step_begin(nn_split_worth(net, N, 1));
    nn_status st;
    if (parts < 2) {
        st = FN(train_step_whole)(net, opt, loss, inp, N, labels, T,
                                  loss_out, correct);
    } else {
        if (correct)
            *correct = 0;
        st = nn_net_reserve_split(net, N);
        if (st == NN_OK)
            st = FN(train_step_split)(net, opt, loss, inp, N, labels, T,
                                      loss_out, correct, (size_t)parts);
    }
    nn_step_end(parts);
    return st;
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
