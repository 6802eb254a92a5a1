/*
 * sequential.c: the Sequential type. It owns one block for all parameters
 * and one for all gradients (the layers' memory moves into them), an
 * nn_net with the activation workspace, and runs the whole chain in one C
 * call per direction:
 *   forward  -> nn_net_forward   (Sequential_forward)
 *   backward -> nn_net_backward  (Sequential_backward)
 *   train_step -> nn_net_train_step, one epoch of fit -> nn_net_fit_epoch
 */
#include "binding.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define LAYER(self, i) ((LayerObject *)PyTuple_GET_ITEM((self)->layers, (i)))

/* Move every Linear layer's parameters and gradients into one block each */
static int pack_parameters(SequentialObject *self, nn_module_state *st)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(self->layers);
    size_t es = nn_dtype_size(self->dtype), total = 0, off = 0;
    for (i = 0; i < n; i++)
        total += nn_layer_param_count(&LAYER(self, i)->L);
    self->pbuf = nn_buffer_new(st, total * es);
    self->gbuf = nn_buffer_new(st, total * es);
    if (!self->pbuf || !self->gbuf)
        return -1;
    for (i = 0; i < n; i++) {
        LayerObject *ly = LAYER(self, i);
        size_t cnt = nn_layer_param_count(&ly->L), nw;
        char *p = (char *)((BufferObject *)self->pbuf)->data + off * es;
        char *g = (char *)((BufferObject *)self->gbuf)->data + off * es;
        if (cnt == 0)
            continue;
        nw = ly->L.in * ly->L.out;
        memcpy(p, ly->L.W, nw * es);
        memcpy(g, ly->L.dW, nw * es);
        if (ly->L.b) {
            memcpy(p + nw * es, ly->L.b, ly->L.out * es);
            memcpy(g + nw * es, ly->L.db, ly->L.out * es);
        }
        /* keep the old buffers alive for views taken before */
        if (PyList_Append(ly->retired, ly->pbuf) < 0 ||
            PyList_Append(ly->retired, ly->gbuf) < 0)
            return -1;
        Py_SETREF(ly->pbuf, Py_NewRef(self->pbuf));
        Py_SETREF(ly->gbuf, Py_NewRef(self->gbuf));
        ly->L.W = p;
        ly->L.dW = g;
        ly->L.b = ly->L.b ? p + nw * es : NULL;
        ly->L.db = ly->L.db ? g + nw * es : NULL;
        off += cnt;
    }
    return 0;
}

static int Sequential_init(SequentialObject *self, PyObject *args,
                           PyObject *kw)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    Py_ssize_t i, j, n = PyTuple_GET_SIZE(args);
    nn_layer **ptrs = NULL;
    int dt = -1, rc = -1;
    nn_status s;
    if (!st)
        return -1;
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError,
                        "Sequential takes layers as positional arguments");
        return -1;
    }
    if (self->layers) {
        PyErr_SetString(PyExc_RuntimeError, "a Sequential is initialised once");
        return -1;
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "Sequential needs at least one layer");
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *o = PyTuple_GET_ITEM(args, i);
        LayerObject *ly;
        if (!nn_layer_check(o, st)) {
            PyErr_Format(PyExc_TypeError,
                         "Sequential takes Layer objects; argument %zd is "
                         "%.100s", i, Py_TYPE(o)->tp_name);
            return -1;
        }
        ly = (LayerObject *)o;
        if (ly->model) {
            PyErr_Format(PyExc_ValueError,
                         "layer %zd (%R) already belongs to another "
                         "Sequential; a layer can be in one model only "
                         "(make a new layer or use copy.deepcopy)", i, o);
            return -1;
        }
        for (j = 0; j < i; j++) {
            if (PyTuple_GET_ITEM(args, j) == o) {
                PyErr_Format(PyExc_ValueError,
                             "layer %zd is the same object as layer %zd; "
                             "each layer can appear once", i, j);
                return -1;
            }
        }
        if (ly->dtype >= 0) {
            if (dt >= 0 && dt != ly->dtype) {
                PyErr_Format(PyExc_TypeError,
                             "mixed dtypes: layer %zd (%R) is %s but an "
                             "earlier layer is %s; all layers of a "
                             "Sequential share one dtype", i, o,
                             ly->dtype == NN_F32 ? "float32" : "float64",
                             dt == NN_F32 ? "float32" : "float64");
                return -1;
            }
            dt = ly->dtype;
        }
    }
    self->dtype = dt < 0 ? NN_F32 : (nn_dtype)dt;
    self->layers = Py_NewRef(args);
    if (pack_parameters(self, st) < 0)
        goto exit;
    ptrs = PyMem_Malloc(n * sizeof *ptrs);
    if (!ptrs) {
        PyErr_NoMemory();
        goto exit;
    }
    for (i = 0; i < n; i++)
        ptrs[i] = &LAYER(self, i)->L;
    s = nn_net_init(&self->net, self->dtype, ptrs, (size_t)n);
    if (s != NN_OK) {
        nn_set_status_error(st, s, "Sequential");
        goto exit;
    }
    self->net_ready = 1;
    for (i = 0; i < n; i++)
        LAYER(self, i)->model = (PyObject *)self;
    rc = 0;
