"""Sweeps: one estimator trained with several values of its options, side by side.

For each model and registered estimator whose training rows hold two or more of its variants
(the bare name, run with the defaults, and ``NAME[KEY=VALUE,...]``), a table of the variants at
the last epoch trained: the reconstruction log-likelihood (the relaxed one too where stored), the
KL term and the ELBO on each split, the mean over seeds with its interval. The variants of one
estimator share its objective, so their bounds are compared (the paired test over seeds marks
the best and those it cannot tell from it) even where the estimator's direction is not the
ELBO's gradient: a sweep is how an option's default is chosen (the thesis' β_max, a
Gumbel-softmax temperature).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from gradbench.estimators.base import ESTIMATORS, parse_label
from gradbench.experiments.metrics import ELBO, KL, RECONSTRUCTION_LL, RECONSTRUCTION_LL_RELAXED
from gradbench.options import option_defaults
from gradbench.report.aggregate import over_seeds
from gradbench.report.rows import TRAINING, final_epoch_rows, select, splits_of
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

SWEPT = (
    (RECONSTRUCTION_LL_RELAXED, "recon. log-lik. (relaxed)", True),
    (RECONSTRUCTION_LL, "recon. log-lik.", True),
    (KL, "KL", None),
    (ELBO, "ELBO", True),
)
"""A sweep's columns: (metric, label, higher is better; None: shown, not compared)."""


def variant_options(label: str) -> tuple[str, dict[str, str]] | None:
    """``NAME`` or ``NAME[KEY=VALUE,...]`` → (name, options as written)
    (:func:`gradbench.estimators.base.parse_label`); None for a label of no registered estimator
    (a plugin's, not installed where the report is built)."""
    try:
        return parse_label(label)
    except ValueError:
        return None


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return 0, float(value), value
    except ValueError:
        return 1, math.nan, value


def sweeps(labels: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Estimator → {label: every option swept, as written (the default's where the label leaves
    it)} for each estimator with two or more variants among ``labels``, rows ordered by the swept
    values."""
    by_name: dict[str, dict[str, dict[str, str]]] = {}
    for label in labels:
        parsed = variant_options(label)
        if parsed is not None:
            by_name.setdefault(parsed[0], {})[label] = parsed[1]
    found = {}
    for name, variants in by_name.items():
        if len(variants) < 2:
            continue
        defaults = option_defaults(ESTIMATORS[name])
        keys = [key for key in defaults if any(key in o for o in variants.values())]
        full = {label: {key: options.get(key, str(defaults[key])) for key in keys}
                for label, options in variants.items()}
        found[name] = dict(sorted(
            full.items(), key=lambda item: [_sort_key(item[1][key]) for key in keys]))
    return found


def sweep_table(rows: pd.DataFrame, model: str, name: str,
                variants: Mapping[str, Mapping[str, str]]) -> Table | None:
    """The variants of ``name`` on ``model`` at the last epoch trained (module docstring)."""
    final = final_epoch_rows(rows, model)
    final = final[final["estimator"].isin(list(variants))]
    shown = [(metric, what, higher, split) for metric, what, higher in SWEPT
             for split in splits_of(final, metric)]
    if final.empty or not shown:
        return None
    keys = list(next(iter(variants.values())))
    defaults = option_defaults(ESTIMATORS[name])
    table_rows: list[list[Value]] = []
    for label, options in variants.items():
        is_default = all(options[key] == str(defaults[key]) for key in keys)
        epochs = select(final, estimator=label)["epoch"].dropna()
        table_rows.append([
            label + (" (default)" if is_default else ""),
            *(options[key] for key in keys),
            float(epochs.max()) if not epochs.empty else None,
            *(over_seeds(final, TRAINING, model, label, metric=metric, param_group=split)
              for metric, _, _, split in shown),
        ])
    columns = [Column("variant", key=True), *(Column(key, key=True) for key in keys),
               Column("epoch", "int"),
               *(Column(f"{what}, {split}", "fixed2") for _, what, _, split in shown)]
    comparison = Comparison(
        tuple(Compared(f"{what}, {split}", higher) for _, what, higher, split in shown
              if higher is not None),
        "bounds and log-likelihoods: higher is better; the KL is shown, not compared",
        tuple(True for _ in table_rows),
    )
    notes = (
        f"{name} on {model}, one row per value of {', '.join(keys)} (the others at their "
        "defaults), each at its last epoch trained: nats per example, the mean over seeds with "
        "its 95 % interval. The variants share one objective, so their bounds are compared "
        "with each other (not with other estimators).",
    )
    return assemble(f"training_sweep_{model.replace('-', '_')}_{name.replace('-', '_')}",
                    f"{name} on {model}: {', '.join(keys)} swept", columns, table_rows, notes,
                    comparison)


def sweep_tables(rows: pd.DataFrame, model: str) -> list[Table]:
    """A sweep table for each estimator trained on ``model`` with two or more variants."""
    labels = list(dict.fromkeys(select(rows, experiment=TRAINING, model=model)["estimator"]))
    tables = [sweep_table(rows, model, name, variants)
              for name, variants in sweeps(labels).items()]
    return [table for table in tables if table is not None]
