/*
 * layer.c: the Layer type. One C type serves every kind in the op table;
 * the Python package subclasses it per kind (nnlayers.Linear, ...). What
 * a kind takes, holds and does comes from the op table (ops.c), so
 * nothing here depends on the kind.
 *
 * A layer owns its parameters and gradients (one buffer each, tensors
 * laid out in order) until a model packs them into its own block (see
 * model.c); old buffers stay alive in `retired` so views taken earlier
 * remain valid. A layer called on its own keeps its inputs, output and
 * workspace for the backward that follows (the VJP at the last forward).
 */
#include "binding.h"

#include <math.h>
#include <string.h>
#include <time.h>

int nn_layer_check(PyObject *o, nn_module_state *st)
{
    return PyObject_TypeCheck(o, st->LayerType);
}

/* A positive size from a Python int, <= INT_MAX (BLAS takes int). */
static int parse_size(PyObject *obj, const char *name, size_t *out)
{
    Py_ssize_t v;
    if (!PyIndex_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a positive int, got %.100s",
                     name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    v = PyNumber_AsSsize_t(obj, NULL);   /* clips instead of raising */
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v <= 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive int, got %R",
                     name, obj);
        return -1;
    }
    if (v > INT_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "%s = %R is too large: sizes go to BLAS as int, so at "
                     "most INT_MAX = %d", name, obj, INT_MAX);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int nn_layer_initialised(LayerObject *self)
{
    if (self->retired)
        return 0;
    PyErr_Format(PyExc_TypeError,
                 "%.100s was not initialised: call super().__init__() first "
                 "in its __init__", Py_TYPE(self)->tp_name);
    return -1;
}

static uint64_t seed_from_clock(void)
{
    static uint64_t calls = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
           (++calls * 0x9e3779b97f4a7c15ULL);
}

static int parse_seed(PyObject *seed_o, uint64_t *seed)
{
    if (seed_o == Py_None) {
        *seed = seed_from_clock();
        return 0;
    }
    if (PyLong_Check(seed_o) && !PyBool_Check(seed_o)) {
        *seed = (uint64_t)PyLong_AsUnsignedLongLongMask(seed_o);
        return PyErr_Occurred() ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "seed must be an int or None, got %.100s",
                 Py_TYPE(seed_o)->tp_name);
    return -1;
}

static int parse_init(const char *s, nn_init *out)
{
    if (strcmp(s, "he") == 0)
        *out = NN_INIT_HE;
    else if (strcmp(s, "glorot") == 0)
        *out = NN_INIT_GLOROT;
    else if (strcmp(s, "uniform") == 0)
        *out = NN_INIT_UNIFORM;
    else {
        PyErr_Format(PyExc_ValueError,
                     "init must be 'he', 'glorot' or 'uniform', got '%s'", s);
        return -1;
    }
    return 0;
}

/* Point the tensors into the parameter block p, gradient block g (the
 * trained tensors, in order) and buffer block b (the buffers). */
static void point_tensors(nn_layer *L, char *p, char *g, char *b, size_t es)
{
    size_t k, po = 0, bo = 0;
    for (k = 0; k < L->n_tensors; k++) {
        nn_tensor *t = &L->t[k];
        if (k < L->n_params) {
            t->data = p + po * es;
            t->grad = g + po * es;
            po += t->n;
        } else {
            t->data = b + bo * es;
            t->grad = NULL;
            bo += t->n;
        }
    }
}

static char *buffer_data(PyObject *b)
{
    return b ? (char *)((BufferObject *)b)->data : NULL;
}

/* The kind's extra arguments (op->arg_names) from kw, defaults else;
 * anything else in kw is an error. */
static int parse_args(const nn_op *op, PyObject *kw, nn_layer *L)
{
    Py_ssize_t pos = 0, used = 0;
    PyObject *key, *val;
    int i;
    for (i = 0; i < 4; i++) {
        L->arg[i] = op->arg_defaults[i];
        if (!op->arg_names[i] || !kw)
            continue;
        val = PyDict_GetItemString(kw, op->arg_names[i]);
        if (!val)
            continue;
        used++;
        L->arg[i] = PyFloat_AsDouble(val);
        if (L->arg[i] == -1 && PyErr_Occurred())
            return -1;
        if (!isfinite(L->arg[i])) {
            PyErr_Format(PyExc_ValueError, "%s must be finite, got %R",
                         op->arg_names[i], val);
            return -1;
        }
    }
    if (kw && PyDict_GET_SIZE(kw) > used) {
        while (PyDict_Next(kw, &pos, &key, &val)) {
            int known = 0;
            for (i = 0; i < 4; i++)
                if (op->arg_names[i] &&
                    PyUnicode_CompareWithASCIIString(key, op->arg_names[i]) ==
                        0)
                    known = 1;
            if (!known) {
                PyErr_Format(PyExc_TypeError,
                             "a %s layer takes no argument %R", op->name, key);
                return -1;
            }
        }
    }
    return 0;
}

