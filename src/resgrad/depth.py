"""Why residual networks keep their gradients: a study over depth.

Every network here is probed with the same loss: a fixed random batch ``x``
whose rows lie on the unit sphere, and a linear loss ``Y_i = v_i . a^L_i``
whose gradient ``dY_i/da^L_i = v_i`` is a fixed random unit vector per
sample. The loss then adds nothing of its own, and the norms below measure
the network alone::

    e^L     = D^L v                      e^l = dY/dz^l = (P^l)^T v
    e_hat^l = D_hat^l W2^T e^l           dY/dx = (Q^1)^T e^1
    ||dY/dW^{l1}||_F = ||e_hat^l|| ||a^{l-1}||
    ||dY/dW^{l2}||_F = ||e^l|| ||h^l||
    ||dY/dW^{l3}||_F = ||e^l|| ||a^{l-1}||

per sample, since each weight gradient of one sample is an outer product.
The same ``v`` is the gradient of the squared error ``0.5 ||a^L - t||^2`` at
the target ``t = a^L - v``. For a unit ``v`` drawn uniformly,
``E ||dY/dx||^2 = tr(J J^T) / p_L`` with ``J = da^L/dx``, the mean eigenvalue
of ``J J^T``, so the input-gradient gain and the spectrum of the Jacobian
measure the same growth.

Norms are kept as base-10 logarithms, and the recurrence runs over segments
of blocks with the error rescaled between segments, so that depths of a
thousand blocks neither overflow nor underflow in float64.

The identity-block study follows the last section of the manuscript
"Explicit Matrix Gradient Expression for Residual Network", equations
(69)-(73): the top blocks become ``W1 = W2 = 0``, ``W3 = I``.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _arrays
from .gradients import propagate
from .model import Block, ForwardOverflowError, ResidualMLP

Array = Any
Progress = Callable[..., Iterable]

ARCHITECTURES = ("residual", "learned", "plain", "scaled", "zero")
"""Networks of the sweep: ``residual`` (identity shortcut), ``learned``
(a He-drawn shortcut matrix ``W3``), ``plain`` (no shortcut), ``scaled``
(identity shortcut, ``W2`` scaled by ``alpha = 1 / sqrt(L)``) and ``zero``
(identity shortcut, ``alpha = 0``, so every block starts as the identity)."""

HOMOGENEOUS_ACTIVATIONS = ("identity", "relu", "leaky_relu")
"""Activations with ``g(c u) = c g(u)`` for ``c > 0``."""

# Blocks between two rescalings. He-drawn blocks grow a norm by about 2 per
# block at most, so a segment stays far inside float64's range (1e308).
SEGMENT_BLOCKS = 32
# The second entry of the probe generator's seed, so that probes never reuse
# the stream that ResidualMLP.init(seed=s) draws weights from.
PROBE_STREAM = 1
DEFAULT_HISTOGRAM_EDGES = np.linspace(-16.0, 24.0, 161)


# Networks and probes.


def branch_scale(arch: str, depth: int) -> float:
    """Return the factor ``alpha`` that multiplies ``W2`` in ``arch`` of ``depth``."""
    _check_arch(arch)
    depth = _check_positive_int("depth", depth)
    if arch == "scaled":
        return 1.0 / math.sqrt(depth)
    return 0.0 if arch == "zero" else 1.0


def shortcut_of(arch: str) -> str:
    """Return the ``ResidualMLP`` shortcut of ``arch``."""
    _check_arch(arch)
    return {"learned": "learned", "plain": "none"}.get(arch, "identity")


def build_network(
    arch: str,
    depth: int,
    width: int,
    *,
    activation: str = "relu",
    post_activation: str | None = None,
    output_activation: str = "identity",
    init: str = "he",
    seed: int = 0,
) -> ResidualMLP:
    """Draw a square network of ``depth`` blocks of ``width`` without biases.

    Every block has ``p_l = q_l = width``. ``arch`` is one of
    ``ARCHITECTURES``: ``residual`` (identity shortcut), ``learned`` (a
    drawn ``W3``), ``plain`` (no shortcut), ``scaled`` (identity shortcut,
    ``W2`` times ``1 / sqrt(depth)``) or ``zero`` (identity shortcut,
    ``W2 = 0``). The other arguments go to ``ResidualMLP.init``.
    """
    shortcut = shortcut_of(arch)
    depth = _check_positive_int("depth", depth)
    width = _check_positive_int("width", width)
    _check_fits(depth, width, 3 if arch == "learned" else 2)
    return ResidualMLP.init(
        [width] * (depth + 1),
        activation=activation,
        post_activation=post_activation,
        output_activation=output_activation,
        shortcut=shortcut,
        init=init,
        alpha=branch_scale(arch, depth),
        bias=False,
        seed=seed,
    )


def identity_block(width: int, like: Array) -> Block:
    """Return the block ``W1 = W2 = 0``, ``W3 = I`` of equation (70).

    Its ``Q = W2 D_hat W1 + W3`` is the identity. ``like`` fixes the
    namespace, dtype and device of the arrays.
    """
    width = _check_positive_int("width", width)
    xp = _arrays.namespace(like)
    device = _arrays.array_api_compat.device(like)
    W1 = xp.zeros((width, width), dtype=like.dtype, device=device)
    W2 = xp.zeros((width, width), dtype=like.dtype, device=device)
    W3 = xp.eye(width, dtype=like.dtype, device=device)
    return Block(W1=W1, W2=W2, W3=W3, shortcut="learned")


def probe_batch(
    n: int, n_features: int, n_outputs: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the inputs ``x`` (n, n_features) and gradients ``v`` (n, n_outputs).

    Both have rows drawn uniformly on the unit sphere (float64), from a
    stream of ``seed`` separate from the one ``ResidualMLP.init`` uses.
    """
    n = _check_positive_int("n", n)
    n_features = _check_positive_int("n_features", n_features)
    n_outputs = _check_positive_int("n_outputs", n_outputs)
    rng = np.random.default_rng([_arrays.check_seed(seed), PROBE_STREAM])
    x = _unit_rows(rng.standard_normal((n, n_features)))
    v = _unit_rows(rng.standard_normal((n, n_outputs)))
    return x, v


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# The gradient profile of one network.


