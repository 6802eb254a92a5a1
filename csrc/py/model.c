/*
 * model.c: the Model type: a graph of layers run by the core's engine,
 * with one block for all parameters and one for all gradients (the
 * layers' memory moves into them). Sequential is a Model whose graph is
 * a chain, built by the Python package.
 *
 *   forward   -> nn_graph_forward    (keeps the values for backward)
 *   _predict  -> nn_graph_forward    (keeps nothing)
 *   backward  -> nn_graph_backward
 *   train_step -> nn_graph_train_step, one epoch of fit -> nn_graph_fit_epoch
 *
 * Calls that only read the parameters (forward, _predict) may run from
 * several threads at once, each on a workspace of its own (kept in a
 * pool and reused); calls that write them (backward, training, zero_grad)
 * run alone. Both kinds claim the model and each of its layers.
 */
#include "binding.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define LAYER(self, i) ((LayerObject *)PyTuple_GET_ITEM((self)->layers, (i)))
#define N_LAYERS(self) PyTuple_GET_SIZE((self)->layers)

/* ---- claims ---- */

/* The model and every layer in it, for reading or writing */
static int claim_model(nn_module_state *st, ModelObject *self, int write)
{
    Py_ssize_t i, j;
    if (!self->graph_ready) {
        PyErr_SetString(PyExc_RuntimeError, "the model was not initialised");
        return -1;
    }
    if (nn_users_claim(st, &self->users, write, "this model") < 0)
        return -1;
    for (i = 0; i < N_LAYERS(self); i++) {
        if (nn_users_claim(st, &LAYER(self, i)->users, write,
                           "a layer of this model (another model, an "
                           "optimizer or a direct call holds it)") < 0) {
            for (j = 0; j < i; j++)
                nn_users_release(&LAYER(self, j)->users, write);
            nn_users_release(&self->users, write);
            return -1;
        }
    }
    return 0;
}

static void release_model(ModelObject *self, int write)
{
    Py_ssize_t i;
    for (i = 0; i < N_LAYERS(self); i++)
        nn_users_release(&LAYER(self, i)->users, write);
    nn_users_release(&self->users, write);
}

/* ---- construction ---- */

/* Move every layer's parameters and gradients into one block each (the
 * block the model's views and gradient exchange use). */
static int pack_parameters(ModelObject *self, nn_module_state *st)
{
    Py_ssize_t i, n = N_LAYERS(self);
    size_t es = nn_dtype_size(self->dtype), total = 0, off = 0;
    PyObject *pbuf, *gbuf;
    for (i = 0; i < n; i++)
        total += nn_layer_param_count(&LAYER(self, i)->L);
    pbuf = nn_buffer_new(st, total * es);
    gbuf = pbuf ? nn_buffer_new(st, total * es) : NULL;
    if (!gbuf) {
        Py_XDECREF(pbuf);
        return -1;
    }
    for (i = 0; i < n; i++) {
        LayerObject *ly = LAYER(self, i);
        size_t cnt = nn_layer_param_count(&ly->L);
        if (cnt == 0)
            continue;
        if (nn_layer_move_params(ly, pbuf,
                                 (char *)((BufferObject *)pbuf)->data + off * es,
                                 gbuf,
                                 (char *)((BufferObject *)gbuf)->data +
                                     off * es) < 0) {
            Py_DECREF(pbuf);
            Py_DECREF(gbuf);
            return -1;
        }
        off += cnt;
        /* a layer written in Python rebinds attributes that held views */
        if (ly->L.kind == NN_EXTERNAL) {
            PyObject *r = PyObject_CallMethod((PyObject *)ly, "_params_moved",
                                              NULL);
            if (!r) {
                Py_DECREF(pbuf);
                Py_DECREF(gbuf);
                return -1;
            }
            Py_DECREF(r);
        }
    }
    Py_XSETREF(self->pbuf, pbuf);
    Py_XSETREF(self->gbuf, gbuf);
    return 0;
}

/* 1 when every layer's parameters are in this model's block */
static int packed(ModelObject *self)
{
    Py_ssize_t i;
    for (i = 0; i < N_LAYERS(self); i++) {
        LayerObject *ly = LAYER(self, i);
        if (ly->L.n_params && ly->pbuf != self->pbuf)
            return 0;
    }
    return 1;
}

/* What messages call node k; past the nodes, input k - nodes
 * (node_names labels the nodes, then maybe the inputs) */
static PyObject *node_label(ModelObject *self, size_t k)
{
    size_t names = (size_t)PyTuple_GET_SIZE(self->node_names);
    if (k < names)
        return Py_NewRef(PyTuple_GET_ITEM(self->node_names, (Py_ssize_t)k));
    if (k < self->n_nodes)
        return PyUnicode_FromFormat("node %zu", k);
    return PyUnicode_FromFormat("input %zu", k - self->n_nodes);
}


/* A size from an int >= 1, or 0 from None */
static int parse_width(PyObject *o, size_t *out)
{
    Py_ssize_t v;
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    if (!PyIndex_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError,
                     "an input width must be a positive int or None, got "
                     "%.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    v = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 1 || v > INT_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "an input width must be in [1, %d], got %zd", INT_MAX, v);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static Py_ssize_t index_in(PyObject *o, Py_ssize_t limit, const char *what)
{
    Py_ssize_t v = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v >= limit) {
        PyErr_Format(PyExc_ValueError, "%s %zd is out of range [0, %zd)",
                     what, v, limit);
        return -1;
    }
    return v;
}

/* The layers' common dtype (those with one), or dt_in; -1 with an error
 * when they disagree */
static int common_dtype(PyObject *layers, int dt)
{
    Py_ssize_t i;
    for (i = 0; i < PyTuple_GET_SIZE(layers); i++) {
        LayerObject *ly = (LayerObject *)PyTuple_GET_ITEM(layers, i);
        if (ly->dtype < 0)
            continue;
        if (dt >= 0 && dt != ly->dtype) {
            PyErr_Format(PyExc_TypeError,
                         "mixed dtypes: layer %zd (%R) is %s but the model "
                         "is %s; all layers of a model share one dtype", i,
                         (PyObject *)ly,
                         ly->dtype == NN_F32 ? "float32" : "float64",
                         dt == NN_F32 ? "float32" : "float64");
            return -2;
        }
        dt = ly->dtype;
    }
    return dt < 0 ? NN_F32 : dt;
}

/* The graph's structure from Python sequences into C arrays, then
 * nn_graph_init; errors name the node. */
static int build_graph(ModelObject *self, PyObject *nodes, PyObject *inputs,
                       PyObject *outputs)
{
    Py_ssize_t K = PySequence_Fast_GET_SIZE(nodes), I, O, k, e, total = 0;
    nn_layer **lp = NULL;
    size_t *n_in = NULL, *edges = NULL, *outs = NULL, *in_w = NULL, bad = 0;
    const char *what = "";
    int rc = -1;
    nn_status s;
    I = PySequence_Fast_GET_SIZE(inputs);
    O = PySequence_Fast_GET_SIZE(outputs);
    if (K == 0 || I == 0 || O == 0 || I > 64 || O > 64) {
        PyErr_Format(PyExc_ValueError,
                     "a model needs at least one layer, one input and one "
                     "output, and at most 64 inputs and outputs (got %zd, "
                     "%zd, %zd)", K, I, O);
        return -1;
    }
    lp = PyMem_Calloc((size_t)K, sizeof *lp);
    n_in = PyMem_Calloc((size_t)K, sizeof *n_in);
    outs = PyMem_Calloc((size_t)O, sizeof *outs);
    in_w = PyMem_Calloc((size_t)I, sizeof *in_w);
    if (!lp || !n_in || !outs || !in_w) {
        PyErr_NoMemory();
        goto exit;
    }
    for (k = 0; k < I; k++)
        if (parse_width(PySequence_Fast_GET_ITEM(inputs, k), &in_w[k]) < 0)
            goto exit;
    for (k = 0; k < K; k++) {
        PyObject *nd = PySequence_Fast_GET_ITEM(nodes, k), *ins;
        Py_ssize_t li;
        if (!PyTuple_Check(nd) || PyTuple_GET_SIZE(nd) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "node %zd must be a (layer index, inputs) pair", k);
            goto exit;
        }
        li = index_in(PyTuple_GET_ITEM(nd, 0), N_LAYERS(self), "layer index");
        if (li < 0)
            goto exit;
        lp[k] = &LAYER(self, li)->L;
        ins = PyTuple_GET_ITEM(nd, 1);
        if (!PyTuple_Check(ins)) {
            PyErr_Format(PyExc_TypeError,
                         "node %zd's inputs must be a tuple of value indices",
                         k);
            goto exit;
        }
        n_in[k] = (size_t)PyTuple_GET_SIZE(ins);
        total += PyTuple_GET_SIZE(ins);
    }
    edges = PyMem_Calloc((size_t)total + 1, sizeof *edges);
    if (!edges) {
        PyErr_NoMemory();
        goto exit;
    }
    for (k = 0, total = 0; k < K; k++) {
        PyObject *ins = PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(nodes, k), 1);
        for (e = 0; e < PyTuple_GET_SIZE(ins); e++) {
            Py_ssize_t v = index_in(PyTuple_GET_ITEM(ins, e), I + K,
                                    "a node's input value");
            if (v < 0)
                goto exit;
            edges[total++] = (size_t)v;
        }
    }
    for (k = 0; k < O; k++) {
        Py_ssize_t v = index_in(PySequence_Fast_GET_ITEM(outputs, k), I + K,
                                "an output value");
        if (v < 0)
            goto exit;
        outs[k] = (size_t)v;
    }
    s = nn_graph_init(&self->g, self->dtype, (size_t)I, in_w, (size_t)K, lp,
                      n_in, edges, (size_t)O, outs, &bad, &what);
    if (s == NN_ERR_NOMEM) {
        PyErr_NoMemory();
        goto exit;
    }
    if (s == NN_ERR_EXTERNAL)
        goto exit;   /* a Python layer's output_width raised */
    if (s != NN_OK) {
        PyObject *label = node_label(self, bad);
        if (label) {
            if (s == NN_ERR_SHAPE && bad < (size_t)K)
                PyErr_Format(PyExc_ValueError,
                             "%U (%R): the widths of its inputs do not fit "
                             "its layer", label, LAYER_OBJECT(lp[bad]));
            else
                PyErr_Format(PyExc_ValueError, "%U %s", label, what);
            Py_DECREF(label);
        }
        goto exit;
    }
    self->graph_ready = 1;
    rc = 0;
