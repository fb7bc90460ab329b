"""Write every report from stored result rows: tables, figures, the index and the references.

Layout of the output folder::

    README.md          front page: headlines, one summary table per model, provenance, links
    conventions.md     what every number, interval, mark and rank means, said once
    SECTION.md         one page per section (variance.md, bias.md, timing.md, training.md, ...):
                       its tables, each with at most two notes of its own, and its figures
    references.bib     BibTeX for gradbench and every paper quoted
    tables/NAME.md     Markdown (tabulate)      tables/NAME.tex  a complete LaTeX table float
    tables/NAME.csv    the table as shown, full precision
    tables/NAME.tidy.csv  one line per measured cell: mean, ci_low, ci_high, n, seeds, marks
    figures/NAME.png   figures/NAME.pdf

Everything is a function of the stored rows (the applicability matrix and the estimators'
marks too: they are stored with the run): no clock is read, so ``gradbench report`` rebuilds the same tables byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gradbench.code_version import PLUGINS_COLUMN, gradbench_version
from gradbench.data import binarization_phrase
from gradbench.measure.variance_stats import INTERVAL_METHOD
from gradbench.report import paper
from gradbench.report import plots as plot_builders
from gradbench.report.aggregate import ALPHA, LEVEL
from gradbench.report.bias_tables import ROUND_OFF
from gradbench.report.notes import seed_phrase
from gradbench.report.plots import Plot
from gradbench.report.render import TIED_MARK, display
from gradbench.report.rows import models_of, prepare_rows, seeds_of
from gradbench.report.summary_tables import SUMMARISED, Headline, summary_table
from gradbench.report.table import BIASED, BIASED_NOTE, Table
from gradbench.report.tables import owned_tables

if TYPE_CHECKING:
    from gradbench.experiments.base import Experiment

TABLES_DIR = "tables"
FIGURES_DIR = "figures"
TABLE_FORMATS = ("md", "tex", "csv")
TIDY_SUFFIX = "tidy.csv"
"""The tidy CSV beside each table's CSV: one line per measured cell."""
FIGURE_FORMATS = ("png", "pdf")

CONVENTIONS = (
    "A minibatch gradient is the gradient of the *mean* per-example loss over the minibatch "
    "(negative ELBO for an autoencoder; cross-entropy plus KL / N for a classifier).",
    "Gradient variance of a parameter group = the mean over the group's parameters of each "
    "parameter's sample variance over independent minibatch gradients (fresh data and fresh "
    "noise), as in Kingma et al. (2015), Table 1. `top` and `bottom` are a model's last and "
    "first weight matrices (their means under weight noise); `encoder` and `decoder` an "
    "autoencoder's parameters.",
    "The Table-1 analogue uses minibatches of 100 (the paper does not state its size) where that "
    "size was measured, otherwise the nearest measured size, stated under each table.",
    "Noise / data parts: law of total variance, "
    "Var[g] = E_B[Var_eps(g | B)] + Var_B(E_eps[g | B]). "
    "SNR = root mean square over the group of |E[g]| / std[g] per parameter (Rainforth et al. "
    "2018): each parameter's squared SNR is debiased (mean^2 minus the mean's sampling "
    "variance, over std^2 with a degrees-of-freedom correction of its Jensen bias) and not "
    "clamped, so the group's mean square (snr_squared in the rows) is unbiased and does not "
    "fall with the number of draws as |mean|/std does; the SNR is its root, clamped at 0 once.",
    f"Intervals of the variance rows are 95 %: {INTERVAL_METHOD}. Each interval contains its "
    "point estimate; SNR intervals lie in [0, inf).",
    "Seconds per epoch: a full pass of optimizer steps over the training set after warm-up, median "
    "over repeats, the device synchronised before the clock is read; `extrapolated` marks epochs "
    "timed on a number of steps and scaled to the full pass.",
    "Log-likelihoods and bounds are in nats per example; higher is better unless a column says "
    "otherwise. `diverged` marks a cell whose gradients or losses became NaN or inf.",
    "Columns labelled *published* hold the papers' own figures, measured on the authors' "
    "hardware with their code and conventions: they sit beside ours and are not our results.",
    "Every number comes with its 95 % interval. With several seeds a cell is the mean over its n "
    f"seeds ± the half-width of the {100 * LEVEL:.0f} % t-interval over them (Student's t, "
    "n − 1 degrees of freedom), \"(n=2)\" where a table's seed counts differ; with one seed it is "
    "that seed's value ± half the width of the seed's own stored interval (for variances the "
    "interval over minibatches, for bias the bootstrap over draws; it may be asymmetric, and "
    "the tidy CSV beside each table gives its bounds). Diverged and failed seeds are never "
    "averaged in: a cell says how many it lost.",
    "Bold: the best row of a compared column (each table says what it compares and which way is "
    "better); ≈: a paired t-test over seeds (scipy.stats.ttest_rel, two-sided, "
    f"α = {ALPHA:g}, pairs formed by seed, variances and seconds on log values) cannot tell it "
    "from the best; LaTeX underlines the runner-up. `avg. rank`: the mean over seeds of each "
    "row's rank within the seed (1 = best, averaged over the compared columns), with its "
    "standard error sd/√n in parentheses. The exact gradient ranks first wherever it runs. A "
    "diverged or non-finite cell is never marked or ranked, and an estimator that diverged on "
    "every seed has no rank.",
    f"Like with like: a table that compares variance alone leaves biased estimators ({BIASED}) "
    "out of best and ranks; where bias and variance were measured on the same (oracle) "
    "configuration, estimators are ranked by MSE. A relative bias is judged by its interval: "
    f"`biased` only where it excludes 0 (beyond {ROUND_OFF:g}, float64 round-off); over seeds "
    "the unclamped squared bias is averaged and clamped at 0 once.",
)

