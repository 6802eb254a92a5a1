/*
 * optimizer.c: the Optimizer type. One C type serves every optimizer
 * kind of the core (optim.c); the Python package subclasses it per kind
 * (nnlayers.SGD, ...) and hands it its segments (a layer's parameter
 * tensor each, with a group) and its groups' hyperparameters, which are
 * checked here. The state (SGD's velocity, Adam's moments, ...) is one
 * block it owns; the core's kind tables say what each segment keeps there
 * (_state_layout), which state_dict and load_state_dict read and write
 * (_load_state checks a whole state before copying any of it in).
 */
#include "binding.h"

#include <math.h>
#include <string.h>

/* The optimizer kinds by name */
static const struct {
    const char *name;
    const nn_optim_kind *kind;
} kinds[] = {{"sgd", &nn_optim_sgd},
             {"adam", &nn_optim_adam},
             {"adamw", &nn_optim_adamw},
             {"rmsprop", &nn_optim_rmsprop},
             {"adagrad", &nn_optim_adagrad}};

/* A hyperparameter of a group: its name, what the messages call it, where
 * it lives in nn_hyper, the kinds' bit for it (nn_optim_kind.hypers), and
 * what it may be. The rules are torch.optim's, but lr > 0. */
enum { H_NONNEG, H_POSITIVE, H_BOOL, H_UNIT };
static const struct {
    const char *name, *shown;
    size_t off;
    unsigned bit;
    int rule;
} fields[] = {
    {"lr", "lr", offsetof(nn_hyper, lr), NN_H_LR, H_NONNEG},
    {"weight_decay", "weight_decay", offsetof(nn_hyper, weight_decay),
     NN_H_WEIGHT_DECAY, H_NONNEG},
    {"momentum", "momentum", offsetof(nn_hyper, momentum), NN_H_MOMENTUM,
     H_NONNEG},
    {"nesterov", "nesterov", offsetof(nn_hyper, nesterov), NN_H_NESTEROV,
     H_BOOL},
    {"beta1", "beta1 (betas[0])", offsetof(nn_hyper, beta1), NN_H_BETAS,
     H_UNIT},
    {"beta2", "beta2 (betas[1])", offsetof(nn_hyper, beta2), NN_H_BETAS,
     H_UNIT},
    {"eps", "eps", offsetof(nn_hyper, eps), NN_H_EPS, H_NONNEG},
    {"amsgrad", "amsgrad", offsetof(nn_hyper, amsgrad), NN_H_AMSGRAD,
     H_BOOL},
    {"eps_hat", "eps_hat", offsetof(nn_hyper, eps_hat), NN_H_EPS_HAT,
     H_BOOL},
    {"alpha", "alpha", offsetof(nn_hyper, alpha), NN_H_ALPHA, H_NONNEG},
    {"centered", "centered", offsetof(nn_hyper, centered), NN_H_CENTERED,
     H_BOOL},
    {"lr_decay", "lr_decay", offsetof(nn_hyper, lr_decay), NN_H_LR_DECAY,
     H_NONNEG},
    {"initial_accumulator_value", "initial_accumulator_value",
     offsetof(nn_hyper, initial_accumulator_value), NN_H_INITIAL_ACC,
     H_NONNEG},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* The field named key that kind reads, or -1 */
static int field_index(const nn_optim_kind *kind, PyObject *key)
{
    size_t i;
    for (i = 0; i < N_FIELDS; i++)
        if ((kind->hypers & fields[i].bit) && PyUnicode_Check(key) &&
            PyUnicode_CompareWithASCIIString(key, fields[i].name) == 0)
            return (int)i;
    return -1;
}

/* Set field i of h from v, checked */
static int set_field(nn_hyper *h, int i, PyObject *v)
{
    char *p = (char *)h + fields[i].off;
    if (fields[i].rule == H_BOOL) {
        int b = PyObject_IsTrue(v);
        if (b < 0)
            return -1;
        *(int *)p = b;
        return 0;
    }
    {
        double d = PyFloat_AsDouble(v);
        if (d == -1 && PyErr_Occurred())
            return -1;
        int rule = fields[i].rule;
        if (!isfinite(d) || (rule == H_POSITIVE ? d <= 0 : d < 0) ||
            (rule == H_UNIT && d >= 1)) {
            char buf[40];
            PyOS_snprintf(buf, sizeof buf, "%g", d);
            PyErr_Format(PyExc_ValueError, "%s must be a finite number %s, got %s",
                         fields[i].shown,
                         rule == H_POSITIVE ? "> 0"
                         : rule == H_UNIT   ? "in [0, 1)"
                                            : ">= 0",
                         buf);
            return -1;
        }
        *(double *)p = d;
    }
    return 0;
}

static PyObject *get_field(const nn_hyper *h, size_t i)
{
    const char *p = (const char *)h + fields[i].off;
    if (fields[i].rule == H_BOOL)
        return PyBool_FromLong(*(const int *)p);
    return PyFloat_FromDouble(*(const double *)p);
}

/* Rules across fields: the kind's */
static int check_group(const nn_optim_kind *kind, const nn_hyper *h)
{
    const char *why = kind->check ? kind->check(h) : NULL;
    if (why) {
        PyErr_SetString(PyExc_ValueError, why);
        return -1;
    }
    return 0;
}

/* "a, b, c": the state a segment of a group with hyperparameters h keeps
 * ("no state" for none), into buf */
static void state_names(const nn_optim_kind *kind, const nn_hyper *h,
                        char *buf, size_t size)
{
    const char *names[NN_OPTIM_MAX_BUFFERS];
    size_t j, n = kind->state_buffers(h, names), used = 0;
    PyOS_snprintf(buf, size, "no state");
    for (j = 0; j < n && used < size; j++)
        used += (size_t)PyOS_snprintf(buf + used, size - used, "%s%s",
                                      j ? ", " : "", names[j]);
}

/* 0 when segments of groups with hyperparameters a and b keep the same
 * state; else -1 with a ValueError that starts with `what` */
static int check_same_state(const nn_optim_kind *kind, const nn_hyper *a,
                            const nn_hyper *b, const char *what)
{
    char sa[128], sb[128];
    state_names(kind, a, sa, sizeof sa);
    state_names(kind, b, sb, sizeof sb);
    if (strcmp(sa, sb) == 0)
        return 0;
    PyErr_Format(PyExc_ValueError,
                 "%s: it would change the state kept for each parameter "
                 "(%s, not %s); give it when making the optimizer", what, sb,
                 sa);
    return -1;
}

/* A clip_norm or clip_value: None (off, 0) or a finite number > 0 */
static int parse_clip(PyObject *v, const char *name, double *out)
{
    double d;
    if (v == NULL || v == Py_None) {
        *out = 0;
        return 0;
    }
    if (PyBool_Check(v) || !PyNumber_Check(v)) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be None or a number > 0, got %.100s", name,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    d = PyFloat_AsDouble(v);
    if (d == -1 && PyErr_Occurred())
        return -1;
    if (!isfinite(d) || d <= 0) {
        char buf[40];
        PyOS_snprintf(buf, sizeof buf, "%g", d);
        PyErr_Format(PyExc_ValueError,
                     "%s must be None or a finite number > 0, got %s", name,
                     buf);
        return -1;
    }
    *out = d;
    return 0;
}

/* A group's hyperparameters from a dict (every key must be known) */
static int parse_group(const nn_optim_kind *kind, PyObject *d, nn_hyper *h)
{
    Py_ssize_t pos = 0;
    PyObject *key, *val;
    memset(h, 0, sizeof *h);
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "each group must be a dict");
        return -1;
    }
    if (!PyDict_GetItemString(d, "lr")) {
        PyErr_SetString(PyExc_TypeError, "each group needs an lr");
        return -1;
    }
    while (PyDict_Next(d, &pos, &key, &val)) {
        int i = field_index(kind, key);
        if (i < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s takes no hyperparameter %R", kind->name, key);
            return -1;
        }
        if (set_field(h, i, val) < 0)
            return -1;
    }
    return check_group(kind, h);
}

