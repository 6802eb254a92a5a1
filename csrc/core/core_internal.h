/*
 * core_internal.h: what the core's files share but the API does not
 * show: the per-dtype kernels behind the op table (ops.c) and the
 * optimizer kinds (optim.c), defined by the template files.
 */
#ifndef NN_CORE_INTERNAL_H
#define NN_CORE_INTERNAL_H
#include "nn.h"

#define NN_DECLARE_OP_DT(name, sfx)                                          \
    nn_status nn_op_##name##_forward_##sfx(const nn_node_io *io);           \
    nn_status nn_op_##name##_backward_##sfx(const nn_node_io *io);
#define NN_DECLARE_OP(name)                                                  \
    NN_DECLARE_OP_DT(name, f32)                                              \
    NN_DECLARE_OP_DT(name, f64)

NN_DECLARE_OP(linear)
NN_DECLARE_OP(act)
NN_DECLARE_OP(softmax)
NN_DECLARE_OP(log_softmax)
NN_DECLARE_OP(add)
NN_DECLARE_OP(subtract)
NN_DECLARE_OP(multiply)
NN_DECLARE_OP(average)
NN_DECLARE_OP(concatenate)
NN_DECLARE_OP(dropout)
NN_DECLARE_OP(batchnorm)
NN_DECLARE_OP(layernorm)
nn_status nn_op_batchnorm_commit_f32(const nn_node_io *io);
nn_status nn_op_batchnorm_commit_f64(const nn_node_io *io);
nn_status nn_op_norm_param_grads_f32(const nn_node_io *io);
nn_status nn_op_norm_param_grads_f64(const nn_node_io *io);
nn_status nn_op_layernorm_param_grads_f32(const nn_node_io *io);
nn_status nn_op_layernorm_param_grads_f64(const nn_node_io *io);
nn_status nn_op_linear_param_grads_f32(const nn_node_io *io);
nn_status nn_op_linear_param_grads_f64(const nn_node_io *io);

#define NN_DECLARE_OPTIM_DT(name, sfx)                                        \
    void nn_##name##_update_##sfx(const nn_optim *o, const nn_segment *s,    \
                                  size_t lo, size_t hi);                     \
    nn_status nn_##name##_fold_gemm_##sfx(const nn_optim *o,                 \
                                          const nn_segment *s, size_t r0,    \
                                          size_t r1, const void *A,          \
                                          size_t lda, const void *B,         \
                                          size_t ldb, size_t K);
NN_DECLARE_OPTIM_DT(sgd, f32)
NN_DECLARE_OPTIM_DT(sgd, f64)

/* The kinds without a folded form: update only */
#define NN_DECLARE_UPDATE(name)                                              \
    void nn_##name##_update_f32(const nn_optim *o, const nn_segment *s,      \
                                size_t lo, size_t hi);                       \
    void nn_##name##_update_f64(const nn_optim *o, const nn_segment *s,      \
                                size_t lo, size_t hi);
NN_DECLARE_UPDATE(adam)
NN_DECLARE_UPDATE(adamw)
NN_DECLARE_UPDATE(rmsprop)
NN_DECLARE_UPDATE(adagrad)
void nn_adagrad_init_f32(const nn_optim *o, const nn_segment *s);
void nn_adagrad_init_f64(const nn_optim *o, const nn_segment *s);

/* Gradient clipping passes over n values (clip.c): the sum of squares (in
 * double), g *= c, g clamped to [-c, c] */
#define NN_DECLARE_CLIP(real, sfx)                                           \
    double nn_clip_sumsq_##sfx(const real *g, size_t n);                     \
    void nn_clip_scale_##sfx(real *g, size_t n, real c);                     \
    void nn_clip_values_##sfx(real *g, size_t n, real c);
NN_DECLARE_CLIP(float, f32)
NN_DECLARE_CLIP(double, f64)

/* 1 when a training step must have every gradient before any update:
 * the hooks ask for it, the optimizer clips by global norm, or the graph
 * calls external layers (one may fail in its backward, and the step must
 * then leave every parameter as it was). Such a step runs the engine's
 * deferred path. */
static inline int nn_updates_deferred(const nn_graph *g, const nn_optim *opt,
                                      const nn_hooks *hooks)
{
    return (hooks && hooks->deferred) || (opt && opt->clip_norm > 0) ||
           (g && (g->flags_any & NN_OP_EXTERNAL));
}

/* A training step or forward pass may split its batch between at most
 * this many threads (graph_run.c). */
#define NN_SPLIT_MAX 16
/* At most this many inputs per node, inputs and outputs per graph (io
 * arrays live on the stack). */
#define NN_MAX_IN 64

/* Update all of segment s from its gradient, big ones split between the
 * threads (optim.c). */