exit:
    PyMem_Free(ptrs);
    return rc;
}

static int Sequential_traverse(SequentialObject *self, visitproc visit,
                               void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->layers);
    Py_VISIT(self->pbuf);
    Py_VISIT(self->gbuf);
    Py_VISIT(self->saved_in);
    return 0;
}

static void detach_layers(SequentialObject *self)
{
    Py_ssize_t i;
    if (!self->layers)
        return;
    for (i = 0; i < PyTuple_GET_SIZE(self->layers); i++)
        if (LAYER(self, i)->model == (PyObject *)self)
            LAYER(self, i)->model = NULL;
}

static int Sequential_clear(SequentialObject *self)
{
    Py_CLEAR(self->saved_in);
    self->can_backward = 0;
    return 0;
}

static void Sequential_dealloc(SequentialObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Sequential_clear(self);
    detach_layers(self);
    if (self->net_ready)
        nn_net_free(&self->net);
    Py_CLEAR(self->layers);
    Py_CLEAR(self->pbuf);
    Py_CLEAR(self->gbuf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Claim the model and each of its layers for one call */
static int claim_model(nn_module_state *st, SequentialObject *self)
{
    Py_ssize_t i;
    if (!self->net_ready) {
        PyErr_SetString(PyExc_RuntimeError, "Sequential was not initialised");
        return -1;
    }
    if (nn_claim(st, &self->busy, "this Sequential") < 0)
        return -1;
    for (i = 0; i < PyTuple_GET_SIZE(self->layers); i++) {
        if (LAYER(self, i)->busy) {
            self->busy = 0;
            return nn_claim(st, &LAYER(self, i)->busy, "a layer of this model");
        }
    }
    return 0;
}

/* Widths for an input of D columns, with a message naming the layer */
static int resolve(SequentialObject *self, size_t D, const char *name)
{
    size_t bad = 0;
    nn_status s = nn_net_resolve(&self->net, D, &bad);
    if (s == NN_ERR_SHAPE) {
        size_t w = D, i;
        for (i = 0; i < bad; i++)   /* the width layer `bad` receives */
            if (LAYER(self, i)->L.kind == NN_LINEAR)
                w = LAYER(self, i)->L.out;
        PyErr_Format(PyExc_ValueError,
                     "%s has %zu columns, but layer %zu (%R) expects an "
                     "input width of %zu (it receives %zu)", name, D, bad,
                     (PyObject *)LAYER(self, bad), LAYER(self, bad)->L.in, w);
        return -1;
    }
    return s == NN_OK ? 0 : -1;
}

/* The model's input as the core reads it: 2-D, the model's dtype, widths
 * resolved for its columns. *N, *D receive its shape. */
static PyArrayObject *model_input(SequentialObject *self, PyObject *x,
                                  const char *name, size_t *N, size_t *D)
{
    PyArrayObject *xa = nn_as_input(x, self->dtype, name, 2);
    if (!xa)
        return NULL;
    *N = (size_t)PyArray_DIM(xa, 0);
    *D = (size_t)PyArray_DIM(xa, 1);
    if (resolve(self, *D, name) < 0) {
        Py_DECREF(xa);
        return NULL;
    }
    return xa;
}

static PyObject *Sequential_forward(SequentialObject *self, PyObject *x)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyArrayObject *xa = NULL, *out = NULL;
    PyObject *result = NULL;
    nn_status s;
    size_t N, D;
    if (!st || claim_model(st, self) < 0)
        return NULL;
    xa = model_input(self, x, "x", &N, &D);
    if (!xa)
        goto exit;
    out = nn_new_array(self->dtype, (npy_intp)N,
                       (npy_intp)self->net.width[self->net.n_layers]);
    if (!out)
        goto exit;
    Py_CLEAR(self->saved_in);
    self->can_backward = 0;
    Py_BEGIN_ALLOW_THREADS
    s = nn_net_forward(&self->net, PyArray_DATA(out), PyArray_DATA(xa), N, D);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "forward");
        goto exit;
    }
    self->saved_in = (PyArrayObject *)Py_NewRef(xa);
    self->can_backward = 1;
    result = Py_NewRef(out);
