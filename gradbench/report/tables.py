"""Every report table, in report order, from prepared rows (:func:`prepare_rows`).

The pipeline: stored rows (:mod:`~gradbench.report.rows`) → aggregation over seeds
(:mod:`~gradbench.report.aggregate`) → table specs (the ``*_tables`` modules, with the papers'
figures and orders from :mod:`~gradbench.report.paper`) → renderers
(:mod:`~gradbench.report.render`). Which tables a report holds is read from the experiments'
registry (each experiment's ``TABLES``), between the two tables that span experiments: ours
against the papers first, the diverged or failed cells last. A builder returns None when the
rows it needs are absent. ``prepare_rows`` and ``label_key`` are importable from here as well, as
callers of this module have always read rows through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from gradbench.report.comparison_tables import comparison_table
from gradbench.report.rows import label_key, prepare_rows
from gradbench.report.run_tables import diverged_table
from gradbench.report.table import Table

if TYPE_CHECKING:
    from gradbench.experiments.base import Experiment

__all__ = ["all_tables", "label_key", "owned_tables", "prepare_rows"]


def _present(built: Table | Iterable[Table | None] | None) -> list[Table]:
    """A builder's answer as a list: one table, several, or none."""
    if built is None:
        return []
    if isinstance(built, Table):
        return [built]
    return [table for table in built if table is not None]


def owned_tables(
    rows: pd.DataFrame, stored: pd.DataFrame | None = None
) -> list[tuple[Experiment | None, Table]]:
    """Every table the rows support, in report order, with the experiment whose ``TABLES``
    built it (None for the two that span experiments): ours against the papers' figures, each
    registered experiment's tables in the registry's order (plugins' after the built-in ones),
    and the diverged or failed cells. ``stored``: the store's rows as loaded, where the
    comparison finds a cell of changed model options that measures a distance's cause."""
    from gradbench.experiments.registry import experiments  # the experiments import this package

    if rows.empty:
        return []
    owned: list[tuple[Experiment | None, Table]] = [
        (None, table) for table in _present(comparison_table(rows, stored))]
    for experiment in experiments().values():
        owned += [(experiment, table)
                  for builder in experiment.TABLES for table in _present(builder(rows))]
    return owned + [(None, table) for table in _present(diverged_table(rows))]


def all_tables(rows: pd.DataFrame) -> list[Table]:
    """Every table the rows support, in report order (:func:`owned_tables`)."""
    return [table for _, table in owned_tables(rows)]
