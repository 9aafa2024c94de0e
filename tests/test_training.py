"""Training by the explicit gradients: the optimizers against torch.optim,
and fit's reproducibility, early stopping, divergence guard and checks."""

import io
import os
import re
import sys
import threading
import warnings
from typing import NamedTuple

import array_api_strict
import numpy as np
import pytest
import torch

import resgrad
from resgrad.data import load_digits
from resgrad.training import (
    DEFAULT_LEARNING_RATES,
    SGD,
    Adam,
    Momentum,
    TrainingDiverged,
    accuracy,
    evaluate,
    fit,
    get_optimizer,
)

STEPS = 20
OPTIMIZER_TOLERANCE = 1e-12
SHAPES = {"blocks.0.W1": (3, 4), "blocks.0.b1": (3,), "blocks.1.W2": (2, 5)}


def _random_arrays(rng):
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def _run_ours(optimizer, params, grad_sequence):
    state = optimizer.init(params)
    trajectory = []
    for grads in grad_sequence:
        params, state = optimizer.update(grads, state, params)
        trajectory.append(params)
    return trajectory


def _run_torch(make_optimizer, params, grad_sequence):
    tensors = {name: torch.tensor(value) for name, value in params.items()}
    optimizer = make_optimizer(list(tensors.values()))
    trajectory = []
    for grads in grad_sequence:
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        optimizer.step()
        trajectory.append({n: t.detach().numpy().copy() for n, t in tensors.items()})
    return trajectory


