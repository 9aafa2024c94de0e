"""Data sets for training and attacking residual networks.

Every loader returns float64 features ``X`` of shape ``(n, d)``, one row per
sample, and int64 labels ``y`` of shape ``(n,)`` that run from ``0`` to
``k - 1``. Images of shape ``(n, h, w)`` are flattened to ``(n, h * w)`` and
keep ``(h, w)`` as ``image_shape``. ``load_data`` splits the rows into a
stratified training and test part and scales the features into the box
``[0, 1]`` that attacks clip to.

Supported sources: the scikit-learn digits (8 x 8 images, 10 classes), an
``.npz`` archive with arrays ``X`` and ``y``, a numeric CSV with one label
column, and the MNIST IDX format (``*-ubyte`` files, optionally gzipped).
``from_arrays`` splits and scales arrays already in memory.
Only NumPy is needed, except for the digits, which need scikit-learn.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import itertools
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import _arrays
from .io import NPY_HEADER_READERS, npy_header_problem

PathLike = str | os.PathLike

DIGITS_SHAPE = (8, 8)
DIGITS_MAX = 16.0
UINT8_MAX = 255.0
SCALES = ("auto", None)

# IDX dtype codes from the MNIST format description (LeCun et al.); every
# multi-byte value in the file is big-endian.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The largest ratio of output to input that a deflate stream can reach.
DEFLATE_MAX_RATIO = 1032
# The first two bytes of every gzip file, which Python's gzip module checks.
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK_BYTES = 1 << 20
# The local-file and empty-archive headers that a zip file starts with.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
# zipfile raises NotImplementedError for a zip version or feature it lacks.
_NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    NotImplementedError,
    zlib.error,
)


@dataclass
class Dataset:
    """A classification data set split into a training and a test part.

    Attributes:
        x_train: training features, float64 of shape ``(n_train, d)``.
        y_train: training labels, int64 of shape ``(n_train,)``.
        x_test: test features, float64 of shape ``(n_test, d)``.
        y_test: test labels, int64 of shape ``(n_test,)``.
        n_classes: the number of classes ``k``; labels lie in ``[0, k)``.
        image_shape: ``(h, w)`` when each row is a flattened image
            (``(8, 8)`` for the digits, ``(28, 28)`` for MNIST), else ``None``.
        name: a short label for reports, such as ``"digits"`` or a file stem.
        bounds: the input box ``(lo, hi)`` that contains every feature value,
            ``(0.0, 1.0)`` after scaling.
        scaling: the affine map from the file's values to the features,
            ``{"offset": o, "scale": s}`` with ``features = (values - o) /
            s`` (each a number, or a list with one entry per feature), or
            ``None`` for unscaled values. A column (for images, all pixels)
            whose range is wider than the largest float64 would need an
            infinite ``s``, so its values are halved first. The map then
            has a third key ``"prescale": p``, with ``features = (values *
            p - o) / s``, ``p`` being 0.5 for that column and 1 for the
            others. ``load_data(..., scaling=...)`` applies the map to other
            data, as ``resgrad train`` records it in the model file for the
            commands that read data later.
        digest: the SHA-256 digest, in hexadecimal, of the rows as read,
            before the split and the scaling. Two loads of the same rows
            give the same digest, whatever the file's name or format.
        clipped: for a ``scaling`` passed to ``load_data``, the number of
            values of each feature, in both parts, that the map put outside
            ``[0, 1]`` and that were clipped into it, of shape ``(d,)``;
            ``None`` for the other ways of scaling.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None
    name: str
    bounds: tuple[float, float]
    scaling: dict[str, Any] | None = None
    digest: str | None = None
    clipped: np.ndarray | None = None

    __repr__ = _arrays.summary_repr

    @property
    def n_features(self) -> int:
        """The input width ``d``, which is the model's ``p_0``."""
        return int(self.x_train.shape[1])

    def summary(self) -> str:
        """Describe the sizes, classes and input box in one line."""
        images = ""
        if self.image_shape is not None:
            images = f" ({self.image_shape[0]}x{self.image_shape[1]} images)"
        lo, hi = self.bounds
        return (
            f"{self.name}: {len(self.y_train)} train + {len(self.y_test)} test "
            f"samples, {self.n_features} feature{'' if self.n_features == 1 else 's'}"
            f"{images}, {self.n_classes} "
            f"classes, inputs in [{lo:g}, {hi:g}]"
        )


# Splitting.


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split rows into a training and a test part, stratified by label.

    Each class gives about ``test_size`` of its rows to the test part, and
    every class with at least two rows appears in both parts. A class with a
    single row goes to the training part, so the test part is empty when
    every class has one row. Keeping a row of every class in each part can
    move the split far from ``test_size`` when there are few rows per
    class: 20 rows in 10 classes split 10/10 at ``test_size=0.1``. The same
    seed gives the same split. The inputs are not modified.

    Args:
        x: features of shape ``(n, ...)``.
        y: integer labels of shape ``(n,)``.
        test_size: the fraction of rows for the test part, in ``(0, 1)``.
        seed: the seed of the NumPy generator that shuffles the rows.

    Returns:
        ``(x_train, x_test, y_train, y_test)``, new arrays in shuffled order.

    >>> x = np.arange(8.0)[:, None]
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> x_train, x_test, y_train, y_test = train_test_split(x, y, 0.5)
    >>> sorted(y_test.tolist())
    [0, 0, 1, 1]
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"Expected x with one row per label in y, got x of shape {x.shape} "
            f"and y of shape {y.shape}."
        )
    test_size = float(test_size)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"Expected test_size in (0, 1), got {test_size}.")

    rng = np.random.default_rng(_arrays.check_seed(seed))
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_test = _allocate_test_rows(counts, test_size)
    train_rows, test_rows = [], []
    for index in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(inverse == index))
        test_rows.append(rows[: n_test[index]])
        train_rows.append(rows[n_test[index] :])
    train = rng.permutation(np.concatenate(train_rows))
    test = rng.permutation(np.concatenate(test_rows))
    return x[train], x[test], y[train], y[test]


def _allocate_test_rows(counts: np.ndarray, test_size: float) -> np.ndarray:
    """Return the number of test rows per class, summing to about the target.

    The total ``ceil(test_size * n)`` is shared in proportion to ``counts``
    by largest remainders, then each class with two or more rows is kept
    between one test row and one training row.
    """
    total = int(np.ceil(test_size * counts.sum()))
    ideal = test_size * counts
    n_test = np.floor(ideal).astype(np.int64)
    short = min(total - int(n_test.sum()), len(counts))
    order = np.argsort(-(ideal - n_test), kind="stable")
    n_test[order[:short]] += 1
    n_test = np.minimum(np.maximum(n_test, 1), counts - 1)
    return np.maximum(n_test, 0)


# Digits.


