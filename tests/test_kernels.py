"""The NumPy and PyTorch kernels against the array-API kernels they replace.

The fast kernels reuse arrays and call ``addmm`` and ``relu`` directly. Each
of them must give the numbers of the plain array-API lines and leave the
arrays it does not own unchanged.
"""

import math
import os
import sys
import types

import array_api_compat.numpy as np_compat
import array_api_compat.torch as torch_compat
import numpy as np
import pytest
import reference
import torch

import resgrad
from resgrad import _kernels
from resgrad._arrays import all_finite
from resgrad.attacks import _common
from resgrad.gradients import _input_gradient, gradients
from resgrad.losses import get_loss

ACTIVATIONS = list(resgrad.ACTIVATIONS)
SHORTCUTS = ("learned", "identity", "none")


def _arrays(backend, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape) for shape in shapes]
    if backend == "torch":
        return [torch.asarray(v) for v in values]
    return values


def _fast_and_plain(backend):
    if backend == "torch":
        return _kernels.TorchKernels(torch_compat), _kernels.Kernels(torch_compat)
    return _kernels.NumpyKernels(np_compat), _kernels.Kernels(np_compat)


def _copies(values):
    return [reference.to_numpy(v) for v in values]


def _assert_unchanged(values, before):
    for value, copy in zip(values, before):
        assert np.array_equal(reference.to_numpy(value), copy)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernels_match_array_api(backend, activation):
    fast, plain = _fast_and_plain(backend)
    g = resgrad.get_activation(activation)
    a, w_t, bias, z, rows, weight, e, u = _arrays(
        backend, (5, 4), (4, 3), (3,), (5, 3), (5, 6), (6, 3), (5, 3), (5, 3)
    )
    stack = _arrays(backend, (2, 5, 6), seed=1)[0]
    inputs = [a, w_t, bias, rows, weight, u, stack]
    before = _copies(inputs)
    cases = {
        "linear": lambda k: k.linear(a, w_t, bias),
        "linear without bias": lambda k: k.linear(a, w_t, None),
        "product": lambda k: k.product(rows, weight),
        "product of a stack": lambda k: k.product(stack, weight),
        "add_product": lambda k: k.add_product(z * 1.0, rows, weight),
        "add_product of a stack": lambda k: k.add_product(
            k.product(stack, weight), stack, weight
        ),
        "add": lambda k: k.add(z * 1.0, e),
        "activate": lambda k: k.activate(g, u),
        "times_derivative": lambda k: k.times_derivative(e * 1.0, g, u),
        "column_sum": lambda k: k.column_sum(e),
    }
    for name, case in cases.items():
        expected = reference.to_numpy(case(plain))
        actual = reference.to_numpy(case(fast))
        assert actual.shape == expected.shape, name
        np.testing.assert_allclose(
            actual, expected, rtol=1e-13, atol=1e-15, err_msg=name
        )
    _assert_unchanged(inputs, before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_relu_bitwise_and_its_zeros_stay_zero(dtype):
    fast = _kernels.NumpyKernels(np_compat)
    relu = resgrad.get_activation("relu")
    u = np.array([[-0.0, 0.0, np.nan, -np.inf, np.inf, -1.5, 2.0, 1e-40]], dtype=dtype)
    expected = relu.value(np_compat, u).tobytes()
    first = fast.activate(relu, u)
    assert first.tobytes() == expected
    # The result is a new array: writing into it must not reach the zeros
    # that the next call compares against.
    first[...] = 7
    assert fast.activate(relu, u).tobytes() == expected


def test_numpy_relu_keeps_few_small_zero_arrays():
    fast = _kernels.NumpyKernels(np_compat)
    relu = resgrad.get_activation("relu")
    for rows in range(1, _kernels.ZERO_ARRAYS + 6):
        fast.activate(relu, np.ones((rows, 3)))
    assert 0 < len(fast._constants) <= _kernels.ZERO_ARRAYS
    fast._constants.clear()
    big = np.full(_kernels.ZERO_ARRAY_SIZE + 1, -1.0)
    assert np.array_equal(fast.activate(relu, big), np.zeros_like(big))
    assert fast._constants == {}


@pytest.mark.parametrize("rows", [0, 1, 7, 64, 5000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_column_sum_accuracy(rows, dtype):
    fast = _kernels.NumpyKernels(np_compat)
    e = np.random.default_rng(rows).standard_normal((rows, 5)).astype(dtype)
    before = e.copy()
    first = fast.column_sum(e)
    exact = np.array([math.fsum(column) for column in e.T.astype(np.float64)])
    scale = np.abs(e).sum(axis=0) + np.finfo(dtype).tiny
    bound = 4 * np.finfo(dtype).eps
    assert first.dtype == e.dtype
    assert first.shape == (5,)
    assert np.all(np.abs(first - exact) <= bound * scale)
    assert np.all(np.abs(np.sum(e, axis=0) - exact) <= bound * scale)
    # The result is an array of its own: writing into it changes neither the
    # input nor the next sum.
    first[...] = 7
    assert np.array_equal(e, before)
    assert np.all(np.abs(fast.column_sum(e) - exact) <= bound * scale)


def test_numpy_column_sum_strided_and_long():
    fast = _kernels.NumpyKernels(np_compat)
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((64, 10))
    # A transposed view and every other column: neither is C-contiguous.
    for e in (wide.T.copy().T, wide[:, ::2]):
        np.testing.assert_allclose(fast.column_sum(e), np.sum(e, axis=0), rtol=1e-14)
    # Past the largest cached vector of ones, np.sum adds the rows.
    long = np.ones((_kernels.ZERO_ARRAY_SIZE + 1, 2))
    assert np.array_equal(fast.column_sum(long), np.sum(long, axis=0))
    assert all(key[0] != long.shape[:1] for key in fast._constants)


def test_numpy_column_sum_keeps_nan_and_inf():
    fast = _kernels.NumpyKernels(np_compat)
    e = np.array([[1.0, np.inf, np.nan], [2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(fast.column_sum(e), [3.0, np.inf, np.nan])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_matches_isfinite(backend, bad, dtype):
    values = np.arange(12, dtype=dtype).reshape(3, 4) - 5
    if bad is not None:
        values[2, 1] = bad
    expected = bad is None
    if backend == "torch":
        assert all_finite(torch_compat, torch.asarray(values)) is expected
    else:
        assert all_finite(np_compat, values) is expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_all_finite_when_sum_overflows(dtype):
    # The sum of these finite entries overflows, so the test falls back to
    # the largest magnitude.
    big = torch.finfo(dtype).max * 0.75
    values = torch.full((4, 3), big, dtype=dtype)
    assert all_finite(torch_compat, values) is True
    values[1, 2] = -float("inf")
    assert all_finite(torch_compat, values) is False
    values[0, 0] = float("inf")
    assert all_finite(torch_compat, values) is False


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_all_finite_of_large_complex_tensor(dtype):
    # |3e38 + 3e38i| overflows complex64, though both parts are finite.
    big = torch.finfo(torch.float32).max * 0.9
    values = torch.tensor([complex(big, big), complex(1.0, -2.0)], dtype=dtype)
    assert all_finite(torch_compat, values) is True
    values[1] = complex(float("nan"), 0.0)
    assert all_finite(torch_compat, values) is False


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_all_finite_of_empty_integer_and_bool_arrays(backend):
    xp = torch_compat if backend == "torch" else np_compat
    cases = [
        xp.zeros((0, 3), dtype=xp.float64),
        xp.asarray([[-7, 3]], dtype=xp.int64),
        xp.asarray([True, False]),
    ]
    for array in cases:
        assert all_finite(xp, array) is True


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sign_step_matches_array_api(backend):
    fast, plain = _fast_and_plain(backend)
    v, direction, lower = _arrays(backend, (6, 5), (6, 5), (6, 5))
    direction[0, 0] = 0.0
    upper = lower + 0.3
    before = _copies([v, lower, upper])
    expected = reference.to_numpy(
        plain.sign_step(v, direction * 1.0, 0.1, lower, upper)
    )
    actual = reference.to_numpy(fast.sign_step(v, direction * 1.0, 0.1, lower, upper))
    assert np.array_equal(actual, expected)
    assert np.all(expected >= reference.to_numpy(lower))
    assert np.all(expected <= reference.to_numpy(upper))
    _assert_unchanged([v, lower, upper], before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_cross_entropy_bitwise(dtype):
    rng = np.random.default_rng(3)
    out = (30 * rng.standard_normal((40, 7))).astype(dtype)
    y = rng.integers(0, 7, size=40)
    loss = get_loss("cross_entropy")
    before = out.copy()
    values, grad = _kernels.NumpyKernels(np_compat).loss(loss, out, y)
    assert values.dtype == grad.dtype == out.dtype
    assert np.array_equal(values, loss.value(np_compat, out, y))
    assert np.array_equal(grad, loss.grad(np_compat, out, y))
    assert np.array_equal(out, before)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", list(resgrad.LOSSES))
def test_loss_kernels_match_array_api(backend, name):
    fast, plain = _fast_and_plain(backend)
    loss = get_loss(name)
    (out,) = _arrays(backend, (12, 5))
    y = np.arange(12) % 5
    y = torch.asarray(y) if backend == "torch" else y
    before = _copies([out])
    for value in (True, False):
        fast_values, fast_grad = fast.loss(loss, out, y, value)
        plain_values, plain_grad = plain.loss(loss, out, y, value)
        assert reference.relative_error(fast_grad, plain_grad) < 1e-14
        if value:
            assert reference.relative_error(fast_values, plain_values) < 1e-14
        else:
            assert fast_values is None
    _assert_unchanged([out], before)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_equal_with_plain_kernels(monkeypatch, backend, shortcut, activation):
    """A whole gradient call gives the same numbers through either kernels."""
    model = reference.random_model(3, activation, shortcut, post_activation="relu")
    x, y = reference.random_batch(model, 9)
    if backend == "torch":
        model, x, y = model.convert(torch), torch.asarray(x), torch.asarray(y)
    fast = reference.gradient_dict(gradients(model, x, y))
    monkeypatch.setattr(_kernels, "kernels", lambda m, *a: _kernels.Kernels(m.xp))
    plain = reference.gradient_dict(gradients(model, x, y))
    for name, value in plain.items():
        assert reference.relative_error(fast[name], value) < 1e-13, name


def test_tracked_torch_gets_plain_kernels():
    model = reference.random_model(2, "relu").convert(torch)
    x, y = reference.random_batch(model, 4)
    x, y = torch.asarray(x), torch.asarray(y)
    assert type(_kernels.kernels(model, x)) is _kernels.TorchKernels
    leaf = x.clone().requires_grad_(True)
    assert type(_kernels.kernels(model, leaf)) is _kernels.Kernels
    with torch.no_grad():
        assert type(_kernels.kernels(model, leaf)) is _kernels.TorchKernels
    arrays = {k: v.clone().requires_grad_(True) for k, v in model.arrays().items()}
    tracked = model.replace_arrays(arrays)
    assert type(_kernels.kernels(tracked, x)) is _kernels.Kernels
    # The graph through the plain kernels still differentiates: the loss
    # gradient of W1 from autograd equals resgrad's closed form.
    result = gradients(tracked, x, y)
    (autograd,) = torch.autograd.grad(result.loss, [arrays["blocks.0.W1"]])
    assert reference.relative_error(autograd, result.blocks[0].W1) < 1e-12


@pytest.mark.parametrize("width", [8, 128, 200])
def test_prepared_forward_matches(width):
    model = resgrad.ResidualMLP.init([width, width, 5], seed=2)
    x = np.random.default_rng(0).uniform(size=(7, width))
    prepared = model._prepared(7)
    small = model.blocks[0].W1.size <= _kernels.SMALL_MATRIX
    assert prepared[0][0].flags.c_contiguous == small
    # 7 rows of a bias of at most 200 entries are few enough to repeat.
    assert prepared[0][1].shape == (7, width)
    assert prepared[1][3].shape == (7, 5)
    # The two layouts may sum a product in another order, so the results
    # agree to rounding, relative to the largest entry.
    plain, a_plain = model._forward(x)
    fast, a_fast = model._forward(x, prepared)
    assert reference.relative_error(a_fast, a_plain) < 1e-13
    for fast_trace, plain_trace in zip(fast, plain):
        for left, right in zip(fast_trace, plain_trace):
            assert reference.relative_error(left, right) < 1e-13
    y = np.arange(7) % 5
    loss = get_loss("cross_entropy")
    expected = resgrad.input_gradient(model, x, y)[1]
    assert (
        reference.relative_error(_input_gradient(model, x, y, loss, prepared), expected)
        < 1e-12
    )


@pytest.mark.parametrize("rows", [1, 64, 128, 129])
def test_bias_rows_repeat_small_biases(rows):
    """A bias of 128 entries is repeated up to SMALL_MATRIX entries in all,
    read-only, and a product plus either form gives the same bits."""
    rng = np.random.default_rng(1)
    bias = rng.standard_normal(128)
    before = bias.copy()
    ops = _kernels.NumpyKernels(np)
    repeated = ops.bias_rows(bias, rows)
    if rows * 128 <= _kernels.SMALL_MATRIX:
        assert repeated.shape == (rows, 128)
        assert not repeated.flags.writeable
        np.testing.assert_array_equal(repeated, np.tile(bias, (rows, 1)))
    else:
        assert repeated is bias
    a, w = rng.standard_normal((rows, 32)), rng.standard_normal((32, 128))
    np.testing.assert_array_equal(ops.linear(a, w, repeated), ops.linear(a, w, bias))
    np.testing.assert_array_equal(bias, before)
    assert ops.bias_rows(None, rows) is None
    assert _kernels.Kernels(np).bias_rows(bias, rows) is bias


def test_linf_clamp_is_ball_then_box():
    """One clamp to the clipped bounds equals the ball and then the box, also
    for an x up to the box tolerance outside the box."""
    rng = np.random.default_rng(5)
    model = resgrad.ResidualMLP.init([6, 6, 3], seed=0)
    x = rng.uniform(size=(50, 6))
    x[0, :3] = [1.0 + 5e-7, -5e-7, 1.0]
    y = rng.integers(0, 3, size=50)
    batch = _common.prepare(model, x, y)
    for eps in (0.0, 1e-7, 0.05, 2.0):
        v = rng.uniform(-1.5, 2.5, size=x.shape)
        # A limit that x -+ eps rounds past lies one float toward x.
        lower, upper = x - eps, x + eps
        lower = np.where(x - lower > eps, np.nextafter(lower, x), lower)
        upper = np.where(upper - x > eps, np.nextafter(upper, x), upper)
        ball = np.minimum(np.maximum(v, lower), upper)
        expected = np.clip(ball, 0.0, 1.0)
        limits = _common.linf_limits(batch, eps)
        assert np.array_equal(_common.project_linf(batch, v, limits), expected)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_outer_products_match_array_api(backend):
    fast, plain = _fast_and_plain(backend)
    left, right, other = _arrays(backend, (4, 3), (4, 5), (4, 2))
    if backend == "numpy":
        left, right = left.astype(np.float32), right.astype(np.float32)
        other = other.astype(np.float32)
    pairs = [(left, right), (right, other), (left, left)]
    before = _copies([left, right, other])
    stacks = fast.outer_products(pairs)
    expected = plain.outer_products(pairs)
    assert [tuple(s.shape) for s in stacks] == [(4, 3, 5), (4, 5, 2), (4, 3, 3)]
    for stack, want in zip(stacks, expected):
        assert stack.dtype == want.dtype
        assert np.array_equal(reference.to_numpy(stack), reference.to_numpy(want))
    # The stacks share one buffer on NumPy, but writing to one leaves the
    # others as they were.
    stacks[0][...] = 7
    for stack, want in zip(stacks[1:], expected[1:]):
        assert np.array_equal(reference.to_numpy(stack), reference.to_numpy(want))
    _assert_unchanged([left, right, other], before)


def _counting_torch_mul(monkeypatch):
    calls = []
    original = torch.mul

    def counting(*args, **kwargs):
        calls.append(kwargs.get("out") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "mul", counting)
    return calls


def _stacks_by_einsum(pairs):
    return [np.einsum("ni,nj->nij", left, right) for left, right in pairs]


def _assert_same_bits_but_zero_sign(stack, want):
    """torch.mul gives -0.0 for a zero times a negative number, einsum +0.0;
    every other entry has the same bits."""
    assert stack.dtype == want.dtype
    nonzero = want != 0
    assert np.array_equal(stack == 0, ~nonzero)
    bits = np.dtype(f"u{want.itemsize}")
    assert np.array_equal(stack[nonzero].view(bits), want[nonzero].view(bits))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outer_products_torch_match_einsum(monkeypatch, dtype):
    """Large stacks go through torch.mul, small ones and narrow rows do not,
    and every stack has the bits of np.einsum's, up to the sign of zero."""
    calls = _counting_torch_mul(monkeypatch)
    rng = np.random.default_rng(3)
    # (rows, left width, right width): the first two are large enough, the
    # third has rows of 32 entries, the fourth 16,384 entries in all.
    shapes = [(32, 64, 64), (8, 64, 65), (64, 64, 32), (4, 64, 64)]
    pairs = []
    for n, q, p in shapes:
        left = rng.standard_normal((n, q)).astype(dtype)
        right = rng.standard_normal((n, p)).astype(dtype)
        # Zeros, as relu leaves them, times negative numbers.
        left[::3] = 0.0
        pairs.append((left, right))
    before = _copies([a for pair in pairs for a in pair])
    stacks = _kernels.NumpyKernels(np_compat).outer_products(pairs)
    assert calls == [True, True]
    for stack, want in zip(stacks, _stacks_by_einsum(pairs)):
        _assert_same_bits_but_zero_sign(stack, want)
    _assert_unchanged([a for pair in pairs for a in pair], before)


def _in_records(a):
    """Return ``a`` as a field of a record array, whose rows are 4 bytes
    longer than the field."""
    records = np.zeros(a.shape[0], dtype=[("a", a.dtype, a.shape[1:]), ("b", "f4")])
    records["a"] = a
    return records["a"]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "change",
    [
        _read_only,
        lambda a: a.astype(a.dtype.newbyteorder()),
        lambda a: a[:, ::-1],
        lambda a: a.astype(np.float16),
        _in_records,
    ],
    ids=[
        "read-only",
        "byte-swapped",
        "negative stride",
        "float16",
        "stride not a multiple of the item size",
    ],
)
def test_outer_products_unviewable_keep_einsum(monkeypatch, recwarn, change):
    calls = _counting_torch_mul(monkeypatch)
    rng = np.random.default_rng(4)
    left = change(rng.standard_normal((32, 64)))
    right = rng.standard_normal((32, 64)).astype(left.dtype.newbyteorder("="))
    (stack,) = _kernels.NumpyKernels(np_compat).outer_products([(left, right)])
    assert calls == []
    assert not recwarn.list
    assert np.array_equal(stack, np.einsum("ni,nj->nij", left, right))


def test_outer_products_without_torch(monkeypatch):
    calls = _counting_torch_mul(monkeypatch)
    monkeypatch.delitem(sys.modules, "torch")
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal((32, 64)), rng.standard_normal((32, 64)))]
    stacks = _kernels.NumpyKernels(np_compat).outer_products(pairs)
    assert calls == []
    assert np.array_equal(stacks[0], _stacks_by_einsum(pairs)[0])


def _broken_from_numpy(array):
    raise RuntimeError("Numpy is not available")


@pytest.mark.parametrize(
    "torch_module",
    [
        pytest.param(
            lambda: types.SimpleNamespace(from_numpy=torch.from_numpy), id="stub"
        ),
        pytest.param(
            lambda: types.SimpleNamespace(
                from_numpy=_broken_from_numpy, mul=torch.mul, _C=torch._C
            ),
            id="broken NumPy bridge",
        ),
    ],
)
def test_outer_products_failing_torch(monkeypatch, torch_module):
    monkeypatch.setitem(sys.modules, "torch", torch_module())
    rng = np.random.default_rng(7)
    pairs = [(rng.standard_normal((32, 64)), rng.standard_normal((32, 64)))]
    stacks = _kernels.NumpyKernels(np_compat).outer_products(pairs)
    assert np.array_equal(stacks[0], _stacks_by_einsum(pairs)[0])


def test_outer_products_under_torch_mode():
    """A mode such as FakeTensorMode takes torch.mul over and writes nothing;
    the stacks must still hold the products."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    rng = np.random.default_rng(8)
    pairs = [(rng.standard_normal((32, 64)), rng.standard_normal((32, 64)))]
    with FakeTensorMode(), torch.device("meta"):
        stacks = _kernels.NumpyKernels(np_compat).outer_products(pairs)
    assert np.array_equal(stacks[0], _stacks_by_einsum(pairs)[0])


FORKED_STACKS = """
import multiprocessing
import numpy as np
import torch
from array_api_compat import numpy as np_compat
from resgrad import _kernels

torch.set_num_threads(2)
rng = np.random.default_rng(0)
pairs = [(rng.standard_normal((256, 256)), rng.standard_normal((256, 256)))]

def total(_):
    stacks = _kernels.NumpyKernels(np_compat).outer_products(pairs)
    return float(stacks[0].sum())

# The parent starts torch's thread pool, which a forked child lacks.
parent = total(0)
with multiprocessing.get_context("fork").Pool(1) as pool:
    child = pool.map_async(total, [0]).get(timeout=60)
print(parent == child[0])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_outer_products_forked_child():
    assert reference.run_python(FORKED_STACKS) == "True"


def test_outer_products_given_stacks_torch(monkeypatch):
    calls = _counting_torch_mul(monkeypatch)
    rng = np.random.default_rng(6)
    pairs = [(rng.standard_normal((16, 64)), rng.standard_normal((16, 64)))] * 2
    out = [np.empty((16, 64, 64)), np.empty((16, 64, 64))]
    returned = _kernels.NumpyKernels(np_compat).outer_products(pairs, out)
    assert calls == [True, True]
    assert all(r is o for r, o in zip(returned, out))
    assert np.array_equal(out[1], _stacks_by_einsum(pairs)[1])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64"])
def test_cross_entropy_any_label_dtype(backend, dtype):
    """Labels of every integer dtype pick the same entries as int64 labels."""
    fast, _ = _fast_and_plain(backend)
    loss = get_loss("cross_entropy")
    (out,) = _arrays(backend, (6, 3))
    labels = np.array([0, 1, 2, 2, 1, 0])
    if backend == "torch":
        wide, narrow = torch.asarray(labels), torch.asarray(labels.astype(dtype))
    else:
        wide, narrow = labels, labels.astype(dtype)
    values, grad = fast.loss(loss, out, narrow)
    want_values, want_grad = fast.loss(loss, out, wide)
    assert np.array_equal(reference.to_numpy(values), reference.to_numpy(want_values))
    assert np.array_equal(reference.to_numpy(grad), reference.to_numpy(want_grad))


# Settings that fix glibc's limits, which its own raising then leaves alone.
MALLOC_SETTINGS = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts page faults of glibc"
)
@pytest.mark.skipif(
    any(name in os.environ for name in MALLOC_SETTINGS),
    reason="the environment sets glibc's malloc limits",
)
def test_repeated_gradients_reuse_freed_memory():
    """Each call keeps about 1.5 MiB of arrays until its end. Without the
    raised limits, glibc gave that memory back and the next call faulted in
    fresh pages, several hundred a call; PyTorch's import raised the limits
    as a side effect, so the process must not import it."""
    code = """
import resource, sys
import numpy as np
import resgrad
model = resgrad.ResidualMLP.init([64] * 9 + [10], seed=0)
x = np.random.default_rng(0).random((64, 64))
y = np.arange(64) % 10
for _ in range(5):
    resgrad.gradients(model, x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    resgrad.gradients(model, x, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print("torch" in sys.modules, after - before)
"""
    imported, faults = reference.run_python(code).split()
    assert imported == "False"
    assert int(faults) < 50 * 20, faults
