/*
 * loss.c: the Loss type. forward(pred, target) computes the batch-averaged
 * loss and, in the same pass, dL/dpred, which backward() hands out.
 */
#include "binding.h"

#include <string.h>

static const char *loss_names[NN_LOSS_KIND_COUNT] = {
    "softmax_cross_entropy", "binary_cross_entropy", "mse", "nll"};

/* Whether accuracy means something for a loss's predictions */
int nn_loss_is_classification(nn_loss_kind k)
{
    return k != NN_LOSS_MSE;
}

static int Loss_init(LossObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"kind", NULL};
    const char *name;
    int k;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:Loss", kwlist, &name))
        return -1;
    for (k = 0; k < NN_LOSS_KIND_COUNT; k++) {
        if (strcmp(name, loss_names[k]) == 0) {
            self->kind = (nn_loss_kind)k;
            Py_CLEAR(self->grad);
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "unknown loss '%s' (softmax_cross_entropy, "
                 "binary_cross_entropy, mse or nll)", name);
    return -1;
}

static int Loss_traverse(LossObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->grad);
    return 0;
}

static int Loss_clear(LossObject *self)
{
    Py_CLEAR(self->grad);
    return 0;
}

static void Loss_dealloc(LossObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Loss_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Loss_forward(LossObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"pred", "target", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *pred_o, *target_o, *result = NULL;
    PyArrayObject *pred = NULL, *labels = NULL, *dense = NULL, *grad = NULL;
    double value = 0;
    size_t N, C;
    nn_status s;
    int dt;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:forward", kwlist, &pred_o,
                                     &target_o))
        return NULL;
    if (!st || nn_claim(st, &self->busy, "this loss") < 0)
        return NULL;
    dt = nn_adopt_dtype(pred_o);
    pred = nn_as_input(pred_o, dt, "pred", 2);
    if (!pred)
        goto exit;
    N = (size_t)PyArray_DIM(pred, 0);
    C = (size_t)PyArray_DIM(pred, 1);
    if (N == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pred has no rows: a loss averages over the batch, "
                        "so it needs N >= 1");
        goto exit;
    }
    if (C == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pred must have at least one column (N, C >= 1)");
        goto exit;
    }
    if (nn_prepare_target(target_o, self->kind, dt, N, C, "target", &labels,
                          &dense) < 0)
        goto exit;
    grad = nn_new_array(dt, (npy_intp)N, (npy_intp)C);
    if (!grad)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
    s = nn_loss_eval((nn_dtype)dt, self->kind, &value, PyArray_DATA(grad),
                     PyArray_DATA(pred), labels ? PyArray_DATA(labels) : NULL,
                     dense ? PyArray_DATA(dense) : NULL, NULL, N, C);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "loss");
        goto exit;
    }
    Py_XSETREF(self->grad, (PyArrayObject *)Py_NewRef(grad));
    result = PyFloat_FromDouble(value);
exit:
    Py_XDECREF(pred);
    Py_XDECREF(labels);
    Py_XDECREF(dense);
    Py_XDECREF(grad);
    nn_release(&self->busy);
    return result;
}

static PyObject *Loss_backward(LossObject *self, PyObject *na)
{
    PyObject *g;
    (void)na;
    if (!self->grad) {
        PyErr_SetString(PyExc_ValueError,
                        "backward() needs a forward(pred, target) first (each "
                        "forward serves one backward)");
        return NULL;
    }
    g = (PyObject *)self->grad;
    self->grad = NULL;   /* handed over: no copy */
    return g;
}

/* _correct(pred, target) -> rows classified right: argmax (C > 1) or
 * logit > 0 (C == 1) against the target as this loss reads it; a row
 * with a NaN prediction is never right. The one accuracy of nnlayers. */
static PyObject *Loss_correct(LossObject *self, PyObject *args)
{
    PyObject *pred_o, *target_o, *result = NULL;
    PyArrayObject *pred = NULL, *labels = NULL, *dense = NULL;
    size_t N, C, n = 0;
    int dt;
    if (!PyArg_ParseTuple(args, "OO:_correct", &pred_o, &target_o))
        return NULL;
    dt = nn_adopt_dtype(pred_o);
    pred = nn_as_input(pred_o, dt, "pred", 2);
    if (!pred)
        return NULL;
    N = (size_t)PyArray_DIM(pred, 0);
    C = (size_t)PyArray_DIM(pred, 1);
    if (C == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pred must have at least one column (N, C >= 1)");
        goto exit;
    }
    if (nn_prepare_target(target_o, self->kind, dt, N, C, "target", &labels,
                          &dense) < 0)
        goto exit;
    if (dt == NN_F32)
        n = nn_count_correct_f32(PyArray_DATA(pred),
                                 labels ? PyArray_DATA(labels) : NULL,
                                 dense ? PyArray_DATA(dense) : NULL, N, C);
    else
        n = nn_count_correct_f64(PyArray_DATA(pred),
                                 labels ? PyArray_DATA(labels) : NULL,
                                 dense ? PyArray_DATA(dense) : NULL, N, C);
    result = PyLong_FromSize_t(n);
exit:
    Py_XDECREF(pred);
    Py_XDECREF(labels);
    Py_XDECREF(dense);
    return result;
}

static PyObject *Loss_get_kind(LossObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(loss_names[self->kind]);
}

static PyMethodDef Loss_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Loss_forward,
     METH_VARARGS | METH_KEYWORDS,
     "forward(pred, target) -> float\n\nThe loss averaged over the batch; "
     "also computes dL/dpred for backward()."},
    {"backward", (PyCFunction)Loss_backward, METH_NOARGS,
     "backward() -> dL/dpred (N, C) of the last forward"},
    {"_correct", (PyCFunction)Loss_correct, METH_VARARGS,
     "_correct(pred, target) -> rows classified right"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Loss_getset[] = {
    {"kind", (getter)Loss_get_kind, NULL, "loss kind", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Loss_slots[] = {
    {Py_tp_doc, "Loss(kind): the C loss behind the nnlayers loss classes"},
    {Py_tp_init, Loss_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Loss_dealloc},
    {Py_tp_traverse, Loss_traverse},
    {Py_tp_clear, Loss_clear},
    {Py_tp_call, Loss_forward},
    {Py_tp_methods, Loss_methods},
    {Py_tp_getset, Loss_getset},
    {0, NULL}};

PyType_Spec nn_loss_spec = {
    "nnlayers._core.Loss", sizeof(LossObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Loss_slots};
