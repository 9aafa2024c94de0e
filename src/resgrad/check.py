"""Checking the five equations of Theorem 1 on a given network.

For a network and a batch, ``check_theorem`` evaluates equations (4)-(8)
as literal matrix products and compares them with the backpropagation
recurrence, with central finite differences and, when PyTorch is
installed, with PyTorch autograd on a copy of the weights. Finite
differences are taken on a seeded sample of entries of each matrix, so the
check stays cheap on wide networks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import _arrays
from .gradients import gradients, output_error
from .losses import get_loss
from .model import ResidualMLP
from .product import input_jacobian

Array = Any

EQUATIONS = {
    "4": "dY/dx",
    "5": "dz^L/dx",
    "6": "dY/dW1",
    "7": "dY/dW2",
    "8": "dY/dW3",
}
EXACT_TOLERANCE = 1e-9
DIFFERENCE_TOLERANCE = 1e-6
# A function computed to about eps |f| has central differences of step h
# that carry rounding errors of about eps |f| / h. A row's tolerance rises
# to DIFFERENCE_ROUNDING times that, over the row's largest entry, where
# the entries are small against it. For the loss, |f| is the loss plus
# sum |z dY/dz| over the logits z, the rounding of the logits as it reaches
# the loss; for the logits, it is the largest logit.
DIFFERENCE_ROUNDING = 2.0
# A row whose tolerance reaches this cannot tell a right gradient from one
# 0.1% off, and is reported as below the differences' resolution.
UNRESOLVED = 1e-3


@dataclass
class CheckRow:
    """One comparison: an equation of Theorem 1 against one reference.

    ``error`` is ``max |value - reference| / max |reference|`` over the
    compared entries (over every block for equations (6)-(8)). Central
    differences reach only sampled entries, and a few of them can all be
    tiny, so that the rounding of the differences reads as a large error.
    Against them it divides by the largest entry of the whole analytic
    array, or of the differences where that is larger, and ``tolerance`` is
    ``DIFFERENCE_TOLERANCE`` or the rounding of the differences, whichever
    is larger (see ``DIFFERENCE_ROUNDING``).
    """

    equation: str
    quantity: str
    reference: str
    error: float
    tolerance: float
    entries: int

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance

    @property
    def resolved(self) -> bool:
        """Whether the reference can tell a right value from one 0.1% off:
        false where the rounding of the central differences reaches
        ``UNRESOLVED`` of the entries."""
        return self.tolerance < UNRESOLVED


@dataclass
class CheckReport:
    """The rows of a Theorem 1 check and whether all of them pass.

    Attributes:
        rows: one ``CheckRow`` per equation and reference.
        samples: the number of samples checked.
        loss: the loss whose gradients were compared, reduced by the mean.
        step: the finite-difference step.
        autograd_version: the PyTorch version that gave the autograd rows, or
            ``None`` when they were left out.
    """

    rows: list[CheckRow]
    samples: int
    loss: str
    step: float = 1e-6
    autograd_version: str | None = None

    @property
    def passed(self) -> bool:
        """Whether every row is within its tolerance. A row below the
        resolution of its central differences (``resolved`` false) counts
        as passed although it checks little; ``resgrad check`` names such
        rows in its verdict."""
        return all(row.passed for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        rows = [
            dict(asdict(row), passed=row.passed, resolved=row.resolved)
            for row in self.rows
        ]
        return {
            "passed": self.passed,
            "samples": self.samples,
            "loss": self.loss,
            "step": self.step,
            "autograd_version": self.autograd_version,
            "rows": rows,
        }

    def to_markdown(self) -> str:
        columns = (
            "equation",
            "quantity",
            "reference",
            "max relative error",
            "tolerance",
            "entries",
            "result",
        )
        lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        for row in self.rows:
            result = "pass" if row.passed else "FAIL"
            if row.entries == 0:
                # Every entry that could be stepped sits on a kink of a relu
                # or leaky relu, or at elu's 0.
                result = "none off a kink at 0"
            elif row.passed and not row.resolved:
                result = "below resolution"
            lines.append(
                f"| ({row.equation}) | {row.quantity} | {row.reference} | "
                f"{row.error:.2e} | {row.tolerance:.0e} | {row.entries} | {result} |"
            )
        return "\n".join(lines)


def _relative_error(
    value: np.ndarray, reference: np.ndarray, scale: float | None = None
) -> float:
    """Return ``max |value - reference|`` over ``scale``, by default the
    largest ``|reference|``, or the gap itself where the scale is 0."""
    if scale is None:
        scale = _largest(reference)
    gap = float(np.max(np.abs(value - reference))) if reference.size else 0.0
    if scale == 0.0:
        return gap
    return gap / scale


def _to_numpy(
    model: ResidualMLP, x: Array, y: Array
) -> tuple[ResidualMLP, np.ndarray, np.ndarray]:
    model = model.convert(np, dtype="float64")
    x = np.asarray(_host(x))
    # Any real floating x is checked in float64; other kinds are mistakes
    # (labels passed as x, strings read from a file) that a cast would hide.
    if x.dtype.kind != "f":
        raise TypeError(
            f"Expected x of a real floating dtype, got {x.dtype}; pass the "
            "inputs as floats, such as x.astype('float64')."
        )
    x = x.astype(np.float64)
    y = np.asarray(_host(y))
    return model, x, y


def _host(value: Array) -> Array:
    if hasattr(value, "detach"):
        return _arrays.to_numpy(value, copy=True)
    return value


def _theorem_values(
    model: ResidualMLP, x: np.ndarray, y: np.ndarray, loss: str
) -> dict[str, Any]:
    """Return each equation's value as ``{equation: {name: array}}``."""
    grads = gradients(model, x, y, loss=loss, method="product")
    values: dict[str, dict[str, np.ndarray]] = {key: {} for key in EQUATIONS}
    values["4"]["x"] = grads.input
    values["5"]["x"] = input_jacobian(model, x, mode="product")
    for index, block in enumerate(grads.blocks):
        for eq, name in (("6", "W1"), ("7", "W2"), ("8", "W3")):
            value = getattr(block, name)
            if value is not None:
                values[eq][f"blocks.{index}.{name}"] = value
    return values


