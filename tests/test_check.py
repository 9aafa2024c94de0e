"""The Theorem 1 check passes on correct gradients, and each of its
references (backpropagation, autograd, finite differences) catches a wrong
product."""

import dataclasses
import importlib
import sys
import warnings

import numpy as np
import pytest
import reference
import torch

import resgrad
import resgrad.product
from resgrad.check import DIFFERENCE_TOLERANCE, EXACT_TOLERANCE, check_theorem

SHORTCUTS = ("learned", "identity", "none")
LOSSES = list(resgrad.LOSSES)
REFERENCES = {"backprop", "autograd", "central differences"}


def _rows(report):
    """Return ``{(equation, reference): row}``."""
    return {(row.equation, row.reference): row for row in report.rows}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_check_passes_on_random_network(shortcut, loss):
    model = reference.random_model(3, "tanh", shortcut, output_activation="sigmoid")
    x, y = reference.random_batch(model, 4)
    report = check_theorem(model, x, y, loss=loss, entries=12)
    equations = ["4", "5", "6", "7"] + (["8"] if shortcut == "learned" else [])
    rows = _rows(report)
    assert sorted(rows) == sorted((eq, name) for eq in equations for name in REFERENCES)
    for (eq, name), row in rows.items():
        expected = (
            DIFFERENCE_TOLERANCE if name == "central differences" else (EXACT_TOLERANCE)
        )
        assert row.tolerance == expected, (eq, name)
        assert row.error <= row.tolerance, (eq, name, row.error)
        assert row.entries > 0, (eq, name)
    assert report.passed
    assert report.samples == 4
    assert report.autograd_version == torch.__version__


def _wrong_product(monkeypatch, field, factor):
    """Make ``method="product"`` return one field scaled by ``factor``.

    ``field`` is ``"input"`` or a block parameter such as ``"W2"`` of block 0.
    """
    original = resgrad.product.product_gradients

    def scaled(*args, **kwargs):
        grads = original(*args, **kwargs)
        if field == "input":
            return dataclasses.replace(grads, input=factor * grads.input)
        block = grads.blocks[0]
        blocks = [
            dataclasses.replace(block, **{field: factor * getattr(block, field)})
        ] + grads.blocks[1:]
        return dataclasses.replace(grads, blocks=blocks)

    monkeypatch.setattr(resgrad.product, "product_gradients", scaled)


@pytest.mark.parametrize(
    "field, equation", [("input", "4"), ("W1", "6"), ("W2", "7"), ("W3", "8")]
)
def test_check_fails_on_wrong_product(monkeypatch, field, equation):
    """A product 1% off in one equation fails that equation against all
    three references and leaves the other equations passing."""
    model = reference.random_model(2, "softplus", "learned")
    x, y = reference.random_batch(model, 3)
    _wrong_product(monkeypatch, field, 1.01)
    report = check_theorem(model, x, y, entries=200)
    assert not report.passed
    for (eq, name), row in _rows(report).items():
        if eq == equation:
            assert row.error > 1e-3, (eq, name, row.error)
            assert not row.passed, (eq, name)
        else:
            assert row.passed, (eq, name, row.error)


