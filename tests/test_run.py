"""``resgrad run``, ``evaluate`` and ``check`` on the digits: the run folder,
its report, and the commands on the saved model. Also the README's example."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import resgrad
from resgrad.cli import main
from resgrad.data import load_digits
from resgrad.training import evaluate

# A small network and two epochs keep the run to a few seconds. The report
# sections of the attacks, saliency maps and depth study are left out.
SMALL_RUN = [
    "--widths", "16",
    "--hidden", "16",
    "--epochs", "2",
    "--check-samples", "3",
    "--skip", "attack,saliency,depth",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """Return the folder of one small run and its exit status."""
    out = tmp_path_factory.mktemp("run") / "small"
    status = main(["run", "--out", str(out), *SMALL_RUN])
    return out, status


def test_run_writes_model_metrics_and_report(run_folder):
    out, status = run_folder
    expected = {"model.npz", "metrics.json", "report.md", "training.png"}
    assert status == 0
    assert {path.name for path in out.iterdir()} == expected
    for name in expected:
        assert (out / name).stat().st_size > 0, name


def test_run_metrics_match_saved_model(run_folder):
    out, _ = run_folder
    metrics = json.loads((out / "metrics.json").read_text())
    model = resgrad.load(out / "model.npz")
    data = load_digits()
    figures = evaluate(model, data.x_test, data.y_test)
    assert metrics["test"]["accuracy"] == figures["accuracy"]
    assert metrics["model"] == model.config()
    assert metrics["model"]["sizes"] == [64, 16, 10]
    assert metrics["training"]["epochs_run"] == 2
    assert metrics["options"]["lr"] > 0
    assert metrics["environment"]["numpy"] == np.__version__


def test_run_checks_theorem_against_every_reference(run_folder):
    """The run compares (4)-(8) with backprop, autograd and differences."""
    out, _ = run_folder
    check = json.loads((out / "metrics.json").read_text())["theorem_check"]
    pairs = {(row["equation"], row["reference"]) for row in check["rows"]}
    references = ("backprop", "autograd", "central differences")
    assert pairs == {(eq, ref) for eq in "45678" for ref in references}
    assert check["passed"] is True
    assert check["samples"] == 3
    assert all(row["error"] <= row["tolerance"] for row in check["rows"])


def test_run_report_states_results(run_folder):
    out, _ = run_folder
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = metrics["test"]["accuracy"]
    assert f"Test accuracy: **{accuracy:.4f}**" in report
    assert "## Theorem 1 check" in report
    assert "central finite differences (step 1e-06)" in report
    assert "s of CPU time" in report
    assert report.count("| central differences |") == 5
    assert report.count("| autograd |") == 5
    assert "FAIL" not in report
    assert "![training curves](training.png)" in report
    assert "2 epochs (" in report
    # SMALL_RUN skips every section, and both files list them.
    assert "Sections left out with --skip: attack, saliency, depth." in report
    assert metrics["skipped_sections"] == ["attack", "saliency", "depth"]


def test_run_one_epoch_singular(tmp_path, capsys):
    out = tmp_path / "run"
    # No hidden --widths: one block, from the 64 inputs to the 10 classes.
    options = [*SMALL_RUN, "--epochs", "1", "--widths", ""]
    assert main(["run", "--out", str(out), *options]) == 0
    printed = capsys.readouterr().out
    # The data comes first, as resgrad train prints it, before the training.
    assert printed.startswith("digits: 1347 train + 450 test samples, 64 features")
    assert "trained 1 epoch in " in printed
    report = (out / "report.md").read_text()
    assert " 1 epoch (" in report
    assert "Network: 1 residual block, widths [64, 10]," in report
    # The sections are skipped, so training.png is the only figure.
    assert f"wrote {out}/ (report.md, metrics.json, model.npz and 1 figure) in " in (
        printed
    )


def _run_on_one_feature(tmp_path, skip):
    """Run on 60 rows of one feature, skipping the sections ``skip``; return
    the run folder."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    data = tmp_path / "one.csv"
    np.savetxt(data, np.column_stack([y + rng.random(60), y]), delimiter=",")
    out = tmp_path / "run"
    argv = ["run", "--data", str(data), "--out", str(out), "--epochs", "1"]
    argv += ["--widths", "4", "--hidden", "4", "--skip", skip]
    assert main([*argv, "--no-progress"]) == 0
    return out


