"""``resgrad evaluate``: loss and accuracy of a saved model."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ._common import (
    add_data_arguments,
    existing_file,
    files_record,
    load_dataset,
    plural,
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
    from ..io import load, read_metadata
    from ..training import evaluate

    model = load(args.model)
    data = load_dataset(args, model)
    # The data are float64; a float32 model file evaluates them in float32.
    x_test = np.asarray(data.x_test, dtype=model.dtype)
    figures = evaluate(model, x_test, data.y_test)
    training = read_metadata(args.model).get("training") or {}
    if args.json:
        # The settings first, so that a saved file records what it measured.
        report = {**files_record(args), "samples": len(data.y_test), **figures}
        report["training"] = training
        print(json.dumps(report, indent=2))
        return 0
    record = files_record(args)
    labels = f", labels {record['labels']}" if record["labels"] else ""
    print(
        f"data:          {record['data']}{labels} (test split "
        f"{record['test_size']:g}, split seed {record['split_seed']})"
    )
    print(f"test samples:  {len(data.y_test)}")
    # Four significant digits, so that a loss of a well-fitted model does not
    # print as 0.0000.
    print(f"test loss:     {figures['loss']:.4g}")
    print(f"test accuracy: {figures['accuracy']:.4f}")
    if "optimizer" in training:
        print(
            f"trained with:  {training['optimizer']}, lr {training['lr']:g}, "
            f"{plural(training['epochs'], 'epoch')} of batches of "
            f"{training['batch_size']}, "
            f"seed {training['seed']}"
        )
    return 0
