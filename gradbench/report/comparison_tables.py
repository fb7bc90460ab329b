"""Ours against the papers: each published figure of :data:`gradbench.report.paper.
PUBLISHED_FIGURES` beside the same quantity of the run at the papers' settings, and the distance.

The distance is ours / published for ratios (Kingma et al.'s Table 1 variance ratios, the
per-epoch speed-up) and ours − published in nats for log-likelihoods (the thesis' Table 5.1),
computed seed by seed; the notes say why the two may differ. A figure is set against the rows
of the profile it names: the run at the papers' settings
(:data:`gradbench.report.paper.COMPARED_PROFILE`) or at ARM's protocol
(:data:`gradbench.report.paper.ARM_PROFILE`), or that profile's run with a model option changed
where a figure measures the cause of a distance.
"""

from __future__ import annotations

import pandas as pd

from gradbench.experiments.metrics import (
    ELBO,
    IW_BOUND,
    IW_BOUND_VALID_TRACKED,
    KL,
    RECONSTRUCTION_LL,
    TEMPERATURE,
)
from gradbench.measure.paired_variance import EXPERIMENT as PAIRED
from gradbench.measure.variance import DIGEST_COLUMN
from gradbench.models.base import get_model_class
from gradbench.options import resolve_options
from gradbench.profiles import CUSTOM_SUFFIX, PROFILES
from gradbench.report import paper
from gradbench.report.aggregate import estimate, monotone, ratio
from gradbench.report.notes import at_one_checkpoint
from gradbench.report.render import INTERVAL, display
from gradbench.report.rows import (
    VARIANCE,
    Outcomes,
    epoch_label,
    outcomes,
    prepare_rows,
    select,
)
from gradbench.report.table import Column, Table, Value, assemble
from gradbench.report.variance_tables import paired_excess
from gradbench.results import row_options

RATIO = "ratio"
DIFFERENCE = "difference"
DISTANCES = (RATIO, DIFFERENCE)
"""How a published figure's distance is measured: ours / published, or ours − published."""


def measured(rows: pd.DataFrame, measure: paper.Measure) -> Outcomes:
    """Per seed, the stored value of ``measure``."""
    criteria = {
        key: value
        for key, value in (("param_group", measure.param_group),
                           ("batch_size", measure.batch_size), ("epoch", measure.epoch))
        if value is not None
    }
    return outcomes(rows, measure.experiment, measure.model, measure.estimator,
                    metric=measure.metric, **criteria)


def ours(rows: pd.DataFrame, figure: paper.PublishedFigure) -> Outcomes:
    """Per seed, our quantity for ``figure``: its measure, divided by ``per`` for a ratio (with
    the interval of :func:`gradbench.report.aggregate.ratio` from the two cells' intervals)."""
    found = measured(rows, figure.ours)
    if figure.per is None:
        return found
    return ratio(found, measured(rows, figure.per))


def distance(found: Outcomes, figure: paper.PublishedFigure) -> Outcomes:
    """Per seed, ours / published (``ratio``) or ours − published (``difference``), each with
    ours' interval carried through."""
    if figure.distance not in DISTANCES:
        raise ValueError(f"unknown distance {figure.distance!r}; valid: {', '.join(DISTANCES)}")
    if figure.distance == RATIO:
        return monotone(lambda value: value / figure.value, found)
    return monotone(lambda value: value - figure.value, found)


def thesis_kl_notes(rows: pd.DataFrame) -> tuple[str, ...]:
    """Our KL term beside Table 5.1's rows (the thesis reports none), per row and split at its
    length, the mean over seeds with its t-interval; none where no row was measured."""
    found = []
    for row, name in paper.thesis_estimators().items():
        parts = []
        for split in ("train", "valid"):
            kl = estimate(measured(rows, paper.thesis_kl(name, split)))
            if kl is not None and kl.values:
                bounds = (f" [{display(kl.low, 'fixed2')}, {display(kl.high, 'fixed2')}]"
                          if kl.over_seeds else "")
                parts.append(f"{split} {display(kl.mean, 'fixed2')}{bounds}")
        if parts:
            found.append(f"{row} ({name}) {', '.join(parts)}")
    if not found:
        return ()
    return (
        f"Ours, the KL(q(y|x) ‖ uniform) term at {paper.NITTA_2017_EPOCHS} epochs, nats, the "
        f"mean over seeds [95 % t-interval] (Table 5.1 reports neither KL nor ELBO): "
        f"{'; '.join(found)}.",
    )


