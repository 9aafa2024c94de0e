"""``resgrad depth``: why residual networks keep their gradients with depth.

The command sweeps depths, widths and architectures at initialisation,
stacks identity blocks on a random network (the limit of the manuscript
"Explicit Matrix Gradient Expression for Residual Network"), and on request
reproduces two published results and trains classifiers on the digits. It
writes ``depth.json`` with every figure and PNG plots into ``--out``.
``report_section`` gives ``resgrad run`` a small version of the same.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._arrays import first_repeat, parse_names
from ..data import _available_memory
from ..io import json_text
from ._common import (
    RunContext,
    Section,
    Typed,
    add_overwrite_argument,
    check_figures_installed,
    check_output_file,
    check_output_folder,
    folder_path,
    non_negative_int,
    positive_int,
    progress_bar,
    typed_options,
    write_atomic,
    write_figure,
    writing_into,
)
from ._common import (
    pyplot as _pyplot,
)

JSON_NAME = "depth.json"
IDENTITY_ACTIVATIONS = ("relu", "sigmoid", "tanh")
# The options that only --trained reads.
TRAINED_OPTIONS = ("trained_depths", "trained_width", "epochs")
# The test rows that probe each trained classifier.
TRAINED_SAMPLES = 64
BRANCH_GAIN_CASES = (
    (1.0, 1),
    (1.0, 2),
    (1.0, 5),
    (1.0, 10),
    (None, 10),
    (None, 100),
    (None, 1000),
    (0.0, 10),
)
# Relu layers of the plain networks; a plain block is two layers.
PENNINGTON_LAYERS = (2, 8, 16, 32)
PENNINGTON_WIDTH = 512
# The normalised variance that critical_relu_moments predicts for L relu
# layers: one per relu mask, plus one per Gaussian weight matrix.
PENNINGTON_PREDICTIONS = {
    ("he", "output"): "$2L$",
    ("he", "logits"): "$2L - 1$",
    ("orthogonal", "output"): "$L$",
    ("orthogonal", "logits"): "$L - 1$",
}
REPORT_DEPTHS = (1, 4, 16, 64)
REPORT_WIDTH = 32
# The deepest network of the run report whose Jacobian spectrum is drawn.
REPORT_SPECTRUM_DEPTH = 16
REPORT_IDENTITY_BLOCKS = (0, 1, 4, 16)
# The line printed under the numbers when one of them is not finite.
ZERO_NORM_NOTE = (
    "-inf, inf, 0/0: a norm is exactly 0 in float64 (every relu unit off, or "
    "underflow), so its log10 is -inf, and a ratio of two such norms is 0/0. "
    "depth.json has null there, and the plots leave those points out."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "depth",
        help="measure how gradients change with depth, with and without shortcuts",
        description="Measure the per-block gradient norms, the first-to-last "
        "ratio and the Jacobian's singular values of residual, plain and "
        "scaled networks over depth, stack identity blocks on a random "
        "network, and write depth.json and PNG plots. With the defaults it "
        "took about a minute on an idle 2-core machine.",
    )
    _add_sweep_arguments(parser)
    _add_study_arguments(parser)
    parser.add_argument(
        "--out",
        type=folder_path,
        default=Path("runs/depth"),
        help="the folder for depth.json and the plots, absent or empty unless "
        "--overwrite is given (default: runs/depth)",
    )
    add_overwrite_argument(parser)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar, and the progress lines printed in its "
        "place when standard error is not a terminal",
    )
    parser.set_defaults(handler=run_depth)


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    from ..activations import ACTIVATIONS
    from ..depth import ARCHITECTURES

    parser.add_argument(
        "--depths",
        type=_int_list,
        default=[1, 4, 16, 64, 256, 1024],
        help="comma-separated numbers of blocks (default: 1,4,16,64,256,1024)",
    )
    parser.add_argument(
        "--widths",
        type=_int_list,
        default=[64, 256],
        help="comma-separated block widths p = q (default: 64,256)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=4, help="networks per case (default: 4)"
    )
    parser.add_argument(
        "--arch",
        default="residual,plain,scaled",
        help=f"comma-separated architectures out of {','.join(ARCHITECTURES)}, "
        "or all (default: residual,plain,scaled)",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=16,
        help="probe inputs per network of the sweep; the identity-block study "
        f"probes {IDENTITY_ROWS} and the trained classifiers {TRAINED_SAMPLES} "
        "(default: 16)",
    )
    parser.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        default="relu",
        help="the activation inside the blocks of the sweep; the identity-block "
        "study uses relu, sigmoid and tanh, and the trained classifiers relu "
        "(default: relu)",
    )
    parser.add_argument(
        "--post-activation",
        choices=sorted(ACTIVATIONS),
        default=None,
        help="the activation between the blocks of the sweep (default: the same "
        "as --activation; 'identity' gives unnormalised blocks x + W2 g(W1 x))",
    )
    parser.add_argument(
        "--init",
        choices=["he", "glorot", "orthogonal"],
        default="he",
        help="the weight distribution of the sweep; the identity-block study "
        "and the trained classifiers draw he weights (default: he)",
    )
    parser.add_argument(
        "--spectrum-depth",
        type=non_negative_int,
        default=64,
        help="the largest depth whose Jacobian singular values are computed; "
        "0 skips them (default: 64)",
    )
    parser.add_argument(
        "--jacobian-mode",
        choices=["auto", "reverse", "forward", "product"],
        default="auto",
        help="how J is formed for the spectrum: 'product' multiplies the Q^l and "
        "D^l matrices of Theorem 1, the others run the recurrence (default: auto)",
    )


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--identity-blocks",
        type=_int_list_with_zero,
        default=[0, 1, 4, 16, 64, 256],
        help="comma-separated numbers of identity blocks stacked on a random "
        "4-block network (default: 0,1,4,16,64,256)",
    )
    parser.add_argument(
        "--identity-width",
        type=positive_int,
        default=64,
        help="the width of the identity-block study (default: 64)",
    )
    parser.add_argument(
        "--published",
        action="store_true",
        help="also reproduce the growth of unnormalised residual blocks and the "
        "Jacobian spectrum of Pennington et al. (2017); takes a few minutes",
    )
    parser.add_argument(
        "--trained",
        action="store_true",
        help="also train classifiers on the digits and measure them after training",
    )
    parser.add_argument(
        "--trained-depths",
        action=Typed,
        type=_int_list,
        default=[1, 4, 16],
        help="comma-separated depths of the trained classifiers (default: 1,4,16)",
    )
    parser.add_argument(
        "--trained-width",
        action=Typed,
        type=positive_int,
        default=64,
        help="the block width of the trained classifiers (default: 64)",
    )
    parser.add_argument(
        "--epochs",
        action=Typed,
        type=positive_int,
        default=5,
        help="the maximum number of training epochs of each classifier, which "
        "trains with fit's defaults: 10%% of its rows held out for validation, "
        "and a stop after 10 epochs without a lower validation loss "
        "(default: 5)",
    )


# Argument types.


def _int_list(value: str) -> list[int]:
    return _unique(value, [positive_int(item) for item in _items(value)])


def _int_list_with_zero(value: str) -> list[int]:
    return _unique(value, [non_negative_int(item) for item in _items(value)])


def _unique(value: str, numbers: list[int]) -> list[int]:
    """Return ``numbers`` parsed from ``value``, which must not repeat one."""
    repeated = first_repeat(numbers)
    if repeated is not None:
        raise argparse.ArgumentTypeError(
            f"repeated value {repeated} in {value!r}; give each value once"
        )
    return numbers


def _items(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    if not all(items):
        raise argparse.ArgumentTypeError(
            f"empty item in {value!r}; remove the extra comma"
        )
    return items


# The command.


def run_depth(args: argparse.Namespace) -> int:
    from .. import depth

    # Read here rather than by argparse, which would name the option twice.
    # A repeated architecture would pool its networks twice over, as a
    # repeated depth or width would.
    args.arch = parse_names(args.arch, "--arch", depth.ARCHITECTURES, unique=True)
    if not args.trained:
        changed = typed_options(args, TRAINED_OPTIONS)
        if changed:
            verb, pronoun = (
                ("applies", "it") if len(changed) == 1 else ("apply", "them")
            )
            raise ValueError(
                f"{', '.join(changed)} {verb} only to the trained classifiers; "
                f"add --trained, or drop {pronoun}."
            )
    folder = check_output_folder(args.out, args.overwrite)
    spectrum = args.spectrum_depth >= min(args.depths)
    names = figure_names(args.widths, spectrum, args.published, args.trained)
    for name in (JSON_NAME, *names):
        check_output_file(folder.path / name)
    _check_memory(args)
    check_figures_installed()
    progress = progress_bar(not args.no_progress, log_start=True)
    try:
        sweep = depth.depth_sweep(
            args.depths,
            args.widths,
            args.arch,
            args.seeds,
            samples=args.samples,
            activation=args.activation,
            post_activation=args.post_activation,
            init=args.init,
            spectrum_depth=args.spectrum_depth,
            jacobian_mode=args.jacobian_mode,
            progress=progress,
        )
    except depth.DepthOverflowError as error:
        raise ValueError(_overflow_message(error)) from None
    except depth.SpectrumMemoryError as error:
        below = (
            f", or a --spectrum-depth below {error.depth}" if error.depth > 1 else ""
        )
        raise ValueError(
            f"Not enough memory for the singular values of the Jacobian of "
            f"{error.network} ({error.reason}); pass --spectrum-depth 0 to skip "
            f"them{below}."
        ) from None
    limits = _identity_study(
        args.identity_blocks, args.identity_width, args.seeds, progress
    )
    published = _published(progress) if args.published else None
    trained = _trained(args, progress) if args.trained else None
    with writing_into(folder, "depth") as out:
        networks = _networks_text(args.activation, args.post_activation, args.init)
        files = write_figures(out, sweep, limits, published, trained, networks=networks)
        document = {
            "settings": _settings(args),
            "sweep": [result.to_dict() for result in sweep],
            "identity_limit": {
                name: [r.to_dict() for r in results] for name, results in limits.items()
            },
            "published": published,
            "trained": (
                [r.to_dict() for r in trained] if trained is not None else None
            ),
            "files": files,
        }
        write_atomic(out / JSON_NAME, json_text(document, indent=1))
    print(_summary(sweep, limits, published, trained))
    print(f"wrote {out}/ ({JSON_NAME}, {', '.join(files)})")
    return 0


def _overflow_message(error) -> str:
    """Name the options that avoid the sweep's overflow ``error``."""
    from ..depth import HOMOGENEOUS_ACTIVATIONS

    where = error.location()
    if error.rescaled:
        return (
            f"{where}, within one segment of {error.segment} blocks between "
            "rescalings; pass smaller --depths, or --arch scaled or zero, whose "
            "branches are scaled down."
        )
    homogeneous = ", ".join(HOMOGENEOUS_ACTIVATIONS)
    return (
        f"{where}. Its --activation or --post-activation is not positively "
        "homogeneous, so the study cannot rescale it between blocks; pass "
        f"--depths below {error.block}, --arch scaled or zero, whose branches "
        "are scaled down, or --activation and --post-activation out of "
        f"{homogeneous}."
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "depths",
        "widths",
        "seeds",
        "arch",
        "samples",
        "activation",
        "post_activation",
        "init",
        "spectrum_depth",
        "jacobian_mode",
        "identity_blocks",
        "identity_width",
        "published",
        "trained",
    )
    settings = {name: getattr(args, name) for name in names}
    # None stands for the same function as --activation.
    settings["post_activation"] = args.post_activation or args.activation
    # --samples, --activation, --post-activation and --init set the sweep
    # only, so the values of the other studies are recorded beside them.
    settings["identity_study"] = {
        "samples": IDENTITY_ROWS,
        "activations": list(IDENTITY_ACTIVATIONS),
        "init": "he",
    }
    if args.trained:
        settings.update({name: getattr(args, name) for name in TRAINED_OPTIONS})
        settings["trained_study"] = {
            "samples": TRAINED_SAMPLES,
            "activation": "relu",
            "init": "he",
        }
    return settings


