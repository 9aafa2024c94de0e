"""resgrad: explicit matrix gradients of fully connected residual networks."""

from . import attacks, data, depth, robustness, saliency, training
from .activations import ACTIVATIONS, Activation, get_activation
from .check import check_theorem
from .gradients import (
    BlockGradients,
    Gradients,
    gradients,
    input_gradient,
    per_sample_gradients,
    per_sample_norms,
)
from .io import InvalidModelFile, load, read_metadata, save
from .losses import LOSSES, Loss, get_loss
from .model import Block, BlockTrace, ForwardOverflowError, ResidualMLP
from .product import TheoremMatrices, input_jacobian, theorem_matrices
from .training import CheckpointMismatch, FitResult, TrainingDiverged, fit

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "Activation",
    "Block",
    "BlockGradients",
    "BlockTrace",
    "CheckpointMismatch",
    "FitResult",
    "ForwardOverflowError",
    "Gradients",
    "InvalidModelFile",
    "Loss",
    "ResidualMLP",
    "TheoremMatrices",
    "TrainingDiverged",
    "attacks",
    "check_theorem",
    "data",
    "depth",
    "fit",
    "get_activation",
    "get_loss",
    "gradients",
    "input_gradient",
    "input_jacobian",
    "load",
    "per_sample_gradients",
    "per_sample_norms",
    "read_metadata",
    "robustness",
    "saliency",
    "save",
    "theorem_matrices",
    "training",
]
