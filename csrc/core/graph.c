/*
 * graph.c: building a graph of layers and planning how it runs.
 *
 * A graph is nodes in topological order, each reading earlier values
 * (inputs first, then node outputs). This file checks the structure once,
 * works out the widths for given input widths, lays out the workspace
 * (where every value and gradient lives per row, which activations run
 * in place over their input) and plans the backward pass (which values
 * need a gradient, which consumer overwrites and which adds). Running it
 * is graph_run.c's job.
 */
#include "nn.h"
#include "core_internal.h"

#include <string.h>

static uint64_t trainable_stamp = 1;   /* atomic */

uint64_t nn_trainable_stamp(void)
{
    return __atomic_load_n(&trainable_stamp, __ATOMIC_ACQUIRE);
}

void nn_trainable_changed(void)
{
    __atomic_add_fetch(&trainable_stamp, 1, __ATOMIC_ACQ_REL);
}

static void plan_free(nn_plan *p)
{
    nn_free(p->need_grad);
    nn_free(p->run_bwd);
    nn_free(p->acc);
    memset(p, 0, sizeof *p);
}

void nn_graph_free(nn_graph *g)
{
    nn_free(g->nodes);
    nn_free(g->edges);
    nn_free(g->outputs);
    nn_free(g->in_width);
    nn_free(g->width);
    nn_free(g->new_width);
    nn_free(g->act_off);
    nn_free(g->grad_off);
    nn_free(g->ws_row);
    nn_free(g->ws_fixed);
    nn_free(g->alias);
    nn_free(g->n_consumers);
    nn_free(g->edge_start);
    nn_free(g->use);
    plan_free(&g->train);
    plan_free(&g->full);
    memset(g, 0, sizeof *g);
}

static int alloc_arrays(nn_graph *g)
{
    size_t V = g->n_values, K = g->n_nodes;
    g->nodes = nn_calloc(K, sizeof *g->nodes);
    g->edges = nn_calloc(g->n_edges, sizeof *g->edges);
    g->outputs = nn_calloc(g->n_outputs, sizeof *g->outputs);
    g->in_width = nn_calloc(g->n_inputs, sizeof *g->in_width);
    g->width = nn_calloc(V, sizeof *g->width);
    g->new_width = nn_calloc(V, sizeof *g->new_width);
    g->act_off = nn_calloc(V, sizeof *g->act_off);
    g->grad_off = nn_calloc(V, sizeof *g->grad_off);
    g->ws_row = nn_calloc(K, sizeof *g->ws_row);
    g->ws_fixed = nn_calloc(K, sizeof *g->ws_fixed);
    g->alias = nn_calloc(V, sizeof *g->alias);
    g->n_consumers = nn_calloc(V, sizeof *g->n_consumers);
    g->edge_start = nn_calloc(K, sizeof *g->edge_start);
    g->use = nn_calloc(K, NN_MAX_TENSORS * sizeof *g->use);
    g->train.need_grad = nn_calloc(V, 1);
    g->train.run_bwd = nn_calloc(K, 1);
    g->train.acc = nn_calloc(g->n_edges, 1);
    g->full.need_grad = nn_calloc(V, 1);
    g->full.run_bwd = nn_calloc(K, 1);
    g->full.acc = nn_calloc(g->n_edges, 1);
    return g->nodes && g->edges && g->outputs && g->in_width && g->width &&
           g->new_width &&
           g->act_off && g->grad_off && g->ws_row && g->ws_fixed &&
           g->alias && g->n_consumers && g->edge_start && g->use &&
           g->train.need_grad && g->train.run_bwd && g->train.acc &&
           g->full.need_grad && g->full.run_bwd && g->full.acc;
}

static size_t value_of_node(const nn_graph *g, size_t k)
{
    return g->n_inputs + k;
}

static int is_output(const nn_graph *g, size_t v)
{
    size_t j;
    for (j = 0; j < g->n_outputs; j++)
        if (g->outputs[j] == v)
            return 1;
    return 0;
}

