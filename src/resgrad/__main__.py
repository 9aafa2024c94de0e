"""``python -m resgrad``: the ``resgrad`` command line."""

from resgrad.cli import console

if __name__ == "__main__":
    console()
