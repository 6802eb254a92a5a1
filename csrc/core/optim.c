/*
 * optim.c: the optimizer interface and its kinds' tables.
 *
 * An optimizer holds segments (a layer's parameter tensor each), their
 * hyperparameter groups and one state block. The graph engine tells it
 * when a segment's gradient is complete (update), or hands it the
 * gradient as a product to fold into the update (fold_gemm) where the
 * kind can; optimizer.step() updates every segment at once. A new kind
 * is a template file with its update rule and a table entry here; the
 * engine does not change.
 */
#include "nn.h"
#include "core_internal.h"

#include <string.h>

/* ---- SGD ---- */

/* a velocity per value when any group has momentum */
static size_t sgd_state_values(const nn_optim *o, size_t n)
{
    size_t g;
    for (g = 0; g < o->n_groups; g++)
        if (o->groups[g].momentum != 0)
            return n;
    return 0;
}

/* Nesterov reads the gradient twice: not folded */
static int sgd_can_fold(const nn_optim *o, const nn_segment *s)
{
    return !o->groups[s->group].nesterov;
}

const nn_optim_kind nn_optim_sgd = {
    "sgd", 1, sgd_state_values, {nn_sgd_update_f32, nn_sgd_update_f64},
    sgd_can_fold, {nn_sgd_fold_gemm_f32, nn_sgd_fold_gemm_f64}};

/* ---- common ---- */

size_t nn_optim_layout(nn_optim *o)
{
    size_t k, off = 0;
    for (k = 0; k < o->n_segments; k++) {
        const nn_segment *s = &o->seg[k];
        size_t n = s->layer->t[s->tensor].n;
        o->seg[k].state_off = off;
        off += o->kind->state_values(o, n);
    }
    return off;
}

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

void nn_optim_step(nn_optim *o)
{
    size_t k;
    o->steps++;
    for (k = 0; k < o->n_segments; k++)
        if (o->seg[k].layer->trainable)
            nn_optim_update_segment(o, &o->seg[k]);
}
