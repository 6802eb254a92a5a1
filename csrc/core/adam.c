/*
 * adam.c (template): Adam and AdamW, with torch.optim's rules (its
 * single-tensor path, maximize=False) in torch's order of operations, so
 * float64 results agree with torch's to rounding. For each value, at step
 * t (the optimizer's step count, this step included):
 *   AdamW only:  p *= 1 - lr wd                    (decoupled decay)
 *   Adam only:   g += wd p                         (L2)
 *   m = lerp(m, g, 1 - beta1)
 *   v = beta2 v + (1 - beta2) g^2
 *   amsgrad:     vmax = max(vmax, v), read instead of v below
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *           (eps_hat: + eps / sqrt(1 - beta2^t), scikit-learn's and
 *           Keras's step lr sqrt(1 - beta2^t) / (1 - beta1^t) m /
 *           (sqrt(v) + eps) written in torch's order)
 *   p += (-lr / (1 - beta1^t)) m / denom
 * Scalars are worked out in double once per call and rounded to the
 * dtype, as torch passes them to its kernels. One departure from torch's
 * order: the first division is a product with 1 / sqrt(1 - beta2^t),
 * which can differ from torch by a rounding of denom. With a square root
 * and two divisions per value the divider held the loop back; with one,
 * the loop runs at the speed of its memory traffic (p, m and v read and
 * written, g read).
 *
 * State of a segment of n values (optim.c, adam_buffers): exp_avg (m),
 * exp_avg_sq (v), and with amsgrad max_exp_avg_sq (vmax), n values each.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* The options a loop is specialised for */
enum { ADAM_L2 = 1, ADAM_DECAY = 2, ADAM_AMSGRAD = 4, ADAM_SMALL = 8 };

typedef struct {
    real decay, wd;          /* 1 - lr wd (AdamW); wd (Adam's L2) */
    real lerp_c;             /* FN(lerp)'s c for weight 1 - beta1 */
    real beta2, one_beta2;   /* beta2, 1 - beta2 */
    real inv_bc2_sqrt, eps;  /* 1 / sqrt(1 - beta2^t), eps */
    real neg_step;           /* -lr / (1 - beta1^t) */
} FN(adam_coefs);

/* Values [0, n): f is a constant of each caller (NN_SPECIALISE16) */
NN_INLINE void FN(adam_loop)(real *restrict p, const real *restrict g,
                             real *restrict m, real *restrict v,
                             real *restrict vmax, size_t n,
                             const FN(adam_coefs) *c, const unsigned f)
{
    size_t i;
    const int small = (f & ADAM_SMALL) != 0;
    for (i = 0; i < n; i++) {
        real pi = p[i], gi = g[i], mi, vi, denom;
        if (f & ADAM_DECAY)
            pi *= c->decay;
        if (f & ADAM_L2)
            gi = gi + c->wd * pi;
        mi = FN(lerp)(m[i], gi, c->lerp_c, small);
        vi = v[i] * c->beta2 + (c->one_beta2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        if (f & ADAM_AMSGRAD) {
            vi = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = vi;
        }
        denom = R_SQRT(vi) * c->inv_bc2_sqrt + c->eps;
        p[i] = pi + (c->neg_step * mi) / denom;
    }
}

/* Every value of the segment, the loop specialised for its options */
NN_INLINE void FN(adam_rule_body)(real *restrict p, const real *restrict g,
                                  real *restrict m, real *restrict v,
                                  real *restrict vmax, size_t n,
                                  const FN(adam_coefs) *c, unsigned flags)
{
#define ADAM_CASE(k) FN(adam_loop)(p, g, m, v, vmax, n, c, k)
    NN_SPECIALISE16(flags, ADAM_CASE)
#undef ADAM_CASE
}

NN_SIMD_VARIANTS(FN(adam_rule),
                 (real *restrict p, const real *restrict g, real *restrict m,
                  real *restrict v, real *restrict vmax, size_t n,
                  const FN(adam_coefs) *c, unsigned flags),
                 (p, g, m, v, vmax, n, c, flags), FN(adam_rule_body))

/* The scalars of step t for group h, and the options to specialise for */
static unsigned FN(adam_setup)(FN(adam_coefs) *c, const nn_hyper *h,
                               uint64_t t, int decoupled)
{
    double bc1 = 1 - pow(h->beta1, (double)t);
    double bc2 = 1 - pow(h->beta2, (double)t);
    int small;
    unsigned f = 0;
    c->decay = (real)(1 - h->lr * h->weight_decay);
    c->wd = (real)h->weight_decay;
    c->lerp_c = FN(lerp_coef)(1 - h->beta1, &small);
    c->beta2 = (real)h->beta2;
    c->one_beta2 = (real)(1 - h->beta2);
    c->inv_bc2_sqrt = (real)(1 / pow(bc2, 0.5));  /* torch: bc2**0.5 */
    c->eps = (real)(h->eps_hat ? h->eps / pow(bc2, 0.5) : h->eps);
    c->neg_step = (real)(-(h->lr / bc1));
    if (h->weight_decay != 0)
        f |= decoupled ? ADAM_DECAY : ADAM_L2;
    if (h->amsgrad)
        f |= ADAM_AMSGRAD;
    if (small)
        f |= ADAM_SMALL;
    return f;
}

static void FN(adam_values)(const nn_optim *o, const nn_segment *s,
                            size_t lo, size_t hi, int decoupled)
{
    const nn_hyper *h = &o->groups[s->group];
    FN(adam_coefs) c;
    unsigned f = FN(adam_setup)(&c, h, o->steps, decoupled);
    real *p, *g;
    FN(optim_values)(o, s, lo, hi, &p, &g);
    FN(adam_rule)(p, g, FN(optim_buffer)(o, s, 0, lo),
                  FN(optim_buffer)(o, s, 1, lo),
                  h->amsgrad ? FN(optim_buffer)(o, s, 2, lo) : NULL, hi - lo,
                  &c, f);
}

/* values [lo, hi) of segment s, from its gradient */
void FN(nn_adam_update)(const nn_optim *o, const nn_segment *s, size_t lo,
                        size_t hi)
{
    FN(adam_values)(o, s, lo, hi, 0);
}

void FN(nn_adamw_update)(const nn_optim *o, const nn_segment *s, size_t lo,
                         size_t hi)
{
    FN(adam_values)(o, s, lo, hi, 1);
}