OPTIMIZER_CASES = {
    "sgd": (
        lambda: SGD(0.05),
        lambda p: torch.optim.SGD(p, lr=0.05),
    ),
    "sgd-decay": (
        lambda: SGD(0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1),
    ),
    "momentum": (
        lambda: Momentum(0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "momentum-decay": (
        lambda: Momentum(0.05, momentum=0.8, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, weight_decay=0.1),
    ),
    "nesterov": (
        lambda: Momentum(0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "nesterov-decay": (
        lambda: Momentum(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda p: torch.optim.SGD(
            p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1
        ),
    ),
    "adam": (
        lambda: Adam(0.01),
        lambda p: torch.optim.Adam(p, lr=0.01),
    ),
    "adam-settings": (
        lambda: Adam(0.02, b1=0.8, b2=0.99, eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adam-decay": (
        lambda: Adam(0.01, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_matches_torch_optim(case):
    ours, theirs = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(0)
    params = _random_arrays(rng)
    grad_sequence = [_random_arrays(rng) for _ in range(STEPS)]

    expected = _run_torch(theirs, params, grad_sequence)
    actual = _run_ours(ours(), params, grad_sequence)

    for step, (want, got) in enumerate(zip(expected, actual), start=1):
        for name in SHAPES:
            np.testing.assert_allclose(
                got[name],
                want[name],
                rtol=0,
                atol=OPTIMIZER_TOLERANCE,
                err_msg=f"{case}, step {step}, {name}",
            )


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_runs_on_torch_tensors(case):
    ours, _ = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(1)
    params = _random_arrays(rng)
    grad_sequence = [_random_arrays(rng) for _ in range(3)]
    as_torch = lambda d: {n: torch.tensor(v) for n, v in d.items()}

    expected = _run_ours(ours(), params, grad_sequence)[-1]
    actual = _run_ours(ours(), as_torch(params), map(as_torch, grad_sequence))[-1]

    for name in SHAPES:
        assert isinstance(actual[name], torch.Tensor)
        np.testing.assert_allclose(actual[name].numpy(), expected[name], rtol=1e-13)


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_leaves_inputs_unchanged(case):
    ours, _ = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(2)
    params, grads = _random_arrays(rng), _random_arrays(rng)
    params_copy = {n: v.copy() for n, v in params.items()}
    grads_copy = {n: v.copy() for n, v in grads.items()}
    optimizer = ours()
    state = optimizer.init(params)

    new_params, _ = optimizer.update(grads, state, params)
    optimizer.update(grads, state, params)

    assert set(params) == set(params_copy)
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], params_copy[name])
        np.testing.assert_array_equal(grads[name], grads_copy[name])
        assert new_params[name] is not params[name]


def test_optimizer_rejects_mismatched_keys():
    params = {"blocks.0.W1": np.ones((2, 2))}
    grads = {"blocks.0.W2": np.ones((2, 2))}
    optimizer = SGD(0.1)
    with pytest.raises(ValueError, match="missing gradients for \\['blocks.0.W1'\\]"):
        optimizer.update(grads, optimizer.init(params), params)


def test_get_optimizer_builds_each_name():
    assert isinstance(get_optimizer("sgd", lr=0.5), SGD)
    assert isinstance(get_optimizer("momentum", lr=0.5, nesterov=True), Momentum)
    adam = get_optimizer("adam")
    assert isinstance(adam, Adam)
    assert adam.lr == 1e-3


@pytest.mark.parametrize("kind", [SGD, Momentum, Adam])
def test_optimizers_default_to_fit_learning_rates(kind):
    name = {SGD: "sgd", Momentum: "momentum", Adam: "adam"}[kind]
    assert kind().lr == DEFAULT_LEARNING_RATES[name] == get_optimizer(name).lr


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "sgd",
            {"momentum": 0.9},
            (
                "Unknown setting(s) 'momentum' for optimizer 'sgd', which takes: "
                "weight_decay; optimizer 'momentum' takes it."
            ),
        ),
        (
            "adam",
            {"nesterov": True, "momentum": 0.5},
            (
                "'momentum', 'nesterov' for optimizer 'adam', which takes: b1, b2, "
                "eps, weight_decay; optimizer 'momentum' takes them."
            ),
        ),
        ("momentum", {"beta": 0.9}, "which takes: momentum, nesterov, weight_decay."),
    ],
)
def test_get_optimizer_names_unknown_settings(name, kwargs, message):
    with pytest.raises(TypeError) as caught:
        get_optimizer(name, **kwargs)
    assert str(caught.value).endswith(message)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("rmsprop", {}, "Unknown optimizer 'rmsprop'"),
        ("sgd", {"lr": 0}, "learning rate > 0, got 0.0"),
        ("adam", {"lr": -1e-3}, "learning rate > 0, got -0.001"),
        ("momentum", {"lr": float("nan")}, "learning rate > 0, got nan"),
        ("sgd", {"lr": float("inf")}, "learning rate > 0, got inf"),
        ("momentum", {"lr": 0.1, "momentum": 1.0}, "momentum in \\[0, 1\\)"),
        ("momentum", {"lr": 0.1, "momentum": 0, "nesterov": True}, "Nesterov"),
        ("adam", {"b2": 1.5}, "b2 in \\[0, 1\\)"),
        ("adam", {"weight_decay": -1}, "weight_decay >= 0"),
    ],
)
def test_get_optimizer_rejects_bad_settings(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_optimizer(name, **kwargs)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("sgd", {"lr": "0.1"}, "learning rate to be a real number, got '0.1'"),
        ("sgd", {"lr": True}, "learning rate to be a real number, got True"),
        ("momentum", {"lr": 0.1, "momentum": "0.9"}, "momentum to be a real"),
        ("adam", {"b1": "0.5"}, "b1 to be a real number"),
        ("adam", {"eps": "1e-8"}, "eps to be a real number"),
        ("adam", {"weight_decay": "0.1"}, "weight_decay to be a real number"),
    ],
)
def test_optimizers_take_numbers_not_strings(name, kwargs, message):
    # As the attacks' eps and fit's epochs: a string is not converted.
    with pytest.raises(TypeError, match=message):
        get_optimizer(name, **kwargs)


def test_optimizers_take_numpy_scalars_and_zero_d_arrays():
    assert get_optimizer("sgd", lr=np.float32(0.5)).lr == 0.5
    assert get_optimizer("adam", lr=np.array(0.25)).lr == 0.25


# fit on small synthetic data.


def _blobs(n=90, seed=0):
    """Three Gaussian clusters in 4 dimensions, labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = 2.0 * rng.standard_normal((3, 4))
    return centres[y] + 0.5 * rng.standard_normal((n, 4)), y.astype(np.int64)


def _small_model(seed=0, **kwargs):
    return resgrad.ResidualMLP.init([4, 8, 3], 6, seed=seed, **kwargs)


def _weights_equal(left, right):
    a, b = left.arrays(), right.arrays()
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_fit_same_seed_same_weights():
    x, y = _blobs()
    first = fit(_small_model(), x, y, epochs=3, batch_size=16, seed=5)
    second = fit(_small_model(), x, y, epochs=3, batch_size=16, seed=5)

    assert _weights_equal(first.model, second.model)
    assert first.history[-1]["train_loss"] == second.history[-1]["train_loss"]


def test_fit_validation_namespace_names_the_pair():
    x, y = _blobs()
    model = _small_model().convert(torch)
    x_t, y_t = torch.as_tensor(x), torch.as_tensor(y)
    message = r"got x_val as a numpy\.ndarray, y_val as a numpy\.ndarray"
    with pytest.raises(TypeError, match=message):
        fit(model, x_t, y_t, epochs=1, validation=(x, y))


def test_fit_torch_optimizer_points_to_explicit_module():
    x, y = _blobs()
    adam = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(TypeError, match=r"got Adam\. To train with a torch\.optim"):
        fit(_small_model(), x, y, optimizer=adam, epochs=1)


@pytest.mark.parametrize("seed", [None, np.random.default_rng(0)])
def test_fit_seed_must_be_an_int(seed):
    x, y = _blobs()
    with pytest.raises(TypeError, match="int >= 0, which a checkpoint records"):
        fit(_small_model(), x, y, epochs=1, seed=seed)


def test_fit_other_seed_other_weights():
    x, y = _blobs()
    first = fit(_small_model(), x, y, epochs=3, batch_size=16, seed=5)
    second = fit(_small_model(), x, y, epochs=3, batch_size=16, seed=6)

    assert not _weights_equal(first.model, second.model)


def test_fit_records_history_and_steps():
    x, y = _blobs(n=90)
    result = fit(_small_model(), x, y, epochs=4, batch_size=20, validation=None)

    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.steps == 4 * 5
    assert result.best_epoch == 4
    assert not result.stopped_early
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(h["val_loss"] is None for h in result.history)
    assert all(h["seconds"] >= 0 for h in result.history)


def test_fit_holds_out_validation_fraction():
    x, y = _blobs(n=90)
    result = fit(_small_model(), x, y, epochs=2, batch_size=8, validation=0.2)

    # 18 of 90 rows are held out, so 72 rows make 9 batches of 8 per epoch.
    assert result.steps == 2 * 9
    assert all(h["val_loss"] is not None for h in result.history)


BACKENDS = {"torch": torch, "array_api_strict": array_api_strict}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fit_on_backend_matches_numpy(backend):
    xp = BACKENDS[backend]
    x, y = _blobs()
    model = _small_model()
    numpy_result = fit(model, x, y, optimizer="sgd", epochs=2, batch_size=16)
    backend_result = fit(
        model.convert(xp),
        xp.asarray(x),
        xp.asarray(y),
        optimizer="sgd",
        epochs=2,
        batch_size=16,
    )

    expected = numpy_result.model.arrays()
    on_host = backend_result.model.convert(np).arrays()
    for name, value in backend_result.model.arrays().items():
        assert type(value) is type(xp.asarray(0.0))
        np.testing.assert_allclose(on_host[name], expected[name], rtol=0, atol=1e-12)


def test_fit_on_tracked_tensors_records_no_graph():
    """Inputs and weights that require a gradient train to the same weights
    as plain ones, with no autograd graph and no torch warning."""
    x, y = _blobs()
    model = _small_model().convert(torch)
    tracked = model.replace_arrays(
        {k: v.clone().requires_grad_(True) for k, v in model.arrays().items()}
    )
    x_t = torch.asarray(x).requires_grad_(True)
    settings = {"optimizer": "adam", "epochs": 2, "batch_size": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(tracked, x_t, torch.asarray(y), **settings)
    expected = fit(model, torch.asarray(x), torch.asarray(y), **settings)
    for name, value in result.model.arrays().items():
        assert not value.requires_grad, name
        assert torch.equal(value, expected.model.arrays()[name]), name
    assert x_t.grad is None
    assert torch.is_grad_enabled()


def test_early_stopping_returns_best_epoch():
    # The validation labels are the training labels shifted by one class, so
    # the better the fit to the training rows, the higher the validation loss.
    x, y = _blobs()
    x_val, y_val = x.copy(), (y + 1) % 3
    result = fit(
        _small_model(),
        x,
        y,
        lr=0.01,
        epochs=50,
        batch_size=16,
        validation=(x_val, y_val),
        patience=1,
    )

    val_losses = [h["val_loss"] for h in result.history]
    assert result.stopped_early
    assert len(result.history) < 50
    assert val_losses[-1] >= val_losses[-2]
    assert result.best_epoch == len(result.history) - 1
    assert val_losses[result.best_epoch - 1] == min(val_losses)
    returned = evaluate(result.model, x_val, y_val)["loss"]
    assert returned == pytest.approx(min(val_losses), rel=1e-12)


def test_early_stopping_waits_patience_epochs():
    x, y = _blobs()
    x_val, y_val = x.copy(), (y + 1) % 3
    result = fit(
        _small_model(),
        x,
        y,
        lr=0.01,
        epochs=50,
        batch_size=16,
        validation=(x_val, y_val),
        patience=3,
    )

    val_losses = [h["val_loss"] for h in result.history]
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 3
    assert min(val_losses[-3:]) >= val_losses[result.best_epoch - 1]


def test_patience_none_runs_every_epoch():
    x, y = _blobs()
    x_val, y_val = x.copy(), (y + 1) % 3
    result = fit(
        _small_model(), x, y, epochs=6, validation=(x_val, y_val), patience=None
    )

    assert len(result.history) == 6
    assert not result.stopped_early


def test_fit_counts_validation_rows():
    x, y = _blobs()
    settings = {"epochs": 1, "seed": 0}
    assert fit(_small_model(), x, y, validation=None, **settings).validation_rows == 0
    pair = fit(_small_model(), x, y, validation=(x[:7], y[:7]), **settings)
    assert pair.validation_rows == 7
    held_out = fit(_small_model(), x, y, validation=0.25, **settings)
    assert held_out.validation_rows == pytest.approx(0.25 * len(y), abs=3)


def test_divergence_names_learning_rate():
    x, y = _blobs()
    model = _small_model()
    before = {name: value.copy() for name, value in model.arrays().items()}

    with pytest.raises(TrainingDiverged, match="learning rate 1e\\+06") as caught:
        fit(model, x, y, lr=1e6, epochs=5)

    message = str(caught.value)
    assert "epoch 1, step" in message
    # A tenth, 1e5, would diverge too; Adam's default rate is named instead.
    assert "try a smaller learning rate, e.g. 0.001." in message
    assert isinstance(caught.value, ValueError)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(value, before[name])


def test_divergence_on_overflow():
    # The first step at lr = 1e308 makes the weights so large that the next
    # forward pass overflows, so the loss is NaN rather than merely large.
    x, y = _blobs()
    model = _small_model(activation="sigmoid")
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        fit(model, x, y, optimizer="sgd", lr=1e308, epochs=2, validation=None)


def test_failure_before_first_update_names_no_rate():
    x = np.full((2, 6), 1e-200)
    y = np.array([0, 1])
    # 300 identity blocks scaled by 10: finite logits near 1e168, but a
    # gradient past float64's range.
    model = resgrad.ResidualMLP.init(
        [6] * 301 + [3], activation="identity", seed=0, alpha=10.0
    )
    with pytest.raises(TrainingDiverged) as caught:
        fit(model, x, y, epochs=1, validation=None)
    assert str(caught.value) == (
        "Training failed at epoch 1, step 1, before its first update, so the "
        "learning rate is not the cause: the loss or a gradient became NaN or "
        "infinite; scale the inputs or the weights down."
    )
    # 400 such blocks overflow the forward pass, which names the block.
    model = resgrad.ResidualMLP.init(
        [6] * 401 + [3], activation="identity", seed=0, alpha=10.0
    )
    with pytest.raises(TrainingDiverged, match="overflowed float64 in block") as caught:
        fit(model, np.full((2, 6), 0.5), y, epochs=1, validation=None)
    assert "learning rate is not the cause" in str(caught.value)
    assert "e.g." not in str(caught.value)


def test_weight_written_in_place_is_named_before_training():
    model = _small_model(activation="tanh")
    model.blocks[0].b1[0] = np.inf
    x, y = _blobs()
    with pytest.raises(ValueError, match="model's blocks.0.b1 contains NaN or Inf"):
        fit(model, x, y, epochs=1)


def test_fit_leaves_inputs_unchanged():
    x, y = _blobs()
    x_val, y_val = _blobs(n=30, seed=1)
    copies = [a.copy() for a in (x, y, x_val, y_val)]
    model = _small_model()
    before = {name: value.copy() for name, value in model.arrays().items()}

    fit(model, x, y, epochs=2, validation=(x_val, y_val))
    fit(model, x, y, epochs=2, validation=0.2)

    for original, copy in zip((x, y, x_val, y_val), copies):
        np.testing.assert_array_equal(original, copy)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(value, before[name])


class _RecordingBar:
    """A stand-in for a tqdm bar that stores every postfix it receives."""

    def __init__(self, iterable, **kwargs):
        self.iterable, self.kwargs, self.postfixes = iterable, kwargs, []

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, values):
        self.postfixes.append(dict(values))


def test_progress_receives_losses_per_epoch():
    x, y = _blobs()
    bars = []

    def progress(iterable, **kwargs):
        bars.append(_RecordingBar(iterable, **kwargs))
        return bars[-1]

    result = fit(_small_model(), x, y, epochs=3, progress=progress)

    (bar,) = bars
    assert bar.kwargs == {"desc": "train", "total": 3}
    assert len(bar.postfixes) == 3
    assert bar.postfixes[-1]["train_loss"] == result.history[-1]["train_loss"]
    assert bar.postfixes[-1]["val_loss"] == result.history[-1]["val_loss"]


def test_progress_accepts_tqdm():
    tqdm = pytest.importorskip("tqdm")
    x, y = _blobs()
    stream = io.StringIO()
    bars = []

    def progress(iterable, **kwargs):
        bars.append(tqdm.tqdm(iterable, file=stream, **kwargs))
        return bars[-1]

    fit(_small_model(), x, y, epochs=2, progress=progress)

    assert "train_loss" in bars[0].postfix
    assert "val_loss" in bars[0].postfix
    assert "train" in stream.getvalue()


def test_progress_without_set_postfix():
    x, y = _blobs()
    seen = []

    def progress(iterable, **kwargs):
        seen.append(kwargs)
        return iterable

    result = fit(_small_model(), x, y, epochs=2, progress=progress)

    assert seen == [{"desc": "train", "total": 2}]
    assert len(result.history) == 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"optimizer": "lbfgs"}, ValueError, "Unknown optimizer 'lbfgs'"),
        ({"lr": 0.0}, ValueError, "learning rate > 0, got 0.0"),
        ({"lr": -0.1}, ValueError, "learning rate > 0, got -0.1"),
        ({"lr": float("nan")}, ValueError, "learning rate > 0, got nan"),
        ({"batch_size": 0}, ValueError, "batch_size >= 1, got 0"),
        (
            {"batch_size": 2.5},
            TypeError,
            "Expected batch_size to be an integer, got 2.5",
        ),
        ({"epochs": 0}, ValueError, "epochs >= 1, got 0"),
        ({"patience": 0}, ValueError, "patience >= 1, got 0"),
        # The count the run is made of comes first.
        ({"epochs": 0, "patience": 0}, ValueError, "epochs >= 1, got 0"),
        ({"validation": 1.0}, ValueError, "validation fraction in \\(0, 1\\)"),
        ({"validation": -0.1}, ValueError, "validation fraction in \\(0, 1\\)"),
        ({"validation": "0.1"}, TypeError, "Expected validation as a fraction"),
        ({"validation": (1, 2, 3)}, ValueError, "pair \\(x_val, y_val\\)"),
        ({"loss": "score"}, ValueError, "Cannot train on loss 'score'"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay >= 0"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, error, message):
    x, y = _blobs()
    with pytest.raises(error, match=message):
        fit(_small_model(), x, y, **{"epochs": 1, **kwargs})


def test_fit_takes_counts_as_0d_arrays(tmp_path):
    """Counts given as 0-d arrays work as in the attacks and saliency maps,
    and the checkpoint, which stores the settings as JSON, takes them."""
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    result = fit(
        _small_model(),
        x,
        y,
        epochs=np.array(3),
        batch_size=np.int64(16),
        validation=None,
        checkpoint=path,
    )
    assert len(result.history) == 3
    assert path.exists()
    again = fit(_small_model(), x, y, epochs=3, batch_size=16, validation=None, seed=0)
    for name, value in result.model.arrays().items():
        np.testing.assert_array_equal(value, again.model.arrays()[name])


def test_fit_rejects_label_out_of_range():
    x, y = _blobs()
    y = y.copy()
    y[4] = 3
    with pytest.raises(ValueError, match="Label 3 in y is outside \\[0, 3\\)"):
        fit(_small_model(), x, y, epochs=1)


def test_fit_rejects_validation_label_out_of_range():
    x, y = _blobs()
    with pytest.raises(ValueError, match="Label -1 in y_val is outside"):
        fit(_small_model(), x, y, epochs=1, validation=(x[:5], np.full(5, -1)))


def test_fit_rejects_fraction_without_validation_rows():
    # One row per class: every row must stay in the training part.
    x, y = _blobs(n=3)
    with pytest.raises(
        ValueError, match=r"set empty, .*or None \(--validation 0 on the"
    ):
        fit(_small_model(), x, y, epochs=1, validation=0.5)


def test_fit_rejects_wrong_width():
    x, y = _blobs()
    with pytest.raises(ValueError, match="Expected x to have 4 features"):
        fit(_small_model(), x[:, :3], y, epochs=1)


# Evaluation.


def test_evaluate_matches_gradients_loss_and_accuracy():
    x, y = _blobs()
    model = _small_model()
    report = evaluate(model, x, y)

    expected_loss = float(resgrad.gradients(model, x, y).loss)
    confusion = np.array(report["confusion_matrix"])
    assert report["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert report["accuracy"] == accuracy(model, x, y)
    assert confusion.shape == (3, 3)
    assert confusion.sum() == len(y)
    assert confusion.sum(axis=1).tolist() == np.bincount(y, minlength=3).tolist()
    assert np.trace(confusion) / len(y) == pytest.approx(report["accuracy"])


def test_evaluate_confusion_counts_predictions():
    x, y = _blobs()
    model = _small_model()
    predicted = np.asarray(model.predict(x))
    confusion = evaluate(model, x, y)["confusion_matrix"]

    for true_class in range(3):
        for predicted_class in range(3):
            count = int(np.sum((y == true_class) & (predicted == predicted_class)))
            assert confusion[true_class][predicted_class] == count


def test_accuracy_exact_in_float32():
    x, y = _blobs(n=30)
    model = _small_model().convert(torch, dtype="float32")
    x_32, y_32 = torch.from_numpy(x).float(), torch.from_numpy(y)
    hits = int((model.predict(x_32) == y_32).sum())

    assert accuracy(model, x_32, y_32) == hits / 30
    assert evaluate(model, x_32, y_32)["accuracy"] == hits / 30


def test_accuracy_rejects_float_labels():
    x, y = _blobs()
    with pytest.raises(TypeError, match="integer class labels"):
        accuracy(_small_model(), x, y.astype(np.float64))


# The digits.


def test_fit_digits_reaches_accuracy():
    data = load_digits(test_size=0.25, seed=0)
    model = resgrad.ResidualMLP.init([64, 64, 10], 64, seed=0)
    result = fit(
        model, data.x_train, data.y_train, epochs=4, batch_size=64, validation=None
    )

    assert accuracy(result.model, data.x_test, data.y_test) >= 0.9


# Checkpoints and resuming.


class Interrupted(Exception):
    """Stands in for a run killed between two epochs."""


def _interrupt_after(epochs_done):
    """Return a progress wrapper that stops the run after ``epochs_done`` epochs."""

    def progress(epochs, **kwargs):
        for index in epochs:
            if index == epochs_done:
                raise Interrupted(f"stopped before epoch {index + 1}")
            yield index

    return progress


def _fit_until_interrupted(model, x, y, path, epochs_done, **settings):
    """Run ``fit`` with a checkpoint at ``path`` and stop it after
    ``epochs_done`` epochs."""
    with pytest.raises(Interrupted):
        fit(
            model,
            x,
            y,
            checkpoint=path,
            progress=_interrupt_after(epochs_done),
            **settings,
        )


def _shifted_validation(x, y):
    # Training on y raises the loss on these labels, so early stopping waits.
    return x.copy(), (y + 1) % 3


def _early_stopping_settings(x, y):
    """Return fit settings under which early stopping ends the run."""
    return {
        "lr": 0.01,
        "epochs": 30,
        "batch_size": 16,
        "validation": _shifted_validation(x, y),
        "patience": 5,
        "seed": 3,
    }


def _resume_case(tmp_path, optimizer, epochs_done):
    """Return the uninterrupted result and the interrupted-then-resumed one."""
    x, y = _blobs()
    settings = dict(optimizer=optimizer, **_early_stopping_settings(x, y))
    full = fit(_small_model(), x, y, **settings)
    path = tmp_path / "run.ckpt"
    _fit_until_interrupted(_small_model(), x, y, path, epochs_done, **settings)
    resumed = fit(_small_model(), x, y, checkpoint=path, resume=True, **settings)
    return full, resumed


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_resume_matches_uninterrupted(tmp_path, optimizer):
    full, resumed = _resume_case(tmp_path, optimizer, epochs_done=3)

    assert full.stopped_early
    assert _weights_equal(full.model, resumed.model)
    assert resumed.best_epoch == full.best_epoch
    assert resumed.steps == full.steps
    assert resumed.stopped_early
    losses = [h["train_loss"] for h in resumed.history]
    assert losses == [h["train_loss"] for h in full.history]


def test_resume_while_early_stopping_waits(tmp_path):
    # Interrupted after the best epoch, the checkpoint must carry the best
    # weights and the epochs waited, or the resumed run stops elsewhere.
    x, y = _blobs()
    probe = fit(_small_model(), x, y, **_early_stopping_settings(x, y))
    assert probe.best_epoch + 2 < len(probe.history)

    full, resumed = _resume_case(tmp_path, "adam", epochs_done=probe.best_epoch + 2)

    assert resumed.best_epoch == full.best_epoch
    assert len(resumed.history) == len(full.history)
    assert _weights_equal(full.model, resumed.model)


def test_resume_on_torch_matches_uninterrupted(tmp_path):
    x, y = _blobs()
    model = _small_model().convert(torch)
    x, y = torch.asarray(x), torch.asarray(y)
    settings = {"epochs": 4, "batch_size": 16, "validation": None, "seed": 1}
    full = fit(model, x, y, **settings)
    path = tmp_path / "run.ckpt"
    _fit_until_interrupted(model, x, y, path, 2, **settings)
    resumed = fit(model, x, y, checkpoint=path, resume=True, **settings)

    for name, value in resumed.model.arrays().items():
        assert isinstance(value, torch.Tensor)
        assert torch.equal(value, full.model.arrays()[name])


def test_checkpoint_stores_optimizer_and_rng(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    result = fit(_small_model(), x, y, epochs=2, validation=None, checkpoint=path)
    header, arrays = resgrad.io.load_checkpoint(path)

    weights = _small_model().arrays()
    assert {f"state.mu.{key}" for key in weights} <= set(arrays)
    assert {f"state.nu.{key}" for key in weights} <= set(arrays)
    assert header["optimizer_state"]["scalars"] == {"count": result.steps}
    assert header["steps"] == result.steps
    assert header["rng"]["bit_generator"] == "PCG64"
    assert len(header["history"]) == 2
    np.testing.assert_array_equal(
        arrays["params.blocks.0.W1"], result.model.arrays()["blocks.0.W1"]
    )


def test_resume_finished_run_takes_no_step(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"epochs": 2, "validation": None, "checkpoint": path}
    first = fit(_small_model(), x, y, **settings)
    again = fit(_small_model(), x, y, resume=True, **settings)

    assert again.steps == first.steps
    assert _weights_equal(first.model, again.model)


def test_resume_to_another_epoch_count(tmp_path):
    x, y = _blobs()
    settings = {"batch_size": 16, "validation": None, "seed": 1}
    path = tmp_path / "run.ckpt"
    _fit_until_interrupted(_small_model(), x, y, path, 3, epochs=6, **settings)
    saved = path.read_bytes()
    with pytest.raises(
        ValueError,
        match="already run 3 epochs, and epochs counts them too. Ask for at least "
        "3 epochs, such as 5 for 2 more",
    ):
        fit(_small_model(), x, y, epochs=2, checkpoint=path, resume=True, **settings)
    assert path.read_bytes() == saved

    resumed = fit(
        _small_model(), x, y, epochs=4, checkpoint=path, resume=True, **settings
    )
    full = fit(_small_model(), x, y, epochs=4, **settings)
    assert len(resumed.history) == 4
    assert _weights_equal(full.model, resumed.model)


@pytest.mark.parametrize(
    "change, difference",
    [
        ({"seed": 4}, "seed (--seed) 3 in the checkpoint but 4 now"),
        ({"batch_size": 8}, "batch_size (--batch-size) 16 in the checkpoint but 8 now"),
        ({"lr": 0.02}, "lr (--lr) 0.01 in the checkpoint but 0.02 now"),
        (
            {"optimizer": "sgd"},
            "optimizer (--optimizer) 'Adam' in the checkpoint but 'SGD' now",
        ),
    ],
)
def test_resume_rejects_other_settings(tmp_path, change, difference):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {
        "epochs": 1,
        "validation": None,
        "seed": 3,
        "batch_size": 16,
        "lr": 0.01,
    }
    fit(_small_model(), x, y, checkpoint=path, **settings)

    settings.update(change)
    with pytest.raises(resgrad.CheckpointMismatch, match=re.escape(difference)):
        fit(_small_model(), x, y, checkpoint=path, resume=True, **settings)


def test_resume_names_what_changed_digests_come_from(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    fit(_small_model(), x, y, epochs=1, checkpoint=path, seed=3)
    with pytest.raises(resgrad.CheckpointMismatch) as caught:
        fit(_small_model(), x[:-4], y[:-4], epochs=1, checkpoint=path, resume=True)
    message = str(caught.value)
    assert "data SHA-256" in message
    assert (
        "(the training rows differ: another data file, labels, --header, --test-size"
        in (message)
    )


def test_resume_names_network_shape_for_weights(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    fit(_small_model(), x, y, epochs=1, checkpoint=path)
    wider = resgrad.ResidualMLP.init([x.shape[1], 9, 3], seed=0)
    with pytest.raises(resgrad.CheckpointMismatch) as caught:
        fit(wider, x, y, epochs=1, checkpoint=path, resume=True)
    message = str(caught.value)
    assert "model sizes (--widths and the data) [4, 8, 3] in the checkpoint" in message
    assert "another --seed, --init or network shape on the command line" in message


@pytest.mark.parametrize(
    "first, then",
    [
        ({"batch_size": np.int64(16), "seed": np.int64(3)}, {}),
        ({"patience": np.int64(4)}, {}),
        ({"validation": 0}, {"validation": None}),
        ({"patience": 4}, {"patience": 9}),
    ],
)
def test_resume_takes_settings_that_train_alike(tmp_path, first, then):
    # NumPy integers must reach the JSON header as ints, and without
    # validation neither 0 against None nor the unused patience differs.
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"epochs": 2, "validation": None, "seed": 3, "batch_size": 16}
    _fit_until_interrupted(_small_model(), x, y, path, 1, **{**settings, **first})
    resumed = fit(
        _small_model(), x, y, checkpoint=path, resume=True, **{**settings, **then}
    )

    assert _weights_equal(resumed.model, fit(_small_model(), x, y, **settings).model)


def test_resume_ignores_stored_patience_without_validation(tmp_path):
    # Checkpoints written before patience was dropped for runs without
    # validation store it, and no argument could match it now.
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"epochs": 2, "validation": None, "seed": 3, "batch_size": 16}
    _fit_until_interrupted(_small_model(), x, y, path, 1, **settings)
    header, arrays = resgrad.io.load_checkpoint(path)
    header["settings"]["patience"] = 10
    header = {k: v for k, v in header.items() if k not in ("format", "format_version")}
    resgrad.io.save_checkpoint(path, header, arrays)

    resumed = fit(_small_model(), x, y, checkpoint=path, resume=True, **settings)
    assert _weights_equal(resumed.model, fit(_small_model(), x, y, **settings).model)


def test_resume_names_every_difference(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"epochs": 1, "validation": None, "seed": 3, "lr": 0.01}
    fit(_small_model(), x, y, checkpoint=path, **settings)

    settings.update(seed=4, lr=0.02)
    with pytest.raises(ValueError) as caught:
        fit(_small_model(), x, y, checkpoint=path, resume=True, **settings)
    message = str(caught.value)
    assert "lr (--lr) 0.01 in the checkpoint but 0.02 now" in message
    assert "seed (--seed) 3 in the checkpoint but 4 now" in message
    assert "optimizer" not in message


def _resume_one_epoch(path, x, y):
    """Resume one epoch of a fresh small model from the checkpoint ``path``."""
    return fit(
        _small_model(), x, y, epochs=1, validation=None, checkpoint=path, resume=True
    )


def test_resume_rejects_other_data(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=path)
    with pytest.raises(
        ValueError, match=r"data SHA-256 \w{12}\.\.\. in the checkpoint"
    ):
        _resume_one_epoch(path, x + 1, y)


def test_resume_without_checkpoint_file(tmp_path):
    x, y = _blobs()
    path = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        fit(_small_model(), x, y, epochs=1, checkpoint=path, resume=True)


def test_resume_needs_checkpoint_path():
    x, y = _blobs()
    with pytest.raises(ValueError, match="resume=True needs the checkpoint path"):
        fit(_small_model(), x, y, epochs=1, resume=True)


def test_resume_rejects_corrupt_checkpoint(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="is not a resgrad checkpoint file"):
        _resume_one_epoch(path, x, y)


def _edit_header(path, edit):
    """Rewrite the checkpoint at ``path`` with ``edit`` applied to its header."""
    header, arrays = resgrad.io.load_checkpoint(path)
    edit(header)
    for name in ("format", "format_version"):
        header.pop(name)
    resgrad.io.save_checkpoint(path, header, arrays)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda h: h.update(history=["junk", "junk"]),
            "record 1 of the history is 'junk'",
        ),
        (lambda h: h.update(history={"epoch": 1}), "the history is {'epoch': 1}"),
        (
            lambda h: h["history"][1].update(epoch=5),
            "record 2 of the history is .* not that of epoch 2",
        ),
        (
            lambda h: h["stopping"].update(best_epoch=9),
            "the best epoch 9 is not one of the 2 run",
        ),
        (
            lambda h: h["optimizer_state"]["scalars"].update(count="x"),
            "the optimizer state field count is 'x', not an integer",
        ),
        (
            lambda h: h["optimizer_state"]["scalars"].update(count=-5),
            r"the optimizer state's count -5 is not the \d+ steps taken",
        ),
        (
            lambda h: h.update(loss_limit=10**400),
            "loss_limit is 1000.*, beyond the range of floats",
        ),
        (
            lambda h: h["rng"]["state"].update(state=-1),
            "rng, the state of the shuffling generator, is invalid",
        ),
        (
            lambda h: h["stopping"].update(waited=10**30),
            "stopping.waited is 1000.*, not the 0 epochs run since the best",
        ),
        (
            lambda h: h["stopping"].update(waited=1),
            "stopping.waited is 1, not the 0 epochs run since the best epoch 2",
        ),
        (
            lambda h: h["stopping"].update(best_is_current=False),
            "stopping.best_is_current is False, but the best epoch 2 is the last",
        ),
        (
            lambda h: h.update(stopped_early="no"),
            "stopped_early is 'no', not true or false",
        ),
        (
            lambda h: h["stopping"].update(best_epoch="2"),
            "stopping.best_epoch is '2', not an integer >= 0",
        ),
        (
            lambda h: h.update(loss_limit=-5.0),
            "loss_limit is -5.0, where a number of at least 10000 was expected",
        ),
        (
            lambda h: h.update(loss_limit=0.5),
            "loss_limit is 0.5, where a number of at least 10000 was expected",
        ),
    ],
    ids=[
        "junk records",
        "dict history",
        "skipped epoch",
        "best epoch",
        "count",
        "negative count",
        "huge loss limit",
        "negative generator state",
        "huge wait",
        "early wait",
        "best not current",
        "text flag",
        "text best epoch",
        "negative loss limit",
        "loss limit below the factor",
    ],
)
def test_resume_rejects_damaged_header(tmp_path, edit, message):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"epochs": 2, "validation": None, "checkpoint": path}
    fit(_small_model(), x, y, **settings)
    _edit_header(path, edit)
    with pytest.raises(
        ValueError, match=f"is not a resgrad checkpoint file.*{message}"
    ):
        fit(_small_model(), x, y, **{**settings, "epochs": 3}, resume=True)


def test_resume_rejects_negative_second_moment(tmp_path):
    """A negative mean of squares, which no run saves, is named, not left to
    fail as a divergence blamed on the learning rate."""
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    settings = {"validation": None, "checkpoint": path, "optimizer": "adam"}
    fit(_small_model(), x, y, epochs=2, **settings)
    header, arrays = resgrad.io.load_checkpoint(path)
    damaged = np.array(arrays["state.nu.blocks.0.W1"])
    damaged[0, 0] = -1.0
    arrays["state.nu.blocks.0.W1"] = damaged
    message = r"state\.nu\.blocks\.0\.W1, a mean of squares, contains negative values"
    for name in ("format", "format_version"):
        header.pop(name)
    resgrad.io.save_checkpoint(path, header, arrays)
    with pytest.raises(
        ValueError, match=f"is not a resgrad checkpoint file.*{message}"
    ):
        fit(_small_model(), x, y, epochs=3, **settings, resume=True)


class _CountState(NamedTuple):
    step2: int
    m1: dict


class _MomentState(NamedTuple):
    step2: int
    moment: dict


class _CountingSGD:
    """A custom optimizer whose state fields have names with a digit: a
    number, which the checkpoint header holds, and a dict of arrays, whose
    member keys cannot."""

    def init(self, params):
        return _CountState(
            0, {key: np.zeros_like(value) for key, value in params.items()}
        )

    def update(self, grads, state, params):
        stepped = {key: params[key] - 0.1 * grads[key] for key in params}
        return stepped, _CountState(state.step2 + 1, state.m1)


class _SingleSGD(_CountingSGD):
    """A custom optimizer that returns one weight in float32, as a careless
    one may."""

    def update(self, grads, state, params):
        stepped, state = super().update(grads, state, params)
        stepped["blocks.0.W1"] = stepped["blocks.0.W1"].astype(np.float32)
        return stepped, state


def test_fit_checks_custom_optimizer_weights():
    # resgrad's own optimizers keep the model's dtype, so fit skips the
    # checks of replace_arrays for them, but not for the caller's.
    x, y = _blobs()
    with pytest.raises(TypeError, match=r"Expected all weights in one dtype"):
        fit(_small_model(), x, y, optimizer=_SingleSGD(), epochs=1)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fit_steps_equal_replace_arrays_steps(optimizer):
    # Four steps, so that every step after the first takes its gradients
    # at weights that the optimizer made.
    x, y = _blobs(n=64)
    model = _small_model()
    result = fit(
        model, x, y, optimizer=optimizer, epochs=1, batch_size=16, validation=None
    )
    opt = resgrad.training.get_optimizer(optimizer)
    params = model.arrays()
    state = opt.init(params)
    order = np.random.default_rng(0).permutation(64)
    for start in range(0, 64, 16):
        rows = order[start : start + 16]
        current = model.replace_arrays(params)
        grads = resgrad.gradients(current, x[rows], y[rows], with_input=False)
        params, state = opt.update(grads.arrays(), state, params)
    assert result.steps == 4
    assert _weights_equal(result.model, model.replace_arrays(params))


def test_checkpoint_rejects_state_field_name_before_training(tmp_path, monkeypatch):
    epochs_run = []
    original = resgrad.training._train
    monkeypatch.setattr(
        resgrad.training, "_train", lambda *a: epochs_run.append(1) or original(*a)
    )
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    with pytest.raises(TypeError, match="optimizer state field 'm1'; the names"):
        fit(_small_model(), x, y, optimizer=_CountingSGD(), epochs=2, checkpoint=path)
    assert epochs_run == []
    assert not path.exists()
    # Without a checkpoint the name does not matter.
    assert fit(_small_model(), x, y, optimizer=_CountingSGD(), epochs=1).steps > 0
    # A number's field name may have a digit, since the header stores it.
    renamed = _CountingSGD()
    renamed.init = lambda params: _MomentState(
        0, {k: np.zeros_like(v) for k, v in params.items()}
    )
    renamed.update = lambda grads, state, params: (
        {k: params[k] - 0.1 * grads[k] for k in params},
        _MomentState(state.step2 + 1, state.moment),
    )
    fit(_small_model(), x, y, optimizer=renamed, epochs=1, checkpoint=path)
    resumed = fit(
        _small_model(), x, y, optimizer=renamed, epochs=2, checkpoint=path, resume=True
    )
    whole = fit(_small_model(), x, y, optimizer=renamed, epochs=2)
    assert resumed.steps == whole.steps
    assert _weights_equal(resumed.model, whole.model)


def test_resume_rejects_model_file(tmp_path):
    x, y = _blobs()
    path = tmp_path / "model.npz"
    resgrad.save(_small_model(), path)
    with pytest.raises(ValueError, match="is a resgrad model file, not a checkpoint"):
        _resume_one_epoch(path, x, y)


def test_divergence_writes_no_checkpoint(tmp_path):
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    with pytest.raises(
        TrainingDiverged, match="epoch 1, step .* learning rate 1e\\+06"
    ):
        fit(_small_model(), x, y, lr=1e6, epochs=3, validation=None, checkpoint=path)

    assert list(tmp_path.iterdir()) == []


def test_checkpoint_every_writes_due_epochs_and_the_last(tmp_path, checkpoint_writes):
    x, y = _blobs()
    written = checkpoint_writes
    path = tmp_path / "run.ckpt"
    fit(
        _small_model(), x, y, epochs=10, validation=None, checkpoint=path,
        checkpoint_every=4,
    )  # fmt: skip

    assert written == [4, 8, 10]
    assert len(resgrad.io.load_checkpoint(path)[0]["history"]) == 10


def test_checkpoint_every_writes_an_early_stop(tmp_path, checkpoint_writes):
    x, y = _blobs()
    settings = _early_stopping_settings(x, y)
    full = fit(_small_model(), x, y, **settings)
    assert full.stopped_early and len(full.history) % 4 != 0
    written = checkpoint_writes
    fit(
        _small_model(), x, y, checkpoint=tmp_path / "run.ckpt", checkpoint_every=4,
        **settings,
    )  # fmt: skip

    assert written[-1] == len(full.history)


def _interrupt_at_step(monkeypatch, error, at):
    """Make the ``at``-th training step of the run raise ``error``."""
    from resgrad import training

    step = training._Run._step
    calls = []

    def interrupted(self, *args):
        calls.append(None)
        if len(calls) == at:
            raise error
        return step(self, *args)

    monkeypatch.setattr(training._Run, "_step", interrupted)


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), TrainingDiverged("stands in for a divergence")]
)
def test_checkpoint_every_keeps_last_finished_epoch(tmp_path, monkeypatch, error):
    # 90 rows in batches of 16 take 6 steps an epoch; step 21 is in epoch 4.
    x, y = _blobs()
    settings = {"epochs": 8, "batch_size": 16, "validation": None, "seed": 2}
    full = fit(_small_model(), x, y, **settings)
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, error, at=21)
        with pytest.raises(type(error)):
            fit(
                _small_model(), x, y, checkpoint=path, checkpoint_every=5,
                **settings,
            )  # fmt: skip

    header, _ = resgrad.io.load_checkpoint(path)
    assert len(header["history"]) == 3
    assert header["steps"] == 18
    if isinstance(error, KeyboardInterrupt) and sys.version_info >= (3, 11):
        note = (
            f"The checkpoint {path} contains epoch 3; call fit with the same "
            "arguments and resume=True to continue."
        )
        assert error.__notes__ == [note]
    # The shuffling generator is stored as it was after epoch 3, before
    # epoch 4 drew its order.
    resumed = fit(_small_model(), x, y, checkpoint=path, resume=True, **settings)
    assert _weights_equal(full.model, resumed.model)
    assert resumed.steps == full.steps
    assert [h["train_loss"] for h in resumed.history] == [
        h["train_loss"] for h in full.history
    ]


@pytest.mark.parametrize(
    ("error", "calls", "epochs"),
    [(KeyboardInterrupt(), 3, 4), (OSError(28, "No space left on device"), 2, 2)],
)
def test_checkpoint_write_that_fails(tmp_path, monkeypatch, error, calls, epochs):
    # An interrupt during a due write writes that epoch again before the run
    # stops; a full disk is not tried again.
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    save = resgrad.io.save_checkpoint
    written = []

    def failing_second(path, header, arrays):
        written.append(len(header["history"]))
        if len(written) == 2:
            raise error
        save(path, header, arrays)

    monkeypatch.setattr(resgrad.io, "save_checkpoint", failing_second)
    with pytest.raises(type(error)):
        fit(
            _small_model(), x, y, epochs=6, validation=None, checkpoint=path,
            checkpoint_every=2,
        )  # fmt: skip

    assert len(written) == calls
    assert len(resgrad.io.load_checkpoint(path)[0]["history"]) == epochs


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_checkpoint_every_rejects_non_counts(value, error):
    x, y = _blobs()
    with pytest.raises(error, match="checkpoint_every"):
        fit(_small_model(), x, y, epochs=1, checkpoint_every=value)


def test_checkpoint_lock_held_during_fit(tmp_path):
    pytest.importorskip("fcntl")
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    lock = tmp_path / "run.ckpt.lock"
    seen = []

    def progress(epochs, **kwargs):
        for epoch in epochs:
            seen.append(lock.read_text())
            yield epoch

    fit(
        _small_model(),
        x,
        y,
        epochs=2,
        validation=None,
        checkpoint=path,
        progress=progress,
    )
    assert seen == [f"{os.getpid()}\n"] * 2
    assert not lock.exists()


def test_checkpoint_in_use_rejected(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    # Another run's lock, taken outside resgrad as a second process would.
    with open(tmp_path / "run.ckpt.lock", "w") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("4242\n")
        other.flush()
        with pytest.raises(
            FileExistsError,
            match=r"run.ckpt is in use by another training run \(process 4242\)",
        ):
            fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt.lock"]


def test_checkpoint_path_checked_before_training(tmp_path):
    x, y = _blobs()
    started = []

    def progress(epochs, **kwargs):
        started.append(True)
        return epochs

    (tmp_path / "file").write_text("")
    cases = [
        (tmp_path / "missing" / "run.ckpt", FileNotFoundError, "does not exist"),
        (tmp_path, IsADirectoryError, "it is a folder, not a file"),
        (tmp_path / "file" / "run.ckpt", NotADirectoryError, "is a file, not"),
        ("", ValueError, "checkpoint is an empty path"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message):
            fit(_small_model(), x, y, epochs=1, checkpoint=path, progress=progress)
    assert started == []


def test_checkpoint_in_use_by_another_thread(tmp_path):
    pytest.importorskip("fcntl")
    x, y = _blobs()
    path = tmp_path / "run.ckpt"
    errors = []

    def second_run():
        try:
            fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=path)
        except FileExistsError as error:
            errors.append(str(error))

    def progress(epochs, **kwargs):
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
        return epochs

    fit(
        _small_model(),
        x,
        y,
        epochs=1,
        validation=None,
        checkpoint=path,
        progress=progress,
    )
    assert len(errors) == 1
    assert f"is in use by another training run (process {os.getpid()})" in errors[0]


def _fit_inside_fit(first_path, second_path):
    """Run fit on ``first_path`` and, from its progress callback, a second
    fit on ``second_path``; return the second's FileExistsError message."""
    x, y = _blobs()
    errors = []

    def progress(epochs, **kwargs):
        try:
            fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=second_path)
        except FileExistsError as error:
            errors.append(str(error))
        return epochs

    fit(
        _small_model(),
        x,
        y,
        epochs=1,
        validation=None,
        checkpoint=first_path,
        progress=progress,
    )
    return errors


