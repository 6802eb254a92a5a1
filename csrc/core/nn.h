/*
 * nn.h: the public C API of the nnlayers core.
 *
 * Pure C99, no Python.h. Every kernel works on flat row-major buffers and
 * takes its arguments as: outputs first, then inputs, then sizes.
 * Gradient buffers are named d<name>. Shapes are given in comments as
 * (rows, cols); N is the batch size.
 *
 * float32 and float64 kernels come from one source: the bodies in
 * linear.c, act.c, softmax.c, loss.c, sgd.c and net.c are templates over
 * `real` and compiled twice, by dtype_f32.c and dtype_f64.c. Each public
 * kernel therefore exists as name_f32 (float) and name_f64 (double).
 *
 * Kernels never allocate, print, abort or exit. Functions that can fail
 * return an nn_status. Backward kernels ACCUMULATE into parameter gradients
 * (dW, db); they OVERWRITE the input gradient (dinp).
 */
#ifndef NN_H
#define NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

typedef enum nn_status {
    NN_OK = 0,
    NN_ERR_SHAPE,       /* sizes do not agree */
    NN_ERR_NOMEM,       /* allocation failed */
    NN_ERR_OVERFLOW,    /* a byte count or a BLAS dimension does not fit */
    NN_ERR_LABEL,       /* a class label is outside [0, C) */
    NN_ERR_NONFINITE,   /* a loss became NaN or Inf during training */
    NN_ERR_INTERRUPTED, /* the progress callback asked to stop */
    NN_ERR_ARG          /* any other invalid argument */
} nn_status;

/* A static English description of a status, never NULL. */
const char *nn_status_str(nn_status s);

/* ------------------------------------------------------------------ */
/* Memory: every heap allocation of the core goes through these        */
/* ------------------------------------------------------------------ */

/* 64-byte aligned allocation; NULL on failure or when nbytes == 0 is
 * rounded to one cache line. Counted by nn_alloc_count(). */
void *nn_malloc(size_t nbytes);
/* Same, zero-filled, with the byte count n*size checked for overflow. */
void *nn_calloc(size_t n, size_t size);
void nn_free(void *p);
/* Number of successful nn_malloc/nn_calloc calls since the process began. */
uint64_t nn_alloc_count(void);
/* a*b into *out; returns 0 (and leaves *out alone) if it would overflow. */
int nn_mul_size(size_t a, size_t b, size_t *out);

/* ------------------------------------------------------------------ */
/* Random numbers (xoshiro256**), for weight init and shuffling        */
/* ------------------------------------------------------------------ */

typedef struct nn_rng { uint64_t s[4]; } nn_rng;

void nn_rng_seed(nn_rng *rng, uint64_t seed);
uint64_t nn_rng_next(nn_rng *rng);
double nn_rng_uniform(nn_rng *rng);   /* in [0, 1) */
double nn_rng_normal(nn_rng *rng);    /* standard normal (Box-Muller) */

/* ------------------------------------------------------------------ */
/* BLAS threading and the GEMM switch (see nn_blas.h)                  */
/* ------------------------------------------------------------------ */

int nn_blas_get_num_threads(void);
/* Sets OpenBLAS's thread count and makes the pool's workers for it;
 * NN_ERR_NOMEM when a thread cannot be started. */
nn_status nn_blas_set_num_threads(int n);
const char *nn_blas_config(void);
/* 1: route every matrix product through the naive reference GEMM
 * (for cross-checks); 0: OpenBLAS (default). Returns the old value. */
int nn_use_reference_gemm(int on);
/* Batch splitting of training steps (net_step.c): -1 by size (default),
 * 0 never, 1 whenever there are threads. Returns the old mode. */
int nn_set_split_mode(int mode);

/* ------------------------------------------------------------------ */
/* Worker threads (pool.c)                                             */
/* ------------------------------------------------------------------ */

/* Route OpenBLAS's parallel products to nnlayers' workers; 1 if done, 0
 * if this OpenBLAS cannot (it then keeps its own threads). Call once,
 * before the first product. */
