"""Renderers of a :class:`~gradbench.report.table.Table`: Markdown, LaTeX, CSV and tidy CSV.

Numbers are written as in the papers' tables (``sci``: 7.8e3; ``fixed2``: -101.30; ...). A cell
reads "mean ± half-width" of its 95 % interval: over seeds (t-interval) with several, the seed's
own stored interval with one; "(n=2)" where the seed counts of a table differ and the seeds it
lost ("1 diverged"). The best cell of a compared column is bold, a cell the paired test cannot
tell from it carries ≈, and LaTeX underlines the runner-up. LaTeX tables are complete floats
(caption, label, booktabs rules) that compile on their own. Rendering is deterministic: the same
table gives the same bytes.
"""

from __future__ import annotations

import csv as csv_module
import io
import math
from collections import Counter
from typing import TYPE_CHECKING

from tabulate import tabulate

from gradbench.report.aggregate import BEST, TIED, UNTESTED, Estimate, Mark, Rank
from gradbench.report.rows import DIVERGED

if TYPE_CHECKING:
    from gradbench.report.table import Column, Table, Value

CELL = "cell"
MEAN = "mean"
LOW = "low"
HIGH = "high"
INTERVAL = "interval"
"""What a column shows of an :class:`Estimate`: the cell (mean ± half-width over several seeds,
the value with one), the mean alone (its interval in LOW / HIGH columns beside), a bound, or
the mean with its interval in brackets ("1.09 [1.08, 1.10]", for an interval that is not
symmetric, as a ratio's)."""

TIED_MARK = "≈"
"""Markdown's mark of a cell that the paired test cannot tell from the best."""

UNITS = {"ratio": ("x", "\\times"), "percent": (" %", "\\,\\%")}
"""Units written after a number (Markdown, LaTeX)."""

DECIMALS = {"fixed1": 1, "fixed2": 2, "fixed3": 3, "percent": 2, "int": 0, "rank": 2}

TIDY_FIELDS = ("quantity", "status", "mean", "ci_low", "ci_high", "interval", "n", "seeds",
               "lost", "se", "best", "indistinguishable", "p_value")
"""Columns of the tidy CSV after the table's key columns."""


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text; symbols pdfLaTeX lacks become math (a
    character it has no form for, beyond Latin, becomes "?")."""
    replacements = {
        "\\": "\\textbackslash{}",
        "&": "\\&",
        "%": "\\%",
        "$": "\\$",
        "#": "\\#",
        "_": "\\_",
        "{": "\\{",
        "}": "\\}",
        "~": "\\textasciitilde{}",
        "†": "\\textsuperscript{\\dag}",
        "^": "\\textasciicircum{}",
        "‡": "\\textsuperscript{\\ddag}",
        "—": "---",
        "–": "--",
        "−": "$-$",
        "±": "$\\pm$",
        "×": "$\\times$",
        "≈": "$\\approx$",
        "·": "$\\cdot$",
        "√": "$\\surd$",
        "≥": "$\\geq$",
        "≤": "$\\leq$",
        "²": "$^2$",
        "μ": "$\\mu$",
        "σ": "$\\sigma$",
        "τ": "$\\tau$",
        "α": "$\\alpha$",
        "β": "$\\beta$",
        "ε": "$\\varepsilon$",
        "θ": "$\\theta$",
        "η": "$\\eta$",
        "λ": "$\\lambda$",
        "ψ": "$\\psi$",
        "φ": "$\\phi$",
        "‖": "$\\|$",
    }
    return "".join(replacements.get(ch, ch if ord(ch) < 0x180 else "?") for ch in text)


def digits(number: float, kind: str, latex: bool = False) -> str:
    """A finite number's digits as ``kind`` writes them, without unit (LaTeX: math-mode text)."""
    if kind == "sci":
        if number == 0.0:
            return "0"
        mantissa, exponent = f"{number:.1e}".split("e")
        return f"{mantissa}\\times10^{{{int(exponent)}}}" if latex else f"{mantissa}e{int(exponent)}"
    if kind == "ratio":
        return f"{number:.0f}" if abs(number) >= 10 else f"{number:.1f}"
    scale = 100.0 if kind == "percent" else 1.0
    return f"{scale * number:.{DECIMALS.get(kind, 3)}f}"


def _unit(kind: str, latex: bool) -> str:
    plain, tex = UNITS.get(kind, ("", ""))
    return tex if latex else plain


