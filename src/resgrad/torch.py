"""Moving networks between resgrad and PyTorch.

- ``to_module(model)`` builds a ``torch.nn.Module`` whose forward pass equals
  ``ResidualMLP.__call__``, so a resgrad network plugs into PyTorch tools
  (autograd, torch.optim, torchattacks, Captum).
- ``from_module(module)`` reads a ``ResidualMLP`` back from a
  ``TorchResidualMLP`` or from any module whose forward pass is a chain of
  Linear-activation-Linear blocks with an identity, learned or no shortcut.
- ``ExplicitGradient``, ``explicit_forward`` and ``ExplicitResidualMLP`` run
  the forward pass inside PyTorch autograd but compute the backward pass
  with resgrad's recurrence, so ``loss.backward()`` fills every ``.grad``
  with the closed-form gradients and any ``torch.optim`` optimizer can step.
- ``use_numpy_on_cpu(False)`` keeps resgrad's calls on CPU tensors on the
  torch kernels, which by default run through NumPy outside autograd.

Importing this module needs PyTorch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    import torch
except ModuleNotFoundError as error:
    if error.name != "torch":
        raise
    raise ModuleNotFoundError(
        "resgrad.torch needs PyTorch, which is not installed; install it, for "
        'example with pip install "resgrad[torch]".',
        name="torch",
    ) from error
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from . import _arrays, _numpy_route
from .activations import ACTIVATIONS, LEAKY_RELU_SLOPE
from .gradients import backward
from .model import Block, BlockTrace, ResidualMLP

__all__ = [
    "ExplicitGradient",
    "ExplicitResidualMLP",
    "TorchBlock",
    "TorchResidualMLP",
    "explicit_forward",
    "from_module",
    "to_module",
    "use_numpy_on_cpu",
]

_FUNCTIONS = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, LEAKY_RELU_SLOPE),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    # F.softplus returns x itself above x = 20, which is off by
    # log1p(exp(-x)) ~ 2e-9; logaddexp is exact and stable everywhere.
    "softplus": lambda t: torch.logaddexp(t, torch.zeros_like(t)),
    "elu": F.elu,
    "silu": F.silu,
}


def use_numpy_on_cpu(enabled: bool | str) -> bool | str:
    """Choose how resgrad computes on CPU tensors that autograd does not
    record, and return the previous choice.

    With ``True`` (the default), ``gradients``, ``input_gradient``,
    ``input_jacobian``, ``per_sample_gradients``, ``per_sample_norms`` and
    the attacks run their NumPy code on views of the tensors' memory and
    return tensors, and so does ``fit`` with resgrad's own optimizers. On
    the CPUs where this was measured, NumPy's BLAS multiplied small
    matrices faster than the one in PyTorch's CPU build, and its calls
    cost less dispatch. Those calls use NumPy's BLAS threads,
    which ``torch.set_num_threads`` does not set. Where PyTorch's BLAS is
    MKL, NumPy's is not, and the CPU is Intel's, MKL multiplied large
    matrices faster. There calls with 8 rows or more, on models whose
    largest weight has 128 x 128 entries or more, keep the torch kernels,
    except ``per_sample_gradients``. With ``"always"`` every such call runs
    on NumPy, whatever its size, where that rule picks wrongly: on another
    machine, or with a NumPy whose BLAS was swapped for MKL after it was
    built.

    With ``False`` they run resgrad's torch kernels, in every thread. GPU
    tensors, calls that autograd records, dtypes other than float32 and
    float64, tensor subclasses, ``torch.autocast`` and ``torch.func``
    transforms always run on torch.

    Example:
        >>> import resgrad.torch
        >>> previous = resgrad.torch.use_numpy_on_cpu(False)
        >>> resgrad.torch.use_numpy_on_cpu(previous)
        False
    """
    return _numpy_route.set_enabled(enabled)


# The smallest nn.Softplus threshold that from_module accepts. Above it torch
# returns x instead of log(1 + e^x), an absolute error of at most
# log1p(exp(-threshold)), which is 2.1e-9 for 20.
SOFTPLUS_MIN_THRESHOLD = 20.0


class TorchBlock(nn.Module):
    """One residual block ``z = W2 g(W1 a + b1) + b2 + W3 a`` in PyTorch."""

    def __init__(
        self, linear1: nn.Linear, linear2: nn.Linear, shortcut: Any, activation: str
    ):
        super().__init__()
        self.linear1 = linear1
        self.linear2 = linear2
        # An nn.Linear (learned), nn.Identity (identity) or None (plain).
        self.shortcut = shortcut
        self.activation = activation

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"

    def forward(
        self, a: torch.Tensor, functions: dict[str, Callable] | None = None
    ) -> torch.Tensor:
        """Return ``z`` for rows ``a``, with the activation that ``functions``
        maps the block's activation name to (by default PyTorch's own)."""
        functions = _FUNCTIONS if functions is None else functions
        z = self.linear2(functions[self.activation](self.linear1(a)))
        if self.shortcut is not None:
            z = z + self.shortcut(a)
        return z


class TorchResidualMLP(nn.Module):
    """A stack of ``TorchBlock``s with the activations of a ``ResidualMLP``."""

    def __init__(
        self, blocks: list[TorchBlock], post_activation: str, output_activation: str
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.post_activation = post_activation
        self.output_activation = output_activation

    def extra_repr(self) -> str:
        return (
            f"post_activation={self.post_activation!r}, "
            f"output_activation={self.output_activation!r}"
        )

    def logits(
        self, x: torch.Tensor, functions: dict[str, Callable] | None = None
    ) -> torch.Tensor:
        """Return ``z^L``, the last block's output before ``g_out``.

        ``functions`` maps each activation name to the function applied, so
        a caller can swap in another formula for one of them; by default
        PyTorch's own.
        """
        functions = _FUNCTIONS if functions is None else functions
        try:
            a = x
            for index, block in enumerate(self.blocks):
                z = block(a, functions)
                if index < len(self.blocks) - 1:
                    a = functions[self.post_activation](z)
        except RuntimeError:
            # Checked only after torch's error, because reading the weights'
            # dtype through the submodules took 3.4 us a call.
            mismatch = _dtype_mismatch(self, x)
            if mismatch is not None:
                raise TypeError(mismatch) from None
            features = self.blocks[0].linear1.in_features
            if isinstance(x, torch.Tensor) and x.ndim and x.shape[-1] != features:
                raise ValueError(
                    f"Expected x to have {features} features (the module's input "
                    f"width), got {x.shape[-1]}."
                ) from None
            raise
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FUNCTIONS[self.output_activation](self.logits(x))

    def named_arrays(self) -> dict[str, torch.Tensor]:
        """Return the parameters keyed as ``ResidualMLP.arrays()``."""
        names = {"linear1.weight": "W1", "linear1.bias": "b1", "linear2.weight": "W2"}
        names.update({"linear2.bias": "b2", "shortcut.weight": "W3"})
        return {
            f"blocks.{index}.{names[name]}": value
            for index, block in enumerate(self.blocks)
            for name, value in block.named_parameters()
        }


def _dtype_mismatch(module: TorchResidualMLP, x: Any) -> str | None:
    """Return the message for a tensor ``x`` of another dtype than the
    module's weights, which torch's own error names without the module or
    the fix, or ``None`` when the dtypes match."""
    dtype = module.blocks[0].linear1.weight.dtype
    if not isinstance(x, torch.Tensor) or x.dtype == dtype:
        return None
    fix = f"cast x with x.to({dtype})"
    if x.is_floating_point():
        fix += f", or the module with module.to({x.dtype})"
    return f"Expected x of dtype {dtype} (the module's dtype), got {x.dtype}; {fix}."


# resgrad to PyTorch.


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out_features, in_features = weight.shape
    # skip_init makes the layer without its random initialisation, which
    # would draw from torch's global generator only to be overwritten.
    layer = torch.nn.utils.skip_init(
        nn.Linear,
        in_features,
        out_features,
        bias=bias is not None,
        dtype=weight.dtype,
        device=weight.device,
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def to_module(model: ResidualMLP, *, explicit: bool = False) -> TorchResidualMLP:
    """Return a ``torch.nn.Module`` with copies of ``model``'s weights.

    The module's dtype and device are those of the model's arrays; arrays
    of another namespace (NumPy, JAX, ...) land on the CPU. Its output is
    ``a^L``, equal to ``model(x)``, and ``module.logits(x)`` is ``z^L``.

    Args:
        model: the network to copy.
        explicit: return an ``ExplicitResidualMLP``, whose backward pass
            runs resgrad's recurrence instead of autograd's.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    _arrays.check_flag("explicit", explicit)
    # convert may share memory with the model's arrays; _linear copies.
    model = model.convert(torch)
    blocks = []
    for block in model.blocks:
        if block.shortcut == "learned":
            shortcut = _linear(block.W3, None)
        elif block.shortcut == "identity":
            shortcut = nn.Identity()
        else:
            shortcut = None
        blocks.append(
            TorchBlock(
                _linear(block.W1, block.b1),
                _linear(block.W2, block.b2),
                shortcut,
                model.activation,
            )
        )
    cls = ExplicitResidualMLP if explicit else TorchResidualMLP
    return cls(blocks, model.post_activation, model.output_activation)


