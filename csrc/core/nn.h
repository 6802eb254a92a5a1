/*
 * nn.h: the public C API of the nnlayers core.
 *
 * C11, no Python.h. The core is:
 *   - kernels over flat row-major buffers (outputs first, then inputs,
 *     then sizes; gradient buffers are named d<name>; shapes in comments
 *     as (rows, cols), N the batch size);
 *   - one op table (ops.c): per layer kind its forward, backward (VJP),
 *     inputs, output width, parameter tensors and workspace;
 *   - one graph engine (graph.c plans, graph_run.c runs): nodes with
 *     input indices in topological order, forward in that order, backward
 *     in reverse, a value's gradient the sum over its consumers;
 *   - optimizers behind one interface (optim.c; sgd.c, adam.c, rmsprop.c,
 *     adagrad.c the kinds, clip.c the gradient clipping), told
 *     by the engine when a parameter's gradient is complete.
 *
 * float32 and float64 come from one source: the template bodies are
 * compiled twice, by dtype_f32.c and dtype_f64.c, into name_f32 and
 * name_f64.
 *
 * Kernels never allocate, print, abort or exit. Functions that can fail
 * return an nn_status.
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
    NN_ERR_ARG,         /* any other invalid argument */
    NN_ERR_GRAPH,       /* a graph that cannot run (cycle, dangling node) */
    NN_ERR_EXTERNAL,    /* a host callback (a Python layer) failed */
    NN_ERR_BATCH        /* batch statistics of a single row (BatchNorm) */
} nn_status;

/* A static English description of a status, never NULL. */
const char *nn_status_str(nn_status s);

/* ------------------------------------------------------------------ */
/* Memory: every heap allocation of the core goes through these        */
/* ------------------------------------------------------------------ */

/* 64-byte aligned allocation; NULL on failure (nbytes == 0 is rounded
 * to one cache line). Counted by nn_alloc_count(). */
void *nn_malloc(size_t nbytes);
/* Same, zero-filled, with the byte count n*size checked for overflow. */
void *nn_calloc(size_t n, size_t size);
void nn_free(void *p);
/* Number of successful nn_malloc/nn_calloc calls since the process began. */
uint64_t nn_alloc_count(void);
/* a*b into *out; returns 0 (and leaves *out alone) if it would overflow. */
int nn_mul_size(size_t a, size_t b, size_t *out);

/* ------------------------------------------------------------------ */
/* Random numbers                                                      */
/* ------------------------------------------------------------------ */

/* xoshiro256**, for weight init and shuffling */
typedef struct nn_rng { uint64_t s[4]; } nn_rng;

void nn_rng_seed(nn_rng *rng, uint64_t seed);
uint64_t nn_rng_next(nn_rng *rng);
double nn_rng_uniform(nn_rng *rng);   /* in [0, 1) */
double nn_rng_normal(nn_rng *rng);    /* standard normal (Box-Muller) */

/* A counter-based draw: the same (key, a, b, c) always gives the same 64
 * random bits, whatever thread asks and in what order (a random mask that
 * depends on the seed, the step and the row, not on how a batch was split
 * between threads). */
uint64_t nn_hash4(uint64_t key, uint64_t a, uint64_t b, uint64_t c);

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
/* Vector instruction sets of the small-product kernels (gemm_small.c),
 * ordered: a level uses its own set. */
enum { NN_SIMD_NONE = 0, NN_SIMD_AVX2 = 1, NN_SIMD_AVX512 = 2 };
/* The set in use: the CPU's best (cpuid), at most the cap. */
int nn_simd_level(void);
/* Caps the set (NN_SIMD_*; a test hook that runs the AVX2 path, or
 * OpenBLAS alone, on an AVX-512 machine). Returns the old cap. */
int nn_simd_cap(int cap);
/* 1 if a float32 product of this shape goes to those kernels now (the set
 * as capped, OpenBLAS's thread count as it is) */
int nn_small_sgemm_takes(int trans_a, int trans_b, size_t M, size_t N,
                         size_t K);
/* Batch splitting of training steps (graph_run.c): -1 by size (default),
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
/* Around a training step or forward pass that may split its batch
 * between up to `want` threads, each running a block of rows with every
 * product on its own thread. nn_step_begin waits for any other user
 * thread's split, then returns the threads to split between, >= 2, with
 * OpenBLAS set to one thread until nn_step_end; 0 for a whole step; -1
 * when there is no pool (nothing to wait for). Pass its result to
 * nn_step_end. */
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
/* Training steps and forward passes that split their batch so far. */
unsigned long long nn_split_steps(void);
/* fn(arg, lo, hi) over pieces [lo, hi) covering [0, n), run on this
 * thread and idle workers, returning when all are done. Pieces have at
 * least `grain` items, and edges on multiples of `align` (keep threads off
 * each other's cache lines); below 2 * grain, one call here. */
void nn_parallel_range(void (*fn)(void *arg, size_t lo, size_t hi), void *arg,
                       size_t n, size_t grain, size_t align);
/* Elementwise passes over at least 2 x this many values are split with
 * the pool's workers, in pieces on 64-byte edges. */
#define NN_PAR_GRAIN 16384
#define NN_PAR_ALIGN 16

/* ------------------------------------------------------------------ */
/* Data types                                                          */
/* ------------------------------------------------------------------ */

typedef enum nn_dtype { NN_F32 = 0, NN_F64 = 1 } nn_dtype;

