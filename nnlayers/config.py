"""Build and threading information: show_config, get/set_num_threads."""
import sys

import numpy as np

from . import _core

__all__ = ["show_config", "get_num_threads", "set_num_threads", "blas_info"]


def get_num_threads():
    """Threads nnlayers' OpenBLAS uses for matrix products."""
    return _core.get_num_threads()


def set_num_threads(n):
    """Set the threads nnlayers' OpenBLAS uses (its own library, separate
    from NumPy's: limit both, e.g. with threadpoolctl, to avoid
    oversubscription)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads takes an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def blas_info():
    """A dict describing the BLAS nnlayers uses."""
    try:
        import scipy_openblas32 as sob

        lib = f"{sob.get_lib_dir()}/{sob.get_library(fullname=True)}"
        name = f"scipy-openblas32 {sob.__version__}"
    except ImportError:
        lib, name = "system", "system OpenBLAS"
    return {"name": name, "library": lib, "config": _core.blas_config().strip(),
            "num_threads": _core.get_num_threads()}


def show_config(file=None):
    """Print the BLAS in use, its thread count and the versions involved."""
    from . import __version__

    info = blas_info()
    out = file or sys.stdout
    print(f"nnlayers {__version__}", file=out)
    print(f"  python:      {sys.version.split()[0]}", file=out)
    print(f"  numpy:       {np.__version__}", file=out)
    print(f"  blas:        {info['name']}", file=out)
    print(f"  blas lib:    {info['library']}", file=out)
    print(f"  blas config: {info['config']}", file=out)
    print(f"  threads:     {info['num_threads']}", file=out)
