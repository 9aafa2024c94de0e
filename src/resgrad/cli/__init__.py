"""The ``resgrad`` command line.

Each subcommand lives in a module of this package that defines
``add_parser(subparsers)``; the parser it adds carries the function to run
as its ``handler`` default. Library errors (``ValueError``, ``TypeError``,
``OSError``, ``ImportError``) and invalid arguments end the program with
one line on standard error and status 2; ``--debug`` prints the traceback
of a library error before that line.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import io
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._common import (
    INPUT_FILES,
    WARNINGS,
    as_options,
    limit_blas_threads,
    printable,
    thread_count,
)

# The status of a process that SIGPIPE ended (128 + 13), as shells report.
BROKEN_PIPE_STATUS = 141
# The status of a process that SIGTERM stopped, as a shell reports it.
TERMINATED_STATUS = 128 + signal.SIGTERM

SUBCOMMANDS = ("run", "train", "evaluate", "check", "attack", "saliency", "depth")


# The pattern of arguments read as negative numbers rather than options: a
# dash then a digit, a dash, a dot and a digit, or -inf and -nan. The
# pattern of Python 3.11's argparse has no exponent, so it took
# "--baseline -1e300" for two options.
NEGATIVE_NUMBER = re.compile(r"^-\.?\d|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument in one line.

    argparse prints the usage before the error; here the error comes alone,
    with a pointer to ``--help``, so that it reads like the other errors.
    The subcommand parsers inherit the class, and with it the reading of
    negative numbers with an exponent as values. A prefix of an option is
    not taken for the option: ``--epoch 5`` is an error with a guess,
    rather than ``--epochs 5`` today and an ambiguity once another option
    starts the same way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER
        # The arguments of the latest parse, which error reads to name a
        # misspelt option.
        self._arguments: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message = message.rstrip(".")
        if message.startswith("the following arguments are required"):
            message += self._unknown_options()
        elif message.startswith("unrecognized arguments"):
            # The message names them already; only a guess adds to it.
            message += self._unknown_options(guesses_only=True)
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'.\n")

    def _unknown_options(self, guesses_only: bool = False) -> str:
        """Return a note on the options of the command line that this
        parser does not know, such as a misspelt required one, which
        argparse reports only as missing. With ``guesses_only``, only on
        those with a known option of a similar name."""
        known = list(self._option_string_actions)
        # Tokens after a bare "--" are values, not options.
        tokens = self._arguments
        tokens = tokens[: tokens.index("--")] if "--" in tokens else tokens
        options = [token.split("=", 1)[0] for token in tokens]
        unknown = [o for o in options if o.startswith("--") and o not in known]
        notes = []
        for option in dict.fromkeys(unknown):
            # The one option it starts ("--check" of "--check-samples"), or a
            # close name: 0.7 keeps "--lrate" (0.73) and drops "--bogus" (0.67).
            close = [k for k in known if k.startswith(option)]
            if len(close) != 1:
                close = difflib.get_close_matches(option, known, n=1, cutoff=0.7)
            guess = f"; did you mean {close[0]}?" if close else ""
            if close or not guesses_only:
                notes.append(f"{option} is not an option of {self.prog}{guess}")
        return "".join(f" ({note})" for note in notes)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="resgrad",
        description="Explicit matrix gradients of residual networks.",
    )
    parser.add_argument("--version", action="version", version=f"resgrad {__version__}")
    _add_global_arguments(parser, default=None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        # SUPPRESS keeps a value given before the subcommand from being
        # overwritten by the subcommand's default.
        _add_global_arguments(subparser, default=argparse.SUPPRESS)
    return parser


def _add_global_arguments(parser: argparse.ArgumentParser, default: Any) -> None:
    """Add ``--debug`` and ``--blas-threads``, accepted before or after the command."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if default is None else default,
        help="print the full traceback before the message of an error; the "
        "exit status stays the same",
    )
    parser.add_argument(
        "--blas-threads",
        type=thread_count,
        default=1 if default is None else default,
        metavar="N",
        help="threads of NumPy's BLAS, at most the number of CPUs (default: 1, "
        "fastest for the small matrices of these networks)",
    )


