"""Shared models and toy problems, one module each, behind the registries in ``base`` and ``toy``.

Every module of this package is imported (alphabetically), so that adding a model is adding one
file with a ``@register_model`` class; models of other installed packages are loaded from the
entry-point group ``gradbench.models`` (:func:`load_plugins`).
"""

import importlib
import pkgutil

from gradbench.models.base import (
    MODELS,
    TASKS,
    DataShape,
    StochasticModel,
    make_model,
    profile_model_options,
    register_model,
)
from gradbench.plugins import load_entry_points

ENTRY_POINT_GROUP = "gradbench.models"
"""Installed packages add models here: ``[project.entry-points."gradbench.models"]``,
``NAME = "package.module"`` (a module that registers its classes) or ``"package.module:Class"``."""


def load_plugins() -> list[str]:
    """Import every entry point of the group ``gradbench.models``; returns the names of the
    models they registered (:func:`gradbench.plugins.load_entry_points`)."""
    return load_entry_points(ENTRY_POINT_GROUP, StochasticModel, MODELS, register_model, "model")


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
load_plugins()

__all__ = [
    "ENTRY_POINT_GROUP",
    "MODELS",
    "TASKS",
    "DataShape",
    "StochasticModel",
    "load_plugins",
    "make_model",
    "profile_model_options",
    "register_model",
]
