"""Training with an estimator's surrogate, and the ELBO along training.

The loop every measurement shares: one step is a forward pass of the model with the estimator,
the surrogate's mean over the minibatch backpropagated, an Adam update, then
``estimator.observe`` (baselines, annealing clocks). :func:`train_model` runs whole epochs from a
:class:`~gradbench.experiment.Setting`, calls back after each (for evaluations or checkpoints of
other measurements) and stops, without raising, when a run diverges (a non-finite loss or
parameter).

Long cells resume. With a checkpoint path, the run's whole state is written there atomically
every ``save_every_s`` seconds (:data:`SAVE_EVERY_S`, 5 minutes) and at every epoch's end:
parameters, the model's optimizer (Adam, and plain SGD for a model's ``sgd_parameters``), the
estimator's state dict and its own optimizers (NVIL's baseline fitter, REBAR's tuner), the
epoch's shuffled order and position in it, the data generator's and the noise RNG's states, the
rows logged so far and the best-validation parameters. A run killed at any moment continues
from the last write to the same numbers, bit for bit on the CPU, as an uninterrupted run; a
store's cells (and a Ray task's retry) keep theirs under ``<results>/resume/`` until stored.

The training measurement (:func:`training_rows`) records, per epoch (epoch 0 = before training),
one tidy row per metric. Evaluation metrics come from ``model.evaluate`` with exact samples, so
they do not depend on the estimator; ``param_group`` holds the split they were measured on:

- ``elbo`` (train, valid, test): mean per-example ELBO, the expected log-likelihood averaged over
  ``EvalConfig.samples`` draws minus the analytic KL. The training ELBO is this same evaluation on
  the first ``EvalConfig.train_subset`` training examples (all by default), not the running mean
  of the loss, so it is comparable across estimators and with the other splits.
- ``reconstruction_ll`` (autoencoders; train, valid, test): E_q[log p(x|z)] with exact discrete
  samples, also for Gumbel-softmax; ``kl`` the ELBO's KL term, reconstruction_ll − elbo.
- ``reconstruction_ll_relaxed`` (Gumbel-softmax; train, valid, test): log p(x|y) with the
  relaxed Concrete sample y at the estimator's temperature, the quantity of the thesis' Table
  5.1 for its Gumbel-softmax rows (:func:`relaxed_reconstruction`).
- ``iw_bound`` (autoencoders; test): log (1/k) Σ_k p(x, z_k) / q(z_k|x) with k = ``EvalConfig.iw_samples``
  (Burda et al. 2016), at epoch 0, the last epoch and every ``EvalConfig.iw_every`` epochs, on
  the first ``EvalConfig.iw_subset`` test examples (all when None).
- ``error_rate`` and ``nll`` (classifiers; train, valid, test): with the mean weights θ.
- ``train_loss`` (train; epochs ≥ 1): the mean over the epoch's minibatches of the surrogate's
  value, i.e. the loss the estimator trains on (−ELBO with the estimator's own samples, relaxed
  ones for Gumbel-softmax).
- ``wall_clock_s`` (train): seconds spent in optimizer steps so far, evaluation excluded.
- ``temperature`` / ``beta`` (param_group ``schedule``; annealed estimators): the setting the
  epoch's last optimizer step used (epoch 0: the first step's), from ``estimator.schedule``.

- ``iw_bound_k<k>`` (valid), ``best_valid_epoch`` (valid) and ``iw_bound_k<k>_at_best_valid``
  (test), with ``EvalConfig.best_valid_iw_samples``: ARM's and DisARM's test figure, the test
  bound with each k at the parameters of the epoch whose validation bound (the first k) was
  best among the epochs where the iw bound is computed; the last two at the last epoch.

Evaluation rows carry the mean over the split's examples in ``value``, a 95% normal interval
(mean ± 1.96 standard errors over examples) in ``ci_low``/``ci_high`` and the number of
examples in ``n``. Every evaluation uses the same seed (common random numbers across epochs and
estimators) inside a forked RNG, so evaluating never changes the training run. A run that
diverges gets rows of NaN with status ``diverged`` at the epoch it diverged, and no later rows.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gradbench.code_version import cell_stamp
from gradbench.data import SPLITS, Dataset
from gradbench.device import clock
from gradbench.estimators.base import Estimator, estimator_class
from gradbench.estimators.gumbel_softmax import GumbelSoftmax
from gradbench.execution.task import Context, Resources, Task, Work, cell_key
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.experiments.metrics import (
    BEST_VALID_EPOCH,
    ELBO,
    ERROR_RATE,
    IW_BOUND,
    KL,
    RECONSTRUCTION_LL,
    RECONSTRUCTION_LL_RELAXED,
    TRAIN_LOSS,
    WALL_CLOCK_S,
    iw_bound_at_best_valid,
    iw_bound_k,
)
from gradbench.models.base import StochasticModel, get_model_class
from gradbench.options import resolve_options
from gradbench.profiles import setting_default
from gradbench.results import (
    RESUMED_SECONDS,
    STATUS_DIVERGED,
    STATUS_OK,
    Cell,
    atomic_torch_save,
    code_version,
)

EXPERIMENT = "train"
"""Experiment name of the training cells in the result store."""

NOISE_SEED_OFFSET = 2
"""The training noise is from setting.seed + 2 (model init: seed; a learned baseline: seed + 1)."""
EVAL_SEED_OFFSET = 3
"""Every evaluation draws its samples from setting.seed + 3."""
EVAL_MEMORY_BYTES = 256 * 2**20
"""Bound on one evaluation call's decoded samples (S or k draws × examples × input size, float32):
the paper's k = 1000 bound on 784 pixels takes 85 examples per call."""
Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal, for the evaluation intervals."""
METRIC_NAMES = {"error": ERROR_RATE}
"""Row names of ``model.evaluate`` keys that differ from them (a 0/1 error averages to a rate)."""


class Optimizers:
    """Several torch optimizers stepped as one (Adam for the networks, plain SGD for the
    parameters a model names in ``sgd_parameters``): the optimizer interface the loop uses."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's parameter groups, in order."""
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every optimizer's gradients."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """One step of every optimizer."""
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states, in order."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore states saved by :meth:`state_dict`."""
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