exit:
    PyMem_Free(lp);
    PyMem_Free(n_in);
    PyMem_Free(edges);
    PyMem_Free(outs);
    PyMem_Free(in_w);
    return rc;
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"layers", "nodes", "inputs", "outputs", "names",
                             "dtype", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *layers_o, *nodes_o, *inputs_o, *outputs_o, *names_o = Py_None,
             *dtype_o = Py_None, *layers = NULL, *nodes = NULL,
             *inputs = NULL, *outputs = NULL;
    Py_ssize_t i, j;
    int dt = -1, rc = -1;
    if (!st)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OO:Model", kwlist,
                                     &layers_o, &nodes_o, &inputs_o,
                                     &outputs_o, &names_o, &dtype_o))
        return -1;
    if (self->layers) {
        PyErr_SetString(PyExc_RuntimeError, "a Model is initialised once");
        return -1;
    }
    if (nn_dtype_from_object(dtype_o, &dt, 1) < 0)
        return -1;
    layers = PySequence_Tuple(layers_o);
    nodes = layers ? PySequence_Fast(nodes_o, "nodes must be a sequence")
                   : NULL;
    inputs = nodes ? PySequence_Fast(inputs_o, "inputs must be a sequence")
                   : NULL;
    outputs = inputs ? PySequence_Fast(outputs_o,
                                       "outputs must be a sequence")
                     : NULL;
    if (!outputs)
        goto exit;
    for (i = 0; i < PyTuple_GET_SIZE(layers); i++) {
        PyObject *o = PyTuple_GET_ITEM(layers, i);
        if (!nn_layer_check(o, st)) {
            PyErr_Format(PyExc_TypeError,
                         "a model takes nnlayers Layer objects; layer %zd is "
                         "%.100s", i, Py_TYPE(o)->tp_name);
            goto exit;
        }
        for (j = 0; j < i; j++)
            if (PyTuple_GET_ITEM(layers, j) == o) {
                PyErr_Format(PyExc_ValueError,
                             "the layer table lists layer %zd twice", i);
                goto exit;
            }
        if (nn_layer_initialised((LayerObject *)o) < 0)
            goto exit;
        if (((LayerObject *)o)->users.writer ||
            ((LayerObject *)o)->users.readers) {
            PyErr_Format(st->BusyError,
                         "layer %zd (%R) is in use by another thread", i, o);
            goto exit;
        }
    }
    dt = common_dtype(layers, dt);
    if (dt < 0)
        goto exit;
    self->dtype = (nn_dtype)dt;
    self->layers = Py_NewRef(layers);
    if (names_o != Py_None) {
        self->node_names = PySequence_Tuple(names_o);
        if (!self->node_names)
            goto exit;
        if (PyTuple_GET_SIZE(self->node_names) !=
                PySequence_Fast_GET_SIZE(nodes) &&
            PyTuple_GET_SIZE(self->node_names) !=
                PySequence_Fast_GET_SIZE(nodes) +
                    PySequence_Fast_GET_SIZE(inputs)) {
            PyErr_SetString(PyExc_ValueError,
                            "names must give one name per node (and maybe "
                            "per input after them)");
            goto exit;
        }
    } else {
        self->node_names = PyTuple_New(0);
        if (!self->node_names)
            goto exit;
    }
    self->n_nodes = (size_t)PySequence_Fast_GET_SIZE(nodes);
    if (build_graph(self, nodes, inputs, outputs) < 0)
        goto exit;
    if (pack_parameters(self, st) < 0)
        goto exit;
    for (i = 0; i < N_LAYERS(self); i++)   /* layers without a dtype adopt ours */
        if (LAYER(self, i)->dtype < 0)
            LAYER(self, i)->model_dtype = (int)self->dtype;
    self->run.seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)self;
    self->training = 1;   /* torch's default mode */
    for (i = 0; i < N_LAYERS(self); i++)
        LAYER(self, i)->n_models++;
    self->joined = 1;
    rc = 0;
exit:
    Py_XDECREF(layers);
    Py_XDECREF(nodes);
    Py_XDECREF(inputs);
    Py_XDECREF(outputs);
    return rc;
}

static int Model_traverse(ModelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->layers);
    Py_VISIT(self->node_names);
    Py_VISIT(self->pbuf);
    Py_VISIT(self->gbuf);
    Py_VISIT(self->saved_inputs);
    return 0;
}

static int Model_clear(ModelObject *self)
{
    Py_CLEAR(self->saved_inputs);
    return 0;
}

static void free_workspaces(ModelObject *self)
{
    Py_ssize_t i;
    for (i = 0; i < self->n_spare; i++) {
        nn_ws_free(self->spare[i]);
        PyMem_Free(self->spare[i]);
    }
    PyMem_Free(self->spare);
    self->spare = NULL;
    self->n_spare = self->cap_spare = 0;
    if (self->saved_ws) {
        nn_ws_free(self->saved_ws);
        PyMem_Free(self->saved_ws);
        self->saved_ws = NULL;
    }
    if (self->train_ws_ready)
        nn_ws_free(&self->train_ws);
    self->train_ws_ready = 0;
}

