/*
 * graph_run.c (template): running a graph that graph.c planned.
 *
 * Forward runs the nodes in order; backward runs them in reverse, each
 * node adding its VJP into its inputs' gradients (the first consumer in
 * backward order overwrites, the plan says which). Parameter gradients go
 * through nn_pg, which accumulates them (a user's backward), or, in a
 * training step, overwrites them at a layer's first use and hands them to
 * the optimizer at its last (a shared layer sums over its uses), folding
 * the gradient product into the update where the optimizer can and the
 * layer has one use. When every gradient must be there before any update
 * (hooks that ask for it, an optimizer that clips by global norm), the
 * updates are deferred: they run after the backward pass
 * (deferred_updates), once the gradients are clipped.
 *
 * At two threads or more, a mid-sized step of a graph whose layers are
 * all row-wise splits its batch between the threads instead: every thread
 * runs forward, losses and input gradients for its block of rows with
 * single-threaded products (phase 1), then, once every row is done, its
 * share of every parameter's gradient and update (phase 2). That is two
 * waits per step, where products split by OpenBLAS wait many times inside
 * every product. Nothing the optimizer holds changes in phase 1, so a
 * step rejected for a non-finite loss leaves everything as it was.
 */
#ifndef NN_SFX
#error "template: compiled through dtype_f32.c / dtype_f64.c"
#endif

/* ---- one node ---- */

/* Node k's forward over rows [r0, r1) of a batch of N rows */
static nn_status FN(node_forward)(const nn_graph *g, const nn_ws *ws,
                                  const nn_run *run, size_t k, size_t r0,
                                  size_t r1, size_t N)
{
    const nn_node *nd = &g->nodes[k];
    const void *x[NN_MAX_IN];
    size_t w[NN_MAX_IN], e, v = g->n_inputs + k;
    nn_node_io io;
    for (e = 0; e < nd->n_in; e++) {
        size_t u = nd->in[e];
        w[e] = g->width[u];
        x[e] = (const real *)ws->val[u] + r0 * w[e];
    }
    io.L = nd->layer;
    io.n = r1 - r0;
    io.row0 = r0;
    io.N = N;
    io.n_in = nd->n_in;
    io.x = x;
    io.in_w = w;
    io.y = (real *)ws->val[v] + r0 * g->width[v];   /* values: writable */
    io.out_w = g->width[v];
    io.ws = ws->opws[k];
    io.dy = NULL;
    io.dx = NULL;
    io.dx_acc = NULL;
    io.pg = NULL;
    io.training = run->training;
    io.seed = run->seed;
    io.step = run->step;
    io.node = k;
    io.row_base = run->row0;
    io.dt = NN_DTYPE;
    return nn_op_of(nd->layer->kind)->forward[NN_DTYPE](&io);
}

static nn_status FN(forward_rows)(const nn_graph *g, const nn_ws *ws,
                                  const nn_run *run, size_t r0, size_t r1,
                                  size_t N)
{
    size_t k;
    nn_status st = NN_OK;
    for (k = 0; k < g->n_nodes && st == NN_OK; k++)
        st = FN(node_forward)(g, ws, run, k, r0, r1, N);
    return st;
}

/* 1 when node k's layer has parameter gradients to compute */
static int FN(has_param_grads)(const nn_graph *g, size_t k)
{
    const nn_layer *L = g->nodes[k].layer;
    return L->trainable && L->n_params > 0;
}

/* An external layer adds its parameter gradients into its tensors' grad
 * itself. In a training step each tensor's grad is zeroed before its
 * first use (a shared layer sums over its uses) ... */
static void FN(external_grads_begin)(const nn_pg *pg)
{
    const nn_layer *L = pg->layer;
    size_t t;
    if (pg->mode != NN_PG_TRAIN)
        return;   /* a user's backward: they accumulate */
    for (t = 0; t < L->n_params; t++)
        if (pg->g->use[pg->node * NN_MAX_TENSORS + t].first)
            memset(L->t[t].grad, 0, L->t[t].n * sizeof(real));
}

static nn_status FN(pg_done)(nn_pg *pg, long s, const nn_use *u, size_t lo,
                             size_t hi);

/* ... and handed to the optimizer after its last use */
static nn_status FN(external_grads_end)(nn_pg *pg)
{
    const nn_layer *L = pg->layer;
    size_t t;
    nn_status st = NN_OK;
    if (pg->mode != NN_PG_TRAIN)
        return NN_OK;
    for (t = 0; t < L->n_params && st == NN_OK; t++) {
        long s = pg->map->seg_of[pg->node * NN_MAX_TENSORS + t];
        if (s >= 0)
            st = FN(pg_done)(pg, s, &pg->g->use[pg->node * NN_MAX_TENSORS + t],
                             0, L->t[t].n);
    }
    return st;
}

/* Node k's backward over rows [r0, r1): input gradients the plan wants,
 * parameter gradients through pg (NULL: none). Skipped when it has
 * nothing to compute. */