# PyTorch to resgrad: the values that flow through a traced forward pass.
# Each ``where`` is a description such as "'blocks.0.fc1' (torch.nn...Linear)"
# for error messages.


@dataclass(eq=False)
class _LayerBlock:
    """The layers of one block."""

    linear1: nn.Linear
    linear2: nn.Linear
    shortcut: str
    linear3: nn.Linear | None
    activation: str
    where: str
    # The activation layer, or the block when it has none of its own.
    activation_where: str


@dataclass(eq=False)
class _Stream:
    """A block input ``a^{l-1}``: the module input when ``source`` is None,
    else ``g_post(z)`` of the block output ``source``."""

    source: _Output | None
    activation: str | None
    where: str


@dataclass(eq=False)
class _Affine:
    """``W a + b``, an ``nn.Linear`` applied to a block input."""

    stream: _Stream
    layer: nn.Linear
    where: str


@dataclass(eq=False)
class _Hidden:
    """``h = g(W1 a + b1)``."""

    stream: _Stream
    linear1: nn.Linear
    activation: str
    where: str


@dataclass(eq=False)
class _Branch:
    """``W2 h + b2``, a residual branch before its shortcut is added."""

    hidden: _Hidden
    linear2: nn.Linear
    where: str

    def block(self, shortcut: str, linear3: nn.Linear | None) -> _LayerBlock:
        hidden = self.hidden
        return _LayerBlock(
            hidden.linear1,
            self.linear2,
            shortcut,
            linear3,
            hidden.activation,
            self.where,
            hidden.where,
        )


@dataclass(eq=False)
class _Output:
    """``z^l``, the output of a whole block."""

    stream: _Stream
    block: _LayerBlock


def _describe(layer: nn.Module, name: str) -> str:
    kind = type(layer)
    return f"'{name or '<root>'}' ({kind.__module__}.{kind.__qualname__})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unsupported(where: str, reason: str) -> ValueError:
    return ValueError(f"Unsupported layer {where}: {reason}")


def _kind(value: Any) -> str:
    kinds = {
        _Stream: "a block input",
        _Affine: "a Linear of a block input",
        _Hidden: "a hidden activation",
        _Branch: "a residual branch",
        _Output: "a block output",
    }
    return kinds.get(type(value), "a constant")


# Activations.

_ACTIVATION_MODULES = {
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.SiLU: "silu",
}
_ACTIVATION_FUNCTIONS = {
    torch.relu: "relu",
    F.relu: "relu",
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.silu: "silu",
    F.elu: "elu",
    F.leaky_relu: "leaky_relu",
    F.softplus: "softplus",
}
_ACTIVATION_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
# The parameters of the function forms in positional order, after the input.
_ARGUMENTS = {
    "leaky_relu": ("negative_slope", "inplace"),
    "elu": ("alpha", "inplace"),
    "softplus": ("beta", "threshold"),
}
_DEFAULTS = {
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "softplus": {"beta": 1.0, "threshold": 20.0},
}