static void Model_dealloc(ModelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    Model_clear(self);
    free_workspaces(self);
    if (self->joined) {
        Py_ssize_t i;
        for (i = 0; i < N_LAYERS(self); i++)
            LAYER(self, i)->n_models--;
    }
    nn_optmap_free(&self->map);
    if (self->graph_ready)
        nn_graph_free(&self->g);
    Py_CLEAR(self->layers);
    Py_CLEAR(self->node_names);
    Py_CLEAR(self->pbuf);
    Py_CLEAR(self->gbuf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- workspaces ---- */

/* A workspace for one forward call: a spare one, or a new one */
static nn_ws *take_workspace(ModelObject *self)
{
    nn_ws *ws;
    if (self->n_spare > 0)
        return self->spare[--self->n_spare];
    ws = PyMem_Malloc(sizeof *ws);
    if (!ws || nn_ws_init(ws, &self->g) != NN_OK) {
        PyMem_Free(ws);
        PyErr_NoMemory();
        return NULL;
    }
    return ws;
}

static void give_back_workspace(ModelObject *self, nn_ws *ws)
{
    if (!ws)
        return;
    if (self->n_spare == self->cap_spare) {
        Py_ssize_t cap = self->cap_spare ? 2 * self->cap_spare : 4;
        nn_ws **p = PyMem_Realloc(self->spare, (size_t)cap * sizeof *p);
        if (!p) {   /* no room to keep it: free it */
            nn_ws_free(ws);
            PyMem_Free(ws);
            return;
        }
        self->spare = p;
        self->cap_spare = cap;
    }
    self->spare[self->n_spare++] = ws;
}

/* Forget the last forward (its workspace goes back to the pool) */
static void drop_saved(ModelObject *self)
{
    give_back_workspace(self, self->saved_ws);
    self->saved_ws = NULL;
    Py_CLEAR(self->saved_inputs);
}

static int ensure_train_ws(ModelObject *self)
{
    if (self->train_ws_ready)
        return 0;
    if (nn_ws_init(&self->train_ws, &self->g) != NN_OK) {
        PyErr_NoMemory();
        return -1;
    }
    self->train_ws_ready = 1;
    return 0;
}

/* ---- inputs ---- */

/* A message for input widths the graph refuses: node `bad` (or, past the
 * nodes, an input of fixed width) got `got` columns at its input bad_in */
static void resolve_error(ModelObject *self, const char *name,
                          const size_t *w, size_t bad, size_t bad_in,
                          size_t got)
{
    const nn_node *nd;
    PyObject *layer, *label;
    if (bad >= self->g.n_nodes) {
        size_t i = bad - self->g.n_nodes;
        PyErr_Format(PyExc_ValueError,
                     "%s%s has %zu columns, but the model's input %zu takes "
                     "%zu", name, self->g.n_inputs > 1 ? "[i]" : "", w[i], i,
                     self->g.in_width[i]);
        return;
    }
    nd = &self->g.nodes[bad];
    layer = LAYER_OBJECT(nd->layer);
    label = node_label(self, bad);
    if (!label)
        return;
    if (nn_op_of(nd->layer->kind)->config & NN_CFG_IN)
        PyErr_Format(PyExc_ValueError,
                     "%s has %zu columns, but %U (%R) expects an input width "
                     "of %zu (it receives %zu)", name, w[0], label, layer,
                     nd->layer->in, got);
    else
        PyErr_Format(PyExc_ValueError,
                     "%s has %zu columns, but %U (%R) cannot take an input "
                     "of width %zu at its input %zu (the widths of a merge's "
                     "inputs must fit together)", name, w[0], label, layer,
                     got, bad_in);
    Py_DECREF(label);
}

/* Input j of x: x itself for a model of one input, else item j of the
 * list or tuple x (borrowed), checked to be no symbolic tensor */
static PyObject *input_item(ModelObject *self, PyObject *x, size_t j,
                            const char *name)
{
    PyObject *o = self->g.n_inputs == 1 ? x : PySequence_Fast_GET_ITEM(x, j);
    if (!PyArray_Check(o) && PyObject_HasAttrString(o, "_nnlayers_symbolic")) {
        PyErr_Format(PyExc_TypeError,
                     "%s: got a symbolic tensor (%R); forward, predict and "
                     "training take NumPy arrays (symbolic tensors build "
                     "models: nl.Model(inputs, outputs))", name, o);
        return NULL;
    }
    return o;
}

static void free_arrays(PyArrayObject **a, size_t n)
{
    size_t j;
    for (j = 0; j < n; j++)
        Py_CLEAR(a[j]);
}

/* The model's inputs as the core reads them into arrs[0..n_inputs) (new
 * references): 2-D arrays of the model's dtype with one row count (*N),
 * the graph's widths resolved for them. x is one array for a model of one
 * input, a list or tuple of arrays otherwise. */
static int model_inputs(ModelObject *self, nn_module_state *st, PyObject *x,
                        const char *name, size_t *N, PyArrayObject **arrs)
{
    size_t I = self->g.n_inputs, j, w[64], bad = 0, bad_in = 0, got = 0;
    PyObject *seq = NULL;
    nn_status s;
    for (j = 0; j < I; j++)
        arrs[j] = NULL;
    if (I > 1) {
        if (!PyList_Check(x) && !PyTuple_Check(x)) {
            PyErr_Format(PyExc_TypeError,
                         "%s: this model has %zu inputs, so it takes a list "
                         "of %zu arrays, got %.100s", name, I, I,
                         Py_TYPE(x)->tp_name);
            return -1;
        }
        if ((size_t)PySequence_Fast_GET_SIZE(x) != I) {
            PyErr_Format(PyExc_ValueError,
                         "%s: this model has %zu inputs, got a list of %zd "
                         "arrays", name, I, PySequence_Fast_GET_SIZE(x));
            return -1;
        }
        seq = x;
    }
    for (j = 0; j < I; j++) {
        PyObject *o = input_item(self, seq ? seq : x, j, name);
        if (!o)
            goto fail;
        arrs[j] = nn_as_input(o, self->dtype, name, 2);
        if (!arrs[j])
            goto fail;
        if (j > 0 && (size_t)PyArray_DIM(arrs[j], 0) != *N) {
            PyErr_Format(PyExc_ValueError,
                         "%s: input %zu has %zd rows but input 0 has %zu; "
                         "every input has one row per sample", name, j,
                         PyArray_DIM(arrs[j], 0), *N);
            goto fail;
        }
        *N = (size_t)PyArray_DIM(arrs[j], 0);
        w[j] = (size_t)PyArray_DIM(arrs[j], 1);
    }
    /* new widths change the plan every call reads: not while others run */
    if (self->g.resolved) {
        for (j = 0; j < I && self->g.width[j] == w[j]; j++)
            ;
        if (j < I && self->users.readers + self->users.writer > 1) {
            PyErr_Format(st->BusyError,
                         "%s: the model is in use by another thread with "
                         "inputs of other widths", name);
            goto fail;
        }
    }
    s = nn_graph_resolve(&self->g, w, &bad, &bad_in, &got);
    if (s == NN_ERR_NOMEM) {
        PyErr_NoMemory();
        goto fail;
    }
    if (s == NN_ERR_EXTERNAL)
        goto fail;   /* a Python layer's output_width raised */
    if (s != NN_OK) {
        resolve_error(self, name, w, bad, bad_in, got);
        goto fail;
    }
    return 0;
fail:
    free_arrays(arrs, I);
    return -1;
}

static void input_pointers(PyArrayObject **arrs, size_t n, const void **p)
{
    size_t j;
    for (j = 0; j < n; j++)
        p[j] = PyArray_DATA(arrs[j]);
}

/* One array for a model of one output (or input), a list otherwise */
static PyObject *one_or_list(PyObject *tuple, size_t n)
{
    if (n == 1)
        return Py_NewRef(PyTuple_GET_ITEM(tuple, 0));
    return PySequence_List(tuple);
}

/* ---- forward, predict, backward ---- */

/* 1 when a forward in training mode changes buffers (BatchNorm's running
 * statistics): such a forward writes the model */
static int has_buffers(ModelObject *self)
{
    Py_ssize_t i;
    for (i = 0; i < N_LAYERS(self); i++)
        if (nn_layer_buffer_count(&LAYER(self, i)->L) > 0)
            return 1;
    return 0;
}

static PyObject *run_forward(ModelObject *self, PyObject *x, int keep)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    int write = keep && self->training && has_buffers(self);
    PyObject *outs = NULL, *result = NULL;
    PyArrayObject *arrs[64];
    const void *xp[64];
    void *op[64];
    nn_ws *ws = NULL;
    nn_run run;
    size_t N = 0, j, I = self->g.n_inputs;
    nn_status s;
    if (!st || claim_model(st, self, write) < 0)
        return NULL;
    if (model_inputs(self, st, x, "x", &N, arrs) < 0) {
        release_model(self, write);
        return NULL;
    }
    outs = PyTuple_New((Py_ssize_t)self->g.n_outputs);
    if (!outs)
        goto exit;
    for (j = 0; j < self->g.n_outputs; j++) {
        PyArrayObject *o = nn_new_array(
            self->dtype, (npy_intp)N,
            (npy_intp)self->g.width[self->g.outputs[j]]);
        if (!o)
            goto exit;
        PyTuple_SET_ITEM(outs, j, (PyObject *)o);
        op[j] = PyArray_DATA(o);
    }
    ws = take_workspace(self);
    if (!ws)
        goto exit;
    input_pointers(arrs, I, xp);
    run = self->run;
    run.training = keep && self->training ? 1 : 0;   /* predict: eval */
    Py_BEGIN_ALLOW_THREADS
    s = nn_graph_forward(&self->g, ws, &run, xp, N, op);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "forward");
        goto exit;
    }
    if (run.training)   /* the next one draws new random masks */
        self->run.step++;
    if (keep) {   /* this forward is the one a backward follows */
        PyObject *kept = PyTuple_New((Py_ssize_t)I);
        if (!kept)
            goto exit;
        for (j = 0; j < I; j++)
            PyTuple_SET_ITEM(kept, j, Py_NewRef(arrs[j]));
        drop_saved(self);
        self->saved_ws = ws;
        self->saved_inputs = kept;
        ws = NULL;
    }
    result = one_or_list(outs, self->g.n_outputs);
exit:
    give_back_workspace(self, ws);
    free_arrays(arrs, I);
    Py_XDECREF(outs);
    release_model(self, write);
    return result;
}

static PyObject *Model_forward(ModelObject *self, PyObject *x)
{
    return run_forward(self, x, 1);
}

static PyObject *Model_predict_c(ModelObject *self, PyObject *x)
{
    return run_forward(self, x, 0);
}