static inline size_t nn_dtype_size(nn_dtype t) { return t == NN_F32 ? 4 : 8; }

/* ------------------------------------------------------------------ */
/* Layers and the op table                                             */
/* ------------------------------------------------------------------ */

/* Layer kinds: the index of each kind's entry in the op table (ops.c).
 * A new kind is a new entry there and a value here. */
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
    NN_GELU,
    NN_SILU,
    NN_ELU,
    NN_SOFTSIGN,
    NN_HARDTANH,
    NN_SOFTMAX,
    NN_LOG_SOFTMAX,
    NN_ADD,
    NN_SUBTRACT,
    NN_MULTIPLY,
    NN_AVERAGE,
    NN_CONCATENATE,
    NN_DROPOUT,
    NN_BATCHNORM,
    NN_LAYERNORM,
    NN_EXTERNAL,             /* a layer written in the host language */
    NN_KIND_COUNT
} nn_kind;

/* At most this many tensors (parameters and buffers) per layer. */
#define NN_MAX_TENSORS 8
#define NN_TENSOR_NAME 24

/* One parameter tensor (trained) or buffer (state kept with the model,
 * never trained) of a layer. data and grad point into memory owned by
 * whoever holds the layer (its own block, or the parameter block of the
 * model it is in); grad is NULL for buffers. */
typedef struct nn_tensor {
    char name[NN_TENSOR_NAME];
    int ndim;               /* 1 or 2 */
    size_t dim[2];          /* (rows, cols); dim[1] = 1 when ndim == 1 */
    size_t n;               /* dim[0] * dim[1] values */
    int buffer;
    void *data, *grad;
} nn_tensor;

struct nn_node_io;

/* Host callbacks of an external layer (a layer written in Python): the
 * engine calls them with the node's inputs and outputs, on the thread
 * that runs the step, over the whole batch. forward fills io->y; backward
 * writes (or, where io->dx_acc says, adds) io->dx and adds its parameter
 * gradients into its tensors' grad (a training step zeroes them first);
 * out_width gives the output width for inputs of widths in_w. A failure
 * returns NN_ERR_EXTERNAL (the host keeps the reason). */
typedef struct nn_external {
    void *ctx;
    nn_status (*forward)(void *ctx, const struct nn_node_io *io);
    nn_status (*backward)(void *ctx, const struct nn_node_io *io);
    nn_status (*out_width)(void *ctx, const size_t *in_w, size_t n_in,
                           size_t *out_w);
} nn_external;

/* A layer as the core sees it: its kind, its configuration and its
 * tensors. Configuration by kind (see ops.c):
 *   LINEAR       in, out; bias = 1 with a bias
 *   LEAKY_RELU   arg[0] = negative slope
 *   GELU         arg[0] = 0 exact (erf), 1 the tanh approximation
 *   ELU          arg[0] = alpha
 *   HARDTANH     arg[0] = min_val, arg[1] = max_val (min_val < max_val)
 *   merges       none (widths from the inputs)
 *   DROPOUT      arg[0] = p
 *   BATCHNORM    in = features; arg eps, momentum (< 0: cumulative),
 *                track_running_stats (0/1); bias = affine
 *   LAYERNORM    in = features; arg eps; bias = elementwise_affine */
typedef struct nn_layer {
    nn_kind kind;
    size_t in, out;
    double arg[4];
    int bias;
    int trainable;          /* 0: no parameter gradients, no updates */
    size_t n_tensors;       /* parameters first, then buffers */
    size_t n_params;        /* tensors that are trained */
    nn_tensor t[NN_MAX_TENSORS];
    nn_external ext;
} nn_layer;

/* Fill L->t (names, shapes) from L's kind and configuration; the data
 * pointers are left NULL for the owner to set. NN_ERR_ARG for a bad
 * configuration, NN_ERR_OVERFLOW when the sizes do not fit. */
nn_status nn_layer_setup(nn_layer *L);
/* An external layer's new tensor (trained, or a buffer with buffer = 1),
 * a parameter placed after the other parameters, a buffer last; the data
 * pointers are the owner's to set (every tensor's, as the others may
 * move). NN_ERR_ARG: not external, NN_MAX_TENSORS already, a name taken,
 * empty or too long, a zero or bad shape; NN_ERR_OVERFLOW. */
nn_status nn_layer_add_tensor(nn_layer *L, const char *name, int ndim,
                              size_t d0, size_t d1, int buffer);
/* Values over all of L's trained tensors, and over its buffers. */
size_t nn_layer_param_count(const nn_layer *L);
size_t nn_layer_buffer_count(const nn_layer *L);
/* The name of a kind ("linear", "relu", ...) and back; -1 if unknown. */
const char *nn_kind_name(nn_kind k);
int nn_kind_from_name(const char *name);

/* A layer on its own, outside any graph (a layer called directly): its
 * output width for inputs of widths in_w (NN_ERR_SHAPE with *bad the
 * offending input), the workspace its forward keeps for the backward
 * (values, for a batch of N rows), and one forward or backward over the
 * whole batch: y (N, out_w) from x[i] (N, in_w[i]); dx[i] overwritten
 * (NULL: skipped) and, when L is trainable, its parameter gradients
 * accumulated. training: 1 for the layers that behave differently when
 * training (Dropout, BatchNorm). */
nn_status nn_layer_out_width(const nn_layer *L, const size_t *in_w,
                             size_t n_in, size_t *out_w, size_t *bad);