Optimizer = torch.optim.Optimizer | Optimizers


def make_optimizer(model: nn.Module, learning_rate: float) -> Optimizer:
    """Adam over the model's parameters, the fused implementation (one kernel per step, on the
    CPU too); an estimator fits its own state in ``observe``. Parameters a
    :class:`StochasticModel` lists in ``sgd_parameters`` (a learned prior: ARM's and DisARM's
    codes) train by plain SGD at their own rates instead, beside the Adam."""
    rates = model.sgd_parameters() if isinstance(model, StochasticModel) else {}
    named = dict(model.named_parameters())
    unknown = sorted(set(rates) - set(named))
    if unknown:
        raise ValueError(f"sgd_parameters names no parameter {', '.join(unknown)}")
    adam = torch.optim.Adam(
        [p for name, p in named.items() if name not in rates], lr=learning_rate, fused=True
    )
    if not rates:
        return adam
    sgd = torch.optim.SGD([{"params": [named[name]], "lr": rate} for name, rate in rates.items()])
    return Optimizers([adam, sgd])


def train_step(
    model: StochasticModel,
    estimator: Estimator,
    optimizer: Optimizer,
    x: Tensor,
    y: Tensor,
) -> Tensor:
    """One optimizer step on minibatch (x, y); returns the minibatch's mean loss (no host sync)."""
    forward = model(x, y, estimator)
    surrogate = estimator.surrogate(forward).mean()
    optimizer.zero_grad(set_to_none=True)
    surrogate.backward()
    optimizer.step()
    estimator.observe(forward)
    return surrogate.detach()


def steps_per_epoch(dataset: Dataset, batch_size: int, max_steps: int | None = None) -> int:
    """Optimizer steps in one epoch (the last partial minibatch is dropped), at most
    ``max_steps``; ValueError when the batch is larger than the training set."""
    steps = len(dataset.train) // batch_size
    if steps == 0:
        raise ValueError(
            f"batch size {batch_size} exceeds the {len(dataset.train)} training examples"
        )
    return steps if max_steps is None else min(steps, max_steps)


def train_epoch(
    model: StochasticModel,
    estimator: Estimator,
    optimizer: Optimizer,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    max_steps: int | None = None,
) -> float:
    """One pass over the training set (or ``max_steps`` steps); the mean minibatch loss.

    Returns NaN or inf when the run diverged; the caller records that instead of crashing.
    """
    model.train()
    total = torch.zeros((), device=dataset.device)
    steps = 0
    for x, y in dataset.batches("train", batch_size, generator):
        total += train_step(model, estimator, optimizer, x, y)
        steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    if steps == 0:
        raise ValueError(
            f"batch size {batch_size} exceeds the {len(dataset.train)} training examples"
        )
    return float(total) / steps


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; defaults are the thesis' (Adam, batch 100, 3e-4, 50 epochs)."""

    epochs: int = 50  # passes over the training set
    batch_size: int = 100  # minibatch size (the thesis; Kingma & Welling's M = 100)
    learning_rate: float = 3e-4  # Adam's step size at epoch 1
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch (1: constant)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning rate must be positive and finite, got {self.learning_rate}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")


