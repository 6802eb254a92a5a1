/*
 * sgd.c (template): the SGD update over a flat run of parameters, with
 * torch.optim.SGD's rules (dampening 0):
 *   g = grad + wd * param                      (L2 weight decay)
 *   v = momentum * v + g                       (when momentum != 0)
 *   g = nesterov ? g + momentum * v : v
 *   param -= lr * g
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

NN_VECTOR_CLONES
void FN(nn_sgd_update)(real *restrict param, const real *restrict grad,
                       real *restrict velocity, size_t n, double lr,
                       double momentum, int nesterov, double weight_decay)
{
    size_t i;
    real eta = (real)lr, mu = (real)momentum, wd = (real)weight_decay;
    if (momentum == 0 || !velocity) {
        if (weight_decay == 0) {
            for (i = 0; i < n; i++)
                param[i] -= eta * grad[i];
        } else {
            for (i = 0; i < n; i++)
                param[i] -= eta * (grad[i] + wd * param[i]);
        }
        return;
    }
    /* the nesterov test outside the loops, so each one vectorises */
    if (nesterov) {
        for (i = 0; i < n; i++) {
            real g = grad[i] + wd * param[i];
            real v = mu * velocity[i] + g;
            velocity[i] = v;
            param[i] -= eta * (g + mu * v);
        }
    } else {
        for (i = 0; i < n; i++) {
            real g = grad[i] + wd * param[i];
            real v = mu * velocity[i] + g;
            velocity[i] = v;
            param[i] -= eta * v;
        }
    }
}

/* v (n) += wd param;  param (n) -= lr v: the rest of a momentum step
 * once v holds mu v + the gradient */
NN_VECTOR_CLONES
static void FN(momentum_apply)(real *restrict param, real *restrict v,
                               size_t n, real lr, real wd)
{
    size_t i;
    if (wd != 0) {
        for (i = 0; i < n; i++) {
            v[i] += wd * param[i];
            param[i] -= lr * v[i];
        }
    } else {
        for (i = 0; i < n; i++)
            param[i] -= lr * v[i];
    }
}

/* Velocity of segment k: the k-th run of the optimiser's one block. */
static real *FN(segment_velocity)(const nn_sgd *opt, size_t k)
{
    size_t j, off = 0;
    if (!opt->velocity)
        return NULL;
    for (j = 0; j < k; j++)
        off += opt->segments[j].n;
    return (real *)opt->velocity + off;
}

static void FN(sgd_update_segment)(const nn_sgd *opt, size_t k)
{
    const nn_segment *s = &opt->segments[k];
    if (s->layer && !s->layer->trainable)
        return;
    FN(nn_sgd_update)((real *)s->param, (const real *)s->grad,
                      FN(segment_velocity)(opt, k), s->n, opt->lr,
                      opt->momentum, opt->nesterov, opt->weight_decay);
}

/* The segment holding layer L's parameters, or -1 when opt has none. */
static long FN(segment_of_layer)(const nn_sgd *opt, const nn_layer *L)
{
    size_t k;
    for (k = 0; k < opt->n_segments; k++)
        if (opt->segments[k].layer == L)
            return (long)k;
    return -1;
}

/* The momentum and Nesterov passes over a layer's weights, split between
 * the threads when big */
typedef struct {
    real *W;
    const real *dW;
    real *v;
    const nn_sgd *opt;
} FN(update_args);

static void FN(momentum_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(update_args) *p = arg;
    FN(momentum_apply)(p->W + lo, p->v + lo, hi - lo, (real)p->opt->lr,
                       (real)p->opt->weight_decay);
}

static void FN(nesterov_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(update_args) *p = arg;
    FN(nn_sgd_update)(p->W + lo, p->dW + lo, p->v + lo, hi - lo,
                      p->opt->lr, p->opt->momentum, 1,
                      p->opt->weight_decay);
}

