"""Independent references for resgrad's gradients.

Two references that share no code with resgrad's gradients:

- PyTorch autograd on a direct torch reimplementation of the network, with
  the model's weights copied into float64 tensors (``autograd_gradients``);
- central finite differences of a NumPy forward pass that evaluates many
  perturbed copies of the network at once (``finite_difference_gradients``).

Gradients are compared as dicts keyed like ``Gradients.arrays()``, plus
``"loss"`` and ``"input"``, with ``relative_error``: the largest absolute
difference divided by the largest absolute entry of the reference.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import resgrad

TORCH_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": lambda t: torch.logaddexp(t, torch.zeros_like(t)),
    "elu": F.elu,
    "silu": F.silu,
}

NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda u: u,
    "relu": lambda u: np.maximum(u, 0.0),
    "leaky_relu": lambda u: np.where(u > 0, u, 0.01 * u),
    "sigmoid": lambda u: 0.5 * (1.0 + np.tanh(0.5 * u)),
    "tanh": np.tanh,
    "softplus": lambda u: np.logaddexp(0.0, u),
    "elu": lambda u: np.where(u > 0, u, np.expm1(np.minimum(u, 0.0))),
    "silu": lambda u: u * 0.5 * (1.0 + np.tanh(0.5 * u)),
}


# Random networks and batches.

LEARNED_WIDTHS = (5, 7, 4, 6, 3, 8)
HIDDEN_WIDTHS = (6, 9, 5, 8, 2, 7)
IDENTITY_WIDTH = 4


def random_model(
    depth: int,
    activation: str = "tanh",
    shortcut: str = "learned",
    *,
    bias: bool = True,
    output_activation: str = "identity",
    post_activation: str | None = None,
    classes: int = 3,
    seed: int = 0,
) -> resgrad.ResidualMLP:
    """Return a float64 NumPy network of ``depth`` blocks with random weights.

    The widths are non-square and every hidden width ``q_l`` differs from
    ``p_l``. With an identity shortcut every ``p_l`` is 4, so the network
    has 4 classes and ``classes`` is ignored. Biases, when present, are drawn
    from ``N(0, 0.25)`` so that their gradients are not taken at zero.
    """
    if shortcut == "identity":
        sizes = [IDENTITY_WIDTH] * (depth + 1)
    else:
        sizes = list(LEARNED_WIDTHS[:depth]) + [classes]
    model = resgrad.ResidualMLP.init(
        sizes,
        list(HIDDEN_WIDTHS[:depth]),
        activation=activation,
        post_activation=post_activation,
        output_activation=output_activation,
        shortcut=shortcut,
        bias=bias,
        seed=seed,
    )
    rng = np.random.default_rng(seed + 1000)
    biases = {
        name: 0.5 * rng.standard_normal(value.shape)
        for name, value in model.arrays().items()
        if name.endswith(("b1", "b2"))
    }
    return model.replace_arrays(biases)


def random_batch(
    model: resgrad.ResidualMLP, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``x`` of shape ``(n, p_0)`` from ``N(0, 1)`` and integer labels
    ``y`` of shape ``(n,)`` in ``[0, p_L)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, model.sizes[0]))
    y = rng.integers(0, model.n_classes, size=n)
    return x, y


# Conversion and comparison.


def to_numpy(value: Any) -> np.ndarray:
    """Copy an array of any namespace (NumPy, PyTorch, array-api-strict) to NumPy."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, (np.ndarray, np.generic)):
        return np.array(value, copy=True)
    return np.from_dlpack(value).copy()


def gradient_dict(grads: resgrad.Gradients) -> dict[str, np.ndarray]:
    """Return ``grads`` as NumPy arrays keyed ``"loss"``, ``"input"`` and
    ``"blocks.<l>.<name>"``."""
    result = {"loss": to_numpy(grads.loss), "input": to_numpy(grads.input)}
    result.update({name: to_numpy(value) for name, value in grads.arrays().items()})
    return result


