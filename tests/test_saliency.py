"""Tests of resgrad.saliency and the ``resgrad saliency`` command.

The maps are checked against Captum 0.9 on the same weights as a
``torch.nn.Module``, against central finite differences in float64, and
against the properties that define them (completeness, the JSMA sign rule).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import resgrad
from resgrad import saliency
from resgrad.torch import to_module

N, WIDTH, CLASSES = 6, 7, 4


def make_model(activation="tanh", dtype="float64", xp=None, seed=1, **kwargs):
    """Return a 3-block network with non-zero biases, so no map is trivial."""
    model = resgrad.ResidualMLP.init(
        [WIDTH, 9, 8, CLASSES], [6, 10, 5], activation=activation, seed=seed, **kwargs
    )
    rng = np.random.default_rng(seed + 100)
    biases = {
        key: 0.3 * rng.standard_normal(value.shape)
        for key, value in model.arrays().items()
        if key.endswith(("b1", "b2"))
    }
    return model.replace_arrays(biases).convert(xp, dtype=dtype)


def make_batch(dtype=np.float64, seed=0):
    return np.random.default_rng(seed).random((N, WIDTH)).astype(dtype)


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def x():
    return make_batch()


@pytest.fixture
def torch_model():
    return make_model("relu", dtype="float32", xp=torch)


@pytest.fixture
def torch_x():
    return torch.from_numpy(make_batch(np.float32))


TORCH_TARGET = torch.tensor([0, 1, 2, 3, 0, 2])
TOLERANCE = 1e-6


def max_difference(a, b) -> float:
    difference = torch.as_tensor(a).detach() - torch.as_tensor(b).detach()
    return float(difference.abs().max())


# Cross-checks against Captum 0.9 in float32.


@pytest.fixture
def captum():
    attr = pytest.importorskip("captum.attr")
    warnings.filterwarnings("ignore", module="captum")
    return attr


def test_vanilla_matches_captum_saliency(captum, torch_model, torch_x):
    net = to_module(torch_model)
    expected = captum.Saliency(net).attribute(torch_x, target=TORCH_TARGET, abs=False)
    got = saliency.vanilla_gradient(torch_model, torch_x, TORCH_TARGET)
    assert max_difference(got, expected) < TOLERANCE


def test_absolute_matches_captum_default(captum, torch_model, torch_x):
    net = to_module(torch_model)
    expected = captum.Saliency(net).attribute(torch_x, target=TORCH_TARGET)
    got = saliency.vanilla_gradient(torch_model, torch_x, TORCH_TARGET, absolute=True)
    assert max_difference(got, expected) < TOLERANCE


def test_input_x_gradient_matches_captum(captum, torch_model, torch_x):
    net = to_module(torch_model)
    expected = captum.InputXGradient(net).attribute(torch_x, target=TORCH_TARGET)
    got = saliency.input_x_gradient(torch_model, torch_x, TORCH_TARGET)
    assert max_difference(got, expected) < TOLERANCE


@pytest.mark.parametrize("rule", saliency.IG_RULES)
def test_integrated_gradients_match_captum(captum, torch_model, torch_x, rule):
    net = to_module(torch_model)
    baseline = 0.1 * torch.from_numpy(make_batch(np.float32, seed=5))
    expected = captum.IntegratedGradients(net).attribute(
        torch_x, baselines=baseline, target=TORCH_TARGET, n_steps=20, method=rule
    )
    got = saliency.integrated_gradients(
        torch_model, torch_x, TORCH_TARGET, baseline=baseline, steps=20, rule=rule
    )
    assert max_difference(got.attributions, expected) < TOLERANCE


@pytest.mark.parametrize("rule", saliency.IG_RULES)
def test_integrated_gradients_float64_autograd_sum(model, x, rule):
    # Captum rounds the weights w_k to float32, so float64 is checked
    # against a sum of autograd gradients with float64 weights.
    net = to_module(model)
    baseline = 0.1 * make_batch(seed=5)
    positions, weights = saliency.quadrature(rule, 20)
    total = np.zeros_like(x)
    for alpha, weight in zip(positions, weights):
        point = torch.from_numpy(baseline + alpha * (x - baseline)).requires_grad_()
        net(point)[:, 2].sum().backward()
        total += weight * point.grad.numpy()
    got = saliency.integrated_gradients(
        model, x, 2, baseline=baseline, steps=20, rule=rule
    )
    np.testing.assert_allclose(
        got.attributions, (x - baseline) * total, rtol=1e-12, atol=1e-15
    )


def test_integrated_gradients_gap_matches_captum_delta(captum, torch_model, torch_x):
    net = to_module(torch_model)
    _, delta = captum.IntegratedGradients(net).attribute(
        torch_x, target=TORCH_TARGET, n_steps=20, return_convergence_delta=True
    )
    got = saliency.integrated_gradients(torch_model, torch_x, TORCH_TARGET, steps=20)
    assert max_difference(got.gap, delta) < 1e-5


def captum_noise(seed: int, sigma: float, samples: int, shape) -> torch.Tensor:
    """Redraw the noise of Captum's NoiseTunnel for one input tensor.

    NoiseTunnel repeats each row ``samples`` times (``repeat_interleave``)
    and adds ``torch.normal(0, sigma)`` of that expanded shape, so row
    ``i * samples + s`` is copy ``s`` of sample ``i``.
    """
    n, d = shape
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.tensor(sigma).repeat((n * samples, d)))
    return noise.reshape(n, samples, d).permute(1, 0, 2)


@pytest.mark.parametrize("squared", [False, True])
def test_smoothgrad_matches_captum_noise_tunnel(captum, torch_model, torch_x, squared):
    net = to_module(torch_model)
    sigma, samples = 0.15, 8
    torch.manual_seed(3)
    expected = captum.NoiseTunnel(captum.Saliency(net)).attribute(
        torch_x,
        nt_type="smoothgrad_sq" if squared else "smoothgrad",
        nt_samples=samples,
        stdevs=sigma,
        target=TORCH_TARGET,
        abs=False,
    )
    noise = captum_noise(3, sigma, samples, torch_x.shape)
    got = saliency.smoothgrad(
        torch_model,
        torch_x,
        TORCH_TARGET,
        samples=samples,
        noise=noise,
        squared=squared,
    )
    assert max_difference(got, expected) < TOLERANCE


def test_smoothgrad_equals_mean_of_captum_saliency(captum, torch_model, torch_x):
    net = to_module(torch_model)
    noise = captum_noise(4, 0.2, 5, torch_x.shape)
    per_copy = [
        captum.Saliency(net).attribute(torch_x + eps, target=TORCH_TARGET, abs=False)
        for eps in noise
    ]
    got = saliency.smoothgrad(
        torch_model, torch_x, TORCH_TARGET, samples=5, noise=noise
    )
    assert max_difference(got, torch.stack(per_copy).mean(0)) < TOLERANCE
    # Without samples, the count is the length of noise.
    inferred = saliency.smoothgrad(torch_model, torch_x, TORCH_TARGET, noise=noise)
    assert torch.equal(inferred, got)


# Float64 references.


def central_differences(model, x, target, step=1e-6):
    def logits(v):
        return np.asarray(model.logits(v))

    grad = np.zeros_like(x)
    rows = np.arange(x.shape[0])
    for i in range(x.shape[1]):
        shift = np.zeros_like(x)
        shift[:, i] = step
        up, down = logits(x + shift), logits(x - shift)
        grad[:, i] = (up[rows, target] - down[rows, target]) / (2 * step)
    return grad


def test_vanilla_matches_central_differences(model, x):
    target = np.array([0, 1, 2, 3, 1, 0])
    got = saliency.vanilla_gradient(model, x, target)
    expected = central_differences(model, x, target)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)


def test_all_classes_stack_per_class_maps(model, x):
    every = saliency.vanilla_gradient(model, x, "all")
    stacked = np.stack(
        [saliency.vanilla_gradient(model, x, r) for r in range(CLASSES)], axis=1
    )
    assert every.shape == (N, CLASSES, WIDTH)
    np.testing.assert_allclose(every, stacked, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "method, options",
    [
        ("input_x_gradient", {}),
        ("smoothgrad", {"samples": 3, "seed": 7}),
        ("integrated_gradients", {"steps": 8}),
        ("jsma", {"variant": "manuscript"}),
        ("jsma", {"variant": "increase"}),
        ("jsma", {"variant": "decrease"}),
    ],
)
def test_all_classes_stack_other_methods(model, x, method, options):
    every = saliency.saliency_map(model, x, method, "all", **options)
    stacked = np.stack(
        [saliency.saliency_map(model, x, method, r, **options) for r in range(CLASSES)],
        axis=1,
    )
    np.testing.assert_allclose(every, stacked, rtol=1e-12, atol=1e-14)


def test_default_target_is_predicted_class(model, x):
    predicted = np.asarray(model.predict(x))
    np.testing.assert_array_equal(
        saliency.vanilla_gradient(model, x),
        saliency.vanilla_gradient(model, x, predicted),
    )


def test_absolute_is_abs_of_signed(model, x):
    signed = saliency.vanilla_gradient(model, x, 2)
    np.testing.assert_array_equal(
        saliency.vanilla_gradient(model, x, 2, absolute=True), np.abs(signed)
    )


@pytest.mark.parametrize(
    "method, options",
    [
        ("vanilla", {"absolute": "no"}),
        ("input_x_gradient", {"absolute": "no"}),
        ("smoothgrad", {"absolute": "no"}),
        ("smoothgrad", {"squared": "no"}),
        ("integrated_gradients", {"absolute": "no"}),
    ],
)
def test_flag_of_text_raises(model, x, method, options):
    (name,) = options
    with pytest.raises(TypeError, match=f"Expected {name} to be True or False"):
        saliency.saliency_map(model, x, method, 1, **options)


def test_input_x_gradient_is_product(model, x):
    expected = x * saliency.vanilla_gradient(model, x, 1)
    np.testing.assert_array_equal(saliency.input_x_gradient(model, x, 1), expected)


def test_input_x_gradient_sums_to_score_without_biases(x):
    # A relu network without biases is positively homogeneous.
    model = make_model("relu", bias=False)
    total = saliency.input_x_gradient(model, x, "all").sum(axis=2)
    np.testing.assert_allclose(total, model.logits(x), rtol=1e-12, atol=1e-13)


def test_smoothgrad_seed_reproduces_and_noise_matters(model, x):
    first = saliency.smoothgrad(model, x, 0, samples=4, seed=11)
    again = saliency.smoothgrad(model, x, 0, samples=4, seed=11)
    other = saliency.smoothgrad(model, x, 0, samples=4, seed=12)
    np.testing.assert_array_equal(first, again)
    assert np.max(np.abs(first - other)) > 1e-6


def test_smoothgrad_without_noise_is_vanilla(model, x):
    got = saliency.smoothgrad(model, x, 3, samples=2, noise_level=0.0)
    np.testing.assert_allclose(got, saliency.vanilla_gradient(model, x, 3), rtol=1e-14)


def test_smoothgrad_noise_overflow_names_noise_level(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="overflows float64; pass a smaller"):
            saliency.smoothgrad(model, x, 0, samples=2, noise_level=1e308, seed=0)


def test_smoothgrad_forward_overflow_names_noise():
    model = resgrad.ResidualMLP.init([2, 4, 4, 3], activation="identity", seed=0)
    x = np.full((1, 2), 0.5)
    noise = np.full((2, *x.shape), np.finfo(np.float64).max / 2)
    with pytest.raises(resgrad.ForwardOverflowError, match="noisy copy 0 overflowed"):
        saliency.smoothgrad(model, x, 0, noise=noise)


@pytest.mark.parametrize("cause", ["input", "weight"])
def test_smoothgrad_overflow_without_noise_does_not_blame_it(cause):
    model = resgrad.ResidualMLP.init([2, 4, 4, 3], activation="identity", seed=0)
    x = np.full((1, 2), 0.5)
    if cause == "input":
        x = np.full((1, 2), np.finfo(np.float64).max / 2)
    else:
        model.blocks[1].W2[0, 0] = np.nan
    with pytest.raises(resgrad.ForwardOverflowError) as caught:
        saliency.smoothgrad(model, x, 0, samples=2, noise_level=0.0, seed=0)
    assert "noise" not in str(caught.value)


def scaled_model(scale: float, xp=np):
    """One identity block with every array times ``scale``: with inputs of
    1e-280 its logits stay finite while its derivatives grow as scale**2."""
    model = resgrad.ResidualMLP.init([4, 3], activation="identity", seed=0)
    model = model.replace_arrays({k: v * scale for k, v in model.arrays().items()})
    return model if xp is np else model.convert(xp=xp)


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
@pytest.mark.parametrize("method", sorted(saliency.METHODS))
def test_map_names_derivatives_beyond_range(method, xp):
    model = scaled_model(1e160, xp)
    x = xp.asarray(np.full((2, 4), 1e-280))
    assert bool(xp.all(xp.isfinite(model.logits(x))))
    # Noise would overflow the forward pass first.
    options = {"noise_level": 0.0} if method == "smoothgrad" else {}
    # NumPy warns of the overflow inside the Jacobian products.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="The derivatives of the logits are bey"):
            saliency.saliency_map(model, x, method, "all", **options)


@pytest.mark.parametrize("variant", sorted(saliency.JSMA_VARIANTS))
def test_jsma_map_names_products_beyond_range(variant):
    # Derivatives near 1e200 are finite, and their products are not.
    model = scaled_model(1e100)
    x = np.full((2, 4), 1e-250)
    assert np.isfinite(saliency.vanilla_gradient(model, x, "all")).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"jsma map are beyond the range of fl"):
            saliency.jsma_map(model, x, "all", variant=variant)


def test_smoothgrad_names_squares_beyond_range():
    # float32 derivatives near 1e20 are finite; their squares are not.
    model = scaled_model(1e10).convert(dtype="float32")
    x = np.full((2, 4), 1e-30, dtype=np.float32)
    assert np.isfinite(saliency.vanilla_gradient(model, x, 0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="smoothgrad map are beyond the range"):
            saliency.smoothgrad(model, x, 0, squared=True, noise_level=0.0)


def cancelling_model():
    """One identity block whose logit 0 is 1e300 (x_0 - x_1): at x_0 = x_1 =
    1e9 it is 0, while x_i dB_0/dx_i is +-1e309."""
    block = resgrad.Block(
        W1=np.array([[1e150, -1e150]]),
        W2=np.array([[1e150], [0.0], [0.0]]),
        W3=np.zeros((3, 2)),
        shortcut="learned",
    )
    return resgrad.ResidualMLP([block], activation="identity")


@pytest.mark.parametrize(
    "method, name",
    [
        ("input_x_gradient", "values of the input_x_gradient map"),
        ("integrated_gradients", "integrated_gradients attributions"),
    ],
)
def test_products_with_x_beyond_range(method, name):
    model = cancelling_model()
    x = np.full((1, 2), 1e9)
    assert np.isfinite(saliency.vanilla_gradient(model, x, 0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"{name} are beyond the range"):
            saliency.saliency_map(model, x, method, 0)


def test_cli_reports_only_the_methods_asked(digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "out"
    argv = ["--model", str(path), "--out", str(out), "--method", "vanilla"]
    assert run_cli([*argv, "--check-samples", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "completeness gap" not in printed
    # Vanilla maps alone need no note on maps that multiply by the input.
    assert "multiply the gradient by x" not in printed
    report = json.loads((out / "saliency.json").read_text())
    assert "integrated_gradients_gap" not in report
    assert report["options"] == {}


def test_cli_warns_of_wide_noise(digits_model, tmp_path, capsys):
    path, _ = digits_model
    argv = ["--model", str(path), "--method", "smoothgrad", "--samples", "2"]
    argv += ["--check-samples", "2", "--no-progress"]
    assert run_cli([*argv, "--noise-level", "1e300", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "--noise-level 1e+300 draws noise of a standard deviation wider" in err
    report = json.loads((tmp_path / "a" / "saliency.json").read_text())
    assert any("--noise-level 1e+300" in line for line in report["warnings"])
    assert run_cli([*argv, "--noise-level", "1", "--out", str(tmp_path / "b")]) == 0
    assert "--noise-level" not in capsys.readouterr().err


def test_cli_names_jsma_map_beyond_range(digits_model, tmp_path, capsys):
    path, _ = digits_model
    model = resgrad.load(path)
    arrays = model.arrays()
    arrays["blocks.1.W2"] = arrays["blocks.1.W2"] * 1e300
    resgrad.save(model.replace_arrays(arrays), tmp_path / "large.npz")
    argv = ["--model", str(tmp_path / "large.npz"), "--out", str(tmp_path / "out")]
    assert run_cli([*argv, "--method", "jsma", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "The values of the jsma map are beyond the range of float64" in err
    assert not (tmp_path / "out").exists()


def test_smoothgrad_noise_scales_with_range(model, x):
    sigma, samples = 0.1 * (3.0 - 1.0), 4
    draws = np.random.default_rng(5).standard_normal((samples,) + x.shape) * sigma
    expected = np.mean(
        [saliency.vanilla_gradient(model, x + eps, 0) for eps in draws], axis=0
    )
    got = saliency.smoothgrad(
        model, x, 0, samples=samples, noise_level=0.1, bounds=(1.0, 3.0), seed=5
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_smoothgrad_noise_shape_names_samples(model, x):
    message = r"Expected noise of shape \(samples, n, p_0\) = \(50, "
    with pytest.raises(ValueError, match=message):
        saliency.smoothgrad(model, x, 0, noise=np.zeros(x.shape))


def test_gauss_legendre_steps_capped():
    with pytest.raises(ValueError, match="steps=4097 .* is too many for rule"):
        saliency.quadrature("gausslegendre", saliency.GAUSS_MAX_STEPS + 1)
    alphas, weights = saliency.quadrature("gausslegendre", 3)
    assert alphas.shape == weights.shape == (3,)


def test_smoothgrad_memory_does_not_grow_with_samples():
    """The noise is drawn one copy at a time: 400 copies of a (50, 64) batch
    would take 9.8 MiB in one draw."""
    import tracemalloc

    model = resgrad.ResidualMLP.init([64, 16, 3], seed=0)
    x = np.random.default_rng(0).random((50, 64))
    tracemalloc.start()
    try:
        saliency.smoothgrad(model, x, 0, samples=400, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, peak


# Integrated Gradients completeness.


def test_completeness_gauss_legendre_float64(model, x):
    result = saliency.integrated_gradients(model, x, "all", steps=64)
    assert np.max(result.relative_gap) < 1e-8


def test_gap_is_sum_minus_score_difference(model, x):
    baseline = 0.5 * make_batch(seed=9)
    result = saliency.integrated_gradients(model, x, 1, baseline=baseline, steps=5)
    difference = (
        np.asarray(model.logits(x))[:, 1] - np.asarray(model.logits(baseline))[:, 1]
    )
    np.testing.assert_allclose(result.score_difference, difference, rtol=1e-14)
    np.testing.assert_allclose(
        result.gap, result.attributions.sum(axis=1) - difference, rtol=1e-12, atol=1e-15
    )


def test_riemann_rules_converge_slower_than_gauss_legendre(model, x):
    gauss = saliency.integrated_gradients(model, x, 0, steps=16)
    left = saliency.integrated_gradients(model, x, 0, steps=16, rule="riemann_left")
    assert np.max(gauss.relative_gap) < 1e-6
    assert np.max(left.relative_gap) > 1e-3


def test_quadrature_weights_follow_captum():
    alphas, weights = saliency.quadrature("riemann_trapezoid", 4)
    np.testing.assert_allclose(alphas, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(weights, [1 / 8, 1 / 4, 1 / 4, 1 / 8])
    alphas, weights = saliency.quadrature("gausslegendre", 5)
    assert abs(weights.sum() - 1.0) < 1e-15
    assert alphas.min() > 0
    assert alphas.max() < 1


def test_baseline_row_broadcasts(model, x):
    row = np.full(WIDTH, 0.2)
    from_row = saliency.integrated_gradients(model, x, 0, baseline=row, steps=4)
    from_batch = saliency.integrated_gradients(
        model, x, 0, baseline=np.tile(row, (N, 1)), steps=4
    )
    np.testing.assert_array_equal(from_row.attributions, from_batch.attributions)


@pytest.mark.parametrize(
    "baseline", [np.float64(0.2), np.array(0.2), torch.tensor(0.2, dtype=torch.float64)]
)
def test_scalar_baseline_is_a_number(model, x, baseline):
    # NumPy scalars and 0-d arrays are numbers, as eps is for the attacks.
    expected = saliency.integrated_gradients(model, x, 0, baseline=0.2, steps=4)
    actual = saliency.integrated_gradients(model, x, 0, baseline=baseline, steps=4)
    np.testing.assert_array_equal(actual.attributions, expected.attributions)


@pytest.mark.parametrize("function", ["integrated_gradients", "deletion_curve"])
def test_float64_baseline_beyond_float32_names_baseline(model, x, function):
    model32, x32 = model.convert(dtype=np.float32), x.astype(np.float32)
    third = 0 if function == "integrated_gradients" else x32
    baseline = np.full(WIDTH, 1e39)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="baseline has values beyond 3.403e"):
            getattr(saliency, function)(model32, x32, third, baseline=baseline)


def test_float64_noise_beyond_float32_names_noise(model, x):
    model32, x32 = model.convert(dtype=np.float32), x.astype(np.float32)
    noise = np.zeros((2,) + x.shape)
    noise[1, 0, 0] = -1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="noise has values beyond 3.403e"):
            saliency.smoothgrad(model32, x32, 0, noise=noise, samples=None)


@pytest.mark.parametrize("baseline", [np.complex128(1), np.array(True), True])
def test_baseline_rejects_other_scalars(model, x, baseline):
    with pytest.raises(TypeError, match="Expected baseline as a real number"):
        saliency.integrated_gradients(model, x, 0, baseline=baseline, steps=4)


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        (8.0, TypeError, "Expected steps to be an integer, got 8.0; pass a whole"),
        (0, ValueError, "Expected steps >= 1, got 0; pass a whole number of at"),
    ],
)
def test_steps_errors_name_the_value(model, x, steps, error, message):
    with pytest.raises(error, match=message):
        saliency.integrated_gradients(model, x, 0, steps=steps)


def test_steps_take_0d_integer_tensors(model, x):
    expected = saliency.integrated_gradients(model, x, 0, steps=4)
    actual = saliency.integrated_gradients(model, x, 0, steps=torch.tensor(4))
    np.testing.assert_array_equal(actual.attributions, expected.attributions)


def test_noise_level_must_be_a_number(model, x):
    with pytest.raises(TypeError, match="Expected noise_level to be a real number"):
        saliency.smoothgrad(model, x, 0, noise_level="a")


# JSMA maps.


def jsma_parts(model, x, o):
    J = np.asarray(resgrad.input_jacobian(model, x))
    rows = np.arange(x.shape[0])
    t = J[rows, o]
    others = np.stack([np.delete(J[i], o[i], axis=0).sum(axis=0) for i in rows])
    return t, others


def test_manuscript_jsma_sign_rule(model, x):
    o = np.array([0, 1, 2, 3, 0, 1])
    t, others = jsma_parts(model, x, o)
    product = t * others
    got = saliency.jsma_map(model, x, o)
    assert np.any(product < 0)
    assert np.any(product >= 0)
    assert np.all(got[product >= 0] == 0)
    np.testing.assert_allclose(got[product < 0], product[product < 0], rtol=1e-12)
    assert np.all(got[product < 0] < 0)


def test_papernot_increasing_map(model, x):
    o = np.array([2, 2, 1, 0, 3, 3])
    t, others = jsma_parts(model, x, o)
    got = saliency.jsma_map(model, x, o, variant="increase")
    zero = (t < 0) | (others > 0)
    assert np.any(zero)
    assert np.any(~zero)
    assert np.all(got[zero] == 0)
    np.testing.assert_allclose(got[~zero], (t * np.abs(others))[~zero], rtol=1e-12)


def test_papernot_decreasing_map(model, x):
    o = np.array([2, 2, 1, 0, 3, 3])
    t, others = jsma_parts(model, x, o)
    got = saliency.jsma_map(model, x, o, variant="decrease")
    zero = (t > 0) | (others < 0)
    assert np.any(zero)
    assert np.any(~zero)
    assert np.all(got[zero] == 0)
    np.testing.assert_allclose(got[~zero], (np.abs(t) * others)[~zero], rtol=1e-12)


# Bad input.


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, x: saliency.vanilla_gradient(m, x, CLASSES), ValueError, "outside"),
        (lambda m, x: saliency.vanilla_gradient(m, x, -1), ValueError, "outside"),
        (lambda m, x: saliency.vanilla_gradient(m, x, True), TypeError, "bool"),
        (lambda m, x: saliency.vanilla_gradient(m, x, "every"), ValueError, "'all'"),
        (
            lambda m, x: saliency.vanilla_gradient(m, x, np.array([0, 1])),
            ValueError,
            "shape",
        ),
        (
            lambda m, x: saliency.integrated_gradients(m, x, steps=0),
            ValueError,
            "steps >= 1",
        ),
        (
            lambda m, x: saliency.integrated_gradients(
                m, x, steps=1, rule="riemann_trapezoid"
            ),
            ValueError,
            "steps >= 2",
        ),
        (
            lambda m, x: saliency.integrated_gradients(m, x, rule="simpson"),
            ValueError,
            "Unknown rule",
        ),
        (
            lambda m, x: saliency.integrated_gradients(m, x, baseline=np.zeros((2, 3))),
            ValueError,
            "baseline of shape",
        ),
        (
            lambda m, x: saliency.integrated_gradients(m, x, baseline=float("nan")),
            ValueError,
            "finite baseline .* got nan",
        ),
        (
            lambda m, x: saliency.integrated_gradients(m, x, baseline=-(10**400)),
            ValueError,
            "finite baseline",
        ),
        (lambda m, x: saliency.smoothgrad(m, x, samples=0), ValueError, "samples >= 1"),
        (
            lambda m, x: saliency.smoothgrad(m, x, noise_level=-0.1),
            ValueError,
            "noise_level >= 0",
        ),
        (
            lambda m, x: saliency.smoothgrad(
                m, x, samples=2, noise=np.zeros((3, N, 2))
            ),
            ValueError,
            "noise of shape",
        ),
        (
            lambda m, x: saliency.smoothgrad(m, x, noise_level=float("inf")),
            ValueError,
            "finite noise_level >= 0",
        ),
        (
            lambda m, x: saliency.smoothgrad(
                m, x, noise_level=1e200, bounds=(0.0, 1e200)
            ),
            ValueError,
            "noise scale noise_level",
        ),
        (
            lambda m, x: saliency.smoothgrad(
                m, x, samples=2, noise=np.full((2, N, WIDTH), np.nan)
            ),
            ValueError,
            "noise contains",
        ),
        (
            lambda m, x: saliency.jsma_map(m, x, variant="maximal"),
            ValueError,
            "Unknown variant",
        ),
        (
            lambda m, x: saliency.saliency_map(m, x, "gradcam"),
            ValueError,
            "Unknown method",
        ),
        (
            lambda m, x: saliency.vanilla_gradient(m, x[:, :3]),
            ValueError,
            "features",
        ),
        (
            lambda m, x: saliency.deletion_curve(m, x, x[:, :3]),
            ValueError,
            "saliency of the input's shape",
        ),
        (
            lambda m, x: saliency.deletion_curve(m, x, np.full_like(x, np.nan)),
            ValueError,
            f"saliency contains {N * WIDTH} NaN",
        ),
        (
            lambda m, x: saliency.deletion_curve(m, x, x, baseline=float("inf")),
            ValueError,
            "finite baseline .* got inf",
        ),
        (
            lambda m, x: saliency.randomization_check(m, x, target="all"),
            ValueError,
            "one class per row",
        ),
    ],
)
def test_bad_input_raises(model, x, call, error, match):
    with pytest.raises(error, match=match):
        call(model, x)


def test_baseline_beyond_float32_range(x):
    model32 = make_model(dtype="float32")
    with pytest.raises(ValueError, match="magnitude at most 3.403e[+]38"):
        saliency.integrated_gradients(model32, x.astype(np.float32), baseline=1e300)


# Namespaces, dtypes and the input.


@pytest.mark.parametrize("method", saliency.METHODS)
def test_input_not_modified_numpy(model, x, method):
    copy = x.copy()
    saliency.saliency_map(model, x, method, "all")
    np.testing.assert_array_equal(x, copy)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_torch_in_torch_out(torch_model, torch_x, method):
    copy = torch_x.clone()
    got = saliency.saliency_map(torch_model, torch_x, method, 1)
    assert isinstance(got, torch.Tensor)
    assert got.dtype == torch.float32
    assert got.shape == torch_x.shape
    assert torch.equal(torch_x, copy)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_tracked_torch_input_gives_plain_map(torch_model, torch_x, method):
    """Every method returns a map with no autograd graph and no torch warning
    when x and the weights require a gradient, equal to the plain map."""
    tracked = torch_model.replace_arrays(
        {k: v.clone().requires_grad_(True) for k, v in torch_model.arrays().items()}
    )
    x = torch_x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = saliency.saliency_map(tracked, x, method, TORCH_TARGET)
    expected = saliency.saliency_map(torch_model, torch_x, method, TORCH_TARGET)
    assert not got.requires_grad
    assert x.grad is None
    assert torch.equal(got, expected)


def test_tracked_deletion_curve_is_plain(torch_model, torch_x):
    x = torch_x.clone().requires_grad_(True)
    saliency_values = torch.rand(torch_x.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = saliency.deletion_curve(torch_model, x, saliency_values, TORCH_TARGET)
    assert not torch.as_tensor(curve.scores).requires_grad


MIXED_TARGET_CALLS = {
    "vanilla_gradient": lambda m, x, t: saliency.vanilla_gradient(m, x, t),
    "input_x_gradient": lambda m, x, t: saliency.input_x_gradient(m, x, t),
    "smoothgrad": lambda m, x, t: saliency.smoothgrad(m, x, t, samples=2, seed=0),
    "integrated_gradients": lambda m, x, t: saliency.integrated_gradients(m, x, t),
    "jsma_map": lambda m, x, t: saliency.jsma_map(m, x, t),
    "saliency_map": lambda m, x, t: saliency.saliency_map(m, x, "vanilla", t),
    "randomization_check": lambda m, x, t: saliency.randomization_check(
        m, x, "vanilla", t
    ),
    "deletion_curve": lambda m, x, t: saliency.deletion_curve(m, x, x, t),
}


@pytest.mark.parametrize("name", MIXED_TARGET_CALLS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_mixed_namespace_target_raises(model, x, torch_model, torch_x, name, backend):
    """Every function that takes a target rejects a target array of another
    namespace than x, with the message of the attacks."""
    if backend == "torch":
        model, x, target = torch_model, torch_x, TORCH_TARGET.numpy()
        message = "torch, got target as a numpy.ndarray"
    else:
        target = TORCH_TARGET
        message = "numpy, got target as a torch.Tensor"
    with pytest.raises(TypeError, match=f"model's namespace, {message}; convert it"):
        MIXED_TARGET_CALLS[name](model, x, target)


def test_target_list_and_scalar_accepted(torch_model, torch_x):
    """A list of classes, or one class as a 0-d array of any namespace, is
    still a valid target."""
    expected = saliency.vanilla_gradient(torch_model, torch_x, TORCH_TARGET)
    from_list = saliency.vanilla_gradient(torch_model, torch_x, TORCH_TARGET.tolist())
    assert torch.equal(from_list, expected)
    from_tensor = saliency.vanilla_gradient(torch_model, torch_x, torch.tensor(2))
    from_numpy = saliency.vanilla_gradient(torch_model, torch_x, np.int64(2))
    assert torch.equal(from_tensor, from_numpy)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_numpy_float32_stays_float32(x, method):
    model32 = make_model(dtype="float32")
    x32 = x.astype(np.float32)
    got = saliency.saliency_map(model32, x32, method, "all")
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    assert got.shape == (N, CLASSES, WIDTH)


def test_relative_gap_of_equal_scores(model, x):
    """A baseline equal to x gives a zero gap and a zero score difference,
    whose relative gap is 0, with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = saliency.integrated_gradients(model, x, 0, baseline=x, steps=4)
        relative = result.relative_gap
    np.testing.assert_array_equal(relative, np.zeros(N))
    forced = saliency.IntegratedGradients(
        result.attributions, result.gap + 1.0, result.score_difference
    )
    assert np.all(np.isinf(forced.relative_gap))