static nn_status FN(node_backward)(const nn_graph *g, const nn_ws *ws,
                                   const nn_run *run, const nn_plan *p,
                                   size_t k, size_t r0, size_t r1, size_t N,
                                   nn_pg *pg)
{
    const nn_node *nd = &g->nodes[k];
    const nn_op *op;
    const void *x[NN_MAX_IN];
    void *dx[NN_MAX_IN];
    size_t w[NN_MAX_IN], e, v = g->n_inputs + k;
    int any = pg != NULL;
    nn_node_io io;
    nn_status st;
    for (e = 0; e < nd->n_in; e++) {
        size_t u = nd->in[e];
        w[e] = g->width[u];
        x[e] = (const real *)ws->val[u] + r0 * w[e];
        dx[e] = p->need_grad[u] && ws->gval[u]
                    ? (real *)ws->gval[u] + r0 * w[e]
                    : NULL;
        any |= dx[e] != NULL;
    }
    if (!any)
        return NN_OK;
    if (pg)
        nn_pg_at_node(pg, k);
    io.L = nd->layer;
    io.n = r1 - r0;
    io.row0 = r0;
    io.N = N;
    io.n_in = nd->n_in;
    io.x = x;
    io.in_w = w;
    io.y = (real *)ws->val[v] + r0 * g->width[v];
    io.out_w = g->width[v];
    io.ws = ws->opws[k];
    io.dy = (const real *)ws->gval[v] + r0 * g->width[v];
    io.dx = dx;
    io.dx_acc = p->acc + g->edge_start[k];
    io.pg = pg;
    io.training = run->training;
    io.seed = run->seed;
    io.step = run->step;
    io.node = k;
    io.row_base = run->row0;
    io.dt = NN_DTYPE;
    op = nn_op_of(nd->layer->kind);
    if (!pg || !(op->flags & NN_OP_EXTERNAL))
        return op->backward[NN_DTYPE](&io);
    FN(external_grads_begin)(pg);
    st = op->backward[NN_DTYPE](&io);
    return st == NN_OK ? FN(external_grads_end)(pg) : st;
}

/* Node k's parameter gradients over the whole batch, through pg (phase 2
 * of a split step: pg computes this thread's share). */
static nn_status FN(node_param_grads)(const nn_graph *g, const nn_ws *ws,
                                      const nn_run *run, size_t k, size_t N,
                                      nn_pg *pg)
{
    const nn_node *nd = &g->nodes[k];
    const nn_op *op = nn_op_of(nd->layer->kind);
    const void *x[NN_MAX_IN];
    size_t w[NN_MAX_IN], e, v = g->n_inputs + k;
    nn_node_io io;
    if (!op->param_grads[NN_DTYPE])
        return NN_OK;
    for (e = 0; e < nd->n_in; e++) {
        w[e] = g->width[nd->in[e]];
        x[e] = ws->val[nd->in[e]];
    }
    nn_pg_at_node(pg, k);
    memset(&io, 0, sizeof io);
    io.L = nd->layer;
    io.n = io.N = N;
    io.n_in = nd->n_in;
    io.x = x;
    io.in_w = w;
    io.y = (void *)ws->val[v];
    io.out_w = g->width[v];
    io.ws = ws->opws[k];
    io.dy = ws->gval[v];
    io.pg = pg;
    io.training = run->training;
    io.seed = run->seed;
    io.step = run->step;
    io.node = k;
    io.row_base = run->row0;
    io.dt = NN_DTYPE;
    return op->param_grads[NN_DTYPE](&io);
}

/* ---- parameter gradients (nn_pg) ---- */

/* The values [lo, hi) of tensor t that pg's part covers: rows of a 2-D
 * tensor, values of a 1-D one */
static void FN(pg_share)(const nn_pg *pg, size_t units, size_t *lo,
                         size_t *hi)
{
    *lo = units * pg->part / pg->parts;
    *hi = units * (pg->part + 1) / pg->parts;
}

/* After computing values [lo, hi) of segment s's gradient at one use:
 * at its last use, update them (or, deferred, report it complete). */
static nn_status FN(pg_done)(nn_pg *pg, long s, const nn_use *u, size_t lo,
                             size_t hi)
{
    const nn_segment *seg = &pg->opt->seg[s];
    if (!u->last)
        return NN_OK;
    if (pg->deferred) {
        if (pg->hooks && pg->hooks->ready && pg->parts == 1)
            pg->hooks->ready(pg->hooks->ctx, (size_t)s);
        return NN_OK;
    }
    if (pg->parts == 1)
        nn_optim_update_segment(pg->opt, seg);
    else
        pg->opt->kind->update[NN_DTYPE](pg->opt, seg, lo, hi);
    return NN_OK;
}

