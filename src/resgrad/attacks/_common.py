"""Argument checks, projections and the result type shared by every attack.

Notation: ``x`` is the clean batch of shape ``(n, d)`` in the box
``[lo, hi]``, ``clip`` projects onto the box and ``proj`` projects onto the
eps-ball around ``x`` and then onto the box. ``grad(v, c)`` is the per-sample
gradient ``dY_i/dv_i`` of the softmax cross-entropy with label ``c``, taken by
``resgrad.input_gradient`` (equation (4) of Theorem 1).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

import array_api_compat
import numpy as np

from .. import _arrays, _kernels
from .._arrays import check_number
from ..gradients import _input_gradient
from ..losses import get_loss
from ..model import ResidualMLP

Array = Any

# How far an input may lie outside the box before it is rejected, so that
# values rounded on their way into [0, 1] still count as inside. Where the
# dtype of the input spaces its values farther apart at the bounds, the
# tolerance is BOX_SPACINGS of those spacings instead (box_tolerance).
BOX_TOLERANCE = 1e-6
BOX_SPACINGS = 4


@dataclass
class AttackResult:
    """The outcome of an attack on a batch, one entry per sample.

    Arrays keep the namespace and device of the input ``x``.

    The integer fields are int64, except on JAX without its 64-bit mode,
    where they are int32, its default integer dtype.

    Attributes:
        x_adv: the adversarial inputs, shape ``(n, d)``, in the dtype of ``x``.
        success: ``(n,)`` booleans. An untargeted attack succeeds when the
            prediction differs from the true label, a targeted one when it
            equals the target.
        steps: ``(n,)`` int64, the gradient or saliency steps taken.
        linf: ``(n,)`` L-inf norms of ``x_adv - x``, in the dtype of ``x``.
        l2: ``(n,)`` L2 norms of ``x_adv - x``, in the dtype of ``x``.
        l0: ``(n,)`` int64, the number of features that changed.
        prediction: ``(n,)`` int64, the predicted class of ``x_adv``.
        target: ``(n,)`` int64 target classes of a targeted attack, else
            ``None``.
    """

    x_adv: Array
    success: Array
    steps: Array
    linf: Array
    l2: Array
    l0: Array
    prediction: Array
    target: Array | None = None

    __repr__ = _arrays.summary_repr


@dataclass(frozen=True)
class Batch:
    """The validated arguments of one attack call."""

    model: ResidualMLP
    xp: Any
    x: Array
    y: Array
    target: Array | None
    lo: float
    hi: float
    # Whether x lies in the box, not outside it within box_tolerance.
    inside: bool = True

    @property
    def device(self) -> Any:
        return _arrays.array_api_compat.device(self.x)

    @cached_property
    def prepared(self) -> list[tuple[Array | None, ...]]:
        """The model's weights as the forward pass on this batch computes
        fastest, made once for all gradient steps."""
        return self.model._prepared(self.n)

    @cached_property
    def wide_dtype(self) -> Any:
        """A dtype wide enough that the differences of ``x``'s floats are
        exact in it: float64, or float32 for half precision where the
        namespace lacks float64. ``None`` where ``x`` is already of the
        widest dtype there is."""
        xp = self.xp
        wide = xp.float64 if _arrays.has_float64(xp) else xp.float32
        return None if self.x.dtype in (xp.float64, wide) else wide

    @cached_property
    def wide_x(self) -> Array:
        """``x`` in ``wide_dtype``, for ``_l2_exceeds`` outside NumPy."""
        return self.xp.astype(self.x, self.wide_dtype)

    @cached_property
    def wide_buffer(self) -> np.ndarray:
        """A NumPy array of ``x``'s shape in ``wide_dtype``, for
        ``_l2_exceeds``."""
        return np.empty(self.x.shape, dtype=self.wide_dtype)

    @cached_property
    def wide_margin(self) -> float:
        """The factor below 1 that keeps the norms computed in the widest
        dtype below eps: 2 (d + 2) units in its last place, a bound on the
        rounding of a sum of d squares in any order."""
        dtype = self.x.dtype if self.wide_dtype is None else self.wide_dtype
        return 1.0 - 2.0 * (self.d + 2) * float(self.xp.finfo(dtype).eps)

    @cached_property
    def box(self) -> tuple[float, float]:
        """The box as floats of ``x``'s dtype: the smallest at or above
        ``lo`` and the largest at or below ``hi``, so that a bound that the
        dtype rounds outward, such as 0.7 in float16, stays inside."""
        low = _dtype_float(self.xp, self.x.dtype, self.lo, up=True)
        high = _dtype_float(self.xp, self.x.dtype, self.hi, up=False)
        if low > high:
            # A box narrower than the spacing of the floats there.
            return self.lo, self.hi
        return low, high

    @cached_property
    def largest(self) -> float:
        """The largest finite value of ``x``'s dtype."""
        return float(self.xp.finfo(self.x.dtype).max)

    @cached_property
    def ops(self) -> _kernels.Kernels:
        """The kernels of every gradient step, looked up once."""
        return _kernels.kernels(self.model, self.x)

    def predict(self, v: Array) -> Array:
        """Return the predicted classes ``(n,)`` of an iterate ``v``.

        Iterates are finite and in the box by construction, so ``v`` is not
        checked again.
        """
        traces, a_L = self.model._forward(v, self.prepared, self.ops)
        return self.xp.argmax(self.model._class_scores(traces, a_L), axis=1)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])