size_t nn_layer_workspace(const nn_layer *L, size_t out_w, size_t N);
nn_status nn_layer_forward(const nn_layer *L, nn_dtype dt, size_t n_in,
                           const void *const *x, const size_t *in_w,
                           size_t N, void *y, size_t out_w, void *ws,
                           int training, uint64_t seed, uint64_t step);
nn_status nn_layer_backward(nn_layer *L, nn_dtype dt, size_t n_in,
                            const void *const *x, const size_t *in_w,
                            size_t N, const void *y, size_t out_w, void *ws,
                            const void *dy, void *const *dx, int training,
                            uint64_t seed, uint64_t step);

/* Parameter gradients of one node, as the engine wants them (graph_run.c
 * implements it: accumulate, overwrite, fold into the optimizer's
 * update, or only this thread's share of a split step). */
typedef struct nn_pg nn_pg;

/*
 * One node's inputs and outputs for a forward or backward call, over
 * rows [row0, row0 + n) of a batch of N rows. Every array points at the
 * call's first row: x[i] (n, in_w[i]), y (n, out_w), dy (n, out_w),
 * dx[i] (n, in_w[i]). ws is the node's workspace for the whole batch
 * (the op indexes it by row0).
 * Backward: dx[i] NULL when input i needs no gradient; dx_acc[i] 1 adds
 * into dx[i], 0 overwrites it (a value with several consumers: the first
 * overwrites, the rest add). Several dx[i] may be one buffer (a value fed
 * to two inputs of a node): ops write them in input order. pg NULL: no
 * parameter gradients.
 */
typedef struct nn_node_io {
    const nn_layer *L;
    nn_dtype dt;            /* the values' dtype */
    size_t n, row0, N;
    size_t n_in;
    const void *const *x;
    const size_t *in_w;
    void *y;
    size_t out_w;
    void *ws;
    const void *dy;
    void *const *dx;
    const unsigned char *dx_acc;
    nn_pg *pg;
    int training;           /* 0 eval; 1 training (a forward alone: state
                               such as BatchNorm's running statistics
                               changes at once); 2 inside a training step
                               (the op's commit changes it once the loss
                               is accepted) */
    uint64_t seed, step;    /* the model's generator and step count */
    size_t node;            /* node index (for random streams) */
    size_t row_base;        /* global row of the batch's row 0 (data
                               parallel ranks) */
} nn_node_io;

typedef nn_status (*nn_op_fn)(const nn_node_io *io);

/* What the engine may do with a node of a kind */
enum nn_op_flags {
    NN_OP_ROWWISE = 1,       /* rows independent: a batch may be split */
    NN_OP_ELEMENTWISE = 2,   /* y = f(x) value by value, one input */
    NN_OP_OUT_BWD = 4,       /* backward reads only its output (and dy):
                                it may run in place over its input */
    NN_OP_NEEDS_OUT = 8,     /* backward reads its own output */
    NN_OP_EXTERNAL = 16      /* calls into the host: whole batch only */
};

/* Configuration a kind takes (nn_op.config) */
enum nn_op_config {
    NN_CFG_IN = 1,           /* in: in_features */
    NN_CFG_OUT = 2,          /* out: out_features */
    NN_CFG_BIAS = 4          /* bias */
};

/* How an op initialises its parameters (nn_op.init): W by scheme, biases
 * zero */
typedef enum nn_init {
    NN_INIT_HE = 0,          /* normal, std sqrt(2 / fan_in) */
    NN_INIT_GLOROT,          /* uniform, +-sqrt(6 / (fan_in + fan_out)) */
    NN_INIT_UNIFORM          /* uniform, +-1 / sqrt(fan_in) */
} nn_init;

/* One entry of the op table. forward/backward/param_grads are indexed by
 * nn_dtype. param_grads computes a node's parameter gradients from its
 * input and output gradient (through io->pg), without dx; backward calls
 * it too when io->pg is set. */
typedef struct nn_op {
    const char *name;
    size_t min_in, max_in;   /* inputs (max_in 0: any number >= min_in) */
    unsigned flags;
    unsigned config;         /* NN_CFG_* */
    const char *arg_names[4];   /* what arg[0..3] mean (NULL: unused) */
    double arg_defaults[4];
    /* output width from the input widths; NN_ERR_SHAPE if they cannot
     * meet (*bad receives the offending input) */
    nn_status (*out_width)(const nn_layer *L, const size_t *in_w,
                           size_t n_in, size_t *out_w, size_t *bad);
    /* fill L's tensors from its configuration */
    nn_status (*tensors)(nn_layer *L);
    /* workspace of one node: values per row of the batch, plus fixed */
    void (*workspace)(const nn_layer *L, size_t out_w, size_t *per_row,
                      size_t *fixed);
    nn_op_fn forward[2], backward[2], param_grads[2];
    /* after a training step's loss is accepted: state the forward
     * measured (BatchNorm's running statistics); NULL: none */
    nn_op_fn commit[2];
    /* 1 when this layer's backward reads only its output (NN_OP_OUT_BWD
     * may depend on the configuration: LeakyReLU with a negative slope
     * cannot); NULL: the flag alone says */
    int (*out_bwd)(const nn_layer *L);
    /* initial values of the tensors (NULL: none) */
    void (*init)(nn_layer *L, nn_dtype dt, nn_rng *rng, nn_init scheme);
    /* multiply-adds per row of the forward pass (NULL: negligible) */
    double (*macs)(const nn_layer *L);
} nn_op;