int nn_pool_install(void);
int nn_pool_installed(void);
/* Make the workers for `threads` threads in all (the caller is one). */
nn_status nn_pool_reserve(int threads);
int nn_pool_workers(void);

/* Background work, cut into n_chunks chunks that run in any order on any
 * thread: fn(arg, chunk) for chunk in [0, n_chunks). nn_task_post offers
 * it to idle workers; nn_task_finish runs the chunks nobody took on the
 * calling thread and returns when all are done. Every posted task must be
 * finished before its memory goes. */
typedef struct nn_task {
    void (*fn)(void *arg, size_t chunk);
    void *arg;
    size_t n_chunks;
    size_t next, done;   /* the pool's counters */
} nn_task;
void nn_task_post(nn_task *t);
void nn_task_finish(nn_task *t);
/* Run all of t's chunks now, on this thread and idle workers, one chunk
 * per thread at most at a time; returns when all are done. */
void nn_task_run(nn_task *t);
/* Around a training step (net_step.c), which may split its batch between
 * up to `want` threads, each running a block of rows with every product on
 * its own thread. nn_step_begin waits for any other user thread's step,
 * then returns the threads to split between, >= 2, with OpenBLAS set to
 * one thread until nn_step_end; 0 for a whole step; -1 when there is no
 * pool (nothing to wait for). Pass its result to nn_step_end. */
int nn_step_begin(int want);
void nn_step_end(int parts);
/* Wait until no training step runs, and keep new ones waiting until
 * nn_steps_release (for a change of the thread count). */
void nn_steps_hold(void);
void nn_steps_release(void);
/* Test hook: 1 leaves OpenBLAS's thread count alone during splits, so
 * products on workers go parallel (run_parallel_jobs' own threads).
 * Returns the old value. */
int nn_split_keep_blas_threads(int on);
/* Training steps and forward passes that split their batch so far (for
 * tests). */
unsigned long long nn_split_steps(void);
/* fn(arg, lo, hi) over pieces [lo, hi) covering [0, n), run on this
 * thread and idle workers, returning when all are done. Pieces have at
 * least `grain` items, and edges on multiples of `align` (keep threads off
 * each other's cache lines); below 2 * grain, one call here. */
void nn_parallel_range(void (*fn)(void *arg, size_t lo, size_t hi), void *arg,
                       size_t n, size_t grain, size_t align);

/* ------------------------------------------------------------------ */
/* Layer kinds                                                         */
/* ------------------------------------------------------------------ */

typedef enum nn_kind {
    NN_LINEAR = 0,
    NN_IDENTITY,
    NN_RELU,
    NN_LEAKY_RELU,
    NN_SIGMOID,
    NN_TANH,
    NN_SOFTPLUS,
    NN_STEP,
    NN_COS,
    NN_SOFTMAX,
    NN_LOG_SOFTMAX,
    NN_KIND_COUNT
} nn_kind;

/* 1 for the elementwise activations (IDENTITY .. COS). */
int nn_kind_is_elementwise(nn_kind k);

typedef enum nn_dtype { NN_F32 = 0, NN_F64 = 1 } nn_dtype;

static inline size_t nn_dtype_size(nn_dtype t) { return t == NN_F32 ? 4 : 8; }

/*
 * A layer as the core sees it. Parameters and gradients are pointers into
 * memory owned elsewhere (a standalone layer's own block, or the parameter
 * block of the network it belongs to).
 *   LINEAR: W (in, out), b (out) or NULL, dW, db likewise.
 *   elementwise / softmax: in == out == 0 ("any width"), no parameters.
 */
typedef struct nn_layer {
    nn_kind kind;
    size_t in, out;
    double slope;       /* LEAKY_RELU's negative slope */
    int trainable;      /* 0: backward computes no dW/db, SGD skips it */
    void *W, *b;
    void *dW, *db;
} nn_layer;

/* Number of parameters of a layer (in*out + out for a biased LINEAR). */
size_t nn_layer_param_count(const nn_layer *L);

