"""Tests of resgrad.robustness and the ``resgrad attack`` command."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys

import numpy as np
import pytest

import resgrad
from resgrad import attacks, robustness
from resgrad.cli import main
from resgrad.cli._common import RunContext, Section
from resgrad.cli.attack import SECTION_FILES, report_section
from resgrad.data import Dataset

D = 64
CLASSES = 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> resgrad.ResidualMLP:
    return resgrad.ResidualMLP.init([D, 16, CLASSES], seed=0)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, size=(24, D))
    y = rng.integers(0, CLASSES, size=24)
    return x, y


@pytest.fixture(scope="module")
def table(model, batch):
    x, y = batch
    return robustness.evaluate(model, x, y, "all", [0.0, 0.1], seed=0)


def rows_of(table, method):
    return [row for row in table.rows if row.method == method]


# Evaluation.


def test_rows_cover_methods_and_eps(table):
    pairs = [(row.method, row.eps) for row in table.rows]
    expected = [(m, eps) for m in robustness.METHODS for eps in (0.0, 0.1)]
    assert pairs == expected


def test_clean_accuracy_is_model_accuracy(model, batch, table):
    x, y = batch
    accuracy = float(np.mean(model.predict(x) == y))
    for row in table.rows:
        assert row.clean_accuracy == accuracy


def test_zero_eps_keeps_clean_accuracy(table):
    for row in table.rows:
        if row.eps == 0.0:
            assert row.robust_accuracy == row.clean_accuracy
            assert row.max_linf == 0.0


def test_robust_accuracy_matches_attack(model, batch, table):
    x, y = batch
    result = attacks.bim(model, x, y, 0.1, steps=10)
    expected = float(np.mean(result.prediction == y))
    assert rows_of(table, "bim")[1].robust_accuracy == expected
    assert rows_of(table, "bim")[1].mean_linf == pytest.approx(
        float(result.linf.mean())
    )


def test_untargeted_success_is_complement(table):
    for method in ("fgsm", "bim", "rfgsm", "mifgsm", "pgd", "pgd_l2", "mjsma"):
        for row in rows_of(table, method):
            assert row.success_rate == pytest.approx(1.0 - row.robust_accuracy)


def test_targeted_success_bounded(table):
    for method in ("illcm", "jsma"):
        for row in rows_of(table, method):
            assert row.success_rate <= 1.0 - row.robust_accuracy + 1e-12


def test_perturbation_within_radius(table):
    for row in table.rows:
        if row.method == "pgd_l2":
            assert row.max_l2 <= row.eps * math.sqrt(D) * (1 + 1e-12)
        else:
            assert row.max_linf <= row.eps * (1 + 1e-12)
        assert row.mean_l0 <= row.max_l0 <= D


def test_default_parameters_are_stated(model, batch):
    x, y = batch
    bim = robustness.run_attack(model, x, y, "bim", 0.1)
    explicit = attacks.bim(model, x, y, 0.1, steps=10, alpha=0.025)
    np.testing.assert_array_equal(bim.x_adv, explicit.x_adv)
    mifgsm = robustness.run_attack(model, x, y, "mifgsm", 0.1)
    explicit = attacks.mifgsm(model, x, y, 0.1, steps=10, alpha=0.01, mu=1.0)
    np.testing.assert_array_equal(mifgsm.x_adv, explicit.x_adv)
    jsma = robustness.run_attack(model, x, y, "jsma", 0.1)
    np.testing.assert_array_equal(jsma.target, robustness.runner_up_class(model, x, y))
    assert jsma.linf.max() <= 0.1 * (1 + 1e-12)
    assert jsma.steps.max() <= math.floor(D * robustness.SALIENCY_GAMMA / 2)


def test_runner_up_class(model, batch):
    x, y = batch
    runner_up = robustness.runner_up_class(model, x, y)
    logits = model.logits(x)
    assert np.all(runner_up != y)
    for i in range(len(y)):
        others = np.delete(logits[i], y[i])
        assert logits[i, runner_up[i]] == others.max()


def test_row_independent_of_other_methods(model, batch, table):
    x, y = batch
    alone = robustness.evaluate(model, x, y, ["pgd"], [0.1], seed=0)
    assert alone.rows[0] == rows_of(table, "pgd")[1]
    np.testing.assert_array_equal(
        alone.examples[("pgd", 0.1)].x_adv, table.examples[("pgd", 0.1)].x_adv
    )


def test_seed_changes_random_attacks(model, batch, table):
    x, y = batch
    other = robustness.evaluate(model, x, y, ["pgd"], [0.1], seed=1)
    assert np.any(
        other.examples[("pgd", 0.1)].x_adv != table.examples[("pgd", 0.1)].x_adv
    )


def test_limits_cap_samples(model, batch):
    x, y = batch
    limited = robustness.evaluate(
        model, x, y, ["fgsm", "jsma"], [0.1], limits={"jsma": 5}
    )
    assert [row.samples for row in limited.rows] == [24, 5]


def test_progress_wraps_runs(model, batch):
    x, y = batch
    seen = []

    def progress(iterable, desc, total):
        seen.append((desc, total))
        return iterable

    robustness.evaluate(model, x, y, "fgsm,bim", [0.0, 0.1, 0.2], progress=progress)
    assert seen == [("attacks", 6)]


def test_examples_kept(table, batch):
    _, y = batch
    assert table.x.shape == (robustness.EXAMPLES, D)
    np.testing.assert_array_equal(table.y, y[: robustness.EXAMPLES])
    kept = table.examples[("fgsm", 0.1)]
    assert kept.x_adv.shape == (robustness.EXAMPLES, D)
    assert kept.prediction.shape == (robustness.EXAMPLES,)


def test_evaluate_on_torch(model, batch):
    torch = pytest.importorskip("torch")
    x, y = batch
    expected = robustness.evaluate(model, x, y, ["bim", "jsma"], [0.1])
    result = robustness.evaluate(
        model.convert(torch), torch.tensor(x), torch.tensor(y), ["bim", "jsma"], [0.1]
    )
    assert result.rows == expected.rows


def test_evaluate_on_bfloat16_tensors(model, batch):
    """NumPy has no bfloat16; the table's arrays come back as float32."""
    torch = pytest.importorskip("torch")
    x, y = batch
    low = model.convert(torch, dtype=torch.bfloat16)
    table = robustness.evaluate(
        low, torch.tensor(x, dtype=torch.bfloat16), torch.tensor(y), "fgsm", [0.1]
    )
    assert table.x.dtype == np.float32
    assert table.examples[("fgsm", 0.1)].x_adv.dtype == np.float32
    assert table.rows[0].max_linf == pytest.approx(0.1, rel=1e-2)


