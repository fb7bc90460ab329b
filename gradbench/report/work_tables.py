"""Work-normalised gradient variance: estimators compared at matched cost.

An estimator that evaluates the model's sample-dependent part (the decoder) E times per gradient
(RLOO's K samples, ARM's antithetic pair, REBAR's three passes, enumeration's every
configuration) is compared with a one-evaluation estimator given E times its draws: averaging
E independent one-evaluation gradients divides their variance by E, so the matched comparison is
variance × evaluations. Variance × seconds per gradient compares at matched wall-clock on the
machine that ran the timing cells. Built from stored rows alone: the variance rows, the
catalogue's ``evaluations`` rows and the timing rows' ``seconds_per_gradient``.
"""

from __future__ import annotations

import math

import pandas as pd

from gradbench.report.tables import (
    CATALOGUE,
    TIMING,
    VARIANCE,
    Column,
    Table,
    Value,
    epoch_label,
    estimator_order,
    headline_groups,
    marked,
    models_of,
    nearest_batch_size,
    objective_notes,
    select,
    variant_notes,
)


def stored_evaluations(rows: pd.DataFrame, model: str, estimator: str) -> float | None:
    """Evaluations per gradient of ``estimator`` on ``model`` from the run's catalogue cells."""
    match = select(rows, experiment=CATALOGUE, estimator=estimator, metric="evaluations",
                   param_group=model)
    return None if match.empty else float(match["value"].iloc[-1])


def stored_seconds(rows: pd.DataFrame, model: str, estimator: str) -> float | None:
    """Median seconds per gradient (forward and backward of one minibatch) from the timing rows."""
    match = select(rows, experiment=TIMING, model=model, estimator=estimator,
                   metric="seconds_per_gradient")
    if match.empty:
        return None
    value = float(match["value"].iloc[-1])
    return value if math.isfinite(value) else None


def _product(variance: Value, factor: float | None) -> Value:
    if isinstance(variance, float) and factor is not None:
        return variance * factor
    return None


def work_normalised_table(rows: pd.DataFrame) -> Table | None:
    """Per model × estimator at minibatch 100 and the last checkpoint: evaluations, seconds per
    gradient, and per headline group the variance, variance × evaluations and variance ×
    seconds; None without catalogue evaluations and variance rows."""
    if select(rows, experiment=CATALOGUE, metric="evaluations").empty:
        return None
    variance = select(rows, experiment=VARIANCE, metric="grad_variance")
    table_rows: list[tuple[Value, ...]] = []
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
        for name in estimator_order(model, at_batch):
            evaluations = stored_evaluations(rows, model, name)
            seconds = stored_seconds(rows, model, name)
            shown.append(name)
            for group in headline_groups(model):
                match = select(at_batch, estimator=name, param_group=group, epoch=epoch)
                value: Value = float(match["value"].iloc[-1]) if not match.empty else None
                table_rows.append((
                    model, marked(rows, name), group, epoch_label(epoch), evaluations, seconds,
                    value, _product(value, evaluations), _product(value, seconds),
                ))
    if not table_rows:
        return None
    notes = (
        f"Minibatch {', '.join(str(b) for b in sorted(batches))}, the last variance checkpoint. "
        "Evaluations: decoder evaluations per gradient (stored with the run). Matched "
        "evaluations: a one-evaluation estimator given E times the draws has variance / E, so "
        "variance × evaluations compares estimators at equal evaluation budgets (lower is "
        "better); variance × seconds per gradient compares them at equal wall-clock on the "
        "machine of the timing cells.",
        *variant_notes(list(dict.fromkeys(shown))),
        *objective_notes(rows, shown),
    )
    return Table(
        name="work_normalised_variance",
        title="Gradient variance at matched evaluations and matched time",
        columns=(
            Column("model"), Column("estimator"), Column("group"), Column("checkpoint"),
            Column("evaluations", "int"), Column("s / gradient", "sci"),
            Column("variance", "sci"), Column("variance × evaluations", "sci"),
            Column("variance × s", "sci"),
        ),
        rows=tuple(table_rows),
        notes=notes,
    )