/* ------------------------------------------------------------------ */
/* Kernels, per dtype. FN(x) below stands for x_f32 and x_f64.          */
typedef enum nn_loss_kind {
    NN_LOSS_SOFTMAX_XENT = 0,
    NN_LOSS_BINARY_XENT,
    NN_LOSS_MSE,
    NN_LOSS_NLL
} nn_loss_kind;

/* ------------------------------------------------------------------ */

#define NN_DECLARE_KERNELS(real, sfx)                                        \
/* General matrix product on row-major buffers:                           \
 * C (M, N) = alpha * op(A) op(B) + beta * C, op(A) (M, K), op(B) (K, N).  \
 * Through OpenBLAS unless nn_use_reference_gemm(1). */                     \
nn_status nn_gemm_##sfx(int trans_a, int trans_b, size_t M, size_t N,      \
                        size_t K, real alpha, const real *A, size_t lda,   \
                        const real *B, size_t ldb, real beta, real *C,     \
                        size_t ldc);                                       \
/* The same product by three plain loops, for cross-checks. */            \
void nn_gemm_ref_##sfx(int trans_a, int trans_b, size_t M, size_t N,       \
                       size_t K, real alpha, const real *A, size_t lda,    \
                       const real *B, size_t ldb, real beta, real *C,      \
                       size_t ldc);                                        \
                                                                            \
/* Linear: out (N, O) = inp (N, I) W (I, O) + b (O). b may be NULL. */     \
nn_status nn_linear_forward_##sfx(real *out, const real *inp,              \
                                  const real *W, const real *b,            \
                                  size_t N, size_t I, size_t O);           \
/* dinp (N, I) = dout W^T      (skipped when dinp is NULL)                 \
 * dW (I, O)  += inp^T dout    (skipped when dW is NULL)                   \
 * db (O)     += sum_n dout[n] (skipped when db is NULL) */               \
nn_status nn_linear_backward_##sfx(real *dinp, real *dW, real *db,         \
                                   const real *dout, const real *inp,      \
                                   const real *W,                          \
                                   size_t N, size_t I, size_t O);          \
                                                                            \
/* Elementwise activation over n values: out = f(inp); out may be inp. */  \
void nn_act_forward_##sfx(nn_kind kind, double slope, real *out,           \
                          const real *inp, size_t n);                      \
/* dinp = dout * f'(inp); uses out (= f(inp)) where that is cheaper. */    \
void nn_act_backward_##sfx(nn_kind kind, double slope, real *dinp,         \
                           const real *dout, const real *inp,              \
                           const real *out, size_t n);                     \
/* The same two, with big blocks split between the threads (pool.c). */    \
void nn_act_forward_par_##sfx(nn_kind kind, double slope, real *out,       \
                              const real *inp, size_t n);                  \
void nn_act_backward_par_##sfx(nn_kind kind, double slope, real *dinp,     \
                               const real *dout, const real *inp,          \
                               const real *out, size_t n);                 \
/* Row-wise softmax and log-softmax, stable. out, inp (N, C). */           \
void nn_softmax_forward_##sfx(real *out, const real *inp, size_t N,        \
                              size_t C);                                   \
/* dinp = out * (dout - rowsum(dout * out)) */                             \
void nn_softmax_backward_##sfx(real *dinp, const real *dout,               \
                               const real *out, size_t N, size_t C);       \
void nn_log_softmax_forward_##sfx(real *out, const real *inp, size_t N,    \
                                  size_t C);                               \
/* dinp = dout - exp(out) * rowsum(dout) */                                \
void nn_log_softmax_backward_##sfx(real *dinp, const real *dout,           \
                                   const real *out, size_t N, size_t C);   \
                                                                            \
/* Forward and backward of any layer kind (dispatch). */                   \
nn_status nn_layer_forward_##sfx(const nn_layer *L, real *out,             \
                                 const real *inp, size_t N, size_t width); \
