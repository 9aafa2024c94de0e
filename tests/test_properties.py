"""Property-based tests of the public API on random shapes, dtypes and values.

Every call either returns a correct, finite result or raises the documented
``ValueError`` or ``TypeError`` whose message names the bad value. NumPy's
floating-point warnings are turned into errors here, so an overflow that
would yield a silent NaN or infinity fails the test.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import reference
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import resgrad
from resgrad import attacks, saliency
from resgrad.activations import ACTIVATIONS
from resgrad.losses import LOSSES

# derandomize makes every run draw the same examples, so a failure always
# reproduces; database=None keeps hypothesis from writing into the tree.
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = ("float32", "float64")
# Relative error allowed against the float64 autograd reference.
TOLERANCE = {"float32": 2e-3, "float64": 1e-8}


@st.composite
def models(draw, dtype=None, activations=tuple(ACTIVATIONS)):
    """Draw a small network: 1 to 3 blocks of widths 1 to 4, random settings."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    hidden = draw(
        st.lists(st.integers(1, 4), min_size=len(sizes) - 1, max_size=len(sizes) - 1)
    )
    shortcuts = [
        draw(
            st.sampled_from(
                ("learned", "none", "identity") if p == q else ("learned", "none")
            )
        )
        for p, q in itertools.pairwise(sizes)
    ]
    return resgrad.ResidualMLP.init(
        sizes,
        hidden,
        activation=draw(st.sampled_from(activations)),
        shortcut=shortcuts,
        bias=draw(st.booleans()),
        dtype=dtype or draw(st.sampled_from(DTYPES)),
        seed=draw(st.integers(0, 2**16)),
    )


def batches(model, rows=None, elements=None):
    """Draw an input batch ``(n, p_0)`` in the model's dtype, ``n`` from
    ``rows`` (0 to 4 by default, so empty batches and batches of one occur)."""
    if rows is None:
        rows = st.integers(0, 4)
    if elements is None:
        elements = st.floats(-4, 4, width=32)
    return rows.flatmap(
        lambda n: hnp.arrays(model.dtype, (n, model.sizes[0]), elements=elements)
    )


def labels_for(model, n, seed):
    return np.random.default_rng(seed).integers(0, model.n_classes, size=n)


def strict(call, *args, **kwargs):
    """Run ``call`` with NumPy's overflow and invalid-value warnings as errors.

    Underflow to zero or a subnormal is the correct rounding, so it stays quiet.
    """
    with (
        warnings.catch_warnings(),
        np.errstate(over="raise", invalid="raise", divide="raise"),
    ):
        warnings.simplefilter("error", RuntimeWarning)
        return call(*args, **kwargs)


def assert_finite(value, name):
    values = reference.to_numpy(value)
    assert np.isfinite(values).all(), f"{name} contains NaN or infinity"


def wide_box(dtype):
    """Return attack bounds that contain every input of the magnitude tests."""
    edge = float(np.finfo(dtype).max) ** 0.5
    return (-edge, edge)


# The public functions that take a model, a batch x and labels y, with the
# part of the result to check for finiteness and shape.
CALLS = {
    "gradients_backprop": lambda m, x, y: resgrad.gradients(m, x, y).input,
    "gradients_product": lambda m, x, y: (
        resgrad.gradients(m, x, y, method="product").input
    ),
    "input_gradient": lambda m, x, y: resgrad.input_gradient(m, x, y)[1],
    "per_sample_gradients": lambda m, x, y: resgrad.per_sample_gradients(m, x, y).loss,
    "per_sample_norms": lambda m, x, y: resgrad.per_sample_norms(m, x, y),
    "input_jacobian": lambda m, x, y: resgrad.input_jacobian(m, x),
    "forward": lambda m, x, y: m(x),
    "predict": lambda m, x, y: m.predict(x),
    "vanilla_gradient": lambda m, x, y: saliency.vanilla_gradient(m, x, y),
    "fgsm": lambda m, x, y: attacks.fgsm(m, x, y, 0.1, bounds=wide_box(m.dtype)).x_adv,
}


# Correct results on ordinary inputs.


