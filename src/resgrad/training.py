"""Training by the explicit gradients: optimizers, ``fit`` and evaluation.

The weight gradients come from the backpropagation recurrence of
``resgrad.gradients`` (no autograd), and the optimizers act on dicts of
arrays keyed as ``ResidualMLP.arrays()``. Every update is written against the
array API, so NumPy and PyTorch weights run the same lines, and no update
writes into the caller's dicts or arrays.

Weight decay follows ``torch.optim``: it adds ``weight_decay * w`` to the
gradient before the step (an L2 penalty, not decoupled decay) and applies to
every trained array, biases included.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _arrays, _lock, _numpy_route, io
from .data import train_test_split
from .gradients import gradients
from .losses import check_targets, get_loss
from .model import ForwardOverflowError, ResidualMLP, _to_namespace

_CHECKPOINT_IN_USE_HINT = (
    "wait for that run to end, or pass another checkpoint path to fit."
)

Array = Any
Params = dict[str, Array]

TRAINING_LOSSES = ("cross_entropy", "squared_error")

# With the rest of DEFAULT_RECIPE, each rate reached a test accuracy of at
# least 0.971 on the digits over seeds 0 to 2.
DEFAULT_LEARNING_RATES = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3}

# The recipe for the digits (64 features, 10 classes), measured with fit and
# accuracy on the stratified 75/25 split of resgrad.data.load_digits (seed 0)
# with NumPy float64 on 2 shared CPU cores. Over model and fit seeds 0 to 19
# the test accuracy was 0.973 to 0.989 (mean 0.981), and a fit took 4 to 10 s
# of wall time. It trains on every training row for a fixed number of epochs.
# Early stopping on a 10% validation split (135 rows, patience 10) did worse,
# because the validation loss reached its minimum while the accuracy still
# improved: over seeds 0 to 9 it reached a mean of 0.976 and a minimum of
# 0.962. Widths and hidden widths of 128 (30 epochs) reached a mean of 0.977
# and a minimum of 0.971.
DEFAULT_RECIPE: dict[str, dict[str, Any]] = {
    # Keywords of ResidualMLP.init; for other data replace the first size by
    # the number of features and the last by the number of classes.
    "model": {
        "sizes": [64, 256, 256, 10],
        "hidden": 256,
        "activation": "relu",
        "shortcut": "learned",
        "init": "he",
    },
    # Keywords of fit.
    "fit": {
        "optimizer": "adam",
        "lr": 1e-3,
        "epochs": 20,
        "batch_size": 32,
        "validation": None,
    },
}

# A relu network pushed by too large a learning rate often ends with huge but
# finite losses (its units die) rather than NaN, so a mini-batch loss above
# this factor times max(first mini-batch loss, 1) also counts as diverged.
DIVERGENCE_FACTOR = 1e4


class TrainingDiverged(ValueError):
    """Raised when a loss, a gradient or a weight becomes NaN or infinite, or
    the loss grows past ``DIVERGENCE_FACTOR`` times its first value."""


class CheckpointMismatch(ValueError):
    """Raised when ``fit(resume=True)`` meets a checkpoint that a run with
    other settings (model, data, optimizer, seed, batch size) wrote."""


# Optimizers.


def _check_positive(name: str, value: float) -> float:
    value = _arrays.check_number(name, value, finite=False)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Expected a finite {name} > 0, got {value}.")
    return value


def _check_fraction(name: str, value: float) -> float:
    value = _arrays.check_number(name, value, finite=False)
    if not 0 <= value < 1:
        raise ValueError(f"Expected {name} in [0, 1), got {value}.")
    return value


def _check_weight_decay(value: float) -> float:
    value = _arrays.check_number("weight_decay", value, finite=False)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Expected a finite weight_decay >= 0, got {value}.")
    return value


def _check_keys(grads: Params, params: Params) -> None:
    if set(grads) != set(params):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(
            f"Expected one gradient per parameter; missing gradients for "
            f"{missing}, gradients without a parameter: {extra}."
        )


def _decayed(grads: Params, params: Params, weight_decay: float) -> Params:
    """Return ``g + weight_decay * w`` per key (``g`` itself without decay)."""
    if weight_decay == 0:
        return dict(grads)
    return {name: g + weight_decay * params[name] for name, g in grads.items()}


class SGDState(NamedTuple):
    """The state of ``SGD``: the number of steps taken."""

    count: int


class MomentumState(NamedTuple):
    """The state of ``Momentum``: the steps taken and the velocity ``b`` per key."""

    count: int
    velocity: Params


class AdamState(NamedTuple):
    """The state of ``Adam``: the steps taken ``t`` and the moments ``m``, ``v``."""

    count: int
    mu: Params
    nu: Params


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent, ``w <- w - lr (g + weight_decay w)``.

    Matches ``torch.optim.SGD(lr=lr, weight_decay=weight_decay)``.
    """

    lr: float = DEFAULT_LEARNING_RATES["sgd"]
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _check_positive("learning rate", self.lr))
        object.__setattr__(self, "weight_decay", _check_weight_decay(self.weight_decay))

    def init(self, params: Params) -> SGDState:
        """Return the state before the first step."""
        return SGDState(count=0)

    def update(
        self, grads: Params, state: SGDState, params: Params
    ) -> tuple[Params, SGDState]:
        """Take one step; return the new parameters and the new state."""
        _check_keys(grads, params)
        grads = _decayed(grads, params, self.weight_decay)
        new_params = {name: w - self.lr * grads[name] for name, w in params.items()}
        return new_params, SGDState(count=state.count + 1)


