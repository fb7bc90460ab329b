"""Experiments: the measurements a run makes, each one module declaring its settings, metrics,
tasks, tables and plots (:class:`~gradbench.experiments.base.Experiment`), found in a registry
(:func:`~gradbench.experiments.registry.experiments`) that plugins extend through the entry
point group ``gradbench.experiments``. Metric names are declared once, in
:mod:`~gradbench.experiments.metrics`.

This package imports nothing heavy itself: the measurement modules import metric names from
:mod:`gradbench.experiments.metrics`, and the registry is imported where it is used.
"""
