"""Tests of the NumPy route: resgrad's calls on CPU tensors outside autograd
run NumPy's kernels on views of the tensors and return tensors.

Every routed function must give what the torch kernels give, to rounding,
in the same types, dtypes and shapes. Calls the route cannot take must run
on torch exactly as before, and errors must read the same.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import numpy as np
import pytest
import reference
import torch

import resgrad
from resgrad import _kernels, _numpy_route, attacks
from resgrad.torch import use_numpy_on_cpu

# Fixed target classes meet the random labels in some rows, which the
# attacks warn of the same way on both routes.
pytestmark = pytest.mark.filterwarnings("ignore:target equals the label y")

N = 7


@pytest.fixture
def routed(monkeypatch):
    """Return a list that gets one entry per call that took the route."""
    took_route = []
    original = _numpy_route._route

    def spy(function, model, args, kwargs, any_size=False):
        result = original(function, model, args, kwargs, any_size)
        if result is not None:
            took_route.append(function.__name__)
        return result

    monkeypatch.setattr(_numpy_route, "_route", spy)
    return took_route


@pytest.fixture
def torch_kernels():
    """Return a function that runs a call with the route off."""

    def run(function, *args, **kwargs):
        previous = use_numpy_on_cpu(False)
        try:
            return function(*args, **kwargs)
        finally:
            use_numpy_on_cpu(previous)

    return run


def _net(dtype=torch.float64, activation="tanh", shortcut="learned"):
    model = reference.random_model(3, activation, shortcut, classes=4)
    x, y = reference.random_batch(model, N)
    # Inputs in [0, 1], the attacks' default box.
    x = 1 / (1 + np.exp(-x))
    x_t = torch.as_tensor(x, dtype=dtype)
    return model.convert(torch, dtype=dtype), x_t, torch.as_tensor(y)


CALLS = {
    "gradients": lambda m, x, y: resgrad.gradients(m, x, y),
    "gradients sum, no input": lambda m, x, y: resgrad.gradients(
        m, x, y, reduction="sum", with_input=False
    ),
    "gradients product": lambda m, x, y: resgrad.gradients(m, x, y, method="product"),
    "input_gradient": lambda m, x, y: resgrad.input_gradient(m, x, y),
    "input_jacobian": lambda m, x, y: resgrad.input_jacobian(m, x),
    "per_sample_gradients": lambda m, x, y: resgrad.per_sample_gradients(m, x, y),
    "per_sample_norms": lambda m, x, y: resgrad.per_sample_norms(m, x, y),
    "fgsm": lambda m, x, y: attacks.fgsm(m, x, y, 0.05),
    "rfgsm": lambda m, x, y: attacks.rfgsm(m, x, y, 0.05, seed=1),
    "bim": lambda m, x, y: attacks.bim(m, x, y, 0.05, steps=4),
    "illcm": lambda m, x, y: attacks.illcm(m, x, y, 0.05, steps=4),
    "mifgsm targeted": lambda m, x, y: attacks.mifgsm(m, x, y, 0.05, target=1),
    "pgd early stop": lambda m, x, y: attacks.pgd(
        m, x, y, 0.05, steps=4, seed=2, early_stop=True
    ),
    "pgd_l2": lambda m, x, y: attacks.pgd_l2(m, x, y, 0.5, steps=4, seed=3),
    "jsma": lambda m, x, y: attacks.jsma(m, x, y, target=2, gamma=1.0),
    "mjsma": lambda m, x, y: attacks.mjsma(m, x, y, target=3, gamma=1.0),
}


def _leaves(value, path="result"):
    """Yield ``(path, leaf)`` for every field, item and array in ``value``."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _leaves(getattr(value, name), f"{path}.{name}")
    else:
        yield path, value


