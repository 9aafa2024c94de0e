"""The command line: one-line errors for bad arguments, and resumable training."""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import reference

import resgrad
from resgrad import _lock
from resgrad.cli import _common as cli_common
from resgrad.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with a digits model, a pickle renamed to .npz and a plain file."""
    folder = tmp_path_factory.mktemp("files")
    model = resgrad.ResidualMLP.init([64, 16, 10], 16, seed=0)
    resgrad.save(model, folder / "model.npz")
    (folder / "pickle.npz").write_bytes(
        pickle.dumps(reference.CreateFileOnUnpickle(folder / "marker"))
    )
    (folder / "plain.txt").write_text("not a folder\n")
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    np.savez(folder / "narrow.npz", X=rng.uniform(size=(60, 32)), y=labels)
    many = np.arange(60) % 12
    np.savez(folder / "many_labels.npz", X=rng.uniform(size=(60, 64)), y=many)
    baseline = np.zeros(64)
    baseline[[5, 9]] = np.nan, np.inf
    np.save(folder / "nan_baseline.npy", baseline)
    np.save(folder / "text_baseline.npy", np.array(["0.5"] * 64))
    np.savez(folder / "archive_baseline.npz", row=np.zeros(64))
    raw = np.zeros(64)
    raw[7] = 16.0
    np.save(folder / "raw_baseline.npy", raw)
    # A header that declares 800 GB in a file of 160 bytes, its padding
    # shortened by the 10 characters added.
    small = io.BytesIO()
    np.save(small, np.zeros(4))
    declared = small.getvalue().replace(b"(4,), }" + b" " * 10, b"(99999999999,), }", 1)
    (folder / "huge_baseline.npy").write_bytes(declared)
    for name, header in {
        "huge_v3_baseline.npy": "{'descr': '<f8', 'fortran_order': False, "
        "'shape': (99999999999,), }",
        "long_text_baseline.npy": "{'descr': '<U99999999', 'fortran_order': "
        "False, 'shape': (64,), }",
    }.items():
        (folder / name).write_bytes(_npy_v3(header))
    return folder


def _npy_v3(header):
    """Return the bytes of a .npy file of format 3.0 with ``header`` and
    eight bytes of data."""
    text = header.encode("utf-8")
    padded = text + b" " * (-(len(text) + 13) % 64) + b"\n"
    return b"\x93NUMPY\x03\x00" + struct.pack("<I", len(padded)) + padded + bytes(8)


def run_cli(capsys, argv):
    """Run ``main(argv)``; return the status and the lines of standard error."""
    status = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    return status, lines


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["attack", "--model", "{dir}/model.npz", "--method", "fgsm"],
        ["saliency", "--model", "{dir}/model.npz", "--method", "vanilla"],
        ["depth", "--depths", "1", "--widths", "4"],
    ],
    ids=lambda argv: argv[0],
)
def test_missing_matplotlib_stops_before_work(
    argv, files, tmp_path, monkeypatch, capsys
):
    # A None entry in sys.modules makes "import matplotlib" raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = [arg.format(dir=files) for arg in argv] + ["--out", str(out)]
    status = main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith(f"resgrad {argv[0]}: error: The figures of this")
    assert 'install it with pip install "resgrad[cli]".' in captured.err
    assert list(tmp_path.iterdir()) == []


# Each case: the arguments ({dir} is the files fixture) and a fragment of the
# one-line message, which names the bad value.
BAD_ARGUMENTS = {
    "unknown command": (["bogus"], "invalid choice: 'bogus'"),
    "train lr negative": (
        ["train", "--lr", "-1"],
        "--lr: expected a number > 0, got -1",
    ),
    "train lr nan": (["train", "--lr", "nan"], "expected a finite number, got 'nan'"),
    "train lr text": (["train", "--lr", "fast"], "expected a number, got 'fast'"),
    "train hidden per block": (
        ["train", "--widths", "8,8", "--hidden", "8,8", "--out", "{dir}/a.npz"],
        "--hidden 8,8 gives 2 hidden widths, but --widths 8,8 makes 3 blocks",
    ),
    "train patience without validation": (
        ["train", "--patience", "3", "--out", "{dir}/a.npz"],
        "--patience 3 applies only to early stopping",
    ),
    "train epochs zero": (
        ["train", "--epochs", "0"],
        "--epochs: expected an integer >= 1, got 0",
    ),
    "train seed beyond int64": (
        ["train", "--seed", str(2**63), "--out", "{dir}/a.npz"],
        "--seed: expected an integer from 0 to 2**63 - 1 (9223372036854775807)",
    ),
    "train epochs beyond int64": (
        ["train", "--epochs", "99999999999999999999", "--out", "{dir}/a.npz"],
        "--epochs: expected an integer from 1 to 2**63 - 1 (9223372036854775807)",
    ),
    "train epochs below int64": (
        ["train", "--epochs", "-99999999999999999999", "--out", "{dir}/a.npz"],
        "--epochs: expected an integer >= 1, got -99999999999999999999",
    ),
    "depth depths beyond int64": (
        ["depth", "--depths", "99999999999999999999"],
        (
            "--depths: expected an integer from 1 to 2**63 - 1 "
            "(9223372036854775807), got '99999999999999999999'"
        ),
    ),
    "depth identity blocks beyond int64": (
        ["depth", "--identity-blocks", "0,99999999999999999999"],
        "--identity-blocks: expected an integer from 0 to 2**63 - 1",
    ),
    "train widths empty item": (
        ["train", "--widths", "3,,4"],
        "--widths: expected comma-separated integers with no empty item, got '3,,4'",
    ),
    "train hidden empty item": (
        ["train", "--hidden", ",8"],
        "--hidden: expected comma-separated integers with no empty item",
    ),
    "train out under file": (
        ["train", "--out", "{dir}/plain.txt/m.npz"],
        "{dir}/plain.txt in {dir}/plain.txt/m.npz is a file, not a folder",
    ),
    "attack out under file": (
        ["attack", "--out", "{dir}/plain.txt/report"],
        "{dir}/plain.txt in {dir}/plain.txt/report is a file, not a folder",
    ),
    "train batch text": (
        ["train", "--batch-size", "x"],
        "expected an integer, got 'x'",
    ),
    "train validation": (["train", "--validation", "1.5"], "in [0, 1), got 1.5"),
    "train test size": (["train", "--test-size", "0"], "in (0, 1), got 0"),
    "train unknown optimizer": (["train", "--optimizer", "rmsprop"], "'rmsprop'"),
    "train unknown activation": (["train", "--activation", "gelu2"], "'gelu2'"),
    "train widths": (["train", "--widths", "8,-2"], "positive integers, got '8,-2'"),
    "train missing data": (
        ["train", "--data", "{dir}/none.csv"],
        "none.csv does not exist",
    ),
    "train data folder": (["train", "--data", "{dir}"], "is a folder; expected a file"),
    "train empty data path": (["train", "--data", ""], "--data: the path is empty"),
    "train blank out": (["train", "--out", " "], "--out: the path is blank (' ')"),
    "run empty out": (["run", "--out", ""], "--out: the path is empty; pass"),
    "depth empty out": (["depth", "--out", ""], "--out: the path is empty; pass"),
    "attack empty model": (["attack", "--model", ""], "--model: the path is empty"),
    "evaluate misspelt model": (
        ["evaluate", "--mdoel", "{dir}/model.npz"],
        "(--mdoel is not an option of resgrad evaluate; did you mean --model?)",
    ),
    "train misspelt optional option": (
        ["train", "--optimiser", "adam"],
        (
            "unrecognized arguments: --optimiser adam (--optimiser is not an "
            "option of resgrad train; did you mean --optimizer?)"
        ),
    ),
    "train values after a bare --": (["train", "--", "--foo"], "arguments: -- --foo;"),
    "saliency start of one option": (
        ["saliency", "--check", "3"],
        "(--check is not an option of resgrad saliency; did you mean --check-samples?)",
    ),
    "train unknown option far from any": (
        ["train", "--bogus", "1"],
        "unrecognized arguments: --bogus 1; see",
    ),
    "train prefix of an option": (
        ["train", "--epoch", "3"],
        "(--epoch is not an option of resgrad train; did you mean --epochs?)",
    ),
    "attack misspelt model, with a prefix": (
        ["attack", "--modle={dir}/model.npz", "--meth", "fgsm"],
        "required: --model (--modle is not an option of resgrad attack; did",
    ),
    "attack empty out": (
        ["attack", "--model", "{dir}/model.npz", "--out", ""],
        "--out: the path is empty",
    ),
    "train labels missing": (
        ["train", "--labels", "{dir}/none"],
        "none does not exist",
    ),
    "train out folder": (
        ["train", "--out", "{dir}"],
        "is a folder; expected a file name",
    ),
    "train out ending in a dot part": (
        ["train", "--out", "{dir}/new.npz/.", "--epochs", "1"],
        "new.npz/.' ends in '/.', which names a folder",
    ),
    "train checkpoint with a trailing slash": (
        ["train", "--checkpoint", "{dir}/ck/", "--epochs", "1"],
        "e.g. {dir}/ck/model.checkpoint.npz, or {dir}/ck without the '/'",
    ),
    "train out with a trailing slash": (
        ["train", "--out", "{dir}/new.npz/", "--epochs", "1"],
        (
            "new.npz/' ends in '/', which names a folder; expected a file name, "
            "e.g. {dir}/new.npz/model.npz, or {dir}/new.npz without the '/'"
        ),
    ),
    "train resume nothing": (
        ["train", "--resume", "--out", "{dir}/fresh.npz"],
        "no checkpoint at {dir}/fresh.checkpoint.npz",
    ),
    "train out exists": (
        ["train", "--out", "{dir}/model.npz"],
        "model.npz already exists; pass --overwrite",
    ),
    "train checkpoint left": (
        ["train", "--out", "{dir}/new.npz", "--checkpoint", "{dir}/plain.txt"],
        "plain.txt is a file that is not a resgrad checkpoint, which training",
    ),
    "evaluate no model": (["evaluate"], "required: --model"),
    "evaluate missing model": (
        ["evaluate", "--model", "{dir}/none.npz"],
        "none.npz does not exist",
    ),
    "evaluate model with a trailing slash": (
        ["evaluate", "--model", "{dir}/model.npz/"],
        (
            "--model: the path '{dir}/model.npz/' ends in '/', which names a "
            "folder, but {dir}/model.npz is a file; pass {dir}/model.npz;"
        ),
    ),
    "evaluate model folder": (
        ["evaluate", "--model", "{dir}"],
        "is a folder; expected a file",
    ),
    "evaluate pickle model": (
        ["evaluate", "--model", "{dir}/pickle.npz"],
        "pickle.npz is not a resgrad model file",
    ),
    "check missing model": (
        ["check", "--model", "{dir}/none.npz"],
        "none.npz does not exist",
    ),
    "attack missing model": (
        ["attack", "--model", "{dir}/none.npz"],
        "none.npz does not exist",
    ),
    "attack negative eps": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "-0.1"],
        "-0.1",
    ),
    "attack negative eps list": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "-0.1,0.2"],
        "Expected --eps >= 0, got -0.1; --eps is the perturbation radius.",
    ),
    "attack nan eps": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "0.1,nan"],
        "Expected a finite --eps, got nan; pass a finite real number.",
    ),
    "attack infinite eps": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "inf"],
        "Expected a finite --eps, got inf;",
    ),
    "attack eps beyond float": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "1e400"],
        "Invalid --eps '1e400': it is beyond the largest float;",
    ),
    "attack eps not a number": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "0.1,big"],
        "Invalid --eps 'big'; expected numbers such as 0,0.1.",
    ),
    "attack eps blank": (
        ["attack", "--model", "{dir}/model.npz", "--eps", " "],
        "Expected at least one --eps value, such as 0,0.05,0.1.",
    ),
    "attack unknown method": (
        ["attack", "--model", "{dir}/model.npz", "--method", "cw"],
        "'cw'",
    ),
    "attack out file": (
        ["attack", "--model", "{dir}/model.npz", "--out", "{dir}/plain.txt"],
        "plain.txt is a file; expected a folder",
    ),
    "saliency model folder": (
        ["saliency", "--model", "{dir}"],
        "is a folder; expected a file",
    ),
    "saliency gauss steps": (
        ["saliency", "--model", "{dir}/model.npz", "--steps", "5000"],
        "is too many for rule 'gausslegendre'",
    ),
    "saliency riemann steps": (
        ["saliency", "--model", "{dir}/model.npz", "--rule", "riemann_middle"]
        + ["--steps", "2000000"],
        "--steps: expected at most 1,000,000 passes, got 2000000",
    ),
    "saliency steps beyond int64": (
        ["saliency", "--model", "{dir}/model.npz", "--steps", "9" * 23],
        "--steps: expected an integer from 1 to 2**63 - 1",
    ),
    "saliency unknown method": (
        ["saliency", "--model", "{dir}/model.npz", "--method", "lime"],
        "'lime'",
    ),
    "saliency out file": (
        ["saliency", "--model", "{dir}/model.npz", "--out", "{dir}/plain.txt"],
        "plain.txt is a file; expected a folder",
    ),
    "saliency nan baseline": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/nan_baseline.npy",
        ],
        "has 2 NaN or infinite value(s), the first at index 5 (nan); replace",
    ),
    "saliency text baseline": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/text_baseline.npy",
        ],
        "text_baseline.npy' has dtype <U3, not real numbers; save the row as floats",
    ),
    "saliency npz baseline": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/archive_baseline.npz",
        ],
        "archive_baseline.npz' is a .npz archive, not a .npy array; save the row",
    ),
    "saliency baseline of huge declared shape": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/huge_baseline.npy",
        ],
        "Expected --baseline of shape (64,), one input row, got (99999999999,)",
    ),
    "saliency baseline of huge declared shape, format 3.0": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/huge_v3_baseline.npy",
        ],
        "Expected --baseline of shape (64,), one input row, got (99999999999,)",
    ),
    "saliency baseline of long strings": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/long_text_baseline.npy",
        ],
        "long_text_baseline.npy' has dtype <U99999999, not real numbers",
    ),
    "saliency baseline in raw units": (
        ["saliency", "--model", "{dir}/model.npz", "--baseline", "16"],
        "--baseline 16 is outside the box [0, 1] that the inputs are scaled into",
    ),
    # argparse's own pattern reads a negative number with an exponent, or
    # -inf, as an option, and then reports that --baseline has no value.
    "saliency negative baseline with exponent": (
        ["saliency", "--model", "{dir}/model.npz", "--baseline", "-1e300"],
        "--baseline -1e300 is outside the box [0, 1]",
    ),
    "saliency baseline -inf": (
        ["saliency", "--model", "{dir}/model.npz", "--baseline", "-inf"],
        "--baseline must be a finite number, got '-inf'",
    ),
    "saliency baseline row in raw units": (
        [
            "saliency",
            "--model",
            "{dir}/model.npz",
            "--baseline",
            "{dir}/raw_baseline.npy",
        ],
        "has the value 16 at feature 7, outside the box [0, 1]",
    ),
    "depth empty item": (["depth", "--depths", "1,,4"], "empty item in '1,,4'"),
    "saliency empty item": (
        ["saliency", "--model", "{dir}/model.npz", "--index", "0,,1"],
        "Empty item in --index '0,,1'",
    ),
    "depth seeds zero": (
        ["depth", "--seeds", "0"],
        "--seeds: expected an integer >= 1, got 0",
    ),
    "depth out file": (
        ["depth", "--out", "{dir}/plain.txt"],
        "plain.txt is a file; expected a folder for the output files.",
    ),
    "run out file": (
        ["run", "--out", "{dir}/plain.txt"],
        "plain.txt is a file; expected a folder for the output files.",
    ),
    "run out not empty": (["run", "--out", "{dir}"], "is not empty; choose a new"),
    "run lr negative": (["run", "--lr", "-3"], "--lr: expected a number > 0, got -3"),
    "unknown option of a command": (
        ["check", "--model", "{dir}/model.npz", "--plot"],
        "unrecognized arguments: --plot; see 'resgrad check --help'.",
    ),
    "unknown option without a command": (
        ["--bogus"],
        "resgrad: error: unrecognized arguments: --bogus; see 'resgrad --help'.",
    ),
    "run skip empty item": (
        ["run", "--skip", "attack,"],
        "Empty item in --skip 'attack,'; remove the extra comma",
    ),
    "run skip unknown": (
        ["run", "--skip", "Attack,plots"],
        "Unknown --skip value 'plots'; expected all, or some of: attack, saliency,",
    ),
    "run skip all beside others": (
        ["run", "--skip", "all,depth"],
        "--skip 'all,depth': 'all' already names every choice; pass all alone",
    ),
    "saliency method all beside others": (
        ["saliency", "--model", "{dir}/model.npz", "--method", "all,vanilla"],
        "--method 'all,vanilla': 'all' already names every choice; pass all alone",
    ),
    "depth arch unknown": (
        ["depth", "--arch", "resnet"],
        "Unknown --arch value 'resnet'; expected all, or some of: residual,",
    ),
    "attack seed without random method": (
        ["attack", "--model", "{dir}/model.npz", "--method", "fgsm", "--seed", "0"],
        "--method fgsm draws no random numbers, so --seed 0 would change nothing",
    ),
    "attack empty eps": (
        ["attack", "--model", "{dir}/model.npz", "--eps", "0.1,,0.2"],
        "Empty item in --eps '0.1,,0.2'; remove the extra comma",
    ),
}

# Data that does not fit the [64, 16, 10] model of the files fixture.
MISFIT_DATA = {
    "narrow.npz": "--data has 32 features but the model takes 64",
    "many_labels.npz": "outside the model's 10 classes [0, 10)",
}


def test_no_command_prints_help_to_stderr(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: resgrad")
    # The error comes last, where a reader looks first.
    assert captured.err.splitlines()[-1] == (
        "resgrad: error: a command is required; for a first run on the bundled "
        "digits, try 'resgrad run'."
    )


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_argument_one_line(files, capsys, case):
    argv, fragment = BAD_ARGUMENTS[case]
    argv = [arg.replace("{dir}", str(files)) for arg in argv]
    fragment = fragment.replace("{dir}", str(files))

    status, lines = run_cli(capsys, argv)

    assert status == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("resgrad")
    assert fragment in lines[0]
    assert "Traceback" not in lines[0]


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--widths", "8", "--hidden", "8,8,8"],
            "--hidden 8,8,8 gives 3 hidden widths",
        ),
        (["--patience", "3"], "--patience 3 applies only to early stopping"),
    ],
    ids=["hidden count", "patience without validation"],
)
def test_options_checked_before_data(
    command, options, message, tmp_path, monkeypatch, capsys
):
    """Options that do not fit each other need no data to be found."""
    import resgrad.cli.run
    import resgrad.cli.train

    def no_loading(args):
        raise AssertionError("the data were loaded")

    monkeypatch.setattr(resgrad.cli.train, "load_dataset", no_loading)
    monkeypatch.setattr(resgrad.cli.run, "load_dataset", no_loading)
    monkeypatch.chdir(tmp_path)
    argv = [command, *options]
    if command == "train":
        argv += ["--out", "model.npz"]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["evaluate", "check", "attack", "saliency"])
@pytest.mark.parametrize("name", list(MISFIT_DATA))
def test_data_must_fit_model(files, tmp_path, capsys, command, name):
    """Data of another width, or labels beyond the model's classes, end the
    command with one line, and leave no output folder behind."""
    out = tmp_path / "out"
    argv = [command, "--model", str(files / "model.npz"), "--data", str(files / name)]
    if command in ("attack", "saliency"):
        argv += ["--out", str(out), "--no-progress"]
    status, lines = run_cli(capsys, argv)

    assert status == 2
    assert len(lines) == 1, lines
    assert MISFIT_DATA[name] in lines[0]
    assert not out.exists()


def test_attack_names_a_wrong_model_before_the_folder(files, tmp_path, capsys):
    """A file that is no model is the more basic mistake than an earlier
    run's folder, so it is named first."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    argv = ["attack", "--model", str(files / "plain.txt"), "--out", str(out)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert len(lines) == 1, lines
    assert "plain.txt is not a resgrad model file" in lines[0]


