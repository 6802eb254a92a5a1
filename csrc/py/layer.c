/*
 * layer.c: the Layer type. One C type serves every kind; the Python
 * package subclasses it per kind (nnlayers.Linear, nnlayers.ReLU, ...).
 *
 * A Linear layer owns two buffers: parameters [W (in, out) | b (out)] and
 * gradients of the same layout. When the layer joins a Sequential its
 * memory moves into the model's single block (see sequential.c); the old
 * buffers are kept alive in `retired` so views taken earlier stay valid.
 * Standalone forward keeps references to its input and output for the
 * backward that follows (VJP at the last forward's input).
 */
#include "binding.h"

#include <math.h>
#include <string.h>
#include <time.h>

static const char *kind_names[NN_KIND_COUNT] = {
    "linear", "identity", "relu", "leaky_relu", "sigmoid", "tanh",
    "softplus", "step", "cos", "softmax", "log_softmax"};

const char *nn_kind_name(nn_kind k)
{
    return (unsigned)k < NN_KIND_COUNT ? kind_names[k] : "unknown";
}

static int kind_from_name(const char *s, nn_kind *out)
{
    int k;
    for (k = 0; k < NN_KIND_COUNT; k++) {
        if (strcmp(s, kind_names[k]) == 0) {
            *out = (nn_kind)k;
            return 0;
        }
    }
    return -1;
}

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

static uint64_t seed_from_clock(void)
{
    static uint64_t calls = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
           (++calls * 0x9e3779b97f4a7c15ULL);
}

/* W (in, out) drawn by scheme; never all equal (symmetry breaking). */
static int init_weights(LayerObject *self, const char *scheme, uint64_t seed)
{
    nn_rng rng;
    size_t i, n = self->L.in * self->L.out;
    double fan_in = (double)self->L.in, fan_out = (double)self->L.out;
    int normal;
    double scale;
    if (strcmp(scheme, "he") == 0) {
        normal = 1;
        scale = sqrt(2.0 / fan_in);
    } else if (strcmp(scheme, "glorot") == 0) {
        normal = 0;
        scale = sqrt(6.0 / (fan_in + fan_out));
    } else if (strcmp(scheme, "uniform") == 0) {
        normal = 0;
        scale = 1.0 / sqrt(fan_in);
    } else {
        PyErr_Format(PyExc_ValueError,
                     "init must be 'he', 'glorot' or 'uniform', got '%s'",
                     scheme);
        return -1;
    }
    nn_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) {
        double v = normal ? scale * nn_rng_normal(&rng)
                          : scale * (2 * nn_rng_uniform(&rng) - 1);
        if (self->dtype == NN_F32)
            ((float *)self->L.W)[i] = (float)v;
        else
            ((double *)self->L.W)[i] = v;
    }
    return 0;
}

static void clear_saved(LayerObject *self)
{
    Py_CLEAR(self->saved_in);
    Py_CLEAR(self->saved_out);
}

/* Point L.W/b/dW/db into the buffers [W | b] */
static void point_into(LayerObject *self)
{
    size_t es = nn_dtype_size((nn_dtype)self->dtype);
    size_t nw = self->L.in * self->L.out;
    char *p = ((BufferObject *)self->pbuf)->data;
    char *g = ((BufferObject *)self->gbuf)->data;
    int has_b = self->L.b != NULL;
    self->L.W = p;
    self->L.dW = g;
    self->L.b = has_b ? p + nw * es : NULL;
    self->L.db = has_b ? g + nw * es : NULL;
}

