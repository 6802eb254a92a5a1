/*
 * loss.c: the Loss type. forward(pred, target, sample_weight=None)
 * computes the batch-averaged loss and, in the same pass, dL/dpred, which
 * backward() hands out. A loss is a family ("softmax_cross_entropy", ...)
 * with its options (from_logits, Huber's delta), which pick the core's
 * kind. Also the names of the training metrics (Model._fit_epoch's
 * metrics=).
 */
#include "binding.h"

#include <math.h>
#include <string.h>

/* The loss families: the core's kind on logits and on probabilities
 * (-1: the family takes no from_logits=False) */
static const struct {
    const char *name;
    int logits, probs;
} families[] = {
    {"softmax_cross_entropy", NN_LOSS_SOFTMAX_XENT, NN_LOSS_CATEGORICAL_XENT},
    {"binary_cross_entropy", NN_LOSS_BINARY_XENT, NN_LOSS_BINARY_XENT_PROBS},
    {"mse", NN_LOSS_MSE, -1},
    {"nll", NN_LOSS_NLL, -1},
    {"huber", NN_LOSS_HUBER, -1},
    {"mae", NN_LOSS_MAE, -1},
};
#define N_FAMILIES (sizeof families / sizeof families[0])

static const char *metric_names[NN_METRIC_COUNT] = {
    "mse", "mae", "binary_accuracy", "top_k_categorical_accuracy"};

/* The family of a core kind */
static size_t family_of(nn_loss_kind k)
{
    size_t f;
    for (f = 0; f < N_FAMILIES; f++)
        if (families[f].logits == (int)k || families[f].probs == (int)k)
            break;
    return f;
}

/* Whether accuracy means something for a loss's predictions */
int nn_loss_is_classification(nn_loss_kind k)
{
    return k != NN_LOSS_MSE && k != NN_LOSS_HUBER && k != NN_LOSS_MAE;
}

/* Huber's delta from delta_o (None: 1.0): a finite number > 0 */
static int parse_delta(PyObject *delta_o, double *delta)
{
    if (delta_o == Py_None) {
        *delta = 1.0;
        return 0;
    }
    *delta = PyFloat_AsDouble(delta_o);
    if (*delta == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "delta must be a number, got %.100s",
                     Py_TYPE(delta_o)->tp_name);
        return -1;
    }
    if (!(isfinite(*delta) && *delta > 0)) {
        PyErr_Format(PyExc_ValueError,
                     "delta must be a finite number > 0, got %R", delta_o);
        return -1;
    }
    return 0;
}

/* Everything is checked before the loss changes (a re-run __init__ that
 * fails leaves it as it was) */
static int Loss_init(LossObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"kind", "from_logits", "delta", NULL};
    const char *name;
    int from_logits = 1;
    PyObject *delta_o = Py_None;
    double arg = 0;
    size_t f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|pO:Loss", kwlist, &name,
                                     &from_logits, &delta_o))
        return -1;
    for (f = 0; f < N_FAMILIES; f++)
        if (strcmp(name, families[f].name) == 0)
            break;
    if (f == N_FAMILIES) {
        PyErr_Format(PyExc_ValueError,
                     "unknown loss '%s' (softmax_cross_entropy, "
                     "binary_cross_entropy, mse, nll, huber or mae)", name);
        return -1;
    }
    if (!from_logits && families[f].probs < 0) {
        PyErr_Format(PyExc_ValueError,
                     "from_logits=False applies to the cross-entropies "
                     "(softmax_cross_entropy, binary_cross_entropy), not to "
                     "'%s'", name);
        return -1;
    }
    if (families[f].logits == NN_LOSS_HUBER) {
        if (parse_delta(delta_o, &arg) < 0)
            return -1;
    } else if (delta_o != Py_None) {
        PyErr_Format(PyExc_ValueError,
                     "delta applies to the huber loss only, not to '%s'",
                     name);
        return -1;
    }
    self->kind = (nn_loss_kind)(from_logits ? families[f].logits
                                            : families[f].probs);
    self->arg = arg;
    Py_CLEAR(self->grad);
    return 0;
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

