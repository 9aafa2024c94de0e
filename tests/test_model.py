"""The residual network: forward pass, construction and validation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import reference
import torch

import resgrad
import resgrad.torch

ACTIVATIONS = list(resgrad.ACTIVATIONS)
SHORTCUTS = ("learned", "identity", "none")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("output", ["identity", "activation"])
def test_forward_matches_torch(activation, shortcut, output):
    output = activation if output == "activation" else output
    model = reference.random_model(4, activation, shortcut, output_activation=output)
    x, _ = reference.random_batch(model, 7)
    params = {k: v.detach() for k, v in reference.torch_parameters(model).items()}
    z_L, a_L = reference.torch_network(model, params, torch.asarray(x))
    assert reference.relative_error(model(x), a_L) <= 1e-14
    assert reference.relative_error(model.logits(x), z_L) <= 1e-14


def test_trace_holds_every_intermediate():
    model = reference.random_model(3, "tanh", "learned", post_activation="relu")
    x, _ = reference.random_batch(model, 4)
    traces, a_L = model.trace(x)
    assert len(traces) == 3
    for index, (trace, block) in enumerate(zip(traces, model.blocks)):
        assert trace.a_prev.shape == (4, model.sizes[index])
        assert trace.u.shape == (4, model.hidden[index])
        assert trace.h.shape == (4, model.hidden[index])
        assert trace.z.shape == (4, model.sizes[index + 1])
        np.testing.assert_array_equal(trace.u, trace.a_prev @ block.W1.T + block.b1)
        np.testing.assert_array_equal(trace.h, np.tanh(trace.u))
    for index in range(1, 3):
        np.testing.assert_array_equal(
            traces[index].a_prev, np.maximum(traces[index - 1].z, 0)
        )
    np.testing.assert_array_equal(a_L, traces[-1].z)


def test_identity_shortcut_adds_input():
    model = reference.random_model(1, "relu", "identity")
    x, _ = reference.random_batch(model, 3)
    trace = model.trace(x)[0][0]
    block = model.blocks[0]
    np.testing.assert_allclose(trace.z, trace.h @ block.W2.T + block.b2 + x, rtol=1e-15)


def test_plain_block_has_no_shortcut():
    model = reference.random_model(1, "relu", "none")
    x, _ = reference.random_batch(model, 3)
    trace = model.trace(x)[0][0]
    block = model.blocks[0]
    np.testing.assert_array_equal(trace.z, trace.h @ block.W2.T + block.b2)


def test_predict_is_argmax_of_logits():
    model = reference.random_model(2, "sigmoid", "learned", output_activation="sigmoid")
    x, _ = reference.random_batch(model, 20)
    np.testing.assert_array_equal(model.predict(x), np.argmax(model.logits(x), axis=1))


def _one_block(output_activation, logits):
    """Return a 2-input network whose logits at x = [1, 0] are ``logits``."""
    block = resgrad.Block(
        W1=np.zeros((1, 2)),
        W2=np.zeros((2, 1)),
        W3=np.array([[logits[0], 0.0], [logits[1], 0.0]]),
        shortcut="learned",
    )
    return resgrad.ResidualMLP([block], output_activation=output_activation)


def test_predict_follows_probabilities_for_silu_output():
    # silu(-1.28) = -0.278 lies below silu(-20) = -4e-8, so softmax(a^L)
    # makes class 1 the more probable one although its logit is lower.
    model = _one_block("silu", [-1.28, -20.0])
    x = np.array([[1.0, 0.0]])
    probabilities = np.exp(model(x)) / np.exp(model(x)).sum()
    assert probabilities[0, 1] > 0.5
    np.testing.assert_array_equal(model.predict(x), [1])
    assert resgrad.training.accuracy(model, x, np.array([1])) == 1.0


def test_predict_breaks_relu_output_ties_by_logits():
    # relu maps both negative logits to 0; the larger logit wins the tie.
    model = _one_block("relu", [-5.0, -0.1])
    x = np.array([[1.0, 0.0]])
    np.testing.assert_array_equal(model(x), [[0.0, 0.0]])
    np.testing.assert_array_equal(model.predict(x), [1])


@pytest.mark.parametrize("xp", ["numpy", "torch", 3])
def test_convert_rejects_xp_not_module(xp):
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    with pytest.raises(TypeError, match="Expected xp as an array module such as"):
        model.convert(xp)


def test_gradients_of_empty_batch_are_zero():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    grads = resgrad.gradients(model, np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert float(grads.loss) == 0.0
    assert grads.input.shape == (0, 4)
    for name, value in grads.arrays().items():
        assert not np.any(value), name


# Construction.


def test_init_sets_widths_and_defaults():
    model = resgrad.ResidualMLP.init([6, 4, 5, 2], hidden=[3, 7, 8])
    assert model.sizes == [6, 4, 5, 2]
    assert model.hidden == [3, 7, 8]
    assert model.depth == 3
    assert model.n_classes == 2
    assert model.activation == model.post_activation == "relu"
    assert model.output_activation == "identity"
    assert model.dtype == np.float64


def test_init_hidden_defaults_to_output_widths():
    assert resgrad.ResidualMLP.init([6, 4, 5]).hidden == [4, 5]
    assert resgrad.ResidualMLP.init([6, 4, 5], hidden=9).hidden == [9, 9]


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_init_shortcut_and_bias_choose_arrays(shortcut):
    sizes = [4, 4, 4]
    with_bias = resgrad.ResidualMLP.init(sizes, shortcut=shortcut, bias=True)
    without = resgrad.ResidualMLP.init(sizes, shortcut=shortcut, bias=False)
    expected = {"W1", "W2", "b1", "b2"} | ({"W3"} if shortcut == "learned" else set())
    assert {k.split(".")[-1] for k in with_bias.arrays()} == expected
    assert {k.split(".")[-1] for k in without.arrays()} == expected - {"b1", "b2"}
    assert all(block.shortcut == shortcut for block in with_bias.blocks)


def test_init_is_reproducible_across_dtypes_and_namespaces():
    first = resgrad.ResidualMLP.init([5, 4, 3], seed=7)
    again = resgrad.ResidualMLP.init([5, 4, 3], seed=7)
    single = resgrad.ResidualMLP.init([5, 4, 3], seed=7, dtype="float32", xp=torch)
    other = resgrad.ResidualMLP.init([5, 4, 3], seed=8)
    for name, value in first.arrays().items():
        np.testing.assert_array_equal(value, again.arrays()[name])
        np.testing.assert_allclose(single.arrays()[name].numpy(), value, rtol=1e-7)
    assert not np.array_equal(first.blocks[0].W1, other.blocks[0].W1)


def test_init_alpha_scales_residual_branch():
    base = resgrad.ResidualMLP.init([5, 4, 3], seed=1)
    half = resgrad.ResidualMLP.init([5, 4, 3], seed=1, alpha=0.5)
    zero = resgrad.ResidualMLP.init([5, 4, 3], seed=1, alpha=0.0)
    for index in range(2):
        np.testing.assert_array_equal(
            half.blocks[index].W2, 0.5 * base.blocks[index].W2
        )
        assert not np.any(zero.blocks[index].W2)
        np.testing.assert_array_equal(half.blocks[index].W1, base.blocks[index].W1)


@pytest.mark.parametrize("init", ["he", "glorot", "orthogonal"])
def test_init_scheme_scale(init):
    """He draws variance 2 / fan_in, Glorot 2 / (fan_in + fan_out), and the
    orthogonal init sqrt(2) times orthonormal columns."""
    model = resgrad.ResidualMLP.init([200, 50, 3], hidden=[60, 20], init=init, seed=0)
    # W1 is (60, 200): 12000 draws estimate the variance to about 1.3%.
    W1 = model.blocks[0].W1
    if init == "he":
        assert abs(np.var(W1) * 200 / 2 - 1) < 0.05
    elif init == "glorot":
        assert abs(np.var(W1) * 260 / 2 - 1) < 0.05
    else:
        np.testing.assert_allclose(W1 @ W1.T, 2 * np.eye(60), atol=1e-12)


def test_config_is_json_and_describes_model():
    model = reference.random_model(
        2, "elu", "none", bias=False, output_activation="elu"
    )
    config = json.loads(json.dumps(model.config()))
    assert config == {
        "sizes": [5, 7, 3],
        "hidden": [6, 9],
        "activation": "elu",
        "post_activation": "elu",
        "output_activation": "elu",
        "shortcuts": ["none", "none"],
        "biases": [[False, False], [False, False]],
        "dtype": "float64",
    }


def test_replace_arrays_swaps_named_arrays_only():
    model = reference.random_model(2, "tanh", "learned")
    new = np.ones_like(model.blocks[1].W2)
    replaced = model.replace_arrays({"blocks.1.W2": new})
    assert replaced.blocks[1].W2 is new
    assert replaced.blocks[0].W1 is model.blocks[0].W1
    assert model.blocks[1].W2 is not new


def test_replace_arrays_rejects_unknown_names():
    model = reference.random_model(1, "tanh", "identity")
    with pytest.raises(ValueError, match=r"Unknown parameter names: \['blocks.0.W3'\]"):
        model.replace_arrays({"blocks.0.W3": np.eye(4)})


def test_replace_arrays_removes_bias_only():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    without = model.replace_arrays({"blocks.0.b1": None})
    assert without.blocks[0].b1 is None
    assert without.blocks[0].b2 is not None
    with pytest.raises(ValueError, match="Expected an array for blocks.0.W1, got None"):
        model.replace_arrays({"blocks.0.W1": None})


def test_replace_arrays_names_reshaped_array_and_block():
    model = resgrad.ResidualMLP.init([4, 5, 3], seed=0)
    with pytest.raises(
        ValueError,
        match=r"^Block 0, after replacing blocks.0.W1 \(shape \(5, 3\), where the "
        r"array it replaces has \(5, 4\)\): .* Or pass arrays of the shapes",
    ):
        model.replace_arrays({"blocks.0.W1": np.ones((5, 3))})
    identity = resgrad.ResidualMLP.init([4, 4, 4], seed=0, shortcut="identity")
    with pytest.raises(ValueError, match=r"^Block 1, after replacing blocks.1.W2 "):
        identity.replace_arrays({"blocks.1.W2": np.ones((3, 4))})


@pytest.mark.parametrize("bias", [[0.0, 0.0, 0.0], 0.5])
def test_bias_that_is_not_an_array_raises(bias):
    model = resgrad.ResidualMLP.init([4, 3], seed=0)
    kind = type(bias).__name__
    with pytest.raises(
        ValueError,
        match=rf"Expected b1 to be a vector, got {kind}; pass an array, such as "
        r"np.asarray\(b1\)",
    ):
        model.replace_arrays({"blocks.0.b1": bias})


def test_matrix_bias_raises():
    with pytest.raises(ValueError, match=r"Expected b2 to be a vector, got \(1, 4\)"):
        resgrad.Block(W1=np.ones((6, 5)), W2=np.ones((4, 6)), b2=np.ones((1, 4)))


def test_block_without_w2_raises():
    with pytest.raises(ValueError, match="A block needs a W2 matrix, got None"):
        resgrad.Block(np.ones((3, 2)), None)


def test_big_endian_weights_raise():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    swapped = {key: value.astype(">f8") for key, value in model.arrays().items()}
    with pytest.raises(TypeError, match="got blocks.0.W1 of dtype >f8; convert each"):
        model.replace_arrays(swapped)


def test_masked_weights_raise():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    masked = np.ma.array(model.blocks[0].W1)
    with pytest.raises(TypeError, match="got a numpy masked array"):
        model.replace_arrays({"blocks.0.W1": masked})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"alpha": "a"}, "Expected alpha to be a real number, got 'a'"),
        ({"alpha": "0.5"}, "Expected alpha to be a real number, got '0.5'"),
        ({"alpha": True}, "Expected alpha to be a real number, got True"),
        ({"bias": "no"}, "Expected bias to be True or False, got 'no'"),
    ],
)
def test_init_names_bad_option(options, message):
    with pytest.raises(TypeError, match=message):
        resgrad.ResidualMLP.init([4, 3, 2], **options)


@pytest.mark.parametrize(
    "device",
    [
        "nonsense",
        3.5,
        # torch built without CUDA raises an AssertionError for it.
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
        ),
    ],
)
def test_convert_names_a_bad_device(device):
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    with pytest.raises(ValueError, match=f"on device {device!r} of torch"):
        model.convert(torch, device=device)


def test_convert_keeps_out_of_memory_error(monkeypatch):
    class OutOfMemoryError(RuntimeError):
        pass

    def exhausted(value, xp, device):
        raise OutOfMemoryError("CUDA out of memory")

    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    monkeypatch.setattr(resgrad.model, "_to_namespace", exhausted)
    with pytest.raises(OutOfMemoryError, match="CUDA out of memory"):
        model.convert(torch, device="cpu")


@pytest.mark.parametrize("value", [True, 1, 0, np.True_, np.array(False)])
def test_flags_take_bools_and_zero_one(value):
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0, bias=value)
    assert (model.blocks[0].b1 is not None) == bool(value)


@pytest.mark.parametrize("value", [2, "no", None, 0.5, np.array([True])])
def test_flags_reject_other_values(value):
    with pytest.raises(TypeError, match="Expected bias to be True or False"):
        resgrad.ResidualMLP.init([4, 3, 2], seed=0, bias=value)


def test_convert_rejects_a_dtype_of_another_namespace():
    import torch

    model = resgrad.ResidualMLP.init([3, 4, 2], seed=0)
    with pytest.raises(TypeError, match="floating dtype of numpy or its name"):
        model.convert(np, dtype=torch.float32)
    with pytest.raises(TypeError, match="got <class 'numpy.int32'>"):
        model.convert(np, dtype=np.int32)
    with pytest.raises(TypeError, match="floating dtype of torch or its name"):
        model.convert(torch, dtype=np.float32)
    with pytest.raises(TypeError, match="floating dtype of torch or its name"):
        model.convert(torch).convert(dtype=np.dtype("float32"))


def test_convert_changes_dtype():
    model = reference.random_model(2, "tanh", "learned")
    single = model.convert(dtype="float32")
    assert single.dtype == np.float32
    assert all(v.dtype == np.float32 for v in single.arrays().values())
    assert model.dtype == np.float64


@pytest.mark.parametrize(
    "converted, shared",
    [
        (lambda model: model.convert(), True),
        (lambda model: model.convert(dtype="float64"), True),
        (lambda model: model.convert(np), True),
        (lambda model: model.convert(dtype="float32"), False),
    ],
)
def test_convert_shares_only_unchanged_arrays(converted, shared):
    # As its docstring states, a dtype the model already has copies nothing.
    model = reference.random_model(2, "tanh", "learned")
    new = converted(model).arrays()
    for name, value in model.arrays().items():
        assert np.shares_memory(new[name], value) is shared


def test_convert_copies_negative_strides_to_torch():
    # torch.asarray rejects negative strides even when asked for a copy.
    model = reference.random_model(2, "tanh", "learned")
    flipped = {
        name: np.flip(np.flip(value).copy()) for name, value in model.arrays().items()
    }
    assert all(min(value.strides) < 0 for value in flipped.values())
    reversed_model = model.replace_arrays(flipped)
    for converted in (
        reversed_model.convert(torch),
        resgrad.torch.from_module(resgrad.torch.to_module(reversed_model)),
    ):
        for name, value in converted.arrays().items():
            assert np.array_equal(np.asarray(value), model.arrays()[name])


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_with_arrays_equals_replace_arrays(xp):
    model = reference.random_model(3, "tanh", "learned")
    if xp == "torch":
        model = model.convert(torch)
    arrays = {name: value * 2 for name, value in model.arrays().items()}
    del arrays["blocks.1.W3"]
    fast, checked = model._with_arrays(arrays), model.replace_arrays(arrays)
    assert type(fast) is resgrad.ResidualMLP
    assert fast.config() == checked.config() == model.config()
    assert fast.xp is checked.xp
    for name, value in checked.arrays().items():
        assert fast.arrays()[name] is value
    # The model it came from keeps its arrays.
    assert model.blocks[0].W1 is not fast.blocks[0].W1
    assert all(a is not b for a, b in zip(model.blocks, fast.blocks))


def test_convert_array_api_strict_negative_strides():
    xps = pytest.importorskip("array_api_strict")
    model = reference.random_model(2, "tanh", "learned")
    strict = model.convert(xps)
    flipped = {name: xps.flip(value) for name, value in strict.arrays().items()}
    converted = strict.replace_arrays(flipped).convert(torch)
    for name, value in converted.arrays().items():
        assert np.array_equal(value.numpy(), np.flip(model.arrays()[name]))


def test_with_arrays_keeps_block_subclass():
    class TaggedBlock(resgrad.model.Block):
        pass

    model = reference.random_model(2, "tanh", "learned")
    tagged = resgrad.ResidualMLP(
        [TaggedBlock(**vars(block)) for block in model.blocks],
        model.activation,
    )
    fast = tagged._with_arrays({"blocks.0.W1": model.blocks[0].W1 * 2})
    assert all(type(block) is TaggedBlock for block in fast.blocks)


def test_models_compare_by_identity():
    # Elementwise array comparison has no single truth value to return.
    model = reference.random_model(2, "tanh", "learned")
    same = model
    assert model == same
    assert model != model.convert()
    assert model.blocks[0] != model.convert().blocks[0]


# Validation.


def _block(rng, p_in, q, p_out, **kwargs):
    return resgrad.Block(
        W1=rng.standard_normal((q, p_in)),
        W2=rng.standard_normal((p_out, q)),
        W3=rng.standard_normal((p_out, p_in)),
        **kwargs,
    )


def test_blocks_that_do_not_chain_raise():
    rng = np.random.default_rng(0)
    blocks = [_block(rng, 5, 6, 4), _block(rng, 3, 6, 2)]
    with pytest.raises(
        ValueError, match="Block 0 outputs 4 features but block 1 reads 3"
    ):
        resgrad.ResidualMLP(blocks)


def test_identity_shortcut_with_unequal_widths_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(
        ValueError, match="identity shortcut needs equal widths, got 5 in and 4"
    ):
        resgrad.Block(
            W1=rng.standard_normal((6, 5)),
            W2=rng.standard_normal((4, 6)),
            shortcut="identity",
        )
    with pytest.raises(
        ValueError, match="identity shortcut needs equal widths, got 5 in and 3"
    ):
        resgrad.ResidualMLP.init([5, 3], shortcut="identity")


@pytest.mark.parametrize(
    "field", ["activation", "post_activation", "output_activation"]
)
def test_unknown_activation_raises(field):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=f"^{field}: Unknown activation 'gelu'"):
        resgrad.ResidualMLP([_block(rng, 5, 6, 4)], **{field: "gelu"})


def test_unknown_activation_in_init_raises():
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        resgrad.ResidualMLP.init([4, 3], activation="swish")


def test_unknown_shortcut_raises():
    with pytest.raises(ValueError, match="Unknown shortcut 'dense'; expected one of"):
        resgrad.ResidualMLP.init([4, 3], shortcut="dense")


def test_learned_shortcut_without_matrix_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shortcut='learned' needs a W3 matrix"):
        resgrad.Block(
            W1=rng.standard_normal((6, 5)),
            W2=rng.standard_normal((4, 6)),
            shortcut="learned",
        )


def test_fixed_shortcut_with_matrix_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shortcut='none' takes no W3"):
        _block(rng, 5, 6, 4, shortcut="none")


@pytest.mark.parametrize("name, shape", [("W3", (4, 4)), ("b1", (5,)), ("b2", (6,))])
def test_array_of_wrong_shape_raises(name, shape):
    rng = np.random.default_rng(0)
    arrays = {
        "W1": rng.standard_normal((6, 5)),
        "W2": rng.standard_normal((4, 6)),
        "W3": rng.standard_normal((4, 5)),
    }
    arrays[name] = rng.standard_normal(shape)
    with pytest.raises(
        ValueError, match=rf"Expected {name} of shape .* got \({shape[0]},"
    ):
        resgrad.Block(**arrays)


def test_vector_weight_raises():
    with pytest.raises(ValueError, match=r"Expected W1 to be a matrix, got \(5,\)"):
        resgrad.Block(W1=np.ones(5), W2=np.ones((4, 6)))


def test_empty_network_raises():
    with pytest.raises(ValueError, match="needs at least one block"):
        resgrad.ResidualMLP([])


def test_non_block_raises():
    with pytest.raises(TypeError, match="Expected Block instances, got dict"):
        resgrad.ResidualMLP([{"W1": np.ones((2, 2))}])


def test_weights_of_two_dtypes_raise():
    rng = np.random.default_rng(0)
    block = _block(rng, 5, 6, 4)
    block.W2 = block.W2.astype(np.float32)
    with pytest.raises(
        TypeError,
        match=r"Expected all weights in one dtype, got \['float32', 'float64'\]",
    ):
        resgrad.ResidualMLP([block])


def test_integer_weights_raise():
    block = resgrad.Block(W1=np.ones((3, 2), int), W2=np.ones((2, 3), int))
    with pytest.raises(
        TypeError, match="Expected floating weights, got blocks.0.W1 of dtype int64"
    ):
        resgrad.ResidualMLP([block])


def test_non_finite_weights_raise():
    rng = np.random.default_rng(0)
    block = _block(rng, 5, 6, 4)
    block.W3[1, 1] = np.inf
    with pytest.raises(
        ValueError,
        match="blocks.0.W3 contains 1 NaN or infinite value.*diverged.*smaller "
        "learning rate",
    ):
        resgrad.ResidualMLP([block])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sizes": [4]}, r"at least two positive widths, got \[4\]"),
        ({"sizes": [4, 0]}, r"at least two positive widths, got \[4, 0\]"),
        (
            {"sizes": [4, 3, 2], "hidden": [5]},
            r"Expected 2 positive hidden widths.*got \[5\]",
        ),
        (
            {"sizes": [64, 10], "hidden": 0},
            r"Expected 1 positive hidden width, one per block, got \[0\]",
        ),
        ({"sizes": [4, 3], "init": "xavier"}, "Unknown init 'xavier'"),
        ({"sizes": [4, 3], "alpha": float("inf")}, "Expected a finite alpha, got inf"),
    ],
)
def test_invalid_init_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resgrad.ResidualMLP.init(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sizes": [8, 6.5, 3]}, r"Expected sizes to contain only ints, got 6.5 in"),
        ({"sizes": [8.9, 6, 3]}, r"Expected sizes to contain only ints, got 8.9 in"),
        ({"sizes": [True, 6, 3]}, r"Expected sizes to contain only ints, got True in"),
        ({"sizes": np.array([8.0, 6.0])}, r"contain only ints, got np.float64\(8.0\)"),
        ({"sizes": "863"}, r"Expected sizes to be a list of ints, got '863'; pass"),
        ({"sizes": 8}, r"Expected sizes to be a list of ints, got 8; pass"),
        ({"sizes": [8, 6, 3], "hidden": 2.7}, r"Expected hidden to be an int, .* 2.7;"),
        ({"sizes": [8, 6, 3], "hidden": "a"}, r"Expected hidden to be an int, .* 'a';"),
        (
            {"sizes": [8, 6, 3], "hidden": True},
            r"Expected hidden to be an int, .*True;",
        ),
        (
            {"sizes": [8, 6, 3], "hidden": [4, 5.0]},
            r"hidden to contain only ints, got 5.0",
        ),
    ],
)
def test_init_rejects_non_integer_widths(kwargs, message):
    with pytest.raises(TypeError, match=message):
        resgrad.ResidualMLP.init(**kwargs)


def test_init_takes_numpy_integer_widths(tmp_path):
    sizes = np.array([8, 6, 3])
    model = resgrad.ResidualMLP.init(sizes, hidden=np.int64(4))
    assert model.sizes == [8, 6, 3]
    assert model.hidden == [4, 4]
    model = resgrad.ResidualMLP.init([np.int32(8), np.uint8(6), 3], hidden=sizes[1:])
    assert model.hidden == [6, 3]
    resgrad.save(model, tmp_path / "model.npz")
    assert resgrad.load(tmp_path / "model.npz").sizes == [8, 6, 3]


@pytest.mark.parametrize(
    "transform, error, message",
    [
        (lambda x: x[0], ValueError, r"Expected x of shape \(n, 5\), got shape \(5,\)"),
        (lambda x: x[:, :2], ValueError, "Expected x to have 5 features.*got 2"),
        (lambda x: x.astype(np.float32), TypeError, "Expected x of dtype float64"),
    ],
    ids=["vector", "width", "dtype"],
)
def test_call_rejects_wrong_input(transform, error, message):
    model = reference.random_model(2, "relu", "learned")
    x, _ = reference.random_batch(model, 3)
    with pytest.raises(error, match=message):
        model(transform(x))


@pytest.mark.parametrize("name", ["bogus", "int64"])
def test_convert_names_an_unknown_dtype(name):
    model = resgrad.ResidualMLP.init([3, 2], seed=0)
    with pytest.raises(ValueError, match=f"floating dtype of .*, got '{name}'"):
        model.convert(dtype=name)


def test_package_exposes_modules_after_import():
    # A fresh interpreter, since this one may have imported the modules.
    code = "import resgrad; print(resgrad.robustness.evaluate, resgrad.depth.gradient_profile)"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for name in resgrad.__all__:
        assert hasattr(resgrad, name), name


def test_repr_shows_shapes_not_entries():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    text = repr(model)
    assert text.startswith(
        "ResidualMLP(blocks=[Block(W1=float64[3, 4], W2=float64[3, 3]"
    )
    assert "activation='relu', post_activation='relu'" in text
    assert "_xp" not in text
    assert str(float(model.blocks[0].W1[0, 0]))[:6] not in text


def test_repr_names_torch_and_device():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0).convert(torch, dtype="float32")
    assert "W1=torch.float32[3, 4]" in repr(model)
    assert " on " not in repr(model)


def test_repr_cuts_long_block_lists():
    model = resgrad.ResidualMLP.init([4] * 21, seed=0)
    text = repr(model)
    assert text.count("Block(") == 4
    assert "... 16 more" in text


def test_repr_of_results_summarises_arrays():
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    x = np.linspace(0, 1, 20).reshape(5, 4)
    y = np.array([0, 1, 0, 1, 1])
    grads = resgrad.gradients(model, x, y)
    assert repr(grads).startswith("Gradients(loss=np.float64(0.")
    assert "input=float64[5, 4], blocks=[BlockGradients(W1=float64[3, 4]" in repr(grads)
    integrated = resgrad.saliency.integrated_gradients(model, x, steps=4)
    assert repr(integrated) == (
        "IntegratedGradients(attributions=float64[5, 4], gap=float64[5], "
        "score_difference=float64[5])"
    )
    matrices = resgrad.theorem_matrices(model, x)[0]
    assert repr(matrices) == (
        "TheoremMatrices(Q=float64[5, 3, 4], D=float64[5, 3, 3], D_hat=float64[5, 3, 3])"
    )
    trace = model.trace(x)[0][0]
    assert repr(trace).startswith("BlockTrace(a_prev=float64[5, 4], u=float64[5, 3]")
    attack = resgrad.attacks.fgsm(model, x, y, eps=0.1)
    assert repr(attack).startswith("AttackResult(x_adv=float64[5, 4], success=bool[5]")


def test_repr_of_cycles_stops():
    from dataclasses import dataclass

    from resgrad._arrays import summary_repr

    loop = [1, np.zeros(2)]
    loop.append(loop)
    assert summary_repr(loop) == "[1, float64[2], [...]]"
    table = {"x": np.zeros(3)}
    table["self"] = table
    assert summary_repr(table) == "{'x': float64[3], 'self': {...}}"

    @dataclass
    class Node:
        child: object = None

    node = Node()
    node.child = node
    assert summary_repr(node) == "Node(child=Node(...))"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_model_pickles_and_deep_copies(backend):
    import copy
    import pickle

    xp = np if backend == "numpy" else torch
    model = resgrad.ResidualMLP.init([6, 5, 3], seed=0, xp=xp, activation="tanh")
    x = xp.asarray(np.random.default_rng(0).random((4, 6)))
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.xp is model.xp
        assert other.activation == "tanh"
        assert np.array_equal(np.asarray(other(x)), np.asarray(model(x)))
        other.blocks[0].W1[0, 0] = 5.0
        assert model.blocks[0].W1[0, 0] != 5.0