# Argument checks.


def prepare(
    model: ResidualMLP,
    x: Array,
    y: Array,
    target: Array | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Batch:
    """Validate the arguments every attack takes and bundle them.

    Warns:
        UserWarning: where ``target`` equals the label ``y``.

    Raises:
        TypeError: if ``model`` is not a ``ResidualMLP``, ``x``, ``y`` and
            ``target`` do not share the model's namespace and dtype rules, or
            ``target`` is a float, bool or string scalar.
        ValueError: on a bad shape, a label out of range, non-finite values,
            invalid bounds, or ``x`` outside the box.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    lo, hi = check_bounds(bounds)
    target_class = scalar_class(target)
    if target_class is not None:
        target = None
    xp = model._namespace_with(x, y, target)
    _arrays.check_input(xp, x, model.sizes[0], model.dtype)
    inside = check_box(xp, x, lo, hi)
    _arrays.check_labels(xp, y, x.shape[0], model.n_classes)
    if target_class is not None:
        if not 0 <= target_class < model.n_classes:
            # Checked before the broadcast, which overflows past int64.
            raise ValueError(
                f"Target class {target_class} is outside [0, {model.n_classes}); "
                f"the model has {model.n_classes} outputs."
            )
        # One class for every sample: broadcast it in x's namespace and device.
        device = array_api_compat.device(x)
        target = xp.full(
            (x.shape[0],), target_class, dtype=_arrays.index_dtype(xp), device=device
        )
    if target is not None:
        _arrays.check_labels(xp, target, x.shape[0], model.n_classes, name="target")
        _warn_target_is_label(xp, target, y, model.n_classes)
    batch = Batch(model, xp, x, y, target, lo, hi, inside)
    check_fits(batch, "bounds[0]", lo)
    check_fits(batch, "bounds[1]", hi)
    return batch


def _warn_target_is_label(xp: Any, target: Array, y: Array, classes: int) -> None:
    """Warn where a targeted attack's ``target`` is the label ``y``, as
    after passing ``y`` twice: those rows succeed without a change."""
    same = _arrays.count_true(xp, target == y)
    if same:
        fix = (
            f"pass other classes, such as (y + 1) % {classes}, or target=None "
            "for the untargeted attack"
            if classes > 1
            else "the model has one class, so every target is the label"
        )
        warnings.warn(
            f"target equals the label y in {same} of {int(y.shape[0])} rows, "
            f"which a targeted attack counts as successes without a change; {fix}.",
            stacklevel=_arrays.caller_stacklevel(),
        )


def scalar_class(target: Any) -> int | None:
    """Return a scalar ``target`` as an int class, or ``None`` for an array.

    A Python int, a NumPy integer or a 0-d integer array names one target
    class for every sample.

    Raises:
        TypeError: if ``target`` is a bool, floating or string scalar.
    """
    if target is None:
        return None
    if isinstance(target, (bool, np.bool_)):
        value = target
    elif isinstance(target, numbers.Integral):
        return int(target)
    elif isinstance(target, (numbers.Number, str, bytes)):
        value = target
    elif getattr(target, "ndim", None) == 0:
        target_xp = array_api_compat.array_namespace(target)
        if target_xp.isdtype(target.dtype, "integral"):
            return int(target)
        value = target.item()
    else:
        return None
    raise TypeError(
        f"Expected target to be an integer class or an integer array of shape "
        f"(n,), got {value!r}; pass the class as an int or the labels as int64."
    )


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Return ``bounds`` as two floats ``lo < hi``, or raise ``ValueError``."""
    try:
        lo, hi = bounds
        if isinstance(bounds, (str, bytes)):
            raise TypeError
        lo = check_number("lo", lo, finite=False)
        hi = check_number("hi", hi, finite=False)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected bounds as a pair of numbers (lo, hi), got {bounds!r}; "
            "the default box for images is (0.0, 1.0)."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"Expected finite bounds with lo < hi, got ({lo}, {hi}); the default "
            "box for images is (0.0, 1.0)."
        )
    return lo, hi


