"""A report table — columns, cells over seeds, marks — and its assembly from a table spec's rows.

A spec (``*_tables`` modules) lays out rows of cells (:class:`~gradbench.report.aggregate.
Estimate` for our measurements, plain numbers for published figures, text) and says which
columns compare the rows (:class:`Comparison`); :func:`assemble` marks the best row and the
rows a paired test over seeds cannot tell from it in each compared column, adds the average
rank column and the notes that say what the numbers mean. Renderers live in
:mod:`gradbench.report.render`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from gradbench.estimators import ESTIMATORS
from gradbench.report import render
from gradbench.report.aggregate import Estimate, Mark, Rank, average_ranks, compare
from gradbench.report.render import CELL

EXACT = "exact"
"""The exact gradient's estimator: the reference, ranked first wherever it runs."""

BIASED = "‡"
"""Marks a biased estimator in a table that compares variance alone: it takes no part in the
best and the ranks there (its bias is in the bias table)."""

BIASED_NOTE = (
    f"{BIASED} Biased estimator: this table compares variance alone, so it is shown but left out "
    "of best and ranks (bias and MSE, on the oracle configurations, are in the bias table)."
)

Value = Estimate | Rank | float | str | None
"""A table cell: our measurement over seeds, an average rank, a published number, a text, or
None (not measured)."""

RANK_LABEL = "avg. rank"


@dataclass(frozen=True)
class Column:
    """A table column: its header, how its numbers are written and what it shows.

    ``kind``: ``text``; ``sci`` (two significant digits, 7.8e3, as Kingma et al.'s Table 1);
    ``fixed1``/``fixed2``/``fixed3`` (decimals); ``ratio`` (a speed-up, 221x); ``int``;
    ``percent`` (a fraction in [0, 1] written as a percentage); ``rank`` (an average rank).
    ``key``: the column names the row (model, estimator, group, epoch) in the tidy CSV.
    ``part``: what an Estimate cell shows (:data:`gradbench.report.render.CELL`, ``MEAN``,
    ``LOW``, ``HIGH``, ``INTERVAL``).
    """

    label: str
    kind: str = "text"
    key: bool = False
    part: str = CELL