static int Layer_init(LayerObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"kind", "in_features", "out_features", "bias",
                             "dtype", "init", "seed", "slope", NULL};
    const char *kind_s, *init_s = "he";
    PyObject *in_o = NULL, *out_o = NULL, *dtype_o = Py_None,
             *seed_o = Py_None;
    int bias = 1;
    double slope = 0.01;
    nn_kind kind;
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    if (!st)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|OOpOsOd:Layer", kwlist,
                                     &kind_s, &in_o, &out_o, &bias, &dtype_o,
                                     &init_s, &seed_o, &slope))
        return -1;
    if (self->pbuf || self->model) {
        PyErr_SetString(PyExc_RuntimeError, "a Layer is initialised once");
        return -1;
    }
    if (kind_from_name(kind_s, &kind) < 0) {
        PyErr_Format(PyExc_ValueError, "unknown layer kind '%s'", kind_s);
        return -1;
    }
    memset(&self->L, 0, sizeof self->L);
    self->L.kind = kind;
    self->L.trainable = 1;
    self->L.slope = slope;
    if (!isfinite(slope)) {
        PyErr_SetString(PyExc_ValueError, "slope must be finite");
        return -1;
    }
    if (nn_dtype_from_object(dtype_o, &self->dtype, kind != NN_LINEAR) < 0)
        return -1;
    if (kind == NN_LINEAR) {
        size_t nparams, nbytes, es = nn_dtype_size((nn_dtype)self->dtype);
        uint64_t seed;
        if (!in_o || !out_o) {
            PyErr_SetString(PyExc_TypeError,
                            "Linear needs in_features and out_features");
            return -1;
        }
        if (parse_size(in_o, "in_features", &self->L.in) < 0 ||
            parse_size(out_o, "out_features", &self->L.out) < 0)
            return -1;
        if (!nn_mul_size(self->L.in, self->L.out, &nparams) ||
            nparams + self->L.out < nparams ||
            !nn_mul_size(nparams + self->L.out, es, &nbytes) ||
            nbytes > (size_t)PY_SSIZE_T_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "Linear(%zu, %zu): the parameter byte count "
                         "overflows", self->L.in, self->L.out);
            return -1;
        }
        if (seed_o == Py_None) {
            seed = seed_from_clock();
        } else if (PyLong_Check(seed_o) && !PyBool_Check(seed_o)) {
            seed = (uint64_t)PyLong_AsUnsignedLongLongMask(seed_o);
            if (PyErr_Occurred())
                return -1;
        } else {
            PyErr_Format(PyExc_TypeError, "seed must be an int or None, got "
                         "%.100s", Py_TYPE(seed_o)->tp_name);
            return -1;
        }
        self->pbuf = nn_buffer_new(st, nbytes);
        if (!self->pbuf)
            return -1;
        self->gbuf = nn_buffer_new(st, nbytes);
        if (!self->gbuf)
            return -1;
        memset(((BufferObject *)self->pbuf)->data, 0, nbytes);
        memset(((BufferObject *)self->gbuf)->data, 0, nbytes);
        self->L.b = bias ? (void *)1 : NULL;   /* marker for point_into */
        point_into(self);
        if (init_weights(self, init_s, seed) < 0)
            return -1;
    } else if (in_o || out_o) {
        PyErr_Format(PyExc_TypeError, "%s takes no sizes", kind_s);
        return -1;
    }
    self->retired = PyList_New(0);
    return self->retired ? 0 : -1;
}

static int Layer_traverse(LayerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pbuf);
    Py_VISIT(self->gbuf);
    Py_VISIT(self->retired);
    Py_VISIT(self->saved_in);
    Py_VISIT(self->saved_out);
    return 0;
}

static int Layer_clear(LayerObject *self)
{
    clear_saved(self);
    Py_CLEAR(self->retired);
    /* the buffers are not cleared: L's pointers must stay valid while the
     * object exists (they hold no references back to anything) */
    return 0;
}

static void Layer_dealloc(LayerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Layer_clear(self);
    Py_CLEAR(self->pbuf);
    Py_CLEAR(self->gbuf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Claim the layer (and its model) for one call */
static int claim_layer(nn_module_state *st, LayerObject *self)
{
    if (self->model && ((SequentialObject *)self->model)->busy)
        return nn_claim(st, &((SequentialObject *)self->model)->busy,
                        "the Sequential holding this layer");
    return nn_claim(st, &self->busy, "this layer");
}

static int layer_dtype_for(LayerObject *self, PyObject *x)
{
    if (self->dtype >= 0)
        return self->dtype;
    if (self->model)
        return ((SequentialObject *)self->model)->dtype;
    return nn_adopt_dtype(x);
}

static PyObject *Layer_forward(LayerObject *self, PyObject *x)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyArrayObject *xa = NULL, *out = NULL;
    PyObject *result = NULL;
    nn_status s = NN_OK;
    size_t N, width, out_width;
    int dt;
    if (!st || claim_layer(st, self) < 0)
        return NULL;
    dt = layer_dtype_for(self, x);
    xa = nn_as_input(x, dt, "x", 2);
    if (!xa)
        goto exit;
    N = (size_t)PyArray_DIM(xa, 0);
    width = (size_t)PyArray_DIM(xa, 1);
    if (self->L.kind == NN_LINEAR && width != self->L.in) {
        PyErr_Format(PyExc_ValueError,
                     "x must have shape (N, %zu) for Linear(in_features=%zu), "
                     "got %zu columns", self->L.in, self->L.in, width);
        goto exit;
    }
    if ((self->L.kind == NN_SOFTMAX || self->L.kind == NN_LOG_SOFTMAX) &&
        width == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "x must have at least one column for a softmax");
        goto exit;
    }
    out_width = self->L.kind == NN_LINEAR ? self->L.out : width;
    out = nn_new_array(dt, (npy_intp)N, (npy_intp)out_width);
    if (!out)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
    if (dt == NN_F32)
        s = nn_layer_forward_f32(&self->L, PyArray_DATA(out),
                                 PyArray_DATA(xa), N, width);
    else
        s = nn_layer_forward_f64(&self->L, PyArray_DATA(out),
                                 PyArray_DATA(xa), N, width);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "forward");
        goto exit;
    }
    clear_saved(self);
    Py_INCREF(xa);
    Py_INCREF(out);
    self->saved_in = xa;
    self->saved_out = out;
    self->saved_dtype = dt;
    Py_INCREF(out);
    result = (PyObject *)out;
