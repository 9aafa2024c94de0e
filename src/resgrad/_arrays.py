"""Array-namespace helpers and input validation shared by every module."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import numpy as np

Array = Any
Seed = int | np.random.Generator | None


# NumPy subclasses that ``namespace`` rejects, each with its own fix.
REJECTED_SUBCLASSES = (np.matrix, np.ma.MaskedArray)


def namespace(
    *arrays: Array,
    names: Sequence[str] | None = None,
    labels: Sequence[str] = (),
    float_targets: bool = False,
) -> Any:
    """Return the array-API namespace shared by ``arrays`` (``None`` skipped).

    ``names``, one per array, name a list or a number among them in the
    error, with the converter of the library of the arrays beside it. A list
    named in ``labels`` is advised to become integer class labels, as the
    model's dtype would make float labels, which are rejected; with
    ``float_targets``, for the squared error, float targets of the model's
    dtype too.

    Raises:
        TypeError: if the arrays come from two namespaces, or one is not an
            array.
    """
    present = [a for a in arrays if a is not None]
    for index, a in enumerate(arrays):
        if isinstance(a, (list, tuple, int, float)):
            name = None if names is None else names[index]
            expected = "arrays" if name is None else f"{name} to be an array"
            kind = " and dtype"
            if name in labels:
                kind = ", as integer class labels"
                if float_targets:
                    kind += " or float targets of the model's dtype"
            raise TypeError(
                f"Expected {expected}, got the {type(a).__name__} "
                f"{_short_repr(a)}; convert it first"
                f"{_converter(present, named=name is not None)}, in the "
                f"model's namespace{kind}."
            )
        if isinstance(a, np.matrix):
            # np.matrix keeps two dimensions in every reduction, which the
            # array API does not allow.
            raise TypeError(
                "Expected arrays, got a numpy.matrix; pass np.asarray(m) instead."
            )
        if isinstance(a, np.ma.MaskedArray):
            # NumPy's masked products broadcast differently from the array
            # API's, and a mask would silently drop out of some results.
            raise TypeError(
                "Expected arrays, got a numpy masked array; pass a.filled(v) to "
                "replace its masked entries with a value v, or drop the rows "
                "that have them."
            )
    try:
        return array_api_compat.array_namespace(*present)
    except TypeError as error:
        kinds = sorted({type_name(a) for a in present})
        table = next((a for a in present if hasattr(a, "to_numpy")), None)
        if table is not None:
            # A pandas DataFrame or Series, which is no array-API array.
            raise TypeError(
                f"Expected arrays, got a {type(table).__name__}; pass its values "
                "with .to_numpy()."
            ) from error
        raise TypeError(
            f"Expected arrays from one array namespace, got {', '.join(kinds)}; "
            "pass every input, label and target in the model's namespace (e.g. "
            "np.asarray or torch.as_tensor), or convert the model with "
            "model.convert(like=x)."
        ) from error


def namespace_like(x: Array, value: Array, name: str) -> Any:
    """Return the namespace of ``x`` after checking that the argument
    ``name`` shares it, or raise a ``TypeError`` that names the argument."""
    try:
        return namespace(x, value)
    except TypeError as error:
        if type_name(value) == type_name(x) or not hasattr(value, "shape"):
            raise
        raise TypeError(
            f"{name} is a {type_name(value)} but x is a {type_name(x)}; pass "
            f"{name} in the namespace of x (e.g. torch.as_tensor or "
            "np.asarray)."
        ) from error


def _converter(arrays: list[Array], named: bool) -> str:
    """Return the words that name the converter of a list: that of the
    library of the first torch or NumPy array in ``arrays`` where ``named``,
    or both."""
    if named:
        for a in arrays:
            if array_api_compat.is_torch_array(a):
                return " with torch.as_tensor"
            if array_api_compat.is_numpy_array(a):
                return " with np.asarray"
    return ", e.g. with np.asarray or torch.as_tensor"


def type_name(value: Any) -> str:
    """Return the qualified name of the type of ``value``, such as
    ``numpy.ndarray``, as messages name array kinds."""
    return f"{type(value).__module__}.{type(value).__name__}"


def scalar(value: Any) -> Any:
    """Return the Python scalar of a 0-d array or tensor (a NumPy scalar
    included), or ``value`` itself for anything else.

    A tensor is detached first, so that torch does not warn about reading a
    tensor that requires a gradient.
    """
    if getattr(value, "shape", None) != ():
        return value
    detach = getattr(value, "detach", None)
    return (value if detach is None else detach()).item()


def _short_repr(value: Any, limit: int = 60) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters with "..."."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Lists and tuples longer than this show their first items and their last.
SUMMARY_ITEMS = 8


def summary_repr(value: Any) -> str:
    """Return ``repr(value)`` with each array written as its dtype and
    shape, such as ``float64[128, 64]``.

    The result types use it as their ``__repr__``, because the arrays' own
    reprs print their entries: about 200 lines for the default digits model.
    Dataclass fields with ``repr=False`` are left out, lists longer than
    ``SUMMARY_ITEMS`` show their first three items and their last, and a
    container met again inside itself is written ``[...]``, as ``repr``
    writes it.
    """
    return _summary(value, frozenset())


def _summary(value: Any, inside: frozenset[int]) -> str:
    """Return ``summary_repr(value)``; ``inside`` contains the ids of the
    containers that ``value`` is part of."""
    if array_api_compat.is_array_api_obj(value) and not isinstance(
        value, numbers.Number
    ):
        return _array_summary(value)
    container = isinstance(value, (list, tuple, dict)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )
    if not container:
        return repr(value)

    if id(value) in inside:
        if isinstance(value, list):
            return "[...]"
        if isinstance(value, dict):
            return "{...}"
        if type(value) is tuple:
            return "(...)"
        return f"{type(value).__name__}(...)"
    inside = inside | {id(value)}

    if dataclasses.is_dataclass(value):
        fields = [f.name for f in dataclasses.fields(value) if f.repr]
        return _call_repr(value, fields, inside)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return _call_repr(value, value._fields, inside)
    if isinstance(value, dict):
        pairs = [f"{key!r}: {_summary(item, inside)}" for key, item in value.items()]
        return "{" + ", ".join(pairs) + "}"

    items = [_summary(item, inside) for item in value]
    if len(items) > SUMMARY_ITEMS:
        items = [*items[:3], f"... {len(items) - 4} more", items[-1]]
    text = ", ".join(items)
    if isinstance(value, list):
        return f"[{text}]"
    return f"({text},)" if len(items) == 1 else f"({text})"


def _call_repr(value: Any, fields: Sequence[str], inside: frozenset[int]) -> str:
    """Return ``Name(field=..., ...)`` with each field in ``summary_repr``."""
    parts = [f"{name}={_summary(getattr(value, name), inside)}" for name in fields]
    return f"{type(value).__name__}({', '.join(parts)})"


def _array_summary(a: Array) -> str:
    """Return ``dtype[shape]``, the value of a 0-d array, and the device
    when it is not the CPU."""
    dtype = str(a.dtype).removeprefix("torch.")
    if isinstance(a, np.ndarray):
        prefix = ""
    elif array_api_compat.is_jax_array(a):
        prefix = "jax."
    else:
        prefix = f"{type(a).__module__.split('.')[0]}."
    if a.ndim == 0:
        try:
            text = f"{prefix}{dtype}({a.item()!r})"
        except Exception:  # noqa: BLE001 (a traced or lazy value has no item)
            text = f"{prefix}{dtype}[]"
    else:
        text = f"{prefix}{dtype}[{', '.join(str(n) for n in a.shape)}]"
    device = str(getattr(a, "device", "cpu"))
    if not device.lower().startswith(("cpu", "tfrt_cpu")):
        text += f" on {device}"
    return text


def parse_names(
    value: str | Sequence[str],
    name: str,
    valid: Sequence[str],
    *,
    unique: bool = False,
) -> list[str]:
    """Return the names of ``value``, a comma-separated string or a sequence,
    in lower case, each once, in the order given.

    ``all`` alone stands for every name of ``valid``, and ``name`` names the
    value in messages. A repeated name counts once, unless ``unique`` is
    true, for lists where a repeat is an error.

    Raises:
        ValueError: on an empty list or item, an unknown name, ``all``
            beside other names, or with ``unique`` a repeated name.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items]
    choices = f"all, or some of: {', '.join(valid)}"
    if not any(names):
        raise ValueError(f"{name} is empty; pass {choices}.")
    if not all(names):
        raise ValueError(f"Empty item in {name} {value!r}; remove the extra comma.")
    if "all" in names:
        if len(names) > 1:
            raise ValueError(
                f"{name} {value!r}: 'all' already names every choice; pass all "
                "alone or only the names you want."
            )
        return list(valid)
    unknown = [item for item in names if item not in valid]
    if unknown:
        raise ValueError(
            f"Unknown {name} value {', '.join(map(repr, unknown))}; expected {choices}."
        )
    repeated = first_repeat(names) if unique else None
    if repeated is not None:
        raise ValueError(
            f"Repeated {name} value {repeated!r} in {value!r}; give each value once."
        )
    return list(dict.fromkeys(names))


