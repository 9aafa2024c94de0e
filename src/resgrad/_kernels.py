"""The array operations of the forward pass and the recurrence, per namespace.

The forward pass and the backpropagation recurrence run the same few
operations on every block: a product by a weight plus a bias, a sum of two
products, an activation and a product by its derivative. ``Kernels`` writes
them against the array API and returns a new array every time, which suits
any namespace, JAX's immutable arrays included. NumPy and PyTorch get
subclasses that reuse the array they have just created for the sum or the
product. The PyTorch subclass also calls ``addmm``, ``relu`` and
``threshold_backward`` directly, because a torch call through the
array-API wrappers costs several microseconds, about as much as a product
of two 64 x 64 matrices.

An in-place kernel writes only to an array that the same pass created
just before, never to an argument of a public function.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import array_api_compat
import array_api_compat.numpy
import numpy as np

from .activations import Activation
from .losses import Loss

Array = Any

# The largest weight, in entries, that NumPy's kernels transpose into a copy.
SMALL_MATRIX = 128 * 128

# NumPy's kernels keep up to this many arrays of zeros (for relu) and of
# ones (for column sums), one per shape and dtype, each of at most
# ZERO_ARRAY_SIZE entries.
ZERO_ARRAYS = 32
ZERO_ARRAY_SIZE = 2**20

# NumPy's per-sample stacks reuse the buffers of the last two results once
# no array refers to them, if each has at most this many bytes.
SPARE_BUFFER_BYTES = 64 * 2**20

# NumPy's kernels write a per-sample stack with torch.mul, when PyTorch is
# already imported, if its rows have at least TORCH_STACK_ROW entries and
# the stack at least TORCH_STACK_SIZE.
# NOTE: both sizes were measured on one Intel Xeon only.
TORCH_STACK_ROW = 64
TORCH_STACK_SIZE = 2**15


class Kernels:
    """Array-API operations that always return a new array."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def transpose(self, weight: Array) -> Array:
        """Return ``weight.T`` in the layout that ``linear`` multiplies fastest."""
        return weight.T

    def bias_rows(self, bias: Array | None, rows: int) -> Array | None:
        """Return ``bias`` (q,) in the form ``linear`` adds fastest to
        ``rows`` rows."""
        return bias

    def linear(self, a: Array, weight_t: Array, bias: Array | None) -> Array:
        """Return ``a @ weight_t + bias`` for rows ``a`` (n, p) and ``bias``
        of shape (q,) or (n, q)."""
        out = a @ weight_t
        return out if bias is None else out + bias

    def product(self, rows: Array, weight: Array) -> Array:
        """Return ``rows @ weight``, as one 2-D product when ``rows`` has
        leading axes.

        A stack ``(k, n, p)`` becomes one ``(k n, p)`` matrix, because NumPy
        runs a batched product as ``k`` small ones.
        """
        if rows.ndim == 2:
            return rows @ weight
        flat = self.xp.reshape(rows, (-1, rows.shape[-1])) @ weight
        return self.xp.reshape(flat, (*rows.shape[:-1], weight.shape[1]))

    def add_product(self, z: Array, rows: Array, weight: Array) -> Array:
        """Return ``z + rows @ weight``; may write into ``z``."""
        return z + self.product(rows, weight)

    def add(self, z: Array, a: Array) -> Array:
        """Return ``z + a``; may write into ``z``."""
        return z + a

    def activate(self, g: Activation, u: Array) -> Array:
        """Return ``g(u)`` as a new array."""
        return g.value(self.xp, u)

    def times_derivative(self, e: Array, g: Activation, u: Array) -> Array:
        """Return ``e * g'(u)``; may write into ``e``."""
        return e * g.derivative(self.xp, u)

    def column_sum(self, e: Array) -> Array:
        """Return the sum of the rows of ``e``."""
        return self.xp.sum(e, axis=0)

    def loss(
        self, loss: Loss, out: Array, y: Array, value: bool = True
    ) -> tuple[Array | None, Array]:
        """Return each sample's loss ``(n,)``, or ``None`` without ``value``,
        and its gradient ``dY_i/d out_i`` ``(n, p_L)``."""
        values = loss.value(self.xp, out, y) if value else None
        return values, loss.grad(self.xp, out, y)

    # Whether ``outer_products`` can write into given arrays.
    writes_in_place = False

    def unwritable(self, array: Array) -> str | None:
        """Return why ``array`` cannot receive results in place, as the end
        of a sentence with its fix, or ``None`` when it can."""
        return "cannot be written in place; call without out="

    def extent(self, array: Array) -> tuple[int, int]:
        """Return the first and one past the last byte address of ``array``."""
        raise NotImplementedError

    def owner(self, array: Array) -> Any:
        """Return the object that owns the memory of ``array`` alone, so that
        arrays of two different owners share no memory, or ``None`` when
        that is unknown."""
        return None

    def outer_products(
        self, pairs: list[tuple[Array, Array]], out: list[Array] | None = None
    ) -> list[Array]:
        """Return, for each ``(left, right)`` of shapes ``(n, q)`` and
        ``(n, p)``, the ``(n, q, p)`` stack of ``left[i] right[i]^T``.

        ``out``, one array per pair, receives the stacks where the subclass
        ``writes_in_place``.
        """
        if out is not None:
            raise TypeError(
                f"{type(self).__name__} cannot write into given arrays; call "
                "without out=."
            )
        return [left[:, :, None] * right[:, None, :] for left, right in pairs]

    def sign_step(
        self, v: Array, direction: Array, alpha: float, lower: Array, upper: Array
    ) -> Array:
        """Return ``v + alpha sign(direction)`` clamped to ``[lower, upper]``;
        may write into ``direction``."""
        xp = self.xp
        return xp.minimum(xp.maximum(v + alpha * xp.sign(direction), lower), upper)