def test_checkpoint_lock_covers_symlink_and_nested_fit(tmp_path):
    pytest.importorskip("fcntl")
    path = tmp_path / "run.ckpt"
    link = tmp_path / "link.ckpt"
    link.symlink_to(path)
    # A fit inside a fit of the same thread is a second run too, and a
    # symbolic link names the same checkpoint.
    for second in (path, link):
        errors = _fit_inside_fit(path, second)
        assert len(errors) == 1, second
        assert f"holds the lock on {tmp_path / 'run.ckpt.lock'}" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.ckpt", "run.ckpt"]


def test_checkpoint_lock_of_relative_path_survives_chdir(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")
    x, y = _blobs()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)

    def progress(epochs, **kwargs):
        os.chdir(tmp_path / "elsewhere")
        return epochs

    fit(
        _small_model(),
        x,
        y,
        epochs=1,
        validation=None,
        checkpoint="run.ckpt",
        progress=progress,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "run.ckpt"]


@pytest.mark.parametrize("namespace", [np, torch])
def test_adam_eps_that_rounds_to_zero_is_rejected(namespace):
    x, y = _blobs()
    model = _small_model().convert(namespace, dtype="float16")
    x16 = namespace.asarray(x.astype(np.float16))
    y = namespace.asarray(y)
    with pytest.raises(ValueError, match="Adam's eps=1e-08 rounds to 0 in"):
        fit(model, x16, y, epochs=1, validation=None)
    # An eps that float16 can hold trains, as SGD does.
    for optimizer in (Adam(lr=1e-3, eps=1e-4), "sgd"):
        fit(model, x16, y, optimizer=optimizer, epochs=1, validation=None)