def number(value: float, kind: str, latex: bool = False) -> str:
    """A number as ``kind`` writes it, with its unit; ``diverged`` when it is not finite."""
    if not math.isfinite(value):
        return DIVERGED
    text = digits(value, kind, latex) + _unit(kind, latex)
    return f"${text}$" if latex else text


def plus_minus(mean: float, half_width: float, kind: str, latex: bool = False) -> str:
    """"mean ± half-width" in ``kind``'s digits and unit."""
    unit = _unit(kind, latex)
    if latex:
        return f"${digits(mean, kind, True)} \\pm {digits(half_width, kind, True)}{unit}$"
    return f"{digits(mean, kind)} ± {digits(half_width, kind)}{unit}"


def lost_phrase(estimate: Estimate) -> str:
    """The seeds a cell lost, e.g. "1 diverged, 1 failed" (empty when none)."""
    counts = Counter(estimate.lost.values())
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def display(
    value: Value,
    kind: str,
    latex: bool = False,
    part: str = CELL,
    show_n: bool = False,
    mark: Mark | None = None,
) -> str:
    """A cell as Markdown text, or as LaTeX when ``latex``.

    ``part``: what an :class:`Estimate` shows (:data:`CELL`, :data:`MEAN`, :data:`LOW`,
    :data:`HIGH`); ``show_n``: add its number of seeds; ``mark``: bold for the best, ≈ for a
    cell not distinguishable from it.
    """
    if value is None:
        return "--" if latex else "—"
    if isinstance(value, str):
        return latex_escape(value) if latex else value
    if isinstance(value, Rank):
        text = number(value.mean, "rank", latex)
        if value.se is not None:
            text += f" ({number(value.se, 'rank', latex)})"
        return text
    if isinstance(value, Estimate):
        text = _estimate(value, kind, latex, part, show_n)
    else:
        text = number(float(value), kind, latex)
    if mark is None:
        return text
    if mark.kind == BEST:
        return f"\\textbf{{\\boldmath{text}}}" if latex else f"**{text}**"
    if latex and mark.second:
        text = f"\\underline{{{text}}}"
    if mark.kind == TIED:
        return f"{text}$^{{\\approx}}$" if latex else f"{text} {TIED_MARK}"
    return text


def _estimate(value: Estimate, kind: str, latex: bool, part: str, show_n: bool) -> str:
    if value.n == 0:
        return value.status
    if part in (LOW, HIGH):
        bound = value.low if part == LOW else value.high
        return number(bound, kind, latex) if math.isfinite(bound) else ("--" if latex else "—")
    if part == CELL and math.isfinite(value.half_width):
        text = plus_minus(value.mean, value.half_width, kind, latex)
    elif part == INTERVAL and math.isfinite(value.half_width):
        text = bracketed(value.mean, value.low, value.high, kind, latex)
    else:
        text = number(value.mean, kind, latex)
    annotation = ", ".join(p for p in (f"n={value.n}" if show_n else "", lost_phrase(value)) if p)
    return f"{text} ({annotation})" if annotation else text


def bracketed(mean: float, low: float, high: float, kind: str, latex: bool = False) -> str:
    """"mean [low, high]" in ``kind``'s digits and unit."""
    unit = _unit(kind, latex)
    if latex:
        return (f"${digits(mean, kind, True)}{unit}\\,[{digits(low, kind, True)}, "
                f"{digits(high, kind, True)}]$")
    return f"{digits(mean, kind)}{unit} [{digits(low, kind)}, {digits(high, kind)}]"


def seed_counts_differ(table: Table) -> bool:
    """True when the table's measured cells were averaged over different numbers of seeds."""
    counts = {
        v.n for row in table.rows for v, c in zip(row, table.columns)
        if isinstance(v, Estimate) and v.n > 0 and c.part in (CELL, MEAN)
    }
    return len(counts) > 1


def _body(table: Table, latex: bool) -> list[list[str]]:
    show_n = seed_counts_differ(table)
    return [
        [display(v, c.kind, latex, c.part, show_n, table.marks.get((i, j)))
         for j, (v, c) in enumerate(zip(row, table.columns))]
        for i, row in enumerate(table.rows)
    ]


def _is_text(column: Column) -> bool:
    return column.kind == "text"


