"""Tests of the depth study: the gradient profile, the identity-block limit,
two published results, and the ``resgrad depth`` command."""

from __future__ import annotations

import json
import math
import pickle
import re
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import threadpoolctl

import resgrad
from resgrad import depth
from resgrad.cli import main
from resgrad.cli._common import RunContext
from resgrad.gradients import propagate
from resgrad.io import json_text


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Run BLAS and LAPACK on one thread.

    The matrices here are at most 512 x 512, too small to gain from threads,
    while a threaded OpenBLAS on a busy machine wastes time spinning. On 2
    loaded cores, one QR factorisation of a 512 x 512 matrix took 5.9 s with
    2 threads and 0.1 s with 1.
    """
    with threadpoolctl.threadpool_limits(1):
        yield


def _log10_norms(per_sample: np.ndarray) -> np.ndarray:
    flat = per_sample.reshape(per_sample.shape[0], -1)
    with np.errstate(divide="ignore"):
        return np.log10(np.linalg.norm(flat, axis=1))


# The gradient profile against the library's own gradients.


@pytest.mark.parametrize("arch", depth.ARCHITECTURES)
@pytest.mark.parametrize("post", ["relu", "identity", "sigmoid"])
def test_profile_matches_per_sample_gradients(arch, post):
    model = depth.build_network(arch, 7, 5, post_activation=post, seed=3)
    x, v = depth.probe_batch(4, 5, 5, seed=2)
    profile = depth.gradient_profile(model, x, v, segment=3)
    # The squared error at the target a^L - v has dY/da^L = v.
    grads = resgrad.per_sample_gradients(model, x, model(x) - v, loss="squared_error")
    for index, block in enumerate(grads.blocks):
        for name in ("W1", "W2"):
            expected = _log10_norms(getattr(block, name))
            measured = getattr(profile, name)[:, index]
            np.testing.assert_allclose(measured, expected, rtol=0, atol=1e-12)
        if arch == "learned":
            expected = _log10_norms(block.W3)
            np.testing.assert_allclose(profile.W3[:, index], expected, atol=1e-12)
    if arch != "learned":
        assert profile.W3 is None
    np.testing.assert_allclose(profile.input, _log10_norms(grads.input), atol=1e-12)


def test_profile_errors_match_recurrence():
    model = depth.build_network("residual", 6, 5, output_activation="relu", seed=1)
    x, v = depth.probe_batch(3, 5, 5, seed=4)
    profile = depth.gradient_profile(model, x, v, segment=4)
    traces, _ = model.trace(x)
    start = v * (traces[-1].z > 0)
    _, errors = propagate(model, traces, start)
    for index, (e, _) in enumerate(errors):
        np.testing.assert_allclose(profile.error[:, index], _log10_norms(e), atol=1e-12)


def test_profile_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    model = depth.build_network("learned", 5, 4, seed=0)
    x, v = depth.probe_batch(3, 4, 4, seed=0)
    expected = depth.gradient_profile(model, x, v, segment=2)
    measured = depth.gradient_profile(
        model.convert(torch), torch.from_numpy(x), torch.from_numpy(v), segment=2
    )
    for name, values in expected.arrays().items():
        np.testing.assert_allclose(measured.arrays()[name], values, atol=1e-12)
    np.testing.assert_allclose(measured.input, expected.input, atol=1e-12)


def test_profile_independent_of_segment_length():
    model = depth.build_network("residual", 40, 6, seed=5)
    x, v = depth.probe_batch(3, 6, 6, seed=5)
    whole = depth.gradient_profile(model, x, v, segment=40)
    for segment in (1, 7):
        pieces = depth.gradient_profile(model, x, v, segment=segment)
        for name, values in whole.arrays().items():
            np.testing.assert_allclose(pieces.arrays()[name], values, atol=1e-10)


def test_profile_rescaling_is_exact_for_relu():
    model = depth.build_network("learned", 30, 6, seed=2)
    x, v = depth.probe_batch(3, 6, 6, seed=2)
    reference = depth.gradient_profile(model, x, v)
    shrunk = depth.gradient_profile(model, x * 1e-150, v)
    # Weight gradients are linear in a^{l-1}; the errors do not depend on it.
    for name in ("W1", "W2", "W3"):
        np.testing.assert_allclose(
            getattr(shrunk, name), getattr(reference, name) - 150, atol=1e-9
        )
    np.testing.assert_allclose(shrunk.error, reference.error, atol=1e-9)
    np.testing.assert_allclose(shrunk.input, reference.input, atol=1e-9)


def test_profile_beyond_float64_range():
    model = depth.build_network("learned", 1200, 8, post_activation="identity", seed=0)
    x, v = depth.probe_batch(2, 8, 8, seed=0)
    profile = depth.gradient_profile(model, x, v, segment=16)
    assert np.isfinite(profile.input).all()
    assert profile.input.min() > math.log10(np.finfo(np.float64).max)
    longer = depth.gradient_profile(model, x, v, segment=64)
    np.testing.assert_allclose(longer.input, profile.input, rtol=1e-10)


def test_profile_overflow_without_rescaling_raises():
    model = resgrad.ResidualMLP.init(
        [8] * 401, shortcut="learned", post_activation="identity", alpha=10.0, seed=0
    )
    x, v = depth.probe_batch(2, 8, 8, seed=0)
    with pytest.raises(ValueError, match="overflowed"):
        depth.gradient_profile(model, x, v)


def _first_non_finite_block(model, x) -> int:
    """Run the forward pass block by block and return the first block,
    counted from 1, whose u or z is not finite."""
    g, g_post, _ = model.activations()
    a = x
    with np.errstate(over="ignore", invalid="ignore"):
        for index, block in enumerate(model.blocks):
            u = a @ block.W1.T
            z = g.value(np, u) @ block.W2.T + a
            if not (np.isfinite(u).all() and np.isfinite(z).all()):
                return index + 1
            a = g_post.value(np, z)
    raise AssertionError("the forward pass stayed finite")


def test_overflow_names_block_from_one():
    model = depth.build_network("residual", 3000, 8, activation="softplus", seed=0)
    x, v = depth.probe_batch(2, 8, 8, seed=0)
    expected = _first_non_finite_block(model, x)
    with pytest.raises(depth.DepthOverflowError) as caught:
        depth.gradient_profile(model, x, v)
    assert caught.value.block == expected
    message = str(caught.value)
    assert f"in block {expected} of 3000 (counting from 1)" in message
    assert f"use fewer than {expected} blocks" in message
    assert "Scale the inputs" not in message


def test_branch_gain_overflow_names_alpha():
    with pytest.raises(depth.DepthOverflowError) as caught:
        depth.branch_gain(1e200, 3, width=4)
    assert caught.value.block == 2
    message = str(caught.value)
    assert "in block 2 of 3 (counting from 1); pass a smaller alpha than 1e+200" in (
        message
    )
    # branch_gain takes no segment, and fewer blocks would not help.
    assert "segment=" not in message
    assert "fewer" not in message
    assert str(pickle.loads(pickle.dumps(caught.value))) == message


def test_branch_gain_rejects_non_finite_alpha():
    with pytest.raises(
        ValueError, match="Expected alpha to be a finite number, got nan"
    ):
        depth.branch_gain(math.nan, 3, width=4)


@pytest.mark.parametrize(
    ("call", "needed"),
    [
        (lambda: depth.build_network("residual", 1e20, 4), "23841857910156.2 GiB"),
        (lambda: depth.build_network("learned", 1, 10**7), "2235174.2 GiB"),
        (lambda: depth.branch_gain(None, 10**18, width=4), "238418579101.6 GiB"),
        (
            lambda: depth.depth_sweep(depths=[1e20], widths=[4], seeds=1),
            "23841857910156.2 GiB",
        ),
    ],
)
def test_networks_too_large_for_memory_raise(call, needed):
    with pytest.raises(ValueError, match=rf"need {needed}, more than .*fewer blocks"):
        call()


def test_build_network_names_unknown_arch_before_size():
    with pytest.raises(ValueError, match="Unknown architecture 'bogus'"):
        depth.build_network("bogus", 10**9, 10**9)


def test_eigenvalue_moments_reject_negative_values():
    with pytest.raises(
        ValueError, match=r"singular values >= 0, got -1.0 at index 1; pass the values"
    ):
        depth.eigenvalue_moments(np.array([1.0, -1.0]), 2)


def test_critical_relu_moments_check_output_flag():
    with pytest.raises(
        TypeError, match="Expected output to be True or False, got 'no'"
    ):
        depth.critical_relu_moments(2, "he", "no")


def test_cli_overflow_names_options(tmp_path, capsys):
    argv = ["depth", "--no-progress", "--depths", "3000", "--widths", "8"]
    argv += ["--arch", "residual", "--seeds", "1", "--samples", "2"]
    argv += ["--identity-blocks", "0", "--activation", "softplus"]
    argv += ["--spectrum-depth", "0", "--out", str(tmp_path / "out")]
    model = depth.build_network("residual", 3000, 8, activation="softplus", seed=0)
    x, _ = depth.probe_batch(2, 8, 8, seed=0)
    expected = _first_non_finite_block(model, x)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the residual network of width 8 (seed 0)" in err
    assert f"in block {expected} of 3000 (counting from 1)" in err
    assert f"pass --depths below {expected}" in err
    assert "--arch scaled or zero" in err
    assert "Scale the inputs" not in err


def test_profile_rejects_direction_shape():
    model = depth.build_network("plain", 2, 4, seed=0)
    x, v = depth.probe_batch(3, 4, 4, seed=0)
    with pytest.raises(ValueError, match=r"direction dY/da\^L of shape \(3, 4\)"):
        depth.gradient_profile(model, x, v[:2])


@pytest.mark.parametrize("depths", [4, np.array(4), np.int64(4)])
def test_sweep_takes_one_depth_width_and_arch(depths):
    results = depth.depth_sweep(
        depths=depths, widths=8, archs="residual", seeds=1, samples=2, spectrum_depth=0
    )
    assert [(r.arch, r.depth, r.width) for r in results] == [("residual", 4, 8)]


def test_sweep_names_an_arch_of_bytes():
    with pytest.raises(ValueError, match="Unknown architecture b'plain'"):
        depth.depth_sweep(depths=1, widths=4, archs=b"plain", seeds=1)


@pytest.mark.parametrize("depths", ["4", 4.5, None])
def test_sweep_names_depths_of_wrong_type(depths):
    with pytest.raises(TypeError, match="Expected depths to be a list of integers"):
        depth.depth_sweep(depths=depths, widths=4, seeds=1)


def test_docs_name_last_block_activation():
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "depth.md"
    text = " ".join(page.read_text().split())
    model = depth.build_network("residual", 3, 4)
    assert (model.activation, model.post_activation) == ("relu", "relu")
    assert model.output_activation == "identity"
    assert "relu inside and after each block" not in text
    assert "The last block has no activation after it" in text


def test_build_network_rejects_unknown_arch():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'"):
        depth.build_network("resnet", 2, 4)


def test_build_network_branch_scale():
    scaled = depth.build_network("scaled", 16, 4, seed=7)
    residual = depth.build_network("residual", 16, 4, seed=7)
    np.testing.assert_allclose(scaled.blocks[3].W2, residual.blocks[3].W2 / 4)
    zero = depth.build_network("zero", 16, 4, seed=7)
    assert not np.any(zero.blocks[3].W2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: depth.branch_scale("scaled", 0), "depth .* positive integer, got 0"),
        (lambda: depth.branch_scale("residual", -1), "depth .* got -1"),
        (lambda: depth.identity_block(0, np.zeros(1)), "width .* got 0"),
        (lambda: depth.probe_batch(0, 4, 4), "n to be a positive integer, got 0"),
        (lambda: depth.probe_batch(math.nan, 4, 4), "n .* positive integer, got nan"),
        (lambda: depth.identity_limit(seeds=math.inf), "seeds .* got inf"),
        (lambda: depth.probe_batch(2, 0, 4), "n_features .* got 0"),
        (lambda: depth.probe_batch(2, 4, -1), "n_outputs .* got -1"),
        (lambda: depth.classifier_network("plain", 1, 0, 3, 2), "width .* got 0"),
        (lambda: depth.classifier_network("plain", 2, 4, 0, 2), "n_features"),
        (lambda: depth.classifier_network("plain", 2, 4, 3, 0), "n_classes"),
        (lambda: depth.depth_sweep(()), "at least one value in depths"),
        (lambda: depth.depth_sweep((1, 0)), "every value in depths .* got 0"),
        (lambda: depth.depth_sweep(widths=()), "at least one value in widths"),
        (lambda: depth.depth_sweep(widths=(4, -4)), "every value in widths"),
        (lambda: depth.depth_sweep(archs=()), "at least one architecture"),
        (lambda: depth.depth_sweep(samples=0), "samples .* got 0"),
        (lambda: depth.depth_sweep(spectrum_depth=-1), "spectrum_depth .* got -1"),
        (lambda: depth.depth_sweep(spectrum_samples=-1), "spectrum_samples"),
        (lambda: depth.trained_sweep(None, depths=(-1,)), "every value in depths"),
        (lambda: depth.trained_sweep(None, archs=()), "at least one architecture"),
        (lambda: depth.trained_sweep(None, seeds=0), "seeds .* got 0"),
        (lambda: depth.trained_sweep(None, samples=-1), "samples .* got -1"),
        (
            lambda: depth.identity_limit("relu", (-1,), seeds=1, samples=2),
            "every value in identity_blocks to be a non-negative integer, got -1",
        ),
        (lambda: depth.identity_limit("relu", (2.5,)), "identity_blocks .* got 2.5"),
        (lambda: depth.identity_limit("relu", ()), "value in identity_blocks"),
        (lambda: depth.identity_limit(seeds=0), "seeds .* got 0"),
        (lambda: depth.identity_limit(samples=0), "samples .* got 0"),
        (lambda: depth.branch_gain(None, 0), "depth .* got 0"),
        (lambda: depth.branch_gain(1.0, 2, width=0), "width .* got 0"),
        (lambda: depth.branch_gain(1.0, 2, seeds=0), "seeds .* got 0"),
        (lambda: depth.branch_gain(1.0, 2, samples=0), "samples .* got 0"),
        (lambda: depth.critical_relu_moments(0, "he", True), "depth .* got 0"),
        (lambda: depth.jacobian_moments(1, 4, seeds=0), "seeds .* got 0"),
        (lambda: depth.mean_jacobian_eigenvalue(1, 4, seeds=0), "seeds .* got 0"),
        (lambda: depth.mean_jacobian_eigenvalue(1, 4, samples=0), "samples"),
    ],
)
def test_bad_count_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: depth.depth_sweep((4, 4), 4, seeds=1), "value 4 in depths"),
        (lambda: depth.depth_sweep(1, (4, 4), seeds=1), "value 4 in widths"),
        (
            lambda: depth.depth_sweep(1, 4, ("plain", "plain"), seeds=1),
            "value 'plain' in archs",
        ),
        (
            lambda: depth.identity_limit("relu", (16, 0, 4, 4), seeds=1),
            r"value 4 in identity_blocks \[16, 0, 4, 4\]",
        ),
        (lambda: depth.trained_sweep(None, depths=(1, 1)), "value 1 in depths"),
        (
            lambda: depth.trained_sweep(None, archs=("zero", "zero")),
            "value 'zero' in archs",
        ),
    ],
)
def test_repeated_values_raise(call, match):
    with pytest.raises(ValueError, match=f"Repeated {match}.*give each value once"):
        call()


@pytest.mark.parametrize(
    "option, value",
    [
        ("--widths", "4,4"),
        ("--depths", "4,1,4"),
        ("--identity-blocks", "16,0,4,4"),
        ("--trained-depths", "1,1"),
    ],
)
def test_cli_rejects_repeated_values(tmp_path, capsys, option, value):
    argv = ["depth", "--no-progress", "--out", str(tmp_path / "out")]
    if option == "--trained-depths":
        argv.append("--trained")
    status = main([*argv, option, value])
    assert status == 2
    err = capsys.readouterr().err
    repeated = value.split(",")[-1]
    assert f"argument {option}: repeated value {repeated} in '{value}'" in err
    assert "give each value once" in err
    assert not (tmp_path / "out").exists()


def test_sweep_rejects_mode_without_spectrum():
    with pytest.raises(ValueError, match="Unknown jacobian_mode 'bogus'; expected"):
        depth.depth_sweep(1, 4, seeds=1, spectrum_depth=0, jacobian_mode="bogus")


def test_cli_help_names_sweep_only_options(capsys):
    assert main(["depth", "--help"]) == 0
    # argparse may break a line after the hyphen of identity-block.
    text = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))
    assert "probe inputs per network of the sweep; the identity-block study" in text
    assert "probes 16 and the trained classifiers 64" in text
    assert "the activation inside the blocks of the sweep" in text
    assert "the weight distribution of the sweep" in text


def test_probe_batch_rows_are_unit_vectors():
    x, v = depth.probe_batch(5, 7, 3, seed=1)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)


# Statistics.


def test_log10_rms_matches_direct_formula():
    values = np.array([[0.5, 3.0], [2.0, 0.0], [1.0, 4.0]])
    with np.errstate(divide="ignore"):
        measured = depth.log10_rms(np.log10(values), axis=0)
    expected = np.log10(np.sqrt(np.mean(values**2, axis=0)))
    np.testing.assert_allclose(measured, expected, atol=1e-14)


def test_log10_rms_beyond_float64_range():
    assert depth.log10_rms(np.array([400.0, 400.0])) == pytest.approx(400.0)
    assert depth.log10_rms(np.array([-np.inf, -np.inf])) == -np.inf


def test_summary_pools_samples_and_spreads_seeds():
    seed_a = np.log10(np.array([[1.0], [3.0]]))
    seed_b = np.log10(np.array([[10.0], [10.0]]))
    summary = depth.Summary.of([seed_a, seed_b])
    pooled = math.log10(math.sqrt((1 + 9 + 100 + 100) / 4))
    assert summary.rms[0] == pytest.approx(pooled)
    assert summary.low[0] == pytest.approx(math.log10(math.sqrt(5)))
    assert summary.high[0] == pytest.approx(1.0)
    assert summary.std[0] == pytest.approx((1 - math.log10(math.sqrt(5))) / 2)


def test_summary_repr_of_0d_statistics():
    # Norms of shape (n,) reduce to 0-d results, which print in one style.
    summary = depth.Summary.of([np.ones(2), np.ones(2)])
    assert repr(summary) == (
        "Summary(rms=float64(1.0), std=float64(0.0), low=float64(1.0), "
        "high=float64(1.0))"
    )


def test_eigenvalue_moments_pad_missing_rows():
    moments = depth.eigenvalue_moments(np.array([1.0, 2.0]), rows=4)
    assert moments["mean"] == pytest.approx(1.25)
    assert moments["variance"] == pytest.approx(np.var([1.0, 4.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: depth.log10_rms(np.zeros((0, 3))), "one value in log10_values"),
        (lambda: depth.Summary.of([]), "at least one seed"),
        (lambda: depth.Summary.of([np.zeros((0, 3))]), "one sample per seed"),
        (
            lambda: depth.eigenvalue_moments(np.array([]), 0),
            "at least one singular value, got an empty array",
        ),
        (lambda: depth.eigenvalue_moments(np.ones((2, 3)), 3), r"shape \(k,\)"),
        (lambda: depth.eigenvalue_moments(np.ones(5), 3), "at most rows = 3"),
        (lambda: depth.eigenvalue_moments(np.ones(2), 0), "rows .* got 0"),
        (
            lambda: depth.eigenvalue_moments(np.array([np.nan, 1.0]), 2),
            "singular_values contains 1 NaN",
        ),
        (
            lambda: depth.numerical_zeros(np.zeros((2, 0)), (3, 3)),
            "one singular value per row",
        ),
        (lambda: depth.numerical_zeros(np.ones((2, 3)), (3,)), r"\(p_L, p_0\)"),
        (lambda: depth.numerical_zeros(np.ones((2, 3)), (3, 0)), "entry of shape"),
        (lambda: depth.Spectrum.of([], (3, 3)), "at least one sample"),
        (
            lambda: depth.Spectrum.of([np.zeros((0, 3))], (3, 3)),
            "at least one sample",
        ),
        (lambda: depth.summarise([]), "at least one GradientProfile"),
    ],
)
def test_empty_statistics_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# The Jacobian J.


def test_singular_values_match_product_mode():
    model = depth.build_network("learned", 3, 5, output_activation="relu", seed=0)
    x, _ = depth.probe_batch(2, 5, 5, seed=0)
    auto = depth.jacobian_singular_values(model, x, output=True)
    mats = resgrad.theorem_matrices(model, x)
    J = mats[0].Q
    for index in range(1, model.depth):
        J = mats[index].Q @ mats[index - 1].D @ J
    expected = np.linalg.svd(mats[-1].D @ J, compute_uv=False)
    np.testing.assert_allclose(auto, expected, atol=1e-12)
    product = depth.jacobian_singular_values(model, x, output=True, mode="product")
    np.testing.assert_allclose(product, expected, atol=1e-12)


def test_sweep_spectrum_same_in_product_mode():
    options = {"seeds": 1, "samples": 2, "spectrum_depth": 4}
    auto = depth.depth_sweep((4,), (6,), ("learned",), **options)[0]
    product = depth.depth_sweep(
        (4,), (6,), ("learned",), jacobian_mode="product", **options
    )[0]
    np.testing.assert_allclose(
        product.spectrum.log10_singular_values,
        auto.spectrum.log10_singular_values,
        atol=1e-9,
    )


def test_input_gain_is_mean_eigenvalue():
    model = depth.build_network("plain", 4, 6, seed=3)
    x, _ = depth.probe_batch(1, 6, 6, seed=3)
    # Every unit vector e_r as dY/da^L at one input:
    # mean ||J^T e_r||^2 = tr(J J^T) / p_L.
    profile = depth.gradient_profile(model, np.repeat(x, 6, axis=0), np.eye(6))
    s = depth.jacobian_singular_values(model, x)[0]
    expected = depth.eigenvalue_moments(s, 6)["mean"]
    assert np.mean(10.0 ** (2 * profile.input)) == pytest.approx(expected, rel=1e-12)


# The identity-block limit of the manuscript.


def test_identity_blocks_keep_relu_gradients():
    results = depth.identity_limit("relu", (1, 4, 32), base_depth=3, width=16, seeds=2)
    first = results[0]
    for later in results[1:]:
        for name in ("W1", "W2", "W3"):
            np.testing.assert_allclose(
                later.blocks[name].rms[:3], first.blocks[name].rms[:3], atol=1e-12
            )
        assert later.input.rms == pytest.approx(float(first.input.rms), abs=1e-12)


def test_identity_blocks_do_not_stop_sigmoid_vanishing():
    ks = (0, 8, 16, 32)
    results = depth.identity_limit("sigmoid", ks, base_depth=3, width=16, seeds=2)
    for k, result in zip(ks, results):
        # e^3 = D^3 ... D^{3+k-1} v with every entry of D^l at most 1/4.
        assert result.blocks["error"].high[2] <= k * math.log10(0.25) + 1e-12
    fixed_point = 0.5
    for _ in range(200):
        fixed_point = 1 / (1 + math.exp(-fixed_point))
    per_block = (results[3].blocks["W1"].rms[0] - results[2].blocks["W1"].rms[0]) / 16
    assert per_block == pytest.approx(
        math.log10(fixed_point * (1 - fixed_point)), rel=1e-2
    )


# Unnormalised residual blocks x + alpha W2 relu(W1 x): the growth (1 + 2 alpha^2)^L.
# Backwards, block l maps g = dY/dx_l to (I + alpha W1^T D W2^T) g. With W1, W2
# drawn from N(0, 2/N), W2^T doubles E||g||^2, the relu mask D halves it and
# W1^T doubles it again, while the cross term has mean zero, so each block
# multiplies E||dY/dx||^2 by 1 + 2 alpha^2.


def test_branch_gain_alpha_one():
    """Width 256, 8 seeds, L = 10: within 15% of 3^10.

    The standard error over the 8 seeds is about 4% of the mean (2.3e3 of
    5.6e4), so 15% is more than three standard errors.
    """
    gain = depth.branch_gain(1.0, 10, width=256, seeds=8)
    assert gain["predicted"] == pytest.approx(3.0**10)
    assert gain["measured"] == pytest.approx(3.0**10, rel=0.15)


def test_branch_gain_alpha_zero():
    gain = depth.branch_gain(0.0, 10, width=256, seeds=8)
    assert gain["measured"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("blocks", [10, 100])
def test_branch_gain_scaled_matches_prediction(blocks):
    gain = depth.branch_gain(None, blocks, width=256, seeds=4)
    predicted = (1 + 2 / blocks) ** blocks
    assert gain["predicted"] == pytest.approx(predicted)
    assert gain["measured"] == pytest.approx(predicted, rel=0.10)


@pytest.mark.slow
def test_branch_gain_scaled_approaches_e_squared():
    """alpha = 1/sqrt(L), L = 1000, width 256: within 10% of e^2.

    Three seeds, not eight, because drawing the 2000 weight matrices of one
    network takes about 4 s of CPU. Over 16 seeds of 16 samples each, the
    per-seed mean had a standard deviation of 5.6% (mean 7.43, against
    e^2 = 7.39 and (1 + 2/1000)^1000 = 7.37), so the mean of three seeds has
    a standard error of 3.2% and 10% is three standard errors.
    """
    gain = depth.branch_gain(None, 1000, width=256, seeds=3, samples=16)
    assert gain["alpha"] == pytest.approx(1000**-0.5)
    assert gain["measured"] == pytest.approx(math.e**2, rel=0.10)


# Pennington, Schoenholz and Ganguli (2017), "Resurrecting the sigmoid in deep
# learning through dynamical isometry": in a critical relu network of L layers
# the eigenvalues of J J^T, J = D^L W^L ... D^1 W^1, have mean 1 and variance
# 2L with Gaussian weights and L with sqrt(2) times orthogonal ones. A plain
# block is two relu layers, so L layers are L/2 blocks.


def test_critical_relu_moments():
    assert depth.critical_relu_moments(3, "he", True) == {
        "mean": 1.0,
        "normalised_variance": 12.0,
    }
    assert depth.critical_relu_moments(3, "he", False)["normalised_variance"] == 11.0
    assert depth.critical_relu_moments(3, "he", False)["mean"] == 2.0
    assert (
        depth.critical_relu_moments(3, "orthogonal", True)["normalised_variance"] == 6
    )
    with pytest.raises(ValueError, match="init 'he' or 'orthogonal'"):
        depth.critical_relu_moments(3, "glorot", True)


# Seeds per number of layers. The spread over seeds grows with depth: at 16
# Gaussian layers the normalised variance of one seed's spectrum had a
# standard deviation of 4.0 (12% of 34.0), and the mean eigenvalue by the
# recurrence one of 0.16.
SPECTRUM_SEEDS = {2: 4, 8: 4, 16: 8}
MEAN_SEEDS = {2: 4, 8: 4, 16: 12}


@pytest.mark.parametrize("init", ["he", "orthogonal"])
@pytest.mark.parametrize("layers", [2, 8, 16])
def test_jacobian_spectrum_width_512(init, layers):
    """Width 512: the normalised variance within 15% of the prediction.

    ``"output"`` is the Jacobian of the paper, with the relu of the last
    layer. ``"logits"`` drops that mask, which takes 1 off the normalised
    variance. The variance is divided by the squared mean of the same
    matrix, because the mean eigenvalue of one matrix fluctuates. At 16
    Gaussian layers it was 1.11 over 8 seeds, and the raw variance came out
    43 against 32. At finite width the normalised variance also runs high,
    by 6% at 16 Gaussian layers (34.0 over 8 seeds), so 8 seeds there give
    a standard error of 4% and leave about two standard errors to the 15%.
    """
    seeds = SPECTRUM_SEEDS[layers]
    measured = depth.jacobian_moments(layers // 2, 512, init, seeds=seeds)
    for target in ("output", "logits"):
        predicted = depth.critical_relu_moments(layers // 2, init, target == "output")
        assert measured[target]["normalised_variance"] == pytest.approx(
            predicted["normalised_variance"], rel=0.15
        ), target


@pytest.mark.parametrize("init", ["he", "orthogonal"])
@pytest.mark.parametrize("layers", [2, 8, 16])
def test_mean_eigenvalue_width_512(init, layers):
    """Width 512: the mean eigenvalue of J J^T within 15% of 1 (or 2).

    The mean is ``E||J^T v||^2`` over unit ``v``, which the recurrence
    measures on 16 samples per seed without forming ``J``. With the relu of
    the last layer it is 1, and without it 2. At 16 layers the per-seed
    standard deviation was 0.16 to 0.18, so 12 seeds have a standard error
    of 5% and 15% is three standard errors.
    """
    seeds = MEAN_SEEDS[layers]
    means = depth.mean_jacobian_eigenvalue(layers // 2, 512, init, seeds=seeds)
    assert means["output"]["mean"] == pytest.approx(1.0, rel=0.15)
    assert means["logits"]["mean"] == pytest.approx(2.0, rel=0.15)


def test_critical_relu_moments_match_paper():
    for layers in (2, 8, 16):
        gaussian = depth.critical_relu_moments(layers // 2, "he", True)
        orthogonal = depth.critical_relu_moments(layers // 2, "orthogonal", True)
        assert gaussian["mean"] == 1.0
        assert gaussian["normalised_variance"] == 2 * layers
        assert orthogonal["normalised_variance"] == layers


def test_jacobian_moments_match_singular_values():
    measured = depth.jacobian_moments(3, 6, "he", seeds=2)
    per_seed = {"logits": [], "output": []}
    for seed in range(2):
        model = depth.build_network("plain", 3, 6, seed=seed)
        output = resgrad.ResidualMLP(model.blocks, "relu", "relu", "relu")
        x, _ = depth.probe_batch(1, 6, 6, seed)
        for name, network in (("logits", model), ("output", output)):
            s = depth.jacobian_singular_values(network, x, output=name == "output")
            per_seed[name].append(depth.eigenvalue_moments(s[0], 6)["variance"])
    for name, values in per_seed.items():
        assert measured[name]["variance"] == pytest.approx(np.mean(values)), name


# Trained networks.


def _small_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((60, 5))
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    return SimpleNamespace(
        x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:], n_classes=2
    )


def test_classifier_network_shortcuts():
    residual = depth.classifier_network("residual", 3, 8, 5, 2)
    assert [b.shortcut for b in residual.blocks] == ["learned", "identity", "learned"]
    plain = depth.classifier_network("plain", 3, 8, 5, 2)
    assert [b.shortcut for b in plain.blocks] == ["none"] * 3
    assert residual.sizes == [5, 8, 8, 2]


def test_redrawn_network_keeps_architecture():
    model = depth.classifier_network("residual", 3, 8, 5, 2, seed=0)
    redrawn = depth.redrawn_network(model, seed=1)
    assert redrawn.config() == model.config()
    assert not np.allclose(redrawn.blocks[1].W1, model.blocks[1].W1)


def test_trained_sweep_reports_both_stages():
    results = depth.trained_sweep(
        _small_data(),
        depths=(2,),
        width=6,
        archs=("residual",),
        seeds=1,
        epochs=2,
        samples=8,
    )
    assert [r.stage for r in results] == ["init", "trained"]
    assert results[0].accuracy is None
    assert 0.0 <= results[1].accuracy <= 1.0
    assert not np.allclose(results[0].blocks["W1"].rms, results[1].blocks["W1"].rms)


# The command line.


def test_cli_writes_json_and_figures(tmp_path, capsys):
    status = main(
        [
            "depth",
            "--depths",
            "1,3",
            "--widths",
            "6",
            "--seeds",
            "2",
            "--samples",
            "4",
            "--identity-blocks",
            "0,2",
            "--identity-width",
            "6",
            "--spectrum-depth",
            "3",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert status == 0
    document = json.loads((tmp_path / "depth.json").read_text())
    assert len(document["sweep"]) == 6
    assert set(document["identity_limit"]) == {"relu", "sigmoid", "tanh"}
    assert document["sweep"][1]["spectrum"]["histogram"]
    # Resolved settings, without those of the trained study, which was off.
    assert document["settings"]["post_activation"] == "relu"
    assert document["settings"]["trained"] is False
    assert "epochs" not in document["settings"]
    assert "trained_study" not in document["settings"]
    # --samples and --init set the sweep only.
    identity_study = {
        "samples": 16,
        "activations": ["relu", "sigmoid", "tanh"],
        "init": "he",
    }
    assert document["settings"]["identity_study"] == identity_study
    assert all(
        r["samples"] == 16 for rs in document["identity_limit"].values() for r in rs
    )
    for name in document["files"]:
        assert (tmp_path / name).stat().st_size < 150_000, name
    printed = capsys.readouterr().out
    assert "first-to-last" in printed
    # The input gain comes first, with the value that depth.json records.
    assert printed.startswith("log10 E||dY/dx||^2, over every seed and sample:\n")
    gain = document["sweep"][1]["log10_input_gain"]
    lines = printed.splitlines()
    assert lines[2].startswith("      6 residual")
    assert f"{gain:.2f}" in lines[2].split()


def test_cli_trained_option(tmp_path):
    status = main(
        [
            "depth",
            "--depths",
            "2",
            "--widths",
            "6",
            "--seeds",
            "1",
            "--arch",
            "residual",
            "--identity-blocks",
            "0",
            "--identity-width",
            "4",
            "--trained",
            "--trained-depths",
            "2",
            "--trained-width",
            "8",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert status == 0
    document = json.loads((tmp_path / "depth.json").read_text())
    assert [r["stage"] for r in document["trained"]] == ["init", "trained"]
    assert document["settings"]["trained_width"] == 8
    assert document["settings"]["epochs"] == 1
    trained_study = {"samples": 64, "activation": "relu", "init": "he"}
    assert document["settings"]["trained_study"] == trained_study
    assert all(r["samples"] == 64 for r in document["trained"])
    assert (tmp_path / "depth_trained.png").exists()


@pytest.mark.parametrize(
    "options, named",
    [
        (["--epochs", "3"], "--epochs 3 applies only to the trained"),
        (
            ["--trained-depths", "2", "--trained-width", "8"],
            "--trained-depths 2, --trained-width 8 apply only",
        ),
        # The default values typed out are caught too.
        (["--epochs", "5"], "--epochs 5 applies only to the trained"),
        (["--trained-depths", "1,4,16"], "--trained-depths 1,4,16 applies only"),
    ],
)
def test_cli_rejects_trained_options_without_trained(tmp_path, capsys, options, named):
    status = main(["depth", "--out", str(tmp_path / "out"), *options])
    assert status == 2
    err = capsys.readouterr().err
    assert named in err
    assert "add --trained" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, named",
    [
        (["--depths", "100000"], "--depths 100000 at --widths 256 needs about"),
        (["--identity-blocks", "100000"], "--identity-blocks 100000 at"),
        (["--trained", "--trained-depths", "100000"], "--trained-depths 100000 at"),
        (
            ["--depths", "1", "--seeds", "10000000"],
            "--seeds 10000000 on --samples 16 needs about",
        ),
    ],
)
def test_cli_rejects_network_over_memory(tmp_path, capsys, monkeypatch, options, named):
    from resgrad.cli import depth as depth_cli

    # 1 GiB available; a network of 100,000 blocks takes more at any width.
    monkeypatch.setattr(depth_cli, "_available_memory", lambda: 2**30)
    monkeypatch.setattr(
        depth, "depth_sweep", lambda *a, **k: pytest.fail("the sweep ran")
    )
    small = ["--depths", "4", "--widths", "256", "--identity-blocks", "4"]
    status = main(["depth", "--out", str(tmp_path / "out"), *small, *options])
    assert status == 2
    err = capsys.readouterr().err
    assert named in err
    assert "more than the 1.0 GiB of memory available" in err
    assert not (tmp_path / "out").exists()


def test_network_bytes_err_high():
    from resgrad.cli.depth import _network_bytes

    # tracemalloc measured about 5,200 bytes per block of width 4 on 16 rows.
    assert 5200 < _network_bytes(1, 4, 16) < 4 * 5200


def _memory_args(**options):
    settings = {
        "depths": [1],
        "widths": [4],
        "seeds": 1,
        "samples": 1,
        "arch": ["residual"],
        "spectrum_depth": 0,
        "identity_blocks": [0],
        "identity_width": 4,
        "trained": False,
    }
    return SimpleNamespace(**{**settings, **options})


@pytest.mark.parametrize(
    "blocks, width, samples, spectrum_depth",
    [(4, 16, 4000, 0), (70, 8, 2000, 0), (2, 300, 2, 2)],
)
def test_memory_estimate_covers_peak(blocks, width, samples, spectrum_depth):
    import tracemalloc

    from resgrad.cli.depth import _memory_cases

    args = _memory_args(
        depths=[blocks],
        widths=[width],
        seeds=2,
        samples=samples,
        spectrum_depth=spectrum_depth,
    )
    estimate = max(case[1] for case in _memory_cases(args))
    tracemalloc.start()
    try:
        depth.depth_sweep(
            [blocks],
            [width],
            ["residual"],
            2,
            samples=samples,
            spectrum_depth=spectrum_depth,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert estimate > peak
    assert estimate < 2 * peak


def test_cli_memory_check_counts_spectrum(tmp_path, capsys, monkeypatch):
    from resgrad.cli import depth as depth_cli

    # 0.7 GiB holds the weights of one block of width 4000 but not its
    # Jacobian and SVD.
    monkeypatch.setattr(depth_cli, "_available_memory", lambda: 0.7 * 2**30)
    swept = []

    def record(*args, **kwargs):
        swept.append(kwargs["spectrum_depth"])
        raise ValueError("recorded")

    monkeypatch.setattr(depth, "depth_sweep", record)
    argv = ["depth", "--depths", "1", "--widths", "4000", "--arch", "residual"]
    argv += ["--identity-blocks", "0", "--identity-width", "4"]
    status = main([*argv, "--out", str(tmp_path / "a")])
    assert status == 2
    err = capsys.readouterr().err
    assert "--depths 1 at --widths 4000 needs about 1.0 GiB" in err
    assert "singular values of its Jacobian 4000 x 4000" in err
    assert "pass --spectrum-depth 0 to skip them" in err
    assert swept == []
    status = main([*argv, "--spectrum-depth", "0", "--out", str(tmp_path / "b")])
    assert status == 2
    assert "recorded" in capsys.readouterr().err
    assert swept == [0]


def test_cli_memory_check_counts_samples(tmp_path, capsys, monkeypatch):
    from resgrad.cli import depth as depth_cli

    # tracemalloc measured a peak of 1.5 GB for one network at these sizes.
    monkeypatch.setattr(depth_cli, "_available_memory", lambda: 1.2 * 2**30)
    monkeypatch.setattr(
        depth, "depth_sweep", lambda *a, **k: pytest.fail("the sweep ran")
    )
    argv = ["depth", "--depths", "4", "--widths", "64", "--samples", "100000"]
    argv += ["--spectrum-depth", "0", "--out", str(tmp_path / "out")]
    status = main(argv)
    assert status == 2
    err = capsys.readouterr().err
    assert "--depths 4 at --widths 64 needs about" in err
    assert "for one network on --samples 100000" in err
    assert "fewer samples" in err


def test_cli_spectrum_out_of_memory(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise MemoryError("Unable to allocate 122. MiB for an array")

    monkeypatch.setattr(depth, "jacobian_singular_values", fail)
    argv = ["depth", "--no-progress", "--depths", "1,2", "--widths", "4"]
    argv += ["--arch", "plain", "--seeds", "1", "--samples", "2"]
    argv += ["--identity-blocks", "0", "--out", str(tmp_path / "out")]
    status = main(argv)
    assert status == 2
    err = capsys.readouterr().err
    assert "the plain network of depth 1 at width 4" in err
    assert "(Unable to allocate 122. MiB for an array)" in err
    # At depth 1 the only smaller spectrum depth is 0, named already.
    assert "pass --spectrum-depth 0 to skip them." in err
    assert "below 1" not in err


def test_cli_rejects_unknown_arch(tmp_path, capsys):
    status = main(["depth", "--arch", "resnet", "--out", str(tmp_path)])
    assert status == 2
    assert "Unknown --arch value 'resnet'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, repeated",
    [
        ("residual,residual", "residual"),
        ("Plain, residual,plain", "plain"),
        ("zero,ZERO", "zero"),
    ],
)
def test_cli_rejects_repeated_arch(tmp_path, capsys, text, repeated):
    status = main(["depth", "--arch", text, "--out", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err
    assert err == (
        f"resgrad depth: error: Repeated --arch value {repeated!r} in {text!r}; "
        "give each value once.\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, archs",
    [
        (None, ["residual", "plain", "scaled"]),
        ("all", list(depth.ARCHITECTURES)),
        ("ALL", list(depth.ARCHITECTURES)),
        ("Plain, residual", ["plain", "residual"]),
    ],
)
def test_cli_arch_names(text, archs, tmp_path, monkeypatch, capsys):
    swept = []

    def record(depths, widths, archs, *args, **kwargs):
        swept.append(archs)
        raise ValueError("recorded")

    monkeypatch.setattr(depth, "depth_sweep", record)
    argv = ["depth", "--depths", "1", "--widths", "4", "--out", str(tmp_path / "o")]
    if text is not None:
        argv += ["--arch", text]
    assert main(argv) == 2
    assert swept == [archs]


def test_report_section(tmp_path):
    from resgrad.cli.depth import SECTION_FILES, report_section

    data = _small_data()
    model = depth.classifier_network("residual", 3, 6, 5, 2, seed=0)
    section = report_section(RunContext(model, data, tmp_path, seed=0))
    assert section.key == "depth"
    assert section.files
    for name in section.files:
        assert (tmp_path / name).exists()
    # resgrad run checks these names before any work.
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(SECTION_FILES)
    assert "| residual |" in section.markdown
    assert set(section.metrics["trained_model"]) == {"trained", "init"}
    # Every figure has a caption, and the spectrum's explains its legend.
    lines = section.markdown.splitlines()
    for name in section.files:
        index = lines.index(f"![{name}]({name})")
        assert lines[index + 1] == ""
        assert len(lines[index + 2]) > 40, name
    assert "below float64's resolution" in section.markdown
    assert "the architecture zero of resgrad depth --arch" in section.markdown


def test_report_section_zero_inputs_no_warning(tmp_path):
    """Inputs of zeros leave every relu unit off, so the W2 norms are 0 at
    both ends and their log10 ratio is NaN, without a NumPy warning."""
    from resgrad.cli.depth import report_section

    data = _small_data()
    data.x_test = np.zeros_like(data.x_test)
    model = depth.classifier_network("residual", 3, 6, 5, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        section = report_section(RunContext(model, data, tmp_path, seed=0))
    assert math.isnan(section.metrics["trained_model"]["trained"]["log10_ratio_W2"])
    # metrics.json writes it as null, which strict JSON readers accept.
    written = json.loads(json_text(section.metrics))
    assert written["trained_model"]["trained"]["log10_ratio_W2"] is None


def test_report_section_w2_ratio(tmp_path):
    """The report's table gives the W2 ratio that depth_ratio.png draws,
    under a label naming it."""
    from resgrad.cli.depth import REPORT_DEPTHS, REPORT_WIDTH, report_section

    data = _small_data()
    model = depth.classifier_network("residual", 3, 6, 5, 2, seed=0)
    section = report_section(RunContext(model, data, tmp_path, seed=0))
    sweep = depth.depth_sweep(
        REPORT_DEPTHS, (REPORT_WIDTH,), seeds=2, samples=8, spectrum_depth=16
    )
    expected = {f"{r.arch}/L={r.depth}": r.log10_ratio("W2") for r in sweep}
    row = "| residual | " + " | ".join(
        f"{r.log10_ratio('W2'):.2f} ({r.log10_input_gain():.1f})"
        for r in sweep
        if r.arch == "residual"
    )
    assert section.metrics["log10_ratio_W2"] == pytest.approx(expected)
    assert "log10 ||dY/dW^{12}|| / ||dY/dW^{L2}||" in section.markdown
    assert "W^{L1}" not in section.markdown
    assert row in section.markdown


def test_report_section_unsigned_zero(tmp_path):
    """A value that rounds to zero prints as 0.0, not -0.0."""
    from resgrad.cli.depth import report_section

    data = _small_data()
    model = depth.classifier_network("residual", 3, 6, 5, 2, seed=0)
    section = report_section(RunContext(model, data, tmp_path, seed=0))
    assert re.search(r"-0\.0+\b", section.markdown) is None


# A plain relu network of width 8 and 4096 blocks has every relu unit off in
# some block, so all its W2 gradient norms are exactly 0.


@pytest.fixture(scope="module")
def dead_sweep():
    return depth.depth_sweep((1, 4096), (8,), ("plain",), 1, samples=4)


TINY_SWEEP = [
    "depth",
    "--depths",
    "1",
    "--widths",
    "1",
    "--seeds",
    "1",
    "--samples",
    "1",
    "--identity-blocks",
    "0",
    "--identity-width",
    "1",
    "--spectrum-depth",
    "0",
]


def test_cli_progress_lines_in_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    # A stage this short prints its start and its end only.
    assert lines[0] == "depth sweep: 0/3"
    assert re.fullmatch(r"depth sweep: 3/3 after \d+ s", lines[1])
    for index, activation in enumerate(("relu", "sigmoid", "tanh")):
        start, end = lines[2 + 2 * index : 4 + 2 * index]
        assert start == f"identity blocks ({activation}): 0/1"
        assert re.fullmatch(rf"identity blocks \({activation}\): 1/1 after \d+ s", end)
    assert len(lines) == 8


@pytest.mark.parametrize("terminal", [True, False])
def test_cli_no_progress_prints_nothing(tmp_path, capsys, monkeypatch, terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    argv = [*TINY_SWEEP, "--no-progress", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_cli_progress_bar_on_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    # tqdm redraws its bar in place, and leaves no line behind.
    assert "depth sweep:" in err
    assert "\r" in err
    assert "depth sweep: 0/3\n" not in err


def test_cli_prints_zero_norms(tmp_path, capsys):
    status = main(
        [
            "depth",
            "--depths",
            "1,4096",
            "--widths",
            "8",
            "--arch",
            "plain",
            "--seeds",
            "1",
            "--samples",
            "4",
            "--identity-blocks",
            "0",
            "--identity-width",
            "4",
            "--spectrum-depth",
            "0",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    gain, ratio = [line for line in out.splitlines() if " plain " in line]
    # E||dY/dx||^2 underflows to 0 at 4096 blocks, and so do both norms of
    # the ratio.
    assert gain.split()[-1] == "-inf"
    assert ratio.split()[-2:] == ["0.00", "0/0"]
    assert "nan" not in out
    assert "a norm is exactly 0 in float64" in out
    assert "a ratio of two such norms is 0/0" in out
    document = json.loads((tmp_path / "depth.json").read_text())
    assert document["sweep"][1]["log10_ratio_first_to_last"]["W2"] is None


def test_ratio_figure_names_dropped_points(dead_sweep):
    from resgrad.cli.depth import _ratio_figure

    ratio, error, gain = _ratio_figure(dead_sweep).axes[:3]
    assert "not drawn, a norm is exactly 0" in ratio.get_xlabel()
    assert "plain, width 8, L=4096: 0/0" in ratio.get_xlabel()
    assert "plain, width 8, L=4096: -inf" in error.get_xlabel()
    assert "plain, width 8, L=4096: -inf" in gain.get_xlabel()


def test_ratio_figure_sorts_depths():
    from resgrad.cli.depth import _ratio_figure

    sweep = depth.depth_sweep(
        (16, 1, 4), 4, ("residual",), 1, samples=2, spectrum_depth=0
    )
    for ax in _ratio_figure(sweep).axes[:3]:
        assert list(ax.lines[0].get_xdata()) == [1, 4, 16]


def test_identity_figure_sorts_blocks():
    from resgrad.cli.depth import _identity_figure

    limits = {
        activation: depth.identity_limit(activation, (16, 0, 4), width=4, seeds=1)
        for activation in ("relu", "sigmoid")
    }
    left = _identity_figure(limits).axes[0]
    for line in left.lines[:2]:
        assert list(line.get_xdata()) == [0, 4, 16]
    bound = [line for line in left.lines if line.get_label() == "bound $(1/4)^k$"]
    assert len(bound) == 1
    assert list(bound[0].get_xdata()) == [4, 16]


def test_identity_figure_names_dropped_points():
    from resgrad.cli.depth import _identity_figure

    # With one unit and one probe row, the relu unit of block 1 is off.
    limits = {
        activation: depth.identity_limit(activation, (0,), width=1, seeds=1, samples=1)
        for activation in ("relu", "sigmoid", "tanh")
    }
    assert np.isneginf(limits["relu"][0].blocks["W1"].rms[0])
    assert np.isfinite(limits["sigmoid"][0].blocks["W1"].rms[0])
    assert np.isfinite(limits["tanh"][0].blocks["W1"].rms[0])
    left, right = _identity_figure(limits).axes[:2]
    for panel in (left, right):
        label = panel.get_xlabel()
        assert "not drawn, a norm is exactly 0:" in label
        assert "relu, k=0: -inf" in label
        assert "sigmoid" not in label
        assert "tanh" not in label


@pytest.mark.parametrize("blocks", [(0,), (4,), (16, 0, 4, 1)])
def test_identity_figure_whole_k_ticks(blocks):
    from resgrad.cli.depth import _identity_figure

    limits = {
        activation: depth.identity_limit(activation, blocks, width=4, seeds=1)
        for activation in ("relu", "sigmoid")
    }
    figure = _identity_figure(limits)
    figure.canvas.draw()
    for panel in figure.axes[:2]:
        assert list(panel.get_xticks()) == sorted(blocks)
        labels = [label.get_text() for label in panel.get_xticklabels()]
        assert labels == [str(k) for k in sorted(blocks)]


def test_norms_figure_names_dropped_blocks(dead_sweep):
    from resgrad.cli.depth import _norms_figure

    w2_panel = _norms_figure(dead_sweep, 8).axes[0]
    assert "L=4096: 4096 of 4096 blocks" in w2_panel.get_xlabel()
    assert "L=1" not in w2_panel.get_xlabel()


def test_norms_figure_marks_isolated_points():
    from resgrad.cli.depth import _norms_figure

    # At width 1 the error norm of the 64-block residual network is exactly
    # 0 in every block but one.
    sweep = depth.depth_sweep((1, 64), (1,), ("residual",), 1, samples=16)
    deep = sweep[1].blocks["error"].rms
    finite = np.flatnonzero(np.isfinite(deep))
    assert finite.size == 1
    error_panel = _norms_figure(sweep, 1).axes[1]
    points = {
        (float(x), float(y))
        for line in error_panel.lines
        if line.get_marker() == "o"
        for x, y in zip(line.get_xdata(), line.get_ydata())
    }
    assert (finite[0] + 1.0, float(deep[finite[0]])) in points
    assert (1.0, float(sweep[0].blocks["error"].rms[0])) in points
    assert len(points) == 2


@pytest.mark.parametrize(
    "values, isolated",
    [
        ([1.0], [True]),
        ([1.0, 2.0], [False, False]),
        ([-np.inf, 2.0, -np.inf], [False, True, False]),
        ([3.0, -np.inf, 4.0, 5.0, np.nan], [True, False, False, False, False]),
        ([-np.inf, -np.inf], [False, False]),
    ],
)
def test_isolated_points(values, isolated):
    from resgrad.cli.depth import _isolated

    assert _isolated(np.array(values)).tolist() == isolated


def test_published_figure_labels_predictions():
    from resgrad.cli.depth import PENNINGTON_LAYERS, _published_figure

    published = {
        "branch_gain": [
            {"predicted": 3.0**L, "measured": 1.1 * 3.0**L} for L in (1, 2, 5)
        ],
        "jacobian": [
            {
                "init": init,
                "jacobian": target,
                "layers": layers,
                "measured": {"normalised_variance": 1.0},
                "predicted": depth.critical_relu_moments(
                    layers // 2, init, target == "output"
                ),
            }
            for init in ("he", "orthogonal")
            for layers in PENNINGTON_LAYERS
            for target in ("output", "logits")
        ],
    }
    left, right = _published_figure(published).axes[:2]
    left_labels = [text.get_text() for text in left.get_legend().get_texts()]
    assert left_labels == ["measured", "$y = x$, as predicted"]

    formulas = {
        "predicted $2L$": lambda L: 2 * L,
        "predicted $2L - 1$": lambda L: 2 * L - 1,
        "predicted $L$": lambda L: L,
        "predicted $L - 1$": lambda L: L - 1,
    }
    right_labels = [text.get_text() for text in right.get_legend().get_texts()]
    dotted = [line for line in right.lines if line.get_linestyle() == ":"]
    assert sorted(line.get_label() for line in dotted) == sorted(formulas)
    for line in dotted:
        assert line.get_label() in right_labels
        layers = np.asarray(line.get_xdata())
        expected = formulas[line.get_label()](layers)
        assert np.array_equal(line.get_ydata(), expected), line.get_label()


@pytest.mark.parametrize(
    "options, networks",
    [
        ([], "activation relu, post-activation relu, init he"),
        (
            ["--activation", "sigmoid", "--post-activation", "tanh"],
            "activation sigmoid, post-activation tanh, init he",
        ),
        (
            ["--activation", "tanh", "--init", "glorot"],
            "activation tanh, post-activation tanh, init glorot",
        ),
    ],
)
def test_sweep_figures_name_networks(tmp_path, monkeypatch, capsys, options, networks):
    from resgrad.cli import depth as depth_cli

    titles = {}
    save = depth_cli._save

    def record(figure, path):
        titles[path.name] = figure.get_suptitle()
        save(figure, path)

    monkeypatch.setattr(depth_cli, "_save", record)
    argv = ["depth", "--depths", "1,2", "--widths", "2", "--seeds", "1"]
    argv += ["--samples", "2", "--identity-blocks", "0", "--identity-width", "2"]
    argv += ["--no-progress", "--out", str(tmp_path / "out"), *options]
    assert main(argv) == 0
    sweep_figures = [
        "depth_norms_w2.png",
        "depth_spectrum_w2.png",
        "depth_ratio.png",
    ]
    for name in sweep_figures:
        assert titles[name].splitlines()[-1] == networks, name
    assert networks not in titles["depth_identity.png"]


def test_trained_figure_integer_blocks():
    from resgrad.cli.depth import _trained_figure

    trained = depth.trained_sweep(
        _small_data(), depths=(2,), width=6, archs=("residual",), seeds=1, epochs=1
    )
    figure = _trained_figure(trained)
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert ticks.size > 0
    assert np.all(ticks == np.round(ticks)), ticks


def test_trained_figure_names_dropped_blocks():
    from resgrad.cli.depth import _trained_figure

    trained = depth.trained_sweep(
        _small_data(), depths=(1, 3), width=6, archs=("zero",), seeds=1, epochs=1
    )
    # With alpha = 0, W2 = 0 makes every W1 gradient exactly 0 at init.
    initial = [r for r in trained if r.stage == "init"]
    assert all(np.isneginf(r.blocks["W1"].rms).all() for r in initial)
    label = _trained_figure(trained).axes[0].get_xlabel()
    assert "not drawn, a norm is exactly 0" in label
    assert "L=1, init: 1 of 1 blocks" in label
    assert "L=3, init: 3 of 3 blocks" in label
    assert "trained:" not in label


def test_spectrum_figure_defines_j_and_zeros():
    from resgrad.cli.depth import _spectrum_figure

    sweep = depth.depth_sweep((1, 4), (8,), ("plain",), 1, samples=4, spectrum_depth=4)
    panel = _spectrum_figure(sweep, 8).axes[0]
    assert "J = dz^L/dx" in panel.get_xlabel()
    labels = panel.get_legend_handles_labels()[1]
    assert all("% below resolution)" in label for label in labels)
    assert len(labels) == 2


def test_singular_values_flag_of_text_raises():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    x = np.random.default_rng(0).random((2, 4))
    with pytest.raises(TypeError, match="Expected output to be True or False"):
        depth.jacobian_singular_values(model, x, output="no")


def test_log10_ratio_names_the_quantities_it_has():
    result = depth.depth_sweep(depths=(2,), widths=(4,), seeds=1, samples=2)[0]
    with pytest.raises(ValueError, match="Unknown quantity 'W3'; expected one of: "):
        result.log10_ratio("W3")
    assert math.isfinite(result.log10_ratio("W1"))


def test_depth_errors_survive_pickling():
    # A sweep in a process pool sends its errors back pickled.
    import pickle

    for error in (
        depth.DepthOverflowError(5, 10, 32, False, "the residual network"),
        depth.SpectrumMemoryError("no room", "the plain network", 4),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert str(again) == str(error)


def test_overflow_in_short_network_names_its_length():
    model = resgrad.ResidualMLP.init(
        [4] * 4,
        post_activation="identity",
        shortcut="identity",
        alpha=1e200,
        bias=False,
    )
    x, v = depth.probe_batch(2, 4, 4, 0)
    with pytest.raises(depth.DepthOverflowError) as caught:
        depth.gradient_profile(model, x, v)
    message = str(caught.value)
    assert "within one segment of 3 blocks" in message
    assert "a smaller alpha" in message