def test_run_attacks_one_feature_without_pair_attacks(tmp_path):
    # JSMA and maximal JSMA need two features; the other attacks still run.
    out = _run_on_one_feature(tmp_path, "saliency,depth")
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {row["method"] for row in metrics["sections"]["attacks"]["rows"]}
    assert "fgsm" in methods
    assert "jsma" not in methods
    report = (out / "report.md").read_text()
    assert "need at least 2 features" in report
    assert "for the targeted attacks (illcm) and any wrong class" in report


def test_run_report_explains_nan_of_one_feature(tmp_path):
    out = _run_on_one_feature(tmp_path, "attack,depth")
    report = (out / "report.md").read_text()
    assert "test samples of 1 feature, 2 classes" in report
    assert "| vanilla gradient | nan |" in report
    assert "NaN: no rank correlation exists where a map is constant" in report
    assert "Input x gradient and Integrated Gradients multiply the gradient" in report
    assert "drawn, one bar per feature, on a colour scale" in report
    assert "red where a feature raises the score" in report
    assert "pixel" not in report


def test_run_warns_when_check_samples_exceed_test_split(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]
    assert main([*argv, "--check-samples", "100000"]) == 0
    assert (
        "resgrad run: warning: --check-samples 100000 is more than the 450 test "
        "samples; checking all 450"
    ) in capsys.readouterr().err


def test_run_report_names_validation_split(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]
    assert main([*argv, "--validation", "0.2"]) == 0
    report = (out / "report.md").read_text()
    assert "fraction 0.2 of the training samples held out" in report