def _check_parameters(name: str, values: dict[str, Any], where: str) -> str:
    """Return ``name`` if the parameters ``values`` match resgrad's ``name``."""
    values = {**_DEFAULTS.get(name, {}), **values}
    if name == "leaky_relu" and values["negative_slope"] != LEAKY_RELU_SLOPE:
        raise _unsupported(
            where,
            f"LeakyReLU with negative_slope {values['negative_slope']}; resgrad's "
            f"leaky_relu has slope {LEAKY_RELU_SLOPE}, so use "
            f"nn.LeakyReLU({LEAKY_RELU_SLOPE}).",
        )
    if name == "elu" and values["alpha"] != 1.0:
        raise _unsupported(
            where, f"ELU with alpha {values['alpha']}; resgrad's elu has alpha 1.0."
        )
    if name == "softplus" and values["beta"] != 1:
        raise _unsupported(
            where, f"Softplus with beta {values['beta']}; resgrad's has beta 1."
        )
    if name == "softplus" and values["threshold"] < SOFTPLUS_MIN_THRESHOLD:
        threshold = values["threshold"]
        raise _unsupported(
            where,
            f"Softplus with threshold {threshold} returns its input above "
            f"{threshold}, up to {math.log1p(math.exp(-threshold)):.3g} away from "
            f"log(1 + e^x); use a threshold of at least {SOFTPLUS_MIN_THRESHOLD:g}.",
        )
    return name


def _module_activation(layer: nn.Module, where: str) -> str | None:
    """Return the resgrad name of an activation module, or ``None``."""
    for kind, name in _ACTIVATION_MODULES.items():
        if isinstance(layer, kind):
            return name
    if isinstance(layer, nn.LeakyReLU):
        values = {"negative_slope": layer.negative_slope}
        return _check_parameters("leaky_relu", values, where)
    if isinstance(layer, nn.ELU):
        return _check_parameters("elu", {"alpha": layer.alpha}, where)
    if isinstance(layer, nn.Softplus):
        values = {"beta": layer.beta, "threshold": layer.threshold}
        return _check_parameters("softplus", values, where)
    return None


def _function_activation(node: fx.Node, where: str) -> str | None:
    """Return the resgrad name of an activation call, or ``None``."""
    if node.op == "call_method":
        name = _ACTIVATION_METHODS.get(node.target)
        extra = len(node.args) > 1 or node.kwargs
        return None if name is None or extra else name
    name = _ACTIVATION_FUNCTIONS.get(node.target)
    if name is None:
        return None
    values = dict(zip(_ARGUMENTS.get(name, ("inplace",)), node.args[1:]))
    values.update(node.kwargs)
    values.pop("inplace", None)
    if set(values) - set(_DEFAULTS.get(name, {})):
        return None
    return _check_parameters(name, values, where)


# Layers that are checked before tracing.

_DROPOUT = nn.modules.dropout._DropoutNd
_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_LEAVES = (nn.Linear, nn.Identity, TorchBlock, TorchResidualMLP)
_SUPPORTED = (
    "resgrad reads only nn.Linear, the activations ReLU, LeakyReLU(0.01), "
    "Sigmoid, Tanh, Softplus, ELU(1.0) and SiLU, nn.Identity, dropout in eval "
    "mode, TorchBlock and TorchResidualMLP."
)


_SUPPORTED_CALLS = (
    "a resgrad block is Linear, activation, Linear plus a shortcut, so the "
    "forward pass may call only the activations torch.relu, F.relu, "
    "Tensor.relu, torch.sigmoid, Tensor.sigmoid, torch.tanh, Tensor.tanh, "
    "F.leaky_relu (slope 0.01), F.elu (alpha 1.0), F.silu and F.softplus "
    "(beta 1), F.dropout in eval mode, and one addition per block."
)


def _check_layers(module: nn.Module) -> None:
    """Raise for the first layer, in registration order, that no resgrad
    block can hold, and for a Parameter registered in two places."""
    # The modules that compute a parametrized layer's weight, such as the
    # weight_norm of torch.nn.utils.parametrizations, are no layers of the
    # network. The layer's weight property returns what they compute.
    inside = tuple(
        f"{_join(name, 'parametrizations')}."
        for name, layer in module.named_modules()
        if parametrize.is_parametrized(layer)
    )
    for name, layer in module.named_modules():
        if inside and f"{name}.".startswith(inside):
            continue
        if parametrize.is_parametrized(layer) and (
            layer.training or any(p.training for p in layer.parametrizations.modules())
        ):
            raise _unsupported(
                _describe(layer, name),
                "its weight is parametrized and the module is in training "
                "mode, where a parametrization such as spectral_norm updates "
                "its state each time the weight is read; call module.eval() "
                "first.",
            )
        if isinstance(layer, (TorchBlock, TorchResidualMLP)):
            _structure(layer, name)
        elif not isinstance(layer, (nn.Sequential, nn.ModuleList)):
            _check_layer(layer, name)
    names: dict[int, str] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        first = names.setdefault(id(parameter), name)
        if first != name:
            raise ValueError(
                f"The parameter '{name}' is the same Parameter as '{first}'; a "
                "resgrad model has one array per weight, so give each layer "
                "its own weights."
            )


def _check_layer(layer: nn.Module, name: str) -> None:
    """Raise unless ``layer`` is supported or a custom module, whose forward
    pass the tracing checks."""
    where = _describe(layer, name)
    if isinstance(layer, _BATCH_NORM):
        raise _unsupported(
            where,
            "batch normalisation has no counterpart in a resgrad block; fold "
            "its running statistics into the Linear before it, or remove it.",
        )
    if isinstance(layer, _DROPOUT) and layer.training:
        raise _unsupported(
            where,
            "dropout in training mode drops units at random; call "
            "module.eval() first, which makes dropout the identity.",
        )
    if isinstance(layer, _LEAVES + (_DROPOUT,)) or _module_activation(layer, where):
        return
    if _Tracer().is_leaf_module(layer, name):
        raise _unsupported(where, _SUPPORTED)