static void free_state(OptimizerObject *self)
{
    PyMem_Free(self->groups);
    PyMem_Free(self->segs);
    self->groups = NULL;
    self->segs = NULL;
    Py_CLEAR(self->sbuf);
    Py_CLEAR(self->layers);
    memset(&self->opt, 0, sizeof self->opt);
}

/* One segment (layer, tensor, group) into *seg, checked against the
 * segments before it (segs[0..i)) and the dtype so far (*dt) */
static int parse_segment(nn_module_state *st, PyObject *s, Py_ssize_t i,
                         Py_ssize_t ng, nn_segment *segs, int *dt,
                         const char *owner)
{
    PyObject *lo;
    LayerObject *ly;
    Py_ssize_t t, g, j;
    if (!PyTuple_Check(s) || PyTuple_GET_SIZE(s) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "segment %zd must be (layer, tensor, group)", i);
        return -1;
    }
    lo = PyTuple_GET_ITEM(s, 0);
    if (!nn_layer_check(lo, st)) {
        PyErr_Format(PyExc_TypeError,
                     "segment %zd: %.100s is not an nnlayers Layer", i,
                     Py_TYPE(lo)->tp_name);
        return -1;
    }
    ly = (LayerObject *)lo;
    t = PyLong_AsSsize_t(PyTuple_GET_ITEM(s, 1));
    g = PyLong_AsSsize_t(PyTuple_GET_ITEM(s, 2));
    if ((t == -1 || g == -1) && PyErr_Occurred())
        return -1;
    if (t < 0 || (size_t)t >= ly->L.n_params || g < 0 || g >= ng) {
        PyErr_Format(PyExc_ValueError,
                     "segment %zd: no trained tensor %zd or group %zd", i, t,
                     g);
        return -1;
    }
    for (j = 0; j < i; j++)
        if (segs[j].layer == &ly->L && segs[j].tensor == (size_t)t) {
            PyErr_Format(PyExc_ValueError,
                         "a parameter appears twice (%R's %s): each "
                         "parameter can be in one group only", lo,
                         ly->L.t[t].name);
            return -1;
        }
    if (*dt >= 0 && ly->dtype != *dt) {
        PyErr_Format(PyExc_TypeError, "%s: the layers have mixed dtypes",
                     owner);
        return -1;
    }
    *dt = ly->dtype;
    segs[i].layer = &ly->L;
    segs[i].tensor = (size_t)t;
    segs[i].group = (size_t)g;
    return 0;
}