@PROPERTY
@given(data=st.data())
def test_gradients_match_autograd(data):
    model = data.draw(models())
    x = data.draw(batches(model, rows=st.integers(1, 4)))
    y = labels_for(model, x.shape[0], data.draw(st.integers(0, 99)))
    loss = data.draw(st.sampled_from(["cross_entropy", "squared_error", "score"]))
    method = data.draw(st.sampled_from(["backprop", "product"]))

    grads = strict(resgrad.gradients, model, x, y, loss, method=method)
    expected = reference.autograd_gradients(model, x, y, loss)
    reference.assert_gradients_close(
        reference.gradient_dict(grads), expected, TOLERANCE[str(model.dtype)], method
    )


@PROPERTY
@given(data=st.data())
def test_per_sample_parts_sum_to_total(data):
    model = data.draw(models(dtype="float64"))
    x = data.draw(batches(model))
    y = labels_for(model, x.shape[0], data.draw(st.integers(0, 99)))

    per_sample = strict(resgrad.per_sample_gradients, model, x, y)
    norms = strict(resgrad.per_sample_norms, model, x, y)
    total = strict(resgrad.gradients, model, x, y, reduction="sum")

    assert per_sample.loss.shape == (x.shape[0],)
    stacked = per_sample.arrays()
    squares = np.zeros(x.shape[0])
    for name, value in total.arrays().items():
        assert stacked[name].shape == (x.shape[0], *value.shape)
        np.testing.assert_allclose(stacked[name].sum(axis=0), value, atol=1e-12)
        squares += (stacked[name] ** 2).reshape(x.shape[0], value.size).sum(axis=1)
    np.testing.assert_allclose(norms, np.sqrt(squares), rtol=1e-10, atol=1e-300)


@PROPERTY
@given(data=st.data())
def test_jacobian_and_saliency_match_autograd(data):
    model = data.draw(models())
    x = data.draw(batches(model, rows=st.integers(1, 3)))
    mode = data.draw(st.sampled_from(["auto", "reverse", "forward", "product"]))
    target = labels_for(model, x.shape[0], data.draw(st.integers(0, 99)))

    jacobian = strict(resgrad.input_jacobian, model, x, mode)
    expected = reference.autograd_jacobian(model, x)
    tolerance = TOLERANCE[str(model.dtype)]
    assert jacobian.shape == (x.shape[0], model.n_classes, model.sizes[0])
    assert reference.relative_error(jacobian, expected) <= tolerance
    vanilla = strict(saliency.vanilla_gradient, model, x, target)
    rows = expected[np.arange(x.shape[0]), target]
    assert reference.relative_error(vanilla, rows) <= tolerance


@PROPERTY
@given(data=st.data())
def test_forward_matches_torch(data):
    model = data.draw(models())
    x = data.draw(batches(model))

    logits = strict(model.logits, x)
    params = {k: v.detach() for k, v in reference.torch_parameters(model).items()}
    z_L, _ = reference.torch_network(
        model, params, torch.from_numpy(x.astype(np.float64))
    )
    assert logits.shape == (x.shape[0], model.n_classes)
    assert logits.dtype == model.dtype
    assert reference.relative_error(logits, z_L.numpy()) <= TOLERANCE[str(model.dtype)]


@PROPERTY
@given(data=st.data())
def test_empty_batch_gives_empty_results(data):
    model = data.draw(models())
    x = np.zeros((0, model.sizes[0]), dtype=model.dtype)
    y = np.zeros(0, dtype=np.int64)

    for name, call in CALLS.items():
        result = reference.to_numpy(strict(call, model, x, y))
        assert result.shape[0] == 0, name


# Invalid inputs: non-finite values, dtypes, shapes and labels.

NON_FINITE = (math.nan, math.inf, -math.inf)


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(PROPERTY, max_examples=5)
@given(data=st.data())
def test_non_finite_input_rejected(data, name):
    model = data.draw(models())
    x = data.draw(batches(model, rows=st.integers(1, 4)))
    row = data.draw(st.integers(0, x.shape[0] - 1))
    column = data.draw(st.integers(0, x.shape[1] - 1))
    x[row, column] = data.draw(st.sampled_from(NON_FINITE))
    before = x.copy()
    y = labels_for(model, x.shape[0], 0)

    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value"):
        strict(CALLS[name], model, x, y)
    np.testing.assert_array_equal(x, before)