@dataclass(frozen=True)
class Momentum:
    """Gradient descent with (Nesterov) momentum.

    With ``g = grad + weight_decay * w`` and the velocity ``b_0 = 0``::

        b_t = momentum * b_{t-1} + g
        w_t = w_{t-1} - lr * b_t                       (heavy ball)
        w_t = w_{t-1} - lr * (g + momentum * b_t)      (nesterov=True)

    Matches ``torch.optim.SGD(lr, momentum, nesterov=..., weight_decay=...)``
    with no dampening (Sutskever et al. 2013).
    """

    lr: float = DEFAULT_LEARNING_RATES["momentum"]
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _check_positive("learning rate", self.lr))
        object.__setattr__(self, "momentum", _check_fraction("momentum", self.momentum))
        object.__setattr__(self, "weight_decay", _check_weight_decay(self.weight_decay))
        object.__setattr__(
            self, "nesterov", _arrays.check_flag("nesterov", self.nesterov)
        )
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0, got 0.")

    def init(self, params: Params) -> MomentumState:
        """Return the state before the first step: a zero velocity per key."""
        xp = _arrays.namespace(*params.values())
        return MomentumState(0, {name: xp.zeros_like(w) for name, w in params.items()})

    def update(
        self, grads: Params, state: MomentumState, params: Params
    ) -> tuple[Params, MomentumState]:
        """Take one step; return the new parameters and the new state."""
        _check_keys(grads, params)
        grads = _decayed(grads, params, self.weight_decay)
        velocity = {
            name: self.momentum * state.velocity[name] + g for name, g in grads.items()
        }
        if self.nesterov:
            steps = {
                name: g + self.momentum * velocity[name] for name, g in grads.items()
            }
        else:
            steps = velocity
        new_params = {name: w - self.lr * steps[name] for name, w in params.items()}
        return new_params, MomentumState(state.count + 1, velocity)


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction (Kingma and Ba 2015).

    With ``g = grad + weight_decay * w``, ``m_0 = v_0 = 0`` and step ``t``::

        m_t = b1 m_{t-1} + (1 - b1) g
        v_t = b2 v_{t-1} + (1 - b2) g^2
        w_t = w_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v_t / (1 - b2^t)) + eps)

    Matches ``torch.optim.Adam(lr, betas=(b1, b2), eps, weight_decay)``.
    """

    lr: float = DEFAULT_LEARNING_RATES["adam"]
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _check_positive("learning rate", self.lr))
        object.__setattr__(self, "b1", _check_fraction("b1", self.b1))
        object.__setattr__(self, "b2", _check_fraction("b2", self.b2))
        object.__setattr__(self, "weight_decay", _check_weight_decay(self.weight_decay))
        eps = _arrays.check_number("eps", self.eps, finite=False)
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"Expected a finite eps >= 0, got {eps}.")
        object.__setattr__(self, "eps", eps)

    def init(self, params: Params) -> AdamState:
        """Return the state before the first step: zero moments per key."""
        xp = _arrays.namespace(*params.values())
        zeros = {name: xp.zeros_like(w) for name, w in params.items()}
        return AdamState(0, zeros, dict(zeros))

    def update(
        self, grads: Params, state: AdamState, params: Params
    ) -> tuple[Params, AdamState]:
        """Take one step; return the new parameters and the new state."""
        _check_keys(grads, params)
        xp = _arrays.namespace(*params.values())
        grads = _decayed(grads, params, self.weight_decay)
        count = state.count + 1
        b1, b2 = self.b1, self.b2
        mu = {n: b1 * state.mu[n] + (1 - b1) * g for n, g in grads.items()}
        nu = {n: b2 * state.nu[n] + (1 - b2) * g * g for n, g in grads.items()}
        step_size = self.lr / (1 - b1**count)
        root_correction = math.sqrt(1 - b2**count)
        new_params = {}
        for name, w in params.items():
            denominator = xp.sqrt(nu[name]) / root_correction + self.eps
            new_params[name] = w - step_size * mu[name] / denominator
        return new_params, AdamState(count, mu, nu)


Optimizer = SGD | Momentum | Adam

OPTIMIZERS: dict[str, type] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def _own_optimizer(opt: Any) -> bool:
    """Return whether ``opt`` is one of resgrad's optimizers, not a subclass:
    they return new arrays of the parameters' shapes, dtype and namespace,
    write into none of their inputs and count the steps taken."""
    return type(opt) in OPTIMIZERS.values()


def get_optimizer(name: str, lr: float | None = None, **kwargs: Any) -> Optimizer:
    """Create the optimizer called ``name`` (``"sgd"``, ``"momentum"``, ``"adam"``).

    Args:
        name: a key of ``OPTIMIZERS``.
        lr: the learning rate; ``None`` takes ``DEFAULT_LEARNING_RATES[name]``.
        **kwargs: the optimizer's other settings, e.g. ``weight_decay``.

    Raises:
        ValueError: for an unknown name, or a learning rate that is not a
            finite number > 0.
        TypeError: for a setting that the optimizer does not take, such as
            ``momentum`` for ``"sgd"``.
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}."
        )
    settings = {f.name for f in fields(OPTIMIZERS[name])} - {"lr"}
    unknown = sorted(set(kwargs) - settings)
    if unknown:
        owners = [
            other
            for other, kind in OPTIMIZERS.items()
            if set(unknown) <= {f.name for f in fields(kind)}
        ]
        pronoun = "them" if len(unknown) > 1 else "it"
        names = " or ".join(map(repr, owners))
        hint = f"; optimizer {names} takes {pronoun}" if owners else ""
        raise TypeError(
            f"Unknown setting(s) {', '.join(map(repr, unknown))} for optimizer "
            f"{name!r}, which takes: {', '.join(sorted(settings))}{hint}."
        )
    lr = DEFAULT_LEARNING_RATES[name] if lr is None else lr
    return OPTIMIZERS[name](lr, **kwargs)


def check_checkpoint_target(path: Path, name: str, fix: str) -> None:
    """Raise ``FileExistsError`` if ``path``, the checkpoint that a new run
    would write, is a file that is not a resgrad checkpoint. The message
    starts with ``name`` and ends with ``fix``."""
    if path.exists() and not io.is_checkpoint(path):
        raise FileExistsError(
            f"{name} {path} is a file that is not a resgrad checkpoint, which "
            f"training would replace; {fix}."
        )


def _check_eps_fits(opt: Any, xp: Any, dtype: Any) -> None:
    """Reject an Adam whose eps rounds to 0 in the model's dtype, where
    every step would divide by zero for weights with zero gradients."""
    if not isinstance(opt, Adam) or opt.eps == 0:
        return
    if float(xp.asarray(opt.eps, dtype=dtype)) == 0:
        raise ValueError(
            f"Adam's eps={opt.eps:g} rounds to 0 in {dtype}, so its steps divide "
            "by zero; train in float32 (model.convert(dtype='float32')), pass "
            "Adam(eps=...) with an eps the dtype can hold, or use "
            "optimizer='sgd' or 'momentum'."
        )


def _make_optimizer(optimizer: str | Optimizer, lr: float | None, weight_decay: float):
    if isinstance(optimizer, str):
        return get_optimizer(optimizer, lr=lr, weight_decay=weight_decay)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        hint = ""
        if type(optimizer).__module__.startswith("torch.optim"):
            hint = (
                " To train with a torch.optim optimizer, use the module of "
                "resgrad.torch.to_module(model, explicit=True), whose backward "
                "pass computes resgrad's gradients."
            )
        raise TypeError(
            f"Expected an optimizer name ({', '.join(OPTIMIZERS)}) or an object "
            f"with init and update methods, got {type(optimizer).__name__}.{hint}"
        )
    if lr is not None or weight_decay != 0:
        raise ValueError(
            "Pass lr and weight_decay to the optimizer object itself, not to fit, "
            "when optimizer is an object rather than a name."
        )
    return optimizer


# Fitting.


