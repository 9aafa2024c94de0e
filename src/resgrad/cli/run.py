"""``resgrad run``: the main job, from data to a report.

It trains a residual network on the data (the digits set by default),
reports the test accuracy, checks the five equations of Theorem 1 on the
trained model, and writes a run folder: the model, ``metrics.json``, a
Markdown report and its figures. Each later section (attacks, saliency,
the depth study) comes from the ``report_section`` function of its
subcommand's module.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .._arrays import parse_names
from .._lock import unlock_folder
from ..io import json_text
from ._common import (
    WARNINGS,
    OutputFolder,
    RunContext,
    Section,
    Typed,
    add_data_arguments,
    add_overwrite_argument,
    check_figures_installed,
    check_output_file,
    check_output_folder,
    file_times,
    folder_path,
    load_dataset,
    lock_output_folder,
    make_output_folder,
    plural,
    positive_int,
    progress_bar,
    pyplot,
    remove_output_folder,
    report_incomplete,
    typed_options,
    write_atomic,
    write_figure,
)
from .check import AGREEMENT
from .check import verdict as check_verdict
from .train import (
    add_model_arguments,
    check_patience,
    hidden_widths,
    train_model,
    training_metadata,
)

SECTIONS = ("attack", "saliency", "depth")
OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam"}
INIT_NAMES = {"he": "He", "glorot": "Glorot", "orthogonal": "orthogonal"}
# Entries per equation that the Theorem 1 check compares with central
# differences. Each costs two forward passes on the check samples.
CHECK_ENTRIES = 40


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train on a data set (default: the digits), check Theorem 1, attack "
        "the model, draw saliency maps, run the depth study and write a report",
        description="Train a residual network by the explicit gradients, check "
        "Theorem 1 on it, evaluate attacks, saliency maps and the depth study, "
        "and write everything to a run folder.",
    )
    parser.add_argument(
        "--out",
        type=folder_path,
        default=None,
        help="the run folder to write (default: runs/<date>-<time>, with -2, "
        "-3 and so on added for runs started in the same second); it must be "
        "absent or empty, unless --overwrite is given, and is made once the "
        "training ends; a run stopped after that leaves INCOMPLETE.txt in it",
    )
    add_overwrite_argument(parser)
    add_data_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--check-samples",
        type=positive_int,
        default=8,
        action=Typed,
        help="test samples for the Theorem 1 check (default: 8)",
    )
    parser.add_argument(
        "--skip",
        default="",
        metavar="NAMES",
        help=f"comma-separated sections to leave out, out of {','.join(SECTIONS)}, "
        "or all; a repeated one counts once (default: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run_main)


def _run_folder(args: argparse.Namespace, base: Path) -> OutputFolder:
    """Return the run folder after checking it: ``--out``, or the first of
    ``_numbered(base)`` that is free. ``run_main`` makes it once the
    training ends."""
    out = args.out
    if out is None:
        out = next(path for path in _numbered(base) if not path.exists())
    return check_output_folder(out, args.overwrite)


def _numbered(base: Path) -> Iterator[Path]:
    """Yield ``base``, then ``<base>-2``, ``<base>-3`` and so on."""
    yield base
    for suffix in itertools.count(2):
        yield base.parent / f"{base.name}-{suffix}"


def _sections_to_run(skip: str) -> list[str]:
    names = parse_names(skip, "--skip", SECTIONS) if skip.strip() else []
    return [name for name in SECTIONS if name not in names]


def run_main(args: argparse.Namespace) -> int:
    from ..training import evaluate

    sections_wanted = _sections_to_run(args.skip)
    hidden_widths(args)
    check_patience(args)
    check_figures_installed()
    started = time.perf_counter()
    cpu_started = time.process_time()
    base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = _run_folder(args, base)
    data = load_dataset(args)
    names = ["model.npz", "report.md", "metrics.json", "training.png"]
    names.append(INCOMPLETE_NAME)
    for section in sections_wanted:
        names += importlib.import_module(f"{__package__}.{section}").SECTION_FILES
    for name in names:
        check_output_file(folder.path / name)
    # As resgrad train does, so that a wrong data file or label column shows
    # before the training time is spent.
    print(data.summary(), flush=True)

    progress = progress_bar(not args.no_progress)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    result = train_model(args, data, progress)
    timings["train"] = time.perf_counter() - tick
    figures = evaluate(result.model, data.x_test, data.y_test)
    print(
        f"trained {plural(len(result.history), 'epoch')} in "
        f"{timings['train']:.1f} s; test accuracy {figures['accuracy']:.4f}"
    )

    # The folder is made only now, so that an interrupted training leaves
    # none behind.
    if args.out is None:
        out, made = _reserve(base)
        folder = OutputFolder(out, overwrite=False, absent=True)
    else:
        out, made = folder.path, make_output_folder(folder)
    lock = lock_output_folder(folder, made)
    try:
        earlier = file_times(out)
        trained = (result, figures, timings, progress)
        try:
            clocks = (started, cpu_started)
            return _write_run(args, data, out, trained, sections_wanted, clocks)
        except BaseException as error:
            if file_times(out) == earlier:
                # Nothing written.
                remove_output_folder(out, made)
                raise
            quoted = shlex.quote(str(out))
            note = f"{out} is incomplete; pass --out {quoted} --overwrite to reuse it"
            _mark_incomplete(out, error, quoted)
            report_incomplete(error, "run", note)
            raise
    finally:
        unlock_folder(lock)


# The file that marks a run folder whose run stopped after writing into it.
INCOMPLETE_NAME = "INCOMPLETE.txt"


def _mark_incomplete(out: Path, error: BaseException, quoted: str) -> None:
    """Leave ``INCOMPLETE_NAME`` in ``out``, which the run stopped by
    ``error`` left half written; a successful run removes it."""
    if isinstance(error, KeyboardInterrupt):
        # The console turns SIGTERM into an interrupt and sets this flag.
        terminated = getattr(sys.modules[__package__], "_terminated", False)
        cause = "it was terminated (SIGTERM)" if terminated else "it was interrupted"
    else:
        # The message ends the sentence, which may end in a period already.
        cause = f"of {type(error).__name__}: {str(error).rstrip('.')}"
    text = (
        f"This run stopped before it finished, because {cause}.\n"
        "The files here are those written before it stopped. model.npz, if\n"
        "present, is the trained network, which resgrad check, attack and\n"
        "saliency take with --model. To complete the folder, run the same\n"
        f"command with --out {quoted} --overwrite.\n"
    )
    # The error that stopped the run matters more than a failed note.
    with contextlib.suppress(OSError):
        write_atomic(out / INCOMPLETE_NAME, text)


def _reserve(base: Path) -> tuple[Path, list[Path]]:
    """Make the first free folder of ``_numbered(base)``, testing and making
    in one step so that two runs started in the same second never share a
    folder. Return it and the folders made, from the highest down."""
    made = make_output_folder(OutputFolder(base.parent, True, absent=False))
    for out in _numbered(base):
        with contextlib.suppress(FileExistsError):
            out.mkdir()
            return out, [*made, out]


def _write_run(args, data, out, trained, sections_wanted, clocks) -> int:
    """Check Theorem 1 on the trained model, run the sections and write
    the run folder ``out``."""
    from ..io import save
    from .check import check_on_test_split

    result, figures, timings, progress = trained
    started, cpu_started = clocks
    png_times = file_times(out, "*.png")
    save(
        result.model,
        out / "model.npz",
        metadata=training_metadata(args, result, figures["accuracy"], data),
    )

    tick = time.perf_counter()
    report = check_on_test_split(
        result.model,
        data,
        args.check_samples,
        entries=CHECK_ENTRIES,
        seed=args.seed,
        command="run",
        option="--check-samples",
        typed=bool(typed_options(args, ["check_samples"])),
    )
    timings["check"] = time.perf_counter() - tick
    # The worst row for its own tolerance, printed with it: the tolerances
    # against backpropagation and against finite differences differ by
    # orders of magnitude, so an error alone reads against the wrong one.
    worst = max(report.rows, key=lambda row: row.error / row.tolerance)
    verdict = "pass" if report.passed else "FAIL"
    print(
        f"Theorem 1 check: {verdict} ({len(report.rows)} comparisons; worst for "
        f"its tolerance: {worst.error:.1e} (tolerance {worst.tolerance:.0e}), "
        f"equation ({worst.equation}) against {worst.reference})"
    )
    outcome = check_verdict(report)
    if outcome != AGREEMENT:
        print(f"  {outcome}")

    context = RunContext(result.model, data, out, args.seed, progress)
    sections = []
    for name in sections_wanted:
        tick = time.perf_counter()
        section = _section(name, context)
        timings[name] = time.perf_counter() - tick
        if section is not None:
            sections.append(section)
            print(f"{section.title}: done in {timings[name]:.1f} s")

    _plot_training(result.history, out / "training.png", result.best_epoch)
    timings["total"] = time.perf_counter() - started
    # Wall time grows with other processes' load and CPU time much less, so
    # both are kept.
    timings["cpu_total"] = time.process_time() - cpu_started
    metrics = _metrics(args, data, result, figures, report, sections, timings)
    write_atomic(out / "metrics.json", json_text(metrics))
    text = _report(args, data, result, figures, report, sections, timings)
    write_atomic(out / "report.md", text)
    # An earlier run stopped in this folder; this one has completed it.
    (out / INCOMPLETE_NAME).unlink(missing_ok=True)
    written = [
        time
        for name, time in file_times(out, "*.png").items()
        if png_times.get(name) != time
    ]
    figures_written = plural(len(written), "figure")
    print(
        f"wrote {out}/ (report.md, metrics.json, model.npz and {figures_written}) "
        f"in {timings['total']:.1f} s"
    )
    return 0 if report.passed else 1


def _section(name: str, context: RunContext) -> Section | None:
    module = importlib.import_module(f"{__package__}.{name}")
    make = getattr(module, "report_section", None)
    return make(context) if make is not None else None


def _metrics(args, data, result, figures, report, sections, timings) -> dict[str, Any]:
    from .. import __version__

    return {
        "resgrad_version": __version__,
        "environment": _environment(),
        "options": training_metadata(args, result, figures["accuracy"], data)[
            "training"
        ],
        "data": {
            "name": data.name,
            "train_samples": len(data.y_train),
            "test_samples": len(data.y_test),
            "features": int(data.x_train.shape[1]),
            "classes": int(data.n_classes),
        },
        "model": result.model.config(),
        "training": {
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "steps": result.steps,
            "history": result.history,
        },
        "test": figures,
        "theorem_check": report.to_dict(),
        "sections": {section.key: section.metrics for section in sections},
        "warnings": list(WARNINGS),
        "skipped_sections": _skipped(args),
        "seconds": timings,
    }


def _environment() -> dict[str, Any]:
    """Return the versions and the machine that a run's timings depend on."""
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    try:
        import torch
    except ImportError:
        versions["torch"] = None
    else:
        versions["torch"] = torch.__version__
    return {
        **versions,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _report(args, data, result, figures, report, sections, timings) -> str:
    model = result.model
    correct = round(figures["accuracy"] * len(data.y_test))
    lines = [
        "# resgrad run",
        "",
        (
            f"Data: {data.name}, {len(data.y_train)} training and "
            f"{len(data.y_test)} test samples of "
            f"{plural(data.x_train.shape[1], 'feature')}, "
            f"{data.n_classes} classes, inputs scaled into "
            f"[{data.bounds[0]:g}, {data.bounds[1]:g}]; stratified split with "
            f"seed {args.split_seed}."
        ),
        "",
        (
            f"Network: {plural(model.depth, 'residual block')}, widths "
            f"{model.sizes}, "
            f"hidden widths {model.hidden}, activation {model.activation}, "
            f"output activation {model.output_activation}, shortcuts "
            f"{', '.join(b.shortcut for b in model.blocks)}, "
            f"{INIT_NAMES.get(args.init, args.init)} initialisation, "
            f"{model.config()['dtype']}."
        ),
        "",
        "## Training",
        "",
        (
            f"{OPTIMIZER_NAMES.get(args.optimizer, args.optimizer)} with learning "
            f"rate {args.lr:g}, mini-batches of "
            f"{args.batch_size}, seed {args.seed}, mean softmax cross-entropy"
            f"{_held_out(args)}. "
            f"{plural(len(result.history), 'epoch')} ({plural(result.steps, 'step')}), "
            "every gradient by "
            f"the backpropagation recurrence without autograd, in "
            f"{timings['train']:.1f} s; {_kept_weights(result)}"
        ),
        "",
        (
            f"Test accuracy: **{figures['accuracy']:.4f}** ({correct} of "
            f"{len(data.y_test)}); test loss {figures['loss']:.4f}."
        ),
        "",
        "![training curves](training.png)",
        "",
        "## Theorem 1 check",
        "",
        _check_summary(report),
        "",
        report.to_markdown(),
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.markdown.strip(), ""]
    skipped = _skipped(args)
    if skipped:
        lines += [f"Sections left out with --skip: {', '.join(skipped)}.", ""]
    if WARNINGS:
        lines += ["## Warnings", "", *(f"- {message}" for message in WARNINGS), ""]
    lines += [_timing_line(timings), ""]
    return "\n".join(lines)


def _skipped(args: argparse.Namespace) -> list[str]:
    """Return the sections that ``--skip`` left out, in the report's order."""
    wanted = _sections_to_run(args.skip)
    return [name for name in SECTIONS if name not in wanted]


def _check_summary(report: Any) -> str:
    from ..check import DIFFERENCE_TOLERANCE, EXACT_TOLERANCE

    if report.autograd_version is None:
        exact = "the backpropagation recurrence"
        left_out = " PyTorch autograd was left out because PyTorch is not installed."
    else:
        exact = (
            "the backpropagation recurrence and PyTorch "
            f"{report.autograd_version} autograd on a copy of the weights"
        )
        left_out = ""
    return (
        f"Equations (4)-(8), evaluated in float64 as the literal matrix products "
        f"of Theorem 1 on the first {report.samples} test samples (loss: mean "
        f"{report.loss.replace('_', ' ')}), are compared with {exact}, to a "
        f"relative error of {EXACT_TOLERANCE:g}, and with central finite "
        f"differences (step {report.step:g}) on sampled entries, to "
        f"{DIFFERENCE_TOLERANCE:g} or their rounding where that is larger. The "
        "error is max |product - reference| / max |reference| over the "
        "compared entries, and over every block for (6)-(8); against finite "
        "differences it divides by the largest entry of the whole product "
        f"instead.{left_out}" + _outcome(report)
    )


def _outcome(report: Any) -> str:
    """Return the check's outcome as a sentence for the report, or nothing
    when every row compared entries and passed."""
    outcome = check_verdict(report)
    return "" if outcome == AGREEMENT else f" Outcome: {outcome}."


def _timing_line(timings: dict[str, float]) -> str:
    parts = [f"training {timings['train']:.1f} s", f"check {timings['check']:.1f} s"]
    parts += [f"{name} {timings[name]:.1f} s" for name in SECTIONS if name in timings]
    environment = _environment()
    return (
        f"Total time: {timings['total']:.1f} s of wall time ({', '.join(parts)}) "
        f"and {timings['cpu_total']:.1f} s of CPU time, on {environment['cpus']} "
        f"CPUs, Python {environment['python']}, NumPy {environment['numpy']}."
    )


def _held_out(args) -> str:
    if not args.validation:
        return ""
    return (
        f", with a stratified fraction {args.validation:g} of the training "
        "samples held out for early stopping and not trained on"
    )


def _kept_weights(result: Any) -> str:
    if result.history and result.history[0]["val_loss"] is None:
        return "no validation split, so the weights of the last epoch are kept."
    return (
        f"the weights of epoch {result.best_epoch} (lowest validation loss) are kept."
    )


def _plot_training(
    history: list[dict[str, Any]], path: Path, best_epoch: int | None = None
) -> None:
    """Draw the losses per epoch, and the validation accuracy when there is a
    validation split, with a line at ``best_epoch`` when training kept the
    weights of an epoch before the last."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    plt = pyplot()
    epochs = [record["epoch"] for record in history]
    validated = bool(history) and history[0]["val_loss"] is not None
    panels = 2 if validated else 1
    figure, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2), squeeze=False)
    left = axes[0, 0]
    left.plot(epochs, [r["train_loss"] for r in history], label="train")
    if validated:
        left.plot(epochs, [r["val_loss"] for r in history], label="validation")
        right = axes[0, 1]
        right.plot(epochs, [r["val_accuracy"] for r in history])
        right.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    left.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    # Plain numbers, and ticks at 1, 2 and 5 times the powers of ten where
    # the losses span two decades or less, which would get one label or none.
    low, high = left.get_ylim()
    if 0 < low and high <= 100 * low:
        left.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    left.yaxis.set_minor_formatter(NullFormatter())
    earlier_kept = validated and best_epoch is not None and best_epoch != epochs[-1]
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if earlier_kept:
            ax.axvline(
                best_epoch,
                color="0.4",
                linestyle=":",
                label=f"kept weights: epoch {best_epoch}",
            )
    left.legend()
    if earlier_kept:
        right.legend()
    figure.tight_layout()
    write_figure(path, figure, dpi=100)
