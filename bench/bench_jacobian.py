"""Time the full input Jacobian of the logits against vmap(jacrev).

resgrad runs ``resgrad.input_jacobian(model, x)`` (shape ``(n, p_L, p_0)``)
on NumPy arrays and on torch tensors (as called, and on resgrad's torch
kernels); PyTorch runs
``torch.func.vmap(torch.func.jacrev(f))`` where ``f`` maps one sample to
the logits of the ``to_module`` copy.

    python bench/bench_jacobian.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import common

# name: (width, batch, blocks)
NETWORKS = {"small": (64, 64, 8), "deep": (32, 32, 100), "medium": (256, 256, 8)}
TARGET = 1.5


def jacrev_of(module):
    """Return a function of ``x`` with the Jacobian of every sample's logits."""
    import torch

    def logits(sample):
        return module.logits(sample[None, :])[0]

    jacobian = torch.func.vmap(torch.func.jacrev(logits))

    def run(x):
        with torch.no_grad():
            return jacobian(x)

    return run


def contenders(model, x, y):
    """Return the Jacobian functions to time, keyed by name."""
    from resgrad.torch import to_module

    model_t, x_t, _ = common.to_torch(model, x, y)
    jacrev = jacrev_of(to_module(model))

    def torch_jacobian():
        return common.resgrad.input_jacobian(model_t, x_t)

    return {
        "resgrad NumPy": lambda: common.resgrad.input_jacobian(model, x),
        "resgrad torch": torch_jacobian,
        "resgrad torch kernels": common.on_torch_kernels(torch_jacobian),
        "vmap(jacrev)": lambda: jacrev(x_t),
    }


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS)
    args = parser.parse_args()
    common.start("Input Jacobian against vmap(jacrev)", args.threads)
    rows = []
    for name in args.networks:
        width, batch, depth = NETWORKS[name]
        for dtype in args.dtypes:
            model, x, y = common.network(width, depth, batch, dtype)
            runs = contenders(model, x, y)
            times = common.compare(runs, budget=args.budget)
            gap = abs(runs["resgrad NumPy"]() - runs["vmap(jacrev)"]().numpy()).max()
            label = f"{name} ({width}, {batch}, {depth})"
            peer = "vmap(jacrev)"
            rows.append(common.versus_row(label, dtype, times, peer, f"{TARGET}x", gap))
    print(common.table(common.versus_header("vmap(jacrev)", "max gap"), rows))


if __name__ == "__main__":
    main()
