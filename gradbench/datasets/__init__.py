"""Datasets beyond :mod:`gradbench.data`'s own, one module each, registered on import.

Every module of this package is imported (alphabetically) by :mod:`gradbench.data`, so that
adding a dataset is adding one file with an ``@register_dataset`` class; datasets of other
installed packages come from the entry-point group ``gradbench.datasets``
(:func:`gradbench.data.load_plugins`).
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
