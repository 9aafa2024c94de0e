"""Gradients of the loss: backpropagation and Theorem 1's products against
PyTorch autograd and central finite differences, in float64."""

import concurrent.futures
import dataclasses
import itertools
import math
import sys
import time
import tracemalloc
import weakref

import numpy as np
import pytest
import reference
import torch

import resgrad
from resgrad.torch import to_module

DEPTHS = range(1, 7)
ACTIVATIONS = list(resgrad.ACTIVATIONS)
SHORTCUTS = ("learned", "identity", "none")
LOSSES = list(resgrad.LOSSES)
BATCH_SIZES = (1, 17)
METHODS = ("backprop", "product")
AUTOGRAD_TOLERANCE = 1e-9
FINITE_DIFFERENCE_TOLERANCE = 1e-6

TRIPLES = list(itertools.product(DEPTHS, ACTIVATIONS, SHORTCUTS))


def _triple_id(triple):
    depth, activation, shortcut = triple
    return f"L{depth}-{activation}-{shortcut}"


def _on_backend(backend, model, x, y):
    """Return the model and batch as NumPy arrays or float64 torch tensors."""
    if backend == "numpy":
        return model, x, y
    return model.convert(torch), torch.asarray(x), torch.asarray(y)


def _assert_in_namespace(backend, grads, context):
    """Assert that every result is a float64 array of ``backend``."""
    kind = np.ndarray if backend == "numpy" else torch.Tensor
    dtype = np.float64 if backend == "numpy" else torch.float64
    values = {"input": grads.input, **grads.arrays()}
    for name, value in values.items():
        assert isinstance(value, kind), f"{context}: {name} is {type(value)}"
        assert value.dtype == dtype, f"{context}: {name} is {value.dtype}"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("triple", TRIPLES, ids=_triple_id)
def test_grid_matches_autograd(triple, backend):
    """Backprop and the product form equal autograd on every loss.

    Each case loops over biases (with, without), the output activation
    (identity, g), the batch size (1, 17) and every loss, so the whole grid
    is depth x activation x shortcut x bias x output x batch x loss, run on
    NumPy arrays and on float64 torch tensors.
    """
    depth, activation, shortcut = triple
    for bias, output in itertools.product((True, False), ("identity", activation)):
        model = reference.random_model(
            depth, activation, shortcut, bias=bias, output_activation=output, seed=depth
        )
        for n, loss in itertools.product(BATCH_SIZES, LOSSES):
            x, y = reference.random_batch(model, n, seed=n)
            expected = reference.autograd_gradients(model, x, y, loss)
            context = f"bias={bias} output={output} n={n} loss={loss}"
            on_backend = _on_backend(backend, model, x, y)
            for method in METHODS:
                grads = resgrad.gradients(*on_backend, loss, method=method)
                _assert_in_namespace(backend, grads, f"{context} method={method}")
                reference.assert_gradients_close(
                    reference.gradient_dict(grads),
                    expected,
                    AUTOGRAD_TOLERANCE,
                    f"{context} method={method}",
                )