class NumpyKernels(Kernels):
    """NumPy kernels that add into the array a product has just returned."""

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._constants: dict[tuple[tuple[int, ...], np.dtype, float], np.ndarray] = {}
        self._spare = SpareBuffer(SPARE_BUFFER_BYTES)

    def _constant(
        self, shape: tuple[int, ...], dtype: np.dtype, value: float
    ) -> np.ndarray:
        """Return a read-only array of ``shape`` and ``dtype`` filled with
        ``value``, made once per shape."""
        key = (shape, dtype, value)
        constant = self._constants.get(key)
        if constant is None:
            if len(self._constants) >= ZERO_ARRAYS:
                self._constants.clear()
            constant = np.full(shape, value, dtype)
            constant.flags.writeable = False
            self._constants[key] = constant
        return constant

    def activate(self, g, u):
        if g.name == "relu" and u.size <= ZERO_ARRAY_SIZE:
            # Measured with NumPy 2.4 at 64 x 64 and 256 x 256: np.maximum
            # against an array of zeros ran 2 to 2.5 times faster than
            # against the scalar 0.
            return np.maximum(u, self._constant(u.shape, u.dtype, 0))
        return super().activate(g, u)

    def column_sum(self, e):
        if e.dtype == np.float16:
            # NumPy adds down a column one row at a time in float16, and
            # once the running sum is large the rows' small terms round
            # away: the bias gradients of 70,000 rows were 26% to 57% off.
            return np.sum(e, axis=0, dtype=np.float32).astype(np.float16)
        if e.ndim == 2 and e.shape[0] <= ZERO_ARRAY_SIZE:
            # A product by a vector of ones goes to BLAS: at 64 x 64 it took
            # 1.0 us in float32 and 1.6 us in float64, np.sum 2.4 us and
            # 3.8 us. From 64 to a million rows of normal values its sums
            # were as close to the exact ones as np.sum's.
            return self._constant((e.shape[0],), e.dtype, 1) @ e
        return np.sum(e, axis=0)

    def transpose(self, weight):
        # With OpenBLAS a product by a transposed view ran about 1.4x slower
        # than by a contiguous copy at widths of 32 to 64, and within a few
        # percent at 256, where the copy costs more than it saves.
        if weight.size <= SMALL_MATRIX:
            return np.ascontiguousarray(weight.T)
        return weight.T

    def bias_rows(self, bias, rows):
        # NumPy adds a (q,) bias to an (n, q) array one row at a time. At
        # 64 x 64 that took 1.8 us in float32 and 2.2 us in float64, and
        # adding an (n, q) array of the repeated bias, 0.8 us and 1.1 us.
        if bias is None or rows * bias.shape[0] > SMALL_MATRIX:
            return bias
        repeated = np.repeat(bias[None, :], rows, axis=0)
        repeated.flags.writeable = False
        return repeated

    def linear(self, a, weight_t, bias):
        out = a @ weight_t
        if bias is not None:
            out += bias
        return out

    def add_product(self, z, rows, weight):
        z += self.product(rows, weight)
        return z

    def add(self, z, a):
        z += a
        return z

    def loss(self, loss, out, y, value=True):
        if loss.name != "cross_entropy":
            return super().loss(loss, out, y, value)
        # The array-API loss and its gradient -S / (S + e_y) at the label
        # (see losses.py), with the label entries picked and changed in
        # place through flat indices rather than a one-hot matrix.
        shifted = out - out.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        labels = np.arange(0, e.size, e.shape[1]) + y
        flat = e.reshape(-1)
        e_y = flat[labels]
        flat[labels] = 0
        others = e.sum(axis=1)
        values = None
        if value:
            # The array-API loss, with the sums taken as it takes them, so
            # the values are the same.
            values = np.log1p(others + (e_y - 1)) - shifted.reshape(-1)[labels]
        total = others + e_y
        e /= total[:, None]
        flat[labels] = -others / total
        return values, e

    writes_in_place = True

    def unwritable(self, array):
        if not array.flags.writeable:
            return "is read-only; pass writable arrays, or out=None"
        if _repeats_elements(array.shape, array.strides):
            return (
                "repeats elements through a zero stride (a broadcast view); "
                "pass arrays of their own, or out=None"
            )
        return None

    def owner(self, array):
        # A view's base is the array it was made from, down to one that
        # allocated its memory (base None). Any other base, such as a buffer
        # or an as_strided view, could share memory with anything.
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array if isinstance(array, np.ndarray) else None

    def extent(self, array):
        if array.flags.c_contiguous:
            start = array.__array_interface__["data"][0]
            return start, start + array.nbytes
        return np.lib.array_utils.byte_bounds(array)

    def outer_products(self, pairs, out=None):
        # NumPy requests huge pages for an array of 4 MiB or more, so one
        # buffer for all stacks takes fewer page faults than one array each.
        # At width 64, 64 samples and 8 blocks (25 MiB) a call went from
        # 12.6 ms to 2.8 ms. einsum also ran several times faster than the
        # broadcast product at widths of a few hundred.
        if out is None:
            sizes = [
                left.shape[0] * left.shape[1] * right.shape[1] for left, right in pairs
            ]
            buffer = self._spare.take(sum(sizes), pairs[0][0].dtype)
            out, start = [], 0
            for (left, right), size in zip(pairs, sizes):
                shape = (left.shape[0], left.shape[1], right.shape[1])
                out.append(buffer[start : start + size].reshape(shape))
                start += size
        for (left, right), stack in zip(pairs, out):
            if not _torch_outer_product(left, right, stack):
                np.einsum("ni,nj->nij", left, right, out=stack)
        return out

    def sign_step(self, v, direction, alpha, lower, upper):
        step = np.sign(direction, out=direction)
        step *= alpha
        step += v
        np.maximum(step, lower, out=step)
        return np.minimum(step, upper, out=step)

    def times_derivative(self, e, g, u):
        if g.name == "relu":
            # relu'(u) is the indicator of u > 0. Multiplying by the boolean
            # mask saves converting it to floats first.
            e *= u > 0
        else:
            e *= g.derivative(self.xp, u)
        return e