nn_status FN(nn_pg_gemm)(nn_pg *pg, size_t k, const real *A, size_t lda,
                         const real *B, size_t ldb, size_t K)
{
    nn_tensor *t = &pg->layer->t[k];
    size_t C = t->dim[1], r0, r1;
    real *grad;
    const nn_use *u;
    long s;
    nn_status st;
    FN(pg_share)(pg, t->dim[0], &r0, &r1);
    if (r0 == r1)
        return NN_OK;
    grad = (real *)t->grad + r0 * C;
    A += r0;   /* columns [r0, r1) of A: rows [r0, r1) of A^T B */
    if (pg->mode == NN_PG_ACCUMULATE)
        return FN(nn_gemm)(1, 0, r1 - r0, C, K, 1, A, lda, B, ldb, 1, grad,
                           C);
    s = pg->map->seg_of[pg->node * NN_MAX_TENSORS + k];
    if (s < 0)
        return NN_OK;   /* not held by the optimizer: left alone */
    u = &pg->g->use[pg->node * NN_MAX_TENSORS + k];
    if (u->single && !pg->deferred &&
        pg->opt->kind->can_fold(pg->opt, &pg->opt->seg[s]))
        return pg->opt->kind->fold_gemm[NN_DTYPE](pg->opt, &pg->opt->seg[s],
                                                  r0, r1, A, lda, B, ldb, K);
    st = FN(nn_gemm)(1, 0, r1 - r0, C, K, 1, A, lda, B, ldb,
                     u->first ? 0 : 1, grad, C);
    return st == NN_OK ? FN(pg_done)(pg, s, u, r0 * C, r1 * C) : st;
}

nn_status FN(nn_pg_colsum)(nn_pg *pg, size_t k, const real *G, size_t K)
{
    nn_tensor *t = &pg->layer->t[k];
    size_t c0, c1;
    const nn_use *u;
    long s;
    FN(pg_share)(pg, t->n, &c0, &c1);
    if (c0 == c1)
        return NN_OK;
    if (pg->mode == NN_PG_ACCUMULATE) {
        FN(nn_column_sums)(t->grad, G, K, t->n, c0, c1, 1);
        return NN_OK;
    }
    s = pg->map->seg_of[pg->node * NN_MAX_TENSORS + k];
    if (s < 0)
        return NN_OK;
    u = &pg->g->use[pg->node * NN_MAX_TENSORS + k];
    FN(nn_column_sums)(t->grad, G, K, t->n, c0, c1, !u->first);
    return FN(pg_done)(pg, s, u, c0, c1);
}

/* out[c] (+)= sum_n A[n, c] B[n, c], c in [c0, c1): blocks of 16
 * columns read row by row (contiguous, 16 independent sums), each
 * column still summed over n in order */
static void FN(column_sums_prod)(real *out, const real *A, const real *B,
                                 size_t K, size_t C, size_t c0, size_t c1,
                                 int add)
{
    size_t n, c, j;
    for (c = c0; c < c1; c += 16) {
        size_t nb = c1 - c < 16 ? c1 - c : 16;
        double acc[16] = {0};
        for (n = 0; n < K; n++) {
            const real *a = A + n * C + c, *b = B + n * C + c;
            for (j = 0; j < nb; j++)
                acc[j] += (double)a[j] * (double)b[j];
        }
        for (j = 0; j < nb; j++)
            out[c + j] = add ? out[c + j] + (real)acc[j] : (real)acc[j];
    }
}

nn_status FN(nn_pg_colsum_prod)(nn_pg *pg, size_t k, const real *A,
                                const real *B, size_t K)
{
    nn_tensor *t = &pg->layer->t[k];
    size_t c0, c1;
    const nn_use *u;
    long s;
    FN(pg_share)(pg, t->n, &c0, &c1);
    if (c0 == c1)
        return NN_OK;
    if (pg->mode == NN_PG_ACCUMULATE) {
        FN(column_sums_prod)(t->grad, A, B, K, t->n, c0, c1, 1);
        return NN_OK;
    }
    s = pg->map->seg_of[pg->node * NN_MAX_TENSORS + k];
    if (s < 0)
        return NN_OK;
    u = &pg->g->use[pg->node * NN_MAX_TENSORS + k];
    FN(column_sums_prod)(t->grad, A, B, K, t->n, c0, c1, !u->first);
    return FN(pg_done)(pg, s, u, c0, c1);
}

/* Once a training step's loss is accepted: every node's commit (state
 * its forward measured, e.g. BatchNorm's running statistics) */
static nn_status FN(commit_all)(const nn_graph *g, const nn_ws *ws,
                                const nn_run *run, size_t N)
{
    size_t k, e;
    nn_status st = NN_OK;
    for (k = 0; k < g->n_nodes && st == NN_OK; k++) {
        const nn_node *nd = &g->nodes[k];
        const nn_op *op = nn_op_of(nd->layer->kind);
        const void *x[NN_MAX_IN];
        size_t w[NN_MAX_IN], v = g->n_inputs + k;
        nn_node_io io;
        if (!op->commit[NN_DTYPE])
            continue;
        for (e = 0; e < nd->n_in; e++) {
            w[e] = g->width[nd->in[e]];
            x[e] = ws->val[nd->in[e]];
        }
        memset(&io, 0, sizeof io);
        io.L = nd->layer;
        io.n = io.N = N;
        io.n_in = nd->n_in;
        io.x = x;
        io.in_w = w;
        io.y = (void *)ws->val[v];
        io.out_w = g->width[v];
        io.ws = ws->opws[k];
        io.training = run->training;
        io.seed = run->seed;
        io.step = run->step;
        io.node = k;
        io.row_base = run->row0;
        io.dt = NN_DTYPE;
        st = op->commit[NN_DTYPE](&io);
    }
    return st;
}