def _profile_default(name: str) -> Any:
    """A field whose one default is the profile setting ``name``'s
    (:class:`gradbench.profiles.Profile`, where it is documented)."""
    return field(default_factory=partial(setting_default, name))


@dataclass(frozen=True)
class EvalConfig:
    """How the ELBO and the other figures are evaluated after each epoch; every field but
    ``chunk_size`` defaults to its profile setting ``eval_<field>``."""

    samples: int = _profile_default("eval_samples")  # S draws per example of E_q[log p(x|z)]
    iw_samples: int = _profile_default("eval_iw_samples")  # k of the test split's iw bound
    iw_every: int = _profile_default("eval_iw_every")  # iw bound also every this many epochs
    train_subset: int | None = _profile_default("eval_train_subset")  # training ELBO's first N
    chunk_size: int = 500  # examples per model.evaluate call, to bound memory
    iw_subset: int | None = _profile_default("eval_iw_subset")  # iw bound's first N test examples
    # ARM's and DisARM's test figure: the test iw bound with each of these k at the epoch of the
    # best validation iw bound (k = the first), checked where iw_at is true; empty: not tracked
    best_valid_iw_samples: tuple[int, ...] = _profile_default("eval_best_valid_iw_samples")

    def __post_init__(self) -> None:
        for name in ("samples", "iw_samples", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iw_every < 0:
            raise ValueError(f"iw_every must be >= 0, got {self.iw_every}")
        for name in ("train_subset", "iw_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be None or >= 1, got {getattr(self, name)}")
        if any(k < 1 for k in self.best_valid_iw_samples):
            raise ValueError(f"best_valid_iw_samples must be >= 1, got {self.best_valid_iw_samples}")

    def hashed(self) -> dict[str, Any]:
        """The fields that define a cell's figures: every field, less ``best_valid_iw_samples``
        when empty (cells stored before it existed keep their hash)."""
        fields = asdict(self)
        if not self.best_valid_iw_samples:
            del fields["best_valid_iw_samples"]
        return fields

    def iw_at(self, epoch: int, last_epoch: int) -> bool:
        """Whether the importance-weighted bound is computed at ``epoch``."""
        periodic = self.iw_every > 0 and epoch % self.iw_every == 0
        return epoch in (0, last_epoch) or periodic

    def evaluation_draws(
        self, dataset: Dataset, epochs: int, bounded: bool = True, relaxed: bool = False
    ) -> int:
        """Draws decoded by the evaluation of a cell of ``epochs`` epochs, a ``model.evaluate``
        call on n examples counting n (samples + iw_samples): the ELBO on the three splits
        after every epoch (and before the first), with one more draw each for an estimator
        whose sample is relaxed (``relaxed``: the relaxed reconstruction), and, for a model
        with an iw bound (``bounded``), the test split's bound and the tracked validation bound
        at the :meth:`iw_at` epochs and the test bounds at the best validation epoch."""
        def first(split: str, limit: int | None) -> int:
            size = len(dataset.split(split))
            return size if limit is None else min(size, limit)

        evaluated = first("train", self.train_subset) + len(dataset.valid) + len(dataset.test)
        per_epoch = (self.samples + 1 + relaxed) * evaluated
        if not bounded:
            return (epochs + 1) * per_epoch
        per_bound = (1 + self.iw_samples) * first("test", self.iw_subset)
        best = self.best_valid_iw_samples
        if best:
            per_bound += (1 + best[0]) * first("valid", self.iw_subset)
        bound_epochs = sum(self.iw_at(epoch, epochs) for epoch in range(epochs + 1))
        final = sum(1 + k for k in best) * len(dataset.test)
        return (epochs + 1) * per_epoch + bound_epochs * per_bound + final


@dataclass
class TrainingRun:
    """A model being trained with one estimator, and where it stands.

    ``log`` is for callbacks: rows appended to it are saved with a checkpoint and restored on
    resume; so is ``best`` (the best-validation tracking of :class:`BestValidation`).
    ``wall_clock_s`` counts optimizer steps only. Inside an epoch, ``order`` is the epoch's
    shuffled order of the training examples, ``position`` the steps taken in it and
    ``epoch_total`` the sum of their minibatch losses (None between epochs). ``resumed_s``:
    the seconds earlier processes spent on the run, up to their last save (0 for a fresh run);
    ``process_start``: when this process took it up (``time.monotonic``).
    """

    model: StochasticModel
    estimator: Estimator
    optimizer: Optimizer
    generator: torch.Generator  # minibatch order (and dynamic binarization), on the data's device
    setting: Setting
    config: TrainConfig
    epoch: int = 0
    train_loss: float | None = None
    wall_clock_s: float = 0.0
    diverged: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)
    order: Tensor | None = None
    position: int = 0
    epoch_total: Tensor | None = None
    best: dict[str, Any] = field(default_factory=dict)
    resumed_s: float = 0.0
    process_start: float = field(default_factory=time.monotonic)

    def cell_seconds(self) -> float:
        """Seconds spent on the run so far, by every process that worked on it (each earlier
        one up to its last save), training and evaluation alike."""
        return self.resumed_s + time.monotonic() - self.process_start