@pytest.mark.parametrize("command", ["attack", "saliency", "depth", "run"])
def test_not_empty_out_refused(files, tmp_path, capsys, command):
    """A command refuses a folder holding an earlier run's files before it
    does any work, and leaves those files alone."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    argv = [command, "--out", str(out), "--no-progress"]
    if command in ("attack", "saliency"):
        argv += ["--model", str(files / "model.npz")]
    status, lines = run_cli(capsys, argv)

    assert status == 2
    assert len(lines) == 1, lines
    assert f"--out {out} is not empty" in lines[0]
    assert [path.name for path in out.iterdir()] == ["old.png"]
    assert (out / "old.png").read_bytes() == b"old"


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("attack", "robust_accuracy.png"),
        ("saliency", "saliency.json"),
        ("depth", "depth_ratio.png"),
        ("depth", "depth_spectrum_w4.png"),
        ("run", "training.png"),
        ("run", "INCOMPLETE.txt"),
        ("run", "robust_accuracy.png"),
        ("run", "saliency_grid.png"),
        ("run", "depth_spectrum_w32.png"),
    ],
)
def test_folder_named_as_output_file(files, tmp_path, capsys, command, name):
    """A folder in the way of one of the command's files, its sections' in
    resgrad run included, ends the command before any work, with advice
    that can be followed."""
    out = tmp_path / "earlier"
    (out / name).mkdir(parents=True)
    argv = [command, "--out", str(out), "--overwrite", "--no-progress"]
    if command == "depth":
        argv += ["--depths", "1,2", "--widths", "4"]
    if command in ("attack", "saliency"):
        argv += ["--model", str(files / "model.npz")]
    status, lines = run_cli(capsys, argv)

    assert status == 2
    assert len(lines) == 1, lines
    assert f"{out / name} is a folder, where this command writes a file" in lines[0]
    assert [path.name for path in out.iterdir()] == [name]


@pytest.mark.parametrize("command", ["run", "attack", "saliency", "depth"])
def test_overwrite_help_text(capsys, command):
    assert main([command, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in help_text
    assert "replacing the files of the same name; other files in it stay" in help_text


@pytest.mark.parametrize("spectrum_depth", ["0", "2"])
def test_depth_figure_names_match_files(spectrum_depth, tmp_path, capsys):
    """The names that depth checks before any work are those it writes."""
    from resgrad.cli.depth import figure_names

    out = tmp_path / "depth"
    argv = ["depth", "--depths", "1,2", "--widths", "4,6", "--seeds", "1"]
    argv += ["--samples", "2", "--identity-blocks", "0", "--identity-width", "4"]
    argv += ["--spectrum-depth", spectrum_depth, "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    written = json.loads((out / "depth.json").read_text())["files"]
    assert sorted(written) == sorted(figure_names([4, 6], spectrum_depth != "0"))


def test_depth_overwrite_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "depth"
    out.mkdir()
    (out / "depth_norms_w16.png").write_bytes(b"old")
    (out / "depth.json").write_text("{}")
    argv = ["depth", "--depths", "1,2", "--widths", "4", "--seeds", "1"]
    argv += ["--samples", "2", "--identity-blocks", "0", "--identity-width", "4"]
    argv += ["--spectrum-depth", "2", "--out", str(out), "--no-progress"]
    status = main([*argv, "--overwrite"])

    document = json.loads((out / "depth.json").read_text())
    assert status == 0
    assert document["settings"]["widths"] == [4]
    assert "depth_norms_w4.png" in document["files"]
    assert (out / "depth_norms_w16.png").read_bytes() == b"old"


@pytest.mark.parametrize("name", ["model.npz", "model.csv", "model"])
def test_train_warns_on_out_without_npz(name, tmp_path, capsys):
    out = tmp_path / name
    status = main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0
    assert out.is_file()
    warned = f"--out {out} does not end in .npz" in captured.err
    assert warned is (name != "model.npz")


def test_train_warns_on_out_before_data(tmp_path, monkeypatch, capsys):
    import resgrad.cli.train

    def stop(args):
        raise ValueError("stopped before the data")

    monkeypatch.setattr(resgrad.cli.train, "load_dataset", stop)
    status, lines = run_cli(capsys, ["train", "--out", str(tmp_path / "model.csv")])
    assert status == 2
    assert "does not end in .npz" in lines[0]
    assert "stopped before the data" in lines[1]


def test_train_one_epoch_singular(tmp_path, capsys):
    out = tmp_path / "model.npz"
    argv = ["train", "--widths", "8", "--hidden", "8", "--epochs", "1"]
    status = main([*argv, "--no-progress", "--out", str(out)])

    assert status == 0
    assert "trained 1 epoch in " in capsys.readouterr().out


def test_pickle_model_runs_no_code(files, capsys):
    status, _ = run_cli(capsys, ["check", "--model", str(files / "pickle.npz")])

    assert status == 2
    assert not (files / "marker").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_traceback_keeps_status(where, files, capsys):
    """--debug, before or after the command, adds the traceback to the
    message and keeps exit status 2, which scripts read as bad input."""
    command = ["evaluate", "--model", str(files / "pickle.npz")]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("Traceback (most recent call last):")
    # Once in the traceback's last line, once in the usual message.
    assert err.count("is not a resgrad model file") == 2
    assert err.splitlines()[-1].startswith("resgrad evaluate: error: ")


def test_blas_threads_must_be_positive(capsys):
    assert main(["evaluate", "--blas-threads", "0", "--model", "m.npz"]) == 2
    assert "--blas-threads: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_blas_threads_at_most_cpus(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert main(["evaluate", "--blas-threads", "3", "--model", "m.npz"]) == 2
    err = capsys.readouterr().err
    assert "--blas-threads: 3 threads are more than the 2 CPUs" in err
    assert "pass at most 2" in err


def test_help_exits_zero(capsys):
    assert main(["train", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "run"])
def test_help_shows_list_defaults_as_typed(capsys, command):
    from resgrad.training import DEFAULT_RECIPE

    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    widths = ",".join(str(width) for width in DEFAULT_RECIPE["model"]["sizes"][1:-1])
    assert f"from the data (default: {widths})" in text
    assert f"comma-separated (default: {DEFAULT_RECIPE['model']['hidden']})" in text
    assert "default: [" not in text


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            MemoryError("Unable to allocate 47.7 GiB for an array"),
            (
                "resgrad depth: error: not enough memory (Unable to allocate 47.7 "
                "GiB for an array); pass smaller sizes, such as fewer or narrower "
                "blocks, samples or steps."
            ),
        ),
        (
            OverflowError("cannot fit 'int' into an index-sized integer"),
            "resgrad depth: error: cannot fit 'int' into an index-sized integer",
        ),
    ],
    ids=["memory", "overflow"],
)
def test_depth_failure_is_one_line(tmp_path, monkeypatch, capsys, error, message):
    import resgrad.depth

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(resgrad.depth, "depth_sweep", fail)
    status, lines = run_cli(capsys, ["depth", "--out", str(tmp_path / "out")])
    assert status == 2
    assert lines == [message]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "run"])
def test_network_too_large_to_train(command, tmp_path, monkeypatch, capsys):
    import resgrad.data
    import resgrad.model

    def never(*args, **kwargs):
        raise AssertionError("the network was made")

    monkeypatch.setattr(resgrad.data, "_available_memory", lambda: 2**30)
    monkeypatch.setattr(resgrad.model.ResidualMLP, "init", never)
    out = ["--out", str(tmp_path / ("m.npz" if command == "train" else "run"))]
    argv = [command, "--widths", "50000", "--hidden", "64", *out]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"resgrad {command}: error: --widths 50000 with --hidden 64,64 needs about "
    )
    assert "more than the 1.0 GiB of memory available" in lines[0]
    assert not any(tmp_path.iterdir())


def test_data_out_of_memory_names_the_file(tmp_path, monkeypatch, capsys):
    import resgrad.data

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.45 GiB for an array")

    monkeypatch.setattr(resgrad.data, "load_data", too_big)
    path = tmp_path / "huge.csv"
    path.write_text("1,0\n2,1\n")
    argv = ["train", "--data", str(path), "--out", str(tmp_path / "m.npz")]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    message = (
        f"resgrad train: error: Not enough memory to load {path} (Unable to "
        "allocate 7.45 GiB for an array); free memory or pass a smaller data file."
    )
    assert lines == [message]


def test_closed_output_pipe_ends_quietly(files):
    executable = shutil.which("resgrad")
    assert executable is not None, "the resgrad script is not installed"
    command = [executable, "evaluate", "--model", str(files / "model.npz")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The reader goes away before the command writes, as `| head -0` would.
    process.stdout.close()
    _, err = process.communicate(timeout=120)

    assert process.returncode == 141
    assert err == b""


def test_executable_reports_one_line(files):
    executable = shutil.which("resgrad")
    assert executable is not None, "the resgrad script is not installed"
    completed = subprocess.run(
        [executable, "evaluate", "--model", str(files / "pickle.npz")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "pickle.npz is not a resgrad model file" in lines[0]


# Training: divergence, checkpoints and resuming a killed run.

SMALL_RUN = ["--widths", "64", "--hidden", "64", "--no-progress", "--seed", "3"]


def test_model_through_a_link_loop_is_named(tmp_path, capsys):
    loop = tmp_path / "model.npz"
    loop.symlink_to(loop)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(loop)])
    assert status == 2
    assert (
        f"--model: {loop} is a symbolic link that leads back to itself" in (lines[-1])
    )


def test_train_on_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    import errno

    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(resgrad.io.os, "fsync", full)
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    # The first file written is the checkpoint of the first epoch.
    checkpoint = tmp_path / "model.checkpoint.npz"
    assert lines[-1] == (
        f"resgrad train: error: Cannot save {checkpoint}: no space left on device, "
        "and nothing was written; free space on that disk, or save to another one."
    )
    assert list(tmp_path.iterdir()) == []


def test_train_divergence_names_step_and_rate(tmp_path, capsys):
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "2", "--lr", "1e6", "--out", str(out)]
    status, lines = run_cli(capsys, argv)

    assert status == 2
    assert len(lines) == 1, lines
    assert "Training diverged at epoch 1, step" in lines[0]
    assert "learning rate 1e+06" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_train_empty_widths_make_one_block(tmp_path, capsys):
    out = tmp_path / "model.npz"
    argv = ["train", "--widths", "", "--hidden", "8", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert resgrad.load(out).sizes == [64, 10]

    bad = [*argv[:3], "--hidden", "8,8", "--out", str(tmp_path / "bad.npz")]
    status, lines = run_cli(capsys, bad)
    assert status == 2
    assert "--widths '' makes 1 block (one more" in lines[-1]


@pytest.mark.parametrize(
    ("optimizer", "rate"), [("sgd", 0.1), ("momentum", 0.01), ("adam", 1e-3)]
)
def test_train_learning_rate_defaults_to_the_optimizer_s(tmp_path, optimizer, rate):
    # The rates of fit, not Adam's 1e-3 for every optimizer.
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--optimizer", optimizer]
    assert main([*argv, "--out", str(out)]) == 0

    assert resgrad.read_metadata(out)["training"]["lr"] == rate


def test_train_removes_checkpoint_when_done(tmp_path, capsys):
    out = tmp_path / "model.npz"
    status = main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)])

    assert status == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.npz"]


def test_train_checkpoint_every(tmp_path, checkpoint_writes, capsys):
    written = checkpoint_writes
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "4", "--out", str(out)]
    assert main([*argv, "--checkpoint-every", "3"]) == 0
    assert written == [3, 4]

    status, lines = run_cli(capsys, [*argv, "--checkpoint-every", "0"])
    assert status == 2
    assert "--checkpoint-every: expected an integer >= 1, got 0" in lines[-1]


def wait_for(path, process, timeout=120.0):
    """Poll until ``path`` exists; fail if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def test_train_stops_on_sigterm_as_on_ctrl_c(tmp_path):
    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    command = [shutil.which("resgrad"), "train", *SMALL_RUN, "--epochs", "200"]
    process = subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(checkpoint, process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)

    assert process.returncode == 143
    assert (
        f"resgrad train: terminated; {checkpoint} holds the last epoch saved"
        in err.decode()
    )
    # The lock file goes as after Ctrl-C; SIGKILL is what leaves it.
    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.name]


