"""Tests of the data loaders, the stratified split and the input checks."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import reference

import resgrad
from resgrad import data
from resgrad.data import (
    csv_columns,
    from_arrays,
    load_csv,
    load_data,
    load_idx,
    load_npz,
    train_test_split,
)

IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def write_idx(path, array, dtype="u1", compress=False):
    """Write ``array`` in the IDX layout: 00 00, dtype code, ndim, big-endian dims."""
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(dtype).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as file:
        file.write(payload)
    return path


def write_npz(path, x, y):
    np.savez(path, X=x, y=y)
    return path


def blobs(n_per_class=(6, 6, 6), features=3, seed=0):
    """Return float features and labels 0..k-1 with the given class sizes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    x = rng.normal(size=(len(y), features)) * 5.0 + y[:, None]
    return x, y


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


# Digits.


def test_digits_split_sizes(digits):
    assert digits.x_train.shape == (1347, 64)
    assert digits.x_test.shape == (450, 64)
    assert digits.y_train.shape == (1347,)
    assert digits.y_test.shape == (450,)
    assert digits.n_classes == 10
    assert digits.image_shape == (8, 8)
    assert digits.name == "digits"


def test_digits_dtypes(digits):
    assert digits.x_train.dtype == np.float64
    assert digits.x_test.dtype == np.float64
    assert digits.y_train.dtype == np.int64
    assert digits.y_test.dtype == np.int64


def test_digits_stratified(digits):
    train_counts = np.bincount(digits.y_train, minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    fraction = test_counts / (train_counts + test_counts)
    assert train_counts.min() > 0
    assert test_counts.min() > 0
    assert np.all(np.abs(fraction - 0.25) < 0.01)


def test_digits_range(digits):
    assert digits.bounds == (0.0, 1.0)
    for x in (digits.x_train, digits.x_test):
        assert x.min() == 0.0
        assert x.max() == 1.0
    # The pixels 0..16 are divided by 16, so every value is a multiple of 1/16.
    assert np.array_equal(digits.x_train * 16, np.round(digits.x_train * 16))


def test_digits_deterministic(digits):
    again = data.load_digits()
    other = data.load_digits(seed=1)
    assert np.array_equal(again.x_train, digits.x_train)
    assert np.array_equal(again.y_test, digits.y_test)
    assert not np.array_equal(other.y_train, digits.y_train)


def test_load_data_default_is_digits(digits):
    for dataset in (load_data(), load_data("digits")):
        assert dataset.name == "digits"
        assert np.array_equal(dataset.x_train, digits.x_train)
        assert np.array_equal(dataset.y_test, digits.y_test)


def test_digits_unscaled_keeps_pixels():
    dataset = load_data("digits", scale=None)
    assert dataset.x_train.max() == 16.0
    assert dataset.bounds == (0.0, 16.0)


def test_digits_summary(digits):
    assert digits.summary() == (
        "digits: 1347 train + 450 test samples, 64 features (8x8 images), "
        "10 classes, inputs in [0, 1]"
    )


def test_digits_without_scikit_learn(monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "resgrad\[cli\]"'):
        data.load_digits()


def test_import_skips_scikit_learn():
    code = "import sys, resgrad; print('sklearn' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# The stratified split.


def test_split_every_class_in_both_parts():
    x, y = blobs((2, 3, 5, 40, 1))
    _, _, y_train, y_test = train_test_split(x, y, test_size=0.25, seed=3)
    for label in range(4):
        assert label in y_train
        assert label in y_test
    # A class of one sample can only be in one part: the training part.
    assert 4 in y_train
    assert 4 not in y_test


def test_split_partitions_rows():
    x = np.arange(40.0)[:, None]
    y = np.repeat([0, 1, 2, 3], 10)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25)
    rows = np.concatenate([x_train[:, 0], x_test[:, 0]])
    assert len(x_test) == 10
    assert np.array_equal(np.sort(rows), x[:, 0])
    assert np.array_equal(y_train, y[x_train[:, 0].astype(int)])
    assert np.array_equal(y_test, y[x_test[:, 0].astype(int)])


def test_split_deterministic():
    x, y = blobs((20, 20, 20))
    first = train_test_split(x, y, seed=5)
    second = train_test_split(x, y, seed=5)
    other = train_test_split(x, y, seed=6)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_split_keeps_inputs():
    x, y = blobs((10, 10))
    x_before, y_before = x.copy(), y.copy()
    train_test_split(x, y, test_size=0.3, seed=1)
    assert np.array_equal(x, x_before)
    assert np.array_equal(y, y_before)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.5, 2.0])
def test_split_rejects_test_size(test_size):
    x, y = blobs()
    with pytest.raises(ValueError, match=f"test_size in \\(0, 1\\), got {test_size}"):
        train_test_split(x, y, test_size=test_size)


def test_split_rejects_length_mismatch():
    x, y = blobs()
    with pytest.raises(
        ValueError, match=r"x of shape \(18, 3\) and y of shape \(17,\)"
    ):
        train_test_split(x, y[:-1])


def test_load_rejects_one_row_per_class(tmp_path):
    x, y = blobs((1, 1, 1), features=5)
    path = write_npz(tmp_path / "tiny.npz", x, y)
    x_before = x.copy()
    for test_size in (0.25, 0.9):
        with pytest.raises(
            ValueError,
            match="The test part of the data set 'tiny' is empty because each "
            "of its 3 classes has a single row.*at least two rows in some class",
        ):
            load_data(path, test_size=test_size)
    assert np.array_equal(x, x_before)


def test_load_keeps_one_test_row_per_class(tmp_path):
    # Each class keeps a row in both parts, so 0.1 gives half the rows.
    x, y = blobs((2,) * 10)
    dataset = load_data(write_npz(tmp_path / "pairs.npz", x, y), test_size=0.1)
    assert sorted(dataset.y_test.tolist()) == list(range(10))
    assert sorted(dataset.y_train.tolist()) == list(range(10))


# .npz files.


def test_npz_round_trip(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "blobs.npz", x.astype(np.float32), y.astype(np.int32))
    x_read, y_read, image_shape = load_npz(path)
    assert x_read.dtype == np.float64
    assert y_read.dtype == np.int64
    assert np.array_equal(x_read, x.astype(np.float32))
    assert np.array_equal(y_read, y)
    assert image_shape is None


def test_npz_images_flattened(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 4, 3)).astype(np.uint8)
    y = np.tile([0, 1, 2], 4)
    x_read, _, image_shape = load_npz(write_npz(tmp_path / "img.npz", images, y))
    assert x_read.shape == (12, 12)
    assert image_shape == (4, 3)
    assert np.array_equal(x_read[5], images[5].ravel())


@pytest.mark.parametrize("images", [False, True], ids=["rows", "images"])
@pytest.mark.parametrize("scale", ["auto", None])
def test_from_arrays_matches_npz_file(tmp_path, images, scale):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 3)) if images else rng.normal(size=(30, 5)) * 7
    y = np.tile([0, 1, 2], 10)
    before = x.copy(), y.copy()
    path = write_npz(tmp_path / "same.npz", x, y)
    want = load_data(path, test_size=0.3, seed=4, scale=scale)
    got = from_arrays(x, y, name="same", test_size=0.3, seed=4, scale=scale)
    for field in dataclasses.fields(want):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=field.name)
        else:
            assert a == b, field.name
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(y, before[1])
    assert from_arrays(x, y).name == "arrays"


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_from_arrays_takes_torch_tensors(dtype):
    torch = pytest.importorskip("torch")
    x, y = blobs()
    tensor = torch.tensor(x, requires_grad=True).to(getattr(torch, dtype))
    got = from_arrays(tensor, torch.tensor(y))
    want = from_arrays(tensor.detach().double().numpy(), y)
    np.testing.assert_array_equal(got.x_train, want.x_train)
    assert got.digest == want.digest


def test_from_arrays_applies_a_scaling():
    x, y = blobs()
    first = from_arrays(x, y)
    again = from_arrays(x * 2, y, scaling=first.scaling)
    assert again.scaling == first.scaling
    assert again.clipped is not None and again.clipped.sum() > 0