@pytest.mark.parametrize("drop", ["W3", "block"])
def test_check_fails_on_missing_product_arrays(monkeypatch, drop):
    # A product that leaves gradients out must not pass on the ones left.
    model = reference.random_model(3, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    original = resgrad.product.product_gradients

    def missing(*args, **kwargs):
        grads = original(*args, **kwargs)
        if drop == "block":
            return dataclasses.replace(grads, blocks=grads.blocks[:-1])
        blocks = [dataclasses.replace(b, W3=None) for b in grads.blocks]
        return dataclasses.replace(grads, blocks=blocks)

    monkeypatch.setattr(resgrad.product, "product_gradients", missing)
    report = check_theorem(model, x, y, entries=20)
    assert not report.passed
    failed = {row.equation for row in report.rows if not row.passed}
    assert failed == ({"8"} if drop == "W3" else {"6", "7", "8"})


def test_check_passes_near_elu_zero():
    # elu's second derivative jumps at 0, so central differences across it
    # err by the step's size; such entries are sampled elsewhere.
    model = resgrad.ResidualMLP.init([4, 4, 4, 3], activation="elu", seed=3)
    x = 1e-9 * np.random.default_rng(0).standard_normal((3, 4))
    report = check_theorem(model, x, np.array([0, 1, 2]))
    assert report.passed, report.to_markdown()


def test_verdict_tells_difference_miss_from_disagreement(monkeypatch):
    from resgrad.cli.check import verdict
    from resgrad.data import load_data

    # A step of 0.01 on a tanh network curves away from the tangent: the
    # central differences miss by 5e-6 to 2e-5, while backprop and autograd
    # agree. A step of 0.001 passes.
    data = load_data()
    model = resgrad.ResidualMLP.init([64, 32, 32, 10], seed=0, activation="tanh")
    x, y = data.x_test[:8], data.y_test[:8]
    steep = check_theorem(model, x, y, seed=0, step=0.01)
    assert {row.reference for row in steep.rows if not row.passed} == {
        "central differences"
    }
    assert verdict(steep).startswith("every equation agrees with the exact")
    assert verdict(check_theorem(model, x, y, seed=0, step=0.001)) == (
        "all equations agree"
    )

    small = reference.random_model(2, "softplus", "learned")
    x, y = reference.random_batch(small, 3)
    _wrong_product(monkeypatch, "W1", 1.01)
    assert verdict(check_theorem(small, x, y)) == "some equations disagree"


def test_verdict_names_comparisons_of_no_entries():
    from resgrad.cli.check import verdict

    model = reference.random_model(2, "softplus", "learned")
    x, y = reference.random_batch(model, 3)
    report = check_theorem(model, x, y)
    assert verdict(report) == "all equations agree"
    rows = list(report.rows)
    index = next(
        i for i, row in enumerate(rows) if row.reference == "central differences"
    )
    rows[index] = dataclasses.replace(rows[index], entries=0)
    emptied = dataclasses.replace(report, rows=rows)
    assert verdict(emptied) == (
        "all equations agree where compared; no entries were compared for "
        f"({rows[index].equation}) against central differences"
    )


@pytest.mark.parametrize(
    "activation, biases", [("tanh", [13.0, 12.5]), ("sigmoid", [22.5, 21.0])]
)
def test_autograd_reference_keeps_digits_where_output_saturates(activation, biases):
    # torch's own derivatives, 1 - tanh^2 and s (1 - s), were 1.1e-6 and
    # 6e-7 off here; resgrad's values match the exact ones.
    model = resgrad.ResidualMLP.init(
        [2, 2], activation=activation, output_activation=activation, seed=0
    )
    model = model.replace_arrays({"blocks.0.b2": np.array(biases)})
    x, y = np.array([[0.1, -0.2]]), np.array([0])
    report = check_theorem(model, x, y, loss="squared_error")
    for (eq, name), row in _rows(report).items():
        if name == "autograd":
            assert row.error < 1e-14, (eq, row.error)


def test_reference_activations_match_torch_and_their_derivatives():
    from resgrad.check import _saturating_activations

    t = torch.tensor(
        [-800.0, -40.0, -13.2, -1.0, -0.3, -1e-300, 0.0, 1e-9, 0.7, 1.0, 22.5, 800.0],
        dtype=torch.float64,
        requires_grad=True,
    )
    exact = {
        "tanh": (torch.tanh, lambda v: 1 / torch.cosh(v) ** 2),
        "sigmoid": (
            torch.sigmoid,
            lambda v: torch.exp(-v.abs()) / (1 + torch.exp(-v.abs())) ** 2,
        ),
    }
    functions = _saturating_activations()
    assert set(functions) == set(exact)
    for name, function in functions.items():
        value, derivative = exact[name]
        out = function(t)
        (grad,) = torch.autograd.grad(out.sum(), t)
        plain = t.detach()
        torch.testing.assert_close(out.detach(), value(plain), rtol=4e-16, atol=0)
        torch.testing.assert_close(grad, derivative(plain), rtol=1e-14, atol=0)


def test_difference_tolerance_rises_with_rounding():
    # dY/dx is about 5e-6 while the loss is 1.1: differences of step 1e-6 of
    # the loss carry rounding of about 2e-10, 3e-5 of the gradient.
    model = resgrad.ResidualMLP.init(
        [4, 3, 3], shortcut="none", activation="tanh", seed=0
    )
    model = model.replace_arrays({"blocks.0.W1": model.blocks[0].W1 * 1e-5})
    x = np.random.default_rng(0).normal(size=(2, 4))
    report = check_theorem(model, x, np.array([0, 1]))
    row = _rows(report)[("4", "central differences")]
    assert 1e-5 < row.error < row.tolerance < 1e-3
    assert row.resolved and report.passed
    # A step of 1e-4 has a hundredth of that rounding.
    wide = _rows(check_theorem(model, x, np.array([0, 1]), step=1e-4))
    stepped = wide[("4", "central differences")]
    assert DIFFERENCE_TOLERANCE <= stepped.tolerance < 0.02 * row.tolerance
    assert stepped.passed


@pytest.mark.parametrize("margin", [16.5, 30.0])
def test_differences_catch_confident_network_error(monkeypatch, margin):
    # The loss and dY/dz are tiny here, and so is the rounding that reaches
    # the loss from the logits: the rows keep their tolerance of 1e-6.
    model = resgrad.ResidualMLP.init([3, 4, 3], activation="tanh", seed=1)
    model = model.replace_arrays({"blocks.1.b2": np.array([margin, 0.0, 0.0])})
    x = np.array([[0.3, -0.5, 0.8], [-0.2, 0.4, 0.1]])
    y = np.array([0, 0])
    right = _rows(check_theorem(model, x, y, autograd=False))
    differences = [v for (_, name), v in right.items() if name == "central differences"]
    assert all(row.tolerance == DIFFERENCE_TOLERANCE for row in differences)
    assert all(row.passed for row in right.values())
    _wrong_product(monkeypatch, "W1", 1.0001)
    wrong = _rows(check_theorem(model, x, y, autograd=False))
    assert not wrong[("6", "central differences")].passed
    assert wrong[("6", "central differences")].error > 5e-5


@pytest.mark.parametrize("output", ["relu", "leaky_relu"])
def test_differences_skip_output_kink(output):
    # The second output sits 1e-9 above its kink, so a step of 1e-6 of most
    # entries crosses it and would average the slopes on both sides.
    model = resgrad.ResidualMLP.init(
        [3, 4, 3], activation="tanh", output_activation=output, seed=0
    )
    x = np.random.default_rng(0).normal(size=(2, 3))
    b2 = np.asarray(model.blocks[1].b2) - model.logits(x)[0] + [1.0, 1e-9, 1.0]
    report = check_theorem(model.replace_arrays({"blocks.1.b2": b2}), x, [1, 0])
    assert report.passed
    rows = _rows(report)
    assert rows[("4", "central differences")].entries > 0
    assert rows[("4", "central differences")].error < 1e-8


def test_rows_resolve_errors_of_a_thousandth():
    from resgrad.check import CheckRow

    row = CheckRow("6", "dY/dW1", "central differences", 1e-4, 5e-4, 10)
    assert row.passed and row.resolved
    # A tolerance of 2e-3 would pass a gradient 0.1% off.
    blurred = dataclasses.replace(row, tolerance=2e-3)
    assert blurred.passed and not blurred.resolved


def test_rows_below_the_resolution_of_differences_are_named():
    from resgrad.cli.check import verdict

    # The gradients come through tanh'(13) ~ 1e-11, far below the rounding of
    # the loss, 0.5, in its differences.
    model = resgrad.ResidualMLP.init(
        [2, 2], activation="tanh", output_activation="tanh", seed=0
    )
    model = model.replace_arrays({"blocks.0.b2": np.array([13.0, 12.5])})
    report = check_theorem(
        model, np.array([[0.1, -0.2]]), np.array([0]), loss="squared_error"
    )
    blurred = [row for row in report.rows if not row.resolved]
    assert [row.equation for row in blurred] == ["4", "6", "7", "8"]
    assert {row.reference for row in blurred} == {"central differences"}
    assert report.passed
    assert verdict(report) == (
        "all equations agree where compared; central differences of step 1e-06 "
        "cannot resolve (4), (6), (7), (8), whose entries are small against the "
        "rounding of the loss or the logits"
    )
    assert report.to_markdown().count("below resolution") == 4


@pytest.mark.parametrize("scale", [20, 60, 100])
def test_check_passes_on_confident_network(scale):
    # Scaling the last block makes the logits confident: the loss falls to
    # 3e-7, 7e-20 and 2e-107, below the point where p_y - 1 rounds to 0.
    model = resgrad.ResidualMLP.init([8, 6, 6, 4], seed=0)
    arrays = model.arrays()
    for name in ("blocks.2.W1", "blocks.2.W2", "blocks.2.W3"):
        arrays[name] = scale * arrays[name]
    model = model.replace_arrays(arrays)
    x = np.random.default_rng(0).random((5, 8))
    for y in (model.predict(x), np.argmin(model.logits(x), axis=1)):
        report = check_theorem(model, x, y)
        assert {row.reference for row in report.rows} == REFERENCES
        assert report.passed, report.to_markdown()


def test_check_without_autograd_has_no_autograd_rows():
    model = reference.random_model(2, "relu", "none")
    x, y = reference.random_batch(model, 3)
    report = check_theorem(model, x, y, entries=5, autograd=False)
    assert {row.reference for row in report.rows} == REFERENCES - {"autograd"}
    assert report.autograd_version is None
    assert report.passed


def test_check_without_torch_names_the_install(monkeypatch):
    monkeypatch.setattr(resgrad.check, "_torch_available", lambda: False)
    model = reference.random_model(2, "relu", "none")
    x, y = reference.random_batch(model, 3)
    with pytest.raises(ModuleNotFoundError, match=r"pip install \"resgrad\[torch\]\""):
        check_theorem(model, x, y, entries=5, autograd=True)
    report = check_theorem(model, x, y, entries=5)
    assert {row.reference for row in report.rows} == REFERENCES - {"autograd"}


def test_torch_module_without_torch_message(monkeypatch):
    # A None entry in sys.modules makes "import torch" fail as if absent.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "resgrad.torch", raising=False)
    with pytest.raises(
        ModuleNotFoundError, match="resgrad.torch needs PyTorch"
    ) as error:
        importlib.import_module("resgrad.torch")
    assert error.value.name == "torch"


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error", "score"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8])
def test_check_takes_every_label_dtype(loss, dtype):
    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    report = check_theorem(model, x, y.astype(dtype), loss=loss, entries=5)
    assert "autograd" in {row.reference for row in report.rows}
    assert report.passed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_takes_squared_error_targets(dtype):
    model = reference.random_model(2, "tanh", "learned")
    x, _ = reference.random_batch(model, 3)
    target = np.random.default_rng(1).random((3, model.n_classes)).astype(dtype)
    report = check_theorem(model, x, target, loss="squared_error", entries=5)
    assert "autograd" in {row.reference for row in report.rows}
    assert report.passed


def test_check_names_dtype_of_float_labels():
    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    with pytest.raises(TypeError, match="got dtype float32"):
        check_theorem(model, x, y.astype(np.float32), entries=5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_check_runs_on_torch_low_precision_model(dtype):
    """A float32 or bfloat16 torch model is checked in float64 on a NumPy
    copy; NumPy has no bfloat16."""
    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    single = model.convert(torch, dtype=dtype)
    report = check_theorem(
        single,
        torch.asarray(x, dtype=getattr(torch, dtype)),
        torch.asarray(y),
        entries=8,
    )
    assert report.passed
    assert all(isinstance(v, torch.Tensor) for v in single.arrays().values())


def test_check_leaves_inputs_unchanged():
    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    before = {name: value.copy() for name, value in model.arrays().items()}
    x_before, y_before = x.copy(), y.copy()
    check_theorem(model, x, y, entries=8)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(value, before[name])


def test_check_report_serialises_rows():
    model = reference.random_model(1, "tanh", "learned")
    x, y = reference.random_batch(model, 2)
    report = check_theorem(model, x, y, entries=4, step=1e-5)
    as_dict = report.to_dict()
    table = report.to_markdown().splitlines()
    assert as_dict["passed"] is True
    assert as_dict["step"] == 1e-5
    assert len(as_dict["rows"]) == len(report.rows) == 15
    assert len(table) == 2 + len(report.rows)
    assert all(line.endswith("| pass |") for line in table[2:])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_progress_counts_every_difference(activation):
    """The bar counts one step per central difference, and with a kink one
    more per entry tested while sampling. The rows equal those without a bar."""
    model = reference.random_model(2, activation, "learned")
    x, y = reference.random_batch(model, 3)
    steps = []

    def progress(iterable, desc, total):
        steps.append((desc, total))
        for value in iterable:
            steps.append(value)
            yield value

    report = check_theorem(model, x, y, entries=12, autograd=False, progress=progress)
    desc, total = steps[0]
    assert desc == "central differences"
    assert len(steps) - 1 == total
    # Each entry of (5) compares a column of J, one value per class.
    compared = sum(
        row.entries // (model.n_classes if row.equation == "5" else 1)
        for row in report.rows
        if row.reference == "central differences"
    )
    assert total == compared * (2 if activation == "relu" else 1)
    plain = check_theorem(model, x, y, entries=12, autograd=False)
    assert [row.error for row in report.rows] == [row.error for row in plain.rows]


def test_progress_closed_on_error(monkeypatch):
    """The bar ends at the step reached, so that the error message that
    follows on a terminal does not share its line."""
    import resgrad.check as check_module

    model = reference.random_model(2, "tanh", "learned")
    x, y = reference.random_batch(model, 3)
    calls = []
    original = check_module._central_difference

    def failing(*args):
        calls.append(None)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args)

    events = []

    def progress(iterable, desc, total):
        try:
            yield from iterable
        finally:
            events.append("closed")

    monkeypatch.setattr(check_module, "_central_difference", failing)
    seen = None
    try:
        check_theorem(model, x, y, entries=12, autograd=False, progress=progress)
    except KeyboardInterrupt:
        # Read while the traceback still references the check's frames, as the
        # command line's handler prints its message.
        seen = list(events)
    assert seen == ["closed"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"entries": 0}, "Expected entries >= 1, got 0"),
        ({"step": 0.0}, "positive finite-difference step, got 0.0"),
        ({"step": float("inf")}, "positive finite-difference step, got inf"),
        ({"step": float("nan")}, "positive finite-difference step, got nan"),
        ({"loss": "hinge"}, "Unknown loss 'hinge'"),
    ],
)
def test_check_rejects_bad_arguments(kwargs, message):
    model = reference.random_model(1, "tanh", "learned")
    x, y = reference.random_batch(model, 2)
    with pytest.raises(ValueError, match=message):
        check_theorem(model, x, y, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"entries": 2.5}, "Expected entries to be an integer, got 2.5"),
        ({"entries": "a"}, "Expected entries to be an integer, got 'a'"),
        ({"entries": None}, "Expected entries to be an integer, got None"),
        ({"step": "a"}, "Expected step to be a real number, got 'a'"),
        ({"autograd": "no"}, "Expected autograd to be True or False, got 'no'"),
    ],
)
def test_check_rejects_arguments_of_wrong_type(kwargs, message):
    """A string autograd such as "no" is true in Python and would add the
    autograd rows."""
    model = reference.random_model(1, "tanh", "learned")
    x, y = reference.random_batch(model, 2)
    with pytest.raises(TypeError, match=message):
        check_theorem(model, x, y, **kwargs)


