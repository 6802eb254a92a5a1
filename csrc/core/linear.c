/*
 * linear.c (template): the fully connected layer, tensors W (I, O) and
 * b (O) (when it has a bias).
 *   forward   y (N, O) = x (N, I) W + b     (b first, then the product
 *                                            added onto it: no zeroing)
 *   backward  dx (N, I) (+)= dy (N, O) W^T
 *             dW (I, O)     = x^T dy         (through the engine's pg:
 *             db (O)        = sum_n dy[n]     accumulated, overwritten or
 *                                            folded into an update)
 * The transposes are BLAS flags, never copies.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* y (N, O): every row = b (O); rows split between the threads when big */
typedef struct {
    real *y;
    const real *b;
    size_t O;
} FN(fill_args);

static void FN(fill_rows_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(fill_args) *p = arg;
    size_t n;
    for (n = lo; n < hi; n++)
        memcpy(p->y + n * p->O, p->b, p->O * sizeof(real));
}

static void FN(fill_rows)(real *y, const real *b, size_t N, size_t O)
{
    FN(fill_args) p = {y, b, O};
    nn_parallel_range(FN(fill_rows_piece), &p, N,
                      NN_PAR_GRAIN / (O ? O : 1) + 1, 1);
}

/*
 * out[o] (+)= sum over rows n of g[n, o], for columns o in [lo, hi) of
 * g (N, O); add: 1 adds to out, 0 overwrites it. The sums run in a local
 * block of 64 columns, written to out once: summing straight into out made
 * every add a load and a store the compiler could not keep in registers
 * (out might alias g).
 */
NN_VECTOR_CLONES
static void FN(column_sums_block)(real *out, const real *g, size_t N,
                                  size_t O, size_t lo, size_t hi, int add)
{
    size_t n, o, o0;
    for (o0 = lo; o0 < hi; o0 += 64) {
        real acc[64];
        size_t w = hi - o0 < 64 ? hi - o0 : 64;
        for (o = 0; o < w; o++)
            acc[o] = 0;
        for (n = 0; n < N; n++) {
            const real *row = g + n * O + o0;
            for (o = 0; o < w; o++)
                acc[o] += row[o];
        }
        for (o = 0; o < w; o++)
            out[o0 + o] = add ? out[o0 + o] + acc[o] : acc[o];
    }
}

#ifdef NN_AVX512_KERNELS
/* Columns [o0, o0 + 16 nv) of g (N, O) summed over its rows into acc, the
 * last vector under mask `last` (nv a constant where it is inlined) */
__attribute__((target("avx512f"), always_inline)) static inline void
column_sums_x16(__m512 *acc, const float *g, size_t N, size_t O, size_t o0,
                size_t nv, __mmask16 last)
{
    size_t n, v;
    for (v = 0; v < nv; v++)
        acc[v] = _mm512_setzero_ps();
    for (n = 0; n < N; n++) {
        const float *row = g + n * O + o0;
        for (v = 0; v + 1 < nv; v++)
            acc[v] = _mm512_add_ps(acc[v], _mm512_loadu_ps(row + 16 * v));
        acc[v] = _mm512_add_ps(acc[v],
                               _mm512_maskz_loadu_ps(last, row + 16 * v));
    }
}

/* column_sums_block with AVX-512: a block of up to 64 sums in registers,
 * each the same chain of adds over the rows */
__attribute__((target("avx512f"))) static void
column_sums_avx512(float *out, const float *g, size_t N, size_t O,
                   size_t lo, size_t hi, int add)
{
    size_t o0, v;
    for (o0 = lo; o0 < hi; o0 += 64) {
        size_t w = hi - o0 < 64 ? hi - o0 : 64, nv = (w + 15) / 16;
        size_t tail = w - 16 * (nv - 1);
        __mmask16 last = (__mmask16)((1u << tail) - 1), m;
        __m512 acc[4];
        switch (nv) {
        case 1: column_sums_x16(acc, g, N, O, o0, 1, last); break;
        case 2: column_sums_x16(acc, g, N, O, o0, 2, last); break;
        case 3: column_sums_x16(acc, g, N, O, o0, 3, last); break;
        default: column_sums_x16(acc, g, N, O, o0, 4, last); break;
        }
        for (v = 0; v < nv; v++) {
            float *o = out + o0 + 16 * v;
            m = v + 1 < nv ? (__mmask16)0xFFFF : last;
            if (add)
                acc[v] = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), acc[v]);
            _mm512_mask_storeu_ps(o, m, acc[v]);
        }
    }
}
#endif

typedef struct {
    real *out;
    const real *g;
    size_t N, O, lo;
    int add;
} FN(colsum_args);

static void FN(column_sums_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(colsum_args) *p = arg;
#ifdef NN_AVX512_KERNELS
    if (nn_simd_level() == NN_SIMD_AVX512) {
        column_sums_avx512(p->out, p->g, p->N, p->O, p->lo + lo, p->lo + hi,
                           p->add);
        return;
    }
#endif
    FN(column_sums_block)(p->out, p->g, p->N, p->O, p->lo + lo, p->lo + hi,
                          p->add);
}

void FN(nn_column_sums)(real *out, const real *g, size_t N, size_t O,
                        size_t lo, size_t hi, int add)
{
    FN(colsum_args) p = {out, g, N, O, lo, add};
    /* at least NN_PAR_GRAIN values a piece (N may be 0: an empty batch) */
    nn_parallel_range(FN(column_sums_piece), &p, hi - lo,
                      NN_PAR_GRAIN / (N ? N : 1) + 1, NN_PAR_ALIGN);
}

#define LIN_W(L) ((real *)(L)->t[0].data)
#define LIN_B(L) ((L)->bias ? (real *)(L)->t[1].data : NULL)

nn_status FN(nn_op_linear_forward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    const real *x = io->x[0], *b = LIN_B(L);
    real *y = io->y;
    size_t N = io->n, I = L->in, O = L->out;
    if (!b)
        return FN(nn_gemm)(0, 0, N, O, I, 1, x, I, LIN_W(L), O, 0, y, O);
    if (FN(small_gemm_from_row)(N, O, I, x, LIN_W(L), b, y))
        return NN_OK;
    FN(fill_rows)(y, b, N, O);
    return FN(nn_gemm)(0, 0, N, O, I, 1, x, I, LIN_W(L), O, 1, y, O);
}

/* dW = x^T dy, db = column sums of dy, as the engine's pg wants them */
nn_status FN(nn_op_linear_param_grads)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    nn_status st = FN(nn_pg_gemm)(io->pg, 0, io->x[0], L->in, io->dy, L->out,
                                  io->n);
    if (st == NN_OK && L->bias)
        st = FN(nn_pg_colsum)(io->pg, 1, io->dy, io->n);
    return st;
}

/* dx first: the parameter gradients may update W at once */
nn_status FN(nn_op_linear_backward)(const nn_node_io *io)
{
    const nn_layer *L = io->L;
    size_t N = io->n, I = L->in, O = L->out;
    nn_status st = NN_OK;
    if (io->dx[0])
        st = FN(nn_gemm)(0, 1, N, I, O, 1, io->dy, O, LIN_W(L), O,
                         io->dx_acc[0] ? 1 : 0, io->dx[0], I);
    if (st == NN_OK && io->pg)
        st = FN(nn_op_linear_param_grads)(io);
    return st;
}