@dataclass
class GradientProfile:
    """Base-10 logarithms of per-sample gradient norms, block by block.

    Attributes:
        input: ``log10 ||dY_i/dx_i||``, shape ``(n,)``.
        error: ``log10 ||e^l_i||`` with ``e^l = dY/dz^l``, shape ``(n, L)``.
        W1: ``log10 ||dY_i/dW^{l1}||_F``, shape ``(n, L)``.
        W2: ``log10 ||dY_i/dW^{l2}||_F``, shape ``(n, L)``.
        W3: ``log10 ||dY_i/dW^{l3}||_F``, NaN in the blocks without a
            learned shortcut, or ``None`` when no block has one.

    A zero norm is ``-inf``.
    """

    input: np.ndarray
    error: np.ndarray
    W1: np.ndarray
    W2: np.ndarray
    W3: np.ndarray | None

    __repr__ = _arrays.summary_repr

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the per-block arrays by name, leaving out an absent ``W3``."""
        named = {"error": self.error, "W1": self.W1, "W2": self.W2, "W3": self.W3}
        return {name: value for name, value in named.items() if value is not None}


def gradient_profile(
    model: ResidualMLP, x: Array, direction: Array, *, segment: int = SEGMENT_BLOCKS
) -> GradientProfile:
    """Measure every block's gradient norms for the loss ``Y_i = v_i . a^L_i``.

    The recurrence is that of ``resgrad.gradients.propagate``, run over
    segments of ``segment`` blocks: the error ``e`` is divided by its norm
    between segments and the logarithm of the factor is carried, which is
    exact because ``e`` enters the recurrence linearly. The forward pass is
    rescaled the same way when the network is positively homogeneous (no
    biases, activations in ``HOMOGENEOUS_ACTIVATIONS``), which leaves every
    ``D^l`` and ``e^l`` unchanged.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)`` in the model's namespace and dtype.
        direction: ``v = dY/da^L`` of shape ``(n, p_L)``, same namespace.
        segment: blocks per segment.

    Returns:
        A ``GradientProfile`` of NumPy float64 arrays.

    Raises:
        ValueError: if the arguments are invalid.
        DepthOverflowError: if the forward pass overflows float64, which a
            network that cannot be rescaled does after enough blocks.
    """
    xp = _check_probe(model, x, direction)
    segment = _check_positive_int("segment", segment)
    pieces = _segments(model, segment)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        traces, scales = _forward(pieces, x, _rescalable(model), segment)
        _, _, g_out = model.activations()
        error = direction * g_out.derivative(xp, traces[-1][-1].z)
        return _backward(pieces, traces, scales, error)


def _check_probe(model: ResidualMLP, x: Array, direction: Array) -> Any:
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    xp = model._namespace_with(x, direction, names=("x", "direction"))
    _arrays.check_input(xp, x, model.sizes[0], model.dtype)
    expected = (x.shape[0], model.n_classes)
    if tuple(direction.shape) != expected:
        raise ValueError(
            f"Expected the direction dY/da^L of shape {expected}, one row per "
            f"row of x, got {tuple(direction.shape)}."
        )
    _arrays.check_input(xp, direction, model.n_classes, model.dtype, "direction")
    return xp


def _rescalable(model: ResidualMLP) -> bool:
    names = (model.activation, model.post_activation, model.output_activation)
    homogeneous = all(name in HOMOGENEOUS_ACTIVATIONS for name in names)
    unbiased = all(b.b1 is None and b.b2 is None for b in model.blocks)
    return homogeneous and unbiased


def _segments(model: ResidualMLP, size: int) -> list[tuple[int, ResidualMLP]]:
    """Split ``model`` into networks of at most ``size`` blocks.

    A segment other than the last ends with ``post_activation``, so that
    segments applied in turn compute ``model``. Returns ``(start, net)``.
    """
    pieces = []
    for start in range(0, model.depth, size):
        stop = min(start + size, model.depth)
        last = stop == model.depth
        output = model.output_activation if last else model.post_activation
        net = ResidualMLP(
            model.blocks[start:stop],
            model.activation,
            model.post_activation,
            output,
        )
        pieces.append((start, net))
    return pieces


class DepthOverflowError(ForwardOverflowError):
    """The forward pass of ``gradient_profile`` left float64's range.

    Attributes:
        block: the first block, counted from 1, whose ``u^l`` or ``z^l`` is
            not finite.
        depth: the number of blocks of the network.
        segment: the blocks between two rescalings.
        rescaled: whether the forward pass was rescaled between segments.
        network: the network's description in the message.
        advice: the fix the message gives, in place of the one for
            ``gradient_profile``'s arguments.
    """

    def __init__(
        self,
        block: int,
        depth: int,
        segment: int,
        rescaled: bool,
        network: str = "",
        advice: str = "",
    ):
        self.block = block
        self.depth = depth
        self.segment = segment
        self.rescaled = rescaled
        self.network = network
        self.advice = advice
        super().__init__(self._message())

    def __reduce__(self) -> tuple:
        # Pickling (a sweep in a process pool) rebuilds from these arguments.
        arguments = (self.block, self.depth, self.segment, self.rescaled)
        return type(self), (*arguments, self.network, self.advice)

    def location(self) -> str:
        """Return the clause that names the network and the block."""
        of = f" of {self.network}" if self.network else ""
        return (
            f"The forward pass{of} overflowed float64 in block {self.block} of "
            f"{self.depth} (counting from 1)"
        )

    def _message(self) -> str:
        where = self.location()
        if self.advice:
            return f"{where}; {self.advice}"
        if self.rescaled:
            segment = min(self.segment, self.depth)
            return (
                f"{where}, within one segment of {segment} blocks between "
                "rescalings; use fewer blocks, a smaller segment= of "
                "gradient_profile, or branches scaled down (a smaller alpha, or "
                "the scaled or zero architecture)."
            )
        homogeneous = ", ".join(HOMOGENEOUS_ACTIVATIONS)
        return (
            f"{where}. The network has biases or an activation that is not "
            "positively homogeneous, so it cannot be rescaled; use fewer than "
            f"{self.block} blocks, branches scaled down (a smaller alpha, or "
            "the scaled or zero architecture), or activations out of "
            f"{homogeneous} without biases."
        )


def _forward(pieces, x, rescale, segment):
    """Run the segments in turn.

    Returns each segment's ``BlockTrace`` list and the ``log10`` factor, of
    shape ``(n,)``, that the segment's input was divided by.
    """
    xp = pieces[0][1].xp
    a = x
    scale = xp.zeros(
        x.shape[0], dtype=x.dtype, device=_arrays.array_api_compat.device(x)
    )
    depth = pieces[-1][0] + pieces[-1][1].depth
    traces, scales = [], []
    for start, net in pieces:
        scales.append(scale)
        segment_traces, output = _trace_finite(xp, net, a)
        if segment_traces is None:
            block = start + _first_overflow(xp, net, a) + 1
            raise DepthOverflowError(block, depth, segment, rescale)
        traces.append(segment_traces)
        a = output
        if rescale:
            norm = _safe_norm(xp, a)
            a = a / norm[:, None]
            scale = scale + xp.log10(norm)
    return traces, scales


def _trace_finite(xp, net, a):
    """Return ``net.trace(a)``, or ``(None, None)`` when a value is not finite.

    A value can leave float64's range and come back, as ``relu(-inf) = 0``,
    so every ``u^l`` and ``z^l`` is checked, not only the output.
    """
    try:
        traces, output = net.trace(a)
    except ForwardOverflowError:
        return None, None
    for trace in traces:
        if not (_arrays.all_finite(xp, trace.u) and _arrays.all_finite(xp, trace.z)):
            return None, None
    if not _arrays.all_finite(xp, output):
        return None, None
    return traces, output


def _first_overflow(xp, net, a) -> int:
    """Return the index in ``net`` of the first block whose ``u`` or ``z`` is
    not finite on the finite input ``a``."""
    for index, (_, block) in enumerate(_segments(net, 1)):
        traces, a = _trace_finite(xp, block, a)
        if traces is None:
            return index
    return net.depth - 1


def _safe_norm(xp, a):
    """Return the row norms of ``a`` without overflow, with 1 for zero rows."""
    peak = xp.max(xp.abs(a), axis=1)
    positive = peak > 0
    peak = xp.where(positive, peak, xp.ones_like(peak))
    norm = peak * xp.linalg.vector_norm(a / peak[:, None], axis=1)
    return xp.where(positive, norm, xp.ones_like(norm))


def _log10_norm(xp, a):
    peak = xp.max(xp.abs(a), axis=1)
    safe = xp.where(peak > 0, peak, xp.ones_like(peak))
    inner = xp.linalg.vector_norm(a / safe[:, None], axis=1)
    return xp.log10(safe) + xp.log10(inner)


def _backward(pieces, traces, scales, error) -> GradientProfile:
    xp = pieces[0][1].xp
    _, g_post, _ = pieces[0][1].activations()
    columns: dict[str, list] = {"error": [], "W1": [], "W2": [], "W3": []}
    log_e = xp.zeros_like(scales[0])
    e = error
    for index in range(len(pieces) - 1, -1, -1):
        _, net = pieces[index]
        dx, errors = propagate(net, traces[index], e)
        blocks = _segment_norms(xp, net, traces[index], errors, log_e, scales[index])
        for name, values in blocks.items():
            columns[name] = values + columns[name]
        if index > 0:
            dx = dx * g_post.derivative(xp, traces[index - 1][-1].z)
        norm = _safe_norm(xp, dx)
        e = dx / norm[:, None]
        log_e = log_e + xp.log10(norm)
    # After the first segment, e is dY/dx divided by 10**log_e.
    W3 = _stack(columns["W3"])
    return GradientProfile(
        input=_to_numpy(log_e + _log10_norm(xp, e)),
        error=_stack(columns["error"]),
        W1=_stack(columns["W1"]),
        W2=_stack(columns["W2"]),
        W3=None if np.isnan(W3).all() else W3,
    )


def _segment_norms(xp, net, traces, errors, log_e, log_a) -> dict[str, list]:
    """Return the log10 norms of each block of one segment, as lists of (n,).

    A block without a learned shortcut gets NaN for ``W3``.
    """
    rows: dict[str, list] = {"error": [], "W1": [], "W2": [], "W3": []}
    for block, trace, (e, e_hat) in zip(net.blocks, traces, errors):
        norm_e = _log10_norm(xp, e) + log_e
        norm_a = _log10_norm(xp, trace.a_prev) + log_a
        rows["error"].append(norm_e)
        rows["W1"].append(_log10_norm(xp, e_hat) + log_e + norm_a)
        rows["W2"].append(norm_e + _log10_norm(xp, trace.h) + log_a)
        learned = block.shortcut == "learned"
        rows["W3"].append(norm_e + norm_a if learned else norm_e * math.nan)
    return rows


def _stack(columns: list) -> np.ndarray:
    return np.stack([_to_numpy(c) for c in columns], axis=1)


def _to_numpy(a: Array) -> np.ndarray:
    """Return ``a`` as a float64 NumPy array on the host."""
    return np.asarray(_arrays.to_numpy(a), dtype=np.float64)


# Statistics over seeds.


def log10_rms(log10_values: np.ndarray, axis: int | tuple[int, ...] = 0) -> np.ndarray:
    """Return ``log10 sqrt(mean(10 ** (2 g)))`` along ``axis``, without overflow.

    ``log10_values`` contains ``g = log10 ||.||``, and the result is the
    logarithm of the root mean square of the norms. An axis of only ``-inf`` gives
    ``-inf``.
    """
    g = np.asarray(log10_values, dtype=np.float64)
    if g.size == 0:
        raise ValueError(
            f"Expected at least one value in log10_values, got shape {g.shape}."
        )
    peak = np.max(g, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        inner = np.log10(np.mean(10.0 ** (2 * (g - safe)), axis=axis, keepdims=True))
    result = safe + 0.5 * inner
    result = np.where(np.isneginf(peak), -np.inf, result)
    return np.squeeze(result, axis=axis)


@dataclass
class Summary:
    """Statistics over seeds of a norm, as base-10 logarithms.

    Attributes:
        rms: ``log10`` of the root mean square over every seed and sample,
            the estimate of ``sqrt(E ||.||^2)``.
        std: the standard deviation over seeds of each seed's ``log10``
            root mean square over its samples (a spread in decades).
        low, high: the minimum and maximum of those per-seed values.
    """

    rms: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray

    __repr__ = _arrays.summary_repr

    @classmethod
    def of(cls, per_seed: Sequence[np.ndarray]) -> Summary:
        """Summarise arrays of shape ``(n, ...)``, one per seed."""
        if len(per_seed) == 0:
            raise ValueError("Expected the norms of at least one seed, got none.")
        stacked = np.stack([np.asarray(a, dtype=np.float64) for a in per_seed])
        if stacked.ndim < 2 or stacked.shape[1] == 0:
            raise ValueError(
                "Expected arrays of shape (n, ...) with at least one sample per "
                f"seed, got shape {stacked.shape[1:]}."
            )
        seed_rms = log10_rms(stacked, axis=1)
        with np.errstate(invalid="ignore"):
            # A seed whose norm is exactly zero (-inf) leaves the spread NaN.
            std = np.std(seed_rms, axis=0)
        # NumPy's reductions return 0-d results as scalars, which print
        # differently from log10_rms's 0-d array, so all four become arrays.
        return cls(
            rms=np.asarray(log10_rms(stacked, axis=(0, 1))),
            std=np.asarray(std),
            low=np.asarray(np.min(seed_rms, axis=0)),
            high=np.asarray(np.max(seed_rms, axis=0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON values (lists for arrays, ``None`` for -inf)."""
        return {
            name: _json(getattr(self, name)) for name in ("rms", "std", "low", "high")
        }


