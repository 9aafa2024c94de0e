"""Saving and loading models as ``.npz`` files.

A model file is an uncompressed NumPy ``.npz`` archive. It contains one ``.npy``
member per array of ``ResidualMLP.arrays()`` (``blocks.<l>.W1`` and so on, in
the model's dtype, float32 or float64) and a ``__config__`` member: the UTF-8
bytes, as a uint8 array, of a JSON object with the fields ``format``
(``"resgrad-model"``), ``format_version`` (1), ``resgrad_version``,
``config`` (``ResidualMLP.config()``) and ``metadata`` (the caller's dict).

Loading treats the file as untrusted. It runs no code from the file, because
``np.load`` runs with ``allow_pickle=False`` and object arrays are rejected.
It allocates no more memory than the file justifies, because the zip
directory and every ``.npy`` header are checked against the file size before
any array is read. Every defect raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import math
import os
import re
import reprlib
import secrets
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from .activations import ACTIVATIONS
from .model import SHORTCUTS, Block, ResidualMLP

PathLike = str | os.PathLike

FORMAT = "resgrad-model"
FORMAT_VERSION = 1
CONFIG_KEY = "__config__"
DTYPES = ("float32", "float64")
# resgrad writes stored (uncompressed) members, whose declared sizes add up
# to less than the archive size. np.savez_compressed shrinks random weights
# about 1.05x and a model with all-zero W2 about 2x (measured on 64-wide
# models), while a zip bomb expands hundreds of times.
MAX_EXPANSION = 4
_PARAMETER_KEY = re.compile(r"blocks\.(0|[1-9][0-9]*)\.(W1|W2|W3|b1|b2)")
# The .npy header readers by format version, for model files and .npz data.
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
# zipfile raises NotImplementedError for a zip version or feature it lacks,
# and zlib.error for a damaged compressed member.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    NotImplementedError,
)
# The first bytes of a zip archive: the signature of its first member.
_ZIP_SIGNATURE = b"PK\x03\x04"
_HEADER_FIELDS = {
    "format": str,
    "format_version": int,
    "resgrad_version": str,
    "config": dict,
    "metadata": dict,
}
# The keys of ResidualMLP.config(). A key added there must be added here,
# or load rejects the files that save writes (the round-trip tests fail).
_CONFIG_FIELDS = {
    "sizes": list,
    "hidden": list,
    "activation": str,
    "post_activation": str,
    "output_activation": str,
    "shortcuts": list,
    "biases": list,
    "dtype": str,
}


# Saving.


def save(model: ResidualMLP, path: PathLike, metadata: dict | None = None) -> None:
    """Write ``model`` and a metadata dict to the ``.npz`` file ``path``.

    The file is written whole or not at all: the archive goes to a temporary
    file in the same folder, is flushed to disk, and then replaces ``path``.
    If anything fails, the temporary file is removed and an existing file at
    ``path`` is left untouched. The name is used as given, with no suffix
    added.

    Args:
        model: a float32 or float64 network in any array namespace; its
            arrays are copied to NumPy on the host.
        path: the file to write; its folder must exist.
        metadata: a JSON-serialisable dict stored beside the weights (for
            example the data set and the test accuracy), returned by
            ``read_metadata``. It is stored as JSON, so tuples come back as
            lists and NumPy integer, float and bool scalars (such as
            ``np.int64(5)``) as Python ones; a long double keeps only the
            precision of a float. Every dict key, at any depth, must be a
            string.

    Raises:
        TypeError: if the model is not a ``ResidualMLP``, its dtype is not
            float32 or float64, or ``metadata`` is not a JSON-serialisable
            dict with string keys.
        IsADirectoryError: if ``path`` is a folder.
        ValueError: if the text of ``path`` names a folder, such as
            ``"m.npz/"``, which ``Path`` would read as ``"m.npz"``.
        FileExistsError: if ``path`` is a device, a named pipe or a socket,
            or a file that resgrad cannot read as a model file, such as a
            data file, which saving would replace.
        FileNotFoundError: if the folder of ``path`` does not exist.
        NotADirectoryError: if a parent of ``path`` is a file.
        PermissionError: if no file can be made in the folder of ``path``.

    >>> import os, tempfile
    >>> model = ResidualMLP.init([4, 3, 2], seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save(model, path, metadata={"data": "digits"})
    >>> load(path).sizes
    [4, 3, 2]
    >>> read_metadata(path)
    {'data': 'digits'}
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP to save, got {type(model).__name__}.")
    if folder_ending(path) is not None:
        raise ValueError(folder_ending_message(path, "model.npz"))
    _check_replaceable(Path(path))
    config = model.config()
    if config["dtype"] not in DTYPES:
        raise TypeError(
            f"Cannot save a model of dtype {config['dtype']}; resgrad files contain "
            "float32 or float64, so convert it first, e.g. "
            "model.convert(dtype='float32')."
        )
    arrays = {
        name: np.asarray(value) for name, value in model.convert(np).arrays().items()
    }
    arrays[CONFIG_KEY] = np.frombuffer(_encode_header(config, metadata), np.uint8)
    write_atomically(Path(path), lambda file: np.savez(file, **arrays))


def _check_replaceable(path: Path) -> None:
    """Raise ``FileExistsError`` if ``path`` is a regular file that is not a
    resgrad model file, such as the data, which saving would replace."""
    if not path.is_file():
        return
    try:
        with open(path, "rb") as file:
            _check_archive(path, file)
    except ValueError:
        pass
    except OSError:
        # The write reports a file that cannot be read or replaced.
        return
    else:
        return
    raise FileExistsError(
        f"{path} exists and is not a resgrad model file, and saving would "
        "replace it; remove it first, or pass another path."
    )


def _encode_header(config: dict, metadata: dict | None) -> bytes:
    from . import __version__

    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"Expected metadata as a dict, got {type(metadata).__name__}.")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "resgrad_version": __version__,
        "config": config,
        "metadata": metadata,
    }
    try:
        text = json.dumps(header, allow_nan=False, default=_python_scalar)
    except (TypeError, ValueError, RecursionError) as error:
        cause = "it nests too deeply" if isinstance(error, RecursionError) else error
        raise TypeError(
            f"metadata is not JSON-serialisable: {cause}; use strings, finite "
            "numbers, booleans, None, lists and dicts with string keys."
        ) from error
    _check_metadata_keys(metadata)
    return text.encode("utf-8")


