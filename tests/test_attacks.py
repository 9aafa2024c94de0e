"""Tests of resgrad.attacks: the update rules, their limits and torchattacks.

The torchattacks checks run the same weights as a torch.nn.Module
(``resgrad.torch.to_module``) in float32 and compare adversarial inputs to
1e-6. torchattacks 3.5.1 takes images of shape (n, c, h, w), so its model
flattens them first.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchattacks

import resgrad
import resgrad.attacks._common as common
from resgrad import attacks
from resgrad.attacks import AttackResult
from resgrad.attacks._iterative import least_likely_class
from resgrad.torch import to_module

D = 64
CLASSES = 10
N = 12
EPS = 0.1

# Random labels meet a fixed target class in some rows, which the attacks
# warn of; test_target_equal_to_label_warns checks that warning.
pytestmark = pytest.mark.filterwarnings("ignore:target equals the label y")


@pytest.fixture(scope="module")
def model() -> resgrad.ResidualMLP:
    return resgrad.ResidualMLP.init([D, 24, 16, CLASSES], seed=0)


@pytest.fixture(scope="module")
def smooth_model() -> resgrad.ResidualMLP:
    return resgrad.ResidualMLP.init([D, 24, 16, CLASSES], activation="tanh", seed=1)


@pytest.fixture(scope="module")
def flat_model() -> resgrad.ResidualMLP:
    """A network whose logits are the constant b2, so every gradient is zero."""
    return resgrad.ResidualMLP.init([D, 8, CLASSES], alpha=0.0, shortcut="none", seed=0)


def interior_batch(n: int = N, seed: int = 0):
    """Return inputs in [0.2, 0.8], where small steps never reach the box."""
    x, y = make_batch(n, seed, edges=False)
    return 0.2 + 0.6 * x, y


def make_batch(n: int = N, seed: int = 0, edges: bool = True):
    """Return inputs in [0, 1] (a quarter of them at 0 or 1) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, D))
    if edges:
        corners = rng.uniform(size=(n, D)) < 0.25
        x = np.where(corners, np.round(x), x)
    y = rng.integers(0, CLASSES, size=n)
    return x, y


def other_class(y):
    return (y + 1) % CLASSES


# The arguments each attack runs with in the shared property tests.
ARGUMENTS = {
    "fgsm": {"eps": EPS},
    "bim": {"eps": EPS, "steps": 4},
    "illcm": {"eps": EPS, "steps": 4},
    "rfgsm": {"eps": EPS, "seed": 21},
    "mifgsm": {"eps": EPS, "steps": 4},
    "pgd": {"eps": EPS, "steps": 4, "seed": 21},
    "pgd_l2": {"eps": 1.0, "steps": 4, "seed": 21},
    "jsma": {"theta": 0.5, "gamma": 0.25},
    "mjsma": {"theta": 0.5, "gamma": 0.25},
}
NAMES = list(ARGUMENTS)
ITERATIVE = ["bim", "illcm", "mifgsm", "pgd", "pgd_l2"]
RANDOM = ["rfgsm", "pgd", "pgd_l2"]
LINF = ["fgsm", "bim", "illcm", "rfgsm", "mifgsm", "pgd"]


def run(name: str, model, x, y, **overrides) -> AttackResult:
    kwargs = dict(ARGUMENTS[name], **overrides)
    if name == "jsma" and "target" not in kwargs:
        kwargs["target"] = other_class(y)
    return attacks.ATTACKS[name](model, x, y, **kwargs)


def radius(name: str, arguments: dict) -> float:
    """Return the bound on the perturbation that an attack promises."""
    if name in ("jsma", "mjsma"):
        return arguments["theta"]
    return arguments["eps"]


def distance(name: str, x_adv, x) -> np.ndarray:
    delta = np.asarray(x_adv) - np.asarray(x)
    if name == "pgd_l2":
        return np.linalg.norm(delta, axis=1)
    return np.max(np.abs(delta), axis=1)


def cross_entropy(model, x, labels) -> np.ndarray:
    losses, _ = resgrad.input_gradient(model, x, labels)
    return np.asarray(losses)


# Cross-checks with torchattacks 3.5.1.


def float32_setup(model, seed: int = 3, n: int = 16):
    model32 = model.convert(torch, dtype="float32")
    module = torch.nn.Sequential(torch.nn.Flatten(), to_module(model32)).eval()
    x, y = make_batch(n, seed)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    return model32, module, x, y


def images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], 1, 8, 8)


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=1e-6)


CROSS_CHECKS = {
    "fgsm": (
        lambda m: torchattacks.FGSM(m, eps=EPS),
        lambda m, x, y, t: attacks.fgsm(m, x, y, EPS, target=t),
    ),
    "bim": (
        lambda m: torchattacks.BIM(m, eps=EPS, alpha=0.03, steps=7),
        lambda m, x, y, t: attacks.bim(m, x, y, EPS, alpha=0.03, steps=7, target=t),
    ),
    "pgd": (
        lambda m: torchattacks.PGD(m, eps=EPS, alpha=0.03, steps=7, random_start=False),
        lambda m, x, y, t: attacks.pgd(
            m, x, y, EPS, alpha=0.03, steps=7, random_start=False, target=t
        ),
    ),
    "mifgsm": (
        lambda m: torchattacks.MIFGSM(m, eps=EPS, alpha=EPS / 7, steps=7, decay=1.0),
        lambda m, x, y, t: attacks.mifgsm(m, x, y, EPS, steps=7, target=t),
    ),
    "pgd_l2": (
        lambda m: torchattacks.PGDL2(
            m, eps=0.8, alpha=0.25, steps=7, random_start=False
        ),
        lambda m, x, y, t: attacks.pgd_l2(
            m, x, y, 0.8, alpha=0.25, steps=7, random_start=False, target=t
        ),
    ),
}


@pytest.mark.parametrize("name", list(CROSS_CHECKS))
def test_matches_torchattacks_untargeted(model, name):
    model32, module, x, y = float32_setup(model)
    make_reference, attack = CROSS_CHECKS[name]
    expected = make_reference(module)(images(x), y)
    result = attack(model32, x, y, None)
    assert result.x_adv.dtype == torch.float32
    assert float(result.linf.max()) > 0.0
    assert_close(result.x_adv, flat(expected))


@pytest.mark.parametrize("name", list(CROSS_CHECKS))
def test_matches_torchattacks_targeted(model, name):
    model32, module, x, y = float32_setup(model, seed=4)
    target = (y + 3) % CLASSES
    reference = CROSS_CHECKS[name][0](module)
    reference.set_mode_targeted_by_label(quiet=True)
    expected = reference(images(x), target)
    result = CROSS_CHECKS[name][1](model32, x, y, target)
    assert_close(result.x_adv, flat(expected))


def test_pgd_matches_torchattacks_from_same_random_start(model):
    model32, module, x, y = float32_setup(model, seed=5)
    # torchattacks draws its start with uniform_ on the global generator;
    # the same seed gives resgrad the same start point.
    torch.manual_seed(11)
    noise = torch.empty_like(images(x)).uniform_(-EPS, EPS)
    start = torch.clamp(x + flat(noise), 0.0, 1.0)
    torch.manual_seed(11)
    expected = torchattacks.PGD(module, eps=EPS, alpha=0.02, steps=5)(images(x), y)
    result = attacks.pgd(model32, x, y, EPS, alpha=0.02, steps=5, start=start)
    assert_close(result.x_adv, flat(expected))


def test_rfgsm_matches_torchattacks_only_with_one_step(model):
    model32, module, x, y = float32_setup(model, seed=6)
    alpha = EPS / 2
    torch.manual_seed(12)
    signs = torch.randn_like(images(x)).sign()
    start = torch.clamp(x + alpha * flat(signs), 0.0, 1.0)
    result = attacks.rfgsm(model32, x, y, EPS, alpha=alpha, start=start)

    # With one step of alpha = eps - alpha the two rules coincide.
    torch.manual_seed(12)
    one_step = torchattacks.RFGSM(module, eps=EPS, alpha=alpha, steps=1)(images(x), y)
    assert_close(result.x_adv, flat(one_step))

    # torchattacks 3 iterates 10 steps of alpha by default, which is not
    # Tramer et al.'s single step of eps - alpha.
    torch.manual_seed(12)
    iterated = torchattacks.RFGSM(module, eps=EPS, alpha=alpha)(images(x), y)
    assert float((result.x_adv - flat(iterated)).abs().max()) > 0.05


def test_illcm_matches_torchattacks_bim_toward_its_target(model):
    model32, module, x, y = float32_setup(model, seed=7)
    result = attacks.illcm(model32, x, y, EPS, alpha=0.02, steps=6)
    reference = torchattacks.BIM(module, eps=EPS, alpha=0.02, steps=6)
    reference.set_mode_targeted_by_label(quiet=True)
    expected = reference(images(x), result.target)
    assert_close(result.x_adv, flat(expected))


def test_least_likely_target_differs_from_torchattacks(model):
    model32, module, x, _ = float32_setup(model, seed=8)
    least = torch.argmin(module(images(x)), dim=1)
    reference = torchattacks.BIM(module, eps=EPS)
    reference.set_mode_targeted_least_likely(quiet=True)

    # When the true label is the least likely class, resgrad targets it and
    # torchattacks, which leaves the true label out, picks another class.
    result = attacks.illcm(model32, x, least, EPS)
    theirs = reference.get_target_label(images(x), least)
    assert torch.equal(result.target, least)
    assert bool((theirs != least).all())

    # For any other true label both pick the argmin.
    likely = torch.argmax(module(images(x)), dim=1)
    assert torch.equal(reference.get_target_label(images(x), likely), least)
    assert torch.equal(attacks.illcm(model32, x, likely, EPS).target, least)


# The update rules.


def test_fgsm_rule(model):
    x, y = make_batch()
    _, grad = resgrad.input_gradient(model, x, y)
    expected = within(x, x + EPS * np.sign(grad), EPS)
    np.testing.assert_array_equal(attacks.fgsm(model, x, y, EPS).x_adv, expected)
    # One float inside x + eps where the dtype can hold no closer float.
    np.testing.assert_allclose(
        expected, np.clip(x + EPS * np.sign(grad), 0, 1), atol=3e-16
    )


