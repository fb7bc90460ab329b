"""The front page's summary: one table per model, estimator × headline figures, with intervals.

Columns: gradient variance of each headline group at the headline minibatch size (the one
nearest 100) and the last measured checkpoint; the relative bias of the first headline group on
the oracle configuration (its interval, and "biased" only where that interval excludes 0); the
ELBO on the test split (classification error for a classifier) at the end of training; seconds
per optimizer step; each where the model has it. Rows compete on variance alone, so a biased
estimator (‡) takes no part and the bold row of each variance column is the lowest-variance
unbiased estimator (the exact gradient first wherever it runs); a model without variance rows
competes on its end-of-training figure, which every estimator optimises alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from gradbench.experiments.metrics import ELBO, ERROR_RATE, GRAD_VARIANCE, SECONDS_PER_STEP
from gradbench.report import paper
from gradbench.report.aggregate import BEST, Estimate, over_seeds
from gradbench.report.bias_tables import gradient_norms, relative_bias, verdict
from gradbench.report.notes import at_one_checkpoint, marked
from gradbench.report.rows import (
    BIAS,
    TIMING,
    TRAINING,
    VARIANCE,
    at_batch_size,
    epoch_label,
    estimator_order,
    final_epoch_rows,
    nearest_batch_size,
    other_objective,
    select,
    splits_of,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

ENDPOINTS = ((ELBO, "ELBO", True, "fixed2"), (ERROR_RATE, "error", False, "percent"))
"""The end-of-training figure of a model: (metric, label, higher is better, kind); the first
one it has."""


@dataclass(frozen=True)
class Headline:
    """The front page's answer for one model and group: the lowest-variance unbiased estimator
    at the headline minibatch size and checkpoint, with its cell (mean and interval)."""

    model: str
    group: str
    batch: int
    epoch: float
    estimator: str
    cell: Estimate


def _bias_text(rows: pd.DataFrame, model: str, name: str, group: str) -> str | None:
    """"0.103 [0.096, 0.110] biased" at the last oracle checkpoint, or None when not measured."""
    measured = select(rows, experiment=BIAS, model=model, param_group=group)
    if measured.empty:
        return None
    epoch = float(measured["epoch"].max())
    block = select(measured, epoch=epoch)
    bias = relative_bias(select(block, estimator=name), model, name, gradient_norms(block),
                         param_group=group, epoch=epoch)
    if bias is None or bias.n == 0:
        return None if bias is None else bias.status
    found = verdict(bias)
    return f"{bias.mean:.3f} [{bias.low:.3f}, {bias.high:.3f}]" + (f" {found}" if found else "")


def _endpoint(rows: pd.DataFrame, model: str) -> tuple[str, str, bool, str, str] | None:
    """(metric, label, higher is better, kind, split) of the model's end-of-training figure."""
    for metric, label, higher, kind in ENDPOINTS:
        splits = splits_of(select(rows, experiment=TRAINING, model=model), metric)
        if splits:
            split = "test" if "test" in splits else splits[-1]
            return metric, f"{label}, {split}", higher, kind, split
    return None


SUMMARISED = (VARIANCE, BIAS, TRAINING, TIMING)
"""The experiments a summary table draws on."""


def summary_table(rows: pd.DataFrame, model: str) -> tuple[Table, list[Headline]] | None:
    """The model's summary table and its headlines; None when the model has none of the
    summarised measurements."""
    measured = rows[(rows["model"] == model) & rows["experiment"].isin(SUMMARISED)]
    if measured.empty:
        return None
    compared, _ = at_one_checkpoint(select(rows, experiment=VARIANCE, model=model))
    variance = select(compared, metric=GRAD_VARIANCE)
    batch = nearest_batch_size(variance["batch_size"])
    at_batch = variance[variance["batch_size"] == batch]
    epoch = float(at_batch["epoch"].max()) if not at_batch.empty else math.nan
    groups = [g for g in paper.headline_groups(model, at_batch["param_group"])
              if not select(at_batch, param_group=g, epoch=epoch).empty]
    scoped = at_batch_size(compared, batch)
    names = estimator_order(model, measured)
    endpoint = _endpoint(rows, model)
    final = final_epoch_rows(rows, model)
    timing = at_batch_size(select(rows, experiment=TIMING, model=model),
                           batch if batch is not None else paper.TABLE_BATCH_SIZE)
    bias_group = groups[0] if groups else ""
    has_bias = not select(rows, experiment=BIAS, model=model).empty
    labels = [f"var. {g} (M={batch}, {epoch_label(epoch)})" for g in groups]
    columns = [Column("estimator", key=True), *(Column(label, "sci") for label in labels)]
    if has_bias:
        columns.append(Column(f"rel. bias {bias_group} (oracle)"))
    if endpoint is not None:
        columns.append(Column(endpoint[1], endpoint[3]))
    has_timing = not timing.empty
    if has_timing:
        columns.append(Column("s / step", "sci"))
    table_rows: list[list[Value]] = []
    for name in names:
        row: list[Value] = [marked(rows, name)]
        row += [over_seeds(scoped, VARIANCE, model, name, metric=GRAD_VARIANCE, param_group=g,
                           epoch=epoch) for g in groups]
        if has_bias:
            row.append(_bias_text(rows, model, name, bias_group))
        if endpoint is not None:
            row.append(over_seeds(final, TRAINING, model, name, metric=endpoint[0],
                                  param_group=endpoint[4]))
        if has_timing:
            row.append(over_seeds(timing, TIMING, model, name, metric=SECONDS_PER_STEP))
        table_rows.append(row)
    eligible = tuple(not other_objective(rows, n) for n in names)
    if labels:
        comparison = Comparison(
            tuple(Compared(label, False, log=True) for label in labels),
            "gradient variance: lower is better, the exact gradient first", eligible,
            biased_apart=True,
        )
    elif endpoint is not None:
        comparison = Comparison((Compared(endpoint[1], endpoint[2]),),
                                f"{endpoint[1]}: {'higher' if endpoint[2] else 'lower'} is better",
                                eligible)
    else:
        comparison = None
    table = assemble(f"summary_{model.replace('-', '_')}", f"{model}: summary", columns,
                     table_rows, (), comparison)
    headlines = []
    for label, group in zip(labels, groups):
        j = table.headers.index(label)
        best = [i for (i, col), mark in table.marks.items() if col == j and mark.kind == BEST]
        for i in best:
            cell = table.rows[i][j]
            if isinstance(cell, Estimate) and math.isfinite(cell.mean):
                headlines.append(Headline(model, group, batch, epoch, names[i], cell))
    return table, headlines