# Argument parsing.


@pytest.mark.parametrize("eps", [1e300, 1.7e308])
def test_huge_eps_runs_random_attacks(model, batch, eps):
    """The seed key of an eps that overflows when scaled by 1e9 still gives
    every (method, eps) its own stream."""
    x, y = batch
    table = robustness.evaluate(model, x[:4], y[:4], "rfgsm,pgd", [eps], seed=0)
    assert [row.method for row in table.rows] == ["rfgsm", "pgd"]
    keys = {robustness._eps_key(value) for value in (0.1, 1e300, 1.7e308)}
    assert len(keys) == 3


def test_parse_methods():
    assert robustness.parse_methods("all") == list(robustness.METHODS)
    assert robustness.parse_methods("FGSM, pgd_l2,fgsm") == ["fgsm", "pgd_l2"]
    assert robustness.parse_methods(["bim"]) == ["bim"]


@pytest.mark.parametrize("methods", ["fgsm,", ",pgd", "fgsm,,pgd"])
def test_methods_with_empty_item_raise(methods):
    with pytest.raises(ValueError, match="Empty item in methods"):
        robustness.parse_methods(methods)


@pytest.mark.parametrize("methods", ["fgsm,all", ["all", "pgd"], "all,all"])
def test_all_beside_other_names_raises(methods):
    with pytest.raises(ValueError, match="'all' already names every choice"):
        robustness.parse_methods(methods)


@pytest.mark.parametrize(
    "methods, message",
    [
        ("fgsm,cw", "Unknown methods value 'cw'; expected all, or some of: fgsm,"),
        ("deepfool", "Unknown methods value 'deepfool'"),
        ("", "methods is empty; pass all, or some of: fgsm,"),
    ],
)
def test_bad_methods_raise(methods, message):
    with pytest.raises(ValueError, match=message):
        robustness.parse_methods(methods)


