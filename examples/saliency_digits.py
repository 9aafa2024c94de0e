"""Reproduce the digits example of docs/saliency.md.

Trains ``ResidualMLP.init([64, 32, 32, 10], seed=0)`` on the training part
of the digits for 30 epochs of Adam at learning rate 0.003. There is no
validation split, so no early stopping, and ``fit``'s other options keep
their defaults. Then it runs ``resgrad saliency`` on the model and prints
every number that the page quotes:

    python examples/saliency_digits.py [--out DIR]

It writes ``model.npz`` and the output of ``resgrad saliency`` to ``--out``
(default: runs/saliency-example), whose ``saliency_sample_0.png`` is the
page's figure. It takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import resgrad
from resgrad import saliency
from resgrad.cli import main as cli
from resgrad.data import load_data
from resgrad.training import accuracy, fit

CHECK_SAMPLES = 32
TABLE_METHODS = {
    "vanilla": "gradient",
    "smoothgrad": "SmoothGrad",
    "jsma": "JSMA map",
    "input_x_gradient": "input x gradient",
    "integrated_gradients": "Integrated Gradients",
}


def train(out: Path) -> tuple[resgrad.ResidualMLP, object]:
    data = load_data()
    model = resgrad.ResidualMLP.init([64, 32, 32, 10], seed=0)
    result = fit(
        model,
        data.x_train,
        data.y_train,
        optimizer="adam",
        lr=0.003,
        epochs=30,
        validation=None,
        seed=0,
    )
    resgrad.save(result.model, out / "model.npz", metadata={"data": "digits"})
    test_accuracy = accuracy(result.model, data.x_test, data.y_test)
    print(f"test accuracy {test_accuracy:.4f} ({len(result.history)} epochs run)")
    return result.model, data


def integrated_gradients_gaps(model, x) -> None:
    predicted = np.asarray(model.predict(x))
    rows = np.arange(len(x))
    for steps in (50, 200, 1000):
        result = saliency.integrated_gradients(model, x, "all", steps=steps)
        gap = np.abs(np.asarray(result.relative_gap)[rows, predicted]).max()
        print(f"largest relative gap, {steps} Gauss-Legendre points: {gap:.1e}")


def nonzero_pixel_correlation(model, x) -> None:
    """Print the share of zero pixels and the rank correlation of
    |x * grad| on the non-zero pixels once every block is reinitialised."""
    zero = x == 0
    print(f"zero pixels: {zero.mean():.0%}")
    check = saliency.randomization_check(model, x, "input_x_gradient", init_seed=0)
    trained = np.abs(np.asarray(check.original))
    random = np.abs(np.asarray(check.randomized[-1]))
    correlations = [
        saliency.rank_correlation(trained[i][~zero[i]][None], random[i][~zero[i]][None])
        for i in range(len(x))
    ]
    print(
        f"|x * grad| on non-zero pixels, all blocks reinitialised: "
        f"{np.nanmean(correlations):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/saliency-example"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    model, data = train(out)
    x = np.asarray(data.x_test[:CHECK_SAMPLES], dtype=np.float64)
    integrated_gradients_gaps(model, x)
    nonzero_pixel_correlation(model, x)

    maps = out / "saliency"
    argv = ["saliency", "--model", str(out / "model.npz"), "--index", "0"]
    argv += ["--out", str(maps), "--overwrite", "--no-progress"]
    if cli(argv) != 0:
        raise SystemExit("resgrad saliency failed")
    summary = json.loads((maps / "saliency.json").read_text())
    print("mean spearman_abs after reinitialising block 3, blocks 2-3, blocks 1-3:")
    for method, title in TABLE_METHODS.items():
        values = summary["randomization"][method]["spearman_abs"]
        print(f"  {title:22s}" + "".join(f"{v:7.2f}" for v in values))
    deletion = summary["deletion"]
    print(
        f"deletion areas: random {deletion['vanilla']['random_auc']:.2f}, "
        + ", ".join(
            f"{title} {deletion[method]['auc']:.2f}"
            for method, title in TABLE_METHODS.items()
        )
    )


if __name__ == "__main__":
    main()