def box_tolerance(lo: float, hi: float, eps: float) -> float:
    """Return how far an input may lie outside ``[lo, hi]``.

    That is the larger of ``BOX_TOLERANCE`` and ``BOX_SPACINGS`` spacings of
    the input's dtype at the larger bound magnitude, where ``eps`` is the
    dtype's machine epsilon. float32 spaces its values 1.5e-5 apart at 255,
    so a float32 input scaled to bytes may lie 6.1e-5 above 255; float16
    spaces them 0.125 apart there. The tolerance does not grow with the
    bounds themselves, so a narrow box far from 0 keeps a narrow tolerance.
    """
    largest = max(abs(lo), abs(hi))
    if largest == 0 or not math.isfinite(largest):
        return BOX_TOLERANCE
    spacing = eps * 2.0 ** math.floor(math.log2(largest))
    return max(BOX_TOLERANCE, BOX_SPACINGS * spacing)


def check_box(xp: Any, x: Array, lo: float, hi: float, name: str = "x") -> bool:
    """Raise ``ValueError`` if ``x`` leaves ``[lo, hi]`` by more than the
    tolerance, and return whether it lies in the box."""
    if x.shape[0] == 0:
        return True
    low, high = float(xp.min(x)), float(xp.max(x))
    tolerance = box_tolerance(lo, hi, float(xp.finfo(x.dtype).eps))
    if low < lo - tolerance or high > hi + tolerance:
        raise ValueError(
            # repr: the shortest form that names the value exactly, so that
            # 1.000002 does not print as 1.
            f"{name} has values in [{low!r}, {high!r}], outside the box "
            f"[{lo!r}, {hi!r}] by more than {tolerance:g}; scale the "
            "inputs into the box or pass bounds=(lo, hi)."
        )
    return lo <= low and high <= hi


def check_eps(eps: Any, batch: Batch | None = None, *, name: str = "eps") -> float:
    """Return ``eps`` as a float, raising ``ValueError`` if it is negative or,
    given the ``batch``, beyond the range of its dtype.

    ``name`` names the value in messages, such as ``--eps`` for the command
    line.
    """
    eps = check_number(name, eps)
    if eps < 0:
        raise ValueError(
            f"Expected {name} >= 0, got {eps}; {name} is the perturbation radius."
        )
    return eps if batch is None else check_fits(batch, name, eps)