def _finite_difference_case(index):
    depth, activation, shortcut = TRIPLES[index]
    return {
        "depth": depth,
        "activation": activation,
        "shortcut": shortcut,
        "bias": index % 2 == 0,
        "output": "identity" if (index // 2) % 2 == 0 else activation,
        "n": BATCH_SIZES[(index // 4) % 2],
        "loss": LOSSES[(index // 8) % 3],
    }


@pytest.mark.parametrize("index", range(len(TRIPLES)))
def test_gradients_match_finite_differences(index):
    """Backprop and the product form, on NumPy and on torch tensors, equal
    central differences with step 1e-6 to 1e-6.

    The float64 model's gradients are compared with difference quotients
    that ``reference.finite_difference_gradients`` evaluates in long double.
    The subset: every (depth, activation, shortcut) triple of the autograd
    grid once, with biases on for even indices, and the output activation,
    the batch size and the loss cycling with the index (see
    ``_finite_difference_case``). So every activation, shortcut, depth,
    bias setting, output activation, batch size and loss occurs.
    """
    case = _finite_difference_case(index)
    model = reference.random_model(
        case["depth"],
        case["activation"],
        case["shortcut"],
        bias=case["bias"],
        output_activation=case["output"],
        seed=index,
    )
    x, y = reference.random_batch(model, case["n"], seed=index)
    expected = reference.finite_difference_gradients(model, x, y, case["loss"])
    for backend, method in itertools.product(("numpy", "torch"), METHODS):
        on_backend = _on_backend(backend, model, x, y)
        grads = resgrad.gradients(*on_backend, case["loss"], method=method)
        reference.assert_gradients_close(
            reference.gradient_dict(grads),
            expected,
            FINITE_DIFFERENCE_TOLERANCE,
            f"{case} backend={backend} method={method}",
        )


def test_finite_difference_subset_covers_grid():
    cases = [_finite_difference_case(i) for i in range(len(TRIPLES))]
    for key, values in [
        ("depth", set(DEPTHS)),
        ("activation", set(ACTIVATIONS)),
        ("shortcut", set(SHORTCUTS)),
        ("bias", {True, False}),
        ("n", set(BATCH_SIZES)),
        ("loss", set(LOSSES)),
    ]:
        assert {case[key] for case in cases} == values, key
    assert any(case["output"] == "identity" for case in cases)
    assert any(case["output"] == case["activation"] != "identity" for case in cases)


@pytest.mark.parametrize("post", ["relu", "sigmoid", "identity"])
@pytest.mark.parametrize("method", METHODS)
def test_post_activation_matches_autograd(post, method):
    """A post-activation other than g applies between blocks only."""
    model = reference.random_model(
        3, "tanh", "learned", post_activation=post, output_activation="softplus"
    )
    x, y = reference.random_batch(model, 9)
    grads = resgrad.gradients(model, x, y, "squared_error", method=method)
    expected = reference.autograd_gradients(model, x, y, "squared_error")
    reference.assert_gradients_close(
        reference.gradient_dict(grads), expected, AUTOGRAD_TOLERANCE
    )


# Reductions.


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("method", METHODS)
def test_sum_is_n_times_mean(loss, method):
    model = reference.random_model(3, "tanh", "learned", output_activation="tanh")
    x, y = reference.random_batch(model, 11)
    total = reference.gradient_dict(resgrad.gradients(model, x, y, loss, "sum", method))
    mean = reference.gradient_dict(resgrad.gradients(model, x, y, loss, "mean", method))
    scaled = {name: 11 * value for name, value in mean.items()}
    reference.assert_gradients_close(total, scaled, 1e-13)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("method", METHODS)
def test_sum_reduction_matches_autograd(loss, method):
    model = reference.random_model(4, "elu", "none", output_activation="sigmoid")
    x, y = reference.random_batch(model, 7)
    grads = resgrad.gradients(model, x, y, loss, "sum", method)
    expected = reference.autograd_gradients(model, x, y, loss, "sum")
    reference.assert_gradients_close(
        reference.gradient_dict(grads), expected, AUTOGRAD_TOLERANCE
    )


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("method", METHODS)
def test_without_input_same_weight_gradients(shortcut, method):
    model = reference.random_model(3, "tanh", shortcut)
    x, y = reference.random_batch(model, 5)
    full = resgrad.gradients(model, x, y, method=method)
    weights_only = resgrad.gradients(model, x, y, method=method, with_input=False)
    assert weights_only.input is None
    assert float(weights_only.loss) == float(full.loss)
    for name, value in full.arrays().items():
        np.testing.assert_array_equal(weights_only.arrays()[name], value, err_msg=name)


def test_per_sample_norms_scale_past_overflow():
    """Scaling x by 2^k scales every gradient term of a bias-free, identity
    network of squared error by 2^k or 4^k, so norms far past sqrt(finfo.max)
    follow from the small ones exactly."""
    model = resgrad.ResidualMLP.init(
        [3, 3, 3], 3, activation="identity", shortcut="none", bias=False, seed=0
    )
    x = np.array([[0.5, -1.0, 2.0]])
    t = np.zeros((1, 3))
    small = resgrad.per_sample_norms(model, x, t, "squared_error")
    huge = resgrad.per_sample_norms(model, x * 2.0**300, t, "squared_error")
    assert np.isfinite(huge).all()
    assert huge[0] == pytest.approx(small[0] * 2.0**600, rel=1e-12)


def test_row_norms_keep_nan_and_infinity():
    from resgrad._arrays import row_norms

    rows = np.array([[0.0, 0.0], [3.0, 4.0], [np.nan, 1.0], [np.inf, 1.0]])
    with np.errstate(all="raise"):
        norms = row_norms(np, rows)
    np.testing.assert_array_equal(norms, [0.0, 5.0, np.nan, np.inf])


def test_per_sample_norms_differentiate_through_zero_rows():
    """A zero input row, and rows whose relu units are all off, have zero
    factors ``||a||`` and ``||e_hat||``. Autograd through the norms must
    still give the finite gradient of the materialised norms."""
    model = resgrad.ResidualMLP.init([8, 8, 4], hidden=2, seed=0, xp=torch)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, dtype=torch.float64, generator=generator)
    x[0] = 0.0
    y = torch.arange(64) % 4
    weights = {k: v.clone().requires_grad_(True) for k, v in model.arrays().items()}
    x.requires_grad_(True)
    norms = resgrad.per_sample_norms(model.replace_arrays(weights), x, y)
    norms.sum().backward()

    module = to_module(model)
    params = dict(module.named_parameters())
    names = dict(zip(module.named_arrays(), params))

    def norm(params, row, label):
        def loss(params):
            logits = torch.func.functional_call(module, params, (row[None],))
            return torch.nn.functional.cross_entropy(logits, label[None])

        grads = torch.func.grad(loss)(params)
        return torch.sqrt(sum(torch.sum(g * g) for g in grads.values()))

    x_ref = x.detach().clone().requires_grad_(True)
    reference_norms = torch.func.vmap(norm, in_dims=(None, 0, 0))(params, x_ref, y)
    reference_norms.sum().backward()
    hidden_off = torch.relu(x.detach() @ model.blocks[0].W1.T + model.blocks[0].b1)
    assert (hidden_off.amax(dim=1) == 0).any()
    torch.testing.assert_close(norms, reference_norms, rtol=1e-12, atol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-14)
    for name, value in weights.items():
        expected = params[names[name]].grad
        torch.testing.assert_close(value.grad, expected, rtol=1e-10, atol=1e-14)


def test_empty_batch_has_zero_gradients():
    model = reference.random_model(2, "relu", "learned")
    x = np.zeros((0, model.sizes[0]))
    y = np.zeros(0, dtype=np.int64)
    grads = resgrad.gradients(model, x, y)
    assert float(grads.loss) == 0.0
    assert grads.input.shape == (0, model.sizes[0])
    for name, value in grads.arrays().items():
        assert not np.any(value), name


# Per-sample quantities.


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_input_gradient_matches_autograd_per_sample(loss, shortcut):
    model = reference.random_model(3, "silu", shortcut, output_activation="tanh")
    x, y = reference.random_batch(model, 6)
    losses, dx = resgrad.input_gradient(model, x, y, loss)
    expected = reference.autograd_per_sample(model, x, y, loss)
    assert losses.shape == (6,)
    assert dx.shape == x.shape
    for i, sample in enumerate(expected):
        assert reference.relative_error(losses[i], sample["loss"]) <= 1e-12
        assert reference.relative_error(dx[i : i + 1], sample["input"]) <= 1e-12


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_per_sample_gradients_match_autograd(loss, shortcut, bias):
    model = reference.random_model(
        3, "leaky_relu", shortcut, bias=bias, output_activation="sigmoid"
    )
    x, y = reference.random_batch(model, 5)
    per_sample = resgrad.per_sample_gradients(model, x, y, loss)
    expected = reference.autograd_per_sample(model, x, y, loss)
    assert per_sample.loss.shape == (5,)
    for i, sample in enumerate(expected):
        actual = {"loss": per_sample.loss[i], "input": per_sample.input[i : i + 1]}
        actual.update({k: v[i] for k, v in per_sample.arrays().items()})
        reference.assert_gradients_close(
            actual, sample, AUTOGRAD_TOLERANCE, f"sample {i}"
        )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_per_sample_out_reuses_stacks(backend, shortcut):
    model = reference.random_model(3, "relu", shortcut)
    x, y = reference.random_batch(model, 6)
    model, x, y = _on_backend(backend, model, x, y)
    out = resgrad.per_sample_gradients(model, x, y)
    stacks = dict(out.arrays())
    expected = resgrad.per_sample_gradients(model, 2 * x, y)
    again = resgrad.per_sample_gradients(model, 2 * x, y, out=out)
    for name, value in expected.arrays().items():
        actual = again.arrays()[name]
        if name.rsplit(".", 1)[1].startswith("W"):
            assert actual is stacks[name], name
        same = np.array_equal(reference.to_numpy(actual), reference.to_numpy(value))
        assert same, name
    assert np.array_equal(
        reference.to_numpy(again.loss), reference.to_numpy(expected.loss)
    )
    assert np.array_equal(
        reference.to_numpy(again.input), reference.to_numpy(expected.input)
    )


def _fresh(model, x, y):
    return resgrad.per_sample_gradients(model, x, y)


def _overlapping(model, x, y):
    """Return a result whose stack W2 of block 1 is a view into its W1."""
    out = _fresh(model, x, y)
    block = out.blocks[1]
    count = math.prod(block.W2.shape)
    assert math.prod(block.W1.shape) >= count
    block.W2 = block.W1.reshape(-1)[:count].reshape(block.W2.shape)
    return out


def _numpy_bad_outs(model, x, y):
    """Yield ``(description, out, message)`` for outs that
    per_sample_gradients must reject with ``message``."""
    yield "fewer samples", _fresh(model, x[:3], y[:3]), "shape"
    as_float32 = _fresh(model.convert(dtype="float32"), x.astype(np.float32), y)
    yield "float32", as_float32, "dtype"
    good = _fresh(model, x, y)
    fewer = resgrad.Gradients(good.loss, good.input, good.blocks[:-1])
    yield "fewer blocks", fewer, "blocks"
    frozen = _fresh(model, x, y)
    frozen.blocks[1].W2.flags.writeable = False
    yield "read-only", frozen, "read-only"
    missing = _fresh(model, x, y)
    missing.blocks[0].W1 = None
    yield "missing stack", missing, "missing"
    repeated = _fresh(model, x, y)
    stack = repeated.blocks[1].W2
    repeated.blocks[1].W2 = np.lib.stride_tricks.as_strided(
        stack, strides=(0, *stack.strides[1:]), writeable=True
    )
    yield "zero stride", repeated, "zero stride"
    yield "two stacks in one array", _overlapping(model, x, y), "share memory"


def _torch_bad_outs(model, x, y):
    """Yield ``(description, out, message)`` for torch outs that
    per_sample_gradients must reject with ``message``."""
    expanded = _fresh(model, x, y)
    expanded.blocks[1].W1 = expanded.blocks[1].W1[:1].expand(x.shape[0], -1, -1)
    yield "expanded", expanded, "zero stride"
    inference = _fresh(model, x, y)
    with torch.inference_mode():
        inference.blocks[2].W2 = torch.zeros_like(inference.blocks[2].W2)
    yield "inference tensor", inference, "inference_mode"
    recording = _fresh(model, x, y)
    recording.blocks[0].W1.requires_grad_(True)
    yield "requires grad", recording, "detach"
    sparse = _fresh(model, x, y)
    sparse.blocks[0].W2 = sparse.blocks[0].W2.to_sparse()
    yield "sparse", sparse, "layout"
    yield "two stacks in one tensor", _overlapping(model, x, y), "share memory"


def _dense_copies(out):
    return {
        name: reference.to_numpy(value)
        for name, value in out.arrays().items()
        if value is not None and getattr(value, "layout", None) != torch.sparse_coo
    }


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_per_sample_out_rejects_bad_stacks(backend):
    model = reference.random_model(3, "tanh", "learned")
    x, y = reference.random_batch(model, 6)
    model, x, y = _on_backend(backend, model, x, y)
    bad_outs = _numpy_bad_outs if backend == "numpy" else _torch_bad_outs
    for description, out, message in bad_outs(model, x, y):
        before = _dense_copies(out)
        with pytest.raises(ValueError, match=message):
            resgrad.per_sample_gradients(model, 2 * x, y, out=out)
        after = _dense_copies(out)
        for name, value in before.items():
            assert np.array_equal(after[name], value), (description, name)
    with pytest.raises(TypeError, match="Gradients"):
        resgrad.per_sample_gradients(model, x, y, out={"blocks": []})


def test_per_sample_out_rejects_stacks_holding_y():
    model = reference.random_model(2, "relu", "learned")
    x, _ = reference.random_batch(model, 4)
    targets = np.random.default_rng(1).standard_normal((4, model.n_classes))
    out = resgrad.per_sample_gradients(model, x, targets, "squared_error")
    inside = out.blocks[0].W1[:, 0, : model.n_classes]
    inside[...] = targets
    with pytest.raises(ValueError, match="W1 shares memory with y"):
        resgrad.per_sample_gradients(model, x, inside, "squared_error", out=out)
    assert np.array_equal(inside, targets)


def test_per_sample_out_rejects_stacks_holding_x():
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 4)
    out = _fresh(model, x, y)
    inside = out.blocks[0].W1.reshape(-1)[: x.size].reshape(x.shape)
    inside[...] = x
    with pytest.raises(ValueError, match="shares memory with x"):
        resgrad.per_sample_gradients(model, inside, y, out=out)
    assert np.array_equal(inside, x)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("block, name", [(1, "W1"), (0, "b2"), (1, "W3")])
def test_per_sample_out_rejects_stacks_holding_weights(backend, block, name):
    """A model whose weight is a view into a stack of out is left as it was."""
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 4)
    model, x, y = _on_backend(backend, model, x, y)
    out = resgrad.per_sample_gradients(model, x, y)
    weight = getattr(model.blocks[block], name)
    inside = out.blocks[1].W2.reshape(-1)[: math.prod(weight.shape)]
    inside = inside.reshape(weight.shape)
    inside[...] = weight
    if backend == "numpy" and name == "W3":
        # A view whose base is no ndarray, so its owner is unknown.
        inside = np.lib.stride_tricks.as_strided(inside)
    blocks = list(model.blocks)
    blocks[block] = dataclasses.replace(blocks[block], **{name: inside})
    aliased = dataclasses.replace(model, blocks=blocks)
    before = np.asarray(inside).copy()
    key = f"blocks.{block}.{name}"
    with pytest.raises(ValueError, match=f"W2 shares memory with the model's {key}"):
        resgrad.per_sample_gradients(aliased, x, y, out=out)
    assert np.array_equal(np.asarray(inside), before)


def test_per_sample_out_needs_writable_tensors():
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 4)
    model_t, x_t, y_t = _on_backend("torch", model, x, y)
    out = resgrad.per_sample_gradients(model_t, x_t, y_t)
    x_t.requires_grad_(True)
    with pytest.raises(TypeError, match="no_grad"):
        resgrad.per_sample_gradients(model_t, x_t, y_t, out=out)
    with torch.no_grad():
        filled = resgrad.per_sample_gradients(model_t, x_t, y_t, out=out)
    assert filled.blocks[0].W1 is out.blocks[0].W1


def _stack_copies(result):
    return {name: np.copy(value) for name, value in result.arrays().items()}


def test_per_sample_stacks_reuse_a_dropped_result():
    """A call after the last result was dropped fills that result's buffer."""
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    expected = _stack_copies(resgrad.per_sample_gradients(model, 2 * x, y))
    first = resgrad.per_sample_gradients(model, x, y)
    buffer = weakref.ref(first.blocks[0].W1.base)
    del first
    again = resgrad.per_sample_gradients(model, 2 * x, y)
    assert buffer() is not None
    assert np.shares_memory(again.blocks[2].W3, buffer())
    for name, value in again.arrays().items():
        assert np.array_equal(value, expected[name]), name


# Objects that share memory with a stack of a result but hold no reference
# to the result itself.
HOLDERS = {
    "view of a stack": lambda result: result.blocks[1].W2[3],
    "torch tensor": lambda result: torch.from_numpy(result.blocks[0].W1),
    "memoryview": lambda result: memoryview(result.blocks[2].W1),
    "list of stacks": lambda result: [result.blocks[0].W3, result.blocks[2].W2],
    "flat view": lambda result: result.blocks[2].W3.reshape(-1)[5:],
}


@pytest.mark.parametrize("holder_of", HOLDERS.values(), ids=list(HOLDERS))
def test_per_sample_stacks_not_reused_while_referenced(holder_of):
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    first = resgrad.per_sample_gradients(model, x, y)
    holder = holder_of(first)
    copies = [np.copy(part) for part in _parts(holder)]
    del first
    again = resgrad.per_sample_gradients(model, 2 * x, y)
    for before, part in zip(copies, _parts(holder)):
        assert np.array_equal(part, before)
        for stack in again.arrays().values():
            assert not np.shares_memory(part, stack)


def _parts(holder):
    """Return the NumPy arrays that ``holder`` shares memory with."""
    parts = holder if isinstance(holder, list) else [holder]
    return [p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in parts]


def test_per_sample_stacks_safe_after_a_tracer():
    """A debugger that reads every frame's locals during one call must not
    make a later call reuse a buffer the caller still holds."""
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)

    seen = []

    def tracer(frame, event, arg):
        # Reading f_locals takes a reference to every local, as debuggers do.
        seen.append(len(frame.f_locals))
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        first = resgrad.per_sample_gradients(model, x, y)
    finally:
        sys.settrace(previous)
    assert seen
    kept = first.blocks[0].W1
    before = np.copy(kept)
    del first
    again = resgrad.per_sample_gradients(model, 2 * x, y)
    assert np.array_equal(kept, before)
    assert not np.shares_memory(kept, again.blocks[0].W1)