def load_digits(test_size: float = 0.25, seed: int = 0) -> Dataset:
    """Load the scikit-learn digits: 1797 images of 8 x 8 pixels, 10 classes.

    The pixel values ``0..16`` are divided by 16, so inputs lie in ``[0, 1]``.

    Args:
        test_size: the fraction of rows for the test part, in ``(0, 1)``.
        seed: the seed of the stratified split.

    Raises:
        ImportError: if scikit-learn is not installed.
    """
    x, y = _digits_arrays()
    return _make_dataset(
        x, y, DIGITS_SHAPE, "digits", test_size, seed, "auto", divisor=DIGITS_MAX
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise ImportError(
            "The digits data set needs scikit-learn; install it with "
            'pip install "resgrad[cli]", or pass a data file instead.'
        ) from error
    bunch = sklearn_load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


# File readers.


def load_npz(path: PathLike) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Read features ``X`` and labels ``y`` from an ``.npz`` archive.

    ``X`` has shape ``(n, d)``, or ``(n, h, w)`` for images, which are
    flattened. Pickled (object) arrays are rejected, so reading runs no code
    from the file. Archives from ``np.savez`` and ``np.savez_compressed``
    load. Before any array is allocated, the sizes that the archive and the
    ``.npy`` headers declare are checked against the compressed data and
    against the memory available. A zip bomb is therefore rejected unless
    its data fits in memory once expanded.

    Returns:
        ``(X, y, image_shape)``: float64 ``(n, d)``, int64 ``(n,)`` and
        ``(h, w)`` or ``None``.

    Raises:
        ValueError: for a file that is not such an archive, lacks ``X`` or
            ``y``, declares more data than it holds, or needs more memory
            than is available.
    """
    path = _existing_file(path)
    _check_npz_format(path)
    _check_npz_sizes(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as error:
        raise _npz_error(path, error) from error
    with archive:
        x, y = _npz_arrays(path, archive)
    return _validate_arrays(x, y, source=path)


def _check_npz_format(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a zip file, as ``np.savez`` writes.

    Checking first keeps a text or pickle file from reaching ``np.load``,
    whose message for them suggests unsafe loading.
    """
    with open(path, "rb") as file:
        start = file.read(len(np.lib.format.MAGIC_PREFIX))
    # np.load opens an archive only when it starts with a zip header.
    if start[:4] in _ZIP_STARTS and zipfile.is_zipfile(path):
        return
    if start == np.lib.format.MAGIC_PREFIX:
        raise ValueError(
            f"{path} contains a single array, not an .npz archive; save features "
            "and labels with np.savez(path, X=X, y=y)."
        )
    raise ValueError(
        f"{path} is not a readable .npz archive (a zip file of arrays); save "
        "features and labels with np.savez(path, X=X, y=y)."
    )


def _check_npz_sizes(path: Path) -> None:
    """Raise ``ValueError`` before ``np.load`` allocates for ``X.npy`` or
    ``y.npy`` more than the archive can hold or the machine has.

    NumPy allocates the shape that a member's ``.npy`` header declares, and
    zipfile reads a member up to the size that the archive declares for it.
    Each header is checked against that size, and that size against what
    the member's compressed bytes can expand to, as for gzipped IDX files.
    The arrays and their float64 and int64 copies must then fit in the
    memory that the operating system reports as available.
    """
    needed = 0
    file_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for key in ("X", "y"):
                # np.load reads a member named exactly like the key before
                # one with the .npy suffix.
                name = key if key in names else f"{key}.npy"
                if names.count(name) > 1:
                    raise _ArchiveCheckError(
                        f"{path} repeats the member {name}, so which one loads "
                        "is unclear; save features and labels with "
                        "np.savez(path, X=X, y=y)."
                    )
                if name in names:
                    info = archive.getinfo(name)
                    needed += _npz_member_bytes(path, archive, info, file_size)
    except _NPZ_ERRORS as error:
        if isinstance(error, _ArchiveCheckError):
            raise
        raise _npz_error(path, error) from error
    available = _available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{path} needs about {needed / 2**20:.0f} MiB to load, its arrays "
            f"and their float64 copies, but {available / 2**20:.0f} MiB of "
            "memory is available; free memory or load a smaller file."
        )


class _ArchiveCheckError(ValueError):
    """A member of an ``.npz`` archive failed a check before loading."""


def _npz_member_bytes(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int
) -> int:
    """Check one member's declared sizes against each other and against the
    ``file_size`` bytes of the archive, and return the bytes that loading
    the member and converting it to 8-byte numbers takes."""
    name = info.filename
    fix = (
        "the archive is corrupt or hostile; save features and labels with "
        "np.savez(path, X=X, y=y)."
    )
    if info.flag_bits & 0x1:
        raise _ArchiveCheckError(
            f"{path}: the member {name} is encrypted; save features and labels "
            "with np.savez(path, X=X, y=y)."
        )

    if info.compress_size > file_size:
        raise _ArchiveCheckError(
            f"{path}: the member {name} declares {info.compress_size} compressed "
            f"bytes in a {file_size}-byte file; {fix}"
        )

    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        limit = DEFLATE_MAX_RATIO * info.compress_size
    else:
        raise _ArchiveCheckError(
            f"{path}: the member {name} uses zip compression method "
            f"{info.compress_type}; save features and labels with np.savez or "
            "np.savez_compressed, which write stored or deflated members."
        )

    if info.file_size > limit:
        raise _ArchiveCheckError(
            f"{path}: the member {name} declares {info.file_size} bytes, more "
            f"than its {info.compress_size} compressed bytes can hold; {fix}"
        )

    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in NPY_HEADER_READERS:
            raise _ArchiveCheckError(
                f"{path}: the member {name} has .npy format version "
                f"{version[0]}.{version[1]}; save numeric arrays with np.savez."
            )
        shape, _, dtype = NPY_HEADER_READERS[version](member)
        header_size = member.tell()

    if dtype.hasobject:
        # np.load rejects it, with the message of _npz_error.
        return info.file_size

    data_size = math.prod(shape) * dtype.itemsize
    if header_size + data_size != info.file_size:
        raise _ArchiveCheckError(
            f"{path}: the member {name} declares shape {shape} of {dtype} "
            f"({data_size} bytes) but holds {info.file_size - header_size} "
            f"bytes; {fix}"
        )
    return info.file_size + 8 * math.prod(shape)


def _available_memory() -> int | None:
    """Return the bytes of memory available to new allocations, or ``None``
    where the operating system does not report them.

    Linux's ``MemAvailable`` counts, else the free physical pages, and at
    most what the address-space limit of ``ulimit -v`` leaves.
    """
    available = _proc_bytes("/proc/meminfo", "MemAvailable:")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    try:
        import resource
    except ImportError:
        return available
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    used = _proc_bytes("/proc/self/status", "VmSize:")
    if limit != resource.RLIM_INFINITY and used is not None:
        # The limit counts the address space this process already maps.
        available = min(available, limit - used)
    return max(available, 0)


def _proc_bytes(path: str, key: str) -> int | None:
    """Return the bytes of the ``key`` line of a Linux /proc file, which
    gives kilobytes, or ``None`` where it cannot be read."""
    try:
        with open(path, encoding="ascii") as file:
            for line in file:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _npz_error(path: Path, error: Exception) -> ValueError:
    """Return the ``ValueError`` for an archive that NumPy failed to read."""
    reason = str(error).rstrip(".")
    if not reason:
        # EOFError carries no message when the data ends early.
        reason = f"reading it failed with {type(error).__name__}"
        if isinstance(error, EOFError):
            reason = "it ends before the data it declares"
    problem = npy_header_problem(error)
    if problem is not None:
        reason = f"one of its arrays has {problem}"
    elif "pickle" in reason.lower():
        # NumPy's wording here points to its unsafe loading option.
        reason = (
            "it contains an object array, which is not loaded because "
            "unpickling can run code from the file"
        )
    return ValueError(
        f"{path} is not a readable .npz archive: {reason}; save numeric features "
        "and labels with np.savez(path, X=X, y=y)."
    )


def _npz_arrays(path: Path, archive: Any) -> tuple[np.ndarray, np.ndarray]:
    missing = [key for key in ("X", "y") if key not in archive.files]
    if missing and {"__config__", "__checkpoint__"} & set(archive.files):
        kind = "model" if "__config__" in archive.files else "training checkpoint"
        option = "--model" if kind == "model" else "--checkpoint with --resume"
        raise ValueError(
            f"{path} is a resgrad {kind} file, not data; pass it as {option}, "
            "and the data as a .npz of arrays X and y, a .csv or an IDX file."
        )
    if missing:
        raise ValueError(
            f"{path} is missing the array(s) {missing}, found {sorted(archive.files)}; "
            "save features and labels with np.savez(path, X=X, y=y)."
        )
    try:
        return archive["X"], archive["y"]
    except _NPZ_ERRORS as error:
        raise _npz_error(path, error) from error


