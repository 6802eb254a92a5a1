/*
 * module.c: the extension module nnlayers._core: its state (the types and
 * the error classes), the Buffer type, and module-level functions
 * (BLAS threads and configuration, matmul, allocation counters).
 */
#define NN_BINDING_IMPORTS_ARRAY
#include "binding.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- */
/* Buffer: C-owned, 64-byte aligned memory                           */
/* ---------------------------------------------------------------- */

static void Buffer_dealloc(BufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    nn_free(self->data);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Buffer_get_nbytes(BufferObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(self->nbytes);
}

static PyGetSetDef Buffer_getset[] = {
    {"nbytes", (getter)Buffer_get_nbytes, NULL, "size in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Buffer_slots[] = {
    {Py_tp_doc, "C-owned memory behind parameter views"},
    {Py_tp_dealloc, Buffer_dealloc},
    {Py_tp_getset, Buffer_getset},
    {0, NULL}};

PyType_Spec nn_buffer_spec = {"nnlayers._core._Buffer", sizeof(BufferObject),
                              0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                              Buffer_slots};

PyObject *nn_buffer_new(nn_module_state *st, size_t nbytes)
{
    BufferObject *b;
    if (nbytes > (size_t)PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    b = PyObject_New(BufferObject, st->BufferType);
    if (!b)
        return NULL;
    b->nbytes = nbytes;
    b->data = nn_malloc(nbytes);
    if (!b->data) {
        b->nbytes = 0;
        Py_DECREF(b);
        return PyErr_Format(PyExc_MemoryError,
                            "cannot allocate %zu bytes for parameters or "
                            "state", nbytes);
    }
    return (PyObject *)b;
}

/* ---------------------------------------------------------------- */
/* Module state                                                      */
/* ---------------------------------------------------------------- */

nn_module_state *nn_state_of_module(PyObject *m)
{
    return (nn_module_state *)PyModule_GetState(m);
}

nn_module_state *nn_state_of_type(PyTypeObject *tp)
{
    PyObject *m = PyType_GetModuleByDef(tp, &nn_module_def);
    return m ? nn_state_of_module(m) : NULL;
}

/* ---------------------------------------------------------------- */
/* Functions                                                         */
/* ---------------------------------------------------------------- */

static PyObject *get_num_threads(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return PyLong_FromLong(nn_blas_get_num_threads());
}

static PyObject *set_num_threads(PyObject *m, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    nn_status s;
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > 1024) {
        PyErr_Format(PyExc_ValueError,
                     "set_num_threads(n) needs 1 <= n <= 1024, got %ld", n);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    s = nn_blas_set_num_threads((int)n);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        PyErr_Format(PyExc_MemoryError,
                     "set_num_threads(%ld): could not start the worker "
                     "threads", n);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *blas_config(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return PyUnicode_FromString(nn_blas_config());
}

/* _simd(cap=None) -> str: the vector set the small products use ("avx512",
 * "avx2" or "none"); with cap, first caps it to that set (a test hook:
 * "avx2" runs the AVX2 path on an AVX-512 machine, "none" sends every
 * product to OpenBLAS). Returns the set in use after the call. */
static const char *const simd_names[] = {"none", "avx2", "avx512"};

static PyObject *simd(PyObject *m, PyObject *args)
{
    const char *cap = NULL;
    int i;
    (void)m;
    if (!PyArg_ParseTuple(args, "|z:_simd", &cap))
        return NULL;
    if (cap) {
        for (i = 0; i < 3 && strcmp(cap, simd_names[i]) != 0; i++)
            ;
        if (i == 3) {
            PyErr_Format(PyExc_ValueError,
                         "_simd: cap must be 'avx512', 'avx2' or 'none', "
                         "got %R", PyTuple_GET_ITEM(args, 0));
            return NULL;
        }
        nn_simd_cap(i);
    }
    return PyUnicode_FromString(simd_names[nn_simd_level()]);
}

/* _small_gemm_takes(M, N, K, trans_a, trans_b) -> bool: whether a float32
 * product of that shape goes to gemm_small.c's kernels now (the set as
 * capped, OpenBLAS's thread count as it is): a test hook */
static PyObject *small_gemm_takes(PyObject *m, PyObject *args)
{
    Py_ssize_t M, N, K;
    int ta, tb;
    (void)m;
    if (!PyArg_ParseTuple(args, "nnnpp:_small_gemm_takes", &M, &N, &K, &ta,
                          &tb))
        return NULL;
    if (M < 0 || N < 0 || K < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "_small_gemm_takes: M, N and K must be >= 0");
        return NULL;
    }
    return PyBool_FromLong(
        nn_small_sgemm_takes(ta, tb, (size_t)M, (size_t)N, (size_t)K));
}

static PyObject *pool_info(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return Py_BuildValue("{s:O,s:i}", "installed",
                         nn_pool_installed() ? Py_True : Py_False, "workers",
                         nn_pool_workers());
}

static PyObject *alloc_count(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return PyLong_FromUnsignedLongLong(nn_alloc_count());
}

static PyObject *input_copies(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return PyLong_FromUnsignedLongLong(nn_input_copies);
}

static PyObject *as_input(PyObject *m, PyObject *args)
{
    PyObject *obj, *dtype_o;
    const char *name = "x";
    int dt;
    (void)m;
    if (!PyArg_ParseTuple(args, "OO|s:as_input", &obj, &dtype_o, &name))
        return NULL;
    if (nn_dtype_from_object(dtype_o, &dt, 0) < 0)
        return NULL;
    return (PyObject *)nn_as_input(obj, dt, name, 2);
}

static PyObject *check_finite(PyObject *m, PyObject *args)
{
    PyObject *obj;
    const char *name = "X";
    PyArrayObject *a;
    int dt, rc;
    (void)m;
    if (!PyArg_ParseTuple(args, "O|s:check_finite", &obj, &name))
        return NULL;
    dt = nn_adopt_dtype(obj);
    a = nn_as_input(obj, dt, name, 2);
    if (!a)
        return NULL;
    rc = nn_check_finite(a, dt, name);
    Py_DECREF(a);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* fit checks its per-row weights with the kernel entry points' own check
 * (nn_prepare_weights), before it changes anything */
static PyObject *check_weights(PyObject *m, PyObject *args)
{
    PyObject *obj, *dtype_o;
    const char *name = "sample_weight";
    Py_ssize_t n;
    int dt;
    (void)m;
    if (!PyArg_ParseTuple(args, "OOn|s:check_weights", &obj, &dtype_o, &n, &name))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "check_weights: n must be >= 0");
        return NULL;
    }
    if (nn_dtype_from_object(dtype_o, &dt, 0) < 0)
        return NULL;
    return (PyObject *)nn_prepare_weights(obj, dt, (size_t)n, name);
}

static PyObject *use_reference_gemm(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    (void)m;
    if (on < 0)
        return NULL;
    return PyBool_FromLong(nn_use_reference_gemm(on));
}

static PyObject *split_mode(PyObject *m, PyObject *arg)
{
    long mode = PyLong_AsLong(arg);
    (void)m;
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(nn_set_split_mode(mode < 0 ? -1 : mode > 0));
}

static PyObject *split_keep_blas_threads(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    (void)m;
    if (on < 0)
        return NULL;
    return PyBool_FromLong(nn_split_keep_blas_threads(on));
}

static PyObject *split_steps(PyObject *m, PyObject *na)
{
    (void)m;
    (void)na;
    return PyLong_FromUnsignedLongLong(nn_split_steps());
}

static PyObject *matmul(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"a", "b", "out", NULL};
    PyObject *a_o, *b_o, *out_o = Py_None, *result = NULL;
    PyArrayObject *a = NULL, *b = NULL, *out = NULL;
    size_t M, K, N;
    nn_status s;
    int dt;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:matmul", kwlist, &a_o,
                                     &b_o, &out_o))
        return NULL;
    dt = nn_adopt_dtype(a_o);
    a = nn_as_input(a_o, dt, "a", 2);
    b = a ? nn_as_input(b_o, dt, "b", 2) : NULL;
    if (!b)
        goto exit;
    M = (size_t)PyArray_DIM(a, 0);
    K = (size_t)PyArray_DIM(a, 1);
    N = (size_t)PyArray_DIM(b, 1);
    if ((size_t)PyArray_DIM(b, 0) != K) {
        PyErr_Format(PyExc_ValueError,
                     "matmul: a is (%zu, %zu) so b must have %zu rows, got %zd",
                     M, K, K, PyArray_DIM(b, 0));
        goto exit;
    }
    if (out_o == Py_None) {
        out = nn_new_array(dt, (npy_intp)M, (npy_intp)N);
        if (!out)
            goto exit;
    } else {
        if (!PyArray_Check(out_o) ||
            PyArray_TYPE((PyArrayObject *)out_o) != nn_typenum(dt) ||
            !PyArray_ISCARRAY((PyArrayObject *)out_o) ||
            PyArray_NDIM((PyArrayObject *)out_o) != 2 ||
            (size_t)PyArray_DIM((PyArrayObject *)out_o, 0) != M ||
            (size_t)PyArray_DIM((PyArrayObject *)out_o, 1) != N) {
            PyErr_Format(PyExc_ValueError,
                         "matmul: out must be a writable C-contiguous (%zu, "
                         "%zu) array of a's dtype", M, N);
            goto exit;
        }
        out = (PyArrayObject *)Py_NewRef(out_o);
    }
    Py_BEGIN_ALLOW_THREADS
    if (dt == NN_F32)
        s = nn_gemm_f32(0, 0, M, N, K, 1, PyArray_DATA(a), K, PyArray_DATA(b),
                        N, 0, PyArray_DATA(out), N);
    else
        s = nn_gemm_f64(0, 0, M, N, K, 1, PyArray_DATA(a), K, PyArray_DATA(b),
                        N, 0, PyArray_DATA(out), N);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(nn_state_of_module(m), s, "matmul");
        goto exit;
    }
    result = Py_NewRef(out);
