"""Wall-clock timing: seconds per epoch of every estimator on every model, and the speed-ups
between a model's estimators (Kingma, Salimans & Welling 2015, Table 1's timing column)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradbench.data import Dataset
from gradbench.experiment import Setting
from gradbench.execution.task import Resources, Task
from gradbench.experiments import metrics as m
from gradbench.experiments.base import Experiment
from gradbench.experiments.plan import Plan, cell_resources
from gradbench.measure.timing import EXPERIMENT, TimingConfig, timing_tasks
from gradbench.report.plots import timing_plot
from gradbench.report.timing_tables import timing_tables


@dataclass(frozen=True)
class TimingSettings:
    """The profile fields timing reads (documented on :class:`gradbench.profiles.Profile`)."""

    timing_batch_size: int
    timing_steps: int | None
    timing_repeats: int
    timing_warmup_steps: int


class Timing(Experiment):
    name = EXPERIMENT
    summary = "seconds per epoch of each estimator, and the speed-ups between them"
    Config = TimingSettings
    METRICS = (m.SECONDS_PER_EPOCH, m.SECONDS_PER_STEP, m.SECONDS_PER_GRADIENT,
               m.EXAMPLES_PER_SECOND, m.DETERMINISTIC_SECONDS_PER_STEP,
               m.STEP_RATIO_TO_DETERMINISTIC, m.SPEEDUP)
    TABLES = (timing_tables,)
    PLOTS = (timing_plot,)

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str], config: TimingSettings,
        dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        timing = TimingConfig(
            config.timing_batch_size, config.timing_steps, config.timing_repeats,
            config.timing_warmup_steps, plan.profile.train_learning_rate,
        )
        cell = cell_resources(plan.profile, device)
        whole = Resources(cell.cpus, cell.gpus, whole_node=True)
        return timing_tasks(setting, estimators, dataset, device, timing, plan.profile.name,
                            whole)
