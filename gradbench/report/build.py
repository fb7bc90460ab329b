"""Write every report from stored result rows: tables, figures, the index and the references.

Layout of the output folder::

    README.md          index: provenance header, conventions, one section per report, citation
    references.bib     BibTeX for gradbench and every paper quoted
    tables/NAME.md     Markdown (tabulate)      tables/NAME.tex  booktabs tabular, for \\input
    tables/NAME.csv    the table as shown, full precision
    tables/NAME.tidy.csv  one line per measured cell: mean, ci_low, ci_high, n, seeds, marks
    figures/NAME.png   figures/NAME.pdf

Everything is a function of the stored rows (the applicability matrix and the estimators'
marks too: they are stored with the run): no clock is read, so ``gradbench report`` rebuilds the same tables byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradbench.code_version import PLUGINS_COLUMN, gradbench_version
from gradbench.measure.variance_stats import INTERVAL_METHOD
from gradbench.report import paper
from gradbench.report import plots as plot_builders
from gradbench.report.aggregate import ALPHA, LEVEL
from gradbench.report.notes import seed_phrase
from gradbench.report.plots import Plot
from gradbench.report.rows import prepare_rows, seeds_of
from gradbench.report.table import Table
from gradbench.report.tables import all_tables

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
    f"Seeds: with several, a cell is the mean over seeds ± the half-width of its "
    f"{100 * LEVEL:.0f} % t-interval over the n seeds (Student's t, n − 1 degrees of freedom); "
    "with one, that seed's value. In each table with a comparison metric (its notes say which, "
    "and which way is better) the best row is in bold and, over several seeds, the rows a "
    f"paired t-test over seeds (scipy.stats.ttest_rel, two-sided, α = {ALPHA:g}; variances "
    "and seconds on log values) cannot tell from it carry ≈; `avg. rank` is the mean over seeds "
    "of each row's rank within the seed, with its standard error sd/√n. Diverged and failed "
    "seeds are never averaged in.",
)

SECTIONS: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
    (
        "Ours against the papers",
        "Each published figure beside the same quantity of this run at the papers' settings, and "
        "the distance: ratios for Kingma et al.'s Table 1 and the per-epoch speed-up, nats for "
        "log-likelihoods; the notes say why they may differ.",
        lambda name: name == "comparison",
    ),
    (
        "Timing",
        "Seconds per training epoch, as in Kingma, Salimans & Welling (2015): separate weight "
        "samples per example against the local reparameterization trick.",
        lambda name: name.startswith("timing"),
    ),
    (
        "Gradient variance",
        "Average variance of minibatch gradient estimates by estimator and training checkpoint, "
        "like Kingma et al.'s Table 1; the VAEs' encoder and decoder likewise.",
        lambda name: name.startswith("variance_") and name not in (
            "variance_slopes", "variance_decomposition"
        ),
    ),
    (
        "Variance against minibatch size",
        "Log–log plots of variance against minibatch size with fitted slopes; the noise / data "
        "decomposition; the signal-to-noise ratio.",
        lambda name: name in ("variance_slopes", "variance_decomposition")
        or "_vs_batch_" in name,
    ),
    (
        "Bias against the exact gradient",
        "Relative bias, cosine to the exact gradient, MSE and relative standard deviation of each "
        "estimator on the models' small oracle configurations (enumeration or quadrature).",
        lambda name: name == "bias",
    ),
    (
        "Variance at matched cost",
        "Each estimator's gradient variance times its decoder evaluations per gradient (matched "
        "evaluations) and times its seconds per gradient (matched wall-clock).",
        lambda name: name == "work_normalised_variance",
    ),
    (
        "ELBO and training",
        "Final reconstruction log-likelihood, ELBO and importance-weighted bound (the categorical "
        "VAE like the thesis' Table 5.1), classification error, and training curves against "
        "epochs and wall-clock time.",
        lambda name: name.startswith(("elbo_", "classification_", "training_")),
    ),
    (
        "Annealing schedules",
        "The Gumbel-softmax temperature and target propagation's KL weight actually in force at "
        "each reported epoch and checkpoint.",
        lambda name: name == "schedules",
    ),
    (
        "Applicability",
        "Which estimator applies to which model (from the node kinds each supports).",
        lambda name: name == "applicability",
    ),
    (
        "Diverged, failed and skipped cells",
        "Cells whose gradients or losses became NaN or inf, tasks that failed after their "
        "retries, and cells skipped as too long for the device they were planned on (with their "
        "estimated time), per seed; recorded, and the run went on.",
        lambda name: name == "diverged",
    ),
)


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
    for table in all_tables(prepared):
        report.tables.append(table)
        report.paths += write_table(table, root / TABLES_DIR, table_formats)
    plots: list[Plot] = []
    if figure_formats:
        for plot in plot_builders.all_plots(prepared):
            report.paths += plot.save(root / FIGURES_DIR, figure_formats)
            plots.append(plot)
    report.plots = [p.name for p in plots]
    bib = root / "references.bib"
    write_text(bib, references(prepared))
    index = root / "README.md"
    write_text(index, index_markdown(prepared, report.tables, plots, table_formats, figure_formats))
    report.paths += [bib, index]
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
    """The provenance header: when, which commit, device, torch, profile, dataset and seeds."""
    if rows.empty:
        return ["No stored results: run `python -m gradbench all` first."]
    created = sorted(v for v in rows["created_at"] if v)
    when = f"{created[0]} to {created[-1]}" if created else "unknown"
    seeds = seeds_of(rows)
    devices = sorted(
        {f"{d} ({n})" for d, n in zip(rows["device"].astype(str), rows["device_name"].astype(str))}
    )
    cells = rows[["experiment", "model", "estimator"]].drop_duplicates()
    fields = [
        ("date (UTC, first to last row)", when),
        ("git commit", _values(rows, "git_commit")),
        ("code versions", code_versions(rows)),
        *([("plugins", used)] if (used := plugins_used(rows)) else []),
        ("device", "; ".join(devices)),
        ("torch version", _values(rows, "torch_version")),
        ("profile", _values(rows, "profile")),
        ("dataset", _values(rows, "dataset")),
        ("seeds", ", ".join(str(s) for s in seeds) + _seeds_by_cell(rows) or "unknown"),
        ("result rows", f"{len(rows)} rows in {len(cells)} cells"),
    ]
    lines = ["| provenance | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in fields]
    return lines


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


def seeds_lines(rows: pd.DataFrame) -> list[str]:
    """The header's statement of how many seeds the reports aggregate and what that means."""
    seeds = seeds_of(rows)
    if not seeds:
        return []
    listed = ", ".join(str(s) for s in seeds)
    sets = seed_sets(rows)
    if len(sets) > 1:
        sizes = sorted(len(k) for k in sets)
        text = (
            f"**{sizes[0]} to {seed_phrase(sizes[-1])}** ({listed}), cell by cell: "
            + "; ".join(f"{count} cell{'s' * (count > 1)} of {seed_phrase(len(k))} ({_listed(k)})"
                        for k, count in sets.items())
            + f". A cell of several seeds is the mean over them ± the half-width of its "
            f"{100 * LEVEL:.0f} % t-interval; a cell of one seed is that seed's value (each "
            "table's notes say which)."
        )
    elif len(seeds) == 1:
        text = (
            f"**1 seed** ({listed}): every number is that seed's measurement; no interval over "
            "seeds and no test between rows is possible with one seed."
        )
    else:
        text = (
            f"**{seed_phrase(len(seeds))}** ({listed}): every cell is the mean over seeds ± the "
            f"half-width of its {100 * LEVEL:.0f} % t-interval over them; rows are compared by "
            "paired t-tests over seeds (see Conventions and each table's notes)."
        )
    return [text, ""]