/* in_features, out_features, bias: taken by kinds whose config says so,
 * refused by the others */
static int parse_sizes(const nn_op *op, PyObject *in_o, PyObject *out_o,
                       int bias, nn_layer *L)
{
    if (op->config & NN_CFG_IN) {
        if (!in_o) {
            PyErr_Format(PyExc_TypeError, "a %s layer needs in_features",
                         op->name);
            return -1;
        }
        if (parse_size(in_o, "in_features", &L->in) < 0)
            return -1;
    }
    if (op->config & NN_CFG_OUT) {
        if (!out_o) {
            PyErr_Format(PyExc_TypeError, "a %s layer needs out_features",
                         op->name);
            return -1;
        }
        if (parse_size(out_o, "out_features", &L->out) < 0)
            return -1;
    }
    if (!(op->config & (NN_CFG_IN | NN_CFG_OUT)) &&
        ((in_o && in_o != Py_None) || (out_o && out_o != Py_None))) {
        PyErr_Format(PyExc_TypeError, "a %s layer takes no sizes", op->name);
        return -1;
    }
    L->bias = (op->config & NN_CFG_BIAS) ? bias : 0;
    return 0;
}

static void overflow_error(LayerObject *self)
{
    if (nn_op_of(self->L.kind)->config & NN_CFG_OUT)
        PyErr_Format(PyExc_ValueError,
                     "%s(%zu, %zu): the parameter byte count overflows",
                     _PyType_Name(Py_TYPE(self)), self->L.in, self->L.out);
    else
        PyErr_Format(PyExc_ValueError,
                     "%s: the parameter byte count overflows",
                     _PyType_Name(Py_TYPE(self)));
}

/* The layer's three buffers, zeroed, with the tensors pointing in */
static int allocate_tensors(LayerObject *self, nn_module_state *st)
{
    size_t es, np = nn_layer_param_count(&self->L),
               nb = nn_layer_buffer_count(&self->L), pbytes, bbytes;
    if (self->dtype < 0)
        return 0;
    es = nn_dtype_size((nn_dtype)self->dtype);
    if (!nn_mul_size(np, es, &pbytes) || !nn_mul_size(nb, es, &bbytes) ||
        pbytes > (size_t)PY_SSIZE_T_MAX || bbytes > (size_t)PY_SSIZE_T_MAX) {
        overflow_error(self);
        return -1;
    }
    if (np) {
        self->pbuf = nn_buffer_new(st, pbytes);
        self->gbuf = self->pbuf ? nn_buffer_new(st, pbytes) : NULL;
        if (!self->gbuf)
            return -1;
        memset(buffer_data(self->pbuf), 0, pbytes);
        memset(buffer_data(self->gbuf), 0, pbytes);
    }
    if (nb) {
        self->bbuf = nn_buffer_new(st, bbytes);
        if (!self->bbuf)
            return -1;
        memset(buffer_data(self->bbuf), 0, bbytes);
    }
    point_tensors(&self->L, buffer_data(self->pbuf), buffer_data(self->gbuf),
                  buffer_data(self->bbuf), es);
    return 0;
}

static int Layer_init(LayerObject *self, PyObject *args, PyObject *kw)
{
    static const char *own[] = {"kind", "in_features", "out_features",
                                "bias", "dtype", "init", "seed", NULL};
    const char *kind_s, *init_s = "he";
    PyObject *in_o = NULL, *out_o = NULL, *dtype_o = Py_None,
             *seed_o = Py_None, *rest = NULL, *mine = NULL;
    int bias = 1, kind, rc = -1, i;
    const nn_op *op;
    nn_init scheme;
    uint64_t seed;
    nn_status s;
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    if (!st)
        return -1;
    if (self->retired) {
        PyErr_SetString(PyExc_RuntimeError, "a Layer is initialised once");
        return -1;
    }
    /* split kw into the common arguments and the kind's own */
    mine = PyDict_New();
    rest = PyDict_New();
    if (!mine || !rest)
        goto exit;
    if (kw) {
        Py_ssize_t pos = 0;
        PyObject *key, *val;
        while (PyDict_Next(kw, &pos, &key, &val)) {
            int common = 0;
            for (i = 0; own[i]; i++)
                if (PyUnicode_CompareWithASCIIString(key, own[i]) == 0)
                    common = 1;
            if (PyDict_SetItem(common ? mine : rest, key, val) < 0)
                goto exit;
        }
    }
    if (!PyArg_ParseTupleAndKeywords(args, mine, "s|OOpOsO:Layer",
                                     (char **)own, &kind_s, &in_o, &out_o,
                                     &bias, &dtype_o, &init_s, &seed_o))
        goto exit;
    kind = nn_kind_from_name(kind_s);
    if (kind < 0) {
        PyErr_Format(PyExc_ValueError, "unknown layer kind '%s'", kind_s);
        goto exit;
    }
    op = nn_op_of((nn_kind)kind);
    memset(&self->L, 0, sizeof self->L);
    self->model_dtype = -1;
    self->training = 1;
    self->L.kind = (nn_kind)kind;
    self->L.trainable = 1;
    if (parse_sizes(op, in_o, out_o, bias, &self->L) < 0 ||
        parse_args(op, rest, &self->L) < 0 || parse_init(init_s, &scheme) < 0 ||
        parse_seed(seed_o, &seed) < 0)
        goto exit;
    s = nn_layer_setup(&self->L);
    if (s != NN_OK) {
        overflow_error(self);
        goto exit;
    }
    if (nn_dtype_from_object(dtype_o, &self->dtype,
                             self->L.n_tensors == 0) < 0)
        goto exit;
    if (allocate_tensors(self, st) < 0)
        goto exit;
    if (self->L.kind == NN_EXTERNAL)
        nn_external_attach(self);
    if (op->init && self->dtype >= 0) {
        nn_rng rng;
        nn_rng_seed(&rng, seed);
        op->init(&self->L, (nn_dtype)self->dtype, &rng, scheme);
    }
    self->retired = PyList_New(0);
    rc = self->retired ? 0 : -1;
exit:
    Py_XDECREF(mine);
    Py_XDECREF(rest);
    return rc;
}