exit:
    Py_XDECREF(xa);
    Py_XDECREF(out);
    nn_release(&self->busy);
    return result;
}

static PyObject *Sequential_call(SequentialObject *self, PyObject *args,
                                 PyObject *kw)
{
    PyObject *x;
    static char *kwlist[] = {"x", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:__call__", kwlist, &x))
        return NULL;
    return Sequential_forward(self, x);
}

static PyObject *Sequential_backward(SequentialObject *self, PyObject *gout)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyArrayObject *ga = NULL, *gx = NULL;
    PyObject *result = NULL;
    nn_status s;
    size_t N, D, W;
    if (!st || claim_model(st, self) < 0)
        return NULL;
    if (!self->can_backward) {
        PyErr_SetString(PyExc_ValueError,
                        "backward() needs a forward() first: the VJP is "
                        "taken at the last forward's input (and each forward "
                        "serves one backward)");
        goto exit;
    }
    ga = nn_as_input(gout, self->dtype, "grad_output", 2);
    if (!ga)
        goto exit;
    N = self->net.batch;
    D = self->net.width[0];
    W = self->net.width[self->net.n_layers];
    if ((size_t)PyArray_DIM(ga, 0) != N || (size_t)PyArray_DIM(ga, 1) != W) {
        PyErr_Format(PyExc_ValueError,
                     "grad_output must have the shape of the last forward's "
                     "output (%zu, %zu), got (%zd, %zd)", N, W,
                     PyArray_DIM(ga, 0), PyArray_DIM(ga, 1));
        goto exit;
    }
    gx = nn_new_array(self->dtype, (npy_intp)N, (npy_intp)D);
    if (!gx)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
    s = nn_net_backward(&self->net, PyArray_DATA(gx), PyArray_DATA(ga));
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(st, s, "backward");
        goto exit;
    }
    self->can_backward = 0;
    Py_CLEAR(self->saved_in);
    result = Py_NewRef(gx);
exit:
    Py_XDECREF(ga);
    Py_XDECREF(gx);
    nn_release(&self->busy);
    return result;
}

static PyObject *Sequential_check_idle(SequentialObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    (void)na;
    if (!st || claim_model(st, self) < 0)
        return NULL;
    nn_release(&self->busy);
    Py_RETURN_NONE;
}

static PyObject *Sequential_zero_grad(SequentialObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    (void)na;
    if (!st || claim_model(st, self) < 0)
        return NULL;
    nn_release(&self->busy);
    if (self->gbuf)
        memset(((BufferObject *)self->gbuf)->data, 0,
               ((BufferObject *)self->gbuf)->nbytes);
    Py_RETURN_NONE;
}

/* Check the optimiser against this model: same dtype, at least one of
 * this model's layers in it. */