/* ---- losses ---- */

/* The metrics asked for by mask (bits 1u << nn_metric_kind) of n rows,
 * their sums into out[m] (NN_METRIC_COUNT; 0 for those not asked for) */
static nn_status FN(metrics_rows)(unsigned mask, double *out,
                                  const real *pred, const int64_t *labels,
                                  const real *T, const real *w, size_t n,
                                  size_t C, double threshold)
{
    unsigned m;
    nn_status st = NN_OK;
    for (m = 0; m < NN_METRIC_COUNT && st == NN_OK; m++) {
        out[m] = 0;
        if (mask & (1u << m))
            st = FN(nn_metric_rows)((nn_metric_kind)m, &out[m], pred, labels,
                                    T, w, n, C, threshold);
    }
    return st;
}

/* The losses of rows [r0, r1) (of N): per output j its sum into sums[j],
 * rows right into correct[j] (when not NULL) and, when the targets ask
 * for metrics, their sums into metrics[j * NN_METRIC_COUNT + m];
 * gradients into the outputs' gradient blocks, scaled by the loss
 * weight / N. */
static nn_status FN(losses_rows)(const nn_graph *g, const nn_ws *ws,
                                 const nn_targets *tg, size_t r0, size_t r1,
                                 size_t N, double *sums, size_t *correct,
                                 double *metrics)
{
    size_t j, n = r1 - r0;
    nn_status st = NN_OK;
    for (j = 0; j < g->n_outputs && st == NN_OK; j++) {
        size_t v = g->outputs[j], C = g->width[v];
        const real *pred = (const real *)ws->val[v] + r0 * C;
        const int64_t *labels = tg->labels[j] ? tg->labels[j] + r0 : NULL;
        const real *T = tg->T[j] ? (const real *)tg->T[j] + r0 * C : NULL;
        const real *w = tg->w ? (const real *)tg->w + r0 : NULL;
        double thr = nn_loss_threshold(tg->kind[j]);
        st = FN(nn_loss_rows)(tg->kind[j], tg->arg ? tg->arg[j] : 0,
                              &sums[j], (real *)ws->gval[v] + r0 * C, pred,
                              labels, T, w, n, C, tg->weight[j] / (double)N);
        if (st == NN_OK && correct)
            correct[j] = FN(nn_count_correct)(pred, labels, T, n, C, thr);
        if (st == NN_OK && tg->metrics)
            st = FN(metrics_rows)(tg->metrics[j],
                                  metrics + j * NN_METRIC_COUNT, pred,
                                  labels, T, w, n, C, thr);
    }
    return st;
}

static double FN(total_loss)(const nn_graph *g, const nn_targets *tg,
                             const double *sums, size_t N)
{
    size_t j;
    double total = 0;
    for (j = 0; j < g->n_outputs; j++)
        total += tg->weight[j] * sums[j];
    return total / (double)N;
}

/* ---- the split ---- */

typedef struct {
    const nn_graph *g;
    nn_ws *ws;
    const nn_run *run;
    nn_optim *opt;
    const nn_optmap *map;
    const nn_hooks *hooks;
    const nn_targets *tg;   /* NULL: a forward pass only */
    size_t N, parts;
    nn_status st[NN_SPLIT_MAX];
} FN(split);

static void FN(split_rows)(const FN(split) *s, size_t part, size_t *r0,
                           size_t *r1)
{
    *r0 = s->N * part / s->parts;
    *r1 = s->N * (part + 1) / s->parts;
}

/* Phase 1 for one block of rows: forward, losses, input gradients */
static nn_status FN(split_phase1)(FN(split) *s, size_t part)
{
    const nn_graph *g = s->g;
    size_t r0, r1, k, n_out = g->n_outputs;
    nn_status st;
    FN(split_rows)(s, part, &r0, &r1);
    st = FN(forward_rows)(g, s->ws, s->run, r0, r1, s->N);
    if (st != NN_OK || !s->tg)
        return st;
    st = FN(losses_rows)(g, s->ws, s->tg, r0, r1, s->N,
                         s->ws->part_sums + part * n_out,
                         s->ws->part_correct + part * n_out,
                         s->ws->part_metrics +
                             part * n_out * NN_METRIC_COUNT);
    for (k = g->n_nodes; k-- > 0 && st == NN_OK;)
        if (g->train.run_bwd[k])
            st = FN(node_backward)(g, s->ws, s->run, &g->train, k, r0, r1,
                                   s->N, NULL);
    return st;
}

static void FN(split_phase1_chunk)(void *arg, size_t part)
{
    FN(split) *s = arg;
    s->st[part] = FN(split_phase1)(s, part);
}

