"""Training with each estimator: the ELBO, the importance-weighted bound (Burda et al. 2016) and
the classification error per epoch (the thesis' ELBO tables; Jang et al. 2017, Table 1)."""

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
from gradbench.experiments.plan import Plan, cell_resources
from gradbench.measure.training import EXPERIMENT, EvalConfig, TrainConfig, training_tasks
from gradbench.report import paper
from gradbench.report.plots import training_plots
from gradbench.report.rows import models_of
from gradbench.report.run_tables import schedule_table
from gradbench.report.table import Table
from gradbench.report.training_tables import training_tables


@dataclass(frozen=True)
class TrainSettings:
    """The profile fields training reads (documented on :class:`gradbench.profiles.Profile`)."""

    train_epochs: int
    train_batch_size: int
    train_learning_rate: float
    train_lr_decay: float
    eval_samples: int
    eval_iw_samples: int
    eval_iw_every: int
    eval_train_subset: int | None
    eval_iw_subset: int | None
    eval_best_valid_iw_samples: tuple[int, ...]


def train_config(settings: TrainSettings) -> TrainConfig:
    """The training loop's configuration."""
    return TrainConfig(settings.train_epochs, settings.train_batch_size,
                       settings.train_learning_rate, settings.train_lr_decay)


def eval_config(settings: TrainSettings) -> EvalConfig:
    """The evaluation's configuration."""
    return EvalConfig(settings.eval_samples, settings.eval_iw_samples, settings.eval_iw_every,
                      settings.eval_train_subset, iw_subset=settings.eval_iw_subset,
                      best_valid_iw_samples=settings.eval_best_valid_iw_samples)


def training_report_tables(rows: pd.DataFrame) -> list[Table | None]:
    """The bounds at the end of training per autoencoder, the schedules in force, then the
    classifiers' errors; models in the papers' order."""
    bounds, errors = training_tables(rows, paper.model_order(models_of(rows, EXPERIMENT)))
    return [*bounds, schedule_table(rows), *errors]


class Train(Experiment):
    name = EXPERIMENT
    summary = "training: ELBO, importance-weighted bound and error per epoch"
    Config = TrainSettings
    METRICS = (m.ELBO, m.ERROR_RATE, m.NLL, m.WALL_CLOCK_S, m.TRAIN_LOSS, m.RECONSTRUCTION_LL,
               m.RECONSTRUCTION_LL_RELAXED, m.KL,
               m.IW_BOUND, m.BEST_VALID_EPOCH, *m.IW_BOUNDS_AT_BEST_VALID,
               m.IW_BOUND_VALID_TRACKED, m.TEMPERATURE, m.BETA)
    TABLES = (training_report_tables,)
    PLOTS = (training_plots,)

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str], config: TrainSettings,
        dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        return training_tasks(
            setting, estimators, dataset, device, train_config(config), eval_config(config),
            plan.profile.name, cell_resources(plan.profile, device),
        )
