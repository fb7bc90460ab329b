"""Tables of training's end: the bounds of a generative model, the error of a classifier.

Every model with training rows gets one: a classifier (its rows hold ``error_rate``) its
classification error and ELBO, any other model its reconstruction log-likelihood, ELBO and
importance-weighted bound, each seed at its last epoch. Rows compete per column: bounds and
log-likelihoods higher is better, error lower. The papers' figures sit beside ours where a paper
has them (:mod:`gradbench.report.paper`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gradbench.experiments.metrics import (
    BEST_VALID_KS,
    ELBO,
    ERROR_RATE,
    IW_BOUND,
    RECONSTRUCTION_LL,
    iw_bound_at_best_valid,
)
from gradbench.report import paper
from gradbench.report.aggregate import over_seeds
from gradbench.report.notes import EXCLUDED, marked, objective_notes
from gradbench.report.rows import (
    TRAINING,
    estimator_order,
    networks,
    final_epoch_rows,
    other_objective,
    select,
    splits_of,
)
from gradbench.report.sweep_tables import sweep_tables
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

BOUNDS = (
    (RECONSTRUCTION_LL, "recon. log-lik."), (ELBO, "ELBO"), (IW_BOUND, "IW bound"),
    *((iw_bound_at_best_valid(k), f"IW bound k = {k} at best valid") for k in BEST_VALID_KS),
)
"""A generative model's figures at the end of training: (metric, label)."""


def examples_of(final: pd.DataFrame, metric: str, split: str) -> int | None:
    """The number of examples of ``split`` that ``metric``'s rows averaged (their ``n``), when
    every row says it and all agree; else None."""
    counts = select(final, metric=metric, param_group=split)["n"].dropna().unique()
    return int(counts[0]) if len(counts) == 1 else None


def subset_label(final: pd.DataFrame, metric: str, what: str, split: str) -> str:
    """``what``, with "first N" when ``metric`` averaged fewer of the split's examples than the
    ELBO did (the IW bound on an evaluation subset): a figure on a subset is not the split's."""
    ours, whole = examples_of(final, metric, split), examples_of(final, ELBO, split)
    if metric != ELBO and ours is not None and whole is not None and ours < whole:
        return f"{what} (first {ours:,} of {whole:,})"
    return what


@dataclass(frozen=True)
class Measured:
    """A column of ours: a metric on a data split, how it is written, which way is better."""

    metric: str
    what: str  # its name in the column label and the notes
    split: str
    kind: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        """The column label: "ELBO, test"."""
        return f"{self.what}, {self.split}"


def better(measured: list[Measured]) -> str:
    """Which way is better, in words: "error: lower is better; ELBO: higher is better"."""
    phrases = []
    for higher in (False, True):
        names = list(dict.fromkeys(m.what for m in measured if m.higher_is_better == higher))
        if names:
            phrases.append(f"{', '.join(names)}: {'higher' if higher else 'lower'} is better")
    return "; ".join(phrases)


def is_classifier(rows: pd.DataFrame, model: str) -> bool:
    """True when ``model``'s training rows hold a classification error."""
    return not select(rows, experiment=TRAINING, model=model, metric=ERROR_RATE).empty


def _last_epoch(final: pd.DataFrame, name: str) -> float | None:
    epochs = select(final, estimator=name)["epoch"].dropna()
    return float(epochs.max()) if not epochs.empty else None


def _final_table(
    final: pd.DataFrame,
    model: str,
    measured: list[Measured],
    beside: paper.Beside,
    name: str,
    title: str,
    notes: tuple[str, ...],
) -> Table:
    """Rows of each estimator's last epoch: our ``measured`` columns, published columns and rows
    beside, compared per measured column."""
    names = estimator_order(model, final)
    datasets = {str(name) for name in final["dataset"] if name}
    alone = [row for row in beside.rows if not any(label in names for label in row.beside)]
    trailing = tuple(
        c for c in beside.trailing
        if c.fits(networks(final, model), datasets)
        and (any(c.values.get(e) is not None for e in names)
             or any(row.values.get(c.label) is not None for row in alone))
    )
    table_rows: list[list[Value]] = []
    eligible: list[bool] = []
    for estimator in names:
        table_rows.append([
            marked(final, estimator),
            _last_epoch(final, estimator),
            *(over_seeds(final, TRAINING, model, estimator, metric=m.metric, param_group=m.split)
              for m in measured),
            *(c.values.get(estimator) for c in trailing),
        ])
        eligible.append(not other_objective(final, estimator))
    for published in alone:
        table_rows.append([
            f"{published.label} (published only)", None, *(None for _ in measured),
            *(published.values.get(c.label) for c in trailing),
        ])
        eligible.append(False)
    columns = [Column("estimator", key=True), Column("epoch", "int")]
    columns += [Column(m.label, m.kind) for m in measured]
    columns += [Column(c.label, c.kind) for c in trailing]
    comparison = Comparison(
        tuple(Compared(m.label, m.higher_is_better) for m in measured),
        better(measured),
        tuple(eligible),
        excluded=EXCLUDED if any(other_objective(final, e) for e in names) else "",
    )
    profiles = sorted({str(p) for p in final["profile"] if p})
    notes = (*notes, *paper.variant_notes(names), *objective_notes(final, names), *beside.notes,
             *dict.fromkeys(c.note for c in trailing if c.note),
             *dict.fromkeys(n for p in profiles for n in paper.PROFILE_NOTES.get(p, ())))
    return assemble(name, title, columns, table_rows, notes, comparison)


def elbo_table(rows: pd.DataFrame, model: str) -> Table | None:
    """Final reconstruction log-likelihood, ELBO and importance-weighted bound per estimator,
    nats per example, with the papers' figures beside (e.g. the thesis' Table 5.1)."""
    final = final_epoch_rows(rows, model)
    if final.empty:
        return None
    measured = [
        Measured(metric, subset_label(final, metric, what, split), split, "fixed2", True)
        for metric, what in BOUNDS for split in splits_of(final, metric)
    ]
    return _final_table(
        final, model, measured, paper.elbo_beside(model),
        f"elbo_{model.replace('-', '_')}",
        f"Reconstruction log-likelihood and bounds of {model} by estimator",
        ("Ours: nats per example, higher is better, at the last epoch trained.",),
    )


def classification_table(rows: pd.DataFrame, model: str) -> Table | None:
    """A classifier's final error and ELBO per estimator, the papers' error beside."""
    final = final_epoch_rows(rows, model)
    if final.empty:
        return None
    measured = [
        Measured(ERROR_RATE, "error", split, "percent", False)
        for split in splits_of(final, ERROR_RATE)
    ]
    measured += [
        Measured(ELBO, "ELBO", split, "fixed2", True) for split in splits_of(final, ELBO)
    ]
    return _final_table(
        final, model, measured, paper.classification_beside(model),
        f"classification_{model.replace('-', '_')}",
        f"Classification error and ELBO of {model} by estimator",
        ("Ours: error as a percentage of examples, ELBO in nats per example, at the last epoch "
         "trained.",),
    )


def training_tables(rows: pd.DataFrame, models: list[str]) -> tuple[list[Table | None], ...]:
    """(the generative models' ELBO tables, each followed by its sweeps' tables
    (:mod:`gradbench.report.sweep_tables`), the classifiers' tables) of ``models``, in order."""
    bounds = [table for m in models if not is_classifier(rows, m)
              for table in (elbo_table(rows, m), *sweep_tables(rows, m))]
    errors = [classification_table(rows, m) for m in models if is_classifier(rows, m)]
    return bounds, errors
