"""The driver of a run: it alone writes the results store, whichever executor runs the tasks.

Executors hand each finished task back through :meth:`Driver.finish`: rows are stamped with the
provenance of the process that made them and stored at once (an interrupted run keeps every
finished cell), an intermediate result is persisted, and a task that failed (after its
executor's retries) is stored as one ``failed`` row with its error, which a rerun retries.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
from tqdm import tqdm

from gradbench.device import peak_memory_bytes, reset_peak_memory
from gradbench.execution.schedule import Schedule, plan_schedule
from gradbench.execution.task import Context, Task
from gradbench.results import STATUS_FAILED, Provenance, ResultStore


@dataclass(frozen=True)
class Failure:
    """A task that raised, was killed, or needed a task that failed."""

    message: str


@dataclass(frozen=True)
class Outcome:
    """What one task gave back: its result (rows, an intermediate, or a Failure), the provenance
    of the process that ran it, the seconds it took and its peak device memory (NaN on CPU)."""

    result: Any
    provenance: Provenance | None = None
    seconds: float = math.nan
    peak_memory: float = math.nan


def failed_rows(message: str) -> list[dict[str, Any]]:
    """The one row a failed cell is stored as."""
    return [{"param_group": "all", "metric": "failed", "value": math.nan, "n": 0,
             "status": STATUS_FAILED, "error": message}]


def run_here(task: Task, context: Context, needed: list[Any]) -> Outcome:
    """Run ``task`` in this process; an exception becomes a :class:`Failure`."""
    if any(isinstance(value, Failure) for value in needed):
        return Outcome(Failure("a task it needs failed"))
    reset_peak_memory(context.device)
    start = time.perf_counter()
    try:
        result = task.run(context, *needed)
    except Exception as error:  # noqa: BLE001 - recorded as the cell's failure, the run goes on
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Outcome(Failure(f"{type(error).__name__}: {first}"))
    seconds = time.perf_counter() - start
    return Outcome(result, None, seconds, peak_memory_bytes(context.device))


class Executor(Protocol):
    """Runs a schedule's tasks, handing each back to ``driver.finish`` as it ends."""

    name: str

    def execute(self, schedule: Schedule, driver: Driver) -> None: ...


@dataclass
class Driver:
    """Stores what tasks give back; counts finished and failed cells on a progress bar."""

    store: ResultStore
    provenance: Provenance
    context: Context
    bar: tqdm | None = None
    failed: list[str] = field(default_factory=list)
    computed: int = 0

    def finish(self, task: Task, outcome: Outcome) -> Any:
        """Store or persist what ``task`` gave back; returns the value the tasks that need it get
        (its stored frame, the intermediate itself, or the Failure)."""
        result = outcome.result
        if isinstance(result, Failure):
            self.failed.append(f"{task.describe or task.key}: {result.message}")
            print(f"gradbench: task failed: {task.describe or task.key}: {result.message}",
                  file=sys.stderr)
        if task.cell is None:
            if not isinstance(result, Failure) and task.persist is not None:
                task.persist(result)
            return result
        rows = failed_rows(result.message) if isinstance(result, Failure) else result
        frame = self.store.save(task.cell, rows, outcome.provenance or self.provenance,
                                seconds=outcome.seconds, peak_memory=outcome.peak_memory)
        self.computed += 1
        if self.bar is not None:
            self.bar.update()
        return result if isinstance(result, Failure) else frame


def execute(
    tasks: Iterable[Task],
    store: ResultStore,
    provenance: Provenance,
    executor: Executor,
    context: Context,
    *,
    force: bool = False,
    describe: str = "cells",
) -> Driver:
    """Run what ``tasks`` still need (resuming from ``store``) on ``executor``; the driver holds
    the failures and the count of computed cells."""
    schedule = plan_schedule(tasks, store, provenance, force)
    bar = tqdm(total=schedule.cells, desc=describe, unit="cell", disable=not context.progress)
    driver = Driver(store, provenance, context, bar)
    try:
        executor.execute(schedule, driver)
    finally:
        bar.close()
    return driver


def stored_rows(tasks: Iterable[Task], store: ResultStore) -> pd.DataFrame:
    """The stored rows of every rows task in ``tasks`` (after a run), in task order."""
    frames = [store.read(task.cell) for task in tasks if task.cell is not None]
    frames = [frame for frame in frames if frame is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
