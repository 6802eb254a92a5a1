/*
 * convert.c: turning Python inputs into arrays the core can read, with
 * errors that name the argument and what was expected; and NumPy views
 * of C-owned memory.
 */
#include "binding.h"

#include <float.h>
#include <math.h>

uint64_t nn_input_copies = 0;

int nn_typenum(nn_dtype dt)
{
    return dt == NN_F32 ? NPY_FLOAT32 : NPY_FLOAT64;
}

PyObject *nn_dtype_object(int dt)
{
    if (dt < 0)
        Py_RETURN_NONE;
    return (PyObject *)PyArray_DescrFromType(nn_typenum((nn_dtype)dt));
}

/* float32 / float64 (or None when allow_none) -> NN_F32 / NN_F64 / -1 */
int nn_dtype_from_object(PyObject *obj, int *out, int allow_none)
{
    PyArray_Descr *d = NULL;
    if (obj == NULL || obj == Py_None) {
        if (allow_none) {
            *out = -1;
            return 0;
        }
        PyErr_SetString(PyExc_TypeError,
                        "dtype must be numpy.float32 or numpy.float64, got None");
        return -1;
    }
    if (!PyArray_DescrConverter(obj, &d)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "dtype must be numpy.float32 or numpy.float64, got %R", obj);
        return -1;
    }
    if (d->type_num == NPY_FLOAT32)
        *out = NN_F32;
    else if (d->type_num == NPY_FLOAT64)
        *out = NN_F64;
    else {
        PyErr_Format(PyExc_TypeError,
                     "dtype must be numpy.float32 or numpy.float64, got %R", obj);
        Py_DECREF(d);
        return -1;
    }
    Py_DECREF(d);
    return 0;
}

/* Any object -> an ndarray of real numbers (new reference), or TypeError */
static PyArrayObject *as_real_array(PyObject *obj, const char *name)
{
    PyArrayObject *arr;
    char kind;
    if (obj == Py_None) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be an array of real numbers, got None", name);
        return NULL;
    }
    if (PyArray_Check(obj)) {
        Py_INCREF(obj);
        arr = (PyArrayObject *)obj;
    } else {
        arr = (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
        if (!arr) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s must be an array of real numbers, got %.100s",
                         name, Py_TYPE(obj)->tp_name);
            return NULL;
        }
    }
    kind = PyArray_DESCR(arr)->kind;
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        PyErr_Format(PyExc_TypeError,
                     "%s must hold real numbers (float, int or bool), got "
                     "dtype %R", name, (PyObject *)PyArray_DESCR(arr));
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *shape_tuple(PyArrayObject *a)
{
    return PyArray_IntTupleFromIntp(PyArray_NDIM(a), PyArray_DIMS(a));
}

/* Used in place: the right dtype, C order, aligned, native byte order */
static int usable_in_place(PyArrayObject *a, int typenum)
{
    return PyArray_TYPE(a) == typenum && PyArray_ISCARRAY_RO(a) &&
           PyArray_ISNOTSWAPPED(a);
}

static PyArrayObject *cast_to(PyArrayObject *arr, int typenum)
{
    PyArray_Descr *d = PyArray_DescrFromType(typenum);   /* stolen below */
    nn_input_copies++;
    return (PyArrayObject *)PyArray_FromArray(
        arr, d, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED |
                    NPY_ARRAY_FORCECAST | NPY_ARRAY_ENSURECOPY);
}

