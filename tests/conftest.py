"""Shared test setup.

The test modules import their shared helpers with ``import reference``.
pytest runs with ``--import-mode=importlib``, which does not put the test
folder on ``sys.path``, so this file does.
"""

import sys
from pathlib import Path

import pytest
import torch

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

# The tests build thousands of tiny tensors. With more than one thread, the
# thread pool's overhead per operation dominates: on 2 busy cores a small
# autograd pass took 174 ms with 2 threads and 1.4 ms with 1.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def close_figures():
    """Close the figures a test drew, which pyplot keeps open until closed."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


@pytest.fixture
def checkpoint_writes(monkeypatch):
    """Return the list of the epoch counts of the checkpoints written while
    the test runs, in order."""
    import resgrad.io

    written = []
    save = resgrad.io.save_checkpoint

    def recording(path, header, arrays):
        written.append(len(header["history"]))
        save(path, header, arrays)

    monkeypatch.setattr(resgrad.io, "save_checkpoint", recording)
    return written
