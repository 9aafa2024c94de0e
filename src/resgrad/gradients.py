"""Gradients of the loss by the backpropagation recurrence.

With ``e^l = dY/dz^l`` and ``e_hat^l = dY/du^l`` for one sample::

    e^L     = D^L dY/da^L
    e_hat^l = D_hat^l W2^T e^l
    e^{l-1} = D^{l-1} (W1^T e_hat^l + W3^T e^l)
    dY/dx   = W1^T e_hat^1 + W3^T e^1

    dY/dW1 = e_hat^l (a^{l-1})^T    dY/db1 = e_hat^l
    dY/dW2 = e^l (h^l)^T            dY/db2 = e^l
    dY/dW3 = e^l (a^{l-1})^T

where ``D^l = diag(g'(z^l))`` and ``D_hat^l = diag(g'(u^l))``. On a batch the
rows are samples and the diagonal matrices become elementwise products, so
``Q^l = W2 D_hat^l W1 + W3`` is never formed. An identity shortcut reads
``W3 = I`` and a plain block ``W3 = 0``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Any

from . import _arrays, _kernels
from ._numpy_route import through_numpy
from .losses import Loss, check_reduction, check_targets, get_loss
from .model import PARAMETERS, BlockTrace, ResidualMLP

Array = Any

METHODS = ("backprop", "product")


@dataclass
class BlockGradients:
    """The gradients of one block; a field is ``None`` where the block has no
    such parameter. Shapes match the block's arrays, with a leading sample
    axis for per-sample gradients."""

    W1: Array
    W2: Array
    W3: Array | None = None
    b1: Array | None = None
    b2: Array | None = None

    __repr__ = _arrays.summary_repr


@dataclass
class Gradients:
    """The loss and its gradients with respect to the input and every weight.

    Attributes:
        loss: the reduced loss, a 0-d array (a NumPy scalar for NumPy).
        input: ``dY/dx`` of the shape of ``x``; row ``i`` is the gradient of
            the reduced loss, so with ``reduction="sum"`` it is the gradient
            of sample ``i``'s own loss. ``None`` when ``gradients`` was
            called with ``with_input=False``.
        blocks: one ``BlockGradients`` per block.
    """

    loss: Array
    input: Array | None
    blocks: list[BlockGradients]

    __repr__ = _arrays.summary_repr

    def arrays(self) -> dict[str, Array]:
        """Return the weight gradients keyed as ``ResidualMLP.arrays()``."""
        return {
            f"blocks.{index}.{name}": getattr(block, name)
            for index, block in enumerate(self.blocks)
            for name in PARAMETERS
            if getattr(block, name) is not None
        }


def output_error(
    model: ResidualMLP,
    traces: list[BlockTrace],
    a_L: Array,
    y: Array,
    loss: Loss,
    reduction: str,
    ops: _kernels.Kernels | None = None,
) -> tuple[Array, Array]:
    """Return the reduced loss and ``e^L = dY/dz^L`` of shape ``(n, p_L)``.

    ``e^L = D^L dY/da^L`` for a loss of ``a^L``, and ``dY/dz^L`` directly for
    the class score. With ``reduction="mean"`` both carry the factor ``1/n``.
    ``ops`` are the kernels of the call, looked up when not given.
    """
    xp = model.xp
    per_sample, error = _sample_losses(model, traces, a_L, y, loss, ops=ops)
    if reduction == "sum":
        return xp.sum(per_sample), error
    n = max(error.shape[0], 1)
    return _arrays.divided(xp, xp.sum(per_sample), n), _arrays.divided(xp, error, n)


def _sample_losses(
    model: ResidualMLP,
    traces: list[BlockTrace],
    a_L: Array,
    y: Array,
    loss: Loss,
    value: bool = True,
    ops: _kernels.Kernels | None = None,
) -> tuple[Array | None, Array]:
    """Return each sample's loss ``(n,)`` and its ``e^L`` ``(n, p_L)``, unreduced.

    Without ``value`` the losses are skipped and ``None`` takes their place.
    """
    if ops is None:
        ops = _kernels.kernels(model, y)
    z_L = traces[-1].z
    if loss.on_logits:
        return ops.loss(loss, z_L, y, value)
    values, grad = ops.loss(loss, a_L, y, value)
    g_out = model.activations()[2]
    if g_out.name == "identity":
        # The logits are the output and D^L = I.
        return values, grad
    return values, grad * g_out.derivative(model.xp, z_L)


def prepare(
    model: ResidualMLP, x: Array, y: Array, loss: str, reduction: str
) -> tuple[Loss, _kernels.Kernels, list[BlockTrace], Array]:
    """Validate the arguments, pick the kernels and run the forward pass.

    Returns:
        ``(loss, ops, traces, a_L)``.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    loss_fn = get_loss(loss)
    check_reduction(reduction)
    xp = model._namespace_with(x, y, float_targets=not loss_fn.integer_labels)
    _arrays.check_input(xp, x, model.sizes[0], model.dtype)
    check_targets(xp, loss_fn, y, x.shape[0], model.n_classes, model.dtype)
    model._check_device(x)
    ops = _kernels.kernels(model, x, y)
    traces, a_L = model._forward(x, ops=ops)
    return loss_fn, ops, traces, a_L