EpochCallback = Callable[[TrainingRun], None]

SAVE_EVERY_S = 300.0
"""Default seconds of training between two resumable saves of a run (and one at every epoch's
end): a 1 M-step cell killed at any moment loses at most this much work."""


def start_training(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TrainConfig,
) -> TrainingRun:
    """Model, estimator and Adam at epoch 0, every random source seeded from ``setting.seed``.

    The model's initialisation is the same for every estimator; minibatch order comes from a
    generator on the data's device seeded with ``setting.seed``; sampling noise from the global
    RNG seeded with ``setting.seed + 2``.
    """
    model = build_model(setting, dataset, device)
    estimator = build_estimator(setting, estimator_name, dataset, device)
    per_epoch = steps_per_epoch(dataset, config.batch_size)
    estimator.plan(config.epochs * per_epoch, per_epoch)
    optimizer = make_optimizer(model, config.learning_rate)
    generator = torch.Generator(device=dataset.device).manual_seed(setting.seed)
    torch.manual_seed(setting.seed + NOISE_SEED_OFFSET)
    return TrainingRun(model, estimator, optimizer, generator, setting, config)


def parameters_finite(run: TrainingRun) -> bool:
    """True when every parameter of the model and the estimator is finite (one host sync)."""
    params = [*run.model.parameters(), *run.estimator.parameters()]
    return bool(torch.stack([p.isfinite().all() for p in params]).all())


SaveCallback = Callable[[], None]


def continue_epoch(run: TrainingRun, dataset: Dataset, save: SaveCallback | None) -> float:
    """Take the steps left in the run's current epoch (drawing its order first when it starts
    one) and return the epoch's mean minibatch loss; ``save()`` is offered after every step and
    decides itself whether to write. The draws are :meth:`Dataset.batches`' own (the order,
    then each minibatch's binarization from the same generator), so an epoch in one piece or in
    several gives the same numbers. NaN or inf when the run diverged."""
    run.model.train()
    batch = run.config.batch_size
    per_epoch = steps_per_epoch(dataset, batch)
    if run.order is None:
        run.order = dataset.epoch_order("train", run.generator)
        run.position, run.epoch_total = 0, torch.zeros((), device=dataset.device)
    while run.position < per_epoch:
        start = run.position * batch
        x, y = dataset.minibatch("train", run.order[start : start + batch], run.generator)
        run.epoch_total += train_step(run.model, run.estimator, run.optimizer, x, y)
        run.position += 1
        if save is not None and run.position < per_epoch:
            save()
    loss = float(run.epoch_total) / per_epoch
    run.order, run.position, run.epoch_total = None, 0, None
    return loss


def train_model(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    checkpoint: Path | None = None,
    progress: bool = False,
    save_every_s: float = SAVE_EVERY_S,
) -> TrainingRun:
    """Train ``setting``'s model with an estimator for ``config.epochs`` epochs.

    ``on_epoch(run)`` is called at epoch 0 (before any step) and after every epoch, with
    ``run.epoch``, ``run.train_loss`` (the epoch's mean surrogate value) and ``run.diverged``
    set; the model is at that epoch's parameters. When the loss or a parameter becomes NaN or
    infinite, ``run.diverged`` is set, ``on_epoch`` is called once more and training stops.
    With ``checkpoint``, the run's whole state (:func:`save_checkpoint`) is written there
    atomically after every epoch and, inside an epoch, after the first step that ends
    ``save_every_s`` seconds after the last write; when the file exists the run continues
    from it, mid-epoch included, to the same figures as an uninterrupted run. Same seed and
    device give the same run.
    """
    if not save_every_s >= 0:
        raise ValueError(f"save_every_s must be >= 0, got {save_every_s}")
    run = start_training(setting, estimator_name, dataset, device, config)
    resumed = checkpoint is not None and checkpoint.is_file()
    if not (resumed and load_checkpoint(run, checkpoint, device)) and on_epoch is not None:
        on_epoch(run)
    epochs = range(run.epoch + 1, config.epochs + 1) if not run.diverged else range(0)
    bar = tqdm(epochs, desc=estimator_name, unit="epoch", disable=not progress, leave=False)
    segment_start = clock(device)
    last_save = time.monotonic()

    def save_if_due() -> None:
        nonlocal segment_start, last_save
        if checkpoint is None or time.monotonic() - last_save < save_every_s:
            return
        run.wall_clock_s += clock(device) - segment_start
        save_checkpoint(run, checkpoint, device)
        segment_start, last_save = clock(device), time.monotonic()

    for epoch in bar:
        segment_start = clock(device)
        loss = continue_epoch(run, dataset, save_if_due)
        run.wall_clock_s += clock(device) - segment_start
        run.epoch, run.train_loss = epoch, loss
        run.diverged = not math.isfinite(loss) or not parameters_finite(run)
        for group in run.optimizer.param_groups:
            group["lr"] *= config.lr_decay
        if on_epoch is not None:
            on_epoch(run)
        if checkpoint is not None:
            save_checkpoint(run, checkpoint, device)
            last_save = time.monotonic()
        bar.set_postfix(loss=f"{loss:.4g}")
        if run.diverged:
            break
    bar.close()
    return run


