"""Run every benchmark in turn and print one Markdown report.

    python bench/run_all.py [--threads 1] [--budget 1.0] [--output FILE]

Each benchmark runs in its own process; ``--output`` also writes the report
to a file. On a 2-core machine the whole run takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import common

SCRIPTS = (
    "bench_training.py",
    "bench_flops.py",
    "bench_jacobian.py",
    "bench_per_sample.py",
    "bench_pgd.py",
    "bench_fit.py",
    "bench_scaling.py",
    "bench_reuse.py",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="seconds of timed runs per contender and case (default 1.0)",
    )
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args()
    bench_dir = Path(__file__).resolve().parent
    started = time.perf_counter()
    report = ["# resgrad benchmarks", "", common.machine()]
    print("\n".join(report), flush=True)
    for script in SCRIPTS:
        command = [
            sys.executable,
            str(bench_dir / script),
            "--threads",
            str(args.threads),
        ]
        if script != "bench_scaling.py":
            command += ["--budget", str(args.budget)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout, flush=True)
        report.append(result.stdout)
    elapsed = f"\nAll benchmarks took {time.perf_counter() - started:.0f} s."
    print(elapsed)
    if args.output:
        Path(args.output).write_text("\n".join(report) + elapsed + "\n")


if __name__ == "__main__":
    main()
