"""``resgrad train``: train a residual network and save it."""

from __future__ import annotations

import argparse
import itertools
import re
import time
from pathlib import Path
from typing import Any

from .. import _lock
from ._common import (
    Typed,
    absolute,
    add_data_arguments,
    check_not_input,
    checkpoint_file,
    csv_file,
    csv_header,
    fraction,
    load_dataset,
    make_parents,
    non_negative_int,
    output_file,
    plural,
    positive_float,
    positive_int,
    progress_bar,
    remove_empty,
    second_interrupt_ignored,
    typed_options,
    warn,
)


def _int_list(value: str) -> list[int]:
    parts = value.split(",")
    if value and not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers with no empty item, got {value!r}"
        )
    try:
        numbers = [int(part) for part in parts if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return numbers


def _width_list(value: str) -> list[int]:
    """Parse ``--widths``: comma-separated integers, or an empty value for a
    network of one block."""
    return [] if not value.strip() else _int_list(value)


def _show_int_list(numbers: list[int]) -> str:
    """Return ``numbers`` as ``_int_list`` parses them, e.g. ``256,256``."""
    return ",".join(str(number) for number in numbers)


def _recipe() -> dict[str, Any]:
    """Return the command-line defaults, taken from ``DEFAULT_RECIPE``."""
    from ..training import DEFAULT_RECIPE

    model, fit = DEFAULT_RECIPE["model"], DEFAULT_RECIPE["fit"]
    return {
        "widths": model["sizes"][1:-1],
        "hidden": [model["hidden"]],
        "activation": model["activation"],
        "shortcut": model["shortcut"],
        "init": model["init"],
        "optimizer": fit["optimizer"],
        "epochs": fit["epochs"],
        "batch_size": fit["batch_size"],
        "patience": 10,
        "validation": fit["validation"] or 0.0,
    }


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the architecture and training options, with ``DEFAULT_RECIPE``'s
    values as defaults, except the learning rate, which defaults to that of
    the chosen optimizer."""
    from ..activations import ACTIVATIONS
    from ..model import INITIALIZERS, SHORTCUTS
    from ..training import DEFAULT_LEARNING_RATES

    recipe = _recipe()

    group = parser.add_argument_group("network")
    group.add_argument(
        "--widths",
        type=_width_list,
        default=recipe["widths"],
        help="output widths of the blocks before the last, comma-separated, or "
        "'' for a single block; the input width and the class count come from "
        f"the data (default: {_show_int_list(recipe['widths'])})",
    )
    group.add_argument(
        "--hidden",
        type=_int_list,
        default=recipe["hidden"],
        help="hidden width q of every block, or one per block, comma-separated "
        f"(default: {_show_int_list(recipe['hidden'])})",
    )
    group.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        default=recipe["activation"],
        help="activation g inside every block and between blocks (default: %(default)s)",
    )
    group.add_argument(
        "--shortcut",
        choices=SHORTCUTS,
        default=recipe["shortcut"],
        help="shortcut of every block; with identity, a block that changes "
        "width gets a learned one (default: %(default)s)",
    )
    group.add_argument(
        "--init",
        choices=INITIALIZERS,
        default=recipe["init"],
        help="weight initialisation (default: %(default)s)",
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "adam"),
        default=recipe["optimizer"],
        help="optimizer (default: %(default)s)",
    )
    rates = ", ".join(
        f"{rate:g} for {name}" for name, rate in DEFAULT_LEARNING_RATES.items()
    )
    group.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"learning rate (default: {rates})",
    )
    group.add_argument(
        "--epochs",
        type=positive_int,
        default=recipe["epochs"],
        help="passes over the training samples (default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=recipe["batch_size"],
        help="samples per mini-batch (default: %(default)s)",
    )
    group.add_argument(
        "--patience",
        type=positive_int,
        action=Typed,
        default=recipe["patience"],
        help="epochs without a lower validation loss before stopping "
        "(default: %(default)s); needs --validation",
    )
    group.add_argument(
        "--validation",
        type=fraction,
        default=recipe["validation"],
        help="fraction of the training split held out for early stopping; 0 "
        "trains on all of it for --epochs (default: %(default)s)",
    )
    group.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the weights and the batches (default: %(default)s)",
    )


def hidden_widths(args: argparse.Namespace) -> list[int]:
    """Return one hidden width per block from ``--hidden``.

    Raises ``ValueError`` when their count does not fit ``--widths``. Both
    options are enough, so commands call this before loading the data.
    """
    depth = len(args.widths) + 1
    hidden = args.hidden * depth if len(args.hidden) == 1 else args.hidden
    if len(hidden) != depth:
        widths = _show_int_list(args.widths) or "''"
        raise ValueError(
            f"--hidden {_show_int_list(args.hidden)} gives {len(hidden)} hidden "
            f"widths, but --widths {widths} makes {plural(depth, 'block')} (one "
            f"more than the widths); pass one hidden width, or {depth}."
        )
    return hidden


def build_model(args: argparse.Namespace, data: Any) -> Any:
    """Create the initial network for ``data`` from the options."""
    from ..model import ResidualMLP

    sizes = [data.x_train.shape[1], *args.widths, data.n_classes]
    hidden = hidden_widths(args)
    shortcuts = [
        args.shortcut if args.shortcut != "identity" or p_in == p_out else "learned"
        for p_in, p_out in itertools.pairwise(sizes)
    ]
    if args.shortcut == "identity" and "identity" not in shortcuts:
        warn(
            args.command,
            f"--shortcut identity applies to no block: every block of the widths "
            f"{sizes} changes width, so each gets a learned shortcut; repeat a "
            f"width in --widths, such as {sizes[0]},{sizes[0]}, for identity "
            "blocks.",
        )
    rows = max(len(data.y_train), len(data.y_test))
    _check_training_memory(args, sizes, hidden, shortcuts, rows)
    return ResidualMLP.init(
        sizes,
        hidden,
        activation=args.activation,
        shortcut=shortcuts,
        init=args.init,
        seed=args.seed,
    )


# Copies of the weights that training keeps at once: the weights, their
# gradients, the optimizer's state (two for Adam, one for momentum), the
# weights of the best epoch, and about two temporaries of the update.
WEIGHT_COPIES = {"sgd": 5, "momentum": 6, "adam": 7}
# Arrays per unit and row that the recurrence keeps: u, h and e_hat for
# each hidden unit, z, a and e for each output unit.
ARRAYS_PER_UNIT = 3


def _check_training_memory(
    args: argparse.Namespace,
    sizes: list[int],
    hidden: list[int],
    shortcuts: list[str],
    rows: int,
) -> None:
    """Raise ``ValueError`` before the network is made when training it
    would need more memory than is available, which NumPy would otherwise
    report in its own words or the kernel end by killing the process."""
    from ..data import _available_memory

    available = _available_memory()
    if available is None:
        return
    weights = 0
    units = 0
    for (p_in, p_out), q, shortcut in zip(
        itertools.pairwise(sizes), hidden, shortcuts, strict=True
    ):
        weights += q * p_in + p_out * q + q + p_out
        weights += p_out * p_in if shortcut == "learned" else 0
        units += q + p_out
    copies = WEIGHT_COPIES[args.optimizer]
    needed = 8 * (copies * weights + ARRAYS_PER_UNIT * units * rows)
    if needed > available:
        widths = _show_int_list(args.widths) or "''"
        raise ValueError(
            f"--widths {widths} with --hidden {_show_int_list(hidden)} needs about "
            f"{needed / 2**30:.3g} GiB to train ({weights:,} weights, held "
            f"{copies} times over in training with {args.optimizer}, and the "
            f"activations of {rows:,} rows; an estimate), more than the "
            f"{available / 2**30:.1f} GiB of memory available; pass smaller "
            "widths, fewer blocks or a smaller data set."
        )


def check_patience(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for a typed --patience without a validation
    split, before the data is read."""
    if not args.validation and typed_options(args, ["patience"]):
        raise ValueError(
            f"--patience {args.patience} applies only to early stopping, which "
            "needs a validation split; add --validation, such as 0.1, or drop "
            "--patience."
        )


def train_model(args: argparse.Namespace, data: Any, progress: Any) -> Any:
    """Build and train the network; return the ``FitResult``.

    With ``args.checkpoint`` set (``resgrad train``), a checkpoint is written
    every ``args.checkpoint_every`` epochs, and ``args.resume`` continues
    from it.
    """
    from ..training import DEFAULT_LEARNING_RATES, fit

    if args.lr is None:
        args.lr = DEFAULT_LEARNING_RATES[args.optimizer]
    check_patience(args)
    if args.validation and args.validation > 0.5:
        import numpy as np

        from ..data import train_test_split

        # The split that fit makes, which keeps a row of every class.
        rows = np.arange(len(data.y_train))
        train_rows = train_test_split(rows, data.y_train, args.validation, args.seed)[0]
        warn(
            args.command,
            f"--validation {args.validation:g} holds out more of the training "
            f"part than it trains on, {len(train_rows)} of {len(rows)} rows left to "
            "train; early stopping needs only a small split, such as 0.1.",
        )
    _warn_on_small_parts(args, data)
    checkpoint = getattr(args, "checkpoint", None)
    return fit(
        build_model(args, data),
        data.x_train,
        data.y_train,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation=args.validation or None,
        patience=args.patience,
        progress=progress,
        checkpoint=checkpoint,
        resume=bool(getattr(args, "resume", False)) and checkpoint is not None,
        checkpoint_every=getattr(args, "checkpoint_every", 1),
    )


def _warn_on_small_parts(args: argparse.Namespace, data: Any) -> None:
    """Warn when the test part is larger than the training part, and when a
    class has no test row, as a class of one row has none."""
    import numpy as np

    train, test = len(data.y_train), len(data.y_test)
    share = test / (train + test)
    if test > train:
        warn(
            args.command,
            f"--test-size {args.test_size:g} leaves {train} of {train + test} "
            "rows to train on; a test part of a quarter, the default 0.25, "
            "measures the accuracy as well.",
        )
    elif not args.test_size / 2 <= share <= 2 * args.test_size:
        warn(
            args.command,
            f"--test-size {args.test_size:g} gave a test part of {test} of "
            f"{train + test} rows ({share:.2g}): the split puts a row of every "
            "class of two or more rows in each part and keeps a class of one "
            "row for training, whatever the fraction asked for.",
        )
    # The stratified split gives every class of two or more rows a test row.
    untested = np.setdiff1d(data.y_train, data.y_test).tolist()
    if untested:
        listed = ", ".join(map(str, untested))
        if len(untested) == 1:
            subject, pronoun = f"class {listed} has a single row", "it"
        else:
            subject, pronoun = f"classes {listed} have a single row each", "them"
        warn(
            args.command,
            f"{subject}, which the split keeps for training, so the test part "
            f"has no sample of {pronoun} and the test accuracy leaves {pronoun} out.",
        )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a residual network by the explicit gradients and save it",
        description="Train a residual network with the backpropagation recurrence "
        "(no autograd) and save it as a .npz model file.",
    )
    add_data_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--out",
        type=output_file,
        default="model.npz",
        help="the model file to write; missing folders above it are made "
        "(default: model.npz)",
    )
    parser.add_argument(
        "--checkpoint",
        type=checkpoint_file,
        default=None,
        metavar="PATH",
        help="the checkpoint written during the run and removed once the "
        "model is saved; missing folders above it are made, and removed again "
        "if the run leaves them empty. While a run writes it, a lock on the "
        "file of the same "
        "name plus '.lock' rejects a second run on it (default: the --out name "
        "with '.npz' replaced by '.checkpoint.npz', or with '.checkpoint.npz' "
        "added where it has no '.npz')",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=1,
        metavar="N",
        help="write the checkpoint every N epochs, and at the last one; an "
        "interrupt still writes the last finished epoch, so only a killed "
        "process loses up to N-1 epochs. Each write syncs the file to "
        "disk, which can take longer than an epoch of a small network "
        "(default: 1)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run that wrote the checkpoint, which needs the same "
        "data and training options; the result equals that of an "
        "uninterrupted run",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out model file, and start over when the "
        "checkpoint of an unfinished run exists; with --resume, only replace "
        "--out once the resumed run ends",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        args.checkpoint = _default_checkpoint(args.out)
    if args.checkpoint.resolve() == args.out.resolve():
        raise ValueError(
            f"--checkpoint {args.checkpoint} is the --out file; pick another name."
        )
    if args.out.resolve() == _lock.lock_path(args.checkpoint):
        # The lock file goes when the run ends, and the model with it.
        raise ValueError(
            f"--out {args.out} is the lock file of --checkpoint "
            f"{args.checkpoint}; pick another name."
        )
    check_not_input(args, "--out", args.out)
    check_not_input(args, "--checkpoint", args.checkpoint)
    # The lock covers the checks before training and the removal of the
    # checkpoint after it, and fit, which runs inside, finds it held.
    hint = "wait for that run to end, or pass another --out or --checkpoint."
    made_folders = make_parents(args.out, args.checkpoint)
    try:
        lock = _lock.acquire(args.checkpoint, hint, share=True)
        try:
            return _train_and_save(args)
        finally:
            _lock.release(lock)
    finally:
        # The folders made here that the run left empty go again: those of
        # a failed run without a checkpoint, and that of the checkpoint once
        # a finished run removed it.
        remove_empty(made_folders)


def _interrupt_note(
    args: argparse.Namespace, earlier: Any, saving: bool = False, out_before: Any = None
) -> str | None:
    """Return what an interrupted run leaves in its checkpoint, or ``None``
    where it left none. ``earlier`` is the checkpoint's identity before the
    run; ``saving`` is whether the model's save had started, and
    ``out_before`` is the identity of ``--out`` just before it."""
    if not args.checkpoint.is_file():
        return None
    if saving and _identity(args.out) != out_before:
        # The interrupt came after the model's file was renamed into place.
        return (
            f"{args.out} was saved before the interrupt, so the run is complete "
            f"and {args.checkpoint} can be removed"
        )
    if not args.resume and _identity(args.checkpoint) == earlier:
        return (
            f"no epoch of this run finished, so {args.checkpoint} is still "
            "the checkpoint of the earlier run"
        )
    return (
        f"{args.checkpoint} holds the last epoch saved"
        f"{_epochs_in(args.checkpoint, args.epochs)}; run the same command "
        "with --resume to continue"
    )


def _epochs_in(checkpoint: Path, epochs: int) -> str:
    """Return " (epoch k of n)" for the epochs that ``checkpoint`` records,
    or "" where it cannot be read."""
    from ..io import load_checkpoint

    try:
        header, _ = load_checkpoint(checkpoint)
        finished = len(header["history"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (epoch {finished} of {epochs})"


class _OutWrittenMeanwhile(FileExistsError):
    """The --out file of a training run appeared while it trained."""


def _default_checkpoint(out: Path) -> Path:
    """Return the checkpoint of a run that writes ``out``: ``model.npz``
    gives ``model.checkpoint.npz``, and ``val_0.5`` gives
    ``val_0.5.checkpoint.npz``, not ``val_0.checkpoint.npz``, which would
    also be that of ``val_0.25``."""
    if out.suffix == ".npz":
        return out.with_suffix(".checkpoint.npz")
    return out.with_name(f"{out.name}.checkpoint.npz")


def _model_file_problem(path: Path) -> str | None:
    """Return why ``path`` does not read as a resgrad model file, or
    ``None`` if it does.

    Only the reason is kept: the fix that the error gives for reading the
    file, such as passing it as --data, does not fit an --out to replace.
    """
    from ..io import read_metadata

    try:
        read_metadata(path)
    except (OSError, ValueError) as error:
        text = str(error)
        name = str(path) if text.startswith(str(path)) else ""
        reason = re.split(r"[.;] ", text[len(name) :], maxsplit=1)[0]
        return (name + reason).rstrip(".")
    return None


def _train_and_save(args: argparse.Namespace) -> int:
    from ..io import save
    from ..training import accuracy, check_checkpoint_target

    if not args.resume:
        if args.checkpoint == _default_checkpoint(args.out):
            # --overwrite does not replace it: it may be a file of the user's
            # that happens to have the name.
            name = "The default checkpoint (--out with .checkpoint.npz)"
            fix = "move or remove it, or pass another --checkpoint path"
        else:
            name, fix = "--checkpoint", "pass a new --checkpoint path, or leave it out"
        check_checkpoint_target(args.checkpoint, name, fix)
    hidden_widths(args)
    check_patience(args)
    if args.resume and not args.checkpoint.is_file():
        if args.out.exists():
            # The checkpoint is removed once the model is saved.
            raise FileNotFoundError(
                f"--resume: no checkpoint at {args.checkpoint}, and --out "
                f"{args.out} exists, so that run has finished; evaluate it with "
                f"resgrad evaluate --model {args.out}, or pass --overwrite "
                "without --resume to train again."
            )
        raise FileNotFoundError(
            f"--resume: no checkpoint at {args.checkpoint}; run without --resume "
            "to start over."
        )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(
            f"--out {args.out} already exists; pass --overwrite to replace it, "
            "or choose another --out."
        )
    problem = _model_file_problem(args.out) if args.out.exists() else None
    if problem is not None:
        # --overwrite replaces an earlier model, not a file of another kind
        # that the path names by mistake.
        raise FileExistsError(
            f"--out {args.out} does not read as a resgrad model, so --overwrite "
            f"does not replace it ({problem}); choose another --out, or move or "
            "remove that file."
        )
    if args.checkpoint.exists() and not (args.resume or args.overwrite):
        raise FileExistsError(
            f"{args.checkpoint} contains the checkpoint of an unfinished run; pass "
            "--resume to continue it, or --overwrite to start over."
        )
    if args.out.suffix.lower() != ".npz":
        # After the checks that refuse the command, and before the data is
        # read, so that a long run does not hide it.
        warn(
            args.command,
            f"--out {args.out} does not end in .npz, the suffix of the model "
            "files that resgrad writes; the model is saved there all the "
            "same, and a name that ends in .npz keeps it apart from data.",
        )
    data = load_dataset(args)
    # The sizes read from the data, so that a wrong label column or class
    # count shows before the training time is spent.
    print(data.summary(), flush=True)
    # The checkpoint of an earlier run, if any, as it is before this run.
    earlier = _identity(args.checkpoint)
    # The identity of --out as the save starts: another command may replace
    # the file while this one trains.
    saving, out_before = False, None
    start = time.perf_counter()
    bar = progress_bar(not args.no_progress)
    # The epochs that a resumed checkpoint had run before this command.
    resumed_at: list[int] = []

    def progress(epochs: range, **kwargs: Any) -> Any:
        resumed_at.append(epochs.start)
        # Count a resumed run's epochs from its first, as the checkpoint and
        # the summary line do.
        kwargs.update(initial=epochs.start, total=epochs.stop)
        return bar(epochs, **kwargs)

    try:
        result = train_model(args, data, progress)
        seconds = time.perf_counter() - start
        test_accuracy = accuracy(result.model, data.x_test, data.y_test)
        if args.out.exists() and not args.overwrite:
            # It was absent at the start, so another command wrote it since.
            raise _OutWrittenMeanwhile(
                f"--out {args.out} was written by another command while this "
                f"one trained. {args.checkpoint} contains this run's last "
                "epoch: the same command with --resume --overwrite saves its "
                f"model over {args.out}, and with --resume --checkpoint "
                f"{args.checkpoint} --out <another file> saves it there."
            )
        saving, out_before = True, _identity(args.out)
        save(
            result.model,
            args.out,
            metadata=training_metadata(args, result, test_accuracy, data),
        )
    except KeyboardInterrupt:
        with second_interrupt_ignored():
            note = _interrupt_note(args, earlier, saving, out_before)
        if note is None:
            raise
        # main prints the message of the interrupt after "interrupted; ".
        raise KeyboardInterrupt(note) from None
    except (ValueError, TypeError):
        # Resuming would repeat these errors, such as a divergence, so a
        # checkpoint that this run started would only read as an unfinished
        # run. A resumed run keeps the checkpoint that it continued, and a
        # run that failed before its first epoch ended, such as on an option
        # that does not fit the data, keeps that of the earlier run.
        if not args.resume and _identity(args.checkpoint) != earlier:
            args.checkpoint.unlink(missing_ok=True)
        raise
    except _OutWrittenMeanwhile:
        raise
    except OSError as error:
        # A full disk or a lost folder can be fixed, and the run continues.
        if not args.checkpoint.is_file():
            raise
        if not args.resume and _identity(args.checkpoint) == earlier:
            # The checkpoint is an earlier run's, which --resume would not
            # continue with this command's options.
            raise
        message = str(error).rstrip(".")
        # The failed write may have been a checkpoint's, so the file can hold
        # the epoch before the last one that finished.
        saved = _epochs_in(args.checkpoint, args.epochs)
        raise OSError(
            f"{message}; {args.checkpoint} holds the last epoch saved{saved}, "
            "so once the cause is fixed, the same command with --resume "
            "continues from it"
        ) from error
    args.checkpoint.unlink(missing_ok=True)
    # Without a validation split the weights of the last epoch are kept.
    kept_epoch = (
        f" (kept epoch {result.best_epoch}, of the lowest loss on "
        f"{plural(result.validation_rows, 'validation sample')} held out of the "
        "training part)"
        if args.validation
        else ""
    )
    epochs = len(result.history)
    trained = _epochs_summary(epochs, epochs - sum(resumed_at), seconds)
    print(f"{trained}{kept_epoch}; test accuracy {test_accuracy:.4f}")
    print(f"saved {args.out}")
    return 0


def _epochs_summary(epochs: int, new: int, seconds: float) -> str:
    """Return how many of the run's ``epochs`` this command trained (``new``)
    and in how long, the rest having come from a resumed checkpoint."""
    if new == epochs:
        return f"trained {plural(epochs, 'epoch')} in {seconds:.1f} s"
    if new == 0:
        return f"the checkpoint already contained {plural(epochs, 'finished epoch')}"
    return f"trained {plural(new, 'more epoch')} in {seconds:.1f} s, {epochs} in all"


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Return the device, inode and modification time of the file at
    ``path``, which every atomic write changes, or ``None`` when none is
    there."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns


def training_metadata(
    args: argparse.Namespace, result: Any, test_accuracy: float, data: Any
) -> dict:
    """Return what a model file records about how it was trained, and the
    scaling of its data, which later commands apply to theirs."""
    from ..data import csv_columns

    options = ("widths", "hidden", "activation", "shortcut", "init", "optimizer", "lr")
    options += ("epochs", "batch_size", "patience", "validation", "seed")
    options += ("label_column", "header", "test_size", "split_seed")
    training = {name: getattr(args, name) for name in options}
    # Absolute paths, so that the hints of later commands hold in any folder.
    for name in ("data", "labels"):
        training[name] = absolute(getattr(args, name))
    path = csv_file(args.data)
    if path is not None:
        # Later commands reject a CSV whose header differs (see load_dataset).
        training["columns"] = csv_columns(path, csv_header(args, {}))
    # Later commands compare the digest to tell whether they split the same
    # rows (see load_dataset).
    training["data_sha256"] = data.digest
    return {
        "training": training,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "test_accuracy": test_accuracy,
        "scaling": data.scaling,
    }
