"""The bias table: estimators against the exact gradient of the models' oracle configurations.

Built from the ``bias`` rows of :mod:`gradbench.measure.bias`, over seeds. Within each model,
checkpoint and group the rows are ranked by MSE = ‖E ĝ − g‖² + tr Var ĝ (bias and variance
measured on the same configuration), lower is better, the exact gradient first; a relative bias is
judged by its interval, never ranked: "biased" only where the interval excludes 0 (beyond
float64 round-off). Over seeds the unclamped squared relative bias r = MSE / ‖g‖² − rel. std²
(the stored relative bias is √max(r, 0), clamped per seed) is averaged and clamped once; ‖g‖² is
recovered from the estimators whose stored bias is not clamped, as ‖g‖² = MSE / (rel. bias² +
rel. std²) (every estimator of a model, checkpoint, group and seed sees the same exact gradient).
Estimators of another objective (†) are expected to be biased and take no part.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pandas as pd

from gradbench.experiments.metrics import COSINE, MSE, RELATIVE_BIAS, RELATIVE_STD
from gradbench.report import paper
from gradbench.report.aggregate import Clamped, Estimate, clamp_once, estimate, over_seeds
from gradbench.report.notes import EXCLUDED, OTHER_OBJECTIVE, marked
from gradbench.report.render import HIGH, LOW, MEAN
from gradbench.report.rows import (
    BIAS,
    Outcome,
    Outcomes,
    estimator_order,
    models_of,
    other_objective,
    outcomes,
    select,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble
from gradbench.results import STATUS_OK

METRICS = (RELATIVE_BIAS, COSINE, MSE, RELATIVE_STD)
LABELS = {RELATIVE_BIAS: "rel. bias", COSINE: COSINE, MSE: "MSE", RELATIVE_STD: "rel. std"}
KINDS = {RELATIVE_BIAS: "fixed3", COSINE: "fixed3", MSE: "sci", RELATIVE_STD: "fixed3"}
ROUND_OFF = 1e-6
"""A relative bias below this is float64 round-off (the exact gradient's is about 1e-9)."""
NORM_AGREEMENT = 1e-6
"""Relative spread within which the ‖g‖² recovered from different estimators must agree."""
BIASED_LABEL = "biased"


def gradient_norms(block: pd.DataFrame) -> dict[int, float]:
    """Per seed, ‖g‖² of one model × checkpoint × group, from the rows of every estimator whose
    stored relative bias is not clamped: MSE / (rel. bias² + rel. std²); a seed whose estimators
    disagree beyond :data:`NORM_AGREEMENT` (not the same exact gradient) is left out."""
    ok = block[block["status"] == STATUS_OK]
    wide = ok.pivot_table(index=["seed", "estimator"], columns="metric", values="value",
                          aggfunc="last")
    if not {RELATIVE_BIAS, RELATIVE_STD, MSE} <= set(wide.columns):
        return {}
    wide = wide[(wide[RELATIVE_BIAS] > 0) & wide[MSE].notna() & wide[RELATIVE_STD].notna()]
    recovered = wide[MSE] / (wide[RELATIVE_BIAS] ** 2 + wide[RELATIVE_STD] ** 2)
    norms: dict[int, float] = {}
    for seed, found in recovered.groupby(level="seed"):
        values = [v for v in found if math.isfinite(v) and v > 0]
        if values and (max(values) - min(values)) <= NORM_AGREEMENT * max(values):
            norms[int(seed)] = statistics.median(values)
    return norms


def squared_bias(cell: pd.DataFrame, model: str, name: str, norms: dict[int, float],
                 **criteria: object) -> Outcomes | None:
    """Per seed, the unclamped squared relative bias r = MSE / ‖g‖² − rel. std² with the stored
    interval squared (one seed); None when some measured seed has no recovered ‖g‖²."""
    mse, spread, stored = (outcomes(cell, BIAS, model, name, metric=m, **criteria)
                           for m in (MSE, RELATIVE_STD, RELATIVE_BIAS))
    found: Outcomes = {}
    for seed, shown in stored.items():
        if shown.status != STATUS_OK:
            found[seed] = shown
            continue
        if seed not in norms or seed not in mse or seed not in spread:
            return None
        value = mse[seed].value / norms[seed] - spread[seed].value ** 2
        found[seed] = Outcome(STATUS_OK, value, shown.low ** 2, shown.high ** 2)
    return found


def relative_bias(cell: pd.DataFrame, model: str, name: str, norms: dict[int, float],
                  **criteria: object) -> Estimate | None:
    """The relative bias over seeds, aggregated unclamped and clamped once (√max(·, 0)); the
    stored clamped values where ‖g‖² cannot be recovered."""
    found = squared_bias(cell, model, name, norms, **criteria)
    if found is None:
        return over_seeds(cell, BIAS, model, name, metric=RELATIVE_BIAS, **criteria)
    squared = estimate(found)
    if squared is None:
        return None
    shown = clamp_once(squared, lambda v: math.sqrt(max(v, 0.0)))
    if squared.over_seeds and not shown.high > 0:
        # The t-interval lies wholly below 0: the seeds' own intervals bound the bias instead.
        highs = [o.high for o in found.values() if o.status == STATUS_OK]
        return replace(shown, high=math.sqrt(max(highs)))
    return shown


def verdict(bias: Estimate | None) -> str:
    """"biased" where the interval of the relative bias excludes 0 (beyond round-off), else
    empty: an interval reaching 0 says the bias was not resolved, not that there is none."""
    if bias is None or bias.n == 0 or not math.isfinite(bias.low):
        return ""
    return BIASED_LABEL if bias.low > ROUND_OFF else ""


def bias_table(rows: pd.DataFrame) -> Table | None:
    """One row per model × estimator × checkpoint epoch × headline group: relative bias (with
    its verdict), cosine, MSE and relative std, each with its 95% interval, ranked by MSE;
    None without bias rows."""
    measured = select(rows, experiment=BIAS)
    if measured.empty:
        return None
    table_rows: list[list[Value]] = []
    blocks: list[tuple[str, float, str]] = []
    eligible: list[bool] = []
    draws: set[int] = set()
    batches: set[int] = set()
    unrecovered = 0
    for model in models_of(measured, BIAS):
        scoped = select(measured, model=model)
        draws |= {int(n) for n in scoped["n"].dropna()}
        batches |= {int(b) for b in scoped["batch_size"].dropna()}
        norms = {
            (epoch, group): gradient_norms(block)
            for (epoch, group), block in scoped.groupby(["epoch", "param_group"])
        }
        for name in estimator_order(model, scoped):
            cell = select(scoped, estimator=name)
            for epoch in sorted({float(e) for e in cell["epoch"].dropna()}):
                for group in paper.headline_groups(model, cell["param_group"]):
                    if select(cell, param_group=group, epoch=epoch).empty:
                        continue
                    row: list[Value] = [model, marked(cell, name), epoch, group]
                    bias = relative_bias(cell, model, name, norms.get((epoch, group), {}),
                                         param_group=group, epoch=epoch)
                    unrecovered += bias is not None and not isinstance(bias, Clamped)
                    row += [bias, bias, bias, verdict(bias)]
                    for metric in METRICS[1:]:
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
        if metric == RELATIVE_BIAS:
            columns.append(Column(BIASED_LABEL))
    notes = [
        f"Exact gradient g at each model's small oracle configuration, one fixed minibatch of "
        f"{_list(batches)} examples, {_list(draws)} draws with fresh noise; rel. bias = "
        "||E g^ - g|| / ||g||, MSE = E||g^ - g||^2 = bias^2 + tr Var, rel. std = sqrt(tr Var) "
        "/ ||g||; 95% bootstrap intervals over draws with one seed.",
        f"{BIASED_LABEL}: the rel. bias interval excludes 0 (beyond {ROUND_OFF:g} round-off); an "
        "interval reaching 0 leaves the bias unresolved. Over seeds the squared bias is averaged "
        "unclamped, then clamped once (where its t-interval lies wholly below 0, the largest "
        "of the seeds' own upper bounds is the upper bound)"
        + (f" (the stored clamped values in {unrecovered} rows whose ||g|| the rows cannot "
           "give)." if unrecovered else "."),
    ]
    if not all(eligible):
        notes.append(
            f"{OTHER_OBJECTIVE} Not an estimator of the ELBO gradient: its direction is that of "
            "another objective, so its bias is expected; the cosine is the figure to read."
        )
    comparison = Comparison(
        (Compared(LABELS[MSE], False, log=True),),
        "MSE (bias and variance on the same configuration): lower is better, the exact "
        "gradient first",
        tuple(eligible),
        blocks=tuple(blocks),
        scope="model, checkpoint and group",
        excluded=EXCLUDED if not all(eligible) else "",
        rank_after=f"{LABELS[MSE]} high",
    )
    return assemble(
        "bias",
        "Bias of gradient estimators against the exact gradient (oracle configurations)",
        columns, table_rows, notes, comparison,
    )


def _list(values: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "?"
