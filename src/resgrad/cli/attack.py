"""``resgrad attack``: robust accuracy of a saved model under gradient attacks.

The command loads a model file and the test split of the data, runs each
attack at each eps, and writes ``robustness.md``, ``.csv`` and ``.json``,
``robust_accuracy.png`` (robust accuracy against eps) and
``adversarial_examples.png`` (example inputs with their predicted classes).
``report_section`` gives ``resgrad run`` a short version of the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._arrays import parse_names
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
    writing_into,
)

ACCURACY_FIGURE = "robust_accuracy.png"
EXAMPLES_FIGURE = "adversarial_examples.png"
# The figures of the section, which resgrad run checks before any work.
SECTION_FILES = (ACCURACY_FIGURE, EXAMPLES_FIGURE)
DEFAULT_EPS = "0,0.05,0.1,0.2"

# The report runs every attack at these radii. JSMA and maximal JSMA form a
# (d, d) score matrix per sample and step, so they run on the first
# REPORT_SALIENCY_SAMPLES test rows only. On the digits (450 test rows, 64
# features) the section took about 7 s with one BLAS thread on a busy 2-core
# machine: 4.7 s of attacks and 2.1 s of figures.
REPORT_EPS = (0.05, 0.1, 0.2)
REPORT_SALIENCY_SAMPLES = 150


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..robustness import METHODS

    parser = subparsers.add_parser(
        "attack",
        help="measure robust accuracy under gradient attacks",
        description="Attack the test split with each method at each eps and "
        "write the robustness table (Markdown, CSV, JSON) and two figures.",
    )
    parser.add_argument(
        "--model", type=existing_file, required=True, help="a .npz model file"
    )
    parser.add_argument(
        "--method",
        default="all",
        help=f"comma-separated attacks out of {','.join(METHODS)}, or 'all'; "
        "a repeated one runs once (default: all)",
    )
    parser.add_argument(
        "--eps",
        default=DEFAULT_EPS,
        help="comma-separated L-inf radii, each >= 0, in the units of the "
        "scaled features, which lie in [0, 1] (on the digits, whose pixels run "
        "0 to 16, 0.1 is 1.6 grey levels); pgd_l2 takes eps sqrt(d) as its L2 "
        "radius and jsma and mjsma move a feature by eps; a repeated radius "
        f"runs once (default: {DEFAULT_EPS})",
    )
    add_data_arguments(parser, trained=True)
    parser.add_argument(
        "--out",
        type=output_folder,
        default=None,
        help="output folder, absent or empty unless --overwrite is given "
        "(default: an 'attack' folder beside the model file)",
    )
    add_overwrite_argument(parser)
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="attack only the first N test samples (default: all)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        action=Typed,
        help="seed of the random draws of rfgsm, pgd and pgd_l2 (default: 0); "
        "rejected when --method names none of them, since it would change nothing",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    parser.set_defaults(handler=run_attack)


def run_attack(args: argparse.Namespace) -> int:
    """Run the attacks named on the command line and write the results."""
    from .. import io
    from ..robustness import (
        METHODS,
        PAIR_METHODS,
        RANDOM_METHODS,
        evaluate,
        parse_eps,
    )

    methods = parse_names(args.method, "--method", METHODS)
    random = bool(set(methods) & set(RANDOM_METHODS))
    typed_seed = typed_options(args, ["seed"])
    if typed_seed and not random:
        raise ValueError(
            f"--method {args.method} draws no random numbers, so {typed_seed[0]} "
            f"would change nothing; add one of {', '.join(RANDOM_METHODS)} to "
            "--method, or drop --seed."
        )
    eps_values = parse_eps(args.eps, name="--eps")
    check_figures_installed()
    # The model first: a wrong --model is the more basic mistake, and the
    # default --out is a folder beside it.
    model, metadata = io.load_with_metadata(args.model, dtype="float64")
    out = args.out if args.out is not None else Path(args.model).parent / "attack"
    folder = check_output_folder(out, args.overwrite)
    out = folder.path
    data = load_dataset(args, model, metadata)
    _warn_on_wide_eps(eps_values, data.bounds)
    tables = [f"robustness.{suffix}" for suffix in ("md", "csv", "json")]
    for name in (*tables, ACCURACY_FIGURE, EXAMPLES_FIGURE):
        check_output_file(out / name)
    available = len(data.y_test)
    if args.limit is not None and args.limit > available:
        warn(
            "attack",
            f"--limit {args.limit} is more than the {available} test samples; "
            f"attacking all {available}",
        )
    x, y = data.x_test[: args.limit], data.y_test[: args.limit]
    if args.method.strip().lower() == "all" and data.n_features < 2:
        # As resgrad run does: "all" means every attack that applies.
        methods = [m for m in methods if m not in PAIR_METHODS]
        warn(
            "attack",
            f"jsma and mjsma change features in pairs, and the data have "
            f"{data.n_features} feature; running the other methods.",
        )

    progress = progress_bar(not args.no_progress)
    table = evaluate(
        model, x, y, methods, eps_values, args.seed, progress, bounds=data.bounds
    )
    # The seed reaches only the random attacks.
    context = attack_context(args, data, len(y), args.seed if random else None)
    title = f"{Path(args.model).name} on {data.name}, {plural(len(y), 'test sample')}"
    with writing_into(folder, "attack"):
        paths = write_outputs(table, out, data.image_shape, context, title)
    print(summary(table))
    print(f"wrote {', '.join(str(path) for path in paths)}")
    return 0


# The widest --eps, in box widths. At one width the L-inf ball already contains
# the whole box, and near the float64 maximum the step sizes and the
# figures' axes overflow.
WIDEST_EPS = 1000


def _warn_on_wide_eps(eps_values: list[float], bounds: tuple[float, float]) -> None:
    """Warn about radii wider than the box of the scaled features, which
    suggest a radius in the data's raw units, and reject radii of more than
    ``WIDEST_EPS`` box widths."""
    low, high = bounds
    widest = WIDEST_EPS * (high - low)
    for eps in eps_values:
        if eps > widest:
            raise ValueError(
                f"--eps {eps:g} is more than {WIDEST_EPS} times the width "
                f"{high - low:g} of the box [{low:g}, {high:g}] of the scaled "
                f"features, while at {high - low:g} the L-inf ball already contains "
                "the whole box; pass a smaller eps, in scaled units."
            )
    wide = [eps for eps in eps_values if eps > high - low]
    if wide:
        listed = ",".join(f"{eps:g}" for eps in wide)
        warn(
            "attack",
            f"--eps {listed} exceeds {high - low:g}, the width of the box "
            f"[{low:g}, {high:g}] of the scaled features, so the L-inf ball "
            "contains the whole box; eps is in scaled units, not the data's raw "
            "units.",
        )


def attack_context(
    args: argparse.Namespace, data: Any, samples: int, seed: int | None
) -> dict:
    """Return the settings of an attack run, which the reports record;
    ``seed`` is ``None`` for a run without random attacks."""
    from datetime import datetime, timezone

    from .. import __version__

    return {
        **files_record(args),
        "samples": samples,
        "input_box": list(data.bounds),
        "eps": "L-inf radius in the scaled input units",
        "seed": seed,
        "resgrad_version": __version__,
        "written": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        # The warnings printed so far, such as of training rows in the test
        # part, for a reader of the report alone.
        "warnings": list(WARNINGS),
    }


def write_outputs(
    table: Any,
    out: Path,
    image_shape: tuple[int, int] | None,
    context: dict | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write the table files and both figures into ``out``, the settings of
    ``context`` in the tables and ``title`` over the accuracy plot; return
    their paths."""
    from ..robustness import plot_examples, plot_robust_accuracy, write_table

    paths = write_table(table, out, context=context)
    paths.append(plot_robust_accuracy(table, out / ACCURACY_FIGURE, title))
    paths.append(plot_examples(table, out / EXAMPLES_FIGURE, image_shape))
    return paths


