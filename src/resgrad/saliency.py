"""Saliency maps from the closed-form Jacobian, and checks that they mean something.

Every map here is built from ``J = dz^L/dx``, the Jacobian of the logits
(Theorem 1, equation (5)): row ``r`` of ``J`` at sample ``x`` is

    dB_r/dx = (Q^L_{r,:} D^{L-1} Q^{L-1} ... D^1 Q^1)^T        shape (p_0,)

where ``B = z^L`` is the logit vector. The maps:

- ``vanilla_gradient`` (Simonyan et al. 2013): ``dB_r/dx``.
- ``input_x_gradient``: ``x * dB_r/dx``.
- ``smoothgrad`` (Smilkov et al. 2017): the mean of ``dB_r/dx`` over noisy
  copies of ``x``, or of its square.
- ``integrated_gradients`` (Sundararajan et al. 2017): ``(x - x') *`` the
  path integral of ``dB_r/dx`` from a baseline ``x'`` to ``x``.
- ``jsma_map``: the manuscript's map for Jacobian-based saliency map attacks,
  and the increasing and decreasing maps of Papernot et al. (2016).

Two checks: ``randomization_check`` (Adebayo et al. 2018) re-initialises the
blocks from the top down and measures how much the maps change, and
``deletion_curve`` removes features in saliency order and records the class
score.

Every function takes a batch ``x`` of shape ``(n, p_0)`` in the model's
namespace and dtype, never modifies it, and returns arrays in the same
namespace, dtype and device. A ``target`` is one of:

- an int, the same class for every row;
- an integer array of shape ``(n,)``, one class per row;
- ``None``, the class the model predicts at ``x``;
- ``"all"``, every class at once, which adds a class axis:
  ``(n, p_L, p_0)``.

A map is never NaN or infinite: a forward pass beyond the dtype's range
raises ``ForwardOverflowError``, and derivatives beyond it, or squares,
sums and products of them, raise ``ValueError``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from . import _arrays
from .gradients import input_gradient
from .model import ForwardOverflowError, ResidualMLP
from .product import input_jacobian

Array = Any
Progress = Callable[..., Iterable]

METHODS = ("vanilla", "input_x_gradient", "smoothgrad", "integrated_gradients", "jsma")
IG_RULES = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)
JSMA_VARIANTS = ("manuscript", "increase", "decrease")
DELETION_RANKINGS = ("value", "magnitude")
DELETION_SCORES = ("logit", "probability")


# Validation and helpers.


def _check_model(model: Any) -> None:
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")


def _check_batch(model: ResidualMLP, x: Array) -> Any:
    """Check ``x`` against the model and return the model's namespace."""
    _check_model(model)
    model._namespace_with(x)
    xp = model.xp
    _arrays.check_input(xp, x, model.sizes[0], model.dtype)
    return xp


def _check_method(method: Any) -> None:
    """Check a name of ``METHODS``, which the functions that take one take
    before the target."""
    if not isinstance(method, str):
        # An array here is most often the target, passed in its place.
        raise TypeError(
            f"Expected method to be one of: {', '.join(METHODS)}, got "
            f"{_arrays._short_repr(method)}; pass the method name before the "
            "target, or the target as target=."
        )
    _check_choice(method, "method", METHODS)


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}; expected one of: {', '.join(choices)}."
        )


def _device(a: Array) -> Any:
    return _arrays.array_api_compat.device(a)


def resolve_target(model: ResidualMLP, x: Array, target: Any) -> Array | str:
    """Return the class of each row as an integer array of shape ``(n,)``.

    Args:
        model: the network.
        x: the batch, shape ``(n, p_0)``.
        target: an int (the same class for every row), an integer array or
            sequence of shape ``(n,)``, ``None`` (the class predicted at
            ``x``) or ``"all"``, which is returned unchanged. An array is in
            the namespace of ``x``.

    Raises:
        TypeError: if ``target`` is an array of another namespace than ``x``.
    """
    xp = model.xp
    n, classes = x.shape[0], model.n_classes
    if isinstance(target, str):
        if target != "all":
            raise ValueError(
                f"Unknown target {target!r}; pass a class index, an array of "
                "class indices, None (the predicted class) or 'all'."
            )
        return target
    if target is None:
        return model.predict(x)
    if isinstance(target, bool):
        raise TypeError("Expected an integer class as target, got a bool.")
    scalar = (int, float, np.integer)
    if getattr(target, "ndim", None) == 0 or isinstance(target, scalar):
        try:
            target = operator.index(target)
        except TypeError:
            message = f"Expected an integer class as target, got {target!r}."
            raise TypeError(message) from None
        if not 0 <= target < classes:
            raise ValueError(
                f"Class {target} is outside [0, {classes}); the model has "
                f"{classes} outputs."
            )
        return xp.full((n,), target, dtype=_arrays.index_dtype(xp), device=model.device)
    is_array = _arrays.array_api_compat.is_array_api_obj(target)
    if is_array:
        # The attacks reject a target array of another namespace, so this does
        # too. A sequence of ints is converted below.
        model._namespace_with(x, target, names=("x", "target"))
    labels = xp.asarray(target, device=model.device)
    if not is_array and xp.isdtype(labels.dtype, ("real floating", "bool")):
        # check_labels would advise a cast that a list lacks.
        raise TypeError(
            f"Expected integer classes in target, got a sequence that converts "
            f"to dtype {labels.dtype}; pass ints, such as [int(c) for c in target]."
        )
    _arrays.check_labels(xp, labels, n, classes, "target")
    return labels