def load_csv(
    path: PathLike, label_column: int | None = None, header: bool | str = "auto"
) -> tuple[np.ndarray, np.ndarray, None]:
    """Read a comma-separated file of numbers with one label column.

    Args:
        path: the CSV file; every field except the header is a number.
        label_column: the index of the label column (negative counts from
            the end, so ``-1`` is the last column). ``None`` reads the last
            column, and raises ``ValueError`` when the header names another
            column ``label``, ``labels``, ``class`` or ``target`` (in any
            case), so that a feature is never read as the label.
        header: ``True`` if the first row contains column names, ``False`` if
            not, or ``"auto"`` to treat the first row as a header when none
            of its fields is a number, or when each of its numbers is its
            own column index, counted from 0 or from 1 (``0,1,2,label``, as
            pandas writes the columns of a frame built from an array). Names
            such as ``nan`` and ``inf`` count as text beside another name,
            as in ``nan,inf,label``. With ``"auto"``, any other first row of
            both numbers and text, such as a data row with a typo, is an
            error.

    Fields may be quoted with double quotes, such as ``"0.5"``. A header
    whose first field is empty, as pandas' ``to_csv`` and R's ``write.csv``
    write above a column of row names, marks that column as row names: it
    is left out, and ``label_column`` counts the columns after it.

    Returns:
        ``(X, y, None)``: float64 ``(n, d)`` and int64 ``(n,)``.
    """
    chosen = label_column is not None
    label_column = -1 if label_column is None else label_column
    if isinstance(label_column, bool) or not isinstance(
        label_column, (int, np.integer)
    ):
        raise TypeError(
            f"label_column must be an integer column index, such as -1 for the "
            f"last column, got {label_column!r}."
        )
    path = _existing_file(path)
    fields, first, has_header, line = _header_of(path, header)
    try:
        skip = line if has_header else line - 1
        trailing = _rows_end_in_comma(path, skip)
        table = _read_table(
            path, line if has_header else 0, first, len(fields), trailing
        )
    except ValueError as error:
        if header is not False or all(map(_is_number, fields[first:])):
            raise
        raise ValueError(
            f"{str(error).rstrip('.')}. The first row contains text and was read "
            "as data because of header=False (--header no on the command "
            "line); pass header='auto' or True (--header auto or yes) to read "
            "it as column names."
        ) from error
    _check_finite_table(path, table, line if has_header else 0, first)
    width = table.shape[1]
    names = len(fields) - first
    if has_header and names != width:
        hint = ""
        text = _line_text(path, line)
        if (
            names < width
            and "#" in text
            and _strip_comment(text) != text.rstrip("\r\n")
        ):
            # An unquoted # cut the header short.
            hint = (
                " A # starts a comment, so the header ends at its first #; "
                'quote a name that contains one, such as "a#1".'
            )
        raise ValueError(
            f"{path} has {names} column names in its header but {width} columns "
            f"of data; every row needs one field per column.{hint}"
        )
    if width < 2:
        raise ValueError(
            f"{path} has {width} column; expected comma-separated features and "
            "one label column."
        )
    if not -width <= label_column < width:
        raise ValueError(
            f"label_column={label_column} (--label-column on the command line) "
            f"is outside the {width} columns of {path}; pass an index in "
            f"[{-width}, {width})."
        )
    label = label_column % width
    header_names = fields[first:] if has_header else []
    named = _label_column_hint(header_names, label, LABEL_NAMES)
    if named is not None and not chosen:
        raise ValueError(
            f"{path}: {named[0].lower()}{named[1:].rstrip('.')}, or "
            "--label-column -1 to keep the last column."
        )
    if not chosen:
        _check_one_label_name(path, header_names, label)
    features = np.delete(table, label, axis=1)
    try:
        return _validate_arrays(
            features, table[:, label], source=path, label_column=label
        )
    except ValueError as error:
        hint = _label_column_hint(header_names, label)
        if hint is None and header == "auto" and not has_header:
            # The detection read a first row of numbers alone as data.
            hint = _numeric_header_hint(table[:, label])
        if hint is None:
            raise
        raise ValueError(f"{str(error).rstrip('.')}. {hint}") from error


def _header_of(path: Path, header: bool | str) -> tuple[list[str], int, bool, int]:
    """Return the fields of the first row of the CSV file ``path``, the
    number of row-name columns before the data (0 or 1), whether that row is
    a header (``header`` as for ``load_csv``), and its line number.

    The line number counts from 1, and over the blank and comment lines
    before the row.
    """
    text, line = _first_line(path)
    # The csv module keeps a quoted name such as "od280,od315" whole.
    fields = next(csv.reader([text], skipinitialspace=True))
    if (
        len(fields) > 1
        and not fields[-1].strip()
        and _rows_end_in_comma(path, line - 1)
    ):
        # Some spreadsheet exports end every row in a comma, and the empty
        # field after it is no column.
        fields = fields[:-1]
    named_rows = len(fields) > 1 and _unquote(fields[0]) == "" and header is not False
    first = int(named_rows)
    has_header = _detect_header(fields[first:], header, path, first)
    numbers = all(map(_is_number, fields[first:]))
    special = all(map(_is_special_float, fields[first:]))
    if (
        header is True
        and numbers
        and not special
        and not _column_indices(fields[first:], [])
    ):
        warnings.warn(
            f"{path}: the first row, {text}, was read as column names because "
            "of header=True (--header yes on the command line), though it "
            "contains numbers alone; if it is a data row, pass --header auto or "
            "no (header='auto' or False in Python).",
            stacklevel=3,
        )
    if has_header and header == "auto" and numbers:
        warnings.warn(
            f"{path}: the first row, {text}, was read as column names, because "
            "its numbers are their own column indices; if it is a data row, pass "
            "--header no (header=False in Python), or add a header row of column "
            "names above it.",
            stacklevel=3,
        )
    return fields, first if has_header else 0, has_header, line


def csv_columns(path: PathLike, header: bool | str = "auto") -> list[str] | None:
    """Return the column names in the header of the CSV file ``path``, after
    any row-name column, or ``None`` for a file without a header (``header``
    as for ``load_csv``).

    ``resgrad train`` records them, so that later commands can reject a file
    whose columns are named or ordered otherwise.
    """
    path = _existing_file(path)
    with warnings.catch_warnings():
        # load_csv warns about the same header when it reads the rows.
        warnings.simplefilter("ignore")
        fields, first, has_header, _ = _header_of(path, header)
    return [_unquote(name) for name in fields[first:]] if has_header else None


# Header names that mark the label column of a CSV file; load_csv raises on
# these alone. "y" also names a coordinate, so only the hints of HINT_NAMES,
# added to errors raised for other reasons, use it.
LABEL_NAMES = ("label", "labels", "class", "target")
HINT_NAMES = (*LABEL_NAMES, "y")


def _label_column_hint(
    header: list[str], label: int, names: tuple[str, ...] = HINT_NAMES
) -> str | None:
    """Return a hint naming the header's label column, the first of
    ``names``, when it is not the column ``label`` that was read, else
    ``None``."""
    columns, found = _label_named(header, names)
    if not found or label in found:
        return None
    index = found[0]
    return (
        f"Column {label} was read as the label, but the header names column "
        f"{index} {columns[index]!r}: pass --label-column {index} "
        f"(label_column={index} in Python)."
    )


def _label_named(
    header: list[str], names: tuple[str, ...]
) -> tuple[list[str], list[int]]:
    """Return the unquoted column names of ``header`` and the indices of
    those that are one of ``names``, in any case."""
    columns = [_unquote(name) for name in header]
    return columns, [i for i, name in enumerate(columns) if name.lower() in names]