def first_repeat(values: Sequence[Any]) -> Any | None:
    """Return the first value that ``values`` repeats, or ``None``."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def progress_wrapper(progress: Any) -> Callable[..., Any] | None:
    """Return the wrapper of a ``progress`` argument, or ``None`` for no bar.

    ``None`` and ``False`` draw no bar, ``True`` a tqdm bar (``tqdm.auto``,
    a widget in notebooks), and a callable such as ``tqdm.tqdm`` is called
    with the iterable and the ``desc`` and ``total`` keywords.
    """
    if progress is None or isinstance(progress, (bool, np.bool_)) and not progress:
        return None
    if isinstance(progress, (bool, np.bool_)):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress=True draws a tqdm bar, and tqdm is not installed; "
                "install it (pip install tqdm), or leave progress out."
            ) from None
        return tqdm
    if not callable(progress):
        raise TypeError(
            f"Expected progress to be True, False, None or a callable such as "
            f"tqdm.tqdm, got {type(progress).__name__}."
        )
    return progress


def to_numpy(value: Array, *, copy: bool = False) -> np.ndarray:
    """Return an array of any supported namespace as a NumPy array on the host.

    A torch tensor leaves autograd and its device, and bfloat16, which NumPy
    lacks, widens to float32, which represents each of its values exactly. With
    ``copy`` the result never shares memory with ``value``. Without it, a
    NumPy array or a CPU tensor comes back as a view of the same memory.
    """
    if isinstance(value, np.ndarray):
        return value.copy() if copy else value
    if array_api_compat.is_torch_array(value):
        value = value.detach()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        host = value.cpu().numpy()
    elif array_api_compat.is_array_api_obj(value):
        host = np.from_dlpack(
            array_api_compat.to_device(value, array_api_compat.device(value))
        )
    else:
        host = np.asarray(value)
    return host.copy() if copy else host


def is_floating(xp: Any, a: Array) -> bool:
    return xp.isdtype(a.dtype, "real floating")


def is_dtype(xp: Any, dtype: Any, kind: str) -> bool:
    """Return whether ``dtype`` is a dtype of ``xp`` of the array-API ``kind``."""
    try:
        return bool(xp.isdtype(dtype, kind))
    except (AttributeError, TypeError, ValueError):
        # torch's isdtype reads attributes of torch dtypes, which a NumPy
        # dtype lacks.
        return False


def index_dtype(xp: Any) -> Any:
    """Return the default integer dtype of ``xp``: int64 on NumPy and
    PyTorch, and int32 on JAX unless its 64-bit mode is on, where a request
    for int64 gives int32 and a warning."""
    if array_api_compat.is_jax_namespace(xp):
        # The 64-bit mode can change between calls.
        return _default_integer(xp)
    return _cached_default_integer(xp)


def has_float64(xp: Any) -> bool:
    """Return whether ``xp`` computes in float64, which JAX does only in its
    64-bit mode."""
    if array_api_compat.is_jax_namespace(xp):
        return (
            xp.__array_namespace_info__().default_dtypes()["real floating"]
            == xp.float64
        )
    return True


def _default_integer(xp: Any) -> Any:
    try:
        return xp.__array_namespace_info__().default_dtypes()["integral"]
    except AttributeError:
        return xp.int64


_cached_default_integer = functools.cache(_default_integer)


_PACKAGE = __file__.rsplit("_arrays.py", 1)[0]


def caller_stacklevel() -> int:
    """Return the ``stacklevel`` for ``warnings.warn``, called in the function
    that calls this one, that points at the first frame outside resgrad,
    however many of resgrad's wrappers lie between."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def all_finite(xp: Any, a: Array) -> bool:
    """Return whether every entry of ``a`` is finite."""
    if array_api_compat.is_numpy_array(a):
        return bool(np.isfinite(a).all())
    if array_api_compat.is_torch_array(a) and a.is_floating_point():
        # torch.isfinite runs several kernels per call, about 14 us at 64 x 64
        # on a CPU. For real entries the largest magnitude is NaN or infinite
        # exactly when an entry is, and one reduction finds it in about 4 us.
        # A complex magnitude can overflow from finite parts, so complex
        # arrays take the general path.
        if a.numel() == 0:
            return True
        # A sum is finite only if every entry is, and it needs no temporary
        # array: at 256 x 256 in float64 it took 6.5 us, abs().max() 47.5
        # us. A sum that overflows from finite entries takes the exact test.
        return math.isfinite(a.sum().item()) or math.isfinite(a.abs().max().item())
    finite = xp.all(xp.isfinite(a))
    # Inside jax.jit every operation gives a tracer, concrete input or not.
    check_concrete(finite, "a value that resgrad checks")
    return bool(finite)


