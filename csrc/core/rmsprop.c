/*
 * rmsprop.c (template): RMSprop with torch.optim.RMSprop's rules (its
 * single-tensor path, maximize=False) in torch's order of operations. For
 * each value:
 *   g += wd p                                   (L2, when wd != 0)
 *   s = alpha s + (1 - alpha) g^2
 *   centered:  a = lerp(a, g, 1 - alpha);  avg = sqrt(s - a^2) + eps
 *   else:      avg = sqrt(s) + eps
 *   momentum > 0:  b = momentum b + g / avg;  p -= lr b
 *   else:          p -= lr g / avg
 *
 * State of a segment of n values (optim.c, rmsprop_buffers): square_avg
 * (s); then momentum_buffer (b) when momentum > 0; then grad_avg (a) when
 * centered; n values each.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

enum {
    RMS_L2 = 1, RMS_CENTERED = 2, RMS_MOMENTUM = 4, RMS_SMALL = 8
};

typedef struct {
    real wd, alpha, one_alpha;   /* wd, alpha, 1 - alpha */
    real lerp_c;                 /* FN(lerp)'s c for weight 1 - alpha */
    real eps, momentum, neg_lr;
} FN(rmsprop_coefs);

/* Values [0, n): f is a constant of each caller (NN_SPECIALISE16) */
NN_INLINE void FN(rmsprop_loop)(real *restrict p, const real *restrict g,
                                real *restrict sq, real *restrict buf,
                                real *restrict ga, size_t n,
                                const FN(rmsprop_coefs) *c, const unsigned f)
{
    size_t i;
    const int small = (f & RMS_SMALL) != 0;
    for (i = 0; i < n; i++) {
        real gi = g[i], si, avg;
        if (f & RMS_L2)
            gi = gi + c->wd * p[i];
        si = sq[i] * c->alpha + (c->one_alpha * gi) * gi;
        sq[i] = si;
        if (f & RMS_CENTERED) {
            real ai = FN(lerp)(ga[i], gi, c->lerp_c, small);
            ga[i] = ai;
            avg = R_SQRT(si - ai * ai) + c->eps;
        } else {
            avg = R_SQRT(si) + c->eps;
        }
        if (f & RMS_MOMENTUM) {
            real bi = buf[i] * c->momentum + gi / avg;
            buf[i] = bi;
            p[i] = p[i] + c->neg_lr * bi;
        } else {
            p[i] = p[i] + (c->neg_lr * gi) / avg;
        }
    }
}

/* Every value of the segment, the loop specialised for its options */
NN_INLINE void FN(rmsprop_rule_body)(real *restrict p, const real *restrict g,
                                     real *restrict sq, real *restrict buf,
                                     real *restrict ga, size_t n,
                                     const FN(rmsprop_coefs) *c,
                                     unsigned flags)
{
#define RMS_CASE(k) FN(rmsprop_loop)(p, g, sq, buf, ga, n, c, k)
    NN_SPECIALISE16(flags, RMS_CASE)
#undef RMS_CASE
}

NN_SIMD_VARIANTS(FN(rmsprop_rule),
                 (real *restrict p, const real *restrict g, real *restrict sq,
                  real *restrict buf, real *restrict ga, size_t n,
                  const FN(rmsprop_coefs) *c, unsigned flags),
                 (p, g, sq, buf, ga, n, c, flags), FN(rmsprop_rule_body))

/* values [lo, hi) of segment s, from its gradient */
void FN(nn_rmsprop_update)(const nn_optim *o, const nn_segment *s,
                           size_t lo, size_t hi)
{
    const nn_hyper *h = &o->groups[s->group];
    int mom = h->momentum > 0, small;
    FN(rmsprop_coefs) c;
    unsigned f = 0;
    real *p, *g;
    c.wd = (real)h->weight_decay;
    c.alpha = (real)h->alpha;
    c.one_alpha = (real)(1 - h->alpha);
    c.lerp_c = FN(lerp_coef)(1 - h->alpha, &small);
    c.eps = (real)h->eps;
    c.momentum = (real)h->momentum;
    c.neg_lr = (real)(-h->lr);
    f |= h->weight_decay != 0 ? RMS_L2 : 0;
    f |= h->centered ? RMS_CENTERED : 0;
    f |= mom ? RMS_MOMENTUM : 0;
    f |= small ? RMS_SMALL : 0;
    FN(optim_values)(o, s, lo, hi, &p, &g);
    FN(rmsprop_rule)(p, g, FN(optim_buffer)(o, s, 0, lo),
                     mom ? FN(optim_buffer)(o, s, 1, lo) : NULL,
                     h->centered ? FN(optim_buffer)(o, s, 1 + mom, lo) : NULL,
                     hi - lo, &c, f);
}