/* Phase 2: this thread's share of every parameter's gradient and update */
static void FN(split_phase2_chunk)(void *arg, size_t part)
{
    FN(split) *s = arg;
    const nn_graph *g = s->g;
    nn_pg pg;
    size_t k;
    nn_status st = NN_OK;
    nn_pg_init(&pg, NN_PG_TRAIN, g, s->opt, s->map, s->hooks, part,
               s->parts);
    for (k = g->n_nodes; k-- > 0 && st == NN_OK;)
        if (g->train.run_bwd[k] && FN(has_param_grads)(g, k))
            st = FN(node_param_grads)(g, s->ws, s->run, k, s->N, &pg);
    s->st[part] = st;
}

static nn_status FN(first_error)(const nn_status *st, size_t parts)
{
    size_t p;
    for (p = 0; p < parts; p++)
        if (st[p] != NN_OK)
            return st[p];
    return NN_OK;
}

static nn_status FN(run_parts)(FN(split) *s, void (*fn)(void *, size_t))
{
    nn_task task;
    memset(&task, 0, sizeof task);
    task.fn = fn;
    task.arg = s;
    task.n_chunks = s->parts;
    nn_task_run(&task);
    return FN(first_error)(s->st, s->parts);
}

/* ---- training steps ---- */

/* The segments of this graph's step: those the optimizer holds, each
 * once, at its layer's last use */
typedef struct {
    const nn_graph *g;
    const nn_optim *opt;
    const nn_optmap *map;
    const nn_hooks *hooks;
} FN(step_segments);

static void FN(each_step_segment)(void *ctx, nn_segment_visit visit,
                                  void *arg)
{
    const FN(step_segments) *c = ctx;
    const nn_graph *g = c->g;
    size_t k, t;
    for (k = 0; k < g->n_nodes; k++)
        if (g->train.run_bwd[k] && FN(has_param_grads)(g, k))
            for (t = 0; t < g->nodes[k].layer->n_params; t++) {
                long s = c->map->seg_of[k * NN_MAX_TENSORS + t];
                if (s >= 0 && g->use[k * NN_MAX_TENSORS + t].last)
                    visit(arg, &c->opt->seg[s]);
            }
}

static void FN(report_ready)(void *arg, const nn_segment *s)
{
    const FN(step_segments) *c = arg;
    c->hooks->ready(c->hooks->ctx, (size_t)(s - c->opt->seg));
}

static void FN(update_visit)(void *arg, const nn_segment *s)
{
    nn_optim_update_segment(arg, s);
}

/* Deferred updates: every gradient is complete; the hooks see them, the
 * optimizer clips them by their global norm when it does, then each
 * segment held is updated once (at its layer's last use). */
static nn_status FN(deferred_updates)(const nn_graph *g, nn_optim *opt,
                                      const nn_optmap *map,
                                      const nn_hooks *hooks, int report)
{
    FN(step_segments) set = {g, opt, map, hooks};
    nn_status st = NN_OK;
    if (report && hooks && hooks->ready)
        FN(each_step_segment)(&set, FN(report_ready), &set);
    if (hooks && hooks->before_update)
        st = hooks->before_update(hooks->ctx);
    if (st == NN_OK && opt->clip_norm > 0)
        nn_optim_clip_norm(opt, FN(each_step_segment), &set);
    if (st == NN_OK)
        FN(each_step_segment)(&set, FN(update_visit), opt);
    return st;
}

/* The forward pass of rows [0, N) and their losses (gradients divided by
 * `divisor`, the rows of the whole step), res->loss their total;
 * NN_ERR_NONFINITE when that total is not finite. */
static nn_status FN(forward_losses)(const nn_graph *g, nn_ws *ws,
                                    const nn_run *run, const nn_targets *tg,
                                    size_t N, size_t divisor,
                                    nn_step_result *res)
{
    nn_status st = FN(forward_rows)(g, ws, run, 0, N, N);
    if (st == NN_OK)
        st = FN(losses_rows)(g, ws, tg, 0, N, divisor, res->loss_sum,
                             res->correct,
                             tg->metrics ? res->metric_sum : NULL);
    if (st != NN_OK)
        return st;
    res->loss = FN(total_loss)(g, tg, res->loss_sum, N);
    return isfinite(res->loss) ? NN_OK : NN_ERR_NONFINITE;
}

static nn_status FN(step_whole)(const nn_graph *g, nn_ws *ws,
                                const nn_run *run, nn_optim *opt,
                                const nn_optmap *map, const nn_hooks *hooks,
                                size_t N, const nn_targets *tg,
                                nn_step_result *res)
{
    int deferred = nn_updates_deferred(g, opt, hooks);
    nn_pg pg;
    size_t k;
    nn_status st = FN(forward_losses)(g, ws, run, tg, N, N, res);
    if (st != NN_OK)
        return st;   /* a non-finite loss: nothing updated */
    opt->steps++;
    nn_pg_init(&pg, NN_PG_TRAIN, g, opt, map, hooks, 0, 1);
    for (k = g->n_nodes; k-- > 0 && st == NN_OK;)
        if (g->train.run_bwd[k])
            st = FN(node_backward)(g, ws, run, &g->train, k, 0, N, N,
                                   FN(has_param_grads)(g, k) ? &pg : NULL);
    if (st != NN_OK) {   /* an external layer's backward failed */
        if (deferred)
            opt->steps--;   /* nothing was updated */
        return st;
    }
    /* state the forward measured, once the step will complete */
    st = FN(commit_all)(g, ws, run, N);
    if (st == NN_OK && deferred)
        st = FN(deferred_updates)(g, opt, map, hooks, 0);
    return st;
}