int nn_layer_move_params(LayerObject *ly, PyObject *pbuf, char *p,
                         PyObject *gbuf, char *g)
{
    size_t es = nn_dtype_size((nn_dtype)ly->dtype), k, off = 0;
    if (!ly->pbuf || ly->L.n_params == 0)
        return 0;
    for (k = 0; k < ly->L.n_params; k++) {
        nn_tensor *t = &ly->L.t[k];
        memcpy(p + off * es, t->data, t->n * es);
        memcpy(g + off * es, t->grad, t->n * es);
        off += t->n;
    }
    /* keep the old buffers alive for views taken before */
    if (PyList_Append(ly->retired, ly->pbuf) < 0 ||
        PyList_Append(ly->retired, ly->gbuf) < 0)
        return -1;
    Py_SETREF(ly->pbuf, Py_NewRef(pbuf));
    Py_SETREF(ly->gbuf, Py_NewRef(gbuf));
    off = 0;
    for (k = 0; k < ly->L.n_params; k++) {
        nn_tensor *t = &ly->L.t[k];
        t->data = p + off * es;
        t->grad = g + off * es;
        off += t->n;
    }
    return 0;
}

static int Layer_traverse(LayerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pbuf);
    Py_VISIT(self->gbuf);
    Py_VISIT(self->bbuf);
    Py_VISIT(self->retired);
    Py_VISIT(self->saved);
    return 0;
}

static int Layer_clear(LayerObject *self)
{
    Py_CLEAR(self->saved);
    Py_CLEAR(self->retired);
    /* the buffers are not cleared: L's pointers must stay valid while the
     * object exists (they hold no references back to anything) */
    return 0;
}

