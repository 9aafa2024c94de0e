"""Iterative gradient attacks: BIM, ILLCM, MI-FGSM and PGD (L-inf and L2).

Every step takes the gradient at the current iterate ``x_i`` and projects the
new iterate onto the eps-ball around the clean input ``x`` (not around
``x_i``) and then onto the box, so each iterate is a valid input within
``eps`` of ``x``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .._arrays import Seed, all_finite, check_flag, generator, without_autograd
from .._numpy_route import through_numpy
from ..model import ResidualMLP
from ._common import (
    Array,
    AttackResult,
    Batch,
    ascent_direction,
    check_eps,
    check_number,
    check_start,
    check_steps,
    finish,
    from_numpy,
    iterate,
    linf_limits,
    prepare,
    project_l2,
    project_linf,
    row_norms,
    step_size,
    unchanged,
)

# Madry et al. (2017) take steps of 2.5 eps / steps, so that a run can cross
# the ball and still move along its surface.
PGD_STEP_FACTOR = 2.5


@without_autograd
@through_numpy
def bim(
    model: ResidualMLP,
    x: Array,
    y: Array,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    target: Array | None = None,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run the basic iterative method, I-FGSM (Kurakin et al. 2016).

    ``x_0 = x`` and ``x_{i+1} = proj(x_i + alpha sign(grad(x_i, y)))``; with a
    target ``t`` the step is ``- alpha sign(grad(x_i, t))``.

    Args:
        model: the network under attack.
        x: clean inputs of shape ``(n, d)`` in ``bounds``, in the model's
            namespace and dtype.
        y: true labels of shape ``(n,)``.
        eps: the L-inf radius, ``>= 0``; 0 returns a copy of ``x`` clipped
            into the box.
        alpha: the step size, ``> 0``; default ``2.5 eps / steps``.
        steps: the number of steps, ``>= 1``.
        target: target labels of shape ``(n,)``, or one int class for every
            sample, for a targeted attack.
        early_stop: freeze each sample once it succeeds. Kurakin et al. run
            every step, which is the default.
        bounds: the box ``(lo, hi)`` that contains every input.

    Returns:
        An ``AttackResult``.
    """
    batch = prepare(model, x, y, target, bounds)
    eps, steps = check_eps(eps, batch), check_steps(steps)
    alpha = step_size(alpha, PGD_STEP_FACTOR * (eps / steps), eps, batch)
    check_flag("early_stop", early_stop)
    if eps == 0:
        return unchanged(batch)
    return _sign_steps(batch, x, linf_limits(batch, eps), alpha, steps, early_stop)


@without_autograd
@through_numpy
def least_likely_class(model: ResidualMLP, x: Array) -> Array:
    """Return ``y_LL = argmin_k p(k | x)`` per row of ``x`` (n, d), shape ``(n,)``.

    ``p = softmax(a^L)`` keeps the order of ``a^L``, so this is the argmin of
    the class scores that ``model.predict`` maximises, with the ties of a
    relu output broken by ``z^L``. Every class competes, the true label
    included, and exact ties go to the smallest class index.
    """
    return model.xp.argmin(model._class_scores(*model.trace(x)), axis=1)


