"""Robust accuracy of a model under the attacks of ``resgrad.attacks``.

``evaluate`` runs every requested attack at every radius eps on a test batch
and returns a ``RobustnessTable``. Each row gives the clean accuracy, the
robust accuracy (the fraction still classified correctly), the attack's
success rate and the mean and max L-inf, L2 and L0 size of the
perturbations. ``write_table`` stores
it as Markdown, CSV and JSON, ``plot_robust_accuracy`` draws robust accuracy
against eps and ``plot_examples`` shows adversarial inputs with their
predicted classes.

Default parameters per attack at radius eps (``attack_parameters``):

- fgsm: one step of eps.
- bim, illcm, pgd: 10 steps of ``2.5 eps / 10`` (Madry et al. 2017); pgd
  starts at a uniform random point of the eps-ball.
- rfgsm: a random step of ``eps / 2``, then ``eps / 2`` along the gradient.
- mifgsm: 10 steps of ``eps / 10`` with ``mu = 1`` (Dong et al. 2018).
- pgd_l2: the L2 ball of radius ``eps * sqrt(d)``, the L2 norm of a change
  of eps in every feature, so that it spends the same budget per feature as
  the L-inf attacks; 10 steps of ``2.5`` times that radius ``/ 10``.
- jsma: ``theta = eps`` (each chosen feature moves by eps, so the result
  lies in the L-inf ball), ``gamma = 0.5``, and the target is the clean
  input's highest-scoring class other than ``y``.
- mjsma: untargeted on the source class ``y``, ``theta = eps``,
  ``gamma = 0.5``.

With fewer than 4 features, jsma and mjsma take ``gamma = 2 / d`` in place of
0.5, the smallest value that lets one pair of features move.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import numbers
import operator
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _arrays
from .attacks import ATTACKS, AttackResult
from .attacks._common import check_bounds, check_eps
from .io import json_text
from .model import ResidualMLP

Array = Any

METHODS = tuple(ATTACKS)
STEPS = 10
SALIENCY_GAMMA = 0.5
EXAMPLES = 8
PLOT_MARKERS = "osD^v<>ph*"

# The attacks that draw random numbers, and so take a seed.
RANDOM_METHODS = ("rfgsm", "pgd", "pgd_l2")

# The attacks that move features in pairs, and so need two or more features.
PAIR_METHODS = ("jsma", "mjsma")


def parameter_notes(d: int) -> dict[str, str]:
    """Return a one-line description of each method's defaults on inputs of
    ``d`` features, for the JSON table and the reports."""
    gamma = attack_parameters("jsma", 1.0, d)["gamma"]
    return {
        "fgsm": "one step of eps",
        "bim": "10 steps of 2.5 eps / 10",
        "illcm": "10 steps of 2.5 eps / 10 toward the least-likely class",
        "rfgsm": "random step eps / 2, gradient step eps / 2",
        "mifgsm": "10 steps of eps / 10, mu = 1",
        "pgd": "random start, 10 steps of 2.5 eps / 10",
        "pgd_l2": "L2 radius eps sqrt(d), random start, 10 steps of 2.5 radius / 10",
        "jsma": f"theta = eps, gamma = {gamma:g}, target: runner-up class",
        "mjsma": f"untargeted, theta = eps, gamma = {gamma:g}",
    }


@dataclass
class RobustnessRow:
    """The outcome of one attack at one radius on ``samples`` inputs.

    Accuracies and rates are fractions in ``[0, 1]``. The norms are those
    of ``x_adv - x``, in input units.
    """

    method: str
    eps: float
    samples: int
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float
    mean_linf: float
    max_linf: float
    mean_l2: float
    max_l2: float
    mean_l0: float
    max_l0: float

    __repr__ = _arrays.summary_repr


@dataclass
class Examples:
    """The first few adversarial inputs of one attack at one radius (NumPy)."""

    x_adv: np.ndarray
    prediction: np.ndarray

    __repr__ = _arrays.summary_repr


@dataclass
class RobustnessTable:
    """The rows of ``evaluate`` and the examples that ``plot_examples`` draws.

    Attributes:
        rows: one ``RobustnessRow`` per method and eps, methods outermost.
        x: the first clean inputs, shape ``(k, d)``.
        y: their labels, shape ``(k,)``.
        clean_prediction: the model's classes for ``x``, shape ``(k,)``.
        examples: the adversarial versions of ``x`` keyed by ``(method, eps)``.
        bounds: the input box ``(lo, hi)``.
    """

    rows: list[RobustnessRow]
    x: np.ndarray
    y: np.ndarray
    clean_prediction: np.ndarray
    examples: dict[tuple[str, float], Examples] = field(default_factory=dict)
    bounds: tuple[float, float] = (0.0, 1.0)

    __repr__ = _arrays.summary_repr

    def to_dicts(self) -> list[dict[str, Any]]:
        """Return the rows as plain dicts, for JSON and CSV."""
        return [asdict(row) for row in self.rows]

    @property
    def methods(self) -> list[str]:
        """The methods in the order of the rows."""
        return list(dict.fromkeys(row.method for row in self.rows))

    @property
    def eps_values(self) -> list[float]:
        """The radii in the order of the rows."""
        return list(dict.fromkeys(row.eps for row in self.rows))


# Arguments.


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """Return the attack names in ``methods``, with ``"all"`` for every attack.

    ``methods`` is a sequence of names or one comma-separated string. Names
    are case-insensitive, and a repeated name is kept once, where it first
    appears.

    Raises:
        ValueError: on an unknown or missing name, on an empty item of the
            string, such as the last one of fgsm,, and on "all" beside other
            names.
    """
    return _arrays.parse_names(methods, "methods", METHODS)


def parse_eps(eps_values: str | Iterable[float], *, name: str = "eps") -> list[float]:
    """Return the radii in ``eps_values`` (floats, one float or a
    comma-separated string).

    A repeated radius is kept once, where it first appears, so no attack runs
    twice at one radius. ``name`` names the radii in messages, such as
    ``--eps`` for the command line.

    Raises:
        ValueError: on a value that is not a number, or is negative or NaN, and
            on an empty item of the string, such as the middle one of 0.1,,0.2.
    """
    if isinstance(eps_values, str):
        values = []
        parts = [part.strip() for part in eps_values.split(",")]
        if parts != [""] and "" in parts:
            raise ValueError(
                f"Empty item in {name} {eps_values!r}; remove the extra comma, as "
                "in 0.1,0.2."
            )
        for text in parts:
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"Invalid {name} {text!r}; expected numbers such as 0,0.1."
                ) from None
            if math.isinf(value) and "inf" not in text.lower():
                raise ValueError(
                    f"Invalid {name} {text!r}: it is beyond the largest float; "
                    "pass a finite radius, such as 0.1."
                )
            values.append(value)
    elif isinstance(eps_values, numbers.Real) or getattr(eps_values, "ndim", 1) == 0:
        # One radius: a Python number, or a 0-d NumPy or torch array.
        values = [float(eps_values)]
    else:
        values = list(eps_values)
    if not values:
        raise ValueError(f"Expected at least one {name} value, such as 0,0.05,0.1.")
    # Adding 0.0 turns -0.0, which check_eps accepts, into 0.0 for printing.
    return list(dict.fromkeys(check_eps(value, name=name) + 0.0 for value in values))


def attack_parameters(method: str, eps: float, d: int) -> dict[str, Any]:
    """Return the keyword arguments ``evaluate`` passes to an attack at radius eps.

    ``d`` is the input width. The step sizes are the attacks' own defaults:
    ``2.5 eps / steps`` for bim, illcm, pgd and pgd_l2, ``eps / steps`` for
    mifgsm and ``eps / 2`` for the random step of rfgsm. The module
    docstring gives the reasons.
    """
    if method in ("fgsm", "rfgsm"):
        return {"eps": eps}
    if method in ("bim", "illcm", "pgd"):
        return {"eps": eps, "steps": STEPS}
    if method == "mifgsm":
        return {"eps": eps, "steps": STEPS, "mu": 1.0}
    if method == "pgd_l2":
        return {"eps": eps * math.sqrt(d), "steps": STEPS}
    if method in PAIR_METHODS:
        # At least one pair of features, floor(d gamma / 2) >= 1.
        return {"theta": eps, "gamma": max(SALIENCY_GAMMA, min(1.0, 2 / d))}
    raise ValueError(
        f"Unknown attack method {method!r}; expected one of: {', '.join(METHODS)}."
    )


def runner_up_class(model: ResidualMLP, x: Array, y: Array) -> Array:
    """Return the highest-scoring class other than ``y`` per row, shape ``(n,)``."""
    xp = model.xp
    logits = model._class_scores(*model.trace(x))
    own = _arrays.one_hot(
        xp, y, model.n_classes, xp.bool, _arrays.array_api_compat.device(x)
    )
    lowest = xp.full_like(logits, -math.inf)
    return xp.argmax(xp.where(own, lowest, logits), axis=1)


def run_attack(
    model: ResidualMLP,
    x: Array,
    y: Array,
    method: str,
    eps: float,
    seed: int | np.random.Generator | None = 0,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> AttackResult:
    """Run ``method`` at radius ``eps`` with the defaults of ``attack_parameters``."""
    kwargs = attack_parameters(method, eps, int(x.shape[1]))
    if method in RANDOM_METHODS:
        kwargs["seed"] = seed
    if method == "jsma":
        kwargs["target"] = runner_up_class(model, x, y)
    return ATTACKS[method](model, x, y, bounds=bounds, **kwargs)


# Evaluation.


def evaluate(
    model: ResidualMLP,
    x: Array,
    y: Array,
    methods: str | Sequence[str] = "all",
    eps_values: str | Iterable[float] = (0.05, 0.1, 0.2),
    seed: int = 0,
    progress: Callable[..., Iterable] | bool | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    limits: dict[str, int] | None = None,
    examples: int = EXAMPLES,
) -> RobustnessTable:
    """Attack ``x`` with every method at every eps and tabulate the outcome.

    Args:
        model: the network under attack.
        x: test inputs of shape ``(n, d)`` in ``bounds``, in the model's
            namespace and dtype.
        y: their labels, shape ``(n,)``.
        methods: attack names or ``"all"`` (see ``resgrad.attacks.ATTACKS``).
        eps_values: the radii, each ``>= 0``, or one radius.
        seed: the seed of the random attacks. Each (method, eps) draws from
            its own stream, so a row does not depend on the other rows.
        progress: wraps the list of (method, eps) runs, as
            ``progress(iterable, desc=..., total=...)``, e.g. a tqdm bar;
            ``True`` draws one.
        bounds: the input box ``(lo, hi)``.
        limits: the largest number of samples per method, e.g.
            ``{"jsma": 100}``; a method runs on the first rows of ``x``.
            Entries of methods not in ``methods`` are ignored, so one dict
            can serve several calls.
        examples: how many adversarial inputs per run to keep for plots.

    Returns:
        A ``RobustnessTable`` with the methods in the order given.
    """
    progress = _arrays.progress_wrapper(progress)
    # The namespace check names the fix for lists and DataFrames, which the
    # slicing below would fail on.
    _arrays.namespace(x, y)
    if getattr(x, "ndim", 0) >= 1 and int(x.shape[0]) == 0:
        # The accuracies of no samples would be NaN.
        raise ValueError("Expected at least one row in x, got none.")
    names = parse_methods(methods)
    pairwise = [name for name in names if name in PAIR_METHODS]
    if pairwise and getattr(x, "ndim", 0) == 2 and x.shape[1] < 2:
        verb = "changes" if len(pairwise) == 1 else "change"
        others = [name for name in METHODS if name not in PAIR_METHODS]
        raise ValueError(
            f"{' and '.join(pairwise)} {verb} features in pairs, and x has "
            f"{x.shape[1]} feature; leave {'it' if len(pairwise) == 1 else 'them'} "
            f"out of the methods (--method of resgrad attack), which may be any "
            f"of: {', '.join(others)}."
        )
    radii = parse_eps(eps_values)
    bounds = check_bounds(bounds)
    limits = _check_limits(limits or {}, names)
    examples = _check_examples(examples)
    seed = _arrays.check_seed(seed)
    runs = [(method, eps) for method in names for eps in radii]
    if progress is not None:
        runs = progress(runs, desc="attacks", total=len(runs))
    # A tqdm bar names the run it waits on, since JSMA takes far longer than
    # the others.
    set_postfix = getattr(runs, "set_postfix_str", None)

    # Slices stay within the rows, as strict array-API namespaces require.
    n = int(x.shape[0])
    keep = slice(0, min(examples, n))
    clean = _arrays.to_numpy(model.predict(x[keep, ...]))
    table = RobustnessTable(
        [],
        _arrays.to_numpy(x[keep, ...]),
        _arrays.to_numpy(y[keep]),
        clean,
        bounds=bounds,
    )
    for method, eps in runs:
        if set_postfix is not None:
            set_postfix(f"{method} eps={format_eps(eps)}")
        rows = slice(0, min(limits.get(method, n), n))
        x_run, y_run = x[rows, ...], y[rows]
        rng = np.random.default_rng([seed, METHODS.index(method), _eps_key(eps)])
        result = run_attack(model, x_run, y_run, method, eps, rng, bounds)
        table.rows.append(_row(model, method, eps, x_run, y_run, result))
        kept = slice(0, min(examples, int(x_run.shape[0])))
        table.examples[(method, eps)] = Examples(
            _arrays.to_numpy(result.x_adv[kept, ...]),
            _arrays.to_numpy(result.prediction[kept]),
        )
    return table


def _check_examples(examples: Any) -> int:
    """Return ``examples``, the adversarial inputs to keep for plots, as an
    int >= 0."""
    return _arrays.check_count("examples", examples, 0)


def _check_limits(limits: dict[str, int], names: list[str]) -> dict[str, int]:
    unknown = sorted(set(limits) - set(METHODS))
    if unknown:
        raise ValueError(
            f"Unknown methods in limits: {unknown}; expected any of {METHODS}."
        )
    for method, count in limits.items():
        if (
            isinstance(count, bool)
            or not isinstance(count, numbers.Integral)
            or count < 1
        ):
            raise ValueError(
                f"Expected a sample limit >= 1 for {method}, got {count!r}."
            )
    return {method: int(limits[method]) for method in names if method in limits}


def _eps_key(eps: float) -> int:
    """Return an integer that names ``eps`` in a seed sequence."""
    scaled = eps * 1e9
    if math.isfinite(scaled):
        return round(scaled)
    # Above about 1.8e299 the scaled value overflows, so the float's bits
    # name it instead. Such keys lie above every scaled one.
    return int.from_bytes(struct.pack("<d", eps), "little") << 1024


def _row(model, method, eps, x, y, result: AttackResult) -> RobustnessRow:
    y = _arrays.to_numpy(y)
    clean = _arrays.to_numpy(model.predict(x)) == y
    robust = _arrays.to_numpy(result.prediction) == y
    (mean_linf, max_linf), (mean_l2, max_l2), (mean_l0, max_l0) = (
        _norm_stats(_arrays.to_numpy(v)) for v in (result.linf, result.l2, result.l0)
    )
    return RobustnessRow(
        method=method,
        eps=eps,
        samples=int(y.shape[0]),
        clean_accuracy=_mean(clean),
        robust_accuracy=_mean(robust),
        success_rate=_mean(_arrays.to_numpy(result.success)),
        mean_linf=mean_linf,
        max_linf=max_linf,
        mean_l2=mean_l2,
        max_l2=max_l2,
        mean_l0=mean_l0,
        max_l0=max_l0,
    )


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def _norm_stats(norms: np.ndarray) -> tuple[float, float]:
    """Return the mean and the maximum of per-sample norms, NaN for none."""
    if not norms.size:
        return math.nan, math.nan
    norms = norms.astype(np.float64)
    largest = float(np.max(norms))
    # The rounding of a sum can put the mean of equal values one unit in the
    # last place above them, so above the maximum.
    return min(float(np.mean(norms)), largest), largest


# Tables.

COLUMNS = (
    ("method", "method", "{}"),
    ("eps", "eps", "{}"),
    ("samples", "samples", "{}"),
    ("clean_accuracy", "clean acc.", "{:.4f}"),
    ("robust_accuracy", "robust acc.", "{:.4f}"),
    ("success_rate", "success", "{:.4f}"),
    ("mean_linf", "mean L-inf", "{:.4f}"),
    ("max_linf", "max L-inf", "{:.4f}"),
    ("mean_l2", "mean L2", "{:.4f}"),
    ("max_l2", "max L2", "{:.4f}"),
    ("mean_l0", "mean L0", "{:.1f}"),
    ("max_l0", "max L0", "{:.0f}"),
)


def to_markdown(table: RobustnessTable) -> str:
    """Return the rows as a Markdown table, one line per method and eps."""
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = (
        "|"
        + "|".join("---" if key == "method" else "---:" for key, _, _ in COLUMNS)
        + "|"
    )
    lines = [header, rule]
    for row in table.to_dicts():
        cells = [
            format_eps(row[key], table.eps_values)
            if key == "eps"
            else form.format(row[key])
            for key, _, form in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: RobustnessTable) -> str:
    """Return the rows as CSV with a header line of field names."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[key for key, _, _ in COLUMNS], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(table.to_dicts())
    return buffer.getvalue()