def _buffer(result):
    """Return the buffer that contains the per-sample stacks of ``result``."""
    return result.blocks[0].W1.base


def _held_twice(model, x, y):
    """Return the result of a second call made while the first's result was
    held, as ``g = per_sample_gradients(...)`` holds it, and weak references
    to the buffers of both."""
    result = resgrad.per_sample_gradients(model, x, y)
    first = weakref.ref(_buffer(result))
    result = resgrad.per_sample_gradients(model, x, y)
    return result, first, weakref.ref(_buffer(result))


def test_held_results_alternate_buffers():
    """The call after the second reuses the buffer of the first."""
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    result, first, second = _held_twice(model, x, y)
    assert first() is not second()
    result = resgrad.per_sample_gradients(model, 2 * x, y)
    assert _buffer(result) is first()
    expected = resgrad.per_sample_gradients(model, 2 * x, y)
    for name, stack in result.arrays().items():
        assert np.array_equal(stack, expected.arrays()[name])


def test_two_held_results_get_third_buffer():
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    held = [resgrad.per_sample_gradients(model, x, y) for _ in range(2)]
    copies = [{k: np.copy(v) for k, v in r.arrays().items()} for r in held]
    third = resgrad.per_sample_gradients(model, 3 * x, y)
    for result, before in zip(held, copies):
        assert not np.shares_memory(_buffer(result), _buffer(third))
        for name, stack in result.arrays().items():
            assert np.array_equal(stack, before[name])


