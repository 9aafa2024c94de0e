"""Time one epoch of training on the digits against a PyTorch training loop.

resgrad runs ``resgrad.fit(..., epochs=1)`` with Adam on NumPy arrays and on
torch tensors, the latter both as a user calls it and on resgrad's torch
kernels. The peer is the loop a PyTorch user writes: ``torch.optim.Adam`` on
the ``to_module`` copy of the same network, with ``zero_grad``,
``F.cross_entropy(module(x), y).backward()`` and ``step`` per mini-batch,
over the mini-batches in the order that ``fit`` draws. All use the 1347
training rows of the digits (the 75% split of ``resgrad run``), mini-batches
of 32, a learning rate of 1e-3 and Adam's eps of 1e-8, as ``resgrad run``
trains.

The last column is the largest absolute difference between the weights that
``fit`` on NumPy and the PyTorch loop reach after the epoch. In float64 they
agree to rounding. In float32 the gap can grow to a sizeable part of the
epoch's 43 steps of about ``lr`` each. Adam divides the first moment by the
root of the second. So where one library computes a gradient of exactly 0
and the other a tiny rounding error, the first steps by 0 and the second by
about ``lr``.

    python bench/bench_fit.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import common
import numpy as np

# name: (sizes, hidden width)
NETWORKS = {
    "resgrad run's default": ([64, 256, 256, 10], 256),
    "small": ([64] * 8 + [10], 64),
}
LR, BATCH, SEED = 1e-3, 32, 0


def digits(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the training rows of the digits split as ``resgrad run`` splits them."""
    from resgrad.data import load_digits

    data = load_digits()
    return data.x_train.astype(dtype), data.y_train


def contenders(model, x, y):
    """Return the training epochs to time, keyed by name, and the function
    that runs the PyTorch loop once and returns its module."""
    import torch
    import torch.nn.functional as F

    from resgrad import fit
    from resgrad.torch import to_module

    model_t, x_t, y_t = common.to_torch(model, x, y)
    # The order of fit's single epoch: a permutation from a generator seeded
    # with its seed.
    order = np.random.default_rng(SEED).permutation(x.shape[0])
    batch_rows = [
        torch.as_tensor(order[start : start + BATCH])
        for start in range(0, len(order), BATCH)
    ]

    def ours(model, x, y):
        def epoch():
            return fit(
                model,
                x,
                y,
                optimizer="adam",
                lr=LR,
                epochs=1,
                batch_size=BATCH,
                seed=SEED,
                validation=None,
                patience=None,
                progress=False,
            )

        return epoch

    def pytorch_loop():
        module = to_module(model)
        optimizer = torch.optim.Adam(module.parameters(), lr=LR, eps=1e-8)
        for rows in batch_rows:
            # Gathered here, as fit gathers its batches inside its loop.
            x_batch, y_batch = x_t[rows], y_t[rows]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(module(x_batch), y_batch).backward()
            optimizer.step()
        return module

    runs = {
        "resgrad NumPy": ours(model, x, y),
        "resgrad torch": ours(model_t, x_t, y_t),
        "resgrad torch kernels": common.on_torch_kernels(ours(model_t, x_t, y_t)),
        "PyTorch loop": pytorch_loop,
    }
    return runs, pytorch_loop


def max_difference(result, module) -> float:
    """Return the largest gap between the weights of ``fit`` and the loop."""
    ours = result.model.arrays()
    theirs = module.named_arrays()
    return max(
        float(np.max(np.abs(ours[name] - value.detach().numpy())))
        for name, value in theirs.items()
    )


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS, budget=2.0)
    args = parser.parse_args()
    common.start("One epoch of training on the digits, against PyTorch", args.threads)
    import resgrad

    rows = []
    for name in args.networks:
        sizes, hidden = NETWORKS[name]
        for dtype in args.dtypes:
            x, y = digits(dtype)
            model = resgrad.ResidualMLP.init(
                sizes, hidden, seed=SEED, init="he", dtype=dtype
            )
            runs, pytorch_loop = contenders(model, x, y)
            times = common.compare(runs, budget=args.budget)
            gap = max_difference(runs["resgrad NumPy"](), pytorch_loop())
            label = f"{name} ({hidden}, {BATCH}, {len(sizes) - 1})"
            rows.append(
                common.versus_row(label, dtype, times, "PyTorch loop", "-", gap)
            )
    print(common.table(common.versus_header("PyTorch loop", "max weight gap"), rows))


if __name__ == "__main__":
    main()