@dataclass
class FitResult:
    """The outcome of ``fit``.

    Attributes:
        model: the network with the weights of ``best_epoch``; a new object,
            the model passed to ``fit`` is left unchanged.
        history: one dict per epoch with ``epoch`` (from 1), ``train_loss``
            (the mean over the training rows of the loss of each row's
            mini-batch when its step was taken), ``val_loss`` and
            ``val_accuracy`` (``None`` without validation) and ``seconds``.
        best_epoch: the epoch of the lowest validation loss, or the last epoch
            without validation.
        stopped_early: whether training stopped before ``epochs`` because the
            validation loss did not improve for ``patience`` epochs.
        steps: the number of optimizer steps taken.
        validation_rows: the number of validation rows, 0 without validation.
    """

    model: ResidualMLP
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    steps: int
    validation_rows: int = 0

    __repr__ = _arrays.summary_repr


@_arrays.without_autograd
def fit(
    model: ResidualMLP,
    x: Array,
    y: Array,
    *,
    loss: str = "cross_entropy",
    optimizer: str | Optimizer = "adam",
    lr: float | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    seed: int = 0,
    validation: float | tuple[Array, Array] | None = 0.1,
    patience: int | None = 10,
    weight_decay: float = 0.0,
    progress: Callable[..., Iterable] | bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
) -> FitResult:
    """Train ``model`` by mini-batch descent on the backpropagation gradients.

    Each step takes ``dY/dW1 .. dY/db2`` of the mean loss over one mini-batch
    from ``resgrad.gradients(..., method="backprop")`` and hands them to the
    optimizer. Every epoch visits the training rows once, in an order drawn
    from a NumPy ``Generator`` seeded with ``seed``, so the same arguments give
    bit-identical weights. After each epoch the loss on the validation set
    decides early stopping: the weights of the lowest validation loss are
    kept, and training stops after ``patience`` epochs without a lower one.

    Args:
        model: the initial network; it is not modified.
        x: inputs of shape ``(n, p_0)`` in the model's namespace and dtype.
        y: integer labels of shape ``(n,)`` in ``[0, p_L)``; for
            ``"squared_error"`` also a float target of shape ``(n, p_L)``.
        loss: ``"cross_entropy"`` or ``"squared_error"``.
        optimizer: ``"sgd"``, ``"momentum"``, ``"adam"`` or an optimizer object
            (``SGD``, ``Momentum``, ``Adam`` or any with ``init`` and ``update``).
        lr: the learning rate; ``None`` takes ``DEFAULT_LEARNING_RATES``.
        epochs: the maximum number of passes over the training rows.
        batch_size: rows per step; the last batch of an epoch may be smaller.
        seed: seeds the validation split and the order of every epoch.
        validation: a fraction in ``(0, 1)`` of the rows held out by a
            stratified split, a tuple ``(x_val, y_val)``, or ``0``/``None`` to
            train on every row without early stopping.
        patience: epochs without a lower validation loss before stopping;
            ``None`` never stops early.
        weight_decay: the L2 coefficient added to the gradient, as in
            ``torch.optim``.
        progress: wraps the epochs, ``progress(range(epochs), desc="train",
            total=epochs)``; if the object it returns has ``set_postfix`` (a
            tqdm bar), it receives the losses after every epoch, and if it
            has ``close``, that is called when early stopping ends the
            loop. ``True`` draws a tqdm bar.
        checkpoint: a file that receives, after every ``checkpoint_every``
            epochs, everything needed to continue: the weights, the
            optimizer state, the state of the shuffling generator, the step
            count, the early-stopping state and the history. It is written
            atomically (see ``resgrad.io.save_checkpoint``); ``None`` writes
            none. While the run lasts, a lock on the file of the same name
            plus ``.lock`` (a ``flock``, absent on Windows) stops a second
            run, in this process or another, from writing the same
            checkpoint.
        resume: continue from ``checkpoint`` instead of starting over. The
            other arguments must be the ones of the run that wrote it (the
            same initial model, data, optimizer, seed and batch size;
            ``epochs`` may differ), and the result is bit-identical to that
            of a run that was never interrupted.
        checkpoint_every: the epochs between two writes of the checkpoint.
            The last epoch is always written, and so is the last finished
            one when the run stops on an error or an interrupt, so only a
            killed process loses up to ``checkpoint_every - 1`` epochs.
            Each write syncs the file to disk and stores the whole history,
            which on small networks can take longer than the epoch.

    Returns:
        A ``FitResult`` whose ``model`` has the best weights.

    Raises:
        TrainingDiverged: if a loss, gradient or weight becomes NaN or
            infinite, or if a mini-batch loss exceeds ``DIVERGENCE_FACTOR``
            times ``max(first mini-batch loss, 1)``. The message names the
            epoch, the step and the learning rate, or, before the first
            update, states that the learning rate is not the cause. The
            model passed in is unchanged.
        ValueError: if a weight of ``model`` contains NaN or Inf, written
            into it in place, or ``checkpoint`` names a folder, such as
            ``"ck.npz/"``.
        CheckpointMismatch: a ``ValueError`` for a checkpoint written with
            other settings; the message names every setting that differs.
        ValueError, TypeError: for invalid arguments.
        FileNotFoundError: if ``resume`` is true and ``checkpoint`` does
            not exist, or the folder of ``checkpoint`` does not exist.
        FileExistsError: if another run holds the lock of ``checkpoint``, or
            ``checkpoint`` is a file that is not a resgrad checkpoint.
        IsADirectoryError, NotADirectoryError: if ``checkpoint`` is a folder
            or lies under a file.

    Example:
        >>> import numpy as np, resgrad
        >>> from resgrad.training import fit
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((60, 2))
        >>> y = (x[:, 0] > 0).astype(np.int64)
        >>> model = resgrad.ResidualMLP.init([2, 8, 2], seed=0)
        >>> result = fit(model, x, y, lr=0.01, epochs=20, validation=None)
        >>> len(result.history), result.history[-1]["train_loss"] < 0.3
        (20, True)
    """
    progress = _arrays.progress_wrapper(progress)
    epochs, batch_size, patience = _check_fit_settings(
        model, loss, epochs, batch_size, patience
    )
    checkpoint_every = _arrays.check_count("checkpoint_every", checkpoint_every)
    if _arrays.check_flag("resume", resume) and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from.")
    opt = _make_optimizer(optimizer, lr, weight_decay)
    loss_fn = get_loss(loss)
    xp = _check_data(model, loss_fn, x, y, "x", "y")
    bad = model._non_finite_array()
    if bad is not None:
        raise ValueError(
            f"The model's {bad} contains NaN or Inf values before training; "
            "load or initialise the model again, or replace that array with "
            "replace_arrays."
        )
    _check_eps_fits(opt, xp, model.dtype)
    # A checkpoint records the int seed beside the generator's state, so fit
    # takes no Generator and no None, which the attacks and saliency take.
    kinds = "an int >= 0, which a checkpoint records with the run"
    seed = _arrays.check_seed(seed, kinds=kinds)
    x_train, y_train, val = _split_validation(model, loss_fn, x, y, validation, seed)
    rng = np.random.default_rng(seed)
    run_model, run_xp = model, xp
    # resgrad's own optimizers on CPU tensors train on NumPy views, with no
    # conversion per step; the result comes back as tensors.
    routed = None
    if _own_optimizer(opt):
        routed = _numpy_route.fit_views(model, batch_size, x_train, y_train, val)
    if routed is not None:
        run_model, (x_train, y_train, val) = routed
        run_xp = _arrays.array_api_compat.numpy
    run = _Run(run_model, loss_fn, opt, x_train, y_train, batch_size, rng, run_xp)
    progress_state = _Progress.start(run, patience)
    # A second run on the same checkpoint would overwrite this run's epochs.
    lock = contextlib.nullcontext()
    if checkpoint is not None:
        if not os.fspath(checkpoint):
            raise ValueError(
                "checkpoint is an empty path; pass a file path, or None to "
                "write no checkpoint."
            )
        if io.folder_ending(checkpoint) is not None:
            message = io.folder_ending_message(checkpoint, "model.checkpoint.npz")
            raise ValueError(f"checkpoint {message}")
        # Every epoch writes to the same file, even if the working folder
        # changes during the run.
        checkpoint = Path(checkpoint).absolute()
        io.check_file_path(checkpoint)
        if not resume:
            check_checkpoint_target(checkpoint, "checkpoint", "pass a new path")
        lock = _lock.held(checkpoint, _CHECKPOINT_IN_USE_HINT)
    with lock:
        saver = None
        if checkpoint is not None:
            settings = _settings(
                model, x, y, loss_fn, opt, batch_size, seed, validation, patience
            )
            saver = _Checkpoint(Path(checkpoint), settings, checkpoint_every)
            # A state that no checkpoint can hold fails here, before training.
            _split_state(progress_state.state)
            if resume:
                progress_state = saver.restore(run, patience)

        first = len(progress_state.history)
        if epochs < first:
            # The checkpoint contains the state after `first` epochs, which fewer
            # epochs cannot give back.
            raise ValueError(
                f"Cannot resume from {checkpoint} with {epochs} epochs: it has "
                f"already run {first} epochs, and epochs counts them too. Ask "
                f"for at least {first} epochs, such as {first + epochs} for "
                f"{epochs} more (epochs= of fit, --epochs of resgrad train), or "
                "start over without resume= (--overwrite in place of --resume)."
            )
        epochs_bar: Iterable[int] = range(first, max(epochs, first))
        if progress is not None:
            epochs_bar = progress(
                epochs_bar, desc="train", total=max(epochs - first, 0)
            )

        # The divergence guard reports every overflow, so NumPy's warnings about
        # them would only repeat it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _train(run, epochs_bar, epochs, val, progress_state, saver)

    history, stopping = progress_state.history, progress_state.stopping
    # Patience that runs out at the last epoch stops nothing early.
    stopped_early = progress_state.stopped_early and len(history) < epochs
    best_params = stopping.best_params
    if routed is not None:
        best_params = _numpy_route.to_tensors(best_params)
    best_model = model.replace_arrays(best_params)
    rows = 0 if val is None else int(val[1].shape[0])
    return FitResult(
        best_model, history, stopping.best_epoch, stopped_early, run.steps, rows
    )