def test_dropped_results_keep_one_buffer():
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    result, first, second = _held_twice(model, x, y)
    del result
    # Both buffers are free now; the next call keeps one of them.
    result = resgrad.per_sample_gradients(model, x, y)
    alive = [buffer for buffer in (first(), second()) if buffer is not None]
    assert alive == [_buffer(result)]


def test_per_sample_stacks_above_the_limit_are_freed(monkeypatch):
    from resgrad import _kernels

    monkeypatch.setattr(_kernels._NUMPY._spare, "limit", 1024)
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    first = resgrad.per_sample_gradients(model, x, y)
    assert first.blocks[0].W1.nbytes > 1024
    buffer = weakref.ref(first.blocks[0].W1.base)
    del first
    assert buffer() is None


def test_small_results_release_large_buffer():
    """A loop that drops large results and keeps small ones stays bounded."""
    model = reference.random_model(3, "relu", "learned")
    large_x, large_y = reference.random_batch(model, 200)
    small_x, small_y = reference.random_batch(model, 2, seed=1)
    large_bytes = sum(
        stack.nbytes
        for stack in resgrad.per_sample_gradients(model, large_x, large_y)
        .arrays()
        .values()
    )
    small_results = []
    tracemalloc.start()
    try:
        for _ in range(6):
            dropped = resgrad.per_sample_gradients(model, large_x, large_y)
            del dropped
            small_results.append(resgrad.per_sample_gradients(model, small_x, small_y))
        traced_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One large buffer may stay allocated. Six would mean that each small
    # result keeps one alive.
    assert traced_bytes < 2 * large_bytes


