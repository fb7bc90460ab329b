"""Components of other installed packages, found through entry points (``gradbench.estimators``,
``gradbench.models``, …): one loader for every registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any


def load_entry_points(
    group: str,
    base: type,
    registry: Mapping[str, Any],
    register: Callable[[Any], Any],
    what: str,
) -> list[str]:
    """Import every entry point of ``group``; returns the names it added to ``registry``.

    An entry point names a module that registers its classes (``package.module``) or one class
    (``package.module:Class``): a subclass of ``base`` not yet in ``registry`` is registered with
    ``register``. Anything that fails to load or register raises ImportError naming the entry
    point and ``what`` it should provide.
    """
    before = set(registry)
    for point in entry_points(group=group):
        try:
            loaded = point.load()
            new = isinstance(loaded, type) and issubclass(loaded, base)
            if new and loaded.name not in registry:
                register(loaded)
        except Exception as error:
            raise ImportError(
                f"{what} plugin {point.name!r} ({point.value}) failed to load: {error}"
            ) from error
    return [name for name in registry if name not in before]