/* Structure checks that need no widths. */
static nn_status check_structure(nn_graph *g, size_t *bad, const char **what)
{
    size_t V = g->n_values, k, e, j;
    unsigned char *from_input = NULL, *to_output = NULL;
    nn_status st = NN_OK;
    for (k = 0; k < g->n_nodes; k++) {
        const nn_node *nd = &g->nodes[k];
        const nn_op *op = nn_op_of(nd->layer->kind);
        if (!op || nd->n_in < op->min_in ||
            (op->max_in && nd->n_in > op->max_in) || nd->n_in > NN_MAX_IN) {
            *bad = k;
            *what = "wrong number of inputs for its layer";
            return NN_ERR_GRAPH;
        }
        for (e = 0; e < nd->n_in; e++) {
            if (nd->in[e] >= value_of_node(g, k)) {
                *bad = k;
                *what = "reads a value that is not computed before it "
                        "(a cycle, or nodes out of order)";
                return NN_ERR_GRAPH;
            }
        }
    }
    for (j = 0; j < g->n_outputs; j++) {
        if (g->outputs[j] >= V) {
            *bad = g->n_nodes;
            *what = "an output is not a value of the graph";
            return NN_ERR_GRAPH;
        }
        if (g->outputs[j] < g->n_inputs) {
            *bad = g->n_nodes + g->outputs[j];
            *what = "an input is also an output (no layer between them)";
            return NN_ERR_GRAPH;
        }
        for (k = 0; k < j; k++) {
            if (g->outputs[k] == g->outputs[j]) {
                *bad = g->outputs[j] - g->n_inputs;
                *what = "is given as an output twice";
                return NN_ERR_GRAPH;
            }
        }
    }
    from_input = nn_calloc(V, 1);
    to_output = nn_calloc(V, 1);
    if (!from_input || !to_output) {
        st = NN_ERR_NOMEM;
        goto done;
    }
    for (j = 0; j < g->n_inputs; j++)
        from_input[j] = 1;
    for (k = 0; k < g->n_nodes; k++) {
        const nn_node *nd = &g->nodes[k];
        for (e = 0; e < nd->n_in; e++)
            from_input[value_of_node(g, k)] |= from_input[nd->in[e]];
        if (nd->n_in == 0 || !from_input[value_of_node(g, k)]) {
            *bad = k;
            *what = "is not connected to any input";
            st = NN_ERR_GRAPH;
            goto done;
        }
    }
    for (j = 0; j < g->n_outputs; j++)
        to_output[g->outputs[j]] = 1;
    for (k = g->n_nodes; k-- > 0;) {
        const nn_node *nd = &g->nodes[k];
        if (!to_output[value_of_node(g, k)]) {
            *bad = k;
            *what = "leads to no output";
            st = NN_ERR_GRAPH;
            goto done;
        }
        for (e = 0; e < nd->n_in; e++)
            to_output[nd->in[e]] = 1;
    }
    for (j = 0; j < g->n_inputs; j++) {
        if (!to_output[j]) {
            *bad = g->n_nodes + j;
            *what = "is not used by any layer that leads to an output";
            st = NN_ERR_GRAPH;
            goto done;
        }
    }
done:
    nn_free(from_input);
    nn_free(to_output);
    return st;
}

/* Per node and tensor: first, last and only use of its layer in backward
 * order (highest node index first). */
static void find_uses(nn_graph *g)
{
    size_t k, j, t;
    for (k = 0; k < g->n_nodes; k++) {
        const nn_layer *L = g->nodes[k].layer;
        int later = 0, earlier = 0;
        for (j = 0; j < g->n_nodes; j++) {
            if (j == k || g->nodes[j].layer != L)
                continue;
            if (j > k)
                later = 1;
            else
                earlier = 1;
        }
        for (t = 0; t < NN_MAX_TENSORS; t++) {
            nn_use *u = &g->use[k * NN_MAX_TENSORS + t];
            u->first = !later;
            u->last = !earlier;
            u->single = !later && !earlier;
        }
    }
}