def test_per_sample_stacks_without_reference_counts_are_new(monkeypatch):
    """Where the interpreter has no ``sys.getrefcount``, nothing is reused."""
    from resgrad import _kernels

    monkeypatch.setattr(_kernels, "_COUNTS_REFERENCES", False)
    model = reference.random_model(3, "relu", "learned")
    x, y = reference.random_batch(model, 6)
    first = resgrad.per_sample_gradients(model, x, y)
    buffer = weakref.ref(first.blocks[0].W1.base)
    del first
    assert buffer() is None


def test_per_sample_stacks_from_threads_stay_apart():
    """Threads that drop and request results at once never share a buffer.

    With the GIL the check and the slice run without a switch between them;
    the lock in ``SpareBuffer.take`` matters on free-threaded builds.
    """
    model = reference.random_model(3, "relu", "learned")
    batches = [reference.random_batch(model, 40, seed=seed) for seed in range(2)]
    expected = [
        _stack_copies(resgrad.per_sample_gradients(model, x, y)) for x, y in batches
    ]

    def work(index):
        x, y = batches[index]
        for _ in range(30):
            result = resgrad.per_sample_gradients(model, x, y)
            time.sleep(0)
            for name, value in result.arrays().items():
                if not np.array_equal(value, expected[index][name]):
                    return name
            del result
        return None

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(work, [0, 1, 0, 1])) == [None] * 4