static int check_optimizer(SequentialObject *self, nn_module_state *st,
                           PyObject *opt_o, PyObject *loss_o)
{
    SGDObject *opt = (SGDObject *)opt_o;
    Py_ssize_t i, j, shared = 0;
    if (!PyObject_TypeCheck(loss_o, st->LossType)) {
        PyErr_Format(PyExc_TypeError,
                     "loss must be an nnlayers loss (e.g. "
                     "nnlayers.SoftmaxCrossEntropy()), got %.100s",
                     Py_TYPE(loss_o)->tp_name);
        return -1;
    }
    if (!PyObject_TypeCheck(opt_o, st->SGDType)) {
        PyErr_Format(PyExc_TypeError,
                     "optimizer must be an nnlayers.SGD, got %.100s",
                     Py_TYPE(opt_o)->tp_name);
        return -1;
    }
    if (opt->opt.dtype != self->dtype && PyTuple_GET_SIZE(opt->layers)) {
        PyErr_SetString(PyExc_TypeError,
                        "optimizer and model have different dtypes");
        return -1;
    }
    for (i = 0; i < PyTuple_GET_SIZE(opt->layers); i++)
        for (j = 0; j < PyTuple_GET_SIZE(self->layers); j++)
            shared += PyTuple_GET_ITEM(opt->layers, i) ==
                      PyTuple_GET_ITEM(self->layers, j);
    if (shared == 0 && ((BufferObject *)self->pbuf)->nbytes > 0) {
        PyErr_SetString(PyExc_ValueError,
                        "optimizer holds none of this model's layers; make "
                        "it with nnlayers.SGD(model, lr=...)");
        return -1;
    }
    if (nn_claim(st, &opt->busy, "the optimizer") < 0)
        return -1;
    nn_sgd_refresh(opt);
    return 0;
}

/* Release the optimizer claimed by check_optimizer */
static void release_optimizer(nn_module_state *st, PyObject *opt_o)
{
    if (PyObject_TypeCheck(opt_o, st->SGDType))
        nn_release(&((SGDObject *)opt_o)->busy);
}

/* The hot call of a training loop: vectorcall, so no argument tuple. */
static PyObject *Sequential_train_step(SequentialObject *self,
                                       PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"x", "y", "loss", "optimizer"};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *a[4], *x, *y, *loss_o, *opt_o, *result = NULL;
    PyArrayObject *xa = NULL, *labels = NULL, *dense = NULL;
    LossObject *loss;
    SGDObject *opt;
    double value = 0;
    size_t N, D, C;
    nn_status s;
    if (nn_fast_args("train_step", args, nargs, kwnames, names, 4, a) < 0)
        return NULL;
    x = a[0];
    y = a[1];
    loss_o = a[2];
    opt_o = a[3];
    if (!st || claim_model(st, self) < 0)
        return NULL;
    if (check_optimizer(self, st, opt_o, loss_o) < 0) {
        nn_release(&self->busy);
        return NULL;
    }
    loss = (LossObject *)loss_o;
    opt = (SGDObject *)opt_o;
    xa = model_input(self, x, "x", &N, &D);
    if (!xa)
        goto exit;
    if (N == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "train_step needs at least one sample (x has 0 rows)");
        goto exit;
    }
    C = self->net.width[self->net.n_layers];
    if (nn_prepare_target(y, loss->kind, self->dtype, N, C, &labels,
                          &dense) < 0)
        goto exit;
    self->can_backward = 0;
    Py_CLEAR(self->saved_in);
    Py_BEGIN_ALLOW_THREADS
    s = nn_net_train_step(&self->net, &opt->opt, loss->kind,
                          PyArray_DATA(xa), N, D,
                          labels ? PyArray_DATA(labels) : NULL,
                          dense ? PyArray_DATA(dense) : NULL, &value, NULL);
    Py_END_ALLOW_THREADS
    if (s == NN_ERR_NONFINITE) {
        char buf[40];
        PyOS_snprintf(buf, sizeof buf, "%g", value);
        PyErr_Format(st->NonFiniteError,
                     "train_step: the loss is %s; no parameter was updated",
                     buf);
        goto exit;
    }
    if (s != NN_OK) {
        nn_set_status_error(st, s, "train_step");
        goto exit;
    }
    result = PyFloat_FromDouble(value);
exit:
    Py_XDECREF(xa);
    Py_XDECREF(labels);
    Py_XDECREF(dense);
    release_optimizer(st, opt_o);
    nn_release(&self->busy);
    return result;
}

/* ---- fit: one epoch in C, Python entered for signals and progress ---- */