static PyObject *Model_call(ModelObject *self, PyObject *args, PyObject *kw)
{
    PyObject *x;
    static char *kwlist[] = {"x", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:__call__", kwlist, &x))
        return NULL;
    return Model_forward(self, x);
}

static PyObject *Model_backward(ModelObject *self, PyObject *gout)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *items = NULL, *garr = NULL, *gx = NULL, *result = NULL;
    const void *gp[64];
    void *dxp[64];
    size_t j, N, O = self->g.n_outputs, I = self->g.n_inputs;
    nn_status s;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    if (!self->saved_ws) {
        PyErr_SetString(PyExc_ValueError,
                        "backward() needs a forward() first: the VJP is "
                        "taken at the last forward's input (and each forward "
                        "serves one backward)");
        goto exit;
    }
    N = self->saved_ws->rows;
    if (O == 1) {
        items = PyTuple_Pack(1, gout);
    } else if (PyList_Check(gout) || PyTuple_Check(gout)) {
        items = PySequence_Tuple(gout);
        if (items && (size_t)PyTuple_GET_SIZE(items) != O) {
            PyErr_Format(PyExc_ValueError,
                         "grad_output: this model has %zu outputs, got a "
                         "list of %zd gradients", O, PyTuple_GET_SIZE(items));
            Py_CLEAR(items);
        }
    } else {
        PyErr_Format(PyExc_TypeError,
                     "grad_output: this model has %zu outputs, so backward "
                     "takes a list of %zu gradients", O, O);
    }
    if (!items)
        goto exit;
    garr = PyTuple_New((Py_ssize_t)O);
    gx = PyTuple_New((Py_ssize_t)I);
    if (!garr || !gx)
        goto exit;
    for (j = 0; j < O; j++) {
        size_t W = self->g.width[self->g.outputs[j]];
        PyArrayObject *a = nn_as_input(PyTuple_GET_ITEM(items, j),
                                       self->dtype, "grad_output", 2);
        if (!a)
            goto exit;
        PyTuple_SET_ITEM(garr, j, (PyObject *)a);
        if ((size_t)PyArray_DIM(a, 0) != N || (size_t)PyArray_DIM(a, 1) != W) {
            PyErr_Format(PyExc_ValueError,
                         "grad_output%s must have the shape of the last "
                         "forward's output (%zu, %zu), got (%zd, %zd)",
                         O > 1 ? "[j]" : "", N, W, PyArray_DIM(a, 0),
                         PyArray_DIM(a, 1));
            goto exit;
        }
        gp[j] = PyArray_DATA(a);
    }
    for (j = 0; j < I; j++) {
        PyArrayObject *a = nn_new_array(self->dtype, (npy_intp)N,
                                        (npy_intp)self->g.width[j]);
        if (!a)
            goto exit;
        PyTuple_SET_ITEM(gx, j, (PyObject *)a);
        dxp[j] = PyArray_DATA(a);
    }
    Py_BEGIN_ALLOW_THREADS
    s = nn_graph_backward(&self->g, self->saved_ws, gp, dxp);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "backward");
        goto exit;
    }
    drop_saved(self);
    result = one_or_list(gx, I);
exit:
    Py_XDECREF(items);
    Py_XDECREF(garr);
    Py_XDECREF(gx);
    release_model(self, 1);
    return result;
}

static PyObject *Model_check_idle(ModelObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    (void)na;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    release_model(self, 1);
    Py_RETURN_NONE;
}

static PyObject *Model_zero_grad(ModelObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    Py_ssize_t i;
    size_t k;
    (void)na;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    for (i = 0; i < N_LAYERS(self); i++) {
        LayerObject *ly = LAYER(self, i);
        for (k = 0; k < ly->L.n_params; k++)
            memset(ly->L.t[k].grad, 0, ly->L.t[k].n * nn_dtype_size(self->dtype));
    }
    release_model(self, 1);
    Py_RETURN_NONE;
}

/* ---- training ---- */

/* The fix when output j's last layer (kind) and its loss would apply the
 * same function twice (Sigmoid then BinaryCrossEntropy on logits, Softmax
 * then SoftmaxCrossEntropy on logits, LogSoftmax then SoftmaxCrossEntropy)
 * or feed a loss what it does not take (Softmax's probabilities to NLL,
 * which takes log-probabilities); NULL when they fit. */
static const char *output_loss_mismatch(nn_kind last, nn_loss_kind loss)
{
    if (last == NN_SIGMOID && loss == NN_LOSS_BINARY_XENT)
        return "the loss applies the sigmoid itself: remove the final "
               "Sigmoid (the model then outputs logits), or use "
               "BinaryCrossEntropy(from_logits=False)";
    if (last == NN_SOFTMAX && loss == NN_LOSS_SOFTMAX_XENT)
        return "the loss applies the softmax itself: remove the final "
               "Softmax (the model then outputs logits), or use "
               "SoftmaxCrossEntropy(from_logits=False)";
    if (last == NN_LOG_SOFTMAX && (loss == NN_LOSS_SOFTMAX_XENT ||
                                   loss == NN_LOSS_CATEGORICAL_XENT))
        return "LogSoftmax outputs log-probabilities: use NLL() as the "
               "loss, or remove the final LogSoftmax and keep "
               "SoftmaxCrossEntropy()";
    if (last == NN_SOFTMAX && loss == NN_LOSS_NLL)
        return "NLL takes log-probabilities and Softmax outputs "
               "probabilities: use LogSoftmax as the last layer, or "
               "SoftmaxCrossEntropy(from_logits=False)";
    return NULL;
}

/* ValueError when output j's last layer and loss l do not go together */
static int check_output_loss(ModelObject *self, size_t j, PyObject *l)
{
    size_t v = self->g.outputs[j];
    const nn_layer *last;
    const char *fix;
    PyObject *name;
    if (v < self->g.n_inputs)
        return 0;
    last = self->g.nodes[v - self->g.n_inputs].layer;
    fix = output_loss_mismatch(last->kind, ((LossObject *)l)->kind);
    if (!fix)
        return 0;
    name = PyObject_GetAttrString(LAYER_OBJECT(last), "name");
    if (name)
        PyErr_Format(PyExc_ValueError,
                     "loss %R does not fit the model's output %zu, which "
                     "comes from layer %R (%R): %s", l, j, name,
                     LAYER_OBJECT(last), fix);
    Py_XDECREF(name);
    return -1;
}

/* The losses per output from `loss` (one Loss for every output, or a
 * list of one per output), their arguments (Huber's delta) and their
 * weights (None: all 1); each checked against its output's last layer */
static int parse_losses(ModelObject *self, nn_module_state *st,
                        PyObject *loss_o, PyObject *weights_o,
                        nn_loss_kind *kinds, double *args, double *weights)
{
    size_t j, O = self->g.n_outputs;
    int listed = (PyList_Check(loss_o) || PyTuple_Check(loss_o)) &&
                 (O > 1 || PySequence_Size(loss_o) == 1);
    if (listed && (size_t)PySequence_Size(loss_o) != O) {
        PyErr_Format(PyExc_ValueError,
                     "loss: this model has %zu outputs, got a list of %zd "
                     "losses (give one per output, or one for all)", O,
                     PySequence_Size(loss_o));
        return -1;
    }
    for (j = 0; j < O; j++) {
        PyObject *l = listed ? PySequence_Fast_GET_ITEM(loss_o, j) : loss_o;
        if (!PyObject_TypeCheck(l, st->LossType)) {
            PyErr_Format(PyExc_TypeError,
                         "loss must be an nnlayers loss (e.g. "
                         "nnlayers.SoftmaxCrossEntropy()), got %.100s",
                         Py_TYPE(l)->tp_name);
            return -1;
        }
        if (check_output_loss(self, j, l) < 0)
            return -1;
        kinds[j] = ((LossObject *)l)->kind;
        args[j] = ((LossObject *)l)->arg;
        weights[j] = 1;
    }
    if (weights_o == Py_None)
        return 0;
    if ((size_t)PySequence_Size(weights_o) != O) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "loss_weights must give one weight per output (%zu)", O);
        return -1;
    }
    for (j = 0; j < O; j++) {
        PyObject *w = PySequence_GetItem(weights_o, (Py_ssize_t)j);
        double v = w ? PyFloat_AsDouble(w) : -1;
        Py_XDECREF(w);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (!isfinite(v) || v < 0) {
            PyErr_Format(PyExc_ValueError,
                         "loss_weights[%zu] must be a finite number >= 0", j);
            return -1;
        }
        weights[j] = v;
    }
    return 0;
}

/* Targets per output, validated against the outputs' widths: y is one
 * array for one output, a list otherwise. labels/dense receive new
 * references (one of each pair NULL). */