def test_run_refuses_folder_of_another_run(run_folder, capsys):
    out, _ = run_folder
    before = sorted(path.name for path in out.iterdir())
    assert main(["run", "--out", str(out), *SMALL_RUN]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == before


def test_default_folders_of_one_second_stay_apart(tmp_path, monkeypatch, capsys):
    """A run whose default folder another run makes after the check takes the
    next name, and a failed run removes the empty folder it made."""
    import resgrad.cli.run

    class Clock:
        """Every run starts at one second."""

        @staticmethod
        def now():
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(resgrad.cli.run, "datetime", Clock)
    runs = tmp_path / "runs"
    load = resgrad.cli.run.load_dataset

    def another_run_starts(args):
        # Another run started in the same second makes the folder this
        # run has just checked.
        stamp = "20260102-030405"
        (runs / stamp).mkdir(parents=True)
        (runs / stamp / "report.md").write_text("another run\n")
        return load(args)

    monkeypatch.setattr(resgrad.cli.run, "load_dataset", another_run_starts)
    assert main(["run", *SMALL_RUN, "--epochs", "1"]) == 0
    other, ours = sorted(runs.iterdir())
    assert ours.name == f"{other.name}-2"
    assert [path.name for path in other.iterdir()] == ["report.md"]
    assert (ours / "model.npz").is_file()
    assert f"wrote runs/{ours.name}/ " in capsys.readouterr().out

    # A third run checks <stamp>-3, which a fourth makes meanwhile.
    def fourth_run_starts(args):
        (runs / "20260102-030405-3").mkdir()
        return load(args)

    monkeypatch.setattr(resgrad.cli.run, "load_dataset", fourth_run_starts)
    assert main(["run", *SMALL_RUN, "--epochs", "1"]) == 0
    assert (runs / "20260102-030405-4" / "model.npz").is_file()
    folders = sorted(runs.iterdir())

    def fail(*args, **kwargs):
        raise ValueError("the data went wrong")

    monkeypatch.setattr(resgrad.cli.run, "load_dataset", load)
    monkeypatch.setattr(resgrad.cli.run, "train_model", fail)
    assert main(["run", *SMALL_RUN]) == 2
    assert "the data went wrong" in capsys.readouterr().err
    assert sorted(runs.iterdir()) == folders


def test_run_refuses_folder_filled_meanwhile(tmp_path, monkeypatch, capsys):
    import resgrad.cli.run

    out = tmp_path / "run"
    train = resgrad.cli.run.train_model

    def another_command_writes(*args, **kwargs):
        out.mkdir()
        (out / "report.md").write_text("another run\n")
        return train(*args, **kwargs)

    monkeypatch.setattr(resgrad.cli.run, "train_model", another_command_writes)
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 2
    assert "was made or filled by another command while this one ran" in (
        capsys.readouterr().err
    )
    assert [path.name for path in out.iterdir()] == ["report.md"]


def test_run_refuses_folder_made_meanwhile(tmp_path, monkeypatch, capsys):
    import resgrad.cli.run

    out = tmp_path / "run"
    train = resgrad.cli.run.train_model

    def another_command_makes_it(*args, **kwargs):
        out.mkdir()
        return train(*args, **kwargs)

    monkeypatch.setattr(resgrad.cli.run, "train_model", another_command_makes_it)
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 2
    assert "was made or filled by another command" in capsys.readouterr().err
    # The other command's folder stays.
    assert out.is_dir()


def test_run_stops_on_folder_another_command_writes(tmp_path, monkeypatch, capsys):
    import resgrad.cli.run
    from resgrad import _lock

    out = tmp_path / "run"
    out.mkdir()
    train = resgrad.cli.run.train_model
    locks = []

    def another_command_locks_it(*args, **kwargs):
        locks.append(_lock.lock_folder(out, f"--out {out}"))
        return train(*args, **kwargs)

    monkeypatch.setattr(resgrad.cli.run, "train_model", another_command_locks_it)
    try:
        assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 2
    finally:
        _lock.unlock_folder(locks[0])
    assert "is in use by another resgrad command" in capsys.readouterr().err
    assert out.is_dir()
    assert list(out.iterdir()) == []


def test_run_prints_worst_check_row_with_tolerance(tmp_path, monkeypatch, capsys):
    import dataclasses

    import resgrad.cli.check

    check = resgrad.cli.check.check_on_test_split
    chosen = []

    def near_tolerance(*args, **kwargs):
        report = check(*args, **kwargs)
        # The row with the smallest tolerance gets the largest error for it.
        index = min(range(len(report.rows)), key=lambda i: report.rows[i].tolerance)
        row = report.rows[index]
        chosen.append(row)
        rows = list(report.rows)
        rows[index] = dataclasses.replace(row, error=0.9 * row.tolerance)
        return dataclasses.replace(report, rows=rows)

    monkeypatch.setattr(resgrad.cli.check, "check_on_test_split", near_tolerance)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    row = chosen[0]
    expected = (
        f"worst for its tolerance: {0.9 * row.tolerance:.1e} (tolerance "
        f"{row.tolerance:.0e}), equation ({row.equation}) against {row.reference})"
    )
    assert expected in printed


def test_run_names_check_rows_below_resolution(tmp_path, monkeypatch, capsys):
    import dataclasses

    import resgrad.cli.check

    check = resgrad.cli.check.check_on_test_split

    def blurred(*args, **kwargs):
        report = check(*args, **kwargs)
        rows = [
            dataclasses.replace(row, tolerance=5.0)
            if (row.equation, row.reference) == ("6", "central differences")
            else row
            for row in report.rows
        ]
        return dataclasses.replace(report, rows=rows)

    monkeypatch.setattr(resgrad.cli.check, "check_on_test_split", blurred)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Theorem 1 check: pass" in printed
    assert "central differences of step 1e-06 cannot resolve (6)" in printed
    report = (out / "report.md").read_text()
    assert "Outcome: all equations agree where compared; central differences" in (
        report
    )
    rows = json.loads((out / "metrics.json").read_text())["theorem_check"]["rows"]
    flags = {(r["equation"], r["reference"]): r["resolved"] for r in rows}
    assert flags.pop(("6", "central differences")) is False
    assert all(flags.values())


def test_run_failing_after_a_file_names_the_folder(tmp_path, monkeypatch, capsys):
    import resgrad.cli.check

    def fail(*args, **kwargs):
        raise ValueError("the check went wrong.")

    monkeypatch.setattr(resgrad.cli.check, "check_on_test_split", fail)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{out} is incomplete; pass --out {out} --overwrite" in err
    assert "the check went wrong" in err
    assert sorted(path.name for path in out.iterdir()) == [
        "INCOMPLETE.txt",
        "model.npz",
    ]
    note = (out / "INCOMPLETE.txt").read_text()
    # The message's own period ends the sentence, with no second one.
    assert "because of ValueError: the check went wrong.\n" in note


def test_run_failing_before_a_file_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import resgrad.io

    def fail(*args, **kwargs):
        raise OSError("the disk is full")

    monkeypatch.setattr(resgrad.io, "save", fail)
    out = tmp_path / "made" / "run"
    assert main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_run_overwrite_counts_its_own_figures(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old_figure.png").write_bytes(b"not a figure of this run")
    argv = ["run", "--out", str(out), *SMALL_RUN, "--epochs", "1", "--overwrite"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "model.npz and 1 figure) in " in printed


def test_evaluate_prints_saved_model_accuracy(run_folder, capsys):
    out, _ = run_folder
    capsys.readouterr()
    status = main(["evaluate", "--model", str(out / "model.npz"), "--json"])
    figures = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert status == 0
    assert figures["accuracy"] == metrics["test"]["accuracy"]
    assert np.asarray(figures["confusion_matrix"]).sum() == 450


def test_evaluate_names_the_data_it_read(run_folder, capsys):
    out, _ = run_folder
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "data:          digits (test split 0.25, split seed 0)"
    assert lines[1] == "test samples:  450"


def test_check_passes_on_saved_model(run_folder, capsys):
    out, _ = run_folder
    capsys.readouterr()
    argv = ["check", "--model", str(out / "model.npz"), "--samples", "2"]
    status = main([*argv, "--entries", "6", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["passed"] is True
    assert report["samples"] == 2
    assert len(report["rows"]) == 15


def test_check_caps_samples_at_the_test_split(run_folder, capsys):
    out, _ = run_folder
    capsys.readouterr()
    model = str(out / "model.npz")
    argv = ["check", "--model", model, "--samples", "100000", "--entries", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "--samples 100000 is more than the 450 test samples; checking all 450"
    ) in captured.err
    assert captured.out.endswith("comparisons on 450 samples)\n")
    assert main(["check", "--model", model, "--samples", "1", "--entries", "3"]) == 0
    assert capsys.readouterr().out.endswith("comparisons on 1 sample)\n")


def test_run_without_torch_leaves_out_autograd(tmp_path, monkeypatch):
    """Without PyTorch the check still runs and the report states what it
    left out."""
    import resgrad.check

    monkeypatch.setattr(resgrad.check, "_torch_available", lambda: False)
    out = tmp_path / "no-torch"
    status = main(["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"])
    check = json.loads((out / "metrics.json").read_text())["theorem_check"]
    report = (out / "report.md").read_text()
    assert status == 0
    assert check["autograd_version"] is None
    assert {row["reference"] for row in check["rows"]} == {
        "backprop",
        "central differences",
    }
    assert (
        "are compared with the backpropagation recurrence, to a relative error of "
        "1e-09, and with central finite differences"
    ) in " ".join(report.split())
    assert report.count("PyTorch autograd was left out") == 1
    assert (
        "of the whole product instead. PyTorch autograd was left out because "
        "PyTorch is not "
    ) in report


def test_run_report_names_autograd_version(run_folder):
    import torch

    out, _ = run_folder
    report = " ".join((out / "report.md").read_text().split())
    assert (
        "are compared with the backpropagation recurrence and PyTorch "
        f"{torch.__version__} autograd on a copy of the weights, to a relative "
        "error of 1e-09, and with central finite differences"
    ) in report
    assert "autograd was left out" not in report


def test_run_interrupt_names_folder(tmp_path, monkeypatch, capsys):
    """Ctrl-C after the model is saved names the folder left incomplete, and
    --overwrite lets the next run reuse it."""
    import resgrad.cli.check

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run3"
    argv = ["run", "--out", str(out), *SMALL_RUN, "--epochs", "1"]
    with monkeypatch.context() as patch:
        patch.setattr(resgrad.cli.check, "check_on_test_split", interrupt)
        status = main(argv)
    err = capsys.readouterr().err.strip()

    assert status == 130
    assert err.startswith(f"resgrad run: interrupted; {out} is incomplete;")
    assert "--overwrite" in err
    # A file in the folder records that the run did not finish.
    assert sorted(path.name for path in out.iterdir()) == [
        "INCOMPLETE.txt",
        "model.npz",
    ]
    note = (out / "INCOMPLETE.txt").read_text()
    assert "because it was interrupted" in note
    assert f"--out {out} --overwrite" in note
    # SIGTERM, which the console turns into an interrupt, is named as such.
    with monkeypatch.context() as patch:
        patch.setattr(resgrad.cli.check, "check_on_test_split", interrupt)
        patch.setattr(resgrad.cli, "_terminated", True)
        assert main([*argv, "--overwrite"]) == 143
    note = (out / "INCOMPLETE.txt").read_text()
    assert "because it was terminated (SIGTERM)" in note
    assert main(argv) == 2
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "report.md").is_file()
    assert not (out / "INCOMPLETE.txt").exists()


def test_run_interrupt_in_training_no_folder(tmp_path, monkeypatch, capsys):
    import resgrad.cli.run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(resgrad.cli.run, "train_model", interrupt)
    out = tmp_path / "run"
    status = main(["run", "--out", str(out), *SMALL_RUN])

    assert status == 130
    assert capsys.readouterr().err.strip() == "resgrad run: interrupted"
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "train"])
def test_empty_test_split_trains_nothing(tmp_path, monkeypatch, capsys, command):
    import resgrad.cli.run
    import resgrad.cli.train

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(resgrad.cli.run, "train_model", no_training)
    monkeypatch.setattr(resgrad.cli.train, "train_model", no_training)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", X=rng.uniform(size=(3, 5)), y=np.arange(3))
    out = tmp_path / ("model.npz" if command == "train" else "run")
    argv = [command, "--data", str(tmp_path / "tiny.npz"), "--out", str(out)]
    status = main([*argv, "--no-progress"])

    err = capsys.readouterr().err
    assert status == 2
    assert "The test part of the data set 'tiny' is empty" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.npz"]


@pytest.mark.parametrize("command", ["run", "train", "evaluate", "check"])
def test_command_help_exits_zero(command, capsys):
    status = main([command, "--help"])
    text = capsys.readouterr().out
    assert status == 0
    assert text.startswith(f"usage: resgrad {command}")


def test_readme_example_runs(capsys):
    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.DOTALL)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {})  # noqa: S102 (our own README)
    printed = capsys.readouterr().out.split(maxsplit=1)
    assert float(printed[0]) > 0
    assert printed[1].strip() == "(32, 64) (5, 10, 64)"