def _assert_same_result(routed_result, torch_result, rtol):
    assert type(routed_result) is type(torch_result)
    pairs = list(zip(_leaves(routed_result), _leaves(torch_result), strict=True))
    assert pairs
    for (path, got), (other, want) in pairs:
        assert path == other
        assert type(got) is type(want), path
        if isinstance(want, torch.Tensor):
            assert got.dtype == want.dtype, path
            assert got.shape == want.shape, path
            assert got.device == want.device, path
            assert got.requires_grad == want.requires_grad, path
            torch.testing.assert_close(
                got.detach(), want.detach(), rtol=rtol, atol=rtol, msg=path
            )
        else:
            assert got == want, path


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_route_matches_torch_kernels(name, dtype, routed, torch_kernels):
    model, x, y = _net(dtype)
    x_before, y_before = x.clone(), y.clone()
    weights_before = {k: v.clone() for k, v in model.arrays().items()}
    result = CALLS[name](model, x, y)
    assert len(routed) == 1, routed
    expected = torch_kernels(CALLS[name], model, x, y)
    assert len(routed) == 1
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    _assert_same_result(result, expected, rtol)
    # Nothing of the caller's was written, and no result shares its memory.
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)
    torch.testing.assert_close(y, y_before, rtol=0, atol=0)
    for key, value in model.arrays().items():
        torch.testing.assert_close(value, weights_before[key], rtol=0, atol=0)
    for path, leaf in _leaves(result):
        if isinstance(leaf, torch.Tensor) and leaf is not y:
            for owner in (x, *model.arrays().values()):
                shared = np.shares_memory(leaf.numpy(), owner.numpy())
                assert not shared, path


def test_route_returns_caller_tensors(routed):
    model, x, y = _net()
    out = resgrad.per_sample_gradients(model, x, y)
    stacks = dict(out.arrays())
    again = resgrad.per_sample_gradients(model, 2 * x, y, out=out)
    assert routed == ["per_sample_gradients", "per_sample_gradients"]
    for key, value in again.arrays().items():
        if key.rsplit(".", 1)[1].startswith("W"):
            assert value is stacks[key], key
    fresh = resgrad.per_sample_gradients(model, 2 * x, y)
    for key, value in fresh.arrays().items():
        torch.testing.assert_close(again.arrays()[key], value, rtol=0, atol=0)


def _requires_grad_weights(model, x, y):
    weights = {k: v.clone().requires_grad_(True) for k, v in model.arrays().items()}
    return model.replace_arrays(weights), x, y


def _requires_grad_input(model, x, y):
    return model, x.clone().requires_grad_(True), y


def _bfloat16(model, x, y):
    return model.convert(dtype=torch.bfloat16), x.to(torch.bfloat16), y


def _negated_weight(model, x, y):
    # A conjugate view is not possible for real tensors; a negated view is.
    weights = dict(model.arrays())
    weights["blocks.0.W1"] = torch._neg_view(weights["blocks.0.W1"])
    return model.replace_arrays(weights), x, y


@pytest.mark.parametrize(
    "make",
    [_requires_grad_weights, _requires_grad_input, _bfloat16, _negated_weight],
)
def test_ineligible_calls_run_on_torch(make, routed, torch_kernels):
    model, x, y = make(*_net())
    result = resgrad.gradients(model, x, y)
    assert routed == []
    expected = torch_kernels(resgrad.gradients, model, x, y)
    _assert_same_result(result, expected, rtol=0)


def test_route_off_keeps_torch_kernels(routed):
    model, x, y = _net()
    assert use_numpy_on_cpu(False) is True
    try:
        resgrad.gradients(model, x, y)
        attacks.pgd(model, x, y, 0.05, steps=2, seed=0)
    finally:
        assert use_numpy_on_cpu(True) is False
    assert routed == []
    resgrad.gradients(model, x, y)
    assert routed == ["gradients"]