def _check_one_label_name(path: Path, header: list[str], label: int) -> None:
    """Raise ``ValueError`` when the header names another label column
    beside ``label``, which would be read as a feature and leak the label."""
    columns, found = _label_named(header, LABEL_NAMES)
    others = [index for index in found if index != label]
    if others:
        index = others[0]
        raise ValueError(
            f"{path}: column {label} {columns[label]!r} was read as the label, "
            f"but column {index} {columns[index]!r} is named as a label too and "
            "would be read as a feature, which leaks the label if it copies "
            "it; remove one of them, or, if the other is a real feature, pass "
            "--label-column (label_column= in Python) to choose the label."
        )


def _first_line(path: Path) -> tuple[str, int]:
    """Return the first line of ``path`` that is neither blank nor a ``#``
    comment, as ``np.loadtxt`` skips them, and its number counted from 1."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            for number, line in enumerate(file, start=1):
                text = _strip_comment(line, quote_after_space=True).strip()
                if text:
                    return text, number
    except UnicodeDecodeError as error:
        with open(path, "rb") as file:
            start = file.read(4)
        hint = ""
        if start in _ZIP_STARTS:
            hint = (
                " It is a zip archive, as np.savez writes; if it holds arrays X "
                "and y, give it the .npz suffix."
            )
        raise ValueError(f"{path} is not a UTF-8 text file: {error}.{hint}") from error
    raise ValueError(f"{path} is empty; expected rows of comma-separated numbers.")


def _detect_header(
    fields: list[str], header: bool | str, path: Path, first: int
) -> bool:
    """Return whether the first row, whose fields from index ``first`` on
    are ``fields``, is a header."""
    _check_header_value(header)
    if header != "auto":
        return bool(header)
    text = [index for index, field in enumerate(fields) if not _is_number(field)]
    empty = [index for index in text if not fields[index].strip()]
    if empty and len(text) < len(fields):
        # Numbers beside an empty field make a data row with a missing
        # value, not a header with an unnamed column.
        raise ValueError(
            f"The first row of {path} has numbers and an empty field, field "
            f"{empty[0] + first} (counted from 0); fill it in or remove the row."
        )
    # pandas numbers the columns from 0 beside an index column.
    starts = (0,) if first else (0, 1)
    if len(text) == len(fields) or _column_indices(fields, text, starts):
        return True
    if not text:
        return False
    if all(
        index in text or _is_special_float(field) for index, field in enumerate(fields)
    ):
        # Names such as "nan" and "inf" read as numbers, but beside a name
        # that does not, the row is a header.
        return True
    index = text[0]
    raise ValueError(
        f"The first row of {path} has both numbers and text: field {index + first} "
        f"(counted from 0) is {fields[index].strip()!r}, and "
        f"{len(fields) - len(text)} of its {len(fields) + first} fields are "
        "numbers. A "
        "header row names every column and a data row has a number in every "
        "field, so fix that row, or pass --header yes (header=True in Python) "
        "to read it as a header."
    )


def _check_header_value(header: Any) -> None:
    if header not in (True, False, "auto"):
        raise ValueError(f"Expected header True, False or 'auto', got {header!r}.")


def _column_indices(
    fields: list[str], text: list[int], starts: tuple[int, ...] = (0, 1)
) -> bool:
    """Return whether the number fields of a first row are their own column
    indices, counted from one of ``starts``.

    ``text`` lists the indices of the fields that are not numbers. A row of
    numbers alone needs three or more fields, because a data row of two,
    such as ``0,1`` (feature 0, label 1), is too likely to be data.
    """
    skipped = set(text)
    numbers = [index for index in range(len(fields)) if index not in skipped]
    if not numbers or (not text and len(fields) < 3):
        return False
    values = [float(_unquote(fields[index])) for index in numbers]
    return any(
        all(value == index + start for value, index in zip(values, numbers))
        for start in starts
    )


def _unquote(field: str) -> str:
    """Return ``field`` without spaces around it and one pair of double
    quotes, as ``np.loadtxt(..., quotechar='"')`` reads it."""
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1]
    return field


def _is_special_float(field: str) -> bool:
    """Return whether ``field`` is a float written without digits, such as
    "nan", "inf" or "-Infinity"."""
    return _is_number(field) and not any(c.isdigit() for c in field)


def _is_number(field: str) -> bool:
    """Return whether ``np.loadtxt`` reads ``field`` as a number."""
    # NumPy strips white space of any script inside the quotes too.
    text = _unquote(field).strip()
    # Python's float() also takes underscores between digits and digits of
    # other scripts, such as "1_000" and a full-width "1", which NumPy
    # rejects.
    if "_" in text or not text.isascii():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_table(
    path: Path, skip_rows: int, first: int, columns: int, trailing: bool = False
) -> np.ndarray:
    """Read the numbers of ``path`` after ``skip_rows`` rows, leaving out the
    ``first`` columns of the ``columns`` that each row has, and with
    ``trailing`` the empty field after the comma that ends each row."""
    usecols = range(first, columns) if first else None
    if trailing:
        _, text = next(_data_lines(path, skip_rows))
        count = len(next(csv.reader([_strip_comment(text).strip()])))
        usecols = range(first, count - 1)
    try:
        with warnings.catch_warnings():
            # An empty table raises below, so NumPy's warning would repeat it.
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")
            table = np.loadtxt(
                path,
                delimiter=",",
                skiprows=skip_rows,
                usecols=usecols,
                ndmin=2,
                encoding="utf-8-sig",
                quotechar='"',
            )
    except ValueError as error:
        bad = _bad_line(path, skip_rows, first)
        if bad is not None:
            raise ValueError(f"Could not read {path} as a CSV: {bad}.") from error
        reason = str(error).rstrip(".")
        if "usecols" in reason:
            # NumPy suggests an option that the command line does not have.
            reason = "the rows have different numbers of fields"
        raise ValueError(
            f"Could not read {path} as a numeric CSV: {reason}. "
            "Every field after the header row must be a number."
        ) from error
    if table.size == 0:
        raise ValueError(f"{path} has a header but no data rows.")
    return table


def _check_finite_table(
    path: Path, table: np.ndarray, skip_rows: int, first: int
) -> None:
    """Raise ``ValueError`` naming the file line and field of the first NaN
    or infinite number of ``table``, which ``_read_table`` read from ``path``
    after ``skip_rows`` rows, leaving out the ``first`` columns."""
    bad = ~np.isfinite(table)
    if not bad.any():
        return
    row, column = np.argwhere(bad)[0]
    count, index = int(bad.sum()), first + column

    number, line = next(itertools.islice(_data_lines(path, skip_rows), row, None))
    row_text = _strip_comment(line).strip()
    fields = next(csv.reader([row_text], skipinitialspace=True), [])
    advice = "remove or impute them"
    if index < len(fields):
        text = fields[index].strip()
        where = f"line {number} (counted from 1), field {index} (counted from 0)"
        found = f"{text!r}, read as {table[row, column]}"
        if skip_rows == 0 and row == 0 and all(map(_is_special_float, fields[first:])):
            advice += (
                ", or if that line names the columns, pass --header yes "
                "(header=True in Python)"
            )
    else:
        where = f"data row {row}, column {index}, both counted from 0"
        found = str(table[row, column])
    raise ValueError(
        f"{path} has {count} NaN or infinite value(s), the first at {where}: "
        f"{found}; {advice}."
    )


# A number written with a decimal comma, such as "0,637" in a quoted field.
DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")


def _bad_line(path: Path, skip_rows: int, first: int = 0) -> str | None:
    """Describe the first bad data line, or return ``None`` if there is none.

    A line is bad when its field count differs from the first data line's,
    or when one of its fields from index ``first`` on is not a number.

    Lines are counted from 1 in the file, and blank lines and ``#`` comments
    are skipped as ``np.loadtxt`` skips them.
    """
    expected = None
    for number, line in _data_lines(path, skip_rows):
        if not _strip_comment(line).strip():
            return (
                f"line {number} holds only spaces or tabs, before any # comment; "
                "np.loadtxt reads it as a row, so delete the line or its spaces"
            )
        fields = [field.strip() for field in _split_row(line)]
        if expected is None:
            expected = (number, len(fields))
        elif len(fields) != expected[1]:
            return (
                f"line {number} has {len(fields)} field(s) but line "
                f"{expected[0]} has {expected[1]}; every row needs the same "
                "number of comma-separated fields"
            )
        for index, field in enumerate(fields):
            if index >= first and not _is_number(field):
                content = "empty" if not field.strip() else repr(field.strip())
                text = _unquote(field).strip()
                if DECIMAL_COMMA.fullmatch(text):
                    whole, fraction = text.split(",")
                    where = (
                        f"line {number} (counted from 1), field {index} "
                        f"(counted from 0) is {content}"
                    )
                    if len(fraction) == 3 and whole.lstrip("+-") not in ("", "0"):
                        # 1,250 may be a thousand and a quarter or 1.25.
                        return (
                            f"{where}, which looks like a number with a "
                            "thousands separator or a decimal comma; write it "
                            f"without the comma, as {whole}{fraction}, or with "
                            f"a decimal point, as {whole}.{fraction}, whichever "
                            "it means"
                        )
                    return (
                        f"{where}, which looks like a number with a decimal "
                        f"comma; write it with a decimal point, as "
                        f"{whole}.{fraction}"
                    )
                separator = next((c for c in ";\t|" if c in field), None)
                if separator is not None:
                    # A file of fields separated by ';' often writes 5,1 for
                    # 5.1, whose comma would then split a number in two.
                    fix = (
                        "turn any decimal commas in the file into points, then "
                        "its ';' into commas"
                        if separator == ";"
                        else "convert the file to commas first"
                    )
                    return (
                        f"line {number} (counted from 1), field {index} "
                        f"(counted from 0) is {content}, which looks separated "
                        f"by {separator!r}; resgrad reads comma-separated "
                        f"values, so {fix}"
                    )
                return (
                    f"line {number} (counted from 1), field {index} (counted "
                    f"from 0) is {content}; every field after the header row "
                    "must be a number, so fill it in or remove the row, and "
                    "encode text labels as class indices (0, 1, 2 and so on)"
                )
    return None


def _rows_end_in_comma(path: Path, skip_rows: int) -> bool:
    """Return whether the first two rows of ``path`` after ``skip_rows`` both
    end in a comma, which marks a file written with one after every row,
    as some spreadsheet exports do, rather than a row that misses its last
    value."""
    rows = list(itertools.islice(_data_lines(path, skip_rows), 2))
    return bool(rows) and all(
        _strip_comment(text).rstrip().endswith(",") for _, text in rows
    )


def _data_lines(path: Path, skip_rows: int) -> Iterator[tuple[int, str]]:
    """Yield the number, counted from 1, and the text of each line of
    ``path`` after ``skip_rows`` that contains a row: empty lines and lines
    that start with a ``#`` comment are skipped, as ``np.loadtxt`` skips
    them. A line of spaces, or of spaces before a comment, is a row."""
    with open(path, encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if number > skip_rows and _strip_comment(line).strip("\r\n"):
                yield number, line


def _line_text(path: Path, number: int) -> str:
    """Return line ``number`` (from 1) of the text file at ``path``, or an
    empty string past its end."""
    with open(path, encoding="utf-8-sig", errors="replace") as file:
        for current, text in enumerate(file, start=1):
            if current == number:
                return text
    return ""


def _strip_comment(line: str, quote_after_space: bool = False) -> str:
    """Return ``line`` up to its first ``#`` outside double quotes, as
    ``np.loadtxt(..., quotechar='"')`` reads it (see ``_split_row``)."""
    return ",".join(_split_row(line, quote_after_space))


def _split_row(line: str, quote_after_space: bool = False) -> list[str]:
    """Return the comma-separated fields of ``line``, quotes included, up to
    its first ``#`` outside double quotes, as ``np.loadtxt(...,
    quotechar='"')`` splits it.

    A quote opens a quoted field only as the field's first character, and
    two quotes inside a quoted field are one literal quote. With
    ``quote_after_space``, a quote after spaces at the start of a field opens
    one too, as for ``csv.reader(..., skipinitialspace=True)``.
    """
    if '"' not in line:
        # The common case, without the walk over every character below, which
        # the error paths run on every line of a large file.
        return line.split("#", 1)[0].split(",")
    fields = []
    quoted = False
    field_start = True
    start = position = 0
    while position < len(line):
        character = line[position]
        if quoted:
            if line.startswith('""', position):
                position += 1
            elif character == '"':
                quoted = False
        elif character == "#":
            break
        elif character == '"' and field_start:
            quoted = True
        elif character == ",":
            fields.append(line[start:position])
            start = position + 1
            field_start = True
            position += 1
            continue
        field_start = field_start and quote_after_space and character == " "
        position += 1
    fields.append(line[start:position])
    return fields


def load_idx(
    images_path: PathLike, labels_path: PathLike
) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Read images and labels in the MNIST IDX format.

    An IDX file starts with two zero bytes, a dtype code (``0x08`` uint8,
    ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
    float64), the number of dimensions, and one big-endian uint32 per
    dimension. The values follow, also big-endian. Gzipped files, which
    start with the bytes 1f 8b, are decompressed, whatever their suffix.
    Before any data is read, the declared dimensions are
    checked against the file size, the image count against the label count,
    and the size of the float64 images against the memory available.

    Args:
        images_path: an IDX file of shape ``(n, h, w)`` or ``(n, d)``.
        labels_path: an IDX file of shape ``(n,)`` with integer labels.

    Returns:
        ``(X, y, image_shape)``: float64 ``(n, h * w)`` with the raw pixel
        values, int64 ``(n,)`` and ``(h, w)`` (``None`` for 2-D files).
    """
    images, labels = _read_idx_pair(images_path, labels_path)
    return _validate_arrays(
        images,
        labels,
        source=_existing_file(images_path),
        label_source=_existing_file(labels_path),
    )