def _json(value: Any) -> Any:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        number = float(array)
        return number if math.isfinite(number) else None
    return [_json(item) for item in array]


# Singular values of the input-output Jacobian.


def jacobian_singular_values(
    model: ResidualMLP, x: Array, *, output: bool = False, mode: str = "auto"
) -> np.ndarray:
    """Return the singular values of ``J`` at each sample, ``(n, min(p_L, p_0))``.

    ``J = dz^L/dx = Q^L D^{L-1} Q^{L-1} ... D^1 Q^1`` from
    ``resgrad.input_jacobian`` (``mode`` is passed on: ``"product"`` forms
    every ``Q^l`` and ``D^l``). With ``output`` true the Jacobian is that of
    ``a^L = g_out(z^L)``, ``D^L J``.
    """
    from .product import input_jacobian

    _arrays.check_flag("output", output)
    xp = model.xp
    J = input_jacobian(model, x, mode=mode)
    if output:
        _, _, g_out = model.activations()
        J = g_out.derivative(xp, model.logits(x))[:, :, None] * J
    J = _to_numpy(J)
    if not np.all(np.isfinite(J)):
        raise ValueError(
            f"The Jacobian of this {model.depth}-block network overflows float64; "
            "compute singular values for shallower networks only."
        )
    return np.linalg.svd(J, compute_uv=False)


