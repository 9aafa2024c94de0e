"""Saliency-map attacks on the Jacobian of the logits: JSMA and maximal JSMA.

Both attacks change two features ``(p, q)`` per iteration, chosen from the
Jacobian ``J = dz^L/dx`` (equation (5) of Theorem 1, from
``resgrad.input_jacobian``) at the current input. For a class ``o`` and a
pair, ``alpha = J[o, p] + J[o, q]`` is the change of the logit of ``o`` and
``beta = sum_{j != o} (J[j, p] + J[j, q])`` the change of the other logits
when both features grow by one unit. The pair search forms the ``(d, d)``
matrices of ``alpha`` and ``beta`` per sample and masks them, so it has no
Python loop over pairs.

Rules shared by both attacks, per sample:

- The search domain starts with the features that can move in a given
  direction: up when below ``hi``, down when above ``lo``.
- A pair is two different features ``p < q``, both in the domain of the
  direction in which the pair would move.
- After a move both features leave the domain for good, so no feature is
  picked twice. A feature that reaches a bound would have left anyway.
- The pair with the highest score wins. Ties go to the first pair in
  row-major order of ``(p, q)``: the smallest ``p``, then the smallest ``q``.
- The attack stops on success, when no admissible pair is left (a failure
  unless the sample already succeeded), when fewer than two features are left
  in the domain, or after ``floor(d * gamma / 2)`` iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .. import _arrays
from .._arrays import without_autograd
from .._numpy_route import through_numpy
from ..model import ResidualMLP
from ..product import input_jacobian
from ._common import (
    Array,
    AttackResult,
    Batch,
    check_fits,
    check_no_nan,
    check_number,
    clip,
    finish,
    linf_limits,
    prepare,
    project_linf,
    succeeded,
    unchanged,
)

# The number of (p, q) scores formed at once, about 16 MiB per float64
# matrix. The samples are split into chunks of rows that stay under it.
SCORE_ELEMENTS = 1 << 21

# A pair selector maps (J, class o, up domain, down domain) to the chosen
# (p, q), the direction of the move (+1 or -1) and whether a pair was found.
Selector = Callable[
    [Batch, Array, Array, Array, Array], tuple[Array, Array, Array, Array]
]


@without_autograd
@through_numpy
def jsma(
    model: ResidualMLP,
    x: Array,
    y: Array,
    target: Array,
    *,
    theta: float | None = None,
    gamma: float = 0.1,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run the Jacobian-based saliency map attack (Papernot et al. 2016).

    At each iteration, for the target ``t``, over pairs ``(p, q)`` in the
    search domain with ``alpha = J[t, p] + J[t, q] > 0`` and
    ``beta = sum_{j != t} (J[j, p] + J[j, q]) < 0``, the pair that maximises
    ``alpha * |beta|`` moves by ``theta`` and is clipped to the box. With
    ``theta < 0`` (the decreasing variant) the conditions are ``alpha < 0``
    and ``beta > 0``, the score is ``|alpha| * beta`` and the domain contains
    the features above ``lo``. The module docstring lists the domain, tie
    and stopping rules.

    Args:
        model: the network under attack.
        x: clean inputs of shape ``(n, d)`` in ``bounds``, in the model's
            namespace and dtype.
        y: true labels of shape ``(n,)``.
        target: target labels of shape ``(n,)``, or one int class for every
            sample.
        theta: the change of each chosen feature, in input units; default
            ``hi - lo``, which takes a feature to the bound in one move.
            A negative value decreases features; 0 returns a copy of ``x``
            clipped into the box.
        gamma: the largest fraction of features to change, in ``(0, 1]``;
            the budget is ``floor(d * gamma / 2)`` iterations.
        bounds: the box ``(lo, hi)`` that contains every input.

    Returns:
        An ``AttackResult`` whose ``steps`` counts the pairs changed.

    Raises:
        ValueError: if ``floor(d * gamma / 2)`` is 0, so that no pair could
            move; the message names the smallest ``gamma`` that moves one.
    """
    if target is None:
        raise ValueError(
            "JSMA is a targeted attack; pass target labels of shape (n,) or one int class."
        )
    batch = prepare(model, x, y, target, bounds)
    theta = _check_theta(batch, theta)
    gamma = _check_gamma(gamma)
    # A gamma that moves no pair is an error at theta = 0 too.
    _budget(batch.d, gamma)
    if theta == 0:
        return unchanged(batch)
    return _run(batch, batch.target, abs(theta), gamma, _jsma_selector(theta > 0))