def test_adam_eps_zero_divergence_names_eps():
    # A constant feature gives W1 a column of zero gradients, which Adam with
    # eps=0 turns into 0/0 at the first step, whatever the learning rate.
    x, y = _blobs()
    x[:, 1] = 0.0
    with pytest.raises(TrainingDiverged, match="Adam with eps=0 divides by 0"):
        fit(_small_model(), x, y, optimizer=Adam(lr=1e-3, eps=0.0), epochs=1)
    # Without zero gradients, an overflowing step is the learning rate's.
    x, y = _blobs()
    smooth = _small_model(activation="tanh")
    with pytest.raises(TrainingDiverged, match="try a smaller learning rate"):
        fit(smooth, x, y, optimizer=Adam(lr=1e308, eps=0.0), epochs=1)


@pytest.mark.parametrize(
    ("y_val", "error", "message"),
    [
        (lambda y: y.astype(float), TypeError, "integer class labels in y_val"),
        (lambda y: y[:-1], ValueError, "one label per row of x_val"),
    ],
)
def test_validation_pair_errors_name_it(y_val, error, message):
    x, y = _blobs()
    with pytest.raises(error, match=message):
        fit(_small_model(), x, y, epochs=1, validation=(x, y_val(y)))


def test_validation_target_errors_name_it():
    x, y = _blobs()
    target = np.eye(3)[y]
    with pytest.raises(ValueError, match="y_val as a target of shape .* of x_val"):
        fit(
            _small_model(), x, target, loss="squared_error", epochs=1,
            validation=(x, target[:-1]),
        )  # fmt: skip


