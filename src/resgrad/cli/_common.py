"""What the subcommands share: the run context, report sections, progress."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import numbers
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _arrays, _lock
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


@contextlib.contextmanager
def limit_blas_threads(count: int) -> Iterator[None]:
    """Limit NumPy's BLAS to ``count`` threads inside the ``with`` block.

    The commands multiply small matrices (a batch by a block's weights),
    where extra BLAS threads mostly contend for the cores. On 2 cores at a
    load average near 12, OpenBLAS 0.3.31 with two threads trained the
    default network in 82 s of CPU time and 250 s of wall time, against 6 s
    and 20 s with one thread. Without threadpoolctl (it comes with
    scikit-learn) BLAS keeps its own thread count, which gives the same
    numbers more slowly.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=count, user_api="blas"):
        yield


# In a log, a progress bar prints a line at most once in this many seconds.
PROGRESS_LOG_SECONDS = 10.0
# The clock of the progress lines, unless they are given one.
_clock = time.monotonic


def progress_bar(
    enabled: bool = True,
    *,
    log_interval: float | None = PROGRESS_LOG_SECONDS,
    log_start: bool = False,
) -> Callable[..., Iterable]:
    """Return a wrapper that draws a tqdm bar on standard error over an iterable.

    The wrapper takes the iterable and tqdm keywords (``desc``, ``total``).
    With ``enabled`` false or without tqdm it returns the iterable as is.
    When standard error is not a terminal (a log file, a batch job), whose
    redrawn bars would fill it with lines, it prints plain lines there
    instead (``ProgressLines``), at most one every ``log_interval`` seconds,
    or returns the iterable as is when ``log_interval`` is None. With
    ``log_start`` the lines start with one at the start of the loop and end
    with one at its end; without it a loop shorter than ``log_interval``
    prints none.
    """
    if not enabled:
        return lambda iterable, **kwargs: iterable
    if not _is_terminal(sys.stderr):
        if log_interval is None:
            return lambda iterable, **kwargs: iterable
        return functools.partial(
            ProgressLines,
            stream=sys.stderr,
            interval=log_interval,
            start_line=log_start,
        )
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return lambda iterable, **kwargs: iterable
    return functools.partial(tqdm, file=sys.stderr, leave=False, dynamic_ncols=True)