def backward(
    model: ResidualMLP,
    traces: list[BlockTrace],
    error: Array,
    weights: bool = True,
    with_input: bool = True,
    ops: _kernels.Kernels | None = None,
) -> tuple[Array | None, list[BlockGradients]]:
    """Run the recurrence from ``e^L`` down to ``dY/dx``.

    Args:
        error: ``e^L`` of shape ``(n, p_L)``.
        weights: whether to form the weight gradients (summed over rows);
            without them only the input gradient is computed.
        with_input: whether to form ``dY/dx``; ``None`` takes its place
            when false.

    Returns:
        ``(dY/dx, blocks)`` with ``blocks`` empty when ``weights`` is false.
    """
    if ops is None:
        ops = _kernels.kernels(model, error)
    dx, errors = propagate(
        model, traces, error, keep=weights, with_input=with_input, ops=ops
    )
    if not weights:
        return dx, []
    grads = [
        _block_gradients(ops, block, trace, e, e_hat)
        for block, trace, (e, e_hat) in zip(model.blocks, traces, errors)
    ]
    return dx, grads


def propagate(
    model: ResidualMLP,
    traces: list[BlockTrace],
    error: Array,
    keep: bool = True,
    with_input: bool = True,
    ops: _kernels.Kernels | None = None,
) -> tuple[Array | None, list[tuple[Array, Array]]]:
    """Return ``dY/dx`` and ``(e^l, e_hat^l)`` for every block ``l = 1..L``.

    ``error`` is ``e^L`` of shape ``(n, p_L)``, or ``(k, n, p_L)`` to carry
    ``k`` error vectors per sample at once; the returned arrays keep those
    leading axes. With ``keep`` false the list of errors is left empty,
    which saves memory when only ``dY/dx`` is needed. With ``with_input``
    false the recurrence stops at ``e_hat^1`` and returns ``None`` for
    ``dY/dx``, which saves the first block's two products by ``W1`` and
    ``W3``. ``ops`` are the kernels of the call, looked up when not given.
    """
    if ops is None:
        ops = _kernels.kernels(model, error)
    g, g_post, _ = model.activations()
    errors = []
    e = error
    for index in range(model.depth - 1, -1, -1):
        block, trace = model.blocks[index], traces[index]
        e_hat = ops.times_derivative(ops.product(e, block.W2), g, trace.u)
        if keep:
            errors.append((e, e_hat))
        if index == 0 and not with_input:
            e = None
            break
        e_prev = ops.product(e_hat, block.W1)
        if block.shortcut == "learned":
            e_prev = ops.add_product(e_prev, e, block.W3)
        elif block.shortcut == "identity":
            e_prev = ops.add(e_prev, e)
        if index > 0:
            e_prev = ops.times_derivative(e_prev, g_post, traces[index - 1].z)
        e = e_prev
    errors.reverse()
    return e, errors


def _block_gradients(ops, block, trace, e, e_hat) -> BlockGradients:
    # ``.T`` is the array API's transpose of a 2-D array, and it saves a
    # Python call through the namespace for every product.
    e_t = e.T
    return BlockGradients(
        W1=e_hat.T @ trace.a_prev,
        W2=e_t @ trace.h,
        W3=e_t @ trace.a_prev if block.shortcut == "learned" else None,
        b1=ops.column_sum(e_hat) if block.b1 is not None else None,
        b2=ops.column_sum(e) if block.b2 is not None else None,
    )


