/* net_internal.h: the per-dtype network functions behind nn_net_*.
 * Defined by net_step.c and sgd.c (templates), called by net.c. */
#ifndef NN_NET_INTERNAL_H
#define NN_NET_INTERNAL_H
#include "nn.h"

#define NN_DECLARE_NET_IMPL(real, sfx)                                      \
nn_status nn_net_forward_impl_##sfx(nn_net *net, const real *inp, size_t N);\
nn_status nn_net_forward_split_impl_##sfx(nn_net *net, const real *inp,     \
                                          size_t N);                        \
nn_status nn_net_backward_impl_##sfx(nn_net *net, real *dinp,               \
                                     const real *dout, const nn_sgd *opt);  \
nn_status nn_net_train_step_impl_##sfx(nn_net *net, const nn_sgd *opt,      \
                                       nn_loss_kind loss, const real *inp,  \
                                       size_t N, const int64_t *labels,     \
                                       const real *T, double *loss_out,     \
                                       size_t *correct);                    \
nn_status nn_net_fit_epoch_impl_##sfx(nn_net *net, const nn_sgd *opt,       \
                                      nn_loss_kind loss, const real *X,     \
                                      size_t n, size_t D,                   \
                                      const int64_t *labels, const real *T, \
                                      size_t C, const int64_t *order,       \
                                      size_t batch, nn_progress_fn progress,\
                                      void *ctx, nn_epoch_result *res);     \
nn_status nn_sgd_linear_step_##sfx(const nn_sgd *opt, const nn_layer *L,    \
                                   const real *x, const real *g, size_t N); \
nn_status nn_sgd_linear_step_part_##sfx(const nn_sgd *opt,                  \
                                        const nn_layer *L, const real *x,   \
                                        const real *g, size_t N,            \
                                        size_t part, size_t parts);         \
void nn_sgd_step_all_##sfx(const nn_sgd *opt);

/* A training step may split its batch between at most this many threads
 * (net_step.c, train_step_split). */
#define NN_SPLIT_MAX 16
/* Threads worth a split of a training step (training 1) or a forward pass
 * (0) of N rows (0 or 1: none), by its size and nn_set_split_mode
 * (net.c). */
int nn_split_worth(const nn_net *net, size_t N, int training);
/* Room for the split step's gradient stack: N rows of every layer's
 * output gradient. */
nn_status nn_net_reserve_split(nn_net *net, size_t N);

/* Elementwise passes over at least 2 x this many values are split with
 * the pool's workers (nn_parallel_range), in pieces on 64-byte edges. */
#define NN_PAR_GRAIN 16384
#define NN_PAR_ALIGN 16

/* fit's gather of one minibatch: rows order[0..count) of X (and T,
 * labels) into x (and t, l); row sizes in bytes. A task for the pool. */
typedef struct nn_gather {
    char *x;
    const char *X;
    size_t x_row;
    char *t;                 /* NULL without dense targets */
    const char *T;
    size_t t_row;
    int64_t *l;              /* NULL without labels */
    const int64_t *labels;
    const int64_t *order;
    size_t count;
} nn_gather;
#define NN_GATHER_ROWS 2     /* rows per task chunk: a few microseconds */
/* task: the chunks of g, for nn_task_post / nn_task_finish */
void nn_gather_init(nn_task *task, nn_gather *g);

NN_DECLARE_NET_IMPL(float, f32)
NN_DECLARE_NET_IMPL(double, f64)

#endif
