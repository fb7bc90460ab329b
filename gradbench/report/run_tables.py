"""Tables about the run itself: the annealed settings reached, which estimator applied to which
model, and the cells that diverged or failed (whose seeds no mean includes)."""

from __future__ import annotations

import pandas as pd

from gradbench.experiments.metrics import APPLIES, BETA, TEMPERATURE
from gradbench.report.aggregate import over_seeds
from gradbench.report.notes import marked, objective_notes
from gradbench.report.rows import (
    CATALOGUE,
    DIVERGED,
    TRAINING,
    UNKNOWN_SEED,
    VARIANCE,
    estimator_order,
    is_diverged,
    label_key,
    seed_of,
    select,
    unfinished,
)
from gradbench.report.table import Column, Table, Value, assemble
from gradbench.results import STATUS_DIVERGED, UNFINISHED

SCHEDULE_METRICS = (TEMPERATURE, BETA)


def schedule_table(rows: pd.DataFrame) -> Table | None:
    """The annealed settings actually in force: Gumbel-softmax's τ and target propagation's β at
    every variance checkpoint and at the first, the checkpoint and the last training epochs."""
    stored = rows[(rows["param_group"] == "schedule") & rows["metric"].isin(SCHEDULE_METRICS)]
    if stored.empty:
        return None
    table_rows: list[list[Value]] = []
    for model in sorted(set(stored["model"].dropna())):
        scoped = select(stored, model=model)
        checkpoints = {float(e) for e in select(scoped, experiment=VARIANCE)["epoch"].dropna()}
        for name in estimator_order(model, scoped):
            for experiment, what in ((TRAINING, "training"), (VARIANCE, "variance checkpoint")):
                cell = select(scoped, estimator=name, experiment=experiment)
                epochs = sorted({float(e) for e in cell["epoch"].dropna()})
                if experiment == TRAINING and epochs:
                    epochs = sorted({epochs[0], epochs[-1], *(checkpoints & set(epochs))})
                for epoch in epochs:
                    table_rows.append([
                        model, marked(scoped, name), what, epoch,
                        *(over_seeds(cell, experiment, model, name, metric=metric, epoch=epoch)
                          for metric in SCHEDULE_METRICS),
                    ])
    return assemble(
        "schedules",
        "Annealed temperature and KL weight actually reached",
        (
            Column("model", key=True), Column("estimator", key=True),
            Column("measurement", key=True), Column("epoch", "int", key=True),
            Column(TEMPERATURE, "fixed3"), Column(BETA, "fixed3"),
        ),
        table_rows,
        (
            "Training: the value the epoch's last optimizer step used (epoch 0: the first step's); "
            "variance checkpoint: the value the gradient draws used. Every epoch's value is in the "
            "stored rows (param_group schedule).",
            *objective_notes(stored, list(set(stored["estimator"].dropna()))),
        ),
    )


def applicability_table(rows: pd.DataFrame) -> Table | None:
    """Which estimator (or variant) applied to which model and toy problem, from the stored
    catalogue cells of the run (gradbench.catalogue.catalogue_rows)."""
    stored = select(rows, experiment=CATALOGUE, metric=APPLIES)
    if stored.empty:
        return None
    labels = sorted(set(stored["estimator"].dropna()), key=label_key)
    table_rows: list[list[Value]] = []
    for target in dict.fromkeys(stored["param_group"].dropna()):
        entry: list[Value] = [target]
        for label in labels:
            match = select(stored, estimator=label, param_group=target)
            entry.append("yes" if not match.empty and float(match["value"].iloc[-1]) else "")
        table_rows.append(entry)
    return assemble(
        "applicability",
        "Which estimator applies to which model",
        (Column("model", key=True), *(Column(label) for label in labels)),
        table_rows,
        ("Stored with the run: the node kinds each estimator supported then.",),
    )


def _error(cell: pd.DataFrame) -> str | None:
    """The stored error text of a failed cell, if any."""
    texts = [t for t in cell["error"].astype(str) if t.strip()] if "error" in cell else []
    return texts[-1] if texts else None


def diverged_table(rows: pd.DataFrame) -> Table | None:
    """Every experiment × model × estimator × seed whose gradients or losses became NaN or inf,
    or whose task failed after its retries, with the first diverged epoch or the error."""
    keys = [rows["experiment"], rows["model"], rows["estimator"], seed_of(rows)]
    found: list[list[Value]] = []
    for (experiment, model, estimator, seed), cell in rows.groupby(keys, sort=True, dropna=False):
        names: list[Value] = [str(experiment), str(model), str(estimator),
                              float(seed) if seed != UNKNOWN_SEED else None]
        lost = cell[cell["status"].isin(UNFINISHED)]
        for _, part in lost.groupby("config_hash", sort=False, dropna=False):
            epochs = part["epoch"].dropna()
            found.append([*names, unfinished(part),
                          float(epochs.iloc[0]) if not epochs.empty else None, _error(part)])
        if is_diverged(cell):
            epochs = cell[cell["status"] == STATUS_DIVERGED]["epoch"].dropna()
            found.append([*names, DIVERGED, float(epochs.min()) if not epochs.empty else None,
                          None])
    if not found:
        return None
    return assemble(
        "diverged",
        "Diverged, failed and skipped cells (NaN or inf gradients or losses; tasks failed after "
        "retries; cells too long for the device they were planned on)",
        (
            Column("experiment", key=True), Column("model", key=True),
            Column("estimator", key=True), Column("seed", "int", key=True), Column("status"),
            Column("epoch", "int"), Column("error"),
        ),
        found,
        (
            "The run recorded these and went on with the other cells; a failed or skipped task "
            "is run by the next run (a skipped one where its limit allows: its estimate is in "
            "the error column). No mean over seeds includes them.",
        ),
    )
