"""Progress of a run where no progress bar can show: plain lines on stderr (under ``nohup`` or a
batch scheduler, where stderr is a file), at most one per ``interval`` seconds.

Each line says the cells done of the cells to run, the time spent, and the time to finish.
Once the tasks done carry a tenth of the estimated seconds (:mod:`gradbench.execution.estimate`),
the time to finish is the time spent scaled by the estimated seconds still to run over those
done, so a run whose estimates are off by a constant factor still gets the right time; before
that (a run whose first task is a quick one, then an hour-long cell) it is the run's estimated
wall-clock time less the time spent. A line also comes while a long cell runs (a heartbeat
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
CALIBRATED_SHARE = 0.1
"""The share of the estimated seconds that the tasks done must carry before their pace scales
the time to finish (module docstring)."""


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
    last (module docstring). ``costs``: estimated seconds per task key; ``wall_seconds``: the
    run's estimated wall-clock time on its workers (None: the costs' sum, one process)."""

    costs: dict[str, float]
    cells: int
    wall_seconds: float | None = None
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
        if total <= self.done_cost:
            return text
        if self.done_cost >= CALIBRATED_SHARE * total:
            left = spent * (total - self.done_cost) / self.done_cost
            return text + f", about {duration(left)} to finish"
        expected = total if self.wall_seconds is None else self.wall_seconds
        if spent < expected:
            return text + f", about {duration(expected - spent)} to finish by the estimate"
        return text + f", past the estimate of {duration(expected)}"


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