def test_parse_eps():
    assert robustness.parse_eps("0, 0.05,0.1") == [0.0, 0.05, 0.1]
    assert robustness.parse_eps([0.2, 0.2]) == [0.2]
    assert robustness.parse_eps(0.3) == [0.3]
    assert robustness.parse_eps(np.array(0.3)) == [0.3]
    # -0 is the radius 0, printed without its sign.
    assert [str(eps) for eps in robustness.parse_eps("-0,0")] == ["0.0"]


@pytest.mark.parametrize(
    "eps, message",
    [
        ("0,-0.1", "eps >= 0"),
        ("a", "Invalid eps"),
        ("", "at least one"),
        ("0.1,1e400", "Invalid eps '1e400': it is beyond the largest float"),
    ],
)
def test_bad_eps_raise(eps, message):
    with pytest.raises(ValueError, match=message):
        robustness.parse_eps(eps)


@pytest.mark.parametrize(
    "eps, message",
    [
        ("-0.1", "Expected eps >= 0, got -0.1; eps is the perturbation radius."),
        ("nan", "Expected a finite eps, got nan; pass a finite real number."),
        ("a", "Invalid eps 'a'; expected numbers such as 0,0.1."),
        ("", "Expected at least one eps value, such as 0,0.05,0.1."),
    ],
)
def test_eps_errors_name_the_argument(eps, message):
    """The library names its argument eps, not the command line's --eps."""
    with pytest.raises(ValueError) as caught:
        robustness.parse_eps(eps)
    assert str(caught.value) == message


def test_evaluate_rejects_unknown_method(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="Unknown methods value 'cw'"):
        robustness.evaluate(model, x, y, ["cw"], [0.1])


@pytest.mark.parametrize("d", [2, 3])
def test_evaluate_moves_a_pair_on_few_features(d):
    # gamma = 0.5 allows floor(d / 4) = 0 pairs below 4 features.
    model = resgrad.ResidualMLP.init([d, 6, 3], seed=1)
    x = np.random.default_rng(0).uniform(0.2, 0.8, (20, d))
    y = model.predict(x)
    table = robustness.evaluate(model, x, y, "jsma,mjsma", 0.4, examples=20)
    for method in ("jsma", "mjsma"):
        moved = table.examples[(method, 0.4)].x_adv != x
        assert moved.sum(axis=1).max() == 2


@pytest.mark.parametrize(
    "methods, named",
    [
        (
            "fgsm,mjsma",
            "mjsma changes features in pairs, and x has 1 feature; leave it",
        ),
        (
            "all",
            "jsma and mjsma change features in pairs, and x has 1 feature; leave them",
        ),
    ],
)
def test_evaluate_names_pair_attacks_on_one_feature(methods, named):
    model = resgrad.ResidualMLP.init([1, 6, 3], seed=0)
    x = np.full((4, 1), 0.5)
    with pytest.raises(ValueError) as caught:
        robustness.evaluate(model, x, model.predict(x), methods, 0.1)
    assert named in str(caught.value)
    assert str(caught.value).endswith(
        "which may be any of: fgsm, bim, illcm, rfgsm, mifgsm, pgd, pgd_l2."
    )


@pytest.mark.parametrize(
    "eps, radii, text",
    [
        (0.0, (), "0"),
        (8 / 255, (), "0.0313725"),
        (0.1000001, (), "0.1"),
        (0.1000001, (0.1, 0.2), "0.1000001"),
        (0.1, (0.1, 0.1000001), "0.1"),
        # Subnormals: their 6 digits show the rounding of the stored value.
        (1e-320, (), "1e-320"),
        (1e-320, (2e-320,), "1e-320"),
        (5e-324, (), "5e-324"),
        (2.5e-322, (), "2.5e-322"),
        # Whole numbers keep their plain form.
        (10.0, (), "10"),
        (255.0, (0.1, 255.0), "255"),
    ],
)
def test_format_eps_tells_close_radii_apart(eps, radii, text):
    assert robustness.format_eps(eps, radii) == text


def test_close_radii_print_apart(model, batch):
    x, y = batch
    table = robustness.evaluate(model, x, y, "fgsm", [0.1, 0.1000001])
    lines = robustness.to_markdown(table).splitlines()
    assert [line.split(" | ")[1] for line in lines[2:]] == ["0.1", "0.1000001"]