def _backprop_values(
    model: ResidualMLP, x: np.ndarray, y: np.ndarray, loss: str
) -> dict[str, Any]:
    grads = gradients(model, x, y, loss=loss)
    arrays = grads.arrays()
    values: dict[str, dict[str, np.ndarray]] = {key: {} for key in EQUATIONS}
    values["4"]["x"] = grads.input
    values["5"]["x"] = input_jacobian(model, x, mode="reverse")
    for key, value in arrays.items():
        name = key.rsplit(".", 1)[1]
        eq = {"W1": "6", "W2": "7", "W3": "8"}.get(name)
        if eq:
            values[eq][key] = value
    return values


def _saturating_activations() -> dict[str, Callable[[Any], Any]]:
    """Return tanh and sigmoid written so that autograd's derivative of them
    keeps full relative precision.

    torch differentiates ``tanh`` as ``1 - tanh^2`` and ``sigmoid`` as
    ``s (1 - s)``. Once the activation saturates, those differences of
    nearly equal numbers keep few digits: with a tanh output and a logit of
    12.6 the gradient came out 1.1e-6 off in float64. Written through
    ``exp(-|t|)`` and ``exp(-2|t|)``, no derivative that the chain rule
    forms is such a difference.
    """
    import torch

    def tanh(t):
        # Below |t| = 1, 1 - tanh^2 is above 0.4 and loses nothing. Above,
        # tanh |t| = (1 - e) / (1 + e) with e = exp(-2|t|) <= exp(-2). (torch
        # differentiates expm1 as expm1 + 1, which would cancel again.)
        positive = t >= 0
        e = torch.exp(-2 * torch.where(positive, t, -t))
        magnitude = (1 - e) / (1 + e)
        saturating = torch.where(positive, magnitude, -magnitude)
        return torch.where(t.abs() < 1, torch.tanh(t), saturating)

    def sigmoid(t):
        positive = t >= 0
        e = torch.exp(torch.where(positive, -t, t))
        return torch.where(positive, 1 / (1 + e), e / (1 + e))

    return {"tanh": tanh, "sigmoid": sigmoid}


