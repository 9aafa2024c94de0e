"""Plot the training-step time against width and depth, log-log.

At a fixed batch a step multiplies ``(batch, width)`` by ``(width, width)``
a fixed number of times per block, so its time grows as ``width^2`` once
the products dominate the per-call overhead, and as ``depth^1``. The plot
draws both slopes as dashed guides through the largest measured point.

    python bench/bench_scaling.py [--threads 1] [--output bench/bench_scaling.png]
"""

from __future__ import annotations

import common
from bench_training import steps

BATCH = 64
WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
WIDTH_DEPTH = 4
DEPTHS = (2, 4, 8, 16, 32, 64, 128)
DEPTH_WIDTH = 64


def measure(width: int, depth: int, dtype: str, budget: float) -> dict:
    model, x, y = common.network(width, depth, BATCH, dtype)
    _, runs = steps(model, x, y)
    del runs["resgrad torch"]
    return common.compare(runs, budget=budget)


def draw(axis, sizes, times, slope, label):
    for name, marker in (("resgrad NumPy", "o"), ("autograd", "s")):
        best = [t[name].best * 1e3 for t in times]
        axis.loglog(sizes, best, marker=marker, label=name)
    # The guide passes through the last resgrad point with the expected slope.
    end = times[-1]["resgrad NumPy"].best * 1e3
    guide = [end * (size / sizes[-1]) ** slope for size in sizes]
    axis.loglog(sizes, guide, "k--", linewidth=1, label=f"slope {slope}")
    axis.set_xlabel(label)
    axis.set_ylabel("step time, min of rounds (ms)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = common.parser(__doc__.splitlines()[0], dtypes=["float32"], budget=0.5)
    parser.add_argument(
        "--output",
        default=str(common.ROOT / "bench" / "bench_scaling.png"),
        help="where to write the PNG (default bench/bench_scaling.png)",
    )
    args = parser.parse_args()
    if len(args.dtypes) != 1:
        parser.error(
            f"the plot shows one dtype, got --dtypes {' '.join(args.dtypes)}; pass "
            "float32 or float64 alone"
        )
    common.start("Scaling with width and depth", args.threads)
    dtype = args.dtypes[0]
    by_width = [measure(w, WIDTH_DEPTH, dtype, args.budget) for w in WIDTHS]
    by_depth = [measure(DEPTH_WIDTH, d, dtype, args.budget) for d in DEPTHS]
    rows = [
        [f"width {w}, {WIDTH_DEPTH} blocks"]
        + [common.milliseconds(t[k]) for k in ("resgrad NumPy", "autograd")]
        for w, t in zip(WIDTHS, by_width)
    ]
    rows += [
        [f"width {DEPTH_WIDTH}, {d} blocks"]
        + [common.milliseconds(t[k]) for k in ("resgrad NumPy", "autograd")]
        for d, t in zip(DEPTHS, by_depth)
    ]
    print(common.table(["network", "resgrad NumPy ms", "autograd ms"], rows))

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    draw(left, WIDTHS, by_width, 2, f"width ({WIDTH_DEPTH} blocks, batch {BATCH})")
    draw(right, DEPTHS, by_depth, 1, f"blocks (width {DEPTH_WIDTH}, batch {BATCH})")
    figure.suptitle(f"Training step, {dtype}, {args.threads} thread(s)")
    figure.tight_layout()
    figure.savefig(args.output, dpi=80)
    print(f"\nWrote {args.output}")


if __name__ == "__main__":
    main()