def test_mean_norm_never_above_max(model, batch):
    # Every row moves by exactly 0.1 in L-inf, whose mean over 24 rows rounds
    # to 0.10000000000000003 in float64.
    x, y = batch
    x = np.clip(x, 0.2, 0.8)
    (row,) = robustness.evaluate(model, x, y, "fgsm", [0.1]).rows
    assert row.max_linf == 0.1
    assert row.mean_linf == 0.1


def test_evaluate_rejects_empty_batch(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="at least one row in x, got none"):
        robustness.evaluate(model, x[:0], y[:0], "fgsm", 0.1)


@pytest.mark.parametrize(
    "image_shape, error, message",
    [
        ((9, 9), ValueError, "height * width = 64, the number of features, got (9, 9)"),
        ((7, 7), ValueError, "height * width = 64"),
        ((0, 64), ValueError, "height * width = 64"),
        (64, TypeError, "a pair (height, width) of integers, got 64"),
        ((8, 8.0), TypeError, "of integers, got (8, 8.0)"),
        ((4, 4, 4), TypeError, "a pair (height, width)"),
    ],
)
def test_plot_examples_checks_image_shape(table, tmp_path, image_shape, error, message):
    with pytest.raises(error) as caught:
        robustness.plot_examples(table, tmp_path / "grid.png", image_shape)
    assert message in str(caught.value)
    assert not (tmp_path / "grid.png").exists()


def test_plot_examples_rejects_eps_not_in_table(table, tmp_path):
    with pytest.raises(
        ValueError, match=r"eps=0.3 is not a radius of the table \(0, 0.1\)"
    ):
        robustness.plot_examples(table, tmp_path / "grid.png", eps=0.3)