@dataclass
class _Progress:
    """The training state that changes from epoch to epoch, all of which a
    checkpoint stores."""

    params: Params
    state: Any
    stopping: _EarlyStopping
    history: list[dict[str, Any]]
    # Whether early stopping ended the run, so that resuming adds no epoch.
    stopped_early: bool = False

    @classmethod
    def start(cls, run: _Run, patience: int | None) -> _Progress:
        params = run.model.arrays()
        return cls(params, run.opt.init(params), _EarlyStopping(patience, params), [])


def _train(
    run: _Run, epochs_bar: Iterable[int], epochs: int, val, progress: _Progress, saver
) -> None:
    """Run the epochs until the last or an early stop, updating ``progress``."""
    if progress.stopped_early:
        return
    try:
        for index in epochs_bar:
            start = time.perf_counter()
            progress.params, progress.state, record = run.epoch(
                index + 1, progress.params, progress.state, val
            )
            record["seconds"] = time.perf_counter() - start
            progress.history.append(record)
            _show_losses(epochs_bar, record)
            stop = progress.stopping.observe(
                record["epoch"], record["val_loss"], progress.params
            )
            progress.stopped_early = stop
            if saver is not None:
                saver.finished(run, progress, last=stop or index + 1 >= epochs)
            if stop:
                # A bar that prints a line at the end of the loop, as the
                # command line's do in a log, gets its end here.
                close = getattr(epochs_bar, "close", None)
                if close is not None:
                    close()
                break
    except BaseException as error:
        # An interrupt or a divergence keeps the last finished epoch, as a
        # checkpoint written after every epoch would.
        if saver is not None:
            saver.write_pending()
            finished = len(progress.history)
            if isinstance(error, KeyboardInterrupt) and finished:
                _add_note(
                    error,
                    f"The checkpoint {saver.path} contains epoch {finished}; "
                    "call fit with the same arguments and resume=True to "
                    "continue.",
                )
        raise


def _add_note(error: BaseException, note: str) -> None:
    """Add ``note`` to the traceback of ``error`` where Python (3.11 and
    later) shows notes."""
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)


def _check_fit_settings(model, loss, epochs, batch_size, patience):
    """Return ``epochs``, ``batch_size`` and ``patience`` as ints (``None``
    patience kept), after checking them and the model and loss."""
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    if loss not in TRAINING_LOSSES:
        raise ValueError(
            f"Cannot train on loss {loss!r}; expected one of: "
            f"{', '.join(TRAINING_LOSSES)}."
        )
    epochs = _arrays.check_count("epochs", epochs)
    batch_size = _arrays.check_count("batch_size", batch_size)
    if patience is not None:
        patience = _arrays.check_count("patience", patience)
    return epochs, batch_size, patience


def _check_data(model: ResidualMLP, loss_fn, x: Array, y: Array, x_name, y_name):
    """Validate one pair of inputs and targets; return their namespace."""
    xp = model._namespace_with(
        x,
        y,
        names=(x_name, y_name),
        labels=(y_name,),
        float_targets=not loss_fn.integer_labels,
    )
    _arrays.check_input(xp, x, model.sizes[0], model.dtype, x_name)
    n = x.shape[0]
    if n == 0:
        raise ValueError(f"Expected at least one row in {x_name}, got none.")
    check_targets(xp, loss_fn, y, n, model.n_classes, model.dtype, y_name, x_name)
    return xp


def _class_labels(xp: Any, y: Array) -> Array:
    """Return integer labels, taking the argmax of a float target."""
    if xp.isdtype(y.dtype, "integral"):
        return y
    return xp.argmax(y, axis=1)