def _read_idx_pair(
    images_path: PathLike, labels_path: PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file and its label file.

    Both headers are checked against each other, and the data against the
    memory available, before either file's data is read or decompressed.
    """
    images_path, labels_path = _existing_file(images_path), _existing_file(labels_path)
    image_dtype, image_shape = _idx_header_of(images_path)
    _, label_shape = _idx_header_of(labels_path)
    if len(image_shape) not in (2, 3):
        hint = ""
        if len(image_shape) == 1:
            hint = (
                " Are the two files swapped?"
                if len(label_shape) in (2, 3)
                else (
                    " It contains one number per row, as a label file does; pass "
                    "it as the labels and the image file as the data."
                )
            )
        raise ValueError(
            f"{images_path} contains an IDX array of shape {image_shape}; expected "
            f"images of shape (n, h, w) or rows of shape (n, d).{hint}"
        )
    if len(label_shape) != 1:
        raise ValueError(
            f"{labels_path} contains an IDX array of shape {label_shape}; expected "
            "one label per image, shape (n,). Are the two files swapped?"
        )
    if image_shape[0] != label_shape[0]:
        raise ValueError(
            f"{images_path} has {image_shape[0]} feature rows but {label_shape[0]} "
            f"labels in {labels_path}; expected one label per row, so pass the "
            "label file of these images."
        )
    # The raw values and their float64 copy, as for .npz archives.
    needed = math.prod(image_shape) * (image_dtype.itemsize + 8)
    available = _available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{images_path} declares images of shape {image_shape}, which need "
            f"about {needed / 2**20:.0f} MiB to load as float64, but "
            f"{available / 2**20:.0f} MiB of memory is available; free memory or "
            "load a smaller file."
        )
    return _read_idx(images_path), _read_idx(labels_path)


@contextlib.contextmanager
def _open_idx(path: Path) -> Iterator[tuple[IO[bytes], np.dtype, tuple[int, ...]]]:
    """Open an IDX file, gzipped or not, and read its header.

    Yields the file at the start of its data, with the dtype and shape that
    the header declares, once they have been checked against the file size.

    Raises:
        ValueError: if the header is invalid, the declared dimensions do not
            match the file size, or reading fails.
    """
    try:
        compressed = _is_gzip(path)
        opener = gzip.open if compressed else open
        with opener(path, "rb") as file:
            dtype, shape = _read_idx_header(path, file)
            n_bytes = math.prod(shape) * dtype.itemsize
            _check_idx_size(path, compressed, 4 + 4 * len(shape), n_bytes)
            yield file, dtype, shape
    except (OSError, EOFError, zlib.error) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"Could not read the IDX file {path}: {error}") from error


def _is_gzip(path: Path) -> bool:
    """Return whether ``path`` starts with the gzip magic bytes, which no IDX
    file starts with, because an IDX header starts with two zero bytes."""
    with open(path, "rb") as file:
        return file.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _idx_header_of(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Return the dtype and shape that an IDX file declares, without reading
    its data."""
    with _open_idx(path) as (_, dtype, shape):
        return dtype, shape


def _read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or not, into a native array.

    Raises:
        ValueError: if the header is invalid or the declared dimensions do
            not match the file size.
    """
    path = _existing_file(path)
    with _open_idx(path) as (file, dtype, shape):
        data = _read_exactly(path, file, math.prod(shape) * dtype.itemsize)
    return (
        np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    )


def _read_idx_header(path: Path, file: IO[bytes]) -> tuple[np.dtype, tuple[int, ...]]:
    magic = file.read(4)
    if len(magic) < 4:
        raise ValueError(f"{path} is too short for an IDX header ({len(magic)} bytes).")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES or magic[3] < 1:
        raise ValueError(
            f"{path} has an invalid IDX header {magic.hex()}; expected 00 00, a "
            "dtype code (08, 09, 0b, 0c, 0d, 0e) and the number of dimensions."
        )
    dims = file.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        raise ValueError(
            f"{path} ends inside its IDX header: {magic[3]} dimensions declared, "
            f"{len(dims)} of {4 * magic[3]} bytes present."
        )
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return IDX_DTYPES[magic[2]], shape


def _check_idx_size(path: Path, compressed: bool, header: int, n_bytes: int) -> None:
    """Reject declared dimensions that the file cannot hold, before reading."""
    size = path.stat().st_size
    if not compressed and size != header + n_bytes:
        raise ValueError(
            f"{path} declares {n_bytes} data bytes after a {header}-byte IDX "
            f"header, {header + n_bytes} bytes in all, but the file has {size} "
            f"bytes; the file is {'truncated' if size < header + n_bytes else 'too long'} "
            "or its header is corrupt."
        )
    if compressed and header + n_bytes > DEFLATE_MAX_RATIO * size:
        raise ValueError(
            f"{path} declares {n_bytes} data bytes, more than a {size}-byte gzip "
            "file can hold; its IDX header is corrupt."
        )


def _read_exactly(path: Path, file: IO[bytes], n_bytes: int) -> bytes:
    # Chunked reads allocate only what the file really contains.
    chunks, remaining = [], n_bytes
    while remaining > 0:
        chunk = file.read(min(remaining, READ_CHUNK_BYTES))
        if not chunk:
            raise ValueError(
                f"{path} ends after {n_bytes - remaining} of its {n_bytes} declared "
                "data bytes; the file is truncated or its header is corrupt."
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    if file.read(1):
        raise ValueError(
            f"{path} has data beyond the {n_bytes} bytes its IDX header declares; "
            "the header is corrupt."
        )
    return b"".join(chunks)


def _existing_file(path: PathLike) -> Path:
    from .io import check_read_path

    check_read_path(path, "Data file")
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            kind = "is a folder, not a file"
        elif path.exists():
            kind = "is not a regular file (a device, pipe or socket)"
        else:
            from .io import missing

            kind = missing(path)
        raise FileNotFoundError(f"Data file {path} {kind}; check the path.")
    if path.stat().st_size == 0:
        raise ValueError(
            f"Data file {path} is empty (0 bytes); check that it was written "
            "completely, or pass another file."
        )
    return path


# Validation.


def _validate_arrays(
    x: np.ndarray,
    y: np.ndarray,
    source: Any,
    label_source: Any = None,
    label_column: int | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Check and convert raw arrays to ``(X float64 (n, d), y int64, image_shape)``.

    ``label_source`` names the file of the labels where it is not ``source``,
    as for IDX images and labels; ``label_column`` is the CSV column of the
    labels.
    """
    x, image_shape = _validate_features(np.asarray(x), source)
    y = _validate_labels(np.asarray(y), label_source or source, label_column)
    if len(x) != len(y):
        raise ValueError(
            f"{source} has {len(x)} feature rows but {len(y)} labels; expected "
            "one label per row."
        )
    return x, y, image_shape


def _validate_features(
    x: np.ndarray, source: Any
) -> tuple[np.ndarray, tuple[int, int] | None]:
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"Expected real numeric features in {source}, got dtype {x.dtype}; "
            "convert them to floats."
        )
    if x.ndim not in (2, 3):
        raise ValueError(
            f"Expected features in {source} of shape (n, d) or images (n, h, w), "
            f"got shape {x.shape}; reshape them to one row per sample."
        )
    if len(x) == 0:
        raise ValueError(f"{source} contains no samples (features of shape {x.shape}).")
    if x[0].size == 0:
        raise ValueError(
            f"{source} has {len(x)} samples but no features (features of shape "
            f"{x.shape}); pass an array with at least one feature column."
        )
    image_shape = tuple(int(s) for s in x.shape[1:]) if x.ndim == 3 else None
    x = x.reshape(len(x), -1)
    bad = ~np.isfinite(x)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"{source} has {int(bad.sum())} NaN or infinite feature value(s), the "
            f"first at row {row}, feature {column} ({x[row, column]}), both "
            "counted from 0; remove or impute them."
        )
    return _as_float64(x, source), image_shape