def check_fits(batch: Batch, name: str, value: float) -> float:
    """Return ``value`` after checking that ``x``'s dtype can hold it.

    A float32 input with an eps of 1e39 would otherwise compute with
    infinities and fail later with a message about the forward pass or x.
    """
    if not abs(value) <= batch.largest:
        raise ValueError(
            f"Expected {name} of magnitude at most {batch.largest:.4g} (the largest "
            f"{batch.x.dtype}), got {value:g}; pass a smaller {name}, or "
            "float64 inputs."
        )
    return value


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is > 0."""
    value = check_number(name, value)
    if value <= 0:
        raise ValueError(f"Expected {name} > 0, got {value}; pass a positive number.")
    return value


def check_steps(steps: Any) -> int:
    """Return ``steps`` as an int, raising ``ValueError`` unless it is >= 1.
    A 0-d integer array or tensor counts, as for the saliency maps."""
    return _arrays.check_count("steps", steps)


def step_size(alpha: float | None, default: float, eps: float, batch: Batch) -> float:
    """Return the step size: ``alpha`` if given (it must be > 0), else ``default``.

    With ``eps = 0`` the attack returns its input, so the default may be 0.
    """
    if alpha is None:
        if not abs(default) <= batch.largest:
            raise ValueError(
                f"The default step size for eps {eps} is {default}, beyond the "
                f"range of {batch.x.dtype}; pass a smaller eps, or alpha."
            )
        return default
    alpha = check_positive("alpha", alpha)
    return check_fits(batch, "alpha", alpha)


# Gradients and predictions.


def ascent_direction(batch: Batch, v: Array) -> Array:
    """Return ``grad(v, y)``, or ``-grad(v, t)`` for a targeted attack.

    Adding ``alpha * sign`` of this direction raises the loss of the true
    label or lowers the loss of the target.
    """
    # ``prepare`` checked the model, x and the labels, and every iterate is
    # finite and in the box by construction, so the checks are not repeated.
    labels = batch.y if batch.target is None else batch.target
    # An overflow gets the error below, so NumPy's warnings would repeat it.
    with np.errstate(over="ignore", invalid="ignore"):
        dx = _input_gradient(
            batch.model, v, labels, _CROSS_ENTROPY, batch.prepared, batch.ops
        )
    check_no_nan(batch, dx, "input gradient")
    return dx if batch.target is None else -dx


def check_no_nan(
    batch: Batch, gradient: Array, name: str, where: Array | None = None
) -> None:
    """Raise ``ValueError`` if ``gradient``, taken at a finite forward pass,
    contains NaN, in the entries that ``where`` marks if given.

    A NaN gives no direction: stepping from it makes the iterate NaN, which
    then fails with a message about the forward pass. An infinite entry
    still has a sign, which the attacks step along.
    """
    xp = batch.xp
    nan = xp.isnan(gradient)
    if where is not None:
        nan = nan & where
    if bool(xp.any(nan)):
        dtype = batch.model.dtype
        wider = "" if dtype == xp.float64 else ", or use a wider dtype"
        raise ValueError(
            f"The {name} contains NaN although the forward pass is finite: "
            f"the network's derivatives overflowed {dtype}; scale the inputs "
            f"or the weights down{wider}."
        )


def succeeded(batch: Batch, prediction: Array) -> Array:
    """Return the ``(n,)`` success flags for the predicted classes."""
    if batch.target is None:
        return prediction != batch.y
    return prediction == batch.target


_CROSS_ENTROPY = get_loss("cross_entropy")


# Projections.


def clip(batch: Batch, v: Array) -> Array:
    """Project ``v`` onto the box ``[lo, hi]``, whose bounds are taken as
    the floats of the dtype inside the box (``Batch.box``)."""
    lo, hi = batch.box
    if type(v) is np.ndarray:
        # array_api_compat's clip took 11 us at 64 x 64, np.clip 2.4 us.
        return np.clip(v, lo, hi)
    return batch.xp.clip(v, lo, hi)


def linf_limits(batch: Batch, eps: float) -> tuple[Array, Array]:
    """Return the elementwise limits ``(lower, upper)`` of the eps-ball around
    ``x``, each clipped to the box.

    Clamping to them gives the same numbers as clamping to the ball and then
    to the box: the composition of two clamps is one clamp whose bounds are
    the first clamp's bounds clamped by the second.

    ``x + eps`` rounds to the dtype and can land past ``x + eps``. Each
    limit is the float farthest from ``x`` that lies within eps of it
    exactly (``_farthest``), so ``|limit - x| <= eps`` holds exactly, and
    so also as computed in any dtype.
    """
    below = _float_below(batch, eps)
    lower = _farthest(batch, below, up=False)
    upper = _farthest(batch, below, up=True)
    if type(lower) is np.ndarray:
        # In place: each new array the size of x takes fresh pages.
        lo, hi = batch.box
        return np.clip(lower, lo, hi, out=lower), np.clip(upper, lo, hi, out=upper)
    return clip(batch, lower), clip(batch, upper)


def _farthest(batch: Batch, radius: float, up: bool) -> Array:
    """Return ``x + radius`` (``up``) or ``x - radius``, each rounded toward
    ``x`` where rounding to nearest carried it past: the float farthest
    from ``x`` within ``radius`` of it, exactly.

    The rounding error of the sum is found exactly: by Knuth's two-sum in
    float32 and float64, and for half precision in float32, which
    represents its sums exactly.
    """
    xp, x = batch.xp, batch.x
    step = radius if up else -radius
    if type(x) is np.ndarray and x.dtype in _BIT_TYPES:
        return _farthest_numpy(x, step, up)
    with np.errstate(over="ignore", invalid="ignore"):
        total = x + step
        if x.dtype in (xp.float32, xp.float64):
            back = total - x
            error = (x - (total - back)) + (step - back)
        else:
            exact = xp.astype(x, xp.float32) + step
            error = exact - xp.astype(total, xp.float32)
        # A NaN error (an overflow to infinity) moves nothing; clip does.
        past = error < 0 if up else error > 0
    return xp.where(past, xp.nextafter(total, x), total)


# The scratch memory of _farthest_numpy, kept between attacks.
_SCRATCH = _kernels.SpareBuffer(_kernels.SPARE_BUFFER_BYTES)

# The integer views of the float dtypes that _farthest_numpy moves.
_BIT_TYPES = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _farthest_numpy(x: np.ndarray, step: float, up: bool) -> np.ndarray:
    """Return ``_farthest`` for a float32 or float64 NumPy ``x``.

    The two-sum runs in scratch memory kept between calls, because new
    arrays the size of ``x`` took fresh pages from the kernel at each call.
    Consecutive floats of one sign have consecutive bit patterns, so a move
    adds or subtracts 1 on the integer view. About half the entries move,
    and np.nextafter with np.where took 1.5 ms for 256 x 1024 float32
    entries, several times as long.
    """
    scratch = _SCRATCH.take(2 * x.size, x.dtype).reshape((2, *x.shape))
    back, error = scratch[0], scratch[1]
    with np.errstate(over="ignore", invalid="ignore"):
        total = x + step
        np.subtract(total, x, out=back)
        np.subtract(total, back, out=error)
        np.subtract(x, error, out=error)
        np.subtract(step, back, out=back)
        np.add(error, back, out=error)
        # A NaN error (an overflow to infinity) moves nothing; clip does.
        past = error < 0 if up else error > 0
    del back, error, scratch
    if not past.any():
        return total
    # A zero that moves takes the sign of its move, so that its neighbour
    # is the smallest float of that sign.
    zeros = past & (total == 0)
    if zeros.any():
        total[zeros] = 0.0 if up else -0.0
    bits = total.view(_BIT_TYPES[total.dtype])
    # Away from zero (a move up from a positive float, or down from a
    # negative one) the pattern grows by 1; toward zero it shrinks by 1.
    away = np.signbit(total)
    away ^= up
    # Adding the masks as integers runs without branches: a ufunc with a
    # where= mask took 1.7 ms for 256 x 1024 entries, this 0.05 ms.
    np.subtract(bits, past & away, out=bits, casting="unsafe")
    np.add(bits, past & ~away, out=bits, casting="unsafe")
    return total


def _float_below(batch: Batch, eps: float) -> float:
    """Return the largest float of ``x``'s dtype up to eps."""
    return _dtype_float(batch.xp, batch.x.dtype, eps, up=False)


