"""Moving networks between resgrad and PyTorch.

``to_module`` builds a ``torch.nn.Module`` whose forward pass equals
``ResidualMLP.__call__``, so a resgrad network plugs into PyTorch tools
(autograd, torchattacks, Captum). Importing this module needs PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .model import ResidualMLP

_FUNCTIONS = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    # nn.functional.softplus returns x itself above x = 20, which is off by
    # log1p(exp(-x)) ~ 2e-9; logaddexp is exact and stable everywhere.
    "softplus": lambda t: torch.logaddexp(t, torch.zeros_like(t)),
    "elu": nn.functional.elu,
    "silu": nn.functional.silu,
}


class TorchBlock(nn.Module):
    """One residual block ``z = W2 g(W1 a + b1) + b2 + W3 a`` in PyTorch."""

    def __init__(self, linear1: nn.Linear, linear2: nn.Linear, shortcut: Any, activation: str):
        super().__init__()
        self.linear1 = linear1
        self.linear2 = linear2
        # An nn.Linear (learned), nn.Identity (identity) or None (plain).
        self.shortcut = shortcut
        self.activation = activation

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        z = self.linear2(_FUNCTIONS[self.activation](self.linear1(a)))
        if self.shortcut is not None:
            z = z + self.shortcut(a)
        return z


class TorchResidualMLP(nn.Module):
    """A stack of ``TorchBlock``s with the activations of a ``ResidualMLP``."""

    def __init__(self, blocks: list[TorchBlock], post_activation: str, output_activation: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.post_activation = post_activation
        self.output_activation = output_activation

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``z^L``, the last block's output before ``g_out``."""
        a = x
        for index, block in enumerate(self.blocks):
            z = block(a)
            if index < len(self.blocks) - 1:
                a = _FUNCTIONS[self.post_activation](z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FUNCTIONS[self.output_activation](self.logits(x))

    def named_arrays(self) -> dict[str, torch.Tensor]:
        """Return the parameters keyed as ``ResidualMLP.arrays()``."""
        names = {"linear1.weight": "W1", "linear1.bias": "b1", "linear2.weight": "W2"}
        names.update({"linear2.bias": "b2", "shortcut.weight": "W3"})
        return {
            f"blocks.{index}.{names[name]}": value
            for index, block in enumerate(self.blocks)
            for name, value in block.named_parameters()
        }


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return torch.from_numpy(np.array(value, copy=True))


def _linear(weight: Any, bias: Any) -> nn.Linear:
    weight = _tensor(weight)
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None)
    layer = layer.to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(_tensor(bias))
    return layer


def to_module(model: ResidualMLP) -> TorchResidualMLP:
    """Return a ``torch.nn.Module`` with copies of ``model``'s weights.

    The module's dtype and device are those of the model's arrays (NumPy
    arrays land on the CPU). Its output is ``a^L``, equal to ``model(x)``.
    """
    blocks = []
    for block in model.blocks:
        if block.shortcut == "learned":
            shortcut = _linear(block.W3, None)
        elif block.shortcut == "identity":
            shortcut = nn.Identity()
        else:
            shortcut = None
        blocks.append(
            TorchBlock(
                _linear(block.W1, block.b1),
                _linear(block.W2, block.b2),
                shortcut,
                model.activation,
            )
        )
    return TorchResidualMLP(blocks, model.post_activation, model.output_activation)