def _class_gradient(model: ResidualMLP, x: Array, target: Array | str) -> Array:
    """Return ``dB_r/dx`` per row, ``(n, p_0)``, or all rows of ``J`` for "all"."""
    if isinstance(target, str):
        grad = input_jacobian(model, x)
    else:
        grad = input_gradient(model, x, target, loss="score")[1]
    _check_range(model.xp, grad, "The derivatives of the logits")
    return grad


def _check_range(xp: Any, values: Array, name: str, cause: str = "") -> None:
    """Raise ``ValueError`` if ``values``, computed after a finite forward
    pass, contain NaN or Inf, which the map would pass on. ``name`` starts
    the message and ``cause`` follows the count."""
    if not _arrays.all_finite(xp, values):
        bad = _arrays.count_true(xp, ~xp.isfinite(values))
        dtype = str(values.dtype).removeprefix("torch.")
        wider = "" if dtype == "float64" else ", or use float64"
        raise ValueError(
            f"{name} are beyond the range of {dtype} at "
            f"{bad} value(s){cause}, though the logits were finite. Scale the "
            f"model's weights down{wider}."
        )


def _class_scores(model: ResidualMLP, x: Array, target: Array | str) -> Array:
    """Return ``B_r = z^L_r`` per row, ``(n,)``, or all logits ``(n, p_L)``."""
    xp = model.xp
    logits = model.logits(x)
    if isinstance(target, str):
        return logits
    mask = _arrays.one_hot(xp, target, model.n_classes, logits.dtype, _device(x))
    return xp.sum(logits * mask, axis=1)


def _per_class(x: Array, target: Array | str) -> Array:
    """Give ``x`` a class axis when the maps carry one."""
    return x[:, None, :] if isinstance(target, str) else x


def _as_reference(xp: Any, value: Any, x: Array, name: str) -> Array:
    """Return a baseline-like argument broadcast to the shape of ``x``.

    ``value`` is a number that the dtype of ``x`` holds as a finite value, or
    an array of shape ``(p_0,)``, ``(1, p_0)`` or ``(n, p_0)`` that is cast to
    the dtype of ``x``.
    """
    # A NumPy scalar or a 0-d array or tensor is a number too.
    value = _arrays.scalar(value)
    if isinstance(value, bool) or (
        isinstance(value, numbers.Number) and not isinstance(value, numbers.Real)
    ):
        raise TypeError(f"Expected {name} as a real number or an array, got {value!r}.")
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        largest = float(xp.finfo(x.dtype).max)
        if not abs(number) <= largest:
            raise ValueError(
                f"Expected a finite {name} of magnitude at most {largest:.4g} "
                f"(the largest {x.dtype}), got {value!r}; pass a finite number "
                "in that range or an array."
            )
        return xp.full(x.shape, number, dtype=x.dtype, device=_device(x))
    _arrays.namespace_like(x, value, name)
    n, d = x.shape
    if tuple(value.shape) not in ((d,), (1, d), (n, d)):
        raise ValueError(
            f"Expected {name} of shape {(n, d)} (the input's shape), {(d,)} or "
            f"{(1, d)}, got shape {tuple(value.shape)}."
        )
    _check_floating(xp, value, name, x.dtype)
    return xp.broadcast_to(_arrays.cast_finite(xp, value, x.dtype, name), x.shape)


def _check_floating(xp: Any, value: Array, name: str, dtype: Any) -> None:
    """Raise ``TypeError`` if ``value`` is not a floating array, with the
    cast to ``dtype`` that fixes it."""
    if not _arrays.is_floating(xp, value):
        raise TypeError(
            f"Expected a floating {name}, got dtype {value.dtype}; cast it with "
            f"{_arrays.cast_hint(value, name, dtype)}."
        )


# The maps.


@_arrays.without_autograd
def vanilla_gradient(
    model: ResidualMLP, x: Array, target: Any = None, *, absolute: bool = False
) -> Array:
    """Compute the vanilla gradient map ``dB_r/dx`` (Simonyan et al. 2013).

    The map of class ``r`` at sample ``x`` is row ``r`` of the logit Jacobian,
    equation (5): ``dB_r/dx = (Q^L_{r,:} D^{L-1} Q^{L-1} ... D^1 Q^1)^T``.
    A single class costs one pass of the backpropagation recurrence;
    ``target="all"`` returns every row of ``J`` from one Jacobian pass.

    The map is signed unless ``absolute`` is set. Captum's ``Saliency``
    returns ``|dB_r/dx|`` by default (``abs=True``), so pass
    ``absolute=True`` to reproduce its default and ``abs=False`` to Captum to
    reproduce this one.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        target: the class ``r``; see the module docstring.
        absolute: return ``|dB_r/dx|`` instead of the signed gradient.

    Returns:
        The map, shape ``(n, p_0)``, or ``(n, p_L, p_0)`` for ``"all"``.

    Example:
        >>> import numpy as np, resgrad
        >>> from resgrad import saliency
        >>> model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
        >>> x = np.linspace(0, 1, 8).reshape(2, 4)
        >>> saliency.vanilla_gradient(model, x, target=1).shape
        (2, 4)
        >>> saliency.vanilla_gradient(model, x, target="all").shape
        (2, 2, 4)
    """
    xp = _check_batch(model, x)
    _arrays.check_flag("absolute", absolute)
    target = resolve_target(model, x, target)
    grad = _class_gradient(model, x, target)
    return xp.abs(grad) if absolute else grad


