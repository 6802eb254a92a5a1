/*
 * sgd.c: the SGD type. It updates the Linear layers it was given, with
 * momentum state in one block it owns. The rules are torch.optim.SGD's
 * (dampening 0); see nn_sgd_update in csrc/core/sgd.c.
 */
#include "binding.h"

#include <math.h>
#include <string.h>

#define OPT_LAYER(self, k) \
    ((LayerObject *)PyTuple_GET_ITEM((self)->layers, (k)))

void nn_sgd_refresh(SGDObject *self)
{
    Py_ssize_t k;
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++) {
        LayerObject *ly = OPT_LAYER(self, k);
        nn_segment *s = &self->opt.segments[k];
        /* [W | b] are adjacent in every layout (own buffer or model block) */
        s->param = ly->L.W;
        s->grad = ly->L.dW;
        s->n = nn_layer_param_count(&ly->L);
        s->layer = &ly->L;
    }
}

static int check_hyper(const char *name, double v, int positive)
{
    if (!isfinite(v) || (positive ? v <= 0 : v < 0)) {
        char buf[40];
        PyOS_snprintf(buf, sizeof buf, "%g", v);
        PyErr_Format(PyExc_ValueError, "%s must be a finite number %s 0, got %s",
                     name, positive ? ">" : ">=", buf);
        return -1;
    }
    return 0;
}

/* The Linear layers among a Sequential, a Layer, or an iterable of them */
static PyObject *collect_layers(nn_module_state *st, PyObject *params)
{
    PyObject *seq = NULL, *out = NULL, *it;
    Py_ssize_t i, n;
    if (PyObject_TypeCheck(params, st->SequentialType)) {
        seq = Py_NewRef(((SequentialObject *)params)->layers);
    } else if (nn_layer_check(params, st)) {
        seq = PyTuple_Pack(1, params);
    } else {
        seq = PySequence_Tuple(params);
        if (!seq) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "SGD takes a Sequential, a Layer or an iterable of "
                         "Layers, got %.100s", Py_TYPE(params)->tp_name);
            return NULL;
        }
    }
    out = PyList_New(0);
    if (!out)
        goto fail;
    n = PyTuple_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        it = PyTuple_GET_ITEM(seq, i);
        if (!nn_layer_check(it, st)) {
            PyErr_Format(PyExc_TypeError,
                         "SGD: item %zd is %.100s, not an nnlayers Layer", i,
                         Py_TYPE(it)->tp_name);
            goto fail;
        }
        if (nn_layer_param_count(&((LayerObject *)it)->L) == 0)
            continue;
        if (PySequence_Contains(out, it) == 1)
            continue;   /* each layer once */
        if (PyList_Append(out, it) < 0)
            goto fail;
    }
    Py_DECREF(seq);
    Py_SETREF(out, PyList_AsTuple(out));
    return out;
fail:
    Py_XDECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

static int SGD_init(SGDObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"params", "lr", "momentum", "nesterov",
                             "weight_decay", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *params, *layers;
    double lr, momentum = 0, wd = 0;
    int nesterov = 0, dt = -1;
    Py_ssize_t k, n;
    size_t total = 0;
    if (!st)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Od|dpd:SGD", kwlist, &params,
                                     &lr, &momentum, &nesterov, &wd))
        return -1;
    if (self->busy) {
        PyErr_SetString(st->BusyError, "this optimizer is in use by another "
                        "thread; it cannot be re-initialised now");
        return -1;
    }
    if (check_hyper("lr", lr, 1) < 0 || check_hyper("momentum", momentum, 0) < 0 ||
        check_hyper("weight_decay", wd, 0) < 0)
        return -1;
    if (nesterov && momentum == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "nesterov=True needs momentum > 0");
        return -1;
    }
    layers = collect_layers(st, params);
    if (!layers)
        return -1;
    n = PyTuple_GET_SIZE(layers);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "SGD got no parameters (no Linear layer)");
        Py_DECREF(layers);
        return -1;
    }
    for (k = 0; k < n; k++) {
        LayerObject *ly = (LayerObject *)PyTuple_GET_ITEM(layers, k);
        if (dt >= 0 && ly->dtype != dt) {
            PyErr_SetString(PyExc_TypeError,
                            "SGD: the layers have mixed dtypes");
            Py_DECREF(layers);
            return -1;
        }
        dt = ly->dtype;
        total += nn_layer_param_count(&ly->L);
    }
    /* a second __init__ replaces everything */
    PyMem_Free(self->opt.segments);
    Py_CLEAR(self->vbuf);
    Py_XSETREF(self->layers, layers);
    memset(&self->opt, 0, sizeof self->opt);
    self->opt.segments = PyMem_Calloc((size_t)n, sizeof(nn_segment));
    if (!self->opt.segments) {
        PyErr_NoMemory();
        return -1;
    }
    self->opt.n_segments = (size_t)n;
    self->opt.dtype = (nn_dtype)dt;
    self->opt.lr = lr;
    self->opt.momentum = momentum;
    self->opt.nesterov = nesterov;
    self->opt.weight_decay = wd;
    if (momentum != 0) {
        size_t nbytes = total * nn_dtype_size((nn_dtype)dt);
        self->vbuf = nn_buffer_new(st, nbytes);
        if (!self->vbuf)
            return -1;
        memset(((BufferObject *)self->vbuf)->data, 0, nbytes);
        self->opt.velocity = ((BufferObject *)self->vbuf)->data;
    }
    nn_sgd_refresh(self);
    return 0;
}

static int SGD_traverse(SGDObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->layers);
    Py_VISIT(self->vbuf);
    return 0;
}

static int SGD_clear(SGDObject *self)
{
    /* layers stay: the segments point into them */
    return 0;
}

