"""Wall-clock cost of training with each estimator: per epoch, per step, per gradient.

An epoch is a full pass of optimizer steps over the training set (forward, backward, Adam
update, ``estimator.observe``) with the data already on the device. The minibatches are drawn
before the clock starts, so the timed body is only that work; on CUDA the clock is read after
synchronising (:func:`gradbench.device.clock`). After ``warmup_steps`` untimed steps, each of
``repeats`` repeats times the same ``steps`` minibatches. When ``steps`` is smaller than an
epoch's ``n_train // batch_size`` steps, the time is scaled to an epoch and the row is marked
``extrapolated``; ``steps_timed`` always records how many steps were timed.

Metrics (one row each per estimator; ``value`` the median over repeats, ``ci_low``/``ci_high``
the minimum and maximum over repeats, not a confidence interval; ``n`` the number of repeats):

- ``seconds_per_epoch``: time of the timed steps × steps per epoch / steps timed.
- ``seconds_per_step``: one optimizer step (forward, backward, update, observe).
- ``seconds_per_gradient``: forward and backward of one minibatch, no optimizer, so that an
  estimator's own cost can be read apart from the optimizer's.
- ``examples_per_second``: batch size × steps timed / time of the timed steps.
- ``deterministic_seconds_per_step`` and ``step_ratio_to_deterministic`` (models with a
  :meth:`~gradbench.models.base.StochasticModel.deterministic_network`): one fused-Adam step of
  the same network without noise, as plain torch layers, timed on the same minibatches in the
  same repeats right after the estimator's steps, and the estimator's step over it per repeat:
  the estimator's overhead over the deterministic floor (e.g. a plain 784-3×1024-10 MLP).
- ``speedup`` (:func:`speedup_rows`): one row per ordered pair of estimators timed together;
  the row of estimator A with ``param_group`` = B holds seconds_per_epoch(B) / seconds_per_epoch(A),
  i.e. how many times faster A trains than B (> 1: A is faster). The speed-up against the slowest
  estimator of a run is its row whose ``param_group`` is that estimator. ``ci_low``/``ci_high``
  are min(B)/max(A) and max(B)/min(A) over repeats.

Timing rows carry ``epoch`` and ``param_group`` empty (``param_group`` is the other estimator
for ``speedup``), and status ``diverged`` when the loss was not finite at the end.

Contention. A CPU timing is only meaningful when torch's threads had their cores to themselves:
with one other busy process on two cores, two torch threads ran a no-noise gradient 12× slower
than one thread did, because every op waits for its slowest thread. So every row also records,
over the timed repeats (warm-up excluded):

- ``torch_threads``: ``torch.get_num_threads()`` during the measurement;
- ``cpu_count``: the cores this process may run on (its affinity set);
- ``cpu_load_other``: the average number of those cores busy with *other* work, i.e. busy time
  from ``/proc/stat`` (user, nice, system, irq, softirq, steal) minus this process's own CPU
  time (``time.process_time``), over the wall time; empty where ``/proc/stat`` cannot be read;
- ``contended``: ``cpu_load_other > cpu_count − torch_threads + CONTENTION_TOLERANCE``, the
  other work did not fit in the cores torch left free (False when the load is unknown).

:func:`timing_rows` emits a ``RuntimeWarning`` naming the load when a measurement was contended;
``speedup`` rows are ``contended`` when either side was.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from gradbench.data import Dataset
from gradbench.device import clock, synchronize
from gradbench.estimators.base import Estimator
from gradbench.execution.task import Context, Resources, Task, Work, cell_key
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.experiments.metrics import (
    DETERMINISTIC_SECONDS_PER_STEP,
    EXAMPLES_PER_SECOND,
    SECONDS_PER_EPOCH,
    SECONDS_PER_GRADIENT,
    SECONDS_PER_STEP,
    SPEEDUP,
    STEP_RATIO_TO_DETERMINISTIC,
)
from gradbench.measure.training import (
    NOISE_SEED_OFFSET,
    dataset_config,
    make_optimizer,
    setting_config,
    steps_per_epoch,
    train_step,
)
from gradbench.models.base import DeterministicNetwork, StochasticModel
from gradbench.results import STATUS_DIVERGED, STATUS_OK, Cell, device_name

EXPERIMENT = "timing"
"""Experiment name of the timing cells in the result store."""
STEP_RATIO = STEP_RATIO_TO_DETERMINISTIC
"""Metric: the estimator's optimizer step over the deterministic network's, per repeat."""

Batch = tuple[Tensor, Tensor]

CONTENTION_TOLERANCE = 0.5
"""Cores of other work tolerated beyond the free ones before a timing is ``contended``.