def _wide_net(width, rows=_numpy_route.TORCH_KERNELS_ROWS):
    """Return a float64 torch network whose largest weight is width x width,
    and a batch of ``rows`` rows."""
    model = resgrad.ResidualMLP.init([width, width, 3], seed=0, xp=torch)
    x = torch.rand(
        rows, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    return model, x, torch.arange(rows) % 3


@pytest.mark.parametrize("torch_faster", [True, False])
def test_large_models_keep_faster_torch_kernels(torch_faster, routed, monkeypatch):
    monkeypatch.setattr(_numpy_route, "_torch_blas_faster", lambda torch: torch_faster)
    side = 128
    assert side * side == _numpy_route.TORCH_KERNELS_FROM
    large, x, y = _wide_net(side)
    resgrad.gradients(large, x, y)
    attacks.fgsm(large, x=x, y=y, eps=0.05)
    resgrad.per_sample_gradients(large, x, y)
    expected = ["per_sample_gradients"]
    if not torch_faster:
        expected = ["gradients", "fgsm", "per_sample_gradients"]
    assert routed == expected
    routed.clear()
    small, x, y = _wide_net(side - 1)
    resgrad.gradients(small, x, y)
    assert routed == ["gradients"]


def test_always_routes_large_models(routed, monkeypatch):
    monkeypatch.setattr(_numpy_route, "_torch_blas_faster", lambda torch: True)
    large, x, y = _wide_net(128)
    assert use_numpy_on_cpu("always") is True
    try:
        resgrad.gradients(large, x, y)
        attacks.fgsm(large, x=x, y=y, eps=0.05)
    finally:
        assert use_numpy_on_cpu(True) == "always"
    assert routed == ["gradients", "fgsm"]
    routed.clear()
    # Back to the size rule.
    resgrad.gradients(large, x, y)
    assert routed == []


def test_forked_child_routes_large_models(routed, monkeypatch):
    monkeypatch.setattr(_numpy_route, "_torch_blas_faster", lambda torch: True)
    monkeypatch.setattr(_kernels, "_forked", True)
    large, x, y = _wide_net(128)
    resgrad.gradients(large, x, y)
    attacks.fgsm(large, x=x, y=y, eps=0.05)
    assert routed == ["gradients", "fgsm"]


FORKED_GRADIENTS = """
import multiprocessing
import numpy as np
import torch
import resgrad

torch.set_num_threads(2)
model = resgrad.ResidualMLP.init([128, 128, 128, 10], seed=0, xp=torch)
rng = np.random.default_rng(0)
x = torch.tensor(rng.random((8, 128)))
y = torch.tensor(rng.integers(0, 10, 8))

def input_gradient(_):
    return resgrad.gradients(model, x, y).input.numpy()

# The parent runs torch's BLAS on two threads, which a forked child lacks.
parent = input_gradient(0)
with multiprocessing.get_context("fork").Pool(1) as pool:
    child = pool.map_async(input_gradient, [0]).get(timeout=60)[0]
print(np.allclose(parent, child, rtol=1e-12, atol=0))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.skipif(
    not _numpy_route._torch_blas_faster(torch),
    reason="large models keep the torch kernels only where torch's BLAS is faster",
)
def test_forked_child_runs_large_models():
    assert reference.run_python(FORKED_GRADIENTS) == "True"


def test_few_rows_take_route_on_large_models(routed, monkeypatch):
    monkeypatch.setattr(_numpy_route, "_torch_blas_faster", lambda torch: True)
    rows = _numpy_route.TORCH_KERNELS_ROWS - 1
    large, x, y = _wide_net(128, rows)
    resgrad.gradients(large, x, y)
    resgrad.input_gradient(large, x=x, y=y)
    assert routed == ["gradients", "input_gradient"]


@pytest.mark.parametrize(
    ("torch_blas", "numpy_blas", "vendor", "expected"),
    [
        ("BLAS_INFO=mkl", "scipy-openblas", "GenuineIntel", True),
        ("BLAS_INFO=mkl", "scipy-openblas", "AuthenticAMD", False),
        ("BLAS_INFO=mkl", "mkl-rt", "GenuineIntel", False),
        ("BLAS_INFO=open", "scipy-openblas", "GenuineIntel", False),
    ],
)
def test_torch_blas_faster_needs_mkl_on_intel(
    torch_blas, numpy_blas, vendor, expected, monkeypatch
):
    monkeypatch.setattr(torch.__config__, "show", lambda: f"  - {torch_blas}, ")
    monkeypatch.setattr(_numpy_route, "_numpy_blas", lambda: numpy_blas)
    monkeypatch.setattr(_numpy_route, "_cpu_vendor", lambda: vendor)
    assert _numpy_route._torch_blas_faster.__wrapped__(torch) is expected


def test_cpu_vendor_read_from_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    real_open = open
    monkeypatch.setattr(
        _numpy_route,
        "open",
        lambda path, *args, **kwargs: real_open(info, *args, **kwargs),
        raising=False,
    )
    assert _numpy_route._cpu_vendor() == "AuthenticAMD"


def test_cpu_vendor_without_cpuinfo(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("no /proc here")

    monkeypatch.setattr(_numpy_route, "open", missing, raising=False)
    monkeypatch.setattr(
        _numpy_route.platform, "processor", lambda: "Intel64 Family 6 GenuineIntel"
    )
    monkeypatch.setattr(_numpy_route.sys, "platform", "win32")
    assert _numpy_route._cpu_vendor() == "GenuineIntel"
    monkeypatch.setattr(_numpy_route.platform, "processor", lambda: "ARMv8 (64-bit)")
    assert _numpy_route._cpu_vendor() == ""
    # Elsewhere platform.processor() names no vendor, and is not asked.
    monkeypatch.setattr(_numpy_route.sys, "platform", "darwin")
    monkeypatch.setattr(
        _numpy_route.platform, "processor", lambda: pytest.fail("asked")
    )
    assert _numpy_route._cpu_vendor() == ""


@pytest.mark.parametrize("value", [1, None, "yes", "Always", b"always"])
def test_switch_rejects_non_bool(value):
    with pytest.raises(TypeError, match="True, False or 'always'"):
        use_numpy_on_cpu(value)


def test_switch_takes_numpy_bool():
    try:
        assert use_numpy_on_cpu(np.bool_(False)) is True
    finally:
        assert use_numpy_on_cpu(np.bool_(True)) is False


def test_twin_goes_with_the_model():
    import gc

    # Models of earlier tests that only the cycle collector frees.
    gc.collect()
    model, x, y = _net()
    resgrad.gradients(model, x, y)
    assert model in _numpy_route._twins
    count = len(_numpy_route._twins)
    del model
    gc.collect()
    assert len(_numpy_route._twins) == count - 1


def _swap_shortcut(model):
    model.blocks[1] = dataclasses.replace(model.blocks[1], W3=None, shortcut="none")


def _set_activations(model):
    model.activation = model.post_activation = "relu"


def _set_output_activation(model):
    model.output_activation = "tanh"


def _transpose_square_weight(model):
    # The last block's W3 is 4 x 4, so its transpose still fits; the memory
    # stays where it was, and only the strides change.
    model.blocks[2].W3.data = model.blocks[2].W3.data.t()


def _strides_in_place(model):
    with torch.no_grad():
        model.blocks[2].W3.as_strided_((4, 4), (1, 4))


@pytest.mark.parametrize(
    "change",
    [
        _swap_shortcut,
        _set_activations,
        _set_output_activation,
        _transpose_square_weight,
        _strides_in_place,
    ],
)
def test_twin_follows_model_changes(change, routed, torch_kernels):
    model, x, y = _net()
    resgrad.gradients(model, x, y)
    change(model)
    for call in ("gradients", "input_jacobian", "pgd early stop"):
        result = CALLS[call](model, x, y)
        expected = torch_kernels(CALLS[call], model, x, y)
        _assert_same_result(result, expected, 1e-12)
    assert len(routed) == 4


def test_negated_weight_leaves_route(routed, torch_kernels):
    model, x, y = _net()
    resgrad.gradients(model, x, y)
    model.blocks[0].W1 = torch._neg_view(model.blocks[0].W1)
    result = resgrad.gradients(model, x, y)
    expected = torch_kernels(resgrad.gradients, model, x, y)
    _assert_same_result(result, expected, 0)
    assert routed == ["gradients"]


def _shrink_weight(model):
    with torch.no_grad():
        model.blocks[1].W1.resize_(3, 6)


def _int_weight(model):
    model.blocks[0].W2.data = model.blocks[0].W2.data.view(torch.int64)


def _float32_weight(model):
    model.blocks[0].b1.data = model.blocks[0].b1.data.float()


@pytest.mark.parametrize("change", [_shrink_weight, _int_weight, _float32_weight])
def test_broken_weight_raises_as_torch(change, routed, torch_kernels):
    model, x, y = _net()
    resgrad.gradients(model, x, y)
    change(model)
    got = _message(resgrad.gradients, model, x, y)
    assert got == _message(torch_kernels, resgrad.gradients, model, x, y)
    assert routed == ["gradients"]


def test_attack_routes_input_requiring_grad(routed):
    """Attacks run with autograd off, where the torch kernels treat such an
    input as any other, so the route takes it and the result is the same."""
    model, x, y = _net()
    tracked = x.clone().requires_grad_(True)
    result = attacks.pgd(model, tracked, y, 0.05, steps=3, seed=0)
    plain = attacks.pgd(model, x, y, 0.05, steps=3, seed=0)
    assert routed == ["pgd", "pgd"]
    assert not result.x_adv.requires_grad
    assert tracked.grad is None
    torch.testing.assert_close(result.x_adv, plain.x_adv, rtol=0, atol=0)


def test_weights_written_in_place_show(routed, torch_kernels):
    model, x, y = _net()
    resgrad.gradients(model, x, y)
    with torch.no_grad():
        model.blocks[0].W1.mul_(3)
    scaled = resgrad.gradients(model, x, y)
    expected = torch_kernels(resgrad.gradients, model, x, y)
    torch.testing.assert_close(scaled.blocks[0].W1, expected.blocks[0].W1)
    # A tensor whose storage is swapped gets a new NumPy view.
    model.blocks[1].W2.data = torch.zeros_like(model.blocks[1].W2)
    swapped = resgrad.gradients(model, x, y)
    expected = torch_kernels(resgrad.gradients, model, x, y)
    torch.testing.assert_close(swapped.blocks[0].W1, expected.blocks[0].W1)
    assert float(abs(swapped.blocks[1].W1).max()) == 0
    assert routed == ["gradients"] * 3


def _message(function, *args, **kwargs):
    with pytest.raises(Exception) as caught:
        function(*args, **kwargs)
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        lambda m, x, y: resgrad.gradients(m, x, y + 10),
        lambda m, x, y: resgrad.gradients(m, x.numpy(), y),
        lambda m, x, y: resgrad.gradients(m, x[:, :2], y),
        lambda m, x, y: resgrad.gradients(m, x.float(), y),
        lambda m, x, y: attacks.pgd(m, x, y, -0.1),
        lambda m, x, y: attacks.fgsm(m, x + 5, y, 0.1),
        lambda m, x, y: resgrad.gradients(m, x * float("nan"), y),
    ],
    ids=["label", "numpy x", "shape", "dtype", "eps", "box", "nan"],
)
def test_errors_read_as_on_torch(bad, torch_kernels):
    model, x, y = _net()
    assert _message(bad, model, x, y) == _message(torch_kernels, bad, model, x, y)


@pytest.mark.parametrize("name", ["rfgsm", "pgd", "pgd_l2"])
def test_failed_numpy_run_restores_generator(name, monkeypatch, torch_kernels):
    # A failure on the NumPy side after the random draw: the torch run that
    # follows must draw what it would draw alone.
    model, x, y = _net()
    module = attacks.ATTACKS[name].__module__
    original = sys.modules[module].from_numpy

    def fails_on_numpy(batch, values):
        if not torch.is_tensor(batch.x):
            raise MemoryError("the NumPy side failed")
        return original(batch, values)

    monkeypatch.setattr(sys.modules[module], "from_numpy", fails_on_numpy)
    got = attacks.ATTACKS[name](model, x, y, 0.05, seed=np.random.default_rng(4))
    want = torch_kernels(
        attacks.ATTACKS[name], model, x, y, 0.05, seed=np.random.default_rng(4)
    )
    assert torch.equal(got.x_adv, want.x_adv)


def _overflowing_net():
    """Return a float32 network whose forward pass on the tiny x stays
    finite while the backward pass overflows, and its x and y."""
    model = resgrad.ResidualMLP.init(
        [4, 6, 6, 6, 3], activation="relu", shortcut="none", dtype="float32", xp=torch
    )
    model = model.replace_arrays({k: v * 1e8 for k, v in model.arrays().items()})
    x = torch.linspace(0.1, 1.0, 24, dtype=torch.float32).reshape(6, 4) * 1e-30
    return model, x, torch.tensor([0, 1, 2, 0, 1, 2])


def _warnings_and_error(function, *args, **kwargs):
    """Return the warnings that ``function`` issues and its error, if any."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            function(*args, **kwargs)
            error = None
        except Exception as raised:  # noqa: BLE001
            error = (type(raised), str(raised))
    return [(w.category, str(w.message)) for w in caught], error


@pytest.mark.parametrize(
    "call, fails",
    [
        (lambda m, x, y: attacks.fgsm(m, x, y, 0.1), True),
        # Its input gradient is NaN in 4 rows, which gives no direction.
        (lambda m, x, y: attacks.bim(m, x, y, 0.1, steps=2), True),
        (lambda m, x, y: resgrad.input_gradient(m, x, y), False),
    ],
    ids=["fgsm", "bim", "input_gradient"],
)
def test_overflow_warns_as_on_torch(call, fails, torch_kernels):
    """A call whose NumPy run overflows, and fails or not, issues the
    warnings of the torch kernels, not NumPy's on top of them."""
    model, x, y = _overflowing_net()
    got = _warnings_and_error(call, model, x, y)
    want = torch_kernels(_warnings_and_error, call, model, x, y)
    assert got == want
    assert (got[1] is not None) == fails


def test_autocast_keeps_torch_error(routed):
    model, x, y = _net(torch.float32)
    with torch.autocast("cpu"), pytest.raises(RuntimeError, match="autocast"):
        resgrad.gradients(model, x, y)
    assert routed == []


def test_vmap_keeps_torch_error(routed):
    model, x, y = _net()
    with pytest.raises(TypeError, match="vmap"):
        torch.func.vmap(lambda row: resgrad.input_gradient(model, row[None], y[:1]))(x)
    assert routed == []


@pytest.mark.parametrize("transform", ["grad", "jacrev"])
def test_model_converted_inside_transform(transform, torch_kernels):
    # The weights made inside the transform have no memory to view, so the
    # call keeps the torch kernels, whose result the transform can trace.
    model, x, y = _net()
    numpy_model = model.convert(np)
    if transform == "grad":
        transformed = torch.func.grad(
            lambda v: resgrad.gradients(numpy_model.convert(like=v), v, y).loss
        )
    else:
        transformed = torch.func.jacrev(
            lambda v: resgrad.input_jacobian(numpy_model.convert(like=v), v)
        )
    got = transformed(x)
    want = torch_kernels(transformed, x)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)


