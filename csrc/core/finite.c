/*
 * finite.c (template): the first row of an input that holds a NaN or an
 * infinity. fit checks X and its validation inputs with it before the
 * first update, so it reads every value of X once per fit call: one
 * vectorised pass in blocks of rows, so a bad row stops it early.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* Whether x (n) holds a NaN or an infinity: x - x is 0 for every finite
 * x and NaN otherwise (no early exit, so the loop vectorises) */
NN_VECTOR_CLONES
static int FN(any_nonfinite)(const real *x, size_t n)
{
    size_t i;
    int bad = 0;
    for (i = 0; i < n; i++)
        bad |= (x[i] - x[i]) != 0;
    return bad;
}

/* Rows looked at per pass of any_nonfinite: about 16 KiB of values */
#define NN_FINITE_BLOCK (16384 / sizeof(real))

/* The first row in [n0, n1) of x (N, D) holding a non-finite value, or n1 */
static size_t FN(first_bad_in)(const real *x, size_t D, size_t n0, size_t n1)
{
    size_t rows = D < NN_FINITE_BLOCK ? NN_FINITE_BLOCK / D : 1, b, n;
    for (b = n0; b < n1; b += rows) {
        size_t b1 = n1 - b < rows ? n1 : b + rows;
        if (!FN(any_nonfinite)(x + b * D, (b1 - b) * D))
            continue;
        for (n = b; n < b1; n++)
            if (FN(any_nonfinite)(x + n * D, D))
                return n;
    }
    return n1;
}

typedef struct {
    const real *x;
    size_t D;
    size_t first;   /* atomic: the first bad row found so far, or N */
} FN(finite_scan);

/* Rows [lo, hi): lower first to a bad row found there */
static void FN(finite_piece)(void *arg, size_t lo, size_t hi)
{
    FN(finite_scan) *s = arg;
    size_t n = FN(first_bad_in)(s->x, s->D, lo, hi), seen;
    if (n == hi)
        return;
    seen = __atomic_load_n(&s->first, __ATOMIC_RELAXED);
    while (n < seen && !__atomic_compare_exchange_n(&s->first, &seen, n, 0,
                                                    __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED))
        ;
}

/* Rows split between the threads (a pass at memory speed), in pieces of
 * at least NN_PAR_GRAIN values */
size_t FN(nn_first_nonfinite_row)(const real *x, size_t N, size_t D)
{
    FN(finite_scan) s = {x, D, N};
    if (D == 0)
        return N;
    nn_parallel_range(FN(finite_piece), &s, N,
                      NN_PAR_GRAIN / D > 0 ? NN_PAR_GRAIN / D : 1, 1);
    return s.first;
}