def summary(table: Any) -> str:
    """Return one line of robust accuracies per method, after the clean accuracy."""
    from ..robustness import format_eps

    rows = table.rows
    if not rows:
        return "no attacks were run"
    first = rows[0]
    radii = " ".join(format_eps(eps, table.eps_values) for eps in table.eps_values)
    samples = plural(first.samples, "test sample")
    lines = [
        f"clean accuracy {first.clean_accuracy:.4f} on {samples}",
        f"robust accuracy at eps {radii}",
    ]
    width = max(len(method) for method in table.methods)
    for method in table.methods:
        values = [row for row in rows if row.method == method]
        accuracies = " ".join(f"{row.robust_accuracy:.4f}" for row in values)
        note = ""
        if values[0].samples != first.samples:
            note = f" (first {values[0].samples} samples)"
        lines.append(f"  {method:<{width}}  {accuracies}{note}")
    return "\n".join(lines)


def report_section(ctx: RunContext) -> Section:
    """Build the attack section of the ``resgrad run`` report.

    Every attack runs at eps 0.05, 0.1 and 0.2 on the test split, JSMA and
    maximal JSMA on its first ``REPORT_SALIENCY_SAMPLES`` rows. The two
    figures go into ``ctx.out_dir``.
    """
    from ..robustness import (
        METHODS,
        PAIR_METHODS,
        evaluate,
        parameter_notes,
        plot_examples,
        plot_robust_accuracy,
        to_markdown,
    )

    model = ctx.model.convert(dtype="float64")
    data = ctx.data
    # JSMA and maximal JSMA move pairs of features, which one feature lacks.
    methods = [m for m in METHODS if data.n_features >= 2 or m not in PAIR_METHODS]
    limits = {m: REPORT_SALIENCY_SAMPLES for m in PAIR_METHODS if m in methods}
    table = evaluate(
        model,
        data.x_test,
        data.y_test,
        methods,
        REPORT_EPS,
        ctx.seed,
        ctx.progress,
        bounds=data.bounds,
        limits=limits,
    )
    out = Path(ctx.out_dir)
    samples = int(data.y_test.shape[0])
    title = f"{data.name}, {plural(samples, 'test sample')}"
    if samples > REPORT_SALIENCY_SAMPLES:
        title += f" ({REPORT_SALIENCY_SAMPLES} for jsma and mjsma)"
    plot_robust_accuracy(table, out / ACCURACY_FIGURE, title)
    plot_examples(table, out / EXAMPLES_FIGURE, data.image_shape)
    markdown = _section_markdown(
        table, to_markdown(table), parameter_notes(data.n_features), data, ctx.seed
    )
    metrics = {
        "eps": list(REPORT_EPS),
        "saliency_samples": min(REPORT_SALIENCY_SAMPLES, int(data.y_test.shape[0])),
        "rows": table.to_dicts(),
    }
    figures = [ACCURACY_FIGURE, EXAMPLES_FIGURE]
    return Section("Adversarial robustness", "attacks", markdown, metrics, figures)