@pytest.mark.parametrize(
    "x, y, error, message",
    [
        (np.ones((4, 2), complex), [0, 1, 0, 1], TypeError, "features in x, got dty"),
        (np.ones((4, 2)), [0, 1, 0], ValueError, "x has 4 feature rows but 3 labels"),
        (np.ones((4, 2)), [0, 1, 0, 1.5], ValueError, "integer labels in y, got 1"),
        (np.ones((4, 2)), np.zeros((4, 1)), ValueError, "labels in y of shape (n,)"),
        ([[0.0, np.nan]] * 4, [0, 1, 0, 1], ValueError, "x has 4 NaN or infinite"),
        (np.ones((0, 2)), np.zeros(0, int), ValueError, "x contains no samples"),
    ],
)
def test_from_arrays_names_x_and_y(x, y, error, message):
    with pytest.raises(error) as caught:
        from_arrays(np.asarray(x), np.asarray(y))
    assert message in str(caught.value)


def test_npz_missing_array(tmp_path):
    path = tmp_path / "features.npz"
    np.savez(path, X=np.zeros((4, 2)), labels=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"missing the array\(s\) \['y'\]"):
        load_npz(path)


def test_model_file_as_data(tmp_path):
    path = tmp_path / "model.npz"
    resgrad.save(resgrad.ResidualMLP.init([4, 4, 2], seed=0), path)
    with pytest.raises(ValueError) as caught:
        load_npz(path)
    assert str(caught.value).startswith(
        f"{path} is a resgrad model file, not data; pass it as --model, and "
    )


def test_npz_object_array(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X=np.array([{}, {}], dtype=object), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="contains an object array") as caught:
        load_npz(path)
    assert "allow_pickle" not in str(caught.value)


@pytest.mark.parametrize(
    "header, problem",
    [
        (
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }" + " " * 20000,
            "a .npy header longer than NumPy reads safely",
        ),
        (
            "{'descr': '<f8', 'fortran_order': False, 'shape': len('ab'), }",
            "a .npy header that is not a plain dictionary",
        ),
    ],
    ids=["long", "expression"],
)
def test_npz_bad_npy_header_is_named(tmp_path, header, problem):
    text = header.encode("latin1")
    padded = text + b" " * (-(len(text) + 13) % 64) + b"\n"
    member = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(padded)) + padded
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", member + bytes(16))
        buffer = io.BytesIO()
        np.save(buffer, np.array([0, 1]))
        archive.writestr("y.npy", buffer.getvalue())
    with pytest.raises(ValueError) as caught:
        load_npz(path)
    message = str(caught.value)
    assert (
        f"bad.npz is not a readable .npz archive: one of its arrays has {problem};"
        in message
    )
    for words in ("object array", "allow_pickle", "<ast."):
        assert words not in message


def test_npz_single_array(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as file:
        np.save(file, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="single.npz contains a single array"):
        load_npz(path)


def test_npz_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="noise.npz is not a readable .npz archive"):
        load_npz(path)


def test_npz_text_file(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="text.npz is not a readable .npz archive"):
        load_npz(path)


