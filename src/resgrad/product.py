"""Theorem 1 as literal matrix products, and the input Jacobian.

For one sample and block ``l``::

    D_hat^l = diag(g'(u^l))                    (q_l, q_l)
    D^l     = diag(g_post'(z^l)),  D^L = diag(g_out'(z^L))
    Q^l     = W2 D_hat^l W1 + W3 = dz^l/da^{l-1}   (p_l, p_{l-1})
    P^l     = D^L Q^L D^{L-1} Q^{L-1} ... Q^{l+1} D^l,   P^L = D^L

and Theorem 1 reads::

    (4) dY/dx    = (P^1 Q^1)^T dY/da^L
    (5) J        = dz^L/dx = Q^L D^{L-1} Q^{L-1} ... D^1 Q^1   (p_L, p_0)
    (6) dY/dW1   = (P^l W2 D_hat^l)^T dY/da^L (a^{l-1})^T
    (7) dY/dW2   = (P^l)^T dY/da^L (h^l)^T
    (8) dY/dW3   = (P^l)^T dY/da^L (a^{l-1})^T

The functions here form every matrix per sample, with a leading batch axis,
which costs far more than the recurrence in ``resgrad.gradients``; they
exist to inspect the theorem and to check the recurrence against it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _arrays
from ._numpy_route import through_numpy
from .gradients import BlockGradients, Gradients, propagate
from .losses import Loss
from .model import BlockTrace, ResidualMLP

Array = Any

JACOBIAN_MODES = ("auto", "reverse", "forward", "product")


class TheoremMatrices(NamedTuple):
    """The matrices of Theorem 1 for one block, batched over samples.

    ``Q`` has shape ``(n, p_l, p_{l-1})``, ``D`` ``(n, p_l, p_l)`` and
    ``D_hat`` ``(n, q_l, q_l)``.
    """

    Q: Array
    D: Array
    D_hat: Array

    __repr__ = _arrays.summary_repr


def _diag(xp: Any, values: Array) -> Array:
    """Return the ``(n, k, k)`` stack of ``diag(values[i])``."""
    k = values.shape[1]
    eye = xp.eye(k, dtype=values.dtype, device=_arrays.array_api_compat.device(values))
    return values[:, None, :] * eye


def _matrices(model: ResidualMLP, traces: list[BlockTrace]) -> list[TheoremMatrices]:
    xp = model.xp
    g, g_post, g_out = model.activations()
    result = []
    for index, (block, trace) in enumerate(zip(model.blocks, traces)):
        D_hat = _diag(xp, g.derivative(xp, trace.u))
        outer = g_out if index == model.depth - 1 else g_post
        D = _diag(xp, outer.derivative(xp, trace.z))
        Q = block.W2 @ D_hat @ block.W1
        if block.shortcut == "learned":
            Q = Q + block.W3
        elif block.shortcut == "identity":
            Q = Q + xp.eye(block.in_features, dtype=Q.dtype, device=model.device)
        result.append(TheoremMatrices(Q, D, D_hat))
    return result


def theorem_matrices(model: ResidualMLP, x: Array) -> list[TheoremMatrices]:
    """Return ``Q^l``, ``D^l`` and ``D_hat^l`` of every block at the inputs ``x``.

    ``x`` has shape ``(n, p_0)``; each returned matrix has a leading axis of
    size ``n``. ``D^L`` is ``diag(g_out'(z^L))``, the identity when the
    output activation is the identity.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    traces, _ = model.trace(x)
    return _matrices(model, traces)


def product_gradients(
    model: ResidualMLP,
    traces: list[BlockTrace],
    a_L: Array,
    y: Array,
    loss: Loss,
    reduction: str,
) -> Gradients:
    """Evaluate equations (4), (6), (7) and (8) as written, per sample.

    Called by ``resgrad.gradients(..., method="product")``, which validates
    the arguments. For the class score, a loss of ``z^L``, ``D^L`` is
    replaced by the identity.
    """
    xp = model.xp
    mats = _matrices(model, traces)
    z_L = traces[-1].z
    out = z_L if loss.on_logits else a_L
    per_sample = loss.value(xp, out, y)
    dY_da = loss.grad(xp, out, y)[:, :, None]
    if reduction == "mean":
        n = max(z_L.shape[0], 1)
        dY_da = _arrays.divided(xp, dY_da, n)
        value = _arrays.divided(xp, xp.sum(per_sample), n)
    else:
        value = xp.sum(per_sample)

    D_L = mats[-1].D
    if loss.on_logits:
        D_L = _diag(xp, xp.ones_like(z_L))
    P = D_L
    blocks: list[BlockGradients] = []
    for index in range(model.depth - 1, -1, -1):
        block, trace, m = model.blocks[index], traces[index], mats[index]
        if index < model.depth - 1:
            P = P @ mats[index + 1].Q @ m.D
        blocks.append(_block_products(xp, block, trace, m, P, dY_da))
    blocks.reverse()
    dx = xp.matrix_transpose(P @ mats[0].Q) @ dY_da
    return Gradients(value, dx[:, :, 0], blocks)


def _block_products(xp, block, trace, m, P, dY_da) -> BlockGradients:
    P_t = xp.matrix_transpose(P)
    # (n, q, 1) = (P W2 D_hat)^T dY/da^L, and (n, p, 1) = P^T dY/da^L.
    hidden_error = xp.matrix_transpose(P @ block.W2 @ m.D_hat) @ dY_da
    error = P_t @ dY_da
    a_t = trace.a_prev[:, None, :]
    return BlockGradients(
        W1=xp.sum(hidden_error @ a_t, axis=0),
        W2=xp.sum(error @ trace.h[:, None, :], axis=0),
        W3=xp.sum(error @ a_t, axis=0) if block.shortcut == "learned" else None,
        b1=xp.sum(hidden_error[:, :, 0], axis=0) if block.b1 is not None else None,
        b2=xp.sum(error[:, :, 0], axis=0) if block.b2 is not None else None,
    )


@through_numpy
def input_jacobian(model: ResidualMLP, x: Array, mode: str = "auto") -> Array:
    """Return the Jacobian ``J = dz^L/dx`` of the logits, shape ``(n, p_L, p_0)``.

    Row ``r`` of ``J[i]`` is equation (5), ``dz^L_r/dx`` at sample ``i``.

    Args:
        mode: ``"reverse"`` pushes the ``p_L`` unit vectors down through the
            recurrence, ``"forward"`` pushes the ``p_0`` unit vectors up,
            ``"auto"`` picks whichever carries fewer, and ``"product"``
            multiplies the ``Q^l`` and ``D^l`` of ``theorem_matrices``.
    """
    if mode not in JACOBIAN_MODES:
        raise ValueError(
            f"Unknown mode {mode!r}; expected one of: {', '.join(JACOBIAN_MODES)}."
        )
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    traces, _ = model.trace(x)
    if mode == "auto":
        mode = "reverse" if model.n_classes <= model.sizes[0] else "forward"
    if mode == "reverse":
        return _jacobian_reverse(model, traces)
    if mode == "forward":
        return _jacobian_forward(model, traces)
    mats = _matrices(model, traces)
    J = mats[0].Q
    for index in range(1, model.depth):
        J = mats[index].Q @ mats[index - 1].D @ J
    return J


def _jacobian_reverse(model: ResidualMLP, traces: list[BlockTrace]) -> Array:
    xp = model.xp
    n, k = traces[-1].z.shape
    eye = xp.eye(k, dtype=model.dtype, device=model.device)
    # Error vector r of every sample starts as the unit vector of logit r, so
    # the recurrence carries it down to row r of J: dz^L_r/dx.
    error = xp.broadcast_to(eye[:, None, :], (k, n, k))
    rows, _ = propagate(model, traces, error, keep=False)
    return xp.permute_dims(rows, (1, 0, 2))


def _jacobian_forward(model: ResidualMLP, traces: list[BlockTrace]) -> Array:
    xp = model.xp
    g, g_post, _ = model.activations()
    n, d = traces[0].a_prev.shape
    eye = xp.eye(d, dtype=model.dtype, device=model.device)
    # Row j of sample i is the tangent da^{l-1}/dx_j; the d rows of every
    # sample are stacked into one (n d, p_{l-1}) matrix.
    T = xp.reshape(xp.broadcast_to(eye[None, :, :], (n, d, d)), (n * d, d))
    for index, (block, trace) in enumerate(zip(model.blocks, traces)):
        H = _scale_rows(xp, T @ block.W1.T, g.derivative(xp, trace.u))
        Z = H @ block.W2.T
        if block.shortcut == "learned":
            Z = Z + T @ block.W3.T
        elif block.shortcut == "identity":
            Z = Z + T
        if index < model.depth - 1:
            T = _scale_rows(xp, Z, g_post.derivative(xp, trace.z))
    return xp.permute_dims(xp.reshape(Z, (n, d, Z.shape[1])), (0, 2, 1))


def _scale_rows(xp: Any, rows: Array, scale: Array) -> Array:
    """Multiply the stacked rows ``(n k, w)`` of sample ``i`` by ``scale[i]``.

    ``scale`` has shape ``(n, w)``; each sample owns ``k`` consecutive rows.
    """
    n, w = scale.shape
    scaled = xp.reshape(rows, (n, rows.shape[0] // max(n, 1), w)) * scale[:, None, :]
    return xp.reshape(scaled, (rows.shape[0], w))
