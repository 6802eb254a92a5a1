/*
 * ops.c: the op table, one entry per layer kind (nn_kind), in the spirit
 * of kann's kad_op_list. The graph engine, the binding and the file
 * format ask this table what a kind does: how many inputs it takes, its
 * output width, its parameter tensors, its workspace, and its forward,
 * backward and parameter-gradient kernels (float32 and float64). A new
 * layer kind is a kernel file, an entry here and a value in nn_kind.
 */
#include "nn.h"
#include "core_internal.h"

#include <math.h>
#include <string.h>

/* ---- output widths ---- */

/* Linear: the input must have in_features columns */
static nn_status width_linear(const nn_layer *L, const size_t *in_w,
                              size_t n_in, size_t *out_w, size_t *bad)
{
    (void)n_in;
    *bad = 0;
    if (in_w[0] != L->in)
        return NN_ERR_SHAPE;
    *out_w = L->out;
    return NN_OK;
}

/* activations: any width */
static nn_status width_same(const nn_layer *L, const size_t *in_w,
                            size_t n_in, size_t *out_w, size_t *bad)
{
    (void)L;
    (void)n_in;
    *bad = 0;
    *out_w = in_w[0];
    return NN_OK;
}

/* softmax, log-softmax: at least one column */
static nn_status width_rows(const nn_layer *L, const size_t *in_w,
                            size_t n_in, size_t *out_w, size_t *bad)
{
    (void)L;
    (void)n_in;
    *bad = 0;
    if (in_w[0] == 0)
        return NN_ERR_SHAPE;
    *out_w = in_w[0];
    return NN_OK;
}

/* elementwise merges: every input as wide as the first */
static nn_status width_equal(const nn_layer *L, const size_t *in_w,
                             size_t n_in, size_t *out_w, size_t *bad)
{
    size_t i;
    (void)L;
    for (i = 1; i < n_in; i++) {
        if (in_w[i] != in_w[0]) {
            *bad = i;
            return NN_ERR_SHAPE;
        }
    }
    *out_w = in_w[0];
    return NN_OK;
}

/* concatenate: the sum of the widths */
static nn_status width_sum(const nn_layer *L, const size_t *in_w,
                           size_t n_in, size_t *out_w, size_t *bad)
{
    size_t i, w = 0;
    (void)L;
    for (i = 0; i < n_in; i++) {
        if (w + in_w[i] < w) {
            *bad = i;
            return NN_ERR_SHAPE;
        }
        w += in_w[i];
    }
    *out_w = w;
    return NN_OK;
}

/* ---- tensors ---- */

static void set_tensor(nn_tensor *t, const char *name, int ndim, size_t d0,
                       size_t d1, int buffer)
{
    memset(t, 0, sizeof *t);
    strncpy(t->name, name, NN_TENSOR_NAME - 1);
    t->ndim = ndim;
    t->dim[0] = d0;
    t->dim[1] = ndim == 2 ? d1 : 1;
    t->n = t->dim[0] * t->dim[1];
    t->buffer = buffer;
}

/* Linear: W (in, out), then b (out) with a bias */
static nn_status tensors_linear(nn_layer *L)
{
    size_t n;
    if (L->in == 0 || L->out == 0)
        return NN_ERR_ARG;
    if (!nn_mul_size(L->in, L->out, &n) || n + L->out < n)
        return NN_ERR_OVERFLOW;
    set_tensor(&L->t[0], "W", 2, L->in, L->out, 0);
    L->n_tensors = L->n_params = 1;
    if (L->bias) {
        set_tensor(&L->t[1], "b", 1, L->out, 1, 0);
        L->n_tensors = L->n_params = 2;
    }
    return NN_OK;
}

/* BatchNorm, LayerNorm: gamma (F), beta (F) when affine, then
 * BatchNorm's running_mean, running_var, num_batches_tracked (buffers)
 * when it tracks them */