nn_status nn_graph_init(nn_graph *g, nn_dtype dt, size_t n_inputs,
                        const size_t *in_width, size_t n_nodes,
                        nn_layer **layers, const size_t *n_in,
                        const size_t *edges, size_t n_outputs,
                        const size_t *outputs, size_t *bad,
                        const char **what)
{
    size_t k, e = 0, j, dummy_b;
    const char *dummy_w;
    nn_status st;
    if (!bad)
        bad = &dummy_b;
    if (!what)
        what = &dummy_w;
    *what = "";
    memset(g, 0, sizeof *g);
    if (n_inputs == 0 || n_nodes == 0 || n_outputs == 0) {
        *bad = 0;
        *what = "a graph needs at least one input, one node and one output";
        return NN_ERR_GRAPH;
    }
    g->dtype = dt;
    g->n_inputs = n_inputs;
    g->n_nodes = n_nodes;
    g->n_outputs = n_outputs;
    g->n_values = n_inputs + n_nodes;
    for (k = 0; k < n_nodes; k++)
        g->n_edges += n_in[k];
    if (!alloc_arrays(g)) {
        nn_graph_free(g);
        return NN_ERR_NOMEM;
    }
    memcpy(g->edges, edges, g->n_edges * sizeof *edges);
    memcpy(g->outputs, outputs, n_outputs * sizeof *outputs);
    memcpy(g->in_width, in_width, n_inputs * sizeof *in_width);
    for (k = 0; k < n_nodes; k++) {
        g->nodes[k].layer = layers[k];
        g->nodes[k].n_in = n_in[k];
        g->nodes[k].in = g->edges + e;
        g->edge_start[k] = e;
        e += n_in[k];
    }
    st = check_structure(g, bad, what);
    if (st != NN_OK) {
        nn_graph_free(g);
        return st;
    }
    for (e = 0; e < g->n_edges; e++)
        g->n_consumers[g->edges[e]]++;
    find_uses(g);
    g->flags_all = ~0u;
    g->flags_any = 0;
    for (k = 0; k < n_nodes; k++) {
        g->flags_all &= nn_op_of(layers[k]->kind)->flags;
        g->flags_any |= nn_op_of(layers[k]->kind)->flags;
    }
    for (j = 0; j < n_inputs; j++)
        if (in_width[j] == 0)
            return NN_OK;   /* resolved by the first call */
    st = nn_graph_resolve(g, in_width, bad, &dummy_b, &dummy_b);
    if (st != NN_OK) {
        *what = "its inputs' widths do not fit its layer";
        nn_graph_free(g);
    }
    return st;
}

/* ---- layout ---- */

/* 1 when node k (an activation) can run in place over its input: the
 * input is another node's output read by nothing else, not a graph
 * output, with storage of its own (its producer did not run in place:
 * that producer's backward reads the storage k would overwrite), made by
 * a layer whose backward does not read its own output and that is not
 * external (a host layer may keep its output), and k's backward reads
 * only its output. */
static int runs_in_place(const nn_graph *g, size_t k)
{
    const nn_node *nd = &g->nodes[k];
    const nn_op *op = nn_op_of(nd->layer->kind), *prod;
    size_t z;
    if (!(op->flags & NN_OP_ELEMENTWISE) || !(op->flags & NN_OP_OUT_BWD) ||
        (op->out_bwd && !op->out_bwd(nd->layer)) || nd->n_in != 1)
        return 0;
    z = nd->in[0];
    if (z < g->n_inputs || g->n_consumers[z] != 1 || is_output(g, z) ||
        g->alias[z] != z)
        return 0;
    prod = nn_op_of(g->nodes[z - g->n_inputs].layer->kind);
    return !(prod->flags & (NN_OP_NEEDS_OUT | NN_OP_EXTERNAL));
}

/* Where each value and gradient lives (values per row) and each node's
 * workspace. */
static void lay_out(nn_graph *g)
{
    size_t k, act = 0, grad = 0, wr = 0, wf = 0;
    double macs = 0, widest = 0;
    for (k = 0; k < g->n_inputs; k++)
        g->alias[k] = k;
    for (k = 0; k < g->n_nodes; k++) {
        size_t v = value_of_node(g, k);
        const nn_node *nd = &g->nodes[k];
        const nn_op *op = nn_op_of(nd->layer->kind);
        if (runs_in_place(g, k)) {
            g->alias[v] = g->alias[nd->in[0]];
            g->act_off[v] = g->act_off[g->alias[v]];
        } else {
            g->alias[v] = v;
            g->act_off[v] = act;
            act += g->width[v];
        }
        g->grad_off[v] = grad;
        grad += g->width[v];
        g->ws_row[k] = g->ws_fixed[k] = 0;
        if (op->workspace)
            op->workspace(nd->layer, g->width[v], &g->ws_row[k],
                          &g->ws_fixed[k]);
        wr += g->ws_row[k];
        wf += g->ws_fixed[k];
        if (op->macs) {
            double m = op->macs(nd->layer);
            macs += m;
            if (m > widest)
                widest = m;
        }
    }
    g->act_row = act;
    g->grad_row = grad;
    g->ws_row_total = wr;
    g->ws_fixed_total = wf;
    g->macs_fwd = macs;
    g->macs_widest = widest;
}