def to_json(table: RobustnessTable, context: dict[str, Any] | None = None) -> str:
    """Return the rows and the default parameters of each method as JSON,
    after ``context``, the settings that produced them, when given."""
    payload = {} if context is None else {"context": context}
    notes = parameter_notes(int(table.x.shape[1]))
    payload.update(
        {
            "bounds": list(table.bounds),
            "parameters": {method: notes[method] for method in table.methods},
            "rows": table.to_dicts(),
        }
    )
    return json_text(payload)


# The meaning of each column of the Markdown table, printed below it.
COLUMN_NOTES = (
    "clean acc. and robust acc.: the accuracy on the samples before and after "
    "the attack; success: the fraction of samples that the attack leaves "
    "misclassified (for a targeted attack, classified as the target), "
    "including samples misclassified before it; L-inf, L2 and L0: the size "
    "of the perturbation in the scaled input units, L0 counting the changed "
    "features."
)


def report_markdown(table: RobustnessTable, context: dict[str, Any]) -> str:
    """Return the Markdown report: ``context`` (setting: value) as a list,
    the table, what its columns measure and each method's parameters."""
    lines = ["# Robust accuracy", ""]
    for name, value in context.items():
        if name == "warnings":
            lines += [f"- warning: {message}" for message in value or ()]
        elif value is not None:
            lines.append(f"- {name.replace('_', ' ')}: {value}")
    lines += ["", to_markdown(table), COLUMN_NOTES, "", "Parameters:", ""]
    notes = parameter_notes(int(table.x.shape[1]))
    lines += [f"- {method}: {notes[method]}" for method in table.methods]
    return "\n".join(lines) + "\n"


