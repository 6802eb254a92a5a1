/*
 * net.c: the network's bookkeeping (widths, workspace) and the dispatch
 * of nn_net_* to the float32 or float64 implementation in net_step.c.
 */
#include "nn.h"
#include "net_internal.h"

#include <string.h>

nn_status nn_net_init(nn_net *net, nn_dtype dt, nn_layer **layers, size_t n)
{
    memset(net, 0, sizeof *net);
    if (n == 0)
        return NN_ERR_ARG;
    net->dtype = dt;
    net->n_layers = n;
    net->layers = nn_calloc(n, sizeof *net->layers);
    net->width = nn_calloc(n + 1, sizeof *net->width);
    net->act_off = nn_calloc(n + 1, sizeof *net->act_off);
    if (!net->layers || !net->width || !net->act_off) {
        nn_net_free(net);
        return NN_ERR_NOMEM;
    }
    memcpy(net->layers, layers, n * sizeof *layers);
    return NN_OK;
}

void nn_net_free(nn_net *net)
{
    nn_free(net->layers);
    nn_free(net->width);
    nn_free(net->act_off);
    nn_free(net->act);
    nn_free(net->grad[0]);
    nn_free(net->grad[1]);
    nn_free(net->xb[0]);
    nn_free(net->xb[1]);
    nn_free(net->tb[0]);
    nn_free(net->tb[1]);
    nn_free(net->lb[0]);
    nn_free(net->lb[1]);
    nn_free(net->gstack);
    memset(net, 0, sizeof *net);
}

/* 1 when layer i is an activation that follows a Linear layer and can run
 * in place over the Linear's output: its backward needs only its output
 * a (sigmoid, tanh), or only the sign of its input, which a keeps (ReLU,
 * LeakyReLU with a slope >= 0, step, identity). Softplus and cos need z. */
int nn_net_act_in_place(const nn_net *net, size_t i)
{
    const nn_layer *L = net->layers[i];
    if (i == 0 || net->layers[i - 1]->kind != NN_LINEAR)
        return 0;
    switch (L->kind) {
    case NN_IDENTITY: case NN_RELU: case NN_SIGMOID: case NN_TANH:
    case NN_STEP:
        return 1;
    case NN_LEAKY_RELU:
        return L->slope >= 0;
    default:
        return 0;
    }
}

/* Widths for input width D into net->width, and where each layer's output
 * sits in the workspace (act_off; an in-place activation shares its
 * Linear's block); 0 or the failing layer + 1 */
static size_t fill_widths(nn_net *net, size_t D)
{
    size_t i, w = D, maxw = D, off = 0;
    net->width[0] = D;
    for (i = 0; i < net->n_layers; i++) {
        const nn_layer *L = net->layers[i];
        if (L->kind == NN_LINEAR) {
            if (L->in != w)
                return i + 1;
            w = L->out;
        }
        if (nn_net_act_in_place(net, i))
            off -= w;   /* back onto the Linear's output */
        net->width[i + 1] = w;
        net->act_off[i] = off;
        off += w;
        if (w > maxw)
            maxw = w;
    }
    net->act_off[net->n_layers] = off;
    net->max_width = maxw;
    return 0;
}

nn_status nn_net_resolve(nn_net *net, size_t D, size_t *bad_layer)
{
    size_t old_D = net->width[0], had = net->max_width, bad;
    if (net->width[0] == D && net->max_width)
        return NN_OK;   /* resolved for this width already */
    bad = fill_widths(net, D);
    if (bad == 0)
        return NN_OK;
    if (bad_layer)
        *bad_layer = bad - 1;
    /* leave the widths of the last good forward in place: a pending
     * backward still needs them */
    net->max_width = 0;
    if (had && fill_widths(net, old_D) != 0)
        net->max_width = 0;
    return NN_ERR_SHAPE;
}

/* Grow *buf to hold `values` values of `esize` bytes; *cap in values. */
static nn_status grow(void **buf, size_t *cap, size_t values, size_t esize)
{
    size_t nbytes;
    void *p;
    if (values <= *cap && *buf)
        return NN_OK;
    if (!nn_mul_size(values, esize, &nbytes))
        return NN_ERR_OVERFLOW;
    p = nn_malloc(nbytes);
    if (!p)
        return NN_ERR_NOMEM;
    nn_free(*buf);
    *buf = p;
    *cap = values;
    return NN_OK;
}

