"""Time estimates of a run's tasks (``all --dry-run``), before anything runs.

A cell already measured in the store under the same experiment, model, estimator and minibatch
size (another seed, an earlier run) is estimated by the median of its stored ``cell_seconds``
(of cells that ran: not skipped, not failed); any other task by a short calibration: the
seconds of one gradient of its estimator on its model, measured at minibatch sizes 1 and 100
and interpolated linearly, times the gradients its :class:`gradbench.execution.task.Work`
declares, plus the seconds of one draw through the model's ``evaluate`` (measured on the
model, whatever the estimator) times the draws it declares, mapped to a cell's seconds by its
experiment's fit (:data:`CALIBRATED_CELLS`). The total for N workers simulates the parallel
executors (:func:`makespan`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from gradbench.data import Dataset
from gradbench.device import synchronize, torch_threads
from gradbench.execution.task import Task, Work
from gradbench.experiment import build_estimator, build_model
from gradbench.results import UNFINISHED, ResultStore


@dataclass(frozen=True)
class CellFit:
    """An experiment's map from a cell's calibration to its seconds: ``gradient_scale`` × the
    calibrated gradients' seconds + ``evaluation_scale`` × the calibrated evaluation draws'
    seconds + ``overhead_s``."""

    gradient_scale: float
    overhead_s: float
    evaluation_scale: float = 1.0


CALIBRATED_CELLS: dict[str, CellFit] = {
    "timing": CellFit(0.533, 0.078),
    "variance": CellFit(1.79, 0.086),
    "bias": CellFit(0.772, 0.0),
    "train": CellFit(1.01, 0.051, evaluation_scale=1.93),
}
"""Per experiment, the :class:`CellFit` of its cells. Timing, variance and bias (which evaluate
nothing): scale and seconds matched to each experiment's sum of stored ``cell_seconds`` over
the quick report (``reports/quick/results``, 1080 cells, two workers on an idle 2-core
machine) and over a smoke run (380 cells, one process on a busy 2-core machine), both
non-negative (scipy.optimize.nnls on the two sums relative to themselves); every sum is then
exact but bias's (quick 21 % under, smoke 14 % over). Training, whose cells range from a smoke
cell's 0.1 s to a 1 M-step cell's 1.5 hours: the three factors minimise the squared log ratio
of estimate to stored seconds over the training cells of four stores, each store weighing
the same: smoke (39 cells), quick (111), paper (17, ``reports/paper/results``, 25,000 steps
each, one torch thread) and arm (2 of ``reports/arm/results``, 1 M steps; NVIL's, run over
three sessions beside other work, left out). A cell's estimate is then within a factor of
1.06 (smoke), 1.13 (quick), 1.22 (paper) and 1.13 (arm) of its seconds at the median and of
2.2 for every cell (the farthest: paper's REBAR, 0.45); the sums are 10 % under (smoke), 7 %
over (quick), 15 % and 18 % under (paper, arm). The former fit (one scale on gradients and on
evaluation counted as a third of the estimator's gradient per example, the iw bound counted
twice whatever ``eval_iw_every``) put a paper cell at a fifth of its seconds and an arm cell
at a tenth. A checkpoint (reference training) keeps its calibration."""
CALIBRATION_SIZES = (1, 100)
CALIBRATION_REPEATS = 3
DRAW_CALIBRATION_EXAMPLES = 100
DRAW_CALIBRATION_SAMPLES = 20
"""The evaluation draw's calibration: ``model.evaluate`` on this many examples with this many
ELBO draws (and one iw draw), per draw."""


def stored_seconds(store: ResultStore) -> dict[tuple, float]:
    """Median stored seconds per (experiment, model, estimator, batch size) cell, over cells
    that ran: a skipped or failed cell's seconds are the time to write its row (a 14-hour cell
    skipped in 4.5 s would be estimated at 4.5 s and run)."""
    rows = store.load()
    if rows.empty or "cell_seconds" not in rows:
        return {}
    ran = ~rows["status"].isin(UNFINISHED)
    cells = rows[ran].dropna(subset=["cell_seconds"]).drop_duplicates("config_hash")
    sizes = cells["batch_size"].astype("Float64").fillna(-1).astype(int)
    keys = zip(cells["experiment"], cells["model"], cells["estimator"], sizes)
    frame = pd.DataFrame({"key": list(keys), "seconds": cells["cell_seconds"].astype(float)})
    return frame.groupby("key")["seconds"].median().to_dict()


def _least_seconds(step: Callable[[], object], device: torch.device) -> float:
    """The least seconds of ``step`` over :data:`CALIBRATION_REPEATS` runs after one warm-up.

    On the CPU: one torch thread (a cell's, on Ray) and the CPU time of this thread
    (``time.thread_time``), which other processes on a busy machine do not inflate; wall-clock
    there, beside two other runs and the tests, put a 30-minute checkpoint at 11.5 hours and
    the ``max_cell_hours`` limit skipped it. On CUDA: wall-clock, the device synchronised.
    """
    on_cpu = device.type == "cpu"
    clock = time.thread_time if on_cpu else time.perf_counter
    times = []
    with torch_threads(1 if on_cpu else None):
        for _ in range(CALIBRATION_REPEATS + 1):
            start = clock()
            step()
            synchronize(device)
            times.append(clock() - start)
    return min(times[1:])


def _calibrate(work: Work, dataset: Dataset, device: torch.device) -> tuple[float, float]:
    """(a, b) of t(M) = a + b·M seconds per gradient of the work's estimator and model, timed
    by :func:`_least_seconds` at the :data:`CALIBRATION_SIZES`."""
    model = build_model(work.setting, dataset, device)
    estimator = build_estimator(work.setting, work.estimator, dataset, device)
    generator = torch.Generator(device=dataset.device).manual_seed(0)
    seconds = []
    for size in CALIBRATION_SIZES:
        x, y = dataset.sample_batch("train", min(size, len(dataset.train)), generator)
        seconds.append(_least_seconds(
            lambda: estimator.surrogate(model(x, y, estimator)).mean().backward(), device))
    small, large = CALIBRATION_SIZES
    slope = max(0.0, (seconds[1] - seconds[0]) / (large - small))
    return max(0.0, seconds[0] - slope * small), slope


def _draw_rate(work: Work, dataset: Dataset, device: torch.device) -> float:
    """Seconds per draw of the work's model's ``evaluate``: :data:`DRAW_CALIBRATION_SAMPLES`
    ELBO draws and one iw draw on :data:`DRAW_CALIBRATION_EXAMPLES` examples (a classifier:
    as many noisy passes and one at the mean weights), timed by :func:`_least_seconds`."""
    model = build_model(work.setting, dataset, device)
    model.eval()
    generator = torch.Generator(device=dataset.device).manual_seed(0)
    size = min(DRAW_CALIBRATION_EXAMPLES, len(dataset.train))
    x, y = dataset.sample_batch("train", size, generator)
    seconds = _least_seconds(lambda: model.evaluate(x, y, DRAW_CALIBRATION_SAMPLES, 1), device)
    return seconds / (size * (DRAW_CALIBRATION_SAMPLES + 1))


def estimate(
    tasks: Sequence[Task], store: ResultStore, dataset: Dataset, device: torch.device
) -> dict[str, tuple[float, str]]:
    """Task key → (estimated seconds, "stored" or "calibrated") for every task with work."""
    stored = stored_seconds(store)
    rates: dict[tuple[str, str, str], tuple[float, float]] = {}
    draw_rates: dict[tuple[str, str], float] = {}
    costs: dict[str, tuple[float, str]] = {}
    for task in tasks:
        if task.cell is not None:
            size = task.cell.config.get("batch_size", -1)
            key = (task.cell.experiment, task.cell.model, task.cell.estimator,
                   int(size) if isinstance(size, int) else -1)
            if key in stored:
                costs[task.key] = (stored[key], "stored")
                continue
        work = task.work
        if work is None:
            continue
        pair = (work.setting.model, repr(work.setting.model_options), work.estimator)
        if pair not in rates:
            rates[pair] = _calibrate(work, dataset, device)
        a, b = rates[pair]
        gradients = work.gradients * (a + b * work.batch_size)
        evaluation = 0.0
        if work.evaluation_draws:
            model_key = pair[:2]
            if model_key not in draw_rates:
                draw_rates[model_key] = _draw_rate(work, dataset, device)
            evaluation = work.evaluation_draws * draw_rates[model_key]
        fit = CellFit(1.0, 0.0)
        if task.cell is not None:
            fit = CALIBRATED_CELLS.get(task.cell.experiment, fit)
        seconds = (fit.gradient_scale * gradients + fit.evaluation_scale * evaluation
                   + fit.overhead_s)
        costs[task.key] = (seconds, "calibrated")
    return costs


def makespan(tasks: Sequence[Task], costs: dict[str, tuple[float, str]], workers: int) -> float:
    """Seconds to run ``tasks`` on ``workers`` slots as the parallel executors do: whenever a
    slot frees, the first ready task (its needs done) that fits starts; a whole-node task
    takes every slot and starts only when nothing else runs or is ready
    (:func:`gradbench.execution.ray_executor._submittable`). A need that is not among ``tasks``
    is stored (a finished cell) and counts as done."""
    pending = list(tasks)
    keys = {task.key for task in tasks}
    finished = {key for task in tasks for key in task.needs if key not in keys}
    running: list[tuple[float, str, int]] = []  # (end, key, slots), a heap
    now, free = 0.0, workers
    while pending or running:
        ready = [t for t in pending if all(key in finished for key in t.needs)]
        others = [t for t in ready if not t.resources.whole_node]
        started = False
        for task in others or (ready[:1] if not running else []):
            slots = workers if task.resources.whole_node else min(task.resources.cpus, workers)
            if slots > free:
                continue
            free -= slots
            pending.remove(task)
            heapq.heappush(running, (now + costs.get(task.key, (0.0, ""))[0], task.key, slots))
            started = True
        if started:
            continue
        if not running:
            raise ValueError("tasks wait on results that no task makes")
        now, key, slots = heapq.heappop(running)
        finished.add(key)
        free += slots
    return now
