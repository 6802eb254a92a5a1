/*
 * optim_shared.c (template): what the update rules of every optimizer kind
 * share: where a segment's values, gradient and state buffers are, and
 * torch's lerp.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* Values [lo, hi) of segment s: its parameter into *p and gradient into
 * *g, the gradient first clamped when the optimizer clips by value.
 * Every kind's update starts here. */
static void FN(optim_values)(const nn_optim *o, const nn_segment *s,
                             size_t lo, size_t hi, real **p, real **g)
{
    const nn_tensor *t = &s->layer->t[s->tensor];
    *p = (real *)t->data + lo;
    *g = (real *)t->grad + lo;
    if (o->clip_value > 0)
        FN(nn_clip_values)(*g, hi - lo, (real)o->clip_value);
}

/* State buffer j of segment s (n values each from its state_off), from
 * value lo; NULL when the kind keeps none there */
static real *FN(optim_buffer)(const nn_optim *o, const nn_segment *s,
                              size_t j, size_t lo)
{
    if (!o->state)
        return NULL;
    return (real *)o->state + s->state_off +
           j * s->layer->t[s->tensor].n + lo;
}

/* torch's lerp(a, b, w) = a + w (b - a) for |w| < 0.5, else
 * b - (b - a)(1 - w), as base + (b - a) c: small (|w| < 0.5, fixed over a
 * loop) picks base a and c = w, else base b and c = w - 1
 * (FN(lerp_coef)). Both forms round as torch's. */
NN_INLINE real FN(lerp)(real a, real b, real c, const int small)
{
    return (small ? a : b) + (b - a) * c;
}

/* c of FN(lerp) for weight w; *small receives whether |w| < 0.5 */
static real FN(lerp_coef)(double w, int *small)
{
    real rw = (real)w;
    *small = R_FABS(rw) < (real)0.5;
    return *small ? rw : rw - 1;
}