def write_table(
    table: RobustnessTable,
    folder: str | Path,
    stem: str = "robustness",
    context: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into ``folder``.

    ``context`` maps setting names, such as the model and data files, to
    values. With it, the Markdown file is a report: the settings, the table,
    its column notes and the parameters. The JSON file then records the
    settings too.

    Each file is written to a temporary name and renamed, so none is left
    half written. Returns the paths written.
    """
    from .cli._common import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = (
        to_markdown(table) if context is None else report_markdown(table, context)
    )
    paths = []
    for suffix, text in (
        ("md", markdown),
        ("csv", to_csv(table)),
        ("json", to_json(table, context)),
    ):
        path = folder / f"{stem}.{suffix}"
        write_atomic(path, text)
        paths.append(path)
    return paths


# Figures.


def plot_robust_accuracy(
    table: RobustnessTable, path: str | Path, title: str | None = None
) -> Path:
    """Draw robust accuracy against eps, one line per method, as a PNG at
    ``path``, under ``title`` when given.

    Every curve starts at eps = 0 with the clean accuracy of the samples that
    method attacked, because every attack returns its input at eps = 0.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for rank, method in enumerate(table.methods):
        rows = sorted(
            (row for row in table.rows if row.method == method),
            key=lambda row: row.eps,
        )
        points = [(row.eps, row.robust_accuracy) for row in rows]
        if rows[0].eps > 0:
            points.insert(0, (0.0, rows[0].clean_accuracy))
        eps, accuracy = zip(*points)
        # Curves such as bim and pgd nearly coincide, so markers tell them apart.
        marker = PLOT_MARKERS[rank % len(PLOT_MARKERS)]
        axes.plot(eps, accuracy, marker=marker, markersize=5, label=method)
    axes.set_xlabel(eps_axis_label(table.methods))
    axes.set_ylabel("robust accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    if title is not None:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def format_eps(eps: float, radii: Iterable[float] = ()) -> str:
    """Return ``eps`` in 6 significant digits, or in as many more as it
    takes to print it apart from the other ``radii``: 0.1 and 0.1000001.

    A subnormal prints in the fewest digits that give it back: 1e-320,
    stored as 9.99989e-321, prints as it was typed.
    """
    eps = float(eps)
    digits = _separating_digits(frozenset(map(float, radii)) | {eps})
    return repr(eps) if digits is None else _digits(eps, digits)


@functools.lru_cache(maxsize=16)
def _separating_digits(values: frozenset[float]) -> int | None:
    """Return the fewest digits, from 6, that print ``values`` apart, or
    ``None`` if 17 do not. The result is cached because a table formats
    each of its radii against the same set."""
    for digits in range(6, 18):
        if len({_digits(value, digits) for value in values}) == len(values):
            return digits
    return None


def _digits(value: float, digits: int) -> str:
    """Return ``value`` in the ``.{digits}g`` form, or for a subnormal in the
    shortest ``.Ng`` form, ``N <= digits``, that reads back as it.

    A normal float's ``.{digits}g`` form is already as short as its value
    allows. A subnormal's is not, because the wide spacing of subnormals
    makes several of its digits rounding.
    """
    if 0 < abs(value) < sys.float_info.min:
        for count in range(1, digits):
            short = f"{value:.{count}g}"
            if float(short) == value:
                return short
    return f"{value:.{digits}g}"


def eps_axis_label(methods: Iterable[str]) -> str:
    """Return the eps axis label; it names pgd_l2's radius only when it ran."""
    if "pgd_l2" in methods:
        return "eps (L-inf radius; pgd_l2 uses eps sqrt(d))"
    return "eps (L-inf radius)"


# Rows of at most this many features are drawn as one strip; longer rows of
# data that are not images wrap into a near-square grid.
STRIP_FEATURES = 32


def display_shape(
    image_shape: tuple[int, int] | None, features: int
) -> tuple[int, int] | None:
    """Return the ``(height, width)`` to draw a row of ``features`` values in.

    Images keep their ``image_shape``. Other rows of more than
    ``STRIP_FEATURES`` values wrap, in order, into rows of
    ``ceil(sqrt(features))`` values, so 784 pixels of a CSV file become a
    28 x 28 image. Shorter rows give ``None``, one strip.
    """
    if image_shape is not None:
        return _checked_image_shape(image_shape, features)
    if features <= STRIP_FEATURES:
        return None
    width = math.ceil(math.sqrt(features))
    return math.ceil(features / width), width


def _checked_image_shape(image_shape: Any, features: int) -> tuple[int, int]:
    """Return ``image_shape`` as a pair of ints whose product is ``features``."""
    try:
        shape = tuple(operator.index(side) for side in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 2:
        raise TypeError(
            f"Expected image_shape as a pair (height, width) of integers, got "
            f"{image_shape!r}; pass None to draw other rows as strips or grids."
        )
    if min(shape) < 1 or shape[0] * shape[1] != features:
        raise ValueError(
            f"Expected image_shape (height, width) with height * width = "
            f"{features}, the number of features, got {image_shape!r}."
        )
    return shape


# The colour of the cells that pad the last row of a wrapped grid, which no
# value of a grey, purple or diverging colour map takes.
PADDING_COLOUR = "khaki"


def padded_cmap(name: str) -> Any:
    """Return the colour map ``name`` drawing NaN, the padding of
    ``as_image``, in ``PADDING_COLOUR``."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=PADDING_COLOUR)


def as_image(row: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """Reshape one input row to ``shape`` from ``display_shape``, padding the
    last grid row with NaN, which ``padded_cmap`` colour maps draw apart
    from every value; ``None`` gives one strip."""
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    if shape is None:
        return row.reshape(1, -1)
    padded = np.full(shape[0] * shape[1], np.nan)
    padded[: row.size] = row
    return padded.reshape(shape)


def plot_examples(
    table: RobustnessTable,
    path: str | Path,
    image_shape: tuple[int, int] | None = None,
    eps: float | None = None,
) -> Path:
    """Draw the clean examples and their adversarial versions as a PNG grid.

    The first row shows the clean inputs with their labels and predicted
    classes, and each further row one method at radius ``eps`` (default: the
    largest in the table). A title is red where the predicted class differs
    from the label. Inputs are drawn as ``image_shape`` images, or as
    ``display_shape`` gives for other data.
    """
    plt = _pyplot()
    eps = max(table.eps_values) if eps is None else eps
    if eps not in table.eps_values:
        radii = ", ".join(
            format_eps(value, table.eps_values) for value in table.eps_values
        )
        raise ValueError(
            f"eps={eps!r} is not a radius of the table ({radii}); pass one of "
            "them, or None for the largest."
        )
    methods = [m for m in table.methods if (m, eps) in table.examples]
    count = int(table.x.shape[0])
    shape = display_shape(image_shape, int(table.x.shape[1]))
    figure, grid = plt.subplots(
        1 + len(methods),
        max(count, 1),
        # Wide and tall enough for the title lines however few the examples.
        figsize=(max(1.2 * count, 6.4), 1.35 * (1 + len(methods)) + 0.3),
        squeeze=False,
    )
    lo, hi = table.bounds
    rows = [("clean", table.x, table.clean_prediction)] + [
        (m, table.examples[(m, eps)].x_adv, table.examples[(m, eps)].prediction)
        for m in methods
    ]
    for r, (label, inputs, predictions) in enumerate(rows):
        # A method limited to fewer rows has fewer examples than the clean row.
        row_examples = int(np.asarray(inputs).shape[0])
        # An L2 attack, or JSMA, can move one feature by more than eps, so a
        # row of bars spans its largest change when that is wider.
        changes = np.asarray(inputs) - table.x[:row_examples]
        largest = float(np.max(np.abs(changes), initial=0.0))
        radius = max(eps, largest)
        for c in range(grid.shape[1]):
            axes = grid[r, c]
            axes.set_xticks([])
            axes.set_yticks([])
            if c >= row_examples:
                axes.axis("off")
                continue
            if shape is not None:
                axes.imshow(
                    as_image(inputs[c], shape),
                    cmap=padded_cmap("gray_r"),
                    vmin=lo,
                    vmax=hi,
                    aspect="equal",
                )
            else:
                if r == 0:
                    feature_bars(axes, table.x[c], (lo, hi))
                else:
                    change = np.asarray(inputs[c]) - np.asarray(table.x[c])
                    # eps = 0 changes nothing, and the axis still needs a height.
                    limits = (-radius, radius) if radius > 0 else (-1.0, 1.0)
                    # Red titles mark changed predictions, so bars avoid red.
                    rises = np.where(change >= 0, RISE_COLOUR, FALL_COLOUR)
                    feature_bars(axes, change, limits, rises)
                if c == 0:
                    # The first column carries the scale that its row shares.
                    axes.set_yticks(axes.get_ylim())
                    axes.tick_params(labelsize=6)
            truth, guess = int(table.y[c]), int(predictions[c])
            title = f"y={truth} p={guess}" if r == 0 else f"p={guess}"
            axes.set_title(
                title, fontsize=8, color="black" if guess == truth else "red"
            )
        grid[r, 0].set_ylabel(label, fontsize=8)
    bars = ""
    if shape is None:
        bars = (
            "\nbars: the features of the clean input, and for each method"
            "\nthe change x_adv - x (orange up, blue down)"
        )
    figure.suptitle(
        f"adversarial examples at eps = {format_eps(eps)}\n"
        f"y: label, p: predicted class, red where p differs from y{bars}",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, path)


# The colours of the bars of features that an attack raised and lowered.
RISE_COLOUR = "tab:orange"
FALL_COLOUR = "tab:blue"


def feature_bars(
    axes: Any, values: Any, limits: tuple[float, float], colour: Any = "0.4"
) -> None:
    """Draw one short non-image row as one bar per feature in ``colour`` (one
    colour, or one per bar), with the y axis over ``limits`` when they span
    an interval."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    axes.bar(np.arange(values.size), values, width=0.8, color=colour)
    low, high = limits
    if high > low:
        axes.set_ylim(low, high)
    axes.axhline(0.0, color="0.7", linewidth=0.5)


def _pyplot():
    from .cli._common import pyplot

    return pyplot()


def _save(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG through a temporary file and close it."""
    from .cli._common import write_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(path, figure, dpi=110)
    return path