def test_integer_one_hot_target_names_cast():
    x, y = _blobs()
    with pytest.raises(TypeError, match=r"or as a float target .* cast it with"):
        fit(_small_model(), x, np.eye(3, dtype=np.int64)[y], loss="squared_error")


def test_adam_eps_zero_names_eps_for_underflowing_squares():
    # A feature of 1e-30 gives float32 gradients whose squares are 0, so the
    # step is a tiny number over 0: an infinite weight, not a NaN.
    x, y = _blobs()
    x[:, 1] = 1e-30
    model = _small_model().convert(dtype="float32")
    with pytest.raises(TrainingDiverged, match="Adam with eps=0 divides by 0"):
        fit(
            model, x.astype(np.float32), y, optimizer=Adam(lr=1e-3, eps=0.0),
            epochs=1,
        )  # fmt: skip


def test_checkpoint_never_replaces_another_file(tmp_path):
    x, y = _blobs()
    data = tmp_path / "data.npz"
    np.savez(data, X=x, y=y)
    model_file = tmp_path / "model.npz"
    resgrad.save(_small_model(), model_file)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for path in (data, model_file, notes):
        before = path.read_bytes()
        with pytest.raises(FileExistsError, match="is a file that is not a resgrad"):
            fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=path)
        assert path.read_bytes() == before, path.name
        assert not resgrad.io.is_checkpoint(path)

    # A checkpoint of an earlier run is replaced by a new run.
    checkpoint = tmp_path / "run.ckpt"
    fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=checkpoint)
    assert resgrad.io.is_checkpoint(checkpoint)
    fit(_small_model(), x, y, epochs=1, validation=None, checkpoint=checkpoint)