def test_evaluate_rejects_negative_eps(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps >= 0"):
        robustness.evaluate(model, x, y, ["fgsm"], [-0.1])


@pytest.mark.parametrize("limit", [1, 3, np.int64(3)])
def test_limits_below_examples_plot(model, batch, limit, tmp_path):
    # A method limited to fewer rows than the examples keeps only its rows,
    # and the grid leaves the rest of its row empty.
    x, y = batch
    table = robustness.evaluate(
        model, x, y, "fgsm,jsma", [0.1], limits={"jsma": limit}, examples=8
    )
    assert table.examples[("jsma", 0.1)].x_adv.shape == (limit, D)
    assert table.examples[("fgsm", 0.1)].x_adv.shape == (8, D)
    path = robustness.plot_examples(table, tmp_path / "grid.png", (8, 8))
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_progress_bar_names_each_run(model, batch):
    x, y = batch
    postfixes = []

    class Bar(list):
        def set_postfix_str(self, text):
            postfixes.append(text)

    robustness.evaluate(
        model, x, y, "fgsm,jsma", [0.0, 0.1],
        progress=lambda runs, **kwargs: Bar(runs), limits={"jsma": 2},
    )  # fmt: skip
    assert postfixes == ["fgsm eps=0", "fgsm eps=0.1", "jsma eps=0", "jsma eps=0.1"]


def test_evaluate_on_strict_namespace():
    # array-api-strict rejects slices that end past the last row, such as
    # the examples kept or a limit above the row count.
    xs = pytest.importorskip("array_api_strict")
    model = resgrad.ResidualMLP.init([4, 6, 3], seed=0)
    x = np.full((2, 4), 0.5)
    y = np.array([0, 1])
    strict = model.convert(xs)
    table = robustness.evaluate(
        strict, xs.asarray(x), xs.asarray(y), "fgsm,jsma,mjsma", [0.1],
        limits={"jsma": 5},
    )  # fmt: skip
    expected = robustness.evaluate(
        model, x, y, "fgsm,jsma,mjsma", [0.1], limits={"jsma": 5}
    )
    assert [row.robust_accuracy for row in table.rows] == [
        row.robust_accuracy for row in expected.rows
    ]


@pytest.mark.parametrize(
    ("examples", "error"), [(2.5, TypeError), (True, TypeError), (-1, ValueError)]
)
def test_bad_examples_raise(model, batch, examples, error):
    x, y = batch
    with pytest.raises(error, match="examples"):
        robustness.evaluate(model, x, y, "fgsm", [0.1], examples=examples)


def test_examples_as_0d_array_counts(model, batch):
    x, y = batch
    table = robustness.evaluate(model, x, y, "fgsm", [0.1], examples=np.array(3))
    assert table.x.shape[0] == 3


@pytest.mark.parametrize("limits", [{"cw": 3}, {"jsma": 0}, {"jsma": 2.5}])
def test_bad_limits_raise(model, batch, limits):
    x, y = batch
    with pytest.raises(ValueError, match="limit"):
        robustness.evaluate(model, x, y, ["jsma"], [0.1], limits=limits)


# Tables and figures.


def test_markdown_has_one_line_per_row(table):
    lines = robustness.to_markdown(table).strip().splitlines()
    assert len(lines) == 2 + len(table.rows)
    assert lines[0].startswith("| method | eps |")
    assert lines[2].startswith("| fgsm | 0 |")


def test_csv_round_trip(table):
    rows = list(csv.DictReader(io.StringIO(robustness.to_csv(table))))
    assert len(rows) == len(table.rows)
    for read, row in zip(rows, table.rows):
        assert read["method"] == row.method
        assert float(read["robust_accuracy"]) == row.robust_accuracy
        assert float(read["max_l2"]) == row.max_l2


def test_json_has_rows_and_parameters(table):
    payload = json.loads(robustness.to_json(table))
    assert payload["rows"] == table.to_dicts()
    assert set(payload["parameters"]) == set(robustness.METHODS)


def test_parameter_notes_jsma_gamma():
    # On 2 features gamma 0.5 allows no pair, so the attacks take 2 / d = 1.
    model = resgrad.ResidualMLP.init([2, 4, 3], seed=0)
    x = np.random.default_rng(0).uniform(size=(6, 2))
    y = model.predict(x)
    table = robustness.evaluate(model, x, y, ["jsma", "mjsma"], [0.2], seed=0)
    payload = json.loads(robustness.to_json(table))
    assert payload["parameters"]["jsma"].startswith("theta = eps, gamma = 1,")
    assert payload["parameters"]["mjsma"] == "untargeted, theta = eps, gamma = 1"
    markdown = robustness.report_markdown(table, {})
    assert "- mjsma: untargeted, theta = eps, gamma = 1\n" in markdown
    wide = robustness.parameter_notes(64)
    assert wide["mjsma"] == "untargeted, theta = eps, gamma = 0.5"


def test_json_writes_nan_as_null(model, batch):
    """A NaN, as in a table built by hand, is null: strict JSON has no word
    for it."""
    x, y = batch
    table = robustness.evaluate(model, x, y, "fgsm", [0.0])
    table.rows[0] = dataclasses.replace(table.rows[0], mean_l2=math.nan)
    (row,) = table.to_dicts()
    assert math.isnan(row["mean_l2"])
    (read,) = json.loads(robustness.to_json(table), parse_constant=_reject)["rows"]
    assert read == {
        key: None if isinstance(v, float) and math.isnan(v) else v
        for key, v in row.items()
    }


def _reject(constant):
    raise ValueError(f"{constant} is not strict JSON")


def test_write_table_leaves_no_temporary_files(table, tmp_path):
    paths = robustness.write_table(table, tmp_path / "out")
    assert [path.name for path in paths] == [
        "robustness.md",
        "robustness.csv",
        "robustness.json",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths
    )


def test_plots_are_png(table, tmp_path):
    curve = robustness.plot_robust_accuracy(table, tmp_path / "curve.png")
    grid = robustness.plot_examples(table, tmp_path / "grid.png", image_shape=(8, 8))
    strips = robustness.plot_examples(table, tmp_path / "strips.png")
    for path in (curve, grid, strips):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "curve.png",
        "grid.png",
        "strips.png",
    ]


def test_short_rows_draw_as_bars(monkeypatch, tmp_path):
    model = resgrad.ResidualMLP.init([6, 8, CLASSES], seed=0)
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(4, 6))
    y = np.arange(4) % CLASSES
    table = robustness.evaluate(model, x, y, ["fgsm"], [0.1], seed=0)
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_examples(table, tmp_path / "bars.png")
    clean, fgsm = np.asarray(figures[0].axes).reshape(2, -1)[:, 0]
    assert not clean.images
    assert [bar.get_height() for bar in clean.patches] == pytest.approx(table.x[0])
    change = table.examples[("fgsm", 0.1)].x_adv[0] - table.x[0]
    assert [bar.get_height() for bar in fgsm.patches] == pytest.approx(change)
    assert fgsm.get_ylim() == pytest.approx((-0.1, 0.1))
    # Red is for the titles of changed predictions, not for bars.
    from matplotlib.colors import to_rgba

    red = to_rgba("tab:red")
    for bar, step in zip(fgsm.patches, change):
        assert bar.get_facecolor() != red
        colour = robustness.RISE_COLOUR if step >= 0 else robustness.FALL_COLOUR
        assert bar.get_facecolor() == to_rgba(colour)