static nn_status tensors_norm(nn_layer *L, int running)
{
    size_t k = 0;
    if (L->in == 0)
        return NN_ERR_ARG;
    if (L->bias) {
        set_tensor(&L->t[k++], "gamma", 1, L->in, 1, 0);
        set_tensor(&L->t[k++], "beta", 1, L->in, 1, 0);
    }
    L->n_params = k;
    if (running) {
        set_tensor(&L->t[k++], "running_mean", 1, L->in, 1, 1);
        set_tensor(&L->t[k++], "running_var", 1, L->in, 1, 1);
        set_tensor(&L->t[k++], "num_batches_tracked", 1, 1, 1, 1);
    }
    L->n_tensors = k;
    return NN_OK;
}

static nn_status tensors_batchnorm(nn_layer *L)
{
    return tensors_norm(L, L->arg[2] != 0);
}

static nn_status tensors_layernorm(nn_layer *L)
{
    return tensors_norm(L, 0);
}

/* the input has `in` features; the output too */
static nn_status width_features(const nn_layer *L, const size_t *in_w,
                                size_t n_in, size_t *out_w, size_t *bad)
{
    (void)n_in;
    *bad = 0;
    if (in_w[0] != L->in)
        return NN_ERR_SHAPE;
    *out_w = L->in;
    return NN_OK;
}

/* xhat (N, F); BatchNorm's mean, invstd and variance (F each),
 * LayerNorm's invstd per row */
static void workspace_batchnorm(const nn_layer *L, size_t out_w,
                                size_t *per_row, size_t *fixed)
{
    (void)L;
    *per_row = out_w;
    *fixed = 3 * out_w;
}

static void workspace_layernorm(const nn_layer *L, size_t out_w,
                                size_t *per_row, size_t *fixed)
{
    (void)L;
    *per_row = out_w + 1;
    *fixed = 0;
}

/* LeakyReLU's and ELU's backward can use the output only when arg[0]
 * (slope, alpha) is >= 0: the sign of the output then tells the sign of
 * the input */
static int out_bwd_sign_kept(const nn_layer *L)
{
    return L->arg[0] >= 0;
}

/* ---- initial values ---- */