def test_targeted_fgsm_steps_down_target_gradient(model):
    x, y = make_batch()
    target = other_class(y)
    _, grad = resgrad.input_gradient(model, x, target)
    expected = within(x, x - EPS * np.sign(grad), EPS)
    result = attacks.fgsm(model, x, y, EPS, target=target)
    np.testing.assert_array_equal(result.x_adv, expected)


def test_bim_takes_gradient_at_each_iterate(model):
    x, y = make_batch()
    alpha = 0.04
    expected = x
    for _ in range(3):
        _, grad = resgrad.input_gradient(model, expected, y)
        step = expected + alpha * np.sign(grad)
        expected = np.clip(np.clip(step, x - EPS, x + EPS), 0.0, 1.0)
    result = attacks.bim(model, x, y, EPS, alpha=alpha, steps=3)
    np.testing.assert_allclose(result.x_adv, expected, rtol=0, atol=1e-15)


def test_illcm_targets_least_likely_of_all_classes(model):
    x, _ = make_batch()
    least = np.argmin(model(x), axis=1)
    result = attacks.illcm(model, x, least, EPS)
    np.testing.assert_array_equal(result.target, least)
    np.testing.assert_array_equal(result.success, result.prediction == least)


@pytest.mark.parametrize(
    "output_activation, logits, predicted",
    [
        # silu(-1.28) < silu(-20): class 0 is the least probable, class 1
        # the predicted one.
        ("silu", [-1.28, -20.0], 1),
        # relu ties both negative logits at 0; the logits break the tie.
        ("relu", [-0.1, -5.0], 0),
    ],
)
def test_least_likely_class_is_never_the_prediction(
    output_activation, logits, predicted
):
    block = resgrad.Block(
        W1=np.zeros((1, 2)),
        W2=np.zeros((2, 1)),
        W3=np.array([[logits[0], 0.0], [logits[1], 0.0]]),
        shortcut="learned",
    )
    model = resgrad.ResidualMLP([block], output_activation=output_activation)
    x, y = np.array([[1.0, 0.0]]), np.array([predicted])
    np.testing.assert_array_equal(model.predict(x), [predicted])
    np.testing.assert_array_equal(least_likely_class(model, x), [1 - predicted])
    result = attacks.illcm(model, x, y, 0.1, early_stop=True)
    np.testing.assert_array_equal(result.target, [1 - predicted])
    assert not result.success[0]


def test_illcm_step_lowers_least_likely_loss(smooth_model):
    x, y = make_batch(edges=False)
    least = np.argmin(smooth_model(x), axis=1)
    alpha = 1e-3
    losses = [cross_entropy(smooth_model, x, least)]
    for steps in range(1, 5):
        result = attacks.illcm(smooth_model, x, y, 0.5, alpha=alpha, steps=steps)
        losses.append(cross_entropy(smooth_model, result.x_adv, least))
    for before, after in itertools.pairwise(losses):
        assert np.all(after < before)

    # The plus sign printed in the manuscript's equation (63) raises it.
    _, grad = resgrad.input_gradient(smooth_model, x, least)
    plus = np.clip(x + alpha * np.sign(grad), 0.0, 1.0)
    assert np.all(cross_entropy(smooth_model, plus, least) > losses[0])


def farthest(x, radius, up):
    """Return the floats farthest from ``x`` that lie within ``radius`` of
    it, exactly: above ``x`` if ``up``, else below."""
    x = np.asarray(x)
    out = x + radius if up else x - radius
    for index in np.ndindex(x.shape):
        centre = Fraction(float(x[index]))
        while abs(Fraction(float(out[index])) - centre) > Fraction(radius):
            out[index] = np.nextafter(out[index], x[index])
    return out


def within(x, v, radius, lo=0.0, hi=1.0):
    """Return ``v`` clamped to the box and to ``radius`` of ``x`` in every
    feature, exactly."""
    lower, upper = farthest(x, radius, False), farthest(x, radius, True)
    return np.clip(np.clip(v, lower, upper), lo, hi)


def test_rfgsm_rule_takes_gradient_at_random_point(model):
    x, y = make_batch()
    alpha = 0.03
    signs = np.sign(np.random.default_rng(4).standard_normal(x.shape))
    x_star = within(x, x + alpha * signs, alpha)
    _, grad = resgrad.input_gradient(model, x_star, y)
    expected = within(x, x_star + (EPS - alpha) * np.sign(grad), EPS)
    result = attacks.rfgsm(model, x, y, EPS, alpha=alpha, start=x_star)
    np.testing.assert_array_equal(result.x_adv, expected)
    np.testing.assert_array_equal(result.steps, np.ones(N))


def test_rfgsm_draws_signs_of_gaussian(model):
    x, y = interior_batch()
    result = attacks.rfgsm(model, x, y, EPS, alpha=0.04, seed=5)
    signs = np.sign(np.random.default_rng(5).standard_normal(x.shape))
    x_star = np.clip(x + 0.04 * signs, 0.0, 1.0)
    _, grad = resgrad.input_gradient(model, x_star, y)
    expected = np.clip(x_star + 0.06 * np.sign(grad), 0.0, 1.0)
    np.testing.assert_allclose(result.x_adv, expected, rtol=0, atol=1e-15)


def test_rfgsm_default_alpha_is_half_eps(model):
    x, y = make_batch()
    default = attacks.rfgsm(model, x, y, EPS, seed=2)
    half = attacks.rfgsm(model, x, y, EPS, alpha=EPS / 2, seed=2)
    np.testing.assert_array_equal(default.x_adv, half.x_adv)


def test_mifgsm_rule_normalises_each_sample(model):
    x, y = make_batch()
    alpha, mu = 0.03, 0.7
    momentum = np.zeros_like(x)
    expected = x
    for _ in range(3):
        _, grad = resgrad.input_gradient(model, expected, y)
        momentum = mu * momentum + grad / np.sum(np.abs(grad), axis=1, keepdims=True)
        step = expected + alpha * np.sign(momentum)
        expected = np.clip(np.clip(step, x - EPS, x + EPS), 0.0, 1.0)
    result = attacks.mifgsm(model, x, y, EPS, alpha=alpha, steps=3, mu=mu)
    np.testing.assert_allclose(result.x_adv, expected, rtol=0, atol=1e-15)


def test_mifgsm_momentum_carries_over_zero_gradient():
    # z_0 = 2 relu(x - 0.5) and z_1 = 0: the gradient of the true class's
    # loss points down until x < 0.5, and is exactly zero from there on.
    block = resgrad.Block(
        W1=np.array([[1.0]]),
        W2=np.array([[2.0], [0.0]]),
        b1=np.array([-0.5]),
        b2=np.zeros(2),
        shortcut="none",
    )
    model = resgrad.ResidualMLP([block])
    x, y = np.array([[0.55]]), np.array([0])
    result = attacks.mifgsm(model, x, y, 0.3, alpha=0.1, steps=3, mu=1.0)
    # Step 1 goes to 0.45, where the gradient vanishes; g keeps its sign.
    np.testing.assert_allclose(result.x_adv, [[0.25]], rtol=0, atol=1e-15)
    assert np.isfinite(result.x_adv).all()


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
def test_mifgsm_float16_l1_norm_overflow(namespace):
    """A gradient of four entries of 40,000 has an L1 norm past float16's
    largest value, 65504; the step must still follow its sign."""
    xp = torch if namespace == "torch" else np
    block = resgrad.Block(
        W1=np.full((1, 4), 40000.0),
        W2=np.array([[-1.0], [1.0]]),
        b1=np.zeros(1),
        b2=np.zeros(2),
        shortcut="none",
    )
    model = resgrad.ResidualMLP([block], activation="identity")
    model = model.convert(xp, dtype="float16")
    x = xp.asarray(np.zeros((1, 4), dtype=np.float16))
    y = xp.asarray(np.array([0]))
    _, grad = resgrad.input_gradient(model, x, y)
    np.testing.assert_array_equal(np.asarray(grad), 40000.0)
    result = attacks.mifgsm(model, x, y, 0.1, steps=1)
    np.testing.assert_array_equal(np.asarray(result.x_adv), np.float16(0.1))


def test_mifgsm_momentum_overflow_is_silent(model):
    """mu = 1e308 sends the momentum past the largest float64 at step 2; the
    steps follow its signs without NumPy's overflow warning."""
    x, y = make_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = attacks.mifgsm(model, x, y, EPS, steps=4, mu=1e308)
    assert np.isfinite(result.x_adv).all()
    assert result.linf.max() <= EPS


def test_mifgsm_float16_rows_stay_independent():
    """Only a row whose L1 norm overflows is rescaled first; the others keep
    the plain quotient, as they would alone."""
    from resgrad.attacks._iterative import _l1_normalized

    grad = np.array([[40000.0] * 4, [3e-3, 1e-4, 7.0, 0.1]], dtype=np.float16)
    together = _l1_normalized(np, grad)
    alone = _l1_normalized(np, grad[1:])
    np.testing.assert_array_equal(together[1:], alone)
    np.testing.assert_array_equal(together[0], np.float16(0.25))


def test_mifgsm_defaults_are_dong(model):
    x, y = make_batch()
    default = attacks.mifgsm(model, x, y, EPS, steps=5)
    explicit = attacks.mifgsm(model, x, y, EPS, steps=5, alpha=EPS / 5, mu=1.0)
    np.testing.assert_array_equal(default.x_adv, explicit.x_adv)


def test_pgd_random_start_is_uniform_in_box(model):
    x, y = make_batch(edges=False)
    result = attacks.pgd(model, x, y, EPS, steps=1, seed=6, alpha=0.02)
    noise = np.random.default_rng(6).uniform(-EPS, EPS, size=x.shape)
    start = np.clip(x + noise, 0.0, 1.0)
    _, grad = resgrad.input_gradient(model, start, y)
    expected = np.clip(np.clip(start + 0.02 * np.sign(grad), x - EPS, x + EPS), 0, 1)
    np.testing.assert_allclose(result.x_adv, expected, rtol=0, atol=1e-15)


def test_pgd_l2_step_is_normalised_gradient(model):
    x, y = interior_batch()
    alpha = 0.05
    result = attacks.pgd_l2(model, x, y, 1.0, alpha=alpha, steps=1, random_start=False)
    _, grad = resgrad.input_gradient(model, x, y)
    unit = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    np.testing.assert_allclose(result.x_adv, x + alpha * unit, rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.l2, np.full(N, alpha), rtol=1e-12)