static void Layer_dealloc(LayerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    Layer_clear(self);
    Py_CLEAR(self->pbuf);
    Py_CLEAR(self->gbuf);
    Py_CLEAR(self->bbuf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* A standalone call: the layer's own state, and its parameters read
 * (forward) or written (backward) */
static int claim_layer(nn_module_state *st, LayerObject *self, int write)
{
    if (nn_layer_initialised(self) < 0)
        return -1;
    if (nn_claim(st, &self->own_busy, "this layer") < 0)
        return -1;
    if (nn_users_claim(st, &self->users, write,
                       "this layer (a model or optimizer holding it)") < 0) {
        nn_release(&self->own_busy);
        return -1;
    }
    return 0;
}

static void release_layer(LayerObject *self, int write)
{
    nn_users_release(&self->users, write);
    nn_release(&self->own_busy);
}

/* ---- tensors of layers written in Python ---- */

/* dst[i] = src[i] converted, n values of dtypes dd and sd */
static void convert_values(void *dst, int dd, const void *src, int sd,
                           size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        double v = sd == NN_F32 ? (double)((const float *)src)[i]
                                : ((const double *)src)[i];
        if (dd == NN_F32)
            ((float *)dst)[i] = (float)v;
        else
            ((double *)dst)[i] = v;
    }
}

/* The layer with tensors `next` (same names keep their values) in dtype
 * dt: new buffers, the old ones retired (views taken before keep them);
 * on failure the layer is as it was. */
static int retensor(LayerObject *self, nn_module_state *st,
                    const nn_layer *next, int dt)
{
    nn_layer old = self->L;
    PyObject *op = self->pbuf, *og = self->gbuf, *ob = self->bbuf;
    int old_dt = self->dtype;
    size_t k, j;
    if ((op && PyList_Append(self->retired, op) < 0) ||
        (og && PyList_Append(self->retired, og) < 0) ||
        (ob && PyList_Append(self->retired, ob) < 0))
        return -1;
    self->L = *next;
    self->dtype = dt;
    self->pbuf = self->gbuf = self->bbuf = NULL;
    if (allocate_tensors(self, st) < 0) {
        Py_CLEAR(self->pbuf);
        Py_CLEAR(self->gbuf);
        Py_CLEAR(self->bbuf);
        self->L = old;
        self->dtype = old_dt;
        self->pbuf = op;
        self->gbuf = og;
        self->bbuf = ob;
        return -1;
    }
    for (k = 0; k < self->L.n_tensors; k++)
        for (j = 0; j < old.n_tensors; j++) {
            nn_tensor *t = &self->L.t[k];
            const nn_tensor *o = &old.t[j];
            if (strcmp(t->name, o->name) != 0 || t->n != o->n)
                continue;
            convert_values(t->data, dt, o->data, old_dt, t->n);
            if (t->grad && o->grad)
                convert_values(t->grad, dt, o->grad, old_dt, t->n);
        }
    Py_XDECREF(op);   /* the retired list holds them now */
    Py_XDECREF(og);
    Py_XDECREF(ob);
    return 0;
}

/* Only a layer written in Python, before any model is built over it */
static int check_retensor(LayerObject *self, const char *what)
{
    if (self->L.kind != NN_EXTERNAL) {
        PyErr_Format(PyExc_TypeError,
                     "%s: only layers written in Python (subclasses of "
                     "nl.Layer) add tensors or change dtype this way", what);
        return -1;
    }
    if (self->n_models > 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: %R is already in a model; add parameters and "
                     "buffers in the layer's __init__, before building a "
                     "model with it", what, (PyObject *)self);
        return -1;
    }
    return 0;
}

/* _add_tensor(name, shape, buffer): a new zeroed parameter (or buffer) */
static PyObject *Layer_add_tensor(LayerObject *self, PyObject *args)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    const char *name;
    PyObject *shape, *result = NULL;
    int buffer = 0, dt;
    size_t d[2] = {1, 1};
    Py_ssize_t nd, i;
    nn_layer next;
    nn_status s;
    if (!PyArg_ParseTuple(args, "sO|p:_add_tensor", &name, &shape, &buffer))
        return NULL;
    if (!st || check_retensor(self, buffer ? "add_buffer" : "add_param") < 0)
        return NULL;
    if (!PyTuple_Check(shape) || (nd = PyTuple_GET_SIZE(shape)) < 1 ||
        nd > 2) {
        PyErr_Format(PyExc_ValueError,
                     "shape must be a tuple of one or two positive ints, got "
                     "%R", shape);
        return NULL;
    }
    for (i = 0; i < nd; i++)
        if (parse_size(PyTuple_GET_ITEM(shape, i), "each dimension of shape",
                       &d[i]) < 0)
            return NULL;
    if (claim_layer(st, self, 1) < 0)
        return NULL;
    next = self->L;
    s = nn_layer_add_tensor(&next, name, (int)nd, d[0], d[1], buffer);
    if (s == NN_ERR_OVERFLOW) {
        overflow_error(self);
    } else if (s != NN_OK) {
        PyErr_Format(PyExc_ValueError,
                     "cannot add %s %R: a layer holds at most %d tensors "
                     "with distinct, non-empty names of fewer than %d "
                     "characters", buffer ? "buffer" : "parameter",
                     PyTuple_GET_ITEM(args, 0), NN_MAX_TENSORS,
                     NN_TENSOR_NAME);
    } else {
        dt = self->dtype >= 0 ? self->dtype : NN_F32;
        if (retensor(self, st, &next, dt) == 0)
            result = Py_NewRef(Py_None);
    }
    release_layer(self, 1);
    return result;
}

/* _set_dtype(dtype): the layer's tensors converted to dtype */
static PyObject *Layer_set_dtype(LayerObject *self, PyObject *dtype_o)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *result = NULL;
    int dt;
    if (!st || check_retensor(self, "_set_dtype") < 0 ||
        nn_dtype_from_object(dtype_o, &dt, 0) < 0)
        return NULL;
    if (dt == self->dtype)
        Py_RETURN_NONE;
    if (claim_layer(st, self, 1) < 0)
        return NULL;
    if (retensor(self, st, &self->L, dt) == 0)
        result = Py_NewRef(Py_None);
    release_layer(self, 1);
    return result;
}

static int layer_dtype_for(LayerObject *self, PyObject *x)
{
    if (self->dtype >= 0)
        return self->dtype;
    if (self->model_dtype >= 0)
        return self->model_dtype;
    return nn_adopt_dtype(x);
}

/* x as the tuple of a layer's inputs: a list or tuple of arrays for a
 * layer of several inputs, else one array */