def _section_markdown(
    table: Any, rows: str, notes: dict[str, str], data: Any, seed: int = 0
) -> str:
    n = int(data.y_test.shape[0])
    pairs = "jsma" in table.methods
    limited = pairs and n > REPORT_SALIENCY_SAMPLES
    parameters = "; ".join(f"{method}: {notes[method]}" for method in table.methods)
    radii = ", ".join(f"{eps:g}" for eps in REPORT_EPS)
    scope = f"Every attack of `resgrad.attacks` at L-inf radius eps in {{{radii}}} "
    if not pairs:
        scope += (
            f"on all {n} test samples, except JSMA and maximal JSMA, which "
            "change features in pairs and so need at least 2 features."
        )
    elif limited:
        scope += (
            f"on the {n} test samples; JSMA and maximal JSMA run on the first "
            f"{REPORT_SALIENCY_SAMPLES} only, because their pair search costs a "
            "(d, d) matrix per sample and step."
        )
    else:
        scope += f"on all {n} test samples."
    method = "all" if pairs else ",".join(table.methods)
    # The random attacks draw from the run's seed, which the command repeats.
    seeded = f" --seed {seed}" if seed else ""
    command = (
        "The same table for a saved model: `resgrad attack --model "
        f"<run>/model.npz --method {method} --eps 0.05,0.1,0.2{seeded}`."
    )
    if limited:
        command += (
            f" That command runs JSMA and maximal JSMA on all {n} samples, so "
            "their rows can differ from these, which cover the first "
            f"{REPORT_SALIENCY_SAMPLES}."
        )
    targeted = ", ".join(m for m in ("illcm", "jsma") if m in table.methods)
    return "\n".join(
        [
            (
                f"{scope} Robust accuracy is the fraction still classified correctly; the "
                "success rate counts reaching the target for the targeted attacks "
                f"({targeted}) and any wrong class for the others."
            ),
            "",
            f"Parameters: {parameters}.",
            "",
            rows,
            f"![robust accuracy against eps]({ACCURACY_FIGURE})",
            "",
            f"![adversarial examples]({EXAMPLES_FIGURE})",
            "",
            command,
        ]
    )