def test_integrated_gradients_gap_keeps_dtype(x):
    model32 = make_model(dtype="float32")
    result = saliency.integrated_gradients(model32, x.astype(np.float32), 0, steps=4)
    assert result.gap.dtype == np.float32
    assert result.score_difference.dtype == np.float32


def test_torch_matches_numpy_float64(model, x):
    torch_model = model.convert(torch)
    got = saliency.integrated_gradients(torch_model, torch.from_numpy(x), 2, steps=6)
    expected = saliency.integrated_gradients(model, x, 2, steps=6)
    assert isinstance(got.gap, torch.Tensor)
    np.testing.assert_allclose(
        got.attributions.numpy(), expected.attributions, rtol=1e-12
    )


@pytest.mark.parametrize("method", saliency.METHODS)
def test_array_api_strict_matches_numpy(model, x, method):
    xps = pytest.importorskip("array_api_strict")
    strict_model = model.convert(xps)
    got = saliency.saliency_map(strict_model, xps.asarray(x), method, "all")
    expected = saliency.saliency_map(model, x, method, "all")
    assert type(got).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.from_dlpack(got), expected, rtol=1e-12, atol=1e-15)


def test_array_api_strict_checks(model, x):
    xps = pytest.importorskip("array_api_strict")
    strict_model, strict_x = model.convert(xps), xps.asarray(x)
    attribution = saliency.input_x_gradient(strict_model, strict_x)
    curve = saliency.deletion_curve(strict_model, strict_x, attribution)
    expected = saliency.deletion_curve(model, x, saliency.input_x_gradient(model, x))
    np.testing.assert_allclose(curve.scores, expected.scores, rtol=1e-12)
    check = saliency.randomization_check(strict_model, strict_x)
    np.testing.assert_allclose(
        check.spearman, saliency.randomization_check(model, x).spearman
    )