PyArrayObject *nn_as_input(PyObject *obj, int dt, const char *name, int ndim)
{
    PyArrayObject *arr = as_real_array(obj, name), *out;
    int typenum = nn_typenum((nn_dtype)dt);
    if (!arr)
        return NULL;
    if (ndim > 0 && PyArray_NDIM(arr) != ndim) {
        PyObject *shape = shape_tuple(arr);
        PyErr_Format(PyExc_ValueError,
                     "%s must be a %d-D array%s, got a %d-D array of shape %R",
                     name, ndim, ndim == 2 ? " (batch, features)" : "",
                     PyArray_NDIM(arr), shape);
        Py_XDECREF(shape);
        Py_DECREF(arr);
        return NULL;
    }
    for (int k = 0; k < PyArray_NDIM(arr); k++) {
        if (PyArray_DIM(arr, k) > INT_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "%s has %zd entries along axis %d; nnlayers passes "
                         "sizes to BLAS as int, so at most INT_MAX = %d",
                         name, PyArray_DIM(arr, k), k, INT_MAX);
            Py_DECREF(arr);
            return NULL;
        }
    }
    if (usable_in_place(arr, typenum))
        return arr;
    out = cast_to(arr, typenum);
    Py_DECREF(arr);
    return out;
}

int nn_u64_from_object(PyObject *v, const char *name, int wrap,
                       uint64_t *out)
{
    if (!v || !PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", name);
        return -1;
    }
    *out = wrap ? PyLong_AsUnsignedLongLongMask(v)
                : PyLong_AsUnsignedLongLong(v);
    return PyErr_Occurred() ? -1 : 0;
}

int nn_adopt_dtype(PyObject *obj)
{
    if (PyArray_Check(obj) &&
        PyArray_TYPE((PyArrayObject *)obj) == NPY_FLOAT32)
        return NN_F32;
    return NN_F64;
}

PyArrayObject *nn_new_array(int dt, npy_intp rows, npy_intp cols)
{
    npy_intp dims[2] = {rows, cols};
    return (PyArrayObject *)PyArray_EMPTY(2, dims, nn_typenum((nn_dtype)dt),
                                          0);
}

PyObject *nn_view(PyObject *owner, void *data, int dt, int nd,
                  npy_intp *dims)
{
    PyArray_Descr *d = PyArray_DescrFromType(nn_typenum((nn_dtype)dt));
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, d, nd, dims, NULL,
                                         data, NPY_ARRAY_CARRAY, NULL);
    if (!arr)
        return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, owner) < 0) {
        Py_DECREF(arr);   /* the base reference was stolen either way */
        return NULL;
    }
    return arr;
}

/* labels (N,) of class ids: integral, finite, in [0, C) */
static PyArrayObject *prepare_labels(PyArrayObject *y, size_t C)
{
    PyArrayObject *f = NULL, *labels = NULL;
    npy_intp i, n = PyArray_DIM(y, 0);
    int in_range = 0;   /* a pass below has checked [0, C) already */
    if (PyArray_DESCR(y)->kind == 'f') {
        const double *v;
        f = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)y, NPY_FLOAT64,
                                              NPY_ARRAY_IN_ARRAY |
                                                  NPY_ARRAY_FORCECAST);
        if (!f)
            return NULL;
        v = (const double *)PyArray_DATA(f);
        for (i = 0; i < n; i++) {
            if (isfinite(v[i]) && v[i] == floor(v[i]) &&
                (v[i] < 0 || v[i] >= (double)C)) {
                char buf[40];
                PyOS_snprintf(buf, sizeof buf, "%.17g", v[i]);
                PyErr_Format(PyExc_ValueError,
                             "target labels must be in [0, %zu), got %s at "
                             "index %zd", C, buf, i);
                Py_DECREF(f);
                return NULL;
            }
            if (!isfinite(v[i]) || v[i] != floor(v[i])) {
                char buf[40];
                PyOS_snprintf(buf, sizeof buf, "%.17g", v[i]);
                PyErr_Format(PyExc_ValueError,
                             "target labels must be whole numbers (class ids),"
                             " got %s at index %zd", buf, i);
                Py_DECREF(f);
                return NULL;
            }
        }
        Py_DECREF(f);
        in_range = 1;
    }
    if (PyArray_DESCR(y)->kind == 'u' && PyArray_ITEMSIZE(y) == 8) {
        /* values >= 2^63 would wrap in int64: compare as unsigned */
        PyArrayObject *u = (PyArrayObject *)PyArray_FROM_OTF(
            (PyObject *)y, NPY_UINT64, NPY_ARRAY_IN_ARRAY);
        if (!u)
            return NULL;
        for (i = 0; i < n; i++) {
            uint64_t v = ((const uint64_t *)PyArray_DATA(u))[i];
            if (v >= (uint64_t)C) {
                PyErr_Format(PyExc_ValueError,
                             "target labels must be in [0, %zu), got %llu at "
                             "index %zd", C, (unsigned long long)v, i);
                Py_DECREF(u);
                return NULL;
            }
        }
        Py_DECREF(u);
        in_range = 1;
    }
    if (PyArray_TYPE(y) == NPY_INT64 && PyArray_ISCARRAY_RO(y) &&
        PyArray_ISNOTSWAPPED(y)) {
        Py_INCREF(y);
        labels = y;
    } else {
        labels = (PyArrayObject *)PyArray_FromArray(
            y, PyArray_DescrFromType(NPY_INT64),
            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST |
                NPY_ARRAY_ENSURECOPY);
        if (!labels)
            return NULL;
    }
    for (i = 0; !in_range && i < n; i++) {
        int64_t v = ((const int64_t *)PyArray_DATA(labels))[i];
        if (v < 0 || (uint64_t)v >= (uint64_t)C) {
            PyErr_Format(PyExc_ValueError,
                         "target labels must be in [0, %zu), got %lld at "
                         "index %zd", C, (long long)v, i);
            Py_DECREF(labels);
            return NULL;
        }
    }
    return labels;
}

