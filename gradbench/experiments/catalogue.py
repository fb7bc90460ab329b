"""The catalogue: one cell per estimator or variant of a run, saying where it applies (models and
toy problems), whether it is unbiased and its evaluations per gradient on each model; the
report's applicability table and the matched-cost columns read these rows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from gradbench.catalogue import CATALOGUE, catalogue_rows
from gradbench.data import Dataset
from gradbench.execution.task import Context, Task, cell_key
from gradbench.experiments import metrics as m
from gradbench.experiments.base import Experiment
from gradbench.experiments.plan import Plan
from gradbench.models.toy import PROBLEMS
from gradbench.report.run_tables import applicability_table
from gradbench.results import Cell


@dataclass(frozen=True)
class CatalogueSettings:
    """The catalogue reads no setting of its own."""


def _catalogue(
    label: str, targets: list[str], evaluations: dict[str, int], context: Context
) -> list[dict[str, object]]:
    return catalogue_rows(label, targets, evaluations)


class Catalogue(Experiment):
    name = CATALOGUE
    summary = "where each estimator applies, whether it is unbiased, its evaluations"
    Config = CatalogueSettings
    METRICS = (m.APPLIES, m.UNBIASED, m.EVALUATIONS)
    TABLES = (applicability_table,)
    selectable = False

    def run_tasks(
        self, plan: Plan, dataset: Dataset, device: torch.device, root: Path
    ) -> list[Task]:
        targets = [*plan.profile.models, *PROBLEMS]
        tasks = []
        for label in plan.profile.estimators:
            evaluations = plan.evaluations.get(label, {})
            config = {"targets": targets, "profile": plan.profile.name, "dataset": dataset.name,
                      m.EVALUATIONS: evaluations}
            cell = Cell(CATALOGUE, "all", label, config)
            tasks.append(Task(cell_key(cell), partial(_catalogue, label, targets, evaluations),
                              cell=cell, on_driver=True, describe=f"catalogue {label}"))
        return tasks
