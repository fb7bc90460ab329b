"""Gradient-variance tables: the Table-1 analogue per model, slopes against minibatch size, and
the noise / data decomposition with the signal-to-noise ratio, over seeds.

A model's variance table compares its estimators in every (group, checkpoint) column: lower
variance is better, compared on log variances (a ratio that holds across seeds). Slopes and the
decomposition describe and compare nothing.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from gradbench.experiments.metrics import (
    GRAD_VARIANCE,
    GRAD_VARIANCE_DATA,
    GRAD_VARIANCE_NOISE,
    LOG_VARIANCE_SLOPE,
    SNR,
)
from gradbench.report import paper
from gradbench.report.aggregate import Estimate, derive, estimate, over_seeds
from gradbench.report.notes import (
    EXCLUDED,
    bounds_note,
    coverage_notes,
    marked,
    objective_notes,
    parameters_notes,
)
from gradbench.report.render import HIGH, LOW, MEAN, display
from gradbench.report.rows import (
    VARIANCE,
    at_batch_size,
    epoch_label,
    estimator_order,
    models_of,
    nearest_batch_size,
    other_objective,
    outcomes,
    select,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

GROUP_EPOCH_KEYS = (
    Column("model", key=True),
    Column("estimator", key=True),
    Column("group", key=True),
    Column("epoch", "int", key=True),
)
"""The key columns of the tables with a row per model × estimator × parameter group × epoch."""

DECOMPOSITION_METRICS = (GRAD_VARIANCE, GRAD_VARIANCE_NOISE, GRAD_VARIANCE_DATA, SNR)


def variance_table(rows: pd.DataFrame, model: str) -> Table | None:
    """Gradient variance per estimator × (group, checkpoint) at minibatch 100 (Kingma's Table 1).

    The groups are the model's headline groups (:func:`gradbench.report.paper.headline_groups`);
    the papers' figures sit beside ours where a paper has them.
    """
    variance = select(rows, experiment=VARIANCE, model=model, metric=GRAD_VARIANCE)
    if variance.empty:
        return None
    batch = nearest_batch_size(variance["batch_size"])
    epochs = sorted({float(e) for e in variance[variance["batch_size"] == batch]["epoch"].dropna()})
    ours = [(g, e) for g in paper.headline_groups(model) for e in epochs]
    labels = [f"{g}, {epoch_label(e)}" for g, e in ours]
    beside = paper.variance_beside(model)
    columns = [
        Column("estimator", key=True),
        *(Column(c.label, c.kind) for c in beside.leading),
        *(Column(label, "sci") for label in labels),
        *(Column(c.label, c.kind) for c in beside.trailing),
    ]
    cell_rows = select(rows, experiment=VARIANCE, model=model)
    scoped = at_batch_size(cell_rows, batch)
    names = estimator_order(model, cell_rows)
    table_rows = [
        [
            marked(cell_rows, name),
            *(c.values.get(name) for c in beside.leading),
            *(over_seeds(scoped, VARIANCE, model, name, metric=GRAD_VARIANCE, param_group=g,
                         epoch=e) for g, e in ours),
            *(c.values.get(name) for c in beside.trailing),
        ]
        for name in names
    ]
    others = [other_objective(cell_rows, name) for name in names]
    claimed = paper.variance_order(model)
    by_column = {
        label: dict(zip(names, (row[1 + len(beside.leading) + i] for row in table_rows)))
        for i, label in enumerate(labels)
    }
    notes = (
        f"Ours: mean over the group's parameters of each parameter's variance over independent "
        f"minibatch gradients (fresh data and noise), minibatch {batch}, at parameters after the "
        "given number of training epochs; gradient of the mean per-example loss.",
        *beside.notes,
        *paper.variant_notes(names),
        *objective_notes(cell_rows, names),
        *coverage_notes(cell_rows),
        *parameters_notes(cell_rows[(cell_rows["batch_size"] == batch)
                                    & cell_rows["epoch"].isin(epochs)]),
        *(order_notes(claimed, by_column) if claimed else ()),
        *(equal_law_note(law, cell_rows, model) for law in paper.equal_laws(model)),
    )
    comparison = Comparison(
        tuple(Compared(label, False, log=True) for label in labels),
        "gradient variance: lower is better",
        tuple(not other for other in others),
        excluded=EXCLUDED if any(others) else "",
        biased_apart=True,
    )
    return assemble(
        f"variance_{model.replace('-', '_')}",
        f"Gradient variance of {model} by estimator (Table 1 analogue)",
        columns, table_rows, notes, comparison,
    )


def order_notes(
    claimed: paper.ClaimedOrder, columns: dict[str, dict[str, Estimate | None]]
) -> tuple[str, ...]:
    """Whether each column keeps the order a paper claims (by the mean over seeds), each
    reversed neighbouring pair with its values and whether their intervals are disjoint, and
    for a pair whose order is certain in expectation, that a disjoint reversal means an interval
    missed."""
    kept, broken, missing = [], [], []
    missed: dict[tuple[str, str], list[str]] = {}
    for label, values in columns.items():
        found = [values.get(name) for name in claimed.estimators]
        if any(v is None or not v.values for v in found):
            missing.append(f"[{label}]")
            continue
        reversed_pairs = []
        for (low_name, low), (high_name, high) in itertools.pairwise(
            zip(claimed.estimators, found)
        ):
            if low.mean < high.mean:
                continue
            disjoint = low.low > high.high
            bounds = not (math.isnan(low.low) or math.isnan(high.high))
            reversed_pairs.append(
                f"{low_name} {display(low.mean, 'sci')} ≥ {high_name} "
                f"{display(high.mean, 'sci')}, "
                + (f"intervals {'disjoint' if disjoint else 'overlapping'}" if bounds
                   else "no intervals")
            )
            if disjoint and (low_name, high_name) in claimed.certain:
                missed.setdefault((low_name, high_name), []).append(f"[{label}]")
        if reversed_pairs:
            broken.append(f"[{label}] ({'; '.join(reversed_pairs)})")
        else:
            kept.append(f"[{label}]")
    parts = [f"kept in {', '.join(kept)}" if kept else "kept in no column"]
    if broken:
        parts.append(f"reversed in {', '.join(broken)}")
    if missing:
        parts.append(f"not every row measured in {', '.join(missing)}")
    notes = [
        f"{claimed.source.label}'s order, variance rising "
        f"{' < '.join(claimed.estimators)}: {'; '.join(parts)}."
    ]
    for (low_name, high_name), where in missed.items():
        notes.append(
            f"In expectation {low_name} is not above {high_name} for any network "
            f"({claimed.certain[(low_name, high_name)]}); reversed with disjoint intervals in "
            f"{', '.join(where)}, so there at least one of the two intervals misses its value: "
            "these draws do not settle that pair."
        )
    return tuple(notes)


def equal_law_note(law: paper.EqualLaw, rows: pd.DataFrame, model: str) -> str:
    """Where two estimators whose gradients of ``law``'s group share one law were both measured
    (minibatch size × checkpoint): how many interval pairs overlap, and each disjoint pair with
    its values (there one of the two intervals missed its value)."""
    variance = select(rows, experiment=VARIANCE, model=model, metric=GRAD_VARIANCE)
    group = law.group(set(variance["param_group"].dropna()))
    first, second = law.estimators
    head = f"Check on the intervals: {law.what}"
    if group is None:
        return f"{head} was not measured."
    overlapping, disjoint = 0, []
    cells = variance[variance["param_group"] == group][["batch_size", "epoch"]].dropna()
    for batch, epoch in sorted(set(cells.itertuples(index=False, name=None))):
        scoped = at_batch_size(variance, int(batch))
        pair = [over_seeds(scoped, VARIANCE, model, name, param_group=group, epoch=epoch)
                for name in law.estimators]
        if any(p is None or not p.values or math.isnan(p.low) for p in pair):
            continue
        a, b = pair
        if a.high < b.low or b.high < a.low:
            disjoint.append(f"[M = {int(batch)}, {epoch_label(epoch)}] ({first} "
                            f"{display(a.mean, 'sci')}, {second} {display(b.mean, 'sci')})")
        else:
            overlapping += 1
    measured = overlapping + len(disjoint)
    head = (f"{head} ({group}) has one gradient law under {first} and {second} ({law.reason}), "
            "so their variances are equal")
    if not measured:
        return f"{head}; no minibatch size and checkpoint has intervals of both."
    verdict = f"{head}: their intervals overlap in {overlapping} of {measured} measured cells"
    if disjoint:
        verdict += (f"; disjoint in {', '.join(disjoint)}, so there one of the two intervals "
                    "misses its value")
    return verdict + "."


def slope_table(rows: pd.DataFrame) -> Table | None:
    """Fitted slope of log variance against log minibatch size per model × estimator × group."""
    slopes = select(rows, experiment=VARIANCE, metric=LOG_VARIANCE_SLOPE)
    if slopes.empty:
        return None
    table_rows: list[list[Value]] = []
    for model in models_of(slopes, VARIANCE):
        for name in estimator_order(model, select(slopes, model=model)):
            cell = select(slopes, model=model, estimator=name)
            for group in (*paper.headline_groups(model), "all"):
                epochs = select(cell, param_group=group)["epoch"].dropna()
                for epoch in sorted({float(e) for e in epochs}):
                    slope = over_seeds(cell, VARIANCE, model, name, metric=LOG_VARIANCE_SLOPE,
                                       param_group=group, epoch=epoch)
                    table_rows.append([model, marked(cell, name), group, epoch,
                                       slope, slope, slope])
    if not table_rows:
        return None
    return assemble(
        "variance_slopes",
        "Slope of log gradient variance against log minibatch size",
        (
            *GROUP_EPOCH_KEYS,
            Column("slope", "fixed2", part=MEAN),
            Column("95% CI low", "fixed2", part=LOW),
            Column("95% CI high", "fixed2", part=HIGH),
        ),
        table_rows,
        (
            "A slope near -1: variance falls as 1/M (independent noise per example); "
            "near 0: a shared noise sample's covariance dominates (Kingma et al. 2015).",
            *bounds_note([row[4] for row in table_rows], "the stored 95 % interval of the fit"),
            *objective_notes(slopes, list(set(slopes["estimator"].dropna()))),
        ),
    )


def decomposition_table(rows: pd.DataFrame) -> Table | None:
    """Noise and data parts of the variance (law of total variance) and SNR, at minibatch 100,
    the last checkpoint; the noise share is noise / variance seed by seed."""
    variance = select(rows, experiment=VARIANCE)
    table_rows: list[list[Value]] = []
    batches: set[int] = set()
    for model in models_of(variance, VARIANCE):
        scoped = select(variance, model=model)
        batch = nearest_batch_size(select(scoped, metric=GRAD_VARIANCE)["batch_size"])
        if batch is None:
            continue
        batches.add(batch)
        epochs = select(scoped, metric=GRAD_VARIANCE, batch_size=batch)["epoch"].dropna()
        epoch = float(epochs.max()) if not epochs.empty else None
        for name in estimator_order(model, scoped):
            for group in paper.headline_groups(model):
                total, noise, data, snr = (
                    outcomes(scoped, VARIANCE, model, name, metric=metric, param_group=group,
                             batch_size=batch, epoch=epoch)
                    for metric in DECOMPOSITION_METRICS
                )
                share = derive(lambda n, t: n / t if t > 0 else float("nan"), noise, total)
                table_rows.append([
                    model, marked(scoped, name), group, epoch,
                    *(estimate(part) for part in (total, noise, data, share, snr)),
                ])
    if not table_rows:
        return None
    return assemble(
        "variance_decomposition",
        "Noise and data parts of the gradient variance, and signal-to-noise ratio",
        (
            *GROUP_EPOCH_KEYS,
            Column("variance", "sci"),
            Column("noise part", "sci"),
            Column("data part", "sci"),
            Column("noise share", "percent"),
            Column("SNR", "sci"),
        ),
        table_rows,
        (
            f"Minibatch {', '.join(str(b) for b in sorted(batches))}, last checkpoint. "
            "Law of total "
            "variance: variance = E_B[Var_eps(g|B)] (noise) + Var_B(E_eps[g|B]) (data). SNR = "
            "|E[g]| / std[g] per parameter, root mean square over the group, squares debiased "
            "(Rainforth et al. 2018).",
            *objective_notes(variance, list(set(variance["estimator"].dropna()))),
            *coverage_notes(variance),
        ),
    )