/* The first of d's n values (dtype dt) outside [lo, hi] (NaN is), or -1;
 * its value into *v */
static npy_intp first_outside(PyArrayObject *d, int dt, double lo, double hi,
                              double *v)
{
    npy_intp i, n = PyArray_SIZE(d);
    for (i = 0; i < n; i++) {
        *v = dt == NN_F32 ? ((const float *)PyArray_DATA(d))[i]
                          : ((const double *)PyArray_DATA(d))[i];
        if (!(*v >= lo && *v <= hi))
            return i;
    }
    return -1;
}

/* (N, 1) -> (N,): class ids given as a column */
static PyArrayObject *column_to_flat(PyArrayObject *arr)
{
    npy_intp dims[1] = {PyArray_DIM(arr, 0)};
    PyArray_Dims shape = {dims, 1};
    PyArrayObject *r = (PyArrayObject *)PyArray_Newshape(arr, &shape,
                                                         NPY_CORDER);
    Py_DECREF(arr);
    return r;
}

int nn_prepare_target(PyObject *y, nn_loss_kind kind, int dt, size_t N,
                      size_t C, const char *name, PyArrayObject **labels,
                      PyArrayObject **dense)
{
    PyArrayObject *arr = as_real_array(y, name);
    int class_ids = kind == NN_LOSS_SOFTMAX_XENT || kind == NN_LOSS_NLL ||
                    kind == NN_LOSS_CATEGORICAL_XENT;
    int rc = -1;
    *labels = NULL;
    *dense = NULL;
    if (arr && class_ids && C > 1 && PyArray_NDIM(arr) == 2 &&
        PyArray_DIM(arr, 1) == 1)
        arr = column_to_flat(arr);
    if (!arr)
        return -1;
    if (PyArray_NDIM(arr) == 1) {
        if ((size_t)PyArray_DIM(arr, 0) != N) {
            PyErr_Format(PyExc_ValueError,
                         "%s has %zd entries but the predictions have %zu "
                         "rows", name, PyArray_DIM(arr, 0), N);
            goto exit;
        }
        if (class_ids) {
            *labels = prepare_labels(arr, C);
            rc = *labels ? 0 : -1;
            goto exit;
        }
        if (C != 1) {
            PyErr_Format(PyExc_ValueError,
                         "%s must have shape (%zu, %zu) like the "
                         "predictions; a 1-D target needs one output column",
                         name, N, C);
            goto exit;
        }
    } else if (PyArray_NDIM(arr) == 2) {
        if ((size_t)PyArray_DIM(arr, 0) != N ||
            (size_t)PyArray_DIM(arr, 1) != C) {
            PyObject *shape = shape_tuple(arr);
            PyErr_Format(PyExc_ValueError,
                         "%s must have shape (%zu, %zu) like the "
                         "predictions%s, got %R", name, N, C,
                         class_ids ? " or (N,) or (N, 1) of class ids" : "",
                         shape);
            Py_XDECREF(shape);
            goto exit;
        }
    } else {
        PyObject *shape = shape_tuple(arr);
        PyErr_Format(PyExc_ValueError,
                     "%s must be 1-D (N,) or 2-D (N, C), got shape %R",
                     name, shape);
        Py_XDECREF(shape);
        goto exit;
    }
    /* dense rows (N, C) in the predictions' dtype */
    {
        npy_intp dims[2] = {(npy_intp)N, (npy_intp)C};
        PyArray_Dims newshape = {dims, 2};
        PyArrayObject *d = nn_as_input((PyObject *)arr, dt, name, 0);
        if (!d)
            goto exit;
        if (PyArray_NDIM(d) == 1) {
            PyArrayObject *r = (PyArrayObject *)PyArray_Newshape(d, &newshape,
                                                                 NPY_CORDER);
            Py_DECREF(d);
            if (!r)
                goto exit;
            d = r;
        }
        if (kind == NN_LOSS_BINARY_XENT || kind == NN_LOSS_BINARY_XENT_PROBS) {
            double v;
            npy_intp i = first_outside(d, dt, 0, 1, &v);
            if (i >= 0) {
                char buf[40];
                PyOS_snprintf(buf, sizeof buf, "%.17g", v);
                PyErr_Format(PyExc_ValueError,
                             "binary cross-entropy targets must be in "
                             "[0, 1], got %s at flat index %zd", buf, i);
                Py_DECREF(d);
                goto exit;
            }
        }
        *dense = d;
        rc = 0;
    }
exit:
    Py_DECREF(arr);
    return rc;
}