/* The op table (ops.c), and one kind's entry (NULL for no kind) */
extern const nn_op nn_op_table[NN_KIND_COUNT];
static inline const nn_op *nn_op_of(nn_kind k)
{
    return (unsigned)k < NN_KIND_COUNT ? &nn_op_table[k] : NULL;
}

/* The three forms of parameter gradient the ops produce (graph_run.c):
 *   gemm:  grad_k (R, C) = A^T B, A (K, R) with row stride lda, B (K, C)
 *          with row stride ldb (a Linear's weight gradient x^T dy)
 *   colsum: grad_k (C) = column sums of G (K, C) (a bias gradient)
 *   colsum_prod: grad_k (C) = column sums of A * B, both (K, C)
 * pg decides: accumulate, overwrite, fold into the update, or compute
 * this thread's share only. */
#define NN_DECLARE_PG(real, sfx)                                             \
nn_status nn_pg_gemm_##sfx(nn_pg *pg, size_t k, const real *A, size_t lda,  \
                           const real *B, size_t ldb, size_t K);            \
nn_status nn_pg_colsum_##sfx(nn_pg *pg, size_t k, const real *G, size_t K); \
nn_status nn_pg_colsum_prod_##sfx(nn_pg *pg, size_t k, const real *A,       \
                                  const real *B, size_t K);
NN_DECLARE_PG(float, f32)
NN_DECLARE_PG(double, f64)

/* ------------------------------------------------------------------ */
/* Kernels, per dtype                                                  */
/* ------------------------------------------------------------------ */

/* Loss kinds. The cross-entropies come on logits (SOFTMAX_XENT,
 * BINARY_XENT) or on probabilities (CATEGORICAL_XENT, BINARY_XENT_PROBS:
 * clipped to [NN_PROB_EPS, 1 - NN_PROB_EPS] as Keras does). HUBER takes an
 * argument, its delta (> 0). See loss.c for the formulas. */
typedef enum nn_loss_kind {
    NN_LOSS_SOFTMAX_XENT = 0,
    NN_LOSS_BINARY_XENT,
    NN_LOSS_MSE,
    NN_LOSS_NLL,
    NN_LOSS_CATEGORICAL_XENT,
    NN_LOSS_BINARY_XENT_PROBS,
    NN_LOSS_HUBER,
    NN_LOSS_MAE,
    NN_LOSS_KIND_COUNT
} nn_loss_kind;

/* The clipping of probabilities (Keras's backend.epsilon()) */
#define NN_PROB_EPS 1e-7

/* Where a single output (C == 1) counts as positive for accuracy: a
 * logit > 0, a probability > 0.5 (the probability kinds). */
double nn_loss_threshold(nn_loss_kind kind);

/* Metrics measured during training (per row; their sums over rows are
 * reported):
 *   MSE              mean over the C outputs of (pred - t)^2, so sum / N is
 *                    scikit-learn's and Keras's mean_squared_error
 *   MAE              mean over the outputs of |pred - t|
 *   BINARY_ACCURACY  mean over the outputs of [(pred > threshold) ==
 *                    (t > 0.5)]; a NaN prediction is never right
 *   TOP_K            1 when the label (or the argmax of a dense target
 *                    row) is among the NN_TOP_K largest predictions (ties
 *                    at the boundary count as in: fewer than k values are
 *                    larger); 0 for a row holding a NaN; 1 when C <= k
 * With labels, the target row t is the one-hot row of the label. */
typedef enum nn_metric_kind {
    NN_METRIC_MSE = 0,
    NN_METRIC_MAE,
    NN_METRIC_BINARY_ACCURACY,
    NN_METRIC_TOP_K,
    NN_METRIC_COUNT
} nn_metric_kind;

#define NN_TOP_K 5

#define NN_DECLARE_KERNELS(real, sfx)                                        \
/* General matrix product on row-major buffers:                           \
 * C (M, N) = alpha * op(A) op(B) + beta * C, op(A) (M, K), op(B) (K, N).  \
 * beta == 0 overwrites C (even NaN). Through OpenBLAS unless              \
 * nn_use_reference_gemm(1). */                                            \
nn_status nn_gemm_##sfx(int trans_a, int trans_b, size_t M, size_t N,      \
                        size_t K, real alpha, const real *A, size_t lda,   \
                        const real *B, size_t ldb, real beta, real *C,     \
                        size_t ldc);                                       \
/* The same product by three plain loops, for cross-checks. */            \
void nn_gemm_ref_##sfx(int trans_a, int trans_b, size_t M, size_t N,       \
                       size_t K, real alpha, const real *A, size_t lda,    \
                       const real *B, size_t ldb, real beta, real *C,      \
                       size_t ldc);                                        \
/* out[o] (+)= sum over rows of g (N, O), o in [lo, hi); add: 1 adds, 0    \
 * overwrites. Big blocks split between the threads. */                    \
void nn_column_sums_##sfx(real *out, const real *g, size_t N, size_t O,    \
                          size_t lo, size_t hi, int add);                  \
/* Elementwise activation over n values: out = f(inp); out may be inp.    \
 * arg: the layer's arguments (nn_layer.arg: LeakyReLU's slope, ...). */   \
void nn_act_forward_##sfx(nn_kind kind, const double *arg, real *out,      \
                          const real *inp, size_t n);                      \
/* dinp (+)= dout * f'(inp), from out (= f(inp)) where that is cheaper.    \
 * acc: 1 adds into dinp. */                                               \