static int prepare_targets(ModelObject *self, PyObject *y, size_t N,
                           const nn_loss_kind *kinds, const char *name,
                           PyArrayObject **labels, PyArrayObject **dense)
{
    size_t j, O = self->g.n_outputs;
    for (j = 0; j < O; j++) {
        PyObject *t = y;
        if (O > 1) {
            if ((!PyList_Check(y) && !PyTuple_Check(y)) ||
                (size_t)PySequence_Size(y) != O) {
                PyErr_Format(PyExc_ValueError,
                             "%s: this model has %zu outputs, so it takes a "
                             "list of %zu targets", name, O, O);
                return -1;
            }
            t = PySequence_Fast_GET_ITEM(y, j);
        }
        if (nn_prepare_target(t, kinds[j], self->dtype, N,
                              self->g.width[self->g.outputs[j]], name,
                              &labels[j], &dense[j]) < 0)
            return -1;
    }
    return 0;
}

/* The optimizer checked against this model, and claimed */
static OptimizerObject *claim_optimizer(ModelObject *self, nn_module_state *st,
                                        PyObject *opt_o)
{
    OptimizerObject *opt = (OptimizerObject *)opt_o;
    if (!PyObject_TypeCheck(opt_o, st->OptimizerType)) {
        PyErr_Format(PyExc_TypeError,
                     "optimizer must be an nnlayers optimizer (e.g. "
                     "nnlayers.SGD(model, lr=0.01)), got %.100s",
                     Py_TYPE(opt_o)->tp_name);
        return NULL;
    }
    if (!opt->layers) {
        PyErr_SetString(PyExc_RuntimeError, "the optimizer was not "
                        "initialised");
        return NULL;
    }
    if (opt->opt.dtype != self->dtype && PyTuple_GET_SIZE(opt->layers)) {
        PyErr_SetString(PyExc_TypeError,
                        "optimizer and model have different dtypes");
        return NULL;
    }
    if (nn_claim(st, &opt->busy, "the optimizer") < 0)
        return NULL;
    return opt;
}

/* Everything a training call needs, checked before anything changes */
typedef struct {
    PyArrayObject *inputs[64];         /* the model's inputs */
    PyArrayObject *labels[64], *dense[64];
    nn_loss_kind kinds[64];
    double args[64];                   /* the losses' (Huber's delta) */
    unsigned metrics[64];              /* metrics asked for (fit only) */
    double weights[64];
    const int64_t *lp[64];
    const void *tp[64];
    const void *xp[64];
    nn_targets tg;
    size_t N;
    OptimizerObject *opt;
} train_args;

static void train_args_free(ModelObject *self, train_args *a)
{
    size_t j;
    free_arrays(a->inputs, self->g.n_inputs);
    for (j = 0; j < self->g.n_outputs; j++) {
        Py_CLEAR(a->labels[j]);
        Py_CLEAR(a->dense[j]);
    }
    if (a->opt)
        nn_release(&a->opt->busy);
    a->opt = NULL;
    (void)self;
}

static int train_args_prepare(ModelObject *self, nn_module_state *st,
                              train_args *a, PyObject *x, PyObject *y,
                              PyObject *loss, PyObject *opt,
                              PyObject *weights, const char *xname,
                              const char *yname)
{
    size_t j;
    a->opt = NULL;
    for (j = 0; j < self->g.n_inputs; j++)
        a->inputs[j] = NULL;
    for (j = 0; j < self->g.n_outputs; j++)
        a->labels[j] = a->dense[j] = NULL;
    if (parse_losses(self, st, loss, weights, a->kinds, a->args,
                     a->weights) < 0)
        return -1;
    a->opt = claim_optimizer(self, st, opt);
    if (!a->opt)
        return -1;
    if (model_inputs(self, st, x, xname, &a->N, a->inputs) < 0)
        return -1;
    if (prepare_targets(self, y, a->N, a->kinds, yname, a->labels,
                        a->dense) < 0)
        return -1;
    /* everything checked: the optimizer's segments for this graph (the
     * first time, an allocation) */
    if (nn_optmap_bind(&self->map, &self->g, &a->opt->opt) != NN_OK) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->map.n_mapped == 0 && ((BufferObject *)self->pbuf)->nbytes > 0) {
        PyErr_SetString(PyExc_ValueError,
                        "optimizer holds none of this model's layers; make "
                        "it with an nnlayers optimizer over this model, e.g. "
                        "nnlayers.SGD(model, lr=...)");
        return -1;
    }
    input_pointers(a->inputs, self->g.n_inputs, a->xp);
    for (j = 0; j < self->g.n_outputs; j++) {
        a->lp[j] = a->labels[j] ? PyArray_DATA(a->labels[j]) : NULL;
        a->tp[j] = a->dense[j] ? PyArray_DATA(a->dense[j]) : NULL;
    }
    a->tg.kind = a->kinds;
    a->tg.arg = a->args;
    a->tg.metrics = NULL;   /* Model_fit_epoch sets them when asked */
    a->tg.weight = a->weights;
    a->tg.labels = a->lp;
    a->tg.T = a->tp;
    a->tg.w = NULL;
    return ensure_train_ws(self);
}

/* The hot call of a training loop: vectorcall, so no argument tuple. */
static PyObject *Model_train_step(ModelObject *self, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"x", "y", "loss", "optimizer",
                                        "sample_weight"};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *a[5], *result = NULL;
    PyArrayObject *sw = NULL;
    double sums[64];
    nn_step_result res;
    train_args ta;
    nn_status s;
    if (nn_fast_args("train_step", args, nargs, kwnames, names, 5, 4, a) < 0)
        return NULL;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    if (train_args_prepare(self, st, &ta, a[0], a[1], a[2], a[3], Py_None,
                           "x", "target") < 0)
        goto exit;
    if (ta.N == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "train_step needs at least one sample (x has 0 rows)");
        goto exit;
    }
    if (a[4] && a[4] != Py_None) {
        sw = nn_prepare_weights(a[4], self->dtype, ta.N, "sample_weight");
        if (!sw)
            goto exit;
        ta.tg.w = PyArray_DATA(sw);
    }
    drop_saved(self);
    res.loss = 0;
    res.loss_sum = sums;
    res.correct = NULL;   /* train_step reports the loss only */
    self->run.training = 2;   /* running statistics at the commit */
    Py_BEGIN_ALLOW_THREADS
    s = nn_graph_train_step(&self->g, &self->train_ws, &self->run,
                            &ta.opt->opt, &self->map, NULL, ta.xp, ta.N,
                            &ta.tg, &res);
    Py_END_ALLOW_THREADS
    if (s == NN_ERR_NONFINITE) {
        char buf[40];
        PyOS_snprintf(buf, sizeof buf, "%g", res.loss);
        PyErr_Format(st->NonFiniteError,
                     "train_step: the loss is %s; no parameter was updated",
                     buf);
        goto exit;
    }
    if (s != NN_OK) {
        nn_set_status_error(st, s, "train_step");
        goto exit;
    }
    self->run.step++;
    result = PyFloat_FromDouble(res.loss);
exit:
    Py_XDECREF(sw);
    train_args_free(self, &ta);
    release_model(self, 1);
    return result;
}

/* ---- data-parallel steps (nnlayers.distributed) ---- */

/* hooks.ready of _grad_step: ready(offset, count) with segment s's place
 * in the gradient block (in values), called with the GIL taken back */
typedef struct {
    PyObject *ready;
    const nn_optim *opt;
    const char *base;        /* the gradient block */
    size_t es;
    int failed;              /* ready raised: its exception is pending */
} grad_ready_ctx;

static void grad_ready(void *vctx, size_t s)
{
    grad_ready_ctx *c = vctx;
    const nn_segment *seg = &c->opt->seg[s];
    const nn_tensor *t = &seg->layer->t[seg->tensor];
    PyGILState_STATE gs = PyGILState_Ensure();
    if (!c->failed) {
        PyObject *r = PyObject_CallFunction(
            c->ready, "nn",
            (Py_ssize_t)(((const char *)t->grad - c->base) / c->es),
            (Py_ssize_t)t->n);
        c->failed = r == NULL;
        Py_XDECREF(r);
    }
    PyGILState_Release(gs);
}

/* [loss sum per output] and [rows right per output] as two new lists in
 * *sums_o and *correct_o; -1 with an exception (the caller releases what
 * was made, as for any temporary). */
static int sums_lists(size_t n, const double *sums, const size_t *correct,
                      PyObject **sums_o, PyObject **correct_o)
{
    size_t j;
    *sums_o = PyList_New((Py_ssize_t)n);
    *correct_o = PyList_New((Py_ssize_t)n);
    if (!*sums_o || !*correct_o)
        return -1;
    for (j = 0; j < n; j++) {
        PyObject *a = PyFloat_FromDouble(sums[j]);
        PyObject *b = PyLong_FromSize_t(correct[j]);
        if (!a || !b) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            return -1;
        }
        PyList_SET_ITEM(*sums_o, (Py_ssize_t)j, a);
        PyList_SET_ITEM(*correct_o, (Py_ssize_t)j, b);
    }
    return 0;
}

