"""The default executor: every task in this process, one after the other, in dependency order.

Each cell is claimed before it runs (:meth:`Driver.claim`); an intermediate task (a checkpoint)
runs just before the first claimed cell that needs it. Cells another run holds, and the tasks
that need them, are left for after the rest and then collected (or computed here when that run
stored nothing usable), polling every :data:`~gradbench.execution.driver.POLL_SECONDS`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gradbench.execution.driver import (
    POLL_SECONDS,
    Driver,
    Held,
    execute,
    run_here,
    stored_rows,
)
from gradbench.execution.schedule import Schedule
from gradbench.execution.task import Context, Task
from gradbench.results import Provenance, ResultStore


@dataclass
class InProcessExecutor:
    """Runs each task here; needs no extra dependency. An intermediate result (a checkpoint) is
    dropped once the last task that needs it has run."""

    name: str = "in-process"

    def execute(self, schedule: Schedule, driver: Driver) -> None:
        values: dict[str, Any] = dict(schedule.stored)
        uses = Counter(key for task in schedule.tasks for key in task.needs)
        by_key = {task.key: task for task in schedule.tasks}
        later: list[Task] = []  # cells another run holds, and the tasks that need them
        for task in schedule.tasks:
            if task.cell is None:
                continue  # run on demand by the first claimed cell that needs it
            if any(key in {t.key for t in later} for key in task.needs):
                later.append(task)
            elif not self._claim_and_run(task, values, uses, by_key, driver):
                later.append(task)
        while later:
            progressed = False
            for task in list(later):
                if any(key in {t.key for t in later} for key in task.needs):
                    continue
                found = driver.collect(task)
                if found is Held.ELSEWHERE:
                    continue
                if found is not None:
                    values[task.key] = found
                    self._release(task, values, uses)
                elif not self._claim_and_run(task, values, uses, by_key, driver):
                    continue
                later.remove(task)
                progressed = True
            if later and not progressed:
                time.sleep(POLL_SECONDS)

    def _claim_and_run(self, task: Task, values: dict[str, Any], uses: Counter,
                       by_key: dict[str, Task], driver: Driver) -> bool:
        """Claim ``task``'s cell and run it, or take the rows another run stored meanwhile;
        False when another run holds it."""
        claimed = driver.claim(task)
        if claimed is Held.ELSEWHERE:
            return False
        if claimed is None:
            self._run(task, values, uses, by_key, driver)
        else:
            values[task.key] = claimed
            self._release(task, values, uses)
        return True

    def _run(self, task: Task, values: dict[str, Any], uses: Counter, by_key: dict[str, Task],
             driver: Driver) -> None:
        """Run ``task`` here, after the intermediate tasks it needs that have not run."""
        for key in task.needs:
            if key not in values:
                self._run(by_key[key], values, uses, by_key, driver)
        needed = [values[key] for key in task.needs]
        values[task.key] = driver.finish(task, run_here(task, driver.context, needed))
        self._release(task, values, uses)

    @staticmethod
    def _release(task: Task, values: dict[str, Any], uses: Counter) -> None:
        """Drop what ``task`` needed once no other task needs it."""
        for key in task.needs:
            uses[key] -= 1
            if not uses[key]:
                values.pop(key, None)


def execute_here(
    tasks: list[Task],
    store: ResultStore,
    provenance: Provenance,
    context: Context,
    *,
    force: bool = False,
    describe: str = "cells",
) -> pd.DataFrame:
    """Run ``tasks`` in this process (resuming from ``store``) and return their cells' rows;
    a failed cell raises :class:`CellsFailed` naming it (the measurement functions and
    commands)."""
    driver = execute(tasks, store, provenance, InProcessExecutor(), context, force=force,
                     describe=describe)
    if driver.failed:
        raise CellsFailed(f"{len(driver.failed)} cell(s) failed: {driver.failed[0]}",
                          stored_rows(tasks, store))
    return stored_rows(tasks, store)


class CellsFailed(RuntimeError):
    """Cells of an in-process run failed (stored as failed rows); ``rows``: every stored row of
    the run's cells, the failed ones included."""

    def __init__(self, message: str, rows: pd.DataFrame) -> None:
        super().__init__(message)
        self.rows = rows
