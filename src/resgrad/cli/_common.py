"""What the subcommands share: the run context, report sections, progress."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..model import ResidualMLP


@dataclass
class RunContext:
    """What ``resgrad run`` hands each report section.

    Attributes:
        model: the trained network (NumPy, float64).
        data: the ``resgrad.data.Dataset`` it was trained on.
        out_dir: the run folder; a section writes its figures here.
        seed: the run's seed, for any randomness a section needs.
        progress: wraps an iterable in a progress bar (see ``progress_bar``).
    """

    model: ResidualMLP
    data: Any
    out_dir: Path
    seed: int = 0
    progress: Callable[..., Iterable] = field(default=lambda it, **kw: it)


@dataclass
class Section:
    """One section of the run report.

    ``markdown`` is the body (without the heading), ``metrics`` goes into
    ``metrics.json`` under ``key``, and ``files`` lists the figures written,
    relative to the run folder.
    """

    title: str
    key: str
    markdown: str
    metrics: dict[str, Any]
    files: list[str] = field(default_factory=list)


def progress_bar(enabled: bool = True) -> Callable[..., Iterable]:
    """Return a wrapper that draws a tqdm bar on standard error over an iterable.

    The wrapper takes the iterable and tqdm keywords (``desc``, ``total``).
    With ``enabled`` false, or without tqdm, it returns the iterable as is.
    """
    if not enabled:
        return lambda iterable, **kwargs: iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return lambda iterable, **kwargs: iterable
    return functools.partial(tqdm, file=sys.stderr, leave=False, dynamic_ncols=True)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename.

    A reader sees the old file or the new one, never a partial write, and a
    failure leaves no temporary file behind.
    """
    from ..io import write_atomically

    data = content.encode("utf-8") if isinstance(content, str) else content
    write_atomically(Path(path), lambda file: file.write(data))


def add_data_arguments(parser: Any) -> None:
    """Add ``--data``, ``--labels``, ``--test-size`` and ``--split-seed``."""
    parser.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a .npz (arrays X, y), .csv (last column the label) or IDX image "
        "file; default: the digits set bundled with scikit-learn",
    )
    parser.add_argument(
        "--labels", default=None, metavar="PATH", help="the IDX label file for --data"
    )
    parser.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        help="the fraction of samples held out for testing (default: 0.25)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="the seed of the stratified train/test split (default: 0)",
    )


def load_dataset(args: Any) -> Any:
    """Load the data set named by the ``add_data_arguments`` options."""
    from ..data import load_data

    return load_data(
        args.data, labels=args.labels, test_size=args.test_size, seed=args.split_seed
    )


def existing_file(value: str) -> Path:
    """Return ``value`` as a path to an existing file, for ``--model`` options."""
    import argparse

    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; expected a model file.")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value} not found.")
    return path


def non_negative_int(value: str) -> int:
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {number}")
    return number
