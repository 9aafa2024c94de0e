"""Fully connected residual networks.

A block maps ``a^{l-1}`` (width ``p_{l-1}``) to ``z^l`` (width ``p_l``)
through a hidden layer of width ``q_l``::

    u^l = W1 a^{l-1} + b1                 W1: (q_l, p_{l-1})
    h^l = g(u^l)
    z^l = W2 h^l + b2 + W3 a^{l-1}        W2: (p_l, q_l), W3: (p_l, p_{l-1})
    a^l = g_post(z^l) for l < L, and a^L = g_out(z^L)

The shortcut ``W3`` is a learned matrix, the fixed identity (not trained) or
absent, which makes the block plain. Arrays are stored as given, so a model
lives in one array namespace (NumPy, PyTorch, ...), on one device, in one
dtype; ``ResidualMLP.convert`` moves it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from . import _arrays, _kernels
from .activations import Activation, get_activation

Array = Any

SHORTCUTS = ("learned", "identity", "none")
INITIALIZERS = ("he", "glorot", "orthogonal")
PARAMETERS = ("W1", "W2", "W3", "b1", "b2")
# The end of the error for a NaN or infinite weight, which training leaves
# when it diverges.
WEIGHTS_FIX = (
    "a training that diverged leaves them, so load an earlier checkpoint or "
    "train again with a smaller learning rate"
)


class ForwardOverflowError(ValueError):
    """The forward pass left the range of the dtype: ``z^L`` is not finite."""


# eq=False: two models compare equal only when they are one object, since
# comparing their arrays elementwise gives no single truth value.
@dataclass(eq=False)
class Block:
    """One residual block ``z = W2 g(W1 a + b1) + b2 + W3 a``.

    Attributes:
        W1: input weights, shape ``(q, p_in)``.
        W2: output weights, shape ``(p_out, q)``.
        W3: learned shortcut, shape ``(p_out, p_in)``; ``None`` unless
            ``shortcut == "learned"``.
        b1: hidden bias, shape ``(q,)``, or ``None``.
        b2: output bias, shape ``(p_out,)``, or ``None``.
        shortcut: ``"learned"`` (``W3``), ``"identity"`` (``W3 = I``, fixed,
            needs ``p_out == p_in``) or ``"none"`` (``W3 = 0``). When left
            ``None`` it is ``"learned"`` if ``W3`` is given, else
            ``"identity"``.
    """

    W1: Array
    W2: Array
    W3: Array | None = None
    b1: Array | None = None
    b2: Array | None = None
    shortcut: str | None = None

    __repr__ = _arrays.summary_repr

    def __post_init__(self) -> None:
        if self.shortcut is None:
            self.shortcut = "identity" if self.W3 is None else "learned"
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"Unknown shortcut {self.shortcut!r}; expected one of: "
                f"{', '.join(SHORTCUTS)}."
            )
        if self.shortcut == "learned" and self.W3 is None:
            raise ValueError("A block with shortcut='learned' needs a W3 matrix.")
        if self.shortcut != "learned" and self.W3 is not None:
            raise ValueError(
                f"A block with shortcut={self.shortcut!r} takes no W3; pass "
                "shortcut='learned' to train the shortcut matrix."
            )
        self._check_shapes()

    def _check_shapes(self) -> None:
        for name in ("W1", "W2"):
            if getattr(self, name) is None:
                raise ValueError(f"A block needs a {name} matrix, got None.")
        for name in PARAMETERS:
            value = getattr(self, name)
            rank = 2 if name.startswith("W") else 1
            if value is None or getattr(value, "ndim", None) == rank:
                continue
            kind = "a matrix" if rank == 2 else "a vector"
            shape = getattr(value, "shape", None)
            if shape is None:
                raise ValueError(
                    f"Expected {name} to be {kind}, got {type(value).__name__}; "
                    f"pass an array, such as np.asarray({name}) or "
                    f"torch.as_tensor({name})."
                )
            raise ValueError(f"Expected {name} to be {kind}, got {tuple(shape)}.")
        q, p_in = self.W1.shape
        p_out = self.W2.shape[0]
        if self.W2.shape[1] != q:
            raise ValueError(
                f"Expected W2 to have {q} columns, one per row of W1 "
                f"{tuple(self.W1.shape)}, got W2 of shape {tuple(self.W2.shape)}."
            )
        expected = {
            "W3": (p_out, p_in),
            "b1": (q,),
            "b2": (p_out,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"Expected {name} of shape {shape} to match W1 {(q, p_in)} "
                    f"and W2 {tuple(self.W2.shape)}, got {tuple(value.shape)}."
                )
        if self.shortcut == "identity" and p_out != p_in:
            raise ValueError(
                f"An identity shortcut needs equal widths, got {p_in} in and "
                f"{p_out} out; use shortcut='learned' for a projection."
            )

    @property
    def in_features(self) -> int:
        return self.W1.shape[1]

    @property
    def hidden_features(self) -> int:
        return self.W1.shape[0]

    @property
    def out_features(self) -> int:
        return self.W2.shape[0]

    def arrays(self) -> dict[str, Array]:
        """Return the trainable arrays by name, leaving out absent ones."""
        values = {name: getattr(self, name) for name in PARAMETERS}
        return {name: value for name, value in values.items() if value is not None}


def _replace_message(
    index: int, block: Block, changes: dict[str, Array], error: ValueError
) -> str:
    """Return ``error`` of block ``index`` prefixed with the arrays that
    ``replace_arrays`` gave it, and the shapes of those they replace where
    the shapes differ."""
    parts, reshaped = [], False
    for name, value in changes.items():
        part = f"blocks.{index}.{name}"
        before, shape = getattr(block, name), getattr(value, "shape", None)
        if (
            before is not None
            and shape is not None
            and tuple(before.shape) != tuple(shape)
        ):
            reshaped = True
            part += (
                f" (shape {tuple(shape)}, where the array it replaces has "
                f"{tuple(before.shape)})"
            )
        parts.append(part)
    message = f"Block {index}, after replacing {', '.join(parts)}: {error}"
    if reshaped:
        message += " Or pass arrays of the shapes they replace."
    return message


class BlockTrace(NamedTuple):
    """The intermediate values of one block on a batch, rows being samples.

    ``a_prev`` is ``a^{l-1}`` (n, p_{l-1}), ``u`` is ``W1 a + b1`` (n, q_l),
    ``h`` is ``g(u)`` (n, q_l) and ``z`` is the block output (n, p_l).
    """

    a_prev: Array
    u: Array
    h: Array
    z: Array

    __repr__ = _arrays.summary_repr


@dataclass(eq=False)
class ResidualMLP:
    """A stack of residual blocks with one activation between them.

    Methods that return a model (``replace_arrays``, ``convert``) share every
    array they do not change with the model they start from, and nothing in
    resgrad writes into a model's arrays. Copy an array before updating it in
    place, or the update shows in both models.

    A model checks the shapes, dtypes, devices and values of its arrays when
    it is made and in ``replace_arrays``. Assigning an array to a block's
    attribute, or writing into one in place, skips those checks. A wrong
    shape or dtype then fails later with a less clear message, so pass new
    arrays through ``replace_arrays`` instead.

    Attributes:
        blocks: the blocks ``B_1 .. B_L``; block ``l`` reads the output width
            of block ``l - 1``.
        activation: ``g`` inside each block, ``h = g(u)``.
        post_activation: applied to ``z^l`` for ``l < L``; ``None`` means
            ``activation``, as in the manuscript's network.
        output_activation: applied to the logits ``z^L``; ``"identity"``
            (the default) or ``activation`` (the manuscript's ``a^L = g(z^L)``).
    """

    blocks: list[Block]
    activation: str = "relu"
    post_activation: str | None = None
    output_activation: str = "identity"
    _xp: Any = field(default=None, init=False, repr=False, compare=False)

    __repr__ = _arrays.summary_repr

    def __post_init__(self) -> None:
        self.blocks = list(self.blocks)
        if not self.blocks:
            raise ValueError("A ResidualMLP needs at least one block.")
        for block in self.blocks:
            if not isinstance(block, Block):
                raise TypeError(
                    f"Expected Block instances, got {type(block).__name__}."
                )
        if self.post_activation is None:
            self.post_activation = self.activation
        for role in ("activation", "post_activation", "output_activation"):
            name = getattr(self, role)
            try:
                get_activation(name)
            except ValueError as error:
                raise ValueError(f"{role}: {error}") from None
        self._check_chain()
        self._xp = self._weights_namespace()
        self._check_dtypes()

    def __getstate__(self) -> dict[str, Any]:
        # The namespace is a module, which pickle cannot store; it is found
        # again from the weights when the model is loaded.
        return {**self.__dict__, "_xp": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._xp = self._weights_namespace()

    def _check_chain(self) -> None:
        for index in range(1, len(self.blocks)):
            width = self.blocks[index - 1].out_features
            reads = self.blocks[index].in_features
            if width != reads:
                raise ValueError(
                    f"Block {index - 1} outputs {width} features but block "
                    f"{index} reads {reads}; the widths must chain."
                )

    def _weights_namespace(self) -> Any:
        """Return the array namespace of the weights, or raise a TypeError
        that names a weight of another namespace than the first one."""
        arrays = self.arrays()
        try:
            return _arrays.namespace(*arrays.values())
        except TypeError:
            (first, kind), *others = (
                (name, _arrays.type_name(a)) for name, a in arrays.items()
            )
            odd = [(n, k) for n, k in others if k != kind]
            subclass = _arrays.REJECTED_SUBCLASSES
            if not odd or any(isinstance(a, subclass) for a in arrays.values()):
                # No second namespace, or a NumPy subclass that namespace
                # rejects with its own fix.
                raise
            name, other = odd[0]
            raise TypeError(
                f"Expected every weight in one array namespace, got {first} as "
                f"{kind} and {name} as {other}; convert that array to the "
                "others' type (e.g. np.asarray or torch.as_tensor) before "
                "replacing it, or build the model in one namespace and move it "
                "with model.convert."
            ) from None

    def _check_dtypes(self) -> None:
        xp = self._xp
        dtypes = {str(a.dtype) for a in self.arrays().values()}
        if len(dtypes) != 1:
            raise TypeError(
                f"Expected all weights in one dtype, got {sorted(dtypes)}; "
                "cast them to one floating dtype."
            )
        for name, value in self.arrays().items():
            if not _arrays.is_floating(xp, value):
                raise TypeError(
                    f"Expected floating weights, got {name} of dtype {value.dtype}."
                )
            if getattr(value.dtype, "byteorder", "=") not in ("=", "|"):
                # The inputs must then be big-endian too, which check_input
                # rejects, so such a model could take no input.
                raise TypeError(
                    f"Expected weights in the machine's byte order, got {name} of "
                    f"dtype {value.dtype.str}; convert each weight w with "
                    "w.astype(w.dtype.newbyteorder('='))."
                )
            _arrays.check_finite(xp, value, name, WEIGHTS_FIX)

    # Shape and placement.

    def _namespace_with(
        self,
        *arrays: Array,
        names: Sequence[str] = ("x", "y", "target"),
        labels: Sequence[str] = ("y", "target"),
        float_targets: bool = False,
    ) -> Any:
        """Return the namespace shared by the weights and ``arrays``.

        Raises a TypeError naming both namespaces, e.g. a NumPy model and a
        torch ``x``, before any operation fails with a less clear message.
        ``names`` name the ``arrays`` in it, and ``labels`` and
        ``float_targets`` say what a list among them should become, as
        ``_arrays.namespace`` describes. The model checked at
        construction that its arrays share one namespace, so its first
        weight stands for all of them. A 100-block model would otherwise
        cost a lookup over 600 arrays per call.
        """
        weight = self.blocks[0].W1
        try:
            return _arrays.namespace(
                weight,
                *arrays,
                names=("blocks.0.W1", *names[: len(arrays)]),
                labels=labels,
                float_targets=float_targets,
            )
        except TypeError as error:
            compat = _arrays.array_api_compat
            weights = compat.array_namespace(weight)
            odd = []
            for name, a in zip(names, arrays):
                if a is None:
                    continue
                try:
                    other = compat.array_namespace(a)
                except TypeError:
                    # No array at all, which the first message names.
                    raise error from None
                if other is not weights:
                    odd.append((name, _arrays.type_name(a)))
            if not odd:
                raise
            # The namespace's own name, not the weight's type, which can be a
            # subclass such as torch.nn.Parameter.
            kind = weights.__name__.removeprefix("array_api_compat.")
            listed = ", ".join(f"{name} as a {found}" for name, found in odd)
            them, they = ("it", "it is") if len(odd) == 1 else ("them", "they are")
            raise TypeError(
                f"Expected arrays in the model's namespace, {kind}, got {listed}; "
                f"convert {them} (e.g. np.asarray or torch.as_tensor), or, if "
                f"{they} in the namespace you want, the model with "
                "model.convert(like=x)."
            ) from None

    @property
    def xp(self) -> Any:
        """The array namespace of the weights."""
        return self._xp

    @property
    def dtype(self) -> Any:
        return self.blocks[0].W1.dtype

    @property
    def device(self) -> Any:
        return _arrays.array_api_compat.device(self.blocks[0].W1)

    @property
    def depth(self) -> int:
        """The number of blocks ``L``."""
        return len(self.blocks)

    @property
    def sizes(self) -> list[int]:
        """The widths ``[p_0, p_1, ..., p_L]``."""
        return [self.blocks[0].in_features] + [b.out_features for b in self.blocks]

    @property
    def hidden(self) -> list[int]:
        """The hidden widths ``[q_1, ..., q_L]``."""
        return [b.hidden_features for b in self.blocks]

    @property
    def n_classes(self) -> int:
        return self.blocks[-1].out_features

    def activations(self) -> tuple[Activation, Activation, Activation]:
        """Return ``(g, g_post, g_out)`` as ``Activation`` objects."""
        return (
            get_activation(self.activation),
            get_activation(self.post_activation),
            get_activation(self.output_activation),
        )

    # Parameters.

    def arrays(self) -> dict[str, Array]:
        """Return every trainable array, keyed ``"blocks.<l>.<name>"``; these
        are the model's own arrays, not copies."""
        return {
            f"blocks.{index}.{name}": value
            for index, block in enumerate(self.blocks)
            for name, value in block.arrays().items()
        }

    def replace_arrays(self, arrays: dict[str, Array]) -> ResidualMLP:
        """Return a new model whose arrays are taken from ``arrays`` by key.

        Keys are those of ``arrays()``; a key left out keeps its array, and
        a bias given as ``None`` is removed. No array is copied: the new model
        uses the arrays given and shares the ones kept.
        """
        unknown = set(arrays) - set(self.arrays())
        if unknown:
            raise ValueError(f"Unknown parameter names: {sorted(unknown)}.")
        for key, value in arrays.items():
            if value is None and key.rsplit(".", 1)[-1] in ("W1", "W2", "W3"):
                raise ValueError(
                    f"Expected an array for {key}, got None; only a bias (b1, "
                    "b2) can be removed with None."
                )
        blocks = []
        for index, block in enumerate(self.blocks):
            changes = {
                name: arrays[f"blocks.{index}.{name}"]
                for name in PARAMETERS
                if f"blocks.{index}.{name}" in arrays
            }
            try:
                blocks.append(replace(block, **changes))
            except ValueError as error:
                raise ValueError(
                    _replace_message(index, block, changes, error)
                ) from None
        return replace(self, blocks=blocks)

    def _with_arrays(self, arrays: dict[str, Array]) -> ResidualMLP:
        """Return ``replace_arrays(arrays)`` without its checks.

        Only for arrays of the keys, shapes, dtype and device of this
        model's own, as resgrad's optimizers make them. A caller that passes
        arrays of another namespace, as the NumPy route does with views of
        tensors, sets ``_xp`` afterwards. Without the checks, five epochs of
        ``fit`` on the digits ran 16% to 17% faster, with three blocks of
        width 64.
        """
        blocks = []
        for index, block in enumerate(self.blocks):
            new = object.__new__(type(block))
            new.__dict__.update(block.__dict__)
            for name in PARAMETERS:
                key = f"blocks.{index}.{name}"
                if key in arrays:
                    new.__dict__[name] = arrays[key]
            blocks.append(new)
        model = object.__new__(type(self))
        model.__dict__.update(self.__dict__)
        model.blocks = blocks
        return model

    def config(self) -> dict[str, Any]:
        """Return the architecture as a JSON-serialisable dict."""
        return {
            "sizes": self.sizes,
            "hidden": self.hidden,
            "activation": self.activation,
            "post_activation": self.post_activation,
            "output_activation": self.output_activation,
            "shortcuts": [b.shortcut for b in self.blocks],
            "biases": [[b.b1 is not None, b.b2 is not None] for b in self.blocks],
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def convert(
        self,
        xp: Any = None,
        *,
        dtype: Any = None,
        device: Any = None,
        like: Array = None,
    ) -> ResidualMLP:
        """Return a new model with every array moved to a namespace, dtype and
        device.

        An array that moves to another namespace is copied. One that is already
        in the target namespace, dtype and device is shared, as ``xp.asarray``
        shares it, so ``convert()`` with no arguments returns a model that
        shares every array.

        Args:
            xp: the target array namespace (e.g. ``numpy`` or ``torch``);
                defaults to the namespace of ``like``, else the current one.
            dtype: the target dtype, a dtype object of ``xp`` or a name such
                as ``"float32"``; defaults to that of ``like``, else unchanged.
                float16 and bfloat16 also run, but every product rounds to 3
                or 2 significant digits, so their gradients can be off by
                several percent; use float32 or float64 to trust them. A
                loss summed past 65504, the largest float16, is ``inf``, as
                in PyTorch, though its gradients stay finite.
            device: the target device; defaults to that of ``like``.
            like: an array whose namespace, dtype and device to adopt.
        """
        if like is not None:
            xp = xp or _arrays.namespace(like)
            dtype = dtype if dtype is not None else like.dtype
            device = (
                device if device is not None else _arrays.array_api_compat.device(like)
            )
        if xp is not None and not callable(getattr(xp, "asarray", None)):
            raise TypeError(
                f"Expected xp as an array module such as numpy or torch, got "
                f"{xp!r}; pass the module itself (import torch; xp=torch)."
            )
        xp = (
            _arrays.array_api_compat.array_namespace(xp.asarray(0.0)) if xp else self.xp
        )
        namespace = xp.__name__.rsplit(".", 1)[-1]
        if isinstance(dtype, str):
            name = dtype
            dtype = getattr(xp, name, None)
            if dtype is None or not _arrays.is_dtype(xp, dtype, "real floating"):
                raise ValueError(
                    f"Expected the name of a floating dtype of {namespace}, such "
                    f"as 'float32' or 'float64', got {name!r}."
                )
        elif dtype is not None and not _arrays.is_dtype(xp, dtype, "real floating"):
            # Such as a torch dtype for NumPy arrays, which NumPy cannot read.
            raise TypeError(
                f"Expected a floating dtype of {namespace} or its name, such as "
                f"'float32', got {dtype!r}."
            )
        source = str(self.dtype).rsplit(".", 1)[-1]
        if dtype is None and getattr(xp, source, None) is None:
            raise TypeError(
                f"{namespace} has no {source} dtype to hold this model's arrays; "
                "pass a dtype it has, such as dtype='float32'."
            )
        converted = {}
        for name, value in self.arrays().items():
            try:
                value = _to_namespace(value, xp, device)
            except (AssertionError, RuntimeError, TypeError, ValueError) as error:
                # torch raises NotImplementedError, a RuntimeError, or an
                # AssertionError for a device it was built without.
                if device is None or type(error).__name__.endswith("OutOfMemoryError"):
                    # torch's OutOfMemoryError is a RuntimeError on a valid
                    # device, whose fix is not another device.
                    raise
                reason = (str(error).splitlines() or [type(error).__name__])[0]
                raise ValueError(
                    f"Cannot place the model's arrays on device {device!r} of "
                    f"{namespace} ({reason}); pass a device that {namespace} "
                    "has, such as 'cpu'."
                ) from error
            if dtype is not None:
                value = xp.astype(value, dtype, copy=False)
            converted[name] = value
        return self.replace_arrays(converted)

    # Evaluation.

    def trace(self, x: Array) -> tuple[list[BlockTrace], Array]:
        """Run the network on ``x`` (n, p_0) and keep every intermediate value.

        Returns:
            ``(traces, a_L)``: one ``BlockTrace`` per block and the output
            ``a^L = g_out(z^L)`` of shape ``(n, p_L)``.
        """
        self._namespace_with(x)
        self._check_device(x)
        _arrays.check_input(self.xp, x, self.sizes[0], self.dtype)
        return self._forward(x)

    def _forward(
        self,
        x: Array,
        prepared: list[tuple[Array | None, ...]] | None = None,
        ops: _kernels.Kernels | None = None,
    ) -> tuple[list[BlockTrace], Array]:
        """Run ``trace`` on an ``x`` that the caller has already checked.

        ``prepared`` is ``_prepared(n)`` of this model for the ``n`` rows of
        ``x``, for a caller that runs the forward pass many times on
        unchanged weights. ``ops`` are the kernels of the call, looked up
        when not given.
        """
        xp = self.xp
        if ops is None:
            ops = _kernels.kernels(self, x)
        if prepared is None:
            prepared = [
                (b.W1.T, b.b1, b.W2.T, b.b2, None if b.W3 is None else b.W3.T)
                for b in self.blocks
            ]
        g, g_post, g_out = self.activations()
        traces = []
        a = x
        last = len(self.blocks) - 1
        # An overflow shows up as a non-finite z^L, checked below, so NumPy's
        # own overflow warnings would only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            for index, block in enumerate(self.blocks):
                w1, b1, w2, b2, w3 = prepared[index]
                u = ops.linear(a, w1, b1)
                h = ops.activate(g, u)
                z = ops.linear(h, w2, b2)
                if block.shortcut == "learned":
                    z = ops.add_product(z, a, w3)
                elif block.shortcut == "identity":
                    z = ops.add(z, a)
                traces.append(BlockTrace(a, u, h, z))
                a = ops.activate(g_out if index == last else g_post, z)
        if not _arrays.all_finite(xp, traces[-1].z):
            raise ForwardOverflowError(self._overflow_message(xp, traces))
        return traces, a

    def _prepared(self, rows: int) -> list[tuple[Array | None, ...]]:
        """Return ``(W1.T, b1, W2.T, b2, W3.T)`` of each block in the layout
        that the forward pass on ``rows`` samples computes fastest (``None``
        for an absent array)."""
        ops = _kernels.kernels(self)
        return [
            (
                ops.transpose(b.W1),
                ops.bias_rows(b.b1, rows),
                ops.transpose(b.W2),
                ops.bias_rows(b.b2, rows),
                None if b.W3 is None else ops.transpose(b.W3),
            )
            for b in self.blocks
        ]

    def _non_finite_array(self) -> str | None:
        """Return the name of the first array that contains NaN or Inf, or
        ``None``. The model checks its arrays when made, so only one written
        in place since can."""
        for name, value in self.arrays().items():
            if not _arrays.all_finite(self.xp, value):
                return name
        return None

    def _overflow_message(self, xp: Any, traces: list[BlockTrace]) -> str:
        # A weight written in place after the model was made can hold NaN or
        # Inf, and then nothing overflowed.
        name = self._non_finite_array()
        if name is not None:
            return (
                f"The logits z^L are not finite because the model's {name} "
                "holds NaN or Inf values; load or initialise the model "
                "again, or replace that array with replace_arrays."
            )
        block = next(
            index
            for index, trace in enumerate(traces)
            if not bool(xp.all(xp.isfinite(trace.u)))
            or not bool(xp.all(xp.isfinite(trace.z)))
        )
        wider = "" if self.dtype == self.xp.float64 else ", or use float64"
        return (
            f"The forward pass overflowed {self.dtype} in block {block + 1} of "
            f"{self.depth} (counting from 1): the logits z^L are not finite. "
            f"Scale the inputs or the weights down{wider}."
        )

    def _check_device(self, x: Array) -> None:
        """Raise ``ValueError`` if ``x`` is not on the model's device, and
        ``TypeError`` if it is a JAX tracer."""
        _arrays.check_concrete(x)
        # Before the device test, because its advice to move the model to
        # x's device fails for the meta device: convert rejects it.
        _arrays.check_not_meta(x, "x")
        device = _arrays.array_api_compat.device(x)
        if device != self.device:
            raise ValueError(
                f"Expected x on the model's device {self.device}, got x on "
                f"{device}; move x there, or the model with "
                "model.convert(device=...)."
            )

    def logits(self, x: Array) -> Array:
        """Return ``z^L`` of shape ``(n, p_L)``, the scores before ``g_out``."""
        traces, _ = self.trace(x)
        return traces[-1].z

    def __call__(self, x: Array) -> Array:
        """Return the network output ``a^L`` of shape ``(n, p_L)``."""
        return self.trace(x)[1]

    def predict(self, x: Array) -> Array:
        """Return the class of highest probability ``softmax(a^L)`` per row,
        shape ``(n,)``; for every output activation but silu that is
        ``argmax_k z^L_k``."""
        return self.xp.argmax(self._class_scores(*self.trace(x)), axis=1)

    def _class_scores(self, traces: list[BlockTrace], a_L: Array) -> Array:
        """Return the scores ``(n, p_L)`` whose order is that of the class
        probabilities ``softmax(a^L)``.

        They are ``z^L`` for an output activation that never decreases, which
        is every one but silu. ``z^L`` has the order of ``a^L`` there, and it
        also breaks the ties that relu makes in ``a^L`` among negative logits.
        silu can swap two classes, so with it the scores are ``a^L``.
        """
        return traces[-1].z if self.activations()[2].monotone else a_L

    # Construction.

    @classmethod
    def init(
        cls,
        sizes: Sequence[int],
        hidden: int | Sequence[int] | None = None,
        *,
        activation: str = "relu",
        post_activation: str | None = None,
        output_activation: str = "identity",
        shortcut: str | Sequence[str] = "learned",
        init: str = "he",
        alpha: float = 1.0,
        bias: bool = True,
        seed: int | np.random.Generator | None = 0,
        dtype: str = "float64",
        xp: Any = None,
        device: Any = None,
    ) -> ResidualMLP:
        """Create a network with random weights.

        Args:
            sizes: the widths ``[p_0, p_1, ..., p_L]``; ``L = len(sizes) - 1``.
                Each is a Python or NumPy integer. Floats, bools and strings
                raise ``TypeError``.
            hidden: the hidden widths ``q_l``: one int for all blocks, a list
                of ``L`` ints, or ``None`` for ``q_l = p_l``.
            shortcut: ``"learned"``, ``"identity"`` or ``"none"`` for every
                block, or a list of ``L`` of them, one per block.
            init: ``"he"`` (``N(0, 2 / fan_in)``), ``"glorot"``
                (``N(0, 2 / (fan_in + fan_out))``) or ``"orthogonal"``
                (``sqrt(2)`` times a random (semi-)orthogonal matrix).
            alpha: the residual-branch scale: ``W2`` is drawn and then
                multiplied by ``alpha``, so ``alpha = 1 / sqrt(L)`` damps deep
                networks and ``alpha = 0`` makes every branch start at zero.
            bias: whether the blocks have ``b1`` and ``b2`` (drawn as zeros).
            seed: an int or a NumPy ``Generator``; the same seed gives the
                same weights in every namespace and dtype.
            dtype, xp, device: where the weights live (NumPy float64 by
                default).
        """
        sizes = _check_widths("sizes", sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(
                f"Expected sizes [p_0, ..., p_L] of at least two positive widths, "
                f"got {sizes}."
            )
        depth = len(sizes) - 1
        one_width = _as_int(hidden)
        if hidden is None:
            hidden = sizes[1:]
        elif one_width is not None:
            hidden = [one_width] * depth
        else:
            expected = f"an int, a list of {depth} ints or None"
            hidden = _check_widths(
                "hidden", hidden, expected, "pass the hidden widths as ints"
            )
        if len(hidden) != depth or min(hidden) < 1:
            raise ValueError(
                f"Expected {depth} positive hidden {'width' if depth == 1 else 'widths'}, "
                f"one per block, got {hidden}."
            )
        if init not in INITIALIZERS:
            raise ValueError(
                f"Unknown init {init!r}; expected one of: {', '.join(INITIALIZERS)}."
            )
        alpha = _arrays.check_number("alpha", alpha)
        _arrays.check_flag("bias", bias)
        shortcuts = [shortcut] * depth if isinstance(shortcut, str) else list(shortcut)
        if len(shortcuts) != depth:
            raise ValueError(
                f"Expected {depth} shortcuts, one per block, got {len(shortcuts)}."
            )
        rng = _arrays.generator(seed)

        blocks = []
        for p_in, q, p_out, kind in zip(sizes[:-1], hidden, sizes[1:], shortcuts):
            W3 = _draw(rng, init, p_out, p_in) if kind == "learned" else None
            blocks.append(
                Block(
                    W1=_draw(rng, init, q, p_in),
                    W2=alpha * _draw(rng, init, p_out, q),
                    W3=W3,
                    b1=np.zeros(q) if bias else None,
                    b2=np.zeros(p_out) if bias else None,
                    shortcut=kind,
                )
            )
        model = cls(blocks, activation, post_activation, output_activation)
        return model.convert(xp, dtype=dtype, device=device)


def _as_int(value: Any) -> int | None:
    """Return ``value`` as an int if it is a Python or NumPy integer (bools
    excluded), else ``None``."""
    if isinstance(value, bool | np.bool_):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_widths(
    name: str,
    values: Any,
    expected: str = "a list of ints",
    fix: str = "pass one int per width, such as [64, 32, 10]",
) -> list[int]:
    """Return the widths in ``values`` as ints.

    Raises:
        TypeError: if ``values`` is a string or not iterable, with a message
            naming the ``expected`` types and the ``fix``, or if it contains
            a value that is not an integer, such as a float or a bool.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"Expected {name} to be {expected}, got {values!r}; {fix}.")
    values = list(values)
    widths = []
    for value in values:
        width = _as_int(value)
        if width is None:
            raise TypeError(
                f"Expected {name} to contain only ints, got {value!r} in "
                f"{values!r}; pass each width as an int."
            )
        widths.append(width)
    return widths


def _draw(rng: np.random.Generator, init: str, rows: int, cols: int) -> np.ndarray:
    if init == "he":
        return rng.standard_normal((rows, cols)) * math.sqrt(2.0 / cols)
    if init == "glorot":
        return rng.standard_normal((rows, cols)) * math.sqrt(2.0 / (rows + cols))
    # A QR factor of a Gaussian matrix, sign-corrected, is Haar-distributed.
    gaussian = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return math.sqrt(2.0) * q


def _to_namespace(value: Array, xp: Any, device: Any) -> Array:
    """Copy ``value`` into namespace ``xp``, through NumPy when they differ.

    Across namespaces the result never shares memory with ``value``, so an
    in-place update in one namespace (a torch optimizer step) cannot change
    the other, and a read-only buffer (JAX) never becomes writable.
    """
    compat = _arrays.array_api_compat
    if compat.array_namespace(value) is xp:
        return value if device is None else compat.to_device(value, device)
    host = _arrays.to_numpy(value)
    if any(step < 0 for step in host.strides):
        # torch.asarray rejects negative strides, even to copy.
        host = np.ascontiguousarray(host)
    if device is None:
        return xp.asarray(host, copy=True)
    return xp.asarray(host, device=device, copy=True)
