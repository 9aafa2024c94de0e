"""``resgrad check``: verify Theorem 1 on a saved model."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ._common import (
    Typed,
    add_data_arguments,
    existing_file,
    load_dataset,
    non_negative_int,
    plural,
    positive_int,
    progress_bar,
    typed_options,
    warn,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check the five equations of Theorem 1 on a saved model",
        description="Compare equations (4)-(8) of Theorem 1, evaluated as matrix "
        "products, with backpropagation, PyTorch autograd (when installed) and "
        "central finite differences, on test samples of a data set. The exit "
        "status is 0 when every comparison passes, 1 when one fails and 2 for "
        "an invalid argument.",
    )
    parser.add_argument(
        "--model", type=existing_file, required=True, help="a .npz model file"
    )
    add_data_arguments(parser, trained=True)
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=8,
        action=Typed,
        help="test samples to check on (default: 8)",
    )
    parser.add_argument(
        "--entries",
        type=positive_int,
        default=40,
        help="entries per equation perturbed for the central differences: input "
        "entries for (4) and (5), where each gives one column of J, so (5) "
        "compares that many times the classes; for (6)-(8) weight entries split "
        "evenly over the blocks, rounding down, with at least 2 per block "
        "(default: 40)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the entries sampled for the central differences; "
        "resgrad run samples with its own --seed (default: 0)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON instead of a table",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar of the central differences",
    )
    parser.set_defaults(handler=run_check)


def check_on_test_split(
    model,
    data,
    samples: int,
    entries: int,
    seed: int = 0,
    command: str = "check",
    option: str = "--samples",
    typed: bool = True,
    progress: Any = None,
):
    """Run ``check_theorem`` on the first ``samples`` test samples of ``data``.

    Warns, as ``resgrad command`` and naming the ``option`` that set
    ``samples``, when the test split has fewer samples and the user
    ``typed`` that option rather than leaving its default. ``progress``
    wraps the central differences, as for ``check_theorem``.
    """
    from ..check import check_theorem

    if samples < 1:
        raise ValueError(f"Expected at least 1 sample to check, got {samples}.")
    available = len(data.y_test)
    if samples > available and typed:
        warn(
            command,
            f"{option} {samples} is more than the {available} test samples; "
            f"checking all {available}",
        )
    x = np.asarray(data.x_test[:samples])
    y = np.asarray(data.y_test[:samples])
    return check_theorem(model, x, y, entries=entries, seed=seed, progress=progress)


def run_check(args: argparse.Namespace) -> int:
    from ..io import json_text, load_with_metadata

    model, metadata = load_with_metadata(args.model)
    data = load_dataset(args, model, metadata)
    report = check_on_test_split(
        model,
        data,
        args.samples,
        args.entries,
        seed=args.seed,
        typed=bool(typed_options(args, ["samples"])),
        progress=progress_bar(not args.no_progress, log_start=True),
    )
    if args.json:
        # An array that the product left out has an infinite error, which
        # strict JSON lacks.
        print(json_text(report.to_dict()), end="")
    else:
        print(report.to_markdown())
        print(
            f"\n{verdict(report)} ({len(report.rows)} comparisons on "
            f"{plural(report.samples, 'sample')})"
        )
        if report.autograd_version is None:
            print(
                "PyTorch autograd was left out because PyTorch is not installed; "
                'install it, for example with pip install "resgrad[torch]", to '
                "compare with it too."
            )
    return 0 if report.passed else 1


# The verdict of a check whose every row compared entries and passed.
AGREEMENT = "all equations agree"


def verdict(report: Any) -> str:
    """Return the one-line outcome of a ``CheckReport``.

    Central differences carry truncation and rounding errors that grow where
    the loss is steep or curves sharply, so a miss of theirs alone, with
    every exact reference in agreement, gets its own message.
    """
    if report.passed:
        # A comparison of no entries, or one below the resolution of its
        # reference, passes but checks nothing.
        empty = [row for row in report.rows if row.entries == 0]
        blurred = [row for row in report.rows if row.entries and not row.resolved]
        if not empty and not blurred:
            return AGREEMENT
        notes = []
        if empty:
            names = ", ".join(
                f"({row.equation}) against {row.reference}" for row in empty
            )
            notes.append(f"no entries were compared for {names}")
        if blurred:
            names = ", ".join(f"({row.equation})" for row in blurred)
            notes.append(
                f"central differences of step {report.step:g} cannot resolve "
                f"{names}, whose entries are small against the rounding of the "
                "loss or the logits"
            )
        return "all equations agree where compared; " + "; ".join(notes)
    failed = {row.reference for row in report.rows if not row.passed}
    if failed != {"central differences"}:
        return "some equations disagree"
    return (
        "every equation agrees with the exact references (backprop, and autograd "
        f"where listed); only central differences of step {report.step:g} miss "
        "their tolerance, as they can where the loss is steep or curves sharply"
    )