def test_flags_of_text_raise(tmp_path):
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    x = np.random.default_rng(0).random((6, 4))
    y = np.array([0, 1] * 3)
    with pytest.raises(TypeError, match="Expected resume to be True or False"):
        resgrad.fit(model, x, y, checkpoint=tmp_path / "c.npz", resume="no")
    assert not (tmp_path / "c.npz").exists()
    with pytest.raises(TypeError, match="Expected nesterov to be True or False"):
        resgrad.training.Momentum(0.1, nesterov="no")


@pytest.mark.parametrize("flag", [False, np.False_, None])
def test_progress_off_gives_no_wrapper(flag):
    assert resgrad._arrays.progress_wrapper(flag) is None


def test_progress_true_draws_tqdm_bar():
    from tqdm.auto import tqdm

    wrapper = resgrad._arrays.progress_wrapper(True)
    bar = wrapper(range(3), desc="steps", disable=True)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]


@pytest.mark.parametrize("value", ["yes", 3])
def test_progress_of_other_type_raises(value):
    with pytest.raises(TypeError, match="Expected progress to be True, False, None"):
        resgrad._arrays.progress_wrapper(value)


def test_progress_true_without_tqdm_names_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"tqdm is not installed; install it"):
        resgrad._arrays.progress_wrapper(True)


