"""Which tasks of a run still have to run, in an order that respects what each one needs.

A rows task whose cell is stored (made by this code, not failed) is done unless ``force``; a
derived task is redone when a rows task it needs runs now; an intermediate task runs only when a
task that runs needs it. A cell measured at an intermediate result (``at_intermediate``: a
variance cell at its checkpoint) is redone when this run makes that result anew (trains the
checkpoint, which another machine or a lost file makes differ from the one the stored cell
saw) and measures another cell at it, so the cells compared at one checkpoint keep one set of
parameters; a checkpoint trained only on the way to a later one leaves its cells stored.
Finished rows stand in for their task's result (their stored frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from gradbench.execution.task import Task
from gradbench.results import Provenance, ResultStore


@dataclass
class Schedule:
    """The tasks to run, in dependency order, and the stored rows of the finished ones."""

    tasks: list[Task]
    stored: dict[str, pd.DataFrame]
    cells: int  # rows tasks among ``tasks`` (one progress step each)


def ordered(tasks: Iterable[Task]) -> list[Task]:
    """Tasks with duplicates (one key twice: a checkpoint several experiments share) merged,
    each after the tasks it needs; a missing need or a cycle raises ValueError.

    Rows tasks (cells) set the order, stage by stage (:func:`stages`) and in the order given
    within one, each preceded by what it needs that has not run yet: an intermediate task (a
    checkpoint) runs just before the first cell that needs it, so every experiment's cells at
    10 epochs are stored before the checkpoint at 100 is trained, and an interrupted run has
    them."""
    by_key: dict[str, Task] = {}
    for task in tasks:
        by_key.setdefault(task.key, task)
    stage = stages(by_key)
    by_key = dict(sorted(by_key.items(), key=lambda item: stage[item[0]]))
    order: list[Task] = []
    state: dict[str, str] = {}

    def visit(key: str, path: tuple[str, ...]) -> None:
        if state.get(key) == "done":
            return
        if key in path:
            raise ValueError(f"tasks need each other: {' -> '.join((*path, key))}")
        if key not in by_key:
            raise ValueError(f"task {path[-1]} needs {key}, which no task makes")
        for need in by_key[key].needs:
            visit(need, (*path, key))
        state[key] = "done"
        order.append(by_key[key])

    for key, task in by_key.items():
        if task.cell is not None:
            visit(key, ())
    for key in by_key:
        visit(key, ())
    return order


def stages(by_key: Mapping[str, Task]) -> dict[str, int]:
    """Task key → its stage: the position (in ``by_key``) of the latest intermediate task it
    needs, itself included, directly or through others; -1 for a cell that needs none."""
    position = {key: index for index, key in enumerate(by_key)}
    stage: dict[str, int] = {}

    def of(key: str) -> int:
        if key not in stage:
            stage[key] = -1  # a cycle stops here; :func:`ordered` names it
            task = by_key[key]
            own = position[key] if task.cell is None else -1
            stage[key] = max([own, *(of(need) for need in task.needs if need in by_key)])
        return stage[key]

    for key in by_key:
        of(key)
    return stage


def plan_schedule(
    tasks: Iterable[Task], store: ResultStore, provenance: Provenance, force: bool = False
) -> Schedule:
    """The schedule of ``tasks`` against what ``store`` already holds (module docstring)."""
    order = ordered(tasks)
    by_key = {task.key: task for task in order}
    frames = {task.key: None if force else store.stored(task.cell, provenance)
              for task in order if task.cell is not None}
    made: set[str] = set()  # intermediates made anew (not loaded) that a running cell measures at
    while True:
        runs: set[str] = set()
        for task in order:
            if task.cell is None:
                continue
            redo = (task.derived and any(need in runs for need in task.needs)) or (
                task.at_intermediate and any(need in made for need in task.needs))
            if frames[task.key] is None or redo:
                runs.add(task.key)
        stored = {key: frame for key, frame in frames.items()
                  if frame is not None and key not in runs}
        wanted = set(runs)
        for task in reversed(order):
            if task.key in wanted:
                wanted.update(n for n in task.needs if n not in stored)
        making = {need for task in order if task.key in runs and task.at_intermediate
                  for need in task.needs if not by_key[need].on_driver}
        if making <= made:
            break
        made |= making
    chosen = [task for task in order if task.key in wanted]
    return Schedule(chosen, stored, sum(task.cell is not None for task in chosen))