static PyObject *inputs_tuple(const nn_op *op, PyObject *x)
{
    if (op->max_in == 1)
        return PyTuple_Pack(1, x);
    if (!PyList_Check(x) && !PyTuple_Check(x)) {
        PyErr_Format(PyExc_TypeError,
                     "a %s layer takes a list of at least %zu arrays, got "
                     "%.100s", op->name, op->min_in, Py_TYPE(x)->tp_name);
        return NULL;
    }
    return PySequence_Tuple(x);
}

/* A message for inputs whose widths the layer refuses */
static void width_error(LayerObject *self, const nn_op *op, size_t n_in,
                        const size_t *in_w, size_t bad)
{
    if (op->config & NN_CFG_IN)
        PyErr_Format(PyExc_ValueError,
                     "x must have shape (N, %zu) for %R (in_features=%zu), "
                     "got %zu columns", self->L.in, (PyObject *)self,
                     self->L.in, in_w[0]);
    else if (n_in > 1)
        PyErr_Format(PyExc_ValueError,
                     "input %zu of %R has %zu columns but input 0 has %zu: "
                     "the inputs of a %s layer must fit together", bad,
                     (PyObject *)self, in_w[bad], in_w[0], op->name);
    else
        PyErr_Format(PyExc_ValueError,
                     "x must have at least one column for a %s layer (%R)",
                     op->name, (PyObject *)self);
}

static PyObject *Layer_forward(LayerObject *self, PyObject *x)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    const nn_op *op = nn_op_of(self->L.kind);
    PyObject *items = NULL, *inputs = NULL, *wsbuf = NULL, *result = NULL;
    PyArrayObject *out = NULL;
    const void *xp[64];
    size_t in_w[64], n_in, j, N = 0, out_w = 0, bad = 0, wsn;
    nn_status s = NN_OK;
    /* training changes the buffers (BatchNorm's running statistics) */
    int write = self->training && nn_layer_buffer_count(&self->L) > 0, dt;
    if (!st || claim_layer(st, self, write) < 0)
        return NULL;
    items = inputs_tuple(op, x);
    if (!items)
        goto exit;
    n_in = (size_t)PyTuple_GET_SIZE(items);
    if (n_in < op->min_in || (op->max_in && n_in > op->max_in) || n_in > 64) {
        PyErr_Format(PyExc_ValueError,
                     "a %s layer takes %zu to %zu inputs, got %zu", op->name,
                     op->min_in, op->max_in ? op->max_in : (size_t)64, n_in);
        goto exit;
    }
    dt = layer_dtype_for(self, PyTuple_GET_ITEM(items, 0));
    inputs = PyTuple_New((Py_ssize_t)n_in);
    if (!inputs)
        goto exit;
    for (j = 0; j < n_in; j++) {
        PyArrayObject *a = nn_as_input(PyTuple_GET_ITEM(items, j), dt,
                                       n_in == 1 ? "x" : "inputs", 2);
        if (!a)
            goto exit;
        PyTuple_SET_ITEM(inputs, j, (PyObject *)a);
        if (j > 0 && (size_t)PyArray_DIM(a, 0) != N) {
            PyErr_Format(PyExc_ValueError,
                         "input %zu has %zd rows but input 0 has %zu: every "
                         "input of a %s layer has one row per sample", j,
                         PyArray_DIM(a, 0), N, op->name);
            goto exit;
        }
        N = (size_t)PyArray_DIM(a, 0);
        in_w[j] = (size_t)PyArray_DIM(a, 1);
        xp[j] = PyArray_DATA(a);
    }
    if (nn_layer_out_width(&self->L, in_w, n_in, &out_w, &bad) != NN_OK) {
        width_error(self, op, n_in, in_w, bad);
        goto exit;
    }
    out = nn_new_array(dt, (npy_intp)N, (npy_intp)out_w);
    if (!out)
        goto exit;
    wsn = nn_layer_workspace(&self->L, out_w, N);
    if (wsn) {
        wsbuf = nn_buffer_new(st, wsn * nn_dtype_size((nn_dtype)dt));
        if (!wsbuf)
            goto exit;
    } else {
        wsbuf = Py_NewRef(Py_None);
    }
    Py_BEGIN_ALLOW_THREADS
    s = nn_layer_forward(&self->L, (nn_dtype)dt, n_in, xp, in_w, N,
                         PyArray_DATA(out), out_w,
                         wsbuf != Py_None ? buffer_data(wsbuf) : NULL,
                         self->training, 0, self->step);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "forward");
        goto exit;
    }
    Py_XSETREF(self->saved, PyTuple_Pack(3, inputs, (PyObject *)out, wsbuf));
    if (!self->saved)
        goto exit;
    self->saved_dtype = dt;
    self->saved_training = self->training;
    self->saved_step = self->step;
    self->step += self->training != 0;
    result = Py_NewRef(out);