def _as_float64(x: np.ndarray, source: Any) -> np.ndarray:
    """Return the finite features ``x`` as float64, raising ``ValueError``
    for values of a wider float type, such as longdouble, that do not fit."""
    with np.errstate(over="ignore"):
        converted = x.astype(np.float64)
    overflow = ~np.isfinite(converted)
    if overflow.any():
        row, column = np.argwhere(overflow)[0]
        largest = np.finfo(np.float64).max
        # format() shows a longdouble of 1e400 as inf, and str() keeps it.
        raise ValueError(
            f"{source} has {int(overflow.sum())} {x.dtype} feature value(s) "
            f"beyond float64's range of +-{largest:.6g}, the first at row {row}, "
            f"feature {column} ({x[row, column]!s}), both counted from 0; scale "
            "the features into that range, such as by dividing them by a power "
            "of ten, before saving them."
        )
    return converted


def _validate_labels(
    y: np.ndarray, source: Any, column: int | None = None
) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(
            f"Expected labels in {source} of shape (n,), got shape {y.shape}; "
            "pass one integer label per sample."
        )
    y = _integer_labels(y, source, column)
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(
            f"{source} has {len(present)} class(es) {present.tolist()}; a "
            "classifier needs at least 2. Check that the labels are the column "
            "you meant (label_column=, --label-column on the command line, for "
            "a CSV)."
        )
    if present[0] != 0 or present[-1] != len(present) - 1:
        raise ValueError(
            f"Expected labels in {source} to be 0..{len(present) - 1}, got labels "
            f"{_show_labels(present)}; renumber them 0..k-1 in the data file "
            "(np.unique(y, return_inverse=True)[1] does it in Python)."
        )
    return y


