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
 *   gelu      f = z Phi(z)              f' = Phi(z) + z phi(z)
 *             (Phi, phi: the standard normal's cdf and density)
 *   gelu tanh f = z s, s = sigmoid(2u), u = sqrt(2/pi) (z + 0.044715 z^3)
 *             (= z (1 + tanh u) / 2)    f' = s + 2 z s (1 - s) u'
 *   silu      f = z sigmoid(z)          f' = s (1 + z (1 - s)), s = sigmoid(z)
 *   elu       f = z <= 0 ? alpha (e^z - 1) : z
 *                                       f' = z <= 0 ? alpha e^z : 1, and
 *                                       for alpha >= 0 a <= 0 ? a + alpha : 1
 *   softsign  f = z / (1 + |z|)         f' = 1 / (1 + |z|)^2 = (1 - |a|)^2
 *   hardtanh  f = min(max(z, lo), hi)   f' = [lo < z < hi] = [lo < a < hi]
 * Sigmoid and softplus are written so no exp() overflows; GELU's Phi is
 * erfc(-z / sqrt 2) / 2 and its tanh form uses sigmoid(2u) = (1 + tanh u)
 * / 2, so their lower tails do not cancel (1 + erf and 1 + tanh do).
 * NaN, as in torch: a NaN z gives a NaN a, and in backward ELU passes da
 * (its test z <= 0 is false), Hardtanh gives 0 (lo < z < hi is false, as
 * in torch's vectorised hardtanh_backward), and so does ReLU. Hardtanh's
 * derivative is 0 at lo and hi.
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

#define NN_SQRT1_2 0.70710678118654752440        /* 1 / sqrt(2) */
#define NN_INV_SQRT_2PI 0.39894228040143267794   /* 1 / sqrt(2 pi) */
#define NN_SQRT_2_PI 0.79788456080286535588      /* sqrt(2 / pi) */
#define NN_GELU_KAPPA 0.044715

/* Phi(z) = erfc(-z / sqrt 2) / 2: accurate in the lower tail */
static inline real FN(normal_cdf)(real z)
{
    return (real)0.5 * R_ERFC(-z * (real)NN_SQRT1_2);
}

/* phi(z) = e^(-z^2 / 2) / sqrt(2 pi) */
static inline real FN(normal_pdf)(real z)
{
    return (real)NN_INV_SQRT_2PI * R_EXP((real)-0.5 * z * z);
}

/* u = sqrt(2/pi) (z + kappa z^3), the argument of GELU's tanh form */
static inline real FN(gelu_tanh_arg)(real z)
{
    return (real)NN_SQRT_2_PI * (z + (real)NN_GELU_KAPPA * z * z * z);
}

/* GELU's tanh form z (1 + tanh u) / 2 = z sigmoid(2u) */
static inline real FN(gelu_tanh_value)(real z)
{
    return z * FN(sigmoid_value)(2 * FN(gelu_tanh_arg)(z));
}

/* d/dz z sigmoid(2u) = s + 2 z s (1 - s) u', with s and s (1 - s) from
 * one e = e^(-2|u|) (torch's 0.5 (1 + t) + 0.5 z (1 - t^2) u', t = tanh u) */
static inline real FN(gelu_tanh_grad)(real z)
{
    real u = FN(gelu_tanh_arg)(z);
    real e = R_EXP(-2 * R_FABS(u));
    real r = 1 / (1 + e);
    real s = u >= 0 ? r : e * r;
    real du = (real)NN_SQRT_2_PI * (1 + 3 * (real)NN_GELU_KAPPA * z * z);
    return s + 2 * z * (e * r * r) * du;
}

/* d/dz z sigmoid(z) = s (1 + z (1 - s)) */
static inline real FN(silu_grad)(real z)
{
    real s = FN(sigmoid_value)(z);
    return s * (1 + z * (1 - s));
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
void FN(nn_act_forward)(nn_kind kind, const double *arg, real *out,
                        const real *inp, size_t n)
{
    real s = (real)arg[0];   /* slope (LeakyReLU), alpha (ELU) */
    switch (kind) {
    case NN_RELU: ACT_MAP(out, inp, n, z > 0 ? z : (z != z ? z : 0)); break;
    case NN_LEAKY_RELU: ACT_MAP(out, inp, n, z > 0 ? z : s * z); break;
    case NN_SIGMOID: ACT_MAP(out, inp, n, FN(sigmoid_value)(z)); break;
    case NN_TANH: ACT_MAP(out, inp, n, R_TANH(z)); break;
    case NN_SOFTPLUS: ACT_MAP(out, inp, n, FN(softplus_value)(z)); break;
    case NN_STEP: ACT_MAP(out, inp, n, z > 0 ? (real)1 : (z != z ? z : 0)); break;
    case NN_COS: ACT_MAP(out, inp, n, R_COS(z)); break;
    case NN_GELU:
        if (arg[0] != 0)
            ACT_MAP(out, inp, n, FN(gelu_tanh_value)(z));
        else
            ACT_MAP(out, inp, n, z * FN(normal_cdf)(z));
        break;
    case NN_SILU: ACT_MAP(out, inp, n, z * FN(sigmoid_value)(z)); break;
    case NN_ELU: ACT_MAP(out, inp, n, z <= 0 ? s * R_EXPM1(z) : z); break;
    case NN_SOFTSIGN: ACT_MAP(out, inp, n, z / (1 + R_FABS(z))); break;
    case NN_HARDTANH: {
        real lo = (real)arg[0], hi = (real)arg[1];
        /* a NaN z fails both tests: it stays NaN */
        ACT_MAP(out, inp, n, z < lo ? lo : (z > hi ? hi : z));
        break;
    }
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

/* A VJP that is a select, dz = keep ? da : 0, keep an expression of v,
 * the value at i of vals (ReLU's z > 0, like torch's threshold_backward;
 * Hardtanh's lo < a < hi, like its hardtanh_backward): no multiply, so it
 * vectorises and a NaN or Inf in da does not leak through where the
 * derivative is 0. */
#define ACT_SELECT(dinp, dout, vals, n, acc, keep)                         \
    do {                                                                   \
        real *restrict dz_ = (dinp);                                       \
        const real *restrict da_ = (dout);                                 \
        const real *restrict v_ = (vals);                                  \
        size_t i_;                                                         \
        if (acc)                                                           \
            for (i_ = 0; i_ < (n); i_++) {                                 \
                real g_ = da_[i_], v = v_[i_];                             \
                dz_[i_] += (keep) ? g_ : (real)0;                          \
            }                                                              \
        else                                                               \
            for (i_ = 0; i_ < (n); i_++) {                                 \
                real g_ = da_[i_], v = v_[i_];  /* both loaded: a blend */ \
                dz_[i_] = (keep) ? g_ : (real)0;                           \
            }                                                              \
    } while (0)

NN_VECTOR_CLONES
void FN(nn_act_backward)(nn_kind kind, const double *arg, real *dinp,
                         const real *dout, const real *inp, const real *out,
                         size_t n, int acc)
{
    real s = (real)arg[0];   /* slope (LeakyReLU), alpha (ELU) */
    size_t i;
    switch (kind) {
    case NN_RELU: ACT_SELECT(dinp, dout, inp, n, acc, v > 0); break;
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
    case NN_GELU:
        if (arg[0] != 0)
            ACT_VJP(dinp, dout, inp, out, n, acc, FN(gelu_tanh_grad)(z_[i_]));
        else
            ACT_VJP(dinp, dout, inp, out, n, acc,
                    FN(normal_cdf)(z_[i_]) + z_[i_] * FN(normal_pdf)(z_[i_]));
        break;
    case NN_SILU:
        ACT_VJP(dinp, dout, inp, out, n, acc, FN(silu_grad)(z_[i_]));
        break;
    case NN_ELU:
        /* alpha >= 0: the sign of a is that of z, so from a (in place) */
        if (arg[0] >= 0)
            ACT_VJP(dinp, dout, inp, out, n, acc,
                    a_[i_] <= 0 ? a_[i_] + s : (real)1);
        else
            ACT_VJP(dinp, dout, inp, out, n, acc,
                    z_[i_] <= 0 ? s * R_EXP(z_[i_]) : (real)1);
        break;
    case NN_SOFTSIGN:
        ACT_VJP(dinp, dout, inp, out, n, acc,
                (1 - R_FABS(a_[i_])) * (1 - R_FABS(a_[i_])));
        break;
    case NN_HARDTANH: {
        real lo = (real)arg[0], hi = (real)arg[1];
        ACT_SELECT(dinp, dout, out, n, acc, (v > lo) & (v < hi));
        break;
    }
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
    const double *arg;       /* the layer's arguments */
    real *dst;
    const real *a, *b, *c;
    int acc;
} FN(act_args);

static void FN(act_forward_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(act_args) *p = arg;
    FN(nn_act_forward)(p->kind, p->arg, p->dst + lo, p->a + lo, hi - lo);
}

static void FN(act_backward_piece)(void *arg, size_t lo, size_t hi)
{
    const FN(act_args) *p = arg;
    FN(nn_act_backward)(p->kind, p->arg, p->dst + lo, p->a + lo, p->b + lo,
                        p->c + lo, hi - lo, p->acc);
}

nn_status FN(nn_op_act_forward)(const nn_node_io *io)
{
    FN(act_args) p = {io->L->kind, io->L->arg, io->y, io->x[0], NULL,
                      NULL, 0};
    nn_parallel_range(FN(act_forward_piece), &p, io->n * io->out_w,
                      NN_PAR_GRAIN, NN_PAR_ALIGN);
    return NN_OK;
}

nn_status FN(nn_op_act_backward)(const nn_node_io *io)
{
    FN(act_args) p = {io->L->kind, io->L->arg, io->dx[0], io->dy,
                      io->x[0], io->y, io->dx_acc[0]};
    if (!io->dx[0])
        return NN_OK;
    nn_parallel_range(FN(act_backward_piece), &p, io->n * io->out_w,
                      NN_PAR_GRAIN, NN_PAR_ALIGN);
    return NN_OK;
}
