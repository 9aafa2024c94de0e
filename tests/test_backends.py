"""The core on PyTorch tensors and on a strict array-API namespace, and the
PyTorch module export."""

import itertools
import warnings

import array_api_strict
import numpy as np
import pytest
import reference
import torch

import resgrad
from resgrad.torch import to_module

ACTIVATIONS = list(resgrad.ACTIVATIONS)
SHORTCUTS = ("learned", "identity", "none")
LOSSES = list(resgrad.LOSSES)
METHODS = ("backprop", "product")
MODES = ("reverse", "forward", "product", "auto")
# float32 carries about 7 digits; a few blocks of products lose one or two.
STRICT_ARRAY = type(array_api_strict.asarray(0.0))
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
DTYPES = [torch.float64, torch.float32]


def _torch_case(model, x, y, dtype):
    return (
        model.convert(torch, dtype=dtype),
        torch.asarray(x, dtype=dtype),
        torch.asarray(y),
    )


def _assert_torch(value, dtype, name=""):
    assert isinstance(value, torch.Tensor), f"{name}: {type(value).__name__}"
    assert value.dtype == dtype, f"{name}: {value.dtype}"


# PyTorch tensors.


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_torch_gradients_match_autograd(dtype, activation, shortcut):
    """Both methods on torch tensors, every loss and both output
    activations, against float64 autograd."""
    for output in ("identity", activation):
        model = reference.random_model(
            3, activation, shortcut, output_activation=output
        )
        x, y = reference.random_batch(model, 6)
        t_model, t_x, t_y = _torch_case(model, x, y, dtype)
        for loss, method in itertools.product(LOSSES, METHODS):
            grads = resgrad.gradients(t_model, t_x, t_y, loss, method=method)
            context = f"output={output} loss={loss} method={method}"
            _assert_torch(grads.loss, dtype, context)
            _assert_torch(grads.input, dtype, context)
            for name, value in grads.arrays().items():
                _assert_torch(value, dtype, f"{context} {name}")
            expected = reference.autograd_gradients(model, x, y, loss)
            reference.assert_gradients_close(
                reference.gradient_dict(grads), expected, TOLERANCE[dtype], context
            )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_torch_per_sample_functions_match_autograd(dtype, shortcut):
    model = reference.random_model(3, "tanh", shortcut, output_activation="sigmoid")
    x, y = reference.random_batch(model, 5)
    t_model, t_x, t_y = _torch_case(model, x, y, dtype)
    tolerance = TOLERANCE[dtype]
    expected = reference.autograd_per_sample(model, x, y)

    losses, dx = resgrad.input_gradient(t_model, t_x, t_y)
    per_sample = resgrad.per_sample_gradients(t_model, t_x, t_y)
    norms = resgrad.per_sample_norms(t_model, t_x, t_y)
    for value in (losses, dx, norms, per_sample.loss, *per_sample.arrays().values()):
        _assert_torch(value, dtype)
    for i, sample in enumerate(expected):
        assert reference.relative_error(losses[i], sample["loss"]) <= tolerance
        assert reference.relative_error(dx[i : i + 1], sample["input"]) <= tolerance
        for name, value in per_sample.arrays().items():
            assert reference.relative_error(value[i], sample[name]) <= tolerance, name
    squares = [
        sum(float(np.sum(sample[k] ** 2)) for k in sample if k.startswith("blocks"))
        for sample in expected
    ]
    assert reference.relative_error(norms, np.sqrt(squares)) <= tolerance


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_torch_jacobian_matches_jacrev(dtype, mode):
    model = reference.random_model(3, "silu", "learned", output_activation="silu")
    x, _ = reference.random_batch(model, 4)
    t_model, t_x, _ = _torch_case(model, x, np.zeros(4, dtype=np.int64), dtype)
    J = resgrad.input_jacobian(t_model, t_x, mode)
    _assert_torch(J, dtype)
    expected = reference.autograd_jacobian(model, x)
    assert reference.relative_error(J, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("mode", MODES)
def test_torch_jacobian_keeps_graph_of_input(mode, activation):
    """Every mode gives a Jacobian that autograd can differentiate with
    respect to an input that requires a gradient, as jacrev's does. For
    relu and leaky relu that gradient is 0."""
    import torch

    model = resgrad.ResidualMLP.init([4, 5, 3], seed=0, activation=activation)
    model = model.convert(torch)
    x = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(2, 4)
    x.requires_grad_(True)
    J = resgrad.input_jacobian(model, x, mode)
    assert J.requires_grad
    (gradient,) = torch.autograd.grad((J**2).sum(), x)
    x_ref = x.detach().requires_grad_(True)
    expected_jacobian = torch.func.vmap(torch.func.jacrev(to_module(model).logits))(
        x_ref
    )
    (expected,) = torch.autograd.grad((expected_jacobian**2).sum(), x_ref)
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_theorem_matrices_match_numpy(dtype):
    model = reference.random_model(3, "softplus", "identity", output_activation="tanh")
    x, _ = reference.random_batch(model, 4)
    t_model, t_x, _ = _torch_case(model, x, np.zeros(4, dtype=np.int64), dtype)
    for index, (mats, t_mats) in enumerate(
        zip(resgrad.theorem_matrices(model, x), resgrad.theorem_matrices(t_model, t_x))
    ):
        for name, value, t_value in zip(("Q", "D", "D_hat"), mats, t_mats):
            _assert_torch(t_value, dtype, name)
            error = reference.relative_error(t_value, value)
            assert error <= TOLERANCE[dtype], f"block {index} {name}"


def test_torch_forward_keeps_dtype():
    model = reference.random_model(2, "relu", "learned").convert(torch, dtype="float32")
    x = torch.zeros(3, 5, dtype=torch.float32)
    _assert_torch(model(x), torch.float32)
    _assert_torch(model.logits(x), torch.float32)
    assert model.predict(x).shape == (3,)


# A strict array-API namespace.


def _strict_numpy_pairs(model, x, y):
    """Yield ``(name, strict result, NumPy result)`` for every core function."""
    s_model = model.convert(array_api_strict)
    s_x, s_y = array_api_strict.asarray(x), array_api_strict.asarray(y)
    yield "call", s_model(s_x), model(x)
    yield "logits", s_model.logits(s_x), model.logits(x)
    yield "predict", s_model.predict(s_x), model.predict(x)
    for loss, method in itertools.product(LOSSES, METHODS):
        s_grads = resgrad.gradients(s_model, s_x, s_y, loss, method=method)
        grads = resgrad.gradients(model, x, y, loss, method=method)
        yield f"{loss} {method} loss", s_grads.loss, grads.loss
        yield f"{loss} {method} input", s_grads.input, grads.input
        for name, value in grads.arrays().items():
            yield f"{loss} {method} {name}", s_grads.arrays()[name], value
    for loss in LOSSES:
        s_losses, s_dx = resgrad.input_gradient(s_model, s_x, s_y, loss)
        losses, dx = resgrad.input_gradient(model, x, y, loss)
        yield f"input_gradient {loss} losses", s_losses, losses
        yield f"input_gradient {loss} dx", s_dx, dx
        s_per = resgrad.per_sample_gradients(s_model, s_x, s_y, loss)
        per = resgrad.per_sample_gradients(model, x, y, loss)
        for name, value in per.arrays().items():
            yield f"per_sample {loss} {name}", s_per.arrays()[name], value
        yield (
            f"per_sample_norms {loss}",
            resgrad.per_sample_norms(s_model, s_x, s_y, loss),
            resgrad.per_sample_norms(model, x, y, loss),
        )
    for mode in MODES:
        yield (
            f"input_jacobian {mode}",
            resgrad.input_jacobian(s_model, s_x, mode),
            resgrad.input_jacobian(model, x, mode),
        )
    for index, (s_mats, mats) in enumerate(
        zip(resgrad.theorem_matrices(s_model, s_x), resgrad.theorem_matrices(model, x))
    ):
        for name, s_value, value in zip(("Q", "D", "D_hat"), s_mats, mats):
            yield f"theorem_matrices {index} {name}", s_value, value


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_strict_namespace_equals_numpy(shortcut, activation):
    """Every core function runs on array-api-strict, which has no NumPy-only
    function, and gives NumPy's numbers. The plain blocks have no biases."""
    model = reference.random_model(
        3,
        activation,
        shortcut,
        bias=shortcut != "none",
        output_activation=activation,
    )
    x, y = reference.random_batch(model, 5)
    for name, strict_value, numpy_value in _strict_numpy_pairs(model, x, y):
        assert isinstance(strict_value, STRICT_ARRAY), name
        assert reference.relative_error(strict_value, numpy_value) <= 1e-12, name


def test_strict_round_trip_keeps_weights():
    model = reference.random_model(2, "tanh", "learned")
    back = model.convert(array_api_strict).convert(np)
    for name, value in model.arrays().items():
        assert isinstance(back.arrays()[name], np.ndarray), name
        np.testing.assert_array_equal(back.arrays()[name], value)


@pytest.mark.parametrize("copy", [False, True])
def test_host_copy_of_every_namespace(copy):
    """Tensors leave autograd, bfloat16 widens exactly, and ``copy`` decides
    whether the result shares memory with a NumPy array or a CPU tensor."""
    from resgrad._arrays import to_numpy

    values = np.array([[1.5, -2.0], [3.25, 0.0]], dtype=np.float32)
    tensor = torch.asarray(values.copy(), requires_grad=True)
    sources = {
        "numpy": values,
        "torch": tensor,
        "bfloat16": tensor.detach().to(torch.bfloat16),
        "strict": array_api_strict.asarray(values),
    }
    for name, source in sources.items():
        host = to_numpy(source, copy=copy)
        assert isinstance(host, np.ndarray), name
        assert host.dtype == np.float32, name
        np.testing.assert_array_equal(host, values, err_msg=name)
    for name in ("numpy", "torch"):
        host = to_numpy(sources[name], copy=copy)
        assert (
            np.shares_memory(
                host, values if name == "numpy" else tensor.detach().numpy()
            )
            is not copy
        ), name


# Arrays from two namespaces, and dtypes.


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: resgrad.gradients(m, x, y),
        lambda m, x, y: resgrad.gradients(m, x, y, method="product"),
        lambda m, x, y: resgrad.input_gradient(m, x, y),
        lambda m, x, y: resgrad.per_sample_gradients(m, x, y),
        lambda m, x, y: resgrad.per_sample_norms(m, x, y),
        lambda m, x, y: resgrad.input_jacobian(m, x),
        lambda m, x, y: resgrad.theorem_matrices(m, x),
        lambda m, x, y: m(x),
    ],
    ids=[
        "backprop",
        "product",
        "input_gradient",
        "per_sample_gradients",
        "per_sample_norms",
        "input_jacobian",
        "theorem_matrices",
        "call",
    ],
)
def test_numpy_model_with_torch_input_raises(call):
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 3)
    with pytest.raises(
        TypeError,
        match="in the model's namespace, numpy, got x as a torch.Tensor",
    ):
        call(model, torch.asarray(x), torch.asarray(y))