@without_autograd
@through_numpy
def illcm(
    model: ResidualMLP,
    x: Array,
    y: Array,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run the iterative least-likely class method (Kurakin et al. 2016).

    The target is ``y_LL = argmin_k p(k | x)`` of the clean input, over all
    classes, and ``x_{i+1} = proj(x_i - alpha sign(grad(x_i, y_LL)))``. The
    minus sign lowers the loss of ``y_LL``. The manuscript "Explicit Matrix
    Gradient Expression for Residual Network" prints a plus in its equation
    (63), which would move away from the target.

    Args:
        model, x, y, eps, steps, early_stop, bounds: as for ``bim``.
        alpha: the step size, ``> 0``; default ``2.5 eps / steps``.

    Returns:
        An ``AttackResult`` whose ``target`` is ``y_LL`` and whose success
        means the prediction became ``y_LL``. Where ``y_LL`` is the label,
        the attack moves toward the label, and success means the model
        predicts it.
    """
    batch = prepare(model, x, y, None, bounds)
    if model.n_classes < 2:
        # The least likely class would be the label, and every sample would
        # succeed without a step.
        raise ValueError(
            f"illcm needs a model with 2 or more classes, got {model.n_classes}; "
            "with one class the least likely class is the label."
        )
    batch = replace(batch, target=least_likely_class(model, x))
    eps, steps = check_eps(eps, batch), check_steps(steps)
    alpha = step_size(alpha, PGD_STEP_FACTOR * (eps / steps), eps, batch)
    check_flag("early_stop", early_stop)
    if eps == 0:
        return unchanged(batch)
    return _sign_steps(batch, x, linf_limits(batch, eps), alpha, steps, early_stop)


@without_autograd
@through_numpy
def mifgsm(
    model: ResidualMLP,
    x: Array,
    y: Array,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    mu: float = 1.0,
    target: Array | None = None,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run the momentum iterative FGSM (Dong et al. 2018).

    ``g_0 = 0``, ``g_{i+1} = mu g_i + grad(x_i, y) / ||grad(x_i, y)||_1`` with
    the L1 norm of each sample's own gradient, and
    ``x_{i+1} = proj(x_i + alpha sign(g_{i+1}))``. A zero gradient adds
    nothing to ``g``. With a target ``t`` the accumulated gradient is that of
    ``t`` and the step is ``- alpha sign(g_{i+1})``.

    Args:
        model, x, y, eps, steps, target, early_stop, bounds: as for ``bim``.
        alpha: the step size, ``> 0``; default ``eps / steps`` as in Dong et
            al., so that ``steps`` steps reach the surface of the ball.
        mu: the decay factor of the momentum, ``>= 0``; Dong et al. use 1.

    Returns:
        An ``AttackResult``.
    """
    batch = prepare(model, x, y, target, bounds)
    eps, steps = check_eps(eps, batch), check_steps(steps)
    alpha = step_size(alpha, eps / steps, eps, batch)
    mu = check_number("mu", mu)
    if mu < 0:
        raise ValueError(f"Expected mu >= 0, got {mu}; Dong et al. use mu = 1.")
    check_flag("early_stop", early_stop)
    if eps == 0:
        return unchanged(batch)

    xp = batch.xp
    momentum = xp.zeros_like(x)
    limits = linf_limits(batch, eps)

    def step(v: Array) -> Array:
        nonlocal momentum
        grad = ascent_direction(batch, v)
        # A large mu, or a small dtype over many steps, can grow the momentum
        # past the largest float. The step reads only the signs, which the
        # infinite entries keep, so the overflow stays silent as in torch.
        with np.errstate(over="ignore"):
            momentum = mu * momentum + _l1_normalized(xp, grad)
        return project_linf(batch, v + alpha * xp.sign(momentum), limits)

    x_adv, taken = iterate(batch, x, steps, step, early_stop)
    return finish(batch, x_adv, taken)


def _toward_infinite_entries(xp: Any, grad: Array) -> Array:
    """Return ``grad`` with each row that has an infinite entry replaced by
    the signs of those entries and zeros elsewhere.

    ``grad / ||grad||`` tends to that direction, in the L1 and the L2 norm,
    as those entries grow without bound, where the quotient itself would be
    ``inf / inf``, which is NaN.
    """
    infinite = xp.isinf(grad)
    rows = xp.any(infinite, axis=1, keepdims=True)
    signs = xp.where(infinite, xp.sign(grad), xp.zeros_like(grad))
    return xp.where(rows, signs, grad)


def _l1_normalized(xp: Any, grad: Array) -> Array:
    """Return each row of ``grad`` divided by its L1 norm, rows of zeros as
    they are.

    Where a row's L1 norm overflows the dtype (past 65504 in float16, from
    finite entries), that row alone is first divided by its largest
    magnitude, so that its sum stays finite and the quotient does not round
    to 0. The other rows keep the plain quotient, whatever the batch.
    """
    with np.errstate(over="ignore"):
        norm = xp.sum(xp.abs(grad), axis=1, keepdims=True)
    if not all_finite(xp, norm):
        grad = _toward_infinite_entries(xp, grad)
        overflowed = ~xp.isfinite(norm)
        largest = xp.max(xp.abs(grad), axis=1, keepdims=True)
        divisor = xp.where(overflowed & (largest > 0), largest, xp.ones_like(largest))
        grad = grad / divisor
        norm = xp.where(overflowed, xp.sum(xp.abs(grad), axis=1, keepdims=True), norm)
    return grad / xp.where(norm > 0, norm, xp.ones_like(norm))


@without_autograd
@through_numpy
def pgd(
    model: ResidualMLP,
    x: Array,
    y: Array,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: Seed = None,
    start: Array | None = None,
    target: Array | None = None,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run projected gradient descent in the L-inf ball (Madry et al. 2017).

    BIM from ``x_0 = clip(x + u)`` with ``u`` uniform in ``[-eps, eps]^d``:
    ``x_{i+1} = proj(x_i + alpha sign(grad(x_i, y)))``, or
    ``- alpha sign(grad(x_i, t))`` with a target.

    Args:
        model, x, y, eps, steps, target, early_stop, bounds: as for ``bim``.
        alpha: the step size, ``> 0``; default ``2.5 eps / steps``.
        random_start: start from the random point; ``False`` starts at ``x``.
        seed: an int or a NumPy ``Generator`` for the random start; the
            default ``None`` draws fresh randomness at every call.
        start: a starting point of shape ``(n, d)`` in place of the random
            one; it is projected onto the eps-ball and the box.

    Returns:
        An ``AttackResult``.
    """
    batch = prepare(model, x, y, target, bounds)
    eps, steps = check_eps(eps, batch), check_steps(steps)
    alpha = step_size(alpha, PGD_STEP_FACTOR * (eps / steps), eps, batch)
    start, rng = _check_start_options(batch, start, random_start, seed, early_stop)
    if eps == 0:
        return unchanged(batch)
    limits = linf_limits(batch, eps)
    if start is not None:
        x_0 = project_linf(batch, start, limits)
    elif random_start:
        noise = _uniform_noise(rng, eps, (batch.n, batch.d))
        x_0 = project_linf(batch, x + from_numpy(batch, noise), limits)
    else:
        x_0 = x
    return _sign_steps(batch, x_0, limits, alpha, steps, early_stop)


@without_autograd
@through_numpy
def pgd_l2(
    model: ResidualMLP,
    x: Array,
    y: Array,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: Seed = None,
    start: Array | None = None,
    target: Array | None = None,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run projected gradient descent in the L2 ball (Madry et al. 2017).

    The random start ``x_0 = clip(x + r s)`` is uniform in the ball: ``s`` is
    uniform on the unit sphere and ``r = eps U^(1/d)`` with ``U`` uniform in
    ``[0, 1]``. Each step is
    ``x_{i+1} = proj_2(x_i + alpha grad(x_i, y) / ||grad(x_i, y)||_2)``,
    where ``proj_2`` scales ``x_{i+1} - x`` back onto the L2 ball of radius
    ``eps`` and then clips to the box. A zero gradient gives a zero step.
    With a target the step follows ``-grad(x_i, t)``.

    Args:
        model, x, y, steps, target, early_stop, bounds: as for ``bim``.
        eps: the L2 radius, ``>= 0``; 0 returns a copy of ``x`` clipped into
            the box.
        alpha: the L2 length of a step, ``> 0``; default ``2.5 eps / steps``.
        random_start: start from the random point; ``False`` starts at ``x``.
        seed: an int or a NumPy ``Generator`` for the random start; the
            default ``None`` draws fresh randomness at every call.
        start: a starting point of shape ``(n, d)`` in place of the random
            one; it is projected onto the L2 ball and the box.

    Returns:
        An ``AttackResult``.
    """
    batch = prepare(model, x, y, target, bounds)
    eps, steps = check_eps(eps, batch), check_steps(steps)
    alpha = step_size(alpha, PGD_STEP_FACTOR * (eps / steps), eps, batch)
    start, rng = _check_start_options(batch, start, random_start, seed, early_stop)
    if eps == 0:
        return unchanged(batch)
    if start is not None:
        x_0 = project_l2(batch, start, eps)
    elif random_start:
        x_0 = project_l2(batch, x + from_numpy(batch, _l2_ball(batch, eps, rng)), eps)
    else:
        x_0 = x

    xp = batch.xp

    def step(v: Array) -> Array:
        grad = ascent_direction(batch, v)
        # An infinite entry makes the norm NaN, which the branch below fixes.
        with np.errstate(invalid="ignore"):
            norm = row_norms(xp, grad)
        if not all_finite(xp, norm):
            grad = _toward_infinite_entries(xp, grad)
            norm = row_norms(xp, grad)
        safe = xp.where(norm > 0, norm, xp.ones_like(norm))
        return project_l2(batch, v + alpha * (grad / safe), eps)

    x_adv, taken = iterate(batch, x_0, steps, step, early_stop)
    return finish(batch, x_adv, taken)


def _uniform_noise(
    rng: np.random.Generator, eps: float, shape: tuple[int, int]
) -> np.ndarray:
    """Draw ``shape`` values uniform in ``[-eps, eps]`` (float64).

    NumPy rejects a range ``2 eps`` above the largest float, so such an eps
    scales draws in ``[-1, 1]`` instead; smaller ones keep NumPy's draws.
    """
    if math.isfinite(2.0 * eps):
        return rng.uniform(-eps, eps, size=shape)
    return eps * rng.uniform(-1.0, 1.0, size=shape)


def _l2_ball(batch: Batch, eps: float, seed: Seed) -> np.ndarray:
    """Draw ``(n, d)`` points uniform in the L2 ball of radius ``eps`` (float64)."""
    rng = generator(seed)
    direction = rng.standard_normal((batch.n, batch.d))
    norm = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = direction / np.where(norm > 0, norm, 1.0)
    radius = eps * rng.uniform(size=(batch.n, 1)) ** (1.0 / batch.d)
    return radius * direction


def _check_start_options(
    batch: Batch, start: Array | None, random_start: Any, seed: Seed, early_stop: Any
) -> tuple[Array | None, np.random.Generator]:
    """Check the options of a PGD start, also where eps = 0 uses none of
    them, and return ``start`` in the dtype of ``x`` and the generator of
    the random start."""
    if start is not None:
        start = check_start(batch, start)
    check_flag("random_start", random_start)
    check_flag("early_stop", early_stop)
    return start, generator(seed)


def _sign_steps(
    batch: Batch,
    x_0: Array,
    limits: tuple[Array, Array],
    alpha: float,
    steps: int,
    early_stop: bool,
) -> AttackResult:
    """Iterate ``x_{i+1} = proj(x_i + alpha sign(direction(x_i)))`` from ``x_0``,
    where ``proj`` clamps to ``limits`` (``linf_limits`` of the ball)."""
    ops = batch.ops
    lower, upper = limits

    def step(v: Array) -> Array:
        return ops.sign_step(v, ascent_direction(batch, v), alpha, lower, upper)

    x_adv, taken = iterate(batch, x_0, steps, step, early_stop)
    return finish(batch, x_adv, taken)
