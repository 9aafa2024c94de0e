"""The ``resgrad`` command line.

Each subcommand lives in a module of this package that defines
``add_parser(subparsers)``; the parser it adds carries the function to run
as its ``handler`` default. Library errors (``ValueError``, ``TypeError``,
``OSError``) end the program with one line on standard error and status 2,
and ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMANDS = ("run", "train", "evaluate", "check", "attack", "saliency", "depth")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="resgrad",
        description="Explicit matrix gradients of residual networks.",
    )
    parser.add_argument("--version", action="version", version=f"resgrad {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback on errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (ValueError, TypeError, OSError, ImportError) as error:
        if args.debug:
            raise
        print(f"resgrad {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resgrad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