@_arrays.without_autograd
def input_x_gradient(
    model: ResidualMLP, x: Array, target: Any = None, *, absolute: bool = False
) -> Array:
    """Compute the gradient-times-input map ``x_i * dB_r/dx_i``.

    This equals Captum's ``InputXGradient``. Without biases and with relu,
    leaky relu or identity activations, ``B_r`` is positively homogeneous,
    ``B_r(c x) = c B_r(x)`` for ``c > 0``, so by Euler's theorem the map
    sums to ``B_r(x)``.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        target: the class ``r``; see the module docstring.
        absolute: return the absolute value of the map.

    Returns:
        The map, shape ``(n, p_0)``, or ``(n, p_L, p_0)`` for ``"all"``.
    """
    xp = _check_batch(model, x)
    _arrays.check_flag("absolute", absolute)
    target = resolve_target(model, x, target)
    grad = _class_gradient(model, x, target)
    with np.errstate(over="ignore", invalid="ignore"):
        attribution = _per_class(x, target) * grad
    cause = ": the products of inputs and derivatives overflowed"
    _check_range(xp, attribution, "The values of the input_x_gradient map", cause)
    return xp.abs(attribution) if absolute else attribution


@_arrays.without_autograd
def smoothgrad(
    model: ResidualMLP,
    x: Array,
    target: Any = None,
    *,
    samples: int | None = None,
    noise_level: float = 0.15,
    bounds: tuple[float, float] = (0.0, 1.0),
    squared: bool = False,
    absolute: bool = False,
    seed: int | np.random.Generator | None = 0,
    noise: Array | None = None,
    progress: Progress | bool | None = None,
) -> Array:
    """Compute the SmoothGrad map (Smilkov et al. 2017).

    With ``sigma = noise_level * (hi - lo)`` and ``S`` noisy copies
    ``x + eps_s``, ``eps_s ~ N(0, sigma^2 I)``::

        SmoothGrad          = (1/S) sum_s dB_r/dx (x + eps_s)
        SmoothGrad-Squared  = (1/S) sum_s (dB_r/dx (x + eps_s))^2

    The class ``r`` is fixed at the clean input (for ``target=None``, the
    class predicted at ``x``). The defaults follow Smilkov et al., who found
    a noise level of 10-20% of the input range to work well. Captum's
    ``NoiseTunnel(Saliency(...))`` with ``nt_type="smoothgrad"`` (or
    ``"smoothgrad_sq"``) and ``abs=False`` computes the same average.
    Captum draws its noise with torch's generator, so pass that noise as
    ``noise`` to reproduce its result. Captum's ``nt_samples`` is
    ``samples`` here, and its ``stdevs`` is ``noise_level * (hi - lo)``.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        target: the class ``r``; see the module docstring.
        samples: the number of noisy copies ``S``, at least 1; by default
            50, or the length of ``noise`` when that is given.
        noise_level: ``sigma / (hi - lo)``, at least 0.
        bounds: the input range ``(lo, hi)``; images in ``[0, 1]`` by default.
        squared: average the squared gradients (SmoothGrad-Squared).
        absolute: average ``|dB_r/dx|``; ignored when ``squared`` is set.
        seed: an int or NumPy ``Generator`` for the Gaussian draws, which are
            made in float64 on the host and cast to the model's dtype.
        noise: the perturbations ``eps_s`` themselves, shape
            ``(samples, n, p_0)`` in the model's namespace; when given,
            ``noise_level``, ``bounds`` and ``seed`` are not used.
        progress: wraps the loop over the noisy copies, as
            ``progress(iterable, desc=..., total=...)``; ``True`` draws a
            tqdm bar.

    Returns:
        The map, shape ``(n, p_0)``, or ``(n, p_L, p_0)`` for ``"all"``.
    """
    progress = _arrays.progress_wrapper(progress)
    xp = _check_batch(model, x)
    if samples is None:
        shape = getattr(noise, "shape", ())
        samples = int(shape[0]) if noise is not None and len(shape) == 3 else 50
    samples = _arrays.check_count("samples", samples, 1)
    _arrays.check_flag("squared", squared)
    _arrays.check_flag("absolute", absolute)
    target = resolve_target(model, x, target)
    noise_of = _smoothgrad_noise(xp, x, samples, noise_level, bounds, seed, noise)

    total = None
    steps = range(samples)
    for s in progress(steps, desc="smoothgrad", total=samples) if progress else steps:
        try:
            grad = _class_gradient(model, x + noise_of(s), target)
        except ForwardOverflowError as error:
            # An overflow of x itself, or a weight that is not finite, is
            # named as such, not blamed on the noise.
            model.logits(x)
            raise ForwardOverflowError(
                f"SmoothGrad's noisy copy {s} overflowed the forward pass; pass "
                f"a smaller noise_level (or noise). {error}"
            ) from error
        # Squares and sums beyond the dtype's range are named below, in
        # place of NumPy's warning.
        with np.errstate(over="ignore", invalid="ignore"):
            if squared:
                grad = grad * grad
            elif absolute:
                grad = xp.abs(grad)
            total = grad if total is None else total + grad
    result = total / samples
    cause = ": the squares of the derivatives or their sum overflowed"
    _check_range(xp, result, "The values of the smoothgrad map", cause)
    return result


