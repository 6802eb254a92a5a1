"""Load nnlayers' OpenBLAS before the extension that links against it.

The extension carries an rpath to ``scipy_openblas32/lib`` next to it in
site-packages; loading the library here by its full path makes the import
work in any other layout too (editable installs, unusual prefixes). With
``NNLAYERS_BLAS=system`` builds, the system library is found by the loader.
"""
import ctypes
import os


def preload_openblas():
    """Load libscipy_openblas globally if the scipy-openblas32 wheel is there."""
    try:
        import scipy_openblas32 as sob
    except ImportError:  # a system-OpenBLAS build
        return None
    path = os.path.join(sob.get_lib_dir(), sob.get_library(fullname=True))
    try:
        return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
