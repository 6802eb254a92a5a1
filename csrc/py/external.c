/*
 * external.c: layers written in Python (the core's NN_EXTERNAL kind).
 *
 * The engine runs a step or forward pass with the GIL released; at an
 * external node it calls the trampolines here. Each takes the GIL, hands
 * the layer's Python forward / backward / output_width NumPy arrays,
 * checks what comes back (type, shape, dtype) and copies it into the
 * engine's memory. The arrays handed over are copies the layer may keep
 * (the engine's own memory is reused by later calls).
 *
 * A failure keeps the Python exception, with a note naming the layer, and
 * returns NN_ERR_EXTERNAL: the engine stops the step before any update
 * (graphs with external layers defer their updates) and the binding,
 * holding the GIL again, finds the exception still set and raises it.
 */
#include "binding.h"

#include <string.h>

/* Add "in <what> of layer 'name' (Class)" to the exception being raised */
static void note_layer(LayerObject *ly, const char *what)
{
    PyObject *type, *value, *tb, *name, *note, *r;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    name = PyObject_GetAttrString((PyObject *)ly, "name");
    if (!name)
        PyErr_Clear();
    note = PyUnicode_FromFormat("in %s of layer %R (%s), a layer written in "
                                "Python, called by a model",
                                what, name ? name : Py_None,
                                Py_TYPE(ly)->tp_name);
    r = note && value ? PyObject_CallMethod(value, "add_note", "O", note)
                      : NULL;
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(note);
    Py_XDECREF(name);
    PyErr_Restore(type, value, tb);
}

/* A new (n, w) array of dtype dt holding a copy of data */
static PyObject *copy_out(int dt, const void *data, size_t n, size_t w)
{
    PyArrayObject *a = nn_new_array(dt, (npy_intp)n, (npy_intp)w);
    if (a && n != 0 && w != 0)
        memcpy(PyArray_DATA(a), data, n * w * nn_dtype_size((nn_dtype)dt));
    return (PyObject *)a;
}

/* out (n, w) (+)= r, after checking that r is an array of that shape and
 * dtype dt; what names the value in messages */
static int copy_in(PyObject *r, int dt, void *out, size_t n, size_t w,
                   int add, const char *what)
{
    PyArrayObject *a, *c;
    size_t i, total = n * w;
    if (!PyArray_Check(r)) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be a NumPy array of shape (%zu, %zu), got %.100s",
                     what, n, w, Py_TYPE(r)->tp_name);
        return -1;
    }
    a = (PyArrayObject *)r;
    if (PyArray_NDIM(a) != 2 || (size_t)PyArray_DIM(a, 0) != n ||
        (size_t)PyArray_DIM(a, 1) != w) {
        PyObject *shape = PyObject_GetAttrString(r, "shape");
        if (shape)
            PyErr_Format(PyExc_ValueError,
                         "%s must have shape (%zu, %zu), got %R", what, n, w,
                         shape);
        Py_XDECREF(shape);
        return -1;
    }
    if (PyArray_TYPE(a) != nn_typenum((nn_dtype)dt)) {
        PyObject *got = PyObject_Str((PyObject *)PyArray_DESCR(a));
        if (got)
            PyErr_Format(PyExc_TypeError,
                         "%s must have the model's dtype %s, got %U: convert "
                         "it (.astype(np.%s)), or build the layer and model "
                         "in %s", what, dt == NN_F32 ? "float32" : "float64",
                         got, dt == NN_F32 ? "float32" : "float64",
                         PyArray_DESCR(a)->type_num == NPY_FLOAT64
                             ? "float64"
                             : "the dtype you compute in");
        Py_XDECREF(got);
        return -1;
    }
    c = PyArray_GETCONTIGUOUS(a);
    if (!c)
        return -1;
    if (!add) {
        memcpy(out, PyArray_DATA(c), total * nn_dtype_size((nn_dtype)dt));
    } else if (dt == NN_F32) {
        const float *src = PyArray_DATA(c);
        for (i = 0; i < total; i++)
            ((float *)out)[i] += src[i];
    } else {
        const double *src = PyArray_DATA(c);
        for (i = 0; i < total; i++)
            ((double *)out)[i] += src[i];
    }
    Py_DECREF(c);
    return 0;
}

/* layer.<method>(*args) with the layer's training flag set to the
 * engine's mode for the call */
static PyObject *call_layer(LayerObject *ly, const char *method,
                            PyObject *args, int training)
{
    PyObject *fn, *r;
    int saved = ly->training;
    fn = PyObject_GetAttrString((PyObject *)ly, method);
    if (!fn)
        return NULL;
    ly->training = training != 0;
    r = PyObject_Call(fn, args, NULL);
    ly->training = saved;
    Py_DECREF(fn);
    return r;
}

