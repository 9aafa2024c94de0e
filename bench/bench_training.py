"""Time one training step of resgrad against PyTorch autograd.

A step is the forward pass, the mean softmax cross-entropy and every weight
gradient. resgrad runs ``resgrad.gradients(..., with_input=False)`` on NumPy
arrays and on torch tensors, the latter as a user calls it (on the CPU,
through NumPy's kernels, but for large models where torch's MKL runs on
an Intel CPU) and with ``use_numpy_on_cpu(False)`` (resgrad's torch
kernels). Autograd runs ``loss.backward()`` on the
``to_module`` copy of the same network, with ``x`` not requiring a
gradient, so neither computes ``dY/dx``.

    python bench/bench_training.py [--threads 1] [--dtypes float32 float64]
"""

from __future__ import annotations

import common

# name: (width, batch, blocks), and the speed-up over autograd aimed at.
NETWORKS = {
    "small": ((64, 64, 8), 1.5),
    "deep": ((32, 32, 100), 1.5),
    "medium": ((256, 256, 8), None),
    "wide": ((1024, 256, 4), 0.95),
}


def autograd_step(module, x, y):
    """Return a function that runs one autograd step of ``module``."""
    import torch
    import torch.nn.functional as F

    parameters = list(module.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        F.cross_entropy(module(x), y).backward()

    del torch
    return step


def max_difference(grads, module) -> float:
    """Return the largest gap between resgrad's and autograd's weight gradients."""
    gaps = []
    for name, value in module.named_arrays().items():
        gaps.append(float(abs(grads.arrays()[name] - value.grad.numpy()).max()))
    return max(gaps)


def holding(run):
    """Wrap ``run`` to keep its result until its next call starts.

    Autograd's step keeps its gradients in ``.grad`` until the next step
    sets them to ``None`` and computes new ones, and this does the same for
    resgrad. Dropped as each call returned instead, resgrad's results on
    the wide network were freed while the other contenders ran, and its
    step on the torch kernels timed 0.86x to 0.89x of autograd in float32,
    against 0.99x held. We read that as the C allocator handing the freed
    memory back to the system and the next call faulting it in again, as
    a count of page faults showed under load.
    """
    last_result = [None]

    def run_and_hold():
        last_result[0] = None
        last_result[0] = run()
        return last_result[0]

    return run_and_hold


def steps(model, x, y):
    """Return the training steps to time, keyed by name, and the module.

    resgrad's steps hold their last gradients, as autograd's does (see
    ``holding``).
    """
    from resgrad.torch import to_module

    model_t, x_t, y_t = common.to_torch(model, x, y)
    module = to_module(model)

    def torch_step():
        return common.resgrad.gradients(model_t, x_t, y_t, with_input=False)

    return module, {
        "resgrad NumPy": holding(
            lambda: common.resgrad.gradients(model, x, y, with_input=False)
        ),
        "resgrad torch": holding(torch_step),
        "resgrad torch kernels": holding(common.on_torch_kernels(torch_step)),
        "autograd": autograd_step(module, x_t, y_t),
    }


def run_case(width, batch, depth, dtype, budget):
    """Return the times of each contender and the largest gradient gap."""
    model, x, y = common.network(width, depth, batch, dtype)
    module, contenders = steps(model, x, y)
    times = common.compare(contenders, budget=budget)
    contenders["autograd"]()
    gap = max_difference(
        common.resgrad.gradients(model, x, y, with_input=False), module
    )
    return times, gap


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0], NETWORKS)
    args = parser.parse_args()
    common.start("Training step against PyTorch autograd", args.threads)
    rows = []
    for name in args.networks:
        (width, batch, depth), target = NETWORKS[name]
        for dtype in args.dtypes:
            times, gap = run_case(width, batch, depth, dtype, args.budget)
            label = f"{name} ({width}, {batch}, {depth})"
            goal = f"{target}x" if target else "-"
            rows.append(common.versus_row(label, dtype, times, "autograd", goal, gap))
    print(common.table(common.versus_header("autograd", "max grad gap"), rows))


if __name__ == "__main__":
    main()