def _split_validation(model, loss_fn, x, y, validation, seed):
    """Return ``(x_train, y_train, (x_val, y_val) or None)``."""
    is_number = isinstance(validation, numbers.Real) and not isinstance(
        validation, bool
    )
    if validation is None or (is_number and validation == 0):
        return x, y, None
    if isinstance(validation, (tuple, list)):
        return x, y, _validation_pair(model, loss_fn, validation)
    if not is_number:
        raise TypeError(
            f"Expected validation as a fraction, a pair (x_val, y_val) or None, "
            f"got {type(validation).__name__}."
        )
    if not 0 < validation < 1:
        raise ValueError(
            f"Expected a validation fraction in (0, 1), got {validation}; pass 0 "
            "or None to train without validation."
        )
    return _hold_out(model.xp, x, y, float(validation), seed)


def _validation_pair(model, loss_fn, validation) -> tuple[Array, Array]:
    if len(validation) != 2:
        raise ValueError(
            f"Expected validation as a pair (x_val, y_val), got "
            f"{len(validation)} items."
        )
    x_val, y_val = validation
    _check_data(model, loss_fn, x_val, y_val, "x_val", "y_val")
    return x_val, y_val


def _hold_out(xp, x, y, fraction: float, seed: int):
    """Split off ``fraction`` of the rows, stratified by class, as validation."""
    labels = _arrays.to_numpy(_class_labels(xp, y))
    rows = np.arange(labels.shape[0])
    train_rows, val_rows, _, _ = train_test_split(rows, labels, fraction, seed)
    if val_rows.shape[0] == 0:
        raise ValueError(
            f"A validation fraction of {fraction} of {rows.shape[0]} rows leaves "
            "the validation set empty, because every class keeps one training "
            "row; pass a larger fraction if a class has two or more rows, a pair "
            "(x_val, y_val), or None (--validation 0 on the command line)."
        )

    device = _arrays.array_api_compat.device(x)
    train_rows = xp.asarray(train_rows, device=device)
    val_rows = xp.asarray(val_rows, device=device)
    x_train, y_train = xp.take(x, train_rows, axis=0), xp.take(y, train_rows, axis=0)
    x_val, y_val = xp.take(x, val_rows, axis=0), xp.take(y, val_rows, axis=0)
    return x_train, y_train, (x_val, y_val)


class _Run:
    """The parts of one training run that stay fixed across epochs."""

    def __init__(self, model, loss_fn, opt, x, y, batch_size, rng, xp) -> None:
        self.model, self.loss_fn, self.opt = model, loss_fn, opt
        # resgrad's own optimizers return arrays of the model's shapes, dtype
        # and namespace, so each step's model can skip replace_arrays's
        # checks. An optimizer of the caller's keeps them.
        own = _own_optimizer(opt)
        self.with_params = model._with_arrays if own else model.replace_arrays
        # They also write into none of their inputs, so on CPU tensors they
        # can run on NumPy views (see _numpy_route.update).
        self.update = opt.update
        if own and _arrays.array_api_compat.is_torch_namespace(xp):
            self.update = functools.partial(_numpy_route.update, opt)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng, self.xp = rng, xp
        self.device = _arrays.array_api_compat.device(x)
        self.steps = 0
        self.loss_limit = math.inf

    def epoch(self, epoch: int, params: Params, state: Any, val) -> tuple:
        """Run one pass over the training rows; return params, state, record."""
        n = self.x.shape[0]
        total = 0.0
        for step, (x_batch, y_batch) in enumerate(self._batches(), start=1):
            params, state, value = self._step(
                epoch, step, params, state, x_batch, y_batch
            )
            total += value * x_batch.shape[0]

        record = {"epoch": epoch, "train_loss": total / n}
        record["val_loss"], record["val_accuracy"] = None, None
        if val is not None:
            current = self.with_params(params)
            try:
                val_loss, val_accuracy, _ = _loss_and_predictions(
                    current, *val, self.loss_fn
                )
            except ForwardOverflowError:
                val_loss, val_accuracy = math.inf, 0.0
            if not math.isfinite(val_loss):
                cause = "the validation loss became NaN or infinite"
                raise self._diverged(epoch, step, cause)
            record["val_loss"], record["val_accuracy"] = val_loss, val_accuracy
        return params, state, record

    def _batches(self) -> Iterable[tuple[Array, Array]]:
        """Yield the mini-batches of one epoch in a freshly shuffled order."""
        xp, n = self.xp, self.x.shape[0]
        order = self.rng.permutation(n)
        for begin in range(0, n, self.batch_size):
            rows = order[begin : begin + self.batch_size]
            rows = xp.asarray(rows, device=self.device)
            yield xp.take(self.x, rows, axis=0), xp.take(self.y, rows, axis=0)

    def _step(self, epoch, step, params, state, x_batch, y_batch):
        current = self.with_params(params)
        loss = self.loss_fn.name
        try:
            grads = gradients(
                current, x_batch, y_batch, loss, method="backprop", with_input=False
            )
        except ForwardOverflowError as error:
            if self.steps == 0:
                # The error's own advice, to scale down, applies.
                raise self._diverged(epoch, step, str(error)) from error
            raise self._diverged(
                epoch, step, f"the loss became NaN or infinite ({error})"
            ) from error
        value = float(grads.loss)
        weight_grads = grads.arrays()
        self._check_loss(epoch, step, value, weight_grads)
        params, state = self.update(weight_grads, state, params)
        if not self._all_finite(params):
            if self._zero_eps_divides_by_zero(params, state):
                # A smaller learning rate cannot help here.
                raise TrainingDiverged(
                    f"Training diverged at epoch {epoch}, step {step}: the "
                    "updated weights became NaN or infinite, because Adam with "
                    "eps=0 divides by 0 for a weight whose gradients have been 0, "
                    "or too small to square in the dtype, at every step; pass "
                    "Adam(eps=...) with eps > 0, such as 1e-8."
                )
            cause = "the updated weights became NaN or infinite"
            raise self._diverged(epoch, step, cause, updated=True)
        self.steps += 1
        return params, state, value

    def _check_loss(self, epoch: int, step: int, value: float, grads: Params) -> None:
        """Raise ``TrainingDiverged`` for a non-finite or exploding step."""
        if not (math.isfinite(value) and self._all_finite(grads)):
            cause = "the loss or a gradient became NaN or infinite"
            if self.steps == 0:
                cause += "; scale the inputs or the weights down."
            raise self._diverged(epoch, step, cause)
        if value > self.loss_limit:
            cause = (
                f"the loss {value:.3g} exceeds {self.loss_limit:.3g}, "
                f"{DIVERGENCE_FACTOR:g} times max(first loss, 1)"
            )
            raise self._diverged(epoch, step, cause)
        if self.steps == 0:
            self.loss_limit = DIVERGENCE_FACTOR * max(value, 1.0)

    def _zero_eps_divides_by_zero(self, params: Params, state: Any) -> bool:
        """Return whether Adam with eps=0 made a weight NaN or infinite by
        dividing by a second moment of 0, which the gradients of 0, or too
        small to square in the dtype, leave."""
        if not (isinstance(self.opt, Adam) and self.opt.eps == 0):
            return False
        xp = self.xp
        return any(
            bool(xp.any(~xp.isfinite(params[name]) & (nu == 0)))
            for name, nu in state.nu.items()
        )

    def _all_finite(self, arrays: Params) -> bool:
        xp = self.xp
        return all(_arrays.all_finite(xp, a) for a in arrays.values())

    def _diverged(
        self, epoch: int, step: int, cause: str, updated: bool = False
    ) -> TrainingDiverged:
        """Return the error for ``cause``. ``updated`` is true once this
        step's update has run, a failure that the learning rate can cause."""
        if self.steps == 0 and not updated:
            # No update has run, so the learning rate cannot be the cause.
            return TrainingDiverged(
                f"Training failed at epoch {epoch}, step {step}, before its "
                f"first update, so the learning rate is not the cause: {cause}"
            )
        lr = getattr(self.opt, "lr", None)
        if lr is None:
            advice = "try a smaller learning rate"
            rate = ""
        else:
            # A tenth of a rate far above the optimizer's default would
            # likely diverge again, so the default is named instead.
            default = DEFAULT_LEARNING_RATES.get(type(self.opt).__name__.lower())
            smaller = default if default and lr > 10 * default else lr / 10
            advice = f"try a smaller learning rate, e.g. {smaller:g}"
            rate = f" with learning rate {lr:g}"
        return TrainingDiverged(
            f"Training diverged at epoch {epoch}, step {step}{rate}: {cause}; {advice}."
        )