# Rank correlation and the randomisation check.


def test_rank_correlation_known_values():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    got = saliency.rank_correlation(a, b)
    # 1 - 6 sum(d^2) / (n (n^2 - 1)) with d = (0, 1, 1, 0) gives 0.8.
    np.testing.assert_allclose(got[:2], [0.8, -1.0])
    assert np.isnan(got[2])


def test_rank_correlation_averages_ties():
    a = np.array([[0.0, 0.0, 1.0, 2.0]])
    b = np.array([[5.0, 6.0, 7.0, 8.0]])
    # Ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4): Pearson of the ranks.
    ra, rb = np.array([1.5, 1.5, 3, 4]), np.array([1.0, 2, 3, 4])
    expected = np.corrcoef(ra, rb)[0, 1]
    np.testing.assert_allclose(saliency.rank_correlation(a, b), [expected])


def test_rank_correlation_invariant_to_monotone_maps():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 20))
    np.testing.assert_allclose(saliency.rank_correlation(a, np.exp(a)), 1.0)


def test_randomize_blocks_cascades_from_top(model):
    steps = saliency.randomize_blocks(model, model.depth, seed=3)
    original = model.arrays()
    for k, randomized in enumerate(steps, start=1):
        arrays = randomized.arrays()
        for index in range(model.depth):
            same = np.array_equal(
                arrays[f"blocks.{index}.W1"], original[f"blocks.{index}.W1"]
            )
            assert same == (index < model.depth - k)
    top = "blocks.2.W1"
    np.testing.assert_array_equal(steps[0].arrays()[top], steps[2].arrays()[top])
    np.testing.assert_array_equal(steps[0].arrays()["blocks.2.b2"], 0.0)