def _table_block(table: Table, formats: tuple[str, ...]) -> list[str]:
    lines = [f"### {table.title}", "", table.markdown().rstrip("\n"), ""]
    lines += [f"*{note}*" + "  " for note in table.notes]
    if formats:
        suffixes = [*formats, *([TIDY_SUFFIX] if "csv" in formats and table.measured else [])]
        links = ", ".join(
            f"[{s.replace('.csv', ' csv')}]({TABLES_DIR}/{table.name}.{s})" for s in suffixes
        )
        lines += [f"Files: {links}."]
    return lines + [""]


def _plot_block(plot: Plot, formats: tuple[str, ...]) -> list[str]:
    stem = f"{FIGURES_DIR}/{plot.name}"
    lines = [f"### {plot.title}", ""]
    if "png" in formats:
        lines += [f"![{plot.title}]({stem}.png)", ""]
    links = ", ".join(f"[{s}]({stem}.{s})" for s in formats)
    return lines + [f"*{plot.caption}* Files: {links}.", ""]


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


def index_markdown(
    rows: pd.DataFrame,
    tables: list[Table],
    plots: Iterable[Plot],
    table_formats: tuple[str, ...] = TABLE_FORMATS,
    figure_formats: tuple[str, ...] = FIGURE_FORMATS,
) -> str:
    """The reports' README: provenance, conventions, one section per report, how to cite."""
    plots = list(plots)
    lines = [
        "# gradbench reports",
        "",
        "Generated by `python -m gradbench all` (rebuild with `python -m gradbench report`) from "
        "the stored result rows alone.",
        "",
        *seeds_lines(rows),
        *provenance_lines(rows),
        "",
        "## Conventions",
        "",
        *(f"- {c}" for c in CONVENTIONS),
        "",
    ]
    placed: set[str] = set()
    for title, intro, belongs in SECTIONS:
        chosen_tables = [t for t in tables if belongs(t.name)]
        chosen_plots = [p for p in plots if belongs(p.name)]
        if not chosen_tables and not chosen_plots:
            continue
        lines += [f"## {title}", "", intro, ""]
        for table in chosen_tables:
            lines += _table_block(table, table_formats)
            placed.add(table.name)
        for plot in chosen_plots:
            lines += _plot_block(plot, figure_formats)
            placed.add(plot.name)
    rest_tables = [t for t in tables if t.name not in placed]
    rest_plots = [p for p in plots if p.name not in placed]
    if rest_tables or rest_plots:
        lines += ["## Other", ""]
        for table in rest_tables:
            lines += _table_block(table, table_formats)
        for plot in rest_plots:
            lines += _plot_block(plot, figure_formats)
    lines += [
        "## How to cite",
        "",
        "If you use these measurements, cite gradbench (with the commit above) and the papers "
        "whose settings and published figures appear beside ours. The published figures are the "
        "authors' own, on their hardware; our numbers come from the run stamped above. All entries "
        "are in [references.bib](references.bib).",
        "",
        "```bibtex",
        gradbench_bibtex(rows),
        "",
        *("\n".join([source.bibtex, ""]) for source in paper.SOURCES),
        "```",
        "",
    ]
    return "\n".join(lines)
