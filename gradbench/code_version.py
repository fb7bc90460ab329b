"""The code of a cell's plugins: the estimators, models and datasets it used from outside gradbench.

gradbench's own code is one version for every cell (:func:`gradbench.results.code_version`: the
hash of the package's sources that make rows). A component registered from another package
(found through its entry point: ``gradbench.estimators``, ``gradbench.models``,
``gradbench.datasets``) is a *plugin*; its code is its module's source (SHA-256, first 12 hex
digits) and its distribution's name and version (:mod:`importlib.metadata`). A cell that uses no
plugin keeps gradbench's version unchanged; one that uses plugins has version
``BASE+plugins.HASH``, HASH over its plugins' labels, so that editing one plugin's module makes
exactly the cells that used it stale (:meth:`gradbench.results.ResultStore.stored` compares a
stored cell's with :func:`cell_stamp`'s), and its rows name the plugins (column ``plugins``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path
from types import ModuleType
from typing import Any

PLUGINS_COLUMN = "plugins"
"""The row column naming a cell's plugins (``; ``-separated :attr:`PluginCode.label`\\ s); only
the rows of cells that used a plugin have it."""
PLUGINS_SUFFIX = "+plugins."
"""What joins gradbench's code version and the hash of a cell's plugins in a row's version."""
DATASET_ENTRY_POINT_GROUP = "gradbench.datasets"
_OWN_PACKAGE = __name__.partition(".")[0]


@dataclass(frozen=True)
class PluginCode:
    """One plugin a cell used: what it is, and the code that made it."""

    kind: str  # "estimator", "model" or "dataset"
    name: str  # its registered name
    module: str  # the module that defines it
    distribution: str  # its installed distribution's name; "" when it belongs to none
    version: str  # the distribution's version; "" when it belongs to none
    source_hash: str  # SHA-256 of the module's source file, first 12 hex digits

    @property
    def label(self) -> str:
        """e.g. ``model tiny-sbn from gradbench-example-plugin 0.1 (gradbench_example_plugin.
        model, source 0123456789ab)``."""
        origin = f"{self.distribution} {self.version}" if self.distribution else "no distribution"
        return (
            f"{self.kind} {self.name} from {origin} "
            f"({self.module}, source {self.source_hash})"
        )


def module_source_hash(module: ModuleType) -> str:
    """SHA-256 (first 12 hex digits) of a module's source file; ``unknown`` without one."""
    path = getattr(module, "__file__", None)
    if path is None or not Path(path).is_file():
        return "unknown"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def distribution_of(module: ModuleType) -> tuple[str, str]:
    """(name, version) of the installed distribution that provides ``module``'s top-level
    package; ("", "") when none does (a module on the path without metadata)."""
    top = module.__name__.partition(".")[0]
    for name in sorted(packages_distributions().get(top, [])):
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return "", ""


def _component_module(kind: str, name: str) -> ModuleType | None:
    """The module that defines the registered estimator, model or dataset ``name``; None for a
    name not registered here. A dataset's is its entry point's (group ``gradbench.datasets``)."""
    if kind == "estimator":
        from gradbench.estimators import ESTIMATORS

        found: Any = ESTIMATORS.get(name.partition("[")[0])
    elif kind == "model":
        from gradbench.models import MODELS

        found = MODELS.get(name)
    else:
        points = [p for p in entry_points(group=DATASET_ENTRY_POINT_GROUP) if p.name == name]
        return importlib.import_module(points[0].module) if points else None
    return sys.modules[found.__module__] if found is not None else None


@functools.lru_cache(maxsize=None)
def plugin_code(kind: str, name: str) -> PluginCode | None:
    """The plugin behind a component, or None for gradbench's own (or an unknown name). Read
    once per process, as gradbench's own code version."""
    module = _component_module(kind, name)
    if module is None or module.__name__.partition(".")[0] == _OWN_PACKAGE:
        return None
    distribution, release = distribution_of(module)
    return PluginCode(
        kind, name, module.__name__, distribution, release, module_source_hash(module)
    )


def plugins_of(
    estimators: Iterable[str] = (), models: Iterable[str] = (), datasets: Iterable[str] = ()
) -> tuple[PluginCode, ...]:
    """The plugins among the named components, each once, by label."""
    named = [("estimator", e) for e in estimators] + [("model", m) for m in models]
    named += [("dataset", d) for d in datasets]
    found = {code.label: code for kind, name in named if (code := plugin_code(kind, name))}
    return tuple(found[label] for label in sorted(found))


def cell_plugins(model: str, estimator: str, config: Mapping[str, Any]) -> tuple[PluginCode, ...]:
    """The plugins a cell of ``model`` × ``estimator`` with ``config`` uses: its estimator, the
    reference estimator its checkpoints are trained with, the estimators it is timed against,
    its model, the models it catalogues (``targets``) and its dataset."""
    estimators = [estimator, *config.get("speedup_against", {})]
    if config.get("reference_estimator"):
        estimators.append(config["reference_estimator"])
    dataset = config.get("dataset")
    return plugins_of(estimators, [model, *config.get("targets", ())], [dataset] if dataset else [])


def versioned(base: str, plugins: Iterable[PluginCode]) -> str:
    """``base`` (gradbench's code version) when there are no plugins, else
    ``BASE+plugins.HASH`` with HASH the SHA-256 (12 hex digits) of the plugins' labels."""
    labels = sorted(code.label for code in plugins)
    if not labels:
        return base
    return f"{base}{PLUGINS_SUFFIX}{hashlib.sha256(chr(10).join(labels).encode()).hexdigest()[:12]}"


def gradbench_version(code_version: str) -> str:
    """The part of a row's code version that is gradbench's own (before ``+plugins.``)."""
    return code_version.partition(PLUGINS_SUFFIX)[0]


def cell_stamp(base: str, model: str, estimator: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The columns a cell's rows take from its code: ``code_version`` and, when it used
    plugins, ``plugins`` (their labels, ``; ``-separated)."""
    plugins = cell_plugins(model, estimator, config)
    stamp = {"code_version": versioned(base, plugins)}
    if plugins:
        stamp[PLUGINS_COLUMN] = "; ".join(code.label for code in plugins)
    return stamp
