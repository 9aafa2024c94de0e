"""Time NumPy-only loops with and without the allocator's raised reuse limits.

glibc gives the top of the heap back to the kernel once more than 128 KiB
of it is free, so a loop whose calls each keep a megabyte of arrays faults
in fresh pages at every call. resgrad raises that limit on its first NumPy
call (``resgrad._kernels.raise_reuse_limits``). Importing PyTorch raises it
too, as a side effect, so the other benchmarks, which all import PyTorch,
cannot show it. This one runs each case in a new process that
never imports PyTorch: once as resgrad ships, once with the limits left
at glibc's defaults. It prints the times, the ratio and the minor page
faults per call. There is no peer: the figures are resgrad's own, on the
small (width 64, batch 64, 8 blocks) and medium (256, 256, 8) networks.

    python bench/bench_reuse.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import json
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

# The code each process runs: argv[1] is the dtype, argv[2] "raised" or
# "default", argv[3] the threads, argv[4] the budget in seconds and argv[5]
# the calls to time, comma-separated.
CHILD = """
import json, resource, statistics, sys, time
sys.path.insert(0, {bench!r})
import threadpoolctl
import common, resgrad
from resgrad import _kernels
from resgrad.attacks import pgd
dtype, mode, threads, budget, names = sys.argv[1:]
threads, budget, names = int(threads), float(budget), names.split(",")
if mode == "default":
    _kernels._reuse_limits_raised = True  # skip raise_reuse_limits
limits = threadpoolctl.threadpool_limits(threads)
model, x, y = common.network({width}, {depth}, {batch}, dtype)
calls = {{
    "gradients": lambda: resgrad.gradients(model, x, y),
    "input_jacobian": lambda: resgrad.input_jacobian(model, x),
    "per_sample_gradients": lambda: resgrad.per_sample_gradients(model, x, y),
    "pgd": lambda: pgd(model, x, y, 8 / 255, alpha=2 / 255, steps=10, seed=0),
}}
results = {{}}
for name in names:
    call = calls[name]
    for _ in range(3):
        call()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    spent = 0.0
    while spent < budget or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    results[name] = [statistics.median(times), min(times), faults / len(times)]
assert "torch" not in sys.modules
print(json.dumps(results))
"""


def run_child(network: str, dtype: str, mode: str, threads: int, budget: float) -> dict:
    width, batch, depth = NETWORKS[network]
    code = CHILD.format(
        bench=str(common.ROOT / "bench"), width=width, depth=depth, batch=batch
    )
    names = ",".join(CASES[network])
    command = [
        sys.executable,
        "-c",
        code,
        dtype,
        mode,
        str(threads),
        str(budget),
        names,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


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
            raised = run_child(network, dtype, "raised", args.threads, args.budget)
            default = run_child(network, dtype, "default", args.threads, args.budget)
            rows += [
                row(f"{network} {NETWORKS[network]}", case, dtype, raised, default)
                for case in CASES[network]
            ]
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


def row(network: str, case: str, dtype: str, raised: dict, default: dict) -> list:
    """Return the table row of one call, from both processes' results."""
    ours, theirs = raised[case], default[case]
    return [
        network,
        case,
        dtype,
        common.milliseconds(common.Timing(*ours[:2])),
        common.milliseconds(common.Timing(*theirs[:2])),
        common.ratio(common.Timing(*theirs[:2]), common.Timing(*ours[:2])),
        f"{ours[2]:.0f}",
        f"{theirs[2]:.0f}",
    ]


if __name__ == "__main__":
    main()