def eigenvalue_moments(singular_values: np.ndarray, rows: int) -> dict[str, float]:
    """Return the mean and variance of the eigenvalues of ``J J^T`` (rows, rows).

    The eigenvalues are the squared singular values, plus ``rows - k`` zeros
    when ``J`` has fewer columns than rows; ``singular_values`` has shape
    ``(k,)`` with ``1 <= k <= rows`` and finite values. ``normalised_variance``
    is the variance over the squared mean.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(
            f"Expected singular_values of shape (k,), the values of one matrix, got "
            f"shape {s.shape}; pass one row of jacobian_singular_values at a time."
        )
    if s.shape[0] == 0:
        raise ValueError("Expected at least one singular value, got an empty array.")
    _arrays.check_finite(np, s, "singular_values")
    if np.any(s < 0):
        index = int(np.argmax(s < 0))
        raise ValueError(
            f"Expected singular values >= 0, got {float(s[index])!r} at index "
            f"{index}; pass the values of an SVD, such as "
            "np.linalg.svd(J, compute_uv=False)."
        )
    rows = _check_positive_int("rows", rows)
    if s.shape[0] > rows:
        raise ValueError(
            f"Expected at most rows = {rows} singular values, got {s.shape[0]}; "
            "pass rows = p_L, the number of rows of J."
        )
    eigenvalues = np.zeros(rows)
    eigenvalues[: s.shape[-1]] = s**2
    mean = float(np.mean(eigenvalues))
    variance = float(np.var(eigenvalues))
    normalised = variance / mean**2 if mean > 0 else math.nan
    return {"mean": mean, "variance": variance, "normalised_variance": normalised}


def numerical_zeros(singular_values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mark the singular values below float64's resolution next to the largest.

    A value at most ``s_max * max(shape) * eps`` is marked, the rule of
    ``numpy.linalg.matrix_rank``. Relu masks make ``J`` rank-deficient, and
    its zero singular values come out of the SVD at that rounding level.
    Deep networks also have nonzero values below it: when ``s_max`` is
    ``1e13`` the level is near ``1e-1``, so the marked fraction can exceed
    the fraction of exact zeros.

    Args:
        singular_values: shape ``(n, k)``, one row per sample.
        shape: the shape ``(p_L, p_0)`` of ``J``.

    Returns:
        A boolean array of the shape of ``singular_values``.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim == 0 or s.shape[-1] == 0:
        raise ValueError(
            f"Expected at least one singular value per row, got shape {s.shape}."
        )
    if len(shape) != 2:
        raise ValueError(f"Expected the shape (p_L, p_0) of J, got {shape!r}.")
    for size in shape:
        _check_positive_int("every entry of shape", size)
    tolerance = s.max(axis=-1, keepdims=True) * max(shape) * np.finfo(np.float64).eps
    return s <= tolerance


@dataclass
class Spectrum:
    """The singular values of ``J`` pooled over seeds and samples.

    Attributes:
        log10_singular_values: every ``log10 s``, shape ``(m,)``, with
            ``-inf`` for a value that ``numerical_zeros`` marks.
        moments: one ``eigenvalue_moments`` dict per seed and sample.
        rows: the number of rows ``p_L`` of ``J``.
    """

    log10_singular_values: np.ndarray
    moments: list[dict[str, float]]
    rows: int

    __repr__ = _arrays.summary_repr

    @classmethod
    def of(
        cls, singular_values: Sequence[np.ndarray], shape: tuple[int, int]
    ) -> Spectrum:
        """Pool arrays of shape ``(n, k)`` of the singular values of ``J`` (shape)."""
        rows = shape[0]
        moments = [
            eigenvalue_moments(s, rows) for group in singular_values for s in group
        ]
        if not moments:
            raise ValueError(
                "Expected the singular values of at least one sample, got none."
            )
        logs = []
        for group in singular_values:
            with np.errstate(divide="ignore"):
                values = np.log10(group)
            zeros = numerical_zeros(group, shape)
            logs.append(np.where(zeros, -np.inf, values).ravel())
        return cls(np.concatenate(logs), moments, rows)

    def mean_moments(self) -> dict[str, float]:
        """Return each moment averaged over the seeds and samples."""
        names = ("mean", "variance", "normalised_variance")
        return {name: float(np.mean([m[name] for m in self.moments])) for name in names}

    def zero_fraction(self) -> float:
        """Return the fraction of singular values that ``numerical_zeros``
        marks, exact zeros and values below float64's resolution."""
        return float(np.mean(np.isneginf(self.log10_singular_values)))

    def histogram(self, edges: np.ndarray = DEFAULT_HISTOGRAM_EDGES) -> np.ndarray:
        """Count the nonzero ``log10 s`` in the bins ``edges``.

        Values outside the edges go to the end bins; zeros are left out (see
        ``zero_fraction``).
        """
        s = self.log10_singular_values
        values = np.clip(s[np.isfinite(s)], edges[0], edges[-1])
        return np.histogram(values, bins=edges)[0]

    def to_dict(self) -> dict[str, Any]:
        """Return the moments, the range and the histogram as JSON values."""
        s = self.log10_singular_values
        finite = s[np.isfinite(s)]
        return {
            **{name: _json(value) for name, value in self.mean_moments().items()},
            "zero_fraction": self.zero_fraction(),
            "log10_max": _json(np.max(finite)) if finite.size else None,
            "log10_min": _json(np.min(finite)) if finite.size else None,
            "histogram_edges": _json(DEFAULT_HISTOGRAM_EDGES),
            "histogram": [int(c) for c in self.histogram()],
        }