double nn_graph_macs(const nn_graph *g)
{
    return g->macs_fwd;
}

/* ---- backward plans ---- */

/* need_grad: a value depends on a trainable parameter or on an input
 * that wants its gradient; a node's backward runs when its output needs
 * a gradient; per edge, the first consumer to write an input's gradient
 * in backward order overwrites it and the others add (an output's
 * gradient is written first by its loss, or given). */
static void plan(const nn_graph *g, nn_plan *p, int input_grads)
{
    size_t k, e, v;
    for (v = 0; v < g->n_inputs; v++)
        p->need_grad[v] = (unsigned char)input_grads;
    for (k = 0; k < g->n_nodes; k++) {
        const nn_node *nd = &g->nodes[k];
        int need = nd->layer->trainable && nd->layer->n_params > 0;
        for (e = 0; e < nd->n_in; e++)
            need |= p->need_grad[nd->in[e]];
        p->need_grad[value_of_node(g, k)] = (unsigned char)need;
        p->run_bwd[k] = (unsigned char)need;
    }
    /* edges in backward order: nodes from the last, the inputs of a node
     * in order; a value's first writer overwrites */
    for (k = g->n_nodes; k-- > 0;) {
        const nn_node *nd = &g->nodes[k];
        for (e = 0; e < nd->n_in; e++) {
            size_t in = nd->in[e], j, e2;
            int before = is_output(g, in);
            /* a consumer that wrote earlier in backward order: a later
             * node, or an earlier input slot of this node */
            for (j = k + 1; j < g->n_nodes && !before; j++)
                for (e2 = 0; e2 < g->nodes[j].n_in; e2++)
                    if (g->nodes[j].in[e2] == in)
                        before = 1;
            for (e2 = 0; e2 < e && !before; e2++)
                if (nd->in[e2] == in)
                    before = 1;
            p->acc[g->edge_start[k] + e] = (unsigned char)before;
        }
    }
    p->valid = 1;
}

nn_status nn_graph_replan(nn_graph *g)
{
    uint64_t stamp = nn_trainable_stamp();
    if (g->train.valid && g->trainable_stamp == stamp)
        return NN_OK;
    plan(g, &g->train, 0);
    plan(g, &g->full, 1);
    g->trainable_stamp = stamp;
    return NN_OK;
}

nn_status nn_graph_resolve(nn_graph *g, const size_t *w, size_t *bad,
                           size_t *bad_input, size_t *got)
{
    size_t k, j, e;
    size_t in_w[NN_MAX_IN];
    if (g->resolved) {
        for (j = 0; j < g->n_inputs; j++)
            if (g->width[j] != w[j])
                break;
        if (j == g->n_inputs)
            return nn_graph_replan(g);
    }
    /* check every node first, so a failure keeps the old widths */
    {
        size_t *tmp = g->new_width;
        for (j = 0; j < g->n_inputs; j++) {
            tmp[j] = w[j];
            if (g->in_width[j] && g->in_width[j] != w[j]) {
                *bad = g->n_nodes + j;
                *bad_input = j;
                *got = w[j];
                return NN_ERR_SHAPE;
            }
        }
        for (k = 0; k < g->n_nodes; k++) {
            const nn_node *nd = &g->nodes[k];
            const nn_op *op = nn_op_of(nd->layer->kind);
            size_t out = 0, b = 0;
            nn_status st;
            for (e = 0; e < nd->n_in; e++)
                in_w[e] = tmp[nd->in[e]];
            st = op->out_width(nd->layer, in_w, nd->n_in, &out, &b);
            if (st != NN_OK) {
                *bad = k;
                *bad_input = b;
                *got = in_w[b];
                /* an external layer's own failure stays what it is */
                return st == NN_ERR_EXTERNAL ? st : NN_ERR_SHAPE;
            }
            tmp[value_of_node(g, k)] = out;
        }
        memcpy(g->width, tmp, g->n_values * sizeof *tmp);
    }
    lay_out(g);
    g->resolved = 1;
    g->train.valid = 0;
    return nn_graph_replan(g);
}