def _command_parser(
    parser: argparse.ArgumentParser, command: str | None
) -> argparse.ArgumentParser | None:
    """Return the parser of ``command``, or ``None`` when there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def _print_traceback(debug: bool) -> None:
    """Print the traceback of the exception being handled when ``--debug`` is
    given; the command still exits with its usual status and message."""
    if debug:
        traceback.print_exc()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``).

    Return the exit status: 0 on success, 2 for an invalid argument or a
    failure (running out of memory included), 130 on Ctrl-C, 143 on SIGTERM
    under ``console``, and 141, as for SIGPIPE, when the reader of standard
    output has gone (``resgrad check | head -2``). ``--help`` and
    ``--version`` return 0.
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # argparse reports these from the top parser, whose --help does
            # not list the options of the command.
            command = _command_parser(parser, args.command) or parser
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    if args.command is None:
        # The status is an error, so the help goes to standard error.
        parser.print_help(sys.stderr)
        print(
            "\nresgrad: error: a command is required; for a first run on the "
            "bundled digits, try 'resgrad run'.",
            file=sys.stderr,
        )
        return 2
    INPUT_FILES.clear()
    WARNINGS.clear()
    stdout = sys.stdout
    sys.stdout = _NamedStdout(stdout)
    try:
        with limit_blas_threads(args.blas_threads):
            return args.handler(args) or 0
    except BrokenPipeError:
        # The output is not wanted any more, which is no error of the
        # command. Python would report the pipe again when it flushes
        # stdout at exit, so stdout goes to /dev/null first.
        _discard_stdout()
        return BROKEN_PIPE_STATUS
    except MemoryError as error:
        _print_traceback(args.debug)
        print(
            f"resgrad {args.command}: error: not enough memory ({_one_line(error)}); "
            "pass smaller sizes, such as fewer or narrower blocks, samples or "
            "steps.",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError, ImportError, OverflowError) as error:
        # OverflowError: a count too large for an array index, such as
        # --steps 1e23 (NumPy raises it before any work).
        _print_traceback(args.debug)
        if _terminated:
            # A library that caught the interrupt raised this in its place.
            print(f"resgrad {args.command}: terminated", file=sys.stderr)
            return TERMINATED_STATUS
        message = _one_line(error)
        denied = isinstance(error, PermissionError) and error.errno == errno.EACCES
        if denied and message.startswith("[Errno"):
            # The system's own words, such as "[Errno 13] Permission denied:
            # 'model.npz'", which name no fix. Other errors, such as EPERM,
            # seldom come from a file's mode.
            message += (
                "; give your user access to that path (for example with chmod), "
                "or pass another path"
            )
        print(f"resgrad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # A command may raise the interrupt again with a note, such as the
        # folder it left incomplete.
        note = f"; {_one_line(interrupt)}" if str(interrupt) else ""
        if _terminated:
            print(f"resgrad {args.command}: terminated{note}", file=sys.stderr)
            return TERMINATED_STATUS
        print(f"resgrad {args.command}: interrupted{note}", file=sys.stderr)
        return 130
    finally:
        # Python callers of the writers that check it come after the command.
        INPUT_FILES.clear()
        WARNINGS.clear()
        if isinstance(sys.stdout, _NamedStdout):
            sys.stdout = stdout


class _NamedStdout:
    """Standard output whose failed writes name it.

    ``print`` raises an ``OSError`` without a file name when the disk
    behind standard output is full, which reads as if the files that the
    command writes had failed. A broken pipe keeps its own error, which
    ``main`` handles apart.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        _naming_stdout(self._stream.write, printable(text))
        # The count of the caller's characters, all of which were written.
        return len(text)

    def flush(self) -> None:
        _naming_stdout(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _naming_stdout(call: Callable[..., Any], *args: Any) -> Any:
    """Return ``call(*args)``, raising its ``OSError`` other than a broken
    pipe as one on standard output when it names no file."""
    try:
        return call(*args)
    except BrokenPipeError:
        raise
    except OSError as error:
        if error.filename is not None:
            raise
        strerror = error.strerror or str(error)
        raise OSError(error.errno, strerror, "standard output") from None


# Whether the running command got SIGTERM or Ctrl-C (SIGINT), each of which
# _stop turns into a KeyboardInterrupt.
_terminated = False
_interrupted = False


def _stop(signum: int, frame: Any) -> None:
    """Stop the command on Ctrl-C, as Python's own handler does, and on
    SIGTERM (``kill``, ``timeout``, a batch system's pre-emption) alike, so
    that it removes its locks and partial files and reports what it left.
    The signal is recorded, so that one that Python drops is still
    reported."""
    global _terminated, _interrupted
    if signum == signal.SIGTERM:
        _terminated = True
    else:
        _interrupted = True
    raise KeyboardInterrupt


def _unraisable(hook: Any) -> Callable[[Any], None]:
    """Return a ``sys.unraisablehook`` that passes everything to ``hook``
    but the KeyboardInterrupt of a signal, which ``console`` reports."""

    def report(unraisable: Any) -> None:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            hook(unraisable)

    return report


def console() -> NoReturn:
    """Run ``main`` as the ``resgrad`` program and exit with its status.

    SIGTERM stops a command as Ctrl-C does, with status 143 in place of 130.
    Once the command has finished, Ctrl-C is ignored, because it could only
    interrupt Python's cleanup at exit, which then prints an "Exception
    ignored" traceback after a command that succeeded.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        # A shell starts a background job with SIGINT ignored, and Python
        # leaves it so.
        signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    try:
        status = main()
    except KeyboardInterrupt:
        status = TERMINATED_STATUS if _terminated else 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Python drops an exception raised in a signal handler while it runs a
    # garbage-collection callback, so the command can finish its work after
    # the signal. The status still reports the signal.
    if _terminated and status != TERMINATED_STATUS:
        print(
            "resgrad: terminated (SIGTERM), after the command had finished",
            file=sys.stderr,
        )
        status = TERMINATED_STATUS
    elif _interrupted and status not in (130, TERMINATED_STATUS):
        print(
            "resgrad: interrupted (Ctrl-C), after the command had finished",
            file=sys.stderr,
        )
        status = 130
    sys.exit(status)


def _discard_stdout() -> None:
    """Point the file descriptor of stdout at /dev/null, where it has one."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _exit_status(code: Any) -> int:
    """Return the status of a ``SystemExit`` code, as ``sys.exit`` would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _one_line(error: BaseException) -> str:
    """Return the error message with its lines joined, so that it fits one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return printable(as_options(" ".join(lines))) or type(error).__name__


if __name__ == "__main__":
    console()