void nn_optim_update_segment(const nn_optim *o, const nn_segment *s);

/* ---- parameter gradients (graph_run.c) ---- */

enum { NN_PG_ACCUMULATE = 0, NN_PG_TRAIN = 1 };

struct nn_pg {
    int mode;                 /* NN_PG_ACCUMULATE: add into grad (a user's
                                 backward); NN_PG_TRAIN: a training step */
    int deferred;             /* TRAIN: gradients only, updates later */
    const nn_graph *g;        /* NULL for a layer on its own */
    size_t node;              /* the node whose backward runs */
    nn_layer *layer;          /* its layer */
    const nn_optim *opt;
    const nn_optmap *map;
    const nn_hooks *hooks;
    size_t part, parts;       /* this thread's share of every tensor */
};

static inline void nn_pg_init(nn_pg *pg, int mode, const nn_graph *g,
                              const nn_optim *opt, const nn_optmap *map,
                              const nn_hooks *hooks, size_t part,
                              size_t parts)
{
    pg->mode = mode;
    pg->deferred = nn_updates_deferred(g, opt, hooks);
    pg->g = g;
    pg->node = 0;
    pg->layer = NULL;
    pg->opt = opt;
    pg->map = map;
    pg->hooks = hooks;
    pg->part = part;
    pg->parts = parts;
}

static inline void nn_pg_at_node(nn_pg *pg, size_t k)
{
    pg->node = k;
    pg->layer = pg->g->nodes[k].layer;
}

/* ---- workspace (graph.c) ---- */

/* Room for a batch of N rows: values, op workspace, and gradients when
 * grads is 1 (grows only) */
nn_status nn_ws_reserve(const nn_graph *g, nn_ws *ws, size_t N, int grads);
/* Point every value, gradient and node workspace at the batch of N
 * rows, the inputs at x */
void nn_ws_bind(const nn_graph *g, nn_ws *ws, const void *const *x,
                size_t N);

/* fit's gather of one minibatch: for each array, rows order[0..count)
 * of src into dst (row bytes each). A task for the pool. */
#define NN_GATHER_MAX (2 * NN_MAX_IN + 1)
typedef struct nn_gather {
    size_t n;
    struct {
        char *dst;
        const char *src;
        size_t row;
    } a[NN_GATHER_MAX];
    const int64_t *order;
    size_t count;
} nn_gather;
#define NN_GATHER_ROWS 2     /* rows per task chunk: a few microseconds */
void nn_gather_add(nn_gather *g, void *dst, const void *src,
                   size_t row_bytes);
void nn_gather_init(nn_task *task, nn_gather *g);

/* Threads worth splitting a training step (training 1) or forward pass
 * (0) of N rows between; 0 or 1: none (graph.c) */
int nn_split_worth(const nn_graph *g, size_t N, int training);

/* ---- the per-dtype engine (graph_run.c) ---- */

#define NN_DECLARE_RUN(sfx)                                                  \
nn_status nn_graph_forward_impl_##sfx(nn_graph *g, nn_ws *ws,                \
                                      const nn_run *run,                     \
                                      const void *const *x, size_t N);       \
nn_status nn_graph_backward_impl_##sfx(nn_graph *g, nn_ws *ws,               \
                                       const void *const *dout,              \
                                       void *const *dx);                     \
nn_status nn_graph_train_step_impl_##sfx(                                    \
    nn_graph *g, nn_ws *ws, const nn_run *run, nn_optim *opt,                \
    const nn_optmap *map, const nn_hooks *hooks, const void *const *x,       \
    size_t N, const nn_targets *tg, nn_step_result *res);                    \
nn_status nn_graph_fit_epoch_impl_##sfx(                                     \
    nn_graph *g, nn_ws *ws, nn_run *run, nn_optim *opt,                      \
    const nn_optmap *map, const nn_hooks *hooks, const void *const *X,       \
    size_t n, const nn_targets *tg, const int64_t *order, size_t batch,      \
    nn_progress_fn progress, void *ctx, nn_epoch_result *res);            \
nn_status nn_graph_grad_step_impl_##sfx(                                     \
    nn_graph *g, nn_ws *ws, const nn_run *run, nn_optim *opt,                \
    const nn_optmap *map, const nn_hooks *hooks, const void *const *x,       \
    size_t N, size_t divisor, const nn_targets *tg, nn_step_result *res);    \
nn_status nn_graph_apply_step_impl_##sfx(                                    \
    nn_graph *g, nn_ws *ws, const nn_run *run, nn_optim *opt,                \
    const nn_optmap *map, size_t N);
NN_DECLARE_RUN(f32)
NN_DECLARE_RUN(f64)

#endif
