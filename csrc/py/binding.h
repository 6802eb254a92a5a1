/*
 * binding.h: what the binding's files share. The binding exposes the C
 * core as the extension module nnlayers._core:
 *   module.c      module state, functions (threads, matmul, counters)
 *   convert.c     input conversion and validation, views of C memory
 *   layer.c       the Layer type (one type for every kind)
 *   model.c       the Model type: a graph of layers (Sequential is one)
 *   loss.c        the Loss type
 *   optimizer.c   the Optimizer type (one type for every kind)
 * Every method: parse, validate, release the GIL around the C call, build
 * the result; one exit label releases every temporary.
 */
#ifndef NN_BINDING_H
#define NN_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL nnlayers_ARRAY_API
#ifndef NN_BINDING_IMPORTS_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
/* <complex.h>, pulled in by NumPy, defines I; the core names a width I */
#undef I

#include "../core/nn.h"

/* ---- module state ---- */
typedef struct {
    PyTypeObject *BufferType;
    PyTypeObject *LayerType;
    PyTypeObject *ModelType;
    PyTypeObject *LossType;
    PyTypeObject *OptimizerType;
    PyObject *Error;             /* nnlayers.NNLayersError */
    PyObject *NonFiniteError;    /* nnlayers.NonFiniteLossError */
    PyObject *BusyError;         /* nnlayers.ConcurrentUseError */
} nn_module_state;

extern PyModuleDef nn_module_def;
nn_module_state *nn_state_of_type(PyTypeObject *tp);
nn_module_state *nn_state_of_module(PyObject *m);

/* ---- C-owned memory, the base of every parameter view ---- */
typedef struct {
    PyObject_HEAD
    void *data;
    size_t nbytes;
} BufferObject;

PyObject *nn_buffer_new(nn_module_state *st, size_t nbytes);
extern PyType_Spec nn_buffer_spec;

/* ---- who is using an object ----
 * Claims are taken and released with the GIL held. A reader (inference:
 * forward and predict of a model, a standalone layer's forward) shares
 * the object with other readers; a writer (anything that changes
 * parameters, gradients or buffers) has it alone. */
typedef struct nn_users {
    int readers;
    int writer;
} nn_users;

/* ---- Layer ---- */
typedef struct LayerObject {
    PyObject_HEAD
    nn_layer L;
    int dtype;                 /* NN_F32, NN_F64, or -1: adopts the input's */
    int model_dtype;           /* without a dtype: that of the last model it
                                  joined (-1 none), used when called alone */
    PyObject *pbuf, *gbuf;     /* Buffers with params / grads (NULL: none) */
    PyObject *bbuf;            /* Buffer with buffers (NULL: none) */
    PyObject *retired;         /* list: old buffers kept alive for old views */
    PyObject *saved;           /* standalone forward: (inputs tuple, output,
                                  workspace Buffer or None) for backward */
    int saved_dtype;
    int saved_training;        /* the mode of that forward */
    uint64_t saved_step;       /* and its step (random masks) */
    int training;              /* the mode of calls on the layer alone */
    uint64_t step;             /* training-mode calls alone so far: each
                                  draws new random masks */
    int own_busy;              /* a standalone call runs */
    int n_models;              /* models built over it (alive) */
    nn_users users;            /* models and optimizers using it */
    PyObject *weakrefs;
} LayerObject;

extern PyType_Spec nn_layer_spec;
int nn_layer_check(PyObject *o, nn_module_state *st);
/* 0 when Layer.__init__ ran on the object; else -1 with a TypeError (a
 * subclass whose __init__ forgot super().__init__()) */
int nn_layer_initialised(LayerObject *self);
/* The Layer object around a core layer */
#define LAYER_OBJECT(Lp) \
    ((PyObject *)((char *)(Lp) - offsetof(LayerObject, L)))
/* Move a layer's parameters and gradients to p and g (the old buffers
 * are kept for views taken before). */
int nn_layer_move_params(LayerObject *ly, PyObject *pbuf, char *p,
                         PyObject *gbuf, char *g);
/* Layers written in Python (external.c): point L's callbacks at the
 * trampolines into the object's forward, backward and output_width. */
void nn_external_attach(LayerObject *ly);

/* ---- Model ---- */
typedef struct ModelObject {
    PyObject_HEAD
    PyObject *layers;          /* tuple of distinct LayerObjects */
    PyObject *node_names;      /* tuple of str: nodes, then maybe inputs */
    size_t n_nodes;
    nn_dtype dtype;
    nn_graph g;
    int graph_ready;
    PyObject *pbuf, *gbuf;     /* the parameter and gradient blocks */
    nn_ws train_ws;            /* training calls (one writer) */
    int train_ws_ready;
    nn_ws **spare;             /* free workspaces for forward calls */
    Py_ssize_t n_spare, cap_spare;
    nn_ws *saved_ws;           /* the last forward, for backward */
    PyObject *saved_inputs;    /* its input arrays (kept alive) */
    nn_optmap map;
    nn_run run;                /* generator, step count, the mode of the
                                  call running */
    int training;              /* the model's mode (train() / eval()):
                                  what forward runs in */
    int joined;                /* counted in its layers' n_models */
    nn_users users;
    PyObject *weakrefs;
} ModelObject;