class ProgressLines:
    """An iterable over the items of ``iterable`` that prints progress lines
    on ``stream``.

    Each line reads ``desc: done/total after S s``, followed by the values
    of the last ``set_postfix`` call, as a tqdm bar shows them. A line comes
    when an item finishes ``interval`` seconds or more after the last line
    (or the start), and one at the end if any came before it. With
    ``start_line`` a line ``desc: 0/total`` comes first, and the end always
    gets its line. No line redraws another, so a log file gets them as they
    are. ``total`` defaults to ``len(iterable)``, and without either the
    lines give only the count done. ``initial`` counts items done before
    the first, as tqdm's keyword does. ``clock`` defaults to
    ``time.monotonic``. Other tqdm keywords are ignored.
    """

    def __init__(
        self,
        iterable: Iterable,
        desc: str | None = None,
        total: int | None = None,
        *,
        stream: Any,
        interval: float,
        clock: Callable[[], float] | None = None,
        start_line: bool = True,
        initial: int = 0,
        **kwargs: Any,
    ) -> None:
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total = iterable, total
        self.name = desc or "progress"
        self.stream, self.interval = stream, interval
        self.clock = _clock if clock is None else clock
        self.start_line = start_line
        self.postfix = ""
        # The items handed out and the count in the last line printed, and
        # whether the end has its line.
        self._handed = self._printed = initial
        self._ended = False
        self._start = 0.0

    def set_postfix(self, values: dict | None = None, **kwargs: Any) -> None:
        """Show ``values`` and ``kwargs`` (names and numbers) on the next
        lines."""
        named_values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(
            f"{name}={value:.4g}" if _is_fraction(value) else f"{name}={value}"
            for name, value in named_values.items()
        )

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` on the next lines, as tqdm's ``set_postfix_str``
        shows it on the bar."""
        self.postfix = str(text)

    def _line(self, done: int, elapsed: float | None = None) -> None:
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        after = f" after {elapsed:.0f} s" if elapsed is not None else ""
        postfix = f" ({self.postfix})" if self.postfix and done else ""
        print(f"{self.name}: {count}{after}{postfix}", file=self.stream, flush=True)

    def __iter__(self) -> Iterator:
        self._start = printed_at = self.clock()
        if self.start_line:
            self._line(self._handed)
        for item in self.iterable:
            self._handed += 1
            yield item
            now = self.clock()
            if now - printed_at >= self.interval:
                self._line(self._handed, now - self._start)
                printed_at, self._printed = now, self._handed
        self.close()

    def close(self) -> None:
        """Print the end's line, counting every item handed out as done.

        The loop calls it when it runs out. A caller that leaves the loop
        early calls it before it leaves, as training does when it stops
        early. Later calls print nothing.
        """
        if self._ended:
            return
        self._ended = True
        if self._handed != self._printed and (self.start_line or self._printed):
            self._line(self._handed, self.clock() - self._start)


def _is_fraction(value: Any) -> bool:
    """Return whether ``value`` is a real number but not an integer, as
    NumPy's float32 is and Python's bool is not."""
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)


# The warnings of the command that runs, which its report files repeat.
WARNINGS: list[str] = []


def warn(command: str, message: str) -> None:
    """Print ``message`` on standard error as a warning of ``resgrad command``,
    and keep it in ``WARNINGS``."""
    message = printable(as_options(message))
    WARNINGS.append(message)
    print(f"resgrad {command}: warning: {message}", file=sys.stderr)


# Control characters, which a terminal may act on, and the characters that
# reverse or isolate the direction of the text that follows. Text read from
# a model or data file, such as a recorded path or column name, reaches the
# messages, and an escape sequence in it could clear the screen or hide
# what follows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Return ``text`` with every control character but newline and tab
    written as its Python escape, such as ``\\x1b``."""
    return _CONTROLS.sub(lambda match: ascii(match.group())[1:-1], text)


# A keyword of the Python API and the option it stands for, as the library's
# messages name both: "label_column=9 (--label-column on the command line)",
# or "header=True (--header yes on the command line)" where the option's
# value is written otherwise.
_KEYWORD_AND_OPTION = re.compile(
    r"\b[a-z_]+=(\S*) \((--[a-z-]+)( [^()\s]+)? on the command line\)"
)


def as_options(message: str) -> str:
    """Return a library message with each keyword and its option replaced
    by the option alone, with its value, for the command line's messages."""

    def option(match: re.Match) -> str:
        value = match.group(3) or (f" {match.group(1)}" if match.group(1) else "")
        return f"{match.group(2)}{value}"

    return _KEYWORD_AND_OPTION.sub(option, message)


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        # No isatty, or a closed stream.
        return False


# The files that the running command reads (--model, --data, --labels),
# which none of its outputs may replace. main empties it for each command.
INPUT_FILES: list[Path] = []


def check_not_an_input(path: Path) -> None:
    """Raise ``ValueError`` if writing ``path`` would replace a file that the
    running command reads, as ``--out`` with ``--overwrite`` could."""
    path = Path(path)
    for source in INPUT_FILES:
        if _same_file(path, source):
            raise ValueError(
                f"Writing {path} would replace {source}, an input of this "
                "command; move that file out of --out, or pass another --out."
            )


def check_output_file(path: Path) -> None:
    """Raise, before any work starts, if ``path`` cannot take one of the
    command's files: a folder of that name is in the way, or the file is an
    input of the command (``check_not_an_input``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, where this command writes a file of that "
            "name; move or rename that folder, or pass another --out."
        )
    check_not_an_input(path)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename.

    A reader sees the old file or the new one, never a partial write, and a
    failure leaves no temporary file behind. ``path`` must not be an input
    of the command (``check_not_an_input``). A symbolic link at ``path`` is
    replaced by the file, so that a command's files stay in its output
    folder.
    """
    from ..io import write_atomically

    check_not_an_input(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    write_atomically(Path(path), lambda file: file.write(data), follow_links=False)


def check_figures_installed() -> None:
    """Raise ``ImportError`` if matplotlib, which draws the figures of
    ``run``, ``attack``, ``saliency`` and ``depth``, cannot be imported.

    Those commands call it before any work, so that a missing package stops
    them before the training or the attacks rather than after.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The figures of this command need matplotlib, which cannot be "
            f'imported ({error}); install it with pip install "resgrad[cli]".'
        ) from error


def pyplot() -> Any:
    """Return ``matplotlib.pyplot`` on the Agg backend, which needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(path: Path, figure: Any, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG with ``write_atomic``, and close it
    whether or not the drawing succeeds."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        pyplot().close(figure)
    write_atomic(path, buffer.getvalue())


# The values of --header, and what load_csv's header argument takes for each.
HEADER_CHOICES = {"auto": "auto", "yes": True, "no": False}

# The split of --test-size and --split-seed when neither the command line
# nor a model file gives one.
TEST_SIZE = 0.25
SPLIT_SEED = 0


def add_data_arguments(parser: Any, trained: bool = False) -> None:
    """Add ``--data``, ``--labels``, ``--label-column``, ``--test-size`` and
    ``--split-seed``; ``trained`` for a command that reads a trained model,
    whose recorded label column and split are the defaults."""
    data_default = "the data the model was trained with, else " if trained else ""
    parser.add_argument(
        "--data",
        type=_data_source,
        default=None,
        metavar="PATH",
        help="a .npz (arrays X, y), .csv (numbers, one column the label, "
        "and an optional first row of column names) or IDX image file; "
        f"default: {data_default}the digits set bundled with scikit-learn",
    )
    parser.add_argument(
        "--labels",
        type=existing_file,
        default=None,
        metavar="PATH",
        help="the IDX label file for --data",
    )
    default = (
        "the column the model was trained with, else the last column"
        if trained
        else "the last column"
    )
    default += ", which is an error where the header names another column "
    default += "label, labels, class or target"
    parser.add_argument(
        "--label-column",
        type=_integer,
        default=None,
        metavar="N",
        help="the label column of a CSV --data, counted from 0, or from the "
        f"end when negative (default: {default})",
    )
    header_default = (
        "the choice that trained the model for its training file, else "
        if trained
        else ""
    )
    parser.add_argument(
        "--header",
        choices=HEADER_CHOICES,
        default=None if trained else "auto",
        help="whether the first row of a CSV --data names the columns; auto "
        "reads it as names when none of its fields is a number, or when its "
        "numbers are their own column indices, as in 0,1,2,label; names "
        "such as nan and inf count as text beside another name (default: "
        f"{header_default}auto)",
    )
    split_default = "the split that trained the model, else " if trained else ""
    parser.add_argument(
        "--test-size",
        type=open_fraction,
        default=None if trained else TEST_SIZE,
        help="the fraction of samples held out for testing; every class with "
        "two or more samples puts at least one in each part, so with few "
        "samples per class the split can differ much from it, e.g. 20 samples "
        f"in 10 classes split 10/10 at 0.1 (default: {split_default}"
        f"{TEST_SIZE})",
    )
    parser.add_argument(
        "--split-seed",
        type=non_negative_int,
        default=None if trained else SPLIT_SEED,
        help="the seed of the stratified train/test split (default: "
        f"{split_default}{SPLIT_SEED})",
    )


def _data_source(value: str) -> str:
    """Accept ``digits`` or the path of an existing data file."""
    if value == "digits":
        return value
    return str(existing_file(value))


# The fields of the training record that the commands read, and the types
# that resgrad train writes for them.
TRAINING_FIELDS = {
    "data": (str, type(None)),
    "labels": (str, type(None)),
    "label_column": (int, type(None)),
    "header": (str, type(None)),
    "test_size": (int, float),
    "split_seed": (int,),
    "columns": (list, type(None)),
    "data_sha256": (str,),
    "optimizer": (str,),
}


def training_record(path: Any, metadata: dict) -> dict:
    """Return the ``training`` record of a model file's metadata, or ``{}``
    without one, after checking the fields that the commands read.

    A file saved from Python contains the caller's metadata, which may have
    any form.

    Raises:
        ValueError: if the record or one of those fields has another type
            than ``resgrad train`` writes.
    """
    training = metadata.get("training")
    if training is None:
        return {}
    fix = (
        "save the model without metadata['training'], or with the record "
        "that resgrad train writes"
    )
    if not isinstance(training, dict):
        # A damaged file, not a wrong argument, as for InvalidModelFile.
        raise ValueError(  # noqa: TRY004
            f"The model file {path} has an invalid training record, "
            f"{_arrays._short_repr(training)}, where a dict was expected; {fix}."
        )
    for name, kinds in TRAINING_FIELDS.items():
        value = training.get(name)
        wrong = name in training and (
            not isinstance(value, kinds) or isinstance(value, bool)
        )
        if name == "columns" and isinstance(value, list):
            wrong = not all(isinstance(column, str) for column in value)
        if name in ("data", "labels") and isinstance(value, str):
            # No file system takes these in a path; os.stat raises a
            # ValueError that names no file.
            wrong = value == "" or "\0" in value
            kinds = ("a path of a file", type(None))
        if name == "header" and isinstance(value, str):
            # resgrad train records the --header it was given.
            wrong = value not in HEADER_CHOICES
            kinds = (", ".join(map(repr, HEADER_CHOICES)), type(None))
        if wrong:
            expected = " or ".join(map(_kind_name, kinds))
            if name == "columns":
                expected = "a list of str or null"
            raise ValueError(
                f"The model file {path} has an invalid training record: "
                f"{name} is {_arrays._short_repr(value)}, where {expected} was "
                f"expected; {fix}."
            )
    return training


def _kind_name(kind: type | str) -> str:
    """Return how a training record's message names an accepted kind: a
    type's name, null for ``None``, or a description as it is."""
    if isinstance(kind, str):
        return kind
    return "null" if kind is type(None) else kind.__name__


def load_dataset(
    args: Any, model: ResidualMLP | None = None, metadata: dict | None = None
) -> Any:
    """Load the data set named by the ``add_data_arguments`` options.

    With ``model`` and ``metadata``, the network and the metadata read from
    the file ``args.model`` by one ``load_with_metadata``, the features are
    scaled as they were for its training when the file records that
    scaling, and the data must fit the network (``_check_fits``).
    """
    from ..data import load_data

    if args.labels is not None and args.data is None:
        raise ValueError(
            f"--labels {args.labels} goes with the IDX image file of --data; pass "
            "--data too, or leave out --labels for the digits."
        )
    if model is None:
        metadata = {}
    elif metadata is None:
        raise TypeError("load_dataset needs the metadata read with the model.")
    training = {} if model is None else training_record(args.model, metadata)
    trained_on = _trained_with(training)
    if args.data is None and trained_on is not None:
        _use_training_data(args, training, trained_on)
    INPUT_FILES.extend(_input_files(args).values())
    # Without the options, a model's test split is the one it was trained
    # with, so that its test rows are unseen.
    if args.test_size is None:
        args.test_size = training.get("test_size", TEST_SIZE)
        if model is not None:
            _check_recorded_test_size(args)
    if args.split_seed is None:
        args.split_seed = training.get("split_seed", SPLIT_SEED)
        if model is not None and not 0 <= args.split_seed <= INT64_MAX:
            # resgrad train takes no seed outside that range.
            raise ValueError(
                f"The model file {args.model} records the split seed "
                f"{_arrays._short_repr(args.split_seed)}, outside 0 to 2**63 - 1, "
                "so the file is damaged; pass --split-seed, or train the model "
                "again."
            )
    if model is not None and metadata.get("scaling") is not None:
        _check_recorded_scaling(args, metadata["scaling"], model)
    # Whether --data names the training files. Errors name those files when
    # it does not.
    same = _same_source(training.get("data"), args.data)
    if model is not None:
        # Before loading, so that a changed header is named rather than
        # the width or scaling error that it causes.
        _check_columns(args, training)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            data = load_data(
                args.data,
                labels=args.labels,
                label_column=_label_column(args, training),
                header=csv_header(args, training),
                test_size=args.test_size,
                seed=args.split_seed,
                scaling=metadata.get("scaling"),
            )
    except MemoryError as error:
        # The advice that main prints for a MemoryError is about network
        # sizes, so running out of memory on the data gets its own message.
        source = args.data or "the digits"
        raise ValueError(
            f"Not enough memory to load {source} ({error}); free memory or pass "
            "a smaller data file."
        ) from error
    except ValueError as error:
        if (
            model is None
            or trained_on is None
            or (same and data_file(args.data) is None)
        ):
            # The digits ship with scikit-learn and cannot have changed, so
            # the error alone, such as a CSV option given for them, is the message.
            raise
        # The training files loaded when the model was trained, so an error
        # on them means that they have changed since, or that they were read
        # with other options.
        options = _other_csv_options(args, training) if same else []
        if options:
            # Two values can name one column (-1 and 3 of 4), so the file
            # may have changed instead.
            note = (
                f"{args.data} was read with other options than in training "
                f"({' and '.join(options)} there), or has changed since"
            )
        elif (
            same
            and args.label_column is None
            and _label_column(args, training) is not None
        ):
            # The column came from the model file, though a message from
            # load_csv about it names the command-line option.
            note = (
                f"{args.data} has changed since the model was trained on it, "
                f"or the label column {training['label_column']} that the model "
                "file records for it is wrong; pass --label-column to choose "
                "the label column"
            )
        elif same:
            note = f"{args.data} has changed since the model was trained on it"
        else:
            note = f"The model was trained with {trained_on}"
        raise ValueError(f"{str(error).rstrip('.')}. {note}.") from error
    for warning in caught:
        warn(args.command, str(warning.message))
    _warn_on_other_split(args, training, data)
    if same:
        _warn_on_changed_file(args, training, data)
    if model is not None:
        _check_fits(data, model, None if same else trained_on, args.data)
        if same:
            _check_scaling_entries(args, metadata.get("scaling"), data)
        _warn_on_clipping(args, training, data)
    else:
        _warn_on_constant_features(args, data)
    return data


def _warn_on_constant_features(args: Any, data: Any) -> None:
    """Warn, before training, when every feature is constant over the
    training split, because no input then separates the classes."""
    import numpy as np

    x = np.asarray(data.x_train)
    if x.shape[0] > 1 and np.all(x == x[:1]):
        warn(
            args.command,
            f"every feature of {data.name} is constant over the training split, "
            "so the network can learn only how often each class occurs; check "
            "the --data file.",
        )


def _warn_on_changed_file(args: Any, training: dict, data: Any) -> None:
    """Warn when the rows of the training file ``args.data`` differ from the
    digest that the model file records."""
    digest = training.get("data_sha256")
    if args.data is None or digest in (None, data.digest):
        return
    # The label column and the features; a row-name column is not counted,
    # as --label-column does not count it.
    options = _other_csv_options(args, training, data.n_features + 1, read=True)
    if options:
        # The rows as read differ, which other read options explain as well.
        cause = (
            f"was read with other options than in training ({' and '.join(options)} "
            "there), or has changed since"
        )
    else:
        cause = "has changed since the model was trained on it"
    warn(
        args.command,
        f"{args.data} {cause}: its rows differ from those the model file "
        "records, so its test part may contain training rows.",
    )


def _check_columns(args: Any, training: dict) -> None:
    """Raise ``ValueError`` if the header of a CSV ``--data`` names other
    feature columns, or the same in another order, than the CSV that
    trained the model, as its file records them."""
    from ..data import _is_number, csv_columns

    recorded = training.get("columns")
    path = csv_file(args.data)
    if recorded is None or path is None:
        return
    columns = csv_columns(path, csv_header(args, training))
    if columns is None:
        return
    label = _label_column(args, training)
    if columns == recorded:
        # The training file's header: the label keeps its position, which
        # names cannot tell where two columns share one.
        width = len(columns)
        trained = training.get("label_column")
        trained = -1 if trained is None else trained
        label = -1 if label is None else label
        if not (-width <= label < width and -width <= trained < width):
            # A label column outside the header, typed or recorded, is
            # named when the file is read.
            return
        label, trained = label % width, trained % width
        if label == trained:
            return
        raise ValueError(
            f"--label-column {args.label_column} reads column {label} "
            f"({columns[label]!r}) of {path} as the label, but the model was "
            f"trained on a CSV with this header and column {trained} "
            f"({columns[trained]!r}) as its label, so the features would shift. "
            f"Pass --label-column {trained}, or leave it out."
        )
    # The label column may move, as long as the features keep their order.
    features = _without_label(columns, label)
    trained_features = _feature_names(training)
    if features is not None and features == trained_features:
        return
    moved = [
        column
        for column in range(len(columns))
        if _without_label(columns, column) == trained_features
    ]
    if len(moved) == 1:
        raise ValueError(
            f"The header of {path} has the features the model was trained on, "
            f"in their order, once column {moved[0]} ({columns[moved[0]]!r}) is "
            f"taken as the label: pass --label-column {moved[0]}."
        )
    if moved:
        # Repeated names: dropping any of those columns leaves the same header.
        listed = ", ".join(map(str, moved))
        raise ValueError(
            f"The header of {path} has the features the model was trained on, "
            f"in their order, once one of columns {listed} (all named "
            f"{columns[moved[0]]!r}) is taken as the label: pass --label-column "
            "with the one that contains the labels."
        )
    index = next(
        (i for i, pair in enumerate(zip(columns, recorded)) if pair[0] != pair[1]),
        min(len(columns), len(recorded)),
    )
    found = repr(columns[index]) if index < len(columns) else "missing"
    expected = repr(recorded[index]) if index < len(recorded) else "absent"
    hint = ""
    if args.header == "yes" and all(map(_is_number, columns)):
        hint = (
            " Its first row contains numbers alone, so it may be a data row: "
            "pass --header auto or no."
        )
    raise ValueError(
        f"The header of {path} differs from that of the CSV the model was "
        f"trained on: column {index} (counted from 0) is {found} here and "
        f"{expected} there. Pass the feature columns of the training data in "
        f"their order, and --label-column where the label column moved.{hint}"
    )


def _use_training_data(args: Any, training: dict, trained_on: str) -> None:
    """Set ``args.data`` and ``args.labels`` to the files that trained the
    model, as its training record names them, when they are files.

    Raises:
        ValueError: if a recorded file no longer exists, because the digits
            in its place would be scaled and scored as the model's data.
    """
    data, labels = data_file(training.get("data")), data_file(training.get("labels"))
    if data is None:
        return
    from ..io import missing, special_file

    absent = [path for path in (data, labels) if path and not path.is_file()]
    if absent:
        options = "--data" if labels is None else "--data and --labels"
        path = absent[0]
        if path.is_dir():
            reason = "is a folder"
        elif path.exists():
            reason = f"is {special_file(path) or 'not a regular file'}"
        else:
            reason = missing(path)
        raise ValueError(
            f"The model was trained with {trained_on}, but {path} {reason}; "
            f"pass that data, or a copy, as {options}."
        )
    if labels is not None:
        from ..data import file_kind

        kind = file_kind(data)
        if kind != "idx":
            # resgrad train records --labels only beside IDX images.
            raise ValueError(
                f"The model file {args.model} records --labels {labels} beside "
                f"--data {data}, a {kind} file that contains its own labels, so the "
                f"model file is damaged; pass --data {data} alone, or train the "
                "model again."
            )
    args.data = str(data)
    args.labels = None if labels is None else str(labels)


def _trained_with(training: dict) -> str | None:
    """Return the ``--data`` and ``--labels`` options that trained a model,
    as its file records them, or ``None`` for a file without a record."""
    data, labels = training.get("data"), training.get("labels")
    if data is None:
        return None
    return f"--data {data}" + ("" if labels is None else f" --labels {labels}")


def _same_source(trained_on: str | None, data: str | None) -> bool:
    """Return whether the recorded ``trained_on`` and ``data``, two --data
    values, name the same data set (``None`` and ``digits`` both name the
    digits)."""
    first, second = data_file(trained_on), data_file(data)
    if first is None or second is None:
        return first is second
    return _same_file(first, second)


def _other_csv_options(
    args: Any, training: dict, width: int | None = None, read: bool = False
) -> list[str]:
    """Return the recorded ``--header`` and ``--label-column`` options that
    trained the model, where the command line passes other values. Given
    the CSV's number of columns ``width``, two values of one column, such
    as -1 and 3 of 4, count as the same. With ``read``, the CSV has been
    read, and ``auto`` counts as the choice it makes for its first row."""
    options = []
    header = _recorded_header(training)
    typed_header = args.header
    if read and "auto" in (typed_header, header) and typed_header != header:
        from ..data import csv_columns

        path = csv_file(args.data)
        found = path is not None and csv_columns(path, "auto") is not None
        detected = "yes" if found else "no"
        typed_header = detected if typed_header == "auto" else typed_header
        header_read = detected if header == "auto" else header
    else:
        header_read = header
    if typed_header is not None and header is not None and typed_header != header_read:
        options.append(f"--header {header}")
    # A column left out (None) is the last one.
    recorded = training.get("label_column")
    recorded = -1 if recorded is None else recorded
    typed, column = args.label_column, recorded
    if typed is not None and width is not None and -width <= typed < width:
        typed, column = typed % width, column % width
    if typed is not None and typed != column:
        options.append(f"--label-column {recorded}")
    return options


def csv_header(args: Any, training: dict) -> bool | str:
    """Return ``load_csv``'s ``header`` for ``--header``; without it, the
    choice that trained the model when ``--data`` is that CSV file, else
    ``"auto"``.

    Another CSV file gets ``"auto"``, because the choice was made for the
    first row of the training file.
    """
    choice = args.header
    if choice is None:
        recorded = _recorded_header(training)
        use = recorded is not None and csv_file(args.data) is not None
        use = use and _same_source(training.get("data"), args.data)
        choice = recorded if use else "auto"
    return HEADER_CHOICES[choice]


def _recorded_header(training: dict) -> str | None:
    """Return the ``--header`` that a model file records, or ``None`` where
    it records none; ``training_record`` has checked it."""
    return training.get("header")


def _label_column(args: Any, training: dict) -> int | None:
    """Return ``--label-column``; without it, the label column that trained
    the model for a CSV ``--data``, else ``None`` (the last column, checked
    against the header)."""
    if args.label_column is not None:
        return args.label_column
    recorded = training.get("label_column")
    if recorded is None or csv_file(args.data) is None:
        return None
    return recorded


def _warn_on_other_split(args: Any, training: dict, data: Any) -> None:
    """Warn when ``args`` split the data that the model was trained on with
    another test size or seed, so that its test part contains training rows.

    ``data`` is the ``Dataset`` that ``args`` loaded. Model files record the
    split and the digest of the training rows from this version on; files
    without a digest are matched by the name of the data file.
    """
    if "test_size" not in training or "split_seed" not in training:
        return
    if args.command == "check":
        # Theorem 1 holds on any rows, seen in training or not.
        return
    if not _same_data(args, training, data):
        return
    split = (args.test_size, args.split_seed)
    if split == (training["test_size"], training["split_seed"]):
        return
    warn(
        args.command,
        "the model was trained on a split with "
        f"--test-size {training['test_size']} --split-seed "
        f"{training['split_seed']}, so the test part of --test-size "
        f"{args.test_size} --split-seed {args.split_seed} contains training rows; "
        f"pass --test-size {training['test_size']} --split-seed "
        f"{training['split_seed']} to measure on unseen rows.",
    )


def _warn_on_clipping(args: Any, training: dict, data: Any) -> None:
    """Warn about the features of which the model's scaling clipped more than
    half the values, which then mostly lie outside the training range, as
    a column in other units does.

    New rows of the training data's kind put a few values beyond the range
    of the training part, so fewer clipped values are no sign of a problem.
    """
    if data.clipped is None or _same_data(args, training, data):
        return
    rows = len(data.y_train) + len(data.y_test)
    (features,) = (2 * data.clipped > rows).nonzero()
    if features.size == 0:
        return
    names = _feature_names(training)
    listed = ", ".join(
        str(index) if names is None else f"{index} ({names[index]})"
        for index in features[:10]
    )
    more = f" and {features.size - 10} more" if features.size > 10 else ""
    warn(
        args.command,
        f"most values of feature(s) {listed}"
        f"{more} (counted from 0) of --data lie outside the range of the "
        "training data and were clipped to it; check that those columns have "
        "the units and order of the training data.",
    )


def absolute(value: str | Path | None) -> str | None:
    """Return a --data, --labels or --model value as an absolute path, with
    links kept as named, or ``None`` and ``"digits"`` as they are."""
    if value is None or value == "digits":
        return value
    return os.path.abspath(value)


def files_record(args: Any) -> dict[str, Any]:
    """Return the model, data and split that a command read, for the files
    it writes."""
    return {
        "model": absolute(args.model),
        "data": absolute(args.data) or "digits",
        "labels": absolute(args.labels),
        "test_size": args.test_size,
        "split_seed": args.split_seed,
    }


def _feature_names(training: dict) -> list[str] | None:
    """Return the header names of the features of the CSV that trained a
    model, the label column left out, or ``None`` without a record."""
    columns = training.get("columns")
    if not columns:
        return None
    return _without_label(columns, training.get("label_column"))


def _without_label(columns: list[str], label: int | None) -> list[str] | None:
    """Return ``columns`` without the label column ``label`` (the last for
    ``None``), or ``None`` where ``label`` lies outside them."""
    if label is not None and not -len(columns) <= label < len(columns):
        return None
    label = len(columns) - 1 if label is None else label % len(columns)
    return [name for index, name in enumerate(columns) if index != label]


def data_file(value: str | Path | None) -> Path | None:
    """Return the file of a --data, --labels or --model value, or ``None``
    for an absent value or the bundled digits."""
    return None if value in (None, "digits") else Path(value)


def csv_file(value: str | Path | None) -> Path | None:
    """Return the file of a --data value that names a CSV file, else
    ``None``."""
    from ..data import file_kind

    path = data_file(value)
    return path if path is not None and file_kind(path) == "csv" else None


def _input_files(args: Any) -> dict[str, Path]:
    """Return the files that ``--model``, ``--data`` and ``--labels`` name,
    keyed by option, leaving out options that are absent or name no file."""
    files = {}
    for option in ("model", "data", "labels"):
        path = data_file(getattr(args, option, None))
        if path is not None:
            files[f"--{option}"] = path
    return files


def _same_file(path: Path, source: Path) -> bool:
    """Return whether ``path`` and ``source`` both exist and are one file."""
    return path.exists() and source.exists() and os.path.samefile(path, source)


def check_not_input(args: Any, option: str, path: Path) -> None:
    """Raise ``ValueError`` if the output ``path`` of ``option`` is a file
    that the command reads, which writing it would destroy."""
    for name, source in _input_files(args).items():
        if _same_file(path, source):
            raise ValueError(
                f"{option} {path} is the {name} file, which writing it would "
                f"replace; pass another {option} path."
            )


def _same_data(args: Any, training: dict, data: Any) -> bool:
    """Return whether ``data``, loaded by ``args``, contains the rows the
    model was trained on."""
    digest = training.get("data_sha256")
    if digest is not None:
        return data.digest == digest
    trained_on = data_file(training.get("data"))
    loaded_from = data_file(args.data)
    if trained_on is None or loaded_from is None:
        return trained_on is loaded_from
    return trained_on.name == loaded_from.name


def _check_not_empty(value: str, expected: str) -> None:
    """Raise ``ArgumentTypeError`` for an empty path, which ``Path`` would
    read as the current folder."""
    if not value.strip():
        kind = "empty" if not value else f"blank ({value!r})"
        raise argparse.ArgumentTypeError(f"the path is {kind}; pass {expected}.")


def folder_path(value: str) -> Path:
    """Return ``value`` as the path of an output folder that the command
    checks later, for ``--out`` options."""
    _check_not_empty(value, "the name of a folder, such as runs/first")
    return Path(value)


def existing_file(value: str) -> Path:
    """Return ``value`` as a path to an existing file, for ``--model`` options."""
    from ..io import check_read_path, missing, special_file

    _check_not_empty(value, "the path of an existing file")
    try:
        check_read_path(value, "the path")
    except NotADirectoryError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; expected a file.")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value} {missing(path)}; check the path.")
    kind = special_file(path)
    if kind is not None:
        raise argparse.ArgumentTypeError(f"{value} is {kind}; expected a file.")
    return path


def output_file(value: str, example: str = "model.npz") -> Path:
    """Return ``value`` as the path of a file to write, in an existing,
    writable folder; ``example`` is a file name that messages suggest."""
    from ..io import check_writable, folder_ending, folder_ending_message, special_file

    _check_not_empty(value, f"a file name, such as {example}")
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r} is a folder; expected a file name, e.g. {Path(value, example)}."
        )
    if folder_ending(value) is not None:
        raise argparse.ArgumentTypeError(
            folder_ending_message(value, example).rstrip(".")
        )
    kind = special_file(path)
    if kind is not None:
        raise argparse.ArgumentTypeError(
            f"{value} is {kind}, not a regular file; expected the name of a "
            "regular file or a new one."
        )
    _check_no_file_above(path, value)
    # Missing folders are made by the command; the nearest existing one
    # must take them.
    existing = path.parent
    while not existing.is_dir():
        existing = existing.parent
    try:
        check_writable(existing, f"cannot write {value}")
    except PermissionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def checkpoint_file(value: str) -> Path:
    """Return ``value`` as the path of a checkpoint to write (``output_file``)."""
    return output_file(value, "model.checkpoint.npz")


def output_folder(value: str) -> Path:
    """Return ``value`` as the path of a folder to write into (made if missing)."""
    from ..io import special_file

    _check_not_empty(value, "the name of a folder, such as out")
    path = Path(value)
    if path.exists() and not path.is_dir():
        kind = special_file(path) or "a file"
        raise argparse.ArgumentTypeError(
            f"{value} is {kind}; expected a folder for the output files."
        )
    _check_no_file_above(path, value)
    return path


def _check_no_file_above(path: Path, value: str) -> None:
    """Raise ``ArgumentTypeError`` if the nearest existing path above
    ``path`` is a file, which no folder can be made in."""
    from ..io import file_above

    blocking = file_above(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f"{blocking} in {value} is a file, not a folder; pass a path inside "
            "a folder."
        )


def add_overwrite_argument(parser: Any) -> None:
    """Add ``--overwrite``, which lets a command write into a non-empty ``--out``."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that is not empty, replacing the files "
        "of the same name; other files in it stay as they are",
    )


@dataclass(frozen=True)
class OutputFolder:
    """A command's output folder as ``check_output_folder`` found it."""

    path: Path
    overwrite: bool
    # Whether it was absent then, so that a folder found there later was
    # made by another command.
    absent: bool


def check_output_folder(out: Path, overwrite: bool) -> OutputFolder:
    """Check, before any work starts, that ``out`` may take a command's files.

    ``out`` must be absent or an empty folder, or any folder with
    ``overwrite``: files of an earlier run left beside the new ones would
    read as part of it. The folder is not made here. ``make_output_folder``
    makes it right before the first file is written, so a command that
    fails on bad input leaves nothing behind.

    Raises:
        ValueError: ``out`` is a file, or a symbolic link to nothing.
        NotADirectoryError: a path above ``out`` is a file.
        FileExistsError: ``out`` is a folder with files and ``overwrite`` is false.
        PermissionError: no file can be made in ``out``, or in the folder
            that it will be made in.
    """
    from ..io import check_writable, file_above, special_file

    out = Path(out)
    if ".." in out.parts:
        # "a/missing/.." names a, but exists() is false for it, and
        # removing the folder made for it would remove a.
        out = out.resolve()
    if out.exists() and not out.is_dir():
        kind = special_file(out) or "a file"
        raise ValueError(
            f"--out {out} is {kind}; expected a folder for the output files."
        )
    if out.is_symlink() and not out.exists():
        raise ValueError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does "
            "not exist; remove the link or pass another folder."
        )
    blocking = file_above(out)
    if blocking is not None:
        raise NotADirectoryError(
            f"--out {out}: {blocking} is a file, not a folder; pass a path inside "
            "a folder."
        )
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(
            f"--out {out} is not empty; choose a new folder, or pass --overwrite "
            "to write into it (files of the same name are replaced, others stay)."
        )
    # The folder or the one that it will be made in.
    existing = next((path for path in (out, *out.parents) if path.exists()), None)
    if existing is not None and existing.is_dir():
        check_writable(existing, f"Cannot write --out {out}")
    return OutputFolder(out, overwrite, absent=not out.exists())


def make_output_folder(folder: OutputFolder) -> list[Path]:
    """Make the folder for a command's files, and its missing parents.

    Return the folders that this call made, from the highest down, which
    ``remove_output_folder`` may remove again. Each is made on its own, so
    a folder that another command makes at the same moment is not counted.
    Without ``overwrite`` the folder must be as ``check_output_folder``
    found it before the work began: a folder that appeared since, or gained
    files, belongs to another command that may be writing there.

    Raises:
        FileExistsError: the folder was made, or gained files, since the check.
    """
    out = folder.path
    made = _make_folder(out)
    if out in made or folder.overwrite:
        return made
    if folder.absent or not out.is_dir() or any(out.iterdir()):
        remove_output_folder(out, made)
        raise FileExistsError(
            f"--out {out} was made or filled by another command while this "
            "one ran; run again with another --out, or pass --overwrite."
        )
    return made


def lock_output_folder(folder: OutputFolder, made: list[Path]) -> int | None:
    """Take the lock of the folder that ``make_output_folder`` returned
    ``made`` for, and return it for ``_lock.unlock_folder``.

    Under the lock the folder is checked again, because another command may
    have filled it since.

    Two commands given one empty folder at once both pass the checks. The
    lock keeps the second out while the first writes, and so keeps the
    second's clean-up from removing the first one's files. A folder that
    this command made and could not lock is the other command's now, so it
    stays. After any other error before the lock, such as Ctrl-C, the
    folders made for this command go again while they are empty.

    Raises:
        FileExistsError: another command holds the lock, or has written into
            the folder meanwhile and ``overwrite`` is false.
    """
    out = folder.path
    try:
        lock = _lock.lock_folder(out, f"--out {out}")
    except FileExistsError:
        raise
    except BaseException:
        # Ctrl-C or an error before the lock: the folders made for this
        # command go again while empty. rmdir never removes files.
        remove_empty(made)
        raise
    try:
        if out not in made and not folder.overwrite and any(out.iterdir()):
            raise FileExistsError(
                f"--out {out} was filled by another command while this one "
                "ran; run again with another --out, or pass --overwrite."
            )
    except BaseException:
        _lock.unlock_folder(lock)
        raise
    return lock


def make_parents(*files: Path) -> list[Path]:
    """Make the missing folders above each of ``files``; return those made,
    from the highest down, for ``remove_empty`` to remove again."""
    return [level for file in files for level in _make_folder(Path(file).parent)]


def _make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents, each on its own, and return
    those that this call made, from the highest down.

    A folder that another command makes at the same moment is not counted.
    """
    made = []
    for level in reversed([folder, *folder.parents]):
        if level.is_dir():
            continue
        try:
            level.mkdir()
        except FileExistsError:
            continue
        made.append(level)
    return made


def remove_empty(made: list[Path]) -> None:
    """Remove the folders of ``made`` that are empty, from the lowest up.

    A folder that contains a file stays, and so do the folders above it.
    ``made`` may contain several chains of folders.
    """
    for level in reversed(made):
        with contextlib.suppress(OSError):
            level.rmdir()


def remove_output_folder(out: Path, made: list[Path]) -> None:
    """Remove what ``make_output_folder`` made for ``out``: the folder with
    its files, and the parents in ``made`` while they are empty. A parent
    that another command has written into stays."""
    if out in made:
        shutil.rmtree(out, ignore_errors=True)
    remove_empty([level for level in made if level != out])


def file_times(out: Path, pattern: str = "*") -> dict[str, int]:
    """Return the modification time of each file in ``out`` that matches
    ``pattern``, by name, to tell the files this run wrote from those of an
    earlier run (``--overwrite``). A symbolic link counts by its own time,
    so a dangling one does not fail."""
    times = {}
    for path in out.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            # Removed meanwhile, between the listing and the lstat.
            times[path.name] = path.lstat().st_mtime_ns
    return times


@contextlib.contextmanager
def writing_into(folder: OutputFolder, command: str) -> Iterator[Path]:
    """Make the output folder for the ``with`` block that writes the files.

    Ctrl-C or an error in the block removes a folder that the block made,
    with the parents made for it, and empties a folder that was empty. In a
    folder that held files (``--overwrite``), where the block has written
    some, the interrupt or a warning of ``resgrad command`` names the folder
    as a mix of new and earlier files, since the earlier ones are gone.

    The block holds the folder's lock (``_lock.lock_folder``). Another
    command that writes into the same folder meanwhile stops with an error
    before it writes or removes anything.
    """
    out = folder.path
    made = make_output_folder(folder)
    lock = lock_output_folder(folder, made)
    try:
        # None where this command made the folder.
        earlier = None if out in made else set(out.iterdir())
        times = file_times(out) if earlier else {}
        try:
            yield out
        except BaseException as error:
            if out in made:
                remove_output_folder(out, made)
            elif earlier == set():
                for path in out.iterdir():
                    with contextlib.suppress(OSError):
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path)
                        else:
                            path.unlink()
            elif earlier and file_times(out) != times:
                report_incomplete(
                    error,
                    command,
                    f"{out} is incomplete, with some files of this run and "
                    "some of an earlier one; run the command again to complete it",
                )
            raise
    finally:
        _lock.unlock_folder(lock)


@contextlib.contextmanager
def second_interrupt_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while the block runs, such as the report of an
    interrupt, which a second Ctrl-C would otherwise cut short."""
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may set signal handlers.
        yield
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def report_incomplete(error: BaseException, command: str, note: str) -> None:
    """Report ``note`` on a folder that ``error`` left half written.

    An interrupt is raised again with the note as its message, which main
    prints after "interrupted; ". Another error gets the note as a warning
    of ``resgrad command``, and the caller raises the error again.
    """
    if isinstance(error, KeyboardInterrupt):
        raise KeyboardInterrupt(note) from None
    if isinstance(error, Exception):
        warn(command, note)


def _check_recorded_test_size(args: Any) -> None:
    """Reject a test fraction read from the model file outside (0, 1), which
    only a damaged file records."""
    value = args.test_size
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(
            f"The model file {args.model} records the test fraction "
            f"{_arrays._short_repr(value)}, "
            "outside (0, 1), so the file is damaged; pass --test-size, or train "
            "the model again."
        )


def _check_recorded_scaling(args: Any, scaling: Any, model: ResidualMLP) -> None:
    """Reject a feature scaling in the model file that no data could fix, so
    that it is not blamed on the data file."""
    from ..data import _scaling_arrays

    try:
        _scaling_arrays(scaling, model.sizes[0], "the model")
    except ValueError as error:
        problem = str(error).split(";")[0]
        raise ValueError(
            f"The model file {args.model} is damaged: its feature scaling is "
            f"invalid ({problem}); train the model again."
        ) from None


def _check_scaling_entries(args: Any, scaling: Any, data: Any) -> None:
    """Raise ``ValueError`` if the model file scales the features of its own
    training data, which are not images, with a single entry.

    ``resgrad train`` records one entry for all pixels of images and one per
    feature otherwise, so the file was edited. Other data may be the
    training images flattened, which the single entry fits.
    """
    features = data.x_train.shape[1]
    if data.image_shape is not None or features == 1 or not isinstance(scaling, dict):
        return
    for key, value in scaling.items():
        if isinstance(value, list) and len(value) == 1:
            raise ValueError(
                f"The model file {args.model} is damaged: its feature scaling "
                f"{key} has one entry for the {features} features of "
                f"{args.data}, the data it was trained on, which are not "
                "images and take one entry each; train the model again."
            )


def _check_fits(
    data: Any, model: ResidualMLP, trained_on: str | None, given: str | None
) -> None:
    """Check that ``data``, loaded from the --data value ``given``, has the
    model's input width and only its classes.

    ``trained_on``, the --data (and --labels) options that trained the model
    when they name other data than the ones given, is named as the fix.

    Raises:
        ValueError: the feature count differs from ``model.sizes[0]``, or a
            label of the train or test split is outside ``[0, model.n_classes)``.
    """
    import numpy as np

    width_fix = "pass data of the width the model was trained on"
    label_fix = "pass data labelled like the data the model was trained on"
    if trained_on is not None:
        width_fix = label_fix = (
            f"the model was trained with {trained_on}, so pass that data again"
        )
    source = "--data" if given is not None else "the default data (the digits)"
    features = int(np.shape(data.x_train)[1])
    if features != model.sizes[0]:
        raise ValueError(
            f"{source} has {plural(features, 'feature')} but the model takes "
            f"{model.sizes[0]}; {width_fix}."
        )
    for split, labels in (("test", data.y_test), ("train", data.y_train)):
        labels = np.asarray(labels)
        if labels.size == 0:
            continue
        outside = labels[(labels < 0) | (labels >= model.n_classes)]
        if outside.size:
            raise ValueError(
                f"{source} has label {outside[0]} in its {split} split, outside the "
                f"model's {model.n_classes} classes [0, {model.n_classes}); "
                f"{label_fix}."
            )


class Typed(argparse.Action):
    """Store an option's value and record in ``args.typed`` that it was typed.

    A command can then reject an option that its other options leave unread,
    even when the user typed the default value.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.typed = getattr(namespace, "typed", frozenset()) | {self.dest}


def typed_options(args: argparse.Namespace, names: Iterable[str]) -> list[str]:
    """Return ``--name value`` for each of ``names`` (argument dests) that the
    user typed, in the order given."""
    typed = getattr(args, "typed", frozenset())
    return [
        f"--{name.replace('_', '-')} {_shown(getattr(args, name))}"
        for name in names
        if name in typed
    ]


def _shown(value: Any) -> str:
    """Return an option's value as the user could have typed it."""
    if isinstance(value, list):
        return ",".join(_shown(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def plural(count: int, word: str) -> str:
    """Return ``count`` and ``word``, with an s unless ``count`` is 1."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _number(value: str, kind: type) -> Any:
    try:
        number = kind(value)
    except ValueError:
        article = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {article}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


INT64_MAX = 2**63 - 1


def _int_at_least(value: str, minimum: int | None = None) -> int:
    """Parse an integer of at least ``minimum`` (``None``: -2**63) that fits
    in int64, checking ``minimum`` first so that the message gives the
    option's own range."""
    number = _number(value, int)
    if minimum is not None and number < minimum:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {minimum}, got {number}"
        )
    if not -INT64_MAX - 1 <= number <= INT64_MAX:
        # The model file records seeds and counts as int64, and the other
        # commands read a larger one as damage.
        smallest = "-2**63" if minimum is None else str(minimum)
        raise argparse.ArgumentTypeError(
            f"expected an integer from {smallest} to 2**63 - 1 ({INT64_MAX}), "
            f"got {value!r}"
        )
    return number


def _integer(value: str) -> int:
    return _int_at_least(value)


def non_negative_int(value: str) -> int:
    return _int_at_least(value, 0)


def positive_int(value: str) -> int:
    return _int_at_least(value, 1)


def thread_count(value: str) -> int:
    """Accept an integer from 1 to the number of CPUs this process may use."""
    number = positive_int(value)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if number > cpus:
        raise argparse.ArgumentTypeError(
            f"{number} threads are more than the {plural(cpus, 'CPU')} this "
            f"process may use, and extra threads only contend for them; pass at "
            f"most {cpus}"
        )
    return number


def positive_float(value: str) -> float:
    number = _number(value, float)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return number


def fraction(value: str) -> float:
    """Parse a fraction in ``[0, 1)``, where 0 turns the feature off."""
    number = _number(value, float)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return number


def open_fraction(value: str) -> float:
    """Parse a fraction in ``(0, 1)``."""
    number = _number(value, float)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {value}")
    return number
