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

import copy
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradbench.code_version import plugins_of
from gradbench.data import Dataset
from gradbench.estimators.base import Estimator
from gradbench.execution.schedule import ordered
from gradbench.execution.task import Context, Task, Work
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure.training import (
    dataset_config,
    make_optimizer,
    steps_per_epoch,
    train_epoch,
)
from gradbench.models.base import StochasticModel, get_model_class
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

    @property
    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the model's parameters: names, dtypes, shapes and
        bytes. Rows measured at this checkpoint carry it (``checkpoint`` column), so a report
        can tell whether two cells saw the same parameters: a checkpoint is trained again by
        each code version, and a change in training's round-off gives other parameters."""
        hasher = hashlib.sha256()
        for name in sorted(self.model_state):
            tensor = self.model_state[name].detach().cpu().contiguous().reshape(-1)
            hasher.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            hasher.update(tensor.view(torch.uint8).numpy().tobytes())
        return hasher.hexdigest()[:16]


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
    """Everything that defines a checkpoint's parameters except the epoch; the labels of the
    plugins it is trained with, when there are any (their code is part of it)."""
    config = {
        "model": setting.model,
        "model_options": resolve_options(get_model_class(setting.model), setting.model_options),
        "seed": setting.seed,
        "data": dataset_config(dataset),
        "reference_estimator": reference,
        "reference_options": setting.resolved_options(reference),
        "training": asdict(training),
        "device": device.type,
    }
    plugins = plugins_of([reference], [setting.model], [dataset.name])
    if plugins:
        config["plugins"] = [code.label for code in plugins]
    return config


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


def initial_state(
    setting: Setting, reference: str, training: TrainingConfig, context: Context
) -> dict[str, Any]:
    """The checkpoint at epoch 0: the seeded initialisation, nothing trained."""
    model, estimator = _built(setting, reference, training, context)
    return {"epoch": 0, "steps": 0, "diverged": False, "losses": [],
            "model": model.state_dict(), "estimator": estimator.state_dict()}


def _built(
    setting: Setting, reference: str, training: TrainingConfig, context: Context
) -> tuple[StochasticModel, Estimator]:
    model = build_model(setting, context.dataset, context.device)
    estimator = build_estimator(setting, reference, context.dataset, context.device)
    per_epoch = steps_per_epoch(context.dataset, training.batch_size, training.max_steps_per_epoch)
    estimator.plan(training.horizon_epochs * per_epoch, per_epoch)
    return model, estimator


def train_state(
    setting: Setting,
    reference: str,
    training: TrainingConfig,
    epoch: int,
    context: Context,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full training state after ``epoch`` epochs of ``reference``, trained on from the
    ``earlier`` state (a checkpoint of an earlier epoch) or from the seeded initialisation; it
    stops early, flagged ``diverged``, once the loss is not finite. Tensors come back on the CPU
    (they travel between processes)."""
    device = context.device
    model, estimator = _built(setting, reference, training, context)
    optimizer = make_optimizer(model, training.learning_rate)
    generator = torch.Generator(device=context.dataset.device)
    if earlier is not None:
        model.load_state_dict(earlier["model"])
        estimator.load_state_dict(earlier["estimator"])
        # Adam keeps the loaded moments themselves and steps them in place: load copies, so the
        # earlier checkpoint (in one process, handed to every task that needs it) stays as stored.
        optimizer.load_state_dict(copy.deepcopy(earlier["optimizer"]))
        generator.set_state(earlier["generator"])
        _set_rng_states(earlier["rng"], device)
        start, steps = earlier["epoch"], earlier["steps"]
        diverged, losses = earlier["diverged"], list(earlier["losses"])
    else:
        generator.manual_seed(stable_seed(setting.seed, "checkpoint-data"))
        torch.manual_seed(stable_seed(setting.seed, "checkpoint-noise"))
        start, steps, diverged, losses = 0, 0, False, []
    for _ in range(start, epoch):
        if diverged:
            break
        loss = train_epoch(
            model, estimator, optimizer, context.dataset, training.batch_size, generator,
            max_steps=training.max_steps_per_epoch,
        )
        losses.append(loss)
        diverged = not math.isfinite(loss)
        steps = int(estimator.steps)
    state = {
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
    return _on_cpu(state)


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it moved to the CPU (dicts and lists walked)."""
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_on_cpu(v) for v in value]
    return value


