"""Run calls on PyTorch CPU tensors through NumPy's kernels.

This CPU build of PyTorch multiplies small matrices more slowly than
NumPy. On one thread a product of two 64 x 64 matrices took 7.1 us in
float32 and 17.2 us in float64 through ``torch.mm``, against 5.6 us and
10.3 us through NumPy. A torch call also costs about 1.2 us of dispatch,
where a NumPy call costs 0.3 to 0.9 us. So on CPU tensors that autograd
does not record, resgrad runs its NumPy code on views of the tensors'
memory (``Tensor.numpy()`` copies nothing) and wraps the results back as
tensors with ``torch.from_numpy``. The numbers differ from those of the
torch kernels by rounding only.

Large products are another matter. On an Intel Xeon, torch's MKL
multiplied matrices of 128 x 128 and more faster than NumPy's OpenBLAS.
In the benchmarks there, training steps and PGD on networks of width 256
and 1024 ran 1.1 to 1.25 times faster on the torch kernels, and Jacobians
up to 1.2 times. On an AMD EPYC, where MKL does not run its fastest code,
NumPy stayed the faster. So where torch's BLAS is MKL, NumPy's is not,
and the CPU is Intel's, a call keeps the torch kernels when the model's
largest weight has ``TORCH_KERNELS_FROM`` entries or more and ``x`` has
``TORCH_KERNELS_ROWS`` rows or more, except in a child process forked
after resgrad was imported. There, once the parent had multiplied with
torch's MKL on two threads, a torch product waited forever for threads
that the fork did not copy. With fewer rows the products are too small
for MKL's lead: at 1 to 4 rows most calls ran faster through NumPy, at
widths of 256 to 1024. The per-sample gradients take the route at every
size, because their NumPy kernels ran 1.3 to 2.3 times faster than the
torch ones at widths 128 and 256.

Everything else keeps the torch kernels: GPU tensors, a graph that
autograd records, dtypes other than float32 and float64, tensor subclasses,
conjugated or negated views, ``torch.autocast`` and ``torch.func``
transforms. A call that raises on the NumPy side runs again on torch, so
that its error names torch's types; a NumPy ``Generator`` passed to it is
first put back in its state before the call. NumPy's floating-point
warnings are off on the NumPy side, as the torch kernels issue none, so
that a call warns as it does off the route, once.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import sys
import weakref
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from . import _kernels
from .model import ResidualMLP

Array = Any

# Whether eligible calls take the NumPy route: True by the size rule, "always"
# at every size, or False; see resgrad.torch.use_numpy_on_cpu.
_enabled: bool | str = True

# The NumPy twin of each torch model, with the key of _structure it was made
# for and the number of entries of the model's largest weight.
_twins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# The entries of the largest weight, and the rows of x, from which a call
# keeps the torch kernels where torch's BLAS is the faster (see
# _torch_blas_faster). Both were measured on one Intel Xeon with AVX-512.
TORCH_KERNELS_FROM = 128 * 128
TORCH_KERNELS_ROWS = 8

_PARAMETERS = ("W1", "W2", "W3", "b1", "b2")


class _NotEligible(Exception):
    """An argument that the NumPy route cannot take as it is."""


def set_enabled(enabled: bool | str) -> bool | str:
    """Turn the route on (``True``, by the size rule, or ``"always"``) or off
    for the whole process and return the previous setting. The twins stay,
    so that turning the route on again finds them."""
    global _enabled
    if isinstance(enabled, str) and enabled == "always":
        previous, _enabled = _enabled, "always"
        return previous
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(
            f"Expected enabled to be True, False or 'always', got {enabled!r}."
        )
    previous, _enabled = _enabled, bool(enabled)
    return previous


def through_numpy(
    function: Callable[..., Any] | None = None, *, any_size: bool = False
) -> Any:
    """Wrap ``function(model, ...)`` to run on NumPy views of CPU tensors.

    With ``any_size``, large models take the route too where torch's BLAS
    is the faster (see the module's docstring). Used bare or called with
    that keyword, as a decorator.
    """
    if function is None:
        return functools.partial(through_numpy, any_size=any_size)

    @functools.wraps(function)
    def run(model: Any, *args: Any, **kwargs: Any) -> Any:
        if _enabled and "torch" in sys.modules:
            routed = _route(function, model, args, kwargs, any_size)
            if routed is not None:
                return routed[0]
        return function(model, *args, **kwargs)

    return run


def _route(
    function: Callable[..., Any],
    model: Any,
    args: tuple,
    kwargs: dict,
    any_size: bool = False,
) -> tuple[Any] | None:
    """Return ``(result,)`` of ``function`` run on NumPy, or ``None`` where
    the call must keep the torch kernels."""
    torch = sys.modules["torch"]
    found = _twin(torch, model)
    if found is None:
        return None
    twin, largest = found
    # A forked child keeps off torch's BLAS: its threads do not survive a
    # fork, and a product in the child can wait for them forever.
    sized = not any_size and _enabled != "always" and not _kernels._forked
    if sized and torch_kernels_faster(torch, largest, _rows(args, kwargs)):
        return None
    # The tensor behind each view, so that a view in the result comes back
    # as the caller's tensor itself, as the torch kernels return it.
    tensors: dict[int, tuple[Any, Any]] = {}
    try:
        args = tuple(_view(torch, value, tensors) for value in args)
        kwargs = {name: _view(torch, value, tensors) for name, value in kwargs.items()}
    except _NotEligible:
        return None
    # A generator's state, put back before the torch run, so that a failed
    # NumPy run leaves the draws as a torch run alone would.
    states = [
        (value, value.bit_generator.state)
        for value in (*args, *kwargs.values())
        if isinstance(value, np.random.Generator)
    ]
    try:
        # The torch kernels issue no warning on an overflow or a NaN, so
        # NumPy's are off too. A failed NumPy run then leaves no warning, and
        # the torch run that follows warns as a call off the route does.
        with np.errstate(all="ignore"):
            result = function(twin, *args, **kwargs)
    except Exception:  # noqa: BLE001
        # The torch run raises the same error in torch's words.
        for generator, state in states:
            generator.bit_generator.state = state
        return None
    return (_to_torch(torch, result, tensors),)


def _twin(torch: Any, model: Any) -> tuple[Any, int] | None:
    """Return the NumPy model that shares the memory of ``model``'s CPU
    tensors and the entries of its largest weight, or ``None`` if ``model``
    cannot take the route.

    The twin is kept while the model lives, and made again when the key of
    ``_structure`` changes: an activation, a shortcut, or a weight's type,
    memory, shape, strides, dtype, device or view (``resize_``, ``t_``,
    ``tensor.data = ...``). Values written in place show in the twin, which
    views the same memory.
    """
    if not isinstance(model, ResidualMLP):
        return None
    if not array_api_compat.is_torch_namespace(model.xp):
        return None
    if torch.is_autocast_enabled("cpu"):
        # The torch kernels raise the error that explains it.
        return None
    # The attributes of _PARAMETERS, read directly: 14 us on the 500 weights
    # of a 100-block network, where getattr took 21 us.
    weights = [
        value
        for block in model.blocks
        for value in (block.W1, block.W2, block.W3, block.b1, block.b2)
        if value is not None
    ]
    if torch.is_grad_enabled() and any(weight.requires_grad for weight in weights):
        return None
    try:
        key = _structure(model, weights)
    except RuntimeError:
        # Weights made inside a torch.func transform, as by model.convert
        # there, have no memory of their own to view.
        return None
    cached = _twins.get(model)
    if cached is not None and cached[1] == key:
        return cached[0], cached[2]
    _twins.pop(model, None)
    if not _eligible_weights(torch, weights):
        return None
    try:
        twin = _numpy_copy(model)
    except (RuntimeError, TypeError, ValueError):
        # A weight whose shape changed in place so that the blocks no longer
        # chain, which the torch run reports.
        return None
    largest = max(weight.numel() for weight in weights)
    _twins[model] = (twin, key, largest)
    return twin, largest


def _structure(model: Any, weights: list[Any]) -> tuple:
    """Return what the NumPy twin of ``model`` depends on: the activations,
    the shortcuts, and each weight's type, memory, shape, strides, dtype,
    device and negated or conjugated view. It takes about 0.75 us a
    weight."""
    return (
        model.activation,
        model.post_activation,
        model.output_activation,
        [block.shortcut for block in model.blocks],
        [
            (
                type(weight),
                weight.data_ptr(),
                weight.stride(),
                weight.shape,
                weight.dtype,
                weight.is_cpu,
                weight.is_neg(),
                weight.is_conj(),
            )
            for weight in weights
        ],
    )


def torch_kernels_faster(torch: Any, largest: int, rows: int) -> bool:
    """Return whether a call of ``rows`` rows on a model whose largest weight
    has ``largest`` entries runs faster on the torch kernels here."""
    return (
        largest >= TORCH_KERNELS_FROM
        and rows >= TORCH_KERNELS_ROWS
        and _torch_blas_faster(torch)
    )


def _rows(args: tuple, kwargs: dict) -> int:
    """Return the rows of ``x``, the first argument after the model of every
    routed function, or 0 when it has no shape."""
    x = args[0] if args else kwargs.get("x")
    shape = getattr(x, "shape", ())
    return int(shape[0]) if len(shape) > 0 else 0


@functools.cache
def _torch_blas_faster(torch: Any) -> bool:
    """Return whether torch's BLAS multiplies large matrices faster than
    NumPy's here: torch's is MKL, NumPy's is not, and the CPU is Intel's."""
    if "BLAS_INFO=mkl" not in torch.__config__.show():
        return False
    if "mkl" in _numpy_blas().lower():
        return False
    return _cpu_vendor() == "GenuineIntel"


def _numpy_blas() -> str:
    """Return the name of NumPy's BLAS, or an empty string if unknown."""
    try:
        config = np.show_config(mode="dicts")
        return str(config["Build Dependencies"]["blas"]["name"])
    except (KeyError, TypeError, ValueError):
        return ""


def _cpu_vendor() -> str:
    """Return the CPU's vendor string, such as ``GenuineIntel``, or an empty
    string if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    if sys.platform != "win32":
        # Elsewhere platform.processor() starts a subprocess and names no vendor.
        return ""
    # Windows names the vendor last, as in "Intel64 Family 6 ... GenuineIntel".
    return "GenuineIntel" if "GenuineIntel" in platform.processor() else ""


def _eligible_weights(torch: Any, weights: list[Any]) -> bool:
    """Return whether every weight is a plain or parameter CPU tensor of the
    first one's float32 or float64 dtype."""
    dtype = weights[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    return all(
        type(weight) in (torch.Tensor, torch.nn.Parameter)
        and weight.dtype == dtype
        and weight.is_cpu
        and weight.layout == torch.strided
        and not weight.is_neg()
        and not weight.is_conj()
        for weight in weights
    )


def _numpy_copy(model: Any) -> Any:
    """Return a copy of ``model`` whose arrays are NumPy views of its tensors.

    The model checked its arrays when it was made, and ``_twin`` checks
    their dtypes, so the copy checks only the shapes: the checks of values
    would cost more than a small training step.
    """
    # _with_arrays skips replace_arrays's checks of values and copy.copy,
    # whose call of __setstate__ looks up every tensor's namespace again.
    views = {name: value.detach().numpy() for name, value in model.arrays().items()}
    twin = model._with_arrays(views)
    for block in twin.blocks:
        # Shapes changed in place (resize_) are caught here.
        block._check_shapes()
    twin._xp = array_api_compat.numpy
    twin._check_chain()
    return twin


# The dtypes that the NumPy route takes: floating inputs and weights, and
# integer or boolean labels.
_DTYPES = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _eligible_tensor(torch: Any, value: Any) -> bool:
    """Return whether ``value`` is a CPU tensor of a dtype the route takes,
    in plain strided memory."""
    name = str(value.dtype).rsplit(".", 1)[-1]
    return (
        name in _DTYPES
        and value.device.type == "cpu"
        and value.layout == torch.strided
        and not value.is_conj()
        and not value.is_neg()
    )


def _view(
    torch: Any, value: Any, tensors: dict[int, tuple[Any, Any]], nested: bool = False
) -> Any:
    """Return ``value`` with every CPU tensor in it as a NumPy view.

    Each view is recorded in ``tensors``. A value that cannot take the route
    raises ``_NotEligible``.

    A tensor that requires a gradient is taken only at the top level and
    with grad mode off, where the torch kernels treat it as any other. A
    tensor in a dataclass, such as the ``out`` of per_sample_gradients, is
    written to, so one that requires a gradient, is an inference tensor or
    is not contiguous keeps the torch run, which rejects it in its words.
    """
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor or not _eligible_tensor(torch, value):
            raise _NotEligible
        if value.requires_grad and (nested or torch.is_grad_enabled()):
            raise _NotEligible
        if nested and (value.is_inference() or not value.is_contiguous()):
            # Stacks to write into, which the torch run checks in its words.
            raise _NotEligible
        try:
            view = value.detach().numpy()
        except (RuntimeError, TypeError) as error:
            # A tensor of a torch.func transform, which has no memory of
            # its own.
            raise _NotEligible from error
        tensors[id(view)] = (view, value)
        return view
    if isinstance(value, np.ndarray):
        # A NumPy array beside a torch model is an error that the torch run
        # words.
        raise _NotEligible
    if isinstance(value, list):
        return [_view(torch, item, tensors, nested) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_view(torch, item, tensors, nested) for item in value)
    if dataclasses.is_dataclass(value) and hasattr(value, "__dict__"):
        copied = object.__new__(type(value))
        copied.__dict__.update(
            (name, _view(torch, item, tensors, nested=True))
            for name, item in value.__dict__.items()
        )
        return copied
    return value


def _to_torch(torch: Any, value: Any, tensors: dict[int, tuple[Any, Any]]) -> Any:
    """Return ``value`` with every NumPy array and scalar in it as a tensor:
    the caller's own tensor for a view that ``_view`` made, else a tensor
    on the array's memory.

    A dataclass result is copied through its ``__dict__``. The 500 arrays
    of the gradients of a 100-block network take about 0.5 ms this way,
    where ``dataclasses.replace`` and generic type tests took twice that.
    """
    from_numpy = torch.from_numpy
    ndarray = np.ndarray

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is ndarray:
            known = tensors.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
            if not value.flags.writeable:
                # torch.from_numpy warns on a read-only array.
                value = value.copy()
            try:
                return from_numpy(value)
            except ValueError:
                # A negative stride, which torch.from_numpy rejects.
                return from_numpy(value.copy())
        if value is None:
            return None
        if kind is list:
            return [convert(item) for item in value]
        if isinstance(value, np.generic):
            return from_numpy(np.asarray(value))
        if kind is tuple:
            return tuple(convert(item) for item in value)
        if hasattr(kind, "__dataclass_fields__") and hasattr(value, "__dict__"):
            result = object.__new__(kind)
            result.__dict__.update(
                (name, convert(item)) for name, item in value.__dict__.items()
            )
            return result
        return value

    return convert(value)


def _routing_torch() -> Any:
    """Return the torch module where ``fit`` may take the route, or ``None``
    where the route is off, torch is not imported or a torch function or
    dispatch mode is active."""
    torch = sys.modules.get("torch")
    if not _enabled or torch is None or _kernels._torch_modes_active(torch):
        return None
    return torch


def fit_views(model: Any, rows: int, *arrays: Any) -> tuple[Any, list[Any]] | None:
    """Return the NumPy twin of ``model`` and NumPy views of ``arrays`` (each
    a tensor, a pair of tensors or ``None``) for a ``fit`` whose steps take
    ``rows`` rows, or ``None`` where the run keeps the tensors.

    On the route every step of the run is NumPy's, with no conversion per
    step. The size rule of single calls applies to the steps, so large
    models keep the torch kernels where torch's BLAS is the faster.
    """
    torch = _routing_torch()
    if torch is None:
        return None
    found = _twin(torch, model)
    if found is None:
        return None
    twin, largest = found
    sized = _enabled != "always" and not _kernels._forked
    if sized and torch_kernels_faster(torch, largest, rows):
        return None
    try:
        views = [_view(torch, value, {}) for value in arrays]
    except _NotEligible:
        return None
    return twin, views


def update(opt: Any, grads: dict, state: Any, params: dict) -> tuple[dict, Any]:
    """Return ``opt.update(grads, state, params)`` for resgrad's own optimizers,
    run on NumPy views where every array is a float CPU tensor.

    ``fit`` calls this once a step. An update takes a few elementwise
    operations a weight, and on small weights torch's dispatch costs more
    than the arithmetic (see the benchmarks page). The optimizers return
    new arrays and write into none of their inputs, so views of the
    caller's tensors are safe, and each update is NumPy's, bit for bit.
    """
    torch = _routing_torch()
    if torch is None:
        return opt.update(grads, state, params)
    try:
        views = [_float_views(torch, value) for value in (grads, state, params)]
        with np.errstate(all="ignore"):
            new_params, new_state = opt.update(*views)
    except Exception:  # noqa: BLE001
        # An array the route cannot take, or an error that the torch run
        # raises again in torch's words.
        return opt.update(grads, state, params)
    return _float_tensors(torch, new_params), _float_tensors(torch, new_state)


def to_tensors(arrays: dict) -> dict:
    """Return the NumPy ``arrays`` of a routed ``fit`` as tensors on their
    memory."""
    return _float_tensors(sys.modules["torch"], arrays)


def _float_views(torch: Any, value: Any) -> Any:
    """Return ``value``, a dict, named tuple or number of float CPU tensors,
    with each tensor as a NumPy view; raise ``_NotEligible`` for anything
    else."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter) or value.dtype not in (
            torch.float32,
            torch.float64,
        ):
            raise _NotEligible
        try:
            # numpy() itself refuses a GPU, sparse, conjugated or negated
            # tensor, in less time than testing each of those.
            return value.detach().numpy()
        except (RuntimeError, TypeError) as error:
            raise _NotEligible from error
    if isinstance(value, dict):
        return {name: _float_views(torch, item) for name, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_float_views(torch, item) for item in value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise _NotEligible


def _float_tensors(torch: Any, value: Any) -> Any:
    """Return ``value``, a dict, named tuple or leaf, with every NumPy array
    and scalar in it as a tensor (a scalar, which a 0-d array's arithmetic
    gives, as a 0-d tensor), converted as ``_to_torch`` converts them."""
    if isinstance(value, dict):
        return {name: _float_tensors(torch, item) for name, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_float_tensors(torch, item) for item in value))
    return _to_torch(torch, value, {})