/* out[i] = the sum over parts of part[p * n + i], i in [0, n) */
static void FN(sum_parts)(double *out, const double *part, size_t parts,
                          size_t n)
{
    size_t p, i;
    for (i = 0; i < n; i++) {
        out[i] = 0;
        for (p = 0; p < parts; p++)
            out[i] += part[p * n + i];
    }
}

static nn_status FN(step_split)(const nn_graph *g, nn_ws *ws,
                                const nn_run *run, nn_optim *opt,
                                const nn_optmap *map, const nn_hooks *hooks,
                                size_t N, const nn_targets *tg,
                                nn_step_result *res, size_t parts)
{
    FN(split) s;
    size_t p, j, n_out = g->n_outputs;
    nn_status st;
    memset(&s, 0, sizeof s);
    s.g = g;
    s.ws = ws;
    s.run = run;
    s.opt = opt;
    s.map = map;
    s.hooks = hooks;
    s.tg = tg;
    s.N = N;
    s.parts = parts;
    st = FN(run_parts)(&s, FN(split_phase1_chunk));
    if (st != NN_OK)
        return st;
    FN(sum_parts)(res->loss_sum, ws->part_sums, parts, n_out);
    for (j = 0; j < n_out && res->correct; j++) {
        res->correct[j] = 0;
        for (p = 0; p < parts; p++)
            res->correct[j] += ws->part_correct[p * n_out + j];
    }
    if (tg->metrics)
        FN(sum_parts)(res->metric_sum, ws->part_metrics, parts,
                      n_out * NN_METRIC_COUNT);
    res->loss = FN(total_loss)(g, tg, res->loss_sum, N);
    if (!isfinite(res->loss))
        return NN_ERR_NONFINITE;   /* nothing updated */
    st = FN(commit_all)(g, ws, run, N);
    if (st != NN_OK)
        return st;
    opt->steps++;
    st = FN(run_parts)(&s, FN(split_phase2_chunk));
    if (st == NN_OK && nn_updates_deferred(g, opt, hooks))
        st = FN(deferred_updates)(g, opt, map, hooks, 1);
    return st;
}

nn_status FN(nn_graph_train_step_impl)(nn_graph *g, nn_ws *ws,
                                       const nn_run *run, nn_optim *opt,
                                       const nn_optmap *map,
                                       const nn_hooks *hooks,
                                       const void *const *x, size_t N,
                                       const nn_targets *tg,
                                       nn_step_result *res)
{
    /* steps take turns at two threads (nn_step_begin's lock); a graph
     * with external layers never splits and skips the turn, since an
     * external layer may run another model's step on this thread */
    int parts = (g->flags_any & NN_OP_EXTERNAL)
                    ? -1
                    : nn_step_begin(nn_split_worth(g, N, 1));
    nn_status st;
    nn_ws_bind(g, ws, x, N);
    ws->fwd = *run;
    ws->fwd.training = 1;
    ws->has_forward = 0;   /* the gradients here are scratch */
    if (parts < 2)
        st = FN(step_whole)(g, ws, run, opt, map, hooks, N, tg, res);
    else
        st = FN(step_split)(g, ws, run, opt, map, hooks, N, tg, res,
                            (size_t)parts);
    nn_step_end(parts);
    return st;
}

/* ---- a step cut in two (data-parallel training) ---- */

/* A training step's forward, losses and backward, every gradient the
 * optimizer holds written and nothing updated (the deferred path): the
 * loss gradients are divided by `divisor`, the rows of the step over
 * every process, so that the processes' gradients sum to the gradient of
 * their stacked batch. The caller exchanges them, then applies the
 * update with apply_step. The GIL-free hooks->ready sees each segment
 * complete, as in a deferred step. */
nn_status FN(nn_graph_grad_step_impl)(nn_graph *g, nn_ws *ws,
                                      const nn_run *run, nn_optim *opt,
                                      const nn_optmap *map,
                                      const nn_hooks *hooks,
                                      const void *const *x, size_t N,
                                      size_t divisor, const nn_targets *tg,
                                      nn_step_result *res)
{
    nn_hooks h;
    nn_pg pg;
    size_t k;
    nn_status st;
    if (hooks)
        h = *hooks;
    else
        memset(&h, 0, sizeof h);
    h.deferred = 1;
    h.before_update = NULL;
    nn_ws_bind(g, ws, x, N);
    ws->fwd = *run;
    ws->fwd.training = 1;
    ws->has_forward = 0;   /* the gradients here are scratch */
    st = FN(forward_losses)(g, ws, run, tg, N, divisor, res);
    if (st != NN_OK)
        return st;   /* a non-finite loss: no gradient written */
    nn_pg_init(&pg, NN_PG_TRAIN, g, opt, map, &h, 0, 1);
    for (k = g->n_nodes; k-- > 0 && st == NN_OK;)
        if (g->train.run_bwd[k])
            st = FN(node_backward)(g, ws, run, &g->train, k, 0, N, N,
                                   FN(has_param_grads)(g, k) ? &pg : NULL);
    return st;
}