/* _grad_step(x, y, loss, optimizer, divisor, row0, loss_weights=None,
 * sample_weight=None, metrics=None, ready=None): one data-parallel
 * step's forward, losses and backward on this process's rows x, the loss
 * gradients divided by `divisor` (the step's rows over all processes),
 * x's first row at global row row0 (Dropout's masks); every gradient the
 * optimizer holds written, nothing updated. Returns (loss sums per
 * output, rows right per output, metric sums or None). */
static PyObject *Model_grad_step(ModelObject *self, PyObject *args,
                                 PyObject *kw)
{
    static char *kwlist[] = {"x", "y", "loss", "optimizer", "divisor",
                             "row0", "loss_weights", "sample_weight",
                             "metrics", "ready", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *x, *y, *loss_o, *opt_o, *weights_o = Py_None, *sw_o = Py_None,
             *metrics_o = Py_None, *ready_o = Py_None, *result = NULL;
    PyObject *sums_o = NULL, *correct_o = NULL, *msums_o = NULL;
    PyArrayObject *sw = NULL;
    Py_ssize_t divisor, row0;
    double sums[64] = {0}, msums[64 * NN_METRIC_COUNT] = {0};
    size_t correct[64] = {0}, j;
    grad_ready_ctx rc;
    nn_hooks hooks;
    nn_step_result res;
    train_args ta;
    nn_status s;
    ta.opt = NULL;
    for (j = 0; j < 64; j++)
        ta.inputs[j] = ta.labels[j] = ta.dense[j] = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOnn|OOOO:_grad_step",
                                     kwlist, &x, &y, &loss_o, &opt_o,
                                     &divisor, &row0, &weights_o, &sw_o,
                                     &metrics_o, &ready_o))
        return NULL;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    if (ready_o != Py_None && !PyCallable_Check(ready_o)) {
        PyErr_SetString(PyExc_TypeError, "ready must be callable or None");
        goto exit;
    }
    if (row0 < 0) {
        PyErr_Format(PyExc_ValueError, "row0 must be >= 0, got %zd", row0);
        goto exit;
    }
    if (train_args_prepare(self, st, &ta, x, y, loss_o, opt_o, weights_o,
                           "x", "target") < 0)
        goto exit;
    if (ta.N == 0 || divisor < (Py_ssize_t)ta.N) {
        PyErr_Format(PyExc_ValueError,
                     "_grad_step needs rows (x has %zu) and divisor >= "
                     "them (got %zd)", ta.N, divisor);
        goto exit;
    }
    if (metrics_o != Py_None) {
        if (nn_parse_metrics(metrics_o, self->g.n_outputs, ta.metrics) < 0)
            goto exit;
        ta.tg.metrics = ta.metrics;
    }
    if (sw_o != Py_None) {
        sw = nn_prepare_weights(sw_o, self->dtype, ta.N, "sample_weight");
        if (!sw)
            goto exit;
        ta.tg.w = PyArray_DATA(sw);
    }
    memset(&hooks, 0, sizeof hooks);
    rc.ready = ready_o;
    rc.opt = &ta.opt->opt;
    rc.base = ((BufferObject *)self->gbuf)->data;
    rc.es = nn_dtype_size(self->dtype);
    rc.failed = 0;
    if (ready_o != Py_None) {
        hooks.ctx = &rc;
        hooks.ready = grad_ready;
    }
    drop_saved(self);
    res.loss = 0;
    res.loss_sum = sums;
    res.correct = correct;
    res.metric_sum = msums;
    self->run.row0 = (size_t)row0;
    self->run.training = 2;   /* as train_step's */
    Py_BEGIN_ALLOW_THREADS
    s = nn_graph_grad_step(&self->g, &self->train_ws, &self->run,
                           &ta.opt->opt, &self->map, &hooks, ta.xp, ta.N,
                           (size_t)divisor, &ta.tg, &res);
    Py_END_ALLOW_THREADS
    self->run.row0 = 0;
    if (rc.failed || (s != NN_OK && PyErr_Occurred()))
        goto exit;   /* ready's or a Python layer's exception */
    if (s == NN_ERR_NONFINITE) {
        char buf[40];
        PyOS_snprintf(buf, sizeof buf, "%g", res.loss);
        PyErr_Format(st->NonFiniteError,
                     "the loss is %s; no parameter was updated", buf);
        goto exit;
    }
    if (s != NN_OK) {
        nn_set_status_error(st, s, "_grad_step");
        goto exit;
    }
    if (sums_lists(self->g.n_outputs, sums, correct, &sums_o, &correct_o) < 0)
        goto exit;
    msums_o = ta.tg.metrics ? nn_metric_sums_list(msums, ta.metrics,
                                                  self->g.n_outputs)
                            : Py_NewRef(Py_None);
    if (msums_o)
        result = PyTuple_Pack(3, sums_o, correct_o, msums_o);
exit:
    Py_XDECREF(sums_o);
    Py_XDECREF(correct_o);
    Py_XDECREF(msums_o);
    Py_XDECREF(sw);
    train_args_free(self, &ta);
    release_model(self, 1);
    return result;
}

/* _apply_step(optimizer, rows): the update of the step _grad_step began
 * (rows: that step's rows here, 0 when this process had none and its
 * gradients were set some other way), from the gradient block as it is
 * now; the model's step count advances. */
static PyObject *Model_apply_step(ModelObject *self, PyObject *args)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *opt_o;
    OptimizerObject *opt;
    Py_ssize_t rows;
    nn_status s;
    if (!PyArg_ParseTuple(args, "On:_apply_step", &opt_o, &rows))
        return NULL;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    opt = claim_optimizer(self, st, opt_o);
    if (!opt) {
        release_model(self, 1);
        return NULL;
    }
    s = rows < 0 ? NN_ERR_ARG : NN_OK;
    if (s == NN_OK && nn_optmap_bind(&self->map, &self->g, &opt->opt) != NN_OK)
        s = NN_ERR_NOMEM;
    if (s == NN_OK && rows == 0)
        s = ensure_train_ws(self) < 0 ? NN_ERR_NOMEM : NN_OK;
    if (s == NN_OK) {
        self->run.training = 2;   /* running statistics at the commit */
        Py_BEGIN_ALLOW_THREADS
        s = nn_graph_apply_step(&self->g, &self->train_ws, &self->run,
                                &opt->opt, &self->map, (size_t)rows);
        Py_END_ALLOW_THREADS
    }
    if (s == NN_OK)
        self->run.step++;
    else
        nn_set_status_error(st, s, "_apply_step (rows: those of the last "
                                   "_grad_step)");
    nn_release(&opt->busy);
    release_model(self, 1);
    if (s != NN_OK)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- fit: one epoch in C, Python entered for signals and progress ---- */

typedef struct {
    PyThreadState *ts;       /* saved thread state while the GIL is free */
    PyObject *callback;      /* progress(batch, n_batches, loss_sum,
                                correct, seen) or None */
    PyObject *on_batch;      /* on_batch(batch, rows, loss) after every
                                batch, or None */
    size_t seen;             /* rows before the last batch */
    double last;             /* time of the last callback (s) */
    double interval;         /* seconds between callbacks */
    int failed;              /* a Python exception is pending */
} fit_ctx;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Called after every batch with the GIL released: takes it back briefly
 * to see Ctrl-C (PyErr_CheckSignals) and, at most every `interval`
 * seconds and after the last batch, to report progress. */
static int fit_progress(void *vctx, size_t batch, size_t n_batches,
                        const nn_epoch_result *so_far)
{
    fit_ctx *ctx = vctx;
    int stop = 0;
    double t = now_seconds();
    int report = ctx->callback != Py_None &&
                 (t - ctx->last >= ctx->interval || batch + 1 == n_batches);
    PyEval_RestoreThread(ctx->ts);
    if (PyErr_CheckSignals() < 0) {
        stop = 1;
    } else if (ctx->on_batch != Py_None) {
        PyObject *r = PyObject_CallFunction(ctx->on_batch, "nnd",
                                            (Py_ssize_t)batch,
                                            (Py_ssize_t)(so_far->seen -
                                                         ctx->seen),
                                            so_far->last_loss);
        if (!r)
            stop = 1;
        Py_XDECREF(r);
    }
    ctx->seen = so_far->seen;
    if (!stop && report) {
        PyObject *r = PyObject_CallFunction(
            ctx->callback, "nndnn", (Py_ssize_t)batch, (Py_ssize_t)n_batches,
            so_far->loss_sum, (Py_ssize_t)so_far->correct[0],
            (Py_ssize_t)so_far->seen);
        if (!r)
            stop = 1;
        else if (PyObject_IsTrue(r) == 1)   /* a true return stops */
            stop = 1;
        Py_XDECREF(r);
        ctx->last = t;
    }
    if (stop)
        ctx->failed = PyErr_Occurred() != NULL;
    ctx->ts = PyEval_SaveThread();
    return stop;
}