def test_public_loops_take_progress_true():
    """Every function with a progress argument accepts True."""
    from resgrad import depth, robustness, saliency

    model = resgrad.ResidualMLP.init([6, 5, 3], seed=0)
    x = np.linspace(0.0, 1.0, 24).reshape(4, 6)
    y = np.array([0, 1, 2, 0])
    result = resgrad.fit(model, x, y, epochs=1, validation=None, progress=True)
    assert len(result.history) == 1
    saliency.smoothgrad(model, x, samples=2, progress=True)
    saliency.integrated_gradients(model, x, steps=3, progress=True)
    saliency.randomization_check(model, x, progress=True)
    attribution = saliency.vanilla_gradient(model, x)
    saliency.deletion_curve(model, x, attribution, random_orders=1, progress=True)
    robustness.evaluate(model, x, y, "fgsm", 0.1, progress=True)
    depth.depth_sweep(depths=2, widths=4, seeds=1, samples=2, progress=True)
    depth.identity_limit("relu", (0, 1), width=4, seeds=1, samples=2, progress=True)


def test_checkpoint_path_naming_a_folder_rejected(tmp_path):
    x, y = _blobs()
    with pytest.raises(ValueError, match="checkpoint '.*ck.npz/' ends in '/'"):
        fit(_small_model(), x, y, epochs=1, checkpoint=f"{tmp_path}/ck.npz/")
    assert list(tmp_path.iterdir()) == []
