"""Tests of saving and loading model files, including hostile files."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import re
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import reference

import resgrad
from resgrad import ResidualMLP, load, read_metadata, save

PREFIX = "is not a resgrad model file: "


def random_model(
    shortcut="learned", bias=True, dtype="float64", activation="tanh", **options
):
    """Return a 2-block model whose every array, biases included, is random."""
    sizes = [4, 4, 4] if shortcut == "identity" else [5, 4, 3]
    model = ResidualMLP.init(
        sizes,
        hidden=6,
        shortcut=shortcut,
        bias=bias,
        activation=activation,
        dtype=dtype,
        seed=2,
        **options,
    )
    rng = np.random.default_rng(7)
    arrays = {
        key: rng.standard_normal(value.shape).astype(dtype)
        for key, value in model.arrays().items()
    }
    return model.replace_arrays(arrays)


def read_parts(path):
    """Return the arrays and the decoded JSON header of a saved file."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "__config__"}
        header = json.loads(archive["__config__"].tobytes().decode("utf-8"))
    return arrays, header


def write_parts(path, arrays, header=None, config_bytes=None):
    """Write arrays and a header the way save does, bypassing its checks."""
    if config_bytes is None:
        config_bytes = json.dumps(header).encode("utf-8")
    members = dict(arrays)
    members["__config__"] = np.frombuffer(config_bytes, np.uint8)
    np.savez(path, **members)
    return path


@pytest.fixture
def saved(tmp_path):
    """A saved model file and the model it contains."""
    model = random_model()
    path = tmp_path / "model.npz"
    save(model, path)
    return path, model


# Round trips.


