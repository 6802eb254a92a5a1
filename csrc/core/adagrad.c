/*
 * adagrad.c (template): Adagrad with torch.optim.Adagrad's rules (its
 * single-tensor path for dense gradients, maximize=False) in torch's
 * order of operations. For each value, at step t (the optimizer's step
 * count, this step included):
 *   g += wd p                                   (L2, when wd != 0)
 *   clr = lr / (1 + (t - 1) lr_decay)
 *   sum += g^2
 *   p -= clr g / (sqrt(sum) + eps)
 *
 * State of a segment of n values (optim.c, adagrad_buffers): sum, n
 * values, starting at initial_accumulator_value (nn_adagrad_init).
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* Values [0, n); l2 a constant of each caller */
NN_INLINE void FN(adagrad_loop)(real *restrict p, const real *restrict g,
                                real *restrict sum, size_t n, real wd,
                                real eps, real neg_clr, const int l2)
{
    size_t i;
    for (i = 0; i < n; i++) {
        real gi = g[i], si;
        if (l2)
            gi = gi + wd * p[i];
        si = sum[i] + gi * gi;
        sum[i] = si;
        p[i] = p[i] + (neg_clr * gi) / (R_SQRT(si) + eps);
    }
}

/* Every value of the segment, the loop specialised for weight decay */
NN_INLINE void FN(adagrad_rule_body)(real *restrict p, const real *restrict g,
                                     real *restrict sum, size_t n, real wd,
                                     real eps, real neg_clr)
{
    if (wd != 0)
        FN(adagrad_loop)(p, g, sum, n, wd, eps, neg_clr, 1);
    else
        FN(adagrad_loop)(p, g, sum, n, wd, eps, neg_clr, 0);
}

NN_SIMD_VARIANTS(FN(adagrad_rule),
                 (real *restrict p, const real *restrict g,
                  real *restrict sum, size_t n, real wd, real eps,
                  real neg_clr),
                 (p, g, sum, n, wd, eps, neg_clr), FN(adagrad_rule_body))

/* values [lo, hi) of segment s, from its gradient */
void FN(nn_adagrad_update)(const nn_optim *o, const nn_segment *s,
                           size_t lo, size_t hi)
{
    const nn_hyper *h = &o->groups[s->group];
    double clr = h->lr / (1 + (double)(o->steps - 1) * h->lr_decay);
    real *p, *g;
    FN(optim_values)(o, s, lo, hi, &p, &g);
    FN(adagrad_rule)(p, g, FN(optim_buffer)(o, s, 0, lo), hi - lo,
                     (real)h->weight_decay, (real)h->eps, (real)(-clr));
}

/* sum = initial_accumulator_value, over the whole segment */
void FN(nn_adagrad_init)(const nn_optim *o, const nn_segment *s)
{
    real *sum = FN(optim_buffer)(o, s, 0, 0), v;
    size_t i, n = s->layer->t[s->tensor].n;
    v = (real)o->groups[s->group].initial_accumulator_value;
    for (i = 0; sum && i < n; i++)
        sum[i] = v;
}