def _numeric_header_hint(labels: np.ndarray) -> str | None:
    """Return a hint for CSV labels that only the first row breaks, as a
    header of numbers (wavelengths, years) read as data does, or ``None``."""
    rest = labels[1:]
    if len(rest) < 2 or not np.all(np.isfinite(rest) & (rest == np.round(rest))):
        return None
    classes = np.unique(rest)
    if labels[0] in classes or classes[0] != 0 or classes[-1] != len(classes) - 1:
        return None
    return (
        f"Only the first row has label {labels[0]:g}: if that row is a header "
        "of numbers, pass --header yes (header=True in Python)."
    )


def _integer_labels(
    y: np.ndarray, source: Any, column: int | None = None
) -> np.ndarray:
    """Return the labels ``y`` as int64; ``column`` is the CSV column they
    were read from, which an error names."""
    if y.dtype.kind in "iuf" and y.size:
        # Past the int64 range the cast below would wrap or be undefined.
        largest = np.abs(y[np.isfinite(y)]).max(initial=0)
        # In float64 the int64 maximum rounds up to 2**63, past the range.
        limit = 2.0**63 if y.dtype.kind == "f" else np.iinfo(np.int64).max + 1
        if largest >= limit:
            raise ValueError(
                f"Expected labels in {source} to be 0..k-1, got a label of "
                f"magnitude {largest:.6g}; renumber them 0..k-1 in the data file "
                "(np.unique(y, return_inverse=True)[1] does it in Python)."
            )
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if not bad.any():
            return y.astype(np.int64)
        first = y[np.argmax(bad)]
        hint = "check the labels"
        if column is not None:
            hint = (
                f"check the label column, column {column} (counted from 0), or "
                "pick another with label_column= (--label-column on the command "
                "line)"
            )
        raise ValueError(
            f"Expected integer labels in {source}, got {int(bad.sum())} value(s) "
            f"that are not whole numbers, e.g. {first}; {hint}."
        )
    raise TypeError(
        f"Expected integer labels in {source}, got dtype {y.dtype}; encode the "
        "classes as integers 0..k-1."
    )


def _show_labels(labels: np.ndarray, limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in labels[:limit].tolist())
    more = f", ... ({len(labels)} in all)" if len(labels) > limit else ""
    return f"[{shown}{more}]"


# The entry point.


def load_data(
    path: PathLike | None = None,
    *,
    labels: PathLike | None = None,
    label_column: int | None = None,
    test_size: float = 0.25,
    seed: int = 0,
    scale: str | None = "auto",
    scaling: dict[str, Any] | None = None,
    header: bool | str = "auto",
) -> Dataset:
    """Load a data set, split it stratified and scale it into ``[0, 1]``.

    Args:
        path: ``None`` or ``"digits"`` for the scikit-learn digits, else a
            ``.npz`` archive (arrays ``X``, ``y``), a ``.csv`` file, or an IDX
            image file (``*-ubyte`` or ``*.idx*``, optionally gzipped).
        labels: the IDX label file; required for IDX images, else unused.
        label_column: the label column of a CSV file, as for ``load_csv``
            (``None``: the last, checked against the header's names).
        test_size: the fraction of rows for the test part, in ``(0, 1)``.
            Every class with two or more rows gives at least one row to each
            part, and a class with one row gives it to the training part. With
            few rows per class the split can therefore differ much from
            ``test_size``: 20 rows in 10 classes split 10/10 at ``0.1``.
        seed: the seed of the stratified split.
        scale: ``"auto"`` maps features into ``[0, 1]``. Digits are divided
            by 16 and IDX uint8 pixels by 255. Other data are min-max scaled
            with the training part's minimum and maximum, taken over all
            pixels for images and per column otherwise, and test values are
            clipped into the box. ``None`` keeps the values, and ``bounds``
            is then the smallest and largest value in the data.
        scaling: the ``scaling`` of an earlier ``Dataset``, applied in place
            of ``scale`` so that new data meets a model as its training data
            did; both parts are clipped into ``[0, 1]``.
        header: whether the first row of a CSV file names the columns, as
            for ``load_csv``: ``True``, ``False`` or ``"auto"``.

    Raises:
        FileNotFoundError: if ``path`` or ``labels`` is not a file.
        ValueError: if the file is invalid, the message naming the problem,
            or if every class has a single row, which leaves the test part
            empty.
    """
    if scale not in SCALES:
        raise ValueError(f"Expected scale 'auto' or None, got {scale!r}.")
    _check_header_value(header)
    if path is None or (isinstance(path, str) and path == "digits"):
        _check_csv_option(label_column, header, "the data are the digits")
        x, y = _digits_arrays()
        divisor = DIGITS_MAX if scale == "auto" else None
        return _make_dataset(
            x, y, DIGITS_SHAPE, "digits", test_size, seed, scale, divisor, scaling
        )

    path = _existing_file(path)
    kind = file_kind(path)
    if kind != "csv":
        _check_csv_option(label_column, header, f"{path} is a {kind} file")
    if kind != "idx" and labels is not None:
        raise ValueError(
            f"labels= (--labels on the command line) is only for IDX image "
            f"files, but {path} is a {kind} file whose labels are inside it; "
            "leave it unset."
        )
    divisor = None
    if kind == "npz":
        x, y, image_shape = load_npz(path)
    elif kind == "csv":
        x, y, image_shape = load_csv(path, label_column=label_column, header=header)
    else:
        x, y, image_shape, divisor = _load_idx_for_scaling(path, labels, scale)
    name = path.name.split(".")[0]
    return _make_dataset(
        x, y, image_shape, name, test_size, seed, scale, divisor, scaling
    )


def from_arrays(
    x: Any,
    y: Any,
    *,
    name: str = "arrays",
    test_size: float = 0.25,
    seed: int = 0,
    scale: str | None = "auto",
    scaling: dict[str, Any] | None = None,
) -> Dataset:
    """Split and scale arrays in memory as ``load_data`` does a file.

    The ``Dataset`` equals the one ``load_data`` returns for an ``.npz``
    archive of the same ``x`` and ``y``, its ``name`` aside.

    Args:
        x: features of shape ``(n, d)``, or images of shape ``(n, h, w)``,
            which set ``image_shape``. Any real dtype: a NumPy array, a
            tensor, or anything else that ``np.asarray`` takes.
        y: integer labels of shape ``(n,)`` in ``[0, k)``.
        name: the data set's name in reports.
        test_size, seed, scale, scaling: as for ``load_data``.

    Raises:
        TypeError, ValueError: for features or labels that ``load_data``
            would reject in a file, named as ``x`` and ``y``.
    """
    if scale not in SCALES:
        raise ValueError(f"Expected scale 'auto' or None, got {scale!r}.")
    if not isinstance(name, str) or not name:
        raise TypeError(f"Expected name to be a non-empty string, got {name!r}.")
    x, y = _host_array(x), _host_array(y)
    x, y, image_shape = _validate_arrays(x, y, source="x", label_source="y")
    return _make_dataset(x, y, image_shape, name, test_size, seed, scale, None, scaling)


def _host_array(value: Any) -> Any:
    """Return a tensor as a NumPy array that ``_validate_arrays`` can check,
    and anything else as it is, for that check to name."""
    if not _arrays.array_api_compat.is_torch_array(value):
        return value
    return _arrays.to_numpy(value)