# The largest float16, and so the smallest largest value of a floating dtype.
FLOAT16_MAX = 65504


def divided(xp: Any, a: Array, n: int) -> Array:
    """Return ``a / n`` where ``n`` may exceed the largest value of ``a``'s
    dtype: NumPy casts ``n`` to that dtype first, which turns more than 65504
    rows into infinity in float16, and so every gradient into zero."""
    if n <= FLOAT16_MAX:
        # Every floating dtype can represent n, so no finfo lookup is needed.
        return a / n
    largest = float(xp.finfo(a.dtype).max)
    divisor: float = n
    while divisor > largest:
        # Powers of two divide without rounding, as long as a stays normal.
        a = a / 256
        divisor /= 256
    return a / divisor


def row_norms(xp: Any, rows: Array) -> Array:
    """Return the Euclidean norm of each row of ``rows`` (n, m), shape ``(n,)``.

    Each row is divided by its largest magnitude before squaring, so that the
    squares of entries above ``sqrt(finfo.max)`` do not overflow and those of
    tiny entries do not underflow. A row of zeros has norm 0, and under
    autograd the gradient 0 there, as ``torch.linalg.vector_norm`` gives. A
    row with a NaN has norm NaN, and one with an infinity but no NaN has
    norm infinity.
    """
    scale = xp.max(xp.abs(rows), axis=1)
    # NaN != 0, so a NaN row keeps its NaN through the steps below.
    nonzero = scale != 0
    safe = xp.where(nonzero, scale, xp.ones_like(scale))
    with np.errstate(invalid="ignore"):
        scaled = rows / safe[:, None]
    squares = xp.sum(scaled * scaled, axis=1)
    # sqrt has an infinite derivative at 0, and autograd's infinity times the
    # zero derivative of the rows would give NaN, so zero rows take sqrt(1).
    roots = xp.sqrt(xp.where(nonzero, squares, xp.ones_like(squares)))
    norms = xp.where(nonzero, roots * safe, xp.zeros_like(roots))
    # inf / inf is NaN, so an infinite row takes its scale.
    return xp.where(xp.isinf(scale), scale, norms)