/* The arrays of one call, validated: pred (N, C >= 1; N >= 1 when
 * need_rows), the target as this loss reads it, sample weights (NULL
 * when w_o is None) */
typedef struct {
    int dt;
    size_t N, C;
    PyArrayObject *pred, *labels, *dense, *w;
} loss_call;

static void loss_call_free(loss_call *c)
{
    Py_CLEAR(c->pred);
    Py_CLEAR(c->labels);
    Py_CLEAR(c->dense);
    Py_CLEAR(c->w);
}

static int loss_call_prepare(LossObject *self, loss_call *c, PyObject *pred_o,
                             PyObject *target_o, PyObject *w_o, int need_rows)
{
    memset(c, 0, sizeof *c);
    c->dt = nn_adopt_dtype(pred_o);
    c->pred = nn_as_input(pred_o, c->dt, "pred", 2);
    if (!c->pred)
        return -1;
    c->N = (size_t)PyArray_DIM(c->pred, 0);
    c->C = (size_t)PyArray_DIM(c->pred, 1);
    if (need_rows && c->N == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pred has no rows: a loss averages over the batch, "
                        "so it needs N >= 1");
        return -1;
    }
    if (c->C == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pred must have at least one column (N, C >= 1)");
        return -1;
    }
    if (nn_prepare_target(target_o, self->kind, c->dt, c->N, c->C, "target",
                          &c->labels, &c->dense) < 0)
        return -1;
    if (w_o != Py_None) {
        c->w = nn_prepare_row_weights(w_o, c->dt, c->N, "sample_weight");
        if (!c->w)
            return -1;
    }
    return 0;
}

#define CALL_DATA(a) ((a) ? PyArray_DATA(a) : NULL)

/* The batch's loss into *value and dL/dpred into a new (N, C) array,
 * returned (NULL with an exception set on failure). Touches no state of
 * self. */
static PyArrayObject *loss_value_and_grad(LossObject *self, PyObject *args,
                                          PyObject *kw, const char *fmt,
                                          double *value)
{
    static char *kwlist[] = {"pred", "target", "sample_weight", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *pred_o, *target_o, *w_o = Py_None;
    PyArrayObject *grad = NULL;
    loss_call c;
    nn_status s;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &pred_o,
                                            &target_o, &w_o))
        return NULL;
    if (loss_call_prepare(self, &c, pred_o, target_o, w_o, 1) < 0)
        goto exit;
    grad = nn_new_array(c.dt, (npy_intp)c.N, (npy_intp)c.C);
    if (!grad)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
    s = nn_loss_eval((nn_dtype)c.dt, self->kind, self->arg, value,
                     PyArray_DATA(grad), PyArray_DATA(c.pred),
                     CALL_DATA(c.labels), CALL_DATA(c.dense), CALL_DATA(c.w),
                     c.N, c.C);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "loss");
        Py_CLEAR(grad);
    }
exit:
    loss_call_free(&c);
    return grad;
}

static PyObject *Loss_forward(LossObject *self, PyObject *args, PyObject *kw)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyArrayObject *grad;
    double value = 0;
    if (!st || nn_claim(st, &self->busy, "this loss") < 0)
        return NULL;
    grad = loss_value_and_grad(self, args, kw, "OO|O:forward", &value);
    if (grad)
        Py_XSETREF(self->grad, grad);   /* held for backward() */
    nn_release(&self->busy);
    return grad ? PyFloat_FromDouble(value) : NULL;
}

/* _value(pred, target, sample_weight=None): forward's value without
 * holding a gradient for backward, so evaluate and gradcheck leave a
 * pending forward alone and can share the loss between threads. */