@functools.lru_cache(maxsize=256)
def _dtype_float(xp: Any, dtype: Any, value: Any, up: bool) -> float:
    """Return the float of ``dtype`` nearest ``value`` (a float or a
    Fraction) on the side ``up`` (at or above) or not (at or below).

    PGD-L2 needs the same eps at every pass of every step, so the results
    are cached.
    """
    exact = Fraction(value)
    scalar = xp.asarray(float(value), dtype=dtype)
    toward = xp.asarray(math.inf if up else -math.inf, dtype=dtype)
    while math.isfinite(float(scalar)) and (
        Fraction(float(scalar)) < exact if up else Fraction(float(scalar)) > exact
    ):
        scalar = xp.nextafter(scalar, toward)
    return float(scalar)


def project_linf(batch: Batch, v: Array, limits: tuple[Array, Array]) -> Array:
    """Project ``v`` onto ``{||v - x||_inf <= eps}`` and then onto the box,
    given ``limits = linf_limits(batch, eps)``."""
    lower, upper = limits
    if type(v) is np.ndarray:
        clamped = np.maximum(v, lower)
        return np.minimum(clamped, upper, out=clamped)
    return batch.xp.minimum(batch.xp.maximum(v, lower), upper)


def row_norms(xp: Any, a: Array) -> Array:
    """Return the ``(n, 1)`` L2 norms of the rows of ``a``.

    Each row is divided by its largest magnitude before the sum of squares,
    so entries above the square root of the largest float (1.8e19 in
    float32) do not overflow to an infinite norm. It takes fewer calls than
    ``_arrays.row_norms``, which also gives zero rows a gradient under
    autograd, and PGD-L2 calls it at every step.
    """
    largest = xp.max(xp.abs(a), axis=1, keepdims=True)
    safe = xp.where(largest > 0, largest, xp.ones_like(largest))
    return largest * xp.linalg.vector_norm(a / safe, axis=1, keepdims=True)