@pytest.mark.parametrize("loss", LOSSES)
def test_per_sample_gradients_sum_to_batch_gradient(loss):
    model = reference.random_model(4, "softplus", "identity")
    x, y = reference.random_batch(model, 8)
    per_sample = resgrad.per_sample_gradients(model, x, y, loss)
    total = resgrad.gradients(model, x, y, loss, "sum")
    for name, value in total.arrays().items():
        summed = np.sum(per_sample.arrays()[name], axis=0)
        assert reference.relative_error(summed, value) <= 1e-12, name


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_per_sample_norms_equal_materialised_norms(loss, shortcut, bias):
    """``||e a^T||_F = ||e|| ||a||`` gives the norms without the gradients."""
    model = reference.random_model(3, "tanh", shortcut, bias=bias)
    x, y = reference.random_batch(model, 7)
    norms = resgrad.per_sample_norms(model, x, y, loss)
    per_sample = resgrad.per_sample_gradients(model, x, y, loss)
    squares = sum(
        np.sum(value.reshape(7, -1) ** 2, axis=1)
        for value in per_sample.arrays().values()
    )
    assert norms.shape == (7,)
    assert reference.relative_error(norms, np.sqrt(squares)) <= 1e-12


# Input validation.


@pytest.fixture
def small():
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 4)
    return model, x, y


def test_x_of_wrong_width_raises(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"Expected x to have 5 features.*got 4"):
        resgrad.gradients(model, x[:, :4], y)


def test_one_dimensional_x_raises(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match=r"Expected x of shape \(n, 5\), got shape \(5,\)"
    ):
        resgrad.gradients(model, x[0], y[:1])


@pytest.mark.parametrize("label", [3, -1, 7])
def test_label_outside_classes_raises(small, label):
    model, x, y = small
    y = y.copy()
    y[1] = label
    with pytest.raises(ValueError, match=rf"Label {label} in y is outside \[0, 3\)"):
        resgrad.gradients(model, x, y)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_wide_unsigned_labels_raise(small, dtype):
    model, x, y = small
    with pytest.raises(TypeError, match=r"signed integer dtype or uint8.*astype"):
        resgrad.gradients(model, x, y.astype(dtype))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_wide_unsigned_torch_labels_raise(dtype):
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.rand(4, model.sizes[0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1], dtype=dtype)
    with pytest.raises(TypeError, match=r"signed integer dtype or uint8.*y.long"):
        resgrad.gradients(model, x, y)


def test_uint8_and_int8_labels_match_int64(small):
    model, x, y = small
    expected = resgrad.gradients(model, x, y).arrays()
    for dtype in (np.uint8, np.int8):
        got = resgrad.gradients(model, x, y.astype(dtype)).arrays()
        for name, value in expected.items():
            assert np.array_equal(got[name], value), (dtype, name)


def test_labels_on_meta_device_raise():
    model = reference.random_model(2, "relu", "learned").convert(torch)
    x = torch.rand(4, model.sizes[0], dtype=torch.float64)
    y = torch.empty(4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="y is on PyTorch's meta device"):
        resgrad.gradients(model, x, y)