# The sweep over depth, width and architecture.


@dataclass
class DepthResult:
    """The gradient norms of one architecture at one depth and width.

    Attributes:
        arch, depth, width, alpha: the network (``alpha`` scales ``W2``).
        seeds, samples: how many networks and probe rows were averaged.
        blocks: ``Summary`` per name (``error``, ``W1``, ``W2``, and ``W3``
            for learned shortcuts), each with arrays of shape ``(L,)``.
        input: the ``Summary`` of ``||dY/dx||``.
        spectrum: the singular values of ``J``, or ``None`` when skipped.
        stage: ``"init"`` or ``"trained"``.
        identity_blocks: the number of top blocks set to the identity.
        accuracy: the test accuracy of a trained network, else ``None``.
        activation: the activation ``g`` inside the blocks.
    """

    arch: str
    depth: int
    width: int
    alpha: float
    seeds: int
    samples: int
    blocks: dict[str, Summary]
    input: Summary
    spectrum: Spectrum | None = None
    stage: str = "init"
    identity_blocks: int = 0
    accuracy: float | None = None
    activation: str = "relu"

    __repr__ = _arrays.summary_repr

    def log10_ratio(self, name: str = "W1") -> float:
        """Return ``log10`` of the first block's RMS norm over the last block's."""
        if name not in self.blocks:
            raise ValueError(
                f"Unknown quantity {name!r}; expected one of: {', '.join(self.blocks)}."
            )
        rms = self.blocks[name].rms
        with np.errstate(invalid="ignore"):
            # Both ends zero (-inf), as for W1 with alpha = 0, give NaN.
            return float(rms[0] - rms[-1])

    def log10_input_gain(self) -> float:
        """Return ``log10 E ||dY/dx||^2`` for unit ``dY/da^L``.

        This is ``log10 (tr(J J^T) / p_L)`` with ``J = da^L/dx``: for a
        square ``J``, its mean eigenvalue.
        """
        return float(2 * self.input.rms)

    def to_dict(self) -> dict[str, Any]:
        """Return every figure as JSON values."""
        return {
            "arch": self.arch,
            "stage": self.stage,
            "activation": self.activation,
            "depth": self.depth,
            "width": self.width,
            "alpha": self.alpha,
            "identity_blocks": self.identity_blocks,
            "seeds": self.seeds,
            "samples": self.samples,
            "accuracy": self.accuracy,
            "log10_ratio_first_to_last": {
                name: _json(self.log10_ratio(name)) for name in self.blocks
            },
            "log10_input_gain": _json(self.log10_input_gain()),
            "input": self.input.to_dict(),
            "blocks": {name: s.to_dict() for name, s in self.blocks.items()},
            "spectrum": self.spectrum.to_dict() if self.spectrum else None,
        }


def summarise(
    profiles: Sequence[GradientProfile],
) -> tuple[dict[str, Summary], Summary]:
    """Return the per-block ``Summary`` by name and that of ``||dY/dx||``."""
    if not profiles:
        raise ValueError("Expected at least one GradientProfile, got none.")
    names = profiles[0].arrays().keys()
    blocks = {name: Summary.of([p.arrays()[name] for p in profiles]) for name in names}
    return blocks, Summary.of([p.input for p in profiles])


def _no_progress(iterable: Iterable, **kwargs: Any) -> Iterable:
    return iterable


def depth_sweep(
    depths: Sequence[int] = (1, 4, 16, 64, 256, 1024),
    widths: Sequence[int] = (64, 256),
    archs: Sequence[str] = ("residual", "plain", "scaled"),
    seeds: int = 4,
    *,
    samples: int = 16,
    activation: str = "relu",
    post_activation: str | None = None,
    init: str = "he",
    spectrum_depth: int = 64,
    spectrum_samples: int = 1,
    jacobian_mode: str = "auto",
    progress: Progress | bool | None = None,
) -> list[DepthResult]:
    """Measure the gradient norms of each architecture at each depth and width.

    Network ``s`` (``s = 0 .. seeds - 1``) is ``build_network(arch, depth,
    width, seed=s)``, probed by ``probe_batch(samples, width, width, s)``,
    so every architecture and depth gets the same inputs and gradients.
    The singular values of ``J`` are computed on the first
    ``spectrum_samples`` rows for depths up to ``spectrum_depth``, since
    ``J`` costs ``2 L`` products of ``width x width`` matrices per sample.
    ``jacobian_mode`` goes to ``resgrad.input_jacobian``: ``"product"``
    multiplies the ``Q^l`` and ``D^l`` of Theorem 1 literally, and the
    default pushes unit vectors through the recurrence, which gives the same
    matrix at about half the cost.

    Returns:
        One ``DepthResult`` per width, architecture and depth, in that order.
    """
    depths = _check_int_list("depths", depths, _check_positive_int)
    widths = _check_int_list("widths", widths, _check_positive_int)
    archs = _check_archs(archs)
    seeds = _check_positive_int("seeds", seeds)
    samples = _check_positive_int("samples", samples)
    spectrum_depth = _check_non_negative_int("spectrum_depth", spectrum_depth)
    spectrum_samples = _check_non_negative_int("spectrum_samples", spectrum_samples)
    _check_jacobian_mode(jacobian_mode)
    progress = _arrays.progress_wrapper(progress) or _no_progress
    cases = [(w, a, d) for w in widths for a in archs for d in depths]
    runs = [(case, s) for case in cases for s in range(seeds)]
    profiles: dict[tuple, list] = {case: [] for case in cases}
    jacobians: dict[tuple, list] = {case: [] for case in cases}
    for (width, arch, depth), seed in progress(
        runs, desc="depth sweep", total=len(runs)
    ):
        model = build_network(
            arch,
            depth,
            width,
            activation=activation,
            post_activation=post_activation,
            init=init,
            seed=seed,
        )
        x, v = probe_batch(samples, width, width, seed)
        try:
            profile = gradient_profile(model, x, v)
        except DepthOverflowError as error:
            network = f"the {arch} network of width {width} (seed {seed})"
            raise DepthOverflowError(
                error.block, error.depth, error.segment, error.rescaled, network
            ) from None
        profiles[(width, arch, depth)].append(profile)
        if depth <= spectrum_depth and spectrum_samples > 0:
            try:
                s = jacobian_singular_values(
                    model, x[:spectrum_samples], mode=jacobian_mode
                )
            except MemoryError as error:
                network = f"the {arch} network of depth {depth} at width {width}"
                raise SpectrumMemoryError(str(error), network, depth) from None
            jacobians[(width, arch, depth)].append(s)
    return [
        _result(case, profiles[case], jacobians[case], samples, activation)
        for case in cases
    ]