Below half a core the reading is dominated by what it cannot resolve: /proc/stat counts in
clock ticks (10 ms per core and read, i.e. ~0.1 core over a 0.2 s section), and short-lived
daemons and this process's own unaccounted work (page faults, the tqdm bar) come and go. A
whole other busy thread, the case that inflated timings 12×, is twice this tolerance.
"""


def usable_cpus() -> list[int]:
    """The CPU numbers this process may run on (all CPUs where affinity is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def machine_busy_seconds(cpus: list[int] | None = None, path: str = "/proc/stat") -> float | None:
    """Busy CPU seconds since boot on ``cpus`` (default: :func:`usable_cpus`), all processes
    together, from ``/proc/stat``; None where it cannot be read (not Linux, no /proc)."""
    wanted = {f"cpu{c}" for c in (usable_cpus() if cpus is None else cpus)}
    try:
        with open(path, encoding="ascii") as stat:
            lines = [line.split() for line in stat if line.startswith("cpu")]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    # fields: user nice system idle iowait irq softirq steal (guest time is inside user)
    per_cpu = [f for f in lines if f[0] in wanted] or [f for f in lines if f[0] == "cpu"]
    if not per_cpu:
        return None
    busy = sum(int(v) for f in per_cpu for i, v in enumerate(f[1:9]) if i not in (3, 4))
    return busy / ticks


@dataclass
class LoadReading:
    """What :func:`measure_load` saw: other processes' average busy cores, None when unknown."""

    cpu_load_other: float | None = None


@contextmanager
def measure_load() -> Iterator[LoadReading]:
    """Average number of usable cores kept busy by other work during the ``with`` body."""
    reading = LoadReading()
    busy_start, own_start = machine_busy_seconds(), time.process_time()
    wall_start = time.perf_counter()
    yield reading
    busy_end, own_end = machine_busy_seconds(), time.process_time()
    wall_end = time.perf_counter()
    if busy_start is not None and busy_end is not None and wall_end > wall_start:
        other = (busy_end - busy_start) - (own_end - own_start)
        reading.cpu_load_other = max(other, 0.0) / (wall_end - wall_start)


def is_contended(cpu_load_other: float | None, torch_threads: int, cpu_count: int) -> bool:
    """True when other work exceeded the cores torch left free, by more than the tolerance."""
    if cpu_load_other is None:
        return False
    return cpu_load_other > max(cpu_count - torch_threads, 0) + CONTENTION_TOLERANCE


@dataclass(frozen=True)
class TimingConfig:
    """What is timed and how often."""

    batch_size: int = 100  # minibatch size
    steps: int | None = None  # steps timed per repeat; None (or more than an epoch): a full epoch
    repeats: int = 5  # timed repeats; value = median, ci = min–max
    warmup_steps: int = 5  # untimed steps (and gradients) before the first repeat
    learning_rate: float = 3e-4  # Adam's step size (the thesis')

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup steps must be >= 0, got {self.warmup_steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning rate must be positive and finite, got {self.learning_rate}")


def steps_timed(dataset: Dataset, config: TimingConfig) -> int:
    """Steps timed per repeat: ``config.steps``, at most one epoch."""
    epoch = steps_per_epoch(dataset, config.batch_size)
    return epoch if config.steps is None else min(config.steps, epoch)


def draw_batches(
    dataset: Dataset, batch_size: int, count: int, generator: torch.Generator
) -> list[Batch]:
    """The first ``count`` minibatches of one shuffled epoch, drawn on the data's device."""
    batches = []
    for batch in dataset.batches("train", batch_size, generator):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def gradient(model: StochasticModel, estimator: Estimator, x: Tensor, y: Tensor) -> list[Tensor]:
    """Forward and backward of one minibatch (the estimator's gradient); no update, no state."""
    params = [p for p in [*model.parameters(), *estimator.parameters()] if p.requires_grad]
    surrogate = estimator.surrogate(model(x, y, estimator)).mean()
    grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    return [g for g in grads if g is not None]


def time_steps(
    model: StochasticModel,
    estimator: Estimator,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    device: torch.device,
) -> tuple[float, Tensor]:
    """Seconds for one optimizer step on each minibatch, and the last step's loss."""
    loss = torch.zeros((), device=device)
    start = clock(device)
    for x, y in batches:
        loss = train_step(model, estimator, optimizer, x, y)
    return clock(device) - start, loss


def reference_steps(
    reference: DeterministicNetwork, optimizer: torch.optim.Optimizer, batches: list[Batch]
) -> Tensor:
    """One optimizer step of the deterministic network on each minibatch; the last loss."""
    loss = torch.zeros(())
    for x, y in batches:
        loss = reference.loss(reference.network, x, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
    return loss


def time_reference_steps(
    reference: DeterministicNetwork,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    device: torch.device,
) -> float:
    """Seconds for one optimizer step of the deterministic network on each minibatch."""
    start = clock(device)
    reference_steps(reference, optimizer, batches)
    return clock(device) - start


def time_gradients(
    model: StochasticModel, estimator: Estimator, batches: list[Batch], device: torch.device
) -> float:
    """Seconds for one forward and backward pass (no update) on each minibatch."""
    start = clock(device)
    for x, y in batches:
        gradient(model, estimator, x, y)
    return clock(device) - start


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, minimum and maximum."""
    return statistics.median(values), min(values), max(values)


def timing_row(
    metric: str,
    values: list[float],
    batch_size: int,
    timed: int,
    extrapolated: bool,
    status: str,
    load: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One timing row: median of ``values`` with their min–max, ``n`` = number of repeats;
    ``load``: the contention columns (``torch_threads``, ``cpu_count``, ``cpu_load_other``,
    ``contended``)."""
    median, low, high = spread(values)
    return {
        "param_group": None,
        "batch_size": batch_size,
        "epoch": None,
        "metric": metric,
        "value": median,
        "ci_low": low,
        "ci_high": high,
        "n": len(values),
        "status": status,
        "extrapolated": extrapolated,
        "steps_timed": timed,
        **(load or {}),
    }


def timing_rows(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TimingConfig,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Time training ``setting``'s model with one estimator (metrics: see the module docstring)."""
    model = build_model(setting, dataset, device)
    estimator = build_estimator(setting, estimator_name, dataset, device)
    optimizer = make_optimizer(model, config.learning_rate)
    reference = model.deterministic_network()
    if reference is not None:
        reference_optimizer = make_optimizer(reference.network, config.learning_rate)
    generator = torch.Generator(device=dataset.device).manual_seed(setting.seed)
    torch.manual_seed(setting.seed + NOISE_SEED_OFFSET)
    epoch_steps = steps_per_epoch(dataset, config.batch_size)
    timed = steps_timed(dataset, config)
    batches = draw_batches(dataset, config.batch_size, timed, generator)
    model.train()
    warmup = [batches[i % timed] for i in range(config.warmup_steps)]
    time_steps(model, estimator, optimizer, warmup, device)
    time_gradients(model, estimator, warmup, device)
    if reference is not None:
        time_reference_steps(reference, reference_optimizer, warmup, device)
    step_seconds, gradient_seconds, reference_seconds = [], [], []
    loss = torch.zeros((), device=device)
    bar = tqdm(
        range(config.repeats), desc=estimator_name, unit="repeat", disable=not progress, leave=False
    )
    threads, cpus = torch.get_num_threads(), len(usable_cpus())
    with measure_load() as reading:
        for _ in bar:
            seconds, loss = time_steps(model, estimator, optimizer, batches, device)
            step_seconds.append(seconds)
            gradient_seconds.append(time_gradients(model, estimator, batches, device))
            if reference is not None:
                reference_seconds.append(
                    time_reference_steps(reference, reference_optimizer, batches, device)
                )
        synchronize(device)
    contended = is_contended(reading.cpu_load_other, threads, cpus)
    load = {
        "torch_threads": threads,
        "cpu_count": cpus,
        "cpu_load_other": reading.cpu_load_other,
        "contended": contended,
    }
    if contended:
        other = reading.cpu_load_other or 0.0
        fitting = max(cpus - math.ceil(other - CONTENTION_TOLERANCE), 1)
        advice = (
            f"time with at most {fitting} thread(s) (torch.set_num_threads) or on an idle machine"
            if fitting < threads
            else "time on an idle machine"
        )
        warnings.warn(
            f"timing of {setting.model} with {estimator_name} was contended: other processes "
            f"kept {other:.1f} of {cpus} cores busy while torch ran {threads} thread(s), so the "
            f"times are inflated; {advice}",
            RuntimeWarning,
            stacklevel=2,
        )
    status = STATUS_OK if math.isfinite(float(loss)) else STATUS_DIVERGED
    extrapolated = timed < epoch_steps
    examples = timed * config.batch_size

    def row(metric: str, values: list[float], scaled: bool = False) -> dict[str, Any]:
        return timing_row(metric, values, config.batch_size, timed, scaled, status, load)

    rows = [
        row(SECONDS_PER_EPOCH, [s * epoch_steps / timed for s in step_seconds], extrapolated),
        row(SECONDS_PER_STEP, [s / timed for s in step_seconds]),
        row(SECONDS_PER_GRADIENT, [s / timed for s in gradient_seconds]),
        row(EXAMPLES_PER_SECOND, [examples / s for s in step_seconds]),
    ]
    if reference is not None:
        rows += [
            row(DETERMINISTIC_SECONDS_PER_STEP, [s / timed for s in reference_seconds]),
            row(STEP_RATIO, [s / r for s, r in zip(step_seconds, reference_seconds)]),
        ]
    return rows


def speedup_rows(
    epoch_rows: dict[str, dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Speed-up rows of each estimator against each other one timed with it.

    ``epoch_rows``: estimator → its ``seconds_per_epoch`` row. Returns estimator → rows; the row
    of A with ``param_group`` B holds seconds_per_epoch(B) / seconds_per_epoch(A) (medians), with
    min(B)/max(A) and max(B)/min(A) as its range; ``contended`` when either side was.
    """
    result: dict[str, list[dict[str, Any]]] = {}
    for name, own in epoch_rows.items():
        rows = []
        for other_name, other in epoch_rows.items():
            if other_name == name:
                continue
            diverged = STATUS_DIVERGED in (own["status"], other["status"])
            rows.append(
                {
                    "param_group": other_name,
                    "batch_size": own["batch_size"],
                    "epoch": None,
                    "metric": SPEEDUP,
                    "value": other["value"] / own["value"],
                    "ci_low": other["ci_low"] / own["ci_high"],
                    "ci_high": other["ci_high"] / own["ci_low"],
                    "n": min(own["n"], other["n"]),
                    "status": STATUS_DIVERGED if diverged else STATUS_OK,
                    "extrapolated": bool(own["extrapolated"]) or bool(other["extrapolated"]),
                    "steps_timed": own["steps_timed"],
                    "contended": bool(own.get("contended")) or bool(other.get("contended")),
                }
            )
        result[name] = rows
    return result


def timing_cell(
    setting: Setting,
    estimator_name: str,
    dataset: Dataset,
    device: torch.device,
    config: TimingConfig,
    profile: str,
) -> Cell:
    """The result-store cell of one timing; timings depend on the hardware, so its name is in it."""
    cell_config = {
        **setting_config(setting, estimator_name),
        **dataset_config(dataset),
        **asdict(config),
        "steps_timed": steps_timed(dataset, config),
        "device": device.type,
        "device_name": device_name(device),
        "profile": profile,
    }
    return Cell(EXPERIMENT, setting.model, estimator_name, cell_config)


def speedup_cell(cell: Cell, others: list[Cell]) -> Cell:
    """The cell of ``cell``'s speed-ups against ``others``, defined by their configurations."""
    against = {other.estimator: other.config_hash for other in others}
    return Cell(
        cell.experiment, cell.model, cell.estimator, cell.config | {"speedup_against": against}
    )


def _timing_task(
    setting: Setting, estimator_name: str, config: TimingConfig, context: Context
) -> list[dict[str, Any]]:
    return timing_rows(setting, estimator_name, context.dataset, context.device, config,
                       context.progress)


def timing_tasks(
    setting: Setting,
    estimators: list[str],
    dataset: Dataset,
    device: torch.device,
    config: TimingConfig,
    profile: str,
    resources: Resources = Resources(whole_node=True),
) -> list[Task]:
    """One timing cell per estimator (each asks for a whole node: nothing contends with it),
    then, with two or more, each estimator's derived speed-up cell against the others."""
    cells = [timing_cell(setting, name, dataset, device, config, profile) for name in estimators]
    gradients = 2 * (config.warmup_steps + config.repeats * steps_timed(dataset, config))
    tasks = [
        Task(cell_key(cell), partial(_timing_task, setting, name, config), cell=cell,
             resources=resources, describe=f"timing {setting.model} / {name} / seed {setting.seed}",
             work=Work(setting, name, config.batch_size, gradients))
        for name, cell in zip(estimators, cells)
    ]
    if len(cells) < 2:
        return tasks
    for index, cell in enumerate(cells):
        order = [index] + [i for i in range(len(cells)) if i != index]
        target = speedup_cell(cell, [c for c in cells if c is not cell])
        tasks.append(Task(
            cell_key(target), partial(_speedup_own, [estimators[i] for i in order]),
            tuple(tasks[i].key for i in order), target, on_driver=True, derived=True,
            describe=f"speed-ups {setting.model} / {cell.estimator}",
        ))
    return tasks


def _speedup_own(names: list[str], context: Context, *frames: pd.DataFrame) -> list[dict]:
    """The speed-up rows of ``names[0]`` against the others, from their timing cells."""
    per_epoch = {
        name: frame[frame["metric"] == SECONDS_PER_EPOCH].iloc[0].to_dict()
        for name, frame in zip(names, frames)
    }
    return speedup_rows(per_epoch)[names[0]]