def test_read_only_and_reversed_results():
    values = np.arange(6.0).reshape(2, 3)
    read_only = values.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors = _numpy_route._to_torch(torch, [read_only, values[::-1]], {})
    np.testing.assert_array_equal(tensors[0].numpy(), values)
    np.testing.assert_array_equal(tensors[1].numpy(), values[::-1])
    assert isinstance(_numpy_route._to_torch(torch, np.float32(2), {}), torch.Tensor)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fit_on_tensors_steps_as_on_numpy(optimizer, dtype):
    """With the gradients and the optimizer's updates on NumPy, fit on CPU
    tensors takes bit for bit the steps of fit on NumPy arrays."""
    model, x, y = _net(dtype)
    options = {"epochs": 3, "batch_size": 4, "progress": False, "optimizer": optimizer}
    previous = use_numpy_on_cpu("always")
    try:
        on_tensors = resgrad.fit(model, x, y, **options)
    finally:
        use_numpy_on_cpu(previous)
    on_numpy = resgrad.fit(model.convert(np), x.numpy(), y.numpy(), **options)
    assert on_tensors.history[-1]["train_loss"] == on_numpy.history[-1]["train_loss"]
    for key, value in on_numpy.model.arrays().items():
        got = on_tensors.model.arrays()[key]
        assert isinstance(got, torch.Tensor)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), value)


