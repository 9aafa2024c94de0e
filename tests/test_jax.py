"""The core on JAX arrays through the array API, against the NumPy results.

Skipped unless JAX is installed; the test extra installs it on Python 3.11
and later, which JAX needs. This file imports neither torch nor the test
helpers, so that it also runs in an environment with JAX and without
PyTorch (``pytest --noconftest``).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import resgrad

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

SHORTCUTS = ("learned", "identity", "none")
LOSSES = list(resgrad.LOSSES)
METHODS = ("backprop", "product")
MODES = ("reverse", "forward", "product", "auto")
TOLERANCE = {"float64": 1e-12, "float32": 1e-4}


def _model(shortcut, activation="tanh", output_activation="identity"):
    """Return a float64 NumPy network of 3 blocks with nonzero biases."""
    sizes = [4, 4, 4, 4] if shortcut == "identity" else [5, 7, 4, 3]
    model = resgrad.ResidualMLP.init(
        sizes,
        [6, 9, 5],
        activation=activation,
        output_activation=output_activation,
        shortcut=shortcut,
        seed=0,
    )
    rng = np.random.default_rng(1)
    biases = {
        name: 0.5 * rng.standard_normal(value.shape)
        for name, value in model.arrays().items()
        if name.endswith(("b1", "b2"))
    }
    return model.replace_arrays(biases)


def _batch(model, n=5):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, model.sizes[0]))
    y = rng.integers(0, model.n_classes, size=n)
    return x, y


def _jax_case(model, x, y, dtype="float64"):
    return (
        model.convert(jnp, dtype=dtype),
        jnp.asarray(x, dtype=getattr(jnp, dtype)),
        jnp.asarray(y),
    )


def _assert_close(actual, expected, dtype, name):
    assert isinstance(actual, jax.Array), f"{name}: {type(actual).__name__}"
    assert actual.dtype == getattr(jnp, dtype), f"{name}: {actual.dtype}"
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, name
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.3g}"


# Each new shape and dtype costs JAX a compilation per operation, so only
# one activation runs in float32.
@pytest.mark.parametrize(
    "activation, dtype",
    [
        ("relu", "float64"),
        ("sigmoid", "float64"),
        ("softplus", "float64"),
        ("silu", "float64"),
        ("tanh", "float32"),
    ],
)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_jax_gradients_equal_numpy(shortcut, activation, dtype):
    model = _model(shortcut, activation, output_activation=activation)
    x, y = _batch(model)
    j_model, j_x, j_y = _jax_case(model, x, y, dtype)
    for loss, method in itertools.product(LOSSES, METHODS):
        context = f"{loss} {method}"
        grads = resgrad.gradients(j_model, j_x, j_y, loss, method=method)
        expected = resgrad.gradients(model, x, y, loss, method="backprop")
        _assert_close(grads.loss, expected.loss, dtype, f"{context} loss")
        _assert_close(grads.input, expected.input, dtype, f"{context} input")
        assert sorted(grads.arrays()) == sorted(expected.arrays())
        for name, value in expected.arrays().items():
            _assert_close(grads.arrays()[name], value, dtype, f"{context} {name}")


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_jax_backprop_equals_product(shortcut):
    model = _model(shortcut, "tanh", output_activation="sigmoid")
    j_model, j_x, j_y = _jax_case(model, *_batch(model))
    backprop = resgrad.gradients(j_model, j_x, j_y, method="backprop")
    product = resgrad.gradients(j_model, j_x, j_y, method="product")
    _assert_close(product.input, backprop.input, "float64", "input")
    for name, value in backprop.arrays().items():
        _assert_close(product.arrays()[name], value, "float64", name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_jax_input_jacobian_equals_numpy(shortcut, mode):
    model = _model(shortcut, "silu", output_activation="silu")
    x, y = _batch(model)
    j_model, j_x, _ = _jax_case(model, x, y)
    J = resgrad.input_jacobian(j_model, j_x, mode)
    _assert_close(J, resgrad.input_jacobian(model, x, mode), "float64", mode)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_jax_per_sample_functions_equal_numpy(shortcut, loss):
    model = _model(shortcut, "softplus", output_activation="tanh")
    x, y = _batch(model)
    j_model, j_x, j_y = _jax_case(model, x, y)

    norms = resgrad.per_sample_norms(j_model, j_x, j_y, loss)
    _assert_close(
        norms, resgrad.per_sample_norms(model, x, y, loss), "float64", "norms"
    )

    losses, dx = resgrad.input_gradient(j_model, j_x, j_y, loss)
    expected_losses, expected_dx = resgrad.input_gradient(model, x, y, loss)
    _assert_close(losses, expected_losses, "float64", "input_gradient losses")
    _assert_close(dx, expected_dx, "float64", "input_gradient dx")

    per_sample = resgrad.per_sample_gradients(j_model, j_x, j_y, loss)
    expected = resgrad.per_sample_gradients(model, x, y, loss)
    for name, value in expected.arrays().items():
        _assert_close(per_sample.arrays()[name], value, "float64", name)


def test_jax_per_sample_norms_equal_materialised_gradients():
    model = _model("learned", "tanh")
    j_model, j_x, j_y = _jax_case(model, *_batch(model))
    per_sample = resgrad.per_sample_gradients(j_model, j_x, j_y)
    squares = sum(
        jnp.sum(jnp.reshape(value, (value.shape[0], -1)) ** 2, axis=1)
        for value in per_sample.arrays().values()
    )
    norms = resgrad.per_sample_norms(j_model, j_x, j_y)
    _assert_close(norms, jnp.sqrt(squares), "float64", "norms")


def test_jax_convert_round_trip_keeps_weights():
    model = _model("learned")
    j_model = model.convert(jnp)
    for name, value in j_model.arrays().items():
        assert isinstance(value, jax.Array), name
        assert value.dtype == jnp.float64, name
    back = j_model.convert(np)
    for name, value in model.arrays().items():
        assert isinstance(back.arrays()[name], np.ndarray), name
        np.testing.assert_array_equal(back.arrays()[name], value, err_msg=name)


def test_jax_forward_equals_numpy():
    model = _model("identity", "elu", output_activation="sigmoid")
    x, y = _batch(model)
    j_model, j_x, _ = _jax_case(model, x, y)
    _assert_close(j_model(j_x), model(x), "float64", "output")
    _assert_close(j_model.logits(j_x), model.logits(x), "float64", "logits")
    np.testing.assert_array_equal(np.asarray(j_model.predict(j_x)), model.predict(x))


@pytest.mark.parametrize("name", sorted(resgrad.activations.ACTIVATIONS))
def test_jax_grad_through_value_gives_derivative(name):
    activation = resgrad.activations.get_activation(name)
    xp = resgrad._arrays.array_api_compat.array_namespace(jnp.zeros(1))
    points = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    through_value = jax.vmap(jax.grad(lambda u: activation.value(xp, u)))(points)
    np.testing.assert_allclose(
        np.asarray(through_value),
        np.asarray(activation.derivative(xp, points)),
        rtol=1e-14,
        atol=1e-15,
    )


TRANSFORMS = {
    "jit over x": lambda model, x, y: jax.jit(
        lambda v: resgrad.gradients(model, v, y).input
    )(x),
    "jit over y": lambda model, x, y: jax.jit(
        lambda t: resgrad.gradients(model, x, t).input
    )(y),
    "grad": lambda model, x, y: jax.grad(lambda v: resgrad.gradients(model, v, y).loss)(
        x
    ),
    "vmap": lambda model, x, y: jax.vmap(
        lambda v: resgrad.input_jacobian(model, v[None])
    )(x),
    "jit of an attack": lambda model, x, y: jax.jit(
        lambda v: resgrad.attacks.fgsm(model, v, y, eps=0.1).x
    )(x),
}


@pytest.mark.parametrize("transform", TRANSFORMS.values(), ids=list(TRANSFORMS))
def test_jax_transforms_raise_a_clear_error(transform):
    model = _model("learned")
    model, x, y = _jax_case(model, *_batch(model))
    with pytest.raises(TypeError, match="JAX tracer: resgrad ran inside jax.jit"):
        transform(model, x, y)


def test_jax_attacks_without_64_bit_mode_warn_nothing():
    """Without 64-bit mode JAX warns at every int64 request, so resgrad
    requests the namespace's default integer dtype instead."""
    model = _model("learned")
    x, y = _batch(model)
    jax.config.update("jax_enable_x64", False)
    try:
        model, x, y = _jax_case(model, x, y, "float32")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            box = {"bounds": (-4.0, 4.0)}
            result = resgrad.attacks.pgd(model, x, y, eps=0.1, steps=1, seed=0, **box)
            other = (y + 1) % model.n_classes
            targeted = resgrad.attacks.jsma(model, x, y, target=other, gamma=0.4, **box)
        for counts in (result.steps, result.l0, targeted.steps, targeted.l0):
            assert counts.dtype == jnp.int32
        # Within eps exactly, though JAX cannot compute in float64 here:
        # near 0, x + 0.25 rounds up past it in float32.
        near_zero = jnp.asarray(
            np.linspace(1e-5, 1e-3, x.size).reshape(x.shape), jnp.float32
        )
        fgsm = resgrad.attacks.fgsm(model, near_zero, y, eps=0.25)
        moved = np.asarray(fgsm.x_adv, np.float64) - np.asarray(near_zero, np.float64)
        assert np.abs(moved).max() <= 0.25
    finally:
        jax.config.update("jax_enable_x64", True)


def test_jax_index_dtype_follows_64_bit_mode():
    """The mode can change between calls, so the dtype is not cached."""
    from resgrad._arrays import index_dtype

    assert index_dtype(jnp) == jnp.int64
    jax.config.update("jax_enable_x64", False)
    try:
        assert index_dtype(jnp) == jnp.int32
    finally:
        jax.config.update("jax_enable_x64", True)