def test_npz_text_file_hides_pickle_option(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(ValueError) as caught:
        load_npz(path)
    assert "allow_pickle" not in str(caught.value)


def _patch_directory(path, member, offset, value, fmt="<I"):
    """Rewrite one field of ``member``'s central-directory entry, at
    ``offset`` bytes from the entry's start."""
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")
    while True:
        name_length = struct.unpack_from("<H", raw, entry + 28)[0]
        if raw[entry + 46 : entry + 46 + name_length] == member.encode():
            break
        entry = raw.index(b"PK\x01\x02", entry + 4)
    struct.pack_into(fmt, raw, entry + offset, value)
    path.write_bytes(bytes(raw))


# Offsets in a central-directory entry.
FLAGS, COMPRESSED_SIZE, DECLARED_SIZE = 8, 20, 24


def _npy_bytes(array, shape_text=None):
    """Return ``array`` as .npy bytes, with ``shape_text`` replacing the
    header's shape when given."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    content = buffer.getvalue()
    if shape_text is None:
        return content
    old = str(array.shape).encode()
    assert content.count(old) == 1
    return content.replace(old, shape_text.encode().ljust(len(old)))


def _write_members(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members:
            archive.writestr(name, content)
    return path


def test_npz_rejects_size_beyond_deflate_limit(tmp_path):
    path = tmp_path / "bomb.npz"
    x, y = blobs()
    np.savez_compressed(path, X=x, y=y)
    with zipfile.ZipFile(path) as archive:
        compressed = archive.getinfo("X.npy").compress_size
    _patch_directory(
        path, "X.npy", DECLARED_SIZE, (data.DEFLATE_MAX_RATIO + 1) * compressed
    )
    with pytest.raises(ValueError, match="X.npy declares .* bytes, more than its"):
        load_npz(path)


def test_npz_rejects_header_larger_than_member(tmp_path):
    labels = _npy_bytes(np.arange(20) % 2)
    path = _write_members(
        tmp_path / "liar.npz",
        [("X.npy", _npy_bytes(np.zeros((20, 4)), "(90, 4)")), ("y.npy", labels)],
    )
    with pytest.raises(ValueError, match=r"declares shape \(90, 4\) of float64"):
        load_npz(path)


def test_npz_checks_member_without_suffix(tmp_path):
    # np.load reads a member named "X" before "X.npy".
    huge = _npy_bytes(np.zeros(4), "(1099511627776,)")
    members = [("X", huge), ("X.npy", _npy_bytes(np.zeros((4, 2))))]
    path = _write_members(
        tmp_path / "bare.npz", [*members, ("y.npy", _npy_bytes(np.arange(4) % 2))]
    )
    with pytest.raises(ValueError, match="the member X declares shape"):
        load_npz(path)


def test_npz_rejects_repeated_member(tmp_path):
    members = [
        ("X.npy", _npy_bytes(np.zeros((4, 5)))),
        ("X.npy", _npy_bytes(np.ones((4, 2)))),
        ("y.npy", _npy_bytes(np.arange(4) % 2)),
    ]
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _write_members(tmp_path / "twice.npz", members)
    with pytest.raises(ValueError, match="repeats the member X.npy"):
        load_npz(path)


def test_npz_rejects_encrypted_member(tmp_path):
    path = write_npz(tmp_path / "locked.npz", *blobs())
    _patch_directory(path, "X.npy", FLAGS, 0x1, fmt="<H")
    with pytest.raises(ValueError, match="X.npy is encrypted"):
        load_npz(path)


def test_npz_rejects_member_larger_than_file(tmp_path):
    path = write_npz(tmp_path / "short.npz", *blobs())
    for offset in (COMPRESSED_SIZE, DECLARED_SIZE):
        _patch_directory(path, "X.npy", offset, 10**9)
    with pytest.raises(ValueError, match="compressed bytes in a"):
        load_npz(path)


def test_npz_corrupt_deflate_stream(tmp_path):
    path = tmp_path / "garbled.npz"
    x, y = blobs()
    np.savez_compressed(path, X=x, y=y)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", raw, 26)
    start = 30 + name_length + extra_length
    raw[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="garbled.npz is not a readable .npz archive"):
        load_npz(path)


def test_npz_rejects_other_compression(tmp_path):
    path = tmp_path / "bzip2.npz"
    x, y = blobs()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        for name, array in (("X.npy", x), ("y.npy", y)):
            with archive.open(name, "w") as member:
                np.lib.format.write_array(member, array)
    with pytest.raises(ValueError, match="compression method 12"):
        load_npz(path)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([2**64 - 1, 0, 1] * 6, dtype=np.uint64),
        np.array([2**63, 0, 1] * 6, dtype=np.uint64),
        np.array([1e30, 0.0, 1.0] * 6),
        np.array([2.0**63, 0.0, 1.0] * 6),
    ],
)
def test_npz_labels_beyond_int64(tmp_path, labels):
    x, _ = blobs()
    path = write_npz(tmp_path / "huge_labels.npz", x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ValueError, match=r"label of magnitude (1.84467e\+19|1e\+30|9.22337e\+18)"
        ):
            load_npz(path)


def test_npz_compressed_zeros_load(tmp_path):
    path = tmp_path / "zeros.npz"
    zeros = np.zeros((2000, 512))
    np.savez_compressed(path, X=zeros, y=np.arange(2000) % 2)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("X.npy")
    assert info.file_size > 500 * info.compress_size
    x, _, _ = load_npz(path)
    assert np.array_equal(x, zeros)


def test_npz_needs_available_memory(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "blobs.npz", *blobs())
    monkeypatch.setattr(data, "_available_memory", lambda: 1024)
    with pytest.raises(ValueError, match=r"MiB of memory is available"):
        load_npz(path)
    monkeypatch.setattr(data, "_available_memory", lambda: None)
    assert load_npz(path)[0].shape == (18, 3)


def test_available_memory_is_positive():
    available = data._available_memory()
    assert available is None or available > 0


def test_available_memory_follows_ulimit(monkeypatch):
    import resource

    unlimited = data._available_memory()
    assert unlimited is not None and unlimited > 0
    # An address-space limit of 1 GiB above what the process maps now.
    used = data._proc_bytes("/proc/self/status", "VmSize:")
    limit = used + 2**30
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (limit, limit))
    # The mapped size can move by a few pages between the two reads.
    assert abs(data._available_memory() - min(unlimited, 2**30)) < 2**26


def test_npz_renamed_pickle(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "payload.npz"
    path.write_bytes(pickle.dumps(reference.CreateFileOnUnpickle(marker)))
    with pytest.raises(
        ValueError, match="payload.npz is not a readable .npz archive"
    ) as caught:
        load_npz(path)
    assert "allow_pickle" not in str(caught.value)
    assert not marker.exists()


def test_load_data_renamed_pickle(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "payload.npz"
    path.write_bytes(pickle.dumps(reference.CreateFileOnUnpickle(marker)))
    with pytest.raises(ValueError, match="payload.npz is not a readable .npz archive"):
        load_data(path)
    assert not marker.exists()


# CSV files.


def test_csv_with_header(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n0.5,1,0\n2,3.25,1\n4,5,1\n")
    x, y, image_shape = load_csv(path)
    assert np.array_equal(x, [[0.5, 1.0], [2.0, 3.25], [4.0, 5.0]])
    assert np.array_equal(y, [0, 1, 1])
    assert y.dtype == np.int64
    assert image_shape is None


@pytest.mark.parametrize("names", ["nan,inf,label", "a,NaN,-Infinity"])
def test_csv_header_with_names_that_read_as_numbers(tmp_path, names):
    path = tmp_path / "table.csv"
    path.write_text(f"{names}\n0.5,1,0\n2,3.25,1\n")
    x, y, _ = load_csv(path)
    assert np.array_equal(x, [[0.5, 1.0], [2.0, 3.25]])
    assert np.array_equal(y, [0, 1])
    assert data.csv_columns(path) == names.split(",")


def test_csv_nan_first_row_header_hint(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("nan,inf\n0.5,0\n2,1\n")
    with pytest.raises(
        ValueError, match="if that line names the columns, pass --header yes"
    ):
        load_csv(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(load_csv(path, header=True)[1], [0, 1])
    # A data row with a missing value is not a header.
    path.write_text("nan,0\n0.5,0\n2,1\n")
    with pytest.raises(
        ValueError, match="'nan', read as nan; remove or impute them[.]$"
    ):
        load_csv(path)


@pytest.mark.parametrize("line", ["  ", "\t", " \r", "  # an indented comment"])
def test_csv_line_of_spaces_is_named(tmp_path, line):
    path = tmp_path / "table.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,4,1\n{line}\n5,6,0\n7,8,1\n")
    with pytest.raises(ValueError, match="line 4 holds only spaces or tabs"):
        load_csv(path)


def test_csv_without_header(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("0.5,1,0\n2,3.25,1\n")
    x, y, _ = load_csv(path)
    assert np.array_equal(x, [[0.5, 1.0], [2.0, 3.25]])
    assert np.array_equal(y, [0, 1])


# Each case: a CSV text holding the rows 0.5,1 (label 0) and 2,3.25 (label 1)
# under a header that resgrad must recognise.
SAME_ROWS = {
    "column numbers from 0": "0,1,2\n0.5,1,0\n2,3.25,1\n",
    "column numbers from 1": "1,2,3\n0.5,1,0\n2,3.25,1\n",
    "numbers and a label name": "0,1,label\n0.5,1,0\n2,3.25,1\n",
    "name and numbers": "x,1,2\n0.5,1,0\n2,3.25,1\n",
    "quoted numbers": '"0","1","2"\n0.5,1,0\n2,3.25,1\n',
    "quoted fields": '"a","b","label"\n"0.5"," 1 ","0"\n"2",3.25,"1"\n',
    "pandas row names": ",a,b,label\n0,0.5,1,0\n1,2,3.25,1\n",
    "R row names": '"","a","b","label"\n"1",0.5,1,0\n"2",2,3.25,1\n',
    "row names and numbers": ",0,1,2\ns1,0.5,1,0\ns2,2,3.25,1\n",
}


# The cases whose header contains numbers alone, as a data row could.
AMBIGUOUS_HEADERS = (
    "column numbers from 0",
    "column numbers from 1",
    "quoted numbers",
    "row names and numbers",
)


@pytest.mark.parametrize("case", list(SAME_ROWS))
def test_csv_header_forms(tmp_path, case):
    path = tmp_path / "table.csv"
    path.write_text(SAME_ROWS[case])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y, _ = load_csv(path)
    assert np.array_equal(x, [[0.5, 1.0], [2.0, 3.25]])
    assert np.array_equal(y, [0, 1])
    messages = [str(warning.message) for warning in caught]
    if case in AMBIGUOUS_HEADERS:
        assert len(messages) == 1
        assert "was read as column names, because its numbers" in messages[0]
    else:
        assert messages == []


@pytest.mark.parametrize(
    "text",
    [
        "# measured in 2026\na,b,label\n0.5,1,0\n2,3.25,1\n",
        "\n\na,b,label\n0.5,1,0\n2,3.25,1\n",
        '"a,b",c,label\n0.5,1,0\n2,3.25,1\n',
    ],
)
def test_csv_comments_and_quoted_commas(tmp_path, text):
    path = tmp_path / "table.csv"
    path.write_text(text)
    x, y, _ = load_csv(path)
    assert np.array_equal(x, [[0.5, 1.0], [2.0, 3.25]])
    assert np.array_equal(y, [0, 1])


@pytest.mark.parametrize(
    "header_line",
    ['a,"b#1",c,label', 'a, "b#1",c,label # b in cm', '"a","b#1","c","label"'],
)
def test_csv_quoted_hash_in_header(tmp_path, header_line):
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(40, 3)).round(3)
    rows = "".join(
        f"{a},{b},{c},{index % 2}\n" for index, (a, b, c) in enumerate(features)
    )
    path = tmp_path / "table.csv"
    path.write_text(f'# "units" follow\n{header_line}\n{rows}')
    for header in ("auto", True):
        x, y, _ = load_csv(path, header=header)
        assert np.array_equal(x, features)
        assert np.array_equal(y, np.arange(40) % 2)
    assert csv_columns(path) == ["a", "b#1", "c", "label"]
    assert load_data(path).n_features == 3


def test_csv_quoted_hash_in_data_row(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text('a,b,label\n0.5,1,0 # first\n0.25,"2#3",1 # second\n')
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    message = str(caught.value)
    assert "line 3 (counted from 1), field 1 (counted from 0) is '\"2#3\"'" in message
    assert "field(s) but line" not in message


# Each case: a CSV text, and the features and labels it must read as.
READS = {
    "one feature under a pandas header": (
        "0,label\n0.5,0\n2,1\n",
        [[0.5], [2.0]],
        [0, 1],
    ),
    "one feature under a pandas header and index": (
        ",0,label\n0,0.5,0\n1,2,1\n",
        [[0.5], [2.0]],
        [0, 1],
    ),
    # Two numbers alone are too likely to be data to make a header.
    "two column numbers": ("0,1\n0.5,0\n", [[0.0], [0.5]], [1, 0]),
    "quoted first row": (
        '"0.5","1","0"\n"2","3.25","1"\n',
        [[0.5, 1.0], [2.0, 3.25]],
        [0, 1],
    ),
    # "y" names a coordinate as often as a label, so it stops nothing.
    "y feature beside the label": (
        "x,y,cls\n0.5,0.25,1\n0.75,0.125,0\n",
        [[0.5, 0.25], [0.75, 0.125]],
        [1, 0],
    ),
}


@pytest.mark.parametrize("case", list(READS))
def test_csv_reads_rows(tmp_path, case):
    text, features, labels = READS[case]
    path = tmp_path / "table.csv"
    path.write_text(text)
    x, y, _ = load_csv(path)
    assert np.array_equal(x, features)
    assert np.array_equal(y, labels)


def test_csv_label_column_first(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("label,a,b\n1.0,7,8\n0.0,9,10\n")
    x, y, _ = load_csv(path, label_column=0)
    assert np.array_equal(x, [[7.0, 8.0], [9.0, 10.0]])
    assert np.array_equal(y, [1, 0])


def test_csv_forced_header_skips_row(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,4,1\n5,6,0\n")
    with pytest.warns(UserWarning, match="though it contains numbers alone"):
        x, _, _ = load_csv(path, header=True)
    assert np.array_equal(x, [[3.0, 4.0], [5.0, 6.0]])


def test_load_data_passes_header_to_csv(tmp_path):
    path = tmp_path / "table.csv"
    rows = [f"{i / 10},{i % 2}" for i in range(1, 9)]
    path.write_text("\n".join(["0.0,1", *rows]) + "\n")
    dataset = load_data(path, header=False)
    assert dataset.x_train.shape[0] + dataset.x_test.shape[0] == 9
    with pytest.warns(UserWarning, match="though it contains numbers alone"):
        dataset = load_data(path, header=True)
    assert dataset.x_train.shape[0] + dataset.x_test.shape[0] == 8
    with pytest.raises(ValueError, match="Expected header True, False or 'auto'"):
        load_data(path, header="yes")


@pytest.mark.parametrize("header", [True, False])
def test_load_data_rejects_header_for_npz(tmp_path, header):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.eye(4), y=np.array([0, 1, 0, 1]))
    option = "yes" if header else "no"
    with pytest.raises(
        ValueError, match=rf"--header {option} on the command line\) is only for CSV"
    ):
        load_data(path, header=header)


def test_csv_first_row_with_typo_is_an_error(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("0.1,abc,0\n0.3,0.4,1\n0.5,0.6,0\n")
    with pytest.raises(
        ValueError, match="field 1 \\(counted from 0\\) is 'abc', and 2 of its 3"
    ):
        load_csv(path)
    # Read as a header on request, the row is dropped.
    x, _, _ = load_csv(path, header=True)
    assert np.array_equal(x, [[0.3, 0.4], [0.5, 0.6]])


@pytest.mark.parametrize("label_column", [1.0, "1", True])
def test_csv_label_column_must_be_an_integer(tmp_path, label_column):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(TypeError, match="label_column must be an integer column"):
        load_csv(path, label_column=label_column)


def test_csv_header_false_names_the_option(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n1,2,0\n")
    with pytest.raises(ValueError, match=r"read as data because of header=False"):
        load_csv(path, header=False)


def test_csv_header_true_warns_on_a_number_row(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("0.5,2,0\n3,4,1\n5,6,0\n")
    with pytest.warns(UserWarning, match="though it contains numbers alone"):
        x, _, _ = load_csv(path, header=True)
    assert x.shape == (2, 2)


def test_csv_header_false_rejects_names(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n1,2,0\n")
    with pytest.raises(
        ValueError,
        match="line 1 \\(counted from 1\\), field 0 \\(counted from 0\\) is 'a'",
    ):
        load_csv(path, header=False)


@pytest.mark.parametrize(
    "text, named",
    [
        ("1,2,0\n3,,1\n", "line 2 (counted from 1), field 1 (counted from 0) is empty"),
        (
            "a,b,y\n1,2,cat\n",
            "line 2 (counted from 1), field 2 (counted from 0) is 'cat'",
        ),
        # Python's float() reads these, NumPy does not.
        (
            "a,b,y\n1,2,0\n3,1_0,1\n",
            "line 3 (counted from 1), field 1 (counted from 0) is '1_0'",
        ),
        (
            "1,2,0\n\uff11,4,1\n",
            "line 2 (counted from 1), field 0 (counted from 0) is '\uff11'",
        ),
        # NumPy strips white space of any script, inside quotes too.
        (
            'a,b,y\n"\u00a01",2,0\n" 3\u3000",4,1\n5,abc,0\n',
            "line 4 (counted from 1), field 1 (counted from 0) is 'abc'",
        ),
    ],
)
def test_csv_names_first_non_number(tmp_path, text, named):
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    assert named in str(caught.value)
    assert "encode text labels as class indices" in str(caught.value)


@pytest.mark.parametrize(
    "text, named, fixed",
    [
        (
            'a,b,label\n"0,637",1.0,0\n0.5,1.0,1\n',
            "line 2 (counted from 1), field 0 (counted from 0) is '\"0,637\"'",
            "0.637",
        ),
        (
            'a,b,label\n0.5,1,0\n0.5,"-1,25",1\n',
            "line 3 (counted from 1), field 1 (counted from 0) is '\"-1,25\"'",
            "-1.25",
        ),
    ],
)
def test_csv_quoted_decimal_comma(tmp_path, text, named, fixed):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    message = str(caught.value)
    assert named in message
    assert "looks like a number with a decimal comma" in message
    assert f"write it with a decimal point, as {fixed}" in message


def test_csv_thousands_separator_named(tmp_path):
    # "1,250" may be 1250 or 1.25; the message names both readings.
    path = tmp_path / "table.csv"
    path.write_text('price,area,label\n"1,250",80,0\n"12,500",95,1\n')
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    message = str(caught.value)
    assert "a thousands separator or a decimal comma" in message
    assert "without the comma, as 1250, or with a decimal point, as 1.250" in message


def test_csv_tab_before_line_end_is_no_separator(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("x,y,label\n0.5,1,0\n0.5,1,x\t\n")
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    assert "looks separated by" not in str(caught.value)
    assert "is 'x'" in str(caught.value)


def test_csv_quoted_comma_in_text(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text('x,y,label\n0.5,1,0\n"red, dark",1,1\n')
    with pytest.raises(ValueError) as caught:
        load_csv(path)
    message = str(caught.value)
    assert (
        "line 3 (counted from 1), field 0 (counted from 0) is '\"red, dark\"'"
        in message
    )
    assert "encode text labels as class indices" in message
    assert "decimal comma" not in message


def test_csv_fractional_labels(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,4,1.5\n")
    with pytest.raises(ValueError, match="not whole numbers, e.g. 1.5") as caught:
        load_csv(path)
    assert "check the label column, column 2 (counted from 0), or pick" in str(
        caught.value
    )


def test_csv_fractional_labels_name_chosen_column(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,0.5,0\n3,4,1\n")
    with pytest.raises(ValueError, match="e.g. 0.5; check the label column, column 1 "):
        load_csv(path, label_column=1)


def test_npz_fractional_labels_no_csv_hint(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((4, 2)), y=np.array([0, 1, 0.5, 1]))
    with pytest.raises(ValueError, match="not whole numbers, e.g. 0.5") as caught:
        load_data(path)
    assert "CSV" not in str(caught.value)


def test_csv_ragged_rows(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,1\n")
    with pytest.raises(ValueError, match="line 2 has 2 field") as caught:
        load_csv(path)
    assert "usecols" not in str(caught.value)


def test_csv_ragged_line_counts_header(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n1,2,0\n\n3,4,1\n5,6,1,7\n")
    with pytest.raises(ValueError, match="line 5 has 4 field\\(s\\) but line 2 has 3"):
        load_csv(path)


def test_csv_fractional_labels_name_option(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,4,1.5\n")
    message = r"pick another with label_column= \(--label-column on the command line\)"
    with pytest.raises(ValueError, match=message) as caught:
        load_csv(path)
    assert "chosen otherwise" not in str(caught.value)


def test_csv_empty(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        load_csv(path)


def test_csv_blank_lines_only(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="blank.csv is empty"):
        load_csv(path)


def test_csv_header_only(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("a,b,label\n")
    with pytest.raises(ValueError, match="names.csv has a header but no data rows"):
        load_csv(path)


def test_csv_quoted_hash_gets_no_comment_hint(tmp_path):
    """A quoted # starts no comment, so a header of too many names is not
    blamed on one."""
    path = tmp_path / "quoted.csv"
    path.write_text('"a#1",b,label\n1,0\n2,1\n')
    with pytest.raises(ValueError, match="3 column names in its header") as error:
        load_csv(path)
    assert "starts a comment" not in str(error.value)


def test_csv_label_column_out_of_range(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2,0\n3,4,1\n")
    message = (
        r"label_column=3 \(--label-column on the command line\) is outside "
        r"the 3 columns"
    )
    with pytest.raises(ValueError, match=message):
        load_csv(path, label_column=3)


# Each case: the file's name and text, and a fragment of the error.
CSV_ERRORS = {
    "header width mismatch": (
        "table.csv",
        "a,b,label\n1,0\n2,1\n",
        "3 column names in its header but 2 columns",
    ),
    "hash in a header name": (
        "hash.csv",
        "a#1,b,label\n1,2,0\n3,4,1\n",
        'header ends at its first #; quote a name that contains one, such as "a#1"',
    ),
    "single column": ("column.csv", "1\n0\n", "column.csv has 1 column"),
    "labels not from zero": (
        "shifted.csv",
        "0.5,1\n0.25,2\n0.75,1\n",
        "renumber them 0..k-1 in the data file",
    ),
    "semicolon separator": (
        "semi.csv",
        "1;2;0\n3;4;1\n",
        (
            "looks separated by ';'; resgrad reads comma-separated values, so "
            "turn any decimal commas in the file into points, then its ';' into "
            "commas"
        ),
    ),
    "tab separator": (
        "tabs.csv",
        "1\t2\t0\n3\t4\t1\n",
        "reads comma-separated values, so convert the file to commas first",
    ),
    # Beside row names pandas numbers columns from 0, so ,1,2,3 is a data
    # row whose first value is missing.
    "missing first value": (
        "gap.csv",
        ",1,2,3\n0.5,0.1,0.2,0\n0.6,0.7,0.8,1\n",
        r"field 0 \(counted from 0\) is empty",
    ),
    # A row that misses its last value is no file of trailing commas.
    "last value missing in one row": (
        "missing.csv",
        "a,b,label\n0.5,0.1,0\n0.6,0.7,\n",
        r"line 3 \(counted from 1\), field 2 \(counted from 0\) is empty; every",
    ),
    "last value missing in the first row": (
        "missing.csv",
        "0.5,0.1,\n0.6,0.7,1\n",
        (
            r"The first row of .* has numbers and an empty field, field 2 \(counted "
            r"from 0\); fill it in or remove the row"
        ),
    ),
    # Once read as a header of column indices, which lost the row.
    "indices beside an empty field in the first row": (
        "missing.csv",
        "1,2,\n3,4,1\n5,6,0\n",
        r"The first row of .* has numbers and an empty field, field 2",
    ),
    "label name in capitals": (
        "upper.csv",
        "a,TARGET,visit\n0.5,0,1\n0.25,1,0\n",
        r"names column 1 'TARGET'",
    ),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_csv_error_names_problem(tmp_path, case):
    name, text, message = CSV_ERRORS[case]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_csv(path)


# IDX files.


@pytest.fixture
def mnist_like():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    labels = np.arange(20, dtype=np.uint8) % 10
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, mnist_like, compress):
    images, labels = mnist_like
    suffix = ".gz" if compress else ""
    images_path = write_idx(
        tmp_path / f"img-idx3-ubyte{suffix}", images, compress=compress
    )
    labels_path = write_idx(
        tmp_path / f"lab-idx1-ubyte{suffix}", labels, compress=compress
    )
    x, y, image_shape = load_idx(images_path, labels_path)
    assert image_shape == (28, 28)
    assert x.dtype == np.float64
    assert np.array_equal(x, images.reshape(20, -1))
    assert np.array_equal(y, labels)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i2", ">i4", "i1"])
def test_idx_dtypes(tmp_path, dtype):
    rows = np.arange(24).reshape(6, 4) - 12
    images_path = write_idx(tmp_path / "rows.idx", rows, dtype=dtype)
    labels_path = write_idx(tmp_path / "labels.idx", np.array([0, 1, 2] * 2))
    x, y, image_shape = load_idx(images_path, labels_path)
    assert np.array_equal(x, rows)
    assert np.array_equal(y, [0, 1, 2, 0, 1, 2])
    assert image_shape is None


@pytest.mark.parametrize("load", [load_idx, lambda x, y: load_data(x, labels=y)])
def test_idx_label_error_names_label_file(tmp_path, load):
    images_path = write_idx(tmp_path / "rows.idx", np.zeros((6, 4), np.uint8))
    labels_path = write_idx(tmp_path / "labels.idx", np.array([0, 1, 200] * 2))
    with pytest.raises(ValueError, match=f"Expected labels in {labels_path} to be"):
        load(images_path, labels_path)


def test_idx_load_data_divides_by_255(tmp_path, mnist_like):
    images, labels = mnist_like
    images_path = write_idx(tmp_path / "train-images-idx3-ubyte", images)
    labels_path = write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    dataset = load_data(images_path, labels=labels_path, test_size=0.5)
    x_train, _, _, _ = train_test_split(images.reshape(20, -1), labels, 0.5, 0)
    assert dataset.image_shape == (28, 28)
    assert dataset.bounds == (0.0, 1.0)
    assert dataset.name == "train-images-idx3-ubyte"
    np.testing.assert_allclose(dataset.x_train, x_train / 255.0, rtol=0, atol=1e-15)


def test_idx_without_labels(tmp_path, mnist_like):
    images_path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    with pytest.raises(
        ValueError, match=r"pass its label file with labels= \(--labels on the"
    ):
        load_data(images_path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_without_labels_names_the_file_beside(tmp_path, mnist_like, compress):
    images_path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", mnist_like[0])
    labels_name = "t10k-labels-idx1-ubyte" + (".gz" if compress else "")
    labels_path = write_idx(tmp_path / labels_name, mnist_like[1], compress=compress)
    with pytest.raises(ValueError) as caught:
        load_data(images_path)
    assert str(caught.value).endswith(
        f"(--labels on the command line), such as {labels_path}."
    )
    labels_path.unlink()
    with pytest.raises(ValueError) as caught:
        load_data(images_path)
    assert str(caught.value).endswith("(--labels on the command line).")


def test_idx_bad_magic(tmp_path, mnist_like):
    path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    raw = bytearray(path.read_bytes())
    raw[0] = 1
    path.write_bytes(bytes(raw))
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1])
    with pytest.raises(ValueError, match="invalid IDX header 01000803"):
        load_idx(path, labels_path)


def test_idx_unknown_dtype_code(tmp_path, mnist_like):
    path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    raw = bytearray(path.read_bytes())
    raw[2] = 0x07
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="invalid IDX header 00000703"):
        load_idx(path, path)


def test_idx_dims_larger_than_file(tmp_path, mnist_like):
    path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack(">I", 2**32 - 1)
    path.write_bytes(bytes(raw))
    declared = (2**32 - 1) * 28 * 28
    with pytest.raises(
        ValueError, match=f"declares {declared} data bytes .* has 15696"
    ):
        load_idx(path, path)


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 20]))
    with pytest.raises(ValueError, match="ends inside its IDX header: 3 dimensions"):
        load_idx(path, path)


def test_idx_gzip_dims_larger_than_file(tmp_path, mnist_like):
    path = write_idx(tmp_path / "img-idx3-ubyte.gz", mnist_like[0], compress=True)
    with gzip.open(path, "rb") as file:
        raw = bytearray(file.read())
    raw[4:8] = struct.pack(">I", 2**32 - 1)
    with gzip.open(path, "wb") as file:
        file.write(bytes(raw))
    with pytest.raises(ValueError, match="more than a .*-byte gzip file can hold"):
        load_idx(path, path)


def test_idx_gzip_truncated_data(tmp_path, mnist_like):
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1])
    path = write_idx(tmp_path / "img-idx3-ubyte.gz", mnist_like[0], compress=True)
    with gzip.open(path, "rb") as file:
        raw = file.read()
    with gzip.open(path, "wb") as file:
        file.write(raw[:-100])
    with pytest.raises(ValueError, match="ends after 15580 of its 15680 declared"):
        load_idx(path, labels_path)


@pytest.mark.parametrize(("change", "word"), [(-6, "truncated"), (6, "too long")])
def test_idx_size_error_gives_total(tmp_path, mnist_like, change, word):
    path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    raw = path.read_bytes()
    path.write_bytes(raw[:change] if change < 0 else raw + bytes(change))
    total = len(raw)
    message = f"{total} bytes in all, but the file has {total + change} bytes; "
    with pytest.raises(ValueError, match=f"{message}the file is {word}"):
        load_idx(path, path)


def test_idx_trailing_data(tmp_path, mnist_like):
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1])
    path = write_idx(tmp_path / "img-idx3-ubyte.gz", mnist_like[0], compress=True)
    with gzip.open(path, "ab") as file:
        file.write(b"extra")
    with pytest.raises(ValueError, match="data beyond the 15680 bytes"):
        load_idx(path, labels_path)


@pytest.mark.parametrize(
    "suffix, compress",
    [(".GZ", True), (".Gz", True), ("", True), (".gz", False), (".GZ", False)],
)
def test_idx_gzip_found_by_content(tmp_path, mnist_like, suffix, compress):
    images, labels = mnist_like
    images_path = write_idx(tmp_path / f"IMG-UBYTE{suffix}", images, compress=compress)
    labels_path = write_idx(tmp_path / f"LAB-UBYTE{suffix}", labels, compress=compress)
    x, y, image_shape = load_idx(images_path, labels_path)
    assert image_shape == (28, 28)
    assert np.array_equal(x, images.reshape(20, -1))
    assert np.array_equal(y, labels)
    dataset = load_data(images_path, labels=labels_path)
    assert dataset.n_features == 28 * 28


def test_idx_corrupt_gzip(tmp_path, mnist_like):
    path = tmp_path / "img-idx3-ubyte"
    path.write_bytes(b"\x1f\x8b" + bytes(range(40)))
    with pytest.raises(
        ValueError, match="Could not read the IDX file .*img-idx3-ubyte"
    ):
        load_idx(path, path)


def test_idx_swapped_files(tmp_path, mnist_like):
    images_path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1])
    with pytest.raises(ValueError, match="Are the two files swapped"):
        load_idx(images_path, images_path)
    with pytest.raises(ValueError, match=r"shape \(20,\); expected images") as caught:
        load_idx(labels_path, labels_path)
    assert str(caught.value).endswith(
        "as a label file does; pass it as the labels and the image file as the data."
    )
    # Swapped the other way: the labels given as the images.
    with pytest.raises(ValueError, match=r"\(n, d\)\. Are the two files swapped\?$"):
        load_idx(labels_path, images_path)


def test_idx_count_mismatch(tmp_path, mnist_like):
    images_path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1][:19])
    with pytest.raises(ValueError, match="20 feature rows but 19 labels"):
        load_idx(images_path, labels_path)


def test_idx_count_mismatch_precedes_data(tmp_path, monkeypatch):
    # Random bytes barely compress, so the 1 MiB gzip file passes the size
    # check for the 10**9 data bytes that its header declares.
    body = np.random.default_rng(0).bytes(2**20)
    path = tmp_path / "img-idx3-ubyte.gz"
    with gzip.open(path, "wb") as file:
        file.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 100000, 100, 100) + body)
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", np.arange(40) % 2)

    def unread(*args):
        raise AssertionError("the data was read")

    monkeypatch.setattr(data, "_read_exactly", unread)
    with pytest.raises(ValueError, match="has 100000 feature rows but 40 labels in"):
        load_idx(path, labels_path)


def test_idx_needs_available_memory(tmp_path, monkeypatch, mnist_like):
    images_path = write_idx(tmp_path / "img-idx3-ubyte", mnist_like[0])
    labels_path = write_idx(tmp_path / "lab-idx1-ubyte", mnist_like[1])
    monkeypatch.setattr(data, "_available_memory", lambda: 1024)
    with pytest.raises(ValueError, match=r"shape \(20, 28, 28\), which need about"):
        load_idx(images_path, labels_path)
    monkeypatch.setattr(data, "_available_memory", lambda: None)
    assert load_idx(images_path, labels_path)[0].shape == (20, 784)


# Input checks, through load_data.


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz does not exist"):
        load_data(tmp_path / "absent.npz")


def test_missing_file_through_a_link_says_why(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(FileNotFoundError) as caught:
        load_data(loop)
    assert str(caught.value) == (
        f"Data file {loop} is a symbolic link that leads back to itself or "
        "through too many links; check the path."
    )
    inside = tmp_path / "loop" / "data.csv"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(FileNotFoundError, match="data.csv passes through a symbolic"):
        load_data(inside)
    # A chain of links is named by the end that is missing.
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "link.csv")
    (tmp_path / "link.csv").symlink_to(tmp_path / "moved.csv")
    with pytest.raises(FileNotFoundError) as caught:
        load_data(dangling)
    moved = os.path.realpath(tmp_path / "moved.csv")
    assert str(caught.value) == (
        f"Data file {dangling} is a symbolic link to {moved}, which does not "
        "exist; check the path."
    )


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder, not a file"):
        load_data(tmp_path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("1,2,0\n")
    with pytest.raises(ValueError, match="Unknown data file type 'table.txt'"):
        load_data(path)


def test_empty_file(tmp_path):
    path = tmp_path / "nothing.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="nothing.npz is empty"):
        load_data(path)


def test_labels_for_npz(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "blobs.npz", x, y)
    with pytest.raises(
        ValueError, match=r"labels= \(--labels on the command line\) is only for IDX"
    ):
        load_data(path, labels=path)


@pytest.mark.parametrize("shape", [(18,), (18, 2, 2, 2)])
def test_features_wrong_rank(tmp_path, shape):
    _, y = blobs()
    path = write_npz(tmp_path / "rank.npz", np.zeros(shape), y)
    pattern = rf"\(n, d\) or images \(n, h, w\), got shape {re.escape(str(shape))}"
    with pytest.raises(ValueError, match=pattern):
        load_data(path)


def test_features_complex(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "complex.npz", x.astype(np.complex128), y)
    with pytest.raises(TypeError, match="got dtype complex128"):
        load_data(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_features_not_finite(tmp_path, value):
    x, y = blobs()
    x[2, 1] = value
    path = write_npz(tmp_path / "bad.npz", x, y)
    match = (
        r"1 NaN or infinite feature value\(s\), the first at row 2, feature 1 "
        rf"\({value}\), both counted from 0"
    )
    with pytest.raises(ValueError, match=match):
        load_data(path)


WIDE_LONGDOUBLE = np.finfo(np.longdouble).max > np.finfo(np.float64).max


@pytest.mark.skipif(not WIDE_LONGDOUBLE, reason="longdouble is float64 here")
def test_features_beyond_float64_range(tmp_path):
    x, y = blobs()
    x = x.astype(np.longdouble)
    x[2, 1] = np.longdouble(10) ** 400
    x[5, 0] = -x[2, 1]
    path = write_npz(tmp_path / "wide.npz", x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as caught:
            load_data(path)
    message = str(caught.value)
    assert f"has 2 {x.dtype} feature value(s) beyond float64's range" in message
    assert "the first at row 2, feature 1 (1e+400), both counted from 0" in message
    assert "NaN or infinite" not in message


@pytest.mark.skipif(not WIDE_LONGDOUBLE, reason="longdouble is float64 here")
def test_features_longdouble_within_range(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "wide.npz", x.astype(np.longdouble), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features, labels, _ = load_npz(path)
    assert features.dtype == np.float64
    assert np.array_equal(features, x)
    assert np.array_equal(labels, y)


@pytest.mark.parametrize(
    "text, named",
    [
        (
            "a,b,label\n0.1,0.2,0\n# note\n\n0.4,1e400,1\n",
            "line 5 (counted from 1), field 1",
        ),
        ("0.1,0.2,0\n0.3,nan,1\n", "line 2 (counted from 1), field 1"),
        (
            '"",a,b,label\nr1,0.1,0.2,0\nr2,-inf,0.4,1\n',
            "line 3 (counted from 1), field 1",
        ),
        # A "#" inside quotes starts no comment, as in np.loadtxt.
        (
            ',a,b,label\n"r#1",0.1,0.2,0\n"r#2",0.3,nan,1\n',
            "line 3 (counted from 1), field 2",
        ),
    ],
)
def test_csv_not_finite_names_line_and_field(tmp_path, text, named):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(named)):
        load_csv(path)


def test_labels_strings(tmp_path):
    x, _ = blobs((2, 2))
    path = write_npz(tmp_path / "names.npz", x, np.array(["a", "b", "a", "b"]))
    with pytest.raises(TypeError, match="got dtype <U1"):
        load_data(path)


def test_labels_whole_floats_accepted(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "floats.npz", x, y.astype(np.float64))
    dataset = load_data(path)
    assert dataset.y_train.dtype == np.int64
    assert dataset.n_classes == 3


def test_labels_two_dimensional(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "column.npz", x, y[:, None])
    with pytest.raises(
        ValueError, match=r"labels .* of shape \(n,\), got shape \(18, 1\)"
    ):
        load_data(path)


def test_labels_single_class(tmp_path):
    x, _ = blobs()
    path = write_npz(tmp_path / "one.npz", x, np.zeros(18, dtype=int))
    with pytest.raises(
        ValueError, match=r"has 1 class\(es\) \[0\]; a classifier needs"
    ):
        load_data(path)


@pytest.mark.parametrize(
    "classes, shown", [([0, 2, 5], r"\[0, 2, 5\]"), ([-1, 0, 1], r"\[-1, 0, 1\]")]
)
def test_labels_not_contiguous(tmp_path, classes, shown):
    x, _ = blobs()
    path = write_npz(tmp_path / "gaps.npz", x, np.repeat(classes, 6))
    with pytest.raises(ValueError, match=rf"to be 0..2, got labels {shown}"):
        load_data(path)


def test_length_mismatch(tmp_path):
    x, y = blobs()
    path = write_npz(tmp_path / "short.npz", x, y[:-1])
    with pytest.raises(ValueError, match="18 feature rows but 17 labels"):
        load_data(path)


def test_no_samples(tmp_path):
    path = write_npz(tmp_path / "none.npz", np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(
        ValueError, match=r"contains no samples \(features of shape \(0, 3\)\)"
    ):
        load_data(path)


def test_no_features_is_named(tmp_path):
    path = write_npz(tmp_path / "empty.npz", np.zeros((40, 0)), np.arange(40) % 2)
    with pytest.raises(ValueError, match=r"has 40 samples but no features \("):
        load_data(path)


def test_unknown_scale():
    with pytest.raises(
        ValueError, match="Expected scale 'auto' or None, got 'standard'"
    ):
        load_data(scale="standard")


# Scaling.


def test_scale_auto_per_column(tmp_path):
    x, y = blobs((20, 20, 20))
    x[:, 2] = 7.0
    dataset = load_data(write_npz(tmp_path / "blobs.npz", x, y))
    x_train, x_test, _, _ = train_test_split(x, y, 0.25, 0)
    low, high = x_train.min(axis=0), x_train.max(axis=0)
    assert dataset.bounds == (0.0, 1.0)
    assert np.array_equal(dataset.x_train.min(axis=0), [0.0, 0.0, 0.0])
    assert np.array_equal(dataset.x_train.max(axis=0), [1.0, 1.0, 0.0])
    assert dataset.x_test.min() >= 0.0
    assert dataset.x_test.max() <= 1.0
    expected = np.clip((x_test[:, :2] - low[:2]) / (high - low)[:2], 0.0, 1.0)
    np.testing.assert_allclose(dataset.x_test[:, :2], expected, rtol=1e-14)


def test_scale_auto_images_global(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(10.0, 50.0, size=(24, 2, 2))
    y = np.tile([0, 1], 12)
    dataset = load_data(write_npz(tmp_path / "img.npz", images, y))
    x_train, _, _, _ = train_test_split(images.reshape(24, 4), y, 0.25, 0)
    expected = (x_train - x_train.min()) / (x_train.max() - x_train.min())
    assert dataset.image_shape == (2, 2)
    np.testing.assert_allclose(dataset.x_train, expected, rtol=1e-14)


def test_scale_none_keeps_values(tmp_path):
    x, y = blobs((10, 10))
    dataset = load_data(write_npz(tmp_path / "blobs.npz", x, y), scale=None, seed=4)
    x_train, x_test, y_train, _ = train_test_split(x, y, 0.25, 4)
    assert np.array_equal(dataset.x_train, x_train)
    assert np.array_equal(dataset.x_test, x_test)
    assert np.array_equal(dataset.y_train, y_train)
    assert dataset.bounds == (x.min(), x.max())


def test_load_data_csv(tmp_path):
    x, y = blobs((8, 8))
    rows = [
        ",".join(repr(float(v)) for v in row) + f",{label}" for row, label in zip(x, y)
    ]
    path = tmp_path / "blobs.csv"
    path.write_text("f0,f1,f2,class\n" + "\n".join(rows) + "\n")
    dataset = load_data(path, scale=None, test_size=0.5)
    x_train, _, y_train, _ = train_test_split(x, y, 0.5, 0)
    assert dataset.name == "blobs"
    assert np.array_equal(dataset.x_train, x_train)
    assert np.array_equal(dataset.y_train, y_train)


def test_scaling_reapplies_to_the_same_file(tmp_path):
    x, y = blobs(features=4)
    path = tmp_path / "blobs.csv"
    np.savetxt(path, np.column_stack([10 * x - 3, y]), delimiter=",")
    first = load_data(path)
    assert set(first.scaling) == {"offset", "scale"}
    again = load_data(path, scaling=first.scaling)
    assert np.array_equal(again.x_train, first.x_train)
    assert np.array_equal(again.x_test, first.x_test)
    assert again.scaling == first.scaling


def test_scaling_ignores_new_outliers(tmp_path):
    x, y = blobs(features=4)
    path = tmp_path / "blobs.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",")
    first = load_data(path)
    x[:, 2] += 100 * (np.arange(len(x)) == 0)
    np.savetxt(tmp_path / "moved.csv", np.column_stack([x, y]), delimiter=",")
    moved = load_data(tmp_path / "moved.csv", scaling=first.scaling)
    assert moved.x_train.max() <= 1.0
    differing = (moved.x_train != first.x_train).any(axis=1).sum()
    differing += (moved.x_test != first.x_test).any(axis=1).sum()
    assert differing <= 1


def test_scaling_halves_column_wider_than_float64(tmp_path):
    x, y = blobs(features=3)
    path = write_npz(tmp_path / "blobs.npz", x, y)
    x[:, 0] = np.resize([-1e308, 9.8e307, 0.0], len(y))
    huge = write_npz(tmp_path / "huge.npz", x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = load_data(huge)
        again = load_data(huge, scaling=first.scaling)
    assert first.scaling["prescale"] == [0.5, 1.0, 1.0]
    assert np.isfinite(first.scaling["offset"] + first.scaling["scale"]).all()
    middle = 1.0 / 1.98
    assert np.unique(first.x_train[:, 0]) == pytest.approx([0.0, middle, 1.0])
    assert np.array_equal(again.x_train, first.x_train)
    assert np.array_equal(again.x_test, first.x_test)
    # The other columns are scaled bit for bit as without the wide one.
    normal = load_data(path)
    assert np.array_equal(first.x_train[:, 1:], normal.x_train[:, 1:])
    assert np.array_equal(first.x_test[:, 1:], normal.x_test[:, 1:])


def test_scaling_clips_overflowing_outliers_without_warnings(tmp_path):
    x, y = blobs(features=3)
    first = load_data(write_npz(tmp_path / "blobs.npz", x * 1e-300, y))
    x[0] = [1e308, -1e308, 1e300]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = load_data(
            write_npz(tmp_path / "moved.npz", x, y), scaling=first.scaling
        )
    outlier = np.concatenate([moved.x_train, moved.x_test])
    assert [1.0, 0.0, 1.0] in outlier.tolist()
    assert np.isfinite(outlier).all()


def test_digits_scaling_divides_by_sixteen():
    digits = load_data()
    assert digits.scaling == {"offset": 0.0, "scale": 16.0}


@pytest.mark.parametrize(
    "scaling, message",
    [
        (
            {"offset": [0.0] * 3, "scale": [1.0] * 3},
            "scaling of the training data covers 3;",
        ),
        ({"offset": 0.0, "scale": 0.0}, "must be > 0"),
        ({"offset": 0.0}, "keys 'offset' and 'scale'"),
        ({"offset": "a", "scale": 1.0}, "not numeric"),
        ({"offset": float("nan"), "scale": 1.0}, "not finite"),
        ({"offset": 0.0, "scale": 1.0, "prescale": 0.0}, r"\['prescale'\] must be > 0"),
        ({"offset": 0.0, "scale": 1.0, "shift": 0.0}, "optionally 'prescale'"),
        ({"offset": [10**400] * 4, "scale": 1.0}, "beyond the range of floats"),
        (
            {"offset": [[0.0, 0.0], [0.0, 0.0]], "scale": 1.0},
            r"scaling\['offset'\] has 2 dimensions, where one value per feature",
        ),
    ],
)
def test_scaling_rejects_bad_maps(tmp_path, scaling, message):
    path = write_npz(tmp_path / "blobs.npz", *blobs(features=4))
    with pytest.raises(ValueError, match=message):
        load_data(path, scaling=scaling)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_file_is_not_a_regular_file():
    with pytest.raises(FileNotFoundError, match="/dev/null is not a regular file"):
        load_data("/dev/null")


def test_digest_follows_rows_not_file_or_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 3)), np.arange(40) % 2
    np.savez(tmp_path / "a.npz", X=x, y=y)
    np.savetxt(tmp_path / "a.csv", np.column_stack([x, y]), delimiter=",")
    first = data.load_data(tmp_path / "a.npz")
    assert data.load_data(tmp_path / "a.npz", test_size=0.5, seed=3).digest == (
        first.digest
    )
    assert data.load_data(tmp_path / "a.csv").digest == first.digest
    x[7, 1] += 1e-9
    np.savez(tmp_path / "b.npz", X=x, y=y)
    assert data.load_data(tmp_path / "b.npz").digest != first.digest


def test_label_column_only_for_csv(tmp_path):
    path = write_npz(tmp_path / "blobs.npz", *blobs(features=4))
    with pytest.raises(ValueError, match=r"label_column=0 .* is only for CSV files"):
        load_data(path, label_column=0)
    with pytest.raises(ValueError, match="but the data are the digits"):
        load_data(label_column=0)


def test_npz_named_csv_names_the_suffix(tmp_path):
    path = tmp_path / "table.csv"
    with open(path, "wb") as file:
        np.savez(file, X=np.ones((4, 2)), y=np.arange(4))
    with pytest.raises(ValueError) as caught:
        load_data(path)
    assert "is not a UTF-8 text file" in str(caught.value)
    assert "It is a zip archive, as np.savez writes" in str(caught.value)
    assert "give it the .npz suffix" in str(caught.value)


def test_gzipped_csv_asks_to_decompress(tmp_path):
    path = tmp_path / "table.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write("1,2,0\n3,4,1\n")
    with pytest.raises(
        ValueError, match=r"'table.csv.gz'; expected .* Decompress it first"
    ):
        load_data(path)


def test_csv_header_names_label_column(tmp_path):
    path = tmp_path / "first.csv"
    path.write_text("label,a,b\n0,0.5,0.25\n1,0.75,0.125\n0,0.1,0.3\n")
    message = (
        r"column 2 was read as the label, but the header names column 0 "
        r"'label': pass --label-column 0"
    )
    with pytest.raises(ValueError, match=message):
        load_csv(path)
    assert load_csv(path, label_column=0)[1].tolist() == [0, 1, 0]


def test_csv_second_label_name_refused(tmp_path):
    # "label" copies "class", so read as a feature it would leak the label.
    path = tmp_path / "two.csv"
    path.write_text("label,x2,class\n0,0.5,0\n1,0.2,1\n0,0.1,0\n1,0.9,1\n")
    message = (
        r"column 2 'class' was read as the label, but column 0 'label' is named "
        r"as a label too and would be read as a feature"
    )
    with pytest.raises(ValueError, match=message):
        load_csv(path)
    with pytest.raises(ValueError, match=message):
        load_data(path)
    x, y, _ = load_csv(path, label_column=-1)
    assert x.shape == (4, 2)
    assert y.tolist() == [0, 1, 0, 1]


def test_label_column_last_any_file(tmp_path):
    path = tmp_path / "rows.npz"
    np.savez(path, X=np.random.default_rng(0).random((8, 2)), y=np.arange(8) % 2)
    assert load_data(path, label_column=-1).n_features == 2


def test_csv_label_name_beside_last_column(tmp_path):
    # Both columns contain valid class indices, so only the header marks the
    # label. The default raises, and an explicit -1 keeps the last column.
    path = tmp_path / "visits.csv"
    path.write_text("a,target,visit\n0.5,0,1\n0.25,1,0\n0.75,0,1\n")
    with pytest.raises(ValueError, match=r"or --label-column -1 to keep the last"):
        load_csv(path)
    with pytest.raises(ValueError, match=r"header names column 1 'target'"):
        load_data(path)
    assert load_csv(path, label_column=-1)[1].tolist() == [1, 0, 1]
    assert load_csv(path, label_column=1)[1].tolist() == [0, 1, 0]


def test_csv_label_index_skips_row_names(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text(",label,a\n7,0,0.5\n9,1,2\n")
    x, y, _ = load_csv(path, label_column=0)
    assert np.array_equal(x, [[0.5], [2.0]])
    assert np.array_equal(y, [0, 1])


@pytest.mark.parametrize(
    "text, columns",
    [
        ('"","a","b","label"\n"1",0.5,1,0\n', ["a", "b", "label"]),
        ("0,1,2\n0.5,1,0\n", ["0", "1", "2"]),
        ("0.5,1,0\n0.25,2,1\n", None),
    ],
)
def test_csv_columns(tmp_path, text, columns):
    path = tmp_path / "table.csv"
    path.write_text(text)
    assert data.csv_columns(path) == columns


def test_csv_row_names_and_bad_field(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text(",a,b,label\n0,0.5,1,0\n1,2,x,1\n")
    with pytest.raises(ValueError, match=r"line 3 \(counted from 1\), field 2 "):
        load_csv(path)


def test_given_scaling_counts_clipped_values(tmp_path):
    path = tmp_path / "rows.npz"
    x = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0]])
    np.savez(path, X=x, y=np.array([0, 1, 0, 1]))
    scaling = {"offset": [0.0, 10.0], "scale": [2.0, 10.0]}
    dataset = load_data(path, scaling=scaling, test_size=0.5)
    # Column 0 maps 3 to 1.5 and column 1 maps 30 and 40 to 2 and 3.
    assert dataset.clipped.tolist() == [1, 2]
    assert load_data(path, test_size=0.5).clipped is None


def test_dataset_repr_shows_shapes():
    text = repr(load_data())
    assert text.startswith("Dataset(x_train=float64[1347, 64], y_train=int64[1347]")
    assert "n_classes=10, image_shape=(8, 8), name='digits'" in text


@pytest.mark.parametrize(
    "text",
    [
        "a,b,label,\n0.5,0.1,0,\n0.6,0.7,1,\n0.2,0.3,0,\n",
        "a,b,label\n0.5,0.1,0,\n0.6,0.7,1,\n0.2,0.3,0,\n",
        "0.5,0.1,0,\n0.6,0.7,1,\n0.2,0.3,0,\n",
        # A spreadsheet export: byte-order mark and Windows line ends.
        "\ufeffa,b,label,\r\n0.5,0.1,0,\r\n0.6,0.7,1,\r\n0.2,0.3,0,\r\n",
    ],
)
def test_csv_rows_ending_in_comma_load(tmp_path, text):
    path = tmp_path / "sheet.csv"
    path.write_bytes(text.encode("utf-8"))
    x, y, _ = load_csv(path)
    np.testing.assert_array_equal(x, [[0.5, 0.1], [0.6, 0.7], [0.2, 0.3]])
    np.testing.assert_array_equal(y, [0, 1, 0])


def test_csv_columns_leave_out_trailing_comma(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_text("a,b,label,\n0.5,0.1,0,\n0.6,0.7,1,\n")
    assert csv_columns(path) == ["a", "b", "label"]


def test_numeric_header_read_as_data_is_hinted(tmp_path):
    # A header of numbers (wavelengths) reads as a data row whose label is
    # the last column name; the message should point at --header yes.
    rng = np.random.default_rng(0)
    rows = ["10,20,30,70"] + [
        ",".join(f"{v:.3f}" for v in rng.random(3)) + f",{i % 3}" for i in range(12)
    ]
    path = tmp_path / "numbers.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError) as caught:
        data.load_data(path)
    message = str(caught.value)
    assert "Only the first row has label 70" in message
    assert "pass --header yes (header=True in Python)" in message
    with pytest.warns(UserWarning, match="read as column names"):
        loaded = data.load_data(path, header=True)
    assert len(loaded.y_train) + len(loaded.y_test) == 12

    # A header of text, or one read as such, rules the hint out.
    path.write_text("\n".join(["a,b,c,label", "1,2,3,7", *rows[1:4]]) + "\n")
    with pytest.raises(ValueError) as caught:
        data.load_data(path)
    assert "--header yes" not in str(caught.value)

    # A header value that is no integer gets the hint too.
    path.write_text("\n".join(["10,20,30,600.5", *rows[1:]]) + "\n")
    with pytest.raises(ValueError) as caught:
        data.load_data(path)
    assert "Only the first row has label 600.5" in str(caught.value)

    # Labels wrong beyond the first row get no such hint.
    rows[5] = rows[5].rsplit(",", 1)[0] + ",9"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError) as caught:
        data.load_data(path)
    assert "--header yes" not in str(caught.value)


def test_empty_data_file_names_a_fix(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\); check that it was"):
        data.load_data(path)


def test_one_class_names_the_label_column(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("".join(f"{i / 10},{i % 3},0\n" for i in range(12)))
    with pytest.raises(ValueError) as caught:
        data.load_data(path)
    message = str(caught.value)
    assert "has 1 class(es) [0]; a classifier needs at least 2" in message
    assert "--label-column" in message


def test_data_path_naming_a_folder_rejected(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.arange(4) % 2)
    with pytest.raises(NotADirectoryError, match="Data file '.*d.npz/' ends in '/'"):
        load_data(f"{path}/")