def _autograd_values(
    model: ResidualMLP, x: np.ndarray, y: np.ndarray, loss: str
) -> dict[str, Any]:
    import torch

    from .torch import _FUNCTIONS, to_module

    module = to_module(model)
    functions = {**_FUNCTIONS, **_saturating_activations()}

    def logits(v):
        return module.logits(v, functions)

    output = functions[module.output_activation]
    x_t = torch.tensor(x, requires_grad=True)
    # torch's one_hot takes int64 indices alone and gather int32 or int64,
    # where resgrad takes labels of any signed integer dtype or uint8.
    targets = y.dtype.kind == "f"
    y_t = torch.tensor(y if targets else y.astype(np.int64))
    z = logits(x_t)
    a = output(z)
    if loss == "cross_entropy" and a.shape[1] == 1:
        # One class: the loss is 0 whatever the logits.
        value = 0 * a.sum()
    elif loss == "cross_entropy":
        # torch's cross_entropy differentiates to softmax - onehot, whose
        # entry p_y - 1 rounds to 0 once the loss is below about 1e-16, so a
        # confident network would fail the check. The same loss written as
        # log(1 + exp(L)), L = log sum_{j != y} exp(a_j - a_y), has no such
        # difference in its derivative.
        shifted = a - a.gather(1, y_t[:, None])
        label = torch.nn.functional.one_hot(y_t, a.shape[1]).bool()
        others = torch.logsumexp(shifted.masked_fill(label, -math.inf), dim=1)
        value = torch.logaddexp(torch.zeros_like(others), others).mean()
    elif loss == "squared_error":
        if targets:
            target = y_t
        else:
            target = torch.nn.functional.one_hot(y_t, a.shape[1]).to(a.dtype)
        value = 0.5 * ((a - target) ** 2).sum(dim=1).mean()
    else:
        value = z.gather(1, y_t[:, None]).mean()
    params = module.named_arrays()
    names = list(params)
    grads = torch.autograd.grad(value, [x_t, *params.values()])
    values: dict[str, dict[str, np.ndarray]] = {key: {} for key in EQUATIONS}
    values["4"]["x"] = grads[0].numpy()
    jacobian = torch.func.vmap(torch.func.jacrev(logits))(torch.tensor(x))
    values["5"]["x"] = jacobian.detach().numpy()
    for key, grad in zip(names, grads[1:]):
        eq = {"W1": "6", "W2": "7", "W3": "8"}.get(key.rsplit(".", 1)[1])
        if eq:
            values[eq][key] = grad.numpy()
    return values


def _sample_entries(
    shape: tuple[int, ...], count: int, rng: np.random.Generator
) -> np.ndarray:
    size = math.prod(shape)
    return rng.choice(size, size=min(count, size), replace=False)


# Activations whose derivative jumps at 0, where a central difference across
# the jump averages the two sides instead of giving the derivative, and elu,
# whose second derivative jumps there, so that the difference's error grows
# with the step instead of its square.
KINKED = ("relu", "leaky_relu", "elu")