@pytest.mark.parametrize("loss", ["cross_entropy", "score"])
def test_float_labels_raise(small, loss):
    model, x, y = small
    with pytest.raises(
        TypeError, match="Expected integer class labels in y, got dtype float64"
    ):
        resgrad.gradients(model, x, y.astype(np.float64), loss)


@pytest.mark.parametrize("dtype", ["<U5", object])
def test_class_name_labels_raise(small, dtype):
    model, x, y = small
    names = np.array(["cat", "dog", "mouse"])[y].astype(dtype)
    with pytest.raises(TypeError, match=r"np.unique\(y, return_inverse=True\)"):
        resgrad.gradients(model, x, names)


class Table:
    """A stand-in for a pandas DataFrame: values behind ``to_numpy``."""

    def __init__(self, values):
        self.values = values

    def to_numpy(self):
        return self.values


def test_data_frame_input_names_to_numpy(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"got a Table; pass its values with"):
        resgrad.gradients(model, Table(x), y)
    with pytest.raises(TypeError, match=r"\.to_numpy\(\)"):
        resgrad.fit(model, Table(x), y, epochs=1)
    with pytest.raises(TypeError, match=r"\.to_numpy\(\)"):
        resgrad.robustness.evaluate(model, Table(x), y, ["fgsm"], [0.1])


def test_label_count_mismatch_raises(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match=r"Expected y of shape \(4,\).*got shape \(3,\)"
    ):
        resgrad.gradients(model, x, y[:3])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: resgrad.gradients(m, x, y),
        lambda m, x, y: resgrad.gradients(m, x, y, method="product"),
        lambda m, x, y: resgrad.input_gradient(m, x, y),
        lambda m, x, y: resgrad.input_jacobian(m, x),
        lambda m, x, y: resgrad.per_sample_norms(m, x, y),
        lambda m, x, y: m(x),
    ],
    ids=["backprop", "product", "input_gradient", "input_jacobian", "norms", "call"],
)
def test_non_finite_x_raises(small, bad, call):
    model, x, y = small
    x = x.copy()
    x[2, 1] = bad
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite value"):
        call(model, x, y)


def test_unknown_loss_raises(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match="Unknown loss 'hinge'; expected one of: cross_entropy"
    ):
        resgrad.gradients(model, x, y, loss="hinge")


def test_unknown_reduction_raises(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match="Unknown reduction 'max'; expected one of: mean, sum"
    ):
        resgrad.gradients(model, x, y, reduction="max")


def test_unknown_method_raises(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match="Unknown method 'auto'; expected one of: backprop"
    ):
        resgrad.gradients(model, x, y, method="auto")


def test_x_dtype_mismatch_raises(small):
    model, x, y = small
    with pytest.raises(TypeError, match="Expected x of dtype float64.*got float32"):
        resgrad.gradients(model, x.astype(np.float32), y)


def test_byte_swapped_x_names_byte_order(small):
    # float64 in big-endian order prints as >f8 and compares unequal.
    model, x, y = small
    with pytest.raises(TypeError, match="got the big-endian dtype >f8; convert it"):
        resgrad.gradients(model, x.astype(">f8"), y)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_numpy_matrix_x_names_asarray(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"got a numpy.matrix; pass np.asarray\(m\)"):
        resgrad.gradients(model, np.asmatrix(x), y)


def test_masked_x_names_filled(small):
    model, x, y = small
    masked = np.ma.array(x, mask=x > 0.5)
    with pytest.raises(TypeError, match=r"got a numpy masked array; pass a.filled"):
        resgrad.gradients(model, masked, y)


def test_flag_of_text_raises_in_gradients(small):
    model, x, y = small
    with pytest.raises(TypeError, match="Expected with_input to be True or False"):
        resgrad.gradients(model, x, y, with_input="no")


def test_integer_x_raises(small):
    model, x, y = small
    with pytest.raises(
        TypeError, match="Expected x of a real floating dtype, got int64"
    ):
        resgrad.gradients(model, np.round(x).astype(np.int64), y)


def test_model_argument_must_be_a_network(small):
    _, x, y = small
    with pytest.raises(TypeError, match="Expected a ResidualMLP, got dict"):
        resgrad.gradients({}, x, y)


# Caller's arrays.


def _bad_calls(model, x, y):
    """Yield ``(name, call)`` pairs that each raise on invalid input."""
    nan_x = x.copy()
    nan_x[1, 2] = np.nan
    bad_y = y.copy()
    bad_y[0] = model.n_classes
    yield "nan x", lambda: resgrad.gradients(model, nan_x, y)
    yield "label", lambda: resgrad.gradients(model, x, bad_y, method="product")
    yield "width", lambda: resgrad.per_sample_norms(model, x[:, :3], y)
    yield "loss", lambda: resgrad.input_gradient(model, x, y, loss="hinge")
    yield "namespace", lambda: resgrad.input_jacobian(model, torch.asarray(x))