def test_pgd_l2_projects_onto_ball(model):
    x, y = interior_batch()
    eps = 0.05
    result = attacks.pgd_l2(model, x, y, eps, alpha=0.2, steps=1, random_start=False)
    _, grad = resgrad.input_gradient(model, x, y)
    unit = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    # Rows end a few units in the last place inside eps, so that the norms
    # hold in any order of summation.
    np.testing.assert_allclose(result.x_adv, x + eps * unit, rtol=0, atol=1e-13)


def test_pgd_l2_random_start_is_uniform_in_ball(model, monkeypatch):
    n, eps = 2000, 0.1
    x = np.full((n, D), 0.5)
    y = np.zeros(n, dtype=np.int64)
    first = record_gradient_inputs(monkeypatch)
    attacks.pgd_l2(model, x, y, eps, steps=1, seed=7)
    delta = first[0] - x
    r = np.linalg.norm(delta, axis=1)
    assert r.max() <= eps
    # r = eps U^(1/d) makes (r / eps)^d uniform on [0, 1]: mean 1/2, var 1/12.
    volume_fraction = (r / eps) ** D
    assert abs(volume_fraction.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    # Uniform directions: the mean unit vector is near 0 in every feature.
    unit = delta / r[:, None]
    assert np.abs(unit.mean(axis=0)).max() < 4.5 / math.sqrt(D * n)


# Properties every attack has.


def record_gradient_inputs(monkeypatch) -> list:
    """Record the input of every gradient an attack takes, in order."""
    seen: list = []
    original = common._input_gradient

    def spy(model, v, labels, *args, **kwargs):
        seen.append(np.array(v, copy=True))
        return original(model, v, labels, *args, **kwargs)

    monkeypatch.setattr(common, "_input_gradient", spy)
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_result_fields(model, name):
    x, y = make_batch()
    result = run(name, model, x, y)
    delta = result.x_adv - x
    assert result.x_adv.shape == x.shape
    assert result.success.dtype == np.bool_
    assert result.steps.dtype == np.int64
    assert result.l0.dtype == np.int64
    np.testing.assert_array_equal(result.prediction, model.predict(result.x_adv))
    np.testing.assert_allclose(result.linf, np.abs(delta).max(axis=1), rtol=0, atol=0)
    np.testing.assert_allclose(result.l2, np.linalg.norm(delta, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(result.l0, (delta != 0).sum(axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_success_flag_meaning(model, name):
    x, y = make_batch()
    result = run(name, model, x, y)
    if result.target is None:
        np.testing.assert_array_equal(result.success, result.prediction != y)
    else:
        np.testing.assert_array_equal(
            result.success, result.prediction == result.target
        )


@pytest.mark.parametrize("name", ["fgsm", "bim", "mifgsm", "pgd", "pgd_l2", "mjsma"])
def test_targeted_success_means_target(model, name):
    x, y = make_batch()
    target = other_class(y)
    result = run(name, model, x, y, target=target)
    np.testing.assert_array_equal(result.target, target)
    np.testing.assert_array_equal(result.success, result.prediction == target)


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("name", ITERATIVE)
def test_every_iterate_in_box_and_ball(model, name, steps):
    x, y = make_batch()
    eps = ARGUMENTS[name]["eps"]
    # A step as large as the ball keeps both projections busy.
    result = run(name, model, x, y, steps=steps, alpha=eps)
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0
    assert distance(name, result.x_adv, x).max() <= eps


@pytest.mark.parametrize("name", ITERATIVE)
def test_each_step_in_box_and_ball(model, name, monkeypatch):
    x, y = make_batch()
    eps = ARGUMENTS[name]["eps"]
    seen = record_gradient_inputs(monkeypatch)
    # Steps of size eps would leave the ball after two steps if the ball
    # were centred on the previous iterate instead of on x.
    result = run(name, model, x, y, steps=5, alpha=eps)
    iterates = seen + [np.asarray(result.x_adv)]
    assert len(iterates) == 6
    for iterate in iterates:
        assert iterate.min() >= 0.0
        assert iterate.max() <= 1.0
        assert distance(name, iterate, x).max() <= eps


@pytest.mark.parametrize("name", ["fgsm", "rfgsm", "jsma", "mjsma"])
def test_result_in_box_and_bound(model, name):
    x, y = make_batch()
    result = run(name, model, x, y)
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0
    bound = radius(name, ARGUMENTS[name])
    assert distance(name, result.x_adv, x).max() <= bound


@pytest.mark.parametrize("name", ["rfgsm", "pgd", "pgd_l2"])
def test_random_start_projected_before_first_gradient(model, name, monkeypatch):
    x = np.round(make_batch()[0])
    y = make_batch()[1]
    first = record_gradient_inputs(monkeypatch)
    run(name, model, x, y)
    start = first[0]
    assert start.min() >= 0.0
    assert start.max() <= 1.0
    assert distance(name, start, x).max() <= ARGUMENTS[name]["eps"] * (1 + 1e-12)
    assert distance(name, start, x).min() > 0.0


@pytest.mark.parametrize("name", ["pgd", "pgd_l2"])
def test_given_start_projected_before_first_gradient(model, name, monkeypatch):
    x, y = make_batch()
    far = np.clip(x + 2.0 * np.random.default_rng(8).standard_normal(x.shape), -1, 2)
    first = record_gradient_inputs(monkeypatch)
    run(name, model, x, y, start=far)
    assert first[0].min() >= 0.0
    assert first[0].max() <= 1.0
    assert distance(name, first[0], x).max() <= ARGUMENTS[name]["eps"] * (1 + 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_caller_arrays_unchanged(model, name):
    x, y = make_batch()
    target = other_class(y)
    copies = [x.copy(), y.copy(), target.copy()]
    extra = {"target": target} if name not in ("illcm", "rfgsm") else {}
    run(name, model, x, y, **extra)
    for before, after in zip(copies, [x, y, target]):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", NAMES)
def test_torch_caller_tensors_unchanged(model, name):
    model_t = model.convert(torch)
    x, y = make_batch()
    x, y = torch.tensor(x), torch.tensor(y)
    x_copy, y_copy = x.clone(), y.clone()
    run(name, model_t, x, y)
    assert torch.equal(x, x_copy)
    assert torch.equal(y, y_copy)


@pytest.mark.parametrize("name", ["pgd", "pgd_l2", "rfgsm"])
def test_start_array_unchanged(model, name):
    x, y = make_batch()
    start = np.clip(x + 0.03, 0.0, 1.0)
    copy = start.copy()
    run(name, model, x, y, start=start)
    np.testing.assert_array_equal(start, copy)


BACKENDS = {
    "numpy-float64": (lambda a: np.asarray(a, dtype=np.float64), "numpy", "float64"),
    "numpy-float32": (lambda a: np.asarray(a, dtype=np.float32), "numpy", "float32"),
    "torch-float32": (
        lambda a: torch.tensor(a, dtype=torch.float32),
        "torch",
        "float32",
    ),
    "torch-float64": (
        lambda a: torch.tensor(a, dtype=torch.float64),
        "torch",
        "float64",
    ),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", NAMES)
def test_keeps_namespace_and_dtype(model, name, backend):
    convert, namespace, dtype = BACKENDS[backend]
    xp = torch if namespace == "torch" else np
    converted = model.convert(xp, dtype=dtype)
    x, y = make_batch()
    x = convert(x)
    y = torch.tensor(y) if namespace == "torch" else y
    result = run(name, converted, x, y)
    assert type(result.x_adv) is type(x)
    assert result.x_adv.dtype == x.dtype
    assert result.linf.dtype == x.dtype
    assert result.l2.dtype == x.dtype
    assert type(result.success) is type(x)
    if namespace == "torch":
        assert result.x_adv.device == x.device


@pytest.mark.parametrize("name", NAMES)
def test_torch_matches_numpy(model, name):
    x, y = make_batch()
    expected = run(name, model, x, y)
    result = run(name, model.convert(torch), torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(result.x_adv.numpy(), expected.x_adv, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.steps.numpy(), expected.steps)


@pytest.mark.parametrize("name", LINF + ["pgd_l2"])
def test_zero_eps_returns_input(model, name):
    x, y = make_batch()
    result = run(name, model, x, y, eps=0.0)
    np.testing.assert_array_equal(result.x_adv, x)
    assert result.x_adv is not x
    np.testing.assert_array_equal(result.l0, np.zeros(N))


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_zero_theta_returns_input(model, name):
    x, y = make_batch()
    result = run(name, model, x, y, theta=0.0)
    np.testing.assert_array_equal(result.x_adv, x)
    np.testing.assert_array_equal(result.steps, np.zeros(N))


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradient_gives_no_nan(flat_model, name):
    x, y = make_batch()
    _, grad = resgrad.input_gradient(flat_model, x, y)
    assert not np.any(grad)
    result = run(name, flat_model, x, y)
    assert np.all(np.isfinite(result.x_adv))
    assert np.all(np.isfinite(result.l2))


@pytest.mark.parametrize("name", ["fgsm", "bim", "illcm", "mifgsm", "jsma", "mjsma"])
def test_zero_gradient_leaves_input(flat_model, name):
    x, y = make_batch()
    result = run(name, flat_model, x, y)
    np.testing.assert_array_equal(result.x_adv, x)


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_result(model, name):
    x, y = make_batch()
    first = run(name, model, x, y, seed=3)
    second = run(name, model, x, y, seed=3)
    other = run(name, model, x, y, seed=4)
    np.testing.assert_array_equal(first.x_adv, second.x_adv)
    assert np.any(first.x_adv != other.x_adv)


@pytest.mark.parametrize("name", RANDOM)
def test_generator_seed(model, name):
    x, y = make_batch()
    by_int = run(name, model, x, y, seed=9)
    by_generator = run(name, model, x, y, seed=np.random.default_rng(9))
    np.testing.assert_array_equal(by_int.x_adv, by_generator.x_adv)


@pytest.mark.parametrize("name", ITERATIVE)
def test_no_early_stop_by_default(model, name):
    x, y = make_batch()
    result = run(name, model, x, y)
    np.testing.assert_array_equal(result.steps, np.full(N, ARGUMENTS[name]["steps"]))


@pytest.mark.parametrize("name", ITERATIVE)
def test_early_stop_freezes_successful_samples(smooth_model, name):
    x, y = make_batch(n=20)
    y = smooth_model.predict(x)
    eps = 3.0 if name == "pgd_l2" else 0.3
    fixed = {"eps": eps, "alpha": eps / 4}
    if name.startswith("pgd"):
        fixed["random_start"] = False
    result = run(name, smooth_model, x, y, steps=8, early_stop=True, **fixed)
    stopped = np.flatnonzero(result.steps < 8)
    assert stopped.size > 0
    assert np.all(result.success[stopped])
    for index in stopped:
        taken = int(result.steps[index])
        # The clean inputs are classified correctly, so every sample steps.
        assert taken >= 1
        # The frozen sample keeps the first iterate at which it succeeded.
        same = run(name, smooth_model, x, y, steps=taken, **fixed)
        np.testing.assert_array_equal(same.x_adv[index], result.x_adv[index])
        if taken > 1:
            before = run(name, smooth_model, x, y, steps=taken - 1, **fixed)
            assert not before.success[index]


# ILLCM is missing: its target, the least likely class, is never the
# predicted one, so it always takes a step.
@pytest.mark.parametrize("name", ["bim", "mifgsm", "pgd", "pgd_l2"])
def test_early_stop_before_any_step_copies_x(model, name):
    x, _ = make_batch()
    # Labels that the model already gets wrong, so every sample succeeds
    # before the first step.
    y = (model.predict(x) + 1) % model.n_classes
    fixed = {"random_start": False} if name.startswith("pgd") else {}
    before = x.copy()
    result = run(name, model, x, y, early_stop=True, **fixed)
    np.testing.assert_array_equal(result.steps, np.zeros(N))
    np.testing.assert_array_equal(result.x_adv, x)
    assert not np.shares_memory(result.x_adv, x)
    result.x_adv[0, 0] += 1.0
    np.testing.assert_array_equal(x, before)


def test_early_stop_result_is_no_torch_input():
    model = resgrad.ResidualMLP.init([12, 10, 10, 4], 8, activation="tanh", seed=4)
    x = np.random.default_rng(0).random((16, 12))
    y = (model.predict(x) + 1) % 4
    x_t = torch.from_numpy(x).requires_grad_(True)
    result = attacks.bim(
        model.convert(torch), x_t, torch.from_numpy(y), 0.1, early_stop=True
    )
    assert result.x_adv is not x_t
    assert not result.x_adv.requires_grad
    assert result.x_adv.data_ptr() != x_t.data_ptr()
    unchanged = attacks.bim(model.convert(torch), x_t, torch.from_numpy(y), 0.0)
    assert not unchanged.x_adv.requires_grad
    assert torch.equal(unchanged.x_adv, x_t.detach())


@pytest.mark.parametrize("name", ["fgsm", "bim", "illcm", "mifgsm", "jsma", "mjsma"])
def test_each_sample_independent_of_batch(model, name):
    x, y = make_batch()
    together = run(name, model, x, y)
    for index in (0, 5, N - 1):
        rows = slice(index, index + 1)
        alone = run(name, model, x[rows], y[rows])
        np.testing.assert_allclose(
            together.x_adv[rows], alone.x_adv, rtol=0, atol=1e-15
        )
        np.testing.assert_array_equal(together.steps[rows], alone.steps)


@pytest.mark.parametrize("name", RANDOM)
def test_random_attack_row_ignores_other_rows(model, name):
    x, y = make_batch()
    changed = x.copy()
    changed[1:] = make_batch(seed=5)[0][1:]
    first = run(name, model, x, y)
    second = run(name, model, changed, y)
    np.testing.assert_array_equal(first.x_adv[0], second.x_adv[0])


# Bad arguments.


def test_box_error_names_exact_bounds(model):
    """Bounds printed to six digits could read as holding the value named
    beside them."""
    x, y = make_batch()
    hi = 0.9999994
    x[0, 0] = hi + 2e-6
    message = re.escape(f"outside the box [0.0, {hi!r}] by more than 1e-06")
    with pytest.raises(ValueError, match=message):
        attacks.fgsm(model, x, y, 0.1, bounds=(0.0, hi))


@pytest.mark.parametrize("name", NAMES)
def test_x_outside_box_raises(model, name):
    x, y = make_batch()
    x[2, 3] = 1.01
    with pytest.raises(ValueError, match="outside the box"):
        run(name, model, x, y)


def test_box_error_shows_the_value_unrounded(model):
    x, y = make_batch()
    x[2, 3] = 1.000002
    with pytest.raises(ValueError, match=r"values in \[.*, 1\.000002\], outside"):
        attacks.fgsm(model, x, y, EPS)


BOXES = [(0.0, 1.0), (-1.0, 2.0), (0.0, 255.0)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_result_within_radius_exactly(name, dtype, backend):
    # x + eps rounds to the dtype and can land past x + eps. The results
    # must stay within the radius as computed in the dtype, and exactly.
    model = resgrad.ResidualMLP.init([12, 10, 10, 4], seed=2, dtype=dtype)
    rng = np.random.default_rng(3)
    checked = 0
    for lo, hi in BOXES:
        x = (lo + (hi - lo) * rng.random((40, 12))).astype(dtype)
        corners = rng.random(x.shape)
        x[corners < 0.15], x[corners > 0.85] = lo, hi
        y = rng.integers(0, 4, 40)
        for share in (1e-3, 0.07, 0.1, 1 / 3):
            size = share * (hi - lo) * (3 if name == "pgd_l2" else 1)
            key = "theta" if name in ("jsma", "mjsma") else "eps"
            options = {**ARGUMENTS[name], key: size, "bounds": (lo, hi)}
            if name in ("jsma", "mjsma"):
                options["gamma"] = 0.5
            if name == "jsma":
                options["target"] = (y + 1) % 4
            inputs = (model, x, y)
            if backend == "torch":
                inputs = (
                    model.convert(torch),
                    torch.from_numpy(x),
                    torch.from_numpy(y),
                )
                if "target" in options:
                    options["target"] = torch.from_numpy(options["target"])
            result = attacks.ATTACKS[name](*inputs, **options)
            x_adv = np.asarray(result.x_adv)
            rounded = x_adv - x
            exact = x_adv.astype(np.float64) - x.astype(np.float64)
            if name == "pgd_l2":
                assert np.linalg.norm(rounded, axis=1).max() <= size
                assert np.linalg.norm(exact, axis=1).max() <= size
                assert np.asarray(result.l2).max() <= size
            else:
                assert np.abs(rounded).max() <= size
                assert np.abs(exact).max() <= size
                assert np.asarray(result.linf).max() <= size
            assert x_adv.min() >= lo
            assert x_adv.max() <= hi
            checked += 1
    assert checked == 12


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_radius_reaches_the_box_bounds(model, backend, dtype):
    # A bound of the box within eps of x, exactly, is reached exactly,
    # though the radius steps a float inside eps elsewhere.
    x, y = make_batch()
    x = np.where(x > 0.5, 0.875, x).astype(dtype)
    model = model.convert(dtype=dtype)
    if backend == "torch":
        model, x, y = model.convert(torch), torch.from_numpy(x), torch.from_numpy(y)
    results = [
        attacks.fgsm(model, x, y, 1.0),
        attacks.pgd(model, x, y, 1.0, steps=2, seed=0),
        attacks.jsma(model, x, y, other_class(y), gamma=0.25),
        attacks.fgsm(model, x, y, 0.125),
    ]
    for result in results[:3]:
        moved = np.asarray(result.x_adv)[np.asarray(result.x_adv) != np.asarray(x)]
        assert moved.size > 0
        assert set(np.unique(moved)) <= {0.0, 1.0}
    # From 0.875 a step of 0.125 up reaches 1 exactly.
    start = np.asarray(x) == 0.875
    up = np.asarray(results[3].x_adv)[start & (np.asarray(results[3].x_adv) > 0.875)]
    assert up.size > 0
    assert np.all(up == 1.0)


def test_box_bound_the_dtype_rounds_outward_is_kept():
    # float16(0.7) is 0.7002, outside the box (0.3, 0.7).
    model = resgrad.ResidualMLP.init([2, 4, 3], seed=0, dtype="float16")
    x = np.array([[0.5, 0.69970703125]] * 4, dtype=np.float16)
    y = np.array([0, 1, 2, 0])
    for name in ("fgsm", "pgd", "bim"):
        result = attacks.ATTACKS[name](model, x, y, 0.1, bounds=(0.3, 0.7))
        assert np.asarray(result.x_adv, np.float64).max() <= 0.7
        assert np.asarray(result.x_adv, np.float64).min() >= 0.3


def test_wide_box_keeps_the_whole_radius():
    # The limits follow the spacing of the floats at each x, not at the
    # box's bounds: on (-1e6, 1e6) in float32 the spacing there is 0.0625.
    model = resgrad.ResidualMLP.init([4, 6, 3], seed=0, dtype="float32")
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    result = attacks.fgsm(model, x, np.array([0, 1]), 0.1, bounds=(-1e6, 1e6))
    moved = np.abs(result.x_adv.astype(np.float64) - x)
    assert moved.max() <= 0.1
    assert moved[moved > 0].min() > 0.0999999


def test_pgd_l2_norm_within_eps_as_float():
    # 0.1 rounds up in float32, so l2 <= float32(0.1) would not be enough.
    model = resgrad.ResidualMLP.init([8, 6, 3], seed=0, dtype="float32")
    x = np.random.default_rng(0).uniform(-1, 1, (32, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 32)
    result = attacks.pgd_l2(model, x, y, 0.1, steps=3, seed=1, bounds=(-1.0, 1.0))
    assert float(result.l2.max()) <= 0.1
    assert float(result.l2.max()) > 0.0999


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
def test_pgd_l2_tiny_eps_in_float16(namespace):
    """A radius of 1e-5 puts 1 / norm past float16's largest value, 65504,
    and the scale must not go through it."""
    xp = torch if namespace == "torch" else np
    model = resgrad.ResidualMLP.init(
        [4, 6, 3], seed=0, dtype="float16", xp=xp, activation="tanh"
    )
    x = xp.asarray(np.full((1, 4), 1e-5, dtype=np.float16))
    y = xp.asarray(np.array([0]))
    result = attacks.pgd_l2(model, x, y, 1e-5, random_start=False)
    l2 = float(result.l2[0])
    assert 0.5e-5 < l2 <= 1e-5


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fgsm", {"eps": 0.0}),
        ("pgd", {"eps": 0.0}),
        ("pgd", {"eps": 1e-9}),
        ("pgd", {"early_stop": True}),
        ("bim", {"early_stop": True}),
        ("jsma", {"theta": 0.0}),
        ("mjsma", {"theta": 0.0}),
    ],
)
def test_result_in_box_from_x_within_tolerance(model, name, options):
    x, y = make_batch()
    x[:, 0], x[:, 1] = 1.0 + attacks.BOX_TOLERANCE / 2, -attacks.BOX_TOLERANCE / 2
    if options.get("early_stop"):
        # Rows that already fail to be classified stop before the first step.
        y = other_class(model.predict(x))
    result = run(name, model, x, y, **options)
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0
    np.testing.assert_array_equal(
        result.linf, np.abs(np.asarray(result.x_adv) - x).max(axis=1)
    )


@pytest.mark.parametrize("name", ["fgsm", "jsma"])
def test_x_within_tolerance_accepted(model, name):
    x, y = make_batch()
    x[2, 3] = 1.0 + attacks.BOX_TOLERANCE / 2
    result = run(name, model, x, y)
    assert result.x_adv.max() <= 1.0


def test_tolerance_follows_the_dtype_at_the_bounds(model):
    # One float32 step above 255 is 1.5e-5 away, beyond an absolute 1e-6;
    # four such steps are allowed.
    x, y = make_batch()
    x = (255 * x).astype(np.float32)
    x[2, 3] = np.nextafter(np.float32(255), np.float32(np.inf))
    net = model.convert(dtype="float32")
    result = attacks.fgsm(net, x, y, 2.0, bounds=(0, 255))
    assert result.x_adv.max() <= 255.0
    x[2, 3] = 255.001
    with pytest.raises(ValueError, match=r"\[0.0, 255.0\] by more than 6.10352e-05;"):
        attacks.fgsm(net, x, y, 2.0, bounds=(0, 255))
    # float16 spaces its values 0.125 apart at 255.
    half = net.convert(torch, dtype="float16")
    x_half = torch.from_numpy(x).to(torch.float16)
    x_half[2, 3] = 255.125
    result = attacks.fgsm(half, x_half, torch.from_numpy(y), 2.0, bounds=(0, 255))
    assert result.x_adv.max().item() <= 255.0


def test_tolerance_narrow_far_from_zero(model):
    # float64 spaces its values 1.2e-10 apart at 1e6, so 1e-6 stays.
    x, y = make_batch()
    lo = 1e6
    x = lo + x
    x[0, 0] = lo + 1 + 1e-3
    with pytest.raises(ValueError, match="by more than 1e-06;"):
        attacks.fgsm(model, x, y, 0.1, bounds=(lo, lo + 1))


def test_custom_bounds(model):
    x, y = make_batch()
    x = 2.0 * x - 1.0
    with pytest.raises(ValueError, match="outside the box"):
        attacks.fgsm(model, x, y, EPS)
    result = attacks.bim(model, x, y, 0.3, bounds=(-1.0, 1.0))
    assert result.x_adv.min() >= -1.0
    assert result.x_adv.max() <= 1.0


@pytest.mark.parametrize(
    "bounds",
    [
        (1.0, 0.0),
        (0.0, 0.0),
        (0.0, float("inf")),
        (0.0,),
        (0, 10**400),
        (-(10**400), 1),
    ],
    ids=repr,
)
def test_bad_bounds_raise(model, bounds):
    x, y = make_batch()
    with pytest.raises(ValueError, match="bounds"):
        attacks.fgsm(model, x, y, EPS, bounds=bounds)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_width_raises(model, name):
    x, y = make_batch()
    with pytest.raises(ValueError, match="features"):
        run(name, model, x[:, :10], y)


@pytest.mark.parametrize("name", NAMES)
def test_one_dimensional_x_raises(model, name):
    x, y = make_batch()
    with pytest.raises(ValueError, match="shape"):
        run(name, model, x[0], y[:1])


@pytest.mark.parametrize("name", NAMES)
def test_label_out_of_range_raises(model, name):
    x, y = make_batch()
    y[4] = CLASSES
    with pytest.raises(ValueError, match="outside"):
        run(name, model, x, y, **({"target": y % CLASSES} if name == "jsma" else {}))


@pytest.mark.parametrize("name", NAMES)
def test_label_count_mismatch_raises(model, name):
    x, y = make_batch()
    with pytest.raises(ValueError, match="one label per row"):
        run(name, model, x, y[:-1], **({"target": y} if name == "jsma" else {}))


@pytest.mark.parametrize(
    "name", ["fgsm", "bim", "mifgsm", "pgd", "pgd_l2", "jsma", "mjsma"]
)
def test_target_out_of_range_raises(model, name):
    x, y = make_batch()
    target = other_class(y)
    target[0] = -1
    with pytest.raises(ValueError, match="target"):
        run(name, model, x, y, target=target)


def test_float_labels_raise(model):
    x, y = make_batch()
    with pytest.raises(TypeError, match="integer"):
        attacks.fgsm(model, x, y.astype(np.float64), EPS)


def test_dtype_mismatch_raises(model):
    x, y = make_batch()
    with pytest.raises(TypeError, match="dtype"):
        attacks.fgsm(model, x.astype(np.float32), y, EPS)


def test_mixed_namespaces_raise(model):
    x, y = make_batch()
    with pytest.raises(TypeError, match="namespace"):
        attacks.fgsm(model, torch.tensor(x), y, EPS)


def test_not_a_model_raises():
    x, y = make_batch()
    with pytest.raises(TypeError, match="ResidualMLP"):
        attacks.fgsm(object(), x, y, EPS)


@pytest.mark.parametrize("name", LINF + ["pgd_l2"])
def test_negative_eps_raises(model, name):
    x, y = make_batch()
    with pytest.raises(ValueError, match="eps >= 0"):
        run(name, model, x, y, eps=-0.1)


@pytest.mark.parametrize("name", LINF + ["pgd_l2"])
def test_nan_eps_raises(model, name):
    x, y = make_batch()
    with pytest.raises(ValueError, match="finite eps"):
        run(name, model, x, y, eps=float("nan"))


@pytest.mark.parametrize("name", LINF + ["pgd_l2"])
@pytest.mark.parametrize(
    "eps",
    # 10**5000 has more digits than Python turns into a string by default.
    [10**400, 10**5000, Fraction(10**400, 3)],
    ids=["1e400", "1e5000", "fraction"],
)
def test_eps_beyond_floats_raises(model, name, eps):
    x, y = make_batch()
    with pytest.raises(
        ValueError,
        match=r"finite eps, got a number of magnitude beyond the largest float \(",
    ):
        run(name, model, x, y, eps=eps)


@pytest.mark.parametrize("name", ITERATIVE)
@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one_raise(model, name, steps):
    x, y = make_batch()
    with pytest.raises(ValueError, match="steps >= 1"):
        run(name, model, x, y, steps=steps)


@pytest.mark.parametrize("name", ITERATIVE)
def test_steps_as_0d_array_counts(model, name):
    """As in the saliency maps and fit: a count read from an array works."""
    x, y = make_batch()
    expected = run(name, model, x, y, steps=3)
    for steps in (np.array(3), torch.tensor(3)):
        result = run(name, model, x, y, steps=steps)
        np.testing.assert_array_equal(result.x_adv, expected.x_adv)
        np.testing.assert_array_equal(result.steps, expected.steps)


@pytest.mark.parametrize("name", ITERATIVE)
def test_fractional_steps_raise(model, name):
    x, y = make_batch()
    with pytest.raises(TypeError, match="steps"):
        run(name, model, x, y, steps=2.5)


@pytest.mark.parametrize("name", ITERATIVE)
@pytest.mark.parametrize("alpha", [0.0, -0.01])
def test_nonpositive_alpha_raises(model, name, alpha):
    x, y = make_batch()
    with pytest.raises(ValueError, match="alpha > 0"):
        run(name, model, x, y, alpha=alpha)


@pytest.mark.parametrize("alpha", [EPS, 0.2, 0.0, -0.05])
def test_rfgsm_alpha_outside_range_raises(model, alpha):
    x, y = make_batch()
    with pytest.raises(ValueError, match="0 < alpha < eps"):
        attacks.rfgsm(model, x, y, EPS, alpha=alpha)


def test_rfgsm_stays_within_eps_with_large_alpha(model):
    x, y = make_batch()
    result = attacks.rfgsm(model, x, y, EPS, alpha=0.09, seed=1)
    assert result.linf.max() <= EPS * (1 + 1e-12)


def test_negative_mu_raises(model):
    x, y = make_batch()
    with pytest.raises(ValueError, match="mu >= 0"):
        attacks.mifgsm(model, x, y, EPS, mu=-1.0)


def test_bad_seed_raises(model):
    x, y = make_batch()
    with pytest.raises(TypeError, match="seed"):
        attacks.pgd(model, x, y, EPS, seed="zero")


@pytest.mark.parametrize("bounds", ["01", ("0", "1"), (0.0, None)])
def test_bounds_of_text_raise(model, bounds):
    x, y = make_batch()
    with pytest.raises(ValueError, match="pair of numbers"):
        attacks.fgsm(model, x, y, EPS, bounds=bounds)


@pytest.mark.parametrize(
    "eps", [np.array(EPS), torch.tensor(EPS, requires_grad=True), np.float32(EPS)]
)
def test_zero_dimensional_eps_equals_float(model, eps):
    x, y = make_batch()
    expected = attacks.pgd(model, x, y, eps.item(), seed=3)
    result = attacks.pgd(model, x, y, eps, seed=3)
    np.testing.assert_array_equal(result.x_adv, expected.x_adv)


def test_array_eps_of_one_entry_raises(model):
    x, y = make_batch()
    with pytest.raises(TypeError, match="eps to be a real number"):
        attacks.pgd(model, x, y, np.array([EPS]))


@pytest.mark.parametrize("dtype, eps", [("float64", 1e155), ("float32", 1e20)])
def test_pgd_l2_huge_eps_still_attacks(dtype, eps):
    """Squares of such radii overflow, which once made every step zero."""
    net = resgrad.ResidualMLP.init([D, 24, CLASSES], seed=0, dtype=dtype)
    x, y = make_batch()
    x = x.astype(dtype)
    with np.errstate(all="raise"):
        result = attacks.pgd_l2(net, x, y, eps, seed=0, steps=3)
    moved = np.abs(result.x_adv - x).max(axis=1)
    assert np.all(moved > 0.5)
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0


def test_row_norms_match_plain_norms_and_stay_finite():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7))
    a[2] = 0.0
    norms = common.row_norms(common._arrays.array_api_compat.numpy, a)
    np.testing.assert_allclose(norms[:, 0], np.linalg.norm(a, axis=1), rtol=1e-15)
    big = torch.full((2, 3), 1e20, dtype=torch.float32)
    norms = common.row_norms(common._arrays.array_api_compat.torch, big)
    assert torch.isfinite(norms).all()
    assert math.isclose(norms[0, 0].item(), 3**0.5 * 1e20, rel_tol=1e-6)


@pytest.mark.parametrize("eps", [1e308, 1.7e308])
def test_pgd_random_start_of_huge_eps(model, eps):
    """A range 2 eps above the largest float still draws a random start,
    which such an eps puts at a corner of the box."""
    x, y = make_batch()
    result = attacks.pgd(model, x, y, eps, alpha=1e-9, steps=1, seed=0)
    distance_to_corner = np.minimum(result.x_adv, 1.0 - result.x_adv)
    assert distance_to_corner.max() <= 1e-9
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("rfgsm", {"eps": 1e39, "seed": 0}),
        ("pgd", {"eps": 1e300}),
        ("pgd", {"eps": 0.1, "alpha": 1e39}),
        ("jsma", {"theta": 1e39}),
        ("fgsm", {"eps": 0.1, "bounds": (-1e39, 1e39)}),
    ],
)
def test_values_beyond_float32_are_named(model, name, arguments):
    """A float32 batch rejects a radius, step or bound that float32 cannot
    hold, where it once failed later with a message about x or overflow."""
    x, y = make_batch()
    net = model.convert(torch, dtype=torch.float32)
    x_t, y_t = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    key = "bounds[0]" if "bounds" in arguments else max(arguments, key=arguments.get)
    with pytest.raises(ValueError, match=re.escape(f"Expected {key} of magnitude")):
        run(name, net, x_t, y_t, **arguments)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m, x, y: attacks.pgd(m, x, y, 0.0, start=x[:1]), ValueError),
        (lambda m, x, y: attacks.pgd(m, x, y, 0.0, seed=-5), ValueError),
        (lambda m, x, y: attacks.pgd_l2(m, x, y, 0.0, random_start="no"), TypeError),
        (lambda m, x, y: attacks.bim(m, x, y, 0.0, early_stop="x"), TypeError),
        (lambda m, x, y: attacks.mifgsm(m, x, y, 0.0, early_stop="x"), TypeError),
        (lambda m, x, y: attacks.rfgsm(m, x, y, 0.0, start=x * np.nan), ValueError),
        (lambda m, x, y: attacks.jsma(m, x, y, 1, theta=0, gamma=0.01), ValueError),
        (lambda m, x, y: attacks.mjsma(m, x, y, theta=0, gamma=0.01), ValueError),
    ],
    ids=["start", "seed", "random_start", "bim", "mifgsm", "rfgsm", "jsma", "mjsma"],
)
def test_zero_radius_still_checks_options(call, error):
    # eps = 0 (theta = 0) returns x, but a bad option is an error all the same.
    model = resgrad.ResidualMLP.init([4, 6, 3], seed=0)
    x = np.full((2, 4), 0.5)
    with pytest.raises(error):
        call(model, x, np.array([0, 1]))


def test_l2_of_huge_float32_perturbation_is_finite():
    # Squares of entries past 1.8e19 overflow float32, the norm does not.
    model = resgrad.ResidualMLP.init([8, 6, 3], seed=0, dtype="float32")
    x = np.full((2, 8), 5e19, np.float32)
    y = np.array([0, 1])
    result = attacks.pgd_l2(model, x, y, 4e19, bounds=(0.0, 1e20), seed=0)
    delta = result.x_adv.astype(np.float64) - x.astype(np.float64)
    expected = np.linalg.norm(delta, axis=1)
    np.testing.assert_allclose(result.l2, expected, rtol=1e-6)
    assert (result.l2 <= np.float32(4e19) * (1 + 1e-6)).all()


def test_overflowing_default_step_raises(model):
    x, y = make_batch()
    with pytest.raises(ValueError, match="default step size .* beyond the range"):
        attacks.pgd_l2(model, x, y, 1.7e308, steps=1)


@pytest.mark.parametrize("name", ["fgsm", "bim", "mifgsm", "illcm", "jsma", "mjsma"])
def test_gradient_overflow_at_a_finite_forward_pass_named(name):
    # 300 identity blocks scaled by 10: logits near 1e168 at x, but
    # derivatives past float64's range. mifgsm once stepped to NaN and
    # blamed the forward pass; jsma stopped and reported no success.
    model = resgrad.ResidualMLP.init(
        [6] * 301 + [3], activation="identity", seed=0, alpha=10.0
    )
    x, y = np.full((2, 6), 1e-200), np.array([0, 1])
    options = {"target": np.array([2, 0]), "gamma": 1.0} if "jsma" in name else {}
    eps = () if "jsma" in name else (0.1,)
    derivative = "Jacobian" if "jsma" in name else "gradient"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as caught:
            getattr(attacks, name)(model, x, y, *eps, **options)
    assert str(caught.value) == (
        f"The input {derivative} contains NaN although the forward pass is finite: "
        "the network's derivatives overflowed float64; scale the inputs or the "
        "weights down."
    )


@pytest.mark.parametrize("name", ["fgsm", "bim", "illcm", "mifgsm", "pgd", "pgd_l2"])
def test_infinite_gradient_entry_gives_its_sign(name):
    # One linear block with logits (10, 9.9) at x, where dY/dx is (-inf, 4.75):
    # the infinite entry still gives the direction to step, and each attack
    # reaches class 1. The normalised attacks step along that entry alone.
    model = resgrad.ResidualMLP.init(
        [2, 2], activation="identity", shortcut="none", bias=False, seed=0
    )
    model = model.replace_arrays(
        {"blocks.0.W1": np.diag([1e155, 10.0]), "blocks.0.W2": np.diag([1e154, 1.0])}
    )
    x, y = np.array([[1e-308, 0.99]]), np.array([0])
    options = {"random_start": False} if name.startswith("pgd") else {}
    result = getattr(attacks, name)(model, x, y, 0.5, **options)
    assert result.success.tolist() == [True]
    assert result.x_adv[0, 0] == 0.0
    assert np.isfinite(result.x_adv).all()


@pytest.mark.parametrize("name", NAMES)
def test_input_requiring_grad_gives_plain_result(model, name):
    """x_adv carries no autograd graph and torch gives no warning, as for an
    input that does not require a gradient."""
    x, y = make_batch()
    net = model.convert(torch)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    tracked = x_t.clone().requires_grad_(True)
    weights = {k: v.clone().requires_grad_(True) for k, v in net.arrays().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(name, net.replace_arrays(weights), tracked, y_t)
    expected = run(name, net, x_t, y_t)
    assert not result.x_adv.requires_grad
    assert tracked.grad is None
    assert torch.is_grad_enabled()
    torch.testing.assert_close(result.x_adv, expected.x_adv, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["pgd", "pgd_l2"])
@pytest.mark.parametrize("option", ["random_start", "early_stop"])
def test_flag_of_text_raises(model, name, option):
    x, y = make_batch()
    with pytest.raises(TypeError, match=f"Expected {option} to be True or False"):
        run(name, model, x, y, **{option: "no"})


@pytest.mark.parametrize("name", ["pgd", "pgd_l2", "rfgsm"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_start_of_another_dtype_is_cast_to_x(model, name, backend):
    x, y = make_batch()
    model32, x32 = model.convert(dtype=np.float32), x.astype(np.float32)
    start = np.clip(x + 0.03, 0.0, 1.0)
    if backend == "torch":
        model32 = model32.convert(torch)
        x32, y, start = torch.tensor(x32), torch.tensor(y), torch.tensor(start)
    cast = start.astype(np.float32) if backend == "numpy" else start.float()
    expected = run(name, model32, x32, y, start=cast)
    actual = run(name, model32, x32, y, start=start)
    assert actual.x_adv.dtype == x32.dtype
    np.testing.assert_array_equal(np.asarray(actual.x_adv), np.asarray(expected.x_adv))


def test_integer_start_names_the_dtype_of_x(model):
    x, y = make_batch()
    start = np.zeros(x.shape, dtype=np.int64)
    with pytest.raises(TypeError, match="cast it to the model's dtype float64"):
        attacks.pgd(model, x, y, EPS, start=start)


def test_start_beyond_the_dtype_of_x_names_start(model):
    x, y = make_batch()
    start = x.copy()
    start[0, 0] = 1e39
    with pytest.raises(ValueError, match="start has values beyond 3.403e"):
        attacks.pgd(
            model.convert(dtype=np.float32), x.astype(np.float32), y, EPS, start=start
        )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "jsma"])
def test_result_target_is_a_new_int64_array(model, name, backend):
    x, y = make_batch()
    target = other_class(y).astype(np.int32)
    if backend == "torch":
        model, x, y, target = (
            model.convert(torch),
            torch.tensor(x),
            torch.tensor(y),
            torch.tensor(target),
        )
    result = run(name, model, x, y, target=target)
    assert result.target is not target
    assert str(result.target.dtype).endswith("int64")
    np.testing.assert_array_equal(np.asarray(result.target), np.asarray(target))
    result.target[0] = 0
    assert int(target[0]) == int(other_class(y)[0])


def test_start_of_wrong_shape_raises(model):
    x, y = make_batch()
    with pytest.raises(ValueError, match="start"):
        attacks.pgd(model, x, y, EPS, start=x[:3])


# JSMA and maximal JSMA.

SMALL_D = 8


@pytest.fixture(scope="module")
def small_model() -> resgrad.ResidualMLP:
    return resgrad.ResidualMLP.init([SMALL_D, 16, 8, 5], seed=3)


def small_batch(n: int = 10, seed: int = 0, low: float = 0.2, high: float = 0.8):
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n, SMALL_D))
    y = rng.integers(0, 5, size=n)
    return x, y