@without_autograd
@through_numpy
def mjsma(
    model: ResidualMLP,
    x: Array,
    y: Array,
    *,
    target: Array | None = None,
    theta: float | None = None,
    gamma: float = 0.1,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run the maximal Jacobian-based saliency map attack (Wiyatno and Xu 2018).

    Maximal JSMA considers both directions at once. The class ``o`` is the
    target ``t`` or, untargeted, the true label ``y`` (the source class).
    A pair ``(p, q)`` is admissible when ``alpha`` and ``beta`` (as in
    ``jsma``, for class ``o``) have opposite signs, and its score is
    ``|alpha| * |beta|``. The pair moves by ``theta`` in the direction
    ``sign(alpha)`` for a target, which raises the target logit and lowers
    the others, and ``-sign(alpha)`` for the source class, which lowers the
    source logit and raises the others. Both features must lie in the domain
    of that direction: below ``hi`` to move up, above ``lo`` to move down.
    After a move both leave the domain. The module docstring lists the tie
    and stopping rules.

    Args:
        model, x, y, gamma, bounds: as for ``jsma``.
        target: target labels of shape ``(n,)`` or one int class for every
            sample; ``None`` runs the untargeted
            attack on the source class ``y``.
        theta: the change of each chosen feature, ``>= 0``, in input units;
            default ``hi - lo``; 0 returns a copy of ``x`` clipped into the
            box.

    Returns:
        An ``AttackResult`` whose ``steps`` counts the pairs changed.

    Raises:
        ValueError: if ``floor(d * gamma / 2)`` is 0, so that no pair could
            move; the message names the smallest ``gamma`` that moves one.
    """
    batch = prepare(model, x, y, target, bounds)
    theta = _check_theta(batch, theta)
    if theta < 0:
        raise ValueError(
            f"Expected theta >= 0 for maximal JSMA, got {theta}; the attack picks "
            "the direction of each move itself."
        )
    gamma = _check_gamma(gamma)
    # A gamma that moves no pair is an error at theta = 0 too.
    _budget(batch.d, gamma)
    if theta == 0:
        return unchanged(batch)
    source = batch.y if batch.target is None else batch.target
    toward = batch.target is not None
    return _run(batch, source, theta, gamma, _maximal_selector(toward))


def _budget(d: int, gamma: float) -> int:
    """Return the number of iterations, ``floor(d * gamma / 2)``.

    Raises:
        ValueError: if ``gamma`` allows no iteration on ``d`` features, where
            the attack would silently change nothing.
    """
    budget = math.floor(d * gamma / 2)
    if budget >= 1:
        return budget
    if d < 2:
        raise ValueError(
            f"JSMA changes features in pairs, and the inputs have {d} feature; "
            "it needs at least 2."
        )
    raise ValueError(
        f"gamma {gamma} allows floor({d} * {gamma} / 2) = 0 iterations on inputs "
        f"of {d} features, so the attack would change nothing; pass gamma >= "
        f"{math.ceil(2e4 / d) / 1e4:g}."
    )


def _check_theta(batch: Batch, theta: Any) -> float:
    """Return ``theta``, by default ``hi - lo``, after checking that the
    dtype of ``x`` can represent it."""
    if theta is not None:
        return check_fits(batch, "theta", check_number("theta", theta))
    theta = batch.hi - batch.lo
    if not abs(theta) <= batch.largest:
        raise ValueError(
            f"The default theta, hi - lo = {theta:g} for bounds ({batch.lo:g}, "
            f"{batch.hi:g}), overflows {batch.x.dtype}; pass theta= (such as "
            "1.0) or narrower bounds."
        )
    return theta


def _check_gamma(gamma: Any) -> float:
    gamma = check_number("gamma", gamma)
    if not 0 < gamma <= 1:
        raise ValueError(
            f"Expected gamma in (0, 1], the largest fraction of features to "
            f"change, got {gamma}."
        )
    return gamma


# The iteration.


def _run(
    batch: Batch, cls: Array, theta: float, gamma: float, select: Selector
) -> AttackResult:
    """Run the saliency iterations on chunks of rows and join the results."""
    xp = batch.xp
    budget = _budget(batch.d, gamma)
    chunk = max(1, SCORE_ELEMENTS // (batch.d * batch.d))
    pieces = []
    for first in range(0, batch.n, chunk):
        # A strict array-API namespace rejects a slice past the last row.
        rows = slice(first, min(first + chunk, batch.n))
        part = replace(
            batch,
            x=batch.x[rows, ...],
            y=batch.y[rows],
            target=None if batch.target is None else batch.target[rows],
        )
        pieces.append(_iterate(part, cls[rows], theta, budget, select))
    if not pieces:
        return unchanged(batch)
    x_adv = xp.concat([piece[0] for piece in pieces], axis=0)
    taken = xp.concat([piece[1] for piece in pieces], axis=0)
    return finish(batch, x_adv, taken)


def _iterate(
    batch: Batch, cls: Array, theta: float, budget: int, select: Selector
) -> tuple[Array, Array]:
    """Move up to ``budget`` pairs per sample; return the inputs and pair counts.

    Each iteration forms the Jacobian and the pair scores of the samples
    still running only, and spreads the chosen moves back over the batch.
    """
    # An input may lie outside the box by up to box_tolerance. Clipping it
    # first keeps the rows that never move in the box, as the moved ones are.
    xp, x = batch.xp, clip(batch, batch.x)
    limits = linf_limits(batch, theta)
    # The bounds as floats of the dtype: a bound that the dtype rounds
    # outward, such as 0.3 in float32, would leave a feature at the edge of
    # the box in its domain, where a move changes nothing.
    lo, hi = batch.box
    up, down = x < hi, x > lo
    x_adv = x
    taken = xp.zeros((batch.n,), dtype=_arrays.index_dtype(xp), device=batch.device)
    active = ~succeeded(batch, batch.model.predict(x))
    for _ in range(budget):
        active = active & (_count(xp, up | down) >= 2)
        if not bool(xp.any(active)):
            break
        rows = xp.nonzero(active)[0]
        part = _take_rows(batch, x_adv, rows)
        with np.errstate(over="ignore", invalid="ignore"):
            jacobian = input_jacobian(batch.model, part.x)
        part_up, part_down = xp.take(up, rows, axis=0), xp.take(down, rows, axis=0)
        # Features outside the domain cannot move, and their pairs are masked.
        domain = (part_up | part_down)[:, None, :]
        check_no_nan(batch, jacobian, "input Jacobian", where=domain)
        p, q, direction, found = select(
            part, jacobian, xp.take(cls, rows), part_up, part_down
        )
        pair = (_one_hot(part, p) | _one_hot(part, q)) & found[:, None]
        step = (theta * direction)[:, None] * xp.astype(pair, x.dtype)

        # Row i of the batch is row position[i] of the running samples.
        position = xp.cumulative_sum(xp.astype(active, _arrays.index_dtype(xp))) - 1
        position = xp.clip(position, 0, None)
        active = active & xp.take(found, position)
        pair = xp.take(pair, position, axis=0) & active[:, None]
        moved = project_linf(batch, x_adv + xp.take(step, position, axis=0), limits)
        x_adv = xp.where(active[:, None], moved, x_adv)
        up = up & ~pair & (x_adv < hi)
        down = down & ~pair & (x_adv > lo)
        taken = taken + xp.astype(active, _arrays.index_dtype(xp))
        active = active & ~succeeded(batch, batch.model.predict(x_adv))
    return x_adv, taken


def _take_rows(batch: Batch, x_adv: Array, rows: Array) -> Batch:
    xp = batch.xp
    target = None if batch.target is None else xp.take(batch.target, rows)
    return replace(
        batch, x=xp.take(x_adv, rows, axis=0), y=xp.take(batch.y, rows), target=target
    )


# Pair selection.


def _jsma_selector(increasing: bool) -> Selector:
    def select(batch, jacobian, cls, up, down):
        xp = batch.xp
        alpha, beta = _pair_sums(batch, jacobian, cls, up if increasing else down)
        if increasing:
            score = _on_pairs(batch, _gain(xp, alpha, beta), up)
        else:
            score = _on_pairs(batch, _gain(xp, -alpha, -beta), down)
        p, q, found = _best_pair(batch, score)
        sign = 1.0 if increasing else -1.0
        direction = xp.full((batch.n,), sign, dtype=batch.x.dtype, device=batch.device)
        return p, q, direction, found

    return select


def _maximal_selector(toward: bool) -> Selector:
    """Select by the maximal-JSMA rule, toward a target or away from the source."""

    def select(batch, jacobian, cls, up, down):
        xp = batch.xp
        alpha, beta = _pair_sums(batch, jacobian, cls, up | down)
        # Moving both features up raises the logit of cls and lowers the
        # others by these scores, and moving both down does the reverse.
        raises, lowers = _gain(xp, alpha, beta), _gain(xp, -alpha, -beta)
        if not toward:
            raises, lowers = lowers, raises
        up_score = _on_pairs(batch, raises, up)
        score = up_score + _on_pairs(batch, lowers, down)
        p, q, found = _best_pair(batch, score)
        flat = xp.reshape(up_score, (batch.n, batch.d * batch.d))
        chosen = xp.take_along_axis(flat, (p * batch.d + q)[:, None], axis=1)[:, 0]
        ones = xp.ones((batch.n,), dtype=batch.x.dtype, device=batch.device)
        return p, q, xp.where(chosen > 0, ones, -ones), found

    return select


def _pair_sums(
    batch: Batch, jacobian: Array, cls: Array, domain: Array
) -> tuple[Array, Array]:
    """Return ``alpha`` and ``beta`` of every pair, each of shape ``(n, d, d)``,
    each sample's scaled by one power of two (see ``_unit_scale``).

    ``domain`` ``(n, d)`` marks the features that may move, which set the
    scale.
    """
    xp = batch.xp
    if xp.finfo(jacobian.dtype).bits < 32:
        # float16 keeps 11 bits and overflows at 65504, so a product of two
        # pair sums of 256 is infinite and scaled scores lose their order.
        jacobian = xp.astype(jacobian, xp.float32)
    classes = jacobian.shape[1]
    pick = xp.astype(_one_hot(batch, cls, classes), jacobian.dtype)[:, :, None]
    own = xp.sum(jacobian * pick, axis=1)
    # The other rows are summed with row cls masked out, as jsma_map does.
    # Subtracting own from the sum of all rows leaves a rounding error, which
    # can give an exact zero beta a sign and so admit a pair.
    others = xp.sum(jacobian * (1 - pick), axis=1)
    own, others = _unit_scale(xp, own, domain), _unit_scale(xp, others, domain)
    alpha = own[:, :, None] + own[:, None, :]
    beta = others[:, :, None] + others[:, None, :]
    return alpha, beta


def _unit_scale(xp: Any, rows: Array, domain: Array) -> Array:
    """Return ``rows`` ``(n, d)``, each row times the power of two that brings
    its largest magnitude over the features of ``domain`` into ``[1, 2)``.

    Each score ``alpha * |beta|`` of a sample then changes by one factor, so
    the best pair stays the same where no score overflowed or underflowed
    before. A Jacobian that is very large or very small as a whole then no
    longer makes them overflow or underflow. Features outside ``domain`` cannot move, so a large
    entry of theirs does not shrink the others. Powers of two scale without
    rounding. Rows with nothing in ``domain`` or with a non-finite entry
    there stay as they are.
    """
    magnitude = xp.where(domain, xp.abs(rows), xp.zeros_like(rows))
    largest = xp.max(magnitude, axis=1)
    usable = (largest > 0) & xp.isfinite(largest)
    exponent = xp.floor(xp.log2(xp.where(usable, largest, xp.ones_like(largest))))
    # 2 ** -exponent must itself be finite and normal in the dtype.
    limit = math.floor(math.log2(float(xp.finfo(rows.dtype).max))) - 1
    exponent = xp.clip(exponent, -limit, limit)
    # Entries outside the domain may overflow, and their pairs are masked.
    with np.errstate(over="ignore"):
        return rows * xp.pow(2.0, -exponent)[:, None]


def _gain(xp: Any, alpha: Array, beta: Array) -> Array:
    """Return ``alpha * |beta|`` where ``alpha > 0`` and ``beta < 0``, else 0."""
    # After _unit_scale only pairs with a feature outside the domain can
    # overflow, and _on_pairs sets those to 0, so NumPy need not warn.
    with np.errstate(over="ignore"):
        return xp.clip(alpha, 0.0, None) * xp.clip(-beta, 0.0, None)


def _on_pairs(batch: Batch, score: Array, domain: Array) -> Array:
    """Return ``score`` on the pairs ``p < q`` of features in ``domain``, and 0
    on the other pairs of the ``(n, d, d)`` array.

    A ``where`` and not a product by 0/1 weights, because an infinite score
    times 0 is NaN, which argmax would pick.
    """
    xp = batch.xp
    index = xp.arange(batch.d, device=batch.device)
    upper = index[:, None] < index[None, :]
    pairs = (domain[:, :, None] & domain[:, None, :]) & upper[None, :, :]
    return xp.where(pairs, score, xp.zeros_like(score))


def _best_pair(batch: Batch, score: Array) -> tuple[Array, Array, Array]:
    """Return ``(p, q, found)`` for the highest positive score per sample."""
    xp = batch.xp
    flat = xp.reshape(score, (batch.n, batch.d * batch.d))
    index = xp.argmax(flat, axis=1)
    found = xp.max(flat, axis=1) > 0
    return index // batch.d, index % batch.d, found


def _one_hot(batch: Batch, index: Array, size: int | None = None) -> Array:
    """Return the ``(n, size)`` boolean mask of ``index`` per row (default ``d``)."""
    xp = batch.xp
    columns = xp.arange(batch.d if size is None else size, device=batch.device)
    return index[:, None] == columns[None, :]


def _count(xp: Any, mask: Array) -> Array:
    return xp.sum(xp.astype(mask, _arrays.index_dtype(xp)), axis=1)
