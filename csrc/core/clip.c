/*
 * clip.c (template): gradient clipping, for every optimizer kind.
 *
 *   by norm   g *= c for every gradient of a step, c = min(1, clip_norm /
 *             (||all gradients||_2 + 1e-6)) (optim.c sums and decides;
 *             these are its passes over one segment)
 *   by value  g = min(max(g, -c), c), value by value, done by each kind's
 *             update on the values it updates (optim_values, in
 *             optim_shared.c)
 *
 * Both change the gradient in place, as torch.nn.utils' clip_grad_norm_
 * and clip_grad_value_ do: after a step the gradients hold what the
 * update used.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* sum of g[i]^2 over n values, accumulated in double */
NN_VECTOR_CLONES
double FN(nn_clip_sumsq)(const real *g, size_t n)
{
    size_t i;
    double acc = 0;
    for (i = 0; i < n; i++)
        acc += (double)g[i] * (double)g[i];
    return acc;
}

/* g (n) *= c */
NN_VECTOR_CLONES
void FN(nn_clip_scale)(real *g, size_t n, real c)
{
    size_t i;
    for (i = 0; i < n; i++)
        g[i] *= c;
}

/* g (n) clamped to [-c, c]; NaN stays NaN (torch.clamp) */
NN_VECTOR_CLONES
void FN(nn_clip_values)(real *g, size_t n, real c)
{
    size_t i;
    for (i = 0; i < n; i++) {
        real v = g[i] < -c ? -c : g[i];
        g[i] = v > c ? c : v;
    }
}
