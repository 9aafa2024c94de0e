"""``resgrad evaluate``: loss and accuracy of a saved model."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from ._common import (
    add_data_arguments,
    existing_file,
    files_record,
    load_dataset,
    plural,
    training_record,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="report the loss and accuracy of a saved model",
        description="Evaluate a saved model on the test split of a data set.",
    )
    parser.add_argument(
        "--model", type=existing_file, required=True, help="a .npz model file"
    )
    add_data_arguments(parser, trained=True)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..io import json_text, load_with_metadata
    from ..training import evaluate

    model, metadata = load_with_metadata(args.model)
    data = load_dataset(args, model, metadata)
    # The data are float64; a float32 model file evaluates them in float32.
    x_test = np.asarray(data.x_test, dtype=model.dtype)
    figures = evaluate(model, x_test, data.y_test)
    training = training_record(args.model, metadata)
    if args.json:
        # The settings first, so that a saved file records what it measured.
        report = {**files_record(args), "samples": len(data.y_test), **figures}
        report["training"] = training
        for name in ("epochs_run", "best_epoch"):
            value = metadata.get(name)
            counts = isinstance(value, int) and not isinstance(value, bool)
            report[name] = value if counts and value >= 0 else None
        run, best = report["epochs_run"], report["best_epoch"]
        if run is not None and best is not None and best > run:
            # The file is damaged or edited by hand, and the summary line
            # leaves such a value out too.
            report["best_epoch"] = None
        # A file saved from Python may record NaN, which strict JSON lacks.
        print(json_text(report), end="")
        return 0
    record = files_record(args)
    labels = f", labels {record['labels']}" if record["labels"] else ""
    print(
        f"data:          {record['data']}{labels} (test split "
        f"{record['test_size']:g}, split seed {record['split_seed']})"
    )
    print(f"test samples:  {len(data.y_test)}")
    # Four significant digits, so that a loss of a well-fitted model does not
    # print as 0.0000, with trailing zeros kept (0.5740, not 0.574).
    print(f"test loss:     {figures['loss']:#.4g}")
    print(f"test accuracy: {figures['accuracy']:.4f}")
    settings = _training_settings(training, metadata)
    if settings:
        print(f"trained with:  {settings}")
    return 0


def _training_settings(training: dict, metadata: dict) -> str:
    """Return the recorded optimizer, learning rate, epochs, batch size and
    seed as one line, leaving out any that the file lacks or that has
    another type or an impossible value (a negative count, NaN), as a file
    saved from Python or edited by hand may."""

    def number(name: str, low: float) -> Any:
        """Return the field ``name`` if it is a finite number >= ``low``."""
        value = training.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, int) and abs(value) >= 2**63:
            # math.isfinite raises on ints past the largest float, and a
            # count past int64 is damage too.
            return None
        return value if math.isfinite(value) and value >= low else None

    def count(name: str, low: int) -> int | None:
        value = number(name, low)
        # Counts past int64, like 1e300 epochs, are damage too.
        if value is None or value != int(value) or value >= 2**63:
            return None
        return int(value)

    parts = []
    if isinstance(training.get("optimizer"), str):
        parts.append(training["optimizer"])
    lr = number("lr", 0.0)
    if lr is not None and lr > 0:
        parts.append(f"lr {lr:g}")
    run, epochs = metadata.get("epochs_run"), count("epochs", 1)
    run_counts = isinstance(run, int) and not isinstance(run, bool)
    if run_counts and epochs is not None and 0 <= run <= epochs:
        parts.append(f"{run} of {plural(epochs, 'epoch')} run")
    elif epochs is not None:
        parts.append(plural(epochs, "epoch"))
    validation, best = number("validation", 0.0), metadata.get("best_epoch")
    best_counts = isinstance(best, int) and not isinstance(best, bool)
    best_counts = best_counts and best >= 1 and (not run_counts or best <= run)
    if validation and validation < 1 and best_counts:
        # Early stopping keeps the weights of the lowest validation loss,
        # which need not be those of the last epoch run.
        parts.append(
            f"validation split {validation:g}, weights of epoch {best} "
            "(lowest validation loss)"
        )
    if count("batch_size", 1) is not None:
        parts.append(f"batches of {count('batch_size', 1)}")
    if count("seed", 0) is not None:
        parts.append(f"seed {count('seed', 0)}")
    return ", ".join(parts)
