"""Activation functions with closed-form derivatives.

Each activation maps an array to an array of the same shape and comes with
its derivative, written against the array API so that NumPy, PyTorch and any
other conforming namespace run the same lines. At a kink the derivative is
the one PyTorch and JAX use: ``relu'(0) = 0`` and ``leaky_relu'(0) = slope``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

Array = Any

LEAKY_RELU_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An elementwise function ``g`` and its derivative ``g'``.

    Both take the array namespace ``xp`` and an array; ``derivative`` returns
    ``g'(u)`` evaluated elementwise at the pre-activation ``u``.
    """

    name: str
    value: Callable[[Any, Array], Array]
    derivative: Callable[[Any, Array], Array]
    # Whether g never decreases, so that it keeps the order of its inputs.
    monotone: bool = True


def _identity(xp, u):
    return u


def _identity_derivative(xp, u):
    return xp.ones_like(u)


def _relu(xp, u):
    # Autograd, PyTorch's and JAX's, splits the gradient of maximum(u, 0) at
    # the tie u = 0 and gives 0.5 there, so arrays that may carry a gradient
    # take torch.relu or a where, both of which give relu'(0) = 0.
    if array_api_compat.is_torch_namespace(xp):
        return xp.relu(u)
    if array_api_compat.is_numpy_namespace(xp):
        return xp.maximum(u, 0.0)
    return xp.where(u > 0, u, xp.zeros_like(u))


def _relu_derivative(xp, u):
    # relu'(0) = 0, as in PyTorch and JAX.
    if _tracks_gradient(xp, u):
        return xp.ops.aten.threshold_backward(xp.ones_like(u), u, 0)
    return xp.astype(u > 0, u.dtype)


def _tracks_gradient(xp, u) -> bool:
    """Return whether ``u`` is a torch tensor that requires a gradient.

    A derivative formed from ``u > 0`` then leaves autograd's graph, so a
    Jacobian built from it would not require a gradient, where autograd's
    own, of zero gradient, does. torch's backward functions of relu and
    leaky relu give the same values and keep the graph.
    """
    return array_api_compat.is_torch_namespace(xp) and u.requires_grad


def _leaky_relu(xp, u):
    return xp.where(u > 0, u, LEAKY_RELU_SLOPE * u)


def _leaky_relu_derivative(xp, u):
    # leaky_relu'(0) = slope, as in PyTorch.
    one = xp.ones_like(u)
    if _tracks_gradient(xp, u):
        return xp.ops.aten.leaky_relu_backward(one, u, LEAKY_RELU_SLOPE, False)
    return xp.where(u > 0, one, LEAKY_RELU_SLOPE * one)


def _sigmoid(xp, u):
    # exp(-|u|) never overflows, so neither branch does. -|u| is written as a
    # where, because autograd takes abs'(0) = 0, which would give
    # sigmoid'(0) = 0 in place of 1/4.
    e = xp.exp(xp.where(u >= 0, -u, u))
    return xp.where(u >= 0, 1 / (1 + e), e / (1 + e))


def _bell(xp, u, scale):
    """Return ``e / (1 + e)^2`` with ``e = exp(-scale |u|)``, which is
    ``sigmoid'(u)`` for scale 1 and ``tanh'(u) / 4`` for scale 2."""
    # s (1 - s) and 1 - tanh(u)^2 cancel to 0 for large |u|, where this
    # keeps full relative precision: at u = 15 in float64, 1 - tanh(u)^2 is
    # off by 1.7e-4.
    with np.errstate(over="ignore"):
        # |u| past 9e307 overflows -scale |u| to -inf, and exp(-inf) = 0 is
        # the right value; the forward pass ignores these warnings too.
        e = xp.exp(-scale * xp.abs(u))
    return e / ((1 + e) * (1 + e))


def _sigmoid_derivative(xp, u):
    return _bell(xp, u, 1.0)


def _tanh(xp, u):
    return xp.tanh(u)


def _tanh_derivative(xp, u):
    return 4 * _bell(xp, u, 2.0)


def _softplus(xp, u):
    return xp.logaddexp(xp.zeros_like(u), u)


def _elu(xp, u):
    # expm1 of min(u, 0) keeps the unused branch from overflowing. The min is
    # a where, because autograd splits the gradient of minimum at the tie
    # u = 0, which would give elu'(0) = 1/2 in place of 1.
    return xp.where(u > 0, u, xp.expm1(xp.where(u > 0, xp.zeros_like(u), u)))


def _elu_derivative(xp, u):
    # Both branches give 1 at u = 0. The tie goes to the constant one, as in
    # PyTorch's double backward of elu, so that autograd through this
    # derivative gives elu''(0) = 0 (a minimum would split it and give 1/2).
    negative = u < 0
    return xp.where(
        negative, xp.exp(xp.where(negative, u, xp.zeros_like(u))), xp.ones_like(u)
    )


def _silu(xp, u):
    return u * _sigmoid(xp, u)


def _silu_derivative(xp, u):
    # sigmoid(-u) in place of 1 - sigmoid(u), which cancels for large u.
    return _sigmoid(xp, u) * (1 + u * _sigmoid(xp, -u))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _identity_derivative),
        Activation("relu", _relu, _relu_derivative),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative),
        Activation("sigmoid", _sigmoid, _sigmoid_derivative),
        Activation("tanh", _tanh, _tanh_derivative),
        Activation("softplus", _softplus, _sigmoid),
        Activation("elu", _elu, _elu_derivative),
        Activation("silu", _silu, _silu_derivative, monotone=False),
    )
}


def get_activation(name: str) -> Activation:
    """Return the activation called ``name``.

    Raises:
        ValueError: if ``name`` is not one of ``ACTIVATIONS``.
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        valid = ", ".join(ACTIVATIONS)
        raise ValueError(f"Unknown activation {name!r}; expected one of: {valid}.")
    return ACTIVATIONS[name]
