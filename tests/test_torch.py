"""Tests of resgrad.torch: from_module, round trips, and training torch
modules with the closed-form gradients of ExplicitGradient.

The forward pass and gradients of ``to_module`` itself are checked in
test_backends.py.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F
from torch import nn

import resgrad
from resgrad.torch import (
    ExplicitGradient,
    ExplicitResidualMLP,
    TorchResidualMLP,
    explicit_forward,
    from_module,
    to_module,
)

SHORTCUTS = ("learned", "identity", "none")
DTYPES = (torch.float64, torch.float32)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(shortcut="learned", activation="tanh", bias=True, dtype="float64", **kw):
    model = reference.random_model(3, activation, shortcut, bias=bias, **kw)
    return model.convert(torch, dtype=dtype)


def _batch(model, n=6, seed=0):
    x, y = reference.random_batch(model, n, seed)
    return torch.asarray(x, dtype=model.dtype), torch.asarray(y)


# Round trips.


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "softplus", "silu"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_round_trip_keeps_weights_and_outputs(shortcut, activation, bias, dtype):
    model = reference.random_model(
        3,
        activation,
        shortcut,
        bias=bias,
        post_activation="tanh",
        output_activation="sigmoid",
    ).convert(np, dtype=dtype)
    back = from_module(to_module(model), xp=np)
    assert back.config() == model.config()
    assert sorted(back.arrays()) == sorted(model.arrays())
    for name, value in model.arrays().items():
        assert isinstance(back.arrays()[name], np.ndarray), name
        np.testing.assert_array_equal(back.arrays()[name], value, err_msg=name)
    x, _ = reference.random_batch(model, 5)
    x = x.astype(dtype)
    np.testing.assert_array_equal(back(x), model(x))
    np.testing.assert_array_equal(back.logits(x), model.logits(x))


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_module_round_trip_keeps_state_dict(shortcut):
    module = to_module(_model(shortcut))
    again = to_module(from_module(module))
    expected = module.state_dict()
    actual = again.state_dict()
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name


def test_from_module_defaults_to_module_tensors():
    module = to_module(_model(dtype="float32"))
    model = from_module(module)
    for name, value in model.arrays().items():
        assert isinstance(value, torch.Tensor), name
        assert value.dtype == torch.float32, name
        assert value.device == torch.device("cpu"), name
        assert not value.requires_grad, name


def test_from_module_converts_namespace_and_dtype():
    module = to_module(_model())
    model = from_module(module, xp=np, dtype="float32")
    for name, value in model.arrays().items():
        assert isinstance(value, np.ndarray), name
        assert value.dtype == np.float32, name


def test_from_module_copies_weights():
    module = to_module(_model())
    model = from_module(module)
    before = {name: value.clone() for name, value in model.arrays().items()}
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(1.0)
    for name, value in model.arrays().items():
        assert torch.equal(value, before[name]), name


def test_to_module_copies_numpy_weights():
    model = reference.random_model(2, "relu", "learned")
    before = {name: value.copy() for name, value in model.arrays().items()}
    module = to_module(model)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(2.0)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_to_module_rejects_other_objects():
    with pytest.raises(TypeError, match="Expected a ResidualMLP, got Linear"):
        to_module(nn.Linear(2, 2))


# Modules of other structures.


class CustomBlock(nn.Module):
    """A residual block written the usual PyTorch way."""

    def __init__(self, width, hidden, shortcut, activation=None):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = activation if activation is not None else nn.ReLU()
        self.fc2 = nn.Linear(hidden, width)
        self.kind = shortcut
        if shortcut == "learned":
            self.proj = nn.Linear(width, width)
        elif shortcut == "identity":
            self.proj = nn.Identity()

    def forward(self, x):
        branch = self.fc2(self.act(self.fc1(x)))
        if self.kind == "none":
            return branch
        if self.kind == "identity_direct":
            return x + branch
        return branch + self.proj(x)


class FunctionalBlock(nn.Module):
    """A block whose activations are function calls."""

    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        z = self.fc2(F.silu(self.fc1(x)))
        z += x
        return z


def _assert_same_forward(module, model, dtype=torch.float64):
    x = torch.randn(
        5, model.sizes[0], dtype=dtype, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = module(x)
    assert reference.relative_error(model(x), expected) <= 1e-12


def test_sequential_of_plain_blocks():
    module = nn.Sequential(
        nn.Linear(4, 8),
        nn.ReLU(),
        nn.Linear(8, 5),
        nn.Tanh(),
        nn.Linear(5, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
        nn.Sigmoid(),
    ).double()
    model = from_module(module)
    assert model.sizes == [4, 5, 3]
    assert model.hidden == [8, 6]
    assert [b.shortcut for b in model.blocks] == ["none", "none"]
    assert (model.activation, model.post_activation) == ("relu", "tanh")
    assert model.output_activation == "sigmoid"
    _assert_same_forward(module, model)


@pytest.mark.parametrize(
    "shortcut, expected",
    [
        ("learned", "learned"),
        ("identity", "identity"),
        ("identity_direct", "identity"),
        ("none", "none"),
    ],
)
def test_custom_blocks_give_their_shortcut(shortcut, expected):
    module = nn.Sequential(
        CustomBlock(4, 6, shortcut), nn.Tanh(), CustomBlock(4, 5, shortcut)
    ).double()
    model = from_module(module)
    assert [b.shortcut for b in model.blocks] == [expected, expected]
    assert (model.activation, model.post_activation) == ("relu", "tanh")
    _assert_same_forward(module, model)


def test_learned_shortcut_bias_folds_into_b2():
    module = CustomBlock(4, 6, "learned").double()
    model = from_module(module)
    expected = module.fc2.bias + module.proj.bias
    assert torch.equal(model.blocks[0].b2, expected.detach())
    assert torch.equal(model.blocks[0].W3, module.proj.weight.detach())


def test_blocks_without_activation_between_them():
    module = nn.Sequential(CustomBlock(4, 6, "identity"), CustomBlock(4, 5, "learned"))
    model = from_module(module.double())
    assert model.post_activation == "identity"
    _assert_same_forward(module, model)


def test_functional_activations_and_inplace_add():
    module = nn.Sequential(FunctionalBlock(4, 6), nn.SiLU(), FunctionalBlock(4, 3))
    model = from_module(module.double())
    assert (model.activation, model.post_activation) == ("silu", "silu")
    assert [b.shortcut for b in model.blocks] == ["identity", "identity"]
    _assert_same_forward(module, model)


def test_module_list_of_torch_blocks():
    blocks = to_module(_model("learned", post_activation="relu")).blocks
    module = nn.ModuleList([blocks[0], nn.ReLU(), blocks[1], nn.ReLU(), blocks[2]])
    model = from_module(module)
    assert model.post_activation == "relu"
    assert model.output_activation == "identity"
    _assert_same_forward(nn.Sequential(*module), model)


def test_nested_residual_mlp_and_eval_dropout():
    inner = to_module(_model("identity", output_activation="tanh"))
    module = nn.Sequential(nn.Dropout(0.5), inner).eval()
    model = from_module(module)
    assert model.depth == 3
    assert model.output_activation == "tanh"
    _assert_same_forward(module, model)


def test_single_torch_block():
    block = to_module(_model("learned")).blocks[0]
    model = from_module(block)
    assert model.depth == 1
    assert model.blocks[0].shortcut == "learned"
    _assert_same_forward(block, model)


@pytest.mark.parametrize(
    "layer, name",
    [
        (nn.ReLU(), "relu"),
        (nn.LeakyReLU(0.01), "leaky_relu"),
        (nn.Sigmoid(), "sigmoid"),
        (nn.Tanh(), "tanh"),
        (nn.Softplus(), "softplus"),
        (nn.ELU(1.0), "elu"),
        (nn.SiLU(), "silu"),
        (nn.Identity(), "identity"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else value,
)
def test_activation_modules_are_recognised(layer, name):
    module = nn.Sequential(
        CustomBlock(4, 6, "learned", layer), layer, CustomBlock(4, 5, "none", layer)
    )
    model = from_module(module.double())
    assert (model.activation, model.post_activation) == (name, name)
    _assert_same_forward(module, model)


def test_softplus_threshold_difference_is_known():
    """Above its threshold 20 torch's Softplus returns x, while resgrad's is
    log(1 + e^x) = x + log1p(e^-x)."""
    module = nn.Sequential(nn.Linear(2, 3), nn.Softplus(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        module[0].bias.fill_(20.5)
    model = from_module(module)
    x = torch.zeros(1, 2, dtype=torch.float64)
    with torch.no_grad():
        difference = model(x) - module(x)
        expected = module[2].weight.sum(dim=1) * math.log1p(math.exp(-20.5))
    assert reference.relative_error(difference[0], expected) <= 1e-3


# Rejected modules.


def _shared_parameter_module():
    module = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    module[2].weight = module[0].weight
    return module


class TwiceCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


class SkipAcrossBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = CustomBlock(4, 6, "none")
        self.second = CustomBlock(4, 6, "none")

    def forward(self, x):
        return self.second(torch.relu(self.first(x))) + x


class ScaledBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        return 0.5 * self.fc2(torch.relu(self.fc1(x))) + x


@pytest.mark.parametrize(
    "module, message",
    [
        (
            nn.Sequential(
                nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)
            ),
            r"'1' \(torch.nn.modules.batchnorm.BatchNorm1d\): batch normalisation",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 4)),
            r"'2' \(torch.nn.modules.dropout.Dropout\): dropout in training mode",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 4)),
            r"'1' \(torch.nn.modules.activation.LeakyReLU\): .*slope 0.2",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4)),
            r"'1' \(torch.nn.modules.activation.GELU\): resgrad reads only",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.ELU(2.0), nn.Linear(8, 4)),
            r"'1' \(torch.nn.modules.activation.ELU\): ELU with alpha 2.0",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.Softplus(beta=2), nn.Linear(8, 4)),
            r"'1' \(torch.nn.modules.activation.Softplus\): Softplus with beta 2",
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.Softplus(threshold=5), nn.Linear(8, 4)),
            r"'1' \(torch.nn.modules.activation.Softplus\): .*threshold 5",
        ),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)),
            r"'0' \(torch.nn.modules.flatten.Flatten\)",
        ),
        (
            nn.Sequential(
                nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)
            ),
            r"'4' \(torch.nn.modules.linear.Linear\): a Linear layer outside a block",
        ),
        (
            nn.Sequential(
                nn.Linear(4, 8),
                nn.ReLU(),
                nn.Linear(8, 4),
                nn.ReLU(),
                nn.Linear(4, 8),
                nn.Tanh(),
                nn.Linear(8, 4),
            ),
            (
                r"'5' \(torch.nn.modules.activation.Tanh\): it uses the activation "
                "'tanh' where the first block uses 'relu'"
            ),
        ),
        (
            nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 4)),
            (
                r"'2' \(torch.nn.modules.activation.ReLU\): an activation applied "
                "to a hidden activation"
            ),
        ),
        (
            _shared_parameter_module(),
            "The parameter '2.weight' is the same Parameter as '0.weight'",
        ),
        (
            TwiceCalled(),
            r"'fc' \(torch.nn.modules.linear.Linear\): the forward pass calls it twice",
        ),
        (
            SkipAcrossBlocks(),
            (
                r"'<root>' \(call of _operator.add\): an addition of a residual "
                "branch and a block input"
            ),
        ),
        (ScaledBranch(), r"'<root>' \(call of _operator.mul\)"),
        (nn.Sequential(), "returns a block input, which is not a block output"),
    ],
    ids=[
        "batch_norm",
        "dropout_training",
        "leaky_slope",
        "gelu",
        "elu_alpha",
        "softplus_beta",
        "softplus_threshold",
        "flatten",
        "trailing_linear",
        "mixed_activation",
        "double_activation",
        "shared_parameter",
        "layer_called_twice",
        "skip_across_blocks",
        "scaled_branch",
        "empty",
    ],
)
def test_from_module_rejects(module, message):
    with pytest.raises(ValueError, match=message):
        from_module(module)


class _TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 4)


class SteepLeakyBlock(_TwoLinears):
    def forward(self, x):
        return torch.add(self.fc2(F.leaky_relu(self.fc1(x), 0.2)), x)


class MethodBlock(_TwoLinears):
    def forward(self, x):
        return torch.add(x, self.fc2(self.fc1(x).relu())).tanh()


class GeluBlock(_TwoLinears):
    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x))) + x


class ScaledOutput(_TwoLinears):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) * self.scale


class DataDependent(_TwoLinears):
    def forward(self, x):
        if x.sum() > 0:
            return self.fc2(torch.relu(self.fc1(x)))
        return x


class TwoInputs(_TwoLinears):
    def forward(self, x, mask):
        return self.fc2(torch.relu(self.fc1(x)))


class InPlaceAddBlock(_TwoLinears):
    def forward(self, x):
        out = self.fc2(torch.relu(self.fc1(x)))
        out += x
        return out


def test_in_place_add_is_a_shortcut():
    module = InPlaceAddBlock().double()
    model = from_module(module)
    assert model.blocks[0].shortcut == "identity"
    _assert_same_forward(module, model)


def test_method_activation_and_torch_add():
    module = MethodBlock().double()
    model = from_module(module)
    assert model.blocks[0].shortcut == "identity"
    assert (model.activation, model.output_activation) == ("relu", "tanh")
    _assert_same_forward(module, model)


@pytest.mark.parametrize(
    "module, message",
    [
        (
            SteepLeakyBlock(),
            r"'<root>' \(call of torch.nn.functional.leaky_relu\): .*slope 0.2",
        ),
        (
            GeluBlock(),
            (
                r"'<root>' \(call of torch.nn.functional.gelu\): .*may call only "
                "the activations"
            ),
        ),
        (ScaledOutput(), "reads the parameter or buffer 'scale' outside an nn.Linear"),
        (DataDependent(), "Could not trace the forward pass of DataDependent"),
        (TwoInputs(), r"takes the inputs \['x', 'mask'\]"),
    ],
    ids=[
        "functional_leaky_slope",
        "functional_gelu",
        "own_parameter",
        "data_dependent",
        "two_inputs",
    ],
)
def test_from_module_rejects_forward(module, message):
    with pytest.raises(ValueError, match=message):
        from_module(module)


def test_from_module_names_first_unsupported_layer():
    module = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.LayerNorm(4), nn.GELU()
    )
    with pytest.raises(ValueError, match=r"'3' \(torch.nn.modules.normalization"):
        from_module(module)


def _clamp_output(module):
    module.register_forward_hook(lambda layer, inputs, output: output.clamp(-3, 3))
    return "The module (Sequential) has forward hooks or pre-hooks"


def _clamp_layer(module):
    module[2].register_forward_hook(lambda layer, inputs, output: output.clamp(-3, 3))
    return "The layer 2 (Linear) has forward hooks or pre-hooks"


def _clamp_input(module):
    module.register_forward_pre_hook(lambda layer, inputs: (inputs[0].clamp(-5, 5),))
    return "The module (Sequential) has forward hooks or pre-hooks"


@pytest.mark.parametrize("hook", [_clamp_output, _clamp_layer, _clamp_input])
def test_from_module_rejects_forward_hooks(hook):
    """A clamp of large values leaves the random check batch as it is, so
    the hooks themselves are refused."""
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    message = hook(module)
    with pytest.raises(ValueError, match=re.escape(message)):
        from_module(module)


def test_from_module_refuses_global_forward_hooks():
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda layer, inputs, output: output
    )
    try:
        with pytest.raises(ValueError, match="registered for every module"):
            from_module(module)
    finally:
        handle.remove()
    assert from_module(module).depth == 1


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_from_module_reads_older_weight_norm():
    """The older weight_norm and spectral_norm set the weight in a
    pre-hook, which the blocks read as it is."""
    torch.manual_seed(0)
    first = torch.nn.utils.weight_norm(nn.Linear(4, 8))
    second = torch.nn.utils.spectral_norm(nn.Linear(8, 4))
    module = nn.Sequential(first, nn.ReLU(), second).double().eval()
    x = 10 * torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(from_module(module)(x), expected)


@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm", "orthogonal"])
def test_from_module_reads_parametrized_weights(wrap):
    """torch.nn.utils.parametrizations computes the weight that the layer's
    weight property returns; the modules that compute it are no layers."""
    torch.manual_seed(0)
    parametrize_weight = getattr(nn.utils.parametrizations, wrap)
    first = parametrize_weight(nn.Linear(4, 4).double())
    module = nn.Sequential(first, nn.ReLU(), nn.Linear(4, 3).double()).eval()
    buffers = {k: v.clone() for k, v in module.state_dict().items()}
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
    model = from_module(module)
    torch.testing.assert_close(model.logits(x), expected)
    torch.testing.assert_close(model.blocks[0].W1, first.weight.detach())
    for key, value in module.state_dict().items():
        assert torch.equal(value, buffers[key]), key


@pytest.mark.parametrize("training", ["module", "parametrization"])
def test_from_module_refuses_parametrized_weights_in_training_mode(training):
    torch.manual_seed(0)
    first = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4))
    module = nn.Sequential(first, nn.ReLU(), nn.Linear(4, 3))
    if training == "parametrization":
        module.eval()
        first.parametrizations.weight.train()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match=r"'0' .*parametrized.*call module.eval\(\)"):
        from_module(module)
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_namespace_error_names_namespace():
    model = resgrad.ResidualMLP.init([4, 3], seed=0).convert(torch)
    weights = {k: nn.Parameter(v) for k, v in model.arrays().items()}
    with_parameters = model.replace_arrays(weights)
    x, y = np.zeros((2, 4)), np.array([0, 1])
    with pytest.raises(TypeError, match="model's namespace, torch, got x as a numpy"):
        resgrad.gradients(with_parameters, x, y)
    explicit = to_module(model, explicit=True)
    with pytest.raises(TypeError, match="takes a torch tensor, got x as a numpy"):
        explicit(x)


def test_explicit_gradient_needs_a_model_template():
    x = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="Expected a ResidualMLP as the template"):
        ExplicitGradient.apply("model", x)


def test_from_module_rejects_other_objects():
    with pytest.raises(TypeError, match="Expected a torch.nn.Module, got dict"):
        from_module({})


# Explicit gradients.


def _autograd_and_explicit(model, x, y, output="output"):
    """Return the autograd and ExplicitGradient gradients of one cross
    entropy, keyed like model.arrays() plus "input"."""
    results = []
    for explicit in (False, True):
        module = to_module(model)
        x_t = x.clone().requires_grad_(True)
        if explicit:
            out = explicit_forward(module, x_t, output)
        else:
            out = module(x_t) if output == "output" else module.logits(x_t)
        F.cross_entropy(out, y).backward()
        grads = {name: p.grad for name, p in module.named_arrays().items()}
        grads["input"] = x_t.grad
        results.append(grads)
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus", "elu"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_explicit_gradients_equal_autograd(shortcut, activation, bias, dtype):
    model = _model(
        shortcut,
        activation,
        bias,
        dtype=str(dtype).removeprefix("torch."),
        output_activation="sigmoid",
        post_activation="tanh",
    )
    x, y = _batch(model)
    expected, actual = _autograd_and_explicit(model, x, y)
    assert sorted(actual) == sorted(expected)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for name, grad in expected.items():
        assert actual[name].dtype == dtype, name
        assert reference.relative_error(actual[name], grad) <= tolerance, name


def test_explicit_logits_gradients_equal_autograd():
    model = _model("learned", "silu", output_activation="tanh")
    x, y = _batch(model)
    expected, actual = _autograd_and_explicit(model, x, y, output="logits")
    for name, grad in expected.items():
        assert reference.relative_error(actual[name], grad) <= 1e-12, name


@pytest.mark.parametrize("output", ["output", "logits"])
def test_explicit_output_may_change_in_place(output):
    # With the identity output activation the output is the last block's z;
    # the backward pass must not need it, as autograd's does not.
    model = _model("learned", "relu")
    x, y = _batch(model)
    grads = []
    for explicit in (False, True):
        module = to_module(model, explicit=explicit)
        x_t = x.clone().requires_grad_(True)
        out = module(x_t) if output == "output" else module.logits(x_t)
        out.sub_(0.5)
        F.relu(out, inplace=True)
        F.cross_entropy(out, y).backward()
        grads.append({"input": x_t.grad, **{
            name: p.grad for name, p in module.named_arrays().items()
        }})  # fmt: skip
    expected, actual = grads
    for name, grad in expected.items():
        assert reference.relative_error(actual[name], grad) <= 1e-12, name


@pytest.mark.parametrize(
    "call",
    [
        lambda model, row, label: resgrad.gradients(model, row[None], label[None]).loss,
        lambda model, row, label: resgrad.input_jacobian(model, row[None]),
        lambda model, row, label: resgrad.per_sample_norms(
            model, row[None], label[None]
        ),
    ],
    ids=["gradients", "input_jacobian", "per_sample_norms"],
)
def test_vmap_over_resgrad_names_the_batch(call):
    # resgrad reads its inputs' values to check them, which vmap forbids, so
    # the message names vmap in place of torch's generic .item() error.
    model = _model("learned", "relu").convert(torch)
    x, y = _batch(model)
    with pytest.raises(TypeError, match="x is batched by torch.func.vmap"):
        torch.func.vmap(lambda row, label: call(model, row, label))(x, y)
    # grad's wrappers hold values, so resgrad runs under it.
    value = torch.func.grad(lambda row: resgrad.gradients(model, row, y).loss)(x)
    assert value.shape == x.shape


class _DoubledLinear(nn.Linear):
    def forward(self, a):
        return 2 * super().forward(a)


def _hook_linear(module):
    module.blocks[1].linear1.register_forward_hook(lambda *args: None)


def _hook_block(module):
    module.blocks[0].register_forward_pre_hook(lambda *args: None)


def _override_forward(module):
    old = module.blocks[0].linear2
    new = _DoubledLinear(old.in_features, old.out_features, dtype=old.weight.dtype)
    new.load_state_dict(old.state_dict())
    module.blocks[0].linear2 = new


def _weight_norm(module):
    nn.utils.parametrizations.weight_norm(module.blocks[0].shortcut)


def _backward_hook(module):
    module.blocks[0].linear1.register_full_backward_hook(lambda *args: None)


def _replace_forward(module):
    linear = module.blocks[1].linear2
    linear.forward = lambda a: 2 * nn.Linear.forward(linear, a)


@pytest.mark.parametrize(
    ("change", "layer", "reason"),
    [
        (_hook_linear, "blocks.1.linear1", "it has forward hooks"),
        (_hook_block, "blocks.0", "it has forward hooks"),
        (_override_forward, "blocks.0.linear2", "_DoubledLinear overrides Linear"),
        (_weight_norm, "blocks.0.shortcut", "its weights are parametrized"),
        (_backward_hook, "blocks.0.linear1", "it has backward hooks"),
        (_replace_forward, "blocks.1.linear2", "its forward is replaced"),
    ],
)
def test_explicit_module_rejects_layers_it_would_skip(change, layer, reason):
    # The autograd module runs each layer's own code; the explicit one reads
    # the weights, so it must refuse rather than give another output.
    model = _model("learned", "relu")
    x, _ = _batch(model)
    module = to_module(model)
    change(module)
    module(x)
    explicit = ExplicitResidualMLP.wrap(module)
    with pytest.raises(ValueError, match=f"cannot run {layer}: {reason}"):
        explicit(x)
    built = to_module(model, explicit=True)
    change(built)
    with pytest.raises(ValueError, match=f"cannot run {layer}: {reason}"):
        built.logits(x)


def test_explicit_module_rejects_hooked_identity_shortcut():
    model = _model("identity", "relu")
    x, _ = _batch(model)
    module = to_module(model, explicit=True)
    assert isinstance(module.blocks[1].shortcut, nn.Identity)
    module.blocks[1].shortcut.register_forward_hook(lambda layer, a, out: 2 * out)
    with pytest.raises(ValueError, match="cannot run blocks.1.shortcut: it has"):
        module(x)


@pytest.mark.parametrize("shape", [(), (3, 2)])
def test_explicit_module_takes_leading_axes_like_linear(shape):
    model = _model("learned", "relu")
    module = to_module(model)
    explicit = to_module(model, explicit=True)
    x, _ = _batch(model)
    rows = x[: math.prod(shape) or 1].reshape(*shape, x.shape[1])
    rows = rows.clone().requires_grad_(True)
    expected = module(rows)
    actual = explicit(rows)
    assert actual.shape == expected.shape == (*shape, model.n_classes)
    assert reference.relative_error(actual, expected) <= 1e-14
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), rows)
    (grad_actual,) = torch.autograd.grad(actual.square().sum(), rows)
    assert reference.relative_error(grad_actual, grad_expected) <= 1e-12


@pytest.mark.parametrize("layer", [nn.Linear(3, 3), nn.ReLU(), nn.Identity()])
def test_from_module_names_a_lone_layer(layer):
    name = type(layer).__name__
    with pytest.raises(ValueError, match=f"A lone {name} is not a residual network"):
        from_module(layer)


def test_explicit_forward_equals_module():
    model = _model("identity", "softplus", output_activation="softplus")
    module = to_module(model)
    explicit = ExplicitResidualMLP.wrap(module)
    x, _ = _batch(model)
    assert torch.equal(explicit(x), model(x))
    assert torch.equal(explicit.logits(x), model.logits(x))
    assert reference.relative_error(explicit(x), module(x)) <= 1e-14


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_explicit_gradient_passes_gradcheck(shortcut):
    model = reference.random_model(2, "tanh", shortcut, output_activation="softplus")
    model = model.convert(torch)
    arrays = [value.clone().requires_grad_(True) for value in model.arrays().values()]
    x, _ = _batch(model, n=3)
    x.requires_grad_(True)

    def function(x, *arrays):
        return ExplicitGradient.apply(model, x, *arrays)

    assert torch.autograd.gradcheck(function, (x, *arrays))


def test_explicit_gradient_input_only():
    model = _model("learned")
    x, y = _batch(model)
    x.requires_grad_(True)
    frozen = [value.clone() for value in model.arrays().values()]
    out = ExplicitGradient.apply(model, x, *frozen)
    F.cross_entropy(out, y).backward()
    expected = resgrad.gradients(model, x.detach(), y)
    assert reference.relative_error(x.grad, expected.input) <= 1e-12


def test_explicit_gradient_has_no_second_derivative():
    model = _model("learned")
    module = to_module(model, explicit=True)
    x, _ = _batch(model)
    x.requires_grad_(True)
    with pytest.raises(RuntimeError, match="no second derivatives"):
        torch.autograd.grad(module(x).sum(), [x], create_graph=True)


def test_explicit_gradient_detects_in_place_change():
    model = _model("learned")
    module = to_module(model, explicit=True)
    x, y = _batch(model)
    loss = F.cross_entropy(module(x), y)
    with torch.no_grad():
        module.blocks[0].linear1.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_explicit_module_is_a_torch_residual_mlp():
    model = _model("none")
    explicit = to_module(model, explicit=True)
    plain = to_module(model)
    assert isinstance(explicit, TorchResidualMLP)
    assert list(explicit.state_dict()) == list(plain.state_dict())
    back = from_module(explicit)
    for name, value in model.arrays().items():
        assert torch.equal(back.arrays()[name], value), name


def test_wrap_shares_parameters():
    module = to_module(_model("learned"))
    explicit = ExplicitResidualMLP.wrap(module)
    for (name, a), (_, b) in zip(
        module.named_parameters(), explicit.named_parameters()
    ):
        assert a is b, name


def test_explicit_forward_rejects_other_modules():
    with pytest.raises(TypeError, match="Expected a TorchResidualMLP, got Sequential"):
        explicit_forward(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2))


@pytest.mark.parametrize(
    "dtype, fix",
    [
        (torch.float32, "or the module with module.to(torch.float32)."),
        (torch.int64, "cast x with x.to(torch.float64)."),
    ],
)
@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("output", ["forward", "logits"])
def test_modules_name_a_dtype_fix(dtype, fix, explicit, output):
    module = to_module(_model("learned"), explicit=explicit)
    with pytest.raises(TypeError) as caught:
        getattr(module, output)(torch.zeros(1, 5, dtype=dtype))
    message = str(caught.value)
    assert f"the module's dtype), got {dtype}" in message
    assert message.endswith(fix)
    assert "model.convert" not in message


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("output", ["forward", "logits"])
def test_modules_name_a_width_fix(explicit, output):
    module = to_module(_model("learned"), explicit=explicit)
    with pytest.raises(ValueError, match=r"have 5 features \(the mod.*, got 4\.$"):
        getattr(module, output)(torch.zeros(3, 4, dtype=torch.float64))


def test_explicit_forward_rejects_shortcut_bias():
    module = to_module(_model("learned"))
    module.blocks[1].shortcut = nn.Linear(7, 4).double()
    with pytest.raises(ValueError, match=r"'blocks.1.shortcut' .*with a bias"):
        explicit_forward(module, torch.zeros(1, 5, dtype=torch.float64))


def test_explicit_forward_rejects_unknown_output():
    module = to_module(_model("learned"))
    with pytest.raises(ValueError, match="Unknown output 'scores'"):
        explicit_forward(module, torch.zeros(1, 5, dtype=torch.float64), "scores")


# Training with torch.optim.


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
}


def _train(module, optimizer_name, steps=20, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    optimizer = OPTIMIZERS[optimizer_name](module.parameters())
    dtype = next(module.parameters()).dtype
    width = module.blocks[0].linear1.in_features
    classes = module.blocks[-1].linear2.out_features
    for _ in range(steps):
        x = torch.randn(16, width, generator=generator, dtype=dtype).to(device)
        y = torch.randint(0, classes, (16,), generator=generator).to(device)
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()
    return module


def _backward_node(output):
    """Return the name of the autograd node that backpropagates ``output``."""
    return type(output.grad_fn).__name__


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("shortcut", ["learned", "identity"])
def test_training_matches_autograd(optimizer, shortcut):
    model = _model(shortcut, "tanh", post_activation="softplus")
    autograd = to_module(model)
    explicit = to_module(model, explicit=True)
    x, _ = _batch(model)
    assert _backward_node(autograd(x)) != "ExplicitGradientBackward"
    assert _backward_node(explicit(x)) == "ExplicitGradientBackward"
    autograd = _train(autograd, optimizer)
    explicit = _train(explicit, optimizer)
    start = to_module(model)
    for (name, a), (_, b), (_, c) in zip(
        autograd.named_parameters(),
        explicit.named_parameters(),
        start.named_parameters(),
    ):
        assert not torch.equal(a, c), f"{name} did not change"
        assert reference.relative_error(b, a) <= 1e-6, name


# Third-party tools on the explicit module.


def test_captum_saliency_on_explicit_module():
    attr = pytest.importorskip("captum.attr")
    warnings.filterwarnings("ignore", module="captum")
    model = _model("learned", "softplus")
    x, y = _batch(model)
    saliency = attr.Saliency(to_module(model, explicit=True))
    actual = saliency.attribute(x.clone(), target=y, abs=False)
    _, expected = resgrad.input_gradient(model, x, y, loss="score")
    assert reference.relative_error(actual, expected) <= 1e-12


def test_torchattacks_fgsm_on_explicit_module():
    torchattacks = pytest.importorskip("torchattacks")
    model = _model("learned", "tanh", dtype="float32")
    x = torch.rand(8, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(1))
    adversarial = [
        torchattacks.FGSM(to_module(model, explicit=explicit).eval(), eps=0.1)(x, y)
        for explicit in (False, True)
    ]
    assert not torch.equal(adversarial[0], x)
    torch.testing.assert_close(adversarial[1], adversarial[0], rtol=0.0, atol=1e-6)


# CUDA: skipped where no GPU is present.


@CUDA
@pytest.mark.parametrize("method", ["backprop", "product"])
def test_cuda_gradients_match_cpu(method):
    model = _model("learned", "tanh")
    x, y = _batch(model)
    cuda = model.convert(device="cuda")
    grads = resgrad.gradients(cuda, x.cuda(), y.cuda(), method=method)
    expected = resgrad.gradients(model, x, y, method=method)
    assert grads.input.device.type == "cuda"
    for name, value in expected.arrays().items():
        assert grads.arrays()[name].device.type == "cuda", name
        assert reference.relative_error(grads.arrays()[name], value) <= 1e-12, name


@CUDA
@pytest.mark.parametrize("mode", ["reverse", "forward", "product"])
def test_cuda_input_jacobian_matches_cpu(mode):
    model = _model("identity", "silu")
    x, _ = _batch(model)
    J = resgrad.input_jacobian(model.convert(device="cuda"), x.cuda(), mode)
    assert J.device.type == "cuda"
    assert reference.relative_error(J, resgrad.input_jacobian(model, x, mode)) <= 1e-12


@CUDA
def test_cuda_modules_stay_on_device():
    model = _model("learned").convert(device="cuda")
    module = to_module(model)
    assert all(p.device.type == "cuda" for p in module.parameters())
    back = from_module(module)
    assert all(value.device.type == "cuda" for value in back.arrays().values())


@CUDA
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_cuda_training_matches_autograd(optimizer):
    model = _model("learned", "tanh").convert(device="cuda")
    autograd = _train(to_module(model), optimizer, device="cuda")
    explicit = _train(to_module(model, explicit=True), optimizer, device="cuda")
    for (name, a), (_, b) in zip(
        autograd.named_parameters(), explicit.named_parameters()
    ):
        assert b.device.type == "cuda", name
        assert reference.relative_error(b, a) <= 1e-6, name


def test_meta_tensors_name_the_device():
    model = resgrad.ResidualMLP.init([5, 4, 3], seed=0)
    x = torch.empty(3, 5, dtype=torch.float64, device="meta")
    y = torch.tensor([0, 1, 2])
    message = "is on PyTorch's meta device, which has shapes but no values"
    net = model.convert(torch)
    # The forward pass and the Jacobian once advised moving the model to
    # the meta device, which convert refuses.
    for call in (
        lambda: resgrad.gradients(net, x, y),
        lambda: net(x),
        lambda: resgrad.input_jacobian(net, x),
    ):
        with pytest.raises(ValueError, match=f"x {message}"):
            call()
    with pytest.raises(ValueError, match=f"blocks.0.W1 {message}"):
        from_module(to_module(model).to("meta"))


def test_explicit_module_rejects_torch_func():
    module = to_module(resgrad.ResidualMLP.init([5, 4, 3], seed=0), explicit=True)
    x = torch.rand(2, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda v: module(v).sum())(x)


def test_to_module_flag_of_text_raises():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    with pytest.raises(TypeError, match="Expected explicit to be True or False"):
        to_module(model, explicit="no")


@pytest.mark.parametrize("explicit", [True, False])
def test_autocast_is_refused_with_the_way_out(explicit):
    model = resgrad.ResidualMLP.init([6, 5, 3], seed=0, dtype="float32")
    x, y = torch.rand(2, 6), torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="does not run under torch.autocast"):
            if explicit:
                to_module(model, explicit=True)(x)
            else:
                resgrad.gradients(model.convert(torch), x, y)
        with torch.autocast("cpu", enabled=False):
            assert resgrad.gradients(model.convert(torch), x, y).loss.isfinite()


def test_module_repr_names_activations():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0, activation="tanh")
    text = repr(to_module(model))
    assert "post_activation='tanh', output_activation='identity'" in text
    assert text.count("activation='tanh'\n") == 2


def test_module_signatures_hide_activation_table():
    import inspect

    from resgrad.torch import TorchBlock, TorchResidualMLP

    for method in (TorchBlock.forward, TorchResidualMLP.logits):
        assert inspect.signature(method).parameters["functions"].default is None


@pytest.mark.parametrize("explicit", [False, True])
def test_to_module_leaves_global_generator(explicit):
    model = resgrad.ResidualMLP.init([8, 6, 3], seed=0)
    state = torch.get_rng_state()
    module = to_module(model, explicit=explicit)
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.rand(
        4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    np.testing.assert_allclose(module(x).detach().numpy(), model(x.numpy()), rtol=1e-12)


@pytest.mark.parametrize("name", ["saliency", "baseline", "noise", "start"])
def test_numpy_argument_beside_torch_x_is_named(name):
    from resgrad import attacks, saliency

    model = resgrad.ResidualMLP.init([8, 6, 3], seed=0, xp=torch, dtype="float32")
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0])
    calls = {
        "saliency": lambda: saliency.deletion_curve(model, x, np.zeros((4, 8))),
        "baseline": lambda: saliency.integrated_gradients(
            model, x, baseline=np.zeros(8, np.float32)
        ),
        "noise": lambda: saliency.smoothgrad(
            model, x, 0, noise=np.zeros((2, 4, 8), np.float32)
        ),
        "start": lambda: attacks.pgd(
            model, x, y, 0.1, start=np.zeros((4, 8), np.float32)
        ),
    }
    message = f"^{name} is a numpy.ndarray but x is a torch.Tensor; pass {name} "
    with pytest.raises(TypeError, match=message):
        calls[name]()
