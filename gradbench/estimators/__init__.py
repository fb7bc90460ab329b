"""Monte Carlo gradient estimators, one module each, behind the registry in ``base``.

Every module of this package is imported (alphabetically), so that adding an estimator is adding
one file with an ``@register_estimator`` class; estimators of other installed packages are loaded
from the entry-point group ``gradbench.estimators`` (:func:`load_plugins`).
"""

import importlib
import pkgutil

from gradbench.estimators.base import (
    ESTIMATORS,
    Estimator,
    NotApplicable,
    StochasticForward,
    applicable_estimators,
    base_name,
    estimator_class,
    estimator_names,
    make_estimator,
    parse_label,
    register_estimator,
    split_labels,
    variant_options,
)
from gradbench.plugins import load_entry_points

ENTRY_POINT_GROUP = "gradbench.estimators"
"""Installed packages add estimators here: ``[project.entry-points."gradbench.estimators"]``,
``NAME = "package.module"`` (a module that registers its classes) or ``"package.module:Class"``."""
_INFRASTRUCTURE = frozenset({"base", "nodes", "control_variates"})


def _import_modules() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module}")


def load_plugins() -> list[str]:
    """Import every entry point of the group ``gradbench.estimators``; returns the names of
    the estimators they registered (:func:`gradbench.plugins.load_entry_points`)."""
    return load_entry_points(ENTRY_POINT_GROUP, Estimator, ESTIMATORS, register_estimator,
                             "estimator")


_import_modules()
load_plugins()

__all__ = [
    "ENTRY_POINT_GROUP",
    "ESTIMATORS",
    "Estimator",
    "NotApplicable",
    "StochasticForward",
    "applicable_estimators",
    "base_name",
    "estimator_class",
    "estimator_names",
    "load_plugins",
    "make_estimator",
    "parse_label",
    "register_estimator",
    "split_labels",
    "variant_options",
]