def check_concrete(a: Array, name: str = "x") -> None:
    """Raise ``TypeError`` if ``a`` is a JAX tracer or a tensor batched by
    ``torch.func.vmap``, neither of which has values for resgrad's checks
    to read."""
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(a, jax.core.Tracer):
        raise TypeError(
            f"{name} is a JAX tracer: resgrad ran inside jax.jit, jax.grad or "
            "jax.vmap, whose tracers hold no values, and it reads the values "
            "of its inputs to check them. Call resgrad outside the transform, "
            "on concrete arrays."
        )
    if _vmap_batched(a):
        raise TypeError(
            f"{name} is batched by torch.func.vmap, and resgrad reads the values "
            "of its inputs to check them, which vmap does not allow. Call "
            "resgrad on the whole batch instead: its functions take a batch of "
            "rows, and per_sample_gradients and input_jacobian give what "
            "vmap(grad) and vmap(jacrev) would."
        )


def _vmap_batched(a: Array) -> bool:
    """Return whether ``a`` is, or wraps, a tensor batched by ``vmap``."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(a, torch.Tensor):
        return False
    # torch.func keeps no public test of this; grad's wrappers hold values,
    # so only a batched level counts.
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(a):
        if functorch.is_batchedtensor(a):
            return True
        a = functorch.get_unwrapped(a)
    return False


def check_not_meta(a: Array, name: str) -> None:
    """Raise ``ValueError`` if ``a`` is a tensor on PyTorch's meta device."""
    if getattr(a, "is_meta", False):
        raise ValueError(
            f"{name} is on PyTorch's meta device, which has shapes but no "
            "values; move it to a real device, such as 'cpu', first."
        )


