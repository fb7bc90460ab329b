"""gradbench: benchmark and gradient-variance analysis of Monte Carlo gradient estimators.

The library's entry points (:mod:`gradbench.api`): :func:`run` runs a profile and returns its
rows and report; :func:`measure_variance`, :func:`measure_bias`, :func:`measure_timing` and
:func:`train` measure given estimators on one model and dataset as tidy rows. They are imported
on first use, so that ``import gradbench.data`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunResult", "measure_bias", "measure_timing", "measure_variance", "run", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gradbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradbench' has no attribute {name!r}")