def test_torch_labels_with_numpy_input_raise():
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 3)
    # Here the labels, not the input, are in the other namespace, so the
    # message names y alone.
    with pytest.raises(TypeError) as caught:
        resgrad.gradients(model, x, torch.asarray(y))
    message = str(caught.value)
    assert "namespace, numpy, got y as a torch.Tensor; convert it" in message
    assert "x as a" not in message


def test_attack_names_the_label_in_another_namespace():
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x, y = reference.random_batch(model, 3)
    with pytest.raises(TypeError, match="namespace, torch, got y as a numpy.ndarray"):
        resgrad.attacks.pgd(model, torch.asarray(x), np.asarray(y), 0.1, seed=0)


@pytest.mark.parametrize("plain", [list, tuple])
def test_python_sequence_input_names_the_conversion(plain):
    model = reference.random_model(1, "relu", "learned")
    x, y = reference.random_batch(model, 3)
    rows = plain(plain(row) for row in x.tolist())
    with pytest.raises(
        TypeError, match=f"got the {plain.__name__} .{{0,60}}; .*np.asarray"
    ):
        resgrad.gradients(model, rows, y)


@pytest.mark.parametrize(
    "backend, hint", [("numpy", r"y.astype\(np.int64\)"), ("torch", r"y.long\(\)")]
)
def test_float_labels_name_the_cast_of_their_backend(backend, hint):
    model = reference.random_model(1, "relu", "learned")
    x, y = reference.random_batch(model, 3)
    if backend == "torch":
        model, x, y = model.convert(torch), torch.asarray(x), torch.asarray(y)
    with pytest.raises(TypeError, match=f"cast them with {hint}"):
        resgrad.gradients(model, x, y * 1.0)


