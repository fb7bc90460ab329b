"""The registry of experiments: the built-in ones in the order a run makes them (the catalogue
first, training last), then those of installed plugins (entry point group
``gradbench.experiments``: ``NAME = "package.module:ExperimentClass"``)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

import pandas as pd

from gradbench.experiments.base import Experiment
from gradbench.experiments.bias import Bias
from gradbench.experiments.catalogue import Catalogue
from gradbench.experiments.metrics import DECLARED, Metric
from gradbench.experiments.paired_variance import PairedVariance
from gradbench.experiments.timing import Timing
from gradbench.experiments.train import Train
from gradbench.experiments.variance import Variance

ENTRY_POINT_GROUP = "gradbench.experiments"
BUILTIN: tuple[type[Experiment], ...] = (Catalogue, Timing, Variance, PairedVariance, Bias, Train)


def _plugins() -> list[type[Experiment]]:
    """The experiment classes installed packages declare; ImportError naming one that fails to
    load or is not an Experiment."""
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as error:
            raise ImportError(
                f"experiment plugin {point.name!r} ({point.value}) failed to load: {error}"
            ) from error
        if not (isinstance(loaded, type) and issubclass(loaded, Experiment)):
            raise ImportError(f"experiment plugin {point.name!r} ({point.value}) is not an "
                              "Experiment subclass")
        found.append(loaded)
    return found


@cache
def experiments() -> dict[str, Experiment]:
    """Every experiment by name, in run order; ValueError when two share a name or one lists
    a metric that is not declared (:func:`gradbench.experiments.metrics.declare`)."""
    registry: dict[str, Experiment] = {}
    for cls in (*BUILTIN, *_plugins()):
        if cls.name in registry:
            raise ValueError(f"two experiments are named {cls.name!r}")
        undeclared = [name for name in cls.METRICS if name not in DECLARED]
        if undeclared:
            raise ValueError(f"experiment {cls.name!r}: metric {undeclared[0]!r} is not declared")
        registry[cls.name] = cls()
    return registry


def selectable() -> tuple[str, ...]:
    """The experiments ``--experiments`` may name (the catalogue runs with every run)."""
    return tuple(name for name, e in experiments().items() if e.selectable)


def metrics() -> dict[str, Metric]:
    """Every metric the registered experiments declare, by name."""
    return {name: DECLARED[name] for e in experiments().values() for name in e.METRICS}


def experiment_table() -> pd.DataFrame:
    """One row per registered experiment: name, whether ``--experiments`` selects it, summary."""
    return pd.DataFrame([{"experiment": name, "selectable": experiment.selectable,
                          "summary": experiment.summary}
                         for name, experiment in experiments().items()])
