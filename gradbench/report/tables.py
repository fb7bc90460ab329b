"""Every report table, in report order, from prepared rows (:func:`prepare_rows`).

The pipeline: stored rows (:mod:`~gradbench.report.rows`) → aggregation over seeds
(:mod:`~gradbench.report.aggregate`) → table specs (the ``*_tables`` modules, with the papers'
figures and orders from :mod:`~gradbench.report.paper`) → renderers
(:mod:`~gradbench.report.render`). A builder returns None when the rows it needs are absent.
``prepare_rows`` and ``label_key`` are importable from here as well, as callers of this module
have always read rows through it.
"""

from __future__ import annotations

import pandas as pd

from gradbench.report import paper
from gradbench.report.bias_tables import bias_table
from gradbench.report.comparison_tables import comparison_table
from gradbench.report.rows import TRAINING, VARIANCE, label_key, models_of, prepare_rows
from gradbench.report.run_tables import (
    applicability_table,
    diverged_table,
    schedule_table,
)
from gradbench.report.table import Table
from gradbench.report.timing_tables import timing_tables
from gradbench.report.training_tables import training_tables
from gradbench.report.variance_tables import (
    decomposition_table,
    slope_table,
    variance_table,
)
from gradbench.report.work_tables import work_normalised_table

__all__ = ["all_tables", "label_key", "prepare_rows"]


def all_tables(rows: pd.DataFrame) -> list[Table]:
    """Every table the rows support, in report order: ours against the papers' figures, timing,
    variance (per model, slopes, decomposition, matched cost), bias, the bounds at the end of
    training, the schedules, the classifiers, applicability, and the diverged or failed cells; a
    table per model in the papers' order (:func:`gradbench.report.paper.model_order`)."""
    if rows.empty:
        return []
    bounds, errors = training_tables(rows, paper.model_order(models_of(rows, TRAINING)))
    candidates: list[Table | None] = [
        comparison_table(rows),
        *timing_tables(rows),
        *(variance_table(rows, m) for m in paper.model_order(models_of(rows, VARIANCE))),
        slope_table(rows),
        decomposition_table(rows),
        work_normalised_table(rows),
        bias_table(rows),
        *bounds,
        schedule_table(rows),
        *errors,
        applicability_table(rows),
        diverged_table(rows),
    ]
    return [t for t in candidates if t is not None]
