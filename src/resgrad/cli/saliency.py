"""``resgrad saliency``: saliency maps of test samples, with their checks.

For each chosen test sample the command draws one PNG: the input, then the
map of every class for each method, on a diverging colour map centred at
zero. It also runs the model-randomisation check and the deletion curve on
the first test samples, draws both, and writes every number to a JSON file.
``report_section`` gives ``resgrad run`` a short version of the same.
"""

from __future__ import annotations

import argparse
import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._arrays import parse_names
from ..io import json_text
from ._common import (
    WARNINGS,
    RunContext,
    Section,
    Typed,
    add_data_arguments,
    add_overwrite_argument,
    check_figures_installed,
    check_output_file,
    check_output_folder,
    existing_file,
    files_record,
    load_dataset,
    non_negative_int,
    output_folder,
    plural,
    positive_int,
    progress_bar,
    typed_options,
    warn,
    write_atomic,
    write_figure,
    writing_into,
)
from ._common import (
    pyplot as _pyplot,
)

METHOD_TITLES = {
    "vanilla": "vanilla gradient",
    "input_x_gradient": "input x gradient",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Gradients",
    "jsma": "JSMA map",
}


def method_titles(options: dict, absolute: bool) -> dict[str, str]:
    """Return ``METHOD_TITLES`` with the variant each figure draws named:
    SmoothGrad-Squared, a JSMA map other than the manuscript's, and
    ``|map|`` under ``--absolute``."""
    titles = dict(METHOD_TITLES)
    if options.get("smoothgrad", {}).get("squared"):
        titles["smoothgrad"] = "SmoothGrad-Squared"
    variant = options.get("jsma", {}).get("variant", JSMA_VARIANT)
    if variant != JSMA_VARIANT:
        titles["jsma"] = f"JSMA map ({variant})"
    if absolute:
        titles = {method: f"|{title}|" for method, title in titles.items()}
    return titles


# The number of classes drawn without --classes at most; each class is one
# column of every sample's figure.
DRAWN_CLASSES = 20
# Defaults of the options that only SmoothGrad or the JSMA map read.
SMOOTHGRAD_SAMPLES = 50
NOISE_LEVEL = 0.15
JSMA_VARIANT = "manuscript"
DIVERGING = "RdBu_r"
# Maps of one sign (every map with --absolute, and the manuscript's JSMA map,
# which is never positive) are drawn from zero on this sequential colour map,
# darker where the magnitude is larger. Its light end is near white, like
# the centre of DIVERGING.
SEQUENTIAL = "Purples"
MARKERS = ("o", "s", "^", "D", "v")
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
JSON_NAME = "saliency.json"
RANDOMIZATION_NAME = "saliency_randomization.png"
DELETION_NAME = "saliency_deletion.png"
# The values of --deletion-score, and how figures and reports name each.
DELETION_SCORES = {"logit": "logit", "probability": "softmax probability"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "saliency",
        help="draw saliency maps of test samples and check them",
        description="Draw the saliency maps of chosen test samples for every "
        "class, run the model-randomisation check and the deletion curve, and "
        "write the figures and a JSON of the numbers.",
    )
    parser.add_argument(
        "--model", type=existing_file, required=True, help="a .npz model file"
    )
    add_data_arguments(parser, trained=True)
    _add_selection_arguments(parser)
    _add_method_arguments(parser)
    _add_check_arguments(parser)
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    parser.set_defaults(handler=run_saliency)


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        default="0,1,2",
        help="comma-separated test-sample indices to draw; a repeated one is "
        "drawn once (default: 0,1,2)",
    )
    parser.add_argument(
        "--method",
        default="all",
        help="comma-separated methods out of "
        f"{','.join(METHOD_TITLES)}, or 'all'; a repeated one runs once "
        "(default: all)",
    )
    parser.add_argument(
        "--classes",
        action=Typed,
        default="all",
        help="comma-separated classes whose maps to draw, or 'all' (default: all, "
        f"or the first {DRAWN_CLASSES} of a model with more)",
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=None,
        help="output folder, absent or empty unless --overwrite is given "
        "(default: 'saliency' beside the model file)",
    )
    add_overwrite_argument(parser)
    parser.add_argument(
        "--absolute", action="store_true", help="draw |map| instead of the signed map"
    )


# The most --steps, --samples and --random-orders, whose defaults are 50, 50
# and 5. Each step or sample is a forward and backward pass over every
# sample drawn, and each random order a deletion curve over every feature.
MAX_PASSES = 10**6


def passes(value: str) -> int:
    """Parse a count of passes from 1 to ``MAX_PASSES``."""
    number = positive_int(value)
    if number > MAX_PASSES:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_PASSES:,} passes, got {number}; each is a "
            "forward and backward pass over every sample drawn"
        )
    return number


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check-samples",
        type=positive_int,
        default=32,
        action=Typed,
        help="first test samples used by the randomisation check and the deletion "
        "curve (default: 32)",
    )
    parser.add_argument(
        "--random-orders",
        type=passes,
        default=5,
        help="random orders averaged for the deletion baseline curve (default: 5)",
    )
    parser.add_argument(
        "--deletion-score",
        choices=DELETION_SCORES,
        default="logit",
        help="the class score that the deletion curve records: logit, which "
        "can fall below 0 and so rewards a map for driving the class down "
        "past the point where its evidence is gone, or probability (softmax), "
        "which stays in [0, 1], as in RISE's deletion metric (default: logit)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the SmoothGrad noise, the re-initialisation and the random "
        "orders (default: 0)",
    )