class _EarlyStopping:
    """Tracks the best validation loss and the weights that reached it."""

    def __init__(self, patience: int | None, params: Params) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_params = params
        self.waited = 0

    def observe(self, epoch: int, val_loss: float | None, params: Params) -> bool:
        """Record one epoch's result; return whether to stop.

        Without validation (``val_loss`` None) every epoch counts as the best.
        """
        if val_loss is None or val_loss < self.best_loss:
            self.best_loss = math.inf if val_loss is None else val_loss
            self.best_epoch, self.best_params, self.waited = epoch, params, 0
            return False
        self.waited += 1
        return self.patience is not None and self.waited >= self.patience


def _show_losses(bar: Any, record: dict[str, Any]) -> None:
    if not hasattr(bar, "set_postfix"):
        return
    losses = {"train_loss": record["train_loss"]}
    if record["val_loss"] is not None:
        losses["val_loss"] = record["val_loss"]
    bar.set_postfix(losses)


# Checkpoints.


def _digest(*arrays: Array) -> str:
    """Return the SHA-256 of the arrays' shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for a in arrays:
        values = np.ascontiguousarray(_arrays.to_numpy(a))
        digest.update(f"{values.shape}{values.dtype.str}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def _describe_optimizer(opt: Any) -> dict[str, Any]:
    settings = asdict(opt) if is_dataclass(opt) else {}
    return {"type": type(opt).__name__, **settings}


def _settings(model, x, y, loss_fn, opt, batch_size, seed, validation, patience):
    """Return what a resumed run must share with the run that wrote a checkpoint."""
    if isinstance(validation, (tuple, list)):
        validation = _digest(*validation)
    elif validation is not None:
        # 0 trains without validation, as None does.
        validation = float(validation) or None
    if validation is None:
        # Without validation nothing stops early, whatever the patience.
        patience = None
    weights = model.arrays()
    settings = {
        "model": model.config(),
        "initial_weights": _digest(*(weights[key] for key in sorted(weights))),
        "data": _digest(x, y),
        "loss": loss_fn.name,
        "optimizer": _describe_optimizer(opt),
        # int() for NumPy integers, which JSON cannot store.
        "batch_size": int(batch_size),
        "seed": int(seed),
        "validation": validation,
        "patience": None if patience is None else int(patience),
    }
    # The checkpoint stores the settings as JSON, which turns tuples into lists.
    return json.loads(json.dumps(settings))


class _Checkpoint:
    """The checkpoint file of one ``fit`` call and the settings it must match."""

    def __init__(self, path: Path, settings: dict[str, Any], every: int = 1) -> None:
        self.path, self.settings, self.every = path, settings, every
        # The contents of the last finished epoch, while not yet written.
        self.pending: tuple[dict, dict] | None = None

    def finished(self, run: _Run, progress: _Progress, last: bool) -> None:
        """Take the state after an epoch; write it if it is due or ``last``."""
        self.pending = self._contents(run, progress)
        if last or len(progress.history) % self.every == 0:
            self.write_pending()

    def write_pending(self) -> None:
        """Write the last finished epoch, unless it is written already."""
        if self.pending is None:
            return
        header, arrays = self.pending
        try:
            io.save_checkpoint(
                self.path,
                header,
                {key: _arrays.to_numpy(a) for key, a in arrays.items()},
            )
        except OSError:
            # A full disk would fail again, so the error ends the run at once.
            self.pending = None
            raise
        # An interrupt during the write keeps the epoch pending, so the
        # handler in _train writes it again.
        self.pending = None

    def _contents(self, run: _Run, progress: _Progress) -> tuple[dict, dict]:
        """Return the header and arrays of ``progress``.

        The arrays are the run's own, which later steps replace rather than
        change, so they are copied to NumPy only when written.
        """
        state_scalars, state_arrays = _split_state(progress.state)
        stopping = progress.stopping
        arrays = _prefixed("params", progress.params)
        best_is_current = stopping.best_epoch == len(progress.history)
        if not best_is_current:
            arrays.update(_prefixed("best", stopping.best_params))
        for field, values in state_arrays.items():
            arrays.update(_prefixed(f"state.{field}", values))
        header = {
            "settings": self.settings,
            "history": list(progress.history),
            "stopped_early": progress.stopped_early,
            "steps": run.steps,
            "loss_limit": _finite_or_none(run.loss_limit),
            "rng": run.rng.bit_generator.state,
            "optimizer_state": {"scalars": state_scalars, "arrays": list(state_arrays)},
            "stopping": {
                "best_loss": _finite_or_none(stopping.best_loss),
                "best_epoch": stopping.best_epoch,
                "best_is_current": best_is_current,
                "waited": stopping.waited,
            },
        }
        return header, arrays

    def restore(self, run: _Run, patience: int | None) -> _Progress:
        """Load the checkpoint into ``run`` and return the progress it stores."""
        header, arrays = io.load_checkpoint(self.path)
        try:
            return self._restore(run, patience, header, arrays)
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            OverflowError,
        ) as error:
            if isinstance(error, CheckpointMismatch):
                raise
            raise ValueError(
                f"{self.path} is not a resgrad checkpoint file: its contents are "
                f"incomplete or malformed ({type(error).__name__}: {error})."
                f"{io.DAMAGED_FIXES['checkpoint']}"
            ) from error

    def _restore(self, run, patience, header, arrays) -> _Progress:
        self._check_settings(header["settings"])
        template = run.model.arrays()
        params = self._arrays(run, arrays, "params", template)
        stored_state = {
            field: self._arrays(run, arrays, f"state.{field}", template)
            for field in header["optimizer_state"]["arrays"]
        }
        if _own_optimizer(run.opt):
            # Adam's second moment is a running mean of squares; a negative
            # one would show up as a divergence blamed on the learning rate.
            for key, value in stored_state.get("nu", {}).items():
                if not bool(run.xp.all(value >= 0)):
                    raise ValueError(
                        f"state.nu.{key}, a mean of squares, contains negative values"
                    )
        state = _join_state(
            run.opt.init(params), header["optimizer_state"]["scalars"], stored_state
        )
        stored = header["stopping"]
        stopping = _EarlyStopping(patience, params)
        stopping.best_loss = _stored_loss(stored["best_loss"], "stopping.best_loss")
        stopping.best_epoch = _stored_count(stored["best_epoch"], "stopping.best_epoch")
        stopping.waited = _stored_count(stored["waited"], "stopping.waited")
        best_is_current = _stored_flag(
            stored["best_is_current"], "stopping.best_is_current"
        )
        history = _checked_history(header["history"], stopping.best_epoch)
        _check_stopping(stopping, best_is_current, len(history))
        if not best_is_current:
            stopping.best_params = self._arrays(run, arrays, "best", template)
        run.steps = _stored_count(header["steps"], "steps")
        if _own_optimizer(run.opt) and state.count != run.steps:
            # resgrad's optimizers count the steps taken, as the run does.
            raise ValueError(
                f"the optimizer state's count {_arrays._short_repr(state.count)} "
                f"is not the {run.steps} steps taken"
            )
        run.loss_limit = _stored_loss(header["loss_limit"], "loss_limit")
        if not run.loss_limit >= DIVERGENCE_FACTOR:
            # DIVERGENCE_FACTOR times the larger of the first loss and 1, or
            # infinite before the first loss.
            raise ValueError(
                f"loss_limit is {_arrays._short_repr(header['loss_limit'])}, "
                f"where a number of at least {DIVERGENCE_FACTOR:g} was expected"
            )
        try:
            run.rng.bit_generator.state = header["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise ValueError(
                "rng, the state of the shuffling generator, is invalid "
                f"({type(error).__name__}: {error})"
            ) from error
        stopped_early = _stored_flag(header["stopped_early"], "stopped_early")
        return _Progress(params, state, stopping, history, stopped_early)

    def _check_settings(self, stored: Any) -> None:
        if isinstance(stored, dict) and stored.get("validation") is None:
            # Older checkpoints also stored the patience of a run without
            # validation, where it has no effect.
            stored = {**stored, "patience": None}
        if stored == self.settings:
            return
        if not isinstance(stored, dict):
            stored = {}
        old, new = _flat_settings(stored), _flat_settings(self.settings)
        differences = [
            f"{_setting_name(name)} {_show_setting(old, name)} in the checkpoint "
            f"but {_show_setting(new, name)} now"
            f"{DIGEST_NOTES.get(name, '')}"
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)
        ]
        raise CheckpointMismatch(
            f"Cannot resume from {self.path}: it was written with different "
            f"settings: {'; '.join(differences)}. Pass the same arguments, or "
            "start over without resume= (--overwrite in place of --resume on "
            "the command line)."
        )

    def _arrays(self, run: _Run, arrays: dict, group: str, template: Params) -> Params:
        """Return the arrays of ``group`` in the model's namespace, checked."""
        prefix = group + "."
        found = {
            key[len(prefix) :]: value
            for key, value in arrays.items()
            if key.startswith(prefix) and key[len(prefix) :].startswith("blocks.")
        }
        if set(found) != set(template):
            raise ValueError(
                f"the {group} arrays {sorted(found)} do not match the model's "
                f"{sorted(template)}"
            )
        restored = {}
        for key, value in found.items():
            expected = template[key]
            if tuple(value.shape) != tuple(expected.shape):
                raise ValueError(
                    f"{prefix}{key} has shape {value.shape}, the model needs "
                    f"{tuple(expected.shape)}"
                )
            restored[key] = _to_namespace(value, run.xp, run.device)
            if restored[key].dtype != expected.dtype:
                raise ValueError(
                    f"{prefix}{key} has dtype {value.dtype}, the model has "
                    f"{expected.dtype}"
                )
        return restored