extern PyType_Spec nn_model_spec;

/* ---- Loss ---- */
typedef struct {
    PyObject_HEAD
    nn_loss_kind kind;         /* the core's kind (logits or probabilities) */
    double arg;                /* its argument: Huber's delta, else 0 */
    PyArrayObject *grad;       /* dL/dpred of the last forward */
    int busy;
} LossObject;

extern PyType_Spec nn_loss_spec;
int nn_loss_is_classification(nn_loss_kind k);
/* Training metrics (loss.c): masks[k] (bits 1u << nn_metric_kind) from
 * spec, one tuple of metric names per output ("mse", "mae",
 * "binary_accuracy", "top_k_categorical_accuracy"); and the list, one
 * dict name -> sum per output, of the sums (n_out * NN_METRIC_COUNT) of
 * the metrics asked for. */
int nn_parse_metrics(PyObject *spec, size_t n_out, unsigned *masks);
PyObject *nn_metric_sums_list(const double *sums, const unsigned *masks,
                              size_t n_out);

/* ---- Optimizer ---- */
typedef struct {
    PyObject_HEAD
    nn_optim opt;
    PyObject *layers;          /* tuple of the LayerObjects it updates */
    PyObject *sbuf;            /* Buffer: the state block, or NULL */
    nn_hyper *groups;          /* PyMem */
    nn_segment *segs;          /* PyMem */
    int busy;
} OptimizerObject;

extern PyType_Spec nn_optimizer_spec;

/* ---- conversion and validation (convert.c) ---- */
int nn_typenum(nn_dtype dt);
int nn_dtype_from_object(PyObject *obj, int *out, int allow_none);
PyObject *nn_dtype_object(int dt);
/* A 2-D, C-contiguous, aligned array of dtype dt, the input itself when
 * it already is one; a new reference, or NULL with TypeError/ValueError. */
PyArrayObject *nn_as_input(PyObject *obj, int dt, const char *name, int ndim);
/* The dtype a parameter-free layer adopts for this input. */
int nn_adopt_dtype(PyObject *obj);
/* *out = v, an int (wrap: modulo 2^64; else it must be in [0, 2^64));
 * -1 with TypeError/OverflowError naming `name`. */
int nn_u64_from_object(PyObject *v, const char *name, int wrap,
                       uint64_t *out);
PyArrayObject *nn_new_array(int dt, npy_intp rows, npy_intp cols);
PyObject *nn_view(PyObject *owner, void *data, int dt, int nd,
                  npy_intp *dims);
/* Targets for a loss over pred (N, C): *labels (int64, (N,)) or *dense
 * ((N, C), dtype dt); validated (count, range, integrality). name names
 * the argument in messages. */
int nn_prepare_target(PyObject *y, nn_loss_kind kind, int dt, size_t N,
                      size_t C, const char *name, PyArrayObject **labels,
                      PyArrayObject **dense);
/* Per-row weights (N,) for pred of N rows, dtype dt: finite, >= 0.
 * A new reference, or NULL with an exception naming `name`. */
PyArrayObject *nn_prepare_row_weights(PyObject *w, int dt, size_t N,
                                      const char *name);
void nn_set_status_error(nn_module_state *st, nn_status s, const char *what);
/* 0 when every value of a (N, D) array of dtype dt is finite; else -1 with
 * a ValueError naming `name`, the first bad row and its column */
int nn_check_finite(PyArrayObject *a, int dt, const char *name);
/* Per-row weights (N,) of dtype dt, finite and >= 0 (a new reference) */
PyArrayObject *nn_prepare_weights(PyObject *w, int dt, size_t N,
                                  const char *name);
/* A schedule's values for an epoch: names (tuple of str) and values
 * (n_batches, n_groups, len(names)) float64, checked against the
 * optimizer's rules; applied to the groups before batch b. */
typedef struct {
    PyArrayObject *values;     /* float64, C order */
    size_t n_batches, n_groups, n_names;
    size_t off[8];             /* each name's offset in nn_hyper */
    int is_bool[8];
    nn_hyper *groups;          /* the optimizer's */
} nn_hyper_plan;
int nn_hyper_plan_make(OptimizerObject *opt, PyObject *spec, size_t n_batches,
                       nn_hyper_plan *plan);
void nn_hyper_plan_apply(void *plan, size_t batch);
extern uint64_t nn_input_copies;

/* ---- claims (concurrent use from several threads) ---- */
int nn_claim(nn_module_state *st, int *flag, const char *what);
#define nn_release(flag) (*(flag) = 0)
/* Claim u for reading (write 0) or writing (1); ConcurrentUseError naming
 * `what` if it is taken the other way. */
int nn_users_claim(nn_module_state *st, nn_users *u, int write,
                   const char *what);
void nn_users_release(nn_users *u, int write);
/* A METH_FASTCALL | METH_KEYWORDS method's n arguments, by position or
 * by the given names, into out[0..n) (NULL for a missing optional one;
 * the first n_required are required): no argument tuple or dict is
 * built. -1 with TypeError as PyArg_ParseTupleAndKeywords gives. */
int nn_fast_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *const *names, int n,
                 int n_required, PyObject **out);

#endif