nn_status nn_layer_backward_##sfx(const nn_layer *L, real *dinp,           \
                                  const real *dout, const real *inp,       \
                                  const real *out, size_t N, size_t width);\
                                                                            \
/* Losses (nn_loss_kind, declared below). pred (N, C). Targets: labels  \
 * (N) int64 OR T (N, C), exactly one non-NULL (MSE and BCE take T only).\
 * nn_loss_mean: the loss averaged over the batch (1/N) into *loss;       \
 * nn_loss_rows: rows [0, N) of a bigger batch, the sum of their losses   \
 * into *sum and gradients scaled by invN (1 / the whole batch's rows).   \
 * dpred (N, C), when not NULL, receives dL/dpred. */                     \
nn_status nn_loss_mean_##sfx(nn_loss_kind kind, double *loss,             \
                             real *dpred, const real *pred,               \
                             const int64_t *labels, const real *T,        \
                             size_t N, size_t C);                         \
nn_status nn_loss_rows_##sfx(nn_loss_kind kind, double *sum, real *dpred,  \
                             const real *pred, const int64_t *labels,     \
                             const real *T, size_t N, size_t C,           \
                             double invN);                                \
/* Number of rows whose prediction matches the target: argmax for C > 1,  \
 * logit > 0 vs target > 0.5 for C == 1. */                                \
size_t nn_count_correct_##sfx(const real *pred, const int64_t *labels,     \
                              const real *T, size_t N, size_t C);          \
                                                                            \
/* SGD on n values (torch.optim.SGD, dampening 0):                         \
 *   g = grad + wd * param                                                 \
 *   if momentum: v = momentum * v + g;  g = nesterov ? g + momentum*v : v \
 *   param -= lr * g                                                       \
 * velocity may be NULL when momentum == 0. */                             \
void nn_sgd_update_##sfx(real *param, const real *grad, real *velocity,    \
                         size_t n, double lr, double momentum,             \
                         int nesterov, double weight_decay);

NN_DECLARE_KERNELS(float, f32)
NN_DECLARE_KERNELS(double, f64)

/* ------------------------------------------------------------------ */
/* Losses and optimiser as objects the network can drive               */
/* ------------------------------------------------------------------ */


/* Loss value and gradient for either dtype (dispatch on dt). */
nn_status nn_loss_eval(nn_dtype dt, nn_loss_kind kind, double *loss,
                       void *dpred, const void *pred, const int64_t *labels,
                       const void *T, size_t N, size_t C);
size_t nn_count_correct(nn_dtype dt, const void *pred, const int64_t *labels,
                        const void *T, size_t N, size_t C);

/* One contiguous run of parameters the optimiser updates. */
typedef struct nn_segment {
    void *param;
    void *grad;
    size_t n;
    const nn_layer *layer;   /* skipped while layer->trainable == 0 */
} nn_segment;

typedef struct nn_sgd {
    nn_dtype dtype;
    double lr, momentum, weight_decay;
    int nesterov;
    size_t n_segments;
    nn_segment *segments;    /* owned by the caller */
    void *velocity;          /* one block, sum of segment sizes; may be NULL
                                when momentum == 0 */
} nn_sgd;

/* One SGD step over every trainable segment. */
void nn_sgd_step(const nn_sgd *opt);

/* ------------------------------------------------------------------ */
/* Network: a chain of layers run by one call per direction            */
/* ------------------------------------------------------------------ */

/*
 * Workspace layout for a batch of N rows, widths w[0..L] (w[0] = input):
 *   act:  the output of layer i, (N, w[i+1]), at act + N * off[i]; an
 *         activation right after a Linear layer shares the Linear's block
 *         when its backward can do with its output (nn_net_act_in_place)
 *   grad: two ping-pong buffers of N * max(w) values each
 *   xb, tb, lb: gathered minibatches of inputs, dense targets and labels
 *           (fit), two of each: the next is gathered while one trains
 * The workspace grows (and only then allocates) when N or a width grows.
 */