def _flat_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Return the settings with the model's and optimizer's fields named alone.

    The optimizer's fields take the names of the ``fit`` arguments (``lr``,
    ``momentum``), and its class is named ``optimizer``.
    """
    flat = {}
    for name, value in settings.items():
        if name == "optimizer" and isinstance(value, dict):
            for field, setting in value.items():
                flat["optimizer" if field == "type" else field] = setting
        elif name == "model" and isinstance(value, dict):
            for field, setting in value.items():
                flat[f"model {field}"] = setting
        else:
            flat[name] = value
    return flat


# The options of resgrad train that set a checkpoint's settings, named after
# fit's argument in a refusal to resume.
SETTING_OPTIONS = {
    "lr": "--lr",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "patience": "--patience",
    "validation": "--validation",
    "optimizer": "--optimizer",
    # The sizes are the data's features, --widths and the data's classes.
    "model sizes": "--widths and the data",
    "model hidden": "--hidden",
    "model activation": "--activation",
    "model shortcuts": "--shortcut",
}
# The causes of a changed digest in a checkpoint's settings, on the command
# line and in fit.
DIGEST_NOTES = {
    "data": (
        " (the training rows differ: another data file, labels, --header, "
        "--test-size or --split-seed on the command line, or other x and y "
        "passed to fit)"
    ),
    "initial_weights": (
        " (the initial weights differ: another --seed, --init or network "
        "shape on the command line, or another model passed to fit)"
    ),
    "validation": " (the validation rows differ)",
}


def _setting_name(name: str) -> str:
    """Return ``name``, followed by its resgrad train option where it has one."""
    option = SETTING_OPTIONS.get(name)
    return name if option is None else f"{name} ({option})"


def _show_setting(settings: dict[str, Any], name: str) -> str:
    """Format one setting for a message, shortening SHA-256 digests."""
    if name not in settings:
        # A field of one optimizer class that the other class lacks.
        return "not used"
    value = settings[name]
    if isinstance(value, str) and len(value) == 64:
        return f"SHA-256 {value[:12]}..."
    return repr(value)


def _prefixed(prefix: str, arrays: Params) -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in arrays.items()}


def _split_state(state: Any) -> tuple[dict[str, Any], dict[str, Params]]:
    """Split an optimizer state (a NamedTuple) into JSON scalars and array dicts."""
    if not (isinstance(state, tuple) and hasattr(state, "_asdict")):
        raise TypeError(
            f"Cannot checkpoint the optimizer state {type(state).__name__}; "
            "checkpoints need a NamedTuple of numbers and dicts of arrays, as "
            "SGD, Momentum and Adam use."
        )
    scalars, arrays = {}, {}
    for field, value in state._asdict().items():
        if isinstance(value, dict) and not io.CHECKPOINT_NAME.fullmatch(field):
            # A dict of arrays becomes archive members named after the field;
            # numbers go into the JSON header, which takes any name.
            raise TypeError(
                f"Cannot checkpoint the optimizer state field {field!r}; the "
                "names of the checkpoint members that hold its arrays take "
                "lowercase letters and underscores only, so rename it, such "
                "as to 'moment'."
            )
        if isinstance(value, dict):
            arrays[field] = value
        elif isinstance(value, numbers.Real):
            scalars[field] = value
        else:
            raise TypeError(
                f"Cannot checkpoint the optimizer state field {field} of type "
                f"{type(value).__name__}; expected a number or a dict of arrays."
            )
    return scalars, arrays


def _join_state(template: Any, scalars: dict[str, Any], arrays: dict[str, Params]):
    fields = set(template._fields)
    if set(scalars) | set(arrays) != fields:
        raise ValueError(
            f"the optimizer state fields {sorted(set(scalars) | set(arrays))} "
            f"are not {sorted(fields)}"
        )
    for field, value in scalars.items():
        expected = getattr(template, field)
        kind = (
            numbers.Integral if isinstance(expected, numbers.Integral) else numbers.Real
        )
        if isinstance(value, bool) or not isinstance(value, kind):
            raise TypeError(
                f"the optimizer state field {field} is {_arrays._short_repr(value)}, "
                f"not {'an integer' if kind is numbers.Integral else 'a number'}"
            )
    return template._replace(**scalars, **arrays)


def _checked_history(history: Any, best_epoch: int) -> list[dict[str, Any]]:
    """Return the history of a checkpoint, checked to be one record per
    epoch, numbered from 1, with the training loss of each."""
    if not isinstance(history, list):
        raise TypeError(f"the history is {_arrays._short_repr(history)}, not a list")
    for number, record in enumerate(history, start=1):
        loss = record.get("train_loss") if isinstance(record, dict) else None
        if (
            not isinstance(record, dict)
            or record.get("epoch") != number
            or isinstance(loss, bool)
            or not isinstance(loss, numbers.Real)
        ):
            raise ValueError(
                f"record {number} of the history is {_arrays._short_repr(record)}, "
                f"not that of epoch {number}"
            )
    if not 0 <= best_epoch <= len(history):
        raise ValueError(
            f"the best epoch {best_epoch} is not one of the {len(history)} run"
        )
    return list(history)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _check_stopping(stopping: _EarlyStopping, best_is_current: bool, epochs: int):
    """Raise ``ValueError`` unless the early-stopping state of a checkpoint
    is that of ``epochs`` epochs run: it waits one epoch for each since the
    best one, and the best weights are the current ones after the best."""
    since_best = epochs - stopping.best_epoch
    if stopping.waited != since_best:
        raise ValueError(
            f"stopping.waited is {_arrays._short_repr(stopping.waited)}, not "
            f"the {since_best} epochs run since the best epoch {stopping.best_epoch}"
        )
    if best_is_current != (since_best == 0):
        raise ValueError(
            f"stopping.best_is_current is {best_is_current}, but the best epoch "
            f"{stopping.best_epoch} is {'' if since_best == 0 else 'not '}the "
            f"last of {epochs}"
        )


def _stored_count(value: Any, name: str) -> int:
    """Return the count ``name`` of a checkpoint, checked to be an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} is {_arrays._short_repr(value)}, not an integer >= 0")
    return value


