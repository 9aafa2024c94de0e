"""What the subcommands share: the run context, report sections, progress."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..model import ResidualMLP


@dataclass
class RunContext:
    """What ``resgrad run`` hands each report section.

    Attributes:
        model: the trained network (NumPy, float64).
        data: the ``resgrad.data.Dataset`` it was trained on.
        out_dir: the run folder; a section writes its figures here.
        seed: the run's seed, for any randomness a section needs.
        progress: wraps an iterable in a progress bar (see ``progress_bar``).
    """

    model: ResidualMLP
    data: Any
    out_dir: Path
    seed: int = 0
    progress: Callable[..., Iterable] = field(default=lambda it, **kw: it)


@dataclass
class Section:
    """One section of the run report.

    ``markdown`` is the body (without the heading), ``metrics`` goes into
    ``metrics.json`` under ``key``, and ``files`` lists the figures written,
    relative to the run folder.
    """

    title: str
    key: str
    markdown: str
    metrics: dict[str, Any]
    files: list[str] = field(default_factory=list)


def progress_bar(enabled: bool = True) -> Callable[..., Iterable]:
    """Return a wrapper that draws a tqdm bar on standard error over an iterable.

    The wrapper takes the iterable and tqdm keywords (``desc``, ``total``).
    With ``enabled`` false, or without tqdm, it returns the iterable as is.
    """
    if not enabled:
        return lambda iterable, **kwargs: iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return lambda iterable, **kwargs: iterable
    return functools.partial(tqdm, file=sys.stderr, leave=False, dynamic_ncols=True)
