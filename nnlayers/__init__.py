"""nnlayers: neural-network layers with a C core.

Layers (``Linear``, ``ReLU``, ``Sigmoid``, ...) have a forward pass and a
backward pass (the vector-Jacobian product); ``Sequential`` chains them and
runs each direction in one C call; losses and ``SGD`` train them. NumPy
arrays go in and out without copies; matrix products go through OpenBLAS.
"""
from ._loader import locate_core as _locate_core
from ._loader import preload_openblas as _preload

_preload()
if not _locate_core(__path__, __file__):
    raise ImportError("nnlayers' C extension (nnlayers._core) is not built: "
                      "install the package with `pip install .`")

from . import _core  # noqa: E402
from ._core import ConcurrentUseError, NNLayersError, NonFiniteLossError  # noqa: E402
from .config import blas_info, get_num_threads, set_num_threads, show_config  # noqa: E402
from .gradcheck import GradcheckError, GradcheckResult, gradcheck  # noqa: E402
from .io import load  # noqa: E402
from .layers import (Cos, Identity, Layer, LeakyReLU, Linear, LogSoftmax, ReLU,  # noqa: E402
                     Sigmoid, Softmax, Softplus, Step, Tanh)
from .losses import MSE, NLL, BinaryCrossEntropy, Loss, SoftmaxCrossEntropy  # noqa: E402
from .model import History, Sequential  # noqa: E402
from .optim import SGD  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Layer", "Linear", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus",
    "Step", "Cos", "Softmax", "LogSoftmax", "Sequential", "History",
    "Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MSE", "NLL", "SGD",
    "gradcheck", "GradcheckError", "GradcheckResult", "load",
    "show_config", "blas_info", "get_num_threads", "set_num_threads",
    "NNLayersError", "NonFiniteLossError", "ConcurrentUseError",
]
