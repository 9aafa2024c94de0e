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
import importlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ._common import (
    RunContext,
    Section,
    add_data_arguments,
    load_dataset,
    progress_bar,
    write_atomic,
)
from .train import add_model_arguments, train_model, training_metadata

SECTIONS = ("attack", "saliency", "depth")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train on the digits set, check Theorem 1 and write a report",
        description="Train a residual network by the explicit gradients, check "
        "Theorem 1 on it, evaluate attacks, saliency maps and the depth study, "
        "and write everything to a run folder.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the run folder to write (default: runs/<date>-<time>)",
    )
    add_data_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--check-samples",
        type=int,
        default=8,
        help="test samples for the Theorem 1 check (default: 8)",
    )
    parser.add_argument(
        "--skip",
        default="",
        metavar="NAMES",
        help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run_main)


def _run_folder(out: Path | None) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
        suffix = 1
        while out.exists():
            suffix += 1
            out = Path("runs") / f"{stamp}-{suffix}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _sections_to_run(skip: str) -> list[str]:
    names = [name.strip() for name in skip.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise ValueError(
            f"Unknown section(s) in --skip: {', '.join(unknown)}; expected some of: "
            f"{', '.join(SECTIONS)}."
        )
    return [name for name in SECTIONS if name not in names]


def run_main(args: argparse.Namespace) -> int:
    from ..io import save
    from ..training import evaluate
    from .check import check_on_test_split

    sections_wanted = _sections_to_run(args.skip)
    started = time.perf_counter()
    progress = progress_bar(not args.no_progress)
    data = load_dataset(args)
    out = _run_folder(args.out)
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    result = train_model(args, data, progress)
    timings["train"] = time.perf_counter() - tick
    figures = evaluate(result.model, data.x_test, data.y_test)
    print(
        f"trained {len(result.history)} epochs in {timings['train']:.1f} s; "
        f"test accuracy {figures['accuracy']:.4f}"
    )
    save(result.model, out / "model.npz", metadata=training_metadata(args, result, figures["accuracy"]))

    tick = time.perf_counter()
    report = check_on_test_split(result.model, data, args.check_samples, entries=40, seed=args.seed)
    timings["check"] = time.perf_counter() - tick
    worst = max(row.error for row in report.rows)
    verdict = "pass" if report.passed else "FAIL"
    print(f"Theorem 1 check: {verdict} ({len(report.rows)} comparisons, worst relative error {worst:.1e})")

    context = RunContext(result.model, data, out, args.seed, progress)
    sections = []
    for name in sections_wanted:
        tick = time.perf_counter()
        section = _section(name, context)
        timings[name] = time.perf_counter() - tick
        if section is not None:
            sections.append(section)
            print(f"{section.title}: done in {timings[name]:.1f} s")

    _plot_training(result.history, out / "training.png")
    timings["total"] = time.perf_counter() - started
    metrics = _metrics(args, data, result, figures, report, sections, timings)
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_atomic(out / "report.md", _report(data, result, figures, report, sections, timings))
    print(f"wrote {out}/ (report.md, metrics.json, model.npz) in {timings['total']:.1f} s")
    return 0 if report.passed else 1


def _section(name: str, context: RunContext) -> Section | None:
    module = importlib.import_module(f"{__package__}.{name}")
    make = getattr(module, "report_section", None)
    return make(context) if make is not None else None


def _metrics(args, data, result, figures, report, sections, timings) -> dict[str, Any]:
    from .. import __version__

    return {
        "resgrad_version": __version__,
        "data": {
            "name": data.name,
            "train_samples": int(len(data.y_train)),
            "test_samples": int(len(data.y_test)),
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
        "seconds": timings,
    }


def _report(data, result, figures, report, sections, timings) -> str:
    model = result.model
    lines = [
        "# resgrad run",
        "",
        f"Data: {data.name}, {len(data.y_train)} training and {len(data.y_test)} test "
        f"samples of {data.x_train.shape[1]} features, {data.n_classes} classes.",
        "",
        f"Network: {model.depth} residual blocks, widths {model.sizes}, hidden widths "
        f"{model.hidden}, activation {model.activation}, shortcuts "
        f"{', '.join(b.shortcut for b in model.blocks)}.",
        "",
        "## Training",
        "",
        f"{len(result.history)} epochs ({result.steps} steps) by the backpropagation "
        f"recurrence, in {timings['train']:.1f} s; {_kept_weights(result)}",
        "",
        f"Test accuracy: **{figures['accuracy']:.4f}**; test loss {figures['loss']:.4f}.",
        "",
        "![training curves](training.png)",
        "",
        "## Theorem 1 check",
        "",
        f"Equations (4)-(8) evaluated as matrix products on {report.samples} test "
        "samples, against backpropagation, PyTorch autograd (when installed) and "
        "central finite differences on sampled entries:",
        "",
        report.to_markdown(),
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.markdown.strip(), ""]
    lines += [f"Total time: {timings['total']:.1f} s.", ""]
    return "\n".join(lines)


def _kept_weights(result: Any) -> str:
    if result.history and result.history[0]["val_loss"] is None:
        return "no validation split, so the weights of the last epoch are kept."
    return f"the weights of epoch {result.best_epoch} (lowest validation loss) are kept."


def _plot_training(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record["epoch"] for record in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [r["train_loss"] for r in history], label="train")
    if history and history[0]["val_loss"] is not None:
        left.plot(epochs, [r["val_loss"] for r in history], label="validation")
        right.plot(epochs, [r["val_accuracy"] for r in history])
    left.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    left.legend()
    right.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