class SpectrumMemoryError(MemoryError):
    """Forming the Jacobian of ``network`` or its SVD ran out of memory.

    Attributes:
        reason: the message of the ``MemoryError`` raised.
        network: the network's description.
        depth: its number of blocks; a ``spectrum_depth`` below it skips it.
    """

    def __init__(self, reason: str, network: str, depth: int):
        self.reason = reason
        self.network = network
        self.depth = depth
        super().__init__(
            f"Not enough memory for the singular values of the Jacobian of "
            f"{network} ({reason}); pass a spectrum_depth below {depth}, or 0 "
            "to skip them."
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.reason, self.network, self.depth)


def _result(case, profiles, jacobians, samples, activation) -> DepthResult:
    width, arch, depth = case
    blocks, input_summary = summarise(profiles)
    return DepthResult(
        arch=arch,
        depth=depth,
        width=width,
        alpha=branch_scale(arch, depth),
        seeds=len(profiles),
        samples=samples,
        blocks=blocks,
        input=input_summary,
        spectrum=Spectrum.of(jacobians, (width, width)) if jacobians else None,
        activation=activation,
    )


# After training.


def classifier_network(
    arch: str,
    depth: int,
    width: int,
    n_features: int,
    n_classes: int,
    *,
    seed: int = 0,
) -> ResidualMLP:
    """Draw a relu classifier ``[n_features, width, ..., width, n_classes]``.

    Blocks whose widths match get the shortcut of ``arch``; a block that
    changes the width gets a learned ``W3`` (``"none"`` for ``plain``). No
    biases, and ``W2`` is scaled by ``branch_scale(arch, depth)``.
    """
    depth = _check_positive_int("depth", depth)
    width = _check_positive_int("width", width)
    n_features = _check_positive_int("n_features", n_features)
    n_classes = _check_positive_int("n_classes", n_classes)
    sizes = [n_features] + [width] * (depth - 1) + [n_classes]
    model = ResidualMLP.init(
        sizes,
        width,
        shortcut="none" if arch == "plain" else "learned",
        alpha=branch_scale(arch, depth),
        bias=False,
        seed=seed,
    )
    if arch in ("plain", "learned"):
        return model
    blocks = [
        replace(b, W3=None, shortcut="identity")
        if b.in_features == b.out_features
        else b
        for b in model.blocks
    ]
    return replace(model, blocks=blocks)


def redrawn_network(model: ResidualMLP, seed: int = 0) -> ResidualMLP:
    """Return ``model``'s architecture with freshly drawn He weights.

    Shortcuts and activations are kept, biases (where present) start at
    zero and ``W2`` is not scaled, so the result is ``model`` at
    initialisation. The arrays live where ``model``'s do.
    """
    drawn = ResidualMLP.init(
        model.sizes,
        model.hidden,
        activation=model.activation,
        post_activation=model.post_activation,
        output_activation=model.output_activation,
        shortcut="learned",
        bias=True,
        seed=seed,
    ).convert(like=model.blocks[0].W1)
    blocks = []
    for old, new in zip(model.blocks, drawn.blocks):
        learned = old.shortcut == "learned"
        blocks.append(
            replace(
                new,
                W3=new.W3 if learned else None,
                shortcut=old.shortcut,
                b1=new.b1 if old.b1 is not None else None,
                b2=new.b2 if old.b2 is not None else None,
            )
        )
    return replace(drawn, blocks=blocks)


def trained_sweep(
    data: Any,
    depths: Sequence[int] = (1, 4, 16),
    width: int = 64,
    archs: Sequence[str] = ("residual", "plain", "scaled"),
    seeds: int = 2,
    *,
    epochs: int = 5,
    samples: int = 64,
    progress: Progress | bool | None = None,
) -> list[DepthResult]:
    """Measure the gradient norms of classifiers before and after training.

    Each ``classifier_network`` is trained by ``resgrad.training.fit`` on
    ``data.x_train``, ``data.y_train`` for ``epochs`` epochs (Adam, the
    ``fit`` defaults otherwise) and probed on the first ``samples`` test rows
    with random unit ``dY/da^L``, before and after.

    Args:
        data: a ``resgrad.data.Dataset``.

    Returns:
        A ``DepthResult`` with ``stage="init"`` and one with
        ``stage="trained"`` (and its mean test ``accuracy``) per architecture
        and depth.

    Raises:
        ImportError: if ``resgrad.training`` is not available.
    """
    depths = _check_int_list("depths", depths, _check_positive_int)
    archs = _check_archs(archs)
    seeds = _check_positive_int("seeds", seeds)
    samples = _check_positive_int("samples", samples)
    fit = _import_fit()
    progress = _arrays.progress_wrapper(progress) or _no_progress
    x = np.asarray(data.x_test[:samples], dtype=np.float64)
    runs = [(a, d, s) for a in archs for d in depths for s in range(seeds)]
    found: dict[tuple, dict[str, list]] = {}
    for arch, depth, seed in progress(runs, desc="trained networks", total=len(runs)):
        model = classifier_network(
            arch, depth, width, x.shape[1], data.n_classes, seed=seed
        )
        _, v = probe_batch(x.shape[0], 1, data.n_classes, seed)
        trained = fit(model, data.x_train, data.y_train, epochs=epochs, seed=seed).model
        accuracy = float(
            np.mean(np.asarray(trained.predict(data.x_test)) == data.y_test)
        )
        entry = found.setdefault((arch, depth), {"init": [], "trained": [], "acc": []})
        entry["init"].append(gradient_profile(model, x, v))
        entry["trained"].append(gradient_profile(trained, x, v))
        entry["acc"].append(accuracy)
    results = []
    for (arch, depth), entry in found.items():
        for stage in ("init", "trained"):
            blocks, input_summary = summarise(entry[stage])
            accuracy = float(np.mean(entry["acc"])) if stage == "trained" else None
            results.append(
                DepthResult(
                    arch,
                    depth,
                    width,
                    branch_scale(arch, depth),
                    seeds,
                    x.shape[0],
                    blocks,
                    input_summary,
                    stage=stage,
                    accuracy=accuracy,
                )
            )
    return results


