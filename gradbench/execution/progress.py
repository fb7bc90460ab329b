"""Progress of a run where no progress bar can show: plain lines on stderr (under ``nohup`` or a
batch scheduler, where stderr is a file), at most one per ``interval`` seconds.

Each line says the cells done of the cells to run, the time spent, and the time to finish:
the time spent scaled by the estimated seconds still to run over the estimated seconds done
(:mod:`gradbench.execution.estimate`), so a run whose estimates are off by a constant factor
still gets the right time to finish. A line also comes while a long cell runs (a heartbeat
thread), so an hour-long cell does not look like a hung run.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from gradbench.execution.driver import Driver, Executor, Outcome
from gradbench.execution.schedule import Schedule
from gradbench.execution.task import Task

INTERVAL_S = 60.0
"""Seconds between two progress lines."""


def duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``3.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


@dataclass
class ProgressLines:
    """Counts finished tasks and prints a line when ``interval`` seconds have passed since the
    last (module docstring). ``costs``: estimated seconds per task key."""

    costs: dict[str, float]
    cells: int
    interval: float | None = None  # None: INTERVAL_S
    stream: TextIO | None = None  # None: sys.stderr when a line is printed
    clock: Any = time.monotonic
    done_cells: int = 0
    done_cost: float = 0.0
    started: float = field(init=False)
    last: float = field(init=False)
    lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.started = self.last = self.clock()
        if self.interval is None:
            self.interval = INTERVAL_S

    def finished(self, task: Task) -> None:
        """Count ``task`` as done; print a line when one is due."""
        with self.lock:
            self.done_cost += self.costs.get(task.key, 0.0)
            self.done_cells += task.cell is not None
        self.tick()

    def tick(self) -> None:
        """Print a line when ``interval`` seconds have passed since the last one."""
        with self.lock:
            now = self.clock()
            if now - self.last < self.interval:
                return
            self.last = now
            print(self.line(now), file=self.stream or sys.stderr, flush=True)

    def line(self, now: float) -> str:
        """``gradbench: 12/140 cells, 8m 10s spent, about 20m 05s to finish``."""
        spent = now - self.started
        total = sum(self.costs.values())
        text = f"gradbench: {self.done_cells}/{self.cells} cells, {duration(spent)} spent"
        if self.done_cost > 0 and total > self.done_cost:
            left = spent * (total - self.done_cost) / self.done_cost
            text += f", about {duration(left)} to finish"
        return text


@dataclass
class _ReportingDriver:
    """The run's driver, telling ``progress`` of each task it finishes."""

    driver: Driver
    progress: ProgressLines

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    def finish(self, task: Task, outcome: Outcome) -> Any:
        value = self.driver.finish(task, outcome)
        self.progress.finished(task)
        return value


@dataclass
class WithProgressLines:
    """An executor that runs ``inner`` and prints :class:`ProgressLines` as tasks finish."""

    inner: Executor
    progress: ProgressLines

    @property
    def name(self) -> str:
        return self.inner.name

    def execute(self, schedule: Schedule, driver: Driver) -> None:
        reporting = _ReportingDriver(driver, self.progress)
        done = threading.Event()
        period = max(self.progress.interval or 0.0, 0.1)
        heartbeat = threading.Thread(target=self._beat, args=(done, period), daemon=True)
        heartbeat.start()
        try:
            self.inner.execute(schedule, reporting)  # type: ignore[arg-type]
        finally:
            done.set()
            heartbeat.join()

    def _beat(self, done: threading.Event, period: float) -> None:
        """Every ``period`` seconds until ``done``, a line if one is due."""
        while not done.wait(period):
            self.progress.tick()