@pytest.mark.parametrize("samples", [1, 5])
def test_examples_title_fits_figure(samples, monkeypatch, tmp_path):
    model = resgrad.ResidualMLP.init([6, 8, CLASSES], seed=0)
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(samples, 6))
    y = np.arange(samples) % CLASSES
    table = robustness.evaluate(model, x, y, ["fgsm", "pgd"], [0.1], seed=0)
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_examples(table, tmp_path / "bars.png")
    figure = figures[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    title = figure._suptitle.get_window_extent(renderer)
    page = figure.bbox
    assert title.x0 >= page.x0
    assert title.x1 <= page.x1
    assert title.y1 <= page.y1
    # The title must not run into the top row of plots either.
    assert title.y0 >= max(axes.get_tightbbox(renderer).y1 for axes in figure.axes[:1])


def test_bars_span_l2_changes_wider_than_eps(monkeypatch, tmp_path):
    model = resgrad.ResidualMLP.init([6, 8, CLASSES], seed=0)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(4, 6))
    y = np.arange(4) % CLASSES
    table = robustness.evaluate(model, x, y, ["fgsm", "pgd_l2"], [0.1], seed=0)
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_examples(table, tmp_path / "bars.png")
    _, fgsm, pgd_l2 = np.asarray(figures[0].axes).reshape(3, -1)[:, 0]
    assert fgsm.get_ylim() == pytest.approx((-0.1, 0.1))
    largest = np.max(np.abs(table.examples[("pgd_l2", 0.1)].x_adv - x))
    assert largest > 0.1
    assert pgd_l2.get_ylim() == pytest.approx((-largest, largest))


def test_examples_figure_one_sample_width(model, batch, monkeypatch, tmp_path):
    x, y = batch
    table = robustness.evaluate(model, x[:1], y[:1], ["fgsm"], [0.1], seed=0)
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_examples(table, tmp_path / "one.png")
    assert figures[0].get_size_inches()[0] >= 6.4