def _import_fit() -> Callable[..., Any]:
    try:
        from .training import fit
    except ImportError as error:
        raise ImportError(
            "The trained-network study needs resgrad.training.fit, which could "
            f"not be imported ({error}); run the study at initialisation only."
        ) from error
    return fit


# The manuscript's limit: the top blocks become identity maps.


def identity_limit(
    activation: str = "relu",
    identity_blocks: Sequence[int] = (0, 1, 4, 16, 64, 256),
    *,
    base_depth: int = 4,
    width: int = 64,
    seeds: int = 4,
    samples: int = 16,
    init: str = "he",
    progress: Progress | bool | None = None,
) -> list[DepthResult]:
    """Stack ``k`` identity blocks on a random network and measure its gradients.

    The base is ``build_network("learned", base_depth, width)`` with
    ``activation`` inside and between the blocks, as in the manuscript. On
    top come ``k`` blocks with ``W1 = W2 = 0`` and ``W3 = I``, so
    ``Q^l = I`` there, while ``D^l = diag(g'(z^l))`` still multiplies into
    ``P^l`` of every block below. The results contain every block; the first
    ``base_depth`` are the ones the manuscript's limit (71)-(73) is about.

    Returns:
        One ``DepthResult`` (``arch="learned"``) per ``k``.
    """
    identity_blocks = _check_int_list(
        "identity_blocks", identity_blocks, _check_non_negative_int
    )
    base_depth = _check_positive_int("base_depth", base_depth)
    seeds = _check_positive_int("seeds", seeds)
    samples = _check_positive_int("samples", samples)
    progress = _arrays.progress_wrapper(progress) or _no_progress
    runs = [(k, s) for k in identity_blocks for s in range(seeds)]
    profiles: dict[int, list] = {k: [] for k in identity_blocks}
    for k, seed in progress(
        runs, desc=f"identity blocks ({activation})", total=len(runs)
    ):
        base = build_network(
            "learned", base_depth, width, activation=activation, init=init, seed=seed
        )
        top = [identity_block(width, base.blocks[0].W1) for _ in range(k)]
        model = ResidualMLP(base.blocks + top, activation, activation, "identity")
        x, v = probe_batch(samples, width, width, seed)
        profiles[k].append(gradient_profile(model, x, v))
    results = []
    for k, group in profiles.items():
        blocks, input_summary = summarise(group)
        results.append(
            DepthResult(
                "learned",
                base_depth + k,
                width,
                1.0,
                len(group),
                samples,
                blocks,
                input_summary,
                identity_blocks=k,
                activation=activation,
            )
        )
    return results


# Published results.


def branch_gain(
    alpha: float | None,
    depth: int,
    width: int = 256,
    seeds: int = 8,
    samples: int = 16,
) -> dict[str, float]:
    """Measure ``E ||dY/dx_0||^2 / ||dY/dx_L||^2`` of unnormalised residual blocks.

    Block ``l`` maps ``x_l = x_{l-1} + alpha W2 relu(W1 x_{l-1})`` with no
    activation after the sum, ``W1, W2 ~ N(0, 2 / width)`` and no biases;
    ``alpha=None`` takes ``1 / sqrt(depth)``. The prediction is
    ``(1 + 2 alpha^2)^L`` (derived in the depth-study documentation).

    Returns:
        ``measured``, ``predicted`` and ``standard_error`` (of the measured
        mean over seeds, each seed pooling its samples).
    """
    depth = _check_positive_int("depth", depth)
    width = _check_positive_int("width", width)
    seeds = _check_positive_int("seeds", seeds)
    samples = _check_positive_int("samples", samples)
    alpha = 1.0 / math.sqrt(depth) if alpha is None else float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"Expected alpha to be a finite number, got {alpha!r}.")
    _check_fits(depth, width, 2)
    per_seed = []
    for seed in range(seeds):
        model = ResidualMLP.init(
            [width] * (depth + 1),
            activation="relu",
            post_activation="identity",
            shortcut="identity",
            alpha=alpha,
            bias=False,
            seed=seed,
        )
        x, v = probe_batch(samples, width, width, seed)
        try:
            profile = gradient_profile(model, x, v)
        except DepthOverflowError as error:
            raise DepthOverflowError(
                error.block,
                error.depth,
                error.segment,
                error.rescaled,
                error.network,
                advice=(
                    f"pass a smaller alpha than {alpha!r}, since each block "
                    "multiplies the mean square of the signal by about "
                    "1 + 2 alpha^2."
                ),
            ) from None
        per_seed.append(np.mean(10.0 ** (2 * profile.input)))
    per_seed = np.asarray(per_seed)
    return {
        "alpha": alpha,
        "depth": depth,
        "measured": float(np.mean(per_seed)),
        "predicted": (1 + 2 * alpha**2) ** depth,
        "standard_error": float(np.std(per_seed) / math.sqrt(seeds)),
    }


def critical_relu_moments(depth: int, init: str, output: bool) -> dict[str, float]:
    """Return the large-width mean and normalised variance of ``J J^T``'s eigenvalues.

    The network is a plain relu network of ``depth`` blocks (``2 depth``
    layers) with weights of variance ``2 / width`` and no biases, as in
    Pennington, Schoenholz and Ganguli (2017). For free factors the means
    multiply and the normalised variances (variance / mean^2) add. A relu
    mask ``D`` has mean 1/2 and contributes 1, and ``W^T W`` has mean 2 and
    contributes 1 when Gaussian and 0 when ``sqrt(2)`` times orthogonal.
    ``J = dz^L/dx`` has ``2 depth`` weights and ``2 depth - 1`` masks.
    ``output=True`` takes ``da^L/dx`` with a relu on the output, one mask
    more, which is the network of that paper: mean 1 and normalised variance
    ``2 * layers`` (Gaussian) or ``layers`` (orthogonal).
    """
    depth = _check_positive_int("depth", depth)
    if init not in ("he", "orthogonal"):
        raise ValueError(f"Expected init 'he' or 'orthogonal', got {init!r}.")
    output = _arrays.check_flag("output", output)
    weights = 2 * depth
    masks = 2 * depth if output else 2 * depth - 1
    per_weight = 1.0 if init == "he" else 0.0
    return {
        "mean": 2.0 ** (weights - masks),
        "normalised_variance": masks + per_weight * weights,
    }