def dtype_norms(xp: Any, delta: Array, keepdims: bool = False) -> Array:
    """Return the L2 norms of the rows of ``delta``, rounded to its dtype.

    NumPy squares float16 entries in float16, where the squares of entries
    below 7.8e-3 fall among the subnormals and lose digits, and those below
    1.7e-4 round to 0: a perturbation of 1e-5 measured 0. torch squares
    them in float32, and NumPy's float16 rows are measured the same way.
    """
    if type(delta) is np.ndarray and delta.dtype == np.float16:
        # np.linalg.norm: NumPy 1.26 has no vector_norm.
        wide = np.linalg.norm(delta.astype(np.float32), axis=1, keepdims=keepdims)
        return wide.astype(np.float16)
    return xp.linalg.vector_norm(delta, axis=1, keepdims=keepdims)


def project_l2(batch: Batch, v: Array, eps: float) -> Array:
    """Project ``v`` onto ``{||v - x||_2 <= eps}`` per sample, then onto the box.

    Rows are scaled to a norm just below eps (``_l2_target``). A row whose
    rounded result still lies farther than eps from ``x`` (see
    ``_l2_exceeds``) is scaled down again, by 2 units in the last place and
    then by 8 times more at each pass, until it does not.
    """
    xp, x = batch.xp, batch.x
    target = _l2_target(batch, eps)
    delta = v - x
    norm = row_norms(xp, delta)
    safe = xp.where(norm > 0, norm, xp.ones_like(norm))
    # A tensor over a tensor: torch divides a Python float by a tensor as
    # the tensor's reciprocal times the float, and 1 / norm overflows
    # float16 for norms below 1.5e-5.
    scale = xp.where(
        norm > target, xp.full_like(safe, target) / safe, xp.ones_like(norm)
    )
    projected = clip(batch, x + delta * scale)
    # x + delta rounds to a unit in the last place of x, which can be a
    # large part of a small delta. So the cut grows 8 times at every pass.
    cut = 2.0 * float(xp.finfo(x.dtype).eps)
    for _ in range(_L2_PASSES):
        over = _l2_exceeds(batch, projected, eps)
        if not bool(xp.any(over)):
            return projected
        scale = xp.where(over, scale * max(1.0 - cut, 0.0), scale)
        projected = clip(batch, x + delta * scale)
        cut *= 8.0
    over = _l2_exceeds(batch, projected, eps)
    return xp.where(over, clip(batch, x), projected)


