"""The Python examples of the docs run as written.

Each page's ``python`` blocks run in order in one namespace, as a reader
would paste them, in a folder that holds the ``model.npz`` the pages load.
"""

import re
import warnings
from pathlib import Path

import pytest
import torch

from resgrad.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["attacks.md", "depth.md", "saliency.md", "torch.md", "training.md"]

# The files an example names in a string ending in one of these suffixes,
# which it should have written once it has run.
WRITTEN = re.compile(r"""["']([\w/.-]+\.(?:png|md|csv|json))["']""")


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with the model that the pages load, trained briefly."""
    path = tmp_path_factory.mktemp("docs")
    status = main(
        ["train", "--out", str(path / "model.npz"), "--epochs", "3", "--no-progress"]
    )
    assert status == 0
    return path


def test_every_page_with_examples_is_run():
    pages = sorted(page.name for page in DOCS.glob("*.md") if _blocks(page.name))
    assert pages == PAGES


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, folder, monkeypatch, capsys):
    """Each page's examples run, write the files they name, and warn of
    nothing, since a reader would take a warning for a fault."""
    monkeypatch.chdir(folder)
    blocks = _blocks(page)
    assert blocks
    namespace: dict = {}
    for number, block in enumerate(blocks):
        if '"cuda"' in block and not torch.cuda.is_available():
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(block, f"{page} example {number + 1}", "exec"), namespace)  # noqa: S102 (our own docs)
        assert [str(w.message) for w in caught] == [], f"{page} example {number + 1}"
        for name in WRITTEN.findall(block):
            assert (folder / name).stat().st_size > 0, name
    capsys.readouterr()


def test_cuda_example_is_the_only_one_skipped_here():
    skipped = [
        (page, number)
        for page in PAGES
        for number, block in enumerate(_blocks(page))
        if '"cuda"' in block
    ]
    assert skipped == [("torch.md", 6)]