def test_strict_model_with_numpy_input_raises():
    model = reference.random_model(1, "relu", "learned").convert(array_api_strict)
    x, y = reference.random_batch(model, 3)
    with pytest.raises(
        TypeError, match="in the model's namespace, array_api_strict.*got x as a numpy"
    ):
        resgrad.gradients(model, x, y)


def test_weights_from_two_namespaces_raise():
    model = reference.random_model(2, "relu", "learned")
    block = model.blocks[1]
    mixed = resgrad.Block(
        W1=block.W1,
        W2=torch.asarray(block.W2),
        W3=block.W3,
        b1=block.b1,
        b2=block.b2,
    )
    message = (
        "got blocks.0.W1 as numpy.ndarray and blocks.1.W2 as torch.Tensor; "
        "convert that array"
    )
    with pytest.raises(TypeError, match=message):
        resgrad.ResidualMLP([model.blocks[0], mixed])
    with pytest.raises(TypeError, match=message):
        model.replace_arrays({"blocks.1.W2": torch.asarray(block.W2)})


# NumPy float32.


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_numpy_float32_results_stay_float32(shortcut):
    """A float32 NumPy model gives float32 NumPy results, close to float64
    autograd."""
    model = reference.random_model(3, "tanh", shortcut, output_activation="sigmoid")
    x, y = reference.random_batch(model, 6)
    single, x32 = model.convert(dtype="float32"), x.astype(np.float32)
    for loss, method in itertools.product(LOSSES, METHODS):
        grads = resgrad.gradients(single, x32, y, loss, method=method)
        context = f"loss={loss} method={method}"
        for name, value in {"loss": grads.loss, "input": grads.input}.items():
            assert value.dtype == np.float32, f"{context} {name}"
        for name, value in grads.arrays().items():
            assert isinstance(value, np.ndarray), f"{context} {name}"
            assert value.dtype == np.float32, f"{context} {name}"
        expected = reference.autograd_gradients(model, x, y, loss)
        reference.assert_gradients_close(
            reference.gradient_dict(grads), expected, TOLERANCE[torch.float32], context
        )
    others = [
        resgrad.per_sample_norms(single, x32, y),
        resgrad.input_jacobian(single, x32),
        *resgrad.input_gradient(single, x32, y),
        *resgrad.theorem_matrices(single, x32)[0],
    ]
    for value in others:
        assert value.dtype == np.float32