def _python_scalar(value: Any) -> Any:
    """Return a NumPy integer, float or bool scalar as its Python value, for
    ``json.dumps``; raise its usual TypeError for anything else."""
    # float() and int() rather than .item(), which returns a long double
    # unchanged.
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _check_metadata_keys(metadata: dict) -> None:
    """Reject dict keys that are not strings, at any depth of ``metadata``.

    json.dumps writes int, float, bool and None keys as strings, so the
    metadata would load back with other keys. Call this after json.dumps has
    accepted ``metadata``, which rules out circular references.
    """
    stack = [("metadata", metadata)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            items = value.items()
            for key in value:
                if not isinstance(key, str):
                    stored = next(iter(json.loads(json.dumps({key: None}))))
                    raise TypeError(
                        f"{where} has the key {_short(key)} of type "
                        f"{type(key).__name__}, which JSON would store as the "
                        f"string {_short(stored)}. Use string keys instead."
                    )
        elif isinstance(value, (list, tuple)):
            items = enumerate(value)
        else:
            continue
        stack.extend(
            (f"{where}[{_short(key)}]", item)
            for key, item in items
            if isinstance(item, (dict, list, tuple))
        )


def json_text(document: Any, indent: int = 2) -> str:
    """Return ``document`` as JSON text ending in a newline, with NaN and
    the infinities written as ``null``: strict JSON readers reject the
    ``NaN`` and ``Infinity`` that Python's ``json`` writes by default."""
    return json.dumps(_finite(document), indent=indent, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """Replace NaN and infinities in ``value``, nested, by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomically(
    path: Path, write: Callable[[IO[bytes]], None], follow_links: bool = True
) -> None:
    """Write a file whole or not at all.

    ``write`` fills an unnamed file in the folder of ``path`` (``O_TMPFILE``
    on Linux), which is flushed to disk, linked under a temporary name and
    renamed to ``path``. A process killed while writing therefore leaves
    ``path`` as it was and no file behind. Only a kill between the link and
    the rename, two system calls, leaves a temporary file, named
    ``.<name>.<pid>.<random>.tmp``. The next write to ``path`` removes such
    files whose process no longer runs. Where ``O_TMPFILE`` is missing, the
    data goes to the named temporary file from the start.

    A symbolic link at ``path`` is kept, and the file it points to is
    replaced, as ``open(path, "wb")`` would write through it. With
    ``follow_links`` false the link itself is replaced by the file.

    The new file takes the permission bits of the regular file it replaces,
    and a file new to ``path`` gets mode 0o666 less the umask, as with
    ``open(path, "wb")``. Unlike that call, the rename puts a new file at
    ``path``, so hard links to the old file keep the old contents, and the
    file's owner and group are those of a file that this process creates.

    Raises:
        IsADirectoryError: if ``path`` is a folder.
        FileExistsError: if ``path`` is a device, a named pipe or a socket,
            which the rename would replace with a file.
        FileNotFoundError: if the folder of ``path`` does not exist.
        NotADirectoryError: if a parent of ``path`` is a file.
        PermissionError: if no file can be made in the folder of ``path``.
        OSError: if the disk or the user's quota is full, or another write
            fails, with a message that names ``path`` where the system's
            does not.
    """
    check_file_path(path)
    if follow_links and path.is_symlink():
        path = Path(os.path.realpath(path))
        check_file_path(path)
    folder = path.parent
    mode = _replaced_mode(path)
    _remove_stale_temporaries(path)
    temporary = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    try:
        descriptor, named = _open_temporary(folder, temporary)
        try:
            if mode is not None:
                _set_mode(descriptor, mode)
            with os.fdopen(descriptor, "w+b") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
                if not named:
                    _name_unnamed(file, temporary)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise _unnamed_write_error(error, path) from error
        raise
    _sync_folder(folder)


def _unnamed_write_error(error: OSError, path: Path) -> OSError:
    """Return the error of a write to ``path`` whose system call named no
    file, such as a full disk, with a message that names the file, states
    what became of it and gives a fix."""
    if path.exists():
        outcome = "the file keeps its earlier contents"
    else:
        outcome = "nothing was written"
    reason = os.strerror(error.errno)
    fix = _WRITE_FIXES.get(error.errno, "check that disk, or save to another one")
    # The same class, such as PermissionError, so that callers can catch it
    # as before.
    named = type(error)(f"Cannot save {path}: {reason.lower()}, and {outcome}; {fix}.")
    # Only the errno: with strerror or filename set, str() would show those
    # in place of the message.
    named.errno = error.errno
    return named


# The errors of a write that found no room: a full disk, a full quota.
FULL_DISK = {errno.ENOSPC, errno.EDQUOT}

# The fix that the message of a failed write gives, by errno.
_WRITE_FIXES = {
    **dict.fromkeys(FULL_DISK, "free space on that disk, or save to another one"),
    errno.EFBIG: (
        "raise this process's file size limit (ulimit -f), or save to a file "
        "system that takes files this large"
    ),
    **dict.fromkeys(
        (errno.EACCES, errno.EPERM),
        "give your user write access there (for example with chmod), or save "
        "to another folder",
    ),
}


def folder_ending(path: PathLike) -> str | None:
    """Return the ending by which the text of ``path`` names a folder, such
    as ``"/"`` in ``"m.npz/"`` or ``"/."`` in ``"m.npz/."``, else ``None``.

    ``Path`` drops a trailing separator and a last ``"."``, so a file would
    otherwise be written where the caller named a folder.
    """
    text = os.fsdecode(os.fspath(path))
    if os.path.basename(text) not in ("", ".", ".."):
        return None
    return text[len(_without_folder_ending(text)) :] or None


def _without_folder_ending(text: str) -> str:
    """Return ``text`` without its trailing separators and ``"."`` parts,
    or without a last ``".."``."""
    separators = "".join(filter(None, (os.sep, os.altsep)))
    stripped = text.rstrip(separators)
    while os.path.basename(stripped) == "." and stripped != ".":
        stripped = os.path.dirname(stripped).rstrip(separators)
    if stripped == text and os.path.basename(text) == "..":
        stripped = text[:-2]
    return stripped


def folder_ending_message(path: PathLike, example: str) -> str:
    """Return the message for a ``path`` that ``folder_ending`` finds to name
    a folder; ``example`` is a file name to suggest inside it."""
    text = os.fsdecode(os.fspath(path))
    stripped = _without_folder_ending(text)
    ending = text[len(stripped) :]
    without = ""
    if os.path.basename(stripped) not in ("", ".", ".."):
        without = f", or {stripped} without the {ending!r}"
    return (
        f"{text!r} ends in {ending!r}, which names a folder; expected a file "
        f"name, e.g. {Path(text, example)}{without}."
    )


def check_file_path(path: Path) -> None:
    """Raise the error of ``write_atomically`` if ``path`` cannot become a file."""
    if path.is_dir():
        raise IsADirectoryError(
            f"Cannot save {path}: it is a folder, not a file. Pass a file path, "
            "such as a new file name inside that folder."
        )
    kind = special_file(path)
    if kind is not None:
        raise FileExistsError(
            f"Cannot save {path}: it is {kind}, not a regular file, and saving "
            "would replace it. Pass the path of a regular file or a new one."
        )
    if not path.parent.is_dir():
        raise _missing_folder_error(path)
    check_writable(path.parent, f"Cannot save {path}")


def check_writable(folder: Path, context: str) -> None:
    """Raise ``PermissionError`` if no file can be made in the existing
    ``folder``, with a message that starts with ``context``.

    The test makes an unnamed temporary file, so it also catches what
    permission bits do not show, such as a read-only mount or an immutable
    folder.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(
            f"{context}: no file can be written in the folder {folder} "
            f"({error.strerror or error}). Pass a path in a writable folder, or "
            "make this one writable."
        ) from error


def special_file(path: Path) -> str | None:
    """Return what ``path`` is, such as "a character device", when it exists
    and is neither a regular file nor a folder, else ``None``.

    A symbolic link is followed, so a link to a device counts as a device.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        # Absent, or not readable here: the write reports its own error.
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = {
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def missing(path: Path) -> str:
    """Say why ``path``, which ``exists()`` found missing, cannot be opened,
    as the end of a sentence that starts with the path."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            where = "is" if path.is_symlink() else "passes through"
            return (
                f"{where} a symbolic link that leads back to itself or through "
                "too many links"
            )
    if path.is_symlink():
        target = os.path.realpath(path)
        return f"is a symbolic link to {target}, which does not exist"
    return "does not exist"


def file_above(path: Path) -> Path | None:
    """Return the nearest existing path above ``path`` when it is not a
    folder, so that no folder can be made there, else ``None``."""
    existing = next((parent for parent in path.parents if parent.exists()), None)
    return None if existing is None or existing.is_dir() else existing


def _missing_folder_error(path: Path) -> OSError:
    """Return the error for a ``path`` whose folder is not an existing folder.

    The message names the closest existing parent when that is not a folder,
    because then the folder cannot be created.
    """
    folder = path.parent
    blocking = file_above(path)
    if blocking is not None:
        problem = "is a file, not a folder" if blocking.is_file() else "is not a folder"
        return NotADirectoryError(
            f"Cannot save {path}: {blocking} {problem}. Pass a path inside an "
            "existing folder."
        )
    return FileNotFoundError(
        f"Cannot save {path}: the folder {folder} does not exist; create it first."
    )


def _replaced_mode(path: Path) -> int | None:
    """Return the permission bits of the regular file at ``path``, or
    ``None`` where there is none, such as a missing file or a symbolic link
    that the write replaces."""
    try:
        status = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return stat.S_IMODE(status.st_mode) & 0o777


def _set_mode(descriptor: int, mode: int) -> None:
    """Give the open file ``descriptor`` the permission bits ``mode``."""
    # Windows has no fchmod before Python 3.13, and file systems without
    # Unix permissions, such as FAT, may reject the change. The file then
    # keeps the mode that it was created with.
    if not hasattr(os, "fchmod"):
        return
    with contextlib.suppress(OSError):
        os.fchmod(descriptor, mode)


def _open_temporary(folder: Path, temporary: Path) -> tuple[int, bool]:
    """Open an unnamed file in ``folder`` if the OS allows, else ``temporary``.

    Return the descriptor and whether the file already has the name
    ``temporary``. Mode 0o666 lets the umask set the permissions, as for a
    file created by open(). ``write_atomically`` then gives the file the
    mode of the file that it replaces, if any.
    """
    unnamed = getattr(os, "O_TMPFILE", 0)
    if unnamed and Path("/proc/self/fd").is_dir():
        with contextlib.suppress(OSError):
            return os.open(folder, unnamed | os.O_RDWR, 0o666), False
    return _create_exclusive(temporary), True


def _create_exclusive(temporary: Path) -> int:
    # O_EXCL fails rather than open an existing file.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(temporary, flags, 0o666)


def _name_unnamed(file: IO[bytes], name: Path) -> None:
    """Give the unnamed ``file`` the name ``name``, by a link or else a copy.

    Some kernels and sandboxes reject the link through ``/proc`` (EXDEV,
    EPERM), so the written bytes are then copied to a new file ``name``.
    """
    try:
        _link_unnamed(file.fileno(), name)
        return
    except OSError:
        pass
    file.seek(0)
    with os.fdopen(_create_exclusive(name), "wb") as copy:
        _set_mode(copy.fileno(), stat.S_IMODE(os.fstat(file.fileno()).st_mode))
        shutil.copyfileobj(file, copy)
        copy.flush()
        os.fsync(copy.fileno())


def _link_unnamed(descriptor: int, name: Path) -> None:
    """Give the unnamed file open as ``descriptor`` the name ``name``.

    linkat with AT_SYMLINK_FOLLOW on ``/proc/self/fd/<descriptor>`` needs no
    privilege. Passing ``src_dir_fd`` makes ``os.link`` call linkat, because
    without it CPython calls link(2), which does not follow the symlink.
    """
    folder = os.open("/proc/self/fd", os.O_RDONLY)
    try:
        os.link(str(descriptor), name, src_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of writes to ``path`` by processes that ended."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"([0-9]+)\.[0-9a-f]{16}\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.fullmatch(entry.name)
            if match and not _process_runs(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _process_runs(pid: int) -> bool:
    if os.name != "posix":
        # NOTE: without os.kill(pid, 0) the owner cannot be checked, so stale
        # temporary files stay until removed by hand.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of a replaced file to disk, where the OS allows."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# Loading.


def load(
    path: PathLike, *, xp: Any = None, dtype: Any = None, device: Any = None
) -> ResidualMLP:
    """Read a model written by ``save``.

    Args:
        path: the ``.npz`` model file.
        xp: the array namespace of the returned model (e.g. ``torch``);
            NumPy by default.
        dtype: the dtype to convert to, float32 or float64 (as a name or a
            dtype object), the two that ``save`` writes; by default the dtype
            stored in the file.
        device: the device to place the arrays on.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a valid resgrad model file, or has a
            later format version than this resgrad reads. The message names
            the file and the defect. Also raised for a ``dtype`` other than
            float32 and float64.
    """
    return load_with_metadata(path, xp=xp, dtype=dtype, device=device)[0]


def load_with_metadata(
    path: PathLike, *, xp: Any = None, dtype: Any = None, device: Any = None
) -> tuple[ResidualMLP, dict]:
    """Return ``load(path, ...)`` and ``read_metadata(path)``, both read
    through one opening of the file.

    Two calls open the file twice, and a file replaced in between, as
    ``resgrad train --overwrite`` replaces one, would give one file's
    weights and another's metadata, such as its input scaling.

    Raises:
        FileNotFoundError, ValueError: as ``load`` raises them.
    """
    name = getattr(dtype, "__name__", None) or str(dtype)
    if dtype is not None and name.rsplit(".", 1)[-1] not in DTYPES:
        raise ValueError(
            f"Expected dtype float32 or float64, the dtypes of resgrad model "
            f"files, got {dtype!r}; load the file and convert the model instead."
        )
    path = _existing_file(path)
    with open(path, "rb") as file:
        headers = _check_archive(path, file)
        header = _read_header(path, file, headers)
        config = header["config"]
        _check_array_headers(path, headers, _expected_shapes(config), config["dtype"])
        arrays = _read_arrays(path, file, headers)
    model = _build_model(path, config, arrays)
    if xp is not None or dtype is not None or device is not None:
        model = model.convert(xp, dtype=dtype, device=device)
    return model, header["metadata"]


def read_metadata(path: PathLike) -> dict:
    """Return the ``metadata`` dict that ``save`` stored in a model file.

    Only the archive layout and the JSON header are read and checked, not
    the weights.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a valid resgrad model file, or has a
            later format version than this resgrad reads.
    """
    path = _existing_file(path)
    with open(path, "rb") as file:
        headers = _check_archive(path, file)
        return _read_header(path, file, headers)["metadata"]


def check_read_path(path: PathLike, kind: str) -> None:
    """Raise ``NotADirectoryError`` if the text of ``path`` names a folder
    (``folder_ending``) while ``Path`` reads it as an existing file.

    ``open`` raises the same error for such a path. ``kind`` starts the
    message, such as ``"Model file"``.
    """
    ending = folder_ending(path)
    if ending is not None and Path(path).is_file():
        text = os.fsdecode(os.fspath(path))
        raise NotADirectoryError(
            f"{kind} {text!r} ends in {ending!r}, which names a folder, but "
            f"{Path(path)} is a file; pass {Path(path)}."
        )


def _existing_file(path: PathLike, kind: str = "Model") -> Path:
    check_read_path(path, f"{kind} file")
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            problem = "is a folder, not a file"
        elif path.exists():
            problem = f"is {special_file(path)}, not a regular file"
        else:
            problem = missing(path)
        raise FileNotFoundError(f"{kind} file {path} {problem}; check the path.")
    return path


class InvalidModelFile(ValueError):
    """A model or checkpoint file that is damaged, foreign or inconsistent,
    or a model file of a later format version than this resgrad reads.

    A subclass of ``ValueError``; the message names the file and the defect.
    """


def _invalid(path: Path, reason: str, kind: str = "model") -> ValueError:
    fix = _FIXES.get(kind, "")
    return InvalidModelFile(f"{path} is not a resgrad {kind} file: {reason}.{fix}")


# The advice for a damaged model or checkpoint file: a zip archive that
# cannot be read, or a checkpoint whose contents are malformed.
DAMAGED_FIXES = {
    "model": " Restore it from a copy, or train the model again.",
    "checkpoint": (
        " Remove it and start over without resuming, or pass another checkpoint path."
    ),
}

_FIXES = {
    "model": " Pass a file written by resgrad train, resgrad run or resgrad.save.",
    "checkpoint": (
        " If it is a damaged checkpoint, remove it and start over without "
        "resuming; otherwise pass another checkpoint path."
    ),
}


class _Layout(NamedTuple):
    """The archive members that one kind of resgrad file may contain."""

    kind: str
    header_key: str
    key_pattern: re.Pattern
    members: str


_MODEL_LAYOUT = _Layout(
    "model",
    CONFIG_KEY,
    _PARAMETER_KEY,
    f"{CONFIG_KEY}.npy and blocks.<l>.<W1|W2|W3|b1|b2>.npy",
)


# The zip archive and the .npy headers, checked before any array is read.


def _check_archive(
    path: Path, file: IO[bytes], layout: _Layout = _MODEL_LAYOUT
) -> dict[str, tuple]:
    """Check the zip directory and return ``{key: (shape, dtype)}`` per member."""
    size = os.fstat(file.fileno()).st_size
    if size == 0:
        fix = DAMAGED_FIXES.get(layout.kind, "")
        raise InvalidModelFile(
            f"{path} is not a resgrad {layout.kind} file: it is empty (0 bytes).{fix}"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            _check_members(path, members, size, layout)
            return {
                info.filename[: -len(".npy")]: _read_npy_header(
                    path, archive, info, layout.kind
                )
                for info in members
            }
    except InvalidModelFile:
        raise
    except _ZIP_ERRORS as error:
        file.seek(0)
        if file.read(len(_ZIP_SIGNATURE)) != _ZIP_SIGNATURE:
            reason = f"it is not a readable zip archive ({error})"
            raise _invalid(path, reason, layout.kind) from error
        # It starts as a zip archive, so it was cut short or changed since.
        reason = f"its zip archive is damaged or truncated ({error})"
        fix = DAMAGED_FIXES.get(layout.kind, "")
        raise InvalidModelFile(
            f"{path} is not a resgrad {layout.kind} file: {reason}.{fix}"
        ) from error


def _check_members(
    path: Path, members: list[zipfile.ZipInfo], size: int, layout: _Layout
) -> None:
    names = [info.filename for info in members]
    if layout is _MODEL_LAYOUT and f"{CHECKPOINT_KEY}.npy" in names:
        raise InvalidModelFile(
            f"{path} is a training checkpoint, not a model file; finish its run "
            "with resgrad train --resume and the options that started it, which "
            "saves the model to --out, or in Python with resgrad.fit(..., "
            "checkpoint=path, resume=True) and the same arguments."
        )
    stems = [name.removesuffix(".npy") for name in names]
    if "X" in stems:
        # Data, which must not be taken for a damaged file and removed.
        arrays = ", ".join(sorted(stems))
        fix = (
            "pass it as --data on the command line, or read it with "
            "resgrad.data.load_data in Python"
            if layout is _MODEL_LAYOUT
            else "pass another checkpoint path"
        )
        raise InvalidModelFile(
            f"{path} is a data file (arrays {arrays}), not a {layout.kind} file; {fix}."
        )
    if layout is not _MODEL_LAYOUT and CONFIG_KEY in stems:
        raise InvalidModelFile(
            f"{path} is a resgrad model file, not a checkpoint; pass the "
            "checkpoint that the run wrote, which resgrad train names after "
            "--out with .checkpoint.npz."
        )
    counts = collections.Counter(names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        reason = f"the archive repeats the member(s) {duplicates}"
        raise _invalid(path, reason, layout.kind)
    for info in members:
        _check_member(path, info, layout)
    declared = sum(info.file_size for info in members)
    if declared > MAX_EXPANSION * size:
        raise _invalid(
            path,
            f"its members declare {declared} uncompressed bytes, more than "
            f"{MAX_EXPANSION} times the {size}-byte file; it may be a zip bomb",
            layout.kind,
        )


def _check_member(path: Path, info: zipfile.ZipInfo, layout: _Layout) -> None:
    key = info.filename.removesuffix(".npy")
    if not info.filename.endswith(".npy") or not (
        key == layout.header_key or layout.key_pattern.fullmatch(key)
    ):
        raise _invalid(
            path,
            f"unexpected archive member {info.filename!r}; a {layout.kind} file "
            f"holds only {layout.members}",
            layout.kind,
        )
    if info.flag_bits & 0x1:
        raise _invalid(path, f"the member {info.filename!r} is encrypted", layout.kind)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _invalid(
            path,
            f"the member {info.filename!r} uses zip compression method "
            f"{info.compress_type}; only stored and deflated members are read",
            layout.kind,
        )
    stored = info.compress_type == zipfile.ZIP_STORED
    if stored and info.file_size != info.compress_size:
        raise _invalid(
            path,
            f"the stored member {info.filename!r} declares {info.file_size} bytes "
            f"but occupies {info.compress_size}",
            layout.kind,
        )


def _read_npy_header(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, kind: str
) -> tuple[tuple[int, ...], np.dtype]:
    """Read one member's ``.npy`` header and check it against the member size."""
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = NPY_HEADER_READERS.get(version)
            if read_header is not None:
                shape, _, dtype = read_header(member)
        except ValueError as error:
            problem = npy_header_problem(error)
            if problem is None:
                # Such as a member cut short, which the caller names.
                raise
            reason = f"the member {info.filename!r} has {problem}"
            raise _invalid(path, reason, kind) from error
        if read_header is None:
            reason = f"the member {info.filename!r} has .npy format version {version}"
            raise _invalid(path, reason, kind)
        header_size = member.tell()
    if dtype.hasobject:
        raise _invalid(
            path,
            f"the member {info.filename!r} contains an object array (pickled Python "
            "objects), which is never loaded",
            kind,
        )
    data_size = math.prod(shape) * dtype.itemsize
    if header_size + data_size != info.file_size:
        raise _invalid(
            path,
            f"the member {info.filename!r} declares shape {shape} of {dtype} "
            f"({data_size} bytes) but holds {info.file_size - header_size} bytes",
            kind,
        )
    return tuple(shape), dtype


# The starts of the ValueError messages of NumPy's .npy header readers, and
# the problem that each reports. NumPy's own words can show an object that its
# parser refused or advise loading with allow_pickle=True.
_NPY_HEADER_ERRORS = {
    "Header info length": "a .npy header longer than NumPy reads safely",
    "the magic string is not correct": "no .npy magic string at its start",
    "Cannot parse header": "a .npy header that is not a plain dictionary",
    # From ast.literal_eval, for a header that contains an expression.
    "malformed node or string": "a .npy header that is not a plain dictionary",
    "Header is not a dictionary": "a .npy header that is not a plain dictionary",
    "Header does not contain": "a .npy header without the keys of an array",
    "shape is not valid": "a .npy header with an invalid shape",
    "fortran_order is not": "a .npy header with an invalid fortran_order",
    "descr is not": "a .npy header with an invalid dtype",
}


def npy_header_problem(error: Exception) -> str | None:
    """Return what is wrong with a ``.npy`` header, for the ``ValueError``
    that NumPy's header reader raised, or ``None`` for another error, such
    as a member cut short."""
    text = str(error)
    for start, problem in _NPY_HEADER_ERRORS.items():
        if text.startswith(start):
            return problem
    return None


def _check_array_headers(
    path: Path, headers: dict[str, tuple], expected: dict[str, tuple], dtype: str
) -> None:
    present = set(headers) - {CONFIG_KEY}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing or extra:
        raise _invalid(
            path,
            f"the arrays do not match the config: missing {missing}, "
            f"unexpected {extra}",
        )
    for key, shape in expected.items():
        found_shape, found_dtype = headers[key]
        if found_dtype.kind != "f" or found_dtype.name != dtype:
            raise _invalid(
                path,
                f"{key} has dtype {found_dtype}, but the config declares {dtype} "
                "for every array",
            )
        if found_shape != shape:
            raise _invalid(
                path,
                f"{key} has shape {found_shape}, but the config's sizes and hidden "
                f"widths need {_short(shape)}",
            )


# The JSON header.


def _read_header(path: Path, file: IO[bytes], headers: dict[str, tuple]) -> dict:
    if CONFIG_KEY not in headers:
        raise _invalid(path, f"the archive has no {CONFIG_KEY} member")
    shape, dtype = headers[CONFIG_KEY]
    if dtype != np.uint8 or len(shape) != 1:
        raise _invalid(
            path,
            f"{CONFIG_KEY} has shape {shape} of {dtype}; expected the 1-D uint8 "
            "bytes of a JSON object",
        )
    raw = _read_arrays(path, file, {CONFIG_KEY: headers[CONFIG_KEY]})[CONFIG_KEY]
    try:
        header = _strict_json(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _invalid(
            path, f"{CONFIG_KEY} is not valid UTF-8 JSON ({error})"
        ) from error
    _check_newer_format(path, header)
    _check_fields(path, "the header", header, _HEADER_FIELDS)
    _check_format(path, header)
    _check_config(path, header["config"])
    return header


def _check_fields(path: Path, where: str, value: Any, fields: dict[str, type]) -> None:
    if not isinstance(value, dict):
        raise _invalid(path, f"{where} is a {type(value).__name__}, not a JSON object")
    missing = sorted(set(fields) - set(value))
    unknown = sorted(set(value) - set(fields))
    if missing:
        raise _invalid(path, f"{where} is missing the field(s) {missing}")
    if unknown:
        raise _invalid(path, f"{where} has unknown field(s) {unknown}")
    for name, kind in fields.items():
        field = value[name]
        if not isinstance(field, kind) or (kind is int and isinstance(field, bool)):
            raise _invalid(
                path,
                f"{where} field {name!r} is {_short(field)}; expected "
                f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}",
            )


# A resgrad_version shown in a message, such as 1.2.0 or 2.0.0rc1+local. Other
# text in that field of a later format is left out of the message.
_VERSION_TEXT = re.compile(r"[0-9A-Za-z.+!_-]{1,40}")


def _check_newer_format(path: Path, header: Any) -> None:
    """Reject a model file of a later format version than this resgrad reads.

    This runs before the other header checks, because a later format may
    add, remove or retype fields.
    """
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return
    version = header.get("format_version")
    if not _is_positive_int(version) or version <= FORMAT_VERSION:
        return
    from . import __version__

    writer = header.get("resgrad_version")
    written_by = ""
    if isinstance(writer, str) and _VERSION_TEXT.fullmatch(writer):
        written_by = f", written by resgrad {writer}"
    raise InvalidModelFile(
        f"{path} is a resgrad model file of format version {_short(version)}"
        f"{written_by}, but resgrad {__version__} reads format versions up to "
        f"{FORMAT_VERSION}. Upgrade resgrad to read it."
    )


def _check_format(path: Path, header: dict) -> None:
    if header["format"] != FORMAT:
        raise _invalid(
            path, f"its format is {_short(header['format'])}, not {FORMAT!r}"
        )
    version = header["format_version"]
    if version != FORMAT_VERSION:
        raise _invalid(path, f"its format version {_short(version)} is unknown")


def _check_config(path: Path, config: dict) -> None:
    _check_fields(path, "the config", config, _CONFIG_FIELDS)
    sizes, hidden = config["sizes"], config["hidden"]
    if len(sizes) < 2 or not all(_is_positive_int(s) for s in sizes):
        raise _invalid(
            path, f"config sizes {_short(sizes)} are not two or more positive ints"
        )
    _check_block_count(path, config)
    if not all(_is_positive_int(q) for q in hidden):
        raise _invalid(
            path, f"config hidden {_short(hidden)} are not all positive ints"
        )
    for name in ("activation", "post_activation", "output_activation"):
        if config[name] not in ACTIVATIONS:
            raise _invalid(
                path,
                f"config {name} {_short(config[name])} is unknown; expected one of "
                f"{', '.join(ACTIVATIONS)}",
            )
    _check_blocks(path, config)
    if config["dtype"] not in DTYPES:
        raise _invalid(
            path, f"config dtype {_short(config['dtype'])} is not one of {DTYPES}"
        )


# The config lists with one entry per block. sizes has one entry more.
_PER_BLOCK_FIELDS = ("hidden", "shortcuts", "biases")


def _check_block_count(path: Path, config: dict) -> None:
    """Check that sizes and the per-block lists give the same number of blocks.

    When all lists but one agree, the message names that one, because it is
    the likely edit. Otherwise it lists every count.
    """
    counts = {"sizes": len(config["sizes"]) - 1}
    counts.update((name, len(config[name])) for name in _PER_BLOCK_FIELDS)
    depth, agreeing = collections.Counter(counts.values()).most_common(1)[0]
    if agreeing == len(counts):
        return
    if agreeing < len(counts) - 1:
        found = ", ".join(
            f"{name} {_short(config[name])} gives {_blocks(count)}"
            for name, count in counts.items()
        )
        raise _invalid(
            path,
            f"the config lists give different numbers of blocks ({found}), but "
            "they must agree, with one entry more in sizes than in hidden, "
            "shortcuts and biases",
        )
    name = next(name for name, count in counts.items() if count != depth)
    others = [other for other in counts if other != name]
    if name == "sizes":
        found = _entries(len(config["sizes"]))
        needed = f"{depth + 1}, the input width and one output width per block"
    else:
        found, needed = _entries(counts[name]), f"{depth}, one per block"
    raise _invalid(
        path,
        f"config {name} {_short(config[name])} has {found}, but "
        f"{', '.join(others[:-1])} and {others[-1]} give {_blocks(depth)}, "
        f"so it needs {needed}",
    )


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _blocks(count: int) -> str:
    return f"{count} block" if count == 1 else f"{count} blocks"


def _check_blocks(path: Path, config: dict) -> None:
    shortcuts, biases = config["shortcuts"], config["biases"]
    if not all(s in SHORTCUTS for s in shortcuts):
        raise _invalid(
            path,
            f"config shortcuts {_short(shortcuts)} are not all one of "
            f"{', '.join(SHORTCUTS)}",
        )
    pairs = all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(flag, bool) for flag in pair)
        for pair in biases
    )
    if not pairs:
        raise _invalid(
            path,
            f"config biases {_short(biases)} are not all [b1, b2] pairs of booleans",
        )


# reprlib cuts long lists, strings and ints with "...", so that an edited
# config of a million sizes or a 4000-digit width gives a short message.
_SHORT_REPR = reprlib.Repr()


def _short(value: Any) -> str:
    """Return the repr of a value from a file, shortened if long."""
    return _SHORT_REPR.repr(value)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Return the shape of every array that the config implies, by key."""
    shapes = {}
    sizes = config["sizes"]
    blocks = zip(sizes[:-1], config["hidden"], sizes[1:], config["shortcuts"])
    for index, (p_in, q, p_out, shortcut) in enumerate(blocks):
        has_b1, has_b2 = config["biases"][index]
        prefix = f"blocks.{index}."
        shapes[prefix + "W1"] = (q, p_in)
        shapes[prefix + "W2"] = (p_out, q)
        if shortcut == "learned":
            shapes[prefix + "W3"] = (p_out, p_in)
        if has_b1:
            shapes[prefix + "b1"] = (q,)
        if has_b2:
            shapes[prefix + "b2"] = (p_out,)
    return shapes


# The arrays and the model.


def _read_arrays(
    path: Path, file: IO[bytes], headers: dict[str, tuple], kind: str = "model"
) -> dict[str, np.ndarray]:
    """Read the named members, whose headers have already been checked."""
    file.seek(0)
    magic = np.lib.format.MAGIC_PREFIX
    if file.read(len(magic)) == magic:
        # np.load reads such a file as one array, even where a zip archive
        # that zipfile accepts follows the array.
        raise _invalid(path, "it starts as a .npy array, not as a zip archive", kind)
    file.seek(0)
    if file.read(len(_ZIP_SIGNATURE)) != _ZIP_SIGNATURE:
        # zipfile finds an archive after other bytes, but np.load then reads
        # the file as a pickle and advises allow_pickle, which would be unsafe.
        raise _invalid(path, "other bytes come before its zip archive", kind)
    file.seek(0)
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in headers}
    except _ZIP_ERRORS as error:
        reason = f"an array could not be read ({error})"
        raise _invalid(path, reason, kind) from error
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InvalidModelFile(
                f"{path} is laid out as a resgrad {kind} file, but {key} contains "
                "NaN or infinite values, which resgrad never writes, so the file "
                f"was changed since it was saved.{DAMAGED_FIXES.get(kind, '')}"
            )
    return arrays


def _build_model(
    path: Path, config: dict, arrays: dict[str, np.ndarray]
) -> ResidualMLP:
    native = {
        key: value.astype(value.dtype.newbyteorder("="), copy=False)
        for key, value in arrays.items()
    }
    blocks = []
    try:
        for index, shortcut in enumerate(config["shortcuts"]):
            prefix = f"blocks.{index}."
            blocks.append(
                Block(
                    W1=native[prefix + "W1"],
                    W2=native[prefix + "W2"],
                    W3=native.get(prefix + "W3"),
                    b1=native.get(prefix + "b1"),
                    b2=native.get(prefix + "b2"),
                    shortcut=shortcut,
                )
            )
        return ResidualMLP(
            blocks,
            activation=config["activation"],
            post_activation=config["post_activation"],
            output_activation=config["output_activation"],
        )
    except (ValueError, TypeError) as error:
        raise _invalid(path, f"its arrays do not form a network ({error})") from error


# Training checkpoints.


CHECKPOINT_FORMAT = "resgrad-checkpoint"
CHECKPOINT_KEY = "__checkpoint__"
# A group of a checkpoint's array keys, such as "params", or an optimizer
# state field within the group "state", such as "mu".
CHECKPOINT_NAME = re.compile(r"[a-z_]+")

_CHECKPOINT_LAYOUT = _Layout(
    "checkpoint",
    CHECKPOINT_KEY,
    re.compile(
        rf"{CHECKPOINT_NAME.pattern}(\.{CHECKPOINT_NAME.pattern})?\."
        + _PARAMETER_KEY.pattern
    ),
    f"{CHECKPOINT_KEY}.npy and <group>.blocks.<l>.<W1|W2|W3|b1|b2>.npy",
)


def save_checkpoint(path: PathLike, header: dict, arrays: dict[str, Any]) -> None:
    """Write a training checkpoint, whole or not at all.

    Args:
        path: the file to write; its folder must exist.
        header: a JSON-serialisable dict (finite floats only), stored with
            the fields ``format`` and ``format_version`` added.
        arrays: NumPy float arrays keyed ``<group>.blocks.<l>.<name>`` or
            ``<group>.<field>.blocks.<l>.<name>``, e.g. ``params.blocks.0.W1``
            or ``state.mu.blocks.0.W1``.

    Raises:
        ValueError: if a key does not have that form.
        TypeError: if the header is not JSON-serialisable.
    """
    for key in arrays:
        if not _CHECKPOINT_LAYOUT.key_pattern.fullmatch(key):
            raise ValueError(
                f"Invalid checkpoint array key {key!r}; expected "
                "<group>.blocks.<l>.<W1|W2|W3|b1|b2>."
            )
    full = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **header}
    try:
        text = json.dumps(full, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"The checkpoint header is not JSON-serialisable: {error}."
        ) from error
    members = {key: np.asarray(value) for key, value in arrays.items()}
    members[CHECKPOINT_KEY] = np.frombuffer(text.encode("utf-8"), np.uint8)
    write_atomically(Path(path), lambda file: np.savez(file, **members))


def load_checkpoint(path: PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a checkpoint written by ``save_checkpoint``; return header, arrays.

    The file gets the checks of ``load``: no code runs, declared sizes are
    checked against the file size before any array is read, every array is
    a finite float array.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a valid resgrad checkpoint.
    """
    path = _existing_file(path, "Checkpoint")
    kind = _CHECKPOINT_LAYOUT.kind
    with open(path, "rb") as file:
        headers = _check_archive(path, file, _CHECKPOINT_LAYOUT)
        member = _pop_header_member(path, headers)
        for key, (_, dtype) in headers.items():
            if dtype.kind != "f":
                raise _invalid(path, f"{key} has dtype {dtype}, not float", kind)
        raw = _read_arrays(path, file, {CHECKPOINT_KEY: member}, kind)
        header = _decode_checkpoint_header(path, raw[CHECKPOINT_KEY])
        arrays = _read_arrays(path, file, headers, kind)
    native = {
        key: value.astype(value.dtype.newbyteorder("="), copy=False)
        for key, value in arrays.items()
    }
    return header, native


def is_checkpoint(path: PathLike) -> bool:
    """Return whether ``path`` is a file that declares the resgrad checkpoint
    format, of any version, damaged arrays or not.

    Training overwrites such a file and no other, because a checkpoint path
    that names any other file, such as the data, names the user's file.
    """
    path = Path(path)
    kind = _CHECKPOINT_LAYOUT.kind
    try:
        with open(path, "rb") as file:
            headers = _check_archive(path, file, _CHECKPOINT_LAYOUT)
            member = _pop_header_member(path, headers)
            raw = _read_arrays(path, file, {CHECKPOINT_KEY: member}, kind)
        _checkpoint_format(path, raw[CHECKPOINT_KEY])
    except (OSError, ValueError):
        return False
    return True


def _pop_header_member(path: Path, headers: dict[str, tuple]) -> tuple:
    """Remove the header member from a checkpoint's ``headers`` and return its
    ``(shape, dtype)``, after checking that it is a 1-D uint8 array."""
    kind = _CHECKPOINT_LAYOUT.kind
    if CHECKPOINT_KEY not in headers:
        raise _invalid(path, f"the archive has no {CHECKPOINT_KEY} member", kind)
    shape, dtype = headers.pop(CHECKPOINT_KEY)
    if dtype != np.uint8 or len(shape) != 1:
        reason = f"{CHECKPOINT_KEY} has shape {shape} of {dtype}, not 1-D uint8"
        raise _invalid(path, reason, kind)
    return shape, dtype


def _strict_json(text: str) -> Any:
    """Parse ``text`` as JSON, raising ``ValueError`` for ``NaN``,
    ``Infinity`` and numbers beyond float64, which Python's parser accepts
    and resgrad never writes."""

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not a JSON number")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"{literal} is beyond the float64 range")
        return value

    return json.loads(text, parse_constant=constant, parse_float=finite)


def _checkpoint_format(path: Path, raw: np.ndarray) -> dict:
    """Decode a checkpoint's JSON header and check that it declares the
    checkpoint format, of any version."""
    kind = _CHECKPOINT_LAYOUT.kind
    try:
        header = _strict_json(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = f"{CHECKPOINT_KEY} is not valid UTF-8 JSON ({error})"
        raise _invalid(path, reason, kind) from error
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise _invalid(path, f"its header does not declare {CHECKPOINT_FORMAT!r}", kind)
    return header


def _decode_checkpoint_header(path: Path, raw: np.ndarray) -> dict:
    kind = _CHECKPOINT_LAYOUT.kind
    header = _checkpoint_format(path, raw)
    version = header.get("format_version")
    if _is_positive_int(version) and version > FORMAT_VERSION:
        from . import __version__

        raise InvalidModelFile(
            f"{path} is a resgrad checkpoint of format version {version}, "
            f"written by a later resgrad than {__version__}, which reads version "
            f"{FORMAT_VERSION}. Resume with the resgrad that wrote it, or start "
            "over with --overwrite."
        )
    if version != FORMAT_VERSION:
        reason = f"its format version {_short(version)} is not {FORMAT_VERSION}"
        raise _invalid(path, reason, kind)
    return header