# Reading the traced graph.


class _Tracer(fx.Tracer):
    """An fx tracer that keeps resgrad's own modules as single nodes."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, (TorchBlock, TorchResidualMLP)):
            return True
        return super().is_leaf_module(module, qualified_name)


class _Reader:
    """Reads an fx graph as a chain of residual blocks.

    Each node's value is one of ``_Stream``, ``_Affine``, ``_Hidden``,
    ``_Branch`` and ``_Output``; a node that fits no block raises.
    """

    def __init__(self, root: nn.Module):
        self.root = root
        self.values: dict[fx.Node, Any] = {}
        # Keyed by id: the _Output and _Stream built once for a _Branch or
        # _Output, so that two uses of one value see the same block input.
        self.memo: dict[int, tuple[Any, Any]] = {}
        self.called: set[str] = set()

    def read(self, graph: fx.Graph) -> Any:
        inputs = [node for node in graph.nodes if node.op == "placeholder"]
        if len(inputs) != 1:
            names = [str(node.target) for node in inputs]
            raise ValueError(
                f"The forward pass takes the inputs {names}; a resgrad network "
                "takes one batch x of shape (n, p_0)."
            )
        for node in graph.nodes:
            if node.op == "output":
                return self._output(node)
            self.values[node] = self._step(node)
        raise ValueError("The traced forward pass has no output.")

    def _step(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return _Stream(None, None, f"the input '{node.target}'")
        if node.op == "call_module":
            return self._call_module(node)
        if node.op in ("call_function", "call_method"):
            return self._call_function(node)
        raise ValueError(
            f"The forward pass reads the parameter or buffer '{node.target}' "
            "outside an nn.Linear; resgrad reads weights only from nn.Linear "
            "layers."
        )

    def _value(self, argument: Any) -> Any:
        return self.values[argument] if isinstance(argument, fx.Node) else None

    def _output(self, node: fx.Node) -> Any:
        if not isinstance(node.args[0], fx.Node):
            # A network shape from_module does not support, a ValueError like
            # its other unsupported structures.
            raise ValueError(  # noqa: TRY004
                "The forward pass returns a tuple, list or constant; a resgrad "
                "network returns one tensor."
            )
        return self.values[node.args[0]]

    def _call_module(self, node: fx.Node) -> Any:
        layer = self.root.get_submodule(node.target)
        where = _describe(layer, node.target)
        if len(node.args) != 1 or node.kwargs:
            raise _unsupported(where, "expected a call with one tensor argument.")
        value = self._value(node.args[0])
        if isinstance(layer, (nn.Identity, _DROPOUT)):
            return value
        if not isinstance(layer, (nn.Linear, TorchBlock, TorchResidualMLP)):
            activation = _module_activation(layer, where)
            if activation is None:
                _check_layer(layer, node.target)
                raise _unsupported(where, _SUPPORTED)
            return self._activation(activation, value, where)
        if node.target in self.called:
            raise _unsupported(
                where,
                "the forward pass calls it twice, which shares its weights "
                "between two places; give each call its own layer.",
            )
        self.called.add(node.target)
        if isinstance(layer, nn.Linear):
            return self._linear(layer, value, where)
        stream = self._stream(value, where)
        if isinstance(layer, TorchBlock):
            return _Output(stream, _torch_block(layer, node.target))
        return _residual_mlp(layer, node.target, stream)

    def _call_function(self, node: fx.Node) -> Any:
        where = _function_name(node)
        if _is_add(node):
            left, right = (self._value(argument) for argument in node.args)
            return self._add(left, right, where)
        if node.target is F.dropout:
            if node.kwargs.get("training") is False:
                return self._value(node.args[0])
            raise _unsupported(where, "dropout in training mode drops units at random.")
        activation = _function_activation(node, where)
        if activation is None:
            raise _unsupported(where, _SUPPORTED_CALLS)
        return self._activation(activation, self._value(node.args[0]), where)

    # The steps of a block.

    def _memo(self, key: Any, build: Callable[[], Any]) -> Any:
        if id(key) not in self.memo:
            self.memo[id(key)] = (key, build())
        return self.memo[id(key)][1]

    def _output_of(self, value: _Output | _Branch) -> _Output:
        """Return ``value`` as a block output; a branch has no shortcut."""
        if isinstance(value, _Output):
            return value
        stream = value.hidden.stream
        return self._memo(value, lambda: _Output(stream, value.block("none", None)))

    def _stream(self, value: Any, where: str) -> _Stream:
        """Return ``value`` as a block input; a block output that no
        activation follows feeds the next block through the identity."""
        if isinstance(value, _Stream):
            return value
        if isinstance(value, (_Output, _Branch)):
            output = self._output_of(value)
            return self._memo(output, lambda: _Stream(output, "identity", where))
        raise _unsupported(where, f"expected a block input, got {_kind(value)}.")

    def _linear(self, layer: nn.Linear, value: Any, where: str) -> Any:
        if isinstance(value, _Hidden):
            return _Branch(value, layer, where)
        if isinstance(value, _Affine):
            # Linear after Linear: a block whose activation is the identity.
            hidden = _Hidden(value.stream, value.layer, "identity", value.where)
            return _Branch(hidden, layer, where)
        return _Affine(self._stream(value, where), layer, where)

    def _activation(self, activation: str | None, value: Any, where: str) -> Any:
        if activation is None:
            return value
        if isinstance(value, _Affine):
            return _Hidden(value.stream, value.layer, activation, where)
        if isinstance(value, (_Output, _Branch)):
            return _Stream(self._output_of(value), activation, where)
        raise _unsupported(
            where,
            f"an activation applied to {_kind(value)}; a block is Linear, "
            "activation, Linear, with at most one activation between blocks.",
        )

    def _add(self, left: Any, right: Any, where: str) -> _Output:
        for branch, other in ((left, right), (right, left)):
            if not isinstance(branch, _Branch):
                continue
            stream = branch.hidden.stream
            if isinstance(other, _Affine) and other.stream is stream:
                return _Output(stream, branch.block("learned", other.layer))
            is_input = isinstance(other, (_Stream, _Output))
            if is_input and self._stream(other, where) is stream:
                return _Output(stream, branch.block("identity", None))
        raise _unsupported(
            where,
            f"an addition of {_kind(left)} and {_kind(right)}; a block adds "
            "its branch W2 g(W1 a) to its own input a or to a Linear of a.",
        )


def _function_name(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {"": None}
    owner = list(stack)[-1]
    if node.op == "call_method":
        name = f"Tensor.{node.target}"
    else:
        short = getattr(node.target, "__name__", str(node.target))
        module = getattr(node.target, "__module__", None) or "torch"
        # Some functions of torch.nn.functional, such as gelu and softplus,
        # are defined in torch._C._nn; name them as users call them.
        if getattr(F, short, None) is node.target:
            module = "torch.nn.functional"
        name = f"{module}.{short}"
    return f"'{owner or '<root>'}' (call of {name})"


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_method":
        if node.target not in ("add", "__add__"):
            return False
    elif node.target not in (operator.add, torch.add):
        return False
    extra = set(node.kwargs) - {"alpha"}
    return len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1 and not extra


def _torch_block(block: TorchBlock, name: str) -> _LayerBlock:
    where = _describe(block, name)
    if block.activation not in ACTIVATIONS:
        raise _unsupported(where, f"unknown activation {block.activation!r}.")
    for attribute in ("linear1", "linear2"):
        layer = getattr(block, attribute)
        if not isinstance(layer, nn.Linear):
            raise _unsupported(
                _describe(layer, _join(name, attribute)), "expected an nn.Linear."
            )
    shortcut = block.shortcut
    if isinstance(shortcut, nn.Linear):
        kind = "learned"
    elif isinstance(shortcut, nn.Identity):
        kind, shortcut = "identity", None
    elif shortcut is None:
        kind = "none"
    else:
        raise _unsupported(
            _describe(shortcut, _join(name, "shortcut")),
            "a TorchBlock shortcut is an nn.Linear, an nn.Identity or None.",
        )
    return _LayerBlock(
        block.linear1, block.linear2, kind, shortcut, block.activation, where, where
    )


def _residual_mlp(
    module: TorchResidualMLP, name: str, stream: _Stream
) -> _Output | _Stream:
    """Return the value of ``module``'s output, read from its attributes."""
    structure = _structure(module, name)
    value: Any = stream
    for index, block in enumerate(module.blocks):
        block_name = _join(name, f"blocks.{index}")
        if index > 0:
            where = _describe(module, name) + " between its blocks"
            value = _Stream(value, structure.post_activation, where)
        value = _Output(value, _torch_block(block, block_name))
    if structure.output_activation != "identity":
        value = _Stream(value, structure.output_activation, _describe(module, name))
    return value