def _record_update(monkeypatch, optimizer_type):
    """Make ``optimizer_type.update`` record the type of each call's weights."""
    seen = []
    original = optimizer_type.update

    def spy(self, grads, state, params):
        seen.append({type(value) for value in params.values()})
        return original(self, grads, state, params)

    monkeypatch.setattr(optimizer_type, "update", spy)
    return seen


def test_fit_updates_on_numpy_views(monkeypatch, torch_kernels):
    seen = _record_update(monkeypatch, resgrad.training.Adam)
    model, x, y = _net()
    options = {"epochs": 1, "batch_size": 4, "validation": None, "progress": False}
    result = resgrad.fit(model, x, y, **options)
    assert seen == [{np.ndarray}] * 2
    assert all(isinstance(v, torch.Tensor) for v in result.model.arrays().values())
    seen.clear()
    torch_kernels(resgrad.fit, model, x, y, **options)
    assert seen == [{torch.Tensor}] * 2


class _OwnAdam(resgrad.training.Adam):
    """A caller's optimizer, which may write into its inputs."""


def test_callers_optimizer_gets_tensors(monkeypatch):
    seen = _record_update(monkeypatch, _OwnAdam)
    model, x, y = _net()
    resgrad.fit(
        model, x, y, optimizer=_OwnAdam(), epochs=1, batch_size=4, progress=False
    )
    assert seen and all(kinds == {torch.Tensor} for kinds in seen)


