"""The driver of a run: it alone writes the results store, whichever executor runs the tasks.

Executors hand each finished task back through :meth:`Driver.finish`: rows are stamped with the
provenance of the process that made them and stored at once (an interrupted run keeps every
finished cell), an intermediate result is persisted, and a task that failed (after its
executor's retries) is stored as one ``failed`` row with its error, which a rerun retries.

Before the first task the store's folder and each experiment's are checked writable
(:meth:`ResultStore.check_writable`: one line, exit 2). A write that still fails later is retried,
then its rows are dumped to the temporary directory and the cell counted as failed, naming where
they are: the run goes on, no traceback.

One writer per cell: an executor claims a cell (:meth:`Driver.claim`, the store's lock file)
before running it; a cell another live run holds is left to that run and collected
(:meth:`Driver.collect`) once it is stored, so two runs on one folder share the work and finish
with the same rows. A lock left by a run that died is taken over.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import pandas as pd
from tqdm import tqdm

from gradbench.device import peak_memory_bytes, reset_peak_memory
from gradbench.execution.schedule import Schedule, plan_schedule
from gradbench.execution.task import Context, Task
from gradbench.results import STATUS_FAILED, Cell, Provenance, ResultStore, RowsNotStored

POLL_SECONDS = 0.5
"""How often a run looks again at the cells another run is computing."""


class Held(Enum):
    """What :meth:`Driver.collect` says of a cell another live run still holds."""

    ELSEWHERE = "elsewhere"


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
    collected: int = 0  # cells another run computed while this one waited for them
    held: dict[str, Cell] = field(default_factory=dict)  # the cells this run has claimed
    said_waiting: bool = False
    started_at: float = field(default_factory=time.time)  # cells stored since: another run's

    def claim(self, task: Task) -> pd.DataFrame | Held | None:
        """Take ``task``'s cell for this run (its lock): None when this run is to compute it
        (intermediate tasks need no claim), :attr:`Held.ELSEWHERE` when another live run holds
        it, or the rows another run stored since this one started (collected, not computed)."""
        if task.cell is None or task.key in self.held:
            return None
        if not self.store.lock(task.cell).acquire():
            return Held.ELSEWHERE
        self.held[task.key] = task.cell
        path = self.store.path(task.cell)
        if path.is_file() and path.stat().st_mtime >= self.started_at:
            frame = self.store.stored(task.cell, self.provenance)
            if frame is not None:
                self.store.lock(task.cell).release()
                del self.held[task.key]
                self._collected()
                return frame
        return None

    def collect(self, task: Task) -> pd.DataFrame | Held | None:
        """A cell left to another run: :attr:`Held.ELSEWHERE` while that run holds it, then its
        stored rows, or None when it stored none this run can use (failed, or the run died):
        this run computes it (after :meth:`claim`)."""
        lock = self.store.lock(task.cell)
        if lock.owner() is not None and not lock.mine() and not lock.stale():
            if not self.said_waiting:
                print(f"gradbench: waiting for cells another run is computing "
                      f"({task.describe or task.key}, ...)", file=sys.stderr)
                self.said_waiting = True
            return Held.ELSEWHERE
        frame = self.store.stored(task.cell, self.provenance)
        if frame is not None:
            self._collected()
        return frame

    def _collected(self) -> None:
        self.collected += 1
        if self.bar is not None:
            self.bar.update()

    def release_all(self) -> None:
        """Give up every lock this run holds (the run ends or is interrupted)."""
        for cell in self.held.values():
            self.store.lock(cell).release()
        self.held.clear()

    def finish(self, task: Task, outcome: Outcome) -> Any:
        """Store or persist what ``task`` gave back; returns the value the tasks that need it get
        (its stored frame, the intermediate itself, or the Failure). A cell whose rows cannot be
        written is counted as failed, its rows dumped (:meth:`ResultStore.save`)."""
        result = outcome.result
        if isinstance(result, Failure):
            self._fail(task, result.message)
        if task.cell is None:
            if not isinstance(result, Failure) and task.persist is not None:
                task.persist(result)
            return result
        rows = failed_rows(result.message) if isinstance(result, Failure) else result
        try:
            frame = self.store.save(task.cell, rows, outcome.provenance or self.provenance,
                                    seconds=outcome.seconds, peak_memory=outcome.peak_memory,
                                    input_dim=self.context.dataset.input_dim)
        except RowsNotStored as error:
            self._fail(task, str(error))
            return Failure(str(error))
        finally:
            self.store.lock(task.cell).release()
            self.held.pop(task.key, None)
        self.computed += 1
        if self.bar is not None:
            self.bar.update()
        return result if isinstance(result, Failure) else frame

    def _fail(self, task: Task, message: str) -> None:
        self.failed.append(f"{task.describe or task.key}: {message}")
        print(f"gradbench: task failed: {task.describe or task.key}: {message}", file=sys.stderr)


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
    started_at = time.time()
    schedule = plan_schedule(tasks, store, provenance, force)
    store.check_writable({task.cell.experiment for task in schedule.tasks if task.cell})
    bar = tqdm(total=schedule.cells, desc=describe, unit="cell", disable=not context.progress)
    driver = Driver(store, provenance, context, bar, started_at=started_at)
    try:
        executor.execute(schedule, driver)
    finally:
        driver.release_all()
        bar.close()
    return driver


def stored_rows(tasks: Iterable[Task], store: ResultStore) -> pd.DataFrame:
    """The stored rows of every rows task in ``tasks`` (after a run), in task order."""
    frames = [store.read(task.cell) for task in tasks if task.cell is not None]
    frames = [frame for frame in frames if frame is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