def _smoothgrad_noise(
    xp: Any,
    x: Array,
    samples: int,
    noise_level: float,
    bounds: tuple[float, float],
    seed: int | np.random.Generator | None,
    noise: Array | None,
) -> Callable[[int], Array]:
    """Return a function that gives the perturbation of copy ``s``, shape
    ``(n, p_0)``, for ``s = 0, 1, ...`` in turn.

    Drawn noise comes one copy at a time, so memory does not grow with
    ``samples``. NumPy's generators fill an array in order, so the copies
    equal the slices of one ``(samples, n, p_0)`` draw.
    """
    shape = (samples,) + tuple(x.shape)
    if noise is not None:
        _arrays.namespace_like(x, noise, "noise")
        if tuple(noise.shape) != shape:
            raise ValueError(
                f"Expected noise of shape (samples, n, p_0) = {shape}, got "
                f"{tuple(noise.shape)}; pass noise with one (n, p_0) copy per "
                "sample, and samples=None to count them from noise."
            )
        _check_floating(xp, noise, "noise", x.dtype)
        noise = _arrays.cast_finite(xp, noise, x.dtype, "noise")
        return lambda s: noise[s, ...]
    noise_level = _arrays.check_number("noise_level", noise_level, finite=False)
    if not 0 <= noise_level < math.inf:
        raise ValueError(
            f"Expected a finite noise_level >= 0 (a fraction of hi - lo), got "
            f"{noise_level}."
        )
    lo, hi = _check_bounds(bounds)
    if not hi >= lo:
        raise ValueError(f"Expected bounds (lo, hi) with lo <= hi, got {(lo, hi)}.")
    sigma = noise_level * (hi - lo)
    largest = float(xp.finfo(x.dtype).max)
    if not sigma <= largest:
        raise ValueError(
            f"The noise scale noise_level * (hi - lo) = {sigma:g} is beyond the "
            f"range of {x.dtype} (largest {largest:.4g}); pass a smaller "
            "noise_level or narrower bounds."
        )
    rng = _arrays.generator(seed)

    def draw(s: int) -> Array:
        with np.errstate(over="ignore"):
            draws = rng.standard_normal(shape[1:]) * sigma
        if not np.all(np.abs(draws) <= largest):
            raise ValueError(
                f"Noise drawn at noise_level {noise_level} (sigma {sigma:g}) "
                f"overflows {x.dtype}; pass a smaller noise_level."
            )
        return xp.asarray(draws, dtype=x.dtype, device=_device(x))

    return draw


def _check_bounds(bounds: Any) -> tuple[float, float]:
    """Return ``bounds`` as two floats, or raise the error that names it if
    it is not a pair of real numbers."""
    message = (
        f"Expected bounds as a pair of numbers (lo, hi), such as (0.0, 1.0), "
        f"got {_arrays._short_repr(bounds)}."
    )
    # The types of Python's own errors here: TypeError for a value that is
    # not a sequence, ValueError for one of another length or of text.
    try:
        lo, hi = bounds
        return float(lo), float(hi)
    except TypeError:
        raise TypeError(message) from None
    except ValueError:
        raise ValueError(message) from None


class IntegratedGradients(NamedTuple):
    """The result of ``integrated_gradients``.

    Attributes:
        attributions: the map, shape ``(n, p_0)`` (or ``(n, p_L, p_0)``).
        gap: the completeness gap ``sum_i attributions_i - (F(x) - F(x'))``
            per sample, shape ``(n,)`` (or ``(n, p_L)``); the sign is that
            of Captum's convergence delta.
        score_difference: ``F(x) - F(x')``, where ``F = B_r = z^L_r``.
    """

    attributions: Array
    gap: Array
    score_difference: Array

    __repr__ = _arrays.summary_repr

    @property
    def relative_gap(self) -> Array:
        """``|gap| / |F(x) - F(x')|``; infinite where the two scores are equal
        and the gap is not zero, and 0 where both are zero."""
        xp = _arrays.namespace(self.gap)
        difference = abs(self.score_difference)
        equal = difference == 0
        ratio = abs(self.gap) / xp.where(equal, xp.ones_like(difference), difference)
        infinite = xp.full_like(ratio, math.inf)
        zero = xp.zeros_like(ratio)
        return xp.where(equal, xp.where(self.gap == 0, zero, infinite), ratio)


