"""Per-sample losses and ``dY/da^L`` against PyTorch."""

import math

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F

import resgrad

LOSSES = list(resgrad.LOSSES)


def _outputs(n=8, classes=5, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, classes)), rng.integers(0, classes, n)


def _torch_value_and_grad(name, out, y):
    out_t = torch.from_numpy(out.copy()).requires_grad_(True)
    y_t = torch.from_numpy(y)
    values = reference.torch_losses(name, out_t, out_t, y_t)
    (grad,) = torch.autograd.grad(values.sum(), [out_t])
    return values.detach().numpy(), grad.numpy()


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("scale", [0.1, 3.0, 300.0])
def test_loss_matches_torch(name, scale):
    """Values and ``dY/d out`` equal autograd, also for logits of size 300,
    where an unshifted softmax would overflow."""
    out, y = _outputs(scale=scale)
    loss = resgrad.get_loss(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.value(xp_numpy, out, y)
        grad = loss.grad(xp_numpy, out, y)
    expected_value, expected_grad = _torch_value_and_grad(name, out, y)
    assert value.shape == (8,)
    assert grad.shape == (8, 5)
    assert reference.relative_error(value, expected_value) <= 1e-13
    assert reference.relative_error(grad, expected_grad) <= 1e-13


def test_cross_entropy_is_log_softmax_of_label():
    out, y = _outputs()
    value = resgrad.get_loss("cross_entropy").value(xp_numpy, out, y)
    expected = F.cross_entropy(
        torch.from_numpy(out), torch.from_numpy(y), reduction="none"
    )
    assert reference.relative_error(value, expected) <= 1e-14


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    out, y = _outputs()
    grad = resgrad.get_loss("cross_entropy").grad(xp_numpy, out, y)
    softmax = np.exp(out) / np.exp(out).sum(axis=1, keepdims=True)
    assert reference.relative_error(grad, softmax - np.eye(5)[y]) <= 1e-14
    assert np.max(np.abs(grad.sum(axis=1))) <= 1e-15


def test_squared_error_with_labels_uses_one_hot_target():
    out, y = _outputs()
    loss = resgrad.get_loss("squared_error")
    target = np.eye(5)[y]
    assert np.array_equal(
        loss.value(xp_numpy, out, y), loss.value(xp_numpy, out, target)
    )
    assert np.array_equal(loss.grad(xp_numpy, out, y), out - target)


def test_score_reads_one_logit():
    out, y = _outputs()
    loss = resgrad.get_loss("score")
    assert loss.on_logits
    assert np.array_equal(loss.value(xp_numpy, out, y), out[np.arange(8), y])
    assert np.array_equal(loss.grad(xp_numpy, out, y), np.eye(5)[y])


# Losses inside the network.


@pytest.mark.parametrize("method", ["backprop", "product"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_squared_error_with_float_target_matches_autograd(method, reduction):
    model = reference.random_model(3, "tanh", "learned", output_activation="sigmoid")
    x, _ = reference.random_batch(model, 6)
    target = np.random.default_rng(2).uniform(size=(6, 3))
    grads = resgrad.gradients(model, x, target, "squared_error", reduction, method)
    expected = reference.autograd_gradients(
        model, x, target, "squared_error", reduction
    )
    reference.assert_gradients_close(reference.gradient_dict(grads), expected, 1e-12)


@pytest.mark.parametrize("method", ["backprop", "product"])
def test_score_ignores_output_activation(method):
    """The score is ``z^L_y``, taken before ``g_out``, so the gradients do
    not depend on the output activation."""
    model = reference.random_model(3, "relu", "none", output_activation="sigmoid")
    x, y = reference.random_batch(model, 5)
    plain = resgrad.ResidualMLP(model.blocks, "relu", output_activation="identity")
    with_output = reference.gradient_dict(
        resgrad.gradients(model, x, y, "score", method=method)
    )
    without = reference.gradient_dict(
        resgrad.gradients(plain, x, y, "score", method=method)
    )
    reference.assert_gradients_close(with_output, without, 0.0)


def test_cross_entropy_on_huge_logits_is_finite():
    model = reference.random_model(1, "relu", "learned")
    model = model.replace_arrays({"blocks.0.W2": 1e3 * model.blocks[0].W2})
    x, y = reference.random_batch(model, 6)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        grads = resgrad.gradients(model, x, y)
    expected = reference.autograd_gradients(model, x, y)
    assert np.max(np.abs(model.logits(x))) > 100
    reference.assert_gradients_close(reference.gradient_dict(grads), expected, 1e-12)


# Invalid arguments.


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match="Unknown loss 'hinge'; expected one of"):
        resgrad.get_loss("hinge")


def test_non_string_loss_raises():
    with pytest.raises(ValueError, match="Unknown loss 3"):
        resgrad.get_loss(3)


@pytest.fixture
def small():
    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 4)
    return model, x, y


def test_target_of_wrong_shape_raises(small):
    model, x, _ = small
    with pytest.raises(
        ValueError,
        match=r"Expected y as a target of shape \(4, 3\), one row per row of x, got \(4, 2\)",
    ):
        resgrad.gradients(model, x, np.zeros((4, 2)), "squared_error")


def test_target_of_wrong_dtype_raises(small):
    model, x, _ = small
    with pytest.raises(
        TypeError,
        match=r"dtype float64 \(the model's dtype\), got float32; cast it with "
        r"y.astype\(np.float64\)",
    ):
        resgrad.gradients(model, x, np.zeros((4, 3), np.float32), "squared_error")


@pytest.mark.parametrize("dtype", [np.int64, bool])
def test_one_hot_target_of_integers_names_cast(small, dtype):
    model, x, y = small
    one_hot = np.eye(3, dtype=dtype)[y]
    with pytest.raises(
        TypeError,
        match=r"Expected y as 4 integer labels or as a float target of dtype "
        r"float64 .* cast it with y.astype\(np.float64\)",
    ):
        resgrad.gradients(model, x, one_hot, "squared_error")


def test_one_hot_target_of_one_sample(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"Expected y as 1 integer label or as a"):
        resgrad.gradients(
            model, x[:1], np.eye(3, dtype=np.int64)[y[:1]], "squared_error"
        )


@pytest.mark.parametrize("loss", ["cross_entropy", "score"])
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_row_target_label_loss_message(small, loss, dtype):
    model, x, y = small
    target = np.eye(3, dtype=dtype)[y]
    with pytest.raises(
        ValueError,
        match=rf"got shape \(4, 3\); loss='{loss}' takes labels, so pass "
        r"y.argmax\(axis=1\) for one-hot rows, or use loss='squared_error' for a "
        r"float target of shape \(4, 3\)\.",
    ):
        resgrad.gradients(model, x, target, loss)
    grads = resgrad.gradients(model, x, target.argmax(axis=1), loss)
    assert grads.input.shape == x.shape


def test_label_column_names_reshape(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"so pass y.reshape\(-1\) for a column"):
        resgrad.gradients(model, x, y[:, None])


def test_big_endian_target_names_byte_order(small):
    model, x, y = small
    target = np.eye(3)[y].astype(">f8")
    with pytest.raises(TypeError, match=r"byte order, got the big-endian dtype >f8"):
        resgrad.gradients(model, x, target, "squared_error")


def test_torch_target_of_wrong_dtype_names_cast(small):
    model, x, y = small
    target = torch.eye(3, dtype=torch.float32)[torch.as_tensor(y)]
    with pytest.raises(TypeError, match=r"cast it with y.to\(torch.float64\)"):
        resgrad.gradients(
            model.convert(torch), torch.as_tensor(x), target, "squared_error"
        )


def test_non_finite_target_raises(small):
    model, x, _ = small
    target = np.zeros((4, 3))
    target[1, 2] = np.nan
    with pytest.raises(ValueError, match="the target contains 1 NaN or infinite value"):
        resgrad.gradients(model, x, target, "squared_error")


def test_squared_error_labels_outside_classes_raise(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"Label 3 in y is outside \[0, 3\)"):
        resgrad.gradients(model, x, np.array([0, 1, 3, 2]), "squared_error")


def test_score_class_outside_classes_raises(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"Label 5 in y is outside \[0, 3\)"):
        resgrad.input_gradient(model, x, np.full(4, 5), "score")


def test_cross_entropy_grad_matches_plain_autograd():
    # Away from p_y = 1, the reference's exact form and torch's own
    # cross_entropy give the same gradient.
    out, y = _outputs(scale=3.0)
    out_t = torch.from_numpy(out.copy()).requires_grad_(True)
    F.cross_entropy(out_t, torch.from_numpy(y), reduction="sum").backward()
    grad = resgrad.get_loss("cross_entropy").grad(xp_numpy, out, y)
    np.testing.assert_allclose(grad, out_t.grad.numpy(), rtol=1e-12, atol=1e-15)


def _constant_logits_model(namespace, dtype, logits):
    """Return a 1-block network whose logits are ``logits`` for any input."""
    classes = len(logits)
    block = resgrad.Block(
        W1=np.zeros((1, 2)),
        W2=np.zeros((classes, 1)),
        W3=np.zeros((classes, 2)),
        b1=np.zeros(1),
        b2=np.asarray(logits, dtype=np.float64),
    )
    model = resgrad.ResidualMLP([block], activation="identity")
    return model.convert(namespace, dtype=dtype)


def _label_error(namespace, dtype, logits):
    """Return ``dY/dz^L`` of label 0 at ``logits``, by resgrad.gradients."""
    xp = __import__(namespace)
    model = _constant_logits_model(xp, dtype, logits)
    x = xp.asarray(np.zeros((1, 2)), dtype=getattr(xp, dtype))
    grads = resgrad.gradients(model, x, xp.asarray(np.array([0])), reduction="sum")
    return np.asarray(grads.blocks[0].b2, dtype=np.float64)


@pytest.mark.parametrize("namespace", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_grad_exact_at_confident_label(namespace, dtype):
    # At logits (20, 0, 0) and label 0, p_0 rounds to 1 in float32, so
    # p_0 - 1 would give 0 where the gradient is -2 e^-20 / (1 + 2 e^-20).
    error = _label_error(namespace, dtype, [20.0, 0.0, 0.0])
    other = np.exp(-20.0) / (1 + 2 * np.exp(-20.0))
    np.testing.assert_allclose(error, [-2 * other, other, other], rtol=1e-6)


@pytest.mark.parametrize("namespace", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_loss_exact_at_confident_label(namespace, dtype):
    # log(1 + S) rounds S = e^-30 + e^-105 away: 1e-3 off in float64, and 0
    # in float32.
    xp = __import__(namespace)
    model = _constant_logits_model(xp, dtype, [45.0, -60.0, 15.0])
    x = xp.asarray(np.zeros((1, 2)), dtype=getattr(xp, dtype))
    loss = resgrad.gradients(model, x, xp.asarray(np.array([0]))).loss
    exact = math.log1p(math.exp(-30.0) + math.exp(-105.0))
    np.testing.assert_allclose(
        float(loss), exact, rtol=1e-6 if dtype == "float32" else 1e-15
    )


@pytest.mark.parametrize("namespace", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_grad_exact_at_unlikely_label(namespace, dtype):
    # With 4096 classes and p_0 near 1e-6, the other p_k sum to nearly 1,
    # and in float32 their rounded sum is further from 1 - p_0 than p_0 - 1
    # is, so p_0 - 1 is the precise form there.
    logits = np.random.default_rng(1).normal(size=4096).astype(dtype)
    logits[0] = -8.0
    error = _label_error(namespace, dtype, logits)
    logits = logits.astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert -1 <= error[0] < 0
    np.testing.assert_allclose(error[0], p[0] - 1, rtol=1e-7, atol=0)