void nn_act_backward_##sfx(nn_kind kind, const double *arg, real *dinp,    \
                           const real *dout, const real *inp,              \
                           const real *out, size_t n, int acc);            \
/* Row-wise softmax and log-softmax, stable. out, inp (N, C). */           \
void nn_softmax_forward_##sfx(real *out, const real *inp, size_t N,        \
                              size_t C);                                   \
void nn_log_softmax_forward_##sfx(real *out, const real *inp, size_t N,    \
                                  size_t C);                               \
/* Losses (nn_loss_kind). pred (N, C). Targets: labels (N) int64 OR       \
 * T (N, C), exactly one non-NULL (the class-id kinds SOFTMAX_XENT, NLL    \
 * and CATEGORICAL_XENT take either, the others T only). arg: the kind's   \
 * argument (Huber's delta; ignored by the others). w (N) or NULL: a       \
 * weight per row. *sum receives the sum over rows of w[n] times row n's   \
 * loss, and dpred (N, C) its gradient times scale (1 / the whole batch's  \
 * rows, times a loss weight). Rows [0, N) may be part of a bigger batch   \
 * (a split step). */                                                      \
nn_status nn_loss_rows_##sfx(nn_loss_kind kind, double arg, double *sum,   \
                             real *dpred, const real *pred,                \
                             const int64_t *labels, const real *T,         \
                             const real *w, size_t N, size_t C,            \
                             double scale);                                \
/* Rows whose prediction matches the target: argmax for C > 1; for C == 1 \
 * pred > threshold (nn_loss_threshold) vs target > 0.5 (label == 1). A    \
 * row holding a NaN is never right. */                                    \
size_t nn_count_correct_##sfx(const real *pred, const int64_t *labels,     \
                              const real *T, size_t N, size_t C,           \
                              double threshold);                           \
/* *sum = the sum over rows of w[n] (1 without w) times metric `kind` of   \
 * row n (nn_metric_kind); targets as for the losses; threshold for        \
 * BINARY_ACCURACY. NN_ERR_ARG for an unknown kind or no target,           \
 * NN_ERR_LABEL for a label outside [0, C). */                             \
nn_status nn_metric_rows_##sfx(nn_metric_kind kind, double *sum,           \
                               const real *pred, const int64_t *labels,    \
                               const real *T, const real *w, size_t N,     \
                               size_t C, double threshold);                \
/* The first row of x (N, D) holding a NaN or an infinity; N if none */    \
size_t nn_first_nonfinite_row_##sfx(const real *x, size_t N, size_t D);

NN_DECLARE_KERNELS(float, f32)
NN_DECLARE_KERNELS(double, f64)

/* The mean loss over a batch (1/N, or per-row weights w) for either dtype,
 * with dL/dpred into dpred (N, C). */
nn_status nn_loss_eval(nn_dtype dt, nn_loss_kind kind, double arg,
                       double *loss, void *dpred, const void *pred,
                       const int64_t *labels, const void *T, const void *w,
                       size_t N, size_t C);
/* nn_metric_rows for either dtype */
nn_status nn_metric_eval(nn_dtype dt, nn_metric_kind kind, double *sum,
                         const void *pred, const int64_t *labels,
                         const void *T, const void *w, size_t N, size_t C,
                         double threshold);

/* ------------------------------------------------------------------ */
/* Optimizers (optim.c; one file per kind: sgd.c, adam.c, ...)         */
/* ------------------------------------------------------------------ */

/* Hyperparameters of a parameter group; each kind reads its own (its
 * nn_optim_kind.hypers says which). */
typedef struct nn_hyper {
    double lr, weight_decay;
    double momentum;        /* SGD, RMSprop */
    int nesterov;           /* SGD */
    double beta1, beta2;    /* Adam, AdamW */
    double eps;             /* Adam, AdamW, RMSprop, Adagrad */
    int amsgrad;            /* Adam, AdamW */
    int eps_hat;            /* Adam, AdamW: eps after the bias correction
                               (scikit-learn's and Keras's placement) */
    double alpha;           /* RMSprop: smoothing of the square average */
    int centered;           /* RMSprop */
    double lr_decay;        /* Adagrad */
    double initial_accumulator_value;   /* Adagrad */
} nn_hyper;

/* The hyperparameters a kind reads (nn_optim_kind.hypers), one bit each */
enum nn_hyper_bit {
    NN_H_LR = 1 << 0,
    NN_H_WEIGHT_DECAY = 1 << 1,
    NN_H_MOMENTUM = 1 << 2,
    NN_H_NESTEROV = 1 << 3,
    NN_H_BETAS = 1 << 4,     /* beta1 and beta2 */
    NN_H_EPS = 1 << 5,
    NN_H_AMSGRAD = 1 << 6,
    NN_H_ALPHA = 1 << 7,
    NN_H_CENTERED = 1 << 8,
    NN_H_LR_DECAY = 1 << 9,
    NN_H_INITIAL_ACC = 1 << 10,
    NN_H_EPS_HAT = 1 << 11
};

/* One parameter tensor an optimizer updates: tensor `tensor` of `layer`
 * (its data and grad pointers follow the layer wherever its memory
 * moves), its hyperparameter group, and where its state starts in the
 * optimizer's state block (values). */
typedef struct nn_segment {
    nn_layer *layer;
    size_t tensor;
    size_t group;
    size_t state_off;
} nn_segment;

struct nn_optim;