def test_bad_input_leaves_arrays_unchanged():
    model = reference.random_model(2, "relu", "learned")
    x, y = reference.random_batch(model, 4)
    before = {name: value.copy() for name, value in model.arrays().items()}
    x_before, y_before = x.copy(), y.copy()
    for name, call in _bad_calls(model, x, y):
        with pytest.raises((ValueError, TypeError)):
            call()
        np.testing.assert_array_equal(x, x_before, err_msg=name)
        np.testing.assert_array_equal(y, y_before, err_msg=name)
        for key, value in model.arrays().items():
            np.testing.assert_array_equal(value, before[key], err_msg=name)


def _public_calls(model, x, y):
    yield lambda: model(x)
    yield lambda: model.logits(x)
    yield lambda: model.predict(x)
    yield lambda: model.trace(x)
    for loss, method in itertools.product(LOSSES, METHODS):
        yield lambda loss=loss, method=method: resgrad.gradients(
            model, x, y, loss, method=method
        )
    for loss in LOSSES:
        yield lambda loss=loss: resgrad.input_gradient(model, x, y, loss)
        yield lambda loss=loss: resgrad.per_sample_gradients(model, x, y, loss)
        yield lambda loss=loss: resgrad.per_sample_norms(model, x, y, loss)
    for mode in ("auto", "reverse", "forward", "product"):
        yield lambda mode=mode: resgrad.input_jacobian(model, x, mode)
    yield lambda: resgrad.theorem_matrices(model, x)
    yield lambda: model.convert(dtype="float32")
    yield lambda: model.replace_arrays({})
    yield lambda: to_module(model)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_public_functions_leave_inputs_unchanged(backend, shortcut):
    model = reference.random_model(3, "relu", shortcut, output_activation="tanh")
    x, y = reference.random_batch(model, 5)
    if backend == "torch":
        model = model.convert(torch)
        x, y = torch.asarray(x), torch.asarray(y)
    before = {name: reference.to_numpy(v) for name, v in model.arrays().items()}
    x_before, y_before = reference.to_numpy(x), reference.to_numpy(y)
    for call in _public_calls(model, x, y):
        call()
    assert np.array_equal(reference.to_numpy(x), x_before)
    assert np.array_equal(reference.to_numpy(y), y_before)
    for name, value in model.arrays().items():
        assert np.array_equal(reference.to_numpy(value), before[name]), name


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_list_argument_error_names_it(backend):
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    x, y = np.zeros((2, 4)), np.zeros(2, dtype=np.int64)
    convert = "np.asarray"
    if backend == "torch":
        model, x, y = model.convert(torch), torch.from_numpy(x), torch.from_numpy(y)
        convert = "torch.as_tensor"
    # Labels in the model's dtype would be floats, which are rejected.
    expected = (
        r"Expected y to be an array, got the list \[0, 1\]; convert it first "
        rf"with {convert}, in the model's namespace, as integer class labels\.$"
    )
    with pytest.raises(TypeError, match=expected):
        resgrad.gradients(model, x, [0, 1])
    with pytest.raises(TypeError, match=r"target to be an array.*integer class"):
        resgrad.attacks.fgsm(model, x, y, 0.1, target=[1, 1])
    # Only the squared error takes float targets.
    with pytest.raises(TypeError, match=r"as integer class labels\.$"):
        resgrad.attacks.fgsm(model, x, [0, 1], 0.1)
    with pytest.raises(TypeError, match=r"labels or float targets of the model"):
        resgrad.gradients(model, x, [0, 1], loss="squared_error")
    with pytest.raises(TypeError, match=r"y_val to be an array.*integer class"):
        resgrad.fit(model, x, y, validation=(x, [0, 1]), epochs=1)
    with pytest.raises(TypeError, match="namespace and dtype") as error:
        resgrad.per_sample_gradients(model, ((0.0,) * 4,) * 2, y)
    assert "Expected x to be an array, got the tuple" in str(error.value)


def test_float16_mean_over_more_rows_than_float16_holds():
    """NumPy casts the row count to float16 before dividing, and above 65504
    rows that count is infinite."""
    model = reference.random_model(2, "tanh", "learned")
    n = 70_000
    x, y = reference.random_batch(model, n)
    expected = resgrad.gradients(model, x, y)
    half = model.convert(dtype="float16")
    with np.errstate(over="ignore"):
        got = resgrad.gradients(half, x.astype(np.float16), y)
    for name, value in expected.arrays().items():
        if name == "loss":
            continue
        scale = np.max(np.abs(value))
        error = np.max(np.abs(got.arrays()[name].astype(np.float64) - value))
        assert error <= 0.02 * scale, name


def test_divided_by_more_rows_than_float16_holds():
    """The mean of both methods divides through this."""
    from resgrad._arrays import divided

    got = divided(np, np.full(3, 0.5, dtype=np.float16), 70_000)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), 0.5 / 70_000, rtol=1e-2)
