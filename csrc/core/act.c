/*
 * act.c (template): elementwise activations a = f(z) and their VJPs
 * dz = da * f'(z). Backward receives both z (inp) and a (out) and uses
 * whichever is cheaper:
 *   identity  f = z                     f' = 1
 *   relu      f = max(z, 0)             f' = [z > 0]  (dz = z > 0 ? da : 0)
 *   leaky     f = z > 0 ? z : slope z   f' = z > 0 ? 1 : slope
 *   sigmoid   f = 1 / (1 + e^-z)        f' = a (1 - a)
 *   tanh      f = tanh z                f' = 1 - a^2
 *   softplus  f = log(1 + e^z)          f' = sigmoid(z)
 *   step      f = [z > 0]               f' = 0 (a.e.): nothing trains below it
 *   cos       f = cos z                 f' = -sin z
 * Sigmoid and softplus are written so no exp() overflows.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

static inline real FN(sigmoid_value)(real z)
{
    if (z >= 0) {
        return 1 / (1 + R_EXP(-z));
    } else {
        real e = R_EXP(z);
        return e / (1 + e);
    }
}

/* log(1 + e^z) = max(z, 0) + log1p(e^-|z|) */
static inline real FN(softplus_value)(real z)
{
    return (z > 0 ? z : 0) + R_LOG1P(R_EXP(-R_FABS(z)));
}

/* f(z) for one value; the switch is hoisted out of loops by the callers
 * below through ACT_MAP. out may be inp (an activation in place over its
 * Linear's output), so no restrict here. */
#define ACT_MAP(out, inp, n, expr)                                         \
    do {                                                                   \
        real *o_ = (out);                                                  \
        const real *z_ = (inp);                                            \
        size_t i_;                                                         \
        for (i_ = 0; i_ < (n); i_++) {                                     \
            real z = z_[i_];                                               \
            o_[i_] = (expr);                                               \
        }                                                                  \
    } while (0)

NN_VECTOR_CLONES
void FN(nn_act_forward)(nn_kind kind, double slope, real *out,
                        const real *inp, size_t n)
{
    real s = (real)slope;
    switch (kind) {
    case NN_RELU: ACT_MAP(out, inp, n, z > 0 ? z : (z != z ? z : 0)); break;
    case NN_LEAKY_RELU: ACT_MAP(out, inp, n, z > 0 ? z : s * z); break;
    case NN_SIGMOID: ACT_MAP(out, inp, n, FN(sigmoid_value)(z)); break;
    case NN_TANH: ACT_MAP(out, inp, n, R_TANH(z)); break;
    case NN_SOFTPLUS: ACT_MAP(out, inp, n, FN(softplus_value)(z)); break;
    case NN_STEP: ACT_MAP(out, inp, n, z > 0 ? (real)1 : (z != z ? z : 0)); break;
    case NN_COS: ACT_MAP(out, inp, n, R_COS(z)); break;
    case NN_IDENTITY:
    default:
        if (out != inp)
            ACT_MAP(out, inp, n, z);
        break;
    }
}

/* dz (+)= dout * f'(z), written as a loop over (dz, dout, z, a); the
 * add-or-not test is outside the loop so each one vectorises. dinp never
 * aliases the others (gradients and values live in separate arenas); z
 * and a may be one buffer, only read. */
#define ACT_VJP(dinp, dout, inp, out, n, acc, deriv)                       \
    do {                                                                   \
        real *restrict dz_ = (dinp);                                       \
        const real *restrict da_ = (dout);                                 \
        const real *z_ = (inp);                                            \
        const real *a_ = (out);                                            \
        size_t i_;                                                         \
        (void)z_;                                                          \
        (void)a_;                                                          \
        if (acc)                                                           \
            for (i_ = 0; i_ < (n); i_++)                                   \
                dz_[i_] += da_[i_] * (deriv);                              \
        else                                                               \
            for (i_ = 0; i_ < (n); i_++)                                   \
                dz_[i_] = da_[i_] * (deriv);                               \
    } while (0)

