"""Bias against the exact gradient, on each model's oracle configuration, at the variance
checkpoints (relative bias, cosine, mean squared error)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gradbench.data import Dataset
from gradbench.experiment import Setting
from gradbench.execution.task import Task
from gradbench.experiments import metrics as m
from gradbench.experiments.base import Experiment
from gradbench.experiments.plan import Plan, cell_resources, checkpoint_training
from gradbench.measure.bias import EXPERIMENT, bias_tasks
from gradbench.report.bias_tables import bias_table


@dataclass(frozen=True)
class BiasSettings:
    """The profile fields bias reads (documented on :class:`gradbench.profiles.Profile`); its
    checkpoints are the variance experiment's epochs."""

    bias_draws: int
    bias_batch_size: int
    variance_epochs: tuple[int, ...]


class Bias(Experiment):
    name = EXPERIMENT
    summary = "bias of each estimator against the model's exact gradient"
    Config = BiasSettings
    METRICS = (m.RELATIVE_BIAS, m.COSINE, m.MSE, m.RELATIVE_STD)
    TABLES = (bias_table,)

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str], config: BiasSettings,
        dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        if setting.model not in plan.bias_options:
            return []
        profile = plan.profile
        small = replace(setting, model_options=dict(plan.bias_options[setting.model]))
        return bias_tasks(
            small, estimators, config.variance_epochs, dataset, device, root, profile.name,
            draws=config.bias_draws, batch_size=min(config.bias_batch_size, len(dataset.train)),
            training=checkpoint_training(profile), resources=cell_resources(profile, device),
        )
