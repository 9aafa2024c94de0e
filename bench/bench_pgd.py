"""Measure the throughput of 10-step L-inf PGD against torchattacks.

resgrad runs ``resgrad.attacks.pgd`` on NumPy arrays and on torch tensors,
the latter both as a user calls it and on resgrad's torch kernels;
torchattacks runs ``torchattacks.PGD`` on the ``to_module`` copy of the same
network. All use eps 8/255, step 2/255, 10 steps and a random start, on
inputs in ``[0, 1]``.

    python bench/bench_pgd.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import common

# name: (width, batch, blocks)
NETWORKS = {"small": (64, 64, 8), "deep": (32, 32, 100), "medium": (256, 256, 8)}
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
TARGET = 2.0


def contenders(model, x, y):
    """Return the attacks to time, keyed by name."""
    import torchattacks

    from resgrad.attacks import pgd
    from resgrad.torch import to_module

    model_t, x_t, y_t = common.to_torch(model, x, y)
    attack = torchattacks.PGD(
        to_module(model), eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True
    )

    def ours(model, x, y):
        return lambda: pgd(model, x, y, EPS, alpha=ALPHA, steps=STEPS, seed=0)

    return {
        "resgrad NumPy": ours(model, x, y),
        "resgrad torch": ours(model_t, x_t, y_t),
        "resgrad torch kernels": common.on_torch_kernels(ours(model_t, x_t, y_t)),
        "torchattacks": lambda: attack(x_t, y_t),
    }


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS)
    args = parser.parse_args()
    common.start("PGD, 10 steps, against torchattacks", args.threads)
    rows = []
    ours = common.RESGRAD_CONTENDERS
    for name in args.networks:
        width, batch, depth = NETWORKS[name]
        for dtype in args.dtypes:
            model, x, y = common.network(width, depth, batch, dtype)
            times = common.compare(contenders(model, x, y), budget=args.budget)
            peer = times["torchattacks"]
            rows.append(
                [
                    f"{name} ({width}, {batch}, {depth})",
                    dtype,
                    *(common.throughput(batch, times[k]) for k in ours),
                    common.throughput(batch, peer),
                    *(common.ratio(peer, times[k]) for k in ours),
                    f"{TARGET}x" if name == "small" else "-",
                ]
            )
    print(
        common.table(
            [
                "network (width, batch, blocks)",
                "dtype",
                "resgrad NumPy samples/s",
                "resgrad torch samples/s",
                "resgrad torch kernels samples/s",
                "torchattacks samples/s",
                "ratio NumPy",
                "ratio torch",
                "ratio torch kernels",
                "target",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