/* ReLU's VJP as a select, dz = z > 0 ? da : 0 (like torch's
 * threshold_backward): no multiply, so it vectorises and a NaN or Inf in da
 * does not leak through where z <= 0. */
#define ACT_SELECT(dinp, dout, inp, n, acc)                                \
    do {                                                                   \
        real *restrict dz_ = (dinp);                                       \
        const real *restrict da_ = (dout);                                 \
        const real *restrict z_ = (inp);                                   \
        size_t i_;                                                         \
        if (acc)                                                           \
            for (i_ = 0; i_ < (n); i_++) {                                 \
                real g_ = da_[i_];                                         \
                dz_[i_] += z_[i_] > 0 ? g_ : (real)0;                      \
            }                                                              \
        else                                                               \
            for (i_ = 0; i_ < (n); i_++) {                                 \
                real g_ = da_[i_];  /* loaded unconditionally: a blend */  \
                dz_[i_] = z_[i_] > 0 ? g_ : (real)0;                       \
            }                                                              \
    } while (0)

NN_VECTOR_CLONES
void FN(nn_act_backward)(nn_kind kind, double slope, real *dinp,
                         const real *dout, const real *inp, const real *out,
                         size_t n, int acc)
{
    real s = (real)slope;
    size_t i;
    switch (kind) {
    case NN_RELU: ACT_SELECT(dinp, dout, inp, n, acc); break;
    case NN_LEAKY_RELU:
        ACT_VJP(dinp, dout, inp, out, n, acc, z_[i_] > 0 ? (real)1 : s);
        break;
    case NN_SIGMOID:
        ACT_VJP(dinp, dout, inp, out, n, acc, a_[i_] * (1 - a_[i_]));
        break;
    case NN_TANH:
        ACT_VJP(dinp, dout, inp, out, n, acc, 1 - a_[i_] * a_[i_]);
        break;
    case NN_SOFTPLUS:
        ACT_VJP(dinp, dout, inp, out, n, acc, FN(sigmoid_value)(z_[i_]));
        break;
    case NN_STEP:
        if (!acc)
            for (i = 0; i < n; i++)
                dinp[i] = 0;
        break;
    case NN_COS: ACT_VJP(dinp, dout, inp, out, n, acc, -R_SIN(z_[i_])); break;
    case NN_IDENTITY:
    default:
        if (acc)
            for (i = 0; i < n; i++)
                dinp[i] += dout[i];
        else
            for (i = 0; i < n; i++)
                dinp[i] = dout[i];
        break;
    }
}

/* The same two passes as graph ops, big blocks split between the
 * threads (pool.c). An in-place activation gets x == y. */
typedef struct {
    nn_kind kind;
    double slope;
    real *dst;
    const real *a, *b, *c;
    int acc;
} FN(act_args);

static void FN(act_forward_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(act_args) *p = arg;
    FN(nn_act_forward)(p->kind, p->slope, p->dst + lo, p->a + lo, hi - lo);
}

static void FN(act_backward_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(act_args) *p = arg;
    FN(nn_act_backward)(p->kind, p->slope, p->dst + lo, p->a + lo, p->b + lo,
                        p->c + lo, hi - lo, p->acc);
}

nn_status FN(nn_op_act_forward)(const nn_node_io *io)
{
    FN(act_args) p = {io->L->kind, io->L->arg[0], io->y, io->x[0], NULL,
                      NULL, 0};
    nn_parallel_range(FN(act_forward_piece), &p, io->n * io->out_w,
                      NN_PAR_GRAIN, NN_PAR_ALIGN);
    return NN_OK;
}

nn_status FN(nn_op_act_backward)(const nn_node_io *io)
{
    FN(act_args) p = {io->L->kind, io->L->arg[0], io->dx[0], io->dy,
                      io->x[0], io->y, io->dx_acc[0]};
    if (!io->dx[0])
        return NN_OK;
    nn_parallel_range(FN(act_backward_piece), &p, io->n * io->out_w,
                      NN_PAR_GRAIN, NN_PAR_ALIGN);
    return NN_OK;
}
