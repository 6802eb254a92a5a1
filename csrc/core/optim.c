/*
 * optim.c: the optimizer interface, its kinds' tables and gradient
 * clipping.
 *
 * An optimizer holds segments (a layer's parameter tensor each), their
 * hyperparameter groups and one state block. The graph engine tells it
 * when a segment's gradient is complete (update), or hands it the
 * gradient as a product to fold into the update (fold_gemm) where the
 * kind can; optimizer.step() updates every segment at once. A new kind
 * is a template file with its update rule and a table entry here; the
 * engine does not change.
 *
 * Each kind's state_buffers below names the buffers a segment keeps, in
 * the order its update rule reads them (the template file's header
 * repeats it); the names are torch's state names, which state_dict uses.
 */
#include "nn.h"
#include "core_internal.h"

#include <math.h>
#include <string.h>

/* ---- SGD (sgd.c) ---- */

/* the velocity when the group has momentum */
static size_t sgd_buffers(const nn_hyper *h,
                          const char *names[NN_OPTIM_MAX_BUFFERS])
{
    if (h->momentum == 0)
        return 0;
    names[0] = "momentum_buffer";
    return 1;
}

/* Nesterov reads the gradient twice, clipping by value changes it before
 * the update: neither is folded */
static int sgd_can_fold(const nn_optim *o, const nn_segment *s)
{
    return !o->groups[s->group].nesterov && !(o->clip_value > 0);
}

static const char *sgd_check(const nn_hyper *h)
{
    return h->nesterov && h->momentum == 0
               ? "nesterov=True needs momentum > 0"
               : NULL;
}

const nn_optim_kind nn_optim_sgd = {
    "sgd",
    NN_H_LR | NN_H_WEIGHT_DECAY | NN_H_MOMENTUM | NN_H_NESTEROV,
    sgd_buffers,
    {nn_sgd_update_f32, nn_sgd_update_f64},
    sgd_can_fold,
    {nn_sgd_fold_gemm_f32, nn_sgd_fold_gemm_f64},
    {NULL, NULL},
    sgd_check};

/* ---- the kinds that never fold ---- */

static int never_fold(const nn_optim *o, const nn_segment *s)
{
    (void)o;
    (void)s;
    return 0;
}

/* ---- Adam, AdamW (adam.c) ---- */

static size_t adam_buffers(const nn_hyper *h,
                           const char *names[NN_OPTIM_MAX_BUFFERS])
{
    names[0] = "exp_avg";
    names[1] = "exp_avg_sq";
    if (!h->amsgrad)
        return 2;
    names[2] = "max_exp_avg_sq";
    return 3;
}

#define ADAM_HYPERS                                                          \
    (NN_H_LR | NN_H_WEIGHT_DECAY | NN_H_BETAS | NN_H_EPS | NN_H_AMSGRAD |     \
     NN_H_EPS_HAT)

const nn_optim_kind nn_optim_adam = {
    "adam",
    ADAM_HYPERS,
    adam_buffers,
    {nn_adam_update_f32, nn_adam_update_f64},
    never_fold,
    {NULL, NULL},
    {NULL, NULL},
    NULL};

const nn_optim_kind nn_optim_adamw = {
    "adamw",
    ADAM_HYPERS,
    adam_buffers,
    {nn_adamw_update_f32, nn_adamw_update_f64},
    never_fold,
    {NULL, NULL},
    {NULL, NULL},
    NULL};

/* ---- RMSprop (rmsprop.c) ---- */

static size_t rmsprop_buffers(const nn_hyper *h,
                              const char *names[NN_OPTIM_MAX_BUFFERS])
{
    size_t k = 0;
    names[k++] = "square_avg";
    if (h->momentum > 0)
        names[k++] = "momentum_buffer";
    if (h->centered)
        names[k++] = "grad_avg";
    return k;
}

const nn_optim_kind nn_optim_rmsprop = {
    "rmsprop",
    NN_H_LR | NN_H_WEIGHT_DECAY | NN_H_MOMENTUM | NN_H_EPS | NN_H_ALPHA |
        NN_H_CENTERED,
    rmsprop_buffers,
    {nn_rmsprop_update_f32, nn_rmsprop_update_f64},
    never_fold,
    {NULL, NULL},
    {NULL, NULL},
    NULL};

/* ---- Adagrad (adagrad.c) ---- */

