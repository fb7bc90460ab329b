"""Model checkpoints trained with a reference estimator, stored once and reused.

Variance is measured for every estimator at the *same* parameters: the model trained for a given
number of epochs with one reference estimator (Kingma, Salimans & Welling 2015 measure at 10 and
100 epochs). A checkpoint is the full training state — model, reference estimator, Adam, the
data-order generator and the noise RNG — so training to epoch 100 can continue from a stored
epoch-10 checkpoint and give the same numbers as training straight through. Files live at
``<results>/checkpoints/<hash>.pt``, the hash taken over everything that defines the parameters
(model and its resolved options, data, seed, reference estimator and options, training settings,
device type, epoch), and are written atomically (temporary file, then rename). A checkpoint made
by other code (its stored ``code_version`` differs) is trained again and overwritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradbench.data import Dataset
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure.training import (
    dataset_config,
    make_optimizer,
    steps_per_epoch,
    train_epoch,
)
from gradbench.models.base import get_model_class
from gradbench.options import resolve_options
from gradbench.results import atomic_torch_save, code_version

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainingConfig:
    """How the reference estimator trains the model to a checkpoint."""

    batch_size: int = 100  # training minibatch size
    learning_rate: float = 1e-3  # Adam's step size
    max_steps_per_epoch: int | None = None  # cap on steps per epoch (quick runs); None: full pass
    horizon_epochs: int = 100  # the run the checkpoints belong to: annealing schedules span it

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"training batch size must be positive, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(
                f"max_steps_per_epoch must be None or positive, got {self.max_steps_per_epoch}"
            )
        if self.horizon_epochs < 1:
            raise ValueError(f"horizon_epochs must be positive, got {self.horizon_epochs}")


@dataclass
class Checkpoint:
    """Parameters after ``epoch`` epochs (``steps`` optimizer steps) of the reference estimator."""

    epoch: int
    steps: int
    model_state: dict[str, Tensor]
    estimator_state: dict[str, Tensor]
    diverged: bool  # the training loss became NaN or infinite before this epoch
    path: Path | None  # the stored file; None for epoch 0 (the seeded initialisation)


def stable_seed(*parts: Any) -> int:
    """A seed in [0, 2⁶³) from JSON-serialisable parts, the same in every process (not hash())."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def checkpoint_config(
    setting: Setting,
    dataset: Dataset,
    reference: str,
    training: TrainingConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Everything that defines a checkpoint's parameters except the epoch."""
    return {
        "model": setting.model,
        "model_options": resolve_options(get_model_class(setting.model), setting.model_options),
        "seed": setting.seed,
        "data": dataset_config(dataset),
        "reference_estimator": reference,
        "reference_options": setting.resolved_options(reference),
        "training": asdict(training),
        "device": device.type,
    }


def checkpoint_path(root: str | os.PathLike[str], config: dict[str, Any], epoch: int) -> Path:
    """``<root>/checkpoints/<hash of config and epoch>.pt``."""
    text = json.dumps(config | {"epoch": epoch}, sort_keys=True, default=str)
    return Path(root) / CHECKPOINT_DIR / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"


def _rng_states(device: torch.device) -> dict[str, Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def load_or_train(
    setting: Setting,
    dataset: Dataset,
    device: torch.device,
    epoch: int,
    reference: str,
    root: str | os.PathLike[str],
    training: TrainingConfig = TrainingConfig(),
) -> Checkpoint:
    """The model after ``epoch`` epochs of training with ``reference``: loaded, or trained, stored.

    Training starts from the latest stored earlier epoch of the same configuration (or from the
    seeded initialisation) and stops early, flagged ``diverged``, if the loss stops being finite.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be non-negative, got {epoch}")
    config = checkpoint_config(setting, dataset, reference, training, device)
    model = build_model(setting, dataset, device)
    estimator = build_estimator(setting, reference, dataset, device)
    per_epoch = steps_per_epoch(dataset, training.batch_size, training.max_steps_per_epoch)
    estimator.plan(training.horizon_epochs * per_epoch, per_epoch)
    if epoch == 0:
        return Checkpoint(0, 0, model.state_dict(), estimator.state_dict(), False, None)
    target = checkpoint_path(root, config, epoch)
    stored = _load_current(target, device)
    if stored is not None:
        return _checkpoint(stored, target)

    optimizer = make_optimizer(model, training.learning_rate)
    generator = torch.Generator(device=device)
    earlier = (
        (e, _load_current(checkpoint_path(root, config, e), device))
        for e in range(epoch - 1, 0, -1)
    )
    start, state = next(((e, s) for e, s in earlier if s is not None), (0, None))
    if state is not None:
        model.load_state_dict(state["model"])
        estimator.load_state_dict(state["estimator"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        _set_rng_states(state["rng"], device)
        steps, diverged, losses = state["steps"], state["diverged"], list(state["losses"])
    else:
        generator.manual_seed(stable_seed(setting.seed, "checkpoint-data"))
        torch.manual_seed(stable_seed(setting.seed, "checkpoint-noise"))
        steps, diverged, losses = 0, False, []
    for _ in range(start, epoch):
        if diverged:
            break
        loss = train_epoch(
            model,
            estimator,
            optimizer,
            dataset,
            training.batch_size,
            generator,
            max_steps=training.max_steps_per_epoch,
        )
        losses.append(loss)
        diverged = not math.isfinite(loss)
        steps = int(estimator.steps)
    state = {
        "config": config,
        "code_version": code_version(),
        "epoch": epoch,
        "steps": steps,
        "diverged": diverged,
        "losses": losses,
        "model": model.state_dict(),
        "estimator": estimator.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "rng": _rng_states(device),
    }
    atomic_torch_save(state, target)
    return _checkpoint(state, target)


def _load_current(path: Path, device: torch.device) -> dict[str, Any] | None:
    """A stored checkpoint's state, or None when absent or made by other code."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    return state if state.get("code_version") == code_version() else None


def _checkpoint(state: dict[str, Any], path: Path) -> Checkpoint:
    return Checkpoint(
        epoch=state["epoch"],
        steps=state["steps"],
        model_state=state["model"],
        estimator_state=state["estimator"],
        diverged=state["diverged"],
        path=path,
    )


def lazy_checkpoint(
    setting: Setting,
    dataset: Dataset,
    device: torch.device,
    epoch: int,
    reference: str,
    root: str | os.PathLike[str],
    training: TrainingConfig,
    progress: Callable[[str], None] | None = None,
) -> Callable[[], Checkpoint]:
    """:func:`load_or_train` deferred until a cell first needs it, then kept (cells already
    stored never load or train it)."""

    @functools.cache
    def checkpoint() -> Checkpoint:
        if progress:
            progress(f"checkpoint: {setting.model} after {epoch} epochs of {reference}")
        return load_or_train(setting, dataset, device, epoch, reference, root, training)

    return checkpoint