/* At most this many state buffers per segment */
#define NN_OPTIM_MAX_BUFFERS 4

/*
 * One optimizer kind: how it updates. The engine calls update when a
 * segment's gradient (in the tensor's grad) is complete, for values
 * [lo, hi) of it; fold_gemm, where can_fold says so, instead receives
 * the gradient as a product A^T B (rows [r0, r1) of a 2-D tensor; A, B as
 * for nn_pg_gemm, A already offset to column r0) and updates without
 * writing it out.
 *
 * A segment of n values keeps its state at its state_off: the buffers
 * state_buffers names for its group, n values each, one after the other
 * (the one description of the layout: the update rules read their
 * buffers in that order). init_state (NULL: zeros are right) fills a
 * segment's state once the block is made and zeroed. check returns a
 * static message when a group's hyperparameters do not go together (NULL:
 * fine).
 */
typedef struct nn_optim_kind {
    const char *name;
    unsigned hypers;         /* NN_H_* bits of what it reads */
    size_t (*state_buffers)(const nn_hyper *h,
                            const char *names[NN_OPTIM_MAX_BUFFERS]);
    void (*update[2])(const struct nn_optim *o, const nn_segment *s,
                      size_t lo, size_t hi);
    int (*can_fold)(const struct nn_optim *o, const nn_segment *s);
    nn_status (*fold_gemm[2])(const struct nn_optim *o, const nn_segment *s,
                              size_t r0, size_t r1, const void *A,
                              size_t lda, const void *B, size_t ldb,
                              size_t K);
    void (*init_state[2])(const struct nn_optim *o, const nn_segment *s);
    const char *(*check)(const nn_hyper *h);
} nn_optim_kind;

extern const nn_optim_kind nn_optim_sgd;
extern const nn_optim_kind nn_optim_adam;
extern const nn_optim_kind nn_optim_adamw;
extern const nn_optim_kind nn_optim_rmsprop;
extern const nn_optim_kind nn_optim_adagrad;

typedef struct nn_optim {
    const nn_optim_kind *kind;
    nn_dtype dtype;
    size_t n_groups;
    nn_hyper *groups;        /* owned by the caller */
    size_t n_segments;
    nn_segment *seg;         /* owned by the caller */
    void *state;             /* one block, zeroed at creation; may be NULL
                                when the kind keeps no state */
    uint64_t steps;          /* steps so far, this one included while it
                                updates (the t of bias corrections) */
    /* gradient clipping, 0 = off: scale every gradient a step updates by
     * min(1, clip_norm / (their global L2 norm + 1e-6)), then clamp each
     * value to [-clip_value, clip_value] */
    double clip_norm, clip_value;
} nn_optim;

/* Values of state the optimizer needs for its segments (sets the
 * segments' state_off). */
size_t nn_optim_layout(nn_optim *o);
/* The state buffers of segment s (their names into names; their count
 * returned), n values each from s->state_off. */
size_t nn_optim_buffers(const nn_optim *o, const nn_segment *s,
                        const char *names[NN_OPTIM_MAX_BUFFERS]);
/* Fill the zeroed state block with each kind's initial values. */
void nn_optim_init_state(const nn_optim *o);
/* One update of every segment whose layer is trainable, from the
 * gradients in the tensors' grad (optimizer.step()), clipped first when
 * the optimizer clips. */
void nn_optim_step(nn_optim *o);

/* Gradient clipping by global norm over a set of segments the caller
 * names: each(ctx, visit, arg) calls visit(arg, s) once for every
 * segment of the set. Every gradient is scaled by min(1, clip_norm /
 * (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_). */
typedef void (*nn_segment_visit)(void *arg, const nn_segment *s);
typedef void (*nn_segment_each)(void *ctx, nn_segment_visit visit,
                                void *arg);
void nn_optim_clip_norm(const nn_optim *o, nn_segment_each each, void *ctx);

/* ------------------------------------------------------------------ */
/* Graphs (graph.c) and running them (graph_run.c)                     */
/* ------------------------------------------------------------------ */

/* A node: its layer (borrowed) and the values it reads. Values are
 * numbered inputs first (0 .. n_inputs - 1), then node k's output
 * (n_inputs + k). */
typedef struct nn_node {
    nn_layer *layer;
    size_t n_in;
    size_t *in;              /* into the graph's edge array */
} nn_node;

/* How one backward pass runs, worked out from the graph, the layers'
 * trainable flags and which inputs want a gradient (graph.c). */
typedef struct nn_plan {
    int valid;
    unsigned char *need_grad;   /* per value: its gradient is computed */
    unsigned char *run_bwd;     /* per node: its backward runs */
    unsigned char *acc;         /* per edge: 1 adds into the input's gradient */
} nn_plan;

/* Where a layer's tensors are used: per node, per tensor, whether this
 * use is the first and the last in backward order (highest node index
 * first) and whether it is the only one. */
typedef struct nn_use {
    unsigned char first, last, single;
} nn_use;