exit:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

/* Rows and columns of a 2-D array, or -1 with an error set: an array of
 * dtype dt, C-contiguous (the binding's own test hook needs no more) */
static int gemm_operand(PyObject *o, int dt, const char *name, int write,
                        size_t *rows, size_t *cols)
{
    PyArrayObject *a = (PyArrayObject *)o;
    if (!PyArray_Check(o) || PyArray_NDIM(a) != 2 ||
        PyArray_TYPE(a) != nn_typenum(dt) || !PyArray_ISCARRAY_RO(a) ||
        (write && !PyArray_ISWRITEABLE(a))) {
        PyErr_Format(PyExc_ValueError,
                     "_gemm: %s must be a %sC-contiguous 2-D array of A's "
                     "float dtype", name, write ? "writable " : "");
        return -1;
    }
    *rows = (size_t)PyArray_DIM(a, 0);
    *cols = (size_t)PyArray_DIM(a, 1);
    return 0;
}

/* _gemm(A, B, C, trans_a, trans_b, M, N, K, alpha, beta): C (M, N) =
 * alpha op(A) op(B) + beta C through nn_gemm, in place. The arrays' column
 * counts are the leading dimensions, so sub-blocks and strides are tested
 * too. A test hook for every path of nn_gemm (gemv, small, ordinary). */
