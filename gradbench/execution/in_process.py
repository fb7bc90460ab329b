"""The default executor: every task in this process, one after the other, in dependency order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gradbench.execution.driver import Driver, execute, run_here, stored_rows
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
        for task in schedule.tasks:
            needed = [values[key] for key in task.needs]
            values[task.key] = driver.finish(task, run_here(task, driver.context, needed))
            for key in task.needs:
                uses[key] -= 1
                if not uses[key]:
                    del values[key]


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
    a failed cell raises RuntimeError naming it (the measurement functions and commands)."""
    driver = execute(tasks, store, provenance, InProcessExecutor(), context, force=force,
                     describe=describe)
    if driver.failed:
        raise RuntimeError(f"{len(driver.failed)} cell(s) failed: {driver.failed[0]}")
    return stored_rows(tasks, store)