def test_check_rejects_empty_batch():
    model = reference.random_model(1, "tanh", "learned")
    x, y = reference.random_batch(model, 2)
    with pytest.raises(ValueError, match=r"at least one sample in x, got shape \(0, "):
        check_theorem(model, x[:0], y[:0])


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.str_, np.complex128])
def test_check_rejects_x_that_is_not_floating(dtype):
    model = reference.random_model(1, "tanh", "learned")
    x, y = reference.random_batch(model, 2)
    with pytest.raises(TypeError, match="Expected x of a real floating dtype, got"):
        check_theorem(model, x.astype(dtype), y)


def _unbiased_relu_model():
    model = resgrad.ResidualMLP.init([5, 6, 6, 3], seed=3)
    biases = [k for k in model.arrays() if k.endswith(("b1", "b2"))]
    zeros = {k: np.zeros_like(model.arrays()[k]) for k in biases}
    return model.replace_arrays(zeros)


def test_check_steps_around_relu_kinks():
    """A zero row with no biases puts every relu input of that sample at 0,
    where a central difference averages the two sides. Its entries are left
    out, and the check passes with as many entries as asked."""
    model = _unbiased_relu_model()
    x = np.random.default_rng(0).uniform(size=(3, 5))
    x[0] = 0.0
    y = np.array([0, 1, 2])
    report = check_theorem(model, x, y, entries=8, autograd=False)
    rows = {row.equation: row for row in report.rows if "differences" in row.reference}
    assert report.passed
    assert rows["4"].entries == 8
    assert rows["5"].entries == 8 * 3