/* The update of that step, from the gradients as they are now: the state
 * its forward measured (when it had N > 0 rows), then each segment held
 * once, clipped by global norm when the optimizer does. */
nn_status FN(nn_graph_apply_step_impl)(nn_graph *g, nn_ws *ws,
                                       const nn_run *run, nn_optim *opt,
                                       const nn_optmap *map, size_t N)
{
    nn_hooks h;
    nn_status st = NN_OK;
    memset(&h, 0, sizeof h);
    h.deferred = 1;
    if (N > 0)
        st = FN(commit_all)(g, ws, run, N);
    if (st != NN_OK)
        return st;
    opt->steps++;
    return FN(deferred_updates)(g, opt, map, &h, 0);
}

/* ---- forward and backward alone ---- */

nn_status FN(nn_graph_forward_impl)(nn_graph *g, nn_ws *ws,
                                    const nn_run *run, const void *const *x,
                                    size_t N)
{
    int want = nn_split_worth(g, N, 0), parts = 0;
    nn_status st;
    nn_ws_bind(g, ws, x, N);
    ws->fwd = *run;
    if (want >= 2)   /* only a split takes turns with other threads */
        parts = nn_step_begin(want);
    if (parts < 2) {
        st = FN(forward_rows)(g, ws, run, 0, N, N);
    } else {
        FN(split) s;
        memset(&s, 0, sizeof s);
        s.g = g;
        s.ws = ws;
        s.run = run;
        s.N = N;
        s.parts = (size_t)parts;
        st = FN(run_parts)(&s, FN(split_phase1_chunk));
    }
    if (want >= 2)
        nn_step_end(parts);
    ws->has_forward = st == NN_OK;
    return st;
}

nn_status FN(nn_graph_backward_impl)(nn_graph *g, nn_ws *ws,
                                     const void *const *dout,
                                     void *const *dx)
{
    size_t j, k, N = ws->rows;
    nn_pg pg;
    nn_status st = NN_OK;
    for (j = 0; j < g->n_inputs; j++)
        ws->gval[j] = dx[j];
    for (j = 0; j < g->n_outputs; j++) {
        size_t v = g->outputs[j];
        if (g->n_consumers[v] == 0)   /* read only: the caller's array */
            ws->gval[v] = (void *)dout[j];
        else
            memcpy(ws->gval[v], dout[j], N * g->width[v] * sizeof(real));
    }
    nn_pg_init(&pg, NN_PG_ACCUMULATE, g, NULL, NULL, NULL, 0, 1);
    for (k = g->n_nodes; k-- > 0 && st == NN_OK;)
        if (g->full.run_bwd[k])
            st = FN(node_backward)(g, ws, &ws->fwd, &g->full, k, 0, N, N,
                                   FN(has_param_grads)(g, k) ? &pg : NULL);
    return st;
}

/* ---- fit ---- */

/* Where minibatch `which` of the gathered buffers k puts each array */
static void FN(plan_gather)(nn_gather *ga, const nn_graph *g, nn_ws *ws,
                            int k, const void *const *X,
                            const nn_targets *tg, const int64_t *order,
                            size_t start, size_t count, size_t batch)
{
    size_t i, j, off = 0, toff = 0, loff = 0;
    ga->n = 0;
    for (i = 0; i < g->n_inputs; i++) {
        size_t w = g->width[i];
        nn_gather_add(ga, (char *)ws->xb[k] + off * batch * sizeof(real),
                      X[i], w * sizeof(real));
        off += w;
    }
    for (j = 0; j < g->n_outputs; j++) {
        size_t w = g->width[g->outputs[j]];
        if (tg->T[j]) {
            nn_gather_add(ga, (char *)ws->tb[k] + toff * batch * sizeof(real),
                          tg->T[j], w * sizeof(real));
            toff += w;
        } else {
            nn_gather_add(ga, (char *)(ws->lb[k] + loff * batch),
                          tg->labels[j], sizeof(int64_t));
            loff++;
        }
    }
    if (tg->w)
        nn_gather_add(ga, ws->wb[k], tg->w, sizeof(real));
    ga->order = order + start;
    ga->count = count;
}