# Assembling the resgrad model.


def _chain(value: Any) -> tuple[list[_LayerBlock], list[_Stream], str]:
    """Return the blocks, the block inputs between them and ``g_out``."""
    if isinstance(value, _Stream) and value.source is not None:
        output_activation, value = value.activation, value.source
    elif isinstance(value, _Branch):
        output_activation = "identity"
        value = _Output(value.hidden.stream, value.block("none", None))
    elif isinstance(value, _Output):
        output_activation = "identity"
    elif isinstance(value, _Affine):
        raise _unsupported(
            value.where,
            "a Linear layer outside a block (a block is Linear, activation, "
            "Linear); resgrad has no separate output layer.",
        )
    else:
        raise ValueError(
            f"The forward pass returns {_kind(value)}, which is not a block "
            "output; a module needs at least one whole block."
        )
    blocks, streams = [value.block], []
    while value.stream.source is not None:
        streams.append(value.stream)
        value = value.stream.source
        blocks.append(value.block)
    return blocks[::-1], streams[::-1], output_activation


def _shared_activation(items: list[Any], wheres: list[str], kind: str) -> str | None:
    """Return the activation shared by ``items`` (``None`` for none)."""
    if not items:
        return None
    first = items[0].activation
    for item, where in zip(items[1:], wheres[1:]):
        if item.activation != first:
            raise _unsupported(
                where,
                f"it uses the {kind} {item.activation!r} where the first block "
                f"uses {first!r}; a resgrad model has one {kind}.",
            )
    return first


def _copy(parameter: torch.Tensor | None) -> torch.Tensor | None:
    return None if parameter is None else parameter.detach().clone()


def _resgrad_block(layers: _LayerBlock) -> Block:
    b2 = _copy(layers.linear2.bias)
    if layers.linear3 is not None and layers.linear3.bias is not None:
        # W3 a + b3 adds a constant to the branch, so b3 folds into b2.
        b3 = _copy(layers.linear3.bias)
        b2 = b3 if b2 is None else b2 + b3
    try:
        return Block(
            W1=_copy(layers.linear1.weight),
            W2=_copy(layers.linear2.weight),
            W3=None if layers.linear3 is None else _copy(layers.linear3.weight),
            b1=_copy(layers.linear1.bias),
            b2=b2,
            shortcut=layers.shortcut,
        )
    except ValueError as error:
        raise ValueError(f"The block ending at {layers.where}: {error}") from error


