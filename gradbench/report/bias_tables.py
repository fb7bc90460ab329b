"""The bias table: estimators against the exact gradient of the models' oracle configurations.

Built from the ``bias`` rows of :mod:`gradbench.measure.bias` (prepared by
:func:`gradbench.report.tables.prepare_rows`).
"""

from __future__ import annotations

import pandas as pd

from gradbench.report.tables import (
    OTHER_OBJECTIVE,
    Column,
    Table,
    Value,
    estimator_order,
    headline_groups,
    interval,
    other_objective,
    lookup,
    models_of,
    select,
)

BIAS = "bias"
"""Experiment name of the stored cells (gradbench.measure.bias)."""
METRICS = ("relative_bias", "cosine", "mse", "relative_std")
LABELS = {"relative_bias": "rel. bias", "cosine": "cosine", "mse": "MSE", "relative_std": "rel. std"}
KINDS = {"relative_bias": "fixed3", "cosine": "fixed3", "mse": "sci", "relative_std": "fixed3"}


def bias_table(rows: pd.DataFrame) -> Table | None:
    """One row per model × estimator × checkpoint epoch × headline group: relative bias,
    cosine, MSE and relative std, each with its 95% interval; None without bias rows."""
    measured = select(rows, experiment=BIAS)
    if measured.empty:
        return None
    table_rows: list[tuple[Value, ...]] = []
    marked = False
    draws: set[int] = set()
    batches: set[int] = set()
    for model in models_of(measured, BIAS):
        scoped = select(measured, model=model)
        draws |= {int(n) for n in scoped["n"].dropna()}
        batches |= {int(b) for b in scoped["batch_size"].dropna()}
        for name in estimator_order(model, scoped):
            cell = select(scoped, estimator=name)
            shown = name
            if other_objective(cell, name):
                shown, marked = f"{name} {OTHER_OBJECTIVE}", True
            for epoch in sorted({float(e) for e in cell["epoch"].dropna()}):
                for group in headline_groups(model):
                    if select(cell, param_group=group, epoch=epoch).empty:
                        continue
                    row: list[Value] = [model, shown, epoch, group]
                    for metric in METRICS:
                        value = lookup(cell, BIAS, model, name, metric=metric,
                                       param_group=group, epoch=epoch)
                        bounds = interval(cell, metric=metric, param_group=group, epoch=epoch)
                        low, high = bounds if bounds and isinstance(value, float) else (None, None)
                        row += [value, low, high]
                    table_rows.append(tuple(row))
    if not table_rows:
        return None
    columns = [Column("model"), Column("estimator"), Column("epoch", "int"), Column("group")]
    for metric in METRICS:
        label, kind = LABELS[metric], KINDS[metric]
        columns += [Column(label, kind), Column(f"{label} low", kind), Column(f"{label} high", kind)]
    notes = [
        "Exact gradient g: autograd of the minibatch mean of the model's expected loss, computed "
        "exactly (enumeration of every latent configuration for the categorical VAE, "
        "Gauss-Hermite quadrature for the Gaussian VAE) at its small oracle configuration, on "
        f"one fixed minibatch of {_list(batches)} training examples, at checkpoints trained by "
        f"the model's reference estimator; {_list(draws)} gradient draws with fresh noise.",
        "Per parameter group, sums over its coordinates: rel. bias = ||E g^ - g|| / ||g|| "
        "(||mean - g||^2 debiased by tr Cov / draws), cosine = cos(E g^, g), MSE = E||g^ - g||^2 "
        "= ||E g^ - g||^2 + tr Var g^ of one draw, rel. std = sqrt(tr Var g^) / ||g||. "
        "Low / high: 95% bootstrap interval over draws.",
    ]
    if marked:
        notes.append(
            f"{OTHER_OBJECTIVE} Not an estimator of the ELBO gradient: its direction is that of "
            "another objective, so its bias is expected; the cosine is the figure to read."
        )
    return Table(
        name="bias",
        title="Bias of gradient estimators against the exact gradient (oracle configurations)",
        columns=tuple(columns),
        rows=tuple(table_rows),
        notes=tuple(notes),
    )


def _list(values: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "?"