def _drawn_training(monkeypatch, tmp_path, history, best_epoch=None):
    """Return the figure that ``_plot_training`` draws, drawn but not saved."""
    from resgrad.cli import run

    figures = []
    monkeypatch.setattr(
        run, "write_figure", lambda path, figure, dpi: figures.append(figure)
    )
    if best_epoch is None:
        run._plot_training(history, tmp_path / "training.png")
    else:
        run._plot_training(history, tmp_path / "training.png", best_epoch)
    figures[0].canvas.draw()
    return figures[0]


def _history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "val_loss": 1.0 + (epoch - 2) ** 2,
            "val_accuracy": 0.9,
        }
        for epoch in range(1, epochs + 1)
    ]


def test_training_plot_integer_epochs(monkeypatch, tmp_path):
    figure = _drawn_training(monkeypatch, tmp_path, _history(3))
    for ax in figure.axes:
        ticks = ax.get_xticks()
        assert ticks.size > 0, ax.get_title()
        assert np.all(ticks == np.round(ticks)), ticks


def test_training_plot_marks_kept_epoch(monkeypatch, tmp_path):
    figure = _drawn_training(monkeypatch, tmp_path, _history(3), best_epoch=2)
    for ax in figure.axes:
        markers = [line for line in ax.lines if "kept weights" in line.get_label()]
        assert len(markers) == 1, ax.get_title()
        assert markers[0].get_label() == "kept weights: epoch 2"
        assert list(markers[0].get_xdata()) == [2, 2]
        assert "kept weights: epoch 2" in [
            text.get_text() for text in ax.get_legend().get_texts()
        ]
    # Weights of the last epoch need no mark.
    last = _drawn_training(monkeypatch, tmp_path, _history(3), best_epoch=3)
    for ax in last.axes:
        assert not [line for line in ax.lines if "kept" in line.get_label()]