def test_input_on_other_device_raises(monkeypatch):
    """x on another device than the weights raises before any product.

    A device lookup that places this x on a GPU replaces a real GPU, which
    this machine may lack. The meta device gets a message of its own.
    """
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.rand((3, 5), dtype=torch.float64)
    compat = resgrad._arrays.array_api_compat
    lookup = compat.device
    monkeypatch.setattr(
        compat, "device", lambda a: torch.device("cuda:0") if a is x else lookup(a)
    )
    with pytest.raises(
        ValueError, match="Expected x on the model's device cpu, got x on cuda:0"
    ):
        model(x)


@pytest.mark.parametrize("layout", ["to_sparse", "to_sparse_csr"])
def test_sparse_torch_input_names_to_dense(layout):
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.rand(3, model.sizes[0], dtype=torch.float64)
    with warnings.catch_warnings():
        # PyTorch warns that its CSR support is in beta.
        warnings.simplefilter("ignore", UserWarning)
        sparse = getattr(x, layout)()
    with pytest.raises(TypeError, match=r"dense tensor.*pass x.to_dense\(\)"):
        resgrad.gradients(model, sparse, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_sparse_torch_labels_name_to_dense(loss):
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.rand(3, model.sizes[0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2]).to_sparse()
    with pytest.raises(TypeError, match=r"dense tensor.*pass y.to_dense\(\)"):
        resgrad.gradients(model, x, labels, loss)


def test_strict_target_of_wrong_dtype_names_namespace_cast():
    model = reference.random_model(2, "tanh", "learned").convert(array_api_strict)
    x = array_api_strict.zeros((3, model.sizes[0]), dtype=array_api_strict.float64)
    target = array_api_strict.zeros((3, 3), dtype=array_api_strict.float32)
    with pytest.raises(
        TypeError,
        match=r"cast it with xp.astype\(y, xp.float64\), xp being the namespace",
    ):
        resgrad.gradients(model, x, target, "squared_error")


def test_torch_dtype_mismatch_raises():
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.zeros(3, 5, dtype=torch.float32)
    y = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(
        TypeError, match="Expected x of dtype torch.float64.*got torch.float32"
    ):
        resgrad.gradients(model, x, y)


def test_convert_like_adopts_namespace_and_dtype():
    model = reference.random_model(2, "relu", "learned")
    like = torch.zeros(1, dtype=torch.float32)
    converted = model.convert(like=like)
    for name, value in converted.arrays().items():
        _assert_torch(value, torch.float32, name)
    back = converted.convert(np, dtype="float64")
    for name, value in model.arrays().items():
        np.testing.assert_allclose(back.arrays()[name], value, rtol=1e-7)


def test_convert_bfloat16_to_numpy_needs_a_dtype():
    model = reference.random_model(2, "relu", "learned").convert(
        torch, dtype=torch.bfloat16
    )
    with pytest.raises(TypeError, match="numpy has no bfloat16 dtype to hold"):
        model.convert(np)
    # float32 represents every bfloat16 value, so this conversion is exact.
    for dtype in ("float32", "float64"):
        converted = model.convert(np, dtype=dtype)
        for name, value in converted.arrays().items():
            assert value.dtype == np.dtype(dtype), name
            expected = model.arrays()[name].double().numpy()
            np.testing.assert_array_equal(value, expected, err_msg=name)


# The PyTorch module export.


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_to_module_matches_forward_and_gradients(activation, shortcut):
    model = reference.random_model(
        3, activation, shortcut, output_activation=activation, post_activation="tanh"
    )
    x, y = reference.random_batch(model, 6)
    module = to_module(model)
    x_t = torch.asarray(x).requires_grad_(True)
    out = module(x_t)
    assert reference.relative_error(out, model(x)) <= 1e-14
    loss = torch.nn.functional.cross_entropy(out, torch.asarray(y))
    parameters = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, [x_t, *parameters.values()])
    expected = resgrad.gradients(model, x, y)
    assert reference.relative_error(grads[0], expected.input) <= 1e-12
    names = {key: _resgrad_name(key) for key in parameters}
    assert sorted(names.values()) == sorted(expected.arrays())
    for key, grad in zip(parameters, grads[1:]):
        name = names[key]
        assert reference.relative_error(grad, expected.arrays()[name]) <= 1e-12, name


