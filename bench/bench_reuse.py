"""Time NumPy-only loops with and without the allocator's raised reuse limits.

glibc gives the top of the heap back to the kernel once more than 128 KiB
of it is free, so a loop whose calls each keep a megabyte of arrays faults
in fresh pages at every call. resgrad raises that limit on its first NumPy
call (``resgrad._kernels.raise_reuse_limits``). Importing PyTorch raises it
too, as a side effect, so the other benchmarks, which all import PyTorch,
cannot show it.

Each call runs in processes of its own that never import PyTorch, as
resgrad ships ("raised") and with the limits left as glibc sets them
("glibc's"). Four processes per call run in the order raised, glibc's,
glibc's, raised, so that a change of load over the run hits both alike.
glibc raises its limits by itself when a program frees a block larger than
them, so a process that made and dropped large arrays before the loop
would no longer show its defaults. The times of both processes of a mode
are pooled. There is no peer: the figures are resgrad's own, on the small
(width 64, batch 64, 8 blocks) and medium (256, 256, 8) networks.

    python bench/bench_reuse.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import common

# name: (width, batch, blocks)
NETWORKS = {"small": (64, 64, 8), "medium": (256, 256, 8)}
# The per-sample stacks of the medium network would take 3 GiB.
CASES = {
    "small": ("gradients", "input_jacobian", "per_sample_gradients", "pgd"),
    "medium": ("gradients", "input_jacobian", "pgd"),
}
ORDER = ("raised", "default", "default", "raised")

# The code each process runs: argv[1] is the dtype, argv[2] "raised" or
# "default", argv[3] the threads, argv[4] the budget in seconds and argv[5]
# the call to time. It prints the seconds of each timed call and the minor
# page faults of all of them.
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import threadpoolctl
import common, resgrad
from resgrad import _kernels
from resgrad.attacks import pgd
dtype, mode, threads, budget, name = sys.argv[1:]
threads, budget = int(threads), float(budget)
if mode == "default":
    _kernels._reuse_limits_raised = True  # skip raise_reuse_limits
limits = threadpoolctl.threadpool_limits(threads)
model, x, y = common.network({width}, {depth}, {batch}, dtype)
call = {{
    "gradients": lambda: resgrad.gradients(model, x, y),
    "input_jacobian": lambda: resgrad.input_jacobian(model, x),
    "per_sample_gradients": lambda: resgrad.per_sample_gradients(model, x, y),
    "pgd": lambda: pgd(model, x, y, 8 / 255, alpha=2 / 255, steps=10, seed=0),
}}[name]
for _ in range(3):
    call()
times = []
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
while sum(times) < budget or len(times) < 5:
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
assert "torch" not in sys.modules
print(json.dumps([times, faults]))
"""


def run_child(
    network: str, case: str, dtype: str, mode: str, threads: int, budget: float
) -> tuple[list[float], int]:
    """Time ``case`` in a new process; return its call times and page faults."""
    width, batch, depth = NETWORKS[network]
    code = CHILD.format(
        bench=str(common.ROOT / "bench"), width=width, depth=depth, batch=batch
    )
    arguments = [dtype, mode, str(threads), str(budget), case]
    command = [sys.executable, "-c", code, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    times, faults = json.loads(result.stdout)
    return times, faults


def measure(
    network: str, case: str, dtype: str, threads: int, budget: float
) -> dict[str, tuple[common.Timing, float]]:
    """Return each mode's timing and page faults per call, over its processes."""
    times: dict[str, list[float]] = {"raised": [], "default": []}
    faults = {"raised": 0, "default": 0}
    for mode in ORDER:
        # Each process gets half the budget, as each mode runs in two.
        got, count = run_child(network, case, dtype, mode, threads, budget / 2)
        times[mode] += got
        faults[mode] += count
    return {
        mode: (
            common.Timing(statistics.median(values), min(values)),
            faults[mode] / len(values),
        )
        for mode, values in times.items()
    }


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS, budget=1.0)
    args = parser.parse_args()
    common.header(
        "NumPy-only loops, with and without raised reuse limits", args.threads
    )
    print(
        "Here the speed-up is the time with glibc's limits over the time with "
        "the raised ones.\n"
    )
    rows = []
    for network in args.networks:
        for dtype in args.dtypes:
            for case in CASES[network]:
                result = measure(network, case, dtype, args.threads, args.budget)
                (ours, our_faults), (theirs, their_faults) = (
                    result["raised"],
                    result["default"],
                )
                rows.append(
                    [
                        f"{network} {NETWORKS[network]}",
                        case,
                        dtype,
                        common.milliseconds(ours),
                        common.milliseconds(theirs),
                        common.ratio(theirs, ours),
                        f"{our_faults:.0f}",
                        f"{their_faults:.0f}",
                    ]
                )
    print(
        common.table(
            [
                "network (width, batch, blocks)",
                "call",
                "dtype",
                "raised limits ms",
                "glibc's limits ms",
                "speed-up",
                "page faults a call, raised",
                "page faults a call, glibc's",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