typedef struct {
    PyThreadState *ts;       /* saved thread state while the GIL is free */
    PyObject *callback;      /* progress(batch, n_batches, loss_sum,
                                correct, seen) or None */
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
                        double loss_sum, size_t correct, size_t seen)
{
    fit_ctx *ctx = vctx;
    int stop = 0;
    double t = now_seconds();
    int report = ctx->callback != Py_None &&
                 (t - ctx->last >= ctx->interval || batch + 1 == n_batches);
    PyEval_RestoreThread(ctx->ts);
    if (PyErr_CheckSignals() < 0) {
        stop = 1;
    } else if (report) {
        PyObject *r = PyObject_CallFunction(ctx->callback, "nndnn",
                                            (Py_ssize_t)batch,
                                            (Py_ssize_t)n_batches, loss_sum,
                                            (Py_ssize_t)correct,
                                            (Py_ssize_t)seen);
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

static PyObject *Sequential_fit_epoch(SequentialObject *self, PyObject *args,
                                      PyObject *kw)
{
    static char *kwlist[] = {"X", "y", "loss", "optimizer", "batch_size",
                             "order", "progress", "interval", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *X, *y, *loss_o, *opt_o, *order_o = Py_None,
             *progress = Py_None, *result = NULL;
    PyArrayObject *xa = NULL, *labels = NULL, *dense = NULL, *order = NULL;
    Py_ssize_t batch;
    double interval = 0.1;
    size_t n, D, C;
    nn_epoch_result res;
    fit_ctx ctx;
    nn_status s;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOn|OOd:_fit_epoch", kwlist,
                                     &X, &y, &loss_o, &opt_o, &batch,
                                     &order_o, &progress, &interval))
        return NULL;
    if (!st || claim_model(st, self) < 0)
        return NULL;
    if (check_optimizer(self, st, opt_o, loss_o) < 0) {
        nn_release(&self->busy);
        return NULL;
    }
    if (batch <= 0) {
        PyErr_Format(PyExc_ValueError,
                     "batch_size must be a positive int, got %zd", batch);
        goto exit;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
        goto exit;
    }
    xa = model_input(self, X, "X", &n, &D);
    if (!xa)
        goto exit;
    C = self->net.width[self->net.n_layers];
    if (nn_prepare_target(y, ((LossObject *)loss_o)->kind, self->dtype, n, C,
                          &labels, &dense) < 0)
        goto exit;
    if (order_o != Py_None) {
        order = (PyArrayObject *)PyArray_FROM_OTF(order_o, NPY_INT64,
                                                  NPY_ARRAY_IN_ARRAY);
        if (!order)
            goto exit;
        if (PyArray_NDIM(order) != 1 || (size_t)PyArray_DIM(order, 0) != n) {
            PyErr_Format(PyExc_ValueError,
                         "order must be a permutation of range(%zu)", n);
            goto exit;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t v = ((const int64_t *)PyArray_DATA(order))[i];
            if (v < 0 || (uint64_t)v >= n) {
                PyErr_Format(PyExc_ValueError,
                             "order must be a permutation of range(%zu)", n);
                goto exit;
            }
        }
    }
    self->can_backward = 0;
    Py_CLEAR(self->saved_in);
    ctx.callback = progress;
    ctx.interval = interval;
    ctx.last = now_seconds();
    ctx.failed = 0;
    ctx.ts = PyEval_SaveThread();
    s = nn_net_fit_epoch(&self->net, &((SGDObject *)opt_o)->opt,
                         ((LossObject *)loss_o)->kind, PyArray_DATA(xa), n, D,
                         labels ? PyArray_DATA(labels) : NULL,
                         dense ? PyArray_DATA(dense) : NULL, C,
                         order ? PyArray_DATA(order) : NULL, (size_t)batch,
                         fit_progress, &ctx, &res);
    PyEval_RestoreThread(ctx.ts);
    if (s == NN_ERR_NONFINITE) {
        PyErr_Format(st->NonFiniteError,
                     "the loss became non-finite at batch %zu (counting "
                     "from 1); training stopped before that batch's update",
                     res.failed_batch + 1);
        goto exit;
    }
    if (s == NN_ERR_INTERRUPTED && ctx.failed)
        goto exit;   /* KeyboardInterrupt or the callback's exception */
    if (s != NN_OK && s != NN_ERR_INTERRUPTED) {
        nn_set_status_error(st, s, "fit");
        goto exit;
    }
    result = Py_BuildValue("dnnO", res.loss_sum, (Py_ssize_t)res.correct,
                           (Py_ssize_t)res.seen,
                           s == NN_ERR_INTERRUPTED ? Py_True : Py_False);
exit:
    Py_XDECREF(xa);
    Py_XDECREF(labels);
    Py_XDECREF(dense);
    Py_XDECREF(order);
    release_optimizer(st, opt_o);
    nn_release(&self->busy);
    return result;
}

/* ---- containers and views ---- */

static Py_ssize_t Sequential_len(SequentialObject *self)
{
    return self->layers ? PyTuple_GET_SIZE(self->layers) : 0;
}

static PyObject *Sequential_get_layers(SequentialObject *self, void *c)
{
    (void)c;
    if (!self->layers)
        return PyTuple_New(0);
    return Py_NewRef(self->layers);
}

static PyObject *Sequential_get_dtype(SequentialObject *self, void *c)
{
    (void)c;
    return nn_dtype_object(self->dtype);
}

static PyObject *Sequential_get_can_backward(SequentialObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->can_backward);
}

