/*
 * linear.c (template): the fully connected layer.
 *   forward   out (N, O) = inp (N, I) W (I, O) + b (O)  (b first, then the
 *             product added onto it)
 *   backward  dinp (N, I) = dout (N, O) W^T           (overwritten)
 *             dW   (I, O) += inp^T dout                (accumulated)
 *             db   (O)    += sum over rows of dout     (accumulated)
 * The transposes are BLAS flags, never copies.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* out (N, O): every row = b (O); rows split between the threads when big */
typedef struct {
    real *out;
    const real *b;
    size_t O;
} FN(fill_args);

static void FN(fill_rows_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(fill_args) *p = arg;
    size_t n;
    for (n = lo; n < hi; n++)
        memcpy(p->out + n * p->O, p->b, p->O * sizeof(real));
}

static void FN(fill_rows)(real *out, const real *b, size_t N, size_t O)
{
    FN(fill_args) p = {out, b, O};
    nn_parallel_range(FN(fill_rows_piece), &p, N,
                      NN_PAR_GRAIN / (O ? O : 1) + 1, 1);
}

/*
 * out[o] (+)= sum over rows n of g[n, o], for columns o in [lo, hi) of
 * g (N, O); add: 1 adds to out, 0 overwrites it. The sums run in a local
 * block of 64 columns, written to out once: summing straight into out made
 * every add a load and a store the compiler could not keep in registers
 * (out might alias g), 11% of a small training step.
 */
NN_VECTOR_CLONES
static void FN(column_sums_range)(real *out, const real *g, size_t N,
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

/* db (O) (+)= column sums of g (N, O) (add: 1 adds, 0 overwrites);
 * columns split between the threads when g is big */
typedef struct {
    real *db;
    const real *g;
    size_t N, O;
    int add;
} FN(colsum_args);

static void FN(column_sums_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(colsum_args) *p = arg;
    FN(column_sums_range)(p->db, p->g, p->N, p->O, lo, hi, p->add);
}

static void FN(column_sums)(real *db, const real *g, size_t N, size_t O,
                            int add)
{
    FN(colsum_args) p = {db, g, N, O, add};
    /* at least NN_PAR_GRAIN values a piece (N may be 0: an empty batch) */
    nn_parallel_range(FN(column_sums_piece), &p, O,
                      NN_PAR_GRAIN / (N ? N : 1) + 1, NN_PAR_ALIGN);
}

/* The bias goes in first and the product adds onto it (beta = 1): no
 * zeroing of out by OpenBLAS, no second pass to add b. */
nn_status FN(nn_linear_forward)(real *out, const real *inp, const real *W,
                                const real *b, size_t N, size_t I, size_t O)
{
    if (!b)
        return FN(nn_gemm)(0, 0, N, O, I, 1, inp, I, W, O, 0, out, O);
    FN(fill_rows)(out, b, N, O);
    return FN(nn_gemm)(0, 0, N, O, I, 1, inp, I, W, O, 1, out, O);
}

nn_status FN(nn_linear_backward)(real *dinp, real *dW, real *db,
                                 const real *dout, const real *inp,
                                 const real *W, size_t N, size_t I, size_t O)
{
    nn_status st;
    if (dinp) {
        /* dinp (N, I) = dout (N, O) . W^T (O, I) */
        st = FN(nn_gemm)(0, 1, N, I, O, 1, dout, O, W, O, 0, dinp, I);
        if (st != NN_OK)
            return st;
    }
    if (dW) {
        /* dW (I, O) += inp^T (I, N) . dout (N, O) */
        st = FN(nn_gemm)(1, 0, I, O, N, 1, inp, I, dout, O, 1, dW, O);
        if (st != NN_OK)
            return st;
    }
    if (db)
        FN(column_sums)(db, dout, N, O, 1);
    return NN_OK;
}