def paired_size_notes(rows: pd.DataFrame) -> tuple[str, ...]:
    """Where Table 1's single / separate ratio R sits against ours: with the excess per example
    pair e that ours measured (constant in M, :func:`gradbench.report.variance_tables.
    paired_excess`), R = 1 + (M − 1) e at M = 1 + (R − 1) / e examples per minibatch, the
    interval from e's; the paper does not state its M."""
    published = paper.KINGMA_2015_TABLE1
    parts = []
    for excess in paired_excess(rows, paper.KINGMA_2015_MODEL):
        key = (excess.group, int(excess.epoch))
        if key not in published["reparam"] or not excess.low > 0:
            continue
        ratio_published = published["reparam"][key] / published["reparam-per-example"][key]
        size = 1 + (ratio_published - 1) / excess.mean
        low, high = 1 + (ratio_published - 1) / excess.high, 1 + (ratio_published - 1) / excess.low
        parts.append(f"{excess.group}, {epoch_label(excess.epoch)}: R = "
                     f"{display(ratio_published, 'fixed2')} at M = {size:,.0f} [{low:,.0f}, "
                     f"{high:,.0f}]")
    if not parts:
        return ()
    return (
        "Table 1's single / separate ratio R against ours: at our checkpoint R grows as "
        "1 + (M − 1) e, e the excess per example pair measured paired (variance page), so the "
        f"published R is ours at {'; '.join(parts)} examples per minibatch (ours: M = "
        f"{paper.TABLE_BATCH_SIZE}); the paper does not state its M, and a checkpoint of other "
        "dropout rates has another e.",
    )


def paired_checkpoint_notes(rows: pd.DataFrame) -> tuple[str, ...]:
    """Where Table 1's paired single / separate ratio was measured at another checkpoint than
    the variance cells of the same epoch: each ratio stays within one checkpoint, and the note
    names both digests and the machines that trained them (one seed and one set of settings
    train other parameters on a CPU that rounds otherwise)."""
    if DIGEST_COLUMN not in rows:
        return ()
    model = paper.KINGMA_2015_MODEL
    paired = select(rows, experiment=PAIRED, model=model).dropna(subset=[DIGEST_COLUMN])
    variance = select(rows, experiment=VARIANCE, model=model).dropna(subset=[DIGEST_COLUMN])

    def named(cells: pd.DataFrame) -> str:
        machines = cells.groupby(DIGEST_COLUMN)["device_name"].agg(lambda names: ", ".join(
            sorted(set(names.astype(str)))))
        return "; ".join(f"digest {digest[:8]} ({machine})" for digest, machine in
                         machines.items())

    parts = []
    for (epoch, seed), ours in paired.groupby(["epoch", "seed"], sort=True):
        beside = variance[(variance["epoch"] == epoch) & (variance["seed"] == seed)]
        if beside.empty or set(ours[DIGEST_COLUMN]) == set(beside[DIGEST_COLUMN]):
            continue
        parts.append(f"{epoch_label(epoch)}, seed {int(seed)}: paired at {named(ours)}, the "
                     f"variance cells at {named(beside)}")
    if not parts:
        return ()
    return (
        "Table 1's paired single / separate ratio and the variance ratios beside it come from "
        f"different checkpoints of one seed and one set of settings ({'; '.join(parts)}): each "
        "ratio compares cells of one checkpoint only, and the two are not compared with each "
        "other.",
    )