def _resgrad_name(module_name):
    """Map ``blocks.0.linear1.weight`` to ``blocks.0.W1`` and so on."""
    prefix, layer, kind = module_name.rsplit(".", 2)
    return (
        prefix
        + "."
        + {
            ("linear1", "weight"): "W1",
            ("linear1", "bias"): "b1",
            ("linear2", "weight"): "W2",
            ("linear2", "bias"): "b2",
            ("shortcut", "weight"): "W3",
        }[layer, kind]
    )


def test_to_module_softplus_is_exact_for_large_inputs():
    """Above 20, ``torch.nn.functional.softplus`` returns its input; the
    module must still equal ``log(1 + e^z)`` to float64 precision."""
    model = reference.random_model(1, "softplus", "none", output_activation="softplus")
    model = model.replace_arrays({"blocks.0.b2": np.full(3, 21.0)})
    x, _ = reference.random_batch(model, 4)
    out = to_module(model)(torch.asarray(x)).detach()
    assert float(model.logits(x).min()) > 20
    assert reference.relative_error(out - 21.0, model(x) - 21.0) <= 1e-12


def test_to_module_keeps_dtype():
    model = reference.random_model(2, "relu", "learned").convert(torch, dtype="float32")
    module = to_module(model)
    assert all(p.dtype == torch.float32 for p in module.parameters())
    x = torch.zeros(2, 5)
    assert reference.relative_error(module(x), model(x)) <= 1e-6
