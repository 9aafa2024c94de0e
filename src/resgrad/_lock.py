"""The locks that keep two runs off one checkpoint file or output folder.

``resgrad train`` takes a checkpoint's lock for the whole command, and
``fit(checkpoint=...)`` takes it for the training. The lock is a ``flock``
on the file ``<checkpoint>.lock``, which the kernel releases when the
process ends, however it ends, so the file of a killed run blocks nothing
and the next run takes it over. A run rejects, rather than overwrite, a
lock path that is a symbolic link, not a regular file, or a file that
contains anything but a process id.

A command that writes files into an ``--out`` folder takes a ``flock`` on
the folder itself while it writes them (``lock_folder``), so that it needs
no file of its own there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import reprlib
import stat
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

# The maximum size of a lock file that resgrad wrote: a process id and a line end.
_MAX_LOCK_BYTES = 32

# The errors of an O_NOFOLLOW open of a symbolic link: ELOOP on Linux and
# macOS, EMLINK on FreeBSD.
_SYMLINK_ERRORS = (errno.ELOOP, errno.EMLINK)


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
            another; ``hint`` ends the message with what to do. Also raised
            where the lock path is a symbolic link, a folder or another
            special file, or a file that contains anything but a process
            id, because the lock would overwrite it.
    """
    # NOTE: without fcntl (Windows) two runs can write one checkpoint.
    if fcntl is None:
        return None
    path = lock_path(checkpoint)
    while True:
        # The file stays open while the run lasts, because closing it ends
        # the lock.
        file = _open_lock_file(path)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(file.fileno(), _MAX_LOCK_BYTES, 0).strip()
            file.close()
            process = f" (process {owner.decode()})" if owner.isdigit() else ""
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
            current = os.path.samestat(os.fstat(file.fileno()), os.lstat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        file.close()
    try:
        _check_lock_contents(path, file.fileno())
    except BaseException:
        file.close()
        raise
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    if share:
        _SHARED[path] = threading.get_ident()
    return Lock(file, path)


def _open_lock_file(path: Path) -> IO[str]:
    """Open the lock file ``path``, made if missing, without following a
    symbolic link, for appending.

    Raises:
        FileExistsError: ``path`` is a symbolic link or not a regular file.
    """
    with contextlib.suppress(FileNotFoundError):
        _check_regular(path, os.lstat(path))
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        # A symbolic link made since the check above.
        if error.errno in _SYMLINK_ERRORS and path.is_symlink():
            raise _not_a_lock(path, "it is a symbolic link") from error
        raise
    try:
        _check_regular(path, os.fstat(descriptor))
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "a+")


def _check_regular(path: Path, status: os.stat_result) -> None:
    """Raise the error of ``_not_a_lock`` unless ``status``, the ``lstat``
    or ``fstat`` of the lock file ``path``, is that of a regular file."""
    if stat.S_ISLNK(status.st_mode):
        target = os.readlink(path)
        raise _not_a_lock(path, f"it is a symbolic link to {target}")
    if stat.S_ISDIR(status.st_mode):
        raise _not_a_lock(path, "it is a folder")
    if not stat.S_ISREG(status.st_mode):
        raise _not_a_lock(path, "it is a device, pipe or socket")


def _check_lock_contents(path: Path, descriptor: int) -> None:
    """Raise the error of ``_not_a_lock`` unless the open lock file is empty
    or contains a process id, as a run that ended leaves it."""
    content = os.pread(descriptor, _MAX_LOCK_BYTES + 1, 0)
    number = content.strip()
    if len(content) <= _MAX_LOCK_BYTES and (not number or number.isdigit()):
        return
    excerpt = reprlib.repr(content.decode("utf-8", "replace"))
    raise _not_a_lock(path, f"it contains {excerpt}, not a process id")


def _not_a_lock(path: Path, reason: str) -> FileExistsError:
    """Return the error for a lock file path that the lock must not
    overwrite, with ``reason`` saying what the path is."""
    return FileExistsError(
        f"Cannot take the checkpoint lock {path}: {reason}, so it is not a "
        "lock file that resgrad wrote. Remove it, or pass another checkpoint "
        "path (--checkpoint on the command line, checkpoint= to fit)."
    )


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
