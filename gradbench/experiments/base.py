"""What an experiment is: a name, the settings it reads (a dataclass of profile fields), the
metrics its rows carry, the tasks it adds to a run, and the report tables and plots it owns.

A new experiment is one module defining a subclass of :class:`Experiment`, registered in
:mod:`gradbench.experiments.registry` (or by a plugin's entry point in the group
``gradbench.experiments``). Its ``Config`` names the :class:`gradbench.profiles.Profile` fields
it reads, so that every setting keeps one declaration, one default and one doc (the profile's),
and the command-line flags of ``all`` are generated from it, one group per experiment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from gradbench.data import Dataset
    from gradbench.execution.task import Task
    from gradbench.experiment import Setting
    from gradbench.experiments.plan import Plan
    from gradbench.profiles import Profile
    from gradbench.report.plots import Plot
    from gradbench.report.table import Table


class Experiment:
    """One measurement of a run (module docstring). Subclasses set the class attributes and
    implement :meth:`setting_tasks` (or :meth:`run_tasks` for an experiment that is not per
    model and seed, such as the catalogue)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]  # a dataclass whose fields are the Profile fields this reads
    METRICS: ClassVar[tuple[str, ...]]  # names declared in gradbench.experiments.metrics
    # The report's tables and figures of this experiment, each built from the report's prepared
    # rows (gradbench.report.rows.prepare_rows): a table builder returns a Table, several
    # (None among them where the rows lack one) or None; a plot builder yields Plots.
    TABLES: ClassVar[tuple[Callable[[pd.DataFrame], Table | Iterable[Table | None] | None],
                           ...]] = ()
    PLOTS: ClassVar[tuple[Callable[[pd.DataFrame], Iterator[Plot]], ...]] = ()
    title: ClassVar[str] = ""  # its report page's heading (a plugin's page); default: its name
    selectable: ClassVar[bool] = True  # False: runs with every run (the catalogue)

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The profile fields this experiment reads."""
        return tuple(f.name for f in fields(cls.Config))

    @classmethod
    def config(cls, profile: Profile) -> Any:
        """This experiment's settings as the profile sets them."""
        return cls.Config(**{name: getattr(profile, name) for name in cls.settings()})

    def setting_tasks(
        self, plan: Plan, setting: Setting, estimators: list[str], config: Any,
        dataset: Dataset, device: torch.device, root: Path,
    ) -> list[Task]:
        """The tasks of this experiment at one setting (a model at a seed) for ``estimators``,
        with ``config`` its settings in the plan's profile; ``root``: the results folder."""
        raise NotImplementedError

    def tasks(
        self, plan: Plan, model: str, seed: int, dataset: Dataset, device: torch.device,
        root: Path,
    ) -> list[Task]:
        """The tasks of this experiment on one model at one seed, for the plan's estimators."""
        from gradbench.experiments.plan import setting_for

        names = plan.estimators[model]
        setting = setting_for(plan.profile, model, names, seed)
        return self.setting_tasks(plan, setting, names, self.config(plan.profile), dataset,
                                  device, root)

    def run_tasks(
        self, plan: Plan, dataset: Dataset, device: torch.device, root: Path
    ) -> list[Task]:
        """Every task of this experiment in the run: each seed × model of the plan."""
        return [
            task
            for seed in plan.profile.seeds
            for model in plan.estimators
            for task in self.tasks(plan, model, seed, dataset, device, root)
        ]