typedef struct nn_graph {
    nn_dtype dtype;
    size_t n_inputs, n_nodes, n_outputs, n_values, n_edges;
    nn_node *nodes;
    size_t *edges;
    size_t *outputs;         /* value indices */
    size_t *in_width;        /* n_inputs; 0 = any (resolved per call) */
    /* resolved for the current input widths (nn_graph_resolve) */
    int resolved;
    size_t *width;           /* per value */
    size_t *new_width;       /* per value: scratch of nn_graph_resolve */
    size_t *act_off;         /* per value: offset (values per row) of its
                                storage in the activation arena */
    size_t act_row;          /* values per row of the activation arena */
    size_t *grad_off;        /* per value: its gradient's offset */
    size_t grad_row;
    size_t *ws_row, *ws_fixed;   /* per node: op workspace */
    size_t ws_row_total, ws_fixed_total;
    size_t *alias;           /* per value: the value whose storage it
                                shares (itself if none) */
    size_t *n_consumers;     /* per value: edges that read it */
    size_t *edge_start;      /* per node: its first edge */
    nn_use *use;             /* per node * NN_MAX_TENSORS */
    unsigned flags_all;      /* AND of every node's op flags */
    unsigned flags_any;      /* OR of every node's op flags */
    double macs_fwd;         /* multiply-adds of one row's forward pass */
    double macs_widest;      /* ... of its biggest node (a Linear: in out) */
    nn_plan train, full;     /* train: no input gradients; full: all */
    uint64_t trainable_stamp;
} nn_graph;

/* Build a graph over n_nodes nodes (layer, inputs), n_inputs inputs of
 * widths in_width (0: any, resolved by the first call), outputs given as
 * value indices. Checks the structure: each node reads only earlier
 * values (so there is no cycle), has an allowed number of inputs, every
 * node is reachable from an input and reaches an output, every input is
 * used, no output is an input or repeated. On NN_ERR_GRAPH or
 * NN_ERR_SHAPE, *bad receives the node (or, for an input, n_nodes + the
 * input) and *what a short reason. */
nn_status nn_graph_init(nn_graph *g, nn_dtype dt, size_t n_inputs,
                        const size_t *in_width, size_t n_nodes,
                        nn_layer **layers, const size_t *n_in,
                        const size_t *edges, size_t n_outputs,
                        const size_t *outputs, size_t *bad,
                        const char **what);
void nn_graph_free(nn_graph *g);
/* Widths for inputs of widths w (n_inputs); a no-op when they are those
 * of the last call. NN_ERR_SHAPE otherwise, the old widths kept, with
 * *bad the node whose inputs do not fit (n_nodes + i for input i of a
 * fixed other width), *bad_input its input and *got that input's width. */
nn_status nn_graph_resolve(nn_graph *g, const size_t *w, size_t *bad,
                           size_t *bad_input, size_t *got);
/* Redo the backward plans if a layer's trainable flag changed since
 * (stamp: nn_trainable_stamp()). */
nn_status nn_graph_replan(nn_graph *g);
/* Bumped whenever a layer's trainable flag changes (the binding calls
 * it): graphs redo their plans. */
uint64_t nn_trainable_stamp(void);
void nn_trainable_changed(void);
/* Multiply-adds of one row's forward pass (for the split decision). */
double nn_graph_macs(const nn_graph *g);

/* The memory one forward/backward needs for a batch of rows: values,
 * gradients, op workspace, pointers. One per concurrent call; reused
 * from call to call, it grows (and only then allocates) with the batch. */
/* Where the model is: its generator's seed and steps so far (for random
 * layers), whether it trains. */
typedef struct nn_run {
    uint64_t seed, step;
    int training;            /* as nn_node_io.training */
    size_t row0;             /* global row of the first row (data parallel) */
} nn_run;

typedef struct nn_ws {
    size_t rows;             /* batch of the last forward */
    size_t cap_act, cap_grad, cap_op;   /* values each arena holds */
    void *act, *grad, *op;
    const void **val;        /* per value: where it is for this batch */
    void **gval;             /* per value: where its gradient is */
    void **opws;             /* per node: its workspace */
    int has_forward;         /* a forward's values are here */
    struct nn_run fwd;       /* the run of the last forward (its mode,
                                seed and step: what a backward redoes) */
    /* fit: gathered minibatches, two of each (one trains while the next
     * one is gathered) */
    size_t cap_xb, cap_tb, cap_lb, cap_wb;
    void *xb[2];             /* all inputs of a minibatch, one block */
    void *tb[2];             /* all dense targets */
    int64_t *lb[2];          /* all labels */
    void *wb[2];             /* sample weights */
    double *part_sums;       /* a split step's loss sums, per part and
                                output */
    size_t *part_correct;
    double *part_metrics;    /* its metric sums, per part, output and
                                metric (NN_METRIC_COUNT) */
} nn_ws;

nn_status nn_ws_init(nn_ws *ws, const nn_graph *g);
void nn_ws_free(nn_ws *ws);

/* What a training step minimises: per output k a loss kind, its argument
 * (arg[k], Huber's delta; arg NULL when no loss takes one), a weight,
 * and its targets (labels[k] (N) or T[k] (N, width of output k), one
 * NULL), and an optional per-row weight w (N) shared by every output.
 * metrics (NULL: none) asks for metrics per output: bit 1u << m of
 * metrics[k] for nn_metric_kind m. */
typedef struct nn_targets {
    const nn_loss_kind *kind;
    const double *arg;
    const double *weight;
    const int64_t *const *labels;
    const void *const *T;
    const void *w;
    const unsigned *metrics;
} nn_targets;

/* Per output, what a step measured: loss sums (weighted by w), rows
 * classified right, and the metrics asked for. */