# Bytes per block beside its arrays and trace, mostly the Block and array
# objects. tracemalloc on depth_sweep at width 4 and 16 samples measured
# about 5,200 bytes per block in all, at 2,000 and at 20,000 blocks, of
# which the weights and the 16-row trace make about 2,300.
BLOCK_OVERHEAD = 4096

# The rows that the identity study probes, and a bound on the rows that a
# trained classifier passes at once: all rows of the digits set.
IDENTITY_ROWS = 16
TRAINED_ROWS = 1797

# Arrays of shape (rows, width) that gradient_profile holds beside those of
# the blocks: the probes x and v, and temporaries. tracemalloc on
# depth_sweep at width 32 on 2,000 samples measured 12.4 such arrays in all
# at 1 block, 393 at 64 blocks and 4.2 more per block beyond, which the
# count of _network_bytes exceeds at every depth.
PROFILE_ARRAYS = 16
# Values per block and row: four log10 norms and their temporaries.
NORMS_PER_BLOCK = 8
# Arrays of shape (width, width) per sample that the Jacobian and its SVD
# hold at once. tracemalloc measured about 3 at widths 1000 and 2000, and
# ru_maxrss about a quarter more for LAPACK's workspace.
JACOBIAN_ARRAYS = 5
# The rows of the sweep whose Jacobian is formed, depth_sweep's default.
SPECTRUM_ROWS = 1