def inner_optimizers(module: nn.Module) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """The torch optimizers held as attributes of ``module`` or its submodules (a learned
    baseline's Adam, REBAR's tuner), by ``path.attribute``, each with the module that holds it:
    state that ``state_dict`` misses."""
    found = {}
    for path, sub in module.named_modules():
        for attribute, value in vars(sub).items():
            if isinstance(value, torch.optim.Optimizer):
                found[f"{path}.{attribute}" if path else attribute] = (sub, value)
    return found


def restore_inner_optimizers(module: nn.Module, saved: dict[str, dict[str, Any]]) -> None:
    """Load the states :func:`inner_optimizers` saved into ``module``'s optimizers. A saved
    optimizer with one parameter group more than the fresh one (RELAX's tuner, which takes the
    surrogate network ψ as a second group once ψ is built) gets that group back first: the
    parameters of the module holding it that no inner optimizer tracks, in module order."""
    found = inner_optimizers(module)
    tracked = {
        id(p) for _, optimizer in found.values() for group in optimizer.param_groups
        for p in group["params"]
    }
    for name, (owner, optimizer) in found.items():
        state = saved[name]
        if len(state["param_groups"]) == len(optimizer.param_groups) + 1:
            untracked = [p for p in owner.parameters() if id(p) not in tracked]
            optimizer.add_param_group({"params": untracked})
            tracked.update(id(p) for p in untracked)
        optimizer.load_state_dict(state)


