/*
 * dropout.c (template): inverted dropout, torch's semantics.
 *   training  y = x * keep / (1 - p), keep = 1 with probability 1 - p
 *   eval      y = x
 *   VJP       dx = dy * keep / (1 - p) (eval: dy)
 * The keep mask is not stored: it is a counter-based function of the
 * model's seed, its step count, the node, the global row and the column
 * (nn_hash4 for the node's key, then one splitmix64 finalisation per pair
 * of columns), so backward recomputes it, and a row's mask does not
 * depend on how a batch is split between threads (or between MPI ranks,
 * through the global row). p = 1 drops everything (y = 0).
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

#ifndef NN_DROPOUT_BITS_DEFINED
#define NN_DROPOUT_BITS_DEFINED
/* 64 random bits for (key, global row, pair of columns): a splitmix64
 * finalisation of a Weyl sequence over rows and pairs */
static inline uint64_t nn_dropout_bits(uint64_t key, uint64_t row,
                                       uint64_t pair)
{
    uint64_t z = key + row * 0x9E3779B97F4A7C15ULL +
                 pair * 0xD1B54A32D192ED03ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* the node's key for this step, and the 32-bit threshold under which a
 * value is dropped (p 2^32, rounded) */
static inline void nn_dropout_setup(const nn_node_io *io, uint64_t *key,
                                    uint64_t *drop_below)
{
    double p = io->L->arg[0];
    *key = nn_hash4(io->seed, io->step, (uint64_t)io->node, 0x44524F50u);
    *drop_below = (uint64_t)(p * 4294967296.0 + 0.5);
}
#endif

/* out (+)= in * keep / (1 - p) for rows [0, n) (global rows from row0);
 * acc: add into out */
static void FN(dropout_rows)(real *out, const real *in, const nn_node_io *io,
                             size_t n, size_t F, int acc)
{
    uint64_t key, below;
    real scale = io->L->arg[0] < 1 ? (real)(1.0 / (1.0 - io->L->arg[0])) : 0;
    size_t r, c;
    nn_dropout_setup(io, &key, &below);
    for (r = 0; r < n; r++) {
        uint64_t row = (uint64_t)(io->row_base + io->row0 + r);
        const real *x = in + r * F;
        real *y = out + r * F;
        for (c = 0; c < F; c += 2) {   /* one word: columns c, c + 1 */
            uint64_t bits = nn_dropout_bits(key, row, c >> 1);
            real v = (bits & 0xFFFFFFFFu) >= below ? x[c] * scale : (real)0;
            y[c] = acc ? y[c] + v : v;
            if (c + 1 < F) {
                v = (bits >> 32) >= below ? x[c + 1] * scale : (real)0;
                y[c + 1] = acc ? y[c + 1] + v : v;
            }
        }
    }
}

nn_status FN(nn_op_dropout_forward)(const nn_node_io *io)
{
    size_t F = io->out_w;
    if (!io->training || io->L->arg[0] == 0) {
        if (io->y != io->x[0])
            memcpy(io->y, io->x[0], io->n * F * sizeof(real));
        return NN_OK;
    }
    FN(dropout_rows)(io->y, io->x[0], io, io->n, F, 0);
    return NN_OK;
}

nn_status FN(nn_op_dropout_backward)(const nn_node_io *io)
{
    size_t i, F = io->out_w, n = io->n * F;
    real *dx = io->dx[0];
    const real *dy = io->dy;
    if (!dx)
        return NN_OK;
    if (io->training && io->L->arg[0] != 0) {
        FN(dropout_rows)(dx, dy, io, io->n, F, io->dx_acc[0]);
    } else if (io->dx_acc[0]) {
        for (i = 0; i < n; i++)
            dx[i] += dy[i];
    } else {
        memcpy(dx, dy, n * sizeof(real));
    }
    return NN_OK;
}