INVALID_DTYPES = ("int64", "int32", "uint8", "bool", "float16", "complex128")


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(PROPERTY, max_examples=5)
@given(data=st.data())
def test_wrong_dtype_rejected(data, name):
    model = data.draw(models())
    dtype = data.draw(
        st.sampled_from(
            INVALID_DTYPES + tuple(d for d in DTYPES if d != str(model.dtype))
        )
    )
    x = np.ones((2, model.sizes[0]), dtype=dtype)
    y = labels_for(model, 2, 0)

    with pytest.raises(TypeError, match=f"got {dtype}"):
        strict(CALLS[name], model, x, y)


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(PROPERTY, max_examples=5)
@given(data=st.data())
def test_wrong_shape_rejected(data, name):
    model = data.draw(models())
    shape = data.draw(
        st.sampled_from(
            [(model.sizes[0],), (1, model.sizes[0] + 1), (1, 1, model.sizes[0]), ()]
        )
    )
    x = np.ones(shape, dtype=model.dtype)
    y = labels_for(model, 1, 0)

    with pytest.raises(ValueError, match=r"Expected x (of shape|to have)"):
        strict(CALLS[name], model, x, y)


LABEL_CALLS = ("gradients_backprop", "input_gradient", "per_sample_norms", "fgsm")


@pytest.mark.parametrize("name", LABEL_CALLS)
@settings(PROPERTY, max_examples=5)
@given(data=st.data())
def test_label_out_of_range_rejected(data, name):
    model = data.draw(models())
    x = data.draw(batches(model, rows=st.integers(1, 4)))
    y = labels_for(model, x.shape[0], 0)
    bad = data.draw(st.sampled_from([-1, model.n_classes, 2**40]))
    y[data.draw(st.integers(0, x.shape[0] - 1))] = bad

    with pytest.raises(ValueError, match=f"{bad}"):
        strict(CALLS[name], model, x, y)


@pytest.mark.parametrize("name", LABEL_CALLS)
@settings(PROPERTY, max_examples=5)
@given(data=st.data())
def test_float_or_bool_labels_rejected(data, name):
    model = data.draw(models())
    x = data.draw(batches(model, rows=st.integers(1, 4)))
    dtype = data.draw(st.sampled_from(["bool", "float32", "float64"]))
    y = np.zeros(x.shape[0], dtype=dtype)

    with pytest.raises(
        TypeError, match=f"integer class labels in y, got dtype {dtype}"
    ):
        strict(CALLS[name], model, x, y)


# Huge and tiny magnitudes.


def magnitudes(dtype):
    """Draw a scale from the smallest subnormal up to the fourth root of the
    largest float, where the small networks drawn here do not overflow."""
    info = np.finfo(dtype)
    return st.sampled_from(
        [
            float(info.smallest_subnormal),
            float(info.tiny),
            1e-20,
            1e4,
            float(info.max) ** 0.25,
        ]
    )


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_extreme_magnitudes_stay_finite(data, name):
    model = data.draw(models())
    scale = data.draw(magnitudes(model.dtype))
    elements = st.floats(-1, 1, width=32)
    x = data.draw(batches(model, rows=st.integers(1, 3), elements=elements))
    x = (x * scale).astype(model.dtype)
    y = labels_for(model, x.shape[0], 0)

    assert_finite(strict(CALLS[name], model, x, y), name)