static void store(void *p, nn_dtype dt, size_t i, double v)
{
    if (dt == NN_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* W (in, out) drawn by scheme (never all equal: symmetry breaking), b 0 */
static void init_linear(nn_layer *L, nn_dtype dt, nn_rng *rng,
                        nn_init scheme)
{
    size_t i, n = L->in * L->out;
    double fan_in = (double)L->in, fan_out = (double)L->out;
    for (i = 0; i < n; i++) {
        double v;
        if (scheme == NN_INIT_HE)
            v = sqrt(2.0 / fan_in) * nn_rng_normal(rng);
        else if (scheme == NN_INIT_GLOROT)
            v = sqrt(6.0 / (fan_in + fan_out)) *
                (2 * nn_rng_uniform(rng) - 1);
        else
            v = (2 * nn_rng_uniform(rng) - 1) / sqrt(fan_in);
        store(L->t[0].data, dt, i, v);
    }
    if (L->bias)
        for (i = 0; i < L->out; i++)
            store(L->t[1].data, dt, i, 0);
}

/* gamma 1, beta 0, running_mean 0, running_var 1, batches 0 */
static void init_norm(nn_layer *L, nn_dtype dt, nn_rng *rng, nn_init scheme)
{
    size_t k, i;
    (void)rng;
    (void)scheme;
    for (k = 0; k < L->n_tensors; k++) {
        double v = strcmp(L->t[k].name, "gamma") == 0 ||
                           strcmp(L->t[k].name, "running_var") == 0
                       ? 1.0
                       : 0.0;
        for (i = 0; i < L->t[k].n; i++)
            store(L->t[k].data, dt, i, v);
    }
}

static double macs_linear(const nn_layer *L)
{
    return (double)L->in * (double)L->out;
}

/* ---- the table ---- */

/* An external layer (written in the host language): its callbacks do the
 * work, in either dtype; without callbacks it cannot run. */
static nn_status width_external(const nn_layer *L, const size_t *in_w,
                                size_t n_in, size_t *out_w, size_t *bad)
{
    *bad = 0;
    if (!L->ext.out_width)
        return NN_ERR_ARG;
    return L->ext.out_width(L->ext.ctx, in_w, n_in, out_w);
}

static nn_status external_forward(const nn_node_io *io)
{
    const nn_external *e = &io->L->ext;
    return e->forward ? e->forward(e->ctx, io) : NN_ERR_ARG;
}

static nn_status external_backward(const nn_node_io *io)
{
    const nn_external *e = &io->L->ext;
    return e->backward ? e->backward(e->ctx, io) : NN_ERR_ARG;
}

#define KERNELS(name)                                                       \
    .forward = {nn_op_##name##_forward_f32, nn_op_##name##_forward_f64},   \
    .backward = {nn_op_##name##_backward_f32, nn_op_##name##_backward_f64}

#define ACTIVATION(label, extra_flags)                                      \
    .name = label, .min_in = 1, .max_in = 1,                                \
    .flags = NN_OP_ROWWISE | NN_OP_ELEMENTWISE | (extra_flags),             \
    .out_width = width_same, KERNELS(act)

#define MERGE(label, most, width)                                           \
    .name = label, .min_in = 2, .max_in = most, .flags = NN_OP_ROWWISE,     \
    .out_width = width

const nn_op nn_op_table[NN_KIND_COUNT] = {
    [NN_LINEAR] = {.name = "linear", .min_in = 1, .max_in = 1,
                   .flags = NN_OP_ROWWISE,
                   .config = NN_CFG_IN | NN_CFG_OUT | NN_CFG_BIAS,
                   .out_width = width_linear, .tensors = tensors_linear,
                   KERNELS(linear),
                   .param_grads = {nn_op_linear_param_grads_f32,
                                   nn_op_linear_param_grads_f64},
                   .init = init_linear, .macs = macs_linear},
    [NN_IDENTITY] = {ACTIVATION("identity", NN_OP_OUT_BWD)},
    [NN_RELU] = {ACTIVATION("relu", NN_OP_OUT_BWD)},
    [NN_LEAKY_RELU] = {ACTIVATION("leaky_relu", NN_OP_OUT_BWD),
                       .arg_names = {"slope"}, .arg_defaults = {0.01},
                       .out_bwd = out_bwd_sign_kept},
    [NN_SIGMOID] = {ACTIVATION("sigmoid", NN_OP_OUT_BWD | NN_OP_NEEDS_OUT)},
    [NN_TANH] = {ACTIVATION("tanh", NN_OP_OUT_BWD | NN_OP_NEEDS_OUT)},
    [NN_SOFTPLUS] = {ACTIVATION("softplus", 0)},
    [NN_STEP] = {ACTIVATION("step", NN_OP_OUT_BWD)},
    [NN_COS] = {ACTIVATION("cos", 0)},
    [NN_GELU] = {ACTIVATION("gelu", 0), .arg_names = {"approximate"},
                 .arg_defaults = {0.0}},
    [NN_SILU] = {ACTIVATION("silu", 0)},
    /* ELU: from its output with alpha >= 0, from its input otherwise */
    [NN_ELU] = {ACTIVATION("elu", NN_OP_OUT_BWD | NN_OP_NEEDS_OUT),
                .arg_names = {"alpha"}, .arg_defaults = {1.0},
                .out_bwd = out_bwd_sign_kept},
    [NN_SOFTSIGN] = {ACTIVATION("softsign", NN_OP_OUT_BWD | NN_OP_NEEDS_OUT)},
    /* Hardtanh: [lo < a < hi] is [lo < z < hi] for any lo, hi */
    [NN_HARDTANH] = {ACTIVATION("hardtanh", NN_OP_OUT_BWD | NN_OP_NEEDS_OUT),
                     .arg_names = {"min_val", "max_val"},
                     .arg_defaults = {-1.0, 1.0}},
    [NN_SOFTMAX] = {.name = "softmax", .min_in = 1, .max_in = 1,
                    .flags = NN_OP_ROWWISE | NN_OP_NEEDS_OUT,
                    .out_width = width_rows, KERNELS(softmax)},
    [NN_LOG_SOFTMAX] = {.name = "log_softmax", .min_in = 1, .max_in = 1,
                        .flags = NN_OP_ROWWISE | NN_OP_NEEDS_OUT,
                        .out_width = width_rows, KERNELS(log_softmax)},
    [NN_ADD] = {MERGE("add", 0, width_equal), KERNELS(add)},
    [NN_SUBTRACT] = {MERGE("subtract", 2, width_equal), KERNELS(subtract)},
    [NN_MULTIPLY] = {MERGE("multiply", 0, width_equal), KERNELS(multiply)},
    [NN_AVERAGE] = {MERGE("average", 0, width_equal), KERNELS(average)},
    [NN_CONCATENATE] = {MERGE("concatenate", 0, width_sum),
                        KERNELS(concatenate)},
    [NN_DROPOUT] = {.name = "dropout", .min_in = 1, .max_in = 1,
                    .flags = NN_OP_ROWWISE | NN_OP_ELEMENTWISE | NN_OP_OUT_BWD,
                    .arg_names = {"p"}, .arg_defaults = {0.5},
                    .out_width = width_same, KERNELS(dropout)},
    [NN_BATCHNORM] = {.name = "batchnorm", .min_in = 1, .max_in = 1,
                      .flags = 0, .config = NN_CFG_IN | NN_CFG_BIAS,
                      .arg_names = {"eps", "momentum", "track_running_stats"},
                      .arg_defaults = {1e-5, 0.1, 1},
                      .out_width = width_features,
                      .tensors = tensors_batchnorm,
                      .workspace = workspace_batchnorm, KERNELS(batchnorm),
                      .param_grads = {nn_op_norm_param_grads_f32,
                                      nn_op_norm_param_grads_f64},
                      .commit = {nn_op_batchnorm_commit_f32,
                                 nn_op_batchnorm_commit_f64},
                      .init = init_norm},
    [NN_LAYERNORM] = {.name = "layernorm", .min_in = 1, .max_in = 1,
                      .flags = NN_OP_ROWWISE, .config = NN_CFG_IN | NN_CFG_BIAS,
                      .arg_names = {"eps"}, .arg_defaults = {1e-5},
                      .out_width = width_features,
                      .tensors = tensors_layernorm,
                      .workspace = workspace_layernorm, KERNELS(layernorm),
                      .param_grads = {nn_op_layernorm_param_grads_f32,
                                      nn_op_layernorm_param_grads_f64},
                      .init = init_norm},
    /* whole batch only (the host's code sees every row at once); its
     * tensors are added by the host (nn_layer_add_tensor) */
    [NN_EXTERNAL] = {.name = "external", .min_in = 1, .max_in = 0,
                     .flags = NN_OP_EXTERNAL, .out_width = width_external,
                     .forward = {external_forward, external_forward},
                     .backward = {external_backward, external_backward}},
};


const char *nn_kind_name(nn_kind k)
{
    const nn_op *op = nn_op_of(k);
    return op ? op->name : "unknown";
}

int nn_kind_from_name(const char *name)
{
    int k;
    for (k = 0; k < NN_KIND_COUNT; k++)
        if (strcmp(name, nn_op_table[k].name) == 0)
            return k;
    return -1;
}

nn_status nn_layer_setup(nn_layer *L)
{
    const nn_op *op = nn_op_of(L->kind);
    size_t i;
    if (!op)
        return NN_ERR_ARG;
    for (i = 0; i < NN_MAX_TENSORS; i++)
        memset(&L->t[i], 0, sizeof L->t[i]);
    L->n_tensors = L->n_params = 0;
    return op->tensors ? op->tensors(L) : NN_OK;
}

nn_status nn_layer_add_tensor(nn_layer *L, const char *name, int ndim,
                              size_t d0, size_t d1, int buffer)
{
    size_t k, n;
    if (L->kind != NN_EXTERNAL || L->n_tensors >= NN_MAX_TENSORS ||
        !name[0] || strlen(name) >= NN_TENSOR_NAME || (ndim != 1 && ndim != 2) ||
        d0 == 0 || (ndim == 2 && d1 == 0))
        return NN_ERR_ARG;
    for (k = 0; k < L->n_tensors; k++)
        if (strcmp(L->t[k].name, name) == 0)
            return NN_ERR_ARG;
    if (!nn_mul_size(d0, ndim == 2 ? d1 : 1, &n))
        return NN_ERR_OVERFLOW;
    k = buffer ? L->n_tensors : L->n_params;
    memmove(&L->t[k + 1], &L->t[k], (L->n_tensors - k) * sizeof L->t[0]);
    set_tensor(&L->t[k], name, ndim, d0, d1, buffer);
    L->n_tensors++;
    L->n_params += !buffer;
    return NN_OK;
}

size_t nn_layer_param_count(const nn_layer *L)
{
    size_t i, n = 0;
    for (i = 0; i < L->n_params; i++)
        n += L->t[i].n;
    return n;
}

size_t nn_layer_buffer_count(const nn_layer *L)
{
    size_t i, n = 0;
    for (i = L->n_params; i < L->n_tensors; i++)
        n += L->t[i].n;
    return n;
}

/* ---- a layer on its own ---- */

nn_status nn_layer_out_width(const nn_layer *L, const size_t *in_w,
                             size_t n_in, size_t *out_w, size_t *bad)
{
    const nn_op *op = nn_op_of(L->kind);
    *bad = 0;
    if (!op || n_in < op->min_in || (op->max_in && n_in > op->max_in) ||
        n_in > NN_MAX_IN)
        return NN_ERR_ARG;
    return op->out_width(L, in_w, n_in, out_w, bad);
}

size_t nn_layer_workspace(const nn_layer *L, size_t out_w, size_t N)
{
    const nn_op *op = nn_op_of(L->kind);
    size_t per_row = 0, fixed = 0;
    if (op && op->workspace)
        op->workspace(L, out_w, &per_row, &fixed);
    return per_row * N + fixed;
}

static void io_for_layer(nn_node_io *io, const nn_layer *L, nn_dtype dt,
                         size_t n_in, const void *const *x,
                         const size_t *in_w, size_t N, void *y, size_t out_w,
                         void *ws, int training, uint64_t seed, uint64_t step)
{
    memset(io, 0, sizeof *io);
    io->L = L;
    io->dt = dt;
    io->n = io->N = N;
    io->n_in = n_in;
    io->x = x;
    io->in_w = in_w;
    io->y = y;
    io->out_w = out_w;
    io->ws = ws;
    io->training = training;
    io->seed = seed;
    io->step = step;
}

nn_status nn_layer_forward(const nn_layer *L, nn_dtype dt, size_t n_in,
                           const void *const *x, const size_t *in_w,
                           size_t N, void *y, size_t out_w, void *ws,
                           int training, uint64_t seed, uint64_t step)
{
    nn_node_io io;
    io_for_layer(&io, L, dt, n_in, x, in_w, N, y, out_w, ws, training, seed,
                 step);
    return nn_op_of(L->kind)->forward[dt](&io);
}

nn_status nn_layer_backward(nn_layer *L, nn_dtype dt, size_t n_in,
                            const void *const *x, const size_t *in_w,
                            size_t N, const void *y, size_t out_w, void *ws,
                            const void *dy, void *const *dx, int training,
                            uint64_t seed, uint64_t step)
{
    unsigned char acc[NN_MAX_IN] = {0};
    nn_node_io io;
    nn_pg pg;
    io_for_layer(&io, L, dt, n_in, x, in_w, N, (void *)y, out_w, ws, training,
                 seed, step);
    io.dy = dy;
    io.dx = dx;
    io.dx_acc = acc;
    if (L->trainable && L->n_params > 0) {
        nn_pg_init(&pg, NN_PG_ACCUMULATE, NULL, NULL, NULL, NULL, 0, 1);
        pg.layer = L;
        io.pg = &pg;
    }
    return nn_op_of(L->kind)->backward[dt](&io);
}