def _network_bytes(
    blocks: int, width: int, rows: int, *, spectrum: bool = False, trained=False
) -> int:
    """Estimate the peak bytes of measuring the gradients of one network of
    ``blocks`` blocks of ``width`` on ``rows`` rows, erring high.

    The forward trace contains ``a^{l-1}``, ``u``, ``h`` and ``z`` of every
    block, each of shape ``(rows, width)``. The backward pass keeps the
    errors ``e`` and ``e_hat`` of at most two segments at once, and the log10
    norms of each block and row. ``spectrum`` adds the Jacobian and its
    SVD, and ``trained`` the gradient and Adam's two moments, three more
    copies of the weights.
    """
    from ..depth import SEGMENT_BLOCKS

    weights = 8 * (3 * width * width + 2 * width)
    if trained:
        weights *= 4
    arrays = 4 * blocks + 2 * min(blocks, 2 * SEGMENT_BLOCKS) + PROFILE_ARRAYS
    per_row = 8 * (arrays * width + NORMS_PER_BLOCK * blocks)
    jacobian = SPECTRUM_ROWS * JACOBIAN_ARRAYS * 8 * width * width if spectrum else 0
    return blocks * (weights + BLOCK_OVERHEAD) + rows * per_row + jacobian


def _memory_cases(args: argparse.Namespace) -> list[tuple[str, int, str, str]]:
    """Return, for the largest network of each study, the options that set
    it, the estimated bytes, what the estimate covers and the fix."""
    depth, width = max(args.depths), max(args.widths)
    # Every seed's four log10 norms per block and sample stay until the end.
    norm_bytes = 8 * 4 * args.seeds * args.samples * sum(args.depths)
    norm_bytes *= len(args.widths) * len(args.arch)

    network_bytes = _network_bytes(depth, width, args.samples)
    if norm_bytes > network_bytes:
        covered = (
            "for the norms kept of every seed, block and sample, and one "
            f"network of --depths {depth} at --widths {width} (an estimate)"
        )
        largest = (
            f"--seeds {args.seeds} on --samples {args.samples}",
            covered,
            (
                "pass fewer seeds or samples (the norms also grow with "
                "--depths, --widths and --arch)"
            ),
        )
    else:
        largest = (
            f"--depths {depth} at --widths {width}",
            f"for one network on --samples {args.samples} (an estimate)",
            "pass fewer blocks, a smaller width or fewer samples",
        )
    cases = [(largest[0], network_bytes + norm_bytes, *largest[1:])]

    spectra = [d for d in args.depths if d <= args.spectrum_depth]
    if spectra:
        deepest = max(spectra)
        needed = _network_bytes(deepest, width, args.samples, spectrum=True)
        fix = "pass --spectrum-depth 0 to skip them"
        if deepest > min(args.depths):
            fix += f", a --spectrum-depth below {deepest}"
        covered = (
            "for one network and the singular values of its Jacobian "
            f"{width} x {width} (an estimate)"
        )
        cases.append(
            (
                f"--depths {deepest} at --widths {width}",
                needed + norm_bytes,
                covered,
                f"{fix}, or a smaller width",
            )
        )

    identity = max(args.identity_blocks)
    cases.append(
        (
            f"--identity-blocks {identity} at --identity-width {args.identity_width}",
            # Stacked on a network of 4 blocks.
            _network_bytes(identity + 4, args.identity_width, IDENTITY_ROWS),
            "for one network (an estimate)",
            "pass fewer identity blocks or a smaller width",
        )
    )

    if args.trained:
        trained = max(args.trained_depths)
        cases.append(
            (
                f"--trained-depths {trained} at --trained-width {args.trained_width}",
                _network_bytes(trained, args.trained_width, TRAINED_ROWS, trained=True),
                "for one network (an estimate)",
                "pass fewer blocks or a smaller width",
            )
        )
    return cases