/* Everything is checked and built in new memory first, then swapped in:
 * a failed (re-)initialisation leaves the optimizer as it was. */
static int Optimizer_init(OptimizerObject *self, PyObject *args,
                          PyObject *kw)
{
    static char *kwlist[] = {"kind",      "segments",   "groups",
                             "clip_norm", "clip_value", NULL};
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    const char *kind_s, *owner = _PyType_Name(Py_TYPE(self));
    const nn_optim_kind *kind = NULL;
    PyObject *segs_o, *groups_o, *clip_norm_o = NULL, *clip_value_o = NULL;
    PyObject *segs = NULL, *groups = NULL,
             *layers = NULL, *layer_tuple = NULL, *sbuf = NULL;
    nn_hyper *hyper = NULL;
    nn_segment *seg = NULL;
    nn_optim opt;
    double clip_norm, clip_value;
    Py_ssize_t i, ns, ng;
    size_t k, state;
    int dt = -1, rc = -1;
    if (!st)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOO|OO:Optimizer", kwlist,
                                     &kind_s, &segs_o, &groups_o,
                                     &clip_norm_o, &clip_value_o))
        return -1;
    if (parse_clip(clip_norm_o, "clip_norm", &clip_norm) < 0 ||
        parse_clip(clip_value_o, "clip_value", &clip_value) < 0)
        return -1;
    if (self->busy) {
        PyErr_SetString(st->BusyError, "this optimizer is in use by another "
                        "thread; it cannot be re-initialised now");
        return -1;
    }
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (strcmp(kind_s, kinds[k].name) == 0)
            kind = kinds[k].kind;
    if (!kind) {
        PyErr_Format(PyExc_ValueError, "unknown optimizer kind '%s'", kind_s);
        return -1;
    }
    segs = PySequence_Fast(segs_o, "segments must be a sequence");
    groups = segs ? PySequence_Fast(groups_o, "groups must be a sequence")
                  : NULL;
    layers = PyList_New(0);
    if (!groups || !layers)
        goto exit;
    ns = PySequence_Fast_GET_SIZE(segs);
    ng = PySequence_Fast_GET_SIZE(groups);
    if (ng == 0) {
        PyErr_SetString(PyExc_ValueError, "an optimizer needs a group");
        goto exit;
    }
    hyper = PyMem_Calloc((size_t)ng, sizeof *hyper);
    seg = PyMem_Calloc((size_t)ns + 1, sizeof *seg);
    if (!hyper || !seg) {
        PyErr_NoMemory();
        goto exit;
    }
    for (i = 0; i < ng; i++)
        if (parse_group(kind, PySequence_Fast_GET_ITEM(groups, i),
                        &hyper[i]) < 0)
            goto exit;
    if (ns == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s got no parameters (none of its layers has any)",
                     owner);
        goto exit;
    }
    for (i = 0; i < ns; i++) {
        PyObject *s = PySequence_Fast_GET_ITEM(segs, i);
        if (parse_segment(st, s, i, ng, seg, &dt, owner) < 0)
            goto exit;
        if (PySequence_Contains(layers, PyTuple_GET_ITEM(s, 0)) == 0 &&
            PyList_Append(layers, PyTuple_GET_ITEM(s, 0)) < 0)
            goto exit;
    }
    layer_tuple = PyList_AsTuple(layers);
    if (!layer_tuple)
        goto exit;
    memset(&opt, 0, sizeof opt);
    opt.kind = kind;
    opt.dtype = (nn_dtype)dt;
    opt.n_groups = (size_t)ng;
    opt.groups = hyper;
    opt.n_segments = (size_t)ns;
    opt.seg = seg;
    opt.clip_norm = clip_norm;
    opt.clip_value = clip_value;
    state = nn_optim_layout(&opt);
    if (state) {
        size_t nbytes = state * nn_dtype_size(opt.dtype);
        sbuf = nn_buffer_new(st, nbytes);
        if (!sbuf)
            goto exit;
        memset(((BufferObject *)sbuf)->data, 0, nbytes);
        opt.state = ((BufferObject *)sbuf)->data;
        nn_optim_init_state(&opt);
    }
    /* all checked: replace what was there */
    free_state(self);
    self->groups = hyper;
    self->segs = seg;
    self->layers = layer_tuple;
    self->sbuf = sbuf;
    self->opt = opt;
    hyper = NULL;
    seg = NULL;
    layer_tuple = sbuf = NULL;
    rc = 0;
