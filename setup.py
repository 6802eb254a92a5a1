"""Build the C extension nnlayers._core.

OpenBLAS comes from the scipy-openblas32 wheel by default (symbols carry a
``scipy_`` prefix; the extension gets an rpath to the wheel's lib folder).
Set ``NNLAYERS_BLAS=system`` to build against a system OpenBLAS found by
pkg-config (package name from ``NNLAYERS_BLAS_PKG``, default ``openblas``).
"""
import os
import shlex
import subprocess

import numpy
from setuptools import Extension, setup

CORE = ["common.c", "ops.c", "graph.c", "optim.c", "pool.c", "gemm_small.c",
        "dtype_f32.c", "dtype_f64.c"]
PY = ["module.c", "convert.c", "layer.c", "external.c", "model.c", "loss.c",
      "optimizer.c"]

sources = [f"csrc/core/{f}" for f in CORE] + [f"csrc/py/{f}" for f in PY]
depends = [os.path.join("csrc/core", f) for f in os.listdir("csrc/core")] + [
    os.path.join("csrc/py", f) for f in os.listdir("csrc/py")
]

compile_args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-fno-strict-aliasing", "-D_POSIX_C_SOURCE=200809L",
                # Not -ffast-math: NaN and Inf keep IEEE behaviour. These two
                # only drop errno and FP-trap bookkeeping, so conditional
                # loops vectorise.
                "-fno-math-errno", "-fno-trapping-math"]
link_args = []
macros = []
include_dirs = [numpy.get_include()]
library_dirs = []
libraries = []
runtime_library_dirs = []

extra = os.environ.get("NNLAYERS_EXTRA_CFLAGS")
if extra:  # e.g. "-fsanitize=address -g -O1" for tools/asan.sh
    compile_args += shlex.split(extra)
    link_args += [a for a in shlex.split(extra) if a.startswith("-fsanitize")]

if os.environ.get("NNLAYERS_BLAS", "scipy-openblas32") == "system":
    pkg = os.environ.get("NNLAYERS_BLAS_PKG", "openblas")
    cflags = subprocess.check_output(["pkg-config", "--cflags", pkg], text=True)
    libs = subprocess.check_output(["pkg-config", "--libs", pkg], text=True)
    compile_args += shlex.split(cflags)
    link_args += shlex.split(libs)
    macros.append(("NNLAYERS_BLAS_NAME", '"system OpenBLAS (' + pkg + ')"'))
else:
    import scipy_openblas32 as sob

    macros.append(("NN_BLAS_SCIPY_PREFIX", "1"))
    macros.append(("NNLAYERS_BLAS_NAME", '"scipy-openblas32 ' + sob.__version__ + '"'))
    library_dirs.append(sob.get_lib_dir())
    libraries.append(sob.get_library())
    # installed side by side in site-packages: nnlayers/_core*.so finds
    # scipy_openblas32/lib/ through $ORIGIN; nnlayers/__init__.py also
    # preloads the library for layouts where that path does not hold.
    runtime_library_dirs.append("$ORIGIN/../scipy_openblas32/lib")

ext = Extension(
    "nnlayers._core",
    sources=sources,
    depends=depends,
    include_dirs=include_dirs,
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    library_dirs=library_dirs,
    libraries=libraries,
    runtime_library_dirs=runtime_library_dirs,
)

setup(ext_modules=[ext])
