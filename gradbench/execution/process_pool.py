"""Tasks on a process pool of the standard library: every core of this machine, no extra
dependency (the default executor where Ray is not installed).

Workers are started with ``spawn`` (torch's threads do not survive a fork) and receive the
run's data once, when they start. A task runs in a worker with torch's threads set to the cores
it asks for, and gives back its result, the worker's provenance, its seconds and peak memory; a
task that raises is stored as failed and the run goes on. Intermediate results (checkpoints)
come back to this process and go to the tasks that need them. Whole-node tasks (timing) run
alone, as on Ray (:func:`gradbench.execution.ray_executor._submittable`); tasks marked
``on_driver`` run here. The driver alone writes the results store.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradbench.data import Dataset
from gradbench.device import torch_threads
from gradbench.execution.driver import Driver, Failure, Outcome, run_here
from gradbench.execution.ray_executor import _release, _submittable
from gradbench.execution.schedule import Schedule
from gradbench.execution.task import Context, Task
from gradbench.results import Provenance

_WORKER: dict[str, Any] = {}
"""A worker's context of the run (its data on its device) and the run's profile name."""


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    line: str | None = None,
) -> str:
    """A warning as one line, without the source line Python prints under it."""
    return f"gradbench: warning: {category.__name__}: {message}\n"


def _start_worker(dataset: Dataset, device: str, scratch: str, profile: str) -> None:
    warnings.formatwarning = one_line_warning
    target = torch.device(device)
    _WORKER["context"] = Context(dataset.to(target), target, Path(scratch))
    _WORKER["profile"] = profile


def _run_in_worker(task: Task, needed: list[Any], threads: int) -> Outcome:
    context: Context = _WORKER["context"]
    with torch_threads(threads):
        outcome = run_here(task, context, needed)
        provenance = Provenance.collect(context.device, _WORKER["profile"])
    return Outcome(outcome.result, provenance, outcome.seconds, outcome.peak_memory)


@dataclass
class PoolExecutor:
    """Runs tasks on ``jobs`` worker processes (None: every core)."""

    jobs: int | None = None
    name: str = "process-pool"

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"--jobs must be positive, got {self.jobs}")

    @property
    def workers(self) -> int:
        """Worker processes: ``jobs``, else the machine's cores."""
        return self.jobs or os.cpu_count() or 1

    def execute(self, schedule: Schedule, driver: Driver) -> None:
        context = driver.context
        spawn = multiprocessing.get_context("spawn")
        initargs = (context.dataset.to(torch.device("cpu")), str(context.device),
                    str(context.scratch), driver.provenance.profile)
        with ProcessPoolExecutor(self.workers, mp_context=spawn, initializer=_start_worker,
                                 initargs=initargs) as pool:
            self._execute(pool, schedule, driver)

    def _execute(self, pool: ProcessPoolExecutor, schedule: Schedule, driver: Driver) -> None:
        values: dict[str, Any] = dict(schedule.stored)
        uses = Counter(key for task in schedule.tasks for key in task.needs)
        waiting = list(schedule.tasks)
        running: dict[Future, Task] = {}
        free = self.workers
        while waiting or running:
            ready = _submittable([t for t in waiting if all(k in values for k in t.needs)],
                                 list(running.values()))
            for task in ready:
                slots = self.workers if task.resources.whole_node else min(
                    task.resources.cpus, self.workers)
                needed = [values[key] for key in task.needs]
                if task.on_driver or any(isinstance(v, Failure) for v in needed):
                    waiting.remove(task)
                    values[task.key] = driver.finish(task, run_here(task, driver.context, needed))
                    _release(task, uses, values)
                    continue
                if slots > free:
                    continue
                waiting.remove(task)
                free -= slots
                threads = task.resources.cpus if not task.resources.whole_node else slots
                running[pool.submit(_run_in_worker, task, needed, threads)] = task
            if not running:
                if waiting and not ready:
                    raise RuntimeError("tasks wait on results that no task makes")
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                free += self.workers if task.resources.whole_node else min(
                    task.resources.cpus, self.workers)
                try:
                    outcome = future.result()
                except BrokenProcessPool as error:
                    outcome = Outcome(Failure(f"worker died: {error}"))
                values[task.key] = driver.finish(task, outcome)
                _release(task, uses, values)