def save_checkpoint(run: TrainingRun, path: Path, device: torch.device) -> None:
    """Write the run's full state to ``path`` atomically (temporary file, then rename): model,
    optimizer, estimator (its state dict and its own optimizers), the epoch's order and
    position, the data generator's and the noise RNG's states, the rows logged so far."""
    state = {
        "code_version": code_version(),
        "epoch": run.epoch,
        TRAIN_LOSS: run.train_loss,
        WALL_CLOCK_S: run.wall_clock_s,
        RESUMED_SECONDS: run.cell_seconds(),
        "diverged": run.diverged,
        "log": run.log,
        "best": run.best,
        "order": run.order,
        "position": run.position,
        "epoch_total": run.epoch_total,
        "model": run.model.state_dict(),
        "estimator": run.estimator.state_dict(),
        "estimator_optimizers": {
            name: optimizer.state_dict()
            for name, (_, optimizer) in inner_optimizers(run.estimator).items()
        },
        "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    atomic_torch_save(state, path)


def load_checkpoint(run: TrainingRun, path: Path, device: torch.device) -> bool:
    """Restore a run saved by :func:`save_checkpoint` into a freshly started ``run``; False (and
    ``run`` untouched) when the file was made by other code."""
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("code_version") != code_version():
        return False
    run.model.load_state_dict(state["model"])
    run.estimator.load_state_dict(state["estimator"])
    restore_inner_optimizers(run.estimator, state["estimator_optimizers"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["cpu_rng"].cpu())
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    run.epoch, run.train_loss = state["epoch"], state[TRAIN_LOSS]
    run.wall_clock_s, run.diverged = state[WALL_CLOCK_S], state["diverged"]
    run.resumed_s = state[RESUMED_SECONDS]
    run.log = list(state["log"])
    run.best = dict(state["best"])
    run.order, run.position, run.epoch_total = state["order"], state["position"], state["epoch_total"]
    return True


def evaluate_split(
    model: StochasticModel,
    dataset: Dataset,
    split: str,
    samples: int,
    iw_samples: int,
    chunk_size: int,
    seed: int,
    limit: int | None = None,
    measure: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """``model.evaluate`` (or ``measure(x, y)``) on the first ``limit`` examples of ``split``
    (all when None), in chunks.

    Returns metric → per-example values [N]. The binarization (if dynamic) and the samples are
    drawn from ``seed`` inside a forked RNG, so the global RNG is left as it was.
    """
    size = len(dataset.split(split)) if limit is None else min(limit, len(dataset.split(split)))
    # At most EVAL_MEMORY_BYTES of decoded samples (k × examples × inputs) per call.
    per_example = max(samples, iw_samples) * dataset.input_dim * 4
    chunk_size = max(1, min(chunk_size, EVAL_MEMORY_BYTES // per_example))
    generator = torch.Generator(device=dataset.device).manual_seed(seed)
    parts: dict[str, list[Tensor]] = {}
    devices = [dataset.device] if dataset.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        taken = 0
        for x, y in dataset.batches(split, chunk_size, generator, shuffle=False):
            if taken >= size:
                break
            keep = min(len(y), size - taken)
            found = (measure(x[:keep], y[:keep]) if measure is not None
                     else model.evaluate(x[:keep], y[:keep], samples, iw_samples))
            for name, values in found.items():
                parts.setdefault(name, []).append(values.detach())
            taken += keep
    return {name: torch.cat(values) for name, values in parts.items()}


def decodes_relaxed(estimator: str | type[Estimator]) -> bool:
    """Whether an estimator (a label or its class) decodes the relaxed Concrete sample: its
    ``sample`` is Gumbel-softmax's (:func:`relaxed_reconstruction` then measures it)."""
    cls = estimator_class(estimator) if isinstance(estimator, str) else estimator
    return cls.sample is GumbelSoftmax.sample


def relaxed_reconstruction(
    model: StochasticModel, estimator: Estimator
) -> Callable[[Tensor, Tensor], dict[str, Tensor]] | None:
    """For an estimator whose forward pass carries the relaxed Concrete sample (Gumbel-softmax,
    not its straight-through or Rao-Blackwellised variants): per-example log p(x | y) with that
    sample at the estimator's current temperature, ``reconstruction_ll_relaxed``: the
    reconstruction Jang et al.'s notebook prints, which the thesis' Table 5.1 follows (Nitta
    2017, §5.3). None for an estimator that decodes discrete samples."""
    if not decodes_relaxed(type(estimator)):
        return None

    def measure(x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return {RECONSTRUCTION_LL_RELAXED: -model(x, y, estimator).data_loss}

    return measure


def summary(values: Tensor) -> tuple[float, float, float, int]:
    """Mean, 95% normal interval (mean ± 1.96 standard errors) and count of per-example values."""
    values = values.to(torch.float64)
    n = int(values.numel())
    mean = float(values.mean())
    se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return mean, mean - Z_95 * se, mean + Z_95 * se, n


def metric_row(
    metric: str,
    param_group: str,
    epoch: int,
    batch_size: int,
    value: float,
    ci: tuple[float | None, float | None] = (None, None),
    n: int | None = None,
    status: str = STATUS_OK,
) -> dict[str, Any]:
    """One tidy row of the training measurement (``results.stamp`` adds the rest)."""
    return {
        "param_group": param_group,
        "batch_size": batch_size,
        "epoch": epoch,
        "metric": metric,
        "value": value,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n": n,
        "status": status,
    }


def evaluation_rows(
    run: TrainingRun, dataset: Dataset, evaluation: EvalConfig
) -> list[dict[str, Any]]:
    """Rows of every evaluation metric on every non-empty split at the run's current epoch."""
    rows = []
    iw = evaluation.iw_at(run.epoch, run.config.epochs)
    seed = run.setting.seed + EVAL_SEED_OFFSET
    run.model.eval()
    for split in SPLITS:
        if len(dataset.split(split)) == 0:
            continue
        limit = evaluation.train_subset if split == "train" else None
        metrics = evaluate_split(
            run.model, dataset, split, evaluation.samples, 1, evaluation.chunk_size, seed, limit
        )
        if RECONSTRUCTION_LL in metrics and ELBO in metrics:
            metrics[KL] = metrics[RECONSTRUCTION_LL] - metrics[ELBO]
        relaxed = relaxed_reconstruction(run.model, run.estimator)
        if relaxed is not None:
            metrics |= evaluate_split(run.model, dataset, split, 1, 1, evaluation.chunk_size,
                                      seed, limit, relaxed)
        has_bound = metrics.pop(IW_BOUND, None) is not None
        if iw and split == "test" and has_bound:
            bound = evaluate_split(
                run.model, dataset, split, 1, evaluation.iw_samples, evaluation.chunk_size,
                seed, evaluation.iw_subset,
            )
            metrics[IW_BOUND] = bound[IW_BOUND]
        for name, values in metrics.items():
            mean, low, high, n = summary(values)
            metric = METRIC_NAMES.get(name, name)
            rows.append(
                metric_row(metric, split, run.epoch, run.config.batch_size, mean, (low, high), n)
            )
    return rows


def diverged_rows(run: TrainingRun) -> list[dict[str, Any]]:
    """NaN rows with status "diverged" at the run's epoch, one per metric logged at epoch 0."""
    seen = [(r["param_group"], r["metric"]) for r in run.log if r["epoch"] == 0]
    keys = list(dict.fromkeys([*seen, ("train", TRAIN_LOSS), ("train", WALL_CLOCK_S)]))
    values = {("train", TRAIN_LOSS): run.train_loss, ("train", WALL_CLOCK_S): run.wall_clock_s}
    return [
        metric_row(
            metric,
            group,
            run.epoch,
            run.config.batch_size,
            values.get((group, metric), math.nan),
            status=STATUS_DIVERGED,
        )
        for group, metric in keys
    ]


def epoch_rows(run: TrainingRun, dataset: Dataset, evaluation: EvalConfig) -> list[dict[str, Any]]:
    """The training measurement's rows at the run's current epoch (see the module docstring)."""
    if run.diverged:
        return diverged_rows(run)
    rows = evaluation_rows(run, dataset, evaluation)
    batch = run.config.batch_size
    if run.train_loss is not None:
        rows.append(metric_row(TRAIN_LOSS, "train", run.epoch, batch, run.train_loss))
    rows.append(metric_row(WALL_CLOCK_S, "train", run.epoch, batch, run.wall_clock_s))
    # The annealed settings the epoch's last step trained with (epoch 0: the first step's).
    last_step = max(0, int(run.estimator.steps) - 1)
    for name, value in run.estimator.schedule_at(last_step).items():
        rows.append(metric_row(name, "schedule", run.epoch, batch, value))
    return rows


def training_rows(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TrainConfig,
    evaluation: EvalConfig,
    checkpoint: Path | None = None,
    progress: bool = False,
    save_every_s: float = SAVE_EVERY_S,
) -> list[dict[str, Any]]:
    """Train and evaluate one model × estimator; every epoch's rows (see the module docstring),
    then those of :func:`best_validation_rows`. With ``checkpoint``: resumable, saved every
    ``save_every_s`` seconds (:func:`train_model`); every row carries the seconds earlier
    processes spent on the run (``resumed_seconds``), which the store adds to the cell's."""

    def record(run: TrainingRun) -> None:
        run.log.extend(epoch_rows(run, dataset, evaluation))
        if evaluation.best_valid_iw_samples and not run.diverged:
            if evaluation.iw_at(run.epoch, config.epochs):
                run.log.extend(track_best_validation(run, dataset, evaluation))

    run = train_model(
        setting, estimator_name, dataset, device, config, record, checkpoint, progress,
        save_every_s,
    )
    rows = run.log + best_validation_rows(run, dataset, evaluation)
    return [row | {RESUMED_SECONDS: run.resumed_s} for row in rows]


def _iw_bound(
    model: StochasticModel, dataset: Dataset, split: str, k: int, evaluation: EvalConfig,
    seed: int, limit: int | None,
) -> Tensor:
    """Per-example iw bounds with k draws on the first ``limit`` examples (None: all)."""
    values = evaluate_split(model, dataset, split, 1, k, evaluation.chunk_size, seed, limit)
    return values[IW_BOUND]


def track_best_validation(
    run: TrainingRun, dataset: Dataset, evaluation: EvalConfig
) -> list[dict[str, Any]]:
    """The validation iw bound (k = ``best_valid_iw_samples[0]``, on the first ``iw_subset``
    examples) at the run's epoch, as a row
    ``iw_bound_k<k>`` [valid]; when it beats every earlier one, the parameters are kept in
    ``run.best`` (saved and resumed with the run)."""
    k = evaluation.best_valid_iw_samples[0]
    run.model.eval()
    bound = _iw_bound(run.model, dataset, "valid", k, evaluation,
                      run.setting.seed + EVAL_SEED_OFFSET, evaluation.iw_subset)
    mean, low, high, n = summary(bound)
    if not run.best or mean > run.best["value"]:
        state = {name: value.detach().clone() for name, value in run.model.state_dict().items()}
        run.best = {"epoch": run.epoch, "value": mean, "model": state}
    row = metric_row(iw_bound_k(k), "valid", run.epoch, run.config.batch_size, mean,
                     (low, high), n)
    return [row]


def best_validation_rows(
    run: TrainingRun, dataset: Dataset, evaluation: EvalConfig
) -> list[dict[str, Any]]:
    """ARM's and DisARM's test figure, at the run's last epoch: for each k of
    ``best_valid_iw_samples`` the iw bound on the whole test split at the parameters of the best validation bound
    (``iw_bound_k<k>_at_best_valid`` [test]) and that epoch (``best_valid_epoch``). Empty when not
    tracked or nothing was checked."""
    if not evaluation.best_valid_iw_samples or not run.best:
        return []
    model = build_model(run.setting, dataset, dataset.device)
    model.load_state_dict(run.best["model"])
    model.eval()
    batch, epoch = run.config.batch_size, run.epoch
    rows = [metric_row(BEST_VALID_EPOCH, "valid", epoch, batch, float(run.best["epoch"]))]
    for k in evaluation.best_valid_iw_samples:
        bound = _iw_bound(model, dataset, "test", k, evaluation,
                          run.setting.seed + EVAL_SEED_OFFSET, None)
        mean, low, high, n = summary(bound)
        rows.append(metric_row(iw_bound_at_best_valid(k), "test", epoch, batch, mean,
                               (low, high), n))
    return rows


def setting_config(setting: Setting, estimator_name: str) -> dict[str, Any]:
    """The part of a cell's configuration that the setting defines, options resolved."""
    return {
        "model_options": resolve_options(get_model_class(setting.model), setting.model_options),
        "estimator_options": setting.resolved_options(estimator_name),
        "seed": setting.seed,
    }


def dataset_config(dataset: Dataset) -> dict[str, Any]:
    """The data that defines a cell's figures: the dataset used, binarization, sizes."""
    return {
        "dataset": dataset.name,
        "binarization": dataset.binarization,
        "n_train": len(dataset.train),
        "n_valid": len(dataset.valid),
        "n_test": len(dataset.test),
        "data_seed": dataset.seed,
    }


def training_cell(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TrainConfig,
    evaluation: EvalConfig,
    profile: str,
) -> Cell:
    """The result-store cell of one training run; its configuration defines every figure."""
    cell_config = {
        **setting_config(setting, estimator_name),
        **dataset_config(dataset),
        **asdict(config),
        "evaluation": evaluation.hashed(),
        "device": device.type,
        "profile": profile,
    }
    return Cell(EXPERIMENT, setting.model, estimator_name, cell_config)


def checkpoint_path(root: Path, cell: Cell) -> Path:
    """Where a store under ``root`` keeps the resume checkpoint of an unfinished ``cell``.

    ``<root>/resume/<experiment>/<model>__<estimator>__<hash>.pt``, the hash followed by
    ``+plugins.<their hash>`` for a cell that uses plugins (an edited plugin starts afresh);
    deleted once the cell is stored.
    """
    plugins = cell_stamp("", cell.model, cell.estimator, cell.config)["code_version"]
    name = f"{cell.model}__{cell.estimator}__{cell.config_hash}{plugins}.pt"
    return root / "resume" / cell.experiment / name


def discard_checkpoint(path: Path) -> None:
    """Delete a resume checkpoint and the folders it leaves empty (up to ``resume``)."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        if folder.is_dir() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # another run's file appeared meanwhile
                folder.rmdir()


def _training_task(
    setting: Setting,
    estimator_name: str,
    config: TrainConfig,
    evaluation: EvalConfig,
    resume_name: str,
    save_every_s: float,
    context: Context,
) -> list[dict[str, Any]]:
    """A training cell's rows, resumable from a checkpoint in the context's scratch folder
    (deleted once the rows are made): a rerun, or a Ray task's retry, continues from it."""
    resume = context.scratch / resume_name
    rows = training_rows(setting, estimator_name, context.dataset, context.device, config,
                         evaluation, resume, context.progress, save_every_s)
    discard_checkpoint(resume)
    return rows


def training_tasks(
    setting: Setting,
    estimators: list[str],
    dataset: Dataset,
    device: torch.device,
    config: TrainConfig,
    evaluation: EvalConfig,
    profile: str,
    resources: Resources = Resources(),
    save_every_s: float = SAVE_EVERY_S,
) -> list[Task]:
    """One training cell per estimator, each resumable (:func:`checkpoint_path`), its state
    saved every ``save_every_s`` seconds and at every epoch's end."""
    per_epoch = steps_per_epoch(dataset, config.batch_size)
    # An autoencoder's evaluate gives the iw bound (a classifier's does not).
    bounded = get_model_class(setting.model).task == "autoencoder"
    tasks = []
    for name in estimators:
        cell = training_cell(setting, name, dataset, device, config, evaluation, profile)
        resume = checkpoint_path(Path("."), cell).as_posix()
        tasks.append(Task(
            cell_key(cell),
            partial(_training_task, setting, name, config, evaluation, resume, save_every_s),
            cell=cell, resources=resources,
            describe=f"train {setting.model} / {name} / seed {setting.seed}",
            work=Work(setting, name, config.batch_size, config.epochs * per_epoch,
                      evaluation.evaluation_draws(dataset, config.epochs, bounded,
                                                  decodes_relaxed(name))),
        ))
    return tasks