static nn_status external_forward(void *ctx, const nn_node_io *io)
{
    LayerObject *ly = ctx;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = PyTuple_New((Py_ssize_t)io->n_in), *r = NULL;
    nn_status s = NN_ERR_EXTERNAL;
    size_t e;
    for (e = 0; args && e < io->n_in; e++) {
        PyObject *x = copy_out(io->dt, io->x[e], io->n, io->in_w[e]);
        if (!x)
            goto exit;
        PyTuple_SET_ITEM(args, (Py_ssize_t)e, x);
    }
    if (args)
        r = call_layer(ly, "forward", args, io->training);
    if (r && copy_in(r, io->dt, io->y, io->n, io->out_w, 0,
                     "the output of forward") == 0)
        s = NN_OK;
exit:
    if (s != NN_OK)
        note_layer(ly, "forward");
    Py_XDECREF(r);
    Py_XDECREF(args);
    PyGILState_Release(gil);
    return s;
}

/* The input gradients backward returned: one array for one input, a
 * list or tuple of one per input otherwise (None where not needed) */
static int take_input_grads(PyObject *r, const nn_node_io *io)
{
    PyObject *seq;
    size_t e;
    int rc = 0;
    if (io->n_in == 1 && !PyList_Check(r) && !PyTuple_Check(r))
        return io->dx[0] ? copy_in(r, io->dt, io->dx[0], io->n, io->in_w[0],
                                   io->dx_acc && io->dx_acc[0],
                                   "the input gradient backward returns")
                         : 0;
    seq = PySequence_Tuple(r);
    if (!seq)
        return -1;
    if ((size_t)PyTuple_GET_SIZE(seq) != io->n_in) {
        PyErr_Format(PyExc_ValueError,
                     "backward must return one input gradient per input "
                     "(%zu), got %zd", io->n_in, PyTuple_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    for (e = 0; e < io->n_in && rc == 0; e++) {
        PyObject *g = PyTuple_GET_ITEM(seq, (Py_ssize_t)e);
        if (!io->dx[e])
            continue;   /* not needed (None is fine) */
        rc = copy_in(g, io->dt, io->dx[e], io->n, io->in_w[e],
                     io->dx_acc && io->dx_acc[e],
                     "each input gradient backward returns");
    }
    Py_DECREF(seq);
    return rc;
}

static nn_status external_backward(void *ctx, const nn_node_io *io)
{
    LayerObject *ly = ctx;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *g = copy_out(io->dt, io->dy, io->n, io->out_w), *args = NULL,
             *r = NULL;
    nn_status s = NN_ERR_EXTERNAL;
    args = g ? PyTuple_Pack(1, g) : NULL;
    if (args)
        r = call_layer(ly, "backward", args, io->training);
    if (r && take_input_grads(r, io) == 0)
        s = NN_OK;
    if (s != NN_OK)
        note_layer(ly, "backward");
    Py_XDECREF(r);
    Py_XDECREF(args);
    Py_XDECREF(g);
    PyGILState_Release(gil);
    return s;
}

static nn_status external_out_width(void *ctx, const size_t *in_w,
                                    size_t n_in, size_t *out_w)
{
    LayerObject *ly = ctx;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = PyTuple_New((Py_ssize_t)n_in), *r = NULL;
    nn_status s = NN_ERR_EXTERNAL;
    Py_ssize_t v;
    size_t e;
    for (e = 0; args && e < n_in; e++) {
        PyObject *w = PyLong_FromSize_t(in_w[e]);
        if (!w)
            goto exit;
        PyTuple_SET_ITEM(args, (Py_ssize_t)e, w);
    }
    if (args)
        r = call_layer(ly, "output_width", args, ly->training);
    if (!r)
        goto exit;
    v = PyIndex_Check(r) && !PyBool_Check(r) ? PyNumber_AsSsize_t(r, NULL)
                                              : -1;
    if (v <= 0 || v > INT_MAX) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError,
                         "output_width must return a positive int (at most "
                         "INT_MAX), got %R", r);
        goto exit;
    }
    *out_w = (size_t)v;
    s = NN_OK;
exit:
    if (s != NN_OK)
        note_layer(ly, "output_width");
    Py_XDECREF(r);
    Py_XDECREF(args);
    PyGILState_Release(gil);
    return s;
}

void nn_external_attach(LayerObject *ly)
{
    ly->L.ext.ctx = ly;
    ly->L.ext.forward = external_forward;
    ly->L.ext.backward = external_backward;
    ly->L.ext.out_width = external_out_width;
}