def stored_state(path: Path) -> dict[str, Any] | None:
    """A stored checkpoint's state (on the CPU), or None when absent or made by other code."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("code_version") == code_version() else None


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Store a trained checkpoint's state (atomically); the driver persists checkpoints."""
    atomic_torch_save(state, path)


def checkpoint_key(config: dict[str, Any], epoch: int) -> str:
    """The key of the task that makes a checkpoint: its file's name, as a task key."""
    return f"{CHECKPOINT_DIR}/{checkpoint_path('.', config, epoch).name}"


def checkpoint_tasks(
    setting: Setting,
    dataset: Dataset,
    device: torch.device,
    reference: str,
    training: TrainingConfig,
    epochs: Sequence[int],
    root: str | os.PathLike[str],
) -> dict[int, Task]:
    """The tasks that make the checkpoints at ``epochs``: epoch → task.

    A checkpoint stored by this code is loaded by the driver; one not stored is trained on from
    the run's previous checkpoint (or the latest stored earlier one, else the initialisation)
    and persisted by the driver under ``root``. Tasks with these keys dedupe across experiments.
    """
    if any(epoch < 0 for epoch in epochs):
        raise ValueError(f"epochs must be non-negative, got {list(epochs)}")
    config = checkpoint_config(setting, dataset, reference, training, device)
    tasks: dict[int, Task] = {}
    wanted = sorted(set(epochs))
    per_epoch = steps_per_epoch(dataset, training.batch_size, training.max_steps_per_epoch)
    for epoch in wanted:
        key = checkpoint_key(config, epoch)
        if epoch == 0:
            tasks[0] = Task(key, partial(initial_state, setting, reference, training),
                            on_driver=True)
            continue
        path = checkpoint_path(root, config, epoch)
        if stored_state(path) is not None:
            tasks[epoch] = Task(key, partial(_load_state, path), on_driver=True)
            continue
        before = [e for e in wanted if 0 < e < epoch]
        if not before:
            before = [e for e in range(epoch - 1, 0, -1)
                      if stored_state(checkpoint_path(root, config, e)) is not None][:1]
        needs: tuple[str, ...] = ()
        start = max(before, default=0)
        if before:
            previous = max(before)
            if previous not in tasks:
                tasks[previous] = Task(
                    checkpoint_key(config, previous),
                    partial(_load_state, checkpoint_path(root, config, previous)),
                    on_driver=True,
                )
            needs = (tasks[previous].key,)
        tasks[epoch] = Task(
            key, partial(train_state, setting, reference, training, epoch), needs,
            persist=partial(save_state, path),
            describe=f"checkpoint: {setting.model} after {epoch} epochs of {reference}, "
            f"seed {setting.seed}",
            work=Work(setting, reference, training.batch_size, (epoch - start) * per_epoch),
        )
    return {epoch: tasks[epoch] for epoch in wanted} | {
        epoch: task for epoch, task in tasks.items() if epoch not in wanted
    }


def _load_state(path: Path, context: Context) -> dict[str, Any]:
    state = stored_state(path)
    if state is None:
        raise FileNotFoundError(f"checkpoint {path} vanished or was made by other code")
    return state


def as_checkpoint(state: dict[str, Any]) -> Checkpoint:
    """A task's checkpoint state as a :class:`Checkpoint`."""
    return Checkpoint(
        epoch=state["epoch"],
        steps=state["steps"],
        model_state=state["model"],
        estimator_state=state["estimator"],
        diverged=state["diverged"],
    )


def load_or_train(
    setting: Setting,
    dataset: Dataset,
    device: torch.device,
    epoch: int,
    reference: str,
    root: str | os.PathLike[str],
    training: TrainingConfig = TrainingConfig(),
) -> Checkpoint:
    """The model after ``epoch`` epochs of training with ``reference``: loaded, or trained (from
    the latest stored earlier epoch of the same configuration) and stored under ``root``."""
    tasks = checkpoint_tasks(setting, dataset, device, reference, training, [epoch], root)
    context = Context(dataset, device, Path(root))
    values: dict[str, Any] = {}
    for task in ordered(tasks.values()):
        values[task.key] = task.run(context, *(values[k] for k in task.needs))
        if task.persist is not None:
            task.persist(values[task.key])
    return as_checkpoint(values[tasks[epoch].key])
