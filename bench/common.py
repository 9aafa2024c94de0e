"""Shared setup for the benchmark scripts: threads, networks, timing, tables.

Every script builds one resgrad network, copies its weights into PyTorch
with ``resgrad.torch.to_module`` and times every contender on the same
weights and inputs, in one process, with the same thread count for NumPy
(through threadpoolctl) and PyTorch (``torch.set_num_threads``).

Each contender gets the median and the minimum of its times over rounds.
In each round every contender runs once, in an order that rotates from
round to round, so a burst of load from other processes on the machine hits
all contenders alike. The median is the figure the tables lead with. The
minimum is the time of a run that no other process interrupted, which is
the steadier figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import resgrad

DTYPES = ("float32", "float64")
CLASSES = 10


def parser(
    description: str, networks=None, dtypes=DTYPES, budget: float = 2.0
) -> argparse.ArgumentParser:
    """Return an argument parser with the options every script shares.

    ``networks``, the names of a script's networks, adds ``--networks`` to
    pick a subset of them. ``dtypes`` and ``budget`` are the defaults of
    ``--dtypes`` and ``--budget``.
    """
    result = argparse.ArgumentParser(description=description)
    if networks is not None:
        result.add_argument(
            "--networks", nargs="+", choices=list(networks), default=list(networks)
        )
    result.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for NumPy's BLAS and for PyTorch (default 1, which "
        "gives steadier times on a shared machine)",
    )
    result.add_argument(
        "--dtypes",
        nargs="+",
        choices=DTYPES,
        default=list(dtypes),
        help=f"floating dtypes to run (default: {' '.join(dtypes)})",
    )
    result.add_argument(
        "--budget",
        type=float,
        default=budget,
        help="seconds of timed runs per contender and case, before the "
        f"minimum of 5 rounds (default: {budget})",
    )
    return result


def set_threads(threads: int) -> None:
    """Limit NumPy's BLAS and PyTorch's intra-op pool to ``threads`` threads."""
    import threadpoolctl
    import torch

    global _LIMITS
    _LIMITS = threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)


_LIMITS = None


def network(
    width: int, depth: int, batch: int, dtype: str, seed: int = 0
) -> tuple[resgrad.ResidualMLP, np.ndarray, np.ndarray]:
    """Return a NumPy network, inputs in ``[0, 1)`` and integer labels.

    The network has ``depth`` blocks of input and hidden width ``width``,
    learned shortcuts, biases and relu; the last block maps to 10 classes.
    """
    model = resgrad.ResidualMLP.init(
        [width] * depth + [CLASSES], seed=seed, dtype=dtype, alpha=depth**-0.5
    )
    rng = np.random.default_rng(seed + 1)
    x = rng.uniform(size=(batch, width)).astype(dtype)
    y = rng.integers(0, CLASSES, size=batch)
    return model, x, y


def to_torch(model, x, y):
    """Return the network as resgrad arrays in torch, and ``x``, ``y`` as tensors."""
    import torch

    return model.convert(torch), torch.from_numpy(x), torch.from_numpy(y)


class Timing(NamedTuple):
    """The median and the minimum seconds per call of one contender."""

    median: float
    best: float


def compare(
    contenders: dict[str, Callable[[], object]],
    budget: float = 2.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Return the median and minimum seconds per call of each contender.

    Each contender first runs ``warmup`` times. The number of rounds fills
    about ``budget`` seconds per contender, within the given bounds.
    """
    first = {}
    for name, run in contenders.items():
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
        for _ in range(warmup - 1):
            run()
    slowest = max(first.values())
    rounds = int(min(max_rounds, max(min_rounds, budget / max(slowest, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {
        name: Timing(statistics.median(values), min(values))
        for name, values in times.items()
    }


def milliseconds(timing: Timing | float) -> str:
    """Format a time as ``median / min`` milliseconds, or one number of seconds."""
    if isinstance(timing, Timing):
        return f"{timing.median * 1e3:.3g} / {timing.best * 1e3:.3g}"
    return f"{timing * 1e3:.3g}"


def ratio(numerator: Timing | float, denominator: Timing | float) -> str:
    """Format ``numerator / denominator``, from medians and from minima."""
    if isinstance(numerator, Timing):
        median = numerator.median / denominator.median
        return f"{median:.2f}x / {numerator.best / denominator.best:.2f}x"
    return f"{numerator / denominator:.2f}x"


def versus_header(peer: str, gap: str) -> list[str]:
    """Return the column names of ``versus_row`` for ``peer`` and the name of
    the gap column."""
    return [
        "network (width, batch, blocks)",
        "dtype",
        "resgrad NumPy ms",
        "resgrad torch ms",
        "resgrad torch kernels ms",
        f"{peer} ms",
        "speed-up NumPy",
        "speed-up torch",
        "speed-up torch kernels",
        "target",
        gap,
    ]


def versus_row(
    label: str, dtype: str, times: dict, peer: str, target: str, gap: float
) -> list[str]:
    """Return a table row of resgrad on NumPy and on torch against ``peer``.

    ``times`` maps ``"resgrad NumPy"``, ``"resgrad torch"``, ``"resgrad
    torch kernels"`` and ``peer`` to their timings; the speed-ups are the
    peer's time over resgrad's.
    """
    ours = [times[name] for name in RESGRAD_CONTENDERS]
    return [
        label,
        dtype,
        *(milliseconds(timing) for timing in ours),
        milliseconds(times[peer]),
        *(ratio(times[peer], timing) for timing in ours),
        target,
        f"{gap:.1e}",
    ]


# resgrad's contenders: NumPy arrays, torch tensors as a user passes them
# (on the CPU they take the NumPy route, but for large models where torch's
# MKL runs on an Intel CPU), and torch tensors on resgrad's torch kernels
# with that route off.
RESGRAD_CONTENDERS = ("resgrad NumPy", "resgrad torch", "resgrad torch kernels")


def on_torch_kernels(run: Callable[[], object]) -> Callable[[], object]:
    """Wrap ``run`` to compute on resgrad's torch kernels, with the NumPy
    route for CPU tensors off."""
    from resgrad.torch import use_numpy_on_cpu

    def wrapped() -> object:
        previous = use_numpy_on_cpu(False)
        try:
            return run()
        finally:
            use_numpy_on_cpu(previous)

    return wrapped


def throughput(count: int, timing: Timing) -> str:
    """Format ``count`` items per call as items per second, ``median / min``."""
    return f"{count / timing.median:.0f} / {count / timing.best:.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def start(title: str, threads: int) -> None:
    """Limit the threads and print the benchmark's header."""
    set_threads(threads)
    header(title, threads)


def header(title: str, threads: int) -> None:
    """Print the benchmark's title, the date, the threads and the load."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n## {title}\n")
    print(
        f"{now}; {threads} thread(s); load average {load_average()} "
        f"on {os.cpu_count()} CPUs. Times are median / min; speed-ups are "
        "the peer's time over resgrad's, from the medians / from the minima.\n"
    )


def machine() -> str:
    """Describe the CPU, the BLAS libraries and the library versions."""
    import threadpoolctl
    import torch

    lines = [f"- Python {platform.python_version()} on {platform.platform()}"]
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True)
        for line in lscpu.stdout.splitlines():
            if line.split(":")[0] in ("Model name", "CPU(s)", "L2 cache", "L3 cache"):
                lines.append("- " + " ".join(line.split()))
    except (OSError, subprocess.CalledProcessError):
        lines.append(f"- {platform.processor()} (lscpu failed)")
    from importlib import metadata

    versions = {}
    for name in (
        "numpy",
        "torch",
        "backpack-for-pytorch",
        "torchattacks",
        "threadpoolctl",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    versions["resgrad"] = resgrad.__version__
    lines.append("- " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for pool in threadpoolctl.threadpool_info():
        lines.append(
            f"- {pool['internal_api']} {pool.get('version')} "
            f"({pool.get('architecture', '-')}) from {Path(pool['filepath']).name}"
        )
    lines.append(f"- torch BLAS: {'MKL' if torch.backends.mkl.is_available() else '?'}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"):
        lines.append(f"- {name}={os.environ.get(name, '(unset)')}")
    return "\n".join(lines)
