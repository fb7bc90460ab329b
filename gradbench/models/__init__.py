"""Shared models and toy problems, one module each, behind the registries in ``base`` and ``toy``.

Every module of this package is imported (alphabetically), so that adding a model is adding one
file with a ``@register_model`` class.
"""

import importlib
import pkgutil

from gradbench.models.base import MODELS, DataShape, StochasticModel, make_model

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODELS", "DataShape", "StochasticModel", "make_model"]