class _FailsOnNumpy:
    """An optimizer that refuses NumPy arrays, as a caller's might."""

    def update(self, grads, state, params):
        if any(isinstance(value, np.ndarray) for value in params.values()):
            raise TypeError("NumPy arrays")
        return {name: w - grads[name] for name, w in params.items()}, state


@pytest.mark.parametrize(
    "weight",
    [torch.ones(2), torch.ones(2, dtype=torch.float16)],
    ids=["float32 falls back", "float16 stays"],
)
def test_update_falls_back_to_torch(weight):
    params = {"w": weight}
    grads = {"w": torch.full_like(weight, 0.5)}
    new_params, state = _numpy_route.update(_FailsOnNumpy(), grads, {}, params)
    assert type(new_params["w"]) is torch.Tensor
    assert state == {}
    torch.testing.assert_close(new_params["w"], torch.full_like(weight, 0.5))


def test_update_keeps_zero_dim_tensors():
    """NumPy's arithmetic on a 0-d array gives a scalar, which comes back as
    a 0-d tensor."""
    weight = torch.tensor(1.0)
    opt = resgrad.training.SGD(lr=0.5)
    state = opt.init({"w": weight})
    new_params, _ = _numpy_route.update(
        opt, {"w": torch.tensor(2.0)}, state, {"w": weight}
    )
    assert type(new_params["w"]) is torch.Tensor
    assert new_params["w"].item() == 0.0