def brute_force_pair(jacobian, cls, domain_up, domain_down, rule, toward=True):
    """Return the first pair ``(p, q, direction)`` of highest score, by loops."""
    best, choice = 0.0, None
    d = jacobian.shape[1]
    for p in range(d):
        for q in range(p + 1, d):
            alpha = jacobian[cls, p] + jacobian[cls, q]
            beta = jacobian[:, p].sum() + jacobian[:, q].sum() - alpha
            if rule == "increasing":
                ok = alpha > 0 and beta < 0 and domain_up[p] and domain_up[q]
                direction = 1.0
            elif rule == "decreasing":
                ok = alpha < 0 and beta > 0 and domain_down[p] and domain_down[q]
                direction = -1.0
            else:
                direction = float(np.sign(alpha)) * (1.0 if toward else -1.0)
                domain = domain_up if direction > 0 else domain_down
                ok = alpha * beta < 0 and domain[p] and domain[q]
            score = abs(alpha) * abs(beta)
            if ok and score > best:
                best, choice = score, (p, q, direction)
    return choice


def one_pair_gamma(d: int) -> float:
    return 2.0 / d


@pytest.mark.parametrize(
    "rule, theta", [("increasing", 0.3), ("decreasing", -0.3), ("maximal", 0.3)]
)
def test_pair_choice_matches_brute_force(small_model, rule, theta):
    x, y = small_batch(n=30, low=0.0, high=1.0)
    x = np.where(np.random.default_rng(1).uniform(size=x.shape) < 0.2, np.round(x), x)
    target = (y + 2) % 5
    gamma = one_pair_gamma(SMALL_D)
    if rule == "maximal":
        result = attacks.mjsma(
            small_model, x, y, target=target, theta=theta, gamma=gamma
        )
    else:
        result = attacks.jsma(small_model, x, y, target, theta=theta, gamma=gamma)
    jacobian = resgrad.input_jacobian(small_model, x)
    already = small_model.predict(x) == target
    checked = 0
    for i in range(len(x)):
        choice = brute_force_pair(jacobian[i], target[i], x[i] < 1, x[i] > 0, rule)
        expected = x[i].copy()
        if choice is not None and not already[i]:
            p, q, direction = choice
            moved = expected[[p, q]] + direction * abs(theta)
            expected[[p, q]] = within(x[i, [p, q]], moved, abs(theta))
            checked += 1
        np.testing.assert_array_equal(result.x_adv[i], expected)
    assert checked >= 10


