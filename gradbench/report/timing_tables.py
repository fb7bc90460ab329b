"""Timing tables: seconds per training epoch per estimator, over seeds.

A model a paper timed (:data:`gradbench.report.paper.TIMING_TABLES`, e.g. Kingma et al.'s 1635 s
/ 7.4 s) gets a table of its own with speed-ups against the paper's reference estimator and the
published figures beside; every other model shares ``timing_vaes``. Seconds
per epoch compare the rows: lower is better, on log seconds (speed-ups are ratios).
"""

from __future__ import annotations

import math

import pandas as pd

from gradbench.experiments.metrics import (
    EXAMPLES_PER_SECOND,
    SECONDS_PER_EPOCH,
    SECONDS_PER_STEP,
    SPEEDUP,
)
from gradbench.report import paper
from gradbench.measure.timing import STEP_RATIO
from gradbench.report.aggregate import derive, estimate, over_seeds
from gradbench.report.rows import (
    TIMING,
    at_batch_size,
    estimator_order,
    estimators_of,
    models_of,
    nearest_batch_size,
    outcomes,
    select,
    texts,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble
from gradbench.report.work_tables import stored_evaluations

SECONDS = SECONDS_PER_EPOCH

CONTENDED_NOTE = (
    "thr.: torch threads during the measurement; contended: other processes kept more cores busy "
    "than the measurement left free, so that time is inflated and not comparable."
)

BETTER = "seconds per epoch: lower is better"

FLOOR_NOTE = (
    "step / deterministic step: the estimator's optimizer step over one step of the model's "
    "network without noise (the same layer sizes as plain torch layers, fused Adam), timed on "
    "the same minibatches in the same repeats: the estimator's cost over the deterministic floor."
)


EVALUATIONS_NOTE = (
    "evaluations: the estimator's evaluations of the model's sample-dependent part (the decoder) "
    "per gradient (the catalogue's); a step within 2x evaluations of the deterministic step costs "
    "what its evaluations need."
)


def extrapolation(timing: pd.DataFrame, estimator: str) -> str | None:
    """"no", or "yes (N steps)" when an epoch's time was extrapolated from N timed steps (each
    seed's answer, joined when they differ)."""

    def describe(match: pd.DataFrame) -> str:
        flag = str(match["extrapolated"].iloc[-1]).strip().lower() in {"true", "1", "yes"}
        if not flag:
            return "no"
        steps = match["steps_timed"].iloc[-1]
        return f"yes ({int(steps)} steps)" if pd.notna(steps) else "yes"

    return texts(select(timing, estimator=estimator, metric=SECONDS), describe)


def timing_conditions(timing: pd.DataFrame, estimator: str) -> str | None:
    """Torch threads of the measurement, and ``contended`` when other processes kept the
    cores busy meanwhile (the row says so; gradbench.measure.timing)."""

    def describe(match: pd.DataFrame) -> str:
        threads = match["torch_threads"].iloc[-1] if "torch_threads" in match else None
        text = f"{int(float(threads))} thr." if pd.notna(threads) and str(threads) != "" else ""
        if str(match["contended"].iloc[-1]).strip().lower() in {"true", "1"}:
            text = f"{text}, contended" if text else "contended"
        return text

    return texts(select(timing, estimator=estimator, metric=SECONDS), describe)


def own_timing_table(
    rows: pd.DataFrame, model: str, comparison: paper.TimingComparison
) -> Table | None:
    """A paper-timed model's seconds per epoch per estimator, the speed-up against the paper's
    reference estimator (per seed: reference's seconds / the estimator's), the published
    figures beside."""
    timing = select(rows, experiment=TIMING, model=model)
    if timing.empty:
        return None
    batch = nearest_batch_size(timing["batch_size"])
    timing = at_batch_size(timing, batch)
    names = estimators_of(timing, model, comparison.order)
    seconds = {e: outcomes(timing, TIMING, model, e, metric=SECONDS) for e in names}
    reference = seconds.get(comparison.reference, {})
    published = comparison.beside.trailing
    floor = bool((timing["metric"] == STEP_RATIO).any())
    table_rows: list[list[Value]] = []
    for name in names:
        stored = outcomes(timing, TIMING, model, name, metric=SPEEDUP,
                          param_group=comparison.reference)
        ratio = derive(lambda ref, ours: ref / ours if ours > 0 else math.nan,
                       reference, seconds[name])
        over_floor = [estimate(outcomes(timing, TIMING, model, name, metric=STEP_RATIO))]
        table_rows.append([
            name, estimate(seconds[name]), estimate({**ratio, **stored}),
            *(over_floor if floor else []),
            extrapolation(timing, name), timing_conditions(timing, name),
            *(column.values.get(name) for column in published),
        ])
    ours = "s/epoch (ours)"
    columns = [
        Column("estimator", key=True),
        Column(ours, "fixed2"),
        Column(f"speed-up vs {comparison.reference} (ours)", "ratio"),
        *([Column("step / deterministic step (ours)", "ratio")] if floor else []),
        Column("extrapolated"),
        Column("conditions"),
        *(Column(c.label, c.kind) for c in published),
    ]
    return assemble(
        f"timing_{model.replace('-', '_')}",
        comparison.title,
        columns,
        table_rows,
        (
            f"Ours: median over repeats of a full epoch's optimizer steps, minibatch {batch}; "
            f"speed-up = s/epoch of {comparison.reference} / s/epoch of the estimator (medians), "
            "seed by seed.",
            *((FLOOR_NOTE,) if floor else ()),
            *comparison.beside.notes,
            CONTENDED_NOTE,
        ),
        Comparison((Compared(ours, False, log=True),), BETTER, tuple(True for _ in names)),
    )


def _by_batch_size(
    rows: pd.DataFrame, models: list[str]
) -> list[tuple[str, int | None, pd.DataFrame]]:
    """Each model's timing rows per stored minibatch size, in order: a profile that changed its
    timed minibatch keeps both sets, and neither is ranked against the other."""
    found = []
    for model in models:
        timing = select(rows, experiment=TIMING, model=model)
        sizes = sorted({int(s) for s in timing["batch_size"].dropna()}) or [None]
        found += [(model, size, at_batch_size(timing, size)) for size in sizes]
    return found


def shared_timing_table(rows: pd.DataFrame) -> Table | None:
    """Seconds per epoch and per step, examples per second, of every model no paper timed; where
    a model was timed against its deterministic network, each estimator's step over that step
    beside its decoder evaluations per gradient (the catalogue's), the cost it should stay near;
    one block per model and timed minibatch."""
    models = [m for m in models_of(rows, TIMING) if paper.timing_comparison(m) is None]
    floor = any(not select(rows, experiment=TIMING, model=m, metric=STEP_RATIO).empty
                for m in models)
    table_rows: list[list[Value]] = []
    blocks: list[str] = []
    for model, batch, timing in _by_batch_size(rows, models):
        for name in estimator_order(model, timing):
            blocks.append(f"{model}, minibatch {batch}")
            over_floor = [over_seeds(timing, TIMING, model, name, metric=STEP_RATIO),
                          stored_evaluations(rows, model, name)]
            table_rows.append([
                model,
                name,
                float(batch) if batch is not None else None,
                *(over_seeds(timing, TIMING, model, name, metric=metric)
                  for metric in (SECONDS, SECONDS_PER_STEP, EXAMPLES_PER_SECOND)),
                *(over_floor if floor else []),
                extrapolation(timing, name),
                timing_conditions(timing, name),
            ])
    if not table_rows:
        return None
    return assemble(
        "timing_vaes",
        "Seconds per training epoch of the models no paper timed, per estimator",
        (
            Column("model", key=True),
            Column("estimator", key=True),
            Column("batch size", "int", key=True),
            Column("s/epoch", "fixed2"),
            Column("s/step", "sci"),
            Column("examples/s", "int"),
            *((Column("step / deterministic step", "ratio"), Column("evaluations per gradient", "int"))
              if floor else ()),
            Column("extrapolated"),
            Column("conditions"),
        ),
        table_rows,
        (
            "Median over repeats; an epoch is a full pass of optimizer steps over the training "
            "set.",
            *((FLOOR_NOTE, EVALUATIONS_NOTE) if floor else ()),
            CONTENDED_NOTE,
        ),
        Comparison(
            (Compared("s/epoch", False, log=True),), BETTER, tuple(True for _ in table_rows),
            blocks=tuple(blocks), scope="model and minibatch",
        ),
    )


def timing_tables(rows: pd.DataFrame) -> list[Table | None]:
    """The timing tables: one per paper-timed model, then the shared one."""
    own = [
        own_timing_table(rows, model, comparison)
        for model in models_of(rows, TIMING)
        if (comparison := paper.timing_comparison(model)) is not None
    ]
    return [*own, shared_timing_table(rows)]