def test_per_sample_norms_of_huge_gradients():
    model = resgrad.ResidualMLP.init([2, 2, 2], 2, shortcut="none", seed=0)
    x = np.full((1, 2), 1e160)
    y = np.array([0])
    norms = strict(resgrad.per_sample_norms, model, x, y)
    assert np.isfinite(norms).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_overflow_is_reported(dtype):
    model = resgrad.ResidualMLP.init(
        [4, 4, 4, 4, 4], 4, activation="identity", seed=1, dtype=dtype
    )
    x = np.full((1, 4), np.finfo(dtype).max / 2, dtype=dtype)
    with pytest.raises(resgrad.ForwardOverflowError, match="overflow") as raised:
        strict(model.logits, x)
    # float64 is the widest dtype, so it is suggested only for float32.
    assert ("use float64" in str(raised.value)) == (dtype == "float32")
    # The input overflows in the first block's W1 a, which the message
    # counts from 1, as the docs count blocks.
    assert "in block 1 of 4 (counting from 1)" in str(raised.value)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_is_named(value):
    model = resgrad.ResidualMLP.init([4, 4, 4, 3], 3, seed=1)
    model.blocks[1].W2[0, 0] = value
    x = np.full((2, 4), 0.5)
    message = "the model's blocks.1.W2 holds NaN or Inf values"
    with pytest.raises(resgrad.ForwardOverflowError, match=message):
        resgrad.gradients(model, x, np.array([0, 1]))


# Softmax and sigmoid at logits of magnitude 1e4.

LARGE_LOGITS = st.floats(-1e4, 1e4, width=32) | st.sampled_from([-1e4, 1e4])


@PROPERTY
@given(
    dtype=st.sampled_from(DTYPES),
    logits=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5),
        elements=LARGE_LOGITS,
    ),
    seed=st.integers(0, 99),
)
def test_cross_entropy_large_logits(dtype, logits, seed):
    logits = logits.astype(dtype)
    y = np.random.default_rng(seed).integers(0, logits.shape[1], size=logits.shape[0])
    loss = LOSSES["cross_entropy"]

    value = strict(loss.value, np, logits, y)
    grad = strict(loss.grad, np, logits, y)

    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits.astype(np.float64)),
        torch.from_numpy(y),
        reduction="none",
    ).numpy()
    assert_finite(value, "cross-entropy")
    assert_finite(grad, "cross-entropy gradient")
    np.testing.assert_allclose(
        value, expected, rtol=1e-5, atol=1e-5 * np.abs(logits).max()
    )
    probabilities = grad + np.eye(logits.shape[1])[y]
    assert (probabilities >= 0).all()
    assert (probabilities <= 1).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


@PROPERTY
@given(
    dtype=st.sampled_from(DTYPES),
    name=st.sampled_from(["sigmoid", "silu", "softplus", "elu", "tanh"]),
    u=hnp.arrays(np.float64, st.integers(1, 8), elements=LARGE_LOGITS),
)
def test_activation_large_inputs(dtype, name, u):
    u = u.astype(dtype)
    activation = ACTIVATIONS[name]

    value = strict(activation.value, np, u)
    derivative = strict(activation.derivative, np, u)

    assert value.dtype == u.dtype
    assert_finite(value, name)
    assert_finite(derivative, f"{name} derivative")
    if name == "sigmoid":
        assert ((value >= 0) & (value <= 1)).all()
        expected = torch.sigmoid(torch.from_numpy(u.astype(np.float64))).numpy()
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-30)


@PROPERTY
@given(data=st.data(), output=st.sampled_from(["identity", "sigmoid"]))
def test_model_large_logits(data, output):
    # Weights scaled so that the logits reach about 1e4.
    base = data.draw(models(activations=("relu", "tanh", "sigmoid")))
    model = resgrad.ResidualMLP(
        base.blocks, activation=base.activation, output_activation=output
    )
    arrays = {k: v * 30 for k, v in model.arrays().items()}
    model = model.replace_arrays(arrays)
    x = data.draw(
        batches(model, rows=st.integers(1, 3), elements=st.floats(-10, 10, width=32))
    )
    y = labels_for(model, x.shape[0], 0)

    for name in ("gradients_backprop", "input_gradient", "forward"):
        assert_finite(strict(CALLS[name], model, x, y), name)


# Attacks and saliency.