/* ---- splitting a batch between threads (graph_run.c) ---- */

static int split_mode = -1;

int nn_set_split_mode(int mode)
{
    int old = split_mode;
    split_mode = mode < 0 ? -1 : mode > 0;
    return old;
}

/*
 * Threads worth splitting a training step (training 1) or a forward pass
 * (0) of N rows between (0 or 1: none): each part must have
 * NN_SPLIT_MIN_ROWS rows, every layer must be row-wise, and the step's
 * products must be big enough that two waits cost little, yet small
 * enough that OpenBLAS's own split of each product is not better. That
 * is also so when a layer is wide (NN_SPLIT_WIDE_MACS multiply-adds a
 * row, e.g. 784 x 1024) and the batch short (under NN_SPLIT_WIDE_ROWS
 * rows): each part would pack that whole weight matrix for itself and
 * run OpenBLAS's kernels on few rows, where OpenBLAS's split packs half
 * of it per thread for all the rows.
 */
#define NN_SPLIT_MIN_ROWS 16
#define NN_SPLIT_MIN_MACS 1.5e6
#define NN_SPLIT_MAX_MACS 2.0e9
#define NN_SPLIT_WIDE_MACS 7.5e5
#define NN_SPLIT_WIDE_ROWS 512

int nn_split_worth(const nn_graph *g, size_t N, int training)
{
    double macs;
    size_t parts;
    if (split_mode == 0 || N < 2 || !(g->flags_all & NN_OP_ROWWISE))
        return 0;
    if (split_mode > 0)   /* forced (tests): even one row a part */
        return N > NN_SPLIT_MAX ? NN_SPLIT_MAX : (int)N;
    if (N < 2 * NN_SPLIT_MIN_ROWS)
        return 0;
    macs = (training ? 3.0 : 1.0) * (double)N * g->macs_fwd;
    if (macs < NN_SPLIT_MIN_MACS || macs > NN_SPLIT_MAX_MACS)
        return 0;
    if (g->macs_widest >= NN_SPLIT_WIDE_MACS && N < NN_SPLIT_WIDE_ROWS)
        return 0;
    parts = N / NN_SPLIT_MIN_ROWS;
    return parts > NN_SPLIT_MAX ? NN_SPLIT_MAX : (int)parts;
}

/* ---- workspace ---- */

nn_status nn_ws_init(nn_ws *ws, const nn_graph *g)
{
    memset(ws, 0, sizeof *ws);
    ws->val = nn_calloc(g->n_values, sizeof *ws->val);
    ws->gval = nn_calloc(g->n_values, sizeof *ws->gval);
    ws->opws = nn_calloc(g->n_nodes, sizeof *ws->opws);
    ws->part_sums = nn_calloc(NN_SPLIT_MAX * g->n_outputs,
                              sizeof *ws->part_sums);
    ws->part_correct = nn_calloc(NN_SPLIT_MAX * g->n_outputs,
                                 sizeof *ws->part_correct);
    ws->part_metrics = nn_calloc(NN_SPLIT_MAX * g->n_outputs,
                                 NN_METRIC_COUNT * sizeof *ws->part_metrics);
    if (!ws->val || !ws->gval || !ws->opws || !ws->part_sums ||
        !ws->part_correct || !ws->part_metrics) {
        nn_ws_free(ws);
        return NN_ERR_NOMEM;
    }
    return NN_OK;
}

void nn_ws_free(nn_ws *ws)
{
    int k;
    nn_free(ws->act);
    nn_free(ws->grad);
    nn_free(ws->op);
    nn_free((void *)ws->val);
    nn_free(ws->gval);
    nn_free(ws->opws);
    nn_free(ws->part_sums);
    nn_free(ws->part_correct);
    nn_free(ws->part_metrics);
    for (k = 0; k < 2; k++) {
        nn_free(ws->xb[k]);
        nn_free(ws->tb[k]);
        nn_free(ws->lb[k]);
        nn_free(ws->wb[k]);
    }
    memset(ws, 0, sizeof *ws);
}