class TorchKernels(Kernels):
    """PyTorch kernels through ``addmm``, ``addmm_``, ``relu`` and
    ``threshold_backward``."""

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        import torch

        self.torch = torch

    def linear(self, a, weight_t, bias):
        if bias is None:
            return a @ weight_t
        return self.torch.addmm(bias, a, weight_t)

    def add_product(self, z, rows, weight):
        if rows.ndim != 2:
            return super().add_product(z, rows, weight)
        return z.addmm_(rows, weight)

    def add(self, z, a):
        return z.add_(a)

    def activate(self, g, u):
        if g.name == "relu":
            return self.torch.relu(u)
        return super().activate(g, u)

    def times_derivative(self, e, g, u):
        if g.name == "relu":
            # Autograd's own relu backward: one call of about 3 us, where
            # e.mul_(u > 0) takes two calls and about 9 us at 64 x 64.
            return self.torch.ops.aten.threshold_backward.default(e, u, 0)
        return e.mul_(g.derivative(self.xp, u))

    def column_sum(self, e):
        return e.sum(0)

    def loss(self, loss, out, y, value=True):
        if loss.name != "cross_entropy":
            return super().loss(loss, out, y, value)
        # The gradient -S / (S + e_y) at the label, as in NumPy's kernel.
        shifted = out - out.amax(1, keepdim=True)
        e = shifted.exp()
        rows = self.torch.arange(out.shape[0], device=out.device)
        # torch reads a uint8 index tensor as a mask, so the labels become
        # int64 first.
        labels = y.long()
        e_y = e[rows, labels]
        e[rows, labels] = 0
        others = e.sum(1)
        # The array-API loss, as in NumPy's kernel.
        values = (others + (e_y - 1)).log1p() - shifted[rows, labels] if value else None
        total = others + e_y
        e /= total[:, None]
        e[rows, labels] = -others / total
        return values, e

    def sign_step(self, v, direction, alpha, lower, upper):
        step = direction.sign_().mul_(alpha).add_(v)
        return step.clamp_(lower, upper)

    writes_in_place = True

    def unwritable(self, array):
        torch = self.torch
        if array.requires_grad:
            return "requires a gradient; pass tensors from .detach(), or out=None"
        if array.layout != torch.strided:
            return f"has layout {array.layout}; pass dense tensors, or out=None"
        if array.is_inference() and not torch.is_inference_mode_enabled():
            return (
                "was made in torch.inference_mode(), so it can be written only "
                "there; call inside it, or pass out=None"
            )
        if _repeats_elements(array.shape, array.stride()):
            return (
                "repeats elements through a zero stride (an expanded view); "
                "pass tensors of their own, or out=None"
            )
        return None

    def extent(self, array):
        size = array.element_size()
        last = sum((n - 1) * step for n, step in zip(array.shape, array.stride()))
        start = array.data_ptr()
        return start, start + (last + 1) * size

    def outer_products(self, pairs, out=None):
        if out is None:
            return super().outer_products(pairs)
        for (left, right), stack in zip(pairs, out):
            self.torch.mul(left[:, :, None], right[:, None, :], out=stack)
        return out