@PROPERTY
@given(data=st.data(), eps=st.floats(0, 1))
def test_attacks_stay_in_ball_and_box(data, eps):
    model = data.draw(models())
    x = data.draw(batches(model, elements=st.floats(0, 1, width=32)))
    y = labels_for(model, x.shape[0], 0)
    before = x.copy()

    for name, run in (
        ("fgsm", lambda: attacks.fgsm(model, x, y, eps)),
        ("pgd", lambda: attacks.pgd(model, x, y, eps, steps=3, seed=0)),
    ):
        result = strict(run)
        x_adv = result.x_adv
        slack = 4 * np.finfo(model.dtype).eps
        assert x_adv.shape == x.shape, name
        assert x_adv.dtype == x.dtype, name
        assert_finite(x_adv, name)
        assert (np.abs(x_adv - x) <= eps + slack).all(), name
        assert ((x_adv >= 0) & (x_adv <= 1)).all(), name
    np.testing.assert_array_equal(x, before)


@PROPERTY
@given(
    data=st.data(),
    eps=st.sampled_from([-1e-9, -1.0, math.nan, math.inf, -math.inf]),
    name=st.sampled_from(["fgsm", "pgd", "bim"]),
)
def test_attacks_reject_bad_eps(data, eps, name):
    model = data.draw(models())
    x = np.full((1, model.sizes[0]), 0.5, dtype=model.dtype)
    y = labels_for(model, 1, 0)

    with pytest.raises(ValueError, match=r"eps"):
        strict(attacks.ATTACKS[name], model, x, y, eps)


@PROPERTY
@given(data=st.data(), steps=st.integers(1, 8))
def test_integrated_gradients_complete(data, steps):
    model = data.draw(models(dtype="float64", activations=("tanh", "softplus", "silu")))
    x = data.draw(batches(model, rows=st.integers(1, 3)))

    result = strict(saliency.integrated_gradients, model, x, steps=steps)

    assert result.attributions.shape[0] == x.shape[0]
    assert_finite(result.attributions, "attributions")
    assert_finite(result.gap, "completeness gap")


@PROPERTY
@given(data=st.data(), target=st.sampled_from([-1, 99, 1.5, np.float64(2.0), "x"]))
def test_saliency_rejects_bad_target(data, target):
    model = data.draw(models())
    x = np.zeros((1, model.sizes[0]), dtype=model.dtype)

    with pytest.raises((ValueError, TypeError), match=str(target)):
        strict(saliency.vanilla_gradient, model, x, target)


# Saving and loading.

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@PROPERTY
@given(
    data=st.data(),
    metadata=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
)
def test_save_load_round_trip(tmp_path_factory, data, metadata):
    model = data.draw(models())
    arrays = {
        key: data.draw(
            hnp.arrays(
                value.dtype,
                value.shape,
                elements=st.floats(-1e30, 1e30).map(np.float32),
            )
        )
        for key, value in model.arrays().items()
    }
    model = model.replace_arrays(arrays)
    path = tmp_path_factory.mktemp("save") / "model.npz"

    resgrad.save(model, path, metadata=metadata)
    loaded = resgrad.load(path)

    assert loaded.config() == model.config()
    for key, value in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[key], value)
        assert loaded.arrays()[key].dtype == value.dtype
    assert resgrad.read_metadata(path) == json.loads(json.dumps(metadata))


@PROPERTY
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_save_rejects_non_finite_metadata(tmp_path_factory, bad):
    path = tmp_path_factory.mktemp("save") / "model.npz"
    model = resgrad.ResidualMLP.init([2, 2], seed=0)

    with pytest.raises(TypeError, match="not JSON-serialisable"):
        resgrad.save(model, path, metadata={"score": bad})
    assert not path.exists()


@PROPERTY
@given(data=st.data())
def test_model_rejects_non_finite_weights(data):
    model = data.draw(models())
    arrays = model.arrays()
    key = data.draw(st.sampled_from(sorted(arrays)))
    bad = arrays[key].copy()
    bad.reshape(-1)[0] = data.draw(st.sampled_from(NON_FINITE))

    with pytest.raises(ValueError, match=rf"{key} contains 1 NaN or infinite"):
        model.replace_arrays({**arrays, key: bad})


@PROPERTY
@given(data=st.data(), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_model_file_rejected(tmp_path_factory, data, cut):
    model = data.draw(models())
    path = tmp_path_factory.mktemp("save") / "model.npz"
    resgrad.save(model, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(cut * len(raw))])

    with pytest.raises(ValueError, match="is not a resgrad model file"):
        resgrad.load(path)