/* Grow *buf to hold `values` values of `esize` bytes; *cap in values. */
static nn_status grow(void **buf, size_t *cap, size_t values, size_t esize)
{
    size_t nbytes;
    void *p;
    if (values <= *cap && *buf)
        return NN_OK;
    if (!nn_mul_size(values, esize, &nbytes))
        return NN_ERR_OVERFLOW;
    p = nn_malloc(nbytes);
    if (!p)
        return NN_ERR_NOMEM;
    nn_free(*buf);
    *buf = p;
    *cap = values;
    return NN_OK;
}

nn_status nn_ws_reserve(const nn_graph *g, nn_ws *ws, size_t N, int grads)
{
    size_t es = nn_dtype_size(g->dtype), act, grad, op;
    nn_status st;
    if (!nn_mul_size(N, g->act_row, &act) ||
        !nn_mul_size(N, g->grad_row, &grad) ||
        !nn_mul_size(N, g->ws_row_total, &op) ||
        op + g->ws_fixed_total < op)
        return NN_ERR_OVERFLOW;
    st = grow(&ws->act, &ws->cap_act, act, es);
    if (st == NN_OK)
        st = grow(&ws->op, &ws->cap_op, op + g->ws_fixed_total, es);
    if (st == NN_OK && grads)
        st = grow(&ws->grad, &ws->cap_grad, grad, es);
    return st;
}

void nn_ws_bind(const nn_graph *g, nn_ws *ws, const void *const *x, size_t N)
{
    size_t es = nn_dtype_size(g->dtype), v, k, off = 0;
    ws->rows = N;
    for (v = 0; v < g->n_inputs; v++) {
        ws->val[v] = x[v];
        ws->gval[v] = NULL;
    }
    for (v = g->n_inputs; v < g->n_values; v++) {
        ws->val[v] = (char *)ws->act + es * N * g->act_off[v];
        ws->gval[v] = ws->grad ? (char *)ws->grad + es * N * g->grad_off[v]
                               : NULL;
    }
    for (k = 0; k < g->n_nodes; k++) {
        ws->opws[k] = (char *)ws->op + es * off;
        off += N * g->ws_row[k] + g->ws_fixed[k];
    }
}

/* Room to gather two minibatches of `batch` rows: every input, every
 * dense target, every label column, sample weights */
static nn_status reserve_gather(const nn_graph *g, nn_ws *ws, size_t batch,
                                const nn_targets *tg)
{
    size_t es = nn_dtype_size(g->dtype), xw = 0, tw = 0, lw = 0, j, v;
    size_t cx[2] = {ws->cap_xb, ws->cap_xb}, ct[2] = {ws->cap_tb, ws->cap_tb};
    size_t cl[2] = {ws->cap_lb, ws->cap_lb}, cw[2] = {ws->cap_wb, ws->cap_wb};
    nn_status st = NN_OK;
    int k;
    for (j = 0; j < g->n_inputs; j++)
        xw += g->width[j];
    for (j = 0; j < g->n_outputs; j++) {
        if (tg->T[j])
            tw += g->width[g->outputs[j]];
        else
            lw++;
    }
    if (!nn_mul_size(batch, xw, &v) || !nn_mul_size(batch, tw, &v) ||
        !nn_mul_size(batch, lw, &v))
        return NN_ERR_OVERFLOW;
    for (k = 0; k < 2 && st == NN_OK; k++) {
        st = grow(&ws->xb[k], &cx[k], batch * xw, es);
        if (st == NN_OK && tw)
            st = grow(&ws->tb[k], &ct[k], batch * tw, es);
        if (st == NN_OK && lw)
            st = grow((void **)&ws->lb[k], &cl[k], batch * lw,
                      sizeof(int64_t));
        if (st == NN_OK && tg->w)
            st = grow(&ws->wb[k], &cw[k], batch, es);
    }
    ws->cap_xb = cx[0] < cx[1] ? cx[0] : cx[1];
    ws->cap_tb = ct[0] < ct[1] ? ct[0] : ct[1];
    ws->cap_lb = cl[0] < cl[1] ? cl[0] : cl[1];
    ws->cap_wb = cw[0] < cw[1] ? cw[0] : cw[1];
    return st;
}

/* ---- fit's gather ---- */

void nn_gather_add(nn_gather *g, void *dst, const void *src, size_t row_bytes)
{
    g->a[g->n].dst = dst;
    g->a[g->n].src = src;
    g->a[g->n].row = row_bytes;
    g->n++;
}

/* Ask for a row that a later chunk copies: rows come from random places
 * in a big array, and each one's first miss (and page walk) would
 * otherwise wait for memory on its own. */