@pytest.mark.slow
def test_train_resume_after_kill(tmp_path, capsys):
    epochs = ["--epochs", "15"]
    killed_out = tmp_path / "killed" / "model.npz"
    killed_out.parent.mkdir()
    checkpoint = killed_out.with_suffix(".checkpoint.npz")
    command = [
        shutil.which("resgrad"),
        "train",
        *SMALL_RUN,
        *epochs,
        "--out",
        str(killed_out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(checkpoint, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert not killed_out.exists(), "the run finished before it was killed"

    resumed = main(["train", *SMALL_RUN, *epochs, "--out", str(killed_out), "--resume"])
    plain_out = tmp_path / "model.npz"
    plain = main(["train", *SMALL_RUN, *epochs, "--out", str(plain_out)])

    assert (resumed, plain) == (0, 0)
    expected = resgrad.load(plain_out).arrays()
    for name, value in resgrad.load(killed_out).arrays().items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert sorted(os.listdir(killed_out.parent)) == ["model.npz"]


def test_train_resume_rejects_other_seed(tmp_path, capsys):
    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "run.ckpt"
    options = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    resgrad.training.fit(
        resgrad.ResidualMLP.init([2, 3, 2], seed=0),
        np.zeros((4, 2)),
        np.array([0, 1, 0, 1]),
        epochs=1,
        validation=None,
        checkpoint=checkpoint,
    )
    status, lines = run_cli(
        capsys, [*options, "--checkpoint", str(checkpoint), "--resume"]
    )

    assert status == 2
    assert len(lines) == 1, lines
    assert "Cannot resume from" in lines[0]
    assert "--overwrite in place of --resume" in lines[0]
    assert not out.exists()


def test_train_interrupt_before_an_epoch_names_earlier_run(
    tmp_path, monkeypatch, capsys
):
    # --resume would not continue the earlier run with this run's options.
    import resgrad.cli.train as train_cli

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    checkpoint.write_bytes(b"earlier run")

    def interrupted_training(args, data, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train_model", interrupted_training)
    monkeypatch.setattr(resgrad.training, "check_checkpoint_target", lambda *a: None)
    argv = ["train", "--out", str(out), "--overwrite", "--no-progress"]
    status, lines = run_cli(capsys, argv)
    assert status == 130
    assert "is still the checkpoint of the earlier run" in lines[-1]
    assert "--resume" not in lines[-1]
    assert checkpoint.read_bytes() == b"earlier run"


@pytest.mark.parametrize("readable", [True, False])
def test_train_interrupt_names_checkpoint(readable, tmp_path, monkeypatch, capsys):
    """The message names the checkpoint, and its epoch where it can be read."""
    import resgrad.cli.train as train_cli
    from resgrad.io import save_checkpoint

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"

    def interrupted_training(args, data, progress):
        if readable:
            save_checkpoint(checkpoint, {"history": [{"loss": 1.0}] * 3}, {})
        else:
            checkpoint.write_bytes(b"epoch 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train_model", interrupted_training)
    status = main(["train", "--out", str(out), "--epochs", "7", "--no-progress"])
    err = capsys.readouterr().err
    epoch = " (epoch 3 of 7)" if readable else ""
    assert status == 130
    assert f"{checkpoint} holds the last epoch saved{epoch};" in err
    assert "--resume" in err
    assert not out.exists()


def test_train_interrupt_after_save(tmp_path, monkeypatch, capsys):
    """An interrupt once the model's file is in place, as during the sync of
    its folder, must not advise --resume, which would stop at that file."""
    real_save = resgrad.io.save

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(resgrad.io, "save", save_then_interrupt)
    out = tmp_path / "model.npz"
    status = main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 130
    assert f"{out} was saved before the interrupt, so the run is complete" in err
    assert "--resume" not in err
    assert out.is_file()


def test_train_interrupt_after_out_written_elsewhere(tmp_path, monkeypatch, capsys):
    """--out written by another command during training is not this run's
    model, so the checkpoint must still be offered to --resume."""
    import resgrad.cli.train as train_cli
    from resgrad.io import save_checkpoint

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"

    def interrupted_training(args, data, progress):
        save_checkpoint(checkpoint, {"history": [{"loss": 1.0}] * 2}, {})
        resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=1), out)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train_model", interrupted_training)
    status = main(["train", "--out", str(out), "--epochs", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 130
    assert "saved before the interrupt" not in err
    assert f"{checkpoint} holds the last epoch saved (epoch 2 of 5)" in err


def test_train_second_interrupt_keeps_the_note(tmp_path, monkeypatch, capsys):
    # A second Ctrl-C while the message is made, as from a key held down,
    # must not drop what the first one left.
    import resgrad.cli.train as train_cli
    from resgrad.io import load_checkpoint, save_checkpoint

    checkpoint = tmp_path / "model.checkpoint.npz"

    def interrupted_training(args, data, progress):
        save_checkpoint(checkpoint, {"history": [{"loss": 1.0}] * 3}, {})
        raise KeyboardInterrupt

    def interrupted_again(path):
        os.kill(os.getpid(), signal.SIGINT)
        return load_checkpoint(path)

    monkeypatch.setattr(train_cli, "train_model", interrupted_training)
    monkeypatch.setattr(resgrad.io, "load_checkpoint", interrupted_again)
    out = tmp_path / "model.npz"
    status = main(["train", "--out", str(out), "--epochs", "7", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 130
    assert f"{checkpoint} holds the last epoch saved (epoch 3 of 7);" in err


# A program whose command succeeds and whose cleanup at exit gets a Ctrl-C.
INTERRUPTED_EXIT = """
import atexit, os, signal, time
import resgrad.cli as cli

def interrupt():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)

atexit.register(interrupt)
cli.main = lambda: 0
cli.console()
"""


def _run_program(program, **kwargs):
    """Run the Python ``program`` in a new process; return its result."""
    return subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_console_ignores_interrupt_at_exit():
    # Python installs its Ctrl-C handler only where SIGINT is not ignored.
    done = _run_program(
        INTERRUPTED_EXIT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode == 0
    assert done.stderr == ""


# A command that finished its work although SIGTERM came, as when Python
# ignores the handler's exception inside a garbage-collection callback.
FINISHED_AFTER_SIGTERM = """
import resgrad.cli as cli

def finished_anyway():
    cli._terminated = True
    return 0

cli.main = finished_anyway
cli.console()
"""


def test_console_reports_sigterm_that_did_not_stop():
    done = _run_program(FINISHED_AFTER_SIGTERM)
    assert done.returncode == 143
    assert "terminated (SIGTERM), after the command had finished" in done.stderr


# A command whose Ctrl-C arrives inside a garbage-collection callback, where
# Python prints the KeyboardInterrupt as "Exception ignored" and goes on.
FINISHED_AFTER_SIGINT = """
import os, signal, weakref
import resgrad.cli as cli

class Thing:
    pass

def interrupt(ref):
    os.kill(os.getpid(), signal.SIGINT)
    total = 0
    for step in range(100000):
        total += step

def finished_anyway():
    thing = Thing()
    watch = weakref.ref(thing, interrupt)
    del thing
    print("finished", flush=True)
    return 0

cli.main = finished_anyway
cli.console()
"""


def test_console_reports_sigint_that_did_not_stop():
    done = _run_program(
        FINISHED_AFTER_SIGINT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.stdout == "finished\n"
    assert done.returncode == 130
    assert done.stderr == (
        "resgrad: interrupted (Ctrl-C), after the command had finished\n"
    )


def test_error_after_sigterm_reports_termination(files, monkeypatch, capsys):
    # A library that catches the interrupt may raise a ValueError instead.
    from resgrad import cli

    monkeypatch.setattr(cli, "_terminated", True)
    argv = ["evaluate", "--model", str(files / "pickle.npz")]
    status, lines = run_cli(capsys, argv)
    assert status == 143
    assert lines == ["resgrad evaluate: terminated"]


@pytest.mark.parametrize(
    "command, option, words",
    [
        ("attack", "--method", "a repeated one runs once"),
        ("attack", "--eps", "a repeated radius runs once"),
        ("saliency", "--index", "a repeated one is drawn once"),
        ("saliency", "--method", "a repeated one runs once"),
        ("run", "--skip", "a repeated one counts once"),
    ],
)
def test_list_option_help_names_repeats(command, option, words):
    from resgrad.cli import _command_parser, build_parser

    parser = _command_parser(build_parser(), command)
    (action,) = [a for a in parser._actions if option in a.option_strings]
    assert words in action.help


def test_console_is_the_installed_program():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="resgrad")
    assert script.value == "resgrad.cli:console"


def test_train_error_removes_new_checkpoint(tmp_path, monkeypatch, capsys):
    import resgrad.cli.train as train_cli

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"

    def diverging_training(args, data, progress):
        checkpoint.write_bytes(b"epoch 1")
        raise resgrad.TrainingDiverged("Training diverged at epoch 2")

    monkeypatch.setattr(train_cli, "train_model", diverging_training)
    status, lines = run_cli(capsys, ["train", "--out", str(out), "--no-progress"])

    assert status == 2
    assert lines == ["resgrad train: error: Training diverged at epoch 2"]
    assert list(tmp_path.iterdir()) == []


def test_train_resumed_error_keeps_checkpoint(tmp_path, monkeypatch, capsys):
    import resgrad.cli.train as train_cli

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    checkpoint.write_bytes(b"epoch 1")

    def diverging_training(args, data, progress):
        raise resgrad.TrainingDiverged("Training diverged at epoch 2")

    monkeypatch.setattr(train_cli, "train_model", diverging_training)
    argv = ["train", "--out", str(out), "--no-progress", "--resume"]
    status, _ = run_cli(capsys, argv)

    assert status == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.name]


def test_train_error_before_an_epoch_keeps_earlier_checkpoint(tmp_path, capsys):
    # --overwrite starts over, but a run that fails on its options before
    # writing a checkpoint must not delete the one it would have replaced.
    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    model = resgrad.ResidualMLP.init([2, 3, 2], seed=0)
    x, y = np.eye(2), np.arange(2)
    resgrad.fit(model, x, y, epochs=1, validation=None, checkpoint=checkpoint)
    earlier = checkpoint.read_bytes()
    argv = ["train", "--hidden", "1,2", "--out", str(out), "--overwrite"]
    status, lines = run_cli(capsys, [*argv, "--no-progress"])

    assert status == 2
    assert "--hidden 1,2 gives 2 hidden widths" in lines[-1]
    assert checkpoint.read_bytes() == earlier


def test_train_early_stop_counts_epochs_run(tmp_path, capsys):
    # Not the --epochs asked for: early stopping ends the run before them.
    argv = ["train", *SMALL_RUN, "--epochs", "40", "--validation", "0.2"]
    argv += ["--patience", "1", "--lr", "0.05", "--out", str(tmp_path / "m.npz")]
    assert main(argv) == 0
    epochs = resgrad.read_metadata(tmp_path / "m.npz")["epochs_run"]
    assert epochs < 40
    assert f"trained {epochs} epochs in " in capsys.readouterr().out


@pytest.mark.parametrize("validation", [[], ["--validation", "0.2"]])
def test_train_names_kept_epoch_only_with_validation(tmp_path, capsys, validation):
    argv = ["train", *SMALL_RUN, "--epochs", "2", "--out", str(tmp_path / "m.npz")]
    assert main([*argv, *validation]) == 0
    printed = capsys.readouterr().out
    # 0.2 of the 1347 training rows of the digits, stratified by class.
    held_out = "of the lowest loss on 270 validation samples held out"
    assert (held_out in printed) is bool(validation)
    assert "best epoch" not in printed


def _raise_full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_failed_checkpoint_write_names_the_epoch_it_kept(tmp_path, monkeypatch, capsys):
    """A checkpoint write that fails leaves the one before, of an epoch
    earlier than the last that finished."""
    real_save = resgrad.io.save_checkpoint
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(*args, **kwargs)

    monkeypatch.setattr(resgrad.io, "save_checkpoint", fail_second)
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "3", "--out", str(out)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    checkpoint = tmp_path / "model.checkpoint.npz"
    assert f"{checkpoint} holds the last epoch saved (epoch 1 of 3)" in lines[0]


def test_train_save_error_keeps_checkpoint_to_resume(tmp_path, monkeypatch, capsys):
    import resgrad.io

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]

    with monkeypatch.context() as patch:
        patch.setattr(resgrad.io, "save", _raise_full_disk)
        status, lines = run_cli(capsys, argv)
    assert status == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("resgrad train: error: [Errno 28] No space left")
    assert f"{checkpoint} holds the last epoch saved (epoch 1 of 1)" in lines[0]
    assert "--resume" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.name]

    # The checkpoint has run every epoch, so resuming only saves the model.
    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "the checkpoint already contained 1 finished epoch;" in printed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.npz"]


def test_train_resumed_counts_only_its_own_epochs(tmp_path, monkeypatch, capsys):
    import resgrad.io

    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(resgrad.io, "save", _raise_full_disk)
        assert main([*argv, "--epochs", "1"]) == 2
    capsys.readouterr()

    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    assert "trained 2 more epochs in " in capsys.readouterr().out


def test_train_resumed_log_lines(tmp_path, monkeypatch, capsys):
    import resgrad.io

    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--out", str(out)]
    argv.remove("--no-progress")
    with monkeypatch.context() as patch:
        patch.setattr(resgrad.io, "save", _raise_full_disk)
        assert main([*argv, "--epochs", "1", "--no-progress"]) == 2
    capsys.readouterr()

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    _slow_clock(monkeypatch)
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    lines = capsys.readouterr().err.splitlines()
    # The checkpoint held epoch 1, so the lines count on from there.
    assert [line.split(" after ")[0] for line in lines] == ["train: 2/3", "train: 3/3"]


def test_train_rejects_second_run_on_checkpoint(tmp_path, monkeypatch, capsys):
    import resgrad.cli.train as train_cli

    out = tmp_path / "model.npz"
    checkpoint = tmp_path / "model.checkpoint.npz"
    argv = ["train", "--out", str(out), "--no-progress"]
    second = {}

    def training_with_second_run(args, data, progress):
        checkpoint.write_bytes(b"epoch 1")
        if second:
            raise AssertionError("the second run started training")
        second["status"] = main([*argv, "--resume"])
        second["err"] = capsys.readouterr().err
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train_model", training_with_second_run)
    assert main(argv) == 130

    assert second["status"] == 2
    assert (
        f"{checkpoint} is in use by another training run (process {os.getpid()}), "
        f"which holds the lock on {checkpoint}.lock; wait for that run to end"
    ) in second["err"]
    assert checkpoint.read_bytes() == b"epoch 1"
    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.name]


def test_train_keeps_non_checkpoint_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        status, lines = run_cli(capsys, [*argv, "--checkpoint", str(notes), *extra])
        assert status == 2
        message = f"--checkpoint {notes} is a file that is not a resgrad checkpoint"
        assert message in lines[0]
    # --resume reads the file and names it as no checkpoint; it is kept.
    status, lines = run_cli(capsys, [*argv, "--checkpoint", str(notes), "--resume"])
    assert status == 2
    assert f"{notes} is not a resgrad checkpoint file" in lines[0]
    assert "If it is a damaged checkpoint, remove it and start over" in lines[0]
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_train_damaged_default_checkpoint(tmp_path, capsys):
    out = tmp_path / "model.npz"
    damaged = tmp_path / "model.checkpoint.npz"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out), "--overwrite"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert (
        f"The default checkpoint (--out with .checkpoint.npz) {damaged} is a file "
        "that is not a resgrad checkpoint"
    ) in lines[0]
    assert "move or remove it, or pass another --checkpoint path" in lines[0]
    assert damaged.read_bytes() == b"PK\x03\x04 cut short"


@pytest.mark.parametrize(
    ("out", "checkpoint"),
    [
        ("model.npz", "model.checkpoint.npz"),
        ("val_0.5", "val_0.5.checkpoint.npz"),
        ("val_0.25", "val_0.25.checkpoint.npz"),
        ("plain", "plain.checkpoint.npz"),
    ],
)
def test_default_checkpoint_keeps_the_whole_out_name(out, checkpoint):
    from pathlib import Path

    from resgrad.cli.train import _default_checkpoint

    assert _default_checkpoint(Path("runs") / out) == Path("runs") / checkpoint


def test_train_keeps_out_another_command_wrote(tmp_path, capsys, monkeypatch):
    import resgrad.cli.train

    out = tmp_path / "model.npz"
    train = resgrad.cli.train.train_model

    def another_command_saves(*args, **kwargs):
        result = train(*args, **kwargs)
        resgrad.save(resgrad.ResidualMLP.init([64, 8, 10], seed=1), out)
        return result

    monkeypatch.setattr(resgrad.cli.train, "train_model", another_command_saves)
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    status, lines = run_cli(capsys, argv)
    checkpoint = tmp_path / "model.checkpoint.npz"
    assert status == 2
    assert lines[0] == (
        f"resgrad train: error: --out {out} was written by another command while "
        f"this one trained. {checkpoint} contains this run's last epoch: the same "
        f"command with --resume --overwrite saves its model over {out}, and with "
        f"--resume --checkpoint {checkpoint} --out <another file> saves it there."
    )
    assert resgrad.load(out).sizes == [64, 8, 10]
    assert checkpoint.is_file()
    # The advice works.
    monkeypatch.setattr(resgrad.cli.train, "train_model", train)
    assert run_cli(capsys, [*argv, "--resume", "--overwrite"])[0] == 0
    assert resgrad.load(out).sizes[0] == 64
    assert not checkpoint.exists()


def test_train_overwrite_replaces_only_a_model_file(tmp_path, capsys):
    out = tmp_path / "keep.csv"
    out.write_text("1,2,0\n")
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out), "--overwrite"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert f"--out {out} does not read as a resgrad model, so --overwrite" in lines[0]
    assert out.read_text() == "1,2,0\n"
    assert sorted(os.listdir(tmp_path)) == ["keep.csv"]
    # An earlier model is replaced.
    model = tmp_path / "model.npz"
    resgrad.save(resgrad.ResidualMLP.init([64, 8, 10], seed=1), model)
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(model), "--overwrite"]
    assert run_cli(capsys, argv)[0] == 0
    assert resgrad.load(model).sizes[1] != 8


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("data", "is a data file (arrays X, y), not a model file)"),
        ("empty", "is not a resgrad model file: it is empty (0 bytes))"),
    ],
)
def test_overwrite_refusal_gives_one_fix(tmp_path, capsys, content, reason):
    """The message keeps the reason why the file is not a model. It drops the
    fix for reading it (pass it as --data, restore it), which would
    contradict the one for --out."""
    out = tmp_path / "keep.npz"
    if content == "data":
        np.savez(out, X=np.zeros((2, 64)), y=np.zeros(2, dtype=np.int64))
    else:
        out.write_bytes(b"")
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out), "--overwrite"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert lines[0].endswith(
        f"({out} {reason}; choose another --out, or move or remove that file."
    )