def _torch_outer_product(
    left: np.ndarray, right: np.ndarray, stack: np.ndarray
) -> bool:
    """Return whether ``torch.mul`` wrote ``stack``.

    It does where PyTorch is already imported, can view the three arrays
    without a copy, and multiplies faster than ``np.einsum``.

    Each entry of a stack is one product of two floats, so torch and NumPy
    give it the same value. Only the sign of a zero can differ: ``torch.mul``
    gives -0.0 for a zero times a negative number, as IEEE multiplication
    does, where ``np.einsum`` adds the product to +0.0. On one thread, in
    float32 and float64, ``torch.mul`` wrote stacks of rows of 64 entries
    or more (``right``'s width) 1.1 to 2.2 times faster than ``np.einsum``
    once a stack had 32,768 entries or more. Below either size it ran up to
    1.5 times slower. resgrad never imports torch for this, and keeps
    ``np.einsum`` in a forked child process, under a torch function or
    dispatch mode, and wherever a torch call fails.
    """
    n, q = left.shape
    p = right.shape[1]
    if p < TORCH_STACK_ROW or n * q * p < TORCH_STACK_SIZE or _forked:
        return False
    torch = sys.modules.get("torch")
    if torch is None or not all(_torch_views(a) for a in (left, right, stack)):
        return False
    try:
        if _torch_modes_active(torch):
            return False
        torch.mul(
            torch.from_numpy(left[:, :, None]),
            torch.from_numpy(right[:, None, :]),
            out=torch.from_numpy(stack),
        )
    except Exception:  # noqa: BLE001
        # A partial torch module, or one whose NumPy bridge fails.
        return False
    return True