def _stored_flag(value: Any, name: str) -> bool:
    """Return the flag ``name`` of a checkpoint, checked to be a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} is {_arrays._short_repr(value)}, not true or false")
    return value


def _stored_loss(value: Any, name: str) -> float:
    """Return the loss ``name`` of a checkpoint, infinite for ``None``."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is {_arrays._short_repr(value)}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is {_arrays._short_repr(value)}, beyond the range of floats"
        ) from None


# Evaluation.


def _loss_and_predictions(model: ResidualMLP, x: Array, y: Array, loss_fn):
    """Return the mean loss, the accuracy and the predicted classes ``(n,)``."""
    xp = model.xp
    traces, a_L = model.trace(x)
    z_L = traces[-1].z
    out = z_L if loss_fn.on_logits else a_L
    mean_loss = float(xp.mean(loss_fn.value(xp, out, y)))
    predicted = xp.argmax(model._class_scores(traces, a_L), axis=1)
    return mean_loss, _hit_rate(xp, predicted, _class_labels(xp, y)), predicted


def _hit_rate(xp: Any, predicted: Array, labels: Array) -> float:
    # Counting in int64 keeps the rate exact in float32 models too.
    hits = int(xp.sum(xp.astype(predicted == labels, _arrays.index_dtype(xp))))
    return hits / predicted.shape[0]


def accuracy(model: ResidualMLP, x: Array, y: Array) -> float:
    """Return the fraction of rows whose predicted class (``model.predict``)
    equals ``y``.

    Args:
        x: inputs of shape ``(n, p_0)``, ``n >= 1``.
        y: integer labels of shape ``(n,)`` in ``[0, p_L)``.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    xp = _check_data(model, get_loss("cross_entropy"), x, y, "x", "y")
    return _hit_rate(xp, model.predict(x), y)


def evaluate(
    model: ResidualMLP, x: Array, y: Array, loss: str = "cross_entropy"
) -> dict[str, Any]:
    """Return the mean loss, the accuracy and the confusion matrix on ``(x, y)``.

    Args:
        x: inputs of shape ``(n, p_0)``, ``n >= 1``.
        y: integer labels of shape ``(n,)`` in ``[0, p_L)``; for
            ``"squared_error"`` also a float target of shape ``(n, p_L)``,
            whose argmax is then the class.
        loss: ``"cross_entropy"``, ``"squared_error"`` or ``"score"``.

    Returns:
        ``{"loss", "accuracy", "confusion_matrix"}``, where
        ``confusion_matrix[i][j]`` counts the rows of class ``i`` predicted
        as class ``j``, a ``p_L`` by ``p_L`` nested list of ints.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"Expected a ResidualMLP, got {type(model).__name__}.")
    loss_fn = get_loss(loss)
    xp = _check_data(model, loss_fn, x, y, "x", "y")
    mean_loss, hit_rate, predicted = _loss_and_predictions(model, x, y, loss_fn)
    classes = model.n_classes
    truth = _arrays.to_numpy(_class_labels(xp, y)).astype(np.int64)
    cells = truth * classes + _arrays.to_numpy(predicted).astype(np.int64)
    counts = np.bincount(cells, minlength=classes * classes)
    return {
        "loss": mean_loss,
        "accuracy": hit_rate,
        "confusion_matrix": counts.reshape(classes, classes).tolist(),
    }
