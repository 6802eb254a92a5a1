/*
 * common.c: the dtype-independent parts of the core: status strings,
 * the counted allocator, the random number generators, BLAS threading,
 * and dispatch from an nn_dtype to the _f32/_f64 kernels.
 */
#include "nn.h"
#include "nn_blas.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *nn_status_str(nn_status s)
{
    switch (s) {
    case NN_OK: return "ok";
    case NN_ERR_SHAPE: return "shape mismatch";
    case NN_ERR_NOMEM: return "out of memory";
    case NN_ERR_OVERFLOW: return "size too large (overflow)";
    case NN_ERR_LABEL: return "class label out of range";
    case NN_ERR_NONFINITE: return "non-finite loss";
    case NN_ERR_INTERRUPTED: return "interrupted";
    case NN_ERR_ARG: return "invalid argument";
    case NN_ERR_GRAPH: return "the graph cannot run";
    case NN_ERR_EXTERNAL: return "a layer's own code failed";
    case NN_ERR_BATCH:
        return "batch statistics (BatchNorm in training mode) need more "
               "than one row per batch: give batches of 2 rows or more, or "
               "use eval mode (model.eval()) for the running statistics";
    }
    return "unknown status";
}

/* ---------------------------------------------------------------- */
/* Allocation                                                        */
/* ---------------------------------------------------------------- */

#define NN_ALIGN 64

static uint64_t alloc_counter;   /* updated atomically */

uint64_t nn_alloc_count(void)
{
    return __atomic_load_n(&alloc_counter, __ATOMIC_RELAXED);
}

int nn_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > (size_t)-1 / a)
        return 0;
    *out = a * b;
    return 1;
}

void *nn_malloc(size_t nbytes)
{
    void *p = NULL;
    size_t rounded;
    if (nbytes == 0)
        nbytes = NN_ALIGN;
    if (nbytes > (size_t)-1 - NN_ALIGN)
        return NULL;
    rounded = (nbytes + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
    if (posix_memalign(&p, NN_ALIGN, rounded) != 0)
        return NULL;
    __atomic_add_fetch(&alloc_counter, 1, __ATOMIC_RELAXED);
    return p;
}

void *nn_calloc(size_t n, size_t size)
{
    size_t nbytes;
    void *p;
    if (!nn_mul_size(n, size, &nbytes))
        return NULL;
    p = nn_malloc(nbytes);
    if (p)
        memset(p, 0, nbytes);
    return p;
}

void nn_free(void *p)
{
    free(p);
}

/* ---------------------------------------------------------------- */
/* xoshiro256** seeded by splitmix64                                 */
/* ---------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void nn_rng_seed(nn_rng *rng, uint64_t seed)
{
    int i;
    for (i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nn_rng_next(nn_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double nn_rng_uniform(nn_rng *rng)
{
    return (double)(nn_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t nn_hash4(uint64_t key, uint64_t a, uint64_t b, uint64_t c)
{
    /* three rounds of splitmix64's finaliser over the words folded in */
    uint64_t x = key;
    x = splitmix64(&x) ^ a;
    x = splitmix64(&x) ^ b;
    x = splitmix64(&x) ^ c;
    return splitmix64(&x);
}

double nn_rng_normal(nn_rng *rng)
{
    /* Box-Muller; u1 in (0, 1] so the log is finite. */
    double u1 = 1.0 - nn_rng_uniform(rng);
    double u2 = nn_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---------------------------------------------------------------- */
/* BLAS threading                                                    */
/* ---------------------------------------------------------------- */

int nn_reference_gemm_on = 0;

int nn_use_reference_gemm(int on)
{
    int old = nn_reference_gemm_on;
    nn_reference_gemm_on = on ? 1 : 0;
    return old;
}

/*
 * Threads by problem size are left to OpenBLAS: it runs products of fewer
 * than 2^19 multiply-adds on the calling thread alone, and splits bigger
 * ones (on nnlayers' workers, pool.c). Cutting products into per-thread
 * blocks ourselves (through OpenBLAS's batch interface) was measured no
 * faster on the 2-core machine, and changing OpenBLAS's process-wide count
 * per call would race with nl.set_num_threads in other threads.
 */
int nn_blas_get_num_threads(void)
{
    return NN_BLAS(openblas_get_num_threads)();
}

/* Not during another user thread's training step: a split step sets
 * OpenBLAS to one thread and back (pool.c). */
nn_status nn_blas_set_num_threads(int n)
{
    nn_status st;
    nn_steps_hold();
    NN_BLAS(openblas_set_num_threads)(n);
    st = nn_pool_reserve(n);
    nn_steps_release();
    return st;
}

const char *nn_blas_config(void)
{
    const char *c = NN_BLAS(openblas_get_config)();
    return c ? c : "unknown";
}

/* ---------------------------------------------------------------- */
/* Dispatch by dtype                                                 */
/* ---------------------------------------------------------------- */

nn_status nn_loss_eval(nn_dtype dt, nn_loss_kind kind, double arg,
                       double *loss, void *dpred, const void *pred,
                       const int64_t *labels, const void *T, const void *w,
                       size_t N, size_t C)
{
    double sum = 0, scale = 1.0 / (double)N;
    nn_status st =
        dt == NN_F32
            ? nn_loss_rows_f32(kind, arg, &sum, dpred, pred, labels, T, w, N,
                               C, scale)
            : nn_loss_rows_f64(kind, arg, &sum, dpred, pred, labels, T, w, N,
                               C, scale);
    if (st == NN_OK)
        *loss = sum * scale;
    return st;
}

nn_status nn_metric_eval(nn_dtype dt, nn_metric_kind kind, double *sum,
                         const void *pred, const int64_t *labels,
                         const void *T, const void *w, size_t N, size_t C,
                         double threshold)
{
    return dt == NN_F32 ? nn_metric_rows_f32(kind, sum, pred, labels, T, w,
                                             N, C, threshold)
                        : nn_metric_rows_f64(kind, sum, pred, labels, T, w,
                                             N, C, threshold);
}

double nn_loss_threshold(nn_loss_kind kind)
{
    return kind == NN_LOSS_CATEGORICAL_XENT ||
                   kind == NN_LOSS_BINARY_XENT_PROBS
               ? 0.5
               : 0.0;
}
