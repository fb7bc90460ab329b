"""The bias table: estimators against the exact gradient of the models' oracle configurations.

Built from the ``bias`` rows of :mod:`gradbench.measure.bias`, over seeds. Within each model,
checkpoint and group the rows compete on relative bias, lower is better; estimators of another
objective (†) are expected to be biased and take no part.
"""

from __future__ import annotations

import pandas as pd

from gradbench.experiments.metrics import COSINE, MSE, RELATIVE_BIAS, RELATIVE_STD
from gradbench.report import paper
from gradbench.report.aggregate import over_seeds
from gradbench.report.notes import EXCLUDED, OTHER_OBJECTIVE, bounds_note, marked
from gradbench.report.render import HIGH, LOW, MEAN
from gradbench.report.rows import (
    BIAS,
    estimator_order,
    models_of,
    other_objective,
    select,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

METRICS = (RELATIVE_BIAS, COSINE, MSE, RELATIVE_STD)
LABELS = {RELATIVE_BIAS: "rel. bias", COSINE: COSINE, MSE: "MSE", RELATIVE_STD: "rel. std"}
KINDS = {RELATIVE_BIAS: "fixed3", COSINE: "fixed3", MSE: "sci", RELATIVE_STD: "fixed3"}


def bias_table(rows: pd.DataFrame) -> Table | None:
    """One row per model × estimator × checkpoint epoch × headline group: relative bias,
    cosine, MSE and relative std, each with its 95% interval; None without bias rows."""
    measured = select(rows, experiment=BIAS)
    if measured.empty:
        return None
    table_rows: list[list[Value]] = []
    blocks: list[tuple[str, float, str]] = []
    eligible: list[bool] = []
    draws: set[int] = set()
    batches: set[int] = set()
    for model in models_of(measured, BIAS):
        scoped = select(measured, model=model)
        draws |= {int(n) for n in scoped["n"].dropna()}
        batches |= {int(b) for b in scoped["batch_size"].dropna()}
        for name in estimator_order(model, scoped):
            cell = select(scoped, estimator=name)
            for epoch in sorted({float(e) for e in cell["epoch"].dropna()}):
                for group in paper.headline_groups(model):
                    if select(cell, param_group=group, epoch=epoch).empty:
                        continue
                    row: list[Value] = [model, marked(cell, name), epoch, group]
                    for metric in METRICS:
                        value = over_seeds(cell, BIAS, model, name, metric=metric,
                                           param_group=group, epoch=epoch)
                        row += [value, value, value]
                    table_rows.append(row)
                    blocks.append((model, epoch, group))
                    eligible.append(not other_objective(cell, name))
    if not table_rows:
        return None
    columns = [Column("model", key=True), Column("estimator", key=True),
               Column("epoch", "int", key=True), Column("group", key=True)]
    for metric in METRICS:
        label, kind = LABELS[metric], KINDS[metric]
        columns += [Column(label, kind, part=MEAN), Column(f"{label} low", kind, part=LOW),
                    Column(f"{label} high", kind, part=HIGH)]
    notes = [
        "Exact gradient g: autograd of the minibatch mean of the model's expected loss, computed "
        "exactly (enumeration of every latent configuration for the categorical VAE, "
        "Gauss-Hermite quadrature for the Gaussian VAE) at its small oracle configuration, on "
        f"one fixed minibatch of {_list(batches)} training examples, at checkpoints trained by "
        f"the model's reference estimator; {_list(draws)} gradient draws with fresh noise.",
        "Per parameter group, sums over its coordinates: rel. bias = ||E g^ - g|| / ||g|| "
        "(||mean - g||^2 debiased by tr Cov / draws), cosine = cos(E g^, g), MSE = E||g^ - g||^2 "
        "= ||E g^ - g||^2 + tr Var g^ of one draw, rel. std = sqrt(tr Var g^) / ||g||.",
        *bounds_note([row[4] for row in table_rows], "95% bootstrap interval over draws"),
    ]
    if not all(eligible):
        notes.append(
            f"{OTHER_OBJECTIVE} Not an estimator of the ELBO gradient: its direction is that of "
            "another objective, so its bias is expected; the cosine is the figure to read."
        )
    comparison = Comparison(
        (Compared(LABELS[RELATIVE_BIAS], False),),
        "relative bias: lower is better",
        tuple(eligible),
        blocks=tuple(blocks),
        scope="model, checkpoint and group",
        excluded=EXCLUDED if not all(eligible) else "",
        rank_after=columns[-1].label,
    )
    return assemble(
        "bias",
        "Bias of gradient estimators against the exact gradient (oracle configurations)",
        columns, table_rows, notes, comparison,
    )


def _list(values: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "?"