def _torch_modes_active(torch: Any) -> bool:
    """Return whether a torch function or dispatch mode is active in this
    thread. Such a mode, as ``FakeTensorMode``, can take ``torch.mul`` over
    without writing to its output."""
    c = torch._C
    return c._len_torch_function_stack() > 0 or c._len_torch_dispatch_stack() > 0


def _torch_views(array: np.ndarray) -> bool:
    """Return whether ``torch.from_numpy`` views ``array`` without a
    warning or an error: float32 or float64 in the machine's byte order,
    writable, with strides that are whole, non-negative multiples of the
    item size."""
    size = array.dtype.itemsize
    return (
        array.dtype.type in (np.float32, np.float64)
        and array.dtype.isnative
        and array.flags.writeable
        and all(stride >= 0 and stride % size == 0 for stride in array.strides)
    )


# Whether this process was forked from another. torch's thread pool does not
# survive a fork, and a parallel torch call in the child can wait forever for
# the parent's threads, so the child keeps np.einsum.
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# PyPy and other interpreters without reference counts have no getrefcount.
_COUNTS_REFERENCES = hasattr(sys, "getrefcount")


class SpareBuffer:
    """Two buffers, each handed out again once every array made from it is
    gone.

    Before a process first writes to a page, the kernel maps and zeroes it,
    and glibc returns a freed block of 32 MiB or more to the kernel at once.
    A loop that drops each result before the next call would therefore pay
    for fresh pages at every call. For the 48 MiB of per-sample stacks at
    width 64, 64 samples and 8 blocks in float64, a call took 7.8 ms that
    way and 4.3 ms with the buffer reused.

    A loop written ``g = f(...)`` holds the last result while the next call
    runs, so one buffer is never free when it is needed. Two buffers fill in
    turn there: the call takes the one that the result before last held.
    A call that finds both free uses one and lets the other go, so a loop
    that drops its results keeps one.

    ``take`` returns a view of a kept buffer when nothing else refers to
    it, which the reference count shows: every NumPy view, and every
    array or tensor made from one without a copy, holds a reference to it.
    Otherwise it allocates a new buffer and keeps that one in place of a
    free one, or else of the one handed out first. A request for less than
    half the smallest free buffer that fits gets an array of its own, so
    that a small result the caller keeps does not hold a large buffer.
    Each kept buffer has at most ``limit`` bytes. Interpreters without
    ``sys.getrefcount`` get a new array every time.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._buffers = [np.empty(0, dtype=np.uint8) for _ in range(2)]
        # The slot handed out last, which a new buffer replaces last.
        self._last = 1
        # An array that only this object refers to, through a list as the
        # buffers are. Its reference count, read the same way and at the
        # same moment as a buffer's, is the count of an unused buffer,
        # whatever the interpreter counts for the call itself.
        self._probe = [np.empty(0, dtype=np.uint8)]

    def _unused(self, slot: int) -> bool:
        return sys.getrefcount(self._buffers[slot]) == sys.getrefcount(self._probe[0])

    def take(self, size: int, dtype: np.dtype) -> np.ndarray:
        """Return a one-dimensional array of ``size`` entries of ``dtype``,
        with no other array sharing its memory."""
        dtype = np.dtype(dtype)
        nbytes = size * dtype.itemsize
        if nbytes > self.limit or not _COUNTS_REFERENCES:
            return np.empty(size, dtype=dtype)
        with self._lock:
            free = [slot for slot in range(2) if self._unused(slot)]
            fits = [slot for slot in free if self._buffers[slot].size >= nbytes]
            if fits:
                slot = min(fits, key=lambda s: self._buffers[s].size)
                if 2 * nbytes < self._buffers[slot].size:
                    return np.empty(size, dtype=dtype)
            else:
                slot = free[0] if free else 1 - self._last
                self._buffers[slot] = np.empty(nbytes, dtype=np.uint8)
            for other in free:
                if other != slot:
                    self._buffers[other] = np.empty(0, dtype=np.uint8)
            self._last = slot
            return self._buffers[slot][:nbytes].view(dtype)


def _repeats_elements(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Return whether an array of ``shape`` and ``strides`` reaches one element
    from two indices through a zero stride."""
    return any(step == 0 and n > 1 for n, step in zip(shape, strides))