# Passes of project_l2. By the last one the cut is the whole scale in
# every dtype up to float64 (2 * 8^17 units of 2.2e-16 exceed 1), so the
# loop ends with every row inside.
_L2_PASSES = 20


def _l2_target(batch: Batch, eps: float) -> float:
    """Return the norm that ``project_l2`` scales rows to: a unit in the
    last place of the dtype below eps, and below the margin of the wide
    check."""
    unit = float(batch.xp.finfo(batch.x.dtype).eps)
    below = _float_below(batch, eps)
    return min(below * (1.0 - unit), eps * (1.0 - 2.0 * (1.0 - batch.wide_margin)))


def _l2_exceeds(batch: Batch, v: Array, eps: float) -> Array:
    """Return the ``(n, 1)`` rows where ``v`` lies farther than eps from
    ``x`` in L2: as ``AttackResult.l2`` measures it in the dtype of ``x``,
    or, within ``Batch.wide_margin``, in the widest dtype, where the
    differences are exact."""
    xp, x = batch.xp, batch.x
    limit = eps * batch.wide_margin
    delta = v - x
    with np.errstate(over="ignore"):
        norm = dtype_norms(xp, delta, keepdims=True)
    # A norm that overflows the dtype is left to the wide norm below, and
    # in the widest dtype to the scaled norm that set the scale.
    finite = xp.isfinite(norm)
    if batch.wide_dtype is None:
        return (norm > limit) & finite
    # Compared with the largest float up to eps: the dtype would round eps
    # itself, perhaps up, before it compared.
    over = (norm > _float_below(batch, eps)) & finite
    del delta
    if type(v) is np.ndarray:
        # One float64 buffer for every pass and step: new arrays of this
        # size would take fresh pages from the kernel each time.
        buffer = batch.wide_buffer
        np.subtract(v, x, out=buffer, dtype=buffer.dtype)
        exact = np.sqrt(np.einsum("ij,ij->i", buffer, buffer))[:, None]
    else:
        difference = xp.astype(v, batch.wide_dtype) - batch.wide_x
        exact = xp.linalg.vector_norm(difference, axis=1, keepdims=True)
    return over | (exact > limit)


# Randomness and starting points.


def from_numpy(batch: Batch, values: np.ndarray) -> Array:
    """Copy the NumPy array ``values`` to the namespace, device and dtype of ``x``."""
    xp = batch.xp
    return xp.astype(xp.asarray(values, device=batch.device), batch.x.dtype)