@through_numpy
def gradients(
    model: ResidualMLP,
    x: Array,
    y: Array,
    loss: str = "cross_entropy",
    reduction: str = "mean",
    method: str = "backprop",
    *,
    with_input: bool = True,
) -> Gradients:
    """Compute the loss and its gradients with respect to ``x`` and every weight.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)`` in the model's namespace and dtype.
        y: integer labels of shape ``(n,)`` in ``[0, p_L)``, of a signed
            integer dtype or uint8; for ``"squared_error"`` also a float
            target of shape ``(n, p_L)``.
        loss: ``"cross_entropy"`` (softmax cross-entropy of ``a^L``),
            ``"squared_error"`` (``0.5 ||a^L - t||^2``) or ``"score"``
            (``Y = z^L_y``, the logit of class ``y``).
        reduction: ``"mean"`` or ``"sum"`` of the per-sample losses. The
            mean of an empty batch is taken as 0, so zero rows give a loss
            of 0 and zero gradients (PyTorch's mean gives NaN there).
        method: ``"backprop"`` runs the recurrence (fast, any size);
            ``"product"`` forms Theorem 1's matrix products per sample (for
            inspection and small networks).
        with_input: whether to compute ``dY/dx``. A training step needs only
            the weight gradients, and ``False`` skips the first block's two
            products by ``W1`` and ``W3`` and leaves ``.input`` as ``None``.

    Returns:
        A ``Gradients`` with ``.loss``, ``.input`` and ``.blocks``.

    Raises:
        ForwardOverflowError: if the logits ``z^L`` are not finite. The
            rest is not checked: where only the loss or the backward pass
            overflows the dtype, as the summed loss and weight gradients of
            thousands of inputs near 1e36 do in float32, the result contains
            Inf or NaN entries, with NumPy's overflow warnings on NumPy
            arrays. ``fit`` and the attacks check their gradients and
            raise.

    Example:
        >>> import numpy as np, resgrad
        >>> model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
        >>> x = np.linspace(0, 1, 8).reshape(2, 4)
        >>> grads = resgrad.gradients(model, x, np.array([0, 1]))
        >>> grads.input.shape, grads.blocks[1].W1.shape
        ((2, 4), (2, 3))
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown method {method!r}; expected one of: {', '.join(METHODS)}."
        )
    _arrays.check_flag("with_input", with_input)
    loss_fn, ops, traces, a_L = prepare(model, x, y, loss, reduction)
    if method == "product":
        from .product import product_gradients

        result = product_gradients(model, traces, a_L, y, loss_fn, reduction)
        return result if with_input else Gradients(result.loss, None, result.blocks)
    value, error = output_error(model, traces, a_L, y, loss_fn, reduction, ops)
    dx, blocks = backward(model, traces, error, with_input=with_input, ops=ops)
    return Gradients(value, dx, blocks)


@through_numpy
def input_gradient(
    model: ResidualMLP, x: Array, y: Array, loss: str = "cross_entropy"
) -> tuple[Array, Array]:
    """Return each sample's loss and its gradient ``dY_i/dx_i``, equation (4).

    Skips the weight gradients, so it costs about one forward and one
    backward pass through the weights.

    Returns:
        ``(losses, dx)`` of shapes ``(n,)`` and ``(n, p_0)``.
    """
    loss_fn, ops, traces, a_L = prepare(model, x, y, loss, "sum")
    losses, error = _sample_losses(model, traces, a_L, y, loss_fn, ops=ops)
    dx, _ = propagate(model, traces, error, keep=False, ops=ops)
    return losses, dx


def _input_gradient(
    model: ResidualMLP,
    x: Array,
    y: Array,
    loss: Loss,
    prepared: list[tuple[Array | None, ...]] | None = None,
    ops: _kernels.Kernels | None = None,
) -> Array:
    """Return ``dY_i/dx_i`` ``(n, p_0)`` for arguments checked by the caller.

    For an attack that takes many gradient steps on one model: it skips the
    argument checks and the loss values, ``prepared`` (the model's
    ``_prepared(n)``) saves the forward pass its transposes and bias
    copies, and ``ops`` saves looking up the kernels at every step.
    """
    if ops is None:
        ops = _kernels.kernels(model, x, y)
    traces, a_L = model._forward(x, prepared, ops)
    _, error = _sample_losses(model, traces, a_L, y, loss, value=False, ops=ops)
    dx, _ = propagate(model, traces, error, keep=False, ops=ops)
    return dx


@through_numpy(any_size=True)
def per_sample_gradients(
    model: ResidualMLP,
    x: Array,
    y: Array,
    loss: str = "cross_entropy",
    *,
    out: Gradients | None = None,
) -> Gradients:
    """Compute the gradient of each sample's own loss, without summing.

    Each weight gradient is an outer product per sample, so
    ``.blocks[l].W1`` has shape ``(n, q_l, p_{l-1})`` and so on. ``.loss``
    holds the per-sample losses, shape ``(n,)``.

    On NumPy the weight stacks are disjoint views of one buffer, which is
    faster to fill than many arrays. resgrad keeps the buffers of the last
    two results, each of at most 64 MiB. Once no array made from one is
    left, a later call fills it again in place of fresh memory, which the
    operating system would first map and zero. Two buffers serve a loop
    written ``g = per_sample_gradients(...)``, which holds one result while
    the next call runs. A call that finds both free lets one go. So up to
    128 MiB stay allocated between calls, and the stacks' ``.base`` stays
    alive after the result is dropped. A buffer still referenced, through a
    stack, a view or a tensor made from one, is never reused. A call that
    needs less than half of a free buffer gets memory of its own, so a small
    result kept does not hold a large buffer.

    Args:
        model, x, y, loss: as for ``gradients``.
        out: the result of an earlier call on a batch of the same size, on
            NumPy arrays or on PyTorch tensors outside autograd. Its weight
            stacks are overwritten and returned in place of new ones. Fresh
            memory must first be mapped and zeroed by the operating system,
            so for results of tens of MiB this can halve the time (measured
            in docs/benchmarks.md). The loss, input and bias fields are new
            arrays.

    Raises:
        TypeError: if ``out`` is not a ``Gradients``, or the arrays cannot be
            written in place.
        ValueError: if ``out`` does not match this call (its number of
            blocks, or a stack's presence, shape, dtype or device), a stack
            cannot be written in place (read-only, a broadcast view, or a
            PyTorch tensor that requires a gradient), or a stack shares
            memory with another stack, with ``x``, with ``y`` or with an
            array of the model. ``out`` is then left as it was.
    """
    loss_fn, ops, traces, a_L = prepare(model, x, y, loss, "sum")
    losses, error = _sample_losses(model, traces, a_L, y, loss_fn, ops=ops)
    dx, errors = propagate(model, traces, error, ops=ops)
    pairs = []
    for block, trace, (e, e_hat) in zip(model.blocks, traces, errors):
        pairs += [(e_hat, trace.a_prev), (e, trace.h)]
        if block.shortcut == "learned":
            pairs.append((e, trace.a_prev))
    if out is None:
        stacks = iter(ops.outer_products(pairs))
    else:
        inputs = {"x": x, "y": y}
        stacks = iter(
            ops.outer_products(pairs, _out_stacks(model, ops, out, pairs, inputs))
        )
    blocks = []
    for block, (e, e_hat) in zip(model.blocks, errors):
        blocks.append(
            BlockGradients(
                W1=next(stacks),
                W2=next(stacks),
                W3=next(stacks) if block.shortcut == "learned" else None,
                b1=e_hat if block.b1 is not None else None,
                b2=e if block.b2 is not None else None,
            )
        )
    return Gradients(losses, dx, blocks)


def _out_stacks(
    model: ResidualMLP,
    ops: _kernels.Kernels,
    out: Gradients,
    pairs: list[tuple[Array, Array]],
    inputs: dict[str, Array],
) -> list[Array]:
    """Return the weight stacks of ``out`` in the order of ``pairs``, after
    checking that each one can take its outer products."""
    if not isinstance(out, Gradients):
        raise TypeError(
            f"Expected out to be the Gradients of an earlier "
            f"per_sample_gradients call, got {type(out).__name__}; pass such a "
            "result, or out=None."
        )
    if not ops.writes_in_place:
        raise TypeError(
            "out= writes into arrays in place, which needs NumPy arrays, or "
            "PyTorch tensors with no gradient recorded (use torch.no_grad()); "
            "call without out=."
        )
    if len(out.blocks) != model.depth:
        raise ValueError(
            f"out has {len(out.blocks)} blocks but the model has {model.depth}; "
            "pass the result of a call on this model, or out=None."
        )
    names = [
        (index, name)
        for index, block in enumerate(model.blocks)
        for name in ("W1", "W2", "W3")
        if name != "W3" or block.shortcut == "learned"
    ]
    device = _arrays.array_api_compat.device
    stacks = []
    for (index, name), (left, right) in zip(names, pairs):
        stack = getattr(out.blocks[index], name)
        where = f"out.blocks[{index}].{name}"
        shape = (left.shape[0], left.shape[1], right.shape[1])
        if stack is None or type(stack) is not type(left):
            found = "missing" if stack is None else f"a {type(stack).__name__}"
            raise ValueError(
                f"{where} is {found}, expected a {type(left).__name__} stack; "
                "pass the result of a call on this model, or out=None."
            )
        if (
            tuple(stack.shape) != shape
            or stack.dtype != left.dtype
            or device(stack) != device(left)
        ):
            raise ValueError(
                f"{where} has shape {tuple(stack.shape)}, dtype {stack.dtype} "
                f"and device {device(stack)}, but this call needs {shape}, "
                f"{left.dtype} and {device(left)}; pass the result of a call "
                "on a batch of the same size and dtype, on the same device, "
                "or out=None."
            )
        reason = ops.unwritable(stack)
        if reason is not None:
            raise ValueError(f"{where} {reason}.")
        stacks.append(stack)
    reads = {**inputs, **{f"the model's {k}": v for k, v in model.arrays().items()}}
    _check_disjoint(ops, reads, names, stacks)
    return stacks


def _check_disjoint(
    ops: _kernels.Kernels,
    reads: dict[str, Array],
    names: list[tuple[int, str]],
    stacks: list[Array],
) -> None:
    """Raise ``ValueError`` if two of ``stacks`` share memory, or a stack
    shares memory with one of ``reads`` (``x``, ``y`` and the model's arrays).

    Writing one stack would then change another before it is filled, or
    change an input of the call or the caller's model. The check compares
    address ranges, so two views that interleave without sharing an element
    are rejected too.
    """
    ranges = sorted(
        (*ops.extent(stack), position)
        for position, stack in enumerate(stacks)
        if math.prod(stack.shape)
    )

    def where(position: int) -> str:
        index, name = names[position]
        return f"out.blocks[{index}].{name}"

    for (_, end, first), (start, _, second) in itertools.pairwise(ranges):
        if start < end:
            raise ValueError(
                f"{where(first)} and {where(second)} share memory; pass stacks "
                "of their own, or out=None."
            )
    if not ranges:
        return
    # The stacks are disjoint now, so sorted by start they are also sorted by
    # end, and a read range overlaps a stack exactly when the first stack
    # that ends after the read starts begins before the read ends.
    ends = [end for _, end, _ in ranges]
    # Reading the addresses of the 600 arrays of a 100-block model took
    # 1.4 ms, so an array whose memory has an owner other than the stacks'
    # is skipped.
    owners = {id(ops.owner(stack)) for stack in stacks}
    known = id(None) not in owners
    for name, array in reads.items():
        if array is None or not math.prod(array.shape):
            continue
        owner = ops.owner(array)
        if known and owner is not None and id(owner) not in owners:
            continue
        start, end = ops.extent(array)
        first = bisect.bisect_right(ends, start)
        if first < len(ranges) and ranges[first][0] < end:
            raise ValueError(
                f"{where(ranges[first][2])} shares memory with {name}; pass "
                "stacks of their own, or out=None."
            )


@through_numpy
def per_sample_norms(
    model: ResidualMLP, x: Array, y: Array, loss: str = "cross_entropy"
) -> Array:
    """Return each sample's weight-gradient norm, shape ``(n,)``, without
    forming any per-sample gradient.

    The gradient of ``W1`` for one sample is ``e_hat a^T``, and the
    Frobenius norm of an outer product is ``||e_hat|| ||a||``, so::

        ||grad_i||^2 = sum_l ||e_hat||^2 (||a^{l-1}||^2 + [b1])
                             + ||e||^2 (||h||^2 + [W3] ||a^{l-1}||^2 + [b2])

    where a bracket is 1 when the block has that parameter and 0 otherwise.
    """
    loss_fn, ops, traces, a_L = prepare(model, x, y, loss, "sum")
    xp = model.xp
    _, error = output_error(model, traces, a_L, y, loss_fn, "sum", ops)
    _, errors = propagate(model, traces, error, with_input=False, ops=ops)
    one = xp.ones(x.shape[0], dtype=x.dtype, device=_arrays.array_api_compat.device(x))
    terms = []
    for block, trace, (e, e_hat) in zip(model.blocks, traces, errors):
        a_norm = _arrays.row_norms(xp, trace.a_prev)
        e_norm = _arrays.row_norms(xp, e)
        e_hat_norm = _arrays.row_norms(xp, e_hat)
        terms += [e_hat_norm * a_norm, e_norm * _arrays.row_norms(xp, trace.h)]
        if block.shortcut == "learned":
            terms.append(e_norm * a_norm)
        if block.b1 is not None:
            terms.append(e_hat_norm * one)
        if block.b2 is not None:
            terms.append(e_norm * one)
    return _arrays.row_norms(xp, xp.stack(terms, axis=1))