def compared_rows(rows: pd.DataFrame, profile: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The rows of ``profile`` that a figure may be set against, and the notes naming the
    variance cells left out: a ratio of variances takes cells of one set of parameters only
    (:func:`gradbench.report.notes.at_one_checkpoint`)."""
    compared = rows[rows["profile"] == profile]
    variance = compared["experiment"] == VARIANCE
    kept, left_out = at_one_checkpoint(compared[variance])
    return pd.concat([compared[~variance], kept]), left_out


CELL_CONDITIONS = {"dataset": "data", "binarization": "binarization",
                   "batch_size": "minibatch size", "seed": "seed"}
"""What a cell of changed model options must share with the profile's cell of its estimator to
be set beside it (each as the rows stored it, else the profile's), with its last epoch."""
BEFORE_TRAINING = (ELBO, KL, RECONSTRUCTION_LL, IW_BOUND, IW_BOUND_VALID_TRACKED)
"""What a training cell evaluates at epoch 0, before any step, that its learning signal does not
change: equal bit for bit in two cells of one seed, initialisation, data and evaluation."""
SCHEDULE = TEMPERATURE
"""A relaxed estimator's temperature by epoch: equal in two cells of one schedule."""


def _resolved(network: type, text: object) -> dict[str, object] | None:
    """A row's stored model options resolved by today's model; None where none were stored or
    today's model no longer has one of them."""
    options = row_options(text)
    if options is None:
        return None
    try:
        return resolve_options(network, options)
    except ValueError:
        return None


def _commit(commit: str) -> str:
    """A stored git commit as a note names it: seven hex digits, ``-dirty`` kept."""
    return commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")


def _by_quantity(frame: pd.DataFrame, metrics: tuple[str, ...] | str,
                 epoch: int | None = None) -> pd.Series:
    """``frame``'s values of ``metrics`` (at ``epoch`` alone, if given), indexed by parameter
    group, epoch and metric, for comparing two cells quantity by quantity."""
    chosen = frame[frame["metric"].isin([metrics] if isinstance(metrics, str) else metrics)]
    if epoch is not None:
        chosen = chosen[chosen["epoch"] == epoch]
    return chosen.set_index(["param_group", "epoch", "metric"])["value"]


def _same_where_both(ours: pd.Series, theirs: pd.Series) -> bool:
    """True when the two series are equal, bit for bit, at every index both hold."""
    common = ours.index.intersection(theirs.index)
    return bool((ours[common] == theirs[common]).all())


def variant_rows(
    stored: pd.DataFrame, compared: pd.DataFrame, figure: paper.PublishedFigure
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The rows ``figure`` sets against its published figure when it names model options:
    the one cell of ``figure.profile``'s run with those options changed (``NAME+custom``) whose
    stored network is the profile cell's with ``figure.model_options`` applied, and which shares
    with that cell (``compared``: the profile's rows) its data, binarization, minibatch size,
    seed, last epoch, temperature schedule and evaluation before training, bit for bit; and the
    notes: the code that made it where it is not the profile cell's, or why none is shown."""
    empty = stored.iloc[:0]
    model, estimator = figure.ours.model, figure.ours.estimator
    beside = compared[(compared["experiment"] == figure.ours.experiment)
                      & (compared["model"] == model) & (compared["estimator"] == estimator)]
    if "model_options" not in stored or beside.empty:
        return empty, ()
    network = get_model_class(model)
    profile = PROFILES[figure.profile]
    theirs = {text for text in beside["model_options"] if text}
    base = (_resolved(network, next(iter(theirs))) if len(theirs) == 1 else None) or (
        resolve_options(network, profile.options_for(model)))
    wanted = resolve_options(network, base | dict(figure.model_options))
    custom = stored[(stored["profile"] == f"{figure.profile}{CUSTOM_SUFFIX}")
                    & (stored["experiment"] == figure.ours.experiment)
                    & (stored["model"] == model) & (stored["estimator"] == estimator)]
    custom = custom[custom["model_options"].map(
        lambda text: _resolved(network, text) == wanted).astype(bool)]
    if custom.empty:
        return empty, ()
    label = f"'{figure.figure}'"
    if custom["config_hash"].nunique() > 1:
        return empty, (
            f"{label}: several cells of those options are stored "
            f"({', '.join(sorted(custom['config_hash'].unique()))}); none is shown.",)
    prepared = prepare_rows(custom, f"{figure.profile}{CUSTOM_SUFFIX}")
    defaults = {"dataset": {profile.dataset}, "binarization": {profile.binarization}}

    def values(frame: pd.DataFrame, column: str) -> set[object]:
        return {value for value in frame[column].dropna() if value != ""} or (
            defaults.get(column, set()))

    differs = [name for column, name in CELL_CONDITIONS.items()
               if values(prepared, column) != values(beside, column)]
    if prepared["epoch"].max() != beside["epoch"].max():
        differs.append("last epoch")
    if not _same_where_both(_by_quantity(prepared, SCHEDULE), _by_quantity(beside, SCHEDULE)):
        differs.append("temperature schedule")
    start, their_start = (_by_quantity(frame, BEFORE_TRAINING, epoch=0)
                          for frame in (prepared, beside))
    if start.index.intersection(their_start.index).empty or not _same_where_both(
            start, their_start):
        differs.append("evaluation before training")
    if differs:
        return empty, (
            f"{label}: the cell of those options differs from the {figure.profile} profile's "
            f"{estimator} cell in {', '.join(differs)}; it is not shown.",)
    versions = sorted(set(prepared["code_version"]))
    their_versions = sorted(set(beside["code_version"]))
    if versions == their_versions:
        return prepared, ()
    commits = sorted({_commit(commit) for commit in prepared["git_commit"] if commit})
    their_commits = sorted({_commit(commit) for commit in beside["git_commit"] if commit})
    return prepared, (
        f"{label}: its cell was computed by code {', '.join(versions)} (commit "
        f"{', '.join(commits) or 'unknown'}), the {figure.profile} profile's {estimator} cell by "
        f"{', '.join(their_versions)} (commit {', '.join(their_commits) or 'unknown'}).",)


def comparison_table(rows: pd.DataFrame, stored: pd.DataFrame | None = None) -> Table | None:
    """Every published figure with ours and the distance, for each profile whose rows the
    figures name (the papers' settings; ARM's protocol) that measured at least one of them;
    figures it did not measure (yet) show no value, but for those of changed model options
    (a measured cause), shown only where ``stored``, the store's rows as loaded, holds their
    cell (:func:`variant_rows`)."""
    by_profile = {
        profile: compared_rows(rows, profile)
        for profile in dict.fromkeys(figure.profile for figure in paper.PUBLISHED_FIGURES)
    }
    variant_notes: list[str] = []
    found = []
    for figure in paper.PUBLISHED_FIGURES:
        figure_rows = by_profile[figure.profile][0]
        if figure.model_options:
            figure_rows, notes = (variant_rows(stored, figure_rows, figure) if stored is not None
                                  else (figure_rows.iloc[:0], ()))
            variant_notes.extend(notes)
        found.append((figure, ours(figure_rows, figure)))
    shown = {figure.profile for figure, values in found if values}
    found = [(figure, values) for figure, values in found
             if figure.profile in shown and (values or not figure.model_options)]
    if not found:
        return None
    table_rows: list[list[Value]] = []
    for figure, values in found:
        gap = distance(values, figure)
        table_rows.append([
            figure.source.label,
            figure.figure,
            figure.value,
            estimate(values),
            estimate(gap) if figure.distance == RATIO else None,
            estimate(gap) if figure.distance == DIFFERENCE else None,
        ])
    columns = [
        Column("paper"),
        Column("published figure", key=True),
        Column("published", "fixed3"),
        Column("ours", "fixed3", part=INTERVAL),
        Column("ours / published", "fixed3", part=INTERVAL),
        Column("ours - published (nats)", "fixed2"),
    ]
    reasons = dict.fromkeys(
        text for figure, _ in found for text in (figure.setting, figure.reason) if text)
    profiles = " and ".join(sorted(shown))
    notes = (
        f"Ours: the rows of the {profiles} profile{'s' if len(shown) > 1 else ''} (each figure's "
        "protocol below), seed by seed; a ratio of ours is taken within each seed. [Brackets]: "
        "the 95 % interval, over seeds with two or more, else the seed's own (for a ratio of two "
        "cells, the delta method on the log scale from both cells' intervals, as if independent; "
        "wider than the truth where they share minibatches). Published: the authors' figures, "
        "their hardware and code.",
        *reasons,
        *dict.fromkeys(note for profile in sorted(shown)
                       for note in paper.PROFILE_NOTES.get(profile, ())),
        *paired_size_notes(by_profile[paper.COMPARED_PROFILE][0]),
        *paired_checkpoint_notes(by_profile[paper.COMPARED_PROFILE][0]),
        *thesis_kl_notes(by_profile[paper.COMPARED_PROFILE][0]),
        *(note for profile in sorted(shown) for note in by_profile[profile][1]),
        *variant_notes,
    )
    return assemble(
        "comparison", "Ours against the papers' published figures", columns, table_rows, notes
    )
