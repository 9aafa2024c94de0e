"""Time per-sample gradients and norms, and measure their peak memory.

Times: ``resgrad.per_sample_gradients`` against
``torch.func.vmap(torch.func.grad(...))`` and BackPACK's ``BatchGrad``, once
returning new stacks and once writing into those of an earlier result, and
``resgrad.per_sample_norms`` against BackPACK's ``BatchL2Grad``, all for
the summed cross-entropy on the same network. The first three run again
holding each result until the next call has returned, as a loop written
``g = f(...)`` does.

Peak memory: each method runs in a fresh subprocess. The subprocess makes
one warm-up call and calls ``malloc_trim(0)``, which hands the freed heap
back to the kernel. It then reads its resident set size (``VmRSS``), resets
the kernel's high-water mark by writing 5 to ``/proc/self/clear_refs``,
runs the method once and reads the high-water mark (``VmHWM``). The difference is the peak
memory the call added, inputs and weights excluded; it counts every
allocator (NumPy, PyTorch, BLAS buffers). For NumPy methods the subprocess
also reports tracemalloc's peak over the call, which counts NumPy's arrays
only.

    python bench/bench_per_sample.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import warnings

import common

# name: (width, batch, blocks)
NETWORKS = {"small": (64, 64, 8), "deep": (32, 32, 100), "medium": (256, 32, 8)}
# The network whose memory is measured, (width, batch, blocks).
MEMORY_NETWORK = (1024, 32, 4)
SPEED_TARGET = 2.0
MEMORY_TARGET = 5.0


def torch_methods(model, x, y):
    """Return the PyTorch contenders, each a function of no arguments."""
    import torch
    import torch.nn.functional as F
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, BatchL2Grad

    from resgrad.torch import to_module

    warnings.filterwarnings("ignore", category=UserWarning)
    _, x_t, y_t = common.to_torch(model, x, y)
    module = to_module(model)
    params = {name: value.detach() for name, value in module.named_parameters()}

    def sample_loss(values, sample, label):
        logits = torch.func.functional_call(module, values, (sample[None, :],))
        return F.cross_entropy(logits, label[None], reduction="sum")

    per_sample = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))
    extended = extend(to_module(model))
    loss = extend(torch.nn.CrossEntropyLoss(reduction="sum"))

    def release():
        for parameter in extended.parameters():
            parameter.grad_batch = parameter.batch_l2 = None
        extended.zero_grad(set_to_none=True)

    def backpack_run(extension, hold=False):
        def run():
            # BackPACK keeps its results on the parameters; drop the previous
            # call's, as the callers of the other methods drop theirs. Held,
            # each result is replaced as the backward pass reaches its
            # parameter, as in a loop that calls BackPACK again.
            if hold:
                extended.zero_grad(set_to_none=True)
            else:
                release()
            with backpack(extension()):
                loss(extended(x_t), y_t).backward()
            name = "grad_batch" if extension is BatchGrad else "batch_l2"
            return [getattr(p, name) for p in extended.parameters()]

        run.release = release
        return run

    return {
        "vmap(grad)": lambda: per_sample(params, x_t, y_t),
        "BackPACK BatchGrad": backpack_run(BatchGrad),
        "BackPACK BatchL2Grad": backpack_run(BatchL2Grad),
        "vmap(grad), held": held(lambda: per_sample(params, x_t, y_t)),
        "BackPACK BatchGrad, held": backpack_run(BatchGrad, hold=True),
    }


def held(run):
    """Return ``run`` keeping each result until its next call has returned,
    as a loop written ``g = run()`` does."""
    last_result = [None]

    def run_and_hold():
        last_result[0] = run()
        return last_result[0]

    return run_and_hold


def resgrad_methods(model, x, y):
    return {
        "resgrad gradients": lambda: common.resgrad.per_sample_gradients(model, x, y),
        "resgrad norms": lambda: common.resgrad.per_sample_norms(model, x, y),
        "resgrad gradients, held": held(
            lambda: common.resgrad.per_sample_gradients(model, x, y)
        ),
    }


def reuse_method(model, x, y):
    """Return ``per_sample_gradients`` writing into the stacks of one earlier
    result, as a loop over batches of one size can."""
    out = common.resgrad.per_sample_gradients(model, x, y)
    return {
        "resgrad gradients, out=": lambda: common.resgrad.per_sample_gradients(
            model, x, y, out=out
        )
    }


def timing_rows(args) -> tuple[list[list[str]], ...]:
    """Return the rows of the table of fresh results, of the table of
    results written into a reused ``out`` and of the table of held results."""
    rows, reuse_rows, held_rows = [], [], []
    for name in args.networks:
        width, batch, depth = NETWORKS[name]
        for dtype in args.dtypes:
            model, x, y = common.network(width, depth, batch, dtype)
            methods = resgrad_methods(model, x, y) | torch_methods(model, x, y)
            methods |= reuse_method(model, x, y)
            times = common.compare(methods, budget=args.budget)
            ours, norms = times["resgrad gradients"], times["resgrad norms"]
            reused = times["resgrad gradients, out="]
            reuse_rows.append(
                [
                    f"{name} ({width}, {batch}, {depth})",
                    dtype,
                    common.milliseconds(reused),
                    common.ratio(ours, reused),
                    common.ratio(times["vmap(grad)"], reused),
                    common.ratio(times["BackPACK BatchGrad"], reused),
                ]
            )
            held_time = times["resgrad gradients, held"]
            held_rows.append(
                [
                    f"{name} ({width}, {batch}, {depth})",
                    dtype,
                    common.milliseconds(held_time),
                    common.milliseconds(times["vmap(grad), held"]),
                    common.milliseconds(times["BackPACK BatchGrad, held"]),
                    common.ratio(times["vmap(grad), held"], held_time),
                    common.ratio(times["BackPACK BatchGrad, held"], held_time),
                ]
            )
            rows.append(
                [
                    f"{name} ({width}, {batch}, {depth})",
                    dtype,
                    common.milliseconds(ours),
                    common.milliseconds(times["vmap(grad)"]),
                    common.milliseconds(times["BackPACK BatchGrad"]),
                    common.ratio(times["vmap(grad)"], ours),
                    common.ratio(times["BackPACK BatchGrad"], ours),
                    common.milliseconds(norms),
                    common.milliseconds(times["BackPACK BatchL2Grad"]),
                    common.ratio(times["BackPACK BatchL2Grad"], norms),
                ]
            )
    return rows, reuse_rows, held_rows


def _status(key: str) -> int:
    """Return a ``/proc/self/status`` entry in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key} entry.")