static void SGD_dealloc(SGDObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyMem_Free(self->opt.segments);
    Py_CLEAR(self->layers);
    Py_CLEAR(self->vbuf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_ready(SGDObject *self)
{
    if (!self->layers) {
        PyErr_SetString(PyExc_RuntimeError, "SGD was not initialised");
        return -1;
    }
    return 0;
}

/* Refuse while any of the layers (or their models) is in use */
static int layers_free(nn_module_state *st, SGDObject *self)
{
    Py_ssize_t k;
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++) {
        LayerObject *ly = OPT_LAYER(self, k);
        if (ly->busy || (ly->model && ((SequentialObject *)ly->model)->busy)) {
            PyErr_SetString(st->BusyError,
                            "a layer of this optimizer is in use by another "
                            "thread; an nnlayers object serves one call at a "
                            "time (use one model per thread)");
            return -1;
        }
    }
    return 0;
}

static PyObject *SGD_step(SGDObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    Py_ssize_t k;
    (void)na;
    if (!st || check_ready(self) < 0)
        return NULL;
    if (nn_claim(st, &self->busy, "this optimizer") < 0)
        return NULL;
    if (layers_free(st, self) < 0) {
        nn_release(&self->busy);
        return NULL;
    }
    nn_sgd_refresh(self);
    /* the layers are busy while their weights change: their models and
     * other callers get ConcurrentUseError meanwhile */
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++)
        OPT_LAYER(self, k)->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    nn_sgd_step(&self->opt);
    Py_END_ALLOW_THREADS
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++)
        OPT_LAYER(self, k)->busy = 0;
    nn_release(&self->busy);
    Py_RETURN_NONE;
}

static PyObject *SGD_zero_grad(SGDObject *self, PyObject *na)
{
    Py_ssize_t k;
    size_t es;
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    (void)na;
    if (!st || check_ready(self) < 0)
        return NULL;
    if (self->busy || layers_free(st, self) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(st->BusyError, "this optimizer is in use by "
                            "another thread");
        return NULL;
    }
    nn_sgd_refresh(self);
    es = nn_dtype_size(self->opt.dtype);
    for (k = 0; k < (Py_ssize_t)self->opt.n_segments; k++)
        memset(self->opt.segments[k].grad, 0, self->opt.segments[k].n * es);
    Py_RETURN_NONE;
}

static PyObject *SGD_velocity(SGDObject *self, PyObject *na)
{
    npy_intp dims[1];
    (void)na;
    if (check_ready(self) < 0)
        return NULL;
    if (!self->vbuf)
        Py_RETURN_NONE;
    dims[0] = (npy_intp)(((BufferObject *)self->vbuf)->nbytes /
                         nn_dtype_size(self->opt.dtype));
    return nn_view((PyObject *)self, ((BufferObject *)self->vbuf)->data,
                   self->opt.dtype, 1, dims);
}

static PyObject *SGD_get_lr(SGDObject *self, void *c)
{
    (void)c;
    return PyFloat_FromDouble(self->opt.lr);
}

static int SGD_set_lr(SGDObject *self, PyObject *v, void *c)
{
    double lr;
    (void)c;
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete lr");
        return -1;
    }
    lr = PyFloat_AsDouble(v);
    if (lr == -1 && PyErr_Occurred())
        return -1;
    if (check_hyper("lr", lr, 1) < 0)
        return -1;
    self->opt.lr = lr;
    return 0;
}

static PyObject *SGD_get_momentum(SGDObject *self, void *c)
{
    (void)c;
    return PyFloat_FromDouble(self->opt.momentum);
}

static PyObject *SGD_get_nesterov(SGDObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->opt.nesterov);
}

static PyObject *SGD_get_wd(SGDObject *self, void *c)
{
    (void)c;
    return PyFloat_FromDouble(self->opt.weight_decay);
}

static PyObject *SGD_get_layers(SGDObject *self, void *c)
{
    (void)c;
    if (!self->layers)
        return PyTuple_New(0);
    return Py_NewRef(self->layers);
}

static PyMethodDef SGD_methods[] = {
    {"step", (PyCFunction)SGD_step, METH_NOARGS,
     "Apply one update to every trainable parameter from its gradient."},
    {"zero_grad", (PyCFunction)SGD_zero_grad, METH_NOARGS,
     "Set the gradients of every parameter this optimizer holds to zero."},
    {"_velocity", (PyCFunction)SGD_velocity, METH_NOARGS,
     "1-D view of the momentum block (None without momentum)"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef SGD_getset[] = {
    {"lr", (getter)SGD_get_lr, (setter)SGD_set_lr, "learning rate", NULL},
    {"momentum", (getter)SGD_get_momentum, NULL, "momentum", NULL},
    {"nesterov", (getter)SGD_get_nesterov, NULL, "Nesterov momentum", NULL},
    {"weight_decay", (getter)SGD_get_wd, NULL, "L2 weight decay", NULL},
    {"layers", (getter)SGD_get_layers, NULL, "the layers it updates", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot SGD_slots[] = {
    {Py_tp_doc, "SGD(params, lr, momentum=0.0, nesterov=False, "
                "weight_decay=0.0): the C optimizer behind nnlayers.SGD"},
    {Py_tp_init, SGD_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, SGD_dealloc},
    {Py_tp_traverse, SGD_traverse},
    {Py_tp_clear, SGD_clear},
    {Py_tp_methods, SGD_methods},
    {Py_tp_getset, SGD_getset},
    {0, NULL}};

PyType_Spec nn_sgd_spec = {
    "nnlayers._core.SGD", sizeof(SGDObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    SGD_slots};