@pytest.mark.parametrize("seed", [0, 7])
def test_randomize_blocks_avoids_init_weights(seed):
    """A one-block model made by init(seed=s) and re-initialised with seed s
    must get other weights: the check would otherwise compare the trained
    model with its own starting point."""
    model = resgrad.ResidualMLP.init([6, 3], seed=seed)
    assert model.depth == 1
    randomized = saliency.randomize_blocks(model, 1, seed)[0].arrays()
    for name, value in model.arrays().items():
        if name.endswith(("W1", "W2", "W3")):
            assert not np.allclose(randomized[name], value), name


def test_randomization_check_correlations(model, x):
    result = saliency.randomization_check(model, x, "vanilla", 0, init_seed=2)
    assert result.blocks == [2, 1, 0]
    assert result.spearman.shape == (model.depth, N)
    last = np.asarray(result.randomized[-1])
    np.testing.assert_allclose(
        result.spearman[-1], saliency.rank_correlation(result.original, last)
    )
    np.testing.assert_allclose(
        result.spearman_abs[-1],
        saliency.rank_correlation(np.abs(result.original), np.abs(last)),
    )


@pytest.mark.parametrize("seed", [np.random.default_rng(5), None])
def test_randomization_smoothgrad_keeps_one_noise(model, x, seed, monkeypatch):
    # Every map gets one integer seed, so that the randomised maps differ
    # from the trained one by the weights alone, not by SmoothGrad's noise.
    seeds = []
    original = saliency.saliency_map

    def recording(*args, **options):
        seeds.append(options["seed"])
        return original(*args, **options)

    monkeypatch.setattr(saliency, "saliency_map", recording)
    options = {"samples": 3, "noise_level": 0.3}
    result = saliency.randomization_check(
        model, x, "smoothgrad", 0, init_seed=2, seed=seed, **options
    )
    assert len(seeds) == model.depth + 1
    assert all(type(value) is int for value in seeds)
    assert len(set(seeds)) == 1
    steps = saliency.randomize_blocks(model, model.depth, 2)
    expected = saliency.smoothgrad(steps[-1], x, 0, seed=seeds[0], **options)
    assert np.array_equal(result.randomized[-1], expected)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m, x, y: saliency.saliency_map(m, x, y),
            (
                "Expected method to be one of: vanilla, input_x_gradient, smoothgrad, "
                "integrated_gradients, jsma, got array(["
            ),
        ),
        (
            lambda m, x, y: saliency.saliency_map(m, x, "smoothgrad", y, sample=3),
            (
                "Unknown option(s) 'sample' for method 'smoothgrad'; it takes: absolute, "
                "bounds, noise, noise_level, progress, samples, seed, squared."
            ),
        ),
        (
            lambda m, x, y: saliency.randomization_check(m, x, y),
            "Expected method to be one of:",
        ),
        (
            lambda m, x, y: saliency.randomization_check(m, x, seed=3),
            (
                "Method 'vanilla' takes no seed; the seed of the re-initialised weights "
                "is init_seed=."
            ),
        ),
    ],
)
def test_map_by_name_names_misplaced_arguments(call, message, model, x):
    y = np.asarray(model.predict(x))
    with pytest.raises(TypeError) as caught:
        call(model, x, y)
    assert str(caught.value).startswith(message)
    if "got array" in message:
        assert str(caught.value).endswith(
            "; pass the method name before the target, or the target as target=."
        )


