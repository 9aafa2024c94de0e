"""The lock that keeps two training runs off one checkpoint file.

``resgrad train`` takes it for the whole command, and ``fit(checkpoint=...)``
takes it for the training. The lock is a ``flock`` on the file
``<checkpoint>.lock``, which the kernel releases when the process ends,
however it ends, so the file of a killed run blocks nothing and the next
run takes it over.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows has no flock.
    fcntl = None

# The checkpoints whose lock this process holds, as resolved paths, with the
# thread that took each, so that fit inside ``resgrad train`` does not try to
# take the command's lock again.
_HELD: dict[Path, int] = {}


def lock_path(checkpoint: Path) -> Path:
    """Return the lock file of ``checkpoint``."""
    return checkpoint.with_name(checkpoint.name + ".lock")


def acquire(checkpoint: Path, hint: str) -> IO[str] | None:
    """Take the exclusive lock of ``checkpoint`` and return its open file,
    or ``None`` where ``fcntl`` is missing.

    Raises:
        FileExistsError: another run holds the lock, in this process or
            another; ``hint`` ends the message with what to do.
    """
    # NOTE: without fcntl (Windows) two runs can write one checkpoint.
    if fcntl is None:
        return None
    path = lock_path(checkpoint)
    while True:
        # The file stays open while the run lasts, because closing it ends
        # the lock.
        file = open(path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip()
            file.close()
            process = f" (process {owner})" if owner.isdigit() else ""
            raise FileExistsError(
                f"{checkpoint} is in use by another training run{process}, which "
                f"holds the lock on {path}; {hint}"
            ) from None
        except BaseException:
            file.close()
            raise
        # A run that ended between the open and the flock above has removed
        # the file, so the lock covers a file that the next run would not see.
        try:
            current = os.path.samestat(os.fstat(file.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        file.close()
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    _HELD[checkpoint.resolve()] = threading.get_ident()
    return file


def release(checkpoint: Path, lock: IO[str] | None) -> None:
    """Remove the lock file that ``acquire`` returned and release the lock."""
    if lock is None:
        return
    _HELD.pop(checkpoint.resolve(), None)
    # The file goes before the lock, so a run that takes the lock after this
    # finds the file gone and makes a new one (see acquire).
    lock_path(checkpoint).unlink(missing_ok=True)
    lock.close()


@contextlib.contextmanager
def held(checkpoint: Path, hint: str) -> Iterator[None]:
    """Hold the lock of ``checkpoint`` for the ``with`` block, unless this
    thread took it through ``acquire`` already.

    ``acquire`` itself rejects a lock that this process holds, so that a
    second ``resgrad train`` run in one process is stopped too.
    """
    if _HELD.get(checkpoint.resolve()) == threading.get_ident():
        yield
        return
    lock = acquire(checkpoint, hint)
    try:
        yield
    finally:
        release(checkpoint, lock)