def _add_method_arguments(parser: argparse.ArgumentParser) -> None:
    from ..saliency import IG_RULES, JSMA_VARIANTS

    parser.add_argument(
        "--steps",
        action=Typed,
        type=passes,
        default=50,
        help="Integrated Gradients path points (default: 50)",
    )
    parser.add_argument(
        "--rule",
        action=Typed,
        default="gausslegendre",
        choices=IG_RULES,
        help="Integrated Gradients quadrature rule (default: gausslegendre)",
    )
    parser.add_argument(
        "--baseline",
        action=Typed,
        default="0",
        help="Integrated Gradients baseline, in the units of the scaled "
        "inputs (the box [0, 1] for the bundled digits): a number, or a .npy "
        "file of one input row (default: 0)",
    )
    parser.add_argument(
        "--samples",
        action=Typed,
        type=passes,
        default=SMOOTHGRAD_SAMPLES,
        help=f"SmoothGrad noisy copies (default: {SMOOTHGRAD_SAMPLES})",
    )
    parser.add_argument(
        "--noise-level",
        action=Typed,
        type=float,
        default=NOISE_LEVEL,
        help="SmoothGrad noise standard deviation as a fraction of hi - lo "
        "(default: 0.15)",
    )
    parser.add_argument("--squared", action="store_true", help="use SmoothGrad-Squared")
    parser.add_argument(
        "--variant",
        action=Typed,
        default=JSMA_VARIANT,
        choices=JSMA_VARIANTS,
        help="JSMA map: the manuscript's, or Papernot's increase/decrease map "
        "(default: manuscript)",
    )


# Parsing the options.


def parse_list(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError(f"{option} is empty; pass a comma-separated list.")
    if not all(items):
        raise ValueError(f"Empty item in {option} {text!r}; remove the extra comma.")
    return items


def parse_indices(text: str, option: str, size: int, range_name: str) -> list[int]:
    """Parse comma-separated integers, each in ``[0, size)``; a repeated one
    counts once, where it first appears."""
    indices = []
    for item in parse_list(text, option):
        try:
            value = int(item)
        except ValueError:
            raise ValueError(
                f"{option}: expected an integer, got {item!r}; pass indices such "
                "as 0,5,9."
            ) from None
        if not 0 <= value < size:
            raise ValueError(
                f"{option} {value} is outside {range_name} [0, {size}); pass "
                f"indices from 0 to {size - 1}."
            )
        if value not in indices:
            indices.append(value)
    return indices


def parse_methods(text: str) -> list[str]:
    return parse_names(text, "--method", list(METHOD_TITLES))


def parse_baseline(text: str, width: int) -> float | np.ndarray:
    """Return a number, or the row of shape ``(width,)`` read from a .npy file."""
    try:
        value = float(text)
    except ValueError:
        return _baseline_row(text, width)
    if not np.isfinite(value):
        raise ValueError(f"--baseline must be a finite number, got {text!r}.")
    return value


def _baseline_row(text: str, width: int) -> np.ndarray:
    path = Path(text)
    if not path.is_file():
        raise ValueError(
            f"--baseline {text!r} is neither a number nor an existing .npy file; "
            "pass a number, such as 0 or 0.5, or the path of a .npy file of one "
            "input row."
        )
    declared = _declared_header(path)
    if declared is not None:
        # Checked before np.load allocates what the header declares, which
        # can be more than the machine's memory.
        _check_baseline_kind(text, width, *declared)
    try:
        row = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        # NumPy reads a file it cannot parse as a pickle, and its message then
        # suggests loading it unsafely, which a baseline never needs.
        detail = "" if "pickle" in str(error) else f" ({error})"
        raise ValueError(
            f"--baseline {text!r} is not a .npy array of numbers{detail}; save "
            "the row with np.save(path, row)."
        ) from error
    if isinstance(row, np.lib.npyio.NpzFile):
        row.close()
        # Wrong file content: a ValueError like the other --baseline file errors.
        raise ValueError(  # noqa: TRY004
            f"--baseline {text!r} is a .npz archive, not a .npy array; save the "
            "row alone with np.save(path, row)."
        )
    if not isinstance(row, np.ndarray):
        raise ValueError(  # noqa: TRY004
            f"Expected --baseline of shape ({width},), one input row, got "
            f"{type(row).__name__}."
        )
    _check_baseline_kind(text, width, row.shape, row.dtype)
    row = np.asarray(row, dtype=np.float64).reshape(width)
    bad = ~np.isfinite(row)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"--baseline {text!r} has {int(bad.sum())} NaN or infinite value(s), "
            f"the first at index {index} ({row[index]}); replace them with finite "
            "numbers."
        )
    return row


