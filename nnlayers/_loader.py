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


def locate_core(package_path, package_file):
    """Make ``nnlayers._core`` importable when Python found this package in
    a source checkout (the repository root on sys.path, e.g. running
    ``python -m nnlayers`` from a clone after ``pip install .``): the
    compiled extension then lives in the installed copy, whose folder is
    appended to the package's ``__path__``. Only the installed nnlayers
    distribution of the same version is used, never another ``_core``
    that happens to be on sys.path. Returns True when an extension was
    found."""
    import glob
    from importlib import metadata

    from ._version import __version__

    here = os.path.dirname(os.path.abspath(package_file))
    if glob.glob(os.path.join(here, "_core.*")):
        return True
    for dist in metadata.distributions(name="nnlayers"):
        installed = os.path.abspath(str(dist.locate_file("nnlayers")))
        if installed == here or dist.version != __version__:
            continue   # this checkout's own build metadata, or another version
        if glob.glob(os.path.join(installed, "_core.*.so")) or glob.glob(
                os.path.join(installed, "_core.*.pyd")):
            package_path.append(installed)
            return True
    return False