static size_t adagrad_buffers(const nn_hyper *h,
                              const char *names[NN_OPTIM_MAX_BUFFERS])
{
    (void)h;
    names[0] = "sum";
    return 1;
}

const nn_optim_kind nn_optim_adagrad = {
    "adagrad",
    NN_H_LR | NN_H_WEIGHT_DECAY | NN_H_EPS | NN_H_LR_DECAY |
        NN_H_INITIAL_ACC,
    adagrad_buffers,
    {nn_adagrad_update_f32, nn_adagrad_update_f64},
    never_fold,
    {NULL, NULL},
    {nn_adagrad_init_f32, nn_adagrad_init_f64},
    NULL};

/* ---- layout and state ---- */

size_t nn_optim_buffers(const nn_optim *o, const nn_segment *s,
                        const char *names[NN_OPTIM_MAX_BUFFERS])
{
    return o->kind->state_buffers(&o->groups[s->group], names);
}

size_t nn_optim_layout(nn_optim *o)
{
    size_t k, off = 0;
    for (k = 0; k < o->n_segments; k++) {
        const char *names[NN_OPTIM_MAX_BUFFERS];
        nn_segment *s = &o->seg[k];
        s->state_off = off;
        off += nn_optim_buffers(o, s, names) * s->layer->t[s->tensor].n;
    }
    return off;
}

void nn_optim_init_state(const nn_optim *o)
{
    size_t k;
    if (!o->state || !o->kind->init_state[o->dtype])
        return;
    for (k = 0; k < o->n_segments; k++)
        o->kind->init_state[o->dtype](o, &o->seg[k]);
}

/* ---- updates ---- */

typedef struct {
    const nn_optim *o;
    const nn_segment *s;
} update_args;

static void update_piece(void *arg, size_t lo, size_t hi)
{
    const update_args *a = arg;
    a->o->kind->update[a->o->dtype](a->o, a->s, lo, hi);
}

void nn_optim_update_segment(const nn_optim *o, const nn_segment *s)
{
    update_args a = {o, s};
    nn_parallel_range(update_piece, &a, s->layer->t[s->tensor].n,
                      NN_PAR_GRAIN, NN_PAR_ALIGN);
}

/* ---- clipping by global norm ---- */

typedef struct {
    const nn_optim *o;
    double sumsq;            /* first pass: the sum of every g^2 */
    double coef;             /* second pass: the factor */
} clip_pass;

static void add_sumsq(void *arg, const nn_segment *s)
{
    clip_pass *c = arg;
    const nn_tensor *t = &s->layer->t[s->tensor];
    c->sumsq += c->o->dtype == NN_F32 ? nn_clip_sumsq_f32(t->grad, t->n)
                                      : nn_clip_sumsq_f64(t->grad, t->n);
}

static void scale_grad(void *arg, const nn_segment *s)
{
    const clip_pass *c = arg;
    const nn_tensor *t = &s->layer->t[s->tensor];
    if (c->o->dtype == NN_F32)
        nn_clip_scale_f32(t->grad, t->n, (float)c->coef);
    else
        nn_clip_scale_f64(t->grad, t->n, c->coef);
}

/* torch's clip_grad_norm_: coef = clip_norm / (norm + 1e-6), clamped to
 * at most 1. A factor of 1 changes nothing and is skipped; a NaN norm
 * gives NaN gradients, as in torch. */
void nn_optim_clip_norm(const nn_optim *o, nn_segment_each each, void *ctx)
{
    clip_pass c = {o, 0, 1};
    each(ctx, add_sumsq, &c);
    c.coef = o->clip_norm / (sqrt(c.sumsq) + 1e-6);
    if (!(c.coef >= 1))
        each(ctx, scale_grad, &c);
}

/* ---- optimizer.step() ---- */

/* every segment whose layer is trainable */
static void each_trainable(void *ctx, nn_segment_visit visit, void *arg)
{
    const nn_optim *o = ctx;
    size_t k;
    for (k = 0; k < o->n_segments; k++)
        if (o->seg[k].layer->trainable)
            visit(arg, &o->seg[k]);
}

static void update_visit(void *arg, const nn_segment *s)
{
    nn_optim_update_segment(arg, s);
}

void nn_optim_step(nn_optim *o)
{
    o->steps++;
    if (o->clip_norm > 0)
        nn_optim_clip_norm(o, each_trainable, o);
    each_trainable(o, update_visit, o);
}