/* 1 when every weight of d (dtype dt) is finite and >= 0; else 0 with a
 * ValueError naming the first bad one */
static int weights_valid(PyArrayObject *d, int dt, const char *name)
{
    double v;
    npy_intp i = first_outside(d, dt, 0, DBL_MAX, &v);   /* also inf, NaN */
    char buf[40];
    if (i < 0)
        return 1;
    PyOS_snprintf(buf, sizeof buf, "%.17g", v);
    PyErr_Format(PyExc_ValueError,
                 "%s must be finite and >= 0, got %s at index %zd", name, buf,
                 i);
    return 0;
}

PyArrayObject *nn_prepare_row_weights(PyObject *w, int dt, size_t N,
                                      const char *name)
{
    PyArrayObject *arr = as_real_array(w, name), *d;
    if (!arr)
        return NULL;
    if (PyArray_NDIM(arr) != 1 || (size_t)PyArray_DIM(arr, 0) != N) {
        PyObject *shape = shape_tuple(arr);
        PyErr_Format(PyExc_ValueError,
                     "%s must have shape (%zu,), one weight per row of the "
                     "predictions, got %R", name, N, shape);
        Py_XDECREF(shape);
        Py_DECREF(arr);
        return NULL;
    }
    d = nn_as_input((PyObject *)arr, dt, name, 1);
    Py_DECREF(arr);
    if (!d)
        return NULL;
    if (!weights_valid(d, dt, name)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

void nn_set_status_error(nn_module_state *st, nn_status s, const char *what)
{
    if (PyErr_Occurred())
        return;
    switch (s) {
    case NN_OK:
        return;
    case NN_ERR_NOMEM:
        PyErr_NoMemory();
        return;
    case NN_ERR_NONFINITE:
        PyErr_Format(st->NonFiniteError, "%s: the loss is not finite", what);
        return;
    case NN_ERR_INTERRUPTED:
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return;
    case NN_ERR_OVERFLOW:
        PyErr_Format(PyExc_ValueError,
                     "%s: sizes too large (a dimension passed to BLAS must "
                     "be at most INT_MAX = %d, and byte counts must fit in "
                     "size_t)", what, INT_MAX);
        return;
    default:
        PyErr_Format(PyExc_ValueError, "%s: %s", what, nn_status_str(s));
        return;
    }
}

/* The first row of a (N, D) C-contiguous array of dtype dt holding a NaN
 * or an infinity, its column in *col; N when every value is finite */
static size_t first_nonfinite_row(PyArrayObject *a, int dt, size_t *col)
{
    size_t N = (size_t)PyArray_DIM(a, 0), D = (size_t)PyArray_DIM(a, 1), n, d;
    const void *x = PyArray_DATA(a);
    n = dt == NN_F32 ? nn_first_nonfinite_row_f32(x, N, D)
                     : nn_first_nonfinite_row_f64(x, N, D);
    for (d = 0; n < N && d < D; d++) {
        double v = dt == NN_F32 ? ((const float *)x)[n * D + d]
                                : ((const double *)x)[n * D + d];
        if (!isfinite(v))
            break;
    }
    *col = d;
    return n;
}

int nn_check_finite(PyArrayObject *a, int dt, const char *name)
{
    size_t col = 0, row = first_nonfinite_row(a, dt, &col);
    double v;
    char buf[40];
    if (row == (size_t)PyArray_DIM(a, 0))
        return 0;
    v = dt == NN_F32 ? ((const float *)PyArray_DATA(a))[row * PyArray_DIM(a, 1) + col]
                     : ((const double *)PyArray_DATA(a))[row * PyArray_DIM(a, 1) + col];
    PyOS_snprintf(buf, sizeof buf, "%g", v);
    PyErr_Format(PyExc_ValueError,
                 "%s holds %s at row %zu (column %zu): a network cannot learn from "
                 "it; drop or impute such rows before training", name, buf, row,
                 col);
    return -1;
}

PyArrayObject *nn_prepare_weights(PyObject *w, int dt, size_t N,
                                  const char *name)
{
    PyArrayObject *a = nn_as_input(w, dt, name, 1);
    if (!a)
        return NULL;
    if ((size_t)PyArray_DIM(a, 0) != N) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have one weight per row (%zu), got %zd", name, N,
                     PyArray_DIM(a, 0));
        Py_DECREF(a);
        return NULL;
    }
    if (!weights_valid(a, dt, name)) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

int nn_users_claim(nn_module_state *st, nn_users *u, int write,
                   const char *what)
{
    if (u->writer || (write && u->readers)) {
        PyErr_Format(st->BusyError,
                     "%s is in use by another thread; a model serves many "
                     "readers (forward, predict) or one writer (training, "
                     "backward, zero_grad, an optimizer step) at a time",
                     what);
        return -1;
    }
    if (write)
        u->writer = 1;
    else
        u->readers++;
    return 0;
}

void nn_users_release(nn_users *u, int write)
{
    if (write)
        u->writer = 0;
    else if (u->readers > 0)
        u->readers--;
}

int nn_claim(nn_module_state *st, int *flag, const char *what)
{
    if (*flag) {
        PyErr_Format(st->BusyError,
                     "%s is in use by another thread; an nnlayers object "
                     "serves one call at a time (use one model per thread)",
                     what);
        return -1;
    }
    *flag = 1;
    return 0;
}

int nn_fast_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *const *names, int n,
                 int n_required, PyObject **out)
{
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    int j;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes %d arguments (%zd given)", fname, n, nargs);
        return -1;
    }
    for (j = 0; j < n; j++)
        out[j] = j < nargs ? args[j] : NULL;
    for (i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < n; j++)
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0)
                break;
        if (j == n) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument %R", fname,
                         key);
            return -1;
        }
        if (out[j]) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         names[j]);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    for (j = 0; j < n_required; j++) {
        if (!out[j]) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %d)",
                         fname, names[j], j + 1);
            return -1;
        }
    }
    return 0;
}