@dataclass(frozen=True)
class Table:
    """A report table: a file stem, a title, columns, rows, the notes printed under it and the
    marks of its compared cells, by (row, column) index."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]
    notes: tuple[str, ...] = ()
    marks: Mapping[tuple[int, int], Mark] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """True when some cell is a measurement over seeds (the tidy CSV has lines)."""
        return any(isinstance(v, (Estimate, Rank)) for row in self.rows for v in row)

    @property
    def headers(self) -> list[str]:
        """The column labels."""
        return [c.label for c in self.columns]

    def markdown(self) -> str:
        """GitHub-flavoured Markdown; best cells in bold, indistinguishable ones with ≈."""
        return render.markdown(self)

    def latex(self) -> str:
        """A complete ``table`` float (caption, label, booktabs rules); best cells in ``\\textbf``,
        the runner-up underlined."""
        return render.latex(self)

    def csv(self) -> str:
        """The table as shown, numbers at full precision (means, bounds, ranks)."""
        return render.csv(self)

    def tidy_csv(self) -> str:
        """One line per measured cell: mean, ci_low, ci_high, n, seeds, marks and p-value."""
        return render.tidy_csv(self)


@dataclass(frozen=True)
class Compared:
    """A column whose rows compete, and which way is better; ``log``: compared on log values."""

    label: str
    higher_is_better: bool
    log: bool = False


@dataclass(frozen=True)
class Comparison:
    """How a table's rows compete.

    ``columns``: the compared columns; ``better``: what is better, in words, for the notes;
    ``eligible``: per row, whether it takes part (a † row or a published-only row does not);
    ``blocks``: per row, the group of rows it competes within (None: all rows, ``scope`` empty;
    else ``scope`` names the groups, e.g. "model").
    """

    columns: tuple[Compared, ...]
    better: str
    eligible: tuple[bool, ...]
    blocks: tuple[Hashable, ...] | None = None
    scope: str = ""
    excluded: str = ""  # why the ineligible rows are left out, for the notes
    rank_after: str = ""  # the column the rank column follows; default: the last compared one
    biased_apart: bool = False  # variance alone: biased estimators take no part (marked ‡)


def estimator_label(row: Sequence[Value], columns: Sequence[Column]) -> str:
    """The estimator a row names (its ``estimator`` column, marks stripped); empty if none."""
    labels = [c.label for c in columns]
    if "estimator" not in labels or not isinstance(row[labels.index("estimator")], str):
        return ""
    return str(row[labels.index("estimator")]).split(" ")[0]


def is_biased(label: str) -> bool:
    """True when the registered estimator of ``label`` is not unbiased (unknown names: False)."""
    name = label.partition("[")[0]
    return name in ESTIMATORS and not ESTIMATORS[name].unbiased


def judge(
    columns: Sequence[Column], rows: Sequence[Sequence[Value]], comparison: Comparison
) -> tuple[dict[tuple[int, int], Mark], dict[int, Rank]]:
    """Block by block, the marks of the compared cells (by row and column index) and each
    eligible row's average rank (:func:`~gradbench.report.aggregate.compare`,
    :func:`~gradbench.report.aggregate.average_ranks`)."""
    labels = [c.label for c in columns]
    indices = [labels.index(c.label) for c in comparison.columns]
    blocks = comparison.blocks or tuple(None for _ in rows)
    names = [estimator_label(row, columns) for row in rows]
    taking_part = [
        allowed and not (comparison.biased_apart and is_biased(name))
        for allowed, name in zip(comparison.eligible, names)
    ]
    marks: dict[tuple[int, int], Mark] = {}
    ranks: dict[int, Rank] = {}
    for block in dict.fromkeys(blocks):
        members = [i for i, b in enumerate(blocks) if b == block]
        eligible = [taking_part[i] for i in members]
        first = [names[i] == EXACT for i in members]
        judged = [([rows[i][j] for i in members], c.higher_is_better, c.log, j)
                  for c, j in zip(comparison.columns, indices)]
        for cells, higher_is_better, log, j in judged:
            found = compare(cells, eligible, higher_is_better, log, first=first)
            marks.update({(members[k], j): mark for k, mark in found.items()})
        ranked = average_ranks([(cells, higher) for cells, higher, _, _ in judged], eligible,
                               first)
        ranks.update({members[k]: rank for k, rank in ranked.items()})
    return marks, ranks


def assemble(
    name: str,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Value]],
    notes: Sequence[str] = (),
    comparison: Comparison | None = None,
) -> Table:
    """The table with its comparison applied: marks, the average-rank column (after the last
    compared column unless ``rank_after`` says otherwise), a biased row marked ‡ where the table
    compares variance alone, and one note saying what is compared. What seeds, intervals, marks
    and ranks mean is said once for every table, on the report's conventions page."""
    header, body = list(columns), [list(row) for row in rows]
    extra: list[str] = []
    marks: dict[tuple[int, int], Mark] = {}
    if comparison is not None and body:
        labels = [c.label for c in header]
        compared = [labels.index(c.label) for c in comparison.columns]
        found, ranks = judge(header, body, comparison)
        after = labels.index(comparison.rank_after) if comparison.rank_after else max(compared)
        at = after + 1
        header.insert(at, Column(RANK_LABEL, "rank"))
        for i, row in enumerate(body):
            row.insert(at, ranks.get(i))
        marks = {(i, j + 1 if j >= at else j): mark for (i, j), mark in found.items()}
        within = f", within each {comparison.scope}" if comparison.scope else ""
        extra.append(f"Compared: {comparison.better}{within}.")
        if comparison.biased_apart and "estimator" in labels:
            column = labels.index("estimator")
            biased = [row for row in body if is_biased(estimator_label(row, header))]
            for row in biased:
                row[column] = f"{row[column]} {BIASED}"
            if biased:
                extra.append(BIASED_NOTE)
        if comparison.excluded:
            extra.append(comparison.excluded)
    return Table(name, title, tuple(header), tuple(tuple(row) for row in body),
                 (*notes, *extra), marks)
