"""nnlayers: neural-network layers with a C core.

Layers (``Linear``, ``ReLU``, ``Add``, ...) have a forward pass and a
backward pass (the vector-Jacobian product). ``Model`` runs any graph of
them (Keras's functional API: ``nl.Input``, layers called on symbolic
tensors) and ``Sequential`` a chain, each direction in one C call; losses
and optimizers train them. NumPy arrays go in and out without copies;
matrix products go through OpenBLAS.
"""
from ._loader import locate_core as _locate_core
from ._loader import preload_openblas as _preload

_preload()
if not _locate_core(__path__, __file__):
    raise ImportError("nnlayers' C extension (nnlayers._core) is not built next to "
                      f"{__file__}, and no installed nnlayers of the same version has it: "
                      "install this copy with `pip install .`")

from . import _core  # noqa: E402
from . import schedules  # noqa: E402
from ._core import ConcurrentUseError, NNLayersError, NonFiniteLossError  # noqa: E402
from .config import blas_info, get_num_threads, set_num_threads, show_config  # noqa: E402
from .gradcheck import GradcheckError, GradcheckResult, gradcheck  # noqa: E402
from .io import load  # noqa: E402
from .layers import (ELU, GELU, Add, Average, BatchNorm, Concatenate, Cos,  # noqa: E402
                     Dropout, Hardtanh, Identity, Input, Layer, LayerNorm, LeakyReLU,
                     Linear, LogSoftmax, Multiply, ReLU, Sigmoid, SiLU, Softmax, Softplus,
                     Softsign, Step, Subtract, SymbolicTensor, Tanh)
from .losses import (MAE, MSE, NLL, BinaryCrossEntropy, Huber, Loss,  # noqa: E402
                     SoftmaxCrossEntropy)
from .model import History, Model, Sequential  # noqa: E402
from .optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop  # noqa: E402
from . import callbacks, metrics  # noqa: E402
from . import onnx  # noqa: E402  (nl.onnx.export; imports the onnx package when used)
from .torch_io import from_torch  # noqa: E402  (imports torch when called)
from . import distributed  # noqa: E402  (mpi4py only when used)

from ._version import __version__  # noqa: E402

__all__ = [
    "Layer", "Linear", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus",
    "Step", "Cos", "GELU", "SiLU", "ELU", "Softsign", "Hardtanh", "Softmax",
    "LogSoftmax", "Add", "Subtract", "Multiply", "Average",
    "Concatenate", "Dropout", "BatchNorm", "LayerNorm", "Input", "SymbolicTensor", "Model",
    "Sequential", "History",
    "Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MSE", "NLL", "Optimizer", "SGD",
    "Adam", "AdamW", "RMSprop", "Adagrad",
    "gradcheck", "GradcheckError", "GradcheckResult", "load",
    "show_config", "blas_info", "get_num_threads", "set_num_threads",
    "NNLayersError", "NonFiniteLossError", "ConcurrentUseError", "callbacks", "metrics",
    "schedules", "Huber", "MAE",
    "onnx", "from_torch",
    "distributed",
]