/*
 * The SGD step of one Linear layer during a training step's backward,
 * from the layer's input x (N, I) and its output gradient g (N, O). The
 * weight gradient x^T g is folded into the update wherever the rule
 * allows, so it is never written out and read back:
 *   plain     W <- (1 - lr wd) W - lr x^T g      one GEMM (alpha -lr,
 *                                                beta 1 - lr wd, C = W)
 *   momentum  vW <- mu vW + x^T g                one GEMM (beta mu, C = vW)
 *             vW += wd W;  W -= lr vW            one pass
 *   nesterov  dW = x^T g (a GEMM into the gradient buffer), then
 *             nn_sgd_update as in SGD.step
 * The bias always goes through db = column sums of g and nn_sgd_update.
 * These are nn_sgd_update's rules; only the rounding order differs.
 * Layers the optimiser does not hold, or frozen ones, are left alone.
 * W must not be needed any more: the input gradient g W^T comes first.
 *
 * Part `part` of `parts` updates only rows [I part / parts, I (part + 1)
 * / parts) of W and the matching share of b's columns: the parts touch
 * disjoint values and together make the whole step (net_step.c runs them
 * on different threads). parts == 1 is the whole layer, with its passes
 * split between the threads by nn_parallel_range.
 */
nn_status FN(nn_sgd_linear_step_part)(const nn_sgd *opt, const nn_layer *L,
                                      const real *x, const real *g, size_t N,
                                      size_t part, size_t parts)
{
    long k = FN(segment_of_layer)(opt, L);
    size_t I = L->in, O = L->out, nW = I * O;
    size_t r0 = I * part / parts, r1 = I * (part + 1) / parts;
    size_t c0 = O * part / parts, c1 = O * (part + 1) / parts;
    size_t nr = (r1 - r0) * O;              /* values in rows [r0, r1) */
    real *W = (real *)L->W + r0 * O, *dW = (real *)L->dW + r0 * O;
    real *v = k >= 0 ? FN(segment_velocity)(opt, (size_t)k) : NULL;
    real *vW = v ? v + r0 * O : NULL;
    FN(update_args) args = {W, dW, vW, opt};
    nn_status st = NN_OK;
    if (k < 0 || !L->trainable)
        return NN_OK;
    x += r0;   /* columns [r0, r1) of x (N, I): rows of x^T */
    if (r1 == r0) {
        st = NN_OK;
    } else if (opt->momentum == 0 || !v) {
        /* W[r0:r1] (r, O) = (1 - lr wd) W[r0:r1] - lr x[:, r0:r1]^T g */
        st = FN(nn_gemm)(1, 0, r1 - r0, O, N, -(real)opt->lr, x, I, g, O,
                         (real)(1.0 - opt->lr * opt->weight_decay), W, O);
    } else if (!opt->nesterov) {
        st = FN(nn_gemm)(1, 0, r1 - r0, O, N, 1, x, I, g, O,
                         (real)opt->momentum, vW, O);
        if (st == NN_OK)
            nn_parallel_range(FN(momentum_piece), &args, nr, NN_PAR_GRAIN,
                              NN_PAR_ALIGN);
    } else {
        st = FN(nn_gemm)(1, 0, r1 - r0, O, N, 1, x, I, g, O, 0, dW, O);
        if (st == NN_OK)
            nn_parallel_range(FN(nesterov_piece), &args, nr, NN_PAR_GRAIN,
                              NN_PAR_ALIGN);
    }
    if (st != NN_OK || !L->b || c1 == c0)
        return st;
    /* db[c0:c1] = column sums of g; b[c0:c1] by the rules */
    if (parts == 1)
        FN(column_sums)((real *)L->db, g, N, O, 0);
    else
        FN(column_sums_range)((real *)L->db, g, N, O, c0, c1, 0);
    FN(nn_sgd_update)((real *)L->b + c0, (const real *)L->db + c0,
                      v ? v + nW + c0 : NULL, c1 - c0, opt->lr,
                      opt->momentum, opt->nesterov, opt->weight_decay);
    return NN_OK;
}

nn_status FN(nn_sgd_linear_step)(const nn_sgd *opt, const nn_layer *L,
                                 const real *x, const real *g, size_t N)
{
    return FN(nn_sgd_linear_step_part)(opt, L, x, g, N, 0, 1);
}

/* Update every segment (SGD.step) */
void FN(nn_sgd_step_all)(const nn_sgd *opt)
{
    size_t k;
    for (k = 0; k < opt->n_segments; k++)
        FN(sgd_update_segment)(opt, k);
}