def test_mjsma_untargeted_moves_against_source(small_model):
    x, y = small_batch(n=30)
    y = small_model.predict(x)
    result = attacks.mjsma(small_model, x, y, theta=0.3, gamma=one_pair_gamma(SMALL_D))
    jacobian = resgrad.input_jacobian(small_model, x)
    for i in range(len(x)):
        choice = brute_force_pair(
            jacobian[i], y[i], x[i] < 1, x[i] > 0, "maximal", toward=False
        )
        expected = x[i].copy()
        if choice is not None:
            p, q, direction = choice
            moved = expected[[p, q]] + direction * 0.3
            expected[[p, q]] = within(x[i, [p, q]], moved, 0.3)
        np.testing.assert_array_equal(result.x_adv[i], expected)


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_one_pair_budget_changes_two_features(small_model, name):
    x, y = small_batch(n=40)
    gamma = one_pair_gamma(SMALL_D)
    if name == "jsma":
        result = attacks.jsma(small_model, x, y, (y + 1) % 5, gamma=gamma)
    else:
        result = attacks.mjsma(small_model, x, y, gamma=gamma)
    assert result.l0.max() <= 2
    assert result.steps.max() <= 1
    assert result.l0.max() == 2


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_saliency_attacks_clip_input_within_tolerance(small_model, name):
    # Rows the attack never moves must end in the box too.
    x, y = small_batch()
    x[0, 0], x[1, 1] = 1 + 5e-7, -5e-7
    result = getattr(attacks, name)(small_model, x, y, target=(y + 1) % 5, gamma=0.25)
    assert result.x_adv.max() <= 1.0
    assert result.x_adv.min() >= 0.0


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_budget_of_no_pair_names_the_smallest_gamma(small_model, name):
    # 8 features at gamma 0.1 allow floor(0.4) = 0 pairs: a silent no-op.
    x, y = small_batch()
    target = (y + 1) % 5
    attack = getattr(attacks, name)
    with pytest.raises(ValueError, match=r"= 0 iterations .* pass gamma >= 0.25\."):
        attack(small_model, x, y, target=target)
    assert attack(small_model, x, y, target=target, gamma=0.25).steps.max() == 1


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_budget_rounds_down(small_model, name):
    x, y = small_batch(n=40)
    y = small_model.predict(x)
    # 8 * 0.7 / 2 = 2.8 allows 2 pairs; torchattacks would round up to 3.
    target = (y + 1) % 5
    if name == "jsma":
        result = attacks.jsma(small_model, x, y, target, theta=0.05, gamma=0.7)
    else:
        result = attacks.mjsma(small_model, x, y, target=target, theta=0.05, gamma=0.7)
    assert result.steps.max() == 2
    assert result.l0.max() <= 4


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_no_feature_picked_twice(small_model, name):
    x, y = small_batch(n=40)
    theta = 0.05
    target = (y + 1) % 5
    if name == "jsma":
        result = attacks.jsma(small_model, x, y, target, theta=theta, gamma=1.0)
    else:
        result = attacks.mjsma(small_model, x, y, target=target, theta=theta, gamma=1.0)
    delta = np.abs(result.x_adv - x)
    changed = delta > 0
    # No clipping happens in [0.2, 0.8], so a feature picked twice would
    # have moved by 2 theta.
    np.testing.assert_allclose(delta[changed], theta, rtol=1e-12)
    np.testing.assert_array_equal(result.l0, 2 * result.steps)
    assert result.steps.max() >= 2