def jacobian_moments(
    depth: int, width: int = 512, init: str = "he", seeds: int = 3
) -> dict[str, dict[str, float]]:
    """Measure the eigenvalue moments of ``J J^T`` of a critical plain relu network.

    Network ``s`` is ``build_network("plain", depth, width, init=init,
    seed=s)``, evaluated at one probe input, and both Jacobians are taken
    from it: ``"logits"`` is ``J = dz^L/dx`` and ``"output"`` is
    ``D^L J = da^L/dx`` with a relu on the output. A plain block is two
    relu layers, so the network has ``2 depth`` layers.

    Returns:
        Per Jacobian: ``mean``, ``variance`` and ``normalised_variance``
        averaged over seeds, and the spread over seeds of the first and
        last as ``mean_std`` and ``normalised_variance_std``.
    """
    from .product import input_jacobian

    seeds = _check_positive_int("seeds", seeds)
    moments: dict[str, list] = {"logits": [], "output": []}
    for seed in range(seeds):
        logits, _ = _critical_plain(depth, width, init, seed)
        x, _ = probe_batch(1, width, width, seed)
        J = _to_numpy(input_jacobian(logits, x))[0]
        # D^L = diag(relu'(z^L)) masks the rows of J.
        mask = _to_numpy(logits.logits(x))[0] > 0
        for name, matrix in (("logits", J), ("output", J * mask[:, None])):
            s = np.linalg.svd(matrix, compute_uv=False)
            moments[name].append(eigenvalue_moments(s, width))
    return {name: _moment_table(rows) for name, rows in moments.items()}


def _moment_table(moments: list[dict[str, float]]) -> dict[str, float]:
    table = {name: [m[name] for m in moments] for name in moments[0]}
    result = {name: float(np.mean(values)) for name, values in table.items()}
    result["mean_std"] = float(np.std(table["mean"]))
    result["normalised_variance_std"] = float(np.std(table["normalised_variance"]))
    return result


def mean_jacobian_eigenvalue(
    depth: int, width: int = 512, init: str = "he", seeds: int = 32, samples: int = 16
) -> dict[str, dict[str, float]]:
    """Estimate the mean eigenvalue of ``J J^T`` by the recurrence, without ``J``.

    For ``v`` uniform on the unit sphere ``E ||J^T v||^2 = tr(J J^T) / p_L``,
    so ``E ||dY/dx||^2`` of ``gradient_profile`` is the mean eigenvalue, at
    the cost of one backward pass instead of ``p_0`` of them. The networks
    are those of ``jacobian_moments``.

    Returns:
        For ``"logits"`` and ``"output"``: the ``mean`` over seeds and
        samples and its ``standard_error`` over seeds.
    """
    seeds = _check_positive_int("seeds", seeds)
    samples = _check_positive_int("samples", samples)
    per_seed: dict[str, list] = {"logits": [], "output": []}
    for seed in range(seeds):
        logits, output = _critical_plain(depth, width, init, seed)
        x, v = probe_batch(samples, width, width, seed)
        for name, model in (("logits", logits), ("output", output)):
            gain = 10.0 ** (2 * gradient_profile(model, x, v).input)
            per_seed[name].append(float(np.mean(gain)))
    return {
        name: {
            "mean": float(np.mean(values)),
            "standard_error": float(np.std(values) / math.sqrt(seeds)),
        }
        for name, values in per_seed.items()
    }


def _critical_plain(depth, width, init, seed) -> tuple[ResidualMLP, ResidualMLP]:
    """Return one plain relu network with the identity and with relu on the output."""
    logits = build_network("plain", depth, width, init=init, seed=seed)
    output = ResidualMLP(logits.blocks, "relu", "relu", "relu")
    return logits, output


# Argument checks.


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        valid = ", ".join(ARCHITECTURES)
        raise ValueError(f"Unknown architecture {arch!r}; expected one of: {valid}.")


def _check_jacobian_mode(mode: str) -> None:
    # Checked before any work, since only depths with a spectrum use it.
    from .product import JACOBIAN_MODES

    if mode not in JACOBIAN_MODES:
        raise ValueError(
            f"Unknown jacobian_mode {mode!r}; expected one of: "
            f"{', '.join(JACOBIAN_MODES)}."
        )


def _check_archs(archs: Sequence[str]) -> list[str]:
    # One name is a list of one, not a sequence of letters.
    archs = [archs] if isinstance(archs, (str, bytes)) else list(archs)
    if not archs:
        raise ValueError("Expected at least one architecture in archs, got none.")
    for arch in archs:
        _check_arch(arch)
    _check_unique("archs", archs)
    return archs


def _check_fits(depth: int, width: int, matrices: int) -> None:
    """Raise ``ValueError`` when ``depth`` blocks of ``matrices`` float64
    ``width x width`` weights each need more memory than is available, or
    more bytes than an index can count where that is unknown."""
    from .data import _available_memory

    needed = depth * matrices * width * width * 8
    available = _available_memory()
    if needed <= (available if available is not None else sys.maxsize):
        return
    have = (
        f"the {available / 2**30:.1f} GiB of memory available"
        if available is not None
        else "an index can count"
    )
    raise ValueError(
        f"At depth={depth} and width={width} the network's weights alone need "
        f"{needed / 2**30:.1f} GiB, more than {have}; pass fewer blocks or a "
        "smaller width."
    )


def _check_positive_int(name: str, value: int) -> int:
    if not _is_whole(value) or value < 1:
        raise ValueError(f"Expected {name} to be a positive integer, got {value!r}.")
    return int(value)


def _check_non_negative_int(name: str, value: int) -> int:
    if not _is_whole(value) or value < 0:
        raise ValueError(
            f"Expected {name} to be a non-negative integer, got {value!r}."
        )
    return int(value)


def _is_whole(value: Any) -> bool:
    """Return whether ``value`` is a finite real number equal to an integer,
    not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and int(value) == value


def _check_int_list(
    name: str, values: Sequence[int], check: Callable[[str, int], int]
) -> list[int]:
    """Return ``values`` as a list of ints, each passed through ``check``;
    a single int stands for a list of one."""
    # A 0-d array or tensor contains one value.
    values = _arrays.scalar(values)
    if _is_whole(values):
        values = [values]
    if not isinstance(values, Iterable) or isinstance(values, (str, bytes)):
        raise TypeError(
            f"Expected {name} to be a list of integers, got {values!r}; pass "
            f"them as a list, such as {name}=[1, 4, 16]."
        )
    values = list(values)
    if not values:
        raise ValueError(f"Expected at least one value in {name}, got none.")
    values = [check(f"every value in {name}", value) for value in values]
    _check_unique(name, values)
    return values


def _check_unique(name: str, values: list) -> None:
    # A repeated depth, width or architecture would pool the networks of its
    # seeds twice over.
    repeated = _arrays.first_repeat(values)
    if repeated is not None:
        raise ValueError(
            f"Repeated value {repeated!r} in {name} {values}; give each value once."
        )
