"""Gradient variance at checkpoints of reference training, per parameter group and minibatch
size, split into the estimator's noise and the minibatch's share (Kingma, Salimans & Welling
2015, Table 1; the thesis' variance tables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from gradbench.data import Dataset
from gradbench.experiment import Setting
from gradbench.execution.task import Task
from gradbench.experiments import metrics as m
from gradbench.experiments.base import Experiment
from gradbench.experiments.plan import Plan, cell_resources, checkpoint_training
from gradbench.measure.variance import EXPERIMENT, variance_tasks
from gradbench.report import paper
from gradbench.report.plots import variance_plots
from gradbench.report.rows import models_of
from gradbench.report.table import Table
from gradbench.report.variance_tables import decomposition_table, slope_table, variance_table
from gradbench.report.work_tables import work_normalised_table


@dataclass(frozen=True)
class VarianceSettings:
    """The profile fields variance reads (documented on :class:`gradbench.profiles.Profile`);
    the checkpoint fields are shared with bias."""

    variance_batch_sizes: tuple[int, ...]
    variance_draws: int
    variance_noise_draws: int
    variance_epochs: tuple[int, ...]
    variance_replicates: int
    checkpoint_batch_size: int
    checkpoint_learning_rate: float
    checkpoint_max_steps: int | None


def variance_tables(rows: pd.DataFrame) -> list[Table | None]:
    """The Table-1 analogue of each model, in the papers' order."""
    return [variance_table(rows, model)
            for model in paper.model_order(models_of(rows, EXPERIMENT))]


class Variance(Experiment):
    name = EXPERIMENT
    summary = "gradient variance per parameter group, minibatch size and checkpoint"
    Config = VarianceSettings
    METRICS = (m.GRAD_VARIANCE, m.GRAD_VARIANCE_TRACE, m.GRAD_VARIANCE_NOISE,
               m.GRAD_VARIANCE_DATA, m.SNR, m.SNR_SQUARED, m.LOG_VARIANCE_SLOPE, m.TEMPERATURE,
               m.BETA)
    TABLES = (variance_tables, slope_table, decomposition_table, work_normalised_table)
    PLOTS = (variance_plots,)

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str], config: VarianceSettings,
        dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        profile = plan.profile
        sizes = [size for size in config.variance_batch_sizes if size <= len(dataset.train)]
        return variance_tasks(
            setting, estimators, sizes, config.variance_draws, config.variance_epochs, dataset,
            device, root, profile.name, noise_draws=config.variance_noise_draws,
            training=checkpoint_training(profile), replicates=config.variance_replicates,
            resources=cell_resources(profile, device),
        )