def _record_fit_views(monkeypatch):
    """Make ``fit_views`` record whether each call took the route."""
    took = []
    original = _numpy_route.fit_views

    def spy(*args):
        result = original(*args)
        took.append(result is not None)
        return result

    monkeypatch.setattr(_numpy_route, "fit_views", spy)
    return took


def test_fit_matches_torch_kernels(routed, torch_kernels, monkeypatch):
    took = _record_fit_views(monkeypatch)
    model, x, y = _net()
    options = {"epochs": 3, "batch_size": 4, "seed": 0, "progress": False}
    routed_fit = resgrad.fit(model, x, y, **options)
    # The whole run took the route, so no step's call needed it.
    assert took == [True]
    assert routed == []
    torch_fit = torch_kernels(resgrad.fit, model, x, y, **options)
    assert took == [True, False]
    for key, value in torch_fit.model.arrays().items():
        got = routed_fit.model.arrays()[key]
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, value, rtol=1e-10, atol=1e-12)


def test_fit_keeps_tensors_where_torch_blas_is_faster(routed, monkeypatch):
    """Where the size rule keeps single calls on the torch kernels, the run
    keeps its tensors, and only the updates take NumPy views."""
    took = _record_fit_views(monkeypatch)
    monkeypatch.setattr(_numpy_route, "torch_kernels_faster", lambda *args: True)
    seen = _record_update(monkeypatch, resgrad.training.Adam)
    model, x, y = _net()
    options = {"epochs": 1, "batch_size": 4, "validation": None, "progress": False}
    result = resgrad.fit(model, x, y, **options)
    assert took == [False]
    assert routed == []
    assert seen == [{np.ndarray}] * 2
    assert all(isinstance(v, torch.Tensor) for v in result.model.arrays().values())


@pytest.mark.parametrize("validation", [0.3, "pair"])
def test_routed_fit_checkpoint_resumes_on_torch_kernels(
    validation, tmp_path, torch_kernels
):
    """A checkpoint of a run on NumPy views continues on the torch kernels,
    and the result matches a run that was never interrupted."""
    model, x, y = _net()
    if validation == "pair":
        validation = (x[:3], y[:3])
    path = tmp_path / "run.ckpt"
    options = {"batch_size": 4, "validation": validation, "progress": False}
    resgrad.fit(model, x, y, epochs=2, checkpoint=path, **options)
    resumed = torch_kernels(
        resgrad.fit, model, x, y, epochs=4, checkpoint=path, resume=True, **options
    )
    whole = torch_kernels(resgrad.fit, model, x, y, epochs=4, **options)
    assert resumed.history[-1]["epoch"] == 4
    for key, value in whole.model.arrays().items():
        torch.testing.assert_close(
            resumed.model.arrays()[key], value, rtol=1e-10, atol=1e-12
        )
