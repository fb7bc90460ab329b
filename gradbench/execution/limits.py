"""Cells too long for the device they were planned on: skipped with their estimate, never silently.

Before a run, every pending task is estimated (:func:`gradbench.execution.estimate.estimate`:
stored cell times where present, else a calibration). A cell whose own estimate, or that of a
task it needs (a reference checkpoint), exceeds the limit is not run: it is stored as one
``skipped`` row whose ``value`` is the estimate in seconds (metric ``estimated_seconds``) and
whose ``error`` says why. Reports list it with the failed cells; a rerun computes it where the
limit allows it (on a GPU, or with a larger ``max_cell_hours``), since skipped cells count as
unfinished (:data:`gradbench.results.UNFINISHED`). A derived cell (a slope over minibatch sizes,
speed-ups) whose inputs are skipped is left out without a row: its skipped inputs say why it is
missing, and its row would mark the inputs that did run as lost.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch

from gradbench.data import Dataset
from gradbench.execution.estimate import estimate
from gradbench.execution.schedule import plan_schedule
from gradbench.execution.task import Context, Resources, Task
from gradbench.results import STATUS_SKIPPED, Provenance, ResultStore

ESTIMATE_METRIC = "estimated_seconds"


def skipped_rows(seconds: float, reason: str, context: Context) -> list[dict[str, Any]]:
    """The one row of a skipped cell: its estimate and why it was skipped."""
    return [{"param_group": "all", "metric": ESTIMATE_METRIC, "value": seconds, "n": 0,
             "status": STATUS_SKIPPED, "error": reason}]


def skip_too_long(
    tasks: list[Task],
    store: ResultStore,
    provenance: Provenance,
    dataset: Dataset,
    device: torch.device,
    hours: float,
    force: bool = False,
) -> tuple[list[Task], list[str]]:
    """``tasks`` with every pending cell over ``hours`` (itself or through what it needs)
    replaced by one that stores its skipped row (module docstring); and one line per skip."""
    schedule = plan_schedule(tasks, store, provenance, force)
    costs = estimate(schedule.tasks, store, dataset, device)
    limit = hours * 3600.0
    over: dict[str, tuple[float, str]] = {}  # key → (seconds, what is too long)
    for task in schedule.tasks:
        seconds, source = costs.get(task.key, (0.0, ""))
        if seconds > limit:
            over[task.key] = (seconds, f"{task.describe or task.key} ({source})")
        else:
            inherited = [over[key] for key in task.needs if key in over]
            if inherited:
                over[task.key] = max(inherited)
    kept: list[Task] = []
    lines: list[str] = []
    for task in tasks:
        if task.key not in over or task.cell is None:
            kept.append(task)
            continue
        seconds, what = over[task.key]
        reason = (
            f"estimated {seconds / 3600:.1f} h on this {device.type} for {what}, over the "
            f"profile's max_cell_hours = {hours:g}; run it on a GPU or with a larger limit"
        )
        lines.append(f"{task.describe or task.key}: {reason}")
        if task.derived:
            continue
        kept.append(replace(task, run=partial(skipped_rows, seconds, reason), needs=(),
                            resources=Resources(), on_driver=True, derived=False, work=None))
    return kept, lines