static PyObject *gemm_hook(PyObject *m, PyObject *args)
{
    PyObject *A, *B, *C;
    int ta, tb, dt;
    Py_ssize_t M, N, K;
    double alpha, beta;
    size_t ar, ac, br, bc, cr, cc;
    nn_status s;
    if (!PyArg_ParseTuple(args, "OOOppnnndd:_gemm", &A, &B, &C, &ta, &tb, &M,
                          &N, &K, &alpha, &beta))
        return NULL;
    if (!PyArray_Check(A) || (PyArray_TYPE((PyArrayObject *)A) != NPY_FLOAT32 &&
                              PyArray_TYPE((PyArrayObject *)A) != NPY_FLOAT64)) {
        PyErr_SetString(PyExc_ValueError, "_gemm: A must be float32 or float64");
        return NULL;
    }
    dt = PyArray_TYPE((PyArrayObject *)A) == NPY_FLOAT32 ? NN_F32 : NN_F64;
    if (gemm_operand(A, dt, "A", 0, &ar, &ac) < 0 ||
        gemm_operand(B, dt, "B", 0, &br, &bc) < 0 ||
        gemm_operand(C, dt, "C", 1, &cr, &cc) < 0)
        return NULL;
    if (M < 0 || N < 0 || K < 0 ||
        (size_t)(ta ? K : M) > ar || (size_t)(ta ? M : K) > ac ||
        (size_t)(tb ? N : K) > br || (size_t)(tb ? K : N) > bc ||
        (size_t)M > cr || (size_t)N > cc) {
        PyErr_SetString(PyExc_ValueError, "_gemm: M, N, K do not fit the arrays");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (dt == NN_F32)
        s = nn_gemm_f32(ta, tb, (size_t)M, (size_t)N, (size_t)K, (float)alpha,
                        PyArray_DATA((PyArrayObject *)A), ac,
                        PyArray_DATA((PyArrayObject *)B), bc, (float)beta,
                        PyArray_DATA((PyArrayObject *)C), cc);
    else
        s = nn_gemm_f64(ta, tb, (size_t)M, (size_t)N, (size_t)K, alpha,
                        PyArray_DATA((PyArrayObject *)A), ac,
                        PyArray_DATA((PyArrayObject *)B), bc, beta,
                        PyArray_DATA((PyArrayObject *)C), cc);
    Py_END_ALLOW_THREADS
    if (s != NN_OK) {
        nn_set_status_error(nn_state_of_module(m), s, "_gemm");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"get_num_threads", get_num_threads, METH_NOARGS,
     "get_num_threads() -> int: threads nnlayers' OpenBLAS uses"},
    {"set_num_threads", set_num_threads, METH_O,
     "set_num_threads(n): set the threads nnlayers' OpenBLAS uses"},
    {"blas_config", blas_config, METH_NOARGS,
     "blas_config() -> str: OpenBLAS's own configuration string"},
    {"_simd", simd, METH_VARARGS,
     "_simd(cap=None) -> str: the vector set of the small products "
     "('avx512', 'avx2', 'none'); cap lowers it (test hook)"},
    {"_small_gemm_takes", small_gemm_takes, METH_VARARGS,
     "_small_gemm_takes(M, N, K, trans_a, trans_b) -> bool: whether a "
     "float32 product of that shape goes to the unpacked kernels now (test "
     "hook)"},
    {"_pool_info", pool_info, METH_NOARGS,
     "_pool_info() -> {'installed': bool, 'workers': int}: nnlayers' own "
     "worker threads (OpenBLAS's parallel products run on them)"},
    {"alloc_count", alloc_count, METH_NOARGS,
     "alloc_count() -> int: heap allocations made by the C core so far"},
    {"input_copies", input_copies, METH_NOARGS,
     "input_copies() -> int: inputs the binding had to convert (copy)"},
    {"as_input", as_input, METH_VARARGS,
     "as_input(x, dtype, name='x') -> the 2-D C-contiguous array of dtype the "
     "core reads: x itself when it already is one, else a converted copy; "
     "TypeError/ValueError naming `name` otherwise"},
    {"check_finite", check_finite, METH_VARARGS,
     "check_finite(x, name='X'): ValueError naming `name`, the first row "
     "holding a NaN or an infinity and its column; None when all are finite"},
    {"check_weights", check_weights, METH_VARARGS,
     "check_weights(w, dtype, n, name='sample_weight') -> w as the (n,) array "
     "of dtype that training reads; ValueError naming `name` and the first "
     "weight that is negative, NaN or infinite"},
    {"use_reference_gemm", use_reference_gemm, METH_O,
     "use_reference_gemm(flag) -> old flag: route products through the "
     "naive GEMM (for cross-checks)"},
    {"_split_mode", split_mode, METH_O,
     "_split_mode(mode) -> old mode: test hook for the batch split of "
     "training steps across threads: -1 by size (default), 0 never, 1 "
     "whenever there are threads (even one row a part)"},
    {"_split_steps", split_steps, METH_NOARGS,
     "_split_steps() -> int: training steps and forward passes so far that "
     "split their batch between threads"},
    {"_split_keep_blas_threads", split_keep_blas_threads, METH_O,
     "_split_keep_blas_threads(flag) -> old flag: test hook, leave "
     "OpenBLAS's thread count alone during a split (products on the "
     "workers then go parallel on threads of their own)"},
    {"_gemm", gemm_hook, METH_VARARGS,
     "_gemm(A, B, C, trans_a, trans_b, M, N, K, alpha, beta): test hook, "
     "C = alpha op(A) op(B) + beta C in place through the core's gemm"},
    {"matmul", (PyCFunction)(void (*)(void))matmul,
     METH_VARARGS | METH_KEYWORDS,
     "matmul(a, b, out=None) -> a @ b through nnlayers' OpenBLAS"},
    {NULL, NULL, 0, NULL}};

/* ---------------------------------------------------------------- */
/* Module                                                            */
/* ---------------------------------------------------------------- */

static int add_type(PyObject *m, PyType_Spec *spec, PyObject *base,
                    PyTypeObject **slot)
{
    PyObject *t = PyType_FromModuleAndSpec(m, spec, base);
    if (!t)
        return -1;
    *slot = (PyTypeObject *)t;
    if (PyModule_AddObjectRef(m, strrchr(spec->name, '.') + 1, t) < 0)
        return -1;
    return 0;
}

static int module_exec(PyObject *m)
{
    nn_module_state *st = nn_state_of_module(m);
    const char *pool_env = getenv("NNLAYERS_POOL");
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    /* OpenBLAS's parallel products on nnlayers' own workers (pool.c),
     * unless NNLAYERS_POOL=0 asks for OpenBLAS's own threads */
    if (!(pool_env && strcmp(pool_env, "0") == 0))
        nn_pool_install();
    if (add_type(m, &nn_buffer_spec, NULL, &st->BufferType) < 0 ||
        add_type(m, &nn_layer_spec, NULL, &st->LayerType) < 0 ||
        add_type(m, &nn_model_spec, NULL, &st->ModelType) < 0 ||
        add_type(m, &nn_loss_spec, NULL, &st->LossType) < 0 ||
        add_type(m, &nn_optimizer_spec, NULL, &st->OptimizerType) < 0)
        return -1;
    st->Error = PyErr_NewExceptionWithDoc(
        "nnlayers.NNLayersError", "Base class of nnlayers' own errors.",
        NULL, NULL);
    if (!st->Error || PyModule_AddObjectRef(m, "NNLayersError", st->Error) < 0)
        return -1;
    {
        PyObject *bases = PyTuple_Pack(2, st->Error, PyExc_FloatingPointError);
        if (!bases)
            return -1;
        st->NonFiniteError = PyErr_NewExceptionWithDoc(
            "nnlayers.NonFiniteLossError",
            "The loss became NaN or infinite during training; the update of "
            "that batch was not applied.", bases, NULL);
        Py_DECREF(bases);
    }
    if (!st->NonFiniteError ||
        PyModule_AddObjectRef(m, "NonFiniteLossError", st->NonFiniteError) < 0)
        return -1;
    {
        PyObject *bases = PyTuple_Pack(2, st->Error, PyExc_RuntimeError);
        if (!bases)
            return -1;
        st->BusyError = PyErr_NewExceptionWithDoc(
            "nnlayers.ConcurrentUseError",
            "An nnlayers object was called from a second thread while a call "
            "that cannot share it was running: a model serves many readers "
            "(forward, predict) or one writer (training, backward) at a "
            "time.", bases,
            NULL);
        Py_DECREF(bases);
    }
    if (!st->BusyError ||
        PyModule_AddObjectRef(m, "ConcurrentUseError", st->BusyError) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    nn_module_state *st = nn_state_of_module(m);
    Py_VISIT(st->BufferType);
    Py_VISIT(st->LayerType);
    Py_VISIT(st->ModelType);
    Py_VISIT(st->LossType);
    Py_VISIT(st->OptimizerType);
    Py_VISIT(st->Error);
    Py_VISIT(st->NonFiniteError);
    Py_VISIT(st->BusyError);
    return 0;
}

static int module_clear(PyObject *m)
{
    nn_module_state *st = nn_state_of_module(m);
    Py_CLEAR(st->BufferType);
    Py_CLEAR(st->LayerType);
    Py_CLEAR(st->ModelType);
    Py_CLEAR(st->LossType);
    Py_CLEAR(st->OptimizerType);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->NonFiniteError);
    Py_CLEAR(st->BusyError);
    return 0;
}

static void module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL}};

PyModuleDef nn_module_def = {
    PyModuleDef_HEAD_INIT,
    "nnlayers._core",
    "The C core of nnlayers: layers, losses, optimizers and the graph engine.",
    sizeof(nn_module_state),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&nn_module_def);
}