def _smooth_entries(
    shape: tuple[int, ...],
    count: int,
    rng: np.random.Generator,
    crosses: Callable[[int], bool],
    tick: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Return ``_sample_entries`` with every entry whose step ``crosses`` a
    kink replaced by another entry that does not, while there are any.

    Without kinks the entries are those of ``_sample_entries``, so the
    check's figures stay the same. ``tick`` is called once per entry of the
    first sample, for a progress bar.
    """
    picked = _sample_entries(shape, count, rng)
    smooth = []
    for i in picked:
        tick()
        if not crosses(int(i)):
            smooth.append(int(i))
    if len(smooth) < len(picked):
        tried = {int(i) for i in picked}
        for i in rng.permutation(math.prod(shape)):
            if len(smooth) == len(picked):
                break
            if int(i) not in tried and not crosses(int(i)):
                smooth.append(int(i))
    return np.array(smooth, dtype=np.int64)


def _kink_pattern(model: ResidualMLP, x: np.ndarray) -> np.ndarray:
    """Return the signs of the inputs to every kinked activation of ``model``
    at ``x``; an empty array when it has none."""
    g, g_post, g_out = model.activations()
    traces, _ = model._forward(x)
    signs = []
    for index, trace in enumerate(traces):
        if g.name in KINKED:
            signs.append(np.sign(trace.u).ravel())
        between = g_post if index < len(traces) - 1 else g_out
        if between.name in KINKED:
            signs.append(np.sign(trace.z).ravel())
    return np.concatenate(signs) if signs else np.zeros(0)


def _step_crosses(
    pattern: Callable[[np.ndarray], np.ndarray], base: np.ndarray, step: float
) -> Callable[[int], bool]:
    """Return whether stepping entry ``flat`` of ``base`` by ``+ step`` and by
    ``- step`` gives two patterns. An input on a kink that the entry moves
    lands on both sides, and one that it leaves in place does not matter."""

    def crosses(flat: int) -> bool:
        plus, minus = base.copy(), base.copy()
        plus.flat[flat] += step
        minus.flat[flat] -= step
        return not np.array_equal(pattern(plus), pattern(minus))

    return crosses


def _central_difference(
    f: Callable[[np.ndarray], Any], base: np.ndarray, flat: int, step: float
) -> Any:
    """Return ``(f(base + step e) - f(base - step e)) / (2 step)``, where ``e``
    is the unit vector of entry ``flat``.

    The division is by the step as stored, ``plus - minus`` at that entry,
    and not by ``2 step``: next to an entry of 1e8, whose neighbouring
    floats lie 1.5e-8 apart, a step of 1e-6 is stored up to 0.75% off.
    Past about 1.7e10 the step is lost altogether, ``plus == minus``, and
    the difference, 0, is divided by ``2 step``; the row's rounding
    tolerance then reports it as below resolution.
    """
    plus = base.copy()
    minus = base.copy()
    plus.flat[flat] += step
    minus.flat[flat] -= step
    stored = plus.flat[flat] - minus.flat[flat]
    return (f(plus) - f(minus)) / (stored if stored != 0 else 2 * step)


def _loss_of(model: ResidualMLP, x: np.ndarray, y: np.ndarray, loss: str) -> float:
    """Return the mean loss of ``model`` on ``(x, y)``, by the forward pass alone."""
    loss_fn = get_loss(loss)
    traces, a_L = model.trace(x)
    out = traces[-1].z if loss_fn.on_logits else a_L
    return float(np.mean(loss_fn.value(np, out, y)))


def _difference_steps(
    model: ResidualMLP, x: np.ndarray, values: dict, entries: int
) -> int:
    """Return the steps of ``_difference_errors``: one per central difference,
    and with a kinked activation one more per entry tested while sampling."""
    counts = [min(entries, x.size)] * 2 + [
        min(_weight_entries(values, eq, entries), value.size)
        for eq in ("6", "7", "8")
        for value in values[eq].values()
    ]
    return sum(counts) * (2 if _kinked(model) else 1)


def _weight_entries(values: dict, eq: str, entries: int) -> int:
    """Return the entries sampled from each weight of equation ``eq``: its
    share of ``entries``, rounded down, and at least 2."""
    return max(entries // len(values[eq]), 2)


def _kinked(model: ResidualMLP) -> bool:
    """Return whether an activation of ``model`` is in ``KINKED``."""
    return any(f.name in KINKED for f in model.activations())


def _difference_errors(
    model: ResidualMLP,
    x: np.ndarray,
    y: np.ndarray,
    loss: str,
    values: dict[str, Any],
    entries: int,
    step: float,
    rng: np.random.Generator,
    tick: Callable[[], None] = lambda: None,
) -> list[tuple[str, float, int, float]]:
    """Compare sampled entries of each equation with central differences.

    Returns ``(equation, error, entries, floor)`` per equation, ``floor``
    being the rounding of the differences relative to the entries. ``tick``
    is called at each of the ``_difference_steps``.

    With relu, leaky relu or elu, entries whose step crosses 0 are replaced
    by others: there the derivative of relu and leaky relu jumps, and so
    does elu's second derivative, so the difference is not the derivative
    to the precision checked.
    """
    results = []
    kinked = _kinked(model)

    def sample(shape, count, base, pattern):
        if not kinked:
            return _sample_entries(shape, count, rng)
        crosses = _step_crosses(pattern, base, step)
        return _smooth_entries(shape, count, rng, crosses, tick)

    def difference(f, base, i):
        tick()
        return _central_difference(f, base, i, step)

    def input_pattern(v):
        return _kink_pattern(model, v)

    traces, a_L = model.trace(x)
    logits = _largest(traces[-1].z)
    # The rounding of the loss: its own, and that of each logit, eps |z|,
    # carried into the loss by dY/dz. The second is far below eps |z| where
    # the network is confident (dY/dz ~ 1e-7 at a margin of 16).
    value, error = output_error(model, traces, a_L, y, get_loss(loss), "mean")
    shares = np.sum(np.abs(traces[-1].z * error), axis=1)
    # A weight moves every sample's share of the loss, an input one only.
    loss_size = abs(float(value)) + float(np.sum(shares))
    input_loss_size = abs(float(value)) + float(np.max(shares))

    def floor(size, scale):
        rounding = DIFFERENCE_ROUNDING * np.finfo(np.float64).eps * size / step
        return rounding / scale if scale > 0 else rounding

    picked = sample(x.shape, entries, x, input_pattern)
    fd = [difference(lambda v: _loss_of(model, v, y, loss), x, i) for i in picked]
    if len(fd):
        analytic = values["4"]["x"]
        error, scale = _difference_error(analytic.flat[picked], fd, analytic)
        results.append(("4", error, len(fd), floor(input_loss_size, scale)))
    else:
        results.append(("4", 0.0, 0, 0.0))

    jac = values["5"]["x"]
    picked = sample(x.shape, entries, x, input_pattern)
    fd_rows = [difference(lambda v: model.logits(v), x, i) for i in picked]
    # Entry i of x is (sample s, feature f); its column of J[s] is d z^L_s / d x_{s, f}.
    samples, features = np.unravel_index(picked, x.shape)
    if len(fd_rows):
        analytic = np.stack([jac[s, :, f] for s, f in zip(samples, features)])
        numeric = np.stack([row[s] for row, s in zip(fd_rows, samples)])
        error, scale = _difference_error(analytic, numeric, jac)
        results.append(("5", error, analytic.size, floor(logits, scale)))
    else:
        results.append(("5", 0.0, 0, 0.0))

    arrays = model.arrays()
    for eq in ("6", "7", "8"):
        analytic_values, numeric_values = [], []
        for key, value in values[eq].items():
            weight = np.asarray(arrays[key])

            # Each w is a copy of the weight with one entry moved, which
            # needs none of replace_arrays's checks.
            def weight_pattern(w, key=key):
                return _kink_pattern(model._with_arrays({key: w}), x)

            count = _weight_entries(values, eq, entries)
            picked = sample(weight.shape, count, weight, weight_pattern)

            def loss_at(w, key=key):
                return _loss_of(model._with_arrays({key: w}), x, y, loss)

            numeric_values.extend(difference(loss_at, weight, i) for i in picked)
            analytic_values.extend(value.flat[picked])
        if analytic_values:
            error, scale = _difference_error(
                analytic_values, numeric_values, *values[eq].values()
            )
            results.append((eq, error, len(analytic_values), floor(loss_size, scale)))
        elif values[eq]:
            results.append((eq, 0.0, 0, 0.0))
    return results


@contextlib.contextmanager
def _progress_steps(
    progress: Callable[..., Any] | None, total: int
) -> Iterator[Callable[[], None]]:
    """Yield a function that advances a bar of ``total`` steps drawn by
    ``progress`` by one step.

    On a normal exit the bar runs to its end, for the steps that sampling
    skipped. On an error or Ctrl-C it closes at the step reached, so the
    message that follows starts on a new line.
    """
    if progress is None:
        yield lambda: None
        return
    steps = iter(progress(range(total), desc="central differences", total=total))
    try:
        yield lambda: next(steps, None)
    except BaseException:
        close = getattr(steps, "close", None)
        if close is not None:
            close()
        raise
    for _ in steps:
        pass


def _difference_error(analytic: Any, numeric: Any, *whole: Any) -> tuple[float, float]:
    """Return the error of the sampled ``analytic`` entries against their
    central differences ``numeric``, and the scale it is relative to: the
    largest entry of the differences or of the ``whole`` analytic arrays
    they were sampled from."""
    scale = max(_largest(numeric), *(_largest(array) for array in whole))
    return _relative_error(np.asarray(analytic), np.asarray(numeric), scale), scale


def _largest(array: Any) -> float:
    """Return the largest magnitude in ``array``, 0 for an empty one."""
    array = np.asarray(array)
    return float(np.max(np.abs(array))) if array.size else 0.0


def _compare(
    values: dict[str, Any], reference: dict[str, Any]
) -> dict[str, tuple[float, int]]:
    result = {}
    for eq in EQUATIONS:
        keys = sorted(set(values[eq]) | set(reference[eq]))
        if not keys:
            continue
        # An array that one side lacks, such as a W3 that the product left
        # out, is a disagreement, not an entry to skip.
        errors = [
            _relative_error(values[eq][k], reference[eq][k])
            if k in values[eq] and k in reference[eq]
            else math.inf
            for k in keys
        ]
        sizes = [(values[eq].get(k, reference[eq].get(k))).size for k in keys]
        result[eq] = (max(errors), sum(sizes))
    return result


def check_theorem(
    model: ResidualMLP,
    x: Array,
    y: Array,
    *,
    loss: str = "cross_entropy",
    entries: int = 40,
    step: float = 1e-6,
    seed: int = 0,
    autograd: bool | None = None,
    progress: Callable[..., Any] | bool | None = None,
) -> CheckReport:
    """Check equations (4)-(8) of Theorem 1 on ``model`` at the batch ``(x, y)``.

    The products of Theorem 1 are compared, in float64, with the
    backpropagation recurrence and PyTorch autograd (both to
    ``EXACT_TOLERANCE``) and with central finite differences on ``entries``
    seeded entries per equation (to ``DIFFERENCE_TOLERANCE``). Equation (8)
    is left out when no block has a learned shortcut.

    Args:
        model: the network; it is converted to NumPy float64 for the check.
        x: inputs of shape ``(n, p_0)`` with ``n >= 1``; keep ``n`` small
            (the product form forms ``Q^l`` per sample).
        y: labels of shape ``(n,)``, or for ``"squared_error"`` also a float
            target of shape ``(n, p_L)``.
        loss: the loss whose gradients are checked, as for ``gradients``.
        entries: the number of entries per equation that the finite
            differences check, ``>= 1``.
        step: the central-difference step, ``> 0``.
        seed: the seed that picks those entries. With relu, leaky relu or
            elu, entries whose step would cross 0 are not picked.
        autograd: compare with PyTorch; ``None`` means when it is installed,
            and ``True`` without it raises ``ModuleNotFoundError``.
        progress: a bar over the central differences, which take most of
            the time of a check of many entries. ``True`` draws a tqdm bar,
            and a callable such as ``tqdm.tqdm`` gets the iterable and the
            ``desc`` and ``total`` keywords.
    """
    progress = _arrays.progress_wrapper(progress)
    entries = _arrays.check_count("entries", entries)
    step = _arrays.check_number("step", step, finite=False)
    if not 0 < step < math.inf:
        raise ValueError(
            f"Expected a positive finite-difference step, got {step}; the "
            "default is 1e-6."
        )
    if autograd is not None:
        autograd = _arrays.check_flag("autograd", autograd)
    if autograd and not _torch_available():
        raise ModuleNotFoundError(
            "autograd=True compares with PyTorch autograd, but PyTorch is not "
            'installed; install it, for example with pip install "resgrad[torch]", '
            "or pass autograd=None, which leaves out the autograd rows without it.",
            name="torch",
        )
    model, x, y = _to_numpy(model, x, y)
    if loss == "squared_error" and y.dtype.kind == "f":
        # A target, checked in float64 as x is. Float labels of the other
        # losses keep their dtype for the error that names it.
        y = y.astype(np.float64)
    if x.ndim == 2 and x.shape[0] == 0:
        raise ValueError(
            f"Expected at least one sample in x, got shape {x.shape}; the finite "
            "differences need an entry to perturb, so pass one or more rows."
        )
    values = _theorem_values(model, x, y, loss)
    rows = []
    for eq, (error, count) in _compare(
        values, _backprop_values(model, x, y, loss)
    ).items():
        rows.append(
            CheckRow(eq, EQUATIONS[eq], "backprop", error, EXACT_TOLERANCE, count)
        )
    if autograd is None:
        autograd = _torch_available()
    autograd_version = None
    if autograd:
        import torch

        autograd_version = torch.__version__
        reference = _autograd_values(model, x, y, loss)
        for eq, (error, count) in _compare(values, reference).items():
            rows.append(
                CheckRow(eq, EQUATIONS[eq], "autograd", error, EXACT_TOLERANCE, count)
            )
    rng = np.random.default_rng(_arrays.check_seed(seed))
    with _progress_steps(
        progress, _difference_steps(model, x, values, entries)
    ) as tick:
        differences = _difference_errors(
            model, x, y, loss, values, entries, step, rng, tick
        )
    for eq, error, count, floor in differences:
        rows.append(
            CheckRow(
                eq,
                EQUATIONS[eq],
                "central differences",
                error,
                float(max(DIFFERENCE_TOLERANCE, floor)),
                count,
            )
        )
    rows.sort(key=lambda row: row.equation)
    return CheckReport(
        rows,
        samples=x.shape[0],
        loss=loss,
        step=step,
        autograd_version=autograd_version,
    )


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