# The most Gauss-Legendre nodes that quadrature computes. NumPy finds them
# as the eigenvalues of an m x m matrix, in time that grows as m^3: 0.35 s
# for m = 2000 on one core of a 2-core AMD EPYC machine.
GAUSS_MAX_STEPS = 4096


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the path positions ``alpha_k`` and weights ``w_k`` of a rule.

    The rules are those of Captum 0.9
    (``captum.attr._utils.approximation_methods``), in float64:

    - ``riemann_left``: ``alpha_k = k/m``, ``k = 0..m-1``, ``w_k = 1/m``.
    - ``riemann_right``: ``alpha_k = k/m``, ``k = 1..m``, ``w_k = 1/m``.
    - ``riemann_middle``: ``alpha_k = (k + 1/2)/m``, ``k = 0..m-1``,
      ``w_k = 1/m``.
    - ``riemann_trapezoid``: ``alpha_k = k/(m-1)``, ``k = 0..m-1``,
      ``w_k = 1/m`` with the two end weights halved. The weights sum to
      ``1 - 1/m``, not 1 (the textbook rule uses ``1/(m-1)``), so this rule
      leaves a gap of about ``(F(x) - F(x'))/m`` even on a linear model.
    - ``gausslegendre``: the ``m``-point Gauss-Legendre nodes and weights,
      mapped from ``[-1, 1]`` to ``[0, 1]``.

    Args:
        rule: one of ``IG_RULES``.
        steps: the number of points ``m``; at least 1, at least 2 for
            ``riemann_trapezoid`` and at most 4096 for ``gausslegendre``.

    Returns:
        ``(alphas, weights)``, two float64 arrays of shape ``(m,)``.
    """
    _check_choice(rule, "rule", IG_RULES)
    m = _arrays.check_count("steps", steps, 2 if rule == "riemann_trapezoid" else 1)
    if rule == "gausslegendre":
        if m > GAUSS_MAX_STEPS:
            raise ValueError(
                f"steps={m} (--steps on the command line) is too many for rule "
                "'gausslegendre', whose nodes are the eigenvalues of a matrix "
                f"of {m} x {m}; pass steps <= {GAUSS_MAX_STEPS}, or a riemann "
                "rule."
            )
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if m > np.iinfo(np.intp).max // 8:
        raise ValueError(
            f"steps={m} (--steps on the command line) is too many for an array "
            "of path positions; pass a number that fits in memory, such as 50."
        )
    weights = np.full(m, 1.0 / m)
    if rule == "riemann_left":
        return np.arange(m) / m, weights
    if rule == "riemann_right":
        return np.arange(1, m + 1) / m, weights
    if rule == "riemann_middle":
        return (np.arange(m) + 0.5) / m, weights
    weights[0] /= 2
    weights[-1] /= 2
    return np.linspace(0.0, 1.0, m), weights


@_arrays.without_autograd
def integrated_gradients(
    model: ResidualMLP,
    x: Array,
    target: Any = None,
    *,
    baseline: Array | float | None = None,
    steps: int = 50,
    rule: str = "gausslegendre",
    progress: Progress | bool | None = None,
) -> IntegratedGradients:
    """Compute Integrated Gradients (Sundararajan et al. 2017).

    For a baseline ``x'`` and ``F = B_r = z^L_r``::

        IG_i(x) = (x_i - x'_i) * int_0^1 dF/dx_i (x' + alpha (x - x')) dalpha
                ~ (x_i - x'_i) * sum_k w_k dF/dx_i (x' + alpha_k (x - x'))

    with the positions and weights of ``quadrature(rule, steps)``. By
    completeness the attributions sum to ``F(x) - F(x')``; the result
    reports the gap per sample. The integrand is smooth for smooth
    activations, where Gauss-Legendre converges fast, but piecewise constant
    for relu, where every rule converges slowly. The defaults (50 steps,
    Gauss-Legendre, a zero baseline) are Captum's, and the rules match
    Captum's definitions. Captum's ``n_steps``, ``baselines`` and ``method``
    are ``steps``, ``baseline`` and ``rule`` here.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        target: the class ``r``, fixed at ``x``; see the module docstring.
        baseline: ``x'``: ``None`` (zeros), a number, or an array of shape
            ``(n, p_0)``, ``(p_0,)`` or ``(1, p_0)``.
        steps: the number of points on the path, at least 1, at least 2
            for ``"riemann_trapezoid"`` and at most 4096 for
            ``"gausslegendre"``.
        rule: one of ``IG_RULES``.
        progress: wraps the loop over the path points; ``True`` draws a
            tqdm bar.

    Returns:
        An ``IntegratedGradients`` with the attributions, the completeness
        gap and ``F(x) - F(x')``.
    """
    progress = _arrays.progress_wrapper(progress)
    xp = _check_batch(model, x)
    alphas, weights = quadrature(rule, steps)
    baseline = _as_reference(xp, 0.0 if baseline is None else baseline, x, "baseline")
    target = resolve_target(model, x, target)
    delta = x - baseline

    total = None
    # An iterator over the two arrays, where a list of Python floats took
    # gigabytes for a riemann rule of 10**8 steps.
    points = zip(alphas, weights)
    if progress:
        points = progress(points, desc="integrated gradients", total=alphas.size)
    with np.errstate(over="ignore", invalid="ignore"):
        for alpha, weight in points:
            alpha, weight = float(alpha), float(weight)
            grad = weight * _class_gradient(model, baseline + alpha * delta, target)
            total = grad if total is None else total + grad
        attributions = total * _per_class(delta, target)
    cause = ": the weighted sum of derivatives, or its product by x - x', overflowed"
    _check_range(xp, attributions, "The integrated_gradients attributions", cause)

    score_at_x = _class_scores(model, x, target)
    difference = score_at_x - _class_scores(model, baseline, target)
    gap = xp.sum(attributions, axis=-1) - difference
    return IntegratedGradients(attributions, gap, difference)


@_arrays.without_autograd
def jsma_map(
    model: ResidualMLP, x: Array, target: Any = None, *, variant: str = "manuscript"
) -> Array:
    """Compute a saliency map of the Jacobian-based saliency map attacks.

    With ``t_i = dB_o/dx_i`` and ``s_i = sum_{j != o} dB_j/dx_i``, both from
    the logit Jacobian ``J``:

    - ``"manuscript"``, the map of "Explicit Matrix Gradient Expression for
      Residual Network", equations (67)-(68)::

          S_i = t_i * s_i   where t_i * s_i < 0,   and 0 elsewhere.

      ``o`` is the target class for JSMA (Papernot et al. 2016) and the
      source class for maximal JSMA (Wiyatno and Xu 2018). The map is never
      positive.
    - ``"increase"``, the map of Papernot et al. (2016) for the features to
      increase toward the target ``o``::

          S_i = 0                  if t_i < 0 or s_i > 0
          S_i = t_i * |s_i|        otherwise.

    - ``"decrease"``, their map for the features to decrease::

          S_i = 0                  if t_i > 0 or s_i < 0
          S_i = |t_i| * s_i        otherwise.

    Both of Papernot's maps are never negative. The derivatives are those of
    the logits ``z^L``, not of the softmax output.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        target: the class ``o``; see the module docstring.
        variant: ``"manuscript"``, ``"increase"`` or ``"decrease"``.

    Returns:
        The map, shape ``(n, p_0)``, or ``(n, p_L, p_0)`` for ``"all"``.
    """
    _check_choice(variant, "variant", JSMA_VARIANTS)
    xp = _check_batch(model, x)
    target = resolve_target(model, x, target)
    J = input_jacobian(model, x)
    # A product beyond the dtype's range is named below, in place of
    # NumPy's warning.
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(target, str):
            classes = range(model.n_classes)
            maps = [_jsma_of_class(xp, J, o, variant) for o in classes]
            maps = xp.stack(maps, axis=1)
        else:
            maps = _jsma_of_class(xp, J, target, variant)
    _check_jsma_range(xp, maps, J)
    return maps


def _check_jsma_range(xp: Any, maps: Array, J: Array) -> None:
    """Raise ``ValueError`` if the JSMA map ``maps`` from the Jacobian ``J``
    is not finite."""
    _check_range(xp, J, "The derivatives of the logits")
    if not _arrays.all_finite(xp, maps):
        largest = float(xp.max(xp.abs(J)))
        cause = f": products t_i * s_i of derivatives up to {largest:.3g} overflowed"
        _check_range(xp, maps, "The values of the jsma map", cause)


def _jsma_of_class(xp: Any, J: Array, o: Array | int, variant: str) -> Array:
    """Return the map of class ``o`` (an int, or one class per row) from ``J``."""
    n, classes, _ = J.shape
    if isinstance(o, int):
        o = xp.full((n,), o, dtype=_arrays.index_dtype(xp), device=_device(J))
    chosen = _arrays.one_hot(xp, o, classes, J.dtype, _device(J))[:, :, None]
    t = xp.sum(J * chosen, axis=1)
    # The sum over j != o, formed with row o masked out rather than
    # subtracted, so that no rounding from row o enters it.
    s = xp.sum(J * (1 - chosen), axis=1)
    zero = xp.zeros_like(t)
    if variant == "manuscript":
        product = t * s
        return xp.where(product < 0, product, zero)
    if variant == "increase":
        return xp.where((t < 0) | (s > 0), zero, t * xp.abs(s))
    return xp.where((t > 0) | (s < 0), zero, xp.abs(t) * s)


@_arrays.without_autograd
def saliency_map(
    model: ResidualMLP,
    x: Array,
    method: str = "vanilla",
    target: Any = None,
    *,
    absolute: bool = False,
    **options: Any,
) -> Array:
    """Compute the map of one of ``METHODS`` by name.

    ``options`` go to the method's function (``samples``, ``noise_level``,
    ``bounds``, ``squared``, ``seed`` for ``"smoothgrad"``; ``baseline``,
    ``steps``, ``rule`` for ``"integrated_gradients"``; ``variant`` for
    ``"jsma"``). ``absolute`` takes the absolute value of the result, for
    any method. For Integrated Gradients only the attributions are returned.

    Returns:
        The map, shape ``(n, p_0)``, or ``(n, p_L, p_0)`` for ``"all"``.
    """
    _check_method(method)
    _arrays.check_flag("absolute", absolute)
    functions = {
        "vanilla": vanilla_gradient,
        "input_x_gradient": input_x_gradient,
        "smoothgrad": smoothgrad,
        "integrated_gradients": integrated_gradients,
        "jsma": jsma_map,
    }
    function = functions[method]
    accepted = _keyword_options(function)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for method "
            f"{method!r}; it takes: {', '.join(sorted(accepted)) or 'none'}."
        )
    result = function(model, x, target, **options)
    if method == "integrated_gradients":
        result = result.attributions
    return model.xp.abs(result) if absolute else result


def _keyword_options(function: Callable[..., Any]) -> set[str]:
    """Return the names of the options of a map function, those after its
    model, inputs and target."""
    parameters = list(inspect.signature(function).parameters.values())[3:]
    return {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}


# The model-randomisation check.


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return Spearman's rank correlation between matching rows of two arrays.

    Ties get their average rank. A row whose values are all equal has no
    defined correlation and gives NaN.

    Args:
        a, b: NumPy arrays of shape ``(n, d)``.

    Returns:
        The ``n`` correlations, shape ``(n,)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"Expected two arrays of one shape (n, d), got {a.shape} and {b.shape}."
        )
    ra = np.stack([_average_ranks(row) for row in a]) if len(a) else a
    rb = np.stack([_average_ranks(row) for row in b]) if len(b) else b
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    scale = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (ra * rb).sum(axis=1) / scale, np.nan)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return the 1-based ranks of a vector, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.concatenate((starts[1:], [len(values)]))
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
    return ranks


class RandomizationCheck(NamedTuple):
    """The result of ``randomization_check``.

    Attributes:
        blocks: for step ``k``, the block index down to which the network is
            re-initialised (``L-1``, ``L-2``, ..., ``0``, zero-based).
        spearman: rank correlation of the signed maps with the trained
            model's, NumPy array of shape ``(L, n)``.
        spearman_abs: the same for the absolute values of the maps.
        original: the trained model's maps, shape ``(n, p_0)``.
        randomized: the maps after each step, a list of ``L`` arrays.
    """

    blocks: list[int]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    original: Array
    randomized: list[Array]

    __repr__ = _arrays.summary_repr


def randomize_blocks(
    model: ResidualMLP, count: int, seed: int | np.random.Generator | None = 0
) -> list[ResidualMLP]:
    """Re-initialise the top blocks of a model, one more block at each step.

    Step ``k`` (``k = 1..count``) has its last ``k`` blocks replaced by fresh
    He draws as in ``ResidualMLP.init``: ``W1``, ``W2`` and a learned ``W3``
    from ``N(0, 2 / fan_in)``, biases set to zero. Each block is drawn once,
    from the top block down, so a block has the same random weights in every
    step that re-initialises it. An int ``seed`` draws from a stream other
    than ``ResidualMLP.init(seed=...)``'s, so the new weights are never the
    ones that training started from.

    Returns:
        The ``count`` models, in the model's namespace, dtype and device.
    """
    _check_model(model)
    count = _arrays.check_count("count", count, 0)
    if count > model.depth:
        raise ValueError(f"Expected count <= {model.depth} (the depth), got {count}.")
    rng = _randomization_generator(seed, "seed")
    draws = [_he_arrays(model, index, rng) for index in range(model.depth - 1, -1, -1)]
    host = model.convert(np, dtype="float64")
    models, replaced = [], {}
    for step in range(count):
        replaced.update(draws[step])
        randomized = host.replace_arrays(dict(replaced))
        models.append(
            randomized.convert(model.xp, dtype=model.dtype, device=model.device)
        )
    return models


# Mixed into an int seed of the randomisation, so that its draws never
# repeat those of ResidualMLP.init with the same seed.
RANDOMIZATION_STREAM = 0x7261_6E64


def _randomization_generator(seed: Any, name: str) -> np.random.Generator:
    """Return the generator of the re-initialised weights.

    An int seed gives a stream of its own: with ``default_rng(seed)``, as
    ``ResidualMLP.init`` draws, a one-block model trained from
    ``init(seed=0)`` would be "re-initialised" to its own starting weights
    by seed 0. A ``Generator`` is used as it is.
    """
    if isinstance(seed, np.random.Generator) or seed is None:
        return _arrays.generator(seed, name)
    kinds = "an int >= 0, a numpy Generator or None"
    return np.random.default_rng(
        [_arrays.check_seed(seed, name, kinds), RANDOMIZATION_STREAM]
    )


def _he_arrays(
    model: ResidualMLP, index: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    block = model.blocks[index]
    q, p_in, p_out = block.hidden_features, block.in_features, block.out_features
    arrays = {}
    # The order of the draws follows ResidualMLP.init: W3, then W1, then W2.
    if block.shortcut == "learned":
        arrays["W3"] = rng.standard_normal((p_out, p_in)) * np.sqrt(2.0 / p_in)
    arrays["W1"] = rng.standard_normal((q, p_in)) * np.sqrt(2.0 / p_in)
    arrays["W2"] = rng.standard_normal((p_out, q)) * np.sqrt(2.0 / q)
    if block.b1 is not None:
        arrays["b1"] = np.zeros(q)
    if block.b2 is not None:
        arrays["b2"] = np.zeros(p_out)
    return {f"blocks.{index}.{name}": value for name, value in arrays.items()}


@_arrays.without_autograd
def randomization_check(
    model: ResidualMLP,
    x: Array,
    method: str = "vanilla",
    target: Any = None,
    *,
    init_seed: int | np.random.Generator | None = 0,
    progress: Progress | bool | None = None,
    **options: Any,
) -> RandomizationCheck:
    """Run the cascading model-randomisation check of Adebayo et al. (2018).

    The maps of the trained model are compared with the maps after
    re-initialising the blocks from the top (``randomize_blocks``): first
    block ``L``, then blocks ``L`` and ``L-1``, down to every block. A map
    that reflects what the network learned changes as the weights are
    destroyed, so its Spearman rank correlation with the trained model's
    map falls. A map that stays correlated depends on the input more than
    on the model. The class of each row is fixed by the trained model, so every
    step maps the same class.

    Args:
        model: the trained network.
        x: inputs of shape ``(n, p_0)``.
        method: one of ``METHODS``.
        target: one class per row (not ``"all"``); see the module docstring.
        init_seed: the seed of the He draws (``seed`` is left to the
            options, for SmoothGrad's noise). Every map of SmoothGrad uses
            the same noise: one integer drawn from a ``Generator`` or from
            fresh entropy (``None``) passed as ``seed`` seeds all of them.
        progress: wraps the loop over the randomisation steps; ``True``
            draws a tqdm bar.
        options: passed to ``saliency_map``.

    Returns:
        A ``RandomizationCheck`` with the correlations per step and sample.
    """
    progress = _arrays.progress_wrapper(progress)
    _check_batch(model, x)
    _check_method(method)
    if "seed" in options and method != "smoothgrad":
        raise TypeError(
            f"Method {method!r} takes no seed; the seed of the re-initialised "
            "weights is init_seed=."
        )
    target = resolve_target(model, x, target)
    if isinstance(target, str) and target == "all":
        raise ValueError("randomization_check maps one class per row; pass a class.")
    rng = _randomization_generator(init_seed, "init_seed")
    seed = options.get("seed", 0)
    if seed is None or isinstance(seed, np.random.Generator):
        # One integer seed for every map, so that the maps differ by the
        # weights alone and not also by SmoothGrad's noise.
        options["seed"] = int(_arrays.generator(seed).integers(2**63))
    original = saliency_map(model, x, method, target, **options)
    reference = _arrays.to_numpy(original, copy=True)

    randomized, signed, absolute = [], [], []
    steps = randomize_blocks(model, model.depth, rng)
    for random_model in progress(steps, desc="randomisation") if progress else steps:
        random_map = saliency_map(random_model, x, method, target, **options)
        host = _arrays.to_numpy(random_map, copy=True)
        randomized.append(random_map)
        signed.append(rank_correlation(reference, host))
        absolute.append(rank_correlation(np.abs(reference), np.abs(host)))
    blocks = list(range(model.depth - 1, -1, -1))
    return RandomizationCheck(
        blocks, np.stack(signed), np.stack(absolute), original, randomized
    )


# The deletion curve.


class DeletionCurve(NamedTuple):
    """The result of ``deletion_curve``; ``d = p_0`` features.

    Attributes:
        fractions: the fraction of features removed, ``k/d``, shape ``(d+1,)``.
        scores: the class score after removing the ``k`` most salient
            features, NumPy array of shape ``(n, d+1)``.
        random_scores: the same for random orders, averaged over the orders.
        auc: the area under each curve against the fraction, shape ``(n,)``.
        random_auc: the area under each random curve, shape ``(n,)``.
    """

    fractions: np.ndarray
    scores: np.ndarray
    random_scores: np.ndarray
    auc: np.ndarray
    random_auc: np.ndarray

    __repr__ = _arrays.summary_repr


@_arrays.without_autograd
def deletion_curve(
    model: ResidualMLP,
    x: Array,
    saliency: Array,
    target: Any = None,
    *,
    baseline: Array | float = 0.0,
    rank_by: str = "value",
    score: str = "logit",
    random_orders: int = 5,
    seed: int | np.random.Generator | None = 0,
    progress: Progress | bool | None = None,
) -> DeletionCurve:
    """Remove features in saliency order and record the class score.

    Feature ``i`` of a row is removed by setting it to ``baseline_i``. Step
    ``k`` removes the ``k`` features of largest saliency (ties in index
    order), for ``k = 0..d``, and records ``B_r`` (or ``softmax(B)_r``). A
    map that finds the features the class relies on makes the score fall
    fast, so its area under the curve is below that of random orders, which
    are averaged over ``random_orders`` seeded permutations.

    Args:
        model: the network.
        x: inputs of shape ``(n, p_0)``.
        saliency: the map, shape ``(n, p_0)``, in the model's namespace,
            with finite values.
        target: one class per row (not ``"all"``); ``None`` is the class
            predicted at ``x``.
        baseline: the value of a removed feature: a number (0, the lower
            bound of images in ``[0, 1]``, by default) or an array of shape
            ``(n, p_0)``, ``(p_0,)`` or ``(1, p_0)``.
        rank_by: ``"value"`` (most positive first) or ``"magnitude"``
            (largest ``|saliency|`` first).
        score: ``"logit"`` (``z^L_r``) or ``"probability"``
            (``softmax(a^L)_r``, the class probability that ``predict`` and
            the cross-entropy loss use).
        random_orders: the number of random orders, at least 1.
        seed: an int or NumPy ``Generator`` for the random orders.
        progress: wraps the loop over the orders; ``True`` draws a tqdm
            bar.

    Returns:
        A ``DeletionCurve``; its arrays are NumPy arrays.
    """
    progress = _arrays.progress_wrapper(progress)
    xp = _check_batch(model, x)
    _check_choice(rank_by, "rank_by", DELETION_RANKINGS)
    _check_choice(score, "score", DELETION_SCORES)
    random_orders = _arrays.check_count("random_orders", random_orders, 1)
    _arrays.namespace_like(x, saliency, "saliency")
    if tuple(saliency.shape) != tuple(x.shape):
        raise ValueError(
            f"Expected saliency of the input's shape {tuple(x.shape)}, got "
            f"{tuple(saliency.shape)}; pass the map of one class per row."
        )
    _arrays.check_finite(xp, saliency, "saliency")
    target = resolve_target(model, x, target)
    if isinstance(target, str) and target == "all":
        raise ValueError("deletion_curve scores one class per row; pass a class.")
    baseline = _as_reference(xp, baseline, x, "baseline")

    keys = xp.abs(saliency) if rank_by == "magnitude" else saliency
    order = xp.argsort(keys, axis=1, descending=True, stable=True)
    rng = _arrays.generator(seed)
    n, d = x.shape
    orders = [order] + [
        xp.asarray(np.argsort(rng.random((n, d)), axis=1), device=_device(x))
        for _ in range(random_orders)
    ]
    curves = []
    for removal in progress(orders, desc="deletion") if progress else orders:
        curves.append(_deletion_scores(model, x, baseline, removal, target, score))
    fractions = np.arange(d + 1) / max(d, 1)
    # The mean and the areas lie between the smallest and largest score, so
    # they fit the scores' dtype. Float32 sums of scores near its largest
    # value overflowed, so they are taken in float64.
    scores = curves[0]
    random_scores = np.mean(curves[1:], axis=0, dtype=np.float64).astype(scores.dtype)
    return DeletionCurve(
        fractions, scores, random_scores, _area(scores, d), _area(random_scores, d)
    )


def _deletion_scores(
    model: ResidualMLP,
    x: Array,
    baseline: Array,
    order: Array,
    target: Array,
    score: str,
) -> np.ndarray:
    """Return the scores after removing ``k = 0..d`` features in ``order``."""
    xp = model.xp
    d = x.shape[1]
    # rank[i, j] is the step at which feature j of row i is removed.
    rank = xp.argsort(order, axis=1, stable=True)
    mask = _arrays.one_hot(xp, target, model.n_classes, x.dtype, _device(x))
    scores = []
    for k in range(d + 1):
        traces, a_L = model.trace(xp.where(rank < k, baseline, x))
        values = traces[-1].z
        if score == "probability":
            # The model's class probabilities are softmax(a^L), as for predict.
            shifted = a_L - xp.max(a_L, axis=1, keepdims=True)
            values = xp.exp(shifted) / xp.sum(xp.exp(shifted), axis=1, keepdims=True)
        scores.append(_arrays.to_numpy(xp.sum(values * mask, axis=1), copy=True))
    return np.stack(scores, axis=1)


def _area(curves: np.ndarray, d: int) -> np.ndarray:
    """Return the trapezoidal area under ``(n, d+1)`` curves over ``[0, 1]``."""
    if d == 0:
        return np.zeros(curves.shape[0], dtype=curves.dtype)
    wide = curves.astype(np.float64)
    inner = wide.sum(axis=1) - 0.5 * (wide[:, 0] + wide[:, -1])
    return (inner / d).astype(curves.dtype)