exit:
    PyMem_Free(hyper);
    PyMem_Free(seg);
    Py_XDECREF(layer_tuple);
    Py_XDECREF(sbuf);
    Py_XDECREF(segs);
    Py_XDECREF(groups);
    Py_XDECREF(layers);
    return rc;
}

static int Optimizer_traverse(OptimizerObject *self, visitproc visit,
                              void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->layers);
    Py_VISIT(self->sbuf);
    return 0;
}

static int Optimizer_clear(OptimizerObject *self)
{
    /* layers stay: the segments point into them */
    (void)self;
    return 0;
}

static void Optimizer_dealloc(OptimizerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    free_state(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_ready(OptimizerObject *self)
{
    if (!self->layers) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the optimizer was not initialised");
        return -1;
    }
    return 0;
}

/* The optimizer and, for writing, every layer it updates */
static int claim_all(nn_module_state *st, OptimizerObject *self)
{
    Py_ssize_t k, j;
    if (nn_claim(st, &self->busy, "this optimizer") < 0)
        return -1;
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++) {
        LayerObject *ly = (LayerObject *)PyTuple_GET_ITEM(self->layers, k);
        if (nn_users_claim(st, &ly->users, 1,
                           "a layer of this optimizer") < 0) {
            for (j = 0; j < k; j++)
                nn_users_release(
                    &((LayerObject *)PyTuple_GET_ITEM(self->layers, j))->users,
                    1);
            nn_release(&self->busy);
            return -1;
        }
    }
    return 0;
}

static void release_all(OptimizerObject *self)
{
    Py_ssize_t k;
    for (k = 0; k < PyTuple_GET_SIZE(self->layers); k++)
        nn_users_release(
            &((LayerObject *)PyTuple_GET_ITEM(self->layers, k))->users, 1);
    nn_release(&self->busy);
}

