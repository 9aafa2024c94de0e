"""Activations and their closed-form derivatives against PyTorch, kinks
included."""

import warnings

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest
import reference

import resgrad
from resgrad.activations import LEAKY_RELU_SLOPE

NAMES = list(resgrad.ACTIVATIONS)
# Kinks, tiny values, the range where exp overflows in float64, and a ramp.
POINTS = np.concatenate(
    [
        [0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 20.0, 21.0, -745.0, 745.0, 1000.0],
        [-1000.0, -40.0, 40.0],
        np.linspace(-6.0, 6.0, 49),
    ]
)


@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_torch(name):
    activation = resgrad.get_activation(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = activation.value(xp_numpy, POINTS)
    expected = reference.TORCH_ACTIVATIONS[name](reference._torch_input(POINTS))
    np.testing.assert_allclose(value, expected.numpy(), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_autograd(name):
    """The closed form equals autograd's derivative, at the kinks too."""
    activation = resgrad.get_activation(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        derivative = activation.derivative(xp_numpy, POINTS)
    expected = reference.autograd_derivative(name, POINTS)
    # tanh' = 1 - tanh^2 cancels where tanh is near +-1: its absolute error
    # stays near float64's epsilon, but not its relative error.
    np.testing.assert_allclose(derivative, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_through_value_gives_derivative(name):
    """Autograd through resgrad's own value function on torch tensors, as when
    a weight requires a gradient, gives the closed-form derivative, at the
    kinks too."""
    import array_api_compat.torch as xp_torch
    import torch

    activation = resgrad.get_activation(name)
    u = torch.tensor(POINTS, requires_grad=True)
    (through_value,) = torch.autograd.grad(activation.value(xp_torch, u).sum(), u)
    derivative = activation.derivative(xp_numpy, POINTS)
    np.testing.assert_allclose(
        through_value.numpy(), derivative, rtol=1e-14, atol=1e-15
    )


def _gradient_or_zeros(output, u):
    """Return d(sum output)/du, or zeros where ``output`` has no graph."""
    import torch

    if not output.requires_grad:
        return np.zeros(u.shape)
    (gradient,) = torch.autograd.grad(output.sum(), u, allow_unused=True)
    return np.zeros(u.shape) if gradient is None else gradient.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_autograd_through_derivative_gives_second_derivative(name):
    """Autograd through the closed-form derivative, as when autograd
    differentiates resgrad's gradients, gives PyTorch's second derivative,
    at the kinks too."""
    import array_api_compat.torch as xp_torch
    import torch

    activation = resgrad.get_activation(name)
    u = torch.tensor(POINTS, requires_grad=True)
    through_derivative = _gradient_or_zeros(activation.derivative(xp_torch, u), u)
    t = torch.tensor(POINTS, requires_grad=True)
    value = reference.TORCH_ACTIVATIONS[name](t)
    (first,) = torch.autograd.grad(value.sum(), t, create_graph=True)
    expected = _gradient_or_zeros(first, t)
    # torch's softplus'' is NaN at -745 and -1000, where exp underflows.
    known = np.isfinite(expected)
    assert known.sum() >= len(POINTS) - 2
    # torch's silu'' cancels at u = 21, where its relative error is 1e-7.
    np.testing.assert_allclose(
        through_derivative[known], expected[known], rtol=1e-6, atol=1e-15
    )


@pytest.mark.parametrize("name", NAMES)
def test_derivative_keeps_shape_and_dtype(name):
    activation = resgrad.get_activation(name)
    u = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    for result in (activation.value(xp_numpy, u), activation.derivative(xp_numpy, u)):
        assert result.shape == (3, 4)
        assert result.dtype == np.float32


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_bell_derivative_at_huge_input_is_quiet(name):
    u = np.array([-1e308, 1e308, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        derivative = resgrad.get_activation(name).derivative(xp_numpy, u)
    assert derivative[0] == 0
    assert derivative[1] == 0
    assert derivative[2] == (1.0 if name == "tanh" else 0.25)


def test_relu_derivative_at_zero_is_zero():
    derivative = resgrad.get_activation("relu").derivative(xp_numpy, np.zeros(3))
    assert np.array_equal(derivative, np.zeros(3))


def test_leaky_relu_derivative_at_zero_is_slope():
    derivative = resgrad.get_activation("leaky_relu").derivative(xp_numpy, np.zeros(3))
    assert np.array_equal(derivative, np.full(3, LEAKY_RELU_SLOPE))


def test_unknown_activation_raises():
    with pytest.raises(
        ValueError, match="Unknown activation 'gelu'; expected one of: identity"
    ):
        resgrad.get_activation("gelu")


def test_non_string_activation_raises():
    with pytest.raises(ValueError, match="Unknown activation None"):
        resgrad.get_activation(None)


# A network evaluated exactly at the kinks.


def _kink_model(activation):
    """Return a network with integer weights and zero biases, and integer
    inputs, so that many ``u^l`` and ``z^l`` are exactly 0. Row 0 of ``x``
    is all zeros."""
    rng = np.random.default_rng(5)
    sizes, hidden = [4, 4, 3], [5, 6]
    blocks = []
    for p_in, q, p_out in zip(sizes[:-1], hidden, sizes[1:]):
        blocks.append(
            resgrad.Block(
                W1=rng.integers(-2, 3, (q, p_in)).astype(np.float64),
                W2=rng.integers(-2, 3, (p_out, q)).astype(np.float64),
                W3=rng.integers(-1, 2, (p_out, p_in)).astype(np.float64),
                b1=np.zeros(q),
                b2=np.zeros(p_out),
            )
        )
    model = resgrad.ResidualMLP(blocks, activation=activation)
    x = rng.integers(-2, 3, (12, 4)).astype(np.float64)
    x[0] = 0.0
    y = rng.integers(0, 3, 12)
    return model, x, y


def _count_zeros(model, x):
    traces, _ = model.trace(x)
    u_zeros = sum(int(np.sum(t.u == 0)) for t in traces)
    z_zeros = int(np.sum(traces[0].z == 0))
    return u_zeros, z_zeros


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("method", ["backprop", "product"])
def test_network_at_kink_matches_autograd(activation, method, backend):
    """Where ``u^l`` or ``z^l`` is exactly 0, the gradients follow PyTorch's
    ``relu'(0) = 0`` and ``leaky_relu'(0) = slope``, on NumPy arrays and on
    torch tensors."""
    import torch

    model, x, y = _kink_model(activation)
    u_zeros, z_zeros = _count_zeros(model, x)
    assert u_zeros >= 10
    assert z_zeros >= 4
    arguments = (model, x, y)
    if backend == "torch":
        arguments = (model.convert(torch), torch.asarray(x), torch.asarray(y))
    grads = resgrad.gradients(*arguments, method=method)
    expected = reference.autograd_gradients(model, x, y)
    reference.assert_gradients_close(reference.gradient_dict(grads), expected, 1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_kink_convention_changes_gradients(activation, monkeypatch):
    """The kink test above can fail: with ``g'(0) = 1`` instead, autograd
    gives different gradients on the same network."""
    import torch

    slope = 0.0 if activation == "relu" else LEAKY_RELU_SLOPE
    monkeypatch.setitem(
        reference.TORCH_ACTIVATIONS,
        activation,
        lambda t: torch.where(t >= 0, t, slope * t),
    )
    model, x, y = _kink_model(activation)
    grads = reference.gradient_dict(resgrad.gradients(model, x, y))
    other = reference.autograd_gradients(model, x, y)
    assert reference.relative_error(grads["input"], other["input"]) > 1e-3
    assert reference.relative_error(grads["blocks.0.b1"], other["blocks.0.b1"]) > 1e-3


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_per_sample_gradients_at_kink_match_autograd(activation):
    model, x, y = _kink_model(activation)
    per_sample = resgrad.per_sample_gradients(model, x, y)
    expected = reference.autograd_per_sample(model, x, y)
    for i in (0, 1, 5):
        actual = {"loss": per_sample.loss[i], "input": per_sample.input[i : i + 1]}
        actual.update({k: v[i] for k, v in per_sample.arrays().items()})
        reference.assert_gradients_close(actual, expected[i], 1e-12, f"sample {i}")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_jacobian_at_kink_matches_jacrev(activation):
    model, x, _ = _kink_model(activation)
    expected = reference.autograd_jacobian(model, x)
    for mode in ("reverse", "forward", "product"):
        J = resgrad.input_jacobian(model, x, mode)
        assert reference.relative_error(J, expected) <= 1e-12, mode


@pytest.mark.parametrize(
    "name, exact",
    [
        ("tanh", lambda u: 1 / np.cosh(u) ** 2),
        ("sigmoid", lambda u: 1 / (4 * np.cosh(u / 2) ** 2)),
        ("silu", lambda u: 1 / (1 + np.exp(-u)) + u / (4 * np.cosh(u / 2) ** 2)),
    ],
)
def test_saturating_derivatives_keep_relative_precision(name, exact):
    # 1 - tanh(u)^2 is off by 4% at u = 18 and 0 from u = 19.0 on, and
    # s (1 - s) is 0 from u = 37 on; the derivatives must stay exact there.
    u = np.array([-40.0, -18.0, -1.0, 0.0, 0.5, 15.0, 18.0, 25.0, 40.0])
    derivative = resgrad.get_activation(name).derivative(xp_numpy, u)
    np.testing.assert_allclose(derivative, exact(u), rtol=1e-13, atol=0)
