/*
 * sgd.c (template): stochastic gradient descent, the first optimizer on
 * the interface of optim.c, with torch.optim.SGD's rules (dampening 0):
 *   g = grad + wd * param                      (L2 weight decay)
 *   v = momentum * v + g                       (when momentum != 0)
 *   g = nesterov ? g + momentum * v : v
 *   param -= lr * g
 * State of a segment whose group has momentum: momentum_buffer (the
 * velocity v, n values); none without momentum.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

NN_VECTOR_CLONES
static void FN(sgd_rule)(real *restrict param, const real *restrict grad,
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

static real *FN(sgd_velocity)(const nn_optim *o, const nn_segment *s)
{
    if (o->groups[s->group].momentum == 0)
        return NULL;
    return FN(optim_buffer)(o, s, 0, 0);
}

/* values [lo, hi) of segment s, from its gradient */
void FN(nn_sgd_update)(const nn_optim *o, const nn_segment *s, size_t lo,
                       size_t hi)
{
    const nn_hyper *h = &o->groups[s->group];
    real *v = FN(sgd_velocity)(o, s), *p, *g;
    FN(optim_values)(o, s, lo, hi, &p, &g);
    FN(sgd_rule)(p, g, v ? v + lo : NULL, hi - lo, h->lr, h->momentum,
                 h->nesterov, h->weight_decay);
}

typedef struct {
    real *W, *v;
    real lr, wd;
} FN(momentum_args);

static void FN(momentum_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(momentum_args) *p = arg;
    FN(momentum_apply)(p->W + lo, p->v + lo, hi - lo, p->lr, p->wd);
}

/*
 * Rows [r0, r1) of a 2-D segment W (R, C) whose gradient is A^T B (A
 * (K, R) from column r0, B (K, C)), folded into the update so the
 * gradient is never written out and read back:
 *   plain     W <- (1 - lr wd) W - lr A^T B    one GEMM (alpha -lr,
 *                                              beta 1 - lr wd, C = W)
 *   momentum  v <- mu v + A^T B                one GEMM (beta mu, C = v)
 *             v += wd W;  W -= lr v            one pass
 * These are sgd_rule's formulas; only the rounding order differs.
 * Nesterov is not folded (can_fold says no): its update reads g twice;
 * nor is a step that clips gradients (by value here; by norm the engine
 * defers every update until all gradients are there).
 */
nn_status FN(nn_sgd_fold_gemm)(const nn_optim *o, const nn_segment *s,
                               size_t r0, size_t r1, const void *A,
                               size_t lda, const void *B, size_t ldb,
                               size_t K)
{
    const nn_hyper *h = &o->groups[s->group];
    const nn_tensor *t = &s->layer->t[s->tensor];
    size_t C = t->dim[1];
    real *W = (real *)t->data + r0 * C, *v = FN(sgd_velocity)(o, s);
    nn_status st;
    if (!v)
        return FN(nn_gemm)(1, 0, r1 - r0, C, K, -(real)h->lr, A, lda, B, ldb,
                           (real)(1.0 - h->lr * h->weight_decay), W, C);
    v += r0 * C;
    st = FN(nn_gemm)(1, 0, r1 - r0, C, K, 1, A, lda, B, ldb,
                     (real)h->momentum, v, C);
    if (st == NN_OK) {
        FN(momentum_args) p = {W, v, (real)h->lr, (real)h->weight_decay};
        nn_parallel_range(FN(momentum_piece), &p, (r1 - r0) * C,
                          NN_PAR_GRAIN, NN_PAR_ALIGN);
    }
    return st;
}
