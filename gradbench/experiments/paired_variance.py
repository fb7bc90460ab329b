"""Single against separate weight samples on identical draws: their variances and the ratio,
paired, at the variance experiment's checkpoints (Kingma, Salimans & Welling 2015, Table 1;
:mod:`gradbench.measure.paired_variance`). It runs on the models whose stochastic nodes are
weight-noise layers, and its rows show in the variance table's paired note
(:func:`gradbench.report.variance_tables.paired_notes`): it owns no table of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradbench.data import Dataset
from gradbench.execution.task import Task
from gradbench.experiment import Setting
from gradbench.experiments.base import Experiment
from gradbench.experiments.plan import Plan, cell_resources, checkpoint_training
from gradbench.measure.paired_variance import (
    EXPERIMENT,
    METRICS,
    has_weight_noise,
    paired_variance_tasks,
)


@dataclass(frozen=True)
class PairedVarianceSettings:
    """The profile fields paired-variance reads (documented on
    :class:`gradbench.profiles.Profile`): its own number of units, and the variance experiment's
    minibatch sizes, checkpoints and bootstrap, so that its cells sit beside the variance
    cells at the same parameters."""

    paired_variance_units: int
    variance_batch_sizes: tuple[int, ...]
    variance_epochs: tuple[int, ...]
    variance_replicates: int
    checkpoint_batch_size: int
    checkpoint_learning_rate: float
    checkpoint_max_steps: int | None


class PairedVariance(Experiment):
    name = EXPERIMENT
    summary = "single / separate weight-sample variance, paired on the same draws"
    Config = PairedVarianceSettings
    METRICS = METRICS

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str],
        config: PairedVarianceSettings, dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        units = config.paired_variance_units
        if units != 0 and units < 2:
            raise ValueError(f"paired_variance_units must be 0 (off) or at least 2, got {units}")
        if units == 0 or not has_weight_noise(setting.model):
            return []
        profile = plan.profile
        sizes = [size for size in config.variance_batch_sizes if size <= len(dataset.train)]
        return paired_variance_tasks(
            setting, sizes, units, config.variance_epochs, dataset,
            device, root, profile.name, training=checkpoint_training(profile),
            replicates=config.variance_replicates, resources=cell_resources(profile, device),
        )