def _check_csv_option(
    label_column: int | None, header: bool | str, source: str
) -> None:
    """Raise ``ValueError`` if ``label_column`` or ``header`` is set for data
    that are not a CSV file, which ``source`` describes."""
    if label_column not in (None, -1):
        raise ValueError(
            f"label_column={label_column} (--label-column on the command line) "
            f"is only for CSV files, but {source}; leave it unset."
        )
    if header != "auto":
        option = {True: "yes", False: "no"}.get(header, header)
        raise ValueError(
            f"header={header!r} (--header {option} on the command line) is only "
            f"for CSV files, but {source}; leave it unset."
        )


def file_kind(path: PathLike) -> str:
    """Return ``"npz"``, ``"csv"`` or ``"idx"``, the kind of data file that
    ``path`` names by its suffix.

    Raises:
        ValueError: for any other suffix.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".csv"):
        return "csv"
    # Only IDX files are read through gzip.
    name = name.removesuffix(".gz")
    if name.endswith("-ubyte") or ".idx" in name:
        return "idx"
    hint = " Decompress it first." if name.endswith((".csv", ".npz")) else ""
    raise ValueError(
        f"Unknown data file type {path.name!r}; expected .npz (arrays X and y), "
        f".csv, or MNIST IDX files (*-ubyte, *.idx*, optionally .gz).{hint}"
    )


def _load_idx_for_scaling(
    path: Path, labels: PathLike | None, scale: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None, float | None]:
    if labels is None:
        beside = _label_file_beside(path)
        example = f", such as {beside}" if beside else ""
        raise ValueError(
            f"{path} is an IDX image file; pass its label file with labels= "
            f"(--labels on the command line){example}."
        )
    images, label_values = _read_idx_pair(path, labels)
    divisor = UINT8_MAX if scale == "auto" and images.dtype == np.uint8 else None
    x, y, image_shape = _validate_arrays(
        images, label_values, source=path, label_source=_existing_file(labels)
    )
    return x, y, image_shape, divisor


def _label_file_beside(images: Path) -> Path | None:
    """Return the label file that MNIST's naming puts beside the IDX image
    file ``images`` (``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, either gzipped), where it exists."""
    stem = images.name.removesuffix(".gz")
    name = stem.replace("images", "labels").replace("idx3", "idx1")
    if name == stem:
        return None
    for candidate in (images.with_name(name), images.with_name(name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    image_shape: tuple[int, int] | None,
    name: str,
    test_size: float,
    seed: int,
    scale: str | None,
    divisor: float | None = None,
    scaling: dict[str, Any] | None = None,
) -> Dataset:
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size, seed)
    if len(y_test) == 0:
        # train_test_split keeps at least one training row per class, so only
        # data with one row per class gets here, whatever test_size is.
        raise ValueError(
            f"The test part of the data set {name!r} is empty because each of "
            f"its {len(y)} classes has a single row, which the stratified split "
            "keeps for training at any test size (--test-size); pass data with "
            "at least two rows in some class."
        )
    bounds = (0.0, 1.0)
    clipped = None
    if scaling is not None:
        offset, span, prescale = _scaling_arrays(scaling, x.shape[1], name)
        x_train, clipped_train = _apply_scaling(x_train, offset, span, prescale)
        x_test, clipped_test = _apply_scaling(x_test, offset, span, prescale)
        clipped = clipped_train + clipped_test
    elif divisor is not None:
        x_train, x_test = x_train / divisor, x_test / divisor
        scaling = {"offset": 0.0, "scale": float(divisor)}
    elif scale == "auto":
        x_train, x_test, low, span, prescale = _min_max_scale(
            x_train, x_test, per_column=image_shape is None
        )
        scaling = {"offset": np.ravel(low).tolist(), "scale": np.ravel(span).tolist()}
        if (prescale != 1.0).any():
            scaling["prescale"] = np.ravel(prescale).tolist()
    else:
        bounds = (float(x.min()), float(x.max()))
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        n_classes=int(y.max()) + 1,
        image_shape=image_shape,
        name=name,
        bounds=bounds,
        scaling=scaling,
        digest=_rows_digest(x, y),
        clipped=clipped,
    )


def _rows_digest(x: np.ndarray, y: np.ndarray) -> str:
    """Return the SHA-256 digest of the features and labels, with their
    dtypes and shapes."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _min_max_scale(
    x_train: np.ndarray, x_test: np.ndarray, per_column: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map ``x_train`` onto ``[0, 1]`` and ``x_test`` by the same affine map,
    and return both with the map's offset, scale and prescale.

    A constant column maps to 0. Test values outside the training range are
    clipped, so every sample lies in the box ``[0, 1]``. A column (for
    images, all pixels) whose range is wider than the largest float64 is
    halved before the map, and its prescale is 0.5. Every other prescale is
    1, which leaves the values as they are.
    """
    axis = 0 if per_column else None
    low = x_train.min(axis=axis)
    high = x_train.max(axis=axis)
    with np.errstate(over="ignore"):
        span = high - low
    prescale = np.where(np.isfinite(span), 1.0, 0.5)
    halved = (prescale != 1.0).any()
    if halved:
        # Halving is exact above the subnormals, and the halves of any two
        # finite values are at most the largest float64 apart.
        low, high = low * prescale, high * prescale
        span = high - low
    span = np.where(span > 0, span, 1.0)
    # The training part maps into [0, 1] exactly, so its clip changes nothing.
    applied = prescale if halved else None
    train, _ = _apply_scaling(x_train, low, span, applied)
    test, _ = _apply_scaling(x_test, low, span, applied)
    return train, test, low, span, prescale


def _apply_scaling(
    x: np.ndarray, offset: Any, span: Any, prescale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x * prescale - offset) / span`` clipped into ``[0, 1]``, with
    no prescale when it is ``None``, and the number of values clipped in
    each column.

    Values far outside the range of the map overflow to +-inf, which the
    clip maps to the edges of the box, as it does any outlier.
    """
    if prescale is not None:
        x = x * prescale
    with np.errstate(over="ignore"):
        scaled = (x - offset) / span
    clipped = np.count_nonzero((scaled < 0.0) | (scaled > 1.0), axis=0)
    return np.clip(scaled, 0.0, 1.0, out=scaled), clipped


def _scaling_arrays(
    scaling: Any, n_features: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Return the offset, scale and prescale of a ``Dataset.scaling`` as
    arrays that broadcast over rows of ``n_features`` features.

    The prescale is ``None`` when the map has none.
    """
    fix = (
        "pass the Dataset.scaling that load_data returned for the training "
        "data (in a model file, such a map means the file is damaged)."
    )
    keys = ("offset", "scale", "prescale")
    if not isinstance(scaling, dict) or set(scaling) not in (set(keys[:2]), set(keys)):
        raise ValueError(
            f"Expected scaling to be a dict with the keys 'offset' and 'scale', "
            f"and optionally 'prescale', got {scaling!r}; {fix}"
        )
    arrays = []
    for key in keys:
        if key not in scaling:
            arrays.append(None)
            continue
        try:
            value = np.asarray(scaling[key], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"scaling[{key!r}] is not numeric; {fix}") from error
        except OverflowError as error:
            raise ValueError(
                f"scaling[{key!r}] has a value beyond the range of floats; {fix}"
            ) from error
        if value.ndim > 1:
            raise ValueError(
                f"scaling[{key!r}] has {value.ndim} dimensions, where one value "
                f"per feature takes 1; {fix}"
            )
        if value.size not in (1, n_features):
            raise ValueError(
                f"{name} has {n_features} features, but the scaling of the "
                f"training data covers {value.size}; pass data with the features "
                "that the model was trained on."
            )
        if not np.isfinite(value).all():
            raise ValueError(f"scaling[{key!r}] is not finite; {fix}")
        if key != "offset" and (value <= 0).any():
            raise ValueError(f"scaling[{key!r}] must be > 0; {fix}")
        arrays.append(value)
    offset, span, prescale = arrays
    return offset, span, prescale
