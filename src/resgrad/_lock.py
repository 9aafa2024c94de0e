"""The locks that keep two runs off one checkpoint file or output folder.

``resgrad train`` takes a checkpoint's lock for the whole command, and
``fit(checkpoint=...)`` takes it for the training. The lock is a ``flock``
on the file ``<checkpoint>.lock``, which the kernel releases when the
process ends, however it ends, so the file of a killed run blocks nothing
and the next run takes it over.

A command that writes files into an ``--out`` folder takes a ``flock`` on
the folder itself while it writes them (``lock_folder``), so that it needs
no file of its own there.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

try:
    import fcntl
except ImportError:  # Windows has no flock.
    fcntl = None

# The locks that ``resgrad train`` holds for the fit it runs, keyed by their
# lock file (see lock_path), with the thread that took each.
_SHARED: dict[Path, int] = {}


class Lock(NamedTuple):
    """A lock that ``acquire`` took: the open lock file and its path."""

    file: IO[str]
    path: Path


def lock_path(checkpoint: Path) -> Path:
    """Return the lock file of ``checkpoint``, beside the file it names.

    The path is resolved first, so a symbolic link to a checkpoint, or a
    relative path read from another folder, gets the same lock file.
    """
    real = checkpoint.resolve()
    return real.with_name(real.name + ".lock")


def acquire(checkpoint: Path, hint: str, share: bool = False) -> Lock | None:
    """Take the exclusive lock of ``checkpoint``; return it, or ``None``
    where ``fcntl`` is missing.

    With ``share``, a ``held`` block in the same thread, such as the fit
    that ``resgrad train`` runs, uses this lock instead of taking its own.

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
    if share:
        _SHARED[path] = threading.get_ident()
    return Lock(file, path)


def release(lock: Lock | None) -> None:
    """Remove the lock file that ``acquire`` returned and release the lock."""
    if lock is None:
        return
    _SHARED.pop(lock.path, None)
    # The file goes before the lock, so a run that takes the lock after this
    # finds the file gone and makes a new one (see acquire).
    lock.path.unlink(missing_ok=True)
    lock.file.close()


@contextlib.contextmanager
def held(checkpoint: Path, hint: str) -> Iterator[None]:
    """Hold the lock of ``checkpoint`` for the ``with`` block, unless this
    thread shares one that it took with ``acquire(share=True)``."""
    if (
        fcntl is not None
        and _SHARED.get(lock_path(checkpoint)) == threading.get_ident()
    ):
        yield
        return
    lock = acquire(checkpoint, hint)
    try:
        yield
    finally:
        release(lock)


def lock_folder(folder: Path, label: str) -> int | None:
    """Take the exclusive lock of ``folder`` and return its open descriptor
    for ``unlock_folder``.

    Returns ``None`` where ``fcntl`` is missing or the folder takes no lock,
    because it cannot be read or its file system has no ``flock``.

    Raises:
        FileExistsError: another process, or another open of the folder in
            this one, has the lock. ``label`` names the folder in the
            message, as in ``"--out results"``.
    """
    # NOTE: without fcntl (Windows) two commands can write into one folder.
    if fcntl is None:
        return None
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise FileExistsError(
            f"{label} is in use by another resgrad command that is writing its "
            "files there; run again once it has finished, or pass another --out."
        ) from None
    except OSError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def unlock_folder(descriptor: int | None) -> None:
    """Release the lock that ``lock_folder`` returned."""
    if descriptor is not None:
        os.close(descriptor)
