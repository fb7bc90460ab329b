"""Reports a researcher can cite, built from stored result rows only, over one seed or several.

The pipeline, one module per step: :mod:`~gradbench.report.rows` (the stored rows: typed,
selected, looked up per seed) → :mod:`~gradbench.report.aggregate` (over seeds: means,
t-intervals, paired tests, ranks) → the table specs (``timing_tables``, ``variance_tables``,
``work_tables``, ``bias_tables``, ``training_tables``, ``run_tables``, assembled by
:mod:`~gradbench.report.table`, listed in report order by :mod:`~gradbench.report.tables`) →
:mod:`~gradbench.report.render` (Markdown, LaTeX, CSV). :mod:`~gradbench.report.paper` holds
every piece of paper knowledge (published figures, orders, comparisons); ``plots`` draws the
figures and ``build`` writes everything with an index.
"""

from gradbench.report import paper
from gradbench.report.build import (
    FIGURE_FORMATS,
    FIGURES_DIR,
    TABLE_FORMATS,
    TABLES_DIR,
    Report,
    build_reports,
    check_formats,
    check_writable,
)

__all__ = [
    "FIGURES_DIR",
    "FIGURE_FORMATS",
    "TABLES_DIR",
    "TABLE_FORMATS",
    "Report",
    "build_reports",
    "check_formats",
    "check_writable",
    "paper",
]