def test_map_by_name_passes_options(model, x):
    by_name = saliency.saliency_map(model, x, "smoothgrad", 0, samples=3, seed=1)
    direct = saliency.smoothgrad(model, x, 0, samples=3, seed=1)
    np.testing.assert_array_equal(by_name, direct)


# The deletion curve.


def test_deletion_curve_on_linear_model():
    # With identity activations and no biases the logit is J x, so removing
    # feature i (setting it to 0) lowers the score by (x * grad)_i exactly.
    model = resgrad.ResidualMLP.init(
        [WIDTH, 6, CLASSES], activation="identity", bias=False, seed=4
    )
    x = make_batch()
    target = np.asarray(model.predict(x))
    attribution = saliency.input_x_gradient(model, x)
    curve = saliency.deletion_curve(model, x, attribution, random_orders=3)

    contributions = -np.sort(-attribution, axis=1)
    start = np.asarray(model.logits(x))[np.arange(N), target]
    expected = start[:, None] - np.concatenate(
        [np.zeros((N, 1)), np.cumsum(contributions, axis=1)], axis=1
    )
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-12, atol=1e-12)
    assert np.all(curve.auc < curve.random_auc)


def test_deletion_curve_ends_and_area(model, x):
    attribution = saliency.input_x_gradient(model, x, 0)
    curve = saliency.deletion_curve(model, x, attribution, 0, baseline=0.25)
    logits_x = np.asarray(model.logits(x))[:, 0]
    logits_base = np.asarray(model.logits(np.full_like(x, 0.25)))[:, 0]
    np.testing.assert_allclose(curve.scores[:, 0], logits_x, rtol=1e-14)
    np.testing.assert_allclose(curve.scores[:, -1], logits_base, rtol=1e-14)
    np.testing.assert_allclose(curve.random_scores[:, -1], logits_base, rtol=1e-14)
    np.testing.assert_allclose(
        curve.auc, np.trapezoid(curve.scores, curve.fractions, axis=1), rtol=1e-12
    )
    assert curve.fractions.shape == (WIDTH + 1,)


def test_deletion_area_near_float32_max(model, x, monkeypatch):
    # Sums of float32 scores near its largest value overflow, but the areas
    # and the mean, which lie between the scores, do not.
    largest = float(np.finfo(np.float32).max)
    curve = np.full((x.shape[0], x.shape[1] + 1), 0.9 * largest, np.float32)
    curve[:, 0] = largest
    monkeypatch.setattr(saliency, "_deletion_scores", lambda *args: curve)
    result = saliency.deletion_curve(model, x, x, 0, random_orders=2)
    assert result.auc.dtype == np.float32
    assert np.all(np.isfinite(result.auc))
    assert np.all(np.isfinite(result.random_auc))
    assert np.array_equal(result.random_scores, curve)
    np.testing.assert_allclose(
        result.auc, np.trapezoid(curve.astype(np.float64), axis=1) / x.shape[1]
    )


def test_integer_noise_baseline_name_cast(model, x):
    noise = np.zeros((2, *x.shape), dtype=np.int64)
    with pytest.raises(TypeError, match=r"cast it with noise.astype\(np.float64\)"):
        saliency.smoothgrad(model, x, samples=None, noise=noise)
    baseline = np.zeros(x.shape[1], dtype=np.int64)
    with pytest.raises(TypeError, match=r"cast it with baseline.astype\(np.float64\)"):
        saliency.integrated_gradients(model, x, baseline=baseline)