/* a 1-D view of the whole parameter (or gradient) block */
static PyObject *block_view(SequentialObject *self, PyObject *buf)
{
    npy_intp dims[1];
    if (!buf) {
        PyErr_SetString(PyExc_RuntimeError, "Sequential was not initialised");
        return NULL;
    }
    dims[0] = (npy_intp)(((BufferObject *)buf)->nbytes /
                         nn_dtype_size(self->dtype));
    return nn_view((PyObject *)self, ((BufferObject *)buf)->data, self->dtype,
                   1, dims);
}

static PyObject *Sequential_param_block(SequentialObject *self, PyObject *na)
{
    (void)na;
    return block_view(self, self->pbuf);
}

static PyObject *Sequential_grad_block(SequentialObject *self, PyObject *na)
{
    (void)na;
    return block_view(self, self->gbuf);
}

static PyMethodDef Sequential_methods[] = {
    {"forward", (PyCFunction)Sequential_forward, METH_O,
     "forward(x) -> output\n\nThe whole chain on x (N, in), in one C call. "
     "Keeps the activations for the next backward()."},
    {"backward", (PyCFunction)Sequential_backward, METH_O,
     "backward(grad_output) -> grad_input\n\nBack-propagation through the "
     "whole chain in one C call; ADDS into every layer's grads."},
    {"zero_grad", (PyCFunction)Sequential_zero_grad, METH_NOARGS,
     "Set every gradient of the model to zero."},
    {"train_step", (PyCFunction)(void (*)(void))Sequential_train_step,
     METH_FASTCALL | METH_KEYWORDS,
     "train_step(x, y, loss, optimizer) -> float\n\nForward, loss, backward "
     "and SGD update in one C call with the GIL released; returns the batch "
     "loss. The weight gradient is folded into the update, so the gradient "
     "buffers serve as scratch: call zero_grad() before your own "
     "backward()."},
    {"_fit_epoch", (PyCFunction)(void (*)(void))Sequential_fit_epoch,
     METH_VARARGS | METH_KEYWORDS,
     "_fit_epoch(X, y, loss, optimizer, batch_size, order=None, "
     "progress=None, interval=0.1) -> (loss_sum, correct, seen, stopped)"},
    {"_check_idle", (PyCFunction)Sequential_check_idle, METH_NOARGS,
     "raise ConcurrentUseError if a call on this model runs"},
    {"_param_block", (PyCFunction)Sequential_param_block, METH_NOARGS,
     "1-D view of the model's parameter block"},
    {"_grad_block", (PyCFunction)Sequential_grad_block, METH_NOARGS,
     "1-D view of the model's gradient block"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Sequential_getset[] = {
    {"layers", (getter)Sequential_get_layers, NULL, "tuple of the layers",
     NULL},
    {"dtype", (getter)Sequential_get_dtype, NULL, "numpy dtype of the model",
     NULL},
    {"_can_backward", (getter)Sequential_get_can_backward, NULL,
     "whether a forward is waiting for its backward", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Sequential_slots[] = {
    {Py_tp_doc, "Sequential(*layers): the C network behind "
                "nnlayers.Sequential"},
    {Py_tp_init, Sequential_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Sequential_dealloc},
    {Py_tp_traverse, Sequential_traverse},
    {Py_tp_clear, Sequential_clear},
    {Py_tp_call, Sequential_call},
    {Py_tp_methods, Sequential_methods},
    {Py_tp_getset, Sequential_getset},
    {Py_sq_length, Sequential_len},
    {0, NULL}};

PyType_Spec nn_sequential_spec = {
    "nnlayers._core.Sequential", sizeof(SequentialObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Sequential_slots};
