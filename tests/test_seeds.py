"""Every seed argument takes an int >= 0 (or a Generator where documented)
and names a bad one, in the library and on the command line."""

import numpy as np
import pytest

import resgrad
from resgrad import attacks, depth, saliency
from resgrad.cli import main
from resgrad.robustness import evaluate


@pytest.fixture(scope="module")
def setting():
    model = resgrad.ResidualMLP.init([6, 6, 6, 3], seed=0)
    x = np.random.default_rng(0).uniform(size=(4, 6))
    y = np.array([0, 1, 2, 0])
    return model, x, y


CALLS = {
    "init": lambda m, x, y, s: resgrad.ResidualMLP.init([3, 3], seed=s),
    "pgd": lambda m, x, y, s: attacks.pgd(m, x, y, 0.1, seed=s),
    "pgd_l2": lambda m, x, y, s: attacks.pgd_l2(m, x, y, 0.1, seed=s),
    "rfgsm": lambda m, x, y, s: attacks.rfgsm(m, x, y, 0.1, seed=s),
    "smoothgrad": lambda m, x, y, s: saliency.smoothgrad(m, x, y, seed=s),
    "deletion_curve": lambda m, x, y, s: saliency.deletion_curve(m, x, x, y, seed=s),
    "randomize_blocks": lambda m, x, y, s: saliency.randomize_blocks(m, 1, s),
    "probe_batch": lambda m, x, y, s: depth.probe_batch(2, 3, 3, s),
    "redrawn_network": lambda m, x, y, s: depth.redrawn_network(m, seed=s),
    "check_theorem": lambda m, x, y, s: resgrad.check_theorem(m, x, y, seed=s),
    "train_test_split": lambda m, x, y, s: resgrad.data.train_test_split(x, y, 0.5, s),
    "fit": lambda m, x, y, s: resgrad.fit(m, x, y, epochs=1, seed=s),
    "evaluate": lambda m, x, y, s: evaluate(m, x, y, "fgsm", [0.1], seed=s),
}


@pytest.mark.parametrize("name", CALLS)
def test_negative_seed_names_the_value(setting, name):
    with pytest.raises(ValueError, match=r"Expected seed >= 0, got -1; .* pass e.g. 1"):
        CALLS[name](*setting, -1)


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("seed", [1.5, True, "0"])
def test_non_integer_seed_is_a_type_error(setting, name, seed):
    with pytest.raises(TypeError, match="seed"):
        CALLS[name](*setting, seed)


# What each call draws at random, as an array.
DRAWN = {
    "init": lambda result: result.blocks[0].W1,
    "pgd": lambda result: result.x_adv,
    "smoothgrad": lambda result: result,
    "deletion_curve": lambda result: result.random_scores,
}


@pytest.mark.parametrize("name", DRAWN)
def test_numpy_integer_seed_equals_int_seed(setting, name):
    first = DRAWN[name](CALLS[name](*setting, np.int64(3)))
    second = DRAWN[name](CALLS[name](*setting, 3))
    other = DRAWN[name](CALLS[name](*setting, 4))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    "command, option",
    [
        ("train", "--seed"),
        ("attack", "--seed"),
        ("saliency", "--seed"),
        ("train", "--split-seed"),
        ("evaluate", "--split-seed"),
    ],
)
def test_cli_rejects_negative_seed(capsys, command, option):
    assert main([command, option, "-1"]) == 2
    expected = f"argument {option}: expected an integer >= 0, got -1"
    assert expected in capsys.readouterr().err