/* The gathered minibatch k as inputs and targets */
static void FN(gathered_batch)(const nn_graph *g, const nn_ws *ws, int k,
                               const nn_targets *tg, size_t batch,
                               const void **x, const int64_t **labels,
                               const void **T, nn_targets *out)
{
    size_t i, j, off = 0, toff = 0, loff = 0;
    for (i = 0; i < g->n_inputs; i++) {
        x[i] = (const char *)ws->xb[k] + off * batch * sizeof(real);
        off += g->width[i];
    }
    for (j = 0; j < g->n_outputs; j++) {
        size_t w = g->width[g->outputs[j]];
        labels[j] = NULL;
        T[j] = NULL;
        if (tg->T[j]) {
            T[j] = (const char *)ws->tb[k] + toff * batch * sizeof(real);
            toff += w;
        } else {
            labels[j] = ws->lb[k] + loff * batch;
            loff++;
        }
    }
    *out = *tg;
    out->labels = labels;
    out->T = T;
    out->w = tg->w ? ws->wb[k] : NULL;
}

/* Batch b of the arrays in place (no shuffling) */
static void FN(direct_batch)(const nn_graph *g, const void *const *X,
                             const nn_targets *tg, size_t start,
                             const void **x, const int64_t **labels,
                             const void **T, nn_targets *out)
{
    size_t i, j;
    for (i = 0; i < g->n_inputs; i++)
        x[i] = (const real *)X[i] + start * g->width[i];
    for (j = 0; j < g->n_outputs; j++) {
        labels[j] = tg->labels[j] ? tg->labels[j] + start : NULL;
        T[j] = tg->T[j] ? (const real *)tg->T[j] +
                              start * g->width[g->outputs[j]]
                        : NULL;
    }
    *out = *tg;
    out->labels = labels;
    out->T = T;
    out->w = tg->w ? (const real *)tg->w + start : NULL;
}

/*
 * With an order (shuffling), each minibatch is gathered into one of two
 * buffers while the other trains: the gather of batch b + 1 is offered to
 * the pool's idle workers (pool.c) before batch b trains, and whatever
 * they have not done when batch b + 1 starts is done then, on this
 * thread. Random rows of a big X come from memory, not cache; on a worker
 * that wait overlaps the training step instead of adding to it.
 */
nn_status FN(nn_graph_fit_epoch_impl)(nn_graph *g, nn_ws *ws, nn_run *run,
                                      nn_optim *opt, const nn_optmap *map,
                                      const nn_hooks *hooks,
                                      const void *const *X, size_t n,
                                      const nn_targets *tg,
                                      const int64_t *order, size_t batch,
                                      nn_progress_fn progress, void *ctx,
                                      nn_epoch_result *res)
{
    size_t b, j, n_batches = (n + batch - 1) / batch, n_out = g->n_outputs;
    size_t stride = n < batch ? n : batch;   /* rows of a gather buffer */
    const void *x[NN_MAX_IN], *T[NN_MAX_IN];
    const int64_t *labels[NN_MAX_IN];
    double sums[NN_MAX_IN], msums[NN_MAX_IN * NN_METRIC_COUNT];
    size_t correct[NN_MAX_IN];
    nn_targets btg;
    nn_step_result step;
    nn_gather gather;
    nn_task task;
    nn_status st = NN_OK;
    int k = 0;
    step.loss_sum = sums;
    step.correct = correct;
    step.metric_sum = msums;
    if (order) {
        FN(plan_gather)(&gather, g, ws, 0, X, tg, order, 0, stride, stride);
        nn_gather_init(&task, &gather);
        nn_task_post(&task);
    }
    for (b = 0; b < n_batches; b++) {
        size_t start = b * batch, bs = n - start < batch ? n - start : batch;
        if (order) {
            nn_task_finish(&task);   /* batch b is in buffers k */
            FN(gathered_batch)(g, ws, k, tg, stride, x, labels, T, &btg);
            if (b + 1 < n_batches) {
                size_t next = start + bs;
                FN(plan_gather)(&gather, g, ws, k ^ 1, X, tg, order, next,
                                n - next < batch ? n - next : batch, stride);
                nn_gather_init(&task, &gather);
                nn_task_post(&task);
            }
            k ^= 1;
        } else {
            FN(direct_batch)(g, X, tg, start, x, labels, T, &btg);
        }
        if (hooks && hooks->before_batch)
            hooks->before_batch(hooks->ctx, b);
        step.loss = 0;
        st = FN(nn_graph_train_step_impl)(g, ws, run, opt, map, hooks, x, bs,
                                          &btg, &step);
        res->last_loss = step.loss;
        if (st != NN_OK) {
            res->failed_batch = b;
            break;
        }
        run->step++;
        res->loss_sum += step.loss * (double)bs;
        for (j = 0; j < n_out; j++) {
            res->loss_sum_out[j] += step.loss_sum[j];
            res->correct[j] += correct[j];
        }
        for (j = 0; tg->metrics && j < n_out * NN_METRIC_COUNT; j++)
            res->metric_sum[j] += msums[j];
        res->seen += bs;
        if (progress && progress(ctx, b, n_batches, res)) {
            st = NN_ERR_INTERRUPTED;
            break;
        }
    }
    if (order && b + 1 < n_batches)
        nn_task_finish(&task);   /* no worker may outlive this frame */
    return st;
}