exit:
    Py_XDECREF(items);
    Py_XDECREF(inputs);
    Py_XDECREF(wsbuf);
    Py_XDECREF(out);
    release_layer(self, write);
    return result;
}

static PyObject *Layer_call(LayerObject *self, PyObject *args, PyObject *kw)
{
    PyObject *x;
    static char *kwlist[] = {"x", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:__call__", kwlist, &x))
        return NULL;
    return Layer_forward(self, x);
}

static PyObject *Layer_backward(LayerObject *self, PyObject *gy)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *inputs, *wsbuf, *grads = NULL, *result = NULL;
    PyArrayObject *ga = NULL, *out;
    const void *xp[64];
    void *dxp[64];
    size_t in_w[64], n_in, j, N, W;
    nn_status s = NN_OK;
    int dt;
    if (!st || claim_layer(st, self, 1) < 0)
        return NULL;
    if (!self->saved) {
        PyErr_SetString(PyExc_ValueError,
                        "backward() needs a forward() first: the VJP is "
                        "taken at the last forward's input (and each forward "
                        "serves one backward)");
        goto exit;
    }
    inputs = PyTuple_GET_ITEM(self->saved, 0);
    out = (PyArrayObject *)PyTuple_GET_ITEM(self->saved, 1);
    wsbuf = PyTuple_GET_ITEM(self->saved, 2);
    dt = self->saved_dtype;
    if (self->L.n_params && dt != self->dtype) {
        PyErr_SetString(PyExc_RuntimeError, "dtype changed since forward");
        goto exit;
    }
    ga = nn_as_input(gy, dt, "grad_output", 2);
    if (!ga)
        goto exit;
    N = (size_t)PyArray_DIM(out, 0);
    W = (size_t)PyArray_DIM(out, 1);
    if ((size_t)PyArray_DIM(ga, 0) != N || (size_t)PyArray_DIM(ga, 1) != W) {
        PyErr_Format(PyExc_ValueError,
                     "grad_output must have the shape of the last forward's "
                     "output (%zu, %zu), got (%zd, %zd)", N, W,
                     PyArray_DIM(ga, 0), PyArray_DIM(ga, 1));
        goto exit;
    }
    n_in = (size_t)PyTuple_GET_SIZE(inputs);
    grads = PyTuple_New((Py_ssize_t)n_in);
    if (!grads)
        goto exit;
    for (j = 0; j < n_in; j++) {
        PyArrayObject *xa = (PyArrayObject *)PyTuple_GET_ITEM(inputs, j);
        PyArrayObject *gx;
        in_w[j] = (size_t)PyArray_DIM(xa, 1);
        xp[j] = PyArray_DATA(xa);
        gx = nn_new_array(dt, (npy_intp)N, (npy_intp)in_w[j]);
        if (!gx)
            goto exit;
        PyTuple_SET_ITEM(grads, j, (PyObject *)gx);
        dxp[j] = PyArray_DATA(gx);
    }
    Py_BEGIN_ALLOW_THREADS
    s = nn_layer_backward(&self->L, (nn_dtype)dt, n_in, xp, in_w, N,
                          PyArray_DATA(out), W,
                          wsbuf != Py_None ? buffer_data(wsbuf) : NULL,
                          PyArray_DATA(ga), dxp, self->saved_training, 0,
                          self->saved_step);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "backward");
        goto exit;
    }
    Py_CLEAR(self->saved);   /* each forward serves one backward */
    nn_op_of(self->L.kind)->max_in == 1
        ? (result = Py_NewRef(PyTuple_GET_ITEM(grads, 0)))
        : (result = PySequence_List(grads));
exit:
    Py_XDECREF(ga);
    Py_XDECREF(grads);
    release_layer(self, 1);
    return result;
}

/* _output_width(widths) -> the output width for inputs of these widths,
 * or ValueError as forward would raise it */
static PyObject *Layer_output_width(LayerObject *self, PyObject *widths)
{
    const nn_op *op = nn_op_of(self->L.kind);
    size_t in_w[64], n_in, j, out = 0, bad = 0;
    nn_status s;
    if (nn_layer_initialised(self) < 0)
        return NULL;
    if (!PyTuple_Check(widths)) {
        PyErr_SetString(PyExc_TypeError, "_output_width takes a tuple");
        return NULL;
    }
    n_in = (size_t)PyTuple_GET_SIZE(widths);
    if (n_in < op->min_in || (op->max_in && n_in > op->max_in) || n_in > 64) {
        PyErr_Format(PyExc_ValueError,
                     "a %s layer takes %zu to %zu inputs, got %zu", op->name,
                     op->min_in, op->max_in ? op->max_in : (size_t)64, n_in);
        return NULL;
    }
    for (j = 0; j < n_in; j++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(widths, j));
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 0) {
            PyErr_SetString(PyExc_ValueError, "widths must be >= 0");
            return NULL;
        }
        in_w[j] = (size_t)v;
    }
    s = nn_layer_out_width(&self->L, in_w, n_in, &out, &bad);
    if (s == NN_ERR_EXTERNAL)
        return NULL;   /* the Python layer's output_width raised */
    if (s != NN_OK) {
        width_error(self, op, n_in, in_w, bad);
        return NULL;
    }
    return PyLong_FromSize_t(out);
}