exit:
    Py_XDECREF(xa);
    Py_XDECREF(out);
    nn_release(&self->busy);
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
    PyArrayObject *ga = NULL, *gx = NULL;
    PyObject *result = NULL;
    nn_status s = NN_OK;
    size_t N, width;
    int dt;
    if (!st || claim_layer(st, self) < 0)
        return NULL;
    if (!self->saved_in) {
        PyErr_SetString(PyExc_ValueError,
                        "backward() needs a forward() first: the VJP is "
                        "taken at the last forward's input (and each forward "
                        "serves one backward)");
        goto exit;
    }
    dt = self->saved_dtype;
    ga = nn_as_input(gy, dt, "grad_output", 2);
    if (!ga)
        goto exit;
    if (PyArray_DIM(ga, 0) != PyArray_DIM(self->saved_out, 0) ||
        PyArray_DIM(ga, 1) != PyArray_DIM(self->saved_out, 1)) {
        PyErr_Format(PyExc_ValueError,
                     "grad_output must have the shape of the last forward's "
                     "output (%zd, %zd), got (%zd, %zd)",
                     PyArray_DIM(self->saved_out, 0),
                     PyArray_DIM(self->saved_out, 1), PyArray_DIM(ga, 0),
                     PyArray_DIM(ga, 1));
        goto exit;
    }
    N = (size_t)PyArray_DIM(self->saved_in, 0);
    width = (size_t)PyArray_DIM(self->saved_in, 1);
    gx = nn_new_array(dt, (npy_intp)N, (npy_intp)width);
    if (!gx)
        goto exit;
    if (self->L.kind == NN_LINEAR && dt != self->dtype) {
        PyErr_SetString(PyExc_RuntimeError, "dtype changed since forward");
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    if (dt == NN_F32)
        s = nn_layer_backward_f32(&self->L, PyArray_DATA(gx),
                                  PyArray_DATA(ga),
                                  PyArray_DATA(self->saved_in),
                                  PyArray_DATA(self->saved_out), N, width);
    else
        s = nn_layer_backward_f64(&self->L, PyArray_DATA(gx),
                                  PyArray_DATA(ga),
                                  PyArray_DATA(self->saved_in),
                                  PyArray_DATA(self->saved_out), N, width);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "backward");
        goto exit;
    }
    clear_saved(self);   /* each forward serves one backward */
    Py_INCREF(gx);
    result = (PyObject *)gx;
exit:
    Py_XDECREF(ga);
    Py_XDECREF(gx);
    nn_release(&self->busy);
    return result;
}

/* ConcurrentUseError while this layer (or its model) is inside a call */
static int layer_check_idle(LayerObject *self)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    if (!st)
        return -1;
    if (claim_layer(st, self) < 0)
        return -1;
    nn_release(&self->busy);
    return 0;
}