def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    assert run_cli(capsys, argv)[0] == 0
    status, lines = run_cli(capsys, [*argv, "--resume"])
    assert status == 2
    assert f"and --out {out} exists, so that run has finished" in lines[0]
    assert f"resgrad evaluate --model {out}" in lines[0]


def test_train_takes_over_lock_of_ended_run(tmp_path, capsys):
    out = tmp_path / "model.npz"
    lock = tmp_path / "model.checkpoint.npz.lock"
    lock.write_text("999999999\n")
    status = main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)])

    assert status == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.npz"]


def test_later_commands_scale_data_as_training_did(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 7.0, size=(80, 5))
    y = (x[:, 0] + x[:, 1] > 4.0).astype(int)
    np.savetxt(tmp_path / "train.csv", np.column_stack([x, y]), delimiter=",")
    status, _ = run_cli(
        capsys,
        [
            "train",
            "--data",
            str(tmp_path / "train.csv"),
            "--out",
            str(tmp_path / "m.npz"),
            "--epochs",
            "3",
            "--no-progress",
        ],
    )
    assert status == 0
    scaling = resgrad.read_metadata(tmp_path / "m.npz")["scaling"]
    assert len(scaling["offset"]) == len(scaling["scale"]) == 5

    # One outlying value would move the min-max scaling of every row.
    x[0, 0] = 1000.0
    np.savetxt(tmp_path / "new.csv", np.column_stack([x, y]), delimiter=",")
    capsys.readouterr()
    argv = ["evaluate", "--model", str(tmp_path / "m.npz")]
    assert main([*argv, "--data", str(tmp_path / "new.csv"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    data = resgrad.data.load_data(tmp_path / "new.csv", scaling=scaling)
    model = resgrad.load(tmp_path / "m.npz")
    expected = resgrad.training.evaluate(model, data.x_test, data.y_test)
    assert printed["loss"] == pytest.approx(expected["loss"], rel=1e-12)


def test_train_scales_column_wider_than_float64(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 7.0, size=(40, 3))
    x[:, 0] = np.resize([-1e308, 9.8e307, 0.0, 5e307], len(x))
    y = (x[:, 1] > 2.0).astype(int)
    path = tmp_path / "huge.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt="%.17g")
    model = tmp_path / "m.npz"
    argv = ["train", "--data", str(path), "--out", str(model), "--epochs", "2"]
    status, errors = run_cli(capsys, [*argv, "--no-progress"])
    assert status == 0
    assert errors == []
    scaling = resgrad.read_metadata(model)["scaling"]
    assert scaling["prescale"] == [0.5, 1.0, 1.0]
    argv = ["evaluate", "--model", str(model), "--data", str(path), "--json"]
    assert main(argv) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["loss"])


def test_labels_without_data_raise(tmp_path, capsys):
    model = tmp_path / "model.npz"
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model)
    labels = tmp_path / "labels.idx"
    labels.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    status, lines = run_cli(
        capsys, ["evaluate", "--model", str(model), "--labels", str(labels)]
    )
    assert status == 2
    assert len(lines) == 1
    assert f"--labels {labels} goes with the IDX image file of --data" in lines[0]


def _train_small(tmp_path, capsys, features=4):
    """Train a model on 60 random rows of ``features`` features in 3 classes;
    return the data and model paths."""
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, features)), y=np.arange(60) % 3)
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "4", "--hidden", "4", "--no-progress"]) == 0
    capsys.readouterr()
    return data, model


def test_identity_shortcut_on_no_block_warns(tmp_path, capsys):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, 4)), y=np.arange(60) % 3)
    train = ["train", "--data", str(data), "--epochs", "1", "--no-progress"]
    train += ["--shortcut", "identity", "--hidden", "4"]
    # Widths 4 -> 8 -> 3: both blocks change width.
    assert main([*train, "--widths", "8", "--out", str(tmp_path / "a.npz")]) == 0
    assert (
        "resgrad train: warning: --shortcut identity applies to no block: every "
        "block of the widths [4, 8, 3] changes width, so each gets a learned "
        "shortcut; repeat a width in --widths, such as 4,4, for identity blocks."
    ) in capsys.readouterr().err
    model = tmp_path / "b.npz"
    assert main([*train, "--widths", "4,4", "--out", str(model)]) == 0
    assert "warning" not in capsys.readouterr().err
    shortcuts = [block.shortcut for block in resgrad.load(model).blocks]
    assert shortcuts == ["identity", "identity", "learned"]


def test_check_progress_in_a_log(tmp_path, capsys):
    """A log gets a start line and an end line; --no-progress hides them."""
    _, model = _train_small(tmp_path, capsys)
    argv = ["check", "--model", str(model), "--entries", "5"]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"central differences: 0/\d+", lines[0])
    assert re.fullmatch(r"central differences: (\d+)/\1 after \d+ s", lines[-1])
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_check_seed_picks_the_sampled_entries(tmp_path, capsys):
    # resgrad run samples the entries of the central differences with its
    # --seed; check takes the same option to repeat them.
    _, model = _train_small(tmp_path, capsys)
    # Fewer entries than the 32 inputs of 8 samples, so that the seed picks.
    argv = ["check", "--model", str(model), "--entries", "5", "--json"]
    reports = {}
    for seed in ("0", "3"):
        assert main([*argv, "--seed", seed]) == 0
        reports[seed] = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert main([*argv, "--no-progress"]) == 0
    default = json.loads(capsys.readouterr().out)

    def differences(report):
        return [r["error"] for r in report["rows"] if "differences" in r["reference"]]

    assert differences(default) == differences(reports["0"])
    assert differences(reports["3"]) != differences(reports["0"])