static PyObject *Loss_value(LossObject *self, PyObject *args, PyObject *kw)
{
    double value = 0;
    PyArrayObject *grad =
        loss_value_and_grad(self, args, kw, "OO|O:_value", &value);
    if (!grad)
        return NULL;
    Py_DECREF(grad);
    return PyFloat_FromDouble(value);
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
 * pred > this loss's threshold (C == 1) against the target as this loss
 * reads it; a row with a NaN prediction is never right. The one accuracy
 * of nnlayers. */
static PyObject *Loss_correct(LossObject *self, PyObject *args)
{
    PyObject *pred_o, *target_o, *result = NULL;
    loss_call c;
    double thr = nn_loss_threshold(self->kind);
    size_t n;
    if (!PyArg_ParseTuple(args, "OO:_correct", &pred_o, &target_o))
        return NULL;
    if (loss_call_prepare(self, &c, pred_o, target_o, Py_None, 0) < 0)
        goto exit;
    if (c.dt == NN_F32)
        n = nn_count_correct_f32(PyArray_DATA(c.pred), CALL_DATA(c.labels),
                                 CALL_DATA(c.dense), c.N, c.C, thr);
    else
        n = nn_count_correct_f64(PyArray_DATA(c.pred), CALL_DATA(c.labels),
                                 CALL_DATA(c.dense), c.N, c.C, thr);
    result = PyLong_FromSize_t(n);
exit:
    loss_call_free(&c);
    return result;
}

/* A metric's kind from its name, or -1 with ValueError */
static int metric_from_name(PyObject *name)
{
    int m;
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "a metric is named by a str, got %.100s",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    for (m = 0; m < NN_METRIC_COUNT; m++)
        if (PyUnicode_CompareWithASCIIString(name, metric_names[m]) == 0)
            return m;
    PyErr_Format(PyExc_ValueError,
                 "unknown metric %R (mse, mae, binary_accuracy or "
                 "top_k_categorical_accuracy)", name);
    return -1;
}

/* _metric(name, pred, target, sample_weight=None) -> the metric's sum
 * over rows, as a training step measures it (the kernel alone) */
static PyObject *Loss_metric(LossObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "pred", "target", "sample_weight",
                             NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *name, *pred_o, *target_o, *w_o = Py_None, *result = NULL;
    loss_call c;
    double sum = 0;
    nn_status s;
    int m;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O:_metric", kwlist, &name,
                                     &pred_o, &target_o, &w_o))
        return NULL;
    m = metric_from_name(name);
    if (m < 0 || !st)
        return NULL;
    if (loss_call_prepare(self, &c, pred_o, target_o, w_o, 0) < 0)
        goto exit;
    s = nn_metric_eval((nn_dtype)c.dt, (nn_metric_kind)m, &sum,
                       PyArray_DATA(c.pred), CALL_DATA(c.labels),
                       CALL_DATA(c.dense), CALL_DATA(c.w), c.N, c.C,
                       nn_loss_threshold(self->kind));
    if (s != NN_OK) {
        nn_set_status_error(st, s, "metric");
        goto exit;
    }
    result = PyFloat_FromDouble(sum);
exit:
    loss_call_free(&c);
    return result;
}

int nn_parse_metrics(PyObject *spec, size_t n_out, unsigned *masks)
{
    size_t j;
    if ((!PyList_Check(spec) && !PyTuple_Check(spec)) ||
        (size_t)PySequence_Size(spec) != n_out) {
        PyErr_Format(PyExc_ValueError,
                     "metrics must be a list with one tuple of metric names "
                     "per output (%zu), e.g. [(\"mse\", \"mae\")]", n_out);
        return -1;
    }
    for (j = 0; j < n_out; j++) {
        PyObject *names = PySequence_Fast_GET_ITEM(spec, j);
        Py_ssize_t i;
        masks[j] = 0;
        if (names == Py_None)
            continue;
        if (!PyList_Check(names) && !PyTuple_Check(names)) {
            PyErr_Format(PyExc_TypeError,
                         "metrics[%zu] must be a tuple of metric names or "
                         "None, got %.100s", j, Py_TYPE(names)->tp_name);
            return -1;
        }
        for (i = 0; i < PySequence_Size(names); i++) {
            int m = metric_from_name(PySequence_Fast_GET_ITEM(names, i));
            if (m < 0)
                return -1;
            masks[j] |= 1u << m;
        }
    }
    return 0;
}