static PyObject *Layer_check_idle(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (layer_check_idle(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Layer_zero_grad(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (layer_check_idle(self) < 0)
        return NULL;
    if (self->gbuf) {
        size_t es = nn_dtype_size((nn_dtype)self->dtype);
        memset(self->L.dW, 0, self->L.in * self->L.out * es);
        if (self->L.db)
            memset(self->L.db, 0, self->L.out * es);
    }
    Py_RETURN_NONE;
}

/* {"W": view, "b": view} of the parameter (grads=0) or gradient memory */
static PyObject *views(LayerObject *self, int grads)
{
    PyObject *d = PyDict_New(), *v;
    npy_intp wdims[2] = {(npy_intp)self->L.in, (npy_intp)self->L.out};
    npy_intp bdims[1] = {(npy_intp)self->L.out};
    if (!d || self->L.kind != NN_LINEAR)
        return d;
    v = nn_view((PyObject *)self, grads ? self->L.dW : self->L.W,
                self->dtype, 2, wdims);
    if (!v || PyDict_SetItemString(d, "W", v) < 0)
        goto fail;
    Py_DECREF(v);
    if (self->L.b) {
        v = nn_view((PyObject *)self, grads ? self->L.db : self->L.b,
                    self->dtype, 1, bdims);
        if (!v || PyDict_SetItemString(d, "b", v) < 0)
            goto fail;
        Py_DECREF(v);
    }
    return d;
fail:
    Py_XDECREF(v);
    Py_DECREF(d);
    return NULL;
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
    self->L.trainable = t;
    return 0;
}

static PyObject *Layer_get_in(LayerObject *self, void *c)
{
    (void)c;
    if (self->L.kind != NN_LINEAR)
        Py_RETURN_NONE;
    return PyLong_FromSize_t(self->L.in);
}

static PyObject *Layer_get_out(LayerObject *self, void *c)
{
    (void)c;
    if (self->L.kind != NN_LINEAR)
        Py_RETURN_NONE;
    return PyLong_FromSize_t(self->L.out);
}

static PyObject *Layer_get_bias(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->L.b != NULL);
}

static PyObject *Layer_get_slope(LayerObject *self, void *c)
{
    (void)c;
    return PyFloat_FromDouble(self->L.slope);
}

static PyObject *Layer_get_model(LayerObject *self, void *c)
{
    (void)c;
    if (!self->model)
        Py_RETURN_NONE;
    Py_INCREF(self->model);
    return self->model;
}

static PyObject *Layer_get_has_saved(LayerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->saved_in != NULL);
}

static PyMethodDef Layer_methods[] = {
    {"forward", (PyCFunction)Layer_forward, METH_O,
     "forward(x) -> y\n\nThe layer applied to x (N, in); a new array "
     "(N, out). Keeps x and y for the next backward()."},
    {"backward", (PyCFunction)Layer_backward, METH_O,
     "backward(grad_output) -> grad_input\n\nThe vector-Jacobian product at "
     "the last forward's input: returns dL/dx (N, in) and ADDS dL/dW, dL/db "
     "into grads (unless trainable is False)."},
    {"zero_grad", (PyCFunction)Layer_zero_grad, METH_NOARGS,
     "Set every gradient to zero."},
    {"_check_idle", (PyCFunction)Layer_check_idle, METH_NOARGS,
     "raise ConcurrentUseError if a call on this layer or its model runs"},
    {"_param_views", (PyCFunction)Layer_param_views, METH_NOARGS,
     "dict of writable views of the parameters"},
    {"_grad_views", (PyCFunction)Layer_grad_views, METH_NOARGS,
     "dict of writable views of the gradients"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Layer_getset[] = {
    {"kind", (getter)Layer_get_kind, NULL, "layer kind, e.g. 'linear'", NULL},
    {"dtype", (getter)Layer_get_dtype, NULL,
     "numpy dtype of the parameters, or None (adopts the input's)", NULL},
    {"trainable", (getter)Layer_get_trainable, (setter)Layer_set_trainable,
     "False freezes the layer: no parameter gradients, no SGD updates",
     NULL},
    {"in_features", (getter)Layer_get_in, NULL, "input width (Linear)", NULL},
    {"out_features", (getter)Layer_get_out, NULL, "output width (Linear)",
     NULL},
    {"bias", (getter)Layer_get_bias, NULL, "whether the layer has a bias",
     NULL},
    {"slope", (getter)Layer_get_slope, NULL, "LeakyReLU's negative slope",
     NULL},
    {"model", (getter)Layer_get_model, NULL,
     "the Sequential this layer belongs to, or None", NULL},
    {"_has_saved", (getter)Layer_get_has_saved, NULL,
     "whether a forward is waiting for its backward", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Layer_slots[] = {
    {Py_tp_doc, "Layer(kind, in_features=None, out_features=None, bias=True, "
                "dtype=None, init='he', seed=None, slope=0.01)\n\n"
                "The C layer behind every nnlayers layer class."},
    {Py_tp_init, Layer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Layer_dealloc},
    {Py_tp_traverse, Layer_traverse},
    {Py_tp_clear, Layer_clear},
    {Py_tp_call, Layer_call},
    {Py_tp_methods, Layer_methods},
    {Py_tp_getset, Layer_getset},
    {0, NULL}};

PyType_Spec nn_layer_spec = {
    "nnlayers._core.Layer", sizeof(LayerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Layer_slots};