def test_check_rows_all_on_kink():
    """With x = 0 every step of an input entry crosses a kink, while a step
    of a weight leaves every relu input at 0."""
    model = _unbiased_relu_model()
    x = np.zeros((2, 5))
    report = check_theorem(model, x, np.array([0, 1]), autograd=False)
    rows = {row.equation: row for row in report.rows if "differences" in row.reference}
    assert report.passed
    assert rows["4"].entries == 0
    assert rows["5"].entries == 0
    assert rows["6"].entries > 0
    assert "none off a kink at 0" in report.to_markdown()


def test_few_tiny_sampled_entries_pass():
    """Entries sampled where the gradient is tiny leave only the rounding of
    the differences, which the largest analytic entry scales."""
    model = reference.random_model(2, "softplus", "learned")
    x, y = reference.random_batch(model, 4)
    # Every feature but the first reaches the loss 1e-7 times as strongly.
    block = model.blocks[0]
    W1, W3 = np.array(block.W1), np.array(block.W3)
    W1[:, 1:] *= 1e-7
    W3[:, 1:] *= 1e-7
    model = model.replace_arrays({"blocks.0.W1": W1, "blocks.0.W3": W3})
    for seed in range(4):
        for entries in (1, 2):
            report = check_theorem(model, x, y, entries=entries, seed=seed)
            failed = [row.equation for row in report.rows if not row.passed]
            assert failed == [], (seed, entries)