@pytest.mark.parametrize("target", [[0.0, 1.0, 2.0, 0.0], [True, False, True, True]])
def test_float_target_list_names_ints(model, x, target):
    with pytest.raises(TypeError, match=r"pass ints, such as \[int\(c\) for c in"):
        saliency.vanilla_gradient(model, x[:4], target)


def test_randomization_names_a_bad_init_seed(model, x):
    message = r"Expected init_seed to be an int >= 0, a numpy Generator or None"
    for seed in ("a", 1.5):
        with pytest.raises(TypeError, match=message):
            saliency.randomization_check(model, x, init_seed=seed)


@pytest.mark.parametrize(
    ("bounds", "error"),
    [
        ((0, 1, 2), ValueError),
        (1.0, TypeError),
        (None, TypeError),
        (("a", "b"), ValueError),
        ((0,), ValueError),
    ],
)
def test_smoothgrad_names_bad_bounds(model, x, bounds, error):
    # The error types are those Python's unpacking raised before.
    with pytest.raises(error, match=r"Expected bounds as a pair of numbers"):
        saliency.smoothgrad(model, x, samples=2, bounds=bounds)


def test_target_names_keep_label_advice(model, x):
    with pytest.raises(TypeError, match=r"np.unique\(target, return_inverse=True\)"):
        saliency.vanilla_gradient(model, x[:2], ["cat", "dog"])


def test_deletion_probability_scores(model, x):
    attribution = saliency.vanilla_gradient(model, x)
    curve = saliency.deletion_curve(model, x, attribution, score="probability")
    assert np.all(curve.scores > 0)
    assert np.all(curve.scores < 1)


def test_deletion_probability_is_model_probability(x):
    # With an output activation the class probability is softmax(a^L), as
    # predict and the cross-entropy loss have it, not softmax(z^L).
    model = resgrad.ResidualMLP.init([WIDTH, 16, 4], seed=0, output_activation="tanh")
    attribution = saliency.vanilla_gradient(model, x)
    target = model.predict(x)
    curve = saliency.deletion_curve(model, x, attribution, target, score="probability")
    a_L = model(x)
    shifted = np.exp(a_L - a_L.max(axis=1, keepdims=True))
    probability = shifted / shifted.sum(axis=1, keepdims=True)
    expected = probability[np.arange(len(target)), target]
    np.testing.assert_allclose(curve.scores[:, 0], expected, rtol=1e-14)


# The command line and the report section.

saliency_cli = pytest.importorskip("resgrad.cli.saliency")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    pytest.importorskip("sklearn")
    from resgrad.data import load_data

    data = load_data()
    model = resgrad.ResidualMLP.init([data.n_features, 16, data.n_classes], seed=0)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    resgrad.save(model, path)
    return path, data


def run_cli(argv: list[str]) -> int:
    """Run ``resgrad saliency`` through its own parser and main's error rule."""
    from resgrad.cli import main

    return main(["saliency", *argv])


def test_cli_writes_figures_and_json(digits_model, tmp_path, capsys):
    path, data = digits_model
    out = tmp_path / "out"
    argv = ["--model", str(path), "--index", "0,3", "--out", str(out)]
    argv += ["--method", "vanilla,jsma,integrated_gradients", "--steps", "8"]
    argv += ["--check-samples", "6", "--random-orders", "2", "--no-progress"]
    assert run_cli(argv) == 0
    report = json.loads((out / "saliency.json").read_text())
    assert report["model"] == str(path)
    assert report["labels"] is None
    assert report["data"] == "digits"
    assert report["test_size"] == 0.25
    assert report["split_seed"] == 0
    assert report["seed"] == 0
    assert report["check_samples"] == 6
    assert report["random_orders"] == 2
    for name in report["files"]:
        assert (out / name).stat().st_size > 0
    assert "saliency_sample_3.png" in report["files"]
    assert [s["index"] for s in report["samples"]] == [0, 3]
    assert set(report["deletion"]) == {"vanilla", "jsma", "integrated_gradients"}
    spearman = report["randomization"]["vanilla"]["spearman_abs"]
    assert len(spearman) == 2
    gaps = report["integrated_gradients_gap"]["gap_per_class"]
    assert np.array(gaps).shape == (2, data.n_classes)

    # The terminal gets the same check numbers as the JSON file.
    printed = capsys.readouterr().out
    assert "mean area over the first 6 test samples" in printed
    jsma = report["deletion"]["jsma"]
    assert f"  jsma{'':18s}{jsma['auc']:8.3f}{jsma['random_auc']:8.3f}\n" in printed
    last = report["randomization"]["vanilla"]["spearman_abs"][-1]
    assert f"  vanilla{'':15s}{last:8.3f}\n" in printed
    gaps = report["integrated_gradients_gap"]
    gap = np.max(np.abs(gaps["relative_gap_predicted_class"]))
    absolute = np.max(np.abs(gaps["gap_predicted_class"]))
    per_class = np.asarray(gaps["gap_per_class"])
    predicted = [sample["predicted"] for sample in report["samples"]]
    assert absolute == np.max(np.abs(per_class[np.arange(2), predicted]))
    assert (
        "Integrated Gradients completeness gap of the predicted class, 2 samples "
        f"of --index (gausslegendre rule, 8 steps): largest relative {gap:.2e}, "
        f"largest absolute {absolute:.2e}"
    ) in printed
    assert "nan: no rank correlation" not in printed
    assert "Integrated Gradients multiply the gradient by x minus the" in printed
    assert printed.endswith(f"wrote {len(report['files'])} files to {out}\n")