/* order (n) as int64, a permutation's range checked */
static PyArrayObject *parse_order(PyObject *order_o, size_t n)
{
    PyArrayObject *order;
    size_t i;
    order = (PyArrayObject *)PyArray_FROM_OTF(order_o, NPY_INT64,
                                              NPY_ARRAY_IN_ARRAY);
    if (!order)
        return NULL;
    if (PyArray_NDIM(order) != 1 || (size_t)PyArray_DIM(order, 0) != n)
        goto bad;
    for (i = 0; i < n; i++) {
        int64_t v = ((const int64_t *)PyArray_DATA(order))[i];
        if (v < 0 || (uint64_t)v >= n)
            goto bad;
    }
    return order;
bad:
    PyErr_Format(PyExc_ValueError,
                 "shuffle: an epoch's order of the rows must be a permutation "
                 "of range(%zu), ints of shape (%zu,)",
                 n, n);
    Py_DECREF(order);
    return NULL;
}

/* _fit_epoch's result: (loss_sum, seen, stopped, per-output loss sums,
 * per-output rows right, failed, metric sums) with failed None or
 * (batch, loss) of a non-finite loss, and metric sums None or one dict
 * name -> sum over rows per output (metrics: the masks asked for, or
 * NULL) */
static PyObject *epoch_result(ModelObject *self, const nn_epoch_result *res,
                              int stopped, int nonfinite,
                              const unsigned *metrics)
{
    PyObject *sums_o = NULL, *correct_o = NULL;
    PyObject *failed = NULL, *msums_o = NULL, *result = NULL;
    if (sums_lists(self->g.n_outputs, res->loss_sum_out, res->correct,
                   &sums_o, &correct_o) < 0)
        goto exit;
    msums_o = metrics ? nn_metric_sums_list(res->metric_sum, metrics,
                                            self->g.n_outputs)
                      : Py_NewRef(Py_None);
    failed = nonfinite ? Py_BuildValue("(nd)", (Py_ssize_t)res->failed_batch,
                                       res->last_loss)
                       : Py_NewRef(Py_None);
    if (failed && msums_o)
        result = Py_BuildValue("dnOOOOO", res->loss_sum, (Py_ssize_t)res->seen,
                               stopped ? Py_True : Py_False, sums_o, correct_o,
                               failed, msums_o);
exit:
    Py_XDECREF(sums_o);
    Py_XDECREF(correct_o);
    Py_XDECREF(failed);
    Py_XDECREF(msums_o);
    return result;
}

static PyObject *Model_fit_epoch(ModelObject *self, PyObject *args,
                                 PyObject *kw)
{
    static char *kwlist[] = {"X", "y", "loss", "optimizer", "batch_size",
                             "order", "progress", "interval", "loss_weights",
                             "sample_weight", "hyper", "on_batch", "metrics",
                             NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *X, *y, *loss_o, *opt_o, *order_o = Py_None,
             *progress = Py_None, *weights_o = Py_None, *sw_o = Py_None,
             *hyper_o = Py_None, *on_batch = Py_None, *metrics_o = Py_None,
             *result = NULL;
    PyArrayObject *order = NULL, *sw = NULL;
    Py_ssize_t batch;
    double interval = 0.1, sums[64] = {0},
           msums[64 * NN_METRIC_COUNT] = {0};
    size_t correct[64] = {0}, j, n_batches;
    nn_hyper_plan plan;
    nn_hooks hooks;
    nn_epoch_result res;
    train_args ta;
    fit_ctx ctx;
    nn_status s;
    ta.opt = NULL;
    plan.values = NULL;
    for (j = 0; j < 64; j++)
        ta.inputs[j] = ta.labels[j] = ta.dense[j] = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOn|OOdOOOOO:_fit_epoch",
                                     kwlist, &X, &y, &loss_o, &opt_o, &batch,
                                     &order_o, &progress, &interval,
                                     &weights_o, &sw_o, &hyper_o, &on_batch,
                                     &metrics_o))
        return NULL;
    if (!st || claim_model(st, self, 1) < 0)
        return NULL;
    if (batch <= 0) {
        PyErr_Format(PyExc_ValueError,
                     "batch_size must be a positive int, got %zd", batch);
        goto exit;
    }
    if ((progress != Py_None && !PyCallable_Check(progress)) ||
        (on_batch != Py_None && !PyCallable_Check(on_batch))) {
        PyErr_SetString(PyExc_TypeError,
                        "progress and on_batch must be callable or None");
        goto exit;
    }
    if (train_args_prepare(self, st, &ta, X, y, loss_o, opt_o, weights_o,
                           "X", "target") < 0)
        goto exit;
    memset(&res, 0, sizeof res);
    if (metrics_o != Py_None) {
        if (nn_parse_metrics(metrics_o, self->g.n_outputs, ta.metrics) < 0)
            goto exit;
        ta.tg.metrics = ta.metrics;
        res.metric_sum = msums;
    }
    if (sw_o != Py_None) {
        sw = nn_prepare_weights(sw_o, self->dtype, ta.N, "sample_weight");
        if (!sw)
            goto exit;
        ta.tg.w = PyArray_DATA(sw);
    }
    if (order_o != Py_None) {
        order = parse_order(order_o, ta.N);
        if (!order)
            goto exit;
    }
    n_batches = (ta.N + (size_t)batch - 1) / (size_t)batch;
    if (hyper_o != Py_None &&
        nn_hyper_plan_make(ta.opt, hyper_o, n_batches, &plan) < 0)
        goto exit;
    drop_saved(self);
    memset(&hooks, 0, sizeof hooks);
    hooks.ctx = &plan;
    hooks.before_batch = plan.values ? nn_hyper_plan_apply : NULL;
    res.loss_sum_out = sums;
    res.correct = correct;
    ctx.callback = progress;
    ctx.on_batch = on_batch;
    ctx.seen = 0;
    ctx.interval = interval;
    ctx.last = now_seconds();
    ctx.failed = 0;
    self->run.training = 2;   /* running statistics at the commit */
    ctx.ts = PyEval_SaveThread();
    s = nn_graph_fit_epoch(&self->g, &self->train_ws, &self->run,
                           &ta.opt->opt, &self->map, &hooks, ta.xp, ta.N,
                           &ta.tg, order ? PyArray_DATA(order) : NULL,
                           (size_t)batch, fit_progress, &ctx, &res);
    PyEval_RestoreThread(ctx.ts);
    if (s == NN_ERR_INTERRUPTED && ctx.failed)
        goto exit;   /* KeyboardInterrupt or a callback's exception */
    if (s != NN_OK && s != NN_ERR_INTERRUPTED && s != NN_ERR_NONFINITE) {
        nn_set_status_error(st, s, "fit");
        goto exit;
    }
    result = epoch_result(self, &res, s == NN_ERR_INTERRUPTED,
                          s == NN_ERR_NONFINITE,
                          ta.tg.metrics ? ta.metrics : NULL);
exit:
    Py_XDECREF(order);
    Py_XDECREF(sw);
    Py_XDECREF(plan.values);
    train_args_free(self, &ta);
    release_model(self, 1);
    return result;
}

/* _check_data(X, y, loss, x_name, y_name): the checks a training call
 * makes of its inputs and targets (widths, dtypes, counts, label ranges,
 * finite inputs), with nothing trained: fit checks validation data with
 * it before the first update. */
static PyObject *Model_check_data(ModelObject *self, PyObject *args)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *X, *y, *loss_o, *result = NULL;
    const char *xname, *yname;
    PyArrayObject *inputs[64], *labels[64], *dense[64];
    nn_loss_kind kinds[64];
    double weights[64], largs[64];
    size_t j, N = 0, I = self->g.n_inputs, O = self->g.n_outputs;
    if (!PyArg_ParseTuple(args, "OOOss:_check_data", &X, &y, &loss_o, &xname,
                          &yname))
        return NULL;
    if (!st || claim_model(st, self, 0) < 0)
        return NULL;
    for (j = 0; j < O; j++)
        labels[j] = dense[j] = NULL;
    if (parse_losses(self, st, loss_o, Py_None, kinds, largs, weights) < 0 ||
        model_inputs(self, st, X, xname, &N, inputs) < 0) {
        release_model(self, 0);
        return NULL;
    }
    for (j = 0; j < I; j++)
        if (nn_check_finite(inputs[j], (int)self->dtype, xname) < 0)
            goto exit;
    if (prepare_targets(self, y, N, kinds, yname, labels, dense) == 0)
        result = Py_NewRef(Py_None);
exit:
    free_arrays(inputs, I);
    for (j = 0; j < O; j++) {
        Py_XDECREF(labels[j]);
        Py_XDECREF(dense[j]);
    }
    release_model(self, 0);
    return result;
}

/* ---- views and properties ---- */

