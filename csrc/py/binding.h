/*
 * binding.h: what the binding's files share. The binding exposes the C
 * core as the extension module nnlayers._core:
 *   module.c      module state, functions (threads, matmul, counters)
 *   convert.c     input conversion and validation, views of C memory
 *   layer.c       the Layer type (one type for every kind)
 *   sequential.c  the Sequential type (one C call per direction)
 *   loss.c        the Loss type
 *   sgd.c         the SGD type
 * Every method: parse, validate, release the GIL around the C call, build
 * the result; one exit label releases every temporary.
 */
#ifndef NN_BINDING_H
#define NN_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
    PyTypeObject *SequentialType;
    PyTypeObject *LossType;
    PyTypeObject *SGDType;
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

/* ---- Layer ---- */
typedef struct LayerObject {
    PyObject_HEAD
    nn_layer L;
    int dtype;                 /* NN_F32, NN_F64, or -1: adopts the input's */
    PyObject *pbuf, *gbuf;     /* BufferObjects with params / grads */
    PyObject *retired;         /* list: old buffers kept alive for old views */
    PyObject *model;           /* borrowed: the Sequential it belongs to */
    PyArrayObject *saved_in;   /* input and output of the last forward */
    PyArrayObject *saved_out;
    int saved_dtype;
    int busy;
} LayerObject;

extern PyType_Spec nn_layer_spec;
const char *nn_kind_name(nn_kind k);
int nn_layer_check(PyObject *o, nn_module_state *st);

/* ---- Sequential ---- */
typedef struct SequentialObject {
    PyObject_HEAD
    PyObject *layers;          /* tuple of LayerObject */
    nn_dtype dtype;
    nn_net net;
    int net_ready;
    PyObject *pbuf, *gbuf;
    PyArrayObject *saved_in;   /* input of the last forward */
    int can_backward;
    int busy;
} SequentialObject;

extern PyType_Spec nn_sequential_spec;

/* ---- Loss ---- */
typedef struct {
    PyObject_HEAD
    nn_loss_kind kind;
    PyArrayObject *grad;       /* dL/dpred of the last forward */
    int busy;
} LossObject;

extern PyType_Spec nn_loss_spec;

/* ---- SGD ---- */
typedef struct {
    PyObject_HEAD
    nn_sgd opt;
    PyObject *layers;          /* tuple of the LayerObjects it updates */
    PyObject *vbuf;            /* BufferObject: the velocity block or NULL */
    int busy;
} SGDObject;

extern PyType_Spec nn_sgd_spec;
/* Point the segments at the layers' current memory (layers can move into
 * a Sequential's block after the optimiser was made). */
void nn_sgd_refresh(SGDObject *self);

/* ---- conversion and validation (convert.c) ---- */
int nn_typenum(nn_dtype dt);
int nn_dtype_from_object(PyObject *obj, int *out, int allow_none);
PyObject *nn_dtype_object(int dt);
/* A 2-D, C-contiguous, aligned array of dtype dt, the input itself when
 * it already is one; a new reference, or NULL with TypeError/ValueError. */
PyArrayObject *nn_as_input(PyObject *obj, int dt, const char *name, int ndim);
/* The dtype a parameter-free layer adopts for this input. */
int nn_adopt_dtype(PyObject *obj);
PyArrayObject *nn_new_array(int dt, npy_intp rows, npy_intp cols);
PyObject *nn_view(PyObject *owner, void *data, int dt, int nd,
                  npy_intp *dims);
/* Targets for a loss over pred (N, C): *labels (int64, (N,)) or *dense
 * ((N, C), dtype dt); validated (count, range, integrality). */
int nn_prepare_target(PyObject *y, nn_loss_kind kind, int dt, size_t N,
                      size_t C, PyArrayObject **labels, PyArrayObject **dense);
void nn_set_status_error(nn_module_state *st, nn_status s, const char *what);
extern uint64_t nn_input_copies;

/* ---- busy guards (concurrent use from several threads) ---- */
int nn_claim(nn_module_state *st, int *flag, const char *what);
/* A METH_FASTCALL | METH_KEYWORDS method's n required arguments, by
 * position or by the given names, into out[0..n): no argument tuple or
 * dict is built. -1 with TypeError as PyArg_ParseTupleAndKeywords gives. */
int nn_fast_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *const *names, int n,
                 PyObject **out);
#define nn_release(flag) (*(flag) = 0)

#endif