def test_jsma_never_moves_features_at_bound(small_model):
    x, y = small_batch(n=40)
    x[:, :3] = 1.0
    result = attacks.jsma(small_model, x, y, (y + 1) % 5, theta=0.4, gamma=1.0)
    np.testing.assert_array_equal(result.x_adv[:, :3], 1.0)
    assert result.l0.max() > 0


@pytest.mark.parametrize("method", ["jsma", "jsma down", "mjsma"])
def test_jsma_skips_features_at_rounded_bound(method):
    """float32 rounds 0.3 up and -0.3 down, so a feature at the largest
    float32 inside the box cannot move up, and one at the smallest cannot
    move down. Every pair counted must move both its features."""
    model = resgrad.ResidualMLP.init([16, 16, 4], seed=0, dtype="float32")
    rng = np.random.default_rng(0)
    edge = np.float32(0.29999998)
    assert float(edge) <= 0.3
    assert float(np.nextafter(edge, np.float32(1))) > 0.3
    x = rng.uniform(-0.3, 0.2, (50, 16)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = edge
    y = model.predict(x)
    options = {"gamma": 1.0, "bounds": (-0.3, 0.3)}
    if method == "jsma":
        result = attacks.jsma(model, x, y, (y + 1) % 4, **options)
    elif method == "jsma down":
        result = attacks.jsma(model, -x, y, (y + 1) % 4, theta=-0.6, **options)
    else:
        result = attacks.mjsma(model, x, y, **options)
    assert result.steps.sum() > 20
    np.testing.assert_array_equal(result.l0, 2 * result.steps)


def test_decreasing_jsma_only_lowers_features(small_model):
    x, y = small_batch(n=40)
    result = attacks.jsma(small_model, x, y, (y + 1) % 5, theta=-0.5, gamma=0.5)
    assert np.all(result.x_adv <= x)
    assert result.l0.max() > 0


def test_mjsma_moves_both_ways(small_model):
    x, y = small_batch(n=40)
    result = attacks.mjsma(small_model, x, y, theta=0.1, gamma=1.0)
    delta = result.x_adv - x
    assert np.any(delta > 0)
    assert np.any(delta < 0)


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_no_admissible_pair_stops_and_fails(flat_model, name):
    x, y = make_batch()
    y = flat_model.predict(x)
    if name == "jsma":
        result = attacks.jsma(flat_model, x, y, other_class(y), gamma=1.0)
    else:
        result = attacks.mjsma(flat_model, x, y, gamma=1.0)
    assert not np.any(result.success)
    np.testing.assert_array_equal(result.steps, np.zeros(N))
    np.testing.assert_array_equal(result.x_adv, x)


def test_jsma_stops_with_fewer_than_two_features(small_model):
    x, y = small_batch(n=20)
    x[:, 1:] = 1.0
    result = attacks.jsma(small_model, x, y, (y + 1) % 5, gamma=1.0)
    np.testing.assert_array_equal(result.steps, np.zeros(20))
    np.testing.assert_array_equal(result.x_adv, x)


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_saliency_attack_stops_on_success(small_model, name):
    x, y = small_batch(n=40)
    y = small_model.predict(x)
    target = np.argsort(small_model.logits(x), axis=1)[:, -2]

    def attack(gamma):
        if name == "jsma":
            return attacks.jsma(small_model, x, y, target, theta=0.3, gamma=gamma)
        return attacks.mjsma(small_model, x, y, target=target, theta=0.3, gamma=gamma)

    result = attack(1.0)
    won = np.flatnonzero(result.success)
    assert won.size > 0
    for index in won:
        pairs = int(result.steps[index])
        assert pairs >= 1
        # With the budget of exactly its pairs it ends where the full run ended.
        exact = attack(2.0 * pairs / SMALL_D)
        np.testing.assert_array_equal(exact.x_adv[index], result.x_adv[index])
        # With one pair fewer it has not reached the target yet.
        if pairs > 1:
            assert not attack(2.0 * (pairs - 1) / SMALL_D).success[index]
    assert result.steps[won].max() > 1


def test_jsma_already_at_target_takes_no_step(small_model):
    x, y = small_batch(n=10)
    predicted = small_model.predict(x)
    result = attacks.jsma(small_model, x, y, predicted, gamma=1.0)
    np.testing.assert_array_equal(result.steps, np.zeros(10))
    assert np.all(result.success)


@pytest.mark.parametrize("method", ["jsma", "mjsma"])
def test_jsma_exact_zero_beta_admits_no_pair(method):
    # z = W3 x: both features raise logit 0 by 0.1 and move logits 1 and 2 by
    # +0.7 and -0.7, so beta is exactly 0 and no pair may move. The sum of
    # all three rows minus row 0 rounds to -5.6e-17 instead.
    w3 = np.array([[0.1, 0.1], [0.7, 0.7], [-0.7, -0.7]])
    block = resgrad.Block(
        W1=np.zeros((1, 2)), W2=np.zeros((3, 1)), W3=w3, shortcut="learned"
    )
    model = resgrad.ResidualMLP([block], activation="identity")
    x = np.array([[0.2, 0.2]])
    result = getattr(attacks, method)(
        model, x, model.predict(x), target=np.array([0]), gamma=1.0
    )
    np.testing.assert_array_equal(result.steps, [0])
    np.testing.assert_array_equal(result.x_adv, x)


def _steep_linear_model(scale: float) -> resgrad.ResidualMLP:
    """Return ``z = W3 x + b2`` with logit 0 rising and logit 1 falling twice as
    fast in features 2 and 3 as in 0 and 1, times ``scale``."""
    w3 = scale * np.array([[1.0, 1.0, 2.0, 2.0], [-1.0, -1.0, -2.0, -2.0]])
    block = resgrad.Block(
        W1=np.zeros((1, 4)),
        W2=np.zeros((2, 1)),
        W3=w3,
        b1=np.zeros(1),
        b2=np.array([-20.0 * scale, 0.0]),
    )
    return resgrad.ResidualMLP([block], activation="identity")


def _one_pair_moved(method, model, x, xp):
    """Run one step of ``method`` from label 1 toward class 0, with warnings
    as errors, and return which features of the sample end above 0.55."""
    label, target = xp.asarray(np.array([1])), xp.asarray(np.array([0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = getattr(attacks, method)(
            model, x, label, target=target, theta=0.1, gamma=0.5
        )
    np.testing.assert_array_equal(np.asarray(result.steps), [1])
    return np.asarray(result.x_adv, dtype=np.float64)[0] > 0.55


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["jsma", "mjsma"])
@pytest.mark.parametrize(
    "scale, dtype",
    [
        # Unscaled, the best score of 8 scale^2 overflows float16 at 100,
        # float32 at 1e20 and float64 at 1e154, and underflows to 0 at the
        # small scales.
        (100.0, "float16"),
        (1e20, "float32"),
        (1e-23, "float32"),
        (1e154, "float64"),
        (1e-163, "float64"),
    ],
)
def test_jsma_extreme_jacobian_picks_best_pair(scale, dtype, method, namespace):
    xp = torch if namespace == "torch" else np
    model = _steep_linear_model(scale).convert(xp, dtype=dtype)
    x = xp.asarray(np.full((1, 4), 0.5, dtype=dtype))
    np.testing.assert_array_equal(
        _one_pair_moved(method, model, x, xp), [False, False, True, True]
    )


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
@pytest.mark.parametrize(
    "method, large, small, dtype",
    [
        ("jsma", 100.0, 0.005, "float16"),
        ("mjsma", 100.0, 0.005, "float16"),
        ("jsma", 100.0, 0.002, "float16"),
        ("jsma", 1e30, 1e-8, "float32"),
    ],
)
def test_jsma_blocked_large_feature_keeps_best_pair(
    method, large, small, dtype, namespace
):
    # Feature 0 sits at hi, so it cannot move up, and its large entry must
    # not set the scale of the others, whose best pair is (2, 3).
    xp = torch if namespace == "torch" else np
    w3 = np.array([[large, small, 1.5 * small, 2 * small]])
    block = resgrad.Block(
        W1=np.zeros((1, 4)),
        W2=np.zeros((2, 1)),
        W3=np.concatenate([w3, -w3]),
        b1=np.zeros(1),
        b2=np.array([-2.005 * large, 0.0]),
    )
    model = resgrad.ResidualMLP([block], activation="identity").convert(xp, dtype=dtype)
    x = xp.asarray(np.array([[1.0, 0.5, 0.5, 0.5]], dtype=dtype))
    np.testing.assert_array_equal(
        _one_pair_moved(method, model, x, xp), [True, False, True, True]
    )


def test_jsma_needs_target(small_model):
    x, y = small_batch()
    with pytest.raises(ValueError, match="targeted"):
        attacks.jsma(small_model, x, y, None)


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5])
@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_gamma_out_of_range_raises(small_model, name, gamma):
    x, y = small_batch()
    with pytest.raises(ValueError, match="gamma"):
        if name == "jsma":
            attacks.jsma(small_model, x, y, (y + 1) % 5, gamma=gamma)
        else:
            attacks.mjsma(small_model, x, y, gamma=gamma)


def test_mjsma_negative_theta_raises(small_model):
    x, y = small_batch()
    with pytest.raises(ValueError, match="theta >= 0"):
        attacks.mjsma(small_model, x, y, theta=-0.5)


@pytest.mark.parametrize("name", ["jsma", "mjsma"])
def test_jsma_default_theta_overflow_named(small_model, name):
    x, y = small_batch()
    with pytest.raises(
        ValueError, match=r"The default theta, hi - lo = inf .* pass theta="
    ):
        getattr(attacks, name)(
            small_model, x, y, target=(y + 1) % 5, bounds=(-1e308, 1e308)
        )


def test_saliency_chunks_give_same_result(small_model, monkeypatch):
    import resgrad.attacks._jsma as saliency

    x, y = small_batch(n=25)
    whole = attacks.mjsma(small_model, x, y, theta=0.2, gamma=1.0)
    monkeypatch.setattr(saliency, "SCORE_ELEMENTS", 7 * SMALL_D * SMALL_D)
    chunked = attacks.mjsma(small_model, x, y, theta=0.2, gamma=1.0)
    np.testing.assert_array_equal(whole.x_adv, chunked.x_adv)
    np.testing.assert_array_equal(whole.steps, chunked.steps)


def test_empty_batch(model):
    x = np.zeros((0, D))
    y = np.zeros(0, dtype=np.int64)
    for name in NAMES:
        result = run(name, model, x, y)
        assert result.x_adv.shape == (0, D)


# Scalar targets: one class for every sample.

TARGETED = ["fgsm", "bim", "mifgsm", "pgd", "pgd_l2", "jsma", "mjsma"]


@pytest.mark.parametrize("target", [3, np.int64(3), np.array(3)], ids=repr)
@pytest.mark.parametrize("name", TARGETED)
def test_scalar_target_matches_array(model, name, target):
    x, y = make_batch()
    expected = run(name, model, x, y, target=np.full(N, 3))
    result = run(name, model, x, y, target=target)
    assert result.target.shape == (N,)
    np.testing.assert_array_equal(result.target, np.full(N, 3))
    np.testing.assert_array_equal(result.x_adv, expected.x_adv)


@pytest.mark.parametrize("name", TARGETED)
def test_scalar_target_keeps_torch(model, name):
    x, y = make_batch()
    result = run(name, model.convert(torch), torch.tensor(x), torch.tensor(y), target=3)
    assert isinstance(result.target, torch.Tensor)
    assert result.target.dtype == torch.int64
    assert result.target.device == result.x_adv.device
    assert torch.equal(result.target, torch.full((N,), 3))


@pytest.mark.parametrize(
    "target",
    [CLASSES, 12, -1, np.int64(12), 2**70, -(2**70), np.uint64(2**63)],
    ids=repr,
)
@pytest.mark.parametrize("name", TARGETED)
def test_scalar_target_out_of_range(model, name, target):
    """A class past int64 gets the range error, not the broadcast's overflow."""
    x, y = make_batch()
    with pytest.raises(
        ValueError, match=rf"Target class {int(target)} is outside \[0, {CLASSES}\)"
    ):
        run(name, model, x, y, target=target)


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (3.0, "3.0"),
        (np.float64(3.0), "np.float64(3.0)"),
        (np.array(3.0), "3.0"),
        (True, "True"),
        (np.bool_(False), "np.False_"),
        ("3", "'3'"),
        (b"3", "b'3'"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("name", TARGETED)
def test_scalar_target_not_an_integer(model, name, target, shown):
    x, y = make_batch()
    with pytest.raises(TypeError, match=rf"target .*, got {re.escape(shown)};"):
        run(name, model, x, y, target=target)


@pytest.mark.parametrize("name", TARGETED)
def test_target_equal_to_label_warns(model, name):
    x, y = make_batch()
    target = (y + 1) % CLASSES
    target[:3] = y[:3]
    with pytest.warns(UserWarning, match=rf"label y in 3 of {N} rows") as record:
        run(name, model, x, y, target=target)
    # The warning points at the caller, past resgrad's wrappers.
    assert [w.filename for w in record] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(name, model, x, y, target=(y + 1) % CLASSES)


def test_target_warning_on_one_class_model():
    model = resgrad.ResidualMLP.init([4, 1], seed=0)
    x, y = np.full((3, 4), 0.5), np.zeros(3, dtype=np.int64)
    with pytest.warns(UserWarning) as record:
        attacks.fgsm(model, x, y, EPS, target=0)
    message = str(record[0].message)
    assert message.endswith("the model has one class, so every target is the label.")
    assert "% 1" not in message


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ball_holds_exactly_in_low_precision(dtype):
    model = resgrad.ResidualMLP.init([64, 32, 32, 10], seed=0).convert(dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.random((64, 64)).astype(dtype)
    y = rng.integers(0, 10, 64)
    result = attacks.pgd(model, x, y, 0.1, seed=0)
    assert result.x_adv.dtype == np.dtype(dtype)
    assert float(result.linf.max()) <= 0.1
    assert np.abs(result.x_adv - x).max() <= 0.1
    assert np.all((result.x_adv >= 0) & (result.x_adv <= 1))


def test_illcm_rejects_a_one_class_model():
    # The least likely class would be the label: success without a step.
    model = resgrad.ResidualMLP.init([4, 3, 1], seed=0)
    x, y = np.full((2, 4), 0.5), np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="illcm needs a model with 2 or more"):
        attacks.illcm(model, x, y, 0.1)