typedef struct nn_step_result {
    double loss;             /* the weighted total, averaged over rows */
    double *loss_sum;        /* per output: sum over rows */
    size_t *correct;         /* per output, or NULL */
    double *metric_sum;      /* read only when the targets ask for metrics:
                                per output k, metric m at
                                [k * NN_METRIC_COUNT + m], the sum over
                                rows (weighted by w); 0 for those not
                                asked for */
} nn_step_result;


/* out[k] (N, width of output k), when not NULL, = the graph on inputs
 * x[i] (N, width of input i). The values stay in ws for a backward. */
nn_status nn_graph_forward(nn_graph *g, nn_ws *ws, const nn_run *run,
                           const void *const *x, size_t N, void *const *out);
/* Backward from dout[k] (gradients of the outputs) into dx[i] (gradients
 * of the inputs; NULL entries are skipped); parameter gradients of
 * trainable layers accumulate. It runs as the forward ran (ws->fwd: its
 * mode, and the seed and step of its random masks). */
nn_status nn_graph_backward(nn_graph *g, nn_ws *ws,
                            const void *const *dout, void *const *dx);
/* Where output k of the last forward is. */
const void *nn_graph_output(const nn_graph *g, const nn_ws *ws, size_t k);

/* Hooks of training steps: ready(ctx, s) when segment s of the
 * optimizer has its whole gradient (deferred mode only); before_update
 * once every gradient is complete, before any update (deferred mode);
 * before_batch(ctx, b) in nn_graph_fit_epoch before batch b's step (a
 * schedule setting the optimizer's hyperparameters). NULL: none. */
typedef struct nn_hooks {
    int deferred;            /* 1: every gradient complete before any update */
    void *ctx;
    void (*ready)(void *ctx, size_t segment);
    nn_status (*before_update)(void *ctx);
    void (*before_batch)(void *ctx, size_t batch);
} nn_hooks;

/* The optimizer's segments for this graph's layers: per node * tensor,
 * the segment index or -1 (refreshed when the optimizer changes). */
typedef struct nn_optmap {
    const nn_optim *opt;
    long *seg_of;            /* n_nodes * NN_MAX_TENSORS */
    size_t n;
    size_t n_mapped;         /* node tensors the optimizer holds */
} nn_optmap;
nn_status nn_optmap_bind(nn_optmap *m, const nn_graph *g, const nn_optim *o);
void nn_optmap_free(nn_optmap *m);

/*
 * One training step: forward (training), the losses, backward without
 * input gradients, the optimizer's update of every segment it holds
 * (parameter gradients are overwritten, not accumulated). Nothing is
 * updated when a loss is not finite (NN_ERR_NONFINITE) or a target is
 * refused.
 */
nn_status nn_graph_train_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                              nn_optim *opt, const nn_optmap *map,
                              const nn_hooks *hooks, const void *const *x,
                              size_t N, const nn_targets *tg,
                              nn_step_result *res);

/*
 * A training step cut in two around an exchange of gradients between
 * processes (data-parallel training, nnlayers.distributed).
 * nn_graph_grad_step: forward (training), the losses, backward; every
 * gradient the optimizer holds is written (overwritten) and nothing is
 * updated. The loss gradients are divided by `divisor` (the rows of the
 * step over all processes) instead of N; run->row0 is the first row's
 * place in that global batch (Dropout's masks). hooks->ready, when set,
 * sees each segment complete. NN_ERR_NONFINITE: a loss is not finite.
 * nn_graph_apply_step: then the update from the gradients as they are:
 * the forward's state committed (N: its rows; 0: none ran), clipping,
 * each segment the step holds updated once, opt->steps advanced.
 */
nn_status nn_graph_grad_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                             nn_optim *opt, const nn_optmap *map,
                             const nn_hooks *hooks, const void *const *x,
                             size_t N, size_t divisor, const nn_targets *tg,
                             nn_step_result *res);
nn_status nn_graph_apply_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                              nn_optim *opt, const nn_optmap *map, size_t N);

/* Called by nn_graph_fit_epoch after every batch. Returns nonzero to stop
 * the epoch (Ctrl-C, a callback). */
struct nn_epoch_result;
typedef int (*nn_progress_fn)(void *ctx, size_t batch, size_t n_batches,
                              const struct nn_epoch_result *so_far);

typedef struct nn_epoch_result {
    double loss_sum;         /* sum over rows of the total loss */
    double *loss_sum_out;    /* per output (the caller's array, zeroed) */
    size_t *correct;         /* per output (likewise) */
    double *metric_sum;      /* when the targets ask for metrics: per
                                output * NN_METRIC_COUNT (likewise) */
    size_t seen;
    size_t failed_batch;     /* batch index of a non-finite loss */
    double last_loss;        /* the loss of the last batch (or the
                                non-finite one) */
} nn_epoch_result;

/*
 * One epoch of minibatch training over inputs X[i] (n, width i) and
 * targets (labels[k] (n) or T[k] (n, width of output k)). order (n) is
 * the sample order (NULL: 0..n-1): rows are then gathered into the
 * workspace, the next batch while one trains. Batches of `batch` rows,
 * the last one partial. run->step advances by one per batch.
 */
nn_status nn_graph_fit_epoch(nn_graph *g, nn_ws *ws, nn_run *run,
                             nn_optim *opt, const nn_optmap *map,
                             const nn_hooks *hooks, const void *const *X,
                             size_t n, const nn_targets *tg,
                             const int64_t *order, size_t batch,
                             nn_progress_fn progress, void *ctx,
                             nn_epoch_result *res);

#ifdef __cplusplus
}
#endif

#endif /* NN_H */