def relative_error(actual: Any, expected: Any) -> float:
    """Return ``max |actual - expected| / max |expected|``.

    When ``expected`` is all zeros the plain ``max |actual|`` is returned,
    so an exact zero must be matched by a tiny value.
    """
    actual = np.asarray(to_numpy(actual), dtype=np.float64)
    expected = np.asarray(to_numpy(expected), dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return 0.0
    difference = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    return difference / scale if scale > 0 else difference


def assert_gradients_close(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    tolerance: float,
    context: str = "",
) -> None:
    """Assert that both dicts have the same keys and every entry agrees."""
    assert sorted(actual) == sorted(expected), f"{context}: keys differ"
    for name, value in expected.items():
        error = relative_error(actual[name], value)
        assert error <= tolerance, (
            f"{context}: {name} has relative error {error:.3g} > {tolerance:g}"
        )


# PyTorch autograd on a direct reimplementation.


def torch_parameters(model: resgrad.ResidualMLP) -> dict[str, torch.Tensor]:
    """Return float64 leaf tensors, keyed like ``model.arrays()``, that
    require gradients."""
    return {
        name: torch.from_numpy(to_numpy(value).astype(np.float64)).requires_grad_(True)
        for name, value in model.arrays().items()
    }


def torch_block(
    model: resgrad.ResidualMLP,
    params: dict[str, torch.Tensor],
    index: int,
    a: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(u, z)`` of block ``index`` at input ``a`` (rows are samples,
    or one sample as a vector)."""
    block = model.blocks[index]
    g = TORCH_ACTIVATIONS[model.activation]
    prefix = f"blocks.{index}."
    u = a @ params[prefix + "W1"].T
    if block.b1 is not None:
        u = u + params[prefix + "b1"]
    z = g(u) @ params[prefix + "W2"].T
    if block.b2 is not None:
        z = z + params[prefix + "b2"]
    if block.shortcut == "learned":
        z = z + a @ params[prefix + "W3"].T
    elif block.shortcut == "identity":
        z = z + a
    return u, z


def torch_network(
    model: resgrad.ResidualMLP, params: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(z^L, a^L)`` of the torch reimplementation."""
    a = x
    for index in range(model.depth):
        _, z = torch_block(model, params, index, a)
        last = index == model.depth - 1
        name = model.output_activation if last else model.post_activation
        a = TORCH_ACTIVATIONS[name](z)
    return z, a


class _CrossEntropy(torch.autograd.Function):
    """Per-sample softmax cross-entropy whose gradient at the label is
    ``-S / (S + e_y)``, with ``e = exp(a - max a)`` and ``S`` the sum of the
    other ``e_k``.

    Autograd's ``p_y - 1`` cancels when ``p_y`` is near 1: at logits
    (45, -60, 15) and label 0 it put a relative error of 1.5e-3 into the
    float64 input gradient. resgrad uses the exact form, so the reference
    does too. The loss is ``log1p(S + (e_y - 1)) - s_y`` with ``s = a - max
    a``: ``-log_softmax`` rounds a tiny ``S`` away at a confident label, by
    a relative 7e-5 at a float64 loss of 7.9e-13.
    """

    @staticmethod
    def forward(ctx, a_L, y):
        log_p = F.log_softmax(a_L, dim=1)
        ctx.save_for_backward(log_p, y)
        shifted = a_L - a_L.amax(dim=1, keepdim=True)
        e = shifted.exp()
        rows = torch.arange(e.shape[0])
        e_y = e[rows, y]
        others_mask = torch.ones_like(e)
        others_mask[rows, y] = 0
        others = (e * others_mask).sum(dim=1)
        return torch.log1p(others + (e_y - 1)) - shifted[rows, y]

    @staticmethod
    def backward(ctx, grad):
        log_p, y = ctx.saved_tensors
        e = (log_p - log_p.amax(dim=1, keepdim=True)).exp()
        rows = torch.arange(e.shape[0])
        e_y = e[rows, y]
        e[rows, y] = 0
        others = e.sum(dim=1)
        total = others + e_y
        e /= total[:, None]
        e[rows, y] = -others / total
        return grad[:, None] * e, None


def torch_losses(
    loss: str, z_L: torch.Tensor, a_L: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Return the per-sample losses, shape ``(n,)``, written with torch ops."""
    if loss == "cross_entropy":
        return _CrossEntropy.apply(a_L, y)
    if loss == "squared_error":
        target = y if y.is_floating_point() else F.one_hot(y, a_L.shape[1]).double()
        return 0.5 * ((a_L - target) ** 2).sum(dim=1)
    if loss == "score":
        return z_L.gather(1, y[:, None])[:, 0]
    raise ValueError(f"Unknown loss {loss!r}.")


def _torch_input(value: Any) -> torch.Tensor:
    array = to_numpy(value)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return torch.from_numpy(array)


def autograd_gradients(
    model: resgrad.ResidualMLP,
    x: Any,
    y: Any,
    loss: str = "cross_entropy",
    reduction: str = "mean",
) -> dict[str, np.ndarray]:
    """Return the reduced loss and its gradients by PyTorch autograd, float64.

    ``x`` and ``y`` may live in any namespace; the result is NumPy, keyed
    like ``gradient_dict``.
    """
    params = torch_parameters(model)
    x_t = _torch_input(x).requires_grad_(True)
    y_t = _torch_input(y)
    z_L, a_L = torch_network(model, params, x_t)
    per_sample = torch_losses(loss, z_L, a_L, y_t)
    value = per_sample.sum() if reduction == "sum" else per_sample.mean()
    names = list(params)
    grads = torch.autograd.grad(value, [x_t] + [params[k] for k in names])
    result = {"loss": value.detach().numpy(), "input": grads[0].numpy()}
    result.update({name: grad.numpy() for name, grad in zip(names, grads[1:])})
    return result


def autograd_per_sample(
    model: resgrad.ResidualMLP, x: Any, y: Any, loss: str = "cross_entropy"
) -> list[dict[str, np.ndarray]]:
    """Return, for each row ``i``, the gradients of sample ``i``'s own loss."""
    x_np, y_np = to_numpy(x), to_numpy(y)
    return [
        autograd_gradients(model, x_np[i : i + 1], y_np[i : i + 1], loss, "sum")
        for i in range(x_np.shape[0])
    ]


def autograd_errors(
    model: resgrad.ResidualMLP, x: Any, y: Any, loss: str = "cross_entropy"
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Return ``dY/da^L``, and ``e^l = dY/dz^l`` and ``e_hat^l = dY/du^l`` for
    every block, of the summed loss by autograd.

    Row ``i`` of each array belongs to sample ``i``, because the samples do
    not interact. Shapes: ``(n, p_L)``, ``(n, p_l)`` and ``(n, q_l)``.
    """
    params = torch_parameters(model)
    a = _torch_input(x)
    us, zs = [], []
    for index in range(model.depth):
        u, z = torch_block(model, params, index, a)
        u.retain_grad()
        z.retain_grad()
        us.append(u)
        zs.append(z)
        last = index == model.depth - 1
        a = TORCH_ACTIVATIONS[
            model.output_activation if last else model.post_activation
        ](z)
    a.retain_grad()
    torch_losses(loss, zs[-1], a, _torch_input(y)).sum().backward()
    output = a.grad.numpy() if a.grad is not None else np.zeros(tuple(a.shape))
    return output, [z.grad.numpy() for z in zs], [u.grad.numpy() for u in us]


def autograd_jacobian(model: resgrad.ResidualMLP, x: Any) -> np.ndarray:
    """Return ``dz^L/dx`` per sample by ``torch.func.jacrev``, shape
    ``(n, p_L, p_0)``."""
    params = {k: v.detach() for k, v in torch_parameters(model).items()}

    def logits(sample: torch.Tensor) -> torch.Tensor:
        return torch_network(model, params, sample)[0]

    jacobian = torch.func.vmap(torch.func.jacrev(logits))(_torch_input(x))
    return jacobian.numpy()


def autograd_block_jacobians(model: resgrad.ResidualMLP, x: Any) -> list[np.ndarray]:
    """Return ``dz^l/da^{l-1}`` per sample for every block, each of shape
    ``(n, p_l, p_{l-1})``, by ``torch.func.jacrev``."""
    params = {k: v.detach() for k, v in torch_parameters(model).items()}
    a = _torch_input(x)
    jacobians = []
    for index in range(model.depth):

        def block_output(sample: torch.Tensor, index: int = index) -> torch.Tensor:
            return torch_block(model, params, index, sample)[1]

        jacobians.append(torch.func.vmap(torch.func.jacrev(block_output))(a).numpy())
        _, z = torch_block(model, params, index, a)
        a = TORCH_ACTIVATIONS[model.post_activation](z)
    return jacobians


def autograd_derivative(name: str, u: Any) -> np.ndarray:
    """Return ``g'(u)`` elementwise by autograd on torch's own activation."""
    u_t = _torch_input(u).requires_grad_(True)
    (grad,) = torch.autograd.grad(TORCH_ACTIVATIONS[name](u_t).sum(), [u_t])
    return grad.numpy()


# Central finite differences of a batched NumPy forward pass.


def numpy_losses(
    model: resgrad.ResidualMLP,
    arrays: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    loss: str,
    reduction: str,
) -> np.ndarray:
    """Evaluate the reduced loss of ``m`` copies of the network at once.

    Args:
        arrays: the weights keyed like ``model.arrays()``, each with a
            leading axis of size ``m``.
        x: inputs of shape ``(m, n, p_0)``.
        y: labels of shape ``(n,)``.

    Returns:
        The reduced loss of each copy, shape ``(m,)``.
    """
    g = NUMPY_ACTIVATIONS[model.activation]
    a = x
    for index, block in enumerate(model.blocks):
        prefix = f"blocks.{index}."
        u = a @ np.swapaxes(arrays[prefix + "W1"], 1, 2)
        if block.b1 is not None:
            u = u + arrays[prefix + "b1"][:, None, :]
        z = g(u) @ np.swapaxes(arrays[prefix + "W2"], 1, 2)
        if block.b2 is not None:
            z = z + arrays[prefix + "b2"][:, None, :]
        if block.shortcut == "learned":
            z = z + a @ np.swapaxes(arrays[prefix + "W3"], 1, 2)
        elif block.shortcut == "identity":
            z = z + a
        last = index == model.depth - 1
        a = NUMPY_ACTIVATIONS[
            model.output_activation if last else model.post_activation
        ](z)
    per_sample = _numpy_per_sample(loss, z, a, y)
    return per_sample.sum(axis=1) if reduction == "sum" else per_sample.mean(axis=1)


def _numpy_per_sample(
    loss: str, z: np.ndarray, a: np.ndarray, y: np.ndarray
) -> np.ndarray:
    rows = np.arange(y.shape[0])
    if loss == "cross_entropy":
        return _cross_entropy_precise(a, y)
    if loss == "squared_error":
        target = np.eye(a.shape[2])[y] if y.ndim == 1 else y
        return 0.5 * ((a - target) ** 2).sum(axis=2)
    if loss == "score":
        return z[:, rows, y]
    raise ValueError(f"Unknown loss {loss!r}.")


def _cross_entropy_precise(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``logsumexp(a) - a_y`` with a small relative error even when
    the loss is near 0, as ``log1p(sum_{k != y} exp(a_k - a_y))``."""
    rows = np.arange(y.shape[0])
    margins = a - a[:, rows, y][:, :, None]
    margins[:, rows, y] = -np.inf
    top = np.maximum(margins.max(axis=2), 0.0)
    rest = np.exp(margins - top[:, :, None]).sum(axis=2)
    confident = np.log1p(rest)
    general = top + np.log(np.exp(-top) + rest)
    return np.where(top == 0, confident, general)


def finite_difference_gradients(
    model: resgrad.ResidualMLP,
    x: Any,
    y: Any,
    loss: str = "cross_entropy",
    reduction: str = "mean",
    step: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Return the loss and central differences ``(Y(t + h) - Y(t - h)) / 2h``
    for every entry of ``x`` and of every weight.

    All ``2 * (x.size + number of weights)`` perturbed networks are
    evaluated in one batched forward pass, in ``np.longdouble``. On x86-64
    that has a 64-bit mantissa, so the rounding error of the quotient,
    about ``1e-19 |Y| / h``, stays far below the gradient even where it
    vanishes (the first blocks of a deep sigmoid network without
    shortcuts). Where ``np.longdouble`` is float64 the quotient is that
    much less precise.
    """
    base = {"input": to_numpy(x).astype(np.longdouble)}
    base.update(
        {k: to_numpy(v).astype(np.longdouble) for k, v in model.arrays().items()}
    )
    y = to_numpy(y)
    sizes = {name: value.size for name, value in base.items()}
    count = sum(sizes.values())
    stacks = {
        name: np.repeat(value[None], 2 * count, axis=0) for name, value in base.items()
    }
    offset = 0
    for name, size in sizes.items():
        flat = stacks[name].reshape(2 * count, size)
        entries = np.arange(size)
        flat[2 * (offset + entries), entries] += step
        flat[2 * (offset + entries) + 1, entries] -= step
        offset += size
    x_stack = stacks.pop("input")
    values = numpy_losses(model, stacks, x_stack, y, loss, reduction)
    differences = (values[0::2] - values[1::2]) / (2 * step)

    center = {name: value[None] for name, value in base.items() if name != "input"}
    loss_value = numpy_losses(model, center, base["input"][None], y, loss, reduction)
    result = {"loss": np.asarray(loss_value[0])}
    offset = 0
    for name, size in sizes.items():
        result[name] = differences[offset : offset + size].reshape(base[name].shape)
        offset += size
    return result


class CreateFileOnUnpickle:
    """An object whose unpickling opens ``marker`` for writing, creating it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run_python(code: str, timeout: float = 240) -> str:
    """Run ``code`` in a new Python process and return its standard output,
    stripped. A non-zero exit fails with the end of its standard error."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()