def _check_memory(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` before any work when the largest network of the
    study would not fit in the memory available, which would otherwise end
    with the kernel killing the process."""
    available = _available_memory()
    if available is None:
        return
    for option, needed, covered, fix in _memory_cases(args):
        if needed > available:
            raise ValueError(
                f"{option} needs about {needed / 2**30:.1f} GiB {covered}, more "
                f"than the {available / 2**30:.1f} GiB of memory available; "
                f"{fix}."
            )


def _identity_study(blocks, width, seeds, progress) -> dict[str, list]:
    from ..depth import identity_limit

    return {
        activation: identity_limit(
            activation,
            blocks,
            width=width,
            seeds=seeds,
            samples=IDENTITY_ROWS,
            init="he",
            progress=progress,
        )
        for activation in IDENTITY_ACTIVATIONS
    }


def _published(progress) -> dict[str, Any]:
    """Run both reproductions, with the settings documented in docs/depth.md."""
    from .. import depth

    gains = [
        depth.branch_gain(alpha, L, width=256, seeds=8)
        for alpha, L in progress(BRANCH_GAIN_CASES, desc="branch gain")
    ]
    cases = [(i, n) for i in ("he", "orthogonal") for n in PENNINGTON_LAYERS]
    spectra = []
    for init, layers in progress(cases, desc="Jacobian spectra"):
        blocks = layers // 2
        moments = depth.jacobian_moments(blocks, PENNINGTON_WIDTH, init, seeds=8)
        means = depth.mean_jacobian_eigenvalue(blocks, PENNINGTON_WIDTH, init, seeds=24)
        for target in ("output", "logits"):
            predicted = depth.critical_relu_moments(blocks, init, target == "output")
            spectra.append(
                {
                    "init": init,
                    "depth": blocks,
                    "layers": layers,
                    "width": PENNINGTON_WIDTH,
                    "jacobian": target,
                    "measured": moments[target],
                    "mean_by_recurrence": means[target],
                    "predicted": predicted,
                }
            )
    return {"branch_gain": gains, "jacobian": spectra}


def _trained(args, progress) -> list:
    from ..data import load_digits
    from ..depth import trained_sweep

    return trained_sweep(
        load_digits(),
        args.trained_depths,
        args.trained_width,
        args.arch,
        args.seeds,
        epochs=args.epochs,
        samples=TRAINED_SAMPLES,
        progress=progress,
    )


# Text output.


def _log10_text(value: float | None, digits: int = 2) -> str:
    """Format a base-10 logarithm of a norm, or of a ratio of two norms.

    A norm that is exactly 0 has log10 -inf, and a ratio of two such norms
    is NaN, printed as ``0/0``. ``None`` (no result) prints as ``-``. A value
    that rounds to zero prints without a sign.
    """
    if value is None:
        return "-"
    if math.isnan(value):
        return "0/0"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    text = f"{value:.{digits}f}"
    # Rounding keeps the sign of a small negative value, as in "-0.00".
    if float(text) == 0:
        text = text.lstrip("-")
    return text


def _summary(sweep, limits, published, trained) -> str:
    # The input gain shows explosion and vanishing, which the ratio of
    # weight gradients can hide, so it comes first.
    tables = [
        (
            "log10 E||dY/dx||^2, over every seed and sample:",
            lambda r: r.log10_input_gain(),
        ),
        (
            (
                "log10 first-to-last ratio ||dY/dW^{12}|| / ||dY/dW^{L2}|| (rms "
                "over seeds and samples):"
            ),
            lambda r: r.log10_ratio("W2"),
        ),
    ]
    lines = []
    printed = []
    depths = sorted({r.depth for r in sweep})
    for title, value in tables:
        lines.append(title)
        lines.append("  width arch      " + "".join(f"{d:>9}" for d in depths))
        for (width, arch), group in _groups(sweep).items():
            by_depth = {r.depth: value(r) for r in group}
            printed += by_depth.values()
            cells = "".join(f"{_log10_text(by_depth.get(d)):>9}" for d in depths)
            lines.append(f"  {width:5d} {arch:9s}{cells}")
    lines.append("log10 ||dY/dW^{11}|| with k identity blocks on top:")
    for activation, results in limits.items():
        values = [float(r.blocks["W1"].rms[0]) for r in results]
        printed += values
        cells = ", ".join(
            f"k={r.identity_blocks}: {_log10_text(value)}"
            for r, value in zip(results, values)
        )
        lines.append(f"  {activation}: {cells}")
    if not all(math.isfinite(value) for value in printed):
        lines.append(f"  {ZERO_NORM_NOTE}")
    if published is not None:
        lines += _published_lines(published)
    if trained is not None:
        lines.append("trained classifiers (test accuracy):")
        for r in trained:
            if r.stage == "trained":
                lines.append(f"  {r.arch} L={r.depth}: {r.accuracy:.3f}")
    return "\n".join(lines)


def _published_lines(published) -> list[str]:
    lines = ["E||dY/dx_0||^2 / ||dY/dx_L||^2 of x + alpha W2 relu(W1 x):"]
    for g in published["branch_gain"]:
        lines.append(
            f"  alpha={g['alpha']:.4f} L={g['depth']}: measured {g['measured']:.4g} "
            f"+- {g['standard_error']:.2g}, (1 + 2 alpha^2)^L = {g['predicted']:.4g}"
        )
    lines.append("eigenvalues of J J^T, plain relu network (mean, variance/mean^2):")
    for s in published["jacobian"]:
        m, p = s["measured"], s["predicted"]
        lines.append(
            f"  {s['init']:10s} {s['layers']:2d} layers {s['jacobian']:7s}: mean "
            f"{s['mean_by_recurrence']['mean']:.3f} (predicted {p['mean']:.0f}), "
            f"normalised variance {m['normalised_variance']:.2f} "
            f"(predicted {p['normalised_variance']:.0f})"
        )
    return lines


def _groups(results) -> dict[tuple[int, str], list]:
    """Group ``results`` by width and architecture, each group by depth.

    The depths come in the order given, and the lines of a plot must not
    zigzag back.
    """
    groups: dict[tuple[int, str], list] = {}
    for r in sorted(results, key=lambda r: r.depth):
        groups.setdefault((r.width, r.arch), []).append(r)
    return groups


# Figures.


def _save(figure, path: Path) -> None:
    write_figure(path, figure, dpi=90)


def figure_names(
    widths: Sequence[int],
    spectrum: bool,
    published: bool = False,
    trained: bool = False,
) -> list[str]:
    """Return the names of the figures that ``write_figures`` draws for a
    sweep over ``widths``, with singular values where ``spectrum``."""
    names = []
    for width in sorted(set(widths)):
        names.append(f"depth_norms_w{width}.png")
        if spectrum:
            names.append(f"depth_spectrum_w{width}.png")
    names += ["depth_ratio.png", "depth_identity.png"]
    if published:
        names.append("depth_published.png")
    if trained:
        names.append("depth_trained.png")
    return names


def write_figures(
    out: Path, sweep, limits, published=None, trained=None, *, networks: str
) -> list[str]:
    """Draw every plot into ``out`` and return the file names written.

    ``networks`` describes the networks of ``sweep`` (``_networks_text``),
    and goes into the title of each of its plots.
    """
    files = []
    for width in sorted({r.width for r in sweep}):
        group = [r for r in sweep if r.width == width]
        name = f"depth_norms_w{width}.png"
        _save(_norms_figure(group, width, networks), out / name)
        files.append(name)
        if any(r.spectrum is not None for r in group):
            name = f"depth_spectrum_w{width}.png"
            _save(_spectrum_figure(group, width, networks), out / name)
            files.append(name)
    _save(_ratio_figure(sweep, networks), out / "depth_ratio.png")
    _save(_identity_figure(limits), out / "depth_identity.png")
    files += ["depth_ratio.png", "depth_identity.png"]
    if published is not None:
        _save(_published_figure(published), out / "depth_published.png")
        files.append("depth_published.png")
    if trained is not None:
        _save(_trained_figure(trained), out / "depth_trained.png")
        files.append("depth_trained.png")
    return files


def _networks_text(activation: str, post_activation: str | None, init: str) -> str:
    """Return the line that names the sweep's activations and weights in
    its plots, so that they cannot pass for those of another sweep."""
    post_activation = post_activation or activation
    return f"activation {activation}, post-activation {post_activation}, init {init}"


def _title_networks(figure, networks: str | None, title: str = "") -> None:
    """Give ``figure`` the title ``title``, followed by ``networks`` if any."""
    lines = [line for line in (title, networks) if line]
    if lines:
        figure.suptitle("\n".join(lines), fontsize=9)


def _depth_colours(depths):
    plt = _pyplot()
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(depths), 1)))
    return dict(zip(depths, colours))


def _norms_figure(results, width, networks=None):
    plt = _pyplot()
    archs = list(dict.fromkeys(r.arch for r in results))
    colours = _depth_colours(sorted({r.depth for r in results}))
    figure, axes = plt.subplots(
        2, len(archs), figsize=(3.6 * len(archs), 5.6), squeeze=False, sharex=True
    )
    rows = (
        ("W2", r"$\log_{10}\|\partial Y/\partial W^{l2}\|_F$"),
        ("error", r"$\log_{10}\|\partial Y/\partial z^l\|$"),
    )
    for column, arch in enumerate(archs):
        for row, (name, label) in enumerate(rows):
            ax = axes[row, column]
            dropped = []
            of_arch = [r for r in results if r.arch == arch]
            for r in sorted(of_arch, key=lambda r: r.depth):
                _band(ax, r.blocks[name], colours[r.depth], f"L={r.depth}")
                zeros = int(np.sum(~np.isfinite(r.blocks[name].rms)))
                if zeros:
                    dropped.append(f"L={r.depth}: {zeros} of {r.depth} blocks")
            ax.set_xscale("log")
            ax.set(ylabel=label if column == 0 else None)
            if row == 0:
                ax.set_title(f"{arch}, width {width}")
            else:
                ax.set_xlabel("block $l$")
            if dropped:
                _note_dropped(ax, dropped)
    axes[0, 0].legend(fontsize=8, title="blocks", title_fontsize=8)
    _title_networks(
        figure,
        networks,
        "gradient norms per block, networks of L blocks: lines are the root "
        "mean square over seeds and samples,\nbands the range of the seeds' "
        "own values (the legend holds for every panel)",
    )
    figure.tight_layout()
    return figure


def _band(ax, summary, colour, label):
    blocks = np.arange(1, summary.rms.shape[0] + 1)
    ax.plot(blocks, summary.rms, color=colour, label=label, lw=1.2)
    # A line leaves out a finite point whose neighbours are not finite, as
    # in a network of one block or one whose other norms are exactly 0.
    isolated = _isolated(summary.rms)
    if isolated.any():
        ax.plot(
            blocks[isolated],
            summary.rms[isolated],
            "o",
            color=colour,
            ms=3,
            label="_nolegend_",
        )
    if blocks.shape[0] > 1:
        ax.fill_between(
            blocks, summary.low, summary.high, color=colour, alpha=0.2, lw=0
        )


def _isolated(values: np.ndarray) -> np.ndarray:
    """Return a mask of the finite ``values`` with no finite neighbour."""
    finite = np.isfinite(values)
    padded = np.pad(finite, 1, constant_values=False)
    return finite & ~padded[:-2] & ~padded[2:]


def _ratio_figure(results, networks=None):
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    styles = ["-", "--", ":", "-."]
    widths = sorted({r.width for r in results})
    archs = list(dict.fromkeys(r.arch for r in results))
    panels = (
        (
            lambda r: r.log10_ratio("W2"),
            r"$\|\partial Y/\partial W^{12}\| \,/\, \|\partial Y/\partial W^{L2}\|$",
        ),
        (
            lambda r: r.log10_ratio("error"),
            r"$\|\partial Y/\partial z^1\| \,/\, \|\partial Y/\partial z^L\|$",
        ),
        (
            lambda r: r.log10_input_gain(),
            r"$E\|\partial Y/\partial x\|^2$, unit $\partial Y/\partial a^L$",
        ),
    )
    # Per panel, the points that a norm of exactly 0 leaves out.
    dropped: list[list[str]] = [[] for _ in panels]
    for (width, arch), group in _groups(results).items():
        depths = [r.depth for r in group]
        style = {
            "linestyle": styles[widths.index(width) % len(styles)],
            "color": f"C{archs.index(arch)}",
            "marker": "o",
            "ms": 3,
            "label": f"{arch}, width {width}",
        }
        for ax, (value, _), names in zip(axes, panels, dropped):
            values = [value(r) for r in group]
            ax.plot(depths, values, **style)
            names += [
                f"{arch}, width {width}, L={r.depth}: {_log10_text(v)}"
                for r, v in zip(group, values)
                if not math.isfinite(v)
            ]
    for ax, (_, title), names in zip(axes, panels, dropped):
        ax.set(xscale="log", xlabel="blocks $L$", ylabel="$\\log_{10}$", title=title)
        if names:
            _note_dropped(ax, names)
    axes[-1].legend(fontsize=8)
    _title_networks(figure, networks)
    figure.tight_layout()
    return figure


def _note_dropped(ax, names: list[str], max_listed: int = 4) -> None:
    """Name under ``ax`` the points left out because a norm is exactly 0.

    The names go into the x label, which the layout keeps clear of the data.
    """
    lines = names[:max_listed]
    if len(names) > max_listed:
        lines.append(f"and {len(names) - max_listed} more")
    note = "not drawn, a norm is exactly 0:\n" + "\n".join(lines)
    ax.set_xlabel(f"{ax.get_xlabel()}\n{note}")


def _spectrum_figure(results, width, networks=None):
    from ..depth import DEFAULT_HISTOGRAM_EDGES

    plt = _pyplot()
    archs = list(dict.fromkeys(r.arch for r in results))
    colours = _depth_colours(sorted({r.depth for r in results}))
    columns = min(len(archs), 3)
    rows = -(-len(archs) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False
    )
    edges = DEFAULT_HISTOGRAM_EDGES
    for ax, arch in zip(axes.ravel(), archs):
        shown = [r for r in results if r.arch == arch and r.spectrum is not None]
        for r in shown:
            counts = r.spectrum.histogram(edges)
            # Normalised by every value, zeros included, so the area is the
            # nonzero fraction.
            total = max(r.spectrum.log10_singular_values.size, 1)
            fraction = r.spectrum.zero_fraction()
            label = f"L={r.depth} ({fraction:.0%} below resolution)"
            ax.stairs(counts / total, edges, color=colours[r.depth], label=label)
        used = np.flatnonzero(sum(r.spectrum.histogram(edges) for r in shown))
        if used.size:
            ax.set_xlim(edges[used[0]] - 0.5, edges[used[-1] + 1] + 0.5)
        ax.set(
            title=f"{arch}, width {width}",
            xlabel=r"$\log_{10}$ singular value of $J = dz^L/dx$",
        )
        ax.legend(fontsize=7, loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of singular values")
    for ax in axes.ravel()[len(archs) :]:
        ax.set_visible(False)
    _title_networks(figure, networks)
    figure.tight_layout()
    return figure


# The maximum number of identity-block counts that get a tick each. More
# counts get the decades of the symlog axis.
MAX_K_TICKS = 8


def _identity_figure(limits):
    from matplotlib.ticker import FixedLocator, FuncFormatter

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    # Per panel, the points that a norm of exactly 0 leaves out.
    dropped: list[list[str]] = [[], []]
    every_k: set[int] = set()
    for index, (activation, results) in enumerate(limits.items()):
        results = sorted(results, key=lambda r: r.identity_blocks)
        k = np.array([r.identity_blocks for r in results])
        every_k.update(int(value) for value in k)
        first = np.array([r.blocks["W1"].rms[0] for r in results])
        style = {"marker": "o", "ms": 3, "color": f"C{index}", "label": activation}
        zeros = [
            f"{activation}, k={value}: {_log10_text(norm)}"
            for value, norm in zip(k, first)
            if not math.isfinite(norm)
        ]
        for ax, names in zip(axes, dropped):
            if ax is axes[0] or activation != "sigmoid":
                ax.plot(k, first, **style)
                names += zeros
        # The bound starts at the smallest k of at least 1.
        start = int(np.searchsorted(k, 1))
        if (
            activation == "sigmoid"
            and k.size - start > 1
            and math.isfinite(first[start])
        ):
            bound = first[start] + (k[start:] - k[start]) * math.log10(0.25)
            axes[0].plot(k[start:], bound, ":", color="grey", label="bound $(1/4)^k$")
    for ax, title, names in zip(axes, ("all activations", "without sigmoid"), dropped):
        ax.set_xscale("symlog", linthresh=1)
        if len(every_k) <= MAX_K_TICKS:
            # The symlog ticks of a narrow range, as of a single k, are
            # fractions such as 0.055.
            ax.xaxis.set_major_locator(FixedLocator(sorted(every_k)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set(xlabel="identity blocks $k$ on top", title=f"block 1 of 4, {title}")
        if names:
            _note_dropped(ax, names)
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_ylabel(r"$\log_{10}\|\partial Y/\partial W^{11}\|_F$")
    figure.tight_layout()
    return figure


def _published_figure(published):
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    gains = published["branch_gain"]
    predicted = [g["predicted"] for g in gains]
    measured = [g["measured"] for g in gains]
    left.loglog(predicted, measured, "o", ms=4, label="measured")
    line = [min(predicted), max(predicted)]
    left.loglog(line, line, ":", color="grey", label="$y = x$, as predicted")
    left.set(
        xlabel=r"$(1 + 2\alpha^2)^L$",
        ylabel=r"measured $E\|\partial Y/\partial x_0\|^2$",
        title="unnormalised blocks, width 256",
    )
    left.legend(fontsize=7)
    for init, marker in (("he", "o"), ("orthogonal", "s")):
        for target, colour in (("output", "C0"), ("logits", "C1")):
            rows = [
                s
                for s in published["jacobian"]
                if s["init"] == init and s["jacobian"] == target
            ]
            depths = [s["layers"] for s in rows]
            right.plot(
                depths,
                [s["measured"]["normalised_variance"] for s in rows],
                marker,
                color=colour,
                label=f"{init}, {target}",
            )
            right.plot(
                depths,
                [s["predicted"]["normalised_variance"] for s in rows],
                ":",
                color=colour,
                label=f"predicted {PENNINGTON_PREDICTIONS[init, target]}",
            )
    right.set(
        xlabel="relu layers $L$ (two per plain block)",
        ylabel=r"variance / mean$^2$",
        title=r"eigenvalues of $J J^T$, width 512",
    )
    right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _trained_figure(trained):
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    archs = list(dict.fromkeys(r.arch for r in trained))
    colours = _depth_colours(sorted({r.depth for r in trained}))
    figure, axes = plt.subplots(
        1, len(archs), figsize=(3.6 * len(archs), 3.4), squeeze=False, sharey=True
    )
    for ax, arch in zip(axes[0], archs):
        dropped = []
        for r in (r for r in trained if r.arch == arch):
            blocks = np.arange(1, r.depth + 1)
            zeros = int(np.sum(~np.isfinite(r.blocks["W1"].rms)))
            if zeros:
                dropped.append(f"L={r.depth}, {r.stage}: {zeros} of {r.depth} blocks")
            style = "-" if r.stage == "trained" else ":"
            ax.plot(
                blocks,
                r.blocks["W1"].rms,
                style,
                marker="o",
                ms=2,
                color=colours[r.depth],
                label=f"L={r.depth}, {r.stage}",
            )
        ax.set(title=f"{arch}, digits", xlabel="block $l$")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if dropped:
            _note_dropped(ax, dropped)
    axes[0, 0].set_ylabel(r"$\log_{10}\|\partial Y/\partial W^{l1}\|_F$")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


# The section of the resgrad run report.


# The figures of the section, which resgrad run checks before any work.
SECTION_FILES = tuple(
    figure_names((REPORT_WIDTH,), REPORT_SPECTRUM_DEPTH >= min(REPORT_DEPTHS))
)


def report_section(ctx: RunContext) -> Section:
    """Build the depth section of the ``resgrad run`` report.

    A small sweep at initialisation (width 32, depths 1 to 64, two seeds),
    the identity-block limit with relu and sigmoid, and the gradient
    profile of the trained model against the same architecture redrawn.
    """
    from .. import depth

    out = Path(ctx.out_dir)
    seeds = 2
    sweep = depth.depth_sweep(
        REPORT_DEPTHS,
        (REPORT_WIDTH,),
        seeds=seeds,
        samples=8,
        spectrum_depth=REPORT_SPECTRUM_DEPTH,
        progress=ctx.progress,
    )
    limits = {
        activation: depth.identity_limit(
            activation, REPORT_IDENTITY_BLOCKS, width=REPORT_WIDTH, seeds=seeds
        )
        for activation in ("relu", "sigmoid")
    }
    model_rows = _trained_model_rows(ctx)
    files = write_figures(
        out, sweep, limits, networks=_networks_text("relu", None, "he")
    )
    metrics = {
        "log10_ratio_W2": {f"{r.arch}/L={r.depth}": r.log10_ratio("W2") for r in sweep},
        "log10_input_gain": {
            f"{r.arch}/L={r.depth}": r.log10_input_gain() for r in sweep
        },
        "identity_limit_log10_W1_block1": {
            activation: {
                str(r.identity_blocks): float(r.blocks["W1"].rms[0]) for r in rs
            }
            for activation, rs in limits.items()
        },
        "trained_model": model_rows,
    }
    markdown = _report_markdown(sweep, limits, model_rows, files)
    return Section("Gradients and depth", "depth", markdown, metrics, files)


def _trained_model_rows(ctx: RunContext) -> dict[str, Any]:
    from ..depth import gradient_profile, probe_batch, redrawn_network, summarise

    model = ctx.model.convert(dtype="float64")
    x = np.asarray(ctx.data.x_test[:64], dtype=np.float64)
    _, v = probe_batch(x.shape[0], 1, model.n_classes, ctx.seed)
    rows = {}
    for name, network in (
        ("trained", model),
        ("init", redrawn_network(model, ctx.seed)),
    ):
        blocks, input_summary = summarise([gradient_profile(network, x, v)])
        rms = blocks["W2"].rms
        with np.errstate(invalid="ignore"):
            # Both ends zero (-inf), as when every input is constant, give NaN.
            ratio = float(rms[0] - rms[-1])
        rows[name] = {
            "log10_W2": [float(value) for value in rms],
            "log10_ratio_W2": ratio,
            "log10_input_gain": float(2 * input_summary.rms),
        }
    return rows


def _report_markdown(sweep, limits, model_rows, files) -> str:
    depths = sorted({r.depth for r in sweep})
    intro = (
        "Per-sample gradient norms for a fixed random input batch and a linear "
        "loss whose gradient dY/da^L is a random unit vector per sample, at "
        f"initialisation (relu blocks with He weights, width {REPORT_WIDTH}, no "
        "biases, two seeds, whatever the trained model's activation). The table "
        "gives log10 ||dY/dW^{12}|| / ||dY/dW^{L2}||, the gradient norm of the "
        "first block's W2 over that of the last block's, as in depth_ratio.png, "
        "and, in brackets, log10 E||dY/dx||^2. It uses W2 because a network "
        "whose branches start at zero (W2 = 0, the architecture zero of "
        "resgrad depth --arch) has a W1 gradient of exactly zero:"
    )
    lines = [
        intro,
        "",
        "| architecture | " + " | ".join(f"L = {d}" for d in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    printed = []
    for (_, arch), group in _groups(sweep).items():
        cells = []
        for r in group:
            ratio, gain = r.log10_ratio("W2"), r.log10_input_gain()
            printed += [ratio, gain]
            cells.append(f"{_log10_text(ratio)} ({_log10_text(gain, 1)})")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    if not all(math.isfinite(value) for value in printed):
        lines += ["", ZERO_NORM_NOTE]
    lines += ["", _identity_sentence(limits), "", _trained_sentence(model_rows), ""]
    for name in files:
        lines += [f"![{name}]({name})", "", _caption(name), ""]
    return "\n".join(lines).rstrip() + "\n"


def _caption(name: str) -> str:
    """Return the sentence under the report figure ``name``."""
    if name.startswith("depth_norms_w"):
        return (
            "Per-block gradient norms log10 ||dY/dW^l|| against the block l, "
            "per architecture and depth; bands span the seeds."
        )
    if name.startswith("depth_spectrum_w"):
        return (
            "Histograms of the singular values of the Jacobian dz^L/dx, as a "
            f"fraction of all of them, for depths up to {REPORT_SPECTRUM_DEPTH}. "
            "The legend gives the fraction below float64's resolution next to "
            "the largest value (the rule of numpy.linalg.matrix_rank), which "
            "the histograms leave out."
        )
    return {
        "depth_ratio.png": "The first-to-last ratio of the table against depth.",
        "depth_identity.png": (
            "log10 ||dY/dW^{11}|| of the random network's first block against "
            "the identity blocks stacked on top, with relu and with sigmoid."
        ),
    }.get(name, "")


def _identity_sentence(limits) -> str:
    def norms(results):
        return ", ".join(_log10_text(r.blocks["W1"].rms[0]) for r in results)

    relu, sigmoid = limits["relu"], limits["sigmoid"]
    blocks = ", ".join(str(r.identity_blocks) for r in relu)
    return (
        "Identity blocks (W1 = W2 = 0, W3 = I) stacked on a random 4-block "
        f"network: log10 ||dY/dW^{{11}}|| is {norms(relu)} with relu and "
        f"{norms(sigmoid)} with sigmoid, for k = {blocks}. With relu the "
        "identity blocks leave the gradient unchanged after the first, but with "
        "sigmoid each still multiplies it by D^l, whose entries are at most 1/4."
    )


def _trained_sentence(model_rows) -> str:
    trained, init = model_rows["trained"], model_rows["init"]
    return (
        "The trained model: log10 ||dY/dW^{12}|| / ||dY/dW^{L2}|| "
        f"{_log10_text(trained['log10_ratio_W2'])} (the same architecture "
        f"redrawn: {_log10_text(init['log10_ratio_W2'])}), log10 E||dY/dx||^2 "
        f"{_log10_text(trained['log10_input_gain'])} (redrawn: "
        f"{_log10_text(init['log10_input_gain'])})."
    )