def from_module(
    module: nn.Module, *, xp: Any = None, dtype: Any = None, device: Any = None
) -> ResidualMLP:
    """Read a ``ResidualMLP`` with copies of a PyTorch module's weights.

    The recognised modules are:

    - a ``TorchResidualMLP`` (what ``to_module`` returns, an
      ``ExplicitResidualMLP`` too) or a single ``TorchBlock``;
    - any other ``nn.Module`` (an ``nn.Sequential``, an ``nn.ModuleList``
      read as a pipeline in order, or a custom module) whose forward pass,
      traced with ``torch.fx``, is a chain of blocks
      ``z = Linear2(g(Linear1(a))) + s(a)``. The shortcut ``s(a)`` is
      absent (a plain block), ``a`` itself (identity, also through an
      ``nn.Identity``) or a third ``nn.Linear`` of ``a`` (learned). The
      bias of that third Linear, if any, is added to ``b2``. Between two
      blocks there is one activation ``g_post`` or none (the identity), and
      after the last block an optional output activation ``g_out``.
      ``TorchBlock`` and ``TorchResidualMLP`` submodules count as their
      blocks.

    Every block uses the same ``g`` (no activation is the identity), and
    every gap between blocks the same ``g_post``; with one block,
    ``g_post = g``. The activations are the modules ``nn.ReLU``,
    ``nn.LeakyReLU(0.01)``, ``nn.Sigmoid``, ``nn.Tanh``,
    ``nn.Softplus(beta=1)`` with a threshold of at least 20, ``nn.ELU(1.0)``
    and ``nn.SiLU``, or the same functions called as ``torch.relu``,
    ``F.relu``, ``Tensor.relu``, ``torch.sigmoid``, ``Tensor.sigmoid``,
    ``torch.tanh``, ``Tensor.tanh``, ``F.leaky_relu``, ``F.elu``,
    ``F.silu`` and ``F.softplus``. ``nn.Identity`` and dropout in eval mode
    pass their input through. resgrad's softplus is the exact
    ``log(1 + e^x)``, while torch's returns ``x`` above its threshold, a
    difference of at most ``log1p(exp(-threshold))`` (2.1e-9 for 20).

    The module is called once, without gradients, on a random batch of 4
    rows to confirm that the model computes the same output. Forward hooks
    and pre-hooks, on the module, on any layer in it or registered for
    every module, are refused, since that batch need not show what they
    change; those of the older ``weight_norm`` and ``spectral_norm`` are
    kept. A layer parametrized with ``torch.nn.utils.parametrizations``
    (``weight_norm``, ``spectral_norm``, ``orthogonal``) gives the weight
    that its parametrization computes, in eval mode only.

    Args:
        module: the PyTorch network. Its weights are copied, never shared.
        xp: the namespace of the returned model (e.g. ``numpy``); by
            default torch tensors.
        dtype: the dtype of the returned model; by default the module's.
        device: the device of the returned model; by default the module's.

    Raises:
        ValueError: naming the first layer (qualified name and type) that no
            resgrad block can represent, such as batch normalisation, dropout
            in training mode, an unsupported activation or a LeakyReLU slope
            other than 0.01. Also raised for a Parameter or layer used in two
            places, and for forward hooks.
        TypeError: if ``module`` is not an ``nn.Module``, or its weights
            differ in dtype.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module, got {type(module).__name__}.")
    _check_no_forward_hooks(module)
    _check_layers(module)
    if isinstance(module, nn.ModuleList):
        module = nn.Sequential(*module)
    # The tracer reads a torch.nn layer as one opaque node, so a lone layer
    # would only fail later with a message about its weight.
    own = isinstance(module, (TorchBlock, TorchResidualMLP))
    if not own and _Tracer().is_leaf_module(module, ""):
        raise ValueError(
            f"A lone {type(module).__name__} is not a residual network: a block "
            "is Linear, activation, Linear, as in nn.Sequential(nn.Linear(p, q), "
            "nn.ReLU(), nn.Linear(q, p))."
        )
    blocks, streams, output_activation = _chain(_read(module))
    model = ResidualMLP(
        [_resgrad_block(block) for block in blocks],
        _shared_activation(blocks, [b.activation_where for b in blocks], "activation"),
        _shared_activation(streams, [s.where for s in streams], "post activation"),
        output_activation,
    )
    _check_forward(module, model)
    if xp is None and dtype is None and device is None:
        return model
    return model.convert(xp, dtype=dtype, device=device)


def _check_no_forward_hooks(module: nn.Module) -> None:
    """Raise for a forward hook or pre-hook on ``module``, on a layer in it,
    or registered for every module.

    A hook can change what a layer takes or returns, which the blocks read
    from the layers' weights would not do. The check of the output on a
    random batch catches such a change only where that batch shows it, as
    a clamp of large values does not. Whether a hook only observes is
    unknown without running it, so every hook is refused. The exceptions
    are the hooks of the older ``torch.nn.utils.weight_norm`` and
    ``spectral_norm``, which only compute the weight that the blocks read.
    """
    fix = (
        "remove them (handle.remove() on the handle that register_forward_hook "
        "or register_forward_pre_hook returned) before from_module"
    )
    registry = torch.nn.modules.module
    if getattr(registry, "_global_forward_hooks", None) or getattr(
        registry, "_global_forward_pre_hooks", None
    ):
        raise ValueError(
            "PyTorch has forward hooks registered for every module "
            "(register_module_forward_hook or register_module_forward_pre_hook), "
            "whose work resgrad's blocks would leave out; remove them (handle."
            "remove() on the handle that registration returned) before from_module."
        )
    for name, layer in module.named_modules():
        hooks = [*layer._forward_hooks.values(), *layer._forward_pre_hooks.values()]
        if all(isinstance(hook, _WEIGHT_HOOKS) for hook in hooks):
            continue
        where = f"The layer {name}" if name else "The module"
        raise ValueError(
            f"{where} ({type(layer).__name__}) has forward hooks or pre-hooks, "
            f"whose work resgrad's blocks would leave out; {fix}."
        )


# The pre-hooks of the older weight_norm and spectral_norm, which set the
# layer's weight before each call.
_WEIGHT_HOOKS = (WeightNorm, SpectralNorm)


def _read(module: nn.Module) -> Any:
    """Trace ``module`` and return the ``_Reader`` value of its output."""
    start = _Stream(None, None, "the input")
    if isinstance(module, TorchResidualMLP):
        return _residual_mlp(module, "", start)
    if isinstance(module, TorchBlock):
        return _Output(start, _torch_block(module, ""))
    try:
        graph = _Tracer().trace(module)
    except (fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError) as error:
        raise ValueError(
            f"Could not trace the forward pass of {type(module).__name__} with "
            f"torch.fx ({error}); build it from nn.Sequential, nn.Linear and "
            "activation modules, or from TorchBlocks."
        ) from error
    return _Reader(module).read(graph)


def _check_forward(module: nn.Module, model: ResidualMLP) -> None:
    """Raise if the module and the model differ on a random batch."""
    generator = torch.Generator(device=model.device).manual_seed(0)
    x = torch.randn(
        4, model.sizes[0], generator=generator, dtype=model.dtype, device=model.device
    )
    with torch.no_grad():
        expected = module(x)
    actual = model(x)
    if not isinstance(expected, torch.Tensor) or expected.shape != actual.shape:
        raise ValueError(
            "The module's output differs in shape from that of the blocks read "
            "from it; forward hooks and extra operations are not supported."
        )
    tolerance = math.sqrt(torch.finfo(model.dtype).eps)
    error = float(torch.max(torch.abs(actual - expected)))
    scale = 1.0 + float(torch.max(torch.abs(expected)))
    if not error <= tolerance * scale:
        raise ValueError(
            f"The blocks read from the module differ from its output by "
            f"{error:.3g}; its forward pass does more than those blocks, for "
            "example through forward hooks."
        )


# Explicit gradients in PyTorch autograd.


@dataclass(frozen=True)
class _Structure:
    activation: str
    post_activation: str
    output_activation: str


def _structure(module: TorchBlock | TorchResidualMLP, name: str = "") -> _Structure:
    """Check that ``module`` fits one ``ResidualMLP`` and return its
    activations."""
    if isinstance(module, TorchBlock):
        block = _torch_block(module, name)
        return _Structure(block.activation, block.activation, "identity")
    if len(module.blocks) == 0:
        raise _unsupported(_describe(module, name), "it has no blocks.")
    layers = []
    for index, block in enumerate(module.blocks):
        if not isinstance(block, TorchBlock):
            where = _describe(block, _join(name, f"blocks.{index}"))
            raise _unsupported(where, "expected a TorchBlock.")
        layers.append(_torch_block(block, _join(name, f"blocks.{index}")))
    for activation in (module.post_activation, module.output_activation):
        if activation not in ACTIVATIONS:
            where = _describe(module, name)
            raise _unsupported(where, f"unknown activation {activation!r}.")
    return _Structure(
        _shared_activation(layers, [b.where for b in layers], "activation"),
        module.post_activation,
        module.output_activation,
    )


def _view(module: TorchResidualMLP, output_activation: str | None) -> ResidualMLP:
    """Return a ``ResidualMLP`` whose arrays are the module's own parameters.

    ``ExplicitGradient.forward`` runs it with grad mode off, so no autograd
    graph records its operations.
    """
    structure = _structure(module)
    blocks = []
    for index, block in enumerate(module.blocks):
        layers = _torch_block(block, f"blocks.{index}")
        if layers.linear3 is not None and layers.linear3.bias is not None:
            raise _unsupported(
                _describe(layers.linear3, f"blocks.{index}.shortcut"),
                "a shortcut with a bias has no resgrad parameter; convert "
                "the module with to_module(from_module(module)), which folds "
                "that bias into b2.",
            )
        blocks.append(
            Block(
                W1=layers.linear1.weight,
                W2=layers.linear2.weight,
                W3=None if layers.linear3 is None else layers.linear3.weight,
                b1=layers.linear1.bias,
                b2=layers.linear2.bias,
                shortcut=layers.shortcut,
            )
        )
    output = output_activation or structure.output_activation
    return ResidualMLP(blocks, structure.activation, structure.post_activation, output)


class ExplicitGradient(torch.autograd.Function):
    """The network output ``a^L`` with resgrad's closed-form backward pass.

    ``ExplicitGradient.apply(template, x, *arrays)`` evaluates the network
    ``template`` with its arrays replaced by the tensors ``arrays``, given
    in the order of ``template.arrays()``. Only the structure of the
    ``ResidualMLP`` ``template`` is used. ``x`` has shape ``(n, p_0)``.

    The backward pass receives ``dL/da^L`` of shape ``(n, p_L)`` from
    autograd, for any loss ``L`` downstream, and runs, with the rows of the
    batch summed::

        e^L     = D^L dL/da^L,   D^L = diag(g_out'(z^L))
        e_hat^l = D_hat^l W2^T e^l
        e^{l-1} = D^{l-1} (W1^T e_hat^l + W3^T e^l)
        dL/dx   = W1^T e_hat^1 + W3^T e^1
        dL/dW1  = e_hat^l (a^{l-1})^T    dL/db1 = e_hat^l
        dL/dW2  = e^l (h^l)^T            dL/db2 = e^l
        dL/dW3  = e^l (a^{l-1})^T

    It returns ``dL/dx`` and one gradient per array, each where autograd
    needs it. The backward pass is not itself differentiable, so a backward
    pass with ``create_graph=True`` raises a ``RuntimeError``, and so do the
    ``torch.func`` transforms, which need a ``setup_context`` method.
    """

    @staticmethod
    def forward(ctx: Any, template: ResidualMLP, x: torch.Tensor, *arrays: Any) -> Any:
        if not isinstance(template, ResidualMLP):
            raise TypeError(
                "Expected a ResidualMLP as the template of ExplicitGradient.apply, "
                f"got {type(template).__name__}; pass the model whose structure "
                "the arrays fill, as in ExplicitGradient.apply(model, x, "
                "*model.arrays().values())."
            )
        names = list(template.arrays())
        if len(arrays) != len(names):
            raise ValueError(
                f"Expected {len(names)} arrays in the order {names}, got {len(arrays)}."
            )
        model = template
        if any(a is not b for a, b in zip(arrays, template.arrays().values())):
            model = template.replace_arrays(dict(zip(names, arrays)))
        traces, a_L = model.trace(x)
        ctx.model = model
        saved = [value for trace in traces for value in trace]
        if model.output_activation == "identity":
            # The last z is then the output, which the caller may change in
            # place, and the backward pass needs no g_out'(z^L) = 1.
            saved[-1] = None
        ctx.save_for_backward(*arrays, *saved)
        return a_L

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            # Grad mode is on here only under create_graph=True, and a graph
            # of these gradients would miss their dependence on the weights.
            raise RuntimeError(
                "ExplicitGradient has no second derivatives, so create_graph="
                "True is not supported; use the autograd module "
                "to_module(model) for double backward."
            )
        model = ctx.model
        # Reading saved_tensors raises if an array was changed in place
        # between the forward and the backward pass.
        values = ctx.saved_tensors[len(model.arrays()) :]
        traces = [BlockTrace(*values[i : i + 4]) for i in range(0, len(values), 4)]
        error = grad_output
        if traces[-1].z is not None:
            g_out = model.activations()[2]
            error = grad_output * g_out.derivative(model.xp, traces[-1].z)
        needs = ctx.needs_input_grad
        dx, blocks = backward(
            model, traces, error, weights=any(needs[2:]), with_input=needs[1]
        )
        grads = []
        for key, need in zip(model.arrays(), needs[2:]):
            _, index, name = key.split(".")
            grads.append(getattr(blocks[int(index)], name) if need else None)
        return (None, dx if needs[1] else None, *grads)


def explicit_forward(
    module: TorchResidualMLP, x: torch.Tensor, output: str = "output"
) -> torch.Tensor:
    """Run ``module`` on ``x`` with resgrad's closed-form backward pass.

    The value equals ``module(x)``, or ``module.logits(x)``. A later
    ``loss.backward()`` then fills the ``.grad`` of the module's parameters
    through ``ExplicitGradient``, and that of ``x`` when it requires one.

    Args:
        module: a ``TorchResidualMLP``.
        x: the inputs, shape ``(n, p_0)``, or ``(..., p_0)`` as for
            ``nn.Linear``, in the module's dtype and device.
        output: ``"output"`` for ``a^L`` or ``"logits"`` for ``z^L``.
    """
    if isinstance(x, torch.Tensor) and x.ndim not in (0, 2):
        # One row, or rows under more leading axes, run as a flat batch.
        flat = explicit_forward(module, x.reshape(-1, x.shape[-1]), output)
        return flat.reshape(*x.shape[:-1], flat.shape[-1])
    if not isinstance(module, TorchResidualMLP):
        raise TypeError(
            f"Expected a TorchResidualMLP, got {type(module).__name__}; convert "
            "other modules with to_module(from_module(module), explicit=True)."
        )
    if output not in ("output", "logits"):
        raise ValueError(f"Unknown output {output!r}; expected 'output' or 'logits'.")
    if not isinstance(x, torch.Tensor):
        # As an nn.Module, which runs on tensors alone; the model's advice to
        # convert the model to x's namespace would not apply.
        raise TypeError(
            f"The explicit module takes a torch tensor, got x as a "
            f"{_arrays.type_name(x)}; pass torch.as_tensor(x) in the module's "
            "dtype and on its device."
        )
    mismatch = _dtype_mismatch(module, x)
    if mismatch is not None:
        raise TypeError(mismatch)
    _check_layers_read_directly(module)
    template = _view(module, "identity" if output == "logits" else None)
    named = module.named_arrays()
    return ExplicitGradient.apply(template, x, *(named[k] for k in template.arrays()))


def _check_layers_read_directly(module: TorchResidualMLP) -> None:
    """Raise for a layer whose own code the explicit module would skip,
    since it reads the weights and runs the whole network at once."""
    for index, block in enumerate(module.blocks):
        layers = [("", block, TorchBlock)]
        layers += [(".linear1", block.linear1, nn.Linear)]
        layers += [(".linear2", block.linear2, nn.Linear)]
        for kind in (nn.Linear, nn.Identity):
            # Other shortcuts are rejected when the network is read.
            if isinstance(block.shortcut, kind):
                layers.append((".shortcut", block.shortcut, kind))
        for attribute, layer, plain in layers:
            reason = _skipped_code(layer, plain)
            if reason is None:
                continue
            raise ValueError(
                f"The explicit module cannot run blocks.{index}{attribute}: "
                f"{reason}. ExplicitGradient reads each layer's weight and bias "
                "and evaluates the network itself, so that code would not run. "
                "Use the autograd module (to_module(model), or the module given "
                "to ExplicitResidualMLP.wrap), or remove the hooks or the "
                "parametrization."
            )


def _skipped_code(layer: nn.Module, plain: type) -> str | None:
    """Return what of ``layer``'s own code, beyond that of the class
    ``plain``, the explicit module would skip, or ``None``."""
    if parametrize.is_parametrized(layer):
        return "its weights are parametrized (weight_norm, spectral_norm)"
    if layer._forward_hooks or layer._forward_pre_hooks:
        return "it has forward hooks"
    if layer._backward_hooks or layer._backward_pre_hooks:
        return "it has backward hooks"
    if "forward" in vars(layer):
        return "its forward is replaced on the instance"
    if type(layer).forward is not plain.forward:
        return f"{type(layer).__name__} overrides {plain.__name__}.forward"
    return None


class ExplicitResidualMLP(TorchResidualMLP):
    """A ``TorchResidualMLP`` whose backward pass runs resgrad's recurrence.

    Its parameters, ``state_dict`` and outputs are those of a
    ``TorchResidualMLP``; only the gradients come from
    ``ExplicitGradient``. Build one with ``to_module(model, explicit=True)``
    or ``ExplicitResidualMLP.wrap(module)``.
    """

    @classmethod
    def wrap(cls, module: TorchResidualMLP) -> ExplicitResidualMLP:
        """Return an ``ExplicitResidualMLP`` that shares ``module``'s blocks,
        so that both train the same parameters."""
        if not isinstance(module, TorchResidualMLP):
            raise TypeError(
                f"Expected a TorchResidualMLP, got {type(module).__name__}."
            )
        _structure(module)
        return cls(
            list(module.blocks), module.post_activation, module.output_activation
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``z^L``, the last block's output before ``g_out``."""
        return explicit_forward(self, x, output="logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return explicit_forward(self, x)