def markdown(table: Table) -> str:
    """GitHub-flavoured Markdown (tabulate), numbers as in the papers' tables."""
    aligns = ["left" if _is_text(c) else "right" for c in table.columns]
    text = tabulate(_body(table, latex=False), headers=table.headers, tablefmt="github",
                    disable_numparse=True, colalign=aligns)
    return text + "\n"


LATEX_PACKAGES = ("booktabs",)
"""The packages a LaTeX table needs beyond LaTeX itself (``\\usepackage{booktabs}``)."""


def latex_label(table: Table) -> str:
    """The table's ``\\label``: ``tab:gradbench-NAME``."""
    return f"tab:gradbench-{table.name.replace('_', '-')}"


def latex(table: Table) -> str:
    """A complete ``table`` float: caption, label, booktabs rules, ± intervals, the best in bold
    and the runner-up underlined; it compiles with ``\\usepackage{booktabs}`` alone."""
    spec = "".join("l" if _is_text(c) else "r" for c in table.columns)
    lines = [
        f"% gradbench: {table.title}. Needs \\usepackage{{{','.join(LATEX_PACKAGES)}}}.",
        *(f"% {note}" for note in table.notes),
        "\\begin{table}[htbp]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(table.title)}.{_caption_marks(table)}}}",
        f"\\label{{{latex_label(table)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(cells) + " \\\\" for cells in _body(table, latex=True)]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _caption_marks(table: Table) -> str:
    """What the marks of a compared table mean, for its caption."""
    if not table.marks:
        return ""
    several = any(m.p_value is not None for m in table.marks.values())
    tied = " $^{\\approx}$: not distinguishable from the best (paired t-test over seeds)." if (
        several) else ""
    return f" Mean $\\pm$ 95\\,\\% interval; best in bold, second underlined.{tied}"


def _float(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return format(float(value), ".10g")


def raw(value: Value, part: str = CELL) -> str:
    """A cell as CSV text: a mean (or bound) at full precision, a text, or empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Rank):
        return _float(value.mean)
    if isinstance(value, Estimate):
        if value.n == 0:
            return value.status
        return _float({LOW: value.low, HIGH: value.high}.get(part, value.mean))
    return format(float(value), ".10g")


def _write(rows: list[list[str]]) -> str:
    stream = io.StringIO()
    writer = csv_module.writer(stream, lineterminator="\n")
    writer.writerows(rows)
    return stream.getvalue()


def csv(table: Table) -> str:
    """CSV of the table as shown, numbers at 10 significant digits; empty where not measured."""
    body = [[raw(v, c.part) for v, c in zip(row, table.columns)] for row in table.rows]
    return _write([table.headers, *body])


def _interval(value: Estimate) -> str:
    if value.over_seeds:
        return "95% t over seeds"
    return "95% within the seed" if math.isfinite(value.low) else ""


def tidy_csv(table: Table) -> str:
    """One line per measured cell and per average rank: the row's key columns, the quantity
    (its column), mean, ci_low, ci_high (the interval named in ``interval``), n, the seeds, the
    lost seeds, the rank's SE, and whether it is the best or indistinguishable from it with the
    paired test's p-value."""
    keys = [j for j, c in enumerate(table.columns) if c.key] or [0]
    lines = [[table.columns[j].label for j in keys] + list(TIDY_FIELDS)]
    for i, row in enumerate(table.rows):
        names = [raw(row[j]) for j in keys]
        for j, (value, column) in enumerate(zip(row, table.columns)):
            if column.part not in (CELL, MEAN) or j in keys:
                continue
            mark = table.marks.get((i, j))
            tested = mark is not None and mark.kind != UNTESTED
            flags = [
                "" if mark is None else str(mark.kind == BEST).lower(),
                str(mark.kind == TIED).lower() if tested else "",
                _float(mark.p_value) if mark is not None else "",
            ]
            if isinstance(value, Estimate):
                seeds = " ".join(str(s) for s in value.values)
                lost = " ".join(f"{s}:{status}" for s, status in value.lost.items())
                stats = [value.status, _float(value.mean), _float(value.low),
                         _float(value.high), _interval(value) if value.n else "", str(value.n),
                         seeds, lost, ""]
            elif isinstance(value, Rank):
                seeds = " ".join(str(s) for s in value.per_seed)
                stats = ["ok", _float(value.mean), "", "", "", str(value.n), seeds, "",
                         _float(value.se)]
            else:
                continue
            lines.append([*names, column.label, *stats, *flags])
    return _write(lines)