static void prefetch_row(const char *row, size_t bytes)
{
#if defined(__GNUC__)
    size_t off;
    for (off = 0; off < bytes; off += 64)
        __builtin_prefetch(row + off, 0, 0);
#else
    (void)row;
    (void)bytes;
#endif
}

/* Rows order[r], r in the chunk's range, of every array into the gather
 * buffers (one task chunk: NN_GATHER_ROWS rows). */
static void gather_chunk(void *arg, size_t chunk)
{
    const nn_gather *g = arg;
    size_t r = chunk * NN_GATHER_ROWS, end = r + NN_GATHER_ROWS, i;
    if (end > g->count)
        end = g->count;
    for (; r < end; r++) {
        size_t src = (size_t)g->order[r];
        if (r + NN_GATHER_ROWS < g->count)   /* a chunk ahead */
            prefetch_row(g->a[0].src +
                             (size_t)g->order[r + NN_GATHER_ROWS] *
                                 g->a[0].row,
                         g->a[0].row);
        for (i = 0; i < g->n; i++)
            memcpy(g->a[i].dst + r * g->a[i].row,
                   g->a[i].src + src * g->a[i].row, g->a[i].row);
    }
}

void nn_gather_init(nn_task *task, nn_gather *g)
{
    memset(task, 0, sizeof *task);
    task->fn = gather_chunk;
    task->arg = g;
    task->n_chunks = (g->count + NN_GATHER_ROWS - 1) / NN_GATHER_ROWS;
}

/* ---- the optimizer's segments for this graph ---- */

nn_status nn_optmap_bind(nn_optmap *m, const nn_graph *g, const nn_optim *o)
{
    size_t k, t, s, n = g->n_nodes * NN_MAX_TENSORS;
    if (m->opt == o && m->n == n && m->seg_of)
        return NN_OK;
    if (m->n != n || !m->seg_of) {
        nn_free(m->seg_of);
        m->seg_of = nn_calloc(n, sizeof *m->seg_of);
        if (!m->seg_of) {
            m->n = 0;
            m->opt = NULL;
            return NN_ERR_NOMEM;
        }
        m->n = n;
    }
    m->n_mapped = 0;
    for (k = 0; k < g->n_nodes; k++) {
        const nn_layer *L = g->nodes[k].layer;
        for (t = 0; t < NN_MAX_TENSORS; t++) {
            long found = -1;
            for (s = 0; s < o->n_segments && t < L->n_params; s++)
                if (o->seg[s].layer == L && o->seg[s].tensor == t)
                    found = (long)s;
            m->seg_of[k * NN_MAX_TENSORS + t] = found;
            m->n_mapped += found >= 0;
        }
    }
    m->opt = o;
    return NN_OK;
}

void nn_optmap_free(nn_optmap *m)
{
    nn_free(m->seg_of);
    memset(m, 0, sizeof *m);
}

/* ---- running: checks, room, then the dtype's engine (graph_run.c) ---- */

static nn_status ready_to_run(nn_graph *g)
{
    if (!g->resolved)
        return NN_ERR_SHAPE;
    return nn_graph_replan(g);
}

nn_status nn_graph_forward(nn_graph *g, nn_ws *ws, const nn_run *run,
                           const void *const *x, size_t N, void *const *out)
{
    size_t j, es = nn_dtype_size(g->dtype);
    nn_status st = ready_to_run(g);
    if (st == NN_OK)
        st = nn_ws_reserve(g, ws, N, 0);
    if (st != NN_OK)
        return st;
    ws->has_forward = 0;
    st = g->dtype == NN_F32 ? nn_graph_forward_impl_f32(g, ws, run, x, N)
                            : nn_graph_forward_impl_f64(g, ws, run, x, N);
    for (j = 0; j < g->n_outputs && st == NN_OK && out; j++)
        if (out[j])
            memcpy(out[j], ws->val[g->outputs[j]],
                   N * g->width[g->outputs[j]] * es);
    return st;
}

const void *nn_graph_output(const nn_graph *g, const nn_ws *ws, size_t k)
{
    return ws->val[g->outputs[k]];
}