def _declared_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Return the shape and dtype that the header of the .npy file at
    ``path`` declares, or ``None`` where it cannot be read, which
    ``np.load`` then reports."""
    from ..io import NPY_HEADER_READERS

    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            # Version 3.0 differs from 2.0 only in allowing UTF-8 in the
            # header. A shape and a dtype of numbers are ASCII, so the 2.0
            # reader reads them (model files and .npz data take 1.0 and 2.0).
            reader = NPY_HEADER_READERS.get(version)
            if version == (3, 0):
                reader = np.lib.format.read_array_header_2_0
            if reader is None:
                return None
            header = reader(file)
    except (OSError, ValueError, EOFError, TypeError, SyntaxError):
        return None
    return tuple(header[0]), header[2]


def _check_baseline_kind(
    text: str, width: int, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    """Raise ``ValueError`` unless a --baseline array is one input row of
    real numbers."""
    if shape not in ((width,), (1, width)):
        raise ValueError(
            f"Expected --baseline of shape ({width},), one input row, got {shape}."
        )
    if dtype.kind not in "iuf":
        raise ValueError(
            f"--baseline {text!r} has dtype {dtype}, not real numbers; save "
            "the row as floats, e.g. np.save(path, row.astype(float))."
        )


def method_options(
    args: argparse.Namespace,
    bounds: tuple[float, float],
    baseline: float | np.ndarray,
) -> dict:
    """Check the options of the methods and return them keyed by method.

    argparse has checked that ``--steps`` and ``--samples`` are at least 1.
    """
    if args.rule == "riemann_trapezoid" and args.steps < 2:
        raise ValueError(
            f"--steps must be at least 2 with --rule riemann_trapezoid, whose "
            f"points include both ends of the path; got {args.steps}."
        )
    if not (math.isfinite(args.noise_level) and args.noise_level >= 0):
        raise ValueError(
            f"--noise-level must be a finite number >= 0, got {args.noise_level}; "
            "pass a fraction of hi - lo such as 0.15."
        )
    if args.noise_level > 1:
        warn(
            "saliency",
            f"--noise-level {args.noise_level:g} draws noise of a standard "
            "deviation wider than the box hi - lo, so SmoothGrad averages "
            "gradients at points far outside the data; Smilkov et al. use 0.1 "
            "to 0.2.",
        )
    _check_baseline_in_box(args.baseline, baseline, bounds)
    return {
        "smoothgrad": {
            "samples": args.samples,
            "noise_level": args.noise_level,
            "bounds": bounds,
            "squared": args.squared,
            "seed": args.seed,
        },
        "integrated_gradients": {
            "steps": args.steps,
            "rule": args.rule,
            "baseline": baseline,
        },
        "jsma": {"variant": args.variant},
    }


def _check_baseline_in_box(
    text: str, baseline: float | np.ndarray, bounds: tuple[float, float]
) -> None:
    """Raise ``ValueError`` if the baseline leaves the box that the inputs are
    scaled into, which most likely means it was given in raw units."""
    lo, hi = bounds
    values = np.atleast_1d(np.asarray(baseline, dtype=np.float64))
    outside = (values < lo) | (values > hi)
    if not outside.any():
        return
    index = int(np.argmax(outside))
    if np.ndim(baseline) == 0:
        problem = f"--baseline {text} is"
    else:
        problem = (
            f"--baseline {text} has the value {values[index]:g} at feature {index},"
        )
    raise ValueError(
        f"{problem} outside the box [{lo:g}, {hi:g}] that the inputs are scaled "
        f"into; pass a baseline in scaled units, such as {lo:g}."
    )


# The command.


def run_saliency(args: argparse.Namespace) -> int:
    from ..io import load_with_metadata

    if args.out is None:
        args.out = Path(args.model).parent / "saliency"
    methods = parse_methods(args.method)
    _check_unused_options(args, methods)
    check_figures_installed()
    model, metadata = load_with_metadata(args.model)
    data = load_dataset(args, model, metadata)
    x_test = np.asarray(data.x_test, dtype=np.float64)
    model = model.convert(dtype="float64")
    indices = parse_indices(args.index, "--index", len(x_test), "the test split")
    if args.classes.strip() == "all":
        classes = list(range(model.n_classes))
        if model.n_classes > DRAWN_CLASSES and not typed_options(args, ["classes"]):
            # Each class is a column of every sample's figure, about 200
            # pixels wide.
            classes = classes[:DRAWN_CLASSES]
            warn(
                "saliency",
                f"the model has {model.n_classes} classes; drawing the first "
                f"{DRAWN_CLASSES}, since each adds a column to the figures. Pass "
                "--classes to choose others, or --classes all for every one.",
            )
    else:
        classes = parse_indices(
            args.classes, "--classes", model.n_classes, "the classes"
        )
    baseline = parse_baseline(args.baseline, model.sizes[0])
    options = method_options(args, data.bounds, baseline)
    # This runs after the argument checks, so that a bad value is named
    # before a folder that is not empty.
    folder = check_output_folder(args.out, args.overwrite)
    args.out = folder.path
    samples = [f"saliency_sample_{index}.png" for index in indices]
    for name in (*samples, RANDOMIZATION_NAME, DELETION_NAME, JSON_NAME):
        check_output_file(args.out / name)
    progress = progress_bar(not args.no_progress)

    summary, sample_figures = draw_samples(
        model, data, indices, methods, classes, options, args, progress
    )
    if args.check_samples > len(x_test) and typed_options(args, ["check_samples"]):
        # The default of 32 quietly takes a smaller split whole.
        warn(
            "saliency",
            f"--check-samples {args.check_samples} is more than the "
            f"{len(x_test)} test samples; checking all {len(x_test)}",
        )
    x_check = x_test[: args.check_samples]
    checks = run_checks(model, x_check, methods, options, data.bounds, args, progress)
    # Every number is computed before the first file is written, so an
    # interrupted run leaves no folder of some figures and no JSON file.
    summary["files"] += [RANDOMIZATION_NAME, DELETION_NAME, JSON_NAME]
    summary.update(check_summary(checks))
    # The settings of the checks, which the method options above leave out.
    summary["seed"] = args.seed
    summary["warnings"] = list(WARNINGS)
    summary["check_samples"] = len(x_check)
    titles = method_titles(options, args.absolute)
    summary["random_orders"] = args.random_orders
    with writing_into(folder, "saliency"):
        for name, draw in sample_figures:
            write_figure(args.out / name, draw())
        write_figure(
            args.out / RANDOMIZATION_NAME,
            randomization_figure(checks, data, args.absolute, titles),
        )
        write_figure(args.out / DELETION_NAME, deletion_figure(checks, titles))
        write_atomic(args.out / JSON_NAME, json_text(summary))
    print(_summary_text(summary))
    print(f"wrote {len(summary['files'])} files to {args.out}")
    return 0


# The maps that multiply by the input, and the reason their randomisation
# results stay high, printed under those results.
INPUT_TIMES_MAPS = ("input_x_gradient", "integrated_gradients")
INPUT_CORRELATION = (
    "input x gradient and Integrated Gradients multiply the gradient by x "
    "minus the baseline, so they keep the input's pattern whatever the "
    "weights, and the features at the baseline tie at the lowest rank"
)

# The reason for a randomisation result of NaN, printed under one.
NAN_CORRELATION = (
    "no rank correlation exists where a map is constant, as with one input "
    "feature or a map of zeros"
)


def _summary_text(summary: dict) -> str:
    """Return the check numbers of ``summary`` as lines for the terminal."""
    deletion = summary["deletion"]
    first = next(iter(deletion.values()))
    score = DELETION_SCORES[first["score"]]
    heading = (
        f"deletion curve of the class {score}, mean area over the first "
        f"{first['samples']} test samples (lower: the map ranks the decisive "
        "features first):"
    )
    lines = [heading, f"  {'method':22s}{'map':>8s}{'random':>8s}"]
    for method, numbers in deletion.items():
        lines.append(f"  {method:22s}{numbers['auc']:8.3f}{numbers['random_auc']:8.3f}")
    lines.append(
        "randomisation check, rank correlation of |map| with the trained one "
        "after reinitialising every block (near 0: the map depends on the weights):"
    )
    correlations = [n["spearman_abs"][-1] for n in summary["randomization"].values()]
    for method, value in zip(summary["randomization"], correlations):
        lines.append(f"  {method:22s}{value:8.3f}")
    if any(method in INPUT_TIMES_MAPS for method in summary["randomization"]):
        lines.append(f"  {INPUT_CORRELATION}")
    if any(math.isnan(value) for value in correlations):
        lines.append(f"  nan: {NAN_CORRELATION}")
    gap = summary.get("integrated_gradients_gap")
    if gap is not None:
        relative = np.abs(gap["relative_gap_predicted_class"])
        absolute = np.abs(gap["gap_predicted_class"])
        drawn = plural(len(relative), "sample")
        lines.append(
            f"Integrated Gradients completeness gap of the predicted class, {drawn} "
            f"of --index ({gap['rule']} rule, {plural(gap['steps'], 'step')}): "
            f"largest relative {np.max(relative):.2e}, largest absolute "
            f"{np.max(absolute):.2e}"
        )
    return "\n".join(lines)


def _check_unused_options(args: argparse.Namespace, methods: list[str]) -> None:
    """Reject a SmoothGrad, Integrated Gradients or JSMA option typed while
    --method leaves that method out, since it would change nothing."""
    unused = {}
    if "integrated_gradients" not in methods:
        unused["integrated_gradients"] = typed_options(
            args, ["steps", "rule", "baseline"]
        )
    if "smoothgrad" not in methods:
        squared = ["--squared"] if args.squared else []
        unused["smoothgrad"] = typed_options(args, ["samples", "noise_level"]) + squared
    if "jsma" not in methods:
        unused["jsma"] = typed_options(args, ["variant"])
    unused = {method: options for method, options in unused.items() if options}
    if unused:
        options = [option for group in unused.values() for option in group]
        subject, pronoun = ("it", "it") if len(options) == 1 else ("they", "them")
        left_out = " and ".join(unused)
        raise ValueError(
            f"--method {args.method} leaves out {left_out}, which alone "
            f"{'reads' if len(unused) == 1 else 'read'} {', '.join(options)}, so "
            f"{subject} would change nothing; add {left_out} to --method, or "
            f"drop {pronoun}."
        )


def draw_samples(
    model, data, indices, methods, classes, options, args, progress
) -> tuple[dict, list[tuple[str, Callable[[], Any]]]]:
    """Compute the maps of the chosen test samples.

    Returns the numbers behind them, and for each sample the file name of
    its grid with a function that draws the grid.
    """
    from ..saliency import integrated_gradients

    x = np.asarray(data.x_test, dtype=np.float64)[indices]
    labels = np.asarray(data.y_test)[indices]
    predicted = np.asarray(model.predict(x))
    maps = {}
    for method in progress(methods, desc="methods", total=len(methods)):
        maps[method] = class_maps(model, x, method, options, args.absolute)[:, classes]

    def grid(row: int, index: int) -> Any:
        title = f"test sample {index}: label {labels[row]}, predicted {predicted[row]}"
        return sample_figure(
            x[row],
            {method: maps[method][row] for method in methods},
            classes,
            int(predicted[row]),
            data.image_shape,
            title,
            method_titles(options, args.absolute),
        )

    figures = [
        (f"saliency_sample_{index}.png", functools.partial(grid, row, index))
        for row, index in enumerate(indices)
    ]
    files = [name for name, _ in figures]
    summary = {
        **files_record(args),
        "methods": methods,
        "classes": classes,
        "absolute": args.absolute,
        "options": _json_options({m: options[m] for m in methods if m in options}),
        "samples": [
            {"index": i, "label": int(y), "predicted": int(p)}
            for i, y, p in zip(indices, labels, predicted)
        ],
        "files": files,
    }
    if "integrated_gradients" in methods:
        # The gap of every class, which the maps of the chosen classes leave out.
        ig = options["integrated_gradients"]
        ig_result = integrated_gradients(model, x, "all", **ig)
        summary["integrated_gradients_gap"] = _gap_summary(ig, ig_result, predicted)
    return summary, figures


def _gap_summary(ig: dict, result: Any, predicted: np.ndarray) -> dict:
    """Return the completeness gaps of every class and of the predicted one."""
    rows = np.arange(len(predicted))
    relative = np.asarray(result.relative_gap)[rows, predicted]
    return {
        "rule": ig["rule"],
        "steps": ig["steps"],
        "gap_per_class": np.asarray(result.gap).tolist(),
        "gap_predicted_class": np.asarray(result.gap)[rows, predicted].tolist(),
        "relative_gap_predicted_class": relative.tolist(),
    }


def class_maps(model, x, method: str, options: dict, absolute: bool) -> np.ndarray:
    """Return the maps of every class, shape ``(n, p_L, p_0)``."""
    from ..saliency import saliency_map

    result = saliency_map(
        model, x, method, "all", absolute=absolute, **options.get(method, {})
    )
    return np.asarray(result)


def run_checks(model, x, methods, options, bounds, args, progress) -> dict:
    """Run the randomisation check and the deletion curve for every method."""
    from ..saliency import deletion_curve, randomization_check, saliency_map

    checks = {"randomization": {}, "deletion": {}, "baseline": float(bounds[0])}
    checks["score"] = args.deletion_score
    for method in progress(methods, desc="checks", total=len(methods)):
        method_opts = options.get(method, {})
        checks["randomization"][method] = randomization_check(
            model, x, method, init_seed=args.seed, absolute=args.absolute, **method_opts
        )
        saliency = saliency_map(model, x, method, absolute=args.absolute, **method_opts)
        rank_by = "magnitude" if method == "jsma" or args.absolute else "value"
        checks["deletion"][method] = (
            deletion_curve(
                model,
                x,
                saliency,
                baseline=float(bounds[0]),
                rank_by=rank_by,
                random_orders=args.random_orders,
                seed=args.seed,
                score=args.deletion_score,
            ),
            rank_by,
        )
    return checks


def check_summary(checks: dict) -> dict:
    """Return the check numbers for JSON: means over the samples."""
    randomization = {}
    for method, result in checks["randomization"].items():
        depth = len(result.blocks)
        randomization[method] = {
            "blocks_reinitialised": [_block_range(b + 1, depth) for b in result.blocks],
            "spearman": _nanmean_rows(result.spearman).tolist(),
            "spearman_abs": _nanmean_rows(result.spearman_abs).tolist(),
            # The spread over the samples of the means above.
            "spearman_quartiles": _quartile_rows(result.spearman).tolist(),
            "spearman_abs_quartiles": _quartile_rows(result.spearman_abs).tolist(),
        }
    deletion = {}
    for method, (curve, rank_by) in checks["deletion"].items():
        deletion[method] = {
            "rank_by": rank_by,
            "score": checks["score"],
            "auc": float(np.mean(curve.auc)),
            "random_auc": float(np.mean(curve.random_auc)),
            "samples": int(curve.scores.shape[0]),
        }
    return {"randomization": randomization, "deletion": deletion}


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Average each row over its finite entries; a row of NaN stays NaN.

    A map that is constant over the features (a dead relu network) has no
    rank correlation, which ``rank_correlation`` reports as NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def _quartile_rows(values: np.ndarray) -> np.ndarray:
    """Return the first and third quartiles of each row over its finite
    entries, shape ``(rows, 2)``; a row of NaN gives NaN."""
    quartiles = np.full((len(values), 2), np.nan)
    for index, row in enumerate(values):
        finite = row[np.isfinite(row)]
        if finite.size:
            quartiles[index] = np.percentile(finite, [25, 75])
    return quartiles


def _json_options(options: dict) -> dict:
    result = {}
    for method, values in options.items():
        result[method] = {
            key: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
            for key, v in values.items()
        }
    return result


# Figures.


def _show(ax, row, image_shape, cmap, norm) -> Any:
    """Draw one row as an image, its shape taken from ``display_shape``, or,
    for a short row that is no image, as one bar per feature. Returns what
    a colour bar can be drawn for."""
    from matplotlib.cm import ScalarMappable

    from ..robustness import as_image, display_shape, feature_bars, padded_cmap

    shape = display_shape(image_shape, int(np.size(row)))
    if shape is None:
        values = np.asarray(row, dtype=np.float64).reshape(-1)
        mappable = ScalarMappable(norm=norm, cmap=cmap)
        if norm is None:
            # The input: plain bars over its own range and 0.
            feature_bars(ax, values, (min(0.0, values.min()), max(0.0, values.max())))
        else:
            feature_bars(ax, values, (norm.vmin, norm.vmax), mappable.to_rgba(values))
        ax.set_xticks([])
        ax.set_yticks([])
        return mappable
    image = ax.imshow(
        as_image(row, shape),
        cmap=padded_cmap(cmap) if isinstance(cmap, str) else cmap,
        norm=norm,
        aspect="equal" if shape else "auto",
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _colour_scale(values: np.ndarray, family: Any = None) -> tuple[str, Any]:
    """Return the colour map name and the scale that draw ``values``.

    Maps of one sign get ``SEQUENTIAL`` from zero to the largest magnitude,
    reversed for maps that are never positive, so the colour darkens with
    the magnitude either way. Other maps get ``DIVERGING`` centred at zero.
    The signs of ``family``, when given, choose the colour map in place of
    those of ``values``, so that maps drawn side by side share one.
    """
    from matplotlib.colors import Normalize

    values = np.asarray(values, dtype=np.float64)
    signs = values if family is None else np.asarray(family, dtype=np.float64)
    limit = float(np.max(np.abs(values))) if values.size else 0.0
    limit = limit if limit > 0 else 1.0
    if signs.size == 0 or np.min(signs) >= 0:
        return SEQUENTIAL, Normalize(vmin=0.0, vmax=limit)
    if np.max(signs) <= 0:
        return f"{SEQUENTIAL}_r", Normalize(vmin=-limit, vmax=0.0)
    return DIVERGING, Normalize(vmin=-limit, vmax=limit)


def sample_figure(
    x: np.ndarray,
    maps: dict[str, np.ndarray],
    classes: list[int],
    predicted: int,
    image_shape: tuple[int, int] | None,
    title: str,
    titles: dict[str, str] | None = None,
) -> Any:
    """Draw the input, then one row per method of one map per class.

    Args:
        x: the input row, shape ``(p_0,)``.
        maps: per method, the maps of the drawn classes, ``(len(classes), p_0)``.
        titles: the row label of each method; ``METHOD_TITLES`` by default.
    """
    titles = METHOD_TITLES if titles is None else titles
    from ..robustness import display_shape

    plt = _pyplot()
    rows, columns = len(maps), len(classes) + 1
    strip = display_shape(image_shape, int(np.size(x))) is None
    size = 2.0 if strip else 1.15
    height = 1.0 if strip else size
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(size * columns + 0.9, height * rows + 0.7),
        squeeze=False,
        layout="constrained",
    )
    figure.suptitle(title, fontsize=10)
    for row, (method, method_maps) in enumerate(maps.items()):
        first = axes[row, 0]
        if row == 0:
            _show(first, x, image_shape, "gray_r", None)
            first.set_title("input", fontsize=8)
        else:
            first.set_xticks([])
            first.set_yticks([])
            for spine in first.spines.values():
                spine.set_visible(False)
        # A y label, unlike free text, gets room from the constrained layout.
        # Strips are too low for a rotated one.
        # A rotated label centred on its anchor would reach half a line into
        # the input panel, as it did beside tall images.
        first.set_ylabel(
            titles[method],
            rotation=0 if strip else 90,
            ha="right" if strip else "center",
            va="center" if strip else "bottom",
            fontsize=8,
        )
        cmap, norm = _colour_scale(method_maps)
        for column, cls in enumerate(classes, start=1):
            image = _show(
                axes[row, column], method_maps[column - 1], image_shape, cmap, norm
            )
            if row == 0:
                mark = " (pred.)" if cls == predicted else ""
                axes[row, column].set_title(f"class {cls}{mark}", fontsize=8)
        colorbar = figure.colorbar(image, ax=axes[row, 1:], shrink=0.9, pad=0.01)
        colorbar.ax.tick_params(labelsize=6)
    return figure


def method_grid_figure(
    x: np.ndarray,
    maps: dict[str, np.ndarray],
    labels: np.ndarray,
    predicted: np.ndarray,
    image_shape: tuple[int, int] | None,
) -> Any:
    """Draw one row per sample: the input, then each method's map of the
    predicted class. Each method's column shares one colour scale from
    ``_colour_scale``, shown by the colour bar under it."""
    from ..robustness import display_shape

    plt = _pyplot()
    rows, columns = x.shape[0], len(maps) + 1
    strip = display_shape(image_shape, int(x.shape[1])) is None
    size = 2.0 if strip else 1.3
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(size * columns, (1.0 if strip else size) * rows + 1.0),
        squeeze=False,
        layout="constrained",
    )
    scales = {method: _colour_scale(values) for method, values in maps.items()}
    for row in range(rows):
        _show(axes[row, 0], x[row], image_shape, "gray_r", None)
        axes[row, 0].set_ylabel(
            f"label {labels[row]}\npred. {predicted[row]}", fontsize=8
        )
        for column, (method, method_maps) in enumerate(maps.items(), start=1):
            image = _show(
                axes[row, column],
                method_maps[row],
                image_shape,
                *scales[method],
            )
            if row == 0:
                axes[row, column].set_title(METHOD_TITLES[method], fontsize=8)
            if row == rows - 1:
                colorbar = figure.colorbar(
                    image, ax=axes[:, column], location="bottom", shrink=0.9
                )
                colorbar.ax.tick_params(labelsize=6)
    axes[0, 0].set_title("input", fontsize=8)
    figure.suptitle(_grid_title(scales), fontsize=9)
    return figure


def _grid_title(scales: dict[str, tuple[str, Any]]) -> str:
    """Return the title of ``method_grid_figure``, with the meaning of the
    colours of each kind of column. ``scales`` maps each method to the
    colour map name and scale from ``_colour_scale``."""
    title = "maps of the predicted class"
    if any(cmap == DIVERGING for cmap, _ in scales.values()):
        title += " (red raises the score, blue lowers it)"
    # The sign of a JSMA map or of |map| does not tell whether a feature
    # raises or lowers the score, but a larger magnitude marks a more salient
    # feature.
    one_sign = [
        METHOD_TITLES[method]
        for method, (cmap, _) in scales.items()
        if cmap != DIVERGING
    ]
    if one_sign:
        title += (
            f"\n{', '.join(one_sign)} in purple: one sign, darker where more "
            "salient (larger magnitude)"
        )
    return title


def randomization_figure(
    checks: dict,
    data: Any,
    absolute: bool = False,
    titles: dict[str, str] | None = None,
) -> Any:
    """Draw the rank correlations per re-initialised block and the first
    sample's map of the first method at every step.

    Each curve is the mean over the samples, with a band over their middle
    half. ``absolute`` is for maps that are already |map| (``--absolute``),
    whose signed panel repeats the other.
    """
    plt = _pyplot()
    results = checks["randomization"]
    first_method, first = next(iter(results.items()))
    steps = len(first.blocks)
    figure = plt.figure(
        figsize=(max(7.0, 1.1 * (steps + 1)), 5.2), layout="constrained"
    )
    grid = figure.add_gridspec(2, steps + 1, height_ratios=[1, 2.2])

    maps = [np.asarray(first.original)[0]]
    maps += [np.asarray(m)[0] for m in first.randomized]
    labels = ["trained"]
    for b in first.blocks:
        noun = "block" if b + 1 == steps else "blocks"
        labels.append(f"{noun} {_block_range(b + 1, steps)} new")
    for column, (row_map, label) in enumerate(zip(maps, labels)):
        ax = figure.add_subplot(grid[0, column])
        # Each panel has its own magnitude but the colour map of them all.
        _show(ax, row_map, data.image_shape, *_colour_scale(row_map, maps))
        ax.set_title(label, fontsize=7)

    # |map| and the signed map get a panel each, so a method keeps one line
    # style in both.
    panels = grid[1, :].subgridspec(1, 2)
    left = figure.add_subplot(panels[0, 0])
    right = figure.add_subplot(panels[0, 1], sharey=left)
    x_axis = np.arange(steps + 1)
    # Curves can coincide (input x gradient and Integrated Gradients with a
    # zero baseline often do), so each method gets its own line style and
    # marker, and the later ones are drawn thinner and smaller, on top. The
    # gaps of their dashes show the curves below.
    for rank, (method, result) in enumerate(results.items()):
        style = {
            "color": f"C{rank}",
            "linestyle": LINE_STYLES[rank % len(LINE_STYLES)],
            "marker": MARKERS[rank % len(MARKERS)],
            "markersize": max(3.0, 7.0 - rank),
            "linewidth": max(0.8, 2.2 - 0.3 * rank),
            "label": (METHOD_TITLES if titles is None else titles)[method],
        }
        for ax, correlations in ((left, result.spearman_abs), (right, result.spearman)):
            mean = np.concatenate(([1.0], _nanmean_rows(correlations)))
            ax.plot(x_axis, mean, **style)
            # The band spans the middle half of the samples.
            low, high = np.vstack(([[1.0, 1.0]], _quartile_rows(correlations))).T
            ax.fill_between(x_axis, low, high, color=style["color"], alpha=0.1, lw=0)
    ticks = ["none"] + [_block_range(b + 1, steps) for b in first.blocks]
    signed_title = "signed map (here |map|: --absolute)" if absolute else "signed map"
    for ax, title in ((left, "|map|"), (right, signed_title)):
        ax.set_xticks(x_axis, ticks)
        ax.set_xlabel("blocks re-initialised (cascading from the top)", fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.axhline(0.0, color="gray", linewidth=0.5)
    left.set_ylabel(
        "Spearman rank correlation with the\ntrained model's map (mean; band: "
        "middle\nhalf of the samples)",
        fontsize=8,
    )
    right.tick_params(labelleft=False)
    left.legend(fontsize=7)
    figure.suptitle(
        "model-randomisation check\n"
        f"top row: {(METHOD_TITLES if titles is None else titles)[first_method]} "
        "of the first sample, each map "
        "scaled to its own largest magnitude",
        fontsize=9,
    )
    return figure


def _block_range(first: int, last: int) -> str:
    """Name the blocks ``first..last`` (1-based), e.g. ``"2-3"`` or ``"3"``."""
    return str(last) if first == last else f"{first}-{last}"


def deletion_figure(checks: dict, titles: dict[str, str] | None = None) -> Any:
    """Draw the mean class score against the fraction of features removed,
    with ``titles`` (``METHOD_TITLES`` by default) naming the methods."""
    titles = METHOD_TITLES if titles is None else titles
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    random_curve = None
    for method, (curve, _rank_by) in checks["deletion"].items():
        mean = curve.scores.mean(axis=0)
        label = f"{titles[method]} (AUC {np.mean(curve.auc):.3g})"
        ax.plot(curve.fractions, mean, label=label)
        random_curve = curve
    random_mean = random_curve.random_scores.mean(axis=0)
    random_label = f"random order (AUC {np.mean(random_curve.random_auc):.3g})"
    ax.plot(random_curve.fractions, random_mean, "k--", label=random_label)
    ax.set_xlabel(
        f"fraction of features set to {checks['baseline']:g}, the lower end of "
        "the box (most salient first)"
    )
    score = DELETION_SCORES[checks.get("score", "logit")]
    ax.set_ylabel(f"{score} of the predicted class,\nmean over samples")
    negative = ", negative where the logit is" if score == "logit" else ""
    ax.set_title(
        "deletion curve: a lower curve, and a smaller area under it\n"
        f"(AUC{negative}), means a better ranking",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return figure


# The section of the run report.

REPORT_SAMPLES = 3
REPORT_CHECK_SAMPLES = 24
REPORT_METHODS = ("vanilla", "input_x_gradient", "integrated_gradients")
REPORT_GRID_NAME = "saliency_grid.png"
# The figures of the section, which resgrad run checks before any work.
SECTION_FILES = (REPORT_GRID_NAME, RANDOMIZATION_NAME, DELETION_NAME)


def report_section(ctx: RunContext) -> Section:
    """Build the saliency section of the ``resgrad run`` report.

    It draws the maps of a few test digits, measures the Integrated
    Gradients completeness gap, and runs the randomisation check and the
    deletion curve on the first test samples.
    """
    from ..saliency import (
        deletion_curve,
        integrated_gradients,
        randomization_check,
        saliency_map,
    )

    model = ctx.model.convert(dtype="float64")
    data = ctx.data
    x = np.asarray(data.x_test[:REPORT_CHECK_SAMPLES], dtype=np.float64)
    lo, hi = data.bounds
    options = {
        "smoothgrad": {"samples": 16, "bounds": (lo, hi), "seed": ctx.seed},
        "integrated_gradients": {"steps": 32},
    }
    methods = list(METHOD_TITLES)
    x_shown = x[:REPORT_SAMPLES]
    predicted = np.asarray(model.predict(x_shown))
    maps = {}
    for method in ctx.progress(methods, desc="saliency maps", total=len(methods)):
        maps[method] = np.asarray(
            saliency_map(model, x_shown, method, **options.get(method, {}))
        )
    figure = method_grid_figure(
        x_shown,
        maps,
        np.asarray(data.y_test[:REPORT_SAMPLES]),
        predicted,
        data.image_shape,
    )
    write_figure(Path(ctx.out_dir) / REPORT_GRID_NAME, figure)

    ig = integrated_gradients(model, x, **options["integrated_gradients"])
    relative_gap = np.asarray(ig.relative_gap)
    checks = {"randomization": {}, "deletion": {}, "baseline": float(lo)}
    checks["score"] = "logit"
    for method in ctx.progress(REPORT_METHODS, desc="saliency checks"):
        method_opts = options.get(method, {})
        checks["randomization"][method] = randomization_check(
            model, x, method, init_seed=ctx.seed, **method_opts
        )
        saliency = saliency_map(model, x, method, **method_opts)
        curve = deletion_curve(model, x, saliency, baseline=float(lo), seed=ctx.seed)
        checks["deletion"][method] = (curve, "value")
    write_figure(
        Path(ctx.out_dir) / RANDOMIZATION_NAME, randomization_figure(checks, data)
    )
    write_figure(Path(ctx.out_dir) / DELETION_NAME, deletion_figure(checks))

    metrics = check_summary(checks)
    metrics["integrated_gradients_gap"] = {
        "steps": 32,
        "rule": "gausslegendre",
        "samples": int(x.shape[0]),
        "max_relative_gap": float(np.max(relative_gap)),
        "median_relative_gap": float(np.median(relative_gap)),
    }
    return Section(
        title="Saliency maps",
        key="saliency",
        markdown=_report_markdown(metrics, model.depth, _drawn_as_images(data)),
        metrics=metrics,
        files=[REPORT_GRID_NAME, RANDOMIZATION_NAME, DELETION_NAME],
    )


def _drawn_as_images(data: Any) -> bool:
    """Return whether ``_show`` draws the rows of ``data`` as images, not as
    one bar per feature."""
    from ..robustness import display_shape

    features = int(data.x_test.shape[1])
    return display_shape(data.image_shape, features) is not None


def _report_markdown(metrics: dict, depth: int, images: bool = True) -> str:
    gap = metrics["integrated_gradients_gap"]
    unit = "pixel" if images else "feature"
    drawn = "" if images else ", one bar per feature,"
    maps_text = (
        "Each map is built from the row dB_r/dx of the logit Jacobian for the "
        f"predicted class r. Signed maps are drawn{drawn} on a colour scale "
        f"centred at zero, red where a {unit} raises the score and blue where "
        "it lowers it. The manuscript's JSMA map is never positive, so its "
        f"column is drawn in purple from zero, darker where a {unit} is more "
        "salient."
    )

    gap_text = (
        f"Integrated Gradients completeness on {gap['samples']} test samples "
        f"({gap['steps']} Gauss-Legendre points): the attributions sum to "
        "F(x) - F(0) up to a relative gap of at most "
        f"{gap['max_relative_gap']:.2e} (median {gap['median_relative_gap']:.2e})."
    )

    randomization_text = (
        "Model-randomisation check (Adebayo et al. 2018): the Spearman rank "
        "correlation of |map| with the trained model's map, after re-initialising "
        "the blocks from the top. A map that depends on the learned weights "
        "decorrelates."
    )
    if any(method in INPUT_TIMES_MAPS for method in metrics["randomization"]):
        randomization_text += f" {INPUT_CORRELATION[0].upper()}{INPUT_CORRELATION[1:]}."

    deletion_text = (
        "Deletion curve: features are set to the lower bound in saliency order, "
        "and the table gives the area under the class-logit curve against that of "
        "random orders. Lower is better."
    )

    steps = " | ".join(_block_range(b, depth) for b in range(depth, 0, -1))
    lines = [
        f"![maps of {REPORT_SAMPLES} test samples]({REPORT_GRID_NAME})",
        "",
        maps_text,
        "",
        gap_text,
        "",
        randomization_text,
        "",
        f"| method | {steps} |",
        "|---|" + "---|" * depth,
    ]
    undefined = False
    for method, values in metrics["randomization"].items():
        cells = " | ".join(f"{v:.3f}" for v in values["spearman_abs"])
        lines.append(f"| {METHOD_TITLES[method]} | {cells} |")
        undefined = undefined or any(math.isnan(v) for v in values["spearman_abs"])
    if undefined:
        lines += ["", f"NaN: {NAN_CORRELATION}."]

    lines += [
        "",
        f"![randomisation check]({RANDOMIZATION_NAME})",
        "",
        deletion_text,
        "",
        "| method | AUC | random AUC |",
        "|---|---|---|",
    ]
    for method, values in metrics["deletion"].items():
        lines.append(
            f"| {METHOD_TITLES[method]} | {values['auc']:.3f} | "
            f"{values['random_auc']:.3f} |"
        )

    lines += ["", f"![deletion curve]({DELETION_NAME})"]
    return "\n".join(lines)