@pytest.mark.parametrize("low, high", [(0.06, 0.4), (1e-5, 2.3)])
def test_loss_axis_labels_two_ticks_or_more(monkeypatch, tmp_path, low, high):
    from resgrad.cli import run as run_cli

    figures = []
    monkeypatch.setattr(
        run_cli, "write_figure", lambda path, fig, **kw: figures.append(fig)
    )
    losses = np.geomspace(high, low, 30)
    history = [
        {"epoch": i + 1, "train_loss": float(v), "val_loss": None, "val_accuracy": None}
        for i, v in enumerate(losses)
    ]
    run_cli._plot_training(history, tmp_path / "training.png")
    (axes,) = figures[0].axes
    figures[0].canvas.draw()
    bottom, top = axes.get_ylim()
    labelled = [
        label.get_text()
        for label, value in zip(axes.get_yticklabels(), axes.get_yticks())
        if bottom <= value <= top and label.get_text()
    ]
    assert len(labelled) >= 2, labelled
    # Plain numbers, not powers of ten in mathtext.
    assert all("$" not in text for text in labelled)


def test_run_report_lists_warnings(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--epochs", "1", "--skip", "all"]
    assert main([*argv, "--test-size", "0.8", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "## Warnings\n\n- --test-size 0.8 leaves 359 of 1797 rows" in report
    (warning,) = json.loads((out / "metrics.json").read_text())["warnings"]
    assert warning.startswith("--test-size 0.8 leaves 359 of 1797 rows")