@dataclass(frozen=True)
class Section:
    """A page of the report: its file, title, one-line introduction and which tables and
    figures (by name) it holds."""

    page: str
    title: str
    intro: str
    belongs: Callable[[str], bool]


SECTIONS: tuple[Section, ...] = (
    Section(
        "comparison.md", "Ours against the papers",
        "Each published figure beside the same quantity of this run at the papers' settings, and "
        "the distance: ratios for Kingma et al.'s Table 1 and the per-epoch speed-up, nats for "
        "log-likelihoods.",
        lambda name: name == "comparison",
    ),
    Section(
        "variance.md", "Gradient variance",
        "Variance of minibatch gradient estimates by estimator and training checkpoint, like "
        "Kingma et al.'s Table 1.",
        lambda name: name.startswith("variance_") and "_vs_batch_" not in name
        and name not in ("variance_slopes", "variance_decomposition"),
    ),
    Section(
        "batch_size.md", "Variance against minibatch size",
        "Log–log plots of variance against minibatch size with fitted slopes, the noise / data "
        "decomposition and the signal-to-noise ratio.",
        lambda name: name in ("variance_slopes", "variance_decomposition")
        or "_vs_batch_" in name,
    ),
    Section(
        "bias.md", "Bias against the exact gradient",
        "Relative bias, cosine, MSE and relative standard deviation against the exact gradient "
        "on the models' small oracle configurations, ranked by MSE.",
        lambda name: name == "bias",
    ),
    Section(
        "matched_cost.md", "Variance at matched cost",
        "Gradient variance times decoder evaluations per gradient and times seconds per "
        "gradient.",
        lambda name: name == "work_normalised_variance",
    ),
    Section(
        "timing.md", "Timing",
        "Seconds per training epoch and per step (Kingma, Salimans & Welling 2015: separate "
        "weight samples against the local reparameterization trick).",
        lambda name: name.startswith("timing"),
    ),
    Section(
        "training.md", "ELBO and training",
        "Bounds and classification error at the end of training, and training curves.",
        lambda name: name.startswith(("elbo_", "classification_", "training_")),
    ),
    Section(
        "schedules.md", "Annealing schedules",
        "The temperature and KL weight in force at each reported epoch and checkpoint.",
        lambda name: name == "schedules",
    ),
    Section(
        "applicability.md", "Applicability",
        "Which estimator applies to which model.",
        lambda name: name == "applicability",
    ),
    Section(
        "lost_cells.md", "Diverged, failed and skipped cells",
        "Cells whose gradients or losses became NaN or inf, tasks that failed after their "
        "retries, and cells skipped as too long for their device, per seed.",
        lambda name: name == "diverged",
    ),
)
OTHER = Section("other.md", "Other tables and figures", "Tables and figures of no section above.",
                lambda name: True)