PyObject *nn_metric_sums_list(const double *sums, const unsigned *masks,
                              size_t n_out)
{
    PyObject *list = PyList_New((Py_ssize_t)n_out);
    size_t j;
    int m;
    for (j = 0; list && j < n_out; j++) {
        PyObject *d = PyDict_New();
        for (m = 0; d && m < NN_METRIC_COUNT; m++) {
            PyObject *v;
            if (!(masks[j] & (1u << m)))
                continue;
            v = PyFloat_FromDouble(sums[j * NN_METRIC_COUNT + m]);
            if (!v || PyDict_SetItemString(d, metric_names[m], v) < 0)
                Py_CLEAR(d);
            Py_XDECREF(v);
        }
        if (!d)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)j, d);
    }
    return list;
}

static PyObject *Loss_get_kind(LossObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(families[family_of(self->kind)].name);
}

/* None for the families that take no from_logits */
static PyObject *Loss_get_from_logits(LossObject *self, void *c)
{
    size_t f = family_of(self->kind);
    (void)c;
    if (families[f].probs < 0)
        Py_RETURN_NONE;
    return PyBool_FromLong(self->kind == (nn_loss_kind)families[f].logits);
}

static PyObject *Loss_get_delta(LossObject *self, void *c)
{
    (void)c;
    if (self->kind != NN_LOSS_HUBER)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->arg);
}

static PyObject *Loss_get_threshold(LossObject *self, void *c)
{
    (void)c;
    return PyFloat_FromDouble(nn_loss_threshold(self->kind));
}

static PyObject *Loss_get_is_classification(LossObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(nn_loss_is_classification(self->kind));
}

static PyMethodDef Loss_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Loss_forward,
     METH_VARARGS | METH_KEYWORDS,
     "forward(pred, target, sample_weight=None) -> float\n\nThe loss "
     "averaged over the batch (sum over rows of sample_weight[n] times row "
     "n's loss, divided by N); also computes dL/dpred for backward()."},
    {"_value", (PyCFunction)(void (*)(void))Loss_value,
     METH_VARARGS | METH_KEYWORDS,
     "_value(pred, target, sample_weight=None) -> float: forward's value, "
     "holding no gradient for backward()"},
    {"backward", (PyCFunction)Loss_backward, METH_NOARGS,
     "backward() -> dL/dpred (N, C) of the last forward"},
    {"_correct", (PyCFunction)Loss_correct, METH_VARARGS,
     "_correct(pred, target) -> rows classified right"},
    {"_metric", (PyCFunction)(void (*)(void))Loss_metric,
     METH_VARARGS | METH_KEYWORDS,
     "_metric(name, pred, target, sample_weight=None) -> the sum over rows "
     "of a training metric (mse, mae, binary_accuracy, "
     "top_k_categorical_accuracy)"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Loss_getset[] = {
    {"kind", (getter)Loss_get_kind, NULL, "loss family", NULL},
    {"from_logits", (getter)Loss_get_from_logits, NULL,
     "False: the predictions are probabilities (clipped as Keras does); "
     "None for the losses that take no from_logits", NULL},
    {"delta", (getter)Loss_get_delta, NULL, "Huber's delta (None: others)",
     NULL},
    {"threshold", (getter)Loss_get_threshold, NULL,
     "where a single output counts as positive for accuracy (0 for a "
     "logit, 0.5 for a probability)", NULL},
    {"is_classification", (getter)Loss_get_is_classification, NULL,
     "whether accuracy is meaningful for this loss", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Loss_slots[] = {
    {Py_tp_doc, "Loss(kind, from_logits=True, delta=None): the C loss behind "
                "the nnlayers loss classes"},
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