def _run_vanilla_on(tmp_path, features, classes, *typed):
    """Run saliency with vanilla maps on random data of ``features`` and
    ``classes``, after saving a fresh model for it; return the folder."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    n = 4 * classes
    np.savez(data, X=rng.random((n, features)), y=np.arange(n) % classes)
    model = tmp_path / "model.npz"
    resgrad.save(resgrad.ResidualMLP.init([features, 8, classes], seed=0), model)
    out = tmp_path / "out"
    argv = ["--model", str(model), "--data", str(data), "--index", "0"]
    argv += ["--method", "vanilla", "--out", str(out), "--check-samples", "2"]
    assert run_cli([*argv, "--random-orders", "1", "--no-progress", *typed]) == 0
    return out


def test_cli_deletion_score_probability(tmp_path, capsys):
    out = _run_vanilla_on(tmp_path, 3, 2, "--deletion-score", "probability")
    deletion = json.loads((out / "saliency.json").read_text())["deletion"]
    assert deletion["vanilla"]["score"] == "probability"
    # Softmax probabilities lie in [0, 1], and so do areas over [0, 1].
    assert 0 <= deletion["vanilla"]["auc"] <= 1
    assert 0 <= deletion["vanilla"]["random_auc"] <= 1
    printed = capsys.readouterr().out
    assert "deletion curve of the class softmax probability, mean area" in printed


def test_cli_counts_one_step(tmp_path, capsys):
    _run_vanilla_on(tmp_path, 3, 2, "--steps", "1", "--method", "integrated_gradients")
    printed = capsys.readouterr().out
    assert "(gausslegendre rule, 1 step): largest" in printed


@pytest.mark.parametrize("typed", [[], ["--classes", "all"]])
def test_cli_many_classes_draws_first_twenty(tmp_path, capsys, typed):
    out = _run_vanilla_on(tmp_path, 6, 30, *typed)
    report = json.loads((out / "saliency.json").read_text())
    err = capsys.readouterr().err
    if typed:
        assert report["classes"] == list(range(30))
        assert "warning" not in err
    else:
        assert report["classes"] == list(range(20))
        assert "the model has 30 classes; drawing the first 20" in err


def test_cli_explains_nan_correlation_of_one_feature(tmp_path, capsys):
    _run_vanilla_on(tmp_path, 1, 2)
    printed = capsys.readouterr().out
    assert f"  vanilla{'':15s}{'nan':>8s}\n" in printed
    assert "nan: no rank correlation exists where a map is constant" in printed


def test_cli_repeats_count_once(digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "out"
    argv = ["--model", str(path), "--index", "3,0,3", "--classes", "1,4,1"]
    argv += ["--method", "vanilla,input_x_gradient,vanilla", "--out", str(out)]
    argv += ["--check-samples", "4", "--random-orders", "1"]
    assert run_cli([*argv, "--no-progress"]) == 0
    report = json.loads((out / "saliency.json").read_text())
    assert [s["index"] for s in report["samples"]] == [3, 0]
    assert report["classes"] == [1, 4]
    assert report["methods"] == ["vanilla", "input_x_gradient"]
    assert sorted(path.name for path in out.glob("saliency_sample_*.png")) == [
        "saliency_sample_0.png",
        "saliency_sample_3.png",
    ]
    printed = capsys.readouterr().out
    assert printed.count("\n  vanilla ") == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index", "100000"], "--index 100000 is outside"),
        (["--method", "gradcam"], "Unknown --method"),
        (["--classes", "10"], "--classes 10 is outside"),
        (["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (["--samples", "0"], "argument --samples: expected an integer >= 1, got 0"),
        (["--steps", "-1e3"], "argument --steps: expected an integer, got '-1e3'"),
        (
            ["--samples", "99999999999999999999"],
            "argument --samples: expected an integer from 1 to 2**63 - 1",
        ),
        (
            ["--samples", "2000000"],
            "argument --samples: expected at most 1,000,000 passes, got 2000000",
        ),
        (
            ["--steps", "100000000", "--rule", "riemann_left"],
            "argument --steps: expected at most 1,000,000 passes, got 100000000",
        ),
        (
            ["--random-orders", "1000001"],
            "argument --random-orders: expected at most 1,000,000 passes",
        ),
        (
            ["--steps", "1", "--rule", "riemann_trapezoid"],
            "--steps must be at least 2 with --rule riemann_trapezoid",
        ),
        (["--noise-level", "nan"], "--noise-level must be a finite number >= 0"),
        (["--noise-level", "inf"], "--noise-level must be a finite number >= 0"),
        (["--baseline", "BASELINE"], "Expected --baseline of shape (64,)"),
        (["--baseline", "nan"], "--baseline must be a finite number, got 'nan'"),
        (["--baseline", "abc"], "pass a number, such as 0 or 0.5, or the path"),
        (
            ["--check-samples", "0"],
            "argument --check-samples: expected an integer >= 1",
        ),
        (
            ["--random-orders", "0"],
            "argument --random-orders: expected an integer >= 1",
        ),
        (["--baseline", "NOT_NPY"], "is not a .npy array of numbers; save the row"),
        (["--baseline", "CSV"], "is not a .npy array of numbers; save the row"),
        (
            ["--method", "vanilla", "--squared"],
            (
                "--method vanilla leaves out smoothgrad, which alone reads --squared, "
                "so it would change nothing; add smoothgrad to --method, or drop it."
            ),
        ),
        (
            ["--method", "smoothgrad", "--variant", "increase"],
            "reads --variant increase, so it would change nothing",
        ),
        # The default values typed out are caught too.
        (
            ["--method", "vanilla", "--samples", "50", "--noise-level", "0.15"],
            (
                "reads --samples 50, --noise-level 0.15, so they would change "
                "nothing; add smoothgrad to --method, or drop them."
            ),
        ),
        (
            ["--method", "vanilla", "--steps", "8", "--rule", "riemann_left"],
            (
                "leaves out integrated_gradients, which alone reads --steps 8, "
                "--rule riemann_left, so they would change nothing"
            ),
        ),
        # A prefix of an option is no option.
        (["--method", "vanilla", "--sampl=50"], "did you mean --samples?"),
        (
            ["--method", "vanilla", "--variant", "manuscript", "--samples", "50"],
            (
                "leaves out smoothgrad and jsma, which alone read --samples 50, "
                "--variant manuscript, so they"
            ),
        ),
    ],
)
def test_cli_bad_input_one_line(digits_model, tmp_path, capsys, extra, message):
    path, _ = digits_model
    np.save(tmp_path / "baseline.npy", np.zeros((3, 3)))
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "row.csv").write_text("0.1,0.2,0.3\n")
    files = {"BASELINE": "baseline.npy", "NOT_NPY": "text.npy", "CSV": "row.csv"}
    extra = [str(tmp_path / files[e]) if e in files else e for e in extra]
    out = tmp_path / "out"
    argv = ["--model", str(path), "--out", str(out), "--no-progress", *extra]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err
    assert "allow_pickle" not in err
    assert not out.exists()


def test_cli_interrupted_in_checks_writes_nothing(digits_model, tmp_path, monkeypatch):
    import resgrad.cli.saliency as saliency_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(saliency_cli, "run_checks", interrupted)
    path, _ = digits_model
    out = tmp_path / "out"
    argv = ["--model", str(path), "--out", str(out), "--no-progress"]
    assert run_cli([*argv, "--method", "vanilla", "--index", "0,1"]) == 130
    assert not out.exists()


def test_cli_interrupted_while_writing(digits_model, tmp_path, monkeypatch, capsys):
    import resgrad.cli.saliency as saliency_cli

    written = []
    real_write = saliency_cli.write_figure

    def write_then_interrupt(path, figure):
        if written:
            raise KeyboardInterrupt
        real_write(path, figure)
        written.append(path)

    monkeypatch.setattr(saliency_cli, "write_figure", write_then_interrupt)
    path, _ = digits_model
    argv = ["--model", str(path), "--no-progress", "--method", "vanilla"]
    # A folder made by the run goes again.
    fresh = tmp_path / "fresh"
    assert run_cli([*argv, "--out", str(fresh), "--index", "0,1"]) == 130
    assert not fresh.exists()
    capsys.readouterr()
    # An earlier folder is named as a mix of old and new files.
    old = tmp_path / "old"
    old.mkdir()
    (old / "saliency.json").write_text("{}")
    written.clear()
    argv += ["--out", str(old), "--overwrite", "--index", "0,1"]
    assert run_cli(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted; {old} is incomplete, with some files of this run" in err


def test_cli_checks_values_before_out(digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("from an earlier run")
    argv = ["--model", str(path), "--out", str(out), "--noise-level", "-1"]
    assert run_cli(argv) == 2
    assert "--noise-level must be a finite number >= 0" in capsys.readouterr().err


def test_cli_default_out_beside_model(digits_model, tmp_path):
    path, _ = digits_model
    model_path = tmp_path / "model.npz"
    model_path.write_bytes(path.read_bytes())
    argv = ["--model", str(model_path), "--index", "0", "--method", "vanilla"]
    argv += ["--check-samples", "2", "--random-orders", "1", "--no-progress"]
    assert run_cli(argv) == 0
    assert (tmp_path / "saliency" / "saliency.json").is_file()


def test_report_section(digits_model, tmp_path):
    from resgrad.cli._common import RunContext, Section

    path, data = digits_model
    section = saliency_cli.report_section(
        RunContext(resgrad.load(path), data, tmp_path)
    )
    assert isinstance(section, Section)
    for name in section.files:
        assert (tmp_path / name).stat().st_size > 0
        assert name in section.markdown
    # resgrad run checks these names before any work.
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(saliency_cli.SECTION_FILES)
    assert section.metrics["integrated_gradients_gap"]["max_relative_gap"] < 0.1
    assert set(section.metrics["deletion"]) == set(saliency_cli.REPORT_METHODS)


def test_cli_parser_registers_handler():
    parser = argparse.ArgumentParser()
    saliency_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["saliency", "--model", __file__])
    assert args.handler is saliency_cli.run_saliency
    assert Path(args.model) == Path(__file__)


def test_cli_figures_name_the_variant(digits_model, tmp_path, monkeypatch):
    """A map of squared gradients, Papernot's JSMA or |map| is labelled so in
    the figures, not as the default method."""
    import matplotlib.pyplot as plt

    from resgrad.cli import saliency as saliency_cli

    titles = saliency_cli.method_titles(
        {"smoothgrad": {"squared": True}, "jsma": {"variant": "increase"}}, False
    )
    assert titles["smoothgrad"] == "SmoothGrad-Squared"
    assert titles["jsma"] == "JSMA map (increase)"
    assert titles["vanilla"] == "vanilla gradient"
    assert saliency_cli.method_titles({}, True)["vanilla"] == "|vanilla gradient|"
    path, _ = digits_model
    drawn = []
    original = saliency_cli.sample_figure

    def recording(*args):
        figure = original(*args)
        drawn.append([axes.get_ylabel() for axes in figure.axes if axes.get_ylabel()])
        plt.close(figure)
        return figure

    titled = []
    randomization = saliency_cli.randomization_figure

    def recording_title(*args):
        figure = randomization(*args)
        titled.append(figure.get_suptitle())
        return figure

    monkeypatch.setattr(saliency_cli, "sample_figure", recording)
    monkeypatch.setattr(saliency_cli, "randomization_figure", recording_title)
    argv = ["--model", str(path), "--out", str(tmp_path / "out"), "--squared"]
    argv += ["--method", "smoothgrad,jsma", "--variant", "increase", "--index", "0"]
    assert run_cli([*argv, "--samples", "2", "--check-samples", "2"]) == 0
    assert drawn == [["SmoothGrad-Squared", "JSMA map (increase)"]]
    assert "top row: SmoothGrad-Squared of the first sample" in titled[0]


def test_row_label_beside_tall_input():
    from resgrad.cli.saliency import sample_figure

    x = np.linspace(0.0, 1.0, 180)
    maps = {"vanilla": np.ones((1, 180)), "jsma": -np.ones((1, 180))}
    figure = sample_figure(x, maps, [0], 0, (30, 6), "tall")
    figure.canvas.draw()
    first = figure.axes[0]
    label = first.yaxis.label.get_window_extent()
    assert label.x1 <= first.get_window_extent().x0


def test_short_rows_draw_maps_as_bars():
    from resgrad.cli.saliency import sample_figure

    x = np.linspace(0.0, 1.0, 6)
    maps = {"vanilla": np.array([[1.0, -2.0, 0.5, 0.0, 3.0, -1.0]])}
    figure = sample_figure(x, maps, [0], 0, None, "six features")
    axes = figure.axes
    assert not axes[0].images
    assert [bar.get_height() for bar in axes[0].patches] == pytest.approx(x)
    assert [bar.get_height() for bar in axes[1].patches] == pytest.approx(
        maps["vanilla"][0]
    )
    # The map's axis is symmetric about 0, on the scale of its colour bar.
    assert axes[1].get_ylim() == pytest.approx((-3.0, 3.0))


def test_non_negative_maps_scale_from_zero():
    from resgrad.cli.saliency import sample_figure

    x = np.linspace(0.0, 1.0, 64)
    maps = {"vanilla": np.abs(np.random.default_rng(0).normal(size=(2, 64)))}
    figure = sample_figure(x, maps, [0, 1], 0, (8, 8), "absolute maps")
    image = figure.axes[1].images[0]
    assert image.norm.vmin == 0.0
    assert image.norm.vmax == pytest.approx(maps["vanilla"].max())
    assert image.get_cmap().name == "Purples"


def test_non_positive_maps_scale_to_zero():
    from resgrad.cli.saliency import sample_figure

    x = np.linspace(0.0, 1.0, 64)
    maps = {"jsma": -np.abs(np.random.default_rng(0).normal(size=(2, 64)))}
    figure = sample_figure(x, maps, [0, 1], 0, (8, 8), "JSMA maps")
    image = figure.axes[1].images[0]
    assert image.norm.vmin == pytest.approx(maps["jsma"].min())
    assert image.norm.vmax == 0.0
    # Reversed, so the most negative, most salient pixels are the darkest.
    assert image.get_cmap().name == "Purples_r"


def test_non_negative_bars_scale_from_zero():
    from resgrad.cli.saliency import sample_figure

    x = np.linspace(0.0, 1.0, 6)
    maps = {"vanilla": np.array([[1.0, 2.0, 0.5, 0.0, 3.0, 1.0]])}
    figure = sample_figure(x, maps, [0], 0, None, "six features")
    assert figure.axes[1].get_ylim() == pytest.approx((0.0, 3.0))


def test_grid_title_explains_jsma_colours():
    from resgrad.cli.saliency import method_grid_figure

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 64))
    maps = {
        "vanilla": rng.normal(size=(2, 64)),
        "jsma": -np.abs(rng.normal(size=(2, 64))),
    }
    figure = method_grid_figure(x, maps, np.array([1, 2]), np.array([1, 2]), (8, 8))
    title = figure.get_suptitle()
    assert "red raises the score, blue lowers it" in title
    assert "JSMA map in purple: one sign, darker where more salient" in title
    assert "gradient in purple" not in title
    jsma_column = figure.axes[2]
    assert jsma_column.get_title() == "JSMA map"
    assert jsma_column.images[0].get_cmap().name == "Purples_r"


def test_randomization_curves_differ_in_style(model, x):
    from resgrad.cli.saliency import randomization_figure

    methods = ("input_x_gradient", "integrated_gradients")
    checks = {
        "randomization": {
            method: saliency.randomization_check(model, x, method, init_seed=0)
            for method in methods
        }
    }
    figure = randomization_figure(checks, SimpleNamespace(image_shape=None))
    panels = [ax for ax in figure.axes if ax.get_legend_handles_labels()[1]]
    # One panel for |map| and one for the signed map.
    assert [ax.get_title() for ax in panels] == ["|map|", "signed map"]
    for ax in panels:
        lines = {line.get_label(): line for line in ax.lines}
        product, integrated = lines["input x gradient"], lines["Integrated Gradients"]
        # Integrated Gradients is drawn on top, so its dashes must let the
        # input x gradient curve show through.
        assert integrated.get_linestyle() != "-"
        assert product.get_linestyle() != integrated.get_linestyle()
        assert product.get_marker() != integrated.get_marker()

    # The title fits the page with the longest method name in its top row.
    figure.canvas.draw()
    title = figure.get_suptitle()
    extent = figure._suptitle.get_window_extent(figure.canvas.get_renderer())
    assert "input x gradient" in title
    assert extent.x0 >= figure.bbox.x0
    assert extent.x1 <= figure.bbox.x1

    # With --absolute the signed panel shows |map| too, and its title names it.
    figure = randomization_figure(checks, SimpleNamespace(image_shape=None), True)
    panels = [ax for ax in figure.axes if ax.get_legend_handles_labels()[1]]
    assert panels[1].get_title() == "signed map (here |map|: --absolute)"


def test_randomization_spread_over_samples(model, x):
    from resgrad.cli.saliency import check_summary, randomization_figure

    result = saliency.randomization_check(model, x, "vanilla", init_seed=0)
    # One sample without a defined correlation at the last step.
    spearman_abs = result.spearman_abs.copy()
    spearman_abs[-1, 0] = np.nan
    result = result._replace(spearman_abs=spearman_abs)
    checks = {"randomization": {"vanilla": result}, "deletion": {}, "score": "logit"}
    summary = check_summary(checks)["randomization"]["vanilla"]
    for key, values in (
        ("spearman_quartiles", result.spearman),
        ("spearman_abs_quartiles", spearman_abs),
    ):
        quartiles = np.array(summary[key])
        assert quartiles.shape == (model.depth, 2)
        for row, (low, high) in zip(values, quartiles):
            finite = row[np.isfinite(row)]
            assert low == np.percentile(finite, 25)
            assert high == np.percentile(finite, 75)
            assert -1 <= low <= high <= 1
    figure = randomization_figure(checks, SimpleNamespace(image_shape=None))
    panels = [ax for ax in figure.axes if ax.get_legend_handles_labels()[1]]
    for ax, values in zip(panels, (spearman_abs, result.spearman)):
        (band,) = ax.collections
        top = band.get_paths()[0].vertices[:, 1]
        # The band starts at 1, the trained model's map against itself.
        assert top.max() <= 1 + 1e-12
        assert np.isclose(top, np.nanpercentile(values[-1], 75)).any()
    assert "band: middle\nhalf of the samples" in panels[0].get_ylabel()


def test_quartiles_of_undefined_correlations_are_nan():
    from resgrad.cli.saliency import _quartile_rows

    rows = np.array([[np.nan, np.nan], [0.2, 0.4]])
    np.testing.assert_allclose(_quartile_rows(rows), [[np.nan, np.nan], [0.25, 0.35]])


def test_randomization_panels_share_one_colour_map(model, x, monkeypatch):
    """A signed map that happens to be never positive after one step is
    drawn on the diverging scale of its neighbours, not in purple."""
    from resgrad.cli import saliency as cli_saliency

    result = saliency.randomization_check(model, x, "vanilla", init_seed=0)
    randomized = list(result.randomized)
    randomized[0] = -np.abs(np.asarray(randomized[0]))
    checks = {"randomization": {"vanilla": result._replace(randomized=randomized)}}
    drawn = []
    show = cli_saliency._show

    def recording_show(ax, row, image_shape, cmap, norm):
        drawn.append(cmap)
        return show(ax, row, image_shape, cmap, norm)

    monkeypatch.setattr(cli_saliency, "_show", recording_show)
    cli_saliency.randomization_figure(checks, SimpleNamespace(image_shape=None))
    assert drawn == [cli_saliency.DIVERGING] * (len(randomized) + 1)


def test_deletion_figure_names_baseline_and_class(model, x):
    from resgrad.cli.saliency import deletion_figure

    maps = saliency.vanilla_gradient(model, x, 0)
    curve = saliency.deletion_curve(model, x, maps, 0, baseline=0.25)
    checks = {"deletion": {"vanilla": (curve, "value")}, "baseline": 0.25}
    axes = deletion_figure(checks).axes[0]
    assert "features set to 0.25, the lower end of the box" in axes.get_xlabel()
    assert axes.get_ylabel() == "logit of the predicted class,\nmean over samples"