@pytest.mark.parametrize("installed", [True, False])
def test_check_says_when_autograd_is_left_out(installed, files, monkeypatch, capsys):
    monkeypatch.setattr(resgrad.check, "_torch_available", lambda: installed)
    argv = ["check", "--model", str(files / "model.npz"), "--samples", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    note = "PyTorch autograd was left out because PyTorch is not installed"
    assert (note in out) is not installed
    assert ("| autograd |" in out) is installed


def test_check_defaults_repeat_the_run_check(files):
    # The docs say resgrad check repeats the rows of resgrad run's check with
    # its defaults: the same entries and the same number of samples.
    from resgrad.cli import build_parser
    from resgrad.cli import run as run_command

    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    check = subcommands.choices["check"].parse_args(
        ["--model", str(files / "model.npz")]
    )
    run = subcommands.choices["run"].parse_args([])
    assert check.entries == run_command.CHECK_ENTRIES
    assert check.samples == run.check_samples


def test_check_json_of_a_missing_array_is_strict(tmp_path, monkeypatch, capsys):
    # An array that the product leaves out has an infinite error, which the
    # JSON report writes as null.
    import dataclasses

    import resgrad.product

    _, model = _train_small(tmp_path, capsys)
    original = resgrad.product.product_gradients

    def missing(*args, **kwargs):
        grads = original(*args, **kwargs)
        return dataclasses.replace(grads, blocks=grads.blocks[:-1])

    monkeypatch.setattr(resgrad.product, "product_gradients", missing)
    assert main(["check", "--model", str(model), "--json"]) == 1
    report = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert not report["passed"]
    assert None in [row["error"] for row in report["rows"]]


def test_evaluate_warns_on_another_split(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    evaluate = ["evaluate", "--model", str(model), "--data", str(data)]

    assert main(evaluate) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*evaluate, "--split-seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: the model was trained on a split with --test-size 0.25" in err
    assert "--split-seed 3 contains training rows" in err
    assert "pass --test-size 0.25 --split-seed 0 to measure on unseen rows" in err


def test_reports_repeat_the_warnings(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    other_split = ["--model", str(model), "--data", str(data), "--split-seed", "3"]
    attack = ["attack", *other_split, "--method", "fgsm", "--eps", "0.1"]
    assert main([*attack, "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    warned = "the model was trained on a split with --test-size 0.25"
    report = (tmp_path / "a" / "robustness.md").read_text()
    assert f"- warning: {warned}" in report
    context = json.loads((tmp_path / "a" / "robustness.json").read_text())["context"]
    assert len(context["warnings"]) == 1
    assert context["warnings"][0].startswith(warned)
    saliency = ["saliency", *other_split, "--method", "vanilla", "--check-samples", "4"]
    assert main([*saliency, "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "s" / "saliency.json").read_text())
    assert [w[: len(warned)] for w in summary["warnings"]] == [warned]
    capsys.readouterr()
    # The next command starts with none.
    assert main([*attack[:3], "--method", "fgsm", "--out", str(tmp_path / "b")]) == 0
    context = json.loads((tmp_path / "b" / "robustness.json").read_text())["context"]
    assert context["warnings"] == []


def test_changed_rows_warning_names_other_read_options(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "plain.csv"
    np.savetxt(
        data, np.column_stack([rng.random((60, 3)), np.arange(60) % 3]), delimiter=","
    )
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--header", "yes"]) == 0
    err = capsys.readouterr().err
    assert (
        f"{data} was read with other options than in training (--header auto "
        "there), or has changed since: its rows differ"
    ) in err


def test_changed_rows_warning_reads_label_column_by_position(tmp_path, capsys):
    rows, data, model = _train_on_csv(tmp_path, capsys)
    rows[0, 0] += 0.5
    _write_csv(data, rows, WINE_HEADER)
    for column in ("3", "-1"):
        argv = ["evaluate", "--model", str(model), "--label-column", column]
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"{data} has changed since the model was trained on it: its rows" in err


def test_changed_rows_warning_reads_auto_as_its_choice(tmp_path, capsys):
    rows, data, model = _train_on_csv(tmp_path, capsys)
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--header", "yes", "--overwrite", "--no-progress"]) == 0
    rows[0, 0] += 0.5
    _write_csv(data, rows, WINE_HEADER)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--header", "auto"]) == 0
    err = capsys.readouterr().err
    assert f"{data} has changed since the model was trained on it: its rows" in err


def test_check_ignores_another_split(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    argv = ["check", "--model", str(model), "--data", str(data), "--split-seed", "3"]
    status = main([*argv, "--samples", "2", "--entries", "2"])
    assert status == 0
    assert "warning" not in capsys.readouterr().err


def test_split_warning_matches_data_by_content(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    digest = resgrad.read_metadata(model)["training"]["data_sha256"]
    assert digest == resgrad.data.load_data(data).digest

    # The same rows written again make another file, with the same digest.
    with np.load(data) as arrays:
        rewritten = tmp_path / "rewritten.npz"
        np.savez_compressed(rewritten, X=arrays["X"], y=arrays["y"])
    assert rewritten.read_bytes() != data.read_bytes()
    assert resgrad.data.load_data(rewritten).digest == digest

    # A renamed copy of the training data is the same data.
    copy = tmp_path / "renamed.npz"
    copy.write_bytes(data.read_bytes())
    other_split = ["--split-seed", "3"]
    evaluate = ["evaluate", "--model", str(model), *other_split]
    assert main([*evaluate, "--data", str(copy)]) == 0
    assert "warning: the model was trained on a split" in capsys.readouterr().err

    # Other data under the training file's name is not.
    other = tmp_path / "other" / data.name
    other.parent.mkdir()
    rng = np.random.default_rng(1)
    np.savez(other, X=rng.random((60, 4)), y=np.arange(60) % 3)
    assert main([*evaluate, "--data", str(other)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_split_warning_for_digits_named_or_default(tmp_path, capsys):
    model = tmp_path / "m.npz"
    train = ["train", "--data", "digits", "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "8", "--hidden", "8", "--no-progress"]) == 0
    digest = resgrad.read_metadata(model)["training"]["data_sha256"]
    assert digest == resgrad.data.load_data().digest
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--split-seed", "3"]) == 0
    assert "warning: the model was trained on a split" in capsys.readouterr().err


def test_other_classes_name_the_training_data(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys, features=64)
    # The digits have 10 classes, the model 3.
    argv = ["evaluate", "--model", str(model), "--data", "digits"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert "outside the model's 3 classes [0, 3)" in lines[0]
    assert f"trained with --data {data}, so pass that data again" in lines[0]


def test_train_warns_on_number_header(tmp_path, capsys):
    data = tmp_path / "counts.csv"
    rows = _two_class_rows()
    _write_csv(data, rows, "0,1,2,3")
    train = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    status, lines = run_cli(capsys, [*train, "--epochs", "1", "--no-progress"])
    assert status == 0
    assert lines == [
        (
            f"resgrad train: warning: {data}: the first row, 0,1,2,3, was read as "
            "column names, because its numbers are their own column indices; if it "
            "is a data row, pass --header no (header=False in Python), or add a "
            "header row of column names above it."
        )
    ]


def test_header_yes_is_recorded(tmp_path, capsys):
    data = tmp_path / "mixed.csv"
    rows = _two_class_rows()
    # A first row of numbers and text that is neither names nor data.
    _write_csv(data, rows, "a,2.5,c,label")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model)]
    train += ["--epochs", "1", "--no-progress"]
    status, lines = run_cli(capsys, train)
    assert status == 2
    assert "or pass --header yes (header=True in Python)" in lines[0]
    status, _ = run_cli(capsys, [*train, "--header", "yes"])
    assert status == 0
    assert resgrad.read_metadata(model)["training"]["header"] == "yes"
    # Later commands read the header as training did, unless --header is given.
    assert main(["evaluate", "--model", str(model)]) == 0
    assert "test samples:  10\n" in capsys.readouterr().out
    status, lines = run_cli(
        capsys, ["evaluate", "--model", str(model), "--header", "no"]
    )
    assert status == 2
    assert "field 0 (counted from 0) is 'a'" in lines[0]
    assert lines[0].endswith(
        f"{data} was read with other options than in training (--header yes "
        "there), or has changed since."
    )


def _train_with_label_first(tmp_path, capsys):
    """Train on a CSV whose first column is the label; return the data and
    model paths."""
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    rows = np.column_stack([np.arange(40) % 2, rng.random((40, 2))])
    _write_csv(data, rows, "label,a,b")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--label-column", "0", "--no-progress"]) == 0
    capsys.readouterr()
    return data, model


def test_other_label_column_named_in_error(tmp_path, capsys):
    data, model = _train_with_label_first(tmp_path, capsys)
    evaluate = ["evaluate", "--model", str(model), "--label-column", "-1"]
    status, lines = run_cli(capsys, evaluate)
    assert status == 2
    assert lines[0].endswith(
        f"--label-column -1 reads column 2 ('b') of {data} as the label, but the "
        "model was trained on a CSV with this header and column 0 ('label') as "
        "its label, so the features would shift. Pass --label-column 0, or "
        "leave it out."
    )


def test_recorded_label_column_named_in_error(tmp_path, capsys):
    data, model = _train_with_label_first(tmp_path, capsys)
    # A record past the file's columns, as a hand edit or a narrower file
    # leaves it; the command line names no column.
    metadata = resgrad.read_metadata(model)
    metadata["training"]["label_column"] = 7
    resgrad.save(resgrad.load(model), model, metadata=metadata)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert lines[0].endswith(
        f"{data} has changed since the model was trained on it, or the label "
        "column 7 that the model file records for it is wrong; pass "
        "--label-column to choose the label column."
    )
    assert main(["evaluate", "--model", str(model), "--label-column", "0"]) == 0
    capsys.readouterr()
    # With the column typed, a changed cell names the changed file alone.
    metadata["training"]["label_column"] = 0
    resgrad.save(resgrad.load(model), model, metadata=metadata)
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], "0,abc,0.5", *lines[2:]]) + "\n")
    status, lines = run_cli(
        capsys, ["evaluate", "--model", str(model), "--label-column", "0"]
    )
    assert status == 2
    assert lines[0].endswith(f"{data} has changed since the model was trained on it.")


def test_recorded_header_stays_with_the_training_file(tmp_path, capsys):
    rows = _two_class_rows()
    trained_on, other = tmp_path / "a.csv", tmp_path / "b.csv"
    _write_csv(trained_on, rows, "0,1,2,1")
    _write_csv(other, rows, "a,b,c,label")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(trained_on), "--out", str(model)]
    assert main([*train, "--header", "no", "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # The other file's header is detected, not read as data by --header no.
    assert main(["evaluate", "--model", str(model), "--data", str(other)]) == 0
    assert "test samples:  10\n" in capsys.readouterr().out


def test_header_no_reads_a_number_row_as_data(tmp_path, capsys):
    data = tmp_path / "counts.csv"
    rows = _two_class_rows()
    # A data row whose numbers happen to be their column indices.
    _write_csv(data, rows, "0,1,2,1")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--header", "no"]
    status, lines = run_cli(capsys, [*train, "--epochs", "1", "--no-progress"])
    assert (status, lines) == (0, [])
    # All 41 rows are data, where auto reads 40 under a header.
    assert resgrad.load(model).sizes[0] == 3
    assert main(["evaluate", "--model", str(model)]) == 0
    assert "test samples:  11\n" in capsys.readouterr().out


def test_header_rejected_for_digits(tmp_path, capsys):
    status, lines = run_cli(
        capsys, ["train", "--header", "yes", "--out", str(tmp_path / "m.npz")]
    )
    assert status == 2
    assert lines == [
        (
            "resgrad train: error: --header yes is only for CSV files, but the "
            "data are the digits; leave it unset."
        )
    ]


def test_train_prints_data_sizes_first(tmp_path, capsys):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, 5)), y=np.arange(60) % 3)
    train = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    assert main([*train, "--epochs", "1", "--widths", "4", "--hidden", "4"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first
        == "d: 45 train + 15 test samples, 5 features, 3 classes, inputs in [0, 1]"
    )


def test_clipping_other_data_warns(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    evaluate = ["evaluate", "--model", str(model)]
    assert main([*evaluate, "--data", str(data)]) == 0
    assert "warning" not in capsys.readouterr().err
    # Column 0 in other units: 1000 times the training values.
    with np.load(data) as archive:
        x, y = archive["X"].copy(), archive["y"]
    x[:, 0] *= 1000
    other = tmp_path / "units.npz"
    np.savez(other, X=x, y=y)
    assert main([*evaluate, "--data", str(other)]) == 0
    err = capsys.readouterr().err
    assert "warning: most values of feature(s) 0 (counted from 0)" in err
    assert "check that those columns have the units and order" in err


def test_training_record_keeps_link_names(tmp_path, capsys):
    data, _ = _train_small(tmp_path, capsys)
    link = tmp_path / "current.npz"
    link.symlink_to(data)
    model = tmp_path / "linked.npz"
    train = ["train", "--data", str(link), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "4", "--hidden", "4", "--no-progress"]) == 0
    assert resgrad.read_metadata(model)["training"]["data"] == str(link)


def test_changed_training_file_is_named(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    rng = np.random.default_rng(5)
    # Other rows of the same shape: a warning, and the command runs.
    np.savez(data, X=rng.random((60, 4)), y=np.arange(60) % 3)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 0
    assert lines == [
        (
            f"resgrad evaluate: warning: {data} has changed since the model was "
            "trained on it: its rows differ from those the model file records, so "
            "its test part may contain training rows."
        )
    ]
    # With a column fewer, the scaling error names the changed file.
    np.savez(data, X=rng.random((60, 3)), y=np.arange(60) % 3)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert lines[0].endswith(f"{data} has changed since the model was trained on it.")


WINE_HEADER = "alcohol,ash,hue,target"


def _two_class_rows():
    """Return 40 rows of 3 random features and a label of 0 or 1."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.random((40, 3)), np.arange(40) % 2])


def _write_csv(path, rows, header):
    """Write ``rows`` to the CSV file ``path`` under the line ``header``."""
    np.savetxt(path, rows, delimiter=",", header=header, comments="")


def _train_on_csv(tmp_path, capsys):
    """Train a model on 60 random rows of a CSV with WINE_HEADER; return the
    rows, the data and the model paths."""
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.random((60, 3)), np.arange(60) % 3])
    data = tmp_path / "wine.csv"
    _write_csv(data, rows, WINE_HEADER)
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "4", "--hidden", "4", "--no-progress"]) == 0
    capsys.readouterr()
    return rows, data, model


def test_changed_csv_header_named_before_width(tmp_path, capsys):
    rows, data, model = _train_on_csv(tmp_path, capsys)
    _write_csv(data, rows[:, [0, 2, 3]], "alcohol,hue,target")
    capsys.readouterr()
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert "column 1 (counted from 0) is 'hue' here and 'ash' there" in lines[0]


def test_clipping_warning_names_csv_columns(tmp_path, capsys):
    rows, _, model = _train_on_csv(tmp_path, capsys)
    rows[:, 1] *= 1000
    grams = tmp_path / "grams.csv"
    _write_csv(grams, rows, WINE_HEADER)
    assert main(["evaluate", "--model", str(model), "--data", str(grams)]) == 0
    assert "most values of feature(s) 1 (ash) (counted" in capsys.readouterr().err


def test_missing_label_file_names_both_options(tmp_path, capsys):
    from test_data import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "images.idx", rng.integers(0, 256, (40, 2, 2)))
    write_idx(tmp_path / "labels.idx", np.arange(40) % 3)
    train = ["train", "--data", str(tmp_path / "images.idx")]
    train += [
        "--labels",
        str(tmp_path / "labels.idx"),
        "--out",
        str(tmp_path / "m.npz"),
    ]
    assert main([*train, "--epochs", "1", "--no-progress"]) == 0
    (tmp_path / "labels.idx").unlink()
    status, lines = run_cli(capsys, ["evaluate", "--model", str(tmp_path / "m.npz")])
    assert status == 2
    assert lines[0].endswith("as --data and --labels.")


def test_reordered_csv_columns_are_an_error(tmp_path, capsys):
    rows, data, model = _train_on_csv(tmp_path, capsys)
    columns = resgrad.read_metadata(model)["training"]["columns"]
    assert columns == ["alcohol", "ash", "hue", "target"]

    reordered = tmp_path / "reordered.csv"
    _write_csv(reordered, rows[:, [2, 1, 0, 3]], "hue,ash,alcohol,target")
    capsys.readouterr()
    argv = ["evaluate", "--model", str(model), "--data", str(reordered)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert "column 0 (counted from 0) is 'hue' here and 'alcohol' there" in lines[0]
    # The same columns in the same order pass.
    copy = tmp_path / "copy.csv"
    copy.write_text(data.read_text())
    assert main(["evaluate", "--model", str(model), "--data", str(copy)]) == 0


def test_evaluate_defaults_to_training_data(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    evaluate = ["evaluate", "--model", str(model), "--json"]
    assert main([*evaluate, "--data", str(data)]) == 0
    explicit = json.loads(capsys.readouterr().out)
    assert explicit["model"] == str(model)
    assert explicit["data"] == str(data)
    assert explicit["test_size"] == 0.25
    assert explicit["split_seed"] == 0
    assert explicit["samples"] == 15
    assert main(evaluate) == 0
    assert json.loads(capsys.readouterr().out) == explicit


def test_evaluate_prints_loss_with_four_digits(tmp_path, monkeypatch, capsys):
    import resgrad.training

    _, model = _train_small(tmp_path, capsys)
    evaluate = resgrad.training.evaluate

    def round_loss(*args, **kwargs):
        return {**evaluate(*args, **kwargs), "loss": 0.574}

    monkeypatch.setattr(resgrad.training, "evaluate", round_loss)
    assert main(["evaluate", "--model", str(model)]) == 0
    assert "test loss:     0.5740\n" in capsys.readouterr().out


def test_evaluate_shows_training_settings(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    assert main(["evaluate", "--model", str(model), "--json"]) == 0
    training = json.loads(capsys.readouterr().out)["training"]
    assert training == resgrad.read_metadata(model)["training"]
    assert main(["evaluate", "--model", str(model)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        last == "trained with:  adam, lr 0.001, 1 of 1 epoch run, batches of 32, seed 0"
    )

    # A model saved from Python records no training.
    plain = tmp_path / "plain.npz"
    resgrad.save(resgrad.ResidualMLP.init([4, 3], seed=0), plain)
    assert main(["evaluate", "--model", str(plain), "--data", str(data)]) == 0
    assert "trained with" not in capsys.readouterr().out
    assert main(["evaluate", "--model", str(plain), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"] == {}


def test_default_digits_named_in_width_error(tmp_path, capsys):
    # A model saved from Python records no training data.
    model = tmp_path / "m.npz"
    resgrad.save(resgrad.ResidualMLP.init([13, 3], seed=0), model)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert (
        "the default data (the digits) has 64 features but the model takes 13"
        in (lines[0])
    )


def test_scaling_error_names_training_data(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(1)
    np.savez(other, X=rng.random((60, 3)), y=np.arange(60) % 3)
    argv = ["evaluate", "--model", str(model), "--data", str(other)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert (
        "other has 3 features, but the scaling of the training data covers 4"
        in lines[0]
    )
    assert lines[0].endswith(f"The model was trained with --data {data}.")


def test_missing_training_data_is_an_error(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    data.unlink()
    for command in ("evaluate", "check", "attack", "saliency"):
        status, lines = run_cli(capsys, [command, "--model", str(model)])
        assert status == 2
        assert f"trained with --data {data}, but {data} does not exist;" in lines[0]


@pytest.mark.parametrize(
    ("make", "why"), [(os.mkfifo, "is a named pipe"), (os.mkdir, "is a folder")]
)
def test_training_data_not_a_file(tmp_path, capsys, make, why):
    data, model = _train_small(tmp_path, capsys)
    data.unlink()
    make(data)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert f"trained with --data {data}, but {data} {why}; pass that" in lines[0]


def test_hint_names_absolute_training_paths(tmp_path, capsys, monkeypatch):
    from test_data import write_idx

    # IDX images and labels given as paths relative to the training folder.
    folder = tmp_path / "train"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / "images.idx", rng.integers(0, 256, (40, 2, 2)))
    write_idx(folder / "labels.idx", np.arange(40) % 3)
    monkeypatch.chdir(folder)
    train = ["train", "--data", "images.idx", "--labels", "labels.idx"]
    train += ["--out", "m.npz", "--epochs", "1", "--widths", "4", "--hidden", "4"]
    assert main([*train, "--no-progress"]) == 0
    recorded = resgrad.read_metadata(folder / "m.npz")["training"]
    assert recorded["data"] == str(folder / "images.idx")
    assert recorded["labels"] == str(folder / "labels.idx")

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--model", "train/m.npz"]) == 0
    argv = ["evaluate", "--model", "train/m.npz", "--data", "digits"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    named = f"--data {folder / 'images.idx'} --labels {folder / 'labels.idx'}"
    assert f"the model was trained with {named}, so pass that data again" in lines[0]
    # The same files, by another relative path, need no hint.
    evaluate = ["evaluate", "--model", "train/m.npz", "--data", "train/images.idx"]
    assert main([*evaluate, "--labels", "train/labels.idx"]) == 0


def test_train_rejects_named_pipe_out(tmp_path, capsys):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    argv = ["train", "--out", str(pipe), "--epochs", "1", "--overwrite"]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert f"{pipe} is a named pipe, not a regular file" in lines[0]
    assert pipe.is_fifo()
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_train_rejects_out_on_checkpoint_lock(tmp_path, capsys):
    # The lock file of the checkpoint goes when the run ends.
    out = tmp_path / "c.npz.lock"
    argv = ["train", "--out", str(out), "--checkpoint", str(tmp_path / "c.npz")]
    status, lines = run_cli(capsys, [*argv, "--epochs", "1", "--overwrite"])
    assert status == 2
    assert f"--out {out} is the lock file of --checkpoint" in lines[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("option", ["--out", "--checkpoint"])
def test_train_rejects_writing_over_data(tmp_path, capsys, option):
    data = tmp_path / "d.csv"
    rows = np.c_[np.random.default_rng(0).random((30, 4)), np.arange(30) % 3]
    np.savetxt(data, rows, delimiter=",")
    before = data.read_bytes()
    argv = ["train", "--data", str(data), "--epochs", "1", "--overwrite"]
    if option == "--checkpoint":
        argv += ["--out", str(tmp_path / "m.npz")]
    status, lines = run_cli(capsys, [*argv, option, str(data)])
    assert status == 2
    assert f"{option} {data} is the --data file" in lines[0]
    assert data.read_bytes() == before


def test_evaluate_float32_model_file(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    single = tmp_path / "m32.npz"
    resgrad.save(
        resgrad.load(model, dtype="float32"), single, resgrad.read_metadata(model)
    )
    figures = []
    for path in (model, single):
        assert (
            main(["evaluate", "--model", str(path), "--data", str(data), "--json"]) == 0
        )
        figures.append(json.loads(capsys.readouterr().out))
    assert figures[1]["accuracy"] == figures[0]["accuracy"]
    assert figures[1]["loss"] == pytest.approx(figures[0]["loss"], rel=1e-5)


def test_unwritable_out_fails_before_work(tmp_path, monkeypatch, capsys):
    # Simulate a read-only mount, where even root can make no file.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(resgrad.io.tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(
        resgrad.training, "fit", lambda *a, **k: pytest.fail("training ran")
    )
    monkeypatch.chdir(tmp_path)
    for argv, where in [
        (["train", "--out", str(tmp_path / "m.npz")], "argument --out: cannot write"),
        # The default --out, model.npz in the working folder, as well.
        (["train"], "argument --out: cannot write model.npz"),
        (["run", "--out", str(tmp_path / "run")], "Cannot write --out"),
    ]:
        status, lines = run_cli(capsys, argv)
        assert status == 2
        assert where in lines[0]
        assert "Read-only file system" in lines[0]
        assert "Pass a path in a writable folder" in lines[0]
    assert os.listdir(tmp_path) == []


def test_label_column_is_recorded_for_later_commands(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.random((90, 4)) + y[:, None]
    data = tmp_path / "first.csv"
    np.savetxt(data, np.column_stack([y, x]), delimiter=",", header="label,a,b,c,d")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "2"]
    assert main([*train, "--label-column", "0", "--widths", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert resgrad.read_metadata(model)["training"]["label_column"] == 0
    # evaluate reads the label column from the model file.
    evaluate = ["evaluate", "--model", str(model), "--data", str(data), "--json"]
    assert main(evaluate) == 0
    figures = json.loads(capsys.readouterr().out)
    assert main([*evaluate, "--label-column", "0"]) == 0
    assert json.loads(capsys.readouterr().out) == figures
    # An explicit column wins: the last column contains fractions, not labels.
    status, lines = run_cli(capsys, [*evaluate, "--label-column", "-1"])
    assert status == 2
    assert "not whole numbers" in lines[0]
    assert (
        "column 4 (counted from 0), or pick another with --label-column." in (lines[0])
    )


def test_out_folder_checks_come_before_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("a file\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.setattr(
        resgrad.training, "fit", lambda *a, **k: pytest.fail("training ran")
    )
    cases = [
        (
            ["run", "--out", str(tmp_path / "notes.txt" / "x")],
            "notes.txt is a file, not a folder",
        ),
        (
            ["depth", "--depths", "2", "--out", str(tmp_path / "notes.txt" / "x")],
            "notes.txt is a file, not a folder",
        ),
        (
            ["run", "--out", str(tmp_path / "dangling")],
            "is a symbolic link to",
        ),
        (["run", "--out", str(tmp_path / "pipe")], "pipe is a named pipe"),
        (["evaluate", "--model", str(tmp_path / "pipe")], "pipe is a named pipe"),
    ]
    for argv, message in cases:
        status, lines = run_cli(capsys, argv)
        assert status == 2
        assert message in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["dangling", "notes.txt", "pipe"]


def test_folder_outputs_never_replace_inputs(tmp_path, capsys):
    data, model = _train_small(tmp_path, capsys)
    out = tmp_path / "out"
    out.mkdir()
    inside = out / "robustness.csv"
    rows = np.load(data)
    np.savetxt(inside, np.column_stack([rows["X"], rows["y"]]), delimiter=",")
    before = inside.read_bytes()
    attack = ["attack", "--model", str(model), "--data", str(inside), "--out", str(out)]
    status, lines = run_cli(capsys, [*attack, "--overwrite", "--no-progress"])
    assert status == 2
    assert f"Writing {inside} would replace {inside}, an input" in lines[0]
    assert inside.read_bytes() == before
    # The names are checked before the attacks run, so nothing was written.
    assert os.listdir(out) == ["robustness.csv"]
    # A model file under a name that saliency writes.
    renamed = out / "saliency.json"
    renamed.write_bytes(model.read_bytes())
    saliency = ["saliency", "--model", str(renamed), "--data", str(inside)]
    status, lines = run_cli(capsys, [*saliency, "--out", str(out), "--overwrite"])
    assert status == 2
    assert f"Writing {renamed} would replace {renamed}, an input" in lines[0]
    assert renamed.read_bytes() == model.read_bytes()
    assert sorted(os.listdir(out)) == ["robustness.csv", "saliency.json"]

    run_out = tmp_path / "run"
    run_out.mkdir()
    copy = run_out / "model.npz"
    copy.write_bytes(data.read_bytes())
    argv = ["run", "--out", str(run_out), "--overwrite", "--data", str(copy)]
    status, lines = run_cli(capsys, [*argv, "--epochs", "1", "--no-progress"])
    assert status == 2
    assert "an input of this command" in lines[0]
    assert copy.read_bytes() == data.read_bytes()
    assert os.listdir(run_out) == ["model.npz"]
    # The inputs of a command are forgotten once it returns.
    assert cli_common.INPUT_FILES == []


def test_later_commands_default_to_training_split(tmp_path, capsys):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, 4)), y=np.arange(60) % 3)
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    split = ["--test-size", "0.4", "--split-seed", "7"]
    assert main([*train, *split, "--widths", "4", "--no-progress"]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--model", str(model), "--data", str(data), "--json"]
    assert main(evaluate) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert main([*evaluate, *split]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(captured.out)
    # An explicit other split still gets the warning.
    assert main([*evaluate, "--split-seed", "0"]) == 0
    assert "pass --test-size 0.4 --split-seed 7" in capsys.readouterr().err


def test_constant_features_warn_before_training(tmp_path, capsys):
    data = tmp_path / "flat.npz"
    np.savez(data, X=np.ones((30, 4)), y=np.arange(30) % 3)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    assert main([*argv, "--epochs", "1", "--hidden", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: every feature of flat is constant over the training split" in err


def test_varied_features_do_not_warn(tmp_path, capsys):
    data = tmp_path / "varied.npz"
    x = np.ones((30, 4))
    x[:, 2] = np.arange(30)
    np.savez(data, X=x, y=np.arange(30) % 3)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    assert main([*argv, "--epochs", "1", "--hidden", "4", "--no-progress"]) == 0
    assert "constant" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda meta: meta["scaling"].update(scale=0.0),
            "is damaged: its feature scaling is invalid (scaling['scale'] must be > 0)",
        ),
        (
            lambda meta: meta["training"].update(test_size=5),
            "records the test fraction 5, outside (0, 1), so the file is damaged",
        ),
        (
            # Cut to 60 characters, not the 401 digits.
            lambda meta: meta["training"].update(test_size=10**400),
            f"records the test fraction {'1' + '0' * 56}..., outside (0, 1)",
        ),
    ],
)
def test_damaged_model_file_not_blamed_on_data(tmp_path, capsys, damage, message):
    model_path = tmp_path / "m.npz"
    argv = ["train", "--out", str(model_path), "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--no-progress"]) == 0
    metadata = resgrad.io.read_metadata(model_path)
    damage(metadata)
    damaged = tmp_path / "damaged.npz"
    resgrad.save(resgrad.load(model_path), damaged, metadata=metadata)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "has changed since" not in err


def test_python_m_resgrad_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "resgrad", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resgrad ")


# Output folders.


def test_output_folder_made_by_another_command_is_refused(tmp_path):
    folder = cli_common.check_output_folder(tmp_path / "out", overwrite=False)
    (tmp_path / "out").mkdir()  # another command, still empty
    with pytest.raises(FileExistsError, match="was made or filled by another"):
        cli_common.make_output_folder(folder)
    assert (tmp_path / "out").is_dir()


def test_failed_write_removes_the_parents_it_made(tmp_path):
    out = tmp_path / "made" / "for" / "out"
    folder = cli_common.check_output_folder(out, overwrite=False)
    with (
        pytest.raises(ValueError, match="figure failed"),
        cli_common.writing_into(folder, "attack"),
    ):
        (out / "first.png").write_bytes(b"written")
        raise ValueError("figure failed")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_shared_parent(tmp_path):
    out = tmp_path / "shared" / "out"
    folder = cli_common.check_output_folder(out, overwrite=False)
    with (
        pytest.raises(ValueError, match="figure failed"),
        cli_common.writing_into(folder, "attack"),
    ):
        (tmp_path / "shared" / "other.json").write_text("{}")
        raise ValueError("figure failed")
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["other.json"]


def test_failed_write_empties_given_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    folder = cli_common.check_output_folder(out, overwrite=False)
    with pytest.raises(KeyboardInterrupt), cli_common.writing_into(folder, "attack"):
        (out / "first.png").write_bytes(b"written")
        (out / "sub").mkdir()
        raise KeyboardInterrupt
    assert out.is_dir()
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "start_line, first",
    [(True, "task: 0/5\n"), (False, "")],
    ids=["with start line", "without start line"],
)
def test_progress_lines_at_interval(start_line, first):
    stream = io.StringIO()
    # The start, then the clock after each of the 5 items, then the end.
    times = iter([0.0, 4.0, 11.0, 15.0, 25.0, 26.0, 27.0])
    items = cli_common.ProgressLines(
        "abcde",
        desc="task",
        stream=stream,
        interval=10.0,
        clock=lambda: next(times),
        start_line=start_line,
    )
    assert list(items) == list("abcde")
    assert stream.getvalue() == first + (
        "task: 2/5 after 11 s\ntask: 4/5 after 25 s\ntask: 5/5 after 27 s\n"
    )


def test_progress_lines_without_total():
    stream = io.StringIO()
    times = iter([0.0, 1.0, 2.0, 3.0])
    items = cli_common.ProgressLines(
        (n for n in range(2)), stream=stream, interval=10.0, clock=lambda: next(times)
    )
    assert list(items) == [0, 1]
    assert stream.getvalue() == "progress: 0\nprogress: 2 after 3 s\n"


def test_progress_lines_last_not_repeated():
    stream = io.StringIO()
    times = iter([0.0, 12.0])
    items = cli_common.ProgressLines(
        [1],
        desc="one",
        total=1,
        stream=stream,
        interval=10.0,
        clock=lambda: next(times),
    )
    assert list(items) == [1]
    assert stream.getvalue() == "one: 0/1\none: 1/1 after 12 s\n"


def test_progress_lines_short_loop_silent():
    stream = io.StringIO()
    times = iter([0.0, 3.0, 6.0, 9.0])
    lines = cli_common.ProgressLines(
        range(3),
        stream=stream,
        interval=10.0,
        clock=lambda: next(times),
        start_line=False,
    )
    assert list(lines) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_progress_lines_show_postfix():
    stream = io.StringIO()
    times = iter([0.0, 12.0, 24.0])
    lines = cli_common.ProgressLines(
        range(2),
        desc="train",
        stream=stream,
        interval=10.0,
        clock=lambda: next(times),
        start_line=False,
    )
    for epoch in lines:
        lines.set_postfix({"train_loss": 0.123456 / (epoch + 1)}, step=epoch)
    assert stream.getvalue() == (
        "train: 1/2 after 12 s (train_loss=0.1235, step=0)\n"
        "train: 2/2 after 24 s (train_loss=0.06173, step=1)\n"
    )


def _slow_clock(monkeypatch):
    """Make every reading of the progress clock 11 s after the last."""
    ticks = iter(range(0, 10**6, 11))
    monkeypatch.setattr(cli_common, "_clock", lambda: float(next(ticks)))


class _FullStdout(io.StringIO):
    """Standard output on a full disk."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_stdout_is_named(tmp_path, capsys, monkeypatch):
    _, model = _train_small(tmp_path, capsys)
    monkeypatch.setattr(sys, "stdout", _FullStdout())
    argv = ["evaluate", "--model", str(model), "--data", str(tmp_path / "d.npz")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "resgrad evaluate: error: [Errno 28] No space left on device: "
        "'standard output'\n"
    )
    # main puts the stream it found back.
    assert isinstance(sys.stdout, _FullStdout)


def test_train_log_epoch_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    _slow_clock(monkeypatch)
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, 4)), y=np.arange(60) % 3)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    argv += ["--epochs", "3", "--widths", "4", "--hidden", "4", "--validation", "0.2"]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    number = r"[\d.e+-]+"
    for epoch, line in enumerate(lines, start=1):
        losses = rf"\(train_loss={number}, val_loss={number}\)"
        assert re.fullmatch(rf"train: {epoch}/3 after \d+ s {losses}", line), line


def test_train_log_early_stop(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    _slow_clock(monkeypatch)
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    # Random labels: the validation loss soon stops falling.
    np.savez(data, X=rng.random((60, 4)), y=rng.integers(0, 3, 60))
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m.npz")]
    argv += ["--epochs", "200", "--validation", "0.3", "--patience", "1"]
    assert main([*argv, "--lr", "0.1", "--widths", "16", "--hidden", "16"]) == 0
    captured = capsys.readouterr()
    epochs = int(re.search(r"trained (\d+) epochs", captured.out).group(1))
    assert epochs < 200
    last = captured.err.splitlines()[-1]
    assert re.fullmatch(rf"train: {epochs}/200 after \d+ s \(.*val_loss=.*\)", last)


def test_progress_lines_format_numpy_floats():
    stream = io.StringIO()
    lines = cli_common.ProgressLines(
        [0], stream=stream, interval=0.0, clock=lambda: 0.0, start_line=False
    )
    for _ in lines:
        lines.set_postfix(loss=np.float32(0.123456), step=np.int64(3), ok=True)
    assert (
        stream.getvalue() == "progress: 1/1 after 0 s (loss=0.1235, step=3, ok=True)\n"
    )


def test_attack_all_on_one_feature(tmp_path, capsys):
    """As resgrad run does; naming jsma on one feature stays an error."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    data = tmp_path / "one.csv"
    _write_csv(data, np.column_stack([y + rng.random(60), y]), "x,label")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "4", "--hidden", "4", "--no-progress"]) == 0
    capsys.readouterr()
    attack = ["attack", "--model", str(model), "--eps", "0.1", "--no-progress"]
    assert main([*attack, "--out", str(tmp_path / "all")]) == 0
    err = capsys.readouterr().err
    assert "jsma and mjsma change features in pairs, and the data have 1 " in err
    table = json.loads((tmp_path / "all" / "robustness.json").read_text())
    methods = [row["method"] for row in table["rows"]]
    assert methods == ["fgsm", "bim", "illcm", "rfgsm", "mifgsm", "pgd", "pgd_l2"]
    argv = [*attack, "--method", "fgsm,jsma", "--out", str(tmp_path / "named")]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert "jsma changes features in pairs, and x has 1 feature" in lines[0]


def test_attack_log_lines(tmp_path, capsys, monkeypatch):
    _, model = _train_small(tmp_path, capsys)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    _slow_clock(monkeypatch)
    argv = ["attack", "--model", str(model), "--method", "fgsm,pgd", "--eps", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    # Each line names the last run, as the bar names the one it waits on.
    lines = err.splitlines()
    assert re.fullmatch(r"attacks: 1/2 after \d+ s \(fgsm eps=0.1\)", lines[0]), err
    assert re.fullmatch(r"attacks: 2/2 after \d+ s \(pgd eps=0.1\)", lines[1]), err
    # --no-progress keeps the log free of them.
    argv += ["--no-progress", "--out", str(tmp_path / "quiet")]
    assert main(argv) == 0
    assert "attacks:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "terminal, log_interval, log_start, kind",
    [
        (True, None, False, "bar"),
        (True, 10.0, True, "bar"),
        (False, None, True, "none"),
        (False, 10.0, True, "lines"),
        # A loop shorter than the interval prints no line.
        (False, 10.0, False, "none"),
    ],
)
def test_progress_bar_kind(
    monkeypatch, capsys, terminal, log_interval, log_start, kind
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    progress = cli_common.progress_bar(
        True, log_interval=log_interval, log_start=log_start
    )
    assert list(progress(range(3), desc="task", total=3)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert ("\r" in err) is (kind == "bar")
    assert ("task: 0/3\n" in err) is (kind == "lines")
    if kind == "none":
        assert err == ""


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_disabled_prints_nothing(monkeypatch, capsys, terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    progress = cli_common.progress_bar(False, log_interval=10.0)
    assert list(progress(range(3), desc="task", total=3)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_failed_overwrite_names_mixed_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    folder = cli_common.check_output_folder(out, overwrite=True)
    with (
        pytest.raises(ValueError, match="figure failed"),
        cli_common.writing_into(folder, "attack"),
    ):
        raise ValueError("figure failed")
    # Nothing was written, so the earlier files are whole.
    assert capsys.readouterr().err == ""
    with (
        pytest.raises(ValueError, match="figure failed"),
        cli_common.writing_into(folder, "attack"),
    ):
        (out / "first.png").write_bytes(b"written")
        raise ValueError("figure failed")
    assert capsys.readouterr().err == (
        f"resgrad attack: warning: {out} is incomplete, with some files of this "
        "run and some of an earlier one; run the command again to complete it\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["first.png", "report.json"]


def test_overwrite_folder_with_dangling_link(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old-link").symlink_to(tmp_path / "gone")
    folder = cli_common.check_output_folder(out, overwrite=True)
    with cli_common.writing_into(folder, "attack"):
        (out / "first.png").write_bytes(b"written")
    assert sorted(p.name for p in out.iterdir()) == ["first.png", "old-link"]
    assert capsys.readouterr().err == ""


def test_folder_files_replace_symbolic_links(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.md"
    (out / "report.md").symlink_to(outside)
    cli_common.write_atomic(out / "report.md", "# report\n")
    assert not (out / "report.md").is_symlink()
    assert (out / "report.md").read_text() == "# report\n"
    assert not outside.exists()


def test_out_through_a_missing_folder_and_dotdot(tmp_path):
    """ "results/missing/.." names results, which contains the user's files."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("keep me\n")
    out = results / "missing" / ".."
    with pytest.raises(FileExistsError, match="is not empty"):
        cli_common.check_output_folder(out, overwrite=False)
    folder = cli_common.check_output_folder(out, overwrite=True)
    assert folder.path == results.resolve()
    with pytest.raises(KeyboardInterrupt), cli_common.writing_into(folder, "attack"):
        raise KeyboardInterrupt
    assert (results / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in results.iterdir()) == ["notes.txt"]


def _race_for(out, monkeypatch):
    """Make ``out`` with a file of another command just before this one's
    mkdir of it runs."""
    real_mkdir = type(out).mkdir

    def another_command_first(self, *args, **kwargs):
        if self == out and not out.exists():
            real_mkdir(self)
            (out / "other.json").write_text("{}")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(out), "mkdir", another_command_first)


def test_failed_overwrite_keeps_folder_another_command_made(tmp_path, monkeypatch):
    out = tmp_path / "out"
    folder = cli_common.check_output_folder(out, overwrite=True)
    _race_for(out, monkeypatch)
    with (
        pytest.raises(ValueError, match="figure failed"),
        cli_common.writing_into(folder, "attack"),
    ):
        raise ValueError("figure failed")
    assert (out / "other.json").read_text() == "{}"


def test_folder_made_meanwhile_is_left_to_its_command(tmp_path, monkeypatch):
    out = tmp_path / "new" / "out"
    folder = cli_common.check_output_folder(out, overwrite=False)
    _race_for(out, monkeypatch)
    with pytest.raises(FileExistsError, match="made or filled by another"):
        cli_common.make_output_folder(folder)
    assert (out / "other.json").read_text() == "{}"


def test_second_command_on_one_empty_folder_removes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # Both commands check the empty folder before either writes.
    first = cli_common.check_output_folder(out, overwrite=False)
    second = cli_common.check_output_folder(out, overwrite=False)
    with cli_common.writing_into(first, "attack"):
        with (
            pytest.raises(FileExistsError, match="in use by another resgrad command"),
            cli_common.writing_into(second, "saliency"),
        ):
            raise ValueError("the second command failed")
        (out / "first.png").write_bytes(b"first")
    assert [path.name for path in out.iterdir()] == ["first.png"]
    # The lock ends with the block, so a later command may write again.
    again = cli_common.check_output_folder(out, overwrite=True)
    with cli_common.writing_into(again, "saliency"):
        (out / "second.json").write_text("{}")
    assert sorted(path.name for path in out.iterdir()) == ["first.png", "second.json"]


def test_folder_filled_before_its_lock_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    folder = cli_common.check_output_folder(out, overwrite=False)
    lock_folder = _lock.lock_folder

    def another_command_writes_first(path, label):
        (out / "other.json").write_text("{}")
        return lock_folder(path, label)

    monkeypatch.setattr(_lock, "lock_folder", another_command_writes_first)
    with (
        pytest.raises(FileExistsError, match="was filled by another command"),
        cli_common.writing_into(folder, "attack"),
    ):
        pass
    assert [path.name for path in out.iterdir()] == ["other.json"]
    # The refused command released its lock.
    monkeypatch.undo()
    _lock.unlock_folder(_lock.lock_folder(out, "--out"))


def test_failed_check_under_the_lock_releases_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    folder = cli_common.check_output_folder(out, overwrite=False)
    iterdir = type(out).iterdir
    calls = []

    def interrupted(self):
        # The first listing is make_output_folder's, before the lock.
        if self == out:
            calls.append(self)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return iterdir(self)

    monkeypatch.setattr(type(out), "iterdir", interrupted)
    with pytest.raises(KeyboardInterrupt), cli_common.writing_into(folder, "attack"):
        pass
    monkeypatch.undo()
    # Released: this process can take the lock again.
    _lock.unlock_folder(_lock.lock_folder(out, "--out"))


def test_interrupt_before_the_lock_removes_the_folders_made(tmp_path, monkeypatch):
    out = tmp_path / "made" / "out"
    folder = cli_common.check_output_folder(out, overwrite=False)

    def interrupted(path, label):
        raise KeyboardInterrupt

    monkeypatch.setattr(_lock, "lock_folder", interrupted)
    with pytest.raises(KeyboardInterrupt), cli_common.writing_into(folder, "attack"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_folder_without_read_permission_is_written_unlocked(tmp_path, monkeypatch):
    out = tmp_path / "out"
    folder = cli_common.check_output_folder(out, overwrite=False)

    def unreadable(path, flags, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_lock.os, "open", unreadable)
    with cli_common.writing_into(folder, "attack"):
        (out / "first.png").write_bytes(b"first")
    assert [path.name for path in out.iterdir()] == ["first.png"]


def test_moved_label_column_with_same_features_passes(tmp_path, capsys):
    rows, _, model = _train_on_csv(tmp_path, capsys)
    first = tmp_path / "label_first.csv"
    _write_csv(first, rows[:, [3, 0, 1, 2]], "target,alcohol,ash,hue")
    argv = ["evaluate", "--model", str(model), "--data", str(first)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert lines[0].endswith(
        "has the features the model was trained on, in their order, once "
        "column 0 ('target') is taken as the label: pass --label-column 0."
    )
    assert main([*argv, "--label-column", "0"]) == 0
    assert "test accuracy:" in capsys.readouterr().out
    # Features in another order have no such column to name.
    swapped = tmp_path / "swapped.csv"
    _write_csv(swapped, rows[:, [3, 1, 0, 2]], "target,ash,alcohol,hue")
    argv = ["evaluate", "--model", str(model), "--data", str(swapped)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert "and --label-column where the label column moved" in lines[0]


def test_moved_label_with_repeated_names(tmp_path, capsys):
    """Dropping any of three columns named 'a' leaves the recorded features,
    so no single --label-column can be named."""
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.random((60, 3)), np.arange(60) % 3])
    trained = tmp_path / "dup.csv"
    _write_csv(trained, rows, "a,a,b,label")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(trained), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--widths", "4", "--hidden", "4", "--no-progress"]) == 0
    capsys.readouterr()
    moved = tmp_path / "moved.csv"
    _write_csv(moved, rows[:, [0, 1, 3, 2]], "a,a,a,b")
    argv = ["evaluate", "--model", str(model), "--data", str(moved)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert lines[0].endswith(
        "once one of columns 0, 1, 2 (all named 'a') is taken as the label: pass "
        "--label-column with the one that contains the labels."
    )
    assert main([*argv, "--label-column", "2"]) == 0


@pytest.mark.parametrize("command", ["evaluate", "attack"])
def test_label_column_moved_onto_a_feature_refused(tmp_path, capsys, command):
    _, data, model = _train_on_csv(tmp_path, capsys)
    argv = [command, "--model", str(model), "--data", str(data)]
    status, lines = run_cli(capsys, [*argv, "--label-column", "0"])
    assert status == 2
    assert lines[0].endswith(
        f"--label-column 0 reads column 0 ('alcohol') of {data} as the label, "
        "but the model was trained on a CSV with this header and column 3 "
        "('target') as its label, so the features would shift. Pass "
        "--label-column 3, or leave it out."
    )
    if command == "evaluate":
        assert main([*argv, "--label-column", "-1"]) == 0


def test_label_column_onto_a_twin_name_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "twins.csv"
    rows = np.column_stack([rng.random((60, 2)), np.arange(60) % 2, np.arange(60) % 3])
    _write_csv(data, rows, "a,b,y,y")
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--epochs", "1"]
    assert main([*train, "--label-column", "3", "--no-progress"]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--model", str(model), "--label-column"]
    status, lines = run_cli(capsys, [*evaluate, "2"])
    assert status == 2
    assert "--label-column 2 reads column 2 ('y')" in lines[0]
    assert main([*evaluate, "-1"]) == 0


def test_train_warns_of_small_parts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(15), np.ones(15), [2, 3]]
    data = tmp_path / "single.csv"
    _write_csv(data, np.column_stack([rng.random((32, 2)), labels]), "a,b,label")
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "classes 2, 3 have a single row each, which the split keeps" in err
    assert "--test-size" not in err
    assert main([*argv, "--test-size", "0.8", "--overwrite", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--test-size 0.8 leaves 8 of 32 rows to train on;" in err


def test_test_size_warning_larger_part(tmp_path, capsys):
    """Ten classes of two rows put one row of each in the test part: 10 of
    20 rows, five times the 0.1 asked for."""
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs.csv"
    rows = np.column_stack([rng.random((20, 3)), np.repeat(np.arange(10), 2)])
    _write_csv(data, rows, "a,b,c,label")
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--test-size", "0.1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--test-size 0.1 gave a test part of 10 of 20 rows (0.5): the split" in err
    assert main([*argv, "--test-size", "0.5", "--overwrite", "--no-progress"]) == 0
    assert "gave a test part" not in capsys.readouterr().err


def test_test_size_warning_smaller_part(tmp_path, capsys):
    """Fourteen classes of one row stay in the training part, so a class of
    six rows gives the test part 3 of 20 rows at --test-size 0.4."""
    rng = np.random.default_rng(0)
    data = tmp_path / "singles.csv"
    labels = np.r_[np.arange(14), np.full(6, 14)]
    _write_csv(data, np.column_stack([rng.random((20, 2)), labels]), "a,b,label")
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--test-size", "0.4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (
        "--test-size 0.4 gave a test part of 3 of 20 rows (0.15): the split puts "
        "a row of every class of two or more rows in each part and keeps a class "
        "of one row for training, whatever the fraction asked for."
    ) in err


def test_train_warns_when_validation_is_most_rows(tmp_path, capsys):
    out = tmp_path / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--validation", "0.9"]) == 0
    captured = capsys.readouterr()
    assert "--validation 0.9 holds out more of the training part than it" in (
        captured.err
    )
    # The count of fit's stratified split, which the training line confirms.
    assert "134 of 1347 rows left to train" in captured.err
    assert "1213 validation samples held out" in captured.out
    assert main([*argv, "--validation", "0.1", "--overwrite"]) == 0
    assert "holds out" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "skip, sections",
    [
        ("", ["attack", "saliency", "depth"]),
        ("Depth, ATTACK", ["saliency"]),
        ("depth,depth", ["attack", "saliency"]),
        ("all", []),
    ],
)
def test_run_skip_names(skip, sections):
    from resgrad.cli.run import _sections_to_run

    assert _sections_to_run(skip) == sections


@pytest.mark.parametrize(
    "text, methods",
    [
        ("Vanilla", ["vanilla"]),
        ("jsma, SmoothGrad,jsma", ["jsma", "smoothgrad"]),
    ],
)
def test_saliency_method_names(text, methods):
    from resgrad.cli.saliency import parse_methods

    assert parse_methods(text) == methods


@pytest.mark.parametrize(
    "command, options, option",
    [
        ("saliency", ["--method", "vanilla", "--index", "0"], "--check-samples"),
        ("check", [], "--samples"),
    ],
)
def test_default_counts_beyond_test_split_are_quiet(
    command, options, option, files, tmp_path, capsys
):
    # 6 test samples: fewer than the defaults of saliency's --check-samples
    # (32) and check's --samples (8), which warn only when typed.
    rng = np.random.default_rng(0)
    data = tmp_path / "small.npz"
    np.savez(data, X=rng.uniform(size=(12, 64)), y=np.arange(12) % 3)
    argv = [command, "--model", str(files / "model.npz"), "--data", str(data)]
    argv += ["--test-size", "0.5", *options]
    outputs = iter(["--out", str(tmp_path / name), "--no-progress"] for name in "ab")

    def output():
        return next(outputs) if command == "saliency" else []

    assert main([*argv, *output()]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*argv, *output(), option, "12"]) == 0
    warning = f"{option} 12 is more than the 6 test samples; checking all 6"
    assert warning in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, options, message",
    [
        (
            "attack",
            ["--method", "fgsm", "--eps", "0.1", "--limit", "100"],
            "--limit 100 is more than the 10 test samples; attacking all 10",
        ),
        (
            "saliency",
            ["--method", "vanilla", "--index", "0", "--check-samples", "100"],
            "--check-samples 100 is more than the 10 test samples; checking all 10",
        ),
    ],
)
def test_counts_beyond_test_split_warn(
    command, options, message, files, tmp_path, capsys
):
    rng = np.random.default_rng(0)
    data = tmp_path / "small.npz"
    np.savez(data, X=rng.uniform(size=(20, 64)), y=np.arange(20) % 10)
    model = str(files / "model.npz")
    argv = [command, "--model", model, "--data", str(data), *options]
    status = main([*argv, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 0
    assert f"resgrad {command}: warning: {message}" in err


def test_train_makes_missing_folders_of_out(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "model.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    assert resgrad.load(out).sizes[0] == 64
    assert sorted(path.name for path in out.parent.iterdir()) == ["model.npz"]


def test_train_failure_removes_folders_it_made(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "model.npz"
    argv = ["train", "--widths", "8", "--hidden", "8,8,8", "--out", str(out)]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert "--hidden 8,8,8 gives 3 hidden widths" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "training, message",
    [
        ("nonsense", "has an invalid training record, 'nonsense', where a dict"),
        ({"data": 5}, "invalid training record: data is 5, where str or null"),
        ({"test_size": True}, "test_size is True, where int or float was expected"),
        ({"columns": ["a", 3]}, "columns is ['a', 3], where a list of str or null"),
        (
            {"data": "a\0b.csv"},
            "data is 'a\\x00b.csv', where a path of a file or null was",
        ),
        ({"labels": ""}, "labels is '', where a path of a file or null was expected"),
        (
            {"header": "maybe"},
            "header is 'maybe', where 'auto', 'yes', 'no' or null was expected",
        ),
    ],
)
def test_invalid_training_record_is_named(training, message, tmp_path, capsys):
    model = tmp_path / "m.npz"
    resgrad.save(
        resgrad.ResidualMLP.init([64, 10], seed=0), model, {"training": training}
    )
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert len(lines) == 1
    assert message in lines[0]
    assert lines[0].endswith("or with the record that resgrad train writes.")


@pytest.mark.parametrize(
    "training, shown",
    [
        ({"optimizer": "adam"}, "trained with:  adam"),
        ({"optimizer": "adam", "lr": None, "epochs": "x"}, "trained with:  adam"),
        ({"lr": 0.5, "seed": 3}, "trained with:  lr 0.5, seed 3"),
        (
            {"optimizer": "sgd", "lr": -1, "epochs": -5, "batch_size": 2.5, "seed": -1},
            "trained with:  sgd",
        ),
        ({"optimizer": "sgd", "epochs": 1e300}, "trained with:  sgd"),
        ({"optimizer": "sgd", "lr": 10**400, "epochs": 10**400}, "trained with:  sgd"),
        ({}, None),
    ],
)
def test_evaluate_shows_partial_training_settings(training, shown, tmp_path, capsys):
    model = tmp_path / "m.npz"
    resgrad.save(
        resgrad.ResidualMLP.init([64, 10], seed=0), model, {"training": training}
    )
    assert main(["evaluate", "--model", str(model)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    if shown is None:
        assert last.startswith("test accuracy: ")
    else:
        assert last == shown


@pytest.mark.parametrize(
    ("run", "shown"), [(4, "4 of 10 epochs run"), (-3, "10 epochs"), (12, "10 epochs")]
)
def test_evaluate_checks_epochs_run(run, shown, tmp_path, capsys):
    model = tmp_path / "m.npz"
    metadata = {"training": {"epochs": 10}, "epochs_run": run}
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model, metadata)
    assert main(["evaluate", "--model", str(model)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"trained with:  {shown}"


@pytest.mark.parametrize(
    ("validation", "best", "shown"),
    [
        (
            0.1,
            2,
            (
                "4 of 10 epochs run, validation split 0.1, weights of epoch 2 "
                "(lowest validation loss)"
            ),
        ),
        (0.0, 2, "4 of 10 epochs run"),
        (0.1, 0, "4 of 10 epochs run"),
        (0.1, 7, "4 of 10 epochs run"),
        (0.1, True, "4 of 10 epochs run"),
        ("0.1", 2, "4 of 10 epochs run"),
    ],
)
def test_evaluate_shows_kept_epoch(validation, best, shown, tmp_path, capsys):
    model = tmp_path / "m.npz"
    training = {"epochs": 10, "validation": validation}
    metadata = {"training": training, "epochs_run": 4, "best_epoch": best}
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model, metadata)
    assert main(["evaluate", "--model", str(model)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"trained with:  {shown}"


def test_evaluate_reports_early_stopping(tmp_path, capsys):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.random((60, 4)), y=np.arange(60) % 3)
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(data), "--out", str(model), "--no-progress"]
    train += ["--widths", "4", "--hidden", "4", "--epochs", "30", "--lr", "0.5"]
    assert main([*train, "--validation", "0.2", "--patience", "2"]) == 0
    metadata = resgrad.read_metadata(model)
    best, run = metadata["best_epoch"], metadata["epochs_run"]
    assert 1 <= best < run < 30
    out = capsys.readouterr().out
    assert f"kept epoch {best}," in out
    assert main(["evaluate", "--model", str(model)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        f"{run} of 30 epochs run, validation split 0.2, weights of epoch {best} "
        in last
    )
    assert main(["evaluate", "--model", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["epochs_run"], report["best_epoch"]) == (run, best)


@pytest.mark.parametrize(
    ("run", "best", "shown"), [(4, 7, None), (4, 2, 2), (4, -1, None)]
)
def test_evaluate_json_checks_best_epoch(run, best, shown, tmp_path, capsys):
    model = tmp_path / "m.npz"
    metadata = {"training": {"epochs": 10}, "epochs_run": run, "best_epoch": best}
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model, metadata)
    assert main(["evaluate", "--model", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best_epoch"] == shown


@pytest.mark.parametrize("command", ["evaluate", "check", "attack", "saliency"])
def test_model_replaced_while_read_keeps_its_own_metadata(
    command, tmp_path, monkeypatch, capsys
):
    """A model file replaced after its weights are read, as train
    --overwrite replaces one, must not lend the command the metadata of
    the new file."""
    model = tmp_path / "m.npz"
    network = resgrad.ResidualMLP.init([64, 10], seed=0)
    resgrad.save(network, model, {"training": {"test_size": 0.25}, "epochs_run": 3})
    other = tmp_path / "other.npz"
    resgrad.save(network, other, {"training": {"test_size": 0.5}, "epochs_run": 7})
    build = resgrad.io._build_model

    def build_then_replace(*args):
        built = build(*args)
        if other.exists():
            os.replace(other, model)
        return built

    monkeypatch.setattr(resgrad.io, "_build_model", build_then_replace)
    seen = []
    original = cli_common.load_dataset

    def spy(args, *rest):
        data = original(args, *rest)
        seen.append(args.test_size)
        return data

    monkeypatch.setattr(cli_common, "load_dataset", spy)
    for module in ("evaluate", "check", "attack", "saliency"):
        monkeypatch.setattr(
            importlib.import_module(f"resgrad.cli.{module}"), "load_dataset", spy
        )
    argv = [command, "--model", str(model)]
    if command == "evaluate":
        argv.append("--json")
    elif command == "attack":
        argv += ["--method", "fgsm", "--eps", "0.1", "--limit", "2"]
    elif command == "saliency":
        argv += ["--method", "vanilla", "--index", "0", "--classes", "0"]
    if command in ("attack", "saliency"):
        argv += ["--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert not other.exists()
    # The test split that the first file records, not the one of the second.
    assert seen == [0.25]
    if command == "evaluate":
        assert json.loads(capsys.readouterr().out)["epochs_run"] == 3


def test_model_file_text_printed_escaped(tmp_path, capsys):
    """A recorded optimizer or data path with an escape sequence, which
    would clear the screen, is printed with the sequence spelled out."""
    model = tmp_path / "m.npz"
    training = {"optimizer": "adam\x1b[2J", "epochs": 3}
    resgrad.save(
        resgrad.ResidualMLP.init([64, 10], seed=0), model, {"training": training}
    )
    assert main(["evaluate", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.splitlines()[-1] == "trained with:  adam\\x1b[2J, 3 epochs"
    training = {"data": str(tmp_path / "gone\x1b[2J\u202e.csv")}
    resgrad.save(
        resgrad.ResidualMLP.init([64, 10], seed=0), model, {"training": training}
    )
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert "\x1b" not in lines[0]
    assert "\u202e" not in lines[0]
    assert "gone\\x1b[2J\\u202e.csv" in lines[0]


def test_recorded_labels_beside_csv_rejected(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.random((40, 4)), np.arange(40) % 2])
    np.savetxt(data, rows, delimiter=",")
    model = tmp_path / "m.npz"
    training = {"data": str(data), "labels": str(data)}
    resgrad.save(
        resgrad.ResidualMLP.init([4, 2], seed=0), model, {"training": training}
    )
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    expected = (
        f"resgrad evaluate: error: The model file {model} records --labels {data} "
        f"beside --data {data}, a csv file that contains its own labels, so the model "
        f"file is damaged; pass --data {data} alone, or train the model again."
    )
    assert lines == [expected]


def test_one_entry_tabular_scaling_rejected(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    np.savetxt(
        data, np.column_stack([rng.random((40, 4)), np.arange(40) % 2]), delimiter=","
    )
    model = tmp_path / "m.npz"
    metadata = {
        "training": {"data": str(data)},
        "scaling": {"offset": [0.0], "scale": [1.0]},
    }
    resgrad.save(resgrad.ResidualMLP.init([4, 2], seed=0), model, metadata)
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    expected = (
        f"resgrad evaluate: error: The model file {model} is damaged: its feature "
        f"scaling offset has one entry for the 4 features of {data}, the data it "
        "was trained on, which are not images and take one entry each; train the "
        "model again."
    )
    assert lines == [expected]


def test_image_model_evaluates_flattened_images(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.random((80, 3, 3)) * 5
    labels = np.arange(80) % 2
    np.savez(tmp_path / "img.npz", X=images, y=labels)
    np.savez(tmp_path / "flat.npz", X=images.reshape(80, 9), y=labels)
    model = tmp_path / "m.npz"
    train = ["train", "--data", str(tmp_path / "img.npz"), "--out", str(model)]
    assert main([*train, "--epochs", "2", "--widths", "4", "--no-progress"]) == 0
    # One entry scales all pixels of the images.
    assert len(resgrad.read_metadata(model)["scaling"]["scale"]) == 1
    accuracies = []
    for data in ("img.npz", "flat.npz"):
        assert (
            main(["evaluate", "--model", str(model), "--data", str(tmp_path / data)])
            == 0
        )
        accuracies.append(
            capsys.readouterr().out.split("test accuracy: ")[1].split()[0]
        )
    assert accuracies[0] == accuracies[1]


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "label_column=9 (--label-column on the command line) is outside",
            "--label-column 9 is outside",
        ),
        ("labels= (--labels on the command line) is only", "--labels is only"),
        (
            "of header=True (--header yes on the command line), though",
            "of --header yes, though",
        ),
        ("steps=5000 (--steps on the command line) is", "--steps 5000 is"),
        (
            "or None (--validation 0 on the command line).",
            "or None (--validation 0 on the command line).",
        ),
    ],
)
def test_library_keywords_become_options(message, expected):
    assert cli_common.as_options(message) == expected


def test_escaped_output_counts_the_characters_given():
    stream = io.StringIO()
    named = resgrad.cli._NamedStdout(stream)
    assert named.write("a\x1b") == 2
    assert stream.getvalue() == "a\\x1b"


def test_evaluate_skips_non_finite_settings(tmp_path, monkeypatch, capsys):
    # save writes no NaN or infinity, but JSON read from an edited file may
    # hold them.
    model = tmp_path / "m.npz"
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model)
    training = {"optimizer": "adam", "epochs": math.inf, "lr": math.nan}
    loaded = resgrad.io.load_with_metadata(model)[0]
    monkeypatch.setattr(
        resgrad.io,
        "load_with_metadata",
        lambda path: (loaded, {"training": training}),
    )
    assert main(["evaluate", "--model", str(model)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "trained with:  adam"
    assert main(["evaluate", "--model", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert report["training"] == {"optimizer": "adam", "epochs": None, "lr": None}


@pytest.mark.parametrize("data", [[], ["--data", "digits"]])
@pytest.mark.parametrize("option", [["--label-column", "3"], ["--header", "yes"]])
def test_evaluate_digits_with_csv_option(data, option, tmp_path, capsys):
    """A CSV option given for the digits is refused with the loader's own
    words, which no note on changed files follows."""
    model = tmp_path / "m.npz"
    metadata = {"training": {"data": "digits"}}
    resgrad.save(resgrad.ResidualMLP.init([64, 10], seed=0), model, metadata)
    argv = ["evaluate", "--model", str(model), *data, *option]
    status, lines = run_cli(capsys, argv)
    assert status == 2
    assert len(lines) == 1, lines
    assert option[0] in lines[0]
    assert "None" not in lines[0]
    assert "other options than in training" not in lines[0]
    assert "has changed since" not in lines[0]


def test_misspelt_option_note_is_per_call(capsys):
    """The note names the options of its own command line only."""
    assert main(["evaluate", "--mdoel", "m.npz"]) == 2
    assert "--mdoel is not an option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        resgrad.cli.build_parser().parse_args(["check"])
    err = capsys.readouterr().err
    assert "required: --model" in err
    assert "--mdoel" not in err


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_permission_error_names_a_fix(code, files, monkeypatch, capsys):
    """The system's message for a file the user may not read names no fix.
    (Tests that run as root can read any file, so the error is raised.) An
    operation not permitted seldom comes from a file's mode."""

    def unreadable(path, *args, **kwargs):
        raise PermissionError(code, os.strerror(code), str(path))

    monkeypatch.setattr(resgrad.io, "load_with_metadata", unreadable)
    model = files / "model.npz"
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    system = f"resgrad evaluate: error: [Errno {code}] {os.strerror(code)}: '{model}'"
    advice = (
        "; give your user access to that path (for example with chmod), or pass "
        "another path"
    )
    assert lines == [system + advice if code == errno.EACCES else system]


@pytest.mark.parametrize(
    "seed, printed",
    [(-3, "-3"), (2**63, str(2**63)), (10**400, "1" + "0" * 56 + "...")],
)
def test_evaluate_names_damaged_split_seed(seed, printed, tmp_path, capsys):
    # --split-seed takes 0 to 2**63 - 1, the seeds a model file records.
    model = tmp_path / "m.npz"
    resgrad.save(
        resgrad.ResidualMLP.init([64, 10], seed=0),
        model,
        {"training": {"split_seed": seed}},
    )
    status, lines = run_cli(capsys, ["evaluate", "--model", str(model)])
    assert status == 2
    assert lines[-1].endswith(
        f"{model} records the split seed {printed}, outside 0 to 2**63 - 1, so "
        "the file is damaged; pass --split-seed, or train the model again."
    )
    assert "has changed" not in lines[-1]


@pytest.mark.parametrize("checkpoint_folder", ["new", "checkpoints"])
def test_train_interrupt_keeps_only_checkpoint_folder(
    checkpoint_folder, tmp_path, monkeypatch, capsys
):
    """The folders made for --out and --checkpoint stay only where the
    checkpoint of the interrupted run is."""
    import resgrad.cli.train as train_cli
    from resgrad.io import save_checkpoint

    out = tmp_path / "new" / "model.npz"
    checkpoint = tmp_path / checkpoint_folder / "run.npz"

    def interrupted_training(args, data, progress):
        save_checkpoint(checkpoint, {"history": [{"loss": 1.0}]}, {})
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train_model", interrupted_training)
    argv = ["train", "--out", str(out), "--checkpoint", str(checkpoint)]
    assert main([*argv, "--epochs", "3", "--no-progress"]) == 130
    assert [path.name for path in tmp_path.iterdir()] == [checkpoint_folder]
    assert [path.name for path in checkpoint.parent.iterdir()] == ["run.npz"]


def test_train_success_removes_checkpoint_folder(tmp_path, capsys):
    out = tmp_path / "models" / "model.npz"
    checkpoint = tmp_path / "checkpoints" / "run.npz"
    argv = ["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models"]
    assert out.is_file()