static PyObject *block_view(ModelObject *self, int grads)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *buf;
    npy_intp dims[1];
    if (!st || !self->graph_ready) {
        PyErr_SetString(PyExc_RuntimeError, "the model was not initialised");
        return NULL;
    }
    if (!packed(self)) {
        /* a layer moved into another model's block since: bring every
         * layer back into one block of this model */
        if (claim_model(st, self, 1) < 0)
            return NULL;
        if (pack_parameters(self, st) < 0) {
            release_model(self, 1);
            return NULL;
        }
        release_model(self, 1);
    }
    buf = grads ? self->gbuf : self->pbuf;
    dims[0] = (npy_intp)(((BufferObject *)buf)->nbytes /
                         nn_dtype_size(self->dtype));
    return nn_view((PyObject *)self, ((BufferObject *)buf)->data, self->dtype,
                   1, dims);
}

static PyObject *Model_param_block(ModelObject *self, PyObject *na)
{
    (void)na;
    return block_view(self, 0);
}

static PyObject *Model_grad_block(ModelObject *self, PyObject *na)
{
    (void)na;
    return block_view(self, 1);
}

static PyObject *Model_get_layers(ModelObject *self, void *c)
{
    (void)c;
    if (!self->layers)
        return PyTuple_New(0);
    return Py_NewRef(self->layers);
}

static PyObject *Model_get_dtype(ModelObject *self, void *c)
{
    (void)c;
    return nn_dtype_object(self->dtype);
}

static PyObject *Model_get_can_backward(ModelObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->saved_ws != NULL);
}

/* widths of the inputs (None where not known yet) */
static PyObject *Model_get_input_widths(ModelObject *self, void *c)
{
    PyObject *t;
    size_t j;
    (void)c;
    if (!self->graph_ready)
        return PyTuple_New(0);
    t = PyTuple_New((Py_ssize_t)self->g.n_inputs);
    for (j = 0; t && j < self->g.n_inputs; j++) {
        size_t w = self->g.resolved ? self->g.width[j] : self->g.in_width[j];
        PyObject *v = w ? PyLong_FromSize_t(w) : Py_NewRef(Py_None);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, j, v);
    }
    return t;
}

/* width of every value (inputs, then each node's output), or None before
 * the widths are known */
static PyObject *Model_get_widths(ModelObject *self, void *c)
{
    PyObject *t;
    size_t v;
    (void)c;
    if (!self->graph_ready || !self->g.resolved)
        Py_RETURN_NONE;
    t = PyTuple_New((Py_ssize_t)self->g.n_values);
    for (v = 0; t && v < self->g.n_values; v++) {
        PyObject *o = PyLong_FromSize_t(self->g.width[v]);
        if (!o) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, v, o);
    }
    return t;
}

static PyObject *Model_get_training(ModelObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->training);
}

static int Model_set_training(ModelObject *self, PyObject *v, void *c)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    int t;
    (void)c;
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete training");
        return -1;
    }
    t = PyObject_IsTrue(v);
    if (t < 0 || !st)
        return -1;
    if (claim_model(st, self, 1) < 0)   /* not while calls run */
        return -1;
    self->training = t;
    release_model(self, 1);
    return 0;
}

static PyObject *Model_get_users(ModelObject *self, void *c)
{
    (void)c;
    return Py_BuildValue("(ii)", self->users.readers, self->users.writer);
}

static PyObject *Model_get_seed(ModelObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->run.seed);
}

static int Model_set_seed(ModelObject *self, PyObject *v, void *c)
{
    (void)c;
    return nn_u64_from_object(v, "seed", 1, &self->run.seed) < 0 ? -1 : 0;
}

static PyObject *Model_get_step(ModelObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->run.step);
}

static int Model_set_step(ModelObject *self, PyObject *v, void *c)
{
    (void)c;
    return nn_u64_from_object(v, "_step", 0, &self->run.step);
}

static PyMethodDef Model_methods[] = {
    {"forward", (PyCFunction)Model_forward, METH_O,
     "forward(x) -> output\n\nThe whole graph on x (N, in) (a list of arrays "
     "for several inputs), in one C call; a list of outputs for several. "
     "Keeps the values for the next backward()."},
    {"_predict", (PyCFunction)Model_predict_c, METH_O,
     "_predict(x) -> output: forward without keeping anything (inference; "
     "several threads may call it at once)"},
    {"backward", (PyCFunction)Model_backward, METH_O,
     "backward(grad_output) -> grad_input\n\nBack-propagation through the "
     "whole graph in one C call (a list of output gradients for several "
     "outputs; a list of input gradients for several inputs); ADDS into "
     "every trainable layer's grads."},
    {"zero_grad", (PyCFunction)Model_zero_grad, METH_NOARGS,
     "Set every gradient of the model to zero."},
    {"train_step", (PyCFunction)(void (*)(void))Model_train_step,
     METH_FASTCALL | METH_KEYWORDS,
     "train_step(x, y, loss, optimizer, sample_weight=None) -> float\n\n"
     "Forward, losses, "
     "backward and the optimizer's update in one C call with the GIL "
     "released; returns the batch loss. The gradient buffers serve as "
     "scratch: call zero_grad() before your own backward()."},
    {"_fit_epoch", (PyCFunction)(void (*)(void))Model_fit_epoch,
     METH_VARARGS | METH_KEYWORDS,
     "_fit_epoch(X, y, loss, optimizer, batch_size, order=None, "
     "progress=None, interval=0.1, loss_weights=None, sample_weight=None, "
     "hyper=None, on_batch=None, metrics=None) -> (loss_sum, seen, stopped, "
     "per-output loss sums, per-output rows right, failed: None or (batch, "
     "loss), metric sums: None or per output a dict metric name -> sum over "
     "rows)\n\nmetrics: one tuple of metric names per output (mse, mae, "
     "binary_accuracy, top_k_categorical_accuracy)."},
    {"_grad_step", (PyCFunction)(void (*)(void))Model_grad_step,
     METH_VARARGS | METH_KEYWORDS,
     "_grad_step(x, y, loss, optimizer, divisor, row0, ...): a "
     "data-parallel step's gradients, nothing updated"},
    {"_apply_step", (PyCFunction)Model_apply_step, METH_VARARGS,
     "_apply_step(optimizer, rows): the update of that step"},
    {"_check_idle", (PyCFunction)Model_check_idle, METH_NOARGS,
     "raise ConcurrentUseError if a call on this model runs"},
    {"_check_data", (PyCFunction)Model_check_data, METH_VARARGS,
     "_check_data(X, y, loss, x_name, y_name): raise what a training call "
     "would raise for these inputs and targets (nothing is trained)"},
    {"_param_block", (PyCFunction)Model_param_block, METH_NOARGS,
     "1-D view of the model's parameter block"},
    {"_grad_block", (PyCFunction)Model_grad_block, METH_NOARGS,
     "1-D view of the model's gradient block"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Model_getset[] = {
    {"layers", (getter)Model_get_layers, NULL,
     "tuple of the model's distinct layers", NULL},
    {"dtype", (getter)Model_get_dtype, NULL, "numpy dtype of the model",
     NULL},
    {"_can_backward", (getter)Model_get_can_backward, NULL,
     "whether a forward is waiting for its backward", NULL},
    {"_input_widths", (getter)Model_get_input_widths, NULL,
     "widths of the inputs (None where any width is taken)", NULL},
    {"_widths", (getter)Model_get_widths, NULL,
     "widths of every value (inputs, then nodes), None before known", NULL},
    {"training", (getter)Model_get_training, (setter)Model_set_training,
     "the mode: True (training, torch's default) or False (eval); forward "
     "runs in it, train_step and fit always train, predict and evaluate "
     "always evaluate (see train() and eval())", NULL},
    {"_users", (getter)Model_get_users, NULL,
     "(calls reading, calls writing) running now (a test hook)", NULL},
    {"seed", (getter)Model_get_seed, (setter)Model_set_seed,
     "seed of the model's random generator (Dropout masks)", NULL},
    {"_step", (getter)Model_get_step, (setter)Model_set_step,
     "training steps and training-mode forwards so far (part of every "
     "random mask's key: each draws new masks)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef Model_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ModelObject, weakrefs),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL}};

static PyType_Slot Model_slots[] = {
    {Py_tp_doc, "Model(layers, nodes, inputs, outputs, names=None, "
                "dtype=None): the C graph behind nnlayers.Model and "
                "nnlayers.Sequential. names: what messages call each node "
                "(and then each input)."},
    {Py_tp_init, Model_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Model_dealloc},
    {Py_tp_traverse, Model_traverse},
    {Py_tp_clear, Model_clear},
    {Py_tp_call, Model_call},
    {Py_tp_methods, Model_methods},
    {Py_tp_getset, Model_getset},
    {Py_tp_members, Model_members},
    {0, NULL}};

PyType_Spec nn_model_spec = {
    "nnlayers._core.Model", sizeof(ModelObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Model_slots};