nn_status nn_net_reserve(nn_net *net, size_t N)
{
    size_t es = nn_dtype_size(net->dtype), act_values, grad_values;
    size_t cap_g0 = net->cap_grad, cap_g1 = net->cap_grad;
    nn_status st;
    if (!nn_mul_size(N, net->act_off[net->n_layers], &act_values) ||
        !nn_mul_size(N, net->max_width, &grad_values))
        return NN_ERR_OVERFLOW;
    st = grow(&net->act, &net->cap_values, act_values, es);
    if (st == NN_OK)
        st = grow(&net->grad[0], &cap_g0, grad_values, es);
    if (st == NN_OK)
        st = grow(&net->grad[1], &cap_g1, grad_values, es);
    if (st != NN_OK)
        return st;
    net->cap_grad = cap_g0 < cap_g1 ? cap_g0 : cap_g1;
    return NN_OK;
}

nn_status nn_net_reserve_split(nn_net *net, size_t N)
{
    size_t i, per_row = 0, values;
    for (i = 1; i <= net->n_layers; i++)
        per_row += net->width[i];
    if (!nn_mul_size(N, per_row, &values))
        return NN_ERR_OVERFLOW;
    return grow(&net->gstack, &net->cap_gstack, values,
                nn_dtype_size(net->dtype));
}

static int split_mode = -1;

int nn_set_split_mode(int mode)
{
    int old = split_mode;
    split_mode = mode < 0 ? -1 : mode > 0;
    return old;
}

/*
 * Whether a training step (or a forward pass) of N rows should split its
 * batch between threads (net_step.c), and into how many parts: each
 * part must have NN_SPLIT_MIN_ROWS rows, and the step's products must be
 * big enough that two waits for the other threads cost little, yet small
 * enough that OpenBLAS's own split of each product is not better.
 */
#define NN_SPLIT_MIN_ROWS 16
#define NN_SPLIT_MIN_MACS 1.5e6     /* multiply-adds of a step's products */
#define NN_SPLIT_MAX_MACS 2.0e9

int nn_split_worth(const nn_net *net, size_t N, int training)
{
    size_t i;
    double macs = 0;
    if (split_mode == 0 || N < 2)
        return 0;
    if (split_mode > 0)   /* forced (tests): even one row a part */
        return N > NN_SPLIT_MAX ? NN_SPLIT_MAX : (int)N;
    if (N < 2 * NN_SPLIT_MIN_ROWS)
        return 0;
    for (i = 0; i < net->n_layers; i++)
        if (net->layers[i]->kind == NN_LINEAR)
            macs += (training ? 3.0 : 1.0) * (double)N *
                    (double)net->layers[i]->in * (double)net->layers[i]->out;
    if (macs < NN_SPLIT_MIN_MACS || macs > NN_SPLIT_MAX_MACS)
        return 0;
    i = N / NN_SPLIT_MIN_ROWS;
    return i > NN_SPLIT_MAX ? NN_SPLIT_MAX : (int)i;
}

/* Room to gather two minibatches of `batch` rows (inputs, labels, dense
 * targets): each buffer grows on its own, the capacities are the smaller. */
static nn_status reserve_gather(nn_net *net, size_t batch, size_t D, size_t C,
                                int labels, int dense)
{
    size_t es = nn_dtype_size(net->dtype), xv, tv, k;
    size_t cx[2] = {net->cap_xb, net->cap_xb}, ct[2] = {net->cap_tb, net->cap_tb};
    size_t cl[2] = {net->cap_lb, net->cap_lb};
    nn_status st = NN_OK;
    if (!nn_mul_size(batch, D, &xv) || !nn_mul_size(batch, C, &tv))
        return NN_ERR_OVERFLOW;
    for (k = 0; k < 2 && st == NN_OK; k++) {
        st = grow(&net->xb[k], &cx[k], xv, es);
        if (st == NN_OK && dense)
            st = grow(&net->tb[k], &ct[k], tv, es);
        if (st == NN_OK && labels)
            st = grow((void **)&net->lb[k], &cl[k], batch, sizeof(int64_t));
    }
    net->cap_xb = cx[0] < cx[1] ? cx[0] : cx[1];
    net->cap_tb = ct[0] < ct[1] ? ct[0] : ct[1];
    net->cap_lb = cl[0] < cl[1] ? cl[0] : cl[1];
    return st;
}

/* Ask for a row of X that a later chunk copies: rows come from random
 * places in a big X, and each one's first miss (and page walk) would
 * otherwise wait for memory on its own. */
static void prefetch_row(const char *row, size_t bytes)
{
#if defined(__GNUC__)
    size_t off;
    for (off = 0; off < bytes; off += 64)
        __builtin_prefetch(row + off, 0, 0);
#else
    (void)row;
    (void)bytes;
#endif
}