typedef struct nn_net {
    nn_dtype dtype;
    size_t n_layers;
    nn_layer **layers;       /* borrowed; the caller keeps them alive */
    size_t *width;           /* n_layers + 1 */
    size_t *act_off;         /* n_layers + 1 (last = total) */
    size_t max_width;
    size_t batch;            /* rows of the last forward */
    size_t cap_values;       /* values the activation buffer holds */
    size_t cap_grad;         /* values each gradient buffer holds */
    void *act;
    void *grad[2];
    size_t cap_xb, cap_tb, cap_lb;
    void *xb[2];             /* fit: two minibatches, the one training and */
    void *tb[2];             /* the next one being gathered */
    int64_t *lb[2];
    const void *last_inp;    /* input of the last forward (not owned) */
    void *gstack;            /* split training step: every layer's output */
    size_t cap_gstack;       /* gradient, (N, width[i+1]) blocks */
} nn_net;

/* layers: n borrowed pointers, all of dtype dt. Allocates the index
 * arrays only; the workspace comes with the first forward. */
nn_status nn_net_init(nn_net *net, nn_dtype dt, nn_layer **layers, size_t n);
void nn_net_free(nn_net *net);

/* Check widths for an input of D columns; fills net->width. On a shape
 * error, *bad_layer receives the index of the first layer that rejects
 * its input width. */
nn_status nn_net_resolve(nn_net *net, size_t D, size_t *bad_layer);

/* 1 when layer i runs in place over the output of the Linear before it. */
int nn_net_act_in_place(const nn_net *net, size_t i);

/* Make sure the workspace fits N rows (allocates only when it grows). */
nn_status nn_net_reserve(nn_net *net, size_t N);

/* out (N, w[L]) = network(inp (N, D)); activations kept for backward.
 * inp must stay unchanged until the backward that follows. */
nn_status nn_net_forward(nn_net *net, void *out, const void *inp, size_t N,
                         size_t D);
/* Backward through the whole chain from dout (N, w[L]). dinp (N, D) may
 * be NULL (the first layer's input gradient is then skipped). Parameter
 * gradients accumulate. */
nn_status nn_net_backward(nn_net *net, void *dinp, const void *dout);

/* Where the output of the last forward lives (N, w[L]). */
void *nn_net_output(const nn_net *net);

/*
 * One training step: forward, loss, gradient (parameter gradients are
 * overwritten, not accumulated), backward without the first layer's input
 * gradient, SGD update. Targets as for the losses.
 */
nn_status nn_net_train_step(nn_net *net, const nn_sgd *opt,
                            nn_loss_kind loss, const void *inp, size_t N,
                            size_t D, const int64_t *labels, const void *T,
                            double *loss_out, size_t *correct);

/* Called by nn_net_fit_epoch after every batch, with the batch index and
 * the running sums. Returns nonzero to stop the epoch (for Ctrl-C). */
typedef int (*nn_progress_fn)(void *ctx, size_t batch, size_t n_batches,
                              double loss_sum, size_t correct, size_t seen);

typedef struct nn_epoch_result {
    double loss_sum;         /* sum over samples of the per-sample loss */
    size_t correct;          /* rows classified correctly */
    size_t seen;             /* samples processed */
    size_t failed_batch;     /* batch index of a non-finite loss */
} nn_epoch_result;

/*
 * One epoch of minibatch SGD over X (n, D) with targets labels (n) or
 * T (n, C). order (n) is the sample order (NULL: 0..n-1); batches of
 * `batch` rows, the last one partial. Rows are gathered into the
 * workspace when order is not NULL.
 */
nn_status nn_net_fit_epoch(nn_net *net, const nn_sgd *opt,
                           nn_loss_kind loss, const void *X, size_t n,
                           size_t D, const int64_t *labels, const void *T,
                           size_t C, const int64_t *order, size_t batch,
                           nn_progress_fn progress, void *ctx,
                           nn_epoch_result *res);

#ifdef __cplusplus
}
#endif

#endif /* NN_H */