def test_zero_analytic_gradient_fails_against_differences(monkeypatch):
    """An analytic gradient of zeros fails even where the true one is tiny,
    below the tolerance itself."""
    from resgrad import check

    model = reference.random_model(2, "softplus", "learned")
    x, y = reference.random_batch(model, 4)
    last = model.blocks[-1]
    model = model.replace_arrays(
        {"blocks.1.W2": np.asarray(last.W2) * 1e-7, "blocks.1.W3": last.W3 * 1e-7}
    )
    values = check._theorem_values

    def zero_input_gradient(*args, **kwargs):
        found = values(*args, **kwargs)
        found["4"]["x"] = np.zeros_like(found["4"]["x"])
        return found

    monkeypatch.setattr(check, "_theorem_values", zero_input_gradient)
    report = check_theorem(model, x, y, autograd=False)
    failed = {(row.equation, row.reference) for row in report.rows if not row.passed}
    assert ("4", "central differences") in failed


def test_central_difference_divides_by_stored_step():
    from resgrad.check import _central_difference

    # Floats next to 1e8 lie 1.5e-8 apart, so 1e8 + 1e-6 is not stored
    # exactly. Dividing by 2e-6 gave 0.9984 for this slope of 1.
    base = np.array([0.0, 1e8, 3.0])
    slope = _central_difference(lambda v: v, base, 1, 1e-6)
    assert slope[1] == 1.0
    assert slope[0] == slope[2] == 0.0


def test_check_passes_where_the_step_is_lost():
    # Next to 1e11 the floats lie 1.5e-5 apart, so x + 1e-6 == x - 1e-6; the
    # difference quotient was 0 / 0 = NaN, and the check failed.
    model = resgrad.ResidualMLP.init([3, 4, 2], activation="tanh", seed=0)
    x = np.array([[0.1, 1e11, 0.3], [0.2, 0.5, -0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_theorem(model, x, np.array([0, 1]), autograd=False)
    assert all(np.isfinite(row.error) for row in report.rows)
    assert report.passed