# The size of the block that raise_reuse_limits allocates and frees.
REUSE_BLOCK_BYTES = 16 * 2**20

_reuse_limits_raised = False


def raise_reuse_limits() -> None:
    """Let the C allocator keep freed memory for reuse, once per process.

    glibc hands blocks of 128 KiB or more straight to the kernel, and gives
    the top of the heap back once more than 128 KiB of it is free. A forward
    pass keeps every block's arrays until the recurrence has used them, so
    each call grew the heap and gave it back, and the next call paid the
    kernel for fresh zeroed pages. ``resgrad.gradients`` in float64 took
    1.65 ms that way and 1.09 ms with the memory reused at width 64, 64
    samples and 8 blocks, and 60 ms and 45.6 ms at width and batch 256
    (``bench/bench_reuse.py``, medians). glibc raises both limits by itself
    when a program frees a block above them of up to 32 MiB, as importing
    PyTorch does. Freeing one of ``REUSE_BLOCK_BYTES`` raises them to 16 and
    32 MiB for the whole process, which may then keep up to 32 MiB of freed
    memory per allocator arena. Where the environment sets those limits,
    such as with ``MALLOC_TRIM_THRESHOLD_``, glibc keeps them. Other
    allocators only see a block allocated and freed.
    """
    global _reuse_limits_raised
    if not _reuse_limits_raised:
        _reuse_limits_raised = True
        # Never written, so the kernel maps only the page of glibc's header.
        np.empty(REUSE_BLOCK_BYTES, dtype=np.uint8)


def kernels(model: Any, *arrays: Array) -> Kernels:
    """Return the kernels for the namespace of ``model``'s weights.

    PyTorch's in-place kernels would break autograd's record of the graph,
    so while grad mode is on and a weight or one of ``arrays`` requires a
    gradient the array-API kernels are returned instead.
    """
    xp = model.xp
    if array_api_compat.is_numpy_namespace(xp):
        if not _reuse_limits_raised:
            raise_reuse_limits()
        return _NUMPY
    if not array_api_compat.is_torch_namespace(xp):
        return Kernels(xp)
    import torch

    device_type = getattr(model.device, "type", "cpu")
    if torch.is_autocast_enabled(device_type):
        # Autocast would run each product in its own dtype, which the
        # in-place kernels cannot mix with the model's.
        raise RuntimeError(
            f"resgrad computes in the model's dtype ({model.dtype}) and does "
            "not run under torch.autocast; call it outside the autocast block, "
            f"or inside torch.autocast({device_type!r}, enabled=False)."
        )
    if torch.is_grad_enabled() and (
        any(getattr(a, "requires_grad", False) for a in arrays)
        or any(
            value is not None and value.requires_grad
            for block in model.blocks
            for value in (block.W1, block.W2, block.W3, block.b1, block.b2)
        )
    ):
        return Kernels(xp)
    return TorchKernels(xp)


_NUMPY = NumpyKernels(array_api_compat.numpy)