static PyObject *Optimizer_step(OptimizerObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    (void)na;
    if (!st || check_ready(self) < 0 || claim_all(st, self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    nn_optim_step(&self->opt);
    Py_END_ALLOW_THREADS
    release_all(self);
    Py_RETURN_NONE;
}

static PyObject *Optimizer_zero_grad(OptimizerObject *self, PyObject *na)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    size_t k, es;
    (void)na;
    if (!st || check_ready(self) < 0 || claim_all(st, self) < 0)
        return NULL;
    es = nn_dtype_size(self->opt.dtype);
    for (k = 0; k < self->opt.n_segments; k++) {
        const nn_segment *s = &self->opt.seg[k];
        memset(s->layer->t[s->tensor].grad, 0, s->layer->t[s->tensor].n * es);
    }
    release_all(self);
    Py_RETURN_NONE;
}

/* 1-D view of the state block, None without state */
static PyObject *Optimizer_state_view(OptimizerObject *self, PyObject *na)
{
    npy_intp dims[1];
    (void)na;
    if (check_ready(self) < 0)
        return NULL;
    if (!self->sbuf)
        Py_RETURN_NONE;
    dims[0] = (npy_intp)(((BufferObject *)self->sbuf)->nbytes /
                         nn_dtype_size(self->opt.dtype));
    return nn_view((PyObject *)self, ((BufferObject *)self->sbuf)->data,
                   self->opt.dtype, 1, dims);
}

/* _group(i) -> dict of group i's hyperparameters */
static PyObject *Optimizer_group(OptimizerObject *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    PyObject *d;
    size_t f;
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (check_ready(self) < 0)
        return NULL;
    if (i < 0 || (size_t)i >= self->opt.n_groups) {
        PyErr_Format(PyExc_IndexError, "no group %zd", i);
        return NULL;
    }
    d = PyDict_New();
    for (f = 0; d && f < N_FIELDS; f++) {
        PyObject *v;
        if (!(self->opt.kind->hypers & fields[f].bit))
            continue;
        v = get_field(&self->groups[i], f);
        if (!v || PyDict_SetItemString(d, fields[f].name, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

/* _set_group(i, name, value): one hyperparameter of group i, checked;
 * nothing changes on an error */
static PyObject *Optimizer_set_group(OptimizerObject *self, PyObject *args)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    Py_ssize_t i;
    PyObject *name, *value;
    nn_hyper h;
    char what[80];
    int f;
    if (!PyArg_ParseTuple(args, "nUO:_set_group", &i, &name, &value))
        return NULL;
    if (!st || check_ready(self) < 0)
        return NULL;
    if (i < 0 || (size_t)i >= self->opt.n_groups) {
        PyErr_Format(PyExc_IndexError, "no group %zd", i);
        return NULL;
    }
    f = field_index(self->opt.kind, name);
    if (f < 0) {
        PyErr_Format(PyExc_AttributeError, "%s has no hyperparameter %R",
                     self->opt.kind->name, name);
        return NULL;
    }
    if (nn_claim(st, &self->busy, "this optimizer") < 0)
        return NULL;
    h = self->groups[i];
    PyOS_snprintf(what, sizeof what, "cannot change %s of this optimizer",
                  fields[f].name);
    if (set_field(&h, f, value) < 0 || check_group(self->opt.kind, &h) < 0 ||
        check_same_state(self->opt.kind, &self->groups[i], &h, what) < 0) {
        nn_release(&self->busy);
        return NULL;
    }
    self->groups[i] = h;
    nn_release(&self->busy);
    Py_RETURN_NONE;
}

/* _state_layout() -> per segment (offset, names): where its state starts
 * in _state_view() and the buffers there, each as many values as the
 * parameter, one after the other (the core's kind table decides) */
static PyObject *Optimizer_state_layout(OptimizerObject *self, PyObject *na)
{
    PyObject *t;
    size_t k, j;
    (void)na;
    if (check_ready(self) < 0)
        return NULL;
    t = PyTuple_New((Py_ssize_t)self->opt.n_segments);
    for (k = 0; t && k < self->opt.n_segments; k++) {
        const char *names[NN_OPTIM_MAX_BUFFERS];
        const nn_segment *s = &self->opt.seg[k];
        size_t n = nn_optim_buffers(&self->opt, s, names);
        PyObject *nt = PyTuple_New((Py_ssize_t)n), *e = NULL;
        for (j = 0; nt && j < n; j++) {
            PyObject *u = PyUnicode_FromString(names[j]);
            if (!u) {
                Py_CLEAR(nt);
                break;
            }
            PyTuple_SET_ITEM(nt, j, u);
        }
        if (nt)
            e = Py_BuildValue("(nN)", (Py_ssize_t)s->state_off, nt);
        if (!e) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, k, e);
    }
    return t;
}

/* The groups of a state to load: one dict per group, each checked as at
 * construction and keeping the state the optimizer has now */
static nn_hyper *parse_load_groups(OptimizerObject *self, PyObject *groups_o)
{
    PyObject *groups = PySequence_Fast(groups_o, "groups must be a sequence");
    nn_hyper *h = NULL;
    Py_ssize_t i, ng;
    if (!groups)
        return NULL;
    ng = PySequence_Fast_GET_SIZE(groups);
    if ((size_t)ng != self->opt.n_groups) {
        PyErr_Format(PyExc_ValueError,
                     "state_dict: param_groups has %zd groups, this "
                     "optimizer %zu", ng, self->opt.n_groups);
        goto fail;
    }
    h = PyMem_Calloc((size_t)ng + 1, sizeof *h);
    if (!h) {
        PyErr_NoMemory();
        goto fail;
    }
    for (i = 0; i < ng; i++) {
        char what[64];
        PyOS_snprintf(what, sizeof what, "state_dict: param_groups[%zd]", i);
        if (parse_group(self->opt.kind, PySequence_Fast_GET_ITEM(groups, i),
                        &h[i]) < 0) {
            PyObject *type, *value, *tb;   /* say which group */
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (type && value) {
                PyErr_Format(type, "%s: %S", what, value);
            } else {   /* keep it as it was (PyErr_Restore steals) */
                PyErr_Restore(type, value, tb);
                type = value = tb = NULL;
            }
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            goto fail;
        }
        if (check_same_state(self->opt.kind, &self->groups[i], &h[i], what) <
            0)
            goto fail;
    }
    Py_DECREF(groups);
    return h;
fail:
    PyMem_Free(h);
    Py_DECREF(groups);
    return NULL;
}

/* _load_state(groups, block, steps, clip_norm, clip_value): replace the
 * hyperparameters, the state block (a 1-D array of the optimizer's dtype
 * and the block's size; None without state), the step count and the
 * clipping, all checked before anything changes */
static PyObject *Optimizer_load_state(OptimizerObject *self, PyObject *args)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    PyObject *groups_o, *block_o, *steps_o, *cn_o, *cv_o;
    PyArrayObject *block = NULL;
    nn_hyper *h = NULL;
    unsigned long long steps;
    double clip_norm, clip_value;
    size_t nbytes;
    if (!PyArg_ParseTuple(args, "OOOOO:_load_state", &groups_o, &block_o,
                          &steps_o, &cn_o, &cv_o))
        return NULL;
    if (!st || check_ready(self) < 0)
        return NULL;
    nbytes = self->sbuf ? ((BufferObject *)self->sbuf)->nbytes : 0;
    if (!PyLong_Check(steps_o) || PyBool_Check(steps_o)) {
        PyErr_Format(PyExc_TypeError, "state_dict: steps must be an int, got "
                     "%.100s", Py_TYPE(steps_o)->tp_name);
        return NULL;
    }
    steps = PyLong_AsUnsignedLongLong(steps_o);
    if (steps == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError,
                     "state_dict: steps must be an int >= 0, got %R", steps_o);
        return NULL;
    }
    if (parse_clip(cn_o, "state_dict: clip_norm", &clip_norm) < 0 ||
        parse_clip(cv_o, "state_dict: clip_value", &clip_value) < 0)
        return NULL;
    if (block_o != Py_None) {
        if (!PyArray_Check(block_o)) {
            PyErr_SetString(PyExc_TypeError, "state block must be an array");
            return NULL;
        }
        block = (PyArrayObject *)block_o;
        if (PyArray_TYPE(block) != nn_typenum(self->opt.dtype) ||
            PyArray_NDIM(block) != 1 || !PyArray_IS_C_CONTIGUOUS(block) ||
            (size_t)PyArray_NBYTES(block) != nbytes) {
            PyErr_SetString(PyExc_ValueError,
                            "state block: not a contiguous 1-D array of the "
                            "optimizer's dtype and state size");
            return NULL;
        }
    } else if (nbytes) {
        PyErr_SetString(PyExc_ValueError, "state block: missing");
        return NULL;
    }
    h = parse_load_groups(self, groups_o);
    if (!h)
        return NULL;
    if (nn_claim(st, &self->busy, "this optimizer") < 0) {
        PyMem_Free(h);
        return NULL;
    }
    /* all checked: copy in */
    memcpy(self->groups, h, self->opt.n_groups * sizeof *h);
    if (block && nbytes)
        memcpy(((BufferObject *)self->sbuf)->data, PyArray_DATA(block),
               nbytes);
    self->opt.steps = (uint64_t)steps;
    self->opt.clip_norm = clip_norm;
    self->opt.clip_value = clip_value;
    nn_release(&self->busy);
    PyMem_Free(h);
    Py_RETURN_NONE;
}

static PyObject *Optimizer_get_clip(OptimizerObject *self, void *which)
{
    double v = which ? self->opt.clip_value : self->opt.clip_norm;
    if (v == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

static int Optimizer_set_clip(OptimizerObject *self, PyObject *v,
                              void *which)
{
    nn_module_state *st = nn_state_of_type(Py_TYPE(self));
    const char *name = which ? "clip_value" : "clip_norm";
    double d;
    if (!v) {
        PyErr_Format(PyExc_TypeError, "cannot delete %s (set it to None)",
                     name);
        return -1;
    }
    if (!st || parse_clip(v, name, &d) < 0 ||
        nn_claim(st, &self->busy, "this optimizer") < 0)
        return -1;
    if (which)
        self->opt.clip_value = d;
    else
        self->opt.clip_norm = d;
    nn_release(&self->busy);
    return 0;
}

static PyObject *Optimizer_get_layers(OptimizerObject *self, void *c)
{
    (void)c;
    if (!self->layers)
        return PyTuple_New(0);
    return Py_NewRef(self->layers);
}

static PyObject *Optimizer_get_n_groups(OptimizerObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(self->opt.n_groups);
}

static PyObject *Optimizer_get_steps(OptimizerObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->opt.steps);
}

static PyObject *Optimizer_get_dtype(OptimizerObject *self, void *c)
{
    (void)c;
    if (!self->layers)
        Py_RETURN_NONE;
    return nn_dtype_object(self->opt.dtype);
}

/* (layer, tensor name, group) per segment */
static PyObject *Optimizer_get_segments(OptimizerObject *self, void *c)
{
    PyObject *t;
    size_t k;
    (void)c;
    t = PyTuple_New((Py_ssize_t)self->opt.n_segments);
    for (k = 0; t && k < self->opt.n_segments; k++) {
        const nn_segment *s = &self->opt.seg[k];
        PyObject *ly = LAYER_OBJECT(s->layer);
        PyObject *e = Py_BuildValue("(Osn)", ly, s->layer->t[s->tensor].name,
                                    (Py_ssize_t)s->group);
        if (!e) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, k, e);
    }
    return t;
}

static PyMethodDef Optimizer_methods[] = {
    {"step", (PyCFunction)Optimizer_step, METH_NOARGS,
     "Apply one update to every trainable parameter from its gradient."},
    {"zero_grad", (PyCFunction)Optimizer_zero_grad, METH_NOARGS,
     "Set the gradients of every parameter this optimizer holds to zero."},
    {"_state_view", (PyCFunction)Optimizer_state_view, METH_NOARGS,
     "1-D view of the state block (None without state)"},
    {"_group", (PyCFunction)Optimizer_group, METH_O,
     "_group(i) -> dict of group i's hyperparameters"},
    {"_set_group", (PyCFunction)Optimizer_set_group, METH_VARARGS,
     "_set_group(i, name, value): set one hyperparameter of group i"},
    {"_state_layout", (PyCFunction)Optimizer_state_layout, METH_NOARGS,
     "_state_layout() -> per segment (offset, state names)"},
    {"_load_state", (PyCFunction)Optimizer_load_state, METH_VARARGS,
     "_load_state(groups, block, steps, clip_norm, clip_value): all "
     "checked, then copied in"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Optimizer_getset[] = {
    {"layers", (getter)Optimizer_get_layers, NULL, "the layers it updates",
     NULL},
    {"_n_groups", (getter)Optimizer_get_n_groups, NULL, "number of groups",
     NULL},
    {"_steps", (getter)Optimizer_get_steps, NULL, "updates applied so far",
     NULL},
    {"_segments", (getter)Optimizer_get_segments, NULL,
     "(layer, tensor name, group) of every parameter it updates", NULL},
    {"dtype", (getter)Optimizer_get_dtype, NULL, "dtype of its parameters",
     NULL},
    {"clip_norm", (getter)Optimizer_get_clip, (setter)Optimizer_set_clip,
     "clip every step's gradients to this global L2 norm (None: off)", NULL},
    {"clip_value", (getter)Optimizer_get_clip, (setter)Optimizer_set_clip,
     "clamp every gradient value to [-clip_value, clip_value] (None: off)",
     (void *)1},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Optimizer_slots[] = {
    {Py_tp_doc, "Optimizer(kind, segments, groups, clip_norm=None, "
                "clip_value=None): the C optimizer behind nnlayers' "
                "optimizers"},
    {Py_tp_init, Optimizer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Optimizer_dealloc},
    {Py_tp_traverse, Optimizer_traverse},
    {Py_tp_clear, Optimizer_clear},
    {Py_tp_methods, Optimizer_methods},
    {Py_tp_getset, Optimizer_getset},
    {0, NULL}};

PyType_Spec nn_optimizer_spec = {
    "nnlayers._core.Optimizer", sizeof(OptimizerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Optimizer_slots};

/* ---- a schedule's values for an epoch (Model._fit_epoch's hyper=) ---- */

int nn_hyper_plan_make(OptimizerObject *opt, PyObject *spec, size_t n_batches,
                       nn_hyper_plan *plan)
{
    PyObject *names, *values_o;
    PyArrayObject *values;
    size_t b, g, k;
    memset(plan, 0, sizeof *plan);
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2 ||
        !PyTuple_Check(PyTuple_GET_ITEM(spec, 0))) {
        PyErr_SetString(PyExc_TypeError,
                        "hyper must be (names tuple, values array)");
        return -1;
    }
    names = PyTuple_GET_ITEM(spec, 0);
    values_o = PyTuple_GET_ITEM(spec, 1);
    plan->n_names = (size_t)PyTuple_GET_SIZE(names);
    if (plan->n_names == 0 || plan->n_names > 8) {
        PyErr_SetString(PyExc_ValueError, "hyper: 1 to 8 names");
        return -1;
    }
    for (k = 0; k < plan->n_names; k++) {
        int f = field_index(opt->opt.kind, PyTuple_GET_ITEM(names, k));
        if (f < 0) {
            PyErr_Format(PyExc_ValueError, "hyper: no hyperparameter %R",
                         PyTuple_GET_ITEM(names, k));
            return -1;
        }
        plan->off[k] = fields[f].off;
        plan->is_bool[k] = fields[f].rule == H_BOOL;
    }
    values = (PyArrayObject *)PyArray_FROM_OTF(values_o, NPY_FLOAT64,
                                               NPY_ARRAY_IN_ARRAY);
    if (!values)
        return -1;
    if (PyArray_NDIM(values) != 3 ||
        (size_t)PyArray_DIM(values, 0) != n_batches ||
        (size_t)PyArray_DIM(values, 1) != opt->opt.n_groups ||
        (size_t)PyArray_DIM(values, 2) != plan->n_names) {
        PyErr_Format(PyExc_ValueError,
                     "hyper values must have shape (%zu batches, %zu groups, "
                     "%zu names)", n_batches, opt->opt.n_groups, plan->n_names);
        Py_DECREF(values);
        return -1;
    }
    plan->values = values;
    plan->n_batches = n_batches;
    plan->n_groups = opt->opt.n_groups;
    plan->groups = opt->groups;
    /* every value checked against the optimizer's rules now: nothing is
     * refused halfway through the epoch */
    for (b = 0; b < n_batches; b++)
        for (g = 0; g < plan->n_groups; g++) {
            nn_hyper h = opt->groups[g];
            const double *v = (const double *)PyArray_DATA(values) +
                              (b * plan->n_groups + g) * plan->n_names;
            for (k = 0; k < plan->n_names; k++) {
                PyObject *o = PyFloat_FromDouble(v[k]);
                int f = field_index(opt->opt.kind, PyTuple_GET_ITEM(names, k));
                int rc = o ? set_field(&h, f, o) : -1;
                Py_XDECREF(o);
                if (rc < 0)
                    goto bad;
            }
            if (check_group(opt->opt.kind, &h) < 0)
                goto bad;
        }
    return 0;
bad:
    Py_CLEAR(plan->values);
    return -1;
}

/* Before batch b: its values into every group (nn_hooks.before_batch;
 * runs without the GIL, touching only C memory) */
void nn_hyper_plan_apply(void *arg, size_t batch)
{
    nn_hyper_plan *plan = arg;
    size_t g, k;
    for (g = 0; g < plan->n_groups; g++) {
        const double *v = (const double *)PyArray_DATA(plan->values) +
                          (batch * plan->n_groups + g) * plan->n_names;
        char *h = (char *)&plan->groups[g];
        for (k = 0; k < plan->n_names; k++) {
            if (plan->is_bool[k])
                *(int *)(h + plan->off[k]) = v[k] != 0;
            else
                *(double *)(h + plan->off[k]) = v[k];
        }
    }
}