def check_start(batch: Batch, start: Array) -> Array:
    """Check that a caller's starting point matches ``x`` in shape, and
    return it in the dtype of ``x``."""
    xp = _arrays.namespace_like(batch.x, start, "start")
    # Any floating dtype passes here and is cast below; another dtype gets
    # the error that names the dtype of x.
    dtype = start.dtype if _arrays.is_floating(xp, start) else batch.x.dtype
    _arrays.check_input(xp, start, batch.d, dtype, name="start")
    if tuple(start.shape) != tuple(batch.x.shape):
        raise ValueError(
            f"Expected start of shape {tuple(batch.x.shape)} like x, got "
            f"{tuple(start.shape)}."
        )
    return _arrays.cast_finite(xp, start, batch.x.dtype, "start")


# Iteration and the result.


def iterate(
    batch: Batch,
    start: Array,
    steps: int,
    step: Callable[[Array], Array],
    early_stop: bool,
) -> tuple[Array, Array]:
    """Apply ``step`` ``steps`` times from ``start``.

    Returns the last iterate and the ``(n,)`` integer count of steps taken.

    With ``early_stop`` a sample that already succeeds is frozen before the
    next step, so its step count stops growing.
    """
    _arrays.check_flag("early_stop", early_stop)
    xp = batch.xp
    x_adv = start
    if not early_stop:
        for _ in range(steps):
            x_adv = step(x_adv)
        return x_adv, constant_steps(batch, steps)
    taken = xp.zeros((batch.n,), dtype=_arrays.index_dtype(xp), device=batch.device)
    active = xp.ones((batch.n,), dtype=xp.bool, device=batch.device)
    for _ in range(steps):
        active = active & ~succeeded(batch, batch.predict(x_adv))
        if not bool(xp.any(active)):
            break
        x_adv = xp.where(active[:, None], step(x_adv), x_adv)
        taken = taken + xp.astype(active, _arrays.index_dtype(xp))
    return x_adv, taken


def constant_steps(batch: Batch, count: int) -> Array:
    """Return ``(n,)`` integer step counts that all equal ``count``."""
    xp = batch.xp
    return xp.full(
        (batch.n,), count, dtype=_arrays.index_dtype(xp), device=batch.device
    )


def finish(batch: Batch, x_adv: Array, steps: Array) -> AttackResult:
    """Measure the perturbation and the success of ``x_adv``.

    An ``x`` outside the box by up to ``box_tolerance`` has ``x_adv``
    clipped to the box, for the rows that never moved from it (``eps = 0``,
    or early stopping before the first step). An ``x_adv`` that is ``x``
    itself is clipped too, which copies it, so the result never shares
    memory with the input; with autograd off the copy requires no gradient.
    """
    xp = batch.xp
    if x_adv is batch.x or not batch.inside:
        x_adv = clip(batch, x_adv)
    delta = x_adv - batch.x
    prediction = batch.predict(x_adv)
    with np.errstate(over="ignore"):
        l2 = dtype_norms(xp, delta)
    if not _arrays.all_finite(xp, l2):
        # Squares above the largest float (entries past 1.8e19 in float32)
        # overflow; the scaled norm, slower, is kept for those rare boxes.
        l2 = _arrays.row_norms(xp, delta)
    return AttackResult(
        x_adv=x_adv,
        success=succeeded(batch, prediction),
        steps=steps,
        linf=xp.max(xp.abs(delta), axis=1),
        l2=l2,
        l0=xp.sum(xp.astype(delta != 0, _arrays.index_dtype(xp)), axis=1),
        prediction=prediction,
        # A copy, so that writing to the result leaves the caller's targets.
        target=None
        if batch.target is None
        else xp.astype(batch.target, _arrays.index_dtype(xp), copy=True),
    )


def unchanged(batch: Batch) -> AttackResult:
    """Return the result of an attack that leaves ``x`` as it is (``eps = 0``),
    clipped to the box."""
    return finish(batch, batch.x, constant_steps(batch, 0))
