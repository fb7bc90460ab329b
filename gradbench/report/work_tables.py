"""Work-normalised gradient variance: estimators compared at matched cost, over seeds.

An estimator that evaluates the model's sample-dependent part (the decoder) E times per gradient
(RLOO's K samples, ARM's antithetic pair, REBAR's three passes, enumeration's every
configuration) is compared with a one-evaluation estimator given E times its draws: averaging
E independent one-evaluation gradients divides their variance by E, so the matched comparison is
variance × evaluations. Variance × seconds per gradient compares at matched wall-clock on the
machine that ran the timing cells; both products are taken seed by seed, then averaged. Built
from stored rows alone: the variance rows, the catalogue's ``evaluations`` rows and the timing
rows' ``seconds_per_gradient``.
"""

from __future__ import annotations

import pandas as pd

from gradbench.experiments.metrics import EVALUATIONS, GRAD_VARIANCE, SECONDS_PER_GRADIENT
from gradbench.report import paper
from gradbench.report.aggregate import derive, estimate
from gradbench.report.notes import EXCLUDED, marked, objective_notes
from gradbench.report.rows import (
    CATALOGUE,
    TIMING,
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

MATCHED_EVALUATIONS = "variance × evaluations"
MATCHED_TIME = "variance × s"


def stored_evaluations(rows: pd.DataFrame, model: str, estimator: str) -> float | None:
    """Evaluations per gradient of ``estimator`` on ``model`` from the run's catalogue cells."""
    match = select(rows, experiment=CATALOGUE, estimator=estimator, metric=EVALUATIONS,
                   param_group=model)
    return None if match.empty else float(match["value"].iloc[-1])


def work_normalised_table(rows: pd.DataFrame) -> Table | None:
    """Per model × estimator at minibatch 100 and the last checkpoint: evaluations, seconds per
    gradient, and per headline group the variance, variance × evaluations and variance ×
    seconds; None without catalogue evaluations and variance rows."""
    if select(rows, experiment=CATALOGUE, metric=EVALUATIONS).empty:
        return None
    variance = select(rows, experiment=VARIANCE, metric=GRAD_VARIANCE)
    table_rows: list[list[Value]] = []
    blocks: list[tuple[str, str]] = []
    eligible: list[bool] = []
    shown: list[str] = []
    batches: set[int] = set()
    for model in models_of(variance, VARIANCE):
        own = select(variance, model=model)
        batch = nearest_batch_size(own["batch_size"])
        at_batch = own[own["batch_size"] == batch]
        if at_batch.empty:
            continue
        batches.add(int(batch))
        epoch = float(at_batch["epoch"].max())
        scoped = at_batch_size(own, batch)
        for name in estimator_order(model, at_batch):
            evaluations = stored_evaluations(rows, model, name)
            seconds = outcomes(rows, TIMING, model, name, metric=SECONDS_PER_GRADIENT)
            shown.append(name)
            for group in paper.headline_groups(model, rows["param_group"]):
                found = outcomes(scoped, VARIANCE, model, name, metric=GRAD_VARIANCE,
                                 param_group=group, epoch=epoch)
                per_evaluation = (
                    derive(lambda v, e=evaluations: v * e, found) if evaluations is not None
                    else {}
                )
                table_rows.append([
                    model, marked(rows, name), group, epoch_label(epoch), evaluations,
                    estimate(seconds), estimate(found), estimate(per_evaluation),
                    estimate(derive(lambda v, s: v * s, found, seconds)),
                ])
                blocks.append((model, group))
                eligible.append(not other_objective(rows, name))
    if not table_rows:
        return None
    notes = (
        f"Minibatch {', '.join(str(b) for b in sorted(batches))}, the last variance checkpoint. "
        "Evaluations: decoder evaluations per gradient (stored with the run). Matched "
        "evaluations: a one-evaluation estimator given E times the draws has variance / E, so "
        "variance × evaluations compares estimators at equal evaluation budgets (lower is "
        "better); variance × seconds per gradient compares them at equal wall-clock on the "
        "machine of the timing cells. Both products are taken seed by seed.",
        *paper.variant_notes(list(dict.fromkeys(shown))),
        *objective_notes(rows, shown),
    )
    comparison = Comparison(
        (Compared(MATCHED_EVALUATIONS, False, log=True), Compared(MATCHED_TIME, False, log=True)),
        "variance × evaluations and variance × seconds: lower is better",
        tuple(eligible),
        blocks=tuple(blocks),
        scope="model and group",
        excluded=EXCLUDED if not all(eligible) else "",
        biased_apart=True,
    )
    return assemble(
        "work_normalised_variance",
        "Gradient variance at matched evaluations and matched time",
        (
            Column("model", key=True), Column("estimator", key=True), Column("group", key=True),
            Column("checkpoint", key=True), Column(EVALUATIONS, "int"),
            Column("s / gradient", "sci"), Column("variance", "sci"),
            Column(MATCHED_EVALUATIONS, "sci"), Column(MATCHED_TIME, "sci"),
        ),
        table_rows,
        notes,
        comparison,
    )