def test_accuracy_plot_title(table, monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_robust_accuracy(table, tmp_path / "a.png", "m.npz on wine")
    robustness.plot_robust_accuracy(table, tmp_path / "b.png")
    assert figures[0].axes[0].get_title() == "m.npz on wine"
    assert figures[1].axes[0].get_title() == ""


# The command line.


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attack")
    rng = np.random.default_rng(1)
    images = rng.uniform(0.0, 1.0, size=(80, 8, 8))
    labels = np.arange(80) % CLASSES
    data = folder / "data.npz"
    np.savez(data, X=images, y=labels)
    model_path = folder / "model.npz"
    resgrad.save(resgrad.ResidualMLP.init([D, 16, CLASSES], seed=2), model_path)
    return folder, data, model_path


def test_cli_writes_table_and_figures(files, capsys):
    folder, data, model_path = files
    out = folder / "out"
    status = main(
        [
            "attack",
            "--model",
            str(model_path),
            "--data",
            str(data),
            "--method",
            "fgsm,pgd",
            "--eps",
            "0,0.1",
            "--out",
            str(out),
            "--limit",
            "12",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    names = {
        "robustness.md",
        "robustness.csv",
        "robustness.json",
        "robust_accuracy.png",
        "adversarial_examples.png",
    }
    assert {path.name for path in out.iterdir()} == names
    assert "clean accuracy" in printed
    assert " on 12 test samples\n" in printed
    assert "pgd" in printed
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [(row["method"], row["eps"], row["samples"]) for row in rows] == [
        ("fgsm", 0.0, 12),
        ("fgsm", 0.1, 12),
        ("pgd", 0.0, 12),
        ("pgd", 0.1, 12),
    ]


@pytest.mark.parametrize("n, limited", [(12, False), (150, False), (151, True)])
def test_report_names_jsma_limit_only_when_it_cuts(n, limited):
    from types import SimpleNamespace

    from resgrad.cli.attack import _section_markdown

    table = SimpleNamespace(methods=["fgsm", "jsma"])
    data = SimpleNamespace(y_test=np.zeros(n))
    notes = {"fgsm": "one step", "jsma": "pairs"}
    text = _section_markdown(table, "", notes, data)
    assert ("run on the first 150 only" in text) is limited
    assert ("which cover the first 150" in text) is limited
    assert (f"on all {n} test samples." in text) is not limited


@pytest.mark.parametrize("seed, option", [(0, ""), (3, " --seed 3")])
def test_report_command_repeats_the_seed(seed, option):
    # The random attacks of the report drew from the run's seed, so the
    # command that repeats the table needs it too.
    from types import SimpleNamespace

    from resgrad.cli.attack import _section_markdown

    table = SimpleNamespace(methods=["fgsm", "pgd"])
    data = SimpleNamespace(y_test=np.zeros(12))
    notes = {"fgsm": "one step", "pgd": "ten steps"}
    text = _section_markdown(table, "", notes, data, seed)
    assert f"--method fgsm,pgd --eps 0.05,0.1,0.2{option}`." in text


def test_cli_summary_counts_one_sample_in_the_singular(files, capsys):
    folder, data, model_path = files
    argv = ["attack", "--model", str(model_path), "--data", str(data)]
    argv += ["--method", "fgsm", "--eps", "0.1", "--limit", "1", "--no-progress"]
    assert main([*argv, "--out", str(folder / "one")]) == 0
    assert " on 1 test sample\n" in capsys.readouterr().out


def test_cli_failed_figure_leaves_no_folder(files, monkeypatch, capsys):
    import resgrad.robustness

    def broken(*args, **kwargs):
        raise ValueError("the figure could not be drawn")

    monkeypatch.setattr(resgrad.robustness, "plot_examples", broken)
    folder, data, model_path = files
    out = folder / "failed"
    argv = ["attack", "--model", str(model_path), "--data", str(data)]
    argv += ["--method", "fgsm", "--eps", "0.1", "--out", str(out)]
    assert main([*argv, "--limit", "5", "--no-progress"]) == 2
    assert "the figure could not be drawn" in capsys.readouterr().err
    assert not out.exists()


def test_cli_warns_of_eps_wider_than_box(files, capsys):
    # 5 reads as a radius in raw units, such as the digits' grey levels.
    folder, data, model_path = files
    argv = ["attack", "--model", str(model_path), "--data", str(data)]
    argv += ["--method", "fgsm", "--eps", "0.1,5", "--out", str(folder / "wide")]
    assert main([*argv, "--limit", "5", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: --eps 5 exceeds 1, the width of the box [0, 1]" in err
    assert "--eps 0.1" not in err


def test_cli_report_records_settings(files, capsys):
    folder, data, model_path = files
    out = folder / "report"
    argv = ["attack", "--model", str(model_path), "--data", str(data)]
    argv += ["--method", "fgsm", "--eps", "0.1", "--out", str(out), "--limit", "5"]
    assert main([*argv, "--no-progress"]) == 0
    context = json.loads((out / "robustness.json").read_text())["context"]
    assert context["model"] == str(model_path)
    assert context["data"] == str(data)
    assert context["labels"] is None
    assert context["test_size"] == 0.25
    assert context["split_seed"] == 0
    assert context["samples"] == 5
    assert context["input_box"] == [0.0, 1.0]
    # fgsm draws no random numbers, so no seed is recorded.
    assert context["seed"] is None
    report = (out / "robustness.md").read_text()
    assert report.startswith("# Robust accuracy\n\n- model: ")
    assert f"- data: {data}\n" in report
    assert "- test size: 0.25\n" in report
    assert "seed:" not in report.replace("split seed", "")
    assert "including samples misclassified before it" in report
    assert "- fgsm: one step of eps\n" in report


@pytest.mark.parametrize(
    "methods, pgd_l2_named", [(["fgsm", "pgd"], False), (["fgsm", "pgd_l2"], True)]
)
def test_cli_eps_label_pgd_l2_only_when_run(methods, pgd_l2_named):
    label = robustness.eps_axis_label(methods)
    assert label.startswith("eps (L-inf radius")
    assert ("pgd_l2" in label) == pgd_l2_named


def test_cli_default_out_beside_model(files):
    folder, data, model_path = files
    status = main(
        [
            "attack",
            "--model",
            str(model_path),
            "--data",
            str(data),
            "--method",
            "fgsm",
            "--eps",
            "0.1",
            "--limit",
            "4",
            "--no-progress",
        ]
    )
    assert status == 0
    assert (folder / "attack" / "robustness.md").is_file()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--method", "fgsm,cw", "Unknown --method value 'cw'; expected all, or"),
        ("--method", "all,fgsm", "--method 'all,fgsm': 'all' already names every"),
        ("--method", "fgsm,", "Empty item in --method 'fgsm,'"),
        ("--eps", "0.1,-0.2", "eps >= 0"),
        ("--eps", "0.1,1e308", "--eps 1e+308 is more than 1000 times the width 1"),
    ],
)
def test_cli_bad_argument_one_line(files, capsys, option, value, message):
    folder, data, model_path = files
    arguments = {"--method": "fgsm", "--eps": "0.1"}
    arguments[option] = value
    status = main(
        [
            "attack",
            "--model",
            str(model_path),
            "--data",
            str(data),
            "--out",
            str(folder / "bad"),
            "--no-progress",
            *[item for pair in arguments.items() for item in pair],
        ]
    )
    error = capsys.readouterr().err
    assert status == 2
    assert len(error.strip().splitlines()) == 1
    assert message in error
    assert not (folder / "bad").exists()


def test_report_section(files, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, size=(40, D))
    y = np.arange(40) % CLASSES
    data = Dataset(
        x[:20], y[:20], x[20:], y[20:], CLASSES, (8, 8), "random", (0.0, 1.0)
    )
    model = resgrad.ResidualMLP.init([D, 16, CLASSES], seed=4)
    section = report_section(RunContext(model, data, tmp_path, seed=0))
    assert isinstance(section, Section)
    assert section.key == "attacks"
    for name in section.files:
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    # resgrad run checks these names before any work.
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(SECTION_FILES)
    rows = section.metrics["rows"]
    assert {(row["method"], row["eps"]) for row in rows} == {
        (m, eps) for m in robustness.METHODS for eps in (0.05, 0.1, 0.2)
    }
    assert "| pgd | 0.1 |" in section.markdown
    assert "resgrad attack --model" in section.markdown
    assert "on all 20 test samples." in section.markdown


@pytest.mark.parametrize("terminal", [True, False])
def test_cli_draws_progress_bar(files, capsys, monkeypatch, terminal):
    # Only on a terminal: in a log file every redraw would add a line.
    folder, data, model_path = files
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    status = main(
        [
            "attack",
            "--model",
            str(model_path),
            "--data",
            str(data),
            "--method",
            "fgsm,bim",
            "--eps",
            "0.1",
            "--out",
            str(folder / f"progress-{terminal}"),
            "--limit",
            "4",
        ]
    )
    error = capsys.readouterr().err
    assert status == 0
    # tqdm draws the bar at the start and redraws it at most every 0.1 s.
    assert ("attacks:" in error) is terminal
    assert ("/2 [" in error) is terminal


def test_display_shape_wraps_long_rows_only():
    assert robustness.display_shape((8, 8), 64) == (8, 8)
    assert robustness.display_shape(None, 16) is None
    assert robustness.display_shape(None, 784) == (28, 28)
    assert robustness.display_shape(None, 40) == (6, 7)
    image = robustness.as_image(np.arange(40.0), (6, 7))
    np.testing.assert_array_equal(image.reshape(-1)[:40], np.arange(40.0))
    assert np.isnan(image.reshape(-1)[40:]).all()
    assert robustness.as_image(np.arange(5.0), None).shape == (1, 5)


def test_wrapped_rows_draw_padding_apart(monkeypatch, tmp_path):
    import matplotlib.colors

    model = resgrad.ResidualMLP.init([33, 8, CLASSES], seed=0)
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(2, 33))
    table = robustness.evaluate(model, x, np.arange(2), ["fgsm"], [0.1], seed=0)
    figures = []
    monkeypatch.setattr(
        robustness, "_save", lambda figure, path: figures.append(figure)
    )
    robustness.plot_examples(table, tmp_path / "grid.png")
    (image,) = figures[0].axes[0].images
    # 33 features wrap into 6 x 6 cells, three of them padding.
    assert int(np.ma.getmaskarray(image.get_array()).sum()) == 3
    padding = image.get_cmap()(np.nan)
    assert padding == matplotlib.colors.to_rgba(robustness.PADDING_COLOUR)
    assert padding not in [image.get_cmap()(v) for v in np.linspace(0, 1, 256)]