nn_status nn_graph_backward(nn_graph *g, nn_ws *ws,
                            const void *const *dout, void *const *dx)
{
    nn_status st;
    if (!ws->has_forward)
        return NN_ERR_ARG;
    st = ready_to_run(g);
    if (st == NN_OK) {
        /* room for gradients (the first backward on this workspace); the
         * values stay where the forward left them */
        size_t es = nn_dtype_size(g->dtype), v;
        st = nn_ws_reserve(g, ws, ws->rows, 1);
        for (v = g->n_inputs; v < g->n_values && st == NN_OK; v++)
            ws->gval[v] = (char *)ws->grad + es * ws->rows * g->grad_off[v];
    }
    if (st != NN_OK)
        return st;
    st = g->dtype == NN_F32
             ? nn_graph_backward_impl_f32(g, ws, dout, dx)
             : nn_graph_backward_impl_f64(g, ws, dout, dx);
    ws->has_forward = 0;
    return st;
}

nn_status nn_graph_train_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                              nn_optim *opt, const nn_optmap *map,
                              const nn_hooks *hooks, const void *const *x,
                              size_t N, const nn_targets *tg,
                              nn_step_result *res)
{
    nn_status st = ready_to_run(g);
    if (st == NN_OK && N == 0)
        st = NN_ERR_SHAPE;
    if (st == NN_OK)
        st = nn_ws_reserve(g, ws, N, 1);
    if (st != NN_OK)
        return st;
    if (g->dtype == NN_F32)
        return nn_graph_train_step_impl_f32(g, ws, run, opt, map, hooks, x, N,
                                            tg, res);
    return nn_graph_train_step_impl_f64(g, ws, run, opt, map, hooks, x, N,
                                        tg, res);
}

nn_status nn_graph_grad_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                             nn_optim *opt, const nn_optmap *map,
                             const nn_hooks *hooks, const void *const *x,
                             size_t N, size_t divisor, const nn_targets *tg,
                             nn_step_result *res)
{
    nn_status st = ready_to_run(g);
    if (st == NN_OK && (N == 0 || divisor < N))
        st = NN_ERR_SHAPE;
    if (st == NN_OK)
        st = nn_ws_reserve(g, ws, N, 1);
    if (st != NN_OK)
        return st;
    if (g->dtype == NN_F32)
        return nn_graph_grad_step_impl_f32(g, ws, run, opt, map, hooks, x, N,
                                           divisor, tg, res);
    return nn_graph_grad_step_impl_f64(g, ws, run, opt, map, hooks, x, N,
                                       divisor, tg, res);
}

nn_status nn_graph_apply_step(nn_graph *g, nn_ws *ws, const nn_run *run,
                              nn_optim *opt, const nn_optmap *map, size_t N)
{
    nn_status st = ready_to_run(g);
    if (st == NN_OK && N > 0 && ws->rows != N)
        st = NN_ERR_ARG;   /* not the batch of the last grad_step */
    if (st != NN_OK)
        return st;
    if (g->dtype == NN_F32)
        return nn_graph_apply_step_impl_f32(g, ws, run, opt, map, N);
    return nn_graph_apply_step_impl_f64(g, ws, run, opt, map, N);
}

nn_status nn_graph_fit_epoch(nn_graph *g, nn_ws *ws, nn_run *run,
                             nn_optim *opt, const nn_optmap *map,
                             const nn_hooks *hooks, const void *const *X,
                             size_t n, const nn_targets *tg,
                             const int64_t *order, size_t batch,
                             nn_progress_fn progress, void *ctx,
                             nn_epoch_result *res)
{
    size_t b = n < batch ? n : batch;
    nn_status st;
    res->loss_sum = 0;
    res->seen = 0;
    res->failed_batch = 0;
    res->last_loss = 0;
    if (batch == 0)
        return NN_ERR_ARG;
    if (n == 0)
        return NN_OK;
    st = ready_to_run(g);
    if (st == NN_OK)
        st = nn_ws_reserve(g, ws, b, 1);
    if (st == NN_OK && order)
        st = reserve_gather(g, ws, b, tg);
    if (st != NN_OK)
        return st;
    if (g->dtype == NN_F32)
        return nn_graph_fit_epoch_impl_f32(g, ws, run, opt, map, hooks, X, n,
                                           tg, order, batch, progress, ctx,
                                           res);
    return nn_graph_fit_epoch_impl_f64(g, ws, run, opt, map, hooks, X, n, tg,
                                       order, batch, progress, ctx, res);
}
