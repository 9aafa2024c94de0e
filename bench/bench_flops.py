"""Compare the achieved GFLOP/s of the wide training step with the matmul peak.

The peak is the best rate of a plain matrix product over a few shapes,
measured in the same run, with the same threads and dtype, for NumPy and
for PyTorch. Each step is compared with the peak of the library that
runs its products: NumPy for resgrad on CPU tensors, unless its torch
kernels are requested or ``tensor_backend`` finds that the model takes
them. The step's FLOP count is that of its matrix
products. Per block the forward pass multiplies by ``W1``, ``W2`` and ``W3``, and the
backward pass by each of them twice, once for the error and once for the
weight gradient. The first block needs no error for ``x``, so its products
for that error are not counted.
Elementwise work is not counted, so the rate is a lower bound.

    python bench/bench_flops.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import common
from bench_training import steps

WIDE = (1024, 256, 4)  # (width, batch, blocks)
TARGET = 0.70
# Each timed step and the library whose matrix products it runs; for
# resgrad on CPU tensors see tensor_backend.
STEP_BACKENDS = {
    "resgrad NumPy": "NumPy",
    "resgrad torch": None,
    "resgrad torch kernels": "torch",
    "autograd": "torch",
}


def tensor_backend(model, rows: int) -> str:
    """Return whose matrix products resgrad runs on CPU tensors of ``model``
    for a batch of ``rows`` rows.

    That is NumPy's, but for calls of 8 rows or more on large models where
    torch's MKL runs on an Intel CPU (see ``resgrad.torch.use_numpy_on_cpu``).
    """
    import torch

    from resgrad import _numpy_route

    largest = max(value.size for value in model.arrays().values())
    if _numpy_route.torch_kernels_faster(torch, largest, rows):
        return "torch"
    return "NumPy"


# (rows, inner, columns) of the products that set the peak.
PEAK_SHAPES = ((256, 1024, 1024), (1024, 1024, 1024))


def step_flops(model, batch: int) -> int:
    """Return the FLOPs of the matrix products in one training step."""
    total = 0
    for index, block in enumerate(model.blocks):
        products = [block.W1.shape, block.W2.shape]
        if block.W3 is not None:
            products.append(block.W3.shape)
        for rows, columns in products:
            # Forward, weight gradient, and the error for the block below.
            count = 3 if index > 0 or (rows, columns) == block.W2.shape else 2
            total += count * 2 * batch * rows * columns
    return total


def products(dtype: str) -> dict[str, tuple[object, int]]:
    """Return matrix products over ``PEAK_SHAPES`` for NumPy and PyTorch.

    Each entry maps a name such as ``"matmul NumPy 256x1024x1024"`` to a
    function of no arguments and its FLOP count.
    """
    import numpy as np
    import torch

    result = {}
    rng = np.random.default_rng(0)
    for m, k, n in PEAK_SHAPES:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
        flops = 2 * m * k * n
        result[f"matmul NumPy {m}x{k}x{n}"] = (lambda a=a, b=b: a @ b, flops)
        result[f"matmul torch {m}x{k}x{n}"] = (lambda a=a_t, b=b_t: a @ b, flops)
    return result


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    common.start("Wide training step against the matmul peak", args.threads)
    width, batch, depth = WIDE
    rows = []
    for dtype in args.dtypes:
        model, x, y = common.network(width, depth, batch, dtype)
        flops = step_flops(model, batch)
        _, runs = steps(model, x, y)
        contenders = {name: (run, flops) for name, run in runs.items()}
        contenders.update(products(dtype))
        # The steps and the plain products run interleaved, so that the load
        # from other processes hits both alike.
        times = common.compare(
            {name: run for name, (run, _) in contenders.items()}, budget=args.budget
        )
        rates = {
            name: [count / times[name].median / 1e9, count / times[name].best / 1e9]
            for name, (_, count) in contenders.items()
        }
        peaks = {}
        for backend in ("NumPy", "torch"):
            measured = [
                r for n, r in rates.items() if n.startswith(f"matmul {backend}")
            ]
            peaks[backend] = [max(r[0] for r in measured), max(r[1] for r in measured)]
        for name, backend in STEP_BACKENDS.items():
            backend = backend or tensor_backend(model, batch)
            rate, peak = rates[name], peaks[backend]
            rows.append(
                [
                    dtype,
                    name,
                    common.milliseconds(times[name]),
                    f"{rate[0]:.1f} / {rate[1]:.1f}",
                    f"{peak[0]:.1f} / {peak[1]:.1f} ({backend})",
                    f"{rate[0] / peak[0]:.0%} / {rate[1] / peak[1]:.0%}",
                    f"{TARGET:.0%}",
                ]
            )
    print(f"Step: {step_flops(model, batch) / 1e9:.2f} GFLOP of matrix products.\n")
    print(
        common.table(
            [
                "dtype",
                "step",
                "ms",
                "GFLOP/s",
                "matmul peak GFLOP/s",
                "of peak",
                "target",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