def check_finite(
    xp: Any,
    a: Array,
    name: str,
    fix: str = "remove or impute them before calling resgrad",
) -> None:
    """Raise ``ValueError`` if ``a`` contains a NaN or an infinity, or no
    values at all (a tensor on PyTorch's meta device). ``fix`` ends the
    message."""
    check_concrete(a, name)
    check_not_meta(a, name)
    if not all_finite(xp, a):
        bad = count_true(xp, ~xp.isfinite(a))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); {fix}.")


def count_true(xp: Any, mask: Array) -> int:
    """Return the number of true entries of the boolean array ``mask``,
    counted in the namespace's index dtype, which JAX without 64-bit mode
    takes without a warning."""
    return int(xp.sum(xp.astype(mask, index_dtype(xp))))


def cast_finite(xp: Any, a: Array, dtype: Any, name: str) -> Array:
    """Return the finite floating array ``a`` cast to ``dtype``.

    Raises ``ValueError`` if ``a`` contains a NaN or an infinity, or a
    value too large for ``dtype``, which the cast would turn into an
    infinity.
    """
    check_finite(xp, a, name)
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        cast = xp.astype(a, dtype)
    if not all_finite(xp, cast):
        largest = float(xp.finfo(dtype).max)
        raise ValueError(
            f"{name} has values beyond {largest:.4g}, the largest {dtype}, "
            f"which it must be cast to; pass {name} within that range."
        )
    return cast


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking that it is a whole number
    of at least ``minimum``: an int, a NumPy integer, or a 0-d integer array
    or tensor, but not a bool.

    Raises:
        TypeError: if ``value`` is not an integer.
        ValueError: if it is below ``minimum``.
    """
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"Expected {name} to be an integer, got {_short_repr(value)}; "
            f"pass a whole number of at least {minimum}."
        )
    if value < minimum:
        raise ValueError(
            f"Expected {name} >= {minimum}, got {value}; pass a whole number of "
            f"at least {minimum}."
        )
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` as a bool, raising ``TypeError`` unless it is a bool,
    a NumPy bool (0-d arrays included) or the integer 0 or 1.

    A string such as ``"no"`` is true in Python, so it would turn the
    option on.
    """
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == bool:
        return bool(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"Expected {name} to be True or False, got {value!r}.")


def check_dense(x: Array, name: str) -> None:
    """Reject a PyTorch tensor of a sparse layout, which lacks most of the
    operations of a pass."""
    if array_api_compat.is_torch_array(x) and x.layout != sys.modules["torch"].strided:
        raise TypeError(
            f"Expected {name} as a dense tensor, got the layout {x.layout}; "
            f"pass {name}.to_dense()."
        )


def check_byte_order(x: Array, name: str) -> None:
    """Reject a NumPy array of the other byte order, whose dtype NumPy
    compares unequal to the native one (``>f8`` to float64)."""
    order = getattr(x.dtype, "byteorder", "=")
    if order not in ("=", "|"):
        raise TypeError(
            f"Expected {name} in the machine's byte order, got the "
            f"{'big' if order == '>' else 'little'}-endian dtype {x.dtype.str}; "
            f"convert it with {name}.astype({name}.dtype.newbyteorder('='))."
        )


def cast_hint(y: Array, name: str, dtype: Any) -> str:
    """Return the call that casts ``y`` to ``dtype`` in its own library."""
    short = str(dtype).rsplit(".", 1)[-1]
    if array_api_compat.is_torch_array(y):
        return f"{name}.to(torch.{short})"
    if array_api_compat.is_numpy_array(y) or array_api_compat.is_jax_array(y):
        return f"{name}.astype(np.{short})"
    return f"xp.astype({name}, xp.{short}), xp being the namespace of {name}"


def check_input(xp: Any, x: Array, width: int, dtype: Any, name: str = "x") -> None:
    """Check that ``x`` is a finite floating batch of shape ``(n, width)``.

    ``dtype`` is the model's dtype, which ``x`` must share.
    """
    check_dense(x, name)
    if x.ndim != 2:
        raise ValueError(
            f"Expected {name} of shape (n, {width}), got shape {tuple(x.shape)}; "
            f"pass a batch of rows, e.g. {name}[None, :] for one sample."
        )
    if x.shape[1] != width:
        raise ValueError(
            f"Expected {name} to have {width} features (the model's input "
            f"width), got {x.shape[1]}."
        )
    if not is_floating(xp, x):
        raise TypeError(
            f"Expected {name} of a real floating dtype, got {x.dtype}; "
            f"cast it to the model's dtype {dtype}."
        )
    check_byte_order(x, name)
    if x.dtype != dtype:
        raise TypeError(
            f"Expected {name} of dtype {dtype} (the model's dtype), got "
            f"{x.dtype}; cast one of them, e.g. model.convert(dtype=x.dtype)."
        )
    check_finite(xp, x, name)