@pytest.mark.parametrize("shortcut", ["learned", "identity", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, shortcut, bias, dtype):
    model = random_model(shortcut, bias, dtype)
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    x = np.random.default_rng(0).uniform(size=(7, model.sizes[0])).astype(dtype)
    assert loaded.config() == model.config()
    assert loaded.arrays().keys() == model.arrays().keys()
    for key, value in model.arrays().items():
        assert loaded.arrays()[key].dtype == value.dtype
        assert np.array_equal(loaded.arrays()[key], value)
    assert np.array_equal(loaded(x), model(x))


@pytest.mark.parametrize(
    "activation, options",
    [
        ("relu", {}),
        ("leaky_relu", {"output_activation": "leaky_relu"}),
        ("sigmoid", {"post_activation": "identity"}),
        ("softplus", {"post_activation": "tanh", "output_activation": "sigmoid"}),
        ("elu", {}),
        ("silu", {}),
    ],
)
def test_round_trip_activations(tmp_path, activation, options):
    model = random_model(activation=activation, **options)
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    x = np.random.default_rng(1).normal(size=(5, 5))
    assert loaded.activation == model.activation
    assert loaded.post_activation == model.post_activation
    assert loaded.output_activation == model.output_activation
    assert np.array_equal(loaded(x), model(x))


def test_load_converts_dtype(saved):
    path, model = saved
    loaded = load(path, dtype="float32")
    assert loaded.dtype == np.float32
    assert np.array_equal(loaded.blocks[0].W1, model.blocks[0].W1.astype(np.float32))


def test_save_keeps_exact_name(tmp_path):
    path = tmp_path / "weights"
    save(random_model(), path)
    assert os.listdir(tmp_path) == ["weights"]
    assert load(path).sizes == [5, 4, 3]


def test_torch_model_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    model = random_model(dtype="float32").convert(torch)
    path = tmp_path / "model.npz"
    save(model, path)
    on_host = load(path)
    as_torch = load(path, xp=torch)
    x = torch.rand(4, 5, dtype=torch.float32)
    assert isinstance(on_host.blocks[0].W1, np.ndarray)
    assert np.array_equal(on_host.blocks[1].W3, model.blocks[1].W3.numpy())
    assert isinstance(as_torch.blocks[0].W1, torch.Tensor)
    assert as_torch.dtype == torch.float32
    assert torch.equal(as_torch(x), model(x))


def test_save_rejects_float16(tmp_path):
    torch = pytest.importorskip("torch")
    model = random_model(dtype="float32").convert(torch, dtype=torch.float16)
    with pytest.raises(TypeError, match="dtype float16; resgrad files contain"):
        save(model, tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_save_rejects_non_model(tmp_path):
    with pytest.raises(TypeError, match="Expected a ResidualMLP to save, got dict"):
        save({"W1": np.zeros((2, 2))}, tmp_path / "model.npz")


def test_save_missing_folder(tmp_path):
    folder = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match=f"the folder {folder} does not exist"):
        save(random_model(), folder / "model.npz")


def test_save_to_folder(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    message = f"Cannot save {folder}: it is a folder, not a file. Pass a file path"
    with pytest.raises(IsADirectoryError, match=re.escape(message)):
        save(random_model(), folder)
    assert os.listdir(tmp_path) == ["runs"]
    assert os.listdir(folder) == []


@pytest.mark.parametrize("link", [False, True])
def test_save_keeps_named_pipe(tmp_path, link):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    path = pipe
    if link:
        path = tmp_path / "model.npz"
        path.symlink_to(pipe)
    message = f"Cannot save {path}: it is a named pipe, not a regular file"
    with pytest.raises(FileExistsError, match=re.escape(message)):
        save(random_model(), path)
    assert pipe.is_fifo()
    assert path.is_fifo()


def test_save_writes_through_symbolic_link(tmp_path):
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "model.npz"
    save(ResidualMLP.init([5, 4, 3], seed=0), target)
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    replacement = random_model()
    save(replacement, link)
    assert link.is_symlink()
    assert link.resolve() == target
    np.testing.assert_array_equal(load(target).blocks[0].W1, replacement.blocks[0].W1)
    assert sorted(os.listdir(tmp_path / "runs")) == ["model.npz"]


def test_save_to_unwritable_folder(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(resgrad.io.tempfile, "TemporaryFile", read_only)
    path = tmp_path / "model.npz"
    message = (
        f"Cannot save {path}: no file can be written in the folder {tmp_path} "
        "(Read-only file system). Pass a path in a writable folder"
    )
    with pytest.raises(PermissionError, match=re.escape(message)):
        save(random_model(), path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inside", ["model.npz", "runs/model.npz"])
def test_save_under_file(tmp_path, inside):
    parent = tmp_path / "notes.txt"
    parent.write_text("not a folder")
    message = (
        f"Cannot save {parent / inside}: {parent} is a file, not a folder. Pass a "
        "path inside an existing folder."
    )
    with pytest.raises(NotADirectoryError, match=re.escape(message)):
        save(random_model(), parent / inside)
    assert os.listdir(tmp_path) == ["notes.txt"]
    assert parent.read_text() == "not a folder"


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz does not exist"):
        load(tmp_path / "absent.npz")


# Metadata.


def test_metadata_round_trip(tmp_path):
    metadata = {
        "data": "digits",
        "accuracy": 0.9716,
        "epochs": 30,
        "history": [1.5, 0.25],
        "options": {"seed": None, "shuffle": True},
    }
    path = tmp_path / "model.npz"
    save(random_model(), path, metadata=metadata)
    assert read_metadata(path) == metadata


def test_metadata_numpy_scalars_as_python(tmp_path):
    metadata = {
        "epochs": np.int64(30),
        "accuracy": np.float32(0.75),
        "best": [np.float64(0.5), np.uint8(3)],
        "done": np.bool_(True),
        "precise": np.longdouble(0.5),
    }
    path = tmp_path / "model.npz"
    save(random_model(), path, metadata=metadata)
    loaded = read_metadata(path)
    assert loaded == {
        "epochs": 30,
        "accuracy": 0.75,
        "best": [0.5, 3],
        "done": True,
        "precise": 0.5,
    }
    assert [type(loaded[key]) for key in ("epochs", "accuracy", "done")] == [
        int,
        float,
        bool,
    ]


def test_metadata_defaults_to_empty(saved):
    assert read_metadata(saved[0]) == {}


def test_header_fields(saved):
    _, header = read_parts(saved[0])
    assert header["format"] == "resgrad-model"
    assert header["format_version"] == 1
    assert header["resgrad_version"] == resgrad.__version__
    assert header["config"] == saved[1].config()


@pytest.mark.parametrize(
    "metadata, match",
    [
        ({"array": np.zeros(2)}, "Object of type ndarray is not JSON serializable"),
        ({"loss": float("nan")}, "Out of range float values"),
        ({"loss": np.float32("inf")}, "Out of range float values"),
        ({"day": np.datetime64("2026-01-01")}, "Object of type datetime64 is not"),
        ({"z": np.complex128(1j)}, "Object of type complex128 is not"),
        ({("a", "b"): 1}, "keys must be str"),
    ],
)
def test_metadata_not_serialisable(tmp_path, metadata, match):
    with pytest.raises(TypeError, match=f"metadata is not JSON-serialisable: {match}"):
        save(random_model(), tmp_path / "model.npz", metadata=metadata)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({1: 2}, "metadata has the key 1 of type int, which JSON would store as "),
        ({True: 1}, "metadata has the key True of type bool, "),
        (
            {"runs": [{"scores": {0: 0.9}}]},
            "metadata['runs'][0]['scores'] has the key 0",
        ),
        ({"x": ({None: 1},)}, "metadata['x'][0] has the key None of type NoneType"),
    ],
)
def test_metadata_key_not_string(tmp_path, metadata, message):
    with pytest.raises(TypeError) as error:
        save(random_model(), tmp_path / "model.npz", metadata=metadata)
    assert str(error.value).startswith(message)
    assert str(error.value).endswith(". Use string keys instead.")
    assert os.listdir(tmp_path) == []


def test_metadata_not_dict(tmp_path):
    with pytest.raises(TypeError, match="Expected metadata as a dict, got list"):
        save(random_model(), tmp_path / "model.npz", metadata=["digits"])


# Atomic writes.


def failing_savez(file, **arrays):
    file.write(b"PK\x03\x04 half of an archive")
    raise OSError("disk full")


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_failed_write_keeps_old_file(saved, monkeypatch, error):
    path, _ = saved
    before = path.read_bytes()

    def interrupted_savez(file, **arrays):
        file.write(b"PK\x03\x04 half of an archive")
        raise error("write interrupted")

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(error, match="write interrupted"):
        save(random_model(shortcut="none"), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["model.npz"]


def test_failed_replace_keeps_old_file(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def failing_replace(source, target):
        raise PermissionError(f"cannot replace {target}")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError, match="cannot replace"):
        save(random_model(shortcut="none"), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["model.npz"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save(random_model(), tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_file(saved):
    path, _ = saved
    save(random_model(shortcut="none"), path)
    assert load(path).config()["shortcuts"] == ["none", "none"]
    assert os.listdir(path.parent) == ["model.npz"]


def file_mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def reject_link(descriptor, name):
    raise OSError(errno.EXDEV, "Invalid cross-device link")


def open_named_temporary(folder, temporary):
    return resgrad.io._create_exclusive(temporary), True


@pytest.mark.skipif(os.name != "posix", reason="needs Unix permission bits")
@pytest.mark.parametrize("naming", ["link", "copy", "named"])
def test_overwrite_keeps_file_mode(tmp_path, monkeypatch, naming):
    # The temporary file is named by a link of the unnamed file, by a copy
    # where the link is rejected, or from the start without O_TMPFILE.
    if naming == "copy":
        monkeypatch.setattr(resgrad.io, "_link_unnamed", reject_link)
    if naming == "named":
        monkeypatch.setattr(resgrad.io, "_open_temporary", open_named_temporary)
    model_path = tmp_path / "model.npz"
    checkpoint_path = tmp_path / "model.checkpoint.npz"
    save(random_model(), model_path)
    resgrad.io.save_checkpoint(checkpoint_path, {"epoch": 1}, {})
    model_path.chmod(0o600)
    checkpoint_path.chmod(0o640)

    save(random_model(), model_path)
    resgrad.io.save_checkpoint(checkpoint_path, {"epoch": 2}, {})
    assert file_mode(model_path) == 0o600
    assert file_mode(checkpoint_path) == 0o640
    assert sorted(os.listdir(tmp_path)) == [checkpoint_path.name, model_path.name]


@pytest.mark.skipif(os.name != "posix", reason="needs Unix permission bits")
def test_save_through_link_keeps_mode(tmp_path):
    target = tmp_path / "target.npz"
    save(random_model(), target)
    target.chmod(0o600)
    link = tmp_path / "link.npz"
    link.symlink_to(target)

    save(random_model(), link)
    assert link.is_symlink()
    assert file_mode(target) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="needs Unix permission bits")
def test_new_file_mode_follows_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        save(random_model(), tmp_path / "model.npz")
    finally:
        os.umask(previous)
    assert file_mode(tmp_path / "model.npz") == 0o640


# Files that are not zip archives.


def test_truncated_file(saved):
    path, _ = saved
    raw = path.read_bytes()
    # A file that starts as a zip archive was cut short, so it gets the
    # advice for a damaged file, not to pass a resgrad file.
    for length in (len(raw) // 2, len(raw) - 10):
        path.write_bytes(raw[:length])
        with pytest.raises(ValueError) as caught:
            load(path)
        assert str(caught.value).startswith(
            f"{path} is not a resgrad model file: its zip archive is damaged or "
            "truncated ("
        )
        assert str(caught.value).endswith(
            "). Restore it from a copy, or train the model again."
        )
    path.write_bytes(raw[:3])
    with pytest.raises(ValueError, match=PREFIX + "it is not a readable zip"):
        load(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match=PREFIX + "it is not a readable zip"):
        load(path)


@pytest.mark.parametrize("read", [load, resgrad.read_metadata])
def test_empty_file(tmp_path, read):
    path = tmp_path / "model.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=PREFIX + r"it is empty \(0 bytes\)\. Restore"):
        read(path)


def test_empty_checkpoint_names_the_fix(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"checkpoint file: it is empty \(0 bytes\)\. Remove it"
    ):
        resgrad.io.load_checkpoint(path)


def test_checkpoint_of_another_kind(tmp_path, saved):
    """A damaged checkpoint's advice is to remove it, which must not reach
    the user's data or model."""
    data = tmp_path / "digits.npz"
    np.savez(data, X=np.zeros((3, 4)), y=np.zeros(3, dtype=np.int64))
    with pytest.raises(resgrad.InvalidModelFile) as caught:
        resgrad.io.load_checkpoint(data)
    assert str(caught.value).endswith(
        "is a data file (arrays X, y), not a checkpoint file; pass another "
        "checkpoint path."
    )
    model, _ = saved
    with pytest.raises(resgrad.InvalidModelFile) as caught:
        resgrad.io.load_checkpoint(model)
    assert "is a resgrad model file, not a checkpoint; pass the checkpoint" in (
        str(caught.value)
    )
    assert "remove" not in str(caught.value)


@pytest.mark.parametrize("read", [load, resgrad.read_metadata])
def test_data_file_as_model(tmp_path, read):
    path = tmp_path / "digits.npz"
    np.savez(path, X=np.zeros((3, 4)), y=np.zeros(3, dtype=np.int64))
    with pytest.raises(resgrad.InvalidModelFile) as caught:
        read(path)
    message = str(caught.value)
    assert "is a data file (arrays X, y), not a model file" in message
    assert "pass it as --data" in message


def test_pickle_payload_is_not_run(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(reference.CreateFileOnUnpickle(control))).close()
    assert control.exists(), "the payload must create its marker when unpickled"

    marker = tmp_path / "marker"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(reference.CreateFileOnUnpickle(marker)))
    with pytest.raises(ValueError, match=PREFIX):
        load(path)
    with pytest.raises(ValueError, match=PREFIX):
        read_metadata(path)
    assert not marker.exists()


def test_object_array_is_not_unpickled(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    marker = path.parent / "marker"
    arrays["blocks.0.W1"] = np.array(
        [reference.CreateFileOnUnpickle(marker)], dtype=object
    )
    write_parts(path, arrays, header)
    with pytest.raises(ValueError, match="'blocks.0.W1.npy' contains an object array"):
        load(path)
    assert not marker.exists()


# Archive members.


def test_unexpected_member(saved):
    path, _ = saved
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("run.py", b"print('hello')")
    with pytest.raises(ValueError, match="unexpected archive member 'run.py'"):
        load(path)


@pytest.mark.parametrize("reader", ["load", "read_metadata", "load_checkpoint"])
def test_readers_explain_broken_links(tmp_path, reader):
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "gone.npz")
    with pytest.raises(FileNotFoundError, match="symbolic link to .*gone.npz, which"):
        getattr(resgrad.io, reader)(dangling)
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    with pytest.raises(FileNotFoundError, match="leads back to itself"):
        getattr(resgrad.io, reader)(loop)


@pytest.mark.parametrize("reader", ["load", "read_metadata", "load_checkpoint"])
def test_npy_bytes_before_archive_name_the_file(saved, reader):
    # np.load reads a file that starts as a .npy array as that array, though
    # zipfile finds the archive after it.
    path, _ = saved
    if reader == "load_checkpoint":
        weights = {"params.blocks.0.W1": np.ones((2, 2))}
        resgrad.io.save_checkpoint(path, {"epoch": 1}, weights)
        assert resgrad.io.is_checkpoint(path)
    prefix = io.BytesIO()
    np.save(prefix, np.arange(3.0))
    path.write_bytes(prefix.getvalue() + path.read_bytes())
    with pytest.raises(ValueError, match="starts as a .npy array, not as a zip"):
        getattr(resgrad.io, reader)(path)
    assert resgrad.io.is_checkpoint(path) is False


def _deflate_and_damage(path, member):
    """Rewrite the archive at ``path`` with compressed members and flip 20
    bytes of the compressed data of ``member``."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename) + 5
    raw[start : start + 20] = bytes(255 - byte for byte in raw[start : start + 20])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("reader", ["load", "read_metadata", "load_checkpoint"])
def test_damaged_compressed_member(saved, reader):
    """zlib's error for damaged compressed data names the file, as the other
    errors of a damaged archive do."""
    path, _ = saved
    member = "__config__.npy"
    if reader == "load_checkpoint":
        weights = {"params.blocks.0.W1": np.ones((2, 2))}
        resgrad.io.save_checkpoint(path, {"epoch": 1}, weights)
        member = "__checkpoint__.npy"
    _deflate_and_damage(path, member)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a resgrad"):
        getattr(resgrad.io, reader)(path)
    assert resgrad.io.is_checkpoint(path) is False


def test_bytes_before_archive_not_read_as_pickle(saved):
    """np.load reads a file that does not start as a zip archive as a
    pickle, whose error advises allow_pickle."""
    path, _ = saved
    path.write_bytes(b"X" * 100 + path.read_bytes())
    with pytest.raises(ValueError, match="other bytes come before its zip") as error:
        load(path)
    assert "pickle" not in str(error.value)


@pytest.mark.parametrize(
    ("number", "message"),
    [("NaN", "NaN is not a JSON number"), ("1e400", "1e400 is beyond the float64")],
)
def test_non_finite_json_numbers_rejected(saved, tmp_path, number, message):
    # Python's JSON parser reads NaN, Infinity and 1e400; resgrad never
    # writes them.
    path, _ = saved
    arrays, header = read_parts(path)
    text = json.dumps({**header, "metadata": {"loss": 0.5}}).replace("0.5", number)
    write_parts(path, arrays, config_bytes=text.encode())
    with pytest.raises(
        ValueError, match=f"__config__ is not valid UTF-8 JSON .{message}"
    ):
        load(path)

    checkpoint = tmp_path / "run.ckpt"
    resgrad.io.save_checkpoint(checkpoint, {"steps": 0.5}, {})
    with np.load(checkpoint) as archive:
        members = dict(archive)
    text = members["__checkpoint__"].tobytes().decode().replace("0.5", number)
    members["__checkpoint__"] = np.frombuffer(text.encode(), np.uint8)
    with open(checkpoint, "wb") as file:
        np.savez(file, **members)
    with pytest.raises(
        ValueError, match=f"__checkpoint__ is not valid UTF-8 JSON .{message}"
    ):
        resgrad.io.load_checkpoint(checkpoint)


def test_many_members_report_the_repeated(saved):
    path, _ = saved
    with zipfile.ZipFile(path, "a") as archive:
        for index in range(1000, 6000):
            archive.writestr(f"blocks.{index}.W1.npy", b"")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            archive.writestr("blocks.1007.W1.npy", b"")
    with pytest.raises(
        ValueError, match=r"repeats the member\(s\) \['blocks.1007.W1.npy'\]"
    ):
        load(path)


def test_duplicate_member(saved):
    path, _ = saved
    arrays, _ = read_parts(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with (
            zipfile.ZipFile(path, "a") as archive,
            archive.open("blocks.0.W1.npy", "w") as member,
        ):
            np.lib.format.write_array(member, arrays["blocks.0.W1"])
    with pytest.raises(
        ValueError, match=r"repeats the member\(s\) \['blocks.0.W1.npy'\]"
    ):
        load(path)


def test_missing_config(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, **{key: np.asarray(v) for key, v in random_model().arrays().items()})
    with pytest.raises(ValueError, match="the archive has no __config__ member"):
        load(path)


def test_unsupported_compression(saved):
    path, _ = saved
    arrays, _ = read_parts(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, value)
    with pytest.raises(ValueError, match="uses zip compression method 12"):
        load(path)


def test_compressed_file_loads(saved):
    path, model = saved
    arrays, header = read_parts(path)
    members = dict(arrays)
    members["__config__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez_compressed(path, **members)
    assert np.array_equal(load(path).blocks[1].W2, model.blocks[1].W2)


def test_unsupported_zip_version(saved):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    start = raw.index(b"PK\x01\x02")
    struct.pack_into("<H", raw, start + 6, 161)  # "version needed to extract"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=PREFIX + ".*zip file version 16.1"):
        load(path)


# Memory: declared sizes are checked before anything is allocated.


def patch_declared_size(path, member_name, size):
    """Overwrite a member's uncompressed size in the zip's central directory."""
    raw = bytearray(path.read_bytes())
    name = member_name.encode()
    start = 0
    while True:
        start = raw.index(b"PK\x01\x02", start)
        name_length = struct.unpack_from("<H", raw, start + 28)[0]
        if raw[start + 46 : start + 46 + name_length] == name:
            struct.pack_into("<I", raw, start + 24, size)
            break
        start += 4
    path.write_bytes(bytes(raw))


def load_peak_bytes(path, match):
    """Load ``path``, expecting a ValueError, and return the peak traced memory."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            load(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_lying_declared_size_deflated(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    members = dict(arrays)
    members["__config__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez_compressed(path, **members)
    patch_declared_size(path, "blocks.0.W1.npy", 2**32 - 16)
    peak = load_peak_bytes(path, "it may be a zip bomb")
    assert peak < 2**20


def test_lying_declared_size_stored(saved):
    path, _ = saved
    patch_declared_size(path, "blocks.0.W1.npy", 2**32 - 16)
    match = "'blocks.0.W1.npy' declares 4294967280 bytes but occupies"
    peak = load_peak_bytes(path, match)
    assert peak < 2**20


def test_compressed_zeros_bomb(saved):
    path, _ = saved
    count = 2**22  # 32 MiB of float64 zeros deflate to about 32 KiB.
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (count,)
    chunk = bytes(2**20)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("blocks.5.b1.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        for _ in range(count * 8 // len(chunk)):
            member.write(chunk)
    assert path.stat().st_size < 2**20
    peak = load_peak_bytes(path, "it may be a zip bomb")
    assert peak < 2**20


def test_npy_header_larger_than_member(saved):
    path, _ = saved
    fake = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    fake["shape"] = (10**10,)
    with (
        zipfile.ZipFile(path, "a") as archive,
        archive.open("blocks.9.W1.npy", "w") as member,
    ):
        np.lib.format.write_array_header_1_0(member, fake)
        member.write(bytes(80))
    match = r"declares shape \(10000000000,\) of float64 \(80000000000 bytes\)"
    peak = load_peak_bytes(path, match)
    assert peak < 2**20


# Array contents.


@pytest.mark.parametrize("dtype", ["int64", "float16", "complex128"])
def test_wrong_dtype(saved, dtype):
    path, _ = saved
    arrays, header = read_parts(path)
    arrays["blocks.1.W2"] = arrays["blocks.1.W2"].astype(dtype)
    write_parts(path, arrays, header)
    with pytest.raises(ValueError, match=f"blocks.1.W2 has dtype {dtype}, but the"):
        load(path)


def test_mixed_float_dtypes(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    arrays["blocks.0.b1"] = arrays["blocks.0.b1"].astype(np.float32)
    write_parts(path, arrays, header)
    with pytest.raises(
        ValueError, match="blocks.0.b1 has dtype float32, but the config"
    ):
        load(path)


def test_shapes_do_not_chain(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    arrays["blocks.1.W1"] = np.zeros((6, 5))
    write_parts(path, arrays, header)
    match = r"blocks.1.W1 has shape \(6, 5\), but .* need \(6, 4\)"
    with pytest.raises(ValueError, match=match):
        load(path)


def test_extra_key(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    header["config"]["shortcuts"] = ["learned", "none"]
    write_parts(path, arrays, header)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['blocks.1.W3'\]"):
        load(path)


def test_missing_key(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    del arrays["blocks.1.W2"]
    write_parts(path, arrays, header)
    with pytest.raises(ValueError, match=r"missing \['blocks.1.W2'\], unexpected \[\]"):
        load(path)


def test_not_finite_array(saved):
    path, _ = saved
    arrays, header = read_parts(path)
    arrays["blocks.0.W3"][1, 2] = np.inf
    write_parts(path, arrays, header)
    with pytest.raises(ValueError, match="blocks.0.W3 contains NaN or infinite"):
        load(path)


def test_big_endian_arrays_load(saved):
    path, model = saved
    arrays, header = read_parts(path)
    arrays = {key: value.astype(">f8") for key, value in arrays.items()}
    write_parts(path, arrays, header)
    loaded = load(path)
    assert loaded.blocks[0].W1.dtype == np.dtype("float64")
    assert np.array_equal(loaded.blocks[0].W1, model.blocks[0].W1)


# The JSON header.


@pytest.mark.parametrize(
    "config_bytes, match",
    [
        (b"{not json", "__config__ is not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "__config__ is not valid UTF-8 JSON"),
        (b"[1, 2]", "the header is a list, not a JSON object"),
        (b"[" * 100000, "__config__ is not valid UTF-8 JSON"),
    ],
)
def test_bad_json(saved, config_bytes, match):
    path, _ = saved
    arrays, _ = read_parts(path)
    write_parts(path, arrays, config_bytes=config_bytes)
    with pytest.raises(ValueError, match=PREFIX + match):
        load(path)
    with pytest.raises(ValueError, match=PREFIX + match):
        read_metadata(path)


def test_config_not_bytes(saved):
    path, _ = saved
    arrays, _ = read_parts(path)
    arrays["__config__"] = np.zeros((2, 2))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"__config__ has shape \(2, 2\) of float64"):
        load(path)


def edit_header(path, edit):
    arrays, header = read_parts(path)
    edit(header)
    write_parts(path, arrays, header)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h.update(format="pickle"), "its format is 'pickle'"),
        (lambda h: h.update(format_version=0), "its format version 0 is unknown"),
        (
            lambda h: h.update(format_version=True),
            "'format_version' is True; expected an int",
        ),
        (lambda h: h.pop("metadata"), r"missing the field\(s\) \['metadata'\]"),
        (lambda h: h.update(code="x"), r"unknown field\(s\) \['code'\]"),
        (
            lambda h: h.update(metadata=[]),
            "field 'metadata' is \\[\\]; expected a dict",
        ),
        (lambda h: h["config"].pop("hidden"), r"config is missing .* \['hidden'\]"),
        (lambda h: h["config"].update(sizes="5,4,3"), "'sizes' is '5,4,3'; expected"),
        (lambda h: h["config"].update(sizes=[5]), r"sizes \[5\] are not two or more"),
        (lambda h: h["config"].update(sizes=[5, 0, 3]), "sizes .* positive ints"),
        (
            lambda h: h["config"].update(hidden=[6]),
            (
                r"config hidden \[6\] has 1 entry, but sizes, shortcuts and biases "
                "give 2 blocks, so it needs 2, one per block"
            ),
        ),
        (lambda h: h["config"].update(hidden=[6, 2.5]), "hidden .* positive ints"),
        (lambda h: h["config"].update(activation="swish"), "activation 'swish' is"),
        (lambda h: h["config"].update(output_activation="softmax"), "'softmax' is"),
        (
            lambda h: h["config"].update(shortcuts=["learned"]),
            r"shortcuts \['learned'\] has 1 entry, .* needs 2",
        ),
        (lambda h: h["config"].update(shortcuts=["learned", "dense"]), "shortcuts"),
        (
            lambda h: h["config"].update(biases=[[True, True]]),
            r"biases \[\[True, True\]\] has 1 entry, .* needs 2",
        ),
        (lambda h: h["config"].update(biases=[[1, 1], [1, 1]]), "pairs of booleans"),
        (lambda h: h["config"].update(dtype="float16"), "dtype 'float16' is not"),
    ],
)
def test_invalid_header(saved, edit, match):
    path, _ = saved
    edit_header(path, edit)
    with pytest.raises(ValueError, match=PREFIX + ".*" + match):
        load(path)


def test_newer_format_version(saved):
    path, _ = saved
    edit_header(path, lambda h: h.update(format_version=99))
    message = (
        f"{path} is a resgrad model file of format version 99, written by resgrad "
        f"{resgrad.__version__}, but resgrad {resgrad.__version__} reads format "
        "versions up to 1. Upgrade resgrad to read it."
    )
    for read in (load, read_metadata):
        with pytest.raises(resgrad.InvalidModelFile) as error:
            read(path)
        assert str(error.value) == message


def test_newer_format_with_other_fields(saved):
    path, _ = saved

    def edit(header):
        header.update(format_version=2, resgrad_version="2.0.0", compression="zstd")
        del header["metadata"]

    edit_header(path, edit)
    match = "format version 2, written by resgrad 2.0.0, but resgrad .* up to 1"
    with pytest.raises(ValueError, match=match):
        load(path)


def test_newer_format_odd_writer_left_out(saved):
    path, _ = saved
    edit_header(path, lambda h: h.update(format_version=2, resgrad_version="x\n" * 99))
    with pytest.raises(ValueError, match="format version 2, but resgrad"):
        load(path)


def test_config_sizes_wrong_length(tmp_path):
    path = tmp_path / "model.npz"
    save(ResidualMLP.init([6, 6, 6, 3], seed=0), path)
    edit_header(path, lambda h: h["config"].update(sizes=[10**12, 10**12]))
    with pytest.raises(ValueError) as error:
        load(path)
    message = str(error.value)
    assert (
        "config sizes [1000000000000, 1000000000000] has 2 entries, but hidden, "
        "shortcuts and biases give 3 blocks, so it needs 4, the input width and "
        "one output width per block." in message
    )
    assert "hidden [" not in message


def test_config_long_sizes_shortened(saved):
    path, _ = saved
    edit_header(path, lambda h: h["config"].update(sizes=[10**50] * 100000))
    with pytest.raises(ValueError, match="config sizes .*has 100000 entries") as error:
        load(path)
    message = str(error.value).removeprefix(str(path))
    assert len(message) < 500
    assert str(10**50) not in message


def test_config_block_counts_disagree(saved):
    path, _ = saved

    def edit(header):
        header["config"].update(hidden=[6], shortcuts=["none"])

    edit_header(path, edit)
    match = (
        r"the config lists give different numbers of blocks \(sizes \[5, 4, 3\] "
        r"gives 2 blocks, hidden \[6\] gives 1 block, shortcuts \['none'\] gives "
        r"1 block, biases \[\[True, True\], \[True, True\]\] gives 2 blocks\), "
        "but they must agree"
    )
    with pytest.raises(ValueError, match=PREFIX + match):
        load(path)


def test_identity_shortcut_width_mismatch(tmp_path):
    path = tmp_path / "model.npz"
    save(random_model(shortcut="none"), path)
    edit_header(path, lambda h: h["config"].update(shortcuts=["identity", "none"]))
    with pytest.raises(ValueError, match="do not form a network .*identity shortcut"):
        load(path)


def test_random_corruption(saved):
    # Every corrupted file either loads or raises ValueError, never another error.
    path, _ = saved
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(200):
        corrupt = bytearray(raw)
        for offset in rng.integers(0, len(raw), size=rng.integers(1, 4)):
            corrupt[offset] = int(rng.integers(0, 256))
        path.write_bytes(bytes(corrupt))
        try:
            load(path)
            outcomes.add("loaded")
        except ValueError as error:
            assert str(error).startswith(f"{path} {PREFIX}")
            outcomes.add("rejected")
    assert "rejected" in outcomes


# Killed writers.

# The child saves models with alternating seeds to argv[1] until killed.
SAVE_LOOP = """
import sys
import resgrad
models = [resgrad.ResidualMLP.init([64, 128, 10], 128, seed=s) for s in (0, 1)]
resgrad.save(models[0], sys.argv[1])
print("ready", flush=True)
count = 0
while True:
    count += 1
    resgrad.save(models[count % 2], sys.argv[1])
"""

# The child writes half an archive through write_atomically, creates the
# file argv[2] to say so and sleeps until killed.
STALLED_WRITE = """
import pathlib, sys, time
from resgrad.io import write_atomically
def write(file):
    file.write(b"PK\\x03\\x04 half of an archive")
    file.flush()
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(600)
write_atomically(pathlib.Path(sys.argv[1]), write)
"""


def temporary_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_killed_save_loop_keeps_a_whole_file(tmp_path):
    path = tmp_path / "model.npz"
    process = subprocess.Popen(
        [sys.executable, "-c", SAVE_LOOP, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == b"ready\n", process.stderr.read()
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    loaded = load(path).arrays()
    candidates = [ResidualMLP.init([64, 128, 10], 128, seed=s).arrays() for s in (0, 1)]
    matches = [
        all(np.array_equal(loaded[key], model[key]) for key in model)
        for model in candidates
    ]
    assert any(matches)
    save(random_model(), path)
    assert temporary_files(tmp_path) == []


def test_killed_save_leaves_no_temporary_after_next_save(tmp_path):
    # A kill between linking the temporary file and renaming it leaves the
    # temporary file; the next save to the same path removes it.
    path = tmp_path / "model.npz"
    save(random_model(), path)
    stale = tmp_path / f".model.npz.{2**22 + 1}.0123456789abcdef.tmp"
    stale.write_bytes(b"left by a killed process")
    other = tmp_path / ".other.npz.1.0123456789abcdef.tmp"
    other.write_bytes(b"belongs to another file")

    save(random_model(shortcut="none"), path)

    assert temporary_files(tmp_path) == [other.name]


def test_temporary_of_running_process_is_kept(tmp_path):
    path = tmp_path / "model.npz"
    running = tmp_path / f".model.npz.{os.getpid()}.0123456789abcdef.tmp"
    running.write_bytes(b"being written")
    save(random_model(), path)
    assert temporary_files(tmp_path) == [running.name]


@pytest.mark.skipif(
    not hasattr(os, "O_TMPFILE"), reason="needs unnamed temporary files (Linux)"
)
def test_killed_during_write_leaves_nothing(saved):
    path, _ = saved
    before = path.read_bytes()
    started = path.parent.parent / f"{path.parent.name}-started"
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITE, str(path), str(started)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()

    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["model.npz"]


@pytest.mark.skipif(
    not hasattr(os, "O_TMPFILE"), reason="needs unnamed temporary files (Linux)"
)
def test_write_in_progress_has_no_name(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    seen = []

    def watching_savez(file, **arrays):
        seen.append(sorted(os.listdir(tmp_path)))
        file.write(b"PK")

    monkeypatch.setattr(np, "savez", watching_savez)
    save(random_model(), path)
    assert seen == [[]]
    assert os.listdir(tmp_path) == ["model.npz"]


def test_rejected_link_falls_back_to_copy(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = random_model()

    def rejecting_link(descriptor, name):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(resgrad.io, "_link_unnamed", rejecting_link)
    save(model, path)
    assert os.listdir(tmp_path) == ["model.npz"]
    loaded = load(path)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], value)


# More hostile files.


def test_pickle_in_npy_member_is_not_run(saved):
    path, _ = saved
    marker = path.parent / "marker"
    payload = pickle.dumps(reference.CreateFileOnUnpickle(marker))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("blocks.9.W1.npy", payload)
    with pytest.raises(ValueError, match=PREFIX):
        load(path)
    assert not marker.exists()


def _npy_with_header(header, version=1):
    """Return the bytes of a .npy member with ``header`` and 8 bytes of data."""
    text = header.encode("latin1")
    size = 4 if version == 2 else 2
    padded = text + b" " * (-(len(text) + 9 + size) % 64) + b"\n"
    length = struct.pack("<I" if version == 2 else "<H", len(padded))
    return b"\x93NUMPY" + bytes([version, 0]) + length + padded + bytes(8)


FINE = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }"
BAD_NPY_MEMBERS = {
    "long header": (
        _npy_with_header(FINE + " " * 20000, version=2),
        "a .npy header longer than NumPy reads safely",
    ),
    "expression": (
        _npy_with_header(FINE.replace("(1,)", "__import__('os').getpid()")),
        "a .npy header that is not a plain dictionary",
    ),
    "no magic": (b"NOTNUMPY" + bytes(120), "no .npy magic string at its start"),
}


@pytest.mark.parametrize(
    "raw, problem", BAD_NPY_MEMBERS.values(), ids=list(BAD_NPY_MEMBERS)
)
def test_bad_npy_header_is_named_without_numpy_advice(saved, raw, problem):
    path, _ = saved
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("blocks.9.W1.npy", raw)
    with pytest.raises(ValueError) as caught:
        load(path)
    message = str(caught.value)
    assert f"the member 'blocks.9.W1.npy' has {problem}." in message
    for words in ("damaged", "allow_pickle", "<ast."):
        assert words not in message


def test_pickled_npy_file_renamed(tmp_path):
    path = tmp_path / "model.npz"
    marker = tmp_path / "marker"
    with open(path, "wb") as file:
        np.save(file, np.array([reference.CreateFileOnUnpickle(marker)], dtype=object))
    with pytest.raises(ValueError, match=PREFIX + "it is not a readable zip"):
        load(path)
    assert not marker.exists()


def test_hostile_checkpoint_files(tmp_path):
    path = tmp_path / "run.ckpt"
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps(reference.CreateFileOnUnpickle(marker)))
    with pytest.raises(ValueError, match="is not a resgrad checkpoint file"):
        resgrad.io.load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("read", [load, resgrad.read_metadata])
def test_checkpoint_as_model_names_resume(tmp_path, read):
    path = tmp_path / "model.checkpoint.npz"
    model = reference.random_model(1, "tanh", "learned")
    arrays = {f"params.{key}": value for key, value in model.arrays().items()}
    resgrad.io.save_checkpoint(path, {"epoch": 1}, arrays)
    with pytest.raises(ValueError) as caught:
        read(path)
    message = str(caught.value)
    assert "is a training checkpoint, not a model" in message
    assert "resgrad train --resume" in message
    assert "resgrad.fit(..., checkpoint=path, resume=True)" in message


def test_newer_checkpoint_names_its_version(tmp_path):
    path = tmp_path / "run.ckpt"
    resgrad.io.save_checkpoint(path, {"epoch": 1}, {})
    with zipfile.ZipFile(path) as archive:
        raw = np.load(io.BytesIO(archive.read("__checkpoint__.npy")))
    header = json.loads(raw.tobytes())
    header["format_version"] = 7
    encoded = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, encoded)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__checkpoint__.npy", buffer.getvalue())
    with pytest.raises(ValueError, match="checkpoint of format version 7, written"):
        resgrad.io.load_checkpoint(path)


def test_nan_weight_names_the_array(saved):
    """save rejects NaN, so a NaN weight means the file was changed since."""
    path, _ = saved
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["blocks.0.W1"] = arrays["blocks.0.W1"].copy()
    arrays["blocks.0.W1"][0, 0] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(resgrad.InvalidModelFile) as caught:
        load(path)
    message = str(caught.value)
    assert "is laid out as a resgrad model file, but blocks.0.W1 contains NaN" in (
        message
    )
    assert message.endswith("Restore it from a copy, or train the model again.")


def test_deeply_nested_metadata_is_a_type_error(tmp_path):
    metadata = {}
    for _ in range(100_000):
        metadata = {"inner": metadata}
    with pytest.raises(TypeError, match="nests too deeply"):
        save(random_model(), tmp_path / "model.npz", metadata=metadata)
    assert not (tmp_path / "model.npz").exists()


def test_invalid_file_error_is_public(tmp_path):
    path = tmp_path / "model.npz"
    path.write_text("not a model")
    with pytest.raises(resgrad.InvalidModelFile, match="not a readable zip"):
        load(path)
    assert issubclass(resgrad.InvalidModelFile, ValueError)


@pytest.mark.parametrize("dtype", ["bogus", "float16", "int64"])
def test_load_rejects_dtypes_save_cannot_write(saved, dtype):
    path, _ = saved
    with pytest.raises(
        ValueError, match=f"Expected dtype float32 or float64, .*'{dtype}'"
    ):
        load(path, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", np.float32, np.dtype("float32")])
def test_load_converts_to_float32_in_any_spelling(saved, dtype):
    path, _ = saved
    assert load(path, dtype=dtype).dtype == np.float32


def test_json_text_writes_non_finite_numbers_as_null():
    document = {"a": [math.nan, math.inf, 1.5], "b": {"c": -math.inf}, "d": (2, "x")}
    text = resgrad.io.json_text(document)
    assert text.endswith("\n")
    assert json.loads(text) == {"a": [None, None, 1.5], "b": {"c": None}, "d": [2, "x"]}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("earlier", [False, True])
def test_full_disk_names_the_file_and_keeps_it(tmp_path, code, earlier):
    path = tmp_path / "model.npz"
    if earlier:
        path.write_bytes(b"earlier")

    def fill(file):
        file.write(b"half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError) as raised:
        resgrad.io.write_atomically(path, fill)
    message = str(raised.value)
    assert raised.value.errno == code
    assert message.startswith(f"Cannot save {path}: {os.strerror(code).lower()}")
    assert "free space on that disk, or save to another one" in message
    if earlier:
        assert "the file keeps its earlier contents" in message
        assert path.read_bytes() == b"earlier"
    else:
        assert "nothing was written" in message
        assert not path.exists()
    assert temporary_files(tmp_path) == []


def test_full_disk_before_first_byte(tmp_path, monkeypatch):
    # No room for the temporary file itself, as when no inode is left.
    def no_inode(folder, temporary):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(resgrad.io, "_open_temporary", no_inode)
    path = tmp_path / "model.npz"
    with pytest.raises(OSError, match=f"^Cannot save {re.escape(str(path))}: no"):
        resgrad.io.write_atomically(path, lambda file: None)


@pytest.mark.parametrize(
    "code, kind, fix",
    [
        (errno.EIO, OSError, "check that disk, or save to another one."),
        (errno.EFBIG, OSError, "raise this process's file size limit (ulimit -f)"),
        (errno.EACCES, PermissionError, "give your user write access there"),
        (errno.EINTR, InterruptedError, "check that disk, or save to another one."),
    ],
)
def test_other_write_errors_name_the_file(tmp_path, code, kind, fix):
    def fail(file):
        raise kind(code, os.strerror(code))

    path = tmp_path / "model.npz"
    with pytest.raises(kind) as raised:
        resgrad.io.write_atomically(path, fail)
    assert type(raised.value) is kind
    assert raised.value.errno == code
    message = str(raised.value)
    reason = os.strerror(code).lower()
    assert message.startswith(f"Cannot save {path}: {reason}, and nothing was written;")
    assert fix in message
    assert temporary_files(tmp_path) == []


def test_write_errors_that_name_a_file_pass_through(tmp_path):
    def fail(file):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "elsewhere.bin")

    with pytest.raises(OSError) as raised:
        resgrad.io.write_atomically(tmp_path / "model.npz", fail)
    assert raised.value.errno == errno.EIO
    assert raised.value.filename == "elsewhere.bin"


# The checkpoint lock file.

TRAIN_SMALL = ["train", "--widths", "8", "--hidden", "8", "--epochs", "1"]


def train_beside_lock(tmp_path, capsys):
    """Run a short ``resgrad train`` in ``tmp_path``; return its exit status
    and the last line of its error output."""
    from resgrad.cli import main

    status = main([*TRAIN_SMALL, "--out", str(tmp_path / "m.npz"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    return status, lines[-1] if lines else ""


def test_lock_rejects_symbolic_link(tmp_path, capsys):
    pytest.importorskip("fcntl")
    victim = tmp_path / "victim.txt"
    victim.write_text("notes\n")
    lock = tmp_path / "m.checkpoint.npz.lock"
    lock.symlink_to("victim.txt")

    status, message = train_beside_lock(tmp_path, capsys)
    assert status == 2
    assert f"Cannot take the checkpoint lock {lock}: it is a symbolic link" in message
    assert "Remove it, or pass another checkpoint path (--checkpoint" in message
    assert victim.read_text() == "notes\n"
    assert lock.is_symlink()
    assert sorted(os.listdir(tmp_path)) == [lock.name, victim.name]


@pytest.mark.parametrize(
    "contents, shown",
    [("my notes\n", r"'my notes\n'"), ("4242\n" * 10, "'4242\\n4242")],
)
def test_lock_rejects_other_file(tmp_path, capsys, contents, shown):
    pytest.importorskip("fcntl")
    lock = tmp_path / "m.checkpoint.npz.lock"
    lock.write_text(contents)

    status, message = train_beside_lock(tmp_path, capsys)
    assert status == 2
    assert f"Cannot take the checkpoint lock {lock}: it contains {shown}" in message
    assert "not a lock file that resgrad wrote" in message
    assert lock.read_text() == contents
    assert os.listdir(tmp_path) == [lock.name]


def test_lock_rejects_folder(tmp_path):
    pytest.importorskip("fcntl")
    from resgrad import _lock

    (tmp_path / "m.checkpoint.npz.lock").mkdir()
    with pytest.raises(FileExistsError, match="lock.*: it is a folder, so it is not"):
        _lock.acquire(tmp_path / "m.checkpoint.npz", "hint")


def test_lock_open_follows_no_link(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")
    from resgrad import _lock

    victim = tmp_path / "victim.txt"
    victim.write_text("notes\n")
    lock = tmp_path / "m.checkpoint.npz.lock"
    lock.symlink_to(victim)
    # The link appears after the check before the open, as in a race.
    monkeypatch.setattr(
        _lock, "_check_regular", lambda path, status: None, raising=False
    )

    with pytest.raises(FileExistsError, match="it is a symbolic link, so it is not"):
        _lock.acquire(tmp_path / "m.checkpoint.npz", "hint")
    assert victim.read_text() == "notes\n"


@pytest.mark.parametrize("contents", ["", "999999999\n", "999999999"])
def test_lock_of_ended_run_taken_over(tmp_path, contents):
    pytest.importorskip("fcntl")
    from resgrad import _lock

    lock = tmp_path / "m.checkpoint.npz.lock"
    lock.write_text(contents)
    held = _lock.acquire(tmp_path / "m.checkpoint.npz", "hint")
    try:
        assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        _lock.release(held)
    assert not lock.exists()


@pytest.mark.parametrize("ending", ["/", "/.", "//"])
def test_save_rejects_path_naming_a_folder(tmp_path, ending):
    # Path drops the ending, which would write a file named m.npz.
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    path = f"{tmp_path}/m.npz{ending}"
    with pytest.raises(ValueError, match=f"ends in '{ending}', which names a folder"):
        resgrad.save(model, path)
    assert not (tmp_path / "m.npz").exists()


def test_save_keeps_a_file_that_is_no_model(tmp_path):
    # Such as the data: resgrad train --out refuses it too, even with
    # --overwrite.
    data = tmp_path / "data.csv"
    data.write_text("1,2,3\n")
    model = resgrad.ResidualMLP.init([4, 3, 2], seed=0)
    with pytest.raises(FileExistsError) as caught:
        resgrad.save(model, data)
    assert str(caught.value) == (
        f"{data} exists and is not a resgrad model file, and saving would "
        "replace it; remove it first, or pass another path."
    )
    assert data.read_text() == "1,2,3\n"
    # A model file is replaced.
    path = tmp_path / "model.npz"
    resgrad.save(model, path)
    resgrad.save(resgrad.ResidualMLP.init([4, 3, 2], seed=1), path)
    assert np.array_equal(
        resgrad.load(path).blocks[0].W1,
        resgrad.ResidualMLP.init([4, 3, 2], seed=1).blocks[0].W1,
    )


@pytest.mark.parametrize("ending", ["/", "/."])
def test_load_rejects_file_path_naming_a_folder(saved, ending):
    # open() would fail on it; Path drops the ending and would read the file.
    path, _ = saved
    text = f"{path}{ending}"
    for reader in (load, resgrad.io.read_metadata):
        with pytest.raises(NotADirectoryError) as caught:
            reader(text)
        assert str(caught.value) == (
            f"Model file {text!r} ends in {ending!r}, which names a folder, but "
            f"{path} is a file; pass {path}."
        )