CONVENTIONS_PAGE = "conventions.md"
SHARED_NOTES_TITLE = "Notes shared by several tables"
"""The conventions page's section of the notes that stand under more than one table."""
SHARED_NOTES_ANCHOR = SHARED_NOTES_TITLE.lower().replace(" ", "-")
"""Its anchor as GitHub and most Markdown renderers slug the heading."""
FRONT_PAGE = "README.md"
NOTES_SHOWN = 2
"""How many of its own notes a table shows under it; the rest fold away."""


@dataclass
class Report:
    """What :func:`build_reports` wrote."""

    out: Path
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # the seeds the reports aggregate


def check_writable(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` if needed and check a file can be written there; else a clear ValueError.

    Called before any computation so a bad ``--out`` fails at once.
    """
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".gradbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"cannot write reports to {str(path)!r}: {reason}") from None
    return path


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The chosen output formats, validated; ValueError naming the valid ones."""
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    valid = TABLE_FORMATS + FIGURE_FORMATS
    for name in chosen:
        if name not in valid:
            raise ValueError(f"unknown format {name!r}; valid: {', '.join(valid)}")
    if not chosen:
        raise ValueError(f"no output format chosen; valid: {', '.join(valid)}")
    return chosen


def build_reports(
    rows: pd.DataFrame,
    out: str | os.PathLike[str],
    profile: str | None = None,
    formats: Iterable[str] = TABLE_FORMATS + FIGURE_FORMATS,
) -> Report:
    """Write every table, figure, the index and the references for ``rows`` into ``out``.

    ``rows``: the tidy rows of ``ResultStore(results).load()``, of one seed or several;
    ``profile`` keeps only that profile's rows (see :func:`gradbench.report.rows.prepare_rows`);
    ``formats``: which of md, tex, csv (tables; csv writes the tidy CSV too) and png, pdf
    (figures) to write. README.md and references.bib are always written.
    """
    chosen = check_formats(formats)
    root = check_writable(out)
    prepared = prepare_rows(rows, profile)
    report = Report(out=root, seeds=seeds_of(prepared))
    table_formats = tuple(f for f in TABLE_FORMATS if f in chosen)
    figure_formats = tuple(f for f in FIGURE_FORMATS if f in chosen)
    owners: dict[str, Experiment | None] = {}
    for experiment, table in owned_tables(prepared, rows):
        owners[table.name] = experiment
        report.tables.append(table)
        report.paths += write_table(table, root / TABLES_DIR, table_formats)
    plots: list[Plot] = []
    if figure_formats:
        for experiment, plot in plot_builders.owned_plots(prepared):
            owners[plot.name] = experiment
            report.paths += plot.save(root / FIGURES_DIR, figure_formats)
            plots.append(plot)
    report.plots = [p.name for p in plots]
    bib = root / "references.bib"
    write_text(bib, references(prepared))
    report.paths.append(bib)
    made = pages(prepared, report.tables, plots, table_formats, figure_formats,
                 plugin_pages(owners))
    for name, text in made.items():
        write_text(root / name, text)
        report.paths.append(root / name)
    return report


def write_text(path: Path, text: str) -> None:
    """Write ``text`` with Unix newlines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as stream:
        stream.write(text)


def write_table(
    table: Table, folder: Path, formats: Iterable[str] = TABLE_FORMATS
) -> list[Path]:
    """Write a table as Markdown, LaTeX and/or CSV (with its tidy CSV); return the paths."""
    render = {"md": table.markdown, "tex": table.latex, "csv": table.csv}
    paths = []
    for suffix in formats:
        path = folder / f"{table.name}.{suffix}"
        write_text(path, render[suffix]())
        paths.append(path)
        if suffix == "csv" and table.measured:
            tidy = folder / f"{table.name}.{TIDY_SUFFIX}"
            write_text(tidy, table.tidy_csv())
            paths.append(tidy)
    return paths


def _values(rows: pd.DataFrame, column: str) -> str:
    present = sorted({str(v) for v in rows[column].dropna() if str(v) not in ("", "nan", "<NA>")})
    return ", ".join(present) if present else "unknown"


def datasets(rows: pd.DataFrame) -> str:
    """Every dataset of the rows with its binarizations (threshold, dynamic or fixed: what the
    pixels became; binary as published for a dataset whose pixels are 0 or 1 already), as the
    cells stored them; a dataset none of whose rows stored one (rows older than the column, the
    catalogue's) by its name alone."""
    named = rows[rows["dataset"] != ""]
    shown = []
    for name, cells in named.groupby("dataset", sort=True):
        ways = sorted({binarization_phrase(str(name), str(how))
                       for how in cells["binarization"] if how})
        shown.append(f"{name} ({', '.join(ways)})" if ways else str(name))
    return ", ".join(shown) or "unknown"


def code_versions(rows: pd.DataFrame) -> str:
    """Every version of gradbench's code the rows come from (their plugins' are under
    ``plugins``), with its row count; a warning when several (a run that kept cells of other
    code with ``--reuse-stale``, or the rows of runs at several commits)."""
    versions = rows["code_version"].replace("", "unknown").map(gradbench_version).value_counts()
    listed = ", ".join(f"{v} ({n} rows)" for v, n in sorted(versions.items()))
    if len(versions) > 1:
        listed += (
            " — rows from more than one code version: each row names the commit that made it "
            "(cells of other code are kept only with --reuse-stale)"
        )
    return listed or "unknown"


def plugins_used(rows: pd.DataFrame) -> str:
    """Every plugin (estimator, model or dataset from another package, with its distribution,
    version and source hash) the rows come from, with its row count; "" when none."""
    if PLUGINS_COLUMN not in rows:
        return ""
    labels = rows[PLUGINS_COLUMN].dropna().astype(str).str.split("; ").explode()
    return ", ".join(f"{label} ({n} rows)" for label, n in sorted(labels.value_counts().items()))


def provenance_lines(rows: pd.DataFrame) -> list[str]:
    """The provenance header: when the run's cells finished, which commit, device, torch,
    profile, dataset, seeds, and how many rows and stored cells."""
    if rows.empty:
        return ["No stored results: run `python -m gradbench all` first."]
    created = sorted(v for v in rows["created_at"] if v)
    when = f"{created[0]} to {created[-1]}" if created else "unknown"
    seeds = seeds_of(rows)
    devices = sorted(
        {f"{d} ({n})" for d, n in zip(rows["device"].astype(str), rows["device_name"].astype(str))}
    )
    fields = [
        ("cells finished (UTC, first to last)", when),
        ("git commit", _values(rows, "git_commit")),
        ("code versions", code_versions(rows)),
        *([("plugins", used)] if (used := plugins_used(rows)) else []),
        ("device", "; ".join(devices)),
        ("torch version", _values(rows, "torch_version")),
        ("profile", _values(rows, "profile")),
        ("dataset", datasets(rows)),
        ("seeds", ", ".join(str(s) for s in seeds) + _seeds_by_cell(rows) or "unknown"),
        ("result rows", f"{len(rows)} rows in {cell_count(rows)} stored cells (one file each: "
                        "an experiment × model × estimator × seed × configuration)"),
    ]
    lines = ["| provenance | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in fields]
    return lines


def cell_count(rows: pd.DataFrame) -> int:
    """The number of stored cells the rows come from: one per configuration hash (a cell's file;
    rows stored without one count by experiment × model × estimator × seed)."""
    keys = rows["config_hash"].where(rows["config_hash"] != "", None)
    fallback = (rows["experiment"].astype(str) + "/" + rows["model"].astype(str) + "/"
                + rows["estimator"].astype(str) + "/" + rows["seed"].astype(str))
    return int(keys.fillna(fallback).nunique())


def seed_sets(rows: pd.DataFrame) -> dict[tuple[int, ...], int]:
    """How many cells (experiment × model × estimator) were measured with each set of seeds,
    the commonest set first."""
    seeded = rows.dropna(subset=["seed"])
    sets = seeded.groupby(["experiment", "model", "estimator"])["seed"].agg(
        lambda s: tuple(sorted({int(v) for v in s}))
    )
    counts = sets.value_counts()
    return {key: int(counts[key]) for key in sorted(counts.index, key=lambda k: (-counts[k], k))}


def _listed(seeds: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in seeds)


def _seeds_by_cell(rows: pd.DataFrame) -> str:
    """" (by cell: …)" where cells were measured with different seeds, else nothing."""
    sets = seed_sets(rows)
    if len(sets) < 2:
        return ""
    return " (by cell: " + "; ".join(
        f"{_listed(seeds)} in {count} cell{'s' * (count > 1)}" for seeds, count in sets.items()
    ) + ")"


def seeds_line(rows: pd.DataFrame) -> str:
    """One line: how many seeds the reports aggregate, and which interval a number carries."""
    seeds = seeds_of(rows)
    if not seeds:
        return ""
    sets = seed_sets(rows)
    listed = ", ".join(str(s) for s in seeds)
    if len(sets) > 1:
        sizes = sorted(len(k) for k in sets)
        count = f"{sizes[0]} to {seed_phrase(sizes[-1])}** ({listed}), cell by cell: " + "; ".join(
            f"{n} cell{'s' * (n > 1)} of {seed_phrase(len(k))} ({_listed(k)})"
            for k, n in sets.items())
    else:
        count = f"{seed_phrase(len(seeds))}** ({listed})"
    interval = ("± the seed's own stored 95 % interval" if len(seeds) == 1 else
                "± the 95 % t-interval over seeds (a one-seed cell: its own stored interval)")
    return f"Seeds: **{count}; every number {interval}."


def _own_notes(table: Table, shared: set[str]) -> list[str]:
    """A table's notes that no other table repeats."""
    return [note for note in table.notes if note not in shared]


def _table_block(table: Table, formats: tuple[str, ...], shared: set[str]) -> list[str]:
    lines = [f"## {table.title}", "", table.markdown().rstrip("\n"), ""]
    own = _own_notes(table, shared)
    lines += [f"*{note}*  " for note in own[:NOTES_SHOWN]]
    if own[NOTES_SHOWN:]:
        lines += ["", "<details><summary>More about this table</summary>", ""]
        lines += [f"- {note}" for note in own[NOTES_SHOWN:]]
        lines += ["", "</details>", ""]
    elsewhere = len(dict.fromkeys(table.notes)) - len(dict.fromkeys(own))
    if elsewhere:
        lines += [f"*{elsewhere} more note{'s' if elsewhere > 1 else ''} on this table, shared "
                  f"with others: [conventions]({CONVENTIONS_PAGE}#{SHARED_NOTES_ANCHOR}).*", ""]
    if formats:
        suffixes = [*formats, *([TIDY_SUFFIX] if "csv" in formats and table.measured else [])]
        links = ", ".join(
            f"[{s.replace('.csv', ' csv')}]({TABLES_DIR}/{table.name}.{s})" for s in suffixes
        )
        lines += [f"Files: {links}."]
    return lines + [""]


def _plot_block(plot: Plot, formats: tuple[str, ...]) -> list[str]:
    stem = f"{FIGURES_DIR}/{plot.name}"
    lines = [f"## {plot.title}", ""]
    if "png" in formats:
        lines += [f"![{plot.title}]({stem}.png)", ""]
    links = ", ".join(f"[{s}]({stem}.{s})" for s in formats)
    return lines + [f"*{plot.caption}* Files: {links}.", ""]


def shared_notes(tables: Iterable[Table]) -> list[str]:
    """Notes that stand under more than one table, in first-seen order: said once, on the
    conventions page."""
    seen: dict[str, int] = {}
    for table in tables:
        for note in dict.fromkeys(table.notes):
            seen[note] = seen.get(note, 0) + 1
    return [note for note, count in seen.items() if count > 1]


def plugin_pages(owners: Mapping[str, Experiment | None]) -> dict[str, Section]:
    """The page of each table or figure (by name) that a plugin's experiment built: one section
    per such experiment, ``NAME.md`` (``experiment_NAME.md`` where the report has a page of that
    name), titled by its ``title`` (else its name) and introduced by its ``summary``; the built-in
    experiments' tables and figures are placed by :data:`SECTIONS`."""
    from gradbench.experiments.registry import BUILTIN  # the experiments import the report

    taken = {FRONT_PAGE, CONVENTIONS_PAGE, OTHER.page, *(s.page for s in SECTIONS)}
    sections: dict[str, Section] = {}
    found: dict[str, Section] = {}
    for name, experiment in owners.items():
        if experiment is None or type(experiment) in BUILTIN:
            continue
        if experiment.name not in sections:
            page = f"{experiment.name}.md"
            sections[experiment.name] = Section(
                page if page not in taken else f"experiment_{page}",
                experiment.title or experiment.name, experiment.summary, lambda _: False)
        found[name] = sections[experiment.name]
    return found


def placement(
    tables: list[Table], plots: list[Plot], own_pages: Mapping[str, Section] | None = None
) -> dict[Section, tuple[list[Table], list[Plot]]]:
    """Each table and figure on exactly one page: its plugin experiment's page in ``own_pages``
    (by name: :func:`plugin_pages`), else the first section it belongs to, else :data:`OTHER`;
    plugins' pages after the built-in sections, sections with nothing left out."""
    own = own_pages or {}
    placed: dict[Section, tuple[list[Table], list[Plot]]] = {}
    for item in [*tables, *plots]:
        section = own.get(item.name) or next((s for s in SECTIONS if s.belongs(item.name)), OTHER)
        chosen_tables, chosen_plots = placed.setdefault(section, ([], []))
        (chosen_tables if isinstance(item, Table) else chosen_plots).append(item)
    order = [*SECTIONS, *dict.fromkeys(own.values()), OTHER]
    return {s: placed[s] for s in order if s in placed}


def gradbench_bibtex(rows: pd.DataFrame) -> str:
    """A BibTeX entry for gradbench, with the commit and year of the rows."""
    created = sorted(v for v in rows["created_at"] if v) if not rows.empty else []
    year = created[-1][:4] if created else "unknown"
    commit = _values(rows, "git_commit") if not rows.empty else "unknown"
    return (
        "@misc{gradbench,\n"
        "  title  = {gradbench: a benchmark and gradient-variance analysis of Monte Carlo "
        "gradient estimators},\n"
        "  author = {{gradbench contributors}},\n"
        f"  year   = {{{year}}},\n"
        "  howpublished = {Software},\n"
        f"  note   = {{commit {commit}}}\n"
        "}"
    )


def references(rows: pd.DataFrame | None = None) -> str:
    """The BibTeX file: gradbench, then every paper the reports quote."""
    frame = rows if rows is not None else pd.DataFrame(columns=["created_at", "git_commit"])
    entries = [gradbench_bibtex(frame), *(source.bibtex for source in paper.SOURCES)]
    return "\n\n".join(entries) + "\n"


def headline_lines(headlines: list[Headline]) -> list[str]:
    """The front page's answers: per model and group, the lowest-variance unbiased estimator."""
    lines = []
    for h in headlines:
        cell = display(h.cell, "sci")
        count = f"{seed_phrase(h.cell.n)}" + (", t-interval over seeds" if h.cell.over_seeds
                                              else ", the seed's own interval")
        lines.append(
            f"- **{h.model}**, {h.group}, M = {h.batch}, after {int(h.epoch)} epochs: lowest "
            f"gradient variance among unbiased estimators: **{h.estimator}**, {cell} (95 %, "
            f"{count})."
        )
    return lines


def front_page(
    rows: pd.DataFrame,
    pages_made: dict[Section, tuple[list[Table], list[Plot]]],
    comparison: Table | None,
) -> str:
    """The report's README: headlines, one summary table per model, links to every section,
    the provenance and how to cite."""
    models = sorted({m for e in SUMMARISED for m in models_of(rows, e)})
    summaries = [found for m in paper.model_order(models)
                 if (found := summary_table(rows, m)) is not None]
    headlines = [h for _, found in summaries for h in found]
    lines = [
        "# gradbench report",
        "",
        "Built from the stored result rows alone (`python -m gradbench report`). "
        + seeds_line(rows)
        + f" What every number means: [conventions]({CONVENTIONS_PAGE}).",
        "",
        *headline_lines(headlines),
        "",
    ]
    if summaries:
        lines += [
            "## Summary by model",
            "",
            "Variance at the headline minibatch size and last checkpoint (bold: lowest among "
            f"unbiased estimators; {TIED_MARK}: not distinguishable from it); relative bias on "
            "the oracle configuration ([interval], `biased` where it excludes 0); the "
            f"end-of-training bound or error; seconds per step. {BIASED_NOTE}",
            "",
        ]
        for table, _ in summaries:
            lines += [f"### {table.title.split(':')[0]}", "", table.markdown().rstrip("\n"), ""]
    if comparison is not None:
        lines += [
            "## Ours against the papers",
            "",
            f"{len(comparison.rows)} comparisons of ours with a published figure: "
            "[comparison](comparison.md).",
            "",
        ]
    lines += ["## Every table and figure", ""]
    for section, (tables, plots) in pages_made.items():
        count = ", ".join(p for p in (
            f"{len(tables)} table{'s' * (len(tables) != 1)}" if tables else "",
            f"{len(plots)} figure{'s' * (len(plots) != 1)}" if plots else "") if p)
        lines.append(f"- [{section.title}]({section.page}) ({count}): {section.intro}")
    lines += [
        f"- [Conventions]({CONVENTIONS_PAGE}): definitions, intervals, marks and ranks, and "
        "the notes several tables share.",
        "",
        "## Provenance",
        "",
        *provenance_lines(rows),
        "",
        "## How to cite",
        "",
        "Cite gradbench with the commit above and the papers whose settings and published "
        "figures appear beside ours (their figures are the authors' own, on their hardware). "
        "BibTeX: [references.bib](references.bib).",
        "",
    ]
    return "\n".join(lines)


def conventions_page(tables: list[Table]) -> str:
    """Every convention, said once, and the notes that stand under several tables."""
    lines = ["# Conventions", "", "[Back to the report](README.md)", ""]
    lines += [f"- {c}" for c in CONVENTIONS]
    shared = shared_notes(tables)
    if shared:
        lines += ["", f"## {SHARED_NOTES_TITLE}", ""]
        for note in shared:
            under = ", ".join(f"`{t.name}`" for t in tables if note in t.notes)
            lines.append(f"- {note} *(Under {under}.)*")
    return "\n".join(lines) + "\n"


def section_page(
    section: Section,
    tables: list[Table],
    plots: list[Plot],
    shared: set[str],
    table_formats: tuple[str, ...],
    figure_formats: tuple[str, ...],
) -> str:
    """One section's page: its tables (each with at most two notes of its own) and figures."""
    lines = [
        f"# {section.title}",
        "",
        f"{section.intro} [Back to the report](README.md); what the numbers, intervals and marks "
        f"mean: [conventions]({CONVENTIONS_PAGE}).",
        "",
    ]
    for table in tables:
        lines += _table_block(table, table_formats, shared)
    for plot in plots:
        lines += _plot_block(plot, figure_formats)
    return "\n".join(lines)


def pages(
    rows: pd.DataFrame,
    tables: list[Table],
    plots: Iterable[Plot],
    table_formats: tuple[str, ...] = TABLE_FORMATS,
    figure_formats: tuple[str, ...] = FIGURE_FORMATS,
    own_pages: Mapping[str, Section] | None = None,
) -> dict[str, str]:
    """Every page of the report by file name: the front page (README.md), the conventions and
    one page per section (``own_pages``: the plugins' experiments', :func:`plugin_pages`); each
    table and figure on exactly one page."""
    made = placement(tables, list(plots), own_pages)
    shared = set(shared_notes(tables))
    comparison = next((t for t in tables if t.name == "comparison"), None)
    found = {FRONT_PAGE: front_page(rows, made, comparison),
             CONVENTIONS_PAGE: conventions_page(tables)}
    for section, (chosen_tables, chosen_plots) in made.items():
        found[section.page] = section_page(section, chosen_tables, chosen_plots, shared,
                                           table_formats, figure_formats)
    return found
