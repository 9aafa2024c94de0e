"""Losses of one sample and their gradients with respect to the output.

Each loss ``Y = f(a^L, y)`` gives its per-sample value and ``dY/da^L``,
written against the array API. The class score acts on the logits instead:
``Y = z^L_r``, so that ``dY/dx`` is row ``r`` of the Jacobian ``dz^L/dx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _arrays

Array = Any

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Loss:
    """A per-sample loss and its gradient.

    ``value(xp, out, y)`` returns shape ``(n,)`` and ``grad(xp, out, y)``
    returns ``dY_i/d out_i`` of shape ``(n, p_L)``. ``on_logits`` is true
    when ``out`` is ``z^L`` rather than ``a^L = g_out(z^L)``.
    """

    name: str
    value: Callable[[Any, Array, Array], Array]
    grad: Callable[[Any, Array, Array], Array]
    on_logits: bool = False
    integer_labels: bool = True


def _one_hot_like(xp, y, out):
    return _arrays.one_hot(
        xp, y, out.shape[1], out.dtype, _arrays.array_api_compat.device(out)
    )


def _cross_entropy(xp, a, y):
    # logsumexp(a) - a_y = log(e_y + S) - s_y, with s = a - max a, e = exp(s)
    # and S the sum of the other e_k. At a confident label (s_y = 0, e_y = 1)
    # log(1 + S) rounds a tiny S away, while log1p(S + (e_y - 1)) keeps it.
    # At logits (45, -60, 15) and label 0 the log form was 1e-3 off in
    # float64 and 0 in float32. At other labels -s_y > 0 carries the loss.
    one_hot = _one_hot_like(xp, y, a)
    shifted = a - xp.max(a, axis=1, keepdims=True)
    e = xp.exp(shifted)
    e_y = xp.sum(e * one_hot, axis=1)
    others = xp.sum(e * (1 - one_hot), axis=1)
    return xp.log1p(others + (e_y - 1)) - xp.sum(shifted * one_hot, axis=1)


def _cross_entropy_grad(xp, a, y):
    # p_y - 1 cancels when p_y is near 1 (PyTorch's is exactly 0 in float32
    # once the label's logit leads nine others by 17). It equals
    # -S / (S + e_y), with e = exp(a - max a) and S the sum of the other
    # e_k, which keeps full relative precision there. For a small p_y the
    # rounding of S cancels in the ratio, which stays in [-1, 0].
    one_hot = _one_hot_like(xp, y, a)
    e = xp.exp(a - xp.max(a, axis=1, keepdims=True))
    e_others = e * (1 - one_hot)
    others = xp.sum(e_others, axis=1, keepdims=True)
    total = others + xp.sum(e * one_hot, axis=1, keepdims=True)
    return (e_others - one_hot * others) / total


def _target(xp, y, a):
    if xp.isdtype(y.dtype, "integral"):
        return _one_hot_like(xp, y, a)
    return y


def _squared_error(xp, a, y):
    diff = a - _target(xp, y, a)
    return 0.5 * xp.sum(diff * diff, axis=1)


def _squared_error_grad(xp, a, y):
    return a - _target(xp, y, a)


def _score(xp, z, r):
    return xp.sum(z * _one_hot_like(xp, r, z), axis=1)


def _score_grad(xp, z, r):
    return _one_hot_like(xp, r, z)


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", _cross_entropy, _cross_entropy_grad),
    "squared_error": Loss(
        "squared_error", _squared_error, _squared_error_grad, integer_labels=False
    ),
    "score": Loss("score", _score, _score_grad, on_logits=True),
}


def get_loss(name: str) -> Loss:
    """Return the loss called ``name``.

    Raises:
        ValueError: if ``name`` is not one of ``LOSSES``.
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(
            f"Unknown loss {name!r}; expected one of: {', '.join(LOSSES)}."
        )
    return LOSSES[name]


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        valid = ", ".join(REDUCTIONS)
        raise ValueError(f"Unknown reduction {reduction!r}; expected one of: {valid}.")


def check_targets(
    xp: Any,
    loss: Loss,
    y: Array,
    n: int,
    classes: int,
    dtype: Any,
    name: str = "y",
    x_name: str = "x",
) -> None:
    """Check labels, or for squared error also a float target of shape (n, p_L).

    ``name`` and ``x_name`` are the names of ``y`` and of its inputs in
    messages.
    """
    if not loss.integer_labels and _arrays.is_floating(xp, y):
        _arrays.check_dense(y, name)
        if tuple(y.shape) != (n, classes):
            raise ValueError(
                f"Expected {name} as a target of shape ({n}, {classes}), one row "
                f"per row of {x_name}, got {tuple(y.shape)}."
            )
        _arrays.check_byte_order(y, name)
        if y.dtype != dtype:
            raise TypeError(
                f"Expected {name} as a target of dtype {dtype} (the model's "
                f"dtype), got {y.dtype}; cast it with "
                f"{_arrays.cast_hint(y, name, dtype)}."
            )
        _arrays.check_finite(xp, y, "the target" if name == "y" else name)
        return
    shape = tuple(getattr(y, "shape", ()))
    if loss.integer_labels and len(shape) == 2 and shape[0] == n:
        # y is a column of labels, or has one row per sample, such as one-hot
        # rows, which only the squared error takes.
        _arrays.check_concrete(y, name)
        _arrays.check_dense(y, name)
        if shape[1] == 1:
            fix = f"pass {name}.reshape(-1) for a column of labels"
        else:
            fix = (
                f"pass {name}.argmax(axis=1) for one-hot rows, or use "
                f"loss='squared_error' for a float target of shape ({n}, {classes})"
            )
        raise ValueError(
            f"Expected {name} of shape ({n},), one integer label per row of "
            f"{x_name}, got shape {shape}; loss={loss.name!r} takes labels, so "
            f"{fix}."
        )
    if not loss.integer_labels and shape == (n, classes):
        # A one-hot target of integers or bools: the loss takes it as a
        # float target in the model's dtype.
        labels = "1 integer label" if n == 1 else f"{n} integer labels"
        raise TypeError(
            f"Expected {name} as {labels} or as a float target of "
            f"dtype {dtype} (the model's dtype), got a target of dtype "
            f"{y.dtype}; cast it with {_arrays.cast_hint(y, name, dtype)}."
        )
    _arrays.check_labels(xp, y, n, classes, name, x_name)