def measure_memory(method: str, dtype: str, threads: int) -> dict[str, float]:
    """Run ``method`` once after a warm-up and return its added peak memory."""
    import ctypes
    import gc

    common.set_threads(threads)
    width, batch, depth = MEMORY_NETWORK
    model, x, y = common.network(width, depth, batch, dtype)
    methods = resgrad_methods(model, x, y)
    if method not in methods:
        methods = torch_methods(model, x, y)
    run = methods[method]
    run()
    # Free the warm-up's results before the resident size is read.
    getattr(run, "release", lambda: None)()
    gc.collect()
    result = {}
    if method.startswith("resgrad"):
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        run()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["tracemalloc"] = peak - before
        gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    resident = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    run()
    # One page at least, so that the ratios stay finite.
    result["rss"] = max(_status("VmHWM") - resident, 4096)
    return result


MEMORY_METHODS = (
    "resgrad norms",
    "resgrad gradients",
    "BackPACK BatchL2Grad",
    "BackPACK BatchGrad",
    "vmap(grad)",
)


def memory_rows(args) -> list[list[str]]:
    rows = []
    for dtype in args.dtypes:
        peaks = {}
        for method in MEMORY_METHODS:
            command = [sys.executable, __file__, "--memory-of", method]
            command += ["--dtypes", dtype, "--threads", str(args.threads)]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            peaks[method] = json.loads(output.stdout.splitlines()[-1])
        materialised = peaks["resgrad gradients"]["rss"]
        for method in MEMORY_METHODS:
            peak = peaks[method]
            traced = peak.get("tracemalloc")
            rows.append(
                [
                    dtype,
                    method,
                    f"{peak['rss'] / 2**20:.1f}",
                    f"{traced / 2**20:.1f}" if traced is not None else "-",
                    common.ratio(materialised, peak["rss"]),
                ]
            )
    return rows


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS)
    parser.add_argument(
        "--memory-of",
        choices=MEMORY_METHODS,
        help="measure one method's peak memory and print it as JSON (used "
        "by the script itself, once per subprocess)",
    )
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.dtypes[0], args.threads)))
        return
    common.start("Per-sample gradients and norms", args.threads)
    rows, reuse_rows, held_rows = timing_rows(args)
    print(
        common.table(
            [
                "network (width, batch, blocks)",
                "dtype",
                "resgrad ms",
                "vmap(grad) ms",
                "BatchGrad ms",
                "speed-up vs vmap",
                "speed-up vs BatchGrad",
                "resgrad norms ms",
                "BatchL2Grad ms",
                "norms speed-up",
            ],
            rows,
        )
    )
    print(f"\nTarget: {SPEED_TARGET}x against vmap(grad) and BatchGrad.")
    print(
        "\nThe same calls, with resgrad writing into the stacks of an earlier "
        "result (out=):\n"
    )
    print(
        common.table(
            [
                "network (width, batch, blocks)",
                "dtype",
                "resgrad out= ms",
                "speed-up vs fresh resgrad",
                "speed-up vs vmap",
                "speed-up vs BatchGrad",
            ],
            reuse_rows,
        )
    )
    print(
        "\nThe same calls, each result held until the next call has returned, "
        "as a loop written g = f(...) does:\n"
    )
    print(
        common.table(
            [
                "network (width, batch, blocks)",
                "dtype",
                "resgrad held ms",
                "vmap(grad) held ms",
                "BatchGrad held ms",
                "speed-up vs vmap",
                "speed-up vs BatchGrad",
            ],
            held_rows,
        )
    )
    if args.skip_memory:
        return
    width, batch, depth = MEMORY_NETWORK
    print(
        f"\nPeak memory added by one call, width {width}, batch {batch}, "
        f"{depth} blocks (MiB):\n"
    )
    print(
        common.table(
            [
                "dtype",
                "method",
                "peak RSS MiB",
                "tracemalloc MiB",
                "resgrad gradients / method",
            ],
            memory_rows(args),
        )
    )
    print(
        f"\nTarget: resgrad norms use {MEMORY_TARGET}x less memory than the "
        "materialised per-sample gradients."
    )


if __name__ == "__main__":
    main()
