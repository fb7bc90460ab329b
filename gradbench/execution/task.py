"""A task: one unit of work of a run, the same object for every executor.

A task has a key, the keys of the tasks it needs (their results are passed to it in order), the
resources it asks for, and a function ``run(context, *needed) -> result``. A task with a
``cell`` returns result rows, stored at that cell by the driver; one without is an intermediate
result (a trained checkpoint) handed to the tasks that need it, and persisted by the driver
through ``persist`` where it has one. ``on_driver`` tasks are cheap and read only what the driver
holds (rows derived from other cells, a checkpoint loaded from the driver's store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradbench.data import Dataset
from gradbench.results import Cell


@dataclass(frozen=True)
class Resources:
    """What one task holds while it runs: CPU cores (and torch threads), GPUs, or a whole node,
    and the memory it keeps at its peak where that is known (0: small or not known)."""

    cpus: int = 1
    gpus: int = 0
    whole_node: bool = False  # timing: nothing else runs beside it on its node
    memory_bytes: int = 0


@dataclass(frozen=True)
class Work:
    """What a task computes, for time estimates (``all --dry-run``): ``gradients`` gradient
    evaluations of ``estimator`` on ``setting``'s model at minibatch size ``batch_size``, and
    ``evaluation_draws`` draws through the model's evaluation (forward passes only, one
    example's decoding a draw)."""

    setting: Any  # gradbench.experiment.Setting
    estimator: str
    batch_size: int
    gradients: int
    evaluation_draws: int = 0


@dataclass
class Context:
    """What a task runs with, provided by its executor: the data and device of the process that
    runs it, a scratch folder for resume files, and whether progress bars show."""

    dataset: Dataset
    device: torch.device
    scratch: Path
    progress: bool = False


@dataclass(frozen=True)
class Task:
    """One unit of work (module docstring)."""

    key: str
    run: Callable[..., Any]
    needs: tuple[str, ...] = ()
    cell: Cell | None = None
    resources: Resources = field(default_factory=Resources)
    on_driver: bool = False
    persist: Callable[[Any], None] | None = None
    describe: str = ""
    derived: bool = False  # rows computed from the rows it needs: redone when any of them is
    at_intermediate: bool = False  # measured at an intermediate it needs (a checkpoint): redone
    # when the run makes that intermediate anew
    work: Work | None = None  # for time estimates; None: negligible

    def __post_init__(self) -> None:
        if self.cell is not None and self.persist is not None:
            raise ValueError(f"task {self.key}: a rows task is stored at its cell, not persisted")


def cell_key(cell: Cell) -> str:
    """The key of the task that makes ``cell``'s rows: the cell's file in the store."""
    return cell.filename