def check_labels(
    xp: Any, y: Array, n: int, classes: int, name: str = "y", x_name: str = "x"
) -> None:
    """Check that ``y`` contains ``n`` integer labels in ``[0, classes)``, one
    per row of the input named ``x_name``."""
    check_concrete(y, name)
    check_dense(y, name)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"Expected {name} of shape ({n},), one label per row of {x_name}, got "
            f"shape {tuple(y.shape)}."
        )
    if getattr(y.dtype, "kind", None) in ("U", "S", "O"):
        raise TypeError(
            f"Expected integer class labels in {name}, got dtype {y.dtype}; "
            f"number the classes 0..k-1, e.g. classes, {name} = "
            f"np.unique({name}, return_inverse=True)."
        )
    cast = (
        f"{name}.long()"
        if array_api_compat.is_torch_array(y)
        else f"{name}.astype(np.int64)"
    )
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(
            f"Expected integer class labels in {name}, got dtype {y.dtype}; "
            f"cast them with {cast}."
        )
    if xp.isdtype(y.dtype, "unsigned integer") and y.dtype != xp.uint8:
        # NumPy adds uint64 to int64 as float64, which cannot index, and
        # PyTorch lacks min and max for uint16 to uint64.
        raise TypeError(
            f"Expected class labels of a signed integer dtype or uint8 in "
            f"{name}, got {y.dtype}; cast them with {cast}."
        )
    check_not_meta(y, name)
    if n == 0:
        return
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"Label {bad} in {name} is outside [0, {classes}); the model has "
            f"{classes} outputs."
        )


def check_seed(seed: Any, name: str = "seed", kinds: str = "an int >= 0") -> int:
    """Return ``seed`` as an ``int`` after checking that it is an integer >= 0,
    the seeds NumPy's generators accept. ``kinds`` names what ``seed`` may
    be in the message for a value of another type."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Expected {name} to be {kinds}, got {seed!r}.")
    if seed < 0:
        raise ValueError(
            f"Expected {name} >= 0, got {seed}; NumPy's generators take "
            f"non-negative seeds, so pass e.g. {-int(seed)}."
        )
    return int(seed)


def generator(seed: Seed, name: str = "seed") -> np.random.Generator:
    """Return a NumPy generator for ``seed``: an int >= 0, a ``Generator``
    (returned as it is) or ``None`` (fresh entropy from the system)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    kinds = "an int >= 0, a numpy Generator or None"
    return np.random.default_rng(check_seed(seed, name, kinds))


def one_hot(xp: Any, y: Array, classes: int, dtype: Any, device: Any) -> Array:
    """Return the ``(n, classes)`` one-hot encoding of integer labels ``y``."""
    columns = xp.arange(classes, device=device)
    return xp.astype(y[:, None] == columns[None, :], dtype)


def without_autograd(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``function`` to run with PyTorch's autograd off.

    Attacks, saliency maps and training take their gradients in closed form,
    so autograd would only record a graph through every step when ``x`` or a
    weight requires a gradient. With autograd off, the results carry no
    graph and the in-place kernels run.
    """

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None:
            return function(*args, **kwargs)
        with torch.no_grad():
            return function(*args, **kwargs)

    return run


def check_number(name: str, value: Any, finite: bool = True) -> float:
    """Return ``value`` as a float, or raise ``TypeError``/``ValueError``.

    A real number, including a NumPy scalar or a 0-d array or tensor, is
    accepted; with ``finite`` it must also be finite.
    """
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected {name} to be a real number, got {_short_repr(value)}; "
            "pass an int or a float."
        )
    try:
        value = float(value)
    except OverflowError:
        # An int or a fraction beyond the largest float, such as 10**400.
        if finite:
            raise ValueError(
                f"Expected a finite {name}, got a number of magnitude beyond the "
                "largest float (about 1.8e308); pass a smaller number."
            ) from None
        value = math.inf if value > 0 else -math.inf
    if finite and not math.isfinite(value):
        raise ValueError(
            f"Expected a finite {name}, got {value}; pass a finite real number."
        )
    return value