/* ConcurrentUseError while this layer is inside a call that writes it,
 * or (write) while anything uses it */
static int layer_check_idle(LayerObject *self, int write)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    if (!st || claim_layer(st, self, write) < 0)
        return -1;
    release_layer(self, write);
    return 0;
}

static PyObject *Layer_check_idle(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (layer_check_idle(self, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Layer_zero_grad(LayerObject *self, PyObject *noargs)
{
    size_t k;
    (void)noargs;
    if (layer_check_idle(self, 1) < 0)
        return NULL;
    for (k = 0; k < self->L.n_params; k++)
        memset(self->L.t[k].grad, 0,
               self->L.t[k].n * nn_dtype_size((nn_dtype)self->dtype));
    Py_RETURN_NONE;
}

/* {name: view} of the parameters (which 0), gradients (1) or buffers (2) */
static PyObject *views(LayerObject *self, int which)
{
    PyObject *d = PyDict_New(), *v;
    size_t k, lo = which == 2 ? self->L.n_params : 0,
              hi = which == 2 ? self->L.n_tensors : self->L.n_params;
    if (!d || self->dtype < 0)
        return d;
    for (k = lo; k < hi; k++) {
        nn_tensor *t = &self->L.t[k];
        npy_intp dims[2] = {(npy_intp)t->dim[0], (npy_intp)t->dim[1]};
        v = nn_view((PyObject *)self, which == 1 ? t->grad : t->data,
                    self->dtype, t->ndim, dims);
        if (!v || PyDict_SetItemString(d, t->name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Layer_param_views(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    return views(self, 0);
}

static PyObject *Layer_grad_views(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    return views(self, 1);
}

static PyObject *Layer_buffer_views(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    return views(self, 2);
}

static PyObject *Layer_get_kind(LayerObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(nn_kind_name(self->L.kind));
}

static PyObject *Layer_get_dtype(LayerObject *self, void *c)
{
    (void)c;
    return nn_dtype_object(self->dtype);
}

static PyObject *Layer_get_trainable(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->L.trainable);
}

static int Layer_set_trainable(LayerObject *self, PyObject *v, void *c)
{
    int t;
    (void)c;
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete trainable");
        return -1;
    }
    t = PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    if (t != self->L.trainable) {
        if (layer_check_idle(self, 1) < 0)
            return -1;
        self->L.trainable = t;
        nn_trainable_changed();   /* models redo their backward plans */
    }
    return 0;
}

static PyObject *Layer_get_training(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->training);
}

static int Layer_set_training(LayerObject *self, PyObject *v, void *c)
{
    int t;
    (void)c;
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete training");
        return -1;
    }
    t = PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    self->training = t;
    return 0;
}

static PyObject *Layer_get_step(LayerObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->step);
}

static int Layer_set_step(LayerObject *self, PyObject *v, void *c)
{
    (void)c;
    return nn_u64_from_object(v, "_step", 0, &self->step);
}

static PyObject *Layer_get_in(LayerObject *self, void *c)
{
    (void)c;
    if (nn_layer_initialised(self) < 0)
        return NULL;
    if (!(nn_op_of(self->L.kind)->config & NN_CFG_IN))
        Py_RETURN_NONE;
    return PyLong_FromSize_t(self->L.in);
}

static PyObject *Layer_get_out(LayerObject *self, void *c)
{
    (void)c;
    if (!(nn_op_of(self->L.kind)->config & NN_CFG_OUT))
        Py_RETURN_NONE;
    return PyLong_FromSize_t(self->L.out);
}

static PyObject *Layer_get_bias(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->L.bias);
}

/* {name: value} of the kind's extra arguments (LeakyReLU's slope, ...) */
static PyObject *Layer_get_args(LayerObject *self, void *c)
{
    const nn_op *op = nn_op_of(self->L.kind);
    PyObject *d = PyDict_New(), *v;
    int i;
    (void)c;
    for (i = 0; d && i < 4; i++) {
        if (!op->arg_names[i])
            continue;
        v = PyFloat_FromDouble(self->L.arg[i]);
        if (!v || PyDict_SetItemString(d, op->arg_names[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

/* (min, max) inputs, max None for any number */
static PyObject *Layer_get_n_inputs(LayerObject *self, void *c)
{
    const nn_op *op = nn_op_of(self->L.kind);
    (void)c;
    if (op->max_in == 0)
        return Py_BuildValue("(nO)", (Py_ssize_t)op->min_in, Py_None);
    return Py_BuildValue("(nn)", (Py_ssize_t)op->min_in,
                         (Py_ssize_t)op->max_in);
}

static PyObject *Layer_get_elementwise(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(
        (nn_op_of(self->L.kind)->flags & NN_OP_ELEMENTWISE) != 0);
}

static PyObject *Layer_get_has_saved(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->saved != NULL);
}

static PyObject *Layer_get_n_params(LayerObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(nn_layer_param_count(&self->L));
}

static PyMethodDef Layer_methods[] = {
    {"forward", (PyCFunction)Layer_forward, METH_O,
     "forward(x) -> y\n\nThe layer applied to x (N, in), or to a list of "
     "arrays for a layer of several inputs; a new array (N, out). Keeps "
     "the inputs and output for the next backward()."},
    {"backward", (PyCFunction)Layer_backward, METH_O,
     "backward(grad_output) -> grad_input\n\nThe vector-Jacobian product at "
     "the last forward's input: returns dL/dx (N, in) (a list, one per "
     "input, for a layer of several inputs) and ADDS the parameter "
     "gradients into grads (unless trainable is False)."},
    {"zero_grad", (PyCFunction)Layer_zero_grad, METH_NOARGS,
     "Set every gradient to zero."},
    {"_check_idle", (PyCFunction)Layer_check_idle, METH_NOARGS,
     "raise ConcurrentUseError if a call uses this layer"},
    {"_param_views", (PyCFunction)Layer_param_views, METH_NOARGS,
     "dict of writable views of the parameters"},
    {"_grad_views", (PyCFunction)Layer_grad_views, METH_NOARGS,
     "dict of writable views of the gradients"},
    {"_output_width", (PyCFunction)Layer_output_width, METH_O,
     "_output_width(widths) -> the output width for inputs of these widths"},
    {"_buffer_views", (PyCFunction)Layer_buffer_views, METH_NOARGS,
     "dict of writable views of the buffers (state that is not trained)"},
    {"_add_tensor", (PyCFunction)Layer_add_tensor, METH_VARARGS,
     "_add_tensor(name, shape, buffer=False): a layer written in Python "
     "gains a zeroed parameter (or buffer); every tensor moves"},
    {"_set_dtype", (PyCFunction)Layer_set_dtype, METH_O,
     "_set_dtype(dtype): a layer written in Python converts its tensors"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Layer_getset[] = {
    {"kind", (getter)Layer_get_kind, NULL, "layer kind, e.g. 'linear'", NULL},
    {"dtype", (getter)Layer_get_dtype, NULL,
     "numpy dtype of the parameters, or None (adopts the input's)", NULL},
    {"trainable", (getter)Layer_get_trainable, (setter)Layer_set_trainable,
     "False freezes the layer: no parameter gradients, no updates", NULL},
    {"training", (getter)Layer_get_training, (setter)Layer_set_training,
     "the mode of calls on the layer alone (a model's mode governs its "
     "calls): True trains (Dropout drops, BatchNorm uses and updates batch "
     "statistics), False evaluates", NULL},
    {"_step", (getter)Layer_get_step, (setter)Layer_set_step,
     "training-mode calls alone so far (part of every random mask's key)",
     NULL},
    {"in_features", (getter)Layer_get_in, NULL,
     "input width (None for kinds that take any width)", NULL},
    {"out_features", (getter)Layer_get_out, NULL,
     "output width (None for kinds whose width follows the input)", NULL},
    {"bias", (getter)Layer_get_bias, NULL, "whether the layer has a bias",
     NULL},
    {"_args", (getter)Layer_get_args, NULL,
     "the kind's extra arguments by name", NULL},
    {"_n_inputs", (getter)Layer_get_n_inputs, NULL,
     "(fewest, most) inputs; most is None for any number", NULL},
    {"_elementwise", (getter)Layer_get_elementwise, NULL,
     "whether the layer maps values one by one (keeps the width)", NULL},
    {"_has_saved", (getter)Layer_get_has_saved, NULL,
     "whether a forward is waiting for its backward", NULL},
    {"_n_params", (getter)Layer_get_n_params, NULL,
     "number of trained values", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef Layer_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(LayerObject, weakrefs),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL}};

static PyType_Slot Layer_slots[] = {
    {Py_tp_doc, "Layer(kind, in_features=None, out_features=None, bias=True, "
                "dtype=None, init='he', seed=None, **kind_args)\n\n"
                "The C layer behind every nnlayers layer class."},
    {Py_tp_init, Layer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Layer_dealloc},
    {Py_tp_traverse, Layer_traverse},
    {Py_tp_clear, Layer_clear},
    {Py_tp_call, Layer_call},
    {Py_tp_methods, Layer_methods},
    {Py_tp_getset, Layer_getset},
    {Py_tp_members, Layer_members},
    {0, NULL}};

PyType_Spec nn_layer_spec = {
    "nnlayers._core.Layer", sizeof(LayerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Layer_slots};
