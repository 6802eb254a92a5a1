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
void FN(nn_sgd_update)(real *param, const real *grad, real *velocity,
                       size_t n, double lr, double momentum, int nesterov,
                       double weight_decay)
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
    for (i = 0; i < n; i++) {
        real g = grad[i] + wd * param[i];
        real v = mu * velocity[i] + g;
        velocity[i] = v;
        param[i] -= eta * (nesterov ? g + mu * v : v);
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

/* Update every segment that belongs to layer L (folded into backward). */
void FN(nn_sgd_step_layer)(const nn_sgd *opt, const nn_layer *L)
{
    size_t k;
    for (k = 0; k < opt->n_segments; k++)
        if (opt->segments[k].layer == L)
            FN(sgd_update_segment)(opt, k);
}

/* Update every segment (SGD.step) */
void FN(nn_sgd_step_all)(const nn_sgd *opt)
{
    size_t k;
    for (k = 0; k < opt->n_segments; k++)
        FN(sgd_update_segment)(opt, k);
}