/* Rows order[first + r] of X (and of T and labels), r in the chunk's
 * range, into the gather buffers (one task chunk: NN_GATHER_ROWS rows). */
static void gather_chunk(void *arg, size_t chunk)
{
    const nn_gather *g = arg;
    size_t r = chunk * NN_GATHER_ROWS, end = r + NN_GATHER_ROWS;
    if (end > g->count)
        end = g->count;
    for (; r < end; r++) {
        size_t src = (size_t)g->order[r];
        if (r + NN_GATHER_ROWS < g->count)   /* a chunk ahead */
            prefetch_row(g->X + (size_t)g->order[r + NN_GATHER_ROWS] *
                                    g->x_row, g->x_row);
        memcpy(g->x + r * g->x_row, g->X + src * g->x_row, g->x_row);
        if (g->t)
            memcpy(g->t + r * g->t_row, g->T + src * g->t_row, g->t_row);
        if (g->l)
            g->l[r] = g->labels[src];
    }
}

void nn_gather_init(nn_task *task, nn_gather *g)
{
    memset(task, 0, sizeof *task);
    task->fn = gather_chunk;
    task->arg = g;
    task->n_chunks = (g->count + NN_GATHER_ROWS - 1) / NN_GATHER_ROWS;
}

static nn_status prepare(nn_net *net, size_t N, size_t D)
{
    nn_status st = nn_net_resolve(net, D, NULL);
    if (st != NN_OK)
        return st;
    return nn_net_reserve(net, N);
}

void *nn_net_output(const nn_net *net)
{
    size_t es = nn_dtype_size(net->dtype);
    return (char *)net->act +
           es * net->batch * net->act_off[net->n_layers - 1];
}

nn_status nn_net_forward(nn_net *net, void *out, const void *inp, size_t N,
                         size_t D)
{
    nn_status st = prepare(net, N, D);
    size_t out_values;
    if (st != NN_OK)
        return st;
    out_values = N * net->width[net->n_layers];
    st = net->dtype == NN_F32 ? nn_net_forward_split_impl_f32(net, inp, N)
                              : nn_net_forward_split_impl_f64(net, inp, N);
    if (st == NN_OK && out)
        memcpy(out, nn_net_output(net),
               out_values * nn_dtype_size(net->dtype));
    return st;
}

nn_status nn_net_backward(nn_net *net, void *dinp, const void *dout)
{
    if (net->dtype == NN_F32)
        return nn_net_backward_impl_f32(net, dinp, dout, NULL);
    return nn_net_backward_impl_f64(net, dinp, dout, NULL);
}

nn_status nn_net_train_step(nn_net *net, const nn_sgd *opt,
                            nn_loss_kind loss, const void *inp, size_t N,
                            size_t D, const int64_t *labels, const void *T,
                            double *loss_out, size_t *correct)
{
    nn_status st = prepare(net, N, D);
    if (st != NN_OK)
        return st;
    if (N == 0)
        return NN_ERR_SHAPE;
    if (net->dtype == NN_F32)
        return nn_net_train_step_impl_f32(net, opt, loss, inp, N, labels, T,
                                          loss_out, correct);
    return nn_net_train_step_impl_f64(net, opt, loss, inp, N, labels, T,
                                      loss_out, correct);
}

nn_status nn_net_fit_epoch(nn_net *net, const nn_sgd *opt,
                           nn_loss_kind loss, const void *X, size_t n,
                           size_t D, const int64_t *labels, const void *T,
                           size_t C, const int64_t *order, size_t batch,
                           nn_progress_fn progress, void *ctx,
                           nn_epoch_result *res)
{
    nn_status st;
    size_t b = n < batch ? n : batch;
    memset(res, 0, sizeof *res);
    if (batch == 0)
        return NN_ERR_ARG;
    if (n == 0)
        return NN_OK;
    st = prepare(net, b, D);
    if (st == NN_OK && order)
        st = reserve_gather(net, b, D, C, labels != NULL, T != NULL);
    if (st != NN_OK)
        return st;
    if (net->dtype == NN_F32)
        return nn_net_fit_epoch_impl_f32(net, opt, loss, X, n, D, labels, T,
                                         C, order, batch, progress, ctx, res);
    return nn_net_fit_epoch_impl_f64(net, opt, loss, X, n, D, labels, T, C,
                                     order, batch, progress, ctx, res);
}

void nn_sgd_step(const nn_sgd *opt)
{
    if (opt->dtype == NN_F32)
        nn_sgd_step_all_f32(opt);
    else
        nn_sgd_step_all_f64(opt);
}
